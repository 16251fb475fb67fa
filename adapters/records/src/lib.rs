//! # cardbind-records
//!
//! The shapes the durable storage adapters (embedded SQLite, MongoDB) keep,
//! as serde types apart from the domain types (which have no serde by
//! design), and the conversions both ways. Reading a record back parses it
//! into domain values; anything that does not parse is
//! [`StoreError::Corrupt`], never a panic and never a silently different
//! value.
//!
//! Numbers are signed (`i64` instants in milliseconds, `i64` counters):
//! BSON has no unsigned 64-bit integer. Card data never appears here: a
//! wallet holds masked card summaries; sealed fields are stored by the
//! adapters as opaque bytes of their own records.

use cardbind_domain::{
    BinEntry, BinInfo, Binding, BindingId, BindingParts, BindingStatus, CardBrand, CardSummary,
    CardType, ChannelName, ConsentRecord, Country, Currency, Expiry, FailureReason, Fingerprint,
    Issuer, Money, NextAction, Role, Share, ShareId, ShareTerms, SharedIn, Timestamp, UserId,
    Wallet,
};
use cardbind_ports::audit::{AuditAction, AuditActor, AuditEvent, Outcome};
use cardbind_ports::StoreError;
use serde::{Deserialize, Serialize};

/// A record that does not parse back.
pub fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {detail}"))
}

/// `u64` → `i64` for storage (BSON has no unsigned 64-bit integer).
pub fn to_i64(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| corrupt(what, "does not fit in a signed 64-bit integer"))
}

/// `i64` → `u64` when reading back.
pub fn to_u64(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| corrupt(what, "is negative"))
}

fn ms(t: Timestamp) -> i64 {
    t.unix_millis()
}

fn at(v: i64) -> Timestamp {
    Timestamp::from_unix_millis(v)
}

/// A stored user id, parsed back.
pub fn user(s: &str) -> Result<UserId, StoreError> {
    UserId::parse(s).map_err(|e| corrupt("user id", e))
}

/// A stored binding id, parsed back.
pub fn binding_id(s: &str) -> Result<BindingId, StoreError> {
    BindingId::parse(s).map_err(|e| corrupt("binding id", e))
}

/// A stored channel name, parsed back.
pub fn channel(s: &str) -> Result<ChannelName, StoreError> {
    ChannelName::parse(s).map_err(|e| corrupt("channel", e))
}

fn share_id(s: &str) -> Result<ShareId, StoreError> {
    ShareId::parse(s).map_err(|e| corrupt("share id", e))
}

/// A user's wallet.
///
/// Its JSON is what a link's hash covers ([`wallet_digest`]); MongoDB keeps
/// the record as BSON and encodes it to JSON again to check a link, so the
/// encoding of a stored record must never change: a field added later is
/// `#[serde(default, skip_serializing_if = …)]` (absent when empty, so a
/// record written before it encodes as it did), and no field is renamed,
/// reordered or given another type. Otherwise every MongoDB link written
/// before the change fails `audit verify`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletRecord {
    pub user: String,
    pub bindings: Vec<BindingRecord>,
    pub default: Option<String>,
    /// Family shares the user gave (absent in wallets written before
    /// family cards, and when there are none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shares: Vec<ShareRecord>,
    /// Mirrors of the shares the user received (absent likewise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared_in: Vec<SharedInRecord>,
}

/// A family share, in the primary's wallet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareRecord {
    pub id: String,
    pub card: String,
    pub secondary: String,
    /// The monthly limit, in minor units of `currency`.
    pub limit_minor: i64,
    pub currency: String,
    pub expires_at: i64,
    pub consent: ConsentRecordDoc,
    pub created_at: i64,
    #[serde(default)]
    pub accepted_at: Option<i64>,
    #[serde(default)]
    pub revoked_at: Option<i64>,
    #[serde(default)]
    pub revoked_by: Option<String>,
}

/// The mirror of a share, in the secondary's wallet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedInRecord {
    pub share: String,
    pub primary: String,
    pub primary_card: String,
    pub card: CardRecord,
    pub channel: String,
    pub expires_at: i64,
    pub invited_at: i64,
    #[serde(default)]
    pub consent: Option<ConsentRecordDoc>,
    #[serde(default)]
    pub ended_at: Option<i64>,
    #[serde(default)]
    pub ended_by: Option<String>,
}

