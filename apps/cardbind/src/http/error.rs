//! The one place where stable error codes become HTTP statuses and bodies.
//!
//! Every refusal leaves the service as the envelope
//! `{"error":{"code","message","field?","request_id"}}` with the status that
//! [`status_of`] gives its code. Handlers answer with per-operation error
//! enums (built by [`error_responses!`], so that every status an operation
//! can return is in the spec); everything else (authentication, parse
//! errors of poem-openapi, size limits, panics, unknown routes) reaches the
//! edge middleware as a `poem::Error` and is rendered by
//! [`render_error`](super::edge::render_error) with the
//! same envelope.
//!
//! 5xx bodies never carry internals: the cause is logged with the request id
//! (by the layer that met it, inside the edge's `request` span) and the body
//! says only what the code says.

use cardbind_domain::{Class, ErrorClass, ErrorCode, Refused};
use poem::error::ResponseError;
use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use poem_openapi::payload::Json;
use poem_openapi::Object;

/// The HTTP status of each class of refusal: the one place a status is
/// decided. Exhaustive on purpose.
pub const fn class_status(class: ErrorClass) -> StatusCode {
    match class {
        ErrorClass::BadRequest => StatusCode::BAD_REQUEST,
        ErrorClass::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorClass::Forbidden => StatusCode::FORBIDDEN,
        ErrorClass::NotFound => StatusCode::NOT_FOUND,
        ErrorClass::Conflict => StatusCode::CONFLICT,
        ErrorClass::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorClass::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorClass::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        ErrorClass::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorClass::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The HTTP status of a stable code (its class's).
pub const fn status_of(code: ErrorCode) -> StatusCode {
    class_status(code.class())
}

/// The body of every error response.
#[derive(Object, Clone, Debug, PartialEq, Eq)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

/// One refusal. `code` is stable (clients branch on it); `message` is for
/// humans and may change; `field` names the request field at fault.
#[derive(Object, Clone, Debug, PartialEq, Eq)]
pub struct ErrorBody {
    /// Stable snake_case code (the list and their statuses are in this
    /// schema's description).
    pub code: String,
    /// Human-readable explanation, never containing card data or internals.
    pub message: String,
    /// The request field at fault (dotted path for nested fields, or a
    /// header or parameter name), when there is one.
    #[oai(skip_serializing_if_is_none)]
    pub field: Option<String>,
    /// The request id (also in the `X-Request-Id` response header).
    pub request_id: String,
}

/// A refusal on its way out: code, status, message and (never sent) cause.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub status: StatusCode,
    pub message: String,
    pub field: Option<String>,
    /// Seconds, for `Retry-After` (429).
    pub retry_after: Option<u64>,
    /// What went wrong inside, for the logs only (5xx).
    pub cause: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            status: status_of(code),
            message: message.into(),
            field: None,
            retry_after: None,
            cause: None,
        }
    }

    pub fn field(
        code: ErrorCode,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError::new(code, message).with_field(field)
    }

    pub fn with_field(mut self, field: impl Into<String>) -> ApiError {
        self.field = Some(field.into());
        self
    }

    pub fn with_cause(mut self, cause: impl Into<String>) -> ApiError {
        self.cause = Some(cause.into());
        self
    }

    /// Another status than the code's usual one: for answers poem gives
    /// before an operation runs (405, a path that does not parse).
    pub fn with_status(mut self, status: StatusCode) -> ApiError {
        self.status = status;
        self
    }

    pub fn internal(cause: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InternalError, "internal error").with_cause(cause)
    }

    pub fn unauthenticated(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Unauthenticated, message)
    }

    pub fn invalid_signature(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InvalidSignature, message)
    }

    pub fn invalid_request(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InvalidRequest, message)
    }

    /// The envelope for this error, logging the cause of server errors
    /// (with the request id, never with the request body).
    pub fn envelope(&self, request_id: &str) -> ErrorEnvelope {
        if self.status.is_server_error() {
            tracing::error!(
                request_id,
                code = %self.code,
                status = self.status.as_u16(),
                cause = self.cause.as_deref(),
                "request failed"
            );
        }
        ErrorEnvelope {
            error: ErrorBody {
                code: self.code.as_str().to_owned(),
                message: self.message.clone(),
                field: self.field.clone(),
                request_id: request_id.to_owned(),
            },
        }
    }

    /// The complete response for this error (its code is also attached as
    /// response data, for the edge's error metric).
    pub fn to_response(&self, request_id: &str) -> Response {
        let mut resp = Json(self.envelope(request_id)).into_response();
        resp.set_status(self.status);
        resp.set_data(self.code);
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert("Retry-After", poem::http::HeaderValue::from(s));
        }
        resp
    }
}

