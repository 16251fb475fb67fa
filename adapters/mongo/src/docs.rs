//! Storage documents: the shapes kept in MongoDB, apart from the domain
//! types, and the conversions both ways. Nothing here leaves the crate.

use cardbind_domain::{
    Binding, BindingId, BindingParts, BindingStatus, CardBrand, CardSummary, ChannelName, Expiry,
    Fingerprint, NextAction, SealedBlob, SealedCard, Timestamp, UserId,
};
use cardbind_ports::audit::{AuditEvent, AuditRecord};
use cardbind_ports::store::{Consent, StoredResponse, WrappedKey};
use cardbind_ports::StoreError;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{Binary, DateTime};
use serde::{Deserialize, Serialize};

pub(crate) fn dt(t: Timestamp) -> DateTime {
    DateTime::from_millis(t.unix_millis())
}

pub(crate) fn ts(d: DateTime) -> Timestamp {
    Timestamp::from_unix_millis(d.timestamp_millis())
}

pub(crate) fn bin(bytes: &[u8]) -> Binary {
    Binary {
        subtype: BinarySubtype::Generic,
        bytes: bytes.to_vec(),
    }
}

pub(crate) fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {detail}"))
}

/// BSON has no unsigned 64-bit integer: counters are kept as `i64`.
pub(crate) fn to_i64(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| corrupt(what, "does not fit in a signed 64-bit integer"))
}

pub(crate) fn to_u64(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| corrupt(what, "is negative"))
}

/// `{base}#{n}`: the `_id` of the n-th link of a chain of immutable
/// documents. Unambiguous for any `base`, since `n` is the digits after the
/// last `#`.
pub(crate) fn link_id(base: &str, n: i64) -> String {
    format!("{base}#{n}")
}

/// An unambiguous join of two free strings: `{len(a)}:{a}:{b}`.
pub(crate) fn pair_key(a: &str, b: &str) -> String {
    format!("{}:{a}:{b}", a.len())
}

/// The `_id` of audit record `seq`: its decimal digits, zero-padded to 20
/// so that string order is numeric order. A string (not the number) so
/// that reading one record by `_id` is a point read on FerretDB, which
/// pushes down only string `_id` equality.
pub(crate) fn audit_id(seq: i64) -> String {
    format!("{seq:020}")
}

// ---------------------------------------------------------------- bindings

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct CardDoc {
    pub brand: String,
    pub bin: String,
    pub last4: String,
    pub exp_month: i32,
    pub exp_year: i32,
}

/// Sealed card fields, as opaque binary. The CVV is never among them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SealedDoc {
    pub pan: Binary,
    pub holder_name: Binary,
    pub id_number: Binary,
    pub phone: Binary,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum NextActionDoc {
    Otp { phone_hint: String },
    Redirect { url: String },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct BindingDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub user_id: String,
    pub fingerprint: String,
    pub card: CardDoc,
    pub sealed: SealedDoc,
    pub channel: String,
    pub channel_ref: Option<String>,
    pub next_action: Option<NextActionDoc>,
    pub status: String,
    pub failure_code: Option<String>,
    pub otp_attempts: i64,
    pub verification_expires_at: Option<DateTime>,
    pub version: i64,
    pub created_at: DateTime,
    pub updated_at: DateTime,
    pub activated_at: Option<DateTime>,
}

impl BindingDoc {
    pub fn from_domain(b: &Binding) -> Result<BindingDoc, StoreError> {
        Ok(BindingDoc {
            id: b.id.as_str().to_owned(),
            user_id: b.user_id.as_str().to_owned(),
            fingerprint: b.fingerprint.to_string(),
            card: CardDoc {
                brand: b.card.brand.as_str().to_owned(),
                bin: b.card.bin.clone(),
                last4: b.card.last4.clone(),
                exp_month: i32::try_from(b.card.expiry.month())
                    .map_err(|_| corrupt("expiry month", "out of range"))?,
                exp_year: b.card.expiry.year(),
            },
            sealed: SealedDoc {
                pan: bin(b.sealed.pan.as_bytes()),
                holder_name: bin(b.sealed.holder_name.as_bytes()),
                id_number: bin(b.sealed.id_number.as_bytes()),
                phone: bin(b.sealed.phone.as_bytes()),
            },
            channel: b.channel.as_str().to_owned(),
            channel_ref: b.channel_ref.clone(),
            next_action: b.next_action.as_ref().map(|a| match a {
                NextAction::Otp { phone_hint } => NextActionDoc::Otp {
                    phone_hint: phone_hint.clone(),
                },
                NextAction::Redirect { url } => NextActionDoc::Redirect { url: url.clone() },
            }),
            status: b.status.as_str().to_owned(),
            failure_code: b.failure_code.clone(),
            otp_attempts: i64::from(b.otp_attempts),
            verification_expires_at: b.verification_expires_at.map(dt),
            version: to_i64(b.version, "binding version")?,
            created_at: dt(b.created_at),
            updated_at: dt(b.updated_at),
            activated_at: b.activated_at.map(dt),
        })
    }

