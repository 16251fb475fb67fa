//! `WalletStore` and `AuditLog`: the chains of links in `links`.

use std::collections::BTreeMap;
use std::time::Instant;

use async_trait::async_trait;
use cardbind_domain::{Timestamp, UserId, Wallet};
use cardbind_ports::audit::{
    next_link, AuditAction, AuditCursor, AuditEvent, AuditFilter, AuditLog, AuditRecord, ChainHead,
    ChainId, Link, LinkStamp, STORED_LISTING_ALTERED, STORED_WALLET_ALTERED, STORED_WALLET_MISSING,
};
use cardbind_ports::store::{LinkKey, PendingLink, StoredWallet, WalletStore};
use cardbind_ports::StoreError;
use cardbind_records::{
    corrupt, event_actions, event_bindings, event_users, events_into_domain, has_pending, to_i64,
    to_u64, wallet_digest, wallet_json, EventRecord, WalletRecord,
};
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};

use crate::docs::{ChainHeadDoc, HeadDoc, LinkDoc, LinkKeyDoc, StampDoc};
use crate::schema::labels::*;
use crate::store::{collect, limit_i64, map_err, try_insert, MongoStore};

/// Links deleted per batch by the purge.
const PURGE_BATCH: i64 = 500;

fn ms(t: Timestamp) -> i64 {
    t.unix_millis()
}

fn link_doc(link: &Link, wallet: Option<&Wallet>) -> Result<LinkDoc, StoreError> {
    Ok(LinkDoc {
        chain: link.chain.as_str().to_owned(),
        seq: to_i64(link.seq, "link number")?,
        at: ms(link.at),
        prev_hash: link.prev_hash.clone(),
        hash: link.hash.clone(),
        events: link.events.iter().map(EventRecord::from).collect(),
        users: event_users(&link.events),
        bindings: event_bindings(&link.events),
        actions: event_actions(&link.events),
        wallet: wallet.map(WalletRecord::from),
        wallet_digest: link.wallet_digest.clone(),
        pending: wallet.is_some_and(has_pending),
        primary_head: wallet.is_some_and(|w| !w.shares().is_empty()),
    })
}

fn chain_id(s: &str) -> Result<ChainId, StoreError> {
    ChainId::parse(s).ok_or_else(|| corrupt("chain", s))
}

/// A link as the chain's walk (`audit verify`) reads it, with what the
/// document keeps beside it that does not agree with it
/// ([`Link::stored_apart`]): its wallet must be the one its digest names
/// (the hash covers the digest), and be there (every link that covers a
/// wallet keeps its copy); its listing fields (`users`, `bindings`,
/// `actions`) must be what its events give (the hash covers the events,
/// not these, and an edited one would move an event between the audit
/// listing's filters unseen).
fn walked_link(d: LinkDoc) -> Result<Link, StoreError> {
    let wallet = match (&d.wallet, &d.wallet_digest) {
        (Some(w), Some(digest)) if wallet_digest(&w.json()?) != *digest => {
            Some(STORED_WALLET_ALTERED)
        }
        (None, Some(_)) => Some(STORED_WALLET_MISSING),
        _ => None,
    };
    let (users, bindings, actions) = (d.users.clone(), d.bindings.clone(), d.actions.clone());
    let mut link = into_link(d)?;
    let listed_apart = users != event_users(&link.events)
        || bindings != event_bindings(&link.events)
        || actions != event_actions(&link.events);
    link.stored_apart = wallet.or(listed_apart.then_some(STORED_LISTING_ALTERED));
    Ok(link)
}

fn into_link(d: LinkDoc) -> Result<Link, StoreError> {
    let events = events_into_domain(d.events)?;
    Ok(Link {
        chain: chain_id(&d.chain)?,
        seq: to_u64(d.seq, "link number")?,
        at: Timestamp::from_unix_millis(d.at),
        events,
        wallet_digest: d.wallet_digest,
        prev_hash: d.prev_hash,
        hash: d.hash,
        stored_apart: None,
    })
}

fn head_of(d: &HeadDoc) -> Result<ChainHead, StoreError> {
    Ok(ChainHead {
        seq: to_u64(d.seq, "link number")?,
        hash: d.hash.clone(),
        at: Timestamp::from_unix_millis(d.at),
    })
}

