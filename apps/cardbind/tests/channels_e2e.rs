//! Channel flows end to end through the running service: `cli::start` on
//! `127.0.0.1:0`, real HTTP, configured by a TOML file alone (the three
//! channels enabled, key files in a temp dir), with the mock channel, the
//! Alipay channel against `FakeAlipay` and the WeChat Pay channel against
//! `FakeWechat` (`cardbind-channels` feature `fakes`). The fakes verify
//! every request the service sends them and sign what they send back; the
//! tests play the user (signing and unsigning in the wallet app) and the
//! gateway's notification delivery.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use cardbind::cli::{self, Running};
use cardbind::config::Config;
use cardbind_channels::fakes::wechat as fw;
use cardbind_channels::fakes::{self, test_key, FakeAlipay, FakeWechat, MERCHANT};
use cardbind_channels::mock::{mock_notification, MOCK_SIGNATURE_HEADER};
use cardbind_domain::{BindingId, Role};
use serde_json::{json, Value};

const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
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
timeout_ms = 3000
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

[channels.wechat]
base_url = "{wechat_url}"
mchid = "{mchid}"
appid = "{appid}"
serial_no = "{serial}"
private_key_file = "{mch_private}"
apiv3_key_file = "{apiv3}"
notify_url = "https://cardbind.test/v1/channels/wechat/notify"
plan_id = {plan}

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

fn bind_body(card: &str, channel: Option<&str>) -> Value {
    let amex = card.starts_with("34") || card.starts_with("37");
    let mut v = json!({
        "card_number": card,
        "expiry_month": 12,
        "expiry_year": 2035,
        "cvv": if amex { "1234" } else { "123" },
        "holder_name": "张三",
        "id_number": "11010519491231002X",
        "phone": "13800138000",
        "consent": {"text_version": "v1", "text_sha256": SHA}
    });
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

fn contract_code(card_id: &str) -> String {
    cardbind_channels::wechat::contract_code(&BindingId::parse(card_id).unwrap()).unwrap()
}

// ---- Alipay -----------------------------------------------------------------------

#[tokio::test]
async fn alipay_binding_flow_end_to_end() {
    let s = start().await;
    let user = "ali-user-1";
    let (id, url) = s.bind_redirect(user, VISA, "alipay").await;
    assert!(
        url.starts_with(&format!("{}?", s.alipay.gateway_url())),
        "{url}"
    );
    // The user opens the signed page: the fake verifies it and opens the agreement.
    assert_eq!(s.alipay.open_sign_page(&url).unwrap(), id);
    // The user signs in the Alipay app; Alipay posts the notification.
    let signed = s.alipay.user_signs(&id, "ali-notify-0001").unwrap();
    let r = s.notify_alipay(signed.clone()).await;
    assert_eq!((r.status, r.text.as_str()), (200, "success"), "{}", r.text);
    assert!(
        r.content_type.starts_with("text/plain"),
        "{}",
        r.content_type
    );
    let card = s.card(user, &id).await;
    assert_eq!(card["status"], "active", "{card}");
    assert_eq!(card["is_default"], true);
    assert!(card.get("next_action").is_none());
    let (_, agreement_no) = s.alipay.agreement(&id).unwrap();
    assert_eq!(
        s.consent(user, &id).await["agreement_id"],
        agreement_no.as_str()
    );

    // The same notification again: acknowledged, nothing changes.
    let r = s.notify_alipay(signed.clone()).await;
    assert_eq!((r.status, r.text.as_str()), (200, "success"));
    let again = s.card(user, &id).await;
    assert_eq!(again, card);
    let events = s.audit_of_card(&id).await;
    let applied = events
        .iter()
        .filter(|e| e["action"] == "binding.channel_event")
        .count();
    assert_eq!(applied, 1, "{events:?}");

    // Tampered (one value changed after signing) and forged (signed by a
    // stranger) notifications: 401 invalid_signature, the card unchanged.
    let tampered = String::from_utf8(signed)
        .unwrap()
        .replace("ali-notify-0001", "ali-notify-0009");
    let r = s.notify_alipay(tampered.into_bytes()).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (401, "invalid_signature"),
        "{}",
        r.text
    );
    let forged = s
        .alipay
        .forged_notification(&[
            ("notify_type", "dut_user_unsign"),
            ("notify_id", "ali-notify-forged"),
            ("app_id", s.alipay.app_id()),
            ("status", "UNSIGN"),
            ("agreement_no", &agreement_no),
            ("external_agreement_no", &id),
        ])
        .unwrap();
    let r = s.notify_alipay(forged).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (401, "invalid_signature"),
        "{}",
        r.text
    );
    assert_eq!(s.card(user, &id).await, card);

    // A second card, signed, then unsigned by the user in the Alipay app.
    let (id2, url2) = s.bind_redirect(user, MC, "alipay").await;
    s.alipay.open_sign_page(&url2).unwrap();
    let r = s
        .notify_alipay(s.alipay.user_signs(&id2, "ali-notify-0002").unwrap())
        .await;
    assert_eq!((r.status, r.text.as_str()), (200, "success"));
    assert_eq!(s.card(user, &id2).await["status"], "active");
    let r = s
        .notify_alipay(s.alipay.user_unsigns(&id2, "ali-notify-0003").unwrap())
        .await;
    assert_eq!((r.status, r.text.as_str()), (200, "success"));
    let card2 = s.card(user, &id2).await;
    assert_eq!(card2["status"], "inactive", "{card2}");
    let consent2 = s.consent(user, &id2).await;
    assert!(consent2["revoked_at"].is_string(), "{consent2}");
    assert_eq!(consent2["revoked_by"], "channel:alipay");
    assert_eq!(
        s.card(user, &id).await["status"],
        "active",
        "the other card is untouched"
    );

    // We unbind the first card: the gateway gets a verified unsign call.
    let r = s.unbind(user, &id).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["status"], "inactive");
    assert_eq!(s.alipay.agreement(&id).unwrap().0, "UNSIGN");
    assert!(s.consent(user, &id).await["revoked_at"].is_string());
    let methods = s.alipay.verified_methods();
    assert_eq!(
        methods
            .iter()
            .filter(|m| *m == "alipay.user.agreement.unsign")
            .count(),
        1,
        "one unsign (ours), none for the card the user unsigned: {methods:?}"
    );
    assert_eq!(s.alipay.rejected_count(), 0, "{:?}", s.alipay.requests());
}

