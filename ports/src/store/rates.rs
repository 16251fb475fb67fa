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
}

/// Fixed-window rate limits shared by all instances.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Takes one slot in each window (independently; one answer per
    /// window, in order). MUST hold the limit across instances: of any
    /// number of concurrent takers of one window, at most `limit` get
    /// `Taken`, and while fewer than `limit` slots are taken a take
    /// succeeds. Typically one round trip for all windows.
    async fn take(
        &self,
        windows: &[RateWindow],
        now: Timestamp,
    ) -> Result<Vec<RateTake>, StoreError>;

    /// Deletes slots of windows that expired before `now`. Returns how many.
    async fn purge_expired(&self, now: Timestamp) -> Result<u64, StoreError>;
}
