//! Prometheus metrics of one clique node, prefix `clique_` (see docs/METRICS.md).
//! Values are set by the agent's own loops (chain monitor, supervisor status,
//! process sampler); a scrape only encodes them and never calls geth.

pub mod process;
pub mod sealing;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy::primitives::Address;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::readiness::{self, Readiness, ReadinessConfig};
use crate::status::{now_ms, NodeStatus};
use sealing::{BlockFacts, Counted};

/// Every metric the agent exports.
pub struct Metrics {
    registry: Registry,
    me: Option<Address>,
    // chain
    head_block: IntGauge,
    head_timestamp_seconds: IntGauge,
    head_age_seconds: Gauge,
    block_period_seconds: IntGauge,
    block_interval_seconds: Histogram,
    block_transactions: Histogram,
    block_gas_used: Histogram,
    gas_limit: IntGauge,
    base_fee_wei: LazyGauge,
    // sealing
    signers: IntGauge,
    is_signer: IntGauge,
    mining: IntGauge,
    pending_votes: IntGauge,
    signer_sealed_blocks: IntCounterVec,
    node_sealed_blocks: IntCounterVec,
    signer_missed_turns: IntCounterVec,
    signer_consecutive_missed_turns: IntGaugeVec,
    signer_last_sealed_block: IntGaugeVec,
    signer_last_sealed_timestamp: IntGaugeVec,
    signer_last_sealed_age: GaugeVec,
    replaced_blocks: IntCounter,
    history_rewrites: IntCounter,
    history_rewrite_depth: IntGauge,
    /// Depth from which a replaced block counts as rewritten history.
    rewrite_confirmations: std::sync::atomic::AtomicU64,
    inturn_ratio: Gauge,
    signer_recent_blocks: IntGaugeVec,
    // network
    peers: IntGaugeVec,
    syncing: IntGauge,
    ready: IntGauge,
    readiness_condition: IntGaugeVec,
    // txpool
    txpool_transactions: IntGaugeVec,
    // geth process
    pub(crate) geth_up: IntGauge,
    pub(crate) geth_cpu_seconds: prometheus::Counter,
    pub(crate) geth_resident_memory_bytes: IntGauge,
    pub(crate) geth_open_fds: IntGauge,
    pub(crate) geth_threads: IntGauge,
    geth_info: IntGaugeVec,
    pub(crate) datadir_size_bytes: IntGauge,
    pub(crate) datadir_free_bytes: IntGauge,
    // lifecycle
    shutdowns: IntCounterVec,
    blocks_lost: IntCounter,
    geth_starts: IntCounter,
    geth_restarts: IntCounter,
    genesis_mismatch: IntGauge,
    last_shutdown_clean: LazyGauge,
    // agent
    ipc_requests: IntCounter,
    ipc_calls: IntCounterVec,
    ipc_connections: IntCounter,
    report_failures: IntCounter,
    replies_rejected: IntCounterVec,
    spool_depth: IntGauge,
    events_truncated: IntCounter,
    events_rejected: IntCounter,
    // gas price
    gas_price_floor_wei: LazyGauge,
    gas_price_set_failures: IntCounter,
    gas_price_suggested_wei: LazyGauge,
    stall_redials: IntCounter,
    seen: Mutex<StatusCounters>,
}

/// A gauge that appears only once it has a value (a 0 would be a lie).
struct LazyGauge {
    registry: Registry,
    name: &'static str,
    help: &'static str,
    gauge: Mutex<Option<IntGauge>>,
}

impl LazyGauge {
    fn new(registry: &Registry, name: &'static str, help: &'static str) -> Self {
        Self {
            registry: registry.clone(),
            name,
            help,
            gauge: Mutex::new(None),
        }
    }

    fn set(&self, value: i64) {
        let mut slot = self.gauge.lock().unwrap_or_else(|e| e.into_inner());
        slot.get_or_insert_with(|| gauge(&self.registry, self.name, self.help))
            .set(value);
    }
}

