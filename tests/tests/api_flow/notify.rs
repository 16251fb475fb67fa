//! Signed channel notifications activate and terminate, forged ones are
//! refused; consent is recorded per binding.

use super::*;

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

/// Two cards signed under one agreement (the channel named it twice, or
/// an operator gave it to another card): the first keeps it, the second
/// waits in manual review instead of becoming active on it (the black-box
/// run of 6 December 2026 found both active).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_card_signed_under_one_agreement_goes_to_review() {
    let app = TestApp::spawn(|c| {
        relaxed(c);
        c.channels.mock.mode = cardbind::config::MockModeSetting::Redirect;
        c.channels.mock.notify_secret = "a-test-notify-secret-for-mock".into();
    })
    .await;
    let (first_user, second_user) = (user_id("agr1"), user_id("agr2"));
    let first = id_of(
        &app.bind(&first_user, &TestCard::visa(), &idem_key())
            .await
            .expect_status(201),
    );
    let second = id_of(
        &app.bind(&second_user, &TestCard::visa(), &idem_key())
            .await
            .expect_status(201),
    );
    for (n, id) in [("evt-agr-1", &first), ("evt-agr-2", &second)] {
        let (body, sig) = app.mock_notification_naming(n, id, "signed", "agr-shared-1");
        let r = app.notify("mock", body, Some(&sig)).await;
        assert_eq!(r.status, 200, "{}", r.describe());
    }
    let one = app.get_card(&first_user, &first).await.expect_status(200);
    assert_eq!(one["status"], "active", "{one}");
    let two = app.get_card(&second_user, &second).await.expect_status(200);
    assert_eq!(two["status"], "pending_review", "{two}");
    let queue = app
        .get("/v1/admin/reviews", &app.admin_token())
        .await
        .expect_status(200);
    assert!(
        queue["cards"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["id"] == second.as_str())),
        "{queue}"
    );
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
