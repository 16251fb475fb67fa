use async_trait::async_trait;
use cardbind_domain::Timestamp;

use crate::error::StoreError;

/// A response stored for an idempotency key, replayed byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// The right to run the work of one key: the attempt number is the fencing
/// token. Every later call names it, and a holder whose attempt was taken
/// over can no longer complete, release or renew anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub attempt: u64,
}

/// The request hash of an attempt [`IdempotencyStore::forget`] gave up:
/// no request's (theirs are keyed digests in hex), and a released attempt
/// with it matches any request.
pub const FORGOTTEN_REQUEST: &str = "";

/// What [`IdempotencyStore::claim`] found for a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The caller holds the key with this lease and must run the work, then
    /// `complete` or `release` it.
    Acquired(Lease),
    /// Another request holds the key, until `lease_until` unless it
    /// renews its lease or finishes first.
    InProgress { lease_until: Timestamp },
    /// The work is done: replay this response.
    Completed(StoredResponse),
    /// The key was used with a different request.
    Mismatch,
}

/// Idempotency records, scoped to the caller.
///
/// A key's attempts are numbered 1, 2, …; each is created under a unique
/// (scope, key, attempt) and is the only place its holder writes.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Claims (`scope`, `key`) for a request whose canonical hash is
    /// `request_hash`: a new key gets attempt 1, in progress until
    /// `lease_until`. The newest attempt decides what a claim finds:
    /// another hash (mismatch, whatever the attempt's state: a released
    /// key stays bound to its request; one [`forget`](Self::forget) gave
    /// up matches any request), its response (completed), an
    /// unexpired lease (in progress); a released attempt or one whose lease
    /// expired (its holder died) is followed by a new attempt. MUST be atomic across
    /// instances: of concurrent claims that find the same state exactly one
    /// gets `Acquired`.
    async fn claim(
        &self,
        scope: &str,
        key: &str,
        request_hash: &str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Claim, StoreError>;

    /// Extends the lease of `lease`'s attempt. Returns `false` (changing
    /// nothing) when that attempt is no longer the newest or is finished.
    async fn renew(
        &self,
        scope: &str,
        key: &str,
        lease: Lease,
        lease_until: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Stores the final response of `lease`'s attempt. Returns `false`
    /// (storing nothing a claim would see) when a newer attempt exists (a
    /// late holder cannot complete the work of another) or the attempt
    /// was released or forgotten (its work was given up).
    async fn complete(
        &self,
        scope: &str,
        key: &str,
        lease: Lease,
        response: &StoredResponse,
    ) -> Result<bool, StoreError>;

    /// Gives up `lease`'s attempt (the work failed in a way the client may
    /// retry with the same key): the next claim starts a new attempt.
    /// Returns `false` (changing nothing) when a newer attempt exists or
    /// the attempt is finished.
    async fn release(&self, scope: &str, key: &str, lease: Lease) -> Result<bool, StoreError>;

    /// Gives up `lease`'s attempt of a request refused before anything
    /// ran (a malformed one), as [`release`](Self::release) does, and
    /// unbinds the key from that request: the next claim starts a new
    /// attempt whatever its hash, so that the client may send the request
    /// mended under the same key. Stored as a released attempt whose
    /// request hash is [`FORGOTTEN_REQUEST`] (which a build that does not
    /// know this reads as another request's: a mismatch, as before).
    /// Returns `false` (changing nothing) when a newer attempt exists or
    /// the attempt is finished.
    async fn forget(&self, scope: &str, key: &str, lease: Lease) -> Result<bool, StoreError>;

    /// Deletes the attempts created before `before` (a key whose attempts
    /// are all gone is new again). Returns how many records.
    async fn purge_created_before(&self, before: Timestamp) -> Result<u64, StoreError>;
}
