//! # cardbind-sqlite
//!
//! Every storage port of `cardbind-ports` and the [`AuditLog`] on one
//! embedded SQLite file, as one [`SqliteStore`]: the default storage of
//! `cardbind serve`, which keeps its data across restarts with nothing
//! installed (SQLite 3.54 is compiled in: `rusqlite` with `bundled`).
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
//! * Keep card data other than as given: sealed fields are opaque bytes
//!   (`tests/file.rs` scans every file of a store for the test card's
//!   number, phone, resident id and name).
//! * Scan a table or sort on a request path: every statement is a search
//!   of an index (`src/plans.rs` checks each one's plan, and every shape of
//!   an audit listing), so a call costs what it returns, not what is stored.
//! * Hold records in memory that grow with the data: the only caches are
//!   SQLite's page caches, bounded ([`SqliteOptions::cache_mib`]), and
//!   memory-mapped I/O stays off (mapped pages would count as the
//!   process's memory and grow with the file).
//!
//! ## Threads: one writer that commits in groups, readers on the caller
//! SQLite lets one connection write at a time, and a commit costs the same
//! for one row as for a hundred (the pages are appended to the WAL, with a
//! checksum each, and the WAL index updated). So:
//! * **One writer thread** owns the only writing connection. A write is a
//!   closure sent to it over a bounded channel
//!   ([`SqliteOptions::queue_capacity`]); the thread takes every write
//!   waiting (up to [`SqliteOptions::max_batch`]), runs them in **one
//!   transaction**, each in a savepoint of its own (a write that fails is
//!   undone alone; when SQLite itself rolls the whole transaction back, as
//!   it does on a full file or disk, every write of the group fails with
//!   that reason), commits, and only then answers each caller (a caller
//!   never sees a write that could still be rolled back). Under load the
//!   groups grow by themselves (41–47 writes per group with 64 binds in
//!   flight, measured below); alone, a write is its own group. Every
//!   check-then-insert of the contracts (the chain head, an idempotency
//!   attempt, a rate slot, a data key's version) runs inside that one
//!   thread, so it is atomic without retries, and the file's own locks keep
//!   it atomic across processes too.
//!   [`SqliteStore::register_metrics`] exports the writer's counters
//!   (`cardbind_sqlite_writer_transactions_total`, `…_writes_total`,
//!   `…_busy_seconds_total`): how many writes share a commit, and the share
//!   of the time the writer is at work (near 1, writes queue on it); and
//!   the histogram `…_transaction_seconds` of each transaction's time,
//!   whose buckets above 0.05 s count the writer's stops at the WAL's
//!   start-overs (below); and the database's size, its free pages and
//!   its bound (`cardbind_sqlite_database_bytes`, `…_free_bytes`,
//!   `…_max_bytes`), read by the checkpointer once a second.
//! * **Reads run on the caller's thread**, on a small pool of read-only
//!   connections ([`SqliteOptions::readers`]). A read is one or two index
//!   searches (about 10 µs of CPU measured, the JSON of the wallet
//!   included); a hand-off to another thread costs more than that
//!   (`tokio::task::spawn_blocking` round trip, measured by the bench) and
//!   would put reads behind writes. The price: a read that misses the OS's
//!   file cache blocks a runtime worker for a disk read.
//! * **A checkpointer thread** copies the WAL into the database file every
//!   [`SqliteOptions::checkpoint_interval`], off the writer's path. Past
//!   [`SqliteOptions::wal_restart_pages`] the writer copies what is left
//!   itself and the WAL starts over (a steady stream of writes never leaves
//!   the checkpointer a moment to). That copy flushes the WAL and the file,
//!   so the writer stands still for it (70–140 ms measured at 3,000 binds/s,
//!   120–175 ms with random user ids, whose pages are scattered over the
//!   file): the checkpointer runs often (every 50 ms, so little is left to
//!   flush) and the WAL is let grow to 1 GiB before it starts over. With
//!   256 MiB, the size until 7 December, a start-over came about once a
//!   second under load: with random user ids about one commit a second
//!   took 120–175 ms (timed around the writer's `COMMIT`: a third of it on
//!   the CPU, the rest waiting for the disk), enough of them for the p99
//!   of a bind to grow from 68 to 359 ms over a million bindings; with
//!   1 GiB they come a quarter as often and the p99 stayed at 24–58 ms
//!   (the README has the runs). The size is `storage.wal_mib` where disk
//!   is short.
//!
//! Why not an async wrapper crate: `tokio-rusqlite` runs every call, reads
//! included, on one connection's thread (reads wait behind writes, one
//! transaction per write); `deadpool-sqlite`/`r2d2_sqlite` pools run each
//! call in `spawn_blocking` with its own transaction, so concurrent writers
//! contend for SQLite's lock (`SQLITE_BUSY`, sleeps) instead of sharing a
//! commit; `sqlx`'s SQLite driver also commits per statement, on a worker
//! thread per connection. None groups commits, which is what bounds
//! throughput here; the 300 lines of `engine.rs` do.
//!
//! Statements are prepared once per connection and cached. Every connection
//! sets SQLite's "query planner stability guarantee": without it SQLite
//! marks statements with `LIMIT ?` or `x = ?` to be prepared again whenever
//! a parameter changes, and the statement cache clears parameters after
//! every use, so each call would parse its SQL again (measured: it halved
//! the cost of a read). `RETURNING` is not used on request paths (SQLite
//! runs it through a temporary table, dearer than a second statement).
//!
//! ## Durability
//! WAL mode. [`Durability::Normal`] (the default, `synchronous = NORMAL`):
//! a commit is written to the WAL (the OS has it) but not flushed; the WAL
//! is flushed to the disk at every checkpoint. So a crash of the process
//! (kill -9, panic, OOM kill) loses nothing that was acknowledged —
//! `tests/file.rs` kills a writing process and finds every write — while a
//! power loss or OS crash can lose the commits of the last checkpoint
//! interval (50 ms by default) and never the file's consistency: WAL
//! frames are checksummed and a torn tail is ignored, so the file opens at
//! an earlier commit, every chain intact up to it. For cardbind that means
//! a bind reserved at the channel in that window may be missing here (the
//! channel's notification then names a reference we do not know; the
//! channel's reconciliation report shows it). [`Durability::Full`]
//! flushes the WAL at every group commit: one `fsync` per group, shared by
//! its writes, so concurrent binds still share the cost.
//!
//! ## Schema and growth
//! The schema is versioned (`PRAGMA user_version`, steps in `schema.rs`),
//! created or upgraded at open in one write transaction; a file of a newer
//! version, or one that is not a cardbind database (`PRAGMA
//! application_id`), is refused ([`OpenError`]).
//!
//! What keeps a call's cost flat as data grows:
//! * Small records are `WITHOUT ROWID` tables keyed by what they are found
//!   by (one B-tree each, no second index to update): card data by
//!   (binding, generation), channel references, data keys, seen ids, the
//!   review queue.
//! * Records of hundreds of bytes or more found by a random key are
//!   appended in rowid order and found through a small index entry:
//!   links, which hold a whole wallet (about 0.8 KB of JSON per card),
//!   through (chain, seq); idempotency attempts, which hold the answer a
//!   replay gets (a row of about 420 bytes), through (scope, key,
//!   attempt). A bind's random-key writes there are index entries of
//!   50–80 bytes, many to a page. Only a chain's newest link keeps the
//!   wallet: a commit drops its predecessor's copy in the same
//!   transaction. (Until schema 7 the idempotency attempts were kept in
//!   place by their key: each bind rewrote a random page of them, which
//!   cost 9–15 % of the binds/s and most p99 spikes of a million-bind
//!   run; see the README.)
//! * Keys that grow with time lead the indexes retention walks (`at`,
//!   `created_at`, `expires_at`), so inserts land on the right edge of the
//!   tree and purges delete from its left edge. Rate windows are keyed by
//!   (`expires_at`, key): the windows in force are one narrow range,
//!   whatever else the table still holds. Binding ids are time-ordered
//!   (UUID v7), so card data and the audit index by card are appends too.
//! * What stays random is inherent: a wallet by its user, an idempotency
//!   key's index entry, an agreement reference. Each costs one leaf page
//!   per write, read from the OS's file cache when SQLite's is too small;
//!   at a million users those trees are about 10–60 MB each.
//!
//! ## Retention and space
//! The ports' purge methods delete in steps of a few thousand rows (each
//! step one writer job, so requests are not held up); `purge_before` finds
//! what to delete on a reader and sends only the deletions to the writer.
//! The pages a purge frees stay in the file, on its free list, and the
//! next writes take them: the file grows to the most the data ever
//! needed (with retention, about what `audit.retention_days` of audit
//! events and `idempotency.retention_hours` of idempotency records take
//! beside the cards) and does not shrink (`cardbind_sqlite_free_bytes`
//! says how much of it is free; see the `metrics` module). To give space
//! back, stop the service and `VACUUM` the file offline (`docs/operations.md`,
//! "Upgrading"); a `VACUUM` rewrites the whole file and would block
//! writes while it runs.
//!
//! Files are created with `auto_vacuum = NONE`. Until 7 December 2026
//! they were created `INCREMENTAL`, and the writer ran `PRAGMA
//! incremental_vacuum` after each purge step (stepped to its end, at most
//! 4,096 pages a step) to give the freed pages back at once; it still
//! does on such files (on the others the statement does nothing). That
//! mode keeps a pointer map: a page of parent pointers for every 819
//! pages, rewritten whenever a B-tree page is added or its cells move to
//! another page. With user ids that land at random (UUID v4), pages split
//! all over the file, and pointer-map pages were 8.6 % of the WAL's
//! frames 40 s into such a run (a count of the frames by page, 7 December
//! 2026). Two alternated pairs of runs of 1,000,000 binds with random
//! user ids (`loadgen --random-users`, 32 in flight, 30 s windows, 7
//! December 2026): without the pointer map, medians of 2,279 and 2,567
//! binds/s, every window within 11 % and 17 % of them; with it, 2,283 and
//! 2,273, an early window 36 % and 26 % above them. A third pair on a
//! slower machine (8 December 2026) went the other way: without, 1,669
//! and an early window 32 % above; with, 1,725 and 20 %. The medians are
//! level and the flatness is within the runs' noise (the README has the
//! runs); files stay `NONE` for the WAL frames they do not write. Deleted
//! rows are
//! overwritten with zeros (`secure_delete`), and deleting a data key also
//! truncates the WAL: the writer checkpoints and truncates between groups,
//! and when a reader on an older snapshot holds that up (SQLite reports
//! it in the checkpoint's row, not as an error) the checkpointer tries
//! again until it is done, so no copy of an erased key stays in the files
//! (tested, with and without a reader in the way).
//!
//! ## Measured
//! `CARDBIND_BENCH_DIR=/dev/shm/cardbind-bench cargo bench -p
//! cardbind-sqlite --bench ports` (`benches/ports.rs`): stores seeded with
//! 1k, 100k and 1M users, each with what one bind leaves (two links, card
//! data, a data key, a channel reference, an idempotency record, three rate
//! windows; 4.7 KB a user, 4.7 GB at a million). CPU time of the whole
//! process (caller, writer and checkpointer threads) per call, median of 3
//! rounds, on a 2-core VM shared with other builds (load average 8–20, so
//! absolute figures are inflated about threefold: SQLite's own inserts
//! measured 3x their usual cost there); the database on tmpfs, 2 runtime
//! workers. `bind` is the storage calls of one bind (claim, 3 rate windows,
//! load, 2 commits, card data, data key, channel reference, complete), 64
//! binds in flight.
//!
//! | users | load | commit | claim | bind | writes per group | binds/s |
//! |---:|---:|---:|---:|---:|---:|---:|
//! | 1k | 11.6 µs | 168 µs | 60 µs | 468 µs | 40–45 | 900 |
//! | 100k | 14.1 µs | 201 µs | 73 µs | 499 µs | 40–48 | 925 |
//! | 1M | 15.5 µs | 156 µs | 42 µs | 442 µs | 41–48 | 1195 |
//!
//! The same command on an idle machine (2 December 2026, no other build
//! running; sizes 1k and 100k, `CARDBIND_BENCH_SIZES=1000,100000`), median
//! of 3 rounds:
//!
//! | users | load | commit | claim | bind | of which writer | writes per group | binds/s |
//! |---:|---:|---:|---:|---:|---:|---:|---:|
//! | 1k | 10.9 µs | 176 µs | 78 µs | 352 µs | 265 µs | 31.6 | 3,670 |
//! | 100k | 12.8 µs | 203 µs | 87 µs | 367 µs | 275 µs | 31.6 | 3,566 |
//!
//! So with 64 binds in flight the storage calls alone are bound by the
//! writer thread (265–275 µs of its time per bind: at most about 3,700
//! binds/s), about what the whole service binds through HTTP with the
//! same store (3,900–4,400 binds/s at 64 in flight, where the writer's
//! groups are bigger: 41–47 writes, above). A SQLite page size of 1, 2 or 8 KiB instead
//! of 4 (fewer bytes per WAL frame, deeper trees) gained nothing there:
//! 3,488–4,079, 3,579–4,500 and 4,164–4,300 binds/s against 3,854–4,384
//! for 4 KiB, alternated in one sitting (60k binds, 64 in flight).
//!
//! A bind's storage cost is flat from 1k to 1M users (±7%); a load grows by
//! 4 µs (its leaf pages come from the OS's file cache instead of SQLite's).
//! A single commit or claim pays a whole transaction (140–200 µs of CPU
//! here); in a group of 40 writes a bind's nine writes cost about what
//! two lone commits do. The hand-off itself is cheap: a write that changes
//! nothing costs 13 µs alone (thread wake-ups and an empty transaction)
//! and 3 µs in a group; what a bind pays for is the B-tree pages its
//! writes dirty (each written to the WAL, then copied into the file). Where the CPU goes (perf, 1k users): writing WAL
//! frames ~28% (two `pwrite`s and a checksum per 4 KiB page), checkpoints
//! ~15%, B-tree work, allocation and thread wake-ups the rest. The
//! process's peak resident memory over the whole run, seeding a million
//! users included, was 150 MB. A `spawn_blocking` round trip (what reading
//! on a blocking thread would add) measured 28 µs of wall time there,
//! twice the read itself.
//!
//! One cost is SQLite's own and shows only below 1 GiB. When a B-tree
//! balance puts its new pages in ascending order, SQLite renumbers a page
//! by way of the lock-byte page's number (262,145 with 4 KiB pages), which
//! raises the page cache's highest key; at the commit, cutting the cache
//! back to the file's size then walks the whole hash table of the writer's
//! cache rather than a few slots. So while the file is under 1 GiB every
//! group commit that split a page visits every cached page. With counter
//! keys and 128 binds in flight that was 10 % of the writer thread's CPU
//! and the cache's size did not move binds/s (2 December 2026); with keys
//! that land at random (clients' idempotency keys, card fingerprints, user
//! ids as UUIDs) nearly every group splits a page, and it was 17 % of the
//! writer's CPU with a 16 MiB cache (7 December 2026, `perf`, uprobes
//! showing the highest key at 262,145 at each commit that walked it). So
//! the writer holds at most 4 MiB of [`SqliteOptions::cache_mib`] while the
//! file is smaller than the lock-byte page, and the configured size while
//! it is at or past it (checked at each commit, back to 4 MiB if the file
//! shrinks below; `engine.rs`): the walk fell to 3.8 % of the writer's CPU,
//! and four alternated rounds of 100,000 binds with random user ids
//! (`loadgen --random-users`, 32 in flight; not measured at other loads)
//! gave medians of 1,538, 1,466, 1,611 and 2,161 binds/s against 1,367,
//! 1,452, 1,212 and 1,290 without it (the machine's floor moving between
//! 24,843 and 40,856 requests/s meanwhile; as shares of each run's floor,
//! 0.052 against 0.043). With sequential user ids (fewer splits) a 4 MiB
//! and a 16 MiB cache, set by `storage.cache_mib`, were level (medians
//! 2,724 and 2,785 binds/s over 200,000 binds). A file that size is in the
//! OS's file cache whole, so the pages the smaller cache misses cost a read
//! from it, not the disk.

