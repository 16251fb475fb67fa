//! Freezing and unfreezing are for admins only; the BIN lookup.

use super::*;

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
