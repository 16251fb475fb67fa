//! A bounded cache of plaintext per-owner data keys, in the spirit of the
//! AWS Encryption SDK's caching materials manager: an entry is used at most
//! `max_uses` times and for at most `max_age`, and at most `max_entries`
//! owners are held (least recently used leave first, as moka orders them:
//! it records accesses in batches, so the order is approximate under
//! concurrent use).
//!
//! It saves a store read and a local unwrap per seal or open of a known
//! owner; it no longer saves master key calls (per-owner keys are wrapped
//! under a branch key, see [`crate::branch`]).
//!
//! The map is a [`moka::sync::Cache`]: every operation is O(1) (the former
//! hand-written map scanned every entry to evict one, which showed up in
//! profiles), expired entries are dropped by the cache itself, so their key
//! bytes are wiped on drop rather than lingering until the map is full, and
//! reads take no global lock. It is configured with the LRU policy rather
//! than moka's default TinyLFU admission: with TinyLFU a full cache may
//! refuse the key of a new user, so the three further seals of that user's
//! bind would each miss.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moka::policy::EvictionPolicy;

use crate::datakey::DataKey;

/// Limits of the data-key cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// `false`: every seal and open reads and unwraps the owner's key again.
    pub enabled: bool,
    /// An entry is dropped this long after it was unwrapped. This also
    /// bounds how long *another* instance may keep opening an owner's data
    /// after `erase_owner` ran elsewhere.
    pub max_age: Duration,
    /// An entry is dropped after serving this many seals/opens.
    pub max_uses: u64,
    /// At most this many owners' keys are held.
    pub max_entries: usize,
}

impl Default for CacheConfig {
    fn default() -> CacheConfig {
        CacheConfig {
            enabled: true,
            max_age: Duration::from_secs(300),
            max_uses: 10_000,
            max_entries: 10_000,
        }
    }
}

impl CacheConfig {
    /// No caching at all.
    pub fn disabled() -> CacheConfig {
        CacheConfig {
            enabled: false,
            ..CacheConfig::default()
        }
    }
}

/// An owner's plaintext data key, its generation (creation instant) and
/// the wrapped form it was read from or stored as (which tells it from
/// another key of the owner made in the same millisecond).
#[derive(Debug)]
pub(crate) struct OwnerKey {
    pub key: DataKey,
    pub generation: i64,
    pub wrapped: Vec<u8>,
}

struct Entry {
    key: Arc<OwnerKey>,
    uses: AtomicU64,
}

pub(crate) struct KeyCache {
    max_uses: u64,
    /// `None` when caching is off.
    map: Option<moka::sync::Cache<String, Arc<Entry>>>,
    /// Bumped by every eviction of an owner whose name falls in the slot:
    /// a key loaded before an erasure must not stay cached after it. One
    /// counter per slot, not one for all: the readiness probe evicts the
    /// canary's key at every call, and a single counter made every key
    /// load in flight meanwhile, of any owner, uncacheable.
    epochs: [AtomicU64; EPOCH_SLOTS],
}

/// Slots of eviction counters (owners are spread over them by a hash).
const EPOCH_SLOTS: usize = 64;

fn slot(owner: &str) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    owner.hash(&mut h);
    (h.finish() % EPOCH_SLOTS as u64) as usize
}

