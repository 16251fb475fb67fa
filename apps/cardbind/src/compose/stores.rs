//! The storage adapter the configuration names, as every storage port.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use cardbind_ports::audit::AuditLog;
use cardbind_ports::bins::BinTableStore;
use cardbind_ports::store::{
    CardDataStore, ChannelRefs, DataKeyStore, IdempotencyStore, RateLimiter, ReviewQueue, SeenIds,
    WalletStore,
};

use super::data_dir;
use crate::config::{Config, StorageKind};

/// Every storage port, from one adapter.
#[derive(Clone)]
pub struct Stores {
    pub wallets: Arc<dyn WalletStore>,
    pub audit: Arc<dyn AuditLog>,
    pub card_data: Arc<dyn CardDataStore>,
    pub channel_refs: Arc<dyn ChannelRefs>,
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub rates: Arc<dyn RateLimiter>,
    pub seen: Arc<dyn SeenIds>,
    pub data_keys: Arc<dyn DataKeyStore>,
    pub review: Arc<dyn ReviewQueue>,
    /// Where imported BIN tables are kept.
    pub bins: Arc<dyn BinTableStore>,
    /// The embedded store, when it is the one opened for writing: the
    /// service exports its writer's metrics.
    pub sqlite: Option<cardbind_sqlite::SqliteStore>,
}

impl Stores {
    /// Every port from one adapter that implements them all, with the BIN
    /// table store beside it.
    pub fn all_in_one<S>(s: Arc<S>, bins: Arc<dyn BinTableStore>) -> Stores
    where
        S: WalletStore
            + AuditLog
            + CardDataStore
            + ChannelRefs
            + IdempotencyStore
            + RateLimiter
            + SeenIds
            + DataKeyStore
            + ReviewQueue
            + 'static,
    {
        Stores {
            wallets: s.clone(),
            audit: s.clone(),
            card_data: s.clone(),
            channel_refs: s.clone(),
            idempotency: s.clone(),
            rates: s.clone(),
            seen: s.clone(),
            data_keys: s.clone(),
            review: s,
            bins,
            sqlite: None,
        }
    }
}

/// The SQLite file of `config` (`storage.path`, else `cardbind.sqlite3` in
/// the data directory), as configured: a relative path is taken from the
/// current directory.
pub fn sqlite_path(config: &Config) -> PathBuf {
    match &config.storage.path {
        Some(p) => p.clone(),
        None => config.server.data_dir.join(SQLITE_FILE),
    }
}

const SQLITE_FILE: &str = "cardbind.sqlite3";

/// Opens the configured store for an admin command: the embedded SQLite
/// store must exist already. Opening it would create an empty one, and a
/// command run from another directory than the service's (the default
/// `server.data_dir` is relative) would then report success on it while the
/// service's store is left as it was. Nothing is created when it refuses.
pub async fn existing_stores(config: &Config) -> anyhow::Result<Stores> {
    // The in-memory store lives inside the serving process: a command
    // would act on an empty store of its own and report what it did there.
    if config.storage.kind == StorageKind::Memory {
        bail!(
            "storage.kind: admin commands act on a durable store (\"sqlite\" or \"mongodb\"); \
             the in-memory store lives inside the serving process, out of their reach: nothing \
             was done"
        );
    }
    if config.storage.kind == StorageKind::Sqlite {
        let path = sqlite_path(config);
        if !path.exists() {
            let shown = std::path::absolute(&path).unwrap_or_else(|_| path.clone());
            bail!(
                "storage.path: there is no store at {}; nothing was changed. Run the command \
                 where the service runs (a relative server.data_dir or storage.path is taken \
                 from the current directory), or set them to the service's store",
                shown.display()
            );
        }
    }
    if config.storage.kind == StorageKind::Mongodb {
        return mongo_with(config, None, Use::Existing).await;
    }
    stores(config).await
}

/// [`existing_stores`] for a command that only reads (`audit verify`): the
/// embedded store is opened read-only, as it is: a copy on read-only media
/// opens, and nothing in it is upgraded, checkpointed or written. It must
/// be of this build's schema.
pub async fn existing_stores_for_reading(config: &Config) -> anyhow::Result<Stores> {
    if config.storage.kind == StorageKind::Mongodb {
        // Nor are MongoDB's indexes made: a read-only role will do.
        return mongo_with(config, None, Use::Read).await;
    }
    if config.storage.kind != StorageKind::Sqlite {
        return existing_stores(config).await;
    }
    let path = sqlite_path(config);
    if !path.exists() {
        // The same refusal as a command that writes.
        return existing_stores(config).await;
    }
    let store = cardbind_sqlite::SqliteStore::open_read_only(&path, sqlite_options(config))
        .map_err(|e| anyhow!("storage.path: {}: {e}", path.display()))?;
    let bins = Arc::new(store.bin_tables());
    Ok(Stores::all_in_one(Arc::new(store), bins))
}

