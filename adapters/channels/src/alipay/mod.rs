//! Alipay OpenAPI (`gateway.do`) with the personal agreement (auto-debit
//! signing) APIs.
//!
//! * **Requests**: the common parameters (`app_id`, `method`,
//!   `charset=utf-8`, `sign_type=RSA2`, `timestamp` in UTC+8 whatever the
//!   server's zone, `version=1.0`, optional `notify_url`/`return_url`,
//!   `biz_content` JSON) are signed over the sorted `k=v&…` of every
//!   non-empty parameter but `sign`, raw values, UTF-8, SHA256withRSA
//!   (PKCS#1 v1.5), standard base64, and POSTed form-encoded.
//! * **Content encryption** (optional, `aes_key`): `biz_content` is
//!   AES-128-CBC encrypted (zero IV, PKCS#7, base64) *before* signing, with
//!   `encrypt_type=AES`; encrypted answers are decrypted after their
//!   signature is verified.
//! * **Responses**: the signature is verified over the exact raw text of the
//!   `<method with dots as underscores>_response` value (or
//!   `error_response`) as received, found by [`scan::top_level_members`],
//!   never re-serialized. `10000` is success, `20000` is "unknown, ask
//!   again" (`Unavailable`, transient); `20001`, `40001`, `40002` and
//!   `40006` name our own set-up (bad signature or key, unknown app id,
//!   missing permission: see [`is_configuration_code`]) and are
//!   `Misconfigured` with the `sub_code`; `40004` is a business refusal
//!   (`Rejected` with the `sub_code`) but for the sub codes about the
//!   merchant's own contract (`MERCHANT_AGREEMENT_IS_NOT_EXIST`,
//!   `Misconfigured`) and Alipay's own system error (`SYSTEM_ERROR`,
//!   `Unavailable`, retried), others are `Rejected` with `sub_code` or
//!   `code`.
//! * **Answers we cannot trust**: a signature that does not verify with the
//!   configured Alipay public key is `Misconfigured
//!   { code: "response_signature_invalid" }` (the usual cause is the wrong
//!   key installed, e.g. the application's own public key instead of
//!   Alipay's; nothing in it is acted upon either way). An unsigned answer
//!   (Alipay sends those when it cannot even check our request) is acted
//!   upon only to report a configuration code as `Misconfigured`, which
//!   changes no binding; any other unsigned `error_response` is a
//!   `Protocol` error and an unsigned success `InvalidSignature`.
//! * **Agreement flow**: `start_binding` builds the signed
//!   `alipay.user.agreement.page.sign` URL for the user (gateway URL + all
//!   signed parameters as the query string) with `external_agreement_no` =
//!   our binding id and the bind's attempt in the form Alipay takes (at
//!   most 32 letters and digits, see [`crate::refs`]), and answers
//!   `Redirect { channel_ref: <that external_agreement_no> }`; a binding
//!   id without such a form is refused (`unsupported_binding_id`). The
//!   user's signature arrives as a `dut_user_sign` notification (or is
//!   seen by `query`), after which the channel reference is Alipay's
//!   `agreement_no`. `query` and `unbind` use `agreement_no` when the
//!   channel reference is one, else `external_agreement_no`: the one the
//!   start answered, or the attempt's. (Earlier builds sent the binding id
//!   without its dashes for every attempt, and before that the dashed id,
//!   which Alipay does not take: such a reference, or a notification
//!   naming one, is still read as the binding's.) `confirm_otp` is not an
//!   Alipay concept: `Rejected { code: "unsupported" }`.
//! * **Notifications** (form-encoded, decoded in the body's own `charset`:
//!   UTF-8 when absent, or GBK/GB18030): `sign` and `sign_type` dropped,
//!   the rest sorted, empty values *kept* (Alipay signs a notification over
//!   every other parameter, unlike a request), encoded back in that
//!   charset and verified with the Alipay public key; `app_id` must be
//!   ours; `notify_id` is the event id; the answer is `success`. The
//!   signed `notify_time` must be at most [`NOTIFICATION_MAX_AGE_SECONDS`]
//!   old (and not more than [`NOTIFICATION_MAX_AHEAD_SECONDS`] ahead of
//!   our clock): Alipay retries a notification for about 25 hours, and the
//!   service remembers notification ids for 30 days, so a captured body
//!   replayed later is refused instead of acting again once forgotten.

pub mod scan;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cardbind_domain::{BindingId, Timestamp};
use cardbind_ports::channel::{
    BindingRef, ChannelBindRequest, ChannelEvent, ChannelEventKind, ChannelStart, ConfirmOutcome,
    Notification, NotificationAck, PaymentChannel, RemoteState,
};
use cardbind_ports::clock::{Clock, SystemClock};
use cardbind_ports::ChannelError;
use serde_json::{Map, Value};

