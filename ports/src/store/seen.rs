use async_trait::async_trait;
use cardbind_domain::Timestamp;

use crate::error::StoreError;

/// Ids seen before: channel notification ids, signed-request nonces.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait SeenIds: Send + Sync {
    /// Whether (`namespace`, `id`) is recorded and unexpired at `now`.
    async fn seen(&self, namespace: &str, id: &str, now: Timestamp) -> Result<bool, StoreError>;

    /// Records (`namespace`, `id`) until `expires_at`. Returns `true` if it
    /// was not recorded before (or had expired). MUST be atomic across
    /// instances: of concurrent calls with one id exactly one gets `true`.
    async fn mark(
        &self,
        namespace: &str,
        id: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Deletes ids that expired before `now`. Returns how many.
    async fn purge_expired(&self, now: Timestamp) -> Result<u64, StoreError>;
}
