//! The HTTPS JSON-RPC gateway with real geth 1.13.15 networks, real agents
//! reporting readiness and a real aggregator: the allow-list and its rules,
//! body, batch and rate limits, CORS, WebSocket subscriptions, zero gas
//! through ethers.js, spreading over ready nodes only, and failover.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use testnet::{
    eventually, free_ports, http_get, sibling_binary, workspace_root, Launcher, NetworkOptions,
    TestNetwork,
};

const AGGREGATOR: &str = env!("CARGO_BIN_EXE_geth-aggregator");
const MINUTE: Duration = Duration::from_secs(60);

/// A local CA and a certificate for localhost / 127.0.0.1 signed by it.
struct Tls {
    ca_pem: PathBuf,
    ca_der: Vec<u8>,
    cert: PathBuf,
    key: PathBuf,
}

fn make_tls(dir: &Path) -> Result<Tls> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "gateway test CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate()?;
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?
        .signed_by(&leaf_key, &issuer)?;
    let tls = Tls {
        ca_pem: dir.join("ca.pem"),
        ca_der: ca.der().to_vec(),
        cert: dir.join("gateway.pem"),
        key: dir.join("gateway.key"),
    };
    std::fs::write(&tls.ca_pem, ca.pem())?;
    std::fs::write(&tls.cert, leaf.pem())?;
    std::fs::write(&tls.key, leaf_key.serialize_pem())?;
    Ok(tls)
}

struct Setup {
    net: TestNetwork,
    tls: Tls,
    gateway: SocketAddr,
    dashboard: SocketAddr,
    /// Agent process of each validator (by node index).
    agents: Vec<(usize, u32)>,
}

/// One signer and `validators` non-signer nodes, each under its agent
/// reporting to an aggregator that serves the gateway. Validators serve
/// WebSocket on their HTTP port and log every call they serve (`Served …`),
/// so the tests can see on the nodes' side who was asked.
async fn start(validators: usize, not_ready: &[usize], gateway_args: &[&str]) -> Result<Setup> {
    let ports = free_ports(2)?;
    let dashboard: SocketAddr = ([127, 0, 0, 1], ports[0]).into();
    let gateway: SocketAddr = ([127, 0, 0, 1], ports[1]).into();
    let agent = sibling_binary("geth-agent");
    let options = NetworkOptions {
        signers: 1,
        validators,
        period: 1,
        launcher: Launcher::Agent(agent.clone()),
        agent_args: vec!["--aggregator".into(), format!("http://{dashboard}")],
        ..Default::default()
    };
    let mut net = TestNetwork::generate(&options)?;
    let tls = make_tls(net.path())?;
    let db = net.path().join("aggregator.db");
    let mut cmd = net.aggregator_command(Path::new(AGGREGATOR), dashboard, &db);
    cmd.arg("--gateway-listen")
        .arg(gateway.to_string())
        .arg("--gateway-cert")
        .arg(&tls.cert)
        .arg("--gateway-key")
        .arg(&tls.key)
        .arg("--gateway-public-url")
        .arg(format!("https://localhost:{}", gateway.port()))
        .args(gateway_args);
    net.spawn_other(0, cmd)?;
    net.spawn(0)?;
    let mut agents = Vec::new();
    for i in 1..net.nodes.len() {
        let http = net.nodes[i].info.ports.http.to_string();
        let mut extra = Vec::new();
        if not_ready.contains(&i) {
            extra.extend(["--min-peers", "99"]);
        }
        extra.extend([
            "--",
            "--ws",
            "--ws.addr",
            "127.0.0.1",
            "--ws.port",
            &http,
            "--ws.api",
            "eth,net,web3",
            "--log.vmodule",
            "rpc/*=5",
        ]);
        let cmd = net.agent_command(i, &agent, &extra);
        agents.push((i, net.spawn_other(i, cmd)?));
    }
    Ok(Setup {
        net,
        tls,
        gateway,
        dashboard,
        agents,
    })
}

