//! The Solidity page at `/solidity` with a real geth 1.13.15 network, real
//! agents reporting readiness and a real aggregator, driven by headless
//! Chromium (tests/browser/solidity.mjs): compile, deploy, transact, read,
//! events, errors with lines, OpenZeppelin, no request off loopback; without
//! development accounts nothing can be sent and the pass-through refuses
//! everything outside its allow-list. Also: the checked-in bundle is what the
//! sources build to.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy::consensus::{SignableTransaction, TxLegacy};
use alloy::eips::eip2718::Encodable2718;
use alloy::network::TxSignerSync;
use alloy::primitives::{Address, TxKind, U256};
use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use testnet::{
    eventually, free_ports, http_get, sibling_binary, workspace_root, Launcher, NetworkOptions,
    TestNetwork,
};

const AGGREGATOR: &str = env!("CARGO_BIN_EXE_geth-aggregator");
const MINUTE: Duration = Duration::from_secs(60);

/// The Solidity page's npm folder, installed once per test run.
fn npm_dir() -> Result<PathBuf> {
    static ONCE: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);
    let mut dir = ONCE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(d) = &*dir {
        return Ok(d.clone());
    }
    let out = std::process::Command::new(workspace_root().join("scripts/install-solidity"))
        .output()
        .context("running scripts/install-solidity")?;
    ensure!(
        out.status.success(),
        "scripts/install-solidity failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = PathBuf::from(String::from_utf8(out.stdout)?.trim());
    *dir = Some(path.clone());
    Ok(path)
}

/// The page's checks in Chromium; the last stdout line as JSON.
/// `wallet`: the injected wallet's RPC URL and key.
async fn browser(
    dashboard: SocketAddr,
    mode: &str,
    npm: &Path,
    wallet: Option<(&str, &str)>,
) -> Result<Value> {
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(workspace_root().join("tests/browser/solidity.mjs"))
        .arg(format!("http://{dashboard}/"))
        .arg(mode)
        .arg(npm);
    if let Some((rpc, key)) = wallet {
        cmd.arg(rpc).env("WALLET_KEY", key);
    }
    // Each of the script's waits has its own deadline; this one bounds the
    // whole run should the browser hang.
    let out = tokio::time::timeout(10 * MINUTE, cmd.kill_on_drop(true).output())
        .await
        .with_context(|| format!("solidity.mjs {mode} still running after 10 minutes"))??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The compile times (page and CLI) for whoever reads the test output.
    eprint!("{stderr}");
    ensure!(
        out.status.success(),
        "solidity.mjs {mode} failed ({}): {stdout} {stderr}",
        out.status
    );
    Ok(serde_json::from_str(
        stdout.lines().last().unwrap_or_default(),
    )?)
}

async fn rpc(
    client: &reqwest::Client,
    dashboard: SocketAddr,
    body: &Value,
) -> Result<(u16, Value)> {
    let r = client
        .post(format!("http://{dashboard}/solidity/rpc"))
        .json(body)
        .send()
        .await?;
    let status = r.status().as_u16();
    let text = r.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))?,
    ))
}

fn call(method: &str, params: Value) -> Value {
    let mut call = json!({"jsonrpc": "2.0", "id": 3, "method": method});
    call["params"] = params;
    call
}

/// Methods outside the page's allow-list, each refused by name.
const REFUSED: &[&str] = &[
    "eth_sendTransaction",
    "eth_sign",
    "eth_accounts",
    "personal_unlockAccount",
    "personal_sendTransaction",
    "admin_addPeer",
    "admin_nodeInfo",
    "debug_traceTransaction",
    "miner_start",
    "clique_propose",
    "txpool_content",
    "eth_subscribe",
    "eth_getProof",
    "web3_clientVersion",
];

