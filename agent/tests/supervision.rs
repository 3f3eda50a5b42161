//! geth-agent supervising real geth v1.13.15: init and genesis checks, proven
//! clean and unclean shutdowns, crash evidence, attach mode, admin socket.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use anyhow::{ensure, Result};
use geth_agent::shutdown;
use nix::sys::signal::Signal;
use serde_json::Value;
use testnet::{agent_status, eventually, http_get, Launcher, NetworkOptions, TestNetwork};
use tokio::time::Instant;

const AGENT: &str = env!("CARGO_BIN_EXE_geth-agent");
const MINUTE: Duration = Duration::from_secs(60);

/// Standard durability: the shutdown proofs here are geth's state lines, and
/// an archive signer (the default) writes every block without any.
fn one_signer(agent_args: &[&str]) -> NetworkOptions {
    NetworkOptions {
        signers: 1,
        launcher: Launcher::Agent(AGENT.into()),
        agent_args: ["--durability", "standard"]
            .iter()
            .chain(agent_args)
            .map(|a| a.to_string())
            .collect(),
        ..Default::default()
    }
}

fn socket(net: &TestNetwork, i: usize) -> PathBuf {
    net.nodes[i].datadir.join("geth-agent/admin.sock")
}

async fn status(net: &TestNetwork, i: usize) -> Result<Value> {
    agent_status(&socket(net, i)).await
}

async fn ctl(net: &TestNetwork, i: usize, args: &[&str]) -> Result<String> {
    let out = tokio::process::Command::new(AGENT)
        .arg("ctl")
        .arg("--socket")
        .arg(socket(net, i))
        .args(args)
        .output()
        .await?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "ctl {args:?} failed: {text}");
    Ok(text)
}

#[tokio::test]
async fn init_once_then_a_mismatched_genesis_blocks_geth() -> Result<()> {
    let mut net = TestNetwork::start(one_signer(&[])).await?;
    net.wait_for_block(0, 2, 2 * MINUTE).await?;
    ctl(&net, 0, &["restart"]).await?;
    net.wait_for_block(0, 3, 2 * MINUTE).await?;
    net.nodes[0].signal(Signal::SIGTERM)?;
    assert!(net.nodes[0].wait_exit(MINUTE).await?.success());
    net.spawn(0)?;
    net.wait_for_block(0, 4, 2 * MINUTE).await?;
    let log = net.nodes[0].log_text();
    assert_eq!(
        log.matches("initialising datadir").count(),
        1,
        "init ran once over three starts"
    );
    net.nodes[0].signal(Signal::SIGTERM)?;
    net.nodes[0].wait_exit(MINUTE).await?;

    // Same datadir, another network's genesis.
    let other = TestNetwork::generate(&one_signer(&[]))?;
    let geth = testnet::geth_bin();
    let stored = geth_agent::init::configured_hash(&geth, &net.genesis()).await?;
    let configured = geth_agent::init::configured_hash(&geth, &other.genesis()).await?;
    let pid = net.spawn_other(0, {
        let mut c = net.agent_command(0, AGENT.as_ref(), &[]);
        c.arg("--genesis").arg(other.genesis());
        c
    })?;
    let addr = ([127, 0, 0, 1], net.nodes[0].info.ports.agent).into();
    let body = eventually("a blocked agent", MINUTE, || async move {
        let (code, body) = http_get(addr, "/readyz").await?;
        Ok((code == 503 && body.contains("genesis mismatch")).then_some(body))
    })
    .await?;
    assert!(
        body.contains(&stored) && body.contains(&configured),
        "both hashes in: {body}"
    );
    let s = status(&net, 0).await?;
    assert_eq!(s["status"]["phase"], "blocked");
    assert_eq!(s["status"]["genesis_mismatch"], true);
    assert!(s["status"]["pid"].is_null(), "geth not started: {s}");
    assert_eq!(
        http_get(addr, "/livez").await?.0,
        200,
        "the agent stays alive"
    );
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok(),
        "agent up"
    );
    Ok(())
}

