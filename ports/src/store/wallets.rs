use async_trait::async_trait;
use cardbind_domain::{Timestamp, UserId, Wallet};

use crate::audit::{AuditEvent, ChainHead};
use crate::error::StoreError;

/// A user's wallet as stored, with the head of the user's chain it is the
/// state of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredWallet {
    pub wallet: Wallet,
    pub head: ChainHead,
}

/// Where a link sits in time, for paging scans of links.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LinkKey {
    pub at: Timestamp,
    pub user: UserId,
    pub seq: u64,
}

/// A link whose wallet held a card in `pending_verification`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingLink {
    pub key: LinkKey,
}

/// Users' wallets: each user's chain of links, every link holding the whole
/// wallet as of that link and the audit events of the change that made it.
///
/// A wallet is small (a user's cards, bounded by the card cap) and read and
/// written whole: one read finds the newest link, one insert adds the next.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait WalletStore: Send + Sync {
    /// The user's wallet at the newest link of their chain, or `None` when
    /// nothing was ever stored for them. One round trip.
    async fn load(&self, user: &UserId) -> Result<Option<StoredWallet>, StoreError>;

    /// The wallets of `users` at the newest link of each one's chain, as
    /// [`WalletStore::load`] gives them, in one round trip whatever the
    /// number of users (the secondary's card list reads the wallets of the
    /// primaries who shared a card with them). Users with nothing stored
    /// are left out; a user named twice is returned once; the order is
    /// unspecified. An empty `users` returns nothing without a round trip.
    async fn load_many(&self, users: &[UserId]) -> Result<Vec<StoredWallet>, StoreError>;

    /// Stores `wallet` as the next link of its user's chain after `after`
    /// (`None`: the first link), with `events` (the audit events of this
    /// change, at least one), built by [`crate::audit::next_link`] at `now`.
    /// Returns the new head.
    ///
    /// MUST return [`StoreError::Conflict`] when `after` is not the newest
    /// link (another commit came first), and of concurrent commits after
    /// the same head exactly one succeeds, on every instance. A commit
    /// either stores the whole link or nothing. One round trip.
    async fn commit(
        &self,
        wallet: &Wallet,
        after: Option<ChainHead>,
        events: Vec<AuditEvent>,
        now: Timestamp,
    ) -> Result<ChainHead, StoreError>;

    /// Links stored at or after `from` and before `to` whose wallet held a
    /// card in `pending_verification` or `pending_review`
    /// (`BindingStatus::awaits_settlement`), ordered by [`LinkKey`], after
    /// `after`, at most `limit`. Candidates for reconciliation: the caller
    /// loads each user's wallet to see the cards' current state.
    async fn pending_links(
        &self,
        from: Timestamp,
        to: Timestamp,
        after: Option<LinkKey>,
        limit: u32,
    ) -> Result<Vec<PendingLink>, StoreError>;
}
