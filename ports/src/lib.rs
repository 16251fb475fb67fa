//! # cardbind-ports
//!
//! What the core needs from the outside world and what it offers to it.
//!
//! * Outbound ports: one small trait per concern ([`store`], [`keys`],
//!   [`channel`], [`audit`], [`clock`], [`step_up`], [`bins`]). Each states its contract in its
//!   rustdoc; adapters (`adapters/*`) implement them and the contract suite
//!   in [`testkit`] checks every storage adapter against the same rules.
//! * Use cases: [`service::CardService`], written only against those traits.
//!
//! This crate never names a concrete database, KMS, HTTP framework or
//! payment channel. Adapters are chosen at the composition root (`apps/`)
//! and handed in as `Arc<dyn Port>`.

pub mod audit;
pub mod bins;
pub mod channel;
pub mod clock;
pub mod error;
pub mod keys;
pub mod service;
pub mod step_up;
pub mod store;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

pub use error::{ChannelError, KeyError, ServiceError, StoreError};
