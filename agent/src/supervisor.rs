//! Spawn mode: geth runs as the agent's child. The agent forwards geth's log
//! lines under the node's name, applies the startup policy over IPC, and stops
//! geth with exactly one SIGTERM, waiting up to the grace period before SIGKILL.

use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncRead;
use tokio::process::Child;
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::RunConfig;
use crate::init::{self, InitError};
use crate::logline::{LogLine, MAX_LINE_BYTES};
use crate::startup::{self, SealingStart, StartupPolicy};

/// How long geth may take to open its IPC socket after start.
const IPC_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error(transparent)]
    Init(#[from] InitError),
    #[error("cannot start {binary}: {source}")]
    Spawn {
        binary: String,
        source: std::io::Error,
    },
    #[error("waiting for geth: {0}")]
    Wait(std::io::Error),
}

/// How a supervised geth ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Stopped by the agent with one SIGTERM.
    Stopped {
        status: ExitStatus,
        blockchain_stopped: bool,
    },
    /// Did not stop within the grace period and was killed.
    Killed,
    /// Exited without being asked to.
    Died { status: ExitStatus },
}

impl Ending {
    /// Clean: stopped on request, exit 0, and geth logged `Blockchain stopped`.
    pub fn is_clean(&self) -> bool {
        matches!(self, Ending::Stopped { status, blockchain_stopped: true } if status.success())
    }
}

/// Supervises one geth until `cancel` fires or geth exits on its own.
pub async fn run(config: RunConfig, cancel: CancellationToken) -> Result<Ending, SupervisorError> {
    init::ensure_initialised(&config.geth, &config.genesis).await?;

    let mut child = tokio::process::Command::new(&config.geth.binary)
        .args(config.geth.args())
        .env_clear()
        .envs(geth_env())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Own process group: a terminal's Ctrl-C reaches the agent only, so geth
        // receives exactly one signal, from us.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| SupervisorError::Spawn {
            binary: config.geth.binary.display().to_string(),
            source,
        })?;
    let pid = child.id().map(|id| Pid::from_raw(id as i32));
    tracing::info!(pid = ?pid, "geth started");

    let stopped_line = Arc::new(AtomicBool::new(false));
    let forwarders = [
        child
            .stdout
            .take()
            .map(|out| tokio::spawn(forward(out, stopped_line.clone()).in_current_span())),
        child
            .stderr
            .take()
            .map(|err| tokio::spawn(forward(err, stopped_line.clone()).in_current_span())),
    ];

    let startup_cancel = cancel.child_token();
    let policy = StartupPolicy {
        min_gas_price_wei: config.min_gas_price_wei,
        sealing: config.geth.signer.as_ref().map(|_| SealingStart {
            min_peers: config.mine_min_peers,
            max_wait: config.mine_wait,
        }),
    };
    let ipc = config.geth.ipc_path();
    let startup_task = {
        let cancel = startup_cancel.clone();
        tokio::spawn(
            async move {
                let result = async {
                    let rpc = crate::rpc::GethRpc::connect_by(&ipc, Instant::now() + IPC_DEADLINE)
                        .await?;
                    startup::apply(&rpc, &policy, &cancel).await
                };
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    r = result => if let Err(e) = r {
                        tracing::error!(error = %e, "startup policy not applied");
                    }
                }
            }
            .in_current_span(),
        )
    };

    let ending = tokio::select! {
        status = child.wait() => {
            let status = status.map_err(SupervisorError::Wait)?;
            tracing::error!(%status, "geth exited unexpectedly");
            Ending::Died { status }
        }
        _ = cancel.cancelled() => stop(&mut child, pid, config.shutdown_grace, &stopped_line).await?,
    };
    startup_cancel.cancel();
    let _ = startup_task.await;
    for task in forwarders.into_iter().flatten() {
        // Output ends when geth's pipes close; a grandchild holding them must not block us.
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
    Ok(match ending {
        Ending::Stopped { status, .. } => Ending::Stopped {
            status,
            blockchain_stopped: stopped_line.load(Ordering::SeqCst),
        },
        other => other,
    })
}

/// The agent's environment without `GETH_*` variables: geth treats those as its
/// own flags and warns about unknown ones (`GETH_BIN`, `GETH_AGENT_*`).
pub fn geth_env() -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    std::env::vars_os()
        .filter(|(key, _)| !key.to_string_lossy().starts_with("GETH_"))
        .collect()
}

/// One SIGTERM, then wait up to `grace`, then SIGKILL.
async fn stop(
    child: &mut Child,
    pid: Option<Pid>,
    grace: Duration,
    stopped_line: &AtomicBool,
) -> Result<Ending, SupervisorError> {
    let Some(pid) = pid else {
        // Already reaped: nothing to signal.
        let status = child.wait().await.map_err(SupervisorError::Wait)?;
        return Ok(Ending::Died { status });
    };
    tracing::info!(grace_secs = grace.as_secs(), "stopping geth with SIGTERM");
    if let Err(e) = kill(pid, Signal::SIGTERM) {
        tracing::warn!(error = %e, "SIGTERM failed");
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => {
            let status = status.map_err(SupervisorError::Wait)?;
            let blockchain_stopped = stopped_line.load(Ordering::SeqCst);
            tracing::info!(%status, blockchain_stopped, "geth stopped");
            Ok(Ending::Stopped {
                status,
                blockchain_stopped,
            })
        }
        Err(_) => {
            tracing::error!(
                grace_secs = grace.as_secs(),
                "geth did not stop in time; killing it"
            );
            let _ = child.kill().await;
            Ok(Ending::Killed)
        }
    }
}

/// Forwards geth's output line by line into the agent's log.
async fn forward(stream: impl AsyncRead + Unpin, stopped_line: Arc<AtomicBool>) {
    let mut lines = FramedRead::new(stream, LinesCodec::new_with_max_length(MAX_LINE_BYTES));
    while let Some(line) = lines.next().await {
        match line {
            Ok(line) => match LogLine::parse(&line) {
                Some(parsed) => {
                    if parsed.msg == "Blockchain stopped" {
                        stopped_line.store(true, Ordering::SeqCst);
                    }
                    emit(&parsed);
                }
                None if line.trim().is_empty() => {}
                None => tracing::info!(target: "geth", "{line}"),
            },
            Err(LinesCodecError::MaxLineLengthExceeded) => {
                tracing::warn!(target: "geth", max = MAX_LINE_BYTES, "skipped an overlong geth output line");
            }
            Err(LinesCodecError::Io(e)) => {
                tracing::warn!(target: "geth", error = %e, "reading geth output failed");
                break;
            }
        }
    }
}

fn emit(line: &LogLine) {
    let text = line.human();
    match line.level.as_str() {
        "crit" | "fatal" | "error" | "eror" => tracing::error!(target: "geth", "{text}"),
        "warn" => tracing::warn!(target: "geth", "{text}"),
        "debug" | "dbug" => tracing::debug!(target: "geth", "{text}"),
        "trace" | "trce" => tracing::trace!(target: "geth", "{text}"),
        _ => tracing::info!(target: "geth", "{text}"),
    }
}
