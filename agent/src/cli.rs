//! Command line: `run` (supervise geth), `network new` (generate a network).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::task::TaskTracker;

use crate::admin::{self, AdminState};
use crate::config::RunArgs;
use crate::ctl::{self, CtlArgs};
use crate::http::{self, HttpState};
use crate::metrics::Metrics;
use crate::monitor::Monitor;
use crate::network::{self, genesis, NetworkSpec, NodePorts};
use crate::report::{self, Reporter};
use crate::spool::Spool;
use crate::status::{Mode, NodeStatus};
use crate::supervisor::Supervisor;

/// Exit code for bad usage or configuration (sysexits EX_USAGE).
pub const EXIT_USAGE: u8 = 64;

#[derive(Debug, Parser)]
#[command(name = "geth-agent", version, about = "Supervises one geth v1.13 clique node", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Supervise one geth: as its parent (spawn mode) or beside it (attach
    /// mode). SIGTERM/Ctrl-C stops a spawned geth with exactly one SIGTERM and
    /// records whether it saved its state.
    Run(Box<RunArgs>),
    /// Generate clique networks.
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Talk to a running agent over its admin socket.
    Ctl(CtlArgs),
}

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Write genesis, signer keystores, node keys and per-node configs for a new network.
    New(NewArgs),
}

#[derive(Debug, Args)]
pub struct NewArgs {
    /// Output folder (must not exist or be empty).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Genesis template: testnetsidechain (chain 1337), mainnetsidechain (1338), or a JSON file.
    #[arg(long, default_value = "testnetsidechain")]
    pub chain: String,
    /// Signer (sealing) nodes.
    #[arg(long, default_value_t = 3)]
    pub signers: usize,
    /// Non-signer nodes that follow and validate the chain.
    #[arg(long, default_value_t = 0)]
    pub validators: usize,
    /// Funded user accounts besides the signers (keystores under accounts/).
    #[arg(long, default_value_t = 1)]
    pub accounts: usize,
    /// Clique block period in seconds [default: the template's].
    #[arg(long)]
    pub period: Option<u64>,
    /// Host name or IP in every enode (how peers reach the nodes).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// p2p port of the first node; node i uses port + i.
    #[arg(long, default_value_t = 30303)]
    pub p2p_port: u16,
    /// HTTP JSON-RPC port of the first node; node i uses port + i.
    #[arg(long, default_value_t = 8545)]
    pub http_port: u16,
    /// Agent port (/livez, /readyz, /metrics) of the first node; node i uses port + i.
    #[arg(long, default_value_t = 9101)]
    pub agent_port: u16,
}

pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Run(args) => run_node(*args).await,
        Command::Network(NetworkCommand::New(args)) => new_network(&args),
        Command::Ctl(args) => ctl::run(args).await,
    }
}

