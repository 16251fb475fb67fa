//! The HTTPS client the real channels share: rustls, TLS 1.2 at least.

use std::time::Duration;

use cardbind_ports::ChannelError;

use crate::config::ConfigError;

pub(crate) fn build_client(timeout: Duration) -> Result<reqwest::Client, ConfigError> {
    reqwest::Client::builder()
        .use_rustls_tls()
        .min_tls_version(reqwest::tls::Version::TLS_1_2)
        .https_only(false)
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("cardbind/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ConfigError::new("http client", e.to_string()))
}

/// A transport failure as a channel error; never quotes the URL.
pub(crate) fn transport_error(e: reqwest::Error) -> ChannelError {
    if e.is_timeout() {
        ChannelError::Timeout
    } else {
        let e = e.without_url();
        let kind = if e.is_connect() {
            "connection failed"
        } else if e.is_body() || e.is_decode() {
            "broken response body"
        } else {
            "request failed"
        };
        ChannelError::Unavailable(kind.to_owned())
    }
}

/// The largest answer body read from a channel. Their answers are a few
/// kilobytes; a gateway or proxy answering more (by mistake or on purpose)
/// is cut off rather than held in memory whole.
pub(crate) const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Reads an answer's body, at most [`MAX_ANSWER_BYTES`] (a longer one is
/// an answer we cannot use: `Protocol`, without reading the rest).
pub(crate) async fn read_body(mut resp: reqwest::Response) -> Result<bytes::Bytes, ChannelError> {
    let too_long =
        || ChannelError::Protocol(format!("answer longer than {MAX_ANSWER_BYTES} bytes"));
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
    {
        return Err(too_long());
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(too_long());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Reads a timestamp as whole Unix seconds from the injectable clock.
pub(crate) fn unix_seconds(clock: &dyn cardbind_ports::clock::Clock) -> i64 {
    clock.now().unix_seconds()
}

/// The longest channel code kept in a [`ChannelError::Misconfigured`].
const MAX_CODE: usize = 64;

/// `code`, from a channel's answer, cut down to what a stable code is made
/// of (ASCII letters, digits, `.`, `_`, `-`; at most 64): we do not let an
/// answer put arbitrary text into our logs, metrics or audit trail. Empty
/// when nothing is left.
pub(crate) fn clean_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(MAX_CODE)
        .collect()
}

/// A [`ChannelError::Misconfigured`] with `code` cleaned ([`clean_code`]),
/// `unknown` when nothing is left.
pub(crate) fn misconfigured(code: &str) -> ChannelError {
    let clean = clean_code(code);
    ChannelError::Misconfigured {
        code: if clean.is_empty() {
            "unknown".to_owned()
        } else {
            clean
        },
    }
}

/// Our codes for an answer whose signature our configured channel key does
/// not verify (see `docs/operations.md`, "Channel misconfigured").
pub(crate) mod codes {
    /// Signed, but not by the key we hold for the channel.
    pub const RESPONSE_SIGNATURE_INVALID: &str = "response_signature_invalid";
    /// Signed under a WeChat Pay platform key serial we do not hold.
    pub const PLATFORM_KEY_UNKNOWN: &str = "platform_key_unknown";
    /// Signed at a time more than the allowed skew away from our clock.
    pub const CLOCK_SKEW: &str = "clock_skew";
    /// A WeChat Pay callback whose signature verifies but whose resource
    /// does not decrypt with our APIv3 key.
    pub const APIV3_KEY_MISMATCH: &str = "apiv3_key_mismatch";
}
