//! Family cards (主卡/副卡): a user (the primary) shares one of their active
//! cards with another user (the secondary), with a monthly limit and an
//! expiry; the secondary accepts, sees it in their list as a shared card
//! and may make it their default.
//!
//! ## Where the truth is
//! A [`Share`] lives in the primary's wallet beside the card it shares, and
//! is the truth: whether it is revoked, its terms, its expiry. The
//! secondary's wallet holds a [`SharedIn`] mirror: which share, whose card,
//! a masked snapshot of the card for display (taken when the share was
//! made) and the secondary's own acceptance (their consent). Wallets are
//! written one at a time, never together, so every change that touches
//! both writes the primary's first (the truth), then the mirror; a read on
//! the secondary's side always reads the primary's wallet too and asks
//! [`usable`], so a crash between the two writes never leaves the
//! secondary a card the primary has taken back.
//!
//! ## The rule
//! A shared card is usable by the secondary only while, at once:
//! the share is not revoked, not expired (usable strictly before
//! `expires_at`), the primary's card is `active` (not frozen, unbound or
//! failed; an erased primary has no active card), and the secondary has
//! accepted it and not left it. [`usable`] is that rule, and the only place
//! it is written.
//!
//! ## The monthly limit
//! The service does not move money: the limit is a recorded term of the
//! share, shown to the channel or merchant that takes payments, which
//! enforces it.
//!
//! ## Sizes
//! A wallet is read and written whole, so shares are bounded: at most
//! [`MAX_LIVE_SHARES`] live shares given and [`MAX_OPEN_SHARED_IN`] open
//! shares received per user, and only the [`ENDED_KEPT`] most recent ended
//! (or expired) ones of each kind are kept (the audit log keeps them all).

use std::fmt;

use crate::binding::{Binding, BindingStatus, CardSummary};
use crate::bins::Currency;
use crate::consent::ConsentRecord;
use crate::error::{
    BadRequestCode, Clash, ConflictCode, Declined, ErrorCode, Invalid, Missing, NotFoundCode,
    UnprocessableCode,
};
use crate::ids::{BindingId, ChannelName, ShareId, UserId};
use crate::time::Timestamp;

/// What receiving a share's mirror did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// The invitation is new in the wallet.
    New,
    /// It was there already (an offer repeated).
    Again,
    /// Not received: the user holds [`MAX_OPEN_SHARED_IN`] open shares
    /// (the primary's check before the share was made raced another
    /// share's).
    Full,
}

/// Live shares one user may have given at a time.
pub const MAX_LIVE_SHARES: usize = 10;
/// Open (invited or accepted) shares one user may have received at a time.
pub const MAX_OPEN_SHARED_IN: usize = 10;
/// Ended or expired shares (and mirrors) a wallet keeps, newest first.
pub const ENDED_KEPT: usize = 20;

/// An amount of money in minor units of its currency (fen for `CNY`, yen
/// for `JPY`): positive and at most ten million major units.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    minor_units: u64,
    currency: Currency,
}

impl Money {
    pub const AMOUNT_FIELD: &'static str = "monthly_limit.amount";
    pub const CURRENCY_FIELD: &'static str = "monthly_limit.currency";
    /// The bound, in major units of any currency.
    pub const MAX_MAJOR_UNITS: u64 = 10_000_000;

    /// `amount` minor units of the currency `currency` (ISO 4217 alpha-3,
    /// with a minor unit: not gold, a fund or a test code).
    pub fn parse(amount: i64, currency: &str) -> Result<Money, Invalid> {
        let currency = Currency::parse_field(currency, Self::CURRENCY_FIELD)?;
        Money::new(amount, currency)
    }

