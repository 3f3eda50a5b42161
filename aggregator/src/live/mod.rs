//! The live view of the network: nodes, recent blocks with their sightings,
//! the fleet's reference head, the signer set and per-signer sealing. Every
//! change is rendered once as a Server-Sent Event and broadcast as bytes, so
//! the dashboard's subscribers share one serialisation.
//!
//! The reference head is the highest block that a majority of the signer
//! nodes hold (a node holds the ancestors of its head). When no signer node
//! is known, a majority of the online nodes decides. One node's claim alone
//! never moves it. The dashboard's best block and block list follow it.
//!
//! The signer set starts as the network file's and follows clique itself: a
//! set reported (`clique_getSigners`) by a majority of the signer nodes is
//! adopted, so voted-out signers leave it. Block sealers never join it.

mod alarms;
pub mod fanout;
pub mod view;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use geth_wire::{BlockRef, BlockReport, ShutdownVerdict, StatsReport};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::refusals::Refusal;
use crate::validate::{self, ChainContext};
use fanout::FanOut;
pub use view::{
    Alarms, BlockView, Fork, Head, HistoryRewrite, NetworkInfo, NodeView, RewrittenBlock,
    SignerView, Stall,
};

/// Heights kept in memory (the store keeps more).
const KEPT_HEIGHTS: usize = 256;
/// Distinct blocks kept at one height (a hostile node cannot grow one height).
const MAX_BRANCHES: usize = 16;
/// Blocks sent to the dashboard.
const SHOWN_BLOCKS: usize = 100;
/// How far below the highest candidate the reference search goes.
const REFERENCE_DEPTH: u64 = 64;
/// Fleets with more voters than this recompute the reference head at most
/// every [`REFERENCE_EVERY_MS`] (it costs O(voters)); smaller ones at once.
const SMALL_FLEET: usize = 32;
const REFERENCE_EVERY_MS: u64 = 100;
/// A node is offline when it has not reported for this long.
pub const OFFLINE_AFTER_MS: u64 = 30_000;
/// Heights of the reference chain remembered for the history-rewritten alarm.
const HISTORY_HEIGHTS: usize = 4096;
/// Replaced blocks named in the alarm.
const REWRITES_SHOWN: usize = 64;
pub const DEFAULT_REWRITE_CONFIRMATIONS: u64 = 6;
pub const DEFAULT_REWRITE_ALARM_MS: u64 = 3_600_000;
/// Shown when no node reports its gas price.
pub const UNKNOWN: &str = "unknown";

/// A node of the network file that seals blocks: it votes on the reference
/// head and on the signer set while its account is in the set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerNode {
    /// The node's report id (its node-key address, `0x…`).
    pub id: String,
    pub name: String,
    /// Its clique account, lower-case `0x…`.
    pub signer: String,
}

pub struct Live {
    pub network: NetworkInfo,
    pub nodes: BTreeMap<String, NodeView>,
    /// height → hash → block
    blocks: BTreeMap<u64, BTreeMap<Arc<str>, BlockView>>,
    /// node → height → hash it reported as canonical. Every node holds
    /// [`KEPT_HEIGHTS`] of these: hashes are shared with `blocks` and node
    /// ids with the blocks' sightings, not copied (a third of the memory at
    /// 2,000 nodes).
    canonical: HashMap<Arc<str>, BTreeMap<u64, Arc<str>>>,
    /// Sorted signer addresses (network file, then clique by majority).
    signer_set: Vec<String>,
    signer_nodes: Vec<SignerNode>,
    /// Signer sets as each node last reported them (sorted).
    reported_signers: HashMap<String, Vec<String>>,
    reference: Option<(u64, String)>,
    /// A head changed since the reference was computed (at `reference_at_ms`).
    reference_dirty: bool,
    /// [`Live::highest_signer_head`], kept with the reference.
    fleet_head: Option<u64>,
    reference_at_ms: u64,
    /// height → hash of the block shown there (the reference chain).
    shown: BTreeMap<u64, String>,
    /// Lowest height of `shown` reached from the reference by parent links
    /// alone (below it the most-seen block is shown: a guess, not history).
    shown_linked_from: u64,
    pub alarms: Alarms,
    /// Since when the fork condition holds (debounce).
    fork_since_ms: Option<u64>,
    pub stall_periods: u64,
    /// height → hash the reference chain has there, and the highest
    /// reference head that block was part of.
    history: BTreeMap<u64, (String, u64)>,
    /// A block replaced at this depth or deeper is rewritten history.
    pub rewrite_confirmations: u64,
    /// How long the alarm stays raised after the last rewritten block.
    pub rewrite_alarm_ms: u64,
    rewrites: Vec<RewrittenBlock>,
    rewrites_total: u64,
    rewrite_news: bool,
    rewrite_at_ms: Option<u64>,
    /// Pre-rendered SSE events (`event: …\ndata: …\n\n`) to the viewers.
    fanout: FanOut,
    /// The newest rolling restart plan, as the dashboard shows it.
    restart: Value,
}

/// The node `id`, added if new. Looked up by `&str` first: a known node
/// (every report but the first) costs no key allocation.
fn node_entry<'a>(
    nodes: &'a mut BTreeMap<String, NodeView>,
    id: &str,
    name: &str,
    source: &'static str,
) -> &'a mut NodeView {
    if !nodes.contains_key(id) {
        let node = NodeView::new(id.to_owned(), name.to_owned(), source);
        nodes.insert(id.to_owned(), node);
    }
    nodes.get_mut(id).expect("inserted above")
}

fn normalise(set: &[String]) -> Vec<String> {
    let mut set: Vec<String> = set.iter().map(|s| s.to_lowercase()).collect();
    set.sort();
    set.dedup();
    set
}

