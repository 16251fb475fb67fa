//! HTTP bodies (`…Body` in, DTOs out) and their conversions from and into
//! the domain. These types exist only at the edge: the domain has no serde
//! or poem derives, and nothing here ever holds a full card number, an ID
//! number or a phone number on the way out.

use std::borrow::Cow;

use cardbind_domain::{
    BinEntry, Binding, BindingStatus, CardBrand, CardType, ErrorCode, NextAction, Timestamp,
};
use cardbind_ports::audit::AuditRecord;
use cardbind_ports::service::{CardPage, CardView, ConsentInput, RawBindCard};
use cardbind_ports::store::Consent;
use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type};
use poem_openapi::{Enum, Object};
use serde_json::Value;

use super::error::ApiError;
use super::params::ChannelKind;

/// An instant as RFC 3339 text (UTC), e.g. `2030-01-31T12:00:00Z`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DateTime(pub String);

impl From<Timestamp> for DateTime {
    fn from(t: Timestamp) -> DateTime {
        DateTime(t.to_rfc3339())
    }
}

impl Type for DateTime {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "string(date-time)".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema::new_with_format("string", "date-time")))
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl ToJSON for DateTime {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

impl ParseFromJSON for DateTime {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::String(s)) => Ok(DateTime(s)),
            _ => Err(ParseError::custom("expected an RFC 3339 date-time")),
        }
    }
}

/// Parses RFC 3339 text into a timestamp.
pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
    let dt = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    let ms = dt.unix_timestamp_nanos() / 1_000_000;
    i64::try_from(ms).ok().map(Timestamp::from_unix_millis)
}

// ---- requests -------------------------------------------------------------

/// A card to bind. Card data is sealed before it is stored; the CVV is
/// passed to the channel when given and never stored.
///
/// Each field's schema is its format, checked before anything else (a
/// refusal carries the field's own code, e.g. `invalid_card_number`). What
/// a schema cannot state is checked after it, with the same codes: the
/// card's check digit, issuer range and length for its brand, the CVV's
/// length for the brand, the expiry window, the ID number's birth date and
/// check character, and whether the channel is enabled.
#[derive(Object, Clone)]
#[oai(deny_unknown_fields)]
pub struct BindCardBody {
    /// The full card number (PAN): 12–19 digits, spaces and dashes
    /// ignored; a supported issuer range, a length that brand issues, and
    /// a valid Luhn check digit (except UnionPay).
    #[oai(validator(pattern = "^[ -]*([0-9][ -]*){12,19}$"))]
    pub card_number: String,
    /// Expiry month, 1–12.
    #[oai(validator(minimum(value = "1"), maximum(value = "12")))]
    pub expiry_month: u32,
    /// Expiry year, four digits (two-digit years are read as 20YY): not
    /// before this month and at most 20 years ahead.
    #[oai(validator(minimum(value = "0"), maximum(value = "9999")))]
    pub expiry_year: u32,
    /// Card security code: 3 digits, 4 for Amex. Optional (absent, null or
    /// empty); never stored.
    #[oai(validator(pattern = "^([0-9]{3,4})?$"))]
    pub cvv: Option<String>,
    /// The cardholder's name as on the ID document: letters of any script,
    /// spaces and `. - ' ·`, at least one letter, at most 64 characters.
    #[oai(validator(
        pattern = "^[\\p{L} .'·-]*\\p{L}[\\p{L} .'·-]*$",
        min_length = 1,
        max_length = 64
    ))]
    pub holder_name: String,
    /// The holder's mainland resident identity card number: 17 digits (a
    /// region code not starting with 0, a birth date YYYYMMDD from 1900 to
    /// 2100, a sequence number) and a check character (a digit or `X`,
    /// either case) under ISO 7064 MOD 11-2.
    #[oai(validator(
        pattern = "^[1-9][0-9]{5}(19[0-9]{2}|20[0-9]{2}|2100)(0[1-9]|1[0-2])(0[1-9]|[12][0-9]|3[01])[0-9]{3}[0-9Xx]$"
    ))]
    pub id_number: String,
    /// The phone number the card is registered with: a mainland mobile
    /// number (11 digits, `1` then `3`–`9`), optionally after `+86`, `0086`
    /// or `86`; or another country's number in E.164 form (`+` and 8–15
    /// digits, not starting with 0). Spaces and dashes are ignored.
    #[oai(validator(
        pattern = "^[ -]*(\\+[ -]*(8[ -]*6[ -]*1[ -]*[3-9][ -]*([0-9][ -]*){9}|[1-79][ -]*([0-9][ -]*){7,14}|8[ -]*[0-57-9][ -]*([0-9][ -]*){6,13})|(0[ -]*0[ -]*8[ -]*6[ -]*|8[ -]*6[ -]*)?1[ -]*[3-9][ -]*([0-9][ -]*){9})$"
    ))]
    pub phone: String,
    /// Payment channel; the configured default when absent. Must be one of
    /// the channels this service enables (`channel_not_enabled` otherwise).
    pub channel: Option<ChannelKind>,
    pub consent: ConsentBody,
}

