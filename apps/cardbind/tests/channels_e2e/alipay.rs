//! The Alipay binding flow end to end, against `FakeAlipay`.

use super::*;

#[tokio::test]
async fn alipay_binding_flow_end_to_end() {
    let s = start().await;
    let user = "ali-user-1";
    let (id, url) = s.bind_redirect(user, VISA, "alipay").await;
    assert!(
        url.starts_with(&format!("{}?", s.alipay.gateway_url())),
        "{url}"
    );
    // The user opens the signed page: the fake verifies it and opens the agreement.
    let code = s.channel_code(&id).await;
    assert_eq!(s.alipay.open_sign_page(&url).unwrap(), code);
    // The user signs in the Alipay app; Alipay posts the notification.
    let signed = s.alipay.user_signs(&code, "ali-notify-0001").unwrap();
    let r = s.notify_alipay(signed.clone()).await;
    assert_eq!((r.status, r.text.as_str()), (200, "success"), "{}", r.text);
    assert!(
        r.content_type.starts_with("text/plain"),
        "{}",
        r.content_type
    );
    let card = s.card(user, &id).await;
    assert_eq!(card["status"], "active", "{card}");
    assert_eq!(card["is_default"], true);
    assert!(card.get("next_action").is_none());
    let (_, agreement_no) = s.alipay.agreement(&s.channel_code(&id).await).unwrap();
    assert_eq!(
        s.consent(user, &id).await["agreement_id"],
        agreement_no.as_str()
    );

    // The same notification again: acknowledged, nothing changes.
    let r = s.notify_alipay(signed.clone()).await;
    assert_eq!((r.status, r.text.as_str()), (200, "success"));
    let again = s.card(user, &id).await;
    assert_eq!(again, card);
    let events = s.audit_of_card(&id).await;
    let applied = events
        .iter()
        .filter(|e| e["action"] == "binding.channel_event")
        .count();
    assert_eq!(applied, 1, "{events:?}");

    // Tampered (one value changed after signing) and forged (signed by a
    // stranger) notifications: 401 invalid_signature, the card unchanged.
    let tampered = String::from_utf8(signed)
        .unwrap()
        .replace("ali-notify-0001", "ali-notify-0009");
    let r = s.notify_alipay(tampered.into_bytes()).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (401, "invalid_signature"),
        "{}",
        r.text
    );
    let forged = s
        .alipay
        .forged_notification(&[
            ("notify_type", "dut_user_unsign"),
            ("notify_id", "ali-notify-forged"),
            ("app_id", s.alipay.app_id()),
            ("status", "UNSIGN"),
            ("agreement_no", &agreement_no),
            ("external_agreement_no", &s.channel_code(&id).await),
        ])
        .unwrap();
    let r = s.notify_alipay(forged).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (401, "invalid_signature"),
        "{}",
        r.text
    );
    assert_eq!(s.card(user, &id).await, card);

    // A second card, signed, then unsigned by the user in the Alipay app.
    let (id2, url2) = s.bind_redirect(user, MC, "alipay").await;
    s.alipay.open_sign_page(&url2).unwrap();
    let r = s
        .notify_alipay(
            s.alipay
                .user_signs(&s.channel_code(&id2).await, "ali-notify-0002")
                .unwrap(),
        )
        .await;
    assert_eq!((r.status, r.text.as_str()), (200, "success"));
    assert_eq!(s.card(user, &id2).await["status"], "active");
    let r = s
        .notify_alipay(
            s.alipay
                .user_unsigns(&s.channel_code(&id2).await, "ali-notify-0003")
                .unwrap(),
        )
        .await;
    assert_eq!((r.status, r.text.as_str()), (200, "success"));
    let card2 = s.card(user, &id2).await;
    assert_eq!(card2["status"], "inactive", "{card2}");
    let consent2 = s.consent(user, &id2).await;
    assert!(consent2["revoked_at"].is_string(), "{consent2}");
    assert_eq!(consent2["revoked_by"], "channel:alipay");
    assert_eq!(
        s.card(user, &id).await["status"],
        "active",
        "the other card is untouched"
    );

    // We unbind the first card: the gateway gets a verified unsign call.
    let r = s.unbind(user, &id).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["status"], "inactive");
    assert_eq!(s.alipay.agreement(&code).unwrap().0, "UNSIGN");
    assert!(s.consent(user, &id).await["revoked_at"].is_string());
    let methods = s.alipay.verified_methods();
    assert_eq!(
        methods
            .iter()
            .filter(|m| *m == "alipay.user.agreement.unsign")
            .count(),
        1,
        "one unsign (ours), none for the card the user unsigned: {methods:?}"
    );
    assert_eq!(s.alipay.rejected_count(), 0, "{:?}", s.alipay.requests());
}

/// Another product's message at the app's gateway address (pointed here
/// for `dut_user_unsign`): acknowledged as Alipay expects, so it is not
/// delivered again for a day, counted, and nothing changes; a tampered
/// copy is still refused.
#[tokio::test]
async fn another_products_message_is_acknowledged_and_changes_nothing() {
    let s = start().await;
    let user = "ali-user-other";
    let (id, url) = s.bind_redirect(user, VISA, "alipay").await;
    s.alipay.open_sign_page(&url).unwrap();
    let card = s.card(user, &id).await;
    let audit_before = s.audit_of_card(&id).await.len();

    let trade = s
        .alipay
        .other_product_message(Some("trade_status_sync"), "ali-other-0001")
        .unwrap();
    let r = s.notify_alipay(trade.clone()).await;
    assert_eq!((r.status, r.text.as_str()), (200, "success"), "{}", r.text);
    let tampered = String::from_utf8(trade)
        .unwrap()
        .replace("TRADE_SUCCESS", "TRADE_CLOSED");
    let r = s.notify_alipay(tampered.into_bytes()).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (401, "invalid_signature"),
        "{}",
        r.text
    );

    assert_eq!(s.card(user, &id).await, card);
    assert_eq!(s.audit_of_card(&id).await.len(), audit_before);
    let m = s.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"cardbind_channel_calls_total{channel="alipay",op="notification",outcome="not_acted_on"}"#
        ),
        Some(1.0),
        "{m}"
    );
    // The card's own signing still goes through afterwards.
    let signed = s
        .alipay
        .user_signs(&s.channel_code(&id).await, "ali-other-0002")
        .unwrap();
    let r = s.notify_alipay(signed).await;
    assert_eq!((r.status, r.text.as_str()), (200, "success"));
    assert_eq!(s.card(user, &id).await["status"], "active");
}
