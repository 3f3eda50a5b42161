//! A signer change (`signers add` / `signers remove`) as a plan the aggregator
//! drives through the agents, like a rolling restart: every live signer's
//! agent gets a signed `clique_propose` command on its next report; the plan
//! follows the signer set the signer nodes report (`clique_getSigners` per
//! block) until it shows the change, then has every node holding a signer key
//! `clique_discard` the proposal. Votes are re-cast every few periods while
//! the change has not landed (a restarted geth forgets its proposals; the
//! tally restarts at every epoch block). A change that would leave fewer live
//! signers than clique needs to seal is refused before any vote is cast.

use std::collections::BTreeMap;

use geth_wire::control::{AgentCommand, Command};
use serde::{Deserialize, Serialize};

use crate::registry::enode_address;

/// How long one command may wait for its node's next report.
const COMMAND_TTL_MS: u64 = 60_000;
/// Give up on a vote that has not landed after this long.
pub const VOTE_TIMEOUT_MS: u64 = 15 * 60_000;
/// Stop waiting for discard outcomes after this long.
const DISCARD_TIMEOUT_MS: u64 = 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Add,
    Remove,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Running,
    Done,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Voting,
    Discarding,
    Finished,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignerError {
    #[error("{0}")]
    Target(String),
    #[error("quorum: {0}")]
    Quorum(String),
    #[error("the signer set is not known yet (no signer node has reported it)")]
    NoSet,
    #[error("signer change {0} is still running")]
    Busy(u64),
}

/// One node as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRef {
    /// The node key's address (lower-case 0x hex): commands are addressed to it.
    pub id: String,
    pub name: String,
    /// The signer account it holds, lower-case, if any.
    #[serde(default)]
    pub signer: Option<String>,
    #[serde(default)]
    pub online: bool,
    #[serde(default)]
    pub enode: Option<String>,
}

/// What the plan needs from the live view.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// The signer set the signer nodes report, lower-case.
    pub set: Vec<String>,
    pub nodes: Vec<NodeRef>,
    /// The reference head.
    pub head: Option<u64>,
    pub period: u64,
}

impl View {
    fn in_set(&self, account: &str) -> bool {
        self.set.iter().any(|s| s == account)
    }

    /// Online nodes whose signer account is in the set.
    fn live_signers(&self) -> Vec<&NodeRef> {
        self.nodes
            .iter()
            .filter(|n| n.online && n.signer.as_deref().is_some_and(|s| self.in_set(s)))
            .collect()
    }

