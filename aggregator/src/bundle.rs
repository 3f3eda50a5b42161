//! The network bundle (`GET /api/bundle`, public): genesis and its hash, chain
//! id, name, block period and the enodes of live nodes, signed by the
//! aggregator key (see `geth_wire::bundle`). `geth-agent join` fetches it.
//!
//! The genesis hash is computed here as geth v1.13 does for a pre-London
//! clique genesis (state root of the alloc, then the header hash), so the
//! aggregator needs no geth; the joiner checks it again with its own geth.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use alloy::consensus::Header;
use alloy::primitives::{keccak256, Address, Bytes, B256, B64, U256};
use alloy_trie::root::{state_root_unhashed, storage_root_unhashed};
use alloy_trie::TrieAccount;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use geth_wire::bundle::{Bundle, SIGNING_CONTEXT};
use geth_wire::network::Network;
use serde_json::Value;

use crate::ingest::error;
use crate::state::{now_ms, App};

/// geth's defaults for fields a genesis file leaves out (params.GenesisGasLimit,
/// params.GenesisDifficulty).
const DEFAULT_GAS_LIMIT: u64 = 4_712_388;
const DEFAULT_DIFFICULTY: u64 = 131_072;

#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    #[error("genesis {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("genesis: {0}")]
    Invalid(String),
}

/// What the bundle says about the chain; fixed for the aggregator's life.
#[derive(Debug, Clone)]
pub struct ChainInfo {
    pub name: String,
    pub chain_id: u64,
    pub period: u64,
    pub genesis: Value,
    pub genesis_hash: B256,
    /// network.json's enodes: offered when no node is online.
    pub listed_enodes: Vec<String>,
}

impl ChainInfo {
    /// Reads the genesis file of `network` and checks it against network.json.
    pub fn load(network: &Network, genesis_path: &Path) -> Result<Self, GenesisError> {
        let text = std::fs::read_to_string(genesis_path).map_err(|source| GenesisError::Io {
            path: genesis_path.to_owned(),
            source,
        })?;
        let genesis: Value = serde_json::from_str(&text)
            .map_err(|e| GenesisError::Invalid(format!("{}: {e}", genesis_path.display())))?;
        let chain_id = genesis.pointer("/config/chainId").and_then(Value::as_u64);
        if chain_id != Some(network.chain_id) {
            return Err(GenesisError::Invalid(format!(
                "{}: config.chainId {chain_id:?} is not network.json's chain id {}",
                genesis_path.display(),
                network.chain_id
            )));
        }
        Ok(Self {
            name: network.name.clone(),
            chain_id: network.chain_id,
            period: network.period,
            genesis_hash: genesis_hash(&genesis)?,
            genesis,
            listed_enodes: network.nodes.iter().map(|n| n.enode.clone()).collect(),
        })
    }
}

/// A JSON quantity as geth reads genesis fields: a `0x` hex or decimal
/// string, or a number; absent or null is `None`.
fn quantity(value: Option<&Value>, field: &str) -> Result<Option<U256>, GenesisError> {
    let bad = || GenesisError::Invalid(format!("{field} is not a number"));
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(|n| Some(U256::from(n))).ok_or_else(bad),
        Some(Value::String(s)) => match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some("") => Ok(Some(U256::ZERO)),
            Some(hex) => U256::from_str_radix(hex, 16).map(Some).map_err(|_| bad()),
            None => U256::from_str_radix(s, 10).map(Some).map_err(|_| bad()),
        },
        Some(_) => Err(bad()),
    }
}

fn quantity_u64(value: Option<&Value>, field: &str) -> Result<Option<u64>, GenesisError> {
    quantity(value, field)?
        .map(|v| {
            u64::try_from(v).map_err(|_| GenesisError::Invalid(format!("{field} exceeds 64 bits")))
        })
        .transpose()
}

fn hex_bytes(value: Option<&Value>, field: &str) -> Result<Vec<u8>, GenesisError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => hex::decode(s.strip_prefix("0x").unwrap_or(s))
            .map_err(|_| GenesisError::Invalid(format!("{field} is not hex"))),
        Some(_) => Err(GenesisError::Invalid(format!(
            "{field} is not a hex string"
        ))),
    }
}

