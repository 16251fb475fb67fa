//! `IdempotencyStore`: one document per attempt at a key (`idempotency`).

use std::collections::HashSet;

use async_trait::async_trait;
use cardbind_domain::Timestamp;
use cardbind_ports::store::{Claim, IdempotencyStore, StoredResponse};
use cardbind_ports::StoreError;
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};

use crate::chain::chain_head;
use crate::docs::{dt, link_id, pair_key, IdemDoc, ResponseDoc, COMPLETED, PENDING};
use crate::store::{map_err, try_insert, MongoStore};

/// Hint kind (see `chain::Hints`).
const IDEMPOTENCY: &str = "idempotency";

/// Claims retry when they lose an insert race; each round one racer wins.
const MAX_CLAIM_ROUNDS: usize = 64;
/// Purge deletes by `_id` in batches of this size.
pub(crate) const PURGE_BATCH: usize = 500;

impl MongoStore {
    /// The newest attempt at a key. Attempts are gapless from 0: `release`
    /// deletes only the newest, and the purge all of a key's attempts
    /// (they share `created_at`).
    async fn latest_attempt(&self, base: &str) -> Result<Option<IdemDoc>, StoreError> {
        let head = chain_head(
            &self.idempotency,
            base,
            0,
            self.hints.get(IDEMPOTENCY, base),
        )
        .await?;
        if let Some((n, _)) = &head {
            self.hints.set(IDEMPOTENCY, base, *n);
        }
        Ok(head.map(|(_, d)| d))
    }

    /// Deletes the documents of `filter` (by `_id`, in batches, each under
    /// the operation timeout) and returns how many distinct values of
    /// `group` they had.
    pub(crate) async fn purge_where<T>(
        &self,
        coll: &mongodb::Collection<T>,
        filter: Document,
        group: &str,
    ) -> Result<u64, StoreError>
    where
        T: Send + Sync,
    {
        let raw = coll.clone_with_type::<Document>();
        let mut groups = HashSet::new();
        loop {
            let n = self
                .timed(async {
                    let docs: Vec<Document> = raw
                        .find(filter.clone())
                        .projection(doc! { "_id": 1, group: 1 })
                        .limit(PURGE_BATCH as i64)
                        .await
                        .map_err(map_err)?
                        .try_collect()
                        .await
                        .map_err(map_err)?;
                    let mut ids = Vec::with_capacity(docs.len());
                    for d in &docs {
                        if let Some(id) = d.get("_id") {
                            ids.push(id.clone());
                        }
                        groups.insert(d.get(group).map(ToString::to_string).unwrap_or_default());
                    }
                    if !ids.is_empty() {
                        raw.delete_many(doc! { "_id": { "$in": ids } })
                            .await
                            .map_err(map_err)?;
                    }
                    Ok(docs.len())
                })
                .await?;
            if n < PURGE_BATCH {
                break;
            }
        }
        Ok(groups.len() as u64)
    }
}

#[async_trait]
impl IdempotencyStore for MongoStore {
    async fn claim(
        &self,
        scope: &str,
        key: &str,
        request_hash: &str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Claim, StoreError> {
        let base = pair_key(scope, key);
        self.timed(async {
            // A key this process has not seen is most likely new: try
            // attempt 0 before reading anything.
            let mut latest = None;
            let mut read = self.hints.get(IDEMPOTENCY, &base).is_some();
            for _ in 0..MAX_CLAIM_ROUNDS {
                if read {
                    latest = self.latest_attempt(&base).await?;
                }
                read = true;
                let (attempt, created_at) = match &latest {
                    None => (0, dt(now)),
                    Some(d) => {
                        if d.request_hash != request_hash {
                            return Ok(Claim::Mismatch);
                        }
                        if d.state == COMPLETED {
                            let r = d.response.clone().ok_or_else(|| {
                                StoreError::Corrupt(format!(
                                    "idempotency {}: completed without response",
                                    d.id
                                ))
                            })?;
                            return Ok(Claim::Completed(r.into_domain()?));
                        }
                        // A lease runs through its last instant.
                        if d.lease_until >= dt(now) {
                            return Ok(Claim::InProgress);
                        }
                        // The holder's lease ran out (it crashed): the next
                        // attempt takes over. Same key, same first creation.
                        (d.attempt + 1, d.created_at)
                    }
                };
                let next = IdemDoc {
                    id: link_id(&base, attempt),
                    base: base.clone(),
                    attempt,
                    request_hash: request_hash.to_owned(),
                    state: PENDING.to_owned(),
                    lease_until: dt(lease_until),
                    created_at,
                    response: None,
                };
                // Commit point: of all claimers of this attempt number
                // exactly one inserts it; the others look again.
                if try_insert(&self.idempotency, &next).await? {
                    self.hints.set(IDEMPOTENCY, &base, attempt);
                    return Ok(Claim::Acquired);
                }
            }
            Err(StoreError::Unavailable(format!(
                "idempotency key still contended after {MAX_CLAIM_ROUNDS} rounds"
            )))
        })
        .await
    }

    async fn complete(
        &self,
        scope: &str,
        key: &str,
        response: &StoredResponse,
    ) -> Result<(), StoreError> {
        let base = pair_key(scope, key);
        let response = ResponseDoc::from_domain(response);
        self.timed(async {
            match self.latest_attempt(&base).await? {
                // Nothing to complete: the key was never claimed or was
                // released (or purged).
                None => Err(StoreError::Conflict),
                // The first response stays; it is the one replayed.
                Some(d) if d.state == COMPLETED => Ok(()),
                Some(d) => {
                    let body = mongodb::bson::to_bson(&response)
                        .map_err(|e| StoreError::Corrupt(format!("stored response: {e}")))?;
                    // Only the holder writes its attempt; a takeover writes
                    // a new attempt document, never this one. By `_id`
                    // alone (the state was checked just above): FerretDB
                    // scans the collection for any other filter.
                    self.idempotency
                        .update_one(
                            doc! { "_id": &d.id },
                            doc! { "$set": { "state": COMPLETED, "response": body } },
                        )
                        .await
                        .map_err(map_err)?;
                    Ok(())
                }
            }
        })
        .await
    }

    async fn release(&self, scope: &str, key: &str) -> Result<(), StoreError> {
        let base = pair_key(scope, key);
        self.timed(async {
            if let Some(d) = self.latest_attempt(&base).await? {
                if d.state == PENDING {
                    self.idempotency
                        .delete_one(doc! { "_id": &d.id })
                        .await
                        .map_err(map_err)?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn purge_created_before(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.purge_where(
            &self.idempotency,
            doc! { "created_at": { "$lt": dt(before) } },
            "base",
        )
        .await
    }
}
