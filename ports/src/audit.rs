//! The audit log: what happened, who did it, and the hash chains that make
//! edits and deletions visible.
//!
//! Every state change, refused access and opening of sealed card data is an
//! [`AuditEvent`]. Events are stored in *chains*: each user's wallet is one
//! chain — the events of a change are written in the same record as the
//! change itself ([`crate::store::WalletStore::commit`]) — and the service
//! has one chain of its own for events about no user
//! ([`AuditLog::append_system`]). A chain is a sequence of [`Link`]s
//! numbered 1, 2, 3, …; each link holds the hash of the one before,
//! computed by [`chain_hash`], so an edited or deleted link breaks every
//! link after it. Events never hold card data.

use std::fmt;

use async_trait::async_trait;
use cardbind_domain::{BindingId, ErrorCode, Role, Timestamp, UserId};
use sha2::{Digest, Sha256};

use crate::error::StoreError;

macro_rules! actions {
    ($( $(#[$m:meta])* $var:ident = $s:literal ),+ $(,)?) => {
        /// What an audit event records. The string form is stored and
        /// filtered on; never rename one.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum AuditAction {
            $( $(#[$m])* $var, )+
        }

        impl AuditAction {
            pub const ALL: &'static [AuditAction] = &[$(AuditAction::$var,)+];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $(AuditAction::$var => $s,)+
                }
            }

            pub fn parse(s: &str) -> Option<AuditAction> {
                AuditAction::ALL.iter().copied().find(|a| a.as_str() == s)
            }
        }
    };
}

actions! {
    /// A card bound for the first time (or a refused attempt).
    BindingCreate = "binding.create",
    /// A card bound again on its old record, or a bind left waiting for
    /// its channel's answer taken over by another request (its consent).
    BindingRebind = "binding.rebind",
    /// A bind left waiting for its channel's answer, resumed by a retry of
    /// the request that placed it (no new consent: that bind's
    /// `binding.create` or `binding.rebind` holds it).
    BindingResume = "binding.resume",
    /// The channel's answer to the start of a binding.
    BindingChannelStart = "binding.channel_start",
    /// An OTP check.
    BindingVerify = "binding.verify",
    /// The client made a card the default.
    BindingSetDefault = "binding.set_default",
    /// The default moved by the promotion rule.
    BindingDefaultChanged = "binding.default_changed",
    BindingUnbind = "binding.unbind",
    BindingFreeze = "binding.freeze",
    BindingUnfreeze = "binding.unfreeze",
    /// A channel's notification (or reconciliation) changed a card; also a
    /// card whose verification window closed, failed by a bind of it again.
    BindingChannelEvent = "binding.channel_event",
    /// Ending the agreement at the channel failed (the card is unbound here).
    BindingChannelUnsign = "binding.channel_unsign",
    /// A channel reported a signing for a card this service no longer
    /// holds (failed, unbound or erased before the user signed), or
    /// answered a bind whose card was unbound meanwhile; the service ended
    /// that agreement at the channel, or could not (`channel_unavailable`).
    BindingUnwantedSigning = "binding.unwanted_signing",
    /// A channel refused our own credentials or configuration (or our keys
    /// could not verify its answer): an operator problem, not the card's.
    ChannelMisconfigured = "channel.misconfigured",
    /// A card entered the manual review queue.
    ReviewQueued = "review.queued",
    ReviewApprove = "review.approve",
    ReviewReject = "review.reject",
    ReviewRetry = "review.retry",
    /// Sealed card data was opened.
    CardDataOpen = "card_data.open",
    /// The caller's role or user may not do this.
    AccessDenied = "access.denied",
    StepUpVerify = "step_up.verify",
    /// An erasure is about to destroy the user's key: written before it,
    /// so that an erasure whose process dies before its `user.erase`
    /// (every card unbound, or refused) is on record as not finished.
    UserEraseStart = "user.erase_start",
    /// Every card unbound and the user's key destroyed.
    UserErase = "user.erase",
    /// A user shared a card with another user (the primary's chain).
    ShareCreate = "share.create",
    /// A share made to a user was recorded in their wallet (the
    /// secondary's chain).
    ShareInvite = "share.invite",
    /// The secondary accepted a share, with their consent (their chain),
    /// and the primary's wallet noted it (the primary's).
    ShareAccept = "share.accept",
    /// A share ended: revoked by the primary or an operator, or with the
    /// card's unbind or the user's erasure (the primary's chain); or that
    /// end reached the secondary's wallet (theirs).
    ShareRevoke = "share.revoke",
    /// The secondary declined or left a share (their chain).
    ShareLeave = "share.leave",
    /// Retention deleted old records.
    RetentionPurge = "retention.purge",
    /// `cardbind sweep-card-data` walked the sealed card data or the
    /// channel references, and deleted those no card holds (counts only).
    CardDataSweep = "card_data.sweep",
    /// A BIN table was imported.
    BinTableImport = "bins.import",
    /// Data keys re-wrapped under a new master key.
    KeysRotate = "keys.rotate",
    /// Data keys moved to the active branch key; older versions retired.
    KeysRetireBranches = "keys.retire_branches",
    /// The anchor of a closed window of link instants: how many links it
    /// holds and a digest of them ([`WindowDigest`]).
    AuditAnchor = "audit.anchor",
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an audited operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Ok,
    /// Refused or failed, with the stable code the caller got.
    Refused(ErrorCode),
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused(code) => code.as_str(),
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        if s == Outcome::Ok.as_str() {
            Some(Outcome::Ok)
        } else {
            ErrorCode::parse(s).map(Outcome::Refused)
        }
    }
}

