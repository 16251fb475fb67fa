use async_trait::async_trait;
use cardbind_domain::{BindingId, Timestamp, UserId};

use crate::error::StoreError;

/// A card waiting in the manual review queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReviewEntry {
    pub binding: BindingId,
    pub user: UserId,
    pub since: Timestamp,
    /// The number of the link of the owner's chain whose change put the
    /// card in review (the chain's head after that change; 0 in entries
    /// stored by older versions). A change that took the card out of
    /// review removes the entries placed at its own link or before, never
    /// one a later stint in review placed.
    pub link: u64,
}

/// The manual review queue: an index of the cards in `pending_review`.
///
/// The wallet is the truth; an entry is added after a card enters review
/// and removed after it leaves, so readers check the wallet and skip (and
/// remove) entries whose card is no longer in review. Both writes follow
/// the change they index and may land late: an entry carries the link of
/// the change that queued the card, and a removal names the link of the
/// change (or the read) that saw the card out of review, so that a late
/// removal leaves the entry of a card that entered review again since.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait ReviewQueue: Send + Sync {
    /// Adds an entry. An entry of the card already stored is replaced
    /// when its `link` is lower (a stint in review that ended, its removal
    /// lost), and kept otherwise (adding again keeps the first of a
    /// stint).
    async fn add(&self, entry: &ReviewEntry) -> Result<(), StoreError>;

    /// The entry of a card, if queued.
    async fn get(&self, binding: &BindingId) -> Result<Option<ReviewEntry>, StoreError>;

    /// Removes the card's entry if its `link` is `upto` or lower (one
    /// placed after the change numbered `upto` stays); not an error when
    /// absent. `u64::MAX` removes any entry of the card.
    async fn remove(&self, binding: &BindingId, upto: u64) -> Result<(), StoreError>;

    /// Entries ordered by binding id, after `after`, at most `limit`.
    async fn list(
        &self,
        after: Option<BindingId>,
        limit: u32,
    ) -> Result<Vec<ReviewEntry>, StoreError>;
}
