//! geth-aggregator with real geth 1.13.15 networks: agents reporting, the
//! dashboard in headless Chromium, geth's own ethstats reporter, a restart with
//! history and exactly-once events, and the fork alarm.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use testnet::{
    eventually, free_ports, http_get, metric_value, sibling_binary, workspace_root, Launcher,
    NetworkOptions, TestNetwork,
};

const AGGREGATOR: &str = env!("CARGO_BIN_EXE_geth-aggregator");
const MINUTE: Duration = Duration::from_secs(60);

struct Aggregator {
    addr: SocketAddr,
    db: PathBuf,
    pid: u32,
}

fn start_aggregator(
    net: &mut TestNetwork,
    addr: SocketAddr,
    db: &Path,
    extra: &[&str],
) -> Result<Aggregator> {
    let mut cmd = net.aggregator_command(Path::new(AGGREGATOR), addr, db);
    cmd.args(extra);
    let pid = net.spawn_other(0, cmd)?;
    Ok(Aggregator {
        addr,
        db: db.to_owned(),
        pid,
    })
}

async fn state(addr: SocketAddr) -> Result<Value> {
    let (code, body) = http_get(addr, "/api/state").await?;
    ensure!(code == 200, "/api/state {code}: {body}");
    Ok(serde_json::from_str(&body)?)
}

/// Agents for every node, reporting to the aggregator at `addr`.
async fn network_with_aggregator(signers: usize, period: u64) -> Result<(TestNetwork, Aggregator)> {
    let port = free_ports(1)?[0];
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let options = NetworkOptions {
        signers,
        period,
        launcher: Launcher::Agent(sibling_binary("geth-agent")),
        agent_args: vec!["--aggregator".into(), format!("http://{addr}")],
        ..Default::default()
    };
    let mut net = TestNetwork::generate(&options)?;
    let db = net.path().join("aggregator.db");
    let aggregator = start_aggregator(&mut net, addr, &db, &[])?;
    for i in 0..net.nodes.len() {
        net.spawn(i)?;
    }
    Ok((net, aggregator))
}

async fn nodes_with_heads(addr: SocketAddr, count: usize) -> Result<Option<Value>> {
    let s = state(addr).await?;
    let nodes = s["nodes"].as_array().context("nodes")?;
    let ok = nodes
        .iter()
        .filter(|n| n["head"]["number"].as_u64().is_some_and(|h| h > 0) && n["online"] == true)
        .count()
        == count;
    Ok(ok.then_some(s))
}

#[tokio::test]
async fn the_dashboard_shows_the_live_network_in_chromium() -> Result<()> {
    let (net, aggregator) = network_with_aggregator(3, 2).await?;
    let addr = aggregator.addr;
    eventually("3 reporting nodes", 2 * MINUTE, || {
        nodes_with_heads(addr, 3)
    })
    .await?;

    let artifacts = workspace_root().join("tests/artifacts");
    std::fs::create_dir_all(&artifacts)?;
    let screenshot = artifacts.join("dashboard.png");
    let script = workspace_root().join("tests/browser/dashboard.mjs");
    // The page is read while the browser runs (it then waits for the next
    // block and a screenshot, seconds on a loaded machine): each node's head
    // shown must lie between geth's heads before and after.
    let mut heads_before = Vec::new();
    for i in 0..net.nodes.len() {
        heads_before.push(net.head(i).await?);
    }
    let out = tokio::process::Command::new("node")
        .arg(&script)
        .arg(format!("http://{addr}/"))
        .arg("3")
        .arg(&screenshot)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "browser test failed ({}): {stdout} {stderr}",
        out.status
    );
    let mut lines = stdout.lines();
    let first: Value = serde_json::from_str(lines.next().context("first line")?)?;
    let later: Value = serde_json::from_str(lines.next().context("second line")?)?;

    // The heads the page showed match what each geth says over RPC.
    let shown = first["nodes"].as_array().context("nodes")?;
    assert_eq!(shown.len(), 3, "{first}");
    for row in shown {
        let name = row["name"].as_str().context("name")?;
        let i = net
            .nodes
            .iter()
            .position(|n| n.info.name == name)
            .context("known node")?;
        let page_head = row["head"].as_u64().context("head")?;
        let rpc_head = net.head(i).await?;
        assert!(
            (heads_before[i].saturating_sub(1)..=rpc_head).contains(&page_head),
            "{name}: page {page_head}, geth {} before the page was read, {rpc_head} after",
            heads_before[i]
        );
    }
    assert_eq!(
        later["advanced"], true,
        "the head advanced without a reload: {later}"
    );
    assert!(later["best_later"].as_u64() > first["best_first"].as_u64());
    assert!(
        std::fs::metadata(&screenshot)?.len() > 10_000,
        "screenshot saved"
    );
    Ok(())
}

