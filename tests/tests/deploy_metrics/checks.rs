//! The check: what is wrong with a set of queries against a scrape, and
//! whether the dashboard shows every exported family.

use super::*;

/// Whether `metric` is one of `excused`'s families (a histogram's
/// `_bucket`, `_sum` and `_count` series are its family's).
pub(crate) fn is_excused(excused: &[&str], metric: &str) -> bool {
    excused.iter().any(|family| {
        metric == *family
            || ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| metric.strip_suffix(s) == Some(family))
    })
}

/// What is wrong with `queries` against `exported` (metrics in `excused`
/// are not looked for).
pub(crate) fn problems(
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
            if is_excused(excused, metric) {
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
                is_excused(excused, metric)
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

pub(crate) fn check(
    queries: &[Query],
    recorded: &BTreeSet<String>,
    exported: &Exported,
    excused: &[&str],
) {
    let problems = problems(queries, recorded, exported, excused);
    assert!(
        problems.is_empty(),
        "the deploy/ queries do not match the service's metrics:\n  {}",
        problems.join("\n  ")
    );
}

/// Every family the service exports is on the dashboard (a histogram by
/// any of its series).
pub(crate) fn check_dashboard_covers(dashboard: &[Query], exported: &Exported) {
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