/// Cumulative status values already turned into counter increments.
#[derive(Debug, Default)]
struct StatusCounters {
    starts: u64,
    restarts: u64,
    clean: u64,
    unclean: u64,
    blocks_lost: u64,
    gas_price_set_failures: u64,
    stall_redials: u64,
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let m = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(m.clone())).expect("unique metric");
    m
}

fn fgauge(r: &Registry, name: &str, help: &str) -> Gauge {
    let m = Gauge::new(name, help).expect("valid metric");
    r.register(Box::new(m.clone())).expect("unique metric");
    m
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let m = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(m.clone())).expect("unique metric");
    m
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let m = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(m.clone())).expect("unique metric");
    m
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let m = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(m.clone())).expect("unique metric");
    m
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let m = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("valid metric");
    r.register(Box::new(m.clone())).expect("unique metric");
    m
}

fn addr(a: &Address) -> String {
    format!("{a:#x}")
}

impl Metrics {
    /// `me`: this node's signer account, if it is configured as one.
    /// From the agent's `rewrite_confirmations`.
    pub fn set_rewrite_confirmations(&self, blocks: u64) {
        self.rewrite_confirmations
            .store(blocks, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn new(me: Option<Address>) -> Self {
        let r = Registry::new();
        let m = Self {
            head_block: gauge(&r, "clique_head_block", "Number of the node's head block."),
            head_timestamp_seconds: gauge(
                &r,
                "clique_head_timestamp_seconds",
                "Timestamp of the head block (Unix seconds).",
            ),
            head_age_seconds: fgauge(
                &r,
                "clique_head_age_seconds",
                "Seconds since the head block's timestamp, as of the last poll.",
            ),
            block_period_seconds: gauge(
                &r,
                "clique_block_period_seconds",
                "Clique block period from the genesis (0: blocks only with transactions).",
            ),
            block_interval_seconds: histogram(
                &r,
                "clique_block_interval_seconds",
                "Seconds between a block and its parent.",
                vec![0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0],
            ),
            block_transactions: histogram(
                &r,
                "clique_block_transactions",
                "Transactions per block.",
                vec![0.0, 1.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0],
            ),
            block_gas_used: histogram(
                &r,
                "clique_block_gas_used",
                "Gas used per block.",
                vec![0.0, 21_000.0, 100_000.0, 1e6, 5e6, 1e7, 3e7],
            ),
            gas_limit: gauge(&r, "clique_block_gas_limit", "Gas limit of the head block."),
            base_fee_wei: LazyGauge::new(
                &r,
                "clique_block_base_fee_wei",
                "Base fee of the head block (London chains only).",
            ),
            signers: gauge(&r, "clique_signers", "Number of authorised clique signers."),
            is_signer: gauge(
                &r,
                "clique_node_is_signer",
                "1 if this node's account is an authorised signer.",
            ),
            mining: gauge(
                &r,
                "clique_node_mining",
                "1 if geth is sealing (eth_mining).",
            ),
            pending_votes: gauge(
                &r,
                "clique_pending_votes",
                "Clique votes this node proposes (clique_proposals).",
            ),
            signer_sealed_blocks: counter_vec(
                &r,
                "clique_signer_sealed_blocks_total",
                "Blocks sealed by each signer, as this node saw them.",
                &["signer", "turn"],
            ),
            node_sealed_blocks: counter_vec(
                &r,
                "clique_node_sealed_blocks_total",
                "Blocks sealed by this node's signer.",
                &["turn"],
            ),
            signer_missed_turns: counter_vec(
                &r,
                "clique_signer_missed_turns_total",
                "Slots whose in-turn signer did not seal them.",
                &["signer"],
            ),
            signer_consecutive_missed_turns: gauge_vec(
                &r,
                "clique_signer_consecutive_missed_turns",
                "Turns a signer missed since it last sealed.",
                &["signer"],
            ),
            signer_last_sealed_block: gauge_vec(
                &r,
                "clique_signer_last_sealed_block",
                "Last block sealed by each signer.",
                &["signer"],
            ),
            signer_last_sealed_timestamp: gauge_vec(
                &r,
                "clique_signer_last_sealed_timestamp_seconds",
                "Timestamp of the last block sealed by each signer.",
                &["signer"],
            ),
            signer_last_sealed_age: GaugeVec::new(
                Opts::new(
                    "clique_signer_last_sealed_age_seconds",
                    "Seconds since each signer last sealed, as of the last poll.",
                ),
                &["signer"],
            )
            .expect("valid metric"),
            replaced_blocks: counter(
                &r,
                "clique_replaced_blocks_total",
                "Counted blocks later replaced by a reorg (the replaced block and those counted above it).",
            ),
            history_rewrites: counter(
                &r,
                "clique_history_rewrites_total",
                "Reorgs that replaced a block with at least rewrite_confirmations blocks \
                 built on it: rewritten history.",
            ),
            history_rewrite_depth: gauge(
                &r,
                "clique_history_rewrite_depth_blocks",
                "Depth of the deepest rewritten block seen since the agent started (0: none).",
            ),
            rewrite_confirmations: std::sync::atomic::AtomicU64::new(
                crate::config::DEFAULT_REWRITE_CONFIRMATIONS,
            ),
            inturn_ratio: fgauge(
                &r,
                "clique_inturn_ratio",
                "Share of the last 64 blocks sealed in turn (clique_status).",
            ),
            signer_recent_blocks: gauge_vec(
                &r,
                "clique_signer_recent_blocks",
                "Blocks each signer sealed among the last 64 (clique_status).",
                &["signer"],
            ),
            peers: gauge_vec(&r, "clique_peers", "Connected peers.", &["direction"]),
            syncing: gauge(&r, "clique_syncing", "1 while geth is syncing."),
            ready: gauge(&r, "clique_ready", "1 when /readyz is ready."),
            readiness_condition: gauge_vec(
                &r,
                "clique_readiness_condition",
                "1 when the readiness condition holds.",
                &["condition"],
            ),
            txpool_transactions: gauge_vec(
                &r,
                "clique_txpool_transactions",
                "Transactions in geth's pool.",
                &["state"],
            ),
            geth_up: gauge(&r, "clique_geth_up", "1 while the geth process runs."),
            geth_cpu_seconds: {
                let m = prometheus::Counter::new(
                    "clique_geth_cpu_seconds_total",
                    "CPU time used by geth processes (user + system).",
                )
                .expect("valid metric");
                r.register(Box::new(m.clone())).expect("unique metric");
                m
            },
            geth_resident_memory_bytes: gauge(
                &r,
                "clique_geth_resident_memory_bytes",
                "Resident memory of the geth process.",
            ),
            geth_open_fds: gauge(
                &r,
                "clique_geth_open_fds",
                "Open file descriptors of the geth process.",
            ),
            geth_threads: gauge(&r, "clique_geth_threads", "Threads of the geth process."),
            geth_info: gauge_vec(
                &r,
                "clique_geth_info",
                "geth's client version (web3_clientVersion), value 1.",
                &["version"],
            ),
            datadir_size_bytes: gauge(&r, "clique_datadir_size_bytes", "Size of geth's datadir."),
            datadir_free_bytes: gauge(
                &r,
                "clique_datadir_free_bytes",
                "Free space on the datadir's file system (for unprivileged users).",
            ),
            shutdowns: counter_vec(
                &r,
                "clique_shutdowns_total",
                "geth shutdowns, by the agent's verdict.",
                &["result"],
            ),
            blocks_lost: counter(
                &r,
                "clique_blocks_lost_total",
                "Blocks geth lost to unclean shutdowns.",
            ),
            geth_starts: counter(
                &r,
                "clique_geth_starts_total",
                "geth processes started or attached.",
            ),
            geth_restarts: counter(
                &r,
                "clique_geth_restarts_total",
                "geth processes after the first.",
            ),
            genesis_mismatch: gauge(
                &r,
                "clique_genesis_mismatch",
                "1 if the datadir holds another genesis than configured.",
            ),
            last_shutdown_clean: LazyGauge::new(
                &r,
                "clique_last_shutdown_clean",
                "1 if the last shutdown was proven clean, 0 if not; absent before the first.",
            ),
            ipc_requests: counter(
                &r,
                "clique_agent_ipc_requests_total",
                "JSON-RPC requests the agent made to geth.",
            ),
            ipc_calls: counter_vec(
                &r,
                "clique_agent_ipc_calls_total",
                "JSON-RPC requests the agent made to geth, by method.",
                &["method"],
            ),
            ipc_connections: counter(
                &r,
                "clique_agent_ipc_connections_total",
                "IPC connections the agent opened to geth.",
            ),
            report_failures: counter(
                &r,
                "clique_agent_report_failures_total",
                "Reports the aggregator did not accept (network errors, refusals).",
            ),
            replies_rejected: counter_vec(
                &r,
                "clique_agent_aggregator_replies_rejected_total",
                "Aggregator replies ignored because their signature was missing, \
                 malformed or not the aggregator's for this request.",
                &["reason"],
            ),
            spool_depth: gauge(
                &r,
                "clique_agent_event_spool_depth",
                "Lifecycle events waiting for the aggregator's acknowledgement.",
            ),
            events_truncated: counter(
                &r,
                "clique_agent_events_truncated_total",
                "Lifecycle events shortened to the size bound when recorded.",
            ),
            events_rejected: counter(
                &r,
                "clique_agent_events_rejected_total",
                "Lifecycle events the aggregator refused, set aside in the spool's rejected/ folder.",
            ),
            gas_price_floor_wei: LazyGauge::new(
                &r,
                "clique_gas_price_floor_wei",
                "Gas price floor geth's pool and miner enforce (wei), as applied with miner_setGasPrice; absent until applied.",
            ),
            gas_price_set_failures: counter(
                &r,
                "clique_agent_gas_price_set_failures_total",
                "Failed miner_setGasPrice calls (retried until one succeeds).",
            ),
            gas_price_suggested_wei: LazyGauge::new(
                &r,
                "clique_gas_price_suggested_wei",
                "Gas price geth advises wallets (eth_gasPrice, wei).",
            ),
            stall_redials: counter(
                &r,
                "clique_agent_stall_redials_total",
                "Times this signer re-dialled its peers because the chain stood still with peers connected (a clique wedge after signers started together).",
            ),
            registry: r,
            me,
            seen: Mutex::new(StatusCounters::default()),
        };
        m.registry
            .register(Box::new(m.signer_last_sealed_age.clone()))
            .expect("unique metric");
        m.is_signer.set(0);
        for turn in ["in", "out"] {
            m.node_sealed_blocks.with_label_values(&[turn]);
        }
        for result in ["clean", "unclean"] {
            m.shutdowns.with_label_values(&[result]);
        }
        let build = gauge_vec(
            &m.registry,
            "clique_agent_build_info",
            "geth-agent version, value 1.",
            &["version"],
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        m
    }

    /// Prometheus text format.
    pub fn encode(&self) -> String {
        let made = crate::rpc::requests_made();
        let counted = self.ipc_requests.get();
        if made > counted {
            self.ipc_requests.inc_by(made - counted);
        }
        for (method, made) in crate::rpc::requests_by_method() {
            let series = self.ipc_calls.with_label_values(&[method]);
            let counted = series.get();
            if made > counted {
                series.inc_by(made - counted);
            }
        }
        let (made, counted) = (crate::rpc::connections_made(), self.ipc_connections.get());
        if made > counted {
            self.ipc_connections.inc_by(made - counted);
        }
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }

    /// A newly counted canonical block.
    pub fn on_block(&self, block: &BlockFacts, counted: &Counted) {
        let turn = if counted.in_turn { "in" } else { "out" };
        self.signer_sealed_blocks
            .with_label_values(&[&addr(&counted.signer), turn])
            .inc();
        if self.me == Some(counted.signer) {
            self.node_sealed_blocks.with_label_values(&[turn]).inc();
        }
        if let Some(missed) = counted.missed_by {
            self.signer_missed_turns
                .with_label_values(&[&addr(&missed)])
                .inc();
        }
        self.replaced_blocks.inc_by(counted.replaced_blocks);
        let confirmations = self
            .rewrite_confirmations
            .load(std::sync::atomic::Ordering::Relaxed);
        if let Some(depth) = counted.replaced_depth.filter(|d| *d >= confirmations) {
            tracing::error!(
                block = block.number,
                hash = %block.hash,
                depth,
                "history rewritten: a block {depth} deep was replaced"
            );
            self.history_rewrites.inc();
            if depth as i64 > self.history_rewrite_depth.get() {
                self.history_rewrite_depth.set(depth as i64);
            }
        }
        if let Some(interval) = counted.interval {
            self.block_interval_seconds.observe(interval as f64);
        }
        self.block_transactions.observe(block.transactions as f64);
        self.block_gas_used.observe(block.gas_used as f64);
    }

    /// The head block (also for blocks already counted).
    pub fn on_head(&self, block: &BlockFacts) {
        self.head_block.set(block.number as i64);
        self.head_timestamp_seconds.set(block.timestamp as i64);
        self.gas_limit.set(block.gas_limit as i64);
        if let Some(fee) = block.base_fee {
            self.base_fee_wei.set(fee as i64);
        }
    }

    /// Per-signer sealing state from the tracker, refreshed every poll.
    pub fn on_signers(&self, tracker: &sealing::SealingTracker, now_s: u64) {
        let signers = tracker.signers();
        self.signers.set(signers.len() as i64);
        self.is_signer
            .set(i64::from(self.me.is_some_and(|me| signers.contains(&me))));
        for signer in signers {
            let label = addr(signer);
            self.signer_missed_turns.with_label_values(&[&label]);
            self.signer_consecutive_missed_turns
                .with_label_values(&[&label])
                .set(tracker.consecutive_missed(signer) as i64);
            if let Some((number, ts)) = tracker.last_sealed(signer) {
                self.signer_last_sealed_block
                    .with_label_values(&[&label])
                    .set(number as i64);
                self.signer_last_sealed_timestamp
                    .with_label_values(&[&label])
                    .set(ts as i64);
                self.signer_last_sealed_age
                    .with_label_values(&[&label])
                    .set(now_s.saturating_sub(ts) as f64);
            }
        }
    }

    pub fn on_report_failure(&self) {
        self.report_failures.inc();
    }

    pub fn on_event_truncated(&self) {
        self.events_truncated.inc();
    }

    pub fn on_event_rejected(&self) {
        self.events_rejected.inc();
    }

    pub fn on_gas_price_floor(&self, wei: u64) {
        self.gas_price_floor_wei
            .set(i64::try_from(wei).unwrap_or(i64::MAX));
    }

    pub fn on_gas_price_suggested(&self, wei: u64) {
        self.gas_price_suggested_wei
            .set(i64::try_from(wei).unwrap_or(i64::MAX));
    }

    /// An aggregator reply was ignored; `reason` is `unsigned`, `malformed` or `foreign`.
    pub fn on_reply_rejected(&self, reason: &str) {
        self.replies_rejected.with_label_values(&[reason]).inc();
    }

    pub fn on_spool_depth(&self, depth: usize) {
        self.spool_depth.set(depth as i64);
    }

    pub fn on_head_age(&self, age_s: f64) {
        self.head_age_seconds.set(age_s);
    }

    pub fn on_peers(&self, inbound: u64, outbound: u64) {
        self.peers
            .with_label_values(&["inbound"])
            .set(inbound as i64);
        self.peers
            .with_label_values(&["outbound"])
            .set(outbound as i64);
    }

    pub fn on_syncing(&self, syncing: bool) {
        self.syncing.set(i64::from(syncing));
    }

    pub fn on_txpool(&self, pending: u64, queued: u64) {
        self.txpool_transactions
            .with_label_values(&["pending"])
            .set(pending as i64);
        self.txpool_transactions
            .with_label_values(&["queued"])
            .set(queued as i64);
    }

    pub fn on_mining(&self, mining: bool) {
        self.mining.set(i64::from(mining));
    }

    pub fn on_votes(&self, votes: usize) {
        self.pending_votes.set(votes as i64);
    }

    pub fn on_clique_status(&self, inturn_percent: f64, activity: &[(Address, u64)]) {
        self.inturn_ratio.set(inturn_percent / 100.0);
        self.signer_recent_blocks.reset();
        for (signer, blocks) in activity {
            self.signer_recent_blocks
                .with_label_values(&[&addr(signer)])
                .set(*blocks as i64);
        }
    }

    pub fn on_client_version(&self, version: &str) {
        self.geth_info.reset();
        self.geth_info.with_label_values(&[version]).set(1);
    }

    /// Lifecycle counters and readiness, from the published status.
    pub fn on_status(&self, status: &NodeStatus, readiness: &Readiness) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let bump = |counter: &IntCounter, last: &mut u64, now: u64| {
            counter.inc_by(now.saturating_sub(*last));
            *last = now;
        };
        bump(&self.geth_starts, &mut seen.starts, status.starts);
        bump(&self.geth_restarts, &mut seen.restarts, status.restarts);
        bump(
            &self.blocks_lost,
            &mut seen.blocks_lost,
            status.blocks_lost_total,
        );
        bump(
            &self.gas_price_set_failures,
            &mut seen.gas_price_set_failures,
            status.gas_price_set_failures,
        );
        bump(
            &self.stall_redials,
            &mut seen.stall_redials,
            status.stall_redials,
        );
        if let Some(wei) = status.gas_price_floor_wei {
            self.on_gas_price_floor(wei);
        }
        if let Some(wei) = status.suggested_gas_price_wei {
            self.on_gas_price_suggested(wei);
        }
        let clean = self.shutdowns.with_label_values(&["clean"]);
        bump(&clean, &mut seen.clean, status.clean_shutdowns);
        let unclean = self.shutdowns.with_label_values(&["unclean"]);
        bump(&unclean, &mut seen.unclean, status.unclean_shutdowns);
        self.genesis_mismatch
            .set(i64::from(status.genesis_mismatch));
        self.block_period_seconds.set(status.period as i64);
        if let Some(v) = &status.last_shutdown {
            self.last_shutdown_clean.set(i64::from(v.clean));
        }
        self.geth_up.set(i64::from(status.pid.is_some()));
        self.ready.set(i64::from(readiness.ready));
        for c in &readiness.conditions {
            self.readiness_condition
                .with_label_values(&[&c.name])
                .set(i64::from(c.ok));
        }
    }
}

/// Keeps lifecycle and readiness metrics current: on every status change and
/// every second (readiness depends on time).
pub async fn follow_status(
    metrics: Arc<Metrics>,
    mut status: watch::Receiver<NodeStatus>,
    config: ReadinessConfig,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = status.changed() => if changed.is_err() { return },
            _ = tick.tick() => {}
        }
        let current = status.borrow_and_update().clone();
        let ready = readiness::evaluate(&current, &config, current.reference_head, now_ms());
        metrics.on_status(&current, &ready);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::B256;

    /// Every `clique_*` name used by the dashboard and the alert rules exists.
    #[test]
    fn dashboard_and_alerts_use_only_exported_metrics() {
        // Touch every family so that labelled ones have a series.
        let signer = Address::repeat_byte(1);
        let m = Metrics::new(Some(signer));
        let block = BlockFacts {
            number: 2,
            hash: B256::ZERO,
            parent_hash: B256::ZERO,
            timestamp: 10,
            difficulty: 1,
            signer,
            transactions: 0,
            gas_used: 0,
            gas_limit: 1,
            base_fee: None,
        };
        let counted = Counted {
            signer,
            in_turn: false,
            missed_by: Some(signer),
            replaced: None,
            replaced_depth: None,
            replaced_blocks: 0,
            interval: Some(1),
        };
        m.on_block(&block, &counted);
        let mut tracker = sealing::SealingTracker::default();
        tracker.set_signers(vec![signer]);
        tracker.observe(&block);
        m.on_signers(&tracker, 20);
        m.on_clique_status(50.0, &[(signer, 1)]);
        m.on_peers(1, 1);
        m.on_txpool(0, 0);
        m.on_client_version("Geth/v1.13.15");
        let ready = Readiness {
            ready: true,
            conditions: vec![crate::readiness::Condition {
                name: "peers".into(),
                ok: true,
                value: String::new(),
                want: String::new(),
            }],
        };
        m.on_status(
            &NodeStatus::new("n".into(), crate::status::Mode::Spawn, 1),
            &ready,
        );
        let exported = m.encode();
        let mut known: Vec<String> = exported
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect();
        // Lazily registered and histogram series.
        known.push("clique_last_shutdown_clean".into());
        known.push("clique_block_base_fee_wei".into());
        known.push("clique_gas_price_floor_wei".into());
        known.push("clique_gas_price_suggested_wei".into());
        for text in [
            include_str!("../../../monitoring/grafana-dashboard.json"),
            include_str!("../../../monitoring/alerts.yml"),
        ] {
            let exprs = text
                .lines()
                .filter(|l| l.contains("\"expr\"") || l.trim_start().starts_with("expr:"));
            for line in exprs {
                for (i, _) in line.match_indices("clique_") {
                    let text = line;
                    let name: String = text[i..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if name.starts_with("clique_fleet_") {
                        // The aggregator's; checked by its own tests.
                        continue;
                    }
                    let base = ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| name.strip_suffix(s))
                        .unwrap_or(&name);
                    assert!(
                        known.iter().any(|k| *k == name || k == base),
                        "{name} is used but not exported"
                    );
                }
            }
        }
    }

    #[test]
    fn only_deep_replacements_count_as_rewritten_history() {
        let me = Address::repeat_byte(1);
        let m = Metrics::new(Some(me));
        m.set_rewrite_confirmations(6);
        let block = BlockFacts {
            number: 5,
            hash: B256::ZERO,
            parent_hash: B256::ZERO,
            timestamp: 10,
            difficulty: 2,
            signer: me,
            transactions: 0,
            gas_used: 0,
            gas_limit: 1,
            base_fee: None,
        };
        let replaced = |depth| Counted {
            signer: me,
            in_turn: true,
            missed_by: None,
            replaced: Some(me),
            replaced_depth: Some(depth),
            replaced_blocks: depth + 1,
            interval: None,
        };
        m.on_block(&block, &replaced(5));
        let text = m.encode();
        assert!(text.contains("clique_history_rewrites_total 0"), "{text}");
        assert!(text.contains("clique_replaced_blocks_total 6"), "{text}");
        m.on_block(&block, &replaced(25));
        m.on_block(&block, &replaced(7));
        let text = m.encode();
        assert!(text.contains("clique_history_rewrites_total 2"), "{text}");
        assert!(
            text.contains("clique_history_rewrite_depth_blocks 25"),
            "{text}"
        );
    }

    #[test]
    fn sealing_counts_show_up_with_their_labels() {
        let me = Address::repeat_byte(1);
        let m = Metrics::new(Some(me));
        let block = BlockFacts {
            number: 3,
            hash: B256::ZERO,
            parent_hash: B256::ZERO,
            timestamp: 10,
            difficulty: 1,
            signer: me,
            transactions: 2,
            gas_used: 42_000,
            gas_limit: 30_000_000,
            base_fee: None,
        };
        let counted = Counted {
            signer: me,
            in_turn: false,
            missed_by: Some(Address::repeat_byte(2)),
            replaced: None,
            replaced_depth: None,
            replaced_blocks: 0,
            interval: Some(1),
        };
        m.on_block(&block, &counted);
        m.on_head(&block);
        let text = m.encode();
        assert!(
            text.contains("clique_node_sealed_blocks_total{turn=\"out\"} 1"),
            "{text}"
        );
        assert!(text.contains(&format!(
            "clique_signer_missed_turns_total{{signer=\"{:#x}\"}} 1",
            Address::repeat_byte(2)
        )));
        assert!(text.contains("clique_head_block 3"));
        assert!(
            !text.contains("base_fee"),
            "no base fee on a pre-London chain"
        );
        assert!(text.contains("clique_agent_build_info{version="));
    }
}
