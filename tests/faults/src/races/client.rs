//! A small HTTP client of the service for the race scenarios: raw answers
//! (the exact bytes, to compare a replay with the first answer), tokens by
//! role, the card list, the audit trail and the channel call counter.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

/// Statuses a card counts against the per-user cap in.
pub const LIVE: [&str; 4] = ["active", "frozen", "pending_verification", "pending_review"];

/// One answer (or transport failure) as the client saw it.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: Option<u16>,
    /// `error.code` of an error body.
    pub code: Option<String>,
    pub body: Value,
    /// The body's exact bytes.
    pub raw: Vec<u8>,
    /// `Idempotent-Replayed: true`.
    pub replayed: bool,
    pub retry_after: Option<u64>,
    pub error: Option<String>,
}

impl Reply {
    /// `201`, `422 card_limit_reached`, `transport error`.
    pub fn label(&self) -> String {
        match (self.status, &self.code) {
            (None, _) => "transport error".into(),
            (Some(s), Some(c)) => format!("{s} {c}"),
            (Some(s), None) => s.to_string(),
        }
    }

    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// 5xx or no answer at all.
    pub fn broken(&self) -> bool {
        self.status.is_none_or(|s| s >= 500)
    }

    pub fn is(&self, status: u16, code: &str) -> bool {
        self.status == Some(status) && self.code.as_deref() == Some(code)
    }

    /// The card id a 2xx answer names.
    pub fn card_id(&self) -> Option<&str> {
        if self.ok() {
            self.body["id"].as_str()
        } else {
            None
        }
    }

    /// Same status and the same bytes.
    pub fn same_as(&self, other: &Reply) -> bool {
        self.status.is_some() && self.status == other.status && self.raw == other.raw
    }
}

