//! Lifecycle control of one node's geth: the commands an operator (admin
//! socket) or the aggregator (in its signed replies) sends to an agent, and
//! the outcome the agent answers with. The outcome of a stop carries the
//! shutdown verdict.

use alloy_primitives::Address;
use serde::{Deserialize, Serialize};

use crate::ShutdownVerdict;

/// What to do with geth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Stop geth with one SIGTERM and prove the shutdown; it stays stopped.
    Stop,
    /// Start a stopped geth.
    Start,
    /// Stop geth cleanly, then start it again (attach mode: the platform does).
    Restart,
    /// Vote in clique to add (`authorize`) or remove signer `address`
    /// (`clique_propose`; geth repeats the vote in every block it seals until
    /// it is discarded, across epoch boundaries too).
    CliquePropose { address: Address, authorize: bool },
    /// Withdraw this node's vote about `address` (`clique_discard`).
    CliqueDiscard { address: Address },
}

/// A command from the aggregator, carried in a signed [`crate::ReportReply`].
/// The agent runs each id at most once (it remembers ids on disk), only when
/// addressed to its own node and not expired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCommand {
    /// Unique id, chosen by the aggregator.
    pub id: String,
    /// The target node's address (of its devp2p key), lower-case 0x hex.
    pub node: String,
    /// Not to be started after this time (Unix milliseconds).
    pub expires_ms: u64,
    pub command: Command,
}

/// What the agent did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// geth stopped; the verdict proves how.
    Stopped { verdict: ShutdownVerdict },
    /// geth will be started.
    Starting,
    /// geth stopped (if it ran: the verdict) and starts again.
    Restarting { verdict: Option<ShutdownVerdict> },
    /// Not done: the command does not apply now (already running, attach mode, …).
    Refused { reason: String },
    /// Tried and failed (the stop could not be followed to its end).
    Failed { reason: String },
    /// A clique vote command done (what geth was asked).
    Done { detail: String },
}

impl Outcome {
    /// The command did what it was asked.
    pub fn ok(&self) -> bool {
        !matches!(self, Self::Refused { .. } | Self::Failed { .. })
    }

    /// The verdict of the stop this command caused, if any.
    pub fn verdict(&self) -> Option<&ShutdownVerdict> {
        match self {
            Self::Stopped { verdict } => Some(verdict),
            Self::Restarting { verdict } => verdict.as_ref(),
            _ => None,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stopped = |f: &mut std::fmt::Formatter<'_>, v: &ShutdownVerdict| {
            let state = if v.clean { "clean" } else { "UNCLEAN" };
            write!(f, "geth stopped: {state} ({})", v.reason)
        };
        match self {
            Self::Stopped { verdict } => stopped(f, verdict),
            Self::Starting => f.write_str("starting geth"),
            Self::Restarting {
                verdict: Some(verdict),
            } => {
                stopped(f, verdict)?;
                f.write_str("; starting geth")
            }
            Self::Restarting { verdict: None } => f.write_str("geth was not running; starting it"),
            Self::Refused { reason } | Self::Failed { reason } => f.write_str(reason),
            Self::Done { detail } => f.write_str(detail),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(clean: bool) -> ShutdownVerdict {
        ShutdownVerdict {
            clean,
            reason: if clean {
                "saved".into()
            } else {
                "killed".into()
            },
            head_before: Some(9),
            persisted: None,
            exit_code: Some(0),
            killed: !clean,
            duration_ms: 5,
            at: 1,
        }
    }

    #[test]
    fn commands_and_outcomes_have_stable_json() {
        assert_eq!(
            serde_json::to_string(&Command::Restart).unwrap(),
            r#""restart""#
        );
        assert!(serde_json::from_str::<Command>(r#""reboot""#).is_err());
        let outcome = Outcome::Stopped {
            verdict: verdict(true),
        };
        let json = serde_json::to_value(&outcome).unwrap();
        assert_eq!(json["outcome"], "stopped");
        assert_eq!(json["verdict"]["clean"], true);
        assert_eq!(serde_json::from_value::<Outcome>(json).unwrap(), outcome);
    }

    #[test]
    fn clique_vote_commands_carry_the_address() {
        let vote = Command::CliquePropose {
            address: Address::repeat_byte(0xab),
            authorize: true,
        };
        let json = serde_json::to_value(vote).unwrap();
        assert_eq!(json["clique_propose"]["authorize"], true);
        assert_eq!(
            json["clique_propose"]["address"],
            format!("{:#x}", Address::repeat_byte(0xab))
        );
        assert_eq!(serde_json::from_value::<Command>(json).unwrap(), vote);
        let done = Outcome::Done {
            detail: "voted".into(),
        };
        assert!(done.ok() && done.verdict().is_none());
    }

    #[test]
    fn outcomes_say_what_happened() {
        let unclean = Outcome::Restarting {
            verdict: Some(verdict(false)),
        };
        assert!(unclean.ok());
        assert_eq!(unclean.verdict().map(|v| v.clean), Some(false));
        assert_eq!(
            unclean.to_string(),
            "geth stopped: UNCLEAN (killed); starting geth"
        );
        let refused = Outcome::Refused {
            reason: "geth is already running".into(),
        };
        assert!(!refused.ok() && refused.verdict().is_none());
        assert_eq!(refused.to_string(), "geth is already running");
    }
}
