//! The signing decision: read the deposit from the source chain following the
//! checklist in docs/BRIDGE.md, then sign the one fixed EIP-712 claim.

use std::collections::HashMap;
use std::sync::Mutex;

use alloy::primitives::{Address, Bytes, B256, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{Log, TransactionReceipt};
use alloy::signers::local::PrivateKeySigner;
use alloy::signers::SignerSync;
use alloy::sol_types::SolEvent;
use serde::{Deserialize, Serialize};

use crate::config::{Config, DirectionConfig, Pair};
use crate::contracts::{erc20, erc721, AssetKind, Claim, IBridge};
use crate::metrics::Metrics;
use crate::store::{AuditEntry, Recorded, SignedRecord, Store, StoreError};

/// What a client sends. Only the transaction hash and log index are read;
/// anything else in the body (a recipient, an amount) is ignored on purpose.
#[derive(Debug, Clone, Deserialize)]
pub struct SignRequest {
    pub tx_hash: B256,
    #[serde(default)]
    pub log_index: Option<u64>,
}

/// A signed claim, ready for the destination contract's `claim`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedClaim {
    pub direction: String,
    pub claim: Claim,
    pub destination_chain_id: u64,
    pub destination_contract: Address,
    pub digest: B256,
    /// r‖s‖v, v 27/28 (what OpenZeppelin's `ECDSA.recover` takes).
    pub signature: Bytes,
    pub signer: Address,
    pub source_tx: B256,
    pub log_index: u64,
    pub block_number: u64,
    pub block_hash: B256,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Signed(Box<SignedClaim>),
    /// Not deep enough yet: `confirmations` of `required`.
    Pending {
        confirmations: u64,
        required: u64,
    },
}

/// Why no signature was given. The reason text is what the client sees:
/// it names the failed check and nothing internal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("unknown direction")]
    UnknownDirection,
    #[error("too many requests")]
    RateLimited,
    #[error("source chain unavailable")]
    SourceUnavailable,
    #[error("source node is on the wrong chain")]
    WrongChain,
    #[error("transaction not found on the source chain")]
    UnknownTransaction,
    #[error("transaction reverted")]
    Reverted,
    #[error("deposit block is no longer canonical (reorg)")]
    Reorged,
    #[error("no deposit from an allow-listed bridge contract in the transaction")]
    NoDeposit,
    #[error("several deposits in the transaction: give log_index")]
    AmbiguousDeposit,
    #[error("deposit log is malformed")]
    MalformedDeposit,
    #[error("deposit is for another destination chain")]
    WrongDestination,
    #[error("deposit without the matching asset transfer")]
    AssetNotMoved,
    #[error("already claimed on the destination")]
    AlreadyClaimed,
    #[error("deposit changed since it was signed: signing halted for it, operators alerted")]
    Incident,
    #[error("internal error")]
    Internal,
}

impl Rejection {
    /// Short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::UnknownDirection => "unknown_direction",
            Self::RateLimited => "rate_limited",
            Self::SourceUnavailable => "source_unavailable",
            Self::WrongChain => "wrong_chain",
            Self::UnknownTransaction => "unknown_transaction",
            Self::Reverted => "reverted",
            Self::Reorged => "reorged",
            Self::NoDeposit => "no_deposit",
            Self::AmbiguousDeposit => "ambiguous_deposit",
            Self::MalformedDeposit => "malformed_deposit",
            Self::WrongDestination => "wrong_destination",
            Self::AssetNotMoved => "asset_not_moved",
            Self::AlreadyClaimed => "already_claimed",
            Self::Incident => "incident",
            Self::Internal => "internal",
        }
    }
}

impl From<StoreError> for Rejection {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "bridge store failed");
        Self::Internal
    }
}

struct Direction {
    config: DirectionConfig,
    source: DynProvider,
    destination: Option<DynProvider>,
    signer: PrivateKeySigner,
}

type CacheKey = (String, B256, Option<u64>);

