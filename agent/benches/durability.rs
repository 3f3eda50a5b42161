//! Benchmark: what durability costs. The same block and transaction load on a
//! one-signer clique chain with `archive` (geth `--gcmode archive`) and
//! `standard` (geth's default): disk per 10,000 blocks, time to seal a block,
//! and time to import the same chain, side by side.
//!
//! `cargo bench -p geth-agent --bench durability`
//!   BENCH_BLOCKS       blocks per run [default 500; 10000 for the documented figures]
//!   BENCH_TRANSFERS    transfers per block of the loaded run [default 20]
//!
//! A period-0 clique chain seals only blocks with transactions, so blocks can be
//! made as fast as geth seals them; the light load is therefore one transfer
//! per block (the smallest block such a chain makes), the loaded run
//! BENCH_TRANSFERS. Each block gets exactly its transfers: the miner is started
//! once they are in the pool and stopped after the block. Seal time includes
//! submitting the transfers over IPC. The sealed chain of the archive run is then
//! exported and imported into a fresh datadir in each mode (`geth import`).
//! Disk is the datadir's `geth/` folder after a clean stop (after the import)
//! minus what a freshly initialised datadir holds. Import time includes
//! starting geth (about half a second), so short runs overstate it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use anyhow::{bail, ensure, Context, Result};
use nix::sys::signal::Signal;
use serde_json::Value;
use testnet::{geth_bin, Launcher, NetworkOptions, TestNetwork};

const MODES: [(&str, &[&str]); 2] = [("archive", &["--gcmode", "archive"]), ("standard", &[])];

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

struct Sealed {
    net: TestNetwork,
    elapsed: Duration,
    disk: u64,
}

