//! The master key that wraps data keys.

use async_trait::async_trait;
use cardbind_ports::error::KeyError;

use crate::datakey::DataKey;

/// A key-encryption key: makes keys and wraps/unwraps them, each wrapped
/// key bound to the owner it belongs to (AWS KMS encryption context, or the
/// associated data of the local key). The vault asks it for branch keys
/// (owner `@branch:0000000n`) only; users' data keys are wrapped under
/// those (see [`crate::branch`]).
///
/// Implementations: [`crate::LocalMasterKey`] and [`crate::KmsMasterKey`].
#[async_trait]
pub trait MasterKey: Send + Sync + 'static {
    /// The stable id stored beside every key this master key wraps
    /// ([`cardbind_ports::store::WrappedKey::master_key_id`]). Not secret.
    fn key_id(&self) -> &str;

    /// A fresh AES-256 data key for `owner`: the plaintext (zeroized on
    /// drop) and the same key wrapped under this master key.
    async fn generate_data_key(&self, owner: &str) -> Result<(DataKey, Vec<u8>), KeyError>;

    /// Unwraps a data key of `owner`. Always pinned to this master key: a
    /// key wrapped under any other master key, or for another owner, is
    /// `Refused`.
    async fn decrypt_data_key(&self, owner: &str, wrapped: &[u8]) -> Result<DataKey, KeyError>;

    /// Re-wraps a data key of `owner` from this master key to `to`, without
    /// the data key leaving the key service where it can avoid it (KMS
    /// `ReEncrypt`). The source side is pinned to this master key.
    async fn re_encrypt(&self, owner: &str, wrapped: &[u8], to: &Self)
        -> Result<Vec<u8>, KeyError>;
}
