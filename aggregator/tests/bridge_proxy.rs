//! The bridge page through the aggregator (`--bridge-url`): a real
//! `geth-bridge serve` reading a real geth clique chain, a real aggregator in
//! front of it. The page, its script and the signing API answer through the
//! aggregator exactly as they do directly; a stopped bridge gives 502, an
//! aggregator without the flag 404, an oversized body 413, all with a JSON
//! reason.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use testnet::{eventually, free_ports, run_command, sibling_binary, NetworkOptions, TestNetwork};

const AGGREGATOR: &str = env!("CARGO_BIN_EXE_geth-aggregator");
const MINUTE: Duration = Duration::from_secs(60);
const DIRECTION: &str = "side-to-main";

/// `geth-bridge serve`, killed when dropped.
struct Bridge {
    child: Child,
    url: String,
}

impl Bridge {
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A signing key (`geth-bridge new-key`) and a one-direction config reading
/// the chain at `rpc`.
fn bridge_config(dir: &Path, listen: SocketAddr, rpc: &str, chain_id: u64) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let password = dir.join("key.password");
    std::fs::write(&password, "bridge-test-password\n")?;
    let out = run_command(
        Command::new(sibling_binary("geth-bridge"))
            .args(["new-key", "--dir"])
            .arg(dir.join("keys"))
            .arg("--password-file")
            .arg(&password),
    )?;
    let keystore = out
        .split_whitespace()
        .nth(1)
        .context("new-key prints <address> <keystore>")?;
    let config = dir.join("bridge.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{listen}\"\nstore = \"bridge.sqlite\"\nrate_limit_per_minute = 100000\n\n\
             [[direction]]\nname = \"{DIRECTION}\"\nsource_rpc = \"{rpc}\"\nsource_chain_id = {chain_id}\n\
             confirmations = 2\ndestination_chain_id = 31337\nkeystore = \"{keystore}\"\n\
             password_file = \"{}\"\n\n[[direction.pair]]\nkind = \"erc20\"\n\
             source = \"0x1111111111111111111111111111111111111111\"\n\
             destination = \"0x2222222222222222222222222222222222222222\"\n",
            password.display()
        ),
    )?;
    Ok(config)
}

async fn spawn_bridge(config: &Path, listen: SocketAddr, log: &Path) -> Result<Bridge> {
    let file = std::fs::File::create(log)?;
    let child = Command::new(sibling_binary("geth-bridge"))
        .args(["serve", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()?;
    let bridge = Bridge {
        child,
        url: format!("http://{listen}"),
    };
    let health = format!("{}/healthz", bridge.url);
    eventually("the bridge service to answer", 2 * MINUTE, || {
        let health = health.clone();
        async move {
            Ok(reqwest::get(&health)
                .await
                .ok()
                .filter(|r| r.status().is_success()))
        }
    })
    .await?;
    Ok(bridge)
}

async fn wait_live(addr: SocketAddr) -> Result<()> {
    let url = format!("http://{addr}/livez");
    eventually("the aggregator to answer", 2 * MINUTE, || {
        let url = url.clone();
        async move {
            Ok(reqwest::get(&url)
                .await
                .ok()
                .filter(|r| r.status().is_success()))
        }
    })
    .await?;
    Ok(())
}

/// GET → (status, content type, body).
async fn get(url: &str) -> Result<(u16, String, String)> {
    let r = reqwest::get(url).await?;
    let status = r.status().as_u16();
    let kind = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Ok((status, kind, r.text().await?))
}

/// POST a body → (status, JSON answer).
async fn post(url: &str, body: impl Into<reqwest::Body>) -> Result<(u16, Value)> {
    let r = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    let status = r.status().as_u16();
    let text = r.text().await?;
    let value = serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))?;
    Ok((status, value))
}

