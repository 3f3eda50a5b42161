//! The network bundle (`GET /api/bundle`): what a newcomer needs to join a
//! network, public and read-only: the genesis and its hash, chain id, name,
//! block period and the enodes of live nodes. The aggregator signs the body
//! with its key (header [`crate::HEADER_REPLY_SIGNATURE`] over
//! [`signing_payload`]), so a joiner can pin the aggregator's address and the
//! genesis hash it was told out of band.

use alloy_primitives::Address;
use serde::{Deserialize, Serialize};

/// Where the aggregator serves the bundle.
pub const PATH: &str = "/api/bundle";

/// Stands in for a request signature in [`crate::reply_signing_payload`]: a
/// bundle signature cannot pass as the reply to any agent request, whose
/// signatures are 0x + 130 hex digits.
pub const SIGNING_CONTEXT: &str = "network-bundle v1";

/// The bytes the bundle signature covers.
pub fn signing_payload(body: &[u8]) -> Vec<u8> {
    crate::reply_signing_payload(SIGNING_CONTEXT, body)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bundle {
    pub name: String,
    pub chain_id: u64,
    /// Clique block period in seconds.
    pub period: u64,
    /// The genesis file's JSON, as `geth init` takes it.
    pub genesis: serde_json::Value,
    /// 0x-prefixed hash of block 0 that `genesis` produces.
    pub genesis_hash: String,
    /// `enode://…` of nodes online now, to peer with.
    pub enodes: Vec<String>,
    /// The aggregator's signing address: agents pin it.
    pub aggregator: Address,
    /// When the bundle was made (Unix ms).
    pub issued_ms: u64,
}
