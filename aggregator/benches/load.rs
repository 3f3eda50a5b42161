//! Load benchmark, measured the way users see it: N reporters speaking geth's
//! `--ethstats` protocol to a real geth-aggregator process (release build),
//! one block per second each, 1 in 10 of them on a competing fork block at
//! every height, stats and a ping every 15 s; beside them M agent reporters
//! sending `POST /api/report` as geth-agent does (a node key each, listed in
//! the network file; signed until the first reply, then session MACs, or
//! every report signed with BENCH_SESSIONS=0; the same blocks and forks,
//! stats every 5 s);
//! K dashboard viewers holding the live stream (`/api/stream`) open.
//!
//! Latency is from a reporter having written a block frame to a viewer
//! receiving the node update that shows that node at that block. Printed:
//! p50 / p90 / p99 / max over every (viewer, node, block), the aggregator's
//! RSS over time (first, median, last), its CPU in seconds per minute, and
//! the growth of its SQLite file. Targets: 100 reporters p99 <= 5 ms;
//! 1,000 reporters p99 <= 50 ms, RSS <= 150 MiB, CPU <= 10 s/min; at both,
//! RSS flat (within 10 %) after a warm-up of 300 s, judged on runs of at
//! least 600 s. The exit status is 1 when a target is missed.
//!
//! `cargo bench -p geth-aggregator --bench load` with BENCH_REPORTERS
//! (default 100), BENCH_AGENTS (default BENCH_REPORTERS, or 0 with
//! BENCH_GOERLI), BENCH_VIEWERS (5), BENCH_SECS (180), and BENCH_ARGS for
//! extra aggregator options (e.g. `--sighting-detail-blocks 256`);
//! BENCH_CHROMIUM=1 also opens the dashboard in headless Chromium
//! (`tests/browser/dashboard-lag.mjs`; needs `scripts/install-deps`),
//! checks that the best block it shows stays within 1 s of the load's head,
//! and prints how busy the page's main thread was.
//! The reporters and
//! viewers run in this process on the same machine as the aggregator, under
//! `SCHED_BATCH` (`chrt`, util-linux): they stand in for machines elsewhere,
//! and on loopback a viewer woken by a write would otherwise preempt the
//! server under test in the middle of its fan-out, on the server's CPU time.
//! The servers run under the normal policy.
//!
//! Latency targets are judged from block 16 on. Blocks 1-15 are the logins
//! (every reporter connects and every agent opens its session in the first
//! second); they are printed apart and must stay within 1 s at p99.
//!
//! BENCH_GOERLI=<a checkout of github.com/goerli/ethstats-server> then puts
//! goerli's ethstats-server (the server operators run today) under the same
//! load in the same run, after ours: copied into a temp folder, its npm
//! dependencies installed there, its limit of 6 new connections per 30 s
//! lifted (said in the output), `NODE_ENV=production`; its viewers on
//! `/primus`. Target: our CPU <= 1/5 of its CPU. Its server cannot take
//! agent reports, so a comparison runs both servers with ethstats reporters
//! only (BENCH_AGENTS is then 0 unless set, and must be 0).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::{keccak256, Address};
use alloy::signers::local::PrivateKeySigner;
use futures_util::{SinkExt, StreamExt};
use geth_aggregator::ecdsa::DigestSigner;
use geth_wire::session::{SessionKey, HEADER_MAC, HEADER_REPLY_MAC};
use http_body_util::BodyExt;
use hyper::body::Bytes;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const AGGREGATOR: &str = env!("CARGO_BIN_EXE_geth-aggregator");
/// One reporter in this many is on a fork block at each height.
const FORK_EVERY: u64 = 10;
/// Latency is also shown per this many blocks (seconds of the load).
const WINDOW_BLOCKS: u64 = 15;
/// Stats and ping interval of geth's reporter.
const STATS_EVERY: u64 = 15;
/// Stats interval of geth-agent's reporter.
const AGENT_STATS_EVERY: u64 = 5;
/// The live view keeps 256 heights: RSS grows until they are filled.
const WARM_UP_SECS: u64 = 300;
/// Logins at once: below the aggregator's pending logins per address (8).
const LOGINS_AT_ONCE: usize = 4;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn hash(number: u64, fork: bool) -> String {
    format!("0x{:064x}", number + if fork { 1 << 40 } else { 0 })
}

/// CPU clock ticks of a process, in its own code and in the kernel.
#[derive(Clone, Copy)]
struct Cpu {
    user: u64,
    system: u64,
}

impl Cpu {
    fn total(self) -> u64 {
        self.user + self.system
    }
}

