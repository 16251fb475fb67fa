//! A bounded cache of plaintext data keys, in the spirit of the AWS
//! Encryption SDK's caching materials manager: an entry is used at most
//! `max_uses` times and for at most `max_age`, and at most `max_entries`
//! owners are held (least recently used leave first).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::datakey::DataKey;

/// Limits of the data-key cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// `false`: every seal and open unwraps the data key again (one master
    /// key call each).
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

/// An owner's plaintext data key and its generation (creation instant).
#[derive(Debug)]
pub(crate) struct OwnerKey {
    pub key: DataKey,
    pub generation: i64,
}

struct Entry {
    key: Arc<OwnerKey>,
    loaded: Instant,
    uses: u64,
    last_used: u64,
}

struct Inner {
    map: HashMap<String, Entry>,
    tick: u64,
    /// Bumped by every eviction of an owner: a key loaded before an erasure
    /// must not be cached after it.
    epoch: u64,
}

pub(crate) struct KeyCache {
    cfg: CacheConfig,
    inner: Mutex<Inner>,
}

impl KeyCache {
    pub fn new(cfg: CacheConfig) -> KeyCache {
        KeyCache {
            cfg,
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                tick: 0,
                epoch: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere cannot leave the map half-updated in a way that
        // matters (entries are whole); keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn usable(&self, e: &Entry, now: Instant) -> bool {
        e.uses < self.cfg.max_uses && now.duration_since(e.loaded) < self.cfg.max_age
    }

    /// The cached key of `owner`, counting one use.
    pub fn get(&self, owner: &str) -> Option<Arc<OwnerKey>> {
        if !self.cfg.enabled {
            return None;
        }
        let now = Instant::now();
        let mut g = self.lock();
        g.tick += 1;
        let tick = g.tick;
        let usable = match g.map.get(owner) {
            None => return None,
            Some(e) => self.usable(e, now),
        };
        if !usable {
            g.map.remove(owner);
            return None;
        }
        let e = g.map.get_mut(owner)?;
        e.uses += 1;
        e.last_used = tick;
        Some(e.key.clone())
    }

    /// The epoch to pass to [`insert`](Self::insert) for a key about to be
    /// loaded.
    pub fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// Caches `key` for `owner` (counting the use its loader makes of it),
    /// unless an eviction happened since `epoch`.
    pub fn insert(&self, owner: &str, key: Arc<OwnerKey>, epoch: u64) {
        if !self.cfg.enabled || self.cfg.max_entries == 0 || self.cfg.max_uses <= 1 {
            return;
        }
        let now = Instant::now();
        let mut g = self.lock();
        if g.epoch != epoch {
            return;
        }
        if !g.map.contains_key(owner) && g.map.len() >= self.cfg.max_entries {
            g.map.retain(|_, e| self.usable(e, now));
            if g.map.len() >= self.cfg.max_entries {
                let lru = g
                    .map
                    .iter()
                    .min_by_key(|(_, e)| e.last_used)
                    .map(|(k, _)| k.clone());
                if let Some(k) = lru {
                    g.map.remove(&k);
                }
            }
        }
        g.tick += 1;
        let tick = g.tick;
        g.map.insert(
            owner.to_owned(),
            Entry {
                key,
                loaded: now,
                uses: 1,
                last_used: tick,
            },
        );
    }

    /// Drops `owner`'s entry, and stops in-flight loads from caching.
    pub fn evict(&self, owner: &str) {
        let mut g = self.lock();
        g.epoch += 1;
        g.map.remove(owner);
    }

    pub fn len(&self) -> usize {
        self.lock().map.len()
    }
}
