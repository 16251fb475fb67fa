//! Security headers, request ids and route-labelled metrics.

use super::*;

#[tokio::test]
async fn security_headers_and_request_ids_on_every_response() {
    let app = spawn();
    let ok = app.client.get("/healthz").send().await;
    ok.assert_status_is_ok();
    assert_security_headers(&ok);
    let csp =
        ok.0.headers()
            .get("content-security-policy")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_security_headers(&app.client.get("/nope").send().await);
    assert_security_headers(&app.client.get("/v1/users/u1/cards").send().await);
    let docs = app.client.get("/docs").send().await;
    docs.assert_status_is_ok();
    assert_security_headers(&docs);
    let slash = app.client.get("/docs/").send().await;
    slash.assert_status(StatusCode::PERMANENT_REDIRECT);
    slash.assert_header("location", "/docs");
    assert_security_headers(&slash);

    let echoed = app
        .client
        .get("/healthz")
        .header("X-Request-Id", "req-abc.123")
        .send()
        .await;
    echoed.assert_header("x-request-id", "req-abc.123");
    let replaced = app
        .client
        .get("/healthz")
        .header("X-Request-Id", "bad id with spaces")
        .send()
        .await;
    let id = replaced
        .0
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
}

#[tokio::test]
async fn metrics_label_routes_by_template() {
    let app = spawn();
    app.bind("u-metrics-secret", "k-m", &bind_body(VISA))
        .await
        .assert_status(StatusCode::CREATED);
    app.client
        .get("/v1/users/u-metrics-secret/cards")
        .header("Authorization", bearer("m", "service"))
        .send()
        .await
        .assert_status_is_ok();
    app.client
        .get("/v1/bins/411111")
        .header("Authorization", bearer("m", "service"))
        .send()
        .await
        .assert_status_is_ok();
    app.client.get("/nowhere/u-metrics-secret").send().await;
    let resp = app.client.get("/metrics").send().await;
    resp.assert_status_is_ok();
    let text = String::from_utf8(bytes(resp).await).unwrap();
    assert!(!text.contains("u-metrics-secret"), "{text}");
    assert!(
        text.contains(r#"route="/v1/users/{user_id}/cards""#),
        "{text}"
    );
    assert!(text.contains(r#"cardbind_http_requests_total{method="POST",route="/v1/users/{user_id}/cards",status="201"} 1"#), "{text}");
    assert!(text.contains(r#"route="/v1/bins/{bin}""#), "{text}");
    assert!(text.contains(r#"route="unmatched""#), "{text}");
    assert!(
        text.contains("cardbind_http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(
        text.contains(r#"cardbind_binds_total{outcome="active"} 1"#),
        "{text}"
    );
}