/// An HTTPS client that trusts only the test CA, from `local` (a loopback
/// address: the rate limit is per client IP).
fn client(tls: &Tls, gateway: SocketAddr, local: IpAddr) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_der(&tls.ca_der)?)
        .resolve("localhost", gateway)
        .local_address(local)
        .timeout(MINUTE)
        .build()?)
}

fn url(gateway: SocketAddr) -> String {
    format!("https://localhost:{}/", gateway.port())
}

async fn call(
    c: &reqwest::Client,
    gateway: SocketAddr,
    body: &Value,
) -> Result<(u16, Value, Option<String>)> {
    let r = c.post(url(gateway)).json(body).send().await?;
    let status = r.status().as_u16();
    let node = r
        .headers()
        .get("x-gateway-node")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = r.text().await?;
    let value = serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))?;
    Ok((status, value, node))
}

fn rpc(method: &str, params: Value) -> Value {
    let mut call = json!({"jsonrpc": "2.0", "id": 7, "method": method});
    call["params"] = params;
    call
}

/// Waits until the aggregator sees the nodes with these readiness values.
async fn wait_ready(s: &Setup, want: &[(usize, bool)]) -> Result<()> {
    let dashboard = s.dashboard;
    let names: Vec<(String, bool)> = want
        .iter()
        .map(|(i, r)| (s.net.nodes[*i].info.name.clone(), *r))
        .collect();
    eventually(
        "the agents' readiness at the aggregator",
        4 * MINUTE,
        || {
            let names = names.clone();
            async move {
                let (code, body) = http_get(dashboard, "/api/state").await?;
                ensure!(code == 200, "{code}");
                let state: Value = serde_json::from_str(&body)?;
                let nodes = state["nodes"].as_array().context("nodes")?;
                let ok = names.iter().all(|(name, ready)| {
                    nodes.iter().any(|n| {
                        n["name"] == name.as_str() && n["online"] == true && n["ready"] == *ready
                    })
                });
                Ok(ok.then_some(()))
            }
        },
    )
    .await
}

fn served(s: &Setup, i: usize, method: &str) -> usize {
    let log = std::fs::read_to_string(s.net.nodes[i].datadir.join("geth-agent/geth.log"))
        .unwrap_or_default();
    log.lines()
        .filter(|l| l.contains(&format!("\"msg\":\"Served {method}\"")))
        .count()
}

