//! Request authentication: a recoverable signature by the node's own key over
//! the time and the body. No shared secret: a node can only speak for itself.
//! Each node's signed times must strictly increase (reports and peer requests
//! share one clock), so a captured request cannot be replayed.

use std::collections::HashMap;
use std::sync::Mutex;

use alloy::primitives::{keccak256, Address, Signature};
use axum::http::HeaderMap;
use geth_wire::{signing_payload, HEADER_NODE, HEADER_SIGNATURE, HEADER_TIME};

use crate::refusals::{Reason, Refusal};
use crate::registry::{KnownNode, Registry};

/// Requests older or newer than this are refused.
pub const MAX_CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, Refusal> {
    headers
        .get(name)
        .ok_or_else(|| Refusal::new(Reason::Unauthorized, format!("missing header {name}")))?
        .to_str()
        .map_err(|_| Refusal::new(Reason::Malformed, format!("header {name} is not text")))
}

/// A verified request: the node and its signed time.
#[derive(Debug)]
pub struct Verified {
    pub address: Address,
    pub node: KnownNode,
    pub time_ms: u64,
}

/// Checks the headers against the body; returns the reporting node.
pub fn verify(
    registry: &Registry,
    headers: &HeaderMap,
    body: &[u8],
    now_ms: u64,
) -> Result<Verified, Refusal> {
    let claimed: Address = header(headers, HEADER_NODE)?.parse().map_err(|_| {
        Refusal::new(
            Reason::Malformed,
            format!("{HEADER_NODE} is not an address"),
        )
    })?;
    let time: u64 = header(headers, HEADER_TIME)?.parse().map_err(|_| {
        Refusal::new(
            Reason::Malformed,
            format!("{HEADER_TIME} is not a number of milliseconds"),
        )
    })?;
    let signature: Signature = header(headers, HEADER_SIGNATURE)?.parse().map_err(|_| {
        Refusal::new(
            Reason::Malformed,
            format!("{HEADER_SIGNATURE} is not a 65-byte hex signature"),
        )
    })?;
    if time.abs_diff(now_ms) > MAX_CLOCK_SKEW_MS {
        return Err(Refusal::new(
            Reason::ClockSkew,
            format!(
                "report time {time} is more than {} s away from the aggregator's clock ({now_ms})",
                MAX_CLOCK_SKEW_MS / 1000
            ),
        ));
    }
    let digest = keccak256(signing_payload(time, body));
    let signer = crate::ecdsa::recover_address(&digest, &signature)
        .ok_or_else(|| Refusal::new(Reason::Unauthorized, "the signature does not verify"))?;
    if signer != claimed {
        return Err(Refusal::new(
            Reason::Unauthorized,
            format!("signed by {signer:#x}, not by {claimed:#x}"),
        ));
    }
    let node = registry.get(&claimed).ok_or_else(|| {
        Refusal::new(
            Reason::UnknownNode,
            format!(
                "node {claimed:#x} is not part of this network (not admitted): an operator admits it \
                 with `geth-aggregator nodes admit {claimed:#x}` (or its enode) and the admin token"
            ),
        )
    })?;
    Ok(Verified {
        address: claimed,
        node,
        time_ms: time,
    })
}

/// Each node's last accepted signed time.
#[derive(Default)]
pub struct ReplayGuard {
    last: Mutex<HashMap<Address, u64>>,
}

impl ReplayGuard {
    /// Accepts `time_ms` only if it is newer than the node's last accepted one.
    pub fn accept(&self, node: Address, time_ms: u64) -> Result<(), Refusal> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match last.get(&node) {
            Some(&previous) if time_ms <= previous => Err(Refusal::new(
                Reason::Replay,
                format!(
                    "x-geth-time {time_ms} is not newer than this node's last accepted request ({previous}): replayed or out of order"
                ),
            )),
            _ => {
                last.insert(node, time_ms);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_times_must_strictly_increase_per_node() {
        let guard = ReplayGuard::default();
        let (a, b) = (Address::repeat_byte(1), Address::repeat_byte(2));
        assert!(guard.accept(a, 100).is_ok());
        assert_eq!(guard.accept(a, 100).unwrap_err().reason, Reason::Replay);
        assert_eq!(guard.accept(a, 99).unwrap_err().reason, Reason::Replay);
        assert!(guard.accept(b, 50).is_ok(), "per node");
        assert!(guard.accept(a, 101).is_ok());
    }
}