/// CPU ticks and RSS in KiB of `pid`.
fn proc_stat(pid: u32) -> (Cpu, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    let ticks = Cpu {
        user: field(11).unwrap_or(0),
        system: field(12).unwrap_or(0),
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (ticks, rss_kib)
}

/// When each reporter wrote each block frame: microseconds since `origin`,
/// 0 while not written. Indexed by `reporter * blocks + (number - 1)`.
struct Written {
    origin: Instant,
    blocks: u64,
    at_us: Vec<AtomicU64>,
}

impl Written {
    fn slot(&self, reporter: u64, number: u64) -> Option<&AtomicU64> {
        (number >= 1 && number <= self.blocks)
            .then(|| {
                self.at_us
                    .get((reporter * self.blocks + number - 1) as usize)
            })
            .flatten()
    }
}

/// The server under load.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// geth-aggregator: a secret per node, viewers on `/api/stream` (SSE).
    Aggregator,
    /// goerli's ethstats-server: one shared secret, viewers on `/primus`.
    Goerli,
}

const GOERLI_SECRET: &str = "bench-secret";

impl Kind {
    fn secret(self, i: u64) -> String {
        match self {
            Kind::Aggregator => format!("secret-{i}"),
            Kind::Goerli => GOERLI_SECRET.into(),
        }
    }
}

/// One ethstats reporter: logs in, then sends its block at every second
/// (jittered within the first 200 ms), stats and a ping every 15 s.
async fn reporter(
    addr: SocketAddr,
    kind: Kind,
    i: u64,
    start_unix: u64,
    written: Arc<Written>,
    logins: Arc<tokio::sync::Semaphore>,
) -> anyhow::Result<()> {
    let name = format!("node-{i}");
    let permit = logins.acquire().await?;
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/api")).await?;
    let (mut tx, mut rx) = ws.split();
    let hello = json!({"emit": ["hello", {"id": name, "secret": kind.secret(i),
        "info": {"name": name, "node": "Geth/v1.13.15-stable/linux-amd64/go1.21"}}]});
    tx.send(Message::text(hello.to_string())).await?;
    match rx.next().await {
        Some(Ok(Message::Text(t))) if t.contains("ready") => {}
        other => anyhow::bail!("{name}: login answered {other:?}"),
    }
    drop(permit);
    // Read what the server sends; answer its primus heartbeat as geth does
    // (goerli's server closes a connection that does not).
    let (pongs, mut to_answer) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(message)) = rx.next().await {
            if let Message::Text(text) = message {
                if let Some(ts) = text.trim_matches('"').strip_prefix("primus::ping::") {
                    let _ = pongs.send(format!("\"primus::pong::{ts}\""));
                }
            }
        }
    });
    let jitter_ms = (i * 7919) % 200;
    let on_fork = |number: u64| (i + number) % FORK_EVERY == 0;
    for number in 1..=written.blocks {
        let due = written.origin + Duration::from_millis((number - 1) * 1000 + jitter_ms);
        tokio::time::sleep_until(due.into()).await;
        while let Ok(pong) = to_answer.try_recv() {
            tx.send(Message::text(pong)).await?;
        }
        let fork = on_fork(number);
        let parent = hash(number - 1, false);
        let block = json!({"emit": ["block", {"id": name, "block": {
            "number": number, "hash": hash(number, fork), "parentHash": parent,
            "timestamp": start_unix + number, "miner": format!("0x{:040x}", number % 7 + 1),
            "difficulty": "2", "gasUsed": 0, "gasLimit": 30_000_000, "transactions": [],
            "uncles": []}}]});
        let frame = Message::text(block.to_string());
        // Stamped just before the write, so no update can overtake it.
        if let Some(slot) = written.slot(i, number) {
            let us = written.origin.elapsed().as_micros() as u64;
            slot.store(us.max(1), Ordering::Relaxed);
        }
        tx.send(frame).await?;
        if (number + i) % STATS_EVERY == 0 {
            let stats = json!({"emit": ["stats", {"id": name, "stats": {"active": true,
                "syncing": false, "mining": false, "peers": 25, "gasPrice": 0, "uptime": 100}}]});
            tx.send(Message::text(stats.to_string())).await?;
            let ping = json!({"emit": ["node-ping", {"id": name, "clientTime": number}]});
            tx.send(Message::text(ping.to_string())).await?;
        }
    }
    let _ = tx.close().await;
    Ok(())
}

