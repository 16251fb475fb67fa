//! # cardbind-tests
//!
//! Black-box suites: every test starts the real service in-process on a
//! free port ([`TestApp::spawn`], after zero2prod's `spawn_app`), with its
//! own temp data dir and its own store (in memory, or a fresh MongoDB
//! database named at random), and talks to it over HTTP only.
//!
//! Also here: valid test data made from scratch (Luhn-valid card numbers
//! per brand, resident ID numbers with their ISO 7064 MOD 11-2 check
//! character, mobile numbers), bearer tokens per role, and a FerretDB of a
//! test's own that it may stop and restart ([`OwnFerretDb`]).
//!
//! Tests that need a real service read it from the environment
//! (`CARDBIND_TEST_MONGODB_URI`, `CARDBIND_TEST_KMS_ENDPOINT`, set by
//! `scripts/test-services.sh`). When it is missing they print
//! `skipped: …` and return — unless `CI=true`, where a missing service is a
//! failure ([`required_env`]).

// Test support: a setup step that fails must stop the test at once, with
// the reason; there is no caller to hand an error to.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cardbind::cli::{self, Running};
use cardbind::compose::Stores;
use cardbind::config::{Config, LogFormat, MockModeSetting, StorageKind};
use cardbind_domain::Role;
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};

pub use cardbind;
pub use serde_json;

// ---------------------------------------------------------------------------
// Environment: required services

/// Reads `var`. When it is unset or empty: with `CI=true` this panics (a CI
/// run must not silently skip), otherwise it prints `skipped: …` and
/// returns `None` so that the test can return early.
pub fn required_env(var: &str, why: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(v),
        _ => {
            if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
                panic!("{var} is not set but CI=true: {why} (run under scripts/test-services.sh)");
            }
            eprintln!(
                "skipped: {var} is not set ({why}); run under `bash scripts/test-services.sh`"
            );
            None
        }
    }
}

/// The MongoDB (FerretDB) connection string for tests, or `None` (skip).
pub fn mongo_uri() -> Option<String> {
    required_env(
        "CARDBIND_TEST_MONGODB_URI",
        "this test needs MongoDB/FerretDB",
    )
}

/// The KMS (moto) endpoint for tests, or `None` (skip).
pub fn kms_endpoint() -> Option<String> {
    required_env(
        "CARDBIND_TEST_KMS_ENDPOINT",
        "this test needs a KMS endpoint (moto)",
    )
}

/// A database name no other test uses.
pub fn fresh_db_name() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("cbt_{}", &id[..20])
}

// ---------------------------------------------------------------------------
// Random test data

/// `n` random decimal digits.
pub fn random_digits(n: usize) -> String {
    let mut out = String::with_capacity(n);
    while out.len() < n {
        for b in uuid::Uuid::new_v4().as_bytes() {
            // 250 = 25 * 10: drop the top bytes to avoid bias.
            if *b < 250 && out.len() < n {
                out.push(char::from(b'0' + b % 10));
            }
        }
    }
    out
}

/// `n` random lowercase ASCII letters.
pub fn random_letters(n: usize) -> String {
    let mut out = String::with_capacity(n);
    while out.len() < n {
        for b in uuid::Uuid::new_v4().as_bytes() {
            if *b < 234 && out.len() < n {
                out.push(char::from(b'a' + b % 26));
            }
        }
    }
    out
}

/// A unique user id (`prefix-…`).
pub fn user_id(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// A unique idempotency key.
pub fn idem_key() -> String {
    format!("idem-{}", uuid::Uuid::new_v4())
}

/// Whether `digits` passes the Luhn (mod 10) check.
pub fn luhn_valid(digits: &str) -> bool {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let d2 = d * 2;
                if d2 > 9 {
                    d2 - 9
                } else {
                    d2
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The Luhn check digit to append to `partial` (computed, not searched).
pub fn luhn_check_digit(partial: &str) -> char {
    assert!(partial.bytes().all(|b| b.is_ascii_digit()), "digits only");
    // The check digit will sit at index 0 from the right, so the digits of
    // `partial` at even index from its right end get doubled.
    let sum: u32 = partial
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 0 {
                let d2 = d * 2;
                if d2 > 9 {
                    d2 - 9
                } else {
                    d2
                }
            } else {
                d
            }
        })
        .sum();
    char::from(b'0' + ((10 - sum % 10) % 10) as u8)
}

/// A Luhn-valid number of `len` digits starting with `prefix`.
pub fn card_number(prefix: &str, len: usize) -> String {
    assert!(prefix.len() < len, "prefix shorter than the number");
    let body = format!("{prefix}{}", random_digits(len - 1 - prefix.len()));
    let check = luhn_check_digit(&body);
    format!("{body}{check}")
}

/// A Luhn-valid number of `len` digits starting with `prefix` and ending
/// with `last4` (the mock channel picks per-card modes by last four). The
/// fifth digit from the right is not doubled by Luhn, so one of its ten
/// values makes the sum right.
pub fn card_number_ending(prefix: &str, len: usize, last4: &str) -> String {
    assert!(last4.len() == 4 && prefix.len() + 5 <= len);
    let middle = random_digits(len - prefix.len() - 5);
    for d in 0..10u8 {
        let n = format!("{prefix}{middle}{}{last4}", char::from(b'0' + d));
        if luhn_valid(&n) {
            return n;
        }
    }
    unreachable!("one of ten digits always completes a Luhn sum")
}

/// Card schemes, with a prefix in their range, a length they issue and
/// their CVV length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Brand {
    Visa,
    Mastercard,
    Amex,
    UnionPay,
    Jcb,
    Discover,
    DinersClub,
    Maestro,
    Mir,
}

