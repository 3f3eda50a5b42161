//! Lifecycle events waiting for the aggregator: one file per event in
//! `<datadir>/geth-agent/spool/`, written atomically, deleted when the
//! aggregator acknowledges it. Sequence numbers never repeat (the next one is
//! kept in `next-seq`), and every spool has a random id (`spool-id`, chosen
//! when the folder is created), so the aggregator can store each
//! (node, spool, seq) exactly once, even after the folder is recreated.
//!
//! Every event is bounded when it is recorded (long text keeps its first and
//! last lines), and an event the aggregator refuses for good is set aside in
//! `rejected/`: no single event can block the ones behind it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use geth_wire::{Event, EventKind};
use serde_json::Value;

use crate::metrics::Metrics;
use crate::shutdown::write_atomic;
use crate::status::now_ms;

/// Oldest events are dropped beyond this many (an aggregator gone for weeks).
pub const MAX_SPOOLED: usize = 10_000;
/// Longest text field of a recorded event, bytes.
pub const MAX_FIELD_BYTES: usize = 4 * 1024;
/// Largest recorded event (its JSON), bytes.
pub const MAX_EVENT_BYTES: usize = 16 * 1024;
/// Largest batch of events sent at once (JSON), well under the aggregator's
/// `geth_wire::MAX_REPORT_BYTES`.
pub const MAX_BATCH_BYTES: usize = geth_wire::MAX_REPORT_BYTES / 4;
/// Folder (inside the spool) for events the aggregator refused.
pub const REJECTED_DIR: &str = "rejected";
const ID_FILE: &str = "spool-id";

pub struct Spool {
    dir: PathBuf,
    id: String,
    next: Mutex<u64>,
    metrics: Option<Arc<Metrics>>,
    /// Wakes the reporter as soon as an event is recorded.
    pushed: tokio::sync::Notify,
}

impl Spool {
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let id = match std::fs::read_to_string(dir.join(ID_FILE)) {
            Ok(id) if !id.trim().is_empty() => id.trim().to_owned(),
            _ => {
                let id = hex::encode(rand::random::<[u8; 8]>());
                write_atomic(&dir.join(ID_FILE), id.as_bytes())?;
                id
            }
        };
        let stored: u64 = std::fs::read_to_string(dir.join("next-seq"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1);
        let highest = list(dir)?.last().map_or(0, |(seq, _)| *seq);
        Ok(Self {
            dir: dir.to_owned(),
            id,
            next: Mutex::new(stored.max(highest + 1)),
            metrics: None,
            pushed: tokio::sync::Notify::new(),
        })
    }

    /// Counts truncated events in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// This spool's random id, stamped into every event.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Records an event durably (bounded in size); returns its sequence number.
    pub fn push(&self, kind: EventKind) -> std::io::Result<u64> {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let seq = *next;
        let event = Event {
            spool: self.id.clone(),
            seq,
            at_ms: now_ms(),
            kind,
        };
        let (event, truncated) = bound_event(event);
        if truncated {
            tracing::warn!(
                seq,
                "lifecycle event too long: kept its first and last lines (at most {MAX_FIELD_BYTES} bytes a field)"
            );
            if let Some(m) = &self.metrics {
                m.on_event_truncated();
            }
        }
        write_atomic(&self.dir.join(file_name(seq)), &serde_json::to_vec(&event)?)?;
        *next = seq + 1;
        write_atomic(&self.dir.join("next-seq"), next.to_string().as_bytes())?;
        let files = list(&self.dir)?;
        for (_, path) in files.iter().take(files.len().saturating_sub(MAX_SPOOLED)) {
            tracing::warn!(file = %path.display(), "event spool full: dropping the oldest event");
            let _ = std::fs::remove_file(path);
        }
        drop(next);
        self.pushed.notify_one();
        Ok(seq)
    }

    /// Resolves once an event was recorded since the last call (at once if
    /// one was recorded while nobody waited).
    pub async fn pushed(&self) {
        self.pushed.notified().await;
    }

