//! A fake Alipay OpenAPI gateway (`POST /gateway.do`).
//!
//! It checks every request as Alipay does: `app_id` (the application it
//! serves), the RSA2 signature over the sorted non-empty parameters but
//! `sign` with the application public key it holds for that application,
//! `charset=utf-8`, `sign_type=RSA2`, `version=1.0`, a `timestamp` in
//! Beijing time within 10 minutes of now, and (when it has an AES key)
//! `encrypt_type=AES` with a `biz_content` that decrypts. A request that
//! fails a check gets the `error_response` of Alipay's public error code
//! table (`40001` missing parameter, `40002` invalid parameter, with the
//! sub code of the check: `isv.invalid-app-id`, `isv.invalid-signature`,
//! `isv.invalid-timestamp`, …) and is recorded as refused. The answer is
//! signed when the fake knows the application (the Alipay key pair is per
//! application) and unsigned for an unknown `app_id`. A wrong application
//! key, app id or AES key in the channel's configuration therefore gets the
//! very answer the real gateway gives, with no switch to set.
//!
//! The merchant account's state, which no configuration of ours can
//! change, is a switch: [`FakeAlipay::set_product_signed`] `(false)` makes
//! every verified request `40006 isv.insufficient-isv-permissions` (the
//! withholding product is not signed or not bound to the application).
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
/// The signing scene the fake merchant agreed with Alipay: the signing page
/// refuses any other, Alipay's default `DEFAULT|DEFAULT` among them (which
/// Alipay refuses with an `external_agreement_no`).
pub const SIGN_SCENE: &str = "INDUSTRY|DIGITAL_MEDIA";
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
    /// Answers write `/` as `\/` in JSON, signed over `/` (as Alipay's
    /// gateway may: its SDK verifies both forms).
    escape_slashes: AtomicBool,
    wrong_key: AtomicBool,
    down: AtomicBool,
    force_code: Mutex<Option<(String, String)>>,
    product_unsigned: AtomicBool,
    requests: Mutex<Vec<ReceivedRequest>>,
}

/// Why the gateway refused a request: Alipay's public `code`, `sub_code`,
/// and a note for the request record.
#[derive(Clone, Copy, Debug)]
struct Refusal {
    code: &'static str,
    sub_code: &'static str,
    why: &'static str,
}

const fn missing(sub_code: &'static str, why: &'static str) -> Refusal {
    Refusal {
        code: "40001",
        sub_code,
        why,
    }
}

