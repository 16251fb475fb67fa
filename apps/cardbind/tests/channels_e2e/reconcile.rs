//! Reconcile settles bindings stuck in pending verification.

use super::*;

#[tokio::test]
async fn reconcile_settles_bindings_stuck_in_pending_verification() {
    let s = start().await;
    let user = "rec-user-1";
    // Alipay: signed at the gateway, the notification never arrives.
    let (ali_signed, url) = s.bind_redirect(user, VISA, "alipay").await;
    s.alipay.open_sign_page(&url).unwrap();
    let lost = s
        .alipay
        .user_signs(&s.channel_code(&ali_signed).await, "ali-lost-1")
        .unwrap();
    // Alipay: the user never opened the page: the gateway does not know it.
    let (ali_unknown, _) = s.bind_redirect(user, MC, "alipay").await;
    // WeChat: signed, callback lost; and one still waiting for the user.
    let (wx_signed, _) = s.bind_redirect(user, VISA2, "wechat").await;
    s.wechat
        .user_signs(&s.channel_code(&wx_signed).await, "EV-lost-1")
        .unwrap();
    let (wx_waiting, _) = s.bind_redirect(user, AMEX, "wechat").await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;

    let service = &s.running.built.usecases;
    // Younger than an hour: nothing is old enough.
    let r = service.reconcile(3600, 100).await.unwrap();
    assert_eq!(r.examined, 0, "{r:?}");
    let age = s.config.channels.reconcile_after_seconds;
    assert_eq!(age, 0);
    let r = service.reconcile(age, 100).await.unwrap();
    assert_eq!(
        (r.examined, r.activated, r.failed, r.still_pending, r.errors),
        (4, 2, 0, 2, 0),
        "{r:?}"
    );
    let a = s.card(user, &ali_signed).await;
    assert_eq!(a["status"], "active", "{a}");
    assert_eq!(
        s.consent(user, &ali_signed).await["agreement_id"],
        s.alipay
            .agreement(&s.channel_code(&ali_signed).await)
            .unwrap()
            .1
            .as_str()
    );
    // Unknown to the gateway within its verification window: still
    // waiting for the user (it fails once the window is over, as
    // `reconcile_settles_cards_left_pending` in the use cases shows).
    let b = s.card(user, &ali_unknown).await;
    assert_eq!(b["status"], "pending_verification", "{b}");
    assert_eq!(s.card(user, &wx_signed).await["status"], "active");
    assert_eq!(
        s.card(user, &wx_waiting).await["status"],
        "pending_verification"
    );
    // The gateways were asked, with verified calls.
    let queries = s
        .alipay
        .verified_methods()
        .iter()
        .filter(|m| *m == "alipay.user.agreement.query")
        .count();
    assert_eq!(queries, 2);
    let gets = s
        .wechat
        .verified_paths()
        .iter()
        .filter(|p| p.starts_with("GET "))
        .count();
    assert_eq!(gets, 2);
    assert_eq!(s.alipay.rejected_count() + s.wechat.rejected_count(), 0);
    // Reconciling is audited as channel events.
    let events = s.audit_of_card(&ali_signed).await;
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "binding.channel_event"),
        "{events:?}"
    );

    // Again: only the two still waiting are examined.
    let r = service.reconcile(age, 100).await.unwrap();
    assert_eq!((r.examined, r.still_pending), (2, 2), "{r:?}");
    // The lost notification finally arrives: acknowledged, nothing changes.
    let before = s.card(user, &ali_signed).await;
    let resp = s.notify_alipay(lost).await;
    assert_eq!((resp.status, resp.text.as_str()), (200, "success"));
    assert_eq!(s.card(user, &ali_signed).await, before);
}
