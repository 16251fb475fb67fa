//! What the channels tell us: signed asynchronous notifications, and
//! reconciliation of cards left waiting for their channel.

use cardbind_domain::{
    Binding, BindingId, BindingStatus, ChannelName, FailureReason, Timestamp, UserId, Wallet,
};
use cardbind_ports::audit::{AuditAction, AuditFilter};
use cardbind_ports::channel::{
    BindingRef, ChannelEvent, ChannelEventKind, Notification, NotificationAck, RemoteState,
};
use cardbind_ports::store::{ChannelRefEntry, LinkKey, ReviewEntry};

use crate::context::RequestContext;
use crate::error::op_error;
use crate::tx::{Decided, Loaded};
use crate::unwanted::{Agreement, Held};
use crate::UseCases;

op_error! {
    /// Why a notification was refused.
    pub enum NotifyError { BadRequest, Unauthenticated, NotFound, Conflict, Unavailable }
    from Store
}

/// What `reconcile` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    pub examined: u64,
    pub activated: u64,
    pub failed: u64,
    pub unbound: u64,
    pub still_pending: u64,
    /// Cards in manual review found missing from the review queue (the
    /// queue is written after the card, best effort) and queued again.
    pub requeued: u64,
    pub errors: u64,
}

/// How an event changed a card.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Applied {
    Unchanged,
    /// A signing this service no longer waits on: under the reference of
    /// an earlier bind of the card (one whose page the user opened before
    /// the card was bound again), or of a card that failed or was unbound
    /// before the user signed. The card is left as it is, and the
    /// agreement is to be ended (if the channel still reports it active).
    UnwantedSigning {
        /// The bind whose agreement it is, when known: the event's own,
        /// or for a card found by the channel's reference, the card's
        /// last bind.
        attempt: Option<u32>,
        channel_ref: String,
    },
    /// The card waits for this signing under another reference than it
    /// was read with (it was bound again in between): the agreement is to
    /// be recorded first, on a new read.
    RecordFirst,
    /// The card moved from one status to another.
    Changed {
        from: BindingStatus,
        to: BindingStatus,
    },
}

