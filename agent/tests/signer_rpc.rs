//! Signers run with their account unlocked: no listening port of a signer's
//! geth may answer `eth_sendTransaction` or `clique_propose`. Users reach the
//! chain through a validator's HTTP JSON-RPC.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;
use testnet::{agent_status, eventually, http_post_json, Launcher, NetworkOptions, TestNetwork};

const AGENT: &str = env!("CARGO_BIN_EXE_geth-agent");
const MINUTE: Duration = Duration::from_secs(60);

/// Socket inodes the process holds open (`/proc/<pid>/fd/* -> socket:[inode]`).
fn socket_inodes(pid: u32) -> Result<BTreeSet<u64>> {
    let mut inodes = BTreeSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(link) = std::fs::read_link(entry?.path()) else {
            continue;
        };
        let link = link.to_string_lossy().into_owned();
        if let Some(inode) = link
            .strip_prefix("socket:[")
            .and_then(|r| r.strip_suffix(']'))
            .and_then(|i| i.parse().ok())
        {
            inodes.insert(inode);
        }
    }
    Ok(inodes)
}

/// Every TCP port the process listens on, from `/proc/<pid>/net/tcp{,6}`
/// (state 0A is LISTEN) joined with its own socket inodes.
fn listening_ports(pid: u32) -> Result<BTreeSet<u16>> {
    let mine = socket_inodes(pid)?;
    let mut ports = BTreeSet::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}"))?;
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let inode: u64 = inode.parse().unwrap_or(0);
            if *state != "0A" || !mine.contains(&inode) {
                continue;
            }
            let port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok())
                .context("port in /proc/net/tcp")?;
            ports.insert(port);
        }
    }
    Ok(ports)
}

fn rpc_body(method: &str, params: &Value) -> String {
    serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string()
}

#[tokio::test]
async fn no_port_of_a_signer_answers_send_transaction_or_propose() -> Result<()> {
    let net = TestNetwork::start(NetworkOptions {
        signers: 3,
        validators: 1,
        launcher: Launcher::Agent(AGENT.into()),
        ..Default::default()
    })
    .await?;
    let net = &net;
    for i in 0..4 {
        net.wait_for_block(i, 3, 3 * MINUTE).await?;
    }
    let validator = 3;
    let victim = net.nodes[0].info.signer.context("signer-1 is a signer")?;

    for i in 0..3 {
        let node = &net.nodes[i];
        let socket: PathBuf = node.datadir.join("geth-agent/admin.sock");
        let pid = eventually("geth's pid from the agent", MINUTE, || async {
            Ok(agent_status(&socket).await?["status"]["pid"].as_u64())
        })
        .await? as u32;
        let ports = listening_ports(pid)?;
        // geth listens at least for p2p (and the engine API on loopback).
        assert!(
            ports.contains(&node.info.ports.p2p),
            "{}: {ports:?}",
            node.info.name
        );
        assert!(
            !ports.contains(&node.info.ports.http),
            "{} listens on its http port: {ports:?}",
            node.info.name
        );
        let send = rpc_body(
            "eth_sendTransaction",
            &serde_json::json!([{"from": format!("{:#x}", node.info.signer.unwrap()),
                 "to": "0x4242424242424242424242424242424242424242", "value": "0x1",
                 "gasPrice": "0x0"}]),
        );
        let propose = rpc_body(
            "clique_propose",
            &serde_json::json!(["0x4242424242424242424242424242424242424242", true]),
        );
        for port in &ports {
            let addr: SocketAddr = ([127, 0, 0, 1], *port).into();
            for body in [&send, &propose] {
                match http_post_json(addr, body).await {
                    Err(_) => {} // refused, or not HTTP at all (p2p)
                    Ok((code, answer)) => assert!(
                        !answer.contains("\"result\""),
                        "{} port {port} answered {code}: {answer}",
                        node.info.name
                    ),
                }
            }
        }
        // Nothing was proposed and nothing left the account.
        let rpc = node.rpc().await?;
        let proposals: Value = rpc.call("clique_proposals", ()).await?;
        assert_eq!(proposals, serde_json::json!({}), "{}", node.info.name);
        let pending: Value = rpc.call("txpool_content", ()).await?;
        assert_eq!(pending["pending"], serde_json::json!({}), "{pending}");
    }

    // Users' RPC: the validator serves eth_blockNumber, and has no account to spend.
    let addr: SocketAddr = ([127, 0, 0, 1], net.nodes[validator].info.ports.http).into();
    let (code, answer) =
        http_post_json(addr, &rpc_body("eth_blockNumber", &serde_json::json!([]))).await?;
    assert!(
        code == 200 && answer.contains("\"result\":\"0x"),
        "{code} {answer}"
    );
    let (_, answer) = http_post_json(
        addr,
        &rpc_body("eth_sendTransaction", &serde_json::json!([{"from": format!("{victim:#x}"), "to": format!("{victim:#x}"), "value": "0x1"}]),
        ),
    )
    .await?;
    assert!(answer.contains("\"error\""), "{answer}");
    Ok(())
}

#[tokio::test]
async fn an_agent_refuses_to_give_a_signer_http() -> Result<()> {
    let net = TestNetwork::generate(&NetworkOptions {
        signers: 1,
        ..Default::default()
    })?;
    for extra in [
        vec!["--http", "127.0.0.1:1"],
        vec!["--", "--http", "--http.addr", "0.0.0.0"],
        vec!["--", "--ws"],
    ] {
        let out = Command::new(AGENT)
            .arg("run")
            .arg("--config")
            .arg(net.node_dir(0).join("agent.toml"))
            .arg("--datadir")
            .arg(&net.nodes[0].datadir)
            .args(&extra)
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{extra:?}: {stderr}");
        assert!(stderr.contains("refused for a signer"), "{stderr}");
        assert!(!net.nodes[0].datadir.join("geth.ipc").exists());
    }
    Ok(())
}
