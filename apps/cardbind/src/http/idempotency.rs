//! Idempotent binds: the first response to an `Idempotency-Key` is stored
//! and replayed byte for byte.
//!
//! * Scope: the caller (`role:subject` of the token), so two clients never
//!   see each other's keys.
//! * Request hash: a keyed digest (the vault's HMAC-SHA256,
//!   `CardVault::keyed_digest`) of the method, the path and the exact body
//!   bytes; the same key with another request is `idempotency_key_reused`.
//!   Keyed, because the body holds the card number, CVV and resident id: a
//!   plain SHA-256 of it, stored for a day, could be undone by trying every
//!   card number and CVV for a user whose other details are known.
//! * The key is claimed in the store (atomic across instances) before the
//!   work runs, under its keyed digest with the caller ([`BindKey`]; the
//!   key itself is never stored: a client may write card data into it); a
//!   concurrent request with the same key waits (polling every 25 ms, up to
//!   `idempotency_wait_ms`) and then replays the stored response, or
//!   answers `idempotency_key_in_progress` with `Retry-After` (when the
//!   holder's lease ends).
//! * Transient failures (5xx, 429, 409 `conflict`) release the key so that
//!   the client may retry with it (the same request: the work may have
//!   begun); refusals of a malformed request (400, 413) on the key's first
//!   attempt release it for any request (nothing ran: the client may send
//!   it mended, body included, under the same key), on a later attempt for
//!   the same request only (an earlier attempt's work may have begun);
//!   every other response is stored.
//! * The claim is a fenced lease (attempt number): it is renewed while the
//!   work runs, and a holder whose lease was taken over (it stalled past
//!   the lease) can neither store nor release anything.
//!
//! This is an operation `transform` (see `bindCard` and `shareCard`): it wraps the
//! operation's endpoint and sees the raw request before poem-openapi parses
//! it. It authenticates first (no key is claimed for an unknown caller).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cardbind_domain::ErrorCode;
use cardbind_ports::keys::CardVault;
use cardbind_ports::store::{Claim, Lease, StoredResponse};
use cardbind_ports::KeyError;
use futures::FutureExt;
use poem::http::{HeaderValue, StatusCode};
use poem::{Body, Endpoint, IntoResponse, Request, Response};

use super::auth::{authenticate, Authenticated};
use super::edge::{
    panicked_response, render_error, Panicked, RawBody, RequestMeta, IDEMPOTENCY_HEADER,
};
use super::error::ApiError;
use super::params::{IdempotencyKeyParam, IdempotencyKeyRule, TextRule};
use super::Shared;

pub const REPLAYED_HEADER: &str = "Idempotent-Replayed";
const POLL: Duration = Duration::from_millis(25);

/// The request's idempotency key with its caller, as the vault's keyed
/// digest (the first 16 bytes in hex): what the store keeps in place of the
/// key, and what the use case gets (a retry under the same key resumes what
/// the first attempt placed). Equal keys of one caller give equal digests,
/// so claims and replays work as on the key itself, and nothing a client
/// wrote into the key (a card number, by mistake or on purpose) is stored,
/// nor a digest of it that trying card numbers could match without the
/// vault's key.
#[derive(Clone, Debug)]
pub struct BindKey(pub String);

/// `keyed_digest` purpose of [`BindKey`].
const BIND_KEY_PURPOSE: &str = "idempotency-key";
/// `keyed_digest` purpose of the request hash.
const REQUEST_PURPOSE: &str = "idempotency-request";

impl BindKey {
    async fn of(vault: &dyn CardVault, scope: &str, key: &str) -> Result<BindKey, ApiError> {
        let digest = vault
            .keyed_digest(BIND_KEY_PURPOSE, &[scope.as_bytes(), key.as_bytes()])
            .await
            .map_err(keys)?;
        Ok(BindKey(hex::encode(&digest[..16])))
    }
}

/// Wraps an operation endpoint with idempotency (used as `transform`).
pub fn idempotent<E: Endpoint>(ep: E) -> Idempotent<E> {
    Idempotent { inner: ep }
}

pub struct Idempotent<E> {
    inner: E,
}

/// Keys are 1–255 printable ASCII characters, not starting or ending with a
/// space: the rule the `Idempotency-Key` parameter declares in the spec.
pub fn valid_key(k: &str) -> bool {
    IdempotencyKeyParam::parse(k).is_some()
}