impl Brand {
    pub const ALL: [Brand; 9] = [
        Brand::Visa,
        Brand::Mastercard,
        Brand::Amex,
        Brand::UnionPay,
        Brand::Jcb,
        Brand::Discover,
        Brand::DinersClub,
        Brand::Maestro,
        Brand::Mir,
    ];

    /// (IIN prefix, length)
    pub fn shape(self) -> (&'static str, usize) {
        match self {
            Brand::Visa => ("4", 16),
            Brand::Mastercard => ("51", 16),
            Brand::Amex => ("37", 15),
            Brand::UnionPay => ("62", 16),
            Brand::Jcb => ("3530", 16),
            Brand::Discover => ("6011", 16),
            Brand::DinersClub => ("36", 14),
            Brand::Maestro => ("6759", 16),
            Brand::Mir => ("2201", 16),
        }
    }

    pub fn cvv_len(self) -> usize {
        if self == Brand::Amex {
            4
        } else {
            3
        }
    }

    /// The brand's name in the API.
    pub fn api_name(self) -> &'static str {
        match self {
            Brand::Visa => "visa",
            Brand::Mastercard => "mastercard",
            Brand::Amex => "amex",
            Brand::UnionPay => "unionpay",
            Brand::Jcb => "jcb",
            Brand::Discover => "discover",
            Brand::DinersClub => "diners_club",
            Brand::Maestro => "maestro",
            Brand::Mir => "mir",
        }
    }
}

const ID_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];

/// The ISO 7064 MOD 11-2 check character of 17 digits (GB 11643).
pub fn resident_id_check(first17: &str) -> char {
    assert!(first17.len() == 17 && first17.bytes().all(|b| b.is_ascii_digit()));
    let sum: u32 = first17
        .bytes()
        .zip(ID_WEIGHTS)
        .map(|(b, w)| u32::from(b - b'0') * w)
        .sum();
    // (12 - sum mod 11) mod 11, with 10 written X.
    match (12 - sum % 11) % 11 {
        10 => 'X',
        n => char::from(b'0' + n as u8),
    }
}

/// A valid resident ID number: Beijing Dongcheng, a birth date in the
/// 1980s–90s, a random sequence and its check character.
pub fn resident_id() -> String {
    let r = random_digits(8);
    let n = |i: usize| u32::from(r.as_bytes()[i] - b'0');
    let year = 1980 + n(0) * 2 + n(1) % 2;
    let month = 1 + (n(2) * 10 + n(3)) % 12;
    let day = 1 + (n(4) * 10 + n(5)) % 28;
    let first17 = format!("110101{year:04}{month:02}{day:02}{}", random_digits(3));
    let check = resident_id_check(&first17);
    format!("{first17}{check}")
}

/// A mainland mobile number, 11 digits (`13x`, `15x`, `18x`, `19x`).
pub fn phone() -> String {
    let second = ['3', '5', '8', '9'][usize::from(random_digits(1).as_bytes()[0] - b'0') % 4];
    format!("1{second}{}", random_digits(9))
}

/// A holder name unique enough to search for.
pub fn holder_name() -> String {
    let mut first = random_letters(7);
    first[..1].make_ascii_uppercase();
    format!("Zhang {first}")
}

/// A valid card expiry three years ahead.
pub fn future_expiry() -> (u32, u32) {
    let now = time::OffsetDateTime::now_utc();
    (u32::from(u8::from(now.month())), (now.year() + 3) as u32)
}

/// The consent text every test accepts, and its SHA-256 hex.
pub const CONSENT_TEXT: &str =
    "I agree that my card is bound for recurring payments (test text v1).";

pub fn consent_sha256() -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(CONSENT_TEXT.as_bytes()))
}

/// One card and its holder, all valid.
#[derive(Clone, Debug)]
pub struct TestCard {
    pub brand: Brand,
    pub number: String,
    pub expiry_month: u32,
    pub expiry_year: u32,
    pub cvv: String,
    pub holder_name: String,
    pub id_number: String,
    pub phone: String,
}

impl TestCard {
    pub fn new(brand: Brand) -> TestCard {
        let (prefix, len) = brand.shape();
        TestCard::with_number(brand, card_number(prefix, len))
    }

    /// A card whose number ends with `last4`.
    pub fn ending(brand: Brand, last4: &str) -> TestCard {
        let (prefix, len) = brand.shape();
        TestCard::with_number(brand, card_number_ending(prefix, len, last4))
    }

    pub fn visa() -> TestCard {
        TestCard::new(Brand::Visa)
    }

    fn with_number(brand: Brand, number: String) -> TestCard {
        let (m, y) = future_expiry();
        // A CVV that cannot pass for a year, an hour or a day: starts 7–9.
        let first = ['7', '8', '9'][usize::from(random_digits(1).as_bytes()[0] - b'0') % 3];
        let cvv = format!("{first}{}", random_digits(brand.cvv_len() - 1));
        let card = TestCard {
            brand,
            number,
            expiry_month: m,
            expiry_year: y,
            cvv,
            holder_name: holder_name(),
            id_number: resident_id(),
            phone: phone(),
        };
        leaks::register(&card);
        card
    }

    pub fn bin6(&self) -> &str {
        &self.number[..6]
    }

    pub fn last4(&self) -> &str {
        &self.number[self.number.len() - 4..]
    }

