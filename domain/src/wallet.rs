//! A user's wallet: every binding of one user and the default-card pointer.
//!
//! The wallet is the unit of consistency: it is read and written whole, and
//! a write is conditional on the version read (the storage ports), so rules
//! that span a user's cards hold under concurrent requests: one record per
//! card fingerprint, the cap on live cards, one default.
//!
//! The default is a single pointer (not a flag on each card), so two
//! defaults cannot exist by construction. After every change the wallet
//! repairs it: kept while it names an active card, else the active card
//! activated most recently (ties: the greatest id) is promoted, or there is
//! none.
//!
//! A wallet keeps every live card, every ended card an operator's freeze
//! holds, and the [`ENDED_CARDS_KEPT`] other cards that ended (unbound or
//! failed) most recently; older ended cards leave it at the next change
//! (never the card that change is about, nor a held one), so that a
//! wallet, which is read and written whole, stays bounded however many
//! cards its user has bound over the years. Binding such a card again
//! opens a new record. The audit log keeps every card's history and
//! consents for its retention (see [`crate::binding::CONSENTS_KEPT`]).
//!
//! A wallet also holds the family shares its user gave ([`Share`], the
//! truth) and the mirrors of those they received ([`SharedIn`]); see
//! [`crate::family`]. The default pointer may name a received share (by its
//! id, which is that card's id in the secondary's list): it stays while the
//! mirror is accepted and not ended. Whether the shared card is usable at
//! a given moment depends on the primary's wallet, so a reader asks
//! [`Wallet::effective_default_with`], which falls back to the promotion
//! rule (as for an unbound card) while it is not.

use crate::binding::{Binding, BindingId, BindingStatus, CardToBind, Fingerprint, UserId};
use crate::consent::ConsentRecord;
use crate::error::{Clash, ConflictCode, Missing, RuleRefusal, StateRefusal};
use crate::failure::FailureReason;
use crate::family::{share_ended, Family, Given, NewShare, Share, ShareRefusal, SharedIn};
use crate::ids::ShareId;
use crate::rules::{CardCap, VerificationPolicy};
use crate::time::Timestamp;

/// Ended (unbound or failed) cards a wallet keeps, the most recently ended.
pub const ENDED_CARDS_KEPT: usize = 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wallet {
    user: UserId,
    bindings: Vec<Binding>,
    default: Option<BindingId>,
    family: Family,
}

/// How [`Wallet::open`] placed a card.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Opened {
    /// A new record.
    New(BindingId),
    /// The card's old (inactive or failed) record, bound again.
    Again(BindingId),
    /// An earlier bind of this card whose channel answer was never stored:
    /// nothing changed; the caller asks the channel again.
    Resume(BindingId),
}

impl Opened {
    pub fn id(&self) -> &BindingId {
        match self {
            Opened::New(id) | Opened::Again(id) | Opened::Resume(id) => id,
        }
    }
}

impl Wallet {
    /// The empty wallet of a user who has never bound a card.
    pub fn new(user: UserId) -> Wallet {
        Wallet {
            user,
            bindings: Vec::new(),
            default: None,
            family: Family::default(),
        }
    }

    /// Rebuilds a stored wallet (bindings in any order; they are kept in id
    /// order).
    pub fn restore(user: UserId, mut bindings: Vec<Binding>, default: Option<BindingId>) -> Wallet {
        bindings.sort_by(|a, b| a.id.cmp(&b.id));
        Wallet {
            user,
            bindings,
            default,
            family: Family::default(),
        }
    }

    /// A restored wallet with the shares its user gave and received, as
    /// stored.
    pub fn with_family(mut self, given: Vec<Share>, received: Vec<SharedIn>) -> Wallet {
        self.family = Family { given, received };
        self
    }

    pub fn user(&self) -> &UserId {
        &self.user
    }

    /// Every binding, in id order.
    pub fn bindings(&self) -> &[Binding] {
        &self.bindings
    }

