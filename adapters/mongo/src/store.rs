//! The client, its collections, timeouts, error mapping and indexes.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cardbind_domain::Timestamp;
use cardbind_ports::StoreError;
use mongodb::bson::{doc, DateTime, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};

use std::sync::{Arc, Mutex};

use crate::chain::Hints;
use crate::docs::{
    AuditCheckpointDoc, AuditDoc, BindingChangeDoc, BindingDoc, BindingKeyDoc, ConsentDoc,
    ConsentLinkDoc, DataKeyDoc, DefaultDoc, IdemDoc, RateDoc, RevocationDoc, SeenDoc,
    UserBindingDoc,
};

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
}

impl MongoConfig {
    /// Defaults: 2 s server selection and connect timeouts.
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
        }
    }
}

/// Every storage port on one MongoDB database. Cheap to clone (the driver's
/// client is shared).
#[derive(Clone, Debug)]
pub struct MongoStore {
    pub(crate) db: Database,
    pub(crate) op_timeout: Duration,
    pub(crate) bindings: Collection<BindingDoc>,
    pub(crate) binding_changes: Collection<BindingChangeDoc>,
    pub(crate) binding_keys: Collection<BindingKeyDoc>,
    pub(crate) user_bindings: Collection<UserBindingDoc>,
    pub(crate) consent_links: Collection<ConsentLinkDoc>,
    pub(crate) defaults: Collection<DefaultDoc>,
    pub(crate) idempotency: Collection<IdemDoc>,
    pub(crate) rates: Collection<RateDoc>,
    pub(crate) consents: Collection<ConsentDoc>,
    pub(crate) revocations: Collection<RevocationDoc>,
    pub(crate) seen: Collection<SeenDoc>,
    pub(crate) data_keys: Collection<DataKeyDoc>,
    pub(crate) audit: Collection<AuditDoc>,
    pub(crate) audit_checkpoints: Collection<AuditCheckpointDoc>,
    /// Where this process last saw the head of each chain (a starting
    /// point for searches, never a decision).
    pub(crate) hints: Arc<Hints>,
    /// The last audit link this process appended or found: (seq, hash).
    pub(crate) audit_hint: Arc<Mutex<Option<(i64, String)>>>,
    /// Appends of this process take turns: they would otherwise all race
    /// for the same next seq, and every loser pays a search.
    pub(crate) audit_turn: Arc<tokio::sync::Mutex<()>>,
}

/// Collection names.
pub mod collections {
    pub const BINDINGS: &str = "bindings";
    pub const BINDING_CHANGES: &str = "binding_changes";
    pub const BINDING_KEYS: &str = "binding_keys";
    pub const USER_BINDINGS: &str = "user_bindings";
    pub const CONSENT_LINKS: &str = "consent_links";
    pub const USER_DEFAULTS: &str = "user_defaults";
    pub const IDEMPOTENCY: &str = "idempotency";
    pub const RATE_LIMITS: &str = "rate_limits";
    pub const CONSENTS: &str = "consents";
    pub const CONSENT_REVOCATIONS: &str = "consent_revocations";
    pub const SEEN_IDS: &str = "seen_ids";
    pub const DATA_KEYS: &str = "data_keys";
    pub const AUDIT: &str = "audit";
    pub const AUDIT_CHECKPOINTS: &str = "audit_checkpoints";
}

/// What [`MongoStore::purge`] deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PurgeCounts {
    pub idempotency_keys: u64,
    pub audit_records: u64,
    pub rate_counters: u64,
    pub seen_ids: u64,
}

impl MongoStore {
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

