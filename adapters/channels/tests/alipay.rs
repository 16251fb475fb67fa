//! The Alipay channel against a fake gateway that verifies our request
//! signatures (and timestamps, app id, AES content) and signs its answers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use cardbind_channels::alipay::{alipay_timestamp, scan, AlipayChannel, AlipayConfig};
use cardbind_domain::Timestamp;
use cardbind_ports::channel::{
    BindingRef, ChannelEventKind, ChannelStart, Notification, PaymentChannel, RemoteState,
};
use cardbind_ports::ChannelError;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use common::{bid, bind_request, key, rsa_sign, rsa_verify, serve};

const APP_ID: &str = "2021000000000001";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The gateway's own view of the string to sign (written independently of
/// the crate): all params but `skip`, no empty values, sorted, `k=v&`.
fn content(params: &BTreeMap<String, String>, skip: &[&str]) -> String {
    let mut keys: Vec<&String> = params.keys().filter(|k| !skip.contains(&k.as_str())).collect();
    keys.sort();
    keys.into_iter()
        .filter(|k| !params[*k].is_empty())
        .map(|k| format!("{k}={}", params[k]))
        .collect::<Vec<_>>()
        .join("&")
}

fn aes_enc(key: &[u8; 16], data: &[u8]) -> String {
    B64.encode(cbc::Encryptor::<aes::Aes128>::new(key.into(), &[0u8; 16].into()).encrypt_padded_vec_mut::<Pkcs7>(data))
}

fn aes_dec(key: &[u8; 16], b64: &str) -> Vec<u8> {
    cbc::Decryptor::<aes::Aes128>::new(key.into(), &[0u8; 16].into())
        .decrypt_padded_vec_mut::<Pkcs7>(&B64.decode(b64).unwrap())
        .unwrap()
}

#[derive(Default)]
struct Fake {
    aes: Option<[u8; 16]>,
    /// external_agreement_no -> (status, agreement_no)
    agreements: Mutex<HashMap<String, (String, String)>>,
    tamper: AtomicBool,
    wrong_key: AtomicBool,
    force_code: Mutex<Option<(&'static str, &'static str)>>,
    requests: AtomicUsize,
    rejected_requests: AtomicUsize,
    methods: Mutex<Vec<String>>,
}

