//! Records that expire: rate counters and seen ids.

use std::collections::HashMap;

use async_trait::async_trait;
use cardbind_domain::Timestamp;
use cardbind_ports::store::{RateCounter, SeenIds};
use cardbind_ports::StoreError;

use crate::{lock, MemoryStore};

/// Counters by key: (count, expires_at).
#[derive(Default)]
pub(crate) struct Counters(HashMap<String, (u64, Timestamp)>);

/// Seen ids by (namespace, id): expires_at.
#[derive(Default)]
pub(crate) struct Seen(HashMap<(String, String), Timestamp>);

/// A record expiring at `expires_at` is still alive at `now` up to and
/// including that instant; purges delete those that expired before `now`.
fn alive(expires_at: Timestamp, now: Timestamp) -> bool {
    expires_at >= now
}

#[async_trait]
impl RateCounter for MemoryStore {
    async fn increment(&self, key: &str, expires_at: Timestamp) -> Result<u64, StoreError> {
        self.check_available()?;
        let mut t = lock(&self.inner.rates);
        let c = t.0.entry(key.to_owned()).or_insert((0, expires_at));
        c.0 = c.0.saturating_add(1);
        c.1 = c.1.max(expires_at);
        Ok(c.0)
    }

    async fn purge_expired(&self, now: Timestamp) -> Result<u64, StoreError> {
        self.check_available()?;
        let mut t = lock(&self.inner.rates);
        let n = t.0.len();
        t.0.retain(|_, (_, expires_at)| alive(*expires_at, now));
        Ok((n - t.0.len()) as u64)
    }
}

#[async_trait]
impl SeenIds for MemoryStore {
    async fn seen(&self, namespace: &str, id: &str, now: Timestamp) -> Result<bool, StoreError> {
        self.check_available()?;
        let t = lock(&self.inner.seen);
        Ok(t.0
            .get(&(namespace.to_owned(), id.to_owned()))
            .is_some_and(|e| alive(*e, now)))
    }

    async fn mark(
        &self,
        namespace: &str,
        id: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.check_available()?;
        let mut t = lock(&self.inner.seen);
        let key = (namespace.to_owned(), id.to_owned());
        match t.0.get(&key) {
            Some(e) if alive(*e, now) => Ok(false),
            _ => {
                t.0.insert(key, expires_at);
                Ok(true)
            }
        }
    }

    async fn purge_expired(&self, now: Timestamp) -> Result<u64, StoreError> {
        self.check_available()?;
        let mut t = lock(&self.inner.seen);
        let n = t.0.len();
        t.0.retain(|_, expires_at| alive(*expires_at, now));
        Ok((n - t.0.len()) as u64)
    }
}
