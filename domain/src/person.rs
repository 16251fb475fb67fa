//! Values about the card holder: name, mainland resident ID number, phone.

use std::fmt;

use crate::error::{BadRequestCode, Invalid};

/// Letters by their category that show as nothing or as a line alone: the
/// Hangul fillers and the Arabic tatweel (a stretch, not a letter of a
/// name). A name of them alone looked empty.
const INVISIBLE_LETTERS: [char; 5] = ['\u{115F}', '\u{1160}', '\u{3164}', '\u{FFA0}', '\u{0640}'];

/// The name on the card: 1–64 characters after trimming, letters (any
/// script of the Basic Multilingual Plane), the combining marks their
/// scripts write with (Thai, Devanagari and Tamil vowel signs and viramas,
/// a decomposed accent), spaces and the punctuation names use (`.` `-` `'`
/// `·`). A mark before the first letter is refused, and so is a character
/// beyond U+FFFF (a letter of a later CJK extension): the API's pattern
/// cannot name those for every client that checks it, and WeChat Pay
/// refuses them in a contract's display name.
#[derive(Clone, PartialEq, Eq)]
pub struct HolderName(String);

impl HolderName {
    pub const FIELD: &'static str = "holder_name";
    pub const MAX_CHARS: usize = 64;

    pub fn parse(input: &str) -> Result<HolderName, Invalid> {
        use unicode_properties::{GeneralCategoryGroup, UnicodeGeneralCategory};
        // The apostrophe a phone's keyboard types (’) and the Japanese
        // middle dot (・) are the `'` and `·` a channel's name check
        // compares with.
        let normal: String = input
            .trim()
            .chars()
            .map(|c| match c {
                '\u{2019}' => '\'',
                '\u{30FB}' => '·',
                c => c,
            })
            .collect();
        let s = normal.as_str();
        let n = s.chars().count();
        let mut letters = 0;
        let mut ok = (1..=Self::MAX_CHARS).contains(&n);
        for c in s.chars() {
            if !ok {
                break;
            }
            if u32::from(c) > 0xFFFF || INVISIBLE_LETTERS.contains(&c) {
                ok = false;
                break;
            }
            // A mark first: many vowel signs are also `Alphabetic`, and
            // must come after a letter all the same.
            if c.general_category_group() == GeneralCategoryGroup::Mark {
                ok = letters > 0;
            } else if c.is_alphabetic() {
                letters += 1;
            } else if !matches!(c, ' ' | '.' | '-' | '\'' | '·') {
                ok = false;
            }
        }
        let ok = ok && letters > 0;
        if ok {
            Ok(HolderName(s.to_owned()))
        } else {
            Err(Invalid::field(
                BadRequestCode::InvalidHolderName,
                Self::FIELD,
                "the holder name has 1 to 64 letters, spaces or . - ' ·",
            ))
        }
    }