fn sqlite_options(config: &Config) -> cardbind_sqlite::SqliteOptions {
    let s = &config.storage;
    cardbind_sqlite::SqliteOptions {
        cache_mib: s.cache_mib,
        wal_restart_pages: s.wal_mib.saturating_mul(256),
        max_size_mib: s.max_size_mib,
        busy_timeout: Duration::from_millis(s.timeout_ms),
        ..cardbind_sqlite::SqliteOptions::default()
    }
}

/// Opens the configured store (the embedded store is created when missing).
pub async fn stores(config: &Config) -> anyhow::Result<Stores> {
    let s = &config.storage;
    match s.kind {
        StorageKind::Memory => Ok(Stores::all_in_one(
            cardbind_memory::MemoryStore::shared(),
            Arc::new(cardbind_memory::MemoryBinTableStore::new()),
        )),
        StorageKind::Sqlite => {
            if s.path.is_none() {
                // The file goes in the data directory: made (0700) if missing.
                data_dir(config)?;
            }
            let path = sqlite_path(config);
            let store = cardbind_sqlite::SqliteStore::open(&path, sqlite_options(config))
                .map_err(|e| anyhow!("storage.path: {}: {e}", path.display()))?;
            let bins = Arc::new(store.bin_tables());
            Ok(Stores {
                sqlite: Some(store.clone()),
                ..Stores::all_in_one(Arc::new(store), bins)
            })
        }
        StorageKind::Mongodb => mongo(config, None).await,
    }
}

/// The MongoDB store of `config`, its indexes ensured, with the BIN table
/// store on the same client. With `monitor`, every command the client sends
/// is recorded in it (the round-trip budget tests count them per request).
pub async fn mongo(
    config: &Config,
    monitor: Option<cardbind_mongo::CommandLog>,
) -> anyhow::Result<Stores> {
    mongo_with(config, monitor, Use::Serve).await
}

/// What a MongoDB store is opened for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    /// The service: its collections and indexes are made when missing.
    Serve,
    /// An admin command: the store must exist; its indexes are made.
    Existing,
    /// A command that only reads: the store must exist; nothing is made.
    Read,
}

/// [`mongo`]; with `existing`, refused (nothing made) when the database
/// holds no store yet.
async fn mongo_with(
    config: &Config,
    monitor: Option<cardbind_mongo::CommandLog>,
    purpose: Use,
) -> anyhow::Result<Stores> {
    let s = &config.storage;
    let timeout = Duration::from_millis(s.timeout_ms);
    let mut options = cardbind_mongo::MongoConfig::new(&s.uri, &s.database, timeout);
    options.monitor = monitor;
    let m = cardbind_mongo::MongoStore::with_config(options)
        .await
        .context("storage.uri: cannot set up the MongoDB client")?;
    if purpose != Use::Serve
        && !m
            .holds_a_store()
            .await
            .map_err(|e| anyhow!("storage: cannot list the database's collections: {e}"))?
    {
        bail!(
            "storage.database: the database {:?} at storage.uri holds no cardbind store \
             (the service makes its collections at its first start); nothing was changed. \
             Check storage.database and storage.uri against the service's",
            s.database
        );
    }
    // A database still starting (or electing a primary) is waited for by
    // a starting service; a refused login is not, nor by an admin command.
    // Boxed, as the other start-up waits: each adds its future to the
    // start's, which tests that run the service must still lay out.
    Box::pin(super::wait::until_it_answers(
        "MongoDB",
        config.server.start_deadline,
        |u: &cardbind_mongo::Unreached| u.transient,
        || m.reach(),
    ))
    .await
    .map_err(|e| anyhow!("storage: the database does not answer: {e}"))?;
    let bins = cardbind_mongo::MongoBinTableStore::new(m.database(), timeout);
    if purpose != Use::Read {
        m.ensure_indexes()
            .await
            .map_err(|e| anyhow!("storage: creating indexes failed: {e}"))?;
        bins.ensure_indexes()
            .await
            .map_err(|e| anyhow!("storage: creating the BIN table indexes failed: {e}"))?;
    }
    Ok(Stores::all_in_one(Arc::new(m), Arc::new(bins)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `storage.wal_mib` is the WAL's size in MiB; the store counts it in
    /// its 4 KiB pages. The default is the store's own.
    #[test]
    fn the_wal_size_reaches_the_embedded_store_in_pages() {
        let mut c = Config::default();
        assert_eq!(
            sqlite_options(&c).wal_restart_pages,
            cardbind_sqlite::SqliteOptions::default().wal_restart_pages
        );
        assert_eq!(sqlite_options(&c).wal_restart_pages, 262_144);
        c.storage.wal_mib = 16;
        assert_eq!(sqlite_options(&c).wal_restart_pages, 4096);
        c.storage.wal_mib = 16_384;
        assert_eq!(sqlite_options(&c).wal_restart_pages, 4_194_304);
    }
}