    /// The stored pointer (always effective in a wallet this type built).
    pub fn default_pointer(&self) -> Option<&BindingId> {
        self.default.as_ref()
    }

    pub fn get(&self, id: &BindingId) -> Result<&Binding, Missing> {
        self.bindings
            .iter()
            .find(|b| &b.id == id)
            .ok_or_else(Missing::card)
    }

    /// The user's binding of the card with this fingerprint, in any status.
    pub fn find_card(&self, fingerprint: &Fingerprint) -> Option<&Binding> {
        self.bindings.iter().find(|b| &b.fingerprint == fingerprint)
    }

    fn active(&self) -> impl Iterator<Item = &Binding> {
        self.bindings
            .iter()
            .filter(|b| b.status == BindingStatus::Active)
    }

    /// The default card, if the pointer names an active card of the user
    /// or a received share the user accepted and has not left. (Whether
    /// that share is usable right now depends on the primary's wallet: see
    /// [`Wallet::effective_default_with`].)
    pub fn effective_default(&self) -> Option<&BindingId> {
        let d = self.default.as_ref()?;
        let own = self.active().any(|b| &b.id == d);
        let shared = || {
            self.family
                .received
                .iter()
                .any(|m| m.is_accepted() && !m.is_ended() && &m.card_id() == d)
        };
        (own || shared()).then_some(d)
    }

    /// The default card as a reader sees it now: the effective default,
    /// unless it is a shared card that `usable` says may not be used at the
    /// moment (the primary froze or unbound it, the share expired or was
    /// revoked), in which case the promotion rule picks one of the user's
    /// own cards, as for an unbound default. Nothing is written: once the
    /// shared card is usable again it is the default again.
    pub fn effective_default_with(&self, usable: impl Fn(&SharedIn) -> bool) -> Option<&BindingId> {
        let d = self.effective_default()?;
        match self.family.received.iter().find(|m| &m.card_id() == d) {
            Some(m) if !usable(m) => self.promotion(),
            _ => Some(d),
        }
    }

    /// Whether `id` is the effective default.
    pub fn is_default(&self, id: &BindingId) -> bool {
        self.effective_default() == Some(id)
    }

    /// The card that becomes default when there is no effective one.
    pub fn promotion(&self) -> Option<&BindingId> {
        self.active()
            .max_by(|a, b| (a.activated_at, &a.id).cmp(&(b.activated_at, &b.id)))
            .map(|b| &b.id)
    }

    /// How many cards hold a (user, card) slot.
    pub fn live_count(&self) -> u32 {
        self.bindings.iter().filter(|b| b.status.is_live()).count() as u32
    }

    /// Ends the shares of cards that are no longer live; lets the oldest
    /// ended cards beyond [`ENDED_CARDS_KEPT`] go; keeps the pointer while
    /// effective, else promotes.
    fn repair(&mut self) {
        self.repair_keeping(None);
    }

    /// As [`Wallet::repair`], never letting `changed` go (the card the
    /// change was about stays to be answered, even when a clock behind
    /// another instance's dates its end before the others).
    fn repair_keeping(&mut self, changed: Option<&BindingId>) {
        self.family.end_shares_of_dead_cards(&self.bindings);
        self.shed_ended(changed);
        if self.effective_default().is_none() {
            self.default = self.promotion().cloned();
        }
    }

    /// Drops the cards that ended longest ago (their last change; ties: the
    /// smaller id) beyond [`ENDED_CARDS_KEPT`], `keep` aside. A card an
    /// operator holds never goes: its hold is what keeps it from being
    /// bound again, and only the unfreeze lifts it. Such cards come one
    /// operator's freeze at a time, so they do not count against the
    /// ended cards kept.
    fn shed_ended(&mut self, keep: Option<&BindingId>) {
        let ended = self
            .bindings
            .iter()
            .filter(|b| !b.status.is_live() && b.held_since.is_none());
        let extra = ended.clone().count().saturating_sub(ENDED_CARDS_KEPT);
        if extra == 0 {
            return;
        }
        let mut candidates: Vec<(Timestamp, &BindingId)> = ended
            .filter(|b| Some(&b.id) != keep)
            .map(|b| (b.updated_at, &b.id))
            .collect();
        candidates.sort();
        let gone: Vec<BindingId> = candidates
            .iter()
            .take(extra)
            .map(|(_, id)| (*id).clone())
            .collect();
        self.bindings.retain(|b| !gone.contains(&b.id));
    }

