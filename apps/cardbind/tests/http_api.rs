//! The HTTP edge, in process: envelopes, validation, auth, idempotency,
//! limits, headers, metrics and the main flows.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;

use async_trait::async_trait;
use cardbind::http::sign_request;
use cardbind_domain::BindingId;
use cardbind_ports::store::{ReviewEntry, ReviewQueue};
use cardbind_ports::StoreError;
use poem::http::StatusCode;
use serde_json::{json, Value};
use support::*;

const VISA: &str = "4111111111111111";
const VISA2: &str = "4012888888881881";
const MC_OTP: &str = "5555555555554444";
const AMEX_REDIRECT: &str = "378282246310005";
const MC_DECLINE: &str = "5105105105105100";

// ---- envelopes for malformed requests ------------------------------------------

#[tokio::test]
async fn malformed_json_is_an_invalid_request_envelope() {
    let app = spawn();
    let resp = app
        .client
        .post("/v1/users/u1/cards")
        .header("Authorization", bearer("m", "service"))
        .header("Idempotency-Key", "k-malformed")
        .content_type("application/json")
        .body("{\"card_number\": ")
        .send()
        .await;
    assert_error(resp, 400, "invalid_request").await;
}

#[tokio::test]
async fn wrong_types_name_the_field_without_echoing_the_value() {
    let app = spawn();
    let mut body = bind_body(VISA);
    body["expiry_month"] = json!("4111111111111111");
    let v = assert_error(
        app.bind("u1", "k-types", &body).await,
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(v["error"]["field"], "expiry_month");
    assert!(!v.to_string().contains("4111111111111111"), "{v}");

    let mut body = bind_body(VISA);
    body["card_number"] = json!(4111111111111111u64);
    let v = assert_error(
        app.bind("u1", "k-types2", &body).await,
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(v["error"]["field"], "card_number");
    assert!(!v.to_string().contains("4111111111111111"), "{v}");
}

#[tokio::test]
async fn unknown_and_missing_fields_are_refused_by_name() {
    let app = spawn();
    let mut body = bind_body(VISA);
    body["pin"] = json!("1234");
    let v = assert_error(
        app.bind("u1", "k-unknown", &body).await,
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(v["error"]["field"], "pin");

    let mut body = bind_body(VISA);
    body["consent"]["extra"] = json!(true);
    let v = assert_error(
        app.bind("u1", "k-unknown2", &body).await,
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(v["error"]["field"], "consent.extra");

    let mut body = bind_body(VISA);
    body.as_object_mut().unwrap().remove("holder_name");
    let v = assert_error(
        app.bind("u1", "k-missing", &body).await,
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(v["error"]["field"], "holder_name");

    let mut body = bind_body(VISA);
    body["consent"]
        .as_object_mut()
        .unwrap()
        .remove("text_sha256");
    let v = assert_error(
        app.bind("u1", "k-missing2", &body).await,
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(v["error"]["field"], "consent.text_sha256");
}

#[tokio::test]
async fn huge_bodies_are_413_and_deep_json_is_400() {
    let app = spawn();
    let mut body = bind_body(VISA);
    body["holder_name"] = json!("a".repeat(70 * 1024));
    assert_error(
        app.bind("u1", "k-huge", &body).await,
        413,
        "payload_too_large",
    )
    .await;

    let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
    let resp = app
        .client
        .post("/v1/users/u1/cards")
        .header("Authorization", bearer("m", "service"))
        .header("Idempotency-Key", "k-deep")
        .content_type("application/json")
        .body(deep)
        .send()
        .await;
    let v = assert_error(resp, 400, "invalid_request").await;
    assert!(v["error"]["message"].as_str().unwrap().contains("nested"));
}

#[tokio::test]
async fn wrong_content_type_and_bad_query_parameters_are_400() {
    let app = spawn();
    let resp = app
        .client
        .post("/v1/users/u1/cards")
        .header("Authorization", bearer("m", "service"))
        .header("Idempotency-Key", "k-ct")
        .content_type("text/plain")
        .body(bind_body(VISA).to_string())
        .send()
        .await;
    assert_error(resp, 400, "invalid_request").await;

    let resp = app
        .client
        .get("/v1/users/u1/cards?limit=abc")
        .header("Authorization", bearer("m", "service"))
        .send()
        .await;
    let v = assert_error(resp, 400, "invalid_request").await;
    assert_eq!(v["error"]["field"], "limit");
    let resp = app
        .client
        .get("/v1/users/u1/cards?limit=1000")
        .header("Authorization", bearer("m", "service"))
        .send()
        .await;
    assert_error(resp, 400, "invalid_request").await;
}

#[tokio::test]
async fn unknown_routes_and_methods_use_the_envelope() {
    let app = spawn();
    assert_error(app.client.get("/nope").send().await, 404, "not_found").await;
    let resp = app
        .client
        .patch("/v1/users/u1/cards")
        .header("Authorization", bearer("m", "service"))
        .send()
        .await;
    assert_error(resp, 405, "invalid_request").await;
}

/// The `Allow` methods the spec gives a path: its operations, `HEAD` with
/// `GET`, and `OPTIONS`.
fn spec_allow(ops: &Value) -> Vec<String> {
    let mut m: Vec<String> = ops
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.to_ascii_uppercase())
        .collect();
    if m.iter().any(|x| x == "GET") {
        m.push("HEAD".into());
    }
    m.push("OPTIONS".into());
    m.sort();
    m
}

fn allow_of(resp: &poem::test::TestResponse) -> Vec<String> {
    let mut m: Vec<String> = resp
        .0
        .headers()
        .get("allow")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    m.sort();
    m
}

#[tokio::test]
async fn every_route_answers_options_and_405_with_its_methods() {
    use poem::http::Method;
    let app = spawn();
    let spec: Value = serde_json::from_str(&cardbind::http::api_spec_json()).unwrap();
    let mut checked = 0;
    for (template, ops) in spec["paths"].as_object().unwrap() {
        let path = template
            .replace("{user_id}", "u1")
            .replace("{card_id}", "c1")
            .replace("{bin}", "411111")
            .replace("{channel}", "mock");
        let want = spec_allow(ops);

        // OPTIONS needs no credentials and names exactly the spec's methods.
        let resp = app.client.request(Method::OPTIONS, &path).send().await;
        assert_eq!(resp.0.status(), StatusCode::NO_CONTENT, "OPTIONS {path}");
        assert_eq!(allow_of(&resp), want, "OPTIONS {path}");

        // Every method the path does not serve: 405, the envelope, Allow.
        for method in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
            Method::TRACE,
        ] {
            if want.contains(&method.to_string()) {
                continue;
            }
            let resp = app
                .client
                .request(method.clone(), &path)
                .header("Authorization", bearer("m", "service"))
                .send()
                .await;
            assert_eq!(allow_of(&resp), want, "{method} {path}");
            assert_error(resp, 405, "invalid_request").await;
            checked += 1;
        }
    }
    assert!(checked > 40, "{checked}");
    // The spec and its page are routes too.
    let resp = app.client.post("/openapi.json").send().await;
    assert_eq!(allow_of(&resp), ["GET", "HEAD", "OPTIONS"]);
    assert_error(resp, 405, "invalid_request").await;
    // An unknown path has no methods: 404.
    let resp = app.client.request(Method::OPTIONS, "/nope").send().await;
    assert_eq!(resp.0.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn malformed_parameters_keep_their_codes_and_names() {
    let app = spawn();
    let get = |path: String, role: &'static str| {
        let client = &app.client;
        async move {
            client
                .get(path)
                .header("Authorization", bearer("m", role))
                .send()
                .await
        }
    };
    let cases: Vec<(String, &str, u16, &str, &str)> = vec![
        (
            "/v1/users/bad*user/cards".into(),
            "service",
            400,
            "invalid_user_id",
            "user_id",
        ),
        (
            "/v1/users/-u/cards/c1".into(),
            "service",
            400,
            "invalid_user_id",
            "user_id",
        ),
        (
            "/v1/users/u1/cards/bad*card".into(),
            "service",
            400,
            "invalid_request",
            "card_id",
        ),
        (
            format!("/v1/users/u1/cards/{}", "c".repeat(65)),
            "service",
            400,
            "invalid_request",
            "card_id",
        ),
        (
            "/v1/users/u1/cards?after=bad*".into(),
            "service",
            400,
            "invalid_request",
            "after",
        ),
        (
            "/v1/consents?user_id=u1&after=bad*".into(),
            "service",
            400,
            "invalid_request",
            "after",
        ),
        (
            "/v1/consents?user_id=bad*".into(),
            "service",
            400,
            "invalid_user_id",
            "user_id",
        ),
        (
            "/v1/bins/41111".into(),
            "service",
            400,
            "invalid_request",
            "bin",
        ),
        (
            "/v1/bins/41111a".into(),
            "service",
            400,
            "invalid_request",
            "bin",
        ),
        (
            "/v1/audit/events?since=yesterday".into(),
            "auditor",
            400,
            "invalid_request",
            "since",
        ),
        (
            "/v1/audit/events?until=2030-02-30T00:00:00Z".into(),
            "auditor",
            400,
            "invalid_request",
            "until",
        ),
        (
            "/v1/audit/events?action=Binding%20Freeze".into(),
            "auditor",
            400,
            "invalid_request",
            "action",
        ),
        (
            "/v1/audit/events?after=-1".into(),
            "auditor",
            400,
            "invalid_request",
            "after",
        ),
        (
            "/v1/audit/events?card_id=bad*".into(),
            "auditor",
            400,
            "invalid_request",
            "card_id",
        ),
    ];
    for (path, role, status, code, field) in cases {
        let v = assert_error(get(path.clone(), role).await, status, code).await;
        assert_eq!(v["error"]["field"], field, "{path}: {v}");
    }
    // In range, the same parameters pass.
    for (path, role) in [
        (
            "/v1/audit/events?since=2030-01-31t12:00:00.5%2B08:00&action=binding.freeze",
            "auditor",
        ),
        ("/v1/consents?user_id=u1", "service"),
        ("/v1/bins/41111111", "service"),
        ("/v1/users/u1:a@b.c/cards?after=c1&limit=100", "service"),
    ] {
        let resp = get(path.to_owned(), role).await;
        assert_eq!(resp.0.status(), StatusCode::OK, "{path}");
    }

    // A channel the service does not know is a missing resource.
    let resp = app
        .client
        .post("/v1/channels/paypal/notify")
        .body("{}")
        .send()
        .await;
    let v = assert_error(resp, 404, "not_found").await;
    assert_eq!(v["error"]["field"], "channel");

    // An OTP that is not 4 to 8 digits is `invalid_otp`, before the card is looked up.
    let resp = app
        .client
        .post("/v1/users/u1/cards/c1/verify")
        .header("Authorization", bearer("m", "service"))
        .content_type("application/json")
        .body(json!({"otp": "12ab"}).to_string())
        .send()
        .await;
    let v = assert_error(resp, 422, "invalid_otp").await;
    assert_eq!(v["error"]["field"], "otp");

    // The consent's IP must be an address; a channel_ref 1 to 128 characters.
    let mut body = bind_body(VISA);
    body["consent"]["ip"] = json!("not-an-ip");
    let v = assert_error(app.bind("u1", "k-ip", &body).await, 400, "invalid_request").await;
    assert_eq!(v["error"]["field"], "consent.ip");
    let mut body = bind_body(VISA2);
    body["consent"]["ip"] = json!("2001:db8::1");
    assert_eq!(
        app.bind("u1", "k-ip6", &body).await.0.status(),
        StatusCode::CREATED
    );
    let resp = app
        .client
        .post("/v1/admin/reviews/c1/approve")
        .header("Authorization", bearer("op", "admin"))
        .content_type("application/json")
        .body(json!({"channel_ref": "长".repeat(129)}).to_string())
        .send()
        .await;
    let v = assert_error(resp, 400, "invalid_request").await;
    assert_eq!(v["error"]["field"], "channel_ref");
    // 128 characters are allowed, however many bytes they take (then the
    // card is looked up: there is none).
    let resp = app
        .client
        .post("/v1/admin/reviews/c1/approve")
        .header("Authorization", bearer("op", "admin"))
        .content_type("application/json")
        .body(json!({"channel_ref": "长".repeat(128)}).to_string())
        .send()
        .await;
    assert_error(resp, 404, "not_found").await;
}

// ---- each invalid field gets its code and field --------------------------------------

#[tokio::test]
async fn each_invalid_field_has_its_code_and_field() {
    let app = spawn();
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "card_number",
            json!("4111111111111112"),
            "invalid_card_number",
            "card_number",
        ),
        (
            "card_number",
            json!("9999999999999995"),
            "unsupported_card_brand",
            "card_number",
        ),
        ("expiry_month", json!(13), "invalid_expiry", "expiry_month"),
        ("expiry_year", json!(2001), "card_expired", "expiry_year"),
        ("cvv", json!("12"), "invalid_cvv", "cvv"),
        (
            "holder_name",
            json!("R2D2!"),
            "invalid_holder_name",
            "holder_name",
        ),
        (
            "id_number",
            json!("110105194912310021"),
            "invalid_id_number",
            "id_number",
        ),
        ("phone", json!("12345"), "invalid_phone", "phone"),
        ("channel", json!("paypal"), "channel_not_enabled", "channel"),
    ];
    for (i, (name, value, code, field)) in cases.into_iter().enumerate() {
        let mut body = bind_body(VISA);
        body[name] = value;
        let resp = app
            .bind(&format!("user-{i}"), &format!("k-field-{i}"), &body)
            .await;
        let v = assert_error(resp, 400, code).await;
        let got = v["error"]["field"].as_str().unwrap_or_default().to_owned();
        assert!(
            got == field || (field.starts_with("expiry") && got.starts_with("expiry")),
            "{name}: {v}"
        );
        assert!(
            !v.to_string().contains("11010519491231002"),
            "no ID number in errors: {v}"
        );
    }
    let mut body = bind_body(VISA);
    body["consent"]["text_sha256"] = json!("not-a-hash");
    let v = assert_error(
        app.bind("user-c", "k-consent", &body).await,
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(v["error"]["field"], "consent");

    let v = assert_error(
        app.bind("bad*user", "k-user", &bind_body(VISA)).await,
        400,
        "invalid_user_id",
    )
    .await;
    assert_eq!(v["error"]["field"], "user_id");
}

// ---- authentication and authorization ----------------------------------------------------

fn hs256(claims: Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn b64(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn bad_tokens_are_refused() {
    let app = spawn();
    let now = system_now_ms() / 1000;
    let good =
        json!({"sub": "m", "role": "service", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 600});
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let none_alg = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&good)
    );
    let rs256_announced = {
        let t = hs256(good.clone(), JWT_SECRET);
        let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
        parts[0] = b64(&json!({"alg": "RS256", "typ": "JWT"}));
        parts.join(".")
    };
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("not a jwt", Some("Bearer abc.def".into())),
        ("basic scheme", Some("Basic bTpw".into())),
        (
            "wrong secret",
            Some(format!(
                "Bearer {}",
                hs256(good.clone(), b"another-secret-entirely")
            )),
        ),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                hs256(with("exp", json!(now - 600)), JWT_SECRET)
            )),
        ),
        (
            "not yet valid",
            Some(format!(
                "Bearer {}",
                hs256(with("nbf", json!(now + 600)), JWT_SECRET)
            )),
        ),
        (
            "wrong audience",
            Some(format!(
                "Bearer {}",
                hs256(with("aud", json!("someone-else")), JWT_SECRET)
            )),
        ),
        (
            "wrong issuer",
            Some(format!(
                "Bearer {}",
                hs256(with("iss", json!("https://evil.test")), JWT_SECRET)
            )),
        ),
        ("alg none", Some(format!("Bearer {none_alg}"))),
        ("alg mismatch", Some(format!("Bearer {rs256_announced}"))),
    ];
    for (name, header) in cases {
        let mut req = app.client.get("/v1/users/u1/cards");
        if let Some(h) = header {
            req = req.header("Authorization", h);
        }
        let resp = req.send().await;
        assert_eq!(resp.0.status(), StatusCode::UNAUTHORIZED, "{name}");
        assert_error(resp, 401, "unauthenticated").await;
    }
    // The same refusals come first on an idempotent bind, too.
    let resp = app
        .client
        .post("/v1/users/u1/cards")
        .header("Idempotency-Key", "k-auth")
        .content_type("application/json")
        .body(bind_body(VISA).to_string())
        .send()
        .await;
    assert_error(resp, 401, "unauthenticated").await;
    let ok = app
        .client
        .get("/v1/users/u1/cards")
        .header(
            "Authorization",
            format!("Bearer {}", hs256(good, JWT_SECRET)),
        )
        .send()
        .await;
    ok.assert_status_is_ok();
}

