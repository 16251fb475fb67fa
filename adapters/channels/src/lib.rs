//! # cardbind-channels
//!
//! Implementations of the [`PaymentChannel`](cardbind_ports::channel::PaymentChannel)
//! port:
//!
//! * [`MockChannel`]: deterministic modes for demos and black-box tests
//!   (`instant`, `otp`, `redirect`, `decline`, `timeout`, `flaky`) and
//!   HMAC-signed mock notifications.
//! * [`AlipayChannel`]: Alipay OpenAPI (`gateway.do`), RSA2 request and
//!   response signatures, optional AES content encryption, the personal
//!   agreement APIs and their asynchronous notifications.
//! * [`WechatChannel`]: WeChat Pay API v3 (`WECHATPAY2-SHA256-RSA2048`),
//!   verified responses and callbacks, AEAD_AES_256_GCM callback resources,
//!   RSA-OAEP sensitive fields, entrusted-debit (papay) contracts.
//! * [`Resilient`]: a decorator around any channel adding a per-call
//!   timeout, bounded retries with backoff on transient failures, a circuit
//!   breaker, prometheus metrics, and an error log line and audit event for
//!   every misconfiguration.
//!
//! Both real channels tell a refusal of the card or the user (`Rejected`,
//! `ChannelStart::Refused`) from a refusal of our own credentials or
//! configuration (`ChannelError::Misconfigured`, from the channel's public
//! error codes: see [`alipay::is_configuration_code`] and
//! [`wechat::CONFIGURATION_CODES`]), and treat an answer that our configured
//! channel key cannot verify as a misconfiguration too.
//!
//! With the `fakes` feature (tests only), [`fakes`] holds fake Alipay and
//! WeChat Pay gateways that verify what they receive and sign what they
//! send.
//!
//! Keys are given as PEM text or as a path to a PEM file (see [`keys`]).
//! No type of this crate prints a key, a secret or card data in `Debug`,
//! and no error or log line carries them.

pub mod alipay;
mod config;
mod crypto;
#[cfg(feature = "fakes")]
pub mod fakes;
mod http;
pub mod keys;
pub mod mock;
pub mod refs;
pub mod resilience;
pub mod wechat;

/// The name each channel is known by (requests, paths, metrics), and the
/// default `name` of its adapter.
pub mod names {
    pub const MOCK: &str = "mock";
    pub const ALIPAY: &str = "alipay";
    pub const WECHAT: &str = "wechat";
}

/// A channel's message that could not be read (its signature, where it
/// has one, verified).
pub(crate) fn protocol(msg: impl Into<String>) -> cardbind_ports::error::ChannelError {
    cardbind_ports::error::ChannelError::Protocol(msg.into())
}

pub use alipay::{AlipayChannel, AlipayConfig};
pub use config::ConfigError;
pub use mock::{MockChannel, MockConfig, MockMode};
pub use resilience::{ResilienceConfig, Resilient};
pub use wechat::{WechatChannel, WechatConfig, OWN_PRESIGN_FIELDS as WECHAT_OWN_PRESIGN_FIELDS};
