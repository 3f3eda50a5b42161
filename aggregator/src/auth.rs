//! Report authentication: a recoverable signature by the node's own key over
//! the time and the body. No shared secret: a node can only speak for itself.

use alloy::primitives::{keccak256, Address, Signature};
use axum::http::HeaderMap;
use geth_wire::{signing_payload, HEADER_NODE, HEADER_SIGNATURE, HEADER_TIME};

use crate::registry::{KnownNode, Registry};

/// Reports older or newer than this are refused (replay window).
pub const MAX_CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The request is not a well-formed signed report (400).
    #[error("{0}")]
    Malformed(String),
    /// Well-formed but not from a known node (401).
    #[error("{0}")]
    Unauthorized(String),
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, AuthError> {
    headers
        .get(name)
        .ok_or_else(|| AuthError::Unauthorized(format!("missing header {name}")))?
        .to_str()
        .map_err(|_| AuthError::Malformed(format!("header {name} is not text")))
}

/// Checks the headers against the body; returns the reporting node.
pub fn verify<'r>(
    registry: &'r Registry,
    headers: &HeaderMap,
    body: &[u8],
    now_ms: u64,
) -> Result<(Address, &'r KnownNode), AuthError> {
    let claimed: Address = header(headers, HEADER_NODE)?
        .parse()
        .map_err(|_| AuthError::Malformed(format!("{HEADER_NODE} is not an address")))?;
    let time: u64 = header(headers, HEADER_TIME)?.parse().map_err(|_| {
        AuthError::Malformed(format!("{HEADER_TIME} is not a number of milliseconds"))
    })?;
    let signature: Signature = header(headers, HEADER_SIGNATURE)?.parse().map_err(|_| {
        AuthError::Malformed(format!("{HEADER_SIGNATURE} is not a 65-byte hex signature"))
    })?;
    if time.abs_diff(now_ms) > MAX_CLOCK_SKEW_MS {
        return Err(AuthError::Unauthorized(format!(
            "report time {time} is more than {} s away from the aggregator's clock",
            MAX_CLOCK_SKEW_MS / 1000
        )));
    }
    let digest = keccak256(signing_payload(time, body));
    let signer = signature
        .recover_address_from_prehash(&digest)
        .map_err(|_| AuthError::Unauthorized("the signature does not verify".into()))?;
    if signer != claimed {
        return Err(AuthError::Unauthorized(format!(
            "signed by {signer:#x}, not by {claimed:#x}"
        )));
    }
    let node = registry.get(&claimed).ok_or_else(|| {
        AuthError::Unauthorized(format!("node {claimed:#x} is not part of this network"))
    })?;
    Ok((claimed, node))
}
