//! WeChat Pay API v3 with entrusted-debit (papay) contracts.
//!
//! * **Requests** carry `Authorization: WECHATPAY2-SHA256-RSA2048
//!   mchid="…",nonce_str="…",timestamp="…",serial_no="…",signature="…"`,
//!   the signature (SHA256withRSA, merchant key) over
//!   `METHOD\nPATH?QUERY\nTIMESTAMP\nNONCE\nBODY\n` built from the exact
//!   bytes sent. When a `PUB_KEY_ID_…` public key is configured, every
//!   request names it in `Wechatpay-Serial`: while a merchant moves from
//!   platform certificates to the public key, WeChat Pay signs its answer
//!   with the key the request's `Wechatpay-Serial` names, and with the
//!   certificate when it names none (as WeChat Pay's own SDKs do from
//!   wechatpay-java 0.2.16 on).
//! * **Responses and callbacks** are verified from `Wechatpay-Timestamp`,
//!   `Wechatpay-Nonce`, `Wechatpay-Signature` over
//!   `TIMESTAMP\nNONCE\nBODY\n` with the platform public key that
//!   `Wechatpay-Serial` names (a platform certificate serial or a
//!   `PUB_KEY_ID_…` public key id: both are keys of
//!   [`WechatConfig::platform_keys`]). Refused: a timestamp that is not
//!   its number's own text (`+…`, `0…`) or is [`WechatConfig::max_clock_skew`] (5 min) or more
//!   off (both as WeChat Pay's own SDK refuses them), a signature starting
//!   `WECHATPAY/SIGNTEST/` (WeChat's signature probes), an unknown serial.
//!   A 2xx without signature headers, a malformed one or a probe is
//!   refused as `InvalidSignature`; an unsigned 4xx is a `Protocol` error
//!   and an unsigned 5xx `Unavailable`.
//! * **Answers our configuration cannot verify** are `Misconfigured`:
//!   signed under a serial we hold no platform key for
//!   (`platform_key_unknown`: WeChat Pay rotated its platform certificate,
//!   or the public key id is not configured), not verifying with the key of
//!   that serial (`response_signature_invalid`: the wrong key is installed
//!   under that serial), or timestamped beyond the skew
//!   (`clock_skew`: our clock is off). Nothing in such an answer is acted
//!   upon; the operator is told which setting to look at. Callbacks keep
//!   `InvalidSignature` for every signature fault (anyone can post one, and
//!   WeChat Pay delivers a refused callback again), but a verified callback
//!   whose resource does not decrypt is `Misconfigured
//!   { code: "apiv3_key_mismatch" }`.
//! * **Error answers** (4xx) that name our own set-up (any 401,
//!   [`CONFIGURATION_CODES`], or a `PARAM_ERROR`/`INVALID_REQUEST` about a
//!   header) are `Misconfigured` with their code, signed or not (WeChat Pay
//!   cannot sign for a merchant it cannot identify; reporting it changes no
//!   binding). Other 4xx answers are refusals (`Refused` at start,
//!   `Rejected` elsewhere); 429 and 5xx are `Unavailable`.
//! * **Callback resources** are decrypted with AEAD_AES_256_GCM, the
//!   32-byte APIv3 key, the resource `nonce` and `associated_data`; the
//!   event id is the notification `id`. A contract's `mchid`, `appid` and
//!   `plan_id`, when present, must be ours.
//! * **Sensitive fields** are encrypted with RSA-OAEP (SHA-1, MGF1) under
//!   the first public key id configured (else the first platform
//!   certificate, by serial), whose serial goes in the `Wechatpay-Serial`
//!   request header ([`WechatChannel::encrypt_sensitive`]).
//! * **Papay contracts**: `start_binding` calls the pre-entrust signing API
//!   the merchant's product has ([`WechatConfig::presign_path`], with the
//!   fields it requires beside ours, [`WechatConfig::presign_fields`]) with
//!   `out_contract_code` derived from
//!   our binding id and the bind's attempt, and the holder's name as the
//!   display name ([`display_account`]: at most 32 bytes, no 4-byte
//!   character), and answers `Redirect` with the `redirect_url` it
//!   returns; `query` reads the contract by plan id and out contract code;
//!   `unbind` terminates it (an already ended one is success); callbacks
//!   with `change_type` `ADD` are `Signed` (channel reference: the
//!   `contract_id`), `DELETE` is `Terminated`; without a `change_type`,
//!   a `contract_state` of `SIGNED` or `TERMINATED` says the same.
//!
//! ## `out_contract_code`
//!
//! WeChat allows at most 32 letters and digits, and takes a code once at
//! a merchant, ended contracts included: the code names our binding id and
//! the bind's attempt ([`crate::refs`], shared with Alipay's
//! `external_agreement_no`), so a card bound again pre-signs under a new
//! one. A binding id that has no such form is refused at start
//! (`Refused { code: "unsupported_binding_id" }`). A contract signed by a
//! build before attempts were part of the code sits under the card id
//! without its dashes: `query` and `unbind` look there too when the
//! attempt's code finds nothing, and take what they find only when its
//! `contract_id` is the card's channel reference.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cardbind_domain::BindingId;
use cardbind_ports::channel::{
    ChannelBindRequest, ChannelEvent, ChannelStart, ConfirmOutcome, Notification, NotificationAck,
    PaymentChannel, RemoteState,
};
use cardbind_ports::clock::{Clock, SystemClock};
use cardbind_ports::ChannelError;
use serde_json::{Map, Value};

