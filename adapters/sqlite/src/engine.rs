//! The connections behind a store: one writer thread that commits queued
//! writes in groups, a pool of reader connections used on the caller's
//! thread, and a checkpointer thread. See the crate docs for why.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cardbind_ports::StoreError;
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

use crate::error::{db_err, unavailable};
use crate::options::{Durability, SqliteOptions};
use crate::schema;
use crate::OpenError;

/// What a write job may ask of the writer once its group is committed.
#[derive(Default)]
pub(crate) struct AfterCommit {
    /// Truncate the WAL soon (key material was deleted: no old copy of its
    /// page should stay in the log).
    pub truncate_wal: bool,
    /// Return free pages to the file system (a purge freed many; in a
    /// file made `INCREMENTAL` only: see [`incremental_vacuum`]).
    pub vacuum: bool,
}

/// The writer's view of one job's turn: the connection, inside the group's
/// transaction and the job's own savepoint.
pub(crate) struct Tx<'a> {
    pub conn: &'a Connection,
    pub after: &'a mut AfterCommit,
}

trait Job: Send {
    /// Runs the job's statements; why, when it failed (its savepoint is
    /// rolled back, the rest of the group is unaffected, unless SQLite
    /// rolled the whole transaction back: see `run_group`).
    fn run(&mut self, tx: &mut Tx<'_>) -> Result<(), StoreError>;
    /// Answers the caller once the group's fate is known.
    fn finish(self: Box<Self>, committed: Result<(), StoreError>);
}

struct Task<T, F> {
    work: Option<F>,
    out: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for Task<T, F>
where
    T: Send,
    F: FnOnce(&mut Tx<'_>) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, tx: &mut Tx<'_>) -> Result<(), StoreError> {
        let out = match self.work.take() {
            Some(work) => work(tx),
            None => Err(unavailable("write job ran twice")),
        };
        let failed = out.as_ref().err().cloned();
        self.out = Some(out);
        failed.map_or(Ok(()), Err)
    }

    fn finish(self: Box<Self>, committed: Result<(), StoreError>) {
        let answer = match committed {
            Ok(()) => self
                .out
                .unwrap_or_else(|| Err(unavailable("write job never ran"))),
            Err(e) => Err(e),
        };
        // The caller may have gone away (its request was cancelled).
        let _ = self.reply.send(answer);
    }
}

enum Ctl {
    /// Checkpoint now and truncate the WAL file.
    Truncate,
}

/// Opens connections with the store's settings.
#[derive(Clone)]
struct Opener {
    path: PathBuf,
    options: SqliteOptions,
    access: Access,
}

/// How the store's connections open its file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    /// The service's: a writer, readers and a checkpointer.
    ReadWrite,
    /// Readers only, opened read-only (SQLite may add an empty WAL and its
    /// index beside the file, as any reader of a WAL database does).
    ReadOnly,
    /// Readers only, of a file SQLite may not add anything beside (a
    /// read-only directory or medium) and that has no WAL: read as it
    /// is, without locks (`immutable=1`).
    Immutable,
}

impl Opener {
    fn open(&self, role: Role) -> Result<Connection, StoreError> {
        let conn = self.connect(role).map_err(db_err)?;
        configure(&conn, role, &self.options)?;
        Ok(conn)
    }

    /// A connection to the file as `access` says, not yet configured.
    fn connect(&self, role: Role) -> rusqlite::Result<Connection> {
        let mut flags = OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        match self.access {
            Access::ReadWrite => {
                flags |= OpenFlags::SQLITE_OPEN_READ_WRITE;
                if role == Role::Writer {
                    flags |= OpenFlags::SQLITE_OPEN_CREATE;
                }
                Connection::open_with_flags(&self.path, flags)
            }
            Access::ReadOnly => {
                Connection::open_with_flags(&self.path, flags | OpenFlags::SQLITE_OPEN_READ_ONLY)
            }
            Access::Immutable => Connection::open_with_flags(
                immutable_uri(&self.path),
                flags | OpenFlags::SQLITE_OPEN_READ_ONLY,
            ),
        }
    }
}

/// The WAL file of the database at `path`.
fn wal_of(path: &Path) -> PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

