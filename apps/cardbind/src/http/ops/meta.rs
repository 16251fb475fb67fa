//! Health, metrics and card scheme lookup.

use cardbind_usecases::bins::Bin;
use poem_openapi::param::Path;
use poem_openapi::payload::{Json, PlainText};
use poem_openapi::OpenApi;

use super::*;
use crate::http::auth::BearerAuth;
use crate::http::metrics::STORE_PROBE_TIMEOUT;
use cardbind_usecases::readiness::NotReady;

/// How long `/readyz` waits for the store and the key service (checked at
/// once, each within it).
pub const READINESS_DEADLINE: std::time::Duration = std::time::Duration::from_secs(4);

/// How long a `/readyz` answer is given again to the probes that follow.
pub const READINESS_REUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// The readiness check shared by concurrent probes: one runs at a time, and
/// its answer is reused for [`READINESS_REUSE`]. `/readyz` needs no token,
/// and each check opens the canary through the master key (one KMS
/// `Decrypt` with `aws_kms`): a flood of probes must not become a flood of
/// KMS calls, which cost money and share the account's quota with binds.
#[derive(Default)]
pub struct ReadinessProbe {
    last: std::sync::Arc<tokio::sync::Mutex<Option<Checked>>>,
}

/// A check's answer and when it was had.
type Checked = (tokio::time::Instant, Result<(), NotReady>);

impl ReadinessProbe {
    /// The last answer if it is fresh, else `run`'s (a probe arriving
    /// while a check runs waits for it: at most [`READINESS_DEADLINE`]).
    /// The check runs on a task of its own, which keeps the turn until it
    /// has stored its answer: a prober that hangs up (a load balancer's
    /// short timeout) neither cancels it nor lets the next prober start
    /// another.
    pub async fn check<F>(&self, run: impl FnOnce() -> F) -> Result<(), NotReady>
    where
        F: std::future::Future<Output = Result<(), NotReady>> + Send + 'static,
    {
        let mut last = self.last.clone().lock_owned().await;
        if let Some((at, answer)) = last.as_ref() {
            if at.elapsed() < READINESS_REUSE {
                return answer.clone();
            }
        }
        let check = run();
        let task = tokio::spawn(async move {
            let answer = check.await;
            *last = Some((tokio::time::Instant::now(), answer.clone()));
            answer
        });
        task.await.unwrap_or_else(|_| {
            Err(NotReady {
                store: None,
                keys: Some("the readiness check stopped".into()),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn concurrent_probes_share_one_check_and_reuse_it_for_a_second() {
        let probe = Arc::new(ReadinessProbe::default());
        let runs = Arc::new(AtomicU32::new(0));
        let check = |down: bool| {
            let (probe, runs) = (probe.clone(), runs.clone());
            async move {
                probe
                    .check(|| async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                        if down {
                            Err(NotReady {
                                store: Some("down".into()),
                                keys: None,
                            })
                        } else {
                            Ok(())
                        }
                    })
                    .await
            }
        };
        let answers = futures::future::join_all((0..50).map(|_| tokio::spawn(check(false)))).await;
        assert!(answers.into_iter().all(|a| matches!(a, Ok(Ok(())))));
        assert_eq!(runs.load(Ordering::SeqCst), 1, "one check for fifty probes");
        // Within the second the answer is given again, even if the
        // dependency went down meanwhile; after it, a new check runs.
        tokio::time::advance(std::time::Duration::from_millis(500)).await;
        assert_eq!(check(true).await, Ok(()));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        tokio::time::advance(READINESS_REUSE).await;
        assert!(check(true).await.is_err());
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        // A failure is reused the same way.
        assert!(check(false).await.is_err());
        assert_eq!(runs.load(Ordering::SeqCst), 2);

        // A prober that hangs up mid-check does not cancel it: the next
        // prober gets its answer rather than starting another check.
        tokio::time::advance(READINESS_REUSE).await;
        let gone = tokio::spawn(check(false));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        gone.abort();
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(check(true).await, Ok(()), "the first check's answer");
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }
}
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
    /// balancer's usual 5-second probe timeout. A key service that does not
    /// answer is tolerated while the instance still seals and opens with
    /// the branch key it holds; one that refuses is not. Concurrent probes
    /// share one check, and an answer is given again for 1 second.
    #[oai(path = "/readyz", method = "get", operation_id = "readiness")]
    async fn readiness(&self, cx: Cx) -> Result<HealthResponse, ReadyError> {
        let usecases = cx.usecases().clone();
        match cx
            .shared
            .readiness
            .check(|| async move { usecases.readiness(READINESS_DEADLINE).await })
            .await
        {
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
