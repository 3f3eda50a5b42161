//! The node's lifecycle: check and initialise, start (spawn) or find (attach)
//! geth, read its log, prove every shutdown, detect crashes and blocks lost,
//! restart with backoff, and obey admin commands. Only this task touches the
//! geth process; it publishes everything it learns into the node status.
//!
//! geth runs once it answers over IPC (and, in attach mode, serves the
//! configured genesis), not when a start-up line passes: an agent started
//! beside a running geth (attach, or spawn mode after the agent was killed)
//! adopts it. The start-up evidence (blocks lost at start) of such a geth is
//! not available; the agent says so in its log.
//!
//! Attach mode never initialises the datadir: `geth-agent init` does, before
//! geth starts (an init container).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use geth_wire::EventKind;

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::RunConfig;
use crate::crash::{self, StartupLog, STARTED_LINE};
use crate::init::{self, InitError};
use crate::logline::LogLine;
use crate::process::{self, AttachTarget, ProcEvent, Watch};
use crate::rpc::GethRpc;
use crate::shutdown::{self, Exit, ShutdownLog, Verdict};
use crate::spool::Spool;
use crate::startup::{self, SealingStart, StartupPolicy};
use crate::status::{Mode, NodeStatus, Phase};
use crate::unwedge;

/// How long geth may take to open its IPC socket after start.
const IPC_DEADLINE: Duration = Duration::from_secs(60);
/// After SIGKILL, how long to wait for the process to be gone.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// A session that ran this long resets the crash backoff.
const STABLE_AFTER: Duration = Duration::from_secs(60);
pub use geth_wire::control::{Command, Outcome};

/// A lifecycle command and where to send its outcome.
#[derive(Debug)]
pub struct Request {
    pub command: Command,
    pub reply: oneshot::Sender<Outcome>,
}

/// A stop in progress.
#[derive(Debug, Clone, Copy)]
struct Stopping {
    since: Instant,
    head_before: Option<u64>,
    /// Begun by the agent (admin command or the agent's own shutdown).
    by_agent: bool,
    killed: bool,
}

pub struct Supervisor {
    config: RunConfig,
    status: watch::Sender<NodeStatus>,
    requests: mpsc::Receiver<Request>,
    events: mpsc::Receiver<ProcEvent>,
    events_tx: mpsc::Sender<ProcEvent>,
    cancel: CancellationToken,

    pid: Option<u32>,
    session_started: Instant,
    stopping: Option<Stopping>,
    shutdown_log: ShutdownLog,
    /// Whether this geth session keeps every block's state, read from its
    /// command line (the platform may start geth in attach mode).
    archive: bool,
    startup_log: StartupLog,
    startup_task: Option<JoinHandle<()>>,
    /// Spawn mode: geth should be running (false after `stop` or when blocked).
    want_running: bool,
    restart_at: Option<Instant>,
    failures: u32,
    had_session: bool,
    /// A geth that ran before this agent started (its start-up is not seen).
    adopted: Option<u32>,
    /// Ends the tasks that follow a geth the agent did not start, once the
    /// supervisor is done: they must outlive `cancel` to report the shutdown.
    watchers: CancellationToken,
    /// Lifecycle events for the aggregator, when one is configured.
    spool: Option<Arc<Spool>>,
}

impl Supervisor {
    pub fn new(
        config: RunConfig,
        status: watch::Sender<NodeStatus>,
        requests: mpsc::Receiver<Request>,
        cancel: CancellationToken,
    ) -> Self {
        let (events_tx, events) = mpsc::channel(1024);
        let last_shutdown = shutdown::read_marker(&config.geth.datadir);
        let signer = config.geth.signer.as_ref().map(|s| s.address);
        status.send_modify(|s| {
            s.last_shutdown = last_shutdown;
            s.signer = signer;
        });
        Self {
            archive: config.archive(),
            config,
            status,
            requests,
            events,
            events_tx,
            cancel,
            pid: None,
            session_started: Instant::now(),
            stopping: None,
            shutdown_log: ShutdownLog::default(),
            startup_log: StartupLog::default(),
            startup_task: None,
            want_running: true,
            restart_at: None,
            failures: 0,
            had_session: false,
            adopted: None,
            watchers: CancellationToken::new(),
            spool: None,
        }
    }

