//! `CardDataStore`, `ChannelRefs` and `ReviewQueue`: records with one
//! unique key each, written by insert and read by that key.

use async_trait::async_trait;
use cardbind_domain::{BindingId, ChannelName, Timestamp, UserId};
use cardbind_ports::store::{
    CardData, CardDataKey, CardDataStore, ChannelRefEntry, ChannelRefs, RefTarget, ReviewEntry,
    ReviewQueue,
};
use cardbind_ports::StoreError;
use cardbind_records::{binding_id as binding, channel, corrupt, to_u64, user};
use mongodb::bson::{doc, Bson, Document};

use crate::docs::{CardDataDoc, CardDataKeyDoc, ChannelRefDoc, OwnerDoc, ReviewDoc, SealedDoc};
use crate::schema::labels::*;
use crate::store::{collect, is_duplicate, limit_i64, map_err, try_insert, walk_after, MongoStore};

#[async_trait]
impl CardDataStore for MongoStore {
    async fn put(&self, data: &CardData) -> Result<(), StoreError> {
        self.timed(async {
            let d = CardDataDoc {
                binding: data.binding.as_str().to_owned(),
                generation: i64::from(data.generation),
                user: data.user.as_str().to_owned(),
                sealed: SealedDoc::from(&data.sealed),
            };
            // The commit point: unique (binding, generation).
            if try_insert(&self.card_data, &d, CARD_DATA_PUT).await? {
                Ok(())
            } else {
                Err(StoreError::Duplicate)
            }
        })
        .await
    }

    async fn get(
        &self,
        user_id: &UserId,
        binding_id: &BindingId,
        generation: u32,
    ) -> Result<Option<CardData>, StoreError> {
        self.timed(async {
            let found = self
                .card_data
                .find_one(doc! {
                    "binding": binding_id.as_str(),
                    "generation": i64::from(generation),
                    "user": user_id.as_str(),
                })
                .max_time(self.op_timeout)
                .comment(CARD_DATA_GET)
                .await
                .map_err(map_err)?;
            found
                .map(|d| {
                    Ok(CardData {
                        binding: binding(&d.binding)?,
                        user: user(&d.user)?,
                        generation: u32::try_from(to_u64(d.generation, "generation")?)
                            .map_err(|_| corrupt("generation", "out of range"))?,
                        sealed: d.sealed.into(),
                    })
                })
                .transpose()
        })
        .await
    }

    async fn owner(&self, binding_id: &BindingId) -> Result<Option<UserId>, StoreError> {
        self.timed(async {
            let found = self
                .card_data
                .clone_with_type::<OwnerDoc>()
                .find_one(doc! { "binding": binding_id.as_str() })
                .projection(doc! { "_id": 0, "user": 1 })
                .max_time(self.op_timeout)
                .comment(CARD_DATA_OWNER)
                .await
                .map_err(map_err)?;
            found.map(|d| user(&d.user)).transpose()
        })
        .await
    }

    async fn delete(
        &self,
        user_id: &UserId,
        binding_id: &BindingId,
        keep: Option<u32>,
    ) -> Result<u64, StoreError> {
        self.timed(async {
            let mut filter = doc! { "binding": binding_id.as_str(), "user": user_id.as_str() };
            if let Some(k) = keep {
                filter.insert("generation", doc! { "$ne": i64::from(k) });
            }
            let r = self
                .card_data
                .delete_many(filter)
                .comment(CARD_DATA_DELETE)
                .await
                .map_err(map_err)?;
            Ok(r.deleted_count)
        })
        .await
    }

    async fn delete_generation(
        &self,
        user_id: &UserId,
        binding_id: &BindingId,
        generation: u32,
    ) -> Result<u64, StoreError> {
        self.timed(async {
            let r = self
                .card_data
                .delete_one(doc! {
                    "binding": binding_id.as_str(),
                    "generation": i64::from(generation),
                    "user": user_id.as_str(),
                })
                .comment(CARD_DATA_DELETE_GENERATION)
                .await
                .map_err(map_err)?;
            Ok(r.deleted_count)
        })
        .await
    }

    async fn list_keys(
        &self,
        after: Option<(BindingId, u32)>,
        limit: u32,
    ) -> Result<Vec<CardDataKey>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.timed(async {
            let filter = walk_after(
                "binding",
                "generation",
                after.map(|(b, g)| (b.as_str().into(), i64::from(g).into())),
            );
            let cursor = self
                .card_data
                .clone_with_type::<CardDataKeyDoc>()
                .find(filter)
                .projection(doc! { "_id": 0, "binding": 1, "generation": 1, "user": 1 })
                .sort(doc! { "binding": 1, "generation": 1 })
                .limit(i64::from(limit))
                .max_time(self.op_timeout)
                .comment(CARD_DATA_LIST_KEYS)
                .await
                .map_err(map_err)?;
            collect(cursor, limit as usize)
                .await?
                .into_iter()
                .map(|d| {
                    Ok(CardDataKey {
                        binding: binding(&d.binding)?,
                        generation: u32::try_from(d.generation)
                            .map_err(|_| corrupt("generation", d.generation))?,
                        user: user(&d.user)?,
                    })
                })
                .collect()
        })
        .await
    }
}

