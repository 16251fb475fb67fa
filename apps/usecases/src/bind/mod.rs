//! Binding a card, and asking its channel to start (shared with the
//! operator's retry of a card in review).
//!
//! ## Order of writes
//! 1. authorize; fingerprint the PAN; read the wallet; take a slot in each
//!    rate window (user, client IP, card) — unless this request is a retry
//!    of the one that placed the card (same idempotency key), which is not
//!    counted twice;
//! 2. place the card in the wallet (a new record, its old record again, or
//!    the earlier bind of it that never stored its channel's answer: a
//!    retry of the same request resumes it at once, another request once
//!    it is `resume_after_seconds` old, taking it over: that request's
//!    consent is recorded and it owns the bind from then on, written
//!    conditionally so that only one request takes it over);
//! 3. seal the card data (in memory: a key service that does not answer
//!    leaves nothing written);
//! 4. write the wallet with the card `pending_verification`, its consent
//!    and the audit event, conditional on the version read (a lost race
//!    reads and decides again); then store the sealed data under this
//!    bind's generation, and delete the data of the bind this one follows
//!    (that generation only);
//! 5. ask the channel, with our binding id and this bind's attempt (the
//!    data generation) as its external reference; store the channel's
//!    reference (for notifications that name only it);
//! 6. write the channel's answer to the wallet (active, waiting for the
//!    user, failed, or in review when the channel cannot be reached), if
//!    the card still waits for this attempt; else end its agreement and
//!    delete this bind's data.
//!
//! A crash or a store failure after 4 leaves a card waiting for its
//! channel's answer: the client's retry (same key) resumes it and gets the
//! card (storing its data if that had not happened), a bind of it by
//! another request resumes it later, and `reconcile` asks the channel.
//! Every delete names the generation it read, never the card's others: a
//! bind of the card again may be storing its own at that moment.

use std::sync::Arc;

use cardbind_domain::{
    Action, Binding, BindingId, BindingStatus, CardNumber, CardSummary, CardToBind, ChannelCode,
    ChannelName, Clash, ConflictCode, ConsentGiven, ConsentRecord, Cvv, Expiry, Fingerprint,
    HolderName, Invalid, NextAction, Opened, Phone, RateRule, ResidentId, StartOutcome, Timestamp,
    TooManyRequestsCode, UserId, Wallet,
};
use cardbind_ports::audit::AuditAction;
use cardbind_ports::channel::{ChannelBindRequest, ChannelStart, PaymentChannel};
use cardbind_ports::store::{
    CardData, ChannelRefEntry, RateTake, RateWindow, RefTarget, ReviewEntry,
};
use cardbind_ports::{ChannelError, StoreError};

use crate::context::RequestContext;
use crate::error::{channel_not_enabled, channel_rejected, op_error, Internal, Limited};
use crate::sealing::{CardDetails, Owner};
use crate::tx::{until_settled, Loaded, Raced};
use crate::unwanted::{Agreement, Held};
use crate::{CardView, UseCases};

mod start;

op_error! {
    /// Why a bind was refused.
    pub enum BindError { BadRequest, Forbidden, Conflict, Unprocessable, TooManyRequests, Unavailable }
    from Store, KeysSealing, Rules
}

/// A card to bind, every field parsed.
#[derive(Clone, Debug)]
pub struct BindCard {
    pub user: UserId,
    pub details: CardDetails,
    pub expiry: Expiry,
    /// Sent to the channel when given; never stored.
    pub cvv: Option<Cvv>,
    /// `None`: the configured default channel.
    pub channel: Option<ChannelName>,
    pub consent: ConsentGiven,
    /// An opaque token of the request (its idempotency key with its
    /// caller), when it has one: a retry of the same request after a
    /// failure resumes the card this request placed, at once and without
    /// counting again against the velocity rules.
    pub bind_key: Option<String>,
}

/// A bind request as received: the user, the card fields as typed and the
/// consent. Parsed by [`UseCases::bind`] once the caller is authorized.
#[derive(Clone)]
pub struct BindForm {
    pub user: UserId,
    pub card_number: String,
    pub expiry_month: u32,
    pub expiry_year: u32,
    pub cvv: Option<String>,
    pub holder_name: String,
    pub id_number: String,
    pub phone: String,
    pub channel: Option<String>,
    pub consent: ConsentGiven,
    /// See [`BindCard::bind_key`].
    pub bind_key: Option<String>,
}