    /// A name this service took and sealed, read back: the rule a name
    /// was taken under may have been wider than today's (until December
    /// 2026 a letter beyond U+FFFF was taken), and a card waiting in review
    /// must still go to its channel with the name it was bound with. Kept
    /// when it is 1–64 characters, trimmed, with no control character;
    /// new names go through [`HolderName::parse`].
    pub fn restore(stored: &str) -> Option<HolderName> {
        let n = stored.chars().count();
        let ok = (1..=Self::MAX_CHARS).contains(&n)
            && stored.trim() == stored
            && !stored.chars().any(char::is_control);
        ok.then(|| HolderName(stored.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for HolderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not even the first character: for a Chinese name it is the surname.
        f.write_str("HolderName(***)")
    }
}

/// A mainland China resident identity card number (GB 11643-1999):
/// 17 digits and a check character (digit or `X`) under ISO 7064 MOD 11-2,
/// with a valid birth date at positions 7–14.
#[derive(Clone, PartialEq, Eq)]
pub struct ResidentId(String);

const ID_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const ID_CHECK: [u8; 11] = *b"10X98765432";

impl ResidentId {
    pub const FIELD: &'static str = "id_number";

    /// The check character for the first 17 digits.
    pub fn check_char(first17: &str) -> Option<char> {
        if first17.len() != 17 || !first17.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let sum: u32 = first17
            .bytes()
            .zip(ID_WEIGHTS)
            .map(|(b, w)| u32::from(b - b'0') * w)
            .sum();
        ID_CHECK.get((sum % 11) as usize).map(|&c| c as char)
    }

    pub fn parse(input: &str) -> Result<ResidentId, Invalid> {
        let s = input.trim().to_ascii_uppercase();
        let bad = |m: &'static str| Invalid::field(BadRequestCode::InvalidIdNumber, Self::FIELD, m);
        if s.len() != 18 || !s.is_ascii() {
            return Err(bad("a resident ID number has 18 characters"));
        }
        let (first17, last) = s.split_at(17);
        let expected =
            Self::check_char(first17).ok_or_else(|| bad("the first 17 characters are digits"))?;
        if first17.starts_with('0') {
            return Err(bad("the region code is not valid"));
        }
        let num = |r: std::ops::Range<usize>| {
            first17
                .get(r)
                .and_then(|x| x.parse::<u32>().ok())
                .unwrap_or(0)
        };
        // The province (GB/T 2260): 11–15, 21–23, 31–37, 41–46, 50–54,
        // 61–65, Taiwan 71, Hong Kong 81, Macao 82, a Taiwan resident's
        // mainland permit 83; a foreigner's permanent residence card (2023)
        // opens with 9.
        if !matches!(
            num(0..2),
            11..=15 | 21..=23 | 31..=37 | 41..=46 | 50..=54 | 61..=65 | 71 | 81..=83 | 90..=99
        ) {
            return Err(bad("the region code is not valid"));
        }
        let (y, m, d) = (num(6..10), num(10..12), num(12..14));
        if !(1900..=2100).contains(&y) || !valid_date(y, m, d) {
            return Err(bad("the birth date in the number is not valid"));
        }
        if !last.starts_with(expected) {
            return Err(bad("the check character is wrong"));
        }
        Ok(ResidentId(s))
    }

    /// A number this service took and sealed, read back: kept when it is
    /// 17 digits and a digit or `X` (the rules of its region, date and
    /// check character may have been wider when it was taken); new
    /// numbers go through [`ResidentId::parse`].
    pub fn restore(stored: &str) -> Option<ResidentId> {
        let b = stored.as_bytes();
        let ok = b.len() == 18
            && b[..17].iter().all(u8::is_ascii_digit)
            && (b[17].is_ascii_digit() || b[17] == b'X');
        ok.then(|| ResidentId(stored.to_owned()))
    }

    /// Refuses a number whose birth date is after `today` (year, month,
    /// day): no one holding a card was born later. Callers pass today's
    /// date in China (UTC+8), where the numbers are issued.
    pub fn born_by(self, today: (i32, u32, u32)) -> Result<ResidentId, Invalid> {
        let num = |r: std::ops::Range<usize>| {
            self.0
                .get(r)
                .and_then(|x| x.parse::<u32>().ok())
                .unwrap_or(0)
        };
        let born = (num(6..10) as i32, num(10..12), num(12..14));
        if born > today {
            return Err(Invalid::field(
                BadRequestCode::InvalidIdNumber,
                Self::FIELD,
                "the birth date in the number is in the future",
            ));
        }
        Ok(self)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `110***********1234`: region's first 3 and last 4 only.
    pub fn masked(&self) -> String {
        format!(
            "{}***********{}",
            self.0.get(..3).unwrap_or(""),
            self.0.get(14..).unwrap_or("")
        )
    }
}

fn valid_date(y: u32, m: u32, d: u32) -> bool {
    let leap = (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

impl fmt::Debug for ResidentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResidentId({})", self.masked())
    }
}

/// The digits of an E.164 number after its `+`: 7–15 of them, the first
/// not 0.
fn is_e164(digits: &str) -> bool {
    (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// A phone number in E.164 form. Mainland mobile numbers are accepted with
/// or without `+86`/`0086`/`86`; others must be given as `+` and 7–15 digits
/// (the shortest in use: Niue's, Tokelau's and Saint Helena's, a 3-digit
/// country code and 4 digits).
/// Spaces and dashes may separate them, at most three in a row.
#[derive(Clone, PartialEq, Eq)]
pub struct Phone(String);

impl Phone {
    pub const FIELD: &'static str = "phone";

    pub fn parse(input: &str) -> Result<Phone, Invalid> {
        let bad = || {
            Invalid::field(
                BadRequestCode::InvalidPhone,
                Self::FIELD,
                "a mainland mobile number (11 digits starting 13–19) or an E.164 number",
            )
        };
        // Spaces and dashes are dropped, up to three in a row: as for a card
        // number, what is taken as a phone number is what the masks of free
        // text join into one number.
        let compact = crate::consent::without_separators(input).ok_or_else(bad)?;
        let (plus, digits) = match compact.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, compact.as_str()),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let national = if plus {
            digits.strip_prefix("86")
        } else if let Some(r) = digits.strip_prefix("0086") {
            Some(r)
        } else if digits.len() == 13 {
            digits.strip_prefix("86")
        } else {
            Some(digits)
        };
        if let Some(n) = national {
            let b = n.as_bytes();
            if b.len() == 11 && b[0] == b'1' && (b'3'..=b'9').contains(&b[1]) {
                return Ok(Phone(format!("+86{n}")));
            }
            if !plus || digits.starts_with("86") {
                return Err(bad());
            }
        }
        // Other countries: E.164 with a leading '+'.
        if plus && is_e164(digits) {
            return Ok(Phone(format!("+{digits}")));
        }
        Err(bad())
    }

    /// A number this service took and sealed (E.164 as it stored it),
    /// read back: kept when it is `+` and 7–15 digits, not starting with 0
    /// (the rules it was taken under may have been wider than today's);
    /// new numbers go through [`Phone::parse`].
    pub fn restore(stored: &str) -> Option<Phone> {
        is_e164(stored.strip_prefix('+')?).then(|| Phone(stored.to_owned()))
    }

    /// E.164 form, e.g. `+8613800138000`.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn masked(&self) -> String {
        let n = self.0.len();
        format!(
            "{}****{}",
            self.0.get(..n.saturating_sub(8)).unwrap_or(""),
            self.0.get(n.saturating_sub(4)..).unwrap_or("")
        )
    }
}

impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Phone({})", self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn resident_id_checksum() {
        // GB 11643 worked example.
        assert_eq!(ResidentId::check_char("11010519491231002"), Some('X'));
        assert!(ResidentId::parse("11010519491231002X").is_ok());
        assert!(ResidentId::parse("11010519491231002x").is_ok());
        let e = ResidentId::parse("110105194912310021").unwrap_err();
        assert_eq!(
            (e.code, e.field),
            (ErrorCode::InvalidIdNumber, Some("id_number"))
        );
        // Bad date (Feb 30) with a correct check character.
        let first = "11010519490230002";
        let c = ResidentId::check_char(first).unwrap();
        assert!(ResidentId::parse(&format!("{first}{c}")).is_err());
        assert!(ResidentId::parse("1101051949123100").is_err());
        let id = ResidentId::parse("11010519491231002X").unwrap();
        assert!(!format!("{id:?}").contains("19491231"));
    }

    /// The first two digits are a province's (GB/T 2260), Hong Kong's,
    /// Macao's, Taiwan's, or a foreigner's permanent residence card's (9):
    /// any other was taken.
    #[test]
    fn the_region_is_a_provinces() {
        let with_region = |r: &str| {
            let first = format!("{r}010519491231002");
            let c = ResidentId::check_char(&first).unwrap();
            ResidentId::parse(&format!("{first}{c}"))
        };
        for ok in [
            "11", "15", "21", "37", "46", "50", "54", "65", "71", "81", "83", "91", "99",
        ] {
            assert!(with_region(ok).is_ok(), "{ok}");
        }
        for bad in [
            "10", "16", "20", "24", "38", "40", "47", "55", "60", "66", "70", "72", "80", "84",
        ] {
            let e = with_region(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidIdNumber, "{bad}");
        }
        // Read back from the store, the shape alone is checked.
        assert!(ResidentId::restore("200105194912310021").is_some());
        assert!(ResidentId::restore("20010519491231002x").is_none());
        assert!(Phone::restore("+6834002").is_some());
        assert!(Phone::restore("6834002").is_none());
    }

    #[test]
    fn a_birth_date_after_today_is_refused() {
        let with_date = |date: &str| {
            let first = format!("110105{date}001");
            let c = ResidentId::check_char(&first).unwrap();
            ResidentId::parse(&format!("{first}{c}")).unwrap()
        };
        let today = (2026, 12, 4);
        for born in ["20261204", "20261203", "19491231", "20000229"] {
            assert!(with_date(born).born_by(today).is_ok(), "{born}");
        }
        for born in ["20261205", "20270101", "20990101", "21000101"] {
            let e = with_date(born).born_by(today).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidIdNumber, "{born}");
            assert!(e.message.contains("future"), "{born}");
        }
    }