    /// The bind request body for this card (mock channel by default).
    pub fn body(&self) -> Value {
        json!({
            "card_number": self.number,
            "expiry_month": self.expiry_month,
            "expiry_year": self.expiry_year,
            "cvv": self.cvv,
            "holder_name": self.holder_name,
            "id_number": self.id_number,
            "phone": self.phone,
            "consent": {
                "text_version": "2024-06",
                "text_sha256": consent_sha256(),
                "ip": "203.0.113.7",
                "user_agent": "cardbind-tests/1.0"
            }
        })
    }

    /// Strings that must never appear in clear anywhere outside the
    /// request: the number, the resident ID, the phone (national digits,
    /// also inside its +86 form), and the hidden middle of the number.
    pub fn secrets(&self) -> Vec<(&'static str, String)> {
        let n = &self.number;
        vec![
            ("card number", n.clone()),
            (
                "hidden middle digits of the card number",
                n[6..n.len() - 4].to_owned(),
            ),
            ("resident id number", self.id_number.clone()),
            (
                "resident id number (first 17)",
                self.id_number[..17].to_owned(),
            ),
            ("phone", self.phone.clone()),
        ]
    }
}

// ---------------------------------------------------------------------------
// Responses

/// A response, read whole.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// How long the request took.
    pub elapsed: Duration,
}

impl Response {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    pub fn error_code(&self) -> Option<String> {
        self.json()["error"]["code"].as_str().map(str::to_owned)
    }

    pub fn error_field(&self) -> Option<String> {
        self.json()["error"]["field"].as_str().map(str::to_owned)
    }

    /// A short description for assertion messages.
    pub fn describe(&self) -> String {
        let t = self.text();
        let t = if t.len() > 600 {
            format!("{}…", &t[..600])
        } else {
            t
        };
        format!("HTTP {}: {}", self.status, t)
    }

    /// Asserts the error envelope `{"error":{"code","message","request_id",
    /// "field"?}}` with this status and code; returns the `error` object.
    pub fn assert_error(&self, status: u16, code: &str) -> Value {
        assert_eq!(
            self.status,
            status,
            "expected {status} {code}, got {}",
            self.describe()
        );
        let e = assert_envelope(self);
        assert_eq!(
            e["code"],
            code,
            "expected code {code}, got {}",
            self.describe()
        );
        e
    }

    /// Asserts the status is 2xx; returns the JSON body.
    pub fn ok(&self) -> Value {
        assert!(
            (200..300).contains(&self.status),
            "expected 2xx, got {}",
            self.describe()
        );
        self.json()
    }

    pub fn expect_status(&self, status: u16) -> Value {
        assert_eq!(
            self.status,
            status,
            "expected {status}, got {}",
            self.describe()
        );
        self.json()
    }
}

/// Asserts that `r` carries the error envelope (any 4xx/5xx); returns
/// the `error` object.
pub fn assert_envelope(r: &Response) -> Value {
    let ct = r.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("application/json"),
        "error content-type should be JSON, got {ct:?} ({})",
        r.describe()
    );
    let v = r.json();
    let e = v.get("error").cloned().unwrap_or(Value::Null);
    assert!(e.is_object(), "no error envelope: {}", r.describe());
    assert!(
        e["code"].as_str().is_some_and(
            |c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        ),
        "error.code not snake_case: {}",
        r.describe()
    );
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error.message missing: {}",
        r.describe()
    );
    assert!(
        e["request_id"].as_str().is_some_and(|m| !m.is_empty()),
        "error.request_id missing: {}",
        r.describe()
    );
    if let Some(f) = e.get("field") {
        assert!(
            f.is_string() || f.is_null(),
            "error.field must be a string: {}",
            r.describe()
        );
    }
    e
}

// ---------------------------------------------------------------------------
// The app

/// Where a test app keeps its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Storage {
    /// The embedded SQLite store under the app's data dir: what `cardbind
    /// serve` runs on by default.
    Embedded,
    /// In-memory store.
    Memory,
    /// MongoDB at `CARDBIND_TEST_MONGODB_URI`, in a fresh database.
    Mongo,
    /// MongoDB at this URI (a test's own FerretDB), in a fresh database.
    MongoAt(String),
}

/// The defaults every test starts from.
pub fn base_config(data_dir: &Path) -> Config {
    let mut cfg = Config::default();
    cfg.server.address = "127.0.0.1:0".into();
    cfg.server.data_dir = data_dir.to_path_buf();
    cfg.server.purge_interval_seconds = 0;
    cfg.channels.mock.mode = MockModeSetting::Otp;
    cfg.log.format = LogFormat::Json;
    cfg
}

/// A running service and what a test needs to talk to it.
pub struct TestApp {
    pub config: Config,
    pub base_url: String,
    pub client: reqwest::Client,
    running: Option<Running>,
    secret: Vec<u8>,
    dir: Arc<tempfile::TempDir>,
}

impl TestApp {
    /// Starts an app on the embedded store (the default `serve`); `tweak`
    /// adjusts the config first.
    pub async fn spawn(tweak: impl FnOnce(&mut Config)) -> TestApp {
        TestApp::spawn_on(Storage::Embedded, tweak)
            .await
            .expect("an embedded app never skips")
    }

    /// Starts an app on `storage`; `None` when that storage is not
    /// available here (the test should return: it printed `skipped`).
    pub async fn spawn_on(storage: Storage, tweak: impl FnOnce(&mut Config)) -> Option<TestApp> {
        let (cfg, dir) = TestApp::config_on(storage, tweak)?;
        Some(TestApp::start(cfg, Arc::new(dir), None).await)
    }

