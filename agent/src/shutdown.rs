//! Proof of a clean shutdown, read from geth v1.13's own log lines, and the
//! durable marker file that records the verdict in the datadir.
//!
//! A stop is clean when geth exits 0 after `Blockchain stopped`, logged no
//! state-saving error, and saved its head state: `Writing cached state to disk
//! block=… hash=…` + `Persisted trie from memory database` (hash scheme), or
//! `Persisted dirty state to disk` (path scheme). Archive nodes and a chain at
//! genesis write no state lines and need none.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::logline::LogLine;

/// Messages geth v1.13 logs when saving state on shutdown failed (some at INFO).
const STATE_ERRORS: [&str; 5] = [
    "Failed to journal state snapshot",
    "Failed to commit recent state trie",
    "Failed to journal in-memory trie nodes",
    "Dangling trie nodes after full cleanup",
    "Failed to close trie database",
];

/// What geth's log showed during a shutdown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownLog {
    pub interrupted: bool,
    /// The first `Writing cached state to disk` line: the head's state.
    pub head_written: Option<PersistedBlock>,
    pub tries_persisted: usize,
    pub path_scheme_persisted: bool,
    /// The last block geth logged as written (imported or sealed): on an
    /// archive node its state was committed with it.
    pub last_written: Option<PersistedBlock>,
    pub blockchain_stopped: bool,
    pub errors: Vec<String>,
}

pub use geth_wire::{PersistedBlock, ShutdownVerdict as Verdict};

impl ShutdownLog {
    pub fn observe(&mut self, line: &LogLine) {
        match line.msg.as_str() {
            "Got interrupt, shutting down..." => self.interrupted = true,
            // The first of these lines is the head's state (then head-1, head-127).
            "Writing cached state to disk" if self.head_written.is_none() => {
                if let (Some(number), Some(hash)) = (line.u64("block"), line.str("hash")) {
                    self.head_written = Some(PersistedBlock {
                        number,
                        hash: hash.to_owned(),
                    });
                }
            }
            "Imported new chain segment" | "Successfully sealed new block" => {
                if let (Some(number), Some(hash)) = (line.u64("number"), line.str("hash")) {
                    self.last_written = Some(PersistedBlock {
                        number,
                        hash: hash.to_owned(),
                    });
                }
            }
            "Persisted trie from memory database" => self.tries_persisted += 1,
            "Persisted dirty state to disk" => self.path_scheme_persisted = true,
            "Blockchain stopped" => self.blockchain_stopped = true,
            // Errors count once the shutdown began (geth also stops on its own,
            // e.g. on low disk, after `Got interrupt`).
            msg if self.interrupted && (STATE_ERRORS.contains(&msg) || line.is_error()) => {
                self.errors.push(line.human());
            }
            _ => {}
        }
    }

    /// Whether state was saved, given the head block number when the stop began
    /// (`None` if unknown) and whether the node is an archive node.
    fn state_saved(&self, head: Option<u64>, archive: bool) -> bool {
        archive
            || head == Some(0)
            || self.path_scheme_persisted
            || (self.head_written.is_some() && self.tries_persisted > 0)
    }
}

/// How the geth process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// Killed by the agent after the grace period.
    KilledAfterGrace,
    /// Gone, exit status unknown: geth was not the agent's child (attach mode).
    Vanished,
}

pub fn judge(
    log: &ShutdownLog,
    exit: Exit,
    head_before: Option<u64>,
    archive: bool,
    took: Duration,
) -> Verdict {
    let (exit_code, killed) = match exit {
        Exit::Code(c) => (Some(c), false),
        Exit::Signal(_) | Exit::Vanished => (None, false),
        Exit::KilledAfterGrace => (None, true),
    };
    let reason = match exit {
        Exit::KilledAfterGrace => {
            format!(
                "geth did not exit within the grace period ({}s) and was killed",
                took.as_secs()
            )
        }
        Exit::Signal(s) => format!("geth was killed by signal {s}"),
        Exit::Code(c) if c != 0 => format!("geth exited with code {c}"),
        Exit::Code(_) | Exit::Vanished if !log.errors.is_empty() => {
            format!("geth logged errors: {}", log.errors.join("; "))
        }
        Exit::Code(_) | Exit::Vanished if !log.blockchain_stopped => {
            "geth exited without logging `Blockchain stopped`".into()
        }
        Exit::Code(_) | Exit::Vanished if !log.state_saved(head_before, archive) => {
            "geth stopped without logging that it saved the head state".into()
        }
        Exit::Code(_) | Exit::Vanished => String::new(),
    };
    let clean = reason.is_empty();
    // An archive node writes no state lines on shutdown: its evidence is the
    // last block it logged as written, whose state was committed with it.
    let persisted = match (&log.head_written, archive) {
        (Some(b), _) => Some(b.clone()),
        (None, true) => log.last_written.clone(),
        (None, false) => None,
    };
    let reason = if clean {
        match (&log.head_written, &persisted) {
            (Some(b), _) => format!("state of block {} saved", b.number),
            (None, Some(b)) => format!(
                "archive node: state of block {} written with the block",
                b.number
            ),
            (None, None) => "stopped with nothing to save".into(),
        }
    } else {
        reason
    };
    Verdict {
        clean,
        reason,
        head_before,
        persisted,
        exit_code,
        killed,
        duration_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
        at: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    }
}

/// `<datadir>/geth-agent/last-shutdown.json`.
pub fn marker_path(datadir: &Path) -> PathBuf {
    datadir.join("geth-agent").join("last-shutdown.json")
}

