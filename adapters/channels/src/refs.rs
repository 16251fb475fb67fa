//! Our reference for an agreement at a channel: one per bind attempt of a
//! card, in the form both real channels accept.
//!
//! Alipay's `external_agreement_no` and WeChat Pay's `out_contract_code`
//! each take at most 32 letters and digits, and WeChat Pay's must be unique
//! at the merchant, ended contracts included. A card bound again keeps its
//! binding id, so the reference names the attempt too: the binding's UUID
//! in base 62 (22 digits) followed by the attempt (the binding's data
//! generation, a `u32`) in base 62 (6 digits), 28 characters in all. The
//! digits are `0-9`, `a-z`, `A-Z`, the order Go's `big.Int` uses for base
//! 62.
//!
//! The service issues UUID version 7 ids only, so a reference is read as
//! ours only when it decodes to a version 7 UUID of the RFC 9562 variant:
//! the common foreign forms on a shared merchant account (a UUID v4
//! without dashes, say) are not. Six fixed bits prove nothing, though: a
//! random 32-digit hex code passes one time in 64, and another system may
//! issue UUID v7 too. So the use cases end an agreement a notification
//! reports for a card not held only if the service held that card
//! (`notify.rs`, `ever_held`).
//!
//! Two earlier forms are still read, so that agreements made before are
//! found: the UUID without its dashes (32 hex digits, one reference for
//! every attempt of a card) and the dashed UUID itself. A binding id that
//! is not a UUID (tests only: the service issues UUIDs) is its own
//! reference when it has 1 to 32 letters and digits, is not 32 hex digits
//! and cannot be read as a per-attempt reference; any other binding id
//! has no reference, and the
//! adapters refuse to start it with `unsupported_binding_id`.

use cardbind_domain::BindingId;

/// The most characters either channel takes.
pub const MAX_LEN: usize = 32;

const DIGITS: &[u8; 62] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const UUID_DIGITS: usize = 22;
const ATTEMPT_DIGITS: usize = 6;
/// The length of a per-attempt reference.
pub const ATTEMPT_LEN: usize = UUID_DIGITS + ATTEMPT_DIGITS;

/// What a reference of ours names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Named {
    pub binding: BindingId,
    /// The attempt, for a per-attempt reference; `None` for the earlier
    /// forms, which name every attempt of the card.
    pub attempt: Option<u32>,
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

