//! The whole binding flow over HTTP, in memory, with the mock channel in
//! each of its modes.

// Test code: helpers outside #[test] fns fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use cardbind::config::Config;
use cardbind_tests::{find_card, idem_key, the_default, user_id, Brand, TestApp, TestCard};
use serde_json::Value;

fn relaxed(cfg: &mut Config) {
    cfg.limits.binds_per_user_per_minute = 100;
}

fn id_of(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_owned()
}

/// The masked view of a card: what the API shows and nothing more.
fn assert_card_view(v: &Value, user: &str, card: &TestCard) {
    assert_eq!(v["user_id"], user, "{v}");
    assert_eq!(v["brand"], card.brand.api_name(), "{v}");
    assert_eq!(
        v["bin"]
            .as_str()
            .map(|b| card.number.starts_with(b) && (b.len() == 6 || b.len() == 8)),
        Some(true),
        "bin: {v}"
    );
    assert_eq!(v["last4"], card.last4(), "{v}");
    assert_eq!(v["expiry_month"], card.expiry_month, "{v}");
    assert_eq!(v["expiry_year"], card.expiry_year, "{v}");
    assert_eq!(v["channel"], "mock", "{v}");
    assert!(v["id"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
    assert!(
        v["created_at"].as_str().is_some_and(|s| !s.is_empty()),
        "created_at: {v}"
    );
    assert!(
        v["updated_at"].as_str().is_some_and(|s| !s.is_empty()),
        "updated_at: {v}"
    );
    assert!(v["is_default"].is_boolean(), "{v}");
    let text = v.to_string();
    for (what, secret) in card.secrets() {
        assert!(
            !text.contains(&secret),
            "the card view shows the {what}: {v}"
        );
    }
    assert!(
        v.get("card_number").is_none()
            && v.get("cvv").is_none()
            && v.get("id_number").is_none()
            && v.get("phone").is_none(),
        "{v}"
    );
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otp_flow_bind_verify_list_default_unbind_rebind() {
    let app = TestApp::spawn(relaxed).await;
    let user = user_id("alice");
    let a = TestCard::new(Brand::Visa);

    // Bind: 201, waiting for the OTP sent by SMS.
    let r = app.bind(&user, &a, &idem_key()).await;
    let va = r.expect_status(201);
    assert_card_view(&va, &user, &a);
    assert_eq!(va["status"], "pending_verification", "{va}");
    assert_eq!(
        va["is_default"], false,
        "a pending card is not the default: {va}"
    );
    assert_eq!(va["next_action"]["type"], "otp", "{va}");
    let hint = va["next_action"]["phone_hint"]
        .as_str()
        .unwrap_or_else(|| panic!("phone_hint: {va}"));
    assert!(
        hint.ends_with(&a.phone[7..]),
        "the hint shows the last four digits of the phone: {hint}"
    );
    assert!(hint.contains('*'), "the hint is masked: {hint}");
    let id_a = id_of(&va);

    // Verify with the mock's code: active and (the only active card) default.
    let vv = app.verify(&user, &id_a, "123456").await.expect_status(200);
    assert_eq!(vv["id"], id_a.as_str());
    assert_eq!(vv["status"], "active", "{vv}");
    assert_eq!(vv["is_default"], true, "{vv}");
    assert!(
        vv.get("next_action").is_none_or(Value::is_null),
        "no action left once active: {vv}"
    );

    let cards = app.list_cards(&user).await;
    assert_eq!(cards.len(), 1, "{cards:?}");
    assert_card_view(&cards[0], &user, &a);
    assert_eq!(cards[0]["status"], "active");
    assert_eq!(the_default(&cards).as_deref(), Some(id_a.as_str()));

    // Two more cards, both verified: the first card stays the default.
    let b = TestCard::new(Brand::Mastercard);
    let c = TestCard::new(Brand::UnionPay);
    let vb = app.bind(&user, &b, &idem_key()).await.expect_status(201);
    let id_b = id_of(&vb);
    assert_ne!(id_a, id_b);
    assert_eq!(
        app.verify(&user, &id_b, "123456").await.expect_status(200)["is_default"],
        false
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let vc = app.bind(&user, &c, &idem_key()).await.expect_status(201);
    let id_c = id_of(&vc);
    assert_eq!(
        app.verify(&user, &id_c, "123456").await.expect_status(200)["status"],
        "active"
    );
    let cards = app.list_cards(&user).await;
    assert_eq!(cards.len(), 3);
    assert_eq!(
        the_default(&cards).as_deref(),
        Some(id_a.as_str()),
        "the default stays while it is active"
    );

    // Set B as default: exactly one default, B.
    let d = app.set_default(&user, &id_b).await.expect_status(200);
    assert_eq!(d["id"], id_b.as_str());
    assert_eq!(d["is_default"], true, "{d}");
    let cards = app.list_cards(&user).await;
    assert_eq!(the_default(&cards).as_deref(), Some(id_b.as_str()));
    assert_eq!(cards.iter().filter(|c| c["is_default"] == true).count(), 1);
    assert_eq!(
        app.get_card(&user, &id_a).await.expect_status(200)["is_default"],
        false
    );

    // Unbind the default B: inactive, and the promotion rule (the active
    // card activated most recently) makes C the default, not A.
    let u = app.unbind(&user, &id_b).await.expect_status(200);
    assert_eq!(u["status"], "inactive", "{u}");
    assert_eq!(u["is_default"], false, "{u}");
    let cards = app.list_cards(&user).await;
    assert_eq!(find_card(&cards, &id_b)["status"], "inactive");
    assert_eq!(
        the_default(&cards).as_deref(),
        Some(id_c.as_str()),
        "promotion: most recently activated active card"
    );

    // Unbinding again is harmless.
    assert_eq!(
        app.unbind(&user, &id_b).await.expect_status(200)["status"],
        "inactive"
    );

    // An inactive card cannot be the default.
    app.set_default(&user, &id_b)
        .await
        .assert_error(409, "invalid_state_transition");

    // Binding the same card again reuses its record.
    let again = app.bind(&user, &b, &idem_key()).await.expect_status(201);
    assert_eq!(
        again["id"],
        id_b.as_str(),
        "rebinding reuses the record: {again}"
    );
    assert_eq!(again["status"], "pending_verification");
    assert_eq!(
        app.verify(&user, &id_b, "123456").await.expect_status(200)["status"],
        "active"
    );
    let cards = app.list_cards(&user).await;
    assert_eq!(cards.len(), 3, "still one record per card: {cards:?}");
    assert_eq!(the_default(&cards).as_deref(), Some(id_c.as_str()));

    // Binding a live card again is refused.
    app.bind(&user, &a, &idem_key())
        .await
        .assert_error(409, "card_already_bound");

    // Pagination: limit 1 walks every card once, in a stable order.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..10 {
        let path = match &after {
            Some(x) => format!("/v1/users/{user}/cards?limit=1&after={x}"),
            None => format!("/v1/users/{user}/cards?limit=1"),
        };
        let page = app
            .get(&path, &app.service_token())
            .await
            .expect_status(200);
        let cards = page["cards"].as_array().cloned().unwrap_or_default();
        assert!(cards.len() <= 1, "{page}");
        seen.extend(cards.iter().map(id_of));
        match page["next_after"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    let mut uniq = seen.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), 3, "pages: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_otp_is_refused_and_five_wrong_fail_the_binding() {
    let app = TestApp::spawn(relaxed).await;
    let user = user_id("otp");
    let card = TestCard::visa();
    let id = id_of(&app.bind(&user, &card, &idem_key()).await.expect_status(201));

    for i in 1..=4 {
        let e = app
            .verify(&user, &id, "000000")
            .await
            .assert_error(422, "invalid_otp");
        assert_eq!(e["field"], "otp", "attempt {i}: {e}");
        let v = app.get_card(&user, &id).await.expect_status(200);
        assert_eq!(
            v["status"], "pending_verification",
            "after {i} wrong codes: {v}"
        );
    }
    let fifth = app.verify(&user, &id, "000000").await;
    assert!((400..500).contains(&fifth.status), "{}", fifth.describe());
    let v = app.get_card(&user, &id).await.expect_status(200);
    assert_eq!(
        v["status"], "failed",
        "five wrong codes fail the binding: {v}"
    );
    assert_eq!(v["failure_code"], "invalid_otp", "{v}");

    // The right code no longer helps.
    let late = app.verify(&user, &id, "123456").await;
    assert!((400..500).contains(&late.status), "{}", late.describe());
    assert_eq!(
        app.get_card(&user, &id).await.expect_status(200)["status"],
        "failed"
    );

    // A malformed code is refused without counting.
    let other = TestCard::visa();
    let id2 = id_of(
        &app.bind(&user, &other, &idem_key())
            .await
            .expect_status(201),
    );
    let e = app
        .verify(&user, &id2, "12ab")
        .await
        .assert_error(422, "invalid_otp");
    assert_eq!(e["field"], "otp");
    assert_eq!(
        app.verify(&user, &id2, "123456").await.expect_status(200)["status"],
        "active"
    );

    // A failed card can be bound again (same record) and verified.
    let again = app.bind(&user, &card, &idem_key()).await.expect_status(201);
    assert_eq!(again["id"], id.as_str());
    assert_eq!(
        app.verify(&user, &id, "123456").await.expect_status(200)["status"],
        "active"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decline_is_channel_rejected_and_the_card_shows_failed() {
    let app = TestApp::spawn(|c| {
        relaxed(c);
        c.channels.mock.mode = cardbind::config::MockModeSetting::Decline;
        c.channels
            .mock
            .card_modes
            .insert("0777".into(), cardbind::config::MockModeSetting::Instant);
    })
    .await;
    let user = user_id("declined");
    let card = TestCard::new(Brand::Jcb);
    let r = app.bind(&user, &card, &idem_key()).await;
    let e = r.assert_error(422, "channel_rejected");
    assert!(!r.text().contains(&card.number));
    let _ = e;
    let cards = app.list_cards(&user).await;
    assert_eq!(cards.len(), 1, "the refused binding is recorded: {cards:?}");
    assert_eq!(cards[0]["status"], "failed", "{cards:?}");
    assert_eq!(cards[0]["failure_code"], "card_declined", "{cards:?}");
    assert_eq!(cards[0]["is_default"], false);
    assert_eq!(the_default(&cards), None);

    // A per-card mode overrides the default mode.
    let ok = TestCard::ending(Brand::Visa, "0777");
    let v = app.bind(&user, &ok, &idem_key()).await.expect_status(201);
    assert_eq!(v["status"], "active", "instant mode binds at once: {v}");
    assert_eq!(v["is_default"], true, "{v}");
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
    // Every third call fails (the 3rd and the 6th are starts here): the
    // retry, after the channel says the start was not applied, absorbs it.
    let app = TestApp::spawn(|c| {
        relaxed(c);
        c.channels.mock.mode = cardbind::config::MockModeSetting::Flaky;
        c.channels.mock.flaky_every = 3;
        c.channels.resilience.max_retries = 3;
    })
    .await;
    let user = user_id("flaky");
    for _ in 0..4 {
        let v = app
            .bind(&user, &TestCard::visa(), &idem_key())
            .await
            .expect_status(201);
        assert_eq!(v["status"], "active", "{v}");
    }
    // Two starts failed and were retried after the channel said they had
    // not been applied.
    assert_eq!(
        channel_calls(&app, "start_binding", "unavailable").await,
        2.0
    );
    assert_eq!(channel_calls(&app, "start_binding", "ok").await, 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze_and_unfreeze_are_for_admins_only() {
    let app = TestApp::spawn(|c| {
        relaxed(c);
        c.channels.mock.mode = cardbind::config::MockModeSetting::Instant;
    })
    .await;
    let user = user_id("frozen");
    let a = id_of(
        &app.bind(&user, &TestCard::visa(), &idem_key())
            .await
            .expect_status(201),
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let b = id_of(
        &app.bind(&user, &TestCard::new(Brand::Amex), &idem_key())
            .await
            .expect_status(201),
    );
    assert_eq!(
        the_default(&app.list_cards(&user).await).as_deref(),
        Some(a.as_str())
    );

    for token in [
        app.service_token(),
        app.user_token(&user),
        app.auditor_token(),
    ] {
        app.admin_action(&token, &user, &a, "freeze")
            .await
            .assert_error(403, "forbidden");
        assert_eq!(
            app.get_card(&user, &a).await.expect_status(200)["status"],
            "active"
        );
    }
    let f = app
        .admin_action(&app.admin_token(), &user, &a, "freeze")
        .await
        .expect_status(200);
    assert_eq!(f["status"], "frozen", "{f}");
    assert_eq!(
        f["is_default"], false,
        "a frozen card is not the default: {f}"
    );
    let cards = app.list_cards(&user).await;
    assert_eq!(find_card(&cards, &a)["status"], "frozen");
    assert_eq!(
        the_default(&cards).as_deref(),
        Some(b.as_str()),
        "the default moves to the other active card"
    );

    // A frozen card cannot be made the default, nor frozen twice.
    app.set_default(&user, &a)
        .await
        .assert_error(409, "invalid_state_transition");
    app.admin_action(&app.admin_token(), &user, &a, "freeze")
        .await
        .assert_error(409, "invalid_state_transition");

    for token in [app.service_token(), app.user_token(&user)] {
        app.admin_action(&token, &user, &a, "unfreeze")
            .await
            .assert_error(403, "forbidden");
    }
    let u = app
        .admin_action(&app.admin_token(), &user, &a, "unfreeze")
        .await
        .expect_status(200);
    assert_eq!(u["status"], "active", "{u}");
    let cards = app.list_cards(&user).await;
    assert_eq!(
        the_default(&cards).as_deref(),
        Some(b.as_str()),
        "the default stays on B while B is active"
    );
    app.admin_action(&app.admin_token(), &user, &a, "unfreeze")
        .await
        .assert_error(409, "invalid_state_transition");
    app.admin_action(&app.admin_token(), &user, "card_nosuchcard", "freeze")
        .await
        .assert_error(404, "not_found");

    // The audit log has the operator's changes, for auditors only.
    let ev = app
        .get(
            &format!("/v1/audit/events?user_id={user}"),
            &app.auditor_token(),
        )
        .await
        .expect_status(200);
    let text = ev.to_string();
    assert!(
        text.contains("binding.freeze") && text.contains("binding.unfreeze"),
        "{ev}"
    );
    app.get("/v1/audit/events", &app.service_token())
        .await
        .assert_error(403, "forbidden");
    app.get("/v1/audit/events", &app.admin_token())
        .await
        .assert_error(403, "forbidden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bin_lookup() {
    let app = TestApp::spawn(|_| {}).await;
    let t = app.service_token();
    let cases = [
        ("411111", "visa"),
        ("555555", "mastercard"),
        ("378282", "amex"),
        ("621234", "unionpay"),
        ("353011", "jcb"),
        ("601111", "discover"),
        ("220024", "mir"),
    ];
    for (bin, brand) in cases {
        let v = app
            .get(&format!("/v1/bins/{bin}"), &t)
            .await
            .expect_status(200);
        assert_eq!(v["brand"], brand, "{bin}: {v}");
    }
    // Eight digits are a BIN too.
    assert_eq!(
        app.get("/v1/bins/41111111", &t).await.expect_status(200)["brand"],
        "visa"
    );
    // Not a BIN.
    for bad in ["4111", "41111a", "4111111111111111"] {
        let r = app.get(&format!("/v1/bins/{bad}"), &t).await;
        assert!((400..500).contains(&r.status), "{bad}: {}", r.describe());
        cardbind_tests::assert_envelope(&r);
    }
    // No scheme has this range.
    app.get("/v1/bins/999999", &t)
        .await
        .assert_error(404, "not_found");
    // Needs a token.
    app.send(reqwest::Method::GET, "/v1/bins/411111", None, &[], None)
        .await
        .assert_error(401, "unauthenticated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_notifications_activate_and_terminate_forged_ones_are_refused() {
    let app = TestApp::spawn(|c| {
        relaxed(c);
        c.channels.mock.mode = cardbind::config::MockModeSetting::Redirect;
        c.channels.mock.notify_secret = "a-test-notify-secret-for-mock".into();
    })
    .await;
    let user = user_id("wallet");
    let v = app
        .bind(&user, &TestCard::visa(), &idem_key())
        .await
        .expect_status(201);
    let id = id_of(&v);
    assert_eq!(v["status"], "pending_verification", "{v}");
    assert_eq!(v["next_action"]["type"], "redirect", "{v}");
    let url = v["next_action"]["url"]
        .as_str()
        .unwrap_or_else(|| panic!("url: {v}"));
    assert!(url.starts_with("https://") && url.contains(&id), "{url}");

    // Forged: signed with another secret, no signature, tampered body.
    let (body, _) = app.mock_notification("evt-forged-1", &id, "signed");
    let forged = cardbind_tests::hmac_hex(b"not-the-secret", &body);
    app.notify("mock", body.clone(), Some(&forged))
        .await
        .assert_error(401, "invalid_signature");
    app.notify("mock", body.clone(), None)
        .await
        .assert_error(401, "invalid_signature");
    let (good_body, good_sig) = app.mock_notification("evt-1", &id, "signed");
    let tampered = String::from_utf8(good_body.clone())
        .expect("utf8")
        .replace("evt-1", "evt-2")
        .into_bytes();
    app.notify("mock", tampered, Some(&good_sig))
        .await
        .assert_error(401, "invalid_signature");
    assert_eq!(
        app.get_card(&user, &id).await.expect_status(200)["status"],
        "pending_verification",
        "forged notifications change nothing"
    );

    // Genuine: active and the default; a replay changes nothing.
    let r = app.notify("mock", good_body.clone(), Some(&good_sig)).await;
    assert_eq!(r.status, 200, "{}", r.describe());
    let c = app.get_card(&user, &id).await.expect_status(200);
    assert_eq!(c["status"], "active", "{c}");
    assert_eq!(c["is_default"], true, "{c}");
    assert_eq!(
        app.notify("mock", good_body, Some(&good_sig)).await.status,
        200
    );
    assert_eq!(
        app.get_card(&user, &id).await.expect_status(200)["status"],
        "active"
    );

    // The user unsigned in the wallet app: the card becomes inactive here.
    let (tb, ts) = app.mock_notification("evt-term-1", &id, "terminated");
    let r = app.notify("mock", tb, Some(&ts)).await;
    assert_eq!(r.status, 200, "{}", r.describe());
    let c = app.get_card(&user, &id).await.expect_status(200);
    assert_eq!(c["status"], "inactive", "{c}");
    assert_eq!(c["is_default"], false, "{c}");
    assert_eq!(the_default(&app.list_cards(&user).await), None);

    // An unknown channel.
    let (b2, s2) = app.mock_notification("evt-x", &id, "signed");
    let r = app.notify("nosuchchannel", b2, Some(&s2)).await;
    assert!((400..500).contains(&r.status), "{}", r.describe());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_is_recorded_per_binding() {
    let app = TestApp::spawn(|c| {
        relaxed(c);
        c.channels.mock.mode = cardbind::config::MockModeSetting::Instant;
    })
    .await;
    let user = user_id("consent");
    let id = id_of(
        &app.bind(&user, &TestCard::visa(), &idem_key())
            .await
            .expect_status(201),
    );
    let v = app
        .get(
            &format!("/v1/consents?user_id={user}"),
            &app.service_token(),
        )
        .await
        .expect_status(200);
    let text = v.to_string();
    assert!(text.contains(&id), "the consent names the binding: {v}");
    assert!(
        text.contains(&cardbind_tests::consent_sha256()),
        "the consent keeps the text hash: {v}"
    );
    assert!(
        text.contains("2024-06"),
        "the consent keeps the text version: {v}"
    );
    // Another user's consents are not for alice.
    app.get(
        &format!("/v1/consents?user_id={user}"),
        &app.user_token("someone-else"),
    )
    .await
    .assert_error(403, "forbidden");
}
