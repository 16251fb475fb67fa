//! A fake Alipay OpenAPI gateway (`POST /gateway.do`).
//!
//! It checks every request as Alipay does: the RSA2 signature over the
//! sorted non-empty parameters but `sign` with the application public key
//! it accepts, `app_id`, `charset=utf-8`, `sign_type=RSA2`, `version=1.0`,
//! a `timestamp` in Beijing time within 10 minutes of now, and (when it has
//! an AES key) `encrypt_type=AES` with a `biz_content` that decrypts. A
//! request that fails a check is answered with an unsigned
//! `error_response` (`isv.invalid-signature`), as Alipay does when it
//! cannot trust the caller, and recorded as refused.
//!
//! Answers are signed with the gateway key over the exact text of the
//! `<method>_response` node, which is pretty-printed (so a client that
//! re-serializes before verifying fails), AES-encrypted when configured,
//! and carry values with braces, quotes and escapes.
//!
//! Agreements: [`FakeAlipay::open_sign_page`] (the user opens our signed
//! page URL) creates a `TEMP` agreement for its `external_agreement_no`;
//! [`FakeAlipay::user_signs`] makes it `NORMAL` and returns the signed
//! `dut_user_sign` notification; [`FakeAlipay::user_unsigns`] makes it
//! `UNSIGN` and returns `dut_user_unsign`. `alipay.user.agreement.query`
//! and `.unsign` work on them by `agreement_no` or `external_agreement_no`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use rsa::RsaPublicKey;
use serde_json::{json, Value};

use super::keys::{test_key, MERCHANT, PLATFORM, STRANGER};
use super::server::{serve, Server};
use super::{lock, now_unix, rsa_sign, rsa_verify, FakeError, ReceivedRequest};

/// The application id the fake expects by default.
pub const APP_ID: &str = "2021000000000001";
/// The content type Alipay posts notifications with.
pub const NOTIFY_CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// How a [`FakeAlipay`] starts.
#[derive(Clone, Debug)]
pub struct FakeAlipayOptions {
    /// The application id it serves (default [`APP_ID`]).
    pub app_id: String,
    /// The AES-128 content-encryption key, if the application uses one.
    pub aes_key: Option<[u8; 16]>,
    /// The application public key (PEM) it verifies requests with;
    /// default: the public key of [`test_key`]`(MERCHANT)`.
    pub app_public_key_pem: Option<String>,
}