/// Who did it, as written in the log: a token subject with its role, or
/// the service itself (`system`, `channel:NAME`, `reconcile`, …).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditActor {
    pub subject: String,
    /// `None` for the service itself.
    pub role: Option<Role>,
}

impl AuditActor {
    pub fn service(what: impl Into<String>) -> AuditActor {
        AuditActor {
            subject: what.into(),
            role: None,
        }
    }

    /// The role as stored: the role's name, or `system`.
    pub fn role_str(&self) -> &'static str {
        self.role.map_or("system", Role::as_str)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    pub at: Timestamp,
    pub actor: AuditActor,
    pub action: AuditAction,
    pub user_id: Option<UserId>,
    pub binding_id: Option<BindingId>,
    pub outcome: Outcome,
    pub request_id: Option<String>,
    pub client_ip: Option<String>,
    /// Free text without card data (e.g. `active -> frozen`).
    pub detail: Option<String>,
}

/// Whose chain a link belongs to. Ordered as their stored names are (so
/// `@system` comes after users whose id starts with a digit and before
/// those that start with a letter).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ChainId {
    /// A user's wallet.
    User(UserId),
    /// The service's own chain: events about no user.
    System,
}

impl ChainId {
    /// The stored name: the user id, or `@system` (user ids never start
    /// with `@`).
    pub fn as_str(&self) -> &str {
        match self {
            ChainId::User(u) => u.as_str(),
            ChainId::System => "@system",
        }
    }

    pub fn parse(s: &str) -> Option<ChainId> {
        if s == "@system" {
            Some(ChainId::System)
        } else {
            UserId::parse(s).ok().map(ChainId::User)
        }
    }
}

impl Ord for ChainId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for ChainId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a chain ends: the last link's number, hash and instant. A commit
/// names the head it continues.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: String,
    pub at: Timestamp,
}

/// One stored link of a chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub chain: ChainId,
    /// 1, 2, 3, … with no gaps.
    pub seq: u64,
    /// Never before the previous link's instant.
    pub at: Timestamp,
    pub events: Vec<AuditEvent>,
    /// The digest of the wallet a user's link stores, as its store
    /// encodes it (SHA-256, hex), covered by the hash: `None` on the
    /// service's chain and in links written before wallets were covered.
    pub wallet_digest: Option<String>,
    pub prev_hash: String,
    pub hash: String,
    /// What the store keeps beside the link that its hash does not cover
    /// and that does not agree with it (the wallet copy its digest names,
    /// the fields the audit listing filters on), one of the `STORED_*`
    /// reasons: the chain's walk reports it as the link's break. A store
    /// reading a link for the walk sets it; `None` everywhere else.
    pub stored_apart: Option<&'static str>,
}