pub struct Service {
    directions: HashMap<String, Direction>,
    store: Store,
    pub metrics: Metrics,
    cache: Mutex<HashMap<CacheKey, SignedClaim>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("direction {direction}: cannot read the password file: {source}")]
    Password {
        direction: String,
        source: std::io::Error,
    },
    // The keystore error text names neither key nor password.
    #[error("direction {direction}: cannot decrypt the keystore {path}: {source}")]
    Keystore {
        direction: String,
        path: std::path::PathBuf,
        source: alloy::signers::local::LocalSignerError,
    },
    #[error("direction {direction}: bad RPC URL")]
    Url { direction: String },
    #[error("directions {0} and {1} use the same key: each direction needs its own")]
    SharedKey(String, String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

const CACHE_LIMIT: usize = 100_000;

impl Service {
    pub fn new(config: &Config) -> Result<Self, StartError> {
        let mut directions = HashMap::new();
        let mut keys: HashMap<Address, String> = HashMap::new();
        for d in &config.directions {
            let password = std::fs::read_to_string(&d.password_file).map_err(|source| {
                StartError::Password {
                    direction: d.name.clone(),
                    source,
                }
            })?;
            let signer = PrivateKeySigner::decrypt_keystore(&d.keystore, password.trim_end())
                .map_err(|source| StartError::Keystore {
                    direction: d.name.clone(),
                    path: d.keystore.clone(),
                    source,
                })?;
            if let Some(other) = keys.insert(signer.address(), d.name.clone()) {
                return Err(StartError::SharedKey(other, d.name.clone()));
            }
            let url = |u: &str| {
                u.parse().map_err(|_| StartError::Url {
                    direction: d.name.clone(),
                })
            };
            let source = ProviderBuilder::new()
                .disable_recommended_fillers()
                .connect_http(url(&d.source_rpc)?)
                .erased();
            let destination = match &d.destination_rpc {
                Some(u) => Some(
                    ProviderBuilder::new()
                        .disable_recommended_fillers()
                        .connect_http(url(u)?)
                        .erased(),
                ),
                None => None,
            };
            tracing::info!(direction = %d.name, signer = %signer.address(), "bridge direction ready");
            directions.insert(
                d.name.clone(),
                Direction {
                    config: d.clone(),
                    source,
                    destination,
                    signer,
                },
            );
        }
        Ok(Self {
            directions,
            store: Store::open(&config.store)?,
            metrics: Metrics::new()?,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Public description of the directions (signer addresses, contracts).
    pub fn describe(&self) -> serde_json::Value {
        let mut names: Vec<_> = self.directions.keys().collect();
        names.sort();
        serde_json::Value::Array(
            names
                .into_iter()
                .map(|n| {
                    let d = &self.directions[n];
                    serde_json::json!({
                        "name": n,
                        "signer": d.signer.address(),
                        "source_chain_id": d.config.source_chain_id,
                        "destination_chain_id": d.config.destination_chain_id,
                        "confirmations": d.config.confirmations,
                        "pairs": d.config.pairs.iter().map(|p| serde_json::json!({
                            "kind": p.kind, "source": p.source, "destination": p.destination,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect(),
        )
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Handles one request and writes the audit line and metrics.
    pub async fn sign(
        &self,
        direction: &str,
        request: &SignRequest,
        client: &str,
    ) -> Result<Outcome, Rejection> {
        let result = self.sign_inner(direction, request).await;
        let (outcome, reason, digest) = match &result {
            Ok(Outcome::Signed(s)) => ("signed", String::new(), Some(s.digest)),
            Ok(Outcome::Pending {
                confirmations,
                required,
            }) => (
                "pending",
                format!("pending {confirmations}/{required}"),
                None,
            ),
            Err(r) => ("rejected", r.to_string(), None),
        };
        let known = self.directions.contains_key(direction);
        let label = if known { direction } else { "unknown" };
        self.metrics
            .requests
            .with_label_values(&[label, outcome])
            .inc();
        if let Err(r) = &result {
            self.metrics
                .rejections
                .with_label_values(&[label, r.label()])
                .inc();
            tracing::info!(direction = label, tx = %request.tx_hash, reason = %r, "bridge request rejected");
        }
        let entry = AuditEntry {
            direction: label,
            tx_hash: &request.tx_hash.to_string(),
            log_index: request.log_index,
            client,
            outcome,
            reason: &reason,
            digest,
        };
        if let Err(e) = self.store.audit(&entry) {
            // No audit line, no signature: fail closed.
            tracing::error!(error = %e, "bridge audit log failed");
            return Err(Rejection::Internal);
        }
        result
    }

    async fn sign_inner(&self, name: &str, request: &SignRequest) -> Result<Outcome, Rejection> {
        let d = self
            .directions
            .get(name)
            .ok_or(Rejection::UnknownDirection)?;
        let key = (name.to_string(), request.tx_hash, request.log_index);
        let hit = self.cache_lock().get(&key).cloned();
        if let Some(hit) = hit {
            // One cheap read keeps a cached answer honest: its block must still
            // be canonical, else the full path runs (and flags the change).
            let block = d
                .source
                .get_block_by_number(hit.block_number.into())
                .await
                .map_err(unavailable)?;
            if block.map(|b| b.header.hash) == Some(hit.block_hash) {
                self.metrics.cache_hits.with_label_values(&[name]).inc();
                return Ok(Outcome::Signed(Box::new(hit)));
            }
            self.metrics.reorgs.with_label_values(&[name]).inc();
            self.cache_lock().remove(&key);
        }
        let observed = match observe(d, request).await {
            Err(Rejection::Reorged) => {
                self.metrics.reorgs.with_label_values(&[name]).inc();
                return Err(Rejection::Reorged);
            }
            other => other?,
        };
        let observed = match observed {
            Observation::Pending {
                confirmations,
                required,
            } => {
                return Ok(Outcome::Pending {
                    confirmations,
                    required,
                })
            }
            Observation::Deposit(o) => o,
        };
        self.courtesy_claimed_check(d, &observed).await?;
        let digest = observed
            .claim
            .digest(d.config.destination_chain_id, observed.pair.destination);
        let signature = d.signer.sign_hash_sync(&digest).map_err(|e| {
            tracing::error!(error = %e, "bridge signing failed");
            Rejection::Internal
        })?;
        let signature = signature.as_bytes().to_vec();
        let record = SignedRecord {
            digest,
            block_hash: observed.block_hash,
            signature: signature.clone(),
        };
        match self.store.record(
            name,
            observed.pair.source,
            &observed.claim.depositNonce.to_string(),
            request.tx_hash,
            &record,
        )? {
            Recorded::New | Recorded::Same(_) => {}
            Recorded::Mismatch(earlier) => {
                self.metrics.incidents.with_label_values(&[name]).inc();
                tracing::error!(
                    alert = "bridge_incident",
                    direction = name,
                    tx = %request.tx_hash,
                    nonce = %observed.claim.depositNonce,
                    signed_digest = %earlier.digest,
                    signed_block = %earlier.block_hash,
                    now_digest = %digest,
                    now_block = %observed.block_hash,
                    "ALERT: deposit re-asked with another digest or block than signed; refusing"
                );
                return Err(Rejection::Incident);
            }
        }
        let signed = SignedClaim {
            direction: name.to_string(),
            claim: observed.claim.clone(),
            destination_chain_id: d.config.destination_chain_id,
            destination_contract: observed.pair.destination,
            digest,
            signature: signature.into(),
            signer: d.signer.address(),
            source_tx: request.tx_hash,
            log_index: observed.log_index,
            block_number: observed.block_number,
            block_hash: observed.block_hash,
        };
        self.metrics
            .last_signed_nonce
            .with_label_values(&[name])
            .set(i64::try_from(observed.claim.depositNonce).unwrap_or(i64::MAX));
        self.metrics
            .last_signed_block
            .with_label_values(&[name])
            .set(observed.block_number as i64);
        let mut cache = self.cache_lock();
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(key, signed.clone());
        Ok(Outcome::Signed(Box::new(signed)))
    }

    /// Saves the user a failing transaction; the contract enforces it anyway.
    async fn courtesy_claimed_check(&self, d: &Direction, o: &Observed) -> Result<(), Rejection> {
        let Some(destination) = &d.destination else {
            return Ok(());
        };
        let bridge = IBridge::new(o.pair.destination, destination);
        match bridge.claimed(o.claim.deposit_id()).call().await {
            Ok(true) => Err(Rejection::AlreadyClaimed),
            Ok(false) => Ok(()),
            Err(e) => {
                tracing::warn!(direction = %d.config.name, error = %e, "courtesy claimed() check failed; signing anyway");
                Ok(())
            }
        }
    }

    fn cache_lock(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, SignedClaim>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Observed {
    pair: Pair,
    claim: Claim,
    log_index: u64,
    block_number: u64,
    block_hash: B256,
}

enum Observation {
    Pending { confirmations: u64, required: u64 },
    Deposit(Box<Observed>),
}

fn unavailable<E: std::fmt::Display>(e: E) -> Rejection {
    tracing::warn!(error = %e, "bridge source RPC failed");
    Rejection::SourceUnavailable
}

/// Reads the deposit from the source chain, in the order the checklist needs.
async fn observe(d: &Direction, request: &SignRequest) -> Result<Observation, Rejection> {
    let c = &d.config;
    // 1. The node serves the configured chain (compared on every request: a
    //    node switched to a fork must not be trusted).
    let chain_id = d.source.get_chain_id().await.map_err(unavailable)?;
    if chain_id != c.source_chain_id {
        tracing::error!(direction = %c.name, expected = c.source_chain_id, got = chain_id, "source node on the wrong chain");
        return Err(Rejection::WrongChain);
    }
    // 2. The head before the receipt, so the receipt cannot be newer than it.
    let head = d.source.get_block_number().await.map_err(unavailable)?;
    // 3. Receipt: exists, succeeded, mined.
    let receipt = d
        .source
        .get_transaction_receipt(request.tx_hash)
        .await
        .map_err(unavailable)?
        .ok_or(Rejection::UnknownTransaction)?;
    if !receipt.status() {
        return Err(Rejection::Reverted);
    }
    let (Some(number), Some(block_hash)) = (receipt.block_number, receipt.block_hash) else {
        return Err(Rejection::UnknownTransaction);
    };
    // 4. Deep enough.
    if number > head {
        return Err(Rejection::SourceUnavailable);
    }
    let confirmations = head - number;
    if confirmations < c.confirmations {
        return Ok(Observation::Pending {
            confirmations,
            required: c.confirmations,
        });
    }
    // 5. Still canonical.
    let block = d
        .source
        .get_block_by_number(number.into())
        .await
        .map_err(unavailable)?;
    if block.map(|b| b.header.hash) != Some(block_hash) {
        return Err(Rejection::Reorged);
    }
    // 6-8. The deposit log, from the log only.
    let (pair, log_index, deposit) = find_deposit(&c.pairs, &receipt, request.log_index)?;
    if deposit.destinationChainId != U256::from(c.destination_chain_id) {
        return Err(Rejection::WrongDestination);
    }
    if !asset_moved(pair, &deposit, receipt.inner.logs()) {
        return Err(Rejection::AssetNotMoved);
    }
    let claim = Claim {
        sourceChainId: U256::from(c.source_chain_id),
        sourceContract: pair.source,
        depositNonce: deposit.nonce,
        recipient: deposit.recipient,
        value: deposit.value,
    };
    Ok(Observation::Deposit(Box::new(Observed {
        pair,
        claim,
        log_index,
        block_number: number,
        block_hash,
    })))
}

/// The one deposit log in the receipt: emitted by an allow-listed contract,
/// with the deposit topic, not removed, decoded with validation.
fn find_deposit(
    pairs: &[Pair],
    receipt: &TransactionReceipt,
    log_index: Option<u64>,
) -> Result<(Pair, u64, IBridge::Deposit), Rejection> {
    let mut found = Vec::new();
    for log in receipt.inner.logs() {
        if log_index.is_some() && log.log_index != log_index {
            continue;
        }
        if log.removed || log.topic0() != Some(&IBridge::Deposit::SIGNATURE_HASH) {
            continue;
        }
        // decode_log_data does not look at the emitter: the allow-list does.
        let Some(pair) = pairs.iter().find(|p| p.source == log.address()) else {
            continue;
        };
        let deposit = IBridge::Deposit::decode_log_data_validate(log.data())
            .map_err(|_| Rejection::MalformedDeposit)?;
        found.push((*pair, log.log_index.unwrap_or_default(), deposit));
    }
    match found.len() {
        0 => Err(Rejection::NoDeposit),
        1 => Ok(found.remove(0)),
        _ => Err(Rejection::AmbiguousDeposit),
    }
}

/// The asset really entered the bridge contract in the same transaction:
/// a `Transfer(from, bridge, value)` emitted by the bridge (asset) contract.
fn asset_moved(pair: Pair, deposit: &IBridge::Deposit, logs: &[Log]) -> bool {
    logs.iter()
        .filter(|l| l.address() == pair.source && !l.removed)
        .any(|l| match pair.kind {
            AssetKind::Erc20 => {
                erc20::Transfer::decode_log_data_validate(l.data()).is_ok_and(|t| {
                    t.from == deposit.from && t.to == pair.source && t.value == deposit.value
                })
            }
            AssetKind::Erc721 => {
                erc721::Transfer::decode_log_data_validate(l.data()).is_ok_and(|t| {
                    t.from == deposit.from && t.to == pair.source && t.tokenId == deposit.value
                })
            }
        })
}