/// A key pair made for these tests only.
const RS_PRIVATE: &str = include_str!("fixtures/jwt_rs256_test_private.pem");
const RS_PUBLIC: &str = include_str!("fixtures/jwt_rs256_test_public.pem");

#[tokio::test]
async fn rs256_tokens_and_no_algorithm_confusion() {
    let opts = Options {
        jwt: cardbind::state::JwtKey::Rs256Pem(RS_PUBLIC.into()),
        ..Options::default()
    };
    let app = spawn_with(opts);
    let now = system_now_ms() / 1000;
    let claims =
        json!({"sub": "m", "role": "service", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 600});
    let rs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(RS_PRIVATE.as_bytes()).unwrap(),
    )
    .unwrap();
    app.client
        .get("/v1/users/u1/cards")
        .header("Authorization", format!("Bearer {rs}"))
        .send()
        .await
        .assert_status_is_ok();
    // HS256 keyed with the public key (the classic confusion) is refused
    let confused = hs256(claims.clone(), RS_PUBLIC.as_bytes());
    let resp = app
        .client
        .get("/v1/users/u1/cards")
        .header("Authorization", format!("Bearer {confused}"))
        .send()
        .await;
    assert_error(resp, 401, "unauthenticated").await;
    // and so is a token signed by another RSA key's holder pretending (HS256 secret of the HS app)
    let resp = app
        .client
        .get("/v1/users/u1/cards")
        .header("Authorization", bearer("m", "service"))
        .send()
        .await;
    assert_error(resp, 401, "unauthenticated").await;
}