#[tokio::test]
async fn the_gateway_serves_wallets_refuses_the_rest_and_limits_clients() -> Result<()> {
    let s = start(
        1,
        &[],
        &[
            "--gateway-max-body-bytes",
            "4096",
            "--gateway-max-batch",
            "10",
            "--gateway-rate",
            "5",
            "--gateway-burst",
            "60",
            "--gateway-max-log-blocks",
            "50",
            "--gateway-max-ws-per-client",
            "1",
            "--gateway-cors-origin",
            "http://allowed.test",
        ],
    )
    .await?;
    wait_ready(&s, &[(1, true)]).await?;
    let gw = s.gateway;
    let c = client(&s.tls, gw, [127, 0, 0, 1].into())?;

    // HTTPS verified against the CA only; the chain id of this network.
    let (status, v, node) = call(&c, gw, &rpc("eth_chainId", json!([]))).await?;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"], format!("{:#x}", s.net.network.chain_id), "{v}");
    assert_eq!(node.as_deref(), Some(s.net.nodes[1].info.name.as_str()));
    // On the node's side (a method its agent never calls).
    let (_, v, _) = call(&c, gw, &rpc("web3_sha3", json!(["0x01"]))).await?;
    assert!(v["result"].is_string(), "{v}");
    eventually("the validator's log of the call", MINUTE, || async {
        Ok((served(&s, 1, "web3_sha3") == 1).then_some(()))
    })
    .await?;

    // Zero gas: geth advises 1 wei; the gateway advises the fleet's floor, 0.
    let direct = reqwest::Client::new()
        .post(s.net.nodes[1].http_url())
        .json(&rpc("eth_gasPrice", json!([])))
        .send()
        .await?
        .json::<Value>()
        .await?;
    assert_eq!(direct["result"], "0x1", "{direct}");
    for m in ["eth_gasPrice", "eth_maxPriorityFeePerGas"] {
        let (_, v, _) = call(&c, gw, &rpc(m, json!([]))).await?;
        assert_eq!(v["result"], "0x0", "{m}: {v}");
    }

    // ethers.js (pinned npm) as a wallet: fee data from the gateway, signed
    // locally, sent raw over HTTPS verified against the CA; mined, and the
    // sender paid only the value.
    let account = s.net.network.accounts.first().context("a funded account")?;
    let password = std::fs::read_to_string(s.net.network_dir.join("accounts/password"))?;
    let key = alloy::signers::local::PrivateKeySigner::decrypt_keystore(
        s.net.network_dir.join(&account.keystore),
        password.trim(),
    )?;
    let script = workspace_root().join("tests/browser/wallet.mjs");
    let out = tokio::process::Command::new("node")
        .arg(&script)
        .arg(format!("https://localhost:{}", gw.port()))
        .arg("0x000000000000000000000000000000000000dEaD")
        .env("NODE_EXTRA_CA_CERTS", &s.tls.ca_pem)
        .env("WALLET_KEY", format!("0x{}", hex::encode(key.to_bytes())))
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "wallet.mjs failed ({}): {stdout} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())?;
    assert_eq!(
        result["chainId"],
        s.net.network.chain_id.to_string(),
        "{result}"
    );
    assert_eq!(result["advisedGasPrice"], "0", "{result}");
    assert_eq!(result["txGasPrice"], "0", "{result}");
    assert_eq!(result["type"], 0, "{result}");
    assert_eq!(result["status"], 1, "{result}");
    assert_eq!(result["paid"], result["value"], "{result}");
    assert!(served(&s, 1, "eth_sendRawTransaction") > 0);

    // Every refused method names its rule.
    for (method, rule) in [
        ("eth_sendTransaction", "node-accounts"),
        ("eth_sign", "node-accounts"),
        ("personal_listAccounts", "node-accounts"),
        ("admin_peers", "operator-namespaces"),
        ("miner_start", "operator-namespaces"),
        ("clique_getSigners", "operator-namespaces"),
        ("debug_traceBlockByNumber", "operator-namespaces"),
        ("txpool_content", "operator-namespaces"),
        ("eth_newFilter", "stateful-filters"),
        ("eth_subscribe", "subscriptions"),
    ] {
        let (status, v, node) = call(&c, gw, &rpc(method, json!(["newHeads"]))).await?;
        assert_eq!(status, 200);
        assert_eq!(v["id"], 7, "{v}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("gateway rule: {rule}")),
            "{method}: {v}"
        );
        assert_eq!(node, None, "{method} reached a node");
    }
    assert_eq!(served(&s, 1, "debug_traceBlockByNumber"), 0);

    // eth_getLogs: a bounded range passes, a wide one is refused.
    let (_, v, _) = call(
        &c,
        gw,
        &rpc(
            "eth_getLogs",
            json!([{"fromBlock": "0x0", "toBlock": "0x31"}]),
        ),
    )
    .await?;
    assert!(v["result"].is_array(), "{v}");
    let (_, v, _) = call(
        &c,
        gw,
        &rpc(
            "eth_getLogs",
            json!([{"fromBlock": "0x0", "toBlock": "0x32"}]),
        ),
    )
    .await?;
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("gateway rule: log-range")),
        "{v}"
    );

    // Body and batch limits answer with JSON-RPC errors.
    let big = rpc(
        "eth_call",
        json!([{"data": format!("0x{}", "00".repeat(4096))}, "latest"]),
    );
    let (status, v, _) = call(&c, gw, &big).await?;
    assert_eq!(status, 413);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("body-size"),
        "{v}"
    );
    let batch: Vec<Value> = (0..11)
        .map(|i| json!({"jsonrpc":"2.0","id":i,"method":"eth_blockNumber"}))
        .collect();
    let (status, v, _) = call(&c, gw, &Value::Array(batch)).await?;
    assert_eq!(status, 413);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("batch-size"),
        "{v}"
    );
    // A good batch keeps the client's ids and mixes node and gateway answers.
    let batch = json!([
        {"jsonrpc":"2.0","id":"a","method":"eth_blockNumber"},
        {"jsonrpc":"2.0","id":"b","method":"admin_peers"},
        {"jsonrpc":"2.0","id":"c","method":"eth_gasPrice"},
    ]);
    let (status, v, _) = call(&c, gw, &batch).await?;
    assert_eq!(status, 200);
    assert_eq!(v[0]["id"], "a");
    assert!(
        v[0]["result"].as_str().is_some_and(|r| r.starts_with("0x")),
        "{v}"
    );
    assert_eq!(v[1]["id"], "b");
    assert!(v[1]["error"].is_object(), "{v}");
    assert_eq!(v[2]["result"], "0x0", "{v}");

    // CORS: the allowed origin gets its preflight answered, another does not.
    let preflight = |origin: &'static str| {
        c.request(reqwest::Method::OPTIONS, url(gw))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let ok = preflight("http://allowed.test").await?;
    assert!(ok.status().is_success(), "{}", ok.status());
    assert_eq!(
        ok.headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("http://allowed.test")
    );
    let other = preflight("http://other.test").await?;
    assert!(other.headers().get("access-control-allow-origin").is_none());

    // WebSocket: newHeads notifications arrive; other subscriptions are refused.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(
        s.tls.ca_der.clone(),
    ))?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let config = Arc::new(config);
    let open = || {
        let config = config.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(gw).await?;
            anyhow::Ok(
                tokio_tungstenite::client_async_tls_with_config(
                    format!("wss://localhost:{}/", gw.port()),
                    tcp,
                    None,
                    Some(tokio_tungstenite::Connector::Rustls(config)),
                )
                .await,
            )
        }
    };
    let (mut ws, _) = open().await??;
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::Text(
        rpc("eth_subscribe", json!(["newPendingTransactions"]))
            .to_string()
            .into(),
    ))
    .await?;
    let refused: Value = next_json(&mut ws).await?;
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("gateway rule: subscriptions"),
        "{refused}"
    );
    ws.send(Message::Text(
        rpc("eth_subscribe", json!(["newHeads"])).to_string().into(),
    ))
    .await?;
    let subscribed = next_json(&mut ws).await?;
    assert!(subscribed["result"].is_string(), "{subscribed}");
    let head = next_json(&mut ws).await?;
    assert_eq!(head["method"], "eth_subscription", "{head}");
    assert!(head["params"]["result"]["number"].is_string(), "{head}");
    // One WebSocket per client here: a second is refused while it is open.
    match open().await? {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 429),
        other => panic!("a second WebSocket was not refused: {other:?}"),
    }
    drop(ws);

    // A burst over the rate limit gets JSON-RPC errors while another client
    // keeps being served.
    let greedy = client(&s.tls, gw, [127, 0, 0, 3].into())?;
    let polite = client(&s.tls, gw, [127, 0, 0, 2].into())?;
    // The burst goes back to back over one connection: far faster than the
    // 5 calls/s refill, whatever the machine's load.
    let block_number = rpc("eth_blockNumber", json!([]));
    let burst = async {
        let mut answers = Vec::new();
        for _ in 0..150 {
            answers.push(call(&greedy, gw, &block_number).await);
        }
        answers
    };
    let polite_calls = async {
        let mut answers = Vec::new();
        for _ in 0..5 {
            answers.push(call(&polite, gw, &block_number).await);
        }
        answers
    };
    let (burst, polite_answers) = tokio::join!(burst, polite_calls);
    let mut limited = 0;
    let mut served_ok = 0;
    for r in burst {
        let (status, v, _) = r?;
        if status == 429 {
            assert!(
                v["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("gateway rule: rate-limit"),
                "{v}"
            );
            limited += 1;
        } else if v["result"].is_string() {
            served_ok += 1;
        }
    }
    assert!(
        limited >= 50 && served_ok >= 60,
        "limited {limited}, served {served_ok}"
    );
    for answer in polite_answers {
        let (status, v, _) = answer?;
        assert_eq!(status, 200, "{v}");
        assert!(v["result"].is_string(), "{v}");
    }

    // Metrics per method and outcome at the aggregator.
    let (_, metrics) = http_get(s.dashboard, "/metrics").await?;
    for series in [
        r#"clique_gateway_calls_total{method="eth_chainId",outcome="ok"}"#,
        r#"clique_gateway_calls_total{method="eth_blockNumber",outcome="limited"}"#,
        r#"clique_gateway_calls_total{method="other",outcome="refused"}"#,
        r#"clique_gateway_calls_total{method="eth_sendRawTransaction",outcome="ok"}"#,
    ] {
        assert!(metrics.contains(series), "{series} missing");
    }
    Ok(())
}

