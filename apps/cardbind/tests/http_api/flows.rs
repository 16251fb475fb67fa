//! The main flows: OTP, redirect, decline, duplicates, review, BIN lookup,
//! health, channel notifications, consents, audit and erasure.

use super::*;

/// A card unbound while frozen shows the operator's hold (`held_since`,
/// kept from the freeze) beside its `inactive` status, which says why it
/// cannot be bound again; the unfreeze lifts it, and the card binds.
#[tokio::test]
async fn a_card_unbound_while_frozen_shows_the_hold_until_unfrozen() {
    let app = spawn();
    let svc = bearer("merchant", "service");
    let admin = bearer("ops", "admin");
    let resp = app.bind("u-held", "k-held-1", &bind_body(VISA)).await;
    resp.assert_status(StatusCode::CREATED);
    let card = json_of(resp).await;
    assert_eq!(card["status"], "active", "{card}");
    assert!(card.get("held_since").is_none(), "{card}");
    let id = card["id"].as_str().unwrap().to_owned();
    let post = |what: &'static str| {
        app.client
            .post(format!("/v1/admin/users/u-held/cards/{id}/{what}"))
            .header("Authorization", admin.clone())
            .send()
    };
    let frozen = json_of(post("freeze").await).await;
    let since = frozen["held_since"].clone();
    assert!(since.is_string(), "{frozen}");
    let resp = app
        .client
        .delete(format!("/v1/users/u-held/cards/{id}"))
        .header("Authorization", svc.clone())
        .send()
        .await;
    let unbound = json_of(resp).await;
    assert_eq!(
        (&unbound["status"], &unbound["held_since"]),
        (&json!("inactive"), &since),
        "{unbound}"
    );
    let resp = app
        .client
        .get("/v1/users/u-held/cards")
        .header("Authorization", svc.clone())
        .send()
        .await;
    let listed = json_of(resp).await;
    assert_eq!(listed["cards"][0]["held_since"], since, "{listed}");
    assert_error(
        app.bind("u-held", "k-held-2", &bind_body(VISA)).await,
        409,
        "invalid_state_transition",
    )
    .await;
    let lifted = json_of(post("unfreeze").await).await;
    assert_eq!(lifted["status"], "inactive", "{lifted}");
    assert!(lifted.get("held_since").is_none(), "{lifted}");
    let resp = app.bind("u-held", "k-held-3", &bind_body(VISA)).await;
    resp.assert_status(StatusCode::CREATED);
    assert!(json_of(resp).await.get("held_since").is_none());
}