#[tokio::test]
async fn a_plain_geth_with_ethstats_appears_with_its_real_signer() -> Result<()> {
    let port = free_ports(1)?[0];
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let options = NetworkOptions {
        signers: 1,
        geth_args: vec![(
            0,
            vec!["--ethstats".into(), format!("signer-1:s3cret@{addr}")],
        )],
        ..Default::default()
    };
    let mut net = TestNetwork::generate(&options)?;
    let db = net.path().join("aggregator.db");
    start_aggregator(
        &mut net,
        addr,
        &db,
        &["--ethstats-secret", "signer-1=s3cret"],
    )?;
    net.spawn(0)?;
    net.apply_startup_policy().await?;
    let signer = format!("{:#x}", net.nodes[0].info.signer.context("signer")?);

    let s = eventually("the ethstats node with blocks", 2 * MINUTE, || async move {
        let s = state(addr).await?;
        let node = s["nodes"]
            .as_array()
            .and_then(|n| n.iter().find(|n| n["source"] == "ethstats").cloned());
        Ok(node
            .filter(|n| n["head"]["number"].as_u64() > Some(2))
            .map(|_| s))
    })
    .await?;
    let blocks = s["blocks"].as_array().context("blocks")?;
    assert!(!blocks.is_empty());
    let sealed: Vec<&Value> = blocks
        .iter()
        .filter(|b| b["number"].as_u64() > Some(0))
        .collect();
    assert!(!sealed.is_empty());
    assert!(
        sealed.iter().all(|b| b["signer"] == signer.as_str()),
        "real clique signer per block: {sealed:?}"
    );

    // A client speaking garbage on the ethstats socket is dropped; the node keeps updating.
    use futures_util::{SinkExt, StreamExt};
    let (mut garbage, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/api")).await?;
    garbage
        .send(tokio_tungstenite::tungstenite::Message::Text(
            "this is not ethstats".into(),
        ))
        .await?;
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match garbage.next().await {
                None
                | Some(Err(_))
                | Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) => return true,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert_eq!(closed.ok(), Some(true), "the garbage client was dropped");
    let before = s["best"]["number"].as_u64().context("best")?;
    eventually(
        "the ethstats node to keep updating",
        MINUTE,
        || async move {
            Ok((state(addr).await?["best"]["number"].as_u64() > Some(before + 2)).then_some(()))
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn history_survives_a_killed_aggregator_and_outage_events_arrive_once() -> Result<()> {
    let (mut net, aggregator) = network_with_aggregator(1, 1).await?;
    let addr = aggregator.addr;
    eventually("the node reporting", 2 * MINUTE, || {
        nodes_with_heads(addr, 1)
    })
    .await?;
    net.wait_for_block(0, 5, MINUTE).await?;
    let before = state(addr).await?;
    let blocks_before = before["blocks"].as_array().context("blocks")?.len();
    ensure!(
        blocks_before >= 3,
        "history before the kill: {blocks_before}"
    );
    // Block sightings are written behind the reply (batched); what a SIGKILL
    // must not lose is what was committed. Kill only once the shown blocks are.
    let hashes: Vec<String> = before["blocks"]
        .as_array()
        .context("blocks")?
        .iter()
        .filter_map(|b| b["hash"].as_str().map(str::to_owned))
        .collect();
    ensure!(hashes.len() == blocks_before, "every block has a hash");
    let db = aggregator.db.clone();
    let hashes = &hashes;
    eventually("the shown blocks committed", MINUTE, || {
        let db = db.clone();
        async move {
            let conn = rusqlite::Connection::open_with_flags(
                &db,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )?;
            let mut stored = 0;
            for hash in hashes {
                let n: i64 =
                    conn.query_row("SELECT COUNT(*) FROM blocks WHERE hash = ?1", [hash], |r| {
                        r.get(0)
                    })?;
                stored += n;
            }
            Ok((stored == hashes.len() as i64).then_some(()))
        }
    })
    .await?;

    // Kill the aggregator; the node restarts twice during the outage.
    kill(Pid::from_raw(aggregator.pid as i32), Signal::SIGKILL)?;
    let socket = net.nodes[0].datadir.join("geth-agent/admin.sock");
    for _ in 0..2 {
        let (code, body) =
            geth_agent::ctl::request(&socket, hyper::Method::POST, "/restart", None).await?;
        ensure!(code.is_success(), "restart: {body}");
        let socket = &socket;
        eventually("geth running again", MINUTE, || async move {
            let s = testnet::agent_status(socket).await?;
            Ok((s["status"]["phase"] == "running").then_some(()))
        })
        .await?;
    }
    let spool = net.nodes[0].datadir.join("geth-agent/spool");
    let spooled = std::fs::read_dir(&spool)?
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".json"))
        })
        .count();
    assert!(
        spooled >= 2,
        "events wait in the spool during the outage ({spooled})"
    );

    // Same database, new process.
    let _restarted = start_aggregator(&mut net, addr, &aggregator.db, &[])?;
    let after = eventually("the aggregator back", MINUTE, || async move {
        Ok(state(addr).await.ok())
    })
    .await?;
    let blocks_after = after["blocks"].as_array().context("blocks")?.len();
    assert!(
        blocks_after >= blocks_before,
        "history kept: {blocks_after} < {blocks_before}"
    );

    let events = eventually("the outage's events", MINUTE, || async move {
        let (code, body) = http_get(addr, "/api/events").await?;
        ensure!(code == 200, "{body}");
        let events: Vec<Value> = serde_json::from_str(&body)?;
        let shutdowns = events
            .iter()
            .filter(|e| e["event"]["kind"]["kind"] == "shutdown")
            .count();
        Ok((shutdowns >= 2).then_some(events))
    })
    .await?;
    let mut seqs: Vec<u64> = events
        .iter()
        .filter_map(|e| e["event"]["seq"].as_u64())
        .collect();
    let total = seqs.len();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), total, "every event exactly once: {events:?}");
    eventually("the spool drained", MINUTE, || async {
        let left = std::fs::read_dir(&spool)?
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".json"))
            })
            .count();
        Ok((left == 0).then_some(()))
    })
    .await?;
    Ok(())
}

