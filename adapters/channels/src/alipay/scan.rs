//! A scanner for the top level of an Alipay response.
//!
//! Alipay signs the exact text of the `<method>_response` value as it was
//! sent; re-serializing a parsed value would change key order, spacing or
//! escapes and break the signature. [`top_level_members`] walks the outer
//! object once and returns each member's value as a slice of the input,
//! matching braces and brackets while skipping over JSON strings (and the
//! escapes inside them). It allocates only for the keys and a bracket
//! stack, never recurses, and returns an error (never panics) on any input
//! that is not one well-formed top-level object.

/// Why a text is not a well-formed top-level object.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed response: {0}")]
pub struct ScanError(pub &'static str);

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// `b[i]` is a quote: the index just past the closing quote.
fn skip_string(b: &[u8], i: usize) -> Result<usize, ScanError> {
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return Ok(j + 1),
            _ => j += 1,
        }
    }
    Err(ScanError("unterminated string"))
}

/// The index just past the value that starts at `i`.
fn skip_value(b: &[u8], i: usize) -> Result<usize, ScanError> {
    match b.get(i) {
        None => Err(ScanError("missing value")),
        Some(b'"') => skip_string(b, i),
        Some(b'{') | Some(b'[') => {
            let mut stack: Vec<u8> = Vec::new();
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' => stack.push(b'}'),
                    b'[' => stack.push(b']'),
                    c @ (b'}' | b']') => {
                        if stack.pop() != Some(c) {
                            return Err(ScanError("mismatched bracket"));
                        }
                        if stack.is_empty() {
                            return Ok(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            Err(ScanError("unterminated object or array"))
        }
        Some(_) => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                if matches!(b[j], b'{' | b'[' | b'"' | b':') {
                    return Err(ScanError("unexpected character in a scalar"));
                }
                j += 1;
            }
            if j == i {
                Err(ScanError("empty value"))
            } else {
                Ok(j)
            }
        }
    }
}

/// The members of the top-level object of `text`: each key (decoded) with
/// its value as the exact slice of `text` that holds it.
pub fn top_level_members(text: &str) -> Result<Vec<(String, &str)>, ScanError> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return Err(ScanError("not an object"));
    }
    i = skip_ws(b, i + 1);
    let mut members = Vec::new();
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            if b.get(i) != Some(&b'"') {
                return Err(ScanError("expected a key"));
            }
            let key_end = skip_string(b, i)?;
            let raw_key = text.get(i..key_end).ok_or(ScanError("bad key"))?;
            let key: String = serde_json::from_str(raw_key).map_err(|_| ScanError("bad key"))?;
            i = skip_ws(b, key_end);
            if b.get(i) != Some(&b':') {
                return Err(ScanError("expected ':'"));
            }
            i = skip_ws(b, i + 1);
            let value_end = skip_value(b, i)?;
            let raw = text.get(i..value_end).ok_or(ScanError("bad value"))?;
            members.push((key, raw));
            i = skip_ws(b, value_end);
            match b.get(i) {
                Some(b',') => i = skip_ws(b, i + 1),
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return Err(ScanError("expected ',' or '}'")),
            }
        }
    }
    if skip_ws(b, i) != b.len() {
        return Err(ScanError("trailing data"));
    }
    Ok(members)
}

/// The one member named `key`; an error if it appears more than once.
pub fn unique_member<'a>(
    members: &[(String, &'a str)],
    key: &str,
) -> Result<Option<&'a str>, ScanError> {
    let mut found = None;
    for (k, v) in members {
        if k == key {
            if found.is_some() {
                return Err(ScanError("duplicate member"));
            }
            found = Some(*v);
        }
    }
    Ok(found)
}
