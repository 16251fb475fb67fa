//! Family cards (主卡/副卡): sharing a card, accepting, revoking, leaving,
//! and the secondary's view of what is shared with them. The rules are the
//! domain's ([`cardbind_domain::family`]); this module orders the writes.
//!
//! ## Two wallets, one at a time
//! The primary's wallet holds the [`Share`] (the truth); the secondary's
//! holds the [`SharedIn`] mirror. No store writes two wallets at once, so:
//!
//! | use case | first write | second write | a crash between leaves |
//! |---|---|---|---|
//! | share | primary: the share | secondary: the invitation | a share nobody can accept yet; the same request again (same key, or same terms) finds it and writes the invitation |
//! | accept | secondary: their consent | primary: `accepted_at` (shown to the primary) | an accepted share the primary's listing shows as invited; accepting again completes it |
//! | revoke | primary: revoked | secondary: the mirror ended | a mirror of a revoked share: never listed, never usable (every read checks the primary); revoking again ends it |
//! | leave | primary: revoked | secondary: the mirror ended | the same |
//! | unbind, channel unbind, erasure of the primary | primary: card and shares end together | each secondary's mirror ended (best effort, logged) | the same |
//! | erasure of the secondary | each primary: revoked | secondary: every mirror ended, with the erasure | shares revoked while the erasure is not done; erasing again completes it |
//!
//! The truth is always written first, and every second write is
//! idempotent, so that any prefix of a use case's writes is safe and the
//! same request again completes it.
//!
//! ## What the secondary sees
//! Never the primary's data: the masked snapshot taken when the share was
//! made (brand, BIN, last four, expiry, issuer facts, channel), the terms
//! and the share id. Not the primary's user id, card id, agreement or
//! consents.

use cardbind_domain::{
    family, Action, Binding, BindingId, ConsentGiven, Declined, Given, Invalid, Money, NewShare,
    Received, Share, ShareId, ShareTerms, SharedIn, Standing, Timestamp, UnprocessableCode, UserId,
    Wallet,
};
use cardbind_ports::audit::AuditAction;
use cardbind_ports::StoreError;

use crate::context::RequestContext;
use crate::error::{op_error, Internal};
use crate::tx::Decided;
use crate::UseCases;

mod secondary;

/// What the other user's consent to a share gives as `revoked_by` when the
/// holder's side ended it (a revoke, an unbind, the channel, an erasure):
/// the other user is never told the holder's user id.
pub const ENDED_BY_THE_HOLDER: &str = "card_holder";

pub(crate) use secondary::Household;

op_error! {
    /// Why sharing a card was refused.
    pub enum ShareError { BadRequest, Forbidden, NotFound, Conflict, Unprocessable, Unavailable }
    from Store, ShareRules
}

op_error! {
    /// Why reading shares was refused.
    pub enum ShareReadError { Forbidden, NotFound, Unavailable }
    from StoreRead
}

op_error! {
    /// Why ending a share (revoke, leave) was refused.
    pub enum EndShareError { Forbidden, NotFound, Conflict, Unavailable }
    from Store
}

op_error! {
    /// Why accepting a share was refused.
    pub enum AcceptError { BadRequest, Forbidden, NotFound, Conflict, Unavailable }
    from Store, State
}

/// A share request as received: every field parsed by [`UseCases::share_card`]
/// once the caller is authorized.
#[derive(Clone, Debug)]
pub struct ShareForm {
    /// The primary (the card's holder).
    pub user: UserId,
    pub card: BindingId,
    /// The user to share with, as sent.
    pub secondary: String,
    /// The monthly limit in minor units of `currency`.
    pub amount: i64,
    pub currency: String,
    pub expires_at: Timestamp,
    /// The primary's consent to share.
    pub consent: ConsentGiven,
}

/// A share as its primary sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareView {
    pub share: Share,
    pub standing: Standing,
}

/// What [`UseCases::share_card`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shared {
    pub view: ShareView,
    /// `false`: the same share was live already (a retry).
    pub created: bool,
}

/// Where a share made to a user stands, as they see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SharedStatus {
    /// Offered, not accepted yet.
    Invited,
    /// Accepted and usable now.
    Accepted,
    /// Ended for the user (left, declined, revoked, expired).
    Ended,
}

impl SharedStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            SharedStatus::Invited => "invited",
            SharedStatus::Accepted => "accepted",
            SharedStatus::Ended => "ended",
        }
    }
}

