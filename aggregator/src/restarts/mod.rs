//! Rolling restarts driven by the aggregator: one plan runs at a time, its
//! current step's command rides on the signed replies to the target node's
//! reports, and the step advances from what the agents report (the command's
//! outcome event with the shutdown verdict, stats with readiness, blocks
//! sealed). Whether a node is up comes from the live view, the same one the
//! dashboard shows (`Live::on_shutdown` marks a stopped node not ready until
//! newer stats): an operator never sees a node ready that a plan counts as
//! down. Every change is written to the store before the reply that
//! acknowledges the event that caused it, so a run survives an aggregator
//! restart. Operator endpoints (`api`) need the admin token.

pub mod api;
pub mod cli;
pub mod plan;

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use geth_wire::control::AgentCommand;
use geth_wire::{Event, EventKind};

use crate::live::{Live, OFFLINE_AFTER_MS};
use crate::store::{Store, StoreError};
pub use plan::{Fleet, Member, Phase, Plan, PlanError, PlanState, Seen, Timeouts};

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
                    online_ms: OFFLINE_AFTER_MS,
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
                    online_ms: OFFLINE_AFTER_MS,
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
        live: &Live,
        order: Option<&[String]>,
        timeouts: Timeouts,
        now_ms: u64,
    ) -> Result<Plan, RestartError> {
        let mut inner = self.lock();
        inner.fleet.nodes = seen_nodes(live);
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

    /// Stored events of node `id`: command outcomes and shutdowns (already
    /// applied to `live`). The plan is stored before this returns (before the
    /// agent gets its acknowledgement).
    pub fn on_events(&self, live: &Live, id: &str, events: &[Event], now_ms: u64) {
        let mut inner = self.lock();
        if inner.plan.is_none() {
            return;
        }
        inner.fleet.nodes = seen_nodes(live);
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
    pub fn tick(&self, live: &Live, now_ms: u64) {
        let mut inner = self.lock();
        let Inner { plan, fleet } = &mut *inner;
        let Some(plan) = plan.as_mut().filter(|p| p.state == PlanState::Running) else {
            return;
        };
        fleet.nodes = seen_nodes(live);
        if plan.advance(&self.members, fleet, now_ms) {
            let plan = plan.clone();
            drop(inner);
            self.save(&plan);
        }
    }
}

/// What a plan needs of each node, from the live view.
fn seen_nodes(live: &Live) -> HashMap<String, Seen> {
    live.nodes()
        .map(|n| {
            let seen = Seen {
                at_ms: n.last_seen_ms,
                ready: n.ready == Some(true),
                head: n.head.as_ref().map(|h| h.number),
            };
            (n.id.clone(), seen)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use geth_wire::{ShutdownVerdict, StatsReport};

    fn verdict(at: u64) -> ShutdownVerdict {
        ShutdownVerdict {
            clean: true,
            reason: "state saved".into(),
            head_before: Some(9),
            persisted: None,
            exit_code: Some(0),
            killed: false,
            duration_ms: 10,
            at,
        }
    }

    fn stats(ready: bool, last_shutdown: Option<ShutdownVerdict>) -> StatsReport {
        StatsReport {
            name: "a".into(),
            ready,
            last_shutdown,
            ..StatsReport::default()
        }
    }

    fn shutdown(live: &mut Live, at: u64) {
        live.on_shutdown("0xa", &verdict(at));
    }

    /// A plan counts a node up exactly when the dashboard shows it online and
    /// ready, through a stop, fresh stats, a late event and silence.
    #[tokio::test]
    async fn a_plan_and_the_dashboard_agree_on_which_nodes_are_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), 10).unwrap();
        let restarts = Restarts::load(Vec::new(), store).unwrap();
        let mut live = Live::unconfigured();
        let agree = |live: &mut Live, now: u64, expect: bool, what: &str| {
            live.tick(now);
            let shown = live
                .nodes()
                .any(|n| n.id == "0xa" && n.online && n.ready == Some(true));
            let mut inner = restarts.lock();
            inner.fleet.nodes = seen_nodes(live);
            let counted = inner.fleet.up("0xa", now);
            assert_eq!((shown, counted), (expect, expect), "{what}");
        };
        live.on_stats("0xa", &stats(true, None), 1000, None);
        agree(&mut live, 1000, true, "ready stats");
        shutdown(&mut live, 2);
        agree(&mut live, 2500, false, "a reported stop");
        // Stats sent after the restart, which know the stop.
        live.on_stats("0xa", &stats(true, Some(verdict(2))), 4000, None);
        agree(&mut live, 4000, true, "fresh stats");
        // The same stop delivered late by the spool changes nothing.
        shutdown(&mut live, 2);
        agree(&mut live, 4100, true, "a late event of a known stop");
        // A newer stop than the stats know of marks it down.
        shutdown(&mut live, 5);
        agree(&mut live, 5100, false, "a newer stop");
        live.on_stats("0xa", &stats(true, Some(verdict(5))), 6000, None);
        agree(&mut live, 6000, true, "back");
        // Silence: offline on the page, down for a plan, at the same moment.
        agree(&mut live, 6000 + OFFLINE_AFTER_MS - 1, true, "just in time");
        agree(&mut live, 6000 + OFFLINE_AFTER_MS, false, "silent");
    }
}
