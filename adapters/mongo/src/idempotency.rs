//! `IdempotencyStore`: every state change of a key is a record inserted
//! under the next number of that key's unique (scope, key, seq).
//!
//! Record 1 is the claim of attempt 1. After a record, the next one is a
//! `renew` or the end (`complete` / `release`) of the same attempt — written
//! only by its holder — or the `claim` of the next attempt, written by a
//! claimer that found the attempt released or its lease expired. All of
//! them compete for the same number, so exactly one lands: a late holder
//! and a claimer taking over cannot both win, on FerretDB as on MongoDB,
//! and the fencing of [`Lease::attempt`] is a plain insert. The newest
//! record decides what a claim finds.
//!
//! The retention purge takes part in the same race. Deleting a key frees
//! its record 1, which the claim of a new key inserts without reading; if
//! a claim of the next attempt landed between the purge's read and its
//! delete, that attempt would survive alone and a second claim would take
//! record 1 too: two attempts running at once. So the purge first inserts
//! a `purge` marker under the number after the newest record it read.
//! When the marker lands nothing can be added to the key any more (a
//! claim finding the marker finishes the delete itself, then starts the
//! key afresh); when it does not, the key is in use again and is kept.
//! Each delete is bounded by the marker's cutoff, so a late one cannot
//! remove the records of the key's fresh start.

use std::collections::BTreeSet;
use std::time::Instant;

use async_trait::async_trait;
use cardbind_domain::Timestamp;
use cardbind_ports::store::{Claim, IdempotencyStore, Lease, StoredResponse, FORGOTTEN_REQUEST};
use cardbind_ports::StoreError;
use cardbind_records::{corrupt, to_i64};
use mongodb::bson::doc;
use mongodb::bson::oid::ObjectId;
use serde::Deserialize;

use crate::docs::{bin, IdemDoc, ResponseDoc};
use crate::hints::Held;
use crate::schema::labels::*;
use crate::store::{collect, map_err, try_insert, MongoStore};

const CLAIM: &str = "claim";
const RENEW: &str = "renew";
const COMPLETE: &str = "complete";
const RELEASE: &str = "release";
/// The retention purge's marker: the key is being deleted.
const PURGE: &str = "purge";

/// Records read per batch by the purge.
const PURGE_BATCH: i64 = 500;

#[derive(Debug, Deserialize)]
struct Candidate {
    #[serde(rename = "_id")]
    oid: ObjectId,
    scope: String,
    key: String,
    created_at: i64,
}

/// What a holder writes after its attempt's newest record.
enum Step {
    Renew(i64),
    Complete(ResponseDoc),
    Release,
    /// Released, bound to no request: its record's hash is
    /// [`FORGOTTEN_REQUEST`].
    Forget,
}

impl MongoStore {
    /// One batch of the purge: the next records of attempts created before
    /// `before`; a key whose newest attempt is among them loses all its
    /// records up to its newest. A key whose newest attempt is recent keeps
    /// its older ones too: deleting them would free the low record numbers
    /// that a claim of a new key inserts without reading. Returns
    /// (deleted, the last record seen, whether more may follow).
    async fn purge_batch_idem(
        &self,
        before: i64,
        after: Option<(i64, ObjectId)>,
    ) -> Result<(u64, Option<(i64, ObjectId)>, bool), StoreError> {
        let mut filter = doc! { "created_at": { "$lt": before } };
        if let Some((at, oid)) = after {
            filter.insert(
                "$or",
                vec![
                    doc! { "created_at": { "$gt": at } },
                    doc! { "created_at": at, "_id": { "$gt": oid } },
                ],
            );
        }
        let cursor = self
            .idempotency
            .clone_with_type::<Candidate>()
            .find(filter)
            .sort(doc! { "created_at": 1, "_id": 1 })
            .projection(doc! { "_id": 1, "scope": 1, "key": 1, "created_at": 1 })
            .limit(PURGE_BATCH)
            .max_time(self.op_timeout)
            .comment(IDEM_PURGE)
            .await
            .map_err(map_err)?;
        let rows = collect(cursor, PURGE_BATCH as usize).await?;
        let more = rows.len() as i64 == PURGE_BATCH;
        let last = rows.last().map(|r| (r.created_at, r.oid));
        let keys: BTreeSet<(String, String)> = rows.into_iter().map(|r| (r.scope, r.key)).collect();
        let mut deleted = 0;
        for (scope, key) in keys {
            deleted += self.purge_key(&scope, &key, before).await?;
        }
        Ok((deleted, last, more))
    }

    /// Deletes a key whose every record is older than `before`: the
    /// records deleted, markers not counted.
    async fn purge_key(&self, scope: &str, key: &str, before: i64) -> Result<u64, StoreError> {
        let Some(n) = self.newest_record(scope, key, IDEM_PURGE).await? else {
            return Ok(0);
        };
        if n.kind == PURGE {
            // A purge that stopped after its marker: finish it.
            let swept = self
                .sweep(scope, key, n.seq, n.created_at, IDEM_PURGE)
                .await?;
            return Ok(swept.saturating_sub(1));
        }
        if n.created_at >= before {
            return Ok(0);
        }
        self.purge_key_as_read(scope, key, n.seq, before).await
    }