/// Unpeers node `a` and node `b` on both sides.
async fn unpeer(net: &TestNetwork, a: usize, b: usize) -> Result<()> {
    for (from, to) in [(a, b), (b, a)] {
        let rpc = net.nodes[from].rpc().await?;
        let _: bool = rpc
            .call("admin_removePeer", (net.nodes[to].info.enode.as_str(),))
            .await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_partitioned_signer_raises_the_fork_alarm() -> Result<()> {
    let (net, aggregator) = network_with_aggregator(3, 1).await?;
    let addr = aggregator.addr;
    eventually("3 reporting nodes", 2 * MINUTE, || {
        nodes_with_heads(addr, 3)
    })
    .await?;
    net.wait_for_block(0, 6, MINUTE).await?;
    let node2_signer = net.nodes[2].info.signer.context("signer")?;
    let net = &net;
    // Cut signer-3 off when it did not seal the head, so it can seal a block of its own.
    eventually("signer-3 on a fork of its own", 2 * MINUTE, || async move {
        let head = net.head(2).await?;
        if net.signer_of(2, head).await? == node2_signer {
            return Ok(None);
        }
        unpeer(net, 2, 0).await?;
        unpeer(net, 2, 1).await?;
        tokio::time::sleep(Duration::from_secs(4)).await;
        let h2 = net.head(2).await?;
        let forked = h2 > head
            && net.block_hash(2, h2).await? != net.block_hash(0, h2).await.unwrap_or_default();
        if !forked {
            for peer in [0, 1] {
                let rpc = net.nodes[2].rpc().await?;
                let _: bool = rpc
                    .call("admin_addPeer", (net.nodes[peer].info.enode.as_str(),))
                    .await?;
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        Ok(forked.then_some(()))
    })
    .await?;

    let fork = eventually("the fork alarm", MINUTE, || async move {
        let s = state(addr).await?;
        Ok((!s["alarms"]["fork"].is_null()).then(|| s["alarms"]["fork"].clone()))
    })
    .await?;
    assert!(
        fork["hashes"].as_object().is_some_and(|h| h.len() >= 2),
        "{fork}"
    );
    let (_, metrics) = http_get(addr, "/metrics").await?;
    assert_eq!(
        metric_value(&metrics, "clique_fleet_fork"),
        Some(1.0),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn agents_find_lost_peers_through_the_aggregator() -> Result<()> {
    let (net, aggregator) = network_with_aggregator(3, 1).await?;
    let addr = aggregator.addr;
    eventually("3 reporting nodes", 2 * MINUTE, || {
        nodes_with_heads(addr, 3)
    })
    .await?;
    let net = &net;
    // Drop node 3's peerings on both sides (this also forgets them as static peers).
    unpeer(net, 2, 0).await?;
    unpeer(net, 2, 1).await?;
    eventually("node 3 alone", Duration::from_secs(10), || async move {
        Ok((net.nodes[2].rpc().await?.peer_count().await? == 0).then_some(()))
    })
    .await?;
    // The agents re-add the live enodes the aggregator lists.
    eventually("node 3 peered again by discovery", MINUTE, || async move {
        Ok((net.nodes[2].rpc().await?.peer_count().await? == 2).then_some(()))
    })
    .await?;
    let log = net.nodes[2].log_text();
    assert!(
        log.contains("peer added from the aggregator"),
        "re-peered by the agent"
    );
    Ok(())
}