use crate::config::ConfigError;
use crate::crypto::{
    aes256_gcm_decrypt, nonce_str, rsa_oaep_sha1_encrypt_b64, RsaSigner, RsaVerifier,
};
use crate::http::{build_client, clean_code, codes, misconfigured, transport_error, unix_seconds};
use crate::keys::{load_private_key, load_public_key_and_serial};
use crate::protocol;

mod notify;
mod sign;

/// The prefix of WeChat Pay's signature probe values, never to be accepted.
pub const SIGNTEST_PREFIX: &str = "WECHATPAY/SIGNTEST/";
/// Largest callback body we read (bytes).
const MAX_NOTIFICATION: usize = 64 * 1024;

/// Settings of [`WechatChannel`]. Key settings take PEM text, a PEM file
/// path or bare base64 DER (see [`crate::keys`]).
#[derive(Clone)]
pub struct WechatConfig {
    /// The name it registers under (default `wechat`).
    pub name: String,
    /// API base, e.g. `https://api.mch.weixin.qq.com`.
    pub base_url: String,
    pub mchid: String,
    /// The AppID the contracts are signed under.
    pub appid: String,
    /// The papay contract template id.
    pub plan_id: u64,
    /// Serial number of our merchant API certificate.
    pub serial_no: String,
    /// Our merchant API private key.
    pub private_key_pem: String,
    /// WeChat Pay platform keys by serial (certificate serial or
    /// `PUB_KEY_ID_…`). The first public key id (else the first
    /// certificate) encrypts sensitive fields; a public key id is also
    /// named in every request's `Wechatpay-Serial`.
    pub platform_keys: Vec<(String, String)>,
    /// The 32-byte APIv3 key (as text, as WeChat hands it out).
    pub apiv3_key: String,
    /// Where WeChat sends the contract callbacks.
    pub notify_url: String,
    /// Where the user returns after signing, if wanted.
    pub return_url: Option<String>,
    /// The pre-entrust signing API path, as WeChat Pay enabled it for the
    /// merchant's papay product (e.g.
    /// `/v3/papay/scheduled-deduct-sign/contracts/pre-entrust-sign/h5`);
    /// its answer's `redirect_url` (or `code_url`, `url`) is where the
    /// user signs. Required: no default fits every product.
    pub presign_path: String,
    /// Further fields of the pre-sign body that the merchant's pre-sign
    /// API requires and that are the same for every bind (e.g.
    /// `jump_control`, `sign_scene`); the adapter's own fields (`appid`,
    /// `plan_id`, `out_contract_code`, `contract_display_account`,
    /// `contract_notify_url`, `return_url`, the encrypted phone's) cannot
    /// be among them.
    pub presign_fields: Map<String, Value>,
    /// If set, the pre-sign body also carries the user's phone under this
    /// field name, RSA-OAEP encrypted with the platform key.
    pub encrypted_phone_field: Option<String>,
    /// The difference between a response's or callback's timestamp and our
    /// clock from which it is refused (default 5 minutes: 4 min 59 s is
    /// taken, 5 min is not).
    pub max_clock_skew: Duration,
    /// HTTP timeout of one request (default 10 s).
    pub request_timeout: Duration,
    /// The clock for timestamps (default: the system clock).
    pub clock: Option<Arc<dyn Clock>>,
}

