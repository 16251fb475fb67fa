//! Reading a user's cards and managing them: the default, unbinding,
//! freezing.
//!
//! A user's list holds their own cards and the cards shared with them that
//! they may use now (family cards, [`crate::family`]): reading it reads
//! their wallet and, together, the wallets of those who shared a card with
//! them (two round trips whatever the number), since the sharer's wallet
//! is the truth.

use std::sync::Mutex;

use cardbind_domain::{
    Action, Binding, BindingId, BindingStatus, Clash, Currency, ShareId, Timestamp, UserId, Wallet,
};
use cardbind_ports::audit::{AuditAction, AuditEvent};
use cardbind_ports::step_up::StepUpAction;

use crate::access::SteppedUp;
use crate::context::RequestContext;
use crate::error::op_error;
use crate::family::Household;
use crate::forget::Forget;
use crate::tx::{until_settled, Decided, Loaded, Raced};
use crate::{page_size, CardView, Listed, UseCases, WalletPage};

op_error! {
    /// Why reading cards was refused.
    pub enum ReadError { Forbidden, NotFound, Unavailable }
    from StoreRead
}

op_error! {
    /// Why listing cards was refused.
    pub enum ListError { Forbidden, Unavailable }
    from StoreRead
}

op_error! {
    /// Why a change of a card was refused.
    pub enum ChangeError { Forbidden, NotFound, Conflict, Unavailable }
    from Store, State
}

/// The most cards one page lists.
pub const MAX_PAGE: u32 = 100;

/// What a listing of a user's cards asks for.
#[derive(Clone, Debug, Default)]
pub struct CardQuery {
    /// The last card id of the previous page.
    pub after: Option<BindingId>,
    /// Page size (clamped to 1–100).
    pub limit: u32,
    /// Only cards in this currency (cards whose currency is not known are
    /// left out).
    pub currency: Option<Currency>,
}

impl CardQuery {
    /// A page of every card.
    pub fn page(after: Option<BindingId>, limit: u32) -> CardQuery {
        CardQuery {
            after,
            limit,
            currency: None,
        }
    }
}

impl UseCases {
    /// One card of the user's list: one of their own, or a card shared
    /// with them that they may use now (`not_found` otherwise).
    pub async fn get_card(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        id: &BindingId,
    ) -> Result<Listed, ReadError> {
        self.authorize(ctx, Action::ReadCards, Some(user)).await?;
        let h = self.household(user).await?;
        let now = self.now();
        if let Some(share) = ShareId::of_card_id(id) {
            return UseCases::shared_card(&h, &share, now)
                .map(Listed::Shared)
                .ok_or_else(|| cardbind_domain::Missing::card().into());
        }
        let default = h.default(now);
        let b = h.loaded.wallet.get(id)?;
        Ok(Listed::Own(CardView {
            is_default: default.as_ref() == Some(id),
            binding: b.clone(),
        }))
    }

    /// A user's cards in id order (ids are time-ordered; cards shared with
    /// the user come after their own), a page of `limit` (1–100) after
    /// `after`, only those in `currency` when it is given.
    pub async fn list_cards(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        query: CardQuery,
    ) -> Result<WalletPage, ListError> {
        self.authorize(ctx, Action::ReadCards, Some(user)).await?;
        let h = self.household(user).await?;
        Ok(page(
            &h,
            self.now(),
            &query,
            page_size(query.limit, MAX_PAGE),
        ))
    }

    /// Makes a card the user's default (last writer wins; there is never
    /// more than one default): one of their own active cards, or a card
    /// shared with them that they accepted and may use now. With step-up
    /// enabled, moving the default off the card the user reads as their
    /// default needs a step-up token: otherwise a stolen bearer token
    /// could move it, then unbind the old default without one.
    pub async fn set_default(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        id: &BindingId,
        step_up_token: Option<&str>,
    ) -> Result<Listed, ChangeError> {
        self.authorize(ctx, Action::SetDefault, Some(user)).await?;
        let mut stepped_up = None;
        if self.step_up_enabled() {
            let loaded = self.load(user).await?;
            let moved_off = self.default_as_read(&loaded).await?;
            if moved_off.as_ref().is_some_and(|d| d != id) {
                stepped_up = self
                    .require_step_up::<ChangeError>(
                        ctx,
                        &loaded,
                        moved_off.as_ref(),
                        StepUpAction::ChangeDefaultCard,
                        step_up_token,
                        &SteppedUp::default(),
                    )
                    .await?;
            }
        }
        if let Some(share) = ShareId::of_card_id(id) {
            return self
                .set_default_shared(ctx, user, &share, stepped_up)
                .await
                .map(Listed::Shared);
        }
        let ((), after) = self
            .change_wallet::<_, ChangeError>(ctx, user, None, |w, now| {
                let e = ctx
                    .event(now, AuditAction::BindingSetDefault)
                    .user(user)
                    .binding(id);
                match w.set_default(id) {
                    Ok(_) => Decided::new(
                        Ok(()),
                        stepped_up.iter().cloned().chain([e.build()]).collect(),
                    ),
                    Err(r) => Decided::new(Err(r.into()), Vec::new()),
                }
            })
            .await?;
        Ok(Listed::Own(self.view_as_read(&after, id).await?))
    }

