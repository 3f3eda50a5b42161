//! The operator's CLI: deposit and claim with a keystore against real chains
//! (two anvils) and the signing service; configuration errors exit 64.

mod common;

use std::process::Command;

use alloy::primitives::{TxHash, U256};
use alloy::signers::local::PrivateKeySigner;
use anyhow::{ensure, Result};
use common::*;
use geth_bridge::contracts::IBridge;

fn bridge_cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_geth-bridge"))
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_deposits_and_claims_with_a_keystore() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let Erc20Pair {
        a,
        b,
        token_a,
        token_b,
        config,
        ..
    } = erc20_pair(dir.path(), (31_337_401, 31_337_402), true).await?;
    let (url, _task) = serve_in_process(&config).await?;

    // The user's wallet: anvil's second account in an encrypted keystore.
    let user = anvil_key(1);
    let wallet_dir = dir.path().join("wallet");
    std::fs::create_dir_all(&wallet_dir)?;
    let password_file = dir.path().join("wallet.password");
    std::fs::write(&password_file, "user password\n")?;
    let mut rng = alloy::signers::k256::elliptic_curve::rand_core::OsRng;
    PrivateKeySigner::encrypt_keystore(
        &wallet_dir,
        &mut rng,
        user.to_bytes(),
        "user password",
        Some("user.json"),
    )?;
    let keystore = wallet_dir.join("user.json");
    a.chain
        .call(
            token_a,
            &IBridge::mintCall {
                to: user.address(),
                value: U256::from(100u64),
            },
        )
        .await?;

    let out = testnet::run_command(
        bridge_cli()
            .args(["deposit", "--rpc", &a.chain.url, "--keystore"])
            .arg(&keystore)
            .arg("--password-file")
            .arg(&password_file)
            .args([
                "--contract",
                &token_a.to_string(),
                "--recipient",
                &user.address().to_string(),
                "--value",
                "30",
            ]),
    )?;
    let deposit: TxHash = out.trim().parse()?;
    a.mine(1).await?;
    let out = testnet::run_command(
        bridge_cli()
            .args(["claim", "--rpc", &b.chain.url, "--keystore"])
            .arg(&keystore)
            .arg("--password-file")
            .arg(&password_file)
            .args([
                "--service",
                &url,
                "--direction",
                "a-to-b",
                "--tx",
                &deposit.to_string(),
            ]),
    )?;
    ensure!(out.trim().parse::<TxHash>().is_ok(), "claim printed {out}");
    let token_b = IBridge::new(token_b, b.chain.admin_provider()?);
    assert_eq!(
        token_b.balanceOf(user.address()).call().await?,
        U256::from(30u64)
    );

    // A claim the service refuses: a clear message and a failing exit.
    let refused = bridge_cli()
        .args(["claim", "--rpc", &b.chain.url, "--keystore"])
        .arg(&keystore)
        .arg("--password-file")
        .arg(&password_file)
        .args([
            "--service",
            &url,
            "--direction",
            "a-to-b",
            "--tx",
            &TxHash::repeat_byte(3).to_string(),
        ])
        .output()?;
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    ensure!(
        stderr.contains("transaction not found on the source chain"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn configuration_errors_exit_64_with_a_message() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let missing = bridge_cli()
        .args(["serve", "--config"])
        .arg(dir.path().join("none.toml"))
        .output()?;
    assert_eq!(missing.status.code(), Some(64));
    ensure!(String::from_utf8_lossy(&missing.stderr).contains("cannot read"));

    // A wrong keystore password: refused at start, password not echoed.
    let key = new_key(dir.path(), "d")?;
    std::fs::write(&key.password_file, "not the password\n")?;
    let config = offline_config(dir.path(), &key)?;
    let bad = bridge_cli()
        .args(["serve", "--config"])
        .arg(&config)
        .output()?;
    assert_eq!(bad.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    ensure!(stderr.contains("cannot decrypt the keystore"), "{stderr}");
    ensure!(
        !stderr.contains("not the password") && !stderr.contains(&key.password),
        "{stderr}"
    );

    // An unknown key in the config (e.g. a private key pasted in) is refused.
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)? + "private_key = \"0x01\"\n",
    )?;
    let unknown = bridge_cli()
        .args(["serve", "--config"])
        .arg(&config)
        .output()?;
    assert_eq!(unknown.status.code(), Some(64));
    Ok(())
}

#[tokio::test]
async fn requests_over_the_rate_limit_get_429_with_a_reason() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let key = new_key(dir.path(), "d")?;
    // No chain is contacted: the requests name an unknown direction.
    let config = offline_config(dir.path(), &key)?;
    let (url, _task) = serve_in_process_limited(&config, 3).await?;
    let body = serde_json::json!({"tx_hash": TxHash::repeat_byte(1)});
    for _ in 0..3 {
        let (status, answer) = ask(&url, "elsewhere", body.clone()).await?;
        assert_eq!(status, 404, "{answer}");
    }
    let (status, answer) = ask(&url, "elsewhere", body).await?;
    assert_eq!(status, 429, "{answer}");
    assert_eq!(answer["reason"], "too many requests");
    Ok(())
}
