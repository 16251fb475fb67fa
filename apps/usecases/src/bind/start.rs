//! Asking the channel to start a binding and writing its answer.

use super::*;

impl UseCases {
    /// Asks the channel to start a binding waiting in
    /// `pending_verification` and writes its answer (step 5–6).
    pub(crate) async fn start_at_channel<E>(
        &self,
        ctx: &RequestContext,
        start: Start<'_>,
        known: Option<Loaded>,
    ) -> Result<CardView, E>
    where
        E: From<StoreError> + From<cardbind_domain::Declined> + From<Internal>,
    {
        let Start {
            user,
            id,
            channel_name,
            channel,
            request,
            generation,
        } = start;
        let (outcome, review_reason) =
            start_outcome(id, channel.start_binding(request).await, &request.phone);
        let refused = match &outcome {
            StartOutcome::Refused { code } => Some(code.clone()),
            _ => None,
        };
        // The reference is stored before the answer: once the answer is
        // written the card no longer waits for its channel, so nothing would
        // store the reference again (a retry returns the card, reconcile
        // asks only about waiting cards); on MongoDB two concurrent writes
        // may land in either order, and a crash between them would leave a
        // bound card that its channel's notifications cannot find.
        if let StartOutcome::Bound { channel_ref }
        | StartOutcome::ActionRequired { channel_ref, .. } = &outcome
        {
            self.store_channel_ref(channel_name, channel_ref, user, id, generation)
                .await;
        }
        let (status, after) = self
            .change_wallet::<_, E>(ctx, user, known, |w, now| {
                let answer = Answer {
                    attempt: request.attempt,
                    outcome: outcome.clone(),
                    review_reason: review_reason.as_deref(),
                };
                apply_start(ctx, w, id, answer, now)
            })
            .await?;
        if status.is_none() {
            self.end_agreement_of_a_card_gone(
                ctx,
                &after.wallet,
                id,
                request.attempt,
                channel_name,
                &outcome,
            )
            .await;
            self.drop_data_of_a_card_gone(user, &after.wallet, id, generation)
                .await;
        }
        match status {
            Some(BindingStatus::PendingReview) => {
                self.queue_for_review(user, id, after.link()).await;
            }
            Some(BindingStatus::Failed) => self.drop_card_data(user, id, generation).await,
            _ => {}
        }
        if let Some(code) = refused {
            return Err(channel_rejected(code.as_str()).into());
        }
        Ok(self
            .view_as_read(&after, id)
            .await
            .map_err(|_| Internal::new("a started card is not in its wallet"))?)
    }

    /// The channel made an agreement (or began one) for bind `attempt` of
    /// a card that was unbound, failed or bound again (under another
    /// agreement) while it was asked: nothing here will use it, and the
    /// unbind could not end it (it had no reference yet), so it is ended
    /// (see [`crate::unwanted`]). An agreement the card holds is left alone.
    pub(crate) async fn end_agreement_of_a_card_gone(
        &self,
        ctx: &RequestContext,
        w: &Wallet,
        id: &BindingId,
        attempt: u32,
        channel_name: &ChannelName,
        outcome: &StartOutcome,
    ) {
        let (StartOutcome::Bound { channel_ref }
        | StartOutcome::ActionRequired { channel_ref, .. }) = outcome
        else {
            return;
        };
        if w.get(id).is_ok_and(|b| b.holds_agreement(channel_ref)) {
            return;
        }
        if let Err(e) = self
            .end_unwanted_agreement(
                ctx,
                Held {
                    channel: channel_name,
                    card: id,
                    attempt: Some(attempt),
                    channel_ref,
                },
                Some(w.user()),
                Agreement::JustMade,
            )
            .await
        {
            tracing::error!(binding = %id, error = %e, "audit event not stored");
        }
    }