// ---- WeChat Pay ---------------------------------------------------------------------

#[tokio::test]
async fn wechat_binding_flow_end_to_end() {
    let s = start().await;
    let user = "wx-user-1";
    let (id, url) = s.bind_redirect(user, VISA, "wechat").await;
    let code = contract_code(&id);
    assert!(url.contains(&code), "{url}");
    assert_eq!(s.wechat.contract(&code).unwrap().0, "NOT_SIGNED");

    let signed = s.wechat.user_signs(&code, "EV-e2e-0001").unwrap();
    let r = s.notify_wechat(&signed).await;
    assert!((200..300).contains(&r.status), "{} {}", r.status, r.text);
    assert_eq!(r.json()["code"], "SUCCESS");
    let card = s.card(user, &id).await;
    assert_eq!(card["status"], "active", "{card}");
    let (_, contract_id) = s.wechat.contract(&code).unwrap();
    assert_eq!(
        s.consent(user, &id).await["agreement_id"],
        contract_id.as_str()
    );

    // Replayed callback: acknowledged, no change.
    let r = s.notify_wechat(&signed).await;
    assert!((200..300).contains(&r.status));
    assert_eq!(s.card(user, &id).await, card);
    let applied = s
        .audit_of_card(&id)
        .await
        .iter()
        .filter(|e| e["action"] == "binding.channel_event")
        .count();
    assert_eq!(applied, 1);

    // Tampered body, and a callback signed with a stranger's key.
    let mut tampered = signed.clone();
    tampered.body = String::from_utf8(tampered.body)
        .unwrap()
        .replace("EV-e2e-0001", "EV-e2e-0009")
        .into_bytes();
    let r = s.notify_wechat(&tampered).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (401, "invalid_signature"),
        "{}",
        r.text
    );
    s.wechat.sign_with_wrong_key(true);
    let forged = s
        .wechat
        .callback(
            "EV-e2e-forged",
            "PAPAY.TERMINATE",
            json!({"mchid": fw::MCHID, "out_contract_code": code, "contract_id": contract_id, "change_type": "DELETE"}),
        )
        .unwrap();
    s.wechat.sign_with_wrong_key(false);
    let r = s.notify_wechat(&forged).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (401, "invalid_signature"),
        "{}",
        r.text
    );
    // Missing signature headers altogether.
    let json_ct = [("content-type".to_owned(), "application/json".to_owned())];
    let r = s.notify("wechat", &json_ct, signed.body.clone()).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (401, "invalid_signature")
    );
    assert_eq!(s.card(user, &id).await, card);

    // A second card, signed, then terminated by the user inside WeChat.
    let (id2, _) = s.bind_redirect(user, MC, "wechat").await;
    let code2 = contract_code(&id2);
    let r = s
        .notify_wechat(&s.wechat.user_signs(&code2, "EV-e2e-0002").unwrap())
        .await;
    assert!((200..300).contains(&r.status));
    assert_eq!(s.card(user, &id2).await["status"], "active");
    let r = s
        .notify_wechat(&s.wechat.user_terminates(&code2, "EV-e2e-0003").unwrap())
        .await;
    assert!((200..300).contains(&r.status), "{}", r.text);
    let card2 = s.card(user, &id2).await;
    assert_eq!(card2["status"], "inactive", "{card2}");
    let consent2 = s.consent(user, &id2).await;
    assert!(consent2["revoked_at"].is_string(), "{consent2}");
    assert_eq!(consent2["revoked_by"], "channel:wechat");

    // We unbind the first card: a verified terminate call for its contract.
    let r = s.unbind(user, &id).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["status"], "inactive");
    assert_eq!(s.wechat.contract(&code).unwrap().0, "TERMINATED");
    let terminate = format!(
        "POST /v3/papay/sign/contracts/plan-id/{}/out-contract-code/{code}/terminate",
        fw::PLAN_ID
    );
    let paths = s.wechat.verified_paths();
    assert_eq!(
        paths.iter().filter(|p| p.ends_with("/terminate")).count(),
        1,
        "{paths:?}"
    );
    assert!(paths.contains(&terminate), "{paths:?}");
    assert_eq!(
        paths
            .iter()
            .filter(|p| *p == &format!("POST {}", fw::PRESIGN_PATH))
            .count(),
        2,
        "{paths:?}"
    );
    assert_eq!(s.wechat.rejected_count(), 0, "{:?}", s.wechat.requests());
}

