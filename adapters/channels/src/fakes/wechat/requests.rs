//! How the fake checks and answers each request: the `Authorization`
//! check, the routes, and the answer (signed, tampered or stale as the
//! switches say).

use super::*;

/// Parses `WECHATPAY2-SHA256-RSA2048 k="v",...`.
fn auth_params(h: &str) -> Option<HashMap<String, String>> {
    let rest = h.strip_prefix("WECHATPAY2-SHA256-RSA2048 ")?;
    let mut out = HashMap::new();
    for part in rest.split(',') {
        let (k, v) = part.split_once('=')?;
        out.insert(
            k.trim().to_owned(),
            v.trim().strip_prefix('"')?.strip_suffix('"')?.to_owned(),
        );
    }
    Some(out)
}

pub(super) struct Answer {
    status: u16,
    body: String,
    /// Whether WeChat Pay can sign it (it knows the merchant).
    signed: bool,
}

impl Answer {
    fn json(status: u16, body: Value) -> Answer {
        Answer {
            status,
            body: body.to_string(),
            signed: true,
        }
    }
}

/// Why an `Authorization` was refused.
struct AuthRefusal {
    /// Whether the merchant id is the fake's own (its answer is signed).
    known_merchant: bool,
    field: &'static str,
    why: &'static str,
}

impl AuthRefusal {
    fn answer(&self) -> Answer {
        Answer {
            signed: self.known_merchant,
            ..Answer::json(
                401,
                json!({"code": "SIGN_ERROR", "message": "signature verification failed",
                    "detail": {"location": "authorization", "field": self.field,
                        "detail": {"issue": self.why}}}),
            )
        }
    }
}

impl State {
    fn record(&self, operation: &str, refusal: Option<&str>) {
        lock(&self.requests).push(ReceivedRequest {
            operation: operation.to_owned(),
            verified: refusal.is_none(),
            refusal: refusal.map(str::to_owned),
        });
    }

    fn check(
        &self,
        method: &str,
        path_and_query: &str,
        auth: Option<&str>,
        body: &[u8],
    ) -> Result<(), AuthRefusal> {
        let refuse = |known_merchant, field, why| AuthRefusal {
            known_merchant,
            field,
            why,
        };
        let p = auth_params(auth.ok_or(refuse(false, "authorization", "no Authorization"))?)
            .ok_or(refuse(false, "authorization", "bad Authorization"))?;
        if p.get("mchid").map(String::as_str) != Some(MCHID) {
            return Err(refuse(false, "mchid", "wrong mchid"));
        }
        if p.get("serial_no").map(String::as_str) != Some(MERCHANT_SERIAL) {
            return Err(refuse(true, "serial_no", "wrong serial_no"));
        }
        let ts: i64 = p
            .get("timestamp")
            .ok_or(refuse(true, "timestamp", "no timestamp"))?
            .parse()
            .map_err(|_| refuse(true, "timestamp", "bad timestamp"))?;
        if (ts - now_unix()).abs() > 300 {
            return Err(refuse(true, "timestamp", "stale timestamp"));
        }
        let nonce = p
            .get("nonce_str")
            .ok_or(refuse(true, "nonce_str", "no nonce"))?;
        if nonce.len() < 16 {
            return Err(refuse(true, "nonce_str", "short nonce"));
        }
        let mut msg = format!("{method}\n{path_and_query}\n{ts}\n{nonce}\n").into_bytes();
        msg.extend_from_slice(body);
        msg.push(b'\n');
        let key = lock(&self.merchant_public).clone();
        let signature = p
            .get("signature")
            .ok_or(refuse(true, "signature", "no signature"))?;
        if !rsa_verify(&key, &msg, signature) {
            return Err(refuse(true, "signature", "bad signature"));
        }
        Ok(())
    }

