//! Why a report was refused: one reason per refusal, its HTTP status, a
//! metric label, and a warning that is logged at most once per node and
//! reason per minute (a hostile or broken node must not flood the log).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use geth_wire::limit::KeyedLimiter;

/// Warnings for one node and reason are logged at most this often.
pub const LOG_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Not a well-formed signed report or frame.
    Malformed,
    /// Missing or wrong signature or MAC.
    Unauthorized,
    /// A MAC from a node the aggregator has no session with (it restarted):
    /// the node signs its next request.
    NoSession,
    /// Signed time too far from the aggregator's clock.
    ClockSkew,
    /// Signed by a key that is not a node of the network.
    UnknownNode,
    /// Signed time not newer than the node's last accepted request.
    Replay,
    /// Over the body or event limit.
    TooLarge,
    /// A block hash or parent hash that is not 0x + 64 hex digits.
    BadHash,
    /// A sealer that is not a 0x address.
    BadSigner,
    /// A block number beyond what the store can hold (i64).
    NumberOverflow,
    /// A block timestamp too far in the future.
    FutureTimestamp,
    /// A block higher than the chain can have grown since the reference head.
    ImplausibleHeight,
    /// A block whose parent contradicts the node's own previous head.
    ParentMismatch,
    /// An enode whose key is not the reporting node's key.
    ForeignEnode,
    /// An enode that is not `enode://<128 hex>@host:port`.
    BadEnode,
    /// A signer set that is not a list of 0x addresses.
    BadSignerSet,
    /// Too many unauthenticated ethstats connections from one address.
    TooManyConnections,
    /// Too many unauthenticated ethstats connections in total.
    Overloaded,
}

impl Reason {
    /// The `reason` label of `clique_fleet_rejected_reports_total`.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::Unauthorized => "unauthorized",
            Reason::NoSession => geth_wire::session::NO_SESSION,
            Reason::ClockSkew => "clock_skew",
            Reason::UnknownNode => "unknown_node",
            Reason::Replay => "replay",
            Reason::TooLarge => "too_large",
            Reason::BadHash => "bad_hash",
            Reason::BadSigner => "bad_signer",
            Reason::NumberOverflow => "number_overflow",
            Reason::FutureTimestamp => "future_timestamp",
            Reason::ImplausibleHeight => "implausible_height",
            Reason::ParentMismatch => "parent_mismatch",
            Reason::ForeignEnode => "foreign_enode",
            Reason::BadEnode => "bad_enode",
            Reason::BadSignerSet => "bad_signer_set",
            Reason::TooManyConnections => "too_many_connections",
            Reason::Overloaded => "overloaded",
        }
    }

    /// The HTTP status a refused request gets.
    pub fn status(self) -> u16 {
        match self {
            Reason::Unauthorized | Reason::NoSession | Reason::ClockSkew | Reason::UnknownNode => {
                401
            }
            Reason::Replay => 409,
            Reason::TooLarge => 413,
            Reason::TooManyConnections => 429,
            Reason::Overloaded => 503,
            _ => 400,
        }
    }
}

/// One refused request: the reason and a sentence for the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub reason: Reason,
    pub message: String,
}

impl Refusal {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// Rate limiter for refusal warnings: one per node and reason per [`LOG_EVERY`].
pub struct RefusalLog {
    last: Mutex<KeyedLimiter<(String, Reason)>>,
}

impl Default for RefusalLog {
    fn default() -> Self {
        Self {
            last: Mutex::new(KeyedLimiter::new(LOG_EVERY, 10_000)),
        }
    }
}

impl RefusalLog {
    /// Whether a warning for `node` and `reason` is due now (and records it).
    pub fn due(&self, node: &str, reason: Reason, now: Instant) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.due((node.to_owned(), reason), now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_rate_limited_per_node_and_reason() {
        let log = RefusalLog::default();
        let t = Instant::now();
        assert!(log.due("a", Reason::Replay, t));
        assert!(!log.due("a", Reason::Replay, t + Duration::from_secs(10)));
        assert!(log.due("a", Reason::BadHash, t + Duration::from_secs(10)));
        assert!(log.due("b", Reason::Replay, t + Duration::from_secs(10)));
        assert!(log.due("a", Reason::Replay, t + Duration::from_secs(61)));
        assert_eq!(Reason::Replay.status(), 409);
        assert_eq!(Reason::NumberOverflow.status(), 400);
    }
}
