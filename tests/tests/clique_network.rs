//! Real geth v1.13.15 clique networks on loopback.

use std::collections::BTreeSet;
use std::time::Duration;

use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use anyhow::{ensure, Result};
use testnet::{eventually, NetworkOptions, TestNetwork};

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn three_signers_peer_and_take_turns() -> Result<()> {
    let net = TestNetwork::start(NetworkOptions::default()).await?;

    let net = &net;
    for i in 0..3 {
        eventually("2 peers", MINUTE, || async move {
            let peers = net.nodes[i].rpc().await?.peer_count().await?;
            Ok((peers == 2).then_some(()))
        })
        .await?;
    }

    net.wait_for_block(0, 30, 3 * MINUTE).await?;
    let mut sealers = BTreeSet::new();
    for number in 1..=30 {
        sealers.insert(net.signer_of(0, number).await?);
    }
    let signers: BTreeSet<Address> = net.network.signers().filter_map(|n| n.signer).collect();
    assert_eq!(
        sealers, signers,
        "every signer seals at least one of the first 30 blocks"
    );

    // All nodes agree on block 30.
    let hash = net.block_hash(0, 30).await?;
    for i in 1..3 {
        net.wait_for_block(i, 30, MINUTE).await?;
        assert_eq!(
            net.block_hash(i, 30).await?,
            hash,
            "node {i} disagrees at block 30"
        );
    }
    Ok(())
}

#[tokio::test]
async fn zero_gas_price_transfers_are_mined_from_any_node() -> Result<()> {
    let net = TestNetwork::start(NetworkOptions {
        validators: 1,
        ..Default::default()
    })
    .await?;
    net.wait_for_block(0, 2, 2 * MINUTE).await?;

    let account = &net.network.accounts[0];
    let password = std::fs::read_to_string(net.network_dir.join("accounts/password"))?;
    let wallet =
        PrivateKeySigner::decrypt_keystore(net.network_dir.join(&account.keystore), password)?;
    let validator = net
        .nodes
        .iter()
        .position(|n| n.info.signer.is_none())
        .expect("one validator");
    let recipient = Address::repeat_byte(0x42);

    // Once through the validator (the transaction must travel to a signer), once through a signer.
    for (nonce, node) in [(0u64, validator), (1, 0)] {
        let provider = net.nodes[node]
            .wallet_provider(EthereumWallet::from(wallet.clone()))
            .await?;
        let before = provider.get_balance(account.address).await?;
        let tx = TransactionRequest::default()
            .with_to(recipient)
            .with_value(U256::from(1_000u64))
            .with_nonce(nonce)
            .with_gas_limit(21_000)
            .with_gas_price(0);
        let pending = provider.send_transaction(tx).await?;
        let hash = *pending.tx_hash();
        let receipt = eventually("the zero-price transfer to be mined", 2 * MINUTE, || {
            let provider = provider.clone();
            async move { Ok(provider.get_transaction_receipt(hash).await?) }
        })
        .await?;
        ensure!(
            receipt.status(),
            "transfer via {} reverted",
            net.nodes[node].info.name
        );
        assert_eq!(receipt.effective_gas_price, 0);
        let after = provider.get_balance(account.address).await?;
        assert_eq!(
            before - after,
            U256::from(1_000u64),
            "only the value left the account"
        );
    }
    Ok(())
}

#[tokio::test]
async fn non_signer_follows_the_head() -> Result<()> {
    let net = TestNetwork::start(NetworkOptions {
        signers: 2,
        validators: 1,
        ..Default::default()
    })
    .await?;
    let validator = 2;
    assert!(net.nodes[validator].info.signer.is_none());
    let signer_head = net.wait_for_block(0, 10, 2 * MINUTE).await?;
    net.wait_for_block(validator, signer_head, MINUTE).await?;
    assert_eq!(
        net.block_hash(validator, signer_head).await?,
        net.block_hash(0, signer_head).await?
    );
    let mining = net.nodes[validator].rpc().await?.mining().await?;
    assert!(!mining, "a validator never seals");
    Ok(())
}