    pub(super) fn respond(&self, answer: Answer, request_serial: Option<&str>) -> poem::Response {
        let headers = if answer.signed {
            match self.signed_headers(answer.body.as_bytes(), request_serial) {
                Ok(h) => h,
                Err(e) => {
                    return poem::Response::builder()
                        .status(poem::http::StatusCode::INTERNAL_SERVER_ERROR)
                        .body(e.to_string())
                }
            }
        } else {
            Vec::new()
        };
        let mut body = answer.body;
        if self.switches.tamper.load(Ordering::SeqCst) {
            body = body
                .replace("NOT_SIGNED", "SIGNED")
                .replace("redirect_url\":\"https://", "redirect_url\":\"http://");
        }
        let status = poem::http::StatusCode::from_u16(answer.status)
            .unwrap_or(poem::http::StatusCode::INTERNAL_SERVER_ERROR);
        let mut b = poem::Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(k, v);
        }
        if !body.is_empty() {
            b = b.content_type("application/json");
        }
        b.body(body)
    }

    pub(super) fn handle(
        &self,
        method: &str,
        path_and_query: &str,
        auth: Option<&str>,
        serial: Option<&str>,
        body: &[u8],
    ) -> Answer {
        let operation = format!("{method} {path_and_query}");
        if self.switches.down.load(Ordering::SeqCst) {
            self.record(&operation, Some("gateway down (503)"));
            return Answer::json(
                503,
                json!({"code": "SYSTEM_ERROR", "message": "service unavailable"}),
            );
        }
        if let Err(refusal) = self.check(method, path_and_query, auth, body) {
            self.record(&operation, Some(refusal.why));
            return refusal.answer();
        }
        let is_papay = path_and_query.starts_with("/v3/papay/");
        if is_papay && self.switches.papay_disabled.load(Ordering::SeqCst) {
            // Verified, then refused for the account's permissions.
            lock(&self.requests).push(ReceivedRequest {
                operation: operation.clone(),
                verified: true,
                refusal: Some("papay not enabled (403 NO_AUTH)".into()),
            });
            return Answer::json(
                403,
                json!({"code": "NO_AUTH", "message": "the merchant has no permission for papay"}),
            );
        }
        if method == "POST"
            && path_and_query == PRESIGN_PATH
            && self
                .switches
                .fail_presigns
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            // Verified, then failed on purpose.
            lock(&self.requests).push(ReceivedRequest {
                operation: operation.clone(),
                verified: true,
                refusal: Some("pre-sign failure injected (503)".into()),
            });
            return Answer::json(
                503,
                json!({"code": "SYSTEM_ERROR", "message": "try again later"}),
            );
        }
        self.record(&operation, None);
        let param_error = |m: &str| Answer::json(400, json!({"code": "PARAM_ERROR", "message": m}));
        let prefix = format!("/v3/papay/sign/contracts/plan-id/{PLAN_ID}/out-contract-code/");
        if method == "POST" && path_and_query == PRESIGN_PATH {
            let Ok(req) = serde_json::from_slice::<Value>(body) else {
                return param_error("body is not JSON");
            };
            *lock(&self.last_presign) = Some(req.clone());
            if req["appid"] != APPID {
                return Answer::json(
                    400,
                    json!({"code": "APPID_MCHID_NOT_MATCH",
                        "message": "the appid is not bound to this mchid"}),
                );
            }
            if req["plan_id"] != PLAN_ID || req["contract_notify_url"].as_str().is_none() {
                return param_error("bad");
            }
            if let Some(ct) = req["phone"].as_str() {
                if serial != Some(PLATFORM_SERIAL) {
                    return Answer::json(
                        400,
                        json!({"code": "PARAM_ERROR",
                            "message": "Wechatpay-Serial names no platform certificate in use",
                            "detail": {"location": "header", "field": "Wechatpay-Serial"}}),
                    );
                }
                let plain = B64.decode(ct).ok().and_then(|raw| {
                    let key = test_key(PLATFORM).ok()?;
                    key.private
                        .decrypt(rsa::Oaep::new::<sha1::Sha1>(), &raw)
                        .ok()
                });
                let Some(plain) = plain.and_then(|p| String::from_utf8(p).ok()) else {
                    return param_error("phone does not decrypt");
                };
                *lock(&self.decrypted_phone) = Some(plain);
            }
            // The user's display name: string[1, 32], no character of four
            // UTF-8 bytes. The docs do not say characters or bytes; the
            // fake takes the stricter reading.
            let display = req["contract_display_account"].as_str().unwrap_or_default();
            if display.is_empty()
                || display.len() > 32
                || display.chars().any(|c| c.len_utf8() == 4)
            {
                return param_error("contract_display_account");
            }
            let code = req["out_contract_code"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if code.is_empty()
                || code.len() > 32
                || !code.bytes().all(|b| b.is_ascii_alphanumeric())
            {
                return param_error("out_contract_code");
            }
            if let Some((status, refusal)) = lock(&self.presign_refusal).clone() {
                return Answer::json(
                    status,
                    json!({"code": refusal, "message": "refused by a business rule"}),
                );
            }
            // The merchant's code must be unique, ended contracts included:
            // only a contract never signed may be pre-signed again. (The
            // gateway's own error code for this is not published; the
            // adapter takes any 4xx refusal as the channel's.)
            let mut contracts = lock(&self.contracts);
            if contracts
                .get(&code)
                .is_some_and(|c| c.state != "NOT_SIGNED")
            {
                return Answer::json(
                    400,
                    json!({"code": "INVALID_REQUEST", "message": "out_contract_code has been used"}),
                );
            }
            contracts.insert(
                code.clone(),
                Contract {
                    state: "NOT_SIGNED".into(),
                    contract_id: String::new(),
                },
            );
            drop(contracts);
            let url = format!("https://fake-wechat.invalid/papay/entrust?session=s-{code}");
            return Answer::json(200, json!({ "redirect_url": url }));
        }
        if let Some(rest) = path_and_query.strip_prefix(&prefix) {
            let (code, terminate) = match rest.strip_suffix("/terminate") {
                Some(c) => (c.to_owned(), true),
                None => (rest.to_owned(), false),
            };
            if !terminate && lock(&self.failing_queries).as_deref() == Some(code.as_str()) {
                return Answer::json(
                    503,
                    json!({"code": "SYSTEM_ERROR", "message": "try again later"}),
                );
            }
            let mut contracts = lock(&self.contracts);
            let Some(c) = contracts.get_mut(&code) else {
                return Answer::json(
                    404,
                    json!({"code": "RESOURCE_NOT_EXISTS", "message": "no such contract"}),
                );
            };
            if terminate {
                if method != "POST" {
                    return param_error("method");
                }
                if !matches!(c.state.as_str(), "SIGNED" | "TO_BE_RENEWED") {
                    return Answer::json(
                        400,
                        json!({"code": "CONTRACT_ALREADY_TERMINATED", "message": "x"}),
                    );
                }
                c.state = "TERMINATED".into();
                return Answer {
                    status: 204,
                    body: String::new(),
                    signed: true,
                };
            }
            let mut v = json!({"mchid": MCHID, "appid": APPID, "plan_id": PLAN_ID,
                "out_contract_code": code, "contract_state": c.state,
                "contract_display_account": "张三"});
            if !c.contract_id.is_empty() {
                v["contract_id"] = Value::String(c.contract_id.clone());
            }
            return Answer::json(200, v);
        }
        Answer::json(404, json!({"code": "NOT_FOUND", "message": "no route"}))
    }
}
