//! `scripts/devnet`, the README's first command, driven end to end.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::Result;
use testnet::{eventually, free_port_range, geth_bin, http_get, sibling_binary, workspace_root};

fn devnet(state: &std::path::Path, args: &[&str]) -> Output {
    Command::new(workspace_root().join("scripts/devnet"))
        .args(args)
        .env("DEVNET_DIR", state)
        .env("GETH_BIN", geth_bin())
        .env("GETH_AGENT_BIN", env!("CARGO_BIN_EXE_geth-agent"))
        .env("GETH_AGGREGATOR_BIN", sibling_binary("geth-aggregator"))
        .output()
        .expect("scripts/devnet runs")
}

/// Whether a JSON-RPC server answers on `port`. Something else may listen
/// there: every geth binds its engine API on a random loopback port, and that
/// one answers 401 without its JWT.
async fn serves_json_rpc(port: u16) -> bool {
    let call =
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []});
    let sent = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}"))
        .json(&call)
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    match sent {
        Ok(reply) if reply.status().is_success() => {
            reply.text().await.is_ok_and(|t| t.contains("\"result\""))
        }
        _ => false,
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

struct Down(PathBuf);
impl Drop for Down {
    fn drop(&mut self) {
        let _ = devnet(&self.0, &["down"]);
    }
}

#[tokio::test]
async fn up_status_second_up_and_down() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("devnet");
    // Node i uses port base + i.
    // 3 signers + the default validator.
    let [http, p2p, agent, dashboard, gateway] = [
        free_port_range(4)?,
        free_port_range(4)?,
        free_port_range(4)?,
        free_port_range(1)?,
        free_port_range(1)?,
    ]
    .map(|p| p.to_string());
    let port_args = [
        "--http-port",
        &http,
        "--p2p-port",
        &p2p,
        "--agent-port",
        &agent,
        "--dashboard-port",
        &dashboard,
        "--gateway-port",
        &gateway,
    ];

    let bad = devnet(&state, &["up", "--signers", "0"]);
    assert_eq!(bad.status.code(), Some(64));
    assert_eq!(text(&bad).trim().lines().count(), 1, "{}", text(&bad));

    let mut args = vec!["up", "--detach", "--period", "1"];
    args.extend(port_args);
    let up = devnet(&state, &args);
    let _down = Down(state.clone());
    assert!(up.status.success(), "{}", text(&up));
    // Users' RPC is the validator's; signers print no rpc URL (they serve none).
    let http_base: u16 = http.parse()?;
    let validator_rpc = format!("http://127.0.0.1:{}", http_base + 3);
    let up_text = text(&up);
    let line = |name: &str| {
        up_text
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(line("validator-1").contains(&validator_rpc), "{up_text}");
    for i in 1..=3 {
        let signer = line(&format!("signer-{i} "));
        assert!(signer.contains("rpc -"), "{up_text}");
        assert!(!signer.contains("rpc http"), "{up_text}");
    }
    let validator_port = http_base + 3;
    eventually(
        "the validator's JSON-RPC",
        Duration::from_secs(120),
        || async move { Ok(serves_json_rpc(validator_port).await.then_some(())) },
    )
    .await?;
    for i in 0..3 {
        let port = http_base + i;
        assert!(
            !serves_json_rpc(port).await,
            "signer-{} serves JSON-RPC on its http port {port}",
            i + 1
        );
    }

    let again = devnet(&state, &args);
    assert!(!again.status.success());
    assert!(text(&again).contains("already running"), "{}", text(&again));

    eventually(
        "3 signers and the validator at head >= 10",
        Duration::from_secs(90),
        || async {
            let out = devnet(&state, &["status"]);
            let heads: Vec<u64> = text(&out)
                .lines()
                .filter(|l| l.starts_with("signer-") || l.starts_with("validator-"))
                .filter_map(|l| l.split_whitespace().nth(3)?.parse().ok())
                .collect();
            Ok((heads.len() == 4 && heads.iter().all(|h| *h >= 10)).then_some(()))
        },
    )
    .await?;

    // The validator's RPC serves users.
    let (code, body) = testnet::http_post_json(
        format!("127.0.0.1:{}", http_base + 3).parse()?,
        r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#,
    )
    .await?;
    assert!(
        code == 200 && body.contains("\"result\":\"0x"),
        "{code} {body}"
    );

    // The dashboard shows the four nodes, reported by their agents.
    let dashboard_addr: std::net::SocketAddr = format!("127.0.0.1:{dashboard}").parse()?;
    assert!(
        text(&up).contains(&format!("dashboard: http://127.0.0.1:{dashboard}/")),
        "{}",
        text(&up)
    );
    eventually(
        "4 nodes on the dashboard",
        Duration::from_secs(60),
        || async move {
            let (_, body) = http_get(dashboard_addr, "/api/state").await?;
            let state: serde_json::Value = serde_json::from_str(&body)?;
            let online = state["nodes"]
                .as_array()
                .map_or(0, |n| n.iter().filter(|n| n["online"] == true).count());
            Ok((online == 4).then_some(()))
        },
    )
    .await?;

    // The HTTPS gateway: the MetaMask values are printed, and it answers
    // eth_chainId with a certificate checked against the devnet's CA.
    let gateway_url = format!("https://localhost:{gateway}");
    assert!(
        up_text.contains(&format!("New RPC URL:     {gateway_url}"))
            && up_text.contains("Chain ID:        1337"),
        "{up_text}"
    );
    let ca = state.join("ca/ca.pem");
    eventually(
        "eth_chainId through the gateway",
        Duration::from_secs(90),
        || {
            let (ca, url) = (ca.clone(), gateway_url.clone());
            async move {
                let out = tokio::process::Command::new("curl")
                    .args(["-s", "--max-time", "5", "--cacert"])
                    .arg(&ca)
                    .args(["-H", "content-type: application/json", "-d"])
                    .arg(r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}"#)
                    .arg(&url)
                    .output()
                    .await?;
                Ok(String::from_utf8_lossy(&out.stdout)
                    .contains(r#""result":"0x539""#)
                    .then_some(()))
            }
        },
    )
    .await?;

    // The Solidity page with its compiler and the development accounts on.
    let (code, body) = http_get(dashboard_addr, "/solidity/config").await?;
    let config: serde_json::Value = serde_json::from_str(&body)?;
    assert!(
        code == 200 && config["compiler"].is_string(),
        "{code} {body}"
    );
    let network: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        state.join("network/network.json"),
    )?)?;
    let lower = |v: &serde_json::Value| v.as_str().map(str::to_lowercase);
    assert_eq!(
        lower(&config["devAccounts"][0]["address"]),
        lower(&network["accounts"][0]["address"]),
        "{body}"
    );

    let down = devnet(&state, &["down"]);
    assert!(down.status.success(), "{}", text(&down));
    assert_eq!(
        text(&down).matches("stopped cleanly").count(),
        4,
        "{}",
        text(&down)
    );
    for i in 1..=3 {
        let log = std::fs::read_to_string(state.join(format!("logs/signer-{i}.geth.json")))?;
        let last = log.lines().last().unwrap_or_default();
        assert!(
            last.contains("Blockchain stopped"),
            "signer-{i} ends with {last}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn both_chains_run_side_by_side_each_with_its_gateway() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("devnet");
    // mainnetsidechain takes the p2p/http/agent ports + 100 and the
    // dashboard/gateway ports + 1.
    let [http, p2p, agent, dashboard, gateway] = [
        free_port_range(102)?,
        free_port_range(102)?,
        free_port_range(102)?,
        free_port_range(2)?,
        free_port_range(2)?,
    ];
    let ports = [http, p2p, agent, dashboard, gateway].map(|p| p.to_string());
    let up = devnet(
        &state,
        &[
            "up",
            "both",
            "--detach",
            "--signers",
            "1",
            "--period",
            "1",
            "--http-port",
            &ports[0],
            "--p2p-port",
            &ports[1],
            "--agent-port",
            &ports[2],
            "--dashboard-port",
            &ports[3],
            "--gateway-port",
            &ports[4],
        ],
    );
    let _down = Down(state.clone());
    let up_text = text(&up);
    assert!(up.status.success(), "{up_text}");
    let ca = state.join("ca/ca.pem");
    for (chain, id, port) in [
        ("testnetsidechain", 1337u64, gateway),
        ("mainnetsidechain", 1338, gateway + 1),
    ] {
        let url = format!("https://localhost:{port}");
        assert!(
            up_text.contains(&format!("Network name:    {chain}"))
                && up_text.contains(&format!("New RPC URL:     {url}"))
                && up_text.contains(&format!("Chain ID:        {id}")),
            "{up_text}"
        );
        let expected = format!(r#""result":"{id:#x}""#);
        eventually(
            &format!("eth_chainId {id} from {url}"),
            Duration::from_secs(120),
            || {
                let (ca, url, expected) = (ca.clone(), url.clone(), expected.clone());
                async move {
                    let out = tokio::process::Command::new("curl")
                        .args(["-s", "--max-time", "5", "--cacert"])
                        .arg(&ca)
                        .args(["-H", "content-type: application/json", "-d"])
                        .arg(r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}"#)
                        .arg(&url)
                        .output()
                        .await?;
                    Ok(String::from_utf8_lossy(&out.stdout)
                        .contains(&expected)
                        .then_some(()))
                }
            },
        )
        .await?;
    }
    let status = text(&devnet(&state, &["status"]));
    assert!(
        status.contains("== testnetsidechain") && status.contains("== mainnetsidechain"),
        "{status}"
    );
    let down = devnet(&state, &["down"]);
    assert!(down.status.success(), "{}", text(&down));
    assert_eq!(
        text(&down).matches("stopped cleanly").count(),
        4,
        "{}",
        text(&down)
    );
    Ok(())
}