#[tokio::test]
async fn roles_and_ownership_are_enforced() {
    let app = spawn();
    // auditors do not read cards; admins do not bind
    assert_error(
        app.client
            .get("/v1/users/u1/cards")
            .header("Authorization", bearer("aud", "auditor"))
            .send()
            .await,
        403,
        "forbidden",
    )
    .await;
    let resp = app
        .client
        .post("/v1/users/u1/cards")
        .header("Authorization", bearer("ops", "admin"))
        .header("Idempotency-Key", "k-admin")
        .content_type("application/json")
        .body(bind_body(VISA).to_string())
        .send()
        .await;
    assert_error(resp, 403, "forbidden").await;
    // unknown role
    assert_error(
        app.client
            .get("/v1/users/u1/cards")
            .header("Authorization", bearer("x", "root"))
            .send()
            .await,
        403,
        "forbidden",
    )
    .await;

    // a user binds their own card, cannot read another user's cards
    let resp = app
        .client
        .post("/v1/users/alice/cards")
        .header("Authorization", bearer("alice", "user"))
        .header("Idempotency-Key", "k-alice")
        .content_type("application/json")
        .body(bind_body(VISA).to_string())
        .send()
        .await;
    resp.assert_status(StatusCode::CREATED);
    let card = json_of(resp).await;
    let id = card["id"].as_str().unwrap();
    assert_error(
        app.client
            .get("/v1/users/bob/cards")
            .header("Authorization", bearer("alice", "user"))
            .send()
            .await,
        403,
        "forbidden",
    )
    .await;
    // bob asking for alice's card under his own id: not found
    let resp = app
        .client
        .get(format!("/v1/users/bob/cards/{id}"))
        .header("Authorization", bearer("bob", "user"))
        .send()
        .await;
    assert_error(resp, 404, "not_found").await;
    // alice reads it
    let resp = app
        .client
        .get(format!("/v1/users/alice/cards/{id}"))
        .header("Authorization", bearer("alice", "user"))
        .send()
        .await;
    resp.assert_status_is_ok();
    // admin operations are refused to users and services
    let resp = app
        .client
        .post(format!("/v1/admin/users/alice/cards/{id}/freeze"))
        .header("Authorization", bearer("alice", "user"))
        .send()
        .await;
    assert_error(resp, 403, "forbidden").await;
    let resp = app
        .client
        .get("/v1/audit/events")
        .header("Authorization", bearer("m", "service"))
        .send()
        .await;
    assert_error(resp, 403, "forbidden").await;
}