impl std::fmt::Debug for BindCardBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BindCardBody(<card data redacted>)")
    }
}

/// The consent the user accepted before binding.
#[derive(Object, Clone, Debug)]
#[oai(deny_unknown_fields)]
pub struct ConsentBody {
    /// Version of the consent text shown: 1–64 printable ASCII characters.
    #[oai(validator(pattern = "^[ -~]{1,64}$"))]
    pub text_version: String,
    /// SHA-256 (64 hex characters) of the consent text as shown.
    #[oai(validator(pattern = "^[0-9A-Fa-f]{64}$"))]
    pub text_sha256: String,
    /// The user's IP address (IPv4 or IPv6); the request's client IP when
    /// absent.
    pub ip: Option<std::net::IpAddr>,
    /// The user's user agent (kept to its first 512 characters); the
    /// request's `User-Agent` when absent.
    pub user_agent: Option<String>,
}

impl BindCardBody {
    /// The use case's raw request; `client_ip`/`user_agent` fill the
    /// consent fields the body leaves out.
    pub fn into_raw(self, client_ip: Option<String>, user_agent: Option<String>) -> RawBindCard {
        let c = self.consent;
        RawBindCard {
            card_number: self.card_number,
            expiry_month: self.expiry_month,
            expiry_year: self.expiry_year,
            cvv: self.cvv,
            holder_name: self.holder_name,
            id_number: self.id_number,
            phone: self.phone,
            channel: self.channel.map(|c| c.as_str().to_owned()),
            consent: ConsentInput {
                text_version: c.text_version,
                text_hash: c.text_sha256,
                ip: c.ip.map(|ip| ip.to_string()).or(client_ip),
                user_agent: c
                    .user_agent
                    .or(user_agent)
                    .map(|ua| ua.chars().take(512).collect()),
            },
        }
    }
}

/// The one-time password the user received.
#[derive(Object, Clone)]
#[oai(deny_unknown_fields)]
pub struct VerifyCardBody {
    /// 4–8 digits.
    #[oai(validator(pattern = "^[0-9]{4,8}$"))]
    pub otp: String,
}

/// An operator's approval of a binding in review.
#[derive(Object, Clone, Debug)]
#[oai(deny_unknown_fields)]
pub struct ApproveReviewBody {
    /// The channel's agreement id or token, when the operator bound the
    /// card at the channel by hand: 1–128 characters.
    #[oai(validator(min_length = 1, max_length = 128))]
    pub channel_ref: Option<String>,
}

