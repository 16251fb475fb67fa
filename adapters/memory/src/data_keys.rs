//! Wrapped data keys, one per owner.

use std::collections::BTreeMap;

use async_trait::async_trait;
use cardbind_ports::store::{DataKeyStore, WrappedKey};
use cardbind_ports::StoreError;

use crate::{lock, take_limit, MemoryStore};

/// Keys by owner (ordered: listings are by owner ascending).
#[derive(Default)]
pub(crate) struct Table(BTreeMap<String, WrappedKey>);

#[async_trait]
impl DataKeyStore for MemoryStore {
    async fn get(&self, owner: &str) -> Result<Option<WrappedKey>, StoreError> {
        self.check_available()?;
        Ok(lock(&self.inner.data_keys).0.get(owner).cloned())
    }

    async fn put_if_absent(&self, key: &WrappedKey) -> Result<WrappedKey, StoreError> {
        self.check_available()?;
        let mut t = lock(&self.inner.data_keys);
        Ok(t.0
            .entry(key.owner.clone())
            .or_insert_with(|| key.clone())
            .clone())
    }

    async fn replace(&self, key: &WrappedKey, expected_version: u64) -> Result<(), StoreError> {
        self.check_available()?;
        let mut t = lock(&self.inner.data_keys);
        match t.0.get_mut(&key.owner) {
            Some(stored)
                if stored.version == expected_version && stored.created_at == key.created_at =>
            {
                *stored = key.clone();
                Ok(())
            }
            _ => Err(StoreError::Conflict),
        }
    }

    async fn delete(&self, owner: &str) -> Result<bool, StoreError> {
        self.check_available()?;
        Ok(lock(&self.inner.data_keys).0.remove(owner).is_some())
    }

    async fn list(&self, after: Option<String>, limit: u32) -> Result<Vec<WrappedKey>, StoreError> {
        self.check_available()?;
        let t = lock(&self.inner.data_keys);
        let start = match &after {
            Some(a) => std::ops::Bound::Excluded(a.as_str()),
            None => std::ops::Bound::Unbounded,
        };
        Ok(t.0
            .range::<str, _>((start, std::ops::Bound::Unbounded))
            .map(|(_, k)| k.clone())
            .take(take_limit(limit))
            .collect())
    }
}
