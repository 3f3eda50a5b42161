//! `/solidity/rpc`: the page's way to the chain, on the page's own origin
//! (no CORS, no mixed content). Narrower than the public gateway: single
//! calls, only what the page uses, and `eth_sendRawTransaction` only while
//! the development accounts are on. Calls go to ready non-signer nodes, as
//! the gateway's do.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use geth_wire::network::Network;
use serde_json::Value;

use crate::gateway::error as rpc_error;
use crate::gateway::limit::RateLimiter;
use crate::gateway::policy::{self, code, Kind};
use crate::gateway::upstream::{self, Rotation, Upstream};
use crate::state::App;

/// The reads the page makes (ethers.js: nonce, gas, fee data, calls,
/// receipts, logs).
pub const READS: &[&str] = &[
    "eth_chainId",
    "net_version",
    "eth_blockNumber",
    "eth_gasPrice",
    "eth_maxPriorityFeePerGas",
    "eth_getBalance",
    "eth_getCode",
    "eth_getTransactionCount",
    "eth_call",
    "eth_estimateGas",
    "eth_getBlockByNumber",
    "eth_getTransactionByHash",
    "eth_getTransactionReceipt",
    "eth_getLogs",
];

/// Widest `eth_getLogs` range the page may ask for.
const MAX_LOG_BLOCKS: u64 = 10_000;

/// Calls per second per client IP, and the burst before the rate applies.
const RATE: u32 = 50;
const BURST: u32 = 100;

/// Why a call is refused (the message names the rule, as the gateway's do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: i64,
    pub message: String,
}

/// Decides on one call by method and params: allowed and how, or why not.
pub fn check(
    method: &str,
    params: &Value,
    writes: bool,
    head: Option<u64>,
) -> Result<Kind, Refusal> {
    if method == "eth_sendRawTransaction" {
        return if writes {
            Ok(Kind::Write)
        } else {
            Err(Refusal {
                code: code::METHOD_NOT_ALLOWED,
                message: "eth_sendRawTransaction refused: the development accounts are off; \
                          send with your wallet (solidity rule: dev-accounts-off)"
                    .into(),
            })
        };
    }
    if !READS.contains(&method) {
        let shown: String = method.chars().take(64).collect();
        return Err(Refusal {
            code: code::METHOD_NOT_ALLOWED,
            message: format!(
                "{shown} is not available to the Solidity page (solidity rule: allow-list)"
            ),
        });
    }
    // The gateway's own checks (the eth_getLogs range).
    policy::check(
        method,
        params,
        policy::Chain {
            max_log_blocks: MAX_LOG_BLOCKS,
            head,
        },
    )
    .map_err(|r| Refusal {
        code: r.code,
        message: r.message,
    })
}

/// The pass-through's nodes and limits.
pub struct PassThrough {
    upstreams: Vec<Arc<Upstream>>,
    rotation: Rotation,
    client: upstream::Client,
    limiter: RateLimiter,
    writes: bool,
}

impl Default for PassThrough {
    fn default() -> Self {
        Self {
            upstreams: Vec::new(),
            rotation: Rotation::default(),
            client: upstream::client(),
            limiter: RateLimiter::new(RATE, BURST),
            writes: false,
        }
    }
}

impl PassThrough {
    /// To `network`'s non-signer nodes; `writes`: raw transactions allowed.
    pub fn new(network: &Network, writes: bool) -> Self {
        Self {
            upstreams: upstream::from_network(network),
            writes,
            ..Self::default()
        }
    }

    async fn answer(&self, app: &App, body: &Bytes, client: IpAddr) -> (StatusCode, Bytes) {
        let refuse = |status: StatusCode, id: Value, code: i64, message: &str| {
            (
                status,
                Bytes::from(rpc_error(id, code, message).to_string()),
            )
        };
        let call: Value =
            match serde_json::from_slice(body) {
                Ok(call @ Value::Object(_)) => call,
                Ok(Value::Array(_)) => return refuse(
                    StatusCode::OK,
                    Value::Null,
                    code::INVALID_REQUEST,
                    "batches are not accepted: one call per request (solidity rule: single-call)",
                ),
                Ok(_) => {
                    return refuse(
                        StatusCode::OK,
                        Value::Null,
                        code::INVALID_REQUEST,
                        "not a JSON-RPC call",
                    )
                }
                Err(e) => {
                    return refuse(
                        StatusCode::OK,
                        Value::Null,
                        code::PARSE,
                        &format!("invalid JSON: {e}"),
                    )
                }
            };
        let id = call.get("id").cloned().unwrap_or(Value::Null);
        if !self.limiter.take(client, 1, Instant::now()) {
            return refuse(
                StatusCode::TOO_MANY_REQUESTS,
                id,
                code::LIMIT,
                "too many calls from this client: slow down (solidity rule: rate-limit)",
            );
        }
        let method = call.get("method").and_then(Value::as_str).unwrap_or("");
        let params = call.get("params").cloned().unwrap_or(Value::Null);
        let snap = self
            .rotation
            .turn(upstream::eligible(&self.upstreams, &app.live()));
        let kind = match check(method, &params, self.writes, snap.head) {
            Ok(kind) => kind,
            Err(r) => return refuse(StatusCode::OK, id, r.code, &r.message),
        };
        // A read is retried on a second node; a write only when it never
        // reached the first.
        for up in snap.nodes.iter().take(2) {
            match upstream::post(&self.client, up, body.clone()).await {
                Ok(answer) => return (StatusCode::OK, answer),
                Err(failure) => {
                    tracing::warn!(node = %up.name, "solidity rpc: node failed: {}", failure.reason);
                    if failure.maybe_sent && kind != Kind::Read {
                        break;
                    }
                }
            }
        }
        refuse(
            StatusCode::OK,
            id,
            code::UNAVAILABLE,
            "no ready node answered; try again (solidity rule: ready-nodes)",
        )
    }
}

pub async fn handle(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    let (status, answer) = app.solidity.rpc.answer(&app, &body, peer.ip()).await;
    (status, [(header::CONTENT_TYPE, "application/json")], answer).into_response()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_page_reads_and_sends_only_with_dev_accounts() {
        for m in READS {
            assert_eq!(check(m, &json!([]), false, Some(1)), Ok(Kind::Read), "{m}");
        }
        assert_eq!(
            check("eth_sendRawTransaction", &json!(["0x00"]), true, None),
            Ok(Kind::Write)
        );
        let off = check("eth_sendRawTransaction", &json!(["0x00"]), false, None).unwrap_err();
        assert!(off.message.contains("dev-accounts-off"), "{off:?}");
    }

    #[test]
    fn everything_else_is_refused_by_rule() {
        for m in [
            "eth_sendTransaction",
            "eth_accounts",
            "personal_unlockAccount",
            "admin_addPeer",
            "debug_traceTransaction",
            "eth_subscribe",
            "miner_start",
            "clique_propose",
            "",
        ] {
            let r = check(m, &json!([]), true, Some(1)).unwrap_err();
            assert_eq!(r.code, code::METHOD_NOT_ALLOWED, "{m}");
            assert!(
                r.message.contains("solidity rule: allow-list"),
                "{m}: {r:?}"
            );
        }
        let wide = check(
            "eth_getLogs",
            &json!([{"fromBlock": "0x0", "toBlock": "0x100000"}]),
            true,
            Some(0x100000),
        );
        assert!(wide.is_err(), "{wide:?}");
    }
}
