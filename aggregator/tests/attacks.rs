//! One node key in hostile hands, and unauthenticated load, against a real
//! geth-aggregator with real agents on a real 3-signer geth 1.13.15 network:
//! forged heads, a far-future timestamp, a replayed request, another node's
//! enode, a foreign signer set and a flood of ethstats connections are all
//! refused or outvoted, while every honest agent stays ready and the page
//! keeps showing what the honest geths hold.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use alloy::primitives::keccak256;
use alloy::signers::local::PrivateKeySigner;
use alloy::signers::SignerSync;
use anyhow::{ensure, Context, Result};
use geth_wire::{now_ms, signing_payload, HEADER_NODE, HEADER_SIGNATURE, HEADER_TIME};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{json, Value};
use testnet::{
    eventually, free_ports, http_get, metric_value, sibling_binary, Launcher, NetworkOptions,
    TestNetwork,
};

const AGGREGATOR: &str = env!("CARGO_BIN_EXE_geth-aggregator");
const MINUTE: Duration = Duration::from_secs(60);

/// A 3-signer network whose agents report to a fresh aggregator.
fn network_with_aggregator(period: u64) -> Result<(TestNetwork, SocketAddr)> {
    let port = free_ports(1)?[0];
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let options = NetworkOptions {
        signers: 3,
        period,
        launcher: Launcher::Agent(sibling_binary("geth-agent")),
        agent_args: vec!["--aggregator".into(), format!("http://{addr}")],
        ..Default::default()
    };
    let mut net = TestNetwork::generate(&options)?;
    let cmd = net.aggregator_command(
        Path::new(AGGREGATOR),
        addr,
        &net.path().join("aggregator.db"),
    );
    net.spawn_other(0, cmd)?;
    for i in 0..net.nodes.len() {
        net.spawn(i)?;
    }
    Ok((net, addr))
}

async fn state(addr: SocketAddr) -> Result<Value> {
    let (code, body) = http_get(addr, "/api/state").await?;
    ensure!(code == 200, "/api/state {code}: {body}");
    Ok(serde_json::from_str(&body)?)
}

/// Signs requests with a stolen node key. Its times run a little ahead of
/// the clock so the honest agent's concurrent requests cannot make a forged
/// one look like a replay (that would hide the refusal being tested).
struct Attacker {
    key: PrivateKeySigner,
    last: u64,
}

impl Attacker {
    fn load(path: &Path) -> Result<Self> {
        Ok(Self {
            key: geth_agent::report::load_node_key(path)?,
            last: 0,
        })
    }

    fn next_time(&mut self) -> u64 {
        self.last = (now_ms() + 2_000).max(self.last + 1);
        self.last
    }

    fn request(&self, path: &str, body: &[u8], time: u64) -> Result<hyper::Request<Full<Bytes>>> {
        let sig = self
            .key
            .sign_hash_sync(&keccak256(signing_payload(time, body)))?;
        let builder = if path == "/api/peers" {
            hyper::Request::get(path)
        } else {
            hyper::Request::post(path)
        };
        Ok(builder
            .header("host", "aggregator")
            .header("content-type", "application/json")
            .header(HEADER_NODE, format!("{:#x}", self.key.address()))
            .header(HEADER_TIME, time.to_string())
            .header(
                HEADER_SIGNATURE,
                format!("0x{}", hex::encode(sig.as_bytes())),
            )
            .body(Full::new(Bytes::from(body.to_vec())))?)
    }

    async fn report(&mut self, addr: SocketAddr, report: &Value) -> Result<(u16, String)> {
        let time = self.next_time();
        let body = serde_json::to_vec(report)?;
        send(addr, self.request("/api/report", &body, time)?).await
    }
}

async fn send(addr: SocketAddr, request: hyper::Request<Full<Bytes>>) -> Result<(u16, String)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let response = sender.send_request(request).await?;
    let code = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((code, String::from_utf8_lossy(&body).into_owned()))
}

fn block(number: u64, hash: &str, parent: &str, timestamp: u64) -> Value {
    json!({"type": "block", "number": number, "hash": hash, "parent_hash": parent,
        "timestamp": timestamp, "signer": null, "difficulty": 2, "transactions": 0,
        "gas_used": 0, "gas_limit": 30_000_000u64, "seen_at_ms": now_ms()})
}

/// Every agent answers /readyz 200.
async fn all_ready(net: &TestNetwork) -> Result<Option<()>> {
    for node in &net.nodes {
        let agent: SocketAddr = ([127, 0, 0, 1], node.info.ports.agent).into();
        let (code, body) = http_get(agent, "/readyz").await?;
        if code != 200 {
            eprintln!("{} not ready: {body}", node.info.name);
            return Ok(None);
        }
    }
    Ok(Some(()))
}

