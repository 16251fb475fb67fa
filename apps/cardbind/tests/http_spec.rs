//! The committed OpenAPI spec (`docs/openapi.json`) is what the code
//! generates. Run with `CARDBIND_UPDATE_SPEC=1` to rewrite it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use cardbind_domain::ErrorCode;
use serde_json::Value;

fn spec_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

#[test]
fn committed_spec_matches_the_code() {
    let generated = cardbind::http::api_spec_json();
    let path = spec_path();
    if std::env::var("CARDBIND_UPDATE_SPEC").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let first_diff = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map_or_else(
                || committed.lines().count().min(generated.lines().count()) + 1,
                |i| i + 1,
            );
        panic!(
            "docs/openapi.json is out of date with the code (first difference at line {first_diff}).\n\
             Regenerate it with:  CARDBIND_UPDATE_SPEC=1 cargo test -p cardbind --test suites http_spec::\n\
             and commit the result."
        );
    }
}

#[test]
fn spec_is_deterministic() {
    assert_eq!(
        cardbind::http::api_spec_json(),
        cardbind::http::api_spec_json()
    );
}

#[test]
fn spec_declares_operations_security_and_errors() {
    let spec: Value = serde_json::from_str(&cardbind::http::api_spec_json()).unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    let mut ids = Vec::new();
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            ids.push(id.to_owned());
            let responses = op["responses"].as_object().unwrap();
            if path.starts_with("/v1/") {
                assert!(responses.contains_key("500"), "{id} declares 500");
                assert!(responses.contains_key("400"), "{id} declares 400");
            }
            let secured = op.get("security").is_some();
            if path.starts_with("/v1/") && !path.starts_with("/v1/channels/") {
                assert!(secured, "{id} requires a bearer token");
                assert!(
                    responses.contains_key("401") && responses.contains_key("403")
                        || id == "channelNotify",
                    "{id}"
                );
                // A signing client's nonce is marked in the store before
                // any operation runs: the store down is 503 on every one.
                assert!(
                    responses.contains_key("503"),
                    "{id} declares 503 (a signed request's nonce store)"
                );
            }
        }
    }
    for id in [
        "bindCard",
        "verifyCard",
        "listCards",
        "getCard",
        "unbindCard",
        "setDefaultCard",
        "shareCard",
        "listCardShares",
        "revokeShare",
        "listSharedCards",
        "acceptShare",
        "leaveShare",
        "freezeCard",
        "unfreezeCard",
        "listReviews",
        "approveReview",
        "rejectReview",
        "eraseUser",
        "listAuditEvents",
        "listConsents",
        "channelNotify",
        "lookupBin",
        "liveness",
        "readiness",
        "metrics",
    ] {
        assert!(ids.iter().any(|i| i == id), "missing {id}");
    }
    let notify = &spec["paths"]["/v1/channels/{channel}/notify"]["post"];
    assert!(
        notify.get("security").is_none(),
        "channels sign their own notifications"
    );

    let bind = &spec["paths"]["/v1/users/{user_id}/cards"]["post"];
    let declared: Vec<&str> = bind["responses"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        declared,
        ["201", "202", "400", "401", "403", "409", "413", "422", "429", "500", "503"],
        "bindCard declares exactly what it can answer"
    );
    assert!(bind["responses"]["429"]["headers"]
        .get("Retry-After")
        .is_some());
    assert!(bind["responses"]["201"]["headers"]
        .get("X-Request-Id")
        .is_some());
    let params: Vec<&str> = bind["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(params.contains(&"Idempotency-Key"), "{params:?}");

    let schemes = &spec["components"]["securitySchemes"];
    assert_eq!(schemes["bearerAuth"]["scheme"], "bearer");
    assert_eq!(schemes["requestSignature"]["type"], "apiKey");
    assert_eq!(schemes["requestSignature"]["name"], "X-Cardbind-Signature");

    let codes = spec["components"]["schemas"]["ErrorBody"]["properties"]["code"]["description"]
        .as_str()
        .unwrap();
    for code in ErrorCode::ALL {
        assert!(
            codes.contains(&format!("`{}`", code.as_str())),
            "{code} listed"
        );
    }
    let card = &spec["components"]["schemas"]["Card"]["properties"];
    for forbidden in ["card_number", "id_number", "phone", "cvv", "holder_name"] {
        assert!(
            card.get(forbidden).is_none(),
            "Card never shows {forbidden}"
        );
    }
}

