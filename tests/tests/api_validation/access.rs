//! Access control: users reach only their own cards, requests without
//! valid credentials are 401, the public endpoints need no token.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_reach_only_their_own_cards() {
    let app =
        TestApp::spawn(|c| c.channels.mock.mode = cardbind::config::MockModeSetting::Instant).await;
    let alice = user_id("alice");
    let bob = user_id("bob");
    let bob_card = TestCard::visa();
    let bob_id = app
        .bind(&bob, &bob_card, &idem_key())
        .await
        .expect_status(201)["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let alice_id = app
        .bind(&alice, &TestCard::visa(), &idem_key())
        .await
        .expect_status(201)["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let at = app.user_token(&alice);

    // Alice's own cards: fine.
    let r = app.get(&format!("/v1/users/{alice}/cards"), &at).await;
    assert_eq!(
        r.json()["cards"].as_array().map(Vec::len),
        Some(1),
        "{}",
        r.describe()
    );
    app.get(&format!("/v1/users/{alice}/cards/{alice_id}"), &at)
        .await
        .expect_status(200);

    let no_bob_data = |r: &cardbind_tests::Response| {
        let v = r.json();
        let keys: Vec<&String> = v
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        assert_eq!(keys, vec!["error"], "only the envelope: {}", r.describe());
        let msg = v["error"]["message"].as_str().unwrap_or("");
        assert!(
            !msg.contains(&bob)
                && !msg.contains(bob_card.last4())
                && !msg.contains(bob_card.bin6()),
            "{}",
            r.describe()
        );
        assert!(
            !r.text().contains("\"last4\"") && !r.text().contains("\"status\""),
            "{}",
            r.describe()
        );
    };

    // Under bob's path: forbidden, whatever the operation.
    let bp = format!("/v1/users/{bob}/cards");
    let cp = format!("{bp}/{bob_id}");
    let attempts = vec![
        app.get(&bp, &at).await,
        app.get(&cp, &at).await,
        app.send(Method::DELETE, &cp, Some(&at), &[], None).await,
        app.send(Method::PUT, &format!("{cp}/default"), Some(&at), &[], None)
            .await,
        app.post_json(&format!("{cp}/verify"), &at, &json!({"otp": "123456"}))
            .await,
        app.bind_raw(
            &at,
            &bob,
            TestCard::visa().body().to_string().into_bytes(),
            Some(&idem_key()),
        )
        .await,
        app.get(&format!("/v1/consents?user_id={bob}"), &at).await,
    ];
    for r in &attempts {
        r.assert_error(403, "forbidden");
        no_bob_data(r);
    }

    // Bob's card id under alice's path: not found (not "forbidden": that
    // would confirm the id exists).
    let ap = format!("/v1/users/{alice}/cards/{bob_id}");
    let attempts = vec![
        app.get(&ap, &at).await,
        app.send(Method::DELETE, &ap, Some(&at), &[], None).await,
        app.send(Method::PUT, &format!("{ap}/default"), Some(&at), &[], None)
            .await,
        app.post_json(&format!("{ap}/verify"), &at, &json!({"otp": "123456"}))
            .await,
        // The service role too.
        app.get(&ap, &app.service_token()).await,
        app.send(Method::DELETE, &ap, Some(&app.service_token()), &[], None)
            .await,
    ];
    for r in &attempts {
        r.assert_error(404, "not_found");
        no_bob_data(r);
    }
    // A card id that does not exist at all answers the same.
    let r = app
        .get(
            &format!("/v1/users/{alice}/cards/card_0000000000000000"),
            &at,
        )
        .await;
    r.assert_error(404, "not_found");

    // Bob's card is untouched.
    let b = app.get_card(&bob, &bob_id).await.expect_status(200);
    assert_eq!(b["status"], "active");
    assert_eq!(b["is_default"], true);

    // Roles: an auditor reads no cards, admin routes are not for users.
    app.get(&bp, &app.auditor_token())
        .await
        .assert_error(403, "forbidden");
    app.admin_action(&at, &alice, &alice_id, "freeze")
        .await
        .assert_error(403, "forbidden");
    app.post_empty(&format!("/v1/admin/users/{bob}/erase"), &at)
        .await
        .assert_error(403, "forbidden");
    app.post_empty(
        &format!("/v1/admin/users/{bob}/erase"),
        &app.service_token(),
    )
    .await
    .assert_error(403, "forbidden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_valid_credentials_are_401() {
    let app = TestApp::spawn(|_| {}).await;
    let user = user_id("anon");
    let paths = [
        (Method::GET, format!("/v1/users/{user}/cards")),
        (Method::POST, format!("/v1/users/{user}/cards")),
        (Method::GET, format!("/v1/users/{user}/cards/card_x")),
        (Method::DELETE, format!("/v1/users/{user}/cards/card_x")),
        (Method::GET, "/v1/admin/reviews".to_owned()),
        (Method::GET, "/v1/audit/events".to_owned()),
        (Method::GET, format!("/v1/consents?user_id={user}")),
    ];
    // Signed with another secret, expired, wrong audience, garbage.
    let other_secret = b"0123456789abcdef0123456789abcdef-other".to_vec();
    let forged = cardbind::compose::dev_token(
        &app.config,
        &other_secret,
        "merchant-backend",
        Role::Service,
        3600,
    )
    .expect("token");
    let expired = {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = json!({"sub": "merchant-backend", "role": "service", "iss": app.config.auth.issuer, "aud": app.config.auth.audience, "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600});
        let secret = cardbind::compose::jwt_secret(&app.config).expect("secret");
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&secret),
        )
        .expect("encode")
    };
    let wrong_aud = {
        let mut c = app.config.clone();
        c.auth.audience = "someone-else".into();
        let secret = cardbind::compose::jwt_secret(&app.config).expect("secret");
        cardbind::compose::dev_token(&c, &secret, "merchant-backend", Role::Service, 3600)
            .expect("token")
    };
    let unsigned = {
        // alg "none"
        use base64_like::encode;
        format!("{}.{}.", encode(br#"{"alg":"none","typ":"JWT"}"#), encode(format!(r#"{{"sub":"merchant-backend","role":"service","iss":"{}","aud":"{}","exp":9999999999}}"#, app.config.auth.issuer, app.config.auth.audience).as_bytes()))
    };
    let valid_body = TestCard::visa().body().to_string().into_bytes();
    let body_for =
        |m: &Method| (*m == Method::POST).then(|| (valid_body.clone(), "application/json"));
    for (method, path) in &paths {
        let r = app
            .send(
                method.clone(),
                path,
                None,
                &[("idempotency-key", "k1")],
                body_for(method),
            )
            .await;
        r.assert_error(401, "unauthenticated");
        for bad in [
            forged.as_str(),
            expired.as_str(),
            wrong_aud.as_str(),
            unsigned.as_str(),
            "not-a-token",
        ] {
            let r = app
                .send(
                    method.clone(),
                    path,
                    Some(bad),
                    &[("idempotency-key", "k1")],
                    body_for(method),
                )
                .await;
            r.assert_error(401, "unauthenticated");
        }
        let r = app
            .send(
                method.clone(),
                path,
                None,
                &[
                    ("authorization", "Basic dXNlcjpwYXNz"),
                    ("idempotency-key", "k1"),
                ],
                body_for(method),
            )
            .await;
        r.assert_error(401, "unauthenticated");
    }
    assert!(app.list_cards(&user).await.is_empty());
    // The public endpoints need no token.
    for p in ["/healthz", "/openapi.json", "/metrics"] {
        let r = app.send(Method::GET, p, None, &[], None).await;
        assert_eq!(r.status, 200, "{p}: {}", r.describe());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_200_without_a_token() {
    let app = TestApp::spawn(|_| {}).await;
    let r = app.send(Method::GET, "/readyz", None, &[], None).await;
    assert_eq!(r.status, 200, "{}", r.describe());
}

/// Base64url without padding (JWT segments), to forge an `alg: none` token.
mod base64_like {
    pub fn encode(data: &[u8]) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            let chars = chunk.len() + 1;
            for i in 0..chars {
                out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            }
        }
        out
    }
}
