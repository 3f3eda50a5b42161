//! geth-aggregator: one per network. Collects agent reports and geth's own
//! ethstats feed, and serves the live dashboard (see docs/ARCHITECTURE.md).
//! This crate currently holds the command line only; its services are built
//! module by module on the wire types in `geth-wire`.

use clap::Parser;

/// Default HTTP address for the dashboard, API and ethstats `/api`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

#[derive(Debug, Parser)]
#[command(
    name = "geth-aggregator",
    version,
    about = "Network-wide stats, reports and restarts for a geth clique network"
)]
pub struct Cli {
    /// Address to serve the dashboard and API on.
    #[arg(long, env = "GETH_AGGREGATOR_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: std::net::SocketAddr,
}
