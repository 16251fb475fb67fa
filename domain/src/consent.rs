//! The consent a user gives to bind a card.

use crate::error::{BadRequestCode, Invalid};
use crate::ids::ChannelName;
use crate::time::Timestamp;

/// The consent a user gave to bind one card (on the first bind and on every
/// bind again), and its end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsentRecord {
    /// The consent text version the user accepted.
    pub text_version: String,
    /// SHA-256 (lower-case hex) of that text as shown.
    pub text_hash: String,
    pub accepted_at: Timestamp,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub channel: ChannelName,
    /// The channel's agreement once the card is active.
    pub agreement_id: Option<String>,
    pub revoked_at: Option<Timestamp>,
    /// Who ended it: the token subject, or `channel:NAME`.
    pub revoked_by: Option<String>,
}

/// The consent as the client sent it, before it is checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsentGiven {
    pub text_version: String,
    pub text_hash: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl ConsentGiven {
    pub const FIELD: &'static str = "consent";
    /// User agents are kept up to this many characters.
    pub const USER_AGENT_MAX: usize = 512;

    /// Checks the consent: a text version of 1–64 printable characters and
    /// the SHA-256 (hex) of the text shown.
    pub fn accept(self, channel: ChannelName, at: Timestamp) -> Result<ConsentRecord, Invalid> {
        let version_ok = (1..=64).contains(&self.text_version.len())
            && self.text_version.bytes().all(|b| (0x20..0x7f).contains(&b));
        let hash_ok =
            self.text_hash.len() == 64 && self.text_hash.bytes().all(|b| b.is_ascii_hexdigit());
        if !(version_ok && hash_ok) {
            return Err(Invalid::field(
                BadRequestCode::InvalidRequest,
                Self::FIELD,
                "consent needs a text_version (1-64 printable characters) and the SHA-256 hex of the text shown",
            ));
        }
        let user_agent = self.user_agent.map(|ua| {
            // Masked whole, then cut: a number across the cut is masked by
            // what it is in the whole text, not by what is left of it.
            let kept: String = ua.chars().filter(|c| !c.is_control()).collect();
            mask_free_text(&kept)
                .chars()
                .take(Self::USER_AGENT_MAX)
                .collect()
        });
        Ok(ConsentRecord {
            text_version: mask_free_text(&self.text_version),
            text_hash: self.text_hash.to_ascii_lowercase(),
            accepted_at: at,
            ip: self.ip,
            user_agent,
            channel,
            agreement_id: None,
            revoked_at: None,
            revoked_by: None,
        })
    }
}

/// Numbers this long or longer in free text are masked.
pub const MASKED_NUMBER_DIGITS: usize = 11;

/// Numbers written with other separators (any space, punctuation or
/// symbol characters between digits, up to [`MAX_SEPARATORS`] in a row:
/// `4111.1111.…`, `4111/1111/…`, a no-break space, an en dash) are masked
/// from this many digits, the
/// shortest card number. The bar is above [`MASKED_NUMBER_DIGITS`] so that
/// dotted version numbers (`Chrome/120.0.6099.109`, 11 digits) stay.
pub const LOOSELY_WRITTEN_DIGITS: usize = 12;

/// A number in a text: its byte range (from its first digit to its last)
/// and how many digits it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NumberSpan {
    pub start: usize,
    pub end: usize,
    pub digits: usize,
}

/// The most separators in a row that still join two digits into one
/// number: a card number typed with a doubled space (`4111  1111 …`) is
/// still one.
pub const MAX_SEPARATORS: usize = 3;

/// `input` without its spaces and dashes, or `None` when more than
/// [`MAX_SEPARATORS`] of them stand in a row: how a card or phone number
/// is read as typed, so that whatever is taken as one is a number the
/// masks of free text join too.
pub(crate) fn without_separators(input: &str) -> Option<String> {
    let mut out = String::with_capacity(input.len());
    let mut run = 0;
    for c in input.chars() {
        if matches!(c, ' ' | '-') {
            run += 1;
            if run > MAX_SEPARATORS {
                return None;
            }
        } else {
            run = 0;
            out.push(c);
        }
    }
    Some(out)
}