    pub fn into_domain(self) -> Result<Binding, StoreError> {
        let id = self.id.clone();
        let bad = |field: &str| corrupt(&format!("binding {id}"), format!("bad {field}"));
        let card = CardSummary {
            brand: CardBrand::parse(&self.card.brand).ok_or_else(|| bad("card.brand"))?,
            bin: self.card.bin,
            last4: self.card.last4,
            expiry: u32::try_from(self.card.exp_month)
                .ok()
                .and_then(|m| Expiry::restore(m, self.card.exp_year))
                .ok_or_else(|| bad("card expiry"))?,
        };
        Ok(Binding::restore(BindingParts {
            id: BindingId::parse(&self.id).map_err(|_| bad("_id"))?,
            user_id: UserId::parse(&self.user_id).map_err(|_| bad("user_id"))?,
            fingerprint: Fingerprint::parse(&self.fingerprint).ok_or_else(|| bad("fingerprint"))?,
            card,
            sealed: SealedCard {
                pan: SealedBlob::new(self.sealed.pan.bytes),
                holder_name: SealedBlob::new(self.sealed.holder_name.bytes),
                id_number: SealedBlob::new(self.sealed.id_number.bytes),
                phone: SealedBlob::new(self.sealed.phone.bytes),
            },
            channel: ChannelName::parse(&self.channel).map_err(|_| bad("channel"))?,
            channel_ref: self.channel_ref,
            next_action: self.next_action.map(|a| match a {
                NextActionDoc::Otp { phone_hint } => NextAction::Otp { phone_hint },
                NextActionDoc::Redirect { url } => NextAction::Redirect { url },
            }),
            status: BindingStatus::parse(&self.status).ok_or_else(|| bad("status"))?,
            failure_code: self.failure_code,
            otp_attempts: u32::try_from(self.otp_attempts).map_err(|_| bad("otp_attempts"))?,
            verification_expires_at: self.verification_expires_at.map(ts),
            version: u64::try_from(self.version).map_err(|_| bad("version"))?,
            created_at: ts(self.created_at),
            updated_at: ts(self.updated_at),
            activated_at: self.activated_at.map(ts),
        }))
    }
}

/// A committed change of one binding (`binding_changes`): the successor of
/// version `from_version`, written before the binding document itself.
/// `_id` = `{binding_id}#{from_version}`, so each version has at most one
/// successor.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct BindingChangeDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub binding_id: String,
    pub from_version: i64,
    pub binding: BindingDoc,
    pub written_at: DateTime,
}

/// The one binding of a (user, card) (`binding_keys`), `_id` =
/// `pair_key(user_id, fingerprint)`: the commit point of a new binding,
/// carrying the whole first version so that any reader can write it to
/// `bindings` if its inserter stopped before doing so.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct BindingKeyDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub binding_id: String,
    pub binding: BindingDoc,
    pub written_at: DateTime,
}

/// The n-th binding of a user (`user_bindings`), `_id` = `{user_id}#{n}`,
/// n from 0: how `list_by_user` finds a user's records by point reads.
/// Never deleted; may name a binding that was never committed (a lost
/// race), which readers skip.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct UserBindingDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub user_id: String,
    pub n: i64,
    pub binding_id: String,
    pub fingerprint: String,
}

/// One value of a user's default pointer (`user_defaults`), `_id` =
/// `{user_id}#{seq}`; the highest `seq` is the current value.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct DefaultDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub user_id: String,
    pub seq: i64,
    pub binding_id: Option<String>,
    pub written_at: DateTime,
}

