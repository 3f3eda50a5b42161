//! Rolling restarts driven by the aggregator: one plan runs at a time, its
//! current step's command rides on the signed replies to the target node's
//! reports, and the step advances from what the agents report (the command's
//! outcome event with the shutdown verdict, stats with readiness, blocks
//! sealed). Every change is written to the store before the reply that
//! acknowledges the event that caused it, so a run survives an aggregator
//! restart. Operator endpoints (`api`) need the admin token.

pub mod api;
pub mod cli;
pub mod plan;

use std::sync::{Mutex, MutexGuard};

use geth_wire::control::AgentCommand;
use geth_wire::{Event, EventKind, StatsReport};

use crate::store::{Store, StoreError};
pub use plan::{Fleet, Member, Phase, Plan, PlanError, PlanState, Seen, Timeouts};

/// Nodes whose last stats are older than this are down.
const ONLINE_MS: u64 = 15_000;

#[derive(Debug, thiserror::Error)]
pub enum RestartError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("plan {0} is still running; abort it first")]
    Busy(u64),
    #[error("no restart plan yet")]
    NoPlan,
    #[error("plan {id} is {state:?}: cannot {action}")]
    State {
        id: u64,
        state: PlanState,
        action: &'static str,
    },
    #[error("cannot store the plan: {0}")]
    Store(#[from] StoreError),
}

struct Inner {
    plan: Option<Plan>,
    fleet: Fleet,
}

pub struct Restarts {
    members: Vec<Member>,
    store: Store,
    inner: Mutex<Inner>,
}

impl Restarts {
    /// Loads the newest plan from the store (a running one continues).
    pub fn load(members: Vec<Member>, store: Store) -> Result<Self, StoreError> {
        let plan = store
            .latest_restart_plan()?
            .and_then(|body| serde_json::from_str::<Plan>(&body).ok());
        if let Some(plan) = plan.as_ref().filter(|p| p.state == PlanState::Running) {
            tracing::info!(
                plan = plan.id,
                step = plan.current + 1,
                "continuing a restart plan"
            );
        }
        Ok(Self {
            members,
            store,
            inner: Mutex::new(Inner {
                plan,
                fleet: Fleet {
                    online_ms: ONLINE_MS,
                    ..Fleet::default()
                },
            }),
        })
    }

