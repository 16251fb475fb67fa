//! `BindingStore`: binding records (materialised in `bindings`, changed
//! through `binding_changes`) and the default pointer (`user_defaults`).

use async_trait::async_trait;
use cardbind_domain::{Binding, BindingId, BindingStatus, ChannelName, Fingerprint, Timestamp, UserId};
use cardbind_ports::store::BindingStore;
use cardbind_ports::StoreError;
use futures::TryStreamExt;
use mongodb::bson::doc;

use crate::docs::{dt, link_id, to_i64, BindingChangeDoc, BindingDoc, DefaultDoc};
use crate::store::{limit_i64, map_err, try_insert, wall_now, MongoStore};

/// How many committed-but-unwritten changes `load` applies in one call
/// (normally at most one exists: the change in flight).
const MAX_ROLL_FORWARD: usize = 16;

impl MongoStore {
    /// The binding as of its last committed change: the stored document,
    /// rolled forward through `binding_changes` when a change was committed
    /// but not yet (or, after a crash, never) written to `bindings`.
    async fn load(&self, id: &str) -> Result<Option<BindingDoc>, StoreError> {
        let mut current = self.bindings.find_one(doc! { "_id": id }).await.map_err(map_err)?;
        for _ in 0..MAX_ROLL_FORWARD {
            let Some(b) = current else { return Ok(None) };
            let change = self
                .binding_changes
                .find_one(doc! { "_id": link_id(id, b.version) })
                .await
                .map_err(map_err)?;
            match change {
                Some(c) if c.binding.version > b.version => {
                    self.bindings
                        .replace_one(doc! { "_id": id, "version": b.version }, &c.binding)
                        .await
                        .map_err(map_err)?;
                    current = self.bindings.find_one(doc! { "_id": id }).await.map_err(map_err)?;
                }
                _ => return Ok(Some(b)),
            }
        }
        Err(StoreError::Unavailable(format!(
            "binding {id}: more than {MAX_ROLL_FORWARD} pending changes"
        )))
    }

    async fn load_binding(&self, id: &str) -> Result<Option<Binding>, StoreError> {
        self.load(id).await?.map(BindingDoc::into_domain).transpose()
    }

    async fn latest_default(&self, user: &str) -> Result<Option<DefaultDoc>, StoreError> {
        self.defaults
            .find_one(doc! { "user_id": user })
            .sort(doc! { "seq": -1 })
            .await
            .map_err(map_err)
    }
}

fn collect(docs: Vec<BindingDoc>) -> Result<Vec<Binding>, StoreError> {
    docs.into_iter().map(BindingDoc::into_domain).collect()
}

