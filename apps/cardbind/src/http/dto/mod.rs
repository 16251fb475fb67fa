//! HTTP bodies (`…Body` in, DTOs out) and their conversions from and into
//! the domain. These types exist only at the edge: the domain has no serde
//! or poem derives, and nothing here ever holds a full card number, an ID
//! number or a phone number on the way out.

use std::borrow::Cow;

use cardbind_domain::{ConsentGiven, ErrorCode, Timestamp, UserId};
use cardbind_usecases::bind::BindForm;
use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type};
use poem_openapi::Object;
use serde_json::Value;

use super::error::ApiError;
use super::params::{
    CardNumberRule, ChannelKind, CvvRule, HolderNameRule, IdNumberRule, OtpRule, PhoneRule,
    Sha256Rule, Text, TextVersionRule,
};

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
    /// ignored (at most three in a row); a supported issuer range, a
    /// length that brand issues, and a valid Luhn check digit (except
    /// UnionPay).
    pub card_number: Text<CardNumberRule>,
    /// Expiry month, 1–12.
    #[oai(validator(minimum(value = "1"), maximum(value = "12")))]
    pub expiry_month: u32,
    /// Expiry year, four digits (two-digit years are read as 20YY): not
    /// before this month and at most 20 years ahead.
    #[oai(validator(minimum(value = "0"), maximum(value = "9999")))]
    pub expiry_year: u32,
    /// Card security code: 3 digits, 4 for Amex. Optional (absent, null or
    /// empty); never stored.
    pub cvv: Option<Text<CvvRule>>,
    /// The cardholder's name as on the ID document: letters of any script
    /// (of the Basic Multilingual Plane, U+0000–U+FFFF, as of Unicode 14)
    /// and the combining marks their scripts write with (vowel signs,
    /// viramas, decomposed accents; the marks of the scripts names are
    /// written in, listed in the pattern), spaces and `. - ' ·`, a letter
    /// before any mark, at most 64 characters. `’` is taken as `'` and `・`
    /// as `·`; the Hangul fillers and the Arabic tatweel (which show as
    /// nothing or a line) are not taken.
    pub holder_name: Text<HolderNameRule>,
    /// The holder's mainland resident identity card number: 17 digits (a
    /// region code whose first two digits are a province's, 11–15, 21–23,
    /// 31–37, 41–46, 50–54, 61–65, 71, 81–83, or 9 and a digit for a
    /// foreigner's permanent residence card; a birth date YYYYMMDD from
    /// 1900 to 2100 and not after today in China; a sequence number) and a
    /// check character (a digit or `X`, either case) under ISO 7064 MOD
    /// 11-2.
    pub id_number: Text<IdNumberRule>,
    /// The phone number the card is registered with: a mainland mobile
    /// number (11 digits, `1` then `3`–`9`), optionally after `+86`, `0086`
    /// or `86`; or another country's number in E.164 form (`+` and 7–15
    /// digits, not starting with 0). Spaces and dashes are ignored.
    pub phone: Text<PhoneRule>,
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
    /// Kept in clear with the consent, so the digits of a number of 11
    /// digits or more in it (a card, ID or phone number; spaces or hyphens
    /// between digits, up to three in a row, count as one number) are kept
    /// as `*`.
    pub text_version: Text<TextVersionRule>,
    /// SHA-256 (64 hex characters) of the consent text as shown.
    pub text_sha256: Text<Sha256Rule>,
    /// The user's IP address (IPv4 or IPv6); the request's client IP when
    /// absent.
    pub ip: Option<std::net::IpAddr>,
    /// The user's user agent (numbers of 11 digits or more masked as in
    /// `text_version`, then kept to its first 512 characters); the
    /// request's `User-Agent` when absent.
    pub user_agent: Option<String>,
}

impl BindCardBody {
    /// The use case's form; `client_ip`/`user_agent` fill the consent
    /// fields the body leaves out.
    pub fn into_form(
        self,
        user: UserId,
        client_ip: Option<String>,
        user_agent: Option<String>,
    ) -> BindForm {
        let c = self.consent;
        BindForm {
            user,
            card_number: self.card_number.into_string(),
            expiry_month: self.expiry_month,
            expiry_year: self.expiry_year,
            cvv: self.cvv.map(Text::into_string),
            holder_name: self.holder_name.into_string(),
            id_number: self.id_number.into_string(),
            phone: self.phone.into_string(),
            channel: self.channel.map(|c| c.as_str().to_owned()),
            bind_key: None,
            consent: ConsentGiven {
                text_version: c.text_version.into_string(),
                text_hash: c.text_sha256.into_string(),
                ip: c.ip.map(|ip| ip.to_string()).or(client_ip),
                user_agent: c.user_agent.or(user_agent),
            },
        }
    }
}

/// The one-time password the user received.
#[derive(Object, Clone)]
#[oai(deny_unknown_fields)]
pub struct VerifyCardBody {
    /// 4–8 digits.
    pub otp: Text<OtpRule>,
}

/// An operator's approval of a binding in review.
#[derive(Object, Clone, Debug)]
#[oai(deny_unknown_fields)]
pub struct ApproveReviewBody {
    /// The channel's agreement id or token, when the operator bound the
    /// card at the channel by hand: 1–128 characters. One that another
    /// live card holds is `409 conflict`.
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
            "a card number has 12 to 19 digits (spaces and dashes are ignored, at most three in a row)",
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
        "secondary_user_id" => (
            ErrorCode::InvalidUserId,
            path,
            "secondary_user_id must be 1 to 64 characters of A-Z a-z 0-9 _ - . : @, starting with a letter or digit",
        ),
        "monthly_limit.amount" => (
            ErrorCode::InvalidAmount,
            path,
            "the amount is in minor units of the currency, at least 1 and at most ten million units of it",
        ),
        "monthly_limit.currency" => (
            ErrorCode::InvalidCurrency,
            path,
            "a currency is an ISO 4217 alpha-3 code in upper case, e.g. CNY",
        ),
        "expires_at" => (
            ErrorCode::InvalidShareExpiry,
            path,
            "expires_at must be an RFC 3339 date-time",
        ),
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

mod cards;
mod family;
mod records;

pub use cards::*;
pub use family::*;
pub use records::*;
