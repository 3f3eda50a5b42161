//! The node's status as the agent sees it: one value, published on a `watch`
//! channel by the supervisor and the chain monitor, read by the HTTP endpoints,
//! the admin socket and (later) reports and metrics.

use serde::{Deserialize, Serialize};

use crate::crash::StartEvidence;
use crate::shutdown::Verdict;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// geth is the agent's child.
    Spawn,
    /// geth runs beside the agent (a pod's other container).
    Attach,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Initialising the datadir / checking the genesis.
    Initialising,
    /// geth is being started (spawn) or looked for (attach).
    Starting,
    Running,
    Stopping,
    /// Stopped on request (admin `stop`); `start` starts it again.
    Stopped,
    /// Waiting before restarting a crashed geth (spawn) or for the platform
    /// to start a new one (attach).
    Restarting,
    /// geth must not run: see `blocked`.
    Blocked,
}

/// Latest view of the chain through geth's IPC.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainView {
    pub head: Option<u64>,
    pub head_hash: Option<String>,
    /// Head block timestamp, seconds since the Unix epoch.
    pub head_time: Option<u64>,
    pub peers: Option<u64>,
    /// When geth last went from no peers to some (Unix ms); `None` while it
    /// has none. A head sealed after it shows geth caught up with them.
    #[serde(default)]
    pub peered_at_ms: Option<u64>,
    pub syncing: Option<bool>,
    /// Best block geth knows of from its peers (while syncing).
    pub highest_block: Option<u64>,
    /// When geth last answered, seconds since the Unix epoch (milliseconds precision).
    pub answered_at_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub mode: Mode,
    pub phase: Phase,
    /// Why geth is not started (genesis mismatch, unsupported geth, …).
    pub blocked: Option<String>,
    /// What the agent waits for before geth can run (attach mode: an
    /// uninitialised datadir, no geth process yet).
    #[serde(default)]
    pub waiting: Option<String>,
    pub pid: Option<u32>,
    /// Clique block period from the genesis (seconds).
    pub period: u64,
    pub chain: ChainView,
    pub last_shutdown: Option<Verdict>,
    pub last_start: Option<StartEvidence>,
    pub starts: u64,
    pub restarts: u64,
    pub clean_shutdowns: u64,
    pub unclean_shutdowns: u64,
    pub blocks_lost_total: u64,
    pub genesis_mismatch: bool,
    /// This node's signer account, if configured as one.
    pub signer: Option<alloy::primitives::Address>,
    /// Whether that account is in the current signer set.
    pub is_signer: Option<bool>,
    /// The current clique signer set (`clique_getSigners`), once read.
    pub signers: Option<Vec<alloy::primitives::Address>>,
    pub mining: Option<bool>,
    pub pending: Option<u64>,
    pub queued: Option<u64>,
    /// `web3_clientVersion`.
    pub client: Option<String>,
    /// `admin_nodeInfo.enode`.
    pub enode: Option<String>,
    /// Best head known to the aggregator (the sync gate's reference).
    pub reference_head: Option<u64>,
    /// Gas price floor (wei) applied to the running geth with
    /// `miner_setGasPrice`; `None` until applied after each start.
    #[serde(default)]
    pub gas_price_floor_wei: Option<u64>,
    /// What geth advises wallets (`eth_gasPrice`, wei).
    #[serde(default)]
    pub suggested_gas_price_wei: Option<u64>,
    /// Failed `miner_setGasPrice` calls since the agent started.
    #[serde(default)]
    pub gas_price_set_failures: u64,
    /// Times the peers were re-dialled because the chain stood still with
    /// peers connected (`unwedge`).
    #[serde(default)]
    pub stall_redials: u64,
    /// The fleet's reference block from the aggregator's last verified reply.
    pub reference: Option<geth_wire::BlockRef>,
    /// This node's canonical block hash at `reference.number`, read from geth
    /// when that reply arrived (`None` while the node is below that height).
    pub hash_at_reference: Option<String>,
    /// The highest head an online signer reports, from the aggregator's last
    /// verified reply (the recovery order after an unclean stop).
    #[serde(default)]
    pub fleet_head: Option<u64>,
}

impl NodeStatus {
    pub fn new(name: String, mode: Mode, period: u64) -> Self {
        Self {
            name,
            mode,
            phase: Phase::Initialising,
            blocked: None,
            waiting: None,
            pid: None,
            period,
            chain: ChainView::default(),
            last_shutdown: None,
            last_start: None,
            starts: 0,
            restarts: 0,
            clean_shutdowns: 0,
            unclean_shutdowns: 0,
            blocks_lost_total: 0,
            genesis_mismatch: false,
            signer: None,
            is_signer: None,
            signers: None,
            mining: None,
            pending: None,
            queued: None,
            client: None,
            enode: None,
            reference_head: None,
            gas_price_floor_wei: None,
            suggested_gas_price_wei: None,
            gas_price_set_failures: 0,
            stall_redials: 0,
            reference: None,
            hash_at_reference: None,
            fleet_head: None,
        }
    }
}

pub use geth_wire::now_ms;
