//! A rolling restart plan and its step machine, free of I/O: the order
//! (explicit or automatic), the clique quorum guard, and the transitions of one
//! step (checking → stopping → returning → sealing → done), each wait bounded.
//! What the fleet looks like comes in as a [`Fleet`]; the caller persists the
//! plan after every change.

use std::collections::HashMap;

use geth_wire::control::{AgentCommand, Command, Outcome};
use geth_wire::ShutdownVerdict;
use serde::{Deserialize, Serialize};

/// A node that may be restarted, in `network.json` order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Address of its node key, lower-case 0x hex (how agents are known).
    pub id: String,
    pub name: String,
    /// Its clique signer address, for signer nodes (lower-case).
    pub signer: Option<String>,
}

/// How long each wait of a step may take (seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Timeouts {
    /// For every node to be ready before a step starts.
    pub ready_before_s: u64,
    /// From sending the command to its outcome (the proven shutdown).
    pub stop_s: u64,
    /// From the outcome to the node reporting ready again.
    pub ready_s: u64,
    /// For a signer, from ready to a block it sealed.
    pub seal_s: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            ready_before_s: 180,
            stop_s: 240,
            ready_s: 300,
            seal_s: 300,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanState {
    Running,
    Failed,
    Aborted,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Not reached yet.
    Pending,
    /// Waiting for every node to be ready and the quorum guard.
    Checking,
    /// The restart command is out; waiting for the agent's outcome.
    Stopping,
    /// geth stopped cleanly; waiting for the node to be ready again.
    Returning,
    /// A signer is ready; waiting for a block it sealed.
    Sealing,
    Done,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub node: Member,
    pub phase: Phase,
    /// Runs of this step (a resume starts another).
    pub attempt: u32,
    pub command_id: Option<String>,
    /// When the current phase began (aggregator time, Unix ms).
    pub phase_since_ms: u64,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    /// When the command was sent.
    pub sent_ms: Option<u64>,
    /// When the stop's outcome arrived.
    pub stopped_ms: Option<u64>,
    /// The fleet's highest head then: the node is back once it holds a
    /// newer block (it replicates again, not just answers).
    #[serde(default)]
    pub fleet_head_at_stop: Option<u64>,
    pub verdict: Option<ShutdownVerdict>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryLine {
    pub at_ms: u64,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub id: u64,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// `auto` or `explicit`.
    pub order_kind: String,
    pub state: PlanState,
    /// Why it failed or was aborted.
    pub reason: Option<String>,
    pub current: usize,
    pub steps: Vec<Step>,
    pub timeouts: Timeouts,
    /// Signers in the network (S for the quorum ⌊S/2⌋+1).
    pub signers: usize,
    pub history: Vec<HistoryLine>,
}

/// What a plan may not be created from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("unknown node {0:?} (use a name or a 1-based index of network.json)")]
    UnknownNode(String),
    #[error("node {0} is listed twice")]
    Duplicate(String),
    #[error("the order is empty")]
    Empty,
    #[error("quorum: {0}")]
    Quorum(String),
}

/// The clique quorum: blocks keep coming while ⌊S/2⌋+1 signers seal.
pub fn quorum(signers: usize) -> usize {
    signers / 2 + 1
}

/// Resolves an explicit order (names or 1-based indexes into `members`).
pub fn explicit_order(members: &[Member], order: &[String]) -> Result<Vec<Member>, PlanError> {
    if order.is_empty() {
        return Err(PlanError::Empty);
    }
    let mut out: Vec<Member> = Vec::new();
    for item in order {
        let item = item.trim();
        let member = item
            .parse::<usize>()
            .ok()
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| members.get(i))
            .or_else(|| members.iter().find(|m| m.name == item))
            .ok_or_else(|| PlanError::UnknownNode(item.to_owned()))?;
        if out.iter().any(|m| m.id == member.id) {
            return Err(PlanError::Duplicate(member.name.clone()));
        }
        out.push(member.clone());
    }
    Ok(out)
}

