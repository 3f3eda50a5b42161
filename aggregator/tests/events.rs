//! Lifecycle events from a real agent to a real aggregator: an event the
//! aggregator refuses does not block the ones behind it, and a recreated spool
//! (folder deleted) sends new events, not duplicates.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Result};
use serde_json::{json, Value};
use testnet::{
    agent_status, eventually, free_ports, http_get, metric_value, sibling_binary, Launcher,
    NetworkOptions, TestNetwork,
};

const AGGREGATOR: &str = env!("CARGO_BIN_EXE_geth-aggregator");
const MINUTE: Duration = Duration::from_secs(60);

async fn events(addr: SocketAddr) -> Result<Vec<Value>> {
    let (code, body) = http_get(addr, "/api/events").await?;
    ensure!(code == 200, "/api/events {code}: {body}");
    Ok(serde_json::from_str(&body)?)
}

fn shutdowns(events: &[Value]) -> Vec<(String, u64)> {
    events
        .iter()
        .filter(|e| e["event"]["kind"]["kind"] == "shutdown")
        .map(|e| {
            (
                e["event"]["spool"].as_str().unwrap_or_default().to_owned(),
                e["event"]["seq"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

async fn restart_geth(socket: &Path) -> Result<()> {
    let (code, body) =
        geth_agent::ctl::request(socket, hyper::Method::POST, "/restart", None).await?;
    ensure!(code.is_success(), "restart: {body}");
    wait_running(socket).await
}

async fn wait_running(socket: &Path) -> Result<()> {
    eventually("geth running", 2 * MINUTE, || async move {
        let s = agent_status(socket).await.ok();
        Ok(s.filter(|s| s["status"]["phase"] == "running").map(|_| ()))
    })
    .await
}

fn spooled(spool: &Path) -> usize {
    std::fs::read_dir(spool).map_or(0, |d| {
        d.flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .count()
    })
}

#[tokio::test]
async fn refused_events_are_set_aside_and_a_recreated_spool_is_not_a_duplicate() -> Result<()> {
    let addr: SocketAddr = ([127, 0, 0, 1], free_ports(1)?[0]).into();
    let mut net = TestNetwork::generate(&NetworkOptions {
        signers: 1,
        launcher: Launcher::Agent(sibling_binary("geth-agent")),
        agent_args: vec!["--aggregator".into(), format!("http://{addr}")],
        ..Default::default()
    })?;
    let aggregator = net.aggregator_command(
        Path::new(AGGREGATOR),
        addr,
        &net.path().join("aggregator.db"),
    );
    net.spawn_other(0, aggregator)?;

    // A spool as an older agent left it: a shutdown verdict with thousands of
    // error lines (beyond the aggregator's 256 KiB), then a small event.
    let spool = net.nodes[0].datadir.join("geth-agent/spool");
    std::fs::create_dir_all(&spool)?;
    let errors: Vec<String> = (0..20_000)
        .map(|i| format!("ERROR[12-01|10:00:00] Failed to write state {i}"))
        .collect();
    let giant = json!({"spool": "", "seq": 1, "at_ms": 1, "kind": {"kind": "shutdown", "verdict": {
        "clean": false, "reason": errors.join("; "), "exit_code": 1, "killed": false,
        "duration_ms": 1, "at": 1}}});
    let small = json!({"spool": "", "seq": 2, "at_ms": 2,
        "kind": {"kind": "blocked", "reason": "after the giant"}});
    std::fs::write(spool.join(format!("{:020}.json", 1)), giant.to_string())?;
    std::fs::write(spool.join(format!("{:020}.json", 2)), small.to_string())?;
    assert!(giant.to_string().len() > geth_wire::MAX_REPORT_BYTES);

    net.spawn(0)?;
    let socket = net.nodes[0].datadir.join("geth-agent/admin.sock");
    let found = eventually("the event behind the refused one", 2 * MINUTE, || async {
        let events = events(addr).await.unwrap_or_default();
        Ok(events
            .iter()
            .any(|e| e["event"]["kind"]["reason"] == "after the giant")
            .then_some(events))
    })
    .await?;
    assert!(shutdowns(&found).is_empty(), "the giant is not stored");
    assert!(spool
        .join("rejected")
        .join(format!("{:020}.json", 1))
        .exists());
    let agent: SocketAddr = ([127, 0, 0, 1], net.nodes[0].info.ports.agent).into();
    let (_, metrics) = http_get(agent, "/metrics").await?;
    assert_eq!(
        metric_value(&metrics, "clique_agent_events_rejected_total"),
        Some(1.0)
    );

    // A shutdown of the first spool.
    wait_running(&socket).await?;
    restart_geth(&socket).await?;
    let first = eventually("the first shutdown event", MINUTE, || async {
        let s = shutdowns(&events(addr).await?);
        Ok((s.len() == 1).then_some(s))
    })
    .await?;
    let (first_spool, _) = first[0].clone();
    assert_eq!(first_spool.len(), 16, "{first:?}");
    eventually("the spool drained", MINUTE, || async {
        Ok((spooled(&spool) == 0).then_some(()))
    })
    .await?;

    // The agent stops, its spool folder is deleted, it starts again: a new
    // spool whose sequence numbers start at 1 again.
    net.nodes[0].signal(nix::sys::signal::Signal::SIGTERM)?;
    net.nodes[0].wait_exit(2 * MINUTE).await?;
    std::fs::remove_dir_all(&spool)?;
    let before = events(addr).await?;
    let old_seqs: Vec<u64> = before
        .iter()
        .filter_map(|e| e["event"]["seq"].as_u64())
        .collect();
    net.spawn(0)?;
    wait_running(&socket).await?;
    restart_geth(&socket).await?;
    restart_geth(&socket).await?;
    let new_spool = std::fs::read_to_string(spool.join("spool-id"))?
        .trim()
        .to_owned();
    assert_ne!(new_spool, first_spool);
    let all = eventually("the new spool's two shutdown events", MINUTE, || async {
        let s = shutdowns(&events(addr).await?);
        let new = s.iter().filter(|(spool, _)| *spool == new_spool).count();
        Ok((new == 2).then_some(s))
    })
    .await?;
    let new_seqs: Vec<u64> = all
        .iter()
        .filter(|(spool, _)| *spool == new_spool)
        .map(|(_, seq)| *seq)
        .collect();
    assert!(
        new_seqs.iter().any(|seq| old_seqs.contains(seq)),
        "a sequence number the old spool used is stored again: old {old_seqs:?}, new {new_seqs:?}"
    );
    // Every stored shutdown is there once.
    let mut unique = all.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), all.len(), "{all:?}");
    Ok(())
}