impl ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        self.status
    }
}

impl<C: Class> From<Refused<C>> for ApiError {
    fn from(e: Refused<C>) -> ApiError {
        ApiError {
            field: e.field.map(str::to_owned),
            ..ApiError::new(e.code, e.message)
        }
    }
}

/// An operation's error response that declares refusals of class `C`:
/// implemented by [`error_responses!`] for each status it lists, so that
/// answering a refusal of a class the operation does not declare does not
/// compile.
pub trait Declares<C> {
    fn declared(body: Json<ErrorEnvelope>, retry_after: Option<u64>) -> Self;
}

/// A use case's error answered as the response `R`: implemented by
/// [`respond_from!`] for each use case's error, for every `R` that
/// declares each class the use case may refuse with.
pub trait Respond<R> {
    /// The response, and the code (for the metrics). A 5xx cause is logged
    /// here with the request id, never sent.
    fn respond(self, request_id: &str) -> (R, ErrorCode);
}

/// The envelope of a refusal (logging the cause of a server error).
pub fn envelope_of(e: &ApiError, request_id: &str) -> Json<ErrorEnvelope> {
    Json(e.envelope(request_id))
}

/// Implements [`Respond`] for a use case's error enum: one arm per class
/// it declares, each needing the response to [`Declares`] that class. A
/// class added to the use case's error without being listed here does not
/// compile (the match is not exhaustive); listed here, every operation
/// answering that use case must declare its status.
macro_rules! respond_from {
    ($uc:path: $($class:ident),* $(,)?) => {
        impl<R> $crate::http::error::Respond<R> for $uc
        where
            $( R: $crate::http::error::Declares<cardbind_domain::error::class::$class>, )*
            R: $crate::http::error::Declares<cardbind_domain::error::class::Internal>,
        {
            fn respond(self, request_id: &str) -> (R, cardbind_domain::ErrorCode) {
                use $uc as E;
                type Make<R> = fn(
                    poem_openapi::payload::Json<$crate::http::error::ErrorEnvelope>,
                    Option<u64>,
                ) -> R;
                let code = self.code();
                let (e, retry, make): ($crate::http::error::ApiError, Option<u64>, Make<R>) =
                    match self {
                        $(
                            E::$class(r) => {
                                let (e, retry) = respond_from!(@parts $class r);
                                (
                                    e,
                                    retry,
                                    <R as $crate::http::error::Declares<
                                        cardbind_domain::error::class::$class,
                                    >>::declared,
                                )
                            }
                        )*
                        E::Internal(i) => (
                            $crate::http::error::ApiError::internal(i.cause.to_string()),
                            None,
                            <R as $crate::http::error::Declares<
                                cardbind_domain::error::class::Internal,
                            >>::declared,
                        ),
                    };
                let body = $crate::http::error::envelope_of(&e, request_id);
                (make(body, retry), code)
            }
        }
    };
    (@parts TooManyRequests $r:ident) => {{
        let retry = u64::from($r.retry_after_seconds.max(1));
        ($crate::http::error::ApiError::from($r.refusal), Some(retry))
    }};
    (@parts $class:ident $r:ident) => {
        ($crate::http::error::ApiError::from($r), None)
    };
}

respond_from!(cardbind_usecases::bind::BindError: BadRequest, Forbidden, Conflict, Unprocessable, TooManyRequests, Unavailable);
respond_from!(cardbind_usecases::verify::VerifyError: BadRequest, Forbidden, NotFound, Conflict, Unprocessable, Unavailable);
respond_from!(cardbind_usecases::manage::ReadError: Forbidden, NotFound, Unavailable);
respond_from!(cardbind_usecases::manage::ListError: Forbidden, Unavailable);
respond_from!(cardbind_usecases::review::QueueError: Forbidden, Unavailable);
respond_from!(cardbind_usecases::manage::ChangeError: Forbidden, NotFound, Conflict, Unavailable);
respond_from!(cardbind_usecases::review::ReviewError: Forbidden, NotFound, Conflict, Unavailable);
respond_from!(cardbind_usecases::review::RetryError: BadRequest, Forbidden, NotFound, Conflict, Unprocessable, Unavailable);
respond_from!(cardbind_usecases::notify::NotifyError: BadRequest, Unauthenticated, NotFound, Conflict, Unavailable);
respond_from!(cardbind_usecases::erase::EraseError: Forbidden, Conflict, Unavailable);
respond_from!(cardbind_usecases::records::RecordsError: Forbidden, Unavailable);
respond_from!(cardbind_usecases::bins::BinError: BadRequest, Forbidden, NotFound);
respond_from!(cardbind_usecases::family::ShareError: BadRequest, Forbidden, NotFound, Conflict, Unprocessable, Unavailable);
respond_from!(cardbind_usecases::family::ShareReadError: Forbidden, NotFound, Unavailable);
respond_from!(cardbind_usecases::family::EndShareError: Forbidden, NotFound, Conflict, Unavailable);
respond_from!(cardbind_usecases::family::AcceptError: BadRequest, Forbidden, NotFound, Conflict, Unavailable);