/// The numbers of `text`, in order: runs of digits ([`is_digit`]), where
/// up to [`MAX_SEPARATORS`] bytes of `separators` in a row between two
/// digits join them into one number (as card numbers are written:
/// `4111 1111 …`, `4111-1111-…`).
pub fn numbers<'a>(text: &'a str, separators: &'a [u8]) -> impl Iterator<Item = NumberSpan> + 'a {
    numbers_joined_by(text, move |c| {
        u8::try_from(c).is_ok_and(|b| separators.contains(&b))
    })
}

/// Whether `c` is written as a digit: ASCII, or a digit of another script
/// or form (fullwidth `４`, as Chinese input methods type them, Arabic-Indic
/// `٤`, circled `④`, superscript `⁴`). A card number typed in any of them is
/// still a card number.
pub fn is_digit(c: char) -> bool {
    c.is_ascii_digit() || c.is_numeric()
}

/// The numbers of `text`, in order: runs of digits ([`is_digit`]), where
/// up to [`MAX_SEPARATORS`] characters in a row for which `joins` holds
/// between two digits join them into one number. Spans start and end at
/// digits, so on character boundaries.
pub fn numbers_joined_by<'a>(
    text: &'a str,
    joins: impl Fn(char) -> bool + 'a,
) -> impl Iterator<Item = NumberSpan> + 'a {
    let mut chars = text.char_indices().peekable();
    std::iter::from_fn(move || {
        let (start, first) = loop {
            let (i, c) = chars.next()?;
            if is_digit(c) {
                break (i, c);
            }
        };
        let (mut end, mut digits) = (start + first.len_utf8(), 1);
        while let Some(&(i, c)) = chars.peek() {
            if is_digit(c) {
                digits += 1;
                end = i + c.len_utf8();
            } else {
                // Separators join only a digit that follows them, and only
                // up to MAX_SEPARATORS in a row.
                let run = chars
                    .clone()
                    .take(MAX_SEPARATORS + 1)
                    .take_while(|&(_, c)| !is_digit(c) && joins(c))
                    .count();
                let digit_next = chars.clone().nth(run).is_some_and(|(_, d)| is_digit(d));
                if run == 0 || run > MAX_SEPARATORS || !digit_next {
                    break;
                }
                // All but the last separator; the last is taken below.
                for _ in 1..run {
                    chars.next();
                }
            }
            chars.next();
        }
        Some(NumberSpan { start, end, digits })
    })
}

/// `text` with the digits of `spans` (in order, not overlapping) turned
/// into `*`s, everything else as it was.
fn star_digits(text: &str, spans: impl Iterator<Item = NumberSpan>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut kept = 0;
    for n in spans {
        out.push_str(&text[kept..n.start]);
        out.extend(
            text[n.start..n.end]
                .chars()
                .map(|c| if is_digit(c) { '*' } else { c }),
        );
        kept = n.end;
    }
    out.push_str(&text[kept..]);
    out
}

/// Free text as kept (the consent's text version and user agent):
/// [`mask_long_numbers`], after every number of [`LOOSELY_WRITTEN_DIGITS`]
/// digits or more written with other separators (dots, slashes, a
/// no-break space, a dash of another script) is masked. A dotted version
/// number of 12 digits or more is masked too; that costs nothing but its
/// look.
pub fn mask_free_text(text: &str) -> String {
    // Any character that is neither a letter, a digit nor a control
    // character joins digits here.
    let joins = |c: char| !c.is_alphanumeric() && !c.is_control();
    let loose = numbers_joined_by(text, joins).filter(|n| n.digits >= LOOSELY_WRITTEN_DIGITS);
    mask_long_numbers(&star_digits(text, loose))
}

