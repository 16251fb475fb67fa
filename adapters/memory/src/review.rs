//! The review queue index.

use std::collections::BTreeMap;
use std::ops::Bound;

use async_trait::async_trait;
use cardbind_domain::BindingId;
use cardbind_ports::store::{ReviewEntry, ReviewQueue};
use cardbind_ports::StoreError;

use crate::{lock, take_limit, MemoryStore};

#[derive(Default)]
pub(crate) struct Table(BTreeMap<BindingId, ReviewEntry>);

#[async_trait]
impl ReviewQueue for MemoryStore {
    async fn add(&self, entry: &ReviewEntry) -> Result<(), StoreError> {
        self.check_available()?;
        lock(&self.inner.review)
            .0
            .entry(entry.binding.clone())
            .or_insert_with(|| entry.clone());
        Ok(())
    }

    async fn get(&self, binding: &BindingId) -> Result<Option<ReviewEntry>, StoreError> {
        self.check_available()?;
        Ok(lock(&self.inner.review).0.get(binding).cloned())
    }

    async fn remove(&self, binding: &BindingId) -> Result<(), StoreError> {
        self.check_available()?;
        lock(&self.inner.review).0.remove(binding);
        Ok(())
    }

    async fn list(
        &self,
        after: Option<BindingId>,
        limit: u32,
    ) -> Result<Vec<ReviewEntry>, StoreError> {
        self.check_available()?;
        let t = lock(&self.inner.review);
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(t.0
            .range((from, Bound::Unbounded))
            .take(take_limit(limit))
            .map(|(_, e)| e.clone())
            .collect())
    }
}