#[tokio::test(flavor = "multi_thread")]
async fn bridge_page_and_signing_api_through_the_aggregator() -> Result<()> {
    let mut net = TestNetwork::start(NetworkOptions {
        signers: 1,
        validators: 1,
        ..Default::default()
    })
    .await?;
    let rpc = net
        .nodes
        .iter()
        .find(|n| n.info.signer.is_none())
        .context("a validator")?
        .http_url();
    let chain_id = net.network.chain_id;
    let addrs: Vec<SocketAddr> = free_ports(3)?
        .into_iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
        .collect();
    let (bridge_addr, proxied, plain) = (addrs[0], addrs[1], addrs[2]);
    let dir = net.path().join("bridge");
    let config = bridge_config(&dir, bridge_addr, &rpc, chain_id)?;
    let mut bridge = spawn_bridge(&config, bridge_addr, &dir.join("bridge.log")).await?;

    let mut with_bridge =
        net.aggregator_command(Path::new(AGGREGATOR), proxied, &net.path().join("a.db"));
    with_bridge.arg("--bridge-url").arg(&bridge.url);
    net.spawn_other(0, with_bridge)?;
    let without = net.aggregator_command(Path::new(AGGREGATOR), plain, &net.path().join("b.db"));
    net.spawn_other(0, without)?;
    wait_live(proxied).await?;
    wait_live(plain).await?;
    let via = format!("http://{proxied}");

    // The page and its script, byte for byte, under the aggregator's origin.
    for path in ["/bridge/", "/bridge/app.js", "/bridge/v1/directions"] {
        let direct = get(&format!("{}{path}", bridge.url)).await?;
        let proxied = get(&format!("{via}{path}")).await?;
        assert_eq!(direct.0, 200, "{path}: {direct:?}");
        assert_eq!(proxied, direct, "{path}");
    }
    let (_, kind, page) = get(&format!("{via}/bridge/")).await?;
    assert!(kind.starts_with("text/html"), "{kind}");
    // Relative URLs: they resolve under whatever origin serves /bridge/.
    assert!(page.contains(r#"<script src="app.js">"#), "{page}");
    let (_, kind, _) = get(&format!("{via}/bridge/app.js")).await?;
    assert!(kind.starts_with("text/javascript"), "{kind}");
    // `/bridge` redirects to the page's folder, so those URLs resolve.
    let r = reqwest::get(format!("{via}/bridge")).await?;
    assert_eq!(r.url().path(), "/bridge/");
    assert_eq!(r.text().await?, page);

    // The signing API: the same answer (a rejection of an unknown
    // transaction, read from the chain) directly and through the aggregator.
    let ask = json!({ "tx_hash": format!("0x{}", "ab".repeat(32)) }).to_string();
    let sign = format!("/bridge/v1/{DIRECTION}/sign");
    // (geth answers "transaction indexing is in progress" just after start.)
    let direct = eventually("the bridge to read the chain", 2 * MINUTE, || {
        let url = format!("{}{sign}", bridge.url);
        let ask = ask.clone();
        async move { Ok(Some(post(&url, ask).await?).filter(|(status, _)| *status != 503)) }
    })
    .await?;
    let through = post(&format!("{via}{sign}"), ask.clone()).await?;
    assert_eq!(direct.0, 404, "{direct:?}");
    assert_eq!(direct.1["status"], "rejected", "{direct:?}");
    assert_eq!(through, direct);
    // A malformed request is the service's own 400, passed on.
    let direct = post(&format!("{}{sign}", bridge.url), "{").await?;
    let through = post(&format!("{via}{sign}"), "{").await?;
    assert_eq!(direct.0, 400, "{direct:?}");
    assert_eq!(through, direct);

    // An oversized body never reaches the service.
    let huge = format!(r#"{{"tx_hash":"{}"}}"#, "a".repeat(200 * 1024));
    let (status, body) = post(&format!("{via}{sign}"), huge).await?;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["reason"], "body_too_large", "{body}");

    // The dashboard shows the "Bridge" link only where the bridge is set up.
    let (_, _, dashboard) = get(&format!("{via}/")).await?;
    assert!(
        dashboard.contains(
            r#"href="bridge/" title="move assets between this chain and mainnet" data-bridge-link>"#
        ),
        "link not shown"
    );
    let (_, _, dashboard) = get(&format!("http://{plain}/")).await?;
    assert!(dashboard.contains("data-bridge-link hidden>"), "link shown");

    // Without --bridge-url: 404 with a reason saying how to enable it.
    for path in ["/bridge", "/bridge/", "/bridge/app.js"] {
        let r = reqwest::get(format!("http://{plain}{path}")).await?;
        assert_eq!(r.status().as_u16(), 404, "{path}");
        let body: Value = r.json().await?;
        assert_eq!(body["reason"], "bridge_not_configured", "{body}");
        let message = body["error"].as_str().unwrap_or_default();
        assert!(message.contains("--bridge-url"), "{body}");
    }
    let (status, body) = post(&format!("http://{plain}{sign}"), ask.clone()).await?;
    assert_eq!(
        (status, body["reason"].clone()),
        (404, json!("bridge_not_configured"))
    );

    // The bridge stops: 502 with the reason, for the page and the API.
    bridge.stop();
    let r = reqwest::get(format!("{via}/bridge/")).await?;
    assert_eq!(r.status().as_u16(), 502);
    let body: Value = r.json().await?;
    assert_eq!(body["reason"], "bridge_unreachable", "{body}");
    ensure!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains(&bridge.url),
        "{body}"
    );
    let (status, body) = post(&format!("{via}{sign}"), ask).await?;
    assert_eq!(
        (status, body["reason"].clone()),
        (502, json!("bridge_unreachable"))
    );

    // The aggregator itself keeps serving.
    let (status, _, _) = get(&format!("{via}/api/state")).await?;
    assert_eq!(status, 200);
    Ok(())
}

#[test]
fn a_bad_bridge_url_is_a_configuration_error() -> Result<()> {
    let net = TestNetwork::generate(&NetworkOptions {
        signers: 1,
        ..Default::default()
    })?;
    for bad in [
        "https://127.0.0.1:1",
        "127.0.0.1:8090",
        "http://127.0.0.1:1/prefix",
    ] {
        let out = net
            .aggregator_command(
                Path::new(AGGREGATOR),
                SocketAddr::from(([127, 0, 0, 1], 0)),
                &net.path().join("c.db"),
            )
            .arg("--bridge-url")
            .arg(bad)
            .output()?;
        assert_eq!(out.status.code(), Some(64), "{bad}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--bridge-url"), "{bad}: {stderr}");
    }
    Ok(())
}
