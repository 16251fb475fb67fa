//! The operations, grouped by tag. Every handler has one shape: it builds
//! the caller's context, hands one use case its typed request (parsing
//! what the client sent on the way), and answers through
//! [`Cx::answer`](super::Cx::answer), which turns a refusal into the
//! operation's declared error response — a status an operation does not
//! declare does not compile (see [`super::error::Respond`]).

pub mod admin;
pub mod cards;
pub mod channels;
pub mod family;
pub mod meta;
pub mod records;

use poem::http::StatusCode;
use poem::{IntoResponse, Request, RequestBody, Response};
use poem_openapi::payload::{Json, ParsePayload, Payload, PlainText};
use poem_openapi::registry::{
    MetaMediaType, MetaResponse, MetaResponses, MetaSchema, MetaSchemaRef, Registry,
};
use poem_openapi::types::Type;
use poem_openapi::{ApiResponse, Tags};

use super::dto::*;
use super::error::{error_responses, ApiError};
use cardbind_ports::channel::NotificationAck;

/// Every operationId, for route labels.
pub const OPERATION_IDS: [&str; 26] = [
    "bindCard",
    "verifyCard",
    "listCards",
    "getCard",
    "unbindCard",
    "setDefaultCard",
    "shareCard",
    "listCardShares",
    "revokeShare",
    "listSharedCards",
    "acceptShare",
    "leaveShare",
    "freezeCard",
    "unfreezeCard",
    "listReviews",
    "approveReview",
    "rejectReview",
    "retryReview",
    "eraseUser",
    "listAuditEvents",
    "listConsents",
    "channelNotify",
    "lookupBin",
    "liveness",
    "readiness",
    "metrics",
];

#[derive(Tags)]
pub enum ApiTags {
    /// Bind, verify, read and manage a user's cards.
    #[oai(rename = "cards")]
    Cards,
    /// Family cards (主卡/副卡): share a card with another user, accept,
    /// revoke, leave.
    #[oai(rename = "family")]
    Family,
    /// Operators: freeze, the manual review queue, erasure.
    #[oai(rename = "admin")]
    Admin,
    /// Auditors: the audit log and consent records.
    #[oai(rename = "audit")]
    Audit,
    /// Asynchronous notifications from payment channels.
    #[oai(rename = "channels")]
    Channels,
    /// Health, metrics and card scheme lookup.
    #[oai(rename = "meta")]
    Meta,
}

/// Page size when a listing names none.
pub const DEFAULT_LIMIT: u32 = 20;

// ---- answers -------------------------------------------------------------------

#[derive(ApiResponse)]
pub enum BindCardResponse {
    /// The card is bound (`active`) or waits for the user
    /// (`pending_verification`: see `next_action`).
    #[oai(status = 201)]
    Created(Json<Card>),
    /// The channel could not be reached, or could not take the request
    /// (its configuration): the binding waits for an operator
    /// (`pending_review`).
    #[oai(status = 202)]
    Accepted(Json<Card>),
}

#[derive(ApiResponse)]
pub enum CardResponse {
    /// The card.
    #[oai(status = 200)]
    Ok(Json<Card>),
}

#[derive(ApiResponse)]
pub enum CardListResponse {
    /// One page of cards, in id order.
    #[oai(status = 200)]
    Ok(Json<CardList>),
}

#[derive(ApiResponse)]
pub enum ShareResponse {
    /// The card is shared; the other user has an invitation.
    #[oai(status = 201)]
    Created(Json<ShareDto>),
    /// The same share (card, user and terms) was live already: it.
    #[oai(status = 200)]
    Ok(Json<ShareDto>),
}

#[derive(ApiResponse)]
pub enum ShareOneResponse {
    /// The share.
    #[oai(status = 200)]
    Ok(Json<ShareDto>),
}

#[derive(ApiResponse)]
pub enum ShareListResponse {
    /// The card's shares, newest first.
    #[oai(status = 200)]
    Ok(Json<ShareList>),
}

#[derive(ApiResponse)]
pub enum SharedCardResponse {
    /// The share, as the user it was made to sees it.
    #[oai(status = 200)]
    Ok(Json<SharedCardDto>),
}

#[derive(ApiResponse)]
pub enum SharedCardListResponse {
    /// Invitations and accepted shares, in share id order.
    #[oai(status = 200)]
    Ok(Json<SharedCardList>),
}

#[derive(ApiResponse)]
pub enum BinResponse {
    /// The scheme of this BIN.
    #[oai(status = 200)]
    Ok(Json<BinInfoDto>),
}

#[derive(ApiResponse)]
pub enum ErasureResponse {
    /// The user's cards are unbound and their card data unreadable.
    #[oai(status = 200)]
    Ok(Json<ErasureResult>),
}

