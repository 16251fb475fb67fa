//! Issuer data by BIN: which bank issued a card, whether it is a debit,
//! credit or prepaid card, where, and in which currency — and the rule a
//! channel applies to it.
//!
//! A [`BinTable`] is a set of [`BinEntry`]s, each an inclusive range of IIN
//! prefixes ([`BinRange`], 6 to 19 digits) with what is known about the
//! cards in it ([`BinInfo`]). Ranges of different prefix lengths are
//! compared by the card numbers they cover: every prefix is widened to the
//! 19-digit interval of numbers that start with it (`622848` covers
//! `6228480000000000000..=6228489999999999999`), so `622848` and
//! `62284800..62284899` describe the same cards.
//!
//! ## Nesting and overlaps
//! A range may lie wholly inside another (an 8-digit product range inside
//! its bank's 6-digit BIN): the inner one is *more specific* and wins a
//! lookup. Two ranges that cover the same numbers, or that overlap without
//! one containing the other, are refused when the table is built — such a
//! table could not say which entry a card belongs to.
//!
//! ## Lookup
//! [`BinTable::lookup`] takes the leading digits of a card number (a BIN
//! of 6 or 8 digits, or the whole number) and returns the most specific
//! entry whose range covers *every* number starting with those digits. So
//! a whole card number finds its most specific range, while a 6-digit BIN
//! does not find an 8-digit range inside it (the other numbers of that BIN
//! may belong to someone else). Entries are kept sorted by range start,
//! each with a link to the entry that contains it; a lookup is one binary
//! search and a walk up at most a few links.

use std::fmt;

use crate::card::CardNumber;
use crate::error::{BadRequestCode, Invalid};

mod rule;
mod values;

pub use rule::{ChannelCardRule, UnknownBins};
pub use values::{CardType, Country, Currency, Issuer, IssuerCode};

/// Digits in the widest card number; every range is normalised to numbers
/// of this many digits.
const WIDTH: usize = 19;

/// Fewest digits in a range bound. Shorter prefixes name a card scheme,
/// not an issuer.
pub const MIN_PREFIX_DIGITS: usize = 6;

fn data_error(field: &'static str, message: impl Into<String>) -> Invalid {
    Invalid::field(BadRequestCode::InvalidRequest, field, message.into())
}

/// `10^n` for `n <= 19`.
fn pow10(n: usize) -> u64 {
    10u64.pow(u32::try_from(n).unwrap_or(0))
}

/// The 19-digit interval of numbers that start with `digits` (1 to 19 ASCII
/// digits), or `None` for anything else.
fn interval(digits: &str) -> Option<(u64, u64)> {
    let len = digits.len();
    if !(1..=WIDTH).contains(&len) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    let scale = pow10(WIDTH - len);
    // (value + 1) * scale <= 10^19, which fits in a u64.
    Some((value * scale, (value + 1) * scale - 1))
}

/// An inclusive range of IIN prefixes, both bounds with the same number of
/// digits (6 to 19): `622848..=622848`, `62284800..=62284899`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BinRange {
    low: String,
    high: String,
    /// First and last 19-digit number covered.
    start: u64,
    end: u64,
}

impl BinRange {
    pub const LOW_FIELD: &'static str = "low";
    pub const HIGH_FIELD: &'static str = "high";

