//! Metrics of the HTTP edge. Labels are bounded: `route` is the OpenAPI
//! path template (never the concrete path, which holds user and card ids),
//! `outcome` a card status or a stable error code.

use cardbind_domain::ErrorCode;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

pub struct HttpMetrics {
    registry: Registry,
    inner: Option<Collectors>,
}

struct Collectors {
    requests: IntCounterVec,
    duration: HistogramVec,
    binds: IntCounterVec,
    rate_limited: IntCounterVec,
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
            "HTTP request latency by route template",
        )
        .buckets(vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ]),
        &["route"],
    )?;
    let binds = IntCounterVec::new(
        Opts::new(
            "cardbind_binds_total",
            "Bind requests handled, by outcome (card status or error code)",
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
    registry.register(Box::new(rate_limited.clone()))?;
    registry.register(Box::new(requests.clone()))?;
    registry.register(Box::new(duration.clone()))?;
    registry.register(Box::new(binds.clone()))?;
    Ok(Collectors {
        requests,
        duration,
        binds,
        rate_limited,
    })
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
        HttpMetrics { registry, inner }
    }

    pub fn observe(&self, route: &str, method: &str, status: u16, seconds: f64) {
        if let Some(c) = &self.inner {
            c.requests
                .with_label_values(&[route, method, &status.to_string()])
                .inc();
            c.duration.with_label_values(&[route]).observe(seconds);
        }
    }

    pub fn bind_outcome(&self, outcome: &str) {
        if let Some(c) = &self.inner {
            c.binds.with_label_values(&[outcome]).inc();
        }
    }

    /// Counts a refusal by a velocity rule (nothing for other codes).
    pub fn rate_limit_hit(&self, code: ErrorCode) {
        let rule = match code {
            ErrorCode::RateLimited => "user",
            ErrorCode::IpRateLimited => "ip",
            ErrorCode::CardVelocityExceeded => "card",
            _ => return,
        };
        if let Some(c) = &self.inner {
            c.rate_limited.with_label_values(&[rule]).inc();
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