async fn assert_refused(client: &reqwest::Client, dashboard: SocketAddr) -> Result<()> {
    for m in REFUSED {
        let (status, v) = rpc(client, dashboard, &call(m, json!([]))).await?;
        assert_eq!(status, 200, "{m}: {v}");
        assert_eq!(v["error"]["code"], -32601, "{m}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|s| s.contains("solidity rule: allow-list")),
            "{m}: {v}"
        );
        assert_eq!(v["id"], 3, "{m}: {v}");
    }
    let (_, v) = rpc(
        client,
        dashboard,
        &json!([
            call("eth_chainId", json!([])),
            call("eth_blockNumber", json!([]))
        ]),
    )
    .await?;
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|s| s.contains("single-call")),
        "{v}"
    );
    let r = client
        .post(format!("http://{dashboard}/solidity/rpc"))
        .body("{not json")
        .send()
        .await?;
    let v: Value = r.json().await?;
    assert_eq!(v["error"]["code"], -32700, "{v}");
    Ok(())
}

/// One signer and one validator, each under its agent reporting to an
/// aggregator that serves the page with `page_args`.
async fn start(page_args: &[&str]) -> Result<(TestNetwork, SocketAddr)> {
    let port = free_ports(1)?[0];
    let dashboard: SocketAddr = ([127, 0, 0, 1], port).into();
    let agent = sibling_binary("geth-agent");
    let mut net = TestNetwork::generate(&NetworkOptions {
        signers: 1,
        validators: 1,
        period: 1,
        launcher: Launcher::Agent(agent.clone()),
        agent_args: vec!["--aggregator".into(), format!("http://{dashboard}")],
        ..Default::default()
    })?;
    let db = net.path().join("aggregator.db");
    let mut cmd = net.aggregator_command(Path::new(AGGREGATOR), dashboard, &db);
    cmd.args(page_args);
    net.spawn_other(0, cmd)?;
    net.spawn(0)?;
    let validator = net.agent_command(1, &agent, &[]);
    net.spawn_other(1, validator)?;
    let name = net.nodes[1].info.name.clone();
    eventually("the validator ready at the aggregator", 4 * MINUTE, || {
        let name = name.clone();
        async move {
            let (code, body) = http_get(dashboard, "/api/state").await?;
            ensure!(code == 200, "{code}");
            let state: Value = serde_json::from_str(&body)?;
            let ready = state["nodes"].as_array().is_some_and(|nodes| {
                nodes.iter().any(|n| {
                    n["name"] == name.as_str() && n["online"] == true && n["ready"] == true
                })
            });
            Ok(ready.then_some(()))
        }
    })
    .await?;
    Ok((net, dashboard))
}

