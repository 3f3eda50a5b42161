//! Persistent store: embedded SQLite (WAL). Writes go through one writer task
//! that commits in batches, so a thousand reporting nodes cost one transaction
//! every few milliseconds; events are acknowledged only after their commit.
//!
//! The schema is versioned (`PRAGMA user_version`) and brought up to date by
//! [`MIGRATIONS`] when the database is opened. Node and sighting writes that
//! find the queue full, or whose batch cannot be committed (a full disk), are
//! dropped and counted ([`Store::health`]); events are never dropped, their
//! sender is told instead. Failed commits are logged at most once a minute,
//! and writing resumes by itself when it works again.
//!
//! Reads have a connection of their own: in WAL mode a reader sees the last
//! commit and never waits for the writer's transaction, so a request that
//! reads history is not held up by a batch being committed.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use geth_wire::{BlockReport, Event};
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the store writer has stopped")]
    Stopped,
    #[error("events not stored: {0}")]
    NotStored(String),
    #[error("database schema version {found} is newer than this aggregator knows ({known})")]
    NewerSchema { found: i64, known: i64 },
}

const PRAGMAS: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
";
/// The readers' connection can never write, whatever a read path does.
const READER_PRAGMAS: &str = "PRAGMA query_only = ON;";

/// Schema migrations: entry `i` brings the database from version `i` to
/// `i + 1`. Never edit one that has shipped; append.
pub const MIGRATIONS: [&str; 7] = [
    SCHEMA_V1,
    MIGRATE_V2_SPOOL,
    MIGRATE_V3_PRUNE_INDEXES,
    MIGRATE_V4_RESTART_PLANS,
    MIGRATE_V5_ADMITTED_NODES,
    MIGRATE_V6_PROPAGATION_SUMMARY,
    MIGRATE_V7_SIGHTINGS_BY_NUMBER,
];

/// Version 1: the first, unversioned schema (`user_version` 0 with tables).
const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS blocks (
    hash TEXT PRIMARY KEY,
    number INTEGER NOT NULL,
    parent_hash TEXT NOT NULL,
    signer TEXT,
    timestamp INTEGER NOT NULL,
    difficulty INTEGER NOT NULL,
    txs INTEGER NOT NULL,
    gas_used INTEGER NOT NULL,
    gas_limit INTEGER NOT NULL,
    first_seen_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS blocks_number ON blocks (number);
CREATE TABLE IF NOT EXISTS sightings (
    hash TEXT NOT NULL,
    node TEXT NOT NULL,
    seen_ms INTEGER NOT NULL,
    PRIMARY KEY (hash, node)
);
CREATE TABLE IF NOT EXISTS events (
    node TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (node, seq)
);
CREATE TABLE IF NOT EXISTS nodes (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    stats TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
);
";

/// Version 2: events are keyed by (node, spool, seq): a recreated spool's
/// sequence numbers are new events, not duplicates.
const MIGRATE_V2_SPOOL: &str = "
CREATE TABLE events_v2 (
    node TEXT NOT NULL,
    spool TEXT NOT NULL DEFAULT '',
    seq INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (node, spool, seq)
);
INSERT INTO events_v2 (node, spool, seq, at_ms, body) SELECT node, '', seq, at_ms, body FROM events;
DROP TABLE events;
ALTER TABLE events_v2 RENAME TO events;
";

/// Version 3: indexes for retention: sightings carry their block number (the
/// prune deletes a number range instead of scanning for orphans), events are
/// found by node and time.
const MIGRATE_V3_PRUNE_INDEXES: &str = "
ALTER TABLE sightings ADD COLUMN number INTEGER NOT NULL DEFAULT 0;
UPDATE sightings SET number = COALESCE((SELECT number FROM blocks WHERE blocks.hash = sightings.hash), 0);
CREATE INDEX sightings_number ON sightings (number);
CREATE INDEX events_node_at ON events (node, at_ms);
CREATE INDEX events_at ON events (at_ms);
";

/// Version 4: rolling restart plans (the whole plan as JSON, one row each).
const MIGRATE_V4_RESTART_PLANS: &str = "
CREATE TABLE restart_plans (
    id INTEGER PRIMARY KEY,
    state TEXT NOT NULL,
    body TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
);
";

/// Version 5: nodes an operator admitted after network.json was written
/// (`geth-aggregator nodes admit`), by the address of their node key.
const MIGRATE_V5_ADMITTED_NODES: &str = "
CREATE TABLE admitted_nodes (
    address TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    enode TEXT NOT NULL DEFAULT '',
    admitted_ms INTEGER NOT NULL
);
";

/// Version 6: a block's propagation summary (how many nodes saw it; p50,
/// p90 and max milliseconds after the first), written when its per-node
/// sightings are folded away; NULL while they are kept.
const MIGRATE_V6_PROPAGATION_SUMMARY: &str = "
ALTER TABLE blocks ADD COLUMN seen_count INTEGER;
ALTER TABLE blocks ADD COLUMN propagation_p50_ms INTEGER;
ALTER TABLE blocks ADD COLUMN propagation_p90_ms INTEGER;
ALTER TABLE blocks ADD COLUMN propagation_max_ms INTEGER;
CREATE INDEX blocks_first_seen ON blocks (first_seen_ms);
";

/// Version 7: sightings are one B-tree keyed by (number, hash, node), the
/// order they arrive and are pruned in. Before, each sighting was three
/// inserts (the table, its (hash, node) key and the number index) and
/// stored its hash twice.
const MIGRATE_V7_SIGHTINGS_BY_NUMBER: &str = "
CREATE TABLE sightings_v7 (
    number INTEGER NOT NULL,
    hash TEXT NOT NULL,
    node TEXT NOT NULL,
    seen_ms INTEGER NOT NULL,
    PRIMARY KEY (number, hash, node)
) WITHOUT ROWID;
INSERT OR IGNORE INTO sightings_v7 (number, hash, node, seen_ms)
    SELECT number, hash, node, seen_ms FROM sightings;
DROP TABLE sightings;
ALTER TABLE sightings_v7 RENAME TO sightings;
";

/// The schema version this code writes.
pub fn schema_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Brings the database to [`schema_version`], one transaction per step.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let mut version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version == 0 {
        // Databases from before versioning hold the version 1 tables.
        let v1: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events')",
            [],
            |r| r.get(0),
        )?;
        if v1 {
            version = 1;
        }
    }
    if version > schema_version() {
        return Err(StoreError::NewerSchema {
            found: version,
            known: schema_version(),
        });
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
        if version > 0 {
            tracing::info!(from = i, to = i + 1, "store schema migrated");
        }
    }
    Ok(())
}