fn fixed<const N: usize>(value: Option<&Value>, field: &str) -> Result<[u8; N], GenesisError> {
    let bytes = hex_bytes(value, field)?;
    if bytes.is_empty() {
        return Ok([0; N]);
    }
    // geth left-pads short hashes and addresses.
    if bytes.len() > N {
        return Err(GenesisError::Invalid(format!(
            "{field} is longer than {N} bytes"
        )));
    }
    let mut out = [0u8; N];
    out[N - bytes.len()..].copy_from_slice(&bytes);
    Ok(out)
}

/// The hash of block 0 that `geth init` writes for this (pre-London) genesis.
pub fn genesis_hash(genesis: &Value) -> Result<B256, GenesisError> {
    if genesis
        .pointer("/config/londonBlock")
        .is_some_and(|v| !v.is_null())
    {
        return Err(GenesisError::Invalid(
            "London genesis (base fee) is not supported".into(),
        ));
    }
    let mut accounts = Vec::new();
    if let Some(alloc) = genesis.get("alloc") {
        let alloc = alloc
            .as_object()
            .ok_or_else(|| GenesisError::Invalid("alloc is not an object".into()))?;
        for (address, account) in alloc {
            let field = format!("alloc.{address}");
            let address =
                Address::from(fixed::<20>(Some(&Value::String(address.clone())), &field)?);
            let balance = quantity(account.get("balance"), &field)?.unwrap_or_default();
            let nonce = quantity_u64(account.get("nonce"), &field)?.unwrap_or_default();
            let code = hex_bytes(account.get("code"), &field)?;
            let mut storage = Vec::new();
            if let Some(slots) = account.get("storage").and_then(Value::as_object) {
                for (slot, value) in slots {
                    let value = U256::from_be_bytes(fixed::<32>(Some(value), &field)?);
                    // A zero value is no entry in the storage trie.
                    if !value.is_zero() {
                        let slot =
                            B256::from(fixed::<32>(Some(&Value::String(slot.clone())), &field)?);
                        storage.push((slot, value));
                    }
                }
            }
            accounts.push((
                address,
                TrieAccount {
                    nonce,
                    balance,
                    storage_root: storage_root_unhashed(storage),
                    code_hash: keccak256(&code),
                },
            ));
        }
    }
    let gas_limit = match quantity_u64(genesis.get("gasLimit"), "gasLimit")? {
        Some(0) | None => DEFAULT_GAS_LIMIT,
        Some(g) => g,
    };
    let mix_hash = B256::from(fixed::<32>(genesis.get("mixHash"), "mixHash")?);
    let difficulty = match quantity(genesis.get("difficulty"), "difficulty")? {
        None if mix_hash.is_zero() => U256::from(DEFAULT_DIFFICULTY),
        d => d.unwrap_or_default(),
    };
    let header = Header {
        parent_hash: B256::from(fixed::<32>(genesis.get("parentHash"), "parentHash")?),
        beneficiary: Address::from(fixed::<20>(genesis.get("coinbase"), "coinbase")?),
        state_root: state_root_unhashed(accounts),
        difficulty,
        number: quantity_u64(genesis.get("number"), "number")?.unwrap_or_default(),
        gas_limit,
        gas_used: quantity_u64(genesis.get("gasUsed"), "gasUsed")?.unwrap_or_default(),
        timestamp: quantity_u64(genesis.get("timestamp"), "timestamp")?.unwrap_or_default(),
        extra_data: Bytes::from(hex_bytes(genesis.get("extraData"), "extraData")?),
        mix_hash,
        nonce: B64::from(
            quantity_u64(genesis.get("nonce"), "nonce")?
                .unwrap_or_default()
                .to_be_bytes(),
        ),
        ..Header::default()
    };
    Ok(header.hash_slow())
}

