//! `DataKeyStore`: each owner's wrapped data key as a chain of versions
//! (`data_keys`), ended by a tombstone when erased.

use std::collections::HashSet;

use async_trait::async_trait;
use cardbind_ports::store::{DataKeyStore, WrappedKey};
use cardbind_ports::StoreError;
use futures::TryStreamExt;
use mongodb::bson::doc;

use crate::chain::{by_id, chain_head};
use crate::docs::{link_id, to_i64, DataKeyDoc};
use crate::store::{limit_i64, map_err, try_insert, wall_now, MongoStore};

const MAX_ROUNDS: usize = 64;
/// Hint kind (see `chain::Hints`).
const DATA_KEYS: &str = "data_keys";

impl MongoStore {
    /// The newest link of `owner`'s chain. Links are never deleted (key
    /// material is dropped by turning a link into a husk), so the chain is
    /// gapless from 0 and its head is found by reads of single `_id`s.
    async fn latest_key(&self, owner: &str) -> Result<Option<DataKeyDoc>, StoreError> {
        let head = chain_head(&self.data_keys, owner, 0, self.hints.get(DATA_KEYS, owner)).await?;
        if let Some((n, _)) = &head {
            self.hints.set(DATA_KEYS, owner, *n);
        }
        Ok(head.map(|(_, d)| d))
    }

    /// Replaces the links `from..to` of `owner` that still hold key
    /// material with husks (same `_id`, no material). Only superseded or
    /// erased links are husked, and a husk is the same whoever writes it,
    /// so racing writers cannot disagree.
    async fn husk_below(&self, owner: &str, from: i64, to: i64) -> Result<(), StoreError> {
        for n in from.max(0)..to {
            let id = link_id(owner, n);
            if let Some(d) = by_id(&self.data_keys, &id).await? {
                if !d.tombstone {
                    self.data_keys
                        .replace_one(doc! { "_id": &id }, DataKeyDoc::husk(owner, n, wall_now()))
                        .await
                        .map_err(map_err)?;
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl DataKeyStore for MongoStore {
    async fn get(&self, owner: &str) -> Result<Option<WrappedKey>, StoreError> {
        self.timed(async {
            match self.latest_key(owner).await? {
                Some(d) if !d.tombstone => Ok(Some(d.into_domain()?)),
                _ => Ok(None),
            }
        })
        .await
    }

    async fn put_if_absent(&self, key: &WrappedKey) -> Result<WrappedKey, StoreError> {
        self.timed(async {
            // An owner this process has not seen most likely has no key:
            // try link 0 before reading (taken if the owner ever had one).
            let mut read = self.hints.get(DATA_KEYS, &key.owner).is_some();
            for _ in 0..MAX_ROUNDS {
                let seq = if read {
                    match self.latest_key(&key.owner).await? {
                        Some(d) if !d.tombstone => return d.into_domain(),
                        Some(t) => t.seq + 1,
                        None => 0,
                    }
                } else {
                    0
                };
                read = true;
                let d = DataKeyDoc::from_domain(key, seq)?;
                // Commit point: of concurrent puts exactly one inserts `seq`
                // (the successor of the head read, an erasure tombstone
                // included); the others read the winner's key next round.
                if try_insert(&self.data_keys, &d).await? {
                    self.hints.set(DATA_KEYS, &key.owner, seq);
                    return Ok(key.clone());
                }
            }
            Err(StoreError::Unavailable(format!(
                "data key of {} still contended after {MAX_ROUNDS} rounds",
                key.owner
            )))
        })
        .await
    }

    async fn replace(&self, key: &WrappedKey, expected_version: u64) -> Result<(), StoreError> {
        let expected = to_i64(expected_version, "expected version")?;
        self.timed(async {
            let latest = match self.latest_key(&key.owner).await? {
                Some(d) if !d.tombstone && d.version == expected => d,
                _ => return Err(StoreError::Conflict),
            };
            let d = DataKeyDoc::from_domain(key, latest.seq + 1)?;
            // Commit point: the one successor of the version read.
            if !try_insert(&self.data_keys, &d).await? {
                return Err(StoreError::Conflict);
            }
            self.hints.set(DATA_KEYS, &key.owner, d.seq);
            // The superseded wrapping is husked at once: its `_id` stays
            // taken, so no stale writer can insert that link again.
            self.husk_below(&key.owner, latest.seq, d.seq).await?;
            Ok(())
        })
        .await
    }

    async fn delete(&self, owner: &str) -> Result<bool, StoreError> {
        self.timed(async {
            for _ in 0..MAX_ROUNDS {
                let seq = match self.latest_key(owner).await? {
                    Some(d) if !d.tombstone => d.seq,
                    Some(t) => {
                        // Already erased; husk any key material a stale
                        // writer may have left below.
                        self.husk_below(owner, 0, t.seq).await?;
                        return Ok(false);
                    }
                    None => return Ok(false),
                };
                // The tombstone goes first: once it is the newest link, no
                // writer can make key material current again, and every
                // older wrapping can be husked.
                let tomb = DataKeyDoc::tombstone(owner, seq + 1, wall_now());
                if try_insert(&self.data_keys, &tomb).await? {
                    self.hints.set(DATA_KEYS, owner, tomb.seq);
                    self.husk_below(owner, 0, tomb.seq).await?;
                    return Ok(true);
                }
            }
            Err(StoreError::Unavailable(format!(
                "data key of {owner} still contended after {MAX_ROUNDS} rounds"
            )))
        })
        .await
    }

    async fn list(&self, after: Option<String>, limit: u32) -> Result<Vec<WrappedKey>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.timed(async {
            let mut out = Vec::new();
            let mut cursor_after = after;
            // Each round reads a page of links, newest first per owner, and
            // keeps each owner's newest unless it is a tombstone.
            loop {
                let mut filter = doc! {};
                if let Some(a) = &cursor_after {
                    filter.insert("owner", doc! { "$gt": a.as_str() });
                }
                let page_size = limit_i64(limit).saturating_mul(2).max(16);
                let docs: Vec<DataKeyDoc> = self
                    .data_keys
                    .find(filter)
                    .sort(doc! { "owner": 1, "seq": -1 })
                    .limit(page_size)
                    .await
                    .map_err(map_err)?
                    .try_collect()
                    .await
                    .map_err(map_err)?;
                let full_page = docs.len() as i64 == page_size;
                let last_owner = docs.last().map(|d| d.owner.clone());
                let mut done_owners = HashSet::new();
                for d in docs {
                    // The last owner of a full page may continue on the
                    // next page; it is read again from its newest link.
                    if full_page && Some(&d.owner) == last_owner.as_ref() {
                        break;
                    }
                    if !done_owners.insert(d.owner.clone()) {
                        continue;
                    }
                    if !d.tombstone {
                        out.push(d.into_domain()?);
                        if out.len() >= limit as usize {
                            return Ok(out);
                        }
                    }
                }
                if !full_page {
                    return Ok(out);
                }
                match (done_owners.into_iter().max(), last_owner) {
                    // Next page after the last owner finished on this one.
                    (Some(o), _) => cursor_after = Some(o),
                    // One owner fills the whole page: skip past it.
                    (None, Some(o)) => {
                        if let Some(d) = self.latest_key(&o).await? {
                            if !d.tombstone {
                                out.push(d.into_domain()?);
                                if out.len() >= limit as usize {
                                    return Ok(out);
                                }
                            }
                        }
                        cursor_after = Some(o);
                    }
                    (None, None) => return Ok(out),
                }
            }
        })
        .await
    }
}