    /// As [`TestApp::spawn_on`], on the stores `open` makes from the final
    /// configuration (e.g. a MongoDB store whose commands the test counts,
    /// see `cardbind::compose::stores::mongo`), wired as `serve` wires them.
    pub async fn spawn_on_stores<F, Fut>(
        storage: Storage,
        tweak: impl FnOnce(&mut Config),
        open: F,
    ) -> Option<TestApp>
    where
        F: FnOnce(Config) -> Fut,
        Fut: std::future::Future<Output = Stores>,
    {
        let (cfg, dir) = TestApp::config_on(storage, tweak)?;
        let stores = open(cfg.clone()).await;
        Some(TestApp::start(cfg, Arc::new(dir), Some(stores)).await)
    }

    /// The configuration of an app on `storage` in a new temp dir.
    fn config_on(
        storage: Storage,
        tweak: impl FnOnce(&mut Config),
    ) -> Option<(Config, tempfile::TempDir)> {
        let dir = tempfile::Builder::new()
            .prefix("cardbind-test-")
            .tempdir()
            .expect("temp dir");
        let mut cfg = base_config(&dir.path().join("data"));
        match storage {
            Storage::Embedded => cfg.storage.kind = StorageKind::Sqlite,
            Storage::Memory => cfg.storage.kind = StorageKind::Memory,
            Storage::Mongo => {
                cfg.storage.kind = StorageKind::Mongodb;
                cfg.storage.uri = mongo_uri()?;
                cfg.storage.database = fresh_db_name();
            }
            Storage::MongoAt(uri) => {
                cfg.storage.kind = StorageKind::Mongodb;
                cfg.storage.uri = uri;
                cfg.storage.database = fresh_db_name();
            }
        }
        tweak(&mut cfg);
        Some((cfg, dir))
    }

    async fn start(config: Config, dir: Arc<tempfile::TempDir>, stores: Option<Stores>) -> TestApp {
        leaks::capture_logs();
        config.validate().expect("test config is valid");
        let secret = cardbind::compose::jwt_secret(&config).expect("jwt secret");
        let running = match stores {
            None => cli::start(config.clone()).await,
            Some(s) => {
                let built = cardbind::compose::build_on(&config, s)
                    .await
                    .expect("the service builds on the stores given");
                cli::start_built(config.clone(), built).await
            }
        }
        .expect("the service starts");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client");
        TestApp {
            base_url: running.base_url.clone(),
            config,
            client,
            running: Some(running),
            secret,
            dir,
        }
    }

    /// A second instance on the same configuration, data dir (master key,
    /// JWT secret) and database: what two replicas behind a balancer are.
    pub async fn spawn_peer(&self) -> TestApp {
        TestApp::start(self.config.clone(), self.dir.clone(), None).await
    }