    // ---- family shares: the user as primary ----------------------------

    /// The shares this user gave (live, and the most recent ended ones).
    pub fn shares(&self) -> &[Share] {
        &self.family.given
    }

    pub fn share(&self, id: &ShareId) -> Option<&Share> {
        self.family.given.iter().find(|s| &s.id == id)
    }

    /// Shares one of this user's cards (see [`crate::family`]): the card
    /// must be active, the secondary someone else, and there is at most one
    /// live share per (card, secondary): the same share again is found
    /// ([`Given::Existing`]), other terms are `card_already_shared`.
    pub fn give_share(&mut self, share: NewShare, now: Timestamp) -> Result<Given, ShareRefusal> {
        let card = self.bindings.iter().find(|b| b.id == share.card);
        self.family.give(&self.user, card, share, now)
    }

    /// Revokes a share this user gave. Returns whether it changed
    /// (revoking twice is harmless).
    pub fn revoke_share(&mut self, id: &ShareId, at: Timestamp, by: &str) -> Result<bool, Missing> {
        self.family.revoke(id, at, by)
    }

    /// Notes that the secondary accepted a share (information for the
    /// primary's listing). Returns whether it changed.
    pub fn note_share_accepted(&mut self, id: &ShareId, at: Timestamp) -> bool {
        self.family.note_accepted(id, at)
    }

    // ---- family shares: the user as secondary --------------------------

    /// The mirrors of the shares this user received.
    pub fn shared_in(&self) -> &[SharedIn] {
        &self.family.received
    }

    pub fn mirror(&self, id: &ShareId) -> Option<&SharedIn> {
        self.family.received.iter().find(|m| &m.share == id)
    }

    /// Received shares neither ended nor expired at `now`.
    pub fn open_shared_in(&self, now: Timestamp) -> usize {
        self.family.open_received(now)
    }

    /// Adds the mirror of a share made to this user (an invitation), when
    /// they have room for another open share. Receiving it again is
    /// harmless.
    pub fn receive_share(&mut self, mirror: SharedIn, now: Timestamp) -> crate::family::Received {
        let new = self.family.receive(mirror, now);
        // Receiving lets the oldest closed shares go: the default may
        // have named one of them.
        self.repair();
        new
    }

    /// The user accepts a share made to them, with their consent. Returns
    /// whether it changed (the first consent stays). `share_ended` when it
    /// ended or expired, `not_found` when there is no such share.
    pub fn accept_share(
        &mut self,
        id: &ShareId,
        consent: ConsentRecord,
        now: Timestamp,
    ) -> Result<bool, StateRefusal> {
        self.family.accept(id, consent, now)
    }

    /// The share ended for this user (revoked, left, erased). Returns
    /// whether it changed; a default naming it falls back.
    pub fn end_shared_in(&mut self, id: &ShareId, at: Timestamp, by: &str) -> bool {
        let changed = self.family.end_received(id, at, by);
        self.repair();
        changed
    }

    /// Makes an accepted received share the default. Returns whether the
    /// pointer moved.
    pub fn set_default_shared(&mut self, id: &ShareId) -> Result<bool, StateRefusal> {
        let m = self
            .family
            .received
            .iter()
            .find(|m| &m.share == id)
            .ok_or_else(crate::family::no_such_share)?;
        if m.is_ended() {
            return Err(share_ended("this share has ended").into());
        }
        if !m.is_accepted() {
            return Err(
                share_ended("a share must be accepted before it can be the default").into(),
            );
        }
        let card = id.card_id();
        let moved = self.default.as_ref() != Some(&card);
        self.default = Some(card);
        Ok(moved)
    }

