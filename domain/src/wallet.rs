//! The default-card rule over one user's bindings.
//!
//! The default is a single pointer per user (stored once, not a flag on each
//! card), so two defaults cannot exist by construction. A pointer is only
//! *effective* while it names an active card of that user; when the default
//! card stops being active the next one is promoted by [`Wallet::promotion`]:
//! the active card activated most recently (ties: the greatest id).

use crate::binding::{Binding, BindingId, BindingStatus};
use crate::error::{DomainError, ErrorCode};

/// One user's bindings and their default pointer.
#[derive(Clone, Debug)]
pub struct Wallet<'a> {
    pub bindings: &'a [Binding],
    pub default: Option<&'a BindingId>,
}

impl<'a> Wallet<'a> {
    pub fn new(bindings: &'a [Binding], default: Option<&'a BindingId>) -> Self {
        Wallet { bindings, default }
    }

    fn active(&self) -> impl Iterator<Item = &'a Binding> {
        self.bindings
            .iter()
            .filter(|b| b.status == BindingStatus::Active)
    }

    /// The default card, if the pointer names an active card.
    pub fn effective_default(&self) -> Option<&'a BindingId> {
        let d = self.default?;
        self.active().any(|b| &b.id == d).then_some(d)
    }

    /// Whether `id` is the effective default.
    pub fn is_default(&self, id: &BindingId) -> bool {
        self.effective_default() == Some(id)
    }

    /// The card that should become default when there is no effective one.
    pub fn promotion(&self) -> Option<&'a BindingId> {
        self.active()
            .max_by(|a, b| (a.activated_at, &a.id).cmp(&(b.activated_at, &b.id)))
            .map(|b| &b.id)
    }

    /// What the pointer should be after a change: kept while effective,
    /// else the promotion. `None` means "no change needed".
    pub fn repair(&self) -> Option<Option<BindingId>> {
        if self.effective_default().is_some() {
            return None;
        }
        let next = self.promotion().cloned();
        (next.as_ref() != self.default).then_some(next)
    }

    /// Checks that `id` can be made the default: an active card of this user.
    pub fn check_can_default(&self, id: &BindingId) -> Result<(), DomainError> {
        match self.bindings.iter().find(|b| &b.id == id) {
            None => Err(DomainError::new(ErrorCode::NotFound, "no such card")),
            Some(b) if b.status != BindingStatus::Active => Err(DomainError::new(
                ErrorCode::InvalidStateTransition,
                format!("a {} card cannot be the default", b.status),
            )),
            Some(_) => Ok(()),
        }
    }

    /// How many cards hold a (user, card) slot.
    pub fn live_count(&self) -> u32 {
        self.bindings.iter().filter(|b| b.status.is_live()).count() as u32
    }
}
