//! The outermost middleware: what every request and response goes through.
//!
//! In order: a request id (a sane incoming `X-Request-Id`, else a new UUID
//! v4); the client IP (peer, or the last entry of the last
//! `X-Forwarded-For` line when trusted); a head it cannot read as meant
//! refused (`unreadable_head`); the body read once, up to
//! `max_body_bytes` (413 beyond) and within `body_read_timeout` (400
//! beyond), and kept as [`RawBody`] for signatures and idempotency; then the routes. On the way
//! out: any `poem::Error` becomes our envelope ([`render_error`]), a caught
//! panic becomes a 500 `internal_error`, and every response gets the request
//! id, the security headers, its metrics (an error response also by its
//! stable code, see [`ErrorCodeSlot`]) and one log line (method, route
//! template, status, latency, request id — never bodies, query strings or
//! credentials).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use cardbind_domain::consent::{numbers, MASKED_NUMBER_DIGITS};
use cardbind_domain::ErrorCode;
use poem::error::{MethodNotAllowedError, NotFoundError, ReadBodyError};
use poem::http::header::{HeaderName, HeaderValue};
use poem::http::StatusCode;
use poem::PathPattern;
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};
use poem_openapi::error::{
    AuthorizationError, ContentTypeError, ParseMultipartError, ParseParamError, ParsePathError,
    ParseRequestPayloadError,
};
use poem_openapi::OperationId;
use tracing::Instrument;

use super::error::ApiError;
use super::metrics::BIND_ROUTE;
use super::params::param_refusal;
use super::Shared;

/// The request id and client IP of a request.
#[derive(Clone, Debug)]
pub struct RequestMeta {
    pub request_id: String,
    pub client_ip: Option<String>,
    /// The method as received, before routing answers a `HEAD` with its
    /// `GET` operation.
    pub method: poem::http::Method,
    /// The path and query as received, before any routing.
    pub path_and_query: String,
    /// The stable code a handler refused this request with (for metrics).
    pub error_code: ErrorCodeSlot,
    /// The spec's path template the path is on (`/v1/users/{user_id}/cards`),
    /// when it is on one.
    pub route: Option<String>,
}

/// Where a handler leaves the stable code of the refusal it answers with
/// ([`Cx::answer`](super::Cx::answer), and the refusals of parameters and
/// readiness), so that the edge can count errors by
/// code: a handler's typed error response carries the code only in its
/// body. Errors that the edge renders itself ([`ApiError::to_response`])
/// carry their code as response data instead.
#[derive(Clone, Debug, Default)]
pub struct ErrorCodeSlot(Arc<std::sync::Mutex<Option<ErrorCode>>>);