/// The refusal for a body field whose value is outside its schema (format,
/// length, range or enum): the stable code and `field` the domain gives
/// that field, so that a value refused by its declared format reads as one
/// refused by the domain. Never includes the value.
pub fn body_refusal(path: &str) -> ApiError {
    let (code, field, message): (ErrorCode, &str, &str) = match path {
        "card_number" => (
            ErrorCode::InvalidCardNumber,
            path,
            "a card number has 12 to 19 digits (spaces and dashes are ignored)",
        ),
        "expiry_month" => (
            ErrorCode::InvalidExpiry,
            path,
            "expiry month must be 1 to 12",
        ),
        "expiry_year" => (
            ErrorCode::InvalidExpiry,
            path,
            "expiry year must have two or four digits",
        ),
        "cvv" => (
            ErrorCode::InvalidCvv,
            path,
            "the security code has 3 digits (4 for Amex)",
        ),
        "holder_name" => (
            ErrorCode::InvalidHolderName,
            path,
            "the holder name has 1 to 64 letters, spaces or . - ' ·",
        ),
        "id_number" => (
            ErrorCode::InvalidIdNumber,
            path,
            "a resident ID number has 17 digits (region, birth date, sequence) and a check character",
        ),
        "phone" => (
            ErrorCode::InvalidPhone,
            path,
            "a mainland mobile number (11 digits starting 13–19) or an E.164 number",
        ),
        "channel" => (
            ErrorCode::ChannelNotEnabled,
            path,
            "that channel is not enabled",
        ),
        "consent.text_version" | "consent.text_sha256" => (
            ErrorCode::InvalidRequest,
            "consent",
            "consent needs a text_version (1-64 printable ASCII characters) and the SHA-256 hex of the text shown",
        ),
        "consent.ip" => (
            ErrorCode::InvalidRequest,
            path,
            "`consent.ip` must be an IPv4 or IPv6 address",
        ),
        "otp" => (ErrorCode::InvalidOtp, path, "the code has 4 to 8 digits"),
        "channel_ref" => (
            ErrorCode::InvalidRequest,
            path,
            "`channel_ref` must be 1 to 128 characters",
        ),
        _ => {
            return ApiError::field(
                ErrorCode::InvalidRequest,
                path.to_owned(),
                format!("`{path}` has a value outside its schema"),
            )
        }
    };
    ApiError::field(code, field, message)
}

// ---- responses ------------------------------------------------------------

/// Status of a binding.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
pub enum CardStatus {
    PendingVerification,
    Active,
    Frozen,
    Inactive,
    PendingReview,
    Failed,
}

impl From<BindingStatus> for CardStatus {
    fn from(s: BindingStatus) -> CardStatus {
        match s {
            BindingStatus::PendingVerification => CardStatus::PendingVerification,
            BindingStatus::Active => CardStatus::Active,
            BindingStatus::Frozen => CardStatus::Frozen,
            BindingStatus::Inactive => CardStatus::Inactive,
            BindingStatus::PendingReview => CardStatus::PendingReview,
            BindingStatus::Failed => CardStatus::Failed,
        }
    }
}

/// Card scheme, from the BIN.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
pub enum Brand {
    Visa,
    Mastercard,
    Amex,
    #[oai(rename = "unionpay")]
    UnionPay,
    Jcb,
    Discover,
    DinersClub,
    Maestro,
    Mir,
}

impl From<CardBrand> for Brand {
    fn from(b: CardBrand) -> Brand {
        match b {
            CardBrand::Visa => Brand::Visa,
            CardBrand::Mastercard => Brand::Mastercard,
            CardBrand::Amex => Brand::Amex,
            CardBrand::UnionPay => Brand::UnionPay,
            CardBrand::Jcb => Brand::Jcb,
            CardBrand::Discover => Brand::Discover,
            CardBrand::DinersClub => Brand::DinersClub,
            CardBrand::Maestro => Brand::Maestro,
            CardBrand::Mir => Brand::Mir,
        }
    }
}

/// What the user must do next.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
pub enum NextActionType {
    /// Enter the SMS code with `verifyCard`.
    Otp,
    /// Open `url` (or show it as a QR code) to sign the agreement.
    Redirect,
}

/// Something the user must do to finish the binding.
#[derive(Object, Clone, Debug, PartialEq, Eq)]
pub struct NextActionDto {
    #[oai(rename = "type")]
    pub kind: NextActionType,
    /// For `redirect`: the agreement signing URL.
    #[oai(skip_serializing_if_is_none)]
    pub url: Option<String>,
    /// For `otp`: the masked phone the code went to.
    #[oai(skip_serializing_if_is_none)]
    pub phone_hint: Option<String>,
}

impl From<&NextAction> for NextActionDto {
    fn from(a: &NextAction) -> NextActionDto {
        match a {
            NextAction::Otp { phone_hint } => NextActionDto {
                kind: NextActionType::Otp,
                url: None,
                phone_hint: Some(phone_hint.clone()),
            },
            NextAction::Redirect { url } => NextActionDto {
                kind: NextActionType::Redirect,
                url: Some(url.clone()),
                phone_hint: None,
            },
        }
    }
}

