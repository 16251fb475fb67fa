//! How values are kept in columns, and read back.

use cardbind_domain::{BindingId, ChannelName, Timestamp, UserId};
use cardbind_ports::audit::ChainId;
use cardbind_ports::StoreError;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::corrupt;

/// How a chain is named in the `chain` columns: its stored name, so that
/// SQLite's byte order is [`ChainId`]'s order.
pub(crate) fn chain_key(c: &ChainId) -> &str {
    c.as_str()
}

pub(crate) fn chain_of(key: &str) -> Result<ChainId, StoreError> {
    ChainId::parse(key).ok_or_else(|| corrupt("a stored chain name does not parse"))
}

pub(crate) fn user(s: &str) -> Result<UserId, StoreError> {
    UserId::parse(s).map_err(|_| corrupt("a stored user id does not parse"))
}

pub(crate) fn binding(s: &str) -> Result<BindingId, StoreError> {
    BindingId::parse(s).map_err(|_| corrupt("a stored binding id does not parse"))
}

pub(crate) fn channel(s: &str) -> Result<ChannelName, StoreError> {
    ChannelName::parse(s).map_err(|_| corrupt("a stored channel name does not parse"))
}

pub(crate) fn ms(t: Timestamp) -> i64 {
    t.unix_millis()
}

pub(crate) fn at(v: i64) -> Timestamp {
    Timestamp::from_unix_millis(v)
}

/// `u64` → the `INTEGER` column (63 bits).
pub(crate) fn int(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v)
        .map_err(|_| StoreError::Unavailable(format!("sqlite: {what} does not fit in 63 bits")))
}

/// The `INTEGER` column → `u64`.
pub(crate) fn uint(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| corrupt(format!("{what} is negative")))
}

/// A link hash (64 hex digits) as the 32 bytes stored; `None` when it is
/// not one (then it matches no stored hash).
pub(crate) fn hash_bytes(hex: &str) -> Option<Vec<u8>> {
    hex::decode(hex).ok().filter(|b| b.len() == 32)
}

pub(crate) fn hash_hex(bytes: &[u8]) -> Result<String, StoreError> {
    if bytes.len() == 32 {
        Ok(hex::encode(bytes))
    } else {
        Err(corrupt("a stored link hash is not 32 bytes"))
    }
}

pub(crate) fn to_json<T: Serialize>(v: &T, what: &str) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Unavailable(format!("sqlite: {what}: {e}")))
}

/// Parses a stored JSON record. The parser's message is left out: it may
/// quote the stored text.
pub(crate) fn from_json<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| {
        corrupt(format!(
            "{what} does not parse (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}
