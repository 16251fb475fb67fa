//! Throwaway RSA key pairs, generated once per process.

use std::sync::OnceLock;

use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::{RsaPrivateKey, RsaPublicKey};

use super::FakeError;

/// Slot of the merchant's (our application's) key pair.
pub const MERCHANT: usize = 0;
/// Slot of the gateway's (Alipay's / WeChat Pay platform) key pair.
pub const PLATFORM: usize = 1;
/// Slot of a key nobody trusts (forged answers and notifications).
pub const STRANGER: usize = 2;
/// Slot of a second WeChat Pay platform key.
pub const PLATFORM_2: usize = 3;

const SLOTS: usize = 4;

/// A test key pair and its PEM forms.
pub struct TestKey {
    pub private: RsaPrivateKey,
    pub public: RsaPublicKey,
    /// PKCS#8 (`BEGIN PRIVATE KEY`).
    pub private_pem: String,
    /// PKCS#1 (`BEGIN RSA PRIVATE KEY`).
    pub private_pkcs1_pem: String,
    /// SPKI (`BEGIN PUBLIC KEY`).
    pub public_pem: String,
}

impl std::fmt::Debug for TestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestKey(<throwaway>)")
    }
}

fn generate() -> Result<TestKey, String> {
    let private = RsaPrivateKey::new(&mut rand::thread_rng(), 2048)
        .map_err(|e| format!("key generation: {e}"))?;
    let public = private.to_public_key();
    Ok(TestKey {
        private_pem: private
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| format!("PKCS#8: {e}"))?
            .to_string(),
        private_pkcs1_pem: private
            .to_pkcs1_pem(LineEnding::LF)
            .map_err(|e| format!("PKCS#1: {e}"))?
            .to_string(),
        public_pem: public
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| format!("SPKI: {e}"))?,
        private,
        public,
    })
}

/// The key pair in `slot` (see the module docs of [`crate::fakes`]): all
/// slots are generated together, in parallel, on first use (2048 bits).
pub fn test_key(slot: usize) -> Result<&'static TestKey, FakeError> {
    static KEYS: OnceLock<Result<Vec<TestKey>, String>> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        let handles: Vec<_> = (0..SLOTS).map(|_| std::thread::spawn(generate)).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| "key generation thread failed".to_owned())?
            })
            .collect()
    });
    match keys {
        Ok(keys) => keys
            .get(slot)
            .ok_or_else(|| FakeError::new(format!("no test key slot {slot}"))),
        Err(e) => Err(FakeError::new(e.clone())),
    }
}
