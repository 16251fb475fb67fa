//! [`BinTableStore`] on MongoDB: an imported BIN table, shared by every
//! instance, replaced whole without transactions.
//!
//! ## Layout
//! * `bin_table_chunks`: the rows of each imported version, in chunks of
//!   [`CHUNK_ROWS`] entries: `{_id: "{version}#{i}", version, i,
//!   written_at, rows: [{low, high, issuer, name_zh, name_en, card_type?,
//!   country?, currency?}, …]}` (unknown values left out). Written once,
//!   never changed.
//! * `bin_table_versions`: the active-version pointer as a chain of
//!   immutable documents `{_id: n as 20 digits, n, version, chunks,
//!   entries, imported_at_ms, written_at}`. The active table is the one
//!   named by the highest `n`.
//!
//! ## Replace (one commit point: an insert)
//! 1. Write every chunk of the new version (a fresh ObjectId, so no other
//!    writer can touch these documents).
//! 2. **Commit**: read the highest `n` and insert pointer `n + 1` naming
//!    the new version. The insert succeeds only on a free `_id`; on a
//!    duplicate another import committed first, so read again and insert
//!    above it. From this insert on, readers load the new table.
//! 3. Tidy up (best effort): delete the chunks of versions that are neither
//!    this one, the one it replaced, nor any committed after it, and that
//!    were written more than [`gc margin`](MongoBinTableStore::gc_margin)
//!    ago.
//!
//! A crash before 2 leaves unreferenced chunks (deleted by a later
//! import's step 3) and the old table active; a crash after 2 leaves the
//! new table active. No reader ever sees a part of a table: it reads the
//! pointer, then exactly `chunks` chunks of that version, and checks their
//! row count against `entries`.
//!
//! An import whose chunks took longer than half the gc margin to write
//! gives up before committing (`Unavailable`: run it again), so that a
//! tidy-up can never delete the chunks of a version that commits later.
//! A reader whose version is tidied away while it reads (two newer imports
//! committed in between, an hour after that version was written) finds a
//! chunk missing and starts again from the pointer.
//!
//! On FerretDB every read here is by `_id` except the pointer head (a
//! `sort` over the pointer collection: one small document per import) and
//! the tidy-up.

use std::future::IntoFuture;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use cardbind_domain::{BinEntry, BinTable, Timestamp};
use cardbind_ports::bins::{BinTableStore, BinTableVersion, StoredBinTable};
use cardbind_ports::StoreError;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{doc, DateTime};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};

use crate::schema::labels::*;

/// Entries per chunk document (about 100–200 KB of BSON).
pub const CHUNK_ROWS: usize = 1000;

/// Chunks per `insert_many` while importing.
const CHUNKS_PER_INSERT: usize = 16;

/// Collection names.
pub mod collections {
    pub const BIN_TABLE_VERSIONS: &str = "bin_table_versions";
    pub const BIN_TABLE_CHUNKS: &str = "bin_table_chunks";
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct VersionDoc {
    #[serde(rename = "_id")]
    id: String,
    n: i64,
    version: String,
    chunks: i64,
    entries: i64,
    imported_at_ms: i64,
    written_at: DateTime,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct ChunkDoc {
    #[serde(rename = "_id")]
    id: String,
    version: String,
    i: i64,
    written_at: DateTime,
    rows: Vec<RowDoc>,
}

type RowDoc = cardbind_records::BinRowRecord;

fn chunk_id(version: &str, i: i64) -> String {
    format!("{version}#{i}")
}

fn row(e: &BinEntry) -> RowDoc {
    RowDoc::from(e)
}

fn entry(r: &RowDoc) -> Result<BinEntry, StoreError> {
    r.into_domain()
}

fn wall_now() -> DateTime {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    DateTime::from_millis(ms)
}

fn is_duplicate(e: &mongodb::error::Error) -> bool {
    const DUPLICATE_KEY: i32 = 11000;
    match &*e.kind {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        ErrorKind::Command(c) => c.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(m) => m
            .write_errors
            .iter()
            .flatten()
            .any(|w| w.code == DUPLICATE_KEY),
        _ => false,
    }
}

/// Driver error → port error: an undecodable document is `Corrupt`, a
/// duplicate key `Duplicate`, anything else `Unavailable`.
fn map_err(e: mongodb::error::Error) -> StoreError {
    if is_duplicate(&e) {
        return StoreError::Duplicate;
    }
    match &*e.kind {
        ErrorKind::BsonDeserialization(_) | ErrorKind::InvalidResponse { .. } => {
            StoreError::Corrupt(e.to_string())
        }
        _ => StoreError::Unavailable(e.to_string()),
    }
}

/// The imported BIN table on one MongoDB database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct MongoBinTableStore {
    versions: Collection<VersionDoc>,
    chunks: Collection<ChunkDoc>,
    op_timeout: Duration,
}

impl MongoBinTableStore {
    /// The store on `db`; `op_timeout` bounds each round trip (a table of
    /// many chunks takes several).
    pub fn new(db: &Database, op_timeout: Duration) -> MongoBinTableStore {
        MongoBinTableStore {
            versions: db.collection(collections::BIN_TABLE_VERSIONS),
            chunks: db.collection(collections::BIN_TABLE_CHUNKS),
            op_timeout,
        }
    }

