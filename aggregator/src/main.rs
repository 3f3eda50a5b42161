use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

// Every frame allocates and frees small buffers (the parse, the node's
// change, the SSE event): with mimalloc a fleet's reports cost about a
// tenth less CPU than with glibc's malloc (docs/API.md, "Load").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let mut cli = geth_aggregator::Cli::parse();
    init_logging();
    match cli.command.take() {
        Some(geth_aggregator::Subcommand::Restart(args)) => return client(args),
        Some(geth_aggregator::Subcommand::Nodes(args)) => {
            return nodes_client(|| geth_aggregator::signers::cli::run(args))
        }
        Some(geth_aggregator::Subcommand::Signers(args)) => {
            return nodes_client(|| geth_aggregator::signers::cli::run_signers(args))
        }
        None => {}
    }
    // One thread: the plain scheduler, which parks straight on the I/O
    // driver (no work-stealing bookkeeping, no hand-off to a worker).
    let mut builder = match cli.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.into());
            b
        }
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("geth-aggregator: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let app = match geth_aggregator::build(&cli) {
            Ok(app) => app,
            Err(e) => {
                eprintln!("geth-aggregator: {e}");
                return ExitCode::from(64);
            }
        };
        let gateway = match geth_aggregator::build_gateway(&cli, &app) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("geth-aggregator: {e}");
                return ExitCode::from(64);
            }
        };
        let listener = match tokio::net::TcpListener::bind(cli.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("geth-aggregator: cannot listen on {}: {e}", cli.listen);
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(listen = %cli.listen, nodes = app.registry.len(), db = %cli.db.display(), "dashboard at http://{}/", cli.listen);
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone();
        tokio::spawn(async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
            tracing::info!("stopping");
            signal.cancel();
        });
        if let Some((gw, tls)) = gateway {
            let addr = cli.gateway.gateway_listen.unwrap_or(cli.listen);
            let gw_listener = match std::net::TcpListener::bind(addr) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("geth-aggregator: gateway cannot listen on {addr}: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let stop = shutdown.clone();
            tokio::spawn(async move {
                if let Err(e) = geth_aggregator::gateway::serve(gw, gw_listener, tls, stop).await {
                    tracing::error!("{e}");
                }
            });
        }
        match geth_aggregator::serve(listener, app, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("geth-aggregator: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// `geth-aggregator restart …`: a client of a running aggregator.
fn client(args: geth_aggregator::restarts::cli::RestartArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("geth-aggregator: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(geth_aggregator::restarts::cli::run(args)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("geth-aggregator restart: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// `geth-aggregator nodes|signers …`: a client of a running aggregator.
fn nodes_client<F, Fut>(run: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<u8, geth_aggregator::operator::CliError>>,
{
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("geth-aggregator: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("geth-aggregator: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
