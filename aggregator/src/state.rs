//! The aggregator's shared state, independent of HTTP: who may report, the
//! live view, the store, the aggregator's own key, replay and refusal
//! bookkeeping. The routes (`routes`) and handlers only translate to HTTP.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use crate::auth::{ReplayGuard, Sessions, Verifier};
use crate::fleet::FleetMetrics;
use crate::gate::LoginGate;
use crate::identity::Identity;
use crate::live::Live;
use crate::refusals::{Refusal, RefusalLog};
use crate::registry::Registry;
use crate::restarts::Restarts;
use crate::store::Store;

pub struct App {
    pub registry: Registry,
    pub live: Mutex<Live>,
    pub store: Store,
    /// geth `--ethstats name:secret@…` credentials, one per node name.
    pub ethstats_secrets: HashMap<String, String>,
    pub metrics: FleetMetrics,
    /// Signs every reply to an agent.
    pub identity: Identity,
    /// Each node's last accepted request time.
    pub replay: ReplayGuard,
    /// Session keys of the nodes that signed a request (MACs after that).
    pub sessions: Sessions,
    pub refusal_log: RefusalLog,
    /// Unauthenticated ethstats connections.
    pub logins: LoginGate,
    /// Operator endpoints need this token (none: they are refused).
    pub admin_token: Option<String>,
    /// Rolling restart plans.
    pub restarts: Restarts,
    /// Calls through the JSON-RPC gateway (exported at `/metrics`).
    pub gateway: crate::gateway::metrics::GatewayMetrics,
    /// The chain's wallet parameters when the gateway runs (`/api/wallet`).
    pub wallet: Option<serde_json::Value>,
    /// The Solidity page's assets, development accounts and pass-through.
    pub solidity: crate::solidity::Solidity,
    /// Genesis and chain facts for the join bundle (`/api/bundle`).
    pub chain: Option<crate::bundle::ChainInfo>,
    /// Signer changes by clique vote.
    pub signer_plans: crate::signers::Signers,
    /// Where `/bridge/` is forwarded (`--bridge-url`); none: 404.
    pub bridge: Option<std::sync::Arc<crate::bridge_proxy::BridgeProxy>>,
}

impl App {
    pub fn new(
        registry: Registry,
        live: Live,
        store: Store,
        ethstats_secrets: HashMap<String, String>,
        identity: Identity,
    ) -> Self {
        // `build` loads the stored plans with the network's nodes.
        let restarts = Restarts::empty(store.clone());
        Self {
            registry,
            live: Mutex::new(live),
            store,
            ethstats_secrets,
            metrics: FleetMetrics::default(),
            identity,
            replay: ReplayGuard::default(),
            sessions: Sessions::default(),
            refusal_log: RefusalLog::default(),
            logins: LoginGate::default(),
            admin_token: None,
            restarts,
            gateway: Default::default(),
            wallet: None,
            solidity: Default::default(),
            chain: None,
            signer_plans: Default::default(),
            bridge: None,
        }
    }

    /// Checks agents' requests (see `auth`).
    pub fn verifier(&self) -> Verifier<'_> {
        Verifier {
            registry: &self.registry,
            sessions: &self.sessions,
            identity: &self.identity,
        }
    }

    pub fn live(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a refusal by reason and warns about it (rate-limited per node
    /// and reason).
    pub fn note_refusal(&self, node: &str, refusal: &Refusal) {
        let reason = refusal.reason.label();
        self.metrics.rejected(reason);
        if refusal.reason == crate::refusals::Reason::NoSession {
            // Every agent once after a restart; the agent signs again at once.
            tracing::debug!(node, reason, "refused: {}", refusal.message);
        } else if self.refusal_log.due(node, refusal.reason, Instant::now()) {
            tracing::warn!(node, reason, "refused: {}", refusal.message);
        }
    }
}

pub use geth_wire::now_ms;
