//! `DataKeyStore`: each owner's key is a chain of links under a unique
//! (owner, seq): key versions, tombstones (erased), and husks (superseded
//! links without key material). Every write inserts the link after the
//! newest one its writer read, so of concurrent writers after one link
//! exactly one lands. Links are never deleted — superseded ones are husked
//! in place — so no number below the newest can ever be inserted again:
//! a `replace` that read the key before an erasure finds its number taken
//! by the tombstone (or a link before it) and gets `Conflict`; nothing can
//! bring erased key material back.

use async_trait::async_trait;
use cardbind_domain::Timestamp;
use cardbind_ports::store::{DataKeyStore, WrappedKey};
use cardbind_ports::StoreError;
use cardbind_records::{to_i64, to_u64};
use futures::TryStreamExt;
use mongodb::bson::doc;

use crate::docs::{bin, KeyLinkDoc};
use crate::schema::labels::*;
use crate::store::{map_err, try_insert, MongoStore};

const KEY: &str = "key";
const TOMBSTONE: &str = "tombstone";
const HUSK: &str = "husk";

fn wrapped_key(d: KeyLinkDoc) -> Result<WrappedKey, StoreError> {
    Ok(WrappedKey {
        owner: d.owner,
        master_key_id: d.master_key_id,
        wrapped: d.wrapped.bytes,
        version: to_u64(d.version, "key version")?,
        created_at: Timestamp::from_unix_millis(d.created_at),
    })
}

fn key_link(key: &WrappedKey, seq: i64) -> Result<KeyLinkDoc, StoreError> {
    Ok(KeyLinkDoc {
        owner: key.owner.clone(),
        seq,
        state: KEY.to_owned(),
        version: to_i64(key.version, "key version")?,
        master_key_id: key.master_key_id.clone(),
        wrapped: bin(&key.wrapped),
        created_at: key.created_at.unix_millis(),
    })
}

impl MongoStore {
    async fn key_head(
        &self,
        owner: &str,
        label: &'static str,
    ) -> Result<Option<KeyLinkDoc>, StoreError> {
        self.data_keys
            .find_one(doc! { "owner": owner })
            .sort(doc! { "seq": -1 })
            .max_time(self.op_timeout)
            .comment(label)
            .await
            .map_err(map_err)
    }

    /// Removes the key material of every link of `owner` below `seq`.
    /// Idempotent; only ever removes.
    async fn husk_below(
        &self,
        owner: &str,
        seq: i64,
        label: &'static str,
    ) -> Result<(), StoreError> {
        self.data_keys
            .update_many(
                doc! { "owner": owner, "seq": { "$lt": seq }, "state": { "$ne": HUSK } },
                doc! { "$set": { "state": HUSK, "wrapped": bin(&[]), "master_key_id": "" } },
            )
            .comment(label)
            .await
            .map_err(map_err)?;
        Ok(())
    }
}

#[async_trait]
impl DataKeyStore for MongoStore {
    async fn get(&self, owner: &str) -> Result<Option<WrappedKey>, StoreError> {
        self.timed(async {
            match self.key_head(owner, KEYS_GET).await? {
                Some(d) if d.state == KEY => Ok(Some(wrapped_key(d)?)),
                _ => Ok(None),
            }
        })
        .await
    }

    async fn put_if_absent(&self, key: &WrappedKey) -> Result<WrappedKey, StoreError> {
        self.timed(async {
            // An owner without a key: its first link, without reading.
            let mut seq = 1;
            loop {
                if try_insert(&self.data_keys, &key_link(key, seq)?, KEYS_PUT).await? {
                    return Ok(key.clone());
                }
                match self.key_head(&key.owner, KEYS_PUT).await? {
                    Some(d) if d.state == KEY => return wrapped_key(d),
                    // Erased: a new key after the tombstone.
                    Some(d) => seq = d.seq + 1,
                    None => seq = 1,
                }
            }
        })
        .await
    }

    async fn replace(&self, key: &WrappedKey, expected_version: u64) -> Result<(), StoreError> {
        self.timed(async {
            let expected = to_i64(expected_version, "key version")?;
            let head = match self.key_head(&key.owner, KEYS_REPLACE).await? {
                // The same key (a re-wrap keeps its creation instant), at
                // the version the caller read: not a key made after an
                // erasure, which starts at version 1 again.
                Some(d)
                    if d.state == KEY
                        && d.version == expected
                        && d.created_at == key.created_at.unix_millis() =>
                {
                    d
                }
                _ => return Err(StoreError::Conflict),
            };
            let next = head.seq + 1;
            if !try_insert(&self.data_keys, &key_link(key, next)?, KEYS_REPLACE).await? {
                return Err(StoreError::Conflict);
            }
            // The re-wrap is stored; the superseded wrapping goes. If that
            // fails, the next replace or delete removes it.
            if let Err(e) = self.husk_below(&key.owner, next, KEYS_REPLACE).await {
                tracing::warn!(error = %e, "superseded data key wrapping not yet removed");
            }
            Ok(())
        })
        .await
    }

    async fn delete(&self, owner: &str) -> Result<bool, StoreError> {
        self.timed(async {
            loop {
                let head = match self.key_head(owner, KEYS_DELETE).await? {
                    None => return Ok(false),
                    Some(d) if d.state != KEY => {
                        // Erased before: make sure no material is left
                        // (an earlier erasure may have stopped halfway).
                        self.husk_below(owner, d.seq, KEYS_DELETE).await?;
                        return Ok(false);
                    }
                    Some(d) => d,
                };
                let tomb = KeyLinkDoc {
                    owner: owner.to_owned(),
                    seq: head.seq + 1,
                    state: TOMBSTONE.to_owned(),
                    version: head.version,
                    master_key_id: String::new(),
                    wrapped: bin(&[]),
                    created_at: head.created_at,
                };
                if try_insert(&self.data_keys, &tomb, KEYS_DELETE).await? {
                    self.husk_below(owner, tomb.seq, KEYS_DELETE).await?;
                    return Ok(true);
                }
                // A re-wrap (or another erasure) came first: again on top.
            }
        })
        .await
    }

    async fn list(&self, after: Option<String>, limit: u32) -> Result<Vec<WrappedKey>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.timed(async {
            let filter = match &after {
                Some(a) => doc! { "owner": { "$gt": a } },
                None => doc! {},
            };
            // Each owner's newest link first: a key is listed when its
            // newest link is one.
            let mut cursor = self
                .data_keys
                .find(filter)
                .sort(doc! { "owner": 1, "seq": -1 })
                .batch_size(limit.saturating_mul(2).min(1000))
                .max_time(self.op_timeout)
                .comment(KEYS_LIST)
                .await
                .map_err(map_err)?;
            let mut out = Vec::new();
            let mut last_owner: Option<String> = None;
            while let Some(d) = cursor.try_next().await.map_err(map_err)? {
                if last_owner.as_deref() == Some(d.owner.as_str()) {
                    continue;
                }
                last_owner = Some(d.owner.clone());
                if d.state == KEY {
                    out.push(wrapped_key(d)?);
                    if out.len() >= limit as usize {
                        break;
                    }
                }
            }
            Ok(out)
        })
        .await
    }
}
