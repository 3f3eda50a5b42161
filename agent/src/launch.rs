//! `geth-agent geth`: start geth exactly as `run` would, in place of this
//! process. A container platform runs geth and the agent in two containers of
//! one pod (compose service pair, Kubernetes pod); both take the same options,
//! so the agent's own [`GethCommand`](crate::geth::GethCommand) stays the one
//! source of geth's command line there too.

use std::os::unix::process::CommandExt;
use std::process::ExitCode;

use clap::Args;

use crate::cli::EXIT_USAGE;
use crate::config::RunArgs;

#[derive(Debug, Clone, Args)]
pub struct GethArgs {
    /// Print geth's command line (the binary, then one argument per line) and
    /// exit, without touching the datadir.
    #[arg(long)]
    pub print: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Initialises (or checks) the datadir like `geth-agent init`, then replaces
/// this process with geth: geth keeps the pid, so the platform's SIGTERM goes
/// to geth itself. Returns only on failure.
pub async fn run(args: GethArgs) -> ExitCode {
    let config = match args.run.clone().resolve() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("geth-agent: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let geth = &config.geth;
    if args.print {
        println!("{}", geth.binary.display());
        for arg in geth.args() {
            println!("{}", arg.to_string_lossy());
        }
        return ExitCode::SUCCESS;
    }
    let prepared = crate::cli::init_datadir(args.run).await;
    if prepared != ExitCode::SUCCESS {
        return prepared;
    }
    let err = std::process::Command::new(&geth.binary)
        .args(geth.args())
        .exec();
    eprintln!("geth-agent: cannot start {}: {err}", geth.binary.display());
    ExitCode::FAILURE
}
