//! [`BinTableStore`] in memory: the imported table of one process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use cardbind_domain::{BinTable, Timestamp};
use cardbind_ports::bins::{BinTableStore, BinTableVersion, StoredBinTable};
use cardbind_ports::StoreError;

/// The imported BIN table, in memory. One lock around the whole table makes
/// `replace` atomic; a restart forgets the import (the service then uses
/// its built-in table again).
#[derive(Debug, Default)]
pub struct MemoryBinTableStore {
    active: Mutex<Option<StoredBinTable>>,
    next_version: AtomicU64,
}

impl MemoryBinTableStore {
    pub fn new() -> MemoryBinTableStore {
        MemoryBinTableStore::default()
    }
}

#[async_trait]
impl BinTableStore for MemoryBinTableStore {
    async fn active_version(&self) -> Result<Option<BinTableVersion>, StoreError> {
        let active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(active.as_ref().map(|t| t.version.clone()))
    }

    async fn load(&self) -> Result<Option<StoredBinTable>, StoreError> {
        let active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(active.clone())
    }

    async fn replace(
        &self,
        table: &BinTable,
        imported_at: Timestamp,
    ) -> Result<BinTableVersion, StoreError> {
        let n = self.next_version.fetch_add(1, Ordering::SeqCst) + 1;
        let version = BinTableVersion {
            id: format!("memory-{n}"),
            imported_at,
            entries: table.len() as u64,
        };
        let stored = StoredBinTable {
            version: version.clone(),
            table: table.clone(),
        };
        *self.active.lock().unwrap_or_else(PoisonError::into_inner) = Some(stored);
        Ok(version)
    }
}
