//! Benchmark: what the agent costs geth. Identical 1-signer clique networks
//! (period 1) run side by side: geth alone (HTTP on), a second geth alone (how
//! much two identical geths differ), and geth under the agent reporting to an
//! aggregator. Over the same window the geths' CPU (utime + stime from /proc)
//! and the agent's CPU and RSS are sampled; what geth under the agent uses
//! over the mean of the two alone is what the agent adds. Targets: at most
//! 0.05 s CPU per minute added to geth, agent RSS <= 9 MiB; the bench exits
//! non-zero when either is missed.
//!
//! `cargo bench -p geth-agent --bench ipc_cost` (BENCH_SECS sets the window,
//! default 120; PER_CALL sets how many calls of each kind are timed against
//! geth afterwards, default 2000, 0 skips; SUB_SECS how long geth's cost of
//! the `newHeads` subscription alone is measured, default 60, 0 skips).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use geth_agent::rpc::GethRpc;
use serde_json::Value;
use testnet::{free_ports, geth_bin, http_get, Launcher, NetworkOptions, TestNetwork};

const AGENT: &str = env!("CARGO_BIN_EXE_geth-agent");
const TARGET_ADDED_S_PER_MIN: f64 = 0.05;
const TARGET_RSS_MIB: f64 = 9.0;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// A `/proc/PID/status` field in kiB (or a count).
fn status_field(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn rss_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmRSS")
}

/// utime + stime in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The release aggregator binary beside this bench (built if missing or stale).
fn aggregator_bin() -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args([
            "build",
            "--release",
            "-p",
            "geth-aggregator",
            "--bin",
            "geth-aggregator",
        ])
        .status()
        .context("building geth-aggregator")?;
    ensure!(status.success(), "building geth-aggregator failed");
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .context("target/release/deps")?;
    Ok(dir.join("geth-aggregator"))
}

/// geth alone, as an operator would run it without the agent (HTTP on; a
/// signer with HTTP needs --allow-insecure-unlock, loopback only here).
fn geth_alone() -> Result<TestNetwork> {
    let http = free_ports(1)?[0];
    TestNetwork::generate(&NetworkOptions {
        signers: 1,
        period: 1,
        launcher: Launcher::Geth,
        geth_args: vec![(
            0,
            [
                "--http",
                "--http.addr",
                "127.0.0.1",
                "--http.port",
                &http.to_string(),
                "--allow-insecure-unlock",
            ]
            .map(String::from)
            .to_vec(),
        )],
        ..Default::default()
    })
}

/// `clique_agent_ipc_calls_total` by method, and the connections counter.
async fn ipc_counts(agent: SocketAddr) -> Result<(BTreeMap<String, f64>, f64)> {
    let (code, text) = http_get(agent, "/metrics").await?;
    ensure!(code == 200, "/metrics {code}");
    let mut calls = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("clique_agent_ipc_calls_total{method=\"") else {
            continue;
        };
        let Some((method, value)) = rest.split_once("\"} ") else {
            continue;
        };
        calls.insert(method.to_owned(), value.trim().parse()?);
    }
    let connections = testnet::metric_value(&text, "clique_agent_ipc_connections_total")
        .context("no clique_agent_ipc_connections_total")?;
    Ok((calls, connections))
}

struct Cpu {
    ticks_per_s: f64,
}

impl Cpu {
    fn seconds(&self, pid: u32) -> Result<f64> {
        Ok(
            cpu_ticks(pid).with_context(|| format!("process {pid} is gone"))? as f64
                / self.ticks_per_s,
        )
    }
}