    /// Records lifecycle events in `spool` for the aggregator.
    pub fn with_spool(mut self, spool: Arc<Spool>) -> Self {
        self.spool = Some(spool);
        self
    }

    fn record(&self, kind: EventKind) {
        if let Some(spool) = &self.spool {
            if let Err(e) = spool.push(kind) {
                tracing::error!(error = %e, "cannot spool an event for the aggregator");
            }
        }
    }

    fn mode(&self) -> Mode {
        self.config.mode
    }

    /// Runs until cancelled; returns the verdict of the last shutdown seen.
    pub async fn run(mut self) -> Option<Verdict> {
        if self.mode() == Mode::Attach {
            self.begin_attach();
        }
        loop {
            if self.mode() == Mode::Spawn
                && self.want_running
                && self.pid.is_none()
                && self.restart_at.is_none()
            {
                self.start().await;
            }
            let restart_at = self.restart_at;
            tokio::select! {
                Some(event) = self.events.recv() => { self.on_event(event).await; }
                Some(request) = self.requests.recv() => self.on_request(request).await,
                _ = sleep_until(restart_at), if restart_at.is_some() => self.restart_at = None,
                _ = self.cancel.cancelled() => break,
            }
        }
        self.shutdown().await;
        self.watchers.cancel();
        self.status.borrow().last_shutdown.clone()
    }

    fn set(&self, f: impl FnOnce(&mut NodeStatus)) {
        self.status.send_modify(f);
    }

    fn block(&mut self, error: &InitError) {
        tracing::error!(reason = %error, "geth will not be started");
        self.record(EventKind::Blocked {
            reason: error.to_string(),
        });
        self.want_running = false;
        let reason = error.to_string();
        let mismatch = error.is_genesis_mismatch();
        self.set(|s| {
            s.phase = Phase::Blocked;
            s.blocked = Some(reason);
            s.genesis_mismatch = mismatch;
        });
    }

    fn attach_target(&self, log_file: PathBuf) -> AttachTarget {
        AttachTarget {
            datadir: self.config.geth.datadir.clone(),
            log_file,
            pid_file: self.config.pid_file.clone(),
            binary: Some(self.config.geth.binary.clone()),
        }
    }

    /// Spawn mode: adopt a geth left running (by a killed agent), or
    /// check/initialise and start one.
    async fn start(&mut self) {
        let log_file = process::spawn_log_path(&self.config.geth.datadir);
        let target = AttachTarget {
            pid_file: None,
            ..self.attach_target(log_file)
        };
        if let Some(pid) = process::find_geth(&target) {
            tracing::warn!(pid, log = %target.log_file.display(), "geth already runs on this datadir (left by a previous agent); adopting it");
            self.adopted = Some(pid);
            self.pid = Some(pid);
            self.set(|s| s.phase = Phase::Starting);
            let events = self.events_tx.clone();
            let cancel = self.watchers.clone();
            tokio::spawn(
                process::watch(target, Watch::Adopt(pid), events, cancel).in_current_span(),
            );
            return;
        }
        self.set(|s| s.phase = Phase::Initialising);
        match init::prepare(&self.config.geth, &self.config.genesis).await {
            Ok(outcome) => {
                tracing::debug!(?outcome, "datadir ready");
                self.set(|s| {
                    s.blocked = None;
                    s.genesis_mismatch = false;
                });
            }
            Err(e) => return self.block(&e),
        }
        self.set(|s| s.phase = Phase::Starting);
        match process::spawn(&self.config.geth, self.events_tx.clone()) {
            // Known at once, so a command arriving before the Started event sees a running geth.
            Ok(pid) => {
                self.pid = Some(pid);
                tracing::info!(pid, "geth started");
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start geth");
                self.schedule_restart();
            }
        }
    }

    /// Attach mode: watch for geth. Never initialises: geth (another
    /// container) may be starting on this datadir right now.
    fn begin_attach(&mut self) {
        let target = self.attach_target(self.config.geth.log_file.clone().unwrap_or_default());
        self.adopted = process::find_geth(&target);
        let waiting = match self.adopted {
            Some(pid) => {
                tracing::info!(pid, "geth already runs; attaching");
                None
            }
            None if init::needs_init(&self.config.geth.datadir) => Some(format!(
                "datadir {} is not initialised: run `geth-agent init` before geth starts (an init container); waiting for geth",
                self.config.geth.datadir.display()
            )),
            None => Some("waiting for geth to start".to_owned()),
        };
        if let Some(reason) = &waiting {
            tracing::warn!(reason = %reason, "no geth on this datadir yet");
        }
        self.set(|s| {
            s.phase = Phase::Starting;
            s.waiting = waiting;
        });
        let events = self.events_tx.clone();
        let cancel = self.watchers.clone();
        tokio::spawn(process::attach(target, events, cancel).in_current_span());
    }