impl ErrorCodeSlot {
    pub fn set(&self, code: ErrorCode) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(code);
    }

    pub fn get(&self) -> Option<ErrorCode> {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The exact request body bytes.
#[derive(Clone, Debug)]
pub struct RawBody(pub Bytes);

/// Marks the response of a request whose handler panicked.
#[derive(Clone, Copy, Debug)]
pub struct Panicked;

/// The response a caught panic leaves (the edge renders the envelope).
pub fn panicked_response() -> Response {
    let mut r = Response::builder()
        .status(StatusCode::INTERNAL_SERVER_ERROR)
        .finish();
    r.set_data(Panicked);
    r
}

pub const REQUEST_ID_HEADER: &str = "X-Request-Id";

/// The header of signed requests (checked in [`super::auth`]).
pub const SIGNATURE_HEADER: &str = "X-Cardbind-Signature";

/// The header of a write's idempotency key (taken in
/// [`super::idempotency`]).
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// Headers an operation reads once: a second copy makes the request
/// ambiguous (which one counts, and which one would a proxy or a retry
/// keep?), so it is refused rather than the first one taken. (Two
/// `Authorization` headers are refused by the authentication, 401.)
const SINGLE_HEADERS: [&str; 4] = [
    "Content-Type",
    SIGNATURE_HEADER,
    "X-Step-Up-Token",
    IDEMPOTENCY_HEADER,
];

/// The refusal of an authenticated request that carries one of
/// [`SINGLE_HEADERS`], or a query parameter, more than once (no operation
/// takes a list in its query), checked once the caller is known and may
/// address the path's user, so that a request on another user's path is
/// `403` whatever it holds. A parameter's name is given as the `field`
/// when it is a plausible one (lowercase letters and `_`): a client's odd
/// name is not repeated back, as it might hold card data.
pub fn repeated(req: &Request) -> Option<ApiError> {
    if let Some(refusal) = SINGLE_HEADERS.iter().find_map(|h| repeated_header(req, h)) {
        return Some(refusal);
    }
    let query = req.uri().query()?;
    let mut seen = std::collections::HashSet::new();
    for (name, _) in form_urlencoded::parse(query.as_bytes()) {
        if !seen.insert(name.clone()) {
            let message = "a query parameter is sent once, not several times";
            let plausible = !name.is_empty()
                && name.len() <= 32
                && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
            return Some(if plausible {
                ApiError::field(ErrorCode::InvalidRequest, name.into_owned(), message)
            } else {
                ApiError::invalid_request(message)
            });
        }
    }
    None
}

/// The refusal of header `h` sent more than once.
pub fn repeated_header(req: &Request, h: &str) -> Option<ApiError> {
    req.headers().get_all(h).iter().nth(1).map(|_| {
        ApiError::field(
            ErrorCode::InvalidRequest,
            h,
            format!("send one {h} header, not several"),
        )
    })
}

/// The refusal of a request head the service cannot read as meant, before
/// any token or body is looked at:
/// - an HTTP/1.1 request that came over a connection without exactly one
///   `Host` header (RFC 9112 3.2: a server answers it `400`; HTTP/1.0 has
///   no `Host`, HTTP/2 names its authority in the frame). A request handed
///   to the service in process (its tests) has no connection and no host.
/// - a body (not a `GET`'s or `HEAD`'s, which is not read) framed with a
///   transfer coding other than `chunked`
///   (`Transfer-Encoding: gzip, chunked`): the connection layer takes the
///   chunks and leaves the other coding on the body, which would then be
///   read as sent (RFC 9112 6.1: a coding the server does not understand
///   is refused).
/// - a body sent with a `Content-Encoding` other than `identity`: the body
///   is read as sent (a compressed body would fail as JSON, or be hashed
///   for a signature as its compressed bytes), so the coding is refused by
///   name rather than left to fail as something else. Decoding it is not
///   offered: a small compressed body expands past any body limit checked
///   on what was sent.
fn unreadable_head(req: &Request, bodyless: bool) -> Option<ApiError> {
    if req.version() == poem::http::Version::HTTP_11
        && req.remote_addr().as_socket_addr().is_some()
        && req
            .headers()
            .get_all(poem::http::header::HOST)
            .iter()
            .count()
            != 1
    {
        return Some(ApiError::field(
            ErrorCode::InvalidRequest,
            "Host",
            "an HTTP/1.1 request names its host in one Host header",
        ));
    }
    let framed_otherwise = !bodyless
        && req
            .headers()
            .get_all(poem::http::header::TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .any(|coding| !coding.trim_ascii().eq_ignore_ascii_case(b"chunked"));
    if framed_otherwise {
        return Some(ApiError::field(
            ErrorCode::InvalidRequest,
            "Transfer-Encoding",
            "frame the body with Content-Length or Transfer-Encoding: chunked alone: no other transfer coding is decoded",
        ));
    }
    let encoded = req
        .headers()
        .get_all(poem::http::header::CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"identity"));
    if encoded && !bodyless {
        return Some(ApiError::field(
            ErrorCode::InvalidRequest,
            "Content-Encoding",
            "send the body as it is, without a Content-Encoding: no coding is decoded",
        ));
    }
    None
}

/// A client's request id is taken when it is 1–128 characters of
/// `[A-Za-z0-9-_.:]` and carries no long number: it goes into every log
/// line and audit event of the request, so an id that could be a card
/// number, a resident id or a phone number (a number of
/// [`MASKED_NUMBER_DIGITS`] digits or more, its digits joined by up to
/// three separators in a row, as in `4111-1111-1111-1111` or
/// `4111--1111--…`) is replaced by a new
/// one, as an id with other characters is. A UUID in its hyphenated form
/// is taken as it is: its groups are hex of at most 12 characters, and
/// about one random UUID in a hundred has groups of digits that join into
/// a long number.
fn sane_request_id(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        && (hyphenated_uuid(s.as_bytes()) || longest_number(s) < MASKED_NUMBER_DIGITS)
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, hex digits.
fn hyphenated_uuid(s: &[u8]) -> bool {
    s.len() == 36
        && s.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// The most digits of one number in `s`: digits joined by separators
/// (`-_.:`, up to three in a row) count as one number.
fn longest_number(s: &str) -> usize {
    numbers(s, b"-_.:").map(|n| n.digits).max().unwrap_or(0)
}

/// The method as a metric label: the standard ones by name, anything else
/// (any token is a valid method) as `other`, so clients cannot create series.
fn method_label(m: &poem::http::Method) -> &'static str {
    use poem::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn client_ip(req: &Request, trust_forwarded_for: bool) -> Option<String> {
    if trust_forwarded_for {
        // The last hop is the one our trusted proxy appended; earlier
        // entries are whatever the client sent and could be forged. The
        // last entry of the last header line: a proxy may add a line of
        // its own after the client's instead of appending to it.
        let last = req
            .headers()
            .get_all("X-Forwarded-For")
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|ip| ip.trim().parse::<std::net::IpAddr>().ok());
        if let Some(ip) = last {
            return Some(ip.to_string());
        }
    }
    req.remote_addr()
        .as_socket_addr()
        .map(|a| a.ip().to_string())
}

/// Converts any error into our envelope (responses that handlers built from
/// their error enums pass through unchanged). `route` is the spec's path
/// template of the request, which names the path parameters.
pub fn render_error(err: poem::Error, request_id: &str, route: Option<&str>) -> Response {
    let op = err.data::<OperationId>().copied();
    let pattern = err.data::<PathPattern>().cloned();
    let mut resp = if err.is_from_response() {
        err.into_response()
    } else {
        classify(&err, route).to_response(request_id)
    };
    if let Some(op) = op {
        resp.set_data(op);
    }
    if let Some(p) = pattern {
        resp.set_data(p);
    }
    resp
}

/// The name of a path parameter: poem-openapi reports the `n`-th one of a
/// route as `param<n>`; the spec's template (`route`) has its real name.
fn path_param_name<'a>(route: Option<&'a str>, reported: &'a str) -> &'a str {
    let index = reported
        .strip_prefix("param")
        .and_then(|n| n.parse::<usize>().ok());
    let real = index.and_then(|i| {
        route?
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .nth(i)
    });
    real.unwrap_or(reported)
}

/// The channels' notification route, whose body is taken in any type.
const NOTIFY_ROUTE: &str = "/v1/channels/{channel}/notify";

/// Which envelope a framework error becomes; `route` as for
/// [`render_error`].
pub fn classify(err: &poem::Error, route: Option<&str>) -> ApiError {
    if let Some(e) = err.downcast_ref::<ApiError>() {
        return e.clone();
    }
    if let Some(e) = err.downcast_ref::<ParseParamError>() {
        return param_refusal(e.name);
    }
    if let Some(e) = err.downcast_ref::<ParsePathError>() {
        return param_refusal(path_param_name(route, e.name));
    }
    if err.is::<ParseRequestPayloadError>() || err.is::<ParseMultipartError>() {
        return ApiError::invalid_request("the body does not match the schema of this operation");
    }
    if err.is::<ContentTypeError>() && route == Some(NOTIFY_ROUTE) {
        // The notification endpoint takes any type: what is missing is
        // the header itself.
        return ApiError::field(
            ErrorCode::InvalidRequest,
            "Content-Type",
            "send the notification with its Content-Type header (any type is taken)",
        );
    }
    if err.is::<ContentTypeError>() {
        return ApiError::field(
            ErrorCode::InvalidRequest,
            "Content-Type",
            "the body must be sent as application/json",
        );
    }
    if err.is::<AuthorizationError>() {
        return ApiError::unauthenticated("a bearer token is required");
    }
    if err.is::<NotFoundError>() {
        return ApiError::new(ErrorCode::NotFound, "no such route");
    }
    if err.is::<MethodNotAllowedError>() {
        return ApiError::invalid_request("this method is not allowed on this route")
            .with_status(StatusCode::METHOD_NOT_ALLOWED);
    }
    if matches!(
        err.downcast_ref::<ReadBodyError>(),
        Some(ReadBodyError::PayloadTooLarge)
    ) {
        return ApiError::new(ErrorCode::PayloadTooLarge, "the body is too large");
    }
    match err.status() {
        StatusCode::NOT_FOUND => ApiError::new(ErrorCode::NotFound, "no such route"),
        StatusCode::UNAUTHORIZED => ApiError::unauthenticated("a bearer token is required"),
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(ErrorCode::PayloadTooLarge, "the body is too large")
        }
        s if s.is_server_error() => ApiError::internal(err.to_string()),
        s => ApiError::invalid_request("the request could not be read").with_status(
            if s.is_client_error() {
                s
            } else {
                StatusCode::BAD_REQUEST
            },
        ),
    }
}

/// The route template a response answered (when no operation did), for
/// metric and log labels.
#[derive(Clone, Debug)]
pub struct RouteTemplate(pub String);

/// The methods each route serves, for the `Allow` header of a `405 Method
/// Not Allowed` (RFC 9110 15.5.6) and the answer to `OPTIONS`.
#[derive(Debug, Default)]
pub struct AllowTable {
    routes: Vec<AllowedRoute>,
}

#[derive(Debug)]
struct AllowedRoute {
    /// `None` for a `{param}` segment.
    segments: Vec<Option<String>>,
    template: String,
    allow: String,
}

impl AllowTable {
    /// From `(path template, methods)` pairs; a template names its
    /// parameters `{name}`. `HEAD` is allowed wherever `GET` is (the router
    /// answers it from `GET`), and `OPTIONS` everywhere.
    pub fn new<'a>(routes: impl IntoIterator<Item = (String, Vec<&'a str>)>) -> AllowTable {
        const ORDER: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
        let mut table = AllowTable::default();
        for (template, methods) in routes {
            let mut upper: Vec<String> = methods.iter().map(|m| m.to_ascii_uppercase()).collect();
            if upper.iter().any(|m| m == "GET") {
                upper.push("HEAD".into());
            }
            upper.push("OPTIONS".into());
            upper.sort_by_key(|m| ORDER.iter().position(|o| o == m).unwrap_or(ORDER.len()));
            upper.dedup();
            let segments = template
                .split('/')
                .map(|seg| (!(seg.starts_with('{') && seg.ends_with('}'))).then(|| seg.to_owned()))
                .collect();
            table.routes.push(AllowedRoute {
                segments,
                template,
                allow: upper.join(", "),
            });
        }
        table
    }

    /// The route a concrete path is on: `(template, Allow value)`. The
    /// route with the most literal segments wins. An empty segment stands
    /// for a parameter in the middle of a path (`/v1/users//cards`, which
    /// the router matches and the parameter's own check refuses by name),
    /// not at its end (`/v1/users/u1/cards/` is no route).
    pub fn find(&self, path: &str) -> Option<(&str, &str)> {
        let parts: Vec<&str> = path.split('/').collect();
        let last = parts.len().saturating_sub(1);
        self.routes
            .iter()
            .filter(|r| {
                r.segments.len() == parts.len()
                    && r.segments
                        .iter()
                        .zip(&parts)
                        .enumerate()
                        .all(|(i, (seg, part))| match seg {
                            Some(lit) => lit == part,
                            None => i != last || !part.is_empty(),
                        })
            })
            .max_by_key(|r| r.segments.iter().filter(|s| s.is_some()).count())
            .map(|r| (r.template.as_str(), r.allow.as_str()))
    }
}