async fn next_json<S>(ws: &mut S) -> Result<Value>
where
    S: futures_util::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
{
    loop {
        let frame = tokio::time::timeout(MINUTE, ws.next())
            .await
            .context("no WebSocket frame within a minute")?
            .context("WebSocket closed")??;
        if let tokio_tungstenite::tungstenite::Message::Text(t) = frame {
            return Ok(serde_json::from_str(&t)?);
        }
    }
}

#[tokio::test]
async fn the_gateway_uses_only_ready_nodes_and_fails_over() -> Result<()> {
    // v1 and v2 ready; v3 never (it wants 99 peers).
    let s = start(3, &[3], &["--gateway-rate", "0"]).await?;
    wait_ready(&s, &[(1, true), (2, true), (3, false)]).await?;
    let gw = s.gateway;
    let c = client(&s.tls, gw, [127, 0, 0, 1].into())?;
    let names: Vec<String> = s.net.nodes.iter().map(|n| n.info.name.clone()).collect();

    // Spread over the ready nodes; the not-ready one is never asked.
    let mut by_node = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..20 {
        let (status, v, node) =
            call(&c, gw, &rpc("web3_sha3", json!([format!("0x{i:02x}")]))).await?;
        assert_eq!(status, 200, "{v}");
        assert!(v["result"].is_string(), "{v}");
        *by_node.entry(node.context("answering node")?).or_default() += 1;
    }
    assert!(
        by_node.get(&names[1]).is_some_and(|n| *n > 0)
            && by_node.get(&names[2]).is_some_and(|n| *n > 0),
        "{by_node:?}"
    );
    assert!(!by_node.contains_key(&names[3]), "{by_node:?}");
    // On the nodes' side: the ready ones served web3_sha3, the other none.
    eventually("the ready nodes' logs", MINUTE, || async {
        Ok((served(&s, 1, "web3_sha3") > 0 && served(&s, 2, "web3_sha3") > 0).then_some(()))
    })
    .await?;
    assert_eq!(
        served(&s, 3, "web3_sha3"),
        0,
        "the not-ready node was asked"
    );

    // Stop the node that served the last request: the next read still works.
    let (_, _, last) = call(&c, gw, &rpc("eth_blockNumber", json!([]))).await?;
    let last = last.context("answering node")?;
    let i = names
        .iter()
        .position(|n| *n == last)
        .context("known node")?;
    let (_, pid) = *s.agents.iter().find(|(n, _)| *n == i).context("agent")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let port = s.net.nodes[i].info.ports.http;
    eventually(
        &format!("{last}'s RPC port to close"),
        2 * MINUTE,
        || async move {
            Ok(tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
                .then_some(()))
        },
    )
    .await?;
    for _ in 0..6 {
        let (status, v, node) = call(&c, gw, &rpc("eth_blockNumber", json!([]))).await?;
        assert_eq!(status, 200, "{v}");
        assert!(
            v["result"].is_string(),
            "read failed after {last} stopped: {v}"
        );
        assert_ne!(node.as_deref(), Some(last.as_str()));
        assert_ne!(node.as_deref(), Some(names[3].as_str()));
    }
    Ok(())
}