/// `{$or: …}` selecting (at, chain, seq) keys after the given one (`seq`
/// compared with `seq_op`: `$gt` strictly after, `$gte` from that link on).
fn after_key(at: i64, chain: &str, seq: i64, seq_op: &str) -> Bson {
    Bson::Array(vec![
        Bson::Document(doc! { "at": { "$gt": at } }),
        Bson::Document(doc! { "at": at, "chain": { "$gt": chain } }),
        Bson::Document(doc! { "at": at, "chain": chain, "seq": { seq_op: seq } }),
    ])
}

const TIME_ORDER: fn() -> Document = || doc! { "at": 1, "chain": 1, "seq": 1 };

impl MongoStore {
    /// The newest link of `chain`: one `find` on (chain, seq) backwards.
    async fn head(&self, chain: &str, label: &'static str) -> Result<Option<HeadDoc>, StoreError> {
        self.links
            .clone_with_type::<HeadDoc>()
            .find_one(doc! { "chain": chain })
            .sort(doc! { "seq": -1 })
            .projection(doc! { "_id": 0, "seq": 1, "at": 1, "hash": 1, "wallet": 1 })
            .max_time(self.op_timeout)
            .comment(label)
            .await
            .map_err(map_err)
    }

    /// One batch of the audit purge: the next `PURGE_BATCH` links older
    /// than `before` after `after`; deletes, per chain, those that are not
    /// its newest link. Returns (deleted, the last key seen, whether more
    /// may follow).
    async fn purge_batch(
        &self,
        before: i64,
        after: Option<(i64, String, i64)>,
    ) -> Result<(u64, Option<(i64, String, i64)>, bool), StoreError> {
        let mut filter = doc! { "at": { "$lt": before } };
        if let Some((at, chain, seq)) = &after {
            filter.insert("$or", after_key(*at, chain, *seq, "$gt"));
        }
        let cursor = self
            .links
            .clone_with_type::<LinkKeyDoc>()
            .find(filter)
            .sort(TIME_ORDER())
            .projection(doc! { "_id": 0, "chain": 1, "seq": 1, "at": 1 })
            .limit(PURGE_BATCH)
            .max_time(self.op_timeout)
            .comment(AUDIT_PURGE_BEFORE)
            .await
            .map_err(map_err)?;
        let keys = collect(cursor, PURGE_BATCH as usize).await?;
        let more = keys.len() as i64 == PURGE_BATCH;
        let last = keys.last().map(|k| (k.at, k.chain.clone(), k.seq));
        // Instants never go backwards along a chain, so the old links of a
        // chain are a prefix of it: deleting up to the oldest of (the
        // newest old one, the one before the newest) deletes only old
        // links, from the start, never the newest.
        let mut upto: BTreeMap<String, i64> = BTreeMap::new();
        for k in keys {
            let e = upto.entry(k.chain).or_insert(k.seq);
            *e = (*e).max(k.seq);
        }
        let mut deleted = 0;
        for (chain, max_old) in upto {
            let Some(newest) = self.head(&chain, AUDIT_PURGE_BEFORE).await? else {
                continue;
            };
            let last_deletable = max_old.min(newest.seq - 1);
            if last_deletable < 1 {
                continue;
            }
            let r = self
                .links
                .delete_many(doc! { "chain": &chain, "seq": { "$lte": last_deletable } })
                .comment(AUDIT_PURGE_BEFORE)
                .await
                .map_err(map_err)?;
            deleted += r.deleted_count;
        }
        Ok((deleted, last, more))
    }
}

#[async_trait]
impl WalletStore for MongoStore {
    async fn load(&self, user: &UserId) -> Result<Option<StoredWallet>, StoreError> {
        self.timed(async {
            let Some(d) = self.head(user.as_str(), WALLETS_LOAD).await? else {
                return Ok(None);
            };
            let head = head_of(&d)?;
            self.known_heads().remember(user.as_str(), &head);
            let wallet = d
                .wallet
                .ok_or_else(|| corrupt("wallet link", "holds no wallet"))?
                .into_domain()?;
            if wallet.user() != user {
                return Err(corrupt("wallet link", "holds another user's wallet"));
            }
            Ok(Some(StoredWallet { wallet, head }))
        })
        .await
    }

