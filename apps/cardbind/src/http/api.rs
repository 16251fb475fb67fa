//! The operations. Each handler parses what the client sent into domain
//! values, calls one use case and shapes the answer; refusals go through
//! [`Cx::fail`] into the operation's error enum, whose variants are exactly
//! the statuses it can answer.

use std::collections::BTreeMap;

use cardbind_domain::{
    Action, Actor, BindingId, BindingStatus, CardBrand, ChannelName, ErrorCode, Role, UserId,
};
use cardbind_ports::audit::AuditFilter;
use cardbind_ports::channel::{Notification, NotificationAck};
use poem::http::StatusCode;
use poem::{IntoResponse, Request, RequestBody, Response};
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::{Json, ParsePayload, Payload, PlainText};
use poem_openapi::registry::{
    MetaMediaType, MetaResponse, MetaResponses, MetaSchema, MetaSchemaRef, Registry,
};
use poem_openapi::types::Type;
use poem_openapi::{ApiResponse, OpenApi, Tags};

use super::auth::BearerAuth;
use super::body::JsonBody;
use super::dto::*;
use super::error::{error_responses, ApiError};
use super::idempotency::idempotent;
use super::metrics::STORE_PROBE_TIMEOUT;
use super::params::{
    ActionParam, BinParam, ChannelKind, DateTimeParam, IdParam, IdempotencyKeyParam, Text,
    UserIdParam,
};
use super::Cx;

