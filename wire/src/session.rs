//! Session MACs between an agent and the aggregator: after one exchange signed
//! both ways (each side then knows the other's public key), both derive the
//! same key by ECDH of the node key and the aggregator key, and later requests
//! and replies carry an HMAC-SHA256 under it instead of a secp256k1 signature.
//! Same guarantees (only the node and the aggregator hold the key; the request
//! time still strictly increases; a reply is bound to its request's MAC), at a
//! few microseconds instead of a signature recovery and a signature each.
//!
//! No secret ever travels: an aggregator that lost its sessions (restarted)
//! refuses a MAC with 401 `no_session`, and the agent signs again.

use alloy_primitives::hex;
use hmac::{Hmac, Mac};
pub use k256::{NonZeroScalar, PublicKey};
use sha2::Sha256;

use crate::{reply_signing_payload, signing_payload};

/// HMAC-SHA256 under the session key over [`signing_payload`], `0x` + 64 hex
/// digits; sent instead of `x-geth-signature`.
pub const HEADER_MAC: &str = "x-geth-mac";
/// HMAC-SHA256 under the session key over [`reply_signing_payload`] of the
/// request's MAC and the reply body.
pub const HEADER_REPLY_MAC: &str = "x-geth-aggregator-mac";
/// The refusal label of a MAC the aggregator has no session for.
pub const NO_SESSION: &str = "no_session";

const KDF_INFO: &[u8] = b"geth-agent session v1";

/// The key one node and the aggregator share.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKey([u8; 32]);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

type HmacSha256 = Hmac<Sha256>;

impl SessionKey {
    /// ECDH of our secret and the peer's public key, through HKDF-SHA256.
    pub fn derive(secret: &NonZeroScalar, peer: &PublicKey) -> Self {
        let shared = k256::ecdh::diffie_hellman(secret, peer.as_affine());
        let mut key = [0u8; 32];
        shared
            .extract::<Sha256>(None)
            .expand(KDF_INFO, &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Self(key)
    }

    /// The peer's public key from its 64-byte (x ‖ y) or 65-byte SEC1 form.
    pub fn public_key(bytes: &[u8]) -> Option<PublicKey> {
        match bytes.len() {
            64 => {
                let mut sec1 = [0u8; 65];
                sec1[0] = 4;
                sec1[1..].copy_from_slice(bytes);
                PublicKey::from_sec1_bytes(&sec1).ok()
            }
            _ => PublicKey::from_sec1_bytes(bytes).ok(),
        }
    }

    fn hmac(&self, payload: &[u8]) -> HmacSha256 {
        let mut mac =
            HmacSha256::new_from_slice(&self.0).expect("HMAC-SHA256 takes a key of any length");
        mac.update(payload);
        mac
    }

    fn tag(&self, payload: &[u8]) -> String {
        format!(
            "0x{}",
            hex::encode(self.hmac(payload).finalize().into_bytes())
        )
    }

    /// Constant-time check of a `0x`-hex tag.
    fn check(&self, payload: &[u8], tag: &str) -> bool {
        let Some(bytes) = tag.strip_prefix("0x").and_then(|h| hex::decode(h).ok()) else {
            return false;
        };
        bytes.len() == 32 && self.hmac(payload).verify_slice(&bytes).is_ok()
    }

    /// The `x-geth-mac` of a request.
    pub fn request_mac(&self, time_ms: u64, body: &[u8]) -> String {
        self.tag(&signing_payload(time_ms, body))
    }

    pub fn verify_request(&self, time_ms: u64, body: &[u8], mac: &str) -> bool {
        self.check(&signing_payload(time_ms, body), mac)
    }

    /// The `x-geth-aggregator-mac` of the reply to the request that carried
    /// `request_mac`.
    pub fn reply_mac(&self, request_mac: &str, body: &[u8]) -> String {
        self.tag(&reply_signing_payload(request_mac, body))
    }

    pub fn verify_reply(&self, request_mac: &str, body: &[u8], mac: &str) -> bool {
        self.check(&reply_signing_payload(request_mac, body), mac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keypair(byte: u8) -> (NonZeroScalar, PublicKey) {
        let secret = k256::SecretKey::from_slice(&[byte; 32]).unwrap();
        (secret.to_nonzero_scalar(), secret.public_key())
    }

    #[test]
    fn both_sides_derive_the_same_key_and_no_third_party_does() {
        let (node, node_pub) = keypair(1);
        let (aggregator, aggregator_pub) = keypair(2);
        let (other, _) = keypair(3);
        let at_node = SessionKey::derive(&node, &aggregator_pub);
        assert_eq!(at_node, SessionKey::derive(&aggregator, &node_pub));
        assert_ne!(at_node, SessionKey::derive(&other, &aggregator_pub));
        assert_ne!(at_node, SessionKey::derive(&other, &node_pub));
        assert_eq!(format!("{at_node:?}"), "SessionKey(..)", "never logged");
    }

    /// Node 1's session with aggregator 2.
    fn session() -> SessionKey {
        SessionKey::derive(&keypair(1).0, &keypair(2).1)
    }

    #[test]
    fn a_mac_covers_time_body_and_direction() {
        let key = session();
        let mac = key.request_mac(1000, b"{}");
        assert!(key.verify_request(1000, b"{}", &mac));
        assert!(!key.verify_request(1001, b"{}", &mac), "another time");
        assert!(!key.verify_request(1000, b"{ }", &mac), "another body");
        assert!(
            !key.verify_reply(&mac, b"{}", &mac),
            "a request MAC is no reply MAC"
        );
        let foreign = SessionKey::derive(&keypair(3).0, &keypair(2).1);
        assert!(
            !foreign.verify_request(1000, b"{}", &mac),
            "another node's key"
        );

        let reply = key.reply_mac(&mac, b"ok");
        assert!(key.verify_reply(&mac, b"ok", &reply));
        assert!(
            !key.verify_reply("0xother", b"ok", &reply),
            "another request"
        );
        assert!(!key.verify_reply(&mac, b"ok!", &reply), "another reply");
    }

    #[test]
    fn malformed_tags_are_refused_not_panicked_on() {
        let key = session();
        let mac = key.request_mac(1, b"");
        for bad in ["", "0x", "0xzz", &mac[2..], &mac[..40], &format!("{mac}00")] {
            assert!(!key.verify_request(1, b"", bad), "{bad:?}");
        }
    }

    #[test]
    fn public_keys_parse_from_enode_and_sec1_forms_only_when_on_the_curve() {
        use k256::elliptic_curve::sec1::ToEncodedPoint;
        let (_, public) = keypair(7);
        let uncompressed = public.to_encoded_point(false);
        let sec1 = uncompressed.as_bytes();
        assert_eq!(sec1.len(), 65);
        assert_eq!(
            SessionKey::public_key(&public.to_sec1_bytes()),
            Some(public)
        );
        assert_eq!(SessionKey::public_key(sec1), Some(public));
        assert_eq!(SessionKey::public_key(&sec1[1..]), Some(public));
        assert_eq!(SessionKey::public_key(&[0u8; 64]), None);
        assert_eq!(SessionKey::public_key(&[1u8; 10]), None);
    }
}
