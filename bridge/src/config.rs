//! The service's configuration: everything it trusts comes from here, never
//! from a request.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use alloy::primitives::Address;
use serde::Deserialize;

use crate::contracts::AssetKind;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    /// SQLite file: per-deposit record (digest, block hash) and the audit log.
    pub store: PathBuf,
    /// Requests per client address per minute.
    #[serde(default = "default_rate_limit")]
    pub rate_limit_per_minute: u32,
    #[serde(rename = "direction")]
    pub directions: Vec<DirectionConfig>,
}

fn default_rate_limit() -> u32 {
    120
}

/// One direction (e.g. sidechain → mainnet) with its own key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectionConfig {
    /// URL path segment: `/bridge/v1/<name>/sign`.
    pub name: String,
    pub source_rpc: String,
    pub source_chain_id: u64,
    /// Blocks on top of the deposit's block before it is signed.
    pub confirmations: u64,
    pub destination_chain_id: u64,
    /// For the courtesy `claimed` check; optional.
    #[serde(default)]
    pub destination_rpc: Option<String>,
    pub keystore: PathBuf,
    pub password_file: PathBuf,
    /// The allow-list: source bridge contract → its destination peer.
    #[serde(rename = "pair")]
    pub pairs: Vec<Pair>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pair {
    pub kind: AssetKind,
    pub source: Address,
    pub destination: Address,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        // Relative key and store paths are relative to the config file.
        let base = path.parent().unwrap_or(Path::new("."));
        config.store = base.join(&config.store);
        for d in &mut config.directions {
            d.keystore = base.join(&d.keystore);
            d.password_file = base.join(&d.password_file);
        }
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.directions.is_empty() {
            return invalid("no [[direction]] configured".into());
        }
        if self.rate_limit_per_minute == 0 {
            return invalid("rate_limit_per_minute must be at least 1".into());
        }
        let mut names = HashSet::new();
        let mut keystores = HashSet::new();
        for d in &self.directions {
            let ok_name = !d.name.is_empty()
                && d.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok_name {
                return invalid(format!("direction name {:?}: use [A-Za-z0-9_-]", d.name));
            }
            if !names.insert(d.name.clone()) {
                return invalid(format!("direction {} configured twice", d.name));
            }
            if !keystores.insert(d.keystore.clone()) {
                return invalid(format!(
                    "direction {}: each direction needs its own key",
                    d.name
                ));
            }
            if d.source_chain_id == d.destination_chain_id {
                return invalid(format!(
                    "direction {}: source and destination chain ids are equal",
                    d.name
                ));
            }
            if d.confirmations == 0 {
                return invalid(format!(
                    "direction {}: confirmations must be at least 1",
                    d.name
                ));
            }
            if d.pairs.is_empty() {
                return invalid(format!("direction {}: no [[direction.pair]]", d.name));
            }
            let mut sources = HashSet::new();
            for p in &d.pairs {
                if p.source.is_zero() || p.destination.is_zero() {
                    return invalid(format!("direction {}: zero contract address", d.name));
                }
                if !sources.insert(p.source) {
                    return invalid(format!(
                        "direction {}: source {} listed twice",
                        d.name, p.source
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> String {
        r#"
listen = "127.0.0.1:0"
store = "bridge.sqlite"
[[direction]]
name = "side-to-main"
source_rpc = "http://127.0.0.1:1"
source_chain_id = 1
confirmations = 2
destination_chain_id = 2
keystore = "a.json"
password_file = "a.pw"
[[direction.pair]]
kind = "erc20"
source = "0x1111111111111111111111111111111111111111"
destination = "0x2222222222222222222222222222222222222222"
"#
        .to_string()
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let c: Config = toml::from_str(text).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn sample_config_is_valid() {
        let c = parse(&sample()).expect("valid");
        assert_eq!(c.rate_limit_per_minute, 120);
        assert_eq!(c.directions[0].pairs[0].kind, AssetKind::Erc20);
    }

    #[test]
    fn same_key_for_two_directions_is_refused() {
        let second = sample()
            .split_once("[[direction]]")
            .expect("has a direction")
            .1
            .replace("side-to-main", "main-to-side");
        let err = parse(&format!("{}[[direction]]{second}", sample())).unwrap_err();
        assert!(err.to_string().contains("own key"), "{err}");
    }

    #[test]
    fn equal_chain_ids_and_zero_confirmations_are_refused() {
        let err = parse(&sample().replace("destination_chain_id = 2", "destination_chain_id = 1"))
            .unwrap_err();
        assert!(err.to_string().contains("chain ids"), "{err}");
        let err = parse(&sample().replace("confirmations = 2", "confirmations = 0")).unwrap_err();
        assert!(err.to_string().contains("confirmations"), "{err}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(parse(&(sample() + "private_key = \"0x01\"\n")).is_err());
    }
}