    /// A store with a client of its own (2 s server selection and connect
    /// timeouts). Does not contact the server.
    pub async fn connect(
        uri: &str,
        database: &str,
        op_timeout: Duration,
    ) -> Result<MongoBinTableStore, StoreError> {
        let mut options = tokio::time::timeout(op_timeout, ClientOptions::parse(uri))
            .await
            .map_err(|_| StoreError::Unavailable("resolving the MongoDB URI timed out".into()))?
            .map_err(map_err)?;
        options.server_selection_timeout = Some(Duration::from_secs(2));
        options.connect_timeout = Some(Duration::from_secs(2));
        if options.app_name.is_none() {
            options.app_name = Some("cardbind-bins".into());
        }
        let client = Client::with_options(options).map_err(map_err)?;
        Ok(MongoBinTableStore::new(
            &client.database(database),
            op_timeout,
        ))
    }

    /// Creates the indexes this store uses (idempotent; one `createIndexes`
    /// per index, as FerretDB 1.24 needs).
    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        let idx = |keys, name: &str| {
            let mut o = IndexOptions::default();
            o.name = Some(name.to_owned());
            IndexModel::builder().keys(keys).options(o).build()
        };
        self.timed(
            self.versions
                .create_index(idx(doc! { "n": -1 }, "n_desc"))
                .comment(ENSURE_INDEXES),
        )
        .await?;
        self.timed(
            self.chunks
                .create_index(idx(doc! { "version": 1, "i": 1 }, "version_i"))
                .comment(ENSURE_INDEXES),
        )
        .await?;
        self.timed(
            self.chunks
                .create_index(idx(doc! { "written_at": 1 }, "written_at"))
                .comment(ENSURE_INDEXES),
        )
        .await?;
        Ok(())
    }

    /// Chunks older than this that no recent version names are deleted:
    /// far beyond any import or read (1 hour, or 10 × the operation
    /// timeout if longer).
    pub fn gc_margin(&self) -> Duration {
        std::cmp::max(
            Duration::from_secs(3600),
            self.op_timeout.saturating_mul(10),
        )
    }

    async fn timed<T>(
        &self,
        f: impl IntoFuture<Output = Result<T, mongodb::error::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.op_timeout, f.into_future()).await {
            Ok(r) => r.map_err(map_err),
            Err(_) => Err(StoreError::Unavailable(format!(
                "no answer from the database within {} ms",
                self.op_timeout.as_millis()
            ))),
        }
    }

    async fn head(&self) -> Result<Option<VersionDoc>, StoreError> {
        self.timed(
            self.versions
                .find_one(doc! {})
                .sort(doc! { "n": -1 })
                .comment(BIN_TABLE_HEAD)
                .max_time(self.op_timeout),
        )
        .await
    }

    fn version_of(d: &VersionDoc) -> BinTableVersion {
        BinTableVersion {
            id: d.version.clone(),
            imported_at: Timestamp::from_unix_millis(d.imported_at_ms),
            entries: u64::try_from(d.entries).unwrap_or(0),
        }
    }

    /// The rows of version `head`, or `None` when a chunk is missing (the
    /// version was tidied away while being read).
    async fn read_chunks(&self, head: &VersionDoc) -> Result<Option<Vec<BinEntry>>, StoreError> {
        let mut entries = Vec::with_capacity(usize::try_from(head.entries).unwrap_or(0));
        for i in 0..head.chunks {
            let id = chunk_id(&head.version, i);
            let Some(chunk) = self
                .timed(
                    self.chunks
                        .find_one(doc! { "_id": &id })
                        .comment(BIN_TABLE_CHUNK)
                        .max_time(self.op_timeout),
                )
                .await?
            else {
                return Ok(None);
            };
            if chunk.version != head.version || chunk.i != i {
                return Err(StoreError::Corrupt(format!(
                    "BIN table chunk {id} names another version or position"
                )));
            }
            for r in &chunk.rows {
                entries.push(entry(r)?);
            }
        }
        if i64::try_from(entries.len()).ok() != Some(head.entries) {
            return Err(StoreError::Corrupt(format!(
                "BIN table version {} has {} rows, its pointer says {}",
                head.version,
                entries.len(),
                head.entries
            )));
        }
        Ok(Some(entries))
    }

    /// Deletes the chunks of versions that no reader can need any more.
    async fn tidy(&self, from_n: i64, ours: &str) -> Result<u64, StoreError> {
        use futures::TryStreamExt;
        let recent: Vec<VersionDoc> = self
            .timed(async {
                self.versions
                    .find(doc! { "n": { "$gte": from_n } })
                    .comment(BIN_TABLE_RECENT)
                    .max_time(self.op_timeout)
                    .await?
                    .try_collect()
                    .await
            })
            .await?;
        let mut keep: Vec<String> = recent.into_iter().map(|d| d.version).collect();
        keep.push(ours.to_owned());
        let margin = i64::try_from(self.gc_margin().as_millis()).unwrap_or(i64::MAX);
        let cutoff = DateTime::from_millis(wall_now().timestamp_millis().saturating_sub(margin));
        let r = self
            .timed(
                self.chunks
                    .delete_many(doc! {
                        "version": { "$nin": keep },
                        "written_at": { "$lt": cutoff },
                    })
                    .comment(BIN_TABLE_TIDY),
            )
            .await?;
        Ok(r.deleted_count)
    }
}