async fn signed_get(app: &TestApp, path: &str, sig: Option<String>) -> poem::test::TestResponse {
    let mut req = app
        .client
        .get(path)
        .header("Authorization", bearer(SIGNING_CLIENT, "service"));
    if let Some(s) = sig {
        req = req.header("X-Cardbind-Signature", s);
    }
    req.send().await
}

#[tokio::test]
async fn signed_clients_must_sign_and_cannot_replay() {
    let app = spawn();
    // Signatures are checked against the service's clock.
    let now = cardbind_ports::clock::Clock::now(app.clock.as_ref()).unix_seconds();
    let path = "/v1/users/u1/cards?limit=5";
    assert_error(signed_get(&app, path, None).await, 401, "invalid_signature").await;
    let wrong = sign_request(b"not-the-secret", "GET", path, now, "nonce-0001", b"");
    assert_error(
        signed_get(&app, path, Some(wrong)).await,
        401,
        "invalid_signature",
    )
    .await;
    let other_path = sign_request(
        SIGNING_SECRET,
        "GET",
        "/v1/users/u1/cards",
        now,
        "nonce-0002",
        b"",
    );
    assert_error(
        signed_get(&app, path, Some(other_path)).await,
        401,
        "invalid_signature",
    )
    .await;
    let stale = sign_request(SIGNING_SECRET, "GET", path, now - 301, "nonce-0003", b"");
    assert_error(
        signed_get(&app, path, Some(stale)).await,
        401,
        "invalid_signature",
    )
    .await;
    let future = sign_request(SIGNING_SECRET, "GET", path, now + 301, "nonce-0006", b"");
    assert_error(
        signed_get(&app, path, Some(future)).await,
        401,
        "invalid_signature",
    )
    .await;
    // within the window (a client clock 4 minutes behind) is fine
    let behind = sign_request(SIGNING_SECRET, "GET", path, now - 240, "nonce-0007", b"");
    signed_get(&app, path, Some(behind))
        .await
        .assert_status_is_ok();
    assert_error(
        signed_get(&app, path, Some("t=1,garbage".into())).await,
        401,
        "invalid_signature",
    )
    .await;

    let good = sign_request(SIGNING_SECRET, "GET", path, now, "nonce-0004", b"");
    signed_get(&app, path, Some(good.clone()))
        .await
        .assert_status_is_ok();
    assert_error(
        signed_get(&app, path, Some(good)).await,
        401,
        "invalid_signature",
    )
    .await;

    // a signed bind: the body is covered
    let body = bind_body(VISA).to_string();
    let sig = sign_request(
        SIGNING_SECRET,
        "POST",
        "/v1/users/u1/cards",
        now,
        "nonce-0005",
        body.as_bytes(),
    );
    let send = |b: String, s: String| {
        app.client
            .post("/v1/users/u1/cards")
            .header("Authorization", bearer(SIGNING_CLIENT, "service"))
            .header("X-Cardbind-Signature", s)
            .header("Idempotency-Key", "k-signed")
            .content_type("application/json")
            .body(b)
            .send()
    };
    let tampered = body.replace("张三", "李四");
    assert_error(send(tampered, sig.clone()).await, 401, "invalid_signature").await;
    send(body, sig).await.assert_status(StatusCode::CREATED);
    // unsigned clients are not asked to sign
    app.client
        .get(path)
        .header("Authorization", bearer("merchant", "service"))
        .send()
        .await
        .assert_status_is_ok();
}

