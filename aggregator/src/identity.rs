//! The aggregator's own key: it signs every reply to an agent, bound to the
//! request it answers (see `geth_wire::reply_signing_payload`). Agents pin the
//! address published in `network.json` (`aggregator.address`).
//!
//! The key file holds 64 hex digits (optionally `0x`), like a geth nodekey.
//! `--key FILE` wins over `network.json`'s `aggregator.key` (relative to the
//! folder of `network.json`). Without either file the aggregator runs with a
//! fresh random key and warns: pinned agents will refuse its replies.

use std::path::{Path, PathBuf};

use alloy::primitives::{keccak256, Address, B256};
use alloy::signers::local::PrivateKeySigner;
use geth_wire::network::Network;
use geth_wire::session::{PublicKey, SessionKey};

use crate::ecdsa::DigestSigner;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("aggregator key {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("aggregator key {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("aggregator key {path} is for {found:#x}, but network.json publishes aggregator.address {expected:#x}")]
    Mismatch {
        path: PathBuf,
        found: Address,
        expected: Address,
    },
}

pub struct Identity {
    key: PrivateKeySigner,
    /// The same key, for the replies (see `crate::ecdsa`).
    replies: DigestSigner,
}

/// What [`load`] found, with a warning to log when the key is a random one.
pub struct Loaded {
    pub identity: Identity,
    pub warning: Option<String>,
}

fn read_key(path: &Path) -> Result<PrivateKeySigner, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    let hex_text = text.trim();
    let hex_text = hex_text.strip_prefix("0x").unwrap_or(hex_text);
    let invalid = |reason: &str| KeyError::Invalid {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    if hex_text.len() != 64 {
        return Err(invalid("expected 64 hex digits"));
    }
    let bytes = hex::decode(hex_text).map_err(|_| invalid("expected 64 hex digits"))?;
    PrivateKeySigner::from_bytes(&B256::from_slice(&bytes))
        .map_err(|_| invalid("not a valid secp256k1 private key"))
}

/// Loads the key: `flag` if given (it must exist), else network.json's
/// `aggregator.key` if that file exists, else a random key.
pub fn load(
    network: &Network,
    network_file: &Path,
    flag: Option<&Path>,
) -> Result<Loaded, KeyError> {
    let published = network.aggregator.as_ref();
    let from_network = published.map(|a| {
        network_file
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(&a.key)
    });
    let path = match (flag, from_network) {
        (Some(flag), _) => Some(flag.to_owned()),
        (None, Some(p)) if p.exists() => Some(p),
        _ => None,
    };
    let Some(path) = path else {
        let identity = Identity::random();
        let pinned = published.map_or_else(
            || "network.json publishes no aggregator address".to_owned(),
            |a| format!("agents pinned to network.json's aggregator address {:#x} will refuse its replies", a.address),
        );
        let warning = format!(
            "no aggregator key (--key or network.json aggregator.key): signing replies with a fresh random key {:#x}; {pinned}",
            identity.address()
        );
        return Ok(Loaded {
            identity,
            warning: Some(warning),
        });
    };
    let key = read_key(&path)?;
    if let Some(published) = published {
        if key.address() != published.address {
            return Err(KeyError::Mismatch {
                path,
                found: key.address(),
                expected: published.address,
            });
        }
    }
    Ok(Loaded {
        identity: Identity::from_signer(key),
        warning: None,
    })
}

impl Identity {
    pub fn random() -> Self {
        Self::from_signer(PrivateKeySigner::random())
    }

    pub fn from_signer(key: PrivateKeySigner) -> Self {
        let replies = DigestSigner::new(&key.to_bytes())
            .expect("a PrivateKeySigner holds a valid secp256k1 key");
        Self { key, replies }
    }

    pub fn address(&self) -> Address {
        self.key.address()
    }

    /// `0x` + hex of the 65-byte recoverable signature over the reply to the
    /// request that carried `request_signature`.
    pub fn sign_reply(&self, request_signature: &str, body: &[u8]) -> String {
        let digest = keccak256(geth_wire::reply_signing_payload(request_signature, body));
        format!("0x{}", hex::encode(self.replies.sign(&digest)))
    }

    /// The key this aggregator shares with the node whose public key this is.
    pub fn session_key(&self, node: &PublicKey) -> SessionKey {
        SessionKey::derive(self.key.credential().as_nonzero_scalar(), node)
    }
}

#[cfg(test)]
mod tests {
    use alloy::primitives::Signature;
    use geth_wire::network::AggregatorInfo;

    use super::*;

    fn network(aggregator: Option<AggregatorInfo>) -> Network {
        Network {
            name: "t".into(),
            chain_id: 1,
            period: 1,
            nodes: vec![],
            accounts: vec![],
            aggregator,
            durability: None,
        }
    }

    #[test]
    fn the_key_comes_from_the_flag_or_network_json_and_must_match_its_address() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("network.json");
        let key = PrivateKeySigner::random();
        std::fs::write(
            dir.path().join("aggregator.key"),
            format!("0x{}\n", hex::encode(key.to_bytes())),
        )
        .unwrap();
        let info = AggregatorInfo {
            address: key.address(),
            key: "aggregator.key".into(),
        };
        let loaded = load(&network(Some(info.clone())), &file, None).unwrap();
        assert_eq!(loaded.identity.address(), key.address());
        assert!(loaded.warning.is_none());

        let other = dir.path().join("other.key");
        std::fs::write(&other, hex::encode(PrivateKeySigner::random().to_bytes())).unwrap();
        assert!(matches!(
            load(&network(Some(info.clone())), &file, Some(&other)),
            Err(KeyError::Mismatch { .. })
        ));
        // Without a published address any flag key is taken.
        assert!(load(&network(None), &file, Some(&other)).is_ok());

        std::fs::write(&other, "not hex").unwrap();
        assert!(matches!(
            load(&network(None), &file, Some(&other)),
            Err(KeyError::Invalid { .. })
        ));
        assert!(matches!(
            load(&network(None), &file, Some(&dir.path().join("missing"))),
            Err(KeyError::Io { .. })
        ));

        // No key file at all: a random key and a warning naming the pinned address.
        std::fs::remove_file(dir.path().join("aggregator.key")).unwrap();
        let loaded = load(&network(Some(info)), &file, None).unwrap();
        assert_ne!(loaded.identity.address(), key.address());
        assert!(loaded.warning.unwrap().contains("will refuse its replies"));
    }

    /// `cargo test --release -p geth-aggregator --lib -- --ignored signing_cost --nocapture`
    #[test]
    #[ignore = "timing, for the load figures"]
    fn signing_cost() {
        let identity = Identity::random();
        let body = vec![b'x'; 200];
        let started = std::time::Instant::now();
        for _ in 0..1000 {
            identity.sign_reply("0xabc", &body);
        }
        println!("one reply signature: {:?}", started.elapsed() / 1000);
    }

    #[test]
    fn replies_are_signed_over_the_request_signature_and_body() {
        let identity = Identity::random();
        let sig = identity.sign_reply("0xabc", b"{}");
        let parsed: Signature = sig.parse().unwrap();
        let digest = keccak256(geth_wire::reply_signing_payload("0xabc", b"{}"));
        assert_eq!(
            parsed.recover_address_from_prehash(&digest).unwrap(),
            identity.address()
        );
        let other = keccak256(geth_wire::reply_signing_payload("0xabd", b"{}"));
        assert_ne!(
            parsed.recover_address_from_prehash(&other).ok(),
            Some(identity.address())
        );
    }
}
