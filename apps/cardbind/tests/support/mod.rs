//! An in-process cardbind for HTTP tests: memory store, local-key vault,
//! mock channel, and `poem::test::TestClient` over `cardbind::http::app`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use cardbind::http::app;
use cardbind::state::{AppState, AuthSettings, HttpSettings, JwtKey, SigningSecret};
use cardbind_channels::{MockChannel, MockConfig, MockMode};
use cardbind_domain::{BindingId, ChannelName, Timestamp};
use cardbind_keys::{EnvelopeVault, LocalMasterKey, VaultConfig};
use cardbind_memory::MemoryStore;
use cardbind_ports::channel::{ChannelRegistry, PaymentChannel};
use cardbind_ports::clock::{Clock, IdGenerator};
use cardbind_usecases::{Policy, Ports, UseCases};
use poem::endpoint::BoxEndpoint;
use poem::test::{TestClient, TestResponse};
use poem::EndpointExt;
use serde_json::{json, Value};

pub const JWT_SECRET: &[u8] = b"test-jwt-secret-that-is-long-enough";
pub const ISSUER: &str = "https://idp.test";
pub const AUDIENCE: &str = "cardbind";
pub const SIGNING_CLIENT: &str = "signed-merchant";
pub const SIGNING_SECRET: &[u8] = b"merchant-signing-secret";

/// A clock tests can move.
#[derive(Default)]
pub struct TestClock(AtomicI64);

impl TestClock {
    pub fn at(ms: i64) -> TestClock {
        TestClock(AtomicI64::new(ms))
    }
    pub fn advance_seconds(&self, s: i64) {
        self.0.fetch_add(s * 1000, Ordering::SeqCst);
    }
    pub fn set_ms(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_unix_millis(self.0.load(Ordering::SeqCst))
    }
}

struct Ids;

impl IdGenerator for Ids {
    fn binding_id(&self) -> BindingId {
        BindingId::parse(&uuid::Uuid::now_v7().to_string()).unwrap()
    }
    fn opaque_id(&self) -> String {
        uuid::Uuid::now_v7().to_string()
    }
    fn data_generation(&self) -> u32 {
        rand::random::<u32>().max(1)
    }
}

pub fn system_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub struct TestApp {
    pub client: TestClient<BoxEndpoint<'static>>,
    pub store: Arc<MemoryStore>,
    pub clock: Arc<TestClock>,
    pub state: AppState,
}

pub struct Options {
    pub http: HttpSettings,
    pub mock: MockConfig,
    pub jwt: JwtKey,
    /// The BIN table and its store.
    pub bins: cardbind::bins::Bins,
    /// Limits and channel card rules.
    pub policy: Policy,
    /// The local master key (instances of one deployment share it); a new
    /// one when `None`.
    pub master_key: Option<cardbind_keys::DataKey>,
}

impl Default for Options {
    fn default() -> Self {
        let mut card_modes = BTreeMap::new();
        card_modes.insert("4444".to_owned(), MockMode::Otp);
        card_modes.insert("0005".to_owned(), MockMode::Redirect);
        card_modes.insert("5100".to_owned(), MockMode::Decline);
        Options {
            http: HttpSettings {
                idempotency_wait_ms: 300,
                ..HttpSettings::default()
            },
            mock: MockConfig {
                mode: MockMode::Instant,
                card_modes,
                ..MockConfig::default()
            },
            jwt: JwtKey::Hs256(JWT_SECRET.to_vec()),
            bins: cardbind::bins::Bins::builtin_only(),
            policy: Policy::default(),
            master_key: None,
        }
    }
}

pub fn state_with(opts: Options) -> (AppState, Arc<MemoryStore>, Arc<TestClock>) {
    let store = MemoryStore::shared();
    let (state, clock) = state_on(store.clone(), opts);
    (state, store, clock)
}

