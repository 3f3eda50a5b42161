//! Load benchmark: 1,000 simulated agents, each sending a signed stats report
//! every second and a block report for every new block (one per second), to a
//! real geth-aggregator process, with dashboard subscribers on the event
//! stream. Every block passes validation and the majority reference head;
//! 10 % of the block reports carry a competing fork block at that height.
//! Prints reports/s, ingest latency percentiles, the aggregator's RSS and CPU
//! (targets: p99 <= 20 ms, RSS <= 200 MiB on 2 cores) and the event bytes the
//! subscribers received.
//!
//! `cargo bench -p geth-aggregator --bench load` (BENCH_SECS, default 30;
//! BENCH_NODES, default 1000; BENCH_SSE, default 20 subscribers).

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use alloy::primitives::keccak256;
use alloy::signers::local::PrivateKeySigner;
use alloy::signers::SignerSync;
use geth_wire::{
    now_ms, signing_payload, BlockReport, Report, StatsReport, HEADER_NODE, HEADER_SIGNATURE,
    HEADER_TIME,
};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;

const AGGREGATOR: &str = env!("CARGO_BIN_EXE_geth-aggregator");
const WORKERS: usize = 64;
/// One block report in this many is on a fork.
const FORK_EVERY: usize = 10;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Planned {
    at: Duration,
    request: hyper::Request<Full<Bytes>>,
}

fn signed(key: &PrivateKeySigner, time_ms: u64, report: &Report) -> hyper::Request<Full<Bytes>> {
    let body = serde_json::to_vec(report).expect("report serialises");
    let sig = key
        .sign_hash_sync(&keccak256(signing_payload(time_ms, &body)))
        .expect("sign");
    hyper::Request::post("/api/report")
        .header("host", "aggregator")
        .header("content-type", "application/json")
        .header(HEADER_NODE, format!("{:#x}", key.address()))
        .header(HEADER_TIME, time_ms.to_string())
        .header(
            HEADER_SIGNATURE,
            format!("0x{}", hex::encode(sig.as_bytes())),
        )
        .body(Full::new(Bytes::from(body)))
        .expect("request")
}