/// One agent reporter: geth-agent's signed reports over one kept-alive
/// connection, its block at every second (jittered within the first 200 ms,
/// on a fork like the ethstats reporters), its stats every 5 s.
async fn agent_reporter(
    addr: SocketAddr,
    agent: Agent,
    index: u64,
    start_unix: u64,
    written: Arc<Written>,
) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/api/report");
    let address = format!("{:#x}", agent.key.address());
    let mut last_time = 0;
    let mut session: Option<SessionKey> = None;
    let jitter_ms = (index * 7919) % 200;
    for number in 1..=written.blocks {
        let due = written.origin + Duration::from_millis((number - 1) * 1000 + jitter_ms);
        tokio::time::sleep_until(due.into()).await;
        let fork = (index + number) % FORK_EVERY == 0;
        let block = geth_wire::Report::Block(geth_wire::BlockReport {
            number,
            hash: hash(number, fork),
            parent_hash: hash(number - 1, false),
            timestamp: start_unix + number,
            signer: Some(format!("0x{:040x}", number % 7 + 1)),
            difficulty: 2,
            transactions: 0,
            gas_used: 0,
            gas_limit: 30_000_000,
            seen_at_ms: geth_wire::now_ms(),
        });
        let mut reports = vec![(block, Some(number))];
        if (number + index) % AGENT_STATS_EVERY == 0 {
            let stats = geth_wire::StatsReport {
                name: agent.name.clone(),
                client: Some("Geth/v1.13.15-stable/linux-amd64/go1.21".into()),
                agent_version: "bench".into(),
                enode: Some(agent.enode.clone()),
                peers: Some(25),
                syncing: Some(false),
                mining: Some(false),
                is_signer: Some(false),
                head: Some(number),
                head_hash: Some(hash(number, fork)),
                uptime_s: number,
                ready: true,
                phase: "running".into(),
                period: 1,
                ..Default::default()
            };
            reports.push((geth_wire::Report::Stats(Box::new(stats)), None));
        }
        for (report, stamp) in reports {
            let body = serde_json::to_vec(&report)?;
            // Strictly increasing per node, as the aggregator requires.
            let time = geth_wire::now_ms().max(last_time + 1);
            last_time = time;
            // geth-agent's proofs: a signature until the first signed reply,
            // the session MAC after it (unless BENCH_SESSIONS=0).
            let (proof_header, proof) = match &session {
                Some(key) => (HEADER_MAC, key.request_mac(time, &body)),
                None => {
                    let signature = agent
                        .signer
                        .sign(&keccak256(geth_wire::signing_payload(time, &body)));
                    (
                        geth_wire::HEADER_SIGNATURE,
                        format!("0x{}", hex::encode(signature)),
                    )
                }
            };
            let request = client
                .post(&url)
                .header("content-type", "application/json")
                .header(geth_wire::HEADER_NODE, &address)
                .header(geth_wire::HEADER_TIME, time.to_string())
                .header(proof_header, &proof)
                .body(body);
            // Stamped after signing, just before the request is sent.
            if let Some(slot) = stamp.and_then(|n| written.slot(index, n)) {
                let us = written.origin.elapsed().as_micros() as u64;
                slot.store(us.max(1), Ordering::Relaxed);
            }
            let response = request.send().await?;
            let status = response.status();
            if !status.is_success() {
                let reason = response.text().await.unwrap_or_default();
                anyhow::bail!("{}: report refused ({status}): {reason}", agent.name);
            }
            let seal = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let (reply_signature, reply_mac) = (
                seal(geth_wire::HEADER_REPLY_SIGNATURE),
                seal(HEADER_REPLY_MAC),
            );
            let reply = response.bytes().await?;
            match &session {
                Some(key) => {
                    let proven =
                        reply_mac.is_some_and(|mac| key.verify_reply(&proof, &reply, &mac));
                    anyhow::ensure!(proven, "{}: a reply without its session MAC", agent.name);
                }
                None if agent.sessions => {
                    let aggregator = geth_agent::report::verify_reply(
                        agent.aggregator,
                        &proof,
                        reply_signature.as_deref(),
                        &reply,
                    )
                    .map_err(|e| anyhow::anyhow!("{}: reply: {e}", agent.name))?;
                    session = Some(SessionKey::derive(
                        agent.key.credential().as_nonzero_scalar(),
                        &aggregator,
                    ));
                }
                None => {}
            }
        }
    }
    Ok(())
}

/// An agent reporter's node identity, listed in the aggregator's network file.
#[derive(Clone)]
struct Agent {
    name: String,
    key: PrivateKeySigner,
    /// The same key on libsecp256k1: the load's own signing stays cheap on
    /// the cores it shares with the aggregator.
    signer: Arc<DigestSigner>,
    enode: String,
    /// The aggregator's address, for its first (signed) reply.
    aggregator: Address,
    /// MACs after the first reply, as geth-agent does (BENCH_SESSIONS=0:
    /// every report signed, as right after an aggregator restart).
    sessions: bool,
}

impl Agent {
    fn new(j: u64, aggregator: Address, sessions: bool) -> Self {
        let key = PrivateKeySigner::random();
        let point = key.credential().verifying_key().to_encoded_point(false);
        let port = 20_000 + j;
        let signer = DigestSigner::new(&key.to_bytes()).map(Arc::new);
        Agent {
            signer: signer.expect("a random key is a valid key"),
            name: format!("agent-{j}"),
            enode: format!(
                "enode://{}@127.0.0.1:{port}",
                hex::encode(&point.as_bytes()[1..])
            ),
            key,
            aggregator,
            sessions,
        }
    }
}

/// One node update seen by a viewer: whose block, which block, how late (µs).
type Sample = (u64, u64, u64);

