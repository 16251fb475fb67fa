//! Bearer tokens and request signatures, beyond what `http_api/` covers:
//! `alg: none` spellings, other HMAC algorithms, missing claims, the leeway
//! boundary, unknown roles; the worked signature example of
//! `docs/security.md` reproduced from the document; nonces replayed on a
//! second instance sharing the store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support;

use std::collections::BTreeMap;
use std::sync::Arc;

use cardbind::http::sign_request;
use cardbind::state::{AuthSettings, SigningSecret};
use cardbind_memory::MemoryStore;
use cardbind_ports::clock::Clock;
use poem::EndpointExt;
use serde_json::{json, Value};
use support::*;

fn b64(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

fn signed(alg: jsonwebtoken::Algorithm, claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn good_claims() -> Value {
    let now = system_now_ms() / 1000;
    json!({"sub": "m", "role": "service", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 600})
}

async fn status_with(app: &TestApp, token: &str) -> (u16, Value) {
    status_on(&app.client, token).await
}

/// The status and body of a list of cards with this bearer token.
async fn status_on(client: &Client, token: &str) -> (u16, Value) {
    let resp = client
        .get("/v1/users/u1/cards")
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await;
    let status = resp.0.status().as_u16();
    (status, json_of(resp).await)
}

type Client = poem::test::TestClient<poem::endpoint::BoxEndpoint<'static>>;

/// A client of the app with its token settings changed by `edit`.
fn client_with_auth(edit: impl FnOnce(&mut AuthSettings)) -> Client {
    let (mut state, _store, _clock) = state_with(Options::default());
    let mut auth: AuthSettings = (*state.auth).clone();
    edit(&mut auth);
    state.auth = Arc::new(auth);
    poem::test::TestClient::new(cardbind::http::app(state).boxed())
}

#[tokio::test]
async fn every_spelling_of_alg_none_is_refused() {
    let app = spawn();
    let claims = good_claims();
    let real_sig = signed(jsonwebtoken::Algorithm::HS256, &claims, JWT_SECRET)
        .rsplit('.')
        .next()
        .unwrap()
        .to_owned();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let head = b64(&json!({"alg": alg, "typ": "JWT"}));
        // without a signature, and with the real HS256 signature pasted on
        for token in [
            format!("{head}.{}.", b64(&claims)),
            format!("{head}.{}", b64(&claims)),
            format!("{head}.{}.{real_sig}", b64(&claims)),
        ] {
            let (status, body) = status_with(&app, &token).await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (401, Some("unauthenticated")),
                "alg {alg}: {token}"
            );
        }
    }
}

#[tokio::test]
async fn other_hmac_algorithms_with_the_right_secret_are_refused() {
    let app = spawn();
    for alg in [
        jsonwebtoken::Algorithm::HS384,
        jsonwebtoken::Algorithm::HS512,
    ] {
        let (status, body) = status_with(&app, &signed(alg, &good_claims(), JWT_SECRET)).await;
        assert_eq!(status, 401, "{alg:?}: {body}");
        assert_eq!(body["error"]["code"], "unauthenticated");
    }
    // the same claims with HS256 pass: only the algorithm differs
    let ok = signed(jsonwebtoken::Algorithm::HS256, &good_claims(), JWT_SECRET);
    assert_eq!(status_with(&app, &ok).await.0, 200);
}

#[tokio::test]
async fn tokens_missing_a_required_claim_are_refused() {
    let app = spawn();
    for claim in ["exp", "iss", "aud", "sub", "role"] {
        let mut c = good_claims();
        c.as_object_mut().unwrap().remove(claim);
        let (status, body) = status_with(
            &app,
            &signed(jsonwebtoken::Algorithm::HS256, &c, JWT_SECRET),
        )
        .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("unauthenticated")),
            "without {claim}: {body}"
        );
    }
    // a wrong audience among several, a subject that is empty
    for (k, v) in [("aud", json!(["a", "b"])), ("sub", json!(""))] {
        let mut c = good_claims();
        c[k] = v;
        let (status, _) = status_with(
            &app,
            &signed(jsonwebtoken::Algorithm::HS256, &c, JWT_SECRET),
        )
        .await;
        assert_eq!(status, 401, "{k}");
    }
}

