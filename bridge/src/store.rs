//! The service's own SQLite file: one record per signed deposit (digest and
//! block hash, to detect a deposit that changed after it was signed) and an
//! append-only audit log of every request.

use std::path::Path;
use std::sync::Mutex;

use alloy::primitives::{Address, B256};
use rusqlite::{params, Connection, OptionalExtension};

#[derive(Debug, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(#[from] rusqlite::Error);

pub struct Store {
    conn: Mutex<Connection>,
}

/// What was signed for one deposit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRecord {
    pub digest: B256,
    pub block_hash: B256,
    pub signature: Vec<u8>,
}

/// One line of the audit log.
#[derive(Debug, Clone)]
pub struct AuditEntry<'a> {
    pub direction: &'a str,
    pub tx_hash: &'a str,
    pub log_index: Option<u64>,
    pub client: &'a str,
    pub outcome: &'a str,
    pub reason: &'a str,
    pub digest: Option<B256>,
}

pub enum Recorded {
    /// First signature for this deposit.
    New,
    /// Signed before with the same digest and block hash.
    Same(SignedRecord),
    /// Signed before with something else: an incident.
    Mismatch(SignedRecord),
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE IF NOT EXISTS signed (
                 direction TEXT NOT NULL,
                 source_contract TEXT NOT NULL,
                 nonce TEXT NOT NULL,
                 tx_hash TEXT NOT NULL,
                 block_hash TEXT NOT NULL,
                 digest TEXT NOT NULL,
                 signature TEXT NOT NULL,
                 signed_at INTEGER NOT NULL,
                 PRIMARY KEY (direction, source_contract, nonce)
             );
             CREATE TABLE IF NOT EXISTS audit (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 at INTEGER NOT NULL,
                 direction TEXT NOT NULL,
                 tx_hash TEXT NOT NULL,
                 log_index INTEGER,
                 client TEXT NOT NULL,
                 outcome TEXT NOT NULL,
                 reason TEXT NOT NULL,
                 digest TEXT
             );",
        )?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the signature of a deposit, or compares with the earlier one.
    pub fn record(
        &self,
        direction: &str,
        source_contract: Address,
        nonce: &str,
        tx_hash: B256,
        record: &SignedRecord,
    ) -> Result<Recorded, StoreError> {
        let conn = self.lock();
        let earlier = conn
            .query_row(
                "SELECT digest, block_hash, signature FROM signed
                 WHERE direction = ?1 AND source_contract = ?2 AND nonce = ?3",
                params![direction, source_contract.to_string(), nonce],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                    ))
                },
            )
            .optional()?;
        if let Some((digest, block_hash, signature)) = earlier {
            let earlier = SignedRecord {
                digest: digest.parse().unwrap_or_default(),
                block_hash: block_hash.parse().unwrap_or_default(),
                signature: hex::decode(signature).unwrap_or_default(),
            };
            // Digest and block hash identify what was signed; the signature
            // may differ after a key rotation (a new key signs the same claim).
            let same = earlier.digest == record.digest && earlier.block_hash == record.block_hash;
            return Ok(if same {
                Recorded::Same(earlier)
            } else {
                Recorded::Mismatch(earlier)
            });
        }
        conn.execute(
            "INSERT INTO signed (direction, source_contract, nonce, tx_hash, block_hash, digest, signature, signed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                direction,
                source_contract.to_string(),
                nonce,
                tx_hash.to_string(),
                record.block_hash.to_string(),
                record.digest.to_string(),
                hex::encode(&record.signature),
                now(),
            ],
        )?;
        Ok(Recorded::New)
    }

    pub fn audit(&self, entry: &AuditEntry<'_>) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT INTO audit (at, direction, tx_hash, log_index, client, outcome, reason, digest)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                now(),
                entry.direction,
                entry.tx_hash,
                entry.log_index.map(|i| i as i64),
                entry.client,
                entry.outcome,
                entry.reason,
                entry.digest.map(|d| d.to_string()),
            ],
        )?;
        Ok(())
    }

    /// (outcome, reason) of the audit log in order, for tests and operators.
    pub fn audit_outcomes(&self) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare("SELECT outcome, reason FROM audit ORDER BY id")?;
        let rows = stmt
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_digest_or_block_is_a_mismatch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("s.sqlite")).expect("open");
        let first = SignedRecord {
            digest: B256::repeat_byte(1),
            block_hash: B256::repeat_byte(2),
            signature: vec![7; 65],
        };
        let c = Address::repeat_byte(9);
        let tx = B256::repeat_byte(3);
        assert!(matches!(
            store.record("d", c, "1", tx, &first),
            Ok(Recorded::New)
        ));
        assert!(matches!(
            store.record("d", c, "1", tx, &first),
            Ok(Recorded::Same(_))
        ));
        let moved = SignedRecord {
            block_hash: B256::repeat_byte(4),
            ..first
        };
        assert!(matches!(
            store.record("d", c, "1", tx, &moved),
            Ok(Recorded::Mismatch(_))
        ));
        // Another nonce or direction is another deposit.
        assert!(matches!(
            store.record("d", c, "2", tx, &moved),
            Ok(Recorded::New)
        ));
        assert!(matches!(
            store.record("e", c, "1", tx, &moved),
            Ok(Recorded::New)
        ));
    }
}
