//! `geth-aggregator restart …`: a client of the operator endpoints, printing
//! the run's progress line by line until it ends.

use std::time::Duration;

use super::{Phase, Plan, PlanState};
use crate::operator::{clock, CliError, Client, Target};

/// How long a following CLI waits for an aggregator that does not answer
/// (one restarting comes back well within it).
const FOLLOW_UNREACHABLE_LIMIT: Duration = Duration::from_secs(300);

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RestartArgs {
    #[command(subcommand)]
    pub action: Option<Action>,
    /// Restart order: node names or 1-based indexes of network.json, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        conflicts_with = "auto",
        required_unless_present = "auto"
    )]
    pub order: Vec<String>,
    /// Non-signers first, then signers, the first node of network.json last.
    #[arg(long)]
    pub auto: bool,
    /// Return once the plan is accepted instead of following it.
    #[arg(long)]
    pub no_follow: bool,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Show the newest plan (and follow it with --follow).
    Status {
        #[arg(long)]
        follow: bool,
    },
    /// Continue a failed or aborted plan from its failed step, and follow it.
    Resume {
        #[arg(long)]
        no_follow: bool,
    },
    /// Stop the running plan: no further node is touched.
    Abort,
}

/// Runs the subcommand; the exit code.
pub async fn run(args: RestartArgs) -> Result<u8, CliError> {
    let client = Client::new(&args.target)?;
    let (plan, follow) = match args.action {
        None => {
            let body = if args.auto {
                serde_json::json!({ "auto": true })
            } else {
                serde_json::json!({ "order": args.order })
            };
            let plan = client.post::<Plan>("/api/restarts", Some(body)).await?;
            (plan, !args.no_follow)
        }
        Some(Action::Status { follow }) => {
            let plan = client.get::<Plan>("/api/restarts/latest").await?;
            println!("{}", summary(&plan));
            (plan, follow)
        }
        Some(Action::Resume { no_follow }) => (
            client
                .post::<Plan>("/api/restarts/latest/resume", None)
                .await?,
            !no_follow,
        ),
        Some(Action::Abort) => (
            client
                .post::<Plan>("/api/restarts/latest/abort", None)
                .await?,
            false,
        ),
    };
    let mut printed = 0;
    let mut plan = plan;
    let mut unreachable_since: Option<std::time::Instant> = None;
    loop {
        for line in plan.history.iter().skip(printed) {
            println!("{} {}", clock(line.at_ms), line.text);
        }
        printed = plan.history.len();
        if !follow || plan.state != PlanState::Running {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        match client.get::<Plan>("/api/restarts/latest").await {
            Ok(p) if p.id == plan.id => {
                plan = p;
                unreachable_since = None;
            }
            Ok(_) => break,
            // The aggregator may be restarting: its plan survives; keep asking,
            // for a while (the run goes on without this follower).
            Err(CliError::Unreachable(e)) => {
                let since = *unreachable_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() >= FOLLOW_UNREACHABLE_LIMIT {
                    eprintln!(
                        "geth-aggregator restart: the aggregator has not answered for {} s; \
                         stopped following (the run goes on: `restart status --follow`)",
                        FOLLOW_UNREACHABLE_LIMIT.as_secs()
                    );
                    return Err(CliError::Unreachable(e));
                }
                tracing::debug!(error = %e, "aggregator unreachable");
            }
            Err(e) => return Err(e),
        }
    }
    println!("{}", summary(&plan));
    Ok(match plan.state {
        PlanState::Done | PlanState::Running => 0,
        PlanState::Failed | PlanState::Aborted => 1,
    })
}

/// One line: the plan's state and where it is.
pub fn summary(plan: &Plan) -> String {
    let done = plan.steps.iter().filter(|s| s.phase == Phase::Done).count();
    let mut line = format!(
        "plan {} {:?}: {done}/{} nodes restarted",
        plan.id,
        plan.state,
        plan.steps.len()
    )
    .to_lowercase();
    if let Some(step) = plan.steps.get(plan.current) {
        if plan.state != PlanState::Done {
            line.push_str(&format!(
                "; step {} {} ({:?})",
                plan.current + 1,
                step.node.name,
                step.phase
            ));
        }
    }
    if let Some(reason) = &plan.reason {
        line.push_str(&format!("; reason: {reason}"));
    }
    line
}
