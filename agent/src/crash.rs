//! Crash evidence from geth v1.13's start-up lines, and blocks lost against the
//! last recorded shutdown.
//!
//! - `Unclean shutdown detected booted=<unix> age=…`: geth re-prints up to ten
//!   old markers at every boot, so only `booted=` values not seen before count.
//! - `Head state missing, repairing number=…`: the head's state was lost.
//! - `Loaded most recent local block number=…`: printed again after a repair;
//!   the last one is the head geth really resumed from.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::logline::LogLine;
use crate::shutdown::Verdict;

/// The line after which every start-up line has been printed.
pub const STARTED_LINE: &str = "IPC endpoint opened";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartupLog {
    pub unclean_boots: BTreeSet<u64>,
    pub repair_from: Option<u64>,
    pub loaded_block: Option<u64>,
    pub started: bool,
}

impl StartupLog {
    pub fn observe(&mut self, line: &LogLine) {
        match line.msg.as_str() {
            "Unclean shutdown detected" => {
                if let Some(booted) = line.u64("booted") {
                    self.unclean_boots.insert(booted);
                }
            }
            "Head state missing, repairing" => self.repair_from = line.u64("number"),
            "Loaded most recent local block" => self.loaded_block = line.u64("number"),
            STARTED_LINE => self.started = true,
            _ => {}
        }
    }
}

/// What a start revealed, compared with the last recorded shutdown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartEvidence {
    /// Head geth resumed from.
    pub loaded_head: Option<u64>,
    /// Head recorded before the previous stop or crash.
    pub previous_head: Option<u64>,
    /// `previous_head - loaded_head` (0 when nothing was lost or unknown).
    pub blocks_lost: u64,
    /// geth repaired a missing head state.
    pub repaired: bool,
    /// Unclean shutdown markers geth reported that were not seen before.
    pub new_unclean_boots: usize,
    /// The previous stop was not proven clean.
    pub after_unclean_stop: bool,
}

pub fn evaluate(
    log: &StartupLog,
    last: Option<&Verdict>,
    known_boots: &BTreeSet<u64>,
) -> StartEvidence {
    let previous_head = last.and_then(|v| v.head_before.or(v.persisted.as_ref().map(|p| p.number)));
    let blocks_lost = match (previous_head, log.loaded_block) {
        (Some(before), Some(loaded)) => before.saturating_sub(loaded),
        _ => 0,
    };
    StartEvidence {
        loaded_head: log.loaded_block,
        previous_head,
        blocks_lost,
        repaired: log.repair_from.is_some(),
        new_unclean_boots: log.unclean_boots.difference(known_boots).count(),
        after_unclean_stop: last.is_some_and(|v| !v.clean),
    }
}

/// `booted=` values already accounted for, kept beside the shutdown marker.
pub fn boots_path(datadir: &Path) -> PathBuf {
    datadir.join("geth-agent").join("unclean-boots.json")
}

pub fn read_known_boots(datadir: &Path) -> BTreeSet<u64> {
    std::fs::read(boots_path(datadir))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

pub fn write_known_boots(datadir: &Path, boots: &BTreeSet<u64>) -> std::io::Result<()> {
    crate::shutdown::write_atomic(&boots_path(datadir), &serde_json::to_vec(boots)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(lines: &[&str]) -> StartupLog {
        let mut log = StartupLog::default();
        for l in lines {
            log.observe(&LogLine::parse(l).unwrap());
        }
        log
    }

    fn unclean(head: u64) -> Verdict {
        Verdict {
            clean: false,
            reason: "killed".into(),
            head_before: Some(head),
            persisted: None,
            exit_code: None,
            killed: false,
            duration_ms: 0,
            at: 0,
        }
    }

    #[test]
    fn the_block_loaded_after_a_repair_counts() {
        let l = log(&[
            r#"{"msg":"Unclean shutdown detected","booted":"1700000000","age":"5s"}"#,
            r#"{"msg":"Loaded most recent local block","number":"87","hash":"0x1"}"#,
            r#"{"msg":"Head state missing, repairing","number":"87","hash":"0x1"}"#,
            r#"{"msg":"Loaded most recent local header","number":"87"}"#,
            r#"{"msg":"Loaded most recent local block","number":"56","hash":"0x2"}"#,
            r#"{"msg":"Loaded most recent local snap block","number":"87"}"#,
            r#"{"msg":"IPC endpoint opened","url":"/x/geth.ipc"}"#,
        ]);
        assert!(l.started);
        let e = evaluate(&l, Some(&unclean(87)), &BTreeSet::new());
        assert_eq!(e.loaded_head, Some(56));
        assert_eq!(e.blocks_lost, 31);
        assert!(e.repaired && e.after_unclean_stop);
        assert_eq!(e.new_unclean_boots, 1);
    }

    #[test]
    fn old_unclean_markers_are_not_counted_again() {
        let l = log(&[
            r#"{"msg":"Unclean shutdown detected","booted":"1","age":"5d"}"#,
            r#"{"msg":"Unclean shutdown detected","booted":"2","age":"1s"}"#,
            r#"{"msg":"Loaded most recent local block","number":"10"}"#,
        ]);
        let known = BTreeSet::from([1]);
        let e = evaluate(&l, None, &known);
        assert_eq!(e.new_unclean_boots, 1);
        assert_eq!(e.blocks_lost, 0, "no previous head: nothing to compare");
        assert!(!e.after_unclean_stop);
    }

    #[test]
    fn a_head_ahead_of_the_record_is_not_a_loss() {
        let l = log(&[r#"{"msg":"Loaded most recent local block","number":"30"}"#]);
        assert_eq!(
            evaluate(&l, Some(&unclean(20)), &BTreeSet::new()).blocks_lost,
            0
        );
    }
}