use crate::config::ConfigError;
use crate::crypto::{aes128_cbc_decrypt_b64, aes128_cbc_encrypt_b64, RsaSigner, RsaVerifier, B64};
use crate::http::{build_client, transport_error};
use crate::keys::{load_private_key, load_public_key};
use crate::protocol;

pub const METHOD_PAGE_SIGN: &str = "alipay.user.agreement.page.sign";
pub const METHOD_QUERY: &str = "alipay.user.agreement.query";
pub const METHOD_UNSIGN: &str = "alipay.user.agreement.unsign";

/// Largest notification body we read (bytes).
const MAX_NOTIFICATION: usize = 64 * 1024;

/// Oldest `notify_time` accepted: well past Alipay's last retry (about 25
/// hours after the first post), well within the 30 days the service
/// remembers a notification id.
pub const NOTIFICATION_MAX_AGE_SECONDS: i64 = 3 * 24 * 3600;

/// How far ahead of our clock a `notify_time` may be (clock skew).
pub const NOTIFICATION_MAX_AHEAD_SECONDS: i64 = 15 * 60;

/// Settings of [`AlipayChannel`]. Key settings take PEM text, a PEM file
/// path or bare base64 DER (see [`crate::keys`]).
#[derive(Clone)]
pub struct AlipayConfig {
    /// The name it registers under (default `alipay`).
    pub name: String,
    /// Full gateway URL, e.g. `https://openapi.alipay.com/gateway.do`.
    pub gateway_url: String,
    pub app_id: String,
    /// Our application private key (PKCS#8 or PKCS#1).
    pub private_key_pem: String,
    /// Alipay's public key (SPKI or PKCS#1).
    pub alipay_public_key_pem: String,
    /// Base64 of the 16-byte AES content-encryption key, if enabled.
    pub aes_key: Option<String>,
    /// Where Alipay sends the agreement notifications.
    pub notify_url: Option<String>,
    /// Where the user's browser returns after signing.
    pub return_url: Option<String>,
    /// Default `GENERAL_WITHHOLDING_P`.
    pub personal_product_code: String,
    /// Default `GENERAL_WITHHOLDING`.
    pub product_code: String,
    /// The signing scene agreed with Alipay for the product (`INDUSTRY|…`),
    /// sent when signing, querying and unsigning. No default: Alipay
    /// refuses its default scene `DEFAULT|DEFAULT` with an
    /// `external_agreement_no`, which names every agreement this channel
    /// makes, so [`AlipayChannel::new`] refuses an empty or default scene.
    pub sign_scene: String,
    /// `access_params.channel` of the signing page (default `ALIPAYAPP`).
    pub access_channel: String,
    /// HTTP timeout of one request (default 10 s).
    pub request_timeout: Duration,
    /// The clock for `timestamp` (default: the system clock).
    pub clock: Option<Arc<dyn Clock>>,
}

impl Default for AlipayConfig {
    fn default() -> Self {
        AlipayConfig {
            name: crate::names::ALIPAY.into(),
            gateway_url: String::new(),
            app_id: String::new(),
            private_key_pem: String::new(),
            alipay_public_key_pem: String::new(),
            aes_key: None,
            notify_url: None,
            return_url: None,
            personal_product_code: "GENERAL_WITHHOLDING_P".into(),
            product_code: "GENERAL_WITHHOLDING".into(),
            sign_scene: String::new(),
            access_channel: "ALIPAYAPP".into(),
            request_timeout: Duration::from_secs(10),
            clock: None,
        }
    }
}

impl std::fmt::Debug for AlipayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlipayConfig")
            .field("name", &self.name)
            .field("gateway_url", &self.gateway_url)
            .field("app_id", &self.app_id)
            .field("private_key_pem", &"<redacted>")
            .field("alipay_public_key_pem", &"<set>")
            .field("aes_key", &self.aes_key.as_ref().map(|_| "<redacted>"))
            .field("notify_url", &self.notify_url)
            .field("return_url", &self.return_url)
            .field("personal_product_code", &self.personal_product_code)
            .field("product_code", &self.product_code)
            .field("sign_scene", &self.sign_scene)
            .field("access_channel", &self.access_channel)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// The Alipay channel. See the module docs.
