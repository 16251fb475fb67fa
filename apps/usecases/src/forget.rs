//! What goes when a card ends: its sealed data, its channel references and
//! its review entry, deleted after the change that ended it is stored
//! (best effort: each failure is logged, and a later bind of the card, the
//! erasure, the card leaving its wallet or the operator's sweep removes
//! what is left).

use cardbind_domain::{Binding, BindingId, BindingStatus, UserId};

use crate::UseCases;

impl UseCases {
    /// After a card is unbound: its sealed data, its channel references
    /// (its start's, and the agreement a signing named) and any review
    /// entry go (each failure is logged). `Forget::TheBind` deletes what
    /// the bind `b` was written with stored, its generation's, and nothing
    /// a bind of the card again may be storing meanwhile: the next bind of
    /// the card, erasure or the card leaving its wallet remove what a
    /// failure here left. `Forget::TheCard` deletes every generation (the
    /// user is erased, or the card left its wallet: no bind follows under
    /// its id).
    pub(crate) async fn forget_card(&self, user: &UserId, b: &Binding, what: Forget) {
        match what {
            Forget::TheBind { .. } => {
                self.forget_bind(user, &b.id, b.data_generation).await;
            }
            Forget::TheCard => {
                if let Err(e) = self.ports.card_data.delete(user, &b.id, None).await {
                    tracing::warn!(binding = %b.id, error = %e, "card data not deleted yet");
                }
                self.drop_channel_refs(user, &b.id, None).await;
            }
        }
        if b.status == BindingStatus::PendingReview {
            // The entry of the review the change ended, not one a bind of
            // the card again into review has queued since.
            let upto = match what {
                Forget::TheBind { link } => link,
                Forget::TheCard => u64::MAX,
            };
            if let Err(e) = self.ports.review.remove(&b.id, upto).await {
                tracing::warn!(binding = %b.id, error = %e, "review entry not removed");
            }
        }
    }

    /// Deletes what one bind of a card stored: its generation of the
    /// data and the channel references it recorded (each failure logged).
    pub(crate) async fn forget_bind(&self, user: &UserId, id: &BindingId, generation: u32) {
        self.drop_card_data(user, id, generation).await;
        self.drop_channel_refs(user, id, Some(generation)).await;
    }

    async fn drop_channel_refs(&self, user: &UserId, id: &BindingId, generation: Option<u32>) {
        if let Err(e) = self
            .ports
            .channel_refs
            .delete_binding(user, id, generation)
            .await
        {
            tracing::warn!(binding = %id, error = %e, "channel references not deleted");
        }
    }
}

/// What [`UseCases::forget_card`] deletes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Forget {
    /// What the bind that ended stored (its data generation's); `link` is
    /// the number of the change that ended it.
    TheBind { link: u64 },
    /// Everything of the card, every generation.
    TheCard,
}