/// An instance over an existing store (several instances may share one,
/// as several processes share a database). Each has its own clock, and its
/// own master key unless `opts.master_key` names one.
pub fn state_on(store: Arc<MemoryStore>, opts: Options) -> (AppState, Arc<TestClock>) {
    // One second into the current minute: rate windows are clock minutes,
    // so a test's binds never straddle a window by chance.
    let clock = Arc::new(TestClock::at(system_now_ms() / 60_000 * 60_000 + 1000));
    let master = match opts.master_key.clone() {
        Some(k) => LocalMasterKey::from_key(k),
        None => LocalMasterKey::generate(),
    };
    let vault = EnvelopeVault::new(master, store.clone(), VaultConfig::default());
    let mock: Arc<dyn PaymentChannel> = Arc::new(MockChannel::new(opts.mock));
    let channels = ChannelRegistry::new(vec![mock], ChannelName::parse("mock").unwrap()).unwrap();
    let ports = Ports {
        wallets: store.clone(),
        audit: store.clone(),
        card_data: store.clone(),
        channel_refs: store.clone(),
        rates: store.clone(),
        seen: store.clone(),
        idempotency: store.clone(),
        review: store.clone(),
        vault: Arc::new(vault),
        channels,
        bins: opts.bins.directory.clone(),
        clock: clock.clone(),
        ids: Arc::new(Ids),
        step_up: None,
    };
    let mut signing = BTreeMap::new();
    signing.insert(
        SIGNING_CLIENT.to_owned(),
        SigningSecret(SIGNING_SECRET.to_vec()),
    );
    let state = AppState {
        usecases: UseCases::new(ports, opts.policy),
        idempotency: store.clone(),
        seen: store.clone(),
        clock: clock.clone(),
        auth: Arc::new(AuthSettings {
            key: opts.jwt,
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            leeway_seconds: 0,
            max_token_lifetime_seconds: 86_400,
            request_signing: signing,
            signature_window_seconds: 300,
        }),
        http: Arc::new(opts.http),
        metrics: prometheus::Registry::new(),
        bins: Arc::new(opts.bins),
    };
    (state, clock)
}

pub fn spawn_with(opts: Options) -> TestApp {
    let (state, store, clock) = state_with(opts);
    let client = TestClient::new(app(state.clone()).boxed());
    TestApp {
        client,
        store,
        clock,
        state,
    }
}

/// An app over an existing store (see [`state_on`]).
pub fn spawn_on(store: Arc<MemoryStore>, opts: Options) -> TestApp {
    let (state, clock) = state_on(store.clone(), opts);
    let client = TestClient::new(app(state.clone()).boxed());
    TestApp {
        client,
        store,
        clock,
        state,
    }
}

pub fn spawn() -> TestApp {
    spawn_with(Options::default())
}

/// A token with these claims over the standard ones (HS256, test secret).
pub fn token_with(extra: Value) -> String {
    let now = system_now_ms() / 1000;
    let mut claims = json!({"iss": ISSUER, "aud": AUDIENCE, "exp": now + 3600, "iat": now});
    if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET),
    )
    .unwrap()
}

pub fn token(sub: &str, role: &str) -> String {
    token_with(json!({"sub": sub, "role": role}))
}

pub fn bearer(sub: &str, role: &str) -> String {
    format!("Bearer {}", token(sub, role))
}

pub const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

pub fn bind_body(card: &str) -> Value {
    let amex = card.starts_with("34") || card.starts_with("37");
    json!({
        "card_number": card,
        "expiry_month": 12,
        "expiry_year": 2035,
        "cvv": if amex { "1234" } else { "123" },
        "holder_name": "张三",
        "id_number": "11010519491231002X",
        "phone": "13800138000",
        "consent": {"text_version": "v1", "text_sha256": SHA}
    })
}

impl TestApp {
    /// POST a bind as `sub` (service role) for `user`.
    pub async fn bind(&self, user: &str, key: &str, body: &Value) -> TestResponse {
        self.client
            .post(format!("/v1/users/{user}/cards"))
            .header("Authorization", bearer("merchant", "service"))
            .header("Idempotency-Key", key)
            .content_type("application/json")
            .body(body.to_string())
            .send()
            .await
    }
}

/// The body of a response as bytes.
pub async fn bytes(resp: TestResponse) -> Vec<u8> {
    resp.0.into_body().into_vec().await.unwrap()
}

/// The body of a response as JSON.
pub async fn json_of(resp: TestResponse) -> Value {
    serde_json::from_slice(&bytes(resp).await).unwrap()
}

/// Asserts an error envelope with this status and code; returns it.
pub async fn assert_error(resp: TestResponse, status: u16, code: &str) -> Value {
    let got = resp.0.status().as_u16();
    let request_id = resp
        .0
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let v = json_of(resp).await;
    assert_eq!(
        (got, v["error"]["code"].as_str().unwrap_or("<none>")),
        (status, code),
        "body: {v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    assert_eq!(
        v["error"]["request_id"].as_str(),
        request_id.as_deref(),
        "request id in body and header"
    );
    v
}

/// The page of the audit log `query` selects (e.g. `card_id=…&limit=1`),
/// read by an auditor through the API: its events and `next_after`.
pub async fn audit_page(app: &TestApp, query: &str) -> Value {
    let resp = app
        .client
        .get(format!("/v1/audit/events?{query}"))
        .header("Authorization", bearer("auditor-1", "auditor"))
        .send()
        .await;
    resp.assert_status_is_ok();
    json_of(resp).await
}

/// The audit events of [`audit_page`].
pub async fn audit_events(app: &TestApp, query: &str) -> Vec<Value> {
    audit_page(app, query).await["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}