// ------------------------------------------------------------- idempotency

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ResponseDoc {
    pub status: i32,
    pub content_type: String,
    pub body: Binary,
}

impl ResponseDoc {
    pub fn from_domain(r: &StoredResponse) -> ResponseDoc {
        ResponseDoc {
            status: i32::from(r.status),
            content_type: r.content_type.clone(),
            body: bin(&r.body),
        }
    }

    pub fn into_domain(self) -> Result<StoredResponse, StoreError> {
        Ok(StoredResponse {
            status: u16::try_from(self.status)
                .map_err(|_| corrupt("stored response", "bad status"))?,
            content_type: self.content_type,
            body: self.body.bytes,
        })
    }
}

pub(crate) const PENDING: &str = "pending";
pub(crate) const COMPLETED: &str = "completed";

/// One attempt at an idempotency key (`idempotency`), `_id` =
/// `{base}#{attempt}`; the highest attempt is the key's state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct IdemDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub base: String,
    pub attempt: i64,
    pub request_hash: String,
    pub state: String,
    pub lease_until: DateTime,
    pub created_at: DateTime,
    pub response: Option<ResponseDoc>,
}

// ------------------------------------------------------------ rate limits

/// The n-th event of a rate counter (`rate_limits`), `_id` = `{key}#{n}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct RateDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub key: String,
    pub n: i64,
    pub expires_at: DateTime,
}

// --------------------------------------------------------------- consents

/// A consent as accepted (`consents`). Only `agreement_id` ever changes;
/// revocation lives in `consent_revocations`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ConsentDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub binding_id: String,
    pub user_id: String,
    pub text_version: String,
    pub text_hash: String,
    pub accepted_at: DateTime,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub channel: String,
    pub agreement_id: Option<String>,
}

/// The n-th consent recorded for a binding (`consent_links`), `_id` =
/// `{binding_id}#{n}`, n from 0, written before the consent itself. Never
/// deleted; readers skip links whose consent does not exist or belongs to
/// another binding.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ConsentLinkDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub binding_id: String,
    pub n: i64,
    pub consent_id: String,
}

/// The revocation of one consent (`consent_revocations`), `_id` = the
/// consent id: at most one per consent.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct RevocationDoc {
    #[serde(rename = "_id")]
    pub consent_id: String,
    pub binding_id: String,
    pub at: DateTime,
    pub by: String,
}

impl ConsentDoc {
    pub fn from_domain(c: &Consent) -> ConsentDoc {
        ConsentDoc {
            id: c.id.clone(),
            binding_id: c.binding_id.as_str().to_owned(),
            user_id: c.user_id.as_str().to_owned(),
            text_version: c.text_version.clone(),
            text_hash: c.text_hash.clone(),
            accepted_at: dt(c.accepted_at),
            ip: c.ip.clone(),
            user_agent: c.user_agent.clone(),
            channel: c.channel.as_str().to_owned(),
            agreement_id: c.agreement_id.clone(),
        }
    }

    pub fn into_domain(self, revocation: Option<RevocationDoc>) -> Result<Consent, StoreError> {
        let bad = |f: &str| corrupt(&format!("consent {}", self.id), format!("bad {f}"));
        Ok(Consent {
            binding_id: BindingId::parse(&self.binding_id).map_err(|_| bad("binding_id"))?,
            user_id: UserId::parse(&self.user_id).map_err(|_| bad("user_id"))?,
            channel: ChannelName::parse(&self.channel).map_err(|_| bad("channel"))?,
            id: self.id,
            text_version: self.text_version,
            text_hash: self.text_hash,
            accepted_at: ts(self.accepted_at),
            ip: self.ip,
            user_agent: self.user_agent,
            agreement_id: self.agreement_id,
            revoked_at: revocation.as_ref().map(|r| ts(r.at)),
            revoked_by: revocation.map(|r| r.by),
        })
    }
}

// --------------------------------------------------------------- seen ids

/// The n-th recording of a seen id (`seen_ids`), `_id` = `{base}#{gen}`;
/// the highest generation counts.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SeenDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub base: String,
    pub gen: i64,
    pub expires_at: DateTime,
}

// -------------------------------------------------------------- data keys

