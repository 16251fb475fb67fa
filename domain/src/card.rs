//! Card values: the number (PAN) with its brand, the expiry date and the CVV.

use std::fmt;

use crate::error::{BadRequestCode, Invalid};

/// Card schemes recognised from the IIN/BIN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CardBrand {
    Visa,
    Mastercard,
    Amex,
    UnionPay,
    Jcb,
    Discover,
    DinersClub,
    Maestro,
    Mir,
}

impl CardBrand {
    pub const ALL: [CardBrand; 9] = [
        CardBrand::Visa,
        CardBrand::Mastercard,
        CardBrand::Amex,
        CardBrand::UnionPay,
        CardBrand::Jcb,
        CardBrand::Discover,
        CardBrand::DinersClub,
        CardBrand::Maestro,
        CardBrand::Mir,
    ];

    /// Stable lowercase name used in the API and storage.
    pub const fn as_str(self) -> &'static str {
        match self {
            CardBrand::Visa => "visa",
            CardBrand::Mastercard => "mastercard",
            CardBrand::Amex => "amex",
            CardBrand::UnionPay => "unionpay",
            CardBrand::Jcb => "jcb",
            CardBrand::Discover => "discover",
            CardBrand::DinersClub => "diners_club",
            CardBrand::Maestro => "maestro",
            CardBrand::Mir => "mir",
        }
    }

    pub fn parse(s: &str) -> Option<CardBrand> {
        CardBrand::ALL.into_iter().find(|b| b.as_str() == s)
    }

    /// Lengths (number of digits) this brand issues.
    pub fn lengths(self) -> &'static [usize] {
        match self {
            CardBrand::Visa => &[13, 16, 19],
            CardBrand::Mastercard => &[16],
            CardBrand::Amex => &[15],
            CardBrand::UnionPay => &[16, 17, 18, 19],
            CardBrand::Jcb => &[16, 17, 18, 19],
            CardBrand::Discover => &[16, 17, 18, 19],
            CardBrand::DinersClub => &[14, 15, 16, 17, 18, 19],
            CardBrand::Maestro => &[12, 13, 14, 15, 16, 17, 18, 19],
            CardBrand::Mir => &[16, 17, 18, 19],
        }
    }

    /// Whether numbers of this brand must pass the Luhn check. UnionPay
    /// issues numbers that do not, and processors accept them.
    pub const fn requires_luhn(self) -> bool {
        !matches!(self, CardBrand::UnionPay)
    }

    /// Length of the card security code.
    pub const fn cvv_length(self) -> usize {
        match self {
            CardBrand::Amex => 4,
            _ => 3,
        }
    }

    /// The brand whose IIN range holds these leading digits, if any.
    ///
    /// Ranges are checked longest-prefix first where schemes overlap
    /// (Mir 2200–2204 before Mastercard's 2-series, Maestro's 6304/67xx
    /// before nothing else, UnionPay's 62 before Discover's 622126–622925
    /// co-branded range: those are UnionPay cards). UnionPay's 81 series
    /// is 810 and 8110–8171, and 627780 in its 62 is Elo's (not taken).
    pub fn from_iin(digits: &str) -> Option<CardBrand> {
        let p = |n: usize| -> Option<u32> { digits.get(..n).and_then(|s| s.parse::<u32>().ok()) };
        let (p1, p2, p3, p4) = (p(1)?, p(2)?, p(3).unwrap_or(0), p(4).unwrap_or(0));
        let p6 = p(6).unwrap_or(0);
        if p1 == 4 {
            return Some(CardBrand::Visa);
        }
        if (2200..=2204).contains(&p4) {
            return Some(CardBrand::Mir);
        }
        if (51..=55).contains(&p2) || (2221..=2720).contains(&p4) {
            return Some(CardBrand::Mastercard);
        }
        if p2 == 34 || p2 == 37 {
            return Some(CardBrand::Amex);
        }
        if (3528..=3589).contains(&p4) {
            return Some(CardBrand::Jcb);
        }
        if (300..=305).contains(&p3) || p4 == 3095 || p2 == 36 || p2 == 38 || p2 == 39 {
            return Some(CardBrand::DinersClub);
        }
        if [5018, 5020, 5038, 5893, 6304, 6759, 6761, 6762, 6763].contains(&p4)
            || p6 == 676770
            || p6 == 676774
        {
            return Some(CardBrand::Maestro);
        }
        if p6 == 627780 {
            return None;
        }
        if p2 == 62 || p3 == 810 || (8110..=8171).contains(&p4) {
            return Some(CardBrand::UnionPay);
        }
        if p4 == 6011 || (644..=649).contains(&p3) || p2 == 65 {
            return Some(CardBrand::Discover);
        }
        None
    }
}

