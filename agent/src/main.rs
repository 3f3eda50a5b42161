use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = geth_agent::cli::Cli::parse();
    geth_agent::init_logging();
    // Two workers: a task stuck in a blocking call (a slow disk, a library doing
    // blocking I/O) must not stop the loop that drains geth's output.
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
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
