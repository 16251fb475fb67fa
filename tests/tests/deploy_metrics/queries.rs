//! The queries: every PromQL expression of the rules file and the
//! dashboard, parsed, and what each one selects and groups by.

use super::*;

/// One PromQL expression and where it comes from.
pub(crate) struct Query {
    pub(crate) origin: String,
    pub(crate) expr: Expr,
}

pub(crate) fn parse(origin: String, text: &str) -> Query {
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
pub(crate) fn rule_queries() -> (Vec<Query>, BTreeSet<String>) {
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
pub(crate) fn panels(dashboard: &Value) -> Vec<&Value> {
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
pub(crate) fn dashboard_queries() -> Vec<Query> {
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
pub(crate) struct Uses {
    /// (metric, matcher) for every selector, a matcher-less one too.
    pub(crate) selectors: Vec<(String, Option<Matcher>)>,
    /// Labels grouped or matched on, with the metrics they apply to.
    pub(crate) groupings: Vec<(String, BTreeSet<String>)>,
}

/// Walks `expr`, recording its uses; returns the metrics it selects.
pub(crate) fn walk(expr: &Expr, uses: &mut Uses) -> BTreeSet<String> {
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
