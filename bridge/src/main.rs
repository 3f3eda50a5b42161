//! `geth-bridge`: the signing service (`serve`) and its client commands.

mod cli;

use std::process::ExitCode;

use alloy::network::EthereumWallet;
use alloy::providers::ProviderBuilder;
use alloy::signers::local::PrivateKeySigner;
use clap::Parser;
use geth_bridge::{client, Config, Service};

use cli::{Cli, Command, Wallet};

/// Configuration errors exit with EX_USAGE.
const EXIT_CONFIG: u8 = 64;

#[derive(Debug, thiserror::Error)]
enum MainError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Run(String),
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(MainError::Config(m)) => {
            eprintln!("geth-bridge: {m}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(MainError::Run(m)) => {
            eprintln!("geth-bridge: {m}");
            ExitCode::FAILURE
        }
    }
}

fn usage<E: std::fmt::Display>(e: E) -> MainError {
    MainError::Config(e.to_string())
}

fn failed<E: std::fmt::Display>(e: E) -> MainError {
    MainError::Run(e.to_string())
}

fn open_wallet(w: &Wallet) -> Result<PrivateKeySigner, MainError> {
    let password = std::fs::read_to_string(&w.password_file)
        .map_err(|e| usage(format!("{}: {e}", w.password_file.display())))?;
    PrivateKeySigner::decrypt_keystore(&w.keystore, password.trim_end())
        .map_err(|e| usage(format!("{}: {e}", w.keystore.display())))
}

async fn run(cli: Cli) -> Result<(), MainError> {
    match cli.command {
        Command::Serve { config: path } => {
            let config = Config::load(&path).map_err(usage)?;
            let service = Service::new(&config).map_err(usage)?;
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .map_err(|e| usage(format!("listen {}: {e}", config.listen)))?;
            let addr = listener.local_addr().map_err(failed)?;
            tracing::info!(%addr, "bridge signing service listening");
            geth_bridge::serve(service, config.rate_limit_per_minute, listener, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .map_err(failed)
        }
        Command::NewKey { dir, password_file } => {
            let password = std::fs::read_to_string(&password_file)
                .map_err(|e| usage(format!("{}: {e}", password_file.display())))?;
            std::fs::create_dir_all(&dir).map_err(failed)?;
            let (signer, file) = PrivateKeySigner::new_keystore(
                &dir,
                &mut rand_core_rng(),
                password.trim_end(),
                None,
            )
            .map_err(failed)?;
            println!("{} {}", signer.address(), dir.join(file).display());
            Ok(())
        }
        Command::Deposit {
            rpc,
            wallet,
            contract,
            recipient,
            value,
        } => {
            let provider = ProviderBuilder::new()
                .wallet(EthereumWallet::from(open_wallet(&wallet)?))
                .connect_http(rpc.parse().map_err(usage)?);
            let receipt = client::deposit(&provider, contract, recipient, value)
                .await
                .map_err(failed)?;
            println!("{}", receipt.transaction_hash);
            Ok(())
        }
        Command::Claim {
            rpc,
            wallet,
            services,
            direction,
            tx,
            log_index,
        } => {
            let provider = ProviderBuilder::new()
                .wallet(EthereumWallet::from(open_wallet(&wallet)?))
                .connect_http(rpc.parse().map_err(usage)?);
            let http = reqwest::Client::new();
            let mut signed = Vec::new();
            for service in &services {
                signed.push(
                    client::fetch_signature(&http, service, &direction, tx, log_index)
                        .await
                        .map_err(failed)?,
                );
            }
            let receipt = client::claim(&provider, &signed).await.map_err(failed)?;
            println!("{}", receipt.transaction_hash);
            Ok(())
        }
    }
}

fn rand_core_rng() -> impl alloy::signers::k256::elliptic_curve::rand_core::CryptoRngCore {
    alloy::signers::k256::elliptic_curve::rand_core::OsRng
}