    /// The running service (its `built` ports, e.g. for the data dir).
    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.server.data_dir
    }

    /// Stops the service and waits for it.
    pub async fn stop(&mut self) {
        self.assert_no_leaks();
        if let Some(r) = self.running.take() {
            r.stop().await.expect("the service stops cleanly");
        }
    }

    /// No test card's number, CVV, resident ID or phone in anything this
    /// process logged (debug level) or in the service's metrics.
    pub fn assert_no_leaks(&self) {
        leaks::assert_clean(&leaks::logs(), "the service's logs");
        if let Some(r) = &self.running {
            let mut text = String::new();
            let _ = prometheus::TextEncoder::new()
                .encode_utf8(&r.built.state.metrics.gather(), &mut text);
            leaks::assert_clean(&text, "the metrics");
        }
    }

    // ---- tokens -----------------------------------------------------------

    pub fn token(&self, sub: &str, role: Role) -> String {
        cardbind::compose::dev_token(&self.config, &self.secret, sub, role, 3600).expect("token")
    }

    /// A merchant backend.
    pub fn service_token(&self) -> String {
        self.token("merchant-backend", Role::Service)
    }

    pub fn user_token(&self, user: &str) -> String {
        self.token(user, Role::User)
    }

    pub fn admin_token(&self) -> String {
        self.token("ops-admin", Role::Admin)
    }

    pub fn auditor_token(&self) -> String {
        self.token("auditor-1", Role::Auditor)
    }

    // ---- requests ---------------------------------------------------------

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Sends one request. `body` is sent as-is with `content_type`.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<(Vec<u8>, &str)>,
    ) -> Response {
        self.try_send(method, path, token, headers, body)
            .await
            .unwrap_or_else(|e| panic!("request to {path} failed: {e}"))
    }

    /// As [`TestApp::send`], but a transport failure is returned (with its
    /// cause chain) instead of failing the test.
    pub async fn try_send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<(Vec<u8>, &str)>,
    ) -> Result<Response, String> {
        let mut rb = self.client.request(method, self.url(path));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some((bytes, ct)) = body {
            rb = rb.header("content-type", ct).body(bytes);
        }
        let started = Instant::now();
        let chain = |e: reqwest::Error| {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            msg
        };
        let resp = rb.send().await.map_err(chain)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map(|b| b.to_vec()).map_err(chain)?;
        leaks::assert_clean(
            &String::from_utf8_lossy(&body),
            &format!("the body of {path}"),
        );
        Ok(Response {
            status,
            headers,
            body,
            elapsed: started.elapsed(),
        })
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.send(Method::GET, path, Some(token), &[], None).await
    }

    pub async fn post_json(&self, path: &str, token: &str, body: &Value) -> Response {
        self.send(
            Method::POST,
            path,
            Some(token),
            &[],
            Some((body.to_string().into_bytes(), "application/json")),
        )
        .await
    }

    pub async fn post_empty(&self, path: &str, token: &str) -> Response {
        self.send(Method::POST, path, Some(token), &[], None).await
    }

    /// `POST /v1/users/{user}/cards` with `body`, as `token`, with an
    /// `Idempotency-Key` when given.
    pub async fn bind_raw(
        &self,
        token: &str,
        user: &str,
        body: Vec<u8>,
        key: Option<&str>,
    ) -> Response {
        let headers: Vec<(&str, &str)> = key.map(|k| ("idempotency-key", k)).into_iter().collect();
        self.send(
            Method::POST,
            &format!("/v1/users/{user}/cards"),
            Some(token),
            &headers,
            Some((body, "application/json")),
        )
        .await
    }

    pub async fn bind_body(&self, user: &str, body: &Value, key: &str) -> Response {
        self.bind_raw(
            &self.service_token(),
            user,
            body.to_string().into_bytes(),
            Some(key),
        )
        .await
    }

    /// Binds `card` for `user` as the merchant backend.
    pub async fn bind(&self, user: &str, card: &TestCard, key: &str) -> Response {
        self.bind_body(user, &card.body(), key).await
    }

    /// Binds with a fresh key and asserts 201/202; returns the card JSON.
    pub async fn bind_ok(&self, user: &str, card: &TestCard) -> Value {
        let r = self.bind(user, card, &idem_key()).await;
        assert!(r.status == 201 || r.status == 202, "bind: {}", r.describe());
        r.json()
    }

    pub async fn verify(&self, user: &str, card_id: &str, otp: &str) -> Response {
        self.post_json(
            &format!("/v1/users/{user}/cards/{card_id}/verify"),
            &self.service_token(),
            &json!({ "otp": otp }),
        )
        .await
    }

    pub async fn get_card(&self, user: &str, card_id: &str) -> Response {
        self.get(
            &format!("/v1/users/{user}/cards/{card_id}"),
            &self.service_token(),
        )
        .await
    }

    /// Every card of `user` (all pages), asserting 200s.
    pub async fn list_cards(&self, user: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..100 {
            let path = match &after {
                Some(a) => format!("/v1/users/{user}/cards?limit=100&after={a}"),
                None => format!("/v1/users/{user}/cards?limit=100"),
            };
            let r = self.get(&path, &self.service_token()).await;
            let v = r.expect_status(200);
            let cards = v["cards"]
                .as_array()
                .unwrap_or_else(|| panic!("no cards array: {}", r.describe()));
            out.extend(cards.iter().cloned());
            match v["next_after"].as_str() {
                Some(n) if !n.is_empty() => after = Some(n.to_owned()),
                _ => return out,
            }
        }
        panic!("more than 100 pages of cards");
    }

    pub async fn unbind(&self, user: &str, card_id: &str) -> Response {
        self.send(
            Method::DELETE,
            &format!("/v1/users/{user}/cards/{card_id}"),
            Some(&self.service_token()),
            &[],
            None,
        )
        .await
    }

    pub async fn set_default(&self, user: &str, card_id: &str) -> Response {
        self.send(
            Method::PUT,
            &format!("/v1/users/{user}/cards/{card_id}/default"),
            Some(&self.service_token()),
            &[],
            None,
        )
        .await
    }

    pub async fn admin_action(
        &self,
        token: &str,
        user: &str,
        card_id: &str,
        action: &str,
    ) -> Response {
        self.post_empty(
            &format!("/v1/admin/users/{user}/cards/{card_id}/{action}"),
            token,
        )
        .await
    }

    pub async fn reviews(&self) -> Response {
        self.get("/v1/admin/reviews", &self.admin_token()).await
    }

    /// `approve` (with an empty JSON object: no channel reference) or
    /// `reject`, as an admin.
    pub async fn review_decision(&self, card_id: &str, decision: &str) -> Response {
        let path = format!("/v1/admin/reviews/{card_id}/{decision}");
        if decision == "approve" {
            self.post_json(&path, &self.admin_token(), &json!({})).await
        } else {
            self.post_empty(&path, &self.admin_token()).await
        }
    }

    /// A mock notification body and its `x-mock-signature`, signed with
    /// the configured secret (HMAC-SHA256, hex).
    pub fn mock_notification(&self, id: &str, binding_id: &str, event: &str) -> (Vec<u8>, String) {
        let body = json!({
            "id": id,
            "binding_id": binding_id,
            "event": event,
            "channel_ref": format!("mock_{binding_id}"),
        })
        .to_string()
        .into_bytes();
        let sig = hmac_hex(self.config.channels.mock.notify_secret.as_bytes(), &body);
        (body, sig)
    }

    /// `POST /v1/channels/{channel}/notify` (no bearer token: channels sign).
    pub async fn notify(&self, channel: &str, body: Vec<u8>, signature: Option<&str>) -> Response {
        let headers: Vec<(&str, &str)> = signature
            .map(|s| ("x-mock-signature", s))
            .into_iter()
            .collect();
        self.send(
            Method::POST,
            &format!("/v1/channels/{channel}/notify"),
            None,
            &headers,
            Some((body, "application/json")),
        )
        .await
    }
}

