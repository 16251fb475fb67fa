//! A fake WeChat Pay API v3 for papay (entrusted-debit) contracts.
//!
//! It checks every request as WeChat Pay does: the
//! `WECHATPAY2-SHA256-RSA2048` `Authorization` header (merchant id, the
//! merchant certificate serial, a timestamp within 5 minutes, a nonce of
//! 16+ characters and the SHA256withRSA signature over
//! `METHOD\nPATH?QUERY\nTIMESTAMP\nNONCE\nBODY\n` with the merchant public
//! key). A refused request gets 401 `SIGN_ERROR` with a `detail` naming
//! the `authorization` and the field at fault, and is recorded as refused:
//! signed when the merchant id is the fake's own, unsigned for another one
//! (platform keys are per merchant). The pre-sign body's `appid` must be
//! the one bound to the merchant (else 400 `APPID_MCHID_NOT_MATCH`) and an
//! encrypted field must come with the `Wechatpay-Serial` of the platform
//! key it was encrypted for (else 400 `PARAM_ERROR` about that header). A
//! wrong merchant key, serial, merchant id, AppID or platform key in the
//! channel's configuration therefore gets WeChat Pay's own answer, with no
//! switch to set.
//!
//! The merchant account's state is a switch:
//! [`FakeWechat::set_papay_enabled`] `(false)` answers papay routes 403
//! `NO_AUTH`; [`FakeWechat::refuse_presigns`] makes pre-signing refuse with
//! a business code (e.g. 403 `RULE_LIMIT`), the kind of refusal that is
//! about the user and must stay one.
//!
//! Answers (and callbacks) carry `Wechatpay-Timestamp`, `-Nonce`,
//! `-Serial` and `-Signature` over `TIMESTAMP\nNONCE\nBODY\n` with the
//! platform key; switches make them stale, `SIGNTEST` probes, unsigned,
//! tampered, signed by a stranger, by the second platform key or under an
//! unknown serial.
//!
//! Routes: `POST /v3/papay/scheduled-deduct-sign/contracts/pre-entrust-sign/h5` (creates a
//! `NOT_SIGNED` contract, answers a `redirect_url`; an RSA-OAEP `phone`
//! field is decrypted with the platform key and needs the matching
//! `Wechatpay-Serial` header), `GET …/plan-id/{plan}/out-contract-code/{code}`
//! and `POST …/terminate`.
//!
//! The user's side: [`FakeWechat::user_signs`] (contract `SIGNED`, callback
//! `ADD`) and [`FakeWechat::user_terminates`] (`TERMINATED`, callback
//! `DELETE`) return the callback as a [`Notification`] (lower-case header
//! names, exact body) with its resource AEAD_AES_256_GCM-encrypted under
//! the APIv3 key.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use base64::Engine as _;
use cardbind_ports::channel::Notification;
use rsa::RsaPublicKey;
use serde_json::{json, Value};

use super::keys::{test_key, MERCHANT, PLATFORM, PLATFORM_2, STRANGER};
use super::server::{serve, Server};
use super::{lock, now_unix, rsa_sign, rsa_verify, FakeError, ReceivedRequest};

mod requests;

pub const MCHID: &str = "1900000109";
pub const APPID: &str = "wxd678efh567hg6787";
pub const PLAN_ID: u64 = 12535;
/// Serial of the merchant API certificate the fake expects.
pub const MERCHANT_SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
/// Serial (a public key id) of the platform key, [`test_key`]`(PLATFORM)`.
pub const PLATFORM_SERIAL: &str = "PUB_KEY_ID_0119000001092025010100000000";
/// Serial of the second platform key, [`test_key`]`(PLATFORM_2)`.
pub const PLATFORM_SERIAL_2: &str = "7132D72A03E93CDDF8C03BBD1F37EEDF";
/// The APIv3 key callbacks are encrypted with.
pub const APIV3_KEY: &str = "0123456789abcdef0123456789ABCDEF";
/// The prefix of WeChat Pay's signature probes.
pub const SIGNTEST_PREFIX: &str = "WECHATPAY/SIGNTEST/";
/// The pre-entrust signing path.
pub const PRESIGN_PATH: &str = "/v3/papay/scheduled-deduct-sign/contracts/pre-entrust-sign/h5";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Clone, Debug)]
struct Contract {
    state: String,
    contract_id: String,
}