    /// `amount` minor units of `currency`, checked.
    pub fn new(amount: i64, currency: Currency) -> Result<Money, Invalid> {
        if currency.is_fund() {
            return Err(Invalid::field(
                BadRequestCode::InvalidCurrency,
                Self::CURRENCY_FIELD,
                "the currency is a fund's unit of account (not money one can pay with)",
            ));
        }
        if currency.is_withdrawn() {
            return Err(Invalid::field(
                BadRequestCode::InvalidCurrency,
                Self::CURRENCY_FIELD,
                "the currency was withdrawn from ISO 4217 (replaced by another)",
            ));
        }
        let Some(digits) = currency.minor_unit_digits() else {
            return Err(Invalid::field(
                BadRequestCode::InvalidCurrency,
                Self::CURRENCY_FIELD,
                "the currency has no minor unit (not money one can pay with)",
            ));
        };
        let max = Self::max_minor_units(digits);
        match u64::try_from(amount) {
            Ok(n) if n >= 1 && n <= max => Ok(Money {
                minor_units: n,
                currency,
            }),
            _ => Err(Invalid::field(
                BadRequestCode::InvalidAmount,
                Self::AMOUNT_FIELD,
                format!(
                    "the amount is in minor units of the currency, from 1 to {max} for {currency}"
                ),
            )),
        }
    }

    /// A stored amount, as it was accepted (positive; the bound is not
    /// applied again, so that a later, lower bound does not make stored
    /// shares unreadable).
    /// At most `i64::MAX` (stores keep signed integers).
    pub fn restore(minor_units: u64, currency: Currency) -> Option<Money> {
        (1..=i64::MAX.unsigned_abs())
            .contains(&minor_units)
            .then_some(Money {
                minor_units,
                currency,
            })
    }

    fn max_minor_units(digits: u16) -> u64 {
        10u64
            .checked_pow(u32::from(digits))
            .and_then(|scale| Self::MAX_MAJOR_UNITS.checked_mul(scale))
            .unwrap_or(u64::MAX)
    }

    pub fn minor_units(&self) -> u64 {
        self.minor_units
    }

    /// The amount as a signed integer (every amount fits: see
    /// [`Money::restore`]).
    pub fn minor_units_i64(&self) -> i64 {
        i64::try_from(self.minor_units).unwrap_or(i64::MAX)
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Money({} {})", self.minor_units, self.currency)
    }
}

/// What the primary grants: a monthly limit and when the share expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShareTerms {
    pub monthly_limit: Money,
    /// The share is usable strictly before this instant.
    pub expires_at: Timestamp,
}

impl ShareTerms {
    pub const EXPIRES_FIELD: &'static str = "expires_at";
    /// The farthest expiry, from now, in calendar years.
    pub const MAX_YEARS: i32 = 5;

    /// Terms for a share made at `now`: an expiry in the future and at most
    /// five years ahead.
    pub fn new(
        monthly_limit: Money,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<ShareTerms, Invalid> {
        if expires_at <= now || expires_at > now.plus_calendar_years(Self::MAX_YEARS) {
            return Err(Invalid::field(
                BadRequestCode::InvalidShareExpiry,
                Self::EXPIRES_FIELD,
                "a share expires in the future, at most five years from now",
            ));
        }
        Ok(ShareTerms {
            monthly_limit,
            expires_at,
        })
    }
}

/// A share of one of the primary's cards, held in the primary's wallet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Share {
    pub id: ShareId,
    /// The primary's card.
    pub card: BindingId,
    pub secondary: UserId,
    pub terms: ShareTerms,
    /// The primary's consent to share (its `revoked_at`/`revoked_by` are
    /// set when the share ends).
    pub consent: ConsentRecord,
    pub created_at: Timestamp,
    /// When the secondary accepted, as they reported it (their consent is
    /// in their own wallet).
    pub accepted_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    /// Who ended it: a token subject, `channel:NAME`, or the secondary.
    pub revoked_by: Option<String>,
}

/// Where a share stands on the primary's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Standing {
    /// Not accepted yet; otherwise usable.
    Invited,
    /// Accepted and usable.
    Active,
    /// The card is not active (frozen): not usable while it is so.
    Suspended,
    Expired,
    Revoked,
}

impl Standing {
    pub const fn as_str(self) -> &'static str {
        match self {
            Standing::Invited => "invited",
            Standing::Active => "active",
            Standing::Suspended => "suspended",
            Standing::Expired => "expired",
            Standing::Revoked => "revoked",
        }
    }
}