pub struct AlipayChannel {
    name: String,
    gateway_url: url::Url,
    app_id: String,
    signer: RsaSigner,
    verifier: RsaVerifier,
    aes_key: Option<[u8; 16]>,
    notify_url: Option<String>,
    return_url: Option<String>,
    personal_product_code: String,
    product_code: String,
    sign_scene: String,
    access_channel: String,
    client: reqwest::Client,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for AlipayChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlipayChannel")
            .field("name", &self.name)
            .field("gateway_url", &self.gateway_url.as_str())
            .field("app_id", &self.app_id)
            .field("aes", &self.aes_key.is_some())
            .finish_non_exhaustive()
    }
}

/// The string Alipay signs: every parameter but those in `skip`, empty
/// values dropped, sorted by key, `k=v` joined by `&`, raw values.
pub fn sign_content(params: &BTreeMap<String, String>, skip: &[&str]) -> String {
    joined(params, skip, false)
}

/// The string Alipay signs a notification over: every parameter but `sign`
/// and `sign_type`, sorted by key, `k=v` joined by `&`, raw values, empty
/// ones included (its SDKs' `rsaCheckV1`; requests drop them, see
/// [`sign_content`]).
pub fn notification_content(params: &BTreeMap<String, String>) -> String {
    joined(params, &["sign", "sign_type"], true)
}

