//! Chain monitor: follows geth over IPC and publishes into the node status and
//! the metrics. Nothing else calls geth for these values; scrapes and probes
//! only read.
//!
//! What it costs geth is kept to what can have changed (docs/OPERATIONS.md,
//! "Cost to geth"):
//! - blocks come from the `newHeads` subscription; the sealer is recovered
//!   from the header's seal and an empty transactions root needs no count, so
//!   a steady chain costs no call per block;
//! - peers come from the `peerEvents` subscription (read again on each event
//!   and every 15 s); without it, every second;
//! - head and sync state are asked each second only while no head arrived in
//!   the last second, while syncing, or without the head subscription, and
//!   every 5 s otherwise;
//! - pool, sealing state and proposals every 5 s; `clique_status`, signers and
//!   the advised gas price every 15 s when the head moved since the last read,
//!   and signers right after a block that carries a vote (the only kind of
//!   block that can change them);
//! - client version and node info once per geth start;
//! - the calls of one moment go to geth as one JSON-RPC batch.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, U256, U64};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::metrics::process::{self, ProcessSampler};
use crate::metrics::sealing::{recover_sealer, BlockFacts, SealingTracker};
use crate::metrics::Metrics;
use crate::rpc::{decode, BatchCall, BatchConn, GethRpc, RpcError};
use crate::status::{now_ms, NodeStatus};

const TICK: Duration = Duration::from_secs(1);
/// Pool, sealing state and proposals every this many ticks.
const SLOW_EVERY: u64 = 5;
/// Peers read again every this many ticks, besides on peer events.
const PEERS_EVERY: u64 = 15;
/// Values that change only with a block (`clique_status` walks the last 64
/// headers, the dearest call) every this many ticks, if the head moved.
const PER_BLOCK_EVERY: u64 = 15;
/// Datadir size (a folder walk) every this many ticks.
const SIZE_EVERY: u64 = 60;
/// Without a new head for this long, head and sync state are asked each tick
/// (readiness wants an answer within 3 s, see `ReadinessConfig`).
const QUIET: Duration = Duration::from_secs(1);
/// The longest geth may take to answer one batch.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Blocks counted at the first connection (and at most per round).
const BACKFILL: u64 = 1024;
/// Deepest reorg looked for.
const MAX_REORG: u64 = 64;

pub struct Monitor {
    pub ipc: PathBuf,
    pub datadir: PathBuf,
    pub status: watch::Sender<NodeStatus>,
    pub metrics: Arc<Metrics>,
    tracker: SealingTracker,
    sampler: ProcessSampler,
    ticks: u64,
    /// When the last new head arrived.
    head_seen: Option<Instant>,
    /// The head at the last read of the values that change only with a block.
    read_at_head: Option<u64>,
    /// geth's sync state as last read.
    syncing: bool,
    /// Peers must be read again (a peer event, or never read).
    peers_due: bool,
    /// Signers must be read again (a block with a vote, or a walk over IPC).
    signers_due: bool,
    /// New heads for the aggregator reporter, if one runs.
    pub heads: Option<tokio::sync::mpsc::Sender<geth_wire::BlockReport>>,
}

/// What one tick asks geth.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Ask {
    /// Head and sync state.
    chain: bool,
    peers: bool,
    /// Pool, mining, proposals, sync state.
    slow: bool,
    /// Clique status, advised gas price (they change only with a block).
    per_block: bool,
    /// Signers.
    signers: bool,
}

/// The calls of one tick, from what is due. Pure, for the cadence tests.
#[allow(clippy::too_many_arguments, clippy::fn_params_excessive_bools)]
fn plan(
    tick: u64,
    head_subscribed: bool,
    head_quiet: bool,
    syncing: bool,
    peer_events: bool,
    peers_due: bool,
    head_moved: bool,
    signers_due: bool,
) -> Ask {
    let per_block = tick % PER_BLOCK_EVERY == 0 && head_moved;
    Ask {
        chain: !head_subscribed || head_quiet || syncing,
        peers: !peer_events || peers_due || tick % PEERS_EVERY == 0,
        slow: tick % SLOW_EVERY == 0,
        per_block,
        signers: per_block || signers_due,
    }
}

