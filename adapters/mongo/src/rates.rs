//! `RateLimiter`: a window of limit L is at most L slot documents under a
//! unique (key, slot), slot ∈ 1..=L. A take inserts a slot; of concurrent
//! takers of one slot exactly one lands. All windows of a take go in one
//! unordered `insertMany` (slot 1 each: a fresh window costs nothing
//! more); only the windows whose slot was taken read their slots and try
//! a free one, until they land or every slot is taken. A take one window
//! refuses deletes the slots it took in the others (one `deleteMany` by
//! their unique keys), so a refused event costs no window anything.

use std::collections::{BTreeSet, HashMap, HashSet};

use async_trait::async_trait;
use cardbind_domain::Timestamp;
use cardbind_ports::store::{RateLimiter, RateTake, RateWindow};
use cardbind_ports::StoreError;
use cardbind_records::{corrupt, to_i64};
use futures::TryStreamExt;
use mongodb::bson::doc;
use mongodb::bson::oid::ObjectId;
use mongodb::error::ErrorKind;

use crate::docs::{RateDoc, RateRead};
use crate::schema::labels::*;
use crate::store::{map_err, MongoStore};

const DUPLICATE_KEY: i32 = 11000;

/// A free slot of 1..=limit not in `taken` (which holds fewer than
/// `limit`), picked at random so that racing takers spread out.
fn pick_free(limit: i64, taken: &HashSet<i64>) -> Option<i64> {
    if i64::try_from(taken.len()).unwrap_or(i64::MAX) >= limit {
        return None;
    }
    for _ in 0..32 {
        let s = 1 + (rand::random::<u64>() % limit.unsigned_abs()) as i64;
        if !taken.contains(&s) {
            return Some(s);
        }
    }
    let free: Vec<i64> = (1..=limit).filter(|s| !taken.contains(s)).collect();
    if free.is_empty() {
        return None;
    }
    free.get(rand::random::<usize>() % free.len()).copied()
}

impl MongoStore {
    /// Inserts `docs` unordered; the positions whose unique key was taken.
    async fn insert_slots(&self, docs: &[RateDoc]) -> Result<BTreeSet<usize>, StoreError> {
        match self
            .rates
            .insert_many(docs)
            .ordered(false)
            .comment(RATES_TAKE)
            .await
        {
            Ok(_) => Ok(BTreeSet::new()),
            Err(e) => match &*e.kind {
                ErrorKind::InsertMany(m)
                    if m.write_concern_error.is_none()
                        && m.write_errors
                            .iter()
                            .flatten()
                            .all(|w| w.code == DUPLICATE_KEY) =>
                {
                    Ok(m.write_errors.iter().flatten().map(|w| w.index).collect())
                }
                _ => Err(map_err(e)),
            },
        }
    }
}