impl Default for WechatConfig {
    fn default() -> Self {
        WechatConfig {
            name: crate::names::WECHAT.into(),
            base_url: "https://api.mch.weixin.qq.com".into(),
            mchid: String::new(),
            appid: String::new(),
            plan_id: 0,
            serial_no: String::new(),
            private_key_pem: String::new(),
            platform_keys: Vec::new(),
            apiv3_key: String::new(),
            notify_url: String::new(),
            return_url: None,
            presign_path: String::new(),
            presign_fields: Map::new(),
            encrypted_phone_field: None,
            max_clock_skew: Duration::from_secs(300),
            request_timeout: Duration::from_secs(10),
            clock: None,
        }
    }
}

impl std::fmt::Debug for WechatConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let serials: Vec<&str> = self.platform_keys.iter().map(|(s, _)| s.as_str()).collect();
        f.debug_struct("WechatConfig")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("mchid", &self.mchid)
            .field("appid", &self.appid)
            .field("plan_id", &self.plan_id)
            .field("serial_no", &self.serial_no)
            .field("private_key_pem", &"<redacted>")
            .field("platform_keys", &serials)
            .field("apiv3_key", &"<redacted>")
            .field("notify_url", &self.notify_url)
            .field("return_url", &self.return_url)
            .field("presign_path", &self.presign_path)
            .field("presign_fields", &self.presign_fields)
            .field("encrypted_phone_field", &self.encrypted_phone_field)
            .field("max_clock_skew", &self.max_clock_skew)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// The pre-sign body's fields the adapter sets itself.
pub const OWN_PRESIGN_FIELDS: [&str; 6] = [
    "appid",
    "plan_id",
    "out_contract_code",
    "contract_display_account",
    "contract_notify_url",
    "return_url",
];