    /// The oldest events not yet acknowledged: at most `limit`, and at most
    /// [`MAX_BATCH_BYTES`] of JSON (always at least one). A file that is not an
    /// event (damaged) is set aside.
    pub fn pending(&self, limit: usize) -> Vec<Event> {
        let mut out = Vec::new();
        let mut bytes = 0;
        for (seq, path) in list(&self.dir).unwrap_or_default() {
            if out.len() >= limit {
                break;
            }
            let Ok(data) = std::fs::read(&path) else {
                continue;
            };
            let Ok(event) = serde_json::from_slice::<Event>(&data) else {
                self.set_aside(seq, "not a readable event");
                continue;
            };
            if !out.is_empty() && bytes + data.len() > MAX_BATCH_BYTES {
                break;
            }
            bytes += data.len();
            out.push(event);
        }
        out
    }

    /// Moves event `seq` out of the queue into `rejected/` (kept for
    /// operators, never sent again).
    pub fn set_aside(&self, seq: u64, reason: &str) {
        let from = self.dir.join(file_name(seq));
        let to_dir = self.dir.join(REJECTED_DIR);
        let moved = std::fs::create_dir_all(&to_dir)
            .and_then(|()| std::fs::rename(&from, to_dir.join(file_name(seq))));
        match moved {
            Ok(()) => tracing::warn!(
                seq,
                reason,
                folder = %to_dir.display(),
                "lifecycle event refused: set aside, the queue moves on"
            ),
            Err(e) => {
                tracing::warn!(seq, reason, error = %e, "lifecycle event refused and not movable: dropped");
                let _ = std::fs::remove_file(&from);
            }
        }
    }

    /// Events set aside so far.
    pub fn rejected(&self) -> usize {
        list(&self.dir.join(REJECTED_DIR)).map_or(0, |l| l.len())
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

/// Bounds every string of the event to [`MAX_FIELD_BYTES`] and the whole event
/// to [`MAX_EVENT_BYTES`] (tighter field bounds until it fits). Returns the
/// event and whether anything was cut.
pub fn bound_event(event: Event) -> (Event, bool) {
    let Ok(mut value) = serde_json::to_value(&event) else {
        return (event, false);
    };
    let mut truncated = false;
    for max in [MAX_FIELD_BYTES, 1024, 256, 64] {
        truncated |= bound_strings(&mut value, max);
        if serde_json::to_vec(&value).map_or(0, |v| v.len()) <= MAX_EVENT_BYTES {
            break;
        }
    }
    if !truncated {
        return (event, false);
    }
    match serde_json::from_value(value) {
        Ok(bounded) => (bounded, true),
        Err(_) => (event, false),
    }
}

fn bound_strings(value: &mut Value, max: usize) -> bool {
    match value {
        Value::String(text) if text.len() > max => {
            *text = bound_text(text, max);
            true
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |cut, v| bound_strings(v, max) | cut),
        Value::Object(map) => map
            .values_mut()
            .fold(false, |cut, v| bound_strings(v, max) | cut),
        _ => false,
    }
}

/// Keeps the first and last lines of `text` (lines end at `\n`, or at `; `
/// as geth's errors are joined) within about `max` bytes, and says how many
/// lines (or bytes) were cut between them.
pub fn bound_text(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let budget = max.saturating_sub(64).max(16);
    let (head_budget, tail_budget) = (budget / 2, budget / 2);
    let sep = if text.contains('\n') { "\n" } else { "; " };
    let parts: Vec<&str> = text.split(sep).collect();
    if parts.len() >= 3 {
        let mut head = 0;
        let mut used = 0;
        while head < parts.len() && used + parts[head].len() + sep.len() <= head_budget {
            used += parts[head].len() + sep.len();
            head += 1;
        }
        let mut tail = 0;
        let mut used = 0;
        while tail < parts.len() - head
            && used + parts[parts.len() - 1 - tail].len() + sep.len() <= tail_budget
        {
            used += parts[parts.len() - 1 - tail].len() + sep.len();
            tail += 1;
        }
        if head > 0 && tail > 0 {
            let cut = parts.len() - head - tail;
            return format!(
                "{}{sep}[… {cut} lines cut …]{sep}{}",
                parts[..head].join(sep),
                parts[parts.len() - tail..].join(sep)
            );
        }
    }
    // Few, long lines: cut inside, on character boundaries.
    let start = floor_char_boundary(text, head_budget);
    let end = ceil_char_boundary(text, text.len() - tail_budget);
    format!(
        "{}[… {} bytes cut …]{}",
        &text[..start],
        end - start,
        &text[end..]
    )
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i += 1;
    }
    i
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

    fn verdict(reason: String) -> EventKind {
        EventKind::Shutdown {
            verdict: geth_wire::ShutdownVerdict {
                clean: false,
                reason,
                head_before: Some(1),
                persisted: None,
                exit_code: Some(0),
                killed: false,
                duration_ms: 1,
                at: 1,
            },
        }
    }

    #[test]
    fn long_text_keeps_its_first_and_last_lines() {
        let lines: Vec<String> = (0..5000).map(|i| format!("error line {i}")).collect();
        let cut = bound_text(&lines.join("\n"), MAX_FIELD_BYTES);
        assert!(cut.len() <= MAX_FIELD_BYTES, "{}", cut.len());
        assert!(cut.starts_with("error line 0\nerror line 1\n"), "{cut}");
        assert!(cut.ends_with("error line 4999"), "{cut}");
        assert!(cut.contains(" lines cut …]"), "{cut}");
        // geth's errors joined with "; ", and one long line of multibyte text.
        let joined = bound_text(&lines.join("; "), 1024);
        assert!(joined.len() <= 1024 && joined.ends_with("error line 4999"));
        let one = "é".repeat(10_000);
        let cut = bound_text(&one, 1024);
        assert!(
            cut.len() <= 1024 && cut.contains("bytes cut"),
            "{}",
            cut.len()
        );
        assert_eq!(bound_text("short", 10), "short");
    }

    #[test]
    fn an_oversized_event_is_bounded_when_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let errors: Vec<String> = (0..20_000).map(|i| format!("ERROR state {i}")).collect();
        let seq = spool.push(verdict(errors.join("; "))).unwrap();
        let stored = std::fs::read(dir.path().join(file_name(seq))).unwrap();
        assert!(stored.len() <= MAX_EVENT_BYTES, "{}", stored.len());
        let event = &spool.pending(10)[0];
        let EventKind::Shutdown { verdict } = &event.kind else {
            panic!("{event:?}")
        };
        assert!(verdict.reason.starts_with("ERROR state 0; "));
        assert!(verdict.reason.ends_with("ERROR state 19999"));
        assert_eq!(event.spool, spool.id());
    }

