//! Channel flows end to end through the running service: `cli::start` on
//! `127.0.0.1:0`, real HTTP, configured by a TOML file alone (the three
//! channels enabled, key files in a temp dir), with the mock channel, the
//! Alipay channel against `FakeAlipay` and the WeChat Pay channel against
//! `FakeWechat` (`cardbind-channels` feature `fakes`). The fakes verify
//! every request the service sends them and sign what they send back; the
//! tests play the user (signing and unsigning in the wallet app) and the
//! gateway's notification delivery.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod alipay;
mod misconfiguration;
mod mock;
mod reconcile;
mod review;
mod wechat;

use std::path::Path;

use cardbind::cli::{self, Running};
use cardbind::config::Config;
use cardbind_channels::fakes::wechat as fw;
use cardbind_channels::fakes::{self, test_key, FakeAlipay, FakeWechat, MERCHANT};
use cardbind_domain::{BindingId, Role};
use serde_json::{json, Value};

const MOCK_SECRET: &str = "e2e-mock-notify-secret";
const VISA: &str = "4111111111111111";
const VISA2: &str = "4012888888881881";
const MC: &str = "5555555555554444";
const AMEX: &str = "378282246310005";
/// The mock answers a redirect for this card (card mode by last four).
const MOCK_REDIRECT_CARD: &str = "5105105105105100";

/// A running service with both fake gateways.
struct Svc {
    config: Config,
    running: Running,
    http: reqwest::Client,
    alipay: FakeAlipay,
    wechat: FakeWechat,
    service: String,
    admin: String,
    auditor: String,
    _dir: tempfile::TempDir,
}

struct Resp {
    status: u16,
    content_type: String,
    text: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|_| panic!("not JSON: {}", self.text))
    }

    fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("<none>")
            .to_owned()
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

/// A port nothing listens on.
fn closed_port_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

/// What a test changes in the channel configuration (an operator's
/// mistake, or a channel pointed elsewhere).
#[derive(Clone, Default)]
struct Setup {
    /// Where the WeChat channel points (default: the fake), e.g. a closed port.
    wechat_url: Option<String>,
    /// The WeChat merchant private key installed (PEM); default: the one
    /// whose public half the fake holds.
    wechat_private_key: Option<String>,
    /// The Alipay app id configured; default: the fake's.
    alipay_app_id: Option<String>,
    /// `channels.resilience.timeout_ms` and `deadline_ms`; default 3000
    /// and the default deadline.
    call_timeout_ms: Option<(u64, u64)>,
}

/// Starts both fakes and the service. `wechat_url` overrides where the
/// WeChat channel points (e.g. a closed port).
async fn start_with(wechat_url: Option<String>) -> Svc {
    start_setup(Setup {
        wechat_url,
        ..Setup::default()
    })
    .await
}

