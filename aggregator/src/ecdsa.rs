//! secp256k1 on the report path, on libsecp256k1 (the `secp256k1` crate):
//! every agent report costs the aggregator one signature recovery and one
//! reply signature, and libsecp256k1 does each several times faster than the
//! pure-Rust k256 behind alloy's signer (whose recovery also re-verifies).
//! The answers are alloy's: the tests below check them against it.

use alloy::primitives::{keccak256, Address, Signature, B256};
use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
use secp256k1::{Message, SecretKey, SECP256K1};

/// The address that signed `digest`, or `None` for a signature that does not
/// recover. A high-s signature counts as its low-s twin, as in alloy (requests
/// are bound by their signed time, not by the signature's bytes).
pub fn recover_address(digest: &B256, signature: &Signature) -> Option<Address> {
    recover_public(digest, signature).map(|public| address_of(&public))
}

/// The public key (65-byte uncompressed SEC1) that signed `digest`.
pub fn recover_public(digest: &B256, signature: &Signature) -> Option<[u8; 65]> {
    let signature = signature.normalize_s().unwrap_or(*signature);
    let id = RecoveryId::try_from(i32::from(signature.v())).ok()?;
    let compact = RecoverableSignature::from_compact(&signature.as_bytes()[..64], id).ok()?;
    let key = SECP256K1
        .recover_ecdsa(&Message::from_digest(digest.0), &compact)
        .ok()?;
    Some(key.serialize_uncompressed())
}

/// The Ethereum address of a 65-byte uncompressed public key.
pub fn address_of(public: &[u8; 65]) -> Address {
    Address::from_slice(&keccak256(&public[1..])[12..])
}

/// A private key that signs digests.
pub struct DigestSigner(SecretKey);

impl DigestSigner {
    /// `None` for bytes that are not a valid secp256k1 private key.
    pub fn new(key: &B256) -> Option<Self> {
        SecretKey::from_byte_array(&key.0).ok().map(Self)
    }

    /// The 65-byte signature `r ‖ s ‖ v` (v = 27 or 28), low-s, as geth and
    /// alloy write it.
    pub fn sign(&self, digest: &B256) -> [u8; 65] {
        let (id, compact) = SECP256K1
            .sign_ecdsa_recoverable(&Message::from_digest(digest.0), &self.0)
            .serialize_compact();
        let mut out = [0u8; 65];
        out[..64].copy_from_slice(&compact);
        out[64] = 27 + i32::from(id) as u8;
        out
    }
}

#[cfg(test)]
mod tests {
    use alloy::primitives::U256;
    use alloy::signers::local::PrivateKeySigner;
    use alloy::signers::SignerSync;

    use super::*;

    #[test]
    fn recovers_what_alloy_recovers() {
        for i in 0..50u8 {
            let key = PrivateKeySigner::random();
            let digest = keccak256([i]);
            let signature = key.sign_hash_sync(&digest).unwrap();
            assert_eq!(recover_address(&digest, &signature), Some(key.address()));
            // Another digest recovers someone else, as with alloy.
            let other = keccak256([i, 1]);
            assert_eq!(
                recover_address(&other, &signature),
                signature.recover_address_from_prehash(&other).ok()
            );
            assert_ne!(recover_address(&other, &signature), Some(key.address()));
        }
    }

    #[test]
    fn signs_what_alloy_verifies() {
        for i in 0..50u8 {
            let key = PrivateKeySigner::random();
            let signer = DigestSigner::new(&key.to_bytes()).unwrap();
            let digest = keccak256([i]);
            let bytes = signer.sign(&digest);
            let parsed = Signature::try_from(&bytes[..]).unwrap();
            assert_eq!(
                parsed.recover_address_from_prehash(&digest).unwrap(),
                key.address()
            );
            assert!(parsed.normalize_s().is_none(), "low s");
            // Deterministic (RFC 6979), like alloy's signer.
            assert_eq!(
                parsed,
                key.sign_hash_sync(&digest).unwrap(),
                "same bytes as alloy"
            );
        }
    }

    #[test]
    fn high_s_as_alloy_zero_and_out_of_range_refused() {
        let key = PrivateKeySigner::random();
        let digest = keccak256(b"report");
        let good = key.sign_hash_sync(&digest).unwrap();
        // The same signature with s' = n - s and the parity flipped.
        let n = U256::from_str_radix(
            "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141",
            16,
        )
        .unwrap();
        let high = Signature::new(good.r(), n - good.s(), !good.v());
        assert_eq!(
            high.recover_address_from_prehash(&digest).ok(),
            Some(key.address())
        );
        assert_eq!(recover_address(&digest, &high), Some(key.address()));
        let zero = Signature::new(U256::ZERO, U256::ZERO, false);
        assert_eq!(recover_address(&digest, &zero), None);
        let beyond = Signature::new(n, good.s(), good.v());
        assert_eq!(recover_address(&digest, &beyond), None);
        assert!(DigestSigner::new(&B256::ZERO).is_none());
    }
}
