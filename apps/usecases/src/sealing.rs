//! Sealing a card's data for its binding, and opening it again (every
//! opening audited).

use cardbind_domain::{
    BindingId, CardBrand, CardNumber, ErrorCode, HolderName, Phone, ResidentId, SealedBlob,
    SealedCard, SealedField, UserId,
};
use cardbind_ports::audit::{AuditAction, AuditEvent};
use cardbind_ports::keys::SealContext;
use cardbind_ports::KeyError;

use crate::context::RequestContext;
use crate::UseCases;

/// A card's data in clear, as a bind request carries it and as opening its
/// sealed fields gives it back. Each value masks itself in `Debug`.
#[derive(Clone, Debug)]
pub struct CardDetails {
    pub card: CardNumber,
    pub holder_name: HolderName,
    pub id_number: ResidentId,
    pub phone: Phone,
}

impl CardDetails {
    fn text(&self, field: SealedField) -> &str {
        match field {
            SealedField::Pan => self.card.expose(),
            SealedField::HolderName => self.holder_name.expose(),
            SealedField::IdNumber => self.id_number.expose(),
            SealedField::Phone => self.phone.expose(),
        }
    }
}

/// What the caller knows of the owner's data key before sealing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// The user has nothing stored (no wallet), or no live card (erased,
    /// perhaps by another instance whose erasure this process's key cache
    /// has not seen): their key is made without looking for one first, and
    /// never taken from the cache
    /// ([`cardbind_ports::keys::CardVault::seal_for_new_owner`]).
    ProbablyNew,
    /// The user has a live card: their key is the one the store holds now
    /// (one this process remembers only while the store still holds it:
    /// [`cardbind_ports::keys::CardVault::seal_with_stored_key`]).
    Known,
}

/// Why sealed data did not open.
pub(crate) enum OpenFailure {
    /// The key service, or the store that keeps the keys, could not be
    /// reached.
    Unavailable(KeyError),
    /// Tampered, moved, erased, or not the value it should be.
    Unreadable,
}

impl UseCases {
    /// Seals every field of `details` under `user`'s key, each bound to
    /// this binding and field.
    pub(crate) async fn seal(
        &self,
        user: &UserId,
        binding: &BindingId,
        details: &CardDetails,
        owner: Owner,
    ) -> Result<SealedCard, KeyError> {
        let mut blobs = Vec::with_capacity(SealedField::ALL.len());
        for (i, field) in SealedField::ALL.into_iter().enumerate() {
            let ctx = SealContext::new(binding.as_str(), field.as_str());
            let plaintext = details.text(field);
            let vault = &self.ports.vault;
            // The first field finds (or makes) the user's key; the others
            // find it cached.
            blobs.push(match (i, owner) {
                (0, Owner::ProbablyNew) => {
                    vault
                        .seal_for_new_owner(user, &ctx, plaintext.as_bytes())
                        .await?
                }
                (0, Owner::Known) => {
                    vault
                        .seal_with_stored_key(user, &ctx, plaintext.as_bytes())
                        .await?
                }
                _ => vault.seal(user, &ctx, plaintext.as_bytes()).await?,
            });
        }
        let mut it = blobs.into_iter();
        let mut next = || it.next().unwrap_or_else(|| SealedBlob::new(Vec::new()));
        Ok(SealedCard {
            pan: next(),
            holder_name: next(),
            id_number: next(),
            phone: next(),
        })
    }

    /// Opens every sealed field of a binding, whose card was bound as
    /// `brand`. Returns the details (when all opened) and one
    /// `card_data.open` event per field for the caller to write with its
    /// change.
    pub(crate) async fn open_card(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        binding: &BindingId,
        brand: CardBrand,
        sealed: &SealedCard,
    ) -> (Result<CardDetails, OpenFailure>, Vec<AuditEvent>) {
        let mut events = Vec::new();
        let mut texts = Vec::new();
        let mut failure = None;
        for field in SealedField::ALL {
            let ctx_seal = SealContext::new(binding.as_str(), field.as_str());
            let opened = self
                .ports
                .vault
                .open(user, &ctx_seal, sealed.get(field))
                .await
                .map_err(|e| match e {
                    KeyError::Unavailable(_) | KeyError::StoreUnavailable(_) => {
                        OpenFailure::Unavailable(e)
                    }
                    KeyError::Refused(_) | KeyError::Erased => {
                        tracing::error!(%binding, %field, error = %e, "sealed card data refused to open");
                        OpenFailure::Unreadable
                    }
                })
                .and_then(|bytes| String::from_utf8(bytes).map_err(|_| OpenFailure::Unreadable));
            let e = ctx
                .event(self.now(), AuditAction::CardDataOpen)
                .user(user)
                .binding(binding)
                .detail(field.as_str());
            events.push(match &opened {
                Ok(_) => e.build(),
                Err(OpenFailure::Unavailable(KeyError::StoreUnavailable(_))) => {
                    e.refused(ErrorCode::StorageUnavailable).build()
                }
                Err(OpenFailure::Unavailable(_)) => {
                    e.refused(ErrorCode::KeyServiceUnavailable).build()
                }
                Err(OpenFailure::Unreadable) => e.refused(ErrorCode::CardDataUnreadable).build(),
            });
            match opened {
                Ok(t) => texts.push(t),
                Err(f) => {
                    failure = Some(f);
                    break;
                }
            }
        }
        if let Some(f) = failure {
            return (Err(f), events);
        }
        let parsed = (|| {
            let mut it = texts.into_iter();
            let mut next = || it.next().unwrap_or_default();
            Some(CardDetails {
                // Each as it was taken, under whichever build's rules (a
                // rule narrowed since must not make a card in review
                // unreadable): only its shape is checked.
                card: CardNumber::restore(&next(), brand)?,
                holder_name: HolderName::restore(&next())?,
                id_number: ResidentId::restore(&next())?,
                phone: Phone::restore(&next())?,
            })
        })();
        (parsed.ok_or(OpenFailure::Unreadable), events)
    }
}
