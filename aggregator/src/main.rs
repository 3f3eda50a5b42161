use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = geth_aggregator::Cli::parse();
    eprintln!(
        "geth-aggregator: no services are available in this build yet (listen {})",
        cli.listen
    );
    ExitCode::from(69) // EX_UNAVAILABLE
}
