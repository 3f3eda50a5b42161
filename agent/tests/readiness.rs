//! The sync gate (`/readyz`) of agents supervising a real 3-signer network,
//! and against the fleet's reference block from a (test) aggregator's signed
//! replies.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use serde_json::Value;
use testnet::{eventually, http_get, metric_value, Launcher, NetworkOptions, TestNetwork};
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
        // On a loaded 2-core machine a 1 s chain itself pauses for several
        // seconds now and then; staleness is not what this test is about
        // (`head_fresh` has unit tests), so it gets room here.
        agent_args: vec!["--max-head-age-periods".into(), "30".into()],
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

    // A healthy node never flaps: every poll over 30 blocks is 200. A fresh
    // chain can first wedge at block 1 (signers racing their own block 1 on a
    // loaded machine; the agent re-dials after 30 s, see
    // `a_fresh_chain_wedged_at_block_one_recovers`): start once it moves.
    net.wait_for_block(0, 5, 3 * MINUTE).await?;
    eventually("node 0 ready on a moving chain", MINUTE, || async move {
        Ok((http_get(node0, "/readyz").await?.0 == 200).then_some(()))
    })
    .await?;
    let start = net.head(0).await?;
    let mut polls = 0;
    while net.head(0).await? < start + 30 {
        let (code, body) = http_get(node0, "/readyz?verbose").await?;
        assert_eq!(code, 200, "flapped after {polls} polls: {body}");
        polls += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(polls >= 100, "only {polls} polls");

    // Cut node 2 off: not ready within 3 block periods of losing its peers.
    // geth redials a static peer in the moment between the two sides'
    // removal, so cut again until node 2 is alone.
    let node2 = agent_addr(net, 2);
    assert_eq!(http_get(node2, "/readyz").await?.0, 200);
    let cut_at = eventually("node 2 alone", MINUTE, || async move {
        unpeer(net, 2, 0).await?;
        unpeer(net, 2, 1).await?;
        let peers = net.nodes[2].rpc().await?.peer_count().await?;
        Ok((peers == 0).then(Instant::now))
    })
    .await?;
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

/// What the test aggregator answers, and with which key it signs.
struct Fleet {
    key: alloy::signers::local::PrivateKeySigner,
    reference: Option<geth_wire::BlockRef>,
    /// Refuse every report with this reason (401, as for clock skew).
    refuse: Option<String>,
}

type SharedFleet = std::sync::Arc<std::sync::Mutex<Fleet>>;

/// A minimal aggregator: every report is answered with the fleet's reference,
/// signed for the request it answers (see `geth_wire::reply_signing_payload`).
async fn test_aggregator(fleet: SharedFleet) -> Result<SocketAddr> {
    use alloy::primitives::keccak256;
    use alloy::signers::SignerSync;
    use axum::http::HeaderMap;
    use axum::response::IntoResponse;

    // It keeps no sessions: a MAC is refused as by a restarted aggregator,
    // so the agent signs the same report again at once.
    let signed = |fleet: &SharedFleet, headers: &HeaderMap, body: Vec<u8>| {
        if headers.contains_key(geth_wire::session::HEADER_MAC) {
            let body = serde_json::json!({"error": "no session", "reason": geth_wire::session::NO_SESSION});
            return (axum::http::StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
        }
        let request = headers
            .get(geth_wire::HEADER_SIGNATURE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let digest = keccak256(geth_wire::reply_signing_payload(request, &body));
        let key = fleet.lock().expect("fleet lock").key.clone();
        let signature = key.sign_hash_sync(&digest).expect("signs");
        let header = format!("0x{}", hex::encode(signature.as_bytes()));
        ([(geth_wire::HEADER_REPLY_SIGNATURE, header)], body).into_response()
    };
    let report = {
        let fleet = fleet.clone();
        move |headers: HeaderMap| async move {
            if let Some(reason) = fleet.lock().expect("fleet lock").refuse.clone() {
                let body = serde_json::json!({ "error": reason });
                return (axum::http::StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
            }
            let reply = geth_wire::ReportReply {
                acked: Vec::new(),
                reference: fleet.lock().expect("fleet lock").reference.clone(),
                ..Default::default()
            };
            signed(&fleet, &headers, serde_json::to_vec(&reply).expect("json"))
        }
    };
    let peers = {
        let fleet = fleet.clone();
        move |headers: HeaderMap| async move {
            let list = geth_wire::PeerList::default();
            signed(&fleet, &headers, serde_json::to_vec(&list).expect("json"))
        }
    };
    let app = axum::Router::new()
        .route("/api/report", axum::routing::post(report))
        .route("/api/peers", axum::routing::get(peers));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

async fn condition(addr: SocketAddr, name: &str) -> Result<(u16, Value)> {
    let (code, body) = http_get(addr, "/readyz?verbose").await?;
    let verbose: Value = serde_json::from_str(&body)?;
    let found = verbose["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name).cloned())
        .unwrap_or(Value::Null);
    Ok((code, found))
}

#[tokio::test]
async fn a_node_off_the_fleets_block_at_the_reference_height_is_not_ready() -> Result<()> {
    use alloy::signers::local::PrivateKeySigner;
    // A lone signer: ready with no peers.
    let mut options = NetworkOptions {
        signers: 1,
        period: 1,
        launcher: Launcher::Agent(AGENT.into()),
        ..Default::default()
    };
    let fleet: SharedFleet = std::sync::Arc::new(std::sync::Mutex::new(Fleet {
        key: PrivateKeySigner::random(),
        reference: None,
        refuse: None,
    }));
    let aggregator = test_aggregator(fleet.clone()).await?;
    options.agent_args = vec![
        "--aggregator".into(),
        format!("http://{aggregator}"),
        "--min-peers".into(),
        "0".into(),
    ];
    let mut net = TestNetwork::generate(&options)?;
    // The aggregator key `network new` generated; agent.toml names its address.
    let info = net.network.aggregator.clone().expect("aggregator key");
    let key = geth_agent::report::load_node_key(&net.network_dir.join(&info.key))?;
    assert_eq!(key.address(), info.address);
    fleet.lock().expect("fleet lock").key = key;
    net.spawn(0)?;
    let node = agent_addr(&net, 0);
    net.wait_for_block(0, 3, 2 * MINUTE).await?;

    // The fleet's real block 2: ready, and same_chain shows the hash.
    let real = format!("{:#x}", net.block_hash(0, 2).await?);
    fleet.lock().expect("fleet lock").reference = Some(geth_wire::BlockRef {
        number: 2,
        hash: real.clone(),
    });
    let want = format!("{real} at 2");
    let same = eventually("ready on the fleet's chain", MINUTE, || {
        let want = want.clone();
        async move {
            let (code, c) = condition(node, "same_chain").await?;
            Ok((code == 200 && c["want"] == want.as_str()).then_some(c))
        }
    })
    .await?;
    assert_eq!(same["ok"], true, "{same}");
    assert_eq!(same["value"], format!("{real} at 2"), "{same}");

    // The fleet holds another block 2: this node is on a side branch, not
    // lagging. Not ready, with both hashes shown.
    let other = format!("0x{}", "ab".repeat(32));
    fleet.lock().expect("fleet lock").reference = Some(geth_wire::BlockRef {
        number: 2,
        hash: other.clone(),
    });
    let (same, body) = eventually("not ready off the fleet's chain", MINUTE, || async move {
        let (code, c) = condition(node, "same_chain").await?;
        let (_, body) = http_get(node, "/readyz").await?;
        Ok((code == 503 && c["ok"] == false).then_some((c, body)))
    })
    .await?;
    assert_eq!(same["value"], format!("{real} at 2"), "{same}");
    assert_eq!(same["want"], format!("{other} at 2"), "{same}");
    assert!(body.contains("same_chain"), "{body}");
    let (_, lag) = condition(node, "head_lag").await?;
    assert_eq!(lag["ok"], true, "the lag alone would pass: {lag}");

    // Back on the fleet's chain: ready again. Then a reply signed by another
    // key claims a side branch: it is ignored (and counted), the node stays ready.
    fleet.lock().expect("fleet lock").reference = Some(geth_wire::BlockRef {
        number: 2,
        hash: real.clone(),
    });
    eventually("ready again", MINUTE, || async move {
        Ok((http_get(node, "/readyz").await?.0 == 200).then_some(()))
    })
    .await?;
    {
        let mut fleet = fleet.lock().expect("fleet lock");
        fleet.key = PrivateKeySigner::random();
        fleet.reference = Some(geth_wire::BlockRef {
            number: 2,
            hash: other.clone(),
        });
    }
    let series = r#"clique_agent_aggregator_replies_rejected_total{reason="foreign"}"#;
    eventually("foreign replies counted", MINUTE, || async move {
        let (_, metrics) = http_get(node, "/metrics").await?;
        Ok(metric_value(&metrics, series)
            .filter(|n| *n >= 3.0)
            .map(|_| ()))
    })
    .await?;
    let (code, same) = condition(node, "same_chain").await?;
    assert_eq!(code, 200, "{same}");
    assert_eq!(same["want"], format!("{real} at 2"), "{same}");
    let log = net.nodes[0].log_text();
    assert!(
        log.contains("not signed by the aggregator's key for this request"),
        "warned about the foreign reply"
    );

    // Refused reports (here a clock skew) are warned about with the
    // aggregator's reason, once a minute however many fail.
    let refused = "aggregator refused the request (401): clock skew: 400 s";
    fleet.lock().expect("fleet lock").refuse = Some("clock skew: 400 s".into());
    let net = &net;
    eventually("the refusal warned about", MINUTE, || async move {
        Ok(net.nodes[0].log_text().contains(refused).then_some(()))
    })
    .await?;
    let series = "clique_agent_report_failures_total";
    let (_, metrics) = http_get(node, "/metrics").await?;
    let failed_before = metric_value(&metrics, series).unwrap_or(0.0);
    eventually("ten more refused reports", 2 * MINUTE, || async move {
        let (_, metrics) = http_get(node, "/metrics").await?;
        Ok(metric_value(&metrics, series)
            .filter(|n| *n >= failed_before + 10.0)
            .map(|_| ()))
    })
    .await?;
    let warned = net.nodes[0]
        .log_text()
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains(refused))
        .count();
    assert_eq!(warned, 1, "one warning per minute and kind of failure");
    Ok(())
}