    /// A node by name, node key address, enode, or signer account.
    fn find(&self, who: &str) -> Option<&NodeRef> {
        let lower = who.trim().to_lowercase();
        let by_key = enode_address(who.trim()).map(|a| format!("{a:#x}"));
        self.nodes.iter().find(|n| {
            n.name == who.trim()
                || n.id == lower
                || n.signer.as_deref() == Some(lower.as_str())
                || by_key.as_deref() == Some(n.id.as_str())
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub at_ms: u64,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignerPlan {
    pub id: u64,
    pub action: Action,
    /// The signer account voted on, lower-case 0x.
    pub address: String,
    /// The node holding it, when known.
    pub node: Option<String>,
    pub state: State,
    pub phase: Phase,
    /// Signers in the set when the plan started.
    pub signers_before: usize,
    /// ⌊S/2⌋+1 of the set when the plan started.
    pub votes_needed: usize,
    /// Vote round (re-casts increase it).
    pub round: u32,
    /// Nodes asked to vote in the current round.
    pub voters: Vec<NodeRef>,
    /// Nodes asked to discard the proposal.
    pub discarders: Vec<NodeRef>,
    /// Outcomes by command id.
    pub answered: BTreeMap<String, String>,
    pub started_ms: u64,
    pub round_ms: u64,
    #[serde(default)]
    pub discard_ms: Option<u64>,
    /// Reference head when the set showed the change.
    #[serde(default)]
    pub changed_at_block: Option<u64>,
    #[serde(default)]
    pub reason: Option<String>,
    pub history: Vec<Line>,
}

/// Re-cast votes this often while the change has not landed: every 10
/// periods, at least every 30 s.
fn recast_ms(period: u64) -> u64 {
    (period.saturating_mul(10_000)).max(30_000)
}

impl SignerPlan {
    /// A checked plan, or why not (before any vote is cast).
    pub fn create(
        view: &View,
        action: Action,
        who: &str,
        id: u64,
        now_ms: u64,
    ) -> Result<Self, SignerError> {
        if view.set.is_empty() {
            return Err(SignerError::NoSet);
        }
        let node = view.find(who);
        let address = match (node.and_then(|n| n.signer.clone()), node) {
            (Some(account), _) => account,
            (None, Some(n)) => {
                return Err(SignerError::Target(format!(
                    "node {} holds no signer key: run `geth-agent signer-key --config <its agent.toml>` \
                     on its machine and restart its agent",
                    n.name
                )))
            }
            (None, None) => {
                let lower = who.trim().to_lowercase();
                let is_account = lower.len() == 42
                    && lower.starts_with("0x")
                    && lower[2..].chars().all(|c| c.is_ascii_hexdigit());
                if !is_account {
                    return Err(SignerError::Target(format!(
                        "{who:?} is no node (name, node address, enode) nor a 0x signer address"
                    )));
                }
                lower
            }
        };
        let s = view.set.len();
        let needed = s / 2 + 1;
        let live = view.live_signers();
        match action {
            Action::Add if view.in_set(&address) => {
                return Err(SignerError::Target(format!(
                    "{address} is already a signer"
                )))
            }
            Action::Remove if !view.in_set(&address) => {
                return Err(SignerError::Target(format!("{address} is not a signer")))
            }
            Action::Remove if s == 1 => {
                return Err(SignerError::Quorum(
                    "the last signer cannot be removed".into(),
                ))
            }
            _ => {}
        }
        if live.len() < needed {
            return Err(SignerError::Quorum(format!(
                "{} of {s} signers are live; the vote needs {needed}",
                live.len()
            )));
        }
        if action == Action::Remove {
            let remaining = live
                .iter()
                .filter(|n| n.signer.as_deref() != Some(address.as_str()))
                .count();
            let quorum = (s - 1) / 2 + 1;
            if remaining < quorum {
                return Err(SignerError::Quorum(format!(
                    "removing {address} would leave {remaining} live signers; {} signers need {quorum} \
                     live to keep sealing",
                    s - 1
                )));
            }
        }
        let node_name = node.map(|n| n.name.clone());
        let verb = match action {
            Action::Add => "add",
            Action::Remove => "remove",
        };
        let mut plan = Self {
            id,
            action,
            address: address.clone(),
            node: node_name.clone(),
            state: State::Running,
            phase: Phase::Voting,
            signers_before: s,
            votes_needed: needed,
            round: 1,
            voters: live.into_iter().cloned().collect(),
            discarders: Vec::new(),
            answered: BTreeMap::new(),
            started_ms: now_ms,
            round_ms: now_ms,
            discard_ms: None,
            changed_at_block: None,
            reason: None,
            history: Vec::new(),
        };
        let names: Vec<&str> = plan.voters.iter().map(|n| n.name.as_str()).collect();
        plan.say(
            now_ms,
            format!(
                "{verb} signer {address}{}: {s} signers, {needed} votes needed; asking {}",
                node_name.map(|n| format!(" ({n})")).unwrap_or_default(),
                names.join(", ")
            ),
        );
        Ok(plan)
    }

    fn say(&mut self, at_ms: u64, text: String) {
        tracing::info!(plan = self.id, "{text}");
        self.history.push(Line { at_ms, text });
    }

    fn command_id(&self, node: &NodeRef, what: &str) -> String {
        format!("signers-{}-{}-{what}-{}", self.id, self.round, &node.id)
    }

    /// Whether the set shows the change.
    fn landed(&self, view: &View) -> bool {
        match self.action {
            Action::Add => view.in_set(&self.address),
            Action::Remove => !view.in_set(&self.address),
        }
    }

    /// Moves the plan on from what the fleet reports.
    pub fn tick(&mut self, view: &View, now_ms: u64) {
        if self.state != State::Running {
            return;
        }
        match self.phase {
            Phase::Voting if self.landed(view) => {
                self.changed_at_block = view.head;
                let at = view
                    .head
                    .map(|h| format!(" at block {h}"))
                    .unwrap_or_default();
                self.say(
                    now_ms,
                    format!(
                        "the signer set changed{at}: {} signers; discarding the proposal",
                        view.set.len()
                    ),
                );
                self.start_discard(view, now_ms);
            }
            Phase::Voting if now_ms.saturating_sub(self.started_ms) > VOTE_TIMEOUT_MS => {
                self.reason = Some(format!(
                    "the vote did not land within {} s",
                    VOTE_TIMEOUT_MS / 1000
                ));
                self.say(now_ms, "vote timed out; discarding the proposal".into());
                self.start_discard(view, now_ms);
            }
            Phase::Voting if now_ms.saturating_sub(self.round_ms) >= recast_ms(view.period) => {
                self.round += 1;
                self.round_ms = now_ms;
                self.voters = view.live_signers().into_iter().cloned().collect();
                let head = view
                    .head
                    .map(|h| format!(" (head {h})"))
                    .unwrap_or_default();
                self.say(
                    now_ms,
                    format!(
                        "not in the set yet{head}: re-casting the votes, round {}",
                        self.round
                    ),
                );
            }
            Phase::Discarding => {
                let all = self
                    .discarders
                    .iter()
                    .all(|n| self.answered.contains_key(&self.command_id(n, "discard")));
                let waited = now_ms.saturating_sub(self.discard_ms.unwrap_or(now_ms));
                if all || waited > DISCARD_TIMEOUT_MS {
                    self.phase = Phase::Finished;
                    self.state = if self.reason.is_some() {
                        State::Failed
                    } else {
                        State::Done
                    };
                    let text = match (&self.reason, self.changed_at_block) {
                        (Some(r), _) => format!("failed: {r}"),
                        (None, Some(b)) => format!("done: changed at block {b}"),
                        (None, None) => "done".into(),
                    };
                    self.say(now_ms, text);
                }
            }
            _ => {}
        }
    }

    fn start_discard(&mut self, view: &View, now_ms: u64) {
        self.phase = Phase::Discarding;
        self.discard_ms = Some(now_ms);
        // Every node with a signer key may hold the proposal.
        self.discarders = view
            .nodes
            .iter()
            .filter(|n| n.online && n.signer.is_some())
            .cloned()
            .collect();
    }

    /// Commands for node `id` now (re-sent until their outcome is reported).
    pub fn commands_for(&self, id: &str, now_ms: u64) -> Vec<AgentCommand> {
        if self.state != State::Running {
            return Vec::new();
        }
        let Ok(address) = self.address.parse() else {
            return Vec::new();
        };
        let (nodes, what, command) = match self.phase {
            Phase::Voting => (
                &self.voters,
                "propose",
                Command::CliquePropose {
                    address,
                    authorize: self.action == Action::Add,
                },
            ),
            Phase::Discarding => (
                &self.discarders,
                "discard",
                Command::CliqueDiscard { address },
            ),
            Phase::Finished => return Vec::new(),
        };
        nodes
            .iter()
            .filter(|n| n.id == id)
            .map(|n| self.command_id(n, what))
            .filter(|cid| !self.answered.contains_key(cid))
            .map(|cid| AgentCommand {
                id: cid,
                node: id.to_owned(),
                expires_ms: now_ms + COMMAND_TTL_MS,
                command,
            })
            .collect()
    }

    /// Records a command's outcome (ids of other plans are ignored).
    pub fn on_outcome(&mut self, id: &str, ok: bool, text: &str, now_ms: u64) {
        if !id.starts_with(&format!("signers-{}-", self.id)) || self.answered.contains_key(id) {
            return;
        }
        self.answered.insert(id.to_owned(), text.to_owned());
        let node = self
            .voters
            .iter()
            .chain(&self.discarders)
            .find(|n| id.ends_with(&n.id))
            .map_or("?".to_owned(), |n| n.name.clone());
        let mark = if ok { "" } else { "FAILED: " };
        self.say(now_ms, format!("{node}: {mark}{text}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(i: u8, signer: Option<u8>, online: bool) -> NodeRef {
        NodeRef {
            id: format!("0x{}", format!("{i:02x}").repeat(20)),
            name: format!("n{i}"),
            signer: signer.map(|s| format!("0x{}", format!("{s:02x}").repeat(20))),
            online,
            enode: None,
        }
    }

    fn account(s: u8) -> String {
        format!("0x{}", format!("{s:02x}").repeat(20))
    }

    fn view(set: &[u8], nodes: Vec<NodeRef>) -> View {
        View {
            set: set.iter().map(|s| account(*s)).collect(),
            nodes,
            head: Some(10),
            period: 2,
        }
    }

    fn three_and_a_candidate(online: [bool; 3]) -> View {
        view(
            &[0xa1, 0xa2, 0xa3],
            vec![
                node(1, Some(0xa1), online[0]),
                node(2, Some(0xa2), online[1]),
                node(3, Some(0xa3), online[2]),
                node(4, Some(0xa4), true),
                node(5, None, true),
            ],
        )
    }

    #[test]
    fn an_add_votes_on_every_live_signer_follows_the_set_then_discards() {
        let mut v = three_and_a_candidate([true, true, true]);
        let mut plan = SignerPlan::create(&v, Action::Add, "n4", 7, 1000).unwrap();
        assert_eq!(plan.address, account(0xa4));
        assert_eq!((plan.votes_needed, plan.voters.len()), (2, 3));
        let n1 = node(1, None, true).id;
        let cmds = plan.commands_for(&n1, 1000);
        assert_eq!(cmds.len(), 1);
        assert!(matches!(
            cmds[0].command,
            Command::CliquePropose {
                authorize: true,
                ..
            }
        ));
        assert!(plan.commands_for(&node(4, None, true).id, 1000).is_empty());
        plan.on_outcome(&cmds[0].id, true, "voted", 1100);
        assert!(
            plan.commands_for(&n1, 1200).is_empty(),
            "answered: not re-sent"
        );

        // Not landed after 10 periods: a new round asks again.
        plan.tick(&v, 1000 + 30_000);
        assert_eq!(plan.round, 2);
        assert_eq!(plan.commands_for(&n1, 31_000).len(), 1);

        v.set.push(account(0xa4));
        v.head = Some(42);
        plan.tick(&v, 40_000);
        assert_eq!(plan.phase, Phase::Discarding);
        assert_eq!(plan.changed_at_block, Some(42));
        // Every node with a key discards, the new signer too; not n5.
        assert_eq!(plan.discarders.len(), 4);
        for n in plan.discarders.clone() {
            let c = plan.commands_for(&n.id, 40_000);
            assert!(matches!(c[0].command, Command::CliqueDiscard { .. }));
            plan.on_outcome(&c[0].id, true, "discarded", 40_100);
        }
        plan.tick(&v, 41_000);
        assert_eq!((plan.state, plan.phase), (State::Done, Phase::Finished));
        assert!(plan.history.last().unwrap().text.contains("block 42"));
        assert!(plan.commands_for(&n1, 41_000).is_empty());
    }

    #[test]
    fn quorum_breaking_or_pointless_changes_are_refused_before_any_vote() {
        // 1 of 3 live: a vote needs 2.
        let v = three_and_a_candidate([true, false, false]);
        assert!(matches!(
            SignerPlan::create(&v, Action::Add, "n4", 1, 0),
            Err(SignerError::Quorum(_))
        ));
        // 2 of 3 live, removing a live one leaves 1 of 2: sealing stops.
        let v = three_and_a_candidate([true, true, false]);
        let err = SignerPlan::create(&v, Action::Remove, &account(0xa1), 1, 0).unwrap_err();
        assert!(matches!(err, SignerError::Quorum(_)), "{err}");
        // Removing the offline one is fine: 2 of 2 remain live.
        assert!(SignerPlan::create(&v, Action::Remove, "n3", 1, 0).is_ok());
        let v = three_and_a_candidate([true, true, true]);
        assert!(matches!(
            SignerPlan::create(&v, Action::Add, "n1", 1, 0),
            Err(SignerError::Target(_))
        ));
        assert!(matches!(
            SignerPlan::create(&v, Action::Remove, "n4", 1, 0),
            Err(SignerError::Target(_))
        ));
        let err = SignerPlan::create(&v, Action::Add, "n5", 1, 0).unwrap_err();
        assert!(err.to_string().contains("signer-key"), "{err}");
        assert!(matches!(
            SignerPlan::create(&v, Action::Add, "nobody", 1, 0),
            Err(SignerError::Target(_))
        ));
        assert_eq!(
            SignerPlan::create(&View::default(), Action::Add, "n4", 1, 0),
            Err(SignerError::NoSet)
        );
        // A bare account is accepted for an add.
        let plan = SignerPlan::create(&v, Action::Add, &account(0xee), 1, 0).unwrap();
        assert_eq!(plan.node, None);
    }

    #[test]
    fn a_vote_that_never_lands_fails_after_discarding() {
        let v = three_and_a_candidate([true, true, true]);
        let mut plan = SignerPlan::create(&v, Action::Remove, "n3", 2, 0).unwrap();
        assert!(matches!(
            plan.commands_for(&plan.voters[0].id.clone(), 0)[0].command,
            Command::CliquePropose {
                authorize: false,
                ..
            }
        ));
        plan.tick(&v, VOTE_TIMEOUT_MS + 1);
        assert_eq!(plan.phase, Phase::Discarding);
        plan.tick(&v, VOTE_TIMEOUT_MS + DISCARD_TIMEOUT_MS + 2);
        assert_eq!(plan.state, State::Failed);
        // Outcomes of other plans are not this plan's.
        let before = plan.history.len();
        plan.on_outcome("signers-99-1-propose-0x", true, "x", 1);
        assert_eq!(plan.history.len(), before);
    }
}