impl UseCases {
    /// Verifies, deduplicates and applies a channel's notification.
    /// Returns the acknowledgement only once the event is stored.
    pub async fn handle_notification(
        &self,
        channel_name: &ChannelName,
        n: &Notification,
    ) -> Result<NotificationAck, NotifyError> {
        // Notifications come to the channel's own URL: a channel this
        // deployment does not enable has none (404, as an unknown one).
        let channel = self.channel(channel_name).ok_or_else(|| {
            cardbind_domain::Missing::field(
                cardbind_domain::NotFoundCode::NotFound,
                "channel",
                "no such channel is enabled",
            )
        })?;
        let event = match channel.parse_notification(n) {
            Ok(event) => event,
            // Genuine, but not for us: answered as taken, so the channel
            // does not deliver it again for a day; nothing to store.
            Err(cardbind_ports::ChannelError::NotActedOn { kind }) => {
                tracing::warn!(
                    channel = channel_name.as_str(),
                    kind = kind.as_str(),
                    "a genuine notification of a kind this service does not act on was acknowledged and dropped"
                );
                return Ok(channel.notification_ack());
            }
            Err(e) => return Err(notification_refused(e)),
        };
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

    /// The card an event names, and its user.
    async fn find_card(
        &self,
        channel: &ChannelName,
        r: &BindingRef,
    ) -> Result<Option<(UserId, BindingId)>, NotifyError> {
        Ok(match r {
            BindingRef::Ours(id) => self
                .ports
                .card_data
                .owner(id)
                .await?
                .map(|u| (u, id.clone())),
            BindingRef::Channel(cr) => self
                .ports
                .channel_refs
                .find(channel, cr)
                .await?
                .map(|t| (t.user, t.binding)),
        })
    }

    /// Whether the service ever held the card `id`: its audit trail
    /// (kept for the retention, erasure included) names it.
    async fn ever_held(&self, id: &BindingId) -> Result<bool, NotifyError> {
        let filter = AuditFilter {
            binding_id: Some(id.clone()),
            ..AuditFilter::default()
        };
        Ok(!self.ports.audit.list(&filter, None, 1).await?.is_empty())
    }

    /// Applies a verified channel event. Idempotent: an event that finds
    /// the card already where it leads changes nothing; an event about a
    /// card we do not know, or whose data is gone (unbound), is ignored,
    /// but for a signing of a card this service held, whose agreement is
    /// ended. A reference that reads as ours but names a card this service
    /// never held is another system's on a shared merchant account (or
    /// made up): its agreement is left alone.
    async fn apply_channel_event(
        &self,
        channel_name: &ChannelName,
        event: &ChannelEvent,
    ) -> Result<Applied, NotifyError> {
        let ctx = RequestContext::service(&format!("channel:{channel_name}"));
        let Some((user, id)) = self.find_card(channel_name, &event.binding).await? else {
            if let (BindingRef::Ours(id), ChannelEventKind::Signed { channel_ref }) =
                (&event.binding, &event.kind)
            {
                if !self.ever_held(id).await? {
                    tracing::warn!(channel = %channel_name, event = %logged(&event.event_id), "a signing under a reference of no card this service ever held is left alone");
                    return Ok(Applied::Unchanged);
                }
                // A signing of a card whose data this service no longer
                // holds: it failed, was unbound or its user erased before
                // the user signed at the channel.
                let held = Held {
                    channel: channel_name,
                    card: id,
                    attempt: event.attempt,
                    channel_ref,
                };
                self.end_unwanted_agreement(&ctx, held, None, Agreement::Reported)
                    .await?;
            } else {
                tracing::warn!(channel = %channel_name, event = %logged(&event.event_id), "notification for an unknown card ignored");
            }
            return Ok(Applied::Unchanged);
        };
        // A signing records its agreement for the card before the change
        // (`record_before_change`).
        // The decision whether to record is made on the wallet as read; a
        // change that then finds the card waiting for a signing it was not
        // read waiting for (bound again in between) asks for a new round.
        let mut rounds = 0;
        let changed = loop {
            rounds += 1;
            let (known, agreement, claimed) = self
                .record_before_change(channel_name, event, &user, &id)
                .await?;
            let changed = self
                .change_wallet::<_, NotifyError>(&ctx, &user, known, |w, now| {
                    channel_event(&ctx, w, &id, channel_name, event, agreement, now)
                })
                .await;
            // The change found the card elsewhere than it was read, or
            // failed: a reference recorded for it that the card does not
            // hold goes again, once the card can no longer take it
            // (`let_go_of_ref`).
            if let Some(c) = claimed {
                let holds = changed.as_ref().is_ok_and(|(_, after)| {
                    after
                        .wallet
                        .get(&id)
                        .is_ok_and(|b| b.holds_agreement(&c.channel_ref))
                });
                if !holds {
                    self.let_go_of_ref(&user, c).await;
                }
            }
            match changed {
                Ok((Applied::RecordFirst, _)) if rounds < 3 => continue,
                Ok((Applied::RecordFirst, _)) => {
                    return Err(cardbind_ports::StoreError::Unavailable(
                        "the card kept changing while its signing was applied".into(),
                    )
                    .into())
                }
                other => break other,
            }
        };
        let (applied, after) = changed?;
        if let Applied::UnwantedSigning {
            attempt,
            channel_ref,
        } = &applied
        {
            let held = Held {
                channel: channel_name,
                card: &id,
                attempt: *attempt,
                channel_ref,
            };
            self.end_unwanted_agreement(&ctx, held, Some(&user), Agreement::Reported)
                .await?;
        }
        if let Applied::Changed { from, to } = applied {
            self.after_channel_change(&user, &after, &id, from, to)
                .await;
            if to == BindingStatus::Inactive {
                // The user unsigned at the channel: the card's shares
                // ended with it, and so do their mirrors.
                if let Ok(b) = after.wallet.get(&id) {
                    self.end_mirrors_since(&ctx, &after.wallet, b.updated_at)
                        .await;
                }
            }
        }
        Ok(applied)
    }

    /// Before a signing's change: records the agreement it names for the
    /// card when the change would make it the card's (`agreement_to_record`),
    /// so that one agreement never activates two cards (of a signing and an
    /// approval, or two signings, naming one at once, the first to record
    /// it keeps it). One another live card on this channel holds (an
    /// operator approved that card with it, or the channel named it twice)
    /// sends this card to manual review instead: which card the agreement
    /// is is an operator's question. A signing again of the agreement an
    /// active card holds records it again (a first record failed, and the
    /// channel sends the signing again), so that a later notification
    /// naming the card by the agreement alone (an unsigning) finds it. The
    /// agreement a bind's start gave was recorded then. Returns the wallet
    /// as read (for the change), what became of the agreement, and the
    /// record made.
    async fn record_before_change(
        &self,
        channel_name: &ChannelName,
        event: &ChannelEvent,
        user: &UserId,
        id: &BindingId,
    ) -> Result<(Option<Loaded>, Agreed, Option<ChannelRefEntry>), NotifyError> {
        let ChannelEventKind::Signed { channel_ref } = &event.kind else {
            return Ok((None, Agreed::NotNamed, None));
        };
        let loaded = self.load(user).await?;
        let to_record = loaded
            .wallet
            .get(id)
            .ok()
            .and_then(|b| agreement_to_record(b, channel_name, event, channel_ref));
        let Some((generation, again)) = to_record else {
            return Ok((Some(loaded), Agreed::NotNamed, None));
        };
        let claim = self
            .claim_agreement(channel_name, channel_ref, user, id, generation)
            .await;
        let (agreement, claimed) = match claim {
            Ok(Some(entry)) => (Agreed::Recorded { generation }, Some(entry)),
            Ok(None) => (Agreed::TakenByAnother, None),
            // A signing again of an active card's agreement changes
            // nothing: its record is best effort.
            Err(e) if again => {
                tracing::warn!(binding = %id, error = %e, "channel reference not stored");
                (Agreed::NotNamed, None)
            }
            Err(e) => return Err(e.into()),
        };
        Ok((Some(loaded), agreement, claimed))
    }

    /// The writes that follow a card's change by its channel.
    async fn after_channel_change(
        &self,
        user: &UserId,
        after: &Loaded,
        id: &BindingId,
        from: BindingStatus,
        to: BindingStatus,
    ) {
        let (w, link) = (&after.wallet, after.link());
        match to {
            BindingStatus::Inactive => {
                if let Ok(b) = w.get(id) {
                    self.forget_card(user, b, crate::forget::Forget::TheBind { link })
                        .await;
                }
            }
            BindingStatus::Failed => {
                if let Ok(b) = w.get(id) {
                    self.drop_card_data(user, id, b.data_generation).await;
                }
            }
            BindingStatus::PendingReview if from != BindingStatus::PendingReview => {
                self.queue_for_review(user, id, link).await;
            }
            BindingStatus::Active
            | BindingStatus::PendingVerification
            | BindingStatus::Frozen
            | BindingStatus::PendingReview => {}
        }
        // A card that leaves review by its channel's word leaves the queue
        // (only then: one write saved on every other activation).
        if from == BindingStatus::PendingReview && to != BindingStatus::PendingReview {
            if let Err(e) = self.ports.review.remove(id, link).await {
                tracing::warn!(binding = %id, error = %e, "review entry not removed");
            }
        }
    }

    /// Settles cards left in `pending_verification` for longer than
    /// `older_than_seconds` by asking their channel, looking back over the
    /// wallets written in the policy's lookback window.
    pub async fn reconcile(
        &self,
        older_than_seconds: i64,
        page: u32,
    ) -> Result<ReconcileReport, NotifyError> {
        let mut report = ReconcileReport::default();
        let now = self.now();
        let before = now.minus_seconds(older_than_seconds);
        let from = now.minus_seconds(self.policy.reconcile_lookback_seconds);
        let mut after: Option<LinkKey> = None;
        let mut users_seen = std::collections::HashSet::new();
        loop {
            let links = self
                .ports
                .wallets
                .pending_links(from, before, after.clone(), page.clamp(1, 500))
                .await?;
            let Some(last) = links.last() else { break };
            after = Some(last.key.clone());
            for l in links {
                if users_seen.insert(l.key.user.clone()) {
                    self.reconcile_user(&l.key.user, before, now, &mut report)
                        .await;
                }
            }
        }
        Ok(report)
    }

    async fn reconcile_user(
        &self,
        user: &UserId,
        before: Timestamp,
        now: Timestamp,
        report: &mut ReconcileReport,
    ) {
        let (wallet, link) = match self.load(user).await {
            Ok(l) => {
                let link = l.link();
                (l.wallet, link)
            }
            Err(e) => {
                tracing::warn!(%user, error = %e, "reconcile: wallet not read");
                report.errors += 1;
                return;
            }
        };
        // A card in review whose queue entry was never written (the store
        // failed, or the process stopped, between the card's commit and
        // the queue's write, or a card put back in review by a retry from
        // review that failed at its channel) would be seen by no operator:
        // queue it.
        for b in wallet
            .bindings()
            .iter()
            .filter(|b| b.status == BindingStatus::PendingReview && b.updated_at <= before)
        {
            match self.ports.review.get(&b.id).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    let entry = ReviewEntry {
                        binding: b.id.clone(),
                        user: user.clone(),
                        since: b.updated_at,
                        link,
                    };
                    match self.ports.review.add(&entry).await {
                        Ok(()) => report.requeued += 1,
                        Err(e) => {
                            tracing::warn!(binding = %b.id, error = %e, "reconcile: review entry not written");
                            report.errors += 1;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(binding = %b.id, error = %e, "reconcile: review queue not read");
                    report.errors += 1;
                }
            }
        }
        let stuck = wallet
            .bindings()
            .iter()
            .filter(|b| b.status == BindingStatus::PendingVerification && b.updated_at <= before);
        for b in stuck {
            report.examined += 1;
            let Some(channel) = self.channel(&b.channel) else {
                report.errors += 1;
                continue;
            };
            let kind = match channel
                .query(&b.id, Some(b.data_generation), b.channel_ref.clone())
                .await
            {
                Ok(RemoteState::Active { channel_ref }) => {
                    Some(ChannelEventKind::Signed { channel_ref })
                }
                Ok(RemoteState::Terminated) => Some(ChannelEventKind::Failed {
                    code: FailureReason::AgreementTerminated.as_str().to_owned(),
                }),
                Ok(RemoteState::Failed { code }) => Some(ChannelEventKind::Failed { code }),
                // Nothing at the channel yet (the user has not opened the
                // signing page) is still waiting while the verification
                // window lasts, as a pending agreement is.
                Ok(RemoteState::Pending | RemoteState::NotFound) => b
                    .verification_expires_at
                    .is_some_and(|t| now > t)
                    .then(|| ChannelEventKind::Failed {
                        code: FailureReason::VerificationExpired.as_str().to_owned(),
                    }),
                Err(e) => {
                    tracing::warn!(binding = %b.id, error = %e, "reconcile query failed");
                    report.errors += 1;
                    continue;
                }
            };
            let Some(kind) = kind else {
                report.still_pending += 1;
                continue;
            };
            let event = ChannelEvent {
                event_id: format!("reconcile:{}", b.id),
                binding: BindingRef::Ours(b.id.clone()),
                kind,
                agreement: None,
                attempt: Some(b.data_generation),
            };
            match self.apply_channel_event(&b.channel, &event).await {
                Ok(Applied::Changed { to, .. }) => match to {
                    BindingStatus::Active => report.activated += 1,
                    BindingStatus::Inactive => report.unbound += 1,
                    BindingStatus::Failed => report.failed += 1,
                    // Not where a channel's answer leads a waiting card.
                    BindingStatus::PendingVerification
                    | BindingStatus::Frozen
                    | BindingStatus::PendingReview => report.still_pending += 1,
                },
                Ok(Applied::Unchanged | Applied::UnwantedSigning { .. }) => {
                    report.still_pending += 1
                }
                // (Never returned: `apply_channel_event` takes a new round.)
                Ok(Applied::RecordFirst) | Err(_) => report.errors += 1,
            }
        }
    }
}

/// What became of the agreement a signing names, before its change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Agreed {
    /// Nothing to record: not a signing, or one naming the reference the
    /// waiting card's start gave, or one the change does not apply (see
    /// `agreement_to_record`).
    NotNamed,
    /// Recorded for this card, as the bind of this generation's.
    Recorded { generation: u32 },
    /// Another live card on this channel holds it.
    TakenByAnother,
}