/// Builds an operation's error enum: a `#[derive(ApiResponse)]` enum with
/// one variant per listed status (plus 500, always), every variant carrying
/// the [`ErrorEnvelope`]; 429 also documents `Retry-After`.
macro_rules! error_responses {
    ($(#[$meta:meta])* $name:ident: $($status:tt),+ $(,)?) => {
        error_responses!(@build [$(#[$meta])*] $name [] [] $($status),+);
    };
    (@build $m:tt $name:ident [$($v:tt)*] [$($r:tt)*] 400 $(, $rest:tt)*) => {
        error_responses!(@build $m $name [$($v)* (400 BadRequest "The request is invalid: a field failed validation (`field` names it), the body is not the JSON the schema describes, or a parameter is malformed.")] [$($r)*] $($rest),*);
    };
    (@build $m:tt $name:ident [$($v:tt)*] [$($r:tt)*] 401 $(, $rest:tt)*) => {
        error_responses!(@build $m $name [$($v)* (401 Unauthorized "No valid credentials: `unauthenticated` (missing, expired or invalid bearer token) or `invalid_signature` (request signature missing, wrong, stale or replayed).")] [$($r)*] $($rest),*);
    };
    (@build $m:tt $name:ident [$($v:tt)*] [$($r:tt)*] 403 $(, $rest:tt)*) => {
        error_responses!(@build $m $name [$($v)* (403 Forbidden "The caller's role may not do this, or a `user` token names another user (`forbidden`); or, where the operation documents it, a missing or invalid `X-Step-Up-Token` (`step_up_required`).")] [$($r)*] $($rest),*);
    };
    (@build $m:tt $name:ident [$($v:tt)*] [$($r:tt)*] 404 $(, $rest:tt)*) => {
        error_responses!(@build $m $name [$($v)* (404 NotFound "No such resource for this user (`not_found`).")] [$($r)*] $($rest),*);
    };
    (@build $m:tt $name:ident [$($v:tt)*] [$($r:tt)*] 409 $(, $rest:tt)*) => {
        error_responses!(@build $m $name [$($v)* (409 Conflict "The request conflicts with the resource's state: `card_already_bound`, `invalid_state_transition`, `card_already_shared`, `share_ended`, `idempotency_key_reused`, `idempotency_key_in_progress`, `card_data_unreadable` (a review retry of a card whose data cannot be opened) or `conflict` (retry).")] [$($r)*] $($rest),*);
    };
    (@build $m:tt $name:ident [$($v:tt)*] [$($r:tt)*] 413 $(, $rest:tt)*) => {
        error_responses!(@build $m $name [$($v)* (413 PayloadTooLarge "The body is larger than the service accepts (`payload_too_large`).")] [$($r)*] $($rest),*);
    };
    (@build $m:tt $name:ident [$($v:tt)*] [$($r:tt)*] 422 $(, $rest:tt)*) => {
        error_responses!(@build $m $name [$($v)* (422 Unprocessable "Well-formed but refused: `card_limit_reached`, `channel_rejected`, `invalid_otp`, `verification_expired`, `card_not_accepted_by_channel`, `share_with_self`, `share_limit_reached`.")] [$($r)*] $($rest),*);
    };
    (@build $m:tt $name:ident [$($v:tt)*] [$($r:tt)*] 429 $(, $rest:tt)*) => {
        error_responses!(@build $m $name [$($v)*] [TooManyRequests] $($rest),*);
    };
    (@build $m:tt $name:ident [$($v:tt)*] [$($r:tt)*] 503 $(, $rest:tt)*) => {
        error_responses!(@build $m $name [$($v)* (503 ServiceUnavailable "A dependency is unavailable; retry later: `storage_unavailable`, `key_service_unavailable`, `channel_unavailable`.")] [$($r)*] $($rest),*);
    };
    (@build [$(#[$meta:meta])*] $name:ident [$(($st:tt $var:ident $doc:tt))*] [$($retry:ident)?]) => {
        $(#[$meta])*
        #[derive(poem_openapi::ApiResponse)]
        pub enum $name {
            $(
                #[doc = $doc]
                #[oai(status = $st)]
                $var(poem_openapi::payload::Json<$crate::http::error::ErrorEnvelope>),
            )*
            $(
                /// Too many attempts (`rate_limited`, `ip_rate_limited`,
                /// `card_velocity_exceeded`); retry after `Retry-After` seconds.
                #[oai(status = 429)]
                $retry(
                    poem_openapi::payload::Json<$crate::http::error::ErrorEnvelope>,
                    /// Seconds to wait before trying again.
                    #[oai(header = "Retry-After")] Option<u64>,
                ),
            )?
            /// An unexpected error (`internal_error`); the body says nothing
            /// more, the logs keep the cause under the request id.
            #[oai(status = 500)]
            InternalServerError(poem_openapi::payload::Json<$crate::http::error::ErrorEnvelope>),
        }

        $(
            error_responses!(@declares $name $st $var);
        )*
        $(
            impl $crate::http::error::Declares<cardbind_domain::error::class::TooManyRequests> for $name {
                fn declared(
                    body: poem_openapi::payload::Json<$crate::http::error::ErrorEnvelope>,
                    retry_after: Option<u64>,
                ) -> $name {
                    $name::$retry(body, retry_after)
                }
            }
        )?
        impl $crate::http::error::Declares<cardbind_domain::error::class::Internal> for $name {
            fn declared(
                body: poem_openapi::payload::Json<$crate::http::error::ErrorEnvelope>,
                _: Option<u64>,
            ) -> $name {
                $name::InternalServerError(body)
            }
        }
    };
    (@declares $name:ident 400 $var:ident) => { error_responses!(@impl $name BadRequest $var); };
    (@declares $name:ident 401 $var:ident) => { error_responses!(@impl $name Unauthenticated $var); };
    (@declares $name:ident 403 $var:ident) => { error_responses!(@impl $name Forbidden $var); };
    (@declares $name:ident 404 $var:ident) => { error_responses!(@impl $name NotFound $var); };
    (@declares $name:ident 409 $var:ident) => { error_responses!(@impl $name Conflict $var); };
    (@declares $name:ident 413 $var:ident) => { error_responses!(@impl $name TooLarge $var); };
    (@declares $name:ident 422 $var:ident) => { error_responses!(@impl $name Unprocessable $var); };
    (@declares $name:ident 503 $var:ident) => { error_responses!(@impl $name Unavailable $var); };
    (@impl $name:ident $class:ident $var:ident) => {
        impl $crate::http::error::Declares<cardbind_domain::error::class::$class> for $name {
            fn declared(
                body: poem_openapi::payload::Json<$crate::http::error::ErrorEnvelope>,
                _: Option<u64>,
            ) -> $name {
                $name::$var(body)
            }
        }
    };
}

pub(crate) use error_responses;

/// The description of `ErrorBody.code` in the spec: every stable code with
/// its status.
pub fn codes_description() -> String {
    let mut s = String::from(
        "Stable snake_case code; clients branch on it. Every code and the HTTP status it comes with:\n\n",
    );
    for code in ErrorCode::ALL {
        s.push_str(&format!(
            "- `{}` ({})\n",
            code.as_str(),
            status_of(*code).as_u16()
        ));
    }
    s.push_str(
        "\nA request refused before any operation reads it keeps its code with the HTTP layer's status: \
         `invalid_request` with `405` (and `Allow`) for a method the path does not serve, or with the \
         4xx status of a request that could not be read.\n",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_client_or_server_status() {
        for code in ErrorCode::ALL {
            let s = status_of(*code);
            assert!(s.is_client_error() || s.is_server_error(), "{code}");
        }
        assert_eq!(
            status_of(ErrorCode::RateLimited),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            status_of(ErrorCode::InternalError),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn server_errors_hide_their_cause() {
        let e = ApiError::internal("secret detail at 10.0.0.1");
        let env = e.envelope("r1");
        assert_eq!(env.error.code, "internal_error");
        assert!(!env.error.message.contains("secret"));
        assert!(!env.error.message.contains("10.0.0.1"));
    }
}