impl Monitor {
    pub fn new(
        ipc: PathBuf,
        datadir: PathBuf,
        status: watch::Sender<NodeStatus>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            ipc,
            datadir,
            status,
            metrics,
            tracker: SealingTracker::default(),
            sampler: ProcessSampler::default(),
            ticks: 0,
            head_seen: None,
            read_at_head: None,
            syncing: false,
            peers_due: true,
            signers_due: true,
            heads: None,
        }
    }

    /// Follows geth until `cancel` fires, reconnecting whenever geth restarts.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let (rpc, batch) = loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                self.sample_process();
                if self.ipc.exists() {
                    if let Ok(rpc) = GethRpc::connect(&self.ipc).await {
                        if let Ok(batch) = BatchConn::connect(&self.ipc).await {
                            break (rpc, batch);
                        }
                    }
                }
            };
            if let Err(e) = self.follow(&rpc, batch, &mut ticker, &cancel).await {
                tracing::debug!(error = %e, "lost geth's IPC; reconnecting");
            }
            if cancel.is_cancelled() {
                return;
            }
        }
    }

    async fn follow(
        &mut self,
        rpc: &GethRpc,
        mut batch: BatchConn,
        ticker: &mut tokio::time::Interval,
        cancel: &CancellationToken,
    ) -> Result<(), RpcError> {
        let mut heads = match rpc.subscribe_heads().await {
            Ok(sub) => Some(sub.into_stream()),
            Err(e) => {
                tracing::debug!(error = %e, "no newHeads subscription; polling only");
                None
            }
        };
        let mut peer_events = match rpc.subscribe_peer_events().await {
            Ok(sub) => Some(sub.into_stream()),
            Err(e) => {
                tracing::debug!(error = %e, "no peerEvents subscription; polling peers");
                None
            }
        };
        self.head_seen = None;
        self.read_at_head = None;
        self.peers_due = true;
        self.signers_due = true;
        // Once per geth start: what does not change while it runs.
        self.read_identity(&mut batch).await?;
        let all = Ask {
            chain: true,
            peers: true,
            slow: true,
            per_block: true,
            signers: true,
        };
        self.ask(rpc, &mut batch, all).await?;
        self.sample_process();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                header = next(&mut heads) => match header {
                    Some(header) => self.on_header(rpc, header).await?,
                    None => heads = None,
                },
                event = next(&mut peer_events) => match event {
                    // A peer came or went: its count (readiness) now, and the
                    // sync state, which a new peer may start.
                    Some(_) => {
                        self.peers_due = true;
                        let now = Ask { chain: true, peers: true, ..Ask::default() };
                        self.ask(rpc, &mut batch, now).await?;
                    }
                    None => peer_events = None,
                },
                _ = ticker.tick() => {
                    self.ticks += 1;
                    let quiet = self.head_seen.is_none_or(|t| t.elapsed() >= QUIET);
                    let head_moved = self.tracker.highest() != self.read_at_head;
                    let due = plan(
                        self.ticks,
                        heads.is_some(),
                        quiet,
                        self.syncing,
                        peer_events.is_some(),
                        self.peers_due,
                        head_moved,
                        self.signers_due,
                    );
                    self.ask(rpc, &mut batch, due).await?;
                    self.on_tick();
                    if due.slow {
                        self.sample_process();
                    }
                }
            }
        }
    }

    /// Client version and enode, read once per connection (geth start).
    async fn read_identity(&mut self, batch: &mut BatchConn) -> Result<(), RpcError> {
        let calls: [BatchCall; 2] = [
            ("web3_clientVersion", json!([])),
            ("admin_nodeInfo", json!([])),
        ];
        let mut answers = answered(batch, &calls).await?.into_iter();
        let version: String = decode("web3_clientVersion", next_answer(&mut answers))?;
        let info: Value = decode("admin_nodeInfo", next_answer(&mut answers))?;
        self.metrics.on_client_version(&version);
        let enode = info.get("enode").and_then(Value::as_str).map(str::to_owned);
        self.status.send_modify(|s| {
            s.client = Some(version);
            s.enode = enode;
        });
        Ok(())
    }

    /// Asks geth what `due` names, as one batch, and publishes the answers.
    async fn ask(
        &mut self,
        rpc: &GethRpc,
        batch: &mut BatchConn,
        due: Ask,
    ) -> Result<(), RpcError> {
        let mut calls: Vec<BatchCall> = Vec::new();
        if due.chain {
            calls.push(("eth_blockNumber", json!([])));
        }
        if due.chain || due.slow {
            calls.push(("eth_syncing", json!([])));
        }
        if due.peers {
            calls.push(("admin_peers", json!([])));
        }
        if due.slow {
            calls.push(("txpool_status", json!([])));
            calls.push(("eth_mining", json!([])));
            calls.push(("clique_proposals", json!([])));
        }
        // clique_status fails at heads 0 and 1 (NaN, underflow).
        let clique_status = due.per_block && self.tracker.highest().unwrap_or(0) >= 2;
        if due.per_block {
            calls.push(("eth_gasPrice", json!([])));
            if clique_status {
                calls.push(("clique_status", json!([])));
            }
        }
        if due.signers {
            calls.push(("clique_getSigners", json!([])));
        }
        if calls.is_empty() {
            return Ok(());
        }
        let answers = answered(batch, &calls).await?;
        let mut by_method: HashMap<&'static str, Result<Value, RpcError>> =
            calls.iter().map(|(m, _)| *m).zip(answers).collect();
        let mut take = |m: &'static str| {
            by_method.remove(m).unwrap_or(Err(RpcError::Call {
                method: m,
                reason: "not asked".into(),
            }))
        };
        let now = now_ms();
        self.status
            .send_modify(|s| s.chain.answered_at_ms = Some(now));

        if due.chain || due.slow {
            let syncing: Value = decode("eth_syncing", take("eth_syncing"))?;
            let (syncing, highest_block) = parse_syncing(&syncing);
            self.syncing = syncing;
            self.metrics.on_syncing(syncing);
            self.status.send_modify(|s| {
                s.chain.syncing = Some(syncing);
                s.chain.highest_block = highest_block;
            });
        }
        if due.peers {
            let peers: Vec<Value> = decode("admin_peers", take("admin_peers"))?;
            self.peers_due = false;
            let inbound = peers
                .iter()
                .filter(|p| p.pointer("/network/inbound") == Some(&Value::Bool(true)))
                .count() as u64;
            let count = peers.len() as u64;
            self.metrics.on_peers(inbound, count - inbound);
            self.status.send_modify(|s| {
                s.chain.peered_at_ms = match count {
                    0 => None,
                    _ => s.chain.peered_at_ms.or(Some(now)),
                };
                s.chain.peers = Some(count);
            });
        }
        if due.slow {
            let pool: HashMap<String, U64> = decode("txpool_status", take("txpool_status"))?;
            let get = |k: &str| pool.get(k).map_or(0, |v| v.to::<u64>());
            self.metrics.on_txpool(get("pending"), get("queued"));
            let mining: bool = decode("eth_mining", take("eth_mining"))?;
            self.metrics.on_mining(mining);
            let votes: HashMap<Address, bool> =
                decode("clique_proposals", take("clique_proposals"))?;
            self.metrics.on_votes(votes.len());
            self.status.send_modify(|s| {
                s.mining = Some(mining);
                s.pending = Some(get("pending"));
                s.queued = Some(get("queued"));
            });
        }
        if due.per_block {
            self.read_at_head = self.tracker.highest();
            // What wallets are told to pay: read back, not assumed (docs/GAS.md).
            let advised: U256 = decode("eth_gasPrice", take("eth_gasPrice"))?;
            let advised = u64::try_from(advised).unwrap_or(u64::MAX);
            self.metrics.on_gas_price_suggested(advised);
            self.status
                .send_if_modified(|s| s.suggested_gas_price_wei.replace(advised) != Some(advised));
            if clique_status {
                match take("clique_status") {
                    Ok(v) => self.on_clique_status(&v),
                    Err(e) => tracing::debug!(error = %e, "clique_status"),
                }
            }
        }
        if due.signers {
            let signers: Vec<Address> = decode("clique_getSigners", take("clique_getSigners"))?;
            self.signers_due = false;
            self.tracker.set_signers(signers.clone());
            self.status.send_modify(|s| {
                s.is_signer = s.signer.map(|me| signers.contains(&me));
                s.signers = Some(signers);
            });
        }
        if due.chain {
            let head: U64 = decode("eth_blockNumber", take("eth_blockNumber"))?;
            let head = head.to::<u64>();
            if self.tracker.highest() != Some(head) {
                self.on_head(rpc, head).await?;
            }
        }
        Ok(())
    }

    fn on_clique_status(&self, v: &Value) {
        let percent = v
            .get("inturnPercent")
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        let activity: Vec<(Address, u64)> = v
            .get("sealerActivity")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, n)| Some((k.parse().ok()?, n.as_u64()?)))
                    .collect()
            })
            .unwrap_or_default();
        self.metrics.on_clique_status(percent, &activity);
    }

    /// Every tick, without asking geth: ages as of now.
    fn on_tick(&self) {
        let now = now_ms();
        let head_time = self.status.borrow().chain.head_time;
        if let Some(ts) = head_time {
            self.metrics
                .on_head_age((now as f64 / 1000.0 - ts as f64).max(0.0));
        }
        self.metrics.on_signers(&self.tracker, now / 1000);
    }

    fn sample_process(&mut self) {
        let pid = self.status.borrow().pid;
        self.sampler.sample(pid, &self.metrics);
        if let Some(free) = process::free_bytes(&self.datadir) {
            self.metrics.datadir_free_bytes.set(free as i64);
        }
        if self.ticks % SIZE_EVERY == 0 {
            self.metrics
                .datadir_size_bytes
                .set(process::dir_size(&self.datadir) as i64);
        }
    }

    /// A head from the subscription. The next block on our record is counted
    /// from its header alone; anything else (gaps, reorgs) is walked over IPC.
    async fn on_header(
        &mut self,
        rpc: &GethRpc,
        header: alloy::rpc::types::Header,
    ) -> Result<(), RpcError> {
        self.head_seen = Some(Instant::now());
        let number = header.number;
        let follows = number.checked_sub(1).is_some_and(|parent| {
            self.tracker.highest() == Some(parent)
                && self.tracker.hash_at(parent) == Some(header.parent_hash)
        });
        if !follows || self.tracker.signers().is_empty() {
            return self.on_head(rpc, number).await;
        }
        // A vote (beneficiary set) may pass and change the signers.
        if !header.beneficiary.is_zero() {
            self.signers_due = true;
        }
        let facts = facts_from_header(rpc, &header).await?;
        if let Some(counted) = self.tracker.observe(&facts) {
            self.metrics.on_block(&facts, &counted);
        }
        self.publish_head(&facts);
        Ok(())
    }

    /// Counts every block up to `head` not counted yet (backfill, gaps, reorgs).
    async fn on_head(&mut self, rpc: &GethRpc, head: u64) -> Result<(), RpcError> {
        // Blocks walked here are not looked at for votes: read the signers again.
        self.signers_due = true;
        if self.tracker.signers().is_empty() {
            let signers: Vec<Address> = rpc.call("clique_getSigners", ()).await?;
            self.tracker.set_signers(signers);
        }
        let mut start = match self.tracker.highest() {
            Some(h) if head > h => h + 1,
            Some(_) => head,
            None => head.saturating_sub(BACKFILL - 1).max(1),
        };
        // Walk back while our record disagrees with the canonical chain.
        for _ in 0..MAX_REORG {
            let Some(parent) = start.checked_sub(1).filter(|p| *p >= 1) else {
                break;
            };
            let Some(recorded) = self.tracker.hash_at(parent) else {
                break;
            };
            if rpc.block(parent.into()).await?.header.hash == recorded {
                break;
            }
            start = parent;
        }
        let end = head.min(start + BACKFILL - 1);
        let mut last = None;
        for number in start..=end {
            if number == 0 {
                continue;
            }
            let facts = fetch(rpc, number).await?;
            if let Some(counted) = self.tracker.observe(&facts) {
                self.metrics.on_block(&facts, &counted);
            }
            last = Some(facts);
        }
        if let Some(head) = last {
            self.publish_head(&head);
        }
        Ok(())
    }

    /// The new head into the reports, metrics and status.
    fn publish_head(&self, head: &BlockFacts) {
        if let Some(heads) = &self.heads {
            let _ = heads.try_send(geth_wire::BlockReport {
                number: head.number,
                hash: format!("{:#x}", head.hash),
                parent_hash: format!("{:#x}", head.parent_hash),
                timestamp: head.timestamp,
                signer: Some(format!("{:#x}", head.signer)),
                difficulty: head.difficulty,
                transactions: head.transactions as u64,
                gas_used: head.gas_used,
                gas_limit: head.gas_limit,
                seen_at_ms: now_ms(),
            });
        }
        self.metrics.on_head(head);
        self.metrics.on_signers(&self.tracker, now_ms() / 1000);
        let hash = format!("{:#x}", head.hash);
        let (number, timestamp) = (head.number, head.timestamp);
        self.status.send_modify(|s| {
            s.chain.head = Some(number);
            s.chain.head_hash = Some(hash);
            s.chain.head_time = Some(timestamp);
            s.chain.answered_at_ms = Some(now_ms());
        });
    }
}

