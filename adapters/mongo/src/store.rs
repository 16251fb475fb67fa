//! The client, its collections, timeouts, error mapping and indexes.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cardbind_domain::Timestamp;
use cardbind_ports::StoreError;
use mongodb::bson::{doc, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{
    ClientOptions, IndexOptions, ReadConcern, ReadPreference, SelectionCriteria, WriteConcern,
};
use mongodb::{Client, Collection, Database, IndexModel};

use crate::docs::{
    CardDataDoc, ChannelRefDoc, IdemDoc, KeyLinkDoc, LinkDoc, RateDoc, ReviewDoc, SeenDoc,
};
use crate::hints::{HeldAttempts, KnownHeads, RateHints, SystemHead};
use crate::monitor::CommandLog;
use crate::schema::{collections, labels, SCHEMA};

/// How to reach the database and how long to wait for it.
#[derive(Clone, Debug)]
pub struct MongoConfig {
    /// `mongodb://…` connection string.
    pub uri: String,
    /// Database holding every collection of this service.
    pub database: String,
    /// Upper bound for one port method, all its round trips included; past
    /// it the method returns [`StoreError::Unavailable`].
    pub operation_timeout: Duration,
    /// How long the driver looks for a usable server before giving up.
    pub server_selection_timeout: Duration,
    /// TCP connect (and TLS handshake) timeout.
    pub connect_timeout: Duration,
    /// Records every command the client sends (tests, budgets).
    pub monitor: Option<CommandLog>,
}

impl MongoConfig {
    /// Defaults: 2 s server selection and connect timeouts, no monitor.
    pub fn new(
        uri: impl Into<String>,
        database: impl Into<String>,
        operation_timeout: Duration,
    ) -> MongoConfig {
        MongoConfig {
            uri: uri.into(),
            database: database.into(),
            operation_timeout,
            server_selection_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            monitor: None,
        }
    }
}

/// Every storage port on one MongoDB database. Cheap to clone (the driver's
/// client and the process-local hints are shared).
#[derive(Clone, Debug)]
pub struct MongoStore {
    pub(crate) db: Database,
    pub(crate) op_timeout: Duration,
    pub(crate) links: Collection<LinkDoc>,
    pub(crate) card_data: Collection<CardDataDoc>,
    pub(crate) channel_refs: Collection<ChannelRefDoc>,
    pub(crate) idempotency: Collection<IdemDoc>,
    pub(crate) rates: Collection<RateDoc>,
    pub(crate) seen: Collection<SeenDoc>,
    pub(crate) data_keys: Collection<KeyLinkDoc>,
    pub(crate) review: Collection<ReviewDoc>,
    /// The head of the service's own chain as this process last wrote it
    /// (a guess that saves a read; a wrong guess costs a lost insert).
    pub(crate) system_head: Arc<tokio::sync::Mutex<SystemHead>>,
    /// Heads of users' chains this process read or wrote (see
    /// `wallets.rs`).
    pub(crate) known_heads: Arc<Mutex<KnownHeads>>,
    /// The newest record number of each idempotency attempt this process
    /// holds (a guess that saves a read, as above).
    pub(crate) held: Arc<Mutex<HeldAttempts>>,
    /// Where this process takes the next slot of each rate window (a guess,
    /// as above).
    pub(crate) rate_hints: Arc<Mutex<RateHints>>,
    pub(crate) monitor: Option<CommandLog>,
}

/// What [`MongoStore::purge`] deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PurgeCounts {
    pub idempotency_records: u64,
    pub audit_links: u64,
    pub rate_slots: u64,
    pub seen_ids: u64,
}

impl MongoStore {
    /// The database every collection lives in (to share the client with
    /// the BIN table store).
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// A store on `database` at `uri`, with 2 s server selection and
    /// connect timeouts and `operation_timeout` per port method. Does not
    /// contact the server (it may be down now and come up later); call
    /// [`MongoStore::ensure_indexes`] at start-up.
    pub async fn connect(
        uri: &str,
        database: &str,
        operation_timeout: Duration,
    ) -> Result<MongoStore, StoreError> {
        MongoStore::with_config(MongoConfig::new(uri, database, operation_timeout)).await
    }

    /// As [`MongoStore::connect`], with a new [`CommandLog`] recording
    /// every command this store sends.
    pub async fn connect_with_monitor(
        uri: &str,
        database: &str,
        operation_timeout: Duration,
    ) -> Result<(MongoStore, CommandLog), StoreError> {
        let log = CommandLog::new();
        let mut cfg = MongoConfig::new(uri, database, operation_timeout);
        cfg.monitor = Some(log.clone());
        Ok((MongoStore::with_config(cfg).await?, log))
    }

