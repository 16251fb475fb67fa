//! The binding aggregate: one record per (user, card), and its status machine.
//!
//! ```text
//! (new) ──reserve──▶ pending_verification ──▶ active ⇄ frozen
//!                         │    │                 │        │
//!                         │    └──▶ failed ◀─────┼────────┼── (review rejected)
//!                         └──▶ pending_review ──▶ active  │
//!   active | frozen | pending_* | failed ──unbind──▶ inactive
//!   inactive | failed ──rebind──▶ pending_verification (same record)
//!   pending_review ──operator retry──▶ pending_verification
//! ```
//!
//! A new binding is stored as `pending_verification` *before* the channel is
//! asked (a reservation in the user's wallet, which holds at most one record
//! per card fingerprint), so a crash between the channel call and the status
//! update leaves a record that reconciliation can settle instead of an
//! orphan at the channel.
//!
//! A binding holds no card data: the sealed fields live in their own record
//! (one per binding and data generation), so that each is stored once.

use std::fmt;
use std::ops::Deref;

use crate::bins::BinInfo;
use crate::card::{CardBrand, Expiry};
use crate::consent::ConsentRecord;
use crate::error::{Clash, ConflictCode, Declined, RuleRefusal, UnprocessableCode};
pub use crate::failure::{ChannelCode, FailureReason};
pub use crate::ids::{BindingId, ChannelName, Fingerprint, UserId};
use crate::rules::VerificationPolicy;
use crate::time::Timestamp;

/// A card to bind, as the wallet needs it.
#[derive(Clone, Debug)]
pub struct CardToBind {
    /// The id a new binding gets (unused when the card had a record).
    pub new_id: BindingId,
    pub fingerprint: Fingerprint,
    pub card: CardSummary,
    pub consent: ConsentRecord,
    /// The generation its sealed data is stored under.
    pub generation: u32,
    /// The token of the request placing it (see `Binding::bind_key`).
    pub bind_key: Option<String>,
}

/// What may be shown of a card: brand, first six, last four, expiry, and
/// what the BIN table said of it when it was bound (issuer, type,
/// country, currency), kept so that a later import does not change how a
/// bound card is shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardSummary {
    pub brand: CardBrand,
    pub bin: String,
    pub last4: String,
    pub expiry: Expiry,
    pub facts: Option<BinInfo>,
}

impl CardSummary {
    /// The card's currency: what the BIN table said when it was bound
    /// (neither Alipay's nor WeChat Pay's agreement APIs report one).
    pub fn currency(&self) -> Option<crate::bins::Currency> {
        self.facts.as_ref().and_then(|f| f.currency)
    }
}

/// Something the user must do to finish a binding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NextAction {
    /// An OTP was sent by SMS to the phone on file; verify with it.
    Otp { phone_hint: String },
    /// Open this URL (or show it as a QR code) to sign the agreement.
    Redirect { url: String },
}

/// Statuses of a binding; see the module docs for the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BindingStatus {
    PendingVerification,
    Active,
    Frozen,
    Inactive,
    PendingReview,
    Failed,
}

impl BindingStatus {
    pub const ALL: [BindingStatus; 6] = [
        BindingStatus::PendingVerification,
        BindingStatus::Active,
        BindingStatus::Frozen,
        BindingStatus::Inactive,
        BindingStatus::PendingReview,
        BindingStatus::Failed,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            BindingStatus::PendingVerification => "pending_verification",
            BindingStatus::Active => "active",
            BindingStatus::Frozen => "frozen",
            BindingStatus::Inactive => "inactive",
            BindingStatus::PendingReview => "pending_review",
            BindingStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<BindingStatus> {
        BindingStatus::ALL.into_iter().find(|b| b.as_str() == s)
    }

    /// Whether the machine allows `self → to`.
    pub fn can_become(self, to: BindingStatus) -> bool {
        use BindingStatus::*;
        matches!(
            (self, to),
            (PendingVerification, Active)
                | (PendingVerification, Failed)
                | (PendingVerification, PendingReview)
                | (PendingVerification, Inactive)
                | (PendingReview, Active)
                | (PendingReview, Failed)
                | (PendingReview, Inactive)
                | (PendingReview, PendingVerification)
                | (Active, Frozen)
                | (Frozen, Active)
                | (Active, Inactive)
                | (Frozen, Inactive)
                | (Failed, Inactive)
                | (Inactive, PendingVerification)
                | (Failed, PendingVerification)
        )
    }

    /// A status that holds the (user, card) slot: binding again is refused.
    pub fn is_live(self) -> bool {
        !matches!(self, BindingStatus::Inactive | BindingStatus::Failed)
    }

    /// Waiting to be settled by someone else's word: the channel's
    /// (`pending_verification`) or an operator's (`pending_review`).
    /// Reconciliation looks at the wallets that hold such a card.
    pub fn awaits_settlement(self) -> bool {
        matches!(
            self,
            BindingStatus::PendingVerification | BindingStatus::PendingReview
        )
    }

    /// Whether the binding's sealed card data is still needed: to verify,
    /// to retry at the channel from review, or while the card is usable.
    /// Inactive and failed bindings drop it (binding again seals anew).
    pub fn keeps_card_data(self) -> bool {
        self.is_live()
    }
}

impl fmt::Display for BindingStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl BindingStatus {
    /// "a frozen card", "an active card": the status with its article, for
    /// messages.
    pub fn a_card(self) -> String {
        let article = if self.as_str().starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        };
        format!("{article} {self} card")
    }
}