/// The name of the first parameter of `template` whose segment of `path`
/// does not percent-decode into UTF-8 (`%FF`).
fn undecodable_param<'a>(template: &'a str, path: &str) -> Option<&'a str> {
    template
        .split('/')
        .zip(path.split('/'))
        .find_map(|(seg, raw)| {
            let name = seg.strip_prefix('{')?.strip_suffix('}')?;
            percent_encoding::percent_decode_str(raw)
                .decode_utf8()
                .is_err()
                .then_some(name)
        })
}

/// `OPTIONS` on a known route: `204` with `Allow`.
fn options_response(template: &str, allow: &str) -> Response {
    let mut resp = Response::builder()
        .status(StatusCode::NO_CONTENT)
        .header(poem::http::header::ALLOW, allow)
        .finish();
    resp.set_data(RouteTemplate(template.to_owned()));
    resp
}

/// The edge middleware; see the module docs.
pub struct Edge {
    pub shared: Arc<Shared>,
    /// operationId → OpenAPI path template, for metric and log labels.
    pub templates: Arc<HashMap<&'static str, String>>,
    /// The methods of every route, for `Allow`.
    pub allow: Arc<AllowTable>,
}

impl<E: Endpoint> Middleware<E> for Edge {
    type Output = EdgeEndpoint<E>;

