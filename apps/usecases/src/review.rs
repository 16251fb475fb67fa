//! The manual review queue: cards whose channel could not be reached (or
//! could not take them) wait here for an operator, who approves, rejects or
//! sends them back to the channel.

use cardbind_domain::{Action, BindingId, BindingStatus, Clash, ConflictCode, UserId};
use cardbind_ports::audit::{AuditAction, AuditFilter};
use cardbind_ports::channel::ChannelBindRequest;
use cardbind_ports::store::ChannelRefEntry;

use crate::bind::{view, Start};
use crate::context::RequestContext;
use crate::error::{card_data_unreadable, channel_not_enabled, op_error, Internal};
use crate::manage::status_change;
use crate::sealing::OpenFailure;
use crate::tx::{Decided, Loaded};
use crate::{page_size, CardPage, CardView, UseCases};

op_error! {
    /// Why a review decision was refused.
    pub enum ReviewError { Forbidden, NotFound, Conflict, Unavailable }
    from Store, State
}

op_error! {
    /// Why listing the review queue was refused.
    pub enum QueueError { Forbidden, Unavailable }
    from StoreRead
}

op_error! {
    /// Why a retry at the channel was refused.
    pub enum RetryError { BadRequest, Forbidden, NotFound, Conflict, Unprocessable, Unavailable }
    from Store, Keys, State
}

/// The most entries one page lists.
pub const MAX_REVIEW_PAGE: u32 = 100;

impl UseCases {
    /// Cards waiting for review, by id, a page of `limit` after `after`.
    /// Entries whose card has left review meanwhile are skipped and
    /// removed.
    pub async fn list_reviews(
        &self,
        ctx: &RequestContext,
        after: Option<BindingId>,
        limit: u32,
    ) -> Result<CardPage, QueueError> {
        self.authorize(ctx, Action::ReviewQueue, None).await?;
        let size = page_size(limit, MAX_REVIEW_PAGE);
        let entries = self.ports.review.list(after, size as u32).await?;
        let next = (entries.len() == size)
            .then(|| entries.last().map(|e| e.binding.clone()))
            .flatten();
        let mut cards = Vec::with_capacity(entries.len());
        for entry in entries {
            let loaded = self.load(&entry.user).await?;
            match view(&loaded.wallet, &entry.binding) {
                Ok(v) if v.binding.status == BindingStatus::PendingReview => cards.push(v),
                _ => {
                    // Only an entry of a stint in review before this read:
                    // the card may be queued again since.
                    let upto = loaded.link();
                    if let Err(e) = self.ports.review.remove(&entry.binding, upto).await {
                        tracing::warn!(binding = %entry.binding, error = %e, "stale review entry not removed");
                    }
                }
            }
        }
        Ok(CardPage { cards, next })
    }

    /// One page of the review queue's index, for monitoring (no actor: the
    /// metrics endpoint counts the queue): how many entries, and the last
    /// one's id to continue after. Entries of cards that left review are
    /// counted until a reader of the queue removes them.
    pub async fn review_queue_page(
        &self,
        after: Option<BindingId>,
        limit: u32,
    ) -> Result<(usize, Option<BindingId>), cardbind_ports::StoreError> {
        let entries = self.ports.review.list(after, limit).await?;
        Ok((entries.len(), entries.last().map(|e| e.binding.clone())))
    }

    /// The user whose card this is, for operations that name only the card.
    async fn owner_of(&self, id: &BindingId) -> Result<UserId, ReviewError> {
        if let Some(e) = self.ports.review.get(id).await? {
            return Ok(e.user);
        }
        // A card whose review entry was not written (or was removed by a
        // decision): its data names it, else the audit log does (every card
        // has events naming its user, kept at least six months).
        if let Some(u) = self.ports.card_data.owner(id).await? {
            return Ok(u);
        }
        let filter = AuditFilter {
            binding_id: Some(id.clone()),
            ..AuditFilter::default()
        };
        let first = self.ports.audit.list(&filter, None, 1).await?;
        match first.into_iter().next().and_then(|r| r.event.user_id) {
            Some(u) => Ok(u),
            None => Err(cardbind_domain::Missing::card().into()),
        }
    }

    /// An operator approves a card in review: it becomes active (with the
    /// channel's reference, when the operator learned it). A reference
    /// that names another card's agreement (a live card holds it) is
    /// refused: the notifications and the unbind of this card would reach
    /// that card's agreement. The reference is recorded for this card
    /// before the change, so of two approvals naming it at once one is
    /// refused; an approval whose change then fails keeps it for the card
    /// while the card is in review ([`Self::let_go_of_ref`]).
    pub async fn approve_review(
        &self,
        ctx: &RequestContext,
        id: &BindingId,
        channel_ref: Option<String>,
    ) -> Result<CardView, ReviewError> {
        self.authorize(ctx, Action::ReviewQueue, None).await?;
        let user = self.owner_of(id).await?;
        let reserved = match &channel_ref {
            Some(r) => Some(self.reserve_ref(&user, id, r).await?),
            None => None,
        };
        let changed = self
            .change_wallet::<_, ReviewError>(ctx, &user, None, |w, now| {
                status_change(ctx, w, id, AuditAction::ReviewApprove, now, |b| {
                    // The reference was recorded for the bind the operator
                    // reviewed: a card bound again since (the record went
                    // with the earlier bind) is reviewed again.
                    if let Some(entry) = &reserved {
                        if entry.generation != Some(b.data_generation) {
                            return Err(Clash::new(
                                ConflictCode::Conflict,
                                "the card was bound again since this approval began: review it again",
                            ));
                        }
                    }
                    b.approve(channel_ref.clone(), now)
                })
            })
            .await;
        let ((), after) = match changed {
            Ok(c) => c,
            Err(e) => {
                if let Some(entry) = reserved {
                    self.let_go_of_ref(&user, entry).await;
                }
                return Err(e);
            }
        };
        let b = self.view_as_read(&after, id).await?;
        self.unqueue(id, &after).await;
        Ok(b)
    }

