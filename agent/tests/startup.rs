//! Sealing starts only once geth has unlocked the signer account. geth opens its
//! IPC before `--unlock` has decrypted the keystore; a `miner_start` in between
//! fails the first seal ("authentication needed") and an idle clique chain
//! never retries, so a lone signer stays at block 0 (seen as a CI timeout on a
//! loaded machine). A keystore with geth's standard scrypt cost makes the
//! unlock take long enough to lose that race every time.

use std::process::Command;
use std::time::Duration;

use alloy::signers::local::PrivateKeySigner;
use anyhow::{ensure, Context, Result};
use geth_agent::rpc::GethRpc;
use testnet::{eventually, geth_bin, NetworkOptions, TestNetwork};
use tokio::time::Instant;

const MINUTE: Duration = Duration::from_secs(60);

/// A one-signer network whose signer keystore is re-encrypted by
/// `geth account import` (standard scrypt: about a second to unlock).
fn slow_unlocking_signer() -> Result<TestNetwork> {
    let net = TestNetwork::generate(&NetworkOptions {
        signers: 1,
        period: 1,
        ..Default::default()
    })?;
    let dir = net.node_dir(0);
    let keystore = dir.join("keystore");
    let password = std::fs::read_to_string(dir.join("password"))?;
    let file = std::fs::read_dir(&keystore)?
        .next()
        .context("a keystore file")??
        .path();
    let signer = PrivateKeySigner::decrypt_keystore(&file, password)?;
    let raw = net.path().join("raw-key");
    std::fs::write(&raw, hex::encode(signer.to_bytes()))?;
    std::fs::remove_file(&file)?;
    let out = Command::new(geth_bin())
        .arg("account")
        .arg("import")
        .arg("--datadir")
        .arg(net.path().join("import"))
        .arg("--keystore")
        .arg(&keystore)
        .arg("--password")
        .arg(dir.join("password"))
        .arg(&raw)
        .output()?;
    ensure!(
        out.status.success(),
        "geth account import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(&raw)?;
    Ok(net)
}

#[tokio::test]
async fn a_signer_told_to_seal_before_its_account_is_unlocked_stays_at_block_0() -> Result<()> {
    let mut net = slow_unlocking_signer()?;
    net.spawn(0)?;
    // What the startup policy did before: miner_start as soon as IPC answers.
    let rpc = GethRpc::connect_by(&net.nodes[0].ipc(), Instant::now() + MINUTE).await?;
    rpc.start_mining().await?;
    let net = &net;
    eventually("geth to unlock the account", MINUTE, || async move {
        Ok(net.nodes[0]
            .log_text()
            .contains("Unlocked account")
            .then_some(()))
    })
    .await?;
    let log = net.nodes[0].log_text();
    ensure!(
        log.contains("authentication needed"),
        "the first seal came before the unlock"
    );
    // Ten block periods later the chain has not moved.
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        assert_eq!(net.head(0).await?, 0, "geth retried the seal");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

#[tokio::test]
async fn the_startup_policy_starts_sealing_once_the_account_is_unlocked() -> Result<()> {
    let mut net = slow_unlocking_signer()?;
    net.spawn(0)?;
    net.apply_startup_policy().await?;
    net.wait_for_block(0, 3, 2 * MINUTE).await?;
    let log = net.nodes[0].log_text();
    assert!(
        !log.contains("Block sealing failed"),
        "no seal was tried before the unlock"
    );
    Ok(())
}