/// One SSE event, rendered into one buffer.
pub fn sse_event(event: &str, data: &impl Serialize) -> Bytes {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    let start = out.len();
    if serde_json::to_writer(&mut out, data).is_err() {
        out.truncate(start);
        out.extend_from_slice(b"null");
    }
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

impl Live {
    /// A network named "t" with a 1 s period and no configured signers (tests).
    #[cfg(test)]
    pub fn unconfigured() -> Self {
        Self::new(
            NetworkInfo {
                name: "t".into(),
                chain_id: None,
                period: 1,
            },
            &[],
            Vec::new(),
            10,
        )
    }

    pub fn new(
        network: NetworkInfo,
        signer_set: &[String],
        signer_nodes: Vec<SignerNode>,
        stall_periods: u64,
    ) -> Self {
        Self {
            network,
            nodes: BTreeMap::new(),
            blocks: BTreeMap::new(),
            canonical: HashMap::new(),
            signer_set: normalise(signer_set),
            signer_nodes: signer_nodes
                .into_iter()
                .map(|n| SignerNode {
                    signer: n.signer.to_lowercase(),
                    ..n
                })
                .collect(),
            reported_signers: HashMap::new(),
            reference: None,
            reference_dirty: false,
            fleet_head: None,
            reference_at_ms: 0,
            shown: BTreeMap::new(),
            shown_linked_from: u64::MAX,
            alarms: Alarms::default(),
            fork_since_ms: None,
            stall_periods,
            history: BTreeMap::new(),
            rewrite_confirmations: DEFAULT_REWRITE_CONFIRMATIONS,
            rewrite_alarm_ms: DEFAULT_REWRITE_ALARM_MS,
            rewrites: Vec::new(),
            rewrites_total: 0,
            rewrite_news: false,
            rewrite_at_ms: None,
            fanout: FanOut::default(),
            restart: Value::Null,
        }
    }

    /// The full state as an SSE event, and the stream of later changes.
    pub fn subscribe(&mut self) -> (Bytes, broadcast::Receiver<Bytes>) {
        let updates = self.fanout.subscribe();
        (sse_event("state", &self.snapshot()), updates)
    }

    /// A fresh `state` event for a receiver that fell behind, emptied
    /// under the same lock, so it receives only newer changes after it.
    pub fn resync(&mut self, receiver: &mut broadcast::Receiver<Bytes>) -> Bytes {
        self.fanout.resync(receiver);
        sse_event("state", &self.snapshot())
    }

    /// Holds a change that follows the last one sent within `window`, to
    /// send them together (see `fanout`).
    pub fn set_stream_window(&mut self, window: std::time::Duration) {
        self.fanout.set_window(window);
    }

    /// Sends the held changes if they have waited long enough; returns the
    /// deadline still ahead, if any.
    pub fn flush_stream_due(&mut self, now: std::time::Instant) -> Option<std::time::Instant> {
        self.fanout.flush_due(now)
    }

    /// Notified when the held changes' deadline appears or goes.
    pub fn stream_deadline_changed(&self) -> Arc<tokio::sync::Notify> {
        self.fanout.deadline_changed()
    }

    /// Ends the viewers' streams (the server stops).
    pub fn close_stream(&mut self) {
        self.fanout.close();
    }

    fn publish_best(&mut self) {
        self.fanout.publish(
            "best",
            &json!({ "best": self.best_json(), "avg_block_time": self.avg_block_time() }),
        );
    }

    pub fn signer_set(&self) -> &[String] {
        &self.signer_set
    }

    pub fn node_mut(&mut self, id: &str, name: &str, source: &'static str) -> &mut NodeView {
        node_entry(&mut self.nodes, id, name, source)
    }

    /// Changes one node with `f`, marks it seen and publishes it.
    pub fn update_node(
        &mut self,
        id: &str,
        name: &str,
        source: &'static str,
        now_ms: u64,
        f: impl FnOnce(&mut NodeView),
    ) {
        let node = node_entry(&mut self.nodes, id, name, source);
        f(node);
        node.last_seen_ms = now_ms;
        node.online = true;
        self.fanout.publish("node", &*node);
    }

    /// Validates a block report from `node_id` against what is known (see
    /// `validate`). A refused block must not be passed to [`Live::on_block`].
    pub fn check_block(&self, node_id: &str, b: &BlockReport, now_ms: u64) -> Result<(), Refusal> {
        let parent_height = b.number.checked_sub(1);
        let own_parent = parent_height
            .and_then(|h| self.canonical.get(node_id)?.get(&h))
            .map(|h| &**h);
        let parent_known = parent_height
            .and_then(|h| self.blocks.get(&h))
            .is_some_and(|at| {
                let parent = &b.parent_hash;
                if parent.bytes().any(|c| c.is_ascii_uppercase()) {
                    at.contains_key(parent.to_lowercase().as_str())
                } else {
                    at.contains_key(parent.as_str())
                }
            });
        let reference = self.best().map(|r| (r.number, r.timestamp));
        let chain = ChainContext {
            period: self.network.period,
            reference,
            own_parent,
            parent_known,
        };
        validate::check_block(b, &chain, now_ms)
    }

    /// A node reported a new head (already validated with `check_block`).
    /// Returns whether it is a new sighting that was kept (a height holds at
    /// most [`MAX_BRANCHES`] blocks): only those are worth storing.
    pub fn on_block(
        &mut self,
        node_id: &str,
        name: &str,
        source: &'static str,
        b: &BlockReport,
        now_ms: u64,
    ) -> bool {
        // The genesis timestamp is arbitrary (often 0): no block time after it.
        let parent_time = self
            .blocks
            .get(&b.number.wrapping_sub(1))
            .filter(|_| b.number > 1)
            .and_then(|at| at.get(b.parent_hash.as_str()))
            .map(|p| p.timestamp);
        let in_turn = b.difficulty == 2;
        let seen_at = b.seen_at_ms.min(now_ms);
        let node_key = match self.canonical.get_key_value(node_id) {
            Some((key, _)) => key.clone(),
            None => Arc::from(node_id),
        };
        let entry = self.blocks.entry(b.number).or_default();
        let mut block_time = parent_time.map(|t| b.timestamp.saturating_sub(t));
        let mut propagation = 0;
        let mut sighted = false;
        let kept = match entry.get_key_value(b.hash.as_str()) {
            Some((hash, _)) => Some(hash.clone()),
            None => (entry.len() < MAX_BRANCHES).then(|| Arc::from(b.hash.as_str())),
        };
        if let Some(hash) = &kept {
            let view = entry.entry(hash.clone()).or_insert_with(|| BlockView {
                number: b.number,
                hash: b.hash.clone(),
                parent_hash: b.parent_hash.clone(),
                signer: b.signer.as_ref().map(|s| s.to_lowercase()),
                timestamp: b.timestamp,
                txs: b.transactions,
                gas_used: b.gas_used,
                gas_limit: b.gas_limit,
                block_time,
                in_turn,
                propagation_ms: Vec::new(),
                first_seen_ms: seen_at,
                seen: HashMap::new(),
            });
            if view.signer.is_none() {
                view.signer = b.signer.as_ref().map(|s| s.to_lowercase());
            }
            if !view.seen.contains_key(node_id) {
                view.seen.insert(node_key.clone(), seen_at);
                if seen_at < view.first_seen_ms || view.propagation_ms.is_empty() {
                    view.first_seen_ms = view.first_seen_ms.min(seen_at);
                    let first = view.first_seen_ms;
                    view.propagation_ms = view
                        .seen
                        .values()
                        .map(|t| t.saturating_sub(first))
                        .collect();
                    view.propagation_ms.sort_unstable();
                } else {
                    // Sorted insert: O(sightings), not a full re-sort.
                    let p = seen_at - view.first_seen_ms;
                    let at = view.propagation_ms.partition_point(|x| *x <= p);
                    view.propagation_ms.insert(at, p);
                }
                sighted = true;
            }
            propagation = seen_at.saturating_sub(view.first_seen_ms);
            block_time = view.block_time;
        }
        while self.blocks.len() > KEPT_HEIGHTS {
            self.blocks.pop_first();
        }
        let canonical = self.canonical.entry(node_key).or_default();
        canonical.split_off(&b.number);
        canonical.insert(b.number, kept.unwrap_or_else(|| Arc::from(b.hash.as_str())));
        while canonical.len() > KEPT_HEIGHTS {
            canonical.pop_first();
        }
        let head = Head {
            number: b.number,
            hash: b.hash.clone(),
            timestamp: b.timestamp,
        };
        self.update_node(node_id, name, source, now_ms, |node| {
            node.head = Some(head);
            node.block_time = block_time.map(|t| t as f64);
            node.propagation_ms = Some(propagation);
        });
        self.reference_dirty = true;
        if !self.refresh_reference_due(now_ms)
            && sighted
            && self.shown.get(&b.number) == Some(&b.hash)
            && self.fanout.listening()
        {
            // A new sighting of a shown block changes its propagation; sent at
            // 1, 2, 4, 8, … sightings so a large fleet does not resend each
            // block once per node.
            if let Some(view) = self
                .blocks
                .get(&b.number)
                .and_then(|at| at.get(b.hash.as_str()))
                .filter(|v| v.seen.len().is_power_of_two())
            {
                self.fanout.publish("block", view);
            }
        }
        sighted
    }

    /// An agent's periodic stats (its enode already checked by the caller).
    pub fn on_stats(
        &mut self,
        node_id: &str,
        s: &StatsReport,
        now_ms: u64,
        latency_ms: Option<u64>,
    ) {
        let gas_price = s
            .min_gas_price_wei
            .or(s.suggested_gas_price_wei)
            .map_or_else(|| UNKNOWN.to_owned(), |wei| wei.to_string());
        self.update_node(node_id, &s.name, "agent", now_ms, |node| {
            node.name = s.name.clone();
            node.client = s.client.clone();
            node.peers = s.peers;
            node.mining = s.mining;
            node.is_signer = s.is_signer;
            node.signer = s.signer.as_ref().map(|a| a.to_lowercase());
            node.pending = s.pending;
            node.uptime_s = Some(s.uptime_s);
            node.ready = Some(s.ready);
            node.not_ready = s.not_ready.clone();
            node.last_shutdown = s.last_shutdown.clone();
            node.blocks_lost = Some(s.blocks_lost_total);
            node.enode = s.enode.clone();
            node.gas_price = Some(gas_price);
            if latency_ms.is_some() {
                node.latency_ms = latency_ms;
            }
        });
        if let Some(set) = &s.signers {
            self.reported_signers
                .insert(node_id.to_owned(), normalise(set));
            self.adopt_signers();
        }
    }

    /// Node `node_id` reported a geth shutdown: it is not ready until stats
    /// sent after it say otherwise. The spool may deliver the event after such
    /// stats (they then already carry this shutdown as their last one): those
    /// stand.
    pub fn on_shutdown(&mut self, node_id: &str, verdict: &ShutdownVerdict) {
        let Some(node) = self.nodes.get_mut(node_id) else {
            return;
        };
        let newer = node
            .last_shutdown
            .as_ref()
            .is_none_or(|known| known.at < verdict.at);
        if newer && node.ready != Some(false) {
            node.ready = Some(false);
            node.not_ready = vec!["geth shut down".to_owned()];
            let view = node.clone();
            self.fanout.publish("node", &view);
        }
    }

    /// Every node the view knows, online or not.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeView> {
        self.nodes.values()
    }

    /// Marks silent nodes offline and re-evaluates the alarms (every second).
    pub fn tick(&mut self, now_ms: u64) {
        let mut changed = Vec::new();
        for node in self.nodes.values_mut() {
            let online = now_ms.saturating_sub(node.last_seen_ms) < OFFLINE_AFTER_MS;
            if node.online != online {
                node.online = online;
                changed.push(node.clone());
            }
        }
        for node in &changed {
            self.fanout.publish("node", node);
        }
        // Without signer nodes the online nodes decide the reference.
        if !changed.is_empty() || self.reference_dirty {
            self.refresh_reference();
        }
        self.check_alarms(now_ms);
    }

    /// Signer nodes whose account is in the current set.
    fn voting_signers(&self) -> Vec<&SignerNode> {
        let set: HashSet<&str> = self.signer_set.iter().map(String::as_str).collect();
        self.signer_nodes
            .iter()
            .filter(|n| set.contains(n.signer.as_str()))
            .collect()
    }

    /// Adopts the signer set that a majority of the voting signer nodes report.
    fn adopt_signers(&mut self) {
        let voters = self.voting_signers();
        if voters.is_empty() {
            return;
        }
        let quorum = voters.len() / 2 + 1;
        let mut tally: HashMap<&Vec<String>, usize> = HashMap::new();
        for v in &voters {
            if let Some(set) = self.reported_signers.get(&v.id) {
                *tally.entry(set).or_default() += 1;
            }
        }
        let adopted = tally
            .into_iter()
            .find(|(set, votes)| *votes >= quorum && !set.is_empty())
            .map(|(set, _)| set.clone());
        if let Some(set) = adopted.filter(|s| *s != self.signer_set) {
            tracing::info!(from = ?self.signer_set, to = ?set, "signer set changed (reported by a majority of the signer nodes)");
            self.signer_set = set;
            self.fanout.publish("signers", &self.signers());
            self.refresh_reference();
        }
    }

    /// Recomputes the reference head now in a small fleet, at most every
    /// [`REFERENCE_EVERY_MS`] in a large one (the tick catches up).
    fn refresh_reference_due(&mut self, now_ms: u64) -> bool {
        let voters = match self.voting_signers().len() {
            0 => self.nodes.len(),
            n => n,
        };
        if voters > SMALL_FLEET && now_ms.saturating_sub(self.reference_at_ms) < REFERENCE_EVERY_MS
        {
            return false;
        }
        self.reference_at_ms = now_ms;
        self.refresh_reference()
    }

    /// Recomputes the reference head; on a change, the shown chain follows and
    /// the dashboard hears of it. Returns whether it changed.
    fn refresh_reference(&mut self) -> bool {
        self.reference_dirty = false;
        self.fleet_head = self.compute_highest_signer_head();
        let reference = self.compute_reference();
        if reference == self.reference {
            return false;
        }
        self.reference = reference;
        self.recompute_shown();
        self.remember_history();
        if let Some((number, hash)) = &self.reference {
            if let Some(best) = self.blocks.get(number).and_then(|at| at.get(hash.as_str())) {
                self.fanout.publish("block", best);
            }
        }
        self.publish_best();
        self.fanout.publish("signers", &self.signers());
        true
    }

    /// The highest block held by a majority of the voters (see module docs).
    fn compute_reference(&self) -> Option<(u64, String)> {
        struct Cursor<'a> {
            ids: [&'a str; 2],
            number: u64,
            hash: Option<&'a str>,
        }
        impl<'a> Cursor<'a> {
            fn at(ids: [&'a str; 2], head: &'a Head) -> Self {
                Cursor {
                    ids,
                    number: head.number,
                    hash: Some(head.hash.as_str()),
                }
            }
        }
        let signers = self.voting_signers();
        // Each voter's report ids: a signer node's agent and its ethstats
        // login; without signer nodes, each online node (its head at hand).
        let ethstats: Vec<String> = signers
            .iter()
            .map(|n| crate::ethstats::live_id(&n.name))
            .collect();
        let (voters, mut cursors) = if signers.is_empty() {
            let online: Vec<&NodeView> = self.nodes.values().filter(|n| n.online).collect();
            let cursors: Vec<Cursor<'_>> = online
                .iter()
                .filter_map(|n| Some(Cursor::at([&n.id, &n.id], n.head.as_ref()?)))
                .collect();
            (online.len(), cursors)
        } else {
            let cursors: Vec<Cursor<'_>> = signers
                .iter()
                .zip(&ethstats)
                .filter_map(|(n, e)| {
                    let ids = [n.id.as_str(), e.as_str()];
                    let head = ids
                        .iter()
                        .filter_map(|id| self.nodes.get(*id)?.head.as_ref())
                        .max_by_key(|h| h.number)?;
                    Some(Cursor::at(ids, head))
                })
                .collect();
            (signers.len(), cursors)
        };
        let quorum = voters / 2 + 1;
        if cursors.len() < quorum {
            return None;
        }
        let mut numbers: Vec<u64> = cursors.iter().map(|c| c.number).collect();
        numbers.sort_unstable_by(|a, b| b.cmp(a));
        let start = numbers[quorum - 1];
        // The hashes the cursors reach at one height, sorted so that equal
        // ones sit together: a run of `quorum` is the reference.
        let mut reached: Vec<&str> = Vec::with_capacity(cursors.len());
        for height in (start.saturating_sub(REFERENCE_DEPTH)..=start).rev() {
            reached.clear();
            for c in cursors.iter_mut().filter(|c| c.number >= height) {
                // Walk down to `height`: parent links first, else what the
                // node itself reported at that height.
                while c.number > height {
                    let parent = c
                        .hash
                        .and_then(|h| self.blocks.get(&c.number)?.get(h))
                        .map(|b| b.parent_hash.as_str());
                    c.number -= 1;
                    c.hash = parent.or_else(|| {
                        c.ids
                            .iter()
                            .find_map(|id| self.canonical.get(*id)?.get(&c.number))
                            .map(|h| &**h)
                    });
                }
                reached.extend(c.hash);
            }
            reached.sort_unstable();
            if let Some(run) = reached.chunk_by(|a, b| a == b).find(|r| r.len() >= quorum) {
                return Some((height, run[0].to_owned()));
            }
        }
        None
    }

    /// The reference chain, walked down from the reference by parent links
    /// (the most-seen block where a link is unknown).
    fn recompute_shown(&mut self) {
        self.shown.clear();
        self.shown_linked_from = u64::MAX;
        let Some((top, hash)) = &self.reference else {
            return;
        };
        let mut next = Some(hash.clone());
        let mut linked = true;
        for (height, at) in self.blocks.range(..=*top).rev() {
            let by_link = next.filter(|h| at.contains_key(h.as_str()));
            linked &= by_link.is_some();
            if linked {
                self.shown_linked_from = *height;
            }
            let chosen = by_link.or_else(|| {
                at.values()
                    .max_by_key(|b| (b.seen.len(), std::cmp::Reverse(b.first_seen_ms)))
                    .map(|b| b.hash.clone())
            });
            next = chosen
                .as_ref()
                .and_then(|h| at.get(h.as_str()))
                .map(|b| b.parent_hash.clone());
            if let Some(h) = chosen {
                self.shown.insert(*height, h);
            }
        }
    }

    /// Compares the reference chain with what it was at each height: a block
    /// replaced after at least `rewrite_confirmations` blocks had been built
    /// on it (the highest reference head it was part of, minus its height) is
    /// rewritten history.
    fn remember_history(&mut self) {
        let Some((top, _)) = &self.reference else {
            return;
        };
        let top = *top;
        // Only the part linked to the reference is history; a guessed block
        // below a gap may be replaced by the real one without any reorg.
        for (height, hash) in self.shown.range(self.shown_linked_from..) {
            let (old, old_top) = match self.history.get_mut(height) {
                Some((known, seen_top)) if known == hash => {
                    *seen_top = (*seen_top).max(top);
                    continue;
                }
                Some((known, seen_top)) => (known.clone(), *seen_top),
                None => {
                    self.history.insert(*height, (hash.clone(), top));
                    continue;
                }
            };
            self.history.insert(*height, (hash.clone(), top));
            let depth = old_top.saturating_sub(*height);
            if depth < self.rewrite_confirmations {
                continue;
            }
            tracing::error!(
                height,
                old = %old,
                new = %hash,
                depth,
                "history rewritten: a confirmed block was replaced"
            );
            self.rewrites.push(RewrittenBlock {
                height: *height,
                old_hash: old,
                new_hash: hash.clone(),
                depth,
            });
            self.rewrites_total += 1;
            self.rewrite_news = true;
        }
        if self.rewrites.len() > REWRITES_SHOWN {
            self.rewrites.drain(..self.rewrites.len() - REWRITES_SHOWN);
        }
        while self.history.len() > HISTORY_HEIGHTS {
            self.history.pop_first();
        }
    }

    /// The highest head an online signer node reports (any online node when
    /// the network file names no signer node), for the recovery order.
    /// Kept with the reference (recomputed with it, at most every
    /// [`REFERENCE_EVERY_MS`] in a large fleet): every agent reply carries
    /// it, and it costs O(nodes).
    pub fn highest_signer_head(&self) -> Option<u64> {
        self.fleet_head
    }

    fn compute_highest_signer_head(&self) -> Option<u64> {
        let online = self.nodes.values().filter(|n| n.online);
        let heads = online.filter(|n| {
            self.signer_nodes.is_empty() || self.signer_nodes.iter().any(|s| s.id == n.id)
        });
        heads
            .filter_map(|n| n.head.as_ref().map(|h| h.number))
            .max()
    }

    /// Confirmed blocks replaced since the aggregator started.
    pub fn rewrites_total(&self) -> u64 {
        self.rewrites_total
    }

    /// The fleet's reference head, sent to agents for their sync gate.
    pub fn reference(&self) -> Option<BlockRef> {
        self.reference.as_ref().map(|(number, hash)| BlockRef {
            number: *number,
            hash: hash.clone(),
        })
    }

    /// The reference block, when its details are known.
    pub fn best(&self) -> Option<&BlockView> {
        let (number, hash) = self.reference.as_ref()?;
        self.blocks.get(number)?.get(hash.as_str())
    }

    fn best_json(&self) -> Value {
        self.best().map_or(Value::Null, |b| {
            json!({ "number": b.number, "hash": b.hash, "timestamp": b.timestamp, "signer": b.signer })
        })
    }

    /// Average seconds between the recent canonical blocks.
    pub fn avg_block_time(&self) -> Option<f64> {
        let times: Vec<u64> = self
            .recent_blocks(SHOWN_BLOCKS)
            .iter()
            .filter_map(|b| b.block_time)
            .collect();
        (!times.is_empty()).then(|| times.iter().sum::<u64>() as f64 / times.len() as f64)
    }

    /// Recent blocks of the reference chain, newest first.
    pub fn recent_blocks(&self, limit: usize) -> Vec<&BlockView> {
        self.shown
            .iter()
            .rev()
            .filter_map(|(n, h)| self.blocks.get(n)?.get(h.as_str()))
            .take(limit)
            .collect()
    }

    /// The gas price most online nodes report (wei), or `unknown`.
    pub fn gas_price(&self) -> String {
        let mut tally: BTreeMap<&str, usize> = BTreeMap::new();
        for n in self.nodes.values().filter(|n| n.online) {
            if let Some(p) = n.gas_price.as_deref().filter(|p| *p != UNKNOWN) {
                *tally.entry(p).or_default() += 1;
            }
        }
        tally
            .into_iter()
            .max_by_key(|(_, count)| *count)
            .map_or_else(|| UNKNOWN.to_owned(), |(p, _)| p.to_owned())
    }

    /// Sealed blocks and missed turns per signer of the set over the recent
    /// reference chain.
    pub fn signers(&self) -> Vec<SignerView> {
        let blocks = self.recent_blocks(KEPT_HEIGHTS);
        let len = self.signer_set.len() as u64;
        let mut views: BTreeMap<String, SignerView> = self
            .signer_set
            .iter()
            .map(|s| {
                (
                    s.clone(),
                    SignerView {
                        address: s.clone(),
                        sealed: 0,
                        missed_turns: 0,
                        last_sealed: None,
                    },
                )
            })
            .collect();
        for b in blocks {
            if let Some(v) = b.signer.as_ref().and_then(|s| views.get_mut(s)) {
                v.sealed += 1;
                v.last_sealed = Some(v.last_sealed.unwrap_or(0).max(b.number));
            }
            if !b.in_turn && len > 0 {
                let in_turn = &self.signer_set[(b.number % len) as usize];
                if b.signer.as_ref() != Some(in_turn) {
                    if let Some(v) = views.get_mut(in_turn) {
                        v.missed_turns += 1;
                    }
                }
            }
        }
        views.into_values().collect()
    }

    /// The whole dashboard state.
    pub fn snapshot(&self) -> Value {
        json!({
            "network": self.network,
            "best": self.best_json(),
            "reference": self.reference(),
            "avg_block_time": self.avg_block_time(),
            "gas_price": self.gas_price(),
            "gas_limit": self.best().map(|b| b.gas_limit),
            "nodes": self.nodes.values().collect::<Vec<_>>(),
            "blocks": self.recent_blocks(SHOWN_BLOCKS),
            "signers": self.signers(),
            "alarms": self.alarms,
            "restart": self.restart,
        })
    }

    /// The restart progress shown on the page; published when it changes.
    pub fn set_restart(&mut self, restart: Value) {
        if self.restart != restart {
            self.fanout.publish("restart", &restart);
            self.restart = restart;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u64, branch: u64) -> String {
        format!("0x{:032x}{:032x}", branch, n)
    }

    fn report(
        number: u64,
        branch: u64,
        parent_branch: u64,
        signer: &str,
        seen: u64,
    ) -> BlockReport {
        BlockReport {
            number,
            hash: h(number, branch),
            parent_hash: h(number.saturating_sub(1), parent_branch),
            timestamp: number,
            signer: Some(signer.into()),
            difficulty: 2,
            transactions: 0,
            gas_used: 0,
            gas_limit: 1,
            seen_at_ms: seen,
        }
    }

    fn signer_nodes() -> Vec<SignerNode> {
        ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, s)| SignerNode {
                id: format!("n{}", i + 1),
                name: format!("signer-{}", i + 1),
                signer: format!("0x{s}"),
            })
            .collect()
    }

    fn live() -> Live {
        Live::new(
            NetworkInfo {
                name: "t".into(),
                chain_id: Some(1337),
                period: 1,
            },
            &["0xa".into(), "0xb".into(), "0xc".into()],
            signer_nodes(),
            10,
        )
    }

    /// `nodes` each report blocks `1..=to` of branch 0.
    fn chain(l: &mut Live, nodes: &[&str], to: u64) {
        for n in 1..=to {
            for node in nodes {
                l.on_block(
                    node,
                    node,
                    "agent",
                    &report(n, 0, 0, "0xa", n * 1000),
                    n * 1000,
                );
            }
        }
    }

    #[test]
    fn hashes_and_node_ids_are_shared_not_copied() {
        let mut l = live();
        chain(&mut l, &["n1", "n2", "n3"], 3);
        let (hash, block) = l.blocks[&2].get_key_value(h(2, 0).as_str()).unwrap();
        for node in ["n1", "n2", "n3"] {
            let (id, heights) = l.canonical.get_key_value(node).unwrap();
            assert!(
                Arc::ptr_eq(&heights[&2], hash),
                "{node}'s hash at 2 is the block's"
            );
            let (seen_id, _) = block.seen.get_key_value(node).unwrap();
            assert!(
                Arc::ptr_eq(seen_id, id),
                "{node}'s sighting names it by the shared id"
            );
        }
        // A height full of branches keeps no more blocks, yet each node's
        // own head there is still remembered (its next block's parent).
        for branch in 1..=MAX_BRANCHES as u64 + 2 {
            let node = format!("x{branch}");
            l.on_block(
                &node,
                &node,
                "agent",
                &report(4, branch, 0, "0xa", 4000),
                4000,
            );
        }
        assert_eq!(l.blocks[&4].len(), MAX_BRANCHES);
        let last = format!("x{}", MAX_BRANCHES + 2);
        assert_eq!(
            l.canonical[last.as_str()].get(&4).map(|h| &**h),
            Some(h(4, MAX_BRANCHES as u64 + 2).as_str())
        );
    }

    #[test]
    fn propagation_and_best_block() {
        let mut l = live();
        l.on_block(
            "n1",
            "signer-1",
            "agent",
            &report(1, 0, 0, "0xa", 1000),
            1000,
        );
        assert_eq!(l.reference(), None, "one node is not a majority");
        l.on_block(
            "n2",
            "signer-2",
            "agent",
            &report(1, 0, 0, "0xa", 1040),
            1040,
        );
        let best = l.best().unwrap();
        assert_eq!(best.hash, h(1, 0));
        assert_eq!(best.propagation_ms, vec![0, 40]);
        assert_eq!(l.nodes["n2"].propagation_ms, Some(40));
    }

    #[test]
    fn one_node_cannot_move_the_reference_head() {
        let mut l = live();
        chain(&mut l, &["n1", "n2", "n3"], 5);
        assert_eq!(l.reference().map(|r| r.number), Some(5));
        // n1 claims a higher block (and the one after it) that nobody else has.
        l.on_block("n1", "n1", "agent", &report(6, 9, 0, "0xa", 6000), 6000);
        l.on_block("n1", "n1", "agent", &report(7, 9, 9, "0xa", 6000), 6000);
        assert_eq!(
            l.reference().map(|r| (r.number, r.hash)),
            Some((5, h(5, 0)))
        );
        assert_eq!(l.best().unwrap().number, 5);
        assert!(
            l.recent_blocks(100).iter().all(|b| b.hash != h(6, 9)),
            "a forged block is not shown"
        );
        // The real block 6, held by two of three signers, is.
        l.on_block("n2", "n2", "agent", &report(6, 0, 0, "0xb", 7000), 7000);
        assert_eq!(l.reference().unwrap().number, 5);
        l.on_block("n3", "n3", "agent", &report(6, 0, 0, "0xb", 7000), 7000);
        assert_eq!(
            l.reference().map(|r| (r.number, r.hash)),
            Some((6, h(6, 0)))
        );
        assert_eq!(l.recent_blocks(1)[0].hash, h(6, 0));
    }

    #[test]
    fn the_reference_is_an_ancestor_held_by_a_majority() {
        let mut l = live();
        chain(&mut l, &["n1", "n2", "n3"], 4);
        // n1 and n2 move on to 6 (they hold 5 and 6); n3 stays at 4.
        for n in 5..=6 {
            l.on_block(
                "n1",
                "n1",
                "agent",
                &report(n, 0, 0, "0xa", n * 1000),
                n * 1000,
            );
        }
        l.on_block("n2", "n2", "agent", &report(6, 0, 0, "0xa", 6000), 6000);
        assert_eq!(
            l.reference().map(|r| (r.number, r.hash)),
            Some((6, h(6, 0)))
        );
        // A side branch at 7 held by one node only: the reference stays.
        l.on_block("n3", "n3", "agent", &report(7, 5, 5, "0xc", 7000), 7000);
        assert_eq!(l.reference().unwrap().number, 6);
    }

    #[test]
    fn only_new_sightings_within_the_branch_cap_are_kept() {
        let mut l = Live::unconfigured();
        let first = report(5, 1, 0, "0xa", 5000);
        assert!(l.on_block("n1", "n1", "agent", &first, 5000));
        assert!(!l.on_block("n1", "n1", "agent", &first, 5001), "a repeat");
        assert!(
            l.on_block("n2", "n2", "agent", &first, 5002),
            "another node"
        );
        for branch in 2..=MAX_BRANCHES as u64 {
            let b = report(5, branch, 0, "0xa", 5000);
            assert!(l.on_block("n1", "n1", "agent", &b, 5000), "branch {branch}");
        }
        let over = report(5, MAX_BRANCHES as u64 + 1, 0, "0xa", 5000);
        assert!(
            !l.on_block("n1", "n1", "agent", &over, 5000),
            "beyond the cap"
        );
    }

    #[test]
    fn without_signer_nodes_a_majority_of_online_nodes_decides() {
        let mut l = Live::unconfigured();
        chain(&mut l, &["v1", "v2", "v3"], 3);
        assert_eq!(l.reference().unwrap().number, 3);
        l.on_block("v1", "v1", "agent", &report(4, 7, 0, "0xa", 4000), 4000);
        assert_eq!(l.reference().unwrap().number, 3);
        // v2 and v3 go silent: v1 alone is the online majority.
        l.tick(3000 + OFFLINE_AFTER_MS + 10_000);
        assert!(!l.nodes["v2"].online);
        l.on_block("v1", "v1", "agent", &report(5, 7, 7, "0xa", 40_000), 40_000);
        assert_eq!(l.reference().unwrap().number, 5);
    }

    #[test]
    fn a_large_fleet_recomputes_the_reference_at_most_every_100_ms() {
        let mut l = Live::unconfigured();
        let ids: Vec<String> = (0..40).map(|i| format!("v{i}")).collect();
        for id in &ids {
            l.on_block(id, id, "agent", &report(1, 0, 0, "0xa", 1000), 1000);
        }
        l.tick(1000);
        assert_eq!(l.reference().unwrap().number, 1);
        for id in &ids {
            l.on_block(id, id, "agent", &report(2, 0, 0, "0xa", 1010), 1010);
        }
        assert_eq!(l.reference().unwrap().number, 1, "throttled");
        l.tick(1200);
        assert_eq!(l.reference().unwrap().number, 2, "the tick catches up");
    }

    fn stats(signers: &[&str]) -> StatsReport {
        StatsReport {
            name: "x".into(),
            signers: Some(signers.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn the_signer_set_follows_a_majority_of_signer_nodes_only() {
        let mut l = live();
        // One node claims a foreign set: ignored.
        l.on_stats("n1", &stats(&["0xf"]), 1, None);
        assert_eq!(l.signer_set(), ["0xa", "0xb", "0xc"]);
        // A non-signer node cannot vote at all.
        l.on_stats("v9", &stats(&["0xf"]), 1, None);
        assert_eq!(l.signer_set(), ["0xa", "0xb", "0xc"]);
        // c is voted out: two of three signer nodes say so.
        l.on_stats("n2", &stats(&["0xB", "0xa"]), 1, None);
        assert_eq!(l.signer_set(), ["0xa", "0xb", "0xc"]);
        l.on_stats("n3", &stats(&["0xa", "0xb"]), 1, None);
        assert_eq!(l.signer_set(), ["0xa", "0xb"]);
        assert!(l.signers().iter().all(|s| s.address != "0xc"));
        // Sealers of blocks never join the set.
        chain(&mut l, &["n1", "n2", "n3"], 2);
        l.on_block("n1", "n1", "agent", &report(3, 0, 0, "0xf", 3000), 3000);
        assert_eq!(l.signer_set(), ["0xa", "0xb"]);
    }

    #[test]
    fn gas_price_is_what_nodes_report_or_unknown() {
        let mut l = live();
        l.on_stats("n1", &StatsReport::default(), 1, None);
        assert_eq!(l.nodes["n1"].gas_price.as_deref(), Some(UNKNOWN));
        assert_eq!(l.gas_price(), UNKNOWN);
        let priced = StatsReport {
            min_gas_price_wei: Some(1_000_000_000),
            ..Default::default()
        };
        l.on_stats("n2", &priced, 1, None);
        assert_eq!(l.gas_price(), "1000000000");
    }

    #[test]
    fn updates_are_rendered_once_as_sse_bytes() {
        let mut l = live();
        let (first, mut rx) = l.subscribe();
        assert!(first.starts_with(b"event: state\ndata: {"));
        l.on_stats("n1", &StatsReport::default(), 1, None);
        let event = rx.try_recv().unwrap();
        assert!(event.starts_with(b"event: node\ndata: {"), "{event:?}");
        assert!(event.ends_with(b"\n\n"));
    }

    #[test]
    fn a_lasting_disagreement_raises_the_fork_alarm() {
        let mut l = live();
        l.on_block(
            "n1",
            "signer-1",
            "agent",
            &report(5, 1, 0, "0xa", 1000),
            1000,
        );
        l.on_block(
            "n2",
            "signer-2",
            "agent",
            &report(5, 2, 0, "0xb", 1000),
            1000,
        );
        l.tick(1000);
        assert!(l.alarms.fork.is_none(), "debounced");
        l.tick(2000);
        assert!(l.alarms.fork.is_none());
        l.tick(4500);
        let fork = l.alarms.fork.clone().expect("fork alarm");
        assert_eq!(fork.height, 5);
        assert_eq!(fork.hashes.len(), 2);
        // n2 reorgs onto n1's block: the alarm clears.
        l.on_block(
            "n2",
            "signer-2",
            "agent",
            &report(5, 1, 0, "0xa", 4600),
            4600,
        );
        l.tick(4700);
        assert!(l.alarms.fork.is_none());
    }

    /// Every signer node reports `from..=to` of `branch`, the first of them
    /// on `parent_branch`.
    fn branch(l: &mut Live, from: u64, to: u64, branch: u64, parent_branch: u64, at: u64) {
        for n in from..=to {
            let parent = if n == from { parent_branch } else { branch };
            for node in ["n1", "n2", "n3"] {
                l.on_block(
                    node,
                    node,
                    "agent",
                    &report(n, branch, parent, "0xa", at),
                    at,
                );
            }
        }
    }

    #[test]
    fn a_power_cut_that_reseals_confirmed_heights_raises_history_rewritten() {
        let mut l = live();
        chain(&mut l, &["n1", "n2", "n3"], 12);
        l.tick(12_000);
        assert_eq!(l.alarms.history_rewritten, None);
        // Every node comes back at block 4 and seals 5.. again.
        branch(&mut l, 4, 4, 0, 0, 13_000);
        assert_eq!(l.reference().map(|r| r.number), Some(4));
        branch(&mut l, 5, 8, 1, 0, 14_000);
        l.tick(15_000);
        let alarm = l.alarms.history_rewritten.clone().expect("alarm raised");
        // Heights 5 and 6 were 7 and 6 blocks deep (>= 6 confirmations); 7 only 5.
        let named: Vec<(u64, String, String, u64)> = alarm
            .blocks
            .iter()
            .map(|b| (b.height, b.old_hash.clone(), b.new_hash.clone(), b.depth))
            .collect();
        assert_eq!(
            named,
            vec![(5, h(5, 0), h(5, 1), 7), (6, h(6, 0), h(6, 1), 6)]
        );
        assert_eq!(alarm.total, 2);
        assert_eq!(l.rewrites_total(), 2);
        assert_eq!(
            l.snapshot()["alarms"]["history_rewritten"]["blocks"][0]["height"],
            5
        );
        // Held while the operator looks, then cleared.
        l.tick(15_000 + DEFAULT_REWRITE_ALARM_MS - 1);
        assert!(l.alarms.history_rewritten.is_some());
        l.tick(15_000 + DEFAULT_REWRITE_ALARM_MS);
        assert_eq!(l.alarms.history_rewritten, None);
        assert_eq!(l.rewrites_total(), 2, "the count stays");
    }

    #[test]
    fn the_fleet_head_is_the_highest_online_signer_head() {
        let mut l = live();
        assert_eq!(l.highest_signer_head(), None);
        chain(&mut l, &["n1", "n2"], 5);
        l.on_block("n3", "n3", "agent", &report(1, 0, 0, "0xa", 1000), 1000);
        // A node outside the signer nodes does not count.
        l.on_block("v1", "v1", "agent", &report(6, 0, 0, "0xa", 1000), 1000);
        assert_eq!(l.highest_signer_head(), Some(5));
        // n1 came back lower after a crash: its new report counts.
        l.on_block("n1", "n1", "agent", &report(3, 0, 0, "0xa", 1000), 1000);
        assert_eq!(l.highest_signer_head(), Some(5), "n2 still holds 5");
        l.on_block("n2", "n2", "agent", &report(3, 0, 0, "0xa", 1000), 1000);
        assert_eq!(l.highest_signer_head(), Some(3));
        // Silent nodes go offline and stop counting.
        l.on_block("n3", "n3", "agent", &report(2, 0, 0, "0xa", 40_000), 40_000);
        l.tick(40_000);
        assert_eq!(l.highest_signer_head(), Some(2));
    }

    #[test]
    fn a_guess_below_a_gap_is_not_history() {
        let mut l = live();
        // Block 1 of two branches; the reference chain's block 2 is reported
        // only later, so block 1 of the reference chain is first a guess.
        for node in ["n1", "n2"] {
            l.on_block(node, node, "agent", &report(1, 1, 0, "0xa", 1000), 1000);
        }
        l.on_block("n3", "n3", "agent", &report(1, 2, 0, "0xa", 1000), 1000);
        for n in 3..=12 {
            for node in ["n1", "n2", "n3"] {
                let parent = if n == 3 { 2 } else { 0 };
                l.on_block(
                    node,
                    node,
                    "agent",
                    &report(n, 0, parent, "0xa", n * 1000),
                    n * 1000,
                );
            }
        }
        // Block 2 (on branch 2's block 1) arrives late from another node:
        // height 1 shows another block from the next head on, but the first
        // one was never linked to the reference.
        l.on_block("v1", "v1", "agent", &report(2, 2, 2, "0xa", 13_000), 13_000);
        for node in ["n1", "n2", "n3"] {
            l.on_block(
                node,
                node,
                "agent",
                &report(13, 0, 0, "0xa", 13_000),
                13_000,
            );
        }
        assert_eq!(l.shown.get(&1), Some(&h(1, 2)));
        l.tick(14_000);
        assert_eq!(l.alarms.history_rewritten, None);
        assert_eq!(l.rewrites_total(), 0);
    }

    #[test]
    fn a_shallow_reorg_is_not_rewritten_history() {
        let mut l = live();
        chain(&mut l, &["n1", "n2", "n3"], 12);
        // The top 5 blocks replaced: a race below the confirmation depth.
        branch(&mut l, 8, 14, 1, 0, 13_000);
        l.tick(14_000);
        assert_eq!(l.reference().map(|r| r.number), Some(14));
        assert_eq!(l.alarms.history_rewritten, None);
        assert_eq!(l.rewrites_total(), 0);
        // With a lower threshold the same reorg counts.
        let mut l = live();
        l.rewrite_confirmations = 4;
        chain(&mut l, &["n1", "n2", "n3"], 12);
        branch(&mut l, 8, 14, 1, 0, 13_000);
        l.tick(14_000);
        let alarm = l.alarms.history_rewritten.clone().expect("alarm");
        assert_eq!(alarm.blocks.len(), 1, "{alarm:?}");
        assert_eq!(alarm.blocks[0].height, 8);
    }

    #[test]
    fn stall_after_k_periods() {
        let mut l = live();
        for node in ["n1", "n2"] {
            l.on_block(node, node, "agent", &report(5, 0, 0, "0xa", 5000), 5000);
        }
        l.tick(10_000);
        assert!(l.alarms.stall.is_none());
        l.tick(20_000);
        assert_eq!(l.alarms.stall.as_ref().map(|s| s.seconds), Some(15));
    }
}