/// How long stored history is kept.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// Blocks (and their sightings) kept below the highest.
    pub retention_blocks: u64,
    /// Blocks older than this are deleted (None: kept by count only).
    pub blocks_max_age: Option<Duration>,
    /// Bytes the database may use (pages in use; None: no bound); over it,
    /// the oldest tenth of the blocks goes at each prune (events have their
    /// own bounds).
    pub blocks_max_bytes: Option<u64>,
    /// Per-node sightings are kept for this many of the newest blocks; older
    /// blocks keep a propagation summary instead (count, p50, p90, max).
    pub sighting_detail_blocks: u64,
    /// Newest events kept per node.
    pub events_per_node: u64,
    /// Events older than this are deleted (None: kept by count only).
    pub events_max_age: Option<Duration>,
    /// Writes that may wait for the writer; beyond, node and sighting writes are dropped.
    pub queue: usize,
    /// Prune after about this many writes.
    pub prune_every: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            retention_blocks: 100_000,
            blocks_max_age: None,
            blocks_max_bytes: None,
            sighting_detail_blocks: 1_000,
            events_per_node: 10_000,
            events_max_age: Some(Duration::from_secs(365 * 24 * 3600)),
            queue: 16 * 1024,
            prune_every: 1000,
        }
    }
}

/// What went wrong with writing, for the aggregator's `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreHealth {
    /// Node and sighting writes dropped: queue full or their batch not committed.
    pub dropped_writes: u64,
    /// Batches that could not be committed (a full disk, I/O errors).
    pub failed_commits: u64,
    /// Error lines logged about those (at most one a minute).
    pub error_logs: u64,
    /// The last commit failed; writing resumes when it works again.
    pub failing: bool,
}

#[derive(Default)]
struct Counters {
    dropped: AtomicU64,
    failed_commits: AtomicU64,
    error_logs: AtomicU64,
    failing: AtomicBool,
    /// Dropped writes already reported in a warning.
    warned_drops: AtomicU64,
    last_drop_warning: Mutex<Option<Instant>>,
}