/// The WeChat Pay channel. See the module docs.
pub struct WechatChannel {
    name: String,
    base_url: String,
    mchid: String,
    appid: String,
    plan_id: u64,
    serial_no: String,
    signer: RsaSigner,
    platform: BTreeMap<String, RsaVerifier>,
    encrypt_with: (String, RsaVerifier),
    apiv3_key: [u8; 32],
    notify_url: String,
    return_url: Option<String>,
    presign_path: String,
    presign_fields: Map<String, Value>,
    encrypted_phone_field: Option<String>,
    max_skew: i64,
    client: reqwest::Client,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for WechatChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WechatChannel")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("mchid", &self.mchid)
            .field("serial_no", &self.serial_no)
            .field(
                "platform_serials",
                &self.platform.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// A verified answer that is not a success (4xx).
struct ApiAnswer {
    status: u16,
    body: bytes::Bytes,
}

/// WeChat Pay's public key ids read `PUB_KEY_ID_` then digits; platform
/// certificate serials are hex.
fn is_public_key_id(serial: &str) -> bool {
    serial.starts_with("PUB_KEY_ID_")
}

fn header<'a>(headers: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    headers.get(name).map(String::as_str)
}

impl WechatChannel {
    pub fn new(config: WechatConfig) -> Result<WechatChannel, ConfigError> {
        let base = url::Url::parse(config.base_url.trim())
            .map_err(|e| ConfigError::new("base_url", e.to_string()))?;
        if !matches!(base.scheme(), "https" | "http") {
            return Err(ConfigError::new("base_url", "must be an http(s) URL"));
        }
        for (field, v) in [
            ("mchid", &config.mchid),
            ("appid", &config.appid),
            ("serial_no", &config.serial_no),
        ] {
            if v.trim().is_empty() {
                return Err(ConfigError::new(field, "must not be empty"));
            }
        }
        let private = load_private_key(&config.private_key_pem)
            .map_err(|e| ConfigError::new("private_key_pem", e))?;
        let mut platform = BTreeMap::new();
        let mut first: Option<(String, RsaVerifier)> = None;
        for (configured, pem) in &config.platform_keys {
            // Serials are upper-case hex (or `PUB_KEY_ID_…`) in WeChat Pay's
            // headers; an operator's lower-case copy names the same key.
            let serial = configured.trim().to_ascii_uppercase();
            // A platform certificate names its own serial: it must be the
            // one it is installed under, or every answer it signs would be
            // refused as signed by a key we do not hold.
            let (key, named) = load_public_key_and_serial(pem)
                .map_err(|e| ConfigError::new("platform_keys", e))?;
            if let Some(named) = named.filter(|n| *n != serial) {
                return Err(ConfigError::new(
                    "platform_keys",
                    format!("the certificate installed under serial {serial} has serial {named}"),
                ));
            }
            let verifier = RsaVerifier::new(key);
            // WeChat Pay's public key (which does not expire) is preferred
            // over a platform certificate.
            let better = match &first {
                None => true,
                Some((s, _)) => is_public_key_id(&serial) && !is_public_key_id(s),
            };
            if better {
                first = Some((serial.clone(), verifier.clone()));
            }
            if platform.insert(serial.clone(), verifier).is_some() {
                return Err(ConfigError::new(
                    "platform_keys",
                    format!("serial {serial} is installed twice (serials are matched without regard to case)"),
                ));
            }
        }
        let encrypt_with: (String, RsaVerifier) =
            first.ok_or_else(|| ConfigError::new("platform_keys", "at least one is needed"))?;
        if !config.presign_path.starts_with("/v3/")
            || config.presign_path.contains(char::is_whitespace)
        {
            return Err(ConfigError::new(
                "presign_path",
                "the pre-entrust signing API's path, starting /v3/ (the one WeChat Pay enabled for the merchant's papay product)",
            ));
        }
        let encrypted_phone = config
            .encrypted_phone_field
            .as_deref()
            .filter(|s| !s.is_empty());
        if let Some(own) = config.presign_fields.keys().find(|k| {
            OWN_PRESIGN_FIELDS.contains(&k.as_str()) || Some(k.as_str()) == encrypted_phone
        }) {
            return Err(ConfigError::new(
                "presign_fields",
                format!("{own:?} is a field the adapter sets itself"),
            ));
        }
        let apiv3_key: [u8; 32] = config
            .apiv3_key
            .as_bytes()
            .try_into()
            .map_err(|_| ConfigError::new("apiv3_key", "must be 32 bytes"))?;
        Ok(WechatChannel {
            name: config.name,
            base_url: config.base_url.trim().trim_end_matches('/').to_owned(),
            mchid: config.mchid.trim().to_owned(),
            appid: config.appid.trim().to_owned(),
            plan_id: config.plan_id,
            serial_no: config.serial_no.trim().to_owned(),
            signer: RsaSigner::new(private),
            platform,
            encrypt_with,
            apiv3_key,
            notify_url: config.notify_url,
            return_url: config.return_url.filter(|s| !s.is_empty()),
            presign_path: config.presign_path,
            presign_fields: config.presign_fields,
            encrypted_phone_field: config.encrypted_phone_field.filter(|s| !s.is_empty()),
            max_skew: i64::try_from(config.max_clock_skew.as_secs()).unwrap_or(300),
            client: build_client(config.request_timeout)?,
            clock: config.clock.unwrap_or_else(|| Arc::new(SystemClock)),
        })
    }

