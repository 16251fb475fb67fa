//! `BindingStore`: binding records (materialised in `bindings`, changed
//! through `binding_changes`) and the default pointer (`user_defaults`).

use async_trait::async_trait;
use cardbind_domain::{
    Binding, BindingId, BindingStatus, ChannelName, Fingerprint, Timestamp, UserId,
};
use cardbind_ports::store::BindingStore;
use cardbind_ports::StoreError;
use mongodb::bson::doc;

use crate::chain::{by_id, chain_head};
use crate::docs::{
    dt, link_id, pair_key, to_i64, BindingChangeDoc, BindingDoc, BindingKeyDoc, DefaultDoc,
    UserBindingDoc,
};
use crate::idempotency::PURGE_BATCH;
use crate::store::{
    is_duplicate, limit_i64, map_err, page_by_id, try_insert, wall_now, MongoStore,
};

/// Hint kinds (see `chain::Hints`).
const USER_BINDINGS: &str = "user_bindings";
const DEFAULTS: &str = "user_defaults";

/// Rounds of claiming the next link of a user's list; each round one
/// concurrent writer wins.
const MAX_LINK_ROUNDS: usize = 64;

/// How many committed-but-unwritten changes `load` applies in one call
/// (normally at most one exists: the change in flight).
const MAX_ROLL_FORWARD: usize = 16;

impl MongoStore {
    /// The binding as of its last committed change: the stored document,
    /// rolled forward through `binding_changes` when a change was committed
    /// but not yet (or, after a crash, never) written to `bindings`.
    async fn load(&self, id: &str) -> Result<Option<BindingDoc>, StoreError> {
        let mut current = self
            .bindings
            .find_one(doc! { "_id": id })
            .await
            .map_err(map_err)?;
        for _ in 0..MAX_ROLL_FORWARD {
            let Some(b) = current else { return Ok(None) };
            let change = self
                .binding_changes
                .find_one(doc! { "_id": link_id(id, b.version) })
                .await
                .map_err(map_err)?;
            match change {
                Some(c) if c.binding.version > b.version => {
                    // By `_id` alone: FerretDB reads any other filter by
                    // scanning the collection. Racing writers of this
                    // document write committed versions only; one that
                    // lands late and writes back an older one is rolled
                    // forward again by the next read (its change is kept).
                    self.bindings
                        .replace_one(doc! { "_id": id }, &c.binding)
                        .await
                        .map_err(map_err)?;
                    current = self
                        .bindings
                        .find_one(doc! { "_id": id })
                        .await
                        .map_err(map_err)?;
                }
                _ => return Ok(Some(b)),
            }
        }
        Err(StoreError::Unavailable(format!(
            "binding {id}: more than {MAX_ROLL_FORWARD} pending changes"
        )))
    }

    async fn load_binding(&self, id: &str) -> Result<Option<Binding>, StoreError> {
        self.load(id)
            .await?
            .map(BindingDoc::into_domain)
            .transpose()
    }

    async fn latest_default(&self, user: &str) -> Result<Option<DefaultDoc>, StoreError> {
        let head = chain_head(&self.defaults, user, 0, self.hints.get(DEFAULTS, user)).await?;
        if let Some((n, _)) = &head {
            self.hints.set(DEFAULTS, user, *n);
        }
        Ok(head.map(|(_, d)| d))
    }

    /// The entries of `user`'s binding list (`user_bindings`), oldest first.
    async fn user_links(&self, user: &str) -> Result<Vec<UserBindingDoc>, StoreError> {
        let Some((head, last)) = chain_head(
            &self.user_bindings,
            user,
            0,
            self.hints.get(USER_BINDINGS, user),
        )
        .await?
        else {
            return Ok(Vec::new());
        };
        self.hints.set(USER_BINDINGS, user, head);
        let mut out = Vec::with_capacity(usize::try_from(head + 1).unwrap_or(0));
        for n in 0..head {
            if let Some(l) = by_id(&self.user_bindings, &link_id(user, n)).await? {
                out.push(l);
            }
        }
        out.push(last);
        Ok(out)
    }