impl std::fmt::Debug for BindForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BindForm({}, <card data redacted>)", self.user)
    }
}

impl BindForm {
    /// Parses every field, the first failure wins, in the order of the form.
    pub fn parse(self, now: Timestamp) -> Result<BindCard, Invalid> {
        let form = CardForm {
            card_number: &self.card_number,
            expiry_month: self.expiry_month,
            expiry_year: self.expiry_year,
            cvv: self.cvv.as_deref(),
            holder_name: &self.holder_name,
            id_number: &self.id_number,
            phone: &self.phone,
            channel: self.channel.as_deref(),
        };
        let mut cmd = BindCard::parse(self.user.clone(), form, self.consent.clone(), now)?;
        cmd.bind_key = self.bind_key.clone();
        Ok(cmd)
    }
}

/// A bind request's card fields as received.
#[derive(Clone, Copy)]
pub struct CardForm<'a> {
    pub card_number: &'a str,
    pub expiry_month: u32,
    pub expiry_year: u32,
    pub cvv: Option<&'a str>,
    pub holder_name: &'a str,
    pub id_number: &'a str,
    pub phone: &'a str,
    pub channel: Option<&'a str>,
}

impl std::fmt::Debug for CardForm<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CardForm(<card data redacted>)")
    }
}

/// China's offset from UTC (no daylight saving time since 1991).
const CHINA_UTC_OFFSET_SECONDS: i64 = 8 * 3600;

impl BindCard {
    /// Parses every field, the first failure wins, in the order of the form.
    pub fn parse(
        user: UserId,
        form: CardForm<'_>,
        consent: ConsentGiven,
        now: Timestamp,
    ) -> Result<BindCard, Invalid> {
        // Dates are judged by the calendar in China (UTC+8), where the
        // channels and the resident ID numbers are: a card that expired in
        // December is refused from midnight on 1 January there, not eight
        // hours later, and a birth date of today there is taken.
        let china = now.plus_seconds(CHINA_UTC_OFFSET_SECONDS);
        let card = CardNumber::parse(form.card_number)?;
        let expiry = Expiry::parse(form.expiry_month, form.expiry_year, china.year_month())?;
        let cvv = match form.cvv {
            None | Some("") => None,
            Some(c) => Some(Cvv::parse(c, card.brand())?),
        };
        let holder_name = HolderName::parse(form.holder_name)?;
        let id_number = ResidentId::parse(form.id_number)?.born_by(china.date())?;
        let phone = Phone::parse(form.phone)?;
        let channel = form.channel.map(ChannelName::parse).transpose()?;
        Ok(BindCard {
            user,
            details: CardDetails {
                card,
                holder_name,
                id_number,
                phone,
            },
            expiry,
            cvv,
            channel,
            consent,
            bind_key: None,
        })
    }
}

/// A card to start at its channel.
pub(crate) struct Start<'a> {
    pub user: &'a UserId,
    pub id: &'a BindingId,
    pub channel_name: &'a ChannelName,
    pub channel: Arc<dyn PaymentChannel>,
    pub request: &'a ChannelBindRequest,
    /// The generation of the card's sealed data this start sends.
    pub generation: u32,
}

impl UseCases {
    /// Binds a card for its user: authorizes the caller, parses the form,
    /// then as [`UseCases::bind_card`].
    pub async fn bind(&self, ctx: &RequestContext, form: BindForm) -> Result<CardView, BindError> {
        self.authorize(ctx, Action::BindCard, Some(&form.user))
            .await?;
        let cmd = form.parse(self.now())?;
        self.bind_card(ctx, cmd).await
    }

