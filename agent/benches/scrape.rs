//! Benchmark: `/metrics` scrape latency of a live agent (target p99 <= 5 ms),
//! and proof that scrapes make no IPC call: the agent's own request counter
//! moves the same during a burst of scrapes as during an idle interval.
//!
//! `cargo bench -p geth-agent --bench scrape` (SCRAPES sets the least count, default
//! 2000; the burst lasts at least 5 s).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use testnet::{http_get, metric_value, Launcher, NetworkOptions, TestNetwork};

const AGENT: &str = env!("CARGO_BIN_EXE_geth-agent");

async fn ipc_requests(addr: SocketAddr) -> anyhow::Result<f64> {
    let (_, text) = http_get(addr, "/metrics").await?;
    metric_value(&text, "clique_agent_ipc_requests_total")
        .ok_or_else(|| anyhow::anyhow!("no IPC counter"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let scrapes: usize = std::env::var("SCRAPES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let options = NetworkOptions {
        signers: 1,
        period: 1,
        launcher: Launcher::Agent(AGENT.into()),
        agent_args: vec!["--min-peers".into(), "0".into()],
        ..Default::default()
    };
    let net = TestNetwork::start(options).await?;
    net.wait_for_block(0, 5, Duration::from_secs(120)).await?;
    let addr: SocketAddr = ([127, 0, 0, 1], net.nodes[0].info.ports.agent).into();
    let (_, body) = http_get(addr, "/metrics").await?;
    println!(
        "scraping a live agent (1 block/s node): {} bytes, {} series",
        body.len(),
        body.lines().filter(|l| !l.starts_with('#')).count()
    );

    // Warm up, then time each scrape on one keep-alive-less connection each (as Prometheus would open).
    for _ in 0..50 {
        http_get(addr, "/metrics").await?;
    }
    let before = ipc_requests(addr).await?;
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(scrapes);
    // At least 5 s, so the background polls show in both windows.
    while latencies.len() < scrapes || started.elapsed() < Duration::from_secs(5) {
        let t = Instant::now();
        let (code, _) = http_get(addr, "/metrics").await?;
        latencies.push(t.elapsed());
        anyhow::ensure!(code == 200, "scrape failed: {code}");
    }
    let burst = started.elapsed();
    let during = ipc_requests(addr).await? - before;

    // The same length of time without scrapes (two scrapes to read the counter).
    let before = ipc_requests(addr).await?;
    tokio::time::sleep(burst).await;
    let idle = ipc_requests(addr).await? - before;

    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let scrapes = latencies.len();
    println!("{scrapes} scrapes in {:.2} s", burst.as_secs_f64());
    println!(
        "latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}  (target p99 <= 5 ms) {}",
        ms(pct(0.50)),
        ms(pct(0.90)),
        ms(pct(0.99)),
        ms(latencies[latencies.len() - 1]),
        if ms(pct(0.99)) <= 5.0 {
            "OK"
        } else {
            "OVER TARGET"
        }
    );
    println!(
        "IPC requests by the agent: {during} during the {scrapes} scrapes, {idle} during an idle {:.2} s \
         (background polling only: scrapes make no IPC call)",
        burst.as_secs_f64()
    );
    Ok(())
}
