//! The WeChat Pay channel against a fake API that verifies our
//! `Authorization` signatures and signs its answers and callbacks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use base64::Engine as _;
use cardbind_channels::wechat::{binding_from_contract_code, contract_code, SIGNTEST_PREFIX};
use cardbind_channels::{WechatChannel, WechatConfig};
use cardbind_ports::channel::{
    BindingRef, ChannelEventKind, ChannelStart, Notification, PaymentChannel, RemoteState,
};
use cardbind_ports::ChannelError;
use common::{bid, bind_request, key, now_unix, rsa_sign, rsa_verify, serve};

const MCHID: &str = "1900000109";
const APPID: &str = "wxd678efh567hg6787";
const MERCHANT_SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
const PLATFORM_SERIAL: &str = "PUB_KEY_ID_0119000001092025010100000000";
const PLATFORM_SERIAL_2: &str = "7132D72A03E93CDDF8C03BBD1F37EEDF";
const APIV3_KEY: &str = "0123456789abcdef0123456789ABCDEF";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Default)]
struct Fake {
    /// out_contract_code -> (state, contract_id)
    contracts: Mutex<HashMap<String, (String, String)>>,
    ts_offset: AtomicI64,
    signtest: AtomicBool,
    tamper: AtomicBool,
    wrong_key: AtomicBool,
    unsigned: AtomicBool,
    second_platform_key: AtomicBool,
    unknown_serial: AtomicBool,
    rejected: AtomicUsize,
    decrypted_phone: Mutex<Option<String>>,
    paths: Mutex<Vec<String>>,
}

/// Parses `WECHATPAY2-SHA256-RSA2048 k="v",...`.
fn auth_params(h: &str) -> Option<HashMap<String, String>> {
    let rest = h.strip_prefix("WECHATPAY2-SHA256-RSA2048 ")?;
    let mut out = HashMap::new();
    for part in rest.split(',') {
        let (k, v) = part.split_once('=')?;
        out.insert(k.trim().to_owned(), v.trim().strip_prefix('"')?.strip_suffix('"')?.to_owned());
    }
    Some(out)
}

