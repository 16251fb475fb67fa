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

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use cardbind_tests::{create_kms_key, idem_key, kms_endpoint, use_kms, user_id, TestApp, TestCard};
use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{Expr, LabelModifier};
use serde::Deserialize;
use serde_json::Value;

const RULES: &str = "deploy/prometheus/cardbind.rules.yml";
const DASHBOARD: &str = "deploy/grafana/cardbind.json";

/// Labels Prometheus attaches to every scraped series.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

/// Exported only when the master key is in AWS KMS.
const KMS_ONLY: [&str; 1] = ["cardbind_kms_calls_total"];

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
// The queries

/// One PromQL expression and where it comes from.
struct Query {
    origin: String,
    expr: Expr,
}

fn parse(origin: String, text: &str) -> Query {
    match promql_parser::parser::parse(text) {
        Ok(expr) => Query { origin, expr },
        Err(e) => panic!("{origin}: not PromQL ({e}):\n{text}"),
    }
}

#[derive(Deserialize)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Deserialize)]
struct RuleGroup {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
struct Rule {
    alert: Option<String>,
    record: Option<String>,
    expr: String,
}

/// The rules' expressions, and the names their recording rules define.
fn rule_queries() -> (Vec<Query>, BTreeSet<String>) {
    let file: RuleFile = serde_yaml::from_str(&repo_file(RULES))
        .unwrap_or_else(|e| panic!("{RULES}: not a rules file: {e}"));
    let mut queries = Vec::new();
    let mut recorded = BTreeSet::new();
    for group in &file.groups {
        for rule in &group.rules {
            let name = match (&rule.alert, &rule.record) {
                (Some(a), None) => format!("alert {a}"),
                (None, Some(r)) => {
                    recorded.insert(r.clone());
                    format!("record {r}")
                }
                _ => panic!(
                    "{RULES}: a rule of group {} is not exactly one of alert/record",
                    group.name
                ),
            };
            queries.push(parse(format!("{RULES}: {name}"), &rule.expr));
        }
    }
    (queries, recorded)
}

/// Grafana's variables, replaced by what Prometheus would get.
const GRAFANA_VARIABLES: [(&str, &str); 4] = [
    ("__rate_interval", "5m"),
    ("__interval", "1m"),
    ("__range", "1d"),
    ("job", ".*"),
];

fn expand_variables(origin: &str, text: &str) -> String {
    let mut out = text.to_owned();
    for (name, value) in GRAFANA_VARIABLES {
        out = out.replace(&format!("${{{name}}}"), value);
        out = out.replace(&format!("${name}"), value);
    }
    assert!(
        !out.contains('$'),
        "{origin}: a Grafana variable this test does not know: {text}"
    );
    out
}

/// The panels, rows' panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(p) = stack.pop() {
        if let Some(inner) = p["panels"].as_array() {
            stack.extend(inner);
        }
        out.push(p);
    }
    out
}

/// Every target of every panel, and the queries of the variables
/// (`label_values(SELECTOR, LABEL)` becomes `SELECTOR` and a grouping by
/// `LABEL`, which checks both the same way).
fn dashboard_queries() -> Vec<Query> {
    let dashboard: Value = serde_json::from_str(&repo_file(DASHBOARD))
        .unwrap_or_else(|e| panic!("{DASHBOARD}: not JSON: {e}"));
    let mut queries = Vec::new();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or("?");
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        assert!(
            !targets.is_empty(),
            "{DASHBOARD}: panel {title:?} has no query"
        );
        for t in targets {
            let origin = format!("{DASHBOARD}: panel {title:?} target {}", t["refId"]);
            let text = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{origin}: no expr"));
            queries.push(parse(origin.clone(), &expand_variables(&origin, text)));
        }
    }
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        let origin = format!("{DASHBOARD}: variable {}", var["name"]);
        let text = match &var["query"] {
            Value::String(s) => s.as_str(),
            Value::Object(o) => o.get("query").and_then(Value::as_str).unwrap_or(""),
            _ => "",
        };
        if var["type"] != "query" {
            continue;
        }
        let inner = text
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{origin}: only label_values(...) is checked here: {text}"));
        let (selector, label) = inner
            .rsplit_once(',')
            .unwrap_or_else(|| panic!("{origin}: label_values(SELECTOR, LABEL) expected"));
        let promql = format!("count by ({}) ({})", label.trim(), selector.trim());
        queries.push(parse(origin.clone(), &expand_variables(&origin, &promql)));
    }
    queries
}

/// What a query asks for.
#[derive(Default)]
struct Uses {
    /// (metric, matcher) for every selector, a matcher-less one too.
    selectors: Vec<(String, Option<Matcher>)>,
    /// Labels grouped or matched on, with the metrics they apply to.
    groupings: Vec<(String, BTreeSet<String>)>,
}

