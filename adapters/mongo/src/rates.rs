//! `RateCounter` and `SeenIds`: chains of immutable documents whose links
//! are claimed by insert.

use async_trait::async_trait;
use cardbind_domain::Timestamp;
use cardbind_ports::store::{RateCounter, SeenIds};
use cardbind_ports::StoreError;
use mongodb::bson::doc;

use crate::chain::chain_head;
use crate::docs::{dt, link_id, pair_key, RateDoc, SeenDoc};
use crate::store::{map_err, try_insert, MongoStore};

/// Hint kind (see `chain::Hints`).
const RATES: &str = "rates";

/// Increments and marks retry when they lose an insert race; each round
/// one racer wins, so this bounds the number of concurrent racers served
/// (the operation timeout bounds the time).
const MAX_ROUNDS: usize = 1024;

#[async_trait]
impl RateCounter for MongoStore {
    async fn increment(&self, key: &str, expires_at: Timestamp) -> Result<u64, StoreError> {
        self.timed(async {
            // The first event of a window needs no read; a key this process
            // has counted before starts from where it last saw the count.
            let mut n: i64 = match self.hints.get(RATES, key) {
                None => 1,
                Some(h) => chain_head(&self.rates, key, 1, Some(h))
                    .await?
                    .map_or(1, |(top, _)| top + 1),
            };
            for _ in 0..MAX_ROUNDS {
                let event = RateDoc {
                    id: link_id(key, n),
                    key: key.to_owned(),
                    n,
                    expires_at: dt(expires_at),
                };
                // Commit point: event n exists once; its inserter's count is n.
                if try_insert(&self.rates, &event).await? {
                    self.hints.set(RATES, key, n);
                    return Ok(n as u64);
                }
                // Taken: search upwards from it for the highest count. A
                // key's events share one expiry, so the purge removes all
                // of them or none: the counts are gapless from 1.
                n = chain_head(&self.rates, key, 1, Some(n))
                    .await?
                    .map_or(1, |(top, _)| top + 1);
            }
            Err(StoreError::Unavailable(format!(
                "rate counter still contended after {MAX_ROUNDS} rounds"
            )))
        })
        .await
    }

    async fn purge_expired(&self, now: Timestamp) -> Result<u64, StoreError> {
        let counters = self
            .purge_where(
                &self.rates,
                doc! { "expires_at": { "$lt": dt(now) } },
                "key",
            )
            .await?;
        // The periodic purge calls every port's purge; the clean-up of
        // superseded binding changes (no port of its own) rides on this one.
        let changes = self.purge_superseded_changes().await?;
        tracing::debug!(changes, "purged superseded binding changes");
        Ok(counters)
    }
}

impl MongoStore {
    async fn latest_seen(&self, base: &str) -> Result<Option<SeenDoc>, StoreError> {
        self.seen
            .find_one(doc! { "base": base })
            .sort(doc! { "gen": -1 })
            .await
            .map_err(map_err)
    }
}

#[async_trait]
impl SeenIds for MongoStore {
    async fn seen(&self, namespace: &str, id: &str, now: Timestamp) -> Result<bool, StoreError> {
        let base = pair_key(namespace, id);
        self.timed(async {
            Ok(self
                .latest_seen(&base)
                .await?
                .is_some_and(|d| d.expires_at >= dt(now)))
        })
        .await
    }

    async fn mark(
        &self,
        namespace: &str,
        id: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        let base = pair_key(namespace, id);
        self.timed(async {
            // An id seen for the first time needs no read.
            let mut gen: i64 = 0;
            for _ in 0..MAX_ROUNDS {
                let d = SeenDoc {
                    id: link_id(&base, gen),
                    base: base.clone(),
                    gen,
                    expires_at: dt(expires_at),
                };
                // Commit point: generation `gen` exists once.
                if try_insert(&self.seen, &d).await? {
                    return Ok(true);
                }
                match self.latest_seen(&base).await? {
                    // Alive through its expiry instant.
                    Some(l) if l.expires_at >= dt(now) => return Ok(false),
                    // Expired (or purged meanwhile): record a new generation.
                    Some(l) => gen = l.gen.max(gen) + 1,
                    None => {}
                }
            }
            Err(StoreError::Unavailable(format!(
                "seen id still contended after {MAX_ROUNDS} rounds"
            )))
        })
        .await
    }

    async fn purge_expired(&self, now: Timestamp) -> Result<u64, StoreError> {
        self.purge_where(
            &self.seen,
            doc! { "expires_at": { "$lt": dt(now) } },
            "base",
        )
        .await
    }
}
