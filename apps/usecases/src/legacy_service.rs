//! The use cases: bind, verify, read, set default, unbind, freeze, review,
//! channel events, reconciliation, erasure. Written only against the ports.
//!
//! ## Order of writes (no multi-document transactions)
//! Each step is one atomic write; a crash between two steps leaves a state
//! that a later request, `reconcile` or `repair_default` completes:
//!
//! 1. parse and authorize; count the attempt against the rate rules;
//! 2. fingerprint the PAN and seal every card field (a key-service failure
//!    stops here: nothing is written);
//! 3. insert the binding as `pending_verification` with no channel
//!    reference — the unique (user, fingerprint) rule makes this the single
//!    point where concurrent binds of one card race, and exactly one wins;
//! 4. record the consent (on failure the binding is marked `failed`);
//! 5. ask the channel, using our binding id as its external reference;
//! 6. store the channel's answer with a conditional update on `version`.
//!
//! If 6 never happens, the binding waits in `pending_verification` without
//! a channel reference, and `reconcile` asks the channel by our binding id.

use std::sync::Arc;

use cardbind_domain::binding::StartOutcome;
use cardbind_domain::{
    Action, Actor, Binding, BindingId, BindingStatus, CardCap, CardNumber, CardSummary,
    ChannelName, Cvv, DomainError, ErrorCode, Expiry, Fingerprint, HolderName, NextAction, Phone,
    RateDecision, RateRule, ResidentId, SealedCard, Timestamp, UserId, VerificationPolicy, Wallet,
};

use crate::audit::{AuditEvent, AuditFilter, AuditLog, AuditRecord};
use crate::channel::{
    BindingRef, ChannelBindRequest, ChannelEvent, ChannelEventKind, ChannelRegistry, ChannelStart,
    ConfirmOutcome, Notification, NotificationAck, PaymentChannel, RemoteState,
};
use crate::clock::{Clock, IdGenerator};
use crate::error::{ServiceError, StoreError};
use crate::keys::{CardVault, SealContext};
use crate::step_up::{actions, StepUpVerifier};
use crate::store::{BindingStore, Consent, ConsentLog, RateCounter, SeenIds};

/// The ports the use cases run on, chosen at the composition root.
#[derive(Clone)]
pub struct Ports {
    pub bindings: Arc<dyn BindingStore>,
    pub rates: Arc<dyn RateCounter>,
    pub consents: Arc<dyn ConsentLog>,
    pub seen: Arc<dyn SeenIds>,
    pub audit: Arc<dyn AuditLog>,
    pub vault: Arc<dyn CardVault>,
    pub channels: ChannelRegistry,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn IdGenerator>,
}

/// Limits and windows.
#[derive(Clone, Debug)]
pub struct Policy {
    pub card_cap: CardCap,
    /// Bind attempts per user (default 3 a minute).
    pub binds_per_user: RateRule,
    /// Bind attempts per client IP, across users.
    pub binds_per_ip: Option<RateRule>,
    /// Bind attempts per card fingerprint, across users (card testing).
    pub binds_per_card: Option<RateRule>,
    pub verification: VerificationPolicy,
    /// How long notification ids are remembered for deduplication.
    pub notification_memory_seconds: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            card_cap: CardCap::default(),
            binds_per_user: RateRule::BINDS_PER_USER,
            binds_per_ip: Some(RateRule {
                limit: 30,
                window_seconds: 60,
            }),
            binds_per_card: Some(RateRule {
                limit: 5,
                window_seconds: 3600,
            }),
            verification: VerificationPolicy::default(),
            notification_memory_seconds: 30 * 24 * 3600,
        }
    }
}

/// Who is asking, for authorization and the audit trail.
#[derive(Clone, Debug)]
pub struct RequestContext {
    pub actor: Actor,
    pub request_id: String,
    pub client_ip: Option<String>,
}

impl RequestContext {
    pub fn system(what: &str) -> RequestContext {
        RequestContext {
            actor: Actor::new(what, cardbind_domain::Role::Admin),
            request_id: String::new(),
            client_ip: None,
        }
    }
}

/// The consent the user gave, as received.
#[derive(Clone, Debug)]
pub struct ConsentInput {
    pub text_version: String,
    pub text_hash: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// A bind request as it arrives, before parsing.
#[derive(Clone)]
pub struct RawBindCard {
    pub card_number: String,
    pub expiry_month: u32,
    pub expiry_year: u32,
    pub cvv: Option<String>,
    pub holder_name: String,
    pub id_number: String,
    pub phone: String,
    pub channel: Option<String>,
    pub consent: ConsentInput,
}

impl std::fmt::Debug for RawBindCard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawBindCard(<card data redacted>)")
    }
}

/// A parsed bind request: every field valid.
#[derive(Clone, Debug)]
pub struct BindCardRequest {
    pub card: CardNumber,
    pub expiry: Expiry,
    pub cvv: Option<Cvv>,
    pub holder_name: HolderName,
    pub id_number: ResidentId,
    pub phone: Phone,
    pub channel: Option<ChannelName>,
    pub consent: ConsentInput,
}

impl RawBindCard {
    /// Parses every field, first failure wins, in the order of the form.
    pub fn parse(self, now: Timestamp) -> Result<BindCardRequest, DomainError> {
        let card = CardNumber::parse(&self.card_number)?;
        let expiry = Expiry::parse(self.expiry_month, self.expiry_year, now.year_month())?;
        let cvv = match self.cvv.as_deref() {
            None | Some("") => None,
            Some(c) => Some(Cvv::parse(c, card.brand())?),
        };
        let holder_name = HolderName::parse(&self.holder_name)?;
        let id_number = ResidentId::parse(&self.id_number)?;
        let phone = Phone::parse(&self.phone)?;
        let channel = self
            .channel
            .as_deref()
            .map(ChannelName::parse)
            .transpose()?;
        let c = &self.consent;
        let consent_ok = (1..=64).contains(&c.text_version.len())
            && c.text_hash.len() == 64
            && c.text_hash.bytes().all(|b| b.is_ascii_hexdigit());
        if !consent_ok {
            return Err(DomainError::field(
                ErrorCode::InvalidRequest,
                "consent",
                "consent needs a text_version (1-64 chars) and the SHA-256 hex of the text shown",
            ));
        }
        Ok(BindCardRequest {
            card,
            expiry,
            cvv,
            holder_name,
            id_number,
            phone,
            channel,
            consent: self.consent,
        })
    }
}

