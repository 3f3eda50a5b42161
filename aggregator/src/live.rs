//! The live view of the network: nodes, recent blocks with their sightings,
//! per-signer sealing, and the fork and stall alarms. Every change is also
//! broadcast as a small update for the dashboard's event stream.

use std::collections::{BTreeMap, HashMap};

use geth_wire::{BlockReport, ShutdownVerdict, StatsReport};
use serde::Serialize;
use tokio::sync::broadcast;

/// Heights kept in memory (the store keeps more).
const KEPT_HEIGHTS: usize = 256;
/// Blocks sent to the dashboard.
const SHOWN_BLOCKS: usize = 100;
/// A node is offline when it has not reported for this long.
pub const OFFLINE_AFTER_MS: u64 = 30_000;

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
    pub gas_price: Option<String>,
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
    #[serde(skip)]
    pub seen: HashMap<String, u64>,
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

/// What the dashboard's event stream carries.
#[derive(Debug, Clone)]
pub enum Update {
    Node(Box<NodeView>),
    Block(Box<BlockView>),
    Best,
    Signers,
    Alarms,
}

pub struct Live {
    pub network: NetworkInfo,
    pub nodes: BTreeMap<String, NodeView>,
    /// height → hash → block
    blocks: BTreeMap<u64, BTreeMap<String, BlockView>>,
    /// node → height → hash it reported as canonical
    canonical: HashMap<String, BTreeMap<u64, String>>,
    /// Sorted signer addresses (from the network file, or learnt from blocks).
    pub signer_set: Vec<String>,
    pub alarms: Alarms,
    /// Since when the fork condition holds (debounce).
    fork_since_ms: Option<u64>,
    pub stall_periods: u64,
    pub updates: broadcast::Sender<Update>,
}

impl Live {
    pub fn new(network: NetworkInfo, signer_set: Vec<String>, stall_periods: u64) -> Self {
        let mut signer_set: Vec<String> =
            signer_set.into_iter().map(|s| s.to_lowercase()).collect();
        signer_set.sort();
        Self {
            network,
            nodes: BTreeMap::new(),
            blocks: BTreeMap::new(),
            canonical: HashMap::new(),
            signer_set,
            alarms: Alarms::default(),
            fork_since_ms: None,
            stall_periods,
            updates: broadcast::channel(4096).0,
        }
    }

    fn send(&self, update: Update) {
        let _ = self.updates.send(update);
    }

    pub fn node_mut(&mut self, id: &str, name: &str, source: &'static str) -> &mut NodeView {
        self.nodes
            .entry(id.to_owned())
            .or_insert_with(|| NodeView::new(id.to_owned(), name.to_owned(), source))
    }