// ---- idempotency ----------------------------------------------------------------------------

#[tokio::test]
async fn replays_are_byte_identical_and_keys_cannot_be_reused() {
    let app = spawn();
    let body = bind_body(VISA);
    let first = app.bind("u-idem", "key-1", &body).await;
    first.assert_status(StatusCode::CREATED);
    first.assert_header_is_not_exist("Idempotent-Replayed");
    let first_bytes = bytes(first).await;

    let again = app.bind("u-idem", "key-1", &body).await;
    again.assert_status(StatusCode::CREATED);
    again.assert_header("Idempotent-Replayed", "true");
    again.assert_header_exist("X-Request-Id");
    assert_eq!(bytes(again).await, first_bytes);

    // the same key with another request
    let v = assert_error(
        app.bind("u-idem", "key-1", &bind_body(VISA2)).await,
        409,
        "idempotency_key_reused",
    )
    .await;
    assert_eq!(v["error"]["field"], "Idempotency-Key");
    // the same key for another user (another path) is another request too
    assert_error(
        app.bind("u-other", "key-1", &body).await,
        409,
        "idempotency_key_reused",
    )
    .await;
    // keys are scoped to the caller: another client may use the same key
    let resp = app
        .client
        .post("/v1/users/u-idem2/cards")
        .header("Authorization", bearer("other-merchant", "service"))
        .header("Idempotency-Key", "key-1")
        .content_type("application/json")
        .body(body.to_string())
        .send()
        .await;
    resp.assert_status(StatusCode::CREATED);

    // a stored refusal is replayed as well (same card again → card_already_bound once, then replayed)
    let refused = app.bind("u-idem", "key-2", &body).await;
    let refused_bytes = bytes(refused).await;
    let replay = app.bind("u-idem", "key-2", &body).await;
    replay.assert_status(StatusCode::CONFLICT);
    replay.assert_header("Idempotent-Replayed", "true");
    assert_eq!(bytes(replay).await, refused_bytes);

    // missing or malformed key
    let resp = app
        .client
        .post("/v1/users/u-idem/cards")
        .header("Authorization", bearer("merchant", "service"))
        .content_type("application/json")
        .body(body.to_string())
        .send()
        .await;
    let v = assert_error(resp, 400, "idempotency_key_missing").await;
    assert_eq!(v["error"]["field"], "Idempotency-Key");
    assert_error(
        app.bind("u-idem", &"k".repeat(256), &body).await,
        400,
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn concurrent_requests_with_one_key_run_once() {
    let app = Arc::new(spawn());
    let body = bind_body(VISA);
    let (a, b) = tokio::join!(
        app.bind("u-conc", "same", &body),
        app.bind("u-conc", "same", &body)
    );
    let statuses = [a.0.status().as_u16(), b.0.status().as_u16()];
    let (ba, bb) = (bytes(a).await, bytes(b).await);
    assert_eq!(statuses, [201, 201], "{}", String::from_utf8_lossy(&bb));
    assert_eq!(ba, bb);
    let list = app
        .client
        .get("/v1/users/u-conc/cards")
        .header("Authorization", bearer("m", "service"))
        .send()
        .await;
    assert_eq!(json_of(list).await["cards"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_key_held_too_long_answers_in_progress() {
    let mut opts = Options::default();
    opts.mock
        .card_modes
        .insert("1111".into(), cardbind_channels::MockMode::Timeout);
    opts.mock.timeout_after = std::time::Duration::from_millis(600);
    opts.http.idempotency_wait_ms = 100;
    let app = spawn_with(opts);
    let body = bind_body(VISA);
    let second = async {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        app.bind("u-slow", "k-slow", &body).await
    };
    let (first, second) = tokio::join!(app.bind("u-slow", "k-slow", &body), second);
    first.assert_status(StatusCode::ACCEPTED);
    let v = assert_error(second, 409, "idempotency_key_in_progress").await;
    assert_eq!(v["error"]["field"], "Idempotency-Key");
    let third = app.bind("u-slow", "k-slow", &body).await;
    third.assert_status(StatusCode::ACCEPTED);
    third.assert_header("Idempotent-Replayed", "true");
}

#[tokio::test]
async fn transient_failures_release_the_key() {
    let app = spawn();
    app.store.set_unavailable(true);
    let body = bind_body(VISA);
    assert_error(
        app.bind("u-transient", "k-t", &body).await,
        503,
        "storage_unavailable",
    )
    .await;
    app.store.set_unavailable(false);
    app.bind("u-transient", "k-t", &body)
        .await
        .assert_status(StatusCode::CREATED);
}

#[tokio::test]
async fn the_fourth_bind_in_a_minute_is_rate_limited() {
    let app = spawn();
    let cards = [VISA, VISA2, MC_OTP, AMEX_REDIRECT];
    for (i, card) in cards.iter().take(3).enumerate() {
        let resp = app
            .bind("u-rate", &format!("rate-{i}"), &bind_body(card))
            .await;
        assert!(
            resp.0.status().is_success(),
            "bind {i}: {}",
            resp.0.status()
        );
    }
    let resp = app.bind("u-rate", "rate-3", &bind_body(cards[3])).await;
    let retry = resp
        .0
        .headers()
        .get("Retry-After")
        .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
    assert_error(resp, 429, "rate_limited").await;
    assert!(
        retry.is_some_and(|s| (1..=60).contains(&s)),
        "Retry-After: {retry:?}"
    );
    // 429 is transient: the key is free again once the window has passed
    app.clock.advance_seconds(61);
    app.bind("u-rate", "rate-3", &bind_body(cards[3]))
        .await
        .assert_status(StatusCode::CREATED);
}

// ---- headers, request ids, metrics --------------------------------------------------------------

fn assert_security_headers(resp: &poem::test::TestResponse) {
    for h in [
        "strict-transport-security",
        "content-security-policy",
        "x-request-id",
    ] {
        resp.assert_header_exist(h);
    }
    resp.assert_header("x-content-type-options", "nosniff");
    resp.assert_header("cache-control", "no-store");
    resp.assert_header("x-frame-options", "DENY");
    resp.assert_header("referrer-policy", "no-referrer");
}

#[tokio::test]
async fn security_headers_and_request_ids_on_every_response() {
    let app = spawn();
    let ok = app.client.get("/healthz").send().await;
    ok.assert_status_is_ok();
    assert_security_headers(&ok);
    let csp =
        ok.0.headers()
            .get("content-security-policy")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_security_headers(&app.client.get("/nope").send().await);
    assert_security_headers(&app.client.get("/v1/users/u1/cards").send().await);
    let docs = app.client.get("/docs").send().await;
    docs.assert_status_is_ok();
    assert_security_headers(&docs);

    let echoed = app
        .client
        .get("/healthz")
        .header("X-Request-Id", "req-abc.123")
        .send()
        .await;
    echoed.assert_header("x-request-id", "req-abc.123");
    let replaced = app
        .client
        .get("/healthz")
        .header("X-Request-Id", "bad id with spaces")
        .send()
        .await;
    let id = replaced
        .0
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
}

#[tokio::test]
async fn metrics_label_routes_by_template() {
    let app = spawn();
    app.bind("u-metrics-secret", "k-m", &bind_body(VISA))
        .await
        .assert_status(StatusCode::CREATED);
    app.client
        .get("/v1/users/u-metrics-secret/cards")
        .header("Authorization", bearer("m", "service"))
        .send()
        .await
        .assert_status_is_ok();
    app.client
        .get("/v1/bins/411111")
        .header("Authorization", bearer("m", "service"))
        .send()
        .await
        .assert_status_is_ok();
    app.client.get("/nowhere/u-metrics-secret").send().await;
    let resp = app.client.get("/metrics").send().await;
    resp.assert_status_is_ok();
    let text = String::from_utf8(bytes(resp).await).unwrap();
    assert!(!text.contains("u-metrics-secret"), "{text}");
    assert!(
        text.contains(r#"route="/v1/users/{user_id}/cards""#),
        "{text}"
    );
    assert!(text.contains(r#"cardbind_http_requests_total{method="POST",route="/v1/users/{user_id}/cards",status="201"} 1"#), "{text}");
    assert!(text.contains(r#"route="/v1/bins/{bin}""#), "{text}");
    assert!(text.contains(r#"route="unmatched""#), "{text}");
    assert!(
        text.contains("cardbind_http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(
        text.contains(r#"cardbind_binds_total{outcome="active"} 1"#),
        "{text}"
    );
}

// ---- flows ----------------------------------------------------------------------------------------

#[tokio::test]
async fn otp_flow_default_unbind_and_freeze() {
    let app = spawn();
    let svc = bearer("merchant", "service");
    let resp = app.bind("u-flow", "k-otp", &bind_body(MC_OTP)).await;
    resp.assert_status(StatusCode::CREATED);
    let card = json_of(resp).await;
    assert_eq!(card["status"], "pending_verification");
    assert_eq!(card["next_action"]["type"], "otp");
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
    let resp = app
        .client
        .post(format!("/v1/admin/users/u-flow/cards/{id}/unfreeze"))
        .header("Authorization", admin.clone())
        .send()
        .await;
    assert_eq!(json_of(resp).await["status"], "active");

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

    let ok = send(n.headers.clone().into_iter().collect(), n.body.clone()).await;
    assert!(ok.0.status().is_success(), "{}", ok.0.status());
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
    let resp = app
        .client
        .post("/v1/admin/users/u-c/erase")
        .header("Authorization", bearer("aud", "auditor"))
        .send()
        .await;
    assert_error(resp, 403, "forbidden").await;
}

// ---- panics ----------------------------------------------------------------------------------------

/// A review queue that panics when listed.
struct PanickingQueue;

#[async_trait]
impl ReviewQueue for PanickingQueue {
    async fn add(&self, _e: &ReviewEntry) -> Result<(), StoreError> {
        Ok(())
    }
    async fn get(&self, _b: &BindingId) -> Result<Option<ReviewEntry>, StoreError> {
        Ok(None)
    }
    async fn remove(&self, _b: &BindingId) -> Result<(), StoreError> {
        Ok(())
    }
    async fn list(
        &self,
        _after: Option<BindingId>,
        _limit: u32,
    ) -> Result<Vec<ReviewEntry>, StoreError> {
        panic!("review queue exploded while holding 4111111111111111")
    }
}

#[tokio::test]
async fn panics_become_a_500_envelope() {
    let (mut state, _store, _clock) = state_with(Options::default());
    let mut ports = state.usecases.ports().clone();
    ports.review = Arc::new(PanickingQueue);
    state.usecases = cardbind_usecases::UseCases::new(ports, Default::default());
    let client = poem::test::TestClient::new(cardbind::http::app(state));
    let resp = client
        .get("/v1/admin/reviews")
        .header("Authorization", bearer("ops", "admin"))
        .send()
        .await;
    resp.assert_status(StatusCode::INTERNAL_SERVER_ERROR);
    assert_security_headers(&resp);
    let v = assert_error(resp, 500, "internal_error").await;
    assert_eq!(v["error"]["message"], "internal error");
    assert!(!v.to_string().contains("exploded"));
    // the server keeps serving
    client.get("/healthz").send().await.assert_status_is_ok();
}

// ---- serving on a real socket ------------------------------------------------------------------------

#[tokio::test]
async fn serve_on_port_zero_and_finish_in_flight_requests_on_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut opts = Options::default();
    opts.mock
        .card_modes
        .insert("1111".into(), cardbind_channels::MockMode::Timeout);
    opts.mock.timeout_after = std::time::Duration::from_millis(400);
    let (state, _store, _clock) = state_with(opts);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(cardbind::http::serve(listener, state, async move {
        let _ = stopped.await;
    }));

    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("x-request-id:"),
        "{answer}"
    );

    // A slow bind (the channel answers after 400 ms) is in flight when shutdown starts.
    let body = bind_body(VISA).to_string();
    let request = format!(
        "POST /v1/users/u-slow/cards HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {}\r\n\
         Idempotency-Key: k-slow\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        bearer("merchant", "service"),
        body.len(),
        body
    );
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let _ = stop.send(());
    let mut answer = String::new();
    slow.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    assert!(answer.contains("pending_review"), "{answer}");
    tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

/// Every audit cursor the spec's pattern allows is answered (a link number
/// past what a store holds was a 503 before the pattern bounded it).
#[tokio::test]
async fn audit_cursors_at_the_edge_of_the_pattern_are_answered() {
    let app = spawn();
    for (after, status) in [
        ("999999999999999.999999999999999999.999999999.@system", 200),
        ("0.0.0.@system", 200),
        ("729.11977529033629061801.78.@system", 400),
        ("1.1.9999999999.alice", 400),
    ] {
        let resp = app
            .client
            .get(format!("/v1/audit/events?after={after}"))
            .header("Authorization", bearer("aud", "auditor"))
            .send()
            .await;
        assert_eq!(resp.0.status().as_u16(), status, "{after}");
    }
}