#[tokio::test]
async fn the_solidity_page_compiles_deploys_and_calls_contracts_on_a_real_chain() -> Result<()> {
    let npm = npm_dir()?;
    let npm_arg = npm.display().to_string();
    let (net, dashboard) =
        start(&["--solidity-assets", &npm_arg, "--solidity-dev-accounts"]).await?;
    let r = browser(dashboard, "dev", &npm, None).await?;

    assert_eq!(r["pageErrors"], json!([]), "{r}");
    // Every request of the page and its worker stayed on the aggregator.
    assert_eq!(r["offOrigin"], json!([]), "{r}");
    assert!(r["requests"].as_u64() > Some(20), "{r}");
    // The page's requests went through the proxy that forwards only to
    // loopback.
    assert!(r["proxied"].as_u64() > Some(20), "{r}");
    assert_eq!(r["soljsonFetched"], true, "{r}");
    assert!(r["libraryFetched"].as_u64() > Some(5), "{r}");
    assert_eq!(r["accounts"][0], "dev:0", "{r}");
    assert_eq!(r["noSignerShown"], false, "{r}");

    // Compiled with its import, ABI and bytecode shown and downloadable.
    assert_eq!(r["storage"]["ok"], true, "{r}");
    assert_eq!(r["abiShown"], true, "{r}");
    assert_eq!(r["bytecodeShown"], true, "{r}");
    assert_eq!(r["abiDownload"]["name"], "Storage.abi.json", "{r}");
    assert_eq!(
        r["abiDownload"]["functions"],
        json!(["get", "owner", "set"]),
        "{r}"
    );

    // Deployed with constructor argument 7; set(42) mined with its event;
    // the getter reads 42; the list survives a reload.
    let address = r["address"]
        .as_str()
        .context("deployed address")?
        .to_owned();
    assert_eq!(r["first"]["value"], "7", "{r}");
    assert_eq!(r["set"]["status"], "1", "{r}");
    assert!(
        r["set"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("gas used ")),
        "{r}"
    );
    assert_eq!(
        r["set"]["events"],
        json!([format!(
            "ValueChanged(by={}, previous=7, value=42)",
            net.network.accounts[0].address.to_checksum(None)
        )]),
        "{r}"
    );
    assert_eq!(r["after"]["value"], "42", "{r}");
    assert!(r["afterReload"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x == address.as_str())));
    assert_eq!(r["reloadRead"]["value"], "42", "{r}");

    // The code is on chain, asked of the validator directly.
    let client = reqwest::Client::builder().timeout(MINUTE).build()?;
    let code: Value = client
        .post(net.nodes[1].http_url())
        .json(&call("eth_getCode", json!([address, "latest"])))
        .send()
        .await?
        .json()
        .await?;
    let code = code["result"].as_str().context("eth_getCode result")?;
    assert!(code.len() > 100 && code.starts_with("0x60"), "{code}");
    let storage: Value = client
        .post(net.nodes[1].http_url())
        .json(&call("eth_getStorageAt", json!([address, "0x1", "latest"])))
        .send()
        .await?
        .json()
        .await?;
    let stored = storage["result"]
        .as_str()
        .context("eth_getStorageAt result")?;
    assert_eq!(
        u64::from_str_radix(stored.trim_start_matches("0x"), 16)?,
        42,
        "{storage}"
    );

    // A syntax error: file, line and the compiler's message; a click opens it.
    let broken = &r["broken"];
    assert_eq!(broken["ok"], false, "{r}");
    assert_eq!(broken["diagnostics"][0]["file"], "Broken.sol", "{r}");
    assert_eq!(broken["diagnostics"][0]["line"], 6, "{r}");
    assert!(
        broken["diagnostics"][0]["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("Broken.sol:6:") && t.contains("ParserError")),
        "{r}"
    );
    assert_eq!(broken["opened"], "Broken.sol", "{r}");
    assert!(
        broken["cursorLine"]
            .as_str()
            .is_some_and(|l| l.contains("uint x = ;")),
        "{r}"
    );

    // OpenZeppelin's ERC-20 compiles in the page; the CLI agrees.
    assert_eq!(r["token"]["ok"], true, "{r}");
    assert!(
        r["token"]["contracts"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c == "Token (Token.sol)")),
        "{r}"
    );
    assert_eq!(r["timing"]["cliErrors"], 0, "{r}");
    assert_eq!(r["timing"]["cliSources"], r["token"]["sources"], "{r}");
    eprintln!(
        "OpenZeppelin ERC-20 compile: page {} ms ({} ms with loading solc in a new worker), \
         solc CLI {} ms (a new process), ratio {} (target: within 3x)",
        r["timing"]["pageWallMs"],
        r["timing"]["pageColdMs"],
        r["timing"]["cliWallMs"],
        r["timing"]["ratio"]
    );
    let page_ms = r["timing"]["pageWallMs"].as_f64().context("page time")?;
    let cold_ms = r["timing"]["pageColdMs"]
        .as_f64()
        .context("page cold time")?;
    let cli_ms = r["timing"]["cliWallMs"].as_f64().context("CLI time")?;
    assert!(page_ms <= 3.0 * cli_ms && cold_ms <= 3.0 * cli_ms, "{r}");

    // With the development accounts on, the pass-through still refuses
    // everything outside its allow-list.
    assert_refused(&client, dashboard).await?;
    let (_, v) = rpc(&client, dashboard, &call("eth_chainId", json!([]))).await?;
    assert_eq!(v["result"], format!("{:#x}", net.network.chain_id), "{v}");
    Ok(())
}