    #[test]
    fn phones() {
        for ok in [
            "13800138000",
            "+8613800138000",
            "008613800138000",
            "8613800138000",
            "138 0013 8000",
            "+86 138-0013---8000",
            "+14155552671",
            // The shortest E.164 numbers: Niue, Tokelau, Saint Helena.
            "+683 4002",
            "+6907123",
            "+2902222",
        ] {
            assert!(Phone::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(Phone::parse("+683 4002").unwrap().expose(), "+6834002");
        assert_eq!(
            Phone::parse("13800138000").unwrap().expose(),
            "+8613800138000"
        );
        for bad in [
            "12800138000",
            "1380013800",
            "+861280013800",
            "abc",
            "",
            "+0123456789",
            "+12",
            "+683400",
            "+1234567890123456",
            "138    0013 8000",
            "+86----13800138000",
        ] {
            assert_eq!(
                Phone::parse(bad).unwrap_err().code,
                ErrorCode::InvalidPhone,
                "{bad}"
            );
        }
        let p = Phone::parse("13800138000").unwrap();
        assert!(!format!("{p:?}").contains("0013"));
    }

    #[test]
    fn a_stored_name_reads_back_under_the_rule_it_was_taken_by() {
        // Taken before the rule left out letters beyond U+FFFF.
        let old = "\u{20BB7}野 花子";
        assert!(HolderName::parse(old).is_err());
        assert_eq!(HolderName::restore(old).map(|n| n.0), Some(old.to_owned()));
        assert!(HolderName::restore("张三").is_some());
        // Never something no build took.
        for bad in ["", " 张三", "张三 ", "a\u{0}b", "a\nb"] {
            assert!(HolderName::restore(bad).is_none(), "{bad:?}");
        }
        assert!(HolderName::restore(&"a".repeat(65)).is_none());
        assert!(HolderName::restore(&"a".repeat(64)).is_some());
    }

    #[test]
    fn holder_names() {
        // Names that look empty: Hangul fillers, a tatweel alone.
        for blank in [
            "\u{3164}",
            "\u{FFA0}",
            "\u{115F}\u{1160}",
            "\u{640}\u{640}\u{640}",
            "Kim\u{3164}",
        ] {
            assert!(HolderName::parse(blank).is_err(), "{blank:?}");
        }
        // A phone keyboard's apostrophe and the Japanese middle dot read as
        // `'` and `·`.
        let typed = HolderName::parse("O\u{2019}Neil").unwrap();
        assert_eq!(typed.expose(), "O'Neil");
        let dotted = HolderName::parse("阿卜杜拉\u{30FB}买买提").unwrap();
        assert_eq!(dotted.expose(), "阿卜杜拉·买买提");
        assert!(HolderName::parse("张三").is_ok());
        assert!(HolderName::parse("Mary-Jane O'Neil").is_ok());
        assert!(HolderName::parse("   ").is_err());
        assert!(HolderName::parse("Robert'); DROP").is_err());
        assert!(HolderName::parse(&"a".repeat(65)).is_err());
        // Beyond the Basic Multilingual Plane: refused.
        assert!(HolderName::parse("\u{20BB7}田").is_err());
        assert!(HolderName::parse("吉田").is_ok());
        // Scripts written with combining marks, and decomposed accents.
        for name in [
            "สมศักดิ์ ใจดี",
            "राजेश कुमार",
            "முருகன்",
            "Jose\u{301}",
            "Nguyễn Văn A",
            "김민준",
        ] {
            assert!(HolderName::parse(name).is_ok(), "{name}");
        }
        // A mark before any letter.
        for name in [
            "\u{301}",
            "\u{301}abc",
            " -\u{301}ab",
            "्",
            "\u{e34}",
            "\u{93e}ab",
        ] {
            assert!(HolderName::parse(name).is_err(), "{name:?}");
        }
        assert_eq!(
            format!("{:?}", HolderName::parse("Alice").unwrap()),
            "HolderName(***)"
        );
        assert!(!format!("{:?}", HolderName::parse("张三").unwrap()).contains('张'));
    }
}