/// The page's best block is one the honest geths hold, within two blocks of
/// their heads, and no forged hash appears anywhere on it.
async fn page_is_honest(
    net: &TestNetwork,
    addr: SocketAddr,
    forged: &[String],
) -> Result<Option<Value>> {
    let s = state(addr).await?;
    // Hard failures, not retried: nothing forged in the chain the page shows.
    let shown = json!([s["best"], s["reference"], s["blocks"], s["signers"]]).to_string();
    for hash in forged {
        assert!(
            !shown.contains(hash.as_str()),
            "forged {hash} on the page: {s}"
        );
    }
    let Some(best) = s["best"]["number"].as_u64() else {
        return Ok(None);
    };
    let reference = &s["reference"];
    ensure!(
        reference["number"].as_u64() == Some(best) && reference["hash"] == s["best"]["hash"],
        "best and reference differ: {s}"
    );
    let mut heads = Vec::new();
    for i in 0..net.nodes.len() {
        heads.push(net.head(i).await?);
    }
    let (low, high) = (
        *heads.iter().min().unwrap_or(&0),
        *heads.iter().max().unwrap_or(&0),
    );
    ensure!(best <= high, "best {best} above every geth head {heads:?}");
    if best + 2 < low {
        return Ok(None); // lagging a moment under load; poll again
    }
    let real = format!("{:#x}", net.block_hash(0, best).await?);
    ensure!(
        s["best"]["hash"] == real.as_str(),
        "best {best} is {} on the page but {real} in geth",
        s["best"]["hash"]
    );
    Ok(Some(s))
}

fn rejected(metrics: &str, reason: &str) -> f64 {
    metric_value(
        metrics,
        &format!("clique_fleet_rejected_reports_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn one_stolen_node_key_and_an_ethstats_flood_cannot_break_the_fleet() -> Result<()> {
    let (net, addr) = network_with_aggregator(2)?;
    eventually(
        "every agent ready and a reference head",
        3 * MINUTE,
        || async {
            let s = state(addr).await?;
            Ok(if s["reference"]["number"].as_u64() > Some(1) {
                all_ready(&net).await?
            } else {
                None
            })
        },
    )
    .await?;
    let genesis_signers: Vec<String> = {
        let mut v: Vec<String> = net
            .nodes
            .iter()
            .filter_map(|n| n.info.signer.map(|s| format!("{s:#x}")))
            .collect();
        v.sort();
        v
    };
    let mut attacker = Attacker::load(&net.node_dir(0).join("nodekey"))?;
    let now_s = now_ms() / 1000;
    let s = state(addr).await?;
    let reference = s["reference"]["number"].as_u64().context("reference")?;
    let reference_hash = s["reference"]["hash"].as_str().context("hash")?.to_owned();
    let fake = |n: u64| format!("0x{:064x}", 0xdead_0000u64 + n);
    let mut forged = vec![fake(1), fake(2), fake(3)];

    // 1. The head that once emptied the fleet, and a far-future timestamp.
    let (code, body) = attacker
        .report(addr, &block(i64::MAX as u64, &fake(1), &fake(0), now_s))
        .await?;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("implausible_height"), "{body}");
    let (code, body) = attacker
        .report(
            addr,
            &block(reference + 1, &fake(2), &fake(0), now_s + 86_400 * 365),
        )
        .await?;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("future_timestamp"), "{body}");
    // A plausible next block nobody else holds is taken as this node's claim
    // only: it is neither the reference nor shown.
    let (code, body) = attacker
        .report(
            addr,
            &block(reference + 1, &fake(3), &reference_hash, now_s),
        )
        .await?;
    ensure!(
        code == 200 || body.contains("parent_mismatch"),
        "{code} {body}"
    );

    // 2. A captured request sent again.
    let time = attacker.next_time();
    let (code, body) = send(addr, attacker.request("/api/peers", b"", time)?).await?;
    assert_eq!(code, 200, "{body}");
    let (code, body) = send(addr, attacker.request("/api/peers", b"", time)?).await?;
    assert_eq!(code, 409, "the replay is refused: {body}");

    // 4. Another node's key at an address of the attacker's choosing.
    let other = &net.nodes[1].info.enode;
    let hijack = format!(
        "{}@10.66.0.1:30303",
        other.split('@').next().context("enode")?
    );
    let (code, body) = attacker
        .report(
            addr,
            &json!({"type": "stats", "name": "x", "enode": hijack}),
        )
        .await?;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("foreign_enode"), "{body}");
    let peers_of_2 = {
        let mut node2 = Attacker::load(&net.node_dir(2).join("nodekey"))?;
        let time = node2.next_time();
        send(addr, node2.request("/api/peers", b"", time)?).await?
    };
    assert_eq!(peers_of_2.0, 200, "{}", peers_of_2.1);
    assert!(!peers_of_2.1.contains("10.66.0.1"), "{}", peers_of_2.1);

    // 5. A signer set of the attacker's choosing.
    let foreign = format!("{:#x}", PrivateKeySigner::random().address());
    let (code, body) = attacker
        .report(
            addr,
            &json!({"type": "stats", "name": "x", "signers": [foreign.clone()], "ready": true}),
        )
        .await?;
    assert_eq!(
        code, 200,
        "a well-formed claim is taken as one vote: {body}"
    );
    forged.push(foreign.clone());

    // 16. A flood of unauthenticated ethstats connections from one address.
    let url = format!("ws://{addr}/api");
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..40 {
        match tokio_tungstenite::connect_async(&url).await {
            Ok((socket, _)) => held.push(socket),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 429);
                refused += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
    assert!(
        held.len() <= 8,
        "at most 8 pending logins per address, got {}",
        held.len()
    );
    assert_eq!(refused, 40 - held.len());
    // Pings (websocket and primus) do not keep a client that never logs in.
    use futures_util::{SinkExt, StreamExt};
    let mut pinger = held.pop().context("one admitted connection")?;
    let started = std::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(40), async {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let ping = tokio_tungstenite::tungstenite::Message::Ping(Bytes::from_static(b"x"));
                    let primus = tokio_tungstenite::tungstenite::Message::Text("\"primus::ping::1\"".into());
                    if pinger.send(ping).await.is_err() || pinger.send(primus).await.is_err() {
                        return;
                    }
                }
                msg = pinger.next() => match msg {
                    None | Some(Err(_)) | Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) => return,
                    Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                        assert!(!t.contains("primus::pong"), "answered a primus ping before login");
                    }
                    Some(Ok(_)) => {}
                },
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "a pinging client outlived the login deadline"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    // A large message before login closes that connection.
    let mut big = held.pop().context("another admitted connection")?;
    let _ = big
        .send(tokio_tungstenite::tungstenite::Message::Text(
            "x".repeat(200 * 1024).into(),
        ))
        .await;
    let dropped = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match big.next().await {
                None
                | Some(Err(_))
                | Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(dropped.is_ok(), "an oversized pre-login message was kept");
    drop(held);

    // The attack is counted by reason.
    let (_, metrics) = http_get(addr, "/metrics").await?;
    for reason in [
        "implausible_height",
        "future_timestamp",
        "replay",
        "foreign_enode",
        "too_many_connections",
    ] {
        assert!(
            rejected(&metrics, reason) >= 1.0,
            "{reason} not counted:\n{metrics}"
        );
    }

    // Meanwhile and afterwards: every honest agent ready, the page honest,
    // the hijacked enode never handed out, the signer set unchanged.
    let start = state(addr).await?["best"]["number"].as_u64().unwrap_or(0);
    eventually(
        "the page to stay honest while the chain advances",
        2 * MINUTE,
        || async {
            let Some(s) = page_is_honest(&net, addr, &forged).await? else {
                return Ok(None);
            };
            Ok((s["best"]["number"].as_u64() > Some(start + 3)).then_some(()))
        },
    )
    .await?;
    let s = state(addr).await?;
    let mut shown: Vec<String> = s["signers"]
        .as_array()
        .context("signers")?
        .iter()
        .filter_map(|v| v["address"].as_str().map(str::to_owned))
        .collect();
    shown.sort();
    assert_eq!(
        shown, genesis_signers,
        "the signer set follows clique, not one node"
    );
    let (_, page) = http_get(addr, "/api/state").await?;
    assert!(!page.contains("10.66.0.1"));
    eventually("every honest agent ready", 2 * MINUTE, || all_ready(&net)).await?;
    Ok(())
}

