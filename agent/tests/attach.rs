//! Attach mode as in a Kubernetes pod, with real geth v1.13.15: `geth-agent
//! init` prepares the datadir before geth starts, geth runs as its own
//! process (the other container), the agent finds it, follows its
//! `--log.file` and gates readiness.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use testnet::{agent_status, eventually, http_get, Launcher, NetworkOptions, TestNetwork};

const AGENT: &str = env!("CARGO_BIN_EXE_geth-agent");
const MINUTE: Duration = Duration::from_secs(60);

fn network() -> Result<TestNetwork> {
    TestNetwork::generate(&NetworkOptions {
        signers: 1,
        launcher: Launcher::Agent(AGENT.into()),
        ..Default::default()
    })
}

fn geth_log(net: &TestNetwork) -> PathBuf {
    net.path().join("geth.json")
}

/// `geth-agent init` for node 0 (the init container): exit code and output.
fn init(net: &TestNetwork, genesis: &Path) -> Result<(Option<i32>, String)> {
    let out = Command::new(AGENT)
        .arg("init")
        .arg("--config")
        .arg(net.node_dir(0).join("agent.toml"))
        .arg("--datadir")
        .arg(&net.nodes[0].datadir)
        .arg("--genesis")
        .arg(genesis)
        .env("GETH_BIN", testnet::geth_bin())
        .output()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Ok((out.status.code(), text))
}

/// geth itself, started directly (the pod's geth container), logging to a file.
fn start_geth(net: &mut TestNetwork) -> Result<u32> {
    let mut geth = net.geth_command(0);
    geth.log_file = Some(geth_log(net));
    let mut c = Command::new(&geth.binary);
    c.args(geth.args());
    net.spawn_other(0, c)
}

/// The agent in attach mode, beside geth; its own command line carries `--datadir`.
fn start_agent(net: &mut TestNetwork) -> Result<u32> {
    let log = geth_log(net).to_string_lossy().into_owned();
    let command = net.agent_command(
        0,
        AGENT.as_ref(),
        &[
            "--mode",
            "attach",
            "--geth-log-file",
            &log,
            "--min-peers",
            "0",
        ],
    );
    net.spawn_other(0, command)
}

async fn status(net: &TestNetwork) -> Result<Value> {
    agent_status(&net.nodes[0].datadir.join("geth-agent/admin.sock")).await
}

async fn readyz(net: &TestNetwork) -> Result<(u16, String)> {
    http_get(
        ([127, 0, 0, 1], net.nodes[0].info.ports.agent).into(),
        "/readyz",
    )
    .await
}

#[tokio::test]
async fn an_agent_started_after_geth_becomes_ready() -> Result<()> {
    let mut net = network()?;
    let (code, text) = init(&net, &net.genesis())?;
    ensure!(code == Some(0), "init: {text}");
    let geth = start_geth(&mut net)?;
    net.apply_startup_policy().await?;
    // geth runs and seals for a while before the agent arrives: its start-up
    // lines, "IPC endpoint opened" among them, are long past.
    net.wait_for_block(0, 10, 2 * MINUTE).await?;
    let agent = start_agent(&mut net)?;

    eventually("/readyz 200 from the late agent", 2 * MINUTE, || async {
        Ok((readyz(&net).await?.0 == 200).then_some(()))
    })
    .await
    .with_context(|| net.nodes[0].log_text())?;
    let s = status(&net).await?;
    assert_eq!(
        s["status"]["pid"], geth,
        "attached to geth, not to pid {agent}"
    );
    assert_eq!(s["status"]["phase"], "running");
    assert!(
        s["status"]["last_start"].is_null(),
        "no start-up evidence for a geth that started before the agent: {s}"
    );
    let log = net.nodes[0].log_text();
    assert!(
        log.contains("its start-up evidence (blocks lost at start) is not available"),
        "{log}"
    );

    // The platform stops geth and then, at once, the agent (compose's `down`,
    // a pod's deletion): the agent still proves geth's shutdown before it
    // exits, although the watcher had not delivered geth's last lines yet.
    let marker = net.nodes[0].datadir.join("geth-agent/last-shutdown.json");
    ensure!(!marker.exists(), "no shutdown recorded yet");
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    kill(Pid::from_raw(geth as i32), Signal::SIGTERM)?;
    kill(Pid::from_raw(agent as i32), Signal::SIGTERM)?;
    let verdict: Value = eventually("the agent's shutdown marker", 2 * MINUTE, || async {
        Ok(std::fs::read_to_string(&marker)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok()))
    })
    .await
    .with_context(|| net.nodes[0].log_text())?;
    assert_eq!(verdict["clean"], true, "{verdict}");
    Ok(())
}