    /// Places a card to bind: a new record (within the cap), its old record
    /// bound again (within the cap; or, when it waited for its code past
    /// its verification window, failed as `verification_expired` and bound
    /// again at once), or the earlier bind of it that still waits for its
    /// channel's answer. A card that is bound (or being verified within
    /// its window, or in review) is `card_already_bound`.
    pub fn open(
        &mut self,
        card: CardToBind,
        cap: CardCap,
        now: Timestamp,
        policy: &VerificationPolicy,
    ) -> Result<Opened, RuleRefusal> {
        let live = self.live_count();
        let user = self.user.clone();
        match self
            .bindings
            .iter_mut()
            .find(|b| b.fingerprint == card.fingerprint)
        {
            Some(b) if b.awaits_channel_answer() => Ok(Opened::Resume(b.id.clone())),
            Some(b) if b.verification_lapsed(now) => {
                // What a code sent now would find: it failed. The card
                // stays live through the two steps, so the cap is as it was.
                b.fail(FailureReason::VerificationExpired, now)?;
                b.rebind(card, now, policy)?;
                Ok(Opened::Again(b.id.clone()))
            }
            Some(b) if b.status.is_live() => {
                Err(Clash::new(ConflictCode::CardAlreadyBound, "this card is already bound").into())
            }
            Some(b) => {
                cap.check(live)?;
                b.rebind(card, now, policy)?;
                Ok(Opened::Again(b.id.clone()))
            }
            None => {
                cap.check(live)?;
                if self.bindings.iter().any(|b| b.id == card.new_id) {
                    return Err(Clash::new(ConflictCode::Conflict, "binding id in use").into());
                }
                let id = card.new_id.clone();
                let b = Binding::reserve(user, card, now, policy);
                let at = self.bindings.partition_point(|x| x.id < b.id);
                self.bindings.insert(at, b);
                Ok(Opened::New(id))
            }
        }
    }

    /// Applies `f` to one binding, then repairs the default. The change
    /// stays even when `f` refuses (a refusal may itself be a change, e.g.
    /// a closed verification window fails the card): compare the wallet
    /// with its earlier value to know whether there is anything to store.
    pub fn change<T, F, E>(
        &mut self,
        id: &BindingId,
        f: impl FnOnce(&mut Binding) -> Result<T, F>,
    ) -> Result<T, E>
    where
        E: From<Missing> + From<F>,
    {
        let b = self
            .bindings
            .iter_mut()
            .find(|b| &b.id == id)
            .ok_or_else(Missing::card)?;
        let r = f(b);
        self.repair_keeping(Some(id));
        r.map_err(E::from)
    }

    /// Makes an active card the default. Returns whether the pointer moved.
    pub fn set_default(&mut self, id: &BindingId) -> Result<bool, StateRefusal> {
        let b = self.get(id)?;
        if b.status != BindingStatus::Active {
            return Err(
                Clash::transition(format!("{} cannot be the default", b.status.a_card())).into(),
            );
        }
        let moved = self.default.as_ref() != Some(id);
        self.default = Some(id.clone());
        Ok(moved)
    }

    /// Unbinds every card (erasure). Returns the ids that changed.
    pub fn unbind_all(&mut self, now: Timestamp, by: &str) -> Vec<BindingId> {
        let mut changed = Vec::new();
        for b in &mut self.bindings {
            if let Ok(true) = b.unbind(now, by) {
                changed.push(b.id.clone());
            }
        }
        self.repair();
        changed
    }

