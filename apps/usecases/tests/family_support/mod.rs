//! What the family tests share: consents, forms, a user's list.

use crate::support::*;
use cardbind_domain::{Actor, BindingId, ConsentGiven, Role, Timestamp};
use cardbind_ports::audit::{AuditAction, AuditFilter, AuditLog};
use cardbind_usecases::family::ShareForm;
use cardbind_usecases::manage::CardQuery;
use cardbind_usecases::{Listed, RequestContext};

pub const DAY: i64 = 86_400;

pub fn consent() -> ConsentGiven {
    ConsentGiven {
        text_version: "family-2026-01".into(),
        text_hash: "ef".repeat(32),
        ip: Some("198.51.100.7".into()),
        user_agent: Some("app/2.0".into()),
    }
}

pub fn as_user(u: &str) -> RequestContext {
    RequestContext::new(Actor::new(u, Role::User), "req-u", None)
}

pub async fn active_card(w: &World, u: &str, n: u32) -> BindingId {
    let v =
        w.uc.bind_card(&backend(), bind_cmd(u, &visa(n), w.now()))
            .await
            .unwrap();
    v.binding.id.clone()
}

pub fn form(
    primary: &str,
    card: &BindingId,
    to: &str,
    amount: i64,
    days: i64,
    now: Timestamp,
) -> ShareForm {
    ShareForm {
        user: user(primary),
        card: card.clone(),
        secondary: to.into(),
        amount,
        currency: "CNY".into(),
        expires_at: now.plus_seconds(days * DAY),
        consent: consent(),
    }
}

pub async fn actions(
    w: &World,
    u: &str,
    action: AuditAction,
) -> Vec<cardbind_ports::audit::AuditEvent> {
    let f = AuditFilter {
        user_id: Some(user(u)),
        action: Some(action),
        ..Default::default()
    };
    w.store
        .list(&f, None, 500)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .collect()
}

pub async fn list(w: &World, ctx: &RequestContext, u: &str) -> Vec<Listed> {
    w.uc.list_cards(ctx, &user(u), CardQuery::page(None, 100))
        .await
        .unwrap()
        .cards
}

pub fn shared_ids(cards: &[Listed]) -> Vec<BindingId> {
    cards
        .iter()
        .filter(|c| matches!(c, Listed::Shared(_)))
        .map(Listed::id)
        .collect()
}

pub fn default_of(cards: &[Listed]) -> Vec<BindingId> {
    cards
        .iter()
        .filter(|c| c.is_default())
        .map(Listed::id)
        .collect()
}
