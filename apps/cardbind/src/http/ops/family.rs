//! Family cards (主卡/副卡): a user shares one of their active cards with
//! another user, who accepts it and then finds it among their cards.

use poem_openapi::param::{Header, Path};
use poem_openapi::payload::Json;
use poem_openapi::OpenApi;

use super::*;
use crate::http::auth::BearerAuth;
use crate::http::body::JsonBody;
use crate::http::idempotency::idempotent;
use crate::http::params::{IdParam, IdempotencyKeyParam, UserIdParam};
use crate::http::Cx;

pub struct FamilyApi;

#[OpenApi(tag = "ApiTags::Family")]
impl FamilyApi {
    /// Share a card with another user
    ///
    /// The card's holder (or a backend acting for them) shares one of
    /// their `active` cards with another user (a family member), with a
    /// monthly limit and an expiry, and their consent. The other user sees
    /// an invitation (`listSharedCards`) and, once they accept
    /// (`acceptShare`), the card in their list, marked `shared`. One live
    /// share per (card, user): the same share again answers `200` with it;
    /// other terms are `409 card_already_shared` (revoke first). Requires
    /// an `Idempotency-Key`, as binds do: a share grants use of a card, so
    /// a late retry must replay its first answer rather than share again a
    /// card revoked meanwhile. The monthly limit is recorded, not enforced
    /// here: whoever takes payments with the card enforces it.
    #[oai(
        path = "/v1/users/:user_id/cards/:card_id/shares",
        method = "post",
        operation_id = "shareCard",
        transform = "idempotent",
        response_header(
            name = "Idempotent-Replayed",
            ty = "Option<bool>",
            description = "`true` when this is the stored response of an earlier request with the same key."
        )
    )]
    async fn share_card(
        &self,
        cx: Cx,
        auth: BearerAuth,
        /// The card's holder.
        user_id: Path<UserIdParam>,
        card_id: Path<IdParam>,
        /// A unique key per share request (1–255 printable ASCII), kept at
        /// least 24 hours. Retries of the same request reuse it.
        #[oai(name = "Idempotency-Key")]
        _idempotency_key: Header<IdempotencyKeyParam>,
        body: JsonBody<ShareCardBody>,
    ) -> Result<ShareResponse, ShareCardError> {
        let ctx = cx.context(&auth.0);
        let (user, card) = (
            cx.param(user_id.0.user_id())?,
            cx.param(card_id.0.card_id())?,
        );
        let form =
            cx.param(
                body.0
                    .into_form(user, card, cx.client_ip.clone(), cx.user_agent.clone()),
            )?;
        cx.answer(cx.usecases().share_card(&ctx, form))
            .await
            .map(|s| {
                let dto = Json(ShareDto::from(&s.view));
                if s.created {
                    ShareResponse::Created(dto)
                } else {
                    ShareResponse::Ok(dto)
                }
            })
    }

    /// List a card's shares
    ///
    /// For the card's holder: its live shares and the most recent ended
    /// ones (revoked, expired), newest first, with their status.
    #[oai(
        path = "/v1/users/:user_id/cards/:card_id/shares",
        method = "get",
        operation_id = "listCardShares"
    )]
    async fn list_card_shares(
        &self,
        cx: Cx,
        auth: BearerAuth,
        user_id: Path<UserIdParam>,
        card_id: Path<IdParam>,
    ) -> Result<ShareListResponse, ReadError> {
        let ctx = cx.context(&auth.0);
        let (user, card) = (
            cx.param(user_id.0.user_id())?,
            cx.param(card_id.0.card_id())?,
        );
        cx.answer(cx.usecases().list_card_shares(&ctx, &user, &card))
            .await
            .map(|v| {
                ShareListResponse::Ok(Json(ShareList {
                    shares: v.iter().map(ShareDto::from).collect(),
                }))
            })
    }

    /// Revoke a share
    ///
    /// The card's holder (or an operator) ends a share at once: the other
    /// user no longer sees or uses the card. Revoking an ended share
    /// changes nothing. Unbinding the card, freezing it (while frozen) or
    /// erasing either user has the same effect.
    #[oai(
        path = "/v1/users/:user_id/cards/:card_id/shares/:share_id",
        method = "delete",
        operation_id = "revokeShare"
    )]
    async fn revoke_share(
        &self,
        cx: Cx,
        auth: BearerAuth,
        user_id: Path<UserIdParam>,
        card_id: Path<IdParam>,
        share_id: Path<IdParam>,
    ) -> Result<ShareOneResponse, EndShareError> {
        let ctx = cx.context(&auth.0);
        let (user, card, share) = (
            cx.param(user_id.0.user_id())?,
            cx.param(card_id.0.card_id())?,
            cx.param(share_id.0.share_id())?,
        );
        cx.answer(cx.usecases().revoke_share(&ctx, &user, &card, &share))
            .await
            .map(|v| ShareOneResponse::Ok(Json(ShareDto::from(&v))))
    }

    /// List the cards shared with a user
    ///
    /// Invitations the user may accept (`invited`) and the shared cards
    /// they may use now (`accepted`, also in their card list). A share its
    /// holder revoked, froze, unbound or let expire is not listed.
    #[oai(
        path = "/v1/users/:user_id/shared-cards",
        method = "get",
        operation_id = "listSharedCards"
    )]
    async fn list_shared_cards(
        &self,
        cx: Cx,
        auth: BearerAuth,
        user_id: Path<UserIdParam>,
    ) -> Result<SharedCardListResponse, ListError> {
        let ctx = cx.context(&auth.0);
        let user = cx.param(user_id.0.user_id())?;
        cx.answer(cx.usecases().list_shared_cards(&ctx, &user))
            .await
            .map(|v| {
                SharedCardListResponse::Ok(Json(SharedCardList {
                    shared_cards: v.iter().map(SharedCardDto::from).collect(),
                }))
            })
    }

    /// Accept a share
    ///
    /// The user a card was shared with accepts it, with their consent; the
    /// card then appears in their list (marked `shared`) and may become
    /// their default. Accepting twice changes nothing. A share that was
    /// revoked or expired is `409 share_ended`; one whose card is frozen
    /// at the moment is `409 invalid_state_transition`.
    #[oai(
        path = "/v1/users/:user_id/shared-cards/:share_id/accept",
        method = "post",
        operation_id = "acceptShare"
    )]
    async fn accept_share(
        &self,
        cx: Cx,
        auth: BearerAuth,
        /// The user the card was shared with.
        user_id: Path<UserIdParam>,
        share_id: Path<IdParam>,
        body: JsonBody<AcceptShareBody>,
    ) -> Result<SharedCardResponse, AcceptShareError> {
        let ctx = cx.context(&auth.0);
        let (user, share) = (
            cx.param(user_id.0.user_id())?,
            cx.param(share_id.0.share_id())?,
        );
        let consent = body
            .0
            .consent
            .into_given(cx.client_ip.clone(), cx.user_agent.clone());
        cx.answer(cx.usecases().accept_share(&ctx, &user, &share, consent))
            .await
            .map(|v| SharedCardResponse::Ok(Json(SharedCardDto::from(&v))))
    }

    /// Decline or leave a share
    ///
    /// The user a card was shared with declines the invitation or stops
    /// using the card (an operator may do it for them). The share ends for
    /// both users at once. Leaving twice changes nothing.
    #[oai(
        path = "/v1/users/:user_id/shared-cards/:share_id",
        method = "delete",
        operation_id = "leaveShare"
    )]
    async fn leave_share(
        &self,
        cx: Cx,
        auth: BearerAuth,
        user_id: Path<UserIdParam>,
        share_id: Path<IdParam>,
    ) -> Result<SharedCardResponse, EndShareError> {
        let ctx = cx.context(&auth.0);
        let (user, share) = (
            cx.param(user_id.0.user_id())?,
            cx.param(share_id.0.share_id())?,
        );
        cx.answer(cx.usecases().leave_share(&ctx, &user, &share))
            .await
            .map(|v| SharedCardResponse::Ok(Json(SharedCardDto::from(&v))))
    }
}
