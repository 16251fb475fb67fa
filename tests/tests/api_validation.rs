//! Input validation, idempotency, rate limits and access control, over
//! HTTP, in memory.

// Test code: helpers outside #[test] fns fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cardbind_domain::Role;
use cardbind_tests::{
    assert_envelope, fresh_rate_window, idem_key, raw_http, resident_id_check, user_id, Brand,
    TestApp, TestCard,
};
use reqwest::Method;
use serde_json::{json, Value};

fn set(body: &mut Value, path: &str, v: Value) {
    let mut cur = body;
    let parts: Vec<&str> = path.split('.').collect();
    for p in &parts[..parts.len() - 1] {
        cur = &mut cur[*p];
    }
    cur[parts[parts.len() - 1]] = v;
}

/// (what, card, field to change, new value, code, acceptable `field`s)
type FieldCase<'a> = (
    &'a str,
    &'a TestCard,
    &'a str,
    Value,
    &'a str,
    &'a [&'a str],
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_invalid_field_has_its_code_and_field() {
    let app =
        TestApp::spawn(|c| c.channels.mock.mode = cardbind::config::MockModeSetting::Instant).await;
    let this_year = time::OffsetDateTime::now_utc().year() as u32;
    let good = TestCard::visa();
    let amex = TestCard::new(Brand::Amex);
    let bad_luhn = {
        let n = &good.number;
        let last = (n.as_bytes()[15] - b'0' + 1) % 10;
        format!("{}{}", &n[..15], last)
    };
    let wrong_check_id = {
        let first17 = &good.id_number[..17];
        let right = resident_id_check(first17);
        let wrong = if right == '1' { '2' } else { '1' };
        format!("{first17}{wrong}")
    };
    let bad_birth_id = {
        let first17 = format!("11010119901340{}", &good.id_number[14..17]);
        format!("{first17}{}", resident_id_check(&first17))
    };

    // (what, card, field to change, new value, code, field in the error)
    let cases: Vec<FieldCase> = vec![
        (
            "check digit",
            &good,
            "card_number",
            json!(bad_luhn),
            "invalid_card_number",
            &["card_number"],
        ),
        (
            "letters",
            &good,
            "card_number",
            json!("4111 1111 1111 111a"),
            "invalid_card_number",
            &["card_number"],
        ),
        (
            "too short",
            &good,
            "card_number",
            json!("41111111111"),
            "invalid_card_number",
            &["card_number"],
        ),
        (
            "too long",
            &good,
            "card_number",
            json!("41111111111111111111"),
            "invalid_card_number",
            &["card_number"],
        ),
        (
            "wrong length for brand",
            &good,
            "card_number",
            json!("37828224631000"),
            "invalid_card_number",
            &["card_number"],
        ),
        (
            "empty",
            &good,
            "card_number",
            json!(""),
            "invalid_card_number",
            &["card_number"],
        ),
        (
            "unknown range",
            &good,
            "card_number",
            json!("9999999999999995"),
            "unsupported_card_brand",
            &["card_number"],
        ),
        (
            "expired",
            &good,
            "expiry_year",
            json!(this_year - 1),
            "card_expired",
            &["expiry_year", "expiry_month"],
        ),
        (
            "month 13",
            &good,
            "expiry_month",
            json!(13),
            "invalid_expiry",
            &["expiry_month"],
        ),
        (
            "month 0",
            &good,
            "expiry_month",
            json!(0),
            "invalid_expiry",
            &["expiry_month"],
        ),
        (
            "three-digit year",
            &good,
            "expiry_year",
            json!(123),
            "invalid_expiry",
            &["expiry_year"],
        ),
        (
            "30 years ahead",
            &good,
            "expiry_year",
            json!(this_year + 30),
            "invalid_expiry",
            &["expiry_year"],
        ),
        (
            "short cvv",
            &good,
            "cvv",
            json!("12"),
            "invalid_cvv",
            &["cvv"],
        ),
        (
            "letters in cvv",
            &good,
            "cvv",
            json!("1a3"),
            "invalid_cvv",
            &["cvv"],
        ),
        (
            "3-digit cvv on amex",
            &amex,
            "cvv",
            json!("123"),
            "invalid_cvv",
            &["cvv"],
        ),
        (
            "4-digit cvv on visa",
            &good,
            "cvv",
            json!("1234"),
            "invalid_cvv",
            &["cvv"],
        ),
        (
            "empty name",
            &good,
            "holder_name",
            json!("   "),
            "invalid_holder_name",
            &["holder_name"],
        ),
        (
            "digits in name",
            &good,
            "holder_name",
            json!("R2D2"),
            "invalid_holder_name",
            &["holder_name"],
        ),
        (
            "65-letter name",
            &good,
            "holder_name",
            json!("A".repeat(65)),
            "invalid_holder_name",
            &["holder_name"],
        ),
        (
            "id check char",
            &good,
            "id_number",
            json!(wrong_check_id),
            "invalid_id_number",
            &["id_number"],
        ),
        (
            "id 17 chars",
            &good,
            "id_number",
            json!(&good.id_number[..17]),
            "invalid_id_number",
            &["id_number"],
        ),
        (
            "id birth date",
            &good,
            "id_number",
            json!(bad_birth_id),
            "invalid_id_number",
            &["id_number"],
        ),
        (
            "id letters",
            &good,
            "id_number",
            json!("11010519491231002A"),
            "invalid_id_number",
            &["id_number"],
        ),
        (
            "phone too short",
            &good,
            "phone",
            json!("12345"),
            "invalid_phone",
            &["phone"],
        ),
        (
            "phone 12x",
            &good,
            "phone",
            json!("12812345678"),
            "invalid_phone",
            &["phone"],
        ),
        (
            "phone letters",
            &good,
            "phone",
            json!("1381234abcd"),
            "invalid_phone",
            &["phone"],
        ),
        (
            "+86 not mobile",
            &good,
            "phone",
            json!("+861234567"),
            "invalid_phone",
            &["phone"],
        ),
    ];
    for (what, card, path, value, code, fields) in cases {
        let mut body = card.body();
        set(&mut body, path, value.clone());
        // A fresh user each time: refusals must not depend on limits.
        let user = user_id("v");
        let r = app.bind_body(&user, &body, &idem_key()).await;
        assert_eq!(r.status, 400, "{what}: {}", r.describe());
        let e = assert_envelope(&r);
        assert_eq!(e["code"], code, "{what}: {}", r.describe());
        let field = e["field"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no field in {}", r.describe()));
        assert!(
            fields.contains(&field),
            "{what}: field {field}, expected {fields:?}"
        );
        // The refusal does not echo card data.
        let text = r.text();
        for (w, secret) in card.secrets() {
            assert!(
                !text.contains(&secret),
                "{what}: the error shows the {w}: {text}"
            );
        }
        if let Some(s) = value.as_str() {
            if s.len() >= 6 {
                assert!(
                    !text.contains(s),
                    "{what}: the error echoes the value: {text}"
                );
            }
        }
        // Nothing was bound.
        assert!(
            app.list_cards(&user).await.is_empty(),
            "{what}: a refused request left a card"
        );
    }

    // Consent is required and checked.
    let user = user_id("v");
    let mut body = good.body();
    set(&mut body, "consent.text_sha256", json!("not-a-hash"));
    let r = app.bind_body(&user, &body, &idem_key()).await;
    let e = r.assert_error(400, "invalid_request");
    assert!(
        e["field"]
            .as_str()
            .is_some_and(|f| f.starts_with("consent")),
        "{}",
        r.describe()
    );

    // The same card, valid, binds (the cases above failed for their field).
    let v = app
        .bind(&user_id("v"), &good, &idem_key())
        .await
        .expect_status(201);
    assert_eq!(v["status"], "active");
    // A number typed with spaces and dashes is the same card.
    let mut spaced = TestCard::new(Brand::Mastercard);
    let n = spaced.number.clone();
    spaced.number = format!("{} {}-{} {}", &n[..4], &n[4..8], &n[8..12], &n[12..]);
    let v = app
        .bind(&user_id("v"), &spaced, &idem_key())
        .await
        .expect_status(201);
    assert_eq!(v["last4"], &n[12..]);
    // CVV is optional.
    let mut no_cvv = TestCard::visa().body();
    no_cvv.as_object_mut().expect("object").remove("cvv");
    app.bind_body(&user_id("v"), &no_cvv, &idem_key())
        .await
        .expect_status(201);
}

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
    for q in [
        "limit=abc",
        "limit=-1",
        "after=%00%01",
        "limit=99999999999999999999",
    ] {
        let r = app
            .get(&format!("/v1/users/{user}/cards?{q}"), &token)
            .await;
        assert!(
            r.status == 200 || (400..500).contains(&r.status),
            "{q}: {}",
            r.describe()
        );
        if r.status != 200 {
            assert_envelope(&r);
        }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_idempotency_key_is_refused() {
    let app = TestApp::spawn(|_| {}).await;
    let user = user_id("k");
    let body = TestCard::visa().body().to_string().into_bytes();
    let r = app
        .bind_raw(&app.service_token(), &user, body.clone(), None)
        .await;
    let e = r.assert_error(400, "idempotency_key_missing");
    assert!(
        e["field"]
            .as_str()
            .is_some_and(|f| f.eq_ignore_ascii_case("idempotency-key")),
        "{}",
        r.describe()
    );
    let r = app
        .bind_raw(&app.service_token(), &user, body, Some(""))
        .await;
    assert!(r.status == 400, "{}", r.describe());
    assert_envelope(&r);
    assert!(app.list_cards(&user).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_are_byte_identical_and_a_reused_key_is_409() {
    let app = TestApp::spawn(|c| c.limits.binds_per_user_per_minute = 100).await;
    let user = user_id("idem");
    let card = TestCard::visa();
    let key = idem_key();
    let first = app.bind(&user, &card, &key).await;
    first.expect_status(201);
    let id = first.json()["id"].as_str().expect("id").to_owned();

    let again = app.bind(&user, &card, &key).await;
    assert_eq!(again.status, first.status);
    assert_eq!(again.body, first.body, "a replay is byte-identical");

    // Even after the card changed, the replay is the stored first answer.
    app.verify(&user, &id, "123456").await.expect_status(200);
    let later = app.bind(&user, &card, &key).await;
    assert_eq!(later.status, 201);
    assert_eq!(
        later.body, first.body,
        "the replay is the stored response, not a fresh read"
    );
    assert_eq!(
        app.list_cards(&user).await.len(),
        1,
        "replays ran the work once"
    );

    // Same key, another body: refused.
    let other = TestCard::new(Brand::Mastercard);
    let r = app.bind(&user, &other, &key).await;
    r.assert_error(409, "idempotency_key_reused");
    // Same key, same body, another user's path: another request.
    app.bind(&user_id("idem2"), &card, &key)
        .await
        .assert_error(409, "idempotency_key_reused");
    assert_eq!(app.list_cards(&user).await.len(), 1);

    // Keys are scoped to the caller: the user's own token may use the
    // same key for its own request, and gets its own answer.
    let mine = app
        .bind_raw(
            &app.user_token(&user),
            &user,
            other.body().to_string().into_bytes(),
            Some(&key),
        )
        .await;
    let v = mine.expect_status(201);
    assert_eq!(v["last4"], other.last4(), "{v}");
    assert_eq!(app.list_cards(&user).await.len(), 2);

    // A refusal is replayed as it was.
    let bad = {
        let mut b = TestCard::visa().body();
        b["phone"] = json!("123");
        b
    };
    let k2 = idem_key();
    let r1 = app.bind_body(&user, &bad, &k2).await;
    r1.assert_error(400, "invalid_phone");
    let r2 = app.bind_body(&user, &bad, &k2).await;
    assert_eq!(r2.status, 400, "{}", r2.describe());
    assert_eq!(r2.error_code().as_deref(), Some("invalid_phone"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fourth_bind_in_a_minute_is_rate_limited() {
    let app =
        TestApp::spawn(|c| c.channels.mock.mode = cardbind::config::MockModeSetting::Instant).await;
    fresh_rate_window().await;
    let user = user_id("rate");
    for i in 0..3 {
        let r = app.bind(&user, &TestCard::visa(), &idem_key()).await;
        assert_eq!(r.status, 201, "bind {}: {}", i + 1, r.describe());
    }
    let r = app.bind(&user, &TestCard::visa(), &idem_key()).await;
    r.assert_error(429, "rate_limited");
    let ra = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After: {:?}", r.headers));
    let secs: u64 = ra
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After is seconds: {ra}"));
    assert!((1..=60).contains(&secs), "Retry-After {secs}");
    assert_eq!(
        app.list_cards(&user).await.len(),
        3,
        "the limited bind stored nothing"
    );
    // Another user is not limited by alice's attempts.
    app.bind(&user_id("rate2"), &TestCard::visa(), &idem_key())
        .await
        .expect_status(201);
    // The user's own token counts against the same user.
    let r = app
        .bind_raw(
            &app.user_token(&user),
            &user,
            TestCard::visa().body().to_string().into_bytes(),
            Some(&idem_key()),
        )
        .await;
    r.assert_error(429, "rate_limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_reach_only_their_own_cards() {
    let app =
        TestApp::spawn(|c| c.channels.mock.mode = cardbind::config::MockModeSetting::Instant).await;
    let alice = user_id("alice");
    let bob = user_id("bob");
    let bob_card = TestCard::visa();
    let bob_id = app
        .bind(&bob, &bob_card, &idem_key())
        .await
        .expect_status(201)["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let alice_id = app
        .bind(&alice, &TestCard::visa(), &idem_key())
        .await
        .expect_status(201)["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let at = app.user_token(&alice);

    // Alice's own cards: fine.
    let r = app.get(&format!("/v1/users/{alice}/cards"), &at).await;
    assert_eq!(
        r.json()["cards"].as_array().map(Vec::len),
        Some(1),
        "{}",
        r.describe()
    );
    app.get(&format!("/v1/users/{alice}/cards/{alice_id}"), &at)
        .await
        .expect_status(200);

    let no_bob_data = |r: &cardbind_tests::Response| {
        let v = r.json();
        let keys: Vec<&String> = v
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        assert_eq!(keys, vec!["error"], "only the envelope: {}", r.describe());
        let msg = v["error"]["message"].as_str().unwrap_or("");
        assert!(
            !msg.contains(&bob)
                && !msg.contains(bob_card.last4())
                && !msg.contains(bob_card.bin6()),
            "{}",
            r.describe()
        );
        assert!(
            !r.text().contains("\"last4\"") && !r.text().contains("\"status\""),
            "{}",
            r.describe()
        );
    };

    // Under bob's path: forbidden, whatever the operation.
    let bp = format!("/v1/users/{bob}/cards");
    let cp = format!("{bp}/{bob_id}");
    let attempts = vec![
        app.get(&bp, &at).await,
        app.get(&cp, &at).await,
        app.send(Method::DELETE, &cp, Some(&at), &[], None).await,
        app.send(Method::PUT, &format!("{cp}/default"), Some(&at), &[], None)
            .await,
        app.post_json(&format!("{cp}/verify"), &at, &json!({"otp": "123456"}))
            .await,
        app.bind_raw(
            &at,
            &bob,
            TestCard::visa().body().to_string().into_bytes(),
            Some(&idem_key()),
        )
        .await,
        app.get(&format!("/v1/consents?user_id={bob}"), &at).await,
    ];
    for r in &attempts {
        r.assert_error(403, "forbidden");
        no_bob_data(r);
    }

    // Bob's card id under alice's path: not found (not "forbidden": that
    // would confirm the id exists).
    let ap = format!("/v1/users/{alice}/cards/{bob_id}");
    let attempts = vec![
        app.get(&ap, &at).await,
        app.send(Method::DELETE, &ap, Some(&at), &[], None).await,
        app.send(Method::PUT, &format!("{ap}/default"), Some(&at), &[], None)
            .await,
        app.post_json(&format!("{ap}/verify"), &at, &json!({"otp": "123456"}))
            .await,
        // The service role too.
        app.get(&ap, &app.service_token()).await,
        app.send(Method::DELETE, &ap, Some(&app.service_token()), &[], None)
            .await,
    ];
    for r in &attempts {
        r.assert_error(404, "not_found");
        no_bob_data(r);
    }
    // A card id that does not exist at all answers the same.
    let r = app
        .get(
            &format!("/v1/users/{alice}/cards/card_0000000000000000"),
            &at,
        )
        .await;
    r.assert_error(404, "not_found");

    // Bob's card is untouched.
    let b = app.get_card(&bob, &bob_id).await.expect_status(200);
    assert_eq!(b["status"], "active");
    assert_eq!(b["is_default"], true);

    // Roles: an auditor reads no cards, admin routes are not for users.
    app.get(&bp, &app.auditor_token())
        .await
        .assert_error(403, "forbidden");
    app.admin_action(&at, &alice, &alice_id, "freeze")
        .await
        .assert_error(403, "forbidden");
    app.post_empty(&format!("/v1/admin/users/{bob}/erase"), &at)
        .await
        .assert_error(403, "forbidden");
    app.post_empty(
        &format!("/v1/admin/users/{bob}/erase"),
        &app.service_token(),
    )
    .await
    .assert_error(403, "forbidden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_valid_credentials_are_401() {
    let app = TestApp::spawn(|_| {}).await;
    let user = user_id("anon");
    let paths = [
        (Method::GET, format!("/v1/users/{user}/cards")),
        (Method::POST, format!("/v1/users/{user}/cards")),
        (Method::GET, format!("/v1/users/{user}/cards/card_x")),
        (Method::DELETE, format!("/v1/users/{user}/cards/card_x")),
        (Method::GET, "/v1/admin/reviews".to_owned()),
        (Method::GET, "/v1/audit/events".to_owned()),
        (Method::GET, format!("/v1/consents?user_id={user}")),
    ];
    // Signed with another secret, expired, wrong audience, garbage.
    let other_secret = b"0123456789abcdef0123456789abcdef-other".to_vec();
    let forged = cardbind::compose::dev_token(
        &app.config,
        &other_secret,
        "merchant-backend",
        Role::Service,
        3600,
    )
    .expect("token");
    let expired = {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = json!({"sub": "merchant-backend", "role": "service", "iss": app.config.auth.issuer, "aud": app.config.auth.audience, "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600});
        let secret = cardbind::compose::jwt_secret(&app.config).expect("secret");
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&secret),
        )
        .expect("encode")
    };
    let wrong_aud = {
        let mut c = app.config.clone();
        c.auth.audience = "someone-else".into();
        let secret = cardbind::compose::jwt_secret(&app.config).expect("secret");
        cardbind::compose::dev_token(&c, &secret, "merchant-backend", Role::Service, 3600)
            .expect("token")
    };
    let unsigned = {
        // alg "none"
        use base64_like::encode;
        format!("{}.{}.", encode(br#"{"alg":"none","typ":"JWT"}"#), encode(format!(r#"{{"sub":"merchant-backend","role":"service","iss":"{}","aud":"{}","exp":9999999999}}"#, app.config.auth.issuer, app.config.auth.audience).as_bytes()))
    };
    let valid_body = TestCard::visa().body().to_string().into_bytes();
    let body_for =
        |m: &Method| (*m == Method::POST).then(|| (valid_body.clone(), "application/json"));
    for (method, path) in &paths {
        let r = app
            .send(
                method.clone(),
                path,
                None,
                &[("idempotency-key", "k1")],
                body_for(method),
            )
            .await;
        r.assert_error(401, "unauthenticated");
        for bad in [
            forged.as_str(),
            expired.as_str(),
            wrong_aud.as_str(),
            unsigned.as_str(),
            "not-a-token",
        ] {
            let r = app
                .send(
                    method.clone(),
                    path,
                    Some(bad),
                    &[("idempotency-key", "k1")],
                    body_for(method),
                )
                .await;
            r.assert_error(401, "unauthenticated");
        }
        let r = app
            .send(
                method.clone(),
                path,
                None,
                &[
                    ("authorization", "Basic dXNlcjpwYXNz"),
                    ("idempotency-key", "k1"),
                ],
                body_for(method),
            )
            .await;
        r.assert_error(401, "unauthenticated");
    }
    assert!(app.list_cards(&user).await.is_empty());
    // The public endpoints need no token.
    for p in ["/healthz", "/openapi.json", "/metrics"] {
        let r = app.send(Method::GET, p, None, &[], None).await;
        assert_eq!(r.status, 200, "{p}: {}", r.describe());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_200_without_a_token() {
    let app = TestApp::spawn(|_| {}).await;
    let r = app.send(Method::GET, "/readyz", None, &[], None).await;
    assert_eq!(r.status, 200, "{}", r.describe());
}

/// Base64url without padding (JWT segments), to forge an `alg: none` token.
mod base64_like {
    pub fn encode(data: &[u8]) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            let chars = chunk.len() + 1;
            for i in 0..chars {
                out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            }
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_gets_its_413_through_a_standard_client() {
    // reqwest writes the whole body before it reads the answer: when the
    // service answers 413 from Content-Length and closes the connection
    // without draining the body, the client sees a broken pipe or a reset
    // instead of the 413 envelope.
    let app = TestApp::spawn(|_| {}).await;
    let token = app.service_token();
    let body = {
        let mut b = TestCard::visa().body();
        b["holder_name"] = json!("A".repeat(10 * 1024 * 1024));
        b.to_string().into_bytes()
    };
    let mut failures = Vec::new();
    for i in 0..10 {
        let key = idem_key();
        match app
            .try_send(
                Method::POST,
                &format!("/v1/users/{}/cards", user_id("big")),
                Some(&token),
                &[("idempotency-key", &key)],
                Some((body.clone(), "application/json")),
            )
            .await
        {
            Ok(r) => {
                r.assert_error(413, "payload_too_large");
            }
            Err(e) => failures.push(format!("attempt {i}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "the 413 was lost {} times in 10: {failures:#?}",
        failures.len()
    );
}

/// A client may shut its write side once its request is sent (RFC 9112
/// 9.6): the request is still answered. (The connection layer dropped such
/// requests unanswered until it was told to support half-closed
/// connections.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_from_a_half_closed_connection_is_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn(|_| {}).await;
    let token = app.token("svc", cardbind_domain::Role::Service);
    let body = br#"{"card_number":"4111111111111111"}"#;
    let mut s = tokio::net::TcpStream::connect(app.running().addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /v1/users/{}/cards HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nIdempotency-Key: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        user_id("half"),
        idem_key(),
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("head");
    s.write_all(body).await.expect("body");
    s.shutdown().await.expect("half-close");
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        s.read_to_end(&mut answer),
    )
    .await
    .expect("answered in time")
    .expect("read");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    assert!(text.contains("invalid_request"), "{text}");
}
