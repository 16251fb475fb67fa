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

/// Reads a timestamp as whole Unix seconds from the injectable clock.
pub(crate) fn unix_seconds(clock: &dyn cardbind_ports::clock::Clock) -> i64 {
    clock.now().unix_seconds()
}