    #[test]
    fn batches_stay_small_and_refused_events_are_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        for i in 0..100 {
            spool
                .push(verdict(format!("{i} {}", "x".repeat(3000))))
                .unwrap();
        }
        let batch = spool.pending(100);
        let bytes = serde_json::to_vec(&batch).unwrap().len();
        assert!(
            batch.len() < 100 && bytes <= MAX_BATCH_BYTES,
            "{} {bytes}",
            batch.len()
        );
        assert_eq!(batch[0].seq, 1);
        spool.set_aside(1, "413");
        assert_eq!(spool.pending(1)[0].seq, 2);
        assert_eq!(spool.rejected(), 1);
        assert_eq!(spool.depth(), 99);
        assert!(dir.path().join(REJECTED_DIR).join(file_name(1)).exists());
        // A damaged file is set aside too.
        std::fs::write(dir.path().join(file_name(2)), "{not json").unwrap();
        assert_eq!(spool.pending(1)[0].seq, 3);
        assert_eq!(spool.rejected(), 2);
    }

    #[test]
    fn a_recreated_spool_gets_a_new_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let first = Spool::open(&path).unwrap();
        let id = first.id().to_owned();
        assert_eq!(id.len(), 16);
        drop(first);
        assert_eq!(Spool::open(&path).unwrap().id(), id, "kept across reopen");
        std::fs::remove_dir_all(&path).unwrap();
        let again = Spool::open(&path).unwrap();
        assert_ne!(again.id(), id);
        again
            .push(EventKind::Blocked { reason: "a".into() })
            .unwrap();
        assert_eq!(again.pending(1)[0].seq, 1);
        assert_eq!(again.pending(1)[0].spool, again.id());
    }

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