/// The vault's keyed digest (hex) of method, path and body.
async fn request_hash(
    vault: &dyn CardVault,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<String, ApiError> {
    let digest = vault
        .keyed_digest(REQUEST_PURPOSE, &[method.as_bytes(), path.as_bytes(), body])
        .await
        .map_err(keys)?;
    Ok(hex::encode(digest))
}

/// As a bind's own seal and fingerprint answer: the key service refusing
/// the digest (access denied, a disabled key) is the operator's to fix and
/// the client's to retry later, so `503 key_service_unavailable` either
/// way, logged as an error when it refused. A key store that cannot be read
/// or written is a storage outage.
fn keys(e: KeyError) -> ApiError {
    match e {
        KeyError::StoreUnavailable(_) => ApiError::new(
            ErrorCode::StorageUnavailable,
            "storage is unavailable; retry later",
        ),
        KeyError::Unavailable(_) | KeyError::Refused(_) | KeyError::Erased => {
            if !matches!(e, KeyError::Unavailable(_)) {
                tracing::error!(error = %e, "the key service refused the idempotency digest");
            }
            ApiError::new(
                ErrorCode::KeyServiceUnavailable,
                "the key service is unavailable; retry later",
            )
        }
    }
    .with_cause(e.to_string())
}

fn storage(e: cardbind_ports::StoreError) -> ApiError {
    ApiError::new(
        ErrorCode::StorageUnavailable,
        "storage is unavailable; retry later",
    )
    .with_cause(e.to_string())
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = Response::builder().status(status).body(stored.body);
    if let Ok(ct) = HeaderValue::from_str(&stored.content_type) {
        resp.headers_mut().insert("content-type", ct);
    }
    resp.headers_mut()
        .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    resp
}

/// What an answer does to its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Final: stored and replayed.
    Store,
    /// A transient failure (a 5xx, a 429, or a refusal whose code says
    /// "retry": `conflict`, the card being bound by another request): the
    /// key is released for a retry of the same request (the work may have
    /// begun; another request under the key stays `idempotency_key_reused`).
    Release,
    /// A request refused as malformed (400, 413, 415): nothing ran, so the
    /// key is released for any request. (The operations under a key, a
    /// bind and a share, answer 400 only before they write: a field, a
    /// parameter, the channel's name. One that could answer 400 after a
    /// write would have to release instead.) What was wrong may be a header
    /// the key's request digest does not cover (a wrong `Content-Type`) or
    /// the body (a mistyped card number): the request sent again mended,
    /// under the same key, runs instead of replaying the refusal or being
    /// refused as another request's.
    Forget,
}

fn outcome(status: StatusCode, code: Option<ErrorCode>) -> Outcome {
    if matches!(
        status,
        StatusCode::BAD_REQUEST
            | StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::UNSUPPORTED_MEDIA_TYPE
    ) {
        Outcome::Forget
    } else if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || code
            .is_some_and(|c| c == ErrorCode::Conflict || c == ErrorCode::IdempotencyKeyInProgress)
    {
        Outcome::Release
    } else {
        Outcome::Store
    }
}

/// Runs `work` while renewing `lease` every third of its length, so that a
/// slow channel call never lets a second request take over a key whose
/// work is still running. Renewal that finds the lease taken over (the
/// store says `false`) stops renewing; the fenced `complete` then stores
/// nothing and the other attempt's answer wins.
async fn renewing<F: std::future::Future>(
    shared: &Shared,
    scope: &str,
    key: &str,
    lease: Lease,
    request_id: &str,
    work: F,
) -> F::Output {
    let length = shared.state.http.idempotency_lease_seconds.max(1);
    let every = Duration::from_millis(u64::try_from(length).unwrap_or(1).saturating_mul(1000) / 3)
        .max(Duration::from_millis(100));
    let store = &shared.state.idempotency;
    tokio::pin!(work);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut renewing = true;
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tick.tick(), if renewing => {
                let until = shared.state.clock.now().plus_seconds(length);
                match store.renew(scope, key, lease, until).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(request_id, attempt = lease.attempt, "idempotency lease taken over while the work ran");
                        renewing = false;
                    }
                    Err(e) => tracing::warn!(request_id, error = %e, "idempotency lease not renewed"),
                }
            }
        }
    }
}

