//! The app under test: [`TestApp`] starts the real service in-process on a
//! free port, on the chosen [`Storage`], and sends it requests.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cardbind::cli::{self, Running};
use cardbind::compose::Stores;
use cardbind::config::{Config, LogFormat, MockModeSetting, StorageKind};
use cardbind_domain::Role;
use reqwest::Method;
use serde_json::{json, Value};

use crate::{fresh_db_name, hmac_hex, idem_key, leaks, mongo_uri, Response, TestCard};

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
    // No background reads of the log (the round-trip budgets count
    // commands); the anchor tests turn it on.
    cfg.audit.anchor_interval_seconds = 0;
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
        self.mock_notification_naming(id, binding_id, event, &format!("mock_{binding_id}"))
    }

    /// A signed mock notification naming `channel_ref` as the agreement
    /// (one the bind's start did not give).
    pub fn mock_notification_naming(
        &self,
        id: &str,
        binding_id: &str,
        event: &str,
        channel_ref: &str,
    ) -> (Vec<u8>, String) {
        let sent_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let body = json!({
            "id": id,
            "binding_id": binding_id,
            "event": event,
            "channel_ref": channel_ref,
            "sent_at": sent_at,
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