/// Writes the configuration for `setup` (key files, TOML) into `d`.
fn write_config(d: &Path, alipay: &FakeAlipay, wechat: &FakeWechat, setup: &Setup) -> Config {
    let merchant = test_key(MERCHANT).unwrap();
    // Our application keys (one pair serves both channels here) and the
    // gateways' public keys, as files, as an operator would install them.
    let app_private = write(d, "alipay_app_private_key.pem", &merchant.private_pem);
    let alipay_public = write(
        d,
        "alipay_public_key.pem",
        &alipay.public_key_pem().unwrap(),
    );
    alipay.accept_app_public_key(&merchant.public_pem).unwrap();
    let mch_private = write(
        d,
        "wechat_apiclient_key.pem",
        setup
            .wechat_private_key
            .as_deref()
            .unwrap_or(&merchant.private_pkcs1_pem),
    );
    let platform = write(
        d,
        "wechat_platform_key.pem",
        &wechat.platform_public_key_pem().unwrap(),
    );
    let apiv3 = write(d, "wechat_apiv3.key", &format!("{}\n", fw::APIV3_KEY));
    wechat
        .accept_merchant_public_key(&merchant.public_pem)
        .unwrap();
    let wechat_url = setup
        .wechat_url
        .clone()
        .unwrap_or_else(|| wechat.base_url().to_owned());
    let toml = format!(
        r#"
[server]
address = "127.0.0.1:0"
data_dir = "{data}"
purge_interval_seconds = 0

[auth]
jwt_secret = "channels-e2e-jwt-secret-0123456789abcdef"

[limits]
binds_per_user_per_minute = 100
binds_per_ip_per_minute = 0
binds_per_card_per_hour = 0

[channels]
enabled = ["mock", "alipay", "wechat"]
default = "mock"
reconcile_after_seconds = 0

[channels.mock]
mode = "instant"
notify_secret = "{MOCK_SECRET}"
card_modes = {{ "5100" = "redirect" }}

[channels.resilience]
timeout_ms = {timeout_ms}
deadline_ms = {deadline_ms}
max_retries = 3
backoff_min_ms = 5
backoff_max_ms = 20
breaker_failures = 5
breaker_open_seconds = 60

[channels.alipay]
gateway_url = "{alipay_url}"
app_id = "{app_id}"
private_key_file = "{app_private}"
alipay_public_key_file = "{alipay_public}"
notify_url = "https://cardbind.test/v1/channels/alipay/notify"
sign_scene = "{alipay_scene}"

[channels.wechat]
base_url = "{wechat_url}"
mchid = "{mchid}"
appid = "{appid}"
serial_no = "{serial}"
private_key_file = "{mch_private}"
apiv3_key_file = "{apiv3}"
notify_url = "https://cardbind.test/v1/channels/wechat/notify"
plan_id = {plan}
presign_path = "{presign_path}"

[channels.wechat.platform_keys]
"{platform_serial}" = "{platform}"
"#,
        data = d.join("data").display(),
        alipay_url = alipay.gateway_url(),
        app_id = setup.alipay_app_id.as_deref().unwrap_or(alipay.app_id()),
        mchid = fw::MCHID,
        appid = fw::APPID,
        serial = fw::MERCHANT_SERIAL,
        plan = fw::PLAN_ID,
        platform_serial = fw::PLATFORM_SERIAL,
        alipay_scene = fakes::alipay::SIGN_SCENE,
        presign_path = fw::PRESIGN_PATH,
        timeout_ms = setup.call_timeout_ms.map_or(3000, |t| t.0),
        deadline_ms = setup.call_timeout_ms.map_or(20_000, |t| t.1),
    );
    let file = d.join("cardbind.toml");
    std::fs::write(&file, toml).unwrap();
    Config::load(Some(&file)).unwrap()
}

async fn start_setup(setup: Setup) -> Svc {
    let alipay = FakeAlipay::start().await.unwrap();
    let wechat = FakeWechat::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &alipay, &wechat, &setup);
    let running = cli::start(config.clone()).await.unwrap();
    let secret = cardbind::compose::jwt_secret(&config).unwrap();
    let token = |sub: &str, role| {
        format!(
            "Bearer {}",
            cardbind::compose::dev_token(&config, &secret, sub, role, 3600).unwrap()
        )
    };
    Svc {
        service: token("merchant-e2e", Role::Service),
        admin: token("operator-1", Role::Admin),
        auditor: token("auditor-1", Role::Auditor),
        http: reqwest::Client::new(),
        config,
        running,
        alipay,
        wechat,
        _dir: dir,
    }
}

async fn start() -> Svc {
    start_with(None).await
}

/// The shared bind body (`support::bind_body`), with the channel named.
fn bind_body(card: &str, channel: Option<&str>) -> Value {
    let mut v = crate::support::bind_body(card);
    if let Some(c) = channel {
        v["channel"] = json!(c);
    }
    v
}

impl Svc {
    /// The operator fixes the configuration and restarts: the service
    /// stops, and one configured by `setup` starts over the same stores and
    /// data directory (keys, JWT secret), with the same fake gateways.
    async fn restart(self, setup: Setup) -> Svc {
        let Svc {
            running,
            http,
            alipay,
            wechat,
            service,
            admin,
            auditor,
            _dir,
            ..
        } = self;
        let config = write_config(_dir.path(), &alipay, &wechat, &setup);
        let stores = running.built.stores.clone();
        running.stop().await.unwrap();
        let built = cardbind::compose::build_on(&config, stores).await.unwrap();
        let running = cli::start_built(config.clone(), built).await.unwrap();
        Svc {
            config,
            running,
            http,
            alipay,
            wechat,
            service,
            admin,
            auditor,
            _dir,
        }
    }

