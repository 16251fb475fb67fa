//! Binding records, their unique (user, fingerprint) rule and the default
//! pointers.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use async_trait::async_trait;
use cardbind_domain::{
    Binding, BindingId, BindingStatus, ChannelName, Fingerprint, Timestamp, UserId,
};
use cardbind_ports::store::BindingStore;
use cardbind_ports::StoreError;

use crate::{lock, take_limit, MemoryStore};

#[derive(Default)]
pub(crate) struct Table {
    /// Records by id (ordered: listings are by id ascending).
    by_id: BTreeMap<BindingId, Binding>,
    /// The unique rule: one record per (user, card), in any status.
    by_card: HashMap<(UserId, Fingerprint), BindingId>,
    by_user: HashMap<UserId, BTreeSet<BindingId>>,
    defaults: HashMap<UserId, BindingId>,
}

impl Table {
    fn insert(&mut self, b: &Binding) -> Result<(), StoreError> {
        let card = (b.user_id.clone(), b.fingerprint.clone());
        if self.by_id.contains_key(&b.id) || self.by_card.contains_key(&card) {
            return Err(StoreError::Duplicate);
        }
        self.by_card.insert(card, b.id.clone());
        self.by_user
            .entry(b.user_id.clone())
            .or_default()
            .insert(b.id.clone());
        self.by_id.insert(b.id.clone(), b.clone());
        Ok(())
    }

    fn update(&mut self, b: &Binding, expected_version: u64) -> Result<(), StoreError> {
        let Some(stored) = self.by_id.get(&b.id) else {
            return Err(StoreError::Conflict);
        };
        if stored.version != expected_version {
            return Err(StoreError::Conflict);
        }
        let old_card = (stored.user_id.clone(), stored.fingerprint.clone());
        let new_card = (b.user_id.clone(), b.fingerprint.clone());
        if old_card != new_card {
            // The record moves to another (user, card) slot: the unique rule
            // still holds, as a unique index would enforce it.
            if self.by_card.contains_key(&new_card) {
                return Err(StoreError::Duplicate);
            }
            self.by_card.remove(&old_card);
            self.by_card.insert(new_card, b.id.clone());
            if old_card.0 != b.user_id {
                if let Some(ids) = self.by_user.get_mut(&old_card.0) {
                    ids.remove(&b.id);
                }
                self.by_user
                    .entry(b.user_id.clone())
                    .or_default()
                    .insert(b.id.clone());
            }
        }
        self.by_id.insert(b.id.clone(), b.clone());
        Ok(())
    }
}

#[async_trait]
impl BindingStore for MemoryStore {
    async fn insert(&self, binding: &Binding) -> Result<(), StoreError> {
        self.check_available()?;
        lock(&self.inner.bindings).insert(binding)
    }

    async fn update(&self, binding: &Binding, expected_version: u64) -> Result<(), StoreError> {
        self.check_available()?;
        lock(&self.inner.bindings).update(binding, expected_version)
    }

    async fn get(&self, id: &BindingId) -> Result<Option<Binding>, StoreError> {
        self.check_available()?;
        Ok(lock(&self.inner.bindings).by_id.get(id).cloned())
    }

    async fn find_by_fingerprint(
        &self,
        user: &UserId,
        fingerprint: &Fingerprint,
    ) -> Result<Option<Binding>, StoreError> {
        self.check_available()?;
        let t = lock(&self.inner.bindings);
        let card = (user.clone(), fingerprint.clone());
        Ok(t.by_card.get(&card).and_then(|id| t.by_id.get(id)).cloned())
    }

    async fn find_by_channel_ref(
        &self,
        channel: &ChannelName,
        channel_ref: &str,
    ) -> Result<Option<Binding>, StoreError> {
        self.check_available()?;
        let t = lock(&self.inner.bindings);
        // A scan: channel references arrive with notifications, rarely. The
        // lowest id wins should two records ever share a reference.
        Ok(t.by_id
            .values()
            .find(|b| &b.channel == channel && b.channel_ref.as_deref() == Some(channel_ref))
            .cloned())
    }

    async fn list_by_user(
        &self,
        user: &UserId,
        after: Option<BindingId>,
        limit: u32,
    ) -> Result<Vec<Binding>, StoreError> {
        self.check_available()?;
        let t = lock(&self.inner.bindings);
        let Some(ids) = t.by_user.get(user) else {
            return Ok(Vec::new());
        };
        Ok(ids
            .iter()
            .filter(|id| after.as_ref().is_none_or(|a| *id > a))
            .filter_map(|id| t.by_id.get(id))
            .take(take_limit(limit))
            .cloned()
            .collect())
    }

    async fn list_by_status(
        &self,
        status: BindingStatus,
        updated_before: Option<Timestamp>,
        after: Option<BindingId>,
        limit: u32,
    ) -> Result<Vec<Binding>, StoreError> {
        self.check_available()?;
        let t = lock(&self.inner.bindings);
        let start = match &after {
            Some(a) => std::ops::Bound::Excluded(a),
            None => std::ops::Bound::Unbounded,
        };
        Ok(t.by_id
            .range((start, std::ops::Bound::Unbounded))
            .map(|(_, b)| b)
            .filter(|b| b.status == status)
            .filter(|b| updated_before.is_none_or(|t| b.updated_at < t))
            .take(take_limit(limit))
            .cloned()
            .collect())
    }

    async fn get_default(&self, user: &UserId) -> Result<Option<BindingId>, StoreError> {
        self.check_available()?;
        Ok(lock(&self.inner.bindings).defaults.get(user).cloned())
    }

    async fn replace_default(
        &self,
        user: &UserId,
        expected: Option<BindingId>,
        new: Option<BindingId>,
    ) -> Result<bool, StoreError> {
        self.check_available()?;
        let mut t = lock(&self.inner.bindings);
        if t.defaults.get(user) != expected.as_ref() {
            return Ok(false);
        }
        match new {
            Some(id) => t.defaults.insert(user.clone(), id),
            None => t.defaults.remove(user),
        };
        Ok(true)
    }
}
