//! Metrics of the HTTP edge. Labels are bounded: `route` is the OpenAPI
//! path template (never the concrete path, which holds user and card ids),
//! `method` one of the standard methods or `other`, `outcome` a card
//! status or a stable error code, `code` a stable error code.
//!
//! Two gauges describe the store rather than the requests:
//! `cardbind_store_up` and `cardbind_review_queue_size`. They are refreshed
//! when `/metrics` is scraped ([`HttpMetrics::refresh_store`]) by one
//! bounded read of the bindings in review, so that they are true even when
//! no request comes in (a store that went away at night, a queue that
//! nobody works on).

use std::time::Duration;

use cardbind_domain::{BindingId, ErrorCode, TooManyRequestsCode};
use cardbind_usecases::UseCases;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// The review queue is counted up to this many bindings; past it the gauge
/// reads this value (a queue that long is an incident already, and each
/// scrape stays a few small reads).
pub const REVIEW_QUEUE_COUNT_CAP: u32 = 1000;

/// The route label of `bindCard` (with `POST`), whose answers
/// `cardbind_binds_total` counts.
pub const BIND_ROUTE: &str = "/v1/users/{user_id}/cards";

/// Bindings read per page while counting the review queue.
const REVIEW_PAGE: u32 = 200;
/// Bound of the store probe made at each scrape.
pub const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct HttpMetrics {
    registry: Registry,
    inner: Option<Collectors>,
    /// One store probe at a time: a scrape that comes while another one
    /// probes renders the last values instead of queueing store reads.
    probing: tokio::sync::Mutex<()>,
}

struct Collectors {
    requests: IntCounterVec,
    duration: HistogramVec,
    errors: IntCounterVec,
    binds: IntCounterVec,
    rate_limited: IntCounterVec,
    store_up: IntGauge,
    review_queue: IntGauge,
}

fn collectors(registry: &Registry) -> prometheus::Result<Collectors> {
    let requests = IntCounterVec::new(
        Opts::new(
            "cardbind_http_requests_total",
            "HTTP requests by route template, method and status",
        ),
        &["route", "method", "status"],
    )?;
    let duration = HistogramVec::new(
        HistogramOpts::new(
            "cardbind_http_request_duration_seconds",
            "HTTP request latency by route template and method",
        )
        .buckets(vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ]),
        &["route", "method"],
    )?;
    let errors = IntCounterVec::new(
        Opts::new(
            "cardbind_http_errors_total",
            "Error responses by route template and stable error code (stored idempotent replays are not counted again)",
        ),
        &["route", "code"],
    )?;
    let binds = IntCounterVec::new(
        Opts::new(
            "cardbind_binds_total",
            "Bind requests answered, by outcome: the card's status, or the error code of the refusal whichever layer refused it (stored idempotent replays are not counted again)",
        ),
        &["outcome"],
    )?;
    let rate_limited = IntCounterVec::new(
        Opts::new(
            "cardbind_rate_limited_total",
            "Bind attempts refused by a velocity rule: user (per user), ip (per client IP), card (one card across users)",
        ),
        &["rule"],
    )?;
    for rule in ["user", "ip", "card"] {
        rate_limited.with_label_values(&[rule]);
    }
    let store_up = IntGauge::new(
        "cardbind_store_up",
        "1 if the store answered the probe made at the last scrape of /metrics, 0 if it failed or timed out",
    )?;
    let review_queue = IntGauge::new(
        "cardbind_review_queue_size",
        "Bindings waiting in the manual review queue (pending_review), counted at the last successful store probe, at most 1000",
    )?;
    registry.register(Box::new(rate_limited.clone()))?;
    registry.register(Box::new(requests.clone()))?;
    registry.register(Box::new(duration.clone()))?;
    registry.register(Box::new(errors.clone()))?;
    registry.register(Box::new(binds.clone()))?;
    registry.register(Box::new(store_up.clone()))?;
    registry.register(Box::new(review_queue.clone()))?;
    Ok(Collectors {
        requests,
        duration,
        errors,
        binds,
        rate_limited,
        store_up,
        review_queue,
    })
}

/// Counts the bindings in review, up to [`REVIEW_QUEUE_COUNT_CAP`].
async fn count_review_queue(usecases: &UseCases) -> Result<u32, String> {
    count_paged(
        REVIEW_QUEUE_COUNT_CAP,
        REVIEW_PAGE,
        |after: Option<BindingId>, limit| async move {
            usecases
                .review_queue_page(after, limit)
                .await
                .map_err(|e| e.to_string())
        },
    )
    .await
}

/// Counts items read in pages of `page` (`fetch(after, limit)` answers the
/// page's length and its last cursor), stopping at `cap`.
async fn count_paged<C, F, Fut>(cap: u32, page: u32, mut fetch: F) -> Result<u32, String>
where
    F: FnMut(Option<C>, u32) -> Fut,
    Fut: std::future::Future<Output = Result<(usize, Option<C>), String>>,
{
    let page = page.max(1);
    let mut count: u32 = 0;
    let mut after: Option<C> = None;
    while count < cap {
        let limit = page.min(cap - count);
        let (len, last) = fetch(after.take(), limit).await?;
        // At most `limit` are counted, whatever the store answered.
        let len = u32::try_from(len).unwrap_or(u32::MAX).min(limit);
        count += len;
        match last {
            Some(cursor) if len == limit => after = Some(cursor),
            _ => break,
        }
    }
    Ok(count)
}