    /// One `find` on the `chain_seq` index: the links of the named chains
    /// flagged `primary_head` (normally one per chain: its newest; an
    /// older one keeps the flag only until the next commit of its chain
    /// clears it), the newest of each kept. Only the chains of users who
    /// gave a family share carry the flag — the users a secondary's card
    /// list asks for. Any other user named is read as `load` reads it, one
    /// `find` each, concurrently.
    async fn load_many(&self, users: &[UserId]) -> Result<Vec<StoredWallet>, StoreError> {
        let mut names: Vec<&str> = users.iter().map(UserId::as_str).collect();
        names.sort_unstable();
        names.dedup();
        if names.is_empty() {
            return Ok(Vec::new());
        }
        self.timed(async {
            let batch = u32::try_from(2 * names.len() + 1).unwrap_or(u32::MAX);
            let cursor = self
                .links
                .clone_with_type::<ChainHeadDoc>()
                .find(doc! { "chain": { "$in": &names }, "primary_head": true })
                .projection(
                    doc! { "_id": 0, "chain": 1, "seq": 1, "at": 1, "hash": 1, "wallet": 1 },
                )
                .batch_size(batch)
                .max_time(self.op_timeout)
                .comment(WALLETS_LOAD_MANY)
                .await
                .map_err(map_err)?;
            let mut newest: BTreeMap<String, ChainHeadDoc> = BTreeMap::new();
            for d in collect(cursor, usize::MAX).await? {
                if !names.contains(&d.chain.as_str()) {
                    return Err(corrupt("wallet links", "a chain that was not asked for"));
                }
                if newest.get(&d.chain).is_none_or(|n| n.seq < d.seq) {
                    newest.insert(d.chain.clone(), d);
                }
            }
            let missing: Vec<&str> = names
                .iter()
                .copied()
                .filter(|n| !newest.contains_key(*n))
                .collect();
            let rest = futures::future::try_join_all(
                missing.iter().map(|n| self.head(n, WALLETS_LOAD_MANY)),
            )
            .await?;
            for (n, d) in missing.iter().zip(rest) {
                if let Some(d) = d {
                    newest.insert(
                        (*n).to_owned(),
                        ChainHeadDoc {
                            chain: (*n).to_owned(),
                            seq: d.seq,
                            at: d.at,
                            hash: d.hash,
                            wallet: d.wallet,
                        },
                    );
                }
            }
            let mut out = Vec::with_capacity(newest.len());
            for (chain, d) in newest {
                let head = ChainHead {
                    seq: to_u64(d.seq, "link number")?,
                    hash: d.hash,
                    at: Timestamp::from_unix_millis(d.at),
                };
                self.known_heads().remember(&chain, &head);
                let wallet = d
                    .wallet
                    .ok_or_else(|| corrupt("wallet link", "holds no wallet"))?
                    .into_domain()?;
                if wallet.user().as_str() != chain {
                    return Err(corrupt("wallet link", "holds another user's wallet"));
                }
                out.push(StoredWallet { wallet, head });
            }
            Ok(out)
        })
        .await
    }

    async fn commit(
        &self,
        wallet: &Wallet,
        after: Option<ChainHead>,
        events: Vec<AuditEvent>,
        now: Timestamp,
    ) -> Result<ChainHead, StoreError> {
        self.timed(async {
            let chain = wallet.user().as_str();
            if let Some(h) = &after {
                if !self.known_heads().knows(chain, h) {
                    // A head this process never saw: it must be the newest.
                    let newest = self.head(chain, WALLETS_COMMIT).await?;
                    match newest {
                        Some(d) if head_of(&d)? == *h => {}
                        _ => return Err(StoreError::Conflict),
                    }
                }
            }
            let digest = wallet_digest(&wallet_json(wallet)?);
            let link = next_link(
                ChainId::User(wallet.user().clone()),
                after.as_ref(),
                now,
                events,
                Some(digest),
            );
            let d = link_doc(&link, Some(wallet))?;
            // The commit point: the unique (chain, seq) index lets exactly
            // one link follow each link.
            if try_insert(&self.links, &d, WALLETS_COMMIT).await? {
                let head = link.head();
                self.known_heads().remember(chain, &head);
                if d.primary_head && d.seq > 1 {
                    // Only the newest link keeps the flag. Idempotent and
                    // in any order; left undone (a failure, a crash) it
                    // costs `load_many` a document, never a wrong answer.
                    let r = self
                        .links
                        .update_many(
                            doc! { "chain": chain, "seq": { "$lt": d.seq }, "primary_head": true },
                            doc! { "$unset": { "primary_head": "" } },
                        )
                        .comment(WALLETS_COMMIT)
                        .await;
                    if let Err(e) = r {
                        tracing::warn!(chain, error = %e, "older links keep the primary_head flag for now");
                    }
                }
                Ok(head)
            } else {
                Err(StoreError::Conflict)
            }
        })
        .await
    }

