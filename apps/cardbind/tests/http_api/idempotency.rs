//! Idempotency keys (replays, reuse, concurrency, holds, transient
//! failures) and the bind rate limit.

use super::*;

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
    // A key that is not visible ASCII is there, but malformed.
    let resp = app
        .client
        .post("/v1/users/u-idem/cards")
        .header("Authorization", bearer("merchant", "service"))
        .header(
            "Idempotency-Key",
            poem::http::HeaderValue::from_bytes("ключ".as_bytes()).unwrap(),
        )
        .content_type("application/json")
        .body(body.to_string())
        .send()
        .await;
    let v = assert_error(resp, 400, "invalid_request").await;
    assert_eq!(v["error"]["field"], "Idempotency-Key");
    // Two keys: which one would a retry send? Refused, and nothing bound.
    let resp = app
        .client
        .post("/v1/users/u-two-keys/cards")
        .header("Authorization", bearer("merchant", "service"))
        .header("Idempotency-Key", "k-one")
        .header("Idempotency-Key", "k-two")
        .content_type("application/json")
        .body(bind_body(VISA2).to_string())
        .send()
        .await;
    let v = assert_error(resp, 400, "invalid_request").await;
    assert_eq!(v["error"]["field"], "Idempotency-Key");
    let first = app.bind("u-two-keys", "k-one", &bind_body(VISA2)).await;
    first.assert_status(StatusCode::CREATED);
    first.assert_header_is_not_exist("Idempotent-Replayed");
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
    opts.http.idempotency_lease_seconds = 45;
    let app = spawn_with(opts);
    let body = bind_body(VISA);
    let second = async {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        app.bind("u-slow", "k-slow", &body).await
    };
    let (first, second) = tokio::join!(app.bind("u-slow", "k-slow", &body), second);
    first.assert_status(StatusCode::ACCEPTED);
    // Retry at the latest when the holder's lease (45 s) would end.
    let retry: u64 = second.0.headers()["Retry-After"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((44..=45).contains(&retry), "{retry}");
    let v = assert_error(second, 409, "idempotency_key_in_progress").await;
    assert_eq!(v["error"]["field"], "Idempotency-Key");
    let third = app.bind("u-slow", "k-slow", &body).await;
    third.assert_status(StatusCode::ACCEPTED);
    third.assert_header("Idempotent-Replayed", "true");
}

#[tokio::test]
async fn transient_failures_release_the_key() {
    let app = spawn();
    // A first bind makes the vault's digest key (kept in the store, then
    // cached), as any running service has (with nothing cached, see below).
    app.bind("u-warm", "k-warm", &bind_body(VISA2))
        .await
        .assert_status(StatusCode::CREATED);
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

/// A bind sent with the wrong `Content-Type`, then again with it mended
/// under the same key and body: the retry binds (the refusal was not
/// stored), and its answer is the one replayed from then on.
#[tokio::test]
async fn a_retry_with_a_mended_content_type_runs() {
    let app = spawn();
    let body = bind_body(VISA).to_string();
    let send = |content_type: &'static str| {
        app.client
            .post("/v1/users/u-ct/cards")
            .header("Authorization", bearer("merchant", "service"))
            .header("Idempotency-Key", "k-ct")
            .header("Content-Type", content_type)
            .body(body.clone())
            .send()
    };
    let refused = send("text/plain").await;
    assert!(refused.0.headers().get("Idempotent-Replayed").is_none());
    assert_eq!(refused.0.status(), StatusCode::BAD_REQUEST);
    let bound = send("application/json").await;
    bound.assert_status(StatusCode::CREATED);
    bound.assert_header_is_not_exist("Idempotent-Replayed");
    let again = send("application/json").await;
    again.assert_status(StatusCode::CREATED);
    again.assert_header("Idempotent-Replayed", "true");
}

