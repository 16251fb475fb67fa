//! The Grafana dashboard (`deploy/grafana/cardbind.json`) and the
//! Prometheus rules (`deploy/prometheus/cardbind.rules.yml`) ask only for
//! what the service exports.
//!
//! Every PromQL expression of both is parsed (promql-parser, the GreptimeDB
//! team's parser of the Prometheus grammar: label matchers, functions,
//! `by`/`without`, `on`/`ignoring`, `offset` and the rest are syntax, not
//! text to guess at). Then the real service (the CLI's composition: mock
//! channel behind the resilience layer; KMS on moto in the second test)
//! serves a few requests so that its labelled series exist, `/metrics` is
//! scraped, and each query is checked against the scrape:
//!
//! * every metric it selects is exported (a histogram by its `_bucket`,
//!   `_sum` and `_count` series, as Prometheus stores it), or is recorded
//!   by a rule of the rules file;
//! * every label it matches on or groups by is carried by that metric (or
//!   is one Prometheus adds: `job`, `instance`);
//! * every literal label value it matches is one the service can produce
//!   (seen in the scrape, or known from the code: route templates from the
//!   OpenAPI spec, error codes, card statuses, channel call outcomes).
//!
//! And the other way round: every metric the service exports is on the
//! dashboard.

// Test code: helpers outside #[test] fns fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod checks;
mod queries;
mod scrape;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use cardbind_tests::{create_kms_key, idem_key, kms_endpoint, use_kms, user_id, TestApp, TestCard};
use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{Expr, LabelModifier};
use serde::Deserialize;
use serde_json::Value;

use checks::{check, check_dashboard_covers, is_excused, problems};
use queries::{dashboard_queries, panels, parse, rule_queries, walk, Query, Uses};
use scrape::{literal_alternatives, parse_exposition, producible, Exported};

const RULES: &str = "deploy/prometheus/cardbind.rules.yml";
const DASHBOARD: &str = "deploy/grafana/cardbind.json";

/// Labels Prometheus attaches to every scraped series.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

/// Exported only when the master key is in AWS KMS.
const KMS_ONLY: [&str; 2] = [
    "cardbind_kms_calls_total",
    "cardbind_kms_call_duration_seconds",
];

/// `cardbind_channel_calls_total{outcome}` values (adapters/channels,
/// `resilience.rs`). `misconfigured` is the outcome of a channel that
/// refuses our own set-up (`ChannelError::Misconfigured`).
const CHANNEL_OUTCOMES: [&str; 8] = [
    "ok",
    "rejected",
    "timeout",
    "unavailable",
    "circuit_open",
    "invalid_signature",
    "protocol",
    "misconfigured",
];

/// Methods as the edge labels them.
const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "other",
];