/// Writes the verdict atomically.
pub fn write_marker(datadir: &Path, verdict: &Verdict) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(verdict).map_err(std::io::Error::other)?;
    write_atomic(&marker_path(datadir), &json)
}

/// Writes a file so that readers see the old or the new content, never a mix,
/// even across a power loss: temp file, fsync, rename, fsync the folder.
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

pub fn read_marker(datadir: &Path) -> Option<Verdict> {
    serde_json::from_slice(&std::fs::read(marker_path(datadir)).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(lines: &[&str]) -> ShutdownLog {
        let mut log = ShutdownLog::default();
        for l in lines {
            log.observe(&LogLine::parse(l).unwrap());
        }
        log
    }

    const CLEAN: [&str; 7] = [
        r#"{"lvl":"info","msg":"Got interrupt, shutting down..."}"#,
        r#"{"lvl":"info","msg":"Writing cached state to disk","block":"29","hash":"0xaa","root":"0x1"}"#,
        r#"{"lvl":"info","msg":"Persisted trie from memory database","nodes":"3"}"#,
        r#"{"lvl":"info","msg":"Writing cached state to disk","block":"28","hash":"0xbb","root":"0x1"}"#,
        r#"{"lvl":"info","msg":"Persisted trie from memory database","nodes":"0"}"#,
        r#"{"lvl":"info","msg":"Writing snapshot state to disk","root":"0x1"}"#,
        r#"{"lvl":"info","msg":"Blockchain stopped"}"#,
    ];

    #[test]
    fn clean_stop_records_the_head_block() {
        let v = judge(
            &feed(&CLEAN),
            Exit::Code(0),
            Some(29),
            false,
            Duration::from_millis(5),
        );
        assert!(v.clean, "{v:?}");
        assert_eq!(
            v.persisted,
            Some(PersistedBlock {
                number: 29,
                hash: "0xaa".into()
            })
        );
    }

    #[test]
    fn missing_lines_errors_and_bad_exits_are_unclean() {
        let no_stop = &CLEAN[..6];
        assert!(
            !judge(
                &feed(no_stop),
                Exit::Code(0),
                Some(29),
                false,
                Duration::ZERO
            )
            .clean
        );
        let no_state = [CLEAN[0], CLEAN[6]];
        let v = judge(
            &feed(&no_state),
            Exit::Code(0),
            Some(29),
            false,
            Duration::ZERO,
        );
        assert!(!v.clean && v.reason.contains("head state"), "{v:?}");
        let mut with_error = CLEAN.to_vec();
        with_error.insert(
            5,
            r#"{"lvl":"info","msg":"Failed to journal in-memory trie nodes","err":"x"}"#,
        );
        let v = judge(
            &feed(&with_error),
            Exit::Code(0),
            Some(29),
            false,
            Duration::ZERO,
        );
        assert!(!v.clean && v.reason.contains("journal"), "{v:?}");
        assert!(
            !judge(
                &feed(&CLEAN),
                Exit::Code(1),
                Some(29),
                false,
                Duration::ZERO
            )
            .clean
        );
        assert!(
            !judge(
                &feed(&CLEAN),
                Exit::Signal(9),
                Some(29),
                false,
                Duration::ZERO
            )
            .clean
        );
        let v = judge(
            &feed(&CLEAN),
            Exit::KilledAfterGrace,
            Some(29),
            false,
            Duration::from_secs(3),
        );
        assert!(!v.clean && v.killed && v.reason.contains("grace"), "{v:?}");
    }

    #[test]
    fn genesis_archive_and_path_scheme_need_no_cached_state_lines() {
        let bare = [CLEAN[0], CLEAN[6]];
        assert!(judge(&feed(&bare), Exit::Code(0), Some(0), false, Duration::ZERO).clean);
        assert!(judge(&feed(&bare), Exit::Code(0), Some(50), true, Duration::ZERO).clean);
        let path = [
            CLEAN[0],
            r#"{"lvl":"info","msg":"Persisted dirty state to disk","size":"1"}"#,
            CLEAN[6],
        ];
        assert!(judge(&feed(&path), Exit::Code(0), Some(50), false, Duration::ZERO).clean);
    }

    #[test]
    fn an_archive_node_proves_its_state_with_the_last_block_it_wrote() {
        let lines = [
            r#"{"lvl":"info","msg":"Imported new chain segment","number":"41","hash":"0x41"}"#,
            r#"{"lvl":"info","msg":"Successfully sealed new block","number":"42","sealhash":"0xs","hash":"0x42"}"#,
            CLEAN[0],
            CLEAN[6],
        ];
        let v = judge(&feed(&lines), Exit::Code(0), Some(42), true, Duration::ZERO);
        assert!(v.clean, "{v:?}");
        assert_eq!(
            v.persisted,
            Some(PersistedBlock {
                number: 42,
                hash: "0x42".into()
            })
        );
        assert!(
            v.reason.contains("archive node: state of block 42"),
            "{v:?}"
        );
        // The same lines prove nothing about state on a node that prunes it.
        let v = judge(
            &feed(&lines),
            Exit::Code(0),
            Some(42),
            false,
            Duration::ZERO,
        );
        assert!(!v.clean && v.persisted.is_none(), "{v:?}");
    }

    #[test]
    fn marker_round_trips_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let v = judge(
            &feed(&CLEAN),
            Exit::Code(0),
            Some(29),
            false,
            Duration::from_millis(5),
        );
        write_marker(dir.path(), &v).unwrap();
        assert_eq!(read_marker(dir.path()), Some(v));
        assert!(!dir
            .path()
            .join("geth-agent/.last-shutdown.json.tmp")
            .exists());
    }
}
