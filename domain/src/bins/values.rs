//! The values a BIN entry holds: issuer, card type, country, currency.

use std::fmt;

use super::data_error;
use crate::error::{BadRequestCode, Invalid};

/// An issuer's code, as Chinese payment channels name banks: `ICBC`, `CMB`,
/// `COMM`, `PSBC`… 2 to 20 of `A-Z 0-9 _`, starting with a letter.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IssuerCode(String);

impl IssuerCode {
    pub const FIELD: &'static str = "issuer_code";

    pub fn parse(s: &str) -> Result<IssuerCode, Invalid> {
        let s = s.trim();
        let ok = (2..=20).contains(&s.len())
            && s.bytes().next().is_some_and(|b| b.is_ascii_uppercase())
            && s.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if ok {
            Ok(IssuerCode(s.to_owned()))
        } else {
            Err(data_error(
                Self::FIELD,
                "an issuer code is 2 to 20 of A-Z 0-9 _ starting with a letter",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IssuerCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The bank that issued a card: its code and its names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Issuer {
    code: IssuerCode,
    name_zh: String,
    name_en: String,
}

impl Issuer {
    pub const NAME_ZH_FIELD: &'static str = "issuer_name_zh";
    pub const NAME_EN_FIELD: &'static str = "issuer_name_en";
    /// Longest name, in characters.
    pub const MAX_NAME_CHARS: usize = 100;

    /// Both names are required: 1 to 100 characters once trimmed, no
    /// control characters.
    pub fn parse(code: &str, name_zh: &str, name_en: &str) -> Result<Issuer, Invalid> {
        let code = IssuerCode::parse(code)?;
        let name = |s: &str, field: &'static str| {
            let s = s.trim();
            let n = s.chars().count();
            if (1..=Self::MAX_NAME_CHARS).contains(&n) && !s.chars().any(char::is_control) {
                Ok(s.to_owned())
            } else {
                Err(data_error(
                    field,
                    "a name is 1 to 100 characters without control characters",
                ))
            }
        };
        Ok(Issuer {
            code,
            name_zh: name(name_zh, Self::NAME_ZH_FIELD)?,
            name_en: name(name_en, Self::NAME_EN_FIELD)?,
        })
    }

    pub fn code(&self) -> &IssuerCode {
        &self.code
    }

    /// The name in Chinese, as wallets show it (`招商银行`).
    pub fn name_zh(&self) -> &str {
        &self.name_zh
    }

    pub fn name_en(&self) -> &str {
        &self.name_en
    }
}

/// What kind of account a card draws on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CardType {
    Debit,
    Credit,
    Prepaid,
}

impl CardType {
    pub const FIELD: &'static str = "card_type";
    pub const ALL: [CardType; 3] = [CardType::Debit, CardType::Credit, CardType::Prepaid];

    /// Stable lowercase name used in the API, configuration and imports.
    pub const fn as_str(self) -> &'static str {
        match self {
            CardType::Debit => "debit",
            CardType::Credit => "credit",
            CardType::Prepaid => "prepaid",
        }
    }

    /// The label Chinese wallets show (`招商银行 储蓄卡 尾号 4444`).
    pub const fn label_zh(self) -> &'static str {
        match self {
            CardType::Debit => "储蓄卡",
            CardType::Credit => "信用卡",
            CardType::Prepaid => "预付卡",
        }
    }

    pub fn parse(s: &str) -> Result<CardType, Invalid> {
        let s = s.trim();
        CardType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| data_error(Self::FIELD, "a card type is debit, credit or prepaid"))
    }
}

impl fmt::Display for CardType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A country by its ISO 3166-1 alpha-2 code (`CN`, `HK`, `US`). Only
/// assigned codes exist (the list of the `iso_country` crate).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Country(iso_currency::Country);

impl Country {
    pub const FIELD: &'static str = "country";

    /// Two upper-case letters naming an assigned country.
    pub fn parse(s: &str) -> Result<Country, Invalid> {
        let s = s.trim();
        let refused = || {
            data_error(
                Self::FIELD,
                "a country is an assigned ISO 3166-1 alpha-2 code in upper case, e.g. CN",
            )
        };
        if s.len() != 2 || !s.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(refused());
        }
        match s.parse::<iso_currency::Country>() {
            Ok(c) if c != iso_currency::Country::Unspecified => Ok(Country(c)),
            _ => Err(refused()),
        }
    }

    /// The alpha-2 code.
    pub fn code(&self) -> String {
        self.0.to_string()
    }

    /// The English short name (`China`).
    pub fn name(&self) -> &'static str {
        self.0.name()
    }
}

