//! The secondary's side: their wallet read with the primaries' wallets
//! (the truth), the shares made to them, accepting, leaving, and a shared
//! card as their default.

use std::collections::HashMap;

use cardbind_domain::{
    family, Action, Binding, BindingId, ConsentGiven, Role, Share, ShareId, SharedIn, Standing,
    Timestamp, UserId, Wallet,
};
use cardbind_ports::audit::AuditAction;
use cardbind_ports::StoreError;

use super::{shared_card_not_active, AcceptError, EndShareError, SharedCardView, SharedStatus};
use crate::context::RequestContext;
use crate::error::Internal;
use crate::tx::{Decided, Loaded};
use crate::UseCases;

/// A secondary's wallet with the wallets of the primaries whose cards it
/// mirrors, read together (two round trips whatever their number).
pub(crate) struct Household {
    pub(crate) loaded: Loaded,
    primaries: HashMap<UserId, Wallet>,
}

impl Household {
    fn wallet(&self) -> &Wallet {
        &self.loaded.wallet
    }

    /// The share a mirror names, from its primary's wallet, with the card
    /// it shares, when it is one made to this user.
    fn share_of(&self, m: &SharedIn) -> Option<(&Share, Option<&Binding>)> {
        let p = self.primaries.get(&m.primary)?;
        let s = p
            .share(&m.share)
            .filter(|s| &s.secondary == self.wallet().user() && s.card == m.primary_card)?;
        Some((s, p.get(&s.card).ok()))
    }

    /// The domain's rule, with the primary's wallet as read.
    pub(crate) fn usable(&self, m: &SharedIn, now: Timestamp) -> bool {
        self.share_of(m)
            .is_some_and(|(s, card)| family::usable(s, card, m, now))
    }

    /// How the reader sees a mirror now.
    fn view(&self, m: &SharedIn, now: Timestamp) -> SharedCardView {
        let share = self.share_of(m);
        let status = match share {
            _ if m.is_ended() => SharedStatus::Ended,
            Some((s, card)) if family::usable(s, card, m, now) => SharedStatus::Accepted,
            Some((s, card)) if !m.is_accepted() && family::offerable(s, card, now) => {
                SharedStatus::Invited
            }
            _ => SharedStatus::Ended,
        };
        let default = self
            .wallet()
            .effective_default_with(|x| self.usable(x, now))
            .cloned();
        SharedCardView {
            user: self.wallet().user().clone(),
            mirror: m.clone(),
            terms: share.map(|(s, _)| s.terms),
            status,
            is_default: default == Some(m.card_id()),
        }
    }

    /// The default as the reader sees it now.
    pub(crate) fn default(&self, now: Timestamp) -> Option<BindingId> {
        self.wallet()
            .effective_default_with(|m| self.usable(m, now))
            .cloned()
    }

    /// The shared cards the user may use now, as listed among their cards.
    pub(crate) fn usable_cards(&self, now: Timestamp) -> Vec<SharedCardView> {
        self.wallet()
            .shared_in()
            .iter()
            .filter(|m| self.usable(m, now))
            .map(|m| self.view(m, now))
            .collect()
    }
}

impl UseCases {
    /// The user's wallet and the wallets of the primaries of the shares
    /// they hold that are open (two round trips at most, one when there is
    /// none).
    pub(crate) async fn household(&self, user: &UserId) -> Result<Household, StoreError> {
        let loaded = self.load(user).await?;
        self.household_of(loaded).await
    }

    /// The user's default as reads show it ([`Household::default`]), the
    /// sharers' wallets read only when the user holds a shared card.
    pub(crate) async fn default_as_read(
        &self,
        loaded: &Loaded,
    ) -> Result<Option<cardbind_domain::BindingId>, StoreError> {
        if loaded.wallet.shared_in().is_empty() {
            return Ok(loaded.wallet.effective_default().cloned());
        }
        let h = self.household_of(loaded.clone()).await?;
        Ok(h.default(self.now()))
    }

    pub(crate) async fn household_of(&self, loaded: Loaded) -> Result<Household, StoreError> {
        let now = self.now();
        let mut wanted: Vec<UserId> = loaded
            .wallet
            .shared_in()
            .iter()
            .filter(|m| m.is_open(now))
            .map(|m| m.primary.clone())
            .collect();
        wanted.sort();
        wanted.dedup();
        let primaries = if wanted.is_empty() {
            HashMap::new()
        } else {
            self.ports
                .wallets
                .load_many(&wanted)
                .await?
                .into_iter()
                .map(|s| (s.wallet.user().clone(), s.wallet))
                .collect()
        };
        Ok(Household { loaded, primaries })
    }

