//! Wire types shared by geth-agent and geth-aggregator: what an agent records
//! and reports about its node, what the aggregator answers, and the shape of
//! `network.json`. Plain serde structs, stable JSON field names.

pub mod bundle;
pub mod control;
pub mod limit;
pub mod network;
pub mod session;

use serde::{Deserialize, Serialize};

/// A block whose state geth wrote to disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedBlock {
    pub number: u64,
    /// 0x-prefixed block hash, as geth logged it.
    pub hash: String,
}

/// The agent's verdict on one geth shutdown, proven from geth's own log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutdownVerdict {
    pub clean: bool,
    /// Why it was (un)clean, for operators.
    pub reason: String,
    /// Head when the stop began, as geth reported it.
    #[serde(default)]
    pub head_before: Option<u64>,
    /// The head block whose state geth wrote to disk.
    #[serde(default)]
    pub persisted: Option<PersistedBlock>,
    /// geth's exit code (`None` when it died by a signal).
    pub exit_code: Option<i32>,
    /// Killed by the agent after the grace period.
    pub killed: bool,
    pub duration_ms: u64,
    /// Seconds since the Unix epoch.
    pub at: u64,
}

/// Milliseconds since the Unix epoch (0 before it, saturating far after).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Largest report body the aggregator accepts.
pub const MAX_REPORT_BYTES: usize = 256 * 1024;

/// HTTP headers that authenticate a report: the node's address (derived from
/// its devp2p node key), the time in Unix milliseconds, and a recoverable
/// secp256k1 signature by the node key over [`signing_payload`].
pub const HEADER_NODE: &str = "x-geth-node";
pub const HEADER_TIME: &str = "x-geth-time";
pub const HEADER_SIGNATURE: &str = "x-geth-signature";

/// The bytes a report signature covers (hashed with keccak-256 before signing).
pub fn signing_payload(time_ms: u64, body: &[u8]) -> Vec<u8> {
    let mut payload = format!("geth-agent report v1\n{time_ms}\n").into_bytes();
    payload.extend_from_slice(body);
    payload
}

/// HTTP header carrying the aggregator's recoverable secp256k1 signature over
/// [`reply_signing_payload`], by the aggregator key published in `network.json`.
pub const HEADER_REPLY_SIGNATURE: &str = "x-geth-aggregator-signature";

/// The bytes a reply signature covers: the reply is bound to the request it
/// answers by that request's own signature (`x-geth-signature`), so a reply
/// cannot be replayed to another request.
pub fn reply_signing_payload(request_signature: &str, body: &[u8]) -> Vec<u8> {
    let mut payload = format!("geth-aggregator reply v1\n{request_signature}\n").into_bytes();
    payload.extend_from_slice(body);
    payload
}

/// One report from an agent (`POST /api/report`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Report {
    Block(BlockReport),
    Stats(Box<StatsReport>),
    Events { events: Vec<Event> },
}

/// A new head, as the node saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockReport {
    pub number: u64,
    pub hash: String,
    pub parent_hash: String,
    pub timestamp: u64,
    /// The real clique sealer (`clique_getSigner`).
    pub signer: Option<String>,
    pub difficulty: u64,
    pub transactions: u64,
    pub gas_used: u64,
    pub gas_limit: u64,
    /// When the node's agent saw it (Unix milliseconds).
    pub seen_at_ms: u64,
}

/// The node's state, every few seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatsReport {
    pub name: String,
    pub client: Option<String>,
    pub agent_version: String,
    /// `enode://…@host:port` as the node wants peers to dial it.
    pub enode: Option<String>,
    pub peers: Option<u64>,
    pub syncing: Option<bool>,
    pub mining: Option<bool>,
    pub signer: Option<String>,
    pub is_signer: Option<bool>,
    pub pending: Option<u64>,
    pub queued: Option<u64>,
    pub head: Option<u64>,
    pub head_hash: Option<String>,
    pub uptime_s: u64,
    pub ready: bool,
    /// Failing readiness conditions, for humans.
    pub not_ready: Vec<String>,
    pub phase: String,
    pub last_shutdown: Option<ShutdownVerdict>,
    pub blocks_lost_total: u64,
    pub period: u64,
    /// The current clique signer set as this node sees it (`clique_getSigners`),
    /// lower-case 0x addresses.
    pub signers: Option<Vec<String>>,
    /// The gas price floor geth enforces for its pool and miner (wei), as
    /// applied with `miner_setGasPrice`; `None` until applied.
    pub min_gas_price_wei: Option<u64>,
    /// What geth advises wallets (`eth_gasPrice`, wei).
    pub suggested_gas_price_wei: Option<u64>,
}

