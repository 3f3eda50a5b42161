//! Growing and changing the network: nodes that joined after network.json was
//! written are trusted only once an operator admits their node key
//! (`admission`, the `geth-aggregator nodes` client in `cli`), and the signer
//! set changes by clique votes the aggregator drives through the agents
//! (`plan`, its endpoints in `api`, `geth-aggregator signers`).

pub mod admission;
pub mod api;
pub mod cli;
pub mod plan;

use std::sync::{Mutex, MutexGuard};

use geth_wire::control::AgentCommand;
use geth_wire::{Event, EventKind};

use crate::live::Live;
pub use plan::{Action, Phase, SignerError, SignerPlan, State, View};

/// The signer change plans: one runs at a time. Kept in memory: a plan cut
/// short by an aggregator restart is started again by the operator (a vote
/// already cast is harmless: proposing again is idempotent).
#[derive(Default)]
pub struct Signers {
    plan: Mutex<Option<SignerPlan>>,
}

/// The live view as a plan sees it.
pub fn view(live: &Live) -> View {
    View {
        set: live.signer_set().iter().map(|s| s.to_lowercase()).collect(),
        nodes: live
            .nodes
            .values()
            .map(|n| plan::NodeRef {
                id: n.id.to_lowercase(),
                name: n.name.clone(),
                signer: n.signer.as_ref().map(|s| s.to_lowercase()),
                online: n.online,
                enode: n.enode.clone(),
            })
            .collect(),
        head: live.best().map(|b| b.number),
        period: live.network.period,
    }
}

impl Signers {
    fn lock(&self) -> MutexGuard<'_, Option<SignerPlan>> {
        self.plan.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a change (refused while another runs or if it breaks the quorum).
    pub fn create(
        &self,
        live: &Live,
        action: Action,
        who: &str,
        now_ms: u64,
    ) -> Result<SignerPlan, SignerError> {
        let mut current = self.lock();
        if let Some(p) = current.as_ref().filter(|p| p.state == State::Running) {
            return Err(SignerError::Busy(p.id));
        }
        // Seconds since the epoch: command ids stay unique across restarts.
        let id = (now_ms / 1000).max(current.as_ref().map_or(0, |p| p.id + 1));
        let plan = SignerPlan::create(&view(live), action, who, id, now_ms)?;
        *current = Some(plan.clone());
        Ok(plan)
    }

    pub fn latest(&self) -> Option<SignerPlan> {
        self.lock().clone()
    }

    pub fn tick(&self, live: &Live, now_ms: u64) {
        if let Some(plan) = self.lock().as_mut() {
            plan.tick(&view(live), now_ms);
        }
    }

    pub fn commands_for(&self, node: &str, now_ms: u64) -> Vec<AgentCommand> {
        self.lock()
            .as_ref()
            .map(|p| p.commands_for(node, now_ms))
            .unwrap_or_default()
    }

    /// Takes the command outcomes among a node's reported events.
    pub fn on_events(&self, events: &[Event], now_ms: u64) {
        let mut plan = self.lock();
        let Some(plan) = plan.as_mut() else {
            return;
        };
        for event in events {
            if let EventKind::Command { id, outcome, .. } = &event.kind {
                plan.on_outcome(id, outcome.ok(), &outcome.to_string(), now_ms);
            }
        }
    }
}