    /// The shares made to the user that they may still act on: invitations
    /// to accept and accepted shares usable now (never one its primary
    /// revoked, froze or unbound, or that expired), in share id order.
    pub async fn list_shared_cards(
        &self,
        ctx: &RequestContext,
        user: &UserId,
    ) -> Result<Vec<SharedCardView>, crate::manage::ListError> {
        self.authorize(ctx, Action::ReadCards, Some(user)).await?;
        let h = self.household(user).await?;
        let now = self.now();
        let mut out: Vec<SharedCardView> = h
            .wallet()
            .shared_in()
            .iter()
            .map(|m| h.view(m, now))
            .filter(|v| v.status != SharedStatus::Ended)
            .collect();
        out.sort_by(|a, b| a.mirror.share.cmp(&b.mirror.share));
        Ok(out)
    }

    /// The secondary accepts a share made to them, with their consent: see
    /// the module docs for the order of writes. Accepting twice is
    /// harmless (the first consent stays).
    pub async fn accept_share(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        id: &ShareId,
        consent: ConsentGiven,
    ) -> Result<SharedCardView, AcceptError> {
        self.authorize(ctx, Action::AcceptShare, Some(user)).await?;
        let h = self.household(user).await?;
        let now = self.now();
        let m = h
            .wallet()
            .mirror(id)
            .cloned()
            .ok_or_else(family::no_such_share)?;
        if m.is_ended() {
            return Err(family::share_ended("this share has ended").into());
        }
        let (share, card) = h
            .share_of(&m)
            .ok_or_else(|| family::share_ended("this share has ended"))?;
        match share.standing(card, now) {
            Standing::Invited | Standing::Active => {}
            Standing::Suspended => return Err(shared_card_not_active().into()),
            Standing::Expired => return Err(family::share_ended("this share has expired").into()),
            Standing::Revoked => return Err(family::share_ended("this share has ended").into()),
        }
        let consent = consent.accept(m.channel.clone(), now)?;
        let ((), after) = self
            .change_wallet::<_, AcceptError>(ctx, user, Some(h.loaded), |w, now| {
                match w.accept_share(id, consent.clone(), now) {
                    Ok(true) => {
                        let e = ctx
                            .event(now, AuditAction::ShareAccept)
                            .user(user)
                            .binding(&id.card_id())
                            .detail(format!("share {id} accepted"))
                            .build();
                        Decided::new(Ok(()), vec![e])
                    }
                    Ok(false) => Decided::new(Ok(()), Vec::new()),
                    Err(r) => Decided::new(Err(r.into()), Vec::new()),
                }
            })
            .await?;
        // The primary's listing learns of it (idempotent).
        self.change_wallet::<_, AcceptError>(ctx, &m.primary, None, |w, now| {
            if w.note_share_accepted(id, now) {
                let card = w.share(id).map(|s| s.card.clone());
                let mut e = ctx
                    .event(now, AuditAction::ShareAccept)
                    .user(&m.primary)
                    .detail(format!("share {id} accepted by the user it was made to"));
                if let Some(c) = &card {
                    e = e.binding(c);
                }
                Decided::new(Ok(()), vec![e.build()])
            } else {
                Decided::new(Ok(()), Vec::new())
            }
        })
        .await?;
        let h = self.household_of(after).await?;
        let m = h
            .wallet()
            .mirror(id)
            .ok_or_else(|| Internal::new("an accepted share is not in its wallet"))?;
        // Revoked while it was accepted (the revoke ends this mirror after
        // it): the acceptance came too late to use it.
        let share = h.share_of(m);
        let revoked = m.is_ended() || share.is_none_or(|(s, _)| s.revoked_at.is_some());
        if revoked {
            return Err(family::share_ended("this share has ended").into());
        }
        // Its card frozen meanwhile: as a share of a frozen card is
        // refused before the writes (the acceptance stays recorded, and
        // holds once the card is unfrozen), not an answer of `ended`.
        if share.is_some_and(|(s, card)| s.standing(card, self.now()) == Standing::Suspended) {
            return Err(cardbind_domain::Clash::transition(
                "the shared card was frozen by its holder's operator while this acceptance was \
                 written: the acceptance is recorded, and the card is usable once unfrozen",
            )
            .into());
        }
        Ok(h.view(m, self.now()))
    }