// ---- the mock, through the same service ------------------------------------------------

#[tokio::test]
async fn mock_channel_through_the_same_service() {
    let s = start().await;
    let user = "mock-user-1";
    // No channel named: the configured default (mock, instant).
    let r = s.bind(user, VISA, None).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let v = r.json();
    assert_eq!(
        (v["status"].as_str(), v["channel"].as_str()),
        (Some("active"), Some("mock"))
    );
    // A redirect card, signed by a mock notification.
    let (id, _) = s.bind_redirect(user, MOCK_REDIRECT_CARD, "mock").await;
    let n = mock_notification(MOCK_SECRET, "mock-ev-1", &id, "signed", "mock-agreement-1");
    let headers: Vec<(String, String)> = n.headers.clone().into_iter().collect();
    let r = s.notify("mock", &headers, n.body.clone()).await;
    assert!((200..300).contains(&r.status), "{} {}", r.status, r.text);
    assert_eq!(s.card(user, &id).await["status"], "active");
    // Wrong secret: refused.
    let bad = mock_notification("not-the-secret", "mock-ev-2", &id, "terminated", "");
    let headers: Vec<(String, String)> = bad.headers.clone().into_iter().collect();
    assert!(headers.iter().any(|(k, _)| k == MOCK_SIGNATURE_HEADER));
    let r = s.notify("mock", &headers, bad.body).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (401, "invalid_signature")
    );
    assert_eq!(s.card(user, &id).await["status"], "active");
    let r = s.unbind(user, &id).await;
    assert_eq!(r.json()["status"], "inactive");
    // Channels the gateways never heard of are not involved.
    assert_eq!(s.alipay.request_count(), 0);
    assert_eq!(s.wechat.request_count(), 0);
}