/// [`Link::stored_apart`]: the wallet the link keeps is not the one whose
/// digest its hash covers (the wallet was edited in the store).
pub const STORED_WALLET_ALTERED: &str = "its wallet differs from the one its hash covers";
/// [`Link::stored_apart`]: the link keeps no wallet though its hash covers
/// one (the wallet was deleted from the store; the embedded store keeps
/// the copy of each chain's newest link only, MongoDB of every link).
pub const STORED_WALLET_MISSING: &str = "it holds no wallet, though its hash covers one";
/// [`Link::stored_apart`]: the fields the audit listing filters on (user,
/// card, action) are not its events' (edited in the store, moving an
/// event between the listing's filters).
pub const STORED_LISTING_ALTERED: &str =
    "its listing fields (user, card, action) differ from its events";

impl Link {
    /// The hash this link's fields give ([`chain_hash`]): its `hash`
    /// unless the link was altered.
    pub fn computed_hash(&self) -> String {
        chain_hash(
            &self.prev_hash,
            &self.chain,
            self.seq,
            self.at,
            &self.events,
            self.wallet_digest.as_deref(),
        )
    }

    pub fn head(&self) -> ChainHead {
        ChainHead {
            seq: self.seq,
            hash: self.hash.clone(),
            at: self.at,
        }
    }
}

/// The hash before the first link of every chain.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The instant of the link after `prev`: `now`, or the previous link's
/// instant when the clock is behind it (instances' clocks differ), so that
/// instants never go backwards along a chain.
pub fn next_instant(prev: Option<&ChainHead>, now: Timestamp) -> Timestamp {
    prev.map_or(now, |p| p.at.max(now))
}

/// SHA-256 (hex) over the previous hash, the chain, the link number, its
/// instant, every field of every event and the wallet's digest when the
/// link has one, each length-prefixed so that no two links share an
/// encoding (the events' count tells where the digest starts; a link
/// without one hashes as links did before wallets were covered).
pub fn chain_hash(
    prev_hash: &str,
    chain: &ChainId,
    seq: u64,
    at: Timestamp,
    events: &[AuditEvent],
    wallet_digest: Option<&str>,
) -> String {
    let mut h = Sha256::new();
    let mut put = |s: &str| put_field(&mut h, s);
    put(prev_hash);
    put(chain.as_str());
    put(&seq.to_string());
    put(&at.unix_millis().to_string());
    put(&events.len().to_string());
    for e in events {
        put(&e.at.unix_millis().to_string());
        put(&e.actor.subject);
        put(e.actor.role_str());
        put(e.action.as_str());
        put(e.user_id.as_ref().map_or("\u{0}", |u| u.as_str()));
        put(e.binding_id.as_ref().map_or("\u{0}", |b| b.as_str()));
        put(e.outcome.as_str());
        for o in [&e.request_id, &e.client_ip, &e.detail] {
            put(o.as_deref().unwrap_or("\u{0}"));
        }
    }
    if let Some(d) = wallet_digest {
        put("wallet");
        put(d);
    }
    hex::encode(h.finalize())
}

/// A link as an anchor counts it: where it sits, its hash, and whether it
/// is an anchor itself ([`AuditLog::link_stamps`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkStamp {
    pub at: Timestamp,
    pub chain: ChainId,
    pub seq: u64,
    pub hash: String,
    /// Every event of the link is [`AuditAction::AuditAnchor`].
    pub anchors_only: bool,
}

