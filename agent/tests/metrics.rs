//! Miner monitoring with real geth: the agents' `/metrics` checked by promtool
//! and scraped by a real Prometheus server.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use testnet::{
    eventually, free_ports, http_get, metric_value, system_tool, url_encode, workspace_root,
    Launcher, NetworkOptions, TestNetwork,
};

const AGENT: &str = env!("CARGO_BIN_EXE_geth-agent");
const MINUTE: Duration = Duration::from_secs(60);

fn agent_addr(net: &TestNetwork, i: usize) -> SocketAddr {
    ([127, 0, 0, 1], net.nodes[i].info.ports.agent).into()
}

async fn scrape(net: &TestNetwork, i: usize) -> Result<String> {
    let (code, text) = http_get(agent_addr(net, i), "/metrics").await?;
    ensure!(code == 200, "/metrics answered {code}");
    Ok(text)
}

fn agents() -> NetworkOptions {
    NetworkOptions {
        launcher: Launcher::Agent(AGENT.into()),
        ..Default::default()
    }
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let promtool = system_tool("promtool", "PROMTOOL_BIN");
    let dir = workspace_root().join("monitoring");
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "promtool {args:?}: {text}");
        assert!(text.contains("SUCCESS"), "{text}");
    }
}

/// Instant query → (instance, value) pairs.
async fn query(prometheus: SocketAddr, promql: &str) -> Result<Vec<(String, f64)>> {
    let (code, body) = http_get(
        prometheus,
        &format!("/api/v1/query?query={}", url_encode(promql)),
    )
    .await?;
    ensure!(code == 200, "query {promql}: {code} {body}");
    let json: Value = serde_json::from_str(&body)?;
    let results = json["data"]["result"].as_array().context("no result")?;
    results
        .iter()
        .map(|r| {
            let label = r["metric"]["instance"]
                .as_str()
                .or(r["metric"]["signer"].as_str())
                .unwrap_or("")
                .to_owned();
            let value = r["value"][1].as_str().context("no value")?.parse::<f64>()?;
            Ok((label, value))
        })
        .collect()
}

#[tokio::test]
async fn prometheus_sees_every_signer_seal_and_counts_add_up_to_the_head() -> Result<()> {
    let mut net = TestNetwork::start(agents()).await?;

    // promtool finds nothing wrong with a live agent's exposition.
    net.wait_for_block(0, 3, 2 * MINUTE).await?;
    let text = scrape(&net, 0).await?;
    let mut check = tokio::process::Command::new(system_tool("promtool", "PROMTOOL_BIN"))
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = check.stdin.take().context("stdin")?;
        stdin.write_all(text.as_bytes()).await?;
    }
    let out = check.wait_with_output().await?;
    let problems =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && problems.trim().is_empty(),
        "promtool check metrics: {problems}"
    );

    // A real Prometheus scraping the three agents.
    let port = free_ports(1)?[0];
    let prometheus: SocketAddr = ([127, 0, 0, 1], port).into();
    let targets: Vec<String> = (0..3)
        .map(|i| format!("\"{}\"", agent_addr(&net, i)))
        .collect();
    let config = net.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: [\"{}\"]\n\
             scrape_configs:\n  - job_name: geth-agent\n    static_configs: [{{targets: [{}]}}]\n",
            workspace_root().join("monitoring/alerts.yml").display(),
            targets.join(", ")
        ),
    )?;
    let mut cmd = Command::new(system_tool("prometheus", "PROMETHEUS_BIN"));
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            net.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={prometheus}"));
    net.spawn_other(0, cmd)?;
    eventually("Prometheus to be ready", MINUTE, || async move {
        Ok(http_get(prometheus, "/-/ready")
            .await
            .ok()
            .filter(|(c, _)| *c == 200)
            .map(|_| ()))
    })
    .await?;

    net.wait_for_block(0, 15, 2 * MINUTE).await?;
    // Stop sealing so every agent and Prometheus settle on one head.
    for node in &net.nodes {
        let _: Value = node.rpc().await?.call("miner_stop", ()).await?;
    }
    let net = &net;
    let head = eventually("the head to settle on all nodes", MINUTE, || async move {
        let heads = [net.head(0).await?, net.head(1).await?, net.head(2).await?];
        tokio::time::sleep(Duration::from_secs(2)).await;
        let again = [net.head(0).await?, net.head(1).await?, net.head(2).await?];
        Ok((heads == again && heads.iter().all(|h| *h == heads[0])).then_some(heads[0]))
    })
    .await?;

    let sealed = "sum by (instance) (clique_signer_sealed_blocks_total) - on (instance) clique_replaced_blocks_total";
    eventually(
        "Prometheus: sealed blocks per agent add up to the head",
        MINUTE,
        || async move {
            let sums = query(prometheus, sealed).await?;
            let heads = query(prometheus, "clique_head_block").await?;
            let ok = sums.len() == 3
                && heads.len() == 3
                && sums.iter().all(|(_, v)| *v == head as f64)
                && heads.iter().all(|(_, v)| *v == head as f64);
            Ok(ok.then_some(()))
        },
    )
    .await?;
    let own = query(
        prometheus,
        "sum by (instance) (clique_node_sealed_blocks_total)",
    )
    .await?;
    assert_eq!(own.len(), 3, "{own:?}");
    assert!(
        own.iter().all(|(_, v)| *v > 0.0),
        "every signer sealed: {own:?}"
    );
    let per_signer = query(
        prometheus,
        "max by (signer) (clique_signer_sealed_blocks_total)",
    )
    .await?;
    let signers: std::collections::BTreeSet<&str> = per_signer
        .iter()
        .filter(|(_, v)| *v > 0.0)
        .map(|(s, _)| s.as_str())
        .collect();
    assert_eq!(signers.len(), 3, "{per_signer:?}");
    Ok(())
}