#[tokio::test]
async fn otp_flow_default_unbind_and_freeze() {
    let app = spawn();
    let svc = bearer("merchant", "service");
    let resp = app.bind("u-flow", "k-otp", &bind_body(MC_OTP)).await;
    resp.assert_status(StatusCode::CREATED);
    let card = json_of(resp).await;
    assert_eq!(card["status"], "pending_verification");
    assert_eq!(card["next_action"]["type"], "otp");
    // The window's end: 15 minutes (the default policy) after the bind.
    let at = |v: &Value| {
        time::OffsetDateTime::parse(
            v.as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    assert_eq!(
        at(&card["next_action"]["expires_at"]) - at(&card["created_at"]),
        time::Duration::minutes(15),
        "{card}"
    );
    assert_eq!(card["brand"], "mastercard");
    assert_eq!(
        (card["bin"].as_str(), card["last4"].as_str()),
        (Some("555555"), Some("4444"))
    );
    let text = card.to_string();
    assert!(
        !text.contains(MC_OTP)
            && !text.contains("13800138000")
            && !text.contains("11010519491231002X"),
        "{text}"
    );
    let id = card["id"].as_str().unwrap().to_owned();

    let verify = |otp: &'static str| {
        app.client
            .post(format!("/v1/users/u-flow/cards/{id}/verify"))
            .header("Authorization", svc.clone())
            .content_type("application/json")
            .body(json!({ "otp": otp }).to_string())
            .send()
    };
    let v = assert_error(verify("000000").await, 422, "invalid_otp").await;
    assert_eq!(v["error"]["field"], "otp");
    let ok = verify("123456").await;
    ok.assert_status_is_ok();
    let active = json_of(ok).await;
    assert_eq!(active["status"], "active");
    assert_eq!(active["is_default"], true);
    assert!(active.get("next_action").is_none());
    assert_error(verify("123456").await, 409, "invalid_state_transition").await;

    // a second card, made default
    let resp = app.bind("u-flow", "k-second", &bind_body(VISA)).await;
    let second = json_of(resp).await;
    let id2 = second["id"].as_str().unwrap().to_owned();
    assert_eq!(second["is_default"], false);
    let resp = app
        .client
        .put(format!("/v1/users/u-flow/cards/{id2}/default"))
        .header("Authorization", svc.clone())
        .send()
        .await;
    resp.assert_status_is_ok();
    assert_eq!(json_of(resp).await["is_default"], true);

    // list with paging
    let resp = app
        .client
        .get("/v1/users/u-flow/cards?limit=1")
        .header("Authorization", svc.clone())
        .send()
        .await;
    let page = json_of(resp).await;
    assert_eq!(page["cards"].as_array().unwrap().len(), 1);
    let next = page["next_after"].as_str().unwrap().to_owned();
    let resp = app
        .client
        .get(format!("/v1/users/u-flow/cards?limit=1&after={next}"))
        .header("Authorization", svc.clone())
        .send()
        .await;
    assert_eq!(json_of(resp).await["cards"].as_array().unwrap().len(), 1);

    // freeze / unfreeze by an operator
    let admin = bearer("ops", "admin");
    let resp = app
        .client
        .post(format!("/v1/admin/users/u-flow/cards/{id}/freeze"))
        .header("Authorization", admin.clone())
        .send()
        .await;
    resp.assert_status_is_ok();
    assert_eq!(json_of(resp).await["status"], "frozen");
    let resp = app
        .client
        .post(format!("/v1/admin/users/u-flow/cards/{id}/freeze"))
        .header("Authorization", admin.clone())
        .send()
        .await;
    assert_error(resp, 409, "invalid_state_transition").await;
    let get = |id: String| {
        app.client
            .get(format!("/v1/users/u-flow/cards/{id}"))
            .header("Authorization", svc.clone())
            .send()
    };
    let frozen = json_of(get(id.clone()).await).await;
    assert_eq!(frozen["status"], "frozen");
    assert_eq!(frozen["held_since"], frozen["updated_at"], "{frozen}");
    let resp = app
        .client
        .post(format!("/v1/admin/users/u-flow/cards/{id}/unfreeze"))
        .header("Authorization", admin.clone())
        .send()
        .await;
    let unfrozen = json_of(resp).await;
    assert_eq!(unfrozen["status"], "active");
    assert!(unfrozen.get("held_since").is_none(), "{unfrozen}");

    // unbind the default: twice is harmless
    for _ in 0..2 {
        let resp = app
            .client
            .delete(format!("/v1/users/u-flow/cards/{id2}"))
            .header("Authorization", svc.clone())
            .send()
            .await;
        resp.assert_status_is_ok();
        let c = json_of(resp).await;
        assert_eq!(
            (c["status"].as_str(), c["is_default"].as_bool()),
            (Some("inactive"), Some(false))
        );
    }
    let resp = app
        .client
        .get(format!("/v1/users/u-flow/cards/{id}"))
        .header("Authorization", svc.clone())
        .send()
        .await;
    assert_eq!(
        json_of(resp).await["is_default"],
        true,
        "the other active card is promoted"
    );
    let resp = app
        .client
        .get("/v1/users/u-flow/cards/no-such-card")
        .header("Authorization", svc)
        .send()
        .await;
    assert_error(resp, 404, "not_found").await;
}

#[tokio::test]
async fn redirect_decline_and_duplicate() {
    let app = spawn();
    let resp = app.bind("u-r", "k-r", &bind_body(AMEX_REDIRECT)).await;
    resp.assert_status(StatusCode::CREATED);
    let card = json_of(resp).await;
    assert_eq!(card["next_action"]["type"], "redirect");
    assert!(card["next_action"]["url"]
        .as_str()
        .unwrap()
        .starts_with("https://"));

    let v = assert_error(
        app.bind("u-r", "k-d", &bind_body(MC_DECLINE)).await,
        422,
        "channel_rejected",
    )
    .await;
    assert!(v["error"]["message"].as_str().unwrap().contains("declined"));

    assert_error(
        app.bind("u-r", "k-dup", &bind_body(AMEX_REDIRECT)).await,
        409,
        "card_already_bound",
    )
    .await;
}

#[tokio::test]
async fn unreachable_channel_goes_to_review_with_202() {
    let mut opts = Options::default();
    opts.mock.mode = cardbind_channels::MockMode::Flaky;
    opts.mock.flaky_every = 1;
    opts.mock.card_modes.clear();
    let app = spawn_with(opts);
    let resp = app.bind("u-rev", "k-rev", &bind_body(VISA)).await;
    resp.assert_status(StatusCode::ACCEPTED);
    let card = json_of(resp).await;
    assert_eq!(card["status"], "pending_review");
    let id = card["id"].as_str().unwrap().to_owned();

    let admin = bearer("ops", "admin");
    let resp = app
        .client
        .get("/v1/admin/reviews")
        .header("Authorization", admin.clone())
        .send()
        .await;
    let list = json_of(resp).await;
    assert_eq!(list["cards"][0]["id"], id.as_str());
    assert_error(
        app.client
            .get("/v1/admin/reviews")
            .header("Authorization", bearer("m", "service"))
            .send()
            .await,
        403,
        "forbidden",
    )
    .await;

    let approve = |body: Value| {
        app.client
            .post(format!("/v1/admin/reviews/{id}/approve"))
            .header("Authorization", admin.clone())
            .content_type("application/json")
            .body(body.to_string())
            .send()
    };
    assert_error(
        approve(json!({"channel_ref": "r", "x": 1})).await,
        400,
        "invalid_request",
    )
    .await;
    let resp = approve(json!({"channel_ref": "manual-123"})).await;
    resp.assert_status_is_ok();
    assert_eq!(json_of(resp).await["status"], "active");
    assert_error(approve(json!({})).await, 409, "invalid_state_transition").await;
    let resp = app
        .client
        .post("/v1/admin/reviews/nope/reject")
        .header("Authorization", admin)
        .send()
        .await;
    assert_error(resp, 404, "not_found").await;
}

#[tokio::test]
async fn bin_lookup() {
    let app = spawn();
    let get = |bin: &str| {
        app.client
            .get(format!("/v1/bins/{bin}"))
            .header("Authorization", bearer("m", "service"))
            .send()
    };
    let resp = get("411111").await;
    resp.assert_status_is_ok();
    assert_eq!(
        json_of(resp).await,
        json!({"bin": "411111", "brand": "visa"})
    );
    assert_eq!(json_of(get("62220200").await).await["brand"], "unionpay");
    let v = assert_error(get("000000").await, 404, "not_found").await;
    assert_eq!(v["error"]["field"], "bin");
    assert_error(get("41ab11").await, 400, "invalid_request").await;
    assert_error(get("4111111111").await, 400, "invalid_request").await;
    let resp = app
        .client
        .get("/v1/bins/411111")
        .header("Authorization", bearer("aud", "auditor"))
        .send()
        .await;
    assert_error(resp, 403, "forbidden").await;
}

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn();
    app.client
        .get("/healthz")
        .send()
        .await
        .assert_status_is_ok();
    app.client.get("/readyz").send().await.assert_status_is_ok();
    app.store.set_unavailable(true);
    // An answer is given again for a second (probes share one check).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_error(
        app.client.get("/readyz").send().await,
        503,
        "storage_unavailable",
    )
    .await;
    app.client
        .get("/healthz")
        .send()
        .await
        .assert_status_is_ok();
}

