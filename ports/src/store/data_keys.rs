use async_trait::async_trait;
use cardbind_domain::Timestamp;

use crate::error::StoreError;

/// A data key wrapped by a master key (KMS or local), stored per owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrappedKey {
    /// Whose key: a user id, or a reserved name such as `@fingerprint`.
    pub owner: String,
    /// The master key that wrapped it (KMS key id/ARN, or local key id).
    pub master_key_id: String,
    pub wrapped: Vec<u8>,
    /// Bumped on every re-wrap; `replace` is conditional on it.
    pub version: u64,
    pub created_at: Timestamp,
}

/// Wrapped data keys (for crypto-shredding: deleting one makes its owner's
/// ciphertexts unreadable).
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait DataKeyStore: Send + Sync {
    async fn get(&self, owner: &str) -> Result<Option<WrappedKey>, StoreError>;

    /// Inserts `key` unless the owner has one; returns the stored key (this
    /// one, or the one that won a concurrent insert). An owner whose key
    /// was deleted may get a new one (a user erased and binding again).
    async fn put_if_absent(&self, key: &WrappedKey) -> Result<WrappedKey, StoreError>;

    /// Replaces the owner's key if the stored one is the same key (its
    /// `created_at`: a re-wrap keeps it) at `expected_version` (`Conflict`
    /// otherwise, also when the key was deleted, or deleted and made again
    /// for the owner, which starts at version 1 again: a re-wrap that
    /// races an erasure never brings the key back nor replaces the new
    /// one). Of concurrent replaces of one version at most one succeeds.
    async fn replace(&self, key: &WrappedKey, expected_version: u64) -> Result<(), StoreError>;

    /// Deletes the owner's key, every stored copy of it (crypto-shredding).
    /// Returns whether one existed.
    async fn delete(&self, owner: &str) -> Result<bool, StoreError>;

    /// Keys ordered by owner, after `after`, at most `limit`.
    async fn list(&self, after: Option<String>, limit: u32) -> Result<Vec<WrappedKey>, StoreError>;
}