impl Fake {
    /// Checks a request's parameters as Alipay would; returns the biz content.
    fn check(&self, params: &BTreeMap<String, String>) -> Result<serde_json::Value, &'static str> {
        let sign = params.get("sign").ok_or("missing sign")?;
        if !rsa_verify(&key(0).public, content(params, &["sign"]).as_bytes(), sign) {
            return Err("bad signature");
        }
        for (k, v) in [("app_id", APP_ID), ("charset", "utf-8"), ("sign_type", "RSA2"), ("version", "1.0")] {
            if params.get(k).map(String::as_str) != Some(v) {
                return Err("bad common parameter");
            }
        }
        // timestamp: yyyy-MM-dd HH:mm:ss in UTC+8, close to now.
        let ts = params.get("timestamp").ok_or("no timestamp")?;
        let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
        let parsed = time::PrimitiveDateTime::parse(ts, &fmt).map_err(|_| "bad timestamp format")?;
        let at = parsed.assume_offset(time::UtcOffset::from_hms(8, 0, 0).unwrap());
        if (at.unix_timestamp() - common::now_unix()).abs() > 600 {
            return Err("timestamp not in UTC+8 now");
        }
        let biz = params.get("biz_content").ok_or("no biz_content")?;
        let biz = match (self.aes, params.get("encrypt_type").map(String::as_str)) {
            (Some(k), Some("AES")) => String::from_utf8(aes_dec(&k, biz)).unwrap(),
            (None, None) => biz.clone(),
            _ => return Err("encryption mismatch"),
        };
        serde_json::from_str(&biz).map_err(|_| "biz_content is not JSON")
    }

    fn answer(&self, method: &str, fields: serde_json::Value) -> String {
        let node_name = format!("{}_response", method.replace('.', "_"));
        // Keep the fake's own spacing: the client must verify these bytes.
        let mut node = serde_json::to_string_pretty(&fields).unwrap();
        if let Some(k) = self.aes {
            if fields["code"] == "10000" {
                node = serde_json::to_string(&aes_enc(&k, node.as_bytes())).unwrap();
            }
        }
        let signer = if self.wrong_key.load(Ordering::SeqCst) { key(2) } else { key(1) };
        let sign = rsa_sign(&signer.private, node.as_bytes());
        let mut body = format!("{{\"{node_name}\":{node},\n \"sign\":\"{sign}\"}}");
        if self.tamper.load(Ordering::SeqCst) {
            body = body.replacen("TEMP", "NORM", 1).replacen("Success", "Succes5", 1);
        }
        body
    }

    fn handle(&self, params: BTreeMap<String, String>) -> String {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let biz = match self.check(&params) {
            Ok(b) => b,
            Err(why) => {
                self.rejected_requests.fetch_add(1, Ordering::SeqCst);
                return serde_json::json!({"error_response": {"code": "40002", "msg": "Invalid Arguments",
                    "sub_code": "isv.invalid-signature", "sub_msg": why}})
                .to_string();
            }
        };
        let method = params["method"].clone();
        self.methods.lock().unwrap().push(method.clone());
        if let Some((code, sub)) = *self.force_code.lock().unwrap() {
            return self.answer(&method, serde_json::json!({"code": code, "msg": "forced", "sub_code": sub, "sub_msg": "forced"}));
        }
        let mut agreements = self.agreements.lock().unwrap();
        let found = if let Some(no) = biz["agreement_no"].as_str() {
            agreements.iter_mut().find(|(_, (_, a))| a == no).map(|(k, v)| (k.clone(), v))
        } else {
            let ext = biz["external_agreement_no"].as_str().unwrap_or_default().to_owned();
            agreements.get_mut(&ext).map(|v| (ext, v))
        };
        let not_exist = serde_json::json!({"code": "40004", "msg": "Business Failed",
            "sub_code": "USER_AGREEMENT_NOT_EXIST", "sub_msg": "agreement does not exist"});
        match (method.as_str(), found) {
            ("alipay.user.agreement.query", Some((ext, (status, no)))) => {
                let mut fields = serde_json::json!({
                    "code": "10000", "msg": "Success",
                    "note": "braces } { and \"quotes\" and \\ backslash \u{4e2d}",
                    "external_agreement_no": ext, "status": status,
                    "personal_product_code": "GENERAL_WITHHOLDING_P",
                    "sign_scene": "DEFAULT|DEFAULT",
                    "nested": {"a": [1, {"b": "}]"}], "c": null}
                });
                if status != "TEMP" {
                    fields["agreement_no"] = serde_json::Value::String(no.clone());
                }
                self.answer(&method, fields)
            }
            ("alipay.user.agreement.unsign", Some((_, (status, _)))) => {
                if status == "UNSIGN" {
                    return self.answer(&method, serde_json::json!({"code": "40004", "msg": "Business Failed",
                        "sub_code": "AGREEMENT_ALREADY_UNSIGNED", "sub_msg": "already"}));
                }
                *status = "UNSIGN".into();
                self.answer(&method, serde_json::json!({"code": "10000", "msg": "Success"}))
            }
            (_, None) => self.answer(&method, not_exist),
            _ => self.answer(&method, serde_json::json!({"code": "40004", "sub_code": "UNKNOWN_METHOD"})),
        }
    }

    /// The user opens our signing URL: the gateway verifies it like any
    /// request and opens a TEMP agreement.
    fn open_sign_page(&self, url: &str) -> Result<(), &'static str> {
        let url = url::Url::parse(url).unwrap();
        let params: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
        let biz = self.check(&params)?;
        if params["method"] != "alipay.user.agreement.page.sign" {
            return Err("wrong method");
        }
        if biz["personal_product_code"] != "GENERAL_WITHHOLDING_P" || biz["access_params"]["channel"] != "ALIPAYAPP" {
            return Err("wrong product");
        }
        let ext = biz["external_agreement_no"].as_str().ok_or("no external_agreement_no")?;
        self.agreements.lock().unwrap().insert(ext.to_owned(), ("TEMP".into(), String::new()));
        Ok(())
    }

    /// The user confirms in the Alipay app: the agreement is NORMAL and the
    /// gateway sends a signed `dut_user_sign` notification.
    fn user_signs(&self, ext: &str, notify_id: &str) -> Vec<u8> {
        let no = format!("2025{:012}", ext.len() * 7919);
        self.agreements.lock().unwrap().insert(ext.to_owned(), ("NORMAL".into(), no.clone()));
        notification(&[
            ("notify_type", "dut_user_sign"),
            ("notify_id", notify_id),
            ("notify_time", "2025-01-01 10:00:00"),
            ("app_id", APP_ID),
            ("status", "NORMAL"),
            ("agreement_no", &no),
            ("external_agreement_no", ext),
            ("personal_product_code", "GENERAL_WITHHOLDING_P"),
            ("sign_scene", "DEFAULT|DEFAULT"),
            ("alipay_user_id", "2088000000000001"),
            ("invalid_time", "2115-02-01 00:00:00"),
            ("sign_time", "2025-01-01 10:00:00"),
        ])
    }
}