/// A message that may be logged at most once per `every`; counts the rest.
#[derive(Debug)]
pub struct RateLimit {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)`: log now, `n` occurrences were held back since the last line.
    pub fn check(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.every)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

const ERROR_LOG_EVERY: Duration = Duration::from_secs(60);
const DROP_WARNING_EVERY: Duration = Duration::from_secs(10);

/// A block with where and when it was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlock {
    pub block: BlockReport,
    pub first_seen_ms: u64,
    /// (node id, seen at ms)
    pub sightings: Vec<(String, u64)>,
}

enum Write {
    Sighting {
        node: String,
        block: BlockReport,
    },
    Node {
        id: String,
        name: String,
        stats: String,
        at_ms: u64,
    },
    Events {
        node: String,
        events: Vec<Event>,
        done: oneshot::Sender<Result<(), String>>,
    },
    /// Events inside a batch, once their acknowledgement is split off.
    EventsOf {
        node: String,
        events: Vec<Event>,
    },
}

/// Handle to the store: reads on their own connection, batched writes
/// through the writer task, the few writes that must be durable at once
/// (restart plans, admitted nodes) on the writer's connection.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
    writes: mpsc::Sender<Write>,
    /// Cuts the writer's gathering short: someone waits for a commit.
    urgent: Arc<Notify>,
    counters: Arc<Counters>,
}

impl Store {
    /// Opens (creating if needed) and starts the writer; `retention` bounds the
    /// blocks kept, events are kept as [`StoreOptions::default`] says.
    pub fn open(path: &Path, retention: u64) -> Result<Self, StoreError> {
        Self::open_with(
            path,
            StoreOptions {
                retention_blocks: retention,
                ..StoreOptions::default()
            },
        )
    }

    /// Opens (creating if needed), migrates the schema and starts the writer.
    pub fn open_with(path: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        let mut conn = Connection::open(path)?;
        conn.execute_batch(PRAGMAS)?;
        migrate(&mut conn)?;
        let reader = Connection::open(path)?;
        reader.execute_batch(READER_PRAGMAS)?;
        let reader = Arc::new(Mutex::new(reader));
        let conn = Arc::new(Mutex::new(conn));
        let (writes, rx) = mpsc::channel(options.queue.max(1));
        let counters = Arc::new(Counters::default());
        let urgent = Arc::new(Notify::new());
        tokio::spawn(writer(
            conn.clone(),
            rx,
            urgent.clone(),
            options,
            counters.clone(),
        ));
        Ok(Self {
            conn,
            reader,
            writes,
            urgent,
            counters,
        })
    }

    /// Dropped writes and failed commits so far.
    pub fn health(&self) -> StoreHealth {
        let c = &self.counters;
        StoreHealth {
            dropped_writes: c.dropped.load(Ordering::Relaxed),
            failed_commits: c.failed_commits.load(Ordering::Relaxed),
            error_logs: c.error_logs.load(Ordering::Relaxed),
            failing: c.failing.load(Ordering::Relaxed),
        }
    }

    /// Counts a dropped write; warns at most every 10 s with the count since.
    fn dropped(&self, what: &str) {
        self.counters.dropped(1, what);
    }

    /// The writer's connection (held for a whole batch's commit).
    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The readers' connection: sees the last commit, never waits for one.
    fn read(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a block sighting (dropped and counted if the queue is full).
    pub fn sighting(&self, node: &str, block: BlockReport) {
        if self
            .writes
            .try_send(Write::Sighting {
                node: node.to_owned(),
                block,
            })
            .is_err()
        {
            self.dropped("block sighting");
        }
    }

    /// Queues a node's latest stats (dropped and counted if the queue is full;
    /// the next stats replace them anyway).
    pub fn node(&self, id: &str, name: &str, stats: String, at_ms: u64) {
        if self
            .writes
            .try_send(Write::Node {
                id: id.into(),
                name: name.into(),
                stats,
                at_ms,
            })
            .is_err()
        {
            self.dropped("node stats");
        }
    }

    /// Stores events once per (node, spool, seq); returns when they are
    /// committed, or an error if they were not (the agent sends them again).
    pub async fn events(&self, node: &str, events: Vec<Event>) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.writes
            .send(Write::Events {
                node: node.into(),
                events,
                done,
            })
            .await
            .map_err(|_| StoreError::Stopped)?;
        self.urgent.notify_one();
        wait.await
            .map_err(|_| StoreError::Stopped)?
            .map_err(StoreError::NotStored)
    }

    /// The most recent blocks, newest first, with their sightings (one
    /// snapshot: a commit between the two queries cannot fold a block's
    /// sightings away from under it).
    pub fn recent_blocks(&self, limit: usize) -> Result<Vec<StoredBlock>, StoreError> {
        let mut reader = self.read();
        let conn = reader.transaction()?;
        let mut stmt = conn.prepare(
            "SELECT hash, number, parent_hash, signer, timestamp, difficulty, txs, gas_used, gas_limit, first_seen_ms
             FROM blocks ORDER BY number DESC, first_seen_ms DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok(StoredBlock {
                block: BlockReport {
                    hash: r.get(0)?,
                    number: r.get::<_, i64>(1)? as u64,
                    parent_hash: r.get(2)?,
                    signer: r.get(3)?,
                    timestamp: r.get::<_, i64>(4)? as u64,
                    difficulty: r.get::<_, i64>(5)? as u64,
                    transactions: r.get::<_, i64>(6)? as u64,
                    gas_used: r.get::<_, i64>(7)? as u64,
                    gas_limit: r.get::<_, i64>(8)? as u64,
                    seen_at_ms: r.get::<_, i64>(9)? as u64,
                },
                first_seen_ms: r.get::<_, i64>(9)? as u64,
                sightings: Vec::new(),
            })
        })?;
        let mut blocks: Vec<StoredBlock> = rows.collect::<Result<_, _>>()?;
        let mut sight =
            conn.prepare("SELECT node, seen_ms FROM sightings WHERE number = ?1 AND hash = ?2")?;
        for b in &mut blocks {
            b.sightings = sight
                .query_map(params![b.block.number as i64, b.block.hash], |r| {
                    Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))
                })?
                .collect::<Result<_, _>>()?;
        }
        Ok(blocks)
    }

    /// Events, newest first: (node id, event).
    pub fn recent_events(&self, limit: usize) -> Result<Vec<(String, Event)>, StoreError> {
        let conn = self.read();
        let mut stmt =
            conn.prepare("SELECT node, body FROM events ORDER BY at_ms DESC LIMIT ?1")?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (node, body) = row?;
            if let Ok(event) = serde_json::from_str(&body) {
                out.push((node, event));
            }
        }
        Ok(out)
    }

    /// How many events of `node` with sequence number `seq` are stored, over
    /// all its spools.
    pub fn event_count(&self, node: &str, seq: u64) -> Result<u64, StoreError> {
        let conn = self.read();
        let n: i64 = conn.query_row(
            "SELECT COUNT(*) FROM events WHERE node = ?1 AND seq = ?2",
            params![node, seq as i64],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// How many times (node, spool, seq) is stored: 0 or 1.
    pub fn event_count_in(&self, node: &str, spool: &str, seq: u64) -> Result<u64, StoreError> {
        let conn = self.read();
        let n: i64 = conn.query_row(
            "SELECT COUNT(*) FROM events WHERE node = ?1 AND spool = ?2 AND seq = ?3",
            params![node, spool, seq as i64],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// Stored events of `node`.
    pub fn events_of(&self, node: &str) -> Result<u64, StoreError> {
        let conn = self.read();
        let n: i64 =
            conn.query_row("SELECT COUNT(*) FROM events WHERE node = ?1", [node], |r| {
                r.get(0)
            })?;
        Ok(n as u64)
    }

    /// Last stats of every node: (id, name, stats JSON, updated ms).
    pub fn nodes(&self) -> Result<Vec<(String, String, String, u64)>, StoreError> {
        let conn = self.read();
        let mut stmt = conn.prepare("SELECT id, name, stats, updated_ms FROM nodes")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, i64>(3)? as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Writes a restart plan at once (not through the batching writer: a
    /// plan's step must be durable before the event that moved it is acked).
    pub fn save_restart_plan(&self, id: u64, body: &str) -> Result<(), StoreError> {
        let state = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("state").and_then(|s| s.as_str()).map(str::to_owned))
            .unwrap_or_default();
        self.lock().execute(
            "INSERT INTO restart_plans (id, state, body, updated_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO UPDATE SET state = excluded.state, body = excluded.body, updated_ms = excluded.updated_ms",
            params![id as i64, state, body, geth_wire::now_ms() as i64],
        )?;
        Ok(())
    }

    /// The newest restart plan's JSON.
    pub fn latest_restart_plan(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .read()
            .query_row(
                "SELECT body FROM restart_plans ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn max_restart_plan_id(&self) -> Result<u64, StoreError> {
        let n: i64 =
            self.read()
                .query_row("SELECT COALESCE(MAX(id), 0) FROM restart_plans", [], |r| {
                    r.get(0)
                })?;
        Ok(n as u64)
    }

    /// Restart plans' JSON, newest first.
    pub fn restart_plans(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        let conn = self.read();
        let mut stmt = conn.prepare("SELECT body FROM restart_plans ORDER BY id DESC LIMIT ?1")?;
        let rows = stmt.query_map([limit as i64], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records an admitted node (replacing an earlier admission of it),
    /// durably before it returns.
    pub fn admit_node(&self, address: &str, name: &str, enode: &str) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT INTO admitted_nodes (address, name, enode, admitted_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (address) DO UPDATE SET name = excluded.name, enode = excluded.enode, admitted_ms = excluded.admitted_ms",
            params![address, name, enode, geth_wire::now_ms() as i64],
        )?;
        Ok(())
    }

    /// Forgets an admitted node; whether it was there.
    pub fn remove_node(&self, address: &str) -> Result<bool, StoreError> {
        let n = self
            .lock()
            .execute("DELETE FROM admitted_nodes WHERE address = ?1", [address])?;
        Ok(n > 0)
    }

    /// The admitted nodes: (address, name, enode).
    pub fn admitted_nodes(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        let conn = self.read();
        let mut stmt =
            conn.prepare("SELECT address, name, enode FROM admitted_nodes ORDER BY admitted_ms")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn block_by_hash(&self, hash: &str) -> Result<Option<u64>, StoreError> {
        let conn = self.read();
        Ok(conn
            .query_row("SELECT number FROM blocks WHERE hash = ?1", [hash], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?
            .map(|n| n as u64))
    }
}

impl Counters {
    fn dropped(&self, n: u64, what: &str) {
        let total = self.dropped.fetch_add(n, Ordering::Relaxed) + n;
        let mut last = self
            .last_drop_warning
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last.is_none_or(|t| now.duration_since(t) >= DROP_WARNING_EVERY) {
            *last = Some(now);
            let since = total - self.warned_drops.swap(total, Ordering::Relaxed);
            tracing::warn!(
                what,
                dropped = since,
                dropped_total = total,
                "store: writes dropped (queue full or not committed)"
            );
        }
    }
}

/// How long the writer lets node stats and sightings gather after a commit:
/// dashboards read the live view, not the store, and commits are dear (with
/// 2 ms instead of 50 ms, 100 reporters cost 1.73 s/min instead of 0.93; at
/// 250 ms the commits were still a quarter of the writer's time). Events end
/// the wait at once: their agent waits for the acknowledgement.
const GATHER_WRITES: Duration = Duration::from_secs(1);

async fn writer(
    conn: Arc<Mutex<Connection>>,
    mut rx: mpsc::Receiver<Write>,
    urgent: Arc<Notify>,
    options: StoreOptions,
    counters: Arc<Counters>,
) {
    let mut batch = Vec::new();
    let mut since_prune = 0u64;
    let mut errors = RateLimit::new(ERROR_LOG_EVERY);
    let mut failed_in_a_row = 0u64;
    while rx.recv_many(&mut batch, 4096).await > 0 {
        let writes = std::mem::take(&mut batch);
        let droppable = writes
            .iter()
            .filter(|w| !matches!(w, Write::Events { .. }))
            .count() as u64;
        let conn = conn.clone();
        let shared = counters.clone();
        let prune = since_prune >= options.prune_every;
        since_prune = if prune { 0 } else { since_prune } + writes.len() as u64;
        let result = tokio::task::spawn_blocking(move || {
            commit(&conn, writes, prune.then_some(&options), &shared)
        })
        .await
        .unwrap_or_else(|e| Err(rusqlite::Error::InvalidParameterName(e.to_string())));
        match result {
            Ok(()) => {
                if failed_in_a_row > 0 {
                    tracing::info!(failed_batches = failed_in_a_row, "store writes resumed");
                }
                failed_in_a_row = 0;
            }
            Err(e) => {
                failed_in_a_row += 1;
                if droppable > 0 {
                    counters.dropped.fetch_add(droppable, Ordering::Relaxed);
                }
                if let Some(held_back) = errors.check(Instant::now()) {
                    counters.error_logs.fetch_add(1, Ordering::Relaxed);
                    let disk_full =
                        matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DiskFull));
                    tracing::error!(
                        error = %e,
                        disk_full,
                        failed_batches = failed_in_a_row,
                        held_back,
                        "store write failed; reads go on, node stats and sightings are dropped, \
                         events are refused until writing works again (logged at most once a minute)"
                    );
                }
                // Give the disk a moment before the next batch.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        // Let more writes gather into the next transaction: at a block a
        // second per node, one commit per window instead of one per sighting.
        // An events write queued meanwhile left a permit: no wait then.
        tokio::select! {
            () = tokio::time::sleep(GATHER_WRITES) => {}
            () = urgent.notified() => {}
        }
    }
}

/// Commits one batch in one transaction; every events write learns the outcome.
fn commit(
    conn: &Mutex<Connection>,
    writes: Vec<Write>,
    prune: Option<&StoreOptions>,
    counters: &Counters,
) -> Result<(), rusqlite::Error> {
    let mut conn = conn.lock().unwrap_or_else(|e| e.into_inner());
    let mut acks = Vec::new();
    let mut rest = Vec::new();
    for write in writes {
        match write {
            Write::Events { node, events, done } => {
                acks.push(done);
                rest.push(Write::EventsOf { node, events });
            }
            other => rest.push(other),
        }
    }
    let result = write_batch(&mut conn, rest, prune);
    // Before anyone learns the outcome, so health() agrees with it.
    counters.failing.store(result.is_err(), Ordering::Relaxed);
    if result.is_err() {
        counters.failed_commits.fetch_add(1, Ordering::Relaxed);
    }
    for done in acks {
        let _ = done.send(result.as_ref().map(|_| ()).map_err(|e| e.to_string()));
    }
    result
}

fn write_batch(
    conn: &mut Connection,
    writes: Vec<Write>,
    prune: Option<&StoreOptions>,
) -> Result<(), rusqlite::Error> {
    let tx = conn.transaction()?;
    // A block is sighted by every node within moments: its row is written
    // once per batch, not once per sighting.
    let mut blocks_written: HashSet<String> = HashSet::new();
    for write in writes {
        match write {
            Write::Sighting { node, block: b } => {
                if !blocks_written.contains(b.hash.as_str()) {
                    blocks_written.insert(b.hash.clone());
                    tx.prepare_cached(
                    "INSERT OR IGNORE INTO blocks (hash, number, parent_hash, signer, timestamp,
                     difficulty, txs, gas_used, gas_limit, first_seen_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )?
                .execute(params![
                    b.hash,
                    b.number as i64,
                    b.parent_hash,
                    b.signer,
                    b.timestamp as i64,
                    b.difficulty as i64,
                    b.transactions as i64,
                    b.gas_used as i64,
                    b.gas_limit as i64,
                    b.seen_at_ms as i64
                ])?;
                }
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO sightings (hash, node, seen_ms, number)
                     VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![
                    b.hash,
                    node,
                    b.seen_at_ms as i64,
                    b.number as i64
                ])?;
            }
            Write::Node {
                id,
                name,
                stats,
                at_ms,
            } => {
                tx.prepare_cached(
                    "INSERT INTO nodes (id, name, stats, updated_ms) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (id) DO UPDATE SET name = ?2, stats = ?3, updated_ms = ?4",
                )?
                .execute(params![id, name, stats, at_ms as i64])?;
            }
            Write::EventsOf { node, events } => {
                for e in &events {
                    let body = serde_json::to_string(e).unwrap_or_default();
                    tx.prepare_cached(
                        "INSERT OR IGNORE INTO events (node, spool, seq, at_ms, body)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![
                        node,
                        e.spool,
                        e.seq as i64,
                        e.at_ms as i64,
                        body
                    ])?;
                }
            }
            Write::Events { .. } => unreachable!("split off by commit"),
        }
    }
    if let Some(options) = prune {
        prune_history(&tx, options)?;
    }
    tx.commit()
}

/// Deletes blocks and sightings below the retained range (by count, age and
/// bytes; each an indexed number range), folds old sightings into their
/// block's propagation summary, and deletes events beyond the per-node count
/// or age.
fn prune_history(
    tx: &rusqlite::Transaction<'_>,
    options: &StoreOptions,
) -> Result<(), rusqlite::Error> {
    let range: (Option<i64>, Option<i64>) =
        tx.query_row("SELECT MIN(number), MAX(number) FROM blocks", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    if let (Some(lowest), Some(highest)) = range {
        let keep = i64::try_from(options.retention_blocks).unwrap_or(i64::MAX);
        let mut below = highest.saturating_sub(keep);
        if let Some(age) = options.blocks_max_age {
            let cutoff = now_ms().saturating_sub(age.as_millis() as i64);
            // Only the few old rows are read (index on first_seen_ms).
            let old: Option<i64> = tx.query_row(
                "SELECT MAX(number) FROM blocks INDEXED BY blocks_first_seen WHERE first_seen_ms < ?1",
                [cutoff],
                |r| r.get(0),
            )?;
            if let Some(old) = old {
                below = below.max(old.saturating_add(1));
            }
        }
        if let Some(max) = options.blocks_max_bytes {
            if history_bytes(tx)? > max {
                // Freed pages are reused, so the file stops growing here.
                below = below.max(lowest.saturating_add((highest - lowest) / 10 + 1));
            }
        }
        tx.execute("DELETE FROM blocks WHERE number < ?1", [below])?;
        tx.execute("DELETE FROM sightings WHERE number < ?1", [below])?;
        let detail = i64::try_from(options.sighting_detail_blocks).unwrap_or(i64::MAX);
        summarise_sightings(tx, highest.saturating_sub(detail))?;
    }
    if let Some(age) = options.events_max_age {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let before = now.saturating_sub(age).as_millis() as i64;
        tx.execute("DELETE FROM events WHERE at_ms < ?1", [before])?;
    }
    let per_node = i64::try_from(options.events_per_node).unwrap_or(i64::MAX);
    let crowded: Vec<String> = tx
        .prepare("SELECT node FROM events GROUP BY node HAVING COUNT(*) > ?1")?
        .query_map([per_node], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for node in crowded {
        tx.execute(
            "DELETE FROM events WHERE rowid IN (
                 SELECT rowid FROM events WHERE node = ?1 ORDER BY at_ms DESC, seq DESC LIMIT -1 OFFSET ?2)",
            params![node, per_node],
        )?;
    }
    Ok(())
}

/// Blocks folded per prune, so a first prune of a large database does not
/// hold the writer for long.
const SUMMARISE_AT_ONCE: usize = 10_000;

/// Writes the propagation summary of the blocks below `below` that have
/// none yet and deletes their per-node sightings.
fn summarise_sightings(tx: &rusqlite::Transaction<'_>, below: i64) -> Result<(), rusqlite::Error> {
    let blocks: Vec<(String, i64, i64)> = tx
        .prepare_cached(
            "SELECT hash, number, first_seen_ms FROM blocks
             WHERE number < ?1 AND seen_count IS NULL ORDER BY number LIMIT ?2",
        )?
        .query_map(params![below, SUMMARISE_AT_ONCE as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    let Some(&(_, last, _)) = blocks.last() else {
        return tx
            .execute("DELETE FROM sightings WHERE number < ?1", [below])
            .map(drop);
    };
    let mut seen =
        tx.prepare_cached("SELECT seen_ms FROM sightings WHERE number = ?1 AND hash = ?2")?;
    let mut update = tx.prepare_cached(
        "UPDATE blocks SET seen_count = ?2, propagation_p50_ms = ?3, propagation_p90_ms = ?4,
         propagation_max_ms = ?5 WHERE hash = ?1",
    )?;
    for (hash, number, first) in &blocks {
        let mut delays: Vec<i64> = seen
            .query_map(params![number, hash], |r| r.get::<_, i64>(0))?
            .map(|t| t.map(|t| t.saturating_sub(*first).max(0)))
            .collect::<Result<_, _>>()?;
        delays.sort_unstable();
        let at =
            |p: usize| delays.get((delays.len() * p / 100).min(delays.len().saturating_sub(1)));
        update.execute(params![
            hash,
            delays.len() as i64,
            at(50),
            at(90),
            delays.last()
        ])?;
    }
    // Every block below `last` is summarised now (ordered by number); those
    // at `last` may not all be when the batch was full.
    let done_below = if blocks.len() < SUMMARISE_AT_ONCE {
        below
    } else {
        last
    };
    tx.execute("DELETE FROM sightings WHERE number < ?1", [done_below])?;
    Ok(())
}

/// Bytes in use in the database file.
fn history_bytes(tx: &rusqlite::Transaction<'_>) -> Result<u64, rusqlite::Error> {
    // Pages in use (freed pages are reused before the file grows).
    let page_size: i64 = tx.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let pages: i64 = tx.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let free: i64 = tx.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    Ok((pages.saturating_sub(free) * page_size).max(0) as u64)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use geth_wire::EventKind;

    fn block(number: u64, hash: &str) -> BlockReport {
        BlockReport {
            number,
            hash: hash.into(),
            parent_hash: "0x0".into(),
            timestamp: number,
            signer: Some("0xaa".into()),
            difficulty: 2,
            transactions: 0,
            gas_used: 0,
            gas_limit: 1,
            seen_at_ms: 1000 + number,
        }
    }

    #[tokio::test]
    async fn events_are_stored_once_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agg.db");
        let store = Store::open(&path, 1000).unwrap();
        let event = Event {
            spool: "s".into(),
            seq: 1,
            at_ms: 5,
            kind: EventKind::Blocked { reason: "x".into() },
        };
        store.events("n1", vec![event.clone()]).await.unwrap();
        store.events("n1", vec![event.clone()]).await.unwrap();
        assert_eq!(store.event_count("n1", 1).unwrap(), 1);
        store.sighting("n1", block(1, "0x1"));
        store.sighting("n2", block(1, "0x1"));
        store.events("n1", vec![]).await.unwrap(); // a barrier: earlier writes are committed
        drop(store);

        let store = Store::open(&path, 1000).unwrap();
        let blocks = store.recent_blocks(10).unwrap();
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].sightings.len(), 2);
        assert_eq!(
            store.recent_events(10).unwrap(),
            vec![("n1".to_owned(), event)]
        );
    }

    #[tokio::test]
    async fn a_read_does_not_wait_for_a_commit_and_sees_only_committed_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("agg.db"), 1000).unwrap();
        store.save_restart_plan(1, r#"{"state":"done"}"#).unwrap();
        // A batch being committed: the writer's connection is held, mid-transaction.
        let mut writer = store.lock();
        let batch = writer.transaction().unwrap();
        batch
            .execute(
                "INSERT INTO restart_plans (id, state, body, updated_ms) VALUES (2, 'running', '{}', 0)",
                [],
            )
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reading = store.clone();
        std::thread::spawn(move || {
            let _ = tx.send(reading.restart_plans(10).map_err(|e| e.to_string()));
        });
        let plans = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("a read waited for the writer's transaction")
            .unwrap();
        assert_eq!(plans, vec![r#"{"state":"done"}"#.to_owned()]);
        batch.commit().unwrap();
        drop(writer);
        assert_eq!(store.restart_plans(10).unwrap().len(), 2);
        assert_eq!(store.max_restart_plan_id().unwrap(), 2);
        // The readers' connection cannot write.
        assert!(store
            .read()
            .execute("DELETE FROM restart_plans", [])
            .is_err());
    }

    fn event(spool: &str, seq: u64, at_ms: u64) -> Event {
        Event {
            spool: spool.into(),
            seq,
            at_ms,
            kind: EventKind::Blocked {
                reason: format!("{spool}/{seq}"),
            },
        }
    }

    #[tokio::test]
    async fn a_recreated_spool_is_new_events_not_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("agg.db"), 1000).unwrap();
        store.events("n1", vec![event("aaaa", 1, 1)]).await.unwrap();
        // The spool folder was deleted: a new id, sequence numbers from 1 again.
        store.events("n1", vec![event("bbbb", 1, 2)]).await.unwrap();
        store.events("n1", vec![event("bbbb", 1, 2)]).await.unwrap();
        assert_eq!(store.event_count_in("n1", "aaaa", 1).unwrap(), 1);
        assert_eq!(store.event_count_in("n1", "bbbb", 1).unwrap(), 1);
        assert_eq!(store.event_count("n1", 1).unwrap(), 2);
        assert_eq!(store.recent_events(10).unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_version_1_database_is_migrated_and_keeps_its_history() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        {
            // The schema as the first release wrote it: no user_version.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(PRAGMAS).unwrap();
            conn.execute_batch(SCHEMA_V1).unwrap();
            let old = event("", 1, 5);
            conn.execute(
                "INSERT INTO events (node, seq, at_ms, body) VALUES ('n1', 1, 5, ?1)",
                [serde_json::to_string(&old).unwrap()],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO blocks (hash, number, parent_hash, signer, timestamp, difficulty, txs, gas_used, gas_limit, first_seen_ms)
                 VALUES ('0x7', 7, '0x6', NULL, 7, 2, 0, 0, 1, 1007)",
                [],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO sightings (hash, node, seen_ms) VALUES ('0x7', 'n1', 1007)",
                [],
            )
            .unwrap();
            let version: i64 = conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap();
            assert_eq!(version, 0);
        }
        let store = Store::open(&path, 1000).unwrap();
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, schema_version());
        assert_eq!(store.event_count_in("n1", "", 1).unwrap(), 1);
        let number: i64 = conn
            .query_row("SELECT number FROM sightings WHERE hash = '0x7'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(number, 7);
        assert_eq!(store.recent_blocks(10).unwrap()[0].sightings.len(), 1);
        // An agent's spool with an id: seq 1 again is a new event.
        store.events("n1", vec![event("cafe", 1, 6)]).await.unwrap();
        assert_eq!(store.event_count("n1", 1).unwrap(), 2);
        drop(store);
        // Opening again changes nothing; a newer schema is refused.
        Store::open(&path, 1000).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        assert!(matches!(
            Store::open(&path, 1000),
            Err(StoreError::NewerSchema { found: 99, .. })
        ));
    }

    #[tokio::test]
    async fn a_version_6_database_keeps_every_sighting_of_every_branch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agg.db");
        {
            let mut conn = Connection::open(&path).unwrap();
            for step in &MIGRATIONS[..6] {
                conn.execute_batch(step).unwrap();
            }
            conn.pragma_update(None, "user_version", 6).unwrap();
            let tx = conn.transaction().unwrap();
            for (hash, first_seen) in [("0xa", 1000), ("0xb", 1001)] {
                tx.execute(
                    "INSERT INTO blocks (hash, number, parent_hash, signer, timestamp, difficulty, txs, gas_used, gas_limit, first_seen_ms)
                     VALUES (?1, 7, '0x6', NULL, 7, 2, 0, 0, 1, ?2)",
                    params![hash, first_seen],
                )
                .unwrap();
                for (node, seen) in [("n1", 1000), ("n2", 1005)] {
                    tx.execute(
                        "INSERT INTO sightings (hash, node, seen_ms, number) VALUES (?1, ?2, ?3, 7)",
                        params![hash, node, seen],
                    )
                    .unwrap();
                }
            }
            tx.commit().unwrap();
        }
        let store = Store::open(&path, 1000).unwrap();
        let blocks = store.recent_blocks(10).unwrap();
        assert_eq!(blocks.len(), 2);
        for b in &blocks {
            let mut seen = b.sightings.clone();
            seen.sort();
            assert_eq!(
                seen,
                [("n1".to_owned(), 1000), ("n2".to_owned(), 1005)],
                "{}",
                b.block.hash
            );
        }
        let version: i64 = store
            .lock()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 7);
    }

    #[tokio::test]
    async fn retention_prunes_events_per_node_and_blocks_by_an_indexed_range() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(
            &dir.path().join("agg.db"),
            StoreOptions {
                retention_blocks: 10,
                events_per_node: 3,
                prune_every: 1,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        for seq in 1..=10 {
            store
                .events("n1", vec![event("s", seq, now + seq)])
                .await
                .unwrap();
        }
        store.events("n2", vec![event("s", 1, now)]).await.unwrap();
        // An event older than a year goes by age.
        store.events("n3", vec![event("s", 1, 1)]).await.unwrap();
        for n in 1..=40 {
            store.sighting("n1", block(n, &format!("0x{n:x}")));
        }
        store.events("n1", vec![]).await.unwrap();
        store.events("n1", vec![]).await.unwrap(); // a prune ran after the sightings
        assert_eq!(store.events_of("n1").unwrap(), 3);
        assert_eq!(
            store.event_count_in("n1", "s", 10).unwrap(),
            1,
            "the newest stay"
        );
        assert_eq!(store.event_count_in("n1", "s", 7).unwrap(), 0);
        assert_eq!(store.events_of("n2").unwrap(), 1);
        assert_eq!(store.events_of("n3").unwrap(), 0);
        let blocks = store.recent_blocks(100).unwrap();
        assert_eq!(blocks.last().unwrap().block.number, 30);
        let conn = store.lock();
        let orphans: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sightings WHERE number < 30",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(orphans, 0);
        // The prunes use indexes, not full scans.
        for (sql, index) in [
            ("DELETE FROM sightings WHERE number < 5", "PRIMARY KEY"),
            (
                "SELECT seen_ms FROM sightings WHERE number = 5 AND hash = 'h'",
                "PRIMARY KEY",
            ),
            ("DELETE FROM blocks WHERE number < 5", "blocks_number"),
            ("DELETE FROM events WHERE at_ms < 5", "events_at"),
            (
                "SELECT MAX(number) FROM blocks INDEXED BY blocks_first_seen WHERE first_seen_ms < 5",
                "blocks_first_seen",
            ),
        ] {
            let plan: Vec<String> = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap()
                .query_map([], |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(plan.iter().any(|p| p.contains(index)), "{sql}: {plan:?}");
        }
    }

    fn seen_at(number: u64, hash: &str, seen_at_ms: u64) -> BlockReport {
        BlockReport {
            seen_at_ms,
            ..block(number, hash)
        }
    }

    #[tokio::test]
    async fn old_sightings_fold_into_a_propagation_summary() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(
            &dir.path().join("agg.db"),
            StoreOptions {
                sighting_detail_blocks: 5,
                prune_every: 1,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        for n in 1..=20u64 {
            let hash = format!("0x{n:x}");
            // Seen first by n1, then 10 ms and 100 ms later.
            for (node, delay) in [("n1", 0), ("n2", 10), ("n3", 100)] {
                store.sighting(node, seen_at(n, &hash, 1_000 * n + delay));
            }
        }
        store.events("n1", vec![]).await.unwrap();
        store.events("n1", vec![]).await.unwrap(); // a prune ran after the sightings
        let conn = store.lock();
        let summary = |n: u64| -> (Option<i64>, Option<i64>, Option<i64>, Option<i64>, i64) {
            conn.query_row(
                "SELECT seen_count, propagation_p50_ms, propagation_p90_ms, propagation_max_ms,
                        (SELECT COUNT(*) FROM sightings WHERE number = ?1)
                 FROM blocks WHERE number = ?1",
                [n as i64],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap()
        };
        assert_eq!(
            summary(3),
            (Some(3), Some(10), Some(100), Some(100), 0),
            "an old block keeps its propagation, not its rows"
        );
        assert_eq!(summary(14), (Some(3), Some(10), Some(100), Some(100), 0));
        assert_eq!(
            summary(15),
            (None, None, None, None, 3),
            "the newest 5 blocks keep every sighting"
        );
        let blocks: i64 = conn
            .query_row("SELECT COUNT(*) FROM blocks", [], |r| r.get(0))
            .unwrap();
        assert_eq!(blocks, 20, "folding deletes no block");
    }

    #[tokio::test]
    async fn blocks_go_by_age_and_by_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let aged = Store::open_with(
            &dir.path().join("aged.db"),
            StoreOptions {
                blocks_max_age: Some(Duration::from_secs(24 * 3600)),
                prune_every: 1,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        for n in 1..=20u64 {
            // Blocks 1-10 were first seen two days ago.
            let at = if n <= 10 { now - 2 * 86_400_000 } else { now };
            aged.sighting("n1", seen_at(n, &format!("0x{n:x}"), at));
        }
        aged.events("n1", vec![]).await.unwrap();
        aged.events("n1", vec![]).await.unwrap();
        let kept = aged.recent_blocks(100).unwrap();
        assert_eq!(kept.len(), 10);
        assert_eq!(kept.last().unwrap().block.number, 11);

        let small = Store::open_with(
            &dir.path().join("small.db"),
            StoreOptions {
                blocks_max_bytes: Some(1),
                prune_every: 1,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        for n in 1..=100u64 {
            small.sighting("n1", seen_at(n, &format!("0x{n:x}"), now));
        }
        small.events("n1", vec![]).await.unwrap();
        small.events("n1", vec![]).await.unwrap();
        let kept = small.recent_blocks(1000).unwrap();
        assert!(
            kept.len() < 100 && kept.first().unwrap().block.number == 100,
            "over the byte bound the oldest blocks go, the newest stay: {} kept",
            kept.len()
        );
    }

    #[tokio::test]
    async fn writes_beyond_a_full_queue_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(
            &dir.path().join("agg.db"),
            StoreOptions {
                queue: 2,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        // The writer has not run yet (nothing awaited): the queue holds two.
        for i in 0..5 {
            store.node(&format!("n{i}"), "n", "{}".into(), 1);
        }
        store.sighting("n1", block(1, "0x1"));
        assert_eq!(store.health().dropped_writes, 4);
        store.events("n1", vec![]).await.unwrap();
        assert_eq!(store.nodes().unwrap().len(), 2);
    }

    #[test]
    fn rate_limited_lines_count_what_they_hold_back() {
        let mut limit = RateLimit::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(limit.check(t0), Some(0));
        assert_eq!(limit.check(t0 + Duration::from_secs(1)), None);
        assert_eq!(limit.check(t0 + Duration::from_secs(59)), None);
        assert_eq!(limit.check(t0 + Duration::from_secs(60)), Some(2));
    }

    /// A tmpfs of 1 MiB mounted on a temporary folder (needs root).
    struct SmallDisk(tempfile::TempDir);

    impl SmallDisk {
        fn mount() -> Option<Self> {
            let dir = tempfile::tempdir().ok()?;
            let ok = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            ok.then_some(Self(dir))
        }
    }

    impl Drop for SmallDisk {
        fn drop(&mut self) {
            // Lazily: the writer task may still hold the database open.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.0.path())
                .status();
        }
    }

    /// Fills the file system with `filler`.
    fn fill(filler: &Path) {
        use std::io::Write;
        let mut file = std::fs::File::create(filler).unwrap();
        let chunk = vec![0u8; 4096];
        while file
            .write_all(&chunk)
            .and_then(|()| file.sync_all())
            .is_ok()
        {}
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_disk_keeps_reads_logs_once_a_minute_and_recovers() {
        let Some(disk) = SmallDisk::mount() else {
            eprintln!("skipped: mounting a tmpfs needs root");
            return;
        };
        let path = disk.0.path().join("agg.db");
        let store = Store::open(&path, 1000).unwrap();
        store.sighting("n1", block(1, "0x1"));
        store.events("n1", vec![event("s", 1, 1)]).await.unwrap();
        let filler = disk.0.path().join("filler");
        fill(&filler);

        // Writes fail: big stats, so every batch needs new pages.
        let big = "x".repeat(64 * 1024);
        let mut refused = 0;
        for i in 2..30u64 {
            store.node(&format!("n{i}"), "n", big.clone(), i);
            store.sighting("n1", block(i, &format!("0x{i:x}")));
            if store.events("n1", vec![event("s", i, i)]).await.is_err() {
                refused += 1;
            }
        }
        let health = store.health();
        assert!(refused >= 20, "events were refused, not lost: {refused}");
        assert!(health.failing && health.failed_commits >= 20, "{health:?}");
        assert!(health.dropped_writes >= 20, "{health:?}");
        assert_eq!(health.error_logs, 1, "one error line a minute: {health:?}");
        // Reads go on.
        assert_eq!(store.recent_blocks(10).unwrap().len(), 1);
        assert_eq!(store.recent_events(10).unwrap().len(), 1);

        // Space returns: writing resumes by itself.
        std::fs::remove_file(&filler).unwrap();
        store.sighting("n1", block(40, "0x28"));
        store.events("n1", vec![event("s", 40, 40)]).await.unwrap();
        assert!(!store.health().failing);
        assert_eq!(store.recent_blocks(10).unwrap().len(), 2);
        assert_eq!(store.event_count_in("n1", "s", 40).unwrap(), 1);
    }
}
