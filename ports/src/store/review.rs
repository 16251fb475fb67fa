use async_trait::async_trait;
use cardbind_domain::{BindingId, Timestamp, UserId};

use crate::error::StoreError;

/// A card waiting in the manual review queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReviewEntry {
    pub binding: BindingId,
    pub user: UserId,
    pub since: Timestamp,
}

/// The manual review queue: an index of the cards in `pending_review`.
///
/// The wallet is the truth; an entry is added after a card enters review
/// and removed after it leaves, so readers check the wallet and skip (and
/// remove) entries whose card is no longer in review.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait ReviewQueue: Send + Sync {
    /// Adds an entry; adding one that exists keeps the first.
    async fn add(&self, entry: &ReviewEntry) -> Result<(), StoreError>;

    /// The entry of a card, if queued.
    async fn get(&self, binding: &BindingId) -> Result<Option<ReviewEntry>, StoreError>;

    /// Removes a card's entry; not an error when absent.
    async fn remove(&self, binding: &BindingId) -> Result<(), StoreError>;

    /// Entries ordered by binding id, after `after`, at most `limit`.
    async fn list(
        &self,
        after: Option<BindingId>,
        limit: u32,
    ) -> Result<Vec<ReviewEntry>, StoreError>;
}