/// `auth.max_token_lifetime_seconds`: a token whose `exp` lies further
/// ahead than the bound (with the leeway), or, when it has an `iat`,
/// further after its issue, is refused whatever its issuer signed; 0 lifts
/// the bound.
#[tokio::test]
async fn a_token_that_lives_longer_than_the_bound_is_refused() {
    let client = |max: u64| {
        client_with_auth(|auth| {
            auth.leeway_seconds = 30;
            auth.max_token_lifetime_seconds = max;
        })
    };
    let now = (system_now_ms() / 1000) as u64;
    let hour = client(3600);
    let unbounded = client(0);
    let cases = [
        // (iat, exp, status with a bound of an hour, status with none)
        (None, now + 3600, 200, 200),
        (None, now + 3600 + 20, 200, 200), // inside the leeway
        (None, now + 3600 + 300, 401, 200),
        (None, u64::MAX, 401, 200),
        (Some(now - 600), now - 600 + 3600, 200, 200),
        // Issued for the hour and the leeway (an `iat` dated back).
        (Some(now - 600), now - 600 + 3600 + 30, 200, 200),
        // Ends within the hour from now, but was issued for longer.
        (Some(now - 600), now - 600 + 3600 + 31, 401, 200),
        (Some(now), now + 10 * 365 * 86_400, 401, 200),
    ];
    for (iat, exp, bounded, free) in cases {
        let mut c = good_claims();
        c["exp"] = json!(exp);
        if let Some(iat) = iat {
            c["iat"] = json!(iat);
        }
        let token = signed(jsonwebtoken::Algorithm::HS256, &c, JWT_SECRET);
        for (client, want) in [(&hour, bounded), (&unbounded, free)] {
            let (status, body) = status_on(client, &token).await;
            assert_eq!(
                status,
                want,
                "iat {iat:?} exp now{:+}: {body}",
                exp as i128 - now as i128
            );
            if want == 401 {
                assert_eq!(body["error"]["code"], "unauthenticated", "{body}");
                assert!(
                    body["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains("lives longer"),
                    "{body}"
                );
            }
        }
    }
    // An `iat` that is not a NumericDate is refused like such an `exp`.
    let mut c = good_claims();
    c["iat"] = json!(format!("{now}"));
    let token = signed(jsonwebtoken::Algorithm::HS256, &c, JWT_SECRET);
    assert_eq!(status_on(&unbounded, &token).await.0, 401);
}

#[tokio::test]
async fn expiry_and_not_before_honour_the_leeway_and_no_more() {
    let client = client_with_auth(|auth| auth.leeway_seconds = 30);
    let now = system_now_ms() / 1000;
    let cases = [
        ("exp", now - 10, 200),  // expired 10 s ago: inside the leeway
        ("exp", now - 120, 401), // expired 2 minutes ago
        ("nbf", now + 10, 200),  // valid in 10 s: inside the leeway
        ("nbf", now + 120, 401), // valid in 2 minutes
        // Issued in 10 s: inside the leeway; in 2 minutes, or in 2058
        // (taken before, whatever the lifetime bound).
        ("iat", now + 10, 200),
        ("iat", now + 120, 401),
        ("iat", now + 1_000_000_000, 401),
    ];
    for (claim, at, want) in cases {
        let mut c = good_claims();
        c[claim] = json!(at);
        let token = signed(jsonwebtoken::Algorithm::HS256, &c, JWT_SECRET);
        assert_eq!(
            status_on(&client, &token).await.0,
            want,
            "{claim} = now{:+}",
            at - now
        );
    }
    // with no leeway (the test default), one second late is too late
    let app = spawn();
    let mut c = good_claims();
    c["exp"] = json!(now - 2);
    let (status, _) = status_with(
        &app,
        &signed(jsonwebtoken::Algorithm::HS256, &c, JWT_SECRET),
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn an_authentic_token_with_an_unknown_role_is_forbidden() {
    // docs/security.md: the token verifies, but grants nothing here.
    let app = spawn();
    for role in ["root", "ADMIN", "", "user "] {
        let (status, body) = status_with(&app, &token("x", role)).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "role {role:?}"
        );
    }
}

// ---- the worked example of docs/security.md -------------------------------------

/// `name = value` lines of the worked example in docs/security.md.
fn worked_example() -> BTreeMap<String, String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/security.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let section = doc.split("Worked example").nth(1).expect("worked example");
    let block = section.split("```").nth(1).expect("example block");
    block
        .lines()
        .filter_map(|l| l.split_once(" = "))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

#[test]
fn the_signature_scheme_reproduces_the_known_answer() {
    // secret s3cr3t, POST /v1/users/alice/cards, t=1767225600, n=n-0001, body {}
    assert_eq!(
        sign_request(
            b"s3cr3t",
            "POST",
            "/v1/users/alice/cards",
            1_767_225_600,
            "n-0001",
            b"{}"
        ),
        "t=1767225600,n=n-0001,s=5dcf956fece887cfaaee1062782b0b83c3be0a4f70ba93005fbb3693d4452cb8"
    );
}

#[test]
fn the_worked_example_in_the_document_is_what_the_code_computes() {
    let ex = worked_example();
    let heading = {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/security.md");
        let doc = std::fs::read_to_string(path).unwrap();
        doc.split("Worked example")
            .nth(1)
            .unwrap()
            .split("```")
            .next()
            .unwrap()
            .replace('\n', " ")
    };
    assert!(
        heading.contains("secret `s3cr3t`")
            && heading.contains("`POST /v1/users/alice/cards`")
            && heading.contains("`t=1767225600`"),
        "{heading}"
    );
    let nonce = heading
        .split("`n=")
        .nth(1)
        .and_then(|s| s.split('`').next())
        .unwrap();
    assert!(heading.contains("body `{}`"), "{heading}");

    use sha2::Digest;
    let body_hash = hex::encode(sha2::Sha256::digest(b"{}"));
    assert_eq!(ex["body hash"], body_hash);
    let to_sign = format!("POST\n/v1/users/alice/cards\n1767225600\n{nonce}\n{body_hash}");
    assert_eq!(
        ex["to sign"],
        format!("\"{}\"", to_sign.replace('\n', "\\n")),
        "the string to sign"
    );
    let header = sign_request(
        b"s3cr3t",
        "POST",
        "/v1/users/alice/cards",
        1_767_225_600,
        nonce,
        b"{}",
    );
    assert_eq!(ex["header"], format!("X-Cardbind-Signature: {header}"));
    assert_eq!(
        format!("s={}", ex["signature"]),
        header.rsplit(',').next().unwrap()
    );
}

#[tokio::test]
async fn the_documented_header_is_accepted_by_the_service() {
    // A service whose clock reads the example's t, with client "acme"
    // registered under the example's secret.
    let (mut state, _store, clock) = state_with(Options::default());
    let mut auth: AuthSettings = (*state.auth).clone();
    auth.request_signing = BTreeMap::from([("acme".to_owned(), SigningSecret(b"s3cr3t".to_vec()))]);
    state.auth = Arc::new(auth);
    let now = clock.now().unix_seconds();
    clock.advance_seconds(1_767_225_600 - now);
    let client = poem::test::TestClient::new(cardbind::http::app(state).boxed());
    let header = worked_example()["header"]
        .strip_prefix("X-Cardbind-Signature: ")
        .unwrap()
        .to_owned();
    let send = |sig: String| {
        client
            .post("/v1/users/alice/cards")
            .header("Authorization", bearer("acme", "service"))
            .header("X-Cardbind-Signature", sig)
            .header("Idempotency-Key", "k-doc")
            .content_type("application/json")
            .body("{}")
            .send()
    };
    // Authenticated: what fails is the empty bind body, not the signature.
    let resp = send(header.clone()).await;
    let v = json_of(resp).await;
    assert_eq!(v["error"]["code"], "invalid_request", "{v}");
    // and the same header again is a replay
    let v = json_of(send(header).await).await;
    assert_eq!(v["error"]["code"], "invalid_signature", "{v}");
}

// ---- replays across instances ----------------------------------------------------

async fn signed_get(app: &TestApp, path: &str, sig: &str) -> poem::test::TestResponse {
    app.client
        .get(path)
        .header("Authorization", bearer(SIGNING_CLIENT, "service"))
        .header("X-Cardbind-Signature", sig)
        .send()
        .await
}

async fn signed_bind(app: &TestApp, key: &str, sig: &str, body: &str) -> poem::test::TestResponse {
    app.client
        .post("/v1/users/u1/cards")
        .header("Authorization", bearer(SIGNING_CLIENT, "service"))
        .header("X-Cardbind-Signature", sig)
        .header("Idempotency-Key", key)
        .content_type("application/json")
        .body(body.to_owned())
        .send()
        .await
}

#[tokio::test]
async fn a_nonce_used_on_one_instance_is_refused_on_another_sharing_the_store() {
    let store = MemoryStore::shared();
    let a = spawn_on(store.clone(), Options::default());
    let b = spawn_on(store.clone(), Options::default());
    let now = a.clock.now().unix_seconds();
    let path = "/v1/users/u1/cards?limit=5";
    let sig = sign_request(SIGNING_SECRET, "GET", path, now, "nonce-shared-1", b"");
    signed_get(&a, path, &sig).await.assert_status_is_ok();
    assert_error(signed_get(&b, path, &sig).await, 401, "invalid_signature").await;
    assert_error(signed_get(&a, path, &sig).await, 401, "invalid_signature").await;
    // a fresh nonce works on either
    let sig2 = sign_request(SIGNING_SECRET, "GET", path, now, "nonce-shared-2", b"");
    signed_get(&b, path, &sig2).await.assert_status_is_ok();

    // a signed bind captured on instance A and replayed on instance B
    let body = bind_body("4111111111111111").to_string();
    let sig = sign_request(
        SIGNING_SECRET,
        "POST",
        "/v1/users/u1/cards",
        now,
        "nonce-shared-3",
        body.as_bytes(),
    );
    signed_bind(&a, "k-a", &sig, &body)
        .await
        .assert_status(poem::http::StatusCode::CREATED);
    assert_error(
        signed_bind(&b, "k-b", &sig, &body).await,
        401,
        "invalid_signature",
    )
    .await;
    // one card bound, not two
    let user = cardbind_domain::UserId::parse("u1").unwrap();
    let wallet = cardbind_ports::store::WalletStore::load(store.as_ref(), &user)
        .await
        .unwrap()
        .unwrap()
        .wallet;
    assert_eq!(wallet.bindings().len(), 1);
}

/// A token with `header` as its header, signed with the right key.
fn with_header(header: &Value, claims: &Value) -> String {
    with_header_raw(header, &claims.to_string())
}

/// The same, with the claims as JSON text.
fn with_header_raw(header: &Value, claims: &str) -> String {
    use base64::Engine;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims);
    let signing_input = format!("{}.{payload}", b64(header));
    let sig = jsonwebtoken::crypto::sign(
        signing_input.as_bytes(),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET),
        jsonwebtoken::Algorithm::HS256,
    )
    .unwrap();
    format!("{signing_input}.{sig}")
}