/// A form-encoded notification signed with `key(1)` (Alipay's key).
fn notification(pairs: &[(&str, &str)]) -> Vec<u8> {
    notification_signed_by(pairs, 1)
}

fn notification_signed_by(pairs: &[(&str, &str)], slot: usize) -> Vec<u8> {
    let params: BTreeMap<String, String> =
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let sign = rsa_sign(&key(slot).private, content(&params, &["sign", "sign_type"]).as_bytes());
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    ser.extend_pairs(params.iter());
    ser.append_pair("sign_type", "RSA2");
    ser.append_pair("sign", &sign);
    ser.finish().into_bytes()
}

async fn start_fake(fake: Arc<Fake>) -> String {
    let base = serve(move |req: poem::Request| {
        let fake = fake.clone();
        async move {
            assert_eq!(req.method(), poem::http::Method::POST);
            let body = req.into_body().into_bytes().await.unwrap();
            let params: BTreeMap<String, String> =
                url::form_urlencoded::parse(&body).into_owned().collect();
            let text = fake.handle(params);
            poem::Response::builder()
                .content_type("text/html;charset=utf-8")
                .body(text)
        }
    })
    .await;
    format!("{base}/gateway.do")
}

fn config(gateway_url: String, aes: Option<[u8; 16]>) -> AlipayConfig {
    AlipayConfig {
        gateway_url,
        app_id: APP_ID.into(),
        private_key_pem: key(0).private_pem.clone(),
        alipay_public_key_pem: key(1).public_pem.clone(),
        aes_key: aes.map(|k| B64.encode(k)),
        notify_url: Some("https://cardbind.example/v1/channels/alipay/notify".into()),
        ..AlipayConfig::default()
    }
}

async fn setup(aes: Option<[u8; 16]>) -> (Arc<Fake>, AlipayChannel) {
    let fake = Arc::new(Fake { aes, ..Fake::default() });
    let url = start_fake(fake.clone()).await;
    let ch = AlipayChannel::new(config(url, aes)).unwrap();
    (fake, ch)
}

fn note(body: Vec<u8>) -> Notification {
    let mut headers = BTreeMap::new();
    headers.insert("content-type".into(), "application/x-www-form-urlencoded".into());
    Notification { headers, body }
}

async fn full_flow(aes: Option<[u8; 16]>) {
    let (fake, ch) = setup(aes).await;
    let b = bid("bind-alipay-1");
    // start -> redirect
    let start = ch.start_binding(&bind_request("bind-alipay-1")).await.unwrap();
    let ChannelStart::Redirect { channel_ref, url } = start else { panic!("{start:?}") };
    assert_eq!(channel_ref, "bind-alipay-1");
    assert!(url.starts_with(&fake_gateway_prefix(&url)));
    // Not opened yet: the agreement does not exist.
    assert_eq!(ch.query(&b, Some(channel_ref.clone())).await.unwrap(), RemoteState::NotFound);
    fake.open_sign_page(&url).unwrap();
    assert_eq!(ch.query(&b, Some(channel_ref.clone())).await.unwrap(), RemoteState::Pending);
    // The user signs: notification
    let n = note(fake.user_signs("bind-alipay-1", "notify-0001"));
    let ev = ch.parse_notification(&n).unwrap();
    assert_eq!(ev.event_id, "notify-0001");
    assert_eq!(ev.binding, BindingRef::Ours(b.clone()));
    let ChannelEventKind::Signed { channel_ref: agreement_no } = ev.kind else { panic!() };
    // Replay: the same notification is the same event id (the store dedups).
    assert_eq!(ch.parse_notification(&n).unwrap().event_id, "notify-0001");
    // query by agreement_no and by our external number
    assert_eq!(
        ch.query(&b, Some(agreement_no.clone())).await.unwrap(),
        RemoteState::Active { channel_ref: agreement_no.clone() }
    );
    assert_eq!(
        ch.query(&b, None).await.unwrap(),
        RemoteState::Active { channel_ref: agreement_no.clone() }
    );
    // unbind, and unbind again (already ended must succeed)
    ch.unbind(&b, &agreement_no).await.unwrap();
    assert_eq!(ch.query(&b, Some(agreement_no.clone())).await.unwrap(), RemoteState::Terminated);
    ch.unbind(&b, &agreement_no).await.unwrap();
    assert_eq!(fake.rejected_requests.load(Ordering::SeqCst), 0, "the fake refused a request");
    // The user unsigns in the wallet app: dut_user_unsign.
    let un = note(notification(&[
        ("notify_type", "dut_user_unsign"),
        ("notify_id", "notify-0002"),
        ("app_id", APP_ID),
        ("status", "UNSIGN"),
        ("agreement_no", &agreement_no),
        ("external_agreement_no", "bind-alipay-1"),
    ]));
    let ev = ch.parse_notification(&un).unwrap();
    assert_eq!(ev.kind, ChannelEventKind::Terminated);
    assert_eq!(ev.binding, BindingRef::Ours(b));
    let ack = ch.notification_ack();
    assert_eq!((ack.status, ack.content_type, ack.body.as_str()), (200, "text/plain", "success"));
}