/// `label × count` of a set of answers, most frequent first.
pub fn tally<'a>(replies: impl IntoIterator<Item = &'a Reply>) -> String {
    let mut m: BTreeMap<String, usize> = BTreeMap::new();
    for r in replies {
        *m.entry(r.label()).or_default() += 1;
    }
    let mut v: Vec<(String, usize)> = m.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.iter()
        .map(|(l, n)| format!("{l} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl Client {
    pub fn new(base: &str, token: &str) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            // Longer than any stall a scenario causes (a stopped instance
            // holds its requests for the old binary's 60 s lease).
            .timeout(Duration::from_secs(150))
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Client {
            http,
            base: base.to_owned(),
            token: token.to_owned(),
        })
    }

    /// The same connection pool under another token.
    pub fn as_token(&self, token: &str) -> Client {
        Client {
            token: token.to_owned(),
            ..self.clone()
        }
    }

    /// The same token against another instance.
    pub fn at(&self, base: &str) -> Client {
        Client {
            base: base.to_owned(),
            ..self.clone()
        }
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&[u8]>,
        key: Option<&str>,
    ) -> Reply {
        let mut rb = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(k) = key {
            rb = rb.header("Idempotency-Key", k);
        }
        if let Some(b) = body {
            rb = rb
                .header("Content-Type", "application/json")
                .body(b.to_vec());
        }
        let failed = |e: String| Reply {
            status: None,
            code: None,
            body: Value::Null,
            raw: Vec::new(),
            replayed: false,
            retry_after: None,
            error: Some(e),
        };
        match rb.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let header = |n: &str| {
                    r.headers()
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let replayed = header("idempotent-replayed").as_deref() == Some("true");
                let retry_after = header("retry-after").and_then(|v| v.trim().parse().ok());
                match r.bytes().await {
                    Ok(bytes) => {
                        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                        Reply {
                            status: Some(status),
                            code: body["error"]["code"].as_str().map(str::to_owned),
                            body,
                            raw: bytes.to_vec(),
                            replayed,
                            retry_after,
                            error: None,
                        }
                    }
                    Err(e) => failed(format!("reading the body: {e}")),
                }
            }
            Err(e) => failed(e.to_string()),
        }
    }

    pub async fn bind(&self, user: &str, body: &[u8], key: &str) -> Reply {
        self.send(
            reqwest::Method::POST,
            &format!("/v1/users/{user}/cards"),
            Some(body),
            Some(key),
        )
        .await
    }

    /// A GET that must answer 200, tried a few times (a store coming back).
    async fn get_ok(&self, path: &str) -> anyhow::Result<Value> {
        let mut last = String::new();
        for attempt in 0..8u64 {
            let r = self.send(reqwest::Method::GET, path, None, None).await;
            if r.status == Some(200) {
                return Ok(r.body);
            }
            last = format!("{} {}", r.label(), r.error.unwrap_or_default());
            tokio::time::sleep(Duration::from_millis(250 * (attempt + 1))).await;
        }
        bail!("GET {path}: {last}")
    }

    /// Every card of `user` (all pages, any status).
    pub async fn cards(&self, user: &str) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..100 {
            let path = match &after {
                Some(a) => format!("/v1/users/{user}/cards?limit=100&after={a}"),
                None => format!("/v1/users/{user}/cards?limit=100"),
            };
            let page = self.get_ok(&path).await?;
            out.extend(page["cards"].as_array().cloned().unwrap_or_default());
            match page["next_after"].as_str() {
                Some(n) if !n.is_empty() => after = Some(n.to_owned()),
                _ => return Ok(out),
            }
        }
        bail!("more than 100 pages of cards for {user}")
    }

    /// Audit events matching `query` (e.g. `user_id=u&action=…`), in the
    /// order the service lists them, every page (the current cursor
    /// `after`/`next_after` and the older `after_seq`/`next_after_seq`).
    /// Needs an auditor token.
    pub async fn audit(&self, query: &str) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut cursor = String::new();
        for _ in 0..200 {
            let page = self
                .get_ok(&format!("/v1/audit/events?{query}&limit=500{cursor}"))
                .await?;
            out.extend(page["events"].as_array().cloned().unwrap_or_default());
            if let Some(n) = page["next_after"].as_str().filter(|n| !n.is_empty()) {
                cursor = format!("&after={n}");
            } else if let Some(n) = page["next_after_seq"].as_u64() {
                cursor = format!("&after_seq={n}");
            } else {
                return Ok(out);
            }
        }
        bail!("more than 200 pages of audit events for {query}")
    }

    /// `binding.channel_start` events about `user`.
    pub async fn channel_start_events(&self, user: &str) -> anyhow::Result<usize> {
        Ok(self
            .audit(&format!("user_id={user}&action=binding.channel_start"))
            .await?
            .len())
    }

    /// Calls the service made to start a binding at a channel, every
    /// outcome (`cardbind_channel_calls_total{op="start_binding"}`).
    pub async fn channel_start_calls(&self) -> anyhow::Result<u64> {
        let r = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .context("GET /metrics")?;
        let text = r.text().await.context("GET /metrics body")?;
        Ok(start_calls(&text))
    }
}

/// The sum of `cardbind_channel_calls_total` samples with
/// `op="start_binding"` in a Prometheus text exposition.
pub fn start_calls(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("cardbind_channel_calls_total{") && l.contains("op=\"start_binding\"")
        })
        .filter_map(|l| l.rsplit(' ').next())
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_calls_sums_every_outcome_of_start_binding_only() {
        let m = "# HELP cardbind_channel_calls_total x\n\
                 cardbind_channel_calls_total{channel=\"mock\",op=\"start_binding\",outcome=\"ok\"} 3\n\
                 cardbind_channel_calls_total{channel=\"mock\",op=\"start_binding\",outcome=\"timeout\"} 2\n\
                 cardbind_channel_calls_total{channel=\"mock\",op=\"confirm_otp\",outcome=\"ok\"} 7\n\
                 cardbind_channel_breaker_state{channel=\"mock\"} 0\n";
        assert_eq!(start_calls(m), 5);
        assert_eq!(start_calls(""), 0);
    }

    #[test]
    fn tally_counts_labels_most_frequent_first() {
        let r = |s: u16, c: Option<&str>| Reply {
            status: Some(s),
            code: c.map(str::to_owned),
            body: Value::Null,
            raw: Vec::new(),
            replayed: false,
            retry_after: None,
            error: None,
        };
        let v = [
            r(201, None),
            r(422, Some("card_limit_reached")),
            r(422, Some("card_limit_reached")),
        ];
        assert_eq!(tally(&v), "422 card_limit_reached ×2, 201 ×1");
    }
}
