//! Growing a running network with real geth 1.13.15: 3 signers under agents
//! reporting to the aggregator. A fourth node joins with `geth-agent join`
//! from its own folder: a bundle with another genesis hash than expected is
//! refused before anything is written; the joined node syncs to the signers'
//! head (same hash), turns ready, its reports are refused with a reason that
//! says how to be admitted, and after `geth-aggregator nodes admit` it shows
//! on the dashboard. Then the joined node makes its own signer key and
//! `signers add` votes it in (4 signers everywhere, it seals within 2 × 4
//! periods); `signers remove` of an original signer brings the set back to 3
//! (that node stops sealing and stays in sync); with a signer stopped, a
//! removal that would break the quorum is refused before any vote. The
//! genesis has a short epoch (votes reset every 6 blocks): a vote for the new
//! key cast before an epoch block, and lost there, still ends in the change
//! the plan completes after it. Throughout, no
//! gap between blocks is longer than 3 periods. Finally `nodes remove`
//! revokes the admission.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use testnet::{
    eventually, free_ports, http_get, http_post_json, metric_value, sibling_binary, Launcher,
    NetworkOptions, TestNetwork,
};

const AGGREGATOR: &str = env!("CARGO_BIN_EXE_geth-aggregator");
const MINUTE: Duration = Duration::from_secs(60);
const PERIOD: u64 = 2;
const TOKEN: &str = "test-admin-token-0123456789abcdef";
/// Votes reset at every multiple of this block number.
const EPOCH: u64 = 6;

/// A joined node's agent and its geth, killed when dropped (as the harness
/// does with the network's nodes).
struct Joined {
    agent: Child,
    datadir: PathBuf,
}