/// Every operationId, for route labels.
pub const OPERATION_IDS: [&str; 20] = [
    "bindCard",
    "verifyCard",
    "listCards",
    "getCard",
    "unbindCard",
    "setDefaultCard",
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

// ---- response types ---------------------------------------------------------

#[derive(ApiResponse)]
pub enum BindCardResponse {
    /// The card is bound (`active`) or waits for the user
    /// (`pending_verification`: see `next_action`).
    #[oai(status = 201)]
    Created(Json<Card>),
    /// The channel could not be reached: the binding waits for an operator
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
pub enum BinResponse {
    /// The scheme of this BIN.
    #[oai(status = 200)]
    Ok(Json<BinInfo>),
}

#[derive(ApiResponse)]
pub enum ErasureResponse {
    /// The user's cards are unbound and their card data unreadable.
    #[oai(status = 200)]
    Ok(Json<ErasureResult>),
}

#[derive(ApiResponse)]
pub enum AuditResponse {
    /// One page of audit events, in chain order.
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

error_responses!(
    /// Errors of `bindCard`.
    BindCardError: 400, 401, 403, 404, 409, 413, 422, 429, 503
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
    /// Errors of `lookupBin`.
    BinError: 400, 401, 403, 404
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
        let text = String::schema_ref();
        MetaResponses {
            responses: vec![
                MetaResponse {
                    description: "Stored; the body is the acknowledgement the channel's protocol expects (e.g. `success` for Alipay, a JSON `SUCCESS` for WeChat Pay).",
                    status: Some(200),
                    status_range: None,
                    content: vec![
                        MetaMediaType { content_type: "text/plain", schema: text.clone() },
                        MetaMediaType { content_type: "application/json", schema: text },
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

// ---- helpers ------------------------------------------------------------------

fn parse_user(s: &str) -> Result<UserId, ApiError> {
    Ok(UserId::parse(s)?)
}

fn parse_card(s: &str) -> Result<BindingId, ApiError> {
    Ok(BindingId::parse(s)?)
}

fn after_id(s: Option<IdParam>) -> Result<Option<BindingId>, ApiError> {
    s.map(|a| {
        BindingId::parse(&a).map_err(|_| {
            ApiError::field(
                ErrorCode::InvalidRequest,
                "after",
                "`after` is not a card id",
            )
        })
    })
    .transpose()
}

const DEFAULT_LIMIT: u32 = 20;

// ---- cards ----------------------------------------------------------------------

pub struct CardsApi;

#[OpenApi(tag = "ApiTags::Cards")]
impl CardsApi {
    /// Bind a card
    ///
    /// Parses and checks every field, seals the card data, records the
    /// consent and asks the channel. Requires an `Idempotency-Key`: the
    /// first response to a key is replayed byte for byte (with
    /// `Idempotent-Replayed: true`) for the same request; the same key with
    /// another request is `idempotency_key_reused`. At most 3 bind attempts
    /// per user per minute (`rate_limited`, with `Retry-After`).
    #[oai(
        path = "/v1/users/:user_id/cards",
        method = "post",
        operation_id = "bindCard",
        transform = "idempotent",
        response_header(
            name = "Idempotent-Replayed",
            ty = "Option<bool>",
            description = "`true` when this is the stored response of an earlier request with the same key."
        )
    )]
    async fn bind_card(
        &self,
        cx: Cx,
        auth: BearerAuth,
        /// The platform's user id (1–64 of `A-Z a-z 0-9 _ - . : @`).
        user_id: Path<UserIdParam>,
        /// A unique key per bind attempt (1–255 printable ASCII), kept at
        /// least 24 hours. Retries of the same attempt reuse it.
        #[oai(name = "Idempotency-Key")]
        _idempotency_key: Header<IdempotencyKeyParam>,
        body: JsonBody<BindCardBody>,
    ) -> Result<BindCardResponse, BindCardError> {
        let state = &cx.shared.state;
        let res: Result<_, ApiError> = async {
            let user = parse_user(&user_id)?;
            auth.0.authorize(Action::BindCard, Some(&user))?;
            let raw = body.0.into_raw(cx.client_ip.clone(), cx.user_agent.clone());
            let req = raw.parse(state.clock.now())?;
            Ok(state.service.bind(&cx.context(&auth.0), &user, req).await?)
        }
        .await;
        match res {
            Ok(view) => {
                cx.shared.metrics.bind_outcome(view.binding.status.as_str());
                let card = Json(cx.card(&view));
                Ok(if view.binding.status == BindingStatus::PendingReview {
                    BindCardResponse::Accepted(card)
                } else {
                    BindCardResponse::Created(card)
                })
            }
            Err(e) => {
                cx.shared.metrics.bind_outcome(e.code.as_str());
                cx.shared.metrics.rate_limit_hit(e.code);
                Err(cx.fail(e))
            }
        }
    }

    /// Verify a card with its OTP
    ///
    /// For a card in `pending_verification` whose `next_action` is `otp`.
    /// A wrong code is `invalid_otp` (422); too many wrong codes or an
    /// expired window fail the binding.
    #[oai(
        path = "/v1/users/:user_id/cards/:card_id/verify",
        method = "post",
        operation_id = "verifyCard"
    )]
    async fn verify_card(
        &self,
        cx: Cx,
        auth: BearerAuth,
        user_id: Path<UserIdParam>,
        card_id: Path<IdParam>,
        body: JsonBody<VerifyCardBody>,
    ) -> Result<CardResponse, VerifyCardError> {
        let res: Result<_, ApiError> = async {
            let (user, id) = (parse_user(&user_id)?, parse_card(&card_id)?);
            Ok(cx
                .shared
                .state
                .service
                .verify_otp(&cx.context(&auth.0), &user, &id, &body.otp)
                .await?)
        }
        .await;
        res.map(|v| CardResponse::Ok(Json(cx.card(&v))))
            .map_err(|e| cx.fail(e))
    }

    /// List a user's cards
    ///
    /// In id order (ids are time-ordered), `limit` per page (1–100, default
    /// 20); pass `next_after` as `after` for the next page.
    #[oai(
        path = "/v1/users/:user_id/cards",
        method = "get",
        operation_id = "listCards"
    )]
    async fn list_cards(
        &self,
        cx: Cx,
        auth: BearerAuth,
        user_id: Path<UserIdParam>,
        /// The last card id of the previous page.
        after: Query<Option<IdParam>>,
        /// Page size, 1–100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<u32>>,
    ) -> Result<CardListResponse, ListError> {
        let res: Result<_, ApiError> = async {
            let user = parse_user(&user_id)?;
            let after = after_id(after.0)?;
            Ok(cx
                .shared
                .state
                .service
                .list(
                    &cx.context(&auth.0),
                    &user,
                    after,
                    limit.0.unwrap_or(DEFAULT_LIMIT),
                )
                .await?)
        }
        .await;
        res.map(|p| CardListResponse::Ok(Json(cx.card_list(&p))))
            .map_err(|e| cx.fail(e))
    }

    /// Get a card
    #[oai(
        path = "/v1/users/:user_id/cards/:card_id",
        method = "get",
        operation_id = "getCard"
    )]
    async fn get_card(
        &self,
        cx: Cx,
        auth: BearerAuth,
        user_id: Path<UserIdParam>,
        card_id: Path<IdParam>,
    ) -> Result<CardResponse, ReadError> {
        let res: Result<_, ApiError> = async {
            let (user, id) = (parse_user(&user_id)?, parse_card(&card_id)?);
            Ok(cx
                .shared
                .state
                .service
                .get(&cx.context(&auth.0), &user, &id)
                .await?)
        }
        .await;
        res.map(|v| CardResponse::Ok(Json(cx.card(&v))))
            .map_err(|e| cx.fail(e))
    }

    /// Unbind a card
    ///
    /// Always possible; also ends the agreement at the channel. Unbinding an
    /// unbound card changes nothing. If it was the default, the most
    /// recently activated other active card becomes the default. When the
    /// service enables step-up, unbinding the current default card needs
    /// `X-Step-Up-Token` (403 `step_up_required` otherwise).
    #[oai(
        path = "/v1/users/:user_id/cards/:card_id",
        method = "delete",
        operation_id = "unbindCard"
    )]
    async fn unbind_card(
        &self,
        cx: Cx,
        auth: BearerAuth,
        user_id: Path<UserIdParam>,
        card_id: Path<IdParam>,
        /// Step-up token for action `unbind_default_card` on this user.
        /// Required, when the service enables step-up, to unbind the card
        /// that is the user's current default; missing or invalid is 403
        /// `step_up_required`.
        #[oai(name = "X-Step-Up-Token")]
        step_up_token: Header<Option<String>>,
    ) -> Result<CardResponse, ChangeError> {
        let res: Result<_, ApiError> = async {
            let (user, id) = (parse_user(&user_id)?, parse_card(&card_id)?);
            Ok(cx
                .shared
                .state
                .service
                .unbind_with_step_up(&cx.context(&auth.0), &user, &id, step_up_token.0.as_deref())
                .await?)
        }
        .await;
        res.map(|v| CardResponse::Ok(Json(cx.card(&v))))
            .map_err(|e| cx.fail(e))
    }

    /// Make a card the default
    ///
    /// Only an `active` card can be the default (`invalid_state_transition`
    /// otherwise); a user has at most one.
    #[oai(
        path = "/v1/users/:user_id/cards/:card_id/default",
        method = "put",
        operation_id = "setDefaultCard"
    )]
    async fn set_default_card(
        &self,
        cx: Cx,
        auth: BearerAuth,
        user_id: Path<UserIdParam>,
        card_id: Path<IdParam>,
    ) -> Result<CardResponse, ChangeError> {
        let res: Result<_, ApiError> = async {
            let (user, id) = (parse_user(&user_id)?, parse_card(&card_id)?);
            Ok(cx
                .shared
                .state
                .service
                .set_default(&cx.context(&auth.0), &user, &id)
                .await?)
        }
        .await;
        res.map(|v| CardResponse::Ok(Json(cx.card(&v))))
            .map_err(|e| cx.fail(e))
    }
}

