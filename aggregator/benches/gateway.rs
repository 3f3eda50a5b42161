//! Gateway benchmark: requests per second and p99 latency of `eth_blockNumber`
//! and `eth_call` through the HTTPS JSON-RPC gateway against the same calls
//! sent to the node directly (plain HTTP), measured in the same run on the
//! same real geth 1.13.15 node (a validator of a 1-signer network).
//! Targets: the gateway adds at most 1 ms at p99 and keeps at least 80 % of
//! the direct throughput.
//!
//! The gateway runs in this process with the aggregator's library; the node
//! is marked ready in the live view as its agent's report would.
//!
//! `cargo bench -p geth-aggregator --bench gateway` (BENCH_SECS per case,
//! default 10; runs with 1 client, then BENCH_CLIENTS concurrent keep-alive
//! clients, default 16). The load generator, the gateway and geth share the
//! machine's cores, so on a small machine the throughput ratio measures CPU
//! per request more than the gateway's queueing.

use std::net::SocketAddr;

use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};
use testnet::{free_ports, NetworkOptions, TestNetwork};
use tokio_util::sync::CancellationToken;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Outcome {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: usize,
}

async fn load(
    client: reqwest::Client,
    url: String,
    body: Value,
    secs: u64,
    clients: u64,
) -> Outcome {
    let body = body.to_string();
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            while Instant::now() < until {
                let t = Instant::now();
                let ok = match client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                {
                    Ok(r) => r
                        .json::<Value>()
                        .await
                        .is_ok_and(|v| v.get("result").is_some()),
                    Err(_) => false,
                };
                if ok {
                    latencies.push(t.elapsed());
                } else {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((l, e)) = t.await {
            all.extend(l);
            errors += e;
        }
    }
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    Outcome {
        rps: all.len() as f64 / secs as f64,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        errors,
    }
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let secs = env_or("BENCH_SECS", 10);
    let clients = env_or("BENCH_CLIENTS", 16);
    let net = TestNetwork::start(NetworkOptions {
        signers: 1,
        validators: 1,
        ..Default::default()
    })
    .await?;
    net.wait_for_block(1, 2, Duration::from_secs(120)).await?;

    // TLS from a throwaway CA.
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate()?;
    let leaf =
        CertificateParams::new(vec!["localhost".to_owned()])?.signed_by(&leaf_key, &issuer)?;
    let dir = net.path().to_owned();
    std::fs::write(dir.join("gw.pem"), leaf.pem())?;
    std::fs::write(dir.join("gw.key"), leaf_key.serialize_pem())?;

    let port = free_ports(1)?[0];
    let gateway: SocketAddr = ([127, 0, 0, 1], port).into();
    let network_file = net.network_dir.join("network.json");
    let cli = geth_aggregator::Cli::parse_from([
        "geth-aggregator".to_owned(),
        "--network".into(),
        network_file.display().to_string(),
        "--db".into(),
        dir.join("bench.db").display().to_string(),
        "--gateway-listen".into(),
        gateway.to_string(),
        "--gateway-cert".into(),
        dir.join("gw.pem").display().to_string(),
        "--gateway-key".into(),
        dir.join("gw.key").display().to_string(),
        "--gateway-rate".into(),
        "0".into(),
    ]);
    let app = geth_aggregator::build(&cli)?;
    let validator = &net.nodes[1].info;
    let id = format!(
        "{:#x}",
        geth_aggregator::registry::enode_address(&validator.enode).expect("enode")
    );
    app.live().on_stats(
        &id,
        &geth_wire::StatsReport {
            name: validator.name.clone(),
            ready: true,
            is_signer: Some(false),
            min_gas_price_wei: Some(0),
            ..Default::default()
        },
        geth_wire::now_ms(),
        None,
    );
    let (gw, tls) = geth_aggregator::build_gateway(&cli, &app)?.expect("gateway configured");
    let listener = std::net::TcpListener::bind(gateway)?;
    let stop = CancellationToken::new();
    let server = tokio::spawn({
        let stop = stop.clone();
        async move { geth_aggregator::gateway::serve(gw, listener, tls, stop).await }
    });

    let https = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_der(ca.der())?)
        .resolve("localhost", gateway)
        .build()?;
    let gateway_url = format!("https://localhost:{port}/");
    testnet::eventually("the gateway to answer", Duration::from_secs(30), || {
        let (https, url) = (https.clone(), gateway_url.clone());
        async move {
            let r = https
                .post(&url)
                .json(&json!({"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}))
                .send()
                .await?;
            Ok(r.json::<Value>().await?.get("result").map(|_| ()))
        }
    })
    .await?;
    let direct = reqwest::Client::new();
    let direct_url = net.nodes[1].http_url();

    // One client shows the latency the gateway adds; many show throughput.
    for n in [1, clients] {
        println!(
            "gateway benchmark: {n} keep-alive client(s), {secs} s per case, node {}",
            validator.name
        );
        println!(
            "{:<16} {:<8} {:>10} {:>9} {:>9} {:>7}",
            "method", "path", "req/s", "p50 ms", "p99 ms", "errors"
        );
        let calls = [
            ("eth_blockNumber", json!([])),
            (
                "eth_call",
                json!([{"to": "0x0000000000000000000000000000000000000001", "data": "0x1234"}, "latest"]),
            ),
        ];
        for (method, params) in calls {
            let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
            let d = load(direct.clone(), direct_url.clone(), body.clone(), secs, n).await;
            let g = load(https.clone(), gateway_url.clone(), body, secs, n).await;
            for (path, o) in [("direct", &d), ("gateway", &g)] {
                println!(
                    "{method:<16} {path:<8} {:>10.0} {:>9.2} {:>9.2} {:>7}",
                    o.rps, o.p50_ms, o.p99_ms, o.errors
                );
            }
            let added = g.p99_ms - d.p99_ms;
            let kept = g.rps / d.rps * 100.0;
            println!(
                "{method:<16} gateway adds {added:.2} ms at p99 (target <= 1 ms: {}), keeps {kept:.0} % of direct throughput (target >= 80 %: {})",
                if added <= 1.0 { "met" } else { "MISSED" },
                if kept >= 80.0 { "met" } else { "MISSED" },
            );
        }
    }
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    Ok(())
}
