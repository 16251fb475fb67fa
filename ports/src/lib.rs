//! # cardbind-ports
//!
//! What the core needs from the outside world: one small trait per concern
//! ([`store`], [`audit`], [`keys`], [`channel`], [`clock`], [`step_up`],
//! [`bins`]), each stating its contract in its rustdoc. Adapters
//! (`adapters/*`) implement them; the contract suite ([`testkit`], feature
//! `testkit`) checks every storage adapter against the same rules, and
//! mockall mocks of every trait come with the feature `mocks`.
//!
//! This crate never names a concrete database, KMS, HTTP framework or
//! payment channel, and holds no business rules: the use cases are the
//! `cardbind-usecases` crate (`apps/usecases`), written against these
//! traits. Adapters are chosen at the composition root (`apps/cardbind`)
//! and handed in as `Arc<dyn Port>`.

pub mod audit;
pub mod bins;
pub mod channel;
pub mod clock;
pub mod error;
pub mod keys;
pub mod step_up;
pub mod store;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

pub use error::{ChannelError, KeyError, StoreError};
