//! The BIN table every instance uses: where an imported table is kept
//! ([`BinTableStore`]) and the copy each process looks cards up in
//! ([`BinDirectory`]).
//!
//! An operator imports a whole table (`cardbind bins import FILE`); the
//! store makes it the active table for every instance at once, and each
//! instance notices the new version on its next refresh (the service
//! refreshes every `bins.refresh_interval_seconds`). Until a table is
//! imported, every instance uses the built-in one it was started with.

use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use cardbind_domain::{BinEntry, BinTable, CardNumber, Timestamp};

use crate::error::StoreError;

/// Which imported table is active.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinTableVersion {
    /// Opaque, unique per import (two imports of the same file get two ids).
    pub id: String,
    /// When the import ran (the importer's clock).
    pub imported_at: Timestamp,
    /// Entries in the table.
    pub entries: u64,
}

/// An imported table with its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBinTable {
    pub version: BinTableVersion,
    pub table: BinTable,
}

/// Where the imported BIN table lives, shared by every instance.
///
/// Contract (checked by [`testkit`] against every adapter):
/// * Before the first [`replace`](BinTableStore::replace), `active_version`
///   and `load` return `None`.
/// * `replace` is all or nothing: readers see the previous table or the new
///   one, never a mix, never a part of one — also when the writer crashes
///   half-way, and without multi-document transactions. When it returns
///   `Ok`, every later `active_version`/`load` (from any instance) sees the
///   new version or a newer one.
/// * Versions are never reused: each `replace` returns a new id.
/// * Of concurrent `replace`s, each completes and one of the tables ends up
///   active, whole.
/// * `load` returns exactly the entries given to the `replace` of the
///   version it returns, and that version equals what `active_version`
///   returns when no `replace` ran in between.
/// * `active_version` is cheap (one small read): instances call it often to
///   decide whether to `load`.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait BinTableStore: Send + Sync {
    /// The active table's version, `None` when no table was ever imported.
    async fn active_version(&self) -> Result<Option<BinTableVersion>, StoreError>;

    /// The active table, whole. A stored table that does not parse or
    /// build (a corrupt document, an overlap) is [`StoreError::Corrupt`].
    async fn load(&self) -> Result<Option<StoredBinTable>, StoreError>;

    /// Makes `table` the active table for every reader; returns its
    /// version. Stamps it with `imported_at`.
    async fn replace(
        &self,
        table: &BinTable,
        imported_at: Timestamp,
    ) -> Result<BinTableVersion, StoreError>;
}

/// What [`BinDirectory::refresh`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refresh {
    /// The store's active version is the one in use.
    Unchanged,
    /// A newer imported table is now in use.
    Loaded(BinTableVersion),
    /// No table was ever imported: the built-in table is in use.
    BuiltIn,
}

struct InUse {
    table: Arc<BinTable>,
    version: Option<BinTableVersion>,
}

/// The BIN table this process looks cards up in: the active imported table
/// as of the last [`refresh`](BinDirectory::refresh), or the built-in one
/// while none was imported. Lookups read an `Arc` under a short lock and
/// never wait for a refresh.
pub struct BinDirectory {
    builtin: Arc<BinTable>,
    in_use: RwLock<InUse>,
}

impl std::fmt::Debug for BinDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BinDirectory")
            .field("entries", &self.table().len())
            .field("version", &self.version())
            .finish()
    }
}

impl BinDirectory {
    /// A directory using `builtin` until a refresh finds an imported table.
    pub fn new(builtin: BinTable) -> BinDirectory {
        let builtin = Arc::new(builtin);
        BinDirectory {
            in_use: RwLock::new(InUse {
                table: builtin.clone(),
                version: None,
            }),
            builtin,
        }
    }

    /// The table in use.
    pub fn table(&self) -> Arc<BinTable> {
        self.in_use
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .table
            .clone()
    }

    /// The imported version in use; `None` while the built-in table is.
    pub fn version(&self) -> Option<BinTableVersion> {
        self.in_use
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .version
            .clone()
    }

    /// The most specific entry for this card (its whole number).
    pub fn lookup_card(&self, card: &CardNumber) -> Option<BinEntry> {
        self.table().lookup_card(card).cloned()
    }

    /// The most specific entry covering every number that starts with
    /// `digits` (a BIN).
    pub fn lookup(&self, digits: &str) -> Option<BinEntry> {
        self.table().lookup(digits).cloned()
    }

