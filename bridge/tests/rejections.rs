//! Every way a deposit or a claim must fail, on real chains (two anvils:
//! deterministic mining and reorgs), against the signing service in process.

mod common;

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, Bytes, TxHash, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use alloy::signers::SignerSync;
use anyhow::{ensure, Context, Result};
use common::*;
use geth_bridge::client;
use geth_bridge::contracts::{AssetKind, IBridge, IBridge::IBridgeErrors};
use geth_bridge::service::SignedClaim;
use serde_json::{json, Value};

const DIR: &str = "a-to-b";
const WRONG: &str = "wrong-chain";
const CONFIRMATIONS: u64 = 3;

alloy::sol! {
    interface IForger {
        function forge(address bridge, address recipient, uint256 fakeValue, uint256 realValue, uint256 destinationChainId) external;
    }
}

struct Fixture {
    a: Anvil,
    b: Anvil,
    dir: tempfile::TempDir,
    key: Key,
    token_a: Address,
    token_b: Address,
    nft_b: Address,
    url: String,
    config: std::path::PathBuf,
    user: PrivateKeySigner,
    user_a: DynProvider,
    relayer_b: DynProvider,
}

/// Chain A (home, source) and chain B (destination), one ERC-20 and one
/// ERC-721 pair, the service signing A → B with `CONFIRMATIONS`.
async fn setup() -> Result<Fixture> {
    let a = Anvil::start(31_337_201).await?;
    let b = Anvil::start(31_337_202).await?;
    let dir = tempfile::tempdir()?;
    let key = new_key(dir.path(), DIR)?;
    let other = new_key(dir.path(), WRONG)?;
    let a_validator = anvil_key(2).address();
    let token_a = a
        .chain
        .deploy(AssetKind::Erc20, true, &[a_validator], 1)
        .await?;
    let nft_a = a
        .chain
        .deploy(AssetKind::Erc721, true, &[a_validator], 1)
        .await?;
    let token_b = b
        .chain
        .deploy(AssetKind::Erc20, false, &[key.signer.address()], 1)
        .await?;
    let nft_b = b
        .chain
        .deploy(AssetKind::Erc721, false, &[key.signer.address()], 1)
        .await?;
    for (chain, contract, peer_chain, peer) in [
        (&a.chain, token_a, b.chain.chain_id, token_b),
        (&a.chain, nft_a, b.chain.chain_id, nft_b),
        (&b.chain, token_b, a.chain.chain_id, token_a),
        (&b.chain, nft_b, a.chain.chain_id, nft_a),
    ] {
        chain
            .call(
                contract,
                &IBridge::setPeerCall {
                    chainId: U256::from(peer_chain),
                    peer,
                },
            )
            .await?;
    }
    let pairs = vec![
        (AssetKind::Erc20, token_a, token_b),
        (AssetKind::Erc721, nft_a, nft_b),
    ];
    let config = write_config(
        dir.path(),
        "127.0.0.1:0".parse()?,
        &[
            DirectionSpec {
                name: DIR,
                source: &a.chain,
                destination: &b.chain,
                confirmations: CONFIRMATIONS,
                key: &key,
                pairs: pairs.clone(),
            },
            // A direction whose node serves another chain than configured.
            DirectionSpec {
                name: WRONG,
                source: &Chain {
                    url: b.chain.url.clone(),
                    chain_id: a.chain.chain_id,
                    admin: anvil_key(0),
                },
                destination: &b.chain,
                confirmations: 1,
                key: &other,
                pairs: vec![(AssetKind::Erc20, token_b, token_a)],
            },
        ],
    )?;
    let (url, _task) = serve_in_process(&config).await?;
    let user = anvil_key(1);
    a.chain
        .call(
            token_a,
            &IBridge::mintCall {
                to: user.address(),
                value: U256::from(1_000_000u64),
            },
        )
        .await?;
    let user_a = a.chain.provider(&user)?;
    let relayer_b = b.chain.admin_provider()?;
    Ok(Fixture {
        a,
        b,
        dir,
        key,
        token_a,
        token_b,
        nft_b,
        url,
        config,
        user,
        user_a,
        relayer_b,
    })
}

