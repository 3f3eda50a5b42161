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
/// stall watch (re-dial peers so their heads are known) gets the chain past it.
#[tokio::test]
async fn a_fresh_chain_wedged_at_block_one_recovers() -> Result<()> {
    // Producing the wedge is itself a race (a loaded machine loses it more
    // often); try fresh networks until one wedges.
    const TRIES: usize = 8;
    for attempt in 1..=TRIES {
        if let Some(net) = wedged_network().await? {
            let redials = recover_past(&net, 3).await?;
            println!(
                "wedged on attempt {attempt}; recovered past block 1 after {redials} re-dials"
            );
            return Ok(());
        }
        println!("attempt {attempt}: the network did not wedge");
    }
    anyhow::bail!("could not produce a wedged network in {TRIES} tries")
}

/// The same wedge at any height: every signer stopped and started again (a
/// `docker-compose down`/`up`). The first block sealed is lost on the two that
/// do not mine yet; the second signer seals its own, and the signer of the
/// head, which may not seal the next block, has dropped both. Seen as a chain
/// that stood still for good with every node peered, before the stall watch.
#[tokio::test]
async fn signers_restarted_together_and_wedged_recover() -> Result<()> {
    const TRIES: usize = 4;
    for attempt in 1..=TRIES {
        if let Some((net, head)) = wedged_after_restart().await? {
            let redials = recover_past(&net, head + 3).await?;
            println!(
                "wedged at block {head} on attempt {attempt}; recovered after {redials} re-dials"
            );
            return Ok(());
        }
        println!("attempt {attempt}: no wedge");
    }
    anyhow::bail!("could not produce a wedged network in {TRIES} tries")
}

/// The stall watch's wait here: the agent's (30 s at period 1) would only
/// make the tests longer; a wedge stands for good either way.
const STUCK: Duration = Duration::from_secs(10);

/// Runs every signer's stall watch (as its agent does once it seals) until all
/// nodes hold block `number`; returns how many times peers were re-dialled,
/// which must be at least once: the chain did not recover by itself.
async fn recover_past(net: &TestNetwork, number: u64) -> Result<u64> {
    use geth_agent::status::{Mode, NodeStatus};
    let cancel = tokio_util::sync::CancellationToken::new();
    let mut rpcs = Vec::new();
    let mut statuses = Vec::new();
    for node in &net.nodes {
        rpcs.push(node.rpc().await?);
        let (status, _) = tokio::sync::watch::channel(NodeStatus::new(
            node.info.name.clone(),
            Mode::Spawn,
            net.network.period,
        ));
        statuses.push(status);
    }
    // Each node re-dials the others' configured (static) addresses.
    let statics: Vec<Vec<String>> = net
        .nodes
        .iter()
        .map(|me| {
            let others = net.nodes.iter().filter(|n| n.info.name != me.info.name);
            others.map(|n| n.info.enode.clone()).collect()
        })
        .collect();
    let watches = rpcs
        .iter()
        .zip(&statics)
        .zip(&statuses)
        .map(|((rpc, statics), status)| {
            geth_agent::unwedge::watch(
                rpc,
                net.network.period,
                STUCK,
                statics,
                Some(status),
                &cancel,
            )
        });
    let recovered = async {
        let mut result = Ok(());
        for i in 0..net.nodes.len() {
            result = net.wait_for_block(i, number, 3 * MINUTE).await.map(drop);
            if result.is_err() {
                break;
            }
        }
        cancel.cancel();
        result
    };
    let (_, recovered) = tokio::join!(futures_util::future::join_all(watches), recovered);
    recovered?;
    let redials: u64 = statuses.iter().map(|s| s.borrow().stall_redials).sum();
    ensure!(redials > 0, "recovered without a re-dial: not a wedge");
    Ok(redials)
}

