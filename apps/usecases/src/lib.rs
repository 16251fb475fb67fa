//! # cardbind-usecases
//!
//! The application layer: what the service does, one module per use case,
//! written only against the ports (`cardbind-ports`) and the domain
//! (`cardbind-domain`). The HTTP API and the command line call these and
//! nothing else.
//!
//! | module | use cases |
//! |---|---|
//! | [`bind`] | bind a card (and the channel start shared with review retry) |
//! | [`verify`] | confirm a card with its OTP |
//! | [`manage`] | read, list, set the default, unbind, freeze, unfreeze |
//! | [`review`] | the manual review queue: list, approve, reject, retry |
//! | [`notify`] | channels' notifications, reconciliation of pending cards |
//! | [`erase`] | erase a user (crypto-shredding) |
//! | [`family`] | family cards: share, accept, revoke, leave, the secondary's view |
//! | [`records`] | the audit log, its verification, consents |
//! | [`anchors`] | anchoring closed windows of the audit log, and checking them |
//! | [`bins`] | the card scheme of a BIN |
//! | [`readiness`] | whether the dependencies answer |
//! | [`sweep`] | the operator's sweep of card data and channel references no card holds |
//! | [`retention`] | purging what is past its retention |
//!
//! ## How a use case writes
//! A user's wallet (every card of the user and the default pointer) is read
//! whole, changed by the domain's rules, and written back as the next link
//! of the user's chain, together with the audit events of the change, by
//! one conditional write ([`cardbind_ports::store::WalletStore::commit`]).
//! A write that loses a race to another request reads the wallet again
//! and decides again ([`tx`]). Nothing else needs to be atomic: sealed card
//! data is written once the wallet names its generation (data no wallet
//! names is the sweep's, [`sweep`]), channel references are recorded
//! before the change that makes them a card's, and the review queue after
//! the card entered review (idempotently), so that any prefix of a use
//! case's writes is a state the next request, `reconcile`, the sweep or
//! the purge completes or removes.

pub mod anchors;
pub mod bind;
pub mod bins;
pub mod context;
pub mod erase;
pub mod error;
pub mod family;
pub mod manage;
pub mod notify;
pub mod readiness;
pub mod records;
pub mod retention;
pub mod review;
pub mod sweep;
pub mod tx;
pub mod verify;

mod access;
mod forget;
mod sealing;
mod unwanted;

use std::sync::Arc;

use cardbind_domain::{Binding, BindingId, ChannelName, Timestamp};
use cardbind_ports::channel::PaymentChannel;

pub use context::{Policy, Ports, RequestContext};

/// The use cases, over the ports they run on.
#[derive(Clone)]
pub struct UseCases {
    ports: Ports,
    policy: Policy,
}

/// A card as shown to its reader, with whether it is the default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardView {
    pub binding: Binding,
    pub is_default: bool,
}

/// A card in a user's list: one of their own, or one shared with them
/// (family card) that they may use now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listed {
    Own(CardView),
    Shared(family::SharedCardView),
}

impl Listed {
    /// The card's id in the user's list (a shared card's is its share id).
    pub fn id(&self) -> BindingId {
        match self {
            Listed::Own(v) => v.binding.id.clone(),
            Listed::Shared(s) => s.card_id(),
        }
    }

    /// The user's own card, if it is one.
    pub fn own(&self) -> Option<&CardView> {
        match self {
            Listed::Own(v) => Some(v),
            Listed::Shared(_) => None,
        }
    }

    pub fn is_default(&self) -> bool {
        match self {
            Listed::Own(v) => v.is_default,
            Listed::Shared(s) => s.is_default,
        }
    }

    /// The card's currency (from the BIN table when it was bound).
    pub fn currency(&self) -> Option<cardbind_domain::Currency> {
        match self {
            Listed::Own(v) => v.binding.card.currency(),
            Listed::Shared(s) => s.mirror.card.currency(),
        }
    }
}

/// One page of a user's cards, their own and those shared with them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalletPage {
    pub cards: Vec<Listed>,
    /// The id to pass as `after` for the next page, when there may be one.
    pub next: Option<BindingId>,
}

/// One page of cards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardPage {
    pub cards: Vec<CardView>,
    /// The id to pass as `after` for the next page, when there may be one.
    pub next: Option<BindingId>,
}

/// The page size every listing clamps to.
pub(crate) fn page_size(limit: u32, max: u32) -> usize {
    limit.clamp(1, max) as usize
}

impl UseCases {
    pub fn new(ports: Ports, policy: Policy) -> UseCases {
        UseCases { ports, policy }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The ports (e.g. to build use cases over one port swapped).
    pub fn ports(&self) -> &Ports {
        &self.ports
    }

    /// Whether risky operations need a step-up token.
    pub fn step_up_enabled(&self) -> bool {
        self.ports.step_up.is_some()
    }

    /// The use cases' clock (horizons of checks run beside them).
    pub fn now(&self) -> Timestamp {
        self.ports.clock.now()
    }

    fn channel(&self, name: &ChannelName) -> Option<Arc<dyn PaymentChannel>> {
        self.ports.channels.get(name)
    }
}