    /// As [`MongoStore::connect`], with every setting chosen.
    pub async fn with_config(config: MongoConfig) -> Result<MongoStore, StoreError> {
        let mut options =
            tokio::time::timeout(config.operation_timeout, ClientOptions::parse(&config.uri))
                .await
                .map_err(|_| StoreError::Unavailable("resolving the MongoDB URI timed out".into()))?
                .map_err(map_err)?;
        options.server_selection_timeout = Some(config.server_selection_timeout);
        options.connect_timeout = Some(config.connect_timeout);
        // Notice a restarted server quickly (the driver also re-checks at
        // once when an operation finds no usable server).
        options.heartbeat_freq = Some(Duration::from_secs(1));
        if options.app_name.is_none() {
            options.app_name = Some("cardbind".into());
        }
        // Every write is acknowledged once a majority holds it, and every
        // read sees only what a majority holds, unless the URI says
        // otherwise. Both matter: the adapter inserts after what it read
        // (a chain's next link, a data key found taken), and a read of a
        // write a failover then rolls back would let it build on something
        // that is gone (a chain with a gap, card data sealed under a key
        // that no longer exists).
        if options.write_concern.is_none() {
            options.write_concern = Some(WriteConcern::majority());
        }
        if options.read_concern.is_none() {
            options.read_concern = Some(ReadConcern::majority());
        }
        // Every read goes to the primary, whatever the URI says: the
        // adapter reads what it has just written (a wallet's head before
        // the next link, an idempotency record's attempt), and the
        // operator's card data sweep deletes what a wallet it reads does
        // not hold, which a lagging secondary could show as it was before
        // a bind.
        if !matches!(
            &options.selection_criteria,
            None | Some(SelectionCriteria::ReadPreference(ReadPreference::Primary))
        ) {
            tracing::warn!("the connection string's read preference is ignored: cardbind reads from the primary");
        }
        options.selection_criteria =
            Some(SelectionCriteria::ReadPreference(ReadPreference::Primary));
        if let Some(log) = &config.monitor {
            options.command_event_handler = Some(log.handler());
        }
        let client = Client::with_options(options).map_err(map_err)?;
        let db = client.database(&config.database);
        use collections::*;
        Ok(MongoStore {
            links: db.collection(LINKS),
            card_data: db.collection(CARD_DATA),
            channel_refs: db.collection(CHANNEL_REFS),
            idempotency: db.collection(IDEMPOTENCY),
            rates: db.collection(RATE_SLOTS),
            seen: db.collection(SEEN_IDS),
            data_keys: db.collection(DATA_KEYS),
            review: db.collection(REVIEW_QUEUE),
            system_head: Arc::new(tokio::sync::Mutex::new(SystemHead::default())),
            known_heads: Arc::new(Mutex::new(KnownHeads::default())),
            held: Arc::new(Mutex::new(HeldAttempts::default())),
            rate_hints: Arc::new(Mutex::new(RateHints::default())),
            monitor: config.monitor,
            op_timeout: config.operation_timeout,
            db,
        })
    }

    /// The log of the commands this store sends, when it was made with one.
    pub fn command_log(&self) -> Option<&CommandLog> {
        self.monitor.as_ref()
    }

    /// Whether the server answers (`ping`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.timed(async {
            self.db
                .run_command(doc! { "ping": 1, "comment": labels::PING })
                .await
                .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    /// Whether this database holds a cardbind store: a collection
    /// [`MongoStore::ensure_indexes`] makes at the service's first start
    /// exists. An admin command checks it first, so that a mistyped
    /// database name is refused rather than set up empty and worked on.
    pub async fn holds_a_store(&self) -> Result<bool, StoreError> {
        self.timed(async {
            let names = self.db.list_collection_names().await.map_err(map_err)?;
            // Any of them: a newer build may add a collection its first
            // start has not made yet.
            Ok(SCHEMA.iter().any(|c| names.iter().any(|n| n == c.name)))
        })
        .await
    }