impl KeyCache {
    pub fn new(cfg: &CacheConfig) -> KeyCache {
        let on = cfg.enabled && cfg.max_entries > 0 && cfg.max_uses > 1 && !cfg.max_age.is_zero();
        let map = on.then(|| {
            moka::sync::Cache::builder()
                .max_capacity(u64::try_from(cfg.max_entries).unwrap_or(u64::MAX))
                .time_to_live(cfg.max_age)
                .eviction_policy(EvictionPolicy::lru())
                .build()
        });
        KeyCache {
            max_uses: cfg.max_uses,
            map,
            epochs: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// The cached key of `owner`, counting one use.
    pub fn get(&self, owner: &str) -> Option<Arc<OwnerKey>> {
        let map = self.map.as_ref()?;
        let entry = map.get(owner)?;
        if entry.uses.fetch_add(1, Ordering::Relaxed) >= self.max_uses {
            map.invalidate(owner);
            return None;
        }
        Some(entry.key.clone())
    }

    /// The epoch to pass to [`insert`](Self::insert) for `owner`'s key
    /// about to be loaded.
    pub fn epoch(&self, owner: &str) -> u64 {
        self.epochs[slot(owner)].load(Ordering::SeqCst)
    }

    /// Caches `key` for `owner` (counting the use its loader makes of it),
    /// unless an eviction happened since `epoch`.
    pub fn insert(&self, owner: &str, key: Arc<OwnerKey>, epoch: u64) {
        let Some(map) = &self.map else { return };
        map.insert(
            owner.to_owned(),
            Arc::new(Entry {
                key,
                uses: AtomicU64::new(1),
            }),
        );
        // Checked after the insert: an eviction that bumped the epoch before
        // this read is undone here; one that bumps it after this read comes
        // after the insert, and its own removal drops the entry.
        if self.epoch(owner) != epoch {
            map.invalidate(owner);
        }
    }

    /// Drops `owner`'s entry, and stops in-flight loads from caching.
    pub fn evict(&self, owner: &str) {
        self.epochs[slot(owner)].fetch_add(1, Ordering::SeqCst);
        if let Some(map) = &self.map {
            map.invalidate(owner);
        }
    }

    /// Entries held now (after the cache's pending evictions have run).
    pub fn len(&self) -> usize {
        self.map.as_ref().map_or(0, |m| {
            m.run_pending_tasks();
            usize::try_from(m.entry_count()).unwrap_or(usize::MAX)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn key(generation: i64) -> Arc<OwnerKey> {
        Arc::new(OwnerKey {
            key: DataKey::generate(),
            generation,
            wrapped: Vec::new(),
        })
    }

    fn cache(max_entries: usize, max_uses: u64, max_age: Duration) -> KeyCache {
        KeyCache::new(&CacheConfig {
            enabled: true,
            max_age,
            max_uses,
            max_entries,
        })
    }

    #[test]
    fn least_recently_used_leaves_first_and_the_bound_holds() {
        let c = cache(3, 100, Duration::from_secs(60));
        for (i, o) in ["a", "b", "c"].iter().enumerate() {
            c.insert(o, key(i as i64), c.epoch(o));
        }
        // moka applies recency in batches (`len` runs the pending ones):
        // the order is exact here, approximate under concurrent use.
        assert_eq!(c.len(), 3);
        assert!(c.get("a").is_some(), "a is now the most recently used");
        c.insert("d", key(3), c.epoch("d"));
        assert_eq!(c.len(), 3);
        assert!(c.get("b").is_none(), "b was the least recently used");
        for o in ["a", "c", "d"] {
            assert!(c.get(o).is_some(), "{o} kept");
        }
        // Many more owners than entries: the bound holds.
        for i in 0..1000 {
            c.insert(&format!("o{i}"), key(i), c.epoch(&format!("o{i}")));
        }
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn an_entry_serves_max_uses_then_is_dropped() {
        let c = cache(10, 3, Duration::from_secs(60));
        c.insert("a", key(7), c.epoch("a"));
        assert_eq!(c.get("a").map(|k| k.generation), Some(7));
        assert!(c.get("a").is_some());
        assert!(c.get("a").is_none(), "the loader's use and two gets make 3");
        assert!(c.get("a").is_none(), "and it is gone");
    }

    #[test]
    fn an_entry_expires_after_max_age() {
        let c = cache(10, 100, Duration::from_millis(1000));
        c.insert("a", key(1), c.epoch("a"));
        assert!(c.get("a").is_some());
        std::thread::sleep(Duration::from_millis(1100));
        assert!(c.get("a").is_none());
    }

    #[test]
    fn a_load_that_raced_an_eviction_is_not_cached() {
        let c = cache(10, 100, Duration::from_secs(60));
        let epoch = c.epoch("a");
        c.evict("a"); // erase_owner ran while the key was being loaded
        c.insert("a", key(1), epoch);
        assert!(c.get("a").is_none());
        c.insert("a", key(2), c.epoch("a"));
        assert_eq!(c.get("a").map(|k| k.generation), Some(2));
        c.evict("a");
        assert!(c.get("a").is_none());
    }

    /// An eviction of one owner (the readiness probe's canary, at every
    /// probe) leaves the loads of other owners in flight cacheable, except
    /// the few that share its slot.
    #[test]
    fn evicting_one_owner_leaves_other_owners_loads_cacheable() {
        let c = cache(1000, 100, Duration::from_secs(60));
        let owners: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
        let epochs: Vec<u64> = owners.iter().map(|o| c.epoch(o)).collect();
        c.evict("@canary");
        for (i, (o, e)) in owners.iter().zip(&epochs).enumerate() {
            c.insert(o, key(i as i64), *e);
        }
        let cached = owners.iter().filter(|o| c.get(o).is_some()).count();
        assert!(cached >= 180, "{cached} of 200 cached");
        // The evicted owner's own in-flight load is still dropped.
        let e = c.epoch("@canary");
        c.evict("@canary");
        c.insert("@canary", key(9), e);
        assert!(c.get("@canary").is_none());
    }

    #[test]
    fn disabled_or_degenerate_limits_cache_nothing() {
        for cfg in [
            CacheConfig::disabled(),
            CacheConfig {
                max_entries: 0,
                ..CacheConfig::default()
            },
            CacheConfig {
                max_uses: 1,
                ..CacheConfig::default()
            },
            CacheConfig {
                max_age: Duration::ZERO,
                ..CacheConfig::default()
            },
        ] {
            let c = KeyCache::new(&cfg);
            c.insert("a", key(1), c.epoch("a"));
            assert!(c.get("a").is_none(), "{cfg:?}");
            assert_eq!(c.len(), 0);
        }
    }
}