impl<E: Endpoint> Idempotent<E> {
    async fn release(shared: &Shared, scope: &str, key: &str, lease: Lease, request_id: &str) {
        Self::give_up(shared, scope, key, lease, request_id, Outcome::Release).await;
    }

    /// Releases `lease` (`Outcome::Release`), or releases it for any
    /// request (`Outcome::Forget`).
    async fn give_up(
        shared: &Shared,
        scope: &str,
        key: &str,
        lease: Lease,
        request_id: &str,
        how: Outcome,
    ) {
        let store = &shared.state.idempotency;
        let done = if how == Outcome::Forget {
            store.forget(scope, key, lease).await
        } else {
            store.release(scope, key, lease).await
        };
        match done {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                request_id,
                attempt = lease.attempt,
                "idempotency key not released: a newer attempt holds it"
            ),
            Err(e) => {
                tracing::warn!(request_id, error = %e, "idempotency key not released; it frees when its lease ends")
            }
        }
    }

    async fn run(
        &self,
        shared: &Shared,
        scope: &str,
        key: &str,
        lease: Lease,
        req: Request,
        request_id: &str,
    ) -> poem::Result<Response> {
        let route = req.data::<RequestMeta>().and_then(|m| m.route.clone());
        // Where the operation notes the code it refused with.
        let refused = req
            .data::<RequestMeta>()
            .map(|m| m.error_code.clone())
            .unwrap_or_default();
        let call = AssertUnwindSafe(self.inner.call(req)).catch_unwind();
        let resp = match renewing(shared, scope, key, lease, request_id, call).await {
            Err(_) => {
                Self::release(shared, scope, key, lease, request_id).await;
                return Ok(panicked_response());
            }
            Ok(Ok(r)) => r.into_response(),
            Ok(Err(e)) => render_error(e, request_id, route.as_deref()),
        };
        if resp.data::<Panicked>().is_some() {
            Self::release(shared, scope, key, lease, request_id).await;
            return Ok(resp);
        }
        let (parts, body) = resp.into_parts();
        let bytes = body
            .into_bytes()
            .await
            .map_err(|e| ApiError::internal(format!("response body: {e}")))?;
        let code = parts
            .extensions
            .get::<ErrorCode>()
            .copied()
            .or(refused.get());
        let how = match outcome(parts.status, code) {
            // Only a key's first attempt is forgotten: a later one follows
            // an attempt that was released (or forgotten, which this
            // cannot tell apart), whose work may have begun, so the key
            // stays bound to its request.
            Outcome::Forget if lease.attempt > 1 => Outcome::Release,
            how => how,
        };
        if how != Outcome::Store {
            Self::give_up(shared, scope, key, lease, request_id, how).await;
        } else {
            let stored = StoredResponse {
                status: parts.status.as_u16(),
                content_type: parts
                    .headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("application/json")
                    .to_owned(),
                body: bytes.to_vec(),
            };
            match shared
                .state
                .idempotency
                .complete(scope, key, lease, &stored)
                .await
            {
                Ok(true) => {}
                Ok(false) => tracing::warn!(
                    request_id,
                    attempt = lease.attempt,
                    "idempotent response not stored: a newer attempt of this key holds it"
                ),
                Err(e) => {
                    tracing::error!(request_id, error = %e, "idempotent response not stored; a retry with this key runs again after the lease")
                }
            }
        }
        Ok(Response::from_parts(parts, Body::from_bytes(bytes)))
    }
}

