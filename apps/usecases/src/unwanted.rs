//! Agreements a channel made for cards this service no longer holds.
//!
//! Two flows meet one: a bind or verify whose channel answered after the
//! card was unbound, failed or bound again under another agreement, and a
//! signed notification of a signing for a card whose data is gone (a card
//! the service held: its audit trail names it; a reference of no card ever
//! held here is another system's, and `notify.rs` leaves it alone). Left
//! alone, such an agreement would stay live at the channel with nothing
//! here to use or end it; so it is ended at the channel, its reference let
//! go, and the service's chain records it (`binding.unwanted_signing`;
//! outcome `channel_unavailable` when the channel could not end it).

use cardbind_domain::{BindingId, ChannelName, UserId};
use cardbind_ports::audit::AuditAction;
use cardbind_ports::channel::RemoteState;
use cardbind_ports::StoreError;

use crate::context::RequestContext;
use crate::UseCases;

/// What the caller knows of the agreement it hands over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Agreement {
    /// The channel has just made it, answering this service: it is ended
    /// without asking.
    JustMade,
    /// A notification reported it, perhaps a late copy of one this service
    /// already ended: the channel is asked first, and an agreement it
    /// reports anything but active is left as it is (nothing audited).
    Reported,
}

/// An agreement a channel holds for one bind of a card.
pub(crate) struct Held<'a> {
    pub channel: &'a ChannelName,
    pub card: &'a BindingId,
    /// The bind that made it (see `ChannelBindRequest::attempt`), when
    /// known (a notification naming the channel's reference only, or ours
    /// in a form from before attempts, names none).
    pub attempt: Option<u32>,
    pub channel_ref: &'a str,
}

impl UseCases {
    /// Ends the agreement `held` (of `user`, when known), lets its
    /// reference go and audits it.
    /// The channel's failure is recorded, not returned: only the audit
    /// write's failure is, for a caller that can have the event sent again.
    pub(crate) async fn end_unwanted_agreement(
        &self,
        ctx: &RequestContext,
        held: Held<'_>,
        user: Option<&UserId>,
        agreement: Agreement,
    ) -> Result<(), StoreError> {
        let Held {
            channel: channel_name,
            card: id,
            attempt,
            channel_ref,
        } = held;
        let Some(channel) = self.channel(channel_name) else {
            return Ok(());
        };
        if agreement == Agreement::Reported {
            match channel
                .query(id, attempt, Some(channel_ref.to_owned()))
                .await
            {
                Ok(RemoteState::Active { .. }) | Err(_) => {}
                Ok(_) => return Ok(()),
            }
        }
        let ended = channel.unbind(id, attempt, channel_ref).await;
        if let Err(e) = self
            .let_go_of_unwanted_ref(channel_name, id, attempt, channel_ref)
            .await
        {
            tracing::warn!(binding = %id, error = %e, "channel reference not deleted");
        }
        let mut event = ctx
            .event(self.now(), AuditAction::BindingUnwantedSigning)
            .binding(id);
        if let Some(user) = user {
            event = event.user(user);
        }
        let event = match ended {
            Ok(()) => {
                tracing::info!(channel = %channel_name, binding = %id, "an agreement for a card no longer held here was ended at the channel");
                event.detail("an agreement for a card no longer held here was ended at the channel")
            }
            Err(e) => {
                tracing::warn!(channel = %channel_name, binding = %id, error = %e, "an agreement for a card no longer held here could not be ended");
                event
                    .refused(cardbind_domain::ErrorCode::ChannelUnavailable)
                    .detail(format!(
                        "an agreement for a card no longer held here may still be active at the channel: {e}"
                    ))
            }
        };
        self.ports
            .audit
            .append_system(vec![event.build()], self.now())
            .await
    }

    /// Deletes the record of `channel_ref` as read, only while it names
    /// card `id` as recorded by the unwanted bind `attempt` (a bind's
    /// attempt is its data generation), or by any bind of the card when
    /// the attempt is not known: a channel that gives a card the same
    /// reference at every bind (the mock) has the bind of the card again
    /// record it as its own before its answer is written, and that record
    /// must stay for the notifications naming only the reference. A
    /// record of another card is never touched.
    async fn let_go_of_unwanted_ref(
        &self,
        channel: &ChannelName,
        id: &BindingId,
        attempt: Option<u32>,
        channel_ref: &str,
    ) -> Result<(), StoreError> {
        let refs = &self.ports.channel_refs;
        let Some(entry) = refs.find_entry(channel, channel_ref).await? else {
            return Ok(());
        };
        let this_bind = match (attempt, entry.generation) {
            (Some(a), Some(g)) => a == g,
            _ => true,
        };
        if entry.target.binding == *id && this_bind {
            refs.delete_entry(&entry).await?;
        }
        Ok(())
    }
}