/// The lines logged while one request runs, as JSON values.
#[derive(Clone, Default)]
struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    fn lines(&self) -> Vec<Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

#[tokio::test]
async fn the_cause_of_a_503_is_logged_under_the_callers_request_id() {
    causes_are_logged_under_the_request_id(tracing::Level::INFO).await;
}

#[tokio::test]
async fn the_cause_keeps_its_request_id_when_the_log_shows_only_warnings() {
    causes_are_logged_under_the_request_id(tracing::Level::WARN).await;
}

async fn causes_are_logged_under_the_request_id(level: tracing::Level) {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(level)
        .with_writer(move || writer.clone())
        .finish();
    // This test's thread only (a current-thread runtime: the service runs
    // on it too).
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = spawn();
    app.store.set_unavailable(true);
    let list = app
        .client
        .get("/v1/users/u-cause/cards")
        .header("Authorization", bearer("merchant", "service"))
        .header("X-Request-Id", "client-req-7")
        .send()
        .await;
    assert_error(list, 503, "storage_unavailable").await;
    let bind = app.bind("u-cause", "k-cause", &bind_body(VISA)).await;
    let bind_id = bind.0.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_error(bind, 503, "storage_unavailable").await;

    let lines = logs.lines();
    for id in ["client-req-7", bind_id.as_str()] {
        let mine: Vec<&Value> = lines
            .iter()
            .filter(|l| l["span"]["request_id"] == id || l["fields"]["request_id"] == id)
            .collect();
        // Whichever layer met the outage (the idempotency claim of a
        // bind, a use case's read) logs its cause inside the request.
        let cause = mine
            .iter()
            .find(|l| {
                l["fields"]["cause"]
                    .as_str()
                    .is_some_and(|c| c.contains("switched off"))
            })
            .unwrap_or_else(|| panic!("no cause under {id}: {lines:#?}"));
        assert!(!cause.to_string().contains(VISA), "{cause}");
        assert!(
            level < tracing::Level::INFO
                || mine
                    .iter()
                    .any(|l| l["fields"]["message"] == "request" && l["fields"]["status"] == 503),
            "and the access line: {mine:#?}"
        );
    }
    // Every line naming a cause is inside one of the two requests.
    assert!(
        lines
            .iter()
            .filter(|l| l["fields"]["cause"].is_string())
            .all(|l| ["client-req-7", bind_id.as_str()]
                .iter()
                .any(|id| { l["span"]["request_id"] == *id || l["fields"]["request_id"] == *id })),
        "{lines:#?}"
    );
    // A 5xx with no cause of its own names none (no placeholder).
    assert!(
        lines.iter().all(|l| l["fields"]["cause"] != "-"),
        "{lines:#?}"
    );
}