    /// The purge of a key after it read `seen` as the key's newest record
    /// number (created before `before`): the marker, then the delete.
    #[doc(hidden)]
    pub async fn purge_key_as_read(
        &self,
        scope: &str,
        key: &str,
        seen: i64,
        before: i64,
    ) -> Result<u64, StoreError> {
        let Some(cutoff) = self.mark_for_purge(scope, key, seen, before).await? else {
            return Ok(0);
        };
        let swept = self.sweep(scope, key, seen + 1, cutoff, IDEM_PURGE).await?;
        Ok(swept.saturating_sub(1))
    }

    /// Inserts the purge marker after record `seen`, when no record of the
    /// key is as recent as `before` (an attempt claimed by an instance
    /// whose clock runs behind could be older than a later one): the
    /// cutoff of the delete that must follow, or `None` when the key is in
    /// use and stays.
    #[doc(hidden)]
    pub async fn mark_for_purge(
        &self,
        scope: &str,
        key: &str,
        seen: i64,
        before: i64,
    ) -> Result<Option<i64>, StoreError> {
        let recent = self
            .idempotency
            .clone_with_type::<mongodb::bson::Document>()
            .find_one(doc! { "scope": scope, "key": key, "created_at": { "$gte": before } })
            .projection(doc! { "_id": 1 })
            .max_time(self.op_timeout)
            .comment(IDEM_PURGE)
            .await
            .map_err(map_err)?;
        if recent.is_some() {
            return Ok(None);
        }
        let cutoff = before - 1;
        let marker = IdemDoc {
            scope: scope.to_owned(),
            key: key.to_owned(),
            seq: seen + 1,
            attempt: 0,
            kind: PURGE.to_owned(),
            request_hash: String::new(),
            created_at: cutoff,
            lease_until: 0,
            response: None,
        };
        if !try_insert(&self.idempotency, &marker, IDEM_PURGE).await? {
            return Ok(None);
        }
        Ok(Some(cutoff))
    }

    /// Deletes a key's records up to its purge marker `marker`, none
    /// created after `cutoff`: a fresh start of the key after the purge
    /// (created now, a retention later than the cutoff) is never touched,
    /// however late this delete runs. Returns the records deleted.
    #[doc(hidden)]
    pub async fn sweep(
        &self,
        scope: &str,
        key: &str,
        marker: i64,
        cutoff: i64,
        label: &'static str,
    ) -> Result<u64, StoreError> {
        let r = self
            .idempotency
            .delete_many(doc! {
                "scope": scope,
                "key": key,
                "seq": { "$lte": marker },
                "created_at": { "$lte": cutoff },
            })
            .comment(label)
            .await
            .map_err(map_err)?;
        // Nobody holds an attempt of a purged key: its records are older
        // than the retention, far past any lease.
        Ok(r.deleted_count)
    }

    async fn newest_record(
        &self,
        scope: &str,
        key: &str,
        label: &'static str,
    ) -> Result<Option<IdemDoc>, StoreError> {
        self.idempotency
            .find_one(doc! { "scope": scope, "key": key })
            .sort(doc! { "seq": -1 })
            .max_time(self.op_timeout)
            .comment(label)
            .await
            .map_err(map_err)
    }

