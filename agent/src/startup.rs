//! What the agent does to a geth that has just started: apply the network's gas
//! price floor, then (signers) start sealing once the other signers are peered.
//!
//! Sealing is started over IPC instead of `--mine` because signers that seal
//! before they are peered each seal their own block 1, and the fork costs
//! seconds to resolve.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::rpc::{GethRpc, RpcError};

#[derive(Debug, Clone)]
pub struct StartupPolicy {
    pub min_gas_price_wei: u64,
    /// `None` for a node that does not seal.
    pub sealing: Option<SealingStart>,
}

#[derive(Debug, Clone, Copy)]
pub struct SealingStart {
    pub min_peers: usize,
    pub max_wait: Duration,
}

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
    rpc.start_mining().await
}
