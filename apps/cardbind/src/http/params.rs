//! Typed path, query and header parameters.
//!
//! Each text parameter is a [`Text<R>`] whose rule `R` ([`TextRule`]) is one
//! declaration used twice: it is the parameter's schema in the spec
//! (`pattern`, `minLength`, `maxLength`, `format`) and the check the service
//! runs on the value before the handler sees it. A value the spec allows is
//! therefore accepted, and a value it refuses is refused, with the stable
//! code [`param_refusal`] gives the parameter's name (`invalid_user_id` for
//! a user id, 404 `not_found` for an unknown channel, `invalid_request`
//! otherwise).
//!
//! Patterns use only what ECMA-262 (the spec's reading), Python's `re`
//! (schemathesis) and the `regex` crate (the service) read alike: ASCII
//! classes, groups, alternation and counted repetition, anchored with `^…$`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::{Arc, LazyLock, RwLock};

use cardbind_domain::ErrorCode;
use cardbind_ports::audit::AuditAction;
use poem::http::StatusCode;
use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{ParseError, ParseFromParameter, ParseResult, ToJSON, Type};
use regex::Regex;
use serde_json::Value;

use super::error::ApiError;

/// The compiled form of a pattern, cached (the same few patterns are
/// checked on every request). A pattern that does not compile matches
/// nothing; a test compiles every pattern the spec declares.
pub fn pattern_matches(pattern: &str, value: &str) -> bool {
    // Read-locked on the request path (shared, no allocation); written
    // once per pattern.
    static CACHE: LazyLock<RwLock<HashMap<String, Option<Arc<Regex>>>>> =
        LazyLock::new(|| RwLock::new(HashMap::new()));
    let cached = CACHE
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(pattern)
        .cloned();
    let compiled = match cached {
        Some(c) => c,
        None => CACHE
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(pattern.to_owned())
            .or_insert_with(|| Regex::new(pattern).ok().map(Arc::new))
            .clone(),
    };
    compiled.is_some_and(|re| re.is_match(value))
}

/// The format of a text parameter: its schema and its check are the same
/// declaration.
pub trait TextRule: Send + Sync + 'static {
    /// Anchored (`^…$`) pattern of every accepted value.
    const PATTERN: &'static str;
    const MIN_LENGTH: usize;
    /// In characters, as JSON Schema counts.
    const MAX_LENGTH: usize;
    /// A JSON Schema / OpenAPI `format`, when one applies.
    const FORMAT: Option<&'static str> = None;
    /// What the rule says, for the refusal message (never the value).
    const RULE: &'static str;

    /// Any further check the pattern cannot state (e.g. a date-time that
    /// must also exist on the calendar).
    fn extra(_value: &str) -> bool {
        true
    }

    /// When the values are a closed list: the list (the schema's `enum`).
    fn values() -> Option<Vec<&'static str>> {
        None
    }

    /// Whether `value` has this format.
    fn accepts(value: &str) -> bool {
        let n = value.chars().count();
        (Self::MIN_LENGTH..=Self::MAX_LENGTH).contains(&n)
            && pattern_matches(Self::PATTERN, value)
            && Self::extra(value)
            && Self::values().is_none_or(|v| v.contains(&value))
    }

    fn schema() -> MetaSchema {
        MetaSchema {
            format: Self::FORMAT,
            pattern: Some(Self::PATTERN.to_owned()),
            min_length: Some(Self::MIN_LENGTH),
            max_length: Some(Self::MAX_LENGTH),
            enum_items: Self::values()
                .unwrap_or_default()
                .into_iter()
                .map(Value::from)
                .collect(),
            ..MetaSchema::new("string")
        }
    }
}

/// A text parameter checked against `R`.
pub struct Text<R: TextRule>(String, PhantomData<R>);