impl Drop for Joined {
    fn drop(&mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
        // The geth it started lives on in its own process group.
        let target = geth_agent::process::AttachTarget {
            datadir: self.datadir.clone(),
            log_file: PathBuf::new(),
            pid_file: None,
            binary: Some(testnet::geth_bin()),
        };
        if let Some(pid) = geth_agent::process::find_geth(&target) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// `/api/state`'s nodes.
async fn state_nodes(addr: SocketAddr) -> Result<Vec<Value>> {
    let (code, body) = http_get(addr, "/api/state").await?;
    ensure!(code == 200, "/api/state {code}: {body}");
    let state: Value = serde_json::from_str(&body)?;
    Ok(state["nodes"].as_array().context("nodes")?.clone())
}

async fn rejected_unknown(addr: SocketAddr) -> Result<f64> {
    let (_, metrics) = http_get(addr, "/metrics").await?;
    Ok(metric_value(
        &metrics,
        "clique_fleet_rejected_reports_total{reason=\"unknown_node\"}",
    )
    .unwrap_or(0.0))
}

/// JSON-RPC over HTTP to the joined node.
async fn rpc(addr: SocketAddr, method: &str, params: Value) -> Result<Value> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let (code, text) = http_post_json(addr, &body.to_string()).await?;
    ensure!(code == 200, "{method}: {code} {text}");
    let reply: Value = serde_json::from_str(&text)?;
    Ok(reply["result"].clone())
}

fn signers_cli(url: &str, token: &Path, args: &[&str]) -> Result<std::process::Output> {
    Command::new(AGGREGATOR)
        .arg("signers")
        .args(args)
        .arg("--url")
        .arg(url)
        .arg("--admin-token-file")
        .arg(token)
        .output()
        .context("geth-aggregator signers")
}

/// The block a followed `signers add|remove` reports the change at.
fn changed_at(text: &str) -> Result<u64> {
    text.lines()
        .find_map(|l| l.split("done: changed at block ").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .with_context(|| format!("no final block in: {text}"))
}

/// `clique_getSigners` at the head, over a node's IPC.
async fn signers_of(ipc: &Path) -> Result<Vec<String>> {
    let rpc = geth_agent::rpc::GethRpc::connect(ipc).await?;
    Ok(rpc.call("clique_getSigners", ()).await?)
}

/// A block's beneficiary (the address a clique vote is about, lower-case)
/// as signer-2 sees it.
async fn signer2_block(net: &TestNetwork, number: u64) -> Result<String> {
    let rpc = geth_agent::rpc::GethRpc::connect(&net.nodes[1].ipc()).await?;
    let block = rpc.block(number.into()).await?;
    Ok(format!("{:#x}", block.header.beneficiary))
}

async fn block_time(net: &TestNetwork, i: usize, number: u64) -> Result<u64> {
    let rpc = geth_agent::rpc::GethRpc::connect(&net.nodes[i].ipc()).await?;
    let block = rpc.block(number.into()).await?;
    Ok(block.header.timestamp)
}

/// Stops a process with SIGTERM and waits for it (bounded).
async fn stop(child: &mut Child) -> Result<()> {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    eventually("the joined agent to stop", 2 * MINUTE, || {
        let polled = child.try_wait().map_err(anyhow::Error::from);
        async move { polled }
    })
    .await?;
    Ok(())
}

fn nodes_cli(url: &str, token: &Path, args: &[&str]) -> Result<std::process::Output> {
    Command::new(AGGREGATOR)
        .arg("nodes")
        .args(args)
        .arg("--url")
        .arg(url)
        .arg("--admin-token-file")
        .arg(token)
        .output()
        .context("geth-aggregator nodes")
}

#[tokio::test]
async fn a_node_joins_is_admitted_voted_in_and_a_signer_is_retired() -> Result<()> {
    let ports = free_ports(4)?;
    let addr: SocketAddr = ([127, 0, 0, 1], ports[0]).into();
    let url = format!("http://{addr}");
    let join_http: SocketAddr = ([127, 0, 0, 1], ports[1]).into();
    let join_agent: SocketAddr = ([127, 0, 0, 1], ports[2]).into();
    let join_p2p = ports[3];
    let agent_bin = sibling_binary("geth-agent");
    let options = NetworkOptions {
        signers: 3,
        validators: 0,
        period: PERIOD,
        launcher: Launcher::Agent(agent_bin.clone()),
        agent_args: vec!["--aggregator".into(), url.clone()],
        ..Default::default()
    };
    let mut net = TestNetwork::generate(&options)?;
    let mut genesis: Value = serde_json::from_str(&std::fs::read_to_string(net.genesis())?)?;
    genesis["config"]["clique"]["epoch"] = json!(EPOCH);
    std::fs::write(net.genesis(), serde_json::to_string_pretty(&genesis)?)?;
    let token = net.start_with_admin_aggregator(Path::new(AGGREGATOR), addr, TOKEN)?;
    eventually("3 signers ready", 4 * MINUTE, || async {
        let ready = state_nodes(addr)
            .await?
            .iter()
            .filter(|n| n["online"] == true && n["ready"] == true)
            .count();
        Ok((ready == 3).then_some(()))
    })
    .await?;

    // The bundle: public, its genesis hash is the chain's block 0.
    let (code, body) = http_get(addr, "/api/bundle").await?;
    ensure!(code == 200, "bundle {code}: {body}");
    let bundle: Value = serde_json::from_str(&body)?;
    let genesis_hash = format!("{:#x}", net.block_hash(0, 0).await?);
    assert_eq!(bundle["genesis_hash"], genesis_hash.as_str(), "{body}");
    assert_eq!(bundle["enodes"].as_array().map(Vec::len), Some(3), "{body}");

    // A different expected genesis: refused, nothing written.
    let refused_dir = net.path().join("refused");
    let out = Command::new(&agent_bin)
        .arg("join")
        .arg(&url)
        .arg("--datadir")
        .arg(&refused_dir)
        .arg("--expect-genesis-hash")
        .arg(format!("0x{}", "11".repeat(32)))
        .env("GETH_BIN", testnet::geth_bin())
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("genesis hash mismatch"), "{stderr}");
    assert!(!refused_dir.exists(), "nothing may be written");

    // The join, from its own folder.
    let dir: PathBuf = net.path().join("joined");
    let log_path = net.path().join("join.log");
    let log = std::fs::File::create(&log_path)?;
    let child = Command::new(&agent_bin)
        .arg("join")
        .arg(&url)
        .arg("--datadir")
        .arg(&dir)
        .arg("--expect-genesis-hash")
        .arg(&genesis_hash)
        .arg("--name")
        .arg("joined-1")
        .arg("--p2p-port")
        .arg(join_p2p.to_string())
        .arg("--http")
        .arg(join_http.to_string())
        .arg("--listen")
        .arg(join_agent.to_string())
        .env("GETH_BIN", testnet::geth_bin())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let mut joined = Joined {
        agent: child,
        datadir: dir.clone(),
    };
    let first_block = net.head(0).await?;
    let log_text = || std::fs::read_to_string(&log_path).unwrap_or_default();
    eventually("the joined node to be ready", 5 * MINUTE, || async {
        let text = log_text();
        ensure!(!text.contains("geth-agent join:"), "join failed: {text}");
        Ok(text.contains("\nready: head ").then_some(()))
    })
    .await
    .with_context(log_text)?;
    let text = log_text();
    assert!(text.contains("sync: block "), "{text}");
    let enode = text
        .lines()
        .find_map(|l| l.strip_prefix("enode "))
        .context("enode line")?
        .to_owned();

    // Same chain: its block at a height both hold is the signers' block.
    let head = u64::from_str_radix(
        rpc(join_http, "eth_blockNumber", json!([]))
            .await?
            .as_str()
            .context("head")?
            .trim_start_matches("0x"),
        16,
    )?;
    assert!(head > 0);
    net.wait_for_block(0, head, MINUTE).await?;
    let joined_block = rpc(
        join_http,
        "eth_getBlockByNumber",
        json!([format!("{head:#x}"), false]),
    )
    .await?;
    assert_eq!(
        joined_block["hash"],
        format!("{:#x}", net.block_hash(0, head).await?).as_str()
    );

    // Not admitted: reports refused with the way to be admitted; not shown.
    eventually("the joined node's reports refused", 2 * MINUTE, || async {
        Ok((rejected_unknown(addr).await? > 0.0).then_some(()))
    })
    .await?;
    eventually(
        "the refusal reason in the joined agent's log",
        2 * MINUTE,
        || async { Ok(log_text().contains("nodes admit").then_some(())) },
    )
    .await?;
    let names: Vec<Value> = state_nodes(addr)
        .await?
        .iter()
        .map(|n| n["name"].clone())
        .collect();
    assert!(!names.contains(&json!("joined-1")), "{names:?}");

    // The admission needs the admin token.
    let wrong = net.path().join("wrong-token");
    std::fs::write(&wrong, "wrong-token-0123456789")?;
    let out = nodes_cli(&url, &wrong, &["admit", &enode])?;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{out:?}"
    );

