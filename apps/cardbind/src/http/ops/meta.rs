//! Health, metrics and card scheme lookup.

use cardbind_usecases::bins::Bin;
use poem_openapi::param::Path;
use poem_openapi::payload::{Json, PlainText};
use poem_openapi::OpenApi;

use super::*;
use crate::http::auth::BearerAuth;
use crate::http::metrics::STORE_PROBE_TIMEOUT;

/// How long `/readyz` waits for the store and the key service (checked at
/// once, each within it).
pub const READINESS_DEADLINE: std::time::Duration = std::time::Duration::from_secs(4);
use crate::http::params::BinParam;
use crate::http::Cx;

pub struct MetaApi;

#[OpenApi(tag = "ApiTags::Meta")]
impl MetaApi {
    /// Look up a BIN
    ///
    /// The card scheme of the first 6 to 8 digits of a card number, and
    /// what the BIN table says about them (issuer, card type, country,
    /// currency; each only when known: the built-in table knows few BINs
    /// until an operator imports a full one). A BIN of no supported scheme
    /// is 404 `not_found`.
    #[oai(path = "/v1/bins/:bin", method = "get", operation_id = "lookupBin")]
    async fn lookup_bin(
        &self,
        cx: Cx,
        auth: BearerAuth,
        bin: Path<BinParam>,
    ) -> Result<BinResponse, BinError> {
        let ctx = cx.context(&auth.0);
        let bin = cx.param(Bin::parse(&bin.0))?;
        cx.answer(cx.usecases().lookup_bin(&ctx, bin))
            .await
            .map(|f| {
                BinResponse::Ok(Json(BinInfoDto::new(
                    f.bin.as_str().to_owned(),
                    f.brand,
                    IssuerFacts::of_info(f.facts.as_ref()),
                )))
            })
    }

    /// Liveness
    ///
    /// The process serves requests.
    #[oai(path = "/healthz", method = "get", operation_id = "liveness")]
    async fn liveness(&self) -> HealthResponse {
        HealthResponse::Ok(Json(Health {
            status: "ok".into(),
        }))
    }

    /// Readiness
    ///
    /// The store answers and the key service opens the start-up canary
    /// (`storage_unavailable` or `key_service_unavailable` otherwise), each
    /// within 4 seconds: the answer comes within that, below a load
    /// balancer's usual 5-second probe timeout.
    #[oai(path = "/readyz", method = "get", operation_id = "readiness")]
    async fn readiness(&self, cx: Cx) -> Result<HealthResponse, ReadyError> {
        match cx.usecases().readiness(READINESS_DEADLINE).await {
            Ok(()) => Ok(HealthResponse::Ok(Json(Health {
                status: "ok".into(),
            }))),
            Err(not_ready) => Err(cx.not_ready(&not_ready)),
        }
    }

    /// Metrics
    ///
    /// Prometheus text: the service's metrics and the HTTP edge's
    /// (`cardbind_http_requests_total{route,method,status}`,
    /// `cardbind_http_request_duration_seconds{route,method}`,
    /// `cardbind_http_errors_total{route,code}`,
    /// `cardbind_binds_total{outcome}`,
    /// `cardbind_rate_limited_total{rule}` with `rule` one of `user`, `ip`,
    /// `card`; `cardbind_store_up` and `cardbind_review_queue_size`, from a
    /// store probe made by this request); `route` is the path template.
    #[oai(path = "/metrics", method = "get", operation_id = "metrics")]
    async fn metrics(&self, cx: Cx) -> MetricsResponse {
        cx.shared
            .metrics
            .refresh_store(cx.usecases(), STORE_PROBE_TIMEOUT)
            .await;
        MetricsResponse::Ok(PlainText(
            cx.shared.metrics.render(&cx.shared.state.metrics),
        ))
    }
}
