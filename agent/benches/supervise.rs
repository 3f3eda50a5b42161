//! Benchmark: the agent's steady resource use while it supervises a
//! one-block-per-second geth (targets: RSS <= 15 MiB, CPU <= 1 % of one core).
//!
//! `cargo bench -p geth-agent --bench supervise` (BENCH_SECS sets the
//! measurement window, default 60).

use std::time::Duration;

use testnet::{http_get, Launcher, NetworkOptions, TestNetwork};

const AGENT: &str = env!("CARGO_BIN_EXE_geth-agent");

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// utime + stime in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let options = NetworkOptions {
        signers: 1,
        period: 1,
        launcher: Launcher::Agent(AGENT.into()),
        // A lone signer has no peers; readiness must still hold.
        agent_args: vec!["--min-peers".into(), "0".into()],
        ..Default::default()
    };
    let net = TestNetwork::start(options).await?;
    net.wait_for_block(0, 5, Duration::from_secs(120)).await?;
    let pid = net.nodes[0].pid().expect("agent running");
    let ticks_per_sec =
        nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100) as f64;
    let readyz = ([127, 0, 0, 1], net.nodes[0].info.ports.agent).into();

    println!("supervising a 1 block/s clique node; measuring the agent (pid {pid}) for {secs} s");
    let head_start = net.head(0).await?;
    let cpu_start = cpu_ticks(pid).expect("agent alive");
    let started = std::time::Instant::now();
    let mut rss_max = 0;
    let mut rss_sum = 0;
    let mut samples = 0;
    while started.elapsed() < Duration::from_secs(secs) {
        // A kubelet-like probe once a second.
        let (code, _) = http_get(readyz, "/readyz").await?;
        anyhow::ensure!(code == 200, "node not ready during the benchmark");
        let rss = rss_kib(pid).expect("agent alive");
        rss_max = rss_max.max(rss);
        rss_sum += rss;
        samples += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = (cpu_ticks(pid).expect("agent alive") - cpu_start) as f64 / ticks_per_sec;
    let blocks = net.head(0).await? - head_start;
    let cpu_pct = 100.0 * cpu / wall;
    let rss_avg = rss_sum as f64 / samples as f64 / 1024.0;
    let rss_peak = rss_max as f64 / 1024.0;
    println!("blocks followed: {blocks} in {wall:.0} s");
    println!(
        "agent RSS: avg {rss_avg:.1} MiB, max {rss_peak:.1} MiB (target <= 15 MiB) {}",
        verdict(rss_peak <= 15.0)
    );
    println!(
        "agent CPU: {cpu:.2} s in {wall:.0} s = {cpu_pct:.2} % of one core (target <= 1 %) {}",
        verdict(cpu_pct <= 1.0)
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