/// A card shared with the reader: the mirror (masked snapshot, share id,
/// acceptance) and the terms as the primary's wallet holds them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedCardView {
    /// The reader: the user the card is shared with.
    pub user: UserId,
    pub mirror: SharedIn,
    /// The primary's terms (`None` only for an ended share whose record the
    /// primary's wallet no longer keeps).
    pub terms: Option<ShareTerms>,
    pub status: SharedStatus,
    pub is_default: bool,
}

impl SharedCardView {
    /// The card id the secondary knows it by.
    pub fn card_id(&self) -> BindingId {
        self.mirror.card_id()
    }
}

fn bad_secondary() -> Invalid {
    Invalid::field(
        cardbind_domain::BadRequestCode::InvalidUserId,
        "secondary_user_id",
        "secondary_user_id must be 1 to 64 characters of A-Z a-z 0-9 _ - . : @, starting with a letter or digit",
    )
}

/// `share_limit_reached`: the other user holds as many open shares as
/// allowed.
fn secondary_full() -> Declined {
    Declined::new(
        UnprocessableCode::ShareLimitReached,
        "that user holds as many open shares as allowed",
    )
}

fn shared_card_not_active() -> cardbind_domain::Clash {
    cardbind_domain::Clash::transition(
        "the shared card is not active at the moment (its holder's card is frozen)",
    )
}

impl UseCases {
    /// Shares one of the user's active cards with another user: see the
    /// module docs for the order of writes. The same share again (same
    /// card, user and terms, while it is live) is found, not made twice.
    pub async fn share_card(
        &self,
        ctx: &RequestContext,
        form: ShareForm,
    ) -> Result<Shared, ShareError> {
        self.authorize(ctx, Action::ShareCard, Some(&form.user))
            .await?;
        let now = self.now();
        let secondary = UserId::parse(&form.secondary).map_err(|_| bad_secondary())?;
        let limit = Money::parse(form.amount, &form.currency)?;
        let terms = ShareTerms::new(limit, form.expires_at, now)?;
        let primary = self.load(&form.user).await?;
        let card = primary.wallet.get(&form.card)?.clone();
        let consent = form.consent.clone().accept(card.channel.clone(), now)?;
        // Room at the secondary's, before anything is written (a share the
        // secondary could never receive must not be made).
        let again = primary.wallet.shares().iter().any(|s| {
            s.card == form.card && s.secondary == secondary && s.is_live(now) && s.terms == terms
        });
        if !again && secondary != form.user {
            let theirs = self.load(&secondary).await?;
            if theirs.wallet.open_shared_in(now) >= family::MAX_OPEN_SHARED_IN {
                let refusal = secondary_full();
                self.audit_refused_share(ctx, &form.user, &form.card, refusal.code)
                    .await;
                return Err(refusal.into());
            }
        }
        let new_id = ShareId::new(&self.ports.ids.opaque_id())
            .ok_or_else(|| Internal::new("a generated share id is not a valid id"))?;
        let (given, after) = self
            .change_wallet::<_, ShareError>(ctx, &form.user, Some(primary), |w, now| {
                let share = NewShare {
                    id: new_id.clone(),
                    card: form.card.clone(),
                    secondary: secondary.clone(),
                    terms,
                    consent: consent.clone(),
                };
                let e = ctx
                    .event(now, AuditAction::ShareCreate)
                    .user(&form.user)
                    .binding(&form.card);
                match w.give_share(share, now) {
                    Ok(g @ Given::New(_)) => {
                        let e = e
                            .detail(format!(
                                "share {} with {secondary}: {} {} a month until {}",
                                g.id(),
                                terms.monthly_limit.minor_units(),
                                terms.monthly_limit.currency(),
                                terms.expires_at
                            ))
                            .build();
                        Decided::new(Ok(g), vec![e])
                    }
                    Ok(g) => Decided::new(Ok(g), Vec::new()),
                    Err(r) => {
                        let e = e.refused(r.code()).build();
                        Decided::new(Err(r.into()), vec![e])
                    }
                }
            })
            .await?;
        let share = after
            .wallet
            .share(given.id())
            .cloned()
            .ok_or_else(|| Internal::new("a share given is not in its wallet"))?;
        let card = after
            .wallet
            .get(&share.card)
            .map_err(|_| Internal::new("a shared card is not in its wallet"))?
            .clone();
        match self.offer(ctx, &form.user, &share, &card).await? {
            Received::New | Received::Again => {
                // The share may have been revoked (or its card unbound, its
                // primary erased) between the two writes: that revoke found
                // no invitation to end. It wrote the primary's wallet before
                // looking at the secondary's, and this invitation is written
                // before the primary's is read again, so one of the two sees
                // the other.
                let now_primary = self.load(&form.user).await?;
                if now_primary
                    .wallet
                    .share(&share.id)
                    .is_none_or(|s| s.revoked_at.is_some())
                {
                    self.end_mirror(
                        ctx,
                        &share.secondary,
                        &share.id,
                        "revoked while it was offered",
                    )
                    .await?;
                    return Err(family::share_ended("this share ended while it was made").into());
                }
            }
            Received::Full => {
                // Other shares reached the secondary between the check above
                // and this write: the share, made but never received, ends
                // in the primary's wallet (its `share.revoke` comes with the
                // commit), and the refusal is audited with it.
                let refusal = secondary_full();
                self.change_wallet::<_, ShareError>(ctx, &form.user, None, |w, now| {
                    let by = format!("{} (share limit reached)", ctx.actor.subject);
                    // Once: a concurrent attempt of the same request may
                    // have ended it already.
                    if w.revoke_share(&share.id, now, &by) != Ok(true) {
                        return Decided::new(Ok(()), Vec::new());
                    }
                    let e = ctx
                        .event(now, AuditAction::ShareCreate)
                        .user(&form.user)
                        .binding(&form.card)
                        .refused(refusal.code)
                        .detail(format!("share {}: {}", share.id, refusal.message))
                        .build();
                    Decided::new(Ok(()), vec![e])
                })
                .await?;
                return Err(refusal.into());
            }
        }
        Ok(Shared {
            view: ShareView {
                standing: share.standing(Some(&card), self.now()),
                share,
            },
            created: matches!(given, Given::New(_)),
        })
    }

