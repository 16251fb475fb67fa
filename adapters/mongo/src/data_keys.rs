//! `DataKeyStore`: each owner's wrapped data key as a chain of versions
//! (`data_keys`), ended by a tombstone when erased.

use std::collections::HashSet;

use async_trait::async_trait;
use cardbind_ports::store::{DataKeyStore, WrappedKey};
use cardbind_ports::StoreError;
use futures::TryStreamExt;
use mongodb::bson::doc;

use crate::docs::{to_i64, DataKeyDoc};
use crate::store::{limit_i64, map_err, try_insert, wall_now, MongoStore};

const MAX_ROUNDS: usize = 64;

impl MongoStore {
    async fn latest_key(&self, owner: &str) -> Result<Option<DataKeyDoc>, StoreError> {
        self.data_keys
            .find_one(doc! { "owner": owner })
            .sort(doc! { "seq": -1 })
            .await
            .map_err(map_err)
    }

    /// After inserting key material at `seq`: if the owner was erased
    /// meanwhile (a tombstone above `seq`), remove every key below the
    /// newest tombstone again and report it. Crypto-shredding must not be
    /// undone by a writer that read the chain before the erasure.
    async fn shredded_above(&self, owner: &str, seq: i64) -> Result<bool, StoreError> {
        let tomb = self
            .data_keys
            .find_one(doc! { "owner": owner, "tombstone": true, "seq": { "$gt": seq } })
            .sort(doc! { "seq": -1 })
            .await
            .map_err(map_err)?;
        match tomb {
            Some(t) => {
                self.data_keys
                    .delete_many(doc! { "owner": owner, "tombstone": false, "seq": { "$lt": t.seq } })
                    .await
                    .map_err(map_err)?;
                Ok(true)
            }
            None => Ok(false),
        }
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
            for _ in 0..MAX_ROUNDS {
                let seq = match self.latest_key(&key.owner).await? {
                    Some(d) if !d.tombstone => return d.into_domain(),
                    Some(t) => t.seq + 1,
                    None => 0,
                };
                let d = DataKeyDoc::from_domain(key, seq)?;
                // Commit point: of concurrent puts exactly one inserts `seq`;
                // the others read the winner's key in the next round.
                if try_insert(&self.data_keys, &d).await? && !self.shredded_above(&key.owner, seq).await? {
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
            if self.shredded_above(&key.owner, d.seq).await? {
                return Err(StoreError::Conflict);
            }
            // Superseded wrappings go once no stale writer can collide
            // with them any more.
            self.data_keys
                .delete_many(doc! {
                    "owner": &key.owner,
                    "seq": { "$lt": d.seq },
                    "written_at": { "$lt": self.gc_cutoff() },
                })
                .await
                .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn delete(&self, owner: &str) -> Result<bool, StoreError> {
        self.timed(async {
            for _ in 0..MAX_ROUNDS {
                let seq = match self.latest_key(owner).await? {
                    Some(d) if !d.tombstone => d.seq,
                    _ => {
                        // Already erased (or never had one); sweep any key
                        // material a stale writer may have left below.
                        self.data_keys
                            .delete_many(doc! { "owner": owner, "tombstone": false })
                            .await
                            .map_err(map_err)?;
                        return Ok(false);
                    }
                };
                // The tombstone goes first: once it is the newest link, no
                // writer can make key material current again, and every
                // older wrapping can be deleted.
                let tomb = DataKeyDoc::tombstone(owner, seq + 1, wall_now());
                if try_insert(&self.data_keys, &tomb).await? {
                    self.data_keys
                        .delete_many(doc! { "owner": owner, "tombstone": false, "seq": { "$lt": tomb.seq } })
                        .await
                        .map_err(map_err)?;
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
