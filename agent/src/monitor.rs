//! Chain monitor: follows geth over IPC — a `newHeads` subscription for blocks,
//! a 1 s poll for peers and sync state, a 5 s poll for the pool, sealing state
//! and the process — and publishes into the node status and the metrics.
//! Nothing else calls geth for these values; scrapes and probes only read.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, U64};
use alloy::providers::Provider;
use serde_json::Value;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::metrics::process::{self, ProcessSampler};
use crate::metrics::sealing::{BlockFacts, SealingTracker};
use crate::metrics::Metrics;
use crate::rpc::{GethRpc, RpcError};
use crate::status::{now_ms, NodeStatus};

const FAST_POLL: Duration = Duration::from_secs(1);
/// Slow poll every this many fast ones.
const SLOW_EVERY: u64 = 5;
/// Datadir size (a folder walk) every this many fast polls.
const SIZE_EVERY: u64 = 60;
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
    client_version: Option<String>,
    ticks: u64,
    /// New heads for the aggregator reporter, if one runs.
    pub heads: Option<tokio::sync::mpsc::Sender<geth_wire::BlockReport>>,
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
            client_version: None,
            ticks: 0,
            heads: None,
        }
    }

    /// Follows geth until `cancel` fires, reconnecting whenever geth restarts.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(FAST_POLL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let rpc = loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                self.sample_process();
                if self.ipc.exists() {
                    if let Ok(rpc) = GethRpc::connect(&self.ipc).await {
                        break rpc;
                    }
                }
            };
            self.client_version = None;
            if let Err(e) = self.follow(&rpc, &mut ticker, &cancel).await {
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
        ticker: &mut tokio::time::Interval,
        cancel: &CancellationToken,
    ) -> Result<(), RpcError> {
        let mut heads = match rpc.provider().subscribe_blocks().await {
            Ok(sub) => Some(sub.into_stream()),
            Err(e) => {
                tracing::debug!(error = %e, "no newHeads subscription; polling only");
                None
            }
        };
        self.slow_poll(rpc).await?;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                header = next(&mut heads) => match header {
                    Some(header) => self.on_head(rpc, header.number).await?,
                    None => heads = None,
                },
                _ = ticker.tick() => {
                    self.ticks += 1;
                    tokio::time::timeout(FAST_POLL * 5, self.fast_poll(rpc))
                        .await
                        .map_err(|_| RpcError::Call { method: "poll", reason: "timed out".into() })??;
                    if self.ticks % SLOW_EVERY == 0 {
                        self.slow_poll(rpc).await?;
                    }
                }
            }
        }
    }

    /// Head, peers, sync state: what readiness needs.
    async fn fast_poll(&mut self, rpc: &GethRpc) -> Result<(), RpcError> {
        let head = rpc.block_number().await?;
        if self.tracker.highest() != Some(head) {
            self.on_head(rpc, head).await?;
        }
        let peers: Vec<Value> = rpc.call("admin_peers", ()).await?;
        let inbound = peers
            .iter()
            .filter(|p| p.pointer("/network/inbound") == Some(&Value::Bool(true)))
            .count() as u64;
        let syncing: Value = rpc.call("eth_syncing", ()).await?;
        let (syncing, highest_block) = parse_syncing(&syncing);
        let now = now_ms();
        self.metrics.on_peers(inbound, peers.len() as u64 - inbound);
        self.metrics.on_syncing(syncing);
        self.status.send_modify(|s| {
            s.chain.peers = Some(peers.len() as u64);
            s.chain.syncing = Some(syncing);
            s.chain.highest_block = highest_block;
            s.chain.answered_at_ms = Some(now);
        });
        let head_time = self.status.borrow().chain.head_time;
        if let Some(ts) = head_time {
            self.metrics
                .on_head_age((now as f64 / 1000.0 - ts as f64).max(0.0));
        }
        self.metrics.on_signers(&self.tracker, now / 1000);
        Ok(())
    }

    /// Pool, sealing state, client version, process and disk.
    async fn slow_poll(&mut self, rpc: &GethRpc) -> Result<(), RpcError> {
        let pool: HashMap<String, U64> = rpc.call("txpool_status", ()).await?;
        let get = |k: &str| pool.get(k).map_or(0, |v| v.to::<u64>());
        self.metrics.on_txpool(get("pending"), get("queued"));
        let mining = rpc.mining().await?;
        self.metrics.on_mining(mining);
        // What wallets are told to pay: read back, not assumed (docs/GAS.md).
        let advised = crate::startup::suggested_gas_price(rpc).await?;
        self.metrics.on_gas_price_suggested(advised);
        self.status
            .send_if_modified(|s| s.suggested_gas_price_wei.replace(advised) != Some(advised));
        let signers: Vec<Address> = rpc.call("clique_getSigners", ()).await?;
        self.tracker.set_signers(signers.clone());
        self.status.send_modify(|s| {
            s.mining = Some(mining);
            s.pending = Some(get("pending"));
            s.queued = Some(get("queued"));
            s.is_signer = s.signer.map(|me| signers.contains(&me));
            s.signers = Some(signers.clone());
        });
        let votes: HashMap<Address, bool> = rpc.call("clique_proposals", ()).await?;
        self.metrics.on_votes(votes.len());
        // clique_status fails at heads 0 and 1 (NaN, underflow).
        if self.tracker.highest().unwrap_or(0) >= 2 {
            match rpc.call::<_, Value>("clique_status", ()).await {
                Ok(v) => {
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
                Err(e) => tracing::debug!(error = %e, "clique_status"),
            }
        }
        if self.client_version.is_none() {
            let version: String = rpc.call("web3_clientVersion", ()).await?;
            self.metrics.on_client_version(&version);
            let info: Value = rpc.call("admin_nodeInfo", ()).await?;
            let enode = info.get("enode").and_then(Value::as_str).map(str::to_owned);
            let client = version.clone();
            self.status.send_modify(|s| {
                s.client = Some(client);
                s.enode = enode;
            });
            self.client_version = Some(version);
        }
        self.sample_process();
        Ok(())
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

    /// Counts every block up to `head` not counted yet (backfill, gaps, reorgs).
    async fn on_head(&mut self, rpc: &GethRpc, head: u64) -> Result<(), RpcError> {
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
            self.metrics.on_head(&head);
            self.metrics.on_signers(&self.tracker, now_ms() / 1000);
            let hash = format!("{:#x}", head.hash);
            self.status.send_modify(|s| {
                s.chain.head = Some(head.number);
                s.chain.head_hash = Some(hash);
                s.chain.head_time = Some(head.timestamp);
                s.chain.answered_at_ms = Some(now_ms());
            });
        }
        Ok(())
    }
}