/// `path` as an SQLite URI that opens it immutable (bytes other than
/// unreserved ones and `/` percent-encoded, as URIs want them; one leading
/// `/`, as `//` would start an authority).
fn immutable_uri(path: &Path) -> String {
    let full = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let bytes = full.as_os_str().as_encoded_bytes();
    let extra = bytes
        .iter()
        .take_while(|b| **b == b'/')
        .count()
        .saturating_sub(1);
    let mut uri = String::from("file:");
    for b in &bytes[extra..] {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(b) {
            uri.push(char::from(*b));
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push_str("?immutable=1");
    uri
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Writer,
    Reader,
    Checkpointer,
}

fn configure(conn: &Connection, role: Role, o: &SqliteOptions) -> Result<(), StoreError> {
    // A TRUNCATE checkpoint holds the write lock while it waits for the
    // readers of an old snapshot, for as long as its busy timeout lets it:
    // the checkpointer waits briefly each try (and tries again at its next
    // turn), so that the writer is never kept out for long.
    let busy = match role {
        Role::Checkpointer => TRUNCATE_WAIT.min(o.busy_timeout),
        Role::Writer | Role::Reader => o.busy_timeout,
    };
    conn.busy_timeout(busy).map_err(db_err)?;
    // Plans never depend on bound values (they are checked by a test).
    // Without this, SQLite marks statements with `LIMIT ?` or `x = ?` for
    // re-preparation on every new binding, and the statement cache clears
    // bindings on every use: each call would parse its SQL again.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(db_err)?;
    conn.set_prepared_statement_cache_capacity(64);
    let cache_kib = match role {
        Role::Writer => o.writer_cache_kib(),
        Role::Reader => o.reader_cache_kib(),
        Role::Checkpointer => 256,
    };
    let sync = match o.durability {
        Durability::Normal => "NORMAL",
        Durability::Full => "FULL",
    };
    // mmap stays off: mapped pages would count in the process's resident
    // memory and grow with the file.
    conn.execute_batch(&format!(
        "PRAGMA cache_size = -{cache_kib};
         PRAGMA synchronous = {sync};
         PRAGMA temp_store = MEMORY;
         PRAGMA mmap_size = 0;
         PRAGMA foreign_keys = OFF;"
    ))
    .map_err(db_err)?;
    match role {
        // Deleted rows are overwritten with zeros (wrapped keys, sealed
        // card data). The checkpointer copies the WAL into the file in the
        // background; the WAL starts over from its beginning only when it
        // was copied whole while no write was under way, a moment a steady
        // stream of writes never leaves, so past a size the writer (the
        // only one) checkpoints itself: it copies the little the
        // checkpointer has not, and its next transaction starts the WAL
        // over. `journal_size_limit` then gives back the file's excess.
        Role::Writer => {
            conn.execute_batch(&format!(
                "PRAGMA secure_delete = ON;
                 PRAGMA wal_autocheckpoint = {pages};
                 PRAGMA journal_size_limit = {bytes};",
                pages = o.wal_restart_pages,
                bytes = u64::from(o.wal_restart_pages) * 4096,
            ))
            .map_err(db_err)?;
            size_bound(conn, o.max_size_mib)?;
        }
        Role::Reader => conn
            .execute_batch("PRAGMA query_only = ON;")
            .map_err(db_err)?,
        Role::Checkpointer => {}
    }
    Ok(())
}

/// Counters of the writer, for metrics and benchmarks.
pub(crate) struct Counters {
    pub groups: AtomicU64,
    pub writes: AtomicU64,
    /// Time the writer spent running groups (statements and commits), ns.
    pub busy_ns: AtomicU64,
    /// How long each group took, as a histogram: its buckets above 0.05 s
    /// count the commits at which the WAL started over (the writer copies
    /// what the checkpointer had not, 70–175 ms measured; see the crate
    /// docs). `None` only if the histogram's fixed options
    /// were refused, which they are not (its test).
    pub group_seconds: Option<prometheus::Histogram>,
    /// The database's size in bytes (its pages, free ones included), as
    /// the checkpointer last read it (at most once a second, see
    /// [`SIZE_READ_EVERY`]); 0 until read.
    pub database_bytes: AtomicU64,
    /// Bytes of free pages in it (freed by deletions, taken by later
    /// writes), read with [`Counters::database_bytes`].
    pub free_bytes: AtomicU64,
    /// The most the database may take (`max_size_mib`), bytes; 0: no bound.
    pub max_bytes: AtomicU64,
}

/// The upper bounds of [`Counters::group_seconds`]' buckets, seconds: a
/// group's statements and commit take a fraction of a millisecond; a
/// start-over of the WAL 70 ms or more.
pub(crate) const GROUP_SECONDS_BUCKETS: [f64; 11] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

impl Default for Counters {
    fn default() -> Counters {
        let opts = prometheus::HistogramOpts::new(
            "cardbind_sqlite_writer_transaction_seconds",
            "How long each of the embedded store's write transactions took, statements and commit; the buckets above 0.05 s count the writer's stops when the WAL starts over.",
        )
        .buckets(GROUP_SECONDS_BUCKETS.to_vec());
        Counters {
            groups: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
            group_seconds: prometheus::Histogram::with_opts(opts).ok(),
            database_bytes: AtomicU64::new(0),
            free_bytes: AtomicU64::new(0),
            max_bytes: AtomicU64::new(0),
        }
    }
}

/// The running store: a handle to the writer's queue and the readers.
pub(crate) struct Engine {
    /// No writer behind it when the store is opened read-only
    /// ([`Engine::open_read_only`]).
    jobs: mpsc::Sender<Box<dyn Job>>,
    readers: Mutex<Vec<Connection>>,
    max_readers: usize,
    opener: Opener,
    pub(crate) counters: Arc<Counters>,
    // Declared last: dropped after `jobs`, so the writer sees its queue
    // closed and finishes before it is joined.
    _threads: Threads,
}

struct Threads {
    writer: Option<JoinHandle<()>>,
    checkpointer: Option<JoinHandle<()>>,
    stop: Option<std_mpsc::Sender<Ctl>>,
}

impl Drop for Threads {
    fn drop(&mut self) {
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        // Closing the last control sender stops the checkpointer.
        self.stop.take();
        if let Some(c) = self.checkpointer.take() {
            let _ = c.join();
        }
    }
}

impl Engine {
    pub(crate) fn open(path: &Path, options: SqliteOptions) -> Result<Arc<Engine>, OpenError> {
        Engine::open_with(path, options, LOCK_BYTE)
    }

    /// [`Engine::open`] with the file size at which the writer's cache
    /// grows to its configured size (`LOCK_BYTE` but in tests).
    fn open_with(
        path: &Path,
        options: SqliteOptions,
        lock_byte: i64,
    ) -> Result<Arc<Engine>, OpenError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Directories made for the store are private, as the data
            // directory is (it holds the store).
            let mut b = std::fs::DirBuilder::new();
            b.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
            b.create(dir).map_err(|e| OpenError::Io {
                path: dir.to_owned(),
                reason: e.to_string(),
            })?;
        }
        create_private(path)?;
        let opener = Opener {
            path: path.to_owned(),
            options: options.clone(),
            access: Access::ReadWrite,
        };
        let mut writer = opener.open(Role::Writer).map_err(OpenError::Store)?;
        // The cache as the writer holds it, from the upgrade on (see
        // `SMALL_FILE_CACHE_KIB`); corrected at the first commit after.
        let cache = CacheSizer::set_up(&writer, options.writer_cache_kib(), lock_byte);
        // An upgrade's pages (a new index, a table copied into a new
        // shape) are let past the size bound: a file already at it would
        // otherwise not open at all, where it still serves reads.
        size_bound(&writer, 0).map_err(OpenError::Store)?;
        let upgrade_in_wal = schema::migrate(&mut writer)?;
        size_bound(&writer, options.max_size_mib).map_err(OpenError::Store)?;
        let mut readers = Vec::with_capacity(options.readers);
        for _ in 0..options.readers {
            readers.push(opener.open(Role::Reader).map_err(OpenError::Store)?);
        }
        let checkpointer = opener.open(Role::Checkpointer).map_err(OpenError::Store)?;

        let (jobs, rx) = mpsc::channel::<Box<dyn Job>>(options.queue_capacity.max(1));
        let (ctl_tx, ctl_rx) = std_mpsc::channel::<Ctl>();
        if upgrade_in_wal {
            // The checkpointer truncates the WAL as soon as it starts.
            let _ = ctl_tx.send(Ctl::Truncate);
        }
        let max_batch = options.max_batch.max(1);
        let writer_ctl = ctl_tx.clone();
        let counters = Arc::new(Counters::default());
        if options.max_size_mib > 0 {
            counters.max_bytes.store(
                u64::from(options.max_size_mib) * 1024 * 1024,
                Ordering::Relaxed,
            );
        }
        // A failure here is tried again by the checkpointer, which logs it.
        let _ = read_size(&checkpointer, &counters);
        let checkpointer_counters = counters.clone();
        let writer_counters = counters.clone();
        let busy_timeout = options.busy_timeout;
        let writer_thread = std::thread::Builder::new()
            .name("cardbind-sqlite-writer".into())
            .spawn(move || {
                writer_loop(
                    writer,
                    rx,
                    max_batch,
                    writer_ctl,
                    &writer_counters,
                    busy_timeout,
                    cache,
                )
            })
            .map_err(|e| OpenError::Store(unavailable(format!("cannot start a thread: {e}"))))?;
        let interval = options.checkpoint_interval;
        let checkpointer_thread = std::thread::Builder::new()
            .name("cardbind-sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpointer, ctl_rx, interval, &checkpointer_counters))
            .map_err(|e| OpenError::Store(unavailable(format!("cannot start a thread: {e}"))))?;
        Ok(Arc::new(Engine {
            jobs,
            readers: Mutex::new(readers),
            max_readers: options.readers.max(1),
            opener,
            counters,
            _threads: Threads {
                writer: Some(writer_thread),
                checkpointer: Some(checkpointer_thread),
                stop: Some(ctl_tx),
            },
        }))
    }

    /// Opens the existing database at `path` for reading only: nothing is
    /// created, upgraded, checkpointed or written (every write is refused
    /// as `Unavailable`). The file must be of this build's schema version.
    /// Where SQLite cannot open it read-only (a read-only directory without
    /// the WAL files) and it has no WAL, it is read as immutable.
    pub(crate) fn open_read_only(
        path: &Path,
        options: SqliteOptions,
    ) -> Result<Arc<Engine>, OpenError> {
        if !path.is_file() {
            return Err(OpenError::Io {
                path: path.to_owned(),
                reason: "no such file".to_owned(),
            });
        }
        let mut opener = Opener {
            path: path.to_owned(),
            options: options.clone(),
            access: Access::ReadOnly,
        };
        // Opening is lazy: the first read is what meets the WAL files.
        let probe = opener.connect(Role::Reader).and_then(|c| {
            c.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))?;
            Ok(c)
        });
        let first = match probe {
            Ok(c) => {
                configure(&c, Role::Reader, &options).map_err(OpenError::Store)?;
                c
            }
            // SQLite may not add the WAL files beside it (a read-only
            // directory): a file without a WAL is read as it is. Any other
            // failure (a lock held, a file that is not a database) is said.
            Err(e)
                if matches!(
                    e.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::ReadOnly)
                ) && !wal_of(path).exists() =>
            {
                opener.access = Access::Immutable;
                opener.open(Role::Reader).map_err(OpenError::Store)?
            }
            Err(e) => return Err(OpenError::Store(db_err(e))),
        };
        schema::check_current(&first)?;
        let mut readers = Vec::with_capacity(options.readers.max(1));
        readers.push(first);
        // Nothing receives: a write finds the queue closed.
        let (jobs, _) = mpsc::channel::<Box<dyn Job>>(1);
        Ok(Arc::new(Engine {
            jobs,
            readers: Mutex::new(readers),
            max_readers: options.readers.max(1),
            opener,
            counters: Arc::new(Counters::default()),
            _threads: Threads {
                writer: None,
                checkpointer: None,
                stop: None,
            },
        }))
    }

    /// Runs `work` on the writer thread, inside a transaction shared with
    /// whatever other writes are queued, and answers once that transaction
    /// is committed. `work` runs in a savepoint of its own: when it returns
    /// an error, its writes are undone and the others' are not.
    pub(crate) async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        if self.opener.access != Access::ReadWrite {
            return Err(unavailable("the store is open read-only"));
        }
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(Task {
            work: Some(work),
            out: None,
            reply,
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| unavailable("the writer has stopped"))?;
        answer
            .await
            .map_err(|_| unavailable("the writer stopped before answering"))?
    }

    /// Runs `work` on a reader connection, on the calling thread. Reads are
    /// point lookups and short range scans by index (microseconds); handing
    /// them to another thread would cost more than the read itself.
    pub(crate) fn read<T>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.checkout()?;
        let out = work(&conn);
        self.checkin(conn);
        out
    }

    /// Like [`Engine::read`], inside one read transaction (one snapshot for
    /// several statements).
    pub(crate) fn read_snapshot<T>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.read(|c| {
            c.prepare_cached("BEGIN")
                .and_then(|mut s| s.execute([]))
                .map_err(db_err)?;
            let out = work(c);
            c.prepare_cached("COMMIT")
                .and_then(|mut s| s.execute([]))
                .map_err(db_err)?;
            out
        })
    }

    fn checkout(&self) -> Result<Connection, StoreError> {
        let pooled = match self.readers.lock() {
            Ok(mut pool) => pool.pop(),
            Err(poisoned) => poisoned.into_inner().pop(),
        };
        match pooled {
            Some(c) => Ok(c),
            // More concurrent readers than pooled connections (a burst on
            // blocking threads): open one more, kept up to the pool size.
            None => self.opener.open(Role::Reader),
        }
    }

    fn checkin(&self, conn: Connection) {
        if !conn.is_autocommit() {
            // A read that failed inside its transaction.
            let _ = conn.execute_batch("ROLLBACK");
        }
        let mut pool = match self.readers.lock() {
            Ok(pool) => pool,
            Err(poisoned) => poisoned.into_inner(),
        };
        if pool.len() < self.max_readers {
            pool.push(conn);
        }
    }
}