impl Share {
    /// Not revoked and not expired at `now` (it may still be suspended).
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && now < self.terms.expires_at
    }

    /// Where the share stands, given the primary's card as it is now
    /// (`None`: the card is not in the wallet).
    pub fn standing(&self, card: Option<&Binding>, now: Timestamp) -> Standing {
        if self.revoked_at.is_some() {
            return Standing::Revoked;
        }
        if now >= self.terms.expires_at {
            return Standing::Expired;
        }
        match card {
            Some(b) if b.id == self.card && b.status == BindingStatus::Active => {
                if self.accepted_at.is_some() {
                    Standing::Active
                } else {
                    Standing::Invited
                }
            }
            Some(b) if b.id == self.card && b.status == BindingStatus::Frozen => {
                Standing::Suspended
            }
            // Unbound, failed or gone: ended in substance (the wallet
            // revokes it with the unbind).
            _ => Standing::Revoked,
        }
    }

    /// The instant it stopped being live, if it has.
    fn ended_at(&self, now: Timestamp) -> Option<Timestamp> {
        match self.revoked_at {
            Some(t) => Some(t),
            None if now >= self.terms.expires_at => Some(self.terms.expires_at),
            None => None,
        }
    }

    /// Revokes it at `at`, unless it ended before: revoked, or expired
    /// (an expired share stays expired; a revocation after it would
    /// misreport why and when it ended).
    fn revoke(&mut self, at: Timestamp, by: &str) -> bool {
        if self.revoked_at.is_some() || at >= self.terms.expires_at {
            return false;
        }
        self.revoked_at = Some(at);
        self.revoked_by = Some(by.to_owned());
        if self.consent.revoked_at.is_none() {
            self.consent.revoked_at = Some(at);
            self.consent.revoked_by = Some(by.to_owned());
        }
        true
    }
}

/// A share made to the secondary, as their wallet mirrors it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedIn {
    pub share: ShareId,
    /// Whose card it is (never shown to the secondary: see the HTTP docs).
    pub primary: UserId,
    pub primary_card: BindingId,
    /// The card as it may be shown (masked), when the share was made.
    pub card: CardSummary,
    /// The channel the card is bound through.
    pub channel: ChannelName,
    /// A copy of the share's expiry (the primary's terms are the truth; the
    /// copy serves bounds and pruning).
    pub expires_at: Timestamp,
    pub invited_at: Timestamp,
    /// The secondary's consent, once they accepted.
    pub consent: Option<ConsentRecord>,
    /// When the share ended for the secondary (revoked, left, erased).
    pub ended_at: Option<Timestamp>,
    pub ended_by: Option<String>,
}

impl SharedIn {
    pub fn is_accepted(&self) -> bool {
        self.consent.is_some()
    }

    pub fn is_ended(&self) -> bool {
        self.ended_at.is_some()
    }

    /// Not ended and not expired at `now`.
    pub fn is_open(&self, now: Timestamp) -> bool {
        !self.is_ended() && now < self.expires_at
    }

    /// The card id the secondary knows the shared card by.
    pub fn card_id(&self) -> BindingId {
        self.share.card_id()
    }

    /// Ends it at `at`, unless it ended before (an expired share stays
    /// expired).
    fn end(&mut self, at: Timestamp, by: &str) -> bool {
        if self.ended_at.is_some() || at >= self.expires_at {
            return false;
        }
        self.ended_at = Some(at);
        self.ended_by = Some(by.to_owned());
        if let Some(c) = self.consent.as_mut().filter(|c| c.revoked_at.is_none()) {
            c.revoked_at = Some(at);
            c.revoked_by = Some(by.to_owned());
        }
        true
    }

    fn closed_at(&self, now: Timestamp) -> Option<Timestamp> {
        match self.ended_at {
            Some(t) => Some(t),
            None if now >= self.expires_at => Some(self.expires_at),
            None => None,
        }
    }
}

/// Whether the secondary may use the shared card now: the one rule (see
/// the module docs). `share` and `card` come from the primary's wallet as
/// read now, `mirror` from the secondary's.
pub fn usable(share: &Share, card: Option<&Binding>, mirror: &SharedIn, now: Timestamp) -> bool {
    mirror.share == share.id
        && mirror.is_accepted()
        && !mirror.is_ended()
        && !matches!(
            share.standing(card, now),
            Standing::Suspended | Standing::Expired | Standing::Revoked
        )
}

/// Whether an invitation may still be accepted (or shown): the primary's
/// side allows use, whatever the secondary did so far.
pub fn offerable(share: &Share, card: Option<&Binding>, now: Timestamp) -> bool {
    matches!(
        share.standing(card, now),
        Standing::Invited | Standing::Active
    )
}