#[derive(Default)]
struct Switches {
    ts_offset: AtomicI64,
    signtest: AtomicBool,
    tamper: AtomicBool,
    wrong_key: AtomicBool,
    unsigned: AtomicBool,
    second_platform_key: AtomicBool,
    /// The merchant is moving from platform certificates to the public key.
    moving_to_public_key: AtomicBool,
    unknown_serial: AtomicBool,
    down: AtomicBool,
    /// Every answer waits this long first (a slow gateway), in ms.
    answer_after_ms: AtomicU64,
    /// Pre-sign requests still to be answered 503.
    fail_presigns: AtomicU64,
    papay_disabled: AtomicBool,
}

struct State {
    merchant_public: Mutex<RsaPublicKey>,
    /// A business refusal for every pre-sign: (status, code).
    presign_refusal: Mutex<Option<(u16, String)>>,
    /// The contract code whose queries are answered 503.
    failing_queries: Mutex<Option<String>>,
    /// out_contract_code -> contract
    contracts: Mutex<HashMap<String, Contract>>,
    next_id: AtomicU64,
    switches: Switches,
    requests: Mutex<Vec<ReceivedRequest>>,
    decrypted_phone: Mutex<Option<String>>,
    /// The body of the last pre-sign request that parsed.
    last_presign: Mutex<Option<serde_json::Value>>,
}

/// A running fake WeChat Pay API; stops when dropped.
pub struct FakeWechat {
    state: Arc<State>,
    server: Server,
}

impl std::fmt::Debug for FakeWechat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeWechat")
            .field("base_url", &self.server.base_url)
            .finish_non_exhaustive()
    }
}

/// `Wechatpay-*` headers over `body` signed at `timestamp` with the key in
/// `slot` under `serial` (header names as WeChat sends them).
fn sign_headers(
    body: &[u8],
    timestamp: i64,
    slot: usize,
    serial: &str,
    signtest: bool,
) -> Result<Vec<(String, String)>, FakeError> {
    let ts = timestamp.to_string();
    let nonce = "5K8264ILTKCH16CQ2502SI8ZNMTM67VS".to_owned();
    let mut msg = format!("{ts}\n{nonce}\n").into_bytes();
    msg.extend_from_slice(body);
    msg.push(b'\n');
    let mut signature = rsa_sign(slot, &msg)?;
    if signtest {
        signature = format!("{SIGNTEST_PREFIX}{signature}");
    }
    Ok(vec![
        ("Wechatpay-Timestamp".into(), ts),
        ("Wechatpay-Nonce".into(), nonce),
        ("Wechatpay-Serial".into(), serial.into()),
        ("Wechatpay-Signature".into(), signature),
    ])
}

/// `Wechatpay-*` headers over `body`, signed now with the platform key
/// (no fake needed: for parser tests).
pub fn platform_signed_headers(body: &[u8]) -> Result<Vec<(String, String)>, FakeError> {
    sign_headers(body, now_unix(), PLATFORM, PLATFORM_SERIAL, false)
}

