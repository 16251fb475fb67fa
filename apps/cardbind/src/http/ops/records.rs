//! Auditors: the audit log and consent records.

use cardbind_domain::{BadRequestCode, Invalid};
use cardbind_ports::audit::AuditFilter;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::OpenApi;

use super::*;
use crate::http::auth::BearerAuth;
use crate::http::formats::{decode_cursor, encode_cursor, parse_rfc3339};
use crate::http::params::{ActionParam, CursorParam, DateTimeParam, IdParam, UserIdParam};
use crate::http::Cx;

pub struct AuditApi;

fn instant(
    name: &'static str,
    v: Option<DateTimeParam>,
) -> Result<Option<cardbind_domain::Timestamp>, Invalid> {
    v.map(|s| {
        parse_rfc3339(&s).ok_or_else(|| {
            Invalid::field(
                BadRequestCode::InvalidRequest,
                name,
                "an RFC 3339 date-time",
            )
        })
    })
    .transpose()
}

fn cursor(v: Option<CursorParam>) -> Result<Option<cardbind_ports::audit::AuditCursor>, Invalid> {
    v.map(|c| {
        decode_cursor(&c).ok_or_else(|| {
            Invalid::field(
                BadRequestCode::InvalidRequest,
                "after",
                "`after` is not a cursor from a previous page",
            )
        })
    })
    .transpose()
}

#[OpenApi(tag = "ApiTags::Audit")]
impl AuditApi {
    /// Read the audit log
    ///
    /// Events in time order, filtered (auditors only). Each is held by a
    /// link of its chain (a user's, or the service's `@system`), and each
    /// link holds the hash of the one before, so that a gap or an edit
    /// shows (`cardbind audit verify`).
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
        /// Only events after this one (the previous page's `next_after`).
        after: Query<Option<CursorParam>>,
        /// Page size, 1–500 (default 100).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
    ) -> Result<AuditResponse, ListError> {
        let ctx = cx.context(&auth.0);
        let filter = AuditFilter {
            user_id: cx.param(user_id.0.map(|u| u.user_id()).transpose())?,
            binding_id: cx.param(card_id.0.map(|c| c.card_id()).transpose())?,
            action: action.0.map(|a| a.0),
            since: cx.param(instant("since", since.0))?,
            until: cx.param(instant("until", until.0))?,
        };
        let after = cx.param(cursor(after.0))?;
        let limit = limit.0.unwrap_or(100).clamp(1, 500);
        let records = cx
            .answer(cx.usecases().read_audit(&ctx, &filter, after, limit))
            .await?;
        let next = (records.len() as u32 >= limit)
            .then(|| records.last().map(|r| encode_cursor(&r.cursor)))
            .flatten();
        Ok(AuditResponse::Ok(Json(AuditEventList {
            events: records.iter().map(AuditEventDto::from).collect(),
            next_after: next,
        })))
    }

    /// List a user's consents
    ///
    /// One per bind of each card (a card bound again has a consent for
    /// each bind), with its agreement and its end, as the user's wallet
    /// holds them: those of a card's 20 newest binds, for its live cards
    /// and the 20 that ended most recently. Every consent is also in its
    /// bind's audit event (`binding.create` / `binding.rebind`) for the
    /// audit retention. Auditors read any user's; a `service` or `user`
    /// caller the user it acts for; operators (`admin`) none (they act on
    /// cards, auditors read the records).
    #[oai(path = "/v1/consents", method = "get", operation_id = "listConsents")]
    async fn list_consents(
        &self,
        cx: Cx,
        auth: BearerAuth,
        /// The user whose consents to list.
        user_id: Query<UserIdParam>,
        /// The last consent id of the previous page.
        after: Query<Option<IdParam>>,
        /// Page size, 1–100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<u32>>,
    ) -> Result<ConsentResponse, ListError> {
        let ctx = cx.context(&auth.0);
        let user = cx.param(user_id.0.user_id())?;
        let limit = limit.0.unwrap_or(DEFAULT_LIMIT).clamp(1, 100);
        let after = after.0.map(|a| a.as_str().to_owned());
        let consents = cx
            .answer(cx.usecases().list_consents(&ctx, &user, after, limit))
            .await?;
        let next = (consents.len() as u32 >= limit)
            .then(|| consents.last().map(|c| c.id.clone()))
            .flatten();
        Ok(ConsentResponse::Ok(Json(ConsentList {
            consents: consents.iter().map(ConsentDto::from).collect(),
            next_after: next,
        })))
    }
}