#[tokio::test]
async fn clean_stop_persists_the_head_and_restart_resumes_from_it() -> Result<()> {
    let net = TestNetwork::start(one_signer(&[])).await?;
    net.wait_for_block(0, 20, 2 * MINUTE).await?;
    let answer = ctl(&net, 0, &["stop"]).await?;
    assert!(answer.contains("clean"), "{answer}");
    let verdict = shutdown::read_marker(&net.nodes[0].datadir).expect("marker");
    assert!(verdict.clean, "{verdict:?}");
    let head = verdict.head_before.expect("head at the stop");
    assert!(head >= 20);
    assert_eq!(verdict.persisted.as_ref().map(|b| b.number), Some(head));
    let s = status(&net, 0).await?;
    assert_eq!(s["status"]["phase"], "stopped");
    assert!(s["status"]["pid"].is_null());

    ctl(&net, 0, &["start"]).await?;
    let resumed = eventually("geth resumed", MINUTE, || async {
        let s = status(&net, 0).await?;
        let running = s["status"]["starts"] == 2 && s["status"]["phase"] == "running";
        Ok(s["status"]["last_start"]["loaded_head"]
            .as_u64()
            .filter(|_| running))
    })
    .await?;
    assert!(resumed >= head, "resumed at {resumed}, stopped at {head}");
    assert_eq!(
        status(&net, 0).await?["status"]["last_start"]["blocks_lost"],
        0
    );
    net.wait_for_block(0, head + 1, MINUTE).await?;
    Ok(())
}