#[tokio::test]
async fn a_not_before_that_is_not_a_number_or_a_critical_extension_is_refused() {
    let app = spawn();
    let now = system_now_ms() / 1000;
    let plain = json!({"alg": "HS256", "typ": "JWT"});
    // The same token passes with a plain header and a numeric `nbf` in the
    // past: only what each case changes is refused.
    let mut ok = good_claims();
    ok["nbf"] = json!(now - 60);
    assert_eq!(status_with(&app, &with_header(&plain, &ok)).await.0, 200);
    // Times that are not whole seconds in a u64 (jsonwebtoken would take a
    // bad `nbf` for none, and round a fraction).
    let nbfs = [
        format!("\"{}\"", now + 86_400),
        format!("\"{now}\""),
        // 2^64: past what a NumericDate of u64 holds.
        "18446744073709551616".to_owned(),
        "-1".to_owned(),
        "null".to_owned(),
        format!("{{\"at\": {now}}}"),
        format!("{}.5", now - 60),
        "1.7e9".to_owned(),
    ];
    let exps = [format!("{}.5", now + 600), "1.9e9".to_owned()];
    let cases = nbfs.into_iter().map(|v| ("nbf", v));
    for (claim, value) in cases.chain(exps.into_iter().map(|v| ("exp", v))) {
        let mut c = good_claims();
        c.as_object_mut().unwrap().remove(claim);
        let c = c.to_string();
        let c = format!("{},\"{claim}\":{value}}}", &c[..c.len() - 1]);
        let (status, body) = status_with(&app, &with_header_raw(&plain, &c)).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("unauthenticated")),
            "{claim} {value}: {body}"
        );
    }
    for header in [
        json!({"alg": "HS256", "crit": ["x-must-understand"], "x-must-understand": 1}),
        json!({"alg": "HS256", "b64": false, "crit": ["b64"]}),
        json!({"alg": "HS256", "crit": []}),
    ] {
        let (status, body) = status_with(&app, &with_header(&header, &ok)).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("unauthenticated")),
            "{header}: {body}"
        );
    }
}