impl<R: TextRule> Text<R> {
    /// The value, if it has the format.
    pub fn parse(value: &str) -> Option<Text<R>> {
        R::accepts(value).then(|| Text(value.to_owned(), PhantomData))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl<R: TextRule> Deref for Text<R> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<R: TextRule> Clone for Text<R> {
    fn clone(&self) -> Self {
        Text(self.0.clone(), PhantomData)
    }
}

impl<R: TextRule> PartialEq for Text<R> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl<R: TextRule> Eq for Text<R> {}

impl<R: TextRule> std::fmt::Debug for Text<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the value: body fields of this type hold card data.
        write!(f, "Text(<{} characters>)", self.0.chars().count())
    }
}

impl<R: TextRule> Type for Text<R> {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        format!("string({})", R::PATTERN).into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(R::schema()))
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

impl<R: TextRule> ParseFromParameter for Text<R> {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Text::parse(value).ok_or_else(|| ParseError::custom(R::RULE))
    }
}

impl<R: TextRule> poem_openapi::types::ParseFromJSON for Text<R> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::String(s)) => Text::parse(&s).ok_or_else(|| ParseError::custom(R::RULE)),
            _ => Err(ParseError::custom(R::RULE)),
        }
    }
}

impl<R: TextRule> ToJSON for Text<R> {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

/// The id rule of the domain (`UserId`, `BindingId`): 1–64 of
/// `A-Z a-z 0-9 _ - . : @`, starting with a letter or digit.
pub const ID_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$";
const ID_RULE: &str =
    "1 to 64 characters of A-Z a-z 0-9 _ - . : @, starting with a letter or digit";

macro_rules! text_rule {
    ($(#[$m:meta])* $name:ident {
        pattern: $p:expr, min: $min:expr, max: $max:expr, rule: $rule:expr
        $(, format: $f:expr)? $(, extra: $extra:expr)? $(, values: $values:expr)? $(,)?
    }) => {
        $(#[$m])*
        pub struct $name;
        impl TextRule for $name {
            const PATTERN: &'static str = $p;
            const MIN_LENGTH: usize = $min;
            const MAX_LENGTH: usize = $max;
            const RULE: &'static str = $rule;
            $(const FORMAT: Option<&'static str> = Some($f);)?
            $(fn extra(value: &str) -> bool {
                let check: fn(&str) -> bool = $extra;
                check(value)
            })?
            $(fn values() -> Option<Vec<&'static str>> {
                let list: fn() -> Vec<&'static str> = $values;
                Some(list())
            })?
        }
    };
}

text_rule!(
    /// A user id (the domain's `UserId`).
    UserIdRule { pattern: ID_PATTERN, min: 1, max: 64, rule: ID_RULE }
);
text_rule!(
    /// A card (binding) id, or any other id the service issues (consents).
    IdRule { pattern: ID_PATTERN, min: 1, max: 64, rule: ID_RULE }
);
text_rule!(
    /// The first 6 to 8 digits of a card number.
    BinRule { pattern: "^[0-9]{6,8}$", min: 6, max: 8, rule: "a BIN is 6 to 8 digits" }
);
text_rule!(
    /// An instant, RFC 3339 (`2030-01-31T12:00:00Z`, any offset, optional
    /// fraction of a second).
    DateTimeRule {
        pattern: "^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}([.][0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$",
        min: 20,
        max: 64,
        rule: "an RFC 3339 date-time",
        format: "date-time",
        extra: |v| super::dto::parse_rfc3339(v).is_some(),
    }
);
text_rule!(
    /// A currency: ISO 4217 alpha-3, upper case (`CNY`), one of the list
    /// the spec gives.
    CurrencyRule {
        pattern: "^[A-Z]{3}$",
        min: 3,
        max: 3,
        rule: "a currency is an ISO 4217 alpha-3 code in upper case, e.g. CNY",
        values: cardbind_domain::Currency::all_codes,
    }
);
text_rule!(
    /// The currency of an amount: ISO 4217 alpha-3 with a minor unit.
    AmountCurrencyRule {
        pattern: "^[A-Z]{3}$",
        min: 3,
        max: 3,
        rule: "an amount's currency is an ISO 4217 alpha-3 code with a minor unit, e.g. CNY",
        values: cardbind_domain::Currency::amount_codes,
    }
);
text_rule!(
    /// An `Idempotency-Key`: 1–255 printable ASCII characters, not starting
    /// or ending with a space (HTTP drops those from a header value).
    IdempotencyKeyRule {
        pattern: "^[!-~]([ -~]{0,253}[!-~])?$",
        min: 1,
        max: 255,
        rule: "Idempotency-Key must be 1 to 255 printable ASCII characters",
    }
);

text_rule!(
    /// Where an audit listing goes on: the `cursor` of the last event of
    /// the previous page.
    CursorRule {
        // Digits bounded so that every value the pattern allows is one a
        // store can hold (instants and link numbers are signed 64-bit there,
        // places in a link 32-bit).
        pattern: "^[0-9]{1,15}[.][0-9]{1,18}[.][0-9]{1,9}[.](@system|[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63})$",
        min: 7,
        max: 120,
        rule: "an audit cursor from a previous page",
        extra: |v| super::dto::decode_cursor(v).is_some(),
    }
);

// Body fields. poem-openapi's `validator(pattern)` compiles its regex on
// every check (a third of a bind's CPU, measured with perf under the load
// generator); these rules declare the same schema and check with the
// compiled pattern cached.
text_rule!(
    /// A card number: 12–19 digits, spaces and dashes ignored.
    CardNumberRule { pattern: "^[ -]*([0-9][ -]*){12,19}$", min: 12, max: 64, rule: "a card number is 12 to 19 digits" }
);
text_rule!(
    /// A CVV: 3 or 4 digits, or empty.
    CvvRule { pattern: "^([0-9]{3,4})?$", min: 0, max: 4, rule: "a CVV is 3 or 4 digits" }
);
/// The combining marks a holder's name may carry after a letter: those of
/// the scripts names are written in (Latin, Greek and Cyrillic diacritics,
/// Hebrew and Arabic points, the Brahmic scripts of India and Sri Lanka,
/// Thai, Lao, Tibetan, Myanmar, Khmer, kana voicing), as explicit ranges of
/// code points that are marks in every table involved (this regex crate's
/// Unicode 16, the domain's, and Python 3.11's Unicode 14). Not `\p{M}`:
/// spec-driven fuzzers read it as whole Unicode blocks, unassigned code
/// points included (schemathesis does), and would send names the service
/// rightly refuses as valid ones.
macro_rules! name_marks {
    () => {
        concat!(
            "\\u0300-\\u036F\\u0483-\\u0487\\u0591-\\u05BD\\u05BF\\u05C1-\\u05C2\\u05C4-\\u05C5",
            "\\u05C7\\u0610-\\u061A\\u064B-\\u065F\\u0670\\u06D6-\\u06DC\\u06DF-\\u06E4",
            "\\u06E7-\\u06E8\\u06EA-\\u06ED\\u0900-\\u0903\\u093A-\\u093C\\u093E-\\u094F",
            "\\u0951-\\u0957\\u0962-\\u0963\\u0981-\\u0983\\u09BC\\u09BE-\\u09C4\\u09C7-\\u09C8",
            "\\u09CB-\\u09CD\\u09D7\\u09E2-\\u09E3\\u09FE\\u0A01-\\u0A03\\u0A3C\\u0A3E-\\u0A42",
            "\\u0A47-\\u0A48\\u0A4B-\\u0A4D\\u0A51\\u0A70-\\u0A71\\u0A75\\u0A81-\\u0A83\\u0ABC",
            "\\u0ABE-\\u0AC5\\u0AC7-\\u0AC9\\u0ACB-\\u0ACD\\u0AE2-\\u0AE3\\u0AFA-\\u0AFF",
            "\\u0B01-\\u0B03\\u0B3C\\u0B3E-\\u0B44\\u0B47-\\u0B48\\u0B4B-\\u0B4D\\u0B55-\\u0B57",
            "\\u0B62-\\u0B63\\u0B82\\u0BBE-\\u0BC2\\u0BC6-\\u0BC8\\u0BCA-\\u0BCD\\u0BD7",
            "\\u0C00-\\u0C04\\u0C3C\\u0C3E-\\u0C44\\u0C46-\\u0C48\\u0C4A-\\u0C4D\\u0C55-\\u0C56",
            "\\u0C62-\\u0C63\\u0C81-\\u0C83\\u0CBC\\u0CBE-\\u0CC4\\u0CC6-\\u0CC8\\u0CCA-\\u0CCD",
            "\\u0CD5-\\u0CD6\\u0CE2-\\u0CE3\\u0D00-\\u0D03\\u0D3B-\\u0D3C\\u0D3E-\\u0D44",
            "\\u0D46-\\u0D48\\u0D4A-\\u0D4D\\u0D57\\u0D62-\\u0D63\\u0D81-\\u0D83\\u0DCA",
            "\\u0DCF-\\u0DD4\\u0DD6\\u0DD8-\\u0DDF\\u0DF2-\\u0DF3\\u0E31\\u0E34-\\u0E3A",
            "\\u0E47-\\u0E4E\\u0EB1\\u0EB4-\\u0EBC\\u0EC8-\\u0ECD\\u0F18-\\u0F19\\u0F35\\u0F37",
            "\\u0F39\\u0F3E-\\u0F3F\\u0F71-\\u0F84\\u0F86-\\u0F87\\u0F8D-\\u0F97\\u0F99-\\u0FBC",
            "\\u0FC6\\u102B-\\u103E\\u1056-\\u1059\\u105E-\\u1060\\u1062-\\u1064\\u1067-\\u106D",
            "\\u1071-\\u1074\\u1082-\\u108D\\u108F\\u109A-\\u109D\\u17B4-\\u17D3\\u17DD",
            "\\u1AB0-\\u1ACE\\u1DC0-\\u1DFF\\u3099-\\u309A"
        )
    };
}

text_rule!(
    /// A holder's name: letters of any script and the combining marks
    /// their scripts write with, spaces and `. - ' ·`; a letter before any
    /// mark. (One class after the first letter, as the rule was before
    /// marks: fuzzers bound its length by rewriting the repetition, which
    /// they cannot do for nested groups, and otherwise drop most of what
    /// they generate.)
    HolderNameRule {
        pattern: concat!("^[ .'·-]*\\p{L}[\\p{L}", name_marks!(), " .'·-]*$"),
        min: 1,
        max: 64,
        rule: "a name is 1 to 64 letters (with their accents and marks), spaces and . - ' ·",
    }
);
text_rule!(
    /// A mainland resident ID number (its calendar date and check
    /// character are checked after).
    IdNumberRule {
        pattern: "^[1-9][0-9]{5}(19[0-9]{2}|20[0-9]{2}|2100)(0[1-9]|1[0-2])(0[1-9]|[12][0-9]|3[01])[0-9]{3}[0-9Xx]$",
        min: 18,
        max: 18,
        rule: "a resident ID number is 17 digits and a check character",
    }
);
text_rule!(
    /// A phone number: mainland mobile (optionally after +86, 0086 or 86)
    /// or E.164; spaces and dashes ignored.
    PhoneRule {
        pattern: "^[ -]*(\\+[ -]*(8[ -]*6[ -]*1[ -]*[3-9][ -]*([0-9][ -]*){9}|[1-79][ -]*([0-9][ -]*){7,14}|8[ -]*[0-57-9][ -]*([0-9][ -]*){6,13})|(0[ -]*0[ -]*8[ -]*6[ -]*|8[ -]*6[ -]*)?1[ -]*[3-9][ -]*([0-9][ -]*){9})$",
        min: 9,
        max: 64,
        rule: "a phone number is a mainland mobile number or E.164",
    }
);
text_rule!(
    /// A consent text version: 1–64 printable ASCII characters.
    TextVersionRule { pattern: "^[ -~]{1,64}$", min: 1, max: 64, rule: "a text version is 1 to 64 printable ASCII characters" }
);
text_rule!(
    /// A SHA-256 in hex.
    Sha256Rule { pattern: "^[0-9A-Fa-f]{64}$", min: 64, max: 64, rule: "a SHA-256 is 64 hex digits" }
);
text_rule!(
    /// A one-time password: 4–8 digits.
    OtpRule { pattern: "^[0-9]{4,8}$", min: 4, max: 8, rule: "an OTP is 4 to 8 digits" }
);

impl Text<UserIdRule> {
    /// The user id (the rule is `UserId`'s: it parses).
    pub fn user_id(&self) -> Result<cardbind_domain::UserId, cardbind_domain::Invalid> {
        cardbind_domain::UserId::parse(&self.0)
    }
}

impl Text<IdRule> {
    /// A card id (the rule is `BindingId`'s: it parses).
    pub fn card_id(&self) -> Result<cardbind_domain::BindingId, cardbind_domain::Invalid> {
        cardbind_domain::BindingId::parse(&self.0)
    }
}

impl Text<IdRule> {
    /// A share id (the same rule).
    pub fn share_id(&self) -> Result<cardbind_domain::ShareId, cardbind_domain::Invalid> {
        cardbind_domain::ShareId::parse(&self.0)
    }
}

impl Text<CurrencyRule> {
    /// The currency (`invalid_currency` for a code of the right shape that
    /// names none).
    pub fn currency(&self) -> Result<cardbind_domain::Currency, cardbind_domain::Invalid> {
        cardbind_domain::Currency::parse_field(&self.0, Param::Currency.name())
    }
}

pub type UserIdParam = Text<UserIdRule>;
pub type CurrencyParam = Text<CurrencyRule>;
pub type AmountCurrency = Text<AmountCurrencyRule>;
pub type IdParam = Text<IdRule>;
pub type BinParam = Text<BinRule>;
pub type DateTimeParam = Text<DateTimeRule>;
pub type IdempotencyKeyParam = Text<IdempotencyKeyRule>;
pub type CursorParam = Text<CursorRule>;

pub use crate::config::ChannelKind;

/// An audit action: the spec lists every one (`enum`), from the one list
/// the service has ([`AuditAction::ALL`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActionParam(pub AuditAction);

impl Type for ActionParam {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "string(audit_action)".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            enum_items: AuditAction::ALL
                .iter()
                .map(|a| Value::String(a.as_str().to_owned()))
                .collect(),
            ..MetaSchema::new("string")
        }))
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