fn joined(params: &BTreeMap<String, String>, skip: &[&str], keep_empty: bool) -> String {
    let mut out = String::new();
    for (k, v) in params {
        if (v.is_empty() && !keep_empty) || skip.contains(&k.as_str()) {
            continue;
        }
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// The parameters of a form-encoded notification, decoded in the charset
/// its own `charset` parameter names (UTF-8 when there is none; GBK and
/// GB2312 read as GBK, GB18030 as GB18030), with that charset.
/// `None` for a repeated key, a charset it does not know, or bytes that are
/// not text in it: nothing is guessed or replaced, so what is verified is
/// what was sent.
fn notification_params(
    body: &[u8],
) -> Option<(BTreeMap<String, String>, &'static encoding_rs::Encoding)> {
    let decode = |raw: &[u8]| -> Vec<u8> {
        let spaced: Vec<u8> = raw
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        percent_encoding::percent_decode(&spaced).collect()
    };
    let mut raw = Vec::new();
    for pair in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        raw.push((decode(k), decode(v)));
    }
    let charset = match raw.iter().find(|(k, _)| k.as_slice() == b"charset") {
        None => encoding_rs::UTF_8,
        Some((_, v)) => match v.to_ascii_lowercase().as_slice() {
            b"utf-8" | b"utf8" => encoding_rs::UTF_8,
            // Read and written back as the charset named: GBK's encoder
            // gives back its own bytes (the euro sign is 0x80 in GBK, two
            // bytes in GB18030), so what is verified is what was signed.
            b"gbk" | b"gb2312" => encoding_rs::GBK,
            b"gb18030" => encoding_rs::GB18030,
            _ => return None,
        },
    };
    let mut params = BTreeMap::new();
    for (k, v) in raw {
        let k = charset.decode_without_bom_handling_and_without_replacement(&k)?;
        let v = charset.decode_without_bom_handling_and_without_replacement(&v)?;
        if params.insert(k.into_owned(), v.into_owned()).is_some() {
            return None;
        }
    }
    Some((params, charset))
}

/// `yyyy-MM-dd HH:mm:ss` in UTC+8 (Beijing time), whatever the server's zone.
pub fn alipay_timestamp(at: Timestamp) -> String {
    let secs = at.unix_seconds();
    let beijing = secs.saturating_add(8 * 3600);
    let days = beijing.div_euclid(86_400);
    let rem = beijing.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Reads a time as [`alipay_timestamp`] writes it (`yyyy-MM-dd HH:mm:ss`,
/// Beijing time); `None` when it is not one.
pub fn parse_alipay_timestamp(text: &str) -> Option<Timestamp> {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let local = time::PrimitiveDateTime::parse(text, &format).ok()?;
    let beijing = time::UtcOffset::from_whole_seconds(8 * 3600).ok()?;
    let secs = local.assume_offset(beijing).unix_timestamp();
    Some(Timestamp::from_unix_millis(secs.checked_mul(1000)?))
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn str_field<'a>(node: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    node.get(key).and_then(Value::as_str)
}

/// Alipay public (gateway) codes that are about our own set-up, never about
/// the user or the card (Alipay's public error code table):
///
/// * `20001` insufficient token permissions (`aop.invalid-app-auth-token`,
///   `aop.no-product-reg-by-partner`, …): an authorisation token or product
///   registration of ours;
/// * `40001` missing parameter (`isv.missing-signature`,
///   `isv.missing-app-id`, `isv.missing-signature-key`, …): our request
///   builder or the key upload on the Alipay console;
/// * `40002` invalid parameter (`isv.invalid-signature`,
///   `isv.invalid-app-id`, `isv.invalid-signature-type`,
///   `isv.invalid-timestamp`, `isv.invalid-encrypt`,
///   `isv.missing-signature-config`, `isv.decryption-error-*`, certificate
///   serial errors, …): the common parameters Alipay checks before any
///   business logic, which hold nothing of the user's;
/// * `40006` insufficient permissions (`isv.insufficient-isv-permissions`,
///   `isv.insufficient-user-permissions`): the product is not signed or not
///   bound to this app.
///
/// `20000` (service unavailable) is transient; `40004` (business failed)
/// and the others stay refusals with their sub code, but a `40004` whose
/// sub code is about the merchant's contract (see
/// [`is_merchant_setup_sub_code`]) or is Alipay's own system error (see
/// [`is_retry_sub_code`]).
pub fn is_configuration_code(code: &str) -> bool {
    matches!(code, "20001" | "40001" | "40002" | "40006")
}

/// Whether a refusal's code says the user's *agreement* does not exist
/// (`USER_AGREEMENT_NOT_EXIST`, or `AGREEMENT_NOT_EXIST`, either also
/// with the `ACQ.` prefix of Alipay's trade APIs): only then is it
/// taken for "no such agreement", which an unbind counts as ended. Any
/// other code stays a refusal, even one that names an agreement:
/// `MERCHANT_AGREEMENT_IS_NOT_EXIST` is about the merchant's contract (see
/// [`is_merchant_setup_sub_code`]), and ending a card on it could leave a
/// live agreement behind.
fn is_not_found_code(code: &str) -> bool {
    let code = code
        .strip_prefix("ACQ.")
        .or_else(|| code.strip_prefix("acq."))
        .unwrap_or(code);
    ["USER_AGREEMENT_NOT_EXIST", "AGREEMENT_NOT_EXIST"]
        .iter()
        .any(|c| code.eq_ignore_ascii_case(c))
}

/// Business sub codes (under `40004`) that describe the merchant's own
/// set-up, not the user or the agreement: `MERCHANT_AGREEMENT_IS_NOT_EXIST`
/// (the merchant has not signed the withholding product, or the product
/// code configured is not the one signed). Reported as misconfiguration,
/// which changes no binding.
fn is_merchant_setup_sub_code(code: &str) -> bool {
    code.eq_ignore_ascii_case("MERCHANT_AGREEMENT_IS_NOT_EXIST")
}

/// Business sub codes (under `40004`) that are Alipay's own failure, which
/// its documentation says to retry with the same parameters (or to query
/// for the outcome): `SYSTEM_ERROR` (`ACQ.SYSTEM_ERROR` in the trade
/// APIs). Read as transient, like a `20000`, so the call is retried, counts
/// against the breaker, and a bind waits in review rather than failing.
/// The calls that can meet it (`unsign`, `query`) carry only our own
/// agreement numbers, so no user's input can make every call answer it.
fn is_retry_sub_code(code: &str) -> bool {
    let code = code
        .strip_prefix("ACQ.")
        .or_else(|| code.strip_prefix("acq."))
        .unwrap_or(code);
    code.eq_ignore_ascii_case("SYSTEM_ERROR")
}

/// A signing scene is two names joined by `|` (`INDUSTRY|CARRENTAL`), each
/// of ASCII letters, digits and `_`, and not Alipay's default
/// `DEFAULT|DEFAULT`, which Alipay refuses with an `external_agreement_no`.
fn check_sign_scene(scene: &str) -> Result<(), ConfigError> {
    let scene = scene.trim();
    if scene.is_empty() {
        return Err(ConfigError::new(
            "sign_scene",
            "must be set: the signing scene agreed with Alipay for the product, e.g. \
             INDUSTRY|CARRENTAL",
        ));
    }
    let part = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    match scene.split_once('|') {
        Some((a, b)) if part(a) && part(b) && scene.len() <= 64 => {}
        _ => {
            return Err(ConfigError::new(
                "sign_scene",
                "must be two names of letters, digits and _ joined by |, at most 64 \
                 characters (e.g. INDUSTRY|CARRENTAL)",
            ))
        }
    }
    if scene.eq_ignore_ascii_case("DEFAULT|DEFAULT") {
        return Err(ConfigError::new(
            "sign_scene",
            "DEFAULT|DEFAULT is refused by Alipay for agreements named by \
             external_agreement_no, as this service names each: set the scene agreed with \
             Alipay for the product",
        ));
    }
    Ok(())
}

impl AlipayChannel {
    pub fn new(config: AlipayConfig) -> Result<AlipayChannel, ConfigError> {
        let gateway_url = url::Url::parse(config.gateway_url.trim())
            .map_err(|e| ConfigError::new("gateway_url", e.to_string()))?;
        if !matches!(gateway_url.scheme(), "https" | "http") {
            return Err(ConfigError::new("gateway_url", "must be an http(s) URL"));
        }
        if config.app_id.trim().is_empty() {
            return Err(ConfigError::new("app_id", "must not be empty"));
        }
        check_sign_scene(&config.sign_scene)?;
        let private = load_private_key(&config.private_key_pem)
            .map_err(|e| ConfigError::new("private_key_pem", e))?;
        let public = load_public_key(&config.alipay_public_key_pem)
            .map_err(|e| ConfigError::new("alipay_public_key_pem", e))?;
        let aes_key = match &config.aes_key {
            None => None,
            Some(k) => {
                use base64::Engine as _;
                let raw = B64
                    .decode(k.trim().as_bytes())
                    .map_err(|_| ConfigError::new("aes_key", "not base64"))?;
                let key: [u8; 16] = raw
                    .try_into()
                    .map_err(|_| ConfigError::new("aes_key", "must be 16 bytes (AES-128)"))?;
                Some(key)
            }
        };
        Ok(AlipayChannel {
            name: config.name,
            gateway_url,
            app_id: config.app_id.trim().to_owned(),
            signer: RsaSigner::new(private),
            verifier: RsaVerifier::new(public),
            aes_key,
            notify_url: config.notify_url.filter(|s| !s.is_empty()),
            return_url: config.return_url.filter(|s| !s.is_empty()),
            personal_product_code: config.personal_product_code,
            product_code: config.product_code,
            sign_scene: config.sign_scene.trim().to_owned(),
            access_channel: config.access_channel,
            client: build_client(config.request_timeout)?,
            clock: config.clock.unwrap_or_else(|| Arc::new(SystemClock)),
        })
    }

    /// The signed parameters of a call (common ones, `biz_content`
    /// encrypted if configured, `sign`).
    pub fn signed_params(
        &self,
        method: &str,
        biz: &Value,
        with_return_url: bool,
    ) -> Result<BTreeMap<String, String>, ChannelError> {
        let mut p = BTreeMap::new();
        p.insert("app_id".to_owned(), self.app_id.clone());
        p.insert("method".to_owned(), method.to_owned());
        p.insert("format".to_owned(), "JSON".to_owned());
        p.insert("charset".to_owned(), "utf-8".to_owned());
        p.insert("sign_type".to_owned(), "RSA2".to_owned());
        p.insert("timestamp".to_owned(), alipay_timestamp(self.clock.now()));
        p.insert("version".to_owned(), "1.0".to_owned());
        if let Some(n) = &self.notify_url {
            p.insert("notify_url".to_owned(), n.clone());
        }
        if with_return_url {
            if let Some(r) = &self.return_url {
                p.insert("return_url".to_owned(), r.clone());
            }
        }
        let biz_text = biz.to_string();
        let biz_content = match &self.aes_key {
            Some(key) => {
                p.insert("encrypt_type".to_owned(), "AES".to_owned());
                aes128_cbc_encrypt_b64(key, biz_text.as_bytes())
            }
            None => biz_text,
        };
        p.insert("biz_content".to_owned(), biz_content);
        let sign = self
            .signer
            .sign_b64(sign_content(&p, &["sign"]).as_bytes())
            .map_err(protocol)?;
        p.insert("sign".to_owned(), sign);
        Ok(p)
    }

    /// The user's signing URL for the agreement `external` (the binding's
    /// [`crate::refs::of_attempt`]): the gateway with every signed parameter
    /// of `alipay.user.agreement.page.sign` in the query string.
    fn page_sign_url(
        &self,
        request: &ChannelBindRequest,
        external: &str,
    ) -> Result<String, ChannelError> {
        let mut biz = serde_json::json!({
            "personal_product_code": self.personal_product_code,
            "product_code": self.product_code,
            "sign_scene": self.sign_scene,
            "external_agreement_no": external,
            "external_logon_id": request.user_id.as_str(),
            "access_params": { "channel": self.access_channel },
        });
        if self.personal_product_code.is_empty() {
            if let Some(o) = biz.as_object_mut() {
                o.remove("personal_product_code");
            }
        }
        let params = self.signed_params(METHOD_PAGE_SIGN, &biz, true)?;
        let mut url = self.gateway_url.clone();
        url.query_pairs_mut().extend_pairs(params.iter());
        Ok(url.into())
    }

    /// Verifies and reads a gateway answer to `method`: the node's fields
    /// when its code is `10000`, else the mapped error.
    pub fn parse_response(
        &self,
        text: &str,
        method: &str,
    ) -> Result<Map<String, Value>, ChannelError> {
        let members = scan::top_level_members(text).map_err(|e| protocol(e.to_string()))?;
        let node_name = format!("{}_response", method.replace('.', "_"));
        let node =
            scan::unique_member(&members, &node_name).map_err(|e| protocol(e.to_string()))?;
        let error =
            scan::unique_member(&members, "error_response").map_err(|e| protocol(e.to_string()))?;
        let sign_raw =
            scan::unique_member(&members, "sign").map_err(|e| protocol(e.to_string()))?;
        let (raw, is_error) = match (node, error) {
            (Some(raw), None) => (raw, false),
            (None, Some(raw)) => (raw, true),
            (Some(_), Some(_)) => return Err(protocol("both a response and an error_response")),
            (None, None) => return Err(protocol("no response node")),
        };
        let sign: Option<String> = match sign_raw {
            None => None,
            Some(s) => Some(serde_json::from_str::<String>(s).map_err(|_| {
                crate::http::misconfigured(crate::http::codes::RESPONSE_SIGNATURE_INVALID)
            })?),
        };
        match sign {
            Some(sig) => {
                // As Alipay's SDK checks: the text as sent, else with `\/`
                // written `/` (JSON allows either; the signature may be
                // over the unescaped form).
                let verified = self.verifier.verify_b64(raw.as_bytes(), &sig)
                    || (raw.contains("\\/")
                        && self
                            .verifier
                            .verify_b64(raw.replace("\\/", "/").as_bytes(), &sig));
                if !verified {
                    // Signed, but not with the Alipay public key we hold:
                    // the key configured is not this app's Alipay public
                    // key (see the module docs).
                    return Err(crate::http::misconfigured(
                        crate::http::codes::RESPONSE_SIGNATURE_INVALID,
                    ));
                }
            }
            None => {
                // Not signed: act on nothing it says. Alipay leaves its
                // answer unsigned when it cannot check our request (bad
                // signature, unknown app id): a gateway code naming our
                // configuration is reported as such, which changes no
                // binding; anything else is refused.
                let fields: Map<String, Value> = serde_json::from_str(raw).unwrap_or_default();
                let code = str_field(&fields, "code").unwrap_or("");
                let sub_code = str_field(&fields, "sub_code").filter(|s| !s.is_empty());
                if is_configuration_code(code) {
                    return Err(crate::http::misconfigured(sub_code.unwrap_or(code)));
                }
                if is_error {
                    let shown = |c: &str| match crate::http::clean_code(c) {
                        c if c.is_empty() => "?".to_owned(),
                        c => c,
                    };
                    return Err(protocol(format!(
                        "unsigned alipay error_response code={} sub_code={}",
                        shown(code),
                        shown(sub_code.unwrap_or(""))
                    )));
                }
                return Err(ChannelError::InvalidSignature);
            }
        }
        let fields: Map<String, Value> = if raw.starts_with('"') {
            let Some(key) = &self.aes_key else {
                return Err(protocol("encrypted response but no AES key configured"));
            };
            let ct: String =
                serde_json::from_str(raw).map_err(|_| protocol("bad encrypted node"))?;
            let plain = aes128_cbc_decrypt_b64(key, &ct)
                .ok_or_else(|| protocol("encrypted response does not decrypt"))?;
            serde_json::from_slice(&plain)
                .map_err(|_| protocol("decrypted response is not JSON"))?
        } else {
            serde_json::from_str(raw).map_err(|_| protocol("response node is not an object"))?
        };
        let code = str_field(&fields, "code").unwrap_or("");
        let sub_code = str_field(&fields, "sub_code").filter(|s| !s.is_empty());
        let sub_msg = str_field(&fields, "sub_msg")
            .or_else(|| str_field(&fields, "msg"))
            .unwrap_or("")
            .to_owned();
        match code {
            "10000" => Ok(fields),
            "20000" => Err(ChannelError::Unavailable(format!(
                "alipay 20000 {}",
                sub_code
                    .map(crate::http::clean_code)
                    .unwrap_or_else(|| "service unavailable".to_owned())
            ))),
            "" => Err(protocol("response without code")),
            c if is_configuration_code(c) => Err(crate::http::misconfigured(sub_code.unwrap_or(c))),
            _ if sub_code.is_some_and(is_merchant_setup_sub_code) => {
                Err(crate::http::misconfigured(sub_code.unwrap_or(code)))
            }
            _ if sub_code.is_some_and(is_retry_sub_code) => {
                Err(ChannelError::Unavailable(format!(
                    "alipay {} {}",
                    crate::http::clean_code(code),
                    crate::http::clean_code(sub_code.unwrap_or(""))
                )))
            }
            other => Err(ChannelError::Rejected {
                code: sub_code.unwrap_or(other).to_owned(),
                message: sub_msg,
            }),
        }
    }

    async fn call(&self, method: &str, biz: &Value) -> Result<Map<String, Value>, ChannelError> {
        let params = self.signed_params(method, biz, false)?;
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter())
            .finish();
        let resp = self
            .client
            .post(self.gateway_url.clone())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded;charset=utf-8",
            )
            .body(body)
            .send()
            .await
            .map_err(transport_error)?;
        let status = resp.status();
        let bytes = crate::http::read_body(resp).await?;
        if status.is_server_error() {
            return Err(ChannelError::Unavailable(format!(
                "alipay HTTP {}",
                status.as_u16()
            )));
        }
        if !status.is_success() {
            return Err(protocol(format!("alipay HTTP {}", status.as_u16())));
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| protocol("response is not UTF-8"))?;
        self.parse_response(text, method)
    }

    /// `agreement_no` when the channel reference is Alipay's, else our
    /// external number ([`crate::refs::to_ask`]), with the product and
    /// scene Alipay requires. Returns the external number sent, if one
    /// was.
    fn agreement_biz(
        &self,
        binding: &BindingId,
        attempt: Option<u32>,
        channel_ref: Option<&str>,
    ) -> (Value, Option<String>) {
        if let Some(r) = channel_ref.filter(|r| !r.is_empty() && !crate::refs::names(binding, r)) {
            let biz = serde_json::json!({
                "agreement_no": r,
                "personal_product_code": self.personal_product_code,
                "sign_scene": self.sign_scene,
            });
            return (biz, None);
        }
        let ours = crate::refs::to_ask(binding, attempt, channel_ref)
            .unwrap_or_else(|| binding.as_str().to_owned());
        let biz = serde_json::json!({
            "external_agreement_no": ours,
            "personal_product_code": self.personal_product_code,
            "sign_scene": self.sign_scene,
        });
        (biz, Some(ours))
    }

    /// Verifies and reads an asynchronous notification (pure, no I/O).
    pub fn verify_notification(&self, body: &[u8]) -> Result<ChannelEvent, ChannelError> {
        let bad = || ChannelError::InvalidSignature;
        if body.is_empty() || body.len() > MAX_NOTIFICATION {
            return Err(bad());
        }
        let (params, charset) = notification_params(body).ok_or_else(bad)?;
        let sign = params.get("sign").ok_or_else(bad)?;
        if let Some(t) = params.get("sign_type") {
            if t != "RSA2" {
                return Err(bad());
            }
        }
        let content = notification_content(&params);
        let (signed, _, unmappable) = charset.encode(&content);
        if unmappable || !self.verifier.verify_b64(&signed, sign) {
            return Err(bad());
        }
        if params.get("app_id").map(String::as_str) != Some(self.app_id.as_str()) {
            return Err(bad());
        }
        let sent = params
            .get("notify_time")
            .and_then(|t| parse_alipay_timestamp(t))
            .ok_or_else(bad)?;
        let now = self.clock.now().unix_seconds();
        let age = now.saturating_sub(sent.unix_seconds());
        if !(-NOTIFICATION_MAX_AHEAD_SECONDS..=NOTIFICATION_MAX_AGE_SECONDS).contains(&age) {
            return Err(bad());
        }
        let event_id = params
            .get("notify_id")
            .filter(|s| !s.is_empty() && s.len() <= 128)
            .ok_or_else(bad)?
            .clone();
        let notify_type = params.get("notify_type").map(String::as_str);
        if !matches!(notify_type, Some("dut_user_sign" | "dut_user_unsign")) {
            // Another product's message at the app's gateway address.
            let kind = crate::http::clean_code(notify_type.unwrap_or(""));
            return Err(ChannelError::NotActedOn {
                kind: if kind.is_empty() {
                    "unknown".to_owned()
                } else {
                    kind
                },
            });
        }
        let agreement_no = params.get("agreement_no").filter(|s| !s.is_empty());
        let (binding, attempt) = match params
            .get("external_agreement_no")
            .and_then(|s| crate::refs::parse(s))
        {
            Some(n) => (BindingRef::Ours(n.binding), n.attempt),
            None => (
                BindingRef::Channel(agreement_no.ok_or_else(bad)?.clone()),
                None,
            ),
        };
        let status = params.get("status").map(String::as_str).unwrap_or("");
        let kind = match params.get("notify_type").map(String::as_str) {
            Some("dut_user_sign") => match status {
                "NORMAL" => ChannelEventKind::Signed {
                    channel_ref: agreement_no.ok_or_else(bad)?.clone(),
                },
                "" => return Err(bad()),
                other => ChannelEventKind::Failed {
                    code: format!("alipay_{}", other.to_ascii_lowercase()),
                },
            },
            Some("dut_user_unsign") => ChannelEventKind::Terminated,
            _ => return Err(bad()),
        };
        Ok(ChannelEvent {
            event_id,
            binding,
            kind,
            agreement: agreement_no.cloned(),
            attempt,
        })
    }
}

/// The agreement an answer to `alipay.user.agreement.query` reports. Its
/// `external_agreement_no`, when present, must be the one asked for
/// (`sent`), or name the binding when asked by `agreement_no`.
fn remote_state(
    fields: &Map<String, Value>,
    binding: &BindingId,
    sent: Option<&str>,
) -> Result<RemoteState, ChannelError> {
    if let Some(ext) = str_field(fields, "external_agreement_no") {
        let expected = match sent {
            Some(sent) => ext == sent,
            None => crate::refs::names(binding, ext),
        };
        if !ext.is_empty() && !expected {
            return Err(protocol("answer is about another agreement"));
        }
    }
    let agreement_no = str_field(fields, "agreement_no").unwrap_or("");
    Ok(match str_field(fields, "status").unwrap_or("") {
        "NORMAL" if !agreement_no.is_empty() => RemoteState::Active {
            channel_ref: agreement_no.to_owned(),
        },
        "TEMP" => RemoteState::Pending,
        "UNSIGN" => RemoteState::Terminated,
        "STOP" => RemoteState::Failed {
            code: "alipay_agreement_stopped".into(),
        },
        _ => return Err(protocol("unknown agreement status")),
    })
}

#[async_trait]
impl PaymentChannel for AlipayChannel {
    fn name(&self) -> &str {
        &self.name
    }

    async fn start_binding(
        &self,
        request: &ChannelBindRequest,
    ) -> Result<ChannelStart, ChannelError> {
        let Some(external) = crate::refs::of_attempt(&request.binding_id, request.attempt) else {
            return Ok(ChannelStart::Refused {
                code: "unsupported_binding_id".into(),
                message: "the binding id cannot be an Alipay external_agreement_no".into(),
            });
        };
        let url = self.page_sign_url(request, &external)?;
        Ok(ChannelStart::Redirect {
            channel_ref: external,
            url,
        })
    }

    async fn confirm_otp(
        &self,
        _binding: &BindingId,
        _channel_ref: &str,
        _otp: &str,
    ) -> Result<ConfirmOutcome, ChannelError> {
        Err(ChannelError::Rejected {
            code: "unsupported".into(),
            message: "Alipay agreements are confirmed in the Alipay app, not by OTP".into(),
        })
    }

    async fn unbind(
        &self,
        binding: &BindingId,
        attempt: Option<u32>,
        channel_ref: &str,
    ) -> Result<(), ChannelError> {
        let (biz, _) = self.agreement_biz(binding, attempt, Some(channel_ref));
        match self.call(METHOD_UNSIGN, &biz).await {
            Ok(_) => Ok(()),
            Err(ChannelError::Rejected { code, message }) => {
                // Already ended (or never signed) is success.
                match self
                    .query(binding, attempt, Some(channel_ref.to_owned()))
                    .await
                {
                    Ok(RemoteState::Terminated | RemoteState::NotFound) => Ok(()),
                    _ => Err(ChannelError::Rejected { code, message }),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn query(
        &self,
        binding: &BindingId,
        attempt: Option<u32>,
        channel_ref: Option<String>,
    ) -> Result<RemoteState, ChannelError> {
        let (biz, sent) = self.agreement_biz(binding, attempt, channel_ref.as_deref());
        match self.call(METHOD_QUERY, &biz).await {
            Ok(fields) => remote_state(&fields, binding, sent.as_deref()),
            Err(ChannelError::Rejected { code, .. }) if is_not_found_code(&code) => {
                Ok(RemoteState::NotFound)
            }
            Err(e) => Err(e),
        }
    }

    fn parse_notification(
        &self,
        notification: &Notification,
    ) -> Result<ChannelEvent, ChannelError> {
        self.verify_notification(&notification.body)
    }

    fn notification_ack(&self) -> NotificationAck {
        NotificationAck {
            status: 200,
            content_type: "text/plain",
            body: "success".into(),
        }
    }
}
