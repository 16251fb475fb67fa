//! Sealed card data per (binding, generation), and channel references.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use cardbind_domain::{BindingId, ChannelName, UserId};
use cardbind_ports::store::{
    CardData, CardDataKey, CardDataStore, ChannelRefEntry, ChannelRefs, RefTarget,
};
use cardbind_ports::StoreError;

use crate::{lock, MemoryStore};

/// Generations of each binding's data, in binding order (the sweep walks
/// it).
#[derive(Default)]
pub(crate) struct Table(BTreeMap<BindingId, BTreeMap<u32, CardData>>);

/// (channel, reference) → target and the generation of the bind that
/// recorded it, in (channel, reference) order (the sweep walks it), and
/// each binding's references.
#[derive(Default)]
pub(crate) struct Refs {
    by_ref: BTreeMap<(ChannelName, String), (RefTarget, u32)>,
    by_binding: HashMap<BindingId, std::collections::BTreeSet<(ChannelName, String)>>,
}

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

    async fn list_keys(
        &self,
        after: Option<(BindingId, u32)>,
        limit: u32,
    ) -> Result<Vec<CardDataKey>, StoreError> {
        use std::ops::Bound;
        self.check_available()?;
        let t = lock(&self.inner.card_data);
        let from = match &after {
            Some((b, _)) => Bound::Included(b),
            None => Bound::Unbounded,
        };
        Ok(t.0
            .range::<BindingId, _>((from, Bound::Unbounded))
            .flat_map(|(b, gens)| gens.iter().map(move |(g, d)| (b, *g, d)))
            .filter(|(b, g, _)| after.as_ref().is_none_or(|(ab, ag)| (*b, *g) > (ab, *ag)))
            .take(limit as usize)
            .map(|(b, g, d)| CardDataKey {
                binding: b.clone(),
                generation: g,
                user: d.user.clone(),
            })
            .collect())
    }
}

#[async_trait]
impl ChannelRefs for MemoryStore {
    async fn put(
        &self,
        channel: &ChannelName,
        channel_ref: &str,
        target: &RefTarget,
        generation: u32,
    ) -> Result<bool, StoreError> {
        self.check_available()?;
        let mut refs = lock(&self.inner.channel_refs);
        let key = (channel.clone(), channel_ref.to_owned());
        Ok(match refs.by_ref.get_mut(&key) {
            // The same binding's reference, given again by another bind.
            Some((t, g)) if t == target => {
                *g = generation;
                true
            }
            Some(_) => false,
            None => {
                refs.by_binding
                    .entry(target.binding.clone())
                    .or_default()
                    .insert(key.clone());
                refs.by_ref.insert(key, (target.clone(), generation));
                true
            }
        })
    }

    async fn find_entry(
        &self,
        channel: &ChannelName,
        channel_ref: &str,
    ) -> Result<Option<ChannelRefEntry>, StoreError> {
        self.check_available()?;
        Ok(lock(&self.inner.channel_refs)
            .by_ref
            .get(&(channel.clone(), channel_ref.to_owned()))
            .map(|(t, g)| ChannelRefEntry {
                channel: channel.clone(),
                channel_ref: channel_ref.to_owned(),
                target: t.clone(),
                generation: Some(*g),
            }))
    }

    async fn delete_binding(
        &self,
        user: &UserId,
        binding: &BindingId,
        generation: Option<u32>,
    ) -> Result<u64, StoreError> {
        self.check_available()?;
        let mut refs = lock(&self.inner.channel_refs);
        let Some(keys) = refs.by_binding.remove(binding) else {
            return Ok(0);
        };
        let mut deleted = 0;
        let mut kept = std::collections::BTreeSet::new();
        for key in keys {
            let of_it = refs
                .by_ref
                .get(&key)
                .is_some_and(|(t, g)| &t.user == user && generation.is_none_or(|want| *g == want));
            if of_it {
                refs.by_ref.remove(&key);
                deleted += 1;
            } else {
                kept.insert(key);
            }
        }
        if !kept.is_empty() {
            refs.by_binding.insert(binding.clone(), kept);
        }
        Ok(deleted)
    }

    async fn list(
        &self,
        after: Option<(ChannelName, String)>,
        limit: u32,
    ) -> Result<Vec<ChannelRefEntry>, StoreError> {
        use std::ops::Bound;
        self.check_available()?;
        let refs = lock(&self.inner.channel_refs);
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(refs
            .by_ref
            .range((from, Bound::Unbounded))
            .take(limit as usize)
            .map(|((c, r), (t, g))| ChannelRefEntry {
                channel: c.clone(),
                channel_ref: r.clone(),
                target: t.clone(),
                generation: Some(*g),
            })
            .collect())
    }

    async fn delete_entry(&self, entry: &ChannelRefEntry) -> Result<u64, StoreError> {
        self.check_available()?;
        let mut refs = lock(&self.inner.channel_refs);
        let key = (entry.channel.clone(), entry.channel_ref.clone());
        let same = refs
            .by_ref
            .get(&key)
            .is_some_and(|(t, g)| *t == entry.target && Some(*g) == entry.generation);
        if !same {
            return Ok(0);
        }
        refs.remove(&key);
        Ok(1)
    }
}

impl Refs {
    fn remove(&mut self, key: &(ChannelName, String)) {
        if let Some((t, _)) = self.by_ref.remove(key) {
            if let Some(keys) = self.by_binding.get_mut(&t.binding) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_binding.remove(&t.binding);
                }
            }
        }
    }
}
