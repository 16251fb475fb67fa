//! The one place where stable error codes become HTTP statuses and bodies.
//!
//! Every refusal leaves the service as the envelope
//! `{"error":{"code","message","field?","request_id"}}` with the status that
//! [`status_of`] gives its code. Handlers answer with per-operation error
//! enums (built by [`error_responses!`], so that every status an operation
//! can return is in the spec); everything else (authentication, parse
//! errors of poem-openapi, size limits, panics, unknown routes) reaches the
//! edge middleware as a `poem::Error` and is rendered by [`render`] with the
//! same envelope.
//!
//! 5xx bodies never carry internals: the cause is logged with the request id
//! and the body says only what the code says.

use cardbind_domain::{DomainError, ErrorCode};
use cardbind_ports::{ChannelError, KeyError, ServiceError, StoreError};
use poem::error::ResponseError;
use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use poem_openapi::payload::Json;
use poem_openapi::Object;

/// The HTTP status of each stable code. Exhaustive on purpose: a new code
/// does not compile until it is given a status here.
pub const fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidCardNumber
        | ErrorCode::UnsupportedCardBrand
        | ErrorCode::InvalidExpiry
        | ErrorCode::CardExpired
        | ErrorCode::InvalidCvv
        | ErrorCode::InvalidHolderName
        | ErrorCode::InvalidIdNumber
        | ErrorCode::InvalidPhone
        | ErrorCode::InvalidUserId
        | ErrorCode::InvalidRequest
        | ErrorCode::IdempotencyKeyMissing
        | ErrorCode::ChannelNotEnabled => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthenticated | ErrorCode::InvalidSignature => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden | ErrorCode::StepUpRequired => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::CardAlreadyBound
        | ErrorCode::IdempotencyKeyReused
        | ErrorCode::IdempotencyKeyInProgress
        | ErrorCode::InvalidStateTransition
        | ErrorCode::Conflict
        | ErrorCode::CardDataUnreadable => StatusCode::CONFLICT,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::CardLimitReached
        | ErrorCode::InvalidOtp
        | ErrorCode::VerificationExpired
        | ErrorCode::ChannelRejected
        | ErrorCode::CardNotAcceptedByChannel => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::RateLimited | ErrorCode::IpRateLimited | ErrorCode::CardVelocityExceeded => {
            StatusCode::TOO_MANY_REQUESTS
        }
        ErrorCode::StorageUnavailable
        | ErrorCode::KeyServiceUnavailable
        | ErrorCode::ChannelUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
    }
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

    /// Another status than the code's usual one. Used only where a resource
    /// path itself names the missing thing (the BIN lookup's unknown BIN is
    /// a 404 `unsupported_card_brand`).
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
                cause = self.cause.as_deref().unwrap_or("-"),
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

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> ApiError {
        ApiError {
            field: e.field.map(str::to_owned),
            ..ApiError::new(e.code, e.message)
        }
    }
}

/// Keeps a channel's refusal code if it looks like a code (it is shown).
fn channel_code(code: &str) -> Option<&str> {
    let ok = (1..=64).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    ok.then_some(code)
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> ApiError {
        let code = e.code();
        match e {
            ServiceError::Domain(d) => d.into(),
            ServiceError::RateLimited {
                retry_after_seconds,
                ..
            } => ApiError {
                retry_after: Some(retry_after_seconds.max(1) as u64),
                ..ApiError::new(
                    code,
                    "too many attempts; retry after the time in Retry-After",
                )
            },
            ServiceError::Store(StoreError::Duplicate) => {
                ApiError::new(code, "this card is already bound")
            }
            ServiceError::Store(StoreError::Conflict) => {
                ApiError::new(code, "the card changed concurrently; retry the request")
            }
            ServiceError::Store(ref s @ StoreError::Unavailable(_)) => {
                ApiError::new(code, "storage is unavailable; retry later").with_cause(s.to_string())
            }
            ServiceError::Store(ref s @ StoreError::Corrupt(_)) => {
                ApiError::internal(s.to_string())
            }
            ServiceError::Keys(ref k @ KeyError::Unavailable(_)) => {
                ApiError::new(code, "the key service is unavailable; retry later")
                    .with_cause(k.to_string())
            }
            ServiceError::Keys(k) => ApiError::internal(k.to_string()),
            ServiceError::Channel(ChannelError::Rejected { code: sub, .. }) => {
                let message = match channel_code(&sub) {
                    Some(c) => format!("the payment channel declined this card ({c})"),
                    None => "the payment channel declined this card".to_owned(),
                };
                ApiError::new(code, message)
            }
            ServiceError::Channel(ChannelError::InvalidSignature) => {
                ApiError::new(code, "the notification signature does not verify")
            }
            ServiceError::Channel(ChannelError::Protocol(p)) => {
                ApiError::new(code, "the notification could not be read").with_cause(p)
            }
            ServiceError::Channel(c) => {
                ApiError::new(code, "the payment channel is unavailable; retry later")
                    .with_cause(c.to_string())
            }
        }
    }
}

