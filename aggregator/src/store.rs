//! Persistent store: embedded SQLite (WAL). Writes go through one writer task
//! that commits in batches, so a thousand reporting nodes cost one transaction
//! every few milliseconds; events are acknowledged only after their commit.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use geth_wire::{BlockReport, Event};
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the store writer has stopped")]
    Stopped,
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
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
}

/// Handle to the store: reads directly, writes through the writer task.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    writes: mpsc::Sender<Write>,
}

impl Store {
    /// Opens (creating if needed) and starts the writer; `retention` bounds the blocks kept.
    pub fn open(path: &Path, retention: u64) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.execute_batch(SCHEMA)?;
        let conn = Arc::new(Mutex::new(conn));
        let (writes, rx) = mpsc::channel(16 * 1024);
        tokio::spawn(writer(conn.clone(), rx, retention));
        Ok(Self { conn, writes })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a block sighting (dropped, with a warning, if the queue is full).
    pub fn sighting(&self, node: &str, block: BlockReport) {
        if self
            .writes
            .try_send(Write::Sighting {
                node: node.to_owned(),
                block,
            })
            .is_err()
        {
            tracing::warn!("store queue full: a block sighting was not persisted");
        }
    }

    pub fn node(&self, id: &str, name: &str, stats: String, at_ms: u64) {
        let _ = self.writes.try_send(Write::Node {
            id: id.into(),
            name: name.into(),
            stats,
            at_ms,
        });
    }

    /// Stores events once per (node, seq); returns when they are committed.
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
        wait.await
            .map_err(|_| StoreError::Stopped)?
            .map_err(|e| StoreError::Sqlite(rusqlite::Error::InvalidParameterName(e)))
    }

    /// The most recent blocks, newest first, with their sightings.
    pub fn recent_blocks(&self, limit: usize) -> Result<Vec<StoredBlock>, StoreError> {
        let conn = self.lock();
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
        let mut sight = conn.prepare("SELECT node, seen_ms FROM sightings WHERE hash = ?1")?;
        for b in &mut blocks {
            b.sightings = sight
                .query_map([&b.block.hash], |r| {
                    Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))
                })?
                .collect::<Result<_, _>>()?;
        }
        Ok(blocks)
    }

    /// Events, newest first: (node id, event).
    pub fn recent_events(&self, limit: usize) -> Result<Vec<(String, Event)>, StoreError> {
        let conn = self.lock();
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

    /// How many times (node, seq) is stored: 0 or 1.
    pub fn event_count(&self, node: &str, seq: u64) -> Result<u64, StoreError> {
        let conn = self.lock();
        let n: i64 = conn.query_row(
            "SELECT COUNT(*) FROM events WHERE node = ?1 AND seq = ?2",
            params![node, seq as i64],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// Last stats of every node: (id, name, stats JSON, updated ms).
    pub fn nodes(&self) -> Result<Vec<(String, String, String, u64)>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare("SELECT id, name, stats, updated_ms FROM nodes")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, i64>(3)? as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn block_by_hash(&self, hash: &str) -> Result<Option<u64>, StoreError> {
        let conn = self.lock();
        Ok(conn
            .query_row("SELECT number FROM blocks WHERE hash = ?1", [hash], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?
            .map(|n| n as u64))
    }
}

async fn writer(conn: Arc<Mutex<Connection>>, mut rx: mpsc::Receiver<Write>, retention: u64) {
    let mut batch = Vec::new();
    let mut since_prune = 0u64;
    while rx.recv_many(&mut batch, 4096).await > 0 {
        let writes = std::mem::take(&mut batch);
        let conn = conn.clone();
        let prune = since_prune >= 1000;
        since_prune = if prune {
            0
        } else {
            since_prune + writes.len() as u64
        };
        let result =
            tokio::task::spawn_blocking(move || commit(&conn, writes, prune.then_some(retention)))
                .await;
        if let Ok(Err(e)) | Err(e) =
            result.map_err(|e| rusqlite::Error::InvalidParameterName(e.to_string()))
        {
            tracing::error!(error = %e, "store write failed");
        }
        // Let more writes gather into the next transaction.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn commit(
    conn: &Mutex<Connection>,
    writes: Vec<Write>,
    prune: Option<u64>,
) -> Result<(), rusqlite::Error> {
    let mut conn = conn.lock().unwrap_or_else(|e| e.into_inner());
    let tx = conn.transaction()?;
    let mut acks = Vec::new();
    for write in writes {
        match write {
            Write::Sighting { node, block: b } => {
                tx.execute(
                    "INSERT OR IGNORE INTO blocks (hash, number, parent_hash, signer, timestamp, difficulty, txs, gas_used, gas_limit, first_seen_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    params![b.hash, b.number as i64, b.parent_hash, b.signer, b.timestamp as i64, b.difficulty as i64,
                            b.transactions as i64, b.gas_used as i64, b.gas_limit as i64, b.seen_at_ms as i64],
                )?;
                tx.execute(
                    "INSERT OR IGNORE INTO sightings (hash, node, seen_ms) VALUES (?1, ?2, ?3)",
                    params![b.hash, node, b.seen_at_ms as i64],
                )?;
            }
            Write::Node {
                id,
                name,
                stats,
                at_ms,
            } => {
                tx.execute(
                    "INSERT INTO nodes (id, name, stats, updated_ms) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (id) DO UPDATE SET name = ?2, stats = ?3, updated_ms = ?4",
                    params![id, name, stats, at_ms as i64],
                )?;
            }
            Write::Events { node, events, done } => {
                let mut result = Ok(());
                for e in &events {
                    let body = serde_json::to_string(e).unwrap_or_default();
                    if let Err(err) = tx.execute(
                        "INSERT OR IGNORE INTO events (node, seq, at_ms, body) VALUES (?1, ?2, ?3, ?4)",
                        params![node, e.seq as i64, e.at_ms as i64, body],
                    ) {
                        result = Err(err.to_string());
                    }
                }
                acks.push((done, result));
            }
        }
    }
    if let Some(keep) = prune {
        tx.execute(
            "DELETE FROM blocks WHERE number < (SELECT MAX(number) FROM blocks) - ?1",
            [keep as i64],
        )?;
        tx.execute(
            "DELETE FROM sightings WHERE hash NOT IN (SELECT hash FROM blocks)",
            [],
        )?;
    }
    let committed = tx.commit();
    for (done, result) in acks {
        let _ = done.send(match &committed {
            Ok(()) => result,
            Err(e) => Err(e.to_string()),
        });
    }
    committed
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
}