    fn transform(&self, ep: E) -> EdgeEndpoint<E> {
        EdgeEndpoint {
            inner: ep,
            shared: self.shared.clone(),
            templates: self.templates.clone(),
            allow: self.allow.clone(),
        }
    }
}

pub struct EdgeEndpoint<E> {
    inner: E,
    shared: Arc<Shared>,
    templates: Arc<HashMap<&'static str, String>>,
    allow: Arc<AllowTable>,
}

/// How much of an oversized body is read and thrown away before the 413 is
/// sent, so that an ordinary client (which writes the whole body before it
/// reads) gets the answer instead of a broken pipe. Past this the
/// connection is closed early.
const DRAIN_LIMIT: u64 = 16 * 1024 * 1024;

/// How long the throwing away waits for the next bytes: a body declared
/// too large that stops coming (or never comes) gets its 413 this soon
/// after its last bytes, not a 400 at the body deadline; one that keeps
/// coming is read to its end (within [`DRAIN_LIMIT`] and the body
/// deadline), so that its client reads the 413.
const DRAIN_STALL: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads and discards up to [`DRAIN_LIMIT`] bytes of the body, streaming,
/// until it ends or stalls for [`DRAIN_STALL`].
async fn drain(req: &mut Request) {
    use futures::StreamExt;
    let mut stream = req.take_body().into_bytes_stream();
    let mut seen: u64 = 0;
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout(DRAIN_STALL, stream.next()).await {
        seen += chunk.len() as u64;
        if seen > DRAIN_LIMIT {
            break;
        }
    }
}