/// One version of an owner's wrapped data key (`data_keys`), `_id` =
/// `{owner}#{seq}`; the highest `seq` is current. A tombstone (erased key)
/// holds no key material.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct DataKeyDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub owner: String,
    pub seq: i64,
    /// No key material here: an erasure tombstone, or (with `husk`) a
    /// superseded or erased wrapping whose material was dropped.
    pub tombstone: bool,
    /// A link emptied after the fact. Its `_id` stays taken, so the chain
    /// keeps no gaps and no stale writer can insert that link again.
    #[serde(default)]
    pub husk: bool,
    pub master_key_id: String,
    pub wrapped: Binary,
    pub version: i64,
    pub created_at: DateTime,
    /// When this link was written (wall clock), for clean-up only.
    pub written_at: DateTime,
}

impl DataKeyDoc {
    pub fn from_domain(k: &WrappedKey, seq: i64) -> Result<DataKeyDoc, StoreError> {
        Ok(DataKeyDoc {
            id: link_id(&k.owner, seq),
            owner: k.owner.clone(),
            seq,
            tombstone: false,
            husk: false,
            master_key_id: k.master_key_id.clone(),
            wrapped: bin(&k.wrapped),
            version: to_i64(k.version, "data key version")?,
            created_at: dt(k.created_at),
            written_at: crate::store::wall_now(),
        })
    }

    /// An erasure tombstone at `seq`.
    pub fn tombstone(owner: &str, seq: i64, now: DateTime) -> DataKeyDoc {
        DataKeyDoc::empty(owner, seq, now, false)
    }

    /// What a superseded or erased wrapping at `seq` is replaced with.
    pub fn husk(owner: &str, seq: i64, now: DateTime) -> DataKeyDoc {
        DataKeyDoc::empty(owner, seq, now, true)
    }

    fn empty(owner: &str, seq: i64, now: DateTime, husk: bool) -> DataKeyDoc {
        DataKeyDoc {
            id: link_id(owner, seq),
            owner: owner.to_owned(),
            seq,
            tombstone: true,
            husk,
            master_key_id: String::new(),
            wrapped: bin(&[]),
            version: 0,
            created_at: now,
            written_at: now,
        }
    }

    pub fn into_domain(self) -> Result<WrappedKey, StoreError> {
        Ok(WrappedKey {
            version: to_u64(self.version, "data key version")?,
            owner: self.owner,
            master_key_id: self.master_key_id,
            wrapped: self.wrapped.bytes,
            created_at: ts(self.created_at),
        })
    }
}

// ------------------------------------------------------------------ audit

/// One link of the audit chain (`audit`), `_id` = [`audit_id`]`(seq)`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct AuditDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub seq: i64,
    pub at: DateTime,
    pub actor: String,
    pub role: String,
    pub action: String,
    pub user_id: Option<String>,
    pub binding_id: Option<String>,
    pub outcome: String,
    pub request_id: Option<String>,
    pub client_ip: Option<String>,
    pub detail: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditDoc {
    pub fn from_domain(r: &AuditRecord) -> Result<AuditDoc, StoreError> {
        let e = &r.event;
        let seq = to_i64(r.seq, "audit seq")?;
        Ok(AuditDoc {
            id: audit_id(seq),
            seq,
            at: dt(e.at),
            actor: e.actor.clone(),
            role: e.role.clone(),
            action: e.action.clone(),
            user_id: e.user_id.clone(),
            binding_id: e.binding_id.clone(),
            outcome: e.outcome.clone(),
            request_id: e.request_id.clone(),
            client_ip: e.client_ip.clone(),
            detail: e.detail.clone(),
            prev_hash: r.prev_hash.clone(),
            hash: r.hash.clone(),
        })
    }

    pub fn into_domain(self) -> Result<AuditRecord, StoreError> {
        Ok(AuditRecord {
            seq: to_u64(self.seq, "audit seq")?,
            event: AuditEvent {
                at: ts(self.at),
                actor: self.actor,
                role: self.role,
                action: self.action,
                user_id: self.user_id,
                binding_id: self.binding_id,
                outcome: self.outcome,
                request_id: self.request_id,
                client_ip: self.client_ip,
                detail: self.detail,
            },
            prev_hash: self.prev_hash,
            hash: self.hash,
        })
    }
}

/// The last link an audit purge deleted (`audit_checkpoints`, `_id` =
/// seq): where the chain goes on when the purge emptied `audit`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct AuditCheckpointDoc {
    #[serde(rename = "_id")]
    pub seq: i64,
    pub hash: String,
}