/// The digest of the links whose instants fall in one window: SHA-256
/// (hex) over each link's chain, number and hash, length-prefixed, in
/// (instant, chain, number) order. Deleting, adding or altering a link of
/// the window changes it, the window's newest links included, which the
/// chains alone cannot show.
#[derive(Clone, Default)]
pub struct WindowDigest {
    hash: Sha256,
    links: u64,
}

impl WindowDigest {
    pub fn new() -> WindowDigest {
        WindowDigest::default()
    }

    /// Adds the next link.
    pub fn add(&mut self, link: &LinkStamp) {
        for s in [link.chain.as_str(), &link.seq.to_string(), &link.hash] {
            put_field(&mut self.hash, s);
        }
        self.links += 1;
    }

    /// How many links, and the digest.
    pub fn finish(self) -> (u64, String) {
        (self.links, hex::encode(self.hash.finalize()))
    }
}

/// Adds one length-prefixed field to a hash (so that no two sequences of
/// fields share an encoding).
fn put_field(h: &mut Sha256, s: &str) {
    h.update((s.len() as u64).to_be_bytes());
    h.update(s.as_bytes());
}

/// Builds the link after `prev` (None: the first of its chain), with the
/// digest of the wallet it stores (`None` on the service's chain).
pub fn next_link(
    chain: ChainId,
    prev: Option<&ChainHead>,
    now: Timestamp,
    events: Vec<AuditEvent>,
    wallet_digest: Option<String>,
) -> Link {
    let seq = prev.map_or(1, |p| p.seq + 1);
    let at = next_instant(prev, now);
    let prev_hash = prev.map_or_else(|| GENESIS_HASH.to_owned(), |p| p.hash.clone());
    let hash = chain_hash(
        &prev_hash,
        &chain,
        seq,
        at,
        &events,
        wallet_digest.as_deref(),
    );
    Link {
        chain,
        seq,
        at,
        events,
        wallet_digest,
        prev_hash,
        hash,
        stored_apart: None,
    }
}

/// Where a chain is broken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainBreak {
    pub chain: ChainId,
    pub seq: u64,
    pub reason: &'static str,
}

/// [`ChainBreak::reason`] of a gap: the link after the one before is not
/// there.
pub const MISSING_LINK: &str = "missing link";

/// Checks links of one or more chains, ordered by (chain, seq): within a
/// chain every link's hash is right, links to its predecessor and follows
/// it without a gap. A chain's first link's `prev_hash` is taken as given
/// (older links may have been purged by retention). Returns how many links
/// were checked, or the first break.
pub fn verify_links<'a>(links: impl IntoIterator<Item = &'a Link>) -> Result<u64, ChainBreak> {
    let mut prev: Option<&Link> = None;
    let mut n = 0;
    for l in links {
        let brk = |seq, reason| ChainBreak {
            chain: l.chain.clone(),
            seq,
            reason,
        };
        if let Some(p) = prev.filter(|p| p.chain == l.chain) {
            if l.seq != p.seq + 1 {
                return Err(brk(p.seq + 1, MISSING_LINK));
            }
            if l.prev_hash != p.hash {
                return Err(brk(l.seq, "link to the previous one broken"));
            }
            if l.at < p.at {
                return Err(brk(l.seq, "instant before the previous link"));
            }
        }
        if l.computed_hash() != l.hash {
            return Err(brk(l.seq, "link altered"));
        }
        if let Some(reason) = l.stored_apart {
            return Err(brk(l.seq, reason));
        }
        prev = Some(l);
        n += 1;
    }
    Ok(n)
}

/// Where an event sits, for paging: its link's instant, chain and number,
/// and its place in the link. Listings are ordered by this.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AuditCursor {
    pub at: Timestamp,
    pub chain: ChainId,
    pub seq: u64,
    pub index: u32,
}

/// One event as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub cursor: AuditCursor,
    /// The hash of the link that holds it.
    pub link_hash: String,
    pub event: AuditEvent,
}

/// Filters for reading the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub user_id: Option<UserId>,
    pub binding_id: Option<BindingId>,
    pub action: Option<AuditAction>,
    /// Events whose link is at or after this instant (inclusive).
    pub since: Option<Timestamp>,
    /// Events whose link is before this instant (exclusive).
    pub until: Option<Timestamp>,
}