#[tokio::test]
async fn channel_notifications() {
    let app = spawn();
    let resp = app.bind("u-n", "k-n", &bind_body(AMEX_REDIRECT)).await;
    let id = json_of(resp).await["id"].as_str().unwrap().to_owned();
    let secret = cardbind_channels::MockConfig::default().notification_secret;
    let n = cardbind_channels::mock::mock_notification(&secret, "evt-1", &id, "signed", "agr-1");

    let send = |headers: Vec<(String, String)>, body: Vec<u8>| {
        let mut req = app.client.post("/v1/channels/mock/notify");
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.body(body).send()
    };
    let mut forged = n.headers.clone();
    forged.insert("x-mock-signature".into(), "00".repeat(32));
    assert_error(
        send(forged.into_iter().collect(), n.body.clone()).await,
        401,
        "invalid_signature",
    )
    .await;

    // Signed, but sent ten minutes ago: refused as a replay, and the
    // message says the time may be why (a clock off), not only the
    // signature.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let stale = cardbind_channels::mock::mock_notification_sent_at(
        &secret,
        "evt-stale",
        &id,
        "signed",
        "agr-1",
        now - 600,
    );
    let v = assert_error(
        send(stale.headers.into_iter().collect(), stale.body).await,
        401,
        "invalid_signature",
    )
    .await;
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("timestamp"), "{message}");

    let ok = send(n.headers.clone().into_iter().collect(), n.body.clone()).await;
    assert_eq!(ok.0.status(), 200);
    // The acknowledgement is what the spec declares for its media type (a
    // JSON object of strings): a generated client can read it.
    let spec = json_of(app.client.get("/openapi.json").send().await).await;
    let declared = &spec["paths"]["/v1/channels/{channel}/notify"]["post"]["responses"]["200"]
        ["content"]["application/json"]["schema"];
    assert_eq!(declared["type"], "object", "{declared}");
    assert_eq!(
        declared["additionalProperties"]["type"], "string",
        "{declared}"
    );
    ok.assert_content_type("application/json");
    let ack = json_of(ok).await;
    let fields = ack.as_object().unwrap_or_else(|| panic!("{ack}"));
    assert!(
        !fields.is_empty() && fields.values().all(Value::is_string),
        "{ack}"
    );
    let resp = app
        .client
        .get(format!("/v1/users/u-n/cards/{id}"))
        .header("Authorization", bearer("m", "service"))
        .send()
        .await;
    assert_eq!(json_of(resp).await["status"], "active");
    // the same notification again is acknowledged and changes nothing
    let again = send(n.headers.clone().into_iter().collect(), n.body.clone()).await;
    assert!(again.0.status().is_success());

    let resp = app
        .client
        .post("/v1/channels/paypal/notify")
        .content_type("application/json")
        .body("{}")
        .send()
        .await;
    assert_error(resp, 404, "not_found").await;
}

