//! `geth-aggregator restart …`: a client of the operator endpoints, printing
//! the run's progress line by line until it ends.

use std::path::PathBuf;
use std::time::Duration;

use super::{Phase, Plan, PlanState};

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

#[derive(Debug, clap::Args)]
pub struct Target {
    /// The aggregator's base URL.
    #[arg(
        long,
        env = "GETH_AGGREGATOR_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// File holding the admin token.
    #[arg(
        long,
        env = "GETH_AGGREGATOR_ADMIN_TOKEN_FILE",
        value_name = "FILE",
        global = true
    )]
    pub admin_token_file: Option<PathBuf>,
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

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("aggregator unreachable: {0}")]
    Unreachable(String),
    #[error("refused ({status}): {reason}")]
    Refused { status: u16, reason: String },
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 64,
            Self::Unreachable(_) => 69,
            Self::Refused { .. } => 1,
        }
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    fn new(target: &Target) -> Result<Self, CliError> {
        let path = target.admin_token_file.as_ref().ok_or_else(|| {
            CliError::Usage(
                "--admin-token-file (or GETH_AGGREGATOR_ADMIN_TOKEN_FILE) is required".into(),
            )
        })?;
        let token = std::fs::read_to_string(path)
            .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?
            .trim()
            .to_owned();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| CliError::Usage(e.to_string()))?;
        Ok(Self {
            http,
            base: target.url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Plan, CliError> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
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
        if !status.is_success() {
            let reason = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            return Err(CliError::Refused {
                status: status.as_u16(),
                reason,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| CliError::Refused {
            status: status.as_u16(),
            reason: format!("unreadable plan: {e}"),
        })
    }
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
            let plan = client
                .call(reqwest::Method::POST, "/api/restarts", Some(body))
                .await?;
            (plan, !args.no_follow)
        }
        Some(Action::Status { follow }) => {
            let plan = client
                .call(reqwest::Method::GET, "/api/restarts/latest", None)
                .await?;
            println!("{}", summary(&plan));
            (plan, follow)
        }
        Some(Action::Resume { no_follow }) => (
            client
                .call(reqwest::Method::POST, "/api/restarts/latest/resume", None)
                .await?,
            !no_follow,
        ),
        Some(Action::Abort) => (
            client
                .call(reqwest::Method::POST, "/api/restarts/latest/abort", None)
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
        match client
            .call(reqwest::Method::GET, "/api/restarts/latest", None)
            .await
        {
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

/// `HH:MM:SS` (UTC) of a Unix-ms time.
fn clock(ms: u64) -> String {
    let s = ms / 1000 % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_utc_time_of_day() {
        assert_eq!(clock(0), "00:00:00");
        assert_eq!(clock((25 * 3600 + 61) * 1000 + 5), "01:01:01");
    }
}
