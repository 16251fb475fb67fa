//! How a store is opened.

use std::time::Duration;

/// What a commit survives. Both keep every acknowledged write across a
/// crash of the process; they differ on a power loss or OS crash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous = NORMAL`: a commit is written to the WAL but not
    /// flushed to the disk; the WAL is flushed at every checkpoint (every
    /// [`SqliteOptions::checkpoint_interval`] while there are writes). A
    /// power loss can lose the commits since the last checkpoint, never
    /// the file's consistency.
    #[default]
    Normal,
    /// `synchronous = FULL`: every group commit flushes the WAL before
    /// answering (one `fsync` per group, shared by its writes).
    Full,
}

/// Settings of [`crate::SqliteStore::open`]. The defaults suit a small
/// machine (2 cores) with up to a few million stored cards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqliteOptions {
    pub durability: Durability,
    /// The writer's page cache, MiB (each reader has 1 MiB more). Pages
    /// beyond it are read from the OS's file cache, which does not count in
    /// the process's memory. While the file is smaller than 1 GiB the
    /// writer holds at most 4 MiB of it: below that size SQLite walks the
    /// whole cache at each commit that split a B-tree page (see the crate
    /// docs).
    pub cache_mib: u32,
    /// Reader connections kept open. Reads run on the calling thread, so
    /// this should cover the threads that read at once (the runtime's
    /// workers); more are opened when needed and closed after use.
    pub readers: usize,
    /// At most this many writes share one transaction.
    pub max_batch: usize,
    /// Writes waiting for the writer before callers wait to queue.
    pub queue_capacity: usize,
    /// How often the WAL is copied into the database file.
    pub checkpoint_interval: Duration,
    /// Past this many WAL pages (4 KiB each) the writer checkpoints by
    /// itself and the WAL starts over: the WAL file stays about this size.
    pub wal_restart_pages: u32,
    /// How long a statement waits for a lock held by another process.
    pub busy_timeout: Duration,
    /// The database file grows to at most this many MiB (`0`: no bound).
    /// Past it a write is refused as `Unavailable` (nothing of it kept),
    /// reads go on, and writes succeed again as soon as deletions (a
    /// retention purge, an erasure) free pages, which are reused. So a bound
    /// below the disk's free space keeps a full disk from stopping the
    /// WAL, the checkpoints and the rest of the machine. The WAL is not
    /// counted (it stays about [`SqliteOptions::wal_restart_pages`] × 4 KiB).
    pub max_size_mib: u32,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            durability: Durability::Normal,
            cache_mib: 64,
            readers: std::thread::available_parallelism()
                .map_or(4, |n| n.get() + 2)
                .max(4),
            max_batch: 512,
            queue_capacity: 4096,
            // Both measured with the load generator (1M binds, 32 in
            // flight): with 200 ms and 16,384 pages (64 MiB) the writer
            // stopped for 70-140 ms several times a second to copy and flush
            // what the checkpointer had not yet, which was the p99 (about
            // 110 ms); with 50 ms and 65,536 pages, p99 was 15-35 ms and
            // binds/s 25 % higher with sequential user ids, but with random
            // ones those stops (about once a second) still grew the p99 to
            // over 300 ms to a million binds; with 262,144 pages (1 GiB) it
            // stayed at 24-58 ms (the crate docs, the README).
            checkpoint_interval: Duration::from_millis(50),
            wal_restart_pages: 262_144,
            busy_timeout: Duration::from_secs(5),
            max_size_mib: 0,
        }
    }
}

impl SqliteOptions {
    pub(crate) fn writer_cache_kib(&self) -> u64 {
        (u64::from(self.cache_mib) * 1024).max(1024)
    }

    /// A reader's cache is emptied by SQLite whenever another connection
    /// has committed since its last read, which is nearly always while
    /// binds are coming in: a large one would only cost its emptying.
    pub(crate) fn reader_cache_kib(&self) -> u64 {
        1024
    }
}