/// Whether a channel event is about the card's last bind on that channel,
/// read before what it reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum About {
    ThisBind,
    /// The card's last bind went through another channel.
    OtherChannel,
    /// A card bound again keeps its id, but each bind has a reference of
    /// its own: the event names another bind's.
    EarlierBind {
        attempt: u32,
    },
    /// The event names an agreement other than the one an active (or
    /// frozen) card holds now, or one an earlier bind of the card held (a
    /// late retry of its signing or its unsigning, while the card waits
    /// again).
    EarlierAgreement,
}

fn about(b: &Binding, channel: &ChannelName, event: &ChannelEvent) -> About {
    if &b.channel != channel {
        return About::OtherChannel;
    }
    if let Some(attempt) = event.attempt.filter(|a| *a != b.data_generation) {
        return About::EarlierBind { attempt };
    }
    if let Some(named) = &event.agreement {
        let holds_agreement = matches!(b.status, BindingStatus::Active | BindingStatus::Frozen);
        let other_than_held = holds_agreement
            && b.channel_ref
                .as_ref()
                .is_some_and(|current| current != named);
        let held_before = b.held_before(named) && b.channel_ref.as_ref() != Some(named);
        if other_than_held || held_before {
            return About::EarlierAgreement;
        }
    }
    About::ThisBind
}