    /// Puts `binding` on its user's list unless it is there already.
    async fn link_to_user(&self, b: &BindingDoc) -> Result<(), StoreError> {
        let user = b.user_id.as_str();
        for _ in 0..MAX_LINK_ROUNDS {
            let links = self.user_links(user).await?;
            if links.iter().any(|l| l.binding_id == b.id) {
                return Ok(());
            }
            if self
                .claim_user_link(b, links.last().map_or(0, |l| l.n + 1))
                .await?
            {
                return Ok(());
            }
        }
        Err(StoreError::Unavailable(format!(
            "binding list of {user} still contended"
        )))
    }

    /// Puts a binding that was just committed (so on no list yet) on its
    /// user's list: tries the position after the hint (or 0) before
    /// reading anything. Links are never deleted and a hint is a position
    /// that existed, so a free position there is the end of the list.
    async fn append_user_link(&self, b: &BindingDoc) -> Result<(), StoreError> {
        let n = self
            .hints
            .get(USER_BINDINGS, &b.user_id)
            .map_or(0, |h| h + 1);
        if self.claim_user_link(b, n).await? {
            return Ok(());
        }
        self.link_to_user(b).await
    }

    /// Commit point of a list entry: link n exists once.
    async fn claim_user_link(&self, b: &BindingDoc, n: i64) -> Result<bool, StoreError> {
        let user = b.user_id.as_str();
        let link = UserBindingDoc {
            id: link_id(user, n),
            user_id: user.to_owned(),
            n,
            binding_id: b.id.clone(),
            fingerprint: b.fingerprint.clone(),
        };
        let won = try_insert(&self.user_bindings, &link).await?;
        if won {
            self.hints.set(USER_BINDINGS, user, n);
        }
        Ok(won)
    }

    /// Finishes a binding whose key was committed but whose inserter
    /// stopped before writing it to `bindings` (or its user's list):
    /// idempotent, any instance may do it.
    async fn materialise(&self, key: &BindingKeyDoc) -> Result<(), StoreError> {
        self.link_to_user(&key.binding).await?;
        match self.bindings.insert_one(&key.binding).await {
            Ok(_) => Ok(()),
            Err(e) if is_duplicate(&e) => Ok(()),
            Err(e) => Err(map_err(e)),
        }
    }