#[async_trait]
impl BinTableStore for MongoBinTableStore {
    async fn active_version(&self) -> Result<Option<BinTableVersion>, StoreError> {
        Ok(self.head().await?.as_ref().map(Self::version_of))
    }

    async fn load(&self) -> Result<Option<StoredBinTable>, StoreError> {
        for _ in 0..3 {
            let Some(head) = self.head().await? else {
                return Ok(None);
            };
            let Some(entries) = self.read_chunks(&head).await? else {
                continue;
            };
            let table = BinTable::new(entries)
                .map_err(|e| StoreError::Corrupt(format!("the stored BIN table: {e}")))?;
            return Ok(Some(StoredBinTable {
                version: Self::version_of(&head),
                table,
            }));
        }
        Err(StoreError::Corrupt(
            "the active BIN table has missing chunks".into(),
        ))
    }

    async fn replace(
        &self,
        table: &BinTable,
        imported_at: Timestamp,
    ) -> Result<BinTableVersion, StoreError> {
        let started = Instant::now();
        let version = ObjectId::new().to_hex();
        let rows: Vec<RowDoc> = table.entries().iter().map(row).collect();
        let docs: Vec<ChunkDoc> = rows
            .chunks(CHUNK_ROWS)
            .enumerate()
            .map(|(i, rows)| {
                let i = i64::try_from(i).unwrap_or(i64::MAX);
                ChunkDoc {
                    id: chunk_id(&version, i),
                    version: version.clone(),
                    i,
                    written_at: wall_now(),
                    rows: rows.to_vec(),
                }
            })
            .collect();
        for batch in docs.chunks(CHUNKS_PER_INSERT) {
            self.timed(
                self.chunks
                    .insert_many(batch)
                    .comment(BIN_TABLE_WRITE_CHUNKS),
            )
            .await?;
        }
        if started.elapsed() > self.gc_margin() / 2 {
            return Err(StoreError::Unavailable(
                "writing the BIN table took too long to commit safely; run the import again".into(),
            ));
        }
        let chunks = i64::try_from(docs.len()).unwrap_or(i64::MAX);
        let entries = i64::try_from(table.len()).unwrap_or(i64::MAX);
        // Commit: the next pointer position. A lost race means another
        // import committed; go above it.
        for _ in 0..20 {
            let prev = self.head().await?;
            let n = prev.as_ref().map_or(1, |d| d.n + 1);
            let pointer = VersionDoc {
                id: format!("{n:020}"),
                n,
                version: version.clone(),
                chunks,
                entries,
                imported_at_ms: imported_at.unix_millis(),
                written_at: wall_now(),
            };
            match self
                .timed(self.versions.insert_one(&pointer).comment(BIN_TABLE_COMMIT))
                .await
            {
                Ok(_) => {
                    if let Err(e) = self.tidy(n - 1, &version).await {
                        tracing::warn!(error = %e, "tidying old BIN table versions failed");
                    }
                    return Ok(Self::version_of(&pointer));
                }
                Err(StoreError::Duplicate) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Unavailable(
            "could not commit the BIN table: too many concurrent imports".into(),
        ))
    }
}