    async fn pending_links(
        &self,
        from: Timestamp,
        to: Timestamp,
        after: Option<LinkKey>,
        limit: u32,
    ) -> Result<Vec<PendingLink>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.timed(async {
            let mut filter = doc! { "pending": true, "at": { "$gte": ms(from), "$lt": ms(to) } };
            if let Some(a) = &after {
                let seq = to_i64(a.seq, "link number")?;
                filter.insert("$or", after_key(ms(a.at), a.user.as_str(), seq, "$gt"));
            }
            let cursor = self
                .links
                .clone_with_type::<LinkKeyDoc>()
                .find(filter)
                .sort(TIME_ORDER())
                .projection(doc! { "_id": 0, "chain": 1, "seq": 1, "at": 1 })
                .limit(limit_i64(limit))
                .max_time(self.op_timeout)
                .comment(WALLETS_PENDING_LINKS)
                .await
                .map_err(map_err)?;
            collect(cursor, limit as usize)
                .await?
                .into_iter()
                .map(|k| {
                    Ok(PendingLink {
                        key: LinkKey {
                            at: Timestamp::from_unix_millis(k.at),
                            user: UserId::parse(&k.chain).map_err(|e| corrupt("user id", e))?,
                            seq: to_u64(k.seq, "link number")?,
                        },
                    })
                })
                .collect()
        })
        .await
    }
}

#[async_trait]
impl AuditLog for MongoStore {
    async fn append_system(
        &self,
        events: Vec<AuditEvent>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.timed(async {
            // Appends of this process take turns: they would otherwise all
            // race for the same next link, and every loser pays a read.
            let mut known = self.system_head.lock().await;
            let system = ChainId::System;
            let mut head = match known.fresh() {
                Some(h) => Some(h),
                None => match self.head(system.as_str(), AUDIT_APPEND_SYSTEM).await? {
                    Some(d) => Some(head_of(&d)?),
                    None => None,
                },
            };
            loop {
                let link = next_link(system.clone(), head.as_ref(), now, events.clone(), None);
                let d = link_doc(&link, None)?;
                if try_insert(&self.links, &d, AUDIT_APPEND_SYSTEM).await? {
                    known.known = Some((link.head(), Instant::now()));
                    return Ok(());
                }
                // Another instance appended first: continue after its link.
                head = match self.head(system.as_str(), AUDIT_APPEND_SYSTEM).await? {
                    Some(d) => Some(head_of(&d)?),
                    None => None,
                };
            }
        })
        .await
    }