#[tokio::test]
async fn kill_9_is_detected_and_blocks_lost_are_counted() -> Result<()> {
    let net = TestNetwork::start(one_signer(&[])).await?;
    net.wait_for_block(0, 2, 2 * MINUTE).await?;
    // Transfers change the state root, so a hard kill loses unflushed blocks.
    let account = &net.network.accounts[0];
    let password = std::fs::read_to_string(net.network_dir.join("accounts/password"))?;
    let wallet =
        PrivateKeySigner::decrypt_keystore(net.network_dir.join(&account.keystore), password)?;
    let provider = net.nodes[0]
        .wallet_provider(EthereumWallet::from(wallet))
        .await?;
    for nonce in 0..3u64 {
        let tx = TransactionRequest::default()
            .with_to(Address::repeat_byte(7))
            .with_value(U256::from(1u64))
            .with_nonce(nonce)
            .with_gas_limit(21_000)
            .with_gas_price(0);
        let _pending = provider.send_transaction(tx).await?;
    }
    net.wait_for_block(0, 20, 2 * MINUTE).await?;

    // Freeze the head so "the head before the kill" is one number.
    let rpc = net.nodes[0].rpc().await?;
    let _: Value = rpc.call("miner_stop", ()).await?;
    let head_before = eventually("the head to settle", MINUTE, || async {
        let a = net.head(0).await?;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        Ok((net.head(0).await? == a).then_some(a))
    })
    .await?;
    eventually("the agent to see the head", MINUTE, || async {
        Ok(
            (status(&net, 0).await?["status"]["chain"]["head"].as_u64() == Some(head_before))
                .then_some(()),
        )
    })
    .await?;
    let geth_pid = status(&net, 0).await?["status"]["pid"]
        .as_u64()
        .expect("pid") as u32;

    let killed_at = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(geth_pid as i32), Signal::SIGKILL)?;
    let verdict = eventually("the crash verdict", Duration::from_secs(5), || async {
        let s = status(&net, 0).await?;
        let v = &s["status"]["last_shutdown"];
        Ok(
            (v["clean"] == false && v["reason"].as_str().is_some_and(|r| r.contains("signal 9")))
                .then(|| v.clone()),
        )
    })
    .await?;
    let detected_in = killed_at.elapsed();
    assert!(
        detected_in < Duration::from_secs(2),
        "detected after {detected_in:?}"
    );
    assert_eq!(verdict["head_before"], head_before);

    // The agent restarts geth; geth tells which block it resumed from.
    let evidence = eventually("the restart evidence", MINUTE, || async {
        let s = status(&net, 0).await?;
        let e = &s["status"]["last_start"];
        Ok((e["previous_head"] == head_before).then(|| e.clone()))
    })
    .await?;
    let log = net.nodes[0].log_text();
    let after_kill = &log[log.rfind("geth CRASHED").expect("crash logged")..];
    let loaded: u64 = after_kill
        .lines()
        .filter_map(|l| l.split("Loaded most recent local block ").nth(1))
        .filter_map(|rest| {
            rest.split("number=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .next_back()
        .expect("geth logged the block it loaded");
    assert_eq!(evidence["loaded_head"], loaded);
    assert_eq!(evidence["blocks_lost"], head_before - loaded, "{evidence}");
    assert_eq!(status(&net, 0).await?["status"]["restarts"], 1);
    Ok(())
}

#[tokio::test]
async fn a_frozen_geth_is_killed_after_the_grace_period() -> Result<()> {
    let mut net = TestNetwork::start(one_signer(&["--shutdown-grace-secs", "3"])).await?;
    net.wait_for_block(0, 3, 2 * MINUTE).await?;
    let geth_pid = status(&net, 0).await?["status"]["pid"]
        .as_u64()
        .expect("pid") as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(geth_pid), Signal::SIGSTOP)?;
    net.nodes[0].signal(Signal::SIGTERM)?;
    let exit = net.nodes[0].wait_exit(MINUTE).await?;
    assert!(!exit.success(), "an unclean stop fails the agent");
    let verdict = shutdown::read_marker(&net.nodes[0].datadir).expect("marker");
    assert!(!verdict.clean && verdict.killed, "{verdict:?}");
    assert!(
        verdict.reason.contains("grace period"),
        "{}",
        verdict.reason
    );
    assert!(verdict.duration_ms >= 3000, "{verdict:?}");
    Ok(())
}

#[tokio::test]
async fn attach_mode_verifies_platform_stops_and_reattaches() -> Result<()> {
    let mut net = TestNetwork::generate(&one_signer(&[]))?;
    let geth_log = net.path().join("geth.json");
    let mut geth = net.geth_command(0);
    geth.log_file = Some(geth_log.clone());
    let genesis = net.genesis();
    let start_geth = |net: &mut TestNetwork| -> Result<u32> {
        if geth_agent::init::needs_init(&geth.datadir) {
            let ok = Command::new(&geth.binary)
                .args(geth.init_args(&genesis))
                .output()?
                .status
                .success();
            ensure!(ok, "geth init failed");
        }
        let mut c = Command::new(&geth.binary);
        c.args(geth.args());
        net.spawn_other(0, c)
    };
    // geth first, as the pod's first container; then the agent beside it.
    let first = start_geth(&mut net)?;
    let log_arg = geth_log.to_string_lossy().into_owned();
    net.spawn_other(
        0,
        net.agent_command(
            0,
            AGENT.as_ref(),
            &["--mode", "attach", "--geth-log-file", &log_arg],
        ),
    )?;
    let net_ref = &net;
    eventually("the agent to attach", MINUTE, || async move {
        Ok(
            (status(net_ref, 0).await?["status"]["pid"].as_u64() == Some(first.into()))
                .then_some(()),
        )
    })
    .await?;
    // The agent applied the startup policy: the lone signer seals.
    net.wait_for_block(0, 3, MINUTE).await?;

    // The platform stops geth (kubelet: SIGTERM), then starts a new one.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first as i32), Signal::SIGTERM)?;
    let verdict = eventually("the agent's verdict", MINUTE, || async move {
        let s = status(net_ref, 0).await?;
        Ok(s["status"]["last_shutdown"]
            .as_object()
            .map(|_| s["status"]["last_shutdown"].clone()))
    })
    .await?;
    assert_eq!(verdict["clean"], true, "{verdict}");
    assert!(
        verdict["exit_code"].is_null(),
        "attach mode cannot know the exit code"
    );
    let marker = shutdown::read_marker(&net.nodes[0].datadir).expect("marker");
    assert!(marker.clean && marker.persisted.is_some(), "{marker:?}");

    let second = start_geth(&mut net)?;
    let net_ref = &net;
    eventually("re-attach to the new geth", MINUTE, || async move {
        let s = status(net_ref, 0).await?;
        // Running once it answers; its start-up evidence once its lines are read.
        Ok((s["status"]["pid"].as_u64() == Some(second.into())
            && s["status"]["phase"] == "running"
            && !s["status"]["last_start"].is_null())
        .then_some(()))
    })
    .await?;
    let s = status(&net, 0).await?;
    assert_eq!(s["status"]["starts"], 2);
    assert_eq!(s["status"]["last_start"]["blocks_lost"], 0);
    Ok(())
}

#[tokio::test]
async fn admin_socket_is_private_and_ctl_works() -> Result<()> {
    // A socket folder others can traverse, to show the uid check itself.
    let shared = tempfile::Builder::new().prefix("agent-admin-").tempdir()?;
    std::fs::set_permissions(
        shared.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let sock = shared.path().join("admin.sock");
    let sock_arg = sock.to_string_lossy().into_owned();
    let net = TestNetwork::start(one_signer(&["--admin-socket", &sock_arg])).await?;
    net.wait_for_block(0, 2, 2 * MINUTE).await?;

    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&sock)?.permissions().mode() & 0o777,
        0o600
    );

    let run_ctl = |args: &[&str]| {
        Command::new(AGENT)
            .arg("ctl")
            .arg("--socket")
            .arg(&sock)
            .args(args)
            .output()
    };
    let out = run_ctl(&["status"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("phase     running"),
        "{text}"
    );
    let out = run_ctl(&["status", "--json"])?;
    let json: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(json["status"]["name"], "signer-1");
    let out = run_ctl(&["peers"])?;
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 peer(s)"));
    let out = run_ctl(&["add-peer", "enode://nonsense"])?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("not an enode URL"));
    let enode = format!(
        "enode://{}@127.0.0.1:1",
        geth_agent::network::NodeKey::random().enode_id()
    );
    let out = run_ctl(&["add-peer", &enode])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Another uid: the file mode keeps it out...
    let exe = shared.path().join("geth-agent");
    std::fs::copy(AGENT, &exe)?;
    let as_nobody = || {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&exe)
            .arg("ctl")
            .arg("--socket")
            .arg(&sock)
            .arg("status")
            .output()
    };
    let out = as_nobody()?;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{out:?}"
    );
    // ...and with the mode opened up, the agent's uid check refuses it.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666))?;
    let out = as_nobody()?;
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("uid 65534 may not use this socket"),
        "{text} {out:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_killed_agent_s_geth_is_adopted_and_stopped_cleanly() -> Result<()> {
    let mut net = TestNetwork::start(one_signer(&["--min-peers", "0"])).await?;
    net.wait_for_block(0, 3, 2 * MINUTE).await?;
    let geth_pid = status(&net, 0).await?["status"]["pid"]
        .as_u64()
        .expect("pid") as u32;

    // The agent dies alone; geth, in its own process group, lives on.
    net.nodes[0].signal(Signal::SIGKILL)?;
    net.nodes[0].wait_exit(MINUTE).await?;
    let head = net.head(0).await?;
    net.wait_for_block(0, head + 3, MINUTE).await?;

    // A new agent adopts it instead of meeting the datadir lock.
    net.spawn(0)?;
    let addr = ([127, 0, 0, 1], net.nodes[0].info.ports.agent).into();
    let net_ref = &net;
    eventually(
        "the new agent ready with the same geth",
        2 * MINUTE,
        || async move {
            let s = status(net_ref, 0).await?;
            let (code, _) = http_get(addr, "/readyz").await?;
            Ok((code == 200 && s["status"]["pid"].as_u64() == Some(geth_pid.into())).then_some(()))
        },
    )
    .await?;
    let log = net.nodes[0].log_text();
    assert!(log.contains("adopting it"), "{log}");
    assert!(!log.contains("datadir lock"), "{log}");

    // It supervises it: one SIGTERM on shutdown, the verdict proven from the log.
    net.nodes[0].signal(Signal::SIGTERM)?;
    let exit = net.nodes[0].wait_exit(2 * MINUTE).await?;
    let log = net.nodes[0].log_text();
    assert!(exit.success(), "agent exit {exit}; log:\n{log}");
    let verdict = shutdown::read_marker(&net.nodes[0].datadir).expect("marker");
    assert!(verdict.clean, "{verdict:?}");
    assert!(verdict.persisted.is_some(), "{verdict:?}");
    // Gone, or a zombie waiting for its new parent (init) to reap it.
    let state = std::fs::read_to_string(format!("/proc/{geth_pid}/stat")).unwrap_or_default();
    let state = state.rsplit(") ").next().unwrap_or_default();
    assert!(
        state.is_empty() || state.starts_with('Z') || state.starts_with('X'),
        "geth stopped: {state}"
    );
    let after_adoption = &log[log.rfind("adopting it").expect("adopted")..];
    assert_eq!(
        after_adoption
            .matches("Got interrupt, shutting down")
            .count(),
        1,
        "exactly one signal"
    );
    Ok(())
}