/// A key that is not the one network.json publishes stops the aggregator
/// (exit 64) instead of signing replies every agent would refuse.
#[tokio::test]
async fn a_key_other_than_the_published_one_is_refused_at_start() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let published = PrivateKeySigner::random();
    let node = PrivateKeySigner::random();
    let public = node.credential().verifying_key().to_encoded_point(false);
    let network = json!({"name": "t", "chain_id": 1337, "period": 1, "accounts": [],
        "nodes": [{"name": "n", "role": "validator",
            "enode": format!("enode://{}@127.0.0.1:30303", hex::encode(&public.as_bytes()[1..])),
            "ports": {"p2p": 30303, "http": 8545, "agent": 9101}}],
        "aggregator": {"address": format!("{:#x}", published.address()), "key": "aggregator.key"}});
    std::fs::write(
        dir.path().join("network.json"),
        serde_json::to_vec(&network)?,
    )?;
    let other = dir.path().join("other.key");
    std::fs::write(&other, hex::encode(PrivateKeySigner::random().to_bytes()))?;
    let port = free_ports(1)?[0];
    let run = |extra: &[&Path]| {
        let mut cmd = Command::new(AGGREGATOR);
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--network")
            .arg(dir.path().join("network.json"))
            .arg("--db")
            .arg(dir.path().join("agg.db"));
        for key in extra {
            cmd.arg("--key").arg(key);
        }
        cmd.output()
    };
    let out = run(&[&other])?;
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("aggregator.address"), "{stderr}");
    let garbage = dir.path().join("garbage.key");
    std::fs::write(&garbage, "not a key")?;
    let out = run(&[&garbage])?;
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("64 hex digits"));
    Ok(())
}