impl State {
    /// Signs an answer the way WeChat Pay does (with the test switches), to
    /// a request that named `request_serial` in its `Wechatpay-Serial`.
    fn signed_headers(
        &self,
        body: &[u8],
        request_serial: Option<&str>,
    ) -> Result<Vec<(String, String)>, FakeError> {
        let s = &self.switches;
        if s.unsigned.load(Ordering::SeqCst) {
            return Ok(Vec::new());
        }
        let ts = now_unix() + s.ts_offset.load(Ordering::SeqCst);
        // While a merchant moves to the public key, an answer is signed with
        // it only for a request that names it; otherwise with the platform
        // certificate (here the second key, under its hex serial).
        let by_certificate = s.moving_to_public_key.load(Ordering::SeqCst)
            && request_serial != Some(PLATFORM_SERIAL);
        let (slot, serial) = if by_certificate || s.second_platform_key.load(Ordering::SeqCst) {
            (PLATFORM_2, PLATFORM_SERIAL_2)
        } else if s.wrong_key.load(Ordering::SeqCst) {
            (STRANGER, PLATFORM_SERIAL)
        } else {
            (PLATFORM, PLATFORM_SERIAL)
        };
        let serial = if s.unknown_serial.load(Ordering::SeqCst) {
            "UNKNOWN_SERIAL"
        } else {
            serial
        };
        sign_headers(body, ts, slot, serial, s.signtest.load(Ordering::SeqCst))
    }
}

