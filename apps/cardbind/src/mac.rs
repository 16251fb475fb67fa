//! The one keyed digest the service makes of its own messages: request
//! signatures, spent request nonces and step-up tokens.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Hex of HMAC-SHA256 of `message` under `secret`. HMAC takes keys of any
/// length, so the key is never refused; were it, the answer would be
/// empty, which no signature given equals.
pub(crate) fn hmac_sha256_hex(secret: &[u8], message: &[u8]) -> String {
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}
