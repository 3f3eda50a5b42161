//! Spawn mode: geth runs as the agent's child. The agent forwards geth's log
//! lines under the node's name, applies the startup policy over IPC, and stops
//! geth with exactly one SIGTERM, waiting up to the grace period before SIGKILL.

use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
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
use crate::rpc::GethRpc;
use crate::shutdown::{self, Exit, ShutdownLog, Verdict};
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    /// The agent asked geth to stop (as opposed to geth exiting on its own).
    pub requested: bool,
    pub verdict: Verdict,
}

impl Ending {
    pub fn is_clean(&self) -> bool {
        self.requested && self.verdict.clean
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

    let shutdown_log = Arc::new(Mutex::new(ShutdownLog::default()));
    let forwarders = [
        child
            .stdout
            .take()
            .map(|out| tokio::spawn(forward(out, shutdown_log.clone()).in_current_span())),
        child
            .stderr
            .take()
            .map(|err| tokio::spawn(forward(err, shutdown_log.clone()).in_current_span())),
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

    let started = Instant::now();
    let (requested, exit, head_before, since) = tokio::select! {
        status = child.wait() => {
            let status = status.map_err(SupervisorError::Wait)?;
            tracing::error!(%status, "geth exited without being asked to");
            (false, exit_of(status), None, started)
        }
        _ = cancel.cancelled() => {
            let head_before = head(&config.geth.ipc_path()).await;
            let since = Instant::now();
            (true, stop(&mut child, pid, config.shutdown_grace).await?, head_before, since)
        }
    };
    startup_cancel.cancel();
    let _ = startup_task.await;
    for task in forwarders.into_iter().flatten() {
        // Output ends when geth's pipes close; a grandchild holding them must not block us.
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
    let log = shutdown_log.lock().map(|l| l.clone()).unwrap_or_default();
    let verdict = shutdown::judge(&log, exit, head_before, config.archive(), since.elapsed());
    if let Err(e) = shutdown::write_marker(&config.geth.datadir, &verdict) {
        tracing::error!(error = %e, "cannot write the shutdown marker");
    }
    let persisted = verdict.persisted.as_ref().map(|b| b.number);
    if verdict.clean {
        tracing::info!(reason = %verdict.reason, ?head_before, ?persisted, ms = verdict.duration_ms, "clean shutdown verified");
    } else {
        tracing::error!(reason = %verdict.reason, ?head_before, ?persisted, "UNCLEAN shutdown");
    }
    Ok(Ending { requested, verdict })
}

/// Head block when the stop begins, straight from geth (bounded wait).
async fn head(ipc: &std::path::Path) -> Option<u64> {
    let query = async { GethRpc::connect(ipc).await.ok()?.block_number().await.ok() };
    tokio::time::timeout(Duration::from_secs(2), query)
        .await
        .ok()
        .flatten()
}

fn exit_of(status: ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Exit::Code(code),
        (None, Some(signal)) => Exit::Signal(signal),
        (None, None) => Exit::Code(-1),
    }
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
) -> Result<Exit, SupervisorError> {
    let Some(pid) = pid else {
        // Already reaped: nothing to signal.
        let status = child.wait().await.map_err(SupervisorError::Wait)?;
        return Ok(exit_of(status));
    };
    tracing::info!(
        grace_secs = grace.as_secs(),
        "stopping geth with one SIGTERM"
    );
    if let Err(e) = kill(pid, Signal::SIGTERM) {
        tracing::warn!(error = %e, "SIGTERM failed");
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => {
            let status = status.map_err(SupervisorError::Wait)?;
            tracing::info!(%status, "geth exited");
            Ok(exit_of(status))
        }
        Err(_) => {
            tracing::error!(
                grace_secs = grace.as_secs(),
                "geth did not stop in time; killing it"
            );
            let _ = child.kill().await;
            Ok(Exit::KilledAfterGrace)
        }
    }
}

/// Forwards geth's output line by line into the agent's log.
async fn forward(stream: impl AsyncRead + Unpin, shutdown_log: Arc<Mutex<ShutdownLog>>) {
    let mut lines = FramedRead::new(stream, LinesCodec::new_with_max_length(MAX_LINE_BYTES));
    while let Some(line) = lines.next().await {
        match line {
            Ok(line) => match LogLine::parse(&line) {
                Some(parsed) => {
                    if let Ok(mut log) = shutdown_log.lock() {
                        log.observe(&parsed);
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