impl fmt::Display for CardBrand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Luhn (mod 10) check over a string of ASCII digits.
pub fn luhn_valid(digits: &str) -> bool {
    let mut sum = 0u32;
    for (i, b) in digits.bytes().rev().enumerate() {
        if !b.is_ascii_digit() {
            return false;
        }
        let mut d = u32::from(b - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// The check digit that makes `partial` followed by it pass Luhn.
pub fn luhn_check_digit(partial: &str) -> Option<u8> {
    for d in 0..10u8 {
        let candidate = format!("{partial}{d}");
        if luhn_valid(&candidate) {
            return Some(d);
        }
    }
    None
}

/// A primary account number that passed every check: 12–19 digits, a known
/// brand with one of its lengths, and Luhn where the brand requires it.
///
/// `Debug` and `Display` show at most the first six and the last four
/// digits. The clear number is only reachable through [`CardNumber::expose`],
/// whose callers seal or fingerprint it.
#[derive(Clone, PartialEq, Eq)]
pub struct CardNumber {
    digits: String,
    brand: CardBrand,
}

impl CardNumber {
    pub const FIELD: &'static str = "card_number";

    /// Parses a card number as a user types it: spaces and dashes are
    /// dropped, up to [`crate::consent::MAX_SEPARATORS`] in a row (as the
    /// masks of free text join digits: whatever this takes for a card
    /// number is masked where it appears in a log line or a stored text),
    /// anything else that is not a digit is refused.
    pub fn parse(input: &str) -> Result<CardNumber, Invalid> {
        let digits = crate::consent::without_separators(input).ok_or_else(|| {
            invalid("a card number has digits only, at most three spaces or dashes in a row")
        })?;
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("a card number has digits only"));
        }
        if !(12..=19).contains(&digits.len()) {
            return Err(invalid("a card number has 12 to 19 digits"));
        }
        let brand = CardBrand::from_iin(&digits).ok_or_else(|| {
            Invalid::field(
                BadRequestCode::UnsupportedCardBrand,
                Self::FIELD,
                "the card's issuer range is not supported",
            )
        })?;
        if !brand.lengths().contains(&digits.len()) {
            return Err(invalid("the number's length does not match its card brand"));
        }
        if brand.requires_luhn() && !luhn_valid(&digits) {
            return Err(invalid("the card number's check digit is wrong"));
        }
        Ok(CardNumber { digits, brand })
    }

    /// A number this service took and sealed, read back with the brand
    /// it was bound as: the rules a number was taken under may have been
    /// wider than today's (an issuer range narrowed, a length dropped),
    /// and a card waiting in review must still go to its channel as it
    /// was bound. Kept when it is 12–19 ASCII digits; new numbers go
    /// through [`CardNumber::parse`].
    pub fn restore(stored: &str, brand: CardBrand) -> Option<CardNumber> {
        let ok = (12..=19).contains(&stored.len()) && stored.bytes().all(|b| b.is_ascii_digit());
        ok.then(|| CardNumber {
            digits: stored.to_owned(),
            brand,
        })
    }

    pub fn brand(&self) -> CardBrand {
        self.brand
    }

    /// The first six digits (the BIN as shown to people).
    pub fn bin(&self) -> &str {
        self.digits.get(..6).unwrap_or("")
    }

    /// The first eight digits for numbers of 16 digits or more, else six:
    /// the longest prefix PCI DSS allows to be shown with the last four.
    pub fn bin8(&self) -> &str {
        let n = if self.digits.len() >= 16 { 8 } else { 6 };
        self.digits.get(..n).unwrap_or("")
    }

    pub fn last4(&self) -> &str {
        let len = self.digits.len();
        self.digits.get(len.saturating_sub(4)..).unwrap_or("")
    }

    pub fn len(&self) -> usize {
        self.digits.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digits.is_empty()
    }

    /// The clear digits. Call only to seal, fingerprint or hand the number
    /// to a payment channel; never to log or return it.
    pub fn expose(&self) -> &str {
        &self.digits
    }

    /// `123456******1234`-style masking.
    pub fn masked(&self) -> String {
        let hidden = self.digits.len().saturating_sub(10);
        format!("{}{}{}", self.bin(), "*".repeat(hidden), self.last4())
    }
}

fn invalid(msg: &'static str) -> Invalid {
    Invalid::field(BadRequestCode::InvalidCardNumber, CardNumber::FIELD, msg)
}

impl fmt::Debug for CardNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CardNumber({} {})", self.brand, self.masked())
    }
}

