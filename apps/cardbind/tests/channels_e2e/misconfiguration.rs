//! Misconfiguration: a wrong merchant key or Alipay app id goes to review
//! or shows at reconcile without failing cards; a genuine refusal still
//! fails the card.

use super::*;

#[tokio::test]
async fn a_wrong_merchant_key_sends_binds_to_review_and_a_retry_after_the_fix_binds() {
    // The operator installed another key than the one registered with
    // WeChat Pay: the gateway refuses our signature (401 SIGN_ERROR).
    let stranger = test_key(fakes::STRANGER).unwrap();
    let s = start_setup(Setup {
        wechat_private_key: Some(stranger.private_pkcs1_pem.clone()),
        ..Setup::default()
    })
    .await;
    let user = "misconf-user-1";
    let r = s.bind(user, VISA, Some("wechat")).await;
    // Not a decline: not 422, not failed; waiting for an operator.
    assert_eq!(r.status, 202, "{}", r.text);
    let card = r.json();
    assert_eq!(card["status"], "pending_review", "{card}");
    assert!(card.get("failure_code").is_none(), "{card}");
    let id = card["id"].as_str().unwrap().to_owned();
    assert_eq!(s.card(user, &id).await["status"], "pending_review");
    // The gateway saw one request, refused for its signature: no retry.
    let calls = s.wechat.requests();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].refusal.as_deref(), Some("bad signature"));

    // Alerted: the metric, with the breaker still closed.
    let m = s.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"cardbind_channel_calls_total{channel="wechat",op="start_binding",outcome="misconfigured"}"#
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, r#"cardbind_channel_breaker_state{channel="wechat"}"#),
        Some(0.0)
    );
    assert!(
        !m.contains(r#"outcome="rejected""#),
        "no refusal counted: {m}"
    );
    // Audited: what happened to the card and why.
    let events = s.audit_of_card(&id).await;
    let misconf: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "channel.misconfigured")
        .collect();
    assert_eq!(misconf.len(), 1, "{events:?}");
    assert_eq!(misconf[0]["actor"], "channel:wechat");
    assert_eq!(misconf[0]["outcome"], "channel_unavailable");
    assert_eq!(misconf[0]["detail"], "start_binding: SIGN_ERROR");
    assert!(events.iter().any(|e| e["action"] == "binding.channel_start"
        && e["detail"] == "pending_verification -> pending_review"));
    // In the review queue.
    let r = s
        .send(
            s.http
                .get(s.url("/v1/admin/reviews"))
                .header("Authorization", &s.admin),
        )
        .await;
    assert!(r.text.contains(&id), "{}", r.text);
    // A retry before the fix: the same answer, still in review, not failed.
    let r = s.admin_post(&format!("/v1/admin/reviews/{id}/retry")).await;
    assert_eq!(r.json()["status"], "pending_review", "{}", r.text);

    // The operator installs the right key and restarts.
    let s = s.restart(Setup::default()).await;
    let r = s.admin_post(&format!("/v1/admin/reviews/{id}/retry")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["status"], "pending_verification", "{v}");
    assert_eq!(v["next_action"]["type"], "redirect", "{v}");
    // The user signs in WeChat; the callback activates the card.
    let code = s.channel_code(&id).await;
    let r = s
        .notify_wechat(&s.wechat.user_signs(&code, "EV-misconf-1").unwrap())
        .await;
    assert!((200..300).contains(&r.status), "{} {}", r.status, r.text);
    assert_eq!(s.card(user, &id).await["status"], "active");
    // No card data in what the misconfiguration left behind.
    let text = serde_json::to_string(&s.audit_of_card(&id).await).unwrap();
    for secret in [VISA, "13800138000", "11010519491231002X", "张三"] {
        assert!(!text.contains(secret), "{secret}");
    }
}

#[tokio::test]
async fn a_genuine_refusal_still_fails_the_card_with_422() {
    let s = start().await;
    s.wechat.refuse_presigns(Some((403, "RULE_LIMIT")));
    let r = s.bind("decline-user-1", VISA, Some("wechat")).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (422, "channel_rejected"),
        "{}",
        r.text
    );
    let m = s.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"cardbind_channel_calls_total{channel="wechat",op="start_binding",outcome="ok"}"#
        ),
        Some(1.0),
        "a refusal at start is an answer: {m}"
    );
    assert!(!m.contains("misconfigured"), "{m}");
    assert!(s.audit("channel.misconfigured").await.is_empty());
    let r = s
        .send(
            s.http
                .get(s.url("/v1/users/decline-user-1/cards"))
                .header("Authorization", &s.service),
        )
        .await;
    let cards = r.json()["cards"].as_array().unwrap().clone();
    assert_eq!(cards.len(), 1, "{}", r.text);
    assert_eq!(cards[0]["status"], "failed");
    assert_eq!(cards[0]["failure_code"], "RULE_LIMIT");
}

#[tokio::test]
async fn a_wrong_alipay_app_id_shows_at_reconcile_and_unbind_without_failing_cards() {
    // Alipay's signing page URL is built locally, so a bind cannot see the
    // mistake; the first call to the gateway does.
    let s = start_setup(Setup {
        alipay_app_id: Some("2021000000009999".into()),
        ..Setup::default()
    })
    .await;
    let user = "misconf-ali-1";
    let (id, _url) = s.bind_redirect(user, VISA, "alipay").await;
    let service = &s.running.built.usecases;
    let report = service.reconcile(0, 100).await.unwrap();
    assert_eq!(
        (report.examined, report.errors, report.failed),
        (1, 1, 0),
        "{report:?}"
    );
    assert_eq!(s.card(user, &id).await["status"], "pending_verification");
    // Unbinding works locally; the channel side is left for the operator.
    let r = s.unbind(user, &id).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["status"], "inactive");
    let events = s.audit_of_card(&id).await;
    let details: Vec<&str> = events
        .iter()
        .filter(|e| e["action"] == "channel.misconfigured")
        .filter_map(|e| e["detail"].as_str())
        .collect();
    assert_eq!(
        details,
        ["query: isv.invalid-app-id", "unbind: isv.invalid-app-id"],
        "{events:?}"
    );
    assert!(events
        .iter()
        .any(|e| e["action"] == "binding.channel_unsign" && e["outcome"] == "channel_unavailable"));
    let m = s.metrics().await;
    for op in ["query", "unbind"] {
        assert_eq!(
            metric(
                &m,
                &format!(
                    r#"cardbind_channel_calls_total{{channel="alipay",op="{op}",outcome="misconfigured"}}"#
                )
            ),
            Some(1.0),
            "{op}: {m}"
        );
    }
}