/// Non-signers first, then signers, the first node of the network (the
/// bootstrap node the operator controls) last.
pub fn auto_order(members: &[Member]) -> Vec<Member> {
    let Some((first, rest)) = members.split_first() else {
        return Vec::new();
    };
    let mut out: Vec<Member> = rest
        .iter()
        .filter(|m| m.signer.is_none())
        .cloned()
        .collect();
    out.extend(rest.iter().filter(|m| m.signer.is_some()).cloned());
    out.push(first.clone());
    out
}

/// The fleet as the aggregator sees it now.
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    /// Per node id: what the live view knows of it.
    pub nodes: HashMap<String, Seen>,
    /// Per signer address (lower-case): when a block it sealed was first seen.
    pub last_sealed_ms: HashMap<String, u64>,
    /// Nodes silent for this long are down.
    pub online_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seen {
    /// Its last report of any kind.
    pub at_ms: u64,
    pub ready: bool,
    pub head: Option<u64>,
}

impl Fleet {
    /// The highest head any node reported.
    pub fn head(&self) -> Option<u64> {
        self.nodes.values().filter_map(|s| s.head).max()
    }

    pub fn up(&self, id: &str, now_ms: u64) -> bool {
        self.nodes
            .get(id)
            .is_some_and(|s| s.ready && now_ms.saturating_sub(s.at_ms) < self.online_ms)
    }
}

/// Refuses a stop of `target` that would leave fewer than ⌊S/2⌋+1 live
/// signers, counting signers already down.
pub fn quorum_guard(
    members: &[Member],
    signers: usize,
    target: &Member,
    up: impl Fn(&Member) -> bool,
) -> Result<(), String> {
    if target.signer.is_none() {
        return Ok(());
    }
    let need = quorum(signers);
    let down: Vec<&str> = members
        .iter()
        .filter(|m| m.signer.is_some() && m.id != target.id && !up(m))
        .map(|m| m.name.as_str())
        .collect();
    let live_after = signers.saturating_sub(1 + down.len());
    if live_after < need {
        let already = if down.is_empty() {
            String::new()
        } else {
            format!("; already down: {}", down.join(", "))
        };
        return Err(format!(
            "restarting signer {} would leave {live_after} of {signers} signers sealing, below the clique quorum {need}{already}",
            target.name
        ));
    }
    Ok(())
}

impl Plan {
    /// A new running plan, refused if any signer in it could not be stopped
    /// without breaking the quorum as the fleet stands now.
    pub fn new(
        id: u64,
        members: &[Member],
        order: Vec<Member>,
        order_kind: &str,
        timeouts: Timeouts,
        up: impl Fn(&Member) -> bool,
        now_ms: u64,
    ) -> Result<Self, PlanError> {
        if order.is_empty() {
            return Err(PlanError::Empty);
        }
        let signers = members.iter().filter(|m| m.signer.is_some()).count();
        for target in &order {
            quorum_guard(members, signers, target, &up).map_err(PlanError::Quorum)?;
        }
        let names: Vec<String> = order.iter().map(|m| m.name.clone()).collect();
        let mut plan = Self {
            id,
            created_ms: now_ms,
            updated_ms: now_ms,
            order_kind: order_kind.to_owned(),
            state: PlanState::Running,
            reason: None,
            current: 0,
            steps: order
                .into_iter()
                .map(|node| Step {
                    node,
                    phase: Phase::Pending,
                    attempt: 0,
                    command_id: None,
                    phase_since_ms: now_ms,
                    started_ms: None,
                    finished_ms: None,
                    sent_ms: None,
                    stopped_ms: None,
                    fleet_head_at_stop: None,
                    verdict: None,
                })
                .collect(),
            timeouts,
            signers,
            history: Vec::new(),
        };
        plan.note(
            now_ms,
            format!("plan {id} ({order_kind}): {}", names.join(", ")),
        );
        Ok(plan)
    }

    fn note(&mut self, now_ms: u64, text: String) {
        tracing::info!(plan = self.id, "{text}");
        self.history.push(HistoryLine {
            at_ms: now_ms,
            text,
        });
        self.updated_ms = now_ms;
    }

    pub fn current_step(&self) -> Option<&Step> {
        (self.state == PlanState::Running)
            .then(|| self.steps.get(self.current))
            .flatten()
    }