impl fmt::Display for CardNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// A card's expiry: valid through the last day of its month.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Expiry {
    year: i32,
    month: u32,
}

impl Expiry {
    pub const MONTH_FIELD: &'static str = "expiry_month";
    pub const YEAR_FIELD: &'static str = "expiry_year";
    /// How far ahead an expiry may lie.
    pub const MAX_YEARS_AHEAD: i32 = 20;

    /// Parses month 1–12 and a two- or four-digit year against the current
    /// (year, month): the card is usable through the end of its month, and
    /// an expiry more than 20 years ahead is refused as implausible.
    pub fn parse(month: u32, year: u32, today: (i32, u32)) -> Result<Expiry, Invalid> {
        if !(1..=12).contains(&month) {
            return Err(Invalid::field(
                BadRequestCode::InvalidExpiry,
                Self::MONTH_FIELD,
                "expiry month must be 1 to 12",
            ));
        }
        let year = match year {
            0..=99 => 2000 + year as i32,
            1000..=9999 => year as i32,
            _ => {
                return Err(Invalid::field(
                    BadRequestCode::InvalidExpiry,
                    Self::YEAR_FIELD,
                    "expiry year must have two or four digits",
                ))
            }
        };
        let e = Expiry { year, month };
        let (ty, tm) = today;
        if (year, month) < (ty, tm) {
            // Name the field that is in the past: the month within the
            // current year, else the year.
            let field = if year == ty {
                Self::MONTH_FIELD
            } else {
                Self::YEAR_FIELD
            };
            return Err(Invalid::field(
                BadRequestCode::CardExpired,
                field,
                "the card has expired",
            ));
        }
        if (year, month) > (ty + Self::MAX_YEARS_AHEAD, tm) {
            return Err(Invalid::field(
                BadRequestCode::InvalidExpiry,
                Self::YEAR_FIELD,
                "expiry is too far in the future",
            ));
        }
        Ok(e)
    }

    /// Rebuilds a stored expiry without the "not expired" check (a stored
    /// card may have expired since). Month must still be 1–12.
    pub fn restore(month: u32, year: i32) -> Option<Expiry> {
        ((1..=12).contains(&month) && (1000..=9999).contains(&year))
            .then_some(Expiry { year, month })
    }

    pub fn month(self) -> u32 {
        self.month
    }

    pub fn year(self) -> i32 {
        self.year
    }

    /// Whether the card is expired in the given (year, month).
    pub fn is_expired_at(self, today: (i32, u32)) -> bool {
        (self.year, self.month) < today
    }
}

