//! Storage ports. Every adapter (in-memory, MongoDB) must pass the contract
//! suite in [`crate::testkit`]; the rules below are what it checks.
//!
//! No port here may rely on multi-document transactions: each method is one
//! atomic operation on one record (insert with a unique rule, conditional
//! update on a version, atomic increment, upsert).
//!
//! In every listing `limit` 0 returns nothing. A record that expires at `t`
//! (a lease, a counter, a seen id) is alive at `t` itself; purges delete
//! those whose instant is strictly before the one given.

use async_trait::async_trait;
use cardbind_domain::{
    Binding, BindingId, BindingStatus, ChannelName, Fingerprint, Timestamp, UserId,
};

use crate::error::StoreError;

/// Binding records and each user's default-card pointer.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait BindingStore: Send + Sync {
    /// Inserts a new binding.
    ///
    /// MUST return [`StoreError::Duplicate`] when a binding with the same
    /// `id`, or with the same (`user_id`, `fingerprint`) in any status,
    /// exists; under concurrent inserts of one (user, card) exactly one wins.
    async fn insert(&self, binding: &Binding) -> Result<(), StoreError>;

    /// Replaces the stored binding with `binding` if and only if the stored
    /// `version` equals `expected_version` (the caller has already bumped
    /// `binding.version`). MUST return [`StoreError::Conflict`] otherwise,
    /// also when the record is missing.
    async fn update(&self, binding: &Binding, expected_version: u64) -> Result<(), StoreError>;

    /// The binding with this id.
    async fn get(&self, id: &BindingId) -> Result<Option<Binding>, StoreError>;

    /// The binding of this user for this card fingerprint, in any status.
    async fn find_by_fingerprint(
        &self,
        user: &UserId,
        fingerprint: &Fingerprint,
    ) -> Result<Option<Binding>, StoreError>;

    /// The binding a channel knows by `channel_ref` on `channel`.
    async fn find_by_channel_ref(
        &self,
        channel: &ChannelName,
        channel_ref: &str,
    ) -> Result<Option<Binding>, StoreError>;

    /// A user's bindings ordered by id ascending, those with id greater than
    /// `after` when given, at most `limit`.
    async fn list_by_user(
        &self,
        user: &UserId,
        after: Option<BindingId>,
        limit: u32,
    ) -> Result<Vec<Binding>, StoreError>;

    /// Bindings in `status` whose `updated_at` is before `updated_before`
    /// (when given), ordered by id ascending, after `after`, at most `limit`.
    async fn list_by_status(
        &self,
        status: BindingStatus,
        updated_before: Option<Timestamp>,
        after: Option<BindingId>,
        limit: u32,
    ) -> Result<Vec<Binding>, StoreError>;

    /// The user's default pointer (may name a card that is no longer
    /// active; the domain's `Wallet` decides whether it is effective).
    async fn get_default(&self, user: &UserId) -> Result<Option<BindingId>, StoreError>;

    /// Sets the pointer to `new` if it currently equals `expected` (`None`:
    /// no pointer). Returns whether it changed. Atomic: of two concurrent
    /// calls with the same `expected`, at most one returns `true`.
    async fn replace_default(
        &self,
        user: &UserId,
        expected: Option<BindingId>,
        new: Option<BindingId>,
    ) -> Result<bool, StoreError>;
}

/// A response stored for an idempotency key, replayed byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// What [`IdempotencyStore::claim`] found for a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The caller now holds the key and must run the work, then `complete`
    /// or `release` it.
    Acquired,
    /// Another request holds the key and has not finished (lease unexpired).
    InProgress,
    /// The work is done: replay this response.
    Completed(StoredResponse),
    /// The key was used with a different request.
    Mismatch,
}

/// Idempotency records, scoped to the caller.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Claims (`scope`, `key`) for a request whose canonical hash is
    /// `request_hash`. A new key is recorded as in progress until
    /// `lease_until`; an in-progress record whose lease has expired (its
    /// holder crashed) is taken over. MUST be atomic across instances: of
    /// concurrent claims of one new key exactly one gets `Acquired`.
    async fn claim(
        &self,
        scope: &str,
        key: &str,
        request_hash: &str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Claim, StoreError>;

    /// Stores the final response for a key this caller holds.
    async fn complete(
        &self,
        scope: &str,
        key: &str,
        response: &StoredResponse,
    ) -> Result<(), StoreError>;

    /// Forgets an in-progress key (the work failed in a way the client may
    /// retry with the same key). Completed keys are left alone.
    async fn release(&self, scope: &str, key: &str) -> Result<(), StoreError>;

    /// Deletes records created before `before`. Returns how many.
    async fn purge_created_before(&self, before: Timestamp) -> Result<u64, StoreError>;
}

/// Fixed-window counters shared by all instances.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait RateCounter: Send + Sync {
    /// Adds one to counter `key` (which names its window) and returns the
    /// count including this event. The counter may be dropped after
    /// `expires_at`. MUST be atomic: N concurrent calls on one key return
    /// N distinct counts.
    async fn increment(&self, key: &str, expires_at: Timestamp) -> Result<u64, StoreError>;

    /// Deletes counters that expired before `now`. Returns how many.
    async fn purge_expired(&self, now: Timestamp) -> Result<u64, StoreError>;
}

/// A user's recorded consent to bind one card.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consent {
    pub id: String,
    pub binding_id: BindingId,
    pub user_id: UserId,
    /// The consent text version the user accepted.
    pub text_version: String,
    /// SHA-256 (hex) of that text as shown.
    pub text_hash: String,
    pub accepted_at: Timestamp,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub channel: ChannelName,
    pub agreement_id: Option<String>,
    pub revoked_at: Option<Timestamp>,
    pub revoked_by: Option<String>,
}

/// Consent records.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait ConsentLog: Send + Sync {
    /// Records a consent (ids are unique; `Duplicate` on reuse).
    async fn record(&self, consent: &Consent) -> Result<(), StoreError>;

    /// Sets the agreement id on the binding's unrevoked consents.
    async fn set_agreement(
        &self,
        binding: &BindingId,
        agreement_id: &str,
    ) -> Result<(), StoreError>;

    /// Marks every unrevoked consent of the binding revoked. Returns how many.
    async fn revoke(&self, binding: &BindingId, at: Timestamp, by: &str)
        -> Result<u64, StoreError>;

    /// Consents of a user (or all users when `None`), ordered by id, after
    /// `after`, at most `limit`.
    async fn list(
        &self,
        user: Option<UserId>,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<Consent>, StoreError>;
}

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
    /// one, or the one that won a concurrent insert).
    async fn put_if_absent(&self, key: &WrappedKey) -> Result<WrappedKey, StoreError>;

    /// Replaces the owner's key if its stored version is `expected_version`
    /// (`Conflict` otherwise).
    async fn replace(&self, key: &WrappedKey, expected_version: u64) -> Result<(), StoreError>;

    /// Deletes the owner's key. Returns whether one existed.
    async fn delete(&self, owner: &str) -> Result<bool, StoreError>;

    /// Keys ordered by owner, after `after`, at most `limit`.
    async fn list(&self, after: Option<String>, limit: u32) -> Result<Vec<WrappedKey>, StoreError>;
}
