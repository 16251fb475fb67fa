//! # cardbind-sqlite
//!
//! Every storage port of `cardbind-ports` and the [`AuditLog`] on one
//! embedded SQLite file, as one [`SqliteStore`]: the default storage of
//! `cardbind serve`, which keeps its data across restarts with nothing
//! installed (SQLite is compiled in, `rusqlite` with `bundled`).
//!
//! ```ignore
//! let store = SqliteStore::open(".data/cardbind.sqlite3", SqliteOptions::default())?;
//! let ports = store.ports();          // every port as Arc<dyn …>
//! // background job: the ports' purge methods (retention)
//! ```
//!
//! [`AuditLog`]: cardbind_ports::audit::AuditLog
//!
//! ## What this crate must never do
//! * Let a SQLite type out: rows are read into the shared storage records
//!   (`cardbind-records`) and parsed into domain values; a row that does
//!   not parse is `StoreError::Corrupt`, never a panic.
//! * Keep card data other than as given: sealed fields are opaque bytes.
//! * Scan a table on a request path: every statement a port runs is a
//!   search of an index (`tests/plans.rs` checks each plan), so its cost
//!   depends on the size of what it returns, not of what is stored.
//! * Hold records in memory that grow with the data: the only caches are
//!   SQLite's page caches, bounded by [`SqliteOptions::cache_mib`].

mod card_data;
mod chain;
mod engine;
mod error;
mod idempotency;
mod options;
#[cfg(test)]
mod plans;
mod rows;
mod schema;
mod small;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use cardbind_ports::audit::AuditLog;
use cardbind_ports::store::{
    CardDataStore, ChannelRefs, DataKeyStore, IdempotencyStore, RateLimiter, ReviewQueue, SeenIds,
    WalletStore,
};
use cardbind_ports::StoreError;

pub use options::{Durability, SqliteOptions};
pub use schema::{APPLICATION_ID, SCHEMA_VERSION};

use engine::Engine;

/// Why a store did not open.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The directory for the file could not be made.
    #[error("cannot create {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    /// The file is a database of something else.
    #[error("not a cardbind database")]
    NotCardbind,
    /// The file was written by a newer cardbind.
    #[error("database schema version {found} is newer than this build knows ({known}); run a newer cardbind")]
    NewerSchema { found: i64, known: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Every storage port on one SQLite file. Cheap to clone (a handle); the
/// file is closed (checkpointed, its WAL emptied) when the last handle and
/// the last port made from it are dropped.
#[derive(Clone)]
pub struct SqliteStore {
    engine: Arc<Engine>,
}

/// Counters of the writer thread (for metrics): `writes / groups` is the
/// mean number of writes that shared one transaction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Transactions committed (or failed).
    pub groups: u64,
    /// Writes run in them.
    pub writes: u64,
    /// Time spent running them.
    pub busy: Duration,
}

/// Every port of one store, as the composition root hands them out.
#[derive(Clone)]
pub struct SqlitePorts {
    pub wallets: Arc<dyn WalletStore>,
    pub card_data: Arc<dyn CardDataStore>,
    pub channel_refs: Arc<dyn ChannelRefs>,
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub rates: Arc<dyn RateLimiter>,
    pub seen: Arc<dyn SeenIds>,
    pub data_keys: Arc<dyn DataKeyStore>,
    pub review: Arc<dyn ReviewQueue>,
    pub audit: Arc<dyn AuditLog>,
}

impl SqliteStore {
    /// Opens (creating it, and its directory, if needed) the database at
    /// `path`, bringing its schema to [`SCHEMA_VERSION`].
    pub fn open(path: impl AsRef<Path>, options: SqliteOptions) -> Result<SqliteStore, OpenError> {
        Ok(SqliteStore {
            engine: Engine::open(path.as_ref(), options)?,
        })
    }

    /// What the writer has done since the store was opened.
    pub fn writer_stats(&self) -> WriterStats {
        let c = &self.engine.counters;
        WriterStats {
            groups: c.groups.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            busy: Duration::from_nanos(c.busy_ns.load(Ordering::Relaxed)),
        }
    }

    /// Every port, sharing this store's connections.
    pub fn ports(&self) -> SqlitePorts {
        let s = Arc::new(self.clone());
        SqlitePorts {
            wallets: s.clone(),
            card_data: s.clone(),
            channel_refs: s.clone(),
            idempotency: s.clone(),
            rates: s.clone(),
            seen: s.clone(),
            data_keys: s.clone(),
            review: s.clone(),
            audit: s,
        }
    }
}
