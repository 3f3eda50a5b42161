//! The agent's entry point as a library function: [`run`] wires the supervisor,
//! chain monitor, reporter, metrics, HTTP and admin servers under one task
//! tracker. Every one of them is critical: if one ends or panics before the
//! agent is asked to stop, the others stop (geth with its proven shutdown) and
//! [`run`] returns an error, so the process exits non-zero instead of living on
//! half alive.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::admin::{self, AdminState, PeerCheckedListener};
use crate::commands::{Executor, Ledger};
use crate::config::RunConfig;
use crate::http::{self, HttpState};
use crate::metrics::Metrics;
use crate::monitor::Monitor;
use crate::report::{self, Reporter};
use crate::shutdown::Verdict;
use crate::spool::Spool;
use crate::status::NodeStatus;
use crate::supervisor::Supervisor;

/// How long the other tasks get to finish once the supervisor has stopped.
const TASKS_STOP: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot create the admin socket {path}: {source}")]
    AdminSocket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the event spool: {0}")]
    Spool(std::io::Error),
    #[error("cannot sign reports: {0}")]
    NodeKey(#[from] report::ReportError),
    #[error("an aggregator needs a node key to sign reports")]
    NoNodeKey,
    #[error("an aggregator needs its address (aggregator_address) to verify its replies")]
    NoAggregatorAddress,
    #[error("the {task} task stopped while the agent was running: {reason}")]
    TaskDied { task: &'static str, reason: String },
}

/// The agent's sockets, bound before anything starts so that a busy port is a
/// clear, immediate error.
pub struct Listeners {
    pub http: TcpListener,
    pub admin: PeerCheckedListener,
}

impl Listeners {
    pub async fn bind(config: &RunConfig) -> Result<Self, RunError> {
        let http = TcpListener::bind(config.listen)
            .await
            .map_err(|source| RunError::Listen {
                addr: config.listen,
                source,
            })?;
        let admin = admin::bind(&config.admin_socket).map_err(|source| RunError::AdminSocket {
            path: config.admin_socket.clone(),
            source,
        })?;
        Ok(Self {
            http,
            admin: PeerCheckedListener::new(admin, config.admin_allow_root),
        })
    }
}

/// Supervises one node until `shutdown` is cancelled. Returns the verdict of
/// the last geth shutdown seen (none if geth never ran), or the error that
/// stopped the agent early.
pub async fn run(
    config: RunConfig,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<Option<Verdict>, RunError> {
    let cancel = shutdown.child_token();
    // The reporter stops after the supervisor, to deliver its last verdict.
    let report_stop = CancellationToken::new();
    let tasks = Critical::new(cancel.clone());
    let result = start(&config, listeners, &tasks, &cancel, &report_stop).await;
    let supervisor = match result {
        Ok(supervisor) => supervisor,
        Err(e) => {
            cancel.cancel();
            tasks.finish().await;
            return Err(e);
        }
    };
    let last = tasks
        .tracker
        .spawn(supervisor.run().in_current_span())
        .await;
    // The supervisor returns once cancelled (shutdown, or a task died).
    cancel.cancel();
    report_stop.cancel();
    let died = tasks.finish().await;
    let _ = std::fs::remove_file(&config.admin_socket);
    let last = last.map_err(|e| RunError::TaskDied {
        task: "supervisor",
        reason: join_reason(&e),
    })?;
    match died {
        Some((task, reason)) => Err(RunError::TaskDied { task, reason }),
        None => Ok(last),
    }
}

/// Starts every task but the supervisor, which it returns.
async fn start(
    config: &RunConfig,
    listeners: Listeners,
    tasks: &Critical,
    cancel: &CancellationToken,
    report_stop: &CancellationToken,
) -> Result<Supervisor, RunError> {
    tracing::info!(listen = %config.listen, admin = %config.admin_socket.display(), mode = ?config.mode, "agent starting");
    let (status_tx, status_rx) = watch::channel(NodeStatus::new(
        config.name.clone(),
        config.mode,
        config.period,
    ));
    let (requests_tx, requests_rx) = mpsc::channel(16);
    let metrics = Arc::new(Metrics::new(config.geth.signer.as_ref().map(|s| s.address)));
    metrics.set_rewrite_confirmations(config.rewrite_confirmations);
    let mut monitor = Monitor::new(
        config.geth.ipc_path(),
        config.geth.datadir.clone(),
        status_tx.clone(),
        metrics.clone(),
    );
    let mut supervisor = Supervisor::new(
        config.clone(),
        status_tx.clone(),
        requests_rx,
        cancel.clone(),
    );
    let mut reporter = None;
    if let Some(url) = &config.aggregator {
        let spool = Arc::new(
            Spool::open(&config.geth.datadir.join("geth-agent").join("spool"))
                .map_err(RunError::Spool)?
                .with_metrics(metrics.clone()),
        );
        let key =
            report::load_node_key(config.geth.nodekey.as_deref().ok_or(RunError::NoNodeKey)?)?;
        let (heads_tx, heads_rx) = mpsc::channel(64);
        monitor.heads = Some(heads_tx);
        let executor = Arc::new(
            Executor::new(
                &format!("{:#x}", key.address()),
                Ledger::open(
                    &config
                        .geth
                        .datadir
                        .join("geth-agent")
                        .join(crate::commands::FILE),
                ),
                requests_tx.clone(),
                spool.clone(),
            )
            .with_ipc(config.geth.ipc_path()),
        );
        reporter = Some(
            Reporter::new(
                url,
                key,
                config
                    .aggregator_address
                    .ok_or(RunError::NoAggregatorAddress)?,
                status_tx,
                heads_rx,
                spool.clone(),
                metrics.clone(),
                config.readiness,
                config.geth.ipc_path(),
            )
            .with_commands(executor),
        );
        supervisor = supervisor.with_spool(spool);
        tracing::info!(aggregator = %url, "reporting to the aggregator");
    }

    tasks.spawn(
        "metrics",
        crate::metrics::follow_status(
            metrics.clone(),
            status_rx.clone(),
            config.readiness,
            cancel.clone(),
        ),
    );
    let http_state = HttpState {
        status: status_rx.clone(),
        readiness: config.readiness,
        metrics,
    };
    tasks.spawn(
        "http",
        http::serve(listeners.http, http_state, cancel.clone()),
    );
    let admin_state = AdminState {
        status: status_rx,
        readiness: config.readiness,
        requests: requests_tx,
        ipc: config.geth.ipc_path(),
    };
    tasks.spawn(
        "admin",
        admin::serve(listeners.admin, admin_state, cancel.clone()),
    );
    if let Some(reporter) = reporter {
        tasks.spawn("reporter", reporter.run(report_stop.clone()));
    }
    tasks.spawn("monitor", monitor.run(cancel.clone()));
    Ok(supervisor)
}

/// How a task ended, for the error that names it.
pub trait TaskEnd {
    fn reason(self) -> String;
}

impl TaskEnd for () {
    fn reason(self) -> String {
        "it returned".into()
    }
}

impl<E: std::fmt::Display> TaskEnd for Result<(), E> {
    fn reason(self) -> String {
        match self {
            Ok(()) => "it returned".into(),
            Err(e) => e.to_string(),
        }
    }
}

fn join_reason(e: &tokio::task::JoinError) -> String {
    if e.is_panic() {
        "it panicked".into()
    } else {
        e.to_string()
    }
}

/// Tasks that must run as long as the agent: the first one to end before
/// `cancel` is recorded and cancels the rest.
pub struct Critical {
    tracker: TaskTracker,
    cancel: CancellationToken,
    died: mpsc::UnboundedSender<(&'static str, String)>,
    died_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<(&'static str, String)>>,
}

impl Critical {
    pub fn new(cancel: CancellationToken) -> Self {
        let (died, died_rx) = mpsc::unbounded_channel();
        Self {
            tracker: TaskTracker::new(),
            cancel,
            died,
            died_rx: tokio::sync::Mutex::new(died_rx),
        }
    }

    pub fn spawn<F>(&self, name: &'static str, task: F)
    where
        F: Future + Send + 'static,
        F::Output: TaskEnd + Send + 'static,
    {
        let handle = self.tracker.spawn(task.in_current_span());
        let cancel = self.cancel.clone();
        let died = self.died.clone();
        self.tracker.spawn(
            async move {
                let reason = match handle.await {
                    Ok(end) => end.reason(),
                    Err(e) => join_reason(&e),
                };
                if !cancel.is_cancelled() {
                    tracing::error!(task = name, reason = %reason, "a critical task stopped; stopping the agent");
                    let _ = died.send((name, reason));
                    cancel.cancel();
                }
            }
            .in_current_span(),
        );
    }

    /// Waits for every task (bounded) and returns the first that died, if any.
    pub async fn finish(&self) -> Option<(&'static str, String)> {
        self.tracker.close();
        if tokio::time::timeout(TASKS_STOP, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("some tasks did not stop within {TASKS_STOP:?}");
        }
        self.died_rx.lock().await.try_recv().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_fails_stops_the_others_and_is_named() {
        let cancel = CancellationToken::new();
        let tasks = Critical::new(cancel.clone());
        let waiter = cancel.clone();
        tasks.spawn("patient", async move { waiter.cancelled().await });
        tasks.spawn("broken", async {
            Err::<(), _>(std::io::Error::other("socket gone"))
        });
        tokio::time::timeout(Duration::from_secs(5), cancel.cancelled())
            .await
            .expect("the failure cancels everything");
        let died = tasks.finish().await;
        assert_eq!(died, Some(("broken", "socket gone".to_owned())));
    }

    #[tokio::test]
    async fn a_panic_is_a_failure() {
        let cancel = CancellationToken::new();
        let tasks = Critical::new(cancel.clone());
        tasks.spawn("panicky", async {
            if cancel_never() {
                return;
            }
            panic!("bug")
        });
        tokio::time::timeout(Duration::from_secs(5), cancel.cancelled())
            .await
            .expect("the panic cancels everything");
        let died = tasks.finish().await;
        assert_eq!(died, Some(("panicky", "it panicked".to_owned())));
    }

    #[tokio::test]
    async fn tasks_that_end_after_the_shutdown_are_not_failures() {
        let cancel = CancellationToken::new();
        let tasks = Critical::new(cancel.clone());
        let waiter = cancel.clone();
        tasks.spawn("server", async move {
            waiter.cancelled().await;
            Ok::<(), std::io::Error>(())
        });
        cancel.cancel();
        assert_eq!(tasks.finish().await, None);
    }

    fn cancel_never() -> bool {
        std::hint::black_box(false)
    }
}
