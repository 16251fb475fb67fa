//! Authentication and authorization: bad tokens, RS256 without algorithm
//! confusion, roles and ownership, signed clients and replays.

use cardbind::http::sign_request;

use super::*;

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
        (
            "issuer in an array",
            Some(format!(
                "Bearer {}",
                hs256(
                    with("iss", json!(["https://evil.test", ISSUER])),
                    JWT_SECRET
                )
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
        resp.assert_header("www-authenticate", "Bearer realm=\"cardbind\"");
        assert_error(resp, 401, "unauthenticated").await;
    }
    // A refused signature is no bearer matter: no challenge.
    let resp = app
        .client
        .post("/v1/channels/mock/notify")
        .content_type("application/json")
        .body("{}")
        .send()
        .await;
    resp.assert_header_is_not_exist("www-authenticate");
    assert_error(resp, 401, "invalid_signature").await;
    // A header that is not visible ASCII: refused the same way, on an
    // idempotent operation too, where the message says why.
    let resp = app
        .client
        .post("/v1/users/u1/cards")
        .header(
            "Authorization",
            poem::http::HeaderValue::from_bytes("Bearer é".as_bytes()).unwrap(),
        )
        .header("Idempotency-Key", "k-ascii")
        .content_type("application/json")
        .body(bind_body(VISA).to_string())
        .send()
        .await;
    let v = assert_error(resp, 401, "unauthenticated").await;
    assert!(
        v["error"]["message"].as_str().unwrap().contains("ASCII"),
        "{v}"
    );
    let resp = app
        .client
        .get("/v1/users/u1/cards")
        .header(
            "Authorization",
            poem::http::HeaderValue::from_bytes("Bearer é".as_bytes()).unwrap(),
        )
        .send()
        .await;
    resp.assert_header("www-authenticate", "Bearer realm=\"cardbind\"");
    assert_error(resp, 401, "unauthenticated").await;
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
const RS_PRIVATE: &str = include_str!("../fixtures/jwt_rs256_test_private.pem");
const RS_PUBLIC: &str = include_str!("../fixtures/jwt_rs256_test_public.pem");

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

/// A spent nonce is kept as a digest under the client's secret, not as
/// sent: digits alone are a valid nonce, and a card number sent as one
/// was stored in clear (hostile black-box run). A replay is still refused.
#[tokio::test]
async fn a_nonce_is_not_stored_as_sent() {
    use cardbind_ports::store::SeenIds;
    let app = spawn();
    let now = cardbind_ports::clock::Clock::now(app.clock.as_ref());
    let path = "/v1/users/u1/cards";
    let pan_shaped = "5500000000000004";
    let sig = sign_request(
        SIGNING_SECRET,
        "GET",
        path,
        now.unix_seconds(),
        pan_shaped,
        b"",
    );
    signed_get(&app, path, Some(sig.clone()))
        .await
        .assert_status_is_ok();
    let namespace = format!("nonce:{SIGNING_CLIENT}");
    assert!(
        !app.store.seen(&namespace, pan_shaped, now).await.unwrap(),
        "the nonce is not kept as sent"
    );
    assert_error(
        signed_get(&app, path, Some(sig)).await,
        401,
        "invalid_signature",
    )
    .await;
}

/// A signed client's id is matched without regard to case: its token's
/// subject in other case must sign all the same (a client id set through
/// an environment variable, upper case, missed its lower-case subject,
/// and that client's requests went through unsigned).
#[tokio::test]
async fn a_signed_client_must_sign_whatever_the_case_of_its_id() {
    let app = spawn();
    let path = "/v1/users/u1/cards?limit=5";
    let shouted = SIGNING_CLIENT.to_ascii_uppercase();
    let r = app
        .client
        .get(path)
        .header("Authorization", bearer(&shouted, "service"))
        .send()
        .await;
    assert_error(r, 401, "invalid_signature").await;
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

    // A HEAD is signed as the HEAD it is, though the GET operation
    // answers it.
    let head = |sig: String| {
        app.client
            .head(path)
            .header("Authorization", bearer(SIGNING_CLIENT, "service"))
            .header("X-Cardbind-Signature", sig)
            .send()
    };
    let as_head = sign_request(SIGNING_SECRET, "HEAD", path, now, "nonce-0008", b"");
    head(as_head).await.assert_status_is_ok();
    let as_get = sign_request(SIGNING_SECRET, "GET", path, now, "nonce-0009", b"");
    head(as_get).await.assert_status(StatusCode::UNAUTHORIZED);

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