    /// Parses a range from its two bounds; `high` empty means the single
    /// prefix `low`.
    pub fn parse(low: &str, high: &str) -> Result<BinRange, Invalid> {
        let low = low.trim();
        let high = match high.trim() {
            "" => low,
            h => h,
        };
        let bound = |s: &str, field: &'static str| {
            let ok = (MIN_PREFIX_DIGITS..=WIDTH).contains(&s.len())
                && s.bytes().all(|b| b.is_ascii_digit());
            if ok {
                Ok(())
            } else {
                Err(data_error(
                    field,
                    format!("a range bound is {MIN_PREFIX_DIGITS} to {WIDTH} digits"),
                ))
            }
        };
        bound(low, Self::LOW_FIELD)?;
        bound(high, Self::HIGH_FIELD)?;
        if low.len() != high.len() {
            return Err(data_error(
                Self::HIGH_FIELD,
                "both bounds of a range have the same number of digits",
            ));
        }
        // Same length: string order is numeric order.
        if low > high {
            return Err(data_error(
                Self::HIGH_FIELD,
                "the high bound is below the low bound",
            ));
        }
        let (start, _) = interval(low).ok_or_else(|| data_error(Self::LOW_FIELD, "not digits"))?;
        let (_, end) = interval(high).ok_or_else(|| data_error(Self::HIGH_FIELD, "not digits"))?;
        Ok(BinRange {
            low: low.to_owned(),
            high: high.to_owned(),
            start,
            end,
        })
    }

    /// The single prefix `prefix`.
    pub fn prefix(prefix: &str) -> Result<BinRange, Invalid> {
        BinRange::parse(prefix, prefix)
    }

    pub fn low(&self) -> &str {
        &self.low
    }

    pub fn high(&self) -> &str {
        &self.high
    }

    /// Digits in each bound.
    pub fn prefix_len(&self) -> usize {
        self.low.len()
    }

    /// Whether every card number this range covers is also covered by `self`.
    pub fn contains(&self, other: &BinRange) -> bool {
        self.start <= other.start && other.end <= self.end
    }

    /// Whether the two ranges cover at least one number in common.
    pub fn intersects(&self, other: &BinRange) -> bool {
        self.start <= other.end && other.start <= self.end
    }

    /// Whether both ranges cover exactly the same numbers (possibly written
    /// with different prefix lengths).
    pub fn same_numbers(&self, other: &BinRange) -> bool {
        self.start == other.start && self.end == other.end
    }

    /// Whether every number starting with `digits` (1 to 19 digits) is in
    /// this range.
    pub fn covers(&self, digits: &str) -> bool {
        interval(digits).is_some_and(|(s, e)| self.start <= s && e <= self.end)
    }

    /// How many 19-digit numbers the range covers, less one (smaller is more
    /// specific).
    pub fn span(&self) -> u64 {
        self.end - self.start
    }
}

impl fmt::Debug for BinRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BinRange({}..={})", self.low, self.high)
    }
}

impl fmt::Display for BinRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.low == self.high {
            f.write_str(&self.low)
        } else {
            write!(f, "{}-{}", self.low, self.high)
        }
    }
}

/// What is known about the cards of one range. The issuer is always known;
/// type, country and currency may not be.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BinInfo {
    pub issuer: Issuer,
    pub card_type: Option<CardType>,
    pub country: Option<Country>,
    pub currency: Option<Currency>,
}

/// One range of a table and what it says.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BinEntry {
    pub range: BinRange,
    pub info: BinInfo,
}

impl BinEntry {
    /// Parses one entry from text fields as a file carries them; empty
    /// `high`, `card_type`, `country` or `currency` mean "the same as low"
    /// and "unknown". The first field at fault is refused with its name.
    #[allow(clippy::too_many_arguments)]
    pub fn parse(
        low: &str,
        high: &str,
        issuer_code: &str,
        issuer_name_zh: &str,
        issuer_name_en: &str,
        card_type: &str,
        country: &str,
        currency: &str,
    ) -> Result<BinEntry, Invalid> {
        let range = BinRange::parse(low, high)?;
        let issuer = Issuer::parse(issuer_code, issuer_name_zh, issuer_name_en)?;
        fn optional(s: &str) -> Option<&str> {
            (!s.trim().is_empty()).then_some(s)
        }
        Ok(BinEntry {
            range,
            info: BinInfo {
                issuer,
                card_type: optional(card_type).map(CardType::parse).transpose()?,
                country: optional(country).map(Country::parse).transpose()?,
                currency: optional(currency).map(Currency::parse).transpose()?,
            },
        })
    }
}

