//! Records that expire: rate windows and seen ids.

use std::collections::HashMap;

use async_trait::async_trait;
use cardbind_domain::Timestamp;
use cardbind_ports::store::{RateLimiter, RateTake, RateWindow, SeenIds};
use cardbind_ports::StoreError;

use crate::{lock, MemoryStore};

/// Rate windows by key: (slots taken, expires_at).
#[derive(Default)]
pub(crate) struct Windows(HashMap<String, (u64, Timestamp)>);

/// Seen ids by (namespace, id): expires_at.
#[derive(Default)]
pub(crate) struct Seen(HashMap<(String, String), Timestamp>);

/// A record expiring at `expires_at` is still alive at `now` up to and
/// including that instant; purges delete those that expired before `now`.
fn alive(expires_at: Timestamp, now: Timestamp) -> bool {
    expires_at >= now
}

#[async_trait]
impl RateLimiter for MemoryStore {
    async fn take(
        &self,
        windows: &[RateWindow],
        _now: Timestamp,
    ) -> Result<Vec<RateTake>, StoreError> {
        self.check_available()?;
        let mut t = lock(&self.inner.rates);
        let answers: Vec<RateTake> = windows
            .iter()
            .map(|w| {
                let c = t.0.entry(w.key.clone()).or_insert((0, w.expires_at));
                c.1 = c.1.max(w.expires_at);
                if c.0 < w.limit {
                    c.0 += 1;
                    RateTake::Taken(c.0)
                } else {
                    RateTake::Full
                }
            })
            .collect();
        if !answers.contains(&RateTake::Full) {
            return Ok(answers);
        }
        // Give back what this take took, under the same lock.
        Ok(windows
            .iter()
            .zip(answers)
            .map(|(w, a)| match a {
                RateTake::Taken(_) => {
                    if let Some(c) = t.0.get_mut(&w.key) {
                        c.0 = c.0.saturating_sub(1);
                    }
                    RateTake::Untaken
                }
                other => other,
            })
            .collect())
    }

    async fn purge_expired(&self, now: Timestamp) -> Result<u64, StoreError> {
        self.check_available()?;
        let mut t = lock(&self.inner.rates);
        let mut slots = 0;
        t.0.retain(|_, (taken, expires_at)| {
            let keep = alive(*expires_at, now);
            if !keep {
                slots += *taken;
            }
            keep
        });
        Ok(slots)
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
