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

    // Benchmark baseline: each of signer-2, signer-3, signer-1 alone, stopped,
    // started and resynced (ready, and sealing again) by hand, in this run.
    let mut singles = Duration::ZERO;
    for i in [1, 2, 0] {
        let took = single_restart(&fx, i).await?;
        println!("single restart of {}: {took:?}", fx.net.nodes[i].info.name);
        singles += took;
    }
    fx.all_ready().await?;

    // 3. Explicit order 2,3,1 through the CLI.
    let pre_head = fx.net.head(0).await?;
    let mut pre_hashes = Vec::new();
    for n in 0..=pre_head {
        pre_hashes.push(fx.net.block_hash(0, n).await?);
    }
    let cli_out = fx.net.path().join("restart-cli.out");
    let cli_err = fx.net.path().join("restart-cli.err");
    let run_started = Instant::now();
    // The plan counts nodes up exactly as the page shows them (all ready
    // above): it is accepted at the first try.
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
        .stderr(std::fs::File::create(&cli_err)?)
        .spawn()
        .map(KillOnDrop)?;
    let plan = eventually("plan A created", 2 * MINUTE, || {
        let exited = cli.0.try_wait().ok().flatten();
        let fx = &fx;
        let cli_err = &cli_err;
        async move {
            if let Some(status) = exited {
                let err = std::fs::read_to_string(cli_err).unwrap_or_default();
                return Ok(Some(Err(anyhow::anyhow!("restart CLI {status}: {err}"))));
            }
            Ok(fx
                .plan()
                .await
                .ok()
                .filter(|p| p["state"] == "running")
                .map(Ok))
        }
    })
    .await??;
    let plan_a = plan["id"].as_u64().context("plan id")?;
    assert_eq!(names(&plan), ["signer-2", "signer-3", "signer-1"]);
    let done = fx
        .wait_plan("plan A done", 12 * MINUTE, |p| p["state"] != "running")
        .await?;
    assert_eq!(done["state"], "done", "{done}");
    let status = eventually("the CLI to end", 2 * MINUTE, || {
        let polled = cli.0.try_wait().map_err(anyhow::Error::from);
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
    let whole = done["updated_ms"].as_u64().unwrap_or(0) - done["created_ms"].as_u64().unwrap_or(0);
    let whole = Duration::from_millis(whole);
    println!(
        "benchmark: rolling restart of 3 signers took {whole:?}; \
         single-node stop-start-resync times sum to {singles:?}; ratio {:.2} (target <= 1.5); CLI saw {:?}",
        whole.as_secs_f64() / singles.as_secs_f64(),
        run_started.elapsed()
    );
    let events = of_plan(&fx.command_events().await?, plan_a);
    let order: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        order,
        ["signer-2", "signer-3", "signer-1"],
        "each once, in order: {events:?}"
    );
    assert_clean(&events);
    let mut windows = vec![(pre_head, fx.net.head(0).await?)];

    // More rounds for the benchmark (`scripts/bench-restarts`): one round's
    // ratio swings with geth's 10 s forced sync cycle.
    let rounds: u32 = std::env::var("RESTART_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    let (mut wholes, mut all_singles) = (whole, singles);
    for round in 2..=rounds {
        fx.all_ready().await?;
        let mut round_singles = Duration::ZERO;
        for i in [1, 2, 0] {
            round_singles += single_restart(&fx, i).await?;
        }
        fx.all_ready().await?;
        let (code, plan) = fx
            .api(
                reqwest::Method::POST,
                "/api/restarts",
                Some(serde_json::json!({"order": ["2", "3", "1"]})),
            )
            .await?;
        assert_eq!(code, 201, "{plan}");
        let done = fx
            .wait_plan("a benchmark plan done", 12 * MINUTE, |p| {
                p["state"] != "running"
            })
            .await?;
        assert_eq!(done["state"], "done", "{done}");
        let ms =
            done["updated_ms"].as_u64().unwrap_or(0) - done["created_ms"].as_u64().unwrap_or(0);
        let round_whole = Duration::from_millis(ms);
        let created = done["created_ms"].as_u64().unwrap_or(0);
        for line in done["history"].as_array().into_iter().flatten() {
            let at = line["at_ms"].as_u64().unwrap_or(0).saturating_sub(created);
            println!(
                "benchmark round {round} +{:.1}s {}",
                at as f64 / 1000.0,
                line["text"]
            );
        }
        wholes += round_whole;
        all_singles += round_singles;
        println!(
            "benchmark round {round}: rolling restart {round_whole:?}, singles {round_singles:?}, \
             ratio {:.2}; over {round} rounds {:.2} (target <= 1.5)",
            round_whole.as_secs_f64() / round_singles.as_secs_f64(),
            wholes.as_secs_f64() / all_singles.as_secs_f64(),
        );
    }

    // 4. Auto order; geth of the second node SIGKILLed mid-step; resume.
    fx.all_ready().await?;
    let before_pid = fx.geth_pid(1).await?.context("signer-2 geth pid")?;
    let b_start = fx.net.head(0).await?;
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
    // Fixed once the agent has started geth again and it is ready.
    let socket = fx.socket(1);
    let socket = &socket;
    eventually("signer-2 ready after the kill", 4 * MINUTE, || async move {
        let s = testnet::agent_status(socket).await?;
        let pid = s["status"]["pid"].as_u64();
        Ok((s["status"]["phase"] == "running"
            && s["readiness"]["ready"] == true
            && pid.is_some_and(|p| p != killed))
        .then_some(()))
    })
    .await?;
    fx.all_ready().await?;
    let still = fx.plan().await?;
    assert_eq!(still["state"], "failed", "{still}");
    assert!(
        still["steps"][2]["command_id"].is_null(),
        "nothing after it touched"
    );
    // Resumed with the CLI, which follows the run across an aggregator
    // SIGKILL in the middle of signer-3's step (the run's state is stored).
    let cli_out = fx.net.path().join("resume-cli.out");
    let mut cli = std::process::Command::new(AGGREGATOR)
        .args(["restart", "resume", "--url", &format!("http://{addr}")])
        .arg("--admin-token-file")
        .arg(&fx.token_file)
        .stdout(std::fs::File::create(&cli_out)?)
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .map(KillOnDrop)?;
    fx.wait_plan("step 3 (signer-3) under way", 8 * MINUTE, |p| {
        p["current"] == 2 && ["stopping", "returning", "sealing"].contains(&phase(p, 2).as_str())
    })
    .await?;
    kill(Pid::from_raw(aggregator as i32), Signal::SIGKILL)?;
    eventually("the old aggregator gone", MINUTE, || async move {
        Ok(http_get(addr, "/livez").await.is_err().then_some(()))
    })
    .await?;
    aggregator = fx.start_aggregator()?;
    let done = fx
        .wait_plan("plan B done", 12 * MINUTE, |p| p["state"] != "running")
        .await?;
    assert_eq!(done["state"], "done", "{done}");
    let status = eventually("the resume CLI to end", 2 * MINUTE, || {
        let polled = cli.0.try_wait().map_err(anyhow::Error::from);
        async move { polled }
    })
    .await?;
    let printed = std::fs::read_to_string(&cli_out)?;
    println!("{printed}");
    assert!(status.success(), "restart resume: {status}\n{printed}");
    assert!(printed.contains("done: 4/4 nodes restarted"), "{printed}");
    assert!(
        done["history"].as_array().is_some_and(|h| h
            .iter()
            .filter(|l| l["text"] == "signer-3: restart sent")
            .count()
            == 1),
        "signer-3 restarted once across the aggregator restart: {done}"
    );
    windows.push((b_start, fx.net.head(0).await?));
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
    assert_eq!(
        metric_value(&metrics, "clique_fleet_restart_step"),
        Some(4.0)
    );
    // The dashboard's state carries the progress (names, phases; no history).
    let shown = eventually("the page's restart progress", MINUTE, || async move {
        let (_, body) = http_get(addr, "/api/state").await?;
        let s: Value = serde_json::from_str(&body)?;
        Ok((s["restart"]["state"] == "done").then(|| s["restart"].clone()))
    })
    .await?;
    assert_eq!(shown["id"].as_u64(), Some(plan_b), "{shown}");
    assert_eq!(shown["steps"][1]["node"], "signer-2", "{shown}");
    assert_eq!(shown["steps"][1]["clean"], true, "{shown}");

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
    // The chain kept sealing during both runs.
    for (from, to) in windows {
        let mut previous = hex_u64(&block(&fx.net, 0, from).await?["timestamp"]);
        let (mut worst, mut at) = (0, from);
        for n in from + 1..=to {
            let t = hex_u64(&block(&fx.net, 0, n).await?["timestamp"]);
            if t.saturating_sub(previous) > worst {
                (worst, at) = (t.saturating_sub(previous), n);
            }
            previous = t;
        }
        println!("blocks {from}..={to}: longest gap {worst} s (before block {at})");
        assert!(worst <= 3 * PERIOD, "a gap of {worst} s before block {at}");
    }
    let _ = aggregator;

    // 6. A replayed command (validly signed, id already run) and a command
    //    signed by another key are ignored by the agent; a fresh, validly
    //    signed one is run. The agent of validator-1 reports to an impostor
    //    holding the aggregator's key (read from the network folder).
    let key = geth_agent::report::load_node_key(&fx.net.network_dir.join("aggregator/key"))?;
    let rogue = Rogue::serve().await?;
    let ran_before = format!("restart-{plan_b}-1-1");
    let ledger = std::fs::read_to_string(fx.net.nodes[3].datadir.join("geth-agent/commands.json"))?;
    assert!(ledger.contains(&ran_before), "{ledger}");
    fx.net.nodes[3].signal(Signal::SIGTERM)?;
    fx.net.nodes[3].wait_exit(2 * MINUTE).await?;
    fx.net.agent_args = vec!["--aggregator".into(), rogue.url.clone()];
    rogue.set(&ran_before, Some(key.clone()));
    fx.net.spawn(3)?;
    let fx_ref = &fx;
    let pid = eventually("validator-1's geth running", 2 * MINUTE, || async move {
        fx_ref.geth_pid(3).await.or(Ok(None))
    })
    .await?;
    let metrics_addr: SocketAddr = ([127, 0, 0, 1], fx.net.nodes[3].info.ports.agent).into();
    for (phase, id, signer) in [
        ("replayed", ran_before.as_str(), Some(key.clone())),
        (
            "foreign",
            "rogue-2",
            Some(alloy::signers::local::PrivateKeySigner::random()),
        ),
    ] {
        rogue.set(id, signer);
        let seen = rogue.served();
        let rogue_ref = &rogue;
        eventually(
            &format!("{phase} command delivered 5 times"),
            2 * MINUTE,
            || async move { Ok((rogue_ref.served() >= seen + 5).then_some(())) },
        )
        .await?;
        assert_eq!(
            fx.geth_pid(3).await?,
            Some(pid),
            "{phase} command ignored: geth not restarted"
        );
    }
    let (_, metrics) = http_get(metrics_addr, "/metrics").await?;
    let foreign = metric_value(
        &metrics,
        "clique_agent_aggregator_replies_rejected_total{reason=\"foreign\"}",
    );
    assert!(foreign.is_some_and(|n| n >= 5.0), "{foreign:?}");
    // The same channel with a fresh id and the right key does restart geth.
    rogue.set("rogue-3", Some(key));
    eventually("a fresh signed command runs", 3 * MINUTE, || async move {
        let now = fx_ref.geth_pid(3).await.ok().flatten();
        Ok(now.filter(|p| *p != pid).map(|_| ()))
    })
    .await?;
    Ok(())
}

/// Restarts node `i` by hand through its agent's admin socket and times it
/// until the node is ready again and, for a signer, has sealed a new block.
async fn single_restart(fx: &Fixture, i: usize) -> Result<Duration> {
    // Done by the plan's own measure: ready, past the fleet's head at the
    // stop, and (a signer) a block sealed after it.
    let started = Instant::now();
    let stopped_at = geth_wire::now_ms() / 1000;
    let (code, body) =
        geth_agent::ctl::request(&fx.socket(i), hyper::Method::POST, "/restart", None).await?;
    ensure!(code.is_success(), "restart {i}: {body}");
    let mut fleet_head = 0;
    for n in (0..fx.net.nodes.len()).filter(|n| *n != i) {
        fleet_head = fleet_head.max(fx.net.head(n).await?);
    }
    let socket = fx.socket(i);
    let socket = &socket;
    let net = &fx.net;
    eventually("ready again", 4 * MINUTE, || async move {
        let s = testnet::agent_status(socket).await?;
        let ready = s["status"]["phase"] == "running" && s["readiness"]["ready"] == true;
        Ok((ready && net.head(i).await? > fleet_head).then_some(()))
    })
    .await?;
    if let Some(signer) = fx.net.nodes[i].info.signer {
        let other = (i + 1) % fx.net.nodes.len();
        eventually("sealing again", 4 * MINUTE, || async move {
            let top = net.head(other).await?;
            for n in fleet_head.saturating_sub(2)..=top {
                let b = block(net, other, n).await?;
                if hex_u64(&b["timestamp"]) > stopped_at && net.signer_of(other, n).await? == signer
                {
                    return Ok(Some(()));
                }
            }
            Ok(None)
        })
        .await?;
    }
    Ok(started.elapsed())
}

/// An impostor aggregator: answers every report with one restart command,
/// signed with the key it is given (or not at all).
#[derive(Clone)]
struct Rogue {
    url: String,
    state: std::sync::Arc<std::sync::Mutex<RogueState>>,
}

#[derive(Default)]
struct RogueState {
    id: String,
    key: Option<alloy::signers::local::PrivateKeySigner>,
    served: u64,
}

impl Rogue {
    async fn serve() -> Result<Self> {
        use axum::http::HeaderMap;
        let state = std::sync::Arc::new(std::sync::Mutex::new(RogueState::default()));
        let reply = {
            let state = state.clone();
            move |headers: HeaderMap| {
                let state = state.clone();
                async move { Rogue::reply(&state, &headers) }
            }
        };
        let app = axum::Router::new()
            .route("/api/report", axum::routing::post(reply.clone()))
            .route("/api/peers", axum::routing::get(reply));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { url, state })
    }

    fn set(&self, id: &str, key: Option<alloy::signers::local::PrivateKeySigner>) {
        let mut s = self.state.lock().expect("rogue state");
        s.id = id.to_owned();
        s.key = key;
    }

    fn served(&self) -> u64 {
        self.state.lock().expect("rogue state").served
    }

    fn reply(
        state: &std::sync::Mutex<RogueState>,
        headers: &axum::http::HeaderMap,
    ) -> axum::response::Response {
        use alloy::signers::SignerSync;
        use axum::response::IntoResponse;
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let mut s = state.lock().expect("rogue state");
        s.served += 1;
        // It keeps no sessions: MACs are refused as by a restarted
        // aggregator, so the agent signs again and every reply is signed.
        if headers.contains_key(geth_wire::session::HEADER_MAC) {
            let body = serde_json::json!({"error": "no session", "reason": geth_wire::session::NO_SESSION});
            return (axum::http::StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
        }
        let reply = geth_wire::ReportReply {
            commands: vec![geth_wire::control::AgentCommand {
                id: s.id.clone(),
                node: header(geth_wire::HEADER_NODE),
                expires_ms: geth_wire::now_ms() + 600_000,
                command: geth_wire::control::Command::Restart,
            }],
            ..Default::default()
        };
        let body = serde_json::to_vec(&reply).expect("json");
        let mut response = (axum::http::StatusCode::OK, body.clone()).into_response();
        if let Some(key) = &s.key {
            let digest = alloy::primitives::keccak256(geth_wire::reply_signing_payload(
                &header(geth_wire::HEADER_SIGNATURE),
                &body,
            ));
            if let Ok(sig) = key.sign_hash_sync(&digest) {
                let value = format!("0x{}", hex::encode(sig.as_bytes()));
                if let Ok(v) = value.parse() {
                    response
                        .headers_mut()
                        .insert(geth_wire::HEADER_REPLY_SIGNATURE, v);
                }
            }
        }
        response
    }
}

/// A child process that is killed when the test ends, also on failure (a CLI
/// left following would hold the test runner's output open).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