#[derive(ApiResponse)]
pub enum AuditResponse {
    /// One page of audit events, in time order.
    #[oai(status = 200)]
    Ok(Json<AuditEventList>),
}

#[derive(ApiResponse)]
pub enum ConsentResponse {
    /// One page of consents.
    #[oai(status = 200)]
    Ok(Json<ConsentList>),
}

#[derive(ApiResponse)]
pub enum HealthResponse {
    /// Serving.
    #[oai(status = 200)]
    Ok(Json<Health>),
}

#[derive(ApiResponse)]
pub enum MetricsResponse {
    /// Prometheus text exposition.
    #[oai(status = 200)]
    Ok(PlainText<String>),
}

// ---- refusals: each operation's statuses ---------------------------------------
//
// A use case's refusal classes must each be declared here, by the
// operation answering it (else it does not compile); 401, 413 and the 400
// of a malformed body or parameter come from the edge, and are declared
// for the spec.

error_responses!(
    /// Errors of `bindCard`.
    BindCardError: 400, 401, 403, 409, 413, 422, 429, 503
);
error_responses!(
    /// Errors of `verifyCard`.
    VerifyCardError: 400, 401, 403, 404, 409, 413, 422, 503
);
error_responses!(
    /// Errors of reads of one user's cards.
    ReadError: 400, 401, 403, 404, 503
);
error_responses!(
    /// Errors of changes to one card.
    ChangeError: 400, 401, 403, 404, 409, 413, 503
);
error_responses!(
    /// Errors of `retryReview` (the channel may decline again: 422).
    RetryReviewError: 400, 401, 403, 404, 409, 413, 422, 503
);
error_responses!(
    /// Errors of list operations.
    ListError: 400, 401, 403, 503
);
error_responses!(
    /// Errors of `eraseUser`.
    EraseError: 400, 401, 403, 409, 413, 503
);
error_responses!(
    /// Errors of `channelNotify`.
    NotifyError: 400, 401, 404, 409, 413, 503
);
error_responses!(
    /// Errors of `shareCard`.
    ShareCardError: 400, 401, 403, 404, 409, 413, 422, 503
);
error_responses!(
    /// Errors of `revokeShare` and `leaveShare`.
    EndShareError: 400, 401, 403, 404, 409, 413, 503
);
error_responses!(
    /// Errors of `acceptShare`.
    AcceptShareError: 400, 401, 403, 404, 409, 413, 503
);
error_responses!(
    /// Errors of `lookupBin`.
    BinError: 400, 401, 403, 404, 503
);
error_responses!(
    /// Errors of `readiness`.
    ReadyError: 503
);

// ---- the raw notification body ----------------------------------------------

/// A channel notification body, exactly as sent (any content type).
pub struct RawNotification(pub Vec<u8>);

impl Payload for RawNotification {
    const CONTENT_TYPE: &'static str = "*/*";

    fn check_content_type(_content_type: &str) -> bool {
        true
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema::new_with_format("string", "binary")))
    }
}

impl ParsePayload for RawNotification {
    const IS_REQUIRED: bool = true;

    async fn from_request(_request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        let bytes = body
            .take()?
            .into_vec()
            .await
            .map_err(|_| ApiError::invalid_request("the body could not be read"))?;
        Ok(RawNotification(bytes))
    }
}

poem_openapi::impl_apirequest_for_payload!(RawNotification,);

/// The answer a channel expects to a notification (its own status, content
/// type and body, e.g. Alipay's `success`).
pub struct AckResponse(pub NotificationAck);

impl IntoResponse for AckResponse {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::OK);
        Response::builder()
            .status(status)
            .content_type(self.0.content_type)
            .body(self.0.body)
    }
}

impl ApiResponse for AckResponse {
    fn meta() -> MetaResponses {
        // The acknowledgements are text (Alipay's `success`) or a JSON
        // object of strings (WeChat Pay's `{"code":"SUCCESS","message":"OK"}`,
        // the mock's `{"status":"ok"}`).
        let text = String::schema_ref();
        let object = <std::collections::BTreeMap<String, String>>::schema_ref();
        MetaResponses {
            responses: vec![
                MetaResponse {
                    description: "Stored; the body is the acknowledgement the channel's protocol expects (e.g. `success` as text for Alipay, the JSON object `{\"code\":\"SUCCESS\",\"message\":\"OK\"}` for WeChat Pay).",
                    status: Some(200),
                    status_range: None,
                    content: vec![
                        MetaMediaType { content_type: "text/plain", schema: text },
                        MetaMediaType { content_type: "application/json", schema: object },
                    ],
                    headers: vec![],
                },
                MetaResponse {
                    description: "Stored; the channel's protocol expects no body.",
                    status: Some(204),
                    status_range: None,
                    content: vec![],
                    headers: vec![],
                },
            ],
        }
    }

    fn register(_registry: &mut Registry) {}
}