/// The pattern the spec declares for a field of `BindCardBody`.
fn bind_pattern(field: &str) -> regex::Regex {
    let spec: Value = serde_json::from_str(&cardbind::http::api_spec_json()).unwrap();
    let p = spec["components"]["schemas"]["BindCardBody"]["properties"][field]["pattern"]
        .as_str()
        .unwrap_or_else(|| panic!("{field} declares a pattern"));
    regex::Regex::new(p).unwrap()
}

/// Every string of `alphabet` up to `max_len` characters (small alphabets),
/// plus deterministic pseudo-random longer ones.
fn strings(alphabet: &[char], max_len: usize, random: usize, random_len: usize) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut level = vec![String::new()];
    for _ in 0..max_len {
        level = level
            .iter()
            .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
            .collect();
        out.extend(level.iter().cloned());
    }
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..random {
        let mut s = String::new();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x % random_len as u64) as usize;
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            s.push(alphabet[(x % alphabet.len() as u64) as usize]);
        }
        out.push(s);
    }
    out
}

#[test]
fn phone_pattern_is_exactly_the_domain_rule() {
    use cardbind_domain::Phone;
    let re = bind_pattern("phone");
    let mut samples = strings(&['1', '3', '8', '6', '0', '+', ' ', '-'], 6, 0, 1);
    // Around the real shapes: national, +86, 0086, 86, other countries.
    let mut x: u64 = 7;
    for base in [
        "13800138000",
        "+8613800138000",
        "008613800138000",
        "8613800138000",
        "+14155550123",
        "+442071838750",
        "+8612345678",
        "12812345678",
    ] {
        samples.push(base.to_owned());
        for i in 0..base.len() {
            for c in ['0', '1', '6', '8', '9', '+', ' ', '-'] {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                let mut s: Vec<char> = base.chars().collect();
                match x % 3 {
                    0 => s[i] = c,
                    1 => s.insert(i, c),
                    _ => {
                        s.remove(i);
                    }
                }
                samples.push(s.into_iter().collect());
            }
        }
    }
    // Runs of one to five separators at each place of a few numbers: up
    // to three in a row are taken, as the masks of free text join them.
    for base in ["13800138000", "+8613800138000", "+14155550123"] {
        for i in 0..=base.len() {
            for n in 1..=5 {
                for sep in [" ", "-"] {
                    let mut s = base.to_owned();
                    s.insert_str(i, &sep.repeat(n));
                    samples.push(s);
                }
            }
        }
    }
    let mut taken = [0usize; 6];
    for s in samples {
        assert_eq!(re.is_match(&s), Phone::parse(&s).is_ok(), "{s:?}");
        let longest = s
            .split(|c: char| c != ' ' && c != '-')
            .map(str::len)
            .max()
            .unwrap_or(0);
        if Phone::parse(&s).is_ok() {
            taken[longest.min(5)] += 1;
        }
    }
    assert!(taken[3] > 0 && taken[4] == 0 && taken[5] == 0, "{taken:?}");
    // The longest the pattern takes (three separators around each of 15
    // digits after a `+`) is the declared maxLength, so that generators
    // keep what the pattern gives.
    let longest = format!("{0}+{0}{1}", "---", "1---".repeat(15));
    assert!(re.is_match(&longest) && Phone::parse(&longest).is_ok());
    let spec: Value = serde_json::from_str(&cardbind::http::api_spec_json()).unwrap();
    let phone = &spec["components"]["schemas"]["BindCardBody"]["properties"]["phone"];
    assert_eq!(phone["maxLength"].as_u64(), Some(longest.len() as u64));
}