impl FakeWechat {
    /// Starts a fake that verifies requests with the public key of
    /// [`test_key`]`(MERCHANT)` on `127.0.0.1:0` (current tokio runtime).
    pub async fn start() -> Result<FakeWechat, FakeError> {
        let merchant_public = test_key(MERCHANT)?.public.clone();
        let state = Arc::new(State {
            merchant_public: Mutex::new(merchant_public),
            presign_refusal: Mutex::new(None),
            failing_queries: Mutex::new(None),
            contracts: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            switches: Switches::default(),
            requests: Mutex::new(Vec::new()),
            decrypted_phone: Mutex::new(None),
            last_presign: Mutex::new(None),
        });
        let s = state.clone();
        let server = serve(move |req: poem::Request| {
            let state = s.clone();
            async move {
                let method = req.method().as_str().to_owned();
                let pq = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_default();
                let auth = req.header("authorization").map(str::to_owned);
                let serial = req.header("wechatpay-serial").map(str::to_owned);
                let body = req.into_body().into_bytes().await.unwrap_or_default();
                let wait = state.switches.answer_after_ms.load(Ordering::SeqCst);
                if wait > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                }
                let answer = state.handle(&method, &pq, auth.as_deref(), serial.as_deref(), &body);
                state.respond(answer, serial.as_deref())
            }
        })?;
        Ok(FakeWechat { state, server })
    }

    /// `http://127.0.0.1:PORT` (the API base URL).
    pub fn base_url(&self) -> &str {
        &self.server.base_url
    }

    /// The platform public key (SPKI PEM), to configure under
    /// [`PLATFORM_SERIAL`].
    pub fn platform_public_key_pem(&self) -> Result<String, FakeError> {
        Ok(test_key(PLATFORM)?.public_pem.clone())
    }

    /// The second platform key (SPKI PEM), under [`PLATFORM_SERIAL_2`].
    pub fn second_platform_public_key_pem(&self) -> Result<String, FakeError> {
        Ok(test_key(PLATFORM_2)?.public_pem.clone())
    }

    /// Accepts requests signed with the private half of `pem` from now on.
    pub fn accept_merchant_public_key(&self, pem: &str) -> Result<(), FakeError> {
        let key = crate::keys::load_public_key(pem).map_err(FakeError::new)?;
        *lock(&self.state.merchant_public) = key;
        Ok(())
    }

    // ---- faults ---------------------------------------------------------

    /// Shifts the `Wechatpay-Timestamp` of answers and callbacks.
    pub fn timestamp_offset(&self, seconds: i64) {
        self.state
            .switches
            .ts_offset
            .store(seconds, Ordering::SeqCst);
    }

    /// Signatures become `WECHATPAY/SIGNTEST/…` probes.
    pub fn signtest(&self, on: bool) {
        self.state.switches.signtest.store(on, Ordering::SeqCst);
    }

    /// Alters answers after signing.
    pub fn tamper_answers(&self, on: bool) {
        self.state.switches.tamper.store(on, Ordering::SeqCst);
    }

    /// Signs answers and callbacks with a stranger's key.
    pub fn sign_with_wrong_key(&self, on: bool) {
        self.state.switches.wrong_key.store(on, Ordering::SeqCst);
    }

    /// Sends answers without `Wechatpay-*` headers.
    pub fn unsigned_answers(&self, on: bool) {
        self.state.switches.unsigned.store(on, Ordering::SeqCst);
    }

    /// Signs with the second platform key (under its own serial).
    pub fn use_second_platform_key(&self, on: bool) {
        self.state
            .switches
            .second_platform_key
            .store(on, Ordering::SeqCst);
    }

    /// The merchant moves from platform certificates to the public key (as
    /// WeChat Pay's switch period works): an answer is signed with the
    /// public key under [`PLATFORM_SERIAL`] only when the request's
    /// `Wechatpay-Serial` names it, else with the platform certificate (the
    /// second key, under [`PLATFORM_SERIAL_2`]).
    pub fn moving_to_public_key(&self, on: bool) {
        self.state
            .switches
            .moving_to_public_key
            .store(on, Ordering::SeqCst);
    }

    /// Names an unknown serial in `Wechatpay-Serial`.
    pub fn unknown_serial(&self, on: bool) {
        self.state
            .switches
            .unknown_serial
            .store(on, Ordering::SeqCst);
    }

    /// Answers every request after `wait` (a slow gateway; zero: at once).
    pub fn answer_after(&self, wait: std::time::Duration) {
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        self.state
            .switches
            .answer_after_ms
            .store(ms, Ordering::SeqCst);
    }

    /// Answers every request HTTP 503 (the API is down).
    pub fn set_down(&self, down: bool) {
        self.state.switches.down.store(down, Ordering::SeqCst);
    }

    /// Answers the next `n` pre-sign requests HTTP 503 (after checking
    /// their authorization), while every other route keeps working.
    pub fn fail_next_presigns(&self, n: u64) {
        self.state.switches.fail_presigns.store(n, Ordering::SeqCst);
    }

    /// Whether the merchant account has papay enabled (default true);
    /// without it every papay route answers 403 `NO_AUTH` (signed).
    pub fn set_papay_enabled(&self, enabled: bool) {
        self.state
            .switches
            .papay_disabled
            .store(!enabled, Ordering::SeqCst);
    }

    /// Answers every (authorized) query of the contract under `code` 503
    /// `SYSTEM_ERROR`, the other codes as usual; `None` stops.
    pub fn fail_queries_of(&self, code: Option<&str>) {
        *lock(&self.state.failing_queries) = code.map(str::to_owned);
    }

    /// Refuses every (authorized, well-formed) pre-sign with this HTTP
    /// status and business code, e.g. `(403, "RULE_LIMIT")`; `None` stops.
    pub fn refuse_presigns(&self, refusal: Option<(u16, &str)>) {
        *lock(&self.state.presign_refusal) = refusal.map(|(s, c)| (s, c.to_owned()));
    }

    // ---- the user's side --------------------------------------------------

    /// The user signs the contract `code` in WeChat: it is `SIGNED`
    /// (created if pre-signing never happened) and this callback is sent.
    pub fn user_signs(&self, code: &str, event_id: &str) -> Result<Notification, FakeError> {
        let id = {
            let mut contracts = lock(&self.state.contracts);
            let n = self.state.next_id.fetch_add(1, Ordering::SeqCst);
            let c = contracts.entry(code.to_owned()).or_insert(Contract {
                state: "NOT_SIGNED".into(),
                contract_id: String::new(),
            });
            if c.contract_id.is_empty() {
                c.contract_id = format!("Wx{n:016}");
            }
            c.state = "SIGNED".into();
            c.contract_id.clone()
        };
        self.callback(
            event_id,
            "PAPAY.SIGN",
            json!({
                "mchid": MCHID, "appid": APPID, "plan_id": PLAN_ID, "out_contract_code": code,
                "contract_id": id, "change_type": "ADD",
                "operate_time": "2025-01-01T10:00:00+08:00", "contract_display_account": "张三"
            }),
        )
    }

    /// The signed contract `code` reaches the end of its term and waits
    /// for the merchant's renewal plan: `TO_BE_RENEWED` (it still exists).
    pub fn contract_awaits_renewal(&self, code: &str) {
        if let Some(c) = lock(&self.state.contracts).get_mut(code) {
            c.state = "TO_BE_RENEWED".into();
        }
    }

    /// The user ends the contract `code` inside WeChat: it is `TERMINATED`
    /// and this `DELETE` callback is sent.
    pub fn user_terminates(&self, code: &str, event_id: &str) -> Result<Notification, FakeError> {
        let id = {
            let mut contracts = lock(&self.state.contracts);
            let c = contracts
                .get_mut(code)
                .ok_or_else(|| FakeError::new("no such contract"))?;
            c.state = "TERMINATED".into();
            c.contract_id.clone()
        };
        self.callback(
            event_id,
            "PAPAY.TERMINATE",
            json!({
                "mchid": MCHID, "appid": APPID, "plan_id": PLAN_ID, "out_contract_code": code,
                "contract_id": id, "change_type": "DELETE",
                "operate_time": "2025-01-01T10:00:00+08:00",
                "contract_termination_mode": "USER"
            }),
        )
    }

    /// A callback with `resource` encrypted under the APIv3 key, signed
    /// like the fake's answers (the switches apply).
    pub fn callback(
        &self,
        event_id: &str,
        event_type: &str,
        resource: Value,
    ) -> Result<Notification, FakeError> {
        let nonce = "fdasflkja484";
        let aad = "papay";
        let cipher = aes_gcm::Aes256Gcm::new_from_slice(APIV3_KEY.as_bytes())
            .map_err(|_| FakeError::new("APIv3 key"))?;
        let plain = resource.to_string();
        let ct = cipher
            .encrypt(
                aes_gcm::Nonce::from_slice(nonce.as_bytes()),
                Payload {
                    msg: plain.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| FakeError::new("AES-GCM encryption"))?;
        let body = json!({
            "id": event_id, "create_time": "2025-01-01T10:00:00+08:00",
            "resource_type": "encrypt-resource", "event_type": event_type, "summary": "contract",
            "resource": {"original_type": "papay", "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": B64.encode(ct), "associated_data": aad, "nonce": nonce}
        })
        .to_string();
        let headers: BTreeMap<String, String> = self
            .state
            .signed_headers(body.as_bytes(), Some(PLATFORM_SERIAL))?
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        Ok(Notification {
            headers,
            body: body.into_bytes(),
        })
    }

    // ---- inspection ---------------------------------------------------------

    /// Every request received, in order (`METHOD /path?query`).
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        lock(&self.state.requests).clone()
    }

    pub fn request_count(&self) -> usize {
        lock(&self.state.requests).len()
    }

    /// How many requests were refused (bad authorization).
    pub fn rejected_count(&self) -> usize {
        lock(&self.state.requests)
            .iter()
            .filter(|r| !r.verified)
            .count()
    }

    /// `METHOD /path?query` of the verified requests that were served, in
    /// order.
    pub fn verified_paths(&self) -> Vec<String> {
        lock(&self.state.requests)
            .iter()
            .filter(|r| r.verified && r.refusal.is_none())
            .map(|r| r.operation.clone())
            .collect()
    }

    /// The body of the last pre-sign request that parsed as JSON.
    pub fn last_presign(&self) -> Option<serde_json::Value> {
        lock(&self.state.last_presign).clone()
    }

    /// The phone number the last pre-sign carried, decrypted.
    pub fn decrypted_phone(&self) -> Option<String> {
        lock(&self.state.decrypted_phone).clone()
    }

    /// The contract's `(state, contract_id)` by out contract code.
    pub fn contract(&self, code: &str) -> Option<(String, String)> {
        lock(&self.state.contracts)
            .get(code)
            .map(|c| (c.state.clone(), c.contract_id.clone()))
    }
}