/// The wedge a fresh chain can fall into: the in-turn signer's block 1 reaches
/// the others before they mine (geth drops it), they each seal their own block
/// 1 and all three are "signed recently" on separate branches. The agent's
/// remedy (re-dial peers so their heads are known) gets the chain past block 1.
#[tokio::test]
async fn a_fresh_chain_wedged_at_block_one_recovers() -> Result<()> {
    // Producing the wedge is itself a race (a loaded machine loses it more
    // often); try fresh networks until one wedges.
    const TRIES: usize = 8;
    for attempt in 1..=TRIES {
        if let Some(net) = wedged_network().await? {
            let cancel = tokio_util::sync::CancellationToken::new();
            let mut rpcs = Vec::new();
            for node in &net.nodes {
                rpcs.push(node.rpc().await?);
            }
            // Each node re-dials the others' configured (static) addresses.
            let statics: Vec<Vec<String>> = (0..3)
                .map(|i| {
                    let others = net
                        .nodes
                        .iter()
                        .filter(|n| n.info.name != net.nodes[i].info.name);
                    others.map(|n| n.info.enode.clone()).collect()
                })
                .collect();
            let remedies = rpcs.iter().zip(&statics).map(|(rpc, statics)| {
                geth_agent::startup::unwedge_block_one(rpc, 1, statics, &cancel)
            });
            for result in futures_util::future::join_all(remedies).await {
                result?;
            }
            for i in 0..3 {
                net.wait_for_block(i, 3, 2 * MINUTE).await?;
            }
            println!("wedged on attempt {attempt}; recovered past block 1");
            return Ok(());
        }
        println!("attempt {attempt}: the network did not wedge");
    }
    anyhow::bail!("could not produce a wedged network in {TRIES} tries")
}

/// A 3-signer network stuck at block 1 on three branches, or `None` if this
/// attempt raced differently.
async fn wedged_network() -> Result<Option<TestNetwork>> {
    use geth_agent::rpc::GethRpc;
    use tokio::time::Instant;

    let mut net = TestNetwork::generate(&NetworkOptions::default())?;
    for i in 0..3 {
        net.spawn(i)?;
    }
    let mut rpcs = Vec::new();
    for node in &net.nodes {
        rpcs.push(GethRpc::connect_by(&node.ipc(), Instant::now() + MINUTE).await?);
    }
    for rpc in &rpcs {
        eventually("2 peers", MINUTE, || async move {
            Ok((rpc.peer_count().await? == 2).then_some(()))
        })
        .await?;
    }
    let mut signers: Vec<Address> = net.nodes.iter().filter_map(|n| n.info.signer).collect();
    signers.sort();
    let a = net
        .nodes
        .iter()
        .position(|n| n.info.signer == Some(signers[1]))
        .expect("block 1's in-turn signer");
    let (b, c) = match a {
        0 => (1, 2),
        1 => (0, 2),
        _ => (0, 1),
    };
    let enode = |i: usize| net.nodes[i].info.enode.clone();
    // B and C must not hear each other's block 1.
    let _: bool = rpcs[b].call("admin_removePeer", (enode(c),)).await?;
    let _: bool = rpcs[c].call("admin_removePeer", (enode(b),)).await?;
    // Sealing before geth has unlocked the account fails once and never again.
    let never = tokio_util::sync::CancellationToken::new();
    for rpc in &rpcs {
        geth_agent::startup::wait_until_signer_unlocked(rpc, &never).await?;
    }
    // A seals block 1 while B and C do not mine yet: geth drops it.
    let _: serde_json::Value = rpcs[a].call("miner_start", ()).await?;
    net.wait_for_block(a, 1, MINUTE).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _: serde_json::Value = rpcs[b].call("miner_start", ()).await?;
    let _: serde_json::Value = rpcs[c].call("miner_start", ()).await?;
    net.wait_for_block(b, 1, MINUTE).await?;
    net.wait_for_block(c, 1, MINUTE).await?;
    let _: bool = rpcs[b].call("admin_addPeer", (enode(c),)).await?;
    let _: bool = rpcs[c].call("admin_addPeer", (enode(b),)).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let heads = [net.head(a).await?, net.head(b).await?, net.head(c).await?];
    let hashes = [
        net.block_hash(a, 1).await?,
        net.block_hash(b, 1).await?,
        net.block_hash(c, 1).await?,
    ];
    let wedged = heads.iter().all(|h| *h == 1)
        && hashes[0] != hashes[1]
        && hashes[0] != hashes[2]
        && hashes[1] != hashes[2];
    Ok(wedged.then_some(net))
}
