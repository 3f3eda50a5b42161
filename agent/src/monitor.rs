//! Chain monitor: polls geth over IPC (head, peers, sync state) and publishes
//! the result into the node status. Everything else reads that status; nothing
//! calls geth while serving a request.

use std::path::PathBuf;
use std::time::Duration;

use alloy::eips::BlockNumberOrTag;
use alloy::providers::Provider;
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::rpc::{GethRpc, RpcError};
use crate::status::{now_ms, ChainView, NodeStatus};

pub const DEFAULT_POLL: Duration = Duration::from_millis(500);

/// Polls until `cancel` fires.
pub async fn run(
    ipc: PathBuf,
    interval: Duration,
    status: watch::Sender<NodeStatus>,
    cancel: CancellationToken,
) {
    let mut rpc: Option<GethRpc> = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if rpc.is_none() && ipc.exists() {
            rpc = GethRpc::connect(&ipc).await.ok();
        }
        let Some(client) = &rpc else { continue };
        match tokio::time::timeout(interval * 4, poll(client)).await {
            Ok(Ok(view)) => status.send_modify(|s| s.chain = view),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "chain poll failed");
                rpc = None;
            }
            Err(_) => {
                tracing::debug!("chain poll timed out");
                rpc = None;
            }
        }
    }
}

async fn poll(rpc: &GethRpc) -> Result<ChainView, RpcError> {
    let block = rpc
        .provider()
        .get_block_by_number(BlockNumberOrTag::Latest)
        .await
        .map_err(|e| RpcError::Call {
            method: "eth_getBlockByNumber",
            reason: e.to_string(),
        })?
        .ok_or(RpcError::Call {
            method: "eth_getBlockByNumber",
            reason: "no latest block".into(),
        })?;
    let peers = rpc.peer_count().await?;
    let syncing: Value = rpc.call("eth_syncing", ()).await?;
    let (syncing, highest_block) = parse_syncing(&syncing);
    Ok(ChainView {
        head: Some(block.header.number),
        head_hash: Some(format!("{:#x}", block.header.hash)),
        head_time: Some(block.header.timestamp),
        peers: Some(peers),
        syncing: Some(syncing),
        highest_block,
        answered_at_ms: Some(now_ms()),
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
