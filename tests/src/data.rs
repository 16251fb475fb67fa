//! Random test data made from scratch: Luhn-valid card numbers per brand,
//! resident ID numbers with their check character, mobile numbers, holder
//! names, the consent text, and [`TestCard`].

use serde_json::{json, Value};

use crate::leaks;

/// `n` random decimal digits.
pub fn random_digits(n: usize) -> String {
    let mut out = String::with_capacity(n);
    while out.len() < n {
        for b in uuid::Uuid::new_v4().as_bytes() {
            // 250 = 25 * 10: drop the top bytes to avoid bias.
            if *b < 250 && out.len() < n {
                out.push(char::from(b'0' + b % 10));
            }
        }
    }
    out
}

/// `n` random lowercase ASCII letters.
pub fn random_letters(n: usize) -> String {
    let mut out = String::with_capacity(n);
    while out.len() < n {
        for b in uuid::Uuid::new_v4().as_bytes() {
            if *b < 234 && out.len() < n {
                out.push(char::from(b'a' + b % 26));
            }
        }
    }
    out
}

/// A unique user id (`prefix-…`).
pub fn user_id(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// A unique idempotency key.
pub fn idem_key() -> String {
    format!("idem-{}", uuid::Uuid::new_v4())
}

/// Whether `digits` passes the Luhn (mod 10) check.
pub fn luhn_valid(digits: &str) -> bool {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let d2 = d * 2;
                if d2 > 9 {
                    d2 - 9
                } else {
                    d2
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The Luhn check digit to append to `partial` (computed, not searched).
pub fn luhn_check_digit(partial: &str) -> char {
    assert!(partial.bytes().all(|b| b.is_ascii_digit()), "digits only");
    // The check digit will sit at index 0 from the right, so the digits of
    // `partial` at even index from its right end get doubled.
    let sum: u32 = partial
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 0 {
                let d2 = d * 2;
                if d2 > 9 {
                    d2 - 9
                } else {
                    d2
                }
            } else {
                d
            }
        })
        .sum();
    char::from(b'0' + ((10 - sum % 10) % 10) as u8)
}

/// A Luhn-valid number of `len` digits starting with `prefix`, whose last
/// four do not start with `00`: the endings tests give the mock channel's
/// per-card modes (`0002` declines, `0003` asks a code, `0004` times
/// out...) are never drawn by chance.
pub fn card_number(prefix: &str, len: usize) -> String {
    assert!(prefix.len() + 4 < len, "prefix shorter than the number");
    loop {
        let body = format!("{prefix}{}", random_digits(len - 1 - prefix.len()));
        let check = luhn_check_digit(&body);
        let n = format!("{body}{check}");
        if !n[len - 4..].starts_with("00") {
            return n;
        }
    }
}

/// A Luhn-valid number of `len` digits starting with `prefix` and ending
/// with `last4` (the mock channel picks per-card modes by last four). The
/// fifth digit from the right is not doubled by Luhn, so one of its ten
/// values makes the sum right.
pub fn card_number_ending(prefix: &str, len: usize, last4: &str) -> String {
    assert!(last4.len() == 4 && prefix.len() + 5 <= len);
    let middle = random_digits(len - prefix.len() - 5);
    for d in 0..10u8 {
        let n = format!("{prefix}{middle}{}{last4}", char::from(b'0' + d));
        if luhn_valid(&n) {
            return n;
        }
    }
    unreachable!("one of ten digits always completes a Luhn sum")
}

/// Card schemes, with a prefix in their range, a length they issue and
/// their CVV length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Brand {
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

impl Brand {
    pub const ALL: [Brand; 9] = [
        Brand::Visa,
        Brand::Mastercard,
        Brand::Amex,
        Brand::UnionPay,
        Brand::Jcb,
        Brand::Discover,
        Brand::DinersClub,
        Brand::Maestro,
        Brand::Mir,
    ];

    /// (IIN prefix, length)
    pub fn shape(self) -> (&'static str, usize) {
        match self {
            Brand::Visa => ("4", 16),
            Brand::Mastercard => ("51", 16),
            Brand::Amex => ("37", 15),
            Brand::UnionPay => ("62", 16),
            Brand::Jcb => ("3530", 16),
            Brand::Discover => ("6011", 16),
            Brand::DinersClub => ("36", 14),
            Brand::Maestro => ("6759", 16),
            Brand::Mir => ("2201", 16),
        }
    }

    pub fn cvv_len(self) -> usize {
        if self == Brand::Amex {
            4
        } else {
            3
        }
    }

    /// The brand's name in the API.
    pub fn api_name(self) -> &'static str {
        match self {
            Brand::Visa => "visa",
            Brand::Mastercard => "mastercard",
            Brand::Amex => "amex",
            Brand::UnionPay => "unionpay",
            Brand::Jcb => "jcb",
            Brand::Discover => "discover",
            Brand::DinersClub => "diners_club",
            Brand::Maestro => "maestro",
            Brand::Mir => "mir",
        }
    }
}

const ID_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];