#[tokio::test]
async fn without_development_accounts_nothing_can_be_sent_and_the_pass_through_refuses_the_rest(
) -> Result<()> {
    let npm = npm_dir()?;
    let npm_arg = npm.display().to_string();
    let (net, dashboard) = start(&["--solidity-assets", &npm_arg]).await?;
    let client = reqwest::Client::builder().timeout(MINUTE).build()?;

    let config: Value = client
        .get(format!("http://{dashboard}/solidity/config"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(config["devAccounts"], Value::Null, "{config}");
    assert_eq!(config["evmVersion"], "berlin", "{config}");

    // The library serves OpenZeppelin's sources and nothing else.
    // Raw paths (a URL library would resolve the dot segments).
    let lib = |path: &str| {
        let path = format!("/solidity/lib/{path}");
        async move { http_get(dashboard, &path).await }
    };
    let (status, text) = lib("@openzeppelin/contracts/token/ERC20/ERC20.sol").await?;
    assert!(
        status == 200 && text.contains("abstract contract ERC20"),
        "{status}"
    );
    for bad in [
        "@openzeppelin/contracts/%2e%2e/%2e%2e/solc/package.json",
        "@openzeppelin/contracts/%2e%2e/%2e%2e/%2e%2e/network.sol",
        "@openzeppelin/contracts/package.json",
        "%2fetc%2fpasswd",
        "@openzeppelin/contracts/token/ERC20/Missing.sol",
    ] {
        let (status, text) = lib(bad).await?;
        assert_eq!(status, 404, "{bad}: {text}");
        let v: Value = serde_json::from_str(&text).with_context(|| format!("{bad}: {text}"))?;
        assert!(v["error"].is_string(), "{bad}: {text}");
    }

    // The page: no account, Deploy disabled, compiling works, no request off
    // loopback.
    let r = browser(dashboard, "off", &npm, None).await?;
    assert_eq!(r["accounts"], json!([""]), "{r}");
    assert_eq!(r["deployDisabled"], true, "{r}");
    assert_eq!(r["deployDisabledAfterCompile"], true, "{r}");
    assert_eq!(r["noSignerShown"], true, "{r}");
    assert_eq!(r["storage"]["ok"], true, "{r}");
    assert_eq!(r["token"]["ok"], true, "{r}");
    assert_eq!(r["offOrigin"], json!([]), "{r}");
    assert_eq!(r["pageErrors"], json!([]), "{r}");

    // A correctly signed transaction of a funded account is refused, and
    // never reaches the chain.
    let account = net.network.accounts.first().context("a funded account")?;
    let password = std::fs::read_to_string(net.network_dir.join("accounts/password"))?;
    let signer = alloy::signers::local::PrivateKeySigner::decrypt_keystore(
        net.network_dir.join(&account.keystore),
        password.trim(),
    )?;
    let mut tx = TxLegacy {
        chain_id: Some(net.network.chain_id),
        nonce: 0,
        gas_price: 1_000_000_000,
        gas_limit: 21_000,
        to: TxKind::Call(Address::repeat_byte(0x42)),
        value: U256::from(1),
        input: Default::default(),
    };
    let signature = signer.sign_transaction_sync(&mut tx)?;
    let raw = format!(
        "0x{}",
        hex::encode(tx.into_signed(signature).encoded_2718())
    );
    let (status, v) = rpc(
        &client,
        dashboard,
        &call("eth_sendRawTransaction", json!([raw])),
    )
    .await?;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["error"]["code"], -32601, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|s| s.contains("dev-accounts-off")),
        "{v}"
    );
    let (_, nonce) = rpc(
        &client,
        dashboard,
        &call(
            "eth_getTransactionCount",
            json!([format!("{:#x}", account.address), "pending"]),
        ),
    )
    .await?;
    assert_eq!(nonce["result"], "0x0", "{nonce}");

    // Reads the page needs pass; everything else is refused by name.
    let (_, v) = rpc(&client, dashboard, &call("eth_chainId", json!([]))).await?;
    assert_eq!(v["result"], format!("{:#x}", net.network.chain_id), "{v}");
    assert_refused(&client, dashboard).await?;

    // With a wallet in the browser the page deploys and transacts through
    // it (the wallet sends to its own RPC URL, a validator's, as MetaMask
    // would), the development accounts still off.
    let key = format!("0x{}", hex::encode(signer.to_bytes()));
    let rpc_url = net.nodes[1].http_url();
    let r = browser(dashboard, "wallet", &npm, Some((&rpc_url, &key))).await?;
    assert_eq!(r["accounts"], json!(["wallet"]), "{r}");
    assert_eq!(r["first"]["value"], "7", "{r}");
    assert_eq!(r["set"]["status"], "1", "{r}");
    assert_eq!(
        r["set"]["events"],
        json!([format!(
            "ValueChanged(by={}, previous=7, value=42)",
            account.address.to_checksum(None)
        )]),
        "{r}"
    );
    assert_eq!(r["after"]["value"], "42", "{r}");
    assert_eq!(r["walletSent"], 2, "{r}");
    assert_eq!(r["offOrigin"], json!([]), "{r}");
    assert_eq!(r["pageErrors"], json!([]), "{r}");
    let address = r["address"].as_str().context("deployed address")?;
    let code: Value = client
        .post(&rpc_url)
        .json(&call("eth_getCode", json!([address, "latest"])))
        .send()
        .await?
        .json()
        .await?;
    assert!(
        code["result"].as_str().is_some_and(|c| c.len() > 100),
        "{code}"
    );
    Ok(())
}

