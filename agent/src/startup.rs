//! What the agent does to a geth that has just started: apply the network's gas
//! price floor (retried until geth takes it; the node is not ready before),
//! and (signers) start sealing once the other signers are peered.
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

use std::future::Future;
use std::time::Duration;

use alloy::primitives::U256;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::rpc::{GethRpc, RpcError};
use crate::status::NodeStatus;

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

/// First wait after a failed `miner_setGasPrice`; doubled up to [`GAS_RETRY_MAX`].
const GAS_RETRY_FIRST: Duration = Duration::from_secs(1);
const GAS_RETRY_MAX: Duration = Duration::from_secs(30);

/// Applies the policy. Returns early (Ok) when cancelled.
pub async fn apply(
    rpc: &GethRpc,
    policy: &StartupPolicy,
    cancel: &CancellationToken,
) -> Result<(), RpcError> {
    apply_reporting(rpc, policy, None, cancel).await
}

/// [`apply`], publishing the gas floor into the node status (readiness,
/// metrics, reports). The floor is retried until geth takes it while sealing
/// starts beside it: a signer that cannot set its floor still seals.
pub async fn apply_reporting(
    rpc: &GethRpc,
    policy: &StartupPolicy,
    status: Option<&watch::Sender<NodeStatus>>,
    cancel: &CancellationToken,
) -> Result<(), RpcError> {
    if let Some(status) = status {
        // A new geth: whatever was applied to the last one no longer holds.
        status.send_modify(|s| s.gas_price_floor_wei = None);
    }
    let wei = policy.min_gas_price_wei;
    let gas = async {
        let applied = apply_gas_floor(
            || rpc.set_gas_price(wei),
            wei,
            status,
            GAS_RETRY_FIRST,
            cancel,
        )
        .await;
        if applied {
            match suggested_gas_price(rpc).await {
                Ok(advised) => {
                    tracing::info!(
                        wei,
                        advised,
                        "gas price floor applied; geth advises wallets {advised} wei"
                    );
                    if let Some(status) = status {
                        status.send_modify(|s| s.suggested_gas_price_wei = Some(advised));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "eth_gasPrice"),
            }
        }
    };
    let (_, sealing) = tokio::join!(gas, start_sealing(rpc, policy, cancel));
    sealing
}

/// Calls `set` until it succeeds, waiting `first`, then twice as long each
/// time (up to 30 s); every failure is counted in the status. Returns false
/// if cancelled first.
pub async fn apply_gas_floor<F, Fut>(
    mut set: F,
    wei: u64,
    status: Option<&watch::Sender<NodeStatus>>,
    first: Duration,
    cancel: &CancellationToken,
) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), RpcError>>,
{
    let mut delay = first;
    loop {
        match set().await {
            Ok(()) => {
                if let Some(status) = status {
                    status.send_modify(|s| s.gas_price_floor_wei = Some(wei));
                }
                return true;
            }
            Err(e) => {
                if let Some(status) = status {
                    status.send_modify(|s| s.gas_price_set_failures += 1);
                }
                tracing::warn!(error = %e, wei, retry_in = ?delay, "gas price floor not applied; the node is not ready until it is");
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return false,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(GAS_RETRY_MAX);
    }
}

/// `eth_gasPrice`: what geth advises wallets, in wei.
pub async fn suggested_gas_price(rpc: &GethRpc) -> Result<u64, RpcError> {
    let price: U256 = rpc.call("eth_gasPrice", ()).await?;
    Ok(u64::try_from(price).unwrap_or(u64::MAX))
}

/// Starts sealing (signers) once the other signers are peered.
async fn start_sealing(
    rpc: &GethRpc,
    policy: &StartupPolicy,
    cancel: &CancellationToken,
) -> Result<(), RpcError> {
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
pub async fn wait_until_signer_unlocked(
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
    use super::*;
    use crate::status::Mode;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn a_failed_gas_floor_is_retried_with_backoff_and_counted() {
        let (status, rx) = watch::channel(NodeStatus::new("n".into(), Mode::Spawn, 1));
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let applied = apply_gas_floor(
            || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 3 {
                        Err(RpcError::Call {
                            method: "miner_setGasPrice",
                            reason: "no".into(),
                        })
                    } else {
                        Ok(())
                    }
                }
            },
            7,
            Some(&status),
            Duration::from_millis(10),
            &CancellationToken::new(),
        )
        .await;
        assert!(applied);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        // Waited 10 + 20 + 40 ms between the attempts.
        assert!(started.elapsed() >= Duration::from_millis(70));
        let s = rx.borrow();
        assert_eq!(s.gas_price_floor_wei, Some(7));
        assert_eq!(s.gas_price_set_failures, 3);
    }

    #[tokio::test]
    async fn a_cancelled_gas_floor_stays_unapplied() {
        let (status, rx) = watch::channel(NodeStatus::new("n".into(), Mode::Spawn, 1));
        let cancel = CancellationToken::new();
        cancel.cancel();
        let applied = apply_gas_floor(
            || async {
                Err(RpcError::Call {
                    method: "miner_setGasPrice",
                    reason: "no".into(),
                })
            },
            0,
            Some(&status),
            Duration::from_secs(1),
            &cancel,
        )
        .await;
        assert!(!applied);
        assert_eq!(rx.borrow().gas_price_floor_wei, None);
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