/// The body length the request declares (`Content-Length`), if it does.
fn declared_length(req: &Request) -> Option<Result<u64, std::num::ParseIntError>> {
    req.header("Content-Length")
        .map(|v| v.trim().parse::<u64>())
}

async fn read_body(
    req: &mut Request,
    max: usize,
    declared: Option<Result<u64, std::num::ParseIntError>>,
) -> Result<Bytes, ApiError> {
    match declared {
        Some(Ok(n)) if n > max as u64 => {
            if n <= DRAIN_LIMIT {
                drain(req).await;
            }
            return Err(ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("the body is larger than {max} bytes"),
            ));
        }
        Some(Err(_)) => return Err(ApiError::invalid_request("Content-Length is malformed")),
        _ => {}
    }
    req.take_body()
        .into_bytes_limit(max)
        .await
        .map_err(|e| match e {
            ReadBodyError::PayloadTooLarge => ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("the body is larger than {max} bytes"),
            ),
            _ => ApiError::invalid_request("the body could not be read"),
        })
}

/// `/v1/users/:param0/cards` (poem) → `/v1/users/{param0}/cards`.
fn template_of_pattern(p: &str) -> String {
    p.split('/')
        .map(|s| match s.strip_prefix(':') {
            Some(name) => format!("{{{name}}}"),
            None => s.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

impl<E: Endpoint> EdgeEndpoint<E> {
    fn route_label(&self, resp: &Response) -> String {
        if let Some(op) = resp.data::<OperationId>() {
            if let Some(t) = self.templates.get(op.0) {
                return t.clone();
            }
        }
        if let Some(t) = resp.data::<RouteTemplate>() {
            return t.0.clone();
        }
        match resp.data::<PathPattern>() {
            Some(p) if !p.0.is_empty() => template_of_pattern(&p.0),
            _ => "unmatched".to_owned(),
        }
    }
}

impl<E: Endpoint> Endpoint for EdgeEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let started = Instant::now();
        let request_id = match req.header(REQUEST_ID_HEADER) {
            Some(id) if sane_request_id(id) => id.to_owned(),
            _ => uuid::Uuid::new_v4().to_string(),
        };
        let method = req.method().clone();
        let docs = req.uri().path() == "/docs" || req.uri().path().starts_with("/docs/");
        let http = &self.shared.state.http;
        let path_and_query = req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
        let error_code = ErrorCodeSlot::default();
        let path = req.uri().path().to_owned();
        let found = self.allow.find(&path);
        let route = found.map(|(template, _)| template.to_owned());
        let undecodable = found.and_then(|(template, _)| undecodable_param(template, &path));
        req.set_data(RequestMeta {
            request_id: request_id.clone(),
            client_ip: client_ip(&req, http.trust_forwarded_for),
            method: req.method().clone(),
            path_and_query,
            error_code: error_code.clone(),
            route: route.clone(),
        });

        let options = found.filter(|_| method == poem::http::Method::OPTIONS);
        // No GET or HEAD operation takes a body, and they do not declare
        // 413: whatever body such a request carries is not read (it reaches
        // the handler, and a signature check, as empty). A body trickled
        // byte by byte must not hold the connection and the handler for
        // ever.
        let bodyless = matches!(
            *req.method(),
            poem::http::Method::GET | poem::http::Method::HEAD
        );
        let body = if let Some(refusal) = unreadable_head(&req, bodyless) {
            Err(refusal)
        } else if bodyless {
            Ok(Bytes::new())
        } else {
            let declared = declared_length(&req);
            let too_large = matches!(declared, Some(Ok(n)) if n > http.max_body_bytes as u64);
            tokio::time::timeout(
                http.body_read_timeout,
                read_body(&mut req, http.max_body_bytes, declared),
            )
            .await
            .unwrap_or_else(|_| {
                Err(if too_large {
                    ApiError::new(
                        ErrorCode::PayloadTooLarge,
                        format!("the body is larger than {} bytes", http.max_body_bytes),
                    )
                } else {
                    ApiError::invalid_request(format!(
                        "the body did not arrive within {} ms",
                        http.body_read_timeout.as_millis()
                    ))
                })
            })
        };
        let result = match (body, undecodable) {
            (Ok(_), _) if options.is_some() => Ok(options
                .map(|(template, allow)| options_response(template, allow))
                .unwrap_or_default()),
            // The router refuses a path whose segments do not decode as
            // UTF-8 before any operation sees it; named here as the
            // parameter it is, as any other malformed value of it.
            (Ok(_), Some(name)) => Err(param_refusal(name).into()),
            (Ok(bytes), None) => {
                req.set_data(RawBody(bytes.clone()));
                req.set_body(bytes);
                // Every line logged while the operation runs (a store, key
                // service or channel failure's cause, a 5xx) carries the
                // request id the caller sees in `X-Request-Id`. At the
                // error level, so that it exists whatever `log.filter`
                // lets through (a span below the filter is not made, and
                // the warnings inside it would lose the id).
                let span = tracing::error_span!("request", request_id = %request_id);
                // Boxed: the operation's future, nested in the span's, would
                // otherwise make the server's future type too deep for the
                // compiler to lay out (`queries overflow the depth limit`
                // on a clean build of the tests that run the service).
                let call: std::pin::Pin<
                    Box<dyn std::future::Future<Output = poem::Result<E::Output>> + Send + '_>,
                > = Box::pin(self.inner.call(req).instrument(span));
                call.await.map(IntoResponse::into_response)
            }
            (Err(e), _) => Err(e.into()),
        };
        let mut resp = match result {
            Ok(r) => r,
            Err(e) => render_error(e, &request_id, route.as_deref()),
        };
        if resp.data::<Panicked>().is_some() {
            tracing::error!(request_id = %request_id, method = %method, "request handler panicked");
            resp = ApiError::internal("handler panicked").to_response(&request_id);
        }

        if resp.status() == StatusCode::METHOD_NOT_ALLOWED {
            if let Some((template, allow)) = found {
                if let Ok(v) = HeaderValue::from_str(allow) {
                    resp.headers_mut().insert(poem::http::header::ALLOW, v);
                }
                resp.set_data(RouteTemplate(template.to_owned()));
            }
        }
        let route = self.route_label(&resp);
        let status = resp.status().as_u16();
        let refused_with = resp.data::<ErrorCode>().copied().or(error_code.get());
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            h.insert(HeaderName::from_static("x-request-id"), v);
        }
        h.insert(
            "strict-transport-security",
            HeaderValue::from_static("max-age=63072000; includeSubDomains"),
        );
        h.insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
        if status == 401 && refused_with != Some(ErrorCode::InvalidSignature) {
            // RFC 9110 §11.6.1: a 401 names the scheme to use (RFC 6750);
            // a signature refusal (a channel's, or `X-Cardbind-Signature`)
            // is no bearer matter.
            h.insert(
                poem::http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"cardbind\""),
            );
        }
        h.insert("cache-control", HeaderValue::from_static("no-store"));
        h.insert("x-frame-options", HeaderValue::from_static("DENY"));
        h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
        let csp = if docs {
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
        } else {
            "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
        };
        h.insert("content-security-policy", HeaderValue::from_static(csp));

        let elapsed = started.elapsed();
        self.shared
            .metrics
            .observe(&route, method_label(&method), status, elapsed.as_secs_f64());
        if status >= 400 {
            if let Some(code) = refused_with {
                self.shared.metrics.error(&route, code);
                // Every refused bind, whichever layer refused it (the
                // request's schema, authentication, the idempotency key,
                // the use case); a stored replay is not counted again.
                if method == poem::http::Method::POST && route == BIND_ROUTE {
                    self.shared.metrics.bind_outcome(code.as_str());
                }
            }
        }
        tracing::info!(
            request_id = %request_id,
            method = %method,
            route = %route,
            status,
            // A refusal's stable code, as the client got it.
            code = refused_with.map(ErrorCode::as_str),
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        );
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_from_patterns() {
        assert_eq!(template_of_pattern("/v1/bins/:param0"), "/v1/bins/{param0}");
        assert_eq!(template_of_pattern("/healthz"), "/healthz");
    }

    #[test]
    fn allow_lists_the_methods_of_the_route() {
        let t = AllowTable::new([
            ("/v1/users/{user_id}/cards".to_owned(), vec!["post", "get"]),
            (
                "/v1/users/{user_id}/cards/{card_id}".to_owned(),
                vec!["delete", "get"],
            ),
            ("/v1/admin/reviews".to_owned(), vec!["get"]),
            ("/v1/admin/reviews/{card_id}/retry".to_owned(), vec!["post"]),
        ]);
        assert_eq!(
            t.find("/v1/users/u1/cards"),
            Some(("/v1/users/{user_id}/cards", "GET, HEAD, POST, OPTIONS"))
        );
        assert_eq!(
            t.find("/v1/users/u1/cards/c1").map(|r| r.1),
            Some("GET, HEAD, DELETE, OPTIONS")
        );
        assert_eq!(
            t.find("/v1/admin/reviews/c1/retry").map(|r| r.1),
            Some("POST, OPTIONS")
        );
        assert_eq!(
            t.find("/v1/users//cards").map(|r| r.0),
            Some("/v1/users/{user_id}/cards")
        );
        assert_eq!(t.find("/v1/users/u1/cards/"), None);
        assert_eq!(t.find("/v1/users/u1"), None);
    }

    #[test]
    fn path_parameters_get_their_names_from_the_route() {
        let route = Some("/v1/users/{user_id}/cards/{card_id}/verify");
        assert_eq!(path_param_name(route, "param0"), "user_id");
        assert_eq!(path_param_name(route, "param1"), "card_id");
        assert_eq!(path_param_name(route, "param2"), "param2");
        assert_eq!(path_param_name(None, "param0"), "param0");
        assert_eq!(path_param_name(route, "limit"), "limit");
    }

    #[test]
    fn request_ids() {
        assert!(sane_request_id("abc-123_x.y:z"));
        assert!(!sane_request_id(""));
        assert!(!sane_request_id("a b"));
        assert!(!sane_request_id(&"a".repeat(129)));
        // Ids that could carry a card number, a resident id or a phone.
        for id in [
            "4111111111111111",
            "4111-1111-1111-1111",
            "order:4111.1111.1111.1111",
            "11010519491231002X",
            "req_13800138000",
            "6222_0212_3456_7890_128",
            // Not a UUID: the simple form may be 32 digits.
            "41111111111111114111111111111111",
            "4111-1111-1111-1111-000000000000",
            "4111--1111--1111--1111",
            "12345--67890123",
        ] {
            assert!(!sane_request_id(id), "{id}");
        }
        // Short numbers, and numbers broken by letters or four separators
        // in a row, are ids like any other.
        for id in [
            "1234567890",
            "req-1234567890-abc",
            "123e4567-e89b-12d3-a456-426614174000",
            "2026-12-02T12:00:00",
            "12345----67890123",
            // Its groups of digits join into 12 digits, and it is a UUID.
            "00000000-0000-4000-8000-426614174000",
        ] {
            assert!(sane_request_id(id), "{id}");
        }
    }
}