impl AuditFilter {
    pub fn matches(&self, link_at: Timestamp, e: &AuditEvent) -> bool {
        self.user_id
            .as_ref()
            .is_none_or(|u| e.user_id.as_ref() == Some(u))
            && self
                .binding_id
                .as_ref()
                .is_none_or(|b| e.binding_id.as_ref() == Some(b))
            && self.action.is_none_or(|a| e.action == a)
            && self.since.is_none_or(|s| link_at >= s)
            && self.until.is_none_or(|u| link_at < u)
    }
}

/// Reading the audit log, the service's own chain, and retention.
///
/// The users' chains are written by [`crate::store::WalletStore::commit`];
/// an adapter implements both traits over the same records.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Appends `events` as the next link of the service's own chain.
    /// MUST NOT lose or fork the chain under concurrent appends from many
    /// instances (an adapter retries a lost race itself).
    async fn append_system(
        &self,
        events: Vec<AuditEvent>,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// Events matching `filter` (every chain), ordered by [`AuditCursor`],
    /// after `after`, at most `limit`.
    async fn list(
        &self,
        filter: &AuditFilter,
        after: Option<AuditCursor>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError>;

    /// Links of every chain ordered by (chain, seq), after (`chain`, `seq`)
    /// when given, at most `limit`: the walk `cardbind audit verify` makes.
    async fn links(
        &self,
        after: Option<(ChainId, u64)>,
        limit: u32,
    ) -> Result<Vec<Link>, StoreError>;

    /// Deletes links whose instant is before `before`, except the last
    /// link of each chain (a wallet's current state lives in it). Links are
    /// deleted from the start of their chain only. Returns how many.
    async fn purge_before(&self, before: Timestamp) -> Result<u64, StoreError>;

    /// The links that hold events with instants in `[since, until)`,
    /// ordered by (instant, chain, number), after `after` when given, at
    /// most `limit`: what an anchor digests. Exactly the links
    /// [`AuditLog::list`] shows for that window, in the same order; an
    /// adapter should read less than `list` does (no event bodies, no
    /// wallets). The default derives them from `list`.
    async fn link_stamps(
        &self,
        since: Timestamp,
        until: Timestamp,
        after: Option<(Timestamp, ChainId, u64)>,
        limit: u32,
    ) -> Result<Vec<LinkStamp>, StoreError> {
        /// Events listed per page.
        const PAGE: u32 = 500;
        let filter = AuditFilter {
            since: Some(since),
            until: Some(until),
            ..AuditFilter::default()
        };
        let mut cursor = after.map(|(at, chain, seq)| AuditCursor {
            at,
            chain,
            seq,
            index: u32::MAX,
        });
        let mut out: Vec<LinkStamp> = Vec::new();
        loop {
            let page = self.list(&filter, cursor.take(), PAGE).await?;
            for r in &page {
                let c = &r.cursor;
                let anchor = r.event.action == AuditAction::AuditAnchor;
                let full = out.len() == limit as usize;
                match out.last_mut() {
                    Some(l) if l.at == c.at && l.chain == c.chain && l.seq == c.seq => {
                        l.anchors_only &= anchor;
                    }
                    // The last link's events are all seen once the next begins.
                    _ if full => return Ok(out),
                    _ => out.push(LinkStamp {
                        at: c.at,
                        chain: c.chain.clone(),
                        seq: c.seq,
                        hash: r.link_hash.clone(),
                        anchors_only: anchor,
                    }),
                }
            }
            match page.last() {
                Some(last) if page.len() == PAGE as usize => cursor = Some(last.cursor.clone()),
                _ => return Ok(out),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(action: AuditAction) -> AuditEvent {
        AuditEvent {
            at: Timestamp::from_unix_millis(5),
            actor: AuditActor::service("system"),
            action,
            user_id: None,
            binding_id: None,
            outcome: Outcome::Ok,
            request_id: None,
            client_ip: None,
            detail: None,
        }
    }

    #[test]
    fn vocabularies_round_trip() {
        for a in AuditAction::ALL {
            assert_eq!(AuditAction::parse(a.as_str()), Some(*a));
        }
        for o in [Outcome::Ok, Outcome::Refused(ErrorCode::NotFound)] {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(ChainId::parse("@system"), Some(ChainId::System));
        let u = ChainId::parse("alice").unwrap();
        assert_eq!(ChainId::parse(u.as_str()), Some(u));
    }

    #[test]
    fn a_chain_verifies_and_an_edit_is_found_where_it_is() {
        let t = |ms| Timestamp::from_unix_millis(ms);
        let chain = ChainId::System;
        let mut links = vec![next_link(
            chain.clone(),
            None,
            t(10),
            vec![event(AuditAction::RetentionPurge)],
            None,
        )];
        for i in 0..4 {
            let prev = links[i].head();
            // A clock behind the previous link does not go backwards.
            let l = next_link(
                chain.clone(),
                Some(&prev),
                t(5),
                vec![event(AuditAction::AccessDenied)],
                None,
            );
            assert_eq!(l.at, t(10));
            links.push(l);
        }
        assert_eq!(verify_links(&links), Ok(5));
        let mut edited = links.clone();
        edited[2].events[0].outcome = Outcome::Refused(ErrorCode::Forbidden);
        assert_eq!(verify_links(&edited).unwrap_err().seq, 3);
        let mut gap = links.clone();
        gap.remove(3);
        assert_eq!(verify_links(&gap).unwrap_err().seq, 4);
        // A chain starting after a purge is accepted as it starts.
        assert_eq!(verify_links(&links[2..]), Ok(3));
    }

    /// A link's wallet digest is covered: another digest, or none where
    /// there was one, is an altered link; a link without one hashes as
    /// links did before wallets were covered.
    #[test]
    fn the_hash_covers_the_wallet_digest() {
        let t = Timestamp::from_unix_millis(10);
        let chain = ChainId::parse("alice").unwrap();
        let events = vec![event(AuditAction::BindingCreate)];
        let bare = next_link(chain.clone(), None, t, events.clone(), None);
        assert_eq!(
            bare.hash,
            chain_hash(GENESIS_HASH, &chain, 1, t, &events, None)
        );
        let d = "ab".repeat(32);
        let covered = next_link(chain.clone(), None, t, events.clone(), Some(d.clone()));
        assert_ne!(covered.hash, bare.hash);
        assert_eq!(verify_links([&covered]), Ok(1));
        let mut edited = covered.clone();
        edited.wallet_digest = Some("cd".repeat(32));
        assert_eq!(verify_links([&edited]).unwrap_err().reason, "link altered");
        let mut dropped = covered.clone();
        dropped.wallet_digest = None;
        assert_eq!(verify_links([&dropped]).unwrap_err().reason, "link altered");
    }

    /// What a store found beside a link that its hash does not cover is
    /// the link's break, with the store's reason: an operator reads it as
    /// the chain broken there, not as the store failing.
    #[test]
    fn what_is_stored_apart_from_a_link_breaks_the_chain_there() {
        let t = Timestamp::from_unix_millis(10);
        let chain = ChainId::parse("alice").unwrap();
        let first = next_link(
            chain.clone(),
            None,
            t,
            vec![event(AuditAction::BindingCreate)],
            None,
        );
        let mut second = next_link(
            chain.clone(),
            Some(&first.head()),
            t,
            vec![event(AuditAction::BindingUnbind)],
            Some("ab".repeat(32)),
        );
        assert_eq!(verify_links([&first, &second]), Ok(2));
        second.stored_apart = Some(STORED_WALLET_ALTERED);
        assert_eq!(
            verify_links([&first, &second]),
            Err(ChainBreak {
                chain,
                seq: 2,
                reason: STORED_WALLET_ALTERED
            })
        );
    }
}