    /// A node reported a new head.
    pub fn on_block(
        &mut self,
        node_id: &str,
        name: &str,
        source: &'static str,
        b: &BlockReport,
        now_ms: u64,
    ) {
        // The genesis timestamp is arbitrary (often 0): no block time after it.
        let parent_time = self
            .blocks
            .get(&b.number.wrapping_sub(1))
            .filter(|_| b.number > 1)
            .and_then(|at| at.get(&b.parent_hash))
            .map(|p| p.timestamp);
        let in_turn = b.difficulty == 2;
        let entry = self.blocks.entry(b.number).or_default();
        let new_block = !entry.contains_key(&b.hash);
        let view = entry.entry(b.hash.clone()).or_insert_with(|| BlockView {
            number: b.number,
            hash: b.hash.clone(),
            parent_hash: b.parent_hash.clone(),
            signer: b.signer.as_ref().map(|s| s.to_lowercase()),
            timestamp: b.timestamp,
            txs: b.transactions,
            gas_used: b.gas_used,
            gas_limit: b.gas_limit,
            block_time: parent_time.map(|t| b.timestamp.saturating_sub(t)),
            in_turn,
            propagation_ms: Vec::new(),
            first_seen_ms: b.seen_at_ms.min(now_ms),
            seen: HashMap::new(),
        });
        if view.signer.is_none() {
            view.signer = b.signer.as_ref().map(|s| s.to_lowercase());
        }
        let seen_at = b.seen_at_ms.min(now_ms);
        view.first_seen_ms = view.first_seen_ms.min(seen_at);
        view.seen.entry(node_id.to_owned()).or_insert(seen_at);
        let first = view.first_seen_ms;
        view.propagation_ms = view
            .seen
            .values()
            .map(|t| t.saturating_sub(first))
            .collect();
        view.propagation_ms.sort_unstable();
        let propagation = seen_at.saturating_sub(first);
        let block_time = view.block_time;
        let snapshot = view.clone();
        while self.blocks.len() > KEPT_HEIGHTS {
            self.blocks.pop_first();
        }
        let canonical = self.canonical.entry(node_id.to_owned()).or_default();
        canonical.split_off(&b.number);
        canonical.insert(b.number, b.hash.clone());
        while canonical.len() > KEPT_HEIGHTS {
            canonical.pop_first();
        }
        if let Some(signer) = &snapshot.signer {
            if !self.signer_set.contains(signer) {
                self.signer_set.push(signer.clone());
                self.signer_set.sort();
            }
        }
        let node = self.node_mut(node_id, name, source);
        node.head = Some(Head {
            number: b.number,
            hash: b.hash.clone(),
            timestamp: b.timestamp,
        });
        node.block_time = block_time.map(|t| t as f64);
        node.propagation_ms = Some(propagation);
        node.last_seen_ms = now_ms;
        node.online = true;
        let node = node.clone();
        self.send(Update::Node(Box::new(node)));
        if new_block {
            self.send(Update::Block(Box::new(snapshot)));
            self.send(Update::Best);
            self.send(Update::Signers);
        }
    }

    /// An agent's periodic stats.
    pub fn on_stats(
        &mut self,
        node_id: &str,
        s: &StatsReport,
        now_ms: u64,
        latency_ms: Option<u64>,
    ) {
        let node = self.node_mut(node_id, &s.name, "agent");
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
        node.gas_price = Some("0".into());
        if latency_ms.is_some() {
            node.latency_ms = latency_ms;
        }
        node.last_seen_ms = now_ms;
        node.online = true;
        let node = node.clone();
        self.send(Update::Node(Box::new(node)));
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
        for node in changed {
            self.send(Update::Node(Box::new(node)));
        }
        self.check_alarms(now_ms);
    }

