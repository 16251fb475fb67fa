//! What every HTTP handler shares: the use cases and the settings of the
//! HTTP edge (authentication, idempotency, limits, metrics).

use std::collections::BTreeMap;
use std::sync::Arc;

use cardbind_ports::clock::Clock;
use cardbind_ports::store::{IdempotencyStore, SeenIds};

/// How bearer tokens are checked.
#[derive(Clone)]
pub enum JwtKey {
    /// HMAC-SHA256 shared secret (the dev default; `cardbind token` signs with it).
    Hs256(Vec<u8>),
    /// RSA public key (PEM) of the identity provider.
    Rs256Pem(String),
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwtKey::Hs256(_) => f.write_str("Hs256(<secret>)"),
            JwtKey::Rs256Pem(_) => f.write_str("Rs256Pem(..)"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct AuthSettings {
    pub key: JwtKey,
    pub issuer: String,
    pub audience: String,
    /// Clock skew allowed on `exp`/`nbf`, seconds.
    pub leeway_seconds: u64,
    /// The longest a bearer token may live, seconds (0: no bound).
    pub max_token_lifetime_seconds: u64,
    /// `service` clients that must sign every request (client id = token
    /// subject → HMAC secret), keyed in lower case and matched without
    /// regard to case: a client id's case can change on its way through
    /// an environment variable, and a miss would let that client's
    /// requests through unsigned. Empty: signing not required.
    pub request_signing: BTreeMap<String, SigningSecret>,
    /// Accepted clock difference for signed requests, seconds (300).
    pub signature_window_seconds: i64,
}

#[derive(Clone)]
pub struct SigningSecret(pub Vec<u8>);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(<secret>)")
    }
}

#[derive(Clone, Debug)]
pub struct HttpSettings {
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Deepest JSON nesting accepted (400 beyond).
    pub max_json_depth: usize,
    /// How long an idempotency key is kept (at least 24 h).
    pub idempotency_retention_seconds: i64,
    /// How long a request waits for a concurrent one holding its key
    /// before answering 409 `idempotency_key_in_progress`.
    pub idempotency_wait_ms: u64,
    /// Lease on an idempotency key while its request runs.
    pub idempotency_lease_seconds: i64,
    /// Whether to trust `X-Forwarded-For` for the client IP.
    pub trust_forwarded_for: bool,
    /// Time for a whole request body to arrive (400 beyond).
    pub body_read_timeout: std::time::Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            max_body_bytes: 64 * 1024,
            max_json_depth: 16,
            idempotency_retention_seconds: 48 * 3600,
            idempotency_wait_ms: 10_000,
            idempotency_lease_seconds: 60,
            trust_forwarded_for: false,
            body_read_timeout: std::time::Duration::from_secs(30),
        }
    }
}

/// Shared by all handlers; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub usecases: cardbind_usecases::UseCases,
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub seen: Arc<dyn SeenIds>,
    pub clock: Arc<dyn Clock>,
    pub auth: Arc<AuthSettings>,
    pub http: Arc<HttpSettings>,
    pub metrics: prometheus::Registry,
    /// The BIN table in use and its store.
    pub bins: Arc<crate::bins::Bins>,
}