#[tokio::test]
async fn attach_never_initialises_nor_finds_itself_and_init_comes_first() -> Result<()> {
    let mut net = network()?;
    let datadir = net.nodes[0].datadir.clone();
    // The agent first, on an empty datadir: it must neither `geth init` it
    // (geth may be starting on it) nor take itself for geth.
    let agent = start_agent(&mut net)?;
    let s = eventually("the agent to wait", MINUTE, || async {
        let s = status(&net).await?;
        Ok(s["status"]["waiting"]
            .as_str()
            .is_some_and(|w| w.contains("not initialised"))
            .then_some(s))
    })
    .await?;
    assert!(s["status"]["pid"].is_null(), "{s}");
    let (code, body) = readyz(&net).await?;
    assert_eq!(code, 503, "{body}");
    // Watch for a while: still no geth, and nothing written to the datadir.
    for _ in 0..25 {
        let s = status(&net).await?;
        assert!(
            s["status"]["pid"].is_null(),
            "the agent (pid {agent}) attached to something: {s}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(geth_agent::init::needs_init(&datadir), "datadir untouched");
    assert!(!net.nodes[0].log_text().contains("initialising datadir"));

    // The documented order: init (twice is harmless), then geth.
    let (code, text) = init(&net, &net.genesis())?;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("initialised"), "{text}");
    let (code, text) = init(&net, &net.genesis())?;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("already holds genesis"), "{text}");
    let geth = start_geth(&mut net)?;
    eventually("/readyz 200 once geth runs", 2 * MINUTE, || async {
        Ok((readyz(&net).await?.0 == 200).then_some(()))
    })
    .await
    .with_context(|| net.nodes[0].log_text())?;
    let s = status(&net).await?;
    assert_eq!(s["status"]["pid"], geth, "{s}");
    assert!(s["status"]["waiting"].is_null(), "{s}");

    // init refuses to touch a datadir geth is running on.
    let other = TestNetwork::generate(&NetworkOptions {
        signers: 1,
        ..Default::default()
    })?;
    let (code, text) = init(&net, &other.genesis())?;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("already runs"), "{text}");
    Ok(())
}

#[test]
fn init_refuses_another_genesis_with_64() -> Result<()> {
    let net = network()?;
    let (code, text) = init(&net, &net.genesis())?;
    assert_eq!(code, Some(0), "{text}");
    let other = TestNetwork::generate(&NetworkOptions {
        signers: 1,
        ..Default::default()
    })?;
    let (code, text) = init(&net, &other.genesis())?;
    assert_eq!(code, Some(64), "{text}");
    assert!(text.contains("genesis mismatch"), "{text}");
    Ok(())
}

#[tokio::test]
async fn an_agent_without_geth_checks_the_genesis_with_the_attached_geth() -> Result<()> {
    // The agent's container carries no geth (docker/geth-agent.Dockerfile): the
    // configured genesis's hash comes from the attached geth's own executable.
    let mut net = network()?;
    let (code, text) = init(&net, &net.genesis())?;
    ensure!(code == Some(0), "init: {text}");
    let geth = start_geth(&mut net)?;
    let other = TestNetwork::generate(&NetworkOptions {
        signers: 1,
        ..Default::default()
    })?;
    let log = geth_log(&net).to_string_lossy().into_owned();
    let wrong = other.genesis().to_string_lossy().into_owned();
    let command = net.agent_command(
        0,
        AGENT.as_ref(),
        &[
            "--mode",
            "attach",
            "--geth-log-file",
            &log,
            "--geth-bin",
            "/nonexistent/geth",
            "--genesis",
            &wrong,
        ],
    );
    net.spawn_other(0, command)?;
    let s = eventually(
        "the agent to judge the attached geth's chain",
        2 * MINUTE,
        || async {
            let s = status(&net).await?;
            Ok((s["status"]["pid"] == geth && !s["status"]["blocked"].is_null()).then_some(s))
        },
    )
    .await
    .with_context(|| net.nodes[0].log_text())?;
    assert_eq!(s["status"]["genesis_mismatch"], true, "{s}");
    let blocked = s["status"]["blocked"].as_str().unwrap_or_default();
    assert!(blocked.contains("genesis mismatch"), "{blocked}");
    assert_eq!(readyz(&net).await?.0, 503);
    Ok(())
}
