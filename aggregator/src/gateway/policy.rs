//! Which JSON-RPC calls the public gateway lets through, and why not.
//! Pure logic: every refusal names the rule it broke, so a frontend developer
//! sees what to change.

use serde_json::Value;

/// What the gateway does with an allowed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A read: safe to retry on another node.
    Read,
    /// Changes state (`eth_sendRawTransaction`): retried only when it never
    /// reached a node.
    Write,
    /// `eth_subscribe` / `eth_unsubscribe`: WebSocket only.
    Subscription,
}

/// A refused call: JSON-RPC error code and a message naming the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: i64,
    pub rule: &'static str,
    pub message: String,
}

impl Refusal {
    fn new(code: i64, rule: &'static str, message: &str) -> Self {
        Self {
            code,
            rule,
            message: format!("{message} (gateway rule: {rule})"),
        }
    }
}

/// JSON-RPC error codes the gateway answers with.
pub mod code {
    pub const PARSE: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_ALLOWED: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    /// Ethereum's "limit exceeded" (EIP-1474).
    pub const LIMIT: i64 = -32005;
    /// No ready node or the node failed.
    pub const UNAVAILABLE: i64 = -32603;
}

/// The reads a wallet and a frontend use, plus the calls that need no node
/// account.
const READS: &[&str] = &[
    "web3_clientVersion",
    "web3_sha3",
    "net_version",
    "net_listening",
    "net_peerCount",
    "eth_chainId",
    "eth_blockNumber",
    "eth_syncing",
    "eth_gasPrice",
    "eth_maxPriorityFeePerGas",
    "eth_feeHistory",
    "eth_getBalance",
    "eth_getCode",
    "eth_getStorageAt",
    "eth_getTransactionCount",
    "eth_getProof",
    "eth_call",
    "eth_estimateGas",
    "eth_createAccessList",
    "eth_getBlockByNumber",
    "eth_getBlockByHash",
    "eth_getBlockReceipts",
    "eth_getBlockTransactionCountByHash",
    "eth_getBlockTransactionCountByNumber",
    "eth_getUncleCountByBlockHash",
    "eth_getUncleCountByBlockNumber",
    "eth_getUncleByBlockHashAndIndex",
    "eth_getUncleByBlockNumberAndIndex",
    "eth_getTransactionByHash",
    "eth_getTransactionByBlockHashAndIndex",
    "eth_getTransactionByBlockNumberAndIndex",
    "eth_getTransactionReceipt",
    "eth_getLogs",
];

/// Subscriptions the gateway relays.
pub const SUBSCRIPTIONS: &[&str] = &["newHeads", "logs"];

/// Limits that depend on the chain: the head resolves `latest` in ranges.
#[derive(Debug, Clone, Copy)]
pub struct Chain {
    pub max_log_blocks: u64,
    /// The fleet's head, if known.
    pub head: Option<u64>,
}

/// True for methods on the allow-list (they get their own metric label).
pub fn is_known(method: &str) -> bool {
    READS.contains(&method)
        || matches!(
            method,
            "eth_sendRawTransaction" | "eth_subscribe" | "eth_unsubscribe"
        )
}

/// Decides on one call by method and params.
pub fn check(method: &str, params: &Value, chain: Chain) -> Result<Kind, Refusal> {
    if method == "eth_sendRawTransaction" {
        return Ok(Kind::Write);
    }
    if method == "eth_subscribe" {
        let kind = params.get(0).and_then(Value::as_str).unwrap_or("");
        if !SUBSCRIPTIONS.contains(&kind) {
            return Err(Refusal::new(
                code::METHOD_NOT_ALLOWED,
                "subscriptions",
                &format!("eth_subscribe {kind:?} is not relayed; only newHeads and logs are"),
            ));
        }
        return Ok(Kind::Subscription);
    }
    if method == "eth_unsubscribe" {
        return Ok(Kind::Subscription);
    }
    if method == "eth_getLogs" {
        log_range(params, chain)?;
    }
    if READS.contains(&method) {
        return Ok(Kind::Read);
    }
    Err(refuse(method))
}

fn refuse(method: &str) -> Refusal {
    let namespace = method.split('_').next().unwrap_or("");
    let (rule, why) = match (namespace, method) {
        (
            _,
            "eth_sendTransaction"
            | "eth_sign"
            | "eth_signTransaction"
            | "eth_signTypedData"
            | "eth_signTypedData_v3"
            | "eth_signTypedData_v4"
            | "eth_accounts",
        )
        | ("personal", _) => (
            "node-accounts",
            "nodes hold no user accounts: sign in the wallet and send with eth_sendRawTransaction",
        ),
        ("admin" | "miner" | "clique" | "debug" | "txpool", _) => (
            "operator-namespaces",
            "the admin_, miner_, clique_, debug_ and txpool_ namespaces are for operators \
             on the node itself",
        ),
        (
            _,
            "eth_newFilter"
            | "eth_newBlockFilter"
            | "eth_newPendingTransactionFilter"
            | "eth_getFilterChanges"
            | "eth_getFilterLogs"
            | "eth_uninstallFilter",
        ) => (
            "stateful-filters",
            "filters live on one node and calls are spread over several: use eth_getLogs, \
             or eth_subscribe over WebSocket",
        ),
        _ => (
            "allow-list",
            "only the eth_, net_ and web3_ reads a wallet or frontend uses are allowed",
        ),
    };
    Refusal::new(
        code::METHOD_NOT_ALLOWED,
        rule,
        &format!("method {method} is not allowed: {why}"),
    )
}