impl From<&Share> for ShareRecord {
    fn from(s: &Share) -> Self {
        ShareRecord {
            id: s.id.as_str().to_owned(),
            card: s.card.as_str().to_owned(),
            secondary: s.secondary.as_str().to_owned(),
            limit_minor: s.terms.monthly_limit.minor_units_i64(),
            currency: s.terms.monthly_limit.currency().code().to_owned(),
            expires_at: ms(s.terms.expires_at),
            consent: ConsentRecordDoc::from(&s.consent),
            created_at: ms(s.created_at),
            accepted_at: s.accepted_at.map(ms),
            revoked_at: s.revoked_at.map(ms),
            revoked_by: s.revoked_by.clone(),
        }
    }
}

impl ShareRecord {
    pub fn into_domain(self) -> Result<Share, StoreError> {
        let currency = Currency::parse(&self.currency).map_err(|e| corrupt("share currency", e))?;
        let limit = Money::restore(to_u64(self.limit_minor, "share limit")?, currency)
            .ok_or_else(|| corrupt("share limit", "not positive"))?;
        Ok(Share {
            id: share_id(&self.id)?,
            card: binding_id(&self.card)?,
            secondary: user(&self.secondary)?,
            terms: ShareTerms {
                monthly_limit: limit,
                expires_at: at(self.expires_at),
            },
            consent: self.consent.into_domain()?,
            created_at: at(self.created_at),
            accepted_at: self.accepted_at.map(at),
            revoked_at: self.revoked_at.map(at),
            revoked_by: self.revoked_by,
        })
    }
}

impl From<&SharedIn> for SharedInRecord {
    fn from(m: &SharedIn) -> Self {
        SharedInRecord {
            share: m.share.as_str().to_owned(),
            primary: m.primary.as_str().to_owned(),
            primary_card: m.primary_card.as_str().to_owned(),
            card: CardRecord::from(&m.card),
            channel: m.channel.as_str().to_owned(),
            expires_at: ms(m.expires_at),
            invited_at: ms(m.invited_at),
            consent: m.consent.as_ref().map(ConsentRecordDoc::from),
            ended_at: m.ended_at.map(ms),
            ended_by: m.ended_by.clone(),
        }
    }
}

impl SharedInRecord {
    pub fn into_domain(self) -> Result<SharedIn, StoreError> {
        Ok(SharedIn {
            share: share_id(&self.share)?,
            primary: user(&self.primary)?,
            primary_card: binding_id(&self.primary_card)?,
            card: self.card.into_domain()?,
            channel: channel(&self.channel)?,
            expires_at: at(self.expires_at),
            invited_at: at(self.invited_at),
            consent: self
                .consent
                .map(ConsentRecordDoc::into_domain)
                .transpose()?,
            ended_at: self.ended_at.map(at),
            ended_by: self.ended_by,
        })
    }
}

/// A masked card: what may be shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardRecord {
    pub brand: String,
    pub bin: String,
    pub last4: String,
    pub exp_month: u32,
    pub exp_year: i32,
    /// What the BIN table said when the card was bound (absent in records
    /// written before BIN facts were kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facts: Option<BinFactsRecord>,
}

impl From<&CardSummary> for CardRecord {
    fn from(c: &CardSummary) -> Self {
        CardRecord {
            brand: c.brand.as_str().to_owned(),
            bin: c.bin.clone(),
            last4: c.last4.clone(),
            exp_month: c.expiry.month(),
            exp_year: c.expiry.year(),
            facts: c.facts.as_ref().map(BinFactsRecord::from),
        }
    }
}

impl CardRecord {
    pub fn into_domain(self) -> Result<CardSummary, StoreError> {
        Ok(CardSummary {
            brand: CardBrand::parse(&self.brand)
                .ok_or_else(|| corrupt("card brand", &self.brand))?,
            bin: self.bin,
            last4: self.last4,
            expiry: Expiry::restore(self.exp_month, self.exp_year)
                .ok_or_else(|| corrupt("card expiry", "out of range"))?,
            facts: self.facts.map(BinFactsRecord::into_domain).transpose()?,
        })
    }
}

/// An issuer and what is known of a card's range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinFactsRecord {
    pub issuer_code: String,
    pub issuer_zh: String,
    pub issuer_en: String,
    #[serde(default)]
    pub card_type: Option<String>,
    #[serde(default)]
    pub country: Option<String>,
    #[serde(default)]
    pub currency: Option<String>,
}