    /// A refused share that changed nothing, in the primary's chain.
    async fn audit_refused_share(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        card: &BindingId,
        code: cardbind_domain::ErrorCode,
    ) {
        let r = self
            .change_wallet::<_, ShareError>(ctx, user, None, |_, now| {
                let e = ctx
                    .event(now, AuditAction::ShareCreate)
                    .user(user)
                    .binding(card)
                    .refused(code)
                    .build();
                Decided::new(Ok(()), vec![e])
            })
            .await;
        if let Err(e) = r {
            tracing::error!(%user, error = %e, "refused share not audited");
        }
    }

    /// The second write of a share: its invitation in the secondary's
    /// wallet (idempotent), unless they have no room for it.
    async fn offer(
        &self,
        ctx: &RequestContext,
        primary: &UserId,
        share: &Share,
        card: &Binding,
    ) -> Result<Received, StoreError> {
        let mirror = SharedIn {
            share: share.id.clone(),
            primary: primary.clone(),
            primary_card: share.card.clone(),
            card: card.card.clone(),
            channel: card.channel.clone(),
            expires_at: share.terms.expires_at,
            invited_at: share.created_at,
            consent: None,
            ended_at: None,
            ended_by: None,
        };
        self.change_wallet::<_, StoreError>(ctx, &share.secondary, None, |w, now| {
            let received = w.receive_share(mirror.clone(), now);
            if received == Received::New {
                let e = ctx
                    .event(now, AuditAction::ShareInvite)
                    .user(&share.secondary)
                    .binding(&share.id.card_id())
                    .detail(format!("share {} offered", share.id))
                    .build();
                Decided::new(Ok(received), vec![e])
            } else {
                Decided::new(Ok(received), Vec::new())
            }
        })
        .await
        .map(|(received, _)| received)
    }

    /// The shares of one of the user's cards (live and the most recent
    /// ended ones), newest first.
    pub async fn list_card_shares(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        card: &BindingId,
    ) -> Result<Vec<ShareView>, ShareReadError> {
        self.authorize(ctx, Action::ReadCards, Some(user)).await?;
        let w = self.load(user).await?.wallet;
        let b = w.get(card)?;
        let now = self.now();
        let mut out: Vec<ShareView> = w
            .shares()
            .iter()
            .filter(|s| &s.card == card)
            .map(|s| ShareView {
                standing: s.standing(Some(b), now),
                share: s.clone(),
            })
            .collect();
        out.sort_by(|a, b| {
            (b.share.created_at, &b.share.id).cmp(&(a.share.created_at, &a.share.id))
        });
        Ok(out)
    }

