//! `network.json`: the description of one clique network, written by
//! `geth-agent network new` and read by the aggregator (which nodes may report,
//! their names, the signers) and by tools. Defined here once.

use std::path::{Path, PathBuf};

use alloy_primitives::Address;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Seals blocks: its address is in the genesis signer list.
    Signer,
    /// Follows and validates the chain without sealing.
    Validator,
}

/// How eagerly a node writes chain state to disk (see docs/OPERATIONS.md,
/// "Durability"). `archive` (geth `--gcmode=archive`) commits the state of
/// every block, so a power cut loses nothing a node had imported; `standard`
/// (geth's default) keeps recent state in memory and, when every node stops
/// uncleanly at once, the network resumes from an older block and seals over
/// confirmed history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    Archive,
    Standard,
}

impl Durability {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Archive => "archive",
            Self::Standard => "standard",
        }
    }

    /// The default for a node: signers keep every block's state.
    pub fn default_for(role: Role) -> Self {
        match role {
            Role::Signer => Self::Archive,
            Role::Validator => Self::Standard,
        }
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not archive or standard")]
pub struct UnknownDurability(pub String);

impl std::str::FromStr for Durability {
    type Err = UnknownDurability;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "archive" => Ok(Self::Archive),
            "standard" => Ok(Self::Standard),
            other => Err(UnknownDurability(other.to_owned())),
        }
    }
}

/// Ports of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePorts {
    pub p2p: u16,
    pub http: u16,
    pub agent: u16,
}

impl NodePorts {
    pub fn all(&self) -> [u16; 3] {
        [self.p2p, self.http, self.agent]
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub role: Role,
    /// The signer account (signers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<Address>,
    /// `enode://<node public key>@host:port`: the key identifies the node.
    pub enode: String,
    pub ports: NodePorts,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountInfo {
    pub address: Address,
    /// Keystore file, relative to the network folder.
    pub keystore: PathBuf,
}

/// The aggregator's public identity: agents accept only replies signed by it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregatorInfo {
    /// Address of the aggregator's signing key.
    pub address: Address,
    /// Key file, relative to the network folder (secret; 0600).
    pub key: PathBuf,
}

/// The whole network, saved as `network.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    pub chain_id: u64,
    pub period: u64,
    pub nodes: Vec<NodeInfo>,
    #[serde(default)]
    pub accounts: Vec<AccountInfo>,
    /// Absent in networks written before the aggregator signed its replies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregator: Option<AggregatorInfo>,
    /// Durability every node's agent.toml was written with; absent in networks
    /// written before the setting existed (agents then default to archive for
    /// signers, standard for validators).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durability: Option<Durability>,
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

impl Network {
    pub const FILE: &'static str = "network.json";

    /// Reads `network.json` from a network folder.
    pub fn load(dir: &Path) -> Result<Self, NetworkFileError> {
        Self::load_file(&dir.join(Self::FILE))
    }

    /// Reads a `network.json` file.
    pub fn load_file(path: &Path) -> Result<Self, NetworkFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| NetworkFileError::Io {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| NetworkFileError::Invalid {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    pub fn node_dir(dir: &Path, name: &str) -> PathBuf {
        dir.join("nodes").join(name)
    }

    pub fn signers(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.iter().filter(|n| n.role == Role::Signer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durability_reads_and_writes_lowercase_and_defaults_by_role() {
        for d in [Durability::Archive, Durability::Standard] {
            assert_eq!(d.as_str().parse::<Durability>(), Ok(d));
            assert_eq!(
                serde_json::to_string(&d).unwrap(),
                format!("\"{}\"", d.as_str())
            );
        }
        assert!("Archive".parse::<Durability>().is_err());
        assert!("full".parse::<Durability>().is_err());
        assert_eq!(Durability::default_for(Role::Signer), Durability::Archive);
        assert_eq!(
            Durability::default_for(Role::Validator),
            Durability::Standard
        );
    }

    #[test]
    fn network_files_without_durability_still_load() {
        let json = r#"{"name":"n","chain_id":1,"period":1,"nodes":[]}"#;
        let net: Network = serde_json::from_str(json).unwrap();
        assert_eq!(net.durability, None);
        assert!(!serde_json::to_string(&net).unwrap().contains("durability"));
    }
}
