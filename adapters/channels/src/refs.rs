//! Our reference for an agreement at a channel: the binding id in the form
//! both real channels accept.
//!
//! Alipay's `external_agreement_no` and WeChat Pay's `out_contract_code`
//! each take at most 32 letters and digits. A binding id that already is
//! such a code is used as is; a UUID (`8-4-4-4-12` hex, what the service
//! issues) loses its dashes, and a 32-hex-digit code is read back as that
//! UUID. Any other binding id has no reference (the adapters refuse to
//! start such a binding with `unsupported_binding_id`).

use cardbind_domain::BindingId;

/// The most characters either channel takes.
pub const MAX_LEN: usize = 32;

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

/// The reference a channel knows `binding` by, if it has one.
pub fn of_binding(binding: &BindingId) -> Option<String> {
    let s = binding.as_str();
    if is_uuid(s) {
        return Some(s.replace('-', ""));
    }
    if is_valid(s) && !is_hex32(s) {
        return Some(s.to_owned());
    }
    None
}

/// The binding a reference made by [`of_binding`] stands for.
pub fn binding_of(code: &str) -> Option<BindingId> {
    if is_hex32(code) {
        let (a, rest) = code.split_at(8);
        let (b, rest) = rest.split_at(4);
        let (c, rest) = rest.split_at(4);
        let (d, e) = rest.split_at(4);
        return BindingId::parse(&format!("{a}-{b}-{c}-{d}-{e}")).ok();
    }
    if !is_valid(code) {
        return None;
    }
    BindingId::parse(code).ok()
}