    async fn list(
        &self,
        filter: &AuditFilter,
        after: Option<AuditCursor>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.timed(async {
            let mut q = Document::new();
            if let Some(u) = &filter.user_id {
                q.insert("users", u.as_str());
            }
            if let Some(b) = &filter.binding_id {
                q.insert("bindings", b.as_str());
            }
            if let Some(a) = filter.action {
                q.insert("actions", a.as_str());
            }
            let mut at = Document::new();
            if let Some(s) = filter.since {
                at.insert("$gte", ms(s));
            }
            if let Some(u) = filter.until {
                at.insert("$lt", ms(u));
            }
            if !at.is_empty() {
                q.insert("at", at);
            }
            let after_key_of = match &after {
                Some(a) => {
                    let seq = to_i64(a.seq, "link number")?;
                    q.insert("$or", after_key(ms(a.at), a.chain.as_str(), seq, "$gte"));
                    Some((ms(a.at), a.chain.as_str().to_owned(), seq, a.index))
                }
                None => None,
            };
            let mut cursor = self
                .links
                .find(q)
                // The events are listed, not the wallet each link keeps
                // (kilobytes a link: the card list of its user).
                .projection(doc! { "wallet": 0 })
                .sort(TIME_ORDER())
                .batch_size(limit.min(500))
                .max_time(self.op_timeout)
                .comment(AUDIT_LIST)
                .await
                .map_err(map_err)?;
            let mut out = Vec::new();
            while let Some(d) = cursor.try_next().await.map_err(map_err)? {
                let key = (d.at, d.chain.clone(), d.seq);
                let link = into_link(d)?;
                for (i, e) in link.events.iter().enumerate() {
                    let index = u32::try_from(i).map_err(|_| corrupt("link", "too many events"))?;
                    if let Some((a_at, a_chain, a_seq, a_index)) = &after_key_of {
                        if (key.0, &key.1, key.2) == (*a_at, a_chain, *a_seq) && index <= *a_index {
                            continue;
                        }
                    }
                    if !filter.matches(link.at, e) {
                        continue;
                    }
                    out.push(AuditRecord {
                        cursor: AuditCursor {
                            at: link.at,
                            chain: link.chain.clone(),
                            seq: link.seq,
                            index,
                        },
                        link_hash: link.hash.clone(),
                        event: e.clone(),
                    });
                    if out.len() >= limit as usize {
                        return Ok(out);
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn links(
        &self,
        after: Option<(ChainId, u64)>,
        limit: u32,
    ) -> Result<Vec<Link>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.timed(async {
            let filter = match &after {
                Some((chain, seq)) => {
                    let seq = to_i64(*seq, "link number")?;
                    doc! { "$or": [
                        { "chain": chain.as_str(), "seq": { "$gt": seq } },
                        { "chain": { "$gt": chain.as_str() } },
                    ] }
                }
                None => Document::new(),
            };
            let cursor = self
                .links
                .find(filter)
                .sort(doc! { "chain": 1, "seq": 1 })
                .limit(limit_i64(limit))
                .max_time(self.op_timeout)
                .comment(AUDIT_LINKS)
                .await
                .map_err(map_err)?;
            collect(cursor, limit as usize)
                .await?
                .into_iter()
                .map(walked_link)
                .collect()
        })
        .await
    }

    async fn link_stamps(
        &self,
        since: Timestamp,
        until: Timestamp,
        after: Option<(Timestamp, ChainId, u64)>,
        limit: u32,
    ) -> Result<Vec<LinkStamp>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.timed(async {
            let mut q = doc! { "at": { "$gte": ms(since), "$lt": ms(until) } };
            if let Some((t, chain, seq)) = &after {
                let seq = to_i64(*seq, "link number")?;
                q.insert("$or", after_key(ms(*t), chain.as_str(), seq, "$gt"));
            }
            let mut cursor = self
                .links
                .clone_with_type::<StampDoc>()
                .find(q)
                .sort(TIME_ORDER())
                .projection(
                    doc! { "_id": 0, "chain": 1, "seq": 1, "at": 1, "hash": 1, "actions": 1 },
                )
                .batch_size(limit.min(1000))
                .max_time(self.op_timeout)
                .comment(AUDIT_LINK_STAMPS)
                .await
                .map_err(map_err)?;
            let anchor = AuditAction::AuditAnchor.as_str();
            let mut out = Vec::new();
            while out.len() < limit as usize {
                let Some(d) = cursor.try_next().await.map_err(map_err)? else {
                    break;
                };
                // The listing shows a link through its events: none, not
                // listed.
                if d.actions.is_empty() {
                    continue;
                }
                out.push(LinkStamp {
                    anchors_only: d.actions.iter().all(|a| a == anchor),
                    chain: chain_id(&d.chain)?,
                    seq: to_u64(d.seq, "link number")?,
                    at: Timestamp::from_unix_millis(d.at),
                    hash: d.hash,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn purge_before(&self, before: Timestamp) -> Result<u64, StoreError> {
        let mut total = 0;
        let mut after = None;
        loop {
            // Each batch under its own timeout: a purge may be long.
            let (n, last, more) = self.timed(self.purge_batch(ms(before), after)).await?;
            total += n;
            if !more {
                return Ok(total);
            }
            after = last;
        }
    }
}
