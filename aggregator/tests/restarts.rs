//! Rolling restarts with real geth 1.13.15: 3 signers and 1 validator under
//! agents reporting to the aggregator. One network, scenarios in sequence (a
//! loaded machine runs one network at a time): operator endpoints without the
//! admin token, a quorum-breaking plan refused, an explicit order 2,3,1 that
//! survives an aggregator SIGKILL mid-run, then `auto` with a geth SIGKILL
//! mid-step and a resume. Throughout: no block lost, no gap between blocks
//! longer than 3 periods, every command run once.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use testnet::{
    eventually, free_ports, http_get, metric_value, sibling_binary, Launcher, NetworkOptions,
    TestNetwork,
};

const AGGREGATOR: &str = env!("CARGO_BIN_EXE_geth-aggregator");
const MINUTE: Duration = Duration::from_secs(60);
const PERIOD: u64 = 2;
const TOKEN: &str = "test-admin-token-0123456789abcdef";

struct Fixture {
    net: TestNetwork,
    addr: SocketAddr,
    db: PathBuf,
    token_file: PathBuf,
    http: reqwest::Client,
}

impl Fixture {
    fn start_aggregator(&mut self) -> Result<u32> {
        let mut cmd = self
            .net
            .aggregator_command(Path::new(AGGREGATOR), self.addr, &self.db);
        cmd.arg("--admin-token-file").arg(&self.token_file);
        self.net.spawn_other(0, cmd)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        let mut request = self.http.request(method, self.url(path)).bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let code = response.status().as_u16();
        Ok((code, response.json().await.unwrap_or_default()))
    }

    async fn plan(&self) -> Result<Value> {
        let (code, plan) = self
            .api(reqwest::Method::GET, "/api/restarts/latest", None)
            .await?;
        ensure!(code == 200, "latest plan {code}: {plan}");
        Ok(plan)
    }

    async fn wait_plan(
        &self,
        what: &str,
        timeout: Duration,
        f: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        eventually(what, timeout, || async {
            let plan = self.plan().await.ok();
            Ok(plan.filter(|p| f(p)))
        })
        .await
    }

    /// Every node online and ready, as the aggregator sees it.
    async fn all_ready(&self) -> Result<()> {
        let addr = self.addr;
        eventually("all 4 nodes ready", 4 * MINUTE, || async move {
            let (code, body) = http_get(addr, "/api/state").await?;
            ensure!(code == 200, "{body}");
            let s: Value = serde_json::from_str(&body)?;
            let ready = s["nodes"]
                .as_array()
                .context("nodes")?
                .iter()
                .filter(|n| n["online"] == true && n["ready"] == true)
                .count();
            Ok((ready == 4).then_some(()))
        })
        .await
    }

    fn socket(&self, i: usize) -> PathBuf {
        self.net.nodes[i].datadir.join("geth-agent/admin.sock")
    }

    async fn geth_pid(&self, i: usize) -> Result<Option<u64>> {
        let s = testnet::agent_status(&self.socket(i)).await?;
        Ok((s["status"]["phase"] == "running")
            .then(|| s["status"]["pid"].as_u64())
            .flatten())
    }