/// Two signature headers are `400 invalid_request` naming the header, as
/// `docs/api.md` says, and before either is checked: the nonce of the
/// first is not spent (before, a valid first copy was verified, its nonce
/// spent, and only then the request refused; an invalid first copy was
/// `401`).
#[tokio::test]
async fn two_signature_headers_are_refused_before_either_is_checked() {
    let app = spawn();
    let now = app.clock.now().unix_seconds();
    let path = "/v1/users/u1/cards?limit=5";
    let sig = sign_request(SIGNING_SECRET, "GET", path, now, "nonce-twice-1", b"");
    let bogus = format!("t={now},n=nonce-bogus-1,s={}", "0".repeat(64));
    for pair in [[&sig, &bogus], [&bogus, &sig]] {
        let resp = app
            .client
            .get(path)
            .header("Authorization", bearer(SIGNING_CLIENT, "service"))
            .header("X-Cardbind-Signature", pair[0].as_str())
            .header("X-Cardbind-Signature", pair[1].as_str())
            .send()
            .await;
        let v = json_of(resp).await;
        assert_eq!(v["error"]["code"], "invalid_request", "{v}");
        assert_eq!(v["error"]["field"], "X-Cardbind-Signature", "{v}");
    }
    // The valid copy's nonce was not spent.
    signed_get(&app, path, &sig).await.assert_status_is_ok();
}
