//! The card vault: sealing card data, opening it, fingerprinting PANs.

use async_trait::async_trait;
use cardbind_domain::{CardNumber, Fingerprint, SealedBlob, UserId};

use crate::error::KeyError;

/// What a ciphertext is bound to: the record and the field it belongs to.
/// Opening with any other context MUST fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealContext {
    /// The record id (a binding id, or a reserved name such as `@canary`).
    pub record: String,
    /// The field name (`pan`, `holder_name`, `id_number`, `phone`, …).
    pub field: &'static str,
}

impl SealContext {
    pub fn new(record: impl Into<String>, field: &'static str) -> SealContext {
        SealContext {
            record: record.into(),
            field,
        }
    }
}

/// Envelope encryption of card data, per owner (user).
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait CardVault: Send + Sync {
    /// Seals `plaintext` under `owner`'s data key, bound to `context`.
    /// MUST return `Unavailable` (and nothing sealed) when the master key
    /// service cannot be reached.
    async fn seal(
        &self,
        owner: &UserId,
        context: &SealContext,
        plaintext: &[u8],
    ) -> Result<SealedBlob, KeyError>;

    /// As [`CardVault::seal`], for an owner the caller has reason to think
    /// has no data key yet (a user with nothing stored, or with no live
    /// card: erased, perhaps by another instance): the vault may make the
    /// key without first looking for one (one store round trip fewer), and
    /// MUST NOT seal under a key it remembers without asking the store (an
    /// erasure elsewhere deleted it; what is sealed under it would never
    /// open). A wrong guess costs a key made and dropped, never a second
    /// key for the owner: what is sealed is sealed under the owner's one
    /// key.
    async fn seal_for_new_owner(
        &self,
        owner: &UserId,
        context: &SealContext,
        plaintext: &[u8],
    ) -> Result<SealedBlob, KeyError> {
        self.seal(owner, context, plaintext).await
    }

    /// As [`CardVault::seal`], under the owner's key as the store holds it
    /// now: a key the vault remembers is used only while the store still
    /// holds it (another instance may have erased the owner, and a new key
    /// been made, since this one cached theirs: what is sealed under the
    /// erased key would never open). The owner's key is made when the
    /// store holds none. Costs a read of the store; the caller uses it once
    /// per sealing of a card, then [`CardVault::seal`] for its other
    /// fields.
    async fn seal_with_stored_key(
        &self,
        owner: &UserId,
        context: &SealContext,
        plaintext: &[u8],
    ) -> Result<SealedBlob, KeyError>;

    /// Opens a sealed value. MUST return `Refused` for a tampered value or
    /// one sealed for another record, field or owner, and `Erased` after
    /// the owner was erased; never wrong plaintext.
    async fn open(
        &self,
        owner: &UserId,
        context: &SealContext,
        sealed: &SealedBlob,
    ) -> Result<Vec<u8>, KeyError>;

    /// The keyed, versioned fingerprint of a PAN (same PAN → same value
    /// for one fingerprint key version).
    async fn fingerprint(&self, pan: &CardNumber) -> Result<Fingerprint, KeyError>;

    /// HMAC-SHA256 of `parts` for `purpose`, under a secret the vault keeps
    /// (stored only wrapped, like a data key): what a store keeps in place
    /// of request data that may hold card data (an idempotency key, the
    /// hash of a request body), so that the stored value cannot be undone
    /// by guessing what went in. The purpose and each part are framed by
    /// the vault (length-prefixed), so no two lists of parts, nor a byte
    /// moved from the purpose into a part, give the same input. The same
    /// purpose and parts give the same digest for as long as the vault's
    /// digest key exists. MUST return `Unavailable` when the key cannot be
    /// had.
    async fn keyed_digest<'p>(
        &self,
        purpose: &str,
        parts: &[&'p [u8]],
    ) -> Result<[u8; 32], KeyError>;

    /// Destroys `owner`'s key material (crypto-shredding). Returns whether
    /// there was any.
    async fn erase_owner(&self, owner: &UserId) -> Result<bool, KeyError>;

    /// Opens the start-up canary (sealing it on first start). MUST fail with
    /// a clear error when the master key is wrong or unreachable.
    async fn self_check(&self) -> Result<(), KeyError>;

    /// Whether sealing and opening go on for now without the master key:
    /// the key they need next (for an envelope vault, the active branch
    /// key) is held in memory and fresh. A readiness check tolerates an
    /// unreachable master key while this holds. `false` unless a vault
    /// knows better.
    fn serves_without_master_key(&self) -> bool {
        false
    }
}
