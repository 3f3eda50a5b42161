//! Load benchmark, measured the way users see it: N reporters speaking geth's
//! `--ethstats` protocol to a real geth-aggregator process (release build),
//! one block per second each, 1 in 10 of them on a competing fork block at
//! every height, stats and a ping every 15 s; K dashboard viewers holding the
//! live stream (`/api/stream`) open.
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
//! (default 100), BENCH_VIEWERS (5), BENCH_SECS (180), and BENCH_ARGS for
//! extra aggregator options (e.g. `--sighting-detail-blocks 256`);
//! BENCH_CHROMIUM=1 also opens the dashboard in headless Chromium
//! (`tests/browser/dashboard-lag.mjs`; needs `scripts/install-deps`) and
//! checks that the best block it shows stays within 1 s of the load's head.
//! The reporters and
//! viewers run in this process on the same machine as the aggregator.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use hyper::body::Bytes;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const AGGREGATOR: &str = env!("CARGO_BIN_EXE_geth-aggregator");
/// One reporter in this many is on a fork block at each height.
const FORK_EVERY: u64 = 10;
/// Stats and ping interval of geth's reporter.
const STATS_EVERY: u64 = 15;
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

/// CPU ticks (user + system) and RSS in KiB of `pid`.
fn proc_stat(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    let ticks = field(11).unwrap_or(0) + field(12).unwrap_or(0);
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

/// One ethstats reporter: logs in, then sends its block at every second
/// (jittered within the first 200 ms), stats and a ping every 15 s.
async fn reporter(
    addr: SocketAddr,
    i: u64,
    start_unix: u64,
    written: Arc<Written>,
    logins: Arc<tokio::sync::Semaphore>,
) -> anyhow::Result<()> {
    let name = format!("node-{i}");
    let permit = logins.acquire().await?;
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/api")).await?;
    let (mut tx, mut rx) = ws.split();
    let hello = json!({"emit": ["hello", {"id": name, "secret": format!("secret-{i}"),
        "info": {"name": name, "node": "Geth/v1.13.15-stable/linux-amd64/go1.21"}}]});
    tx.send(Message::text(hello.to_string())).await?;
    match rx.next().await {
        Some(Ok(Message::Text(t))) if t.contains("ready") => {}
        other => anyhow::bail!("{name}: login answered {other:?}"),
    }
    drop(permit);
    // Drain what the aggregator sends (pongs).
    tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
    let jitter_ms = (i * 7919) % 200;
    let on_fork = |number: u64| (i + number) % FORK_EVERY == 0;
    for number in 1..=written.blocks {
        let due = written.origin + Duration::from_millis((number - 1) * 1000 + jitter_ms);
        tokio::time::sleep_until(due.into()).await;
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

/// One dashboard viewer: reads the live stream and records, for every node
/// update that shows a node at a new block, the time since that block frame
/// was written.
async fn viewer(
    addr: SocketAddr,
    reporters: u64,
    written: Arc<Written>,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<Vec<u64>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = hyper::Request::get("/api/stream")
        .header("host", "aggregator")
        .body(http_body_util::Empty::<Bytes>::new())?;
    let mut body = sender.send_request(request).await?.into_body();
    let mut latencies_us = Vec::new();
    let mut seen = vec![0u64; reporters as usize];
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
            let reporter = node["id"]
                .as_str()
                .and_then(|id| id.strip_prefix("ethstats:node-"))
                .and_then(|n| n.parse::<u64>().ok());
            let number = node.pointer("/head/number").and_then(Value::as_u64);
            let (Some(r), Some(number)) = (reporter, number) else {
                continue;
            };
            if r >= reporters || number <= seen[r as usize] {
                continue;
            }
            seen[r as usize] = number;
            let at = written.slot(r, number).map(|s| s.load(Ordering::Relaxed));
            if let Some(at) = at.filter(|&at| at > 0) {
                latencies_us.push(now_us.saturating_sub(at));
            }
        }
    }
    Ok(latencies_us)
}

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    let reporters = env_or("BENCH_REPORTERS", 100);
    let viewers = env_or("BENCH_VIEWERS", 5);
    let secs = env_or("BENCH_SECS", 180);
    anyhow::ensure!(
        reporters >= 1 && secs >= 10,
        "BENCH_REPORTERS >= 1, BENCH_SECS >= 10"
    );
    let dir = tempfile::tempdir()?;
    let network = dir.path().join("network.json");
    std::fs::write(
        &network,
        json!({"name": "bench", "chain_id": 1337, "period": 1, "nodes": [], "accounts": []})
            .to_string(),
    )?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let db = dir.path().join("bench.db");
    let mut command = Command::new(AGGREGATOR);
    command
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--network")
        .arg(&network)
        .arg("--db")
        .arg(&db)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    for i in 0..reporters {
        command
            .arg("--ethstats-secret")
            .arg(format!("node-{i}=secret-{i}"));
    }
    let mut child = command.spawn()?;
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "the aggregator did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    println!(
        "load: {reporters} ethstats reporters (1 block/s, 1 in {FORK_EVERY} on a fork, stats every {STATS_EVERY} s), {viewers} viewers, {secs} s"
    );
    // Logins take a while at 1,000 reporters: the blocks start after them.
    let login_time = Duration::from_millis(2000 + reporters * 5);
    let origin = Instant::now() + login_time;
    let start_unix = geth_wire::now_ms() / 1000 + login_time.as_secs();
    let written = Arc::new(Written {
        origin,
        blocks: secs,
        at_us: (0..reporters * secs).map(|_| AtomicU64::new(0)).collect(),
    });
    let stop = tokio_util::sync::CancellationToken::new();
    let mut watching = Vec::new();
    for _ in 0..viewers {
        watching.push(tokio::spawn(viewer(
            addr,
            reporters,
            written.clone(),
            stop.clone(),
        )));
    }
    let logins = Arc::new(tokio::sync::Semaphore::new(LOGINS_AT_ONCE));
    let mut reporting = Vec::new();
    for i in 0..reporters {
        reporting.push(tokio::spawn(reporter(
            addr,
            i,
            start_unix,
            written.clone(),
            logins.clone(),
        )));
    }
    let browser = if std::env::var("BENCH_CHROMIUM").is_ok_and(|v| v == "1") {
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
    let db_size = || std::fs::metadata(&db).map_or(0, |m| m.len());
    let db_start = db_size();
    let mut db_half = None;
    let (cpu_start, _) = proc_stat(pid);
    let mut rss = Vec::new();
    let end = origin + Duration::from_secs(secs);
    while Instant::now() < end {
        rss.push(proc_stat(pid).1);
        let done = Instant::now().duration_since(origin).as_secs();
        if done >= secs / 2 && db_half.is_none() {
            db_half = Some((db_size(), Instant::now()));
        }
        if done > 0 && done % 30 == 0 {
            println!(
                "  {done} s: RSS {:.0} MiB, database {:.1} MiB",
                rss.last().copied().unwrap_or(0) as f64 / 1024.0,
                db_size() as f64 / 1048576.0
            );
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
    for task in watching {
        latencies.extend(task.await??);
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
    let db_end = db_size();
    let half_growth =
        db_half.map(|(size, at)| (db_end.saturating_sub(size), at.elapsed().as_secs_f64()));
    let _ = child.kill();
    let _ = child.wait();

    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100) as f64;
    let cpu_per_min = (cpu_end - cpu_start) as f64 / ticks / wall * 60.0;
    latencies.sort_unstable();
    let expected = reporters * secs * viewers;
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(f64::NAN, |us| *us as f64 / 1000.0)
    };
    let mut sorted = rss.clone();
    sorted.sort_unstable();
    let (first, median, last) = (rss[0], sorted[sorted.len() / 2], rss[rss.len() - 1]);
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "block -> viewer ms: p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}  ({} of {expected} updates seen; {failed} reporters failed)",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0),
        latencies.len()
    );
    println!(
        "aggregator RSS MiB: first {:.0}, median {:.0}, last {:.0}; CPU {cpu_per_min:.2} s/min",
        mib(first),
        mib(median),
        mib(last)
    );
    let per_node_day =
        |bytes: u64, secs: f64| bytes as f64 / 1048576.0 / reporters as f64 / secs * 86400.0;
    println!(
        "database grew {:.1} MiB in {wall:.0} s ({:.1} MiB per node per day)",
        db_end.saturating_sub(db_start) as f64 / 1048576.0,
        per_node_day(db_end.saturating_sub(db_start), wall)
    );
    if let Some((bytes, secs)) = half_growth {
        println!(
            "  second half: {:.1} MiB in {secs:.0} s ({:.2} MiB per node per day)",
            bytes as f64 / 1048576.0,
            per_node_day(bytes, secs)
        );
    }

    // The live view fills its window of recent heights first: flatness is
    // judged after that, on runs long enough to show it.
    let steady = rss
        .get(WARM_UP_SECS as usize..)
        .filter(|after| secs >= 2 * WARM_UP_SECS && !after.is_empty());
    let mut checks = vec![(
        "every update seen",
        latencies.len() as u64 >= expected * 99 / 100 && failed == 0,
    )];
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
            checks.push(("RSS flat (within 10 % after the warm-up)", flat));
        }
        None => println!(
            "RSS flatness not judged: needs BENCH_SECS >= {} (warm-up {WARM_UP_SECS} s)",
            2 * WARM_UP_SECS
        ),
    }
    if reporters <= 100 {
        checks.push(("p99 <= 5 ms", pct(0.99) <= 5.0));
    } else {
        checks.push(("p99 <= 50 ms", pct(0.99) <= 50.0));
        checks.push(("RSS <= 150 MiB", mib(sorted[sorted.len() - 1]) <= 150.0));
        checks.push(("CPU <= 10 s/min", cpu_per_min <= 10.0));
    }
    if let Some(page) = &page {
        println!("dashboard in Chromium, behind the load's head: {page}");
        let max = page["behind_ms_max"].as_u64().unwrap_or(u64::MAX);
        checks.push(("page within 1 s of the load's head", max <= 1000));
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
