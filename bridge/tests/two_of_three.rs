//! A 2-of-3 validator set: three signing services, each with its own key, and
//! the destination contract counting distinct, sorted signers. Rotation of the
//! set is the admin's alone.

mod common;

use alloy::primitives::{Address, Bytes, U256};
use anyhow::Result;
use common::*;
use geth_bridge::client;
use geth_bridge::contracts::{AssetKind, IBridge, IBridge::IBridgeErrors};
use geth_bridge::service::SignedClaim;

fn claim_tx(
    contract: Address,
    signed: &SignedClaim,
    signatures: Vec<Bytes>,
) -> alloy::rpc::types::TransactionRequest {
    client::call_tx(
        contract,
        &IBridge::claimCall {
            c: signed.claim.clone(),
            signatures,
        },
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn two_of_three_needs_two_distinct_validators() -> Result<()> {
    let a = Anvil::start(31_337_301).await?;
    let b = Anvil::start(31_337_302).await?;
    let dir = tempfile::tempdir()?;
    let keys: Vec<Key> = (0..3)
        .map(|i| new_key(dir.path(), &format!("validator{i}")))
        .collect::<Result<_>>()?;
    let addresses: Vec<Address> = keys.iter().map(|k| k.signer.address()).collect();
    let nft_a = a
        .chain
        .deploy(AssetKind::Erc721, true, &[anvil_key(2).address()], 1)
        .await?;
    let nft_b = b
        .chain
        .deploy(AssetKind::Erc721, false, &addresses, 2)
        .await?;
    peer_both_ways(&a.chain, nft_a, &b.chain, nft_b).await?;

    // Each validator runs its own service with its own key and store.
    let mut services = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let own = dir.path().join(format!("service{i}"));
        std::fs::create_dir_all(&own)?;
        let config = write_config(
            &own,
            "127.0.0.1:0".parse()?,
            &[DirectionSpec {
                name: "a-to-b",
                source: &a.chain,
                destination: &b.chain,
                confirmations: 1,
                key,
                pairs: vec![(AssetKind::Erc721, nft_a, nft_b)],
            }],
        )?;
        services.push(serve_in_process(&config).await?);
    }

    let user = anvil_key(1);
    let token = U256::from(42u64);
    a.chain
        .call(
            nft_a,
            &IBridge::mintCall {
                to: user.address(),
                value: token,
            },
        )
        .await?;
    let deposit = client::deposit(&a.chain.provider(&user)?, nft_a, user.address(), token).await?;
    a.mine(1).await?;
    let mut signed = Vec::new();
    for (url, _) in &services {
        signed.push(signed_claim(url, deposit.transaction_hash).await?);
    }
    signed.sort_by_key(|s| s.signer);
    for s in &signed {
        assert_eq!(
            s.claim, signed[0].claim,
            "all validators sign the same claim"
        );
        assert_eq!(ethers_verify(s)?.0, s.signer);
    }

    let relayer = b.chain.admin_provider()?;
    let sig = |i: usize| signed[i].signature.clone();
    // One signature is not enough; the same signature twice counts once (refused).
    assert!(matches!(
        revert_of(&relayer, claim_tx(nft_b, &signed[0], vec![sig(0)])).await?,
        IBridgeErrors::NotEnoughSignatures(e) if e.valid == U256::from(1u64) && e.threshold == U256::from(2u64)
    ));
    assert!(matches!(
        revert_of(&relayer, claim_tx(nft_b, &signed[0], vec![sig(0), sig(0)])).await?,
        IBridgeErrors::SignersNotSorted(_)
    ));
    // Out of order is refused too (sorted order is what rules out duplicates).
    assert!(matches!(
        revert_of(&relayer, claim_tx(nft_b, &signed[0], vec![sig(2), sig(1)])).await?,
        IBridgeErrors::SignersNotSorted(_)
    ));
    // Rotation: never a zero signer, no duplicates, only the admin.
    let bridge_b = IBridge::new(nft_b, relayer.clone());
    for (set, threshold) in [
        (vec![Address::ZERO, addresses[0]], 1u64),
        (vec![addresses[0], addresses[0]], 1),
        (addresses.clone(), 4),
        (addresses.clone(), 0),
    ] {
        let call = IBridge::setValidatorsCall {
            validators: set,
            threshold: U256::from(threshold),
        };
        assert!(matches!(
            revert_of(&relayer, client::call_tx(nft_b, &call)).await?,
            IBridgeErrors::BadValidatorSet(_)
        ));
    }
    let stranger = b.chain.provider(&anvil_key(1))?;
    let mut sorted = addresses.clone();
    sorted.sort();
    let call = IBridge::setValidatorsCall {
        validators: sorted[..1].to_vec(),
        threshold: U256::from(1u64),
    };
    assert!(matches!(
        revert_of(&stranger, client::call_tx(nft_b, &call)).await?,
        IBridgeErrors::OwnableUnauthorizedAccount(_)
    ));
    assert_eq!(bridge_b.threshold().call().await?, U256::from(2u64));

    // Two distinct validators pay.
    client::claim(&relayer, &signed[1..]).await?;
    assert_eq!(bridge_b.ownerOf(token).call().await?, user.address());
    Ok(())
}

async fn signed_claim(url: &str, tx: alloy::primitives::TxHash) -> Result<SignedClaim> {
    signed(url, "a-to-b", tx).await
}