    /// The command to deliver to `node` now, if any: the current step's,
    /// while it waits for the outcome.
    pub fn command_for(&self, node: &str) -> Option<AgentCommand> {
        let step = self.current_step()?;
        if step.phase != Phase::Stopping || step.node.id != node {
            return None;
        }
        Some(AgentCommand {
            id: step.command_id.clone()?,
            node: step.node.id.clone(),
            expires_ms: step.sent_ms? + self.timeouts.stop_s * 1000,
            command: Command::Restart,
        })
    }

    fn set_phase(&mut self, phase: Phase, now_ms: u64) {
        if let Some(step) = self.steps.get_mut(self.current) {
            step.phase = phase;
            step.phase_since_ms = now_ms;
        }
    }

    fn fail(&mut self, reason: &str, now_ms: u64) {
        let name = self
            .steps
            .get(self.current)
            .map(|s| s.node.name.clone())
            .unwrap_or_default();
        self.set_phase(Phase::Failed, now_ms);
        self.state = PlanState::Failed;
        let reason = format!("{name}: {reason}");
        self.note(now_ms, format!("FAILED {reason}"));
        self.reason = Some(reason);
    }

    /// Advances the current step as far as the fleet allows; true if anything
    /// changed.
    pub fn advance(&mut self, members: &[Member], fleet: &Fleet, now_ms: u64) -> bool {
        let before = (
            self.state,
            self.current,
            self.current_step().map(|s| s.phase),
        );
        // Several transitions may be due at once.
        for _ in 0..8 {
            if !self.advance_once(members, fleet, now_ms) {
                break;
            }
        }
        before
            != (
                self.state,
                self.current,
                self.current_step().map(|s| s.phase),
            )
    }

    fn advance_once(&mut self, members: &[Member], fleet: &Fleet, now_ms: u64) -> bool {
        let Some(step) = self.current_step().cloned() else {
            return false;
        };
        let waited = now_ms.saturating_sub(step.phase_since_ms);
        let t = self.timeouts;
        let node = &step.node;
        match step.phase {
            Phase::Pending => {
                self.steps[self.current].started_ms = Some(now_ms);
                self.set_phase(Phase::Checking, now_ms);
                self.note(now_ms, format!("{}: checking the fleet", node.name));
                true
            }
            Phase::Checking => {
                let not_ready: Vec<&str> = members
                    .iter()
                    .filter(|m| !fleet.up(&m.id, now_ms))
                    .map(|m| m.name.as_str())
                    .collect();
                // The quorum first: waiting would not help if a signer stays down.
                if let Err(reason) =
                    quorum_guard(members, self.signers, node, |m| fleet.up(&m.id, now_ms))
                {
                    if waited >= t.ready_before_s * 1000 || not_ready.is_empty() {
                        self.fail(&reason, now_ms);
                        return true;
                    }
                    return false;
                }
                if !not_ready.is_empty() {
                    if waited >= t.ready_before_s * 1000 {
                        let reason = format!(
                            "not every node ready within {} s: {}",
                            t.ready_before_s,
                            not_ready.join(", ")
                        );
                        self.fail(&reason, now_ms);
                        return true;
                    }
                    return false;
                }
                let attempt = step.attempt + 1;
                let s = &mut self.steps[self.current];
                s.attempt = attempt;
                s.command_id = Some(format!(
                    "restart-{}-{}-{attempt}",
                    self.id,
                    self.current + 1
                ));
                s.sent_ms = Some(now_ms);
                s.stopped_ms = None;
                s.verdict = None;
                self.set_phase(Phase::Stopping, now_ms);
                self.note(now_ms, format!("{}: restart sent", node.name));
                true
            }
            Phase::Stopping => {
                if waited >= t.stop_s * 1000 {
                    self.fail(
                        &format!("no shutdown outcome within {} s", t.stop_s),
                        now_ms,
                    );
                    return true;
                }
                false
            }
            Phase::Returning => {
                let since = step.stopped_ms.unwrap_or(step.phase_since_ms);
                let past = step.fleet_head_at_stop;
                let back = fleet.nodes.get(&node.id).is_some_and(|s| {
                    s.ready && s.at_ms > since && past.is_none_or(|p| s.head.is_some_and(|h| h > p))
                });
                if back {
                    if node.signer.is_some() {
                        self.set_phase(Phase::Sealing, now_ms);
                        self.note(
                            now_ms,
                            format!("{}: ready again, waiting for a sealed block", node.name),
                        );
                    } else {
                        self.finish_step(now_ms, "ready again");
                    }
                    return true;
                }
                if waited >= t.ready_s * 1000 {
                    self.fail(&format!("not ready again within {} s", t.ready_s), now_ms);
                    return true;
                }
                false
            }
            Phase::Sealing => {
                let since = step.stopped_ms.unwrap_or(step.phase_since_ms);
                let sealed = node
                    .signer
                    .as_ref()
                    .and_then(|s| fleet.last_sealed_ms.get(s))
                    .is_some_and(|at| *at > since);
                if sealed {
                    self.finish_step(now_ms, "sealed a block again");
                    return true;
                }
                if waited >= t.seal_s * 1000 {
                    self.fail(&format!("sealed no block within {} s", t.seal_s), now_ms);
                    return true;
                }
                false
            }
            Phase::Done | Phase::Failed => false,
        }
    }