    /// Binds a parsed card for its user: see the module docs for the order
    /// of writes.
    pub async fn bind_card(
        &self,
        ctx: &RequestContext,
        cmd: BindCard,
    ) -> Result<CardView, BindError> {
        self.authorize(ctx, Action::BindCard, Some(&cmd.user))
            .await?;
        let channel_name = cmd
            .channel
            .clone()
            .unwrap_or_else(|| self.ports.channels.default_name().clone());
        let channel = self
            .channel(&channel_name)
            .ok_or_else(channel_not_enabled)?;
        let fingerprint = self.ports.vault.fingerprint(&cmd.details.card).await?;
        // The wallet read that placing the card starts from: it also tells
        // a retry of a request that already placed this card (its first
        // attempt failed after the write), which is not counted again.
        let first = self.load(&cmd.user).await?;
        let own = own_card(&first.wallet, &fingerprint, cmd.bind_key.as_deref());
        match own {
            // A retry of a request whose bind went through but whose
            // answer was lost (a timeout after the last write): its card,
            // not a 409.
            // (A card past its verification window is bound again below.)
            Some(b)
                if b.status.is_live()
                    && !b.awaits_channel_answer()
                    && !b.verification_lapsed(self.now()) =>
            {
                return Ok(self
                    .view_as_read(&first, &b.id)
                    .await
                    .map_err(|_| Internal::new("a bound card is not in its wallet"))?);
            }
            // A retry of the request that placed the card: not counted again.
            Some(b) if b.awaits_channel_answer() => {}
            _ => self.take_bind_slots(ctx, &cmd.user, &fingerprint).await?,
        }
        // What the BIN table says of the card, and whether the channel
        // takes it (refused probes still count against the limits above).
        let facts = self
            .ports
            .bins
            .lookup_card(&cmd.details.card)
            .map(|e| e.info);
        if let Some(rule) = self.policy.card_rules.get(&channel_name) {
            if let Err(refusal) = rule.check(facts.as_ref()) {
                self.audit_refused_bind(ctx, &cmd.user, refusal.code).await;
                return Err(refusal.into());
            }
        }
        let facts_currency = facts.as_ref().and_then(|f| f.currency);
        let (id, generation, known) = self
            .reserve(ctx, &cmd, &channel_name, &fingerprint, facts, first)
            .await?;
        let request = ChannelBindRequest {
            binding_id: id.clone(),
            attempt: generation,
            user_id: cmd.user.clone(),
            card: cmd.details.card.clone(),
            expiry: cmd.expiry,
            cvv: cmd.cvv.clone(),
            holder_name: cmd.details.holder_name.clone(),
            id_number: cmd.details.id_number.clone(),
            phone: cmd.details.phone.clone(),
            currency: facts_currency,
        };
        let start = Start {
            user: &cmd.user,
            id: &id,
            channel_name: &channel_name,
            channel,
            request: &request,
            generation,
        };
        let view = self
            .start_at_channel::<BindError>(ctx, start, Some(known))
            .await?;
        // Unbound while this bind ran (a concurrent unbind, or the user's
        // erasure): what it made is gone, and `201 Created` of an inactive
        // card would say otherwise. The bind and the unbind are both in the
        // audit log; a new bind of the card binds it again.
        if view.binding.status == BindingStatus::Inactive {
            return Err(Clash::transition(
                "the card was unbound while this bind ran; bind it again to bind it",
            )
            .into());
        }
        // Failed while this bind waited for its channel's answer (the
        // channel's callback declined it first): the answer is that
        // decline, as when the channel's answer itself declines it, not
        // `201 Created` of a failed card (which a retry under the same key
        // would replay).
        if view.binding.status == BindingStatus::Failed {
            return Err(match &view.binding.failure {
                Some(cardbind_domain::FailureReason::ChannelDeclined(code)) => {
                    channel_rejected(code.as_str()).into()
                }
                other => Clash::transition(format!(
                    "the card failed while this bind ran ({}); bind it again to try again",
                    other.as_ref().map_or("failed", |f| f.as_str())
                ))
                .into(),
            });
        }
        Ok(view)
    }