/// Why a set of entries is not a table. Positions are those of the input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BinTableError {
    /// Two ranges share numbers without one lying inside the other.
    #[error("entries {first} and {second} overlap without one containing the other")]
    Overlap { first: usize, second: usize },
    /// Two ranges cover exactly the same numbers.
    #[error("entries {first} and {second} cover the same numbers")]
    Duplicate { first: usize, second: usize },
}

impl BinTableError {
    /// The two input positions at fault, in input order.
    pub fn positions(&self) -> (usize, usize) {
        match *self {
            BinTableError::Overlap { first, second }
            | BinTableError::Duplicate { first, second } => (first, second),
        }
    }
}

/// A valid set of BIN entries, sorted for lookup. Cheap to share behind an
/// `Arc`; immutable once built.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BinTable {
    /// Sorted by (start ascending, end descending): a range comes before
    /// the ranges inside it.
    entries: Vec<BinEntry>,
    /// For each entry, the position of the smallest entry containing it.
    parent: Vec<Option<usize>>,
    /// Each entry's (start, end), apart from the entries: a lookup's binary
    /// search touches only this compact array (16 bytes an entry), which
    /// stays in cache where the entries would not.
    bounds: Vec<(u64, u64)>,
}

impl BinTable {
    /// A table with no entries: every lookup finds nothing.
    pub fn empty() -> BinTable {
        BinTable::default()
    }