    fn finish_step(&mut self, now_ms: u64, what: &str) {
        let step = &mut self.steps[self.current];
        step.finished_ms = Some(now_ms);
        let took = now_ms.saturating_sub(step.started_ms.unwrap_or(now_ms));
        let name = step.node.name.clone();
        self.set_phase(Phase::Done, now_ms);
        self.note(
            now_ms,
            format!("{name}: {what}; step done in {} s", took / 1000),
        );
        self.current += 1;
        if self.current >= self.steps.len() {
            self.state = PlanState::Done;
            let took = now_ms.saturating_sub(self.created_ms);
            self.note(
                now_ms,
                format!("plan {} done in {} s", self.id, took / 1000),
            );
        }
    }

    /// The outcome of a command, reported by node `from`; `fleet_head` is the
    /// highest head reported now.
    pub fn on_outcome(
        &mut self,
        from: &str,
        id: &str,
        outcome: &Outcome,
        fleet_head: Option<u64>,
        now_ms: u64,
    ) -> bool {
        let Some(step) = self.current_step().cloned() else {
            return false;
        };
        if step.phase != Phase::Stopping
            || step.node.id != from
            || step.command_id.as_deref() != Some(id)
        {
            return false;
        }
        let s = &mut self.steps[self.current];
        s.stopped_ms = Some(now_ms);
        s.fleet_head_at_stop = fleet_head;
        s.verdict = outcome.verdict().cloned();
        match outcome {
            Outcome::Restarting {
                verdict: Some(verdict),
            } if verdict.clean => {
                self.set_phase(Phase::Returning, now_ms);
                let text = format!(
                    "{}: clean shutdown ({}), waiting for geth to be ready",
                    step.node.name, verdict.reason
                );
                self.note(now_ms, text);
            }
            Outcome::Restarting {
                verdict: Some(verdict),
            } => self.fail(&format!("unclean shutdown: {}", verdict.reason), now_ms),
            other => self.fail(&format!("restart not done: {other}"), now_ms),
        }
        true
    }

    /// A shutdown of node `from` seen during its step: an unclean one stops
    /// the run (a crash or kill while it was being restarted).
    pub fn on_shutdown(
        &mut self,
        from: &str,
        verdict: &ShutdownVerdict,
        at_ms: u64,
        now_ms: u64,
    ) -> bool {
        let Some(step) = self.current_step().cloned() else {
            return false;
        };
        let active = matches!(
            step.phase,
            Phase::Stopping | Phase::Returning | Phase::Sealing
        );
        // Events recorded before the command (agent clock, with a minute of slack) are old news.
        let recent = step
            .sent_ms
            .is_some_and(|sent| at_ms.saturating_add(60_000) >= sent);
        if !active || step.node.id != from || verdict.clean || !recent {
            return false;
        }
        self.fail(&format!("unclean shutdown: {}", verdict.reason), now_ms);
        true
    }