    pub async fn freeze(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        id: &BindingId,
    ) -> Result<CardView, ChangeError> {
        self.operator_change(ctx, user, id, AuditAction::BindingFreeze, |b, now| {
            b.freeze(now)
        })
        .await
    }

    pub async fn unfreeze(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        id: &BindingId,
    ) -> Result<CardView, ChangeError> {
        self.operator_change(ctx, user, id, AuditAction::BindingUnfreeze, |b, now| {
            b.unfreeze(now)
        })
        .await
    }

    async fn operator_change(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        id: &BindingId,
        action: AuditAction,
        change: impl Fn(&mut Binding, Timestamp) -> Result<(), Clash> + Send + Sync,
    ) -> Result<CardView, ChangeError> {
        self.authorize(ctx, Action::Freeze, Some(user)).await?;
        let ((), after) = self
            .change_wallet::<_, ChangeError>(ctx, user, None, |w, now| {
                status_change(ctx, w, id, action, now, |b| change(b, now))
            })
            .await?;
        Ok(self.view_as_read(&after, id).await?)
    }

    /// Unbinds a card: here always, and at the channel when it holds an
    /// agreement (a channel that cannot be reached does not stop the
    /// unbind; it is audited for follow-up). With step-up enabled,
    /// unbinding the user's current default card needs a step-up token.
    pub async fn unbind(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        id: &BindingId,
        step_up_token: Option<&str>,
    ) -> Result<CardView, ChangeError> {
        self.authorize(ctx, Action::Unbind, Some(user)).await?;
        // Work done once, whatever the number of races: the step-up check
        // and the channel's unsign.
        let stepped_up = SteppedUp::default();
        let unsigned: Mutex<Option<(Option<String>, Vec<AuditEvent>)>> = Mutex::new(None);
        let (from, after) = until_settled::<_, ChangeError, _, _>(|| async {
            let loaded = self.load(user).await?;
            let b = loaded.wallet.get(id).map_err(Raced::fail)?.clone();
            if b.status == BindingStatus::Inactive {
                return Ok((None, loaded));
            }
            let mut events = Vec::new();
            // The default as every read shows it: a shared default that
            // cannot be used now falls back to one of the user's cards,
            // and that card is the one to protect.
            let needs_step_up =
                self.step_up_enabled() && self.default_as_read(&loaded).await?.as_ref() == Some(id);
            if needs_step_up {
                events.extend(
                    self.require_step_up::<Raced<_>>(
                        ctx,
                        &loaded,
                        Some(id),
                        StepUpAction::UnbindDefaultCard,
                        step_up_token,
                        &stepped_up,
                    )
                    .await?,
                );
            }
            // Once per agreement: a retry that reads an agreement the
            // first attempt did not see (the card's bind stored its
            // channel's answer meanwhile) ends that one too.
            let agreement = b.channel_ref.clone();
            let unsign_now = unsigned
                .lock()
                .map(|u| u.as_ref().is_none_or(|(done, _)| *done != agreement))
                .unwrap_or(true);
            if unsign_now {
                let e = self.unsign_at_channel(ctx, &b).await;
                if let Ok(mut u) = unsigned.lock() {
                    let mut all = u.take().map(|(_, e)| e).unwrap_or_default();
                    all.extend(e);
                    *u = Some((agreement, all));
                }
            }
            events.extend(
                unsigned
                    .lock()
                    .map(|u| u.clone().map(|(_, e)| e).unwrap_or_default())
                    .unwrap_or_default(),
            );
            let mut wallet = loaded.wallet.clone();
            let now = self.now();
            let d = status_change::<ChangeError>(
                ctx,
                &mut wallet,
                id,
                AuditAction::BindingUnbind,
                now,
                |b| b.unbind(now, &ctx.actor.subject).map(|_| ()),
            );
            d.answer.map_err(Raced::Failed)?;
            events.extend(d.events);
            let head = self.commit(ctx, &loaded, &wallet, events).await?;
            Ok((Some(b), Loaded { wallet, head }))
        })
        .await?;
        if let Some(b) = from {
            let link = after.link();
            self.forget_card(user, &b, Forget::TheBind { link }).await;
            // Shares of the card ended with it; so do their mirrors.
            if let Ok(now_b) = after.wallet.get(id) {
                self.end_mirrors_since(ctx, &after.wallet, now_b.updated_at)
                    .await;
            }
        } else {
            // Unbound already: the first unbind may have stopped before
            // ending its shares' mirrors.
            self.end_mirrors_of_ended(ctx, &after.wallet, Some(id), "its card was unbound")
                .await;
        }
        Ok(self.view_as_read(&after, id).await?)
    }