impl ParseFromParameter for ActionParam {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        AuditAction::parse(value)
            .map(ActionParam)
            .ok_or_else(|| ParseError::custom(ACTION_RULE))
    }
}

impl ToJSON for ActionParam {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.as_str().to_owned()))
    }
}

const ACTION_RULE: &str = "`action` must be one of the audit actions the spec lists";

/// Every parameter the API takes, by the name poem reports when one does
/// not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Param {
    UserId,
    CardId,
    After,
    Bin,
    Channel,
    Since,
    Until,
    Action,
    Limit,
    IdempotencyKey,
    StepUpToken,
    ShareId,
    Currency,
}

impl Param {
    pub const ALL: [Param; 13] = [
        Param::UserId,
        Param::CardId,
        Param::After,
        Param::Bin,
        Param::Channel,
        Param::Since,
        Param::Until,
        Param::Action,
        Param::Limit,
        Param::IdempotencyKey,
        Param::StepUpToken,
        Param::ShareId,
        Param::Currency,
    ];

    /// The name in the spec (and in a refusal's `field`).
    pub const fn name(self) -> &'static str {
        match self {
            Param::UserId => "user_id",
            Param::CardId => "card_id",
            Param::After => "after",
            Param::Bin => "bin",
            Param::Channel => "channel",
            Param::Since => "since",
            Param::Until => "until",
            Param::Action => "action",
            Param::Limit => "limit",
            Param::IdempotencyKey => "Idempotency-Key",
            Param::StepUpToken => "X-Step-Up-Token",
            Param::ShareId => "share_id",
            Param::Currency => "currency",
        }
    }

    pub fn parse(name: &str) -> Option<Param> {
        Param::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The refusal of a value that is missing or does not parse: the code
    /// the domain gives the same value, so that a refusal by the
    /// parameter's declared format reads as it always has.
    pub fn refusal(self) -> ApiError {
        let name = self.name();
        let field = |code, message: String| ApiError::field(code, name, message);
        match self {
            Param::UserId => field(
                ErrorCode::InvalidUserId,
                format!("user_id is required and must be {ID_RULE}"),
            ),
            Param::CardId => field(
                ErrorCode::InvalidRequest,
                format!("card_id must be {ID_RULE}"),
            ),
            Param::After => field(
                ErrorCode::InvalidRequest,
                "`after` is not a cursor from a previous page".to_owned(),
            ),
            Param::Bin => field(ErrorCode::InvalidRequest, BinRule::RULE.to_owned()),
            Param::Channel => field(ErrorCode::NotFound, "no such channel is enabled".to_owned())
                .with_status(StatusCode::NOT_FOUND),
            Param::Since | Param::Until => field(
                ErrorCode::InvalidRequest,
                format!("`{name}` must be an RFC 3339 date-time"),
            ),
            Param::Action => field(ErrorCode::InvalidRequest, ACTION_RULE.to_owned()),
            Param::Limit => field(
                ErrorCode::InvalidRequest,
                "`limit` must be a whole number in the range the spec declares".to_owned(),
            ),
            Param::IdempotencyKey => field(
                ErrorCode::InvalidRequest,
                IdempotencyKeyRule::RULE.to_owned(),
            ),
            Param::StepUpToken => field(
                ErrorCode::InvalidRequest,
                "X-Step-Up-Token must be a string".to_owned(),
            ),
            Param::ShareId => field(
                ErrorCode::InvalidRequest,
                format!("share_id must be {ID_RULE}"),
            ),
            Param::Currency => field(ErrorCode::InvalidCurrency, CurrencyRule::RULE.to_owned()),
        }
    }
}

