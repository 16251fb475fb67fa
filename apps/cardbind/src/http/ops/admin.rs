//! Operators: freeze, the manual review queue, erasure.

use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::OpenApi;

use super::*;
use crate::http::auth::BearerAuth;
use crate::http::body::JsonBody;
use crate::http::params::{IdParam, UserIdParam};
use crate::http::Cx;

pub struct AdminApi;

#[OpenApi(tag = "ApiTags::Admin")]
impl AdminApi {
    /// Freeze a card
    ///
    /// An `active` card becomes `frozen` (operators only). The hold
    /// outlives an unbind: a card unbound while frozen is not bound again
    /// (409 `invalid_state_transition`) until an operator unfreezes it.
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
        let ctx = cx.context(&auth.0);
        let (user, id) = (
            cx.param(user_id.0.user_id())?,
            cx.param(card_id.0.card_id())?,
        );
        cx.answer(cx.usecases().freeze(&ctx, &user, &id))
            .await
            .map(|v| CardResponse::Ok(Json(Card::from(&v))))
    }

    /// Unfreeze a card
    ///
    /// A `frozen` card becomes `active` again (operators only); a card
    /// unbound (or failed) while frozen stays as it is, its hold lifted, so
    /// that it can be bound again.
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
        let ctx = cx.context(&auth.0);
        let (user, id) = (
            cx.param(user_id.0.user_id())?,
            cx.param(card_id.0.card_id())?,
        );
        cx.answer(cx.usecases().unfreeze(&ctx, &user, &id))
            .await
            .map(|v| CardResponse::Ok(Json(Card::from(&v))))
    }

    /// List bindings waiting for review
    ///
    /// Bindings whose channel could not be reached or could not take them
    /// (`pending_review`), by card id.
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
        let ctx = cx.context(&auth.0);
        let after = cx.param(after.0.map(|a| a.card_id()).transpose())?;
        let limit = limit.0.unwrap_or(DEFAULT_LIMIT);
        cx.answer(cx.usecases().list_reviews(&ctx, after, limit))
            .await
            .map(|p| CardListResponse::Ok(Json(CardList::from(&p))))
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
        let ctx = cx.context(&auth.0);
        let id = cx.param(card_id.0.card_id())?;
        let channel_ref = body.0.channel_ref;
        cx.answer(cx.usecases().approve_review(&ctx, &id, channel_ref))
            .await
            .map(|v| CardResponse::Ok(Json(Card::from(&v))))
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
        let ctx = cx.context(&auth.0);
        let id = cx.param(card_id.0.card_id())?;
        cx.answer(cx.usecases().reject_review(&ctx, &id))
            .await
            .map(|v| CardResponse::Ok(Json(Card::from(&v))))
    }

    /// Retry a binding in review at its channel
    ///
    /// For when the channel is back (or its configuration fixed): the card
    /// data is opened from its sealed fields (each opening audited) and
    /// sent to the channel again; the answer is as for a new bind
    /// (`active`, `pending_verification` with `next_action`, or
    /// `pending_review` again). Sealed data that does not open is 409
    /// `card_data_unreadable` and the binding stays in review.
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
        let ctx = cx.context(&auth.0);
        let id = cx.param(card_id.0.card_id())?;
        cx.answer(cx.usecases().retry_review(&ctx, &id))
            .await
            .map(|v| CardResponse::Ok(Json(Card::from(&v))))
    }

    /// Erase a user
    ///
    /// Unbinds every card, deletes the card data and destroys the user's
    /// key material, which makes what may remain of their card data
    /// anywhere unreadable (crypto-shredding). Audited. When the service
    /// enables step-up, needs `X-Step-Up-Token` (403 `step_up_required`
    /// otherwise).
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
        let ctx = cx.context(&auth.0);
        let user = cx.param(user_id.0.user_id())?;
        let token = step_up_token.0.as_deref();
        cx.answer(cx.usecases().erase_user(&ctx, &user, token))
            .await
            .map(|r| {
                ErasureResponse::Ok(Json(ErasureResult {
                    user_id: user.as_str().to_owned(),
                    unbound_cards: r.unbound,
                    key_destroyed: r.key_destroyed,
                }))
            })
    }
}