    /// The card no longer waits for this bind's answer: it was unbound,
    /// failed or its user erased meanwhile, perhaps before this bind stored
    /// the card's data (which the unbind or erasure then could not delete,
    /// and nothing else would). This bind's generation of the data goes,
    /// unless the card holds it live (a concurrent resume of this bind
    /// stored its answer); no other generation is touched: a bind of the
    /// card again may be storing its own at this moment, after the wallet
    /// `w` was read.
    async fn drop_data_of_a_card_gone(
        &self,
        user: &UserId,
        w: &Wallet,
        id: &BindingId,
        generation: u32,
    ) {
        if w.get(id)
            .is_ok_and(|b| b.status.keeps_card_data() && b.data_generation == generation)
        {
            return;
        }
        if let Err(e) = self
            .ports
            .card_data
            .delete_generation(user, id, generation)
            .await
        {
            tracing::warn!(binding = %id, error = %e, "card data of a card gone not deleted yet");
        }
    }

    /// Queues a card that entered review for an operator. A failure is
    /// logged: the card is in review in its wallet, the truth, and
    /// `cardbind reconcile` queues a card in review that has no entry.
    /// `link` is the number of the change that put it in review.
    pub(crate) async fn queue_for_review(&self, user: &UserId, id: &BindingId, link: u64) {
        let entry = ReviewEntry {
            binding: id.clone(),
            user: user.clone(),
            since: self.now(),
            link,
        };
        if let Err(e) = self.ports.review.add(&entry).await {
            tracing::error!(binding = %id, error = %e, "card in review not queued; `cardbind reconcile` queues it");
        }
    }

    /// Whether the card a stored reference names is live on that channel:
    /// then it holds the reference, whether or not it names it as its
    /// agreement now (a card's references are several over its life: a
    /// signing may name the agreement by another).
    pub(crate) async fn held_live(&self, entry: &ChannelRefEntry) -> Result<bool, StoreError> {
        let holder = self.load(&entry.target.user).await?;
        Ok(holder
            .wallet
            .get(&entry.target.binding)
            .is_ok_and(|b| b.status.is_live() && b.channel == entry.channel))
    }

    /// Records `channel_ref` for card `id` of `user`, as the bind of
    /// `generation`'s, unless another live card on the channel holds it:
    /// the entry when it names the card now (what [`Self::let_go_of_ref`]
    /// takes should the change it was recorded for not happen), `None` when
    /// another card holds it. One write when the reference is free or the
    /// card's already (a signing notification's budget is six commands);
    /// `put` never moves a reference, so of two requests recording one at
    /// once the first keeps it.
    pub(crate) async fn claim_agreement(
        &self,
        channel: &ChannelName,
        channel_ref: &str,
        user: &UserId,
        id: &BindingId,
        generation: u32,
    ) -> Result<Option<ChannelRefEntry>, StoreError> {
        let entry = ChannelRefEntry {
            channel: channel.clone(),
            channel_ref: channel_ref.to_owned(),
            target: RefTarget {
                user: user.clone(),
                binding: id.clone(),
            },
            generation: Some(generation),
        };
        let refs = &self.ports.channel_refs;
        let put = || refs.put(channel, channel_ref, &entry.target, generation);
        let recorded = put().await?
            || (self.clear_for(channel, channel_ref, &entry.target).await? && put().await?);
        Ok(recorded.then_some(entry))
    }

    /// Whether `channel_ref` may be recorded for `target`: it is not
    /// recorded, or recorded for it, or for a card that no longer holds it
    /// (that record is deleted, only as read). `false`: a live card holds
    /// it.
    async fn clear_for(
        &self,
        channel: &ChannelName,
        channel_ref: &str,
        target: &RefTarget,
    ) -> Result<bool, StoreError> {
        let refs = &self.ports.channel_refs;
        for _ in 0..2 {
            let found = refs.find_entry(channel, channel_ref).await?;
            let Some(e) = found.filter(|e| e.target != *target) else {
                break;
            };
            if self.held_live(&e).await? {
                return Ok(false);
            }
            refs.delete_entry(&e).await?;
        }
        Ok(true)
    }