#[tokio::test]
async fn consents_audit_and_erasure() {
    let mut opts = Options::default();
    opts.http.trust_forwarded_for = true;
    let app = spawn_with(opts);
    let mut body = bind_body(VISA);
    body["consent"] = json!({"text_version": "v2", "text_sha256": SHA});
    let resp = app
        .client
        .post("/v1/users/u-c/cards")
        .header("Authorization", bearer("merchant", "service"))
        .header("Idempotency-Key", "k-c")
        // A forged first entry, then the address our proxy appended.
        .header("X-Forwarded-For", "198.51.100.99, 203.0.113.7")
        .header("User-Agent", "TestAgent/1.0")
        .content_type("application/json")
        .body(body.to_string())
        .send()
        .await;
    resp.assert_status(StatusCode::CREATED);
    let card_id = json_of(resp).await["id"].as_str().unwrap().to_owned();

    let resp = app
        .client
        .get("/v1/consents?user_id=u-c")
        .header("Authorization", bearer("aud", "auditor"))
        .send()
        .await;
    resp.assert_status_is_ok();
    let consents = json_of(resp).await;
    let c = &consents["consents"][0];
    assert_eq!(
        (c["ip"].as_str(), c["user_agent"].as_str()),
        (Some("203.0.113.7"), Some("TestAgent/1.0"))
    );
    assert_eq!(
        (c["text_version"].as_str(), c["card_id"].as_str()),
        (Some("v2"), Some(card_id.as_str()))
    );

    let resp = app
        .client
        .get("/v1/audit/events?user_id=u-c&limit=50")
        .header("Authorization", bearer("aud", "auditor"))
        .send()
        .await;
    resp.assert_status_is_ok();
    let events = json_of(resp).await;
    let actions: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"binding.create"), "{actions:?}");
    assert!(!events.to_string().contains(VISA));
    let resp = app
        .client
        .get("/v1/audit/events?since=yesterday")
        .header("Authorization", bearer("aud", "auditor"))
        .send()
        .await;
    let v = assert_error(resp, 400, "invalid_request").await;
    assert_eq!(v["error"]["field"], "since");

    let resp = app
        .client
        .post("/v1/admin/users/u-c/erase")
        .header("Authorization", bearer("ops", "admin"))
        .send()
        .await;
    resp.assert_status_is_ok();
    assert_eq!(
        json_of(resp).await,
        json!({"user_id": "u-c", "unbound_cards": 1, "key_destroyed": true})
    );
    // Erasing again finds nothing left to unbind or destroy.
    let resp = app
        .client
        .post("/v1/admin/users/u-c/erase")
        .header("Authorization", bearer("ops", "admin"))
        .send()
        .await;
    resp.assert_status_is_ok();
    assert_eq!(
        json_of(resp).await,
        json!({"user_id": "u-c", "unbound_cards": 0, "key_destroyed": false})
    );
    let resp = app
        .client
        .post("/v1/admin/users/u-c/erase")
        .header("Authorization", bearer("aud", "auditor"))
        .send()
        .await;
    assert_error(resp, 403, "forbidden").await;
}