/// Creates a new database file readable and writable by its owner only: it
/// holds sealed card data and wrapped keys. SQLite gives the WAL and
/// shared-memory files it creates beside it the same mode. An existing file
/// keeps the mode its operator gave it; a URI or `:memory:` is left to
/// SQLite.
fn create_private(path: &Path) -> Result<(), OpenError> {
    let name = path.to_string_lossy();
    if name.starts_with("file:") || name == ":memory:" {
        return Ok(());
    }
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    match o.open(path) {
        Ok(_) => {
            // Said once, when it happens: a mistyped `storage.path` starts
            // an empty store, and this line is how an operator sees it.
            tracing::info!(path = %path.display(), "created a new, empty store file");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(OpenError::Io {
            path: path.to_owned(),
            reason: e.to_string(),
        }),
    }
}

fn exec_cached(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(|_| ())
        .map_err(db_err)
}

fn writer_loop(
    conn: Connection,
    mut rx: mpsc::Receiver<Box<dyn Job>>,
    max_batch: usize,
    ctl: std_mpsc::Sender<Ctl>,
    counters: &Counters,
    busy_timeout: Duration,
    mut cache: CacheSizer,
) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(max_batch);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut after = AfterCommit::default();
        let mut pages = None;
        let started = Instant::now();
        let committed = run_group(&conn, &mut batch, &mut after, &mut pages);
        counters.groups.fetch_add(1, Ordering::Relaxed);
        counters
            .writes
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let took = started.elapsed();
        counters
            .busy_ns
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        if let Some(h) = &counters.group_seconds {
            h.observe(took.as_secs_f64());
        }
        if committed.is_err() && !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for job in batch.drain(..) {
            job.finish(committed.clone());
        }
        if committed.is_ok() {
            if let Some(pages) = pages {
                cache.apply(&conn, pages);
            }
            if after.vacuum {
                if let Err(e) = incremental_vacuum(&conn) {
                    tracing::warn!(error = %e, "sqlite incremental vacuum failed");
                }
            }
            if after.truncate_wal {
                // Here, between groups, no other writer can hold the
                // checkpoint up (the checkpointer's own attempt loses to
                // a steady stream of groups); a reader on an old snapshot
                // still can: the writer waits for it only briefly, and
                // the checkpointer tries until done.
                let _ = conn.busy_timeout(TRUNCATE_WAIT.min(busy_timeout));
                let truncated = checkpoint(&conn, "TRUNCATE");
                if let Err(e) = conn.busy_timeout(busy_timeout) {
                    tracing::warn!(error = %e, "sqlite busy timeout not restored");
                }
                match truncated {
                    Ok(Checkpointed::Whole) => {}
                    Ok(Checkpointed::Busy) => {
                        let _ = ctl.send(Ctl::Truncate);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "sqlite WAL truncate failed");
                        let _ = ctl.send(Ctl::Truncate);
                    }
                }
            }
        }
    }
    // Closing: leave a checkpointed file with an empty WAL behind.
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
        tracing::warn!(error = %e, "sqlite final checkpoint failed");
    }
}