async fn run_node(args: RunArgs) -> ExitCode {
    let config = match args.resolve() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("geth-agent: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let cancel = CancellationToken::new();
    if let Err(e) = crate::signals::cancel_on_termination(cancel.clone()) {
        eprintln!("geth-agent: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    let span = tracing::info_span!("node", name = %config.name);
    async move {
        // Bind before anything starts: a busy port is a clear, immediate error.
        let listener = match tokio::net::TcpListener::bind(config.listen).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(listen = %config.listen, error = %e, "cannot listen");
                return ExitCode::FAILURE;
            }
        };
        let admin_listener = match admin::bind(&config.admin_socket) {
            Ok(l) => admin::PeerCheckedListener::new(l, config.admin_allow_root),
            Err(e) => {
                tracing::error!(socket = %config.admin_socket.display(), error = %e, "cannot create the admin socket");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(listen = %config.listen, admin = %config.admin_socket.display(), mode = ?config.mode, "agent starting");

        let (status_tx, status_rx) =
            watch::channel(NodeStatus::new(config.name.clone(), config.mode, config.period));
        let (requests_tx, requests_rx) = mpsc::channel(16);
        let tasks = TaskTracker::new();
        let metrics = Arc::new(Metrics::new(config.geth.signer.as_ref().map(|s| s.address)));
        let http_state = HttpState {
            status: status_rx.clone(),
            readiness: config.readiness,
            metrics: metrics.clone(),
        };
        tasks.spawn(
            crate::metrics::follow_status(metrics.clone(), status_rx.clone(), config.readiness, cancel.clone())
                .in_current_span(),
        );
        tasks.spawn(http::serve(listener, http_state, cancel.clone()).in_current_span());
        let admin_state = AdminState {
            status: status_rx,
            readiness: config.readiness,
            requests: requests_tx,
            ipc: config.geth.ipc_path(),
        };
        tasks.spawn(admin::serve(admin_listener, admin_state, cancel.clone()).in_current_span());
        let mut monitor = Monitor::new(config.geth.ipc_path(), config.geth.datadir.clone(), status_tx.clone(), metrics.clone());

        let mut supervisor = Supervisor::new(config.clone(), status_tx.clone(), requests_rx, cancel.clone());
        if let Some(url) = &config.aggregator {
            let spool = match Spool::open(&config.geth.datadir.join("geth-agent").join("spool")) {
                Ok(s) => Arc::new(s.with_metrics(metrics.clone())),
                Err(e) => {
                    tracing::error!(error = %e, "cannot open the event spool");
                    return ExitCode::FAILURE;
                }
            };
            let key = match config.geth.nodekey.as_deref().map(report::load_node_key) {
                Some(Ok(key)) => key,
                Some(Err(e)) => {
                    tracing::error!(error = %e, "cannot sign reports");
                    return ExitCode::FAILURE;
                }
                None => unreachable!("config requires a nodekey with an aggregator"),
            };
            let (heads_tx, heads_rx) = mpsc::channel(64);
            monitor.heads = Some(heads_tx);
            let reporter = Reporter::new(
                url,
                key,
                config.aggregator_address.expect("config requires it with an aggregator"),
                status_tx.clone(),
                heads_rx,
                spool.clone(),
                metrics.clone(),
                config.readiness,
                config.geth.ipc_path(),
            );
            tasks.spawn(reporter.run(cancel.clone()).in_current_span());
            supervisor = supervisor.with_spool(spool);
            tracing::info!(aggregator = %url, "reporting to the aggregator");
        }
        tasks.spawn(monitor.run(cancel.clone()).in_current_span());
        let mode = config.mode;
        let socket = config.admin_socket.clone();
        drop(status_tx);
        let last = supervisor.run().await;
        cancel.cancel();
        tasks.close();
        if tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await.is_err() {
            tracing::warn!("some tasks did not stop within 5 s");
        }
        let _ = std::fs::remove_file(&socket);
        match (mode, last) {
            (Mode::Attach, _) => ExitCode::SUCCESS,
            (Mode::Spawn, Some(v)) if v.clean => ExitCode::SUCCESS,
            (Mode::Spawn, None) => ExitCode::SUCCESS, // geth never ran (blocked)
            (Mode::Spawn, Some(_)) => ExitCode::FAILURE,
        }
    }
    .instrument(span)
    .await
}

fn new_network(args: &NewArgs) -> ExitCode {
    let template = match genesis::template(&args.chain) {
        Some(t) => serde_json::from_str(t.text).map_err(|e| e.to_string()),
        None => std::fs::read_to_string(&args.chain)
            .map_err(|e| {
                format!(
                    "--chain {}: not a built-in template nor a readable file: {e}",
                    args.chain
                )
            })
            .and_then(|text| {
                serde_json::from_str(&text).map_err(|e| format!("--chain {}: {e}", args.chain))
            }),
    };
    let template: serde_json::Value = match template {
        Ok(t) => t,
        Err(e) => {
            eprintln!("geth-agent: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let nodes = args.signers.saturating_add(args.validators);
    let base = NodePorts {
        p2p: args.p2p_port,
        http: args.http_port,
        agent: args.agent_port,
    };
    let result = network::sequential_ports(base, nodes).and_then(|ports| {
        let spec = NetworkSpec {
            period: args
                .period
                .or_else(|| genesis::period(&template))
                .unwrap_or(5),
            template,
            name: args.chain.clone(),
            signers: args.signers,
            validators: args.validators,
            accounts: args.accounts,
            host: args.host.clone(),
            ports,
        };
        network::generate(&spec, &args.out)
    });
    match result {
        Ok(net) => {
            println!(
                "network {} (chain {}, period {}s) written to {}",
                net.name,
                net.chain_id,
                net.period,
                args.out.display()
            );
            for node in &net.nodes {
                let signer = node
                    .signer
                    .map(|s| format!(" signer {s:#x}"))
                    .unwrap_or_default();
                // Signers serve no HTTP JSON-RPC (their account is unlocked).
                let http = match node.signer {
                    Some(_) => "-".to_owned(),
                    None => node.ports.http.to_string(),
                };
                println!(
                    "  {:<14} p2p {:<5} http {:<5} agent {:<5}{signer}",
                    node.name, node.ports.p2p, http, node.ports.agent
                );
            }
            for account in &net.accounts {
                println!("  account        {:#x}", account.address);
            }
            ExitCode::SUCCESS
        }
        Err(
            e @ (network::NetworkError::NodeCount(_)
            | network::NetworkError::Exists(_)
            | network::NetworkError::Genesis(_)),
        ) => {
            eprintln!("geth-agent: {e}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) => {
            eprintln!("geth-agent: {e}");
            ExitCode::FAILURE
        }
    }
}
