//! geth's JSON-RPC over IPC (`<datadir>/geth.ipc`), which serves every namespace
//! (`admin_`, `clique_`, `miner_`, `txpool_`) that HTTP does not.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use alloy::primitives::U64;
use alloy::providers::{Provider, ProviderBuilder, RootProvider};
use alloy::rpc::json_rpc::{RpcRecv, RpcSend};
use alloy::transports::ipc::IpcConnect;
use tokio::time::Instant;

/// Every JSON-RPC request the agent sends to geth, for the
/// `clique_agent_ipc_requests_total` metric.
static REQUESTS: AtomicU64 = AtomicU64::new(0);

pub fn requests_made() -> u64 {
    REQUESTS.load(Ordering::Relaxed)
}

fn count() {
    REQUESTS.fetch_add(1, Ordering::Relaxed);
}

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("cannot connect to geth IPC at {path}: {reason}")]
    Connect { path: PathBuf, reason: String },
    #[error("geth {method}: {reason}")]
    Call {
        method: &'static str,
        reason: String,
    },
}

/// A connection to one geth.
#[derive(Debug, Clone)]
pub struct GethRpc {
    provider: RootProvider,
}

impl GethRpc {
    pub async fn connect(ipc: &Path) -> Result<Self, RpcError> {
        let provider = ProviderBuilder::new()
            .disable_recommended_fillers()
            .connect_ipc(IpcConnect::new(ipc.to_owned()))
            .await
            .map_err(|e| RpcError::Connect {
                path: ipc.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(Self { provider })
    }

    /// Connects once the IPC socket answers, polling until `deadline`.
    pub async fn connect_by(ipc: &Path, deadline: Instant) -> Result<Self, RpcError> {
        loop {
            let attempt = match Self::connect(ipc).await {
                Ok(rpc) => match rpc.block_number().await {
                    Ok(_) => return Ok(rpc),
                    Err(e) => e,
                },
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(attempt);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn provider(&self) -> &RootProvider {
        &self.provider
    }

    /// A block header and its transaction count (`eth_getBlockByNumber`, no bodies).
    pub async fn block(
        &self,
        number: alloy::eips::BlockNumberOrTag,
    ) -> Result<alloy::rpc::types::Block, RpcError> {
        count();
        self.provider
            .get_block_by_number(number)
            .await
            .map_err(|e| RpcError::Call {
                method: "eth_getBlockByNumber",
                reason: e.to_string(),
            })?
            .ok_or(RpcError::Call {
                method: "eth_getBlockByNumber",
                reason: format!("no block {number}"),
            })
    }

    pub async fn call<P: RpcSend, R: RpcRecv>(
        &self,
        method: &'static str,
        params: P,
    ) -> Result<R, RpcError> {
        count();
        self.provider
            .raw_request(Cow::Borrowed(method), params)
            .await
            .map_err(|e| RpcError::Call {
                method,
                reason: e.to_string(),
            })
    }

    pub async fn block_number(&self) -> Result<u64, RpcError> {
        count();
        self.provider
            .get_block_number()
            .await
            .map_err(|e| RpcError::Call {
                method: "eth_blockNumber",
                reason: e.to_string(),
            })
    }

    pub async fn peer_count(&self) -> Result<u64, RpcError> {
        let count: U64 = self.call("net_peerCount", ()).await?;
        Ok(count.to::<u64>())
    }

    pub async fn mining(&self) -> Result<bool, RpcError> {
        self.call("eth_mining", ()).await
    }

    pub async fn start_mining(&self) -> Result<(), RpcError> {
        let _: serde_json::Value = self.call("miner_start", ()).await?;
        Ok(())
    }

    /// Sets the lowest gas price the pool accepts from peers and the miner
    /// includes. Unlike `--txpool.pricelimit`, geth does not raise 0 to 1 here.
    pub async fn set_gas_price(&self, wei: u64) -> Result<(), RpcError> {
        let ok: bool = self.call("miner_setGasPrice", (U64::from(wei),)).await?;
        if ok {
            Ok(())
        } else {
            Err(RpcError::Call {
                method: "miner_setGasPrice",
                reason: "refused".into(),
            })
        }
    }
}
