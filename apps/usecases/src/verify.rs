//! Confirming a card with the one-time password the user received.
//!
//! The attempt is counted in the wallet *before* the channel checks the
//! code, so parallel guesses cannot share one attempt and no more guesses
//! reach the channel than the attempts allow.

use cardbind_domain::{
    Action, BindingId, BindingStatus, ChannelCode, ChannelName, Clash, Declined, ErrorCode,
    FailureReason, Timestamp, UnprocessableCode, UserId, VerificationPolicy, Wallet,
};
use cardbind_ports::audit::AuditAction;
use cardbind_ports::channel::{ConfirmOutcome, RemoteState};
use cardbind_ports::store::RefTarget;
use cardbind_ports::ChannelError;

use crate::context::RequestContext;
use crate::error::{channel_not_enabled, channel_rejected, op_error, ChannelFailure};
use crate::tx::Decided;
use crate::{CardView, UseCases};

op_error! {
    /// Why a verification was refused.
    pub enum VerifyError { BadRequest, Forbidden, NotFound, Conflict, Unprocessable, Unavailable }
    from Store, Rules
}

/// A one-time password: 4 to 8 digits.
#[derive(Clone, PartialEq, Eq)]
pub struct Otp(String);

impl Otp {
    /// A code that is not 4 to 8 digits is a wrong code (`invalid_otp`),
    /// without costing an attempt.
    pub fn parse(s: &str) -> Result<Otp, Declined> {
        if (4..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Otp(s.to_owned()))
        } else {
            Err(Declined::field(
                UnprocessableCode::InvalidOtp,
                "otp",
                "the code has 4 to 8 digits",
            ))
        }
    }
}

impl std::fmt::Debug for Otp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Otp(****)")
    }
}

/// Confirm this card of this user with this code.
#[derive(Clone, Debug)]
pub struct VerifyCard {
    pub user: UserId,
    pub card: BindingId,
    pub otp: Otp,
}