    /// Records `channel_ref` for this card in review unless another live
    /// card on that channel holds it (refused), as a signing records the
    /// agreement it names ([`Self::claim_agreement`]): one recorded for a
    /// card that ended (its delete at the card's end failed) is forgotten
    /// first, only while it is as read. Returns the entry, for
    /// [`Self::let_go_of_ref`] should the approval's change fail.
    async fn reserve_ref(
        &self,
        user: &UserId,
        id: &BindingId,
        channel_ref: &str,
    ) -> Result<ChannelRefEntry, ReviewError> {
        let loaded = self.load(user).await?;
        let card = loaded.wallet.get(id)?;
        card.ensure_in_review()?;
        self.claim_agreement(&card.channel, channel_ref, user, id, card.data_generation)
            .await?
            .ok_or_else(|| reference_taken().into())
    }

    /// An operator rejects a card in review: it fails.
    pub async fn reject_review(
        &self,
        ctx: &RequestContext,
        id: &BindingId,
    ) -> Result<CardView, ReviewError> {
        self.authorize(ctx, Action::ReviewQueue, None).await?;
        let user = self.owner_of(id).await?;
        let ((), after) = self
            .change_wallet::<_, ReviewError>(ctx, &user, None, |w, now| {
                status_change(ctx, w, id, AuditAction::ReviewReject, now, |b| {
                    b.reject(now)
                })
            })
            .await?;
        self.unqueue(id, &after).await;
        let b = self.view_as_read(&after, id).await?;
        self.drop_card_data(&user, id, b.binding.data_generation)
            .await;
        Ok(b)
    }

    /// Removes the card's entry of the review the change written as
    /// `after` ended (one queued since stays).
    async fn unqueue(&self, id: &BindingId, after: &Loaded) {
        if let Err(e) = self.ports.review.remove(id, after.link()).await {
            tracing::warn!(binding = %id, error = %e, "review entry not removed");
        }
    }

    /// An operator sends a card in review back to its channel (once the
    /// channel is back or its configuration fixed). The card data is opened
    /// from its sealed fields — each opening audited — and the card goes
    /// back to `pending_verification` and through the channel as a new
    /// bind would. Sealed data that does not open (tampered, moved, erased)
    /// is `card_data_unreadable` and the card stays in review.
    pub async fn retry_review(
        &self,
        ctx: &RequestContext,
        id: &BindingId,
    ) -> Result<CardView, RetryError> {
        self.authorize(ctx, Action::ReviewQueue, None).await?;
        let user = self.owner_of(id).await.map_err(|e| match e {
            ReviewError::Forbidden(x) => RetryError::Forbidden(x),
            ReviewError::NotFound(x) => RetryError::NotFound(x),
            ReviewError::Conflict(x) => RetryError::Conflict(x),
            ReviewError::Unavailable(x) => RetryError::Unavailable(x),
            ReviewError::Internal(x) => RetryError::Internal(x),
        })?;
        let loaded = self.load(&user).await?;
        let b = loaded.wallet.get(id)?.clone();
        // Before any card data is opened.
        b.ensure_in_review()?;
        let channel = self.channel(&b.channel).ok_or_else(channel_not_enabled)?;
        let data = self
            .ports
            .card_data
            .get(&user, id, b.data_generation)
            .await?
            .ok_or_else(|| Internal::new("a card in review without its data"))?;
        let (opened, open_events) = self
            .open_card(ctx, &user, id, b.card.brand, &data.sealed)
            .await;
        let details = match opened {
            Ok(d) => d,
            Err(f) => {
                // The openings are audited even though nothing changes.
                self.commit(ctx, &loaded, &loaded.wallet, open_events)
                    .await?;
                return Err(match f {
                    OpenFailure::Unavailable(e) => e.into(),
                    OpenFailure::Unreadable => card_data_unreadable().into(),
                });
            }
        };
        let request = ChannelBindRequest {
            binding_id: id.clone(),
            attempt: b.data_generation,
            user_id: user.clone(),
            card: details.card,
            expiry: b.card.expiry,
            cvv: None,
            holder_name: details.holder_name,
            id_number: details.id_number,
            phone: details.phone,
            currency: b.card.currency(),
        };
        let ((), after) = self
            .change_wallet::<_, RetryError>(ctx, &user, Some(loaded), |w, now| {
                let d: Decided<(), RetryError> =
                    status_change(ctx, w, id, AuditAction::ReviewRetry, now, |card| {
                        // The request carries the data of the bind first
                        // read: a card bound again since (its write raced
                        // this one) is reviewed again, as an approval is.
                        if card.data_generation != b.data_generation {
                            return Err(Clash::new(
                                ConflictCode::Conflict,
                                "the card was bound again since this retry began: review it again",
                            ));
                        }
                        card.requeue(now, &self.policy.verification)
                    });
                let mut events = open_events.clone();
                events.extend(d.events);
                Decided::new(d.answer, events)
            })
            .await?;
        self.unqueue(id, &after).await;
        let start = Start {
            user: &user,
            id,
            channel_name: &b.channel,
            channel,
            request: &request,
            generation: b.data_generation,
        };
        self.start_at_channel(ctx, start, Some(after)).await
    }
}

/// Another live card on the channel holds the reference.
fn reference_taken() -> Clash {
    Clash::new(
        ConflictCode::Conflict,
        "this channel reference names another card's agreement",
    )
}