impl MongoStore {
    /// The document of a channel reference.
    async fn ref_doc(
        &self,
        channel: &ChannelName,
        channel_ref: &str,
    ) -> Result<Option<ChannelRefDoc>, StoreError> {
        self.channel_refs
            .find_one(doc! { "channel": channel.as_str(), "channel_ref": channel_ref })
            .max_time(self.op_timeout)
            .comment(CHANNEL_REFS_FIND)
            .await
            .map_err(map_err)
    }
}

#[async_trait]
impl ChannelRefs for MongoStore {
    async fn put(
        &self,
        channel: &ChannelName,
        channel_ref: &str,
        target: &RefTarget,
        generation: u32,
    ) -> Result<bool, StoreError> {
        self.timed(async {
            let d = ChannelRefDoc {
                channel: channel.as_str().to_owned(),
                channel_ref: channel_ref.to_owned(),
                user: target.user.as_str().to_owned(),
                binding: target.binding.as_str().to_owned(),
                generation: Some(i64::from(generation)),
            };
            // Unique (channel, channel_ref): the first target stays; the
            // same again (or another) is not an error.
            let raw = self.channel_refs.clone_with_type::<Document>();
            let key = doc! { "channel": channel.as_str(), "channel_ref": channel_ref };
            for _ in 0..3 {
                if try_insert(&self.channel_refs, &d, CHANNEL_REFS_PUT).await? {
                    return Ok(true);
                }
                // Already there. Another binding's stays as it is; the same
                // binding's, recorded by another bind (a channel that gives
                // a card the same reference at every bind), becomes this
                // bind's: the document read is deleted as read (its `_id`
                // and generation) and this one inserted in its place, never
                // updated where it is: FerretDB does not tie an update to
                // its read, so an unbind's delete of the bind before's
                // record could remove this bind's. (Gone between the two:
                // inserted again.)
                let Some(found) = raw
                    .find_one(key.clone())
                    .max_time(self.op_timeout)
                    .comment(CHANNEL_REFS_FIND)
                    .await
                    .map_err(map_err)?
                else {
                    continue;
                };
                let (user, binding) = (found.get_str("user"), found.get_str("binding"));
                if user != Ok(d.user.as_str()) || binding != Ok(d.binding.as_str()) {
                    return Ok(false);
                }
                let read_generation = found.get("generation").cloned().unwrap_or(Bson::Null);
                if read_generation == Bson::Int64(i64::from(generation)) {
                    return Ok(true);
                }
                let Some(id) = found.get("_id").cloned() else {
                    return Err(StoreError::Corrupt(
                        "a channel reference without an _id".into(),
                    ));
                };
                let mut as_read = key.clone();
                as_read.insert("_id", id);
                as_read.insert("generation", read_generation);
                raw.delete_one(as_read)
                    .comment(CHANNEL_REFS_PUT)
                    .await
                    .map_err(map_err)?;
            }
            Err(StoreError::Unavailable(
                "a channel reference kept changing while it was recorded".into(),
            ))
        })
        .await
    }

    async fn find_entry(
        &self,
        channel: &ChannelName,
        channel_ref: &str,
    ) -> Result<Option<ChannelRefEntry>, StoreError> {
        self.timed(async {
            self.ref_doc(channel, channel_ref)
                .await?
                .map(ref_entry)
                .transpose()
        })
        .await
    }

    async fn delete_binding(
        &self,
        user: &UserId,
        binding: &BindingId,
        generation: Option<u32>,
    ) -> Result<u64, StoreError> {
        self.timed(async {
            let mut filter = doc! { "binding": binding.as_str(), "user": user.as_str() };
            if let Some(g) = generation {
                // This bind's, and those written before references
                // carried a generation (`null` matches a missing field).
                filter.insert(
                    "generation",
                    doc! { "$in": [i64::from(g), mongodb::bson::Bson::Null] },
                );
            }
            let r = self
                .channel_refs
                .delete_many(filter)
                .comment(CHANNEL_REFS_DELETE_BINDING)
                .await
                .map_err(map_err)?;
            Ok(r.deleted_count)
        })
        .await
    }

