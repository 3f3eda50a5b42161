//! geth-aggregator: one per network. Takes signed reports from every
//! geth-agent and geth's own ethstats feed, keeps history in SQLite, and serves
//! the live dashboard, fleet metrics and peer discovery.

pub mod auth;
pub mod bridge_proxy;
pub mod bundle;
pub mod ecdsa;
pub mod ethstats;
pub mod fleet;
pub mod gate;
pub mod gateway;
pub mod identity;
pub mod idle;
pub mod ingest;
pub mod live;
pub mod operator;
pub mod refusals;
pub mod registry;
pub mod restarts;
pub mod routes;
pub mod signers;
pub mod solidity;
pub mod state;
pub mod store;
pub mod validate;
pub mod web;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use live::{Live, NetworkInfo, SignerNode};
use registry::Registry;
pub use routes::serve;
use state::{now_ms, App};
use store::Store;

/// Default HTTP address for the dashboard, API and ethstats `/api`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

#[derive(Debug, Parser)]
#[command(
    name = "geth-aggregator",
    version,
    about = "Live dashboard, signed node reports and fleet metrics for a geth clique network",
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Subcommand>,
    /// Address to serve the dashboard, API and ethstats `/api` on.
    #[arg(long, env = "GETH_AGGREGATOR_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: std::net::SocketAddr,
    /// The network description written by `geth-agent network new`: which nodes
    /// (by node key) may report, their names and the signers.
    #[arg(
        long,
        env = "GETH_AGGREGATOR_NETWORK",
        value_name = "network.json",
        required = true
    )]
    pub network: Option<PathBuf>,
    /// SQLite database file (created if missing).
    #[arg(long, env = "GETH_AGGREGATOR_DB", default_value = "aggregator.db")]
    pub db: PathBuf,
    /// Credentials for geth's own `--ethstats NAME:SECRET@host:port` reporter,
    /// one per node: NAME=SECRET (repeat, or comma-separate in the env var).
    #[arg(
        long = "ethstats-secret",
        env = "GETH_AGGREGATOR_ETHSTATS_SECRETS",
        value_delimiter = ',',
        value_name = "NAME=SECRET"
    )]
    pub ethstats_secrets: Vec<String>,
    /// Raise the stall alarm after this many block periods without a block.
    #[arg(long, env = "GETH_AGGREGATOR_STALL_PERIODS", default_value_t = 10)]
    pub stall_periods: u64,
    /// Raise "history rewritten" when a block of the reference chain is
    /// replaced after this many blocks were built on it.
    #[arg(
        long,
        env = "GETH_AGGREGATOR_REWRITE_CONFIRMATIONS",
        default_value_t = live::DEFAULT_REWRITE_CONFIRMATIONS,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub rewrite_confirmations: u64,
    /// Blocks kept in the database.
    #[arg(
        long,
        env = "GETH_AGGREGATOR_RETENTION_BLOCKS",
        default_value_t = 100_000
    )]
    pub retention_blocks: u64,
    /// Blocks first seen more than this many days ago are deleted (0: keep
    /// by count only).
    #[arg(long, env = "GETH_AGGREGATOR_RETENTION_DAYS", default_value_t = 0)]
    pub retention_days: u64,
    /// Bytes the database may use: over it, the oldest blocks are deleted, a
    /// tenth of them at a time (0: no bound). Accepts a plain byte count.
    #[arg(long, env = "GETH_AGGREGATOR_RETENTION_BYTES", default_value_t = 0)]
    pub retention_bytes: u64,
    /// Per-node sighting times are kept for this many of the newest blocks;
    /// older blocks keep a propagation summary (nodes, p50, p90, max).
    #[arg(
        long,
        env = "GETH_AGGREGATOR_SIGHTING_DETAIL_BLOCKS",
        default_value_t = 1_000,
        value_parser = clap::value_parser!(u64).range(256..)
    )]
    pub sighting_detail_blocks: u64,
    /// Newest lifecycle events kept per node.
    #[arg(
        long,
        env = "GETH_AGGREGATOR_RETENTION_EVENTS",
        default_value_t = 10_000
    )]
    pub retention_events: u64,
    /// Lifecycle events older than this many days are deleted (0: keep by count only).
    #[arg(
        long,
        env = "GETH_AGGREGATOR_RETENTION_EVENT_DAYS",
        default_value_t = 365
    )]
    pub retention_event_days: u64,
    /// The aggregator's signing key (64 hex digits, like a geth nodekey);
    /// default: `aggregator.key` of network.json, relative to its folder.
    #[arg(long = "key", env = "GETH_AGGREGATOR_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// File holding the admin token that operator endpoints (rolling
    /// restarts) require as `Authorization: Bearer <token>`; without it they
    /// answer 401.
    #[arg(long, env = "GETH_AGGREGATOR_ADMIN_TOKEN_FILE", value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// The network's genesis file, served in the join bundle (`/api/bundle`)
    /// [default: genesis.json beside network.json, if present].
    #[arg(long, env = "GETH_AGGREGATOR_GENESIS", value_name = "FILE")]
    pub genesis: Option<PathBuf>,
    /// Live stream: a change that follows the last one sent to the
    /// dashboards within this many milliseconds is held, and leaves with the
    /// next change after the window, or when it has waited this long. A
    /// burst of reports then costs each viewer a few writes instead of one
    /// per report; 0 sends every change at once.
    #[arg(
        long,
        env = "GETH_AGGREGATOR_STREAM_WINDOW_MS",
        default_value_t = 3,
        value_parser = clap::value_parser!(u64).range(0..=1000)
    )]
    pub stream_window_ms: u64,
    /// Threads that run the async work (SQLite writes have threads of their
    /// own). One (tokio's single-thread scheduler) keeps a fleet's reports
    /// and dashboards cheapest: a second thread mostly wakes to steal one
    /// task (at 100 reporters, 0.70 against 0.94 s of CPU a minute, `cargo
    /// bench --bench load`); give more to a gateway that serves many wallets.
    #[arg(
        long,
        env = "GETH_AGGREGATOR_WORKER_THREADS",
        default_value_t = 1,
        value_parser = clap::value_parser!(u16).range(1..=256)
    )]
    pub worker_threads: u16,
    #[command(flatten)]
    pub gateway: gateway::GatewayArgs,
    #[command(flatten)]
    pub solidity: solidity::SolidityArgs,
    #[command(flatten)]
    pub bridge: bridge_proxy::BridgeArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum Subcommand {
    /// Rolling restart of the network's nodes, one at a time, quorum-safe:
    /// `restart --order 2,3,1`, `restart --auto`, `restart status|resume|abort`.
    Restart(restarts::cli::RestartArgs),
    /// Admit or remove nodes that joined with `geth-agent join`:
    /// `nodes admit <enode|address>`, `nodes remove <enode|address>`, `nodes list`.
    Nodes(signers::cli::NodesArgs),
    /// Change the signer set by clique votes the aggregator drives:
    /// `signers add <node>`, `signers remove <address|node>`, `signers status`.
    Signers(signers::cli::SignersArgs),
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Network(#[from] geth_wire::network::NetworkFileError),
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Key(#[from] identity::KeyError),
    #[error(transparent)]
    Gateway(#[from] gateway::GatewayError),
    #[error(transparent)]
    Solidity(#[from] solidity::SolidityError),
    #[error(transparent)]
    Genesis(#[from] bundle::GenesisError),
    #[error(transparent)]
    Bridge(#[from] bridge_proxy::BridgeUrlError),
}

/// The JSON-RPC gateway and its TLS configuration, when `--gateway-listen`
/// is given (certificate problems are configuration errors).
pub fn build_gateway(
    cli: &Cli,
    app: &Arc<App>,
) -> Result<Option<(Arc<gateway::Gateway>, axum_server::tls_rustls::RustlsConfig)>, SetupError> {
    if cli.gateway.gateway_listen.is_none() {
        return Ok(None);
    }
    let tls = gateway::load_tls(&cli.gateway)?;
    let path = cli
        .network
        .as_deref()
        .ok_or_else(|| SetupError::Config("--network is required".into()))?;
    let network = geth_wire::network::Network::load_file(path)?;
    let gw = gateway::Gateway::new(app.clone(), &network, &cli.gateway)?;
    Ok(Some((gw, tls)))
}

/// Builds the application: registry, store (history restored), live view.
pub fn build(cli: &Cli) -> Result<Arc<App>, SetupError> {
    let mut secrets = HashMap::new();
    for pair in &cli.ethstats_secrets {
        let (name, secret) = pair
            .split_once('=')
            .filter(|(n, s)| !n.is_empty() && !s.is_empty())
            .ok_or_else(|| {
                SetupError::Config(format!("--ethstats-secret {pair:?}: expected NAME=SECRET"))
            })?;
        secrets.insert(name.to_owned(), secret.to_owned());
    }
    let network_path = cli
        .network
        .as_deref()
        .ok_or_else(|| SetupError::Config("--network is required".into()))?;
    let admin_token = match &cli.admin_token_file {
        Some(path) => {
            let token = std::fs::read_to_string(path)
                .map_err(|e| {
                    SetupError::Config(format!("--admin-token-file {}: {e}", path.display()))
                })?
                .trim()
                .to_owned();
            if token.len() < 16 {
                return Err(SetupError::Config(format!(
                    "--admin-token-file {}: the token must be at least 16 characters",
                    path.display()
                )));
            }
            Some(token)
        }
        None => None,
    };
    let network = geth_wire::network::Network::load_file(network_path)?;
    let registry = Registry::from_network(&network, network_path)?;
    let members: Vec<restarts::Member> = network
        .nodes
        .iter()
        .filter_map(|n| {
            Some(restarts::Member {
                id: format!("{:#x}", registry::enode_address(&n.enode)?),
                name: n.name.clone(),
                signer: n.signer.map(|s| format!("{s:#x}")),
            })
        })
        .collect();
    let signers: Vec<String> = network
        .signers()
        .filter_map(|n| n.signer.map(|s| format!("{s:#x}")))
        .collect();
    let signer_nodes = registry
        .iter()
        .filter_map(|(address, n)| {
            Some(SignerNode {
                id: format!("{address:#x}"),
                name: n.name.clone(),
                signer: format!("{:#x}", n.signer?),
            })
        })
        .collect();
    let loaded = identity::load(&network, network_path, cli.key.as_deref())?;
    if let Some(warning) = &loaded.warning {
        tracing::warn!("{warning}");
    }
    tracing::info!(address = %format!("{:#x}", loaded.identity.address()), "aggregator key");
    let mut live = Live::new(
        NetworkInfo {
            name: network.name.clone(),
            chain_id: Some(network.chain_id),
            period: network.period,
        },
        &signers,
        signer_nodes,
        cli.stall_periods,
    );
    live.rewrite_confirmations = cli.rewrite_confirmations;
    live.set_stream_window(std::time::Duration::from_millis(cli.stream_window_ms));
    let store = Store::open_with(
        &cli.db,
        store::StoreOptions {
            retention_blocks: cli.retention_blocks,
            blocks_max_age: (cli.retention_days > 0)
                .then(|| Duration::from_secs(cli.retention_days * 24 * 3600)),
            blocks_max_bytes: (cli.retention_bytes > 0).then_some(cli.retention_bytes),
            sighting_detail_blocks: cli.sighting_detail_blocks,
            events_per_node: cli.retention_events,
            events_max_age: (cli.retention_event_days > 0)
                .then(|| Duration::from_secs(cli.retention_event_days * 24 * 3600)),
            ..store::StoreOptions::default()
        },
    )?;
    let admitted = signers::admission::restore(&registry, &store)?;
    if admitted > 0 {
        tracing::info!(admitted, "admitted nodes restored");
    }
    restore(&store, &registry, &mut live)?;
    let chain = match &cli.genesis {
        Some(path) => Some(bundle::ChainInfo::load(&network, path)?),
        None => {
            let path = network_path
                .parent()
                .unwrap_or_else(|| std::path::Path::new("."))
                .join("genesis.json");
            if path.exists() {
                Some(bundle::ChainInfo::load(&network, &path)?)
            } else {
                tracing::warn!(path = %path.display(), "no genesis file: /api/bundle answers 404 (give --genesis)");
                None
            }
        }
    };
    let restarts = restarts::Restarts::load(members, store.clone())?;
    let mut app = App::new(registry, live, store, secrets, loaded.identity);
    app.admin_token = admin_token;
    app.restarts = restarts;
    app.chain = chain;
    app.wallet = gateway::wallet::chain_params(&network, &cli.gateway);
    app.solidity = solidity::Solidity::load(&cli.solidity, &network, network_path)?;
    app.bridge = bridge_proxy::BridgeProxy::from_args(&cli.bridge)?;
    Ok(Arc::new(app))
}

/// Replays stored history into the live view, so a restart shows the same page.
fn restore(store: &Store, registry: &Registry, live: &mut Live) -> Result<(), SetupError> {
    let name_of = |id: &str| {
        id.parse()
            .ok()
            .and_then(|a| registry.get(&a))
            .map(|n| n.name)
            .unwrap_or_else(|| id.trim_start_matches("ethstats:").to_owned())
    };
    let mut sightings = Vec::new();
    for stored in store.recent_blocks(256)?.into_iter().rev() {
        for (node, seen) in &stored.sightings {
            let mut block = stored.block.clone();
            block.seen_at_ms = *seen;
            sightings.push((block, node.clone()));
        }
    }
    sightings.sort_by_key(|(b, _)| (b.number, b.seen_at_ms));
    for (block, node) in sightings {
        let source = if node.starts_with("ethstats:") {
            "ethstats"
        } else {
            "agent"
        };
        let at = block.seen_at_ms;
        // Stored history passes the same checks as new reports.
        if live.check_block(&node, &block, now_ms()).is_ok() {
            live.on_block(&node, &name_of(&node), source, &block, at);
        }
    }
    for (id, name, stats, updated) in store.nodes()? {
        if let Ok(mut stats) = serde_json::from_str::<geth_wire::StatsReport>(&stats) {
            stats.name = name;
            live.on_stats(&id, &stats, updated, None);
        }
    }
    live.tick(now_ms());
    Ok(())
}