/// Consent records one binding keeps, the newest: binding the same card
/// again adds one each time. Every consent is also in the audit log, in
/// the detail of the `binding.create` or `binding.rebind` event that
/// recorded it.
pub const CONSENTS_KEPT: usize = 20;

/// Everything a binding record holds. Readable through [`Binding`]'s
/// `Deref`; changed only through `Binding`'s transitions (adapters rebuild a
/// stored binding with [`Binding::restore`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindingParts {
    pub id: BindingId,
    pub user_id: UserId,
    pub fingerprint: Fingerprint,
    pub card: CardSummary,
    pub channel: ChannelName,
    /// The channel's reference (agreement / contract id, token) once known.
    pub channel_ref: Option<String>,
    pub next_action: Option<NextAction>,
    pub status: BindingStatus,
    /// Why, when `status` is `failed`.
    pub failure: Option<FailureReason>,
    pub otp_attempts: u32,
    pub verification_expires_at: Option<Timestamp>,
    /// Which sealed card data belongs to the binding: each bind (and bind
    /// again) seals the data anew under a generation number of its own,
    /// chosen by the request, so that data a failed attempt left behind
    /// never stands in the way of the next.
    pub data_generation: u32,
    /// An opaque token of the request that placed the current bind (its
    /// idempotency key, hashed with its caller), when it had one: a retry
    /// of that request resumes the bind at once, and is not counted again
    /// against the velocity rules.
    pub bind_key: Option<String>,
    /// The consent of each of this card's last [`CONSENTS_KEPT`] binds,
    /// oldest first; the last one is the current.
    pub consents: Vec<ConsentRecord>,
    /// How many older consents were let go, so that the consent of the
    /// card's n-th bind keeps its number n (`consents[n - 1 - dropped]`).
    pub consents_dropped: u32,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub activated_at: Option<Timestamp>,
    /// An operator's hold: set when the card is frozen, lifted only by an
    /// operator's unfreeze. It outlives an unbind, so that the card is not
    /// bound again on this record (active again) until an operator lifts
    /// it: unbinding and binding again does not undo a freeze.
    pub held_since: Option<Timestamp>,
    /// The user was erased while an operator held the card: its fingerprint
    /// was kept for the hold, and is forgotten when the hold is lifted.
    pub forget_on_release: bool,
}

/// A binding: one record per (user, card).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding(BindingParts);

impl Deref for Binding {
    type Target = BindingParts;
    fn deref(&self) -> &BindingParts {
        &self.0
    }
}

/// What a channel said when asked to start a binding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartOutcome {
    Bound {
        channel_ref: String,
    },
    ActionRequired {
        channel_ref: String,
        action: NextAction,
    },
    Refused {
        code: ChannelCode,
    },
    /// The channel could not be reached or could not take the request
    /// (misconfigured): an operator decides.
    Unreachable,
}

impl Binding {
    /// Rebuilds a stored binding exactly as stored.
    pub fn restore(parts: BindingParts) -> Binding {
        Binding(parts)
    }

    pub fn into_parts(self) -> BindingParts {
        self.0
    }

    /// A new binding reserved before the channel is asked.
    pub fn reserve(
        user_id: UserId,
        card: CardToBind,
        now: Timestamp,
        policy: &VerificationPolicy,
    ) -> Binding {
        Binding(BindingParts {
            id: card.new_id,
            user_id,
            fingerprint: card.fingerprint,
            card: card.card,
            channel: card.consent.channel.clone(),
            channel_ref: None,
            next_action: None,
            status: BindingStatus::PendingVerification,
            failure: None,
            otp_attempts: 0,
            verification_expires_at: Some(now.plus_seconds(policy.window_seconds)),
            data_generation: card.generation,
            bind_key: card.bind_key,
            consents: vec![card.consent],
            consents_dropped: 0,
            created_at: now,
            updated_at: now,
            activated_at: None,
            held_since: None,
            forget_on_release: false,
        })
    }