    /// Takes a slot in each bind window; a full one is `rate_limited`,
    /// `ip_rate_limited` or `card_velocity_exceeded`.
    async fn take_bind_slots(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        fingerprint: &Fingerprint,
    ) -> Result<(), BindError> {
        let now = self.now();
        let p = &self.policy;
        let mut rules: Vec<(RateRule, String, TooManyRequestsCode)> = vec![(
            p.binds_per_user,
            format!("bind:user:{user}"),
            TooManyRequestsCode::RateLimited,
        )];
        if let (Some(rule), Some(ip)) = (p.binds_per_ip, ctx.client_ip.as_deref()) {
            rules.push((
                rule,
                format!("bind:ip:{}", cardbind_domain::address_block(ip)),
                TooManyRequestsCode::IpRateLimited,
            ));
        }
        if let Some(rule) = p.binds_per_card {
            rules.push((
                rule,
                format!("bind:card:{fingerprint}"),
                TooManyRequestsCode::CardVelocityExceeded,
            ));
        }
        let windows: Vec<RateWindow> = rules
            .iter()
            .map(|(rule, key, _)| RateWindow {
                key: format!("{key}:{}", rule.window_start(now)),
                limit: rule.limit,
                expires_at: rule.window_end(now),
            })
            .collect();
        let takes = self.ports.rates.take(&windows, now).await?;
        for ((rule, _, code), take) in rules.iter().zip(takes) {
            if take == RateTake::Full {
                let retry = (rule.window_end(now).unix_seconds() - now.unix_seconds()).max(1);
                let refusal = cardbind_domain::Refused::new(
                    *code,
                    "too many attempts; retry after the time in Retry-After",
                );
                self.audit_refused_bind(ctx, user, refusal.code).await;
                return Err(Limited {
                    refusal,
                    retry_after_seconds: u32::try_from(retry).unwrap_or(u32::MAX),
                }
                .into());
            }
        }
        Ok(())
    }

    /// A refused bind that changed nothing, in the user's own chain (so
    /// that a flood of refused binds contends only on that user's wallet).
    /// A failure to store it is logged; the refusal is still answered.
    async fn audit_refused_bind(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        code: cardbind_domain::ErrorCode,
    ) {
        let r = self
            .change_wallet::<_, BindError>(ctx, user, None, |_, now| {
                let e = ctx
                    .event(now, AuditAction::BindingCreate)
                    .user(user)
                    .refused(code)
                    .build();
                crate::tx::Decided::new(Ok(()), vec![e])
            })
            .await;
        if let Err(e) = r {
            tracing::error!(%user, error = %e, "refused bind not audited");
        }
    }