#[async_trait]
impl BindingStore for MongoStore {
    async fn insert(&self, binding: &Binding) -> Result<(), StoreError> {
        let d = BindingDoc::from_domain(binding)?;
        self.timed(async {
            // `_id` and the unique (user_id, fingerprint) index: of two
            // concurrent inserts of one (user, card) exactly one lands.
            self.bindings.insert_one(&d).await.map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn update(&self, binding: &Binding, expected_version: u64) -> Result<(), StoreError> {
        let new = BindingDoc::from_domain(binding)?;
        let expected = to_i64(expected_version, "expected version")?;
        if new.version <= expected {
            // Each version has one successor; a non-increasing version
            // could not be told apart from the one it replaces.
            return Err(StoreError::Conflict);
        }
        let id = new.id.clone();
        self.timed(async {
            // 1. The record must exist at the expected version (as of its
            //    last committed change).
            match self.load(&id).await? {
                Some(cur) if cur.version == expected => {}
                _ => return Err(StoreError::Conflict),
            }
            // 2. Commit point: the one successor of `expected`.
            let change = BindingChangeDoc {
                id: link_id(&id, expected),
                binding_id: id.clone(),
                from_version: expected,
                binding: new.clone(),
                written_at: wall_now(),
            };
            if !try_insert(&self.binding_changes, &change).await? {
                // Another writer committed a successor first (its document
                // write may still be under way: finish it for them).
                self.load(&id).await?;
                return Err(StoreError::Conflict);
            }
            // 3. Write the document. Matches nothing only if a reader has
            //    already rolled this very change forward.
            self.bindings
                .replace_one(doc! { "_id": &id, "version": expected }, &new)
                .await
                .map_err(map_err)?;
            // 4. Older changes are history. They are kept for the GC margin
            //    (far beyond any operation's lifetime) so that a stale
            //    writer's step 2 still collides instead of re-inserting a
            //    cleaned-up link.
            self.binding_changes
                .delete_many(doc! {
                    "binding_id": &id,
                    "from_version": { "$lt": expected },
                    "written_at": { "$lt": self.gc_cutoff() },
                })
                .await
                .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn get(&self, id: &BindingId) -> Result<Option<Binding>, StoreError> {
        self.timed(self.load_binding(id.as_str())).await
    }

    async fn find_by_fingerprint(
        &self,
        user: &UserId,
        fingerprint: &Fingerprint,
    ) -> Result<Option<Binding>, StoreError> {
        self.timed(async {
            let found = self
                .bindings
                .find_one(doc! { "user_id": user.as_str(), "fingerprint": fingerprint.to_string() })
                .await
                .map_err(map_err)?;
            match found {
                // user and fingerprint never change: the latest version is
                // the same record's.
                Some(b) => self.load_binding(&b.id).await,
                None => Ok(None),
            }
        })
        .await
    }

    async fn find_by_channel_ref(
        &self,
        channel: &ChannelName,
        channel_ref: &str,
    ) -> Result<Option<Binding>, StoreError> {
        self.timed(async {
            let found = self
                .bindings
                .find_one(doc! { "channel": channel.as_str(), "channel_ref": channel_ref })
                .sort(doc! { "_id": 1 })
                .await
                .map_err(map_err)?;
            match found {
                Some(b) => {
                    let latest = self.load(&b.id).await?;
                    latest
                        .filter(|l| l.channel == channel.as_str() && l.channel_ref.as_deref() == Some(channel_ref))
                        .map(BindingDoc::into_domain)
                        .transpose()
                }
                None => Ok(None),
            }
        })
        .await
    }

    async fn list_by_user(
        &self,
        user: &UserId,
        after: Option<BindingId>,
        limit: u32,
    ) -> Result<Vec<Binding>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.timed(async {
            let mut filter = doc! { "user_id": user.as_str() };
            if let Some(a) = &after {
                filter.insert("_id", doc! { "$gt": a.as_str() });
            }
            let docs: Vec<BindingDoc> = self
                .bindings
                .find(filter)
                .sort(doc! { "_id": 1 })
                .limit(limit_i64(limit))
                .await
                .map_err(map_err)?
                .try_collect()
                .await
                .map_err(map_err)?;
            collect(docs)
        })
        .await
    }

    async fn list_by_status(
        &self,
        status: BindingStatus,
        updated_before: Option<Timestamp>,
        after: Option<BindingId>,
        limit: u32,
    ) -> Result<Vec<Binding>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.timed(async {
            let mut filter = doc! { "status": status.as_str() };
            if let Some(t) = updated_before {
                filter.insert("updated_at", doc! { "$lt": dt(t) });
            }
            if let Some(a) = &after {
                filter.insert("_id", doc! { "$gt": a.as_str() });
            }
            let docs: Vec<BindingDoc> = self
                .bindings
                .find(filter)
                .sort(doc! { "_id": 1 })
                .limit(limit_i64(limit))
                .await
                .map_err(map_err)?
                .try_collect()
                .await
                .map_err(map_err)?;
            collect(docs)
        })
        .await
    }

    async fn get_default(&self, user: &UserId) -> Result<Option<BindingId>, StoreError> {
        self.timed(async {
            match self.latest_default(user.as_str()).await?.and_then(|d| d.binding_id) {
                Some(id) => BindingId::parse(&id)
                    .map(Some)
                    .map_err(|_| StoreError::Corrupt(format!("default of {user}: bad binding id"))),
                None => Ok(None),
            }
        })
        .await
    }

    async fn replace_default(
        &self,
        user: &UserId,
        expected: Option<BindingId>,
        new: Option<BindingId>,
    ) -> Result<bool, StoreError> {
        let user = user.as_str();
        self.timed(async {
            let latest = self.latest_default(user).await?;
            let (seq, current) = match latest {
                Some(d) => (d.seq, d.binding_id),
                None => (-1, None),
            };
            if current.as_deref() != expected.as_ref().map(BindingId::as_str) {
                return Ok(false);
            }
            let next = seq + 1;
            let d = DefaultDoc {
                id: link_id(user, next),
                user_id: user.to_owned(),
                seq: next,
                binding_id: new.as_ref().map(|b| b.as_str().to_owned()),
                written_at: wall_now(),
            };
            // Commit point: the one successor of `seq`.
            if !try_insert(&self.defaults, &d).await? {
                return Ok(false);
            }
            self.defaults
                .delete_many(doc! {
                    "user_id": user,
                    "seq": { "$lt": next },
                    "written_at": { "$lt": self.gc_cutoff() },
                })
                .await
                .map_err(map_err)?;
            Ok(true)
        })
        .await
    }
}