    /// One `ping` (after the driver's handshake and login): whether the
    /// database answers now, and when it does not, whether trying again
    /// may help (see [`Unreached`]). `serve` asks it until the database
    /// answers, for `server.dependency_wait_seconds`.
    pub async fn reach(&self) -> Result<(), Unreached> {
        match tokio::time::timeout(self.op_timeout, self.db.run_command(doc! { "ping": 1 })).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(Unreached {
                transient: is_transient(&e),
                error: map_err(e),
            }),
            Err(_) => Err(Unreached {
                transient: true,
                error: StoreError::Unavailable(format!(
                    "no answer from the database within {} ms",
                    self.op_timeout.as_millis()
                )),
            }),
        }
    }

    /// Creates every index of [`crate::schema::SCHEMA`]. Idempotent: an
    /// index that exists with the same keys and options is left alone, so
    /// every instance may call it at start-up.
    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        self.timed(async {
            for coll in SCHEMA {
                let c = self.db.collection::<Document>(coll.name);
                // One `createIndexes` per index: FerretDB 1.24 panics (and
                // drops the connection) on a `createIndexes` naming two or
                // more indexes that all exist already, which every restart
                // would do.
                for i in coll.indexes {
                    let mut keys = Document::new();
                    for (k, dir) in i.keys {
                        keys.insert(*k, *dir);
                    }
                    let mut o = IndexOptions::default();
                    o.name = Some(i.name.to_owned());
                    if i.unique {
                        o.unique = Some(true);
                    }
                    c.create_index(IndexModel::builder().keys(keys).options(o).build())
                        .comment(labels::ENSURE_INDEXES)
                        .await
                        .map_err(map_err)?;
                }
            }
            Ok(())
        })
        .await
    }

    /// Runs every retention purge: idempotency records of keys first
    /// claimed before `idempotency_before`, audit links older than
    /// `audit_before` (the caller enforces the retention minimum), and rate
    /// slots and seen ids expired at `now`.
    pub async fn purge(
        &self,
        now: Timestamp,
        idempotency_before: Timestamp,
        audit_before: Timestamp,
    ) -> Result<PurgeCounts, StoreError> {
        use cardbind_ports::audit::AuditLog;
        use cardbind_ports::store::{IdempotencyStore, RateLimiter, SeenIds};
        Ok(PurgeCounts {
            idempotency_records: IdempotencyStore::purge_created_before(self, idempotency_before)
                .await?,
            audit_links: AuditLog::purge_before(self, audit_before).await?,
            rate_slots: RateLimiter::purge_expired(self, now).await?,
            seen_ids: SeenIds::purge_expired(self, now).await?,
        })
    }

    /// Runs one port method under the operation timeout (and, with a
    /// strict command log, fails it when one of its queries broke an index
    /// or shard-key rule).
    pub(crate) async fn timed<T>(
        &self,
        f: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let r = match tokio::time::timeout(self.op_timeout, f).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Unavailable(format!(
                "no answer from the database within {} ms",
                self.op_timeout.as_millis()
            ))),
        };
        if let Some(log) = &self.monitor {
            log.check()?;
        }
        r
    }

    pub(crate) fn held(&self) -> std::sync::MutexGuard<'_, HeldAttempts> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn known_heads(&self) -> std::sync::MutexGuard<'_, KnownHeads> {
        self.known_heads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn rate_hints(&self) -> std::sync::MutexGuard<'_, RateHints> {
        self.rate_hints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

const DUPLICATE_KEY: i32 = 11000;

/// Driver error → port error. A unique-index violation (11000) is
/// `Duplicate`; a document we cannot decode is `Corrupt`; everything else
/// (no server, network, timeouts, shutdown, server errors) is `Unavailable`.
pub(crate) fn map_err(e: mongodb::error::Error) -> StoreError {
    if is_duplicate(&e) {
        return StoreError::Duplicate;
    }
    match &*e.kind {
        ErrorKind::BsonDeserialization(_) | ErrorKind::InvalidResponse { .. } => {
            StoreError::Corrupt(e.to_string())
        }
        ErrorKind::ServerSelection { .. }
        | ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::DnsResolve { .. }
        | ErrorKind::Shutdown => StoreError::Unavailable(e.to_string()),
        _ => {
            tracing::warn!(error = %e, "unexpected database error");
            StoreError::Unavailable(e.to_string())
        }
    }
}

/// A database that did not answer [`MongoStore::reach`].
#[derive(Clone, Debug)]
pub struct Unreached {
    pub error: StoreError,
    /// No server yet, a network failure, a timeout, a node shutting down
    /// or between primaries: the same call may pass later. A refused
    /// login, a missing privilege or anything else the server says no to
    /// will not pass by waiting.
    pub transient: bool,
}

impl std::fmt::Display for Unreached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

/// Server error codes of a node that is starting, stopping or changing
/// role, or of the network between (the drivers' retryable set).
const TRANSIENT_CODES: [i32; 12] = [
    6,     // HostUnreachable
    7,     // HostNotFound
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    189,   // PrimarySteppedDown
    9001,  // SocketException
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
    262,   // ExceededTimeLimit
];

/// Whether a driver error may pass by trying again (see [`Unreached`]).
pub fn is_transient(e: &mongodb::error::Error) -> bool {
    match &*e.kind {
        ErrorKind::ServerSelection { .. }
        | ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::DnsResolve { .. }
        | ErrorKind::Shutdown => true,
        ErrorKind::Command(c) => TRANSIENT_CODES.contains(&c.code),
        _ => false,
    }
}

pub(crate) fn is_duplicate(e: &mongodb::error::Error) -> bool {
    match &*e.kind {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        ErrorKind::Command(c) => c.code == DUPLICATE_KEY,
        // Only when every error is a taken key: a write-concern error or
        // any other write error beside one is not a duplicate (retryable).
        ErrorKind::InsertMany(m) => {
            m.write_concern_error.is_none()
                && m.write_errors
                    .iter()
                    .flatten()
                    .all(|w| w.code == DUPLICATE_KEY)
                && m.write_errors.iter().flatten().next().is_some()
        }
        _ => false,
    }
}

/// Inserts `doc`; `Ok(false)` when a unique key of it is taken. The one
/// atomic primitive every exclusive write here is built on.
pub(crate) async fn try_insert<T>(
    coll: &Collection<T>,
    doc: &T,
    label: &'static str,
) -> Result<bool, StoreError>
where
    T: serde::Serialize + Send + Sync,
{
    match coll.insert_one(doc).comment(label).await {
        Ok(_) => Ok(true),
        Err(e) if is_duplicate(&e) => Ok(false),
        Err(e) => Err(map_err(e)),
    }
}

/// Collects a cursor, at most `limit` documents.
pub(crate) async fn collect<T>(
    cursor: mongodb::Cursor<T>,
    limit: usize,
) -> Result<Vec<T>, StoreError>
where
    T: serde::de::DeserializeOwned + Send + Sync + Unpin,
{
    use futures::TryStreamExt;
    let mut out = Vec::new();
    let mut c = cursor;
    while out.len() < limit {
        match c.try_next().await.map_err(map_err)? {
            Some(d) => out.push(d),
            None => break,
        }
    }
    Ok(out)
}

/// The filter of a walk in (`first`, `second`) order that starts just
/// after `after` (every document without it): the one `$or` an index on
/// (`first`, `second`) serves as two ranges.
pub(crate) fn walk_after(
    first: &str,
    second: &str,
    after: Option<(mongodb::bson::Bson, mongodb::bson::Bson)>,
) -> Document {
    match after {
        Some((a, b)) => doc! { "$or": [
            { first: { "$gt": a.clone() } },
            { first: a, second: { "$gt": b } },
        ] },
        None => doc! {},
    }
}

/// `limit` as the driver wants it (0 would mean "no limit"; callers return
/// early on 0).
pub(crate) fn limit_i64(limit: u32) -> i64 {
    i64::from(limit.max(1))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn command_error(code: i32, name: &str) -> mongodb::error::Error {
        let c: mongodb::error::CommandError =
            mongodb::bson::from_document(doc! { "code": code, "codeName": name, "errmsg": "x" })
                .unwrap();
        mongodb::error::Error::from(ErrorKind::Command(c))
    }

    #[test]
    fn only_what_may_pass_by_waiting_is_transient() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(is_transient(&mongodb::error::Error::from(ErrorKind::Io(
            Arc::new(io)
        ))));
        for (code, name) in [
            (189, "PrimarySteppedDown"),
            (11602, "InterruptedDueToReplStateChange"),
            (91, "ShutdownInProgress"),
            (10107, "NotWritablePrimary"),
        ] {
            assert!(is_transient(&command_error(code, name)), "{name}");
        }
        for (code, name) in [
            (18, "AuthenticationFailed"),
            (13, "Unauthorized"),
            (85, "IndexOptionsConflict"),
            (86, "IndexKeySpecsConflict"),
        ] {
            assert!(!is_transient(&command_error(code, name)), "{name}");
        }
    }
}