/// The refusal for a parameter poem could not read, by its reported name
/// (one the API does not declare cannot come from poem; it is answered as
/// an invalid request all the same).
pub fn param_refusal(name: &str) -> ApiError {
    match Param::parse(name) {
        Some(p) => p.refusal(),
        None => ApiError::field(
            ErrorCode::InvalidRequest,
            name.to_owned(),
            format!("the parameter `{name}` is missing or malformed"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cardbind_domain::{BindingId, UserId};

    /// Strings around the id rule's edges: every ASCII character at the
    /// start and inside, lengths 0, 1, 64 and 65, and non-ASCII.
    fn id_samples() -> Vec<String> {
        let mut v = vec![
            String::new(),
            "a".repeat(64),
            "a".repeat(65),
            "é".into(),
            "aé".into(),
            "a\n".into(),
            "a\u{0}".into(),
            "１".into(),
        ];
        for b in 0u8..=0x7f {
            let c = b as char;
            v.push(c.to_string());
            v.push(format!("a{c}"));
            v.push(format!("{c}a"));
        }
        v
    }

    #[test]
    fn every_pattern_compiles() {
        for p in [
            ID_PATTERN,
            BinRule::PATTERN,
            DateTimeRule::PATTERN,
            CursorRule::PATTERN,
            IdempotencyKeyRule::PATTERN,
            CurrencyRule::PATTERN,
        ] {
            assert!(Regex::new(p).is_ok(), "{p}");
        }
    }

    #[test]
    fn the_action_parameter_lists_and_takes_exactly_the_audit_actions() {
        let MetaSchemaRef::Inline(schema) = ActionParam::schema_ref() else {
            panic!("inline schema")
        };
        let listed: Vec<&str> = schema.enum_items.iter().filter_map(Value::as_str).collect();
        let all: Vec<&str> = AuditAction::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(listed, all);
        for a in all {
            assert!(ActionParam::parse_from_parameter(a).is_ok(), "{a}");
        }
        for bad in ["a", "Binding.Create", "binding.create ", ""] {
            assert!(ActionParam::parse_from_parameter(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn id_rule_is_the_domain_rule() {
        for s in id_samples() {
            assert_eq!(
                UserIdParam::parse(&s).is_some(),
                UserId::parse(&s).is_ok(),
                "user id {s:?}"
            );
            assert_eq!(
                IdParam::parse(&s).is_some(),
                BindingId::parse(&s).is_ok(),
                "card id {s:?}"
            );
        }
    }

    #[test]
    fn idempotency_keys() {
        assert!(IdempotencyKeyParam::parse("k").is_some());
        assert!(IdempotencyKeyParam::parse("a b").is_some());
        assert!(IdempotencyKeyParam::parse(&"k".repeat(255)).is_some());
        for bad in ["", " a", "a ", "a\tb", "ключ", &"k".repeat(256)] {
            assert!(IdempotencyKeyParam::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn date_times_are_rfc3339_instants() {
        for ok in [
            "2030-01-31T12:00:00Z",
            "2030-01-31t12:00:00z",
            "0001-01-01T00:00:00+23:59",
            "9999-12-31T23:59:59.999999-23:59",
        ] {
            assert!(DateTimeParam::parse(ok).is_some(), "{ok}");
        }
        for bad in [
            "2030-02-30T00:00:00Z",
            "2030-01-31 12:00:00Z",
            "2030-01-31T12:00:00",
            "yesterday",
        ] {
            assert!(DateTimeParam::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn body_fields_check_their_rule_and_never_print_their_value() {
        let pan = Text::<CardNumberRule>::parse("4111 1111 1111 1111").unwrap();
        assert!(!format!("{pan:?}").contains("4111"));
        assert!(Text::<CardNumberRule>::parse("4111").is_none());
        assert!(Text::<PhoneRule>::parse("+86 138 0013 8000").is_some());
        assert!(Text::<PhoneRule>::parse("12345").is_none());
        assert!(Text::<HolderNameRule>::parse("张三").is_some());
        assert!(Text::<HolderNameRule>::parse("...").is_none());
        assert!(Text::<CvvRule>::parse("").is_some());
        assert!(Text::<OtpRule>::parse("123").is_none());
    }

    #[test]
    fn refusals_keep_their_codes() {
        assert_eq!(param_refusal("user_id").code, ErrorCode::InvalidUserId);
        assert_eq!(param_refusal("card_id").code, ErrorCode::InvalidRequest);
        assert_eq!(param_refusal("channel").status, StatusCode::NOT_FOUND);
        assert_eq!(param_refusal("limit").field.as_deref(), Some("limit"));
        assert_eq!(param_refusal("currency").code, ErrorCode::InvalidCurrency);
        let known = CurrencyParam::parse("CNY").unwrap();
        assert!(known.currency().is_ok());
        // A code of the right shape that is no currency is refused by the
        // parameter itself, as the spec's enum says.
        assert!(CurrencyParam::parse("ABC").is_none());
        assert!(CurrencyParam::parse("cny").is_none());
        // Amounts take only currencies with a minor unit.
        assert!(AmountCurrency::parse("JPY").is_some());
        assert!(AmountCurrency::parse("XAU").is_none());
        assert!(CurrencyParam::parse("XAU").is_some());
        let listed = CurrencyRule::schema().enum_items;
        assert!(listed.contains(&Value::from("CNY")) && listed.len() > 150);
    }
}