fn proc_stat(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = fields
        .get(11)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (ticks, rss_kib)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secs = env_or("BENCH_SECS", 30);
    let nodes = env_or("BENCH_NODES", 1000) as usize;
    let subscribers = env_or("BENCH_SSE", 20) as usize;
    let dir = tempfile::tempdir()?;

    // A network of `nodes` node keys.
    let keys: Vec<PrivateKeySigner> = (0..nodes).map(|_| PrivateKeySigner::random()).collect();
    let entries: Vec<serde_json::Value> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let public = k.credential().verifying_key().to_encoded_point(false);
            serde_json::json!({ "name": format!("node-{i}"), "role": "validator",
                "enode": format!("enode://{}@10.0.0.1:30303", hex::encode(&public.as_bytes()[1..])),
                "ports": {"p2p": 30303, "http": 8545, "agent": 9101} })
        })
        .collect();
    let network = dir.path().join("network.json");
    std::fs::write(
        &network,
        serde_json::to_vec(
            &serde_json::json!({"name": "bench", "chain_id": 1337, "period": 1, "nodes": entries, "accounts": []}),
        )?,
    )?;

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut child = Command::new(AGGREGATOR)
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--network")
        .arg(&network)
        .arg("--db")
        .arg(dir.path().join("bench.db"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let ready = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        anyhow::ensure!(
            ready.elapsed() < Duration::from_secs(30),
            "aggregator did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Pre-sign every request (the timestamps are the planned send times), so the
    // driver spends its time sending, not signing.
    println!(
        "{nodes} simulated agents, {secs} s: signing {} requests ...",
        nodes as u64 * secs * 2
    );
    let start_ms = now_ms() + 2000 + nodes as u64 * secs * 2 / 20; // after the signing below
    let mut plans: Vec<Vec<Planned>> = (0..WORKERS).map(|_| Vec::new()).collect();
    for second in 0..secs {
        let number = second + 1;
        let hash = format!("0x{:064x}", number);
        let parent = format!("0x{:064x}", number - 1);
        let fork_hash = format!("0x{:064x}", (1u64 << 40) + number);
        for (i, key) in keys.iter().enumerate() {
            // 10 % of the nodes see a competing block at this height (its
            // parent is the main chain, so the next main block reorgs them).
            let on_fork = (i + second as usize) % FORK_EVERY == 0;
            // Spread each node's sends over the second.
            let offset_ms = second * 1000 + (i as u64 * 1000 / nodes as u64);
            let at_ms = start_ms + offset_ms;
            let block = Report::Block(BlockReport {
                number,
                hash: if on_fork {
                    fork_hash.clone()
                } else {
                    hash.clone()
                },
                parent_hash: parent.clone(),
                timestamp: start_ms / 1000 + second,
                signer: Some(format!("{:#x}", keys[number as usize % nodes].address())),
                difficulty: 2,
                transactions: 0,
                gas_used: 0,
                gas_limit: 30_000_000,
                seen_at_ms: at_ms,
            });
            let stats = Report::Stats(Box::new(StatsReport {
                name: format!("node-{i}"),
                peers: Some(25),
                head: Some(number),
                uptime_s: second,
                ready: true,
                ..Default::default()
            }));
            let worker = &mut plans[i % WORKERS];
            worker.push(Planned {
                at: Duration::from_millis(offset_ms),
                request: signed(key, at_ms, &block),
            });
            worker.push(Planned {
                at: Duration::from_millis(offset_ms + 500),
                request: signed(key, at_ms + 500, &stats),
            });
        }
    }
    for plan in &mut plans {
        plan.sort_by_key(|p| p.at);
    }
    let wait = start_ms.saturating_sub(now_ms());
    tokio::time::sleep(Duration::from_millis(wait)).await;

    // Dashboard subscribers: count the event bytes they receive.
    let sse_bytes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    for _ in 0..subscribers {
        let counter = sse_bytes.clone();
        tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let request = hyper::Request::get("/api/stream")
                .header("host", "aggregator")
                .body(http_body_util::Empty::<Bytes>::new())?;
            let mut body = sender.send_request(request).await?.into_body();
            while let Some(frame) = body.frame().await {
                let n = frame?.data_ref().map_or(0, |d| d.len() as u64);
                counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            }
            anyhow::Ok(())
        });
    }
    let (cpu_start, _) = proc_stat(pid);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for plan in plans {
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let mut latencies = Vec::with_capacity(plan.len());
            let mut errors = 0u64;
            for p in plan {
                tokio::time::sleep_until((started + p.at).into()).await;
                let sent = Instant::now();
                let response = sender.send_request(p.request).await?;
                let ok = response.status().is_success();
                let _ = response.into_body().collect().await?;
                latencies.push(sent.elapsed());
                errors += u64::from(!ok);
            }
            anyhow::Ok((latencies, errors))
        }));
    }
    let mut rss_max = 0;
    let sampler = async {
        while started.elapsed() < Duration::from_secs(secs) {
            rss_max = rss_max.max(proc_stat(pid).1);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    sampler.await;
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await??;
        latencies.extend(l);
        errors += e;
    }
    let wall = started.elapsed().as_secs_f64();
    let (cpu_end, rss_end) = proc_stat(pid);
    let _ = child.kill();
    let _ = child.wait();
    let sse_bytes = sse_bytes.load(std::sync::atomic::Ordering::Relaxed);
    rss_max = rss_max.max(rss_end);
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100) as f64;
    let cpu = (cpu_end - cpu_start) as f64 / ticks;
    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64()
            * 1000.0
    };
    println!(
        "{} reports in {wall:.1} s ({:.0}/s), {errors} refused",
        latencies.len(),
        latencies.len() as f64 / wall
    );
    println!(
        "ingest latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}  (target p99 <= 20 ms) {}",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0),
        if pct(0.99) <= 20.0 {
            "OK"
        } else {
            "OVER TARGET"
        }
    );
    println!(
        "aggregator RSS max {:.1} MiB (target <= 200 MiB) {}; CPU {cpu:.1} s in {wall:.1} s = {:.0} % of one core",
        rss_max as f64 / 1024.0,
        if rss_max as f64 / 1024.0 <= 200.0 { "OK" } else { "OVER TARGET" },
        100.0 * cpu / wall
    );
    println!(
        "{subscribers} SSE subscribers received {:.1} MiB of events; 1 in {FORK_EVERY} block reports on a fork",
        sse_bytes as f64 / 1024.0 / 1024.0
    );
    Ok(())
}