/// An [`ApiError`] with the request id it answers: what handlers turn into
/// their operation's error enum (`impl From<Failure> for …Error`).
pub struct Failure {
    pub error: ApiError,
    pub request_id: String,
}

impl Failure {
    pub fn body(&self) -> Json<ErrorEnvelope> {
        Json(self.error.envelope(&self.request_id))
    }
}

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
        error_responses!(@build $m $name [$($v)* (409 Conflict "The request conflicts with the resource's state: `card_already_bound`, `invalid_state_transition`, `idempotency_key_reused`, `idempotency_key_in_progress` or `conflict` (retry).")] [$($r)*] $($rest),*);
    };
    (@build $m:tt $name:ident [$($v:tt)*] [$($r:tt)*] 413 $(, $rest:tt)*) => {
        error_responses!(@build $m $name [$($v)* (413 PayloadTooLarge "The body is larger than the service accepts (`payload_too_large`).")] [$($r)*] $($rest),*);
    };
    (@build $m:tt $name:ident [$($v:tt)*] [$($r:tt)*] 422 $(, $rest:tt)*) => {
        error_responses!(@build $m $name [$($v)* (422 Unprocessable "Well-formed but refused: `card_limit_reached`, `channel_rejected`, `invalid_otp`, `verification_expired`.")] [$($r)*] $($rest),*);
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

        impl From<$crate::http::error::Failure> for $name {
            fn from(f: $crate::http::error::Failure) -> $name {
                let body = f.body();
                let retry_after = f.error.retry_after;
                let _ = retry_after;
                match f.error.status.as_u16() {
                    $( $st => $name::$var(body), )*
                    $( 429 => $name::$retry(body, retry_after), )?
                    500 => $name::InternalServerError(body),
                    other => {
                        tracing::error!(request_id = %f.request_id, status = other, code = %f.error.code,
                            "status not declared for this operation; answered 500");
                        let mut e = f.error.clone();
                        e.status = poem::http::StatusCode::INTERNAL_SERVER_ERROR;
                        e.code = cardbind_domain::ErrorCode::InternalError;
                        e.message = "internal error".into();
                        e.field = None;
                        $name::InternalServerError(poem_openapi::payload::Json(e.envelope(&f.request_id)))
                    }
                }
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
            status_of(code).as_u16()
        ));
    }
    s.push_str("\n`unsupported_card_brand` is a 404 from the BIN lookup (the BIN is unknown) and a 400 elsewhere.");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_client_or_server_status() {
        for code in ErrorCode::ALL {
            let s = status_of(code);
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
        let e: ApiError = ServiceError::Store(StoreError::Corrupt("secret detail".into())).into();
        let env = e.envelope("r1");
        assert_eq!(env.error.code, "internal_error");
        assert!(!env.error.message.contains("secret"));
        let e: ApiError =
            ServiceError::Store(StoreError::Unavailable("db at 10.0.0.1".into())).into();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!e.envelope("r").error.message.contains("10.0.0.1"));
    }
}
