//! What the agent does to a geth that has just started: apply the network's gas
//! price floor, then (signers) start sealing once the other signers are peered.
//!
//! Sealing is started over IPC instead of `--mine` because signers that seal
//! before they are peered each seal their own block 1, and the fork costs
//! seconds to resolve.
//!
//! A fresh chain can still wedge at block 1: geth drops propagated blocks until
//! it starts mining, so a signer that starts a moment late never hears of the
//! block-1 branch that won, seals its own, and every signer ends up "signed
//! recently" on a branch of its own. Re-dialling the peers refreshes their
//! heads in the handshake, and geth's next sync cycle moves the node to the
//! heaviest branch; the agent does that when a fresh chain does not pass block 1.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::rpc::{GethRpc, RpcError};

#[derive(Debug, Clone)]
pub struct StartupPolicy {
    pub min_gas_price_wei: u64,
    /// Peers geth is configured to dial (to dial again after a re-dial).
    pub static_nodes: Vec<String>,
    /// `None` for a node that does not seal.
    pub sealing: Option<SealingStart>,
}

#[derive(Debug, Clone, Copy)]
pub struct SealingStart {
    pub min_peers: usize,
    pub max_wait: Duration,
    /// Clique block period (seconds), to judge a chain stuck at block 1.
    pub period: u64,
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

/// Re-dial rounds for a fresh chain stuck at block 1.
const UNWEDGE_ATTEMPTS: u32 = 3;

const PEER_POLL: Duration = Duration::from_millis(250);

/// Applies the policy. Returns early (Ok) when cancelled.
pub async fn apply(
    rpc: &GethRpc,
    policy: &StartupPolicy,
    cancel: &CancellationToken,
) -> Result<(), RpcError> {
    rpc.set_gas_price(policy.min_gas_price_wei).await?;
    tracing::info!(wei = policy.min_gas_price_wei, "gas price floor applied");
    let Some(sealing) = policy.sealing else {
        return Ok(());
    };
    let deadline = Instant::now() + sealing.max_wait;
    loop {
        let peers = rpc.peer_count().await?;
        if peers >= sealing.min_peers as u64 {
            tracing::info!(peers, "peers connected, starting to seal");
            break;
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                peers,
                wanted = sealing.min_peers,
                "starting to seal without all signer peers after {:?}",
                sealing.max_wait
            );
            break;
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(PEER_POLL) => {}
        }
    }
    if !wait_until_signer_unlocked(rpc, cancel).await? {
        return Ok(());
    }
    let fresh = rpc.block_number().await? <= 1;
    rpc.start_mining().await?;
    if fresh {
        unwedge_block_one(rpc, sealing.period, &policy.static_nodes, cancel).await?;
    }
    Ok(())
}

/// geth opens its IPC before `--unlock` has decrypted the keystore (scrypt:
/// seconds on a loaded machine). A `miner_start` in between fails its first seal
/// with "authentication needed" and an idle clique chain never retries, so a
/// lone signer stays at block 0. Waits until the etherbase can sign; returns
/// false when cancelled.
async fn wait_until_signer_unlocked(
    rpc: &GethRpc,
    cancel: &CancellationToken,
) -> Result<bool, RpcError> {
    let etherbase: String = rpc.call("eth_coinbase", ()).await?;
    let started = Instant::now();
    let mut warned = false;
    loop {
        let signed: Result<String, RpcError> = rpc.call("eth_sign", (&etherbase, "0x00")).await;
        if signed.is_ok() {
            return Ok(true);
        }
        if !warned && started.elapsed() > Duration::from_secs(30) {
            warned = true;
            tracing::warn!(%etherbase, "signer account still locked after 30 s; sealing waits for it");
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(false),
            _ = tokio::time::sleep(PEER_POLL) => {}
        }
    }
}

/// Waits for a fresh chain to pass block 1; if it does not, re-dials every peer
/// (a few times) so geth learns their real heads and syncs to the heaviest branch.
pub async fn unwedge_block_one(
    rpc: &GethRpc,
    period: u64,
    static_nodes: &[String],
    cancel: &CancellationToken,
) -> Result<(), RpcError> {
    // geth's own sync cycle (every 10 s) settles most block-1 forks: act only after three.
    let stuck_after = Duration::from_secs((10 * period).max(30));
    for attempt in 1..=UNWEDGE_ATTEMPTS {
        let deadline = Instant::now() + stuck_after;
        while Instant::now() < deadline {
            if rpc.block_number().await? >= 2 {
                return Ok(());
            }
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(PEER_POLL) => {}
            }
        }
        let peers: Vec<serde_json::Value> = rpc.call("admin_peers", ()).await?;
        tracing::warn!(
            attempt,
            peers = peers.len(),
            "fresh chain stuck at block 1: re-dialling peers"
        );
        let enode =
            |p: &serde_json::Value| p.get("enode").and_then(|e| e.as_str()).map(str::to_owned);
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
            tokio::time::sleep(PEER_POLL).await;
        }
        for e in &redial {
            let _: bool = rpc.call("admin_addPeer", (e.as_str(),)).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn static_nodes_come_from_the_geth_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[Node.P2P]\nListenAddr = \"127.0.0.1:1\"\nStaticNodes = [\n  \"enode://a@127.0.0.1:2\",\n]\n").unwrap();
        assert_eq!(super::static_nodes(&path), ["enode://a@127.0.0.1:2"]);
        assert!(super::static_nodes(&dir.path().join("missing.toml")).is_empty());
    }
}