// ---- admin ------------------------------------------------------------------------

pub struct AdminApi;

#[OpenApi(tag = "ApiTags::Admin")]
impl AdminApi {
    /// Freeze a card
    ///
    /// An `active` card becomes `frozen` (operators only).
    #[oai(
        path = "/v1/admin/users/:user_id/cards/:card_id/freeze",
        method = "post",
        operation_id = "freezeCard"
    )]
    async fn freeze_card(
        &self,
        cx: Cx,
        auth: BearerAuth,
        user_id: Path<UserIdParam>,
        card_id: Path<IdParam>,
    ) -> Result<CardResponse, ChangeError> {
        let res: Result<_, ApiError> = async {
            let (user, id) = (parse_user(&user_id)?, parse_card(&card_id)?);
            Ok(cx
                .shared
                .state
                .service
                .freeze(&cx.context(&auth.0), &user, &id)
                .await?)
        }
        .await;
        res.map(|v| CardResponse::Ok(Json(cx.card(&v))))
            .map_err(|e| cx.fail(e))
    }

    /// Unfreeze a card
    ///
    /// A `frozen` card becomes `active` again (operators only).
    #[oai(
        path = "/v1/admin/users/:user_id/cards/:card_id/unfreeze",
        method = "post",
        operation_id = "unfreezeCard"
    )]
    async fn unfreeze_card(
        &self,
        cx: Cx,
        auth: BearerAuth,
        user_id: Path<UserIdParam>,
        card_id: Path<IdParam>,
    ) -> Result<CardResponse, ChangeError> {
        let res: Result<_, ApiError> = async {
            let (user, id) = (parse_user(&user_id)?, parse_card(&card_id)?);
            Ok(cx
                .shared
                .state
                .service
                .unfreeze(&cx.context(&auth.0), &user, &id)
                .await?)
        }
        .await;
        res.map(|v| CardResponse::Ok(Json(cx.card(&v))))
            .map_err(|e| cx.fail(e))
    }

    /// List bindings waiting for review
    ///
    /// Bindings whose channel could not be reached (`pending_review`).
    #[oai(
        path = "/v1/admin/reviews",
        method = "get",
        operation_id = "listReviews"
    )]
    async fn list_reviews(
        &self,
        cx: Cx,
        auth: BearerAuth,
        /// The last card id of the previous page.
        after: Query<Option<IdParam>>,
        /// Page size, 1–100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<u32>>,
    ) -> Result<CardListResponse, ListError> {
        let res: Result<_, ApiError> = async {
            let after = after_id(after.0)?;
            Ok(cx
                .shared
                .state
                .service
                .review_queue(
                    &cx.context(&auth.0),
                    after,
                    limit.0.unwrap_or(DEFAULT_LIMIT),
                )
                .await?)
        }
        .await;
        res.map(|p| CardListResponse::Ok(Json(cx.card_list(&p))))
            .map_err(|e| cx.fail(e))
    }

    /// Approve a binding in review
    ///
    /// It becomes `active`, with the channel reference when given.
    #[oai(
        path = "/v1/admin/reviews/:card_id/approve",
        method = "post",
        operation_id = "approveReview"
    )]
    async fn approve_review(
        &self,
        cx: Cx,
        auth: BearerAuth,
        card_id: Path<IdParam>,
        body: JsonBody<ApproveReviewBody>,
    ) -> Result<CardResponse, ChangeError> {
        let res: Result<_, ApiError> = async {
            let id = parse_card(&card_id)?;
            let channel_ref = body.0.channel_ref;
            Ok(cx
                .shared
                .state
                .service
                .approve_review(&cx.context(&auth.0), &id, channel_ref)
                .await?)
        }
        .await;
        res.map(|v| CardResponse::Ok(Json(cx.card(&v))))
            .map_err(|e| cx.fail(e))
    }

    /// Reject a binding in review
    ///
    /// It becomes `failed` (`rejected_by_operator`).
    #[oai(
        path = "/v1/admin/reviews/:card_id/reject",
        method = "post",
        operation_id = "rejectReview"
    )]
    async fn reject_review(
        &self,
        cx: Cx,
        auth: BearerAuth,
        card_id: Path<IdParam>,
    ) -> Result<CardResponse, ChangeError> {
        let res: Result<_, ApiError> = async {
            let id = parse_card(&card_id)?;
            Ok(cx
                .shared
                .state
                .service
                .reject_review(&cx.context(&auth.0), &id)
                .await?)
        }
        .await;
        res.map(|v| CardResponse::Ok(Json(cx.card(&v))))
            .map_err(|e| cx.fail(e))
    }

    /// Retry a binding in review at its channel
    ///
    /// For when the channel is back: the card data is opened from its sealed
    /// fields (each opening audited) and sent to the channel again; the
    /// answer is as for a new bind (`active`, `pending_verification` with
    /// `next_action`, or `pending_review` again). Sealed data that does not
    /// open is 409 `card_data_unreadable` and the binding stays in review.
    #[oai(
        path = "/v1/admin/reviews/:card_id/retry",
        method = "post",
        operation_id = "retryReview"
    )]
    async fn retry_review(
        &self,
        cx: Cx,
        auth: BearerAuth,
        card_id: Path<IdParam>,
    ) -> Result<CardResponse, RetryReviewError> {
        let res: Result<_, ApiError> = async {
            let id = parse_card(&card_id)?;
            Ok(cx
                .shared
                .state
                .service
                .retry_review(&cx.context(&auth.0), &id)
                .await?)
        }
        .await;
        res.map(|v| CardResponse::Ok(Json(cx.card(&v))))
            .map_err(|e| cx.fail(e))
    }

    /// Erase a user
    ///
    /// Unbinds every card and destroys the user's key material, which makes
    /// their card data unreadable everywhere, backups included
    /// (crypto-shredding). Audited. When the service enables step-up, needs
    /// `X-Step-Up-Token` (403 `step_up_required` otherwise).
    #[oai(
        path = "/v1/admin/users/:user_id/erase",
        method = "post",
        operation_id = "eraseUser"
    )]
    async fn erase_user(
        &self,
        cx: Cx,
        auth: BearerAuth,
        user_id: Path<UserIdParam>,
        /// Step-up token for action `erase_user` on this user. Required
        /// when the service enables step-up; missing or invalid is 403
        /// `step_up_required`.
        #[oai(name = "X-Step-Up-Token")]
        step_up_token: Header<Option<String>>,
    ) -> Result<ErasureResponse, EraseError> {
        let res: Result<_, ApiError> = async {
            let user = parse_user(&user_id)?;
            let n = cx
                .shared
                .state
                .service
                .erase_user_with_step_up(&cx.context(&auth.0), &user, step_up_token.0.as_deref())
                .await?;
            Ok(ErasureResult {
                user_id: user.as_str().to_owned(),
                unbound_cards: n,
            })
        }
        .await;
        res.map(|r| ErasureResponse::Ok(Json(r)))
            .map_err(|e| cx.fail(e))
    }
}

