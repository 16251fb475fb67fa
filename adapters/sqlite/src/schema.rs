//! The schema, versioned by `PRAGMA user_version` and created or upgraded
//! when a store is opened. A file whose version is newer than this build
//! knows is refused (an older build must not write to it), and so is a
//! file that is not a cardbind database (`PRAGMA application_id`).
//!
//! Table design (see the crate docs for the reasons):
//! * Small records are `WITHOUT ROWID` tables keyed by what they are
//!   looked up by: one B-tree each, no separate index.
//! * Records of hundreds of bytes or more found by a random key (links,
//!   which hold a wallet; idempotency attempts, which hold a stored
//!   answer) are ordinary tables, appended in rowid order and found
//!   through a small index entry: a write fills the table's last page,
//!   not a random one.
//! * Keys that grow with time (`at`, `expires_at`, `created_at`) lead the
//!   indexes that retention walks, so inserts land on the right edge of
//!   the tree and purges delete from its left edge.

use rusqlite::{Connection, TransactionBehavior};

use crate::error::db_err;
use crate::OpenError;

/// The schema this build writes.
pub const SCHEMA_VERSION: i64 = 7;

/// `PRAGMA application_id` of a cardbind database ("CBnd").
pub const APPLICATION_ID: i64 = 0x4342_6e64;

const V1: &str = "
CREATE TABLE links (
    chain     TEXT    NOT NULL,  -- the user id, or '@system' for the service
    seq       INTEGER NOT NULL,
    at        INTEGER NOT NULL,  -- ms since the epoch
    prev_hash BLOB    NOT NULL,  -- 32 bytes
    hash      BLOB    NOT NULL,  -- 32 bytes
    pending   INTEGER NOT NULL,  -- 1: the wallet held a pending_verification card
    wallet    BLOB               -- WalletRecord as JSON; NULL on the service chain
);
CREATE UNIQUE INDEX links_chain ON links (chain, seq);
CREATE INDEX links_at ON links (at);
CREATE INDEX links_pending ON links (at, chain, seq) WHERE pending = 1;

CREATE TABLE events (
    at         INTEGER NOT NULL,  -- the link's instant
    chain      TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    idx        INTEGER NOT NULL,  -- place in the link
    user_id    TEXT,
    binding_id TEXT,
    action     TEXT    NOT NULL,
    body       BLOB    NOT NULL,  -- EventRecord as JSON
    PRIMARY KEY (at, chain, seq, idx)
) WITHOUT ROWID;
CREATE INDEX events_user ON events (user_id, at, chain, seq, idx) WHERE user_id IS NOT NULL;
CREATE INDEX events_binding ON events (binding_id, at, chain, seq, idx) WHERE binding_id IS NOT NULL;
CREATE INDEX events_action ON events (action, at, chain, seq, idx);

CREATE TABLE card_data (
    binding     TEXT    NOT NULL,
    generation  INTEGER NOT NULL,
    user        TEXT    NOT NULL,
    pan         BLOB    NOT NULL,  -- sealed bytes
    holder_name BLOB    NOT NULL,
    id_number   BLOB    NOT NULL,
    phone       BLOB    NOT NULL,
    PRIMARY KEY (binding, generation)
) WITHOUT ROWID;

CREATE TABLE channel_refs (
    channel TEXT NOT NULL,
    ref     TEXT NOT NULL,
    user    TEXT NOT NULL,
    binding TEXT NOT NULL,
    PRIMARY KEY (channel, ref)
) WITHOUT ROWID;

CREATE TABLE idempotency (
    scope        TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    attempt      INTEGER NOT NULL,
    request_hash TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,  -- this attempt's claim
    lease_until  INTEGER NOT NULL,
    state        INTEGER NOT NULL,  -- 0 in progress, 1 completed, 2 released
    status       INTEGER,
    content_type TEXT,
    body         BLOB,
    PRIMARY KEY (scope, key, attempt)
) WITHOUT ROWID;
CREATE INDEX idempotency_created ON idempotency (created_at);

CREATE TABLE rate_windows (
    expires_at INTEGER NOT NULL,
    key        TEXT    NOT NULL,
    taken      INTEGER NOT NULL,
    PRIMARY KEY (expires_at, key)
) WITHOUT ROWID;

