//! Datadir initialisation: `geth init` with the configured genesis when the
//! datadir has no chain yet (geth itself would silently write mainnet's genesis).

use std::path::Path;
use std::process::Stdio;

use crate::geth::GethCommand;
use crate::logline::LogLine;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("cannot run {binary}: {source}")]
    Spawn {
        binary: String,
        source: std::io::Error,
    },
    #[error("geth init failed ({status}): {output}")]
    Failed {
        status: std::process::ExitStatus,
        output: String,
    },
    #[error("cannot create datadir {path}: {source}")]
    Datadir {
        path: String,
        source: std::io::Error,
    },
}

/// True when geth has never been initialised in `datadir`.
pub fn needs_init(datadir: &Path) -> bool {
    !datadir.join("geth").join("chaindata").exists()
}

/// Runs `geth init` if needed. Returns the genesis hash geth wrote, if it ran.
pub async fn ensure_initialised(
    geth: &GethCommand,
    genesis: &Path,
) -> Result<Option<String>, InitError> {
    if !needs_init(&geth.datadir) {
        return Ok(None);
    }
    std::fs::create_dir_all(&geth.datadir).map_err(|source| InitError::Datadir {
        path: geth.datadir.display().to_string(),
        source,
    })?;
    tracing::info!(genesis = %genesis.display(), "initialising datadir");
    let output = tokio::process::Command::new(&geth.binary)
        .args(geth.init_args(genesis))
        .env_clear()
        .envs(crate::supervisor::geth_env())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| InitError::Spawn {
            binary: geth.binary.display().to_string(),
            source,
        })?;
    let text = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let reason = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| {
                LogLine::parse(l)
                    .map(|l| l.human())
                    .unwrap_or_else(|| l.to_owned())
            })
            .unwrap_or_default();
        return Err(InitError::Failed {
            status: output.status,
            output: reason,
        });
    }
    let hash = text
        .lines()
        .filter_map(LogLine::parse)
        .find(|l| l.msg == "Successfully wrote genesis state")
        .and_then(|l| l.str("hash").map(str::to_owned));
    tracing::info!(hash = hash.as_deref().unwrap_or("?"), "datadir initialised");
    Ok(hash)
}
