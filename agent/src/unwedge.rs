//! A signer's watchdog for a clique chain that stops with every signer
//! "signed recently" on a head of its own.
//!
//! geth drops the blocks peers propagate until it starts mining. When several
//! signers start at about the same time (a fresh chain, or a whole network
//! brought down and up) the first to seal loses its block on the others, which
//! then seal their own or stay behind. geth only syncs from a peer it knows to
//! be heavier, and a propagated block tells it the *parent's* total
//! difficulty, so every node can believe its peers are no heavier than itself:
//! nobody syncs, nobody may seal, and the chain stands still with every node
//! peered. Seen after a `docker-compose down`/`up` of 3 signers at block 60:
//! two signers each on their own block 61, the third at 60 having dropped both.
//!
//! Re-dialling the peers makes geth exchange real heads in the handshake; the
//! next sync cycle then moves each node to the heaviest branch, where a signer
//! that did not seal its head may seal the next block. So when a mining node's
//! head has not moved for [`stuck_after`] while it has peers, the agent
//! re-dials them, then waits twice as long before the next round.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::rpc::{GethRpc, RpcError};
use crate::status::NodeStatus;

/// How long a head may stand still before the peers are re-dialled: ten
/// periods, at least 30 s (with period 0, while transactions wait). geth's
/// own sync cycle (every 10 s) settles a node that is merely behind; this is
/// for a chain nobody extends.
pub fn stuck_after(period: u64) -> Duration {
    Duration::from_secs(period.saturating_mul(10).max(30))
}

