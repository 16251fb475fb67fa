//! The scrape: the text exposition format parsed, and the label values
//! the service can produce.

use super::*;

/// Sample name → label name → values seen.
pub(crate) type Exported = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// Parses the text exposition format as the prometheus crate writes it.
pub(crate) fn parse_exposition(text: &str) -> Exported {
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
pub(crate) fn producible(metric: &str, label: &str, value: &str) -> Option<bool> {
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
pub(crate) fn literal_alternatives(regex: &str) -> Option<Vec<&str>> {
    let plain = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-/:".contains(c))
    };
    let parts: Vec<&str> = regex.split('|').collect();
    parts.iter().all(|p| plain(p)).then_some(parts)
}