/// A notification's id is the channel's to choose: a card number in it
/// (here in a notification about a card the service does not know, which
/// is logged) is masked in the log line, as free text is (before, it was
/// logged as sent).
#[tokio::test]
async fn a_card_number_in_a_notification_id_is_masked_in_the_log() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = spawn();
    let secret = cardbind_channels::MockConfig::default().notification_secret;
    let unknown = uuid::Uuid::now_v7().to_string();
    let n =
        cardbind_channels::mock::mock_notification(&secret, VISA, &unknown, "terminated", "agr-9");
    let mut req = app.client.post("/v1/channels/mock/notify");
    for (k, v) in n.headers.clone() {
        req = req.header(k, v);
    }
    let resp = req.body(n.body.clone()).send().await;
    assert_eq!(resp.0.status(), 200);
    let lines = logs.lines();
    let ignored = lines
        .iter()
        .find(|l| l["fields"]["message"] == "notification for an unknown card ignored")
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert_eq!(ignored["fields"]["event"], "*".repeat(16), "{ignored}");
    for l in &lines {
        assert!(!l.to_string().contains(VISA), "{l}");
    }
}

/// A notification whose signature header comes twice is not taken, in
/// either order (before, the last copy counted: a bogus first copy was let
/// through); one sent with no `Content-Type` is refused naming the header,
/// not as a body that must be JSON (the endpoint takes any type).
#[tokio::test]
async fn a_notification_with_a_repeated_signature_or_no_content_type_is_refused() {
    let app = spawn();
    let resp = app.bind("u-rs", "k-rs", &bind_body(AMEX_REDIRECT)).await;
    let id = json_of(resp).await["id"].as_str().unwrap().to_owned();
    let secret = cardbind_channels::MockConfig::default().notification_secret;
    let n = cardbind_channels::mock::mock_notification(&secret, "evt-rs", &id, "signed", "agr-rs");
    let valid = n.headers["x-mock-signature"].clone();
    let bogus = "00".repeat(32);
    for pair in [[&bogus, &valid], [&valid, &bogus]] {
        let mut req = app.client.post("/v1/channels/mock/notify");
        for (k, v) in n.headers.iter().filter(|(k, _)| *k != "x-mock-signature") {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = req
            .header("x-mock-signature", pair[0].as_str())
            .header("x-mock-signature", pair[1].as_str())
            .body(n.body.clone())
            .send()
            .await;
        assert_error(resp, 401, "invalid_signature").await;
    }
    let mut req = app.client.post("/v1/channels/mock/notify");
    for (k, v) in n.headers.iter().filter(|(k, _)| *k != "content-type") {
        req = req.header(k.as_str(), v.as_str());
    }
    let resp = req.body(n.body.clone()).send().await;
    let v = json_of(resp).await;
    assert_eq!(v["error"]["code"], "invalid_request", "{v}");
    assert_eq!(v["error"]["field"], "Content-Type", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("any type is taken")),
        "{v}"
    );
    // Sent whole, once: taken.
    let mut req = app.client.post("/v1/channels/mock/notify");
    for (k, v) in n.headers.clone() {
        req = req.header(k, v);
    }
    assert_eq!(req.body(n.body.clone()).send().await.0.status(), 200);
}
