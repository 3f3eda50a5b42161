//! The gas price floor on real geth under its agent: applied at start, a
//! readiness condition, exported, and what geth advises wallets read back.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use serde_json::Value;
use testnet::{
    eventually, http_get, http_post_json, metric_value, Launcher, NetworkOptions, TestNetwork,
};

const AGENT: &str = env!("CARGO_BIN_EXE_geth-agent");
const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn the_gas_floor_gates_readiness_and_geth_advises_it() -> Result<()> {
    let net = TestNetwork::start(NetworkOptions {
        signers: 1,
        validators: 1,
        launcher: Launcher::Agent(AGENT.into()),
        ..Default::default()
    })
    .await?;
    let net = &net;
    for i in 0..2 {
        let agent: SocketAddr = ([127, 0, 0, 1], net.nodes[i].info.ports.agent).into();
        let condition = eventually("the gas floor to be applied", 3 * MINUTE, || async move {
            let (_, body) = http_get(agent, "/readyz?verbose").await?;
            let json: Value = serde_json::from_str(&body)?;
            let gas = json["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["name"] == "gas_price_floor"))
                .cloned();
            Ok(gas.filter(|g| g["ok"] == true))
        })
        .await?;
        assert_eq!(condition["value"], "0 wei applied", "{condition}");
        let text = eventually("the advised price in the metrics", MINUTE, || async move {
            let (_, text) = http_get(agent, "/metrics").await?;
            Ok(metric_value(&text, "clique_gas_price_suggested_wei").map(|_| text))
        })
        .await?;
        assert_eq!(metric_value(&text, "clique_gas_price_floor_wei"), Some(0.0));
        // geth cannot advise 0: the agent caps its oracle at 1 wei (not 1 gwei).
        assert_eq!(
            metric_value(&text, "clique_gas_price_suggested_wei"),
            Some(1.0)
        );
        assert_eq!(
            metric_value(&text, "clique_agent_gas_price_set_failures_total"),
            Some(0.0)
        );
    }
    // What a wallet asks the users' RPC (the validator).
    let rpc: SocketAddr = ([127, 0, 0, 1], net.nodes[1].info.ports.http).into();
    let (_, answer) = http_post_json(
        rpc,
        r#"{"jsonrpc":"2.0","id":1,"method":"eth_gasPrice","params":[]}"#,
    )
    .await?;
    let answer: Value = serde_json::from_str(&answer)?;
    assert_eq!(answer["result"], "0x1", "{answer}");
    Ok(())
}