CREATE TABLE seen_ids (
    namespace  TEXT    NOT NULL,
    id         TEXT    NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (namespace, id)
) WITHOUT ROWID;
CREATE INDEX seen_ids_expiry ON seen_ids (expires_at);

CREATE TABLE data_keys (
    owner         TEXT    NOT NULL PRIMARY KEY,
    master_key_id TEXT    NOT NULL,
    wrapped       BLOB    NOT NULL,
    version       INTEGER NOT NULL,
    created_at    INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE review_queue (
    binding TEXT    NOT NULL PRIMARY KEY,
    user    TEXT    NOT NULL,
    since   INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Version 2: imported BIN tables (the newest row is the active table).
const V2: &str = "
CREATE TABLE bin_tables (
    n           INTEGER PRIMARY KEY,
    id          TEXT    NOT NULL UNIQUE,
    imported_at INTEGER NOT NULL,
    entries     INTEGER NOT NULL,
    rows        TEXT    NOT NULL
);
";

/// Version 3: a binding's channel references, found to be deleted together
/// (`ChannelRefs::delete_binding`: at unbind and erasure).
const V3: &str = "
CREATE INDEX channel_refs_by_binding ON channel_refs (binding, user);
";

/// Version 4: the generation of the bind that recorded a reference (an
/// unbind deletes the references of the bind it ended, not those a bind
/// of the card again is recording). NULL in rows of older versions.
const V4: &str = "
ALTER TABLE channel_refs ADD COLUMN generation INTEGER;
";

/// Version 5: the digest of a link's wallet (SHA-256 of the `wallet`
/// column's bytes), covered by the link's hash. NULL on the service's
/// chain and in links written by older versions (their hash covers no
/// wallet).
const V5: &str = "
ALTER TABLE links ADD COLUMN wallet_digest BLOB;
";

/// Version 6: the link of the change that queued a card for review (a
/// removal by an earlier change leaves the entry). 0 in entries of older
/// versions: any removal takes them.
const V6: &str = "
ALTER TABLE review_queue ADD COLUMN link INTEGER NOT NULL DEFAULT 0;
";

/// Version 7: idempotency attempts in an ordinary table, appended in the
/// order they are claimed, found through the unique index `(scope, key,
/// attempt)`. Each holds a stored answer (a row of about 420 bytes);
/// keyed by a digest of the client's key, as a `WITHOUT ROWID` table they
/// went to a random page each, so a bind rewrote a whole 4 KiB page
/// there, and more pages written a bind filled the WAL sooner (the
/// README's "How fast, as the store grows"). The rows are copied in the
/// order they were claimed (each a random read of the old table), and the
/// old table's pages go to the file's free list: a file holding many
/// recent attempts takes a while to open once, and grows by about the old
/// table's size, which later writes reuse.
const V7: &str = "
CREATE TABLE idempotency_v7 (
    scope        TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    attempt      INTEGER NOT NULL,
    request_hash TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    lease_until  INTEGER NOT NULL,
    state        INTEGER NOT NULL,
    status       INTEGER,
    content_type TEXT,
    body         BLOB
);
INSERT INTO idempotency_v7
    (scope, key, attempt, request_hash, created_at, lease_until, state, status, content_type, body)
    SELECT scope, key, attempt, request_hash, created_at, lease_until, state, status, content_type, body
    FROM idempotency INDEXED BY idempotency_created ORDER BY created_at;
DROP TABLE idempotency;
ALTER TABLE idempotency_v7 RENAME TO idempotency;
CREATE UNIQUE INDEX idempotency_key ON idempotency (scope, key, attempt);
CREATE INDEX idempotency_created ON idempotency (created_at);
";

/// The steps from version `i` to `i + 1`, in order.
const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6, V7];

/// A driver error at open.
fn store(e: rusqlite::Error) -> OpenError {
    OpenError::Store(db_err(e))
}

/// Whether a file of `version` is one this build upgrades (0 is a new
/// file, created rather than upgraded).
fn is_upgrade(version: i64) -> bool {
    version > 0 && version < SCHEMA_VERSION
}

fn pragma_i64(conn: &Connection, name: &str) -> Result<i64, OpenError> {
    conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
        .map_err(store)
}

/// Checks what the file holds: `Ok(version)` of a cardbind database (0:
/// empty), or why it is refused.
fn check(conn: &Connection) -> Result<i64, OpenError> {
    let version = pragma_i64(conn, "user_version")?;
    let app = pragma_i64(conn, "application_id")?;
    if version == 0 {
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .map_err(store)?;
        if tables > 0 || (app != 0 && app != APPLICATION_ID) {
            return Err(OpenError::NotCardbind);
        }
    } else if app != APPLICATION_ID {
        return Err(OpenError::NotCardbind);
    }
    if version > SCHEMA_VERSION {
        return Err(OpenError::NewerSchema {
            found: version,
            known: SCHEMA_VERSION,
        });
    }
    Ok(version)
}

/// For a store opened read-only: the file must be a cardbind database of
/// exactly this build's schema (an older one is not upgraded).
pub(crate) fn check_current(conn: &Connection) -> Result<(), OpenError> {
    match check(conn)? {
        0 => Err(OpenError::NotCardbind),
        SCHEMA_VERSION => Ok(()),
        found => Err(OpenError::OlderSchema {
            found,
            known: SCHEMA_VERSION,
        }),
    }
}

/// Brings the database at `conn` to [`SCHEMA_VERSION`]. Safe when several
/// processes open one new file at once: the steps run in one write
/// transaction that checks the version again (another process opening
/// the file to write waits for it, up to its busy timeout).
///
/// An upgrade's temporary data (the sort of a new index, the statement
/// journal that keeps the pages a step overwrites, zeroed by
/// `secure_delete`) goes to temporary files, not memory, while the steps
/// run: for a step that copies a table, that is about the size of the
/// table (measured with the `sqlite3` shell on the copy of a million
/// idempotency records: 793 MiB resident with it in memory, 140 MiB in
/// files). After an upgrade the WAL, which then holds every page the steps
/// wrote, is copied into the file and cut to zero. Returns whether the
/// upgrade's pages are still in the WAL (that checkpoint was held up by a
/// reader, or failed): the checkpointer is then to truncate it.
pub(crate) fn migrate(conn: &mut Connection) -> Result<bool, OpenError> {
    if check(conn)? == 0 {
        // Only takes effect before the first table is created. Files made
        // before 7 December 2026 were `INCREMENTAL` and stay so (the
        // writer still gives their freed pages back after a purge); see
        // "Retention and space" in the crate's documentation for why new
        // ones are not.
        conn.execute_batch("PRAGMA auto_vacuum = NONE;")
            .map_err(store)?;
    }
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(store)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenError::Store(crate::error::unavailable(format!(
            "the file system does not allow WAL mode (journal mode {mode})"
        ))));
    }
    let temp_store = pragma_i64(conn, "temp_store")?;
    conn.execute_batch("PRAGMA temp_store = FILE;")
        .map_err(store)?;
    let started = std::time::Instant::now();
    let stepped = run_steps(conn);
    let restored = conn.execute_batch(&format!("PRAGMA temp_store = {temp_store};"));
    // A step's error first: the restore fails too when it left a
    // transaction open.
    let found = stepped?;
    restored.map_err(store)?;
    if !is_upgrade(found) {
        return Ok(false);
    }
    let in_wal = match crate::engine::checkpoint(conn, "TRUNCATE") {
        Ok(crate::engine::Checkpointed::Whole) => false,
        Ok(crate::engine::Checkpointed::Busy) => {
            tracing::warn!(
                "the upgrade's checkpoint was held up by a reader: the WAL is truncated later"
            );
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "the upgrade's checkpoint failed: the WAL is truncated later");
            true
        }
    };
    tracing::info!(
        from = found,
        to = SCHEMA_VERSION,
        seconds = started.elapsed().as_secs_f64(),
        "upgraded the store file's schema"
    );
    Ok(in_wal)
}

/// Runs the steps the file needs in one write transaction; the version it
/// found.
fn run_steps(conn: &mut Connection) -> Result<i64, OpenError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(store)?;
    let version = check(&tx)?;
    if is_upgrade(version) {
        tracing::info!(
            from = version,
            to = SCHEMA_VERSION,
            "upgrading the store file's schema"
        );
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(step).map_err(store)?;
        tx.execute_batch(&format!(
            "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {};",
            i + 1
        ))
        .map_err(store)?;
    }
    tx.commit().map_err(store)?;
    Ok(version)
}
