//! The dashboard's Signers panel in headless Chromium against a real geth
//! 1.13.15 network: 3 signers under agents, the aggregator with an admin
//! token, signer-3 stopped. The panel lists the 3 signers with their node
//! names; through its operator form a wrong token is refused with the 401
//! reason, an `add` of an unknown node with the 400 reason, a bad enode to
//! admit with the 400 reason, and `remove signer-2` with the 422 quorum
//! reason (no change starts). The token is kept in sessionStorage only.
//! Then `remove signer-3` (stopped, so the 2 live signers keep the quorum)
//! through the form: the panel shows the change done at its block and the
//! list drops to 2 signers without a reload, as geth's `clique_getSigners`.
//! If the page does not get there, the plan's history, the aggregator's set
//! and each geth's head and set are printed before the test fails.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use testnet::{
    eventually, free_ports, http_get, sibling_binary, workspace_root, Launcher, NetworkOptions,
    TestNetwork,
};

const AGGREGATOR: &str = env!("CARGO_BIN_EXE_geth-aggregator");
const MINUTE: Duration = Duration::from_secs(60);
const TOKEN: &str = "panel-admin-token-0123456789abcdef";

async fn state(addr: SocketAddr) -> Result<Value> {
    let (code, body) = http_get(addr, "/api/state").await?;
    ensure!(code == 200, "/api/state {code}: {body}");
    Ok(serde_json::from_str(&body)?)
}

#[tokio::test]
async fn the_signers_panel_lists_the_set_and_shows_the_api_refusals() -> Result<()> {
    let addr: SocketAddr = ([127, 0, 0, 1], free_ports(1)?[0]).into();
    let options = NetworkOptions {
        signers: 3,
        validators: 0,
        period: 2,
        launcher: Launcher::Agent(sibling_binary("geth-agent")),
        agent_args: vec!["--aggregator".into(), format!("http://{addr}")],
        ..Default::default()
    };
    let mut net = TestNetwork::generate(&options)?;
    net.start_with_admin_aggregator(Path::new(AGGREGATOR), addr, TOKEN)?;
    eventually("3 signers ready and the set known", 4 * MINUTE, || async {
        let s = state(addr).await?;
        let ready = s["nodes"]
            .as_array()
            .context("nodes")?
            .iter()
            .filter(|n| n["online"] == true && n["ready"] == true)
            .count();
        let set = s["signers"].as_array().map_or(0, Vec::len);
        Ok((ready == 3 && set == 3).then_some(()))
    })
    .await?;

    // 2 of 3 signers live still seal, but removing signer-2 would leave 1.
    net.nodes[2].signal(nix::sys::signal::Signal::SIGTERM)?;
    net.nodes[2].wait_exit(2 * MINUTE).await?;
    eventually("signer-3 offline", 2 * MINUTE, || async {
        let s = state(addr).await?;
        Ok(s["nodes"]
            .as_array()
            .context("nodes")?
            .iter()
            .any(|n| n["name"] == "signer-3" && n["online"] == false)
            .then_some(()))
    })
    .await?;

    // The form's changes count the live signers: signer-1 and signer-2 must be.
    eventually("signer-1 and signer-2 online", 2 * MINUTE, || async {
        let s = state(addr).await?;
        let live = s["nodes"]
            .as_array()
            .context("nodes")?
            .iter()
            .filter(|n| n["online"] == true && n["name"] != "signer-3")
            .count();
        Ok((live == 2).then_some(()))
    })
    .await?;

    let script = workspace_root().join("tests/browser/signers.mjs");
    let out = tokio::process::Command::new("node")
        .arg(&script)
        .arg(format!("http://{addr}/"))
        .arg(TOKEN)
        .arg("3")
        .arg("signer-2")
        .arg("signer-3")
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        eprintln!("{}", diagnosis(&net, addr).await);
    }
    // A panic (not an error) keeps the network's logs for inspection.
    assert!(
        out.status.success(),
        "browser test failed ({}): {stdout} {stderr}",
        out.status
    );
    let page: Value = serde_json::from_str(stdout.lines().next().context("a JSON line")?)?;

    // The set as the page shows it: each signer's address under its node's name.
    let shown = page["signers"].as_array().context("signers")?;
    assert_eq!(shown.len(), 3, "{page}");
    for node in &net.nodes {
        let account = format!("{:#x}", node.info.signer.context("signer key")?);
        assert!(
            shown
                .iter()
                .any(|s| s["address"] == account.as_str() && s["name"] == node.info.name.as_str()),
            "{} ({account}) not listed: {page}",
            node.info.name
        );
    }
    assert!(
        page["before_token"]
            .as_str()
            .is_some_and(|t| t.contains("admin token")),
        "{page}"
    );

    let text = |key: &str| page[key].as_str().unwrap_or_default().to_owned();
    let unauthorized = text("unauthorized");
    assert!(
        unauthorized.starts_with("refused (401)") && unauthorized.contains("wrong admin token"),
        "{page}"
    );
    assert_eq!(
        page["after_401_session"],
        Value::Null,
        "a refused token is not kept"
    );
    let unknown = text("unknown");
    assert!(
        unknown.starts_with("refused (400)") && unknown.contains("\"no-such-node\" is no node"),
        "{page}"
    );
    let bad_enode = text("bad_enode");
    assert!(
        bad_enode.starts_with("refused (400)") && bad_enode.contains("enode://"),
        "{page}"
    );
    let quorum = text("quorum");
    assert!(
        quorum.starts_with("refused (422)") && quorum.contains("quorum: removing"),
        "{page}"
    );
    // Nothing started: the panel, polling with the kept token, shows no change.
    assert!(text("change").starts_with("No signer change"), "{page}");
    assert_eq!(page["admitted_shown"], true, "{page}");
    assert_eq!(page["session_token"], TOKEN, "{page}");
    assert_eq!(page["local_storage"], 0, "{page}");
    assert_eq!(page["token_field"], "", "{page}");
    assert!(!text("url").contains(TOKEN), "{page}");

    // The real change, followed live by the panel.
    let retired = format!("{:#x}", net.nodes[2].info.signer.context("signer key")?);
    assert!(
        text("removal").starts_with("started signer change") && text("removal").contains(&retired),
        "{page}"
    );
    assert!(
        text("removal_title").contains(&format!("remove {retired} (signer-3), done")),
        "{page}"
    );
    let block: u64 = text("removal_detail")
        .split("changed at block ")
        .nth(1)
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no final block shown: {page}"))?;
    let after: Vec<String> = serde_json::from_value(page["signers_after"].clone())?;
    assert_eq!(after.len(), 2, "{page}");
    assert!(!after.contains(&retired), "{page}");
    let mut shown_after = after.clone();
    shown_after.sort();
    assert_eq!(
        geth_signers(&net, 0).await?,
        shown_after,
        "the panel's set is geth's"
    );
    assert!(
        net.head(0).await? >= block,
        "block {block} shown before geth had it"
    );
    Ok(())
}

