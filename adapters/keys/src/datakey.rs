//! Plaintext data keys: 32 bytes, zeroized on drop, never printed.

use std::fmt;

use cardbind_ports::error::KeyError;
use rand::rngs::OsRng;
use rand::RngCore;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of a data key (AES-256).
pub const DATA_KEY_LEN: usize = 32;

/// A plaintext AES-256 data key. Its bytes are wiped when it is dropped and
/// its `Debug` output never shows them.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DataKey([u8; DATA_KEY_LEN]);

impl DataKey {
    /// A fresh random key from the operating system's generator.
    pub fn generate() -> DataKey {
        let mut bytes = [0u8; DATA_KEY_LEN];
        OsRng.fill_bytes(&mut bytes);
        DataKey(bytes)
    }

    /// Copies a key out of `bytes` (which the caller should wipe).
    /// Refuses any length other than 32.
    pub fn from_slice(bytes: &[u8]) -> Result<DataKey, KeyError> {
        let arr: [u8; DATA_KEY_LEN] = bytes
            .try_into()
            .map_err(|_| KeyError::Refused(format!("a data key has {DATA_KEY_LEN} bytes")))?;
        Ok(DataKey(arr))
    }

    /// Takes the key out of `bytes` and wipes `bytes`.
    pub fn from_vec(mut bytes: Vec<u8>) -> Result<DataKey, KeyError> {
        let key = DataKey::from_slice(&bytes);
        bytes.zeroize();
        key
    }

    /// The key bytes. Use only to key a cipher or a MAC.
    pub fn expose(&self) -> &[u8; DATA_KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}