fn is_hex32(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether a channel accepts `s` as our reference: 1 to 32 ASCII letters
/// and digits.
pub fn is_valid(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn push_base62(out: &mut String, mut n: u128, width: usize) {
    let mut digits = vec![b'0'; width];
    for d in digits.iter_mut().rev() {
        // Both operands fit: the remainder is below 62.
        *d = DIGITS[(n % 62) as usize];
        n /= 62;
    }
    out.extend(digits.into_iter().map(char::from));
}

fn read_base62(s: &str) -> Option<u128> {
    s.bytes().try_fold(0u128, |n, b| {
        let d = DIGITS.iter().position(|&x| x == b)?;
        n.checked_mul(62)?.checked_add(d as u128)
    })
}

/// Whether a UUID's bits say version 7 and the RFC 9562 variant: the ids
/// the service issues.
fn is_service_uuid(n: u128) -> bool {
    (n >> 76) & 0xf == 7 && (n >> 62) & 0b11 == 0b10
}

/// The value of a binding id that is a UUID the service could have issued.
fn uuid_value(binding: &BindingId) -> Option<u128> {
    let s = binding.as_str();
    if !is_uuid(s) {
        return None;
    }
    u128::from_str_radix(&s.replace('-', ""), 16)
        .ok()
        .filter(|n| is_service_uuid(*n))
}

fn read_attempt_form(code: &str) -> Option<Named> {
    if code.len() != ATTEMPT_LEN || !code.is_ascii() {
        return None;
    }
    let (uuid, attempt) = code.split_at(UUID_DIGITS);
    let uuid = read_base62(uuid).filter(|n| is_service_uuid(*n))?;
    let attempt = u32::try_from(read_base62(attempt)?).ok()?;
    Some(Named {
        binding: BindingId::from_uuid_bytes(uuid.to_be_bytes()),
        attempt: Some(attempt),
    })
}

/// A binding id that is not a UUID as its own reference (tests only).
fn own_id(binding: &BindingId) -> Option<String> {
    let s = binding.as_str();
    (is_valid(s) && !is_hex32(s) && read_attempt_form(s).is_none()).then(|| s.to_owned())
}

/// Our reference for `attempt` of `binding`, if the binding has one.
pub fn of_attempt(binding: &BindingId, attempt: u32) -> Option<String> {
    if let Some(n) = uuid_value(binding) {
        let mut out = String::with_capacity(ATTEMPT_LEN);
        push_base62(&mut out, n, UUID_DIGITS);
        push_base62(&mut out, u128::from(attempt), ATTEMPT_DIGITS);
        return Some(out);
    }
    own_id(binding)
}

/// Our reference for bind `attempt` of `binding`; when the attempt is not
/// known, the one builds before attempts sent for every bind of the card.
pub fn of(binding: &BindingId, attempt: Option<u32>) -> Option<String> {
    match attempt {
        Some(a) => of_attempt(binding, a),
        None => legacy_of(binding).or_else(|| own_id(binding)),
    }
}

/// The reference the builds before per-attempt references sent for every
/// attempt of `binding`: its UUID without the dashes.
pub fn legacy_of(binding: &BindingId) -> Option<String> {
    uuid_value(binding).map(|n| format!("{n:032x}"))
}

/// The reference of ours to ask a channel about bind `attempt` of
/// `binding`, given the reference stored for it: the stored one when it is
/// ours (what the start answered, in whichever form the build that
/// started it sent); for a stored binding id with dashes (builds before
/// per-attempt references stored it and sent it without the dashes), the
/// card's earlier form; else (nothing stored, or the channel's own
/// reference, which only a caller that can ask by it uses instead) the
/// attempt's. `None` when the binding has no reference.
pub fn to_ask(binding: &BindingId, attempt: Option<u32>, stored: Option<&str>) -> Option<String> {
    match stored.filter(|r| !r.is_empty()) {
        Some(r) if is_valid(r) && names(binding, r) => Some(r.to_owned()),
        Some(r) if names(binding, r) => of(binding, None),
        _ => of(binding, attempt),
    }
}

/// What a reference of ours names, if it is one of the forms the service
/// makes (a per-attempt reference, or an earlier form of a UUID). Any
/// other text is not taken for ours, so that a notification naming
/// another merchant's agreement on a shared app is not taken for a card
/// of ours.
pub fn parse(code: &str) -> Option<Named> {
    if let Some(n) = read_attempt_form(code) {
        return Some(n);
    }
    // The earlier forms: the UUID without its dashes, or with them.
    let hex = if is_hex32(code) {
        code.to_owned()
    } else if is_uuid(code) {
        code.replace('-', "")
    } else {
        return None;
    };
    let n = u128::from_str_radix(&hex, 16)
        .ok()
        .filter(|n| is_service_uuid(*n))?;
    Some(Named {
        binding: BindingId::from_uuid_bytes(n.to_be_bytes()),
        attempt: None,
    })
}

/// Whether `reference` is a reference of ours to `binding` (any attempt,
/// any form, or the binding id itself), not one the channel made.
pub fn names(binding: &BindingId, reference: &str) -> bool {
    reference == binding.as_str()
        || parse(reference)
            .is_some_and(|n| n.binding.as_str().eq_ignore_ascii_case(binding.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A version 7 UUID of the RFC 9562 variant, the rest from `bytes`.
    fn uuid(mut bytes: [u8; 16]) -> BindingId {
        bytes[6] = 0x70 | (bytes[6] & 0x0f);
        bytes[8] = 0x80 | (bytes[8] & 0x3f);
        BindingId::from_uuid_bytes(bytes)
    }

    proptest! {
        #[test]
        fn every_uuid_and_attempt_make_a_reference_the_channels_take_and_read_back(
            bytes in any::<[u8; 16]>(),
            attempt in any::<u32>(),
        ) {
            let b = uuid(bytes);
            let code = of_attempt(&b, attempt).unwrap();
            prop_assert_eq!(code.len(), ATTEMPT_LEN);
            prop_assert!(is_valid(&code));
            prop_assert_eq!(parse(&code), Some(Named { binding: b.clone(), attempt: Some(attempt) }));
            prop_assert!(names(&b, &code));
        }

        #[test]
        fn two_attempts_of_a_card_never_share_a_reference(
            bytes in any::<[u8; 16]>(),
            a in any::<u32>(),
            b in any::<u32>(),
        ) {
            prop_assume!(a != b);
            let id = uuid(bytes);
            prop_assert_ne!(of_attempt(&id, a), of_attempt(&id, b));
        }

        #[test]
        fn reading_any_text_never_panics(s in "\\PC{0,40}") {
            let _ = parse(&s);
        }

        /// Text of a reference's length and alphabet (a card's UUID part
        /// or random letters, then random letters for the attempt, in
        /// range about one time in thirteen): read as a reference exactly
        /// when both its parts are in range, and then as what makes it
        /// again.
        #[test]
        fn any_28_letters_and_digits_read_as_a_reference_only_in_range(
            card in proptest::option::of(any::<[u8; 16]>()),
            random_uuid in "[0-9a-zA-Z]{22}",
            attempt in "[0-9a-zA-Z]{6}",
        ) {
            let uuid_part = match card {
                Some(bytes) => of_attempt(&uuid(bytes), 0).unwrap()[..UUID_DIGITS].to_owned(),
                None => random_uuid,
            };
            let s = format!("{uuid_part}{attempt}");
            let (u, a) = s.split_at(UUID_DIGITS);
            let uuid_ok = read_base62(u).is_some_and(is_service_uuid);
            let attempt_ok = read_base62(a).is_some_and(|a| a <= u128::from(u32::MAX));
            match parse(&s) {
                Some(n) => {
                    prop_assert!(uuid_ok && attempt_ok, "{} was read", s);
                    prop_assert_eq!(of_attempt(&n.binding, n.attempt.unwrap()), Some(s));
                }
                None => prop_assert!(!(uuid_ok && attempt_ok), "{} was not read", s),
            }
        }

        #[test]
        fn a_reference_with_one_digit_changed_reads_as_it_was_made_or_not_at_all(
            bytes in any::<[u8; 16]>(),
            attempt in any::<u32>(),
            at in 0..ATTEMPT_LEN,
            digit in 0..62usize,
        ) {
            let b = uuid(bytes);
            let mut code = of_attempt(&b, attempt).unwrap().into_bytes();
            code[at] = DIGITS[digit];
            let code = String::from_utf8(code).unwrap();
            match parse(&code) {
                Some(n) => {
                    prop_assert_eq!(uuid_value(&n.binding).map(is_service_uuid), Some(true));
                    prop_assert_eq!(of_attempt(&n.binding, n.attempt.unwrap()), Some(code));
                }
                // Out of range, or a UUID the service does not issue.
                None => {
                    let (u, a) = code.split_at(UUID_DIGITS);
                    let uuid_ok = read_base62(u).is_some_and(is_service_uuid);
                    let attempt_ok = read_base62(a).is_some_and(|a| a <= u128::from(u32::MAX));
                    prop_assert!(!(uuid_ok && attempt_ok), "{} was not read", code);
                }
            }
        }
    }

    #[test]
    fn the_digits_are_in_go_big_int_order() {
        // The smallest and the largest version 7 UUID: only the version
        // and variant bits set, and every bit but the fixed ones set.
        let min = uuid([0; 16]);
        let prefix = "000000002DWhtrtfrXwltm";
        assert_eq!(of_attempt(&min, 61).unwrap(), format!("{prefix}00000Z"));
        assert_eq!(of_attempt(&min, 62).unwrap(), format!("{prefix}000010"));
        let max = uuid([0xff; 16]);
        assert_eq!(
            of_attempt(&max, u32::MAX).unwrap(),
            "7N42dgm5qEpxfzLrj5qkhN4GFfc3"
        );
    }

    #[test]
    fn only_the_uuids_the_service_issues_are_ours() {
        let v7 = "0192f4a1-7c3e-7b2a-9d4e-5f6a7b8c9d0e";
        let v4 = "0192f4a1-7c3e-4b2a-9d4e-5f6a7b8c9d0e";
        let v7_other_variant = "0192f4a1-7c3e-7b2a-cd4e-5f6a7b8c9d0e";
        assert!(parse(v7).is_some());
        assert!(parse(&v7.replace('-', "")).is_some());
        for foreign in [v4, v7_other_variant] {
            let id = BindingId::parse(foreign).unwrap();
            assert_eq!(parse(foreign), None, "{foreign}");
            assert_eq!(parse(&foreign.replace('-', "")), None, "{foreign}");
            // The service issues no such id, and makes no reference of it.
            assert_eq!(of_attempt(&id, 1), None, "{foreign}");
            assert_eq!(legacy_of(&id), None, "{foreign}");
            // Written as another system would in 28 digits, it is not read.
            let mut bytes = [0u8; 16];
            for (i, b) in bytes.iter_mut().enumerate() {
                *b = u8::from_str_radix(&foreign.replace('-', "")[2 * i..2 * i + 2], 16).unwrap();
            }
            let mut code = String::new();
            push_base62(&mut code, u128::from_be_bytes(bytes), UUID_DIGITS);
            push_base62(&mut code, 1, ATTEMPT_DIGITS);
            assert_eq!(parse(&code), None, "{code}");
        }
    }

    #[test]
    fn what_to_ask_follows_the_stored_reference() {
        let b = BindingId::parse("0192f4a1-7c3e-7b2a-9d4e-5f6a7b8c9d0e").unwrap();
        let seven = of_attempt(&b, 7).unwrap();
        let hex = legacy_of(&b).unwrap();
        // Nothing stored, or the channel's own reference: the attempt's.
        assert_eq!(to_ask(&b, Some(7), None), Some(seven.clone()));
        assert_eq!(to_ask(&b, Some(7), Some("")), Some(seven.clone()));
        assert_eq!(
            to_ask(&b, Some(7), Some("20215425001139428787")),
            Some(seven.clone())
        );
        assert_eq!(to_ask(&b, None, None), Some(hex.clone()));
        // Ours, in whichever form: what was sent.
        let three = of_attempt(&b, 3).unwrap();
        assert_eq!(to_ask(&b, Some(7), Some(&three)), Some(three));
        assert_eq!(to_ask(&b, Some(7), Some(&hex)), Some(hex.clone()));
        // The dashed id earlier builds stored was sent without its dashes.
        assert_eq!(to_ask(&b, Some(7), Some(b.as_str())), Some(hex));
        // Another card's reference is not asked about for this one.
        let other = BindingId::parse("0192f4a1-7c3e-7b2a-9d4e-5f6a7b8c9d0f").unwrap();
        assert_eq!(
            to_ask(&b, Some(7), Some(&of_attempt(&other, 7).unwrap())),
            Some(seven)
        );
    }

    #[test]
    fn earlier_forms_are_read_as_every_attempt_of_the_card() {
        let b = BindingId::parse("0192f4a1-7c3e-7b2a-9d4e-5f6a7b8c9d0e").unwrap();
        let hex = legacy_of(&b).unwrap();
        assert_eq!(of(&b, None), Some(hex.clone()));
        assert_eq!(of(&b, Some(7)), of_attempt(&b, 7));
        assert_eq!(hex, "0192f4a17c3e7b2a9d4e5f6a7b8c9d0e");
        // In either case: the binding id read back is the one issued.
        let (upper_hex, upper_id) = (hex.to_ascii_uppercase(), b.as_str().to_ascii_uppercase());
        for form in [hex.as_str(), b.as_str(), &upper_hex, &upper_id] {
            assert_eq!(
                parse(form),
                Some(Named {
                    binding: b.clone(),
                    attempt: None
                })
            );
            assert!(names(&b, form));
        }
        let other = BindingId::parse("0192f4a1-7c3e-7b2a-9d4e-5f6a7b8c9d0f").unwrap();
        assert!(!names(&other, &hex));
        assert!(!names(&other, &of_attempt(&b, 7).unwrap()));
    }

    #[test]
    fn an_overflowing_or_foreign_reference_names_no_attempt() {
        // 22 'Z's exceed 2^128.
        let too_big = format!("{}000001", "Z".repeat(22));
        assert_eq!(parse(&too_big), None);
        // 6 'Z's exceed u32::MAX.
        let big_attempt = format!("{}ZZZZZZ", "0".repeat(22));
        assert_eq!(parse(&big_attempt), None);
        assert_eq!(parse("agreement-no-with-dash"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn a_test_id_is_its_own_reference_unless_it_reads_as_another_form() {
        let id = BindingId::parse("bindalipay1").unwrap();
        assert_eq!(of_attempt(&id, 5).as_deref(), Some("bindalipay1"));
        assert_eq!(of(&id, None).as_deref(), Some("bindalipay1"));
        assert!(names(&id, "bindalipay1"));
        // Read from a notification, it is nobody's: only the forms the
        // service makes are.
        assert_eq!(parse("bindalipay1"), None);
        assert_eq!(parse("20215425001139428787"), None, "an agreement_no");
        let dashed = BindingId::parse("bind-alipay-1").unwrap();
        assert_eq!(of_attempt(&dashed, 5), None);
        let hexlike = BindingId::parse("0192f4a17c3e7b2a9d4e5f6a7b8c9d0e").unwrap();
        assert_eq!(of_attempt(&hexlike, 5), None);
    }
}