/// A lifecycle event, spooled by the agent until acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Random id of the spool that recorded it (chosen when the spool folder
    /// is created), so a recreated spool's sequence numbers are new events.
    #[serde(default)]
    pub spool: String,
    /// Sequence number within the spool: the aggregator stores each
    /// (node, spool, seq) once.
    pub seq: u64,
    pub at_ms: u64,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// geth stopped (or crashed) and the agent judged it.
    Shutdown { verdict: ShutdownVerdict },
    /// geth started again after losing blocks or recovering from an unclean stop.
    Recovered {
        loaded_head: Option<u64>,
        previous_head: Option<u64>,
        blocks_lost: u64,
    },
    /// geth was not started: genesis mismatch or unsupported geth.
    Blocked { reason: String },
    /// A command from the aggregator ran (or was refused) on this node.
    Command {
        /// The [`control::AgentCommand`] id.
        id: String,
        command: control::Command,
        outcome: control::Outcome,
    },
}

/// A block by number and hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRef {
    pub number: u64,
    /// 0x-prefixed block hash.
    pub hash: String,
}

/// The aggregator's answer to a report (signed, see [`HEADER_REPLY_SIGNATURE`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReportReply {
    /// Sequence numbers of the reported events now stored (and earlier
    /// duplicates): the agent may forget them.
    pub acked: Vec<u64>,
    /// The fleet's reference head for the sync gate: the highest block that a
    /// majority of the signer set holds (never one node's claim).
    pub reference: Option<BlockRef>,
    /// Commands for the reporting node (re-sent until their outcome event is
    /// stored; the agent runs each id once).
    pub commands: Vec<control::AgentCommand>,
    /// The highest head an online signer node reports now (one node's claim;
    /// absent from aggregators that predate it). Only orders sealing after an
    /// unclean stop: an agent holds sealing until its own head reaches it, for
    /// a bounded time, so the longest surviving history is sealed on first.
    pub fleet_head: Option<u64>,
}

/// Live peers for discovery (`GET /api/peers`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerList {
    pub enodes: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip_and_reject_unknown_types() {
        let report = Report::Events {
            events: vec![Event {
                spool: "a1b2".into(),
                seq: 7,
                at_ms: 1,
                kind: EventKind::Blocked {
                    reason: "genesis mismatch".into(),
                },
            }],
        };
        let json = serde_json::to_string(&report).unwrap();
        assert!(
            json.contains(r#""type":"events""#) && json.contains(r#""kind":"blocked""#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), report);
        assert!(serde_json::from_str::<Report>(r#"{"type":"nope"}"#).is_err());
        let stats: Report = serde_json::from_str(r#"{"type":"stats","name":"n"}"#).unwrap();
        assert!(matches!(stats, Report::Stats(s) if s.name == "n" && s.peers.is_none()));
    }

    #[test]
    fn verdict_json_is_stable_and_tolerates_missing_optionals() {
        let v: ShutdownVerdict = serde_json::from_str(
            r#"{"clean":true,"reason":"ok","exit_code":0,"killed":false,"duration_ms":3,"at":1}"#,
        )
        .unwrap();
        assert_eq!(v.persisted, None);
        let back = serde_json::to_value(&v).unwrap();
        assert_eq!(back["clean"], true);
        assert!(serde_json::from_str::<ShutdownVerdict>(r#"{"clean":"yes"}"#).is_err());
    }
}