    /// The user's erasure: every card that is no longer live forgets its
    /// fingerprint (the keyed hash of its number, under a key the erasure
    /// does not destroy: with the BIN and last four digits the wallet
    /// keeps, whoever held that key could try the few numbers left), but a
    /// card an operator holds keeps it until the hold is lifted (an
    /// unfreeze forgets it then). A card bound again afterwards
    /// is a new record. Returns how many.
    pub fn forget_fingerprints(&mut self) -> usize {
        self.bindings
            .iter_mut()
            .map(Binding::forget_fingerprint)
            .filter(|changed| *changed)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binding::{CardSummary, ChannelName, StartOutcome};
    use crate::card::{CardBrand, Expiry};
    use crate::consent::ConsentGiven;
    use crate::error::ErrorCode;

    fn card(i: u32, now: Timestamp) -> CardToBind {
        CardToBind {
            new_id: BindingId::parse(&format!("card_{i:03}")).unwrap(),
            fingerprint: Fingerprint::new(1, format!("{i:08x}")),
            card: CardSummary {
                brand: CardBrand::Visa,
                bin: "411111".into(),
                last4: "1111".into(),
                expiry: Expiry::restore(1, 2040).unwrap(),
                facts: None,
            },
            consent: ConsentGiven {
                text_version: "v1".into(),
                text_hash: "0".repeat(64),
                ..Default::default()
            }
            .accept(ChannelName::parse("mock").unwrap(), now)
            .unwrap(),
            generation: i + 1,
            bind_key: None,
        }
    }

    fn change<T>(
        w: &mut Wallet,
        id: &BindingId,
        f: impl FnOnce(&mut Binding) -> Result<T, Clash>,
    ) -> Result<T, StateRefusal> {
        w.change(id, f)
    }

    fn bound(w: &mut Wallet, i: u32, now: Timestamp) -> BindingId {
        let id = w
            .open(
                card(i, now),
                CardCap::default(),
                now,
                &VerificationPolicy::default(),
            )
            .unwrap()
            .id()
            .clone();
        change(w, &id, |b| {
            b.apply_start(
                StartOutcome::Bound {
                    channel_ref: format!("r{i}"),
                },
                now,
            )
        })
        .unwrap();
        id
    }

    #[test]
    fn first_active_card_is_default_and_promotion_follows_activation() {
        let t = |s: i64| Timestamp::from_unix_millis(s * 1000);
        let mut w = Wallet::new(UserId::parse("u").unwrap());
        let a = bound(&mut w, 1, t(1));
        assert!(w.is_default(&a));
        let b = bound(&mut w, 2, t(2));
        assert!(w.is_default(&a), "a new card does not take the default");
        assert!(w.set_default(&b).unwrap());
        assert!(!w.set_default(&b).unwrap());
        let c = bound(&mut w, 3, t(3));
        change(&mut w, &b, |x| x.unbind(t(4), "u")).unwrap();
        assert!(
            w.is_default(&c),
            "the most recently activated card is promoted"
        );
        change(&mut w, &c, |x| x.freeze(t(5))).unwrap();
        assert!(w.is_default(&a));
        change(&mut w, &a, |x| x.unbind(t(6), "u")).unwrap();
        assert_eq!(w.effective_default(), None);
        assert_eq!(w.default_pointer(), None);
    }

    #[test]
    fn a_wallet_keeps_its_live_cards_and_the_most_recently_ended() {
        let t = |s: i64| Timestamp::from_unix_millis(s * 1000);
        let mut w = Wallet::new(UserId::parse("u").unwrap());
        let live = bound(&mut w, 0, t(0));
        let frozen = bound(&mut w, 1, t(1));
        change(&mut w, &frozen, |b| b.freeze(t(1))).unwrap();
        // Cards end out of id order (the order of their numbers).
        let n = ENDED_CARDS_KEPT as u32 + 5;
        let mut ended = Vec::new();
        for step in 0..n {
            let i = 2 + (step * 7) % n;
            let id = bound(&mut w, i, t(10 + i64::from(step)));
            let at = 1000 + i64::from(step);
            change(&mut w, &id, |b| b.unbind(t(at), "u").map(|_| ())).unwrap();
            let gone = w.bindings().iter().filter(|b| !b.status.is_live()).count();
            assert!(gone <= ENDED_CARDS_KEPT, "{gone} ended cards kept");
            ended.push((at, i, id));
        }
        ended.sort();
        let (dropped, kept) = ended.split_at(ended.len() - ENDED_CARDS_KEPT);
        assert_eq!(dropped.len(), 5);
        for (_, _, id) in dropped {
            assert!(w.get(id).is_err(), "{id} ended before the rest");
        }
        for (_, _, id) in kept {
            assert_eq!(w.get(id).unwrap().status, BindingStatus::Inactive);
        }
        assert_eq!(w.get(&live).unwrap().status, BindingStatus::Active);
        assert_eq!(w.get(&frozen).unwrap().status, BindingStatus::Frozen);
        assert_eq!(w.bindings().len(), ENDED_CARDS_KEPT + 2);
        assert!(w.is_default(&live));
        // A card that left is a new record when bound again; a kept one
        // reuses its own.
        let p = VerificationPolicy::default();
        let (_, number, _) = dropped[0];
        let mut again = card(number, t(2000));
        again.new_id = BindingId::parse("card_new").unwrap();
        assert_eq!(
            w.open(again, CardCap::default(), t(2000), &p).unwrap(),
            Opened::New(BindingId::parse("card_new").unwrap())
        );
        let (_, number, id) = kept[0].clone();
        assert_eq!(
            w.open(card(number, t(2001)), CardCap::default(), t(2001), &p)
                .unwrap(),
            Opened::Again(id)
        );
    }

    #[test]
    fn the_card_a_change_was_about_stays_even_if_its_end_is_dated_earliest() {
        let t = |s: i64| Timestamp::from_unix_millis(s * 1000);
        let mut w = Wallet::new(UserId::parse("u").unwrap());
        let mut ended = Vec::new();
        for i in 0..ENDED_CARDS_KEPT as u32 {
            let id = bound(&mut w, i, t(100 + i64::from(i)));
            change(&mut w, &id, |b| {
                b.unbind(t(200 + i64::from(i)), "u").map(|_| ())
            })
            .unwrap();
            ended.push(id);
        }
        // Another instance's clock is behind: its unbind is dated before
        // every other end.
        let late = bound(&mut w, 99, t(300));
        change(&mut w, &late, |b| b.unbind(t(50), "u").map(|_| ())).unwrap();
        assert_eq!(w.get(&late).unwrap().status, BindingStatus::Inactive);
        assert!(w.get(&ended[0]).is_err(), "the oldest other end left");
        assert_eq!(w.bindings().len(), ENDED_CARDS_KEPT);
    }

    /// A card that waited for its code past its window is bound again on
    /// its record at the next bind of it (failed first, as the code would
    /// find), even with the cap full; within the window it is bound.
    #[test]
    fn a_bind_after_the_verification_window_binds_the_card_again() {
        let now = Timestamp::from_unix_millis(1_000);
        let mut w = Wallet::new(UserId::parse("u").unwrap());
        let p = VerificationPolicy::default();
        let cap = CardCap { max: 1 };
        let id = w.open(card(1, now), cap, now, &p).unwrap().id().clone();
        change(&mut w, &id, |b| {
            b.apply_start(
                StartOutcome::ActionRequired {
                    channel_ref: "r".into(),
                    action: crate::NextAction::Otp {
                        phone_hint: "+86138****8000".into(),
                    },
                },
                now,
            )
        })
        .unwrap();
        let closes = now.plus_seconds(p.window_seconds);
        let e = w.open(card(1, closes), cap, closes, &p).unwrap_err();
        assert_eq!(e.code(), ErrorCode::CardAlreadyBound);
        let later = Timestamp::from_unix_millis(closes.unix_millis() + 1);
        let mut again = card(1, later);
        again.generation = 9;
        assert_eq!(
            w.open(again, cap, later, &p).unwrap(),
            Opened::Again(id.clone())
        );
        let b = w.get(&id).unwrap();
        assert_eq!(b.status, BindingStatus::PendingVerification);
        assert_eq!(b.data_generation, 9);
        assert_eq!(b.failure, None);
        assert!(b.next_action.is_none() && b.channel_ref.is_none());
        assert_eq!(
            b.verification_expires_at,
            Some(later.plus_seconds(p.window_seconds))
        );
        assert_eq!(w.bindings().len(), 1);
        assert_eq!(w.live_count(), 1);
        // Waiting for the channel's answer again: resumed, not failed.
        let much_later = later.plus_seconds(2 * p.window_seconds);
        assert_eq!(
            w.open(card(1, much_later), cap, much_later, &p).unwrap(),
            Opened::Resume(id)
        );
    }

    #[test]
    fn one_record_per_card_and_the_cap() {
        let now = Timestamp::from_unix_millis(1);
        let mut w = Wallet::new(UserId::parse("u").unwrap());
        let p = VerificationPolicy::default();
        let cap = CardCap { max: 2 };
        let first = w.open(card(1, now), cap, now, &p).unwrap();
        assert!(matches!(first, Opened::New(_)));
        // Not answered by the channel yet: binding it again resumes.
        assert_eq!(
            w.open(card(1, now), cap, now, &p).unwrap(),
            Opened::Resume(first.id().clone())
        );
        let id = first.id().clone();
        change(&mut w, &id, |b| {
            b.apply_start(
                StartOutcome::Bound {
                    channel_ref: "r".into(),
                },
                now,
            )
        })
        .unwrap();
        let e = w.open(card(1, now), cap, now, &p).unwrap_err();
        assert_eq!(e.code(), ErrorCode::CardAlreadyBound);
        w.open(card(2, now), cap, now, &p).unwrap();
        let e = w.open(card(3, now), cap, now, &p).unwrap_err();
        assert_eq!(e.code(), ErrorCode::CardLimitReached);
        change(&mut w, &id, |b| b.unbind(now, "u")).unwrap();
        assert_eq!(
            w.open(card(3, now), cap, now, &p).unwrap().id().as_str(),
            "card_003"
        );
        // Over the cap again: the unbound card cannot come back.
        let e = w.open(card(1, now), cap, now, &p).unwrap_err();
        assert_eq!(e.code(), ErrorCode::CardLimitReached);
        assert_eq!(w.bindings().len(), 3);
    }

    #[test]
    fn refusals_that_change_the_card_are_kept() {
        let now = Timestamp::from_unix_millis(1);
        let mut w = Wallet::new(UserId::parse("u").unwrap());
        let a = bound(&mut w, 1, now);
        let before = w.clone();
        let e = change(&mut w, &a, |b| b.unfreeze(now)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidStateTransition);
        assert_eq!(
            w, before,
            "a refusal without a change leaves the wallet as it was"
        );
        let missing = BindingId::parse("nope").unwrap();
        let e: Missing = w.change(&missing, |_| Ok::<(), Missing>(())).unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound);
    }

