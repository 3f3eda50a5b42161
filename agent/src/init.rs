//! Before geth starts: check the geth version against the genesis, initialise an
//! empty datadir (`geth init`; geth itself would silently write mainnet's
//! genesis), or check that an initialised datadir holds the configured genesis.
//! Any failure blocks geth from starting; the agent stays up and says why.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;

use crate::geth::GethCommand;
use crate::logline::LogLine;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitError {
    #[error("genesis mismatch: the datadir holds genesis {stored}, the configured genesis is {configured}; point the agent at the right genesis or datadir")]
    GenesisMismatch { stored: String, configured: String },
    #[error("geth {version} cannot run a clique chain: use geth 1.13.x (1.13.15)")]
    UnsupportedGeth { version: String },
    #[error("{0}")]
    Geth(String),
}

impl InitError {
    pub fn is_genesis_mismatch(&self) -> bool {
        matches!(self, Self::GenesisMismatch { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitOutcome {
    /// `geth init` ran: the datadir was empty.
    Initialised { genesis_hash: String },
    /// The datadir already holds the configured genesis.
    Existing { genesis_hash: String },
}

/// True when geth has never been initialised in `datadir`.
pub fn needs_init(datadir: &Path) -> bool {
    !datadir.join("geth").join("chaindata").exists()
}

/// Checks and, if needed, initialises. Never run while a geth uses the datadir.
pub async fn prepare(geth: &GethCommand, genesis: &Path) -> Result<InitOutcome, InitError> {
    let text = std::fs::read_to_string(genesis)
        .map_err(|e| InitError::Geth(format!("cannot read genesis {}: {e}", genesis.display())))?;
    let spec: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| InitError::Geth(format!("genesis {} is not JSON: {e}", genesis.display())))?;
    check_version(&spec, version(&geth.binary).await?)?;
    let configured = configured_hash(&geth.binary, genesis).await?;
    if needs_init(&geth.datadir) {
        std::fs::create_dir_all(&geth.datadir).map_err(|e| {
            InitError::Geth(format!(
                "cannot create datadir {}: {e}",
                geth.datadir.display()
            ))
        })?;
        tracing::info!(genesis = %genesis.display(), hash = %configured, "initialising datadir");
        let written = init(&geth.binary, &geth.datadir, genesis).await?;
        return Ok(InitOutcome::Initialised {
            genesis_hash: written,
        });
    }
    let stored = stored_hash(&geth.binary, &geth.datadir).await?;
    if stored != configured {
        return Err(InitError::GenesisMismatch { stored, configured });
    }
    Ok(InitOutcome::Existing {
        genesis_hash: stored,
    })
}

/// Clique sealing and import exist up to geth 1.13.x; 1.14 refuses non-PoS chains.
pub fn check_version(genesis: &serde_json::Value, version: String) -> Result<(), InitError> {
    if genesis.pointer("/config/clique").is_some() && !version.starts_with("1.13.") {
        return Err(InitError::UnsupportedGeth { version });
    }
    Ok(())
}

/// `geth version` → "1.13.15-stable" → "1.13.15".
pub async fn version(binary: &Path) -> Result<String, InitError> {
    let out = run(binary, ["version".into()]).await?;
    out.lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .map(|v| v.trim().trim_end_matches("-stable").to_owned())
        .ok_or_else(|| {
            InitError::Geth(format!(
                "{} version: no version in its output",
                binary.display()
            ))
        })
}

/// The hash geth computes for a genesis file: `geth init` into a scratch datadir.
pub async fn configured_hash(binary: &Path, genesis: &Path) -> Result<String, InitError> {
    let scratch = tempfile::Builder::new()
        .prefix("geth-agent-genesis-")
        .tempdir()
        .map_err(|e| InitError::Geth(format!("cannot create a scratch folder: {e}")))?;
    init(binary, scratch.path(), genesis).await
}

/// Canonical hash of block 0 in an initialised datadir, read-only
/// (`geth db get` of key `h` + 8-byte number 0 + `n`).
pub async fn stored_hash(binary: &Path, datadir: &Path) -> Result<String, InitError> {
    const CANONICAL_HASH_KEY_BLOCK_0: &str = "0x6800000000000000006e";
    let out = run(
        binary,
        [
            "--datadir".into(),
            datadir.into(),
            "db".into(),
            "get".into(),
            CANONICAL_HASH_KEY_BLOCK_0.into(),
        ],
    )
    .await?;
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("key {CANONICAL_HASH_KEY_BLOCK_0}: ")))
        .map(|h| h.trim().to_owned())
        .ok_or_else(|| {
            InitError::Geth(format!(
                "cannot read the genesis hash in {}: {}",
                datadir.display(),
                last_line(&out)
            ))
        })
}

async fn init(binary: &Path, datadir: &Path, genesis: &Path) -> Result<String, InitError> {
    let out = run(
        binary,
        [
            "--datadir".into(),
            datadir.into(),
            "--log.format".into(),
            "json".into(),
            "init".into(),
            genesis.into(),
        ],
    )
    .await?;
    out.lines()
        .filter_map(LogLine::parse)
        .find(|l| l.msg == "Successfully wrote genesis state")
        .and_then(|l| l.str("hash").map(str::to_owned))
        .ok_or_else(|| {
            InitError::Geth(format!(
                "geth init printed no genesis hash: {}",
                last_line(&out)
            ))
        })
}

/// Runs geth to completion; Ok(stdout+stderr) on exit 0, else the last line as the error.
async fn run<const N: usize>(binary: &Path, args: [OsString; N]) -> Result<String, InitError> {
    let output = tokio::process::Command::new(binary)
        .args(args)
        .env_clear()
        .envs(crate::process::geth_env())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| InitError::Geth(format!("cannot run {}: {e}", binary.display())))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        Ok(text)
    } else {
        Err(InitError::Geth(format!(
            "geth failed ({}): {}",
            output.status,
            last_line(&text)
        )))
    }
}

fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| {
            LogLine::parse(l)
                .map(|l| l.human())
                .unwrap_or_else(|| l.to_owned())
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clique_needs_geth_1_13() {
        let clique = serde_json::json!({"config": {"clique": {"period": 5}}});
        assert!(check_version(&clique, "1.13.15".into()).is_ok());
        let err = check_version(&clique, "1.14.0".into()).unwrap_err();
        assert!(
            err.to_string()
                .contains("geth 1.14.0 cannot run a clique chain"),
            "{err}"
        );
        let pos = serde_json::json!({"config": {"terminalTotalDifficulty": 0}});
        assert!(check_version(&pos, "1.14.0".into()).is_ok());
    }
}
