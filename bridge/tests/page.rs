//! The bridge page in headless Chromium: one transfer sidechain → mainnet and
//! one resumed after a reload, with a test EIP-1193 provider (FakeTestWallet)
//! standing in for MetaMask's UI; the chains (geth clique, anvil) and the
//! signing service are real, and the balances are read back from both chains.
//! The page is loaded through the aggregator (`--bridge-url`), as users reach it.

mod common;

use alloy::primitives::U256;
use anyhow::{ensure, Result};
use common::*;
use geth_bridge::contracts::{AssetKind, IBridge};

#[tokio::test(flavor = "multi_thread")]
async fn bridge_page_completes_a_transfer_and_a_resume_in_chromium() -> Result<()> {
    let mut side = Sidechain::start().await?;
    let main = Anvil::start(31_337_601).await?;
    let dir = tempfile::tempdir()?;
    let key = new_key(dir.path(), "side-to-main")?;
    let token_side = side
        .chain
        .deploy(AssetKind::Erc20, true, &[anvil_key(2).address()], 1)
        .await?;
    let token_main = main
        .chain
        .deploy(AssetKind::Erc20, false, &[key.signer.address()], 1)
        .await?;
    peer_both_ways(&side.chain, token_side, &main.chain, token_main).await?;
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], testnet::free_ports(1)?[0]));
    let config = write_config(
        dir.path(),
        listen,
        &[DirectionSpec {
            name: "side-to-main",
            source: &side.chain,
            destination: &main.chain,
            confirmations: 2,
            key: &key,
            pairs: vec![(AssetKind::Erc20, token_side, token_main)],
        }],
    )?;
    let service = ServiceProcess::spawn(&config, listen, &dir.path().join("service.log")).await?;
    // The page as users reach it: through the aggregator (`--bridge-url`).
    let dashboard = std::net::SocketAddr::from(([127, 0, 0, 1], testnet::free_ports(1)?[0]));
    let mut aggregator = side.net.aggregator_command(
        &testnet::sibling_binary("geth-aggregator"),
        dashboard,
        &dir.path().join("aggregator.db"),
    );
    aggregator.arg("--bridge-url").arg(&service.url);
    side.net.spawn_other(0, aggregator)?;
    let page = format!("http://{dashboard}/bridge/");
    let http = reqwest::Client::new();
    testnet::eventually("the aggregator to forward the page", MINUTE, || {
        let (http, page) = (http.clone(), page.clone());
        async move {
            Ok(http
                .get(&page)
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success()))
        }
    })
    .await?;
    let user = side.chain.admin.clone();
    main.fund(user.address()).await?;
    side.chain
        .call(
            token_side,
            &IBridge::mintCall {
                to: user.address(),
                value: U256::from(100u64),
            },
        )
        .await?;

    let out = tokio::process::Command::new("node")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/page.mjs"))
        .arg(&page)
        .arg(format!("{}={}", side.chain.chain_id, side.chain.url))
        .arg(format!("{}={}", main.chain.chain_id, main.chain.url))
        .args(["30", "12"])
        .env("ETHERS_DIR", ethers_dir()?)
        .env("WALLET_KEY", format!("0x{}", hex::encode(user.to_bytes())))
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "page.mjs failed ({}): {stdout} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default())?;
    assert_eq!(result["wallet"], "FakeTestWallet");
    assert_eq!(
        result["transfers"].as_array().map(Vec::len),
        Some(2),
        "{result}"
    );

    // Read back from both chains: 42 left the sidechain user, 42 arrived on mainnet.
    let on_side = IBridge::new(token_side, side.chain.admin_provider()?);
    let on_main = IBridge::new(token_main, main.chain.admin_provider()?);
    assert_eq!(
        on_side.balanceOf(user.address()).call().await?,
        U256::from(58u64)
    );
    assert_eq!(
        on_side.balanceOf(token_side).call().await?,
        U256::from(42u64)
    );
    assert_eq!(
        on_main.balanceOf(user.address()).call().await?,
        U256::from(42u64)
    );
    // The page showed the same mainnet balance after the last claim.
    let shown = result["assets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["contract"] == token_main.to_string().to_lowercase())
        .map(|a| a["balance"].clone());
    assert_eq!(shown, Some(serde_json::json!("42")), "{result}");
    Ok(())
}