impl Fixture {
    async fn deposit(&self, value: u64) -> Result<TxHash> {
        // A fresh provider: its nonce cache must not outlive a reorg.
        let user_a = self.a.chain.provider(&self.user)?;
        let r = client::deposit(
            &user_a,
            self.token_a,
            self.user.address(),
            U256::from(value),
        )
        .await?;
        Ok(r.transaction_hash)
    }

    async fn ask(&self, tx: TxHash) -> Result<(u16, Value)> {
        ask(&self.url, DIR, json!({"tx_hash": tx})).await
    }

    async fn signed(&self, tx: TxHash) -> Result<SignedClaim> {
        let (status, body) = self.ask(tx).await?;
        ensure!(status == 200, "{status} {body}");
        Ok(serde_json::from_value(body)?)
    }
}

fn assert_rejected(answer: &(u16, Value), status: u16, reason: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["status"], "rejected", "{}", answer.1);
    assert_eq!(answer.1["reason"], reason, "{}", answer.1);
    assert!(
        answer.1.get("signature").is_none(),
        "no signature: {}",
        answer.1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn service_refuses_what_the_log_does_not_prove() -> Result<()> {
    let f = setup().await?;

    // Too few confirmations: "pending k/N" and no signature, until deep enough.
    let tx = f.deposit(10).await?;
    let (status, body) = f.ask(tx).await?;
    assert_eq!(
        (status, body["reason"].as_str()),
        (202, Some("pending 0/3")),
        "{body}"
    );
    assert!(body.get("signature").is_none());
    f.a.mine(1).await?;
    assert_eq!(f.ask(tx).await?.1["reason"], "pending 1/3");
    f.a.mine(2).await?;
    let good = f.signed(tx).await?;
    assert_eq!(good.claim.value, U256::from(10u64));

    // Request fields that contradict the log are ignored: the log's values are signed.
    let (status, body) = ask(
        &f.url,
        DIR,
        json!({"tx_hash": tx, "recipient": Address::repeat_byte(0xee), "value": "1000000000", "destination_contract": Address::repeat_byte(0xdd)}),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    let echoed: SignedClaim = serde_json::from_value(body)?;
    assert_eq!(echoed, good, "the same claim, from the log");

    // A bridge contract that is not on the allow-list.
    let rogue =
        f.a.chain
            .deploy(AssetKind::Erc20, true, &[anvil_key(2).address()], 1)
            .await?;
    f.a.chain
        .call(
            rogue,
            &IBridge::setPeerCall {
                chainId: U256::from(f.b.chain.chain_id),
                peer: f.token_b,
            },
        )
        .await?;
    f.a.chain
        .call(
            rogue,
            &IBridge::mintCall {
                to: f.user.address(),
                value: U256::from(50u64),
            },
        )
        .await?;
    let rogue_tx = client::deposit(&f.user_a, rogue, f.user.address(), U256::from(50u64)).await?;
    f.a.mine(CONFIRMATIONS).await?;
    assert_rejected(
        &f.ask(rogue_tx.transaction_hash).await?,
        422,
        "no deposit from an allow-listed bridge contract in the transaction",
    );

    // The deposit topic from another contract, alone and next to a real deposit.
    let forger_code = artefact_code("DepositForger")?;
    let forger = client::send(
        &f.a.chain.admin_provider()?,
        TransactionRequest::default()
            .with_deploy_code(forger_code)
            .with_gas_limit(1_000_000),
    )
    .await?
    .contract_address
    .context("forger address")?;
    f.a.chain
        .call(
            f.token_a,
            &IBridge::mintCall {
                to: forger,
                value: U256::from(5u64),
            },
        )
        .await?;
    let attacker = Address::repeat_byte(0xaa);
    let huge = U256::from(10u64).pow(U256::from(24u64));
    let forge = |real: u64| IForger::forgeCall {
        bridge: f.token_a,
        recipient: attacker,
        fakeValue: huge,
        realValue: U256::from(real),
        destinationChainId: U256::from(f.b.chain.chain_id),
    };
    let alone = f.a.chain.admin_provider()?;
    let alone = client::send(&alone, client::call_tx(forger, &forge(0))).await?;
    let mixed = client::send(
        &f.a.chain.admin_provider()?,
        client::call_tx(forger, &forge(5)),
    )
    .await?;
    f.a.mine(CONFIRMATIONS).await?;
    assert_rejected(
        &f.ask(alone.transaction_hash).await?,
        422,
        "no deposit from an allow-listed bridge contract in the transaction",
    );
    let fake_index = mixed.inner.logs()[0].log_index;
    assert_eq!(mixed.inner.logs()[0].address(), forger);
    assert_rejected(
        &ask(
            &f.url,
            DIR,
            json!({"tx_hash": mixed.transaction_hash, "log_index": fake_index}),
        )
        .await?,
        422,
        "no deposit from an allow-listed bridge contract in the transaction",
    );
    let real = f.signed(mixed.transaction_hash).await?;
    assert_eq!(
        (real.claim.value, real.claim.recipient),
        (U256::from(5u64), attacker)
    );
    assert_eq!(
        real.claim.sourceContract, f.token_a,
        "only the bridge's own log is signed"
    );

    // A reverted deposit (more than the balance; gas given so it is mined).
    let reverted = client::send(
        &f.user_a,
        client::call_tx(
            f.token_a,
            &IBridge::depositCall {
                recipient: f.user.address(),
                value: huge,
            },
        )
        .with_gas_limit(200_000),
    )
    .await;
    let Err(client::ClientError::Reverted(reverted)) = reverted else {
        anyhow::bail!("the deposit should revert: {reverted:?}");
    };
    f.a.mine(CONFIRMATIONS).await?;
    assert_rejected(&f.ask(reverted).await?, 422, "transaction reverted");

    // Unknown transaction, unknown direction, malformed request, wrong chain.
    assert_rejected(
        &f.ask(TxHash::repeat_byte(7)).await?,
        404,
        "transaction not found on the source chain",
    );
    assert_rejected(
        &ask(&f.url, "nowhere", json!({"tx_hash": tx})).await?,
        404,
        "unknown direction",
    );
    let (status, body) = ask(&f.url, DIR, json!({"tx_hash": "0x1234"})).await?;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["status"], "rejected");
    assert_rejected(
        &ask(&f.url, WRONG, json!({"tx_hash": tx})).await?,
        503,
        "source node is on the wrong chain",
    );

    // The metrics count rejections by reason.
    let metrics = reqwest::get(format!("{}/metrics", f.url))
        .await?
        .text()
        .await?;
    for series in [
        "bridge_rejections_total{direction=\"a-to-b\",reason=\"no_deposit\"} 3",
        "bridge_rejections_total{direction=\"a-to-b\",reason=\"reverted\"} 1",
        "bridge_requests_total{direction=\"a-to-b\",outcome=\"pending\"} 2",
    ] {
        ensure!(metrics.contains(series), "{series} missing in\n{metrics}");
    }

    // Every request is in the audit log of the store, with its outcome.
    let audit =
        geth_bridge::store::Store::open(&f.dir.path().join("bridge.sqlite"))?.audit_outcomes()?;
    let count = |outcome: &str, reason: &str| {
        audit
            .iter()
            .filter(|(o, r)| o == outcome && r.starts_with(reason))
            .count()
    };
    assert_eq!(count("pending", "pending "), 2, "{audit:?}");
    assert_eq!(count("signed", ""), 3, "{audit:?}");
    assert_eq!(count("rejected", "no deposit"), 3, "{audit:?}");
    assert_eq!(count("rejected", "transaction reverted"), 1, "{audit:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn reorged_deposits_are_not_signed_and_a_moved_deposit_is_an_incident() -> Result<()> {
    let f = setup().await?;

    // A deposit reorged out before it was deep enough: never signed.
    let snapshot = f.a.chain.raw("evm_snapshot", json!([])).await?;
    let gone = f.deposit(11).await?;
    f.a.mine(1).await?;
    assert_eq!(f.ask(gone).await?.1["reason"], "pending 1/3");
    f.a.chain.raw("evm_revert", json!([snapshot])).await?;
    f.a.mine(CONFIRMATIONS + 2).await?;
    assert_rejected(
        &f.ask(gone).await?,
        404,
        "transaction not found on the source chain",
    );

    // A deposit signed, then reorged and mined again in another block: the
    // same transaction now in a different block is refused and alerts.
    let snapshot = f.a.chain.raw("evm_snapshot", json!([])).await?;
    let tx = f.deposit(12).await?;
    let raw: Bytes = serde_json::from_value(
        f.a.chain
            .raw("eth_getRawTransactionByHash", json!([tx]))
            .await?,
    )?;
    f.a.mine(CONFIRMATIONS).await?;
    let first = f.signed(tx).await?;
    f.a.chain.raw("evm_revert", json!([snapshot])).await?;
    f.a.mine(2).await?;
    f.a.chain
        .raw("eth_sendRawTransaction", json!([raw]))
        .await?;
    f.a.mine(CONFIRMATIONS + 1).await?;
    let receipt = f
        .user_a
        .get_transaction_receipt(tx)
        .await?
        .context("re-mined")?;
    ensure!(
        receipt.block_hash != Some(first.block_hash),
        "the deposit moved to another block"
    );
    assert_rejected(
        &f.ask(tx).await?,
        409,
        "deposit changed since it was signed: signing halted for it, operators alerted",
    );
    let metrics = reqwest::get(format!("{}/metrics", f.url))
        .await?
        .text()
        .await?;
    ensure!(
        metrics.contains("bridge_incidents_total{direction=\"a-to-b\"} 1"),
        "{metrics}"
    );
    ensure!(
        metrics.contains("bridge_reorgs_total{direction=\"a-to-b\"} 1"),
        "{metrics}"
    );
    Ok(())
}

fn artefact_code(name: &str) -> Result<Vec<u8>> {
    let path = testnet::workspace_root().join(format!("contracts/artifacts/{name}.json"));
    let artefact: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    Ok(hex::decode(
        artefact["bytecode"]
            .as_str()
            .context("bytecode")?
            .trim_start_matches("0x"),
    )?)
}

fn claim_tx(contract: Address, signed: &SignedClaim, signatures: Vec<Bytes>) -> TransactionRequest {
    client::call_tx(
        contract,
        &IBridge::claimCall {
            c: signed.claim.clone(),
            signatures,
        },
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn claims_are_single_use_and_bound_to_chain_contract_and_key() -> Result<()> {
    let f = setup().await?;
    let tx = f.deposit(20).await?;
    f.a.mine(CONFIRMATIONS).await?;
    let signed = f.signed(tx).await?;
    let sig = vec![signed.signature.clone()];

    // A signature from another key.
    let stranger = PrivateKeySigner::random();
    let forged = stranger.sign_hash_sync(&signed.digest)?.as_bytes().to_vec();
    assert!(matches!(
        revert_of(&f.relayer_b, claim_tx(f.token_b, &signed, vec![forged.into()])).await?,
        IBridgeErrors::UnknownSigner(e) if e.signer == stranger.address()
    ));

    // The wrong contract on the right chain, and the claim sent back to the source chain.
    assert!(matches!(
        revert_of(&f.relayer_b, claim_tx(f.nft_b, &signed, sig.clone())).await?,
        IBridgeErrors::WrongPeer(_)
    ));
    assert!(matches!(
        revert_of(
            &f.a.chain.admin_provider()?,
            claim_tx(f.token_a, &signed, sig.clone())
        )
        .await?,
        IBridgeErrors::WrongPeer(_)
    ));
    // A twin of the destination (same peer, same validator) at another address:
    // the EIP-712 domain binds the signature to the one contract.
    let twin =
        f.b.chain
            .deploy(AssetKind::Erc20, false, &[f.key.signer.address()], 1)
            .await?;
    f.b.chain
        .call(
            twin,
            &IBridge::setPeerCall {
                chainId: U256::from(f.a.chain.chain_id),
                peer: f.token_a,
            },
        )
        .await?;
    assert!(matches!(
        revert_of(&f.relayer_b, claim_tx(twin, &signed, sig.clone())).await?,
        IBridgeErrors::UnknownSigner(_)
    ));

    // The same destination address, key and peer on another chain: the
    // domain's chain id (block.chainid) binds the signature to chain B.
    let c = Anvil::start(31_337_203).await?;
    let same_address = c
        .chain
        .deploy(AssetKind::Erc20, false, &[f.key.signer.address()], 1)
        .await?;
    assert_eq!(
        same_address, f.token_b,
        "same deployer and nonce, same address"
    );
    c.chain
        .call(
            same_address,
            &IBridge::setPeerCall {
                chainId: U256::from(f.a.chain.chain_id),
                peer: f.token_a,
            },
        )
        .await?;
    assert!(matches!(
        revert_of(
            &c.chain.admin_provider()?,
            claim_tx(same_address, &signed, sig.clone())
        )
        .await?,
        IBridgeErrors::UnknownSigner(_)
    ));

    // Pause and cap hold a valid claim back.
    f.b.chain.call(f.token_b, &IBridge::pauseCall {}).await?;
    assert!(matches!(
        revert_of(&f.relayer_b, claim_tx(f.token_b, &signed, sig.clone())).await?,
        IBridgeErrors::EnforcedPause(_)
    ));
    f.b.chain.call(f.token_b, &IBridge::unpauseCall {}).await?;
    f.b.chain
        .call(
            f.token_b,
            &IBridge::setCapCall {
                cap: U256::from(19u64),
                period: U256::from(3600u64),
            },
        )
        .await?;
    assert!(matches!(
        revert_of(&f.relayer_b, claim_tx(f.token_b, &signed, sig.clone())).await?,
        IBridgeErrors::CapExceeded(_)
    ));
    f.b.chain
        .call(
            f.token_b,
            &IBridge::setCapCall {
                cap: U256::from(1000u64),
                period: U256::from(3600u64),
            },
        )
        .await?;

    // Pays the claim's recipient, once; a second submission is refused on chain.
    client::claim(&f.relayer_b, std::slice::from_ref(&signed)).await?;
    let token_b = IBridge::new(f.token_b, f.relayer_b.clone());
    assert_eq!(
        token_b.balanceOf(f.user.address()).call().await?,
        U256::from(20u64)
    );
    assert!(matches!(
        revert_of(&f.relayer_b, claim_tx(f.token_b, &signed, sig.clone())).await?,
        IBridgeErrors::AlreadyClaimed(_)
    ));
    let again = client::send(
        &f.relayer_b,
        claim_tx(f.token_b, &signed, sig).with_gas_limit(300_000),
    )
    .await;
    assert!(
        matches!(again, Err(client::ClientError::Reverted(_))),
        "{again:?}"
    );
    assert_eq!(
        token_b.balanceOf(f.user.address()).call().await?,
        U256::from(20u64)
    );

    // A cap lowered below what this period already paid refuses further claims.
    f.b.chain
        .call(
            f.token_b,
            &IBridge::setCapCall {
                cap: U256::from(10u64),
                period: U256::from(3600u64),
            },
        )
        .await?;
    let next = f.deposit(1).await?;
    f.a.mine(CONFIRMATIONS).await?;
    let next = f.signed(next).await?;
    assert!(matches!(
        revert_of(&f.relayer_b, claim_tx(f.token_b, &next, vec![next.signature.clone()])).await?,
        IBridgeErrors::CapExceeded(e) if e.left == U256::ZERO
    ));

    // A service without the signature cached checks `claimed` on the
    // destination first and spares the user a failing transaction.
    let (fresh, _task) = serve_in_process(&f.config).await?;
    assert_rejected(
        &ask(&fresh, DIR, json!({"tx_hash": tx})).await?,
        409,
        "already claimed on the destination",
    );
    Ok(())
}