/// A binding as shown to its reader, with whether it is the default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardView {
    pub binding: Binding,
    pub is_default: bool,
}

/// One page of cards.
#[derive(Clone, Debug)]
pub struct CardPage {
    pub cards: Vec<CardView>,
    pub next: Option<BindingId>,
}

/// What `reconcile` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    pub examined: u64,
    pub activated: u64,
    pub failed: u64,
    pub unbound: u64,
    pub still_pending: u64,
    pub errors: u64,
}

/// Fields sealed for each binding.
pub const SEALED_FIELDS: [&str; 4] = ["pan", "holder_name", "id_number", "phone"];

const MAX_LIST: u32 = 100;
const WALLET_SCAN: u32 = 1000;

/// The use cases.
#[derive(Clone)]
pub struct CardService {
    ports: Ports,
    policy: Policy,
    /// When set, unbinding a default card and erasing a user need a
    /// step-up token this verifier accepts.
    step_up: Option<Arc<dyn StepUpVerifier>>,
}

/// Whether an unbind checks the step-up rule (erasure unbinds under its own
/// step-up and skips it).
#[derive(Clone, Copy)]
enum UnbindStepUp<'a> {
    Check(Option<&'a str>),
    Skip,
}

impl CardService {
    pub fn new(ports: Ports, policy: Policy) -> CardService {
        CardService {
            ports,
            policy,
            step_up: None,
        }
    }

    /// Requires step-up (see [`crate::step_up`]) for unbinding a user's
    /// default card and for erasure, checked by `verifier`.
    pub fn with_step_up(mut self, verifier: Arc<dyn StepUpVerifier>) -> CardService {
        self.step_up = Some(verifier);
        self
    }

    /// Whether risky operations need a step-up token.
    pub fn step_up_enabled(&self) -> bool {
        self.step_up.is_some()
    }