impl UseCases {
    pub async fn verify(
        &self,
        ctx: &RequestContext,
        cmd: VerifyCard,
    ) -> Result<CardView, VerifyError> {
        self.authorize(ctx, Action::VerifyCard, Some(&cmd.user))
            .await?;
        let (user, id) = (&cmd.user, &cmd.card);
        // The generation of the card's data as last decided on (a closed
        // window fails the card, and that bind's data goes).
        let decided_on = std::sync::Mutex::new(None::<u32>);
        let attempt = self
            .change_wallet::<_, VerifyError>(ctx, user, None, |w, now| {
                if let Ok(mut d) = decided_on.lock() {
                    *d = w.get(id).ok().map(|b| b.data_generation);
                }
                self.count_attempt(ctx, w, id, now)
            })
            .await;
        let ((channel_name, channel_ref), after) = match attempt {
            Ok(v) => v,
            Err(e) => {
                let generation = decided_on.lock().ok().and_then(|d| *d);
                if let (ErrorCode::VerificationExpired, Some(g)) = (e.code(), generation) {
                    self.drop_card_data(user, id, g).await;
                }
                return Err(e);
            }
        };
        let channel = self
            .channel(&channel_name)
            .ok_or_else(channel_not_enabled)?;
        // The bind whose code this is (see `ChannelBindRequest::attempt`).
        let generation = after
            .wallet
            .get(id)
            .map(|b| b.data_generation)
            .unwrap_or_default();
        let answer = channel.confirm_otp(id, &channel_ref, &cmd.otp.0).await;
        // The channel no longer waits for this code while our own window
        // is open (a closed one failed the card above). An unbind ends the
        // agreement at the channel before it writes the card, so one may
        // be under way: when the channel reports the agreement ended, the
        // card changed while its code was checked, and the code did not
        // expire. The card is left as it is; the unbind writes it.
        if let Ok(ConfirmOutcome::Expired) = &answer {
            let state = channel
                .query(id, Some(generation), Some(channel_ref.clone()))
                .await;
            if let Ok(RemoteState::Terminated) = state {
                return Err(Clash::new(
                    cardbind_domain::ConflictCode::Conflict,
                    "the card's agreement was ended while its code was checked; read the card",
                )
                .into());
            }
        }
        if let Ok(ConfirmOutcome::Confirmed { channel_ref: r }) = &answer {
            if r != &channel_ref {
                let target = RefTarget {
                    user: user.clone(),
                    binding: id.clone(),
                };
                if let Err(e) = self
                    .ports
                    .channel_refs
                    .put(&channel_name, r, &target, generation)
                    .await
                {
                    tracing::warn!(binding = %id, error = %e, "channel reference not stored");
                }
            }
        }
        // Whether the decision last taken failed the card (the fifth wrong
        // code, a closed window, a refusal): those answer an error, and the
        // card's data must go all the same.
        let failed_here = std::sync::atomic::AtomicBool::new(false);
        let applied = self
            .change_wallet::<_, VerifyError>(ctx, user, Some(after), |w, now| {
                failed_here.store(false, std::sync::atomic::Ordering::Relaxed);
                // The card unbound and bound again while the channel was
                // asked: the answer is about the earlier agreement, not
                // the code this bind sent.
                if w
                    .get(id)
                    .is_ok_and(|b| b.channel_ref.as_deref().unwrap_or_default() != channel_ref)
                {
                    return Decided::new(
                        Err(Clash::new(
                            cardbind_domain::ConflictCode::Conflict,
                            "the card was bound again while its code was checked; verify the new code",
                        )
                        .into()),
                        Vec::new(),
                    );
                }
                let was_failed = w.get(id).is_ok_and(|b| b.status == BindingStatus::Failed);
                let decided = apply_answer(ctx, w, id, &answer, now, &self.policy.verification);
                let failed = w.get(id).is_ok_and(|b| b.status == BindingStatus::Failed);
                failed_here.store(
                    failed && !was_failed,
                    std::sync::atomic::Ordering::Relaxed,
                );
                decided
            })
            .await;
        // `Ok` is a confirmed code (the card is active); every way a card
        // fails here is an error.
        let (_, after) = match applied {
            Ok(v) => v,
            Err(e) => {
                // Confirmed at the channel for a card that failed, was
                // unbound or bound again meanwhile: that agreement serves
                // nothing here.
                // (Not when the write failed for the card as it was: it
                // still waits for this agreement, and the client retries.)
                if let Ok(ConfirmOutcome::Confirmed { channel_ref: r }) = &answer {
                    if let Ok(now) = self.load(user).await {
                        let gone = now
                            .wallet
                            .get(id)
                            .map_or(true, |b| !b.holds_agreement(&channel_ref));
                        if gone {
                            let bound = cardbind_domain::StartOutcome::Bound {
                                channel_ref: r.clone(),
                            };
                            self.end_agreement_of_a_card_gone(
                                ctx,
                                &now.wallet,
                                id,
                                generation,
                                &channel_name,
                                &bound,
                            )
                            .await;
                        }
                    }
                }
                // The card failed (if the write of it went through: read
                // back, since a store error also ends here): this bind's
                // data goes.
                if failed_here.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(now) = self.load(user).await {
                        if now.wallet.get(id).is_ok_and(|b| {
                            b.status == BindingStatus::Failed && b.data_generation == generation
                        }) {
                            self.drop_card_data(user, id, generation).await;
                        }
                    }
                }
                return Err(e);
            }
        };
        Ok(self.view_as_read(&after, id).await?)
    }

    /// Counts one attempt (or fails the card whose window closed).
    fn count_attempt(
        &self,
        ctx: &RequestContext,
        w: &mut Wallet,
        id: &BindingId,
        now: Timestamp,
    ) -> Decided<(ChannelName, String), VerifyError> {
        let (from, enabled) = match w.get(id) {
            Ok(b) => (b.status, self.channel(&b.channel).is_some()),
            Err(m) => return Decided::new(Err(m.into()), Vec::new()),
        };
        // A code no channel here can check is not counted: the card's
        // channel is not enabled (any more) on this deployment.
        if !enabled {
            return Decided::new(Err(channel_not_enabled().into()), Vec::new());
        }
        let r: Result<(), VerifyError> =
            w.change(id, |b| b.begin_otp(now, &self.policy.verification));
        let e = ctx
            .event(now, AuditAction::BindingVerify)
            .user(w.user())
            .binding(id);
        match (r, w.get(id)) {
            (Ok(()), Ok(b)) => Decided::new(
                Ok((b.channel.clone(), b.channel_ref.clone().unwrap_or_default())),
                vec![e.detail(format!("attempt {}", b.otp_attempts)).build()],
            ),
            (Err(refusal), Ok(b)) if b.status != from => Decided::new(
                Err(refusal.clone()),
                vec![e
                    .refused(refusal.code())
                    .detail(format!("{from} -> {}", b.status))
                    .build()],
            ),
            (Err(refusal), _) => Decided::new(Err(refusal), Vec::new()),
            (Ok(()), Err(m)) => Decided::new(Err(m.into()), Vec::new()),
        }
    }
}

