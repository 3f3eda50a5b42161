//! The dashboard at fleet scale, in headless Chromium: 250 reporters speaking
//! geth's `--ethstats` protocol log in to a real geth-aggregator and send a
//! block every second; the page's node table shows one page of 100 rows with
//! a pager and a filter, stays live, and takes hostile filter text as text
//! (`tests/browser/dashboard-fleet.mjs`).

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use testnet::{eventually, free_ports, http_get, workspace_root};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const AGGREGATOR: &str = env!("CARGO_BIN_EXE_geth-aggregator");
const NODES: u64 = 250;

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Logs node `i` in (holding one of `logins` meanwhile: the server bounds
/// pending logins per address), then sends one block a second (all nodes on
/// one chain) until `stop`.
async fn reporter(
    addr: SocketAddr,
    i: u64,
    logins: Arc<Semaphore>,
    stop: CancellationToken,
) -> Result<()> {
    let name = format!("node-{i}");
    let permit = logins.acquire().await?;
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/api")).await?;
    let (mut tx, mut rx) = ws.split();
    let hello = json!({"emit": ["hello", {"id": name, "secret": format!("secret-{i}"),
        "info": {"name": name, "node": "Geth/v1.13.15-stable/linux-amd64/go1.21"}}]});
    tx.send(Message::text(hello.to_string())).await?;
    match tokio::time::timeout(Duration::from_secs(30), rx.next()).await {
        Ok(Some(Ok(Message::Text(t)))) if t.contains("ready") => {}
        other => anyhow::bail!("{name}: login answered {other:?}"),
    }
    drop(permit);
    tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
    let genesis = now_s() - 1;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    for number in 1u64.. {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let block = json!({"emit": ["block", {"id": name, "block": {
            "number": number, "hash": format!("0x{number:064x}"),
            "parentHash": format!("0x{:064x}", number - 1),
            "timestamp": (genesis + number).min(now_s()), "miner": format!("0x{:040x}", 1),
            "difficulty": "2", "gasUsed": 0, "gasLimit": 30_000_000, "transactions": [],
            "uncles": []}}]});
        tx.send(Message::text(block.to_string())).await?;
    }
    let _ = tx.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_table_of_a_large_fleet_pages_filters_and_stays_live() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let network = dir.path().join("network.json");
    std::fs::write(
        &network,
        json!({"name": "fleet", "chain_id": 1337, "period": 1, "nodes": [], "accounts": []})
            .to_string(),
    )?;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_ports(1)?[0]).parse()?;
    let secrets: Vec<String> = (0..NODES).map(|i| format!("node-{i}=secret-{i}")).collect();
    let mut aggregator = Command::new(AGGREGATOR)
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--network")
        .arg(&network)
        .arg("--db")
        .arg(dir.path().join("aggregator.db"))
        .env("GETH_AGGREGATOR_ETHSTATS_SECRETS", secrets.join(","))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    let result = async {
        eventually(
            "the aggregator to listen",
            Duration::from_secs(60),
            || async { Ok(http_get(addr, "/api/state").await.ok().map(|_| ())) },
        )
        .await?;
        let stop = CancellationToken::new();
        let _stop_on_exit = stop.clone().drop_guard();
        let logins = Arc::new(Semaphore::new(4));
        let mut reporters = tokio::task::JoinSet::new();
        for i in 0..NODES {
            reporters.spawn(reporter(addr, i, logins.clone(), stop.clone()));
        }
        let all_in = eventually("every node logged in", Duration::from_secs(120), || async {
            let (_, body) = http_get(addr, "/api/state").await?;
            let state: Value = serde_json::from_str(&body)?;
            let nodes = state["nodes"].as_array().map_or(0, Vec::len) as u64;
            Ok((nodes == NODES).then_some(()))
        })
        .await;
        if all_in.is_err() {
            // A reporter's own error says more than the count.
            stop.cancel();
            while let Some(done) = reporters.join_next().await {
                done??;
            }
        }
        all_in?;
        let script = workspace_root().join("tests/browser/dashboard-fleet.mjs");
        let out = tokio::process::Command::new("node")
            .arg(&script)
            .arg(format!("http://{addr}/"))
            .arg(NODES.to_string())
            .output()
            .await?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.success(),
            "browser check failed ({}): {stdout} {stderr}",
            out.status
        );
        let summary: Value =
            serde_json::from_str(stdout.lines().next().context("no summary line")?)?;
        assert_eq!(summary["pages"], 3, "{summary}");
        assert_eq!(summary["last_page_rows"], 50, "{summary}");
        assert_eq!(
            summary["filtered_rows"], 11,
            "node-24, node-240 … node-249: {summary}"
        );
        stop.cancel();
        while let Some(done) = reporters.join_next().await {
            done??;
        }
        Ok(())
    }
    .await;
    let _ = aggregator.kill();
    let _ = aggregator.wait();
    result
}
