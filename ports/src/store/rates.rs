use async_trait::async_trait;
use cardbind_domain::Timestamp;

use crate::error::StoreError;

/// One fixed window of one rule: at most `limit` events under `key` (which
/// names the rule, the subject and the window) until `expires_at`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateWindow {
    pub key: String,
    pub limit: u64,
    pub expires_at: Timestamp,
}

/// What taking a slot in a window gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateTake {
    /// This event holds slot `n` (1 ≤ n ≤ limit).
    Taken(u64),
    /// Every slot of the window is taken.
    Full,
    /// The window had a free slot, but another window of the same take was
    /// full, so none was kept: a refused event costs no window anything.
    Untaken,
}

/// Fixed-window rate limits shared by all instances.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Takes one slot in each window, or none: one answer per window, in
    /// order. When every window has room, each answer is `Taken`; when any
    /// is full, those are `Full`, the others `Untaken`, and no slot is
    /// kept in any of them (an event one limit refuses does not count
    /// against the others: a client retrying a bind the user's limit
    /// refused must not use up the card's hourly limit). MUST hold the
    /// limit across instances: of any number of concurrent takers of one
    /// window, at most `limit` get `Taken`, and while fewer than `limit`
    /// slots are taken or held a take succeeds (a slot held by a take
    /// that is giving it back may refuse a concurrent one). Typically one
    /// round trip for all windows; a refused take may cost one more (to
    /// give its slots back).
    async fn take(
        &self,
        windows: &[RateWindow],
        now: Timestamp,
    ) -> Result<Vec<RateTake>, StoreError>;

    /// Deletes slots of windows that expired before `now`. Returns how many.
    async fn purge_expired(&self, now: Timestamp) -> Result<u64, StoreError>;
}
