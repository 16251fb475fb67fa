//! # cardbind-memory
//!
//! In-memory implementations of every storage port of `cardbind-ports`
//! ([`BindingStore`], [`IdempotencyStore`], [`RateCounter`], [`ConsentLog`],
//! [`SeenIds`], [`DataKeyStore`]) and of the [`AuditLog`], all on one
//! [`MemoryStore`].
//!
//! It is the embedded default (`storage = "memory"`: the service runs with
//! nothing else installed) and the reference adapter of the contract suite
//! in `cardbind_ports::testkit`, which every other adapter must also pass.
//!
//! ## Layout
//! Each port keeps its own table behind its own `std::sync::Mutex`. Every
//! port method takes one lock, does its work synchronously and releases it
//! before returning: no lock is ever held across an `.await`, and no method
//! takes two locks, so there is no lock order to get wrong. Holding the lock
//! for the whole read-check-write is what makes each method one atomic
//! operation, as the port contracts demand (unique inserts, conditional
//! updates, claims, increments).
//!
//! ## What it must never do
//! Persist anything (a restart forgets everything), or be chosen for more
//! than one instance: its atomicity holds within one process only.
//!
//! [`BindingStore`]: cardbind_ports::store::BindingStore
//! [`IdempotencyStore`]: cardbind_ports::store::IdempotencyStore
//! [`RateCounter`]: cardbind_ports::store::RateCounter
//! [`ConsentLog`]: cardbind_ports::store::ConsentLog
//! [`SeenIds`]: cardbind_ports::store::SeenIds
//! [`DataKeyStore`]: cardbind_ports::store::DataKeyStore
//! [`AuditLog`]: cardbind_ports::audit::AuditLog

mod audit;
mod bindings;
mod bins;
mod consents;
mod data_keys;
mod expiring;
mod idempotency;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use cardbind_ports::audit::AuditRecord;
use cardbind_ports::StoreError;

pub use bins::MemoryBinTableStore;

/// Every storage port in memory. Cloning is cheap and clones share the same
/// data (an `Arc` inside), so one value can be handed out as every
/// `Arc<dyn Port>` of the composition root.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    bindings: Mutex<bindings::Table>,
    idempotency: Mutex<idempotency::Table>,
    rates: Mutex<expiring::Counters>,
    seen: Mutex<expiring::Seen>,
    consents: Mutex<consents::Table>,
    data_keys: Mutex<data_keys::Table>,
    audit: Mutex<audit::Chain>,
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
    /// would; used to test the `storage_unavailable` paths.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.inner.unavailable.store(unavailable, Ordering::SeqCst);
    }

    /// **Test and operations aid — never called by the service.** Changes
    /// the stored audit record `seq` in place with `f`, *without* recomputing
    /// any hash, exactly as someone editing the database behind the
    /// service's back would. Used to show that `verify_chain` detects it.
    /// Returns whether the record existed.
    pub fn tamper_audit(&self, seq: u64, f: impl FnOnce(&mut AuditRecord)) -> bool {
        lock(&self.inner.audit).tamper(seq, f)
    }

    /// **Test and operations aid — never called by the service.** Removes
    /// the stored audit record `seq` without touching its neighbours, which
    /// leaves a gap in the chain that `verify_chain` reports. Returns whether
    /// the record existed.
    pub fn delete_audit(&self, seq: u64) -> bool {
        lock(&self.inner.audit).delete(seq)
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
/// panic, as every change is a single insert/remove at the end.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// At most `limit` items, as `usize`.
fn take_limit(limit: u32) -> usize {
    usize::try_from(limit).unwrap_or(usize::MAX)
}