/// The ISO 7064 MOD 11-2 check character of 17 digits (GB 11643).
pub fn resident_id_check(first17: &str) -> char {
    assert!(first17.len() == 17 && first17.bytes().all(|b| b.is_ascii_digit()));
    let sum: u32 = first17
        .bytes()
        .zip(ID_WEIGHTS)
        .map(|(b, w)| u32::from(b - b'0') * w)
        .sum();
    // (12 - sum mod 11) mod 11, with 10 written X.
    match (12 - sum % 11) % 11 {
        10 => 'X',
        n => char::from(b'0' + n as u8),
    }
}

/// A valid resident ID number: Beijing Dongcheng, a birth date in the
/// 1980s–90s, a random sequence and its check character.
pub fn resident_id() -> String {
    let r = random_digits(8);
    let n = |i: usize| u32::from(r.as_bytes()[i] - b'0');
    let year = 1980 + n(0) * 2 + n(1) % 2;
    let month = 1 + (n(2) * 10 + n(3)) % 12;
    let day = 1 + (n(4) * 10 + n(5)) % 28;
    let first17 = format!("110101{year:04}{month:02}{day:02}{}", random_digits(3));
    let check = resident_id_check(&first17);
    format!("{first17}{check}")
}

/// A mainland mobile number, 11 digits (`13x`, `15x`, `18x`, `19x`).
pub fn phone() -> String {
    let second = ['3', '5', '8', '9'][usize::from(random_digits(1).as_bytes()[0] - b'0') % 4];
    format!("1{second}{}", random_digits(9))
}

/// A holder name unique enough to search for.
pub fn holder_name() -> String {
    let mut first = random_letters(7);
    first[..1].make_ascii_uppercase();
    format!("Zhang {first}")
}

/// A valid card expiry three years ahead.
pub fn future_expiry() -> (u32, u32) {
    let now = time::OffsetDateTime::now_utc();
    (u32::from(u8::from(now.month())), (now.year() + 3) as u32)
}

/// The consent text every test accepts, and its SHA-256 hex.
pub const CONSENT_TEXT: &str =
    "I agree that my card is bound for recurring payments (test text v1).";

pub fn consent_sha256() -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(CONSENT_TEXT.as_bytes()))
}

/// One card and its holder, all valid.
#[derive(Clone, Debug)]
pub struct TestCard {
    pub brand: Brand,
    pub number: String,
    pub expiry_month: u32,
    pub expiry_year: u32,
    pub cvv: String,
    pub holder_name: String,
    pub id_number: String,
    pub phone: String,
}

impl TestCard {
    pub fn new(brand: Brand) -> TestCard {
        let (prefix, len) = brand.shape();
        TestCard::with_number(brand, card_number(prefix, len))
    }

    /// A card whose number ends with `last4`.
    pub fn ending(brand: Brand, last4: &str) -> TestCard {
        let (prefix, len) = brand.shape();
        TestCard::with_number(brand, card_number_ending(prefix, len, last4))
    }

    pub fn visa() -> TestCard {
        TestCard::new(Brand::Visa)
    }

    fn with_number(brand: Brand, number: String) -> TestCard {
        let (m, y) = future_expiry();
        // A CVV that cannot pass for a year, an hour or a day: starts 7–9.
        let first = ['7', '8', '9'][usize::from(random_digits(1).as_bytes()[0] - b'0') % 3];
        let cvv = format!("{first}{}", random_digits(brand.cvv_len() - 1));
        let card = TestCard {
            brand,
            number,
            expiry_month: m,
            expiry_year: y,
            cvv,
            holder_name: holder_name(),
            id_number: resident_id(),
            phone: phone(),
        };
        leaks::register(&card);
        card
    }

    pub fn bin6(&self) -> &str {
        &self.number[..6]
    }

    pub fn last4(&self) -> &str {
        &self.number[self.number.len() - 4..]
    }

    /// The bind request body for this card (mock channel by default).
    pub fn body(&self) -> Value {
        json!({
            "card_number": self.number,
            "expiry_month": self.expiry_month,
            "expiry_year": self.expiry_year,
            "cvv": self.cvv,
            "holder_name": self.holder_name,
            "id_number": self.id_number,
            "phone": self.phone,
            "consent": {
                "text_version": "2024-06",
                "text_sha256": consent_sha256(),
                "ip": "203.0.113.7",
                "user_agent": "cardbind-tests/1.0"
            }
        })
    }

    /// Strings that must never appear in clear anywhere outside the
    /// request: the number, the number without its last four digits or
    /// without its first six (a mask that shows too much), the resident
    /// ID, the phone (national digits, also inside its +86 form). The
    /// hidden middle alone (5 or 6 digits) is no string to look for
    /// everywhere: timestamps, latencies and hashes hold such runs (a
    /// random collision would fail a run); see
    /// [`TestCard::shows_hidden_digits`].
    pub fn secrets(&self) -> Vec<(&'static str, String)> {
        let n = &self.number;
        vec![
            ("card number", n.clone()),
            (
                "card number without its last four digits",
                n[..n.len() - 4].to_owned(),
            ),
            (
                "card number without its first six digits",
                n[6..].to_owned(),
            ),
            ("resident id number", self.id_number.clone()),
            (
                "resident id number (first 17)",
                self.id_number[..17].to_owned(),
            ),
            ("phone", self.phone.clone()),
        ]
    }