// ---- audit --------------------------------------------------------------------------

pub struct AuditApi;

#[OpenApi(tag = "ApiTags::Audit")]
impl AuditApi {
    /// Read the audit log
    ///
    /// Events in chain order (`seq` ascending), filtered; each holds the
    /// hash of its predecessor so that a gap or an edit shows (auditors
    /// only).
    #[oai(
        path = "/v1/audit/events",
        method = "get",
        operation_id = "listAuditEvents"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn list_audit_events(
        &self,
        cx: Cx,
        auth: BearerAuth,
        /// Only events about this user.
        user_id: Query<Option<UserIdParam>>,
        /// Only events about this card.
        card_id: Query<Option<IdParam>>,
        /// Only this action, e.g. `binding.freeze`.
        action: Query<Option<ActionParam>>,
        /// Only events at or after this instant (RFC 3339).
        since: Query<Option<DateTimeParam>>,
        /// Only events before this instant (RFC 3339).
        until: Query<Option<DateTimeParam>>,
        /// Only events after this sequence number (the previous page's
        /// `next_after_seq`).
        #[oai(validator(minimum(value = "0"), maximum(value = "1000000000000000")))]
        after_seq: Query<Option<u64>>,
        /// Page size, 1–500 (default 100).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
    ) -> Result<AuditResponse, ListError> {
        let res: Result<_, ApiError> = async {
            let time = |name: &'static str, v: Option<DateTimeParam>| {
                v.map(|s| {
                    parse_rfc3339(&s).ok_or_else(|| {
                        ApiError::field(
                            ErrorCode::InvalidRequest,
                            name,
                            format!("`{name}` must be an RFC 3339 date-time"),
                        )
                    })
                })
                .transpose()
            };
            let filter = AuditFilter {
                user_id: user_id
                    .0
                    .map(|u| parse_user(&u).map(|u| u.as_str().to_owned()))
                    .transpose()?,
                binding_id: card_id
                    .0
                    .map(|c| parse_card(&c).map(|c| c.as_str().to_owned()))
                    .transpose()?,
                action: action.0.map(Text::into_string),
                since: time("since", since.0)?,
                until: time("until", until.0)?,
            };
            let limit = limit.0.unwrap_or(100);
            let records = cx
                .shared
                .state
                .service
                .read_audit(&cx.context(&auth.0), &filter, after_seq.0, limit)
                .await?;
            let next = if records.len() as u32 >= limit.clamp(1, 500) {
                records.last().map(|r| r.seq)
            } else {
                None
            };
            Ok(AuditEventList {
                events: records.iter().map(AuditEventDto::from).collect(),
                next_after_seq: next,
            })
        }
        .await;
        res.map(|l| AuditResponse::Ok(Json(l)))
            .map_err(|e| cx.fail(e))
    }

    /// List consents
    ///
    /// The consents users gave, of one user or all (auditors); a `service`
    /// or `user` caller reads one user's.
    #[oai(path = "/v1/consents", method = "get", operation_id = "listConsents")]
    async fn list_consents(
        &self,
        cx: Cx,
        auth: BearerAuth,
        /// Only this user's consents.
        user_id: Query<Option<UserIdParam>>,
        /// The last consent id of the previous page.
        after: Query<Option<IdParam>>,
        /// Page size, 1–100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<u32>>,
    ) -> Result<ConsentResponse, ListError> {
        let res: Result<_, ApiError> = async {
            let user = user_id.0.map(|u| parse_user(&u)).transpose()?;
            let limit = limit.0.unwrap_or(DEFAULT_LIMIT);
            let consents = cx
                .shared
                .state
                .service
                .list_consents(
                    &cx.context(&auth.0),
                    user,
                    after.0.map(Text::into_string),
                    limit,
                )
                .await?;
            let next = if consents.len() as u32 >= limit.clamp(1, 100) {
                consents.last().map(|c| c.id.clone())
            } else {
                None
            };
            Ok(ConsentList {
                consents: consents.iter().map(ConsentDto::from).collect(),
                next_after: next,
            })
        }
        .await;
        res.map(|l| ConsentResponse::Ok(Json(l)))
            .map_err(|e| cx.fail(e))
    }
}