/// Three signers that sealed a few blocks, stopped together and started again
/// without sealing, then made to start sealing one after the other as in the
/// wedge that was seen (returns the head they restarted at), or `None` if
/// they restarted on different heads or the chain moved on after all.
async fn wedged_after_restart() -> Result<Option<(TestNetwork, u64)>> {
    use alloy::eips::BlockNumberOrTag;
    use geth_agent::rpc::GethRpc;
    use nix::sys::signal::Signal;
    use tokio::time::Instant;

    let mut net = TestNetwork::start(NetworkOptions::default()).await?;
    net.wait_for_block(0, 5, 2 * MINUTE).await?;
    // Stopped on one head: sealing ends first, then the last blocks spread.
    for node in &net.nodes {
        let _: serde_json::Value = node.rpc().await?.call("miner_stop", ()).await?;
    }
    let net_ref = &net;
    eventually("every node on the same head", MINUTE, || async move {
        let head = net_ref.head(0).await?;
        let hash = net_ref.block_hash(0, head).await?;
        for i in 1..3 {
            if net_ref.head(i).await? != head || net_ref.block_hash(i, head).await? != hash {
                return Ok(None);
            }
        }
        Ok(Some(()))
    })
    .await?;
    for node in &net.nodes {
        node.signal(Signal::SIGTERM)?;
    }
    for node in &mut net.nodes {
        node.wait_exit(MINUTE).await?;
    }
    for i in 0..3 {
        net.spawn(i)?;
    }
    let mut rpcs = Vec::new();
    for node in &net.nodes {
        rpcs.push(GethRpc::connect_by(&node.ipc(), Instant::now() + MINUTE).await?);
    }
    let never = tokio_util::sync::CancellationToken::new();
    for rpc in &rpcs {
        eventually("2 peers", MINUTE, || async move {
            Ok((rpc.peer_count().await? == 2).then_some(()))
        })
        .await?;
        geth_agent::startup::wait_until_signer_unlocked(rpc, &never).await?;
    }
    let head = net.head(0).await?;
    for i in 1..3 {
        if net.head(i).await? != head
            || net.block_hash(i, head).await? != net.block_hash(0, head).await?
        {
            println!("the signers restarted on different heads");
            return Ok(None);
        }
    }
    // X seals first: in turn for the next block if its in-turn signer may
    // seal (then X's block outweighs Y's), else either (equal weight, and
    // geth keeps its own). L sealed the head and may not seal the next.
    let last = net.signer_of(0, head).await?;
    let mut sorted: Vec<Address> = net.nodes.iter().filter_map(|n| n.info.signer).collect();
    sorted.sort();
    let in_turn = sorted[(head as usize + 1) % sorted.len()];
    let index = |a: Address| net.nodes.iter().position(|n| n.info.signer == Some(a));
    let l = index(last).expect("the head's signer is a node");
    let others: Vec<usize> = (0..3).filter(|i| *i != l).collect();
    let (x, y) = if in_turn != last && index(in_turn) == Some(others[1]) {
        (others[1], others[0])
    } else {
        (others[0], others[1])
    };
    // A parent older than period + wiggle: whoever mines seals at once.
    let parent = rpcs[0]
        .block(BlockNumberOrTag::Number(head))
        .await?
        .header
        .timestamp;
    eventually("the head to be 3 s old", MINUTE, || async move {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
        Ok((now.as_secs() >= parent + 3).then_some(()))
    })
    .await?;
    let _: serde_json::Value = rpcs[x].call("miner_start", ()).await?;
    net.wait_for_block(x, head + 1, MINUTE).await?;
    let mined_x = net.block_hash(x, head + 1).await?;
    // Y and L do not mine yet: each drops X's block when it arrives.
    eventually("X's block dropped by the others", MINUTE, || async {
        Ok([y, l]
            .iter()
            .all(|&i| dropped(&net.nodes[i], mined_x))
            .then_some(()))
    })
    .await?;
    let _: serde_json::Value = rpcs[y].call("miner_start", ()).await?;
    net.wait_for_block(y, head + 1, MINUTE).await?;
    let mined_y = net.block_hash(y, head + 1).await?;
    eventually("Y's block dropped by L", MINUTE, || async {
        Ok(dropped(&net.nodes[l], mined_y).then_some(()))
    })
    .await?;
    let _: serde_json::Value = rpcs[l].call("miner_start", ()).await?;
    // Wedged if, some seconds on, nobody moved: X and Y on their own block,
    // L (which may not seal) still at the head.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let heads = [net.head(x).await?, net.head(y).await?, net.head(l).await?];
    let wedged = heads == [head + 1, head + 1, head]
        && net.block_hash(x, head + 1).await? == mined_x
        && net.block_hash(y, head + 1).await? == mined_y
        && mined_x != mined_y;
    println!("restarted at {head}: heads (X, Y, L) {heads:?}, wedged: {wedged}");
    Ok(wedged.then_some((net, head)))
}

/// Whether geth's log says it dropped the propagated block `hash`.
fn dropped(node: &testnet::TestNode, hash: alloy::primitives::B256) -> bool {
    let hash = format!("{hash:#x}");
    node.log_text()
        .lines()
        .any(|l| l.contains("discarded propagated block") && l.contains(&hash))
}

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