    /// The binding of (user, fingerprint), rolled forward: its key, then
    /// the record (written from the key first if that was never done).
    async fn load_by_key(
        &self,
        user: &str,
        fingerprint: &str,
    ) -> Result<Option<BindingDoc>, StoreError> {
        let Some(key) = by_id(&self.binding_keys, &pair_key(user, fingerprint)).await? else {
            return Ok(None);
        };
        let found = match self.load(&key.binding_id).await? {
            Some(b) => Some(b),
            None => {
                self.materialise(&key).await?;
                self.load(&key.binding_id).await?
            }
        };
        // The key of an insert that then found its id taken by another
        // card (it deletes its key again) names that other card's record.
        Ok(found.filter(|b| b.user_id == user && b.fingerprint == fingerprint))
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
            // Commit point: the (user, card) key, unique by `_id`. Of
            // concurrent inserts of one card exactly one lands; it carries
            // the whole record, so the steps below can be redone by anyone.
            let key = BindingKeyDoc {
                id: pair_key(&d.user_id, &d.fingerprint),
                binding_id: d.id.clone(),
                binding: d.clone(),
                written_at: wall_now(),
            };
            if !try_insert(&self.binding_keys, &key).await? {
                return Err(StoreError::Duplicate);
            }
            self.append_user_link(&d).await?;
            match self.bindings.insert_one(&d).await {
                Ok(_) => Ok(()),
                Err(e) if is_duplicate(&e) => {
                    // The id belongs to another record (or, on an old
                    // database, the unique (user, card) index knows a record
                    // without a key): give the key back. Meanwhile readers
                    // of the key found a record of another card, and
                    // ignored it (`load_by_key`).
                    self.binding_keys
                        .delete_one(doc! { "_id": &key.id })
                        .await
                        .map_err(map_err)?;
                    Err(StoreError::Duplicate)
                }
                Err(e) => Err(map_err(e)),
            }
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
            // 3. Write the document, by `_id` alone (see `load`). Older
            //    changes are deleted by the purge, once past the GC margin.
            self.bindings
                .replace_one(doc! { "_id": &id }, &new)
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
            self.load_by_key(user.as_str(), &fingerprint.to_string())
                .await?
                .map(BindingDoc::into_domain)
                .transpose()
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
                        .filter(|l| {
                            l.channel == channel.as_str()
                                && l.channel_ref.as_deref() == Some(channel_ref)
                        })
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
            // The user's list, then each record as of its last committed
            // change. Costs reads in the number of the user's cards, not of
            // all records.
            let mut links = self.user_links(user.as_str()).await?;
            links.sort_by(|a, b| a.binding_id.cmp(&b.binding_id));
            links.dedup_by(|a, b| a.binding_id == b.binding_id);
            let mut out = Vec::new();
            for l in links {
                if after
                    .as_ref()
                    .is_some_and(|a| l.binding_id.as_str() <= a.as_str())
                {
                    continue;
                }
                let found = match self.load(&l.binding_id).await? {
                    Some(b) => Some(b),
                    // Not written (yet): committed only if its key names it.
                    None => self.load_by_key(user.as_str(), &l.fingerprint).await?,
                };
                match found {
                    Some(b) if b.id == l.binding_id && b.user_id == user.as_str() => {
                        out.push(b.into_domain()?)
                    }
                    // A lost race for the card, or an id taken by another.
                    _ => {}
                }
                if out.len() >= limit as usize {
                    break;
                }
            }
            Ok(out)
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
            let docs: Vec<BindingDoc> =
                page_by_id(&self.bindings, filter, limit_i64(limit)).await?;
            collect(docs)
        })
        .await
    }

    async fn get_default(&self, user: &UserId) -> Result<Option<BindingId>, StoreError> {
        self.timed(async {
            match self
                .latest_default(user.as_str())
                .await?
                .and_then(|d| d.binding_id)
            {
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
            // A user this process has not seen, expected to have no
            // pointer: try value 0 before reading (it exists only if some
            // value was ever written).
            if expected.is_none() && self.hints.get(DEFAULTS, user).is_none() {
                let d = DefaultDoc {
                    id: link_id(user, 0),
                    user_id: user.to_owned(),
                    seq: 0,
                    binding_id: new.as_ref().map(|b| b.as_str().to_owned()),
                    written_at: wall_now(),
                };
                if try_insert(&self.defaults, &d).await? {
                    self.hints.set(DEFAULTS, user, 0);
                    return Ok(true);
                }
            }
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
            // Superseded values are kept: the chain stays gapless from 0,
            // which `latest_default` relies on (they are small).
            if !try_insert(&self.defaults, &d).await? {
                return Ok(false);
            }
            self.hints.set(DEFAULTS, user, next);
            Ok(true)
        })
        .await
    }
}

impl MongoStore {
    /// Deletes the binding changes that are older than the GC margin and
    /// already written to their record (the record is at or past their
    /// version). Run by the purge (it scans `binding_changes`), never on a
    /// request. Returns how many were deleted.
    pub(crate) async fn purge_superseded_changes(&self) -> Result<u64, StoreError> {
        let cutoff = self.gc_cutoff();
        let mut deleted = 0u64;
        let mut after: Option<String> = None;
        loop {
            let (n, last, d) = self
                .timed(async {
                    let mut filter = doc! { "written_at": { "$lt": cutoff } };
                    if let Some(a) = &after {
                        filter.insert("_id", doc! { "$gt": a.as_str() });
                    }
                    let batch: Vec<BindingChangeDoc> =
                        page_by_id(&self.binding_changes, filter, PURGE_BATCH as i64).await?;
                    let mut d = 0u64;
                    for c in &batch {
                        let written = by_id(&self.bindings, &c.binding_id)
                            .await?
                            .is_some_and(|b| b.version >= c.binding.version);
                        if written {
                            self.binding_changes
                                .delete_one(doc! { "_id": &c.id })
                                .await
                                .map_err(map_err)?;
                            d += 1;
                        }
                    }
                    Ok((batch.len(), batch.last().map(|c| c.id.clone()), d))
                })
                .await?;
            deleted += d;
            if n < PURGE_BATCH {
                return Ok(deleted);
            }
            after = last;
        }
    }
}