    /// The secondary declines or leaves a share (an operator may end it for
    /// them): revoked in the primary's wallet first, then ended in theirs.
    /// Leaving twice is harmless.
    pub async fn leave_share(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        id: &ShareId,
    ) -> Result<SharedCardView, EndShareError> {
        self.authorize(ctx, Action::RevokeShare, Some(user)).await?;
        let mine = self.load(user).await?;
        let m = mine
            .wallet
            .mirror(id)
            .cloned()
            .ok_or_else(family::no_such_share)?;
        let (terms, _) = self
            .change_wallet::<_, EndShareError>(ctx, &m.primary, None, |w, now| {
                let terms = w
                    .share(id)
                    .filter(|s| &s.secondary == user)
                    .map(|s| s.terms);
                if terms.is_some() {
                    // The `share.revoke` event comes with the commit.
                    // Who ended it, as the holder's records show it: the
                    // user it was made to, or whoever acted for them.
                    let by = match ctx.actor.role {
                        Role::User => format!("{} (the user it was made to)", ctx.actor.subject),
                        Role::Admin => format!("{} (an operator, for {user})", ctx.actor.subject),
                        Role::Service | Role::Auditor => {
                            format!(
                                "{} (for {user}, the user it was made to)",
                                ctx.actor.subject
                            )
                        }
                    };
                    let _ = w.revoke_share(id, now, &by);
                }
                Decided::new(Ok(terms), Vec::new())
            })
            .await?;
        let (_, after) = self
            .change_wallet::<_, EndShareError>(ctx, user, None, |w, now| {
                let accepted = w.mirror(id).is_some_and(SharedIn::is_accepted);
                if w.end_shared_in(id, now, &ctx.actor.subject) {
                    let e = ctx
                        .event(now, AuditAction::ShareLeave)
                        .user(user)
                        .binding(&id.card_id())
                        .detail(format!(
                            "share {id} {}",
                            if accepted { "left" } else { "declined" }
                        ))
                        .build();
                    Decided::new(Ok(()), vec![e])
                } else {
                    Decided::new(Ok(()), Vec::new())
                }
            })
            .await?;
        let m = after
            .wallet
            .mirror(id)
            .cloned()
            .ok_or_else(|| Internal::new("a share left is not in its wallet"))?;
        Ok(SharedCardView {
            user: user.clone(),
            mirror: m,
            terms,
            status: SharedStatus::Ended,
            is_default: false,
        })
    }

    /// A shared card by its id in the secondary's list, when it is usable.
    pub(crate) fn shared_card(
        h: &Household,
        id: &ShareId,
        now: Timestamp,
    ) -> Option<SharedCardView> {
        h.wallet()
            .mirror(id)
            .filter(|m| h.usable(m, now))
            .map(|m| h.view(m, now))
    }

    /// Makes a shared card the secondary's default.
    pub(crate) async fn set_default_shared(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        id: &ShareId,
        stepped_up: Option<cardbind_ports::audit::AuditEvent>,
    ) -> Result<SharedCardView, crate::manage::ChangeError> {
        let h = self.household(user).await?;
        let now = self.now();
        let m = h
            .wallet()
            .mirror(id)
            .cloned()
            .ok_or_else(cardbind_domain::Missing::card)?;
        if !h.usable(&m, now) {
            let ended = m.is_ended()
                || !m.is_accepted()
                || h.share_of(&m)
                    .is_none_or(|(s, c)| !matches!(s.standing(c, now), Standing::Suspended));
            return Err(if ended {
                family::share_ended("this shared card cannot be used").into()
            } else {
                shared_card_not_active().into()
            });
        }
        let Household { loaded, primaries } = h;
        let ((), after) = self
            .change_wallet::<_, crate::manage::ChangeError>(ctx, user, Some(loaded), |w, now| {
                match w.set_default_shared(id) {
                    Ok(_) => {
                        let e = ctx
                            .event(now, AuditAction::BindingSetDefault)
                            .user(user)
                            .binding(&id.card_id())
                            .detail("a card shared with the user")
                            .build();
                        Decided::new(Ok(()), stepped_up.iter().cloned().chain([e]).collect())
                    }
                    Err(r) => Decided::new(Err(r.into()), Vec::new()),
                }
            })
            .await?;
        let h = Household {
            loaded: after,
            primaries,
        };
        let m = h
            .wallet()
            .mirror(id)
            .ok_or_else(|| Internal::new("a shared card is not in its wallet"))?;
        Ok(h.view(m, self.now()))
    }
}