/// A share to make.
#[derive(Clone, Debug)]
pub struct NewShare {
    /// The id a new share gets (unused when the same share exists).
    pub id: ShareId,
    pub card: BindingId,
    pub secondary: UserId,
    pub terms: ShareTerms,
    pub consent: ConsentRecord,
}

/// How [`crate::Wallet::give_share`] placed a share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Given {
    New(ShareId),
    /// The same share (card, secondary and terms) was live already: a
    /// retry. Nothing changed.
    Existing(ShareId),
}

impl Given {
    pub fn id(&self) -> &ShareId {
        match self {
            Given::New(id) | Given::Existing(id) => id,
        }
    }
}

/// A refusal to share: no such card (404), its state or another share of
/// it (409), or a rule (422).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShareRefusal {
    NotFound(Missing),
    Conflict(Clash),
    Unprocessable(Declined),
}

impl ShareRefusal {
    pub fn code(&self) -> ErrorCode {
        match self {
            ShareRefusal::NotFound(r) => r.code,
            ShareRefusal::Conflict(r) => r.code,
            ShareRefusal::Unprocessable(r) => r.code,
        }
    }
}

impl From<Missing> for ShareRefusal {
    fn from(r: Missing) -> Self {
        ShareRefusal::NotFound(r)
    }
}
impl From<Clash> for ShareRefusal {
    fn from(r: Clash) -> Self {
        ShareRefusal::Conflict(r)
    }
}
impl From<Declined> for ShareRefusal {
    fn from(r: Declined) -> Self {
        ShareRefusal::Unprocessable(r)
    }
}

/// `not_found` for a share the caller cannot see.
pub fn no_such_share() -> Missing {
    Missing::new(NotFoundCode::NotFound, "no such share")
}

/// `share_ended`.
pub fn share_ended(why: &'static str) -> Clash {
    Clash::new(ConflictCode::ShareEnded, why)
}

pub(crate) fn share_limit(message: &'static str) -> Declined {
    Declined::new(UnprocessableCode::ShareLimitReached, message)
}

/// The shares and mirrors a wallet holds, and the rules that change them
/// ([`crate::Wallet`] delegates here).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Family {
    pub(crate) given: Vec<Share>,
    pub(crate) received: Vec<SharedIn>,
}

impl Family {
    /// Ends the live shares of cards that are no longer live (unbound,
    /// failed) or gone, at the card's last change, by whoever unbound it.
    pub(crate) fn end_shares_of_dead_cards(&mut self, cards: &[Binding]) {
        for s in self.given.iter_mut().filter(|s| s.revoked_at.is_none()) {
            match cards.iter().find(|b| b.id == s.card) {
                Some(b) if b.status.is_live() => {}
                // Expired before its card ended: it ended then, and stays
                // expired.
                Some(b) if s.terms.expires_at <= b.updated_at => {}
                Some(b) => {
                    let by = b
                        .consents
                        .last()
                        .and_then(|c| c.revoked_by.clone())
                        .unwrap_or_else(|| format!("card {}", b.status));
                    s.revoke(b.updated_at, &by);
                }
                // Its card left the wallet: the change that ended the card
                // revoked the share then (the arm above), unless it had
                // expired before: it stays expired (revoking it now, at
                // its creation, misreported it as revoked by "card gone").
                None => {}
            }
        }
    }

    /// Drops the oldest ended or expired shares and mirrors beyond
    /// [`ENDED_KEPT`] of each kind.
    pub(crate) fn prune(&mut self, now: Timestamp) {
        let mut ended: Vec<(Timestamp, ShareId)> = self
            .given
            .iter()
            .filter_map(|s| s.ended_at(now).map(|t| (t, s.id.clone())))
            .collect();
        if ended.len() > ENDED_KEPT {
            ended.sort();
            let drop: Vec<ShareId> = ended[..ended.len() - ENDED_KEPT]
                .iter()
                .map(|(_, id)| id.clone())
                .collect();
            self.given.retain(|s| !drop.contains(&s.id));
        }
        let mut closed: Vec<(Timestamp, ShareId)> = self
            .received
            .iter()
            .filter_map(|m| m.closed_at(now).map(|t| (t, m.share.clone())))
            .collect();
        if closed.len() > ENDED_KEPT {
            closed.sort();
            let drop: Vec<ShareId> = closed[..closed.len() - ENDED_KEPT]
                .iter()
                .map(|(_, id)| id.clone())
                .collect();
            self.received.retain(|m| !drop.contains(&m.share));
        }
    }

