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

/// A header an operation reads once, or a query parameter, sent twice is
/// refused naming it (before, the first copy was taken, so `Authorization:
/// admin…` then `service…` acted as admin, and the other way round as
/// service): two credentials are `401`, any other `400 invalid_request`;
/// a parameter's odd name is not repeated back. The probes take neither
/// and answer as before.
#[tokio::test]
async fn a_header_or_query_parameter_sent_twice_is_refused() {
    let app = spawn();
    let admin = bearer("ops", "admin");
    let service = bearer("merchant", "service");
    let body = bind_body(VISA).to_string();
    for (name, first, second, status, code) in [
        (
            "Authorization",
            admin.as_str(),
            service.as_str(),
            401,
            "unauthenticated",
        ),
        (
            "Authorization",
            service.as_str(),
            admin.as_str(),
            401,
            "unauthenticated",
        ),
        (
            "Content-Type",
            "application/json",
            "text/plain",
            400,
            "invalid_request",
        ),
        (
            "Content-Type",
            "text/plain",
            "application/json",
            400,
            "invalid_request",
        ),
        ("Idempotency-Key", "k-one", "k-two", 400, "invalid_request"),
    ] {
        let mut req = app
            .client
            .post("/v1/users/u-twice/cards")
            .header("Idempotency-Key", "k-twice")
            .header(name, first)
            .header(name, second);
        if name != "Authorization" {
            req = req.header("Authorization", service.as_str());
        }
        if name != "Content-Type" {
            req = req.header("Content-Type", "application/json");
        }
        let v = assert_error(req.body(body.clone()).send().await, status, code).await;
        if status == 400 {
            assert_eq!(v["error"]["field"], name, "{v}");
        }
    }
    for (query, field) in [
        ("limit=1&limit=5", Some("limit")),
        ("limit=1&after=x&limit=1", Some("limit")),
        ("4111111111111111=1&4111111111111111=2", None),
    ] {
        let resp = app
            .client
            .get(format!("/v1/users/u-twice/cards?{query}"))
            .header("Authorization", service.as_str())
            .send()
            .await;
        let v = assert_error(resp, 400, "invalid_request").await;
        assert_eq!(v["error"]["field"].as_str(), field, "{v}");
        assert!(!v.to_string().contains("4111"), "{v}");
    }
    // Once each: answered.
    app.client
        .get("/v1/users/u-twice/cards?limit=5")
        .header("Authorization", service.as_str())
        .send()
        .await
        .assert_status_is_ok();
    app.client
        .get("/healthz")
        .header("Authorization", admin.as_str())
        .header("Authorization", service.as_str())
        .send()
        .await
        .assert_status_is_ok();
}