/// How long the writer waits for readers to let a truncate through before
/// leaving it to the checkpointer (writes wait meanwhile).
const TRUNCATE_WAIT: Duration = Duration::from_millis(20);

/// Free pages a purge group gives back at most, so one step of a long
/// purge holds the writer for a bounded time (each group of a purge frees
/// fewer than this).
const VACUUM_PAGES: u32 = 4096;

/// Gives free pages back to the file system, in a file made with
/// `auto_vacuum = INCREMENTAL` (before 7 December 2026; in the others the
/// statement does nothing and the free pages wait for later writes).
/// SQLite frees one page per step of this statement, so it is stepped to
/// its end (a batch execute steps it once: one page).
fn incremental_vacuum(conn: &Connection) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!("PRAGMA incremental_vacuum({VACUUM_PAGES})"))
        .map_err(db_err)?;
    let mut rows = stmt.query([]).map_err(db_err)?;
    while rows.next().map_err(db_err)?.is_some() {}
    Ok(())
}

fn run_group(
    conn: &Connection,
    batch: &mut [Box<dyn Job>],
    after: &mut AfterCommit,
    pages: &mut Option<i64>,
) -> Result<(), StoreError> {
    exec_cached(conn, "BEGIN IMMEDIATE")?;
    for job in batch.iter_mut() {
        exec_cached(conn, "SAVEPOINT job")?;
        if let Err(e) = job.run(&mut Tx { conn, after }) {
            if conn.is_autocommit() {
                // SQLite rolled the whole transaction back (the file is
                // full, an I/O error): the group's writes failed with it,
                // for the reason this one gives.
                return Err(e);
            }
            exec_cached(conn, "ROLLBACK TO job")?;
        }
        exec_cached(conn, "RELEASE job")?;
    }
    // The file's size as this transaction leaves it (read inside it: no
    // lock of its own), for the page cache's size.
    *pages = page_count(conn).ok();
    exec_cached(conn, "COMMIT")
}