/// `text` with the digits of every number of [`MASKED_NUMBER_DIGITS`]
/// digits or more replaced by `*` (a number: digits, spaces or hyphens
/// between them allowed, as card numbers are written; see
/// [`numbers`]).
///
/// The consent's free text (its text version and the user agent) is kept
/// in clear, in the wallet and the audit log; a card number (12–19
/// digits), a resident ID (17 digits and a check character) or a mobile
/// number (11 digits) put there, by mistake or on purpose, is masked
/// before it is kept. Version numbers and build ids stay as they are.
pub fn mask_long_numbers(text: &str) -> String {
    star_digits(
        text,
        numbers(text, b" -").filter(|n| n.digits >= MASKED_NUMBER_DIGITS),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_numbers_are_masked_and_version_numbers_kept() {
        for (text, masked) in [
            ("4111111111111111", "****************"),
            ("pan 4111 1111 1111 1111!", "pan **** **** **** ****!"),
            ("4111-1111-1111-1111", "****-****-****-****"),
            ("id 11010519491231002X", "id *****************X"),
            ("tel:13800138000", "tel:***********"),
            // Ten digits is not a card, an ID or a mobile number.
            ("1380013800", "1380013800"),
            (
                "Mozilla/5.0 (Linux; Android 14; Build/UQ1A.240205.004) Chrome/120.0.6099.109",
                "Mozilla/5.0 (Linux; Android 14; Build/UQ1A.240205.004) Chrome/120.0.6099.109",
            ),
            // Up to three separators in a row join (a doubled space typed
            // by mistake); four end a number.
            ("12345 678  901234", "***** ***  ******"),
            ("4111--1111   1111-1111", "****--****   ****-****"),
            ("12345 678    901234", "12345 678    901234"),
            ("2026-01", "2026-01"),
            ("", ""),
        ] {
            assert_eq!(mask_long_numbers(text), masked, "{text}");
        }
    }

    #[test]
    fn free_text_loses_card_numbers_written_any_way() {
        for (text, masked) in [
            ("4111.1111.1111.1111", "****.****.****.****"),
            ("4111/1111/1111/1111", "****/****/****/****"),
            (
                "4111\u{a0}1111\u{a0}1111\u{a0}1111",
                "****\u{a0}****\u{a0}****\u{a0}****",
            ),
            (
                "4111\u{2013}1111\u{2013}1111",
                "****\u{2013}****\u{2013}****",
            ),
            // The shortest card number.
            ("x 5018.0000.0009;", "x ****.****.****;"),
            // And what the text version's masking takes.
            ("pan 4111 1111 1111 1111!", "pan **** **** **** ****!"),
            ("tel:13800138000", "tel:***********"),
            // Dotted version numbers stay.
            (
                "Mozilla/5.0 (Linux; Android 14) Chrome/120.0.6099.109 Safari/537.36",
                "Mozilla/5.0 (Linux; Android 14) Chrome/120.0.6099.109 Safari/537.36",
            ),
            ("Build/AP1A.240305.019.A1", "Build/AP1A.240305.019.A1"),
            ("1.2.3", "1.2.3"),
            // Digits of other forms and scripts: fullwidth, as Chinese
            // input methods type them, with a fullwidth space; Arabic-Indic;
            // mixed with ASCII.
            (
                "卡号\u{ff14}\u{ff11}\u{ff11}\u{ff11}\u{3000}\u{ff11}\u{ff11}\u{ff11}\u{ff11}\u{3000}1111\u{3000}1111",
                "卡号****\u{3000}****\u{3000}****\u{3000}****",
            ),
            (
                "\u{664}\u{661}\u{661}\u{661}\u{661}\u{661}\u{661}\u{661}\u{661}\u{661}\u{661}\u{661}",
                "************",
            ),
            (
                "\u{ff14}\u{ff11}\u{ff11}\u{ff11}  \u{ff11}\u{ff11}\u{ff11}\u{ff11}  1111  1111",
                "****  ****  ****  ****",
            ),
            ("4111 / 1111 / 1111 / 1111", "**** / **** / **** / ****"),
            // A short fullwidth number stays.
            (
                "\u{ff12}\u{ff10}\u{ff12}\u{ff16}",
                "\u{ff12}\u{ff10}\u{ff12}\u{ff16}",
            ),
        ] {
            assert_eq!(mask_free_text(text), masked, "{text}");
        }
        // The text version too.
        let consent = ConsentGiven {
            text_version: "terms/4111.1111.1111.1111".into(),
            text_hash: "ab".repeat(32),
            ip: None,
            user_agent: None,
        };
        let kept = consent
            .accept(
                ChannelName::parse("mock").unwrap(),
                Timestamp::from_unix_millis(0),
            )
            .unwrap();
        assert_eq!(kept.text_version, "terms/****.****.****.****");
    }

    #[test]
    fn numbers_join_digits_across_short_runs_of_separators_only() {
        fn spans<'a>(t: &'a str, seps: &[u8]) -> Vec<(&'a str, usize)> {
            numbers(t, seps)
                .map(|n| (&t[n.start..n.end], n.digits))
                .collect()
        }
        assert_eq!(
            spans("a 4111 1111-22 x9", b" -"),
            [("4111 1111-22", 10), ("9", 1)]
        );
        // A separator not in the set, four in a row, or separators at an
        // end split or end a number; up to three in a row join.
        assert_eq!(spans("12.34", b" -"), [("12", 2), ("34", 2)]);
        assert_eq!(spans("12.34", b"."), [("12.34", 4)]);
        assert_eq!(spans("12--34-", b"-"), [("12--34", 4)]);
        assert_eq!(spans("1 - 2", b" -"), [("1 - 2", 2)]);
        assert_eq!(spans("12----34", b"-"), [("12", 2), ("34", 2)]);
        assert_eq!(spans("12 -.34", b" -"), [("12", 2), ("34", 2)]);
        assert_eq!(spans("9---", b"-"), [("9", 1)]);
        assert_eq!(spans("-12 ", b" -"), [("12", 2)]);
        // Multi-byte characters around numbers keep the spans on char
        // boundaries.
        assert_eq!(spans("卡号4111 1111号", b" "), [("4111 1111", 8)]);
        // Multi-byte digits count as one digit each, and their spans end
        // after their last byte.
        assert_eq!(
            spans("x\u{ff14}\u{ff11} 1\u{ff19}y", b" "),
            [("\u{ff14}\u{ff11} 1\u{ff19}", 4)]
        );
        assert!(spans("no digits", b" ").is_empty());
    }

    #[test]
    fn a_consent_keeps_no_long_number_of_its_free_text() {
        let channel = ChannelName::parse("mock").unwrap();
        let given = ConsentGiven {
            text_version: "v-13800138000".into(),
            text_hash: "ab".repeat(32),
            ip: None,
            user_agent: Some("app/1.2 card=4111 1111 1111 1111".into()),
        };
        let r = given
            .accept(channel.clone(), Timestamp::from_unix_millis(0))
            .unwrap();
        assert_eq!(r.text_version, "v-***********");
        assert_eq!(
            r.user_agent.as_deref(),
            Some("app/1.2 card=**** **** **** ****")
        );
        // A number across the cut at USER_AGENT_MAX is masked as what it
        // was whole: no leading digits of it are kept.
        let pad = "x".repeat(ConsentGiven::USER_AGENT_MAX - 7);
        let long = ConsentGiven {
            text_version: "v1".into(),
            text_hash: "ab".repeat(32),
            ip: None,
            user_agent: Some(format!("{pad}4111111111111111 tail")),
        };
        let r = long
            .accept(channel, Timestamp::from_unix_millis(0))
            .unwrap();
        assert_eq!(r.user_agent, Some(format!("{pad}*******")));
    }
}
