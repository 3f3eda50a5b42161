//! Request authentication: a recoverable signature by the node's own key over
//! the time and the body, or, once a node has signed and been answered, an
//! HMAC under the key it shares with the aggregator (`geth_wire::session`,
//! ECDH of the two keys: no secret travels). No shared secret is configured:
//! a node can only speak for itself. Each node's signed times must strictly
//! increase (reports and peer requests share one clock), so a captured request
//! cannot be replayed.

use std::collections::HashMap;
use std::sync::Mutex;

use alloy::primitives::{keccak256, Address, Signature};
use axum::http::HeaderMap;
use geth_wire::session::{SessionKey, HEADER_MAC};
use geth_wire::{signing_payload, HEADER_NODE, HEADER_SIGNATURE, HEADER_TIME};

use crate::identity::Identity;
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

/// What authenticated a request; the reply is sealed the same way.
#[derive(Debug, Clone)]
pub enum Proof {
    /// `x-geth-signature` as received.
    Signature(String),
    /// `x-geth-mac` as received, and the node's session key.
    Mac { mac: String, key: SessionKey },
}

impl Proof {
    /// The proof a request claims before it is verified, for sealing a
    /// refusal: a signature only (a MAC is answered only once it verified,
    /// so a forged one learns nothing).
    pub fn claimed(headers: &HeaderMap) -> Option<Self> {
        headers
            .get(HEADER_SIGNATURE)
            .and_then(|v| v.to_str().ok())
            .map(|s| Self::Signature(s.to_owned()))
    }

    /// The reply's header: the aggregator's signature or the session MAC over
    /// this request's proof and the reply body.
    pub fn seal(&self, identity: &Identity, body: &[u8]) -> (&'static str, String) {
        match self {
            Self::Signature(signature) => (
                geth_wire::HEADER_REPLY_SIGNATURE,
                identity.sign_reply(signature, body),
            ),
            Self::Mac { mac, key } => (
                geth_wire::session::HEADER_REPLY_MAC,
                key.reply_mac(mac, body),
            ),
        }
    }
}

/// A verified request: the node, its signed time and what proved it.
#[derive(Debug)]
pub struct Verified {
    pub address: Address,
    pub node: KnownNode,
    pub time_ms: u64,
    pub proof: Proof,
}

/// Session keys of the nodes that signed a request, derived once per node
/// (and again after a restart: they are not stored). Only nodes of the
/// registry get one, so the table is as large as the network.
#[derive(Default)]
pub struct Sessions {
    keys: Mutex<HashMap<Address, SessionKey>>,
}

impl Sessions {
    fn get(&self, node: &Address) -> Option<SessionKey> {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.get(node).cloned()
    }

    /// The session with a node whose signature recovered to `public`.
    fn open(&self, identity: &Identity, node: Address, public: &[u8; 65]) {
        if self.get(&node).is_some() {
            return;
        }
        let Some(public) = SessionKey::public_key(public) else {
            return;
        };
        let key = identity.session_key(&public);
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.insert(node, key);
    }

    /// Nodes with a session.
    pub fn count(&self) -> usize {
        self.keys.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Who may speak: the network's nodes, their sessions, the aggregator's key.
pub struct Verifier<'a> {
    pub registry: &'a Registry,
    pub sessions: &'a Sessions,
    pub identity: &'a Identity,
}

impl Verifier<'_> {
    /// Checks the headers against the body; returns the reporting node.
    pub fn verify(
        &self,
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
        if time.abs_diff(now_ms) > MAX_CLOCK_SKEW_MS {
            return Err(Refusal::new(
                Reason::ClockSkew,
                format!(
                    "report time {time} is more than {} s away from the aggregator's clock ({now_ms})",
                    MAX_CLOCK_SKEW_MS / 1000
                ),
            ));
        }
        let (proof, public) = match (
            headers.contains_key(HEADER_SIGNATURE),
            headers.contains_key(HEADER_MAC),
        ) {
            (true, true) => {
                return Err(Refusal::new(
                    Reason::Malformed,
                    format!("send {HEADER_SIGNATURE} or {HEADER_MAC}, not both"),
                ))
            }
            (false, true) => (self.check_mac(headers, claimed, time, body)?, None),
            _ => {
                let (proof, public) = check_signature(headers, claimed, time, body)?;
                (proof, Some(public))
            }
        };
        let node = self.registry.get(&claimed).ok_or_else(|| {
            Refusal::new(
                Reason::UnknownNode,
                format!(
                    "node {claimed:#x} is not part of this network (not admitted): an operator admits it \
                     with `geth-aggregator nodes admit {claimed:#x}` (or its enode) and the admin token"
                ),
            )
        })?;
        if let Some(public) = public {
            self.sessions.open(self.identity, claimed, &public);
        }
        Ok(Verified {
            address: claimed,
            node,
            time_ms: time,
            proof,
        })
    }

    fn check_mac(
        &self,
        headers: &HeaderMap,
        claimed: Address,
        time: u64,
        body: &[u8],
    ) -> Result<Proof, Refusal> {
        let mac = header(headers, HEADER_MAC)?;
        let key = self.sessions.get(&claimed).ok_or_else(|| {
            Refusal::new(
                Reason::NoSession,
                format!(
                    "no session with node {claimed:#x} (the aggregator restarted?): sign the request \
                     with the node key ({HEADER_SIGNATURE})"
                ),
            )
        })?;
        if !key.verify_request(time, body, mac) {
            return Err(Refusal::new(
                Reason::Unauthorized,
                format!("{HEADER_MAC} does not verify under this node's session key"),
            ));
        }
        Ok(Proof::Mac {
            mac: mac.to_owned(),
            key,
        })
    }
}

/// A signature by the claimed node's key; returns its public key too.
fn check_signature(
    headers: &HeaderMap,
    claimed: Address,
    time: u64,
    body: &[u8],
) -> Result<(Proof, [u8; 65]), Refusal> {
    let text = header(headers, HEADER_SIGNATURE)?;
    let signature: Signature = text.parse().map_err(|_| {
        Refusal::new(
            Reason::Malformed,
            format!("{HEADER_SIGNATURE} is not a 65-byte hex signature"),
        )
    })?;
    let digest = keccak256(signing_payload(time, body));
    let public = crate::ecdsa::recover_public(&digest, &signature)
        .ok_or_else(|| Refusal::new(Reason::Unauthorized, "the signature does not verify"))?;
    let signer = crate::ecdsa::address_of(&public);
    if signer != claimed {
        return Err(Refusal::new(
            Reason::Unauthorized,
            format!("signed by {signer:#x}, not by {claimed:#x}"),
        ));
    }
    Ok((Proof::Signature(text.to_owned()), public))
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