fn page_count(conn: &Connection) -> Result<i64, StoreError> {
    conn.prepare_cached("PRAGMA page_count")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(db_err)
}

fn page_size(conn: &Connection) -> Result<i64, StoreError> {
    conn.query_row("PRAGMA page_size", [], |r| r.get(0))
        .map_err(db_err)
}

/// The most the writer's page cache holds while the file is smaller than
/// SQLite's lock-byte page (1 GiB), KiB.
///
/// SQLite (3.54) keeps the pages of a B-tree balance in ascending order by
/// swapping two page numbers by way of the lock-byte page's number
/// (262,145 with 4 KiB pages; `balance_nonroot`), which raises its page
/// cache's highest key to it. At the commit, cutting the cache back to the
/// file's size then walks every slot and every page of the cache, not the
/// few past the file's end, while the file is smaller than that page. A
/// balance of that kind happens in nearly every group once trees keyed at
/// random (idempotency keys, card fingerprints, user ids) split their
/// pages, so each commit visited every cached page: 17 % of the writer
/// thread's CPU with a 16 MiB cache (`perf`, random user ids, 7 December
/// 2026). A 4 MiB cache holds a quarter of the pages that walk follows
/// (its slots, too, as long as the cache never held more: pcache1's hash
/// table grows and never shrinks, so the writer takes the small size
/// before the upgrade at open) and costs a few more reads from the OS's
/// file cache (a file of that size is all there); from 1 GiB on the walk
/// stops by itself and the configured size applies. Measured at 32 binds
/// in flight; a group that dirties more than about 900 pages (90 % of the
/// small cache) has SQLite write some of them to the WAL before its
/// commit, as it does with any cache too small for a transaction.
const SMALL_FILE_CACHE_KIB: u64 = 4096;

