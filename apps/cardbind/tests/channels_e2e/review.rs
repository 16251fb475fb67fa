//! Manual review: an unreachable channel sends binds to review where
//! operators decide, failed starts are retried only when the gateway says
//! not applied, and the breaker opens after five failures.

use super::*;

#[tokio::test]
async fn unreachable_channel_sends_binds_to_review_where_operators_decide() {
    let s = start_with(Some(closed_port_url())).await;
    let r1 = s.bind("rev-user-1", VISA, Some("wechat")).await;
    assert_eq!(r1.status, 202, "{}", r1.text);
    let c1 = r1.json();
    assert_eq!(c1["status"], "pending_review");
    let r2 = s.bind("rev-user-2", MC, Some("wechat")).await;
    assert_eq!(r2.status, 202, "{}", r2.text);
    let c2 = r2.json();
    let (id1, id2) = (c1["id"].as_str().unwrap(), c2["id"].as_str().unwrap());

    // Only operators see the queue.
    let r = s
        .send(
            s.http
                .get(s.url("/v1/admin/reviews"))
                .header("Authorization", &s.service),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = s
        .send(
            s.http
                .get(s.url("/v1/admin/reviews"))
                .header("Authorization", &s.admin),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let queued: Vec<String> = r.json()["cards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(queued, [id1, id2]);

    // Approve one (with the agreement the operator set up by hand), reject the other.
    let r = s
        .send(
            s.http
                .post(s.url(&format!("/v1/admin/reviews/{id1}/approve")))
                .header("Authorization", &s.admin)
                .json(&json!({"channel_ref": "manual-contract-1"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["status"], "active");
    let r = s
        .send(
            s.http
                .post(s.url(&format!("/v1/admin/reviews/{id2}/reject")))
                .header("Authorization", &s.admin),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let rejected = r.json();
    assert_eq!(rejected["status"], "failed");
    assert_eq!(rejected["failure_code"], "rejected_by_operator");
    assert_eq!(s.card("rev-user-1", id1).await["status"], "active");
    assert_eq!(
        s.consent("rev-user-1", id1).await["agreement_id"],
        "manual-contract-1"
    );
    assert_eq!(s.card("rev-user-2", id2).await["status"], "failed");
    // Decided once: the queue is empty and a second decision is refused.
    let r = s
        .send(
            s.http
                .get(s.url("/v1/admin/reviews"))
                .header("Authorization", &s.admin),
        )
        .await;
    assert_eq!(r.json()["cards"], json!([]));
    let r = s
        .send(
            s.http
                .post(s.url(&format!("/v1/admin/reviews/{id2}/reject")))
                .header("Authorization", &s.admin),
        )
        .await;
    assert_eq!(r.error_code(), "invalid_state_transition", "{}", r.text);

    // Each decision is in the audit log, by the operator.
    let approvals = s.audit("review.approve").await;
    assert_eq!(approvals.len(), 1, "{approvals:?}");
    assert_eq!(approvals[0]["card_id"], id1);
    assert_eq!(approvals[0]["actor"], "operator-1");
    assert_eq!(approvals[0]["outcome"], "ok");
    let rejections = s.audit("review.reject").await;
    let ok: Vec<&Value> = rejections.iter().filter(|e| e["outcome"] == "ok").collect();
    assert_eq!(ok.len(), 1, "{rejections:?}");
    assert_eq!(ok[0]["card_id"], id2);
    assert_eq!(ok[0]["actor"], "operator-1");
}

#[tokio::test]
async fn failed_starts_are_retried_only_when_the_gateway_says_not_applied() {
    let s = start().await;
    let presign = format!("POST {}", fw::PRESIGN_PATH);
    // What the gateway saw: S a start, Q a query; lower case when it failed.
    let kinds = |calls: &[fakes::ReceivedRequest]| -> String {
        calls
            .iter()
            .map(|r| {
                let k = if r.operation == presign {
                    'S'
                } else if r.operation.starts_with("GET ") {
                    'Q'
                } else {
                    '?'
                };
                if r.refusal.is_some() {
                    k.to_ascii_lowercase()
                } else {
                    k
                }
            })
            .collect()
    };
    // Two failed starts, each followed by a query answering "not found":
    // retried after a backoff, the third start succeeds.
    s.wechat.fail_next_presigns(2);
    let (id, _) = s.bind_redirect("retry-user-1", VISA, "wechat").await;
    let code = s.channel_code(&id).await;
    assert_eq!(kinds(&s.wechat.requests()), "sQsQS");
    assert_eq!(s.wechat.contract(&code).unwrap().0, "NOT_SIGNED");
    // More failures than retries (3): 1 + 3 starts, then manual review.
    let before = s.wechat.request_count();
    s.wechat.fail_next_presigns(10);
    let r = s.bind("retry-user-2", MC, Some("wechat")).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json()["status"], "pending_review");
    let calls = &s.wechat.requests()[before..];
    assert_eq!(kinds(calls), "sQsQsQs", "{calls:?}");
    assert!(calls.iter().all(|c| c.verified), "{calls:?}");
    // Queries succeeded in between, so the breaker never opened.
    let m = s.metrics().await;
    assert_eq!(
        metric(&m, r#"cardbind_channel_breaker_state{channel="wechat"}"#),
        Some(0.0)
    );
}

#[tokio::test]
async fn breaker_opens_after_five_failures_and_binds_skip_the_gateway() {
    let s = start().await;
    s.wechat.set_down(true);
    let mut seen = Vec::new();
    for (i, card) in [VISA, MC, VISA2, AMEX, MOCK_REDIRECT_CARD]
        .iter()
        .enumerate()
    {
        let r = s.bind(&format!("brk-user-{i}"), card, Some("wechat")).await;
        assert_eq!(r.status, 202, "{}", r.text);
        assert_eq!(r.json()["status"], "pending_review");
        seen.push(s.wechat.request_count());
    }
    // A failed start is followed by a query (was it applied?): two calls a
    // bind until the fifth failure opens the breaker; then none at all.
    assert_eq!(seen, [2, 4, 5, 5, 5], "gateway calls after each bind");
    assert!(s.wechat.requests().iter().all(|r| !r.verified));
    let m = s.metrics().await;
    assert_eq!(
        metric(&m, r#"cardbind_channel_breaker_state{channel="wechat"}"#),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, r#"cardbind_channel_breaker_state{channel="alipay"}"#),
        Some(0.0)
    );
    assert_eq!(
        metric(&m, r#"cardbind_channel_breaker_state{channel="mock"}"#),
        Some(0.0)
    );
    let open = metric(
        &m,
        r#"cardbind_channel_calls_total{channel="wechat",op="start_binding",outcome="circuit_open"}"#,
    );
    assert_eq!(open, Some(2.0), "{m}");
    // All five wait for an operator.
    let r = s
        .send(
            s.http
                .get(s.url("/v1/admin/reviews"))
                .header("Authorization", &s.admin),
        )
        .await;
    assert_eq!(r.json()["cards"].as_array().unwrap().len(), 5);
    // Other channels still work while WeChat's breaker is open.
    let r = s.bind("brk-user-0", MC, Some("mock")).await;
    assert_eq!(r.status, 201, "{}", r.text);
}
