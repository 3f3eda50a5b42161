//! Commands from the aggregator, carried in its signed replies (the reporter
//! hands over only replies whose signature it verified). Each command runs at
//! most once: its id is written to `<datadir>/geth-agent/commands.json` before
//! it runs, so a command re-delivered (the aggregator repeats it until the
//! outcome is stored) or replayed does not restart geth twice, even across an
//! agent restart. Commands for another node or past their expiry are dropped.
//! A command runs in its own task through the supervisor's typed control path
//! (the same as the admin socket), so reports keep flowing while geth stops;
//! its outcome, with the shutdown verdict, is spooled as an event. Clique
//! votes (`clique_propose`, `clique_discard`) go to geth's IPC instead.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use geth_wire::control::{AgentCommand, Command, Outcome};
use geth_wire::EventKind;
use tokio::sync::{mpsc, oneshot};

use crate::shutdown::write_atomic;
use crate::spool::Spool;
use crate::supervisor::Request;

/// Ids remembered: far more than the commands of any restart run.
const REMEMBERED: usize = 1024;
/// Longest accepted command id.
const MAX_ID: usize = 128;
pub const FILE: &str = "commands.json";

/// Why a command was not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Skipped {
    #[error("addressed to another node ({0})")]
    OtherNode(String),
    #[error("expired")]
    Expired,
    #[error("already run")]
    Seen,
    #[error("id must be 1 to {MAX_ID} characters")]
    BadId,
    #[error("cannot record the command id: {0}")]
    Unrecorded(String),
}

/// The ids of commands already accepted, persisted.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    ids: VecDeque<String>,
}

impl Ledger {
    /// Loads the ids recorded in `path`; a missing or damaged file is empty
    /// (damaged: logged; the aggregator's expiry bounds what could run again).
    pub fn open(path: &Path) -> Self {
        let ids = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %path.display(), error = %e, "command ledger unreadable; starting empty");
                VecDeque::new()
            }),
            Err(_) => VecDeque::new(),
        };
        Self {
            path: path.to_owned(),
            ids,
        }
    }

    /// Decides whether `command` may run for node `me` at `now_ms`; if so its
    /// id is recorded durably before this returns.
    pub fn admit(&mut self, me: &str, command: &AgentCommand, now_ms: u64) -> Result<(), Skipped> {
        if command.id.is_empty() || command.id.len() > MAX_ID {
            return Err(Skipped::BadId);
        }
        if !command.node.eq_ignore_ascii_case(me) {
            return Err(Skipped::OtherNode(command.node.clone()));
        }
        if self.ids.contains(&command.id) {
            return Err(Skipped::Seen);
        }
        if command.expires_ms <= now_ms {
            return Err(Skipped::Expired);
        }
        self.ids.push_back(command.id.clone());
        while self.ids.len() > REMEMBERED {
            self.ids.pop_front();
        }
        let json = serde_json::to_vec(&self.ids).map_err(|e| Skipped::Unrecorded(e.to_string()))?;
        if let Err(e) = write_atomic(&self.path, &json) {
            // Not durable: do not run (a crash could run it twice).
            self.ids.pop_back();
            return Err(Skipped::Unrecorded(e.to_string()));
        }
        Ok(())
    }

    pub fn contains(&self, id: &str) -> bool {
        self.ids.iter().any(|i| i == id)
    }
}

/// Runs admitted commands through the supervisor and spools their outcomes.
pub struct Executor {
    /// This node's address, lower-case 0x hex.
    me: String,
    ledger: Mutex<Ledger>,
    requests: mpsc::Sender<Request>,
    spool: Arc<Spool>,
    /// geth's IPC socket, for clique votes (none: votes are refused).
    ipc: Option<PathBuf>,
}

impl Executor {
    pub fn new(
        me: &str,
        ledger: Ledger,
        requests: mpsc::Sender<Request>,
        spool: Arc<Spool>,
    ) -> Self {
        Self {
            me: me.to_lowercase(),
            ledger: Mutex::new(ledger),
            requests,
            spool,
            ipc: None,
        }
    }

    /// Where clique votes are sent (geth's IPC socket).
    pub fn with_ipc(mut self, ipc: PathBuf) -> Self {
        self.ipc = Some(ipc);
        self
    }

    /// Casts or withdraws a clique vote through geth's IPC.
    async fn vote(&self, command: Command) -> Outcome {
        let Some(ipc) = &self.ipc else {
            return Outcome::Refused {
                reason: "this agent has no geth IPC to vote through".into(),
            };
        };
        let result = async {
            let rpc = crate::rpc::GethRpc::connect(ipc).await?;
            match command {
                Command::CliquePropose { address, authorize } => {
                    let _: serde_json::Value =
                        rpc.call("clique_propose", (address, authorize)).await?;
                    let what = if authorize { "add" } else { "remove" };
                    Ok(format!("voted to {what} signer {address:#x}"))
                }
                Command::CliqueDiscard { address } => {
                    let _: serde_json::Value = rpc.call("clique_discard", (address,)).await?;
                    Ok(format!("vote about {address:#x} discarded"))
                }
                _ => Err(crate::rpc::RpcError::Call {
                    method: "clique",
                    reason: "not a vote".into(),
                }),
            }
        }
        .await;
        match result {
            Ok(detail) => Outcome::Done { detail },
            Err(e) => Outcome::Failed {
                reason: e.to_string(),
            },
        }
    }