/// Every pattern of the spec, as (JSON pointer, pattern).
fn spec_patterns() -> Vec<(String, String)> {
    fn walk(v: &Value, at: String, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    let here = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                    match (k.as_str(), v) {
                        ("pattern", Value::String(p)) => out.push((here, p.clone())),
                        _ => walk(v, here, out),
                    }
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    walk(v, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }
    let spec: Value = serde_json::from_str(&cardbind::http::api_spec_json()).unwrap();
    let mut out = Vec::new();
    walk(&spec, String::new(), &mut out);
    out
}

/// A pattern means the same to every reader of the spec: JavaScript's
/// `RegExp` with or without its `u` flag, Python's `re` (clients generated
/// by openapi-generator check patterns with it), and the service's regex
/// crate. So no Unicode property classes (`\p{…}`), no shorthand classes
/// (`\d` is any decimal digit to Python, an ASCII one to JavaScript), no
/// group flags, lookarounds or word boundaries; and Python compiles each.
#[test]
fn every_pattern_reads_alike_in_javascript_python_and_the_service() {
    let patterns = spec_patterns();
    assert!(patterns.len() >= 10, "{patterns:?}");
    for (at, p) in &patterns {
        for bad in [
            "\\p", "\\P", "\\d", "\\D", "\\w", "\\W", "\\s", "\\S", "\\b", "\\B", "(?", "\\U",
            "\\x{", "\\u{",
        ] {
            assert!(!p.contains(bad), "{at}: {bad} in {p}");
        }
        assert!(
            p.starts_with('^') && p.ends_with('$'),
            "{at}: not anchored: {p}"
        );
        regex::Regex::new(p).unwrap_or_else(|e| panic!("{at}: {e}"));
    }
    let list = serde_json::to_string(&patterns.iter().map(|(_, p)| p).collect::<Vec<_>>()).unwrap();
    let python = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, re, sys\nfor p in json.load(sys.stdin): re.compile(p)\nprint('ok')",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(list.as_bytes())?;
            child.wait_with_output()
        });
    let out = match python {
        Ok(out) => out,
        // The test command installs Python's venvs, so under CI it is there.
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && std::env::var("CI").as_deref() != Ok("true") =>
        {
            eprintln!("python3 not found: the patterns were not compiled with Python's re");
            return;
        }
        Err(e) => panic!("python3: {e}"),
    };
    assert!(
        out.status.success(),
        "python's re refuses a pattern: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Integers carry only the formats OpenAPI registers (generators read an
/// unknown `uint64` as a 32-bit integer), and none may be negative where
/// the service's type cannot.
#[test]
fn integers_carry_registered_formats_and_their_ranges() {
    fn walk(v: &Value, at: &str, seen: &mut usize) {
        match v {
            Value::Object(m) => {
                if m.get("type").and_then(Value::as_str) == Some("integer") {
                    *seen += 1;
                    let format = m.get("format").and_then(Value::as_str);
                    assert!(
                        matches!(format, Some("int32" | "int64")),
                        "{at}: format {format:?}"
                    );
                    if format == Some("int32") {
                        let max = m.get("maximum").and_then(Value::as_i64);
                        assert!(max.is_some_and(|x| x <= i64::from(i32::MAX)), "{at}");
                    }
                }
                for (k, x) in m {
                    walk(x, &format!("{at}/{k}"), seen);
                }
            }
            Value::Array(a) => a
                .iter()
                .enumerate()
                .for_each(|(i, x)| walk(x, &format!("{at}/{i}"), seen)),
            _ => {}
        }
    }
    let spec: Value = serde_json::from_str(&cardbind::http::api_spec_json()).unwrap();
    let mut seen = 0;
    walk(&spec, "", &mut seen);
    assert!(seen >= 10, "{seen}");
    let seq = &spec["components"]["schemas"]["AuditEventDto"]["properties"]["seq"];
    assert_eq!(
        (seq["format"].as_str(), seq["minimum"].as_i64()),
        (Some("int64"), Some(0))
    );
    for schema in ["BindCardBody", "Card"] {
        let month = &spec["components"]["schemas"][schema]["properties"]["expiry_month"];
        assert_eq!(
            (
                month["format"].as_str(),
                month["minimum"].as_i64(),
                month["maximum"].as_i64()
            ),
            (Some("int32"), Some(1), Some(12)),
            "{schema}"
        );
        let year = &spec["components"]["schemas"][schema]["properties"]["expiry_year"];
        assert_eq!(year["format"].as_str(), Some("int32"), "{schema}");
    }
}

#[test]
fn card_number_pattern_is_the_domain_format_rule() {
    use cardbind_domain::{CardNumber, ErrorCode};
    let re = bind_pattern("card_number");
    let digits = ['4', '1', '5', '0', ' ', '-', 'x'];
    for s in strings(&digits, 4, 3000, 24) {
        // The pattern says what the number is made of; the domain then
        // also checks the issuer range, the brand's length and Luhn.
        let format_refusal = match CardNumber::parse(&s) {
            Ok(_) => false,
            Err(e) => {
                e.code == ErrorCode::InvalidCardNumber
                    && (e.message.contains("digits only") || e.message.contains("12 to 19"))
            }
        };
        assert_eq!(re.is_match(&s), !format_refusal, "{s:?}");
    }
}

#[test]
fn holder_name_resident_id_and_cvv_patterns_admit_only_what_the_domain_admits() {
    use cardbind_domain::{CardBrand, Cvv, HolderName, ResidentId};
    let name = bind_pattern("holder_name");
    for s in strings(
        &[
            'A', 'é', '张', ' ', '.', '-', '\'', '·', '1', '\t', '\u{301}', '\u{e34}',
        ],
        4,
        2000,
        70,
    ) {
        if name.is_match(&s) && s.chars().count() <= 64 {
            assert!(HolderName::parse(&s).is_ok(), "{s:?}");
        }
    }
    // Every code point the pattern takes after a letter (its marks are
    // explicit ranges, not `\p{M}`, which fuzzers read as whole blocks):
    // the domain takes it too.
    let mut marks = 0;
    for c in (0..0x3100u32).filter_map(char::from_u32) {
        let s = format!("a{c}");
        if name.is_match(&s) {
            assert!(HolderName::parse(&s).is_ok(), "U+{:04X}", c as u32);
            marks += 1;
        }
    }
    assert!(marks > 700, "{marks}");
    // The letters are explicit ranges of the Basic Multilingual Plane (not
    // `\p{L}`, which Python's `re` and JavaScript without `u` do not
    // read): each is a letter to this regex crate and to the domain, and
    // they are all of its letters but the few newer than Unicode 14.
    let letter = regex::Regex::new(r"^\p{L}$").unwrap();
    let (mut taken, mut left) = (0, 0);
    for c in (0..0x10000u32).filter_map(char::from_u32) {
        let s = c.to_string();
        if name.is_match(&s) {
            assert!(letter.is_match(&s), "U+{:04X}", c as u32);
            assert!(HolderName::parse(&s).is_ok(), "U+{:04X}", c as u32);
            taken += 1;
        } else if letter.is_match(&s) {
            left += 1;
        }
    }
    assert!(taken > 45_000 && left < 100, "{taken} taken, {left} left");
    // Beyond it: refused by the pattern (the domain reads letters alone).
    assert!(!name.is_match("\u{20BB7}"));
    assert!(name.is_match("\u{5409}野 家"));
    let id = bind_pattern("id_number");
    let base: Vec<char> = "11010519491231002X".chars().collect();
    let mut matched = 0;
    let mut x: u64 = 11;
    for _ in 0..20_000 {
        let mut s = base.clone();
        for _ in 0..3 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let pos = ((x >> 33) % 18) as usize;
            s[pos] = ['0', '1', '2', '3', '9', 'X', 'x', 'a'][((x >> 20) % 8) as usize];
        }
        let s: String = s.into_iter().collect();
        if id.is_match(&s) {
            matched += 1;
            // Only the calendar date and the check character remain.
            if let Err(e) = ResidentId::parse(&s) {
                assert!(
                    e.message.contains("birth date") || e.message.contains("check character"),
                    "{s:?}: {}",
                    e.message
                );
            }
        } else {
            assert!(ResidentId::parse(&s).is_err(), "{s:?}");
        }
    }
    assert!(matched > 1000, "{matched}");
    let cvv = bind_pattern("cvv");
    for s in strings(&['1', '0', 'a', ' '], 5, 0, 1) {
        if cvv.is_match(&s) && !s.is_empty() {
            let ok =
                Cvv::parse(&s, CardBrand::Visa).is_ok() || Cvv::parse(&s, CardBrand::Amex).is_ok();
            assert!(ok, "{s:?}");
        }
    }
}

#[test]
fn every_declared_parameter_has_its_own_refusal() {
    let spec: Value = serde_json::from_str(&cardbind::http::api_spec_json()).unwrap();
    let mut names = std::collections::BTreeSet::new();
    for ops in spec["paths"].as_object().unwrap().values() {
        for op in ops.as_object().unwrap().values() {
            for p in op["parameters"].as_array().into_iter().flatten() {
                names.insert(p["name"].as_str().unwrap().to_owned());
            }
        }
    }
    assert!(names.len() >= 10, "{names:?}");
    for name in &names {
        let p = cardbind::http::params::Param::parse(name)
            .unwrap_or_else(|| panic!("{name} is declared but has no Param"));
        let e = p.refusal();
        assert_eq!(e.field.as_deref(), Some(name.as_str()));
    }
}