impl Default for FakeAlipayOptions {
    fn default() -> Self {
        FakeAlipayOptions {
            app_id: APP_ID.into(),
            aes_key: None,
            app_public_key_pem: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Agreement {
    status: String,
    agreement_no: String,
}

struct State {
    app_id: String,
    aes: Option<[u8; 16]>,
    app_public: Mutex<RsaPublicKey>,
    /// external_agreement_no -> agreement
    agreements: Mutex<HashMap<String, Agreement>>,
    next_no: AtomicU64,
    tamper: AtomicBool,
    wrong_key: AtomicBool,
    down: AtomicBool,
    force_code: Mutex<Option<(String, String)>>,
    requests: Mutex<Vec<ReceivedRequest>>,
}

/// A running fake Alipay gateway; stops when dropped.
pub struct FakeAlipay {
    state: Arc<State>,
    server: Server,
}

impl std::fmt::Debug for FakeAlipay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeAlipay")
            .field("gateway_url", &self.gateway_url())
            .finish_non_exhaustive()
    }
}

/// The string Alipay signs, written independently of the channel: every
/// parameter but those in `skip`, no empty values, sorted, `k=v` by `&`.
pub fn sign_content(params: &BTreeMap<String, String>, skip: &[&str]) -> String {
    params
        .iter()
        .filter(|(k, v)| !v.is_empty() && !skip.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn aes_enc(key: &[u8; 16], data: &[u8]) -> String {
    let iv = [0u8; 16];
    B64.encode(
        cbc::Encryptor::<aes::Aes128>::new(key.into(), (&iv).into())
            .encrypt_padded_vec_mut::<Pkcs7>(data),
    )
}

/// AES-128-CBC (zero IV, PKCS#7) decryption of base64 text.
pub fn aes_dec(key: &[u8; 16], b64: &str) -> Option<Vec<u8>> {
    let ct = B64.decode(b64).ok()?;
    let iv = [0u8; 16];
    cbc::Decryptor::<aes::Aes128>::new(key.into(), (&iv).into())
        .decrypt_padded_vec_mut::<Pkcs7>(&ct)
        .ok()
}

fn beijing_now() -> String {
    let t = time::OffsetDateTime::now_utc()
        .to_offset(time::UtcOffset::from_whole_seconds(8 * 3600).unwrap_or(time::UtcOffset::UTC));
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    t.format(&fmt).unwrap_or_default()
}

/// A form-encoded notification of `pairs` signed (`RSA2`) with the key in
/// `slot`, as Alipay posts it.
pub fn signed_form(pairs: &[(&str, &str)], slot: usize) -> Result<Vec<u8>, FakeError> {
    let params: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let sign = rsa_sign(
        slot,
        sign_content(&params, &["sign", "sign_type"]).as_bytes(),
    )?;
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    ser.extend_pairs(params.iter());
    ser.append_pair("sign_type", "RSA2");
    ser.append_pair("sign", &sign);
    Ok(ser.finish().into_bytes())
}

impl State {
    fn record(&self, operation: &str, refusal: Option<&str>) {
        lock(&self.requests).push(ReceivedRequest {
            operation: operation.to_owned(),
            verified: refusal.is_none(),
            refusal: refusal.map(str::to_owned),
        });
    }

    /// Checks a request's parameters as Alipay would; returns the biz content.
    fn check(&self, params: &BTreeMap<String, String>) -> Result<Value, &'static str> {
        let sign = params.get("sign").ok_or("missing sign")?;
        let app_public = lock(&self.app_public).clone();
        if !rsa_verify(
            &app_public,
            sign_content(params, &["sign"]).as_bytes(),
            sign,
        ) {
            return Err("bad signature");
        }
        for (k, v) in [
            ("app_id", self.app_id.as_str()),
            ("charset", "utf-8"),
            ("sign_type", "RSA2"),
            ("version", "1.0"),
        ] {
            if params.get(k).map(String::as_str) != Some(v) {
                return Err("bad common parameter");
            }
        }
        if params.get("method").is_none_or(|m| m.is_empty()) {
            return Err("no method");
        }
        // timestamp: yyyy-MM-dd HH:mm:ss in UTC+8, close to now.
        let ts = params.get("timestamp").ok_or("no timestamp")?;
        let fmt =
            time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
        let parsed =
            time::PrimitiveDateTime::parse(ts, &fmt).map_err(|_| "bad timestamp format")?;
        let offset = time::UtcOffset::from_whole_seconds(8 * 3600).map_err(|_| "offset")?;
        let at = parsed.assume_offset(offset);
        if (at.unix_timestamp() - now_unix()).abs() > 600 {
            return Err("timestamp not in UTC+8 now");
        }
        let biz = params.get("biz_content").ok_or("no biz_content")?;
        let biz = match (self.aes, params.get("encrypt_type").map(String::as_str)) {
            (Some(k), Some("AES")) => {
                let plain = aes_dec(&k, biz).ok_or("biz_content does not decrypt")?;
                String::from_utf8(plain).map_err(|_| "biz_content is not UTF-8")?
            }
            (None, None) => biz.clone(),
            _ => return Err("encryption mismatch"),
        };
        serde_json::from_str(&biz).map_err(|_| "biz_content is not JSON")
    }

    fn answer(&self, method: &str, fields: Value) -> Result<String, FakeError> {
        let node_name = format!("{}_response", method.replace('.', "_"));
        // The fake's own spacing: the client must verify these exact bytes.
        let mut node =
            serde_json::to_string_pretty(&fields).map_err(|e| FakeError::new(e.to_string()))?;
        if let Some(k) = self.aes {
            if fields["code"] == "10000" {
                node = Value::String(aes_enc(&k, node.as_bytes())).to_string();
            }
        }
        let slot = if self.wrong_key.load(Ordering::SeqCst) {
            STRANGER
        } else {
            PLATFORM
        };
        let sign = rsa_sign(slot, node.as_bytes())?;
        let mut body = format!("{{\"{node_name}\":{node},\n \"sign\":\"{sign}\"}}");
        if self.tamper.load(Ordering::SeqCst) {
            body = body
                .replacen("TEMP", "NORM", 1)
                .replacen("Success", "Succes5", 1);
        }
        Ok(body)
    }

    fn handle(&self, params: BTreeMap<String, String>) -> Result<(u16, String), FakeError> {
        let method = params.get("method").cloned().unwrap_or_default();
        if self.down.load(Ordering::SeqCst) {
            self.record(&method, Some("gateway down (503)"));
            return Ok((503, "service unavailable".into()));
        }
        let biz = match self.check(&params) {
            Ok(b) => b,
            Err(why) => {
                self.record(&method, Some(why));
                let body = json!({"error_response": {"code": "40002", "msg": "Invalid Arguments",
                    "sub_code": "isv.invalid-signature", "sub_msg": why}});
                return Ok((200, body.to_string()));
            }
        };
        self.record(&method, None);
        let forced = lock(&self.force_code).clone();
        if let Some((code, sub)) = forced {
            let fields =
                json!({"code": code, "msg": "forced", "sub_code": sub, "sub_msg": "forced"});
            return Ok((200, self.answer(&method, fields)?));
        }
        let mut agreements = lock(&self.agreements);
        let found = if let Some(no) = biz["agreement_no"].as_str() {
            agreements
                .iter_mut()
                .find(|(_, a)| a.agreement_no == no)
                .map(|(k, v)| (k.clone(), v))
        } else {
            let ext = biz["external_agreement_no"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            agreements.get_mut(&ext).map(|v| (ext, v))
        };
        let fields = match (method.as_str(), found) {
            ("alipay.user.agreement.query", Some((ext, a))) => {
                let mut fields = json!({
                    "code": "10000", "msg": "Success",
                    "note": "braces } { and \"quotes\" and \\ backslash \u{4e2d}",
                    "external_agreement_no": ext, "status": a.status,
                    "personal_product_code": "GENERAL_WITHHOLDING_P",
                    "sign_scene": "DEFAULT|DEFAULT",
                    "nested": {"a": [1, {"b": "}]"}], "c": null}
                });
                if a.status != "TEMP" {
                    fields["agreement_no"] = Value::String(a.agreement_no.clone());
                }
                fields
            }
            ("alipay.user.agreement.unsign", Some((_, a))) => {
                if a.status == "UNSIGN" {
                    json!({"code": "40004", "msg": "Business Failed",
                        "sub_code": "AGREEMENT_ALREADY_UNSIGNED", "sub_msg": "already"})
                } else {
                    a.status = "UNSIGN".into();
                    json!({"code": "10000", "msg": "Success"})
                }
            }
            (_, None) => json!({"code": "40004", "msg": "Business Failed",
                "sub_code": "USER_AGREEMENT_NOT_EXIST", "sub_msg": "agreement does not exist"}),
            _ => json!({"code": "40004", "sub_code": "UNKNOWN_METHOD"}),
        };
        drop(agreements);
        Ok((200, self.answer(&method, fields)?))
    }
}

impl FakeAlipay {
    /// Starts a fake with the default options.
    pub async fn start() -> Result<FakeAlipay, FakeError> {
        FakeAlipay::start_with(FakeAlipayOptions::default()).await
    }

    /// Starts a fake on `127.0.0.1:0` on the current tokio runtime.
    pub async fn start_with(options: FakeAlipayOptions) -> Result<FakeAlipay, FakeError> {
        let app_public = match &options.app_public_key_pem {
            Some(pem) => crate::keys::load_public_key(pem).map_err(FakeError::new)?,
            None => test_key(MERCHANT)?.public.clone(),
        };
        // Generate (or fetch) the gateway keys before serving.
        test_key(PLATFORM)?;
        let state = Arc::new(State {
            app_id: options.app_id,
            aes: options.aes_key,
            app_public: Mutex::new(app_public),
            agreements: Mutex::new(HashMap::new()),
            next_no: AtomicU64::new(1),
            tamper: AtomicBool::new(false),
            wrong_key: AtomicBool::new(false),
            down: AtomicBool::new(false),
            force_code: Mutex::new(None),
            requests: Mutex::new(Vec::new()),
        });
        let s = state.clone();
        let server = serve(move |req: poem::Request| {
            let state = s.clone();
            async move {
                if req.method() != poem::http::Method::POST || req.uri().path() != "/gateway.do" {
                    return poem::Response::builder()
                        .status(poem::http::StatusCode::NOT_FOUND)
                        .body("not found");
                }
                let body = match req.into_body().into_bytes().await {
                    Ok(b) => b,
                    Err(_) => {
                        return poem::Response::builder()
                            .status(poem::http::StatusCode::BAD_REQUEST)
                            .body("unreadable body")
                    }
                };
                let params: BTreeMap<String, String> =
                    url::form_urlencoded::parse(&body).into_owned().collect();
                match state.handle(params) {
                    Ok((status, text)) => poem::Response::builder()
                        .status(
                            poem::http::StatusCode::from_u16(status)
                                .unwrap_or(poem::http::StatusCode::OK),
                        )
                        .content_type("text/html;charset=utf-8")
                        .body(text),
                    Err(e) => poem::Response::builder()
                        .status(poem::http::StatusCode::INTERNAL_SERVER_ERROR)
                        .body(e.to_string()),
                }
            }
        })?;
        Ok(FakeAlipay { state, server })
    }

    /// The full gateway URL (`http://127.0.0.1:PORT/gateway.do`).
    pub fn gateway_url(&self) -> String {
        format!("{}/gateway.do", self.server.base_url)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        &self.server.base_url
    }

    pub fn app_id(&self) -> &str {
        &self.state.app_id
    }

    /// The gateway's public key (SPKI PEM): configure it as the Alipay
    /// public key.
    pub fn public_key_pem(&self) -> Result<String, FakeError> {
        Ok(test_key(PLATFORM)?.public_pem.clone())
    }

    /// Accepts requests signed with the private half of `pem` (SPKI or
    /// PKCS#1 PEM, or a PEM file path) from now on.
    pub fn accept_app_public_key(&self, pem: &str) -> Result<(), FakeError> {
        let key = crate::keys::load_public_key(pem).map_err(FakeError::new)?;
        *lock(&self.state.app_public) = key;
        Ok(())
    }

    // ---- faults ---------------------------------------------------------

    /// Alters signed answers after signing (their signature no longer fits).
    pub fn tamper_answers(&self, on: bool) {
        self.state.tamper.store(on, Ordering::SeqCst);
    }

    /// Signs answers with a stranger's key.
    pub fn sign_with_wrong_key(&self, on: bool) {
        self.state.wrong_key.store(on, Ordering::SeqCst);
    }

    /// Answers every request HTTP 503 (the gateway is down).
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// Answers every verified request with this `code` and `sub_code`.
    pub fn force_code(&self, code: Option<(&str, &str)>) {
        *lock(&self.state.force_code) = code.map(|(c, s)| (c.to_owned(), s.to_owned()));
    }

    // ---- the user's side --------------------------------------------------

    /// The user opens our signing URL: the gateway verifies it like any
    /// request (signature, app id, timestamp, method, product and access
    /// channel) and opens a `TEMP` agreement. Returns its
    /// `external_agreement_no`.
    pub fn open_sign_page(&self, url: &str) -> Result<String, FakeError> {
        let url = url::Url::parse(url).map_err(|e| FakeError::new(format!("sign URL: {e}")))?;
        let params: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
        let method = params.get("method").cloned().unwrap_or_default();
        let refuse = |why: &str| {
            self.state.record(&method, Some(why));
            Err(FakeError::new(format!("sign page refused: {why}")))
        };
        let biz = match self.state.check(&params) {
            Ok(b) => b,
            Err(why) => return refuse(why),
        };
        if method != "alipay.user.agreement.page.sign" {
            return refuse("wrong method");
        }
        if biz["personal_product_code"] != "GENERAL_WITHHOLDING_P"
            || biz["access_params"]["channel"] != "ALIPAYAPP"
        {
            return refuse("wrong product");
        }
        let Some(ext) = biz["external_agreement_no"].as_str() else {
            return refuse("no external_agreement_no");
        };
        self.state.record(&method, None);
        lock(&self.state.agreements).insert(
            ext.to_owned(),
            Agreement {
                status: "TEMP".into(),
                agreement_no: String::new(),
            },
        );
        Ok(ext.to_owned())
    }

    /// The user confirms in the Alipay app: the agreement `ext` is `NORMAL`
    /// (created if the page was never opened) and the gateway sends this
    /// signed `dut_user_sign` notification (form body).
    pub fn user_signs(&self, ext: &str, notify_id: &str) -> Result<Vec<u8>, FakeError> {
        let no = {
            let mut agreements = lock(&self.state.agreements);
            let n = self.state.next_no.fetch_add(1, Ordering::SeqCst);
            let a = agreements.entry(ext.to_owned()).or_insert(Agreement {
                status: "TEMP".into(),
                agreement_no: String::new(),
            });
            if a.agreement_no.is_empty() {
                a.agreement_no = format!("20250101{n:012}");
            }
            a.status = "NORMAL".into();
            a.agreement_no.clone()
        };
        let now = beijing_now();
        self.notification(&[
            ("notify_type", "dut_user_sign"),
            ("notify_id", notify_id),
            ("notify_time", &now),
            ("app_id", &self.state.app_id),
            ("status", "NORMAL"),
            ("agreement_no", &no),
            ("external_agreement_no", ext),
            ("personal_product_code", "GENERAL_WITHHOLDING_P"),
            ("sign_scene", "DEFAULT|DEFAULT"),
            ("alipay_user_id", "2088000000000001"),
            ("invalid_time", "2115-02-01 00:00:00"),
            ("sign_time", &now),
        ])
    }

    /// The user ends the agreement `ext` in the Alipay app: it is `UNSIGN`
    /// and the gateway sends this signed `dut_user_unsign` notification.
    pub fn user_unsigns(&self, ext: &str, notify_id: &str) -> Result<Vec<u8>, FakeError> {
        let no = {
            let mut agreements = lock(&self.state.agreements);
            let a = agreements
                .get_mut(ext)
                .ok_or_else(|| FakeError::new("no such agreement"))?;
            a.status = "UNSIGN".into();
            a.agreement_no.clone()
        };
        let now = beijing_now();
        self.notification(&[
            ("notify_type", "dut_user_unsign"),
            ("notify_id", notify_id),
            ("notify_time", &now),
            ("app_id", &self.state.app_id),
            ("status", "UNSIGN"),
            ("agreement_no", &no),
            ("external_agreement_no", ext),
            ("personal_product_code", "GENERAL_WITHHOLDING_P"),
            ("unsign_time", &now),
        ])
    }

    /// A notification of `pairs` signed with the gateway key.
    pub fn notification(&self, pairs: &[(&str, &str)]) -> Result<Vec<u8>, FakeError> {
        signed_form(pairs, PLATFORM)
    }

    /// A notification of `pairs` signed with a stranger's key (a forgery).
    pub fn forged_notification(&self, pairs: &[(&str, &str)]) -> Result<Vec<u8>, FakeError> {
        signed_form(pairs, STRANGER)
    }

    // ---- inspection ---------------------------------------------------------

    /// Every request received, in order (including sign pages opened).
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        lock(&self.state.requests).clone()
    }

    /// How many requests reached the gateway.
    pub fn request_count(&self) -> usize {
        lock(&self.state.requests).len()
    }

    /// How many requests were refused (bad signature or parameters).
    pub fn rejected_count(&self) -> usize {
        lock(&self.state.requests)
            .iter()
            .filter(|r| !r.verified)
            .count()
    }

    /// The methods of the verified requests, in order.
    pub fn verified_methods(&self) -> Vec<String> {
        lock(&self.state.requests)
            .iter()
            .filter(|r| r.verified)
            .map(|r| r.operation.clone())
            .collect()
    }

    /// The agreement's `(status, agreement_no)` by external number.
    pub fn agreement(&self, ext: &str) -> Option<(String, String)> {
        lock(&self.state.agreements)
            .get(ext)
            .map(|a| (a.status.clone(), a.agreement_no.clone()))
    }
}
