//! The metrics the alert rules and the dashboard in `deploy/` are built on:
//! errors by stable code, latency by method, the store probe, the review
//! queue gauge and the embedded store's writer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support;

use std::time::Duration;

use cardbind_channels::MockMode;
use cardbind_ports::store::ReviewQueue;
use poem::http::StatusCode;
use poem::EndpointExt;
use support::*;

const VISA: &str = "4111111111111111";
const BIND_ROUTE: &str = "/v1/users/{user_id}/cards";

async fn scrape(t: &TestApp) -> String {
    scrape_of(&t.client).await
}

/// The value of the sample whose name and labels are exactly `series`
/// (labels in the encoder's alphabetical order), if exported.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A well-formed bind without a token.
async fn bind_without_token(t: &TestApp, user: &str) -> poem::test::TestResponse {
    t.client
        .post(format!("/v1/users/{user}/cards"))
        .header("Idempotency-Key", "k-anon")
        .content_type("application/json")
        .body(bind_body(VISA).to_string())
        .send()
        .await
}

fn errors(text: &str, route: &str, code: &str) -> Option<f64> {
    sample(
        text,
        &format!(r#"cardbind_http_errors_total{{code="{code}",route="{route}"}}"#),
    )
}

#[tokio::test]
async fn error_responses_are_counted_by_route_and_stable_code() {
    let t = spawn();
    let mut bad = bind_body(VISA);
    bad["card_number"] = "4111111111111112".into();
    // A handler's refusal of a malformed request: not stored, so its retry
    // under the key runs (and is refused, and counted) again.
    for _ in 0..2 {
        assert_error(
            t.bind("u-err", "k-bad", &bad).await,
            400,
            "invalid_card_number",
        )
        .await;
    }
    // A final refusal, then its idempotent replay: one error, two requests.
    t.bind("u-err", "k-first", &bind_body(VISA))
        .await
        .assert_status(StatusCode::CREATED);
    assert_error(
        t.bind("u-err", "k-again", &bind_body(VISA)).await,
        409,
        "card_already_bound",
    )
    .await;
    let replay = t.bind("u-err", "k-again", &bind_body(VISA)).await;
    replay.assert_status(StatusCode::CONFLICT);
    replay.assert_header("Idempotent-Replayed", "true");
    // Refusals that the edge renders: no token (inside the idempotency
    // transform), an unknown route, a missing card (a handler, no transform).
    assert_error(
        bind_without_token(&t, "u-err").await,
        401,
        "unauthenticated",
    )
    .await;
    assert_error(t.client.get("/nowhere").send().await, 404, "not_found").await;
    let resp = t
        .client
        .get("/v1/users/u-err/cards/0190d7a2-7c4e-7a51-8f00-000000000000")
        .header("Authorization", bearer("m", "service"))
        .send()
        .await;
    assert_error(resp, 404, "not_found").await;
    // A success adds no error.
    t.bind("u-ok", "k-ok", &bind_body(VISA))
        .await
        .assert_status(StatusCode::CREATED);

    let text = scrape(&t).await;
    assert_eq!(
        errors(&text, BIND_ROUTE, "invalid_card_number"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"cardbind_http_requests_total{method="POST",route="/v1/users/{user_id}/cards",status="400"}"#
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        errors(&text, BIND_ROUTE, "card_already_bound"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"cardbind_http_requests_total{method="POST",route="/v1/users/{user_id}/cards",status="409"}"#
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        errors(&text, BIND_ROUTE, "unauthenticated"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(errors(&text, "unmatched", "not_found"), Some(1.0), "{text}");
    assert_eq!(
        errors(&text, "/v1/users/{user_id}/cards/{card_id}", "not_found"),
        Some(1.0),
        "{text}"
    );
    let all: f64 = text
        .lines()
        .filter(|l| l.starts_with("cardbind_http_errors_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(all, 6.0, "nothing else counted: {text}");
}

fn binds(text: &str, outcome: &str) -> Option<f64> {
    sample(
        text,
        &format!(r#"cardbind_binds_total{{outcome="{outcome}"}}"#),
    )
}

#[tokio::test]
async fn every_refused_bind_is_counted_whichever_layer_refused_it() {
    let t = spawn();
    let with = |field: &str, v: serde_json::Value| {
        let mut b = bind_body(VISA);
        b[field] = v;
        b
    };
    // Refused by the request's schema (month 1–12, the CVV's pattern), and
    // by the use case (a year the schema allows, but no card has).
    assert_error(
        t.bind("u-m", "k-month", &with("expiry_month", 13.into()))
            .await,
        400,
        "invalid_expiry",
    )
    .await;
    assert_error(
        t.bind("u-m", "k-year", &with("expiry_year", 300.into()))
            .await,
        400,
        "invalid_expiry",
    )
    .await;
    assert_error(
        t.bind("u-m", "k-cvv", &with("cvv", "12a".into())).await,
        400,
        "invalid_cvv",
    )
    .await;
    // The use case's refusal of a malformed request again under its key:
    // not stored, so it runs and is counted again.
    let again = t
        .bind("u-m", "k-year", &with("expiry_year", 300.into()))
        .await;
    assert!(again.0.headers().get("Idempotent-Replayed").is_none());
    assert_error(again, 400, "invalid_expiry").await;
    // Refused before the body is read: no token.
    assert_error(bind_without_token(&t, "u-m").await, 401, "unauthenticated").await;
    t.bind("u-m", "k-ok", &bind_body(VISA))
        .await
        .assert_status(StatusCode::CREATED);

    let text = scrape(&t).await;
    assert_eq!(binds(&text, "invalid_expiry"), Some(3.0), "{text}");
    assert_eq!(binds(&text, "invalid_cvv"), Some(1.0), "{text}");
    assert_eq!(binds(&text, "unauthenticated"), Some(1.0), "{text}");
    assert_eq!(binds(&text, "active"), Some(1.0), "{text}");
    // The same refusals as the error metric of the route.
    for code in ["invalid_expiry", "invalid_cvv", "unauthenticated"] {
        assert_eq!(
            binds(&text, code),
            errors(&text, BIND_ROUTE, code),
            "{code}"
        );
    }
}

#[tokio::test]
async fn latency_is_labelled_by_method_so_binds_and_lists_are_apart() {
    let t = spawn();
    t.bind("u-lat", "k-lat", &bind_body(VISA))
        .await
        .assert_status(StatusCode::CREATED);
    for _ in 0..2 {
        t.client
            .get("/v1/users/u-lat/cards")
            .header("Authorization", bearer("m", "service"))
            .send()
            .await
            .assert_status_is_ok();
    }
    let text = scrape(&t).await;
    let count = |method: &str| {
        sample(
            &text,
            &format!(
                r#"cardbind_http_request_duration_seconds_count{{method="{method}",route="{BIND_ROUTE}"}}"#
            ),
        )
    };
    assert_eq!(count("POST"), Some(1.0), "{text}");
    assert_eq!(count("GET"), Some(2.0), "{text}");
}

/// Every card times out at the channel: binds go to manual review.
fn review_options() -> Options {
    Options {
        mock: cardbind_channels::MockConfig {
            mode: MockMode::Timeout,
            timeout_after: Duration::from_millis(1),
            ..cardbind_channels::MockConfig::default()
        },
        ..Options::default()
    }
}

#[tokio::test]
async fn the_review_queue_gauge_counts_bindings_waiting_for_an_operator() {
    let t = spawn_with(review_options());
    let text = scrape(&t).await;
    assert_eq!(
        sample(&text, "cardbind_review_queue_size"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(sample(&text, "cardbind_store_up"), Some(1.0), "{text}");

    let mut ids = Vec::new();
    for user in ["u-rev-1", "u-rev-2"] {
        let resp = t.bind(user, &format!("k-{user}"), &bind_body(VISA)).await;
        resp.assert_status(StatusCode::ACCEPTED);
        let v = json_of(resp).await;
        assert_eq!(v["status"], "pending_review", "{v}");
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        sample(&scrape(&t).await, "cardbind_review_queue_size"),
        Some(2.0)
    );

    t.client
        .post(format!("/v1/admin/reviews/{}/reject", ids[0]))
        .header("Authorization", bearer("ops", "admin"))
        .send()
        .await
        .assert_status_is_ok();
    let text = scrape(&t).await;
    assert_eq!(
        sample(&text, "cardbind_review_queue_size"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"cardbind_binds_total{outcome="pending_review"}"#),
        Some(2.0),
        "{text}"
    );
}

#[tokio::test]
async fn a_store_that_fails_the_probe_reads_down_and_keeps_the_last_queue_size() {
    // One binding in review, as the store holds it.
    let t = spawn_with(review_options());
    t.bind("u-rev", "k-rev", &bind_body(VISA))
        .await
        .assert_status(StatusCode::ACCEPTED);
    let in_review = t.store.list(None, 10).await.unwrap();
    assert_eq!(in_review.len(), 1);

    let text = scrape(&t).await;
    assert_eq!(sample(&text, "cardbind_store_up"), Some(1.0), "{text}");
    assert_eq!(
        sample(&text, "cardbind_review_queue_size"),
        Some(1.0),
        "{text}"
    );

    t.store.set_unavailable(true);
    let text = scrape(&t).await;
    assert_eq!(sample(&text, "cardbind_store_up"), Some(0.0), "{text}");
    assert_eq!(
        sample(&text, "cardbind_review_queue_size"),
        Some(1.0),
        "the last size read: {text}"
    );
    assert!(
        !text.contains("switched off"),
        "the cause is logged, not exported: {text}"
    );

    t.store.set_unavailable(false);
    assert_eq!(sample(&scrape(&t).await, "cardbind_store_up"), Some(1.0));
}

/// The service composed from `config` as `serve` composes it, and a client
/// of its HTTP side.
async fn composed(
    config: &cardbind::config::Config,
) -> (
    cardbind::compose::Built,
    poem::test::TestClient<poem::endpoint::BoxEndpoint<'static>>,
) {
    let built = cardbind::compose::build(config).await.unwrap();
    let client = poem::test::TestClient::new(cardbind::http::app(built.state.clone()).boxed());
    (built, client)
}

async fn scrape_of(
    client: &poem::test::TestClient<poem::endpoint::BoxEndpoint<'static>>,
) -> String {
    let resp = client.get("/metrics").send().await;
    resp.assert_status_is_ok();
    String::from_utf8(bytes(resp).await).unwrap()
}

const WRITER: [&str; 4] = [
    "cardbind_sqlite_writer_transactions_total",
    "cardbind_sqlite_writer_writes_total",
    "cardbind_sqlite_writer_busy_seconds_total",
    "cardbind_sqlite_writer_transaction_seconds",
];

#[tokio::test]
async fn the_embedded_stores_writer_is_measured_at_each_scrape() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = cardbind::config::Config::default();
    config.server.data_dir = dir.path().to_path_buf();
    let (built, client) = composed(&config).await;
    let before = scrape_of(&client).await;
    let at = |text: &str, name: &str| {
        sample(text, name).unwrap_or_else(|| panic!("{name} not exported in:\n{text}"))
    };
    let now = cardbind_domain::Timestamp::from_unix_millis(1_000_000);
    for i in 0..4 {
        let w = cardbind_ports::store::RateWindow {
            key: format!("metrics-test-{i}"),
            limit: 5,
            expires_at: cardbind_domain::Timestamp::from_unix_millis(2_000_000),
        };
        built.stores.rates.take(&[w], now).await.unwrap();
    }
    let after = scrape_of(&client).await;
    assert_eq!(
        at(&after, WRITER[1]) - at(&before, WRITER[1]),
        4.0,
        "four writes"
    );
    assert!(at(&after, WRITER[0]) > at(&before, WRITER[0]));
    assert!(at(&after, WRITER[0]) <= at(&after, WRITER[1]));
    assert!(at(&after, WRITER[2]) > at(&before, WRITER[2]));
    // Every transaction timed, in the histogram as in the counter.
    let timed = format!("{}_count", WRITER[3]);
    assert_eq!(at(&after, &timed), at(&after, WRITER[0]));
    assert!(at(&after, &timed) > at(&before, &timed));
}

#[tokio::test]
async fn a_store_without_that_writer_exports_none_of_its_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = cardbind::config::Config::default();
    config.server.data_dir = dir.path().to_path_buf();
    config.storage.kind = cardbind::config::StorageKind::Memory;
    let (_built, client) = composed(&config).await;
    let text = scrape_of(&client).await;
    assert!(text.contains("cardbind_store_up"), "{text}");
    for name in WRITER {
        assert!(!text.contains(name), "{name} exported by the memory store");
    }
    assert!(
        !text.contains("cardbind_sqlite_"),
        "an embedded store metric exported by the memory store:\n{text}"
    );
}

/// The embedded store's size is exported, and its bound when
/// `storage.max_size_mib` sets one (not without).
#[tokio::test]
async fn the_embedded_stores_size_and_bound_are_exported() {
    for (bound, max) in [(0, None), (256, Some(256.0 * 1024.0 * 1024.0))] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = cardbind::config::Config::default();
        config.server.data_dir = dir.path().to_path_buf();
        config.storage.max_size_mib = bound;
        let (_built, client) = composed(&config).await;
        let text = scrape_of(&client).await;
        assert_eq!(sample(&text, "cardbind_sqlite_max_bytes"), max, "{text}");
        let size = sample(&text, "cardbind_sqlite_database_bytes");
        assert!(size.is_some_and(|b| b >= 4096.0), "{size:?} in:\n{text}");
        assert!(
            sample(&text, "cardbind_sqlite_free_bytes").is_some(),
            "{text}"
        );
    }
}
