//! Idempotency keys (missing, replayed, reused) and the bind rate limit.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_idempotency_key_is_refused() {
    let app = TestApp::spawn(|_| {}).await;
    let user = user_id("k");
    let body = TestCard::visa().body().to_string().into_bytes();
    let r = app
        .bind_raw(&app.service_token(), &user, body.clone(), None)
        .await;
    let e = r.assert_error(400, "idempotency_key_missing");
    assert!(
        e["field"]
            .as_str()
            .is_some_and(|f| f.eq_ignore_ascii_case("idempotency-key")),
        "{}",
        r.describe()
    );
    let r = app
        .bind_raw(&app.service_token(), &user, body, Some(""))
        .await;
    assert!(r.status == 400, "{}", r.describe());
    assert_envelope(&r);
    assert!(app.list_cards(&user).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_are_byte_identical_and_a_reused_key_is_409() {
    let app = TestApp::spawn(|c| c.limits.binds_per_user_per_minute = 100).await;
    let user = user_id("idem");
    let card = TestCard::visa();
    let key = idem_key();
    let first = app.bind(&user, &card, &key).await;
    first.expect_status(201);
    let id = first.json()["id"].as_str().expect("id").to_owned();

    let again = app.bind(&user, &card, &key).await;
    assert_eq!(again.status, first.status);
    assert_eq!(again.body, first.body, "a replay is byte-identical");

    // Even after the card changed, the replay is the stored first answer.
    app.verify(&user, &id, "123456").await.expect_status(200);
    let later = app.bind(&user, &card, &key).await;
    assert_eq!(later.status, 201);
    assert_eq!(
        later.body, first.body,
        "the replay is the stored response, not a fresh read"
    );
    assert_eq!(
        app.list_cards(&user).await.len(),
        1,
        "replays ran the work once"
    );

    // Same key, another body: refused.
    let other = TestCard::new(Brand::Mastercard);
    let r = app.bind(&user, &other, &key).await;
    r.assert_error(409, "idempotency_key_reused");
    // Same key, same body, another user's path: another request.
    app.bind(&user_id("idem2"), &card, &key)
        .await
        .assert_error(409, "idempotency_key_reused");
    assert_eq!(app.list_cards(&user).await.len(), 1);

    // Keys are scoped to the caller: the user's own token may use the
    // same key for its own request, and gets its own answer.
    let mine = app
        .bind_raw(
            &app.user_token(&user),
            &user,
            other.body().to_string().into_bytes(),
            Some(&key),
        )
        .await;
    let v = mine.expect_status(201);
    assert_eq!(v["last4"], other.last4(), "{v}");
    assert_eq!(app.list_cards(&user).await.len(), 2);

    // A refusal of a malformed request is not stored: the retry is
    // refused again the same way (not replayed).
    let bad = {
        let mut b = TestCard::visa().body();
        b["phone"] = json!("123");
        b
    };
    let k2 = idem_key();
    let r1 = app.bind_body(&user, &bad, &k2).await;
    r1.assert_error(400, "invalid_phone");
    let r2 = app.bind_body(&user, &bad, &k2).await;
    assert_eq!(r2.status, 400, "{}", r2.describe());
    assert_eq!(r2.error_code().as_deref(), Some("invalid_phone"));
    assert!(
        r2.headers.get("idempotent-replayed").is_none(),
        "{}",
        r2.describe()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fourth_bind_in_a_minute_is_rate_limited() {
    let app =
        TestApp::spawn(|c| c.channels.mock.mode = cardbind::config::MockModeSetting::Instant).await;
    fresh_rate_window().await;
    let user = user_id("rate");
    for i in 0..3 {
        let r = app.bind(&user, &TestCard::visa(), &idem_key()).await;
        assert_eq!(r.status, 201, "bind {}: {}", i + 1, r.describe());
    }
    let r = app.bind(&user, &TestCard::visa(), &idem_key()).await;
    r.assert_error(429, "rate_limited");
    let ra = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After: {:?}", r.headers));
    let secs: u64 = ra
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After is seconds: {ra}"));
    assert!((1..=60).contains(&secs), "Retry-After {secs}");
    assert_eq!(
        app.list_cards(&user).await.len(),
        3,
        "the limited bind stored nothing"
    );
    // Another user is not limited by alice's attempts.
    app.bind(&user_id("rate2"), &TestCard::visa(), &idem_key())
        .await
        .expect_status(201);
    // The user's own token counts against the same user.
    let r = app
        .bind_raw(
            &app.user_token(&user),
            &user,
            TestCard::visa().body().to_string().into_bytes(),
            Some(&idem_key()),
        )
        .await;
    r.assert_error(429, "rate_limited");
}