    #[test]
    fn erasure_unbinds_everything() {
        let now = Timestamp::from_unix_millis(1);
        let mut w = Wallet::new(UserId::parse("u").unwrap());
        bound(&mut w, 1, now);
        bound(&mut w, 2, now);
        assert_eq!(w.unbind_all(now, "admin").len(), 2);
        assert_eq!(w.live_count(), 0);
        assert_eq!(w.effective_default(), None);
        assert!(w.unbind_all(now, "admin").is_empty());
    }

    #[test]
    fn erasure_forgets_fingerprints_and_the_same_card_is_a_new_record() {
        let now = Timestamp::from_unix_millis(1);
        let (cap, p) = (CardCap { max: 10 }, VerificationPolicy::default());
        let mut w = Wallet::new(UserId::parse("u").unwrap());
        let a = bound(&mut w, 1, now);
        let b = bound(&mut w, 2, now);
        w.unbind_all(now, "admin");
        assert_eq!(w.forget_fingerprints(), 2);
        assert_eq!(w.forget_fingerprints(), 0, "once");
        for id in [&a, &b] {
            let f = &w.get(id).unwrap().fingerprint;
            assert!(f.is_erased());
            assert_ne!(f, &card(1, now).fingerprint);
        }
        assert_ne!(
            w.get(&a).unwrap().fingerprint,
            w.get(&b).unwrap().fingerprint
        );
        assert!(w.find_card(&card(1, now).fingerprint).is_none());
        let same_card = CardToBind {
            new_id: BindingId::parse("card_101").unwrap(),
            ..card(1, now)
        };
        let again = w.open(same_card, cap, now, &p).unwrap();
        assert!(
            matches!(again, Opened::New(ref id) if id != &a),
            "{again:?}"
        );
    }