    /// Brings the table in use up to the store's active version: one small
    /// read when nothing changed, a full load when it did. On an error the
    /// table in use stays as it was.
    pub async fn refresh(&self, store: &dyn BinTableStore) -> Result<Refresh, StoreError> {
        let active = store.active_version().await?;
        let current = self.version();
        match (active, current) {
            (None, _) => {
                self.set(self.builtin.clone(), None);
                Ok(Refresh::BuiltIn)
            }
            (Some(a), Some(c)) if a.id == c.id => Ok(Refresh::Unchanged),
            (Some(_), _) => match store.load().await? {
                Some(stored) => {
                    let version = stored.version.clone();
                    self.set(Arc::new(stored.table), Some(version.clone()));
                    Ok(Refresh::Loaded(version))
                }
                None => {
                    self.set(self.builtin.clone(), None);
                    Ok(Refresh::BuiltIn)
                }
            },
        }
    }

    fn set(&self, table: Arc<BinTable>, version: Option<BinTableVersion>) {
        let mut in_use = self.in_use.write().unwrap_or_else(PoisonError::into_inner);
        *in_use = InUse { table, version };
    }
}

/// The contract suite of [`BinTableStore`]: every adapter runs
/// [`testkit::run_all`] on a fresh, empty store.
#[cfg(any(test, feature = "testkit"))]
pub mod testkit {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::collections::HashSet;
    use std::sync::Arc;

    use cardbind_domain::{BinEntry, BinTable, Timestamp};

    use super::{BinDirectory, BinTableStore, Refresh};

