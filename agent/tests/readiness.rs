//! The sync gate (`/readyz`) of agents supervising a real 3-signer network.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use serde_json::Value;
use testnet::{eventually, http_get, Launcher, NetworkOptions, TestNetwork};
use tokio::time::Instant;

const AGENT: &str = env!("CARGO_BIN_EXE_geth-agent");
const MINUTE: Duration = Duration::from_secs(60);

fn agent_addr(net: &TestNetwork, i: usize) -> SocketAddr {
    ([127, 0, 0, 1], net.nodes[i].info.ports.agent).into()
}

/// Drops the peering between node `a` and node `b` on both sides (static peers
/// are redialled otherwise).
async fn unpeer(net: &TestNetwork, a: usize, b: usize) -> Result<()> {
    for (from, to) in [(a, b), (b, a)] {
        let rpc = net.nodes[from].rpc().await?;
        let _: bool = rpc
            .call("admin_removePeer", (net.nodes[to].info.enode.as_str(),))
            .await?;
    }
    Ok(())
}

#[tokio::test]
async fn readyz_gates_on_peers_and_sync_without_flapping() -> Result<()> {
    let options = NetworkOptions {
        launcher: Launcher::Agent(AGENT.into()),
        ..Default::default()
    };
    let net = TestNetwork::start(options).await?;
    let net = &net;
    let node0 = agent_addr(net, 0);

    // Not ready while geth starts, peers and syncs; ready after.
    let mut saw_not_ready = false;
    let deadline = Instant::now() + 2 * MINUTE;
    loop {
        match http_get(node0, "/readyz").await {
            Ok((200, _)) => break,
            Ok((503, _)) => saw_not_ready = true,
            Ok((code, body)) => panic!("unexpected /readyz answer {code}: {body}"),
            Err(_) => {} // the agent is not listening yet
        }
        assert!(Instant::now() < deadline, "node 0 never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        saw_not_ready,
        "/readyz answered 503 before geth was peered and synced"
    );
    let (_, verbose) = http_get(node0, "/readyz?verbose").await?;
    let verbose: Value = serde_json::from_str(&verbose)?;
    assert_eq!(verbose["ready"], true);

    // A healthy node never flaps: every poll over 30 blocks is 200.
    let start = net.head(0).await?;
    let mut polls = 0;
    while net.head(0).await? < start + 30 {
        let (code, body) = http_get(node0, "/readyz?verbose").await?;
        assert_eq!(code, 200, "flapped after {polls} polls: {body}");
        polls += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(polls >= 100, "only {polls} polls");

    // Cut node 2 off: not ready within 3 block periods.
    let node2 = agent_addr(net, 2);
    assert_eq!(http_get(node2, "/readyz").await?.0, 200);
    unpeer(net, 2, 0).await?;
    unpeer(net, 2, 1).await?;
    let cut_at = Instant::now();
    let reason = eventually("node 2 not ready", Duration::from_secs(10), || async move {
        let (code, body) = http_get(node2, "/readyz").await?;
        Ok((code == 503).then_some(body))
    })
    .await?;
    let took = cut_at.elapsed();
    assert!(
        took <= Duration::from_secs(3 * net.network.period),
        "not ready after {took:?}"
    );
    assert!(reason.contains("peers"), "{reason}");

    // The chain moves on without it; then it is peered again and catches up.
    let head = net.head(0).await?;
    net.wait_for_block(0, head + 8, MINUTE).await?;
    for peer in [0, 1] {
        let rpc = net.nodes[2].rpc().await?;
        let _: bool = rpc
            .call("admin_addPeer", (net.nodes[peer].info.enode.as_str(),))
            .await?;
    }
    eventually("node 2 ready again", 2 * MINUTE, || async move {
        Ok((http_get(node2, "/readyz").await?.0 == 200).then_some(()))
    })
    .await?;
    let (head0, head2) = (net.head(0).await?, net.head(2).await?);
    assert!(
        head0.abs_diff(head2) <= 2,
        "ready at {head2} while the chain is at {head0}"
    );
    Ok(())
}