/// `[Node.P2P] StaticNodes` of a geth config TOML: the dialable peer addresses.
pub fn static_nodes(config: &std::path::Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(config) else {
        return Vec::new();
    };
    let Ok(value) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    value
        .get("Node")
        .and_then(|n| n.get("P2P"))
        .and_then(|p| p.get("StaticNodes"))
        .and_then(|s| s.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|e| e.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Re-dial rounds back off up to this many times the first wait: a chain that
/// stands because too few signers are online is not helped by re-dialling.
const MAX_BACKOFF: u32 = 8;

const POLL: Duration = Duration::from_secs(1);

/// When a head that stands still calls for a re-dial.
#[derive(Debug)]
pub struct Stall {
    stuck_after: Duration,
    head: Option<u64>,
    since: Instant,
    wait: Duration,
}

impl Stall {
    pub fn new(stuck_after: Duration, now: Instant) -> Self {
        Self {
            stuck_after,
            head: None,
            since: now,
            wait: stuck_after,
        }
    }

    /// Feeds the head seen at `now`; true when the peers should be re-dialled
    /// (the next round then comes after twice the wait). A head that moves
    /// starts the count again.
    pub fn observe(&mut self, head: u64, now: Instant) -> bool {
        if self.head != Some(head) {
            self.head = Some(head);
            self.since = now;
            self.wait = self.stuck_after;
            return false;
        }
        if now.duration_since(self.since) < self.wait {
            return false;
        }
        self.since = now;
        self.wait = (self.wait.saturating_mul(2)).min(self.stuck_after.saturating_mul(MAX_BACKOFF));
        true
    }

    /// How long the head has stood still at `now`.
    pub fn standing(&self, now: Instant) -> Duration {
        now.duration_since(self.since)
    }

    /// The head stands still for a reason (an idle chain with period 0): the
    /// count starts again from `now`.
    pub fn excuse(&mut self, now: Instant) {
        self.since = now;
        self.wait = self.stuck_after;
    }
}

/// Whether transactions wait in geth's pool (`txpool_status.pending`).
async fn transactions_wait(rpc: &GethRpc) -> Result<bool, RpcError> {
    let pool: std::collections::HashMap<String, alloy::primitives::U64> =
        rpc.call("txpool_status", ()).await?;
    Ok(pool
        .get("pending")
        .is_some_and(|n| *n > alloy::primitives::U64::ZERO))
}

/// Watches a sealing node's head until cancelled, re-dialling its peers when
/// the chain stands still for `stuck` ([`stuck_after`] the period; see the
/// module docs). geth errors are passed over: a geth that is gone is
/// replaced, and this task with it.
pub async fn watch(
    rpc: &GethRpc,
    period: u64,
    stuck: Duration,
    static_nodes: &[String],
    status: Option<&watch::Sender<NodeStatus>>,
    cancel: &CancellationToken,
) {
    let mut stall = Stall::new(stuck, Instant::now());
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
        let head = match rpc.block_number().await {
            Ok(head) => head,
            Err(e) => {
                tracing::debug!(error = %e, "stall watch: no head from geth");
                continue;
            }
        };
        // With period 0 clique seals only for transactions: an empty pool
        // is an idle chain, not a wedge.
        if period == 0 && !transactions_wait(rpc).await.unwrap_or(true) {
            stall.excuse(Instant::now());
            continue;
        }
        let now = Instant::now();
        let standing = stall.standing(now);
        if !stall.observe(head, now) {
            continue;
        }
        match redial_peers(rpc, static_nodes).await {
            Ok(0) => tracing::warn!(
                head,
                ?standing,
                "the chain stands still and this node has no peers to re-dial"
            ),
            Ok(peers) => {
                tracing::warn!(
                    head,
                    ?standing,
                    peers,
                    "the chain stands still with peers connected: re-dialled them so geth \
                     compares heads again and syncs to the heaviest branch"
                );
                if let Some(status) = status {
                    status.send_modify(|s| s.stall_redials += 1);
                }
            }
            Err(e) => tracing::warn!(error = %e, head, "re-dialling peers failed"),
        }
    }
}

/// Drops every peer and dials them again (outbound addresses and the
/// configured static nodes). Returns how many peers were connected.
pub async fn redial_peers(rpc: &GethRpc, static_nodes: &[String]) -> Result<usize, RpcError> {
    let peers: Vec<serde_json::Value> = rpc.call("admin_peers", ()).await?;
    if peers.is_empty() {
        return Ok(0);
    }
    let enode = |p: &serde_json::Value| p.get("enode").and_then(|e| e.as_str()).map(str::to_owned);
    // Inbound peers' enodes carry their ephemeral source port: dial only
    // outbound addresses and the configured static nodes.
    let mut redial: Vec<String> = static_nodes.to_vec();
    for p in &peers {
        let inbound = p
            .pointer("/network/inbound")
            .and_then(|v| v.as_bool())
            .unwrap_or(true);
        if let Some(e) = enode(p).filter(|e| !inbound && !redial.contains(e)) {
            redial.push(e);
        }
    }
    for e in peers.iter().filter_map(enode) {
        let _: bool = rpc.call("admin_removePeer", (e,)).await?;
    }
    // Dial again only once the old connections are gone, or geth skips the dial.
    let gone_by = Instant::now() + Duration::from_secs(5);
    while rpc.peer_count().await? > 0 && Instant::now() < gone_by {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for e in &redial {
        let _: bool = rpc.call("admin_addPeer", (e.as_str(),)).await?;
    }
    Ok(peers.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_is_ten_periods_and_at_least_thirty_seconds() {
        assert_eq!(stuck_after(1), Duration::from_secs(30));
        assert_eq!(stuck_after(5), Duration::from_secs(50));
        assert_eq!(stuck_after(u64::MAX), Duration::from_secs(u64::MAX));
    }

    #[test]
    fn a_head_that_stands_still_is_redialled_with_backoff_and_a_moving_one_never() {
        let s = Duration::from_secs;
        let t0 = Instant::now();
        let mut stall = Stall::new(s(30), t0);
        // A chain that moves: never.
        for n in 0..100 {
            assert!(!stall.observe(n, t0 + s(n * 5)));
        }
        let t1 = t0 + s(500);
        assert!(!stall.observe(7, t1));
        assert!(!stall.observe(7, t1 + s(29)));
        assert!(stall.observe(7, t1 + s(30)), "30 s standing");
        assert!(!stall.observe(7, t1 + s(31)), "not again at once");
        // Then after 60, 120, 240 s, and never more than 240 s apart.
        let mut at = t1 + s(30);
        for wait in [60, 120, 240, 240, 240] {
            assert!(!stall.observe(7, at + s(wait - 1)));
            assert!(stall.observe(7, at + s(wait)), "after {wait} s");
            at += s(wait);
        }
        // The head moves: the count starts again, at 30 s.
        assert!(!stall.observe(8, at + s(1)));
        assert!(!stall.observe(8, at + s(30)));
        assert!(stall.observe(8, at + s(31)));
        // An idle chain (period 0, empty pool) is excused: the count restarts.
        let at = at + s(31);
        assert!(!stall.observe(8, at + s(20)));
        stall.excuse(at + s(25));
        assert!(!stall.observe(8, at + s(40)));
        assert!(stall.observe(8, at + s(55)), "30 s after the excuse");
    }

    #[test]
    fn static_nodes_come_from_the_geth_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[Node.P2P]\nListenAddr = \"127.0.0.1:1\"\nStaticNodes = [\n  \"enode://a@127.0.0.1:2\",\n]\n").unwrap();
        assert_eq!(super::static_nodes(&path), ["enode://a@127.0.0.1:2"]);
        assert!(super::static_nodes(&dir.path().join("missing.toml")).is_empty());
    }
}
