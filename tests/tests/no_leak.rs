//! No card data in logs, response bodies or metrics, with debug logging on.
//!
//! `cli::start` does not install a subscriber (only the binary's `serve`
//! does), so this test binary installs its own global one first, writing
//! JSON lines into a buffer, and reads everything the service logged.

// Test code: helpers outside #[test] fns fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use cardbind_tests::leaks::shows_cvv;
use cardbind_tests::{idem_key, user_id, Brand, Response, TestApp, TestCard};
use reqwest::Method;
use serde_json::json;

#[derive(Clone)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = Buffer(buf.clone());
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_writer(move || writer.clone())
            .try_init()
            .expect("the only subscriber in this test binary");
        buf
    })
    .clone()
}

fn logs_text() -> String {
    let logs = captured_logs();
    let bytes = logs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_card_data_in_logs_bodies_or_metrics() {
    let logs = captured_logs();
    let app = TestApp::spawn(|c| {
        c.log.filter = "debug".into();
        c.limits.binds_per_user_per_minute = 100;
        c.channels.mock.mode = cardbind::config::MockModeSetting::Otp;
        c.channels
            .mock
            .card_modes
            .insert("0002".into(), cardbind::config::MockModeSetting::Decline);
        c.channels
            .mock
            .card_modes
            .insert("0004".into(), cardbind::config::MockModeSetting::Instant);
        c.channels
            .mock
            .card_modes
            .insert("0005".into(), cardbind::config::MockModeSetting::Redirect);
    })
    .await;
    let user = user_id("leak");
    let mut cards: Vec<TestCard> = Vec::new();
    let mut responses: Vec<Response> = Vec::new();
    let token = app.service_token();

    // The happy path: bind, wrong then right OTP, list, get, default, unbind.
    let a = TestCard::new(Brand::Visa);
    let b = TestCard::ending(Brand::Amex, "0004");
    let declined = TestCard::ending(Brand::Mastercard, "0002");
    let redirect = TestCard::ending(Brand::UnionPay, "0005");
    cards.extend([a.clone(), b.clone(), declined.clone(), redirect.clone()]);

    let r = app.bind(&user, &a, &idem_key()).await;
    let id_a = r.expect_status(201)["id"].as_str().expect("id").to_owned();
    responses.push(r);
    responses.push(app.verify(&user, &id_a, "000000").await);
    responses.push(app.verify(&user, &id_a, "123456").await);
    let k = idem_key();
    let r = app.bind(&user, &b, &k).await;
    let id_b = r.expect_status(201)["id"].as_str().expect("id").to_owned();
    responses.push(r);
    responses.push(app.bind(&user, &b, &k).await); // replay
    responses.push(app.bind(&user, &b, &idem_key()).await); // already bound
    responses.push(app.bind(&user, &declined, &idem_key()).await);
    responses.push(app.bind(&user, &redirect, &idem_key()).await);
    responses.push(app.get(&format!("/v1/users/{user}/cards"), &token).await);
    responses.push(app.get_card(&user, &id_a).await);
    responses.push(app.set_default(&user, &id_b).await);
    responses.push(app.unbind(&user, &id_b).await);
    responses.push(app.bind(&user, &b, &idem_key()).await); // rebind
    responses.push(
        app.admin_action(&app.admin_token(), &user, &id_a, "freeze")
            .await,
    );
    responses.push(
        app.get(
            &format!("/v1/audit/events?user_id={user}"),
            &app.auditor_token(),
        )
        .await,
    );
    responses.push(
        app.get(&format!("/v1/consents?user_id={user}"), &token)
            .await,
    );
    responses.push(app.get(&format!("/v1/bins/{}", a.bin6()), &token).await);

    // Invalid requests that carry card data.
    let mut invalid = Vec::new();
    let c = TestCard::visa();
    let near = {
        let n = &c.number;
        format!("{}{}", &n[..15], (n.as_bytes()[15] - b'0' + 1) % 10)
    };
    let mut near_card = c.clone();
    near_card.number = near.clone();
    let mut bad_luhn = c.body();
    bad_luhn["card_number"] = json!(near);
    invalid.push(bad_luhn);
    for (field, value) in [
        ("phone", json!("12")),
        ("id_number", json!(format!("{}0", &c.id_number[..17]))),
        ("cvv", json!("12")),
        ("holder_name", json!("R2D2")),
        ("expiry_month", json!(13)),
        (
            "card_number",
            json!(c.number.parse::<u64>().expect("digits")),
        ), // wrong type
        ("phone", json!(c.phone.parse::<u64>().expect("digits"))), // wrong type
        ("id_number", json!([c.id_number.clone()])),               // wrong type
        ("pan", json!(c.number.clone())),                          // unknown field
    ] {
        let mut body = c.body();
        body[field] = value;
        invalid.push(body);
    }
    for body in &invalid {
        responses.push(app.bind_body(&user_id("leak-bad"), body, &idem_key()).await);
    }
    let mut missing_key = c.body();
    missing_key["cvv"] = json!(c.cvv);
    responses.push(
        app.bind_raw(
            &token,
            &user_id("leak-bad"),
            missing_key.to_string().into_bytes(),
            None,
        )
        .await,
    );
    let mut truncated = c.body().to_string();
    truncated.truncate(truncated.len() - 10);
    responses.push(
        app.send(
            Method::POST,
            &format!("/v1/users/{}/cards", user_id("leak-bad")),
            Some(&token),
            &[("idempotency-key", "k-trunc")],
            Some((truncated.into_bytes(), "application/json")),
        )
        .await,
    );
    let nested = format!(
        "{{\"card_number\":\"{}\",\"x\":{}{}}}",
        c.number,
        "[".repeat(100),
        "]".repeat(100)
    );
    responses.push(
        app.send(
            Method::POST,
            &format!("/v1/users/{}/cards", user_id("leak-bad")),
            Some(&token),
            &[("idempotency-key", "k-nest")],
            Some((nested.into_bytes(), "application/json")),
        )
        .await,
    );
    // Card data in the headers a client controls: the request id goes
    // into every log line of its request.
    let dashed_pan = c
        .number
        .as_bytes()
        .chunks(4)
        .map(|g| String::from_utf8_lossy(g).into_owned())
        .collect::<Vec<_>>()
        .join("-");
    for (request_id, key) in [
        (c.number.as_str(), c.id_number.as_str()),
        (dashed_pan.as_str(), c.number.as_str()),
        (c.phone.as_str(), "k-phone"),
        (c.id_number.as_str(), "k-id"),
    ] {
        let r = app
            .send(
                Method::POST,
                &format!("/v1/users/{}/cards", user_id("leak-headers")),
                Some(&token),
                &[("x-request-id", request_id), ("idempotency-key", key)],
                Some((c.body().to_string().into_bytes(), "application/json")),
            )
            .await;
        let echoed = r
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .expect("every answer carries an X-Request-Id");
        assert_ne!(
            echoed, request_id,
            "a request id holding card data is replaced"
        );
        responses.push(r);
    }
    // Same key, other body: the reused-key refusal.
    responses.push(app.bind(&user, &c, &k).await);
    // A forged notification whose body carries card data.
    let forged = json!({"id": "evt", "binding_id": id_a, "event": "signed", "card_number": c.number, "phone": c.phone}).to_string().into_bytes();
    responses.push(app.notify("mock", forged, Some("00")).await);
    cards.push(c);
    cards.push(near_card);

    for r in &responses {
        assert!(
            r.status < 500,
            "no server error in this flow: {}",
            r.describe()
        );
    }

    // Metrics, as Prometheus scrapes them.
    let mut metrics = app.send(Method::GET, "/metrics", None, &[], None).await;
    if metrics.status == 401 || metrics.status == 403 {
        metrics = app.get("/metrics", &app.admin_token()).await;
    }
    assert_eq!(metrics.status, 200, "{}", metrics.describe());
    let metrics_text = metrics.text();
    assert!(!metrics_text.trim().is_empty(), "metrics are empty");

    // A canary: a card number logged on purpose is found, so the search
    // below would find a real leak.
    let canary = TestCard::visa();
    tracing::info!(canary = %canary.number, "planted canary");
    let log_text = logs_text();
    assert!(
        log_text.contains(&canary.number),
        "the capture finds a planted card number"
    );
    let log_text: String = log_text
        .lines()
        .filter(|l| !l.contains("planted canary"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        log_text.contains("cardbind started"),
        "the capture works: the start-up line is there"
    );
    // A refused request's access line names its stable code (the wrong
    // code above, the declined card): an operator holding the request id
    // sees why, as the client did.
    for code in ["invalid_otp", "channel_rejected"] {
        assert!(
            log_text
                .lines()
                .any(|l| l.contains("\"message\":\"request\"")
                    && l.contains(&format!("\"code\":\"{code}\""))),
            "no access line names {code}"
        );
    }
    assert!(
        !log_text
            .lines()
            .any(|l| l.contains("\"message\":\"request\"")
                && l.contains("\"status\":200")
                && l.contains("\"code\":")),
        "an answered request's line names no code"
    );
    assert!(
        log_text.lines().count() > responses.len(),
        "one line per request at least: {} lines",
        log_text.lines().count()
    );

    assert!(
        !log_text.contains(&dashed_pan),
        "a log line shows a card number in groups"
    );
    for card in &cards {
        for (what, secret) in card.secrets() {
            for (i, line) in log_text.lines().enumerate() {
                assert!(
                    !line.contains(&secret),
                    "log line {i} shows the {what}: {line}"
                );
            }
            for r in &responses {
                assert!(
                    !r.text().contains(&secret),
                    "a response shows the {what}: {}",
                    r.describe()
                );
            }
            assert!(!metrics_text.contains(&secret), "metrics show the {what}");
        }
        for (i, line) in log_text.lines().enumerate() {
            assert!(
                !card.shows_hidden_digits(line),
                "log line {i} shows the digits a mask hides: {line}"
            );
        }
        for r in &responses {
            assert!(
                !card.shows_hidden_digits(&r.text()),
                "a response shows the digits a mask hides: {}",
                r.describe()
            );
        }
        assert!(
            !card.shows_hidden_digits(&metrics_text),
            "metrics show the digits a mask hides"
        );
        let hn = &card.holder_name;
        for line in log_text.lines() {
            assert!(
                !line.contains(hn.as_str()),
                "a log line shows the holder name: {line}"
            );
            assert!(
                !shows_cvv(line, &card.cvv),
                "a log line shows the CVV {}: {line}",
                card.cvv
            );
        }
        for r in &responses {
            assert!(
                !shows_cvv(&r.text(), &card.cvv),
                "a response shows the CVV {}: {}",
                card.cvv,
                r.describe()
            );
            assert!(
                !r.text().contains(hn.as_str()),
                "a response shows the holder name: {}",
                r.describe()
            );
        }
        assert!(!metrics_text.contains(hn.as_str()));
    }
    drop(logs);
}