    /// The `PUB_KEY_ID_…` every request names in `Wechatpay-Serial`, when
    /// one is configured (it is then the key that encrypts).
    fn public_key_id(&self) -> Option<&str> {
        Some(self.encrypt_with.0.as_str()).filter(|s| is_public_key_id(s))
    }

    /// Sends a signed request; a verified 2xx body is `Ok(Ok(body))`, a
    /// verified 4xx is `Ok(Err(answer))`.
    async fn request(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        body: Option<&Value>,
        wechatpay_serial: Option<&str>,
    ) -> Result<Result<bytes::Bytes, ApiAnswer>, ChannelError> {
        let url = url::Url::parse(&format!("{}{}", self.base_url, path_and_query))
            .map_err(|_| protocol("bad request URL"))?;
        let signed_path = match url.query() {
            Some(q) => format!("{}?{}", url.path(), q),
            None => url.path().to_owned(),
        };
        let body_text = body.map(Value::to_string).unwrap_or_default();
        let auth = self.authorization(method.as_str(), &signed_path, &body_text)?;
        let mut req = self
            .client
            .request(method, url)
            .header(reqwest::header::AUTHORIZATION, auth)
            .header(reqwest::header::ACCEPT, "application/json");
        if body.is_some() {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body_text);
        }
        if let Some(serial) = wechatpay_serial.or(self.public_key_id()) {
            req = req.header("Wechatpay-Serial", serial);
        }
        let resp = req.send().await.map_err(transport_error)?;
        let status = resp.status();
        let headers: BTreeMap<String, String> = resp
            .headers()
            .iter()
            .filter_map(|(k, v)| {
                Some((k.as_str().to_ascii_lowercase(), v.to_str().ok()?.to_owned()))
            })
            .collect();
        let bytes = crate::http::read_body(resp).await?;
        let signed = headers.contains_key("wechatpay-signature");
        if status.is_success() {
            self.verify_response(&headers, &bytes)?;
            return Ok(Ok(bytes));
        }
        let verified = signed.then(|| self.verify_response(&headers, &bytes));
        let code = status.as_u16();
        if status.is_client_error() {
            // Reported whether or not its signature verifies: WeChat Pay
            // cannot always sign an answer to a merchant it cannot identify,
            // and reporting a misconfiguration changes no binding.
            if let Some(config_code) = configuration_code(code, &bytes) {
                return Err(misconfigured(&config_code));
            }
        }
        if let Some(Err(e)) = verified {
            return Err(e);
        }
        if status.is_server_error() || code == 429 {
            let api_code = serde_json::from_slice::<Map<String, Value>>(&bytes)
                .ok()
                .and_then(|m| m.get("code").and_then(Value::as_str).map(clean_code))
                .unwrap_or_default();
            return Err(ChannelError::Unavailable(format!(
                "wechat HTTP {code} {api_code}"
            )));
        }
        if !signed {
            return Err(protocol(format!("unsigned wechat HTTP {code}")));
        }
        Ok(Err(ApiAnswer {
            status: code,
            body: bytes,
        }))
    }

    fn contract_path(&self, code: &str) -> String {
        format!(
            "/v3/papay/sign/contracts/plan-id/{}/out-contract-code/{}",
            self.plan_id, code
        )
    }

    /// Ends the contract under `code`: the gateway's refusal, if any.
    async fn terminate(&self, code: &str) -> Result<Result<(), ApiAnswer>, ChannelError> {
        let path = format!("{}/terminate", self.contract_path(code));
        let body = serde_json::json!({ "contract_termination_remark": "unbound by the user" });
        Ok(self
            .request(reqwest::Method::POST, &path, Some(&body), None)
            .await?
            .map(|_| ()))
    }