    /// The consent of the current bind.
    pub fn consent(&self) -> Option<&ConsentRecord> {
        self.0.consents.last()
    }

    /// Whether an earlier bind of this card (not the current one) held
    /// `agreement` at its channel, as far as the kept consents tell: an
    /// event naming it is about that earlier binding, whatever the card's
    /// status now.
    pub fn held_before(&self, agreement: &str) -> bool {
        let earlier = self.0.consents.len().saturating_sub(1);
        self.0.consents[..earlier]
            .iter()
            .any(|c| c.agreement_id.as_deref() == Some(agreement))
    }

    /// Whether the card is live and holds (or waits on) the channel's
    /// agreement `agreement`: an agreement it does not hold serves nothing
    /// here.
    pub fn holds_agreement(&self, agreement: &str) -> bool {
        self.0.status.is_live() && self.0.channel_ref.as_deref() == Some(agreement)
    }

    /// Reserved but the channel's answer was never stored (the process
    /// stopped, or the store failed, between asking and storing): a bind of
    /// the same card again resumes it instead of being refused.
    pub fn awaits_channel_answer(&self) -> bool {
        self.0.status == BindingStatus::PendingVerification
            && self.0.channel_ref.is_none()
            && self.0.next_action.is_none()
    }

    /// Waiting for its code or its signing past its verification window
    /// (the channel's answer in: a bind still waiting for that is resumed
    /// or taken over instead). A bind of the card again fails it first.
    pub fn verification_lapsed(&self, now: Timestamp) -> bool {
        self.0.status == BindingStatus::PendingVerification
            && !self.awaits_channel_answer()
            && self.0.verification_expires_at.is_some_and(|t| now > t)
    }

    /// A fresh verification window from `now`, no code tried yet: the
    /// channel is asked (again) now.
    fn open_window(&mut self, now: Timestamp, policy: &VerificationPolicy) {
        self.0.otp_attempts = 0;
        self.0.verification_expires_at = Some(now.plus_seconds(policy.window_seconds));
    }

    /// Records a consent, keeping the newest [`CONSENTS_KEPT`] (the audit
    /// log keeps every one).
    fn push_consent(&mut self, consent: ConsentRecord) {
        self.0.consents.push(consent);
        let extra = self.0.consents.len().saturating_sub(CONSENTS_KEPT);
        self.0.consents.drain(..extra);
        self.0.consents_dropped = self
            .0
            .consents_dropped
            .saturating_add(u32::try_from(extra).unwrap_or(u32::MAX));
    }

    fn go(&mut self, to: BindingStatus, now: Timestamp) -> Result<(), Clash> {
        if !self.0.status.can_become(to) {
            return Err(Clash::transition(format!(
                "{} cannot become {}",
                self.0.status.a_card(),
                to
            )));
        }
        self.0.status = to;
        self.0.updated_at = now;
        if to == BindingStatus::Active {
            self.0.activated_at = Some(now);
            self.0.verification_expires_at = None;
            self.0.failure = None;
        }
        if to != BindingStatus::PendingVerification {
            self.0.next_action = None;
        }
        Ok(())
    }

    /// Binds the same card again on its old record (inactive or failed):
    /// a new data generation (the caller seals it), a new consent, back to
    /// `pending_verification`.
    pub fn rebind(
        &mut self,
        card: CardToBind,
        now: Timestamp,
        policy: &VerificationPolicy,
    ) -> Result<(), Clash> {
        if self.0.status.is_live() {
            return Err(Clash::new(
                ConflictCode::CardAlreadyBound,
                "this card is already bound",
            ));
        }
        if self.0.held_since.is_some() {
            return Err(Clash::transition(
                "this card was unbound while an operator had it frozen: it can be bound again once an operator lifts the hold (unfreeze); bind it again then",
            ));
        }
        // A bind that failed before failures ended their consent (an older
        // build's record) still holds it in force: it ends as of the
        // failure (the card's last change), as it would have then.
        if self.0.status == BindingStatus::Failed {
            let by = ended_by_failure(self.0.failure.as_ref());
            self.end_consents(self.0.updated_at, &by);
        }
        self.go(BindingStatus::PendingVerification, now)?;
        self.0.card = card.card;
        self.0.channel = card.consent.channel.clone();
        self.push_consent(card.consent);
        self.0.bind_key = card.bind_key;
        self.0.channel_ref = None;
        self.0.failure = None;
        self.open_window(now, policy);
        self.0.activated_at = None;
        self.0.data_generation = card.generation;
        Ok(())
    }