/// Writes the channel's answer to the card as it is now.
fn apply_answer(
    ctx: &RequestContext,
    w: &mut Wallet,
    id: &BindingId,
    answer: &Result<ConfirmOutcome, ChannelError>,
    now: Timestamp,
    policy: &VerificationPolicy,
) -> Decided<BindingStatus, VerifyError> {
    let from = match w.get(id) {
        Ok(b) => b.status,
        Err(m) => return Decided::new(Err(m.into()), Vec::new()),
    };
    let pending = from == BindingStatus::PendingVerification;
    let policy_fail = |w: &mut Wallet, reason: FailureReason| {
        if pending {
            let r: Result<(), VerifyError> = w.change(id, |b| b.fail(reason, now));
            r.ok();
        }
    };
    let result: Result<(), VerifyError> = match answer {
        Ok(ConfirmOutcome::Confirmed { channel_ref }) => match from {
            BindingStatus::PendingVerification => {
                let r: Result<(), VerifyError> =
                    w.change(id, |b| b.activate(Some(channel_ref.clone()), now));
                r
            }
            BindingStatus::Active => Ok(()),
            BindingStatus::Frozen
            | BindingStatus::Inactive
            | BindingStatus::PendingReview
            | BindingStatus::Failed => {
                Err(Clash::transition("this card is no longer waiting for verification").into())
            }
        },
        Ok(ConfirmOutcome::WrongOtp) => {
            if pending {
                let r: Result<bool, VerifyError> = w.change(id, |b| b.otp_rejected(now, policy));
                r.ok();
            }
            Err(Declined::field(UnprocessableCode::InvalidOtp, "otp", "the code is wrong").into())
        }
        Ok(ConfirmOutcome::Expired) => {
            policy_fail(w, FailureReason::VerificationExpired);
            Err(Declined::new(
                UnprocessableCode::VerificationExpired,
                "the verification window has closed",
            )
            .into())
        }
        Ok(ConfirmOutcome::Refused { code }) | Err(ChannelError::Rejected { code, .. }) => {
            policy_fail(
                w,
                FailureReason::ChannelDeclined(ChannelCode::from_channel(code)),
            );
            Err(channel_rejected(code).into())
        }
        Err(e) => match ChannelFailure::of(e.clone()) {
            // Not reached: the code was not checked, so the attempt is
            // given back.
            ChannelFailure::Unreachable(u) => {
                let r: Result<(), VerifyError> = w.change(id, |b| {
                    b.otp_unchecked(now);
                    Ok::<(), VerifyError>(())
                });
                r.ok();
                Err(u.into())
            }
            // An answer that cannot be used (it does not parse, or its
            // signature does not verify): the channel answered, so it may
            // well have checked the code, and the attempt stays counted (a
            // channel whose answers to wrong codes cannot be read must not
            // let guesses through uncounted). The client may try again.
            _ => {
                tracing::warn!(error = %e, "payment channel answered a code check unusably");
                Err(crate::error::channel_unavailable().into())
            }
        },
    };
    let to = w.get(id).map(|b| b.status).unwrap_or(from);
    let mut e = ctx
        .event(now, AuditAction::BindingVerify)
        .user(w.user())
        .binding(id);
    if from != to {
        e = e.detail(format!("{from} -> {to}"));
    }
    if let Err(err) = &result {
        e = e.refused(err.code());
    }
    Decided::new(result.map(|()| to), vec![e.build()])
}
