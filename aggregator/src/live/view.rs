//! What the dashboard shows: plain serialisable views of nodes, blocks,
//! signers and alarms.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use geth_wire::ShutdownVerdict;
use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Head {
    pub number: u64,
    pub hash: String,
    pub timestamp: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeView {
    pub id: String,
    pub name: String,
    pub client: Option<String>,
    /// `agent` or `ethstats`.
    pub source: &'static str,
    pub online: bool,
    pub latency_ms: Option<u64>,
    pub is_signer: Option<bool>,
    pub signer: Option<String>,
    pub mining: Option<bool>,
    pub peers: Option<u64>,
    pub pending: Option<u64>,
    pub head: Option<Head>,
    pub block_time: Option<f64>,
    pub propagation_ms: Option<u64>,
    pub uptime_s: Option<u64>,
    pub ready: Option<bool>,
    pub not_ready: Vec<String>,
    pub last_shutdown: Option<ShutdownVerdict>,
    pub blocks_lost: Option<u64>,
    /// Wei, as the node reports it; `unknown` when it does not.
    pub gas_price: Option<String>,
    /// Only an enode whose key is the node's own (see `ingest`).
    #[serde(skip)]
    pub enode: Option<String>,
    #[serde(skip)]
    pub last_seen_ms: u64,
}

impl NodeView {
    pub fn new(id: String, name: String, source: &'static str) -> Self {
        Self {
            id,
            name,
            client: None,
            source,
            online: false,
            latency_ms: None,
            is_signer: None,
            signer: None,
            mining: None,
            peers: None,
            pending: None,
            head: None,
            block_time: None,
            propagation_ms: None,
            uptime_s: None,
            ready: None,
            not_ready: Vec::new(),
            last_shutdown: None,
            blocks_lost: None,
            gas_price: None,
            enode: None,
            last_seen_ms: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BlockView {
    pub number: u64,
    pub hash: String,
    pub parent_hash: String,
    pub signer: Option<String>,
    pub timestamp: u64,
    pub txs: u64,
    pub gas_used: u64,
    pub gas_limit: u64,
    pub block_time: Option<u64>,
    pub in_turn: bool,
    pub propagation_ms: Vec<u64>,
    #[serde(skip)]
    pub first_seen_ms: u64,
    /// node id → when it was first seen there (ids shared with `Live`).
    #[serde(skip)]
    pub seen: HashMap<Arc<str>, u64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SignerView {
    pub address: String,
    pub sealed: u64,
    pub missed_turns: u64,
    pub last_sealed: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Alarms {
    pub fork: Option<Fork>,
    pub stall: Option<Stall>,
    /// Confirmed blocks of the reference chain were replaced.
    pub history_rewritten: Option<HistoryRewrite>,
}

/// One height of the reference chain whose block was replaced after `depth`
/// blocks had been built on it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RewrittenBlock {
    pub height: u64,
    pub old_hash: String,
    pub new_hash: String,
    pub depth: u64,
}

/// The "history rewritten" alarm: raised by the first replaced confirmed
/// block, held for a while after the last one (see `Live::rewrite_alarm_ms`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HistoryRewrite {
    /// The most recent replaced heights (oldest first, bounded).
    pub blocks: Vec<RewrittenBlock>,
    /// Replaced confirmed blocks since the aggregator started.
    pub total: u64,
    /// When the last one was seen (aggregator clock, ms).
    pub last_at_ms: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Fork {
    pub height: u64,
    /// hash → node names holding it at that height
    pub hashes: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stall {
    pub seconds: u64,
    pub since: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NetworkInfo {
    pub name: String,
    pub chain_id: Option<u64>,
    pub period: u64,
}