impl From<&BinInfo> for BinFactsRecord {
    fn from(i: &BinInfo) -> Self {
        BinFactsRecord {
            issuer_code: i.issuer.code().as_str().to_owned(),
            issuer_zh: i.issuer.name_zh().to_owned(),
            issuer_en: i.issuer.name_en().to_owned(),
            card_type: i.card_type.map(|t| t.as_str().to_owned()),
            country: i.country.map(|c| c.code()),
            currency: i.currency.map(|c| c.code().to_owned()),
        }
    }
}

impl BinFactsRecord {
    pub fn into_domain(self) -> Result<BinInfo, StoreError> {
        let opt = |v: Option<String>| v.filter(|s| !s.is_empty());
        Ok(BinInfo {
            issuer: Issuer::parse(&self.issuer_code, &self.issuer_zh, &self.issuer_en)
                .map_err(|e| corrupt("issuer", e))?,
            card_type: opt(self.card_type)
                .map(|t| CardType::parse(&t))
                .transpose()
                .map_err(|e| corrupt("card type", e))?,
            country: opt(self.country)
                .map(|c| Country::parse(&c))
                .transpose()
                .map_err(|e| corrupt("country", e))?,
            currency: opt(self.currency)
                .map(|c| Currency::parse(&c))
                .transpose()
                .map_err(|e| corrupt("currency", e))?,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NextActionRecord {
    Otp { phone_hint: String },
    Redirect { url: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRecordDoc {
    pub text_version: String,
    pub text_hash: String,
    pub accepted_at: i64,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub channel: String,
    pub agreement_id: Option<String>,
    pub revoked_at: Option<i64>,
    pub revoked_by: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingRecord {
    pub id: String,
    pub fingerprint: String,
    pub card: CardRecord,
    pub channel: String,
    pub channel_ref: Option<String>,
    pub next_action: Option<NextActionRecord>,
    pub status: String,
    pub failure: Option<String>,
    pub otp_attempts: u32,
    pub verification_expires_at: Option<i64>,
    pub data_generation: u32,
    /// Absent in records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_key: Option<String>,
    pub consents: Vec<ConsentRecordDoc>,
    /// Absent while no consent was let go.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub consents_dropped: u32,
    pub created_at: i64,
    pub updated_at: i64,
    pub activated_at: Option<i64>,
    /// An operator's hold (`Binding::held_since`); absent when there is
    /// none, and in records written before it existed (so their encoding,
    /// and the wallet digest over it, is unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_since: Option<i64>,
    /// `Binding::forget_on_release`; absent when false (as above).
    #[serde(default, skip_serializing_if = "is_false")]
    pub forget_on_release: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl From<&ConsentRecord> for ConsentRecordDoc {
    fn from(c: &ConsentRecord) -> Self {
        ConsentRecordDoc {
            text_version: c.text_version.clone(),
            text_hash: c.text_hash.clone(),
            accepted_at: ms(c.accepted_at),
            ip: c.ip.clone(),
            user_agent: c.user_agent.clone(),
            channel: c.channel.as_str().to_owned(),
            agreement_id: c.agreement_id.clone(),
            revoked_at: c.revoked_at.map(ms),
            revoked_by: c.revoked_by.clone(),
        }
    }
}

impl ConsentRecordDoc {
    pub fn into_domain(self) -> Result<ConsentRecord, StoreError> {
        Ok(ConsentRecord {
            text_version: self.text_version,
            text_hash: self.text_hash,
            accepted_at: at(self.accepted_at),
            ip: self.ip,
            user_agent: self.user_agent,
            channel: channel(&self.channel)?,
            agreement_id: self.agreement_id,
            revoked_at: self.revoked_at.map(at),
            revoked_by: self.revoked_by,
        })
    }
}

impl From<&Binding> for BindingRecord {
    fn from(b: &Binding) -> Self {
        BindingRecord {
            id: b.id.as_str().to_owned(),
            fingerprint: b.fingerprint.to_string(),
            card: CardRecord::from(&b.card),
            channel: b.channel.as_str().to_owned(),
            channel_ref: b.channel_ref.clone(),
            next_action: b.next_action.as_ref().map(|a| match a {
                NextAction::Otp { phone_hint } => NextActionRecord::Otp {
                    phone_hint: phone_hint.clone(),
                },
                NextAction::Redirect { url } => NextActionRecord::Redirect { url: url.clone() },
            }),
            status: b.status.as_str().to_owned(),
            failure: b.failure.as_ref().map(|f| f.as_str().to_owned()),
            otp_attempts: b.otp_attempts,
            verification_expires_at: b.verification_expires_at.map(ms),
            data_generation: b.data_generation,
            bind_key: b.bind_key.clone(),
            consents: b.consents.iter().map(ConsentRecordDoc::from).collect(),
            consents_dropped: b.consents_dropped,
            created_at: ms(b.created_at),
            updated_at: ms(b.updated_at),
            activated_at: b.activated_at.map(ms),
            held_since: b.held_since.map(ms),
            forget_on_release: b.forget_on_release,
        }
    }
}

impl BindingRecord {
    pub fn into_domain(self, user_id: &UserId) -> Result<Binding, StoreError> {
        let card = self.card.into_domain()?;
        let failure = match self.failure {
            None => None,
            Some(f) => {
                Some(FailureReason::parse(&f).ok_or_else(|| corrupt("failure reason", "unknown"))?)
            }
        };
        Ok(Binding::restore(BindingParts {
            id: binding_id(&self.id)?,
            user_id: user_id.clone(),
            fingerprint: Fingerprint::parse(&self.fingerprint)
                .ok_or_else(|| corrupt("fingerprint", "malformed"))?,
            card,
            channel: channel(&self.channel)?,
            channel_ref: self.channel_ref,
            next_action: self.next_action.map(|a| match a {
                NextActionRecord::Otp { phone_hint } => NextAction::Otp { phone_hint },
                NextActionRecord::Redirect { url } => NextAction::Redirect { url },
            }),
            status: BindingStatus::parse(&self.status)
                .ok_or_else(|| corrupt("binding status", &self.status))?,
            failure,
            otp_attempts: self.otp_attempts,
            verification_expires_at: self.verification_expires_at.map(at),
            data_generation: self.data_generation,
            bind_key: self.bind_key,
            consents: self
                .consents
                .into_iter()
                .map(ConsentRecordDoc::into_domain)
                .collect::<Result<_, _>>()?,
            consents_dropped: self.consents_dropped,
            created_at: at(self.created_at),
            updated_at: at(self.updated_at),
            activated_at: self.activated_at.map(at),
            held_since: self.held_since.map(at),
            forget_on_release: self.forget_on_release,
        }))
    }
}

impl From<&Wallet> for WalletRecord {
    fn from(w: &Wallet) -> Self {
        WalletRecord {
            user: w.user().as_str().to_owned(),
            bindings: w.bindings().iter().map(BindingRecord::from).collect(),
            default: w.default_pointer().map(|d| d.as_str().to_owned()),
            shares: w.shares().iter().map(ShareRecord::from).collect(),
            shared_in: w.shared_in().iter().map(SharedInRecord::from).collect(),
        }
    }
}

impl WalletRecord {
    pub fn into_domain(self) -> Result<Wallet, StoreError> {
        let u = user(&self.user)?;
        let bindings = self
            .bindings
            .into_iter()
            .map(|b| b.into_domain(&u))
            .collect::<Result<Vec<_>, _>>()?;
        let default = self.default.as_deref().map(binding_id).transpose()?;
        let shares = self
            .shares
            .into_iter()
            .map(ShareRecord::into_domain)
            .collect::<Result<Vec<_>, _>>()?;
        let shared_in = self
            .shared_in
            .into_iter()
            .map(SharedInRecord::into_domain)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Wallet::restore(u, bindings, default).with_family(shares, shared_in))
    }
}

/// A wallet as the durable stores encode it for their digest: the JSON of
/// its [`WalletRecord`] (fields in declaration order, lists in the
/// wallet's order: one encoding per wallet).
pub fn wallet_json(w: &Wallet) -> Result<Vec<u8>, StoreError> {
    WalletRecord::from(w).json()
}

impl WalletRecord {
    /// The record's JSON, as [`wallet_json`] encodes a wallet.
    pub fn json(&self) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(self).map_err(|e| corrupt("wallet as JSON", e))
    }
}

/// The digest a link's hash covers for its wallet: SHA-256 (hex) of
/// [`wallet_json`]'s bytes. The embedded store keeps those bytes and
/// digests them as stored; MongoDB keeps the record as BSON and encodes it
/// again to check it, so both digest the same bytes for the same wallet.
pub fn wallet_digest(json: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(json))
}

/// Whether a wallet holds a card waiting for verification or in manual
/// review (a candidate for reconciliation).
pub fn has_pending(w: &Wallet) -> bool {
    w.bindings().iter().any(|b| b.status.awaits_settlement())
}

/// The binding ids a wallet's events name, sorted and distinct (stored
/// beside a link so that the audit log can be filtered by card).
pub fn event_bindings(events: &[AuditEvent]) -> Vec<String> {
    let mut v: Vec<String> = events
        .iter()
        .filter_map(|e| e.binding_id.as_ref().map(|b| b.as_str().to_owned()))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The user ids a link's events name, sorted and distinct (stored beside a
/// link so that the audit log can be filtered by user).
pub fn event_users(events: &[AuditEvent]) -> Vec<String> {
    let mut v: Vec<String> = events
        .iter()
        .filter_map(|e| e.user_id.as_ref().map(|u| u.as_str().to_owned()))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The actions of a link's events, sorted and distinct (stored beside a
/// link so that the audit log can be filtered by action).
pub fn event_actions(events: &[AuditEvent]) -> Vec<String> {
    let mut v: Vec<String> = events
        .iter()
        .map(|e| e.action.as_str().to_owned())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// An audit event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub at: i64,
    pub actor: String,
    pub role: String,
    pub action: String,
    pub user_id: Option<String>,
    pub binding_id: Option<String>,
    pub outcome: String,
    pub request_id: Option<String>,
    pub client_ip: Option<String>,
    pub detail: Option<String>,
}

impl From<&AuditEvent> for EventRecord {
    fn from(e: &AuditEvent) -> Self {
        EventRecord {
            at: ms(e.at),
            actor: e.actor.subject.clone(),
            role: e.actor.role_str().to_owned(),
            action: e.action.as_str().to_owned(),
            user_id: e.user_id.as_ref().map(|u| u.as_str().to_owned()),
            binding_id: e.binding_id.as_ref().map(|b| b.as_str().to_owned()),
            outcome: e.outcome.as_str().to_owned(),
            request_id: e.request_id.clone(),
            client_ip: e.client_ip.clone(),
            detail: e.detail.clone(),
        }
    }
}

impl EventRecord {
    pub fn into_domain(self) -> Result<AuditEvent, StoreError> {
        let role = match self.role.as_str() {
            "system" => None,
            r => Some(Role::parse(r).ok_or_else(|| corrupt("audit role", r))?),
        };
        Ok(AuditEvent {
            at: at(self.at),
            actor: AuditActor {
                subject: self.actor,
                role,
            },
            action: AuditAction::parse(&self.action)
                .ok_or_else(|| corrupt("audit action", &self.action))?,
            user_id: self.user_id.as_deref().map(user).transpose()?,
            binding_id: self.binding_id.as_deref().map(binding_id).transpose()?,
            outcome: Outcome::parse(&self.outcome)
                .ok_or_else(|| corrupt("audit outcome", &self.outcome))?,
            request_id: self.request_id,
            client_ip: self.client_ip,
            detail: self.detail,
        })
    }
}

/// One entry of a BIN table. (FerretDB 1.x stores no nested arrays, so a
/// table is a list of these documents, not of arrays.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinRowRecord {
    pub low: String,
    pub high: String,
    pub issuer: String,
    pub name_zh: String,
    pub name_en: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub card_type: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub country: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub currency: String,
}

impl From<&BinEntry> for BinRowRecord {
    fn from(e: &BinEntry) -> Self {
        let i = &e.info;
        BinRowRecord {
            low: e.range.low().to_owned(),
            high: e.range.high().to_owned(),
            issuer: i.issuer.code().as_str().to_owned(),
            name_zh: i.issuer.name_zh().to_owned(),
            name_en: i.issuer.name_en().to_owned(),
            card_type: i
                .card_type
                .map(|t| t.as_str().to_owned())
                .unwrap_or_default(),
            country: i.country.map(|c| c.code()).unwrap_or_default(),
            currency: i.currency.map(|c| c.code().to_owned()).unwrap_or_default(),
        }
    }
}

impl BinRowRecord {
    pub fn into_domain(&self) -> Result<BinEntry, StoreError> {
        BinEntry::parse(
            &self.low,
            &self.high,
            &self.issuer,
            &self.name_zh,
            &self.name_en,
            &self.card_type,
            &self.country,
            &self.currency,
        )
        .map_err(|e| corrupt("a stored BIN table row", e))
    }
}

/// Reads back a list of stored events.
pub fn events_into_domain(events: Vec<EventRecord>) -> Result<Vec<AuditEvent>, StoreError> {
    events.into_iter().map(EventRecord::into_domain).collect()
}

#[cfg(test)]
mod tests;
