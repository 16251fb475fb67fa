//! The access decision and step-up, with their audit events.

use std::sync::Mutex;

use cardbind_domain::{Action, BindingId, Denied, ErrorCode, ForbiddenCode, UserId};
use cardbind_ports::audit::{AuditAction, AuditEvent};
use cardbind_ports::step_up::StepUpAction;
use cardbind_ports::StoreError;

use crate::context::RequestContext;
use crate::tx::Loaded;
use crate::UseCases;

impl UseCases {
    /// The access decision (`Actor::authorize`); a refusal is audited
    /// (`access.denied`, in the service's chain) before it is returned.
    pub(crate) async fn authorize(
        &self,
        ctx: &RequestContext,
        action: Action,
        user: Option<&UserId>,
    ) -> Result<(), Denied> {
        let Err(denied) = ctx.actor.authorize(action, user) else {
            return Ok(());
        };
        let detail = format!(
            "the {} role may not {}",
            ctx.actor.role.as_str(),
            action.as_str()
        );
        Err(self.denied(ctx, denied, detail, user).await)
    }

    /// Refuses a caller that may not address the cards of the user named
    /// `user` (as sent) at all, whatever it asks (`Actor::may_address`:
    /// a user token on another user's path), audited as `access.denied`
    /// like every refusal. The HTTP layer asks this before it reads the
    /// request's parameters and body, so that what they hold does not
    /// decide the answer.
    pub async fn refuse_unaddressable(
        &self,
        ctx: &RequestContext,
        user: &str,
    ) -> Result<(), Denied> {
        let Err(denied) = ctx.actor.may_address(user) else {
            return Ok(());
        };
        let named = UserId::parse(user).ok();
        Err(self
            .denied(ctx, denied, "another user's cards".into(), named.as_ref())
            .await)
    }

    /// Audits a refusal as `access.denied` (in the service's chain, naming
    /// the user it was about when known) and gives it back.
    async fn denied(
        &self,
        ctx: &RequestContext,
        denied: Denied,
        detail: String,
        user: Option<&UserId>,
    ) -> Denied {
        let mut e = ctx
            .event(self.now(), AuditAction::AccessDenied)
            .refused(denied.code)
            .detail(detail);
        if let Some(u) = user {
            e = e.user(u);
        }
        self.audit_system(e.build()).await;
        denied
    }

    /// Appends an event to the service's own chain. A failure to store it
    /// is logged loudly (the refusal it records is still answered).
    pub(crate) async fn audit_system(&self, event: AuditEvent) {
        let action = event.action;
        if let Err(e) = self
            .ports
            .audit
            .append_system(vec![event], self.now())
            .await
        {
            tracing::error!(error = %e, %action, "audit event not stored");
        }
    }

    /// Checks the step-up token for `action` on `user` when step-up is
    /// enabled. Returns the audit event of the check (to be written with
    /// the change it allows, or on its own when it refuses) and whether it
    /// passed. Missing, refused or unverifiable tokens (verifier down:
    /// fail closed) do not pass.
    pub(crate) async fn check_step_up(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        binding: Option<&BindingId>,
        action: StepUpAction,
        token: Option<&str>,
    ) -> Option<(AuditEvent, bool)> {
        let verifier = self.ports.step_up.as_ref()?;
        let refusal = match token {
            None | Some("") => Some(StepUpRefusal::Missing),
            Some(t) => match verifier.verify(user, action, t).await {
                Ok(true) => None,
                Ok(false) => Some(StepUpRefusal::Refused),
                Err(e) => {
                    tracing::warn!(error = %e, ?action, "step-up verifier unavailable; refusing");
                    Some(StepUpRefusal::VerifierUnavailable)
                }
            },
        };
        let mut e = ctx.event(self.now(), AuditAction::StepUpVerify).user(user);
        if let Some(b) = binding {
            e = e.binding(b);
        }
        let passed = refusal.is_none();
        let e = match refusal {
            None => e.detail(action.as_str()),
            Some(why) => e.refused(ErrorCode::StepUpRequired).detail(format!(
                "{}: {}",
                action.as_str(),
                why.as_str()
            )),
        };
        Some((e.build(), passed))
    }
}

/// One step-up check of a request that may be attempted more than once
/// (a write that lost a race is decided again): the check's event once it
/// passed, so that a later attempt neither asks the verifier again nor
/// spends a one-time token twice.
#[derive(Default)]
pub(crate) struct SteppedUp(Mutex<Option<AuditEvent>>);

impl UseCases {
    /// Requires a step-up for `action` on the user of `loaded` when step-up
    /// is enabled: the passed check's event, to be written with the change
    /// it allows (`None` when step-up is off). A refusal is committed to
    /// the user's chain on its own (to the service's, naming the user,
    /// when another write of that chain came first) and returned as
    /// `step_up_required`.
    pub(crate) async fn require_step_up<R>(
        &self,
        ctx: &RequestContext,
        loaded: &Loaded,
        binding: Option<&BindingId>,
        action: StepUpAction,
        token: Option<&str>,
        once: &SteppedUp,
    ) -> Result<Option<AuditEvent>, R>
    where
        R: From<StoreError> + From<Denied>,
    {
        if let Some(e) = once.0.lock().map(|s| s.clone()).unwrap_or(None) {
            return Ok(Some(e));
        }
        let user = loaded.wallet.user();
        match self.check_step_up(ctx, user, binding, action, token).await {
            None => Ok(None),
            Some((e, true)) => {
                if let Ok(mut s) = once.0.lock() {
                    *s = Some(e.clone());
                }
                Ok(Some(e))
            }
            Some((e, false)) => {
                match self
                    .commit(ctx, loaded, &loaded.wallet, vec![e.clone()])
                    .await
                {
                    Ok(_) => {}
                    // Another write of the user's chain came first: the
                    // refusal is kept in the service's chain (naming the
                    // user), and answered as the refusal it is, not as a
                    // conflict to retry.
                    Err(StoreError::Conflict) => self.audit_system(e).await,
                    Err(other) => return Err(other.into()),
                }
                Err(step_up_required().into())
            }
        }
    }
}

/// Why a step-up check did not pass (the audit event's detail).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StepUpRefusal {
    /// No token was sent.
    Missing,
    /// The verifier refused the token.
    Refused,
    /// The verifier could not be asked (fail closed).
    VerifierUnavailable,
}

impl StepUpRefusal {
    const fn as_str(self) -> &'static str {
        match self {
            StepUpRefusal::Missing => "missing",
            StepUpRefusal::Refused => "refused",
            StepUpRefusal::VerifierUnavailable => "verifier_unavailable",
        }
    }
}

/// The refusal for a missing or invalid step-up token.
pub(crate) fn step_up_required() -> Denied {
    Denied::new(
        ForbiddenCode::StepUpRequired,
        "this operation needs a valid step-up token (X-Step-Up-Token) for this user and action",
    )
}