/// Card security code. Never stored: it lives only for the length of one
/// request and is handed to a channel if the channel asks for it.
#[derive(Clone, PartialEq, Eq)]
pub struct Cvv(String);

impl Cvv {
    pub const FIELD: &'static str = "cvv";

    pub fn parse(input: &str, brand: CardBrand) -> Result<Cvv, Invalid> {
        let ok = input.len() == brand.cvv_length() && input.bytes().all(|b| b.is_ascii_digit());
        if ok {
            Ok(Cvv(input.to_owned()))
        } else {
            Err(Invalid::field(
                BadRequestCode::InvalidCvv,
                Self::FIELD,
                format!(
                    "the security code has {} digits for this card",
                    brand.cvv_length()
                ),
            ))
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Cvv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cvv(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    fn with_check(partial: &str) -> String {
        let d = luhn_check_digit(partial).unwrap_or(0);
        format!("{partial}{d}")
    }

    #[test]
    fn known_test_numbers_get_their_brands() {
        let cases = [
            ("4111 1111 1111 1111", CardBrand::Visa),
            ("4222222222222", CardBrand::Visa),
            ("5555-5555-5555-4444", CardBrand::Mastercard),
            ("2223003122003222", CardBrand::Mastercard),
            ("2720990000000007", CardBrand::Mastercard),
            ("378282246310005", CardBrand::Amex),
            ("6212345678901265", CardBrand::UnionPay),
            ("3530111333300000", CardBrand::Jcb),
            ("6011111111111117", CardBrand::Discover),
            ("6445644564456445", CardBrand::Discover),
            ("30569309025904", CardBrand::DinersClub),
            ("36227206271667", CardBrand::DinersClub),
            ("6759649826438453", CardBrand::Maestro),
            ("6767700000000013", CardBrand::Maestro),
            ("2200240000000006", CardBrand::Mir),
        ];
        for (n, brand) in cases {
            let c = CardNumber::parse(n);
            assert_eq!(c.as_ref().map(|c| c.brand()), Ok(brand), "{n}");
        }
    }

    /// UnionPay's 81 series is 810 and 8110–8171 (the rest of 81 is no
    /// scheme's), and 627780 is Elo's: each was taken as UnionPay, whose
    /// numbers skip the Luhn check, so a mistyped number went through.
    #[test]
    fn unionpay_ranges_end_where_its_81_series_does() {
        for (prefix, brand) in [
            ("810", Some(CardBrand::UnionPay)),
            ("8110", Some(CardBrand::UnionPay)),
            ("8171", Some(CardBrand::UnionPay)),
            ("8172", None),
            ("8199", None),
            ("8000", None),
            ("627780", None),
            ("627781", Some(CardBrand::UnionPay)),
            ("676774", Some(CardBrand::Maestro)),
            ("676775", None),
        ] {
            let n = with_check(&format!("{prefix}{}", "0".repeat(15 - prefix.len())));
            assert_eq!(CardBrand::from_iin(&n), brand, "{prefix}");
        }
        assert_eq!(
            CardNumber::parse("8199000000000001").unwrap_err().code,
            ErrorCode::UnsupportedCardBrand
        );
    }

    /// A number read back from the store keeps the brand it was bound as,
    /// whatever today's ranges say; only its shape is checked.
    #[test]
    fn a_stored_number_is_restored_as_bound() {
        let c = CardNumber::restore("8199000000000001", CardBrand::UnionPay).unwrap();
        assert_eq!((c.brand(), c.last4()), (CardBrand::UnionPay, "0001"));
        for bad in [
            "",
            "81990000000",
            "41111111111111111111",
            "4111 1111 1111 1111",
        ] {
            assert!(
                CardNumber::restore(bad, CardBrand::Visa).is_none(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn unionpay_accepts_non_luhn_others_do_not() {
        let up = with_check("621234567890123");
        let bad_last = (up.as_bytes()[15] - b'0' + 1) % 10;
        let bad = format!("{}{}", &up[..15], bad_last);
        assert!(!luhn_valid(&bad));
        assert_eq!(
            CardNumber::parse(&bad).map(|c| c.brand()),
            Ok(CardBrand::UnionPay)
        );
        let e = CardNumber::parse("4111111111111112").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidCardNumber);
        assert_eq!(e.field, Some("card_number"));
    }

    #[test]
    fn refusals_have_codes() {
        assert_eq!(
            CardNumber::parse("4111x111111111111").unwrap_err().code,
            ErrorCode::InvalidCardNumber
        );
        assert_eq!(
            CardNumber::parse("41111111111").unwrap_err().code,
            ErrorCode::InvalidCardNumber
        );
        assert_eq!(
            CardNumber::parse("41111111111111111111").unwrap_err().code,
            ErrorCode::InvalidCardNumber
        );
        assert_eq!(
            CardNumber::parse(&with_check("999999999999999"))
                .unwrap_err()
                .code,
            ErrorCode::UnsupportedCardBrand
        );
        // Mastercard must be 16 digits.
        assert_eq!(
            CardNumber::parse(&with_check("55555555555555555"))
                .unwrap_err()
                .code,
            ErrorCode::InvalidCardNumber
        );
        // 2-series edges.
        assert_eq!(
            CardNumber::parse(&with_check("220400000000000")).map(|c| c.brand()),
            Ok(CardBrand::Mir)
        );
        assert_eq!(
            CardNumber::parse(&with_check("222100000000000")).map(|c| c.brand()),
            Ok(CardBrand::Mastercard)
        );
        assert_eq!(
            CardNumber::parse(&with_check("222000000000000"))
                .unwrap_err()
                .code,
            ErrorCode::UnsupportedCardBrand
        );
        assert_eq!(
            CardNumber::parse(&with_check("272100000000000"))
                .unwrap_err()
                .code,
            ErrorCode::UnsupportedCardBrand
        );
    }

    #[test]
    fn debug_and_display_mask() {
        let c = CardNumber::parse("4111111111111111").unwrap();
        assert_eq!(format!("{c}"), "411111******1111");
        assert_eq!(format!("{c:?}"), "CardNumber(visa 411111******1111)");
        assert_eq!(c.bin8(), "41111111");
        let cvv = Cvv::parse("123", CardBrand::Visa).unwrap();
        assert!(!format!("{cvv:?}").contains("123"));
    }

    #[test]
    fn cvv_lengths() {
        assert!(Cvv::parse("123", CardBrand::Visa).is_ok());
        assert_eq!(
            Cvv::parse("1234", CardBrand::Visa).unwrap_err().code,
            ErrorCode::InvalidCvv
        );
        assert!(Cvv::parse("1234", CardBrand::Amex).is_ok());
        assert_eq!(
            Cvv::parse("123", CardBrand::Amex).unwrap_err().code,
            ErrorCode::InvalidCvv
        );
        assert_eq!(
            Cvv::parse("12a", CardBrand::Visa).unwrap_err().code,
            ErrorCode::InvalidCvv
        );
    }

    #[test]
    fn expiry_rules() {
        let today = (2026, 11);
        assert!(Expiry::parse(11, 26, today).is_ok());
        assert!(Expiry::parse(11, 2026, today).is_ok());
        assert_eq!(
            Expiry::parse(10, 2026, today).unwrap_err().code,
            ErrorCode::CardExpired
        );
        assert_eq!(
            Expiry::parse(13, 2027, today).unwrap_err().code,
            ErrorCode::InvalidExpiry
        );
        assert_eq!(
            Expiry::parse(0, 2027, today).unwrap_err().field,
            Some("expiry_month")
        );
        assert!(Expiry::parse(11, 2046, today).is_ok());
        assert_eq!(
            Expiry::parse(12, 2046, today).unwrap_err().code,
            ErrorCode::InvalidExpiry
        );
        assert_eq!(
            Expiry::parse(1, 202, today).unwrap_err().code,
            ErrorCode::InvalidExpiry
        );
    }
}
