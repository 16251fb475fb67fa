//! A response read whole, and assertions on the error envelope.

use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::Value;

/// A response, read whole.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// How long the request took.
    pub elapsed: Duration,
}

impl Response {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    pub fn error_code(&self) -> Option<String> {
        self.json()["error"]["code"].as_str().map(str::to_owned)
    }

    pub fn error_field(&self) -> Option<String> {
        self.json()["error"]["field"].as_str().map(str::to_owned)
    }

    /// A short description for assertion messages.
    pub fn describe(&self) -> String {
        let t = self.text();
        let t = if t.len() > 600 {
            format!("{}…", &t[..600])
        } else {
            t
        };
        format!("HTTP {}: {}", self.status, t)
    }

    /// Asserts the error envelope `{"error":{"code","message","request_id",
    /// "field"?}}` with this status and code; returns the `error` object.
    pub fn assert_error(&self, status: u16, code: &str) -> Value {
        assert_eq!(
            self.status,
            status,
            "expected {status} {code}, got {}",
            self.describe()
        );
        let e = assert_envelope(self);
        assert_eq!(
            e["code"],
            code,
            "expected code {code}, got {}",
            self.describe()
        );
        e
    }

    /// Asserts the status is 2xx; returns the JSON body.
    pub fn ok(&self) -> Value {
        assert!(
            (200..300).contains(&self.status),
            "expected 2xx, got {}",
            self.describe()
        );
        self.json()
    }

    pub fn expect_status(&self, status: u16) -> Value {
        assert_eq!(
            self.status,
            status,
            "expected {status}, got {}",
            self.describe()
        );
        self.json()
    }
}

/// Asserts that `r` carries the error envelope (any 4xx/5xx); returns
/// the `error` object.
pub fn assert_envelope(r: &Response) -> Value {
    let ct = r.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("application/json"),
        "error content-type should be JSON, got {ct:?} ({})",
        r.describe()
    );
    let v = r.json();
    let e = v.get("error").cloned().unwrap_or(Value::Null);
    assert!(e.is_object(), "no error envelope: {}", r.describe());
    assert!(
        e["code"].as_str().is_some_and(
            |c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        ),
        "error.code not snake_case: {}",
        r.describe()
    );
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error.message missing: {}",
        r.describe()
    );
    assert!(
        e["request_id"].as_str().is_some_and(|m| !m.is_empty()),
        "error.request_id missing: {}",
        r.describe()
    );
    if let Some(f) = e.get("field") {
        assert!(
            f.is_string() || f.is_null(),
            "error.field must be a string: {}",
            r.describe()
        );
    }
    e
}
