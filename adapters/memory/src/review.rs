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
        let mut t = lock(&self.inner.review);
        match t.0.get(&entry.binding) {
            Some(e) if e.link >= entry.link => {}
            _ => {
                t.0.insert(entry.binding.clone(), entry.clone());
            }
        }
        Ok(())
    }

    async fn get(&self, binding: &BindingId) -> Result<Option<ReviewEntry>, StoreError> {
        self.check_available()?;
        Ok(lock(&self.inner.review).0.get(binding).cloned())
    }

    async fn remove(&self, binding: &BindingId, upto: u64) -> Result<(), StoreError> {
        self.check_available()?;
        let mut t = lock(&self.inner.review);
        if t.0.get(binding).is_some_and(|e| e.link <= upto) {
            t.0.remove(binding);
        }
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