/// A request sent over a plain TCP connection the way a careful client
/// does it: the body is written while the response is read, writing stops
/// at the first error (the server may answer early and stop reading), and
/// whatever response arrived is parsed. `head` is the request line and
/// headers without the final blank line; `Content-Length` is added.
pub async fn raw_http(
    addr: std::net::SocketAddr,
    head: &str,
    body: Vec<u8>,
) -> Result<Response, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = Instant::now();
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut rd, mut wr) = stream.into_split();
    let head = format!(
        "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let writer = tokio::spawn(async move {
        if wr.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        for chunk in body.chunks(64 * 1024) {
            if wr.write_all(chunk).await.is_err() {
                return;
            }
        }
        let _ = wr.flush().await;
    });
    let mut buf = Vec::new();
    let mut tmp = vec![0u8; 64 * 1024];
    let read_err = loop {
        match tokio::time::timeout(Duration::from_secs(30), rd.read(&mut tmp)).await {
            Ok(Ok(0)) => break None,
            Ok(Ok(n)) => {
                buf.extend_from_slice(&tmp[..n]);
                if let Some(r) = parse_raw_response(&buf) {
                    writer.abort();
                    return Ok(Response {
                        elapsed: started.elapsed(),
                        ..r
                    });
                }
            }
            Ok(Err(e)) => break Some(e.to_string()),
            Err(_) => break Some("no response within 30 s".into()),
        }
    };
    writer.abort();
    parse_raw_response(&buf)
        .map(|r| Response {
            elapsed: started.elapsed(),
            ..r
        })
        .ok_or_else(|| {
            format!(
                "no complete HTTP response ({} bytes read; {})",
                buf.len(),
                read_err.unwrap_or_else(|| "closed".into())
            )
        })
}

/// A complete HTTP/1.1 response in `buf` (Content-Length or chunked).
fn parse_raw_response(buf: &[u8]) -> Option<Response> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let mut headers = HeaderMap::new();
    for l in lines {
        let (k, v) = l.split_once(':')?;
        let name = reqwest::header::HeaderName::from_bytes(k.trim().as_bytes()).ok()?;
        let value = reqwest::header::HeaderValue::from_str(v.trim()).ok()?;
        headers.append(name, value);
    }
    let rest = &buf[end + 4..];
    let body = if let Some(n) = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if rest.len() < n {
            return None;
        }
        rest[..n].to_vec()
    } else if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"))
    {
        let mut out = Vec::new();
        let mut i = 0;
        loop {
            let line_end = rest[i..].windows(2).position(|w| w == b"\r\n")? + i;
            let size = usize::from_str_radix(
                std::str::from_utf8(&rest[i..line_end])
                    .ok()?
                    .split(';')
                    .next()?
                    .trim(),
                16,
            )
            .ok()?;
            i = line_end + 2;
            if size == 0 {
                break;
            }
            if rest.len() < i + size + 2 {
                return None;
            }
            out.extend_from_slice(&rest[i..i + size]);
            i += size + 2;
        }
        out
    } else {
        return None;
    };
    Some(Response {
        status,
        headers,
        body,
        elapsed: Duration::ZERO,
    })
}

/// Hex HMAC-SHA256.
pub fn hmac_hex(key: &[u8], data: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("any key length");
    mac.update(data);
    hex::encode(mac.finalize().into_bytes())
}

/// Waits, if needed, so that the next minute-long rate window has at least
/// 15 s left (the limits count in fixed windows aligned to the minute).
pub async fn fresh_rate_window() {
    let now = time::OffsetDateTime::now_utc();
    let s = now.second();
    if s >= 45 {
        let wait = Duration::from_millis(u64::from(60 - s) * 1000 + 300);
        tokio::time::sleep(wait).await;
    }
}

/// The single card with `is_default = true` among `cards`, asserting at
/// most one.
pub fn the_default(cards: &[Value]) -> Option<String> {
    let defaults: Vec<&Value> = cards.iter().filter(|c| c["is_default"] == true).collect();
    assert!(defaults.len() <= 1, "more than one default: {defaults:?}");
    defaults
        .first()
        .map(|c| c["id"].as_str().expect("id").to_owned())
}

/// The card with `id` in `cards`.
pub fn find_card<'a>(cards: &'a [Value], id: &str) -> &'a Value {
    cards
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("card {id} not in list {cards:?}"))
}

// ---------------------------------------------------------------------------
// KMS (moto)

