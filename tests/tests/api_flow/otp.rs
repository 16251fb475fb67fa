//! The OTP flow (bind, verify, list, default, unbind, rebind), wrong OTPs
//! and a declined card.

use super::*;

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