/// The offset of SQLite's lock byte (`PENDING_BYTE`): 1 GiB.
const LOCK_BYTE: i64 = 1 << 30;

/// The writer's page cache size as the file grows (or shrinks) across
/// SQLite's lock-byte page: [`SMALL_FILE_CACHE_KIB`] at most below it,
/// the configured size from it on.
#[derive(Debug)]
struct CacheSizer {
    lock_page: i64,
    small_kib: u64,
    full_kib: u64,
    set: Option<u64>,
}

impl CacheSizer {
    /// The sizer of `conn`'s file (its page size), set for its size now.
    fn set_up(conn: &Connection, full_kib: u64, lock_byte: i64) -> CacheSizer {
        let mut sizer = CacheSizer::new(page_size(conn).unwrap_or(4096), full_kib, lock_byte);
        if let Ok(pages) = page_count(conn) {
            sizer.apply(conn, pages);
        }
        sizer
    }

    fn new(page_size: i64, full_kib: u64, lock_byte: i64) -> CacheSizer {
        CacheSizer {
            lock_page: lock_byte / page_size.max(512) + 1,
            small_kib: full_kib.min(SMALL_FILE_CACHE_KIB),
            full_kib,
            set: None,
        }
    }

    /// The size to set for a file of `pages` pages, when it is not the
    /// one set last.
    fn resize(&mut self, pages: i64) -> Option<u64> {
        let kib = if pages < self.lock_page {
            self.small_kib
        } else {
            self.full_kib
        };
        (self.set != Some(kib)).then(|| {
            self.set = Some(kib);
            kib
        })
    }

    /// Sets the cache's size for a file of `pages` pages, when it changes.
    fn apply(&mut self, conn: &Connection, pages: i64) {
        if let Some(kib) = self.resize(pages) {
            if let Err(e) = conn.execute_batch(&format!("PRAGMA cache_size = -{kib}")) {
                tracing::warn!(error = %e, "sqlite page cache not resized");
                self.set = None;
            }
        }
    }
}