    async fn admin_post(&self, path: &str) -> Resp {
        self.send(
            self.http
                .post(self.url(path))
                .header("Authorization", &self.admin),
        )
        .await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.running.base_url, path)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let content_type = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Resp {
            status,
            content_type,
            text: r.text().await.unwrap(),
        }
    }

    async fn bind(&self, user: &str, card: &str, channel: Option<&str>) -> Resp {
        let req = self
            .http
            .post(self.url(&format!("/v1/users/{user}/cards")))
            .header("Authorization", &self.service)
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .json(&bind_body(card, channel));
        self.send(req).await
    }

    async fn card(&self, user: &str, id: &str) -> Value {
        let r = self
            .send(
                self.http
                    .get(self.url(&format!("/v1/users/{user}/cards/{id}")))
                    .header("Authorization", &self.service),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json()
    }

    async fn unbind(&self, user: &str, id: &str) -> Resp {
        self.send(
            self.http
                .delete(self.url(&format!("/v1/users/{user}/cards/{id}")))
                .header("Authorization", &self.service),
        )
        .await
    }

    /// POSTs a notification as the channel would: its headers and body as is.
    async fn notify(&self, channel: &str, headers: &[(String, String)], body: Vec<u8>) -> Resp {
        let mut req = self
            .http
            .post(self.url(&format!("/v1/channels/{channel}/notify")));
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        self.send(req.body(body)).await
    }

    async fn notify_alipay(&self, body: Vec<u8>) -> Resp {
        let ct = (
            "content-type".to_owned(),
            cardbind_channels::fakes::alipay::NOTIFY_CONTENT_TYPE.to_owned(),
        );
        self.notify("alipay", &[ct], body).await
    }

    async fn notify_wechat(&self, n: &cardbind_ports::channel::Notification) -> Resp {
        let headers: Vec<(String, String)> = n
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .chain([("content-type".to_owned(), "application/json".to_owned())])
            .collect();
        self.notify("wechat", &headers, n.body.clone()).await
    }

    async fn audit(&self, action: &str) -> Vec<Value> {
        let r = self
            .send(
                self.http
                    .get(self.url(&format!("/v1/audit/events?action={action}&limit=500")))
                    .header("Authorization", &self.auditor),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json()["events"].as_array().unwrap().clone()
    }

    async fn audit_of_card(&self, card: &str) -> Vec<Value> {
        let r = self
            .send(
                self.http
                    .get(self.url(&format!("/v1/audit/events?card_id={card}&limit=500")))
                    .header("Authorization", &self.auditor),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json()["events"].as_array().unwrap().clone()
    }

    async fn consent(&self, user: &str, card: &str) -> Value {
        let r = self
            .send(
                self.http
                    .get(self.url(&format!("/v1/consents?user_id={user}&limit=100")))
                    .header("Authorization", &self.auditor),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json()["consents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["card_id"] == card)
            .unwrap_or_else(|| panic!("no consent for {card}: {}", r.text))
            .clone()
    }

    async fn metrics(&self) -> String {
        let r = self.send(self.http.get(self.url("/metrics"))).await;
        assert_eq!(r.status, 200);
        r.text
    }

    /// Binds through a redirect channel: 201, pending_verification, a
    /// redirect `next_action` with a URL. Returns (card id, URL).
    /// The reference the channel knows the card's current bind by
    /// (Alipay's `external_agreement_no`, WeChat Pay's `out_contract_code`):
    /// its id and attempt (the generation of its stored data) as 28 letters
    /// and digits. Read while the service holds the card's data.
    async fn channel_code(&self, card_id: &str) -> String {
        let id = BindingId::parse(card_id).unwrap();
        let stores = &self.running.built.stores;
        let user = stores
            .card_data
            .owner(&id)
            .await
            .unwrap()
            .expect("card data held");
        let w = stores.wallets.load(&user).await.unwrap().unwrap().wallet;
        let generation = w.get(&id).unwrap().data_generation;
        let code = cardbind_channels::refs::of_attempt(&id, generation).unwrap();
        assert_eq!(code.len(), 28);
        code
    }

    async fn bind_redirect(&self, user: &str, card: &str, channel: &str) -> (String, String) {
        let r = self.bind(user, card, Some(channel)).await;
        assert_eq!(r.status, 201, "{}", r.text);
        let v = r.json();
        assert_eq!(v["status"], "pending_verification", "{v}");
        assert_eq!(v["channel"], channel);
        assert_eq!(v["next_action"]["type"], "redirect", "{v}");
        let url = v["next_action"]["url"].as_str().unwrap().to_owned();
        assert!(url.starts_with("http"), "{url}");
        (v["id"].as_str().unwrap().to_owned(), url)
    }
}

fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