    let out = nodes_cli(&url, &token, &["admit", &enode, "--name", "joined-1"])?;
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("admitted 0x"),
        "{out:?}"
    );
    eventually("the joined node on the dashboard", 2 * MINUTE, || async {
        let nodes = state_nodes(addr).await?;
        Ok(nodes
            .iter()
            .any(|n| n["name"] == "joined-1" && n["online"] == true)
            .then_some(()))
    })
    .await?;
    let listed = nodes_cli(&url, &token, &["list"])?;
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("joined-1"),
        "{listed:?}"
    );

    // Promotion: the joined node makes its own signer key and restarts as a
    // signer candidate (JSON-RPC on IPC only).
    stop(&mut joined.agent).await?;
    let out = Command::new(&agent_bin)
        .arg("signer-key")
        .arg("--config")
        .arg(dir.join("agent.toml"))
        .output()?;
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let account = stdout
        .split_whitespace()
        .nth(2)
        .context("signer key address")?
        .to_lowercase();
    let log = std::fs::OpenOptions::new().append(true).open(&log_path)?;
    joined.agent = Command::new(&agent_bin)
        .arg("run")
        .arg("--config")
        .arg(dir.join("agent.toml"))
        .arg("--datadir")
        .arg(&dir)
        .env("GETH_BIN", testnet::geth_bin())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let joined_ipc = dir.join("geth.ipc");
    eventually(
        "the joined node to report its signer key",
        3 * MINUTE,
        || async {
            let nodes = state_nodes(addr).await?;
            Ok(nodes
                .iter()
                .any(|n| {
                    n["name"] == "joined-1"
                        && n["online"] == true
                        && n["signer"].as_str().map(str::to_lowercase).as_deref() == Some(&account)
                })
                .then_some(()))
        },
    )
    .await
    .with_context(log_text)?;

    // An epoch straddle, made certain: signer-2 votes for the new key alone
    // (1 of the 2 votes needed) until an epoch block resets the tally.
    let signer2 = geth_agent::rpc::GethRpc::connect(&net.nodes[1].ipc()).await?;
    let _: Value = signer2
        .call("clique_propose", (account.clone(), true))
        .await?;
    let from = net.head(1).await?;
    let mut voted_in = None;
    for b in from + 1..=from + 30 {
        net.wait_for_block(1, b, MINUTE).await?;
        if signer2_block(&net, b).await? == account {
            voted_in = Some(b);
            break;
        }
    }
    let voted_in = voted_in.context("signer-2 cast no vote in 30 blocks")?;
    let before: Value = signer2
        .call("clique_getSnapshot", (format!("{voted_in:#x}"),))
        .await?;
    assert_eq!(
        before["votes"].as_array().map(Vec::len),
        Some(1),
        "{before}"
    );
    let epoch_block = (voted_in / EPOCH + 1) * EPOCH;
    net.wait_for_block(1, epoch_block, 2 * MINUTE).await?;
    let snapshot: Value = signer2
        .call("clique_getSnapshot", (format!("{epoch_block:#x}"),))
        .await?;
    // geth writes the reset votes as null.
    assert!(
        snapshot["votes"].as_array().is_none_or(Vec::is_empty)
            && snapshot["tally"].as_object().is_some_and(|t| t.is_empty()),
        "the epoch block resets the votes: {snapshot}"
    );
    assert_eq!(snapshot["signers"].as_object().map(|s| s.len()), Some(3));

    // signers add: 4 signers everywhere, the new one seals within 2 × 4 periods.
    let out = signers_cli(&url, &token, &["add", "joined-1"])?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{out:?}");
    let changed = changed_at(&text)?;
    assert!(
        changed > epoch_block,
        "the vote begun at block {voted_in} completed after epoch block {epoch_block}: {text}"
    );
    // A node a block behind lists the new set with that block.
    for i in 0..3 {
        let ipc = net.nodes[i].ipc();
        eventually(&format!("node {i} to list 4 signers"), MINUTE, || async {
            Ok((signers_of(&ipc).await?.len() == 4).then_some(()))
        })
        .await?;
    }
    eventually("the joined node to list 4 signers", MINUTE, || async {
        Ok((signers_of(&joined_ipc).await?.len() == 4).then_some(()))
    })
    .await?;
    net.wait_for_block(0, changed + 8, 2 * MINUTE).await?;
    let mut sealed_by_new = None;
    for b in changed + 1..=changed + 8 {
        if format!("{:#x}", net.signer_of(0, b).await?) == account {
            sealed_by_new = Some(b);
            break;
        }
    }
    assert!(
        sealed_by_new.is_some(),
        "no block of {changed}+1..+8 sealed by {account}: {text}"
    );

    // signers remove signer-1: back to 3; it stops sealing and stays in sync.
    let removed = format!("{:#x}", net.nodes[0].info.signer.context("signer")?);
    let out = signers_cli(&url, &token, &["remove", "signer-1"])?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{out:?}");
    let changed = changed_at(&text)?;
    // A node a block behind lists the new set with that block.
    for i in 0..3 {
        let ipc = net.nodes[i].ipc();
        eventually(&format!("node {i} to list 3 signers"), MINUTE, || async {
            Ok((signers_of(&ipc).await?.len() == 3).then_some(()))
        })
        .await?;
    }
    net.wait_for_block(1, changed + 12, 2 * MINUTE).await?;
    for b in changed + 2..=changed + 12 {
        let sealer = format!("{:#x}", net.signer_of(1, b).await?);
        assert_ne!(sealer, removed, "block {b} sealed by the removed signer");
    }
    net.wait_for_block(0, changed + 12, MINUTE).await?;
    assert_eq!(
        net.block_hash(0, changed + 12).await?,
        net.block_hash(1, changed + 12).await?
    );

    // A removal that breaks the quorum: signer-3 stopped, 2 of 3 live;
    // removing signer-2 would leave 1 live of 2. Refused, no vote cast.
    net.nodes[2].signal(nix::sys::signal::Signal::SIGTERM)?;
    net.nodes[2].wait_exit(2 * MINUTE).await?;
    eventually("signer-3 offline", 2 * MINUTE, || async {
        let nodes = state_nodes(addr).await?;
        Ok(nodes
            .iter()
            .any(|n| n["name"] == "signer-3" && n["online"] == false)
            .then_some(()))
    })
    .await?;
    let out = signers_cli(&url, &token, &["remove", "signer-2"])?;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("422") && stderr.contains("quorum"),
        "{stderr}"
    );
    let status = signers_cli(&url, &token, &["status", "--no-follow"])?;
    let status = String::from_utf8_lossy(&status.stdout);
    // The latest change is still the removal of signer-1: no new vote.
    assert!(
        status.contains("(signer-1)") && status.contains("done"),
        "{status}"
    );
    assert!(!status.contains("(signer-2)"), "{status}");
    net.spawn(2)?;

    // The chain sealed through every change: no gap over 3 periods.
    let last = net.head(1).await?;
    let mut previous = block_time(&net, 1, first_block).await?;
    for b in first_block + 1..=last {
        let t = block_time(&net, 1, b).await?;
        assert!(
            t - previous <= 3 * PERIOD,
            "block {b}: {} s after its parent",
            t - previous
        );
        previous = t;
    }

    // Revoked: refused again.
    let before = rejected_unknown(addr).await?;
    let out = nodes_cli(&url, &token, &["remove", &enode])?;
    assert!(out.status.success(), "{out:?}");
    eventually("reports refused again after remove", 2 * MINUTE, || async {
        Ok((rejected_unknown(addr).await? > before).then_some(()))
    })
    .await?;
    // A node of network.json cannot be removed.
    let signer_enode = net.nodes[0].info.enode.clone();
    let out = nodes_cli(&url, &token, &["remove", &signer_enode])?;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("network.json"),
        "{out:?}"
    );
    Ok(())
}