fn checkpoint_loop(
    conn: Connection,
    ctl: std_mpsc::Receiver<Ctl>,
    interval: Duration,
    counters: &Counters,
) {
    // A truncate asked for and not yet done: tried at every turn until the
    // WAL is copied whole and cut.
    let mut truncate = false;
    let mut size_read = Instant::now();
    let mut size_failing = Repeats::new(REPEAT_LOG_EVERY);
    // A full or read-only disk fails every turn: said once, then once a
    // minute with the count, and its end said too.
    let mut failing = Repeats::new(REPEAT_LOG_EVERY);
    let mut held_up = Repeats::new(REPEAT_LOG_EVERY);
    loop {
        match ctl.recv_timeout(interval) {
            Ok(Ctl::Truncate) => truncate = true,
            Err(std_mpsc::RecvTimeoutError::Timeout) => {}
            Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
        }
        let mode = if truncate { "TRUNCATE" } else { "PASSIVE" };
        let now = Instant::now();
        if now.duration_since(size_read) >= SIZE_READ_EVERY {
            size_read = now;
            match read_size(&conn, counters) {
                Ok(()) => {
                    if let Some(failures) = size_failing.ended() {
                        tracing::info!(failures, "sqlite size reads work again");
                    }
                }
                Err(e) => {
                    if let Some(failures) = size_failing.happened(now) {
                        tracing::warn!(
                            error = %e,
                            failures,
                            "sqlite size read failed; the size gauges keep their last values"
                        );
                    }
                }
            }
        }
        let result = checkpoint(&conn, mode);
        if let Err(e) = &result {
            if let Some(since) = failing.happened(now) {
                tracing::warn!(error = %e, mode, failures = since, "sqlite checkpoint failed");
            }
        } else if let Some(failures) = failing.ended() {
            tracing::info!(failures, "sqlite checkpoints work again");
        }
        match result {
            Ok(Checkpointed::Whole) => {
                truncate = false;
                held_up.ended();
            }
            Ok(Checkpointed::Busy) if truncate => {
                if let Some(times) = held_up.happened(now) {
                    tracing::warn!(
                        times,
                        "sqlite WAL truncate held up by readers or the writer; retrying"
                    );
                }
            }
            Ok(Checkpointed::Busy) | Err(_) => {}
        }
    }
}

/// How often the checkpointer reads the database's size and free pages
/// for [`Counters::database_bytes`] (two reads of the header page, cached).
pub(crate) const SIZE_READ_EVERY: Duration = Duration::from_secs(1);

/// Reads the database's size and free pages into `counters` (a failed
/// read leaves the last ones: the next turn tries again).
fn read_size(conn: &Connection, counters: &Counters) -> Result<(), rusqlite::Error> {
    let (size, pages, free) = conn.query_row(
        "SELECT s.page_size, c.page_count, f.freelist_count \
         FROM pragma_page_size() s, pragma_page_count() c, pragma_freelist_count() f",
        [],
        |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        },
    )?;
    let bytes = |n: i64| u64::try_from(n.saturating_mul(size)).unwrap_or(0);
    counters
        .database_bytes
        .store(bytes(pages), Ordering::Relaxed);
    counters.free_bytes.store(bytes(free), Ordering::Relaxed);
    Ok(())
}

/// How often a condition that repeats every checkpoint turn is logged again.
const REPEAT_LOG_EVERY: Duration = Duration::from_secs(60);

/// A condition that may hold turn after turn (a failing disk): says when
/// to log it, so that it is logged when it starts and then at most once per
/// `every`, with how many times it happened since the last line.
#[derive(Debug)]
struct Repeats {
    every: Duration,
    logged_at: Option<Instant>,
    since_logged: u64,
    total: u64,
}

impl Repeats {
    fn new(every: Duration) -> Repeats {
        Repeats {
            every,
            logged_at: None,
            since_logged: 0,
            total: 0,
        }
    }

    /// It happened at `now`: `Some(times since the last line, this one
    /// included)` when it is to be logged.
    fn happened(&mut self, now: Instant) -> Option<u64> {
        self.since_logged += 1;
        self.total += 1;
        let due = self
            .logged_at
            .is_none_or(|at| now.saturating_duration_since(at) >= self.every);
        if !due {
            return None;
        }
        self.logged_at = Some(now);
        Some(std::mem::take(&mut self.since_logged))
    }

    /// It stopped: `Some(how many times it happened)` when it had.
    fn ended(&mut self) -> Option<u64> {
        let total = std::mem::take(&mut self.total);
        self.logged_at = None;
        self.since_logged = 0;
        (total > 0).then_some(total)
    }
}

/// What a checkpoint did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Checkpointed {
    /// Every frame was copied (and, for `TRUNCATE`, the WAL cut to zero).
    Whole,
    /// A reader or the writer held it up: it stopped short. SQLite says
    /// so in the first column of its row, not by an error.
    Busy,
}

pub(crate) fn checkpoint(conn: &Connection, mode: &str) -> Result<Checkpointed, StoreError> {
    let busy = conn
        .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(db_err)?;
    Ok(if busy == 0 {
        Checkpointed::Whole
    } else {
        Checkpointed::Busy
    })
}

