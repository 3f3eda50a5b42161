//! What a wallet needs to add the chain (EIP-3085 `wallet_addEthereumChain`
//! parameters), served to the dashboard's "Add to MetaMask" button at
//! `GET /api/wallet`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use geth_wire::network::Network;
use serde_json::{json, Value};

use super::GatewayArgs;
use crate::state::App;

/// The chain's parameters, when the gateway serves it.
pub fn chain_params(network: &Network, args: &GatewayArgs) -> Option<Value> {
    let listen = args.gateway_listen?;
    let url = args.gateway_public_url.clone().unwrap_or_else(|| {
        // An unspecified address is no URL a wallet can use.
        let host = if listen.ip().is_unspecified() {
            "localhost".to_owned()
        } else {
            listen.ip().to_string()
        };
        format!("https://{host}:{}", listen.port())
    });
    Some(json!({
        "chainId": format!("{:#x}", network.chain_id),
        "chainName": network.name,
        "rpcUrls": [url.trim_end_matches('/')],
        "nativeCurrency": {"name": args.gateway_currency, "symbol": args.gateway_currency, "decimals": 18},
    }))
}

pub async fn params(State(app): State<Arc<App>>) -> Response {
    match &app.wallet {
        Some(params) => Json(params.clone()).into_response(),
        None => crate::ingest::error(
            StatusCode::NOT_FOUND,
            "this aggregator serves no JSON-RPC gateway (--gateway-listen)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn the_parameters_follow_eip_3085() {
        let network: Network = serde_json::from_str(
            r#"{"name":"testnetsidechain","chain_id":1337,"period":2,"nodes":[]}"#,
        )
        .unwrap();
        let cli = crate::Cli::parse_from([
            "geth-aggregator",
            "--network",
            "n.json",
            "--gateway-listen",
            "0.0.0.0:8443",
        ]);
        let p = chain_params(&network, &cli.gateway).unwrap();
        assert_eq!(p["chainId"], "0x539");
        assert_eq!(p["chainName"], "testnetsidechain");
        assert_eq!(p["rpcUrls"], json!(["https://localhost:8443"]));
        assert_eq!(p["nativeCurrency"]["decimals"], 18);
        let off = crate::Cli::parse_from(["geth-aggregator", "--network", "n.json"]);
        assert_eq!(chain_params(&network, &off.gateway), None);
    }
}