impl HttpMetrics {
    pub fn new() -> HttpMetrics {
        let registry = Registry::new();
        let inner = match collectors(&registry) {
            Ok(c) => Some(c),
            Err(e) => {
                // Constant names and labels: not expected; serve without them.
                tracing::error!(error = %e, "HTTP metrics could not be created");
                None
            }
        };
        HttpMetrics {
            registry,
            inner,
            probing: tokio::sync::Mutex::new(()),
        }
    }

    pub fn observe(&self, route: &str, method: &str, status: u16, seconds: f64) {
        if let Some(c) = &self.inner {
            c.requests
                .with_label_values(&[route, method, &status.to_string()])
                .inc();
            c.duration
                .with_label_values(&[route, method])
                .observe(seconds);
        }
    }

    /// Counts an error response by its stable code.
    pub fn error(&self, route: &str, code: ErrorCode) {
        if let Some(c) = &self.inner {
            c.errors.with_label_values(&[route, code.as_str()]).inc();
        }
    }

    pub fn bind_outcome(&self, outcome: &str) {
        if let Some(c) = &self.inner {
            c.binds.with_label_values(&[outcome]).inc();
        }
    }

    /// Counts a refusal by a velocity rule (nothing for other codes).
    pub fn rate_limit_hit(&self, code: ErrorCode) {
        let Some(code) = TooManyRequestsCode::of(code) else {
            return;
        };
        let rule = match code {
            TooManyRequestsCode::RateLimited => "user",
            TooManyRequestsCode::IpRateLimited => "ip",
            TooManyRequestsCode::CardVelocityExceeded => "card",
        };
        if let Some(c) = &self.inner {
            c.rate_limited.with_label_values(&[rule]).inc();
        }
    }

    /// Probes the store (bounded by `timeout`) and sets
    /// `cardbind_store_up` and, when the probe answered,
    /// `cardbind_review_queue_size`. Does nothing while another probe runs.
    pub async fn refresh_store(&self, usecases: &UseCases, timeout: Duration) {
        let Some(c) = &self.inner else {
            return;
        };
        let Ok(_probing) = self.probing.try_lock() else {
            return;
        };
        match tokio::time::timeout(timeout, count_review_queue(usecases)).await {
            Ok(Ok(n)) => {
                c.store_up.set(1);
                c.review_queue.set(i64::from(n));
            }
            Ok(Err(e)) => {
                c.store_up.set(0);
                tracing::warn!(error = %e, "store probe for /metrics failed");
            }
            Err(_) => {
                c.store_up.set(0);
                tracing::warn!(?timeout, "store probe for /metrics timed out");
            }
        }
    }

    /// Prometheus text of the service's registry followed by these metrics.
    pub fn render(&self, service: &Registry) -> String {
        let mut families = service.gather();
        families.extend(self.registry.gather());
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `fetch` over `total` items numbered from 1, recording each call.
    async fn count_of(total: u32, cap: u32, page: u32) -> (u32, Vec<(Option<u32>, u32)>) {
        let calls = std::sync::Mutex::new(Vec::new());
        let n = count_paged(cap, page, |after: Option<u32>, limit| {
            calls.lock().unwrap().push((after, limit));
            let start = after.unwrap_or(0);
            let end = (start + limit).min(total);
            async move { Ok(((end - start) as usize, (end > start).then_some(end))) }
        })
        .await
        .unwrap();
        (n, calls.into_inner().unwrap())
    }

    #[tokio::test]
    async fn the_review_queue_is_counted_page_by_page_up_to_the_cap() {
        assert_eq!(count_of(0, 1000, 200).await, (0, vec![(None, 200)]));
        assert_eq!(count_of(199, 1000, 200).await.0, 199);
        // A full last page needs one more (empty) read to know it was the last.
        assert_eq!(
            count_of(400, 1000, 200).await,
            (400, vec![(None, 200), (Some(200), 200), (Some(400), 200)])
        );
        assert_eq!(count_of(450, 1000, 200).await.0, 450);
        let (n, calls) = count_of(5000, 1000, 200).await;
        assert_eq!(n, 1000, "saturates at the cap");
        assert_eq!(calls.len(), 5, "and reads no further: {calls:?}");
        let (n, calls) = count_of(5000, 1000, 300).await;
        assert_eq!(n, 1000);
        assert_eq!(
            calls.last(),
            Some(&(Some(900), 100)),
            "the last page asks only for what is left"
        );
    }

    #[tokio::test]
    async fn a_store_that_answers_more_than_asked_is_not_over_counted() {
        let n = count_paged(10, 4, |_after: Option<u32>, _limit| async move {
            Ok((100, Some(1)))
        })
        .await
        .unwrap();
        assert_eq!(n, 10);
    }

    #[tokio::test]
    async fn a_failing_store_is_an_error() {
        let e = count_paged(10, 4, |_after: Option<u32>, _limit| async move {
            Err::<(usize, Option<u32>), _>("down".to_owned())
        })
        .await
        .unwrap_err();
        assert_eq!(e, "down");
    }
}
