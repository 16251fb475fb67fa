//! # cardbind-memory
//!
//! Every storage port of `cardbind-ports` in memory, on one
//! [`MemoryStore`]: the reference adapter of the contract suite
//! (`cardbind_ports::testkit`), which the embedded SQLite store and the
//! MongoDB store must also pass, and the store of the tests that need no
//! other (`storage.kind = "memory"`).
//!
//! ## Layout
//! Each port keeps its own tables behind its own `std::sync::Mutex`. Every
//! port method takes one lock, does its work synchronously and releases it
//! before returning: no lock is held across an `.await`, and no method
//! takes two locks, so there is no lock order to get wrong. Holding the
//! lock for the whole read-check-write is what makes each method atomic, as
//! the contracts demand. Lookups go through ordered indexes kept beside
//! each table, so no request reads every record.
//!
//! ## What it must never do
//! Persist anything (a restart forgets everything), or be chosen for more
//! than one instance: its atomicity holds within one process only.

mod bins;
mod card_data;
mod data_keys;
mod expiring;
mod idempotency;
mod review;
mod wallets;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use cardbind_ports::audit::{ChainId, Link};
use cardbind_ports::StoreError;

pub use bins::MemoryBinTableStore;

/// Every storage port in memory. Cloning is cheap and clones share the same
/// data, so one value can be handed out as every `Arc<dyn Port>`.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    chains: Mutex<wallets::Chains>,
    card_data: Mutex<card_data::Table>,
    channel_refs: Mutex<card_data::Refs>,
    idempotency: Mutex<idempotency::Table>,
    rates: Mutex<expiring::Windows>,
    seen: Mutex<expiring::Seen>,
    data_keys: Mutex<data_keys::Table>,
    review: Mutex<review::Table>,
    /// Test aid: when set, every port method answers `Unavailable`.
    unavailable: AtomicBool,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// An empty store behind an `Arc`, ready to be coerced into any
    /// `Arc<dyn Port>` it implements.
    pub fn shared() -> Arc<MemoryStore> {
        Arc::new(MemoryStore::new())
    }

    /// **Test aid.** While `true`, every port method fails with
    /// [`StoreError::Unavailable`], as a database that cannot be reached
    /// would.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.inner.unavailable.store(unavailable, Ordering::SeqCst);
    }

    /// **Test aid — never called by the service.** Changes a stored link in
    /// place with `f` without recomputing any hash, as someone editing the
    /// database behind the service's back would. Returns whether it existed.
    pub fn tamper_link(&self, chain: &ChainId, seq: u64, f: impl FnOnce(&mut Link)) -> bool {
        lock(&self.inner.chains).tamper(chain, seq, f)
    }

    /// **Test aid — never called by the service.** Removes a stored link,
    /// leaving a gap in its chain. Returns whether it existed.
    pub fn delete_link(&self, chain: &ChainId, seq: u64) -> bool {
        lock(&self.inner.chains).delete(chain, seq)
    }

    fn check_available(&self) -> Result<(), StoreError> {
        if self.inner.unavailable.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable(
                "memory store switched off by set_unavailable".to_owned(),
            ))
        } else {
            Ok(())
        }
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryStore")
    }
}

/// Locks a table. A poisoned lock (a panic while it was held) is taken over:
/// no method leaves a table half-changed before a point where it could
/// panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// At most `limit` items, as `usize`.
fn take_limit(limit: u32) -> usize {
    usize::try_from(limit).unwrap_or(usize::MAX)
}
