//! geth-agent in spawn mode, with real geth v1.13.15.

use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use geth_agent::shutdown;
use nix::sys::signal::Signal;
use testnet::{Launcher, NetworkOptions, TestNetwork};

const AGENT: &str = env!("CARGO_BIN_EXE_geth-agent");
const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn sigterm_stops_geth_cleanly_and_records_the_head() -> Result<()> {
    let options = NetworkOptions {
        signers: 1,
        launcher: Launcher::Agent(AGENT.into()),
        // geth logs the state it writes at the stop in standard durability
        // only (an archive signer, the default, has written every block).
        agent_args: vec!["--durability".into(), "standard".into()],
        ..Default::default()
    };
    let mut net = TestNetwork::start(options).await?;
    net.wait_for_block(0, 5, 2 * MINUTE).await?;

    net.nodes[0].signal(Signal::SIGTERM)?;
    let status = net.nodes[0].wait_exit(2 * MINUTE).await?;
    let log = net.nodes[0].log_text();
    assert!(status.success(), "agent exit {status}; log:\n{log}");
    assert!(
        log.contains("Blockchain stopped"),
        "geth's lines are forwarded:\n{log}"
    );
    assert!(
        log.contains("name=signer-1"),
        "lines carry the node name:\n{log}"
    );
    assert_eq!(
        log.matches("Got interrupt, shutting down").count(),
        1,
        "exactly one signal"
    );

    let verdict = shutdown::read_marker(&net.nodes[0].datadir).expect("marker written");
    assert!(verdict.clean, "{verdict:?}");
    let head = verdict.head_before.expect("head read before the stop");
    assert!(head >= 5);
    assert_eq!(
        verdict.persisted.as_ref().map(|b| b.number),
        Some(head),
        "{verdict:?}"
    );

    // Restart: the chain continues from the persisted head.
    net.spawn(0)?;
    net.wait_for_block(0, head + 1, 2 * MINUTE).await?;
    Ok(())
}

#[test]
fn bad_configuration_exits_64_listing_every_problem() {
    let out = Command::new(AGENT)
        .args(["run", "--http", "nope", "--signer", "0x1"])
        .env_remove("GETH_AGENT_DATADIR")
        .env_remove("GETH_AGENT_GENESIS")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in ["datadir", "genesis", "http", "signer"] {
        assert!(stderr.contains(needle), "{needle} missing in {stderr}");
    }
}

#[test]
fn network_new_rejects_bad_counts_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        ["--signers", "0"],
        ["--signers", "65"],
        ["--validators", "99"],
    ] {
        let out = Command::new(AGENT)
            .args(["network", "new", "--out"])
            .arg(dir.path().join("n"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains("bad node count"), "{stderr}");
    }
}
