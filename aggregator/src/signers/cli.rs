//! `geth-aggregator nodes admit|remove|list` and `geth-aggregator signers
//! add|remove|status`: clients of the admission and signer change endpoints
//! of a running aggregator (admin token).

use std::time::Duration;

use crate::operator::{clock, CliError, Client, Target};

use super::admission::Admitted;
use super::{SignerPlan, State};

#[derive(Debug, clap::Args)]
pub struct SignersArgs {
    #[command(subcommand)]
    pub action: SignersAction,
    /// Return once the change is accepted instead of following it.
    #[arg(long, global = true)]
    pub no_follow: bool,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, clap::Subcommand)]
pub enum SignersAction {
    /// Vote a node's signer key into the signer set (the node made it with
    /// `geth-agent signer-key`).
    Add {
        /// Node name, node key address, enode, or the signer address.
        node: String,
    },
    /// Vote a signer out of the set; its node keeps validating.
    Remove {
        /// The signer address, or its node's name, address or enode.
        node: String,
    },
    /// Show (and follow) the newest change.
    Status,
}

/// Prints the change's history as it grows until it ends; the exit code.
async fn follow(client: &Client, mut plan: SignerPlan, follow: bool) -> Result<u8, CliError> {
    let mut printed = 0;
    loop {
        for line in plan.history.iter().skip(printed) {
            println!("{} {}", clock(line.at_ms), line.text);
        }
        printed = plan.history.len();
        if !follow || plan.state != State::Running {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        plan = client.get("/api/signers/latest").await?;
    }
    Ok(match plan.state {
        State::Done | State::Running => 0,
        State::Failed => 1,
    })
}

/// Runs `signers …`; the exit code.
pub async fn run_signers(args: SignersArgs) -> Result<u8, CliError> {
    let client = Client::new(&args.target)?;
    let (action, node) = match &args.action {
        SignersAction::Add { node } => ("add", node),
        SignersAction::Remove { node } => ("remove", node),
        SignersAction::Status => {
            let plan = client.get("/api/signers/latest").await?;
            return follow(&client, plan, !args.no_follow).await;
        }
    };
    let body = serde_json::json!({ "action": action, "node": node });
    let plan = client.post("/api/signers", Some(body)).await?;
    follow(&client, plan, !args.no_follow).await
}

#[derive(Debug, clap::Args)]
pub struct NodesArgs {
    #[command(subcommand)]
    pub action: NodesAction,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, clap::Subcommand)]
pub enum NodesAction {
    /// Trust a joined node's reports from now on.
    Admit {
        /// Its enode (`enode://…@host:port`, printed by `geth-agent join`) or
        /// the 0x address of its node key.
        node: String,
        /// Name on the dashboard [default: node-<address prefix>].
        #[arg(long)]
        name: Option<String>,
    },
    /// Revoke an admission: the node's reports get 401 again.
    Remove {
        /// Its enode or node key address.
        node: String,
    },
    /// The admitted nodes.
    List,
}

/// Runs the subcommand; the exit code.
pub async fn run(args: NodesArgs) -> Result<u8, CliError> {
    let client = Client::new(&args.target)?;
    match args.action {
        NodesAction::Admit { node, name } => {
            let body = serde_json::json!({ "node": node, "name": name });
            let a: Admitted = client.post("/api/nodes/admit", Some(body)).await?;
            println!("admitted {} as {}", a.address, a.name);
        }
        NodesAction::Remove { node } => {
            let body = serde_json::json!({ "node": node });
            let a: Admitted = client.post("/api/nodes/remove", Some(body)).await?;
            println!("removed {} {}", a.address, a.name);
        }
        NodesAction::List => {
            let list: Vec<Admitted> = client.get("/api/nodes").await?;
            for a in list {
                println!("{} {} {}", a.address, a.name, a.enode);
            }
        }
    }
    Ok(0)
}
