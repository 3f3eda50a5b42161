//! The Solidity page at `/solidity`: an editor, solc compiling in the
//! browser, deploy and call. Its bundle is embedded; solc's soljson and the
//! OpenZeppelin sources come from an installed npm folder
//! (`--solidity-assets`). With `--solidity-dev-accounts` the page also gets
//! the keys of the network's funded accounts and signs in the browser,
//! sending raw transactions through the restricted pass-through
//! `/solidity/rpc` to ready non-signer nodes.

pub mod assets;
pub mod rpc;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use geth_wire::network::Network;
use serde_json::{json, Value};

use crate::state::App;

/// The EVM version the page compiles for by default: the chain's genesis
/// enables forks up to Berlin.
pub const EVM_VERSION: &str = "berlin";

/// Options of the Solidity page (all `--solidity-*`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SolidityArgs {
    /// The page's npm folder (node_modules of aggregator/web/solidity, made by
    /// scripts/install-deps): solc's soljson.js for compiling in the browser
    /// and OpenZeppelin's sources for imports. Without it the page cannot
    /// compile.
    #[arg(
        long = "solidity-assets",
        env = "GETH_AGGREGATOR_SOLIDITY_ASSETS",
        value_name = "DIR"
    )]
    pub solidity_assets: Option<PathBuf>,
    /// Hand the private keys of network.json's funded accounts to every
    /// visitor of /solidity, and let the page send raw transactions through
    /// /solidity/rpc. For local development networks only.
    #[arg(
        long = "solidity-dev-accounts",
        env = "GETH_AGGREGATOR_SOLIDITY_DEV_ACCOUNTS"
    )]
    pub solidity_dev_accounts: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SolidityError {
    #[error("--solidity-assets {path}: {reason} (run scripts/install-deps)")]
    Assets { path: String, reason: String },
    #[error("--solidity-dev-accounts: {path}: {reason}")]
    Account { path: String, reason: String },
    #[error("--solidity-dev-accounts: network.json lists no funded accounts")]
    NoAccounts,
}

/// A funded account whose key the page gets.
#[derive(Debug, Clone)]
pub struct DevAccount {
    pub address: String,
    pub key: String,
}

/// The page's configuration and its pass-through.
#[derive(Default)]
pub struct Solidity {
    /// Validated npm folder.
    pub assets: Option<PathBuf>,
    /// solc's version (from its package.json).
    pub compiler: Option<String>,
    /// Keys handed to the page (None: off).
    pub dev_accounts: Option<Vec<DevAccount>>,
    pub chain_id: u64,
    pub rpc: rpc::PassThrough,
}

impl Solidity {
    /// Checks the assets folder and, when enabled, decrypts the development
    /// accounts' keystores (network folder: `network_path`'s parent).
    pub fn load(
        args: &SolidityArgs,
        network: &Network,
        network_path: &Path,
    ) -> Result<Self, SolidityError> {
        let (assets, compiler) = match &args.solidity_assets {
            Some(dir) => {
                let version = assets::check(dir)?;
                (Some(dir.clone()), Some(version))
            }
            None => (None, None),
        };
        let dev_accounts = if args.solidity_dev_accounts {
            Some(dev_accounts(network, network_path)?)
        } else {
            None
        };
        let writes = dev_accounts.is_some();
        Ok(Self {
            assets,
            compiler,
            dev_accounts,
            chain_id: network.chain_id,
            rpc: rpc::PassThrough::new(network, writes),
        })
    }
}

/// Decrypts every account of network.json with `accounts/password`.
fn dev_accounts(network: &Network, network_path: &Path) -> Result<Vec<DevAccount>, SolidityError> {
    if network.accounts.is_empty() {
        return Err(SolidityError::NoAccounts);
    }
    let dir = network_path.parent().unwrap_or(Path::new("."));
    let password_file = dir.join("accounts/password");
    let password = std::fs::read_to_string(&password_file).map_err(|e| SolidityError::Account {
        path: password_file.display().to_string(),
        reason: e.to_string(),
    })?;
    network
        .accounts
        .iter()
        .map(|account| {
            let path = dir.join(&account.keystore);
            let signer =
                alloy::signers::local::PrivateKeySigner::decrypt_keystore(&path, password.trim())
                    .map_err(|e| SolidityError::Account {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
            if signer.address() != account.address {
                return Err(SolidityError::Account {
                    path: path.display().to_string(),
                    reason: format!("holds {}, not {}", signer.address(), account.address),
                });
            }
            Ok(DevAccount {
                address: format!("{:#x}", account.address),
                key: format!("0x{}", hex::encode(signer.to_bytes())),
            })
        })
        .collect()
}

/// The page's routes (under `/solidity`).
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/solidity", get(assets::index))
        .route("/solidity/", get(assets::index))
        .route("/solidity/app.js", get(assets::script))
        .route("/solidity/worker.js", get(assets::worker))
        .route("/solidity/style.css", get(assets::style))
        .route("/solidity/soljson.js", get(assets::soljson))
        .route("/solidity/lib/{*path}", get(assets::library))
        .route("/solidity/config", get(config))
        .route("/solidity/rpc", post(rpc::handle))
}

/// What the page needs to start: chain, compiler, and the development
/// accounts when enabled (never cached: it may hold keys).
pub async fn config(State(app): State<Arc<App>>) -> Response {
    let s = &app.solidity;
    let accounts: Option<Vec<Value>> = s.dev_accounts.as_ref().map(|accounts| {
        accounts
            .iter()
            .map(|a| json!({"address": a.address, "key": a.key}))
            .collect()
    });
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({
            "chainId": s.chain_id,
            "evmVersion": EVM_VERSION,
            "compiler": s.compiler,
            "devAccounts": accounts,
            "rpc": "/solidity/rpc",
        })),
    )
        .into_response()
}
