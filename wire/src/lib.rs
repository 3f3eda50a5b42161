//! Wire types shared by geth-agent and geth-aggregator: what an agent records
//! and reports about its node. Plain serde structs, stable JSON field names.

use serde::{Deserialize, Serialize};

/// A block whose state geth wrote to disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedBlock {
    pub number: u64,
    /// 0x-prefixed block hash, as geth logged it.
    pub hash: String,
}

/// The agent's verdict on one geth shutdown, proven from geth's own log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutdownVerdict {
    pub clean: bool,
    /// Why it was (un)clean, for operators.
    pub reason: String,
    /// Head when the stop began, as geth reported it.
    #[serde(default)]
    pub head_before: Option<u64>,
    /// The head block whose state geth wrote to disk.
    #[serde(default)]
    pub persisted: Option<PersistedBlock>,
    /// geth's exit code (`None` when it died by a signal).
    pub exit_code: Option<i32>,
    /// Killed by the agent after the grace period.
    pub killed: bool,
    pub duration_ms: u64,
    /// Seconds since the Unix epoch.
    pub at: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_json_is_stable_and_tolerates_missing_optionals() {
        let v: ShutdownVerdict = serde_json::from_str(
            r#"{"clean":true,"reason":"ok","exit_code":0,"killed":false,"duration_ms":3,"at":1}"#,
        )
        .unwrap();
        assert_eq!(v.persisted, None);
        let back = serde_json::to_value(&v).unwrap();
        assert_eq!(back["clean"], true);
        assert!(serde_json::from_str::<ShutdownVerdict>(r#"{"clean":"yes"}"#).is_err());
    }
}