    /// Places the card in its user's wallet as `pending_verification`
    /// (steps 2–4), or finds the earlier bind of it to resume; then stores
    /// its sealed data. Returns the card, the generation of its data and
    /// the wallet as written.
    async fn reserve(
        &self,
        ctx: &RequestContext,
        cmd: &BindCard,
        channel: &ChannelName,
        fingerprint: &Fingerprint,
        facts: Option<cardbind_domain::BinInfo>,
        first: Loaded,
    ) -> Result<(BindingId, u32, Loaded), BindError> {
        let now = self.now();
        let consent = cmd.consent.clone().accept(channel.clone(), now)?;
        let card = CardToBind {
            new_id: self.ports.ids.binding_id(),
            fingerprint: fingerprint.clone(),
            card: CardSummary {
                brand: cmd.details.card.brand(),
                bin: cmd.details.card.bin().to_owned(),
                last4: cmd.details.card.last4().to_owned(),
                expiry: cmd.expiry,
                facts,
            },
            consent,
            generation: self.ports.ids.data_generation(),
            bind_key: cmd.bind_key.clone(),
        };
        // The card data is sealed before anything is written, so that a key
        // service that does not answer leaves nothing behind (`503
        // key_service_unavailable`, no card). Sealing binds each field to
        // the card's id, which opening the wallet just read tells; a lost
        // race that ends on another id seals again below.
        let mut sealed = {
            let mut w = first.wallet.clone();
            match w.open(
                card.clone(),
                self.policy.card_cap,
                now,
                &self.policy.verification,
            ) {
                Ok(Opened::New(id) | Opened::Again(id)) => {
                    // No live card: the user may have been erased since
                    // this process cached their key (as a user with
                    // nothing stored, the key is looked for in the store).
                    let owner = if first.head.is_none() || first.wallet.live_count() == 0 {
                        Owner::ProbablyNew
                    } else {
                        Owner::Known
                    };
                    let s = self.seal(&cmd.user, &id, &cmd.details, owner).await?;
                    Some((id, s))
                }
                // A refusal is decided (and audited) below; a resumed card
                // is sealed below only if its data is missing.
                Ok(Opened::Resume(_)) | Err(_) => None,
            }
        };
        // The first round decides on the wallet already read; a lost race
        // reads it again.
        let first = std::sync::Mutex::new(Some(first));
        // A round after the first (a lost race) seals the card again: what
        // was sealed before the first round may be under a key an erasure
        // (the change that beat it) has destroyed since. It seals in the
        // round, before its commit: an erasure that comes after that
        // commit deletes the key it was sealed under (sealed after the
        // commit, it could be under a key made after the erasure's delete,
        // which would outlive the erasure). What a round sealed is used
        // before what was sealed ahead of the first.
        let sealed_in_round: std::sync::Mutex<Option<(BindingId, cardbind_domain::SealedCard)>> =
            std::sync::Mutex::new(None);
        let seal_in_round = |id: BindingId| async {
            let s = self
                .seal(&cmd.user, &id, &cmd.details, Owner::Known)
                .await
                .map_err(|e| Raced::fail(BindError::from(e)))?;
            if let Ok(mut slot) = sealed_in_round.lock() {
                *slot = Some((id, s));
            }
            Ok::<(), Raced<BindError>>(())
        };
        // `replaced`: the generation of the data the card held before this
        // bind (an earlier bind's, ended or taken over), when it had one.
        let (id, resumed, replaced, loaded) = until_settled::<_, BindError, _, _>(|| async {
            let pre = first.lock().unwrap_or_else(|p| p.into_inner()).take();
            let raced = pre.is_none();
            let loaded = match pre {
                Some(l) => l,
                None => self.load(&cmd.user).await?,
            };
            let mut wallet = loaded.wallet.clone();
            let opened = match wallet.open(
                card.clone(),
                self.policy.card_cap,
                now,
                &self.policy.verification,
            ) {
                Ok(o) => o,
                Err(refusal) => {
                    let e = bind_event(ctx, now, &cmd.user, None, AuditAction::BindingCreate)
                        .refused(refusal.code())
                        .build();
                    self.commit(ctx, &loaded, &loaded.wallet, vec![e]).await?;
                    return Err(Raced::fail(refusal));
                }
            };
            let before = match &opened {
                Opened::Resume(id) | Opened::Again(id) => {
                    loaded.wallet.get(id).ok().map(|b| b.data_generation)
                }
                Opened::New(_) => None,
            };
            let (id, action) = match opened {
                Opened::Resume(id) => {
                    let own = self
                        .may_resume(&loaded, &id, channel, cmd.bind_key.as_deref(), now)
                        .map_err(Raced::fail)?;
                    // The request that placed it resumes it; another takes
                    // it over (its consent recorded, its data stored anew).
                    // Either way the card is written, checked against the
                    // wallet read, so that of the requests that read it
                    // waiting one goes on to the channel, not each.
                    wallet
                        .change::<_, _, cardbind_domain::StateRefusal>(&id, |b| {
                            if own {
                                b.resume(now, &self.policy.verification)
                            } else {
                                b.take_over(card.clone(), now, &self.policy.verification)
                            }
                        })
                        .map_err(|_| Raced::fail(Internal::new("a card to resume cannot be resumed")))?;
                    // Its data may be missing (the stopped request did not
                    // store it, or a take-over stores it anew): sealed now,
                    // before the commit, in case it is.
                    seal_in_round(id.clone()).await?;
                    let e = if own {
                        bind_event(ctx, now, &cmd.user, Some(&id), AuditAction::BindingResume)
                            .detail("-> pending_verification; resumed by a retry of the request that placed it")
                    } else {
                        bind_event(ctx, now, &cmd.user, Some(&id), AuditAction::BindingRebind).detail(
                            format!(
                                "-> pending_verification; {}; takes over the bind left waiting for its channel's answer",
                                consent_detail(&card.consent)
                            ),
                        )
                    }
                    .build();
                    let head = self.commit(ctx, &loaded, &wallet, vec![e]).await?;
                    let replaced = (!own).then_some(before).flatten();
                    return Ok((id, true, replaced, Loaded { wallet, head }));
                }
                Opened::New(id) => (id, AuditAction::BindingCreate),
                Opened::Again(id) => (id, AuditAction::BindingRebind),
            };
            if raced {
                seal_in_round(id.clone()).await?;
            }
            // Bound again from `pending_verification`: the bind before it
            // waited past its window, and failed on the way (recorded as
            // reconciliation records it, then the bind as any other).
            let lapsed = loaded
                .wallet
                .get(&id)
                .is_ok_and(|b| b.status == BindingStatus::PendingVerification);
            let mut events = Vec::with_capacity(2);
            if lapsed {
                events.push(
                    bind_event(ctx, now, &cmd.user, Some(&id), AuditAction::BindingChannelEvent)
                        .detail(format!(
                            "pending_verification -> failed; {}: its verification window closed before this bind of the card",
                            cardbind_domain::FailureReason::VerificationExpired.as_str()
                        ))
                        .build(),
                );
            }
            events.push(
                bind_event(ctx, now, &cmd.user, Some(&id), action)
                    .detail(format!(
                        "-> pending_verification; {}",
                        consent_detail(&card.consent)
                    ))
                    .build(),
            );
            let head = self.commit(ctx, &loaded, &wallet, events).await?;
            Ok((id, false, before, Loaded { wallet, head }))
        })
        .await?;
        // The data is stored once the wallet names its generation, so that
        // no data exists for a card no wallet holds. A bind resumed after a
        // failure here stores it then.
        let generation = loaded
            .wallet
            .get(&id)
            .map_err(|_| Internal::new("a reserved card is not in its wallet"))?
            .data_generation;
        let missing = !resumed
            || self
                .ports
                .card_data
                .get(&cmd.user, &id, generation)
                .await?
                .is_none();
        if missing {
            let data = CardData {
                binding: id.clone(),
                user: cmd.user.clone(),
                generation,
                // Sealed before the commit that placed (or resumed) the
                // card: in that round, or before the first.
                sealed: match (
                    sealed_in_round.lock().ok().and_then(|mut s| s.take()),
                    sealed.take(),
                ) {
                    (Some((sealed_for, s)), _) | (None, Some((sealed_for, s)))
                        if sealed_for == id =>
                    {
                        s
                    }
                    _ => {
                        return Err(Internal::new(
                            "the card's data was not sealed before its commit",
                        )
                        .into())
                    }
                },
            };
            match self.ports.card_data.put(&data).await {
                // A concurrent resume of the same bind stored it.
                Ok(()) | Err(StoreError::Duplicate) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // The data of the bind this one follows goes: a bind taken over
        // leaves what the stopped request stored under its own generation,
        // and an ended card's was deleted at its end unless that failed.
        // Only that generation: every delete names the generation it saw,
        // so that none takes the data a later bind of the card is storing.
        // Best effort: what stays goes with the user's erasure, or when
        // the card leaves its wallet.
        // Its channel references go too (a failed bind's, kept until now,
        // or the stopped request's).
        if let Some(old) = replaced.filter(|old| *old != generation) {
            self.forget_bind(&cmd.user, &id, old).await;
        }
        Ok((id, generation, loaded))
    }

    /// An earlier bind of this card whose channel answer was never stored:
    /// resumed at once by a retry of the request that placed it (its
    /// idempotency lease says that attempt is no longer running), else
    /// once it is old enough not to be still running. Whether the request
    /// is the one that placed it.
    fn may_resume(
        &self,
        loaded: &Loaded,
        id: &BindingId,
        channel: &ChannelName,
        bind_key: Option<&str>,
        now: Timestamp,
    ) -> Result<bool, BindError> {
        let b = loaded
            .wallet
            .get(id)
            .map_err(|_| Internal::new("a card to resume is not in its wallet"))?;
        // The card records its channel (and the consent given for it):
        // resumed through another, the agreement would be made where the
        // card says it is not, and nothing here could verify, end or
        // reconcile it.
        if &b.channel != channel {
            return Err(Clash::new(
                ConflictCode::Conflict,
                "this card is being bound through another channel; retry once that bind has ended",
            )
            .into());
        }
        let own = bind_key.is_some() && b.bind_key.as_deref() == bind_key;
        if !own && now < b.updated_at.plus_seconds(self.policy.resume_after_seconds) {
            return Err(Clash::new(
                ConflictCode::Conflict,
                "this card is being bound; retry shortly",
            )
            .into());
        }
        Ok(own)
    }

    /// Deletes the sealed data of the bind of a card that left the
    /// statuses that keep it: the one generation that bind stored, not the
    /// card's (a bind of the card again may be storing its own). A failure
    /// is logged: the next bind of the card, the user's erasure or the
    /// card leaving its wallet removes it.
    pub(crate) async fn drop_card_data(&self, user: &UserId, id: &BindingId, generation: u32) {
        if let Err(e) = self
            .ports
            .card_data
            .delete_generation(user, id, generation)
            .await
        {
            tracing::warn!(binding = %id, error = %e, "card data not deleted yet");
        }
    }
}

/// The consent a bind recorded, as its audit event tells it: the wallet
/// keeps only a card's newest consents (and a user's most recently ended
/// cards), the audit log every one for its retention. The text version
/// and the user agent are quoted (escaped as Rust strings): they may hold
/// spaces and quotes.
fn consent_detail(c: &ConsentRecord) -> String {
    let ip =
        c.ip.as_deref()
            .map(|ip| format!(" ip {ip}"))
            .unwrap_or_default();
    let agent = c
        .user_agent
        .as_deref()
        .map(|ua| format!(" user_agent {ua:?}"))
        .unwrap_or_default();
    format!(
        "consent sha256 {}{ip} version {:?}{agent}",
        c.text_hash, c.text_version
    )
}

fn bind_event(
    ctx: &RequestContext,
    now: Timestamp,
    user: &UserId,
    id: Option<&BindingId>,
    action: AuditAction,
) -> crate::context::EventBuilder {
    let e = ctx.event(now, action).user(user);
    match id {
        Some(id) => e.binding(id),
        None => e,
    }
}

/// The card of this fingerprint in the wallet when the request under
/// `bind_key` placed it (`Binding::bind_key`).
fn own_card<'w>(
    wallet: &'w Wallet,
    fingerprint: &Fingerprint,
    bind_key: Option<&str>,
) -> Option<&'w Binding> {
    let key = bind_key?;
    wallet
        .find_card(fingerprint)
        .filter(|b| b.bind_key.as_deref() == Some(key))
}