    /// Handles one process event; returns the verdict when geth exited.
    async fn on_event(&mut self, event: ProcEvent) -> Option<Verdict> {
        match event {
            ProcEvent::Started(pid) => self.on_started(pid),
            ProcEvent::Answering(pid) => self.on_answering(pid),
            ProcEvent::Line(line) => self.on_line(&line),
            ProcEvent::Text(text) => tracing::info!(target: "geth", "{text}"),
            ProcEvent::Exited(exit) => return Some(self.on_exited(exit)),
        }
        None
    }

    fn on_started(&mut self, pid: u32) {
        let restarted = self.had_session;
        self.had_session = true;
        self.pid = Some(pid);
        self.session_started = Instant::now();
        self.stopping = None;
        self.shutdown_log = ShutdownLog::default();
        // A geth this agent spawned carries the configured --gcmode (and its
        // /proc cmdline may still be the agent's own until exec); a geth found
        // running is judged by its own command line.
        let found = self.mode() == Mode::Attach || self.adopted == Some(pid);
        self.archive = match found {
            true => process::runs_archive(pid).unwrap_or(self.config.archive()),
            false => self.config.archive(),
        };
        self.startup_log = StartupLog::default();
        tracing::info!(pid, mode = ?self.mode(), archive = self.archive, "geth process up");
        let blocked = self.status.borrow().blocked.is_some();
        self.set(|s| {
            s.pid = Some(pid);
            // Evidence belongs to one geth session: none until this one's
            // start-up lines are read (geth may answer over IPC before that).
            s.last_start = None;
            s.waiting = None;
            s.starts += 1;
            if restarted {
                s.restarts += 1;
            }
            if !blocked {
                s.phase = Phase::Starting;
            }
        });
        if blocked {
            return; // attach mode, a geth we must not configure
        }
        let policy = StartupPolicy {
            min_gas_price_wei: self.config.min_gas_price_wei,
            sealing: self.config.geth.signer.as_ref().map(|signer| SealingStart {
                signer: signer.address,
                min_peers: self.config.mine_min_peers,
                max_wait: self.config.mine_wait,
                // The heads are compared through the aggregator.
                recovery_hold: self
                    .config
                    .aggregator
                    .as_ref()
                    .and(self.config.recovery_hold),
            }),
        };
        // Peers geth is configured to dial: dialled again if the chain wedges.
        let static_nodes = self
            .config
            .geth
            .config
            .as_deref()
            .map(unwedge::static_nodes)
            .unwrap_or_default();
        let period = self.config.period;
        let ipc = self.config.geth.ipc_path();
        let cancel = self.cancel.child_token();
        let node_status = self.status.clone();
        let events = self.events_tx.clone();
        // A geth the agent did not start must serve the configured chain.
        let check_genesis = (self.mode() == Mode::Attach || self.adopted == Some(pid)).then(|| {
            (
                crate::process::binary_for(&self.config.geth.binary, pid),
                self.config.genesis.clone(),
                self.status.clone(),
            )
        });
        if let Some(task) = self.startup_task.take() {
            task.abort();
        }
        self.startup_task = Some(tokio::spawn(
            async move {
                let work = async {
                    let rpc = GethRpc::connect_by(&ipc, Instant::now() + IPC_DEADLINE).await.map_err(|e| e.to_string())?;
                    if let Some((binary, genesis, status)) = check_genesis {
                        if let Err(e) = check_running_genesis(&rpc, &binary, &genesis).await {
                            tracing::error!(reason = %e, "the running geth does not serve the configured chain");
                            let mismatch = e.is_genesis_mismatch();
                            status.send_modify(|s| {
                                s.blocked = Some(e.to_string());
                                s.genesis_mismatch = mismatch;
                            });
                            return Ok(());
                        }
                    }
                    let _ = events.send(ProcEvent::Answering(pid)).await;
                    // Sealing waits until geth can sign with the account (startup::apply).
                    startup::apply_reporting(&rpc, &policy, Some(&node_status), &cancel).await.map_err(|e| e.to_string())?;
                    if policy.sealing.is_some() {
                        let stuck = unwedge::stuck_after(period);
                        unwedge::watch(&rpc, period, stuck, &static_nodes, Some(&node_status), &cancel).await;
                    }
                    Ok::<(), String>(())
                };
                if let Err(e) = work.await {
                    tracing::error!(error = %e, "startup policy not applied");
                }
            }
            .in_current_span(),
        ));
    }