    /// The contract under `code` as the gateway reports it, and its
    /// `contract_id`.
    async fn contract(&self, code: &str) -> Result<(RemoteState, Option<String>), ChannelError> {
        let path = self.contract_path(code);
        match self
            .request(reqwest::Method::GET, &path, None, None)
            .await?
        {
            Ok(bytes) => {
                let m: Map<String, Value> =
                    serde_json::from_slice(&bytes).map_err(|_| protocol("contract is not JSON"))?;
                let get = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or_default();
                if !get("out_contract_code").is_empty() && get("out_contract_code") != code {
                    return Err(protocol("answer is about another contract"));
                }
                let contract_id = Some(get("contract_id").to_owned()).filter(|c| !c.is_empty());
                let state = match get("contract_state") {
                    // `TO_BE_RENEWED`: a signed contract at the end of its
                    // term, waiting for the merchant's renewal plan. It
                    // exists (not a signing still to come: a card waiting
                    // on it would otherwise expire while it stays live).
                    "SIGNED" | "TO_BE_RENEWED" if contract_id.is_some() => RemoteState::Active {
                        channel_ref: get("contract_id").to_owned(),
                    },
                    "TERMINATED" => RemoteState::Terminated,
                    "SIGN_FAILED" => RemoteState::Failed {
                        code: "wechat_sign_failed".into(),
                    },
                    "NOT_SIGNED" => RemoteState::Pending,
                    _ => return Err(protocol("unknown contract state")),
                };
                Ok((state, contract_id))
            }
            Err(answer) => {
                let (code, message) = api_error(&answer);
                if is_not_found(&answer, &code) {
                    Ok((RemoteState::NotFound, None))
                } else {
                    Err(ChannelError::Rejected { code, message })
                }
            }
        }
    }

    /// Where the contract of bind `attempt` is, and its state: under the
    /// code [`crate::refs::to_ask`] picks (the attempt's, or the reference
    /// given when it is ours). A card
    /// that holds a `contract_id` (`channel_ref` not ours) must find that
    /// contract: one of another id under the code is an error, not taken
    /// for it; and when the code has none, the card's code from before
    /// attempts were part of it (the card id without its dashes) is asked
    /// too, and taken only when its contract is the card's. A failure to
    /// ask it is the answer: the card's contract may be live there.
    async fn locate(
        &self,
        binding: &BindingId,
        attempt: Option<u32>,
        channel_ref: Option<&str>,
    ) -> Result<(String, RemoteState), ChannelError> {
        let Some(code) = crate::refs::to_ask(binding, attempt, channel_ref) else {
            return Ok((String::new(), RemoteState::NotFound));
        };
        let held = channel_ref.filter(|r| !r.is_empty() && !crate::refs::names(binding, r));
        let (state, id) = self.contract(&code).await?;
        if let (Some(held), Some(id)) = (held, id.as_deref()) {
            if id != held {
                return Err(protocol(
                    "the contract under this bind's code is not the one the card holds",
                ));
            }
        }
        if state == RemoteState::NotFound {
            if let Some(found) = self.under_earlier_code(binding, held, &code).await? {
                return Ok(found);
            }
        }
        Ok((code, state))
    }

    /// The contract the card holds (`held`, its `contract_id`) under the
    /// card's code from before attempts were part of it, when that is not
    /// the code already asked (`asked`): `None` when there is no such code
    /// or its contract is not the card's.
    async fn under_earlier_code(
        &self,
        binding: &BindingId,
        held: Option<&str>,
        asked: &str,
    ) -> Result<Option<(String, RemoteState)>, ChannelError> {
        let (Some(held), Some(old)) = (held, crate::refs::legacy_of(binding)) else {
            return Ok(None);
        };
        if old == asked {
            return Ok(None);
        }
        let (state, id) = self.contract(&old).await?;
        Ok((id.as_deref() == Some(held)).then_some((old, state)))
    }
}

fn api_error(answer: &ApiAnswer) -> (String, String) {
    let m: Map<String, Value> = serde_json::from_slice(&answer.body).unwrap_or_default();
    let code = m
        .get("code")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("http_{}", answer.status));
    let message = m
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    (code, message)
}