/// Node `i`'s signer set from geth, lower-case and sorted.
async fn geth_signers(net: &TestNetwork, i: usize) -> Result<Vec<String>> {
    let rpc = geth_agent::rpc::GethRpc::connect(&net.nodes[i].ipc()).await?;
    let mut set: Vec<String> = rpc.call("clique_getSigners", ()).await?;
    set.iter_mut().for_each(|a| *a = a.to_lowercase());
    set.sort();
    Ok(set)
}

/// What a stalled change looks like from the aggregator and from each live geth.
async fn diagnosis(net: &TestNetwork, addr: SocketAddr) -> String {
    let mut text = String::from("diagnosis:\n");
    let plan = reqwest::Client::new()
        .get(format!("http://{addr}/api/signers/latest"))
        .bearer_auth(TOKEN)
        .send()
        .await;
    match plan {
        Ok(r) => text += &format!("  plan: {}\n", r.text().await.unwrap_or_default()),
        Err(e) => text += &format!("  plan: {e}\n"),
    }
    match state(addr).await {
        Ok(s) => text += &format!("  aggregator set: {}\n", s["signers"]),
        Err(e) => text += &format!("  state: {e:#}\n"),
    }
    for i in 0..2 {
        let head = net.head(i).await.map_err(|e| format!("{e:#}"));
        let set = geth_signers(net, i).await.map_err(|e| format!("{e:#}"));
        text += &format!("  {}: head {head:?}, set {set:?}\n", net.nodes[i].info.name);
    }
    text
}