/// Walks `expr`, recording its uses; returns the metrics it selects.
fn walk(expr: &Expr, uses: &mut Uses) -> BTreeSet<String> {
    match expr {
        Expr::VectorSelector(vs) => selector(vs, uses),
        Expr::MatrixSelector(ms) => selector(&ms.vs, uses),
        Expr::Aggregate(a) => {
            let mut metrics = walk(&a.expr, uses);
            if let Some(p) = &a.param {
                metrics.extend(walk(p, uses));
            }
            if let Some(m) = &a.modifier {
                group(m, &metrics, uses);
            }
            metrics
        }
        Expr::Binary(b) => {
            let mut metrics = walk(&b.lhs, uses);
            metrics.extend(walk(&b.rhs, uses));
            if let Some(m) = b.modifier.as_ref().and_then(|m| m.matching.as_ref()) {
                group(m, &metrics, uses);
            }
            metrics
        }
        Expr::Unary(u) => walk(&u.expr, uses),
        Expr::Paren(p) => walk(&p.expr, uses),
        Expr::Subquery(s) => walk(&s.expr, uses),
        Expr::Call(c) => {
            let mut metrics = BTreeSet::new();
            for arg in &c.args.args {
                metrics.extend(walk(arg, uses));
            }
            metrics
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => BTreeSet::new(),
        Expr::Extension(_) => panic!("the parser made an extension node"),
    }
}

fn selector(vs: &promql_parser::parser::VectorSelector, uses: &mut Uses) -> BTreeSet<String> {
    let by_matcher = vs
        .matchers
        .matchers
        .iter()
        .find(|m| m.name == "__name__" && m.op == MatchOp::Equal)
        .map(|m| m.value.clone());
    let name = vs.name.clone().or(by_matcher).unwrap_or_else(|| {
        panic!("a selector without a metric name ({vs}) cannot be checked; name the metric")
    });
    let all = vs
        .matchers
        .matchers
        .iter()
        .chain(vs.matchers.or_matchers.iter().flatten())
        .filter(|m| m.name != "__name__");
    let mut any = false;
    for m in all {
        uses.selectors.push((name.clone(), Some(m.clone())));
        any = true;
    }
    if !any {
        uses.selectors.push((name.clone(), None));
    }
    BTreeSet::from([name])
}

fn group(modifier: &LabelModifier, metrics: &BTreeSet<String>, uses: &mut Uses) {
    for label in &modifier.labels().labels {
        uses.groupings.push((label.clone(), metrics.clone()));
    }
}

// ---------------------------------------------------------------------------
// The scrape

/// Sample name → label name → values seen.
type Exported = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// Parses the text exposition format as the prometheus crate writes it.
fn parse_exposition(text: &str) -> Exported {
    let mut out = Exported::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..name_end].to_owned()).or_default();
        let Some(rest) = line[name_end..].strip_prefix('{') else {
            continue;
        };
        let mut chars = rest.chars().peekable();
        loop {
            let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
            let key = key.trim_start_matches(',').trim().to_owned();
            if key.is_empty() || key.starts_with('}') {
                break;
            }
            assert_eq!(chars.next(), Some('"'), "bad exposition line: {line}");
            let mut value = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some('n') => value.push('\n'),
                        Some(other) => value.push(other),
                        None => break,
                    },
                    '"' => break,
                    c => value.push(c),
                }
            }
            labels.entry(key).or_default().insert(value);
            if chars.peek() == Some(&'}') {
                break;
            }
        }
    }
    out
}

#[test]
fn the_exposition_parser_reads_labels_with_escapes() {
    let e = parse_exposition(
        "# HELP x y\n# TYPE a counter\na 1\nb{l=\"v\\\"1,}\",m=\"w\"} 2\nb{l=\"v2\"} 3\n",
    );
    assert!(e["a"].is_empty());
    assert_eq!(
        e["b"]["l"],
        BTreeSet::from(["v\"1,}".to_owned(), "v2".to_owned()])
    );
    assert_eq!(e["b"]["m"], BTreeSet::from(["w".to_owned()]));
}

/// The path templates of the API.
fn routes() -> BTreeSet<String> {
    let spec: Value = serde_json::from_str(&cardbind::http::api_spec_json()).unwrap();
    let mut out: BTreeSet<String> = spec["paths"].as_object().unwrap().keys().cloned().collect();
    out.insert("unmatched".into());
    out
}

/// Whether the service can put `value` in `label` of `metric` (beyond what
/// the scrape shows). `None`: nothing is known about that label.
fn producible(metric: &str, label: &str, value: &str) -> Option<bool> {
    use cardbind_domain::{BindingStatus, ErrorCode};
    let codes = || ErrorCode::ALL.iter().any(|c| c.as_str() == value);
    Some(match (metric, label) {
        (_, "route") => routes().contains(value),
        (_, "method") => METHODS.contains(&value),
        (_, "status") => value.len() == 3 && matches!(value.parse::<u16>(), Ok(100..=599)),
        (_, "code") => codes(),
        ("cardbind_binds_total", "outcome") => {
            codes() || BindingStatus::ALL.iter().any(|s| s.as_str() == value)
        }
        ("cardbind_channel_calls_total", "outcome") => CHANNEL_OUTCOMES.contains(&value),
        _ => return None,
    })
}

