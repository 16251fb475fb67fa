//! Channel timeouts and flaky channels: beyond the retries a bind waits for
//! review (and an admin approves), within them it binds.

use super::*;

/// The sum of the `cardbind_channel_calls_total` samples for `op` and
/// `outcome`, from `/metrics`.
async fn channel_calls(app: &TestApp, op: &str, outcome: &str) -> f64 {
    let m = app
        .send(reqwest::Method::GET, "/metrics", None, &[], None)
        .await;
    assert_eq!(m.status, 200, "{}", m.describe());
    m.text()
        .lines()
        .filter(|l| l.starts_with("cardbind_channel_calls_total{"))
        .filter(|l| {
            l.contains(&format!("op=\"{op}\"")) && l.contains(&format!("outcome=\"{outcome}\""))
        })
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

async fn review_flow(app: &TestApp) {
    let user = user_id("review");
    let card = TestCard::new(Brand::Discover);
    let r = app.bind(&user, &card, &idem_key()).await;
    let v = r.expect_status(202);
    assert_eq!(v["status"], "pending_review", "{v}");
    assert_eq!(v["is_default"], false);
    let id = id_of(&v);

    // In the queue, for admins only.
    let q = app.reviews().await.expect_status(200);
    let queued = q["cards"]
        .as_array()
        .unwrap_or_else(|| panic!("reviews: {q}"));
    assert!(queued.iter().any(|c| c["id"] == id.as_str()), "{q}");
    app.get("/v1/admin/reviews", &app.service_token())
        .await
        .assert_error(403, "forbidden");
    app.get("/v1/admin/reviews", &app.user_token(&user))
        .await
        .assert_error(403, "forbidden");

    // A user cannot verify their way out of review.
    let e = app.verify(&user, &id, "123456").await;
    assert!((400..500).contains(&e.status), "{}", e.describe());

    // Approve: active, the default, out of the queue.
    app.post_json(
        &format!("/v1/admin/reviews/{id}/approve"),
        &app.service_token(),
        &serde_json::json!({}),
    )
    .await
    .assert_error(403, "forbidden");
    let a = app.review_decision(&id, "approve").await.expect_status(200);
    assert_eq!(a["status"], "active", "{a}");
    assert_eq!(a["is_default"], true, "{a}");
    let q = app.reviews().await.expect_status(200);
    assert!(
        !q["cards"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["id"] == id.as_str())),
        "{q}"
    );
    let cards = app.list_cards(&user).await;
    assert_eq!(the_default(&cards).as_deref(), Some(id.as_str()));
    // Approving twice is a state error.
    app.review_decision(&id, "approve")
        .await
        .assert_error(409, "invalid_state_transition");

    // A second one is rejected: failed.
    let card2 = TestCard::new(Brand::Mir);
    let id2 = id_of(
        &app.bind(&user, &card2, &idem_key())
            .await
            .expect_status(202),
    );
    let j = app.review_decision(&id2, "reject").await.expect_status(200);
    assert_eq!(j["status"], "failed", "{j}");
    assert_eq!(
        app.get_card(&user, &id2).await.expect_status(200)["status"],
        "failed"
    );
    app.review_decision("card_doesnotexist", "approve")
        .await
        .assert_error(404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_timeout_beyond_retries_waits_for_review_and_admin_approves() {
    let app = TestApp::spawn(|c| {
        relaxed(c);
        c.channels.mock.mode = cardbind::config::MockModeSetting::Timeout;
        c.channels.mock.timeout_after_ms = 5_000;
        c.channels.resilience.timeout_ms = 200;
        c.channels.resilience.max_retries = 1;
        c.channels.resilience.breaker_failures = 1000;
    })
    .await;
    review_flow(&app).await;
    // One retry per start: two timed-out attempts for each of two binds.
    assert_eq!(channel_calls(&app, "start_binding", "timeout").await, 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_channel_beyond_retries_waits_for_review() {
    // Every call fails: more than the retries can absorb.
    let app = TestApp::spawn(|c| {
        relaxed(c);
        c.channels.mock.mode = cardbind::config::MockModeSetting::Flaky;
        c.channels.mock.flaky_every = 1;
        c.channels.resilience.max_retries = 3;
        c.channels.resilience.breaker_failures = 1000;
    })
    .await;
    review_flow(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_channel_within_retries_binds() {
    // Every third call of each operation fails (the 3rd and the 6th
    // starts here): the retry, after the channel says the start was not
    // applied (a query, counted apart), absorbs it.
    let app = TestApp::spawn(|c| {
        relaxed(c);
        c.channels.mock.mode = cardbind::config::MockModeSetting::Flaky;
        c.channels.mock.flaky_every = 3;
        c.channels.resilience.max_retries = 3;
    })
    .await;
    let user = user_id("flaky");
    for _ in 0..6 {
        let v = app
            .bind(&user, &TestCard::visa(), &idem_key())
            .await
            .expect_status(201);
        assert_eq!(v["status"], "active", "{v}");
    }
    // Two starts (the 3rd and the 6th) failed and were retried after the
    // channel said they had not been applied; the retries are the 4th and
    // the 7th.
    assert_eq!(
        channel_calls(&app, "start_binding", "unavailable").await,
        2.0
    );
    assert_eq!(channel_calls(&app, "start_binding", "ok").await, 6.0);
}