    pub fn best(&self) -> Option<&BlockView> {
        let (_, at) = self.blocks.last_key_value()?;
        // The block at the top height that most nodes hold.
        at.values()
            .max_by_key(|b| (b.seen.len(), std::cmp::Reverse(b.first_seen_ms)))
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

    /// Recent blocks, newest first: per height, the most-seen block.
    pub fn recent_blocks(&self, limit: usize) -> Vec<BlockView> {
        self.blocks
            .values()
            .rev()
            .filter_map(|at| at.values().max_by_key(|b| b.seen.len()).cloned())
            .take(limit)
            .collect()
    }

    /// Sealed blocks and missed turns per signer over the recent canonical blocks.
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
        for b in &blocks {
            if let Some(signer) = &b.signer {
                let v = views.entry(signer.clone()).or_insert_with(|| SignerView {
                    address: signer.clone(),
                    sealed: 0,
                    missed_turns: 0,
                    last_sealed: None,
                });
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

    /// Fork: two online nodes hold different hashes at one height (debounced
    /// over two block periods, so a normal race between sealers is not one).
    /// Stall: no new block for `stall_periods` periods.
    fn check_alarms(&mut self, now_ms: u64) {
        let fork = self.find_fork();
        let debounce = (2 * self.network.period.max(1) * 1000).max(3000);
        let fork = match (fork, self.fork_since_ms) {
            (Some(fork), Some(since)) if now_ms.saturating_sub(since) >= debounce => Some(fork),
            (Some(_), Some(_)) => None,
            (Some(_), None) => {
                self.fork_since_ms = Some(now_ms);
                None
            }
            (None, _) => {
                self.fork_since_ms = None;
                None
            }
        };
        let stall = self.best().and_then(|best| {
            let period = self.network.period;
            let age = (now_ms / 1000).saturating_sub(best.timestamp);
            (period > 0 && age > self.stall_periods * period).then_some(Stall {
                seconds: age,
                since: best.timestamp,
            })
        });
        let alarms = Alarms { fork, stall };
        // The stall duration ticks every second; only its start/end is news.
        let news = alarms.fork != self.alarms.fork
            || alarms.stall.is_some() != self.alarms.stall.is_some();
        self.alarms = alarms;
        if news {
            self.send(Update::Alarms);
        }
    }

    /// O(nodes × distinct head heights): for each height some node has as its
    /// head, the hashes online nodes hold there.
    fn find_fork(&self) -> Option<Fork> {
        let online: Vec<&NodeView> = self
            .nodes
            .values()
            .filter(|n| n.online && n.head.is_some())
            .collect();
        let mut heights: Vec<u64> = online
            .iter()
            .filter_map(|n| n.head.as_ref().map(|h| h.number))
            .collect();
        heights.sort_unstable();
        heights.dedup();
        for height in heights.into_iter().rev() {
            let mut hashes: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for node in &online {
                if let Some(hash) = self.canonical.get(&node.id).and_then(|c| c.get(&height)) {
                    hashes
                        .entry(hash.clone())
                        .or_default()
                        .push(node.name.clone());
                }
            }
            if hashes.len() > 1 {
                for names in hashes.values_mut() {
                    names.sort();
                }
                return Some(Fork { height, hashes });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(number: u64, hash: &str, parent: &str, signer: &str, seen: u64) -> BlockReport {
        BlockReport {
            number,
            hash: hash.into(),
            parent_hash: parent.into(),
            timestamp: number,
            signer: Some(signer.into()),
            difficulty: 2,
            transactions: 0,
            gas_used: 0,
            gas_limit: 1,
            seen_at_ms: seen,
        }
    }

    fn live() -> Live {
        Live::new(
            NetworkInfo {
                name: "t".into(),
                chain_id: Some(1337),
                period: 1,
            },
            vec!["0xa".into(), "0xb".into()],
            10,
        )
    }

    #[test]
    fn propagation_and_best_block() {
        let mut l = live();
        l.on_block(
            "n1",
            "signer-1",
            "agent",
            &report(1, "0x1", "0x0", "0xa", 1000),
            1000,
        );
        l.on_block(
            "n2",
            "signer-2",
            "agent",
            &report(1, "0x1", "0x0", "0xa", 1040),
            1040,
        );
        let best = l.best().unwrap();
        assert_eq!(best.hash, "0x1");
        assert_eq!(best.propagation_ms, vec![0, 40]);
        assert_eq!(l.nodes["n2"].propagation_ms, Some(40));
    }

    #[test]
    fn a_lasting_disagreement_raises_the_fork_alarm() {
        let mut l = live();
        l.on_block(
            "n1",
            "signer-1",
            "agent",
            &report(5, "0xaaa", "0x4", "0xa", 1000),
            1000,
        );
        l.on_block(
            "n2",
            "signer-2",
            "agent",
            &report(5, "0xbbb", "0x4", "0xb", 1000),
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
            &report(5, "0xaaa", "0x4", "0xa", 4600),
            4600,
        );
        l.tick(4700);
        assert!(l.alarms.fork.is_none());
    }

    #[test]
    fn stall_after_k_periods() {
        let mut l = live();
        l.on_block(
            "n1",
            "signer-1",
            "agent",
            &report(5, "0x5", "0x4", "0xa", 5000),
            5000,
        );
        l.tick(10_000);
        assert!(l.alarms.stall.is_none());
        l.tick(20_000);
        assert_eq!(l.alarms.stall.as_ref().map(|s| s.seconds), Some(15));
    }
}