    /// Lets go of a reference recorded for a card before a change that
    /// would have made it the card's agreement (an operator's approval, a
    /// channel's signing), once the card can no longer take it: the change
    /// found the card ended, bound again or settled under another
    /// reference. It stays while the card holds it, and while the card
    /// still waits in the bind that recorded it: a change that failed
    /// there may have a twin in flight (the channel's signing delivered
    /// twice, two approvals naming it) whose commit lands after this read
    /// and relies on the record; the card's unbind, its bind again or the
    /// operator's sweep removes it otherwise. A failed change may still
    /// land (a store that timed out after it applied it): the card is read
    /// again after the delete, and a card that holds it then has it
    /// recorded again. A wallet that does not load leaves it recorded (see
    /// `docs/operations.md`).
    pub(crate) async fn let_go_of_ref(&self, user: &UserId, entry: ChannelRefEntry) {
        let keeps = |w: &Option<cardbind_ports::store::StoredWallet>, waiting_too: bool| {
            w.as_ref().is_some_and(|w| {
                w.wallet.get(&entry.target.binding).is_ok_and(|b| {
                    b.holds_agreement(&entry.channel_ref)
                        || (waiting_too
                            && b.status.awaits_settlement()
                            && b.channel == entry.channel
                            && Some(b.data_generation) == entry.generation)
                })
            })
        };
        let left = |e: &dyn std::fmt::Display| {
            tracing::warn!(binding = %entry.target.binding, error = %e, "channel reference recorded for a change that did not happen left recorded");
        };
        match self.ports.wallets.load(user).await {
            Ok(w) if keeps(&w, true) => return,
            Ok(_) => {}
            Err(e) => return left(&e),
        }
        if let Err(e) = self.ports.channel_refs.delete_entry(&entry).await {
            return left(&e);
        }
        match self.ports.wallets.load(user).await {
            Ok(w) if keeps(&w, false) => {
                let generation = entry.generation.unwrap_or_default();
                let target = &entry.target;
                match self
                    .ports
                    .channel_refs
                    .put(&entry.channel, &entry.channel_ref, target, generation)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::error!(binding = %target.binding, "a card holds an agreement recorded meanwhile for another card: an operator decides which card it is")
                    }
                    Err(e) => {
                        tracing::error!(binding = %target.binding, error = %e, "a card holds an agreement whose record was let go and could not be recorded again: a notification naming only the agreement will not find the card")
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(binding = %entry.target.binding, error = %e, "channel reference let go, and the card could not be read again to see whether it holds it")
            }
        }
    }

    /// Stores the reference a channel gave a card, for notifications that
    /// name only it. A failure is logged and the caller goes on: the card's
    /// own change is still written, and an operator finds the card by id.
    pub(crate) async fn store_channel_ref(
        &self,
        channel: &ChannelName,
        channel_ref: &str,
        user: &UserId,
        id: &BindingId,
        generation: u32,
    ) {
        let target = RefTarget {
            user: user.clone(),
            binding: id.clone(),
        };
        if let Err(e) = self
            .ports
            .channel_refs
            .put(channel, channel_ref, &target, generation)
            .await
        {
            tracing::warn!(binding = %id, error = %e, "channel reference not stored");
        }
    }
}

/// What the channel's answer means for the card, and why a card goes to
/// review (for the audit detail).
fn start_outcome(
    id: &BindingId,
    answer: Result<ChannelStart, ChannelError>,
    phone: &Phone,
) -> (StartOutcome, Option<String>) {
    let review = |why: String| {
        tracing::warn!(binding = %id, why, "channel could not take the binding; it goes to manual review");
        (StartOutcome::Unreachable, Some(why))
    };
    match answer {
        Ok(ChannelStart::Bound { channel_ref }) => (StartOutcome::Bound { channel_ref }, None),
        Ok(ChannelStart::OtpSent { channel_ref }) => (
            StartOutcome::ActionRequired {
                channel_ref,
                action: NextAction::Otp {
                    phone_hint: phone.masked(),
                },
            },
            None,
        ),
        Ok(ChannelStart::Redirect { channel_ref, url }) => (
            StartOutcome::ActionRequired {
                channel_ref,
                action: NextAction::Redirect { url },
            },
            None,
        ),
        Ok(ChannelStart::Refused { code, .. }) | Err(ChannelError::Rejected { code, .. }) => (
            StartOutcome::Refused {
                code: ChannelCode::from_channel(&code),
            },
            None,
        ),
        // Not the card's fault: the channel is down, slow, shut by the
        // breaker, refuses our own set-up, or answered what we cannot read.
        Err(ChannelError::Misconfigured { code }) => review(format!(
            "channel misconfigured: {}",
            ChannelCode::from_channel(&code).as_str()
        )),
        Err(
            e @ (ChannelError::Timeout | ChannelError::Unavailable(_) | ChannelError::CircuitOpen),
        ) => review(format!("channel unreachable: {}", short(&e))),
        Err(
            e @ (ChannelError::InvalidSignature
            | ChannelError::Protocol(_)
            | ChannelError::NotActedOn { .. }),
        ) => review(format!("channel answer unusable: {}", short(&e))),
    }
}

