//! The step-up port: a fresh, second proof of identity for risky
//! operations.
//!
//! A bearer token says who the caller is; it does not say that a person
//! confirmed *this* operation just now. For the operations that are hard to
//! undo — unbinding a user's **default** card, moving the default to
//! another card, and an operator's **erasure** of a user — the use cases ask a [`StepUpVerifier`] to check a short-lived
//! step-up token the client obtained from a second factor (an OTP, a
//! biometric prompt, an approval by a second operator, …) and sent with the
//! request (`X-Step-Up-Token` on the HTTP API).
//!
//! Whether step-up is required at all is chosen at the composition root
//! (`[step_up] enabled`); when no verifier is installed the use cases do
//! not ask for one.

use async_trait::async_trait;
use cardbind_domain::UserId;

/// What a step-up token is for. A token is valid for one action on one
/// user only, so that a token obtained to unbind a card cannot erase an
/// account, nor serve for another user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StepUpAction {
    /// Unbinding the card that is the user's current default.
    UnbindDefaultCard,
    /// Making another card the default while the user has one: else
    /// moving the default first would let a stolen bearer token unbind
    /// the old default without a step-up.
    ChangeDefaultCard,
    /// Erasing a user (crypto-shredding, every card unbound).
    EraseUser,
}

impl StepUpAction {
    pub const ALL: [StepUpAction; 3] = [
        StepUpAction::UnbindDefaultCard,
        StepUpAction::ChangeDefaultCard,
        StepUpAction::EraseUser,
    ];

    /// The name a token is issued for.
    pub const fn as_str(self) -> &'static str {
        match self {
            StepUpAction::UnbindDefaultCard => "unbind_default_card",
            StepUpAction::ChangeDefaultCard => "change_default_card",
            StepUpAction::EraseUser => "erase_user",
        }
    }

    pub fn parse(s: &str) -> Option<StepUpAction> {
        StepUpAction::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// The verifier could not decide.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StepUpError {
    /// The verifier (or the service behind it) could not be reached.
    #[error("step-up verifier unavailable: {0}")]
    Unavailable(String),
}

/// Checks step-up tokens.
///
/// ## Contract
/// * `user` is the user the operation is about (the card owner for an
///   unbind, the erased user for an erasure) and `action` one of
///   [`StepUpAction`]; `token` is the value the client sent, untrusted and
///   unparsed.
/// * `Ok(true)` only when `token` was issued for exactly this `user` and
///   this `action` and is still valid now (implementations bound its
///   lifetime; minutes, not hours).
/// * `Ok(false)` for every token that does not verify: malformed, wrong
///   signature, another user or action, expired, not yet valid. Never an
///   error for a bad token.
/// * `Err(StepUpError::Unavailable)` only when the verifier cannot decide
///   (its backend is down). The use cases fail closed: the operation is
///   refused with `step_up_required`.
/// * MUST NOT log or return the token, and compares secrets in constant
///   time.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait StepUpVerifier: Send + Sync {
    async fn verify(
        &self,
        user: &UserId,
        action: StepUpAction,
        token: &str,
    ) -> Result<bool, StepUpError>;
}