// ---- channels -------------------------------------------------------------------------

pub struct ChannelsApi;

#[OpenApi(tag = "ApiTags::Channels")]
impl ChannelsApi {
    /// Receive a channel notification
    ///
    /// Called by the payment channel itself (no bearer token: the channel
    /// signs its notification, and a signature that does not verify is
    /// `invalid_signature`). The body and headers are handed over exactly as
    /// received; the answer is the acknowledgement the channel's protocol
    /// expects, sent only once the event is stored.
    #[oai(
        path = "/v1/channels/:channel/notify",
        method = "post",
        operation_id = "channelNotify"
    )]
    async fn channel_notify(
        &self,
        cx: Cx,
        req: &Request,
        channel: Path<ChannelKind>,
        body: RawNotification,
    ) -> Result<AckResponse, NotifyError> {
        let res: Result<_, ApiError> = async {
            let name = ChannelName::parse(channel.0.as_str())?;
            let headers: BTreeMap<String, String> = req
                .headers()
                .iter()
                .filter_map(|(k, v)| {
                    v.to_str()
                        .ok()
                        .map(|v| (k.as_str().to_ascii_lowercase(), v.to_owned()))
                })
                .collect();
            let n = Notification {
                headers,
                body: body.0,
            };
            Ok(cx
                .shared
                .state
                .service
                .handle_notification(&name, &n)
                .await?)
        }
        .await;
        res.map(AckResponse).map_err(|e| {
            let e = if e.code == ErrorCode::ChannelNotEnabled {
                ApiError::field(ErrorCode::NotFound, "channel", "no such channel is enabled")
            } else {
                e
            };
            cx.fail(e)
        })
    }
}