mod bins;
mod card_data;
mod chain;
mod engine;
mod error;
mod idempotency;
mod metrics;
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
    /// Opened read-only, the file is of an older schema (which only a
    /// read-write open upgrades).
    #[error("database schema version {found} is older than this build's ({known}): it is upgraded when the service (or an admin command that writes) opens it with this build; read it as it is with the build that wrote it")]
    OlderSchema { found: i64, known: i64 },
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

impl WriterStats {
    fn of(c: &engine::Counters) -> WriterStats {
        WriterStats {
            groups: c.groups.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            busy: Duration::from_nanos(c.busy_ns.load(Ordering::Relaxed)),
        }
    }
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

    /// Opens the existing database at `path` for reading only, as it is
    /// (for checks of a copy or a running service's file): nothing is
    /// created, upgraded, checkpointed or written, and every write is
    /// refused as `Unavailable`. Refused unless the file is of this
    /// build's schema. A file in a directory SQLite may not add its WAL
    /// files to (a read-only copy) opens when it has no WAL file.
    pub fn open_read_only(
        path: impl AsRef<Path>,
        options: SqliteOptions,
    ) -> Result<SqliteStore, OpenError> {
        Ok(SqliteStore {
            engine: Engine::open_read_only(path.as_ref(), options)?,
        })
    }

    /// What the writer has done since the store was opened.
    pub fn writer_stats(&self) -> WriterStats {
        WriterStats::of(&self.engine.counters)
    }

    /// Registers the writer's metrics into `registry`, read from the
    /// writer at each collection: `cardbind_sqlite_writer_transactions_total`,
    /// `cardbind_sqlite_writer_writes_total`,
    /// `cardbind_sqlite_writer_busy_seconds_total` (see [`WriterStats`]),
    /// the histogram `cardbind_sqlite_writer_transaction_seconds`, and the
    /// database's size: `cardbind_sqlite_database_bytes`,
    /// `cardbind_sqlite_free_bytes` and, when `max_size_mib` bounds it,
    /// `cardbind_sqlite_max_bytes`. Fails if they are registered there
    /// already.
    pub fn register_metrics(
        &self,
        registry: &prometheus::Registry,
    ) -> Result<(), prometheus::Error> {
        metrics::register(self.engine.counters.clone(), registry)
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
