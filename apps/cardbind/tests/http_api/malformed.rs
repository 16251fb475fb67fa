//! Envelopes for malformed requests: bad JSON, wrong types, unknown
//! fields, oversized bodies, bad parameters, unknown routes and methods.

use super::*;

#[tokio::test]
async fn malformed_json_is_an_invalid_request_envelope() {
    let app = spawn();
    let resp = app
        .client
        .post("/v1/users/u1/cards")
        .header("Authorization", bearer("m", "service"))
        .header("Idempotency-Key", "k-malformed")
        .content_type("application/json")
        .body("{\"card_number\": ")
        .send()
        .await;
    assert_error(resp, 400, "invalid_request").await;
}

#[tokio::test]
async fn wrong_types_name_the_field_without_echoing_the_value() {
    let app = spawn();
    let mut body = bind_body(VISA);
    body["expiry_month"] = json!("4111111111111111");
    let v = assert_error(
        app.bind("u1", "k-types", &body).await,
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(v["error"]["field"], "expiry_month");
    assert!(!v.to_string().contains("4111111111111111"), "{v}");

    let mut body = bind_body(VISA);
    body["card_number"] = json!(4111111111111111u64);
    let v = assert_error(
        app.bind("u1", "k-types2", &body).await,
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(v["error"]["field"], "card_number");
    assert!(!v.to_string().contains("4111111111111111"), "{v}");
}

#[tokio::test]
async fn unknown_and_missing_fields_are_refused_by_name() {
    let app = spawn();
    let mut body = bind_body(VISA);
    body["pin"] = json!("1234");
    let v = assert_error(
        app.bind("u1", "k-unknown", &body).await,
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(v["error"]["field"], "pin");

    let mut body = bind_body(VISA);
    body["consent"]["extra"] = json!(true);
    let v = assert_error(
        app.bind("u1", "k-unknown2", &body).await,
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(v["error"]["field"], "consent.extra");

    // Card data sent as a key by mistake is refused without repeating it,
    // and so is its retry (a malformed request's answer is not stored).
    for (key, at, field) in [
        ("4111 1111 1111 1111", None, "body"),
        ("13800138000", Some("consent"), "consent"),
        ("123", None, "body"),
        ("４１１１", Some("consent"), "consent"),
    ] {
        let mut body = bind_body(VISA);
        match at {
            Some(at) => body[at][key] = json!(1),
            None => body[key] = json!(1),
        }
        let idem = format!("k-digits-{}", key.len());
        let digits: String = key.chars().filter(|c| c.is_numeric()).collect();
        let v = assert_error(app.bind("u1", &idem, &body).await, 400, "invalid_request").await;
        assert_eq!(v["error"]["field"], field, "{v}");
        assert!(!v.to_string().contains(&digits), "{v}");
        let again = app.bind("u1", &idem, &body).await;
        assert!(again.0.headers().get("Idempotent-Replayed").is_none());
        let v = assert_error(again, 400, "invalid_request").await;
        assert!(!v.to_string().contains(&digits), "{v}");
    }

    // A key that cannot be shown as sent (not printable ASCII, a control
    // character in it, too long) is left out whole: the answer never names
    // a field that was not sent.
    for (i, (key, at, field)) in [
        ("é", None, "body"),
        ("ab\u{0}c", None, "body"),
        ("姓名", Some("consent"), "consent"),
        ("x\ty", Some("consent"), "consent"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut body = bind_body(VISA);
        match at {
            Some(at) => body[at][key] = json!(1),
            None => body[key] = json!(1),
        }
        let v = assert_error(
            app.bind("u1", &format!("k-unshown-{i}"), &body).await,
            400,
            "invalid_request",
        )
        .await;
        assert_eq!(v["error"]["field"], field, "{key:?}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("an unknown field"), "{key:?}: {v}");
    }

    let mut body = bind_body(VISA);
    body.as_object_mut().unwrap().remove("holder_name");
    let v = assert_error(
        app.bind("u1", "k-missing", &body).await,
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(v["error"]["field"], "holder_name");

    let mut body = bind_body(VISA);
    body["consent"]
        .as_object_mut()
        .unwrap()
        .remove("text_sha256");
    let v = assert_error(
        app.bind("u1", "k-missing2", &body).await,
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(v["error"]["field"], "consent.text_sha256");
}

#[tokio::test]
async fn huge_bodies_are_413_and_deep_json_is_400() {
    let app = spawn();
    let mut body = bind_body(VISA);
    body["holder_name"] = json!("a".repeat(70 * 1024));
    assert_error(
        app.bind("u1", "k-huge", &body).await,
        413,
        "payload_too_large",
    )
    .await;

    let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
    let resp = app
        .client
        .post("/v1/users/u1/cards")
        .header("Authorization", bearer("m", "service"))
        .header("Idempotency-Key", "k-deep")
        .content_type("application/json")
        .body(deep)
        .send()
        .await;
    let v = assert_error(resp, 400, "invalid_request").await;
    assert!(v["error"]["message"].as_str().unwrap().contains("nested"));
}

#[tokio::test]
async fn wrong_content_type_and_bad_query_parameters_are_400() {
    let app = spawn();
    let resp = app
        .client
        .post("/v1/users/u1/cards")
        .header("Authorization", bearer("m", "service"))
        .header("Idempotency-Key", "k-ct")
        .content_type("text/plain")
        .body(bind_body(VISA).to_string())
        .send()
        .await;
    assert_error(resp, 400, "invalid_request").await;
    // Only application/json, in UTF-8: a body in another charset, or of
    // another JSON media type, is refused rather than misread.
    for (i, ct) in [
        "application/json; charset=utf-16",
        "application/json;charset=\"ISO-8859-1\"",
        "application/merge-patch+json",
        "application/jsonx",
    ]
    .into_iter()
    .enumerate()
    {
        let resp = app
            .client
            .post("/v1/users/u1/cards")
            .header("Authorization", bearer("m", "service"))
            .header("Idempotency-Key", format!("k-ct-{i}"))
            .content_type(ct)
            .body(bind_body(VISA).to_string())
            .send()
            .await;
        let v = assert_error(resp, 400, "invalid_request").await;
        assert_eq!(v["error"]["field"], "Content-Type", "{ct}");
    }
    for (i, ct) in [
        "application/json; charset=UTF-8",
        "Application/JSON;charset=\"utf-8\"",
        "application/json; boundary=x",
    ]
    .into_iter()
    .enumerate()
    {
        let resp = app
            .client
            .post(format!("/v1/users/ct-ok-{i}/cards"))
            .header("Authorization", bearer("m", "service"))
            .header("Idempotency-Key", format!("k-ct-ok-{i}"))
            .content_type(ct)
            .body(bind_body(VISA).to_string())
            .send()
            .await;
        resp.assert_status(StatusCode::CREATED);
    }

    let resp = app
        .client
        .get("/v1/users/u1/cards?limit=abc")
        .header("Authorization", bearer("m", "service"))
        .send()
        .await;
    let v = assert_error(resp, 400, "invalid_request").await;
    assert_eq!(v["error"]["field"], "limit");
    let resp = app
        .client
        .get("/v1/users/u1/cards?limit=1000")
        .header("Authorization", bearer("m", "service"))
        .send()
        .await;
    assert_error(resp, 400, "invalid_request").await;
}

#[tokio::test]
async fn unknown_routes_and_methods_use_the_envelope() {
    let app = spawn();
    assert_error(app.client.get("/nope").send().await, 404, "not_found").await;
    let resp = app
        .client
        .patch("/v1/users/u1/cards")
        .header("Authorization", bearer("m", "service"))
        .send()
        .await;
    assert_error(resp, 405, "invalid_request").await;
}

/// The `Allow` methods the spec gives a path: its operations, `HEAD` with
/// `GET`, and `OPTIONS`.
fn spec_allow(ops: &Value) -> Vec<String> {
    let mut m: Vec<String> = ops
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.to_ascii_uppercase())
        .collect();
    if m.iter().any(|x| x == "GET") {
        m.push("HEAD".into());
    }
    m.push("OPTIONS".into());
    m.sort();
    m
}

fn allow_of(resp: &poem::test::TestResponse) -> Vec<String> {
    let mut m: Vec<String> = resp
        .0
        .headers()
        .get("allow")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    m.sort();
    m
}

#[tokio::test]
async fn every_route_answers_options_and_405_with_its_methods() {
    use poem::http::Method;
    let app = spawn();
    let spec: Value = serde_json::from_str(&cardbind::http::api_spec_json()).unwrap();
    let mut checked = 0;
    for (template, ops) in spec["paths"].as_object().unwrap() {
        let path = template
            .replace("{user_id}", "u1")
            .replace("{card_id}", "c1")
            .replace("{bin}", "411111")
            .replace("{channel}", "mock");
        let want = spec_allow(ops);

        // OPTIONS needs no credentials and names exactly the spec's methods.
        let resp = app.client.request(Method::OPTIONS, &path).send().await;
        assert_eq!(resp.0.status(), StatusCode::NO_CONTENT, "OPTIONS {path}");
        assert_eq!(allow_of(&resp), want, "OPTIONS {path}");

        // Every method the path does not serve: 405, the envelope, Allow.
        for method in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
            Method::TRACE,
        ] {
            if want.contains(&method.to_string()) {
                continue;
            }
            let resp = app
                .client
                .request(method.clone(), &path)
                .header("Authorization", bearer("m", "service"))
                .send()
                .await;
            assert_eq!(allow_of(&resp), want, "{method} {path}");
            assert_error(resp, 405, "invalid_request").await;
            checked += 1;
        }
    }
    assert!(checked > 40, "{checked}");
    // The spec and its page are routes too.
    let resp = app.client.post("/openapi.json").send().await;
    assert_eq!(allow_of(&resp), ["GET", "HEAD", "OPTIONS"]);
    assert_error(resp, 405, "invalid_request").await;
    // An unknown path has no methods: 404.
    let resp = app.client.request(Method::OPTIONS, "/nope").send().await;
    assert_eq!(resp.0.status(), StatusCode::NOT_FOUND);
    // An empty parameter in the middle of a path is still the route's.
    let resp = app
        .client
        .request(Method::OPTIONS, "/v1/users//cards")
        .send()
        .await;
    assert_eq!(resp.0.status(), StatusCode::NO_CONTENT);
    assert_eq!(allow_of(&resp), ["GET", "HEAD", "OPTIONS", "POST"]);
}

#[tokio::test]
async fn malformed_parameters_keep_their_codes_and_names() {
    let app = spawn();
    let get = |path: String, role: &'static str| {
        let client = &app.client;
        async move {
            client
                .get(path)
                .header("Authorization", bearer("m", role))
                .send()
                .await
        }
    };
    let cases: Vec<(String, &str, u16, &str, &str)> = vec![
        (
            "/v1/users//cards".into(),
            "service",
            400,
            "invalid_user_id",
            "user_id",
        ),
        (
            "/v1/users/bad*user/cards".into(),
            "service",
            400,
            "invalid_user_id",
            "user_id",
        ),
        (
            "/v1/users/-u/cards/c1".into(),
            "service",
            400,
            "invalid_user_id",
            "user_id",
        ),
        (
            "/v1/users/u1/cards/bad*card".into(),
            "service",
            400,
            "invalid_request",
            "card_id",
        ),
        (
            format!("/v1/users/u1/cards/{}", "c".repeat(65)),
            "service",
            400,
            "invalid_request",
            "card_id",
        ),
        (
            "/v1/users/u1/cards?after=bad*".into(),
            "service",
            400,
            "invalid_request",
            "after",
        ),
        (
            "/v1/consents?user_id=u1&after=bad*".into(),
            "service",
            400,
            "invalid_request",
            "after",
        ),
        (
            "/v1/consents?user_id=bad*".into(),
            "service",
            400,
            "invalid_user_id",
            "user_id",
        ),
        (
            "/v1/bins/41111".into(),
            "service",
            400,
            "invalid_request",
            "bin",
        ),
        (
            "/v1/bins/41111a".into(),
            "service",
            400,
            "invalid_request",
            "bin",
        ),
        (
            "/v1/audit/events?since=yesterday".into(),
            "auditor",
            400,
            "invalid_request",
            "since",
        ),
        (
            "/v1/audit/events?until=2030-02-30T00:00:00Z".into(),
            "auditor",
            400,
            "invalid_request",
            "until",
        ),
        (
            "/v1/audit/events?action=Binding%20Freeze".into(),
            "auditor",
            400,
            "invalid_request",
            "action",
        ),
        (
            "/v1/audit/events?after=-1".into(),
            "auditor",
            400,
            "invalid_request",
            "after",
        ),
        (
            "/v1/audit/events?card_id=bad*".into(),
            "auditor",
            400,
            "invalid_request",
            "card_id",
        ),
    ];
    for (path, role, status, code, field) in cases {
        let v = assert_error(get(path.clone(), role).await, status, code).await;
        assert_eq!(v["error"]["field"], field, "{path}: {v}");
    }
    // In range, the same parameters pass.
    for (path, role) in [
        (
            "/v1/audit/events?since=2030-01-31t12:00:00.5%2B08:00&action=binding.freeze",
            "auditor",
        ),
        ("/v1/consents?user_id=u1", "service"),
        ("/v1/bins/41111111", "service"),
        ("/v1/users/u1:a@b.c/cards?after=c1&limit=100", "service"),
    ] {
        let resp = get(path.to_owned(), role).await;
        assert_eq!(resp.0.status(), StatusCode::OK, "{path}");
    }

    // An empty parameter is named as any other malformed one.
    let resp = app
        .client
        .post("/v1/users/u1/cards//verify")
        .header("Authorization", bearer("m", "service"))
        .content_type("application/json")
        .body(json!({"otp": "123456"}).to_string())
        .send()
        .await;
    let v = assert_error(resp, 400, "invalid_request").await;
    assert_eq!(v["error"]["field"], "card_id", "{v}");

    // A channel the service does not know is a missing resource.
    let resp = app
        .client
        .post("/v1/channels/paypal/notify")
        .body("{}")
        .send()
        .await;
    let v = assert_error(resp, 404, "not_found").await;
    assert_eq!(v["error"]["field"], "channel");

    // An OTP that is not 4 to 8 digits is `invalid_otp`, before the card is looked up.
    let resp = app
        .client
        .post("/v1/users/u1/cards/c1/verify")
        .header("Authorization", bearer("m", "service"))
        .content_type("application/json")
        .body(json!({"otp": "12ab"}).to_string())
        .send()
        .await;
    let v = assert_error(resp, 422, "invalid_otp").await;
    assert_eq!(v["error"]["field"], "otp");

    // The consent's IP must be an address; a channel_ref 1 to 128 characters.
    let mut body = bind_body(VISA);
    body["consent"]["ip"] = json!("not-an-ip");
    let v = assert_error(app.bind("u1", "k-ip", &body).await, 400, "invalid_request").await;
    assert_eq!(v["error"]["field"], "consent.ip");
    let mut body = bind_body(VISA2);
    body["consent"]["ip"] = json!("2001:db8::1");
    assert_eq!(
        app.bind("u1", "k-ip6", &body).await.0.status(),
        StatusCode::CREATED
    );
    let resp = app
        .client
        .post("/v1/admin/reviews/c1/approve")
        .header("Authorization", bearer("op", "admin"))
        .content_type("application/json")
        .body(json!({"channel_ref": "长".repeat(129)}).to_string())
        .send()
        .await;
    let v = assert_error(resp, 400, "invalid_request").await;
    assert_eq!(v["error"]["field"], "channel_ref");
    // 128 characters are allowed, however many bytes they take (then the
    // card is looked up: there is none).
    let resp = app
        .client
        .post("/v1/admin/reviews/c1/approve")
        .header("Authorization", bearer("op", "admin"))
        .content_type("application/json")
        .body(json!({"channel_ref": "长".repeat(128)}).to_string())
        .send()
        .await;
    assert_error(resp, 404, "not_found").await;
}