    /// As [`MongoStore::connect`], with every timeout chosen.
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
        let client = Client::with_options(options).map_err(map_err)?;
        let db = client.database(&config.database);
        use collections::*;
        Ok(MongoStore {
            bindings: db.collection(BINDINGS),
            binding_changes: db.collection(BINDING_CHANGES),
            binding_keys: db.collection(BINDING_KEYS),
            user_bindings: db.collection(USER_BINDINGS),
            consent_links: db.collection(CONSENT_LINKS),
            defaults: db.collection(USER_DEFAULTS),
            idempotency: db.collection(IDEMPOTENCY),
            rates: db.collection(RATE_LIMITS),
            consents: db.collection(CONSENTS),
            revocations: db.collection(CONSENT_REVOCATIONS),
            seen: db.collection(SEEN_IDS),
            data_keys: db.collection(DATA_KEYS),
            audit: db.collection(AUDIT),
            audit_checkpoints: db.collection(AUDIT_CHECKPOINTS),
            hints: Arc::new(Hints::default()),
            audit_hint: Arc::new(Mutex::new(None)),
            audit_turn: Arc::new(tokio::sync::Mutex::new(())),
            op_timeout: config.operation_timeout,
            db,
        })
    }

    /// Whether the server answers (`ping`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.timed(async {
            self.db
                .run_command(doc! { "ping": 1 })
                .await
                .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    /// Creates every index this store relies on. Idempotent: an index that
    /// exists with the same keys and options is left alone, so every
    /// instance may call it at start-up.
    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        self.timed(async {
            let idx = |keys: Document, name: &str, unique: bool| {
                let mut o = IndexOptions::default();
                o.name = Some(name.to_owned());
                if unique {
                    o.unique = Some(true);
                }
                IndexModel::builder().keys(keys).options(o).build()
            };
            // One `createIndexes` per index: FerretDB 1.24 panics (and drops
            // the connection) on a `createIndexes` naming two or more
            // indexes that all exist already, which every restart would do.
            let b = &self.bindings;
            // One record per (user, card): the rule `insert` relies on.
            b.create_index(idx(doc! { "user_id": 1, "fingerprint": 1 }, "user_fingerprint_unique", true))
                .await
                .map_err(map_err)?;
            b.create_index(idx(doc! { "user_id": 1, "_id": 1 }, "user_id", false))
                .await
                .map_err(map_err)?;
            // Not unique: that would need a partial index (most records have
            // no channel_ref yet), which FerretDB does not have.
            b.create_index(idx(doc! { "channel": 1, "channel_ref": 1 }, "channel_ref", false))
                .await
                .map_err(map_err)?;
            b.create_index(idx(doc! { "status": 1, "_id": 1 }, "status_id", false))
                .await
                .map_err(map_err)?;
            self.binding_changes
                .create_index(idx(doc! { "binding_id": 1, "from_version": -1 }, "binding_from", false))
                .await
                .map_err(map_err)?;
            self.defaults
                .create_index(idx(doc! { "user_id": 1, "seq": -1 }, "user_seq", false))
                .await
                .map_err(map_err)?;
            self.idempotency
                .create_index(idx(doc! { "base": 1, "attempt": -1 }, "base_attempt", false))
                .await
                .map_err(map_err)?;
            self.idempotency
                .create_index(idx(doc! { "created_at": 1 }, "created_at", false))
                .await
                .map_err(map_err)?;
            self.rates
                .create_index(idx(doc! { "key": 1, "n": -1 }, "key_n", false))
                .await
                .map_err(map_err)?;
            self.rates
                .create_index(idx(doc! { "expires_at": 1 }, "expires_at", false))
                .await
                .map_err(map_err)?;
            self.consents
                .create_index(idx(doc! { "user_id": 1, "_id": 1 }, "user_id", false))
                .await
                .map_err(map_err)?;
            self.consents
                .create_index(idx(doc! { "binding_id": 1 }, "binding_id", false))
                .await
                .map_err(map_err)?;
            self.revocations
                .create_index(idx(doc! { "binding_id": 1 }, "binding_id", false))
                .await
                .map_err(map_err)?;
            self.seen
                .create_index(idx(doc! { "base": 1, "gen": -1 }, "base_gen", false))
                .await
                .map_err(map_err)?;
            self.seen
                .create_index(idx(doc! { "expires_at": 1 }, "expires_at", false))
                .await
                .map_err(map_err)?;
            self.data_keys
                .create_index(idx(doc! { "owner": 1, "seq": -1 }, "owner_seq", false))
                .await
                .map_err(map_err)?;
            self.binding_changes
                .create_index(idx(doc! { "written_at": 1 }, "written_at", false))
                .await
                .map_err(map_err)?;
            self.audit
                .create_index(idx(doc! { "at": 1 }, "at", false))
                .await
                .map_err(map_err)?;
            self.audit
                .create_index(idx(doc! { "user_id": 1, "_id": 1 }, "user_id", false))
                .await
                .map_err(map_err)?;
            self.audit
                .create_index(idx(doc! { "binding_id": 1, "_id": 1 }, "binding_id", false))
                .await
                .map_err(map_err)?;
            // Audit records used to have the number as `_id`; a log started
            // that way cannot be continued under string ids (the two would
            // not collide, so the chain could fork). Refuse to start.
            let first = self
                .audit
                .clone_with_type::<Document>()
                .find_one(doc! {})
                .await
                .map_err(map_err)?;
            if first.is_some_and(|d| !matches!(d.get("_id"), Some(mongodb::bson::Bson::String(_)))) {
                return Err(StoreError::Corrupt(
                    "the audit collection has records with numeric _id (layout before string audit ids); \
                     migrate them before starting"
                        .into(),
                ));
            }
            Ok(())
        })
        .await
    }

    /// Runs every retention purge: idempotency records created before
    /// `idempotency_before`, audit records older than `audit_before` (the
    /// caller enforces the ≥ 180-day minimum), and rate counters and seen
    /// ids expired at `now`.
    pub async fn purge(
        &self,
        now: Timestamp,
        idempotency_before: Timestamp,
        audit_before: Timestamp,
    ) -> Result<PurgeCounts, StoreError> {
        use cardbind_ports::audit::AuditLog;
        use cardbind_ports::store::{IdempotencyStore, RateCounter, SeenIds};
        Ok(PurgeCounts {
            idempotency_keys: IdempotencyStore::purge_created_before(self, idempotency_before)
                .await?,
            audit_records: AuditLog::purge_before(self, audit_before).await?,
            rate_counters: RateCounter::purge_expired(self, now).await?,
            seen_ids: SeenIds::purge_expired(self, now).await?,
        })
    }

    /// Superseded links of a chain older than this are deleted: far beyond
    /// the life of any operation that could still try to insert one of
    /// them again (see the crate docs, "Stale writers").
    pub(crate) fn gc_cutoff(&self) -> DateTime {
        let margin = std::cmp::max(GC_MARGIN, self.op_timeout.saturating_mul(10));
        let ms = i64::try_from(margin.as_millis()).unwrap_or(i64::MAX);
        DateTime::from_millis(wall_now().timestamp_millis().saturating_sub(ms))
    }

    /// Runs one port method under the operation timeout.
    pub(crate) async fn timed<T>(
        &self,
        f: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.op_timeout, f).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Unavailable(format!(
                "no answer from the database within {} ms",
                self.op_timeout.as_millis()
            ))),
        }
    }
}