/// A bound card as shown to its reader: masked (brand, BIN, last four,
/// expiry), with its issuer, type and currency when the BIN table knows
/// them. Never a full card number, ID number or phone number.
#[derive(Object, Clone, Debug, PartialEq, Eq)]
pub struct Card {
    /// The card (binding) id.
    pub id: String,
    pub user_id: String,
    pub status: CardStatus,
    pub brand: Brand,
    /// First six digits of the card number.
    pub bin: String,
    /// Last four digits of the card number.
    pub last4: String,
    /// The issuing bank, when the BIN table knows the card's BIN.
    #[oai(skip_serializing_if_is_none)]
    pub issuer: Option<IssuerDto>,
    /// Debit, credit or prepaid, when known.
    #[oai(skip_serializing_if_is_none)]
    pub card_type: Option<CardTypeDto>,
    /// The card's currency, ISO 4217 alpha-3 (`CNY`), when known.
    #[oai(skip_serializing_if_is_none)]
    pub currency: Option<String>,
    pub expiry_month: u32,
    pub expiry_year: i32,
    /// The payment channel the card is bound through.
    pub channel: String,
    /// Whether this is the user's default card (only an active card can be).
    pub is_default: bool,
    /// Present while the binding waits for the user (`pending_verification`).
    #[oai(skip_serializing_if_is_none)]
    pub next_action: Option<NextActionDto>,
    /// Stable code of the failure, when `status` is `failed`.
    #[oai(skip_serializing_if_is_none)]
    pub failure_code: Option<String>,
    pub created_at: DateTime,
    pub updated_at: DateTime,
}

impl Card {
    pub fn of(b: &Binding, is_default: bool) -> Card {
        let waiting = b.status == BindingStatus::PendingVerification;
        Card {
            id: b.id.as_str().to_owned(),
            user_id: b.user_id.as_str().to_owned(),
            status: b.status.into(),
            brand: b.card.brand.into(),
            bin: b.card.bin.clone(),
            last4: b.card.last4.clone(),
            issuer: None,
            card_type: None,
            currency: None,
            expiry_month: b.card.expiry.month(),
            expiry_year: b.card.expiry.year(),
            channel: b.channel.as_str().to_owned(),
            is_default,
            next_action: if waiting {
                b.next_action.as_ref().map(NextActionDto::from)
            } else {
                None
            },
            failure_code: if b.status == BindingStatus::Failed {
                b.failure_code.clone()
            } else {
                None
            },
            created_at: b.created_at.into(),
            updated_at: b.updated_at.into(),
        }
    }
}

impl Card {
    /// Adds what the BIN table says about the card.
    pub fn with_facts(mut self, facts: IssuerFacts) -> Card {
        self.issuer = facts.issuer;
        self.card_type = facts.card_type;
        self.currency = facts.currency;
        self
    }
}

impl From<&CardView> for Card {
    fn from(v: &CardView) -> Card {
        Card::of(&v.binding, v.is_default)
    }
}

/// One page of cards.
#[derive(Object, Clone, Debug)]
pub struct CardList {
    pub cards: Vec<Card>,
    /// Pass as `after` for the next page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    pub next_after: Option<String>,
}

impl From<&CardPage> for CardList {
    fn from(p: &CardPage) -> CardList {
        CardList {
            cards: p.cards.iter().map(Card::from).collect(),
            next_after: p.next.as_ref().map(|b| b.as_str().to_owned()),
        }
    }
}

/// The bank that issued a card.
#[derive(Object, Clone, Debug, PartialEq, Eq)]
pub struct IssuerDto {
    /// The bank's code, as Chinese payment channels name banks (`CMB`,
    /// `ICBC`, `COMM`…); `TEST` for published test card numbers.
    pub code: String,
    /// Its name in Chinese, as wallets show it (`招商银行`).
    pub name_zh: String,
    pub name_en: String,
}

/// Debit (储蓄卡), credit (信用卡) or prepaid (预付卡).
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
pub enum CardTypeDto {
    Debit,
    Credit,
    Prepaid,
}

impl From<CardType> for CardTypeDto {
    fn from(t: CardType) -> CardTypeDto {
        match t {
            CardType::Debit => CardTypeDto::Debit,
            CardType::Credit => CardTypeDto::Credit,
            CardType::Prepaid => CardTypeDto::Prepaid,
        }
    }
}

/// What the BIN table says about a card, each part only when known.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IssuerFacts {
    pub issuer: Option<IssuerDto>,
    pub card_type: Option<CardTypeDto>,
    pub country: Option<String>,
    pub currency: Option<String>,
}