#[tokio::test]
async fn the_dashboard_adds_the_chain_to_a_wallet_and_cors_holds_in_chromium() -> Result<()> {
    let origins = free_ports(2)?;
    let allowed = format!("http://127.0.0.1:{}", origins[0]);
    let s = start(1, &[], &["--gateway-cors-origin", &allowed]).await?;
    wait_ready(&s, &[(1, true)]).await?;
    let gateway_url = format!("https://localhost:{}", s.gateway.port());
    let out = tokio::process::Command::new("node")
        .arg(workspace_root().join("tests/browser/wallet-button.mjs"))
        .arg(format!("http://{}/", s.dashboard))
        .arg(&gateway_url)
        .arg(&s.tls.cert)
        .arg(origins[0].to_string())
        .arg(origins[1].to_string())
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "wallet-button.mjs failed ({}): {stdout} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())?;
    let chain_id = s.net.network.chain_id;
    // The wallet received exactly this network's parameters, once.
    assert_eq!(
        result["requests"],
        json!([{
            "method": "wallet_addEthereumChain",
            "params": [{
                "chainId": format!("{chain_id:#x}"),
                "chainName": s.net.network.name,
                "rpcUrls": [gateway_url],
                "nativeCurrency": {"name": "ETH", "symbol": "ETH", "decimals": 18},
            }],
        }]),
        "{result}"
    );
    assert_eq!(result["valuesShownWithWallet"], false, "{result}");
    // Without a wallet: the values to copy.
    assert_eq!(
        result["values"],
        json!({
            "Network name": s.net.network.name,
            "RPC URL": gateway_url,
            "Chain ID": chain_id.to_string(),
            "Currency symbol": "ETH",
        }),
        "{result}"
    );
    // Only the allowed origin may read the gateway's answers.
    assert_eq!(
        result["cors"]["allowed"],
        format!("ok:{chain_id:#x}"),
        "{result}"
    );
    assert!(
        result["cors"]["other"]
            .as_str()
            .is_some_and(|t| t.starts_with("blocked:")),
        "{result}"
    );
    Ok(())
}

