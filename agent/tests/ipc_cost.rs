//! What the agent asks geth on a steady chain: the `newHeads` subscription
//! drives the per-block work, so blocks cost no call of their own, and the
//! sealer counted from the header's seal is geth's own `clique_getSigner`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{ensure, Result};
use testnet::{eventually, http_get, metric_value, Launcher, NetworkOptions, TestNetwork};

const AGENT: &str = env!("CARGO_BIN_EXE_geth-agent");
const MINUTE: Duration = Duration::from_secs(60);

async fn scrape(addr: SocketAddr) -> Result<String> {
    let (code, text) = http_get(addr, "/metrics").await?;
    ensure!(code == 200, "/metrics answered {code}");
    Ok(text)
}

fn calls(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter_map(|l| l.strip_prefix("clique_agent_ipc_calls_total{method=\""))
        .filter_map(|rest| rest.split_once("\"} "))
        .filter_map(|(m, v)| Some((m.to_owned(), v.trim().parse().ok()?)))
        .collect()
}

#[tokio::test]
async fn a_steady_chain_costs_geth_no_call_per_block() -> Result<()> {
    let options = NetworkOptions {
        signers: 1,
        period: 1,
        launcher: Launcher::Agent(AGENT.into()),
        agent_args: vec!["--min-peers".into(), "0".into()],
        ..Default::default()
    };
    let net = TestNetwork::start(options).await?;
    let addr: SocketAddr = ([127, 0, 0, 1], net.nodes[0].info.ports.agent).into();
    net.wait_for_block(0, 5, 3 * MINUTE).await?;
    eventually("the agent ready", 2 * MINUTE, || async move {
        Ok((http_get(addr, "/readyz").await?.0 == 200).then_some(()))
    })
    .await?;
    let me = format!("{:#x}", net.nodes[0].info.signer.expect("a signer"));
    let sealed = format!("clique_signer_sealed_blocks_total{{signer=\"{me}\",turn=\"in\"}}");

    let before = scrape(addr).await?;
    let head = net.head(0).await?;
    let blocks = 20;
    net.wait_for_block(0, head + blocks, 2 * MINUTE).await?;
    // The agent has counted them too.
    let sealed_before = metric_value(&before, &sealed).unwrap_or(0.0);
    let after = eventually("the agent at the new head", MINUTE, || {
        let sealed = sealed.clone();
        async move {
            let text = scrape(addr).await?;
            let counted = metric_value(&text, &sealed).unwrap_or(0.0) - sealed_before;
            Ok((counted >= blocks as f64).then_some(text))
        }
    })
    .await?;
    let head_after = metric_value(&after, "clique_head_block").unwrap_or(0.0) as u64;
    let moved = (head_after - head) as f64;

    // Every block was sealed by this node's signer, as geth itself says.
    for n in [head + 1, head + blocks / 2, head + blocks] {
        assert_eq!(
            net.signer_of(0, n).await?,
            net.nodes[0].info.signer.expect("a signer")
        );
    }
    let counted = metric_value(&after, &sealed).unwrap_or(0.0)
        - metric_value(&before, &sealed).unwrap_or(0.0);
    assert_eq!(
        counted, moved,
        "each new block counted once, for its real sealer"
    );

    let (c0, c1) = (calls(&before), calls(&after));
    let grew = |m: &str| c1.get(m).copied().unwrap_or(0.0) - c0.get(m).copied().unwrap_or(0.0);
    let total: f64 = c1.keys().map(|m| grew(m)).sum();
    // A loaded machine may pause the chain; a missed head is walked over
    // IPC then. Before: 8 calls per block at 1 block/s.
    let per_block = grew("eth_getBlockByNumber") + grew("clique_getSigner");
    assert!(
        per_block <= 4.0,
        "{per_block} block or signer calls over {moved} blocks: {c0:?} → {c1:?}"
    );
    assert!(
        total <= moved * 4.0,
        "{total} calls over {moved} blocks: {c0:?} → {c1:?}"
    );
    Ok(())
}
