//! Lifecycle events waiting for the aggregator: one file per event in
//! `<datadir>/geth-agent/spool/`, written atomically, deleted when the
//! aggregator acknowledges it. Sequence numbers never repeat (the next one is
//! kept in `next-seq`), so the aggregator can store each event exactly once.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use geth_wire::{Event, EventKind};

use crate::shutdown::write_atomic;
use crate::status::now_ms;

/// Oldest events are dropped beyond this many (an aggregator gone for weeks).
pub const MAX_SPOOLED: usize = 10_000;

pub struct Spool {
    dir: PathBuf,
    next: Mutex<u64>,
}

impl Spool {
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let stored: u64 = std::fs::read_to_string(dir.join("next-seq"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1);
        let highest = list(dir)?.last().map_or(0, |(seq, _)| *seq);
        Ok(Self {
            dir: dir.to_owned(),
            next: Mutex::new(stored.max(highest + 1)),
        })
    }

    /// Records an event durably; returns its sequence number.
    pub fn push(&self, kind: EventKind) -> std::io::Result<u64> {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let seq = *next;
        let event = Event {
            spool: String::new(),
            seq,
            at_ms: now_ms(),
            kind,
        };
        write_atomic(&self.dir.join(file_name(seq)), &serde_json::to_vec(&event)?)?;
        *next = seq + 1;
        write_atomic(&self.dir.join("next-seq"), next.to_string().as_bytes())?;
        let files = list(&self.dir)?;
        for (_, path) in files.iter().take(files.len().saturating_sub(MAX_SPOOLED)) {
            tracing::warn!(file = %path.display(), "event spool full: dropping the oldest event");
            let _ = std::fs::remove_file(path);
        }
        Ok(seq)
    }

    /// The oldest `limit` events not yet acknowledged.
    pub fn pending(&self, limit: usize) -> Vec<Event> {
        list(&self.dir)
            .unwrap_or_default()
            .into_iter()
            .take(limit)
            .filter_map(|(_, path)| serde_json::from_slice(&std::fs::read(path).ok()?).ok())
            .collect()
    }

    pub fn ack(&self, seqs: &[u64]) {
        for seq in seqs {
            let _ = std::fs::remove_file(self.dir.join(file_name(*seq)));
        }
    }

    pub fn depth(&self) -> usize {
        list(&self.dir).map(|l| l.len()).unwrap_or(0)
    }
}

fn file_name(seq: u64) -> String {
    format!("{seq:020}.json")
}

fn list(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let seq = name.strip_suffix(".json")?.parse().ok()?;
            Some((seq, e.path()))
        })
        .collect();
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_survive_reopen_and_sequence_numbers_never_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let a = spool
            .push(EventKind::Blocked { reason: "a".into() })
            .unwrap();
        let b = spool
            .push(EventKind::Blocked { reason: "b".into() })
            .unwrap();
        assert_eq!((a, b), (1, 2));
        drop(spool);
        let spool = Spool::open(dir.path()).unwrap();
        assert_eq!(
            spool.pending(10).iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1, 2]
        );
        spool.ack(&[1, 2]);
        assert_eq!(spool.depth(), 0);
        drop(spool);
        let spool = Spool::open(dir.path()).unwrap();
        assert_eq!(
            spool
                .push(EventKind::Blocked { reason: "c".into() })
                .unwrap(),
            3
        );
    }
}