/// One batch, bounded in time: a geth that does not answer is reconnected to.
async fn answered(
    batch: &mut BatchConn,
    calls: &[BatchCall],
) -> Result<Vec<Result<Value, RpcError>>, RpcError> {
    tokio::time::timeout(ANSWER_TIMEOUT, batch.call(calls))
        .await
        .map_err(|_| RpcError::Call {
            method: "batch",
            reason: "timed out".into(),
        })?
}

fn next_answer(
    answers: &mut impl Iterator<Item = Result<Value, RpcError>>,
) -> Result<Value, RpcError> {
    answers.next().unwrap_or(Err(RpcError::Call {
        method: "batch",
        reason: "missing answer".into(),
    }))
}

async fn next<S: tokio_stream::Stream + Unpin>(stream: &mut Option<S>) -> Option<S::Item> {
    match stream {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

async fn fetch(rpc: &GethRpc, number: u64) -> Result<BlockFacts, RpcError> {
    let block = rpc.block(BlockNumberOrTag::Number(number)).await?;
    let signer = sealer(rpc, &block.header).await?;
    Ok(facts(&block.header, signer, block.transactions.len()))
}

fn facts(h: &alloy::rpc::types::Header, signer: Address, transactions: usize) -> BlockFacts {
    BlockFacts {
        number: h.number,
        hash: h.hash,
        parent_hash: h.parent_hash,
        timestamp: h.timestamp,
        difficulty: h.difficulty.saturating_to::<u64>(),
        signer,
        transactions,
        gas_used: h.gas_used,
        gas_limit: h.gas_limit,
        base_fee: h.base_fee_per_gas,
    }
}

/// A block's facts from its header: the transaction count is asked only when
/// the transactions root is not the empty one.
async fn facts_from_header(
    rpc: &GethRpc,
    h: &alloy::rpc::types::Header,
) -> Result<BlockFacts, RpcError> {
    let signer = sealer(rpc, h).await?;
    let transactions = if h.transactions_root == alloy::consensus::EMPTY_ROOT_HASH {
        0
    } else {
        let count: U64 = rpc
            .call(
                "eth_getBlockTransactionCountByHash",
                (format!("{:#x}", h.hash),),
            )
            .await?;
        count.to::<usize>()
    };
    Ok(facts(h, signer, transactions))
}

/// The block's sealer, recovered locally when the header we decoded hashes to
/// geth's hash (so every sealed field is as geth has it); else asked.
async fn sealer(rpc: &GethRpc, h: &alloy::rpc::types::Header) -> Result<Address, RpcError> {
    if h.inner.hash_slow() == h.hash {
        if let Some(signer) = recover_sealer(&h.inner) {
            return Ok(signer);
        }
    }
    rpc.call("clique_getSigner", (format!("{:#x}", h.hash),))
        .await
}

/// Canonical hashes by height as of the newest head, for whoever needs the
/// hash at a recent height without asking geth (the reporter's check against
/// the fleet's reference block). Each head names its own hash and its
/// parent's; a head whose parent is not the one on record (a reorg, or heads
/// missed) leaves only what it vouches for itself.
#[derive(Debug, Default)]
pub struct RecentHashes {
    by_number: std::collections::BTreeMap<u64, String>,
}

impl RecentHashes {
    const KEEP: usize = 128;

    pub fn record(&mut self, head: &geth_wire::BlockReport) {
        // Heights from the new head up belong to another branch now.
        self.by_number.split_off(&head.number);
        if let Some(parent) = head.number.checked_sub(1) {
            if self.by_number.get(&parent) != Some(&head.parent_hash) {
                self.by_number.clear();
            }
            self.by_number.insert(parent, head.parent_hash.clone());
        }
        self.by_number.insert(head.number, head.hash.clone());
        while self.by_number.len() > Self::KEEP {
            self.by_number.pop_first();
        }
    }

    pub fn get(&self, number: u64) -> Option<&str> {
        self.by_number.get(&number).map(String::as_str)
    }
}

/// `eth_syncing` is `false` or an object of hex quantities.
pub fn parse_syncing(value: &Value) -> (bool, Option<u64>) {
    match value {
        Value::Object(fields) => {
            let highest = fields
                .get("highestBlock")
                .and_then(Value::as_str)
                .and_then(|h| u64::from_str_radix(h.trim_start_matches("0x"), 16).ok());
            (true, highest)
        }
        _ => (false, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `plan` with everything quiet on a steady chain: both subscriptions
    /// live, a head within the last second, not syncing, peers read.
    fn steady(tick: u64) -> Ask {
        plan(tick, true, false, false, true, false, true, false)
    }

    #[test]
    fn a_steady_chain_asks_only_every_five_seconds() {
        for tick in 1..SLOW_EVERY {
            assert_eq!(steady(tick), Ask::default(), "tick {tick}");
        }
        let five = steady(SLOW_EVERY);
        assert!(five.slow && !five.per_block && !five.signers && !five.chain && !five.peers);
        let fifteen = steady(PER_BLOCK_EVERY);
        assert!(fifteen.per_block && fifteen.signers);
        assert!(
            steady(PEERS_EVERY).peers,
            "peers are read again now and then"
        );
        // Values that change with a block only when a block came since the last read.
        let still = plan(
            PER_BLOCK_EVERY,
            true,
            false,
            false,
            true,
            false,
            false,
            false,
        );
        assert!(still.slow && !still.per_block && !still.signers);
        // A block with a vote: signers at the next tick.
        let vote = plan(1, true, false, false, true, false, true, true);
        assert!(vote.signers && !vote.per_block);
    }

    #[test]
    fn head_and_sync_state_are_asked_each_second_when_heads_do_not_come() {
        for tick in 1..=SLOW_EVERY {
            // No head for a second, no head subscription, or syncing.
            assert!(plan(tick, true, true, false, true, false, false, false).chain);
            assert!(plan(tick, false, false, false, true, false, false, false).chain);
            assert!(plan(tick, true, false, true, true, false, false, false).chain);
        }
    }

    #[test]
    fn peers_are_asked_each_second_without_peer_events_or_after_one() {
        for tick in 1..=SLOW_EVERY {
            assert!(plan(tick, true, false, false, false, false, false, false).peers);
            assert!(plan(tick, true, false, false, true, true, false, false).peers);
        }
    }

    fn report(number: u64, hash: &str, parent: &str) -> geth_wire::BlockReport {
        geth_wire::BlockReport {
            number,
            hash: hash.into(),
            parent_hash: parent.into(),
            timestamp: 0,
            signer: None,
            difficulty: 2,
            transactions: 0,
            gas_used: 0,
            gas_limit: 0,
            seen_at_ms: 0,
        }
    }

    #[test]
    fn recent_hashes_follow_the_newest_head_through_reorgs_and_gaps() {
        let mut r = RecentHashes::default();
        r.record(&report(5, "a5", "a4"));
        r.record(&report(6, "a6", "a5"));
        r.record(&report(7, "a7", "a6"));
        assert_eq!(
            (r.get(4), r.get(6), r.get(7)),
            (Some("a4"), Some("a6"), Some("a7"))
        );
        // A reorg to another block 7 on the same 6 keeps 6 and below.
        r.record(&report(7, "b7", "a6"));
        assert_eq!((r.get(5), r.get(7)), (Some("a5"), Some("b7")));
        // A head on another parent: only it and its parent are vouched for.
        r.record(&report(8, "c8", "c7"));
        assert_eq!((r.get(5), r.get(6)), (None, None));
        assert_eq!((r.get(7), r.get(8)), (Some("c7"), Some("c8")));
        // A shorter branch drops the heights above it.
        r.record(&report(6, "d6", "a5"));
        assert_eq!((r.get(7), r.get(8), r.get(6)), (None, None, Some("d6")));
        // Heads missed (a gap): nothing below the new parent is kept.
        r.record(&report(10, "d10", "d9"));
        assert_eq!((r.get(6), r.get(9)), (None, Some("d9")));
        for n in 11..400 {
            let (h, p) = (format!("d{n}"), format!("d{}", n - 1));
            r.record(&report(n, &h, &p));
        }
        assert!(r.by_number.len() <= RecentHashes::KEEP);
        assert_eq!(r.get(399), Some("d399"));
    }

    #[test]
    fn syncing_shapes() {
        assert_eq!(parse_syncing(&Value::Bool(false)), (false, None));
        let obj = serde_json::json!({"currentBlock": "0x5", "highestBlock": "0x20"});
        assert_eq!(parse_syncing(&obj), (true, Some(32)));
        let bad = serde_json::json!({"highestBlock": "zz"});
        assert_eq!(parse_syncing(&bad), (true, None));
    }
}
