//! What the service keeps about what happened: audit events, consents;
//! and small answers.

use cardbind_ports::audit::AuditRecord;
use cardbind_usecases::records::ConsentEntry;
use poem_openapi::Object;

use super::DateTime;

/// What erasing a user did.
#[derive(Object, Clone, Debug)]
pub struct ErasureResult {
    pub user_id: String,
    /// Cards unbound by the erasure.
    pub unbound_cards: u64,
    /// Whether the user had key material, now destroyed.
    pub key_destroyed: bool,
}

/// One audit event, in the link of its chain that holds it.
#[derive(Object, Clone, Debug)]
pub struct AuditEventDto {
    /// Where the event sits: pass as `after` to list what follows.
    pub cursor: String,
    /// Whose chain: a user id, or `@system` for events about no user.
    pub chain: String,
    /// The link's number in its chain: 1, 2, 3, … without gaps.
    pub seq: u64,
    /// The event's place in its link (0, 1, …).
    pub index: u32,
    pub at: DateTime,
    /// Token subject, or `system`, `channel:NAME`, `reconcile`, … for the
    /// service itself.
    pub actor: String,
    /// The caller's role, or `system`.
    pub role: String,
    /// e.g. `binding.create`, `binding.freeze`, `card_data.open`.
    pub action: String,
    #[oai(skip_serializing_if_is_none)]
    pub user_id: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub card_id: Option<String>,
    /// `ok` or an error code.
    pub outcome: String,
    #[oai(skip_serializing_if_is_none)]
    pub request_id: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub client_ip: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub detail: Option<String>,
    /// SHA-256 (hex) of the link that holds the event (`cardbind audit
    /// verify` checks every link against its predecessor).
    pub link_hash: String,
}

impl From<&AuditRecord> for AuditEventDto {
    fn from(r: &AuditRecord) -> AuditEventDto {
        let e = &r.event;
        AuditEventDto {
            cursor: crate::http::formats::encode_cursor(&r.cursor),
            chain: r.cursor.chain.as_str().to_owned(),
            seq: r.cursor.seq,
            index: r.cursor.index,
            at: e.at.into(),
            actor: e.actor.subject.clone(),
            role: e.actor.role_str().to_owned(),
            action: e.action.as_str().to_owned(),
            user_id: e.user_id.as_ref().map(|u| u.as_str().to_owned()),
            card_id: e.binding_id.as_ref().map(|b| b.as_str().to_owned()),
            outcome: e.outcome.as_str().to_owned(),
            request_id: e.request_id.clone(),
            client_ip: e.client_ip.clone(),
            detail: e.detail.clone(),
            link_hash: r.link_hash.clone(),
        }
    }
}

/// One page of audit events.
#[derive(Object, Clone, Debug)]
pub struct AuditEventList {
    pub events: Vec<AuditEventDto>,
    /// Pass as `after` for the next page. Absent when this page holds fewer
    /// than `limit` items; a full page carries it even when it is the last,
    /// and the page after that is empty.
    #[oai(skip_serializing_if_is_none)]
    pub next_after: Option<String>,
}

/// A recorded consent.
#[derive(Object, Clone, Debug)]
pub struct ConsentDto {
    /// `{card_id}:{n}`: the consent of the n-th bind of that card; for a
    /// family share, `{share_id}:1`.
    pub id: String,
    /// The card: the user's own (a bind, or a share they gave), or, for a
    /// share made to them, the shared card's id in their list (the share
    /// id).
    pub card_id: String,
    /// The family share this consent is about: to share the card (given by
    /// its holder) or to use it (given by the user it was shared with).
    #[oai(skip_serializing_if_is_none)]
    pub share_id: Option<String>,
    pub user_id: String,
    pub text_version: String,
    pub text_sha256: String,
    pub accepted_at: DateTime,
    #[oai(skip_serializing_if_is_none)]
    pub ip: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub user_agent: Option<String>,
    pub channel: String,
    /// The channel's agreement id, once signed.
    #[oai(skip_serializing_if_is_none)]
    pub agreement_id: Option<String>,
    /// When the consent stopped being in force: the card's unbind, or the
    /// failure of the bind it was given for.
    #[oai(skip_serializing_if_is_none)]
    pub revoked_at: Option<DateTime>,
    /// Who ended it: the unbinding token's subject, `channel:NAME` (the
    /// channel ended the agreement), or `failed:` and the card's
    /// `failure_code` (its bind failed).
    #[oai(skip_serializing_if_is_none)]
    pub revoked_by: Option<String>,
}

impl From<&ConsentEntry> for ConsentDto {
    fn from(e: &ConsentEntry) -> ConsentDto {
        let c = &e.consent;
        ConsentDto {
            id: e.id.clone(),
            card_id: e.binding.as_str().to_owned(),
            share_id: e.share.as_ref().map(|s| s.as_str().to_owned()),
            user_id: e.user.as_str().to_owned(),
            text_version: c.text_version.clone(),
            text_sha256: c.text_hash.clone(),
            accepted_at: c.accepted_at.into(),
            ip: c.ip.clone(),
            user_agent: c.user_agent.clone(),
            channel: c.channel.as_str().to_owned(),
            agreement_id: c.agreement_id.clone(),
            revoked_at: c.revoked_at.map(DateTime::from),
            revoked_by: c.revoked_by.clone(),
        }
    }
}

/// One page of consents.
#[derive(Object, Clone, Debug)]
pub struct ConsentList {
    pub consents: Vec<ConsentDto>,
    /// Pass as `after` for the next page. Absent when this page holds fewer
    /// than `limit` items; a full page carries it even when it is the last,
    /// and the page after that is empty.
    #[oai(skip_serializing_if_is_none)]
    pub next_after: Option<String>,
}

/// Liveness / readiness answer.
#[derive(Object, Clone, Debug)]
pub struct Health {
    /// `ok`.
    pub status: String,
}