/// Seals `blocks` blocks of `per_block` transfers each with geth in one mode,
/// then stops geth cleanly.
async fn seal(mode_args: &[&str], blocks: u64, per_block: u64) -> Result<Sealed> {
    let mut net = TestNetwork::generate(&NetworkOptions {
        signers: 1,
        period: 0,
        launcher: Launcher::Geth,
        geth_args: vec![(0, mode_args.iter().map(|a| (*a).to_owned()).collect())],
        ..Default::default()
    })?;
    net.spawn(0)?;
    let rpc = geth_agent::rpc::GethRpc::connect_by(
        &net.nodes[0].ipc(),
        tokio::time::Instant::now() + Duration::from_secs(120),
    )
    .await?;
    let account = &net.network.accounts[0];
    let password = std::fs::read_to_string(net.network_dir.join("accounts/password"))?;
    let wallet =
        PrivateKeySigner::decrypt_keystore(net.network_dir.join(&account.keystore), password)?;
    let provider = net.nodes[0]
        .wallet_provider(EthereumWallet::from(wallet))
        .await?;
    let mut nonce = 0u64;
    let started = Instant::now();
    for block in 1..=blocks {
        for _ in 0..per_block {
            let tx = TransactionRequest::default()
                .with_to(Address::repeat_byte(0x42))
                .with_value(U256::from(1u64))
                .with_nonce(nonce)
                .with_chain_id(net.network.chain_id)
                .with_gas_limit(21_000)
                .with_gas_price(1_000_000_000);
            let _pending = provider.send_transaction(tx).await?;
            nonce += 1;
        }
        let _: Value = rpc.call("miner_start", ()).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while rpc.block_number().await? < block {
            if Instant::now() > deadline {
                bail!("block {block} not sealed within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let _: Value = rpc.call("miner_stop", ()).await?;
    }
    let elapsed = started.elapsed();
    let head = rpc.block(blocks.into()).await?;
    ensure!(
        head.transactions.len() as u64 == per_block,
        "block {blocks} holds {} transfers, not {per_block}",
        head.transactions.len()
    );
    drop(rpc);
    net.nodes[0].signal(Signal::SIGTERM)?;
    let status = net.nodes[0].wait_exit(Duration::from_secs(120)).await?;
    ensure!(status.success(), "geth stopped with {status}");
    let disk = dir_size(&net.nodes[0].datadir.join("geth"));
    Ok(Sealed { net, elapsed, disk })
}

/// `geth import` of `chain` into a fresh datadir in one mode: (time, disk,
/// disk of the freshly initialised datadir).
fn import(
    genesis: &Path,
    chain: &Path,
    dir: &Path,
    mode_args: &[&str],
) -> Result<(Duration, u64, u64)> {
    let datadir = dir.join("data");
    let geth = geth_bin();
    let init = std::process::Command::new(&geth)
        .arg("--datadir")
        .arg(&datadir)
        .arg("init")
        .arg(genesis)
        .output()?;
    ensure!(init.status.success(), "geth init failed");
    let base = dir_size(&datadir.join("geth"));
    let started = Instant::now();
    let out = std::process::Command::new(&geth)
        .arg("--datadir")
        .arg(&datadir)
        .args(mode_args)
        .args([
            "--nodiscover",
            "--nat",
            "none",
            "--netrestrict",
            "127.0.0.0/8",
        ])
        .arg("import")
        .arg(chain)
        .output()?;
    let took = started.elapsed();
    ensure!(
        out.status.success(),
        "geth import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((took, dir_size(&datadir.join("geth")), base))
}

fn export(sealed: &Sealed, to: &Path) -> Result<()> {
    let out = std::process::Command::new(geth_bin())
        .arg("--datadir")
        .arg(&sealed.net.nodes[0].datadir)
        .arg("export")
        .arg(to)
        .output()?;
    ensure!(
        out.status.success(),
        "geth export failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
}

#[tokio::main]
async fn main() -> Result<()> {
    let blocks = env_u64("BENCH_BLOCKS", 500).max(1);
    let loaded = env_u64("BENCH_TRANSFERS", 20).max(1);
    // Disk grows with blocks above what a fresh datadir holds.
    let per_10k =
        |disk: u64, base: u64| disk.saturating_sub(base) as f64 * 10_000.0 / blocks as f64;
    println!(
        "durability benchmark: {blocks} blocks per run, geth {}",
        geth_bin().display()
    );
    if blocks < 10_000 {
        println!(
            "(disk per 10,000 blocks is extrapolated linearly from {blocks} blocks; \
             set BENCH_BLOCKS=10000 to measure it)"
        );
    }
    let work = tempfile::Builder::new().prefix("durability-").tempdir()?;
    println!(
        "{:<24} {:>9} {:>18} {:>14} {:>14} {:>18}",
        "load", "mode", "disk/10k blocks", "seal ms/block", "import ms/blk", "import disk/10k"
    );
    for (label, per_block) in [("1 transfer/block", 1), ("transfers/block", loaded)] {
        let label = if per_block == 1 {
            label.to_owned()
        } else {
            format!("{per_block} {label}")
        };
        let mut sealed = Vec::new();
        for (mode, args) in MODES {
            let s = seal(args, blocks, per_block)
                .await
                .with_context(|| format!("sealing in {mode} mode"))?;
            sealed.push((mode, args, s));
        }
        // The archive run's chain, imported in both modes: the very same blocks.
        let chain = work.path().join(format!("chain-{per_block}.rlp"));
        export(&sealed[0].2, &chain)?;
        let genesis = sealed[0].2.net.genesis();
        for (mode, args, s) in &sealed {
            let dir: PathBuf = work.path().join(format!("import-{per_block}-{mode}"));
            let (took, disk, base) = import(&genesis, &chain, &dir, args)?;
            println!(
                "{:<24} {:>9} {:>18} {:>14.2} {:>14.2} {:>18}   (measured: sealed {}, imported {}, fresh datadir {})",
                label,
                mode,
                mib(per_10k(s.disk, base)),
                s.elapsed.as_secs_f64() * 1000.0 / blocks as f64,
                took.as_secs_f64() * 1000.0 / blocks as f64,
                mib(per_10k(disk, base)),
                mib(s.disk as f64),
                mib(disk as f64),
                mib(base as f64),
            );
            let _ = std::fs::remove_dir_all(&dir);
        }
        let _ = std::fs::remove_file(&chain);
    }
    Ok(())
}