    /// Inserts the record after the newest one of `lease`'s attempt:
    /// `false` when the attempt is not the newest or is finished.
    async fn advance(
        &self,
        scope: &str,
        key: &str,
        lease: Lease,
        step: Step,
    ) -> Result<bool, StoreError> {
        let forget = matches!(step, Step::Forget);
        let (kind, lease_until, response, label) = match step {
            Step::Renew(until) => (RENEW, Some(until), None, IDEM_RENEW),
            Step::Complete(r) => (COMPLETE, None, Some(r), IDEM_COMPLETE),
            Step::Release | Step::Forget => (RELEASE, None, None, IDEM_RELEASE),
        };
        let attempt = to_i64(lease.attempt, "attempt")?;
        let mut guess = self.held().get(scope, key, attempt);
        loop {
            let base = match guess.take() {
                Some(h) => h,
                None => {
                    let Some(n) = self.newest_record(scope, key, label).await? else {
                        return Ok(false);
                    };
                    if n.attempt != attempt || !matches!(n.kind.as_str(), CLAIM | RENEW) {
                        self.held().forget(scope, key, attempt);
                        return Ok(false);
                    }
                    Held {
                        seq: n.seq,
                        request_hash: n.request_hash,
                        created_at: n.created_at,
                        lease_until: n.lease_until,
                        remembered: Instant::now(),
                    }
                }
            };
            let d = IdemDoc {
                scope: scope.to_owned(),
                key: key.to_owned(),
                seq: base.seq + 1,
                attempt,
                kind: kind.to_owned(),
                request_hash: if forget {
                    FORGOTTEN_REQUEST.to_owned()
                } else {
                    base.request_hash
                },
                created_at: base.created_at,
                lease_until: lease_until.unwrap_or(base.lease_until),
                response: response.clone(),
            };
            if try_insert(&self.idempotency, &d, label).await? {
                let mut held = self.held();
                if kind == RENEW {
                    held.put(&d);
                } else {
                    held.forget(scope, key, attempt);
                }
                return Ok(true);
            }
            // That number is taken (a claim took over, or this holder wrote
            // it from elsewhere): read the newest record and decide again.
        }
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
        self.timed(async {
            let first = IdemDoc {
                scope: scope.to_owned(),
                key: key.to_owned(),
                seq: 1,
                attempt: 1,
                kind: CLAIM.to_owned(),
                request_hash: request_hash.to_owned(),
                created_at: now.unix_millis(),
                lease_until: lease_until.unix_millis(),
                response: None,
            };
            // A new key: its first record, without reading.
            if try_insert(&self.idempotency, &first, IDEM_CLAIM).await? {
                self.held().put(&first);
                return Ok(Claim::Acquired(Lease { attempt: 1 }));
            }
            loop {
                let Some(n) = self.newest_record(scope, key, IDEM_CLAIM).await? else {
                    // Purged since: a new key again.
                    if try_insert(&self.idempotency, &first, IDEM_CLAIM).await? {
                        self.held().put(&first);
                        return Ok(Claim::Acquired(Lease { attempt: 1 }));
                    }
                    continue;
                };
                if n.kind == PURGE {
                    // The key is being purged: finish that, then start it
                    // afresh.
                    self.sweep(scope, key, n.seq, n.created_at, IDEM_CLAIM)
                        .await?;
                    continue;
                }
                if n.request_hash != request_hash
                    && !(n.kind == RELEASE && n.request_hash == FORGOTTEN_REQUEST)
                {
                    return Ok(Claim::Mismatch);
                }
                match n.kind.as_str() {
                    COMPLETE => {
                        let r = n.response.ok_or_else(|| {
                            corrupt("idempotency record", "completed without a response")
                        })?;
                        return Ok(Claim::Completed(StoredResponse {
                            status: u16::try_from(r.status)
                                .map_err(|_| corrupt("response status", r.status))?,
                            content_type: r.content_type,
                            body: r.body.bytes,
                        }));
                    }
                    CLAIM | RENEW if n.lease_until >= now.unix_millis() => {
                        return Ok(Claim::InProgress {
                            lease_until: Timestamp::from_unix_millis(n.lease_until),
                        });
                    }
                    CLAIM | RENEW | RELEASE => {}
                    other => return Err(corrupt("idempotency record kind", other)),
                }
                // Released, or its holder's lease ran out: the next attempt.
                let next = IdemDoc {
                    scope: scope.to_owned(),
                    key: key.to_owned(),
                    seq: n.seq + 1,
                    attempt: n.attempt + 1,
                    kind: CLAIM.to_owned(),
                    request_hash: request_hash.to_owned(),
                    created_at: now.unix_millis(),
                    lease_until: lease_until.unix_millis(),
                    response: None,
                };
                if try_insert(&self.idempotency, &next, IDEM_CLAIM).await? {
                    self.held().put(&next);
                    let attempt =
                        u64::try_from(next.attempt).map_err(|_| corrupt("attempt", "negative"))?;
                    return Ok(Claim::Acquired(Lease { attempt }));
                }
            }
        })
        .await
    }

    async fn renew(
        &self,
        scope: &str,
        key: &str,
        lease: Lease,
        lease_until: Timestamp,
    ) -> Result<bool, StoreError> {
        self.timed(self.advance(scope, key, lease, Step::Renew(lease_until.unix_millis())))
            .await
    }

    async fn complete(
        &self,
        scope: &str,
        key: &str,
        lease: Lease,
        response: &StoredResponse,
    ) -> Result<bool, StoreError> {
        let r = ResponseDoc {
            status: i32::from(response.status),
            content_type: response.content_type.clone(),
            body: bin(&response.body),
        };
        self.timed(self.advance(scope, key, lease, Step::Complete(r)))
            .await
    }

    async fn release(&self, scope: &str, key: &str, lease: Lease) -> Result<bool, StoreError> {
        self.timed(self.advance(scope, key, lease, Step::Release))
            .await
    }

    async fn forget(&self, scope: &str, key: &str, lease: Lease) -> Result<bool, StoreError> {
        self.timed(self.advance(scope, key, lease, Step::Forget))
            .await
    }

    async fn purge_created_before(&self, before: Timestamp) -> Result<u64, StoreError> {
        let before = before.unix_millis();
        let mut total = 0;
        let mut after = None;
        loop {
            // Each batch under its own timeout: a purge may be long.
            let (n, last, more) = self.timed(self.purge_batch_idem(before, after)).await?;
            total += n;
            if !more {
                return Ok(total);
            }
            after = last;
        }
    }
}