    /// geth answers over IPC: it runs, whether or not its start-up lines were seen.
    fn on_answering(&mut self, pid: u32) {
        if self.pid != Some(pid) || self.stopping.is_some() {
            return;
        }
        if self.adopted == Some(pid) {
            tracing::info!(
                pid,
                "geth was running before this agent started: running; its start-up evidence (blocks lost at start) is not available"
            );
        }
        self.set(|s| {
            if s.blocked.is_none() && s.phase == Phase::Starting {
                s.phase = Phase::Running;
            }
        });
    }

    fn on_line(&mut self, line: &LogLine) {
        emit(line);
        self.shutdown_log.observe(line);
        self.startup_log.observe(line);
        if line.msg == STARTED_LINE && self.pid.is_some() {
            self.on_geth_ready();
        }
        if line.msg == "Got interrupt, shutting down..." && self.stopping.is_none() {
            // Not begun by us: the platform (attach) or geth itself (low disk).
            let head_before = self.status.borrow().chain.head;
            tracing::info!(?head_before, "geth is shutting down");
            self.stopping = Some(Stopping {
                since: Instant::now(),
                head_before,
                by_agent: false,
                killed: false,
            });
            self.set(|s| s.phase = Phase::Stopping);
        }
    }

    /// geth opened IPC: its start-up lines are complete. Compare with the last stop.
    fn on_geth_ready(&mut self) {
        let datadir = &self.config.geth.datadir;
        let last = shutdown::read_marker(datadir);
        let mut known = crash::read_known_boots(datadir);
        let evidence = crash::evaluate(&self.startup_log, last.as_ref(), &known);
        if evidence.blocks_lost > 0 || evidence.repaired || evidence.new_unclean_boots > 0 {
            tracing::warn!(
                blocks_lost = evidence.blocks_lost,
                previous_head = ?evidence.previous_head,
                loaded_head = ?evidence.loaded_head,
                repaired = evidence.repaired,
                new_unclean_boots = evidence.new_unclean_boots,
                "geth recovered from an unclean shutdown"
            );
        } else {
            tracing::info!(loaded_head = ?evidence.loaded_head, "geth resumed with nothing lost");
        }
        if evidence.new_unclean_boots > 0 {
            known.extend(self.startup_log.unclean_boots.iter().copied());
            if let Err(e) = crash::write_known_boots(datadir, &known) {
                tracing::warn!(error = %e, "cannot record unclean boots");
            }
        }
        if evidence.blocks_lost > 0 || evidence.repaired || evidence.after_unclean_stop {
            self.record(EventKind::Recovered {
                loaded_head: evidence.loaded_head,
                previous_head: evidence.previous_head,
                blocks_lost: evidence.blocks_lost,
            });
        }
        let blocked = self.status.borrow().blocked.is_some();
        self.set(|s| {
            s.blocks_lost_total += evidence.blocks_lost;
            s.last_start = Some(evidence);
            if !blocked && s.phase == Phase::Starting {
                s.phase = Phase::Running;
            }
        });
    }

