//! Storage ports. Every adapter (in-memory, embedded SQLite, MongoDB) must
//! pass the contract suite (`cardbind_ports::testkit`, feature `testkit`);
//! the rules stated on each trait are what it checks.
//!
//! No port relies on multi-document transactions, and none asks an adapter
//! for an atomic conditional update: every write that must be exclusive is
//! the creation of a record under a unique key (a wallet's next version, an
//! idempotency attempt, a rate slot, a seen id, a data-key version), which
//! is atomic on every store we support, including FerretDB 1.24 whose
//! conditional updates are not. Everything else is an idempotent write.
//!
//! In every listing `limit` 0 returns nothing. A record that expires at `t`
//! (a lease, a rate slot, a seen id) is alive at `t` itself; purges delete
//! those whose instant is strictly before the one given.

mod card_data;
mod data_keys;
mod idempotency;
mod rates;
mod review;
mod seen;
mod wallets;

pub use card_data::{
    CardData, CardDataKey, CardDataStore, ChannelRefEntry, ChannelRefs, RefTarget,
};
pub use data_keys::{DataKeyStore, WrappedKey};
pub use idempotency::{Claim, IdempotencyStore, Lease, StoredResponse, FORGOTTEN_REQUEST};
pub use rates::{RateLimiter, RateTake, RateWindow};
pub use review::{ReviewEntry, ReviewQueue};
pub use seen::SeenIds;
pub use wallets::{LinkKey, PendingLink, StoredWallet, WalletStore};

#[cfg(feature = "mocks")]
pub use card_data::{MockCardDataStore, MockChannelRefs};
#[cfg(feature = "mocks")]
pub use data_keys::MockDataKeyStore;
#[cfg(feature = "mocks")]
pub use idempotency::MockIdempotencyStore;
#[cfg(feature = "mocks")]
pub use rates::MockRateLimiter;
#[cfg(feature = "mocks")]
pub use review::MockReviewQueue;
#[cfg(feature = "mocks")]
pub use seen::MockSeenIds;
#[cfg(feature = "mocks")]
pub use wallets::MockWalletStore;