/// Whether a signing naming `channel_ref` records it for the card before
/// its change, under which generation, and whether it is a signing again:
/// a signing that would make it the agreement of a card waiting under
/// another reference, or a signing again of the agreement an active (or
/// frozen) card holds (`true`). Not the reference the bind's start gave
/// (recorded then), nor a signing the change would not apply (about an
/// earlier bind, or at another channel).
fn agreement_to_record(
    b: &Binding,
    channel: &ChannelName,
    event: &ChannelEvent,
    channel_ref: &str,
) -> Option<(u32, bool)> {
    if about(b, channel, event) != About::ThisBind {
        return None;
    }
    let holds = b.channel_ref.as_deref() == Some(channel_ref);
    let new = b.status.awaits_settlement() && !holds;
    let again = matches!(b.status, BindingStatus::Active | BindingStatus::Frozen) && holds;
    (new || again).then_some((b.data_generation, again))
}

/// What a channel event does to a card.
fn channel_event(
    ctx: &RequestContext,
    w: &mut Wallet,
    id: &BindingId,
    channel: &ChannelName,
    event: &ChannelEvent,
    agreement: Agreed,
    now: Timestamp,
) -> Decided<Applied, NotifyError> {
    let unchanged = || Decided::new(Ok(Applied::Unchanged), Vec::new());
    let unwanted = |attempt: Option<u32>, channel_ref: &String| {
        Decided::new(
            Ok(Applied::UnwantedSigning {
                attempt,
                channel_ref: channel_ref.clone(),
            }),
            Vec::new(),
        )
    };
    let Ok(b) = w.get(id) else {
        return unchanged();
    };
    match about(b, channel, event) {
        About::ThisBind => {}
        About::OtherChannel => {
            // The card's last bind went through another channel: a
            // signing here is of an earlier bind's page, and is ended at
            // this channel.
            if let ChannelEventKind::Signed { channel_ref } = &event.kind {
                tracing::info!(%channel, event = %logged(&event.event_id), binding = %id, "signing at a channel the card no longer uses");
                return unwanted(event.attempt, channel_ref);
            }
            return unchanged();
        }
        About::EarlierBind { attempt } => {
            // A signing under an earlier bind's reference is ended at the
            // channel (the user signed a page this service no longer
            // waits on); anything else it reports changes nothing.
            if let ChannelEventKind::Signed { channel_ref } = &event.kind {
                if !b.holds_agreement(channel_ref) {
                    tracing::info!(%channel, event = %logged(&event.event_id), binding = %id, "signing under an earlier bind's reference");
                    return unwanted(Some(attempt), channel_ref);
                }
            }
            tracing::info!(%channel, event = %logged(&event.event_id), binding = %id, "event about an earlier bind ignored");
            return unchanged();
        }
        About::EarlierAgreement => {
            tracing::info!(%channel, event = %logged(&event.event_id), binding = %id, "event about an earlier agreement ignored");
            return unchanged();
        }
    }
    let from = b.status;
    let generation = b.data_generation;
    let waiting = matches!(
        from,
        BindingStatus::PendingVerification | BindingStatus::PendingReview
    );
    let by = ctx.actor.subject.clone();
    let r: Result<bool, cardbind_domain::StateRefusal> = match &event.kind {
        ChannelEventKind::Signed { channel_ref } => {
            if waiting && agreement == Agreed::TakenByAnother {
                tracing::warn!(%channel, event = %logged(&event.event_id), binding = %id, agreement = %logged(channel_ref), "a signing names an agreement another live card holds: left to an operator");
                if from == BindingStatus::PendingVerification {
                    w.change(id, |b| b.refer_to_review(now)).map(|()| true)
                } else {
                    // Already in review: it stays there, and the operator
                    // who decides it learns what the channel said.
                    let e = ctx
                        .event(now, AuditAction::BindingChannelEvent)
                        .user(w.user())
                        .binding(id)
                        .detail(format!(
                            "{from}, unchanged: the channel named agreement {channel_ref:?}, which another live card holds"
                        ))
                        .build();
                    return Decided::new(Ok(Applied::Unchanged), vec![e]);
                }
            } else if waiting
                && b.channel_ref.as_deref() != Some(channel_ref.as_str())
                && agreement != (Agreed::Recorded { generation })
            {
                // Read otherwise (not waiting, or in an earlier bind): its
                // agreement was not recorded for this bind first.
                return Decided::new(Ok(Applied::RecordFirst), Vec::new());
            } else if waiting {
                w.change(id, |b| b.activate(Some(channel_ref.clone()), now))
                    .map(|()| true)
            } else if matches!(from, BindingStatus::Failed | BindingStatus::Inactive) {
                // Signed after the card ended here (its code check, its
                // channel or an operator failed it; it was unbound): the
                // same as a signing of a card whose data is gone, found
                // by its reference instead of by our id.
                tracing::info!(%channel, event = %logged(&event.event_id), binding = %id, "signing of a card that ended before it");
                // The bind it names: the event's (naming our id, with its
                // attempt or in the older form without one), or for a card
                // found by the channel's reference, the card's last bind.
                let attempt = match &event.binding {
                    BindingRef::Ours(_) => event.attempt,
                    BindingRef::Channel(_) => Some(generation),
                };
                return unwanted(attempt, channel_ref);
            } else {
                // Already settled (a repeat, or a card an operator decided).
                if agreement == Agreed::TakenByAnother {
                    tracing::warn!(%channel, event = %logged(&event.event_id), binding = %id, agreement = %logged(channel_ref), "a signing again names an agreement another live card holds: not recorded for this one");
                }
                Ok(false)
            }
        }
        ChannelEventKind::Terminated => w.change(id, |b| b.unbind(now, &by)),
        ChannelEventKind::Failed { code } => {
            if waiting {
                let reason = FailureReason::from_channel(code);
                w.change(id, |b| b.fail(reason, now)).map(|()| true)
            } else {
                Ok(false)
            }
        }
    };
    match r {
        Ok(true) => {
            let to = w.get(id).map(|b| b.status).unwrap_or(from);
            // The agreement is named (as a change's event names the one
            // it activated): an operator who rejects the card ends it at
            // the channel, as nothing here holds it for this card.
            let why = match (agreement, &event.kind) {
                (Agreed::TakenByAnother, ChannelEventKind::Signed { channel_ref }) => format!(
                    ": the channel named agreement {channel_ref:?}, which another live card holds"
                ),
                _ => String::new(),
            };
            let e = ctx
                .event(now, AuditAction::BindingChannelEvent)
                .user(w.user())
                .binding(id)
                .detail(format!("{from} -> {to}{why}"))
                .build();
            Decided::new(Ok(Applied::Changed { from, to }), vec![e])
        }
        Ok(false) | Err(_) => unchanged(),
    }
}

/// What a notification the channel adapter would not take means for the
/// channel that sent it.
fn notification_refused(e: cardbind_ports::ChannelError) -> NotifyError {
    use crate::error::ChannelFailure as F;
    match F::of(e) {
        F::Unauthenticated(a) => NotifyError::Unauthenticated(a),
        F::Unreadable(i) => NotifyError::BadRequest(i),
        F::Unreachable(u) => NotifyError::Unavailable(u),
        F::Declined(d) => NotifyError::Internal(crate::error::Internal::new(format!(
            "a notification parser answered a refusal: {}",
            d.code
        ))),
    }
}

/// A notification's id as logged: the channel chooses it, and a long
/// number in it (a card, resident or mobile number, by mistake or on
/// purpose) is masked as free text is.
fn logged(event_id: &str) -> String {
    cardbind_domain::consent::mask_free_text(event_id)
}