    pub(crate) fn give(
        &mut self,
        owner: &UserId,
        card: Option<&Binding>,
        share: NewShare,
        created_at: Timestamp,
    ) -> Result<Given, ShareRefusal> {
        let Some(card) = card else {
            return Err(Missing::card().into());
        };
        if &share.secondary == owner {
            return Err(Declined::field(
                UnprocessableCode::ShareWithSelf,
                "secondary_user_id",
                "a card cannot be shared with its own holder",
            )
            .into());
        }
        if card.status != BindingStatus::Active {
            return Err(Clash::transition(format!(
                "only an active card can be shared; this one is {}",
                card.status
            ))
            .into());
        }
        let now = created_at;
        if let Some(s) = self
            .given
            .iter()
            .find(|s| s.card == share.card && s.secondary == share.secondary && s.is_live(now))
        {
            return if s.terms == share.terms {
                Ok(Given::Existing(s.id.clone()))
            } else {
                Err(Clash::new(
                    ConflictCode::CardAlreadyShared,
                    "this card is already shared with that user on other terms; revoke that share first",
                )
                .into())
            };
        }
        if self.given.iter().filter(|s| s.is_live(now)).count() >= MAX_LIVE_SHARES {
            return Err(share_limit("this user has given as many live shares as allowed").into());
        }
        if self.given.iter().any(|s| s.id == share.id) {
            return Err(Clash::new(ConflictCode::Conflict, "share id in use").into());
        }
        let id = share.id.clone();
        self.given.push(Share {
            id: share.id,
            card: share.card,
            secondary: share.secondary,
            terms: share.terms,
            consent: share.consent,
            created_at,
            accepted_at: None,
            revoked_at: None,
            revoked_by: None,
        });
        self.prune(now);
        Ok(Given::New(id))
    }

    pub(crate) fn revoke(
        &mut self,
        id: &ShareId,
        at: Timestamp,
        by: &str,
    ) -> Result<bool, Missing> {
        let s = self
            .given
            .iter_mut()
            .find(|s| &s.id == id)
            .ok_or_else(no_such_share)?;
        Ok(s.revoke(at, by))
    }

    pub(crate) fn note_accepted(&mut self, id: &ShareId, at: Timestamp) -> bool {
        match self
            .given
            .iter_mut()
            .find(|s| &s.id == id && s.revoked_at.is_none() && s.accepted_at.is_none())
        {
            Some(s) => {
                s.accepted_at = Some(at);
                true
            }
            None => false,
        }
    }

    pub(crate) fn open_received(&self, now: Timestamp) -> usize {
        self.received.iter().filter(|m| m.is_open(now)).count()
    }

    pub(crate) fn receive(&mut self, mirror: SharedIn, now: Timestamp) -> Received {
        if self.received.iter().any(|m| m.share == mirror.share) {
            return Received::Again;
        }
        if mirror.is_open(now) && self.open_received(now) >= MAX_OPEN_SHARED_IN {
            return Received::Full;
        }
        self.received.push(mirror);
        self.prune(now);
        Received::New
    }

    pub(crate) fn accept(
        &mut self,
        id: &ShareId,
        consent: ConsentRecord,
        now: Timestamp,
    ) -> Result<bool, crate::error::StateRefusal> {
        let m = self
            .received
            .iter_mut()
            .find(|m| &m.share == id)
            .ok_or_else(no_such_share)?;
        if m.is_ended() {
            return Err(share_ended("this share has ended").into());
        }
        if now >= m.expires_at {
            return Err(share_ended("this share has expired").into());
        }
        if m.consent.is_some() {
            return Ok(false);
        }
        m.consent = Some(consent);
        Ok(true)
    }

    pub(crate) fn end_received(&mut self, id: &ShareId, at: Timestamp, by: &str) -> bool {
        self.received
            .iter_mut()
            .find(|m| &m.share == id)
            .is_some_and(|m| m.end(at, by))
    }
}

#[cfg(test)]
mod tests;
