//! Malformed bodies are a 4xx with the error envelope, never a 5xx.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_are_4xx_with_the_envelope_never_5xx() {
    let app =
        TestApp::spawn(|c| c.channels.mock.mode = cardbind::config::MockModeSetting::Instant).await;
    let good = TestCard::visa().body();
    let token = app.service_token();

    let without = |k: &str| {
        let mut b = good.clone();
        b.as_object_mut().expect("object").remove(k);
        b.to_string().into_bytes()
    };
    let with = |k: &str, v: Value| {
        let mut b = good.clone();
        b[k] = v;
        b.to_string().into_bytes()
    };
    let mut deep = String::new();
    for _ in 0..5000 {
        deep.push_str("{\"a\":");
    }
    deep.push('1');
    for _ in 0..5000 {
        deep.push('}');
    }
    let mut deep_in_field = String::from("{\"card_number\":");
    deep_in_field.push_str(&"[".repeat(200));
    deep_in_field.push_str(&"]".repeat(200));
    deep_in_field.push('}');
    let big = {
        let mut b = good.clone();
        b["holder_name"] = json!("A".repeat(10 * 1024 * 1024));
        b.to_string().into_bytes()
    };
    let mut non_utf8 = br#"{"card_number":""#.to_vec();
    non_utf8.extend_from_slice(&[0xff, 0xfe, 0xc3, 0x28]);
    non_utf8.extend_from_slice(br#"","expiry_month":1}"#);
    let mut non_utf8_name = good.to_string().into_bytes();
    let pos = non_utf8_name
        .windows(13)
        .position(|w| w == b"\"holder_name\"")
        .expect("holder_name")
        + 15;
    non_utf8_name[pos] = 0xff;

    let cases: Vec<(&str, Vec<u8>, &str, Option<u16>)> = vec![
        (
            "truncated JSON",
            br#"{"card_number": "4111"#.to_vec(),
            "application/json",
            Some(400),
        ),
        (
            "not JSON",
            b"card_number=4111111111111111".to_vec(),
            "application/json",
            Some(400),
        ),
        ("empty body", Vec::new(), "application/json", Some(400)),
        ("null", b"null".to_vec(), "application/json", Some(400)),
        ("array", b"[]".to_vec(), "application/json", Some(400)),
        (
            "string",
            b"\"hello\"".to_vec(),
            "application/json",
            Some(400),
        ),
        (
            "empty object",
            b"{}".to_vec(),
            "application/json",
            Some(400),
        ),
        (
            "month as text",
            with("expiry_month", json!("twelve")),
            "application/json",
            Some(400),
        ),
        (
            "month negative",
            with("expiry_month", json!(-1)),
            "application/json",
            Some(400),
        ),
        (
            "month huge",
            with("expiry_month", json!(1e30)),
            "application/json",
            Some(400),
        ),
        (
            "number as number",
            with("card_number", json!(4111111111111111u64)),
            "application/json",
            Some(400),
        ),
        (
            "consent as text",
            with("consent", json!("yes")),
            "application/json",
            Some(400),
        ),
        (
            "null card number",
            with("card_number", Value::Null),
            "application/json",
            Some(400),
        ),
        (
            "missing card_number",
            without("card_number"),
            "application/json",
            Some(400),
        ),
        (
            "missing consent",
            without("consent"),
            "application/json",
            Some(400),
        ),
        (
            "missing id_number",
            without("id_number"),
            "application/json",
            Some(400),
        ),
        (
            "missing phone",
            without("phone"),
            "application/json",
            Some(400),
        ),
        (
            "unknown field",
            with("pin", json!("1234")),
            "application/json",
            Some(400),
        ),
        (
            "deeply nested",
            deep.into_bytes(),
            "application/json",
            Some(400),
        ),
        (
            "nested in a field",
            deep_in_field.into_bytes(),
            "application/json",
            Some(400),
        ),
        ("non-UTF-8 bytes", non_utf8, "application/json", Some(400)),
        (
            "non-UTF-8 in a field",
            non_utf8_name,
            "application/json",
            Some(400),
        ),
        (
            "text/plain",
            good.to_string().into_bytes(),
            "text/plain",
            None,
        ),
    ];
    for (what, body, ct, status) in cases {
        let user = user_id("m");
        let key = idem_key();
        let r = app
            .try_send(
                Method::POST,
                &format!("/v1/users/{user}/cards"),
                Some(&token),
                &[("idempotency-key", &key)],
                Some((body, ct)),
            )
            .await
            .unwrap_or_else(|e| panic!("{what}: no HTTP response: {e}"));
        assert!((400..500).contains(&r.status), "{what}: {}", r.describe());
        if let Some(s) = status {
            assert_eq!(r.status, s, "{what}: {}", r.describe());
        }
        let e = assert_envelope(&r);
        if r.status == 413 {
            assert_eq!(e["code"], "payload_too_large", "{what}");
        }
        if r.status == 400 {
            assert!(
                [
                    "invalid_request",
                    "invalid_card_number",
                    "invalid_expiry",
                    "invalid_holder_name",
                    "invalid_id_number",
                    "invalid_phone"
                ]
                .contains(&e["code"].as_str().unwrap_or("")),
                "{what}: {}",
                r.describe()
            );
        }
        assert!(
            r.text().len() < 4096,
            "{what}: the error echoes the body ({} bytes)",
            r.text().len()
        );
        assert!(
            app.list_cards(&user).await.is_empty(),
            "{what}: bound something"
        );
    }
    // 10 MB: the service may answer before it has read the body, so read
    // the answer the way a careful client does (while still writing).
    let user = user_id("m");
    let head = format!(
        "POST /v1/users/{user}/cards HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nIdempotency-Key: {}\r\nContent-Type: application/json",
        app.running().addr,
        idem_key()
    );
    let r = raw_http(app.running().addr, &head, big)
        .await
        .unwrap_or_else(|e| panic!("10 MB body: {e}"));
    r.assert_error(413, "payload_too_large");
    assert!(app.list_cards(&user).await.is_empty());

    // Still serving.
    let h = app.send(Method::GET, "/healthz", None, &[], None).await;
    assert_eq!(h.status, 200, "{}", h.describe());
    app.bind(&user_id("m"), &TestCard::visa(), &idem_key())
        .await
        .expect_status(201);

    // A malformed verify body and a malformed query are 400s too.
    let user = user_id("m");
    let id = app
        .bind(&user, &TestCard::visa(), &idem_key())
        .await
        .expect_status(201)["id"]
        .as_str()
        .expect("id")
        .to_owned();
    for body in [&b"{\"otp\": 123456}"[..], b"{}", b"{\"otp\":", b""] {
        let r = app
            .send(
                Method::POST,
                &format!("/v1/users/{user}/cards/{id}/verify"),
                Some(&token),
                &[],
                Some((body.to_vec(), "application/json")),
            )
            .await;
        assert!((400..500).contains(&r.status), "{}", r.describe());
        assert_envelope(&r);
    }
    for (q, field) in [
        ("limit=abc", "limit"),
        ("limit=-1", "limit"),
        ("after=%00%01", "after"),
        ("limit=99999999999999999999", "limit"),
    ] {
        let r = app
            .get(&format!("/v1/users/{user}/cards?{q}"), &token)
            .await;
        assert_eq!(r.status, 400, "{q}: {}", r.describe());
        let e = assert_envelope(&r);
        assert_eq!(e["code"], "invalid_request", "{q}: {}", r.describe());
        assert_eq!(e["field"], field, "{q}: {}", r.describe());
    }
    // A bad user id in the path.
    let r = app.get("/v1/users/bad%20user%21/cards", &token).await;
    assert_eq!(r.status, 400, "{}", r.describe());
    assert_envelope(&r);
    let long = "u".repeat(65);
    let r = app.get(&format!("/v1/users/{long}/cards"), &token).await;
    assert_eq!(r.status, 400, "{}", r.describe());
    assert_eq!(assert_envelope(&r)["field"], "user_id", "{}", r.describe());
    // Unknown routes and methods keep the envelope.
    let r = app.get("/v1/nothing-here", &token).await;
    assert_eq!(r.status, 404, "{}", r.describe());
    assert_envelope(&r);
    let r = app
        .send(
            Method::PATCH,
            &format!("/v1/users/{user}/cards"),
            Some(&token),
            &[],
            None,
        )
        .await;
    assert!((400..500).contains(&r.status), "{}", r.describe());
    assert_envelope(&r);
}