    /// A table of `n` entries: 6-digit BINs from `base` with varied data,
    /// and a nested 8-digit range inside the first.
    pub fn table(base: u32, n: usize) -> BinTable {
        let types = ["debit", "credit", "prepaid", ""];
        let countries = ["CN", "HK", "", "US"];
        let currencies = ["CNY", "", "HKD", "USD"];
        let mut entries: Vec<BinEntry> = (0..n)
            .map(|i| {
                let bin = format!("{:06}", base as usize + i);
                BinEntry::parse(
                    &bin,
                    "",
                    &format!("BANK{}", i % 7),
                    &format!("测试银行{}", i % 7),
                    &format!("Test Bank {}", i % 7),
                    types[i % 4],
                    countries[i % 4],
                    currencies[i % 4],
                )
                .unwrap()
            })
            .collect();
        if n > 0 {
            let inner = format!("{:06}00", base);
            entries.push(
                BinEntry::parse(
                    &inner,
                    &format!("{:06}49", base),
                    "INNER",
                    "内层银行",
                    "Inner Bank",
                    "debit",
                    "CN",
                    "CNY",
                )
                .unwrap(),
            );
        }
        BinTable::new(entries).unwrap()
    }

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_unix_millis(ms)
    }

    /// Runs every check on an empty store.
    pub async fn run_all(store: Arc<dyn BinTableStore>) {
        empty_store_has_no_table(store.as_ref()).await;
        replace_then_load_round_trips(store.as_ref()).await;
        a_large_table_round_trips(store.as_ref()).await;
        concurrent_replaces_leave_one_whole_table(store.clone()).await;
        the_directory_follows_the_store(store.as_ref()).await;
    }

    pub async fn empty_store_has_no_table(store: &dyn BinTableStore) {
        assert_eq!(store.active_version().await.unwrap(), None);
        assert_eq!(store.load().await.unwrap(), None);
    }

    pub async fn replace_then_load_round_trips(store: &dyn BinTableStore) {
        let t1 = table(622000, 20);
        let v1 = store.replace(&t1, at(1_000)).await.unwrap();
        assert_eq!(v1.entries, t1.len() as u64);
        assert_eq!(v1.imported_at, at(1_000));
        assert_eq!(store.active_version().await.unwrap().as_ref(), Some(&v1));
        let loaded = store.load().await.unwrap().unwrap();
        assert_eq!(loaded.version, v1);
        assert_eq!(loaded.table, t1);

        let t2 = table(625000, 3);
        let v2 = store.replace(&t2, at(2_000)).await.unwrap();
        assert_ne!(v2.id, v1.id, "versions are never reused");
        assert_eq!(store.active_version().await.unwrap().as_ref(), Some(&v2));
        let loaded = store.load().await.unwrap().unwrap();
        assert_eq!((loaded.version, loaded.table), (v2.clone(), t2.clone()));

        // The same table again is a new version.
        let v3 = store.replace(&t2, at(3_000)).await.unwrap();
        assert_ne!(v3.id, v2.id);
        assert_eq!(store.active_version().await.unwrap().as_ref(), Some(&v3));

        // An empty table is a table too.
        let v4 = store.replace(&BinTable::empty(), at(4_000)).await.unwrap();
        assert_eq!(v4.entries, 0);
        let loaded = store.load().await.unwrap().unwrap();
        assert!(loaded.table.is_empty());
        assert_eq!(loaded.version, v4);
    }

    /// More entries than an adapter is likely to keep in one record.
    pub async fn a_large_table_round_trips(store: &dyn BinTableStore) {
        let big = table(600000, 5_000);
        let v = store.replace(&big, at(5_000)).await.unwrap();
        let loaded = store.load().await.unwrap().unwrap();
        assert_eq!(loaded.version, v);
        assert_eq!(loaded.table.len(), big.len());
        assert_eq!(loaded.table, big);
    }

    pub async fn concurrent_replaces_leave_one_whole_table(store: Arc<dyn BinTableStore>) {
        let tables: Vec<BinTable> = (0..4)
            .map(|i| table(610000 + i * 1000, 50 + i as usize))
            .collect();
        let mut tasks = Vec::new();
        for (i, t) in tables.iter().cloned().enumerate() {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                s.replace(&t, at(10_000 + i as i64)).await.unwrap()
            }));
        }
        let mut ids = HashSet::new();
        for t in tasks {
            ids.insert(t.await.unwrap().id);
        }
        assert_eq!(ids.len(), 4, "each replace got its own version");
        let active = store.active_version().await.unwrap().unwrap();
        assert!(ids.contains(&active.id));
        let loaded = store.load().await.unwrap().unwrap();
        assert_eq!(loaded.version, active);
        assert!(
            tables.contains(&loaded.table),
            "the active table is one of those written, whole"
        );
        assert_eq!(loaded.table.len() as u64, active.entries);
    }

    pub async fn the_directory_follows_the_store(store: &dyn BinTableStore) {
        let builtin = table(400000, 2);
        let dir = BinDirectory::new(builtin.clone());
        // The store has a table by now (earlier checks): it replaces the
        // built-in one.
        let active = store.active_version().await.unwrap().unwrap();
        assert_eq!(
            dir.refresh(store).await.unwrap(),
            Refresh::Loaded(active.clone())
        );
        assert_eq!(dir.version(), Some(active));
        assert_eq!(dir.refresh(store).await.unwrap(), Refresh::Unchanged);
        let next = table(626000, 4);
        let v = store.replace(&next, at(20_000)).await.unwrap();
        assert_eq!(dir.refresh(store).await.unwrap(), Refresh::Loaded(v));
        assert_eq!(*dir.table(), next);
        assert_eq!(
            dir.lookup("62600000")
                .map(|e| e.info.issuer.code().as_str().to_owned()),
            Some("INNER".to_owned())
        );
        assert!(
            dir.lookup("400000").is_none(),
            "the built-in table is no longer used"
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// A store that answers from fixed values and counts loads.
    struct Fixed {
        table: Option<StoredBinTable>,
        loads: std::sync::atomic::AtomicUsize,
    }

    #[async_trait]
    impl BinTableStore for Fixed {
        async fn active_version(&self) -> Result<Option<BinTableVersion>, StoreError> {
            Ok(self.table.as_ref().map(|t| t.version.clone()))
        }
        async fn load(&self) -> Result<Option<StoredBinTable>, StoreError> {
            self.loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(self.table.clone())
        }
        async fn replace(&self, _: &BinTable, _: Timestamp) -> Result<BinTableVersion, StoreError> {
            Err(StoreError::Unavailable("read-only".into()))
        }
    }

    #[tokio::test]
    async fn the_directory_uses_the_built_in_table_until_one_is_imported_and_loads_only_new_versions(
    ) {
        let builtin = testkit::table(400000, 2);
        let dir = BinDirectory::new(builtin.clone());
        let none = Fixed {
            table: None,
            loads: Default::default(),
        };
        assert_eq!(dir.refresh(&none).await.unwrap(), Refresh::BuiltIn);
        assert_eq!(*dir.table(), builtin);
        assert!(dir.lookup("400000").is_some());

        let version = BinTableVersion {
            id: "v1".into(),
            imported_at: Timestamp::from_unix_millis(1),
            entries: 3,
        };
        let some = Fixed {
            table: Some(StoredBinTable {
                version: version.clone(),
                table: testkit::table(622000, 3),
            }),
            loads: Default::default(),
        };
        assert_eq!(
            dir.refresh(&some).await.unwrap(),
            Refresh::Loaded(version.clone())
        );
        assert_eq!(dir.refresh(&some).await.unwrap(), Refresh::Unchanged);
        assert_eq!(dir.refresh(&some).await.unwrap(), Refresh::Unchanged);
        assert_eq!(
            some.loads.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "an unchanged version is not loaded again"
        );
        assert!(dir.lookup("400000").is_none());
        assert!(dir.lookup("622001").is_some());
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_the_table_in_use() {
        let mut store = MockBinTableStore::new();
        store
            .expect_active_version()
            .returning(|| Err(StoreError::Unavailable("down".into())));
        let builtin = testkit::table(400000, 2);
        let dir = BinDirectory::new(builtin.clone());
        assert!(dir.refresh(&store).await.is_err());
        assert_eq!(*dir.table(), builtin);
    }
}
