//! geth-agent: supervises one geth v1.13 clique node.

pub mod admin;
pub mod cli;
pub mod commands;
pub mod config;
pub mod crash;
pub mod ctl;
pub mod geth;
pub mod http;
pub mod init;
pub mod join;
pub mod launch;
pub mod logline;
pub mod metrics;
pub mod monitor;
pub mod network;
pub mod process;
pub mod readiness;
pub mod report;
pub mod rpc;
pub mod run;
pub mod shutdown;
pub mod signals;
pub mod spool;
pub mod startup;
pub mod status;
pub mod supervisor;
pub mod unwedge;

/// Logs to stderr, `RUST_LOG` style filter (default `info`); colours only on a terminal.
pub fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