/// The literal alternatives of a regex matcher, when it is only that
/// (`a|b|c` of plain words); `None` for a pattern.
fn literal_alternatives(regex: &str) -> Option<Vec<&str>> {
    let plain = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-/:".contains(c))
    };
    let parts: Vec<&str> = regex.split('|').collect();
    parts.iter().all(|p| plain(p)).then_some(parts)
}

// ---------------------------------------------------------------------------
// The check

/// What is wrong with `queries` against `exported` (metrics in `excused`
/// are not looked for).
fn problems(
    queries: &[Query],
    recorded: &BTreeSet<String>,
    exported: &Exported,
    excused: &[&str],
) -> Vec<String> {
    let mut problems = Vec::new();
    for q in queries {
        let mut uses = Uses::default();
        walk(&q.expr, &mut uses);
        for (metric, matcher) in &uses.selectors {
            if recorded.contains(metric) {
                if let Some(m) = matcher {
                    if !TARGET_LABELS.contains(&m.name.as_str()) {
                        problems.push(format!(
                            "{}: {metric} is recorded per job only; it has no label {}",
                            q.origin, m.name
                        ));
                    }
                }
                continue;
            }
            if excused.contains(&metric.as_str()) {
                continue;
            }
            let Some(labels) = exported.get(metric) else {
                let histogram = ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| exported.contains_key(&format!("{metric}{s}")));
                let hint = if histogram {
                    " (a histogram: query its _bucket, _sum or _count series)"
                } else {
                    ""
                };
                problems.push(format!("{}: {metric} is not exported{hint}", q.origin));
                continue;
            };
            let Some(m) = matcher else { continue };
            if TARGET_LABELS.contains(&m.name.as_str()) {
                continue;
            }
            let Some(seen) = labels.get(&m.name) else {
                problems.push(format!(
                    "{}: {metric} has no label {:?} (it has {:?})",
                    q.origin,
                    m.name,
                    labels.keys().collect::<Vec<_>>()
                ));
                continue;
            };
            let values: Vec<&str> = match &m.op {
                MatchOp::Equal | MatchOp::NotEqual if !m.value.is_empty() => vec![m.value.as_str()],
                MatchOp::Re(_) | MatchOp::NotRe(_) => {
                    literal_alternatives(&m.value).unwrap_or_default()
                }
                _ => vec![],
            };
            for v in values {
                let ok = seen.contains(v) || producible(metric, &m.name, v) == Some(true);
                if !ok {
                    problems.push(format!(
                        "{}: {metric}{{{}}} never has the value {v:?} (seen: {seen:?})",
                        q.origin, m.name
                    ));
                }
            }
        }
        for (label, metrics) in &uses.groupings {
            if TARGET_LABELS.contains(&label.as_str()) {
                continue;
            }
            let carried = metrics.iter().any(|metric| {
                excused.contains(&metric.as_str())
                    || exported
                        .get(metric)
                        .is_some_and(|labels| labels.contains_key(label))
            });
            if !carried {
                problems.push(format!(
                    "{}: grouped or matched on {label:?}, which none of {metrics:?} carries",
                    q.origin
                ));
            }
        }
    }
    problems
}

fn check(queries: &[Query], recorded: &BTreeSet<String>, exported: &Exported, excused: &[&str]) {
    let problems = problems(queries, recorded, exported, excused);
    assert!(
        problems.is_empty(),
        "the deploy/ queries do not match the service's metrics:\n  {}",
        problems.join("\n  ")
    );
}

/// Every family the service exports is on the dashboard (a histogram by
/// any of its series).
fn check_dashboard_covers(dashboard: &[Query], exported: &Exported) {
    let mut on_dashboard = BTreeSet::new();
    for q in dashboard {
        let mut uses = Uses::default();
        walk(&q.expr, &mut uses);
        on_dashboard.extend(uses.selectors.into_iter().map(|(m, _)| m));
    }
    let family = |name: &str| {
        ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|base| exported.contains_key(&format!("{base}_bucket")))
            .unwrap_or(name)
            .to_owned()
    };
    let shown: BTreeSet<String> = on_dashboard.iter().map(|m| family(m)).collect();
    let missing: Vec<String> = exported
        .keys()
        .filter(|m| m.starts_with("cardbind_"))
        .map(|m| family(m))
        .filter(|f| !shown.contains(f))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(
        missing.is_empty(),
        "exported but on no panel of {DASHBOARD}: {missing:?}"
    );
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

fn all_queries() -> (Vec<Query>, Vec<Query>, BTreeSet<String>) {
    let (rules, recorded) = rule_queries();
    (rules, dashboard_queries(), recorded)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_rules_query_only_what_the_service_exports() {
    let (rules, dashboard, recorded) = all_queries();
    assert!(rules.len() >= 8 && dashboard.len() >= 10, "queries found");
    let app = TestApp::spawn(|_| {}).await;
    let exported = exercise_and_scrape(&app).await;
    for m in KMS_ONLY {
        assert!(
            !exported.contains_key(m),
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
    let app = TestApp::spawn(|c| use_kms(c, &endpoint, &key)).await;
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
