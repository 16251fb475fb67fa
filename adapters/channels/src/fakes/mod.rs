//! Fake Alipay and WeChat Pay gateways for tests (cargo feature `fakes`,
//! off by default; test crates enable it as a dev-dependency only).
//!
//! Each fake is a real HTTP server on `127.0.0.1:0` that checks our
//! requests the way the real gateway does (signatures, common parameters,
//! timestamps, encrypted fields), keeps the agreements or contracts it was
//! asked about, signs its answers, and records every request it received
//! with whether it verified. It also plays the user's side: signing or
//! unsigning in the wallet app produces the signed asynchronous
//! notification the gateway would send, which the test then delivers to
//! the service under test.
//!
//! * [`FakeAlipay`]: `gateway.do`, RSA2 over the sorted parameters, AES
//!   content encryption, `alipay.user.agreement.{page.sign,query,unsign}`,
//!   form-encoded `dut_user_sign` / `dut_user_unsign` notifications.
//! * [`FakeWechat`]: API v3 with `WECHATPAY2-SHA256-RSA2048` authorization,
//!   `Wechatpay-*` signed answers, papay pre-entrust signing, contract query
//!   and termination, callbacks with AEAD_AES_256_GCM resources.
//!
//! The signing and verifying code here is written against the `rsa`,
//! `aes`/`cbc` and `aes-gcm` crates directly rather than through this
//! crate's channel code, so that a fake is an independent check of the
//! channels rather than their mirror.
//!
//! Keys: 2048-bit RSA key generation is slow in unoptimised builds, so a
//! fixed set of key pairs is generated once per process ([`test_key`]) and
//! shared by every fake of the process. Slot 0 is the merchant (our
//! application key), 1 the gateway/platform key, 2 a stranger's key (for
//! forgeries), 3 a second platform key.
//!
//! Nothing here belongs in production: the keys are throwaway, the
//! servers bind loopback only, and no card data is kept.

pub mod alipay;
mod keys;
mod server;
pub mod wechat;

pub use alipay::FakeAlipay;
pub use keys::{test_key, TestKey, MERCHANT, PLATFORM, PLATFORM_2, STRANGER};
pub use wechat::FakeWechat;

/// A fake that could not start or a simulation that could not run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("fake gateway: {0}")]
pub struct FakeError(pub String);

impl FakeError {
    pub(crate) fn new(msg: impl Into<String>) -> FakeError {
        FakeError(msg.into())
    }
}

/// One request a fake received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedRequest {
    /// Alipay: the `method` parameter; WeChat: `METHOD /path?query`.
    pub operation: String,
    /// Whether its signature and common fields verified.
    pub verified: bool,
    /// Why it was refused or failed, when it was (a verified request can
    /// still fail on purpose, e.g. an injected 503).
    pub refusal: Option<String>,
}

/// Standard base64 SHA256withRSA signature with the key in `slot`.
pub(crate) fn rsa_sign(slot: usize, msg: &[u8]) -> Result<String, FakeError> {
    use rsa::signature::{SignatureEncoding, Signer};
    let key = keys::test_key(slot)?;
    let sk = rsa::pkcs1v15::SigningKey::<rsa::sha2::Sha256>::new(key.private.clone());
    let sig = sk
        .try_sign(msg)
        .map_err(|e| FakeError::new(format!("signing: {e}")))?;
    Ok(base64::Engine::encode(&B64, sig.to_bytes()))
}

pub(crate) fn rsa_verify(key: &rsa::RsaPublicKey, msg: &[u8], sig_b64: &str) -> bool {
    use rsa::signature::Verifier;
    let Ok(raw) = base64::Engine::decode(&B64, sig_b64) else {
        return false;
    };
    let Ok(sig) = rsa::pkcs1v15::Signature::try_from(raw.as_slice()) else {
        return false;
    };
    rsa::pkcs1v15::VerifyingKey::<rsa::sha2::Sha256>::new(key.clone())
        .verify(msg, &sig)
        .is_ok()
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