/// A bind refused for its body (a mistyped card number), then sent again
/// mended under the same key: the retry binds (nothing ran, so the key is
/// not bound to the refused body), and from then on the key is the mended
/// request's: replayed for it, `idempotency_key_reused` for any other.
#[tokio::test]
async fn a_retry_with_a_mended_body_runs() {
    let app = spawn();
    let mistyped = bind_body("4111111111111112");
    assert_error(
        app.bind("u-fix", "k-fix", &mistyped).await,
        400,
        "invalid_card_number",
    )
    .await;
    let bound = app.bind("u-fix", "k-fix", &bind_body(VISA)).await;
    bound.assert_status(StatusCode::CREATED);
    bound.assert_header_is_not_exist("Idempotent-Replayed");
    let again = app.bind("u-fix", "k-fix", &bind_body(VISA)).await;
    again.assert_status(StatusCode::CREATED);
    again.assert_header("Idempotent-Replayed", "true");
    for other in [mistyped, bind_body(VISA2)] {
        assert_error(
            app.bind("u-fix", "k-fix", &other).await,
            409,
            "idempotency_key_reused",
        )
        .await;
    }
}

/// A key released by a transient failure (a `429` here: the work may have
/// begun on another refusal, a `503`), then sent with a malformed head: the
/// refusal does not free the key for another request. The same request
/// mended runs; another body under the key is `idempotency_key_reused`
/// (it ran as a new request, past the rate limit's refusal).
#[tokio::test]
async fn a_malformed_retry_of_a_released_key_keeps_it_bound_to_its_request() {
    let app = spawn();
    let cards = [VISA, VISA2, MC_OTP];
    for (i, card) in cards.iter().enumerate() {
        app.bind("u-rel", &format!("k-rel-{i}"), &bind_body(card))
            .await
            .assert_status(StatusCode::CREATED);
    }
    let first = bind_body(AMEX_REDIRECT).to_string();
    let send = |body: String, content_type: &'static str| {
        app.client
            .post("/v1/users/u-rel/cards")
            .header("Authorization", bearer("merchant", "service"))
            .header("Idempotency-Key", "k-rel")
            .header("Content-Type", content_type)
            .body(body)
            .send()
    };
    assert_error(
        send(first.clone(), "application/json").await,
        429,
        "rate_limited",
    )
    .await;
    assert_eq!(
        send(first.clone(), "text/plain").await.0.status(),
        StatusCode::BAD_REQUEST
    );
    assert_error(
        send(
            bind_body("6011111111111117").to_string(),
            "application/json",
        )
        .await,
        409,
        "idempotency_key_reused",
    )
    .await;
    assert_error(send(first, "application/json").await, 429, "rate_limited").await;
}

#[tokio::test]
async fn a_key_store_outage_is_a_storage_outage_not_a_key_service_one() {
    // Nothing cached: the vault reads its digest key from the store, which
    // is down. The key service is up.
    let app = spawn();
    app.store.set_unavailable(true);
    assert_error(
        app.bind("u-cold", "k-cold", &bind_body(VISA)).await,
        503,
        "storage_unavailable",
    )
    .await;
    app.store.set_unavailable(false);
    app.bind("u-cold", "k-cold", &bind_body(VISA))
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

/// A key service that refuses the idempotency digest (a disabled or denied
/// KMS key) answers as a bind's own seal does: `503
/// key_service_unavailable`, nothing bound, the key free for a retry.
#[tokio::test]
async fn a_key_service_refusing_the_digest_is_503_and_binds_nothing() {
    let mut app = spawn();
    let mut refusing = cardbind_ports::keys::MockCardVault::new();
    refusing
        .expect_keyed_digest()
        .returning(|_, _| Err(cardbind_ports::KeyError::Refused("key disabled".into())));
    let mut ports = app.state.usecases.ports().clone();
    let working = std::mem::replace(&mut ports.vault, Arc::new(refusing));
    app.state.usecases =
        cardbind_usecases::UseCases::new(ports.clone(), app.state.usecases.policy().clone());
    app.client = poem::test::TestClient::new(poem::EndpointExt::boxed(cardbind::http::app(
        app.state.clone(),
    )));
    let body = bind_body(VISA);
    let v = assert_error(
        app.bind("u-refused", "k-refused", &body).await,
        503,
        "key_service_unavailable",
    )
    .await;
    assert!(!v.to_string().contains("disabled"), "{v}");
    // The key service back: the same key binds, once.
    ports.vault = working;
    app.state.usecases =
        cardbind_usecases::UseCases::new(ports, app.state.usecases.policy().clone());
    app.client = poem::test::TestClient::new(poem::EndpointExt::boxed(cardbind::http::app(
        app.state.clone(),
    )));
    app.bind("u-refused", "k-refused", &body)
        .await
        .assert_status(StatusCode::CREATED);
}