    /// Stops a running plan; no further command is sent.
    pub fn abort(&mut self, now_ms: u64) -> bool {
        if self.state != PlanState::Running {
            return false;
        }
        self.state = PlanState::Aborted;
        self.reason = Some("aborted by the operator".into());
        self.note(now_ms, "aborted by the operator".into());
        true
    }

    /// Continues a failed or aborted plan from its current step (run again
    /// from the start, with a new command id).
    pub fn resume(&mut self, now_ms: u64) -> bool {
        if !matches!(self.state, PlanState::Failed | PlanState::Aborted) {
            return false;
        }
        self.state = PlanState::Running;
        self.reason = None;
        if self.current < self.steps.len() {
            self.set_phase(Phase::Pending, now_ms);
        }
        let name = self
            .steps
            .get(self.current)
            .map(|s| s.node.name.clone())
            .unwrap_or_default();
        self.note(now_ms, format!("resumed at {name}"));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(signers: usize, validators: usize) -> Vec<Member> {
        (0..signers + validators)
            .map(|i| Member {
                id: format!("0x{i:02}"),
                name: format!("node-{}", i + 1),
                signer: (i < signers).then(|| format!("0xs{i}")),
            })
            .collect()
    }

    fn verdict(clean: bool) -> ShutdownVerdict {
        ShutdownVerdict {
            clean,
            reason: if clean { "state saved" } else { "killed" }.into(),
            head_before: Some(5),
            persisted: None,
            exit_code: if clean { Some(0) } else { None },
            killed: !clean,
            duration_ms: 10,
            at: 1,
        }
    }

    fn all_up(m: &[Member], at: u64) -> Fleet {
        Fleet {
            nodes: m
                .iter()
                .map(|m| {
                    (
                        m.id.clone(),
                        Seen {
                            at_ms: at,
                            ready: true,
                            head: None,
                        },
                    )
                })
                .collect(),
            last_sealed_ms: HashMap::new(),
            online_ms: 15_000,
        }
    }

    #[test]
    fn orders_resolve_names_and_indexes_and_auto_puts_the_bootstrap_last() {
        let m = members(3, 1);
        let order = explicit_order(&m, &["2".into(), "node-3".into(), "1".into()]).unwrap();
        let names: Vec<_> = order.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["node-2", "node-3", "node-1"]);
        assert_eq!(
            explicit_order(&m, &["2".into(), "node-2".into()]),
            Err(PlanError::Duplicate("node-2".into()))
        );
        assert_eq!(
            explicit_order(&m, &["9".into()]),
            Err(PlanError::UnknownNode("9".into()))
        );
        assert_eq!(
            explicit_order(&m, &["0".into()]),
            Err(PlanError::UnknownNode("0".into()))
        );
        assert_eq!(explicit_order(&m, &[]), Err(PlanError::Empty));
        let auto: Vec<_> = auto_order(&m).into_iter().map(|m| m.name).collect();
        assert_eq!(auto, ["node-4", "node-2", "node-3", "node-1"]);
    }

    #[test]
    fn the_quorum_guard_counts_signers_already_down() {
        assert_eq!(
            (quorum(1), quorum(2), quorum(3), quorum(4), quorum(5)),
            (1, 2, 2, 3, 3)
        );
        let m = members(3, 1);
        assert!(quorum_guard(&m, 3, &m[0], |_| true).is_ok());
        assert!(
            quorum_guard(&m, 3, &m[3], |_| false).is_ok(),
            "non-signers never break it"
        );
        let err = quorum_guard(&m, 3, &m[0], |x| x.id != m[1].id).unwrap_err();
        assert!(
            err.contains("1 of 3") && err.contains("already down: node-2"),
            "{err}"
        );
        let two = members(2, 0);
        let err = quorum_guard(&two, 2, &two[0], |_| true).unwrap_err();
        assert!(err.contains("below the clique quorum 2"), "{err}");
        // A plan touching a signer is refused up front; one of only non-signers is not.
        let refused = Plan::new(
            1,
            &two,
            two.clone(),
            "explicit",
            Timeouts::default(),
            |_| true,
            0,
        );
        assert!(matches!(refused, Err(PlanError::Quorum(_))));
        let m5 = members(5, 0);
        assert!(quorum_guard(&m5, 5, &m5[0], |x| x.id != m5[1].id).is_ok());
        assert!(quorum_guard(&m5, 5, &m5[0], |x| x.id != m5[1].id && x.id != m5[2].id).is_err());
    }