    fn on_exited(&mut self, exit: Exit) -> Verdict {
        let stopping = self.stopping.take();
        let exit = if stopping.is_some_and(|s| s.killed) {
            Exit::KilledAfterGrace
        } else {
            exit
        };
        let head_before = stopping.map_or(self.status.borrow().chain.head, |s| s.head_before);
        let took = stopping.map_or(Duration::ZERO, |s| s.since.elapsed());
        let verdict = shutdown::judge(&self.shutdown_log, exit, head_before, self.archive, took);
        if let Err(e) = shutdown::write_marker(&self.config.geth.datadir, &verdict) {
            tracing::error!(error = %e, "cannot write the shutdown marker");
        }
        self.record(EventKind::Shutdown {
            verdict: verdict.clone(),
        });
        let persisted = verdict.persisted.as_ref().map(|b| b.number);
        if verdict.clean {
            tracing::info!(reason = %verdict.reason, ?head_before, ?persisted, ms = verdict.duration_ms, "clean shutdown verified");
        } else if stopping.is_none() {
            tracing::error!(reason = %verdict.reason, ?head_before, "geth CRASHED (unclean, not asked to stop)");
        } else {
            tracing::error!(reason = %verdict.reason, ?head_before, ?persisted, "UNCLEAN shutdown");
        }
        if let Some(task) = self.startup_task.take() {
            task.abort();
        }
        self.pid = None;
        self.adopted = None;
        let ran = self.session_started.elapsed();
        let record = verdict.clone();
        self.set(|s| {
            s.pid = None;
            s.chain = Default::default();
            if record.clean {
                s.clean_shutdowns += 1;
            } else {
                s.unclean_shutdowns += 1;
            }
            s.last_shutdown = Some(record);
            if s.phase != Phase::Blocked {
                s.phase = Phase::Restarting;
            }
        });
        let by_agent = stopping.is_some_and(|s| s.by_agent);
        if self.mode() == Mode::Spawn && !by_agent && !self.cancel.is_cancelled() {
            if ran >= STABLE_AFTER {
                self.failures = 0;
            }
            self.schedule_restart();
        }
        verdict
    }

    fn schedule_restart(&mut self) {
        self.failures += 1;
        let delay = backoff(self.failures, self.config.restart_backoff_max);
        tracing::warn!(
            in_secs = delay.as_secs_f32(),
            attempt = self.failures,
            "restarting geth"
        );
        self.restart_at = Some(Instant::now() + delay);
        self.set(|s| {
            if s.phase != Phase::Blocked {
                s.phase = Phase::Restarting;
            }
        });
    }

    /// Stops geth with one SIGTERM and waits for the verdict (SIGKILL after the grace).
    async fn stop_and_wait(&mut self) -> Result<Verdict, String> {
        let Some(pid) = self.pid else {
            return Err("geth is not running".into());
        };
        if self.stopping.is_none() {
            let head_before = current_head(&self.config.geth.ipc_path()).await.or(self
                .status
                .borrow()
                .chain
                .head);
            self.stopping = Some(Stopping {
                since: Instant::now(),
                head_before,
                by_agent: true,
                killed: false,
            });
            self.set(|s| s.phase = Phase::Stopping);
            let grace = self.config.shutdown_grace.as_secs();
            tracing::info!(
                pid,
                ?head_before,
                grace_secs = grace,
                "stopping geth with one SIGTERM"
            );
            if let Err(e) = process::signal(pid, Signal::SIGTERM) {
                tracing::warn!(error = %e, "SIGTERM failed");
            }
        } else if let Some(s) = &mut self.stopping {
            s.by_agent = true;
        }
        let since = self.stopping.map_or_else(Instant::now, |s| s.since);
        let mut deadline = since + self.config.shutdown_grace;
        loop {
            tokio::select! {
                event = self.events.recv() => match event {
                    Some(event) => if let Some(verdict) = self.on_event(event).await { return Ok(verdict) },
                    None => return Err("lost the geth process events".into()),
                },
                _ = tokio::time::sleep_until(deadline) => {
                    let Some(stopping) = &mut self.stopping else { return Err("stop state lost".into()) };
                    if stopping.killed {
                        return Err(format!("geth (pid {pid}) did not die after SIGKILL"));
                    }
                    tracing::error!(pid, grace_secs = self.config.shutdown_grace.as_secs(), "geth did not stop within the grace period; SIGKILL");
                    stopping.killed = true;
                    let _ = process::signal(pid, Signal::SIGKILL);
                    deadline = Instant::now() + KILL_WAIT;
                }
            }
        }
    }

    async fn on_request(&mut self, request: Request) {
        let outcome = self.obey(request.command).await;
        let _ = request.reply.send(outcome);
    }