const fn invalid(sub_code: &'static str, why: &'static str) -> Refusal {
    Refusal {
        code: "40002",
        sub_code,
        why,
    }
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
/// `slot`, as Alipay posts it (UTF-8).
pub fn signed_form(pairs: &[(&str, &str)], slot: usize) -> Result<Vec<u8>, FakeError> {
    signed_form_in(pairs, slot, encoding_rs::UTF_8)
}

/// [`signed_form`] in another charset: Alipay signs a notification over
/// the sorted `k=v` of every parameter but `sign` and `sign_type`, empty
/// values included, encoded in the charset, and percent-encodes the body's
/// bytes in it too.
pub fn signed_form_in(
    pairs: &[(&str, &str)],
    slot: usize,
    charset: &'static encoding_rs::Encoding,
) -> Result<Vec<u8>, FakeError> {
    let params: BTreeMap<&str, &str> = pairs.iter().copied().collect();
    let content = params
        .iter()
        .filter(|(k, _)| !matches!(**k, "sign" | "sign_type"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let sign = rsa_sign(slot, &charset.encode(&content).0)?;
    let mut body = String::new();
    for (k, v) in params
        .into_iter()
        .chain([("sign_type", "RSA2"), ("sign", sign.as_str())])
    {
        if !body.is_empty() {
            body.push('&');
        }
        body.extend(url::form_urlencoded::byte_serialize(&charset.encode(k).0));
        body.push('=');
        body.extend(url::form_urlencoded::byte_serialize(&charset.encode(v).0));
    }
    Ok(body.into_bytes())
}

impl State {
    fn record(&self, operation: &str, refusal: Option<&str>) {
        lock(&self.requests).push(ReceivedRequest {
            operation: operation.to_owned(),
            verified: refusal.is_none(),
            refusal: refusal.map(str::to_owned),
        });
    }

    /// Checks a request's parameters as Alipay would; returns the biz
    /// content, or the refusal of the public error code table.
    fn check(&self, params: &BTreeMap<String, String>) -> Result<Value, Refusal> {
        let sign = params
            .get("sign")
            .filter(|s| !s.is_empty())
            .ok_or(missing("isv.missing-signature", "missing sign"))?;
        match params.get("app_id").map(String::as_str) {
            None | Some("") => return Err(missing("isv.missing-app-id", "missing app_id")),
            Some(a) if a != self.app_id => {
                return Err(invalid("isv.invalid-app-id", "unknown app_id"))
            }
            Some(_) => {}
        }
        match params.get("sign_type").map(String::as_str) {
            None | Some("") => {
                return Err(missing("isv.missing-signature-type", "missing sign_type"))
            }
            Some("RSA2") => {}
            Some(_) => {
                return Err(invalid(
                    "isv.invalid-signature-type",
                    "sign_type is not RSA2",
                ))
            }
        }
        let app_public = lock(&self.app_public).clone();
        if !rsa_verify(
            &app_public,
            sign_content(params, &["sign"]).as_bytes(),
            sign,
        ) {
            return Err(invalid("isv.invalid-signature", "bad signature"));
        }
        if params.get("charset").map(String::as_str) != Some("utf-8") {
            return Err(invalid("isv.invalid-charset", "charset is not utf-8"));
        }
        match params.get("version").map(String::as_str) {
            None | Some("") => return Err(missing("isv.missing-version", "missing version")),
            Some("1.0") => {}
            Some(_) => return Err(invalid("isv.invalid-parameter", "version is not 1.0")),
        }
        if params.get("method").is_none_or(|m| m.is_empty()) {
            return Err(missing("isv.missing-method", "no method"));
        }
        // timestamp: yyyy-MM-dd HH:mm:ss in UTC+8, close to now.
        let ts = params
            .get("timestamp")
            .ok_or(missing("isv.missing-timestamp", "no timestamp"))?;
        let bad_ts = invalid("isv.invalid-timestamp", "timestamp not in UTC+8 now");
        let fmt =
            time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
        let parsed = time::PrimitiveDateTime::parse(ts, &fmt).map_err(|_| bad_ts)?;
        let offset = time::UtcOffset::from_whole_seconds(8 * 3600).map_err(|_| bad_ts)?;
        let at = parsed.assume_offset(offset);
        if (at.unix_timestamp() - now_unix()).abs() > 600 {
            return Err(bad_ts);
        }
        let biz = params
            .get("biz_content")
            .ok_or(missing("isv.missing-parameter", "no biz_content"))?;
        let biz = match (self.aes, params.get("encrypt_type").map(String::as_str)) {
            (Some(k), Some("AES")) => {
                let undecryptable = invalid(
                    "isv.decryption-error-unknown",
                    "biz_content does not decrypt",
                );
                let plain = aes_dec(&k, biz).ok_or(undecryptable)?;
                String::from_utf8(plain).map_err(|_| undecryptable)?
            }
            (None, None) => biz.clone(),
            (Some(_), None) => {
                return Err(missing(
                    "isv.decryption-error-missing-encrypt-type",
                    "the application encrypts but the request is plain",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "isv.decryption-error-not-valid-encrypt-key",
                    "the application has no AES key",
                ))
            }
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "isv.decryption-error-not-valid-encrypt-type",
                    "encrypt_type is not AES",
                ))
            }
        };
        serde_json::from_str(&biz)
            .map_err(|_| invalid("isv.invalid-parameter", "biz_content is not JSON"))
    }

    /// The gateway's answer to a refused request: an `error_response`,
    /// signed when the application is known.
    fn refusal_answer(&self, refusal: Refusal) -> Result<String, FakeError> {
        let node = serde_json::to_string_pretty(&json!({
            "code": refusal.code,
            "msg": if refusal.code == "40001" { "Missing Required Arguments" } else { "Invalid Arguments" },
            "sub_code": refusal.sub_code,
            "sub_msg": refusal.why,
        }))
        .map_err(|e| FakeError::new(e.to_string()))?;
        if refusal.sub_code == "isv.invalid-app-id" || refusal.sub_code == "isv.missing-app-id" {
            return Ok(format!("{{\"error_response\":{node}}}"));
        }
        let sign = rsa_sign(PLATFORM, node.as_bytes())?;
        Ok(format!(
            "{{\"error_response\":{node},\n \"sign\":\"{sign}\"}}"
        ))
    }

    fn answer(&self, method: &str, mut fields: Value) -> Result<String, FakeError> {
        let node_name = format!("{}_response", method.replace('.', "_"));
        let escape = self.escape_slashes.load(Ordering::SeqCst);
        if escape && fields["code"] == "10000" {
            fields["memo"] = Value::String("see https://example.com/agreements".into());
        }
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
        if escape {
            node = node.replace('/', "\\/");
        }
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
            Err(refusal) => {
                self.record(&method, Some(refusal.why));
                return Ok((200, self.refusal_answer(refusal)?));
            }
        };
        if self.product_unsigned.load(Ordering::SeqCst) {
            // Verified, then refused for the account's permissions.
            lock(&self.requests).push(ReceivedRequest {
                operation: method.clone(),
                verified: true,
                refusal: Some("product not signed (40006)".into()),
            });
            let fields = json!({"code": "40006", "msg": "Insufficient Permissions",
                "sub_code": "isv.insufficient-isv-permissions",
                "sub_msg": "the application has no permission for this product"});
            return Ok((200, self.answer(&method, fields)?));
        }
        if let Some(ext) = biz["external_agreement_no"].as_str() {
            if !crate::refs::is_valid(ext) {
                // Alipay takes at most 32 letters and digits.
                self.record(&method, Some("isv.invalid-parameter"));
                let fields = json!({"code": "40002", "msg": "Invalid Arguments",
                    "sub_code": "isv.invalid-parameter",
                    "sub_msg": "external_agreement_no: at most 32 letters and digits"});
                return Ok((200, self.answer(&method, fields)?));
            }
        }
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
                    "sign_scene": SIGN_SCENE,
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
            escape_slashes: AtomicBool::new(false),
            wrong_key: AtomicBool::new(false),
            down: AtomicBool::new(false),
            force_code: Mutex::new(None),
            product_unsigned: AtomicBool::new(false),
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

    /// Writes `/` as `\/` in answers, signed over the unescaped text.
    pub fn escape_slashes(&self, on: bool) {
        self.state.escape_slashes.store(on, Ordering::SeqCst);
    }

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

    /// Whether the merchant has the withholding product signed and bound to
    /// the application (default true). Without it, every verified request
    /// is answered `40006 isv.insufficient-isv-permissions` (signed) and
    /// the signing page refuses.
    pub fn set_product_signed(&self, signed: bool) {
        self.state.product_unsigned.store(!signed, Ordering::SeqCst);
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
            Err(refusal) => return refuse(refusal.sub_code),
        };
        if self.state.product_unsigned.load(Ordering::SeqCst) {
            return refuse("isv.insufficient-isv-permissions");
        }
        if method != "alipay.user.agreement.page.sign" {
            return refuse("wrong method");
        }
        if biz["personal_product_code"] != "GENERAL_WITHHOLDING_P"
            || biz["access_params"]["channel"] != "ALIPAYAPP"
        {
            return refuse("wrong product");
        }
        if biz["sign_scene"] != SIGN_SCENE {
            return refuse("sign_scene is not the scene agreed for the product");
        }
        let Some(ext) = biz["external_agreement_no"].as_str() else {
            return refuse("no external_agreement_no");
        };
        if !crate::refs::is_valid(ext) {
            return refuse("external_agreement_no is not 1 to 32 letters and digits");
        }
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
            ("sign_scene", SIGN_SCENE),
            ("alipay_user_id", "2088000000000001"),
            ("invalid_time", "2115-02-01 00:00:00"),
            ("sign_time", &now),
            ("zm_open_id", ""),
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

    /// Another product's message to the app's gateway address: a trade
    /// status change (`trade_status_sync`), genuine and fresh, naming no
    /// agreement. `notify_type` replaces its type (`None`: no type at all).
    pub fn other_product_message(
        &self,
        notify_type: Option<&str>,
        notify_id: &str,
    ) -> Result<Vec<u8>, FakeError> {
        let now = beijing_now();
        let mut pairs = vec![
            ("notify_id", notify_id),
            ("notify_time", now.as_str()),
            ("app_id", self.state.app_id.as_str()),
            ("trade_no", "2025010122001400000000000001"),
            ("out_trade_no", "order-1"),
            ("trade_status", "TRADE_SUCCESS"),
            ("total_amount", "9.90"),
        ];
        if let Some(t) = notify_type {
            pairs.push(("notify_type", t));
        }
        self.notification(&pairs)
    }

    /// A notification of `pairs` signed with the gateway key.
    pub fn notification(&self, pairs: &[(&str, &str)]) -> Result<Vec<u8>, FakeError> {
        signed_form(pairs, PLATFORM)
    }

    /// A notification of `pairs` signed with the gateway key, its body and
    /// signature in `charset` (Alipay's GBK apps).
    pub fn notification_in(
        &self,
        pairs: &[(&str, &str)],
        charset: &'static encoding_rs::Encoding,
    ) -> Result<Vec<u8>, FakeError> {
        signed_form_in(pairs, PLATFORM, charset)
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