#[test]
fn the_checked_in_bundle_is_what_the_sources_build() -> Result<()> {
    npm_dir()?;
    let web = workspace_root().join("aggregator/web/solidity");
    let out = tempfile::tempdir()?;
    let status = std::process::Command::new("node")
        .arg(web.join("build.mjs"))
        .arg(out.path())
        .status()?;
    ensure!(status.success(), "node build.mjs failed: {status}");
    for file in ["app.js", "worker.js"] {
        let built = std::fs::read(out.path().join(file))?;
        let checked_in = std::fs::read(web.join("dist").join(file))?;
        ensure!(
            built == checked_in,
            "aggregator/web/solidity/dist/{file} is stale: run `npm run build` in aggregator/web/solidity and commit dist/"
        );
    }
    Ok(())
}

#[tokio::test]
async fn missing_page_assets_or_account_keys_are_configuration_errors() -> Result<()> {
    let net = TestNetwork::generate(&NetworkOptions {
        signers: 1,
        ..Default::default()
    })?;
    let empty = net.path().join("no-npm-here");
    std::fs::create_dir_all(&empty)?;
    let port = free_ports(1)?[0];
    let empty_arg = empty.display().to_string();
    let cases: [(&[&str], &str); 2] = [
        (&["--solidity-assets", &empty_arg], "solc/soljson.js"),
        (&["--solidity-dev-accounts"], "accounts/password"),
    ];
    // Without the accounts' password the keys cannot be handed out.
    std::fs::remove_file(net.network_dir.join("accounts/password"))?;
    for (args, expected) in cases {
        let mut cmd = net.aggregator_command(
            Path::new(AGGREGATOR),
            ([127, 0, 0, 1], port).into(),
            &net.path().join("agg.db"),
        );
        cmd.args(args);
        let out = tokio::process::Command::from(cmd).output().await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    Ok(())
}