    pub fn ports(&self) -> &Ports {
        &self.ports
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    fn now(&self) -> Timestamp {
        self.ports.clock.now()
    }

    // ---- helpers ----------------------------------------------------------

    async fn audit(
        &self,
        ctx: &RequestContext,
        action: &str,
        user: Option<&UserId>,
        binding: Option<&BindingId>,
        outcome: &str,
        detail: Option<String>,
    ) {
        let event = AuditEvent {
            at: self.now(),
            actor: ctx.actor.subject.clone(),
            role: ctx.actor.role.as_str().to_owned(),
            action: action.to_owned(),
            user_id: user.map(|u| u.as_str().to_owned()),
            binding_id: binding.map(|b| b.as_str().to_owned()),
            outcome: outcome.to_owned(),
            request_id: (!ctx.request_id.is_empty()).then(|| ctx.request_id.clone()),
            client_ip: ctx.client_ip.clone(),
            detail,
        };
        if let Err(e) = self.ports.audit.append(event).await {
            // The change itself is stored; losing its audit line is logged
            // loudly so that operations can restore it from the logs.
            tracing::error!(error = %e, action, binding = binding.map(|b| b.as_str()), "audit append failed");
        }
    }

    /// The access decision ([`Actor::authorize`]); a refusal is audited
    /// (`access.denied`) before it is returned.
    async fn authorize(
        &self,
        ctx: &RequestContext,
        action: Action,
        user: Option<&UserId>,
    ) -> Result<(), ServiceError> {
        match ctx.actor.authorize(action, user) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.audit(
                    ctx,
                    "access.denied",
                    user,
                    None,
                    e.code.as_str(),
                    Some(format!("{action:?}")),
                )
                .await;
                Err(e.into())
            }
        }
    }

    /// Checks the step-up token for `action` on `user` when step-up is
    /// enabled. Missing, refused or unverifiable (verifier down: fail
    /// closed) tokens are `step_up_required`; every check is audited.
    async fn require_step_up(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        binding: Option<&BindingId>,
        action: &str,
        token: Option<&str>,
    ) -> Result<(), ServiceError> {
        let Some(verifier) = &self.step_up else {
            return Ok(());
        };
        let why = match token {
            None | Some("") => "missing",
            Some(t) => match verifier.verify(user, action, t).await {
                Ok(true) => {
                    self.audit(
                        ctx,
                        "step_up.verify",
                        Some(user),
                        binding,
                        "ok",
                        Some(action.to_owned()),
                    )
                    .await;
                    return Ok(());
                }
                Ok(false) => "refused",
                Err(e) => {
                    tracing::warn!(error = %e, action, "step-up verifier unavailable; refusing");
                    "verifier_unavailable"
                }
            },
        };
        self.audit(
            ctx,
            "step_up.verify",
            Some(user),
            binding,
            ErrorCode::StepUpRequired.as_str(),
            Some(format!("{action}: {why}")),
        )
        .await;
        Err(ServiceError::code_only(
            ErrorCode::StepUpRequired,
            "this operation needs a valid step-up token (X-Step-Up-Token) for this user and action",
        ))
    }

    async fn audit_change(
        &self,
        ctx: &RequestContext,
        action: &str,
        b: &Binding,
        from: BindingStatus,
    ) {
        let detail = if from == b.status {
            None
        } else {
            Some(format!("{from} -> {}", b.status))
        };
        self.audit(ctx, action, Some(&b.user_id), Some(&b.id), "ok", detail)
            .await;
    }

    async fn limit(&self, rule: RateRule, key: &str, code: ErrorCode) -> Result<(), ServiceError> {
        let now = self.now();
        let key = format!("{key}:{}", rule.window_start(now));
        let count = self
            .ports
            .rates
            .increment(&key, rule.window_end(now))
            .await?;
        match rule.decide(count, now) {
            RateDecision::Allowed { .. } => Ok(()),
            RateDecision::Limited {
                retry_after_seconds,
            } => Err(ServiceError::RateLimited {
                code,
                retry_after_seconds,
            }),
        }
    }

    /// Loads a binding of `user`; another user's binding is `not_found`.
    async fn load(&self, user: &UserId, id: &BindingId) -> Result<Binding, ServiceError> {
        match self.ports.bindings.get(id).await? {
            Some(b) if &b.user_id == user => Ok(b),
            _ => Err(ServiceError::code_only(ErrorCode::NotFound, "no such card")),
        }
    }

    async fn user_bindings(&self, user: &UserId) -> Result<Vec<Binding>, ServiceError> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .ports
                .bindings
                .list_by_user(user, after, WALLET_SCAN)
                .await?;
            let full = page.len() as u32 == WALLET_SCAN;
            after = page.last().map(|b| b.id.clone());
            all.extend(page);
            if !full {
                return Ok(all);
            }
        }
    }

    /// Re-points the user's default when it no longer names an active card
    /// (promotion rule in `Wallet`). Safe to run any time, from any instance.
    pub async fn repair_default(&self, user: &UserId) -> Result<Option<BindingId>, ServiceError> {
        self.repair_default_for(&RequestContext::system("system"), user)
            .await
    }

    /// [`CardService::repair_default`] on behalf of `ctx`: a changed
    /// default pointer is audited (`binding.default_changed`).
    async fn repair_default_for(
        &self,
        ctx: &RequestContext,
        user: &UserId,
    ) -> Result<Option<BindingId>, ServiceError> {
        for _ in 0..5 {
            let bindings = self.user_bindings(user).await?;
            let current = self.ports.bindings.get_default(user).await?;
            let wallet = Wallet::new(&bindings, current.as_ref());
            match wallet.repair() {
                None => return Ok(wallet.effective_default().cloned()),
                Some(next) => {
                    if self
                        .ports
                        .bindings
                        .replace_default(user, current.clone(), next.clone())
                        .await?
                    {
                        let detail = match &next {
                            Some(_) => "promoted by the default rule",
                            None => "no active card left",
                        };
                        self.audit(
                            ctx,
                            "binding.default_changed",
                            Some(user),
                            next.as_ref(),
                            "ok",
                            Some(detail.to_owned()),
                        )
                        .await;
                        return Ok(next);
                    }
                }
            }
        }
        Err(ServiceError::Store(StoreError::Conflict))
    }

    async fn view(&self, b: Binding) -> Result<CardView, ServiceError> {
        let mut d = self.ports.bindings.get_default(&b.user_id).await?;
        // Repair a pointer left stale by an interrupted change (see `list`).
        let stale = match &d {
            None => b.status == BindingStatus::Active,
            Some(id) => id == &b.id && b.status != BindingStatus::Active,
        };
        if stale {
            d = self
                .repair_default_for(&RequestContext::system("repair"), &b.user_id)
                .await?;
        }
        let is_default = b.status == BindingStatus::Active && d.as_ref() == Some(&b.id);
        Ok(CardView {
            binding: b,
            is_default,
        })
    }

    async fn save(&self, b: &Binding, expected: u64) -> Result<(), ServiceError> {
        self.ports
            .bindings
            .update(b, expected)
            .await
            .map_err(ServiceError::from)
    }

    fn channel(&self, name: &ChannelName) -> Result<Arc<dyn PaymentChannel>, ServiceError> {
        self.ports.channels.get(name).ok_or_else(|| {
            ServiceError::Domain(DomainError::field(
                ErrorCode::ChannelNotEnabled,
                "channel",
                "that channel is not enabled",
            ))
        })
    }

    /// Refuses one more card when the user holds the configured cap.
    async fn check_card_cap(&self, user: &UserId) -> Result<(), ServiceError> {
        let live = Wallet::new(&self.user_bindings(user).await?, None).live_count();
        Ok(self.policy.card_cap.check(live)?)
    }

    async fn seal_card(
        &self,
        user: &UserId,
        id: &BindingId,
        req: &BindCardRequest,
    ) -> Result<SealedCard, ServiceError> {
        let v = &self.ports.vault;
        let ctx = |field| SealContext::new(id.as_str(), field);
        Ok(SealedCard {
            pan: v
                .seal(user, &ctx("pan"), req.card.expose().as_bytes())
                .await?,
            holder_name: v
                .seal(
                    user,
                    &ctx("holder_name"),
                    req.holder_name.expose().as_bytes(),
                )
                .await?,
            id_number: v
                .seal(user, &ctx("id_number"), req.id_number.expose().as_bytes())
                .await?,
            phone: v
                .seal(user, &ctx("phone"), req.phone.expose().as_bytes())
                .await?,
        })
    }

    // ---- use cases --------------------------------------------------------

    /// Binds a card for `user`: see the module docs for the order of writes.
    pub async fn bind(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        req: BindCardRequest,
    ) -> Result<CardView, ServiceError> {
        self.authorize(ctx, Action::BindCard, Some(user)).await?;
        let channel_name = req
            .channel
            .clone()
            .unwrap_or_else(|| self.ports.channels.default_name().clone());
        let channel = self.channel(&channel_name)?;

        let res = self
            .bind_inner(ctx, user, &req, &channel_name, channel)
            .await;
        if let Err(e) = &res {
            let code = e.code();
            tracing::info!(user = %user, code = %code, "bind refused");
            if !matches!(code, ErrorCode::StorageUnavailable) {
                self.audit(ctx, "binding.create", Some(user), None, code.as_str(), None)
                    .await;
            }
        }
        res
    }

    async fn bind_inner(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        req: &BindCardRequest,
        channel_name: &ChannelName,
        channel: Arc<dyn PaymentChannel>,
    ) -> Result<CardView, ServiceError> {
        self.limit(
            self.policy.binds_per_user,
            &format!("bind:user:{user}"),
            ErrorCode::RateLimited,
        )
        .await?;
        if let (Some(rule), Some(ip)) = (self.policy.binds_per_ip, ctx.client_ip.as_deref()) {
            self.limit(rule, &format!("bind:ip:{ip}"), ErrorCode::IpRateLimited)
                .await?;
        }
        let fingerprint = self.ports.vault.fingerprint(&req.card).await?;
        if let Some(rule) = self.policy.binds_per_card {
            self.limit(
                rule,
                &format!("bind:card:{fingerprint}"),
                ErrorCode::CardVelocityExceeded,
            )
            .await?;
        }

        let now = self.now();
        let summary = CardSummary {
            brand: req.card.brand(),
            bin: req.card.bin().to_owned(),
            last4: req.card.last4().to_owned(),
            expiry: req.expiry,
        };
        let existing = self
            .ports
            .bindings
            .find_by_fingerprint(user, &fingerprint)
            .await?;
        let (mut binding, rebound) = match existing {
            Some(b) if b.status.is_live() => {
                return Err(ServiceError::code_only(
                    ErrorCode::CardAlreadyBound,
                    "this card is already bound",
                ))
            }
            Some(mut b) => {
                self.check_card_cap(user).await?;
                let expected = b.version;
                let sealed = self.seal_card(user, &b.id, req).await?;
                b.rebind(
                    summary,
                    sealed,
                    channel_name.clone(),
                    now,
                    &self.policy.verification,
                )?;
                match self.ports.bindings.update(&b, expected).await {
                    Ok(()) => {}
                    Err(StoreError::Conflict) => {
                        return Err(ServiceError::code_only(
                            ErrorCode::CardAlreadyBound,
                            "this card is being bound",
                        ))
                    }
                    Err(e) => return Err(e.into()),
                }
                (b, true)
            }
            None => {
                self.check_card_cap(user).await?;
                let id = self.ports.ids.binding_id();
                let sealed = self.seal_card(user, &id, req).await?;
                let b = Binding::reserve(
                    id,
                    user.clone(),
                    fingerprint.clone(),
                    summary,
                    sealed,
                    channel_name.clone(),
                    now,
                    &self.policy.verification,
                );
                match self.ports.bindings.insert(&b).await {
                    Ok(()) => {}
                    Err(StoreError::Duplicate) => {
                        return Err(ServiceError::code_only(
                            ErrorCode::CardAlreadyBound,
                            "this card is already bound",
                        ))
                    }
                    Err(e) => return Err(e.into()),
                }
                (b, false)
            }
        };
        self.audit(
            ctx,
            if rebound {
                "binding.rebind"
            } else {
                "binding.create"
            },
            Some(user),
            Some(&binding.id),
            "ok",
            Some("-> pending_verification".into()),
        )
        .await;

        let consent = Consent {
            id: self.ports.ids.opaque_id(),
            binding_id: binding.id.clone(),
            user_id: user.clone(),
            text_version: req.consent.text_version.clone(),
            text_hash: req.consent.text_hash.to_ascii_lowercase(),
            accepted_at: now,
            ip: req.consent.ip.clone(),
            user_agent: req.consent.user_agent.clone(),
            channel: channel_name.clone(),
            agreement_id: None,
            revoked_at: None,
            revoked_by: None,
        };
        if let Err(e) = self.ports.consents.record(&consent).await {
            let expected = binding.version;
            if binding.fail("consent_not_recorded", self.now()).is_ok() {
                let _ = self.save(&binding, expected).await;
            }
            return Err(e.into());
        }

        let request = ChannelBindRequest {
            binding_id: binding.id.clone(),
            user_id: user.clone(),
            card: req.card.clone(),
            expiry: req.expiry,
            cvv: req.cvv.clone(),
            holder_name: req.holder_name.clone(),
            id_number: req.id_number.clone(),
            phone: req.phone.clone(),
        };
        self.start_at_channel(ctx, binding, channel, &request).await
    }

    /// Asks the channel to start `binding` (in `pending_verification`),
    /// stores its answer and audits it: the shared tail of `bind` and
    /// `retry_review`.
    async fn start_at_channel(
        &self,
        ctx: &RequestContext,
        mut binding: Binding,
        channel: Arc<dyn PaymentChannel>,
        request: &ChannelBindRequest,
    ) -> Result<CardView, ServiceError> {
        let user = binding.user_id.clone();
        let from = binding.status;
        let outcome = match channel.start_binding(request).await {
            Ok(ChannelStart::Bound { channel_ref }) => StartOutcome::Bound { channel_ref },
            Ok(ChannelStart::OtpSent { channel_ref }) => StartOutcome::ActionRequired {
                channel_ref,
                action: NextAction::Otp {
                    phone_hint: request.phone.masked(),
                },
            },
            Ok(ChannelStart::Redirect { channel_ref, url }) => StartOutcome::ActionRequired {
                channel_ref,
                action: NextAction::Redirect { url },
            },
            Ok(ChannelStart::Refused { code, .. }) => StartOutcome::Refused { code },
            Err(e) if e.is_unreachable() => {
                tracing::warn!(binding = %binding.id, error = %e, "channel unreachable, binding goes to manual review");
                StartOutcome::Unreachable
            }
            Err(crate::ChannelError::Rejected { code, .. }) => StartOutcome::Refused { code },
            Err(e) => {
                tracing::warn!(binding = %binding.id, error = %e, "channel answered badly, binding goes to manual review");
                StartOutcome::Unreachable
            }
        };
        let refused = match &outcome {
            StartOutcome::Refused { code } => Some(code.clone()),
            _ => None,
        };
        let expected = binding.version;
        binding.apply_start(outcome, self.now())?;
        self.save(&binding, expected).await?;
        if let Some(r) = binding.channel_ref.clone() {
            if let Err(e) = self.ports.consents.set_agreement(&binding.id, &r).await {
                tracing::warn!(binding = %binding.id, error = %e, "could not store the agreement id on the consent");
            }
        }
        self.audit_change(ctx, "binding.channel_start", &binding, from)
            .await;
        if let Some(code) = refused {
            return Err(ServiceError::Channel(crate::ChannelError::Rejected {
                code,
                message: "the payment channel declined this card".into(),
            }));
        }
        if binding.status == BindingStatus::Active {
            self.repair_default_for(ctx, &user).await?;
        }
        self.view(binding).await
    }

    /// An operator retries a binding in review at its channel (once the
    /// channel is back). The card data is opened from its sealed fields —
    /// each opening audited — and the binding goes back to
    /// `pending_verification` and through the channel as a new bind would.
    /// Sealed data that does not open (tampered, moved, erased) is refused
    /// with `card_data_unreadable` and the binding stays in review.
    pub async fn retry_review(
        &self,
        ctx: &RequestContext,
        id: &BindingId,
    ) -> Result<CardView, ServiceError> {
        self.authorize(ctx, Action::ReviewQueue, None).await?;
        let mut b = self.review_binding(id).await?;
        // Before any card data is opened.
        b.ensure_in_review()?;
        let channel = self.channel(&b.channel)?;
        let text = |bytes: Vec<u8>| {
            String::from_utf8(bytes).map_err(|_| {
                ServiceError::code_only(
                    ErrorCode::CardDataUnreadable,
                    "the stored card data does not open",
                )
            })
        };
        let unreadable = |_| {
            ServiceError::code_only(
                ErrorCode::CardDataUnreadable,
                "the stored card data does not open",
            )
        };
        let card = CardNumber::parse(&text(self.open_field(ctx, &b, "pan").await?)?)
            .map_err(unreadable)?;
        let holder_name = HolderName::parse(&text(self.open_field(ctx, &b, "holder_name").await?)?)
            .map_err(unreadable)?;
        let id_number = ResidentId::parse(&text(self.open_field(ctx, &b, "id_number").await?)?)
            .map_err(unreadable)?;
        let phone =
            Phone::parse(&text(self.open_field(ctx, &b, "phone").await?)?).map_err(unreadable)?;
        let request = ChannelBindRequest {
            binding_id: b.id.clone(),
            user_id: b.user_id.clone(),
            card,
            expiry: b.card.expiry,
            cvv: None,
            holder_name,
            id_number,
            phone,
        };
        let expected = b.version;
        let from = b.status;
        b.requeue(self.now(), &self.policy.verification)?;
        self.save(&b, expected).await?;
        self.audit_change(ctx, "review.retry", &b, from).await;
        self.start_at_channel(ctx, b, channel, &request).await
    }

    /// Confirms a pending binding with the OTP the user received.
    pub async fn verify_otp(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        id: &BindingId,
        otp: &str,
    ) -> Result<CardView, ServiceError> {
        self.authorize(ctx, Action::VerifyCard, Some(user)).await?;
        if !(4..=8).contains(&otp.len()) || !otp.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DomainError::field(
                ErrorCode::InvalidOtp,
                "otp",
                "the code has 4 to 8 digits",
            )
            .into());
        }
        let mut b = self.load(user, id).await?;
        let expected = b.version;
        let from = b.status;
        if let Err(e) = b.begin_otp(self.now(), &self.policy.verification) {
            if b.version != expected {
                self.save(&b, expected).await?;
                self.audit_change(ctx, "binding.verify", &b, from).await;
            }
            return Err(e.into());
        }
        // Store the attempt before asking the channel: of parallel guesses
        // only the one that wins this conditional write reaches the channel
        // (the others get 409 `conflict`), and no more guesses reach it than
        // the attempts allow, even while earlier ones are still being checked.
        self.save(&b, expected).await?;
        let channel = self.channel(&b.channel)?;
        let channel_ref = b.channel_ref.clone().unwrap_or_default();
        let answer = channel.confirm_otp(&b.id, &channel_ref, otp).await?;
        // Apply the answer to the binding as it is now (another attempt may
        // have been counted meanwhile), retrying on a concurrent change.
        let mut outcome = None;
        for _ in 0..5 {
            let now = self.now();
            let expected = b.version;
            let result: Result<(), ServiceError> = match &answer {
                ConfirmOutcome::Confirmed { channel_ref } => match b.status {
                    BindingStatus::PendingVerification => {
                        b.activate(Some(channel_ref.clone()), now)?;
                        Ok(())
                    }
                    BindingStatus::Active => Ok(()),
                    _ => Err(ServiceError::code_only(
                        ErrorCode::InvalidStateTransition,
                        "this card is no longer waiting for verification",
                    )),
                },
                ConfirmOutcome::WrongOtp => {
                    if b.status == BindingStatus::PendingVerification {
                        b.otp_rejected(now, &self.policy.verification)?;
                    }
                    Err(
                        DomainError::field(ErrorCode::InvalidOtp, "otp", "the code is wrong")
                            .into(),
                    )
                }
                ConfirmOutcome::Expired => {
                    if b.status == BindingStatus::PendingVerification {
                        b.fail(ErrorCode::VerificationExpired.as_str(), now)?;
                    }
                    Err(ServiceError::code_only(
                        ErrorCode::VerificationExpired,
                        "the verification window has closed",
                    ))
                }
                ConfirmOutcome::Refused { code } => {
                    if b.status == BindingStatus::PendingVerification {
                        b.fail(code, now)?;
                    }
                    Err(ServiceError::Channel(crate::ChannelError::Rejected {
                        code: code.clone(),
                        message: "the payment channel declined this card".into(),
                    }))
                }
            };
            if b.version == expected {
                outcome = Some(result);
                break;
            }
            match self.ports.bindings.update(&b, expected).await {
                Ok(()) => {
                    outcome = Some(result);
                    break;
                }
                Err(StoreError::Conflict) => b = self.load(user, id).await?,
                Err(e) => return Err(e.into()),
            }
        }
        let Some(result) = outcome else {
            return Err(ServiceError::Store(StoreError::Conflict));
        };
        self.audit(
            ctx,
            "binding.verify",
            Some(user),
            Some(&b.id),
            result.as_ref().err().map_or("ok", |e| e.code().as_str()),
            (from != b.status).then(|| format!("{from} -> {}", b.status)),
        )
        .await;
        result?;
        if b.status == BindingStatus::Active {
            self.repair_default_for(ctx, user).await?;
        }
        self.view(b).await
    }

    pub async fn get(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        id: &BindingId,
    ) -> Result<CardView, ServiceError> {
        self.authorize(ctx, Action::ReadCards, Some(user)).await?;
        let b = self.load(user, id).await?;
        self.view(b).await
    }

    /// A user's cards in id order (ids are time-ordered), paginated.
    pub async fn list(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        after: Option<BindingId>,
        limit: u32,
    ) -> Result<CardPage, ServiceError> {
        self.authorize(ctx, Action::ReadCards, Some(user)).await?;
        let limit = limit.clamp(1, MAX_LIST);
        let page = self.ports.bindings.list_by_user(user, after, limit).await?;
        let mut default = self.ports.bindings.get_default(user).await?;
        // A pointer left stale by an interrupted change (none, or naming a
        // card that is no longer active) is repaired on read.
        let stale = match &default {
            None => page.iter().any(|b| b.status == BindingStatus::Active),
            Some(d) => page
                .iter()
                .any(|b| &b.id == d && b.status != BindingStatus::Active),
        };
        if stale {
            default = self.repair_default_for(ctx, user).await?;
        }
        let next = if page.len() as u32 == limit {
            page.last().map(|b| b.id.clone())
        } else {
            None
        };
        let cards = page
            .into_iter()
            .map(|b| {
                let is_default =
                    b.status == BindingStatus::Active && default.as_ref() == Some(&b.id);
                CardView {
                    binding: b,
                    is_default,
                }
            })
            .collect();
        Ok(CardPage { cards, next })
    }

    /// Makes an active card the user's default (last writer wins; there is
    /// never more than one default).
    pub async fn set_default(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        id: &BindingId,
    ) -> Result<CardView, ServiceError> {
        self.authorize(ctx, Action::SetDefault, Some(user)).await?;
        let b = self.load(user, id).await?;
        for _ in 0..10 {
            let bindings = self.user_bindings(user).await?;
            let current = self.ports.bindings.get_default(user).await?;
            Wallet::new(&bindings, current.as_ref()).check_can_default(id)?;
            if current.as_ref() == Some(id)
                || self
                    .ports
                    .bindings
                    .replace_default(user, current, Some(id.clone()))
                    .await?
            {
                self.audit(ctx, "binding.set_default", Some(user), Some(id), "ok", None)
                    .await;
                return self.view(b).await;
            }
        }
        Err(ServiceError::Store(StoreError::Conflict))
    }

    /// Unbinds a card: locally always, and at the channel when it holds an
    /// agreement (a channel that cannot be reached does not stop the unbind;
    /// it is logged and audited for follow-up).
    ///
    /// With step-up enabled this refuses to unbind the user's default card
    /// (`step_up_required`); use [`CardService::unbind_with_step_up`].
    pub async fn unbind(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        id: &BindingId,
    ) -> Result<CardView, ServiceError> {
        self.unbind_with_step_up(ctx, user, id, None).await
    }

    /// [`CardService::unbind`] with the client's step-up token: required,
    /// when step-up is enabled, if the card is the user's current default.
    pub async fn unbind_with_step_up(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        id: &BindingId,
        step_up_token: Option<&str>,
    ) -> Result<CardView, ServiceError> {
        self.authorize(ctx, Action::Unbind, Some(user)).await?;
        self.unbind_inner(ctx, user, id, UnbindStepUp::Check(step_up_token))
            .await
    }

    async fn unbind_inner(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        id: &BindingId,
        step_up: UnbindStepUp<'_>,
    ) -> Result<CardView, ServiceError> {
        let mut stepped_up = false;
        for _ in 0..5 {
            let mut b = self.load(user, id).await?;
            let expected = b.version;
            let from = b.status;
            if let (UnbindStepUp::Check(token), false, true, BindingStatus::Active) =
                (step_up, stepped_up, self.step_up.is_some(), from)
            {
                if self.ports.bindings.get_default(user).await?.as_ref() == Some(id) {
                    self.require_step_up(ctx, user, Some(id), actions::UNBIND_DEFAULT_CARD, token)
                        .await?;
                    stepped_up = true;
                }
            }
            if !b.unbind(self.now())? {
                return self.view(b).await;
            }
            if let (Some(r), true) = (
                b.channel_ref.clone(),
                matches!(
                    from,
                    BindingStatus::Active
                        | BindingStatus::Frozen
                        | BindingStatus::PendingVerification
                ),
            ) {
                if let Ok(channel) = self.channel(&b.channel) {
                    if let Err(e) = channel.unbind(&b.id, &r).await {
                        tracing::warn!(binding = %b.id, error = %e, "channel unsign failed; unbound locally");
                        self.audit(
                            ctx,
                            "binding.channel_unsign",
                            Some(user),
                            Some(&b.id),
                            "channel_unavailable",
                            None,
                        )
                        .await;
                    }
                }
            }
            match self.ports.bindings.update(&b, expected).await {
                Ok(()) => {}
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
            if let Err(e) = self
                .ports
                .consents
                .revoke(&b.id, self.now(), &ctx.actor.subject)
                .await
            {
                tracing::warn!(binding = %b.id, error = %e, "consent revocation not stored");
            }
            self.audit_change(ctx, "binding.unbind", &b, from).await;
            self.repair_default_for(ctx, user).await?;
            return self.view(b).await;
        }
        Err(ServiceError::Store(StoreError::Conflict))
    }

    async fn operator_change(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        id: &BindingId,
        action: Action,
        name: &str,
        change: impl Fn(&mut Binding, Timestamp) -> Result<(), DomainError>,
    ) -> Result<CardView, ServiceError> {
        self.authorize(ctx, action, Some(user)).await?;
        for _ in 0..5 {
            let mut b = self.load(user, id).await?;
            let expected = b.version;
            let from = b.status;
            change(&mut b, self.now())?;
            match self.ports.bindings.update(&b, expected).await {
                Ok(()) => {}
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
            self.audit_change(ctx, name, &b, from).await;
            self.repair_default_for(ctx, user).await?;
            return self.view(b).await;
        }
        Err(ServiceError::Store(StoreError::Conflict))
    }

    pub async fn freeze(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        id: &BindingId,
    ) -> Result<CardView, ServiceError> {
        self.operator_change(ctx, user, id, Action::Freeze, "binding.freeze", |b, now| {
            b.freeze(now)
        })
        .await
    }

    pub async fn unfreeze(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        id: &BindingId,
    ) -> Result<CardView, ServiceError> {
        self.operator_change(
            ctx,
            user,
            id,
            Action::Freeze,
            "binding.unfreeze",
            |b, now| b.unfreeze(now),
        )
        .await
    }

    /// Bindings waiting for an operator.
    pub async fn review_queue(
        &self,
        ctx: &RequestContext,
        after: Option<BindingId>,
        limit: u32,
    ) -> Result<CardPage, ServiceError> {
        self.authorize(ctx, Action::ReviewQueue, None).await?;
        let limit = limit.clamp(1, MAX_LIST);
        let page = self
            .ports
            .bindings
            .list_by_status(BindingStatus::PendingReview, None, after, limit)
            .await?;
        let next = if page.len() as u32 == limit {
            page.last().map(|b| b.id.clone())
        } else {
            None
        };
        Ok(CardPage {
            cards: page
                .into_iter()
                .map(|b| CardView {
                    binding: b,
                    is_default: false,
                })
                .collect(),
            next,
        })
    }

    async fn review_binding(&self, id: &BindingId) -> Result<Binding, ServiceError> {
        match self.ports.bindings.get(id).await? {
            Some(b) => Ok(b),
            None => Err(ServiceError::code_only(ErrorCode::NotFound, "no such card")),
        }
    }

    /// An operator approves a binding in review: it becomes active.
    pub async fn approve_review(
        &self,
        ctx: &RequestContext,
        id: &BindingId,
        channel_ref: Option<String>,
    ) -> Result<CardView, ServiceError> {
        self.authorize(ctx, Action::ReviewQueue, None).await?;
        let user = self.review_binding(id).await?.user_id.clone();
        let view = self
            .operator_change(
                ctx,
                &user,
                id,
                Action::ReviewQueue,
                "review.approve",
                |b, now| b.approve(channel_ref.clone(), now),
            )
            .await?;
        // As on every other way to active: the consent names the agreement.
        if let Some(r) = &channel_ref {
            if let Err(e) = self.ports.consents.set_agreement(id, r).await {
                tracing::warn!(binding = %id, error = %e, "could not store the agreement id on the consent");
            }
        }
        Ok(view)
    }

    /// An operator rejects a binding in review: it fails.
    pub async fn reject_review(
        &self,
        ctx: &RequestContext,
        id: &BindingId,
    ) -> Result<CardView, ServiceError> {
        self.authorize(ctx, Action::ReviewQueue, None).await?;
        let b = self.review_binding(id).await?;
        let user = b.user_id.clone();
        self.operator_change(
            ctx,
            &user,
            id,
            Action::ReviewQueue,
            "review.reject",
            |b, now| b.reject(now),
        )
        .await
    }

    /// Verifies, deduplicates and applies a channel's async notification.
    /// Returns the acknowledgement only once the event is stored.
    pub async fn handle_notification(
        &self,
        channel_name: &ChannelName,
        n: &Notification,
    ) -> Result<NotificationAck, ServiceError> {
        let channel = self.channel(channel_name)?;
        let event = channel.parse_notification(n)?;
        let ns = format!("notify:{channel_name}");
        let now = self.now();
        if self.ports.seen.seen(&ns, &event.event_id, now).await? {
            return Ok(channel.notification_ack());
        }
        self.apply_channel_event(channel_name, &event).await?;
        self.ports
            .seen
            .mark(
                &ns,
                &event.event_id,
                now,
                now.plus_seconds(self.policy.notification_memory_seconds),
            )
            .await?;
        Ok(channel.notification_ack())
    }

    /// Applies a verified channel event. Idempotent: an event that finds the
    /// binding already where it leads changes nothing.
    pub async fn apply_channel_event(
        &self,
        channel_name: &ChannelName,
        event: &ChannelEvent,
    ) -> Result<(), ServiceError> {
        let ctx = RequestContext::system(&format!("channel:{channel_name}"));
        for _ in 0..5 {
            let found = match &event.binding {
                BindingRef::Ours(id) => self.ports.bindings.get(id).await?,
                BindingRef::Channel(r) => {
                    self.ports
                        .bindings
                        .find_by_channel_ref(channel_name, r)
                        .await?
                }
            };
            let Some(mut b) = found.filter(|b| &b.channel == channel_name) else {
                tracing::warn!(channel = %channel_name, event = %event.event_id, "notification for an unknown binding ignored");
                return Ok(());
            };
            // A card bound again keeps its id: an event about another
            // agreement than the one an active (or frozen) card holds now is
            // about an earlier binding of that card, and changes nothing.
            let holds_agreement = matches!(b.status, BindingStatus::Active | BindingStatus::Frozen);
            if let (true, Some(named), Some(current)) =
                (holds_agreement, &event.agreement, &b.channel_ref)
            {
                if named != current {
                    tracing::info!(channel = %channel_name, event = %event.event_id, binding = %b.id, "event about an earlier agreement ignored");
                    return Ok(());
                }
            }
            let expected = b.version;
            let from = b.status;
            let now = self.now();
            let changed = match &event.kind {
                ChannelEventKind::Signed { channel_ref } => match b.status {
                    BindingStatus::PendingVerification | BindingStatus::PendingReview => {
                        b.activate(Some(channel_ref.clone()), now)?;
                        true
                    }
                    _ => false,
                },
                ChannelEventKind::Terminated => b.unbind(now)?,
                ChannelEventKind::Failed { code } => match b.status {
                    BindingStatus::PendingVerification | BindingStatus::PendingReview => {
                        b.fail(code, now)?;
                        true
                    }
                    _ => false,
                },
            };
            if !changed {
                return Ok(());
            }
            match self.ports.bindings.update(&b, expected).await {
                Ok(()) => {}
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
            if b.status == BindingStatus::Inactive {
                let _ = self
                    .ports
                    .consents
                    .revoke(&b.id, now, &ctx.actor.subject)
                    .await;
            }
            if let (BindingStatus::Active, Some(r)) = (b.status, b.channel_ref.as_deref()) {
                let _ = self.ports.consents.set_agreement(&b.id, r).await;
            }
            self.audit_change(&ctx, "binding.channel_event", &b, from)
                .await;
            self.repair_default_for(&ctx, &b.user_id).await?;
            return Ok(());
        }
        Err(ServiceError::Store(StoreError::Conflict))
    }

    /// Settles bindings stuck in `pending_verification` for longer than
    /// `older_than_seconds` by asking their channel.
    pub async fn reconcile(
        &self,
        older_than_seconds: i64,
        limit: u32,
    ) -> Result<ReconcileReport, ServiceError> {
        let mut report = ReconcileReport::default();
        let before = self.now().minus_seconds(older_than_seconds);
        let mut after = None;
        loop {
            let page = self
                .ports
                .bindings
                .list_by_status(
                    BindingStatus::PendingVerification,
                    Some(before),
                    after,
                    limit.clamp(1, 500),
                )
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            for b in page {
                report.examined += 1;
                let Ok(channel) = self.channel(&b.channel) else {
                    report.errors += 1;
                    continue;
                };
                let event_kind = match channel.query(&b.id, b.channel_ref.clone()).await {
                    Ok(RemoteState::Active { channel_ref }) => {
                        Some(ChannelEventKind::Signed { channel_ref })
                    }
                    Ok(RemoteState::Terminated) => Some(ChannelEventKind::Failed {
                        code: "agreement_terminated".into(),
                    }),
                    Ok(RemoteState::Failed { code }) => Some(ChannelEventKind::Failed { code }),
                    Ok(RemoteState::NotFound) => Some(ChannelEventKind::Failed {
                        code: ErrorCode::VerificationExpired.as_str().into(),
                    }),
                    Ok(RemoteState::Pending) => {
                        if b.verification_expires_at.is_some_and(|t| self.now() > t) {
                            Some(ChannelEventKind::Failed {
                                code: ErrorCode::VerificationExpired.as_str().into(),
                            })
                        } else {
                            None
                        }
                    }
                    Err(e) => {
                        tracing::warn!(binding = %b.id, error = %e, "reconcile query failed");
                        report.errors += 1;
                        continue;
                    }
                };
                match event_kind {
                    None => report.still_pending += 1,
                    Some(kind) => {
                        let activated = matches!(kind, ChannelEventKind::Signed { .. });
                        let ev = ChannelEvent {
                            event_id: format!("reconcile:{}", b.id),
                            binding: BindingRef::Ours(b.id.clone()),
                            kind,
                            agreement: None,
                        };
                        match self.apply_channel_event(&b.channel, &ev).await {
                            Ok(()) if activated => report.activated += 1,
                            Ok(()) => report.failed += 1,
                            Err(_) => report.errors += 1,
                        }
                    }
                }
            }
        }
        Ok(report)
    }

    /// Erases a user's card data everywhere by destroying their key
    /// material (crypto-shredding), unbinds every card and audits it.
    ///
    /// With step-up enabled this is refused (`step_up_required`); use
    /// [`CardService::erase_user_with_step_up`].
    pub async fn erase_user(
        &self,
        ctx: &RequestContext,
        user: &UserId,
    ) -> Result<u64, ServiceError> {
        self.erase_user_with_step_up(ctx, user, None).await
    }

    /// [`CardService::erase_user`] with the operator's step-up token,
    /// required when step-up is enabled (action
    /// [`actions::ERASE_USER`] on `user`).
    pub async fn erase_user_with_step_up(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        step_up_token: Option<&str>,
    ) -> Result<u64, ServiceError> {
        self.authorize(ctx, Action::EraseUser, Some(user)).await?;
        self.require_step_up(ctx, user, None, actions::ERASE_USER, step_up_token)
            .await?;
        let mut unbound = 0;
        for b in self.user_bindings(user).await? {
            if b.status != BindingStatus::Inactive {
                self.unbind_inner(ctx, user, &b.id, UnbindStepUp::Skip)
                    .await?;
                unbound += 1;
            }
        }
        let had_key = self.ports.vault.erase_owner(user).await?;
        self.audit(
            ctx,
            "user.erase",
            Some(user),
            None,
            "ok",
            Some(format!("unbound {unbound}, key destroyed: {had_key}")),
        )
        .await;
        Ok(unbound)
    }

    /// Opens one sealed field of a binding (for operators' investigations
    /// and channel re-submission). Every opening is audited.
    pub async fn open_field(
        &self,
        ctx: &RequestContext,
        b: &Binding,
        field: &'static str,
    ) -> Result<Vec<u8>, ServiceError> {
        let blob = match field {
            "pan" => &b.sealed.pan,
            "holder_name" => &b.sealed.holder_name,
            "id_number" => &b.sealed.id_number,
            "phone" => &b.sealed.phone,
            _ => {
                return Err(ServiceError::code_only(
                    ErrorCode::InvalidRequest,
                    "unknown field",
                ))
            }
        };
        let res = self
            .ports
            .vault
            .open(&b.user_id, &SealContext::new(b.id.as_str(), field), blob)
            .await;
        let outcome = match &res {
            Ok(_) => "ok",
            Err(crate::KeyError::Unavailable(_)) => "refused: key_service_unavailable",
            Err(_) => "refused: card_data_unreadable",
        };
        let res = res.map_err(|e| match e {
            crate::KeyError::Unavailable(_) => ServiceError::Keys(e),
            crate::KeyError::Refused(_) | crate::KeyError::Erased => {
                tracing::error!(binding = %b.id, field, error = %e, "sealed card data refused to open");
                ServiceError::code_only(ErrorCode::CardDataUnreadable, "the stored card data does not open")
            }
        });
        self.audit(
            ctx,
            "card_data.open",
            Some(&b.user_id),
            Some(&b.id),
            outcome,
            Some(field.to_owned()),
        )
        .await;
        res
    }

    pub async fn list_consents(
        &self,
        ctx: &RequestContext,
        user: Option<UserId>,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<Consent>, ServiceError> {
        self.authorize(ctx, Action::ReadConsents, user.as_ref())
            .await?;
        if ctx.actor.role == cardbind_domain::Role::User && user.is_none() {
            return Err(ServiceError::code_only(
                ErrorCode::Forbidden,
                "users read their own consents",
            ));
        }
        Ok(self
            .ports
            .consents
            .list(user, after, limit.clamp(1, MAX_LIST))
            .await?)
    }

    pub async fn read_audit(
        &self,
        ctx: &RequestContext,
        filter: &AuditFilter,
        after_seq: Option<u64>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, ServiceError> {
        self.authorize(ctx, Action::ReadAudit, None).await?;
        Ok(self
            .ports
            .audit
            .list(filter, after_seq, limit.clamp(1, 500))
            .await?)
    }

    /// The fingerprint the vault gives a PAN (for admin tooling).
    pub async fn fingerprint(&self, pan: &CardNumber) -> Result<Fingerprint, ServiceError> {
        Ok(self.ports.vault.fingerprint(pan).await?)
    }
}