/// `GET /api/bundle`: public, signed by the aggregator key.
pub async fn serve(State(app): State<Arc<App>>) -> Response {
    let Some(chain) = &app.chain else {
        return error(
            StatusCode::NOT_FOUND,
            "no network bundle: the aggregator has no genesis file (--genesis, or genesis.json \
             beside network.json)",
        );
    };
    let mut enodes: Vec<String> = {
        let live = app.live();
        live.nodes
            .values()
            .filter(|n| n.online)
            .filter_map(|n| n.enode.clone())
            .collect()
    };
    if enodes.is_empty() {
        enodes = chain.listed_enodes.clone();
    }
    let bundle = Bundle {
        name: chain.name.clone(),
        chain_id: chain.chain_id,
        period: chain.period,
        genesis: chain.genesis.clone(),
        genesis_hash: format!("{:#x}", chain.genesis_hash),
        enodes,
        aggregator: app.identity.address(),
        issued_ms: now_ms(),
    };
    let body = serde_json::to_vec(&bundle).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = (StatusCode::OK, body.clone()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(signature) = HeaderValue::from_str(&app.identity.sign_reply(SIGNING_CONTEXT, &body)) {
        headers.insert(geth_wire::HEADER_REPLY_SIGNATURE, signature);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash `geth init` (v1.13.15) printed for this genesis: balances in
    /// hex and decimal, a nonce, code, storage (a short key, a zero value).
    #[test]
    fn the_genesis_hash_is_the_one_geth_writes() {
        let genesis: Value =
            serde_json::from_str(include_str!("../tests/fixtures/genesis-reference.json")).unwrap();
        assert_eq!(
            format!("{:#x}", genesis_hash(&genesis).unwrap()),
            "0x0c1dda39056f95e247da7418f4a15f6d9afca020971e58a159668efad3774428"
        );
    }

    async fn fetch(app: App) -> (StatusCode, Option<String>, Vec<u8>) {
        let response = serve(State(Arc::new(app))).await;
        let code = response.status();
        let signature = response
            .headers()
            .get(geth_wire::HEADER_REPLY_SIGNATURE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (code, signature, body.to_vec())
    }

    fn app(dir: &Path) -> App {
        App::new(
            crate::registry::Registry::default(),
            crate::live::Live::unconfigured(),
            crate::store::Store::open(&dir.join("a.db"), 100).unwrap(),
            Default::default(),
            crate::identity::Identity::random(),
        )
    }

    #[tokio::test]
    async fn the_bundle_is_signed_by_the_aggregator_key_or_absent_without_genesis() {
        let dir = tempfile::tempdir().unwrap();
        let (code, signature, body) = fetch(app(dir.path())).await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert!(signature.is_none());
        assert!(String::from_utf8_lossy(&body).contains("--genesis"));

        let mut with_chain = app(dir.path());
        let genesis: Value =
            serde_json::from_str(include_str!("../tests/fixtures/genesis-reference.json")).unwrap();
        with_chain.chain = Some(ChainInfo {
            name: "n".into(),
            chain_id: 1337,
            period: 2,
            genesis_hash: genesis_hash(&genesis).unwrap(),
            genesis,
            listed_enodes: vec!["enode://ab@127.0.0.1:1".into()],
        });
        let aggregator = with_chain.identity.address();
        let (code, signature, body) = fetch(with_chain).await;
        assert_eq!(code, StatusCode::OK);
        let bundle: Bundle = serde_json::from_slice(&body).unwrap();
        assert_eq!(bundle.aggregator, aggregator);
        assert_eq!(
            bundle.genesis_hash,
            "0x0c1dda39056f95e247da7418f4a15f6d9afca020971e58a159668efad3774428"
        );
        assert_eq!(
            bundle.enodes,
            ["enode://ab@127.0.0.1:1"],
            "none online: listed"
        );
        let signature: alloy::primitives::Signature = signature.unwrap().parse().unwrap();
        let digest = keccak256(geth_wire::bundle::signing_payload(&body));
        assert_eq!(
            signature.recover_address_from_prehash(&digest).unwrap(),
            aggregator
        );
    }

    #[test]
    fn quantities_read_like_geth() {
        let q = |v: Value| quantity(Some(&v), "f").unwrap();
        assert_eq!(q(Value::from("0x10")), Some(U256::from(16)));
        assert_eq!(q(Value::from("16")), Some(U256::from(16)));
        assert_eq!(q(Value::from(7)), Some(U256::from(7)));
        assert_eq!(q(Value::from("0x")), Some(U256::ZERO));
        assert!(quantity(Some(&Value::from("zz")), "f").is_err());
        assert!(quantity(Some(&Value::Bool(true)), "f").is_err());
        assert_eq!(quantity(None, "f").unwrap(), None);
    }

    #[test]
    fn london_and_broken_genesis_files_are_errors_not_panics() {
        let mut g: Value =
            serde_json::from_str(include_str!("../../genesis/testnetsidechain.json")).unwrap();
        assert!(genesis_hash(&g).is_ok());
        g["alloc"] = Value::from(3);
        assert!(genesis_hash(&g).is_err());
        g["alloc"] = serde_json::json!({ "0x01": { "balance": "nope" } });
        assert!(genesis_hash(&g).is_err());
        g["alloc"] = serde_json::json!({});
        g["config"]["londonBlock"] = Value::from(0);
        assert!(genesis_hash(&g).is_err());
    }
}