impl fmt::Debug for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Country({})", self.0)
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Codes ISO 4217 withdrew that the `iso_currency` list still holds.
/// (`VES`, which that crate marks superseded by `VED`, is still listed by
/// ISO beside it.)
const WITHDRAWN: [&str; 5] = ["BGN", "CUC", "HRK", "SLL", "ZWL"];

/// A currency by its ISO 4217 alpha-3 code (`CNY`), with its numeric code
/// (156). Only listed codes exist (the list of the `iso_currency` crate).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency(iso_currency::Currency);

impl Currency {
    pub const FIELD: &'static str = "currency";

    /// Three upper-case letters naming a listed currency.
    pub fn parse(s: &str) -> Result<Currency, Invalid> {
        let s = s.trim();
        let ok = s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase());
        iso_currency::Currency::from_code(s)
            .filter(|_| ok)
            .map(Currency)
            .ok_or_else(|| {
                data_error(
                    Self::FIELD,
                    "a currency is an ISO 4217 alpha-3 code in upper case, e.g. CNY",
                )
            })
    }

    /// Every code [`Currency::parse`] accepts, in alphabetical order (what
    /// the API spec lists as the values of a currency).
    pub fn all_codes() -> Vec<&'static str> {
        Currency::codes_where(|_| true)
    }

    /// The codes of currencies with a minor unit that are not a fund's
    /// unit of account and are still issued: those an amount can be in
    /// (not gold, funds such as `BOV` or `CLF`, test codes, or a currency
    /// ISO 4217 withdrew).
    pub fn amount_codes() -> Vec<&'static str> {
        Currency::codes_where(|c| {
            c.minor_unit_digits().is_some() && !c.is_fund() && !c.is_withdrawn()
        })
    }

    /// A currency ISO 4217 withdrew, replaced by another (Cuba's CUC in
    /// 2021, Croatia's HRK in 2023, Sierra Leone's SLL and Zimbabwe's ZWL
    /// in 2024, Bulgaria's BGN in 2026): still a code a card's stored data
    /// may name, no longer one a new amount is in.
    pub fn is_withdrawn(&self) -> bool {
        WITHDRAWN.contains(&self.code())
    }

    /// A fund's unit of account (ISO 4217's fund codes: `BOV`, `CLF`,
    /// `USN`…), not money one pays with.
    pub fn is_fund(&self) -> bool {
        self.0.is_fund()
    }

    /// The listed codes (every currency has a numeric code) of currencies
    /// that `keep`, sorted, once each.
    fn codes_where(keep: impl Fn(&Currency) -> bool) -> Vec<&'static str> {
        (0..=999u16)
            .filter_map(Currency::from_numeric)
            .filter(|c| keep(c))
            .map(|c| c.code())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// Parses a currency a client named (an amount's, a filter's): the
    /// same rule as [`Currency::parse`], refused as `invalid_currency` on
    /// `field`.
    pub fn parse_field(s: &str, field: &'static str) -> Result<Currency, Invalid> {
        Currency::parse(s).map_err(|_| {
            Invalid::field(
                BadRequestCode::InvalidCurrency,
                field,
                "a currency is an ISO 4217 alpha-3 code in upper case, e.g. CNY",
            )
        })
    }

    /// Digits after the decimal point of the currency's minor unit (`CNY`
    /// → 2, `JPY` → 0); `None` for codes without one (gold, test codes).
    pub fn minor_unit_digits(&self) -> Option<u16> {
        self.0.exponent()
    }

    /// The currency with this ISO 4217 numeric code.
    pub fn from_numeric(n: u16) -> Option<Currency> {
        iso_currency::Currency::from_numeric(n).map(Currency)
    }

    pub fn code(&self) -> &'static str {
        self.0.code()
    }

    /// The ISO 4217 numeric code (`CNY` → 156).
    pub fn numeric(&self) -> u16 {
        self.0.numeric()
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({})", self.code())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}