impl IssuerFacts {
    pub fn of(entry: Option<&BinEntry>) -> IssuerFacts {
        let Some(e) = entry else {
            return IssuerFacts::default();
        };
        let i = &e.info;
        IssuerFacts {
            issuer: Some(IssuerDto {
                code: i.issuer.code().as_str().to_owned(),
                name_zh: i.issuer.name_zh().to_owned(),
                name_en: i.issuer.name_en().to_owned(),
            }),
            card_type: i.card_type.map(CardTypeDto::from),
            country: i.country.map(|c| c.code()),
            currency: i.currency.map(|c| c.code().to_owned()),
        }
    }
}

/// What is known about a BIN: its card scheme, and what the BIN table
/// says (issuer, card type, issuing country, currency) where it knows.
#[derive(Object, Clone, Debug)]
pub struct BinInfo {
    pub bin: String,
    pub brand: Brand,
    /// The issuing bank, when the BIN table knows the BIN.
    #[oai(skip_serializing_if_is_none)]
    pub issuer: Option<IssuerDto>,
    #[oai(skip_serializing_if_is_none)]
    pub card_type: Option<CardTypeDto>,
    /// Issuing country, ISO 3166-1 alpha-2 (`CN`).
    #[oai(skip_serializing_if_is_none)]
    pub country: Option<String>,
    /// The card's currency, ISO 4217 alpha-3 (`CNY`).
    #[oai(skip_serializing_if_is_none)]
    pub currency: Option<String>,
}

impl BinInfo {
    pub fn new(bin: String, brand: CardBrand, facts: IssuerFacts) -> BinInfo {
        BinInfo {
            bin,
            brand: brand.into(),
            issuer: facts.issuer,
            card_type: facts.card_type,
            country: facts.country,
            currency: facts.currency,
        }
    }
}

/// What erasing a user did.
#[derive(Object, Clone, Debug)]
pub struct ErasureResult {
    pub user_id: String,
    /// Cards unbound by the erasure.
    pub unbound_cards: u64,
}

/// One audit event, with its links in the tamper-evident chain.
#[derive(Object, Clone, Debug)]
pub struct AuditEventDto {
    /// Position in the chain: 1, 2, 3, … without gaps.
    pub seq: u64,
    pub at: DateTime,
    /// Token subject, `system` or `channel:NAME`.
    pub actor: String,
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
    /// SHA-256 (hex) of the previous event's link.
    pub prev_hash: String,
    /// SHA-256 (hex) of this link.
    pub hash: String,
}

impl From<&AuditRecord> for AuditEventDto {
    fn from(r: &AuditRecord) -> AuditEventDto {
        let e = &r.event;
        AuditEventDto {
            seq: r.seq,
            at: e.at.into(),
            actor: e.actor.clone(),
            role: e.role.clone(),
            action: e.action.clone(),
            user_id: e.user_id.clone(),
            card_id: e.binding_id.clone(),
            outcome: e.outcome.clone(),
            request_id: e.request_id.clone(),
            client_ip: e.client_ip.clone(),
            detail: e.detail.clone(),
            prev_hash: r.prev_hash.clone(),
            hash: r.hash.clone(),
        }
    }
}

/// One page of audit events.
#[derive(Object, Clone, Debug)]
pub struct AuditEventList {
    pub events: Vec<AuditEventDto>,
    /// Pass as `after_seq` for the next page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    pub next_after_seq: Option<u64>,
}

/// A recorded consent.
#[derive(Object, Clone, Debug)]
pub struct ConsentDto {
    pub id: String,
    pub card_id: String,
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
    #[oai(skip_serializing_if_is_none)]
    pub revoked_at: Option<DateTime>,
    #[oai(skip_serializing_if_is_none)]
    pub revoked_by: Option<String>,
}

impl From<&Consent> for ConsentDto {
    fn from(c: &Consent) -> ConsentDto {
        ConsentDto {
            id: c.id.clone(),
            card_id: c.binding_id.as_str().to_owned(),
            user_id: c.user_id.as_str().to_owned(),
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
    /// Pass as `after` for the next page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    pub next_after: Option<String>,
}

/// Liveness / readiness answer.
#[derive(Object, Clone, Debug)]
pub struct Health {
    /// `ok`.
    pub status: String,
}