fn repo_file(rel: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------
// The service

/// A bind through the channel (then verified), a refused bind and a
/// listing, so that the labelled series exist; then the scrape.
async fn exercise_and_scrape(app: &TestApp) -> Exported {
    let user = user_id("deploy");
    let card = TestCard::visa();
    let bound = app.bind(&user, &card, &idem_key()).await.expect_status(201);
    let id = bound["id"].as_str().expect("card id");
    app.verify(&user, id, "123456").await.expect_status(200);
    let mut bad = card.body();
    bad["cvv"] = "1".into();
    app.bind_body(&user, &bad, &idem_key())
        .await
        .assert_error(400, "invalid_cvv");
    assert_eq!(app.list_cards(&user).await.len(), 1);
    let r = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(r.status().as_u16(), 200);
    parse_exposition(&r.text().await.expect("metrics text"))
}

/// The embedded store with a bound on its size, so that it exports
/// `cardbind_sqlite_max_bytes` (only exported with a bound) beside the
/// rest.
fn bounded(c: &mut cardbind::config::Config) {
    c.storage.max_size_mib = 1024;
}

fn all_queries() -> (Vec<Query>, Vec<Query>, BTreeSet<String>) {
    let (rules, recorded) = rule_queries();
    (rules, dashboard_queries(), recorded)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_rules_query_only_what_the_service_exports() {
    let (rules, dashboard, recorded) = all_queries();
    assert!(rules.len() >= 8 && dashboard.len() >= 10, "queries found");
    let app = TestApp::spawn(bounded).await;
    let exported = exercise_and_scrape(&app).await;
    for m in KMS_ONLY {
        assert!(
            !exported.keys().any(|e| is_excused(&[m], e)),
            "{m} is exported with a local key: it needs no excuse below"
        );
    }
    check(&rules, &recorded, &exported, &KMS_ONLY);
    check(&dashboard, &recorded, &exported, &KMS_ONLY);
    check_dashboard_covers(&dashboard, &exported);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_kms_every_queried_metric_is_exported() {
    let Some(endpoint) = kms_endpoint() else {
        return;
    };
    let key = create_kms_key(&endpoint).await;
    let (rules, dashboard, recorded) = all_queries();
    let app = TestApp::spawn(|c| {
        bounded(c);
        use_kms(c, &endpoint, &key);
    })
    .await;
    let exported = exercise_and_scrape(&app).await;
    check(&rules, &recorded, &exported, &[]);
    check(&dashboard, &recorded, &exported, &[]);
    check_dashboard_covers(&dashboard, &exported);
}

/// The checker itself: each kind of mistake is found.
#[test]
fn the_check_finds_unknown_metrics_labels_and_values() {
    let exported = parse_exposition(
        "cardbind_binds_total{outcome=\"active\"} 1\n\
         cardbind_http_request_duration_seconds_bucket{route=\"/healthz\",method=\"GET\",le=\"+Inf\"} 1\n\
         cardbind_http_request_duration_seconds_sum{route=\"/healthz\",method=\"GET\"} 1\n",
    );
    let recorded = BTreeSet::from(["cardbind:x:rate5m".to_owned()]);
    let fails = |text: &str| {
        let found = problems(&[parse("q".into(), text)], &recorded, &exported, &[]);
        (!found.is_empty()).then(|| found.join("; "))
    };
    // Fine: functions, keywords, offsets, histogram series, literal
    // alternatives, recorded series, target labels.
    for ok in [
        "sum by (outcome) (rate(cardbind_binds_total{outcome=~\"active|pending_verification\"}[5m] offset 1w))",
        "histogram_quantile(0.99, sum by (le) (rate(cardbind_http_request_duration_seconds_bucket{route=\"/healthz\", method=\"GET\"}[5m])))",
        "cardbind:x:rate5m{job=\"a\"} > on (job) group_left sum without (instance) (cardbind_binds_total{instance!=\"\"})",
        "cardbind_binds_total{outcome=~\"5..|.*\"}",
    ] {
        assert_eq!(fails(ok), None, "{ok}");
    }
    for (bad, why) in [
        (
            "rate(cardbind_bind_total[5m])",
            "cardbind_bind_total is not exported",
        ),
        (
            "rate(cardbind_http_request_duration_seconds[5m])",
            "a histogram",
        ),
        (
            "cardbind_binds_total{result=\"active\"}",
            "has no label \"result\"",
        ),
        (
            "cardbind_binds_total{outcome=\"actve\"}",
            "never has the value \"actve\"",
        ),
        (
            "cardbind_binds_total{outcome=~\"active|bound\"}",
            "never has the value \"bound\"",
        ),
        (
            "sum by (code) (cardbind_binds_total)",
            "grouped or matched on \"code\"",
        ),
        (
            "cardbind:x:rate5m{outcome=\"active\"}",
            "recorded per job only",
        ),
        (
            "a and ignoring (route) cardbind_binds_total",
            "a is not exported",
        ),
    ] {
        let msg = fails(bad).unwrap_or_else(|| panic!("not refused: {bad}"));
        assert!(msg.contains(why), "{bad}: {msg}");
    }
}

/// The dashboard imports as it is: its data source is a variable (no
/// installation's uid), panel ids are unique, and panels sit on the
/// 24-column grid without overlapping.
#[test]
fn the_dashboard_is_importable_anywhere() {
    let dashboard: Value = serde_json::from_str(&repo_file(DASHBOARD)).unwrap();
    assert!(dashboard["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(dashboard["schemaVersion"].as_u64().is_some());
    let vars = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        vars.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "a Prometheus data source variable"
    );
    let mut ids = BTreeSet::new();
    let mut cells = BTreeSet::new();
    for p in panels(&dashboard) {
        let title = p["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate id: {title}"
        );
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().unwrap(),
            g["y"].as_u64().unwrap(),
            g["w"].as_u64().unwrap(),
            g["h"].as_u64().unwrap(),
        );
        assert!(w >= 1 && x + w <= 24 && h >= 1, "{title}: off the grid {g}");
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(cells.insert((cx, cy)), "{title} overlaps another panel");
            }
        }
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        for t in p["targets"].as_array().unwrap() {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
        }
        assert!(
            p["description"].as_str().is_some_and(|d| d.len() > 20),
            "{title}: say what the panel shows"
        );
    }
}