impl<E: Endpoint> Endpoint for Idempotent<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let actor = authenticate(&req).await?;
        req.set_data(Authenticated(actor.clone()));
        let shared: Arc<Shared> = req
            .data::<Arc<Shared>>()
            .cloned()
            .ok_or_else(|| ApiError::internal("shared state missing from the request"))?;
        let request_id = req
            .data::<RequestMeta>()
            .map(|m| m.request_id.clone())
            .unwrap_or_default();
        // A value that is not visible ASCII is there, but not a key. (A
        // second header was refused by `authenticate`, above, as every
        // header an operation reads once: `edge::repeated`.)
        let sent = req
            .headers()
            .get(IDEMPOTENCY_HEADER)
            .map(|v| v.to_str().unwrap_or_default());
        let key = match sent {
            None => {
                return Err(ApiError::field(
                    ErrorCode::IdempotencyKeyMissing,
                    IDEMPOTENCY_HEADER,
                    "an Idempotency-Key header is required",
                )
                .into())
            }
            Some(k) if valid_key(k) => k.to_owned(),
            Some(_) => {
                return Err(ApiError::field(
                    ErrorCode::InvalidRequest,
                    IDEMPOTENCY_HEADER,
                    IdempotencyKeyRule::RULE,
                )
                .into())
            }
        };
        let body = req
            .data::<RawBody>()
            .map(|b| b.0.clone())
            .unwrap_or_default();
        let path = req.data::<RequestMeta>().map_or_else(
            || req.uri().path().to_owned(),
            |m| {
                m.path_and_query
                    .split('?')
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            },
        );
        let vault = shared.state.usecases.ports().vault.clone();
        let hash = request_hash(vault.as_ref(), req.method().as_str(), &path, &body).await?;
        let scope = format!("{}:{}", actor.role.as_str(), actor.subject);
        // The store keeps the key's digest, not the key: a client may put
        // anything printable in it, card data included.
        let bind_key = BindKey::of(vault.as_ref(), &scope, &key).await?;
        let key = bind_key.0.clone();
        req.set_data(bind_key);

        let settings = &shared.state.http;
        let deadline = Instant::now() + Duration::from_millis(settings.idempotency_wait_ms);
        loop {
            let now = shared.state.clock.now();
            let lease = now.plus_seconds(settings.idempotency_lease_seconds.max(1));
            match shared
                .state
                .idempotency
                .claim(&scope, &key, &hash, now, lease)
                .await
                .map_err(storage)?
            {
                Claim::Acquired(lease) => {
                    return self
                        .run(&shared, &scope, &key, lease, req, &request_id)
                        .await
                }
                Claim::Completed(stored) => return Ok(replay(stored)),
                Claim::Mismatch => {
                    return Err(ApiError::field(
                        ErrorCode::IdempotencyKeyReused,
                        IDEMPOTENCY_HEADER,
                        "this Idempotency-Key was used with a different request",
                    )
                    .into())
                }
                Claim::InProgress { lease_until } => {
                    if Instant::now() + POLL > deadline {
                        // At the latest when the holder's lease ends: a
                        // holder that died (a crash, a lost connection to
                        // the store) frees the key then.
                        let left = lease_until
                            .unix_seconds()
                            .saturating_sub(shared.state.clock.now().unix_seconds());
                        let mut e = ApiError::field(
                            ErrorCode::IdempotencyKeyInProgress,
                            IDEMPOTENCY_HEADER,
                            "a request with this Idempotency-Key is still running; retry after the time in Retry-After",
                        );
                        e.retry_after = Some(u64::try_from(left).unwrap_or(0).max(1));
                        return Err(e.into());
                    }
                    tokio::time::sleep(POLL).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_spec_rule() {
        assert!(valid_key("a"));
        assert!(valid_key(&"k".repeat(255)));
        assert!(!valid_key(""));
        assert!(!valid_key(&"k".repeat(256)));
        assert!(!valid_key("tab\there"));
        assert!(!valid_key(" padded "));
    }

    #[test]
    fn what_answers_do_to_their_key() {
        use Outcome::*;
        for (status, code, expected) in [
            (StatusCode::SERVICE_UNAVAILABLE, None, Release),
            (StatusCode::INTERNAL_SERVER_ERROR, None, Release),
            (StatusCode::TOO_MANY_REQUESTS, None, Release),
            (StatusCode::CONFLICT, Some(ErrorCode::Conflict), Release),
            (
                StatusCode::CONFLICT,
                Some(ErrorCode::IdempotencyKeyInProgress),
                Release,
            ),
            (
                StatusCode::BAD_REQUEST,
                Some(ErrorCode::InvalidRequest),
                Forget,
            ),
            (
                StatusCode::BAD_REQUEST,
                Some(ErrorCode::InvalidCardNumber),
                Forget,
            ),
            (StatusCode::PAYLOAD_TOO_LARGE, None, Forget),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, None, Forget),
            // Final answers: stored and replayed.
            (
                StatusCode::CONFLICT,
                Some(ErrorCode::CardAlreadyBound),
                Store,
            ),
            (StatusCode::CREATED, None, Store),
            (StatusCode::ACCEPTED, None, Store),
            (StatusCode::UNPROCESSABLE_ENTITY, None, Store),
            (StatusCode::FORBIDDEN, None, Store),
        ] {
            assert_eq!(outcome(status, code), expected, "{status} {code:?}");
        }
    }
}