/// Bounds the file at `max_size_mib` (0: SQLite's own limit, in effect no
/// bound). SQLite never sets it below the file's current size.
fn size_bound(conn: &Connection, max_size_mib: u32) -> Result<(), StoreError> {
    let pages = if max_size_mib > 0 {
        i64::from(max_size_mib) * 1024 * 1024 / page_size(conn)?.max(512)
    } else {
        i64::from(u32::MAX - 1)
    };
    conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
        .map_err(db_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeating_condition_is_logged_when_it_starts_then_once_per_period() {
        let every = Duration::from_secs(60);
        let mut r = Repeats::new(every);
        let t0 = Instant::now();
        assert_eq!(r.ended(), None, "nothing happened yet");
        assert_eq!(r.happened(t0), Some(1));
        // Twenty times a second for a minute: silent, then one line that
        // counts them.
        let mut lines = 0;
        for i in 1..1200u64 {
            if r.happened(t0 + Duration::from_millis(i * 50)).is_some() {
                lines += 1;
            }
        }
        assert_eq!(lines, 0);
        assert_eq!(r.happened(t0 + every), Some(1200));
        assert_eq!(r.happened(t0 + every + Duration::from_secs(1)), None);
        assert_eq!(r.ended(), Some(1202));
        // Once over, the next occurrence is news again.
        assert_eq!(r.ended(), None);
        assert_eq!(r.happened(t0 + every + Duration::from_secs(2)), Some(1));
    }

    /// Below SQLite's lock-byte page (1 GiB) the writer's cache is at most
    /// 4 MiB; from it on, the configured size; and back when the file
    /// shrinks below it. A size is set only when it changes.
    #[test]
    fn the_writers_cache_is_small_until_the_file_passes_the_lock_byte_page() {
        let mut c = CacheSizer::new(4096, 16 * 1024, LOCK_BYTE);
        assert_eq!(c.lock_page, 262_145);
        assert_eq!(c.resize(0), Some(4096), "a new file");
        assert_eq!(c.resize(100_000), None, "unchanged");
        assert_eq!(c.resize(262_144), None, "still below the lock page");
        assert_eq!(c.resize(262_145), Some(16 * 1024));
        assert_eq!(c.resize(2_000_000), None);
        assert_eq!(c.resize(200_000), Some(4096), "shrunk by a vacuum");
        // The lock page is at 1 GiB whatever the page size.
        assert_eq!(
            CacheSizer::new(8192, 16 * 1024, LOCK_BYTE).lock_page,
            131_073
        );
        // A configured size below 4 MiB is kept as it is.
        let mut small = CacheSizer::new(4096, 1024, LOCK_BYTE);
        assert_eq!(small.resize(1), Some(1024));
        assert_eq!(small.resize(300_000), None);
    }

    /// The writer applies it: a new file's writer runs with the small
    /// cache, not the 16 MiB configured, and takes the configured size in
    /// the group that grows the file past the lock page (1 MiB here, in
    /// place of 1 GiB).
    #[tokio::test]
    async fn the_writer_resizes_its_cache_as_the_file_grows() {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteOptions {
            cache_mib: 16,
            ..SqliteOptions::default()
        };
        let engine = Engine::open_with(&dir.path().join("c.sqlite3"), options, 1 << 20).unwrap();
        let cache_size = |tx: &mut Tx<'_>| {
            tx.conn
                .query_row("PRAGMA cache_size", [], |r| r.get::<_, i64>(0))
                .map_err(db_err)
        };
        let grow = |bytes: i64| {
            move |tx: &mut Tx<'_>| {
                tx.conn
                    .execute(
                        "INSERT INTO bin_tables (id, imported_at, entries, rows)
                         VALUES (hex(randomblob(8)), 0, 0, hex(zeroblob(?1)))",
                        [bytes / 2],
                    )
                    .map(|_| ())
                    .map_err(db_err)
            }
        };
        assert_eq!(engine.write(cache_size).await.unwrap(), -4096);
        engine.write(grow(200_000)).await.unwrap();
        assert_eq!(
            engine.write(cache_size).await.unwrap(),
            -4096,
            "below 1 MiB"
        );
        engine.write(grow(1_000_000)).await.unwrap();
        assert_eq!(
            engine.write(cache_size).await.unwrap(),
            -16 * 1024,
            "past it"
        );
    }

    /// The immutable URI names the file as a path (one leading `/`: two
    /// would start an authority, a host) with what URIs reserve encoded.
    #[test]
    fn an_immutable_uri_names_the_path_it_was_given() {
        assert_eq!(
            immutable_uri(Path::new("//x/a b%?#é.sqlite3")),
            "file:/x/a%20b%25%3F%23%C3%A9.sqlite3?immutable=1"
        );
        assert_eq!(
            immutable_uri(Path::new("/data/cardbind.sqlite3")),
            "file:/data/cardbind.sqlite3?immutable=1"
        );
    }
}