    /// Another bind request takes over this bind, left waiting for its
    /// channel's answer by a request that stopped (see
    /// [`Binding::awaits_channel_answer`]): its consent is recorded as the
    /// current bind's (the earlier one made no agreement), it owns the bind
    /// from now on (its idempotency key) and the card is touched, so that
    /// no third request takes it over while this one runs. The card's
    /// details are the new request's, and so is the generation of its
    /// sealed data: the channel is asked with what this request sent, and
    /// a retry from review must send the same.
    pub fn take_over(
        &mut self,
        card: CardToBind,
        now: Timestamp,
        policy: &VerificationPolicy,
    ) -> Result<(), Clash> {
        self.resume(now, policy)?;
        self.0.card = card.card;
        self.push_consent(card.consent);
        self.0.bind_key = card.bind_key;
        self.0.data_generation = card.generation;
        Ok(())
    }

    /// The request that placed this bind, retried after it stopped before
    /// its channel answered, resumes it: the card is touched, so that no
    /// other request takes it over while this one runs, and its
    /// verification window starts again (the channel is asked now; the
    /// stopped attempt may be older than the window).
    pub fn resume(&mut self, now: Timestamp, policy: &VerificationPolicy) -> Result<(), Clash> {
        if !self.awaits_channel_answer() {
            return Err(Clash::transition(
                "only a bind waiting for its channel's answer can be resumed",
            ));
        }
        self.0.updated_at = now;
        self.open_window(now, policy);
        Ok(())
    }

    /// Refuses unless the binding waits for an operator's decision.
    pub fn ensure_in_review(&self) -> Result<(), Clash> {
        if self.0.status == BindingStatus::PendingReview {
            Ok(())
        } else {
            Err(Clash::transition("this card is not waiting for review"))
        }
    }

    /// An operator approves a binding in review: it becomes active.
    pub fn approve(&mut self, channel_ref: Option<String>, now: Timestamp) -> Result<(), Clash> {
        self.ensure_in_review()?;
        self.activate(channel_ref, now)
    }

    /// An operator rejects a binding in review: it fails.
    pub fn reject(&mut self, now: Timestamp) -> Result<(), Clash> {
        self.ensure_in_review()?;
        self.fail(FailureReason::RejectedByOperator, now)
    }

    /// An operator sends a binding in review back to its channel: it waits
    /// for verification again, with a fresh window.
    pub fn requeue(&mut self, now: Timestamp, policy: &VerificationPolicy) -> Result<(), Clash> {
        self.ensure_in_review()?;
        self.go(BindingStatus::PendingVerification, now)?;
        self.0.channel_ref = None;
        self.open_window(now, policy);
        Ok(())
    }

    /// Applies the channel's answer to the start of a binding.
    pub fn apply_start(&mut self, outcome: StartOutcome, now: Timestamp) -> Result<(), Clash> {
        match outcome {
            StartOutcome::Bound { channel_ref } => self.activate(Some(channel_ref), now)?,
            StartOutcome::ActionRequired {
                channel_ref,
                action,
            } => {
                if self.0.status != BindingStatus::PendingVerification {
                    return Err(Clash::transition("this card is not pending"));
                }
                self.0.channel_ref = Some(channel_ref);
                self.0.next_action = Some(action);
                self.0.updated_at = now;
            }
            StartOutcome::Refused { code } => {
                self.fail(FailureReason::ChannelDeclined(code), now)?;
            }
            StartOutcome::Unreachable => {
                self.go(BindingStatus::PendingReview, now)?;
            }
        }
        Ok(())
    }

    /// Checks that an OTP may be tried now: the binding waits for one and
    /// the window is open, and counts the attempt (the caller stores that
    /// before asking the channel, so parallel guesses cannot share one
    /// attempt). An expired window fails the binding (the caller stores
    /// that too) and answers `verification_expired`.
    pub fn begin_otp(
        &mut self,
        now: Timestamp,
        policy: &VerificationPolicy,
    ) -> Result<(), RuleRefusal> {
        if self.0.status != BindingStatus::PendingVerification
            || !matches!(self.0.next_action, Some(NextAction::Otp { .. }))
        {
            return Err(
                Clash::transition("this card is not waiting for a one-time password").into(),
            );
        }
        if self.0.verification_expires_at.is_some_and(|t| now > t) {
            self.fail(FailureReason::VerificationExpired, now)?;
            return Err(Declined::new(
                UnprocessableCode::VerificationExpired,
                "the verification window has closed",
            )
            .into());
        }
        if self.0.otp_attempts >= policy.max_otp_attempts {
            // Every attempt is taken (some may still be being checked).
            return Err(Declined::field(
                UnprocessableCode::InvalidOtp,
                "otp",
                "no attempts are left for this card",
            )
            .into());
        }
        self.0.otp_attempts = self.0.otp_attempts.saturating_add(1);
        self.0.updated_at = now;
        Ok(())
    }