/// Creates a symmetric key in the KMS emulator at `endpoint` and returns
/// its id. moto routes by the credential scope of `Authorization` and does
/// not check the signature.
pub async fn create_kms_key(endpoint: &str) -> String {
    let r = reqwest::Client::new()
        .post(endpoint)
        .header("X-Amz-Target", "TrentService.CreateKey")
        .header("Content-Type", "application/x-amz-json-1.1")
        .header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=00",
        )
        .body(r#"{"Description":"cardbind-tests"}"#)
        .send()
        .await
        .expect("KMS CreateKey request");
    let v: Value = r.json().await.expect("KMS CreateKey answer");
    v["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap_or_else(|| panic!("no KeyId in {v}"))
        .to_owned()
}

/// Points `cfg` at AWS KMS (the emulator) with static test credentials.
pub fn use_kms(cfg: &mut Config, endpoint: &str, key_id: &str) {
    cfg.keys.kind = cardbind::config::KeysKind::AwsKms;
    cfg.keys.kms_endpoint = Some(endpoint.to_owned());
    cfg.keys.kms_key_id = key_id.to_owned();
    cfg.keys.kms_region = "us-east-1".into();
    cfg.keys.kms_access_key_id = Some("testing".into());
    cfg.keys.kms_secret_access_key = Some("testing".into());
    cfg.keys.kms_timeout_ms = 2000;
}

/// A TCP proxy on a fixed local port that a test can cut and restore, to
/// make a dependency vanish and come back without touching the real one.
pub struct TcpProxy {
    pub port: u16,
    target: std::net::SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TcpProxy {
    pub async fn start(target: std::net::SocketAddr) -> TcpProxy {
        let mut p = TcpProxy {
            port: 0,
            target,
            task: None,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy listen");
        p.port = listener.local_addr().expect("addr").port();
        p.serve(listener);
        p
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let target = self.target;
        self.task = Some(tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                conns.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
    }

    /// Closes the listener and every proxied connection.
    pub async fn cut(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    /// Listens again on the same port.
    pub async fn restore(&mut self) {
        let mut last = String::new();
        for _ in 0..50 {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => {
                    self.serve(l);
                    return;
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("proxy could not listen on {} again: {last}", self.port);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// `host:port` of an `http://host:port[/]` URL.
pub fn socket_addr_of(url: &str) -> std::net::SocketAddr {
    let hostport = url
        .trim_start_matches("http://")
        .trim_start_matches("mongodb://")
        .trim_end_matches('/');
    use std::net::ToSocketAddrs;
    hostport
        .to_socket_addrs()
        .expect("resolvable")
        .next()
        .expect("an address")
}

// ---------------------------------------------------------------------------
// A FerretDB of the test's own

/// One FerretDB instance a test may stop and restart without touching the
/// shared one: started with `CARDBIND_TEST_FERRETDB_CTL` when exported, or
/// from `CARDBIND_TEST_FERRETDB_BIN` directly.
pub struct OwnFerretDb {
    dir: PathBuf,
    port: u16,
    bin: String,
    ctl: Option<String>,
    child: Option<std::process::Child>,
    _tmp: Option<tempfile::TempDir>,
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("addr").port()
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

impl OwnFerretDb {
    /// Starts one; `None` (skip) when no FerretDB binary is known.
    pub async fn start() -> Option<OwnFerretDb> {
        let bin = required_env(
            "CARDBIND_TEST_FERRETDB_BIN",
            "this test starts and stops a FerretDB of its own",
        )?;
        let ctl = std::env::var("CARDBIND_TEST_FERRETDB_CTL")
            .ok()
            .filter(|s| !s.is_empty());
        let (dir, tmp) = match std::env::var("CARDBIND_TEST_SERVICES_DIR")
            .ok()
            .filter(|s| !s.is_empty())
        {
            Some(base) => (
                PathBuf::from(base).join(format!("own-ferretdb-{}", uuid::Uuid::new_v4().simple())),
                None,
            ),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("cardbind-ferretdb-")
                    .tempdir()
                    .expect("temp dir");
                (t.path().join("ferretdb"), Some(t))
            }
        };
        std::fs::create_dir_all(&dir).expect("ferretdb dir");
        let mut f = OwnFerretDb {
            dir,
            port: 0,
            bin,
            ctl,
            child: None,
            _tmp: tmp,
        };
        let mut last_err = String::new();
        for _ in 0..3 {
            f.port = free_port();
            match f.launch().await {
                Ok(()) => return Some(f),
                Err(e) => last_err = e,
            }
        }
        panic!("could not start a FerretDB of our own: {last_err}");
    }

    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/", self.port)
    }

    async fn launch(&mut self) -> Result<(), String> {
        if let Some(ctl) = self.ctl.clone() {
            let (dir, port) = (self.dir.clone(), self.port);
            let out = tokio::task::spawn_blocking(move || {
                std::process::Command::new("bash")
                    .arg(ctl)
                    .arg("start")
                    .arg(&dir)
                    .arg(port.to_string())
                    .output()
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
            if out.status.success() {
                return Ok(());
            }
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("ferretdb.log"))
            .map_err(|e| e.to_string())?;
        let child = std::process::Command::new(&self.bin)
            .arg("--handler=sqlite")
            .arg(format!("--sqlite-url=file:{}/", self.dir.display()))
            .arg(format!("--listen-addr=127.0.0.1:{}", self.port))
            .arg("--debug-addr=-")
            .arg(format!("--state-dir={}", self.dir.display()))
            .arg("--telemetry=disable")
            .arg("--log-level=warn")
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .stdin(std::process::Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !port_open(self.port) {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.child = None;
                    return Err(format!("ferretdb exited: {st}"));
                }
            }
            if Instant::now() > deadline {
                self.kill_child();
                return Err("ferretdb did not listen within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    fn kill_child(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM first (an orderly stop), then SIGKILL.
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            for _ in 0..100 {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops it (data kept).
    pub async fn stop(&mut self) {
        if let Some(ctl) = self.ctl.clone() {
            let dir = self.dir.clone();
            let st = tokio::task::spawn_blocking(move || {
                std::process::Command::new("bash")
                    .arg(ctl)
                    .arg("stop")
                    .arg(&dir)
                    .status()
            })
            .await
            .expect("join");
            assert!(
                st.map(|s| s.success()).unwrap_or(false),
                "ferretdb-ctl stop failed"
            );
        } else {
            self.kill_child();
        }
        assert!(!port_open(self.port), "FerretDB still answers after stop");
    }

    /// Starts it again on the same port and data.
    pub async fn restart(&mut self) {
        let mut last = String::new();
        for _ in 0..20 {
            match self.launch().await {
                Ok(()) => return,
                // The port may linger a moment after the stop.
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!("FerretDB did not restart on port {}: {last}", self.port);
    }
}

impl Drop for OwnFerretDb {
    fn drop(&mut self) {
        if let Some(ctl) = &self.ctl {
            let _ = std::process::Command::new("bash")
                .arg(ctl)
                .arg("stop")
                .arg(&self.dir)
                .status();
        }
        self.kill_child();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cardbind_domain::{CardNumber, Phone, ResidentId};

    #[test]
    fn luhn_matches_known_numbers() {
        assert!(luhn_valid("4111111111111111"));
        assert!(luhn_valid("378282246310005"));
        assert!(!luhn_valid("4111111111111112"));
        assert_eq!(luhn_check_digit("411111111111111"), '1');
        assert_eq!(luhn_check_digit("37828224631000"), '5');
        assert_eq!(luhn_check_digit("601111111111111"), '7');
    }

    #[test]
    fn generated_cards_parse_with_their_brand() {
        for brand in Brand::ALL {
            for _ in 0..50 {
                let c = TestCard::new(brand);
                assert!(luhn_valid(&c.number), "{c:?}");
                let parsed = CardNumber::parse(&c.number)
                    .unwrap_or_else(|e| panic!("{brand:?} {}: {e}", c.number));
                assert_eq!(parsed.brand().as_str(), brand.api_name());
                assert_eq!(c.cvv.len(), brand.cvv_len());
                let e = TestCard::ending(brand, "0042");
                assert_eq!(e.last4(), "0042");
                assert!(CardNumber::parse(&e.number).is_ok(), "{}", e.number);
            }
        }
    }

    #[test]
    fn resident_ids_and_phones_are_valid() {
        // The example of GB 11643 itself.
        assert_eq!(resident_id_check("11010519491231002"), 'X');
        for _ in 0..200 {
            let id = resident_id();
            assert!(ResidentId::parse(&id).is_ok(), "{id}");
            let p = phone();
            assert!(Phone::parse(&p).is_ok(), "{p}");
        }
    }
}

impl Drop for TestApp {
    /// Every black-box test checks, as its app goes away, that no test card
    /// data reached the logs or the metrics (responses are checked as they
    /// arrive, in `try_send`).
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.assert_no_leaks();
        }
    }
}

/// Card data must never appear in logs, response bodies or metrics. Every
/// `TestCard` registers its secrets here; the first `TestApp` of a test
/// binary installs a global subscriber at debug level for the cardbind
/// crates that keeps every log line in memory.
pub mod leaks {
    use std::io::Write;
    use std::sync::{Arc, Mutex, OnceLock, PoisonError};

    struct Secret {
        what: &'static str,
        value: String,
    }

    fn secrets() -> &'static Mutex<Vec<Secret>> {
        static S: OnceLock<Mutex<Vec<Secret>>> = OnceLock::new();
        S.get_or_init(|| Mutex::new(Vec::new()))
    }

    pub fn register(card: &super::TestCard) {
        let mut s = secrets().lock().unwrap_or_else(PoisonError::into_inner);
        s.push(Secret {
            what: "card number",
            value: card.number.clone(),
        });
        s.push(Secret {
            what: "resident id number",
            value: card.id_number.clone(),
        });
        s.push(Secret {
            what: "phone",
            value: card.phone.trim_start_matches('+').to_owned(),
        });
        // A bare 3-digit run is everywhere (latencies, ports): look for the
        // CVV only where it would stand as a value.
        for form in [
            format!("\"{}\"", card.cvv),
            format!("cvv={}", card.cvv),
            format!("cvv: {}", card.cvv),
        ] {
            s.push(Secret {
                what: "cvv",
                value: form,
            });
        }
    }

    #[derive(Clone)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn buffer() -> &'static Option<Arc<Mutex<Vec<u8>>>> {
        static B: OnceLock<Option<Arc<Mutex<Vec<u8>>>>> = OnceLock::new();
        B.get_or_init(|| {
            let buf = Arc::new(Mutex::new(Vec::new()));
            let writer = Buffer(buf.clone());
            let filter = tracing_subscriber::EnvFilter::new(
                "info,cardbind=debug,cardbind_ports=debug,cardbind_channels=debug,cardbind_keys=debug,cardbind_mongo=debug,cardbind_memory=debug,poem=debug",
            );
            // Another subscriber may own this binary (a test that installs its
            // own): then that test reads the logs itself.
            tracing_subscriber::fmt()
                .json()
                .with_env_filter(filter)
                .with_writer(move || writer.clone())
                .try_init()
                .ok()
                .map(|_| buf)
        })
    }

    /// Installs the capturing subscriber (once per test binary).
    pub fn capture_logs() {
        let _ = buffer();
    }

    /// Everything logged so far in this process (empty when not captured).
    pub fn logs() -> String {
        match buffer() {
            Some(b) => String::from_utf8_lossy(&b.lock().unwrap_or_else(PoisonError::into_inner))
                .into_owned(),
            None => String::new(),
        }
    }

    /// Panics when `text` holds a registered secret.
    pub fn assert_clean(text: &str, where_: &str) {
        let s = secrets().lock().unwrap_or_else(PoisonError::into_inner);
        for secret in s.iter() {
            assert!(
                !text.contains(&secret.value),
                "a test {} appears in {where_}",
                secret.what
            );
        }
    }
}