    async fn list(
        &self,
        after: Option<(ChannelName, String)>,
        limit: u32,
    ) -> Result<Vec<ChannelRefEntry>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.timed(async {
            let filter = walk_after(
                "channel",
                "channel_ref",
                after.map(|(c, r)| (c.as_str().into(), r.into())),
            );
            let cursor = self
                .channel_refs
                .find(filter)
                .projection(doc! {
                    "_id": 0, "channel": 1, "channel_ref": 1, "user": 1, "binding": 1, "generation": 1,
                })
                .sort(doc! { "channel": 1, "channel_ref": 1 })
                .limit(i64::from(limit))
                .max_time(self.op_timeout)
                .comment(CHANNEL_REFS_LIST)
                .await
                .map_err(map_err)?;
            collect(cursor, limit as usize)
                .await?
                .into_iter()
                .map(ref_entry)
                .collect()
        })
        .await
    }

    async fn delete_entry(&self, entry: &ChannelRefEntry) -> Result<u64, StoreError> {
        self.timed(async {
            // `null` also matches a document without the field (written
            // before references carried a generation).
            let generation = match entry.generation {
                Some(g) => mongodb::bson::Bson::Int64(i64::from(g)),
                None => mongodb::bson::Bson::Null,
            };
            let r = self
                .channel_refs
                .delete_one(doc! {
                    "channel": entry.channel.as_str(),
                    "channel_ref": entry.channel_ref.as_str(),
                    "user": entry.target.user.as_str(),
                    "binding": entry.target.binding.as_str(),
                    "generation": generation,
                })
                .comment(CHANNEL_REFS_DELETE_ENTRY)
                .await
                .map_err(map_err)?;
            Ok(r.deleted_count)
        })
        .await
    }
}

fn review_entry(d: ReviewDoc) -> Result<ReviewEntry, StoreError> {
    Ok(ReviewEntry {
        binding: binding(&d.binding)?,
        user: user(&d.user)?,
        since: Timestamp::from_unix_millis(d.since),
        link: to_u64(d.link, "review entry link")?,
    })
}

/// A link number as stored (an `i64`; "any" is the largest).
fn stored_link(link: u64) -> i64 {
    i64::try_from(link).unwrap_or(i64::MAX)
}

#[async_trait]
impl ReviewQueue for MongoStore {
    async fn add(&self, entry: &ReviewEntry) -> Result<(), StoreError> {
        self.timed(async {
            let link = stored_link(entry.link);
            // One upsert: it sets an entry of an earlier link (or of an
            // older version, without one) or inserts; an entry of this
            // link or a later one matches nothing, and the insert meets
            // the unique `binding` (kept: the first of a stint stays).
            // A duplicate key is an entry inserted between this upsert's
            // match and its insert: of an earlier stint (then the second
            // try sets it) or of this one or a later (then it stays).
            for tried in 0..2 {
                let done = self
                    .review
                    .update_one(
                        doc! { "binding": entry.binding.as_str(), "link": { "$not": { "$gte": link } } },
                        doc! { "$set": {
                            "user": entry.user.as_str(),
                            "since": entry.since.unix_millis(),
                            "link": link,
                        } },
                    )
                    .upsert(true)
                    .comment(REVIEW_ADD)
                    .await;
                match done {
                    Ok(_) => return Ok(()),
                    Err(e) if is_duplicate(&e) && tried == 0 => continue,
                    Err(e) if is_duplicate(&e) => return Ok(()),
                    Err(e) => return Err(map_err(e)),
                }
            }
            Ok(())
        })
        .await
    }

    async fn get(&self, binding_id: &BindingId) -> Result<Option<ReviewEntry>, StoreError> {
        self.timed(async {
            self.review
                .find_one(doc! { "binding": binding_id.as_str() })
                .max_time(self.op_timeout)
                .comment(REVIEW_GET)
                .await
                .map_err(map_err)?
                .map(review_entry)
                .transpose()
        })
        .await
    }

    async fn remove(&self, binding_id: &BindingId, upto: u64) -> Result<(), StoreError> {
        self.timed(async {
            // `$not`: an entry of an older version, without a link, goes
            // with any removal.
            self.review
                .delete_one(doc! {
                    "binding": binding_id.as_str(),
                    "link": { "$not": { "$gt": stored_link(upto) } },
                })
                .comment(REVIEW_REMOVE)
                .await
                .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn list(
        &self,
        after: Option<BindingId>,
        limit: u32,
    ) -> Result<Vec<ReviewEntry>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.timed(async {
            let filter = match &after {
                Some(a) => doc! { "binding": { "$gt": a.as_str() } },
                None => doc! {},
            };
            let cursor = self
                .review
                .find(filter)
                .sort(doc! { "binding": 1 })
                .limit(limit_i64(limit))
                .max_time(self.op_timeout)
                .comment(REVIEW_LIST)
                .await
                .map_err(map_err)?;
            collect(cursor, limit as usize)
                .await?
                .into_iter()
                .map(review_entry)
                .collect()
        })
        .await
    }
}

/// A stored reference, parsed back.
fn ref_entry(d: ChannelRefDoc) -> Result<ChannelRefEntry, StoreError> {
    Ok(ChannelRefEntry {
        channel: channel(&d.channel)?,
        target: RefTarget {
            user: user(&d.user)?,
            binding: binding(&d.binding)?,
        },
        generation: d
            .generation
            .map(|g| u32::try_from(g).map_err(|_| corrupt("generation", g)))
            .transpose()?,
        channel_ref: d.channel_ref,
    })
}
