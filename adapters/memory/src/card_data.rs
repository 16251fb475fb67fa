//! Sealed card data per (binding, generation), and channel references.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use cardbind_domain::{BindingId, ChannelName, UserId};
use cardbind_ports::store::{CardData, CardDataStore, ChannelRefs, RefTarget};
use cardbind_ports::StoreError;

use crate::{lock, MemoryStore};

/// Generations of each binding's data.
#[derive(Default)]
pub(crate) struct Table(HashMap<BindingId, BTreeMap<u32, CardData>>);

/// (channel, reference) → target.
#[derive(Default)]
pub(crate) struct Refs(HashMap<(ChannelName, String), RefTarget>);

#[async_trait]
impl CardDataStore for MemoryStore {
    async fn put(&self, data: &CardData) -> Result<(), StoreError> {
        self.check_available()?;
        let mut t = lock(&self.inner.card_data);
        let gens = t.0.entry(data.binding.clone()).or_default();
        if gens.contains_key(&data.generation) {
            return Err(StoreError::Duplicate);
        }
        gens.insert(data.generation, data.clone());
        Ok(())
    }

    async fn get(
        &self,
        user: &UserId,
        binding: &BindingId,
        generation: u32,
    ) -> Result<Option<CardData>, StoreError> {
        self.check_available()?;
        let t = lock(&self.inner.card_data);
        Ok(t.0
            .get(binding)
            .and_then(|g| g.get(&generation))
            .filter(|d| &d.user == user)
            .cloned())
    }

    async fn owner(&self, binding: &BindingId) -> Result<Option<UserId>, StoreError> {
        self.check_available()?;
        let t = lock(&self.inner.card_data);
        Ok(t.0
            .get(binding)
            .and_then(|g| g.values().next())
            .map(|d| d.user.clone()))
    }

    async fn delete(
        &self,
        user: &UserId,
        binding: &BindingId,
        keep: Option<u32>,
    ) -> Result<u64, StoreError> {
        self.check_available()?;
        let mut t = lock(&self.inner.card_data);
        let Some(gens) = t.0.get_mut(binding) else {
            return Ok(0);
        };
        let before = gens.len();
        gens.retain(|g, d| Some(*g) == keep || &d.user != user);
        let n = (before - gens.len()) as u64;
        if gens.is_empty() {
            t.0.remove(binding);
        }
        Ok(n)
    }

    async fn delete_generation(
        &self,
        user: &UserId,
        binding: &BindingId,
        generation: u32,
    ) -> Result<u64, StoreError> {
        self.check_available()?;
        let mut t = lock(&self.inner.card_data);
        let Some(gens) = t.0.get_mut(binding) else {
            return Ok(0);
        };
        let n = match gens.get(&generation) {
            Some(d) if &d.user == user => gens.remove(&generation).map_or(0, |_| 1),
            _ => 0,
        };
        if gens.is_empty() {
            t.0.remove(binding);
        }
        Ok(n)
    }
}

#[async_trait]
impl ChannelRefs for MemoryStore {
    async fn put(
        &self,
        channel: &ChannelName,
        channel_ref: &str,
        target: &RefTarget,
    ) -> Result<(), StoreError> {
        self.check_available()?;
        lock(&self.inner.channel_refs)
            .0
            .entry((channel.clone(), channel_ref.to_owned()))
            .or_insert_with(|| target.clone());
        Ok(())
    }

    async fn find(
        &self,
        channel: &ChannelName,
        channel_ref: &str,
    ) -> Result<Option<RefTarget>, StoreError> {
        self.check_available()?;
        Ok(lock(&self.inner.channel_refs)
            .0
            .get(&(channel.clone(), channel_ref.to_owned()))
            .cloned())
    }

    async fn delete(&self, channel: &ChannelName, channel_ref: &str) -> Result<(), StoreError> {
        self.check_available()?;
        lock(&self.inner.channel_refs)
            .0
            .remove(&(channel.clone(), channel_ref.to_owned()));
        Ok(())
    }
}