async fn next<S: tokio_stream::Stream + Unpin>(stream: &mut Option<S>) -> Option<S::Item> {
    match stream {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

async fn fetch(rpc: &GethRpc, number: u64) -> Result<BlockFacts, RpcError> {
    let block = rpc.block(BlockNumberOrTag::Number(number)).await?;
    let h = &block.header;
    let signer: Address = rpc
        .call("clique_getSigner", (format!("{:#x}", h.hash),))
        .await?;
    Ok(BlockFacts {
        number: h.number,
        hash: h.hash,
        parent_hash: h.parent_hash,
        timestamp: h.timestamp,
        difficulty: h.difficulty.saturating_to::<u64>(),
        signer,
        transactions: block.transactions.len(),
        gas_used: h.gas_used,
        gas_limit: h.gas_limit,
        base_fee: h.base_fee_per_gas,
    })
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

    #[test]
    fn syncing_shapes() {
        assert_eq!(parse_syncing(&Value::Bool(false)), (false, None));
        let obj = serde_json::json!({"currentBlock": "0x5", "highestBlock": "0x20"});
        assert_eq!(parse_syncing(&obj), (true, Some(32)));
        let bad = serde_json::json!({"highestBlock": "zz"});
        assert_eq!(parse_syncing(&bad), (true, None));
    }
}