    /// The primary (or an operator) revokes a share of one of their cards.
    /// Revoking twice is harmless, and completes a revoke whose second
    /// write was interrupted.
    pub async fn revoke_share(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        card: &BindingId,
        id: &ShareId,
    ) -> Result<ShareView, EndShareError> {
        self.authorize(ctx, Action::RevokeShare, Some(user)).await?;
        let ((), after) = self
            .change_wallet::<_, EndShareError>(ctx, user, None, |w, now| {
                match w.share(id).filter(|s| &s.card == card) {
                    None => Decided::new(Err(family::no_such_share().into()), Vec::new()),
                    Some(_) => {
                        // The `share.revoke` event comes with the commit.
                        let r = w.revoke_share(id, now, &ctx.actor.subject);
                        Decided::new(r.map(|_| ()).map_err(Into::into), Vec::new())
                    }
                }
            })
            .await?;
        let share = after
            .wallet
            .share(id)
            .cloned()
            .ok_or_else(|| Internal::new("a revoked share is not in its wallet"))?;
        self.end_mirror(ctx, &share.secondary, id, "revoked by the card holder")
            .await?;
        let b = after.wallet.get(card).ok();
        Ok(ShareView {
            standing: share.standing(b, self.now()),
            share,
        })
    }

    /// Ends a share in the secondary's wallet (idempotent).
    pub(crate) async fn end_mirror(
        &self,
        ctx: &RequestContext,
        secondary: &UserId,
        id: &ShareId,
        why: &str,
    ) -> Result<(), StoreError> {
        self.change_wallet::<_, StoreError>(ctx, secondary, None, |w, now| {
            // The other user's consent says the holder's side ended it,
            // never who (the holder's user id, an operator): their audit
            // event names the actor.
            if w.end_shared_in(id, now, ENDED_BY_THE_HOLDER) {
                let e = ctx
                    .event(now, AuditAction::ShareRevoke)
                    .user(secondary)
                    .binding(&id.card_id())
                    .detail(format!("share {id} ended: {why}"))
                    .build();
                Decided::new(Ok(()), vec![e])
            } else {
                Decided::new(Ok(()), Vec::new())
            }
        })
        .await
        .map(|_| ())
    }

    /// After a change of the primary's wallet that ended shares (an unbind
    /// by anyone, the channel's end of the card's agreement): their
    /// mirrors end too. Best effort: a
    /// failure is logged (no read ever shows a share its primary ended; the
    /// mirror is ended by the next revoke, leave or erasure).
    pub(crate) async fn end_mirrors_since(
        &self,
        ctx: &RequestContext,
        primary: &Wallet,
        since: Timestamp,
    ) {
        self.end_mirrors_where(ctx, primary, "its card was unbound", |s| {
            s.revoked_at.is_some_and(|t| t >= since)
        })
        .await;
    }

    /// The mirrors of every ended share of `card` (or of every card): a
    /// repeated unbind or erasure completes what the first one may have
    /// left when it stopped between the two wallets' writes.
    pub(crate) async fn end_mirrors_of_ended(
        &self,
        ctx: &RequestContext,
        primary: &Wallet,
        card: Option<&BindingId>,
        why: &str,
    ) {
        self.end_mirrors_where(ctx, primary, why, |s| {
            s.revoked_at.is_some() && card.is_none_or(|c| &s.card == c)
        })
        .await;
    }

    async fn end_mirrors_where(
        &self,
        ctx: &RequestContext,
        primary: &Wallet,
        why: &str,
        ended: impl Fn(&Share) -> bool,
    ) {
        for s in primary.shares().iter().filter(|s| ended(s)) {
            if let Err(e) = self.end_mirror(ctx, &s.secondary, &s.id, why).await {
                tracing::warn!(share = %s.id, error = %e, "the secondary's mirror of an ended share is not ended yet");
            }
        }
    }

    /// Before a user's erasure: every share made to them is revoked in its
    /// primary's wallet (the truth first); the erasure then ends the
    /// mirrors with the rest of the wallet.
    pub(crate) async fn revoke_shares_made_to(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        w: &Wallet,
    ) -> Result<(), StoreError> {
        for m in w.shared_in().iter().filter(|m| !m.is_ended()) {
            self.change_wallet::<_, StoreError>(ctx, &m.primary, None, |pw, now| {
                // (One that expired ended then, and stays expired.)
                if pw
                    .share(&m.share)
                    .is_some_and(|s| &s.secondary == user && s.is_live(now))
                {
                    let _ =
                        pw.revoke_share(&m.share, now, &format!("{} (erasure)", ctx.actor.subject));
                }
                Decided::new(Ok(()), Vec::new())
            })
            .await?;
        }
        Ok(())
    }
}