// ---- meta -------------------------------------------------------------------------------

pub struct MetaApi;

#[OpenApi(tag = "ApiTags::Meta")]
impl MetaApi {
    /// Look up a BIN
    ///
    /// The card scheme of the first 6 to 8 digits of a card number, and
    /// what the BIN table says about them (issuer, card type, country,
    /// currency; each only when known: the built-in table knows few BINs
    /// until an operator imports a full one). A BIN of no supported scheme
    /// is 404 `unsupported_card_brand`.
    #[oai(path = "/v1/bins/:bin", method = "get", operation_id = "lookupBin")]
    async fn lookup_bin(
        &self,
        cx: Cx,
        auth: BearerAuth,
        bin: Path<BinParam>,
    ) -> Result<BinResponse, BinError> {
        let res = (|| -> Result<BinInfo, ApiError> {
            let actor: &Actor = &auth.0;
            let own = (actor.role == Role::User)
                .then(|| UserId::parse(&actor.subject).ok())
                .flatten();
            actor.authorize(Action::BinLookup, own.as_ref())?;
            let brand = CardBrand::from_iin(&bin).ok_or_else(|| {
                ApiError::field(
                    ErrorCode::UnsupportedCardBrand,
                    "bin",
                    "no supported card scheme issues this BIN",
                )
                .with_status(StatusCode::NOT_FOUND)
            })?;
            let entry = cx.shared.state.bins.directory.lookup(&bin);
            Ok(BinInfo::new(
                bin.0.as_str().to_owned(),
                brand,
                IssuerFacts::of(entry.as_ref()),
            ))
        })();
        res.map(|b| BinResponse::Ok(Json(b)))
            .map_err(|e| cx.fail(e))
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
    /// The store answers (`storage_unavailable` otherwise).
    #[oai(path = "/readyz", method = "get", operation_id = "readiness")]
    async fn readiness(&self, cx: Cx) -> Result<HealthResponse, ReadyError> {
        // Any valid id: the probe only reads a (missing) default pointer.
        let probe =
            UserId::parse("cardbind-readiness-probe").map_err(|e| cx.fail::<ReadyError>(e))?;
        match cx
            .shared
            .state
            .service
            .ports()
            .bindings
            .get_default(&probe)
            .await
        {
            Ok(_) => Ok(HealthResponse::Ok(Json(Health {
                status: "ok".into(),
            }))),
            Err(e) => Err(cx.fail(
                ApiError::new(ErrorCode::StorageUnavailable, "storage is unavailable")
                    .with_cause(e.to_string()),
            )),
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
        let store = cx.shared.state.service.ports().bindings.clone();
        cx.shared
            .metrics
            .refresh_store(store.as_ref(), STORE_PROBE_TIMEOUT)
            .await;
        MetricsResponse::Ok(PlainText(
            cx.shared.metrics.render(&cx.shared.state.metrics),
        ))
    }
}