    #[test]
    fn a_step_goes_through_every_phase_and_the_plan_completes() {
        let m = members(3, 1);
        let order = explicit_order(&m, &["4".into(), "2".into()]).unwrap();
        let mut plan = Plan::new(
            7,
            &m,
            order,
            "explicit",
            Timeouts::default(),
            |_| true,
            1000,
        )
        .unwrap();
        let mut fleet = all_up(&m, 1000);
        assert!(plan.advance(&m, &fleet, 1000));
        let cmd = plan.command_for(&m[3].id).expect("a command for node-4");
        assert_eq!(
            (cmd.id.as_str(), cmd.command),
            ("restart-7-1-1", Command::Restart)
        );
        assert_eq!(cmd.expires_ms, 1000 + 240_000);
        assert!(
            plan.command_for(&m[1].id).is_none(),
            "only the current node"
        );
        // Another command id or another node's outcome changes nothing.
        let ok = Outcome::Restarting {
            verdict: Some(verdict(true)),
        };
        assert!(!plan.on_outcome(&m[3].id, "restart-7-1-9", &ok, None, 2000));
        assert!(!plan.on_outcome(&m[1].id, &cmd.id, &ok, None, 2000));
        assert!(plan.on_outcome(&m[3].id, &cmd.id, &ok, Some(10), 2000));
        assert!(
            plan.command_for(&m[3].id).is_none(),
            "delivered until the outcome"
        );
        // Stats from before the outcome do not count as back, nor ready
        // stats without a block newer than the fleet's head at the stop.
        assert!(!plan.advance(&m, &fleet, 3000));
        for head in [None, Some(10)] {
            let seen = Seen {
                at_ms: 3000,
                ready: true,
                head,
            };
            fleet.nodes.insert(m[3].id.clone(), seen);
            assert!(!plan.advance(&m, &fleet, 3000), "{head:?}");
        }
        let seen = Seen {
            at_ms: 3000,
            ready: true,
            head: Some(11),
        };
        fleet.nodes.insert(m[3].id.clone(), seen);
        assert!(plan.advance(&m, &fleet, 3000));
        // Non-signer done: node-2 is next and sent at once (all up).
        assert_eq!(plan.current, 1);
        for n in &m {
            fleet.nodes.insert(
                n.id.clone(),
                Seen {
                    at_ms: 3000,
                    ready: true,
                    head: None,
                },
            );
        }
        plan.advance(&m, &fleet, 3000);
        let cmd = plan.command_for(&m[1].id).unwrap();
        assert!(plan.on_outcome(&m[1].id, &cmd.id, &ok, None, 4000));
        fleet.nodes.insert(
            m[1].id.clone(),
            Seen {
                at_ms: 5000,
                ready: true,
                head: None,
            },
        );
        plan.advance(&m, &fleet, 5000);
        assert_eq!(
            plan.steps[1].phase,
            Phase::Sealing,
            "a signer must seal again"
        );
        fleet.last_sealed_ms.insert("0xs1".into(), 3500);
        assert!(
            !plan.advance(&m, &fleet, 6000),
            "a block from before its stop does not count"
        );
        fleet.last_sealed_ms.insert("0xs1".into(), 6000);
        plan.advance(&m, &fleet, 6000);
        assert_eq!(plan.state, PlanState::Done);
        assert!(plan.history.last().unwrap().text.contains("done"));
    }