    /// Ends the agreement of a card that holds one. Returns the events to
    /// write with the unbind (a failed unsign is audited).
    pub(crate) async fn unsign_at_channel(
        &self,
        ctx: &RequestContext,
        b: &Binding,
    ) -> Vec<AuditEvent> {
        let holds_agreement = matches!(
            b.status,
            BindingStatus::Active | BindingStatus::Frozen | BindingStatus::PendingVerification
        );
        let (Some(r), true) = (b.channel_ref.as_deref(), holds_agreement) else {
            return Vec::new();
        };
        let Some(channel) = self.channel(&b.channel) else {
            // Its channel was enabled when it was bound, and is not now:
            // nothing here can end the agreement, which may still let the
            // merchant debit the card. Audited, for an operator to end it
            // at the channel (or to enable the channel again).
            tracing::warn!(binding = %b.id, channel = %b.channel, "the card's channel is not enabled; its agreement may still be active there");
            return vec![ctx
                .event(self.now(), AuditAction::BindingChannelUnsign)
                .user(&b.user_id)
                .binding(&b.id)
                .refused(cardbind_domain::ErrorCode::ChannelUnavailable)
                .detail(format!(
                    "agreement may still be active at the channel: channel {} is not enabled",
                    b.channel
                ))
                .build()];
        };
        match channel.unbind(&b.id, Some(b.data_generation), r).await {
            Ok(()) => Vec::new(),
            Err(e) => {
                tracing::warn!(binding = %b.id, error = %e, "channel unsign failed; unbound here");
                vec![ctx
                    .event(self.now(), AuditAction::BindingChannelUnsign)
                    .user(&b.user_id)
                    .binding(&b.id)
                    .refused(cardbind_domain::ErrorCode::ChannelUnavailable)
                    .detail(format!("agreement may still be active at the channel: {e}"))
                    .build()]
            }
        }
    }
}

/// A status change of one card with its audit event (`from -> to`).
pub(crate) fn status_change<E>(
    ctx: &RequestContext,
    w: &mut Wallet,
    id: &BindingId,
    action: AuditAction,
    now: Timestamp,
    change: impl FnOnce(&mut Binding) -> Result<(), Clash>,
) -> Decided<(), E>
where
    E: From<cardbind_domain::Missing> + From<Clash>,
{
    let (from, held, known) = match w.get(id) {
        Ok(b) => (b.status, b.held_since.is_some(), !b.fingerprint.is_erased()),
        Err(m) => return Decided::new(Err(m.into()), Vec::new()),
    };
    let r: Result<(), E> = w.change(id, change);
    if let Err(e) = r {
        return Decided::new(Err(e), Vec::new());
    }
    let (to, held_now, known_now) = w
        .get(id)
        .map(|b| (b.status, b.held_since.is_some(), !b.fingerprint.is_erased()))
        .unwrap_or((from, held, known));
    let e = ctx.event(now, action).user(w.user()).binding(id);
    let e = match (from == to, held && !held_now) {
        (false, _) => e.detail(format!("{from} -> {to}")),
        // The user was erased while the card was held: the erasure's
        // forgetting of the card, kept for the hold, is done now.
        (true, true) if known && !known_now => e.detail(format!(
            "{from}: the operator's hold lifted; the card forgotten, as its user's erasure asked"
        )),
        (true, true) => e.detail(format!("{from}: the operator's hold lifted")),
        (true, false) => e,
    }
    .build();
    Decided::new(Ok(()), vec![e])
}

/// A page of a user's cards (their own, then the shared ones they may use
/// now, all by id), with the default as the reader sees it.
pub(crate) fn page(h: &Household, now: Timestamp, q: &CardQuery, size: usize) -> WalletPage {
    let default = h.default(now);
    let own = h.loaded.wallet.bindings().iter().map(|b| {
        Listed::Own(CardView {
            is_default: default.as_ref() == Some(&b.id),
            binding: b.clone(),
        })
    });
    let mut all: Vec<Listed> = own
        .chain(h.usable_cards(now).into_iter().map(Listed::Shared))
        .filter(|c| q.currency.is_none() || c.currency() == q.currency)
        .filter(|c| q.after.as_ref().is_none_or(|a| &c.id() > a))
        .collect();
    all.sort_by_key(Listed::id);
    all.truncate(size);
    let next = (all.len() == size)
        .then(|| all.last().map(Listed::id))
        .flatten();
    WalletPage { cards: all, next }
}
