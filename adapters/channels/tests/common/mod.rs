//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cardbind_domain::{
    BindingId, CardNumber, Expiry, HolderName, Phone, ResidentId, UserId,
};
use cardbind_ports::channel::ChannelBindRequest;

pub fn resident_id() -> String {
    let first17 = "11010519491231002";
    format!("{first17}{}", ResidentId::check_char(first17).unwrap())
}

pub fn bind_request(binding_id: &str) -> ChannelBindRequest {
    bind_request_with_card(binding_id, "4111111111111111")
}

pub fn bind_request_with_card(binding_id: &str, pan: &str) -> ChannelBindRequest {
    ChannelBindRequest {
        binding_id: BindingId::parse(binding_id).unwrap(),
        user_id: UserId::parse("user-1").unwrap(),
        card: CardNumber::parse(pan).unwrap(),
        expiry: Expiry::parse(12, 2030, (2025, 1)).unwrap(),
        cvv: None,
        holder_name: HolderName::parse("张三").unwrap(),
        id_number: ResidentId::parse(&resident_id()).unwrap(),
        phone: Phone::parse("13800138000").unwrap(),
    }
}

pub fn bid(s: &str) -> BindingId {
    BindingId::parse(s).unwrap()
}

use std::sync::OnceLock;

use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::{RsaPrivateKey, RsaPublicKey};

/// A test key pair with its PEM forms.
pub struct TestKey {
    pub private: RsaPrivateKey,
    pub public: RsaPublicKey,
    /// PKCS#8.
    pub private_pem: String,
    /// PKCS#1.
    pub private_pkcs1_pem: String,
    /// SPKI.
    pub public_pem: String,
}

/// Key pairs generated once per test binary (2048 bits, in parallel).
/// Slots: 0 merchant, 1 Alipay / WeChat platform, 2 a stranger, 3 a second
/// platform key.
pub fn key(slot: usize) -> &'static TestKey {
    static KEYS: OnceLock<Vec<TestKey>> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    let private = RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
                    let public = private.to_public_key();
                    TestKey {
                        private_pem: private.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
                        private_pkcs1_pem: private.to_pkcs1_pem(LineEnding::LF).unwrap().to_string(),
                        public_pem: public.to_public_key_pem(LineEnding::LF).unwrap(),
                        private,
                        public,
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    &keys[slot]
}

/// Standard base64 SHA256withRSA signature (independent of the crate).
pub fn rsa_sign(key: &RsaPrivateKey, msg: &[u8]) -> String {
    use base64::Engine as _;
    use rsa::signature::{SignatureEncoding, Signer};
    let sk = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key.clone());
    base64::engine::general_purpose::STANDARD.encode(sk.sign(msg).to_bytes())
}

pub fn rsa_verify(key: &RsaPublicKey, msg: &[u8], sig_b64: &str) -> bool {
    use base64::Engine as _;
    use rsa::signature::Verifier;
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(sig_b64) else {
        return false;
    };
    let Ok(sig) = rsa::pkcs1v15::Signature::try_from(raw.as_slice()) else {
        return false;
    };
    rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key.clone())
        .verify(msg, &sig)
        .is_ok()
}

/// Serves `f` on 127.0.0.1:0; returns `http://127.0.0.1:PORT`.
pub async fn serve<F, Fut>(f: F) -> String
where
    F: Fn(poem::Request) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = poem::Response> + Send + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = poem::listener::TcpAcceptor::from_std(listener).unwrap();
    tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(poem::endpoint::make(f)));
    format!("http://{addr}")
}

/// A clock fixed at (or moved to) a given instant.
pub struct FixedClock(pub std::sync::atomic::AtomicI64);

impl FixedClock {
    pub fn at_millis(ms: i64) -> std::sync::Arc<FixedClock> {
        std::sync::Arc::new(FixedClock(std::sync::atomic::AtomicI64::new(ms)))
    }
}

impl cardbind_ports::clock::Clock for FixedClock {
    fn now(&self) -> cardbind_domain::Timestamp {
        cardbind_domain::Timestamp::from_unix_millis(self.0.load(std::sync::atomic::Ordering::SeqCst))
    }
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
