//! Who is asking, the ports and limits the use cases run on, and the audit
//! events they write.

use std::collections::BTreeMap;
use std::sync::Arc;

use cardbind_domain::{
    Actor, BindingId, CardCap, ChannelCardRule, ChannelName, ErrorCode, RateRule, Role, Timestamp,
    UserId, VerificationPolicy,
};
use cardbind_ports::audit::{AuditAction, AuditActor, AuditEvent, AuditLog, Outcome};
use cardbind_ports::bins::BinDirectory;
use cardbind_ports::channel::ChannelRegistry;
use cardbind_ports::clock::{Clock, IdGenerator};
use cardbind_ports::keys::CardVault;
use cardbind_ports::step_up::StepUpVerifier;
use cardbind_ports::store::{
    CardDataStore, ChannelRefs, IdempotencyStore, RateLimiter, ReviewQueue, SeenIds, WalletStore,
};

/// The ports the use cases run on, chosen at the composition root.
#[derive(Clone)]
pub struct Ports {
    pub wallets: Arc<dyn WalletStore>,
    pub audit: Arc<dyn AuditLog>,
    pub card_data: Arc<dyn CardDataStore>,
    pub channel_refs: Arc<dyn ChannelRefs>,
    pub rates: Arc<dyn RateLimiter>,
    pub seen: Arc<dyn SeenIds>,
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub review: Arc<dyn ReviewQueue>,
    pub vault: Arc<dyn CardVault>,
    pub channels: ChannelRegistry,
    /// The BIN table in use (refreshed from its store by the service).
    pub bins: Arc<BinDirectory>,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn IdGenerator>,
    /// When set, unbinding a default card, moving the default to another
    /// card and erasing a user need a step-up token this verifier accepts.
    pub step_up: Option<Arc<dyn StepUpVerifier>>,
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
    /// A bind of a card whose earlier bind never stored its channel's
    /// answer resumes it once that bind is this old (younger, it may still
    /// be running: `conflict`, retry later).
    pub resume_after_seconds: i64,
    /// How far back `reconcile` looks for cards left pending.
    pub reconcile_lookback_seconds: i64,
    /// Which cards each channel takes (a channel without one takes every
    /// card).
    pub card_rules: BTreeMap<ChannelName, ChannelCardRule>,
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
            resume_after_seconds: 30,
            reconcile_lookback_seconds: 7 * 24 * 3600,
            card_rules: BTreeMap::new(),
        }
    }
}

/// Who is asking, for authorization and the audit trail.
#[derive(Clone, Debug)]
pub struct RequestContext {
    pub actor: Actor,
    pub request_id: Option<String>,
    pub client_ip: Option<String>,
    /// The service acting on its own, not a caller.
    by_service: bool,
}

impl RequestContext {
    pub fn new(actor: Actor, request_id: impl Into<String>, client_ip: Option<String>) -> Self {
        let request_id = request_id.into();
        RequestContext {
            actor,
            request_id: (!request_id.is_empty()).then_some(request_id),
            client_ip,
            by_service: false,
        }
    }

    /// The service acting on its own (`system`, `reconcile`, …): an
    /// operator's rights, and `system` as its role in the log.
    pub fn service(what: &str) -> RequestContext {
        RequestContext {
            actor: Actor::new(what, Role::Admin),
            request_id: None,
            client_ip: None,
            by_service: true,
        }
    }

    fn audit_actor(&self) -> AuditActor {
        if self.by_service {
            AuditActor::service(self.actor.subject.clone())
        } else {
            AuditActor {
                subject: self.actor.subject.clone(),
                role: Some(self.actor.role),
            }
        }
    }

    /// An audit event by this caller.
    pub fn event(&self, at: Timestamp, action: AuditAction) -> EventBuilder {
        EventBuilder(AuditEvent {
            at,
            actor: self.audit_actor(),
            action,
            user_id: None,
            binding_id: None,
            outcome: Outcome::Ok,
            request_id: self.request_id.clone(),
            client_ip: self.client_ip.clone(),
            detail: None,
        })
    }
}

/// Builds one [`AuditEvent`].
#[must_use]
pub struct EventBuilder(AuditEvent);

impl EventBuilder {
    pub fn user(mut self, u: &UserId) -> Self {
        self.0.user_id = Some(u.clone());
        self
    }

    pub fn binding(mut self, b: &BindingId) -> Self {
        self.0.binding_id = Some(b.clone());
        self
    }

    pub fn refused(mut self, code: ErrorCode) -> Self {
        self.0.outcome = Outcome::Refused(code);
        self
    }

    pub fn outcome(mut self, o: Outcome) -> Self {
        self.0.outcome = o;
        self
    }

    pub fn detail(mut self, d: impl Into<String>) -> Self {
        self.0.detail = Some(d.into());
        self
    }

    pub fn build(self) -> AuditEvent {
        self.0
    }
}
