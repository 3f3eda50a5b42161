//! Command line of `geth-bridge`.

use std::path::PathBuf;

use alloy::primitives::{Address, TxHash, U256};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "geth-bridge",
    version,
    about = "Bridge signing service and client"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The wallet of a client command: an encrypted keystore and its password file.
#[derive(Debug, clap::Args)]
pub struct Wallet {
    #[arg(long)]
    pub keystore: PathBuf,
    #[arg(long)]
    pub password_file: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the signing service (config: TOML, see docs/BRIDGE.md).
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Create an encrypted keystore for a direction's signing key; prints its address.
    NewKey {
        /// Folder for the keystore file.
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        password_file: PathBuf,
    },
    /// Deposit an amount (ERC-20) or a token id (ERC-721) for `recipient` on the peer chain.
    Deposit {
        #[arg(long)]
        rpc: String,
        #[command(flatten)]
        wallet: Wallet,
        #[arg(long)]
        contract: Address,
        #[arg(long)]
        recipient: Address,
        #[arg(long)]
        value: U256,
    },
    /// Fetch the signatures of a deposit (one per --service) and submit the claim
    /// on the destination. Also resumes a transfer left "in between".
    Claim {
        /// Destination chain's RPC.
        #[arg(long)]
        rpc: String,
        #[command(flatten)]
        wallet: Wallet,
        /// Signing service base URL; repeat for each validator of a t-of-n set.
        #[arg(long = "service", required = true)]
        services: Vec<String>,
        #[arg(long)]
        direction: String,
        #[arg(long)]
        tx: TxHash,
        #[arg(long)]
        log_index: Option<u64>,
    },
}
