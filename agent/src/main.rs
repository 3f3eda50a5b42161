use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = geth_agent::cli::Cli::parse();
    geth_agent::init_logging();
    // One thread is plenty for one geth, and keeps the agent's memory small.
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(geth_agent::cli::run(cli)),
        Err(e) => {
            eprintln!("geth-agent: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}