#[tokio::test]
async fn an_adopted_geth_that_dies_is_restarted() -> Result<()> {
    let mut net = TestNetwork::start(one_signer(&["--min-peers", "0"])).await?;
    net.wait_for_block(0, 3, 2 * MINUTE).await?;
    let first = status(&net, 0).await?["status"]["pid"]
        .as_u64()
        .expect("pid");
    net.nodes[0].signal(Signal::SIGKILL)?;
    net.nodes[0].wait_exit(MINUTE).await?;
    net.spawn(0)?;
    let net_ref = &net;
    eventually("the adoption", 2 * MINUTE, || async move {
        let s = status(net_ref, 0).await?;
        Ok(
            (s["status"]["pid"].as_u64() == Some(first) && s["status"]["phase"] == "running")
                .then_some(()),
        )
    })
    .await?;

    // The adopted geth crashes: judged unclean, and a geth of its own replaces it.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first as i32), Signal::SIGKILL)?;
    let s = eventually("a new geth", 2 * MINUTE, || async move {
        let s = status(net_ref, 0).await?;
        let replaced = s["status"]["pid"].as_u64().is_some_and(|p| p != first)
            && s["status"]["phase"] == "running";
        Ok(replaced.then_some(s))
    })
    .await?;
    assert_eq!(s["status"]["last_shutdown"]["clean"], false, "{s}");
    let head = net.head(0).await?;
    net.wait_for_block(0, head + 2, MINUTE).await?;
    Ok(())
}