#[tokio::test]
async fn a_gateway_without_a_usable_certificate_is_a_configuration_error() -> Result<()> {
    let net = TestNetwork::generate(&NetworkOptions {
        signers: 1,
        ..Default::default()
    })?;
    let tls = make_tls(net.path())?;
    let garbage = net.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n")?;
    let port = free_ports(2)?;
    let cases: Vec<(Vec<PathBuf>, &str)> = vec![
        (vec![tls.cert.clone()], "--gateway-key"),
        (vec![garbage.clone(), tls.key.clone()], "garbage.pem"),
        // A key that does not belong to the certificate.
        (vec![tls.ca_pem.clone(), tls.key.clone()], "gateway"),
    ];
    for (files, expected) in cases {
        let mut cmd = net.aggregator_command(
            Path::new(AGGREGATOR),
            ([127, 0, 0, 1], port[0]).into(),
            &net.path().join("agg.db"),
        );
        cmd.arg("--gateway-listen")
            .arg(format!("127.0.0.1:{}", port[1]))
            .arg("--gateway-cert")
            .arg(&files[0]);
        if let Some(key) = files.get(1) {
            cmd.arg("--gateway-key").arg(key);
        }
        let out = tokio::process::Command::from(cmd).output().await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{files:?}: {stderr}");
        assert!(stderr.contains(expected), "{files:?}: {stderr}");
    }
    Ok(())
}
