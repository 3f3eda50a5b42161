//! Signatures per second of the signing service over HTTP against a local
//! node (anvil): first requests (every check of the checklist, one signature,
//! one store record each) and repeated ones (cache, one canonical-block read).
//! Run: `cargo bench -p geth-bridge --bench signing` (DEPOSITS=n to change the count).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use alloy::primitives::U256;
use anyhow::{ensure, Result};
use common::*;
use geth_bridge::client;
use geth_bridge::contracts::IBridge;

#[tokio::main]
async fn main() -> Result<()> {
    let count: usize = std::env::var("DEPOSITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir()?;
    let Erc20Pair {
        a,
        b: _b,
        token_a,
        config,
        ..
    } = erc20_pair(dir.path(), (31_337_501, 31_337_502), false).await?;
    let (url, _task) = serve_in_process(&config).await?;
    let user = a.chain.admin_provider()?;
    a.chain
        .call(
            token_a,
            &IBridge::mintCall {
                to: a.chain.admin.address(),
                value: U256::from(1_000_000u64),
            },
        )
        .await?;
    let mut deposits = Vec::with_capacity(count);
    for _ in 0..count {
        let r = client::deposit(&user, token_a, a.chain.admin.address(), U256::from(1u64)).await?;
        deposits.push(r.transaction_hash);
    }
    a.mine(1).await?;

    let http = reqwest::Client::new();
    let mut firsts = Vec::with_capacity(count);
    let started = Instant::now();
    for tx in &deposits {
        firsts.push(client::fetch_signature(&http, &url, "a-to-b", *tx, None).await?);
    }
    let first = started.elapsed();
    let started = Instant::now();
    for (tx, signed) in deposits.iter().zip(&firsts) {
        let again = client::fetch_signature(&http, &url, "a-to-b", *tx, None).await?;
        ensure!(
            again.signature == signed.signature,
            "a repeated request changed the signature"
        );
    }
    let cached = started.elapsed();
    let rate = |d: std::time::Duration| count as f64 / d.as_secs_f64();
    println!("bridge signing, {count} deposits, sequential HTTP requests against anvil:");
    println!(
        "  first requests:    {:>8.1} signatures/s ({:?} total)",
        rate(first),
        first
    );
    println!(
        "  repeated (cached): {:>8.1} signatures/s ({:?} total)",
        rate(cached),
        cached
    );
    Ok(())
}