    /// Whether `text` shows the digits a mask hides (between the first six
    /// and the last four) as a value of its own: a number masked the other
    /// way round, or its middle logged apart, with no letter or digit
    /// touching it. Runs inside a word are not looked at: a UUID's or a
    /// hash's hex holds 5- and 6-digit runs between letters, which an Amex
    /// card's 5 hidden digits would meet by chance about once in 100,000
    /// for each (a run holds hundreds). Nor is a run after a `.`: a
    /// fraction (a log line's microseconds, a latency).
    pub fn shows_hidden_digits(&self, text: &str) -> bool {
        let n = &self.number;
        run_of_its_own(
            text,
            &n[6..n.len() - 4],
            |c| c.is_ascii_alphanumeric() || c == '.',
            |c| c.is_ascii_alphanumeric(),
        )
    }
}

/// Whether `hay` holds `digits` with no digit right before or after it.
pub fn has_digit_run(hay: &str, digits: &str) -> bool {
    let digit = |c: char| c.is_ascii_digit();
    run_of_its_own(hay, digits, digit, digit)
}

/// Whether `hay` holds `run` with no character right before it that
/// `joins_before` takes as part of it, nor right after it that
/// `joins_after` does.
fn run_of_its_own(
    hay: &str,
    run: &str,
    joins_before: impl Fn(char) -> bool,
    joins_after: impl Fn(char) -> bool,
) -> bool {
    hay.match_indices(run).any(|(i, _)| {
        let before = hay[..i].chars().next_back();
        let after = hay[i + run.len()..].chars().next();
        !before.is_some_and(&joins_before) && !after.is_some_and(&joins_after)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cardbind_domain::{CardNumber, Phone, ResidentId};

    #[test]
    fn luhn_matches_known_numbers() {
        assert!(luhn_valid("4111111111111111"));
        assert!(luhn_valid("378282246310005"));
        assert!(!luhn_valid("4111111111111112"));
        assert_eq!(luhn_check_digit("411111111111111"), '1');
        assert_eq!(luhn_check_digit("37828224631000"), '5');
        assert_eq!(luhn_check_digit("601111111111111"), '7');
    }

    #[test]
    fn generated_cards_parse_with_their_brand() {
        for brand in Brand::ALL {
            for _ in 0..50 {
                let c = TestCard::new(brand);
                assert!(luhn_valid(&c.number), "{c:?}");
                let parsed = CardNumber::parse(&c.number)
                    .unwrap_or_else(|e| panic!("{brand:?} {}: {e}", c.number));
                assert_eq!(parsed.brand().as_str(), brand.api_name());
                assert_eq!(c.cvv.len(), brand.cvv_len());
                let e = TestCard::ending(brand, "0042");
                assert_eq!(e.last4(), "0042");
                assert!(CardNumber::parse(&e.number).is_ok(), "{}", e.number);
            }
        }
    }

    #[test]
    fn no_drawn_card_ends_as_a_mock_mode_does_and_the_middle_is_found_alone() {
        for _ in 0..5000 {
            let n = card_number("4", 16);
            assert!(luhn_valid(&n) && n.len() == 16, "{n}");
            assert!(!n[12..].starts_with("00"), "{n}");
        }
        let c = TestCard::with_number(Brand::Visa, "4111111234561111".into());
        assert!(c.shows_hidden_digits("masked the wrong way: ******123456****"));
        assert!(c.shows_hidden_digits("middle=123456"));
        assert!(!c.shows_hidden_digits("at 1712345678 and 0.1234567 ms"));
        assert!(!c.shows_hidden_digits(r#"{"timestamp":"2026-12-06T18:29:11.123456Z"}"#));
        // Inside a word: a UUID's or a hash's hex.
        assert!(!c.shows_hidden_digits("request 0193f2a4-7b1c-7e2f-9a3d-c123456e8f01"));
        assert!(!c.shows_hidden_digits("sha256 9f86d0a123456b"));
        // A value of its own, however delimited.
        assert!(c.shows_hidden_digits(r#"{"mid":"123456"}"#));
        assert!(c.shows_hidden_digits("mid 123456, then"));
        let amex = TestCard::with_number(Brand::Amex, "378282246310005".into());
        assert!(amex.shows_hidden_digits("hidden: 24631."));
        assert!(!amex.shows_hidden_digits("id e24631f"));
        assert!(c
            .secrets()
            .iter()
            .any(|(_, s)| "pan 411111123456****".contains(s.as_str())));
        assert!(c
            .secrets()
            .iter()
            .any(|(_, s)| "pan ******1234561111".contains(s.as_str())));
    }

    #[test]
    fn resident_ids_and_phones_are_valid() {
        // The example of GB 11643 itself.
        assert_eq!(resident_id_check("11010519491231002"), 'X');
        for _ in 0..200 {
            let id = resident_id();
            assert!(ResidentId::parse(&id).is_ok(), "{id}");
            let p = phone();
            assert!(Phone::parse(&p).is_ok(), "{p}");
        }
    }
}