/// The wall clock, for bookkeeping fields only (`written_at`); every
/// instant the ports hand in is kept as given.
pub(crate) fn wall_now() -> DateTime {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    DateTime::from_millis(ms)
}

const DUPLICATE_KEY: i32 = 11000;

/// The least age of a superseded chain link before it is deleted.
const GC_MARGIN: Duration = Duration::from_secs(3600);

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

pub(crate) fn is_duplicate(e: &mongodb::error::Error) -> bool {
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

/// Inserts `doc`; `Ok(false)` when its `_id` (or another unique key) is
/// taken. The one atomic primitive every write protocol here is built on.
pub(crate) async fn try_insert<T>(coll: &Collection<T>, doc: &T) -> Result<bool, StoreError>
where
    T: serde::Serialize + Send + Sync,
{
    match coll.insert_one(doc).await {
        Ok(_) => Ok(true),
        Err(e) if is_duplicate(&e) => Ok(false),
        Err(e) => Err(map_err(e)),
    }
}

/// The documents of `coll` matching `filter`, in `_id` order, at most
/// `limit` (see [`limit_i64`]).
pub(crate) async fn page_by_id<T>(
    coll: &Collection<T>,
    filter: Document,
    limit: i64,
) -> Result<Vec<T>, StoreError>
where
    T: serde::de::DeserializeOwned + Send + Sync,
{
    use futures::TryStreamExt;
    coll.find(filter)
        .sort(doc! { "_id": 1 })
        .limit(limit)
        .await
        .map_err(map_err)?
        .try_collect()
        .await
        .map_err(map_err)
}

/// `limit` as the driver wants it (0 would mean "no limit").
pub(crate) fn limit_i64(limit: u32) -> i64 {
    i64::from(limit.max(1))
}