#[tokio::main]
async fn main() -> Result<ExitCode> {
    let secs = env_u64("BENCH_SECS", 120);
    let per_call = env_u64("PER_CALL", 2000);
    let aggregator = aggregator_bin()?;
    let cpu = Cpu {
        ticks_per_s: nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100) as f64,
    };

    let mut alone = geth_alone()?;
    // A second geth alone: how much two identical geths differ in one window.
    let mut control = geth_alone()?;

    // The same network under the agent, reporting to an aggregator.
    let aggregator_addr: SocketAddr = ([127, 0, 0, 1], free_ports(1)?[0]).into();
    let mut watched = TestNetwork::generate(&NetworkOptions {
        signers: 1,
        period: 1,
        launcher: Launcher::Agent(AGENT.into()),
        agent_args: vec![
            "--aggregator".into(),
            format!("http://{aggregator_addr}"),
            // A lone signer has no peers; readiness must still hold.
            "--min-peers".into(),
            "0".into(),
        ],
        ..Default::default()
    })?;
    let db = watched.path().join("aggregator.db");
    let command = watched.aggregator_command(&aggregator, aggregator_addr, &db);
    watched.spawn_other(0, command)?;
    watched.spawn(0)?;
    alone.spawn(0)?;
    control.spawn(0)?;
    alone.apply_startup_policy().await?;
    control.apply_startup_policy().await?;

    let startup = Duration::from_secs(180);
    alone.wait_for_block(0, 5, startup).await?;
    control.wait_for_block(0, 5, startup).await?;
    watched.wait_for_block(0, 5, startup).await?;
    let agent_addr: SocketAddr = ([127, 0, 0, 1], watched.nodes[0].info.ports.agent).into();
    testnet::eventually("the agent ready", startup, || async move {
        Ok((http_get(agent_addr, "/readyz").await?.0 == 200).then_some(()))
    })
    .await?;
    let geth_alone = alone.nodes[0].pid().context("geth alone running")?;
    let geth_control = control.nodes[0]
        .pid()
        .context("second geth alone running")?;
    let agent = watched.nodes[0].pid().context("agent running")?;
    let geth_watched = geth_agent::process::find_geth(&geth_agent::process::AttachTarget {
        datadir: watched.nodes[0].datadir.clone(),
        log_file: PathBuf::new(),
        pid_file: None,
        binary: Some(geth_bin()),
    })
    .context("the agent's geth")?;
    // Past the start (backfill, first reads) into the steady state.
    tokio::time::sleep(Duration::from_secs(env_u64("BENCH_WARMUP_SECS", 10))).await;

    println!(
        "two 1-signer networks, period 1: geth alone (pid {geth_alone}, HTTP on) and geth \
         (pid {geth_watched}) under the agent (pid {agent}) reporting to an aggregator; \
         measuring {secs} s"
    );
    let heads = (alone.head(0).await?, watched.head(0).await?);
    let (calls0, conns0) = ipc_counts(agent_addr).await?;
    let started = Instant::now();
    let start = (
        cpu.seconds(geth_alone)?,
        cpu.seconds(geth_watched)?,
        cpu.seconds(agent)?,
        cpu.seconds(geth_control)?,
    );
    let (mut rss_max, mut rss_sum, mut samples) = (0, 0, 0);
    let mut not_ready = 0;
    while started.elapsed() < Duration::from_secs(secs) {
        let rss = rss_kib(agent).context("agent gone")?;
        rss_max = rss_max.max(rss);
        rss_sum += rss;
        samples += 1;
        // A kubelet-like probe once a second.
        if http_get(agent_addr, "/readyz").await?.0 != 200 {
            not_ready += 1;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let end = (
        cpu.seconds(geth_alone)?,
        cpu.seconds(geth_watched)?,
        cpu.seconds(agent)?,
        cpu.seconds(geth_control)?,
    );
    let wall = started.elapsed().as_secs_f64();
    let (calls1, conns1) = ipc_counts(agent_addr).await?;
    let blocks = (
        alone.head(0).await? - heads.0,
        watched.head(0).await? - heads.1,
    );

    let per_min = |s: f64| s / wall * 60.0;
    let alone_cpu = per_min(end.0 - start.0);
    let watched_cpu = per_min(end.1 - start.1);
    let control_cpu = per_min(end.3 - start.3);
    // Against both geths alone: half the noise of either one.
    let added = watched_cpu - (alone_cpu + control_cpu) / 2.0;
    let agent_cpu = per_min(end.2 - start.2);
    let rss_avg = rss_sum as f64 / samples as f64 / 1024.0;
    let rss_peak = rss_max as f64 / 1024.0;
    println!(
        "window {wall:.0} s: geth alone sealed {} blocks, geth under the agent {} blocks; \
         /readyz not 200 on {not_ready} of {samples} probes",
        blocks.0, blocks.1
    );
    println!("geth alone:            {alone_cpu:.3} s CPU per minute");
    println!(
        "second geth alone:     {control_cpu:.3} s CPU per minute \
         (two identical geths differ by {:.3})",
        (alone_cpu - control_cpu).abs()
    );
    println!("geth under the agent:  {watched_cpu:.3} s CPU per minute");
    let cpu_ok = added <= TARGET_ADDED_S_PER_MIN;
    println!(
        "added by the agent:    {added:.3} s CPU per minute over the mean of the two alone, \
         {:.3} over the first (target <= {TARGET_ADDED_S_PER_MIN}) {}",
        watched_cpu - alone_cpu,
        verdict(cpu_ok)
    );
    let rss_ok = rss_peak <= TARGET_RSS_MIB;
    println!(
        "agent itself:          {agent_cpu:.3} s CPU per minute, RSS avg {rss_avg:.1} MiB, \
         max {rss_peak:.1} MiB (target <= {TARGET_RSS_MIB} MiB) {}",
        verdict(rss_ok)
    );
    let field = |f: &str| status_field(agent, f).unwrap_or(0);
    println!(
        "agent memory at the end: RssAnon {} kiB, RssFile {} kiB, {} threads",
        field("RssAnon"),
        field("RssFile"),
        field("Threads")
    );
    let mut total = 0.0;
    let mut rows = Vec::new();
    for (method, n) in &calls1 {
        let d = n - calls0.get(method).copied().unwrap_or(0.0);
        if d > 0.0 {
            total += d;
            rows.push((method.clone(), d));
        }
    }
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!(
        "agent IPC calls per minute: {:.1} in all, {:.1} new connections",
        per_min(total),
        per_min(conns1 - conns0)
    );
    for (method, n) in rows {
        println!("  {method:<28} {:>7.1}", per_min(n));
    }

    if per_call > 0 {
        per_call_cost(&alone, geth_alone, &cpu, alone_cpu / 60.0, per_call).await?;
    }
    let sub_secs = env_u64("SUB_SECS", 60);
    if sub_secs > 0 {
        subscription_cost(&control, geth_control, geth_alone, &cpu, sub_secs).await?;
    }
    Ok(if cpu_ok && rss_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// geth's CPU per call kind: `n` sequential calls of each on one connection,
/// less geth's idle rate over the same time.
async fn per_call_cost(
    net: &TestNetwork,
    pid: u32,
    cpu: &Cpu,
    idle_per_s: f64,
    n: u64,
) -> Result<()> {
    let rpc = GethRpc::connect(&net.nodes[0].ipc()).await?;
    let head = rpc.block_number().await?;
    let hash = format!("{:#x}", net.block_hash(0, head).await?);
    let kinds: Vec<(&'static str, Value)> = vec![
        ("web3_clientVersion", Value::Array(vec![])),
        ("eth_blockNumber", Value::Array(vec![])),
        ("net_peerCount", Value::Array(vec![])),
        ("eth_syncing", Value::Array(vec![])),
        ("admin_peers", Value::Array(vec![])),
        ("admin_nodeInfo", Value::Array(vec![])),
        ("eth_mining", Value::Array(vec![])),
        ("txpool_status", Value::Array(vec![])),
        ("eth_gasPrice", Value::Array(vec![])),
        ("clique_getSigners", Value::Array(vec![])),
        ("clique_proposals", Value::Array(vec![])),
        ("clique_status", Value::Array(vec![])),
        ("clique_getSigner", serde_json::json!([hash])),
        (
            "eth_getBlockByNumber",
            serde_json::json!([format!("{head:#x}"), false]),
        ),
    ];
    println!(
        "geth CPU per call ({n} sequential calls of each kind over IPC, idle rate taken off):"
    );
    for (method, params) in kinds {
        let t = Instant::now();
        let before = cpu.seconds(pid)?;
        for _ in 0..n {
            let _: Value = rpc.call(method, params.clone()).await?;
        }
        let spent = cpu.seconds(pid)? - before - idle_per_s * t.elapsed().as_secs_f64();
        println!(
            "  {method:<28} {:>7.1} us",
            (spent / n as f64 * 1e6).max(0.0)
        );
    }
    // The same kinds of call, four to a JSON-RPC batch (one message each way).
    let mut batch = geth_agent::rpc::BatchConn::connect(&net.nodes[0].ipc()).await?;
    let calls: Vec<geth_agent::rpc::BatchCall> = [
        "eth_syncing",
        "txpool_status",
        "eth_mining",
        "clique_proposals",
    ]
    .into_iter()
    .map(|m| (m, Value::Array(vec![])))
    .collect();
    let t = Instant::now();
    let before = cpu.seconds(pid)?;
    for _ in 0..n {
        for answer in batch.call(&calls).await? {
            answer?;
        }
    }
    let spent = cpu.seconds(pid)? - before - idle_per_s * t.elapsed().as_secs_f64();
    println!(
        "  {:<28} {:>7.1} us",
        "batch: syncing+pool+mining+votes",
        (spent / n as f64 * 1e6).max(0.0)
    );
    Ok(())
}

/// geth's CPU for the `newHeads` subscription alone: the second geth alone
/// with only that subscription against the first with no client at all.
async fn subscription_cost(
    net: &TestNetwork,
    pid: u32,
    reference: u32,
    cpu: &Cpu,
    secs: u64,
) -> Result<()> {
    use tokio_stream::StreamExt;
    let rpc = GethRpc::connect(&net.nodes[0].ipc()).await?;
    let mut heads = rpc.subscribe_heads().await?.into_stream();
    let started = Instant::now();
    let before = (cpu.seconds(pid)?, cpu.seconds(reference)?);
    let mut seen = 0u64;
    while started.elapsed() < Duration::from_secs(secs) {
        if tokio::time::timeout(Duration::from_secs(5), heads.next())
            .await
            .ok()
            .flatten()
            .is_some()
        {
            seen += 1;
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let with = (cpu.seconds(pid)? - before.0) / wall * 60.0;
    let without = (cpu.seconds(reference)? - before.1) / wall * 60.0;
    println!(
        "newHeads subscription alone ({secs} s, {seen} heads): geth {with:.3} s CPU per minute \
         with it, {without:.3} without, {:.3} added",
        with - without
    );
    Ok(())
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "OK"
    } else {
        "OVER TARGET"
    }
}
