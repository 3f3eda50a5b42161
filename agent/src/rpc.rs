//! geth's JSON-RPC over IPC (`<datadir>/geth.ipc`), which serves every namespace
//! (`admin_`, `clique_`, `miner_`, `txpool_`) that HTTP does not.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use alloy::primitives::U64;
use alloy::providers::{Provider, ProviderBuilder, RootProvider};
use alloy::rpc::json_rpc::{RpcRecv, RpcSend};
use alloy::transports::ipc::IpcConnect;
use tokio::time::Instant;

/// Every JSON-RPC request the agent sends to geth, for the
/// `clique_agent_ipc_requests_total` metric.
static REQUESTS: AtomicU64 = AtomicU64::new(0);
/// The same requests by method (`clique_agent_ipc_calls_total`): what the
/// agent costs geth, call kind by call kind.
static BY_METHOD: Mutex<BTreeMap<&'static str, u64>> = Mutex::new(BTreeMap::new());
/// IPC connections opened (each one costs geth a reader and a codec).
static CONNECTIONS: AtomicU64 = AtomicU64::new(0);

pub fn requests_made() -> u64 {
    REQUESTS.load(Ordering::Relaxed)
}

/// Requests made so far, by JSON-RPC method.
pub fn requests_by_method() -> Vec<(&'static str, u64)> {
    let calls = BY_METHOD.lock().unwrap_or_else(|e| e.into_inner());
    calls.iter().map(|(m, n)| (*m, *n)).collect()
}

pub fn connections_made() -> u64 {
    CONNECTIONS.load(Ordering::Relaxed)
}

fn count(method: &'static str) {
    REQUESTS.fetch_add(1, Ordering::Relaxed);
    let mut calls = BY_METHOD.lock().unwrap_or_else(|e| e.into_inner());
    *calls.entry(method).or_default() += 1;
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
        CONNECTIONS.fetch_add(1, Ordering::Relaxed);
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

    /// geth's `newHeads` subscription.
    pub async fn subscribe_heads(
        &self,
    ) -> Result<alloy::pubsub::Subscription<alloy::rpc::types::Header>, RpcError> {
        count("eth_subscribe");
        self.provider
            .subscribe_blocks()
            .await
            .map_err(|e| RpcError::Call {
                method: "eth_subscribe",
                reason: e.to_string(),
            })
    }

    /// geth's `peerEvents` subscription (`admin_subscribe`): a notification
    /// each time a peer is added or dropped.
    pub async fn subscribe_peer_events(
        &self,
    ) -> Result<alloy::pubsub::Subscription<serde_json::Value>, RpcError> {
        count("admin_subscribe");
        let mut call = self
            .provider
            .client()
            .request::<_, alloy::primitives::B256>("admin_subscribe", ("peerEvents",));
        call.set_is_subscription();
        alloy::providers::GetSubscription::new(self.provider.weak_client(), call)
            .await
            .map_err(|e| RpcError::Call {
                method: "admin_subscribe",
                reason: e.to_string(),
            })
    }

    /// A block header and its transaction count (`eth_getBlockByNumber`, no bodies).
    pub async fn block(
        &self,
        number: alloy::eips::BlockNumberOrTag,
    ) -> Result<alloy::rpc::types::Block, RpcError> {
        count("eth_getBlockByNumber");
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
        count(method);
        self.provider
            .raw_request(Cow::Borrowed(method), params)
            .await
            .map_err(|e| RpcError::Call {
                method,
                reason: e.to_string(),
            })
    }

    pub async fn block_number(&self) -> Result<u64, RpcError> {
        count("eth_blockNumber");
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

/// The longest batch answer read from geth.
const BATCH_REPLY_LIMIT: u64 = 16 << 20;

/// JSON-RPC batches on a plain IPC connection. alloy's IPC transport sends a
/// batch's calls one message each; geth answers a real batch with one read,
/// one goroutine and one write, which is most of what a call costs it.
pub struct BatchConn {
    reader: tokio::io::BufReader<tokio::net::UnixStream>,
    next_id: u64,
}

/// One call of a batch: method and positional parameters.
pub type BatchCall = (&'static str, serde_json::Value);

impl BatchConn {
    pub async fn connect(ipc: &Path) -> Result<Self, RpcError> {
        CONNECTIONS.fetch_add(1, Ordering::Relaxed);
        let stream = tokio::net::UnixStream::connect(ipc)
            .await
            .map_err(|e| RpcError::Connect {
                path: ipc.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            reader: tokio::io::BufReader::new(stream),
            next_id: 1,
        })
    }

    /// Sends `calls` as one batch; each answer in the order of `calls`. The
    /// outer error means the connection is unusable.
    pub async fn call(
        &mut self,
        calls: &[BatchCall],
    ) -> Result<Vec<Result<serde_json::Value, RpcError>>, RpcError> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        let first = self.next_id;
        self.next_id += calls.len() as u64;
        let body: Vec<serde_json::Value> = calls
            .iter()
            .zip(first..)
            .map(|((method, params), id)| {
                count(method);
                serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
            })
            .collect();
        let mut line = serde_json::to_vec(&body).map_err(|e| batch_error(e.to_string()))?;
        line.push(b'\n');
        let io = |e: std::io::Error| batch_error(e.to_string());
        self.reader.get_mut().write_all(&line).await.map_err(io)?;
        // geth writes each answer as one JSON line.
        let mut reply = String::new();
        let read = (&mut self.reader)
            .take(BATCH_REPLY_LIMIT)
            .read_line(&mut reply)
            .await
            .map_err(io)?;
        if read == 0 || !reply.ends_with('\n') {
            return Err(batch_error("connection closed or answer too long".into()));
        }
        let answers: Vec<serde_json::Value> =
            serde_json::from_str(&reply).map_err(|e| batch_error(e.to_string()))?;
        Ok(calls
            .iter()
            .zip(first..)
            .map(|((method, _), id)| {
                let answer = answers
                    .iter()
                    .find(|a| a.get("id").and_then(serde_json::Value::as_u64) == Some(id));
                match answer {
                    Some(a) if a.get("error").is_none() => {
                        Ok(a.get("result").cloned().unwrap_or(serde_json::Value::Null))
                    }
                    Some(a) => Err(RpcError::Call {
                        method,
                        reason: a["error"].to_string(),
                    }),
                    None => Err(RpcError::Call {
                        method,
                        reason: "no answer in the batch".into(),
                    }),
                }
            })
            .collect())
    }
}

fn batch_error(reason: String) -> RpcError {
    RpcError::Call {
        method: "batch",
        reason,
    }
}

/// Decodes one batch answer into `T`.
pub fn decode<T: serde::de::DeserializeOwned>(
    method: &'static str,
    answer: Result<serde_json::Value, RpcError>,
) -> Result<T, RpcError> {
    serde_json::from_value(answer?).map_err(|e| RpcError::Call {
        method,
        reason: e.to_string(),
    })
}