/// The sample of one node update, if it shows reporter `r` at a new block.
fn on_update(
    written: &Written,
    seen: &mut [u64],
    reporter: Option<u64>,
    number: Option<u64>,
    now_us: u64,
) -> Option<Sample> {
    let (r, number) = (reporter?, number?);
    if r >= seen.len() as u64 || number <= seen[r as usize] {
        return None;
    }
    seen[r as usize] = number;
    let at = written.slot(r, number)?.load(Ordering::Relaxed);
    (at > 0).then(|| (r, number, now_us.saturating_sub(at)))
}

/// One viewer of goerli's dashboard: its primus socket, answering the
/// heartbeat; every `block` action is a node at a block.
async fn goerli_viewer(
    addr: SocketAddr,
    reporters: u64,
    written: Arc<Written>,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<Vec<Sample>> {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/primus")).await?;
    let (mut tx, mut rx) = ws.split();
    tx.send(Message::text(json!({"emit": ["ready"]}).to_string()))
        .await?;
    let mut latencies_us = Vec::new();
    let mut seen = vec![0u64; reporters as usize];
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => break,
            m = rx.next() => m,
        };
        let Some(Ok(Message::Text(text))) = message else {
            match message {
                Some(Ok(_)) => continue,
                _ => break,
            }
        };
        let now_us = written.origin.elapsed().as_micros() as u64;
        if let Some(ts) = text.trim_matches('"').strip_prefix("primus::ping::") {
            tx.send(Message::text(format!("\"primus::pong::{ts}\"")))
                .await?;
            continue;
        }
        let Ok(value) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if value["action"] != "block" {
            continue;
        }
        let data = &value["data"];
        let reporter = data["id"]
            .as_str()
            .and_then(|id| id.strip_prefix("node-"))
            .and_then(|n| n.parse().ok());
        let number = data.pointer("/block/number").and_then(Value::as_u64);
        latencies_us.extend(on_update(&written, &mut seen, reporter, number, now_us));
    }
    Ok(latencies_us)
}

/// One dashboard viewer: reads the live stream and records, for every node
/// update that shows a node at a new block, the time since that block frame
/// was written.
async fn viewer(
    addr: SocketAddr,
    ids: Arc<HashMap<String, u64>>,
    written: Arc<Written>,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<Vec<Sample>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = hyper::Request::get("/api/stream")
        .header("host", "aggregator")
        .body(http_body_util::Empty::<Bytes>::new())?;
    let mut body = sender.send_request(request).await?.into_body();
    let mut latencies_us = Vec::new();
    let mut seen = vec![0u64; ids.len()];
    let mut buffer = Vec::<u8>::new();
    loop {
        let frame = tokio::select! {
            _ = stop.cancelled() => break,
            frame = body.frame() => frame,
        };
        let Some(frame) = frame else { break };
        let now_us = written.origin.elapsed().as_micros() as u64;
        let Some(data) = frame?.into_data().ok() else {
            continue;
        };
        buffer.extend_from_slice(&data);
        // Events end with a blank line.
        while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buffer.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&event);
            if !text.starts_with("event: node\n") {
                continue;
            }
            let Some(data) = text.lines().find_map(|l| l.strip_prefix("data: ")) else {
                continue;
            };
            let Ok(node) = serde_json::from_str::<Value>(data) else {
                continue;
            };
            let reporter = node["id"].as_str().and_then(|id| ids.get(id)).copied();
            let number = node.pointer("/head/number").and_then(Value::as_u64);
            latencies_us.extend(on_update(&written, &mut seen, reporter, number, now_us));
        }
    }
    Ok(latencies_us)
}

/// What the benchmark asks of a server.
#[derive(Clone, Copy)]
struct Load {
    /// ethstats reporters.
    reporters: u64,
    /// Agent reporters.
    agents: u64,
    viewers: u64,
    secs: u64,
}

impl Load {
    fn nodes(&self) -> u64 {
        self.reporters + self.agents
    }
}

/// Database size at the start, half-way (size, when), at the end.
struct DbGrowth {
    start: u64,
    half: Option<(u64, Instant)>,
    end: u64,
}

/// One server's figures under the load.
struct Outcome {
    /// Block -> viewer latencies, sorted (µs).
    latencies: Vec<u64>,
    /// Those of the agent reporters' blocks, sorted (µs).
    agent_latencies: Vec<u64>,
    /// The latencies of each [`WINDOW_BLOCKS`] blocks, sorted (µs).
    by_window: Vec<Vec<u64>>,
    failed: u64,
    /// RSS once a second (KiB).
    rss: Vec<u64>,
    cpu_per_min: f64,
    /// The part of it spent in the kernel (system time).
    system_per_min: f64,
    db: Option<DbGrowth>,
    wall: f64,
    page: Option<Value>,
}

/// The `p` quantile of sorted latencies (µs), in ms.
fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .map_or(f64::NAN, |us| *us as f64 / 1000.0)
}

impl Outcome {
    fn percentile_ms(&self, p: f64) -> f64 {
        percentile_ms(&self.latencies, p)
    }