// ---- manual review ------------------------------------------------------------------------

#[tokio::test]
async fn unreachable_channel_sends_binds_to_review_where_operators_decide() {
    let s = start_with(Some(closed_port_url())).await;
    let r1 = s.bind("rev-user-1", VISA, Some("wechat")).await;
    assert_eq!(r1.status, 202, "{}", r1.text);
    let c1 = r1.json();
    assert_eq!(c1["status"], "pending_review");
    let r2 = s.bind("rev-user-2", MC, Some("wechat")).await;
    assert_eq!(r2.status, 202, "{}", r2.text);
    let c2 = r2.json();
    let (id1, id2) = (c1["id"].as_str().unwrap(), c2["id"].as_str().unwrap());

    // Only operators see the queue.
    let r = s
        .send(
            s.http
                .get(s.url("/v1/admin/reviews"))
                .header("Authorization", &s.service),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = s
        .send(
            s.http
                .get(s.url("/v1/admin/reviews"))
                .header("Authorization", &s.admin),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let queued: Vec<String> = r.json()["cards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(queued, [id1, id2]);

    // Approve one (with the agreement the operator set up by hand), reject the other.
    let r = s
        .send(
            s.http
                .post(s.url(&format!("/v1/admin/reviews/{id1}/approve")))
                .header("Authorization", &s.admin)
                .json(&json!({"channel_ref": "manual-contract-1"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["status"], "active");
    let r = s
        .send(
            s.http
                .post(s.url(&format!("/v1/admin/reviews/{id2}/reject")))
                .header("Authorization", &s.admin),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let rejected = r.json();
    assert_eq!(rejected["status"], "failed");
    assert_eq!(rejected["failure_code"], "rejected_by_operator");
    assert_eq!(s.card("rev-user-1", id1).await["status"], "active");
    assert_eq!(
        s.consent("rev-user-1", id1).await["agreement_id"],
        "manual-contract-1"
    );
    assert_eq!(s.card("rev-user-2", id2).await["status"], "failed");
    // Decided once: the queue is empty and a second decision is refused.
    let r = s
        .send(
            s.http
                .get(s.url("/v1/admin/reviews"))
                .header("Authorization", &s.admin),
        )
        .await;
    assert_eq!(r.json()["cards"], json!([]));
    let r = s
        .send(
            s.http
                .post(s.url(&format!("/v1/admin/reviews/{id2}/reject")))
                .header("Authorization", &s.admin),
        )
        .await;
    assert_eq!(r.error_code(), "invalid_state_transition", "{}", r.text);

    // Each decision is in the audit log, by the operator.
    let approvals = s.audit("review.approve").await;
    assert_eq!(approvals.len(), 1, "{approvals:?}");
    assert_eq!(approvals[0]["card_id"], id1);
    assert_eq!(approvals[0]["actor"], "operator-1");
    assert_eq!(approvals[0]["outcome"], "ok");
    let rejections = s.audit("review.reject").await;
    let ok: Vec<&Value> = rejections.iter().filter(|e| e["outcome"] == "ok").collect();
    assert_eq!(ok.len(), 1, "{rejections:?}");
    assert_eq!(ok[0]["card_id"], id2);
    assert_eq!(ok[0]["actor"], "operator-1");
}

#[tokio::test]
async fn failed_starts_are_retried_only_when_the_gateway_says_not_applied() {
    let s = start().await;
    let presign = format!("POST {}", fw::PRESIGN_PATH);
    // What the gateway saw: S a start, Q a query; lower case when it failed.
    let kinds = |calls: &[fakes::ReceivedRequest]| -> String {
        calls
            .iter()
            .map(|r| {
                let k = if r.operation == presign {
                    'S'
                } else if r.operation.starts_with("GET ") {
                    'Q'
                } else {
                    '?'
                };
                if r.refusal.is_some() {
                    k.to_ascii_lowercase()
                } else {
                    k
                }
            })
            .collect()
    };
    // Two failed starts, each followed by a query answering "not found":
    // retried after a backoff, the third start succeeds.
    s.wechat.fail_next_presigns(2);
    let (id, _) = s.bind_redirect("retry-user-1", VISA, "wechat").await;
    let code = contract_code(&id);
    assert_eq!(kinds(&s.wechat.requests()), "sQsQS");
    assert_eq!(s.wechat.contract(&code).unwrap().0, "NOT_SIGNED");
    // More failures than retries (3): 1 + 3 starts, then manual review.
    let before = s.wechat.request_count();
    s.wechat.fail_next_presigns(10);
    let r = s.bind("retry-user-2", MC, Some("wechat")).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json()["status"], "pending_review");
    let calls = &s.wechat.requests()[before..];
    assert_eq!(kinds(calls), "sQsQsQs", "{calls:?}");
    assert!(calls.iter().all(|c| c.verified), "{calls:?}");
    // Queries succeeded in between, so the breaker never opened.
    let m = s.metrics().await;
    assert_eq!(
        metric(&m, r#"cardbind_channel_breaker_state{channel="wechat"}"#),
        Some(0.0)
    );
}

#[tokio::test]
async fn breaker_opens_after_five_failures_and_binds_skip_the_gateway() {
    let s = start().await;
    s.wechat.set_down(true);
    let mut seen = Vec::new();
    for (i, card) in [VISA, MC, VISA2, AMEX, MOCK_REDIRECT_CARD]
        .iter()
        .enumerate()
    {
        let r = s.bind(&format!("brk-user-{i}"), card, Some("wechat")).await;
        assert_eq!(r.status, 202, "{}", r.text);
        assert_eq!(r.json()["status"], "pending_review");
        seen.push(s.wechat.request_count());
    }
    // A failed start is followed by a query (was it applied?): two calls a
    // bind until the fifth failure opens the breaker; then none at all.
    assert_eq!(seen, [2, 4, 5, 5, 5], "gateway calls after each bind");
    assert!(s.wechat.requests().iter().all(|r| !r.verified));
    let m = s.metrics().await;
    assert_eq!(
        metric(&m, r#"cardbind_channel_breaker_state{channel="wechat"}"#),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, r#"cardbind_channel_breaker_state{channel="alipay"}"#),
        Some(0.0)
    );
    assert_eq!(
        metric(&m, r#"cardbind_channel_breaker_state{channel="mock"}"#),
        Some(0.0)
    );
    let open = metric(
        &m,
        r#"cardbind_channel_calls_total{channel="wechat",op="start_binding",outcome="circuit_open"}"#,
    );
    assert_eq!(open, Some(2.0), "{m}");
    // All five wait for an operator.
    let r = s
        .send(
            s.http
                .get(s.url("/v1/admin/reviews"))
                .header("Authorization", &s.admin),
        )
        .await;
    assert_eq!(r.json()["cards"].as_array().unwrap().len(), 5);
    // Other channels still work while WeChat's breaker is open.
    let r = s.bind("brk-user-0", MC, Some("mock")).await;
    assert_eq!(r.status, 201, "{}", r.text);
}

// ---- reconcile ------------------------------------------------------------------------------

#[tokio::test]
async fn reconcile_settles_bindings_stuck_in_pending_verification() {
    let s = start().await;
    let user = "rec-user-1";
    // Alipay: signed at the gateway, the notification never arrives.
    let (ali_signed, url) = s.bind_redirect(user, VISA, "alipay").await;
    s.alipay.open_sign_page(&url).unwrap();
    let lost = s.alipay.user_signs(&ali_signed, "ali-lost-1").unwrap();
    // Alipay: the user never opened the page: the gateway does not know it.
    let (ali_unknown, _) = s.bind_redirect(user, MC, "alipay").await;
    // WeChat: signed, callback lost; and one still waiting for the user.
    let (wx_signed, _) = s.bind_redirect(user, VISA2, "wechat").await;
    s.wechat
        .user_signs(&contract_code(&wx_signed), "EV-lost-1")
        .unwrap();
    let (wx_waiting, _) = s.bind_redirect(user, AMEX, "wechat").await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;

    let service = &s.running.built.usecases;
    // Younger than an hour: nothing is old enough.
    let r = service.reconcile(3600, 100).await.unwrap();
    assert_eq!(r.examined, 0, "{r:?}");
    let age = s.config.channels.reconcile_after_seconds;
    assert_eq!(age, 0);
    let r = service.reconcile(age, 100).await.unwrap();
    assert_eq!(
        (r.examined, r.activated, r.failed, r.still_pending, r.errors),
        (4, 2, 1, 1, 0),
        "{r:?}"
    );
    let a = s.card(user, &ali_signed).await;
    assert_eq!(a["status"], "active", "{a}");
    assert_eq!(
        s.consent(user, &ali_signed).await["agreement_id"],
        s.alipay.agreement(&ali_signed).unwrap().1.as_str()
    );
    let b = s.card(user, &ali_unknown).await;
    assert_eq!(b["status"], "failed", "{b}");
    assert_eq!(b["failure_code"], "verification_expired");
    assert_eq!(s.card(user, &wx_signed).await["status"], "active");
    assert_eq!(
        s.card(user, &wx_waiting).await["status"],
        "pending_verification"
    );
    // The gateways were asked, with verified calls.
    let queries = s
        .alipay
        .verified_methods()
        .iter()
        .filter(|m| *m == "alipay.user.agreement.query")
        .count();
    assert_eq!(queries, 2);
    let gets = s
        .wechat
        .verified_paths()
        .iter()
        .filter(|p| p.starts_with("GET "))
        .count();
    assert_eq!(gets, 2);
    assert_eq!(s.alipay.rejected_count() + s.wechat.rejected_count(), 0);
    // Reconciling is audited as channel events.
    let events = s.audit_of_card(&ali_signed).await;
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "binding.channel_event"),
        "{events:?}"
    );

    // Again: only the one still waiting is examined.
    let r = service.reconcile(age, 100).await.unwrap();
    assert_eq!((r.examined, r.still_pending), (1, 1), "{r:?}");
    // The lost notification finally arrives: acknowledged, nothing changes.
    let before = s.card(user, &ali_signed).await;
    let resp = s.notify_alipay(lost).await;
    assert_eq!((resp.status, resp.text.as_str()), (200, "success"));
    assert_eq!(s.card(user, &ali_signed).await, before);
}

// ---- misconfiguration ---------------------------------------------------------------------

#[tokio::test]
async fn a_wrong_merchant_key_sends_binds_to_review_and_a_retry_after_the_fix_binds() {
    // The operator installed another key than the one registered with
    // WeChat Pay: the gateway refuses our signature (401 SIGN_ERROR).
    let stranger = test_key(fakes::STRANGER).unwrap();
    let s = start_setup(Setup {
        wechat_private_key: Some(stranger.private_pkcs1_pem.clone()),
        ..Setup::default()
    })
    .await;
    let user = "misconf-user-1";
    let r = s.bind(user, VISA, Some("wechat")).await;
    // Not a decline: not 422, not failed; waiting for an operator.
    assert_eq!(r.status, 202, "{}", r.text);
    let card = r.json();
    assert_eq!(card["status"], "pending_review", "{card}");
    assert!(card.get("failure_code").is_none(), "{card}");
    let id = card["id"].as_str().unwrap().to_owned();
    assert_eq!(s.card(user, &id).await["status"], "pending_review");
    // The gateway saw one request, refused for its signature: no retry.
    let calls = s.wechat.requests();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].refusal.as_deref(), Some("bad signature"));

    // Alerted: the metric, with the breaker still closed.
    let m = s.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"cardbind_channel_calls_total{channel="wechat",op="start_binding",outcome="misconfigured"}"#
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, r#"cardbind_channel_breaker_state{channel="wechat"}"#),
        Some(0.0)
    );
    assert!(
        !m.contains(r#"outcome="rejected""#),
        "no refusal counted: {m}"
    );
    // Audited: what happened to the card and why.
    let events = s.audit_of_card(&id).await;
    let misconf: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "channel.misconfigured")
        .collect();
    assert_eq!(misconf.len(), 1, "{events:?}");
    assert_eq!(misconf[0]["actor"], "channel:wechat");
    assert_eq!(misconf[0]["outcome"], "channel_unavailable");
    assert_eq!(misconf[0]["detail"], "start_binding: SIGN_ERROR");
    assert!(events.iter().any(|e| e["action"] == "binding.channel_start"
        && e["detail"] == "pending_verification -> pending_review"));
    // In the review queue.
    let r = s
        .send(
            s.http
                .get(s.url("/v1/admin/reviews"))
                .header("Authorization", &s.admin),
        )
        .await;
    assert!(r.text.contains(&id), "{}", r.text);
    // A retry before the fix: the same answer, still in review, not failed.
    let r = s.admin_post(&format!("/v1/admin/reviews/{id}/retry")).await;
    assert_eq!(r.json()["status"], "pending_review", "{}", r.text);

    // The operator installs the right key and restarts.
    let s = s.restart(Setup::default()).await;
    let r = s.admin_post(&format!("/v1/admin/reviews/{id}/retry")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["status"], "pending_verification", "{v}");
    assert_eq!(v["next_action"]["type"], "redirect", "{v}");
    // The user signs in WeChat; the callback activates the card.
    let code = contract_code(&id);
    let r = s
        .notify_wechat(&s.wechat.user_signs(&code, "EV-misconf-1").unwrap())
        .await;
    assert!((200..300).contains(&r.status), "{} {}", r.status, r.text);
    assert_eq!(s.card(user, &id).await["status"], "active");
    // No card data in what the misconfiguration left behind.
    let text = serde_json::to_string(&s.audit_of_card(&id).await).unwrap();
    for secret in [VISA, "13800138000", "11010519491231002X", "张三"] {
        assert!(!text.contains(secret), "{secret}");
    }
}

#[tokio::test]
async fn a_genuine_refusal_still_fails_the_card_with_422() {
    let s = start().await;
    s.wechat.refuse_presigns(Some((403, "RULE_LIMIT")));
    let r = s.bind("decline-user-1", VISA, Some("wechat")).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (422, "channel_rejected"),
        "{}",
        r.text
    );
    let m = s.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"cardbind_channel_calls_total{channel="wechat",op="start_binding",outcome="ok"}"#
        ),
        Some(1.0),
        "a refusal at start is an answer: {m}"
    );
    assert!(!m.contains("misconfigured"), "{m}");
    assert!(s.audit("channel.misconfigured").await.is_empty());
    let r = s
        .send(
            s.http
                .get(s.url("/v1/users/decline-user-1/cards"))
                .header("Authorization", &s.service),
        )
        .await;
    let cards = r.json()["cards"].as_array().unwrap().clone();
    assert_eq!(cards.len(), 1, "{}", r.text);
    assert_eq!(cards[0]["status"], "failed");
    assert_eq!(cards[0]["failure_code"], "RULE_LIMIT");
}

#[tokio::test]
async fn a_wrong_alipay_app_id_shows_at_reconcile_and_unbind_without_failing_cards() {
    // Alipay's signing page URL is built locally, so a bind cannot see the
    // mistake; the first call to the gateway does.
    let s = start_setup(Setup {
        alipay_app_id: Some("2021000000009999".into()),
        ..Setup::default()
    })
    .await;
    let user = "misconf-ali-1";
    let (id, _url) = s.bind_redirect(user, VISA, "alipay").await;
    let service = &s.running.built.usecases;
    let report = service.reconcile(0, 100).await.unwrap();
    assert_eq!(
        (report.examined, report.errors, report.failed),
        (1, 1, 0),
        "{report:?}"
    );
    assert_eq!(s.card(user, &id).await["status"], "pending_verification");
    // Unbinding works locally; the channel side is left for the operator.
    let r = s.unbind(user, &id).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["status"], "inactive");
    let events = s.audit_of_card(&id).await;
    let details: Vec<&str> = events
        .iter()
        .filter(|e| e["action"] == "channel.misconfigured")
        .filter_map(|e| e["detail"].as_str())
        .collect();
    assert_eq!(
        details,
        ["query: isv.invalid-app-id", "unbind: isv.invalid-app-id"],
        "{events:?}"
    );
    assert!(events
        .iter()
        .any(|e| e["action"] == "binding.channel_unsign" && e["outcome"] == "channel_unavailable"));
    let m = s.metrics().await;
    for op in ["query", "unbind"] {
        assert_eq!(
            metric(
                &m,
                &format!(
                    r#"cardbind_channel_calls_total{{channel="alipay",op="{op}",outcome="misconfigured"}}"#
                )
            ),
            Some(1.0),
            "{op}: {m}"
        );
    }
}
