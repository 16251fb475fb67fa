//! Bind, verify, read and manage a user's cards.

use cardbind_domain::BindingStatus;
use cardbind_usecases::verify::{Otp, VerifyCard, VerifyError};
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::OpenApi;

use super::*;
use crate::http::auth::BearerAuth;
use crate::http::body::JsonBody;
use crate::http::idempotency::idempotent;
use crate::http::params::{CurrencyParam, IdParam, IdempotencyKeyParam, UserIdParam};
use crate::http::Cx;

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
    /// per user per minute (`rate_limited`, with `Retry-After`). A card
    /// whose earlier bind was interrupted before its channel answered is
    /// resumed (not refused as already bound) once that bind is 30 s old,
    /// through the channel that bind named; before that, or through
    /// another channel, the answer is 409 `conflict` (retry).
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
        let ctx = cx.context(&auth.0);
        let user = cx.param(user_id.0.user_id())?;
        let mut form = body
            .0
            .into_form(user, cx.client_ip.clone(), cx.user_agent.clone());
        form.bind_key = cx.bind_key.clone();
        let answer = cx.answer(cx.usecases().bind(&ctx, form)).await;
        let metrics = &cx.shared.metrics;
        match answer {
            Ok(view) => {
                metrics.bind_outcome(view.binding.status.as_str());
                let card = Json(Card::from(&view));
                Ok(if view.binding.status == BindingStatus::PendingReview {
                    BindCardResponse::Accepted(card)
                } else {
                    BindCardResponse::Created(card)
                })
            }
            // The refusal is counted in `cardbind_binds_total` by the edge,
            // with the refusals of the layers before this handler.
            Err(e) => {
                if let Some(code) = cx.refused_with() {
                    metrics.rate_limit_hit(code);
                }
                Err(e)
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
        let ctx = cx.context(&auth.0);
        let (user, card) = (
            cx.param(user_id.0.user_id())?,
            cx.param(card_id.0.card_id())?,
        );
        cx.answer(async {
            let otp = Otp::parse(&body.0.otp).map_err(VerifyError::from)?;
            let cmd = VerifyCard { user, card, otp };
            cx.usecases().verify(&ctx, cmd).await
        })
        .await
        .map(|v| CardResponse::Ok(Json(Card::from(&v))))
    }

    /// List a user's cards
    ///
    /// In id order (ids are time-ordered), `limit` per page (1–100, default
    /// 20); pass `next_after` as `after` for the next page. Cards other
    /// users share with this user (family cards, marked `shared`) come
    /// after their own, while they may use them. `currency` keeps only the
    /// cards in that currency.
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
        /// Only cards in this currency (ISO 4217 alpha-3, e.g. `CNY`), as
        /// the BIN table gave it when the card was bound; cards whose
        /// currency is not known are left out. A code that names no
        /// currency is `400 invalid_currency`.
        currency: Query<Option<CurrencyParam>>,
    ) -> Result<CardListResponse, ListError> {
        let ctx = cx.context(&auth.0);
        let user = cx.param(user_id.0.user_id())?;
        let after = cx.param(after.0.map(|a| a.card_id()).transpose())?;
        let currency = cx.param(currency.0.map(|c| c.currency()).transpose())?;
        let query = cardbind_usecases::manage::CardQuery {
            after,
            limit: limit.0.unwrap_or(DEFAULT_LIMIT),
            currency,
        };
        cx.answer(cx.usecases().list_cards(&ctx, &user, query))
            .await
            .map(|p| CardListResponse::Ok(Json(CardList::from(&p))))
    }

    /// Get a card
    ///
    /// One of the user's own cards, or a card shared with them that they
    /// may use now (by its share id).
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
        let ctx = cx.context(&auth.0);
        let (user, id) = (
            cx.param(user_id.0.user_id())?,
            cx.param(card_id.0.card_id())?,
        );
        cx.answer(cx.usecases().get_card(&ctx, &user, &id))
            .await
            .map(|v| CardResponse::Ok(Json(Card::from(&v))))
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
        let ctx = cx.context(&auth.0);
        let (user, id) = (
            cx.param(user_id.0.user_id())?,
            cx.param(card_id.0.card_id())?,
        );
        let token = step_up_token.0.as_deref();
        cx.answer(cx.usecases().unbind(&ctx, &user, &id, token))
            .await
            .map(|v| CardResponse::Ok(Json(Card::from(&v))))
    }

    /// Make a card the default
    ///
    /// Only an `active` card can be the default (`invalid_state_transition`
    /// otherwise); a user has at most one. A card shared with the user (by
    /// its share id) can be, once accepted; while its holder's card is
    /// frozen, or once the share ends, the user's own card chosen by the
    /// promotion rule is the default instead. When the service enables
    /// step-up, moving the default off the user's current default card
    /// needs `X-Step-Up-Token` (403 `step_up_required` otherwise).
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
        /// Step-up token for action `change_default_card` on this user.
        /// Required, when the service enables step-up and the user has a
        /// default card, to make another card the default; missing or
        /// invalid is 403 `step_up_required`.
        #[oai(name = "X-Step-Up-Token")]
        step_up_token: Header<Option<String>>,
    ) -> Result<CardResponse, ChangeError> {
        let ctx = cx.context(&auth.0);
        let (user, id) = (
            cx.param(user_id.0.user_id())?,
            cx.param(card_id.0.card_id())?,
        );
        let token = step_up_token.0.as_deref();
        cx.answer(cx.usecases().set_default(&ctx, &user, &id, token))
            .await
            .map(|v| CardResponse::Ok(Json(Card::from(&v))))
    }
}
