//! End to end on two real chains: a geth clique sidechain and anvil as
//! "mainnet", with the `geth-bridge` binary signing. ERC-20 and ERC-721 go
//! sidechain → mainnet → sidechain; a transfer left in between resumes with a
//! byte-identical signature after a restart of the service; ethers.js
//! verifies the signatures; the service log never shows a key or password.

mod common;

use alloy::primitives::{Address, U256};
use anyhow::{ensure, Result};
use common::*;
use geth_bridge::client;
use geth_bridge::contracts::{AssetKind, IBridge};

const SIDE_TO_MAIN: &str = "side-to-main";
const MAIN_TO_SIDE: &str = "main-to-side";

#[tokio::test(flavor = "multi_thread")]
async fn erc20_and_erc721_round_trip_sidechain_mainnet_sidechain() -> Result<()> {
    let side = Sidechain::start().await?;
    let main = Anvil::start(31_337_001).await?;
    let dir = tempfile::tempdir()?;
    let to_main_key = new_key(dir.path(), SIDE_TO_MAIN)?;
    let to_side_key = new_key(dir.path(), MAIN_TO_SIDE)?;

    // Minting happens on the sidechain (home); mainnet burns and mints.
    let mut pairs = Vec::new();
    for kind in [AssetKind::Erc20, AssetKind::Erc721] {
        let on_side = side
            .chain
            .deploy(kind, true, &[to_side_key.signer.address()], 1)
            .await?;
        let on_main = main
            .chain
            .deploy(kind, false, &[to_main_key.signer.address()], 1)
            .await?;
        peer_both_ways(&side.chain, on_side, &main.chain, on_main).await?;
        pairs.push((kind, on_side, on_main));
    }
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], testnet::free_ports(1)?[0]));
    let config = write_config(
        dir.path(),
        listen,
        &[
            DirectionSpec {
                name: SIDE_TO_MAIN,
                source: &side.chain,
                destination: &main.chain,
                confirmations: 2,
                key: &to_main_key,
                pairs: pairs.iter().map(|(k, s, m)| (*k, *s, *m)).collect(),
            },
            DirectionSpec {
                name: MAIN_TO_SIDE,
                source: &main.chain,
                destination: &side.chain,
                confirmations: 2,
                key: &to_side_key,
                pairs: pairs.iter().map(|(k, s, m)| (*k, *m, *s)).collect(),
            },
        ],
    )?;
    let log = dir.path().join("service.log");
    let mut service = ServiceProcess::spawn(&config, listen, &log).await?;

    // The user is the sidechain's funded account; on mainnet anvil funds it.
    let user = side.chain.admin.clone();
    let owner = user.address();
    main.fund(owner).await?;
    let side_user = side.chain.provider(&user)?;
    let main_user = main.chain.provider(&user)?;
    // Claims on mainnet are submitted by someone else: anyone may submit.
    let main_relayer = main.chain.admin_provider()?;

    let (_, token_side, token_main) = pairs[0];
    let (_, nft_side, nft_main) = pairs[1];
    let amount = U256::from(400u64);
    let token_id = U256::from(7u64);
    side.chain
        .call(
            token_side,
            &IBridge::mintCall {
                to: owner,
                value: U256::from(1000u64),
            },
        )
        .await?;
    side.chain
        .call(
            nft_side,
            &IBridge::mintCall {
                to: owner,
                value: token_id,
            },
        )
        .await?;

    // --- sidechain → mainnet ---
    let erc20_deposit = client::deposit(&side_user, token_side, owner, amount).await?;
    let nft_deposit = client::deposit(&side_user, nft_side, owner, token_id).await?;
    let side_token = IBridge::new(token_side, side_user.clone());
    let side_nft = IBridge::new(nft_side, side_user.clone());
    assert_eq!(
        side_token.balanceOf(owner).call().await?,
        U256::from(600u64)
    );
    assert_eq!(
        side_token.balanceOf(token_side).call().await?,
        amount,
        "locked in the bridge"
    );
    assert_eq!(
        side_nft.ownerOf(token_id).call().await?,
        nft_side,
        "NFT locked in the bridge"
    );

    let first = signed(&service.url, SIDE_TO_MAIN, erc20_deposit.transaction_hash).await?;
    assert_eq!(first.claim.recipient, owner);
    assert_eq!(first.claim.value, amount);
    assert_eq!(first.claim.sourceContract, token_side);
    assert_eq!(first.destination_contract, token_main);
    assert_eq!(first.signer, to_main_key.signer.address());

    // The transfer is now "in between"; the service restarts; asking again
    // (no cache) gives the byte-identical signature.
    service.stop();
    let mut service = ServiceProcess::spawn(&config, listen, &log).await?;
    let resumed = signed(&service.url, SIDE_TO_MAIN, erc20_deposit.transaction_hash).await?;
    assert_eq!(
        resumed.signature, first.signature,
        "resume gives the same bytes"
    );
    assert_eq!(resumed, first);

    // Independent checks: OpenZeppelin's digest on chain and ethers.js.
    let main_token = IBridge::new(token_main, main_relayer.clone());
    assert_eq!(
        main_token.claimDigest(first.claim.clone()).call().await?,
        first.digest
    );
    let (recovered, digest) = ethers_verify(&first)?;
    assert_eq!(
        recovered,
        to_main_key.signer.address(),
        "ethers.js recovers the validator"
    );
    assert_eq!(digest, first.digest.to_string());

    client::claim(&main_relayer, &[resumed]).await?;
    assert_eq!(main_token.balanceOf(owner).call().await?, amount);
    let nft_signed = signed(&service.url, SIDE_TO_MAIN, nft_deposit.transaction_hash).await?;
    assert_eq!(ethers_verify(&nft_signed)?.0, to_main_key.signer.address());
    client::claim(&main_relayer, &[nft_signed]).await?;
    let main_nft = IBridge::new(nft_main, main_relayer.clone());
    assert_eq!(main_nft.ownerOf(token_id).call().await?, owner);

    // --- mainnet → sidechain ---
    let back20 = client::deposit(&main_user, token_main, owner, amount).await?;
    let back721 = client::deposit(&main_user, nft_main, owner, token_id).await?;
    main.mine(2).await?;
    assert_eq!(
        main_token.balanceOf(owner).call().await?,
        U256::ZERO,
        "burnt on mainnet"
    );
    assert_eq!(
        main_nft.balanceOf(owner).call().await?,
        U256::ZERO,
        "burnt on mainnet"
    );
    for deposit in [back20, back721] {
        let s = signed(&service.url, MAIN_TO_SIDE, deposit.transaction_hash).await?;
        assert_eq!(s.signer, to_side_key.signer.address());
        assert_eq!(ethers_verify(&s)?.0, to_side_key.signer.address());
        client::claim(&side_user, &[s]).await?;
    }
    // Back where it started, read from both chains.
    assert_eq!(
        side_token.balanceOf(owner).call().await?,
        U256::from(1000u64)
    );
    assert_eq!(side_token.balanceOf(token_side).call().await?, U256::ZERO);
    assert_eq!(side_nft.ownerOf(token_id).call().await?, owner);
    assert_eq!(main_token.balanceOf(owner).call().await?, U256::ZERO);

    // The metrics saw the signatures.
    let metrics = reqwest::get(format!("{}/metrics", service.url))
        .await?
        .text()
        .await?;
    ensure!(
        metrics.contains("bridge_requests_total{direction=\"main-to-side\",outcome=\"signed\"}"),
        "{metrics}"
    );

    // No line of the service's log carries a key or a password.
    service.stop();
    let text = std::fs::read_to_string(&log)?.to_lowercase();
    ensure!(
        text.contains("bridge signing service listening"),
        "log captured: {text}"
    );
    for key in [&to_main_key, &to_side_key] {
        let secret = hex::encode(key.signer.to_bytes());
        ensure!(
            !text.contains(&secret),
            "the service log contains a private key"
        );
        ensure!(
            !text.contains(&key.password.to_lowercase()),
            "the service log contains a keystore password"
        );
    }
    let _: Address = owner;
    Ok(())
}