/// WeChat Pay API v3 codes that are about our own set-up, never about the
/// user or the card (WeChat Pay's common error codes):
///
/// * `SIGN_ERROR` (401): our `Authorization` does not verify: merchant
///   private key, certificate serial (`serial_no`) or merchant id;
/// * `NO_AUTH` (403): the merchant account lacks the product or API
///   permission (papay not enabled);
/// * `APPID_MCHID_NOT_MATCH` (400): the AppID is not bound to the merchant;
/// * `MCH_NOT_EXISTS` (400): no such merchant id.
pub const CONFIGURATION_CODES: &[&str] = &[
    "SIGN_ERROR",
    "NO_AUTH",
    "APPID_MCHID_NOT_MATCH",
    "MCH_NOT_EXISTS",
];

/// The code to report as `Misconfigured` for a 4xx answer, if it names our
/// own set-up: any 401 (authentication), a code of
/// [`CONFIGURATION_CODES`], or a `PARAM_ERROR` / `INVALID_REQUEST` whose
/// `detail.location` is a header or the authorization (e.g. a
/// `Wechatpay-Serial` naming a platform certificate WeChat Pay no longer
/// uses): headers carry only our credentials, never the user's data.
/// Other 4xx answers (`PARAM_ERROR` about the body, `RULE_LIMIT`,
/// `INVALID_REQUEST`, …) stay refusals.
fn configuration_code(status: u16, body: &[u8]) -> Option<String> {
    let m: Map<String, Value> = serde_json::from_slice(body).unwrap_or_default();
    let code = m
        .get("code")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let location = m
        .get("detail")
        .and_then(|d| d.get("location"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    match code {
        Some(c) if CONFIGURATION_CODES.contains(&c) => Some(c.to_owned()),
        Some(c @ ("PARAM_ERROR" | "INVALID_REQUEST"))
            if matches!(location, "header" | "authorization") =>
        {
            Some(c.to_owned())
        }
        Some(c) if status == 401 => Some(c.to_owned()),
        None if status == 401 => Some("http_401".to_owned()),
        _ => None,
    }
}

/// The most bytes of the user's display name sent to WeChat Pay.
pub const MAX_DISPLAY_BYTES: usize = 32;

/// The user's name as WeChat Pay's signing page shows it
/// (`contract_display_account`): at most 32 (the docs do not say whether
/// characters or bytes, so at most 32 bytes of UTF-8, which is both), and
/// no character of four UTF-8 bytes, which the docs say it does not take
/// (a name may have one: `HolderName` takes any letter, CJK extension B
/// included); such a character is shown as `*`. A longer name is cut at a
/// character: the page only shows it.
pub fn display_account(name: &str) -> String {
    let mut out = String::with_capacity(MAX_DISPLAY_BYTES);
    for c in name.chars() {
        let c = if c.len_utf8() == 4 { '*' } else { c };
        if out.len() + c.len_utf8() > MAX_DISPLAY_BYTES {
            break;
        }
        out.push(c);
    }
    out
}

/// Whether a (signed) refusal says the *contract* does not exist: WeChat
/// Pay's `RESOURCE_NOT_EXISTS` for the contract asked, or a code naming the
/// contract (`CONTRACT_NOT_EXIST`). Any other 404 (`NOT_FOUND` of a path
/// it does not serve, a plan or merchant it does not know) stays a
/// refusal: an unbind counts "no such contract" as ended, and a wrong path
/// must not end a card whose contract is live.
fn is_not_found(answer: &ApiAnswer, code: &str) -> bool {
    let u = code.to_ascii_uppercase();
    (answer.status == 404 && u == "RESOURCE_NOT_EXISTS")
        || (u.contains("CONTRACT") && (u.contains("NOT_EXIST") || u.contains("NOT_FOUND")))
}

#[async_trait]
impl PaymentChannel for WechatChannel {
    fn name(&self) -> &str {
        &self.name
    }

    async fn start_binding(
        &self,
        request: &ChannelBindRequest,
    ) -> Result<ChannelStart, ChannelError> {
        let Some(code) = crate::refs::of_attempt(&request.binding_id, request.attempt) else {
            return Ok(ChannelStart::Refused {
                code: "unsupported_binding_id".into(),
                message: "the binding id cannot be a WeChat out_contract_code".into(),
            });
        };
        let mut body = serde_json::json!({
            "appid": self.appid,
            "plan_id": self.plan_id,
            "out_contract_code": code,
            "contract_display_account": display_account(request.holder_name.expose()),
            "contract_notify_url": self.notify_url,
        });
        if let Some(r) = &self.return_url {
            body["return_url"] = Value::String(r.clone());
        }
        for (k, v) in &self.presign_fields {
            body[k.as_str()] = v.clone();
        }
        let mut serial = None;
        if let Some(field) = &self.encrypted_phone_field {
            let (s, ct) = self.encrypt_sensitive(request.phone.expose())?;
            body[field.as_str()] = Value::String(ct);
            serial = Some(s);
        }
        let path = self.presign_path.clone();
        match self
            .request(reqwest::Method::POST, &path, Some(&body), serial.as_deref())
            .await?
        {
            Ok(bytes) => {
                let m: Map<String, Value> = serde_json::from_slice(&bytes)
                    .map_err(|_| protocol("pre-sign answer is not JSON"))?;
                let url = ["redirect_url", "code_url", "url"]
                    .iter()
                    .find_map(|k| m.get(*k).and_then(Value::as_str))
                    .filter(|u| !u.is_empty())
                    .ok_or_else(|| protocol("pre-sign answer has no URL"))?;
                Ok(ChannelStart::Redirect {
                    channel_ref: code,
                    url: url.to_owned(),
                })
            }
            Err(answer) => {
                let (code, message) = api_error(&answer);
                Ok(ChannelStart::Refused { code, message })
            }
        }
    }

    async fn confirm_otp(
        &self,
        _binding: &BindingId,
        _channel_ref: &str,
        _otp: &str,
    ) -> Result<ConfirmOutcome, ChannelError> {
        Err(ChannelError::Rejected {
            code: "unsupported".into(),
            message: "WeChat Pay contracts are confirmed in WeChat, not by OTP".into(),
        })
    }

    async fn unbind(
        &self,
        binding: &BindingId,
        attempt: Option<u32>,
        channel_ref: &str,
    ) -> Result<(), ChannelError> {
        let code = crate::refs::to_ask(binding, attempt, Some(channel_ref))
            .ok_or_else(|| protocol("binding id has no contract code"))?;
        let Err(answer) = self.terminate(&code).await? else {
            return Ok(());
        };
        let (refusal, message) = api_error(&answer);
        let refused = || ChannelError::Rejected {
            code: refusal.clone(),
            message: message.clone(),
        };
        match self.locate(binding, attempt, Some(channel_ref)).await {
            Ok((_, RemoteState::Terminated | RemoteState::NotFound)) => Ok(()),
            // Signed under the code of a build before attempts.
            Ok((old, RemoteState::Active { .. })) if old != code => {
                match self.terminate(&old).await? {
                    Ok(()) => Ok(()),
                    Err(_) => Err(refused()),
                }
            }
            _ => Err(refused()),
        }
    }

    async fn query(
        &self,
        binding: &BindingId,
        attempt: Option<u32>,
        channel_ref: Option<String>,
    ) -> Result<RemoteState, ChannelError> {
        Ok(self
            .locate(binding, attempt, channel_ref.as_deref())
            .await?
            .1)
    }

    fn parse_notification(
        &self,
        notification: &Notification,
    ) -> Result<ChannelEvent, ChannelError> {
        self.verify_notification(notification)
    }

    fn notification_ack(&self) -> NotificationAck {
        NotificationAck {
            status: 200,
            content_type: "application/json",
            body: r#"{"code":"SUCCESS","message":"OK"}"#.into(),
        }
    }
}