    #[test]
    fn failures_stop_the_run_and_resume_retries_the_failed_step_with_a_new_id() {
        let m = members(3, 0);
        let order = explicit_order(&m, &["2".into(), "3".into(), "1".into()]).unwrap();
        let mut plan =
            Plan::new(1, &m, order, "explicit", Timeouts::default(), |_| true, 0).unwrap();
        let fleet = all_up(&m, 0);
        plan.advance(&m, &fleet, 0);
        let cmd = plan.command_for(&m[1].id).unwrap();
        // A kill while it stops: the unclean verdict is the reason.
        let bad = Outcome::Restarting {
            verdict: Some(verdict(false)),
        };
        assert!(plan.on_outcome(&m[1].id, &cmd.id, &bad, None, 10));
        assert_eq!(plan.state, PlanState::Failed);
        assert_eq!(
            plan.reason.as_deref(),
            Some("node-2: unclean shutdown: killed")
        );
        assert!(plan.command_for(&m[1].id).is_none() && plan.command_for(&m[2].id).is_none());
        assert!(!plan.advance(&m, &fleet, 20), "nothing after it runs");
        assert_eq!(plan.steps[1].phase, Phase::Pending);
        assert!(plan.resume(30));
        plan.advance(&m, &all_up(&m, 30), 30);
        let again = plan.command_for(&m[1].id).unwrap();
        assert_eq!(again.id, "restart-1-1-2");
        // A crash after a clean stop, while returning, stops the run too.
        let ok = Outcome::Restarting {
            verdict: Some(verdict(true)),
        };
        plan.on_outcome(&m[1].id, &again.id, &ok, None, 40);
        assert!(!plan.on_shutdown(&m[1].id, &verdict(true), 41, 41));
        assert!(
            !plan.on_shutdown(&m[2].id, &verdict(false), 41, 41),
            "another node"
        );
        assert!(plan.on_shutdown(&m[1].id, &verdict(false), 41, 41));
        assert_eq!(plan.state, PlanState::Failed);
        // Timeouts: no outcome, no return.
        plan.resume(100);
        plan.advance(&m, &all_up(&m, 100), 100);
        assert!(plan.advance(&m, &all_up(&m, 100), 100 + 240_000));
        assert!(plan
            .reason
            .as_deref()
            .unwrap()
            .contains("no shutdown outcome within 240 s"));
        // Refused by the agent (attach mode stop, …): a failure with its reason.
        plan.resume(300_000);
        plan.advance(&m, &all_up(&m, 300_000), 300_000);
        let id = plan.command_for(&m[1].id).unwrap().id;
        plan.on_outcome(
            &m[1].id,
            &id,
            &Outcome::Refused {
                reason: "nope".into(),
            },
            None,
            300_001,
        );
        assert_eq!(
            plan.reason.as_deref(),
            Some("node-2: restart not done: nope")
        );
        // Abort only a running plan.
        assert!(!plan.abort(300_002));
        plan.resume(300_003);
        assert!(plan.abort(300_004));
        assert_eq!(plan.state, PlanState::Aborted);
    }

    #[test]
    fn a_step_waits_for_ready_nodes_and_rechecks_the_quorum() {
        let m = members(3, 1);
        let order = explicit_order(&m, &["1".into()]).unwrap();
        let mut plan =
            Plan::new(1, &m, order, "explicit", Timeouts::default(), |_| true, 0).unwrap();
        let mut fleet = all_up(&m, 0);
        fleet.nodes.get_mut(&m[3].id).unwrap().ready = false;
        plan.advance(&m, &fleet, 0);
        assert_eq!(plan.steps[0].phase, Phase::Checking, "waits for node-4");
        assert!(plan.command_for(&m[0].id).is_none());
        let mut fleet = all_up(&m, 180_000);
        fleet.nodes.get_mut(&m[3].id).unwrap().ready = false;
        plan.advance(&m, &fleet, 180_000);
        assert!(plan
            .reason
            .as_deref()
            .unwrap()
            .contains("not every node ready within 180 s: node-4"));
        // A signer went down since the plan was made: refused, nothing sent.
        plan.resume(200_000);
        let mut fleet = all_up(&m, 200_000);
        fleet.nodes.remove(&m[2].id);
        plan.advance(&m, &fleet, 200_000);
        assert_eq!(plan.steps[0].phase, Phase::Checking);
        plan.advance(&m, &fleet, 200_000 + 180_000);
        assert!(
            plan.reason
                .as_deref()
                .unwrap()
                .contains("below the clique quorum"),
            "{:?}",
            plan.reason
        );
        assert!(plan.steps[0].command_id.is_none());
    }
}