impl Fake {
    fn check(&self, method: &str, path_and_query: &str, auth: Option<&str>, body: &[u8]) -> Result<(), &'static str> {
        let p = auth_params(auth.ok_or("no Authorization")?).ok_or("bad Authorization")?;
        if p.get("mchid").map(String::as_str) != Some(MCHID) {
            return Err("wrong mchid");
        }
        if p.get("serial_no").map(String::as_str) != Some(MERCHANT_SERIAL) {
            return Err("wrong serial_no");
        }
        let ts: i64 = p.get("timestamp").ok_or("no timestamp")?.parse().map_err(|_| "bad timestamp")?;
        if (ts - now_unix()).abs() > 300 {
            return Err("stale timestamp");
        }
        let nonce = p.get("nonce_str").ok_or("no nonce")?;
        if nonce.len() < 16 {
            return Err("short nonce");
        }
        let mut msg = format!("{method}\n{path_and_query}\n{ts}\n{nonce}\n").into_bytes();
        msg.extend_from_slice(body);
        msg.push(b'\n');
        if !rsa_verify(&key(0).public, &msg, p.get("signature").ok_or("no signature")?) {
            return Err("bad signature");
        }
        Ok(())
    }

    /// Signs an answer the way WeChat Pay does (with the test switches).
    fn signed_headers(&self, body: &[u8]) -> Vec<(String, String)> {
        if self.unsigned.load(Ordering::SeqCst) {
            return Vec::new();
        }
        let ts = (now_unix() + self.ts_offset.load(Ordering::SeqCst)).to_string();
        let nonce = "5K8264ILTKCH16CQ2502SI8ZNMTM67VS".to_owned();
        let mut msg = format!("{ts}\n{nonce}\n").into_bytes();
        msg.extend_from_slice(body);
        msg.push(b'\n');
        let (slot, serial) = if self.second_platform_key.load(Ordering::SeqCst) {
            (3, PLATFORM_SERIAL_2)
        } else if self.wrong_key.load(Ordering::SeqCst) {
            (2, PLATFORM_SERIAL)
        } else {
            (1, PLATFORM_SERIAL)
        };
        let serial = if self.unknown_serial.load(Ordering::SeqCst) { "UNKNOWN_SERIAL" } else { serial };
        let mut signature = rsa_sign(&key(slot).private, &msg);
        if self.signtest.load(Ordering::SeqCst) {
            signature = format!("{SIGNTEST_PREFIX}{signature}");
        }
        vec![
            ("Wechatpay-Timestamp".into(), ts),
            ("Wechatpay-Nonce".into(), nonce),
            ("Wechatpay-Serial".into(), serial.into()),
            ("Wechatpay-Signature".into(), signature),
        ]
    }

    fn respond(&self, status: u16, body: String) -> poem::Response {
        let headers = self.signed_headers(body.as_bytes());
        let mut body = body;
        if self.tamper.load(Ordering::SeqCst) {
            body = body.replace("NOT_SIGNED", "SIGNED").replace("redirect_url\":\"https://", "redirect_url\":\"http://");
        }
        let mut b = poem::Response::builder().status(poem::http::StatusCode::from_u16(status).unwrap());
        for (k, v) in headers {
            b = b.header(k, v);
        }
        if !body.is_empty() {
            b = b.content_type("application/json");
        }
        b.body(body)
    }

    fn handle(&self, method: &str, path_and_query: &str, auth: Option<&str>, serial: Option<&str>, body: &[u8]) -> poem::Response {
        if let Err(why) = self.check(method, path_and_query, auth, body) {
            self.rejected.fetch_add(1, Ordering::SeqCst);
            return self.respond(401, serde_json::json!({"code": "SIGN_ERROR", "message": why}).to_string());
        }
        self.paths.lock().unwrap().push(format!("{method} {path_and_query}"));
        let prefix = "/v3/papay/sign/contracts/plan-id/12535/out-contract-code/";
        if method == "POST" && path_and_query == "/v3/papay/sign/contracts/pre-entrust-sign/h5" {
            let req: serde_json::Value = serde_json::from_slice(body).unwrap();
            if req["appid"] != APPID || req["plan_id"] != 12535 || req["contract_notify_url"].as_str().is_none() {
                return self.respond(400, r#"{"code":"PARAM_ERROR","message":"bad"}"#.into());
            }
            if let Some(ct) = req["phone"].as_str() {
                if serial != Some(PLATFORM_SERIAL) {
                    return self.respond(400, r#"{"code":"PARAM_ERROR","message":"Wechatpay-Serial"}"#.into());
                }
                let raw = B64.decode(ct).unwrap();
                let plain = key(1).private.decrypt(rsa::Oaep::new::<sha1::Sha1>(), &raw).unwrap();
                *self.decrypted_phone.lock().unwrap() = Some(String::from_utf8(plain).unwrap());
            }
            let code = req["out_contract_code"].as_str().unwrap().to_owned();
            if code.len() > 32 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return self.respond(400, r#"{"code":"PARAM_ERROR","message":"out_contract_code"}"#.into());
            }
            self.contracts.lock().unwrap().insert(code.clone(), ("NOT_SIGNED".into(), String::new()));
            let url = format!("https://fake-wechat.invalid/papay/entrust?session=s-{code}");
            return self.respond(200, serde_json::json!({"redirect_url": url}).to_string());
        }
        if let Some(rest) = path_and_query.strip_prefix(prefix) {
            let (code, terminate) = match rest.strip_suffix("/terminate") {
                Some(c) => (c.to_owned(), true),
                None => (rest.to_owned(), false),
            };
            let mut contracts = self.contracts.lock().unwrap();
            let Some((state, id)) = contracts.get_mut(&code) else {
                return self.respond(404, r#"{"code":"RESOURCE_NOT_EXISTS","message":"no such contract"}"#.into());
            };
            if terminate {
                if state != "SIGNED" {
                    return self.respond(400, r#"{"code":"CONTRACT_ALREADY_TERMINATED","message":"x"}"#.into());
                }
                *state = "TERMINATED".into();
                return self.respond(204, String::new());
            }
            let mut c = serde_json::json!({"mchid": MCHID, "appid": APPID, "plan_id": 12535,
                "out_contract_code": code, "contract_state": state, "contract_display_account": "张三"});
            if !id.is_empty() {
                c["contract_id"] = serde_json::Value::String(id.clone());
            }
            return self.respond(200, c.to_string());
        }
        self.respond(404, r#"{"code":"NOT_FOUND","message":"no route"}"#.into())
    }

    /// The user signs in WeChat: the contract is SIGNED and a callback is sent.
    fn user_signs(&self, code: &str, event_id: &str) -> Notification {
        let id = format!("Wx{:016}", code.len() * 104_729);
        self.contracts.lock().unwrap().insert(code.to_owned(), ("SIGNED".into(), id.clone()));
        self.callback(event_id, "PAPAY.SIGN", serde_json::json!({
            "mchid": MCHID, "appid": APPID, "plan_id": 12535, "out_contract_code": code,
            "contract_id": id, "change_type": "ADD", "operate_time": "2025-01-01T10:00:00+08:00",
            "contract_display_account": "张三"
        }))
    }

    fn callback(&self, event_id: &str, event_type: &str, resource: serde_json::Value) -> Notification {
        let nonce = "fdasflkja484";
        let aad = "papay";
        let cipher = aes_gcm::Aes256Gcm::new_from_slice(APIV3_KEY.as_bytes()).unwrap();
        let ct = cipher
            .encrypt(aes_gcm::Nonce::from_slice(nonce.as_bytes()), Payload { msg: resource.to_string().as_bytes(), aad: aad.as_bytes() })
            .unwrap();
        let body = serde_json::json!({
            "id": event_id, "create_time": "2025-01-01T10:00:00+08:00", "resource_type": "encrypt-resource",
            "event_type": event_type, "summary": "contract",
            "resource": {"original_type": "papay", "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": B64.encode(ct), "associated_data": aad, "nonce": nonce}
        })
        .to_string();
        let headers = self
            .signed_headers(body.as_bytes())
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        Notification { headers, body: body.into_bytes() }
    }
}

fn config(base_url: String) -> WechatConfig {
    WechatConfig {
        base_url,
        mchid: MCHID.into(),
        appid: APPID.into(),
        plan_id: 12535,
        serial_no: MERCHANT_SERIAL.into(),
        private_key_pem: key(0).private_pem.clone(),
        platform_keys: vec![
            (PLATFORM_SERIAL.into(), key(1).public_pem.clone()),
            (PLATFORM_SERIAL_2.into(), key(3).public_pem.clone()),
        ],
        apiv3_key: APIV3_KEY.into(),
        notify_url: "https://cardbind.example/v1/channels/wechat/notify".into(),
        ..WechatConfig::default()
    }
}

async fn setup_with(cfg: impl FnOnce(WechatConfig) -> WechatConfig) -> (Arc<Fake>, WechatChannel) {
    let fake = Arc::new(Fake::default());
    let f = fake.clone();
    let base = serve(move |req: poem::Request| {
        let fake = f.clone();
        async move {
            let method = req.method().as_str().to_owned();
            let pq = req.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
            let auth = req.header("authorization").map(str::to_owned);
            let serial = req.header("wechatpay-serial").map(str::to_owned);
            let body = req.into_body().into_bytes().await.unwrap();
            fake.handle(&method, &pq, auth.as_deref(), serial.as_deref(), &body)
        }
    })
    .await;
    let ch = WechatChannel::new(cfg(config(base))).unwrap();
    (fake, ch)
}

async fn setup() -> (Arc<Fake>, WechatChannel) {
    setup_with(|c| c).await
}

const UUID: &str = "0191d3c5-7a4e-7c3b-9f10-2a6b8e4d1c77";

#[tokio::test]
async fn full_bind_flow() {
    let (fake, ch) = setup().await;
    let b = bid(UUID);
    let code = contract_code(&b).unwrap();
    assert_eq!(code, "0191d3c57a4e7c3b9f102a6b8e4d1c77");
    assert_eq!(ch.query(&b, None).await.unwrap(), RemoteState::NotFound);
    let start = ch.start_binding(&bind_request(UUID)).await.unwrap();
    let ChannelStart::Redirect { channel_ref, url } = start else { panic!("{start:?}") };
    assert_eq!(channel_ref, code);
    assert!(url.contains(&code), "{url}");
    assert_eq!(ch.query(&b, Some(channel_ref.clone())).await.unwrap(), RemoteState::Pending);
    let n = fake.user_signs(&code, "EV-2025-0001");
    let ev = ch.parse_notification(&n).unwrap();
    assert_eq!(ev.event_id, "EV-2025-0001");
    assert_eq!(ev.binding, BindingRef::Ours(b.clone()));
    let ChannelEventKind::Signed { channel_ref: contract_id } = ev.kind else { panic!() };
    // Replayed callback: same event id.
    assert_eq!(ch.parse_notification(&n).unwrap().event_id, "EV-2025-0001");
    assert_eq!(
        ch.query(&b, Some(contract_id.clone())).await.unwrap(),
        RemoteState::Active { channel_ref: contract_id.clone() }
    );
    ch.unbind(&b, &contract_id).await.unwrap();
    assert_eq!(ch.query(&b, None).await.unwrap(), RemoteState::Terminated);
    // Again: already ended is success.
    ch.unbind(&b, &contract_id).await.unwrap();
    assert_eq!(fake.rejected.load(Ordering::SeqCst), 0, "the fake refused a request");
    // The user ends the contract inside WeChat.
    let del = fake.callback("EV-2025-0002", "PAPAY.TERMINATE", serde_json::json!({
        "mchid": MCHID, "out_contract_code": code, "contract_id": contract_id, "change_type": "DELETE"}));
    let ev = ch.parse_notification(&del).unwrap();
    assert_eq!(ev.kind, ChannelEventKind::Terminated);
    assert_eq!(ev.binding, BindingRef::Ours(b));
    let paths = fake.paths.lock().unwrap().clone();
    assert!(paths.iter().any(|p| p.ends_with("/terminate")), "{paths:?}");
}

#[tokio::test]
async fn sensitive_phone_is_oaep_encrypted_with_serial_header() {
    let (fake, ch) = setup_with(|c| WechatConfig { encrypted_phone_field: Some("phone".into()), ..c }).await;
    let start = ch.start_binding(&bind_request("bindphone1")).await.unwrap();
    assert!(matches!(start, ChannelStart::Redirect { .. }), "{start:?}");
    assert_eq!(fake.decrypted_phone.lock().unwrap().as_deref(), Some("+8613800138000"));
}

#[tokio::test]
async fn tampered_response_is_refused() {
    let (fake, ch) = setup().await;
    ch.start_binding(&bind_request("bindtamper1")).await.unwrap();
    fake.tamper.store(true, Ordering::SeqCst);
    assert_eq!(ch.query(&bid("bindtamper1"), None).await, Err(ChannelError::InvalidSignature));
    assert_eq!(ch.start_binding(&bind_request("bindtamper2")).await, Err(ChannelError::InvalidSignature));
}

#[tokio::test]
async fn response_signed_with_wrong_key_or_unknown_serial_is_refused() {
    let (fake, ch) = setup().await;
    fake.wrong_key.store(true, Ordering::SeqCst);
    assert_eq!(ch.query(&bid("bindw"), None).await, Err(ChannelError::InvalidSignature));
    fake.wrong_key.store(false, Ordering::SeqCst);
    fake.unknown_serial.store(true, Ordering::SeqCst);
    assert_eq!(ch.query(&bid("bindw"), None).await, Err(ChannelError::InvalidSignature));
}

#[tokio::test]
async fn second_platform_key_is_accepted_by_its_serial() {
    let (fake, ch) = setup().await;
    fake.second_platform_key.store(true, Ordering::SeqCst);
    assert_eq!(ch.query(&bid("bindk2"), None).await, Ok(RemoteState::NotFound));
}

#[tokio::test]
async fn stale_timestamps_are_refused() {
    let (fake, ch) = setup().await;
    fake.ts_offset.store(-301, Ordering::SeqCst);
    assert_eq!(ch.query(&bid("binds"), None).await, Err(ChannelError::InvalidSignature));
    fake.ts_offset.store(400, Ordering::SeqCst);
    assert_eq!(ch.query(&bid("binds"), None).await, Err(ChannelError::InvalidSignature));
    // A stale callback too.
    fake.ts_offset.store(-3600, Ordering::SeqCst);
    let n = fake.user_signs("binds", "EV-stale");
    assert_eq!(ch.parse_notification(&n), Err(ChannelError::InvalidSignature));
    fake.ts_offset.store(-200, Ordering::SeqCst);
    assert_eq!(ch.query(&bid("binds"), None).await.map(|_| ()), Ok(()));
}

#[tokio::test]
async fn signtest_signatures_are_refused() {
    let (fake, ch) = setup().await;
    fake.signtest.store(true, Ordering::SeqCst);
    assert_eq!(ch.query(&bid("bindst"), None).await, Err(ChannelError::InvalidSignature));
    let n = fake.user_signs("bindst", "EV-st");
    assert_eq!(ch.parse_notification(&n), Err(ChannelError::InvalidSignature));
}

#[tokio::test]
async fn unsigned_success_is_forged() {
    let (fake, ch) = setup().await;
    fake.unsigned.store(true, Ordering::SeqCst);
    ch.start_binding(&bind_request("bindu")).await.unwrap_err();
    assert_eq!(ch.start_binding(&bind_request("bindu")).await, Err(ChannelError::InvalidSignature));
    // Unsigned 404: not acted upon.
    assert!(matches!(ch.query(&bid("nothere"), None).await, Err(ChannelError::Protocol(_))));
}

#[tokio::test]
async fn wrong_merchant_key_is_refused_by_the_fake() {
    let (fake, ch) = setup_with(|c| WechatConfig { private_key_pem: key(2).private_pkcs1_pem.clone(), ..c }).await;
    let err = ch.query(&bid("bindmk"), None).await.unwrap_err();
    assert!(matches!(err, ChannelError::Rejected { ref code, .. } if code == "SIGN_ERROR"), "{err:?}");
    assert_eq!(fake.rejected.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn callbacks_tampered_or_wrongly_keyed_are_refused() {
    let (fake, ch) = setup().await;
    let good = fake.user_signs("bindcb", "EV-cb");
    assert!(ch.parse_notification(&good).is_ok());
    let mut t = good.clone();
    let s = String::from_utf8(t.body.clone()).unwrap().replace("EV-cb", "EV-cc");
    t.body = s.into_bytes();
    assert_eq!(ch.parse_notification(&t), Err(ChannelError::InvalidSignature));
    // Right signature, wrong APIv3 key (another merchant's resource).
    let (_f2, other) = setup_with(|c| WechatConfig { apiv3_key: "ffffffffffffffffffffffffffffffff".into(), ..c }).await;
    assert_eq!(other.parse_notification(&good), Err(ChannelError::InvalidSignature));
    // Missing headers
    let mut h = good.clone();
    h.headers.remove("wechatpay-signature");
    assert_eq!(ch.parse_notification(&h), Err(ChannelError::InvalidSignature));
    // Forged with a stranger's key
    fake.wrong_key.store(true, Ordering::SeqCst);
    assert_eq!(ch.parse_notification(&fake.user_signs("bindcb", "EV-f")), Err(ChannelError::InvalidSignature));
    let ack = ch.notification_ack();
    assert_eq!(ack.status, 200);
}

#[test]
fn contract_codes_round_trip() {
    for id in [UUID, "abc123", "A1"] {
        let b = bid(id);
        let code = contract_code(&b).unwrap();
        assert!(code.len() <= 32 && code.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(binding_from_contract_code(&code), Some(b));
    }
    assert_eq!(contract_code(&bid("has-dash")), None);
    assert_eq!(contract_code(&bid("0191d3c57a4e7c3b9f102a6b8e4d1c77")), None);
    assert_eq!(binding_from_contract_code(""), None);
    assert_eq!(binding_from_contract_code("bad code!"), None);
}

#[tokio::test]
async fn unsupported_binding_id_is_refused_at_start() {
    let (_fake, ch) = setup().await;
    assert!(matches!(
        ch.start_binding(&bind_request("has.dots")).await.unwrap(),
        ChannelStart::Refused { code, .. } if code == "unsupported_binding_id"
    ));
}

#[test]
fn config_errors_name_their_field_and_debug_hides_secrets() {
    let mut c = config("https://api.mch.weixin.qq.com".into());
    let d = format!("{c:?}");
    assert!(!d.contains(APIV3_KEY) && !d.contains("PRIVATE KEY"), "{d}");
    let ch = WechatChannel::new(c.clone()).unwrap();
    let d = format!("{ch:?}");
    assert!(!d.contains(APIV3_KEY) && !d.contains("PRIVATE"), "{d}");
    c.apiv3_key = "short".into();
    assert_eq!(WechatChannel::new(c.clone()).unwrap_err().field, "apiv3_key");
    c.apiv3_key = APIV3_KEY.into();
    c.platform_keys.clear();
    assert_eq!(WechatChannel::new(c).unwrap_err().field, "platform_keys");
}

#[test]
fn authorization_header_matches_openssl_for_fixed_input() {
    // The header's signature is over METHOD\nPATH\nTS\nNONCE\nBODY\n: take
    // TS and NONCE back out of it and recompute the signature with openssl.
    let clock = common::FixedClock::at_millis(1_554_208_460_000);
    let ch = WechatChannel::new(WechatConfig { clock: Some(clock), ..config("https://api.mch.weixin.qq.com".into()) }).unwrap();
    let body = r#"{"appid":"wxd678efh567hg6787","plan_id":12535}"#;
    let h = ch.authorization("POST", "/v3/papay/sign/contracts/pre-entrust-sign/h5?x=1", body).unwrap();
    let p = auth_params(&h).unwrap();
    assert_eq!(p["timestamp"], "1554208460");
    assert_eq!(p["mchid"], MCHID);
    assert_eq!(p["serial_no"], MERCHANT_SERIAL);
    let msg = format!("POST\n/v3/papay/sign/contracts/pre-entrust-sign/h5?x=1\n1554208460\n{}\n{body}\n", p["nonce_str"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("k.pem"), &key(0).private_pkcs1_pem).unwrap();
    std::fs::write(dir.path().join("m.txt"), msg.as_bytes()).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(dir.path().join("k.pem"))
        .arg(dir.path().join("m.txt"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(p["signature"], B64.encode(out.stdout));
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn channel() -> WechatChannel {
        WechatChannel::new(config("https://api.mch.weixin.qq.com".into())).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn callback_parser_never_panics(
            body in proptest::collection::vec(any::<u8>(), 0..300),
            ts in "[0-9a-z-]{0,12}",
            nonce in ".{0,8}",
            sig in "[A-Za-z0-9+/=]{0,40}",
            serial in prop_oneof![Just(PLATFORM_SERIAL.to_owned()), ".{0,8}".prop_map(|s| s)],
        ) {
            let mut headers = BTreeMap::new();
            headers.insert("wechatpay-timestamp".into(), ts);
            headers.insert("wechatpay-nonce".into(), nonce);
            headers.insert("wechatpay-signature".into(), sig);
            headers.insert("wechatpay-serial".into(), serial);
            let n = Notification { headers, body };
            prop_assert!(channel().parse_notification(&n).is_err());
        }

        #[test]
        fn validly_signed_garbage_is_refused(resource in "[ -~]{0,80}") {
            // Correct signature over a body whose resource is not valid.
            let fake = Fake::default();
            let body = format!("{{\"id\":\"x\",\"resource\":{}}}", serde_json::Value::String(resource));
            let headers = fake.signed_headers(body.as_bytes()).into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
            let n = Notification { headers, body: body.into_bytes() };
            prop_assert_eq!(channel().parse_notification(&n), Err(ChannelError::InvalidSignature));
        }
    }
}