    /// Takes the commands of one verified reply: admits each and starts it in
    /// its own task. Returns the ids started.
    pub fn accept(self: &Arc<Self>, commands: &[AgentCommand], now_ms: u64) -> Vec<String> {
        let mut started = Vec::new();
        for command in commands {
            let admitted = self
                .ledger
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .admit(&self.me, command, now_ms);
            match admitted {
                Ok(()) => {
                    tracing::info!(id = %command.id, command = ?command.command, "command from the aggregator");
                    started.push(command.id.clone());
                    let this = self.clone();
                    let command = command.clone();
                    tokio::spawn(async move { this.execute(command).await });
                }
                Err(Skipped::Seen) => tracing::debug!(id = %command.id, "command already run"),
                Err(e) => {
                    tracing::warn!(id = %command.id, reason = %e, "command from the aggregator ignored")
                }
            }
        }
        started
    }

    async fn execute(&self, command: AgentCommand) {
        if matches!(
            command.command,
            Command::CliquePropose { .. } | Command::CliqueDiscard { .. }
        ) {
            let outcome = self.vote(command.command).await;
            tracing::info!(id = %command.id, outcome = %outcome, "command done");
            self.spool_outcome(command, outcome);
            return;
        }
        let (reply, outcome) = oneshot::channel();
        let outcome = match self
            .requests
            .send(Request {
                command: command.command,
                reply,
            })
            .await
        {
            Ok(()) => outcome.await.unwrap_or_else(|_| Outcome::Failed {
                reason: "the supervisor is stopping".into(),
            }),
            Err(_) => Outcome::Failed {
                reason: "the supervisor is stopping".into(),
            },
        };
        tracing::info!(id = %command.id, outcome = %outcome, "command done");
        self.spool_outcome(command, outcome);
    }

    fn spool_outcome(&self, command: AgentCommand, outcome: Outcome) {
        if let Err(e) = self.spool.push(EventKind::Command {
            id: command.id,
            command: command.command,
            outcome,
        }) {
            tracing::error!(error = %e, "cannot spool the command outcome");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(id: &str, node: &str, expires_ms: u64) -> AgentCommand {
        AgentCommand {
            id: id.into(),
            node: node.into(),
            expires_ms,
            command: Command::Restart,
        }
    }

    #[test]
    fn a_command_is_admitted_once_for_this_node_before_it_expires_even_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let mut ledger = Ledger::open(&path);
        let me = "0xaa";
        assert_eq!(ledger.admit(me, &command("r1", "0xAA", 100), 50), Ok(()));
        assert_eq!(
            ledger.admit(me, &command("r1", me, 100), 60),
            Err(Skipped::Seen)
        );
        assert_eq!(
            ledger.admit(me, &command("r2", "0xbb", 100), 60),
            Err(Skipped::OtherNode("0xbb".into()))
        );
        assert_eq!(
            ledger.admit(me, &command("r3", me, 100), 100),
            Err(Skipped::Expired)
        );
        assert_eq!(
            ledger.admit(me, &command("", me, 100), 10),
            Err(Skipped::BadId)
        );
        let long = "x".repeat(MAX_ID + 1);
        assert_eq!(
            ledger.admit(me, &command(&long, me, 100), 10),
            Err(Skipped::BadId)
        );
        // The ledger is on disk: a restarted agent still knows r1.
        let mut reopened = Ledger::open(&path);
        assert!(reopened.contains("r1") && !reopened.contains("r3"));
        assert_eq!(
            reopened.admit(me, &command("r1", me, 100), 60),
            Err(Skipped::Seen)
        );
        // A damaged file is an empty ledger, not a crash.
        std::fs::write(&path, b"{not json").unwrap();
        assert!(!Ledger::open(&path).contains("r1"));
    }

    #[test]
    fn the_ledger_is_bounded_and_refuses_what_it_cannot_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(&dir.path().join(FILE));
        for i in 0..REMEMBERED + 5 {
            ledger
                .admit("0xaa", &command(&format!("c{i}"), "0xaa", 10), 1)
                .unwrap();
        }
        assert!(!ledger.contains("c0") && ledger.contains(&format!("c{}", REMEMBERED + 4)));
        let mut unwritable = Ledger::open(Path::new("/proc/nope/commands.json"));
        assert!(matches!(
            unwritable.admit("0xaa", &command("z", "0xaa", 10), 1),
            Err(Skipped::Unrecorded(_))
        ));
        assert!(!unwritable.contains("z"));
    }

    #[tokio::test]
    async fn an_admitted_command_goes_to_the_supervisor_and_its_outcome_is_spooled() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Arc::new(Spool::open(&dir.path().join("spool")).unwrap());
        let (tx, mut rx) = mpsc::channel(4);
        let exec = Arc::new(Executor::new(
            "0xAA",
            Ledger::open(&dir.path().join(FILE)),
            tx,
            spool.clone(),
        ));
        let cmds = [command("r1", "0xaa", 1000), command("r1", "0xaa", 1000)];
        assert_eq!(exec.accept(&cmds, 10), vec!["r1".to_owned()]);
        let request = rx.recv().await.unwrap();
        assert_eq!(request.command, Command::Restart);
        request
            .reply
            .send(Outcome::Restarting { verdict: None })
            .unwrap();
        let events = testnet_free_wait(|| spool.pending(10)).await;
        assert!(
            matches!(&events[0].kind, EventKind::Command { id, outcome: Outcome::Restarting { .. }, .. } if id == "r1"),
            "{events:?}"
        );
        assert!(
            exec.accept(&cmds, 20).is_empty(),
            "re-delivered: not run again"
        );
        assert!(rx.try_recv().is_err());
    }

    /// Polls until `f` returns something (bounded).
    async fn testnet_free_wait<T>(f: impl Fn() -> Vec<T>) -> Vec<T> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let v = f();
            if !v.is_empty() || tokio::time::Instant::now() > deadline {
                return v;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}