    /// Builds a table, refusing ranges that overlap without nesting or that
    /// cover the same numbers twice (see the module docs).
    pub fn new(entries: Vec<BinEntry>) -> Result<BinTable, BinTableError> {
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.sort_by(|&a, &b| {
            let (ra, rb) = (&entries[a].range, &entries[b].range);
            ra.start
                .cmp(&rb.start)
                .then(rb.end.cmp(&ra.end))
                .then(a.cmp(&b))
        });
        let pair = |x: usize, y: usize| (x.min(y), x.max(y));
        // The chain of open ranges containing the current one, innermost last
        // (positions in `order`).
        let mut open: Vec<usize> = Vec::new();
        let mut parent = vec![None; entries.len()];
        for (pos, &idx) in order.iter().enumerate() {
            let r = &entries[idx].range;
            while open
                .last()
                .is_some_and(|&p| entries[order[p]].range.end < r.start)
            {
                open.pop();
            }
            if let Some(&p) = open.last() {
                let outer = &entries[order[p]].range;
                let (first, second) = pair(order[p], idx);
                if outer.same_numbers(r) {
                    return Err(BinTableError::Duplicate { first, second });
                }
                if !outer.contains(r) {
                    return Err(BinTableError::Overlap { first, second });
                }
                parent[pos] = Some(p);
            }
            open.push(pos);
        }
        let mut slots: Vec<Option<BinEntry>> = entries.into_iter().map(Some).collect();
        let sorted: Vec<BinEntry> = order
            .iter()
            .filter_map(|&i| slots.get_mut(i).and_then(Option::take))
            .collect();
        let bounds = sorted
            .iter()
            .map(|e: &BinEntry| (e.range.start, e.range.end))
            .collect();
        Ok(BinTable {
            entries: sorted,
            parent,
            bounds,
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry, ordered by range start (outer ranges before the ranges
    /// inside them).
    pub fn entries(&self) -> &[BinEntry] {
        &self.entries
    }

    /// The most specific entry covering every card number that starts with
    /// `digits` (1 to 19 digits: a BIN or a whole card number). `None` for
    /// anything that is not digits, and where no range covers them all.
    pub fn lookup(&self, digits: &str) -> Option<&BinEntry> {
        let (start, end) = interval(digits)?;
        let after = self.bounds.partition_point(|&(s, _)| s <= start);
        let mut pos = after.checked_sub(1)?;
        loop {
            let &(s, e) = self.bounds.get(pos)?;
            if s <= start && end <= e {
                return self.entries.get(pos);
            }
            pos = (*self.parent.get(pos)?)?;
        }
    }

    /// The most specific entry for this card (its whole number).
    pub fn lookup_card(&self, card: &CardNumber) -> Option<&BinEntry> {
        // The number is only compared here; it is not kept or shown.
        self.lookup(card.expose())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    fn entry(low: &str, high: &str, code: &str) -> BinEntry {
        BinEntry::parse(low, high, code, "银行", "Bank", "debit", "CN", "CNY").unwrap()
    }

    #[test]
    fn ranges_of_different_lengths_compare_by_the_numbers_they_cover() {
        let six = BinRange::prefix("622848").unwrap();
        let eight = BinRange::parse("62284800", "62284899").unwrap();
        assert!(six.same_numbers(&eight));
        let inner = BinRange::prefix("62284801").unwrap();
        assert!(six.contains(&inner) && !inner.contains(&six));
        assert!(six.covers("6228480112345678901"));
        assert!(!six.covers("62284"), "a shorter prefix is not covered");
        let next = BinRange::prefix("622849").unwrap();
        assert!(!six.intersects(&next));
        assert!(six.span() > inner.span());
        assert_eq!(eight.to_string(), "62284800-62284899");
        assert_eq!(six.to_string(), "622848");
    }

    #[test]
    fn malformed_ranges_are_refused_with_their_field() {
        for (low, high, field) in [
            ("62284", "", "low"),
            ("62284a", "", "low"),
            ("622848", "6228489", "high"),
            ("622849", "622848", "high"),
            ("622848", "62284x", "high"),
            ("62284800000000000000", "", "low"),
        ] {
            let e = BinRange::parse(low, high).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidRequest, "{low}-{high}");
            assert_eq!(e.field, Some(field), "{low}-{high}");
        }
        assert!(BinRange::parse("4111111111111111111", "").is_ok());
    }

    #[test]
    fn value_types_validate() {
        assert_eq!(Country::parse("CN").unwrap().code(), "CN");
        assert_eq!(Country::parse("CN").unwrap().name(), "China");
        for bad in ["cn", "C", "CHN", "ZZ", "", "C1"] {
            assert_eq!(
                Country::parse(bad).unwrap_err().field,
                Some("country"),
                "{bad}"
            );
        }
        let cny = Currency::parse("CNY").unwrap();
        assert_eq!((cny.code(), cny.numeric()), ("CNY", 156));
        assert_eq!(Currency::from_numeric(344).map(|c| c.code()), Some("HKD"));
        for bad in ["cny", "CN", "ABC", "RMB", ""] {
            assert!(Currency::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(CardType::parse("debit"), Ok(CardType::Debit));
        assert_eq!(CardType::Debit.label_zh(), "储蓄卡");
        assert_eq!(CardType::Credit.label_zh(), "信用卡");
        assert_eq!(CardType::Prepaid.label_zh(), "预付卡");
        assert!(CardType::parse("DC").is_err());
        assert!(IssuerCode::parse("CMB").is_ok());
        for bad in ["C", "cmb", "1CMB", "C-MB", "ABCDEFGHIJKLMNOPQRSTU"] {
            assert!(IssuerCode::parse(bad).is_err(), "{bad}");
        }
        let e = Issuer::parse("CMB", "", "China Merchants Bank").unwrap_err();
        assert_eq!(e.field, Some("issuer_name_zh"));
        let e = Issuer::parse("CMB", "招商银行", "China\nMerchants").unwrap_err();
        assert_eq!(e.field, Some("issuer_name_en"));
        let e =
            BinEntry::parse("622588", "", "CMB", "招商银行", "CMB", "savings", "", "").unwrap_err();
        assert_eq!(e.field, Some("card_type"));
        let e = BinEntry::parse("622588", "", "CMB", "招商银行", "CMB", "", "", "RMB").unwrap_err();
        assert_eq!(e.field, Some("currency"));
        let ok = BinEntry::parse("622588", "", "CMB", "招商银行", "CMB", "", "", "").unwrap();
        assert_eq!(ok.info.card_type, None);
        assert_eq!(ok.info.country, None);
    }

    #[test]
    fn the_most_specific_range_wins_and_a_bin_does_not_find_a_narrower_range() {
        let t = BinTable::new(vec![
            entry("62284801", "", "INNER"),
            entry("622848", "", "OUTER"),
            entry("622849", "", "NEXT"),
            entry("6228480155", "6228480155", "DEEPEST"),
        ])
        .unwrap();
        let code = |d: &str| {
            t.lookup(d)
                .map(|e| e.info.issuer.code().as_str().to_owned())
        };
        assert_eq!(code("6228480112345678901").as_deref(), Some("INNER"));
        assert_eq!(code("6228480155345678901").as_deref(), Some("DEEPEST"));
        assert_eq!(code("6228480212345678901").as_deref(), Some("OUTER"));
        assert_eq!(code("622848").as_deref(), Some("OUTER"));
        assert_eq!(code("62284801").as_deref(), Some("INNER"));
        assert_eq!(code("6228499999999999").as_deref(), Some("NEXT"));
        assert_eq!(code("62284"), None, "narrower than the query");
        assert_eq!(code("622850"), None);
        assert_eq!(code("62284a"), None);
        assert_eq!(code(""), None);
        assert_eq!(t.entries()[0].info.issuer.code().as_str(), "OUTER");
    }

    #[test]
    fn overlaps_and_duplicates_are_refused_with_input_positions() {
        let e = BinTable::new(vec![
            entry("622700", "622709", "AA"),
            entry("621700", "", "BB"),
            entry("622705", "622712", "CC"),
        ])
        .unwrap_err();
        assert_eq!(
            e,
            BinTableError::Overlap {
                first: 0,
                second: 2
            }
        );
        let e = BinTable::new(vec![
            entry("62284800", "62284899", "AA"),
            entry("622848", "", "BB"),
        ])
        .unwrap_err();
        assert_eq!(
            e,
            BinTableError::Duplicate {
                first: 0,
                second: 1
            }
        );
        assert_eq!(e.positions(), (0, 1));
    }

    #[test]
    fn channel_rules() {
        let debit_cn = BinEntry::parse(
            "622848",
            "",
            "ABC",
            "中国农业银行",
            "ABC",
            "debit",
            "CN",
            "CNY",
        )
        .unwrap()
        .info;
        let credit_cn = BinInfo {
            card_type: Some(CardType::Credit),
            ..debit_cn.clone()
        };
        let debit_hk = BinInfo {
            country: Some(Country::parse("HK").unwrap()),
            ..debit_cn.clone()
        };
        let untyped = BinInfo {
            card_type: None,
            ..debit_cn.clone()
        };
        assert!(ChannelCardRule::accept_all().check(None).is_ok());
        assert!(ChannelCardRule::accept_all().is_open());
        let rule = ChannelCardRule {
            card_types: vec![CardType::Debit],
            countries: vec![Country::parse("CN").unwrap()],
            unknown_bins: UnknownBins::Accept,
        };
        assert!(!rule.is_open());
        assert!(rule.check(Some(&debit_cn)).is_ok());
        let e = rule.check(Some(&credit_cn)).unwrap_err();
        assert_eq!(e.code, ErrorCode::CardNotAcceptedByChannel);
        assert_eq!(e.field, Some("card_number"));
        assert_eq!(e.message, "this channel takes only debit cards");
        let e = rule.check(Some(&debit_hk)).unwrap_err();
        assert_eq!(e.message, "this channel takes only cards issued in CN");
        assert!(
            rule.check(Some(&untyped)).is_err(),
            "an unknown type does not qualify"
        );
        assert!(
            rule.check(None).is_ok(),
            "unknown BINs are accepted by default"
        );
        let strict = ChannelCardRule {
            unknown_bins: UnknownBins::Refuse,
            ..rule
        };
        assert_eq!(
            strict.check(None).unwrap_err().code,
            ErrorCode::CardNotAcceptedByChannel
        );
        assert_eq!(UnknownBins::parse("refuse"), Some(UnknownBins::Refuse));
        assert_eq!(UnknownBins::parse("maybe"), None);
    }
}