    /// The code of an attempt begun by [`Binding::begin_otp`] was wrong;
    /// after `policy.max_otp_attempts` attempts the binding fails. Returns
    /// whether the binding has now failed.
    pub fn otp_rejected(
        &mut self,
        now: Timestamp,
        policy: &VerificationPolicy,
    ) -> Result<bool, Clash> {
        if self.0.status == BindingStatus::PendingVerification
            && self.0.otp_attempts >= policy.max_otp_attempts
        {
            self.fail(FailureReason::InvalidOtp, now)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// The channel could not check the code of an attempt begun by
    /// [`Binding::begin_otp`] (it was unreachable): the attempt is given
    /// back, since no guess was tried.
    pub fn otp_unchecked(&mut self, now: Timestamp) {
        if self.0.status == BindingStatus::PendingVerification && self.0.otp_attempts > 0 {
            self.0.otp_attempts -= 1;
            self.0.updated_at = now;
        }
    }

    /// Becomes active; the current consent names the agreement.
    pub fn activate(&mut self, channel_ref: Option<String>, now: Timestamp) -> Result<(), Clash> {
        self.go(BindingStatus::Active, now)?;
        if let Some(r) = channel_ref {
            self.0.channel_ref = Some(r);
        }
        if let (Some(r), Some(c)) = (self.0.channel_ref.clone(), self.0.consents.last_mut()) {
            c.agreement_id = Some(r);
        }
        Ok(())
    }

    /// Refers a card waiting for its channel to manual review: the channel
    /// answered in a way only an operator can settle (it named, as this
    /// card's agreement, one another live card holds).
    pub fn refer_to_review(&mut self, now: Timestamp) -> Result<(), Clash> {
        if self.0.status != BindingStatus::PendingVerification {
            return Err(Clash::transition("this card is not pending"));
        }
        self.go(BindingStatus::PendingReview, now)
    }

    /// Fails the card, and ends the consent its bind was given under: that
    /// bind is over, so the consent is in force no more (`revoked_by` is
    /// `failed:` and the failure's code). A bind of the card again asks for
    /// a consent of its own.
    pub fn fail(&mut self, reason: FailureReason, now: Timestamp) -> Result<(), Clash> {
        self.go(BindingStatus::Failed, now)?;
        self.end_consents(now, &ended_by_failure(Some(&reason)));
        self.0.failure = Some(reason);
        Ok(())
    }

    /// An operator's hold: an active card becomes `frozen`, and stays held
    /// (see [`BindingParts::held_since`]) until an operator unfreezes it.
    pub fn freeze(&mut self, now: Timestamp) -> Result<(), Clash> {
        self.go(BindingStatus::Frozen, now)?;
        self.0.held_since = Some(now);
        Ok(())
    }

    /// Lifts an operator's hold: a frozen card becomes `active`; a card
    /// unbound (or failed) while frozen stays as it is, and may be bound
    /// again.
    pub fn unfreeze(&mut self, now: Timestamp) -> Result<(), Clash> {
        match self.0.status {
            BindingStatus::Frozen => {
                self.go(BindingStatus::Active, now)?;
                self.0.held_since = None;
                Ok(())
            }
            BindingStatus::Inactive | BindingStatus::Failed if self.0.held_since.is_some() => {
                self.0.held_since = None;
                self.0.updated_at = now;
                if std::mem::take(&mut self.0.forget_on_release) {
                    self.0.fingerprint = Fingerprint::erased(&self.0.id);
                }
                Ok(())
            }
            _ => Err(Clash::transition(
                "only a frozen card, or one unbound while frozen, can be unfrozen",
            )),
        }
    }

    /// The user's erasure: a card no longer live forgets its fingerprint
    /// (see [`crate::Wallet::forget_fingerprints`]), but for one an
    /// operator holds: the hold is on this card, and forgetting which card
    /// it is would let the same card be bound again as a new record,
    /// active. Such a card forgets it when the hold is lifted
    /// ([`Binding::unfreeze`]). Whether it changed.
    pub fn forget_fingerprint(&mut self) -> bool {
        if self.0.status.is_live() || self.0.fingerprint.is_erased() {
            return false;
        }
        if self.0.held_since.is_some() {
            return !std::mem::replace(&mut self.0.forget_on_release, true);
        }
        self.0.fingerprint = Fingerprint::erased(&self.0.id);
        true
    }

    /// Unbinds and revokes the current consent (`by`: who ended it). Always
    /// allowed but from `inactive`, where it changes nothing and returns
    /// `Ok(false)`, so that unbinding twice is harmless.
    pub fn unbind(&mut self, now: Timestamp, by: &str) -> Result<bool, Clash> {
        if self.0.status == BindingStatus::Inactive {
            return Ok(false);
        }
        self.go(BindingStatus::Inactive, now)?;
        self.end_consents(now, by);
        Ok(true)
    }

    /// Ends every consent still in force, at `now`, by `by`.
    fn end_consents(&mut self, now: Timestamp, by: &str) {
        for c in self
            .0
            .consents
            .iter_mut()
            .filter(|c| c.revoked_at.is_none())
        {
            c.revoked_at = Some(now);
            c.revoked_by = Some(by.to_owned());
        }
    }
}

/// Who ended a consent whose bind failed: `failed:` and the failure's code.
fn ended_by_failure(reason: Option<&FailureReason>) -> String {
    format!("failed:{}", reason.map_or("failed", |r| r.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::CardNumber;
    use crate::consent::ConsentGiven;
    use crate::error::ErrorCode;

    pub(crate) fn consent(now: Timestamp) -> ConsentRecord {
        ConsentGiven {
            text_version: "v1".into(),
            text_hash: "a".repeat(64),
            ip: None,
            user_agent: Some("agent\u{7}".into()),
        }
        .accept(ChannelName::parse("mock").unwrap(), now)
        .unwrap()
    }

    pub(crate) fn sample(id: &str, now: Timestamp) -> Binding {
        let pan = CardNumber::parse("4111111111111111").unwrap();
        Binding::reserve(
            UserId::parse("u1").unwrap(),
            CardToBind {
                new_id: BindingId::parse(id).unwrap(),
                fingerprint: Fingerprint::new(1, format!("{:0>8}", id.len())),
                card: CardSummary {
                    brand: pan.brand(),
                    bin: pan.bin().to_owned(),
                    last4: pan.last4().to_owned(),
                    expiry: Expiry::restore(12, 2030).unwrap(),
                    facts: None,
                },
                consent: consent(now),
                generation: 1,
                bind_key: None,
            },
            now,
            &VerificationPolicy::default(),
        )
    }

    fn otp(b: &mut Binding, now: Timestamp) {
        b.apply_start(
            StartOutcome::ActionRequired {
                channel_ref: "r".into(),
                action: NextAction::Otp {
                    phone_hint: "+86****8000".into(),
                },
            },
            now,
        )
        .unwrap();
    }

    #[test]
    fn statuses_take_their_article() {
        assert_eq!(BindingStatus::Inactive.a_card(), "an inactive card");
        assert_eq!(BindingStatus::Active.a_card(), "an active card");
        assert_eq!(BindingStatus::Frozen.a_card(), "a frozen card");
        assert_eq!(
            BindingStatus::PendingVerification.a_card(),
            "a pending_verification card"
        );
    }

    #[test]
    fn machine_table() {
        use BindingStatus::*;
        assert!(PendingVerification.can_become(Active));
        assert!(!Inactive.can_become(Active));
        assert!(!Failed.can_become(Active));
        assert!(!Active.can_become(PendingVerification));
        assert!(!Frozen.can_become(Frozen));
        for s in BindingStatus::ALL {
            assert!(!s.can_become(s), "{s} → {s}");
            assert_eq!(BindingStatus::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn otp_attempts_fail_the_binding() {
        let now = Timestamp::from_unix_millis(1_000_000);
        let mut b = sample("b1", now);
        otp(&mut b, now);
        let p = VerificationPolicy::default();
        for i in 1..=p.max_otp_attempts {
            b.begin_otp(now, &p).unwrap();
            assert_eq!(b.otp_attempts, i);
            assert_eq!(b.otp_rejected(now, &p).unwrap(), i == p.max_otp_attempts);
        }
        assert_eq!(
            b.begin_otp(now, &p).unwrap_err().code(),
            ErrorCode::InvalidStateTransition
        );
        assert_eq!(b.status, BindingStatus::Failed);
        assert_eq!(b.failure, Some(FailureReason::InvalidOtp));
        assert_eq!(
            b.failure.as_ref().map(FailureReason::as_str),
            Some("invalid_otp")
        );
    }

    #[test]
    fn attempts_in_flight_are_capped() {
        let now = Timestamp::from_unix_millis(1_000_000);
        let mut b = sample("b1", now);
        otp(&mut b, now);
        let p = VerificationPolicy::default();
        for _ in 0..p.max_otp_attempts {
            b.begin_otp(now, &p).unwrap();
        }
        // Every attempt is taken and none answered yet: no more guesses.
        assert_eq!(
            b.begin_otp(now, &p).unwrap_err().code(),
            ErrorCode::InvalidOtp
        );
        assert_eq!(b.status, BindingStatus::PendingVerification);
    }

    #[test]
    fn expired_window_fails() {
        let now = Timestamp::from_unix_millis(1_000_000);
        let mut b = sample("b1", now);
        otp(&mut b, now);
        let later = now.plus_seconds(VerificationPolicy::default().window_seconds + 1);
        assert_eq!(
            b.begin_otp(later, &VerificationPolicy::default())
                .unwrap_err()
                .code(),
            ErrorCode::VerificationExpired
        );
        assert_eq!(b.status, BindingStatus::Failed);
        assert_eq!(b.failure, Some(FailureReason::VerificationExpired));
    }

    #[test]
    fn only_a_bind_waiting_for_its_channel_is_taken_over() {
        let now = Timestamp::from_unix_millis(1_000_000);
        let later = now.plus_seconds(60);
        let mut b = sample("b1", now);
        let (fingerprint, summary) = (b.fingerprint.clone(), b.card.clone());
        let card = |key: &str| CardToBind {
            new_id: BindingId::parse("unused").unwrap(),
            fingerprint: fingerprint.clone(),
            card: summary.clone(),
            consent: consent(later),
            generation: 9,
            bind_key: Some(key.to_owned()),
        };
        let taking = card("k2");
        let policy = VerificationPolicy::default();
        b.take_over(taking, later, &policy).unwrap();
        assert_eq!(b.bind_key.as_deref(), Some("k2"));
        assert_eq!(b.updated_at, later, "touched: no third request takes it");
        assert_eq!(
            b.verification_expires_at,
            Some(later.plus_seconds(policy.window_seconds)),
            "the window starts again"
        );
        assert_eq!(b.consents.len(), 2, "both consents kept");
        assert_eq!(b.data_generation, 9, "the taking request's data");
        assert!(b.awaits_channel_answer());
        b.apply_start(
            StartOutcome::Bound {
                channel_ref: "t".into(),
            },
            later,
        )
        .unwrap();
        let e = b.take_over(card("k3"), later, &policy).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidStateTransition);
        assert_eq!(b.bind_key.as_deref(), Some("k2"));
    }

    #[test]
    fn rebind_reuses_record_with_a_new_generation_and_consent() {
        let now = Timestamp::from_unix_millis(1_000_000);
        let mut b = sample("b1", now);
        assert_eq!(b.data_generation, 1);
        assert!(b.awaits_channel_answer());
        b.apply_start(
            StartOutcome::Bound {
                channel_ref: "t".into(),
            },
            now,
        )
        .unwrap();
        assert!(!b.awaits_channel_answer());
        assert_eq!(b.consent().unwrap().agreement_id.as_deref(), Some("t"));
        assert!(b.holds_agreement("t"));
        assert!(!b.holds_agreement("u"), "another agreement");
        assert!(b.unbind(now, "alice").unwrap());
        assert!(!b.holds_agreement("t"), "an unbound card holds nothing");
        assert!(!b.unbind(now, "alice").unwrap());
        assert_eq!(b.consent().unwrap().revoked_by.as_deref(), Some("alice"));
        let again = |generation, key: &str| CardToBind {
            new_id: BindingId::parse("unused").unwrap(),
            fingerprint: b.fingerprint.clone(),
            card: b.card.clone(),
            consent: consent(now),
            generation,
            bind_key: Some(key.to_owned()),
        };
        let card = again(2, "k2");
        b.rebind(card, now, &VerificationPolicy::default()).unwrap();
        assert_eq!(b.bind_key.as_deref(), Some("k2"), "the new bind's request");
        assert_eq!(b.status, BindingStatus::PendingVerification);
        assert_eq!(b.channel_ref, None);
        assert_eq!(b.data_generation, 2, "the generation the request chose");
        assert_eq!(b.consents.len(), 2);
        assert!(b.consent().unwrap().revoked_at.is_none());
        // The first bind's agreement is an earlier one now; the current
        // bind holds none yet.
        assert!(b.held_before("t"));
        assert!(!b.held_before("u"));
        assert!(!b.holds_agreement("t"), "the rebound card waits on none");
        b.activate(Some("u".into()), now).unwrap();
        assert!(b.holds_agreement("u"));
        assert!(!b.holds_agreement("t"));
        assert!(
            !b.held_before("u"),
            "the current agreement is not an earlier one"
        );
        assert!(b.held_before("t"));
        let card = CardToBind {
            new_id: BindingId::parse("unused").unwrap(),
            fingerprint: b.fingerprint.clone(),
            card: b.card.clone(),
            consent: consent(now),
            generation: 3,
            bind_key: None,
        };
        let e = b.rebind(card, now, &VerificationPolicy::default());
        assert_eq!(e.unwrap_err().code, ErrorCode::CardAlreadyBound);
    }

    /// A failed bind's consent ends with it, at the failure; a bind of the
    /// card again has a consent of its own, which its unbind ends. Before,
    /// the failed bind's consent stayed in force beside the new one, and the
    /// unbind ended both at its own time.
    #[test]
    fn a_failed_binds_consent_ends_with_it() {
        let t = |s: i64| Timestamp::from_unix_millis(s * 1000);
        let mut b = sample("card_f", t(0));
        b.fail(FailureReason::InvalidOtp, t(5)).unwrap();
        let ended = |c: &ConsentRecord| (c.revoked_at, c.revoked_by.clone());
        assert_eq!(
            ended(b.consent().unwrap()),
            (Some(t(5)), Some("failed:invalid_otp".to_owned()))
        );
        let again = |b: &Binding, at: Timestamp| CardToBind {
            new_id: BindingId::parse("unused").unwrap(),
            fingerprint: b.fingerprint.clone(),
            card: b.card.clone(),
            consent: consent(at),
            generation: 2,
            bind_key: None,
        };
        b.rebind(again(&b, t(9)), t(9), &VerificationPolicy::default())
            .unwrap();
        assert_eq!(b.consents.len(), 2);
        assert_eq!(ended(&b.consents[1]), (None, None), "the new bind's");
        b.unbind(t(20), "user-1").unwrap();
        assert_eq!(
            b.consents.iter().map(ended).collect::<Vec<_>>(),
            [
                (Some(t(5)), Some("failed:invalid_otp".to_owned())),
                (Some(t(20)), Some("user-1".to_owned())),
            ]
        );

        // A card an older build failed kept its consent in force: a bind
        // of it again ends that consent as of the failure.
        let mut old = sample("card_o", t(0));
        old.fail(FailureReason::VerificationExpired, t(7)).unwrap();
        old.0.consents[0].revoked_at = None;
        old.0.consents[0].revoked_by = None;
        old.rebind(again(&old, t(30)), t(30), &VerificationPolicy::default())
            .unwrap();
        assert_eq!(
            old.consents.iter().map(ended).collect::<Vec<_>>(),
            [
                (Some(t(7)), Some("failed:verification_expired".to_owned())),
                (None, None),
            ]
        );
    }

    #[test]
    fn a_card_bound_again_and_again_keeps_its_newest_consents() {
        let t = |s: i64| Timestamp::from_unix_millis(s * 1000);
        let mut b = sample("card_1", t(0));
        let rounds = CONSENTS_KEPT as i64 + 5;
        for i in 1..=rounds {
            b.unbind(t(2 * i), "u").unwrap();
            let card = CardToBind {
                new_id: BindingId::parse("unused").unwrap(),
                fingerprint: b.fingerprint.clone(),
                card: b.card.clone(),
                consent: consent(t(2 * i + 1)),
                generation: i as u32 + 1,
                bind_key: None,
            };
            b.rebind(card, t(2 * i + 1), &VerificationPolicy::default())
                .unwrap();
            assert!(b.consents.len() <= CONSENTS_KEPT);
        }
        assert_eq!(b.consents.len(), CONSENTS_KEPT);
        // The newest stay, in order, and the current one is the last bind's.
        let kept: Vec<Timestamp> = b.consents.iter().map(|c| c.accepted_at).collect();
        let newest: Vec<Timestamp> = (rounds - CONSENTS_KEPT as i64 + 1..=rounds)
            .map(|i| t(2 * i + 1))
            .collect();
        assert_eq!(kept, newest);
        assert_eq!(b.consents_dropped, 6, "26 binds, 20 kept");
        assert_eq!(b.consent().unwrap().accepted_at, t(2 * rounds + 1));
        assert!(b.consent().unwrap().revoked_at.is_none());
        assert!(b.consents[..CONSENTS_KEPT - 1]
            .iter()
            .all(|c| c.revoked_at.is_some()));
    }

    #[test]
    fn consent_is_checked_and_cleaned() {
        let now = Timestamp::from_unix_millis(1);
        let ch = ChannelName::parse("mock").unwrap();
        let c = consent(now);
        assert_eq!(c.user_agent.as_deref(), Some("agent"));
        for (v, h) in [
            ("", "a".repeat(64)),
            ("v1", "a".repeat(63)),
            ("v1", "g".repeat(64)),
        ] {
            let e = ConsentGiven {
                text_version: v.into(),
                text_hash: h,
                ..Default::default()
            }
            .accept(ch.clone(), now)
            .unwrap_err();
            assert_eq!(
                (e.code, e.field),
                (ErrorCode::InvalidRequest, Some("consent"))
            );
        }
        let long = ConsentGiven {
            text_version: "v".into(),
            text_hash: "A".repeat(64),
            user_agent: Some("x".repeat(2000)),
            ..Default::default()
        }
        .accept(ch, now)
        .unwrap();
        assert_eq!(long.text_hash, "a".repeat(64));
        assert_eq!(
            long.user_agent.map(|u| u.len()),
            Some(ConsentGiven::USER_AGENT_MAX)
        );
    }
}