    #[test]
    fn a_card_an_operator_holds_is_kept_beyond_the_ended_cards_kept() {
        let now = Timestamp::from_unix_millis(1_000);
        let mut w = Wallet::new(UserId::parse("u").unwrap());
        let policy = VerificationPolicy::default();
        let cap = crate::CardCap { max: 1000 };
        let first = w.open(card(0, now), cap, now, &policy).unwrap();
        let id = first.id().clone();
        let r: Result<(), crate::StateRefusal> = w.change(&id, |b| {
            b.activate(None, now)?;
            b.freeze(now)
        });
        r.unwrap();
        let r: Result<bool, crate::StateRefusal> = w.change(&id, |b| b.unbind(now, "t"));
        r.unwrap();
        let n = ENDED_CARDS_KEPT as u32 + 5;
        for i in 1..=n {
            let later = Timestamp::from_unix_millis(2_000 + i64::from(i));
            let o = w.open(card(i, later), cap, later, &policy).unwrap();
            let r: Result<bool, crate::StateRefusal> = w.change(o.id(), |b| b.unbind(later, "t"));
            r.unwrap();
        }
        assert!(
            w.get(&id).is_ok_and(|b| b.held_since.is_some()),
            "the held card stays, the oldest of the others went"
        );
        assert_eq!(w.bindings().len(), ENDED_CARDS_KEPT + 1);
    }