impl UseCases {
    /// The view of one of the user's own cards that a write answers with,
    /// its `is_default` as a read shows it: when the user's default is a
    /// shared card, whether that card may be used now decides (a frozen or
    /// ended one gives way to the promotion rule's pick), which takes the
    /// sharers' wallets; they are read only then. Should that read fail,
    /// the answer says what the user's own wallet says (the write is done
    /// either way).
    pub(crate) async fn view_as_read(
        &self,
        loaded: &Loaded,
        id: &BindingId,
    ) -> Result<CardView, cardbind_domain::Missing> {
        let mut v = view(&loaded.wallet, id)?;
        let w = &loaded.wallet;
        let shared_default = w.effective_default().is_some_and(|d| w.get(d).is_err());
        if shared_default {
            match self.default_as_read(loaded).await {
                Ok(d) => v.is_default = d.as_ref() == Some(id),
                Err(e) => {
                    tracing::warn!(error = %e, "sharers' wallets not read; the answer's is_default is the wallet's own")
                }
            }
        }
        Ok(v)
    }
}

/// The view of one card of a wallet (`is_default` as the wallet alone
/// says: see [`UseCases::view_as_read`]).
pub(crate) fn view(w: &Wallet, id: &BindingId) -> Result<CardView, cardbind_domain::Missing> {
    let b = w.get(id)?;
    Ok(CardView {
        is_default: w.is_default(id),
        binding: b.clone(),
    })
}
