//! The client side: deploy, deposit, fetch signatures, claim. Used by the CLI
//! (`geth-bridge deposit|claim|transfer|deploy`) and the tests.

use std::time::Duration;

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, Bytes, TxHash, U256};
use alloy::providers::Provider;
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};

use crate::contracts::{AssetKind, DeployArgs, IBridge};
use crate::service::SignedClaim;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("RPC: {0}")]
    Rpc(String),
    #[error("transaction {0} reverted")]
    Reverted(TxHash),
    #[error("contract: {0}")]
    Contract(#[from] alloy::contract::Error),
    #[error("artefact: {0}")]
    Artefact(#[from] crate::contracts::ArtefactError),
    #[error("signing service {url}: {reason}")]
    Service { url: String, reason: String },
    #[error("signing service {url}: pending {reason}")]
    Pending { url: String, reason: String },
    #[error("signing services disagree on the claim")]
    Disagree,
    #[error("no contract address in the deployment receipt")]
    NoContract,
}

fn rpc<E: std::fmt::Display>(e: E) -> ClientError {
    ClientError::Rpc(e.to_string())
}

const RECEIPT_TIMEOUT: Duration = Duration::from_secs(180);

/// Sends a legacy transaction (the sidechain has no base fee) at the node's
/// gas price and waits for its receipt; a revert is an error.
pub async fn send<P: Provider>(
    provider: &P,
    tx: TransactionRequest,
) -> Result<TransactionReceipt, ClientError> {
    let price = provider.get_gas_price().await.map_err(rpc)?;
    let mut tx = tx.with_gas_price(price);
    if tx.gas.is_none() {
        let estimate = provider.estimate_gas(tx.clone()).await.map_err(rpc)?;
        tx = tx.with_gas_limit(estimate + estimate / 5);
    }
    let receipt = provider
        .send_transaction(tx)
        .await
        .map_err(rpc)?
        .with_timeout(Some(RECEIPT_TIMEOUT))
        .get_receipt()
        .await
        .map_err(rpc)?;
    if !receipt.status() {
        return Err(ClientError::Reverted(receipt.transaction_hash));
    }
    Ok(receipt)
}

pub async fn deploy<P: Provider>(
    provider: &P,
    kind: AssetKind,
    args: &DeployArgs,
) -> Result<Address, ClientError> {
    let code = args.deploy_code(kind)?;
    let tx = TransactionRequest::default()
        .with_deploy_code(code)
        .with_gas_limit(6_000_000);
    send(provider, tx)
        .await?
        .contract_address
        .ok_or(ClientError::NoContract)
}

/// A call to `contract` as a transaction request.
pub fn call_tx(contract: Address, call: &impl alloy::sol_types::SolCall) -> TransactionRequest {
    TransactionRequest::default()
        .with_to(contract)
        .with_input(call.abi_encode())
}

/// Deposits `value` (amount or token id) for `recipient` on the peer chain.
pub async fn deposit<P: Provider>(
    provider: &P,
    contract: Address,
    recipient: Address,
    value: U256,
) -> Result<TransactionReceipt, ClientError> {
    send(
        provider,
        call_tx(contract, &IBridge::depositCall { recipient, value }),
    )
    .await
}

/// Asks one signing service for the claim of a deposit.
pub async fn fetch_signature(
    http: &reqwest::Client,
    service: &str,
    direction: &str,
    tx_hash: TxHash,
    log_index: Option<u64>,
) -> Result<SignedClaim, ClientError> {
    let url = format!(
        "{}/bridge/v1/{direction}/sign",
        service.trim_end_matches('/')
    );
    let err = |reason: String| ClientError::Service {
        url: url.clone(),
        reason,
    };
    let response = http
        .post(&url)
        .json(&serde_json::json!({"tx_hash": tx_hash, "log_index": log_index}))
        .send()
        .await
        .map_err(|e| err(e.to_string()))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.map_err(|e| err(e.to_string()))?;
    let reason = body["reason"].as_str().unwrap_or_default().to_string();
    match body["status"].as_str() {
        Some("signed") => serde_json::from_value(body).map_err(|e| err(e.to_string())),
        Some("pending") => Err(ClientError::Pending { url, reason }),
        _ => Err(err(format!("{status}: {reason}"))),
    }
}

/// Submits a claim with signatures from several validators (sorted by signer
/// address, as the contract wants); all must be for the same claim.
pub async fn claim<P: Provider>(
    provider: &P,
    signed: &[SignedClaim],
) -> Result<TransactionReceipt, ClientError> {
    let first = signed.first().ok_or(ClientError::Disagree)?;
    if signed.iter().any(|s| {
        s.claim != first.claim
            || s.destination_contract != first.destination_contract
            || s.destination_chain_id != first.destination_chain_id
    }) {
        return Err(ClientError::Disagree);
    }
    let mut sorted: Vec<&SignedClaim> = signed.iter().collect();
    sorted.sort_by_key(|s| s.signer);
    sorted.dedup_by_key(|s| s.signer);
    let signatures: Vec<Bytes> = sorted.iter().map(|s| s.signature.clone()).collect();
    send(
        provider,
        call_tx(
            first.destination_contract,
            &IBridge::claimCall {
                c: first.claim.clone(),
                signatures,
            },
        ),
    )
    .await
}