    /// Command events (node name, command id, outcome) in the order stored.
    async fn command_events(&self) -> Result<Vec<(String, String, Value)>> {
        let (code, body) = http_get(self.addr, "/api/events").await?;
        ensure!(code == 200, "{body}");
        let events: Vec<Value> = serde_json::from_str(&body)?;
        let mut out: Vec<(u64, String, String, Value)> = events
            .iter()
            .filter(|e| e["event"]["kind"]["kind"] == "command")
            .map(|e| {
                (
                    e["event"]["at_ms"].as_u64().unwrap_or(0),
                    e["name"].as_str().unwrap_or_default().to_owned(),
                    e["event"]["kind"]["id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    e["event"]["kind"]["outcome"].clone(),
                )
            })
            .collect();
        out.sort_by_key(|e| e.0);
        Ok(out.into_iter().map(|(_, n, i, o)| (n, i, o)).collect())
    }
}

fn names(plan: &Value) -> Vec<String> {
    plan["steps"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|s| s["node"]["name"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn phase(plan: &Value, step: usize) -> String {
    plan["steps"][step]["phase"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The commands of plan `id`, in the order they ran: (node, attempt).
fn of_plan(events: &[(String, String, Value)], id: u64) -> Vec<(String, String, Value)> {
    let prefix = format!("restart-{id}-");
    events
        .iter()
        .filter(|(_, cid, _)| cid.starts_with(&prefix))
        .cloned()
        .collect()
}

fn assert_clean(events: &[(String, String, Value)]) {
    for (node, id, outcome) in events {
        assert_eq!(outcome["outcome"], "restarting", "{node} {id}: {outcome}");
        assert_eq!(outcome["verdict"]["clean"], true, "{node} {id}: {outcome}");
    }
}

async fn block(net: &TestNetwork, i: usize, n: u64) -> Result<Value> {
    let rpc = net.nodes[i].rpc().await?;
    let b: Option<Value> = rpc
        .call("eth_getBlockByNumber", (format!("{n:#x}"), false))
        .await?;
    b.with_context(|| format!("block {n} on node {i}"))
}

fn hex_u64(v: &Value) -> u64 {
    v.as_str()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn rolling_restarts_keep_order_quorum_and_every_block() -> Result<()> {
    let port = free_ports(1)?[0];
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let options = NetworkOptions {
        signers: 3,
        validators: 1,
        period: PERIOD,
        launcher: Launcher::Agent(sibling_binary("geth-agent")),
        agent_args: vec!["--aggregator".into(), format!("http://{addr}")],
        ..Default::default()
    };
    let net = TestNetwork::generate(&options)?;
    let db = net.path().join("aggregator.db");
    let token_file = net.path().join("admin-token");
    std::fs::write(&token_file, format!("{TOKEN}\n"))?;
    let mut fx = Fixture {
        net,
        addr,
        db,
        token_file,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()?,
    };
    let mut aggregator = fx.start_aggregator()?;
    for i in 0..fx.net.nodes.len() {
        fx.net.spawn(i)?;
    }
    fx.all_ready().await?;
    let first_block = fx.net.head(0).await?;

    // 1. Without the admin token every operator endpoint answers 401.
    let endpoints = [
        ("POST", "/api/restarts", r#"{"auto":true}"#),
        ("GET", "/api/restarts", ""),
        ("GET", "/api/restarts/latest", ""),
        ("POST", "/api/restarts/latest/abort", ""),
        ("POST", "/api/restarts/latest/resume", ""),
    ];
    for (method, path, body) in endpoints {
        for auth in [None, Some("Bearer wrong-token")] {
            let mut r = fx
                .http
                .request(method.parse()?, fx.url(path))
                .body(body.to_owned())
                .header("content-type", "application/json");
            if let Some(auth) = auth {
                r = r.header("authorization", auth);
            }
            let code = r.send().await?.status().as_u16();
            assert_eq!(code, 401, "{method} {path} with {auth:?}");
        }
    }
    let (code, _) = fx
        .api(reqwest::Method::GET, "/api/restarts/latest", None)
        .await?;
    assert_eq!(code, 404, "nothing was planned");

    // 2. A signer already down: a plan restarting another signer is refused.
    let (code, body) =
        geth_agent::ctl::request(&fx.socket(1), hyper::Method::POST, "/stop", None).await?;
    ensure!(code.is_success(), "stop signer-2: {body}");
    let fx_ref = &fx;
    eventually("signer-2 seen down", 2 * MINUTE, || async move {
        let (code, body) = http_get(fx_ref.addr, "/api/state").await?;
        ensure!(code == 200);
        let s: Value = serde_json::from_str(&body)?;
        let down = s["nodes"]
            .as_array()
            .context("nodes")?
            .iter()
            .any(|n| n["name"] == "signer-2" && n["ready"] == false);
        Ok(down.then_some(()))
    })
    .await?;
    for body in [
        serde_json::json!({"order": ["1"]}),
        serde_json::json!({"auto": true}),
    ] {
        let (code, reply) = fx
            .api(reqwest::Method::POST, "/api/restarts", Some(body))
            .await?;
        assert_eq!(code, 422, "{reply}");
        let reason = reply["error"].as_str().unwrap_or_default();
        assert!(
            reason.contains("below the clique quorum 2")
                && reason.contains("already down: signer-2"),
            "{reason}"
        );
    }
    let (code, body) =
        geth_agent::ctl::request(&fx.socket(1), hyper::Method::POST, "/start", None).await?;
    ensure!(code.is_success(), "start signer-2: {body}");
    fx.all_ready().await?;
    assert!(fx.command_events().await?.is_empty(), "nothing was touched");

    // 3. Explicit order 2,3,1 through the CLI, the aggregator SIGKILLed mid-run.
    let pre_head = fx.net.head(0).await?;
    let mut pre_hashes = Vec::new();
    for n in 0..=pre_head {
        pre_hashes.push(fx.net.block_hash(0, n).await?);
    }
    let cli_out = fx.net.path().join("restart-cli.out");
    let mut cli = std::process::Command::new(AGGREGATOR)
        .args([
            "restart",
            "--url",
            &format!("http://{addr}"),
            "--order",
            "2,3,1",
        ])
        .arg("--admin-token-file")
        .arg(&fx.token_file)
        .stdout(std::fs::File::create(&cli_out)?)
        .stderr(std::process::Stdio::inherit())
        .spawn()?;
    let run_started = Instant::now();
    let plan = fx
        .wait_plan("step 2 (signer-3) under way", 6 * MINUTE, |p| {
            p["current"] == 1
                && ["stopping", "returning", "sealing"].contains(&phase(p, 1).as_str())
        })
        .await?;
    let plan_a = plan["id"].as_u64().context("plan id")?;
    assert_eq!(names(&plan), ["signer-2", "signer-3", "signer-1"]);
    kill(Pid::from_raw(aggregator as i32), Signal::SIGKILL)?;
    eventually("the old aggregator gone", MINUTE, || async move {
        Ok(http_get(addr, "/livez").await.is_err().then_some(()))
    })
    .await?;
    aggregator = fx.start_aggregator()?;
    let done = fx
        .wait_plan("plan A done", 12 * MINUTE, |p| p["state"] != "running")
        .await?;
    assert_eq!(done["state"], "done", "{done}");
    let status = eventually("the CLI to end", 2 * MINUTE, || {
        let polled = cli.try_wait().map_err(anyhow::Error::from);
        async move { polled }
    })
    .await?;
    let printed = std::fs::read_to_string(&cli_out)?;
    println!("{printed}");
    assert!(status.success(), "restart CLI: {status}\n{printed}");
    for line in [
        "signer-2: restart sent",
        "signer-3: clean shutdown",
        "signer-1: sealed a block again",
        "done: 3/3 nodes restarted",
    ] {
        assert!(
            printed.contains(line),
            "CLI progress lacks {line:?}:\n{printed}"
        );
    }
    println!("plan A took {:?}", run_started.elapsed());
    let events = of_plan(&fx.command_events().await?, plan_a);
    let order: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        order,
        ["signer-2", "signer-3", "signer-1"],
        "each once, in order: {events:?}"
    );
    assert_clean(&events);

    // 4. Auto order; geth of the second node SIGKILLed mid-step; resume.
    fx.all_ready().await?;
    let before_pid = fx.geth_pid(1).await?.context("signer-2 geth pid")?;
    let (code, plan) = fx
        .api(
            reqwest::Method::POST,
            "/api/restarts",
            Some(serde_json::json!({"auto": true})),
        )
        .await?;
    assert_eq!(code, 201, "{plan}");
    let plan_b = plan["id"].as_u64().context("plan id")?;
    assert_eq!(
        names(&plan),
        ["validator-1", "signer-2", "signer-3", "signer-1"]
    );
    let fx_ref = &fx;
    let killed = eventually("signer-2's new geth under way", 8 * MINUTE, || async move {
        let plan = fx_ref.plan().await?;
        if plan["current"] != 1 || !["returning", "sealing"].contains(&phase(&plan, 1).as_str()) {
            return Ok(None);
        }
        Ok(fx_ref.geth_pid(1).await?.filter(|pid| *pid != before_pid))
    })
    .await?;
    kill(Pid::from_raw(killed as i32), Signal::SIGKILL)?;
    let failed = fx
        .wait_plan("plan B failed", 3 * MINUTE, |p| p["state"] != "running")
        .await?;
    assert_eq!(failed["state"], "failed", "{failed}");
    let reason = failed["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("signer-2: unclean shutdown"), "{reason}");
    for later in [2, 3] {
        assert_eq!(phase(&failed, later), "pending", "{failed}");
        assert!(failed["steps"][later]["command_id"].is_null(), "{failed}");
    }
    let (_, metrics) = http_get(addr, "/metrics").await?;
    assert_eq!(
        metric_value(&metrics, "clique_fleet_restart_plan{state=\"failed\"}"),
        Some(1.0)
    );
    // Nothing after the failed step is touched while the run stands.
    fx.all_ready().await?;
    let (code, status) = fx
        .api(reqwest::Method::POST, "/api/restarts/latest/resume", None)
        .await?;
    assert_eq!(code, 200, "{status}");
    let done = fx
        .wait_plan("plan B done", 12 * MINUTE, |p| p["state"] != "running")
        .await?;
    assert_eq!(done["state"], "done", "{done}");
    let events = of_plan(&fx.command_events().await?, plan_b);
    let order: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        order,
        [
            "validator-1",
            "signer-2",
            "signer-2",
            "signer-3",
            "signer-1"
        ],
        "in order; signer-2 again after the resume: {events:?}"
    );
    assert_clean(&events);
    let (_, metrics) = http_get(addr, "/metrics").await?;
    assert_eq!(
        metric_value(&metrics, "clique_fleet_restart_plan{state=\"done\"}"),
        Some(1.0)
    );

    // 5. No block lost; the chain kept sealing; every head past the old one.
    for i in 0..4 {
        let head = fx.net.head(i).await?;
        assert!(head > pre_head, "node {i} head {head} <= {pre_head}");
        for (n, hash) in pre_hashes.iter().enumerate() {
            assert_eq!(
                fx.net.block_hash(i, n as u64).await?,
                *hash,
                "node {i} block {n}"
            );
        }
    }
    let last = fx.net.head(0).await?;
    let mut previous = hex_u64(&block(&fx.net, 0, first_block).await?["timestamp"]);
    let mut worst = 0;
    for n in first_block + 1..=last {
        let t = hex_u64(&block(&fx.net, 0, n).await?["timestamp"]);
        worst = worst.max(t.saturating_sub(previous));
        previous = t;
    }
    println!("blocks {first_block}..={last}: longest gap {worst} s");
    assert!(worst <= 3 * PERIOD, "a gap of {worst} s between blocks");
    let _ = aggregator;
    Ok(())
}