fn fake_gateway_prefix(url: &str) -> String {
    url.split('?').next().unwrap().to_owned()
}

#[tokio::test]
async fn full_bind_flow() {
    full_flow(None).await;
}

#[tokio::test]
async fn full_bind_flow_with_aes_content_encryption() {
    full_flow(Some(*b"0123456789abcdef")).await;
}

#[tokio::test]
async fn aes_request_is_encrypted_on_the_wire() {
    let aes = *b"fedcba9876543210";
    let (_fake, ch) = setup(Some(aes)).await;
    let params = ch
        .signed_params("alipay.user.agreement.query", &serde_json::json!({"external_agreement_no": "x"}), false)
        .unwrap();
    assert_eq!(params["encrypt_type"], "AES");
    assert!(!params["biz_content"].contains("external_agreement_no"));
    let plain = aes_dec(&aes, &params["biz_content"]);
    assert_eq!(plain, br#"{"external_agreement_no":"x"}"#);
}

#[tokio::test]
async fn tampered_response_is_refused() {
    let (fake, ch) = setup(None).await;
    fake.open_sign_page(&start_url(&ch, "bind-t").await).unwrap();
    fake.tamper.store(true, Ordering::SeqCst);
    assert_eq!(ch.query(&bid("bind-t"), None).await, Err(ChannelError::InvalidSignature));
}

#[tokio::test]
async fn response_signed_with_another_key_is_refused() {
    let (fake, ch) = setup(None).await;
    fake.wrong_key.store(true, Ordering::SeqCst);
    assert_eq!(ch.query(&bid("bind-w"), None).await, Err(ChannelError::InvalidSignature));
}

#[tokio::test]
async fn request_signed_with_a_wrong_merchant_key_is_refused_by_the_gateway() {
    let fake = Arc::new(Fake::default());
    let url = start_fake(fake.clone()).await;
    let mut cfg = config(url, None);
    cfg.private_key_pem = key(2).private_pem.clone();
    let ch = AlipayChannel::new(cfg).unwrap();
    let err = ch.query(&bid("bind-x"), None).await.unwrap_err();
    assert!(matches!(err, ChannelError::Protocol(ref m) if m.contains("isv.invalid-signature")), "{err:?}");
    assert_eq!(fake.rejected_requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn result_codes_map_to_errors() {
    let (fake, ch) = setup(None).await;
    *fake.force_code.lock().unwrap() = Some(("20000", "isp.unknow-error"));
    assert!(matches!(ch.query(&bid("b"), None).await, Err(ChannelError::Unavailable(_))));
    *fake.force_code.lock().unwrap() = Some(("40004", "USER_AGREEMENT_STATUS_ERROR"));
    assert_eq!(
        ch.unbind(&bid("b"), "b").await.unwrap_err(),
        ChannelError::Rejected { code: "USER_AGREEMENT_STATUS_ERROR".into(), message: "forced".into() }
    );
    *fake.force_code.lock().unwrap() = Some(("40006", ""));
    assert!(matches!(ch.query(&bid("b"), None).await, Err(ChannelError::Rejected { code, .. }) if code == "40006"));
}

#[tokio::test]
async fn confirm_otp_is_unsupported() {
    let (_fake, ch) = setup(None).await;
    assert!(matches!(
        ch.confirm_otp(&bid("b"), "b", "123456").await,
        Err(ChannelError::Rejected { code, .. }) if code == "unsupported"
    ));
}

async fn start_url(ch: &AlipayChannel, id: &str) -> String {
    match ch.start_binding(&bind_request(id)).await.unwrap() {
        ChannelStart::Redirect { url, .. } => url,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn notifications_forged_tampered_or_foreign_are_refused() {
    let (fake, ch) = setup(None).await;
    let good = fake.user_signs("bind-n", "n-1");
    assert!(ch.parse_notification(&note(good.clone())).is_ok());
    // Tampered value
    let text = String::from_utf8(good.clone()).unwrap().replace("status=NORMAL", "status=NORMAL&x=1");
    assert_eq!(ch.parse_notification(&note(text.into_bytes())), Err(ChannelError::InvalidSignature));
    let text = String::from_utf8(good).unwrap().replace("bind-n", "bind-m");
    assert_eq!(ch.parse_notification(&note(text.into_bytes())), Err(ChannelError::InvalidSignature));
    // Signed by a stranger
    let forged = notification_signed_by(
        &[("notify_type", "dut_user_sign"), ("notify_id", "n-2"), ("app_id", APP_ID),
          ("status", "NORMAL"), ("agreement_no", "1"), ("external_agreement_no", "bind-n")],
        2,
    );
    assert_eq!(ch.parse_notification(&note(forged)), Err(ChannelError::InvalidSignature));
    // Another app's notification, validly signed
    let foreign = notification(&[("notify_type", "dut_user_sign"), ("notify_id", "n-3"), ("app_id", "2021999"),
        ("status", "NORMAL"), ("agreement_no", "1"), ("external_agreement_no", "bind-n")]);
    assert_eq!(ch.parse_notification(&note(foreign)), Err(ChannelError::InvalidSignature));
    // Garbage
    for body in [&b""[..], b"sign=", b"%ff%fe=\xff", b"&&&==&", b"sign=abc&sign=def"] {
        assert_eq!(ch.parse_notification(&note(body.to_vec())), Err(ChannelError::InvalidSignature));
    }
}

#[test]
fn timestamp_is_beijing_time() {
    assert_eq!(alipay_timestamp(Timestamp::from_unix_millis(0)), "1970-01-01 08:00:00");
    assert_eq!(alipay_timestamp(Timestamp::from_unix_millis(1_700_000_000_000)), "2023-11-15 06:13:20");
    assert_eq!(alipay_timestamp(Timestamp::from_unix_millis(951_825_600_000)), "2000-02-29 20:00:00");
    // 2024-02-29 16:30:00 UTC is 2024-03-01 00:30:00 in Beijing.
    assert_eq!(alipay_timestamp(Timestamp::from_unix_millis(1_709_224_200_000)), "2024-03-01 00:30:00");
}

#[test]
fn keys_load_in_every_encoding_and_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("app_private_key.pem");
    std::fs::write(&p, &key(0).private_pkcs1_pem).unwrap();
    let bare: String = key(1)
        .public_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    for (private, public) in [
        (key(0).private_pem.clone(), key(1).public_pem.clone()),
        (key(0).private_pkcs1_pem.clone(), bare),
        (p.to_string_lossy().into_owned(), key(1).public_pem.clone()),
    ] {
        let cfg = AlipayConfig {
            gateway_url: "https://openapi.alipay.com/gateway.do".into(),
            app_id: APP_ID.into(),
            private_key_pem: private,
            alipay_public_key_pem: public,
            ..AlipayConfig::default()
        };
        AlipayChannel::new(cfg).unwrap();
    }
    let bad = AlipayChannel::new(AlipayConfig {
        gateway_url: "https://openapi.alipay.com/gateway.do".into(),
        app_id: APP_ID.into(),
        private_key_pem: "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----".into(),
        alipay_public_key_pem: key(1).public_pem.clone(),
        ..AlipayConfig::default()
    })
    .unwrap_err();
    assert_eq!(bad.field, "private_key_pem");
}

#[test]
fn debug_never_shows_keys() {
    let cfg = config("https://openapi.alipay.com/gateway.do".into(), Some(*b"0123456789abcdef"));
    let d = format!("{cfg:?}");
    assert!(!d.contains("PRIVATE KEY") && !d.contains(&B64.encode(b"0123456789abcdef")), "{d}");
    let ch = AlipayChannel::new(cfg).unwrap();
    let d = format!("{ch:?}");
    assert!(!d.contains("PRIVATE") && !d.contains("RsaPrivateKey") && !d.contains(" d:"), "{d}");
}

/// Our RSA2 signature equals the one `openssl dgst -sha256 -sign` makes.
#[test]
fn signature_matches_openssl() {
    let clock = common::FixedClock::at_millis(1_700_000_000_000);
    let ch = AlipayChannel::new(AlipayConfig {
        clock: Some(clock),
        ..config("https://openapi.alipay.com/gateway.do".into(), None)
    })
    .unwrap();
    let params = ch
        .signed_params("alipay.user.agreement.query", &serde_json::json!({"external_agreement_no": "中文-1"}), false)
        .unwrap();
    assert_eq!(params["timestamp"], "2023-11-15 06:13:20");
    let expected_content = format!(
        "app_id={APP_ID}&biz_content={{\"external_agreement_no\":\"中文-1\"}}&charset=utf-8&format=JSON&method=alipay.user.agreement.query&notify_url=https://cardbind.example/v1/channels/alipay/notify&sign_type=RSA2&timestamp=2023-11-15 06:13:20&version=1.0"
    );
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("key.pem");
    let data_path = dir.path().join("data.txt");
    std::fs::write(&key_path, &key(0).private_pem).unwrap();
    std::fs::write(&data_path, expected_content.as_bytes()).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&key_path)
        .arg(&data_path)
        .output()
        .expect("openssl on PATH");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(params["sign"], B64.encode(out.stdout));
}

#[test]
fn scanner_returns_exact_raw_text_of_nested_escaped_values() {
    let text = "{ \"a_response\" : {\"x\":\"}\\\"{\",\"n\":[1,{\"y\":\"]\"}],\"u\":\"\\u4e2d\\\\\"} ,\n\"sign\":\"c2ln\", \"k\\\"q\":true,\"z\":-1.5e3,\"e\":{}}";
    let m = scan::top_level_members(text).unwrap();
    let keys: Vec<&str> = m.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["a_response", "sign", "k\"q", "z", "e"]);
    assert_eq!(m[0].1, "{\"x\":\"}\\\"{\",\"n\":[1,{\"y\":\"]\"}],\"u\":\"\\u4e2d\\\\\"}");
    assert_eq!(m[1].1, "\"c2ln\"");
    assert_eq!(m[2].1, "true");
    assert_eq!(m[3].1, "-1.5e3");
    assert_eq!(m[4].1, "{}");
    for bad in ["", "{", "{\"a\":}", "{\"a\":{]}", "{\"a\":\"x}", "[1]", "{\"a\":1} x", "{\"a\" 1}", "{\"a\":1,}"] {
        assert!(scan::top_level_members(bad).is_err(), "{bad}");
    }
    assert!(scan::unique_member(&scan::top_level_members("{\"s\":1,\"s\":2}").unwrap(), "s").is_err());
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn scanner_never_panics(s in ".{0,200}") {
            let _ = scan::top_level_members(&s);
        }

        #[test]
        fn scanner_never_panics_on_json_alphabet(s in "[{}\\[\\]\":,\\\\ a1ue]{0,120}") {
            let _ = scan::top_level_members(&s);
        }

        #[test]
        fn scanner_agrees_with_serde_on_valid_objects(v in proptest::collection::btree_map("[a-z\"\\\\{}]{0,6}", "[ -~]{0,10}", 0..5)) {
            let obj: serde_json::Map<String, serde_json::Value> =
                v.into_iter().map(|(k, s)| (k, serde_json::json!({"s": s, "n": [s.len()]}))).collect();
            let text = serde_json::to_string(&obj).unwrap();
            let members = scan::top_level_members(&text).unwrap();
            prop_assert_eq!(members.len(), obj.len());
            for (k, raw) in members {
                let parsed: serde_json::Value = serde_json::from_str(raw).unwrap();
                prop_assert_eq!(&parsed, &obj[&k]);
            }
        }

        #[test]
        fn notification_parser_never_panics(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let ch = AlipayChannel::new(AlipayConfig {
                ..config("https://openapi.alipay.com/gateway.do".into(), None)
            }).unwrap();
            prop_assert!(ch.parse_notification(&note(body)).is_err());
        }

        #[test]
        fn response_parser_never_panics(body in "[{}\\[\\]\":,a-z_0-9 ]{0,200}") {
            let ch = AlipayChannel::new(config("https://openapi.alipay.com/gateway.do".into(), None)).unwrap();
            let _ = ch.parse_response(&body, "alipay.user.agreement.query");
        }
    }
}
