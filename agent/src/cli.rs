//! Command line: `run` (supervise geth), `init` (prepare the datadir), `ctl`
//! (admin client), `network new` (generate a network), `join` (a new node of
//! a running network).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::RunArgs;
use crate::ctl::{self, CtlArgs};
use crate::init::{InitError, InitOutcome};
use crate::network::{self, genesis, NetworkSpec, NodePorts};
use crate::run::Listeners;
use crate::status::Mode;

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
    /// Initialise the datadir from the genesis, or check that it holds that
    /// genesis, then exit (0 ok, 64 mismatch). Run it before geth starts (an
    /// init container in attach mode); takes the same options as `run`.
    Init(Box<RunArgs>),
    /// Run geth itself with the command line `run` would give it, after
    /// `init`: geth's container in a pod, beside the agent in attach mode,
    /// both given the same options.
    Geth(Box<crate::launch::GethArgs>),
    /// Generate clique networks.
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Talk to a running agent over its admin socket.
    Ctl(CtlArgs),
    /// Join a running network as a validation node: fetch and check the
    /// aggregator's signed bundle, write the datadir, init geth, run it and
    /// follow the sync until ready.
    Join(Box<crate::join::JoinArgs>),
    /// Create this node's clique signer key here (it never leaves the
    /// machine) and make the node a signer candidate at the agent's next
    /// start; then `geth-aggregator signers add` votes it in.
    SignerKey(crate::join::SignerKeyArgs),
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
    /// Durability of every node (archive|standard), written into each
    /// agent.toml [default: none written: archive for signers, standard for
    /// validators].
    #[arg(long, value_name = "archive|standard")]
    pub durability: Option<geth_wire::network::Durability>,
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
        Command::Init(args) => init_datadir(*args).await,
        Command::Geth(args) => crate::launch::run(*args).await,
        Command::Network(NetworkCommand::New(args)) => new_network(&args),
        Command::Ctl(args) => ctl::run(args).await,
        Command::Join(args) => crate::join::run(*args).await,
        Command::SignerKey(args) => crate::join::run_signer_key(&args),
    }
}

pub(crate) async fn run_node(args: RunArgs) -> ExitCode {
    let config = match args.resolve() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("geth-agent: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let shutdown = CancellationToken::new();
    if let Err(e) = crate::signals::cancel_on_termination(shutdown.clone()) {
        eprintln!("geth-agent: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    let span = tracing::info_span!("node", name = %config.name);
    async move {
        let listeners = match Listeners::bind(&config).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        let mode = config.mode;
        match (mode, crate::run::run(config, listeners, shutdown).await) {
            (_, Err(e)) => {
                tracing::error!(error = %e, "agent failed");
                ExitCode::FAILURE
            }
            (Mode::Attach, Ok(_)) => ExitCode::SUCCESS,
            (Mode::Spawn, Ok(Some(v))) if v.clean => ExitCode::SUCCESS,
            (Mode::Spawn, Ok(None)) => ExitCode::SUCCESS, // geth never ran (blocked)
            (Mode::Spawn, Ok(Some(_))) => ExitCode::FAILURE,
        }
    }
    .instrument(span)
    .await
}

/// `geth-agent init`: initialise the datadir or check its genesis, before geth
/// starts (an init container). Exit 0 when the datadir holds the configured
/// genesis, 64 on a mismatch or unusable geth, 1 on other failures.
pub(crate) async fn init_datadir(args: RunArgs) -> ExitCode {
    let config = match args.resolve() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("geth-agent: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let target = crate::process::AttachTarget {
        datadir: config.geth.datadir.clone(),
        binary: Some(config.geth.binary.clone()),
        ..Default::default()
    };
    if let Some(pid) = crate::process::find_geth(&target) {
        eprintln!(
            "geth-agent: geth (pid {pid}) already runs on {}; init must run before geth starts",
            config.geth.datadir.display()
        );
        return ExitCode::FAILURE;
    }
    match crate::init::prepare(&config.geth, &config.genesis).await {
        Ok(InitOutcome::Initialised { genesis_hash }) => {
            println!(
                "initialised {} with genesis {genesis_hash}",
                config.geth.datadir.display()
            );
            ExitCode::SUCCESS
        }
        Ok(InitOutcome::Existing { genesis_hash }) => {
            println!(
                "{} already holds genesis {genesis_hash}",
                config.geth.datadir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e @ (InitError::GenesisMismatch { .. } | InitError::UnsupportedGeth { .. })) => {
            eprintln!("geth-agent: {e}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) => {
            eprintln!("geth-agent: {e}");
            ExitCode::FAILURE
        }
    }
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
            durability: args.durability,
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