/// `eth_getLogs` must name a block range of at most `max_log_blocks` blocks
/// (a block hash is one block).
fn log_range(params: &Value, chain: Chain) -> Result<(), Refusal> {
    let filter = params.get(0).unwrap_or(&Value::Null);
    if filter.get("blockHash").is_some() {
        return Ok(());
    }
    let bound = |key: &str| -> Result<u64, Refusal> {
        match filter.get(key) {
            None | Some(Value::Null) => chain.head.ok_or_else(head_unknown),
            Some(Value::String(tag)) => match tag.as_str() {
                "latest" | "pending" | "safe" | "finalized" => chain.head.ok_or_else(head_unknown),
                "earliest" => Ok(0),
                hex => u64::from_str_radix(hex.trim_start_matches("0x"), 16).map_err(|_| {
                    Refusal::new(
                        code::INVALID_PARAMS,
                        "log-range",
                        &format!("eth_getLogs {key} {hex:?} is not a block number or tag"),
                    )
                }),
            },
            Some(other) => Err(Refusal::new(
                code::INVALID_PARAMS,
                "log-range",
                &format!("eth_getLogs {key} {other} is not a block number or tag"),
            )),
        }
    };
    let from = bound("fromBlock")?;
    let to = bound("toBlock")?;
    let blocks = to.saturating_sub(from).saturating_add(1);
    if blocks > chain.max_log_blocks {
        return Err(Refusal::new(
            code::LIMIT,
            "log-range",
            &format!(
                "eth_getLogs over {blocks} blocks ({from}..={to}) is refused: at most {} \
                 blocks per call",
                chain.max_log_blocks
            ),
        ));
    }
    Ok(())
}

fn head_unknown() -> Refusal {
    Refusal::new(
        code::UNAVAILABLE,
        "log-range",
        "eth_getLogs with latest is refused until the gateway knows the chain head; \
         give fromBlock and toBlock as numbers",
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const CHAIN: Chain = Chain {
        max_log_blocks: 100,
        head: Some(1000),
    };

    #[test]
    fn wallet_reads_and_raw_transactions_pass() {
        for m in [
            "eth_chainId",
            "eth_call",
            "net_version",
            "web3_clientVersion",
        ] {
            assert_eq!(check(m, &json!([]), CHAIN), Ok(Kind::Read), "{m}");
        }
        assert_eq!(
            check("eth_sendRawTransaction", &json!(["0x00"]), CHAIN),
            Ok(Kind::Write)
        );
    }

    #[test]
    fn refusals_name_their_rule() {
        for (m, rule) in [
            ("eth_sendTransaction", "node-accounts"),
            ("eth_sign", "node-accounts"),
            ("personal_unlockAccount", "node-accounts"),
            ("admin_addPeer", "operator-namespaces"),
            ("miner_setGasPrice", "operator-namespaces"),
            ("clique_propose", "operator-namespaces"),
            ("debug_traceTransaction", "operator-namespaces"),
            ("txpool_content", "operator-namespaces"),
            ("eth_newFilter", "stateful-filters"),
            ("les_peers", "allow-list"),
        ] {
            let r = check(m, &json!([]), CHAIN).unwrap_err();
            assert_eq!(r.rule, rule, "{m}");
            assert!(r.message.contains(m) && r.message.contains(rule), "{r:?}");
            assert_eq!(r.code, code::METHOD_NOT_ALLOWED);
        }
    }

    #[test]
    fn only_new_heads_and_logs_subscriptions() {
        assert_eq!(
            check("eth_subscribe", &json!(["newHeads"]), CHAIN),
            Ok(Kind::Subscription)
        );
        assert_eq!(
            check("eth_subscribe", &json!(["logs", {}]), CHAIN),
            Ok(Kind::Subscription)
        );
        let r = check("eth_subscribe", &json!(["newPendingTransactions"]), CHAIN).unwrap_err();
        assert_eq!(r.rule, "subscriptions");
    }

    #[test]
    fn log_ranges_are_bounded() {
        let ok = json!([{"fromBlock": "0x1", "toBlock": "0x64"}]);
        assert_eq!(check("eth_getLogs", &ok, CHAIN), Ok(Kind::Read));
        let wide = json!([{"fromBlock": "0x0", "toBlock": "0x64"}]);
        let r = check("eth_getLogs", &wide, CHAIN).unwrap_err();
        assert_eq!((r.rule, r.code), ("log-range", code::LIMIT));
        assert!(r.message.contains("101 blocks"), "{}", r.message);
        // Missing bounds mean latest: earliest..latest is the whole chain.
        let r = check("eth_getLogs", &json!([{"fromBlock": "earliest"}]), CHAIN).unwrap_err();
        assert_eq!(r.rule, "log-range");
        assert_eq!(
            check("eth_getLogs", &json!([{}]), CHAIN),
            Ok(Kind::Read),
            "latest..latest is one block"
        );
        let by_hash = json!([{"blockHash": "0xab"}]);
        assert_eq!(check("eth_getLogs", &by_hash, CHAIN), Ok(Kind::Read));
        let bad = json!([{"fromBlock": "soon"}]);
        assert_eq!(
            check("eth_getLogs", &bad, CHAIN).unwrap_err().code,
            code::INVALID_PARAMS
        );
        let unknown = Chain {
            head: None,
            ..CHAIN
        };
        assert_eq!(
            check("eth_getLogs", &json!([{}]), unknown)
                .unwrap_err()
                .rule,
            "log-range"
        );
    }
}
