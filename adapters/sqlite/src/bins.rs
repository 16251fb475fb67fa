//! The imported BIN table ([`BinTableStore`]): each import is one row of
//! `bin_tables`, numbered; the newest is the active table. An import is
//! one insert on the writer thread, so a reader sees a whole table or the
//! one before; older imports are deleted by the same write.

use async_trait::async_trait;
use cardbind_domain::{BinTable, Timestamp};
use cardbind_ports::bins::{BinTableStore, BinTableVersion, StoredBinTable};
use cardbind_ports::StoreError;
use cardbind_records::BinRowRecord;
use rusqlite::{params, OptionalExtension};

use crate::error::{corrupt, db_err};
use crate::SqliteStore;

const ACTIVE: &str = "SELECT n, id, imported_at, entries FROM bin_tables
     WHERE n = (SELECT MAX(n) FROM bin_tables)";
const LOAD: &str = "SELECT n, id, imported_at, entries, rows FROM bin_tables
     WHERE n = (SELECT MAX(n) FROM bin_tables)";
const INSERT: &str = "INSERT INTO bin_tables (n, id, imported_at, entries, rows)
     VALUES ((SELECT COALESCE(MAX(n), 0) + 1 FROM bin_tables), ?1, ?2, ?3, ?4)";
const DROP_OLDER: &str = "DELETE FROM bin_tables WHERE n < (SELECT MAX(n) FROM bin_tables)";

#[cfg_attr(not(test), allow(dead_code))]
pub(crate) const STATEMENTS: &[(&str, &str)] = &[
    ("bins_active", ACTIVE),
    ("bins_load", LOAD),
    ("bins_insert", INSERT),
    ("bins_drop_older", DROP_OLDER),
];

fn version(id: String, imported_at: i64, entries: i64) -> BinTableVersion {
    BinTableVersion {
        id,
        imported_at: Timestamp::from_unix_millis(imported_at),
        entries: u64::try_from(entries).unwrap_or(0),
    }
}

#[async_trait]
impl BinTableStore for SqliteStore {
    async fn active_version(&self) -> Result<Option<BinTableVersion>, StoreError> {
        self.engine.read(|c| {
            c.prepare_cached(ACTIVE)
                .and_then(|mut s| {
                    s.query_row([], |r| Ok(version(r.get(1)?, r.get(2)?, r.get(3)?)))
                        .optional()
                })
                .map_err(db_err)
        })
    }

    async fn load(&self) -> Result<Option<StoredBinTable>, StoreError> {
        let row = self.engine.read(|c| {
            c.prepare_cached(LOAD)
                .and_then(|mut s| {
                    s.query_row([], |r| {
                        Ok((
                            version(r.get(1)?, r.get(2)?, r.get(3)?),
                            r.get::<_, String>(4)?,
                        ))
                    })
                    .optional()
                })
                .map_err(db_err)
        })?;
        let Some((version, rows)) = row else {
            return Ok(None);
        };
        let rows: Vec<BinRowRecord> =
            serde_json::from_str(&rows).map_err(|e| corrupt(format!("a BIN table: {e}")))?;
        if rows.len() as u64 != version.entries {
            return Err(corrupt(
                "a BIN table with another number of rows than recorded",
            ));
        }
        let entries = rows
            .iter()
            .map(BinRowRecord::into_domain)
            .collect::<Result<Vec<_>, _>>()?;
        let table = BinTable::new(entries).map_err(|e| corrupt(format!("a BIN table: {e}")))?;
        Ok(Some(StoredBinTable { version, table }))
    }

    async fn replace(
        &self,
        table: &BinTable,
        imported_at: Timestamp,
    ) -> Result<BinTableVersion, StoreError> {
        let rows: Vec<BinRowRecord> = table.entries().iter().map(BinRowRecord::from).collect();
        let text = serde_json::to_string(&rows).map_err(|e| corrupt(e.to_string()))?;
        let id = format!("{:x}-{:x}", imported_at.unix_millis(), rand_tag());
        let entries = rows.len() as i64;
        let v = version(id.clone(), imported_at.unix_millis(), entries);
        self.engine
            .write(move |tx| {
                tx.conn
                    .prepare_cached(INSERT)
                    .and_then(|mut s| {
                        s.execute(params![id, imported_at.unix_millis(), entries, text])
                    })
                    .map_err(db_err)?;
                tx.conn
                    .prepare_cached(DROP_OLDER)
                    .and_then(|mut s| s.execute([]))
                    .map_err(db_err)?;
                Ok(())
            })
            .await?;
        Ok(v)
    }
}

/// A tag that makes two imports in one millisecond different ids.
fn rand_tag() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()))
        .unwrap_or(0);
    nanos ^ (N.fetch_add(1, Ordering::Relaxed) << 32) ^ u64::from(std::process::id())
}

impl SqliteStore {
    /// The BIN table store of this file.
    pub fn bin_tables(&self) -> SqliteStore {
        self.clone()
    }
}