    #[test]
    fn every_card_an_operator_holds_is_kept_however_many() {
        let mut w = Wallet::new(UserId::parse("u").unwrap());
        let policy = VerificationPolicy::default();
        let cap = crate::CardCap { max: 1000 };
        let n = ENDED_CARDS_KEPT as u32 + 5;
        let mut held = Vec::new();
        for i in 0..n {
            let at = Timestamp::from_unix_millis(1_000 + i64::from(i));
            let o = w.open(card(i, at), cap, at, &policy).unwrap();
            let id = o.id().clone();
            let r: Result<(), crate::StateRefusal> = w.change(&id, |b| {
                b.activate(None, at)?;
                b.freeze(at)
            });
            r.unwrap();
            let r: Result<bool, crate::StateRefusal> = w.change(&id, |b| b.unbind(at, "t"));
            r.unwrap();
            held.push(i);
        }
        for i in &held {
            let found = w.find_card(&card(*i, Timestamp::from_unix_millis(0)).fingerprint);
            assert!(
                found.is_some_and(|b| b.held_since.is_some()),
                "held card {i} of {n} was let go"
            );
        }
        // Ordinary ended cards after them are shed down to the ones kept;
        // the held ones stay.
        for i in n..n + ENDED_CARDS_KEPT as u32 + 3 {
            let at = Timestamp::from_unix_millis(5_000 + i64::from(i));
            let o = w.open(card(i, at), cap, at, &policy).unwrap();
            let r: Result<bool, crate::StateRefusal> = w.change(o.id(), |b| b.unbind(at, "t"));
            r.unwrap();
        }
        assert_eq!(w.bindings().len(), n as usize + ENDED_CARDS_KEPT);
    }
}