fn missed(text: &str, signer: &str) -> f64 {
    metric_value(
        text,
        &format!("clique_signer_missed_turns_total{{signer=\"{signer}\"}}"),
    )
    .unwrap_or(0.0)
}

fn age(text: &str, signer: &str) -> f64 {
    metric_value(
        text,
        &format!("clique_signer_last_sealed_age_seconds{{signer=\"{signer}\"}}"),
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn a_stopped_signer_misses_its_turns_until_it_returns() -> Result<()> {
    let net = TestNetwork::start(agents()).await?;
    net.wait_for_block(0, 5, 2 * MINUTE).await?;
    let signer = format!("{:#x}", net.nodes[2].info.signer.context("signer")?);
    let last_sealed = format!("clique_signer_last_sealed_block{{signer=\"{signer}\"}}");
    // It must have sealed before it stops, for its last-sealed age to exist.
    let (net_ref, series) = (&net, &last_sealed);
    eventually("signer-3 to seal a block", 2 * MINUTE, || async move {
        Ok(metric_value(&scrape(net_ref, 0).await?, series).map(|_| ()))
    })
    .await?;
    let socket = net.nodes[2].datadir.join("geth-agent/admin.sock");
    let (code, body) =
        geth_agent::ctl::request(&socket, hyper::Method::POST, "/stop", None).await?;
    ensure!(code.is_success(), "stop: {body}");

    let head = net.head(0).await?;
    net.wait_for_block(0, head + 2, MINUTE).await?;
    let before = scrape(&net, 0).await?;
    net.wait_for_block(0, head + 10, MINUTE).await?;
    let during = scrape(&net, 0).await?;
    assert!(
        missed(&during, &signer) > missed(&before, &signer),
        "missed turns rise while it is down"
    );
    assert!(
        age(&during, &signer) > age(&before, &signer),
        "last-sealed age grows while it is down"
    );

    let (code, body) =
        geth_agent::ctl::request(&socket, hyper::Method::POST, "/start", None).await?;
    ensure!(code.is_success(), "start: {body}");
    let stopped_at = metric_value(&during, &last_sealed).unwrap_or(0.0);
    let net = &net;
    let last_sealed = &last_sealed;
    eventually("the signer to seal again", 2 * MINUTE, || async move {
        let text = scrape(net, 0).await?;
        Ok((metric_value(&text, last_sealed).unwrap_or(0.0) > stopped_at).then_some(()))
    })
    .await?;
    // Back in the rotation: its turns are no longer missed. Just after its
    // return a loaded machine may still cost it a turn; it settles.
    let signer_ref = &signer;
    let later = eventually(
        "missed turns to stop rising (9 blocks without a miss)",
        3 * MINUTE,
        || async move {
            let back = scrape(net, 0).await?;
            let head = net.head(0).await?;
            net.wait_for_block(0, head + 9, MINUTE).await?;
            let later = scrape(net, 0).await?;
            Ok((missed(&later, signer_ref) == missed(&back, signer_ref)).then_some(later))
        },
    )
    .await?;
    assert!(
        age(&later, &signer) < 10.0,
        "it seals again: {}",
        age(&later, &signer)
    );
    Ok(())
}
