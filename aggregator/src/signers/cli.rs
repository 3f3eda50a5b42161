//! `geth-aggregator nodes admit|remove|list` and `geth-aggregator signers
//! add|remove|status`: clients of the admission and signer change endpoints
//! of a running aggregator (admin token).

use std::time::Duration;

use crate::restarts::cli::{CliError, Target};

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
async fn follow(target: &Target, mut plan: SignerPlan, follow: bool) -> Result<u8, CliError> {
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
        let next = call(target, reqwest::Method::GET, "/api/signers/latest", None).await?;
        plan = serde_json::from_value(next).map_err(|e| CliError::Refused {
            status: 200,
            reason: format!("unreadable plan: {e}"),
        })?;
    }
    Ok(match plan.state {
        State::Done | State::Running => 0,
        State::Failed => 1,
    })
}

/// `HH:MM:SS` (UTC) of a Unix-ms time.
fn clock(ms: u64) -> String {
    let s = ms / 1000 % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Runs `signers …`; the exit code.
pub async fn run_signers(args: SignersArgs) -> Result<u8, CliError> {
    let (action, node) = match &args.action {
        SignersAction::Add { node } => ("add", node),
        SignersAction::Remove { node } => ("remove", node),
        SignersAction::Status => {
            let plan = call(
                &args.target,
                reqwest::Method::GET,
                "/api/signers/latest",
                None,
            )
            .await?;
            let plan: SignerPlan = serde_json::from_value(plan).map_err(|e| CliError::Refused {
                status: 200,
                reason: format!("unreadable plan: {e}"),
            })?;
            return follow(&args.target, plan, !args.no_follow).await;
        }
    };
    let body = serde_json::json!({ "action": action, "node": node });
    let plan = call(
        &args.target,
        reqwest::Method::POST,
        "/api/signers",
        Some(body),
    )
    .await?;
    let plan: SignerPlan = serde_json::from_value(plan).map_err(|e| CliError::Refused {
        status: 200,
        reason: format!("unreadable plan: {e}"),
    })?;
    follow(&args.target, plan, !args.no_follow).await
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

async fn call(
    target: &Target,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, CliError> {
    let token_file = target.admin_token_file.as_ref().ok_or_else(|| {
        CliError::Usage(
            "--admin-token-file (or GETH_AGGREGATOR_ADMIN_TOKEN_FILE) is required".into(),
        )
    })?;
    let token = std::fs::read_to_string(token_file)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", token_file.display())))?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let url = format!("{}{path}", target.url.trim_end_matches('/'));
    let mut request = http.request(method, url).bearer_auth(token.trim());
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .map_err(|e| CliError::Unreachable(e.to_string()))?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| CliError::Unreachable(e.to_string()))?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if !status.is_success() {
        let reason = value
            .get("error")
            .and_then(|e| e.as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        return Err(CliError::Refused {
            status: status.as_u16(),
            reason,
        });
    }
    Ok(value)
}

fn admitted(value: serde_json::Value) -> Result<Admitted, CliError> {
    serde_json::from_value(value).map_err(|e| CliError::Refused {
        status: 200,
        reason: format!("unreadable answer: {e}"),
    })
}

/// Runs the subcommand; the exit code.
pub async fn run(args: NodesArgs) -> Result<u8, CliError> {
    match args.action {
        NodesAction::Admit { node, name } => {
            let body = serde_json::json!({ "node": node, "name": name });
            let a = admitted(
                call(
                    &args.target,
                    reqwest::Method::POST,
                    "/api/nodes/admit",
                    Some(body),
                )
                .await?,
            )?;
            println!("admitted {} as {}", a.address, a.name);
        }
        NodesAction::Remove { node } => {
            let body = serde_json::json!({ "node": node });
            let a = admitted(
                call(
                    &args.target,
                    reqwest::Method::POST,
                    "/api/nodes/remove",
                    Some(body),
                )
                .await?,
            )?;
            println!("removed {} {}", a.address, a.name);
        }
        NodesAction::List => {
            let list = call(&args.target, reqwest::Method::GET, "/api/nodes", None).await?;
            let list: Vec<Admitted> =
                serde_json::from_value(list).map_err(|e| CliError::Refused {
                    status: 200,
                    reason: format!("unreadable answer: {e}"),
                })?;
            for a in list {
                println!("{} {} {}", a.address, a.name, a.enode);
            }
        }
    }
    Ok(0)
}