#[async_trait]
impl RateLimiter for MongoStore {
    async fn take(
        &self,
        windows: &[RateWindow],
        now: Timestamp,
    ) -> Result<Vec<RateTake>, StoreError> {
        if windows.is_empty() {
            return Ok(Vec::new());
        }
        let answers = self
            .timed(async {
                let now = now.unix_millis();
                let limits = windows
                    .iter()
                    .map(|w| to_i64(w.limit, "rate limit"))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut out: Vec<Option<RateTake>> = vec![None; windows.len()];
                // (window, slot) to insert in this round, and windows whose
                // slots must be read first.
                let mut tries: Vec<(usize, i64)> = Vec::new();
                let mut again: Vec<usize> = Vec::new();
                {
                    let hints = self.rate_hints();
                    for (i, w) in windows.iter().enumerate() {
                        let limit = limits[i];
                        let guess = hints.next_slot(&w.key, w.expires_at.unix_millis());
                        if limit == 0 {
                            out[i] = Some(RateTake::Full);
                        } else if guess > limit {
                            // This process took the last slot: read to be sure.
                            again.push(i);
                        } else {
                            tries.push((i, guess));
                        }
                    }
                }
                while !tries.is_empty() || !again.is_empty() {
                    if !tries.is_empty() {
                        let docs: Vec<RateDoc> = tries
                            .iter()
                            .map(|(i, slot)| RateDoc {
                                key: windows[*i].key.clone(),
                                slot: *slot,
                                expires_at: windows[*i].expires_at.unix_millis(),
                            })
                            .collect();
                        let lost = self.insert_slots(&docs).await?;
                        let mut hints = self.rate_hints();
                        for (pos, (i, slot)) in tries.iter().enumerate() {
                            if lost.contains(&pos) {
                                again.push(*i);
                            } else {
                                hints.taken(
                                    &windows[*i].key,
                                    windows[*i].expires_at.unix_millis(),
                                    *slot,
                                );
                                out[*i] = Some(RateTake::Taken(
                                    u64::try_from(*slot)
                                        .map_err(|_| corrupt("slot", "negative"))?,
                                ));
                            }
                        }
                        tries.clear();
                    }
                    if again.is_empty() {
                        break;
                    }
                    // What is taken in those windows, in one read.
                    let keys: Vec<&str> = again
                        .iter()
                        .map(|i| windows[*i].key.as_str())
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect();
                    let slots: Vec<RateRead> = self
                        .rates
                        .clone_with_type::<RateRead>()
                        .find(doc! { "key": { "$in": &keys } })
                        .projection(doc! { "_id": 1, "key": 1, "slot": 1, "expires_at": 1 })
                        .max_time(self.op_timeout)
                        .comment(RATES_TAKE)
                        .await
                        .map_err(map_err)?
                        .try_collect()
                        .await
                        .map_err(map_err)?;
                    // Slots of an expired window under a reused key are free:
                    // delete them by their `_id` (a slot taken again since has
                    // another `_id`, so it is never deleted by mistake).
                    let expired: Vec<ObjectId> = slots
                        .iter()
                        .filter(|s| s.expires_at < now)
                        .map(|s| s.id)
                        .collect();
                    if !expired.is_empty() {
                        self.rates
                            .delete_many(
                                doc! { "key": { "$in": &keys }, "_id": { "$in": &expired } },
                            )
                            .comment(RATES_TAKE)
                            .await
                            .map_err(map_err)?;
                    }
                    let mut taken: HashMap<&str, HashSet<i64>> = HashMap::new();
                    for s in slots.iter().filter(|s| s.expires_at >= now) {
                        taken.entry(s.key.as_str()).or_default().insert(s.slot);
                    }
                    for i in again.drain(..) {
                        let t = taken.entry(windows[i].key.as_str()).or_default();
                        match pick_free(limits[i], t) {
                            None => out[i] = Some(RateTake::Full),
                            Some(slot) => {
                                // Two windows of this take with one key must
                                // not pick the same slot.
                                t.insert(slot);
                                tries.push((i, slot));
                            }
                        }
                    }
                }
                out.into_iter()
                    .map(|o| o.ok_or_else(|| corrupt("rate take", "a window without an answer")))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?;
        if !answers.contains(&RateTake::Full) {
            return Ok(answers);
        }
        // Refused: give back the slots taken in the other windows, in one
        // delete by their unique (key, slot), which no other take can hold
        // until it is deleted. Bounded on its own: a failure leaves the
        // slots held until their windows end, and the refusal is still
        // answered.
        let mut taken = Vec::new();
        let mut given = Vec::with_capacity(answers.len());
        for (w, a) in windows.iter().zip(answers) {
            given.push(match a {
                RateTake::Taken(slot) => {
                    taken.push((w, to_i64(slot, "rate slot")?));
                    RateTake::Untaken
                }
                other => other,
            });
        }
        if taken.is_empty() {
            return Ok(given);
        }
        let pairs: Vec<mongodb::bson::Document> = taken
            .iter()
            .map(|(w, slot)| doc! { "key": &w.key, "slot": *slot })
            .collect();
        let deleted = self
            .timed(async {
                self.rates
                    .delete_many(doc! { "$or": pairs })
                    .comment(RATES_GIVE_BACK)
                    .await
                    .map_err(map_err)
            })
            .await;
        match deleted {
            Ok(_) => {
                let mut hints = self.rate_hints();
                for (w, slot) in &taken {
                    hints.given_back(&w.key, w.expires_at.unix_millis(), *slot);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "a refused rate take could not give back its slots; they are held until their windows end")
            }
        }
        Ok(given)
    }

    async fn purge_expired(&self, now: Timestamp) -> Result<u64, StoreError> {
        self.timed(async {
            let r = self
                .rates
                .delete_many(doc! { "expires_at": { "$lt": now.unix_millis() } })
                .comment(RATES_PURGE)
                .await
                .map_err(map_err)?;
            Ok(r.deleted_count)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_only_free_slots() {
        let taken: HashSet<i64> = [1, 2, 4].into_iter().collect();
        for _ in 0..50 {
            let s = pick_free(5, &taken);
            assert!(matches!(s, Some(3) | Some(5)), "{s:?}");
        }
        assert_eq!(pick_free(3, &[1, 2, 3].into_iter().collect()), None);
        // Dense: the fallback enumerates.
        let dense: HashSet<i64> = (1..1000).collect();
        assert_eq!(pick_free(1000, &dense), Some(1000));
    }
}