/// The kind of a channel error, without its message.
fn short(e: &ChannelError) -> &'static str {
    match e {
        ChannelError::Timeout => "timeout",
        ChannelError::Unavailable(_) => "unavailable",
        ChannelError::CircuitOpen => "circuit_open",
        ChannelError::Rejected { .. } => "rejected",
        ChannelError::InvalidSignature => "invalid_signature",
        ChannelError::Protocol(_) => "protocol",
        ChannelError::Misconfigured { .. } => "misconfigured",
        ChannelError::NotActedOn { .. } => "not_acted_on",
    }
}

/// A channel's answer to one bind's start.
struct Answer<'a> {
    /// The bind asked (its data generation).
    attempt: u32,
    outcome: StartOutcome,
    review_reason: Option<&'a str>,
}

/// Writes the channel's answer to a card still waiting for it. A card
/// that moved on meanwhile (a notification came first) keeps its state,
/// and so does a card that now waits for another bind of it (unbound and
/// bound again, or taken over, while this one asked): each bind names its
/// agreement by an attempt of its own, so this answer's agreement is not
/// the one the card waits on, and the caller ends it.
fn apply_start<E>(
    ctx: &RequestContext,
    w: &mut Wallet,
    id: &BindingId,
    answer: Answer<'_>,
    now: Timestamp,
) -> crate::tx::Decided<Option<BindingStatus>, E>
where
    E: From<Internal>,
{
    let Answer {
        attempt,
        outcome,
        review_reason,
    } = answer;
    // Only the bind the card waits on: a request that took the card over
    // meanwhile asked the channel under an attempt of its own, and this
    // answer's agreement is for one nothing here waits on.
    let from = match w.get(id) {
        Ok(b) if b.awaits_channel_answer() && b.data_generation == attempt => b.status,
        Ok(_) => return crate::tx::Decided::new(Ok(None), Vec::new()),
        Err(_) => {
            return crate::tx::Decided::new(
                Err(Internal::new("a started card is not in its wallet").into()),
                Vec::new(),
            )
        }
    };
    let applied: Result<(), cardbind_domain::StateRefusal> =
        w.change(id, |b| b.apply_start(outcome, now));
    if applied.is_err() {
        return crate::tx::Decided::new(Ok(None), Vec::new());
    }
    let to = w.get(id).map(|b| b.status).unwrap_or(from);
    let start = ctx
        .event(now, AuditAction::BindingChannelStart)
        .user(w.user())
        .binding(id);
    // A decline is the channel's refusal, recorded as the client got it
    // (`channel_rejected`) with the channel's code: the card's record
    // outlives neither its data nor, after the audit's retention, its
    // reason otherwise.
    let start = match w.get(id).ok().and_then(|b| b.failure.clone()) {
        Some(why) if to == BindingStatus::Failed => start
            .detail(format!(
                "{from} -> {to}: declined by the channel ({})",
                why.as_str()
            ))
            .refused(cardbind_domain::ErrorCode::ChannelRejected),
        _ => start.detail(format!("{from} -> {to}")),
    };
    let mut events = vec![start.build()];
    if to == BindingStatus::PendingReview {
        let e = ctx
            .event(now, AuditAction::ReviewQueued)
            .user(w.user())
            .binding(id);
        events.push(match review_reason {
            Some(why) => e.detail(why).build(),
            None => e.build(),
        });
    }
    crate::tx::Decided::new(Ok(Some(to)), events)
}