    /// The latencies of the first window (the logins) and of the rest, sorted.
    fn logins_and_steady(&self) -> (&[u64], Vec<u64>) {
        let logins = self.by_window.first().map_or(&[][..], Vec::as_slice);
        let mut steady: Vec<u64> = self.by_window.iter().skip(1).flatten().copied().collect();
        steady.sort_unstable();
        (logins, steady)
    }

    fn max_rss_mib(&self) -> f64 {
        self.rss.iter().copied().max().unwrap_or(0) as f64 / 1024.0
    }
}

async fn wait_listening(addr: SocketAddr, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "{what} did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    Ok(([127, 0, 0, 1], port).into())
}

/// geth-aggregator (release build) with a secret per reporter.
fn start_aggregator(
    dir: &std::path::Path,
    addr: SocketAddr,
    reporters: u64,
    agents: &[Agent],
    key: &PrivateKeySigner,
) -> anyhow::Result<std::process::Child> {
    let network = dir.join("network.json");
    std::fs::write(dir.join("aggregator.key"), hex::encode(key.to_bytes()))?;
    let aggregator = json!({"address": format!("{:#x}", key.address()), "key": "aggregator.key"});
    let nodes: Vec<Value> = agents
        .iter()
        .zip(20_000u64..)
        .map(|(a, port)| {
            json!({"name": a.name, "role": "validator", "enode": a.enode,
                "ports": {"p2p": port, "http": port + 2000, "agent": port + 4000}})
        })
        .collect();
    std::fs::write(
        &network,
        json!({"name": "bench", "chain_id": 1337, "period": 1, "nodes": nodes, "accounts": [],
            "aggregator": aggregator})
        .to_string(),
    )?;
    let mut command = normal_policy(AGGREGATOR);
    command
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--network")
        .arg(&network)
        .arg("--db")
        .arg(dir.join("bench.db"))
        .args(
            std::env::var("BENCH_ARGS")
                .unwrap_or_default()
                .split_whitespace(),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    for i in 0..reporters {
        command
            .arg("--ethstats-secret")
            .arg(format!("node-{i}=secret-{i}"));
    }
    Ok(command.spawn()?)
}

/// goerli's ethstats-server from `checkout`, copied into `dir`, with its npm
/// dependencies and its connection limit lifted.
fn start_goerli(
    checkout: &std::path::Path,
    dir: &std::path::Path,
    addr: SocketAddr,
) -> anyhow::Result<std::process::Child> {
    let copy = dir.join("ethstats-server");
    let status = Command::new("cp")
        .arg("-r")
        .arg(checkout)
        .arg(&copy)
        .status()?;
    anyhow::ensure!(status.success(), "cannot copy {}", checkout.display());
    let app = copy.join("app.js");
    let text = std::fs::read_to_string(&app)?;
    if text.contains("const C_LIMIT = 5") {
        std::fs::write(
            &app,
            text.replace("const C_LIMIT = 5", "const C_LIMIT = Infinity"),
        )?;
        println!("goerli: its limit of 6 new connections per 30 s is lifted for this run");
    } else {
        println!("goerli: no connection limit found in app.js (logins may be throttled)");
    }
    eprintln!("goerli: npm install in {} ...", copy.display());
    let status = Command::new("npm")
        .args([
            "install",
            "--omit=dev",
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
        ])
        .current_dir(&copy)
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "npm install failed for goerli's server");
    Ok(normal_policy("node")
        .arg("bin/www")
        .current_dir(&copy)
        .env("PORT", addr.port().to_string())
        .env("WS_SECRET", GOERLI_SECRET)
        .env("NODE_ENV", "production")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

/// Puts every thread of this process (the load) under `SCHED_BATCH`, which
/// does not preempt on wake-up; threads and children started later inherit it.
fn batch_this_process() -> anyhow::Result<()> {
    let status = Command::new("chrt")
        .args(["--batch", "--all-tasks", "--pid", "0"])
        .arg(std::process::id().to_string())
        .status()
        .map_err(|e| anyhow::anyhow!("chrt (util-linux) is needed to run the load: {e}"))?;
    anyhow::ensure!(status.success(), "chrt --batch failed: {status}");
    Ok(())
}

/// `program` started under the normal scheduling policy (the server under
/// test), whatever the load's policy is.
fn normal_policy(program: &str) -> Command {
    let mut command = Command::new("chrt");
    command.args(["--other", "0", program]);
    command
}

/// The load against one server (`pid` measured), until every reporter is done.
async fn run_load(
    load: Load,
    agents: &[Agent],
    kind: Kind,
    addr: SocketAddr,
    pid: u32,
    db: Option<&std::path::Path>,
    chromium: bool,
) -> anyhow::Result<Outcome> {
    let Load {
        reporters,
        viewers,
        secs,
        ..
    } = load;
    anyhow::ensure!(
        kind == Kind::Aggregator || agents.is_empty(),
        "only geth-aggregator takes agent reports"
    );
    let nodes = load.nodes();
    // Logins take a while at 1,000 reporters: the blocks start after them.
    let login_time = Duration::from_millis(2000 + nodes * 5);
    let origin = Instant::now() + login_time;
    let start_unix = geth_wire::now_ms() / 1000 + login_time.as_secs();
    let written = Arc::new(Written {
        origin,
        blocks: secs,
        at_us: (0..nodes * secs).map(|_| AtomicU64::new(0)).collect(),
    });
    // The live stream's node ids, by index into `written`.
    let ids: Arc<HashMap<String, u64>> = Arc::new(
        (0..reporters)
            .map(|i| format!("ethstats:node-{i}"))
            .chain(agents.iter().map(|a| format!("{:#x}", a.key.address())))
            .zip(0..)
            .collect(),
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let mut watching = Vec::new();
    for _ in 0..viewers {
        let (written, stop) = (written.clone(), stop.clone());
        watching.push(match kind {
            Kind::Aggregator => tokio::spawn(viewer(addr, ids.clone(), written, stop)),
            Kind::Goerli => tokio::spawn(goerli_viewer(addr, reporters, written, stop)),
        });
    }
    let logins = Arc::new(tokio::sync::Semaphore::new(LOGINS_AT_ONCE));
    let mut reporting = Vec::new();
    for i in 0..reporters {
        reporting.push(tokio::spawn(reporter(
            addr,
            kind,
            i,
            start_unix,
            written.clone(),
            logins.clone(),
        )));
    }
    for (agent, index) in agents.iter().zip(reporters..) {
        reporting.push(tokio::spawn(agent_reporter(
            addr,
            agent.clone(),
            index,
            start_unix,
            written.clone(),
        )));
    }
    let browser = if chromium {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/browser/dashboard-lag.mjs");
        let origin_ms = geth_wire::now_ms()
            + origin.saturating_duration_since(Instant::now()).as_millis() as u64;
        Some(
            tokio::process::Command::new("node")
                .arg(script)
                .arg(format!("http://{addr}/"))
                .arg(origin_ms.to_string())
                .arg(secs.to_string())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()?,
        )
    } else {
        None
    };
    tokio::time::sleep_until(origin.into()).await;
    // The database file itself (its write-ahead log is checkpointed into it
    // and stays a few MiB).
    let db_size = || {
        db.and_then(|d| std::fs::metadata(d).ok())
            .map_or(0, |m| m.len())
    };
    let db_start = db_size();
    let mut db_half = None;
    let (cpu_start, _) = proc_stat(pid);
    let mut rss = Vec::new();
    let end = origin + Duration::from_secs(secs);
    // Progress every 30 s (a sample can land a second late: not by `% 30`).
    let mut next_progress = 30;
    while Instant::now() < end {
        rss.push(proc_stat(pid).1);
        let done = Instant::now().duration_since(origin).as_secs();
        if done >= secs / 2 && db_half.is_none() {
            db_half = Some((db_size(), Instant::now()));
        }
        if done >= next_progress {
            next_progress = done - done % 30 + 30;
            let rss_mib = rss.last().copied().unwrap_or(0) as f64 / 1024.0;
            match db {
                Some(_) => println!(
                    "  {done} s: RSS {rss_mib:.0} MiB, database {:.1} MiB",
                    db_size() as f64 / 1048576.0
                ),
                None => println!("  {done} s: RSS {rss_mib:.0} MiB"),
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut failed = 0;
    for (i, task) in reporting.into_iter().enumerate() {
        let outcome = task.await;
        if !matches!(outcome, Ok(Ok(()))) {
            if failed < 3 {
                println!("  reporter {i} failed: {outcome:?}");
            }
            failed += 1;
        }
    }
    let (cpu_end, _) = proc_stat(pid);
    let wall = origin.elapsed().as_secs_f64();
    // Let the last updates reach the viewers.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let mut latencies = Vec::new();
    let mut agent_latencies = Vec::new();
    let mut by_window: Vec<Vec<u64>> = Vec::new();
    for task in watching {
        for (r, number, latency) in task.await?? {
            latencies.push(latency);
            if r >= reporters {
                agent_latencies.push(latency);
            }
            let window = ((number - 1) / WINDOW_BLOCKS) as usize;
            if by_window.len() <= window {
                by_window.resize_with(window + 1, Vec::new);
            }
            by_window[window].push(latency);
        }
    }
    latencies.sort_unstable();
    agent_latencies.sort_unstable();
    for window in &mut by_window {
        window.sort_unstable();
    }
    let page = match browser {
        Some(child) => {
            let out = child.wait_with_output().await?;
            let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            anyhow::ensure!(out.status.success(), "dashboard-lag.mjs failed: {line}");
            Some(serde_json::from_str::<Value>(&line)?)
        }
        None => None,
    };
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100) as f64;
    let per_min = |t: u64| t as f64 / ticks / wall * 60.0;
    Ok(Outcome {
        latencies,
        agent_latencies,
        by_window,
        failed,
        rss,
        cpu_per_min: per_min(cpu_end.total() - cpu_start.total()),
        system_per_min: per_min(cpu_end.system - cpu_start.system),
        db: db.map(|_| DbGrowth {
            start: db_start,
            half: db_half,
            end: db_size(),
        }),
        wall,
        page,
    })
}

/// Prints one server's figures.
fn report(server: &str, load: Load, o: &Outcome) {
    let expected = load.nodes() * load.secs * load.viewers;
    if o.latencies.is_empty() {
        println!(
            "{server}: no update seen by a viewer ({} viewers; {} reporters failed)",
            load.viewers, o.failed
        );
    } else {
        println!(
        "{server}: block -> viewer ms: p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}  ({} of {expected} updates seen; {} reporters failed)",
        o.percentile_ms(0.5),
        o.percentile_ms(0.9),
        o.percentile_ms(0.99),
        o.percentile_ms(1.0),
        o.latencies.len(),
        o.failed,
        );
    }
    if !o.agent_latencies.is_empty() {
        let a = &o.agent_latencies;
        println!(
            "  of which agent reports: p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
            percentile_ms(a, 0.5),
            percentile_ms(a, 0.9),
            percentile_ms(a, 0.99),
            percentile_ms(a, 1.0),
        );
    }
    if o.by_window.len() > 1 {
        // Where the tail is: a burst at the start (every session opening at
        // once) reads differently from one that comes back every block.
        let windows: Vec<String> = o
            .by_window
            .iter()
            .enumerate()
            .filter(|(_, w)| !w.is_empty())
            .map(|(i, w)| {
                let first = i as u64 * WINDOW_BLOCKS + 1;
                format!(
                    "{first}-{}: {:.1}",
                    first + WINDOW_BLOCKS - 1,
                    percentile_ms(w, 0.99)
                )
            })
            .collect();
        println!("  p99 ms by block: {}", windows.join(", "));
    }
    let mut sorted = o.rss.clone();
    sorted.sort_unstable();
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "{server}: RSS MiB: first {:.0}, median {:.0}, last {:.0}; CPU {:.2} s/min ({:.2} in the kernel)",
        mib(o.rss.first().copied().unwrap_or(0)),
        mib(sorted.get(sorted.len() / 2).copied().unwrap_or(0)),
        mib(o.rss.last().copied().unwrap_or(0)),
        o.cpu_per_min,
        o.system_per_min
    );
    let per_node_day =
        |bytes: u64, secs: f64| bytes as f64 / 1048576.0 / load.nodes() as f64 / secs * 86400.0;
    if let Some(DbGrowth { start, half, end }) = o.db {
        println!(
            "{server}: database grew {:.1} MiB in {:.0} s ({:.1} MiB per node per day)",
            end.saturating_sub(start) as f64 / 1048576.0,
            o.wall,
            per_node_day(end.saturating_sub(start), o.wall)
        );
        if let Some((size, at)) = half {
            let secs = at.elapsed().as_secs_f64();
            println!(
                "  second half: {:.1} MiB in {secs:.0} s ({:.2} MiB per node per day)",
                end.saturating_sub(size) as f64 / 1048576.0,
                per_node_day(end.saturating_sub(size), secs)
            );
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    let goerli_checkout = std::env::var_os("BENCH_GOERLI");
    let reporters = env_or("BENCH_REPORTERS", 100);
    let load = Load {
        reporters,
        agents: env_or(
            "BENCH_AGENTS",
            if goerli_checkout.is_some() {
                0
            } else {
                reporters
            },
        ),
        viewers: env_or("BENCH_VIEWERS", 5),
        secs: env_or("BENCH_SECS", 180),
    };
    anyhow::ensure!(
        load.nodes() >= 1 && load.secs >= 2 * WINDOW_BLOCKS,
        "BENCH_REPORTERS + BENCH_AGENTS >= 1, BENCH_SECS >= {}",
        2 * WINDOW_BLOCKS
    );
    anyhow::ensure!(
        goerli_checkout.is_none() || load.agents == 0,
        "BENCH_GOERLI compares ethstats reporters only: goerli's server cannot take agent reports (BENCH_AGENTS=0)"
    );
    let aggregator_key = PrivateKeySigner::random();
    let sessions = std::env::var("BENCH_SESSIONS").map_or(true, |v| v != "0");
    let agents: Vec<Agent> = (0..load.agents)
        .map(|j| Agent::new(j, aggregator_key.address(), sessions))
        .collect();
    batch_this_process()?;
    let dir = tempfile::tempdir()?;
    let addr = free_addr()?;
    let mut child = start_aggregator(dir.path(), addr, load.reporters, &agents, &aggregator_key)?;
    wait_listening(addr, "the aggregator").await?;
    let agents_line =
        match load.agents {
            0 => String::new(),
            n => {
                format!(
            "{n} agent reporters ({}, the same blocks, stats every {AGENT_STATS_EVERY} s), ",
            if sessions { "signed once, then session MACs" } else { "every report signed" }
        )
            }
        };
    println!(
        "load: {} ethstats reporters (1 block/s, 1 in {FORK_EVERY} on a fork, stats every {STATS_EVERY} s), \
         {agents_line}{} viewers, {} s",
        load.reporters, load.viewers, load.secs
    );
    let chromium = std::env::var("BENCH_CHROMIUM").is_ok_and(|v| v == "1");
    let db = dir.path().join("bench.db");
    let ours = run_load(
        load,
        &agents,
        Kind::Aggregator,
        addr,
        child.id(),
        Some(&db),
        chromium,
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let ours = ours?;
    report("geth-aggregator", load, &ours);

    let goerli = match goerli_checkout {
        Some(checkout) => {
            let addr = free_addr()?;
            let mut child = start_goerli(std::path::Path::new(&checkout), dir.path(), addr)?;
            wait_listening(addr, "goerli's ethstats-server").await?;
            println!("goerli's ethstats-server under the same load:");
            let outcome = run_load(load, &[], Kind::Goerli, addr, child.id(), None, false).await;
            let _ = child.kill();
            let _ = child.wait();
            let outcome = outcome?;
            report("goerli ethstats-server", load, &outcome);
            Some(outcome)
        }
        None => None,
    };

    // The live view fills its window of recent heights first: flatness is
    // judged after that, on runs long enough to show it.
    let steady = ours
        .rss
        .get(WARM_UP_SECS as usize..)
        .filter(|after| load.secs >= 2 * WARM_UP_SECS && !after.is_empty());
    let expected = load.nodes() * load.secs * load.viewers;
    let mut checks = vec![(
        match load.viewers {
            0 => "no reporter failed".to_owned(),
            _ => "every update seen".to_owned(),
        },
        ours.latencies.len() as u64 >= expected * 99 / 100 && ours.failed == 0,
    )];
    let mib = |kib: u64| kib as f64 / 1024.0;
    match steady {
        Some(after) => {
            let base = after[0] as f64;
            let flat = after
                .iter()
                .all(|&r| (r as f64 - base).abs() <= base * 0.10);
            println!(
                "RSS after {WARM_UP_SECS} s: {:.0} MiB, then {:.0} to {:.0} MiB",
                mib(after[0]),
                mib(after.iter().copied().min().unwrap_or(0)),
                mib(after.iter().copied().max().unwrap_or(0))
            );
            checks.push(("RSS flat (within 10 % after the warm-up)".into(), flat));
        }
        None => println!(
            "RSS flatness not judged: needs BENCH_SECS >= {} (warm-up {WARM_UP_SECS} s)",
            2 * WARM_UP_SECS
        ),
    }
    // Targets by size: up to 100 reporters of each kind, or more.
    let small = load.reporters.max(load.agents) <= 100;
    // Latency is measured at the viewers: without one there is none to judge.
    if load.viewers == 0 {
        println!("latency not judged: BENCH_VIEWERS=0 (no viewer to receive the updates)");
    } else {
        let (logins, steady) = ours.logins_and_steady();
        let target = if small { 5.0 } else { 50.0 };
        let p99 = percentile_ms(&steady, 0.99);
        checks.push((
            format!(
                "p99 <= {target} ms from block {} on ({p99:.1} ms)",
                WINDOW_BLOCKS + 1
            ),
            p99 <= target,
        ));
        let p99 = percentile_ms(logins, 0.99);
        checks.push((
            format!("p99 <= 1 s in blocks 1-{WINDOW_BLOCKS}, the logins ({p99:.1} ms)"),
            p99 <= 1000.0,
        ));
    }
    if !small {
        checks.push(("RSS <= 150 MiB".into(), ours.max_rss_mib() <= 150.0));
        checks.push(("CPU <= 10 s/min".into(), ours.cpu_per_min <= 10.0));
    }
    if let Some(g) = &goerli {
        checks.push((
            format!(
                "CPU <= 1/5 of goerli's ({:.2} vs {:.2} s/min: {:.1}x less)",
                ours.cpu_per_min,
                g.cpu_per_min,
                g.cpu_per_min / ours.cpu_per_min.max(f64::MIN_POSITIVE)
            ),
            ours.cpu_per_min * 5.0 <= g.cpu_per_min,
        ));
    }
    if let Some(page) = &ours.page {
        println!("dashboard in Chromium, behind the load's head: {page}");
        let max = page["behind_ms_max"].as_u64().unwrap_or(u64::MAX);
        checks.push(("page within 1 s of the load's head".into(), max <= 1000));
    }
    let mut met = true;
    for (what, ok) in checks {
        println!("  {what}: {}", if ok { "met" } else { "MISSED" });
        met &= ok;
    }
    println!(
        "load benchmark: targets {}",
        if met { "met" } else { "MISSED" }
    );
    Ok(if met {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}