    /// Carries out one lifecycle command.
    pub async fn obey(&mut self, command: Command) -> Outcome {
        let refused = |reason: &str| Outcome::Refused {
            reason: reason.to_owned(),
        };
        match (command, self.mode()) {
            (Command::CliquePropose { .. } | Command::CliqueDiscard { .. }, _) => {
                refused("a clique vote is not a lifecycle command")
            }
            (Command::Stop | Command::Start, Mode::Attach) => {
                refused("attach mode: geth is run by the platform; use restart")
            }
            (Command::Stop, Mode::Spawn) => {
                // Also ends a pending restart.
                self.want_running = false;
                self.restart_at = None;
                if self.pid.is_none() {
                    self.set(|s| s.phase = Phase::Stopped);
                    return refused("geth is not running");
                }
                let outcome = match self.stop_and_wait().await {
                    Ok(verdict) => Outcome::Stopped { verdict },
                    Err(reason) => Outcome::Failed { reason },
                };
                self.set(|s| s.phase = Phase::Stopped);
                outcome
            }
            (Command::Start, Mode::Spawn) => {
                if self.pid.is_some() {
                    refused("geth is already running")
                } else {
                    self.want_running = true;
                    self.restart_at = None;
                    self.failures = 0;
                    Outcome::Starting
                }
            }
            (Command::Restart, Mode::Spawn) => {
                let outcome = match self.pid {
                    Some(_) => match self.stop_and_wait().await {
                        Ok(verdict) => Outcome::Restarting {
                            verdict: Some(verdict),
                        },
                        Err(reason) => Outcome::Failed { reason },
                    },
                    None => Outcome::Restarting { verdict: None },
                };
                self.want_running = true;
                self.restart_at = None;
                self.failures = 0;
                outcome
            }
            (Command::Restart, Mode::Attach) => match self.stop_and_wait().await {
                // The platform starts geth again.
                Ok(verdict) => Outcome::Restarting {
                    verdict: Some(verdict),
                },
                Err(reason) => Outcome::Failed { reason },
            },
        }
    }

    /// The agent is stopping.
    async fn shutdown(&mut self) {
        match self.mode() {
            Mode::Spawn if self.pid.is_some() => {
                if let Err(e) = self.stop_and_wait().await {
                    tracing::error!(error = %e, "stopping geth failed");
                }
            }
            // Attach: geth belongs to the platform. Record a shutdown it already
            // began, also one whose lines (or exit) the watcher has not
            // delivered yet: the platform stops geth first and this agent
            // right after, sometimes within one watch tick.
            Mode::Attach if self.pid.is_some() => {
                let settle = Instant::now() + ATTACH_SETTLE;
                let deadline = Instant::now() + self.config.shutdown_grace;
                loop {
                    let until = if self.stopping.is_some() {
                        deadline
                    } else {
                        settle
                    };
                    match tokio::time::timeout_at(until, self.events.recv()).await {
                        Ok(Some(event)) => {
                            if self.on_event(event).await.is_some() {
                                break;
                            }
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
            }
            _ => {}
        }
    }
}

/// How long a stopping agent in attach mode waits for the watcher's events in
/// flight (several watch ticks) before deciding geth is not stopping.
const ATTACH_SETTLE: Duration = Duration::from_secs(2);

/// 1 s, 2 s, 4 s, … up to `max`.
pub fn backoff(attempt: u32, max: Duration) -> Duration {
    let secs = 1u64
        .checked_shl(attempt.saturating_sub(1))
        .unwrap_or(u64::MAX);
    Duration::from_secs(secs).min(max)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Head block straight from geth (bounded wait).
async fn current_head(ipc: &std::path::Path) -> Option<u64> {
    let query = async { GethRpc::connect(ipc).await.ok()?.block_number().await.ok() };
    tokio::time::timeout(Duration::from_secs(2), query)
        .await
        .ok()
        .flatten()
}

/// Attach mode: a running geth must serve the configured genesis.
async fn check_running_genesis(
    rpc: &GethRpc,
    binary: &std::path::Path,
    genesis: &std::path::Path,
) -> Result<(), InitError> {
    use alloy::providers::Provider;
    let configured = init::configured_hash(binary, genesis).await?;
    let block = rpc
        .provider()
        .get_block_by_number(0.into())
        .await
        .map_err(|e| InitError::Geth(format!("reading block 0: {e}")))?
        .ok_or_else(|| InitError::Geth("geth has no block 0".into()))?;
    let stored = format!("{:#x}", block.header.hash);
    if stored == configured {
        Ok(())
    } else {
        Err(InitError::GenesisMismatch { stored, configured })
    }
}

/// geth's line, re-logged at its level under the agent's `node` span.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let max = Duration::from_secs(60);
        let secs: Vec<u64> = (1..=8).map(|a| backoff(a, max).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff(200, max), max);
    }
}