    /// No members, no plan (a store that could not be read).
    pub fn empty(store: Store) -> Self {
        Self {
            members: Vec::new(),
            store,
            inner: Mutex::new(Inner {
                plan: None,
                fleet: Fleet {
                    online_ms: ONLINE_MS,
                    ..Fleet::default()
                },
            }),
        }
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn save(&self, plan: &Plan) {
        let body = serde_json::to_string(plan).unwrap_or_default();
        if let Err(e) = self.store.save_restart_plan(plan.id, &body) {
            tracing::error!(plan = plan.id, error = %e, "restart plan not stored");
        }
    }

    /// The newest plan.
    pub fn latest(&self) -> Option<Plan> {
        self.lock().plan.clone()
    }

    /// Creates and starts a plan (refused while another runs, or if it would
    /// break the clique quorum).
    pub fn create(
        &self,
        order: Option<&[String]>,
        timeouts: Timeouts,
        now_ms: u64,
    ) -> Result<Plan, RestartError> {
        let mut inner = self.lock();
        if let Some(p) = inner
            .plan
            .as_ref()
            .filter(|p| p.state == PlanState::Running)
        {
            return Err(RestartError::Busy(p.id));
        }
        let (nodes, kind) = match order {
            Some(order) => (plan::explicit_order(&self.members, order)?, "explicit"),
            None => (plan::auto_order(&self.members), "auto"),
        };
        let id = inner
            .plan
            .as_ref()
            .map_or(0, |p| p.id)
            .max(self.store.max_restart_plan_id()?)
            + 1;
        let fleet = &inner.fleet;
        let plan = Plan::new(
            id,
            &self.members,
            nodes,
            kind,
            timeouts,
            |m| fleet.up(&m.id, now_ms),
            now_ms,
        )?;
        self.store
            .save_restart_plan(plan.id, &serde_json::to_string(&plan).unwrap_or_default())?;
        inner.plan = Some(plan.clone());
        Ok(plan)
    }

    fn change(
        &self,
        action: &'static str,
        f: impl FnOnce(&mut Plan) -> bool,
    ) -> Result<Plan, RestartError> {
        let mut inner = self.lock();
        let plan = inner.plan.as_mut().ok_or(RestartError::NoPlan)?;
        if !f(plan) {
            return Err(RestartError::State {
                id: plan.id,
                state: plan.state,
                action,
            });
        }
        let plan = plan.clone();
        self.save(&plan);
        Ok(plan)
    }

    pub fn abort(&self, now_ms: u64) -> Result<Plan, RestartError> {
        self.change("abort", |p| p.abort(now_ms))
    }

    pub fn resume(&self, now_ms: u64) -> Result<Plan, RestartError> {
        self.change("resume", |p| p.resume(now_ms))
    }

    /// Commands for node `id`, to ride on the reply to its report.
    pub fn commands_for(&self, id: &str) -> Vec<AgentCommand> {
        self.lock()
            .plan
            .as_ref()
            .and_then(|p| p.command_for(id))
            .into_iter()
            .collect()
    }

    pub fn on_stats(&self, id: &str, stats: &StatsReport, now_ms: u64) {
        self.lock().fleet.nodes.insert(
            id.to_owned(),
            Seen {
                at_ms: now_ms,
                ready: stats.ready,
                head: stats.head,
                last_shutdown_at: stats.last_shutdown.as_ref().map(|v| v.at),
            },
        );
    }

    /// A block sealed by `signer` at `at_ms` (its timestamp: an old block
    /// re-reported by a syncing node does not count as sealed now).
    pub fn on_sealed(&self, signer: Option<&str>, at_ms: u64) {
        if let Some(signer) = signer {
            let mut inner = self.lock();
            let last = inner
                .fleet
                .last_sealed_ms
                .entry(signer.to_lowercase())
                .or_default();
            *last = (*last).max(at_ms);
        }
    }

    /// Stored events of node `id`: command outcomes and shutdowns. The plan is
    /// stored before this returns (before the agent gets its acknowledgement).
    pub fn on_events(&self, id: &str, events: &[Event], now_ms: u64) {
        let mut inner = self.lock();
        // A node that just stopped is down until stats sent after it say
        // otherwise. The spool may deliver the event after such stats (they
        // then already carry this shutdown as their last one): those stand.
        for event in events {
            if let (EventKind::Shutdown { verdict }, Some(seen)) =
                (&event.kind, inner.fleet.nodes.get_mut(id))
            {
                if seen.last_shutdown_at.is_none_or(|at| at < verdict.at) {
                    seen.ready = false;
                }
            }
        }
        let fleet_head = inner.fleet.head();
        let Some(plan) = inner.plan.as_mut() else {
            return;
        };
        let mut changed = false;
        for event in events {
            changed |= match &event.kind {
                EventKind::Command {
                    id: command,
                    outcome,
                    ..
                } => plan.on_outcome(id, command, outcome, fleet_head, now_ms),
                EventKind::Shutdown { verdict } => {
                    plan.on_shutdown(id, verdict, event.at_ms, now_ms)
                }
                _ => false,
            };
        }
        if changed {
            let plan = plan.clone();
            drop(inner);
            self.save(&plan);
        }
    }

    /// What the dashboard shows of the newest plan: where it is, since when,
    /// why it stopped (no history, no node addresses).
    pub fn progress(&self) -> serde_json::Value {
        let inner = self.lock();
        let Some(plan) = inner.plan.as_ref() else {
            return serde_json::Value::Null;
        };
        let steps: Vec<serde_json::Value> = plan
            .steps
            .iter()
            .map(|s| {
                serde_json::json!({
                    "node": s.node.name,
                    "phase": s.phase,
                    "since_ms": s.phase_since_ms,
                    "started_ms": s.started_ms,
                    "finished_ms": s.finished_ms,
                    "clean": s.verdict.as_ref().map(|v| v.clean),
                })
            })
            .collect();
        serde_json::json!({
            "id": plan.id,
            "state": plan.state,
            "current": plan.current,
            "reason": plan.reason,
            "created_ms": plan.created_ms,
            "updated_ms": plan.updated_ms,
            "steps": steps,
        })
    }

    /// Advances the running plan (every second).
    pub fn tick(&self, now_ms: u64) {
        let mut inner = self.lock();
        let Inner { plan, fleet } = &mut *inner;
        let Some(plan) = plan.as_mut() else {
            return;
        };
        if plan.advance(&self.members, fleet, now_ms) {
            let plan = plan.clone();
            drop(inner);
            self.save(&plan);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_node_that_reported_a_shutdown_is_down_until_its_next_stats() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), 10).unwrap();
        let restarts = Restarts::load(Vec::new(), store).unwrap();
        let ready = StatsReport {
            ready: true,
            ..StatsReport::default()
        };
        restarts.on_stats("0xa", &ready, 1000);
        assert!(restarts.lock().fleet.up("0xa", 1000));
        let verdict = geth_wire::ShutdownVerdict {
            clean: false,
            reason: "killed".into(),
            head_before: None,
            persisted: None,
            exit_code: None,
            killed: true,
            duration_ms: 0,
            at: 1,
        };
        let event = Event {
            spool: "s".into(),
            seq: 1,
            at_ms: 1100,
            kind: EventKind::Shutdown { verdict },
        };
        restarts.on_events("0xa", &[event], 1200);
        assert!(!restarts.lock().fleet.up("0xa", 1200), "stale ready stats");
        restarts.on_stats("0xa", &ready, 1300);
        assert!(restarts.lock().fleet.up("0xa", 1300));
    }

    #[tokio::test]
    async fn a_shutdown_event_delivered_after_stats_that_know_it_keeps_the_node_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), 10).unwrap();
        let restarts = Restarts::load(Vec::new(), store).unwrap();
        let verdict = geth_wire::ShutdownVerdict {
            clean: true,
            reason: "state saved".into(),
            head_before: Some(9),
            persisted: None,
            exit_code: Some(0),
            killed: false,
            duration_ms: 10,
            at: 50,
        };
        // geth restarted and its fresh stats (which know the stop) came first.
        let after_restart = StatsReport {
            ready: true,
            last_shutdown: Some(verdict.clone()),
            ..StatsReport::default()
        };
        restarts.on_stats("0xa", &after_restart, 60_000);
        let late = Event {
            spool: "s".into(),
            seq: 2,
            at_ms: 50_000,
            kind: EventKind::Shutdown {
                verdict: verdict.clone(),
            },
        };
        restarts.on_events("0xa", &[late], 61_000);
        assert!(restarts.lock().fleet.up("0xa", 61_000), "fresh stats stand");
        // A newer stop than the stats know of still marks it down.
        let newer = Event {
            spool: "s".into(),
            seq: 3,
            at_ms: 70_000,
            kind: EventKind::Shutdown {
                verdict: geth_wire::ShutdownVerdict { at: 70, ..verdict },
            },
        };
        restarts.on_events("0xa", &[newer], 71_000);
        assert!(!restarts.lock().fleet.up("0xa", 71_000));
    }
}
