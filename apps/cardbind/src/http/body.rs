//! Request bodies: JSON read with a nesting limit and turned into our error
//! envelope on any parse failure.
//!
//! poem-openapi's own `Json<T>` echoes offending values in its messages
//! ("expected integer, found \"4111…\""), which could put card data in an
//! error body. [`JsonBody`] parses the same schema but answers with only the
//! field path and the kind of problem, found by walking the value against
//! the schema poem-openapi generated: an unknown, missing or mistyped field
//! is `invalid_request`; a value outside its field's declared format
//! (pattern, length, range, enum, `format`) gets that field's own code
//! ([`body_refusal`], e.g. `invalid_card_number`, `invalid_otp`). The
//! schema in the spec is thus exactly what the body reader enforces.

use std::ops::Deref;

use cardbind_domain::ErrorCode;
use poem::{Request, RequestBody};
use poem_openapi::payload::{ParsePayload, Payload};
use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{ParseFromJSON, Type};
use serde_json::Value;

use super::dto::body_refusal;
use super::error::ApiError;
use super::formats::parse_rfc3339;
use super::params::pattern_matches;
use super::Shared;

/// A JSON request body of schema `T`.
pub struct JsonBody<T>(pub T);

impl<T> Deref for JsonBody<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Type> Payload for JsonBody<T> {
    const CONTENT_TYPE: &'static str = "application/json";

    /// `application/json`, as the spec declares, with no charset or UTF-8
    /// (the body is read as UTF-8: one sent in another charset would be
    /// misread, not refused). Other parameters are ignored.
    fn check_content_type(content_type: &str) -> bool {
        let mut parts = content_type.split(';');
        let essence = parts.next().unwrap_or_default().trim();
        essence.eq_ignore_ascii_case("application/json")
            && parts.all(|p| match p.split_once('=') {
                Some((name, value)) if name.trim().eq_ignore_ascii_case("charset") => {
                    let value = value.trim().trim_matches('"');
                    value.eq_ignore_ascii_case("utf-8") || value.eq_ignore_ascii_case("utf8")
                }
                _ => true,
            })
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: ParseFromJSON + 'static> ParsePayload for JsonBody<T> {
    const IS_REQUIRED: bool = true;

    async fn from_request(request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        let max_depth = request
            .data::<std::sync::Arc<Shared>>()
            .map_or(16, |s| s.state.http.max_json_depth);
        let bytes = body
            .take()?
            .into_bytes()
            .await
            .map_err(|_| ApiError::invalid_request("the body could not be read"))?;
        Ok(JsonBody(parse_json::<T>(&bytes, max_depth)?))
    }
}

poem_openapi::impl_apirequest_for_payload!(JsonBody<T>, T: ParseFromJSON + 'static);

/// The schema of `T` and the registry it refers to, built once per type
/// (building them costs more than checking a body against them).
fn schemas_of<T: ParseFromJSON + 'static>() -> std::sync::Arc<(Registry, MetaSchemaRef)> {
    use std::any::TypeId;
    use std::collections::HashMap;
    use std::sync::{Arc, LazyLock, Mutex};
    type Schemas = Arc<(Registry, MetaSchemaRef)>;
    static CACHE: LazyLock<Mutex<HashMap<TypeId, Schemas>>> =
        LazyLock::new(|| Mutex::new(HashMap::new()));
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    cache
        .entry(TypeId::of::<T>())
        .or_insert_with(|| {
            let mut registry = Registry::new();
            T::register(&mut registry);
            Arc::new((registry, T::schema_ref()))
        })
        .clone()
}

/// Parses `bytes` as a JSON `T`, refusing nesting deeper than `max_depth`.
pub fn parse_json<T: ParseFromJSON + 'static>(
    bytes: &[u8],
    max_depth: usize,
) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid_request("a JSON body is required"));
    }
    if json_depth(bytes) > max_depth {
        return Err(ApiError::invalid_request(format!(
            "the JSON body is nested deeper than {max_depth} levels"
        )));
    }
    let value = match serde_json::from_slice::<Unique>(bytes) {
        Ok(Unique(v)) => v,
        Err(e) if e.to_string().starts_with(DUPLICATE_KEY) => {
            return Err(ApiError::invalid_request(
                "the body names a key twice in one object",
            ))
        }
        Err(_) => return Err(ApiError::invalid_request("the body is not valid JSON")),
    };
    let schemas = schemas_of::<T>();
    let (registry, schema) = (&schemas.0, &schemas.1);
    // `find_problem` lets a null through for its parent to judge (an
    // optional field may be null); a body has no parent, and every body
    // of this API is an object.
    if value.is_null() {
        return Err(Problem::WrongType("an object").error(String::new()));
    }
    if let Some((field, problem)) = find_problem(registry, schema, &value, "") {
        return Err(problem.error(field));
    }
    T::parse_from_json(Some(value)).map_err(|_| {
        ApiError::invalid_request("the body does not match the schema of this operation")
    })
}

/// What a JSON object naming a key twice fails with (RFC 8259 leaves the
/// meaning to the parser: one reader taking the first and another the
/// last is how a checked value gets swapped, so a body that does is
/// refused).
const DUPLICATE_KEY: &str = "duplicate key";

/// A JSON value read with no key twice in any object.
struct Unique(Value);

impl<'de> serde::Deserialize<'de> for Unique {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Unique, D::Error> {
        d.deserialize_any(UniqueVisitor).map(Unique)
    }
}

struct UniqueVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Unique(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Unique(v) = map.next_value()?;
            if object.insert(key, v).is_some() {
                return Err(serde::de::Error::custom(DUPLICATE_KEY));
            }
        }
        Ok(Value::Object(object))
    }
}

/// The deepest nesting of arrays/objects in a JSON text (strings skipped).
pub fn json_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut max, mut in_str, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    Unknown,
    /// An unknown key that is not repeated: it has digits enough to be
    /// card data sent as a key by mistake (a refusal is stored with its
    /// idempotency key, and read by whoever made the request), or it is
    /// not a short run of printable ASCII (it could not be shown as sent).
    UnknownUnnamed,
    Missing,
    WrongType(&'static str),
    /// The type is right but the value is outside the declared format.
    OutOfSchema,
}

impl Problem {
    fn error(self, field: String) -> ApiError {
        let field = if field.is_empty() {
            "body".to_owned()
        } else {
            field
        };
        let message = match self {
            Problem::Unknown => format!("unknown field `{field}`"),
            Problem::UnknownUnnamed if field == "body" => format!("an unknown field {UNNAMED}"),
            Problem::UnknownUnnamed => format!("an unknown field in `{field}` {UNNAMED}"),
            Problem::Missing => format!("`{field}` is required"),
            Problem::WrongType(t) => format!("`{field}` must be {t}"),
            Problem::OutOfSchema => return body_refusal(&field),
        };
        ApiError::field(ErrorCode::InvalidRequest, field, message)
    }
}

fn resolve<'a>(registry: &'a Registry, schema: &'a MetaSchemaRef) -> Option<&'a MetaSchema> {
    match schema {
        MetaSchemaRef::Inline(s) => Some(s),
        MetaSchemaRef::Reference(name) => registry.schemas.get(name),
    }
}

/// Unknown keys with this many digits (of any script) or more are not
/// repeated.
const UNNAMED_DIGITS: usize = 3;

/// Why an unknown key's name is left out of the message.
const UNNAMED: &str = "(its name is not repeated: it has digits, or characters other than \
                       printable ASCII, or more than 64)";

fn has_digits(key: &str, at_least: usize) -> bool {
    key.chars().filter(|c| c.is_numeric()).count() >= at_least
}

/// An unknown key named in the answer as it was sent: up to 64 printable
/// ASCII characters with fewer than [`UNNAMED_DIGITS`] digits. Any other
/// key is left out whole (never shown cut or filtered, which would name a
/// field that was not sent).
fn shown_as_sent(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 64
        && key.bytes().all(|b| b.is_ascii_graphic())
        && !has_digits(key, UNNAMED_DIGITS)
}

fn join(path: &str, key: &str) -> String {
    // Keys come from the client: keep them short and printable in messages.
    let key: String = key
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect();
    if path.is_empty() {
        key
    } else {
        format!("{path}.{key}")
    }
}

/// The first place where `value` does not fit `schema`, if any.
pub fn find_problem(
    registry: &Registry,
    schema: &MetaSchemaRef,
    value: &Value,
    path: &str,
) -> Option<(String, Problem)> {
    let s = resolve(registry, schema)?;
    if value.is_null() {
        // Optional fields accept null; required ones are caught by their parent.
        return None;
    }
    if !s.enum_items.is_empty() {
        return match value {
            Value::String(_) if s.enum_items.contains(value) => None,
            Value::String(_) => Some((path.to_owned(), Problem::OutOfSchema)),
            _ => Some((path.to_owned(), Problem::WrongType("a string"))),
        };
    }
    if !s.all_of.is_empty() {
        return s
            .all_of
            .iter()
            .find_map(|part| find_problem(registry, part, value, path));
    }
    if !s.one_of.is_empty() {
        let fits = s
            .one_of
            .iter()
            .any(|alt| find_problem(registry, alt, value, path).is_none());
        return (!fits).then(|| {
            let problem = if value.is_string() {
                Problem::OutOfSchema
            } else {
                Problem::WrongType("a string")
            };
            (path.to_owned(), problem)
        });
    }
    match s.ty {
        "object" => {
            let Value::Object(map) = value else {
                return Some((path.to_owned(), Problem::WrongType("an object")));
            };
            if !s.properties.is_empty() || !s.required.is_empty() {
                for key in map.keys() {
                    if !s.properties.iter().any(|(name, _)| name == key) {
                        // Not named when it has 3 digits or more, as a card
                        // number, CVV, phone or ID number sent as a key
                        // does (the schema's own names matched above).
                        return Some(if shown_as_sent(key) {
                            (join(path, key), Problem::Unknown)
                        } else {
                            (path.to_owned(), Problem::UnknownUnnamed)
                        });
                    }
                }
            }
            for (name, prop) in &s.properties {
                match map.get(*name) {
                    None | Some(Value::Null) if s.required.contains(name) => {
                        return Some((join(path, name), Problem::Missing))
                    }
                    None => {}
                    Some(v) => {
                        if let Some(p) = find_problem(registry, prop, v, &join(path, name)) {
                            return Some(p);
                        }
                    }
                }
            }
            None
        }
        "array" => {
            let Value::Array(items) = value else {
                return Some((path.to_owned(), Problem::WrongType("an array")));
            };
            let item_schema = s.items.as_deref()?;
            items
                .iter()
                .enumerate()
                .find_map(|(i, v)| find_problem(registry, item_schema, v, &format!("{path}[{i}]")))
        }
        "string" => match value {
            Value::String(v) => {
                (!string_fits(s, v)).then(|| (path.to_owned(), Problem::OutOfSchema))
            }
            _ => Some((path.to_owned(), Problem::WrongType("a string"))),
        },
        "boolean" => match value {
            Value::Bool(_) => None,
            _ => Some((path.to_owned(), Problem::WrongType("a boolean"))),
        },
        "integer" => {
            let integer = value.as_i64().is_some() || value.as_u64().is_some();
            let fits = match s.format {
                Some("uint32") => value.as_u64().is_some_and(|n| n <= u64::from(u32::MAX)),
                Some("uint64") => value.as_u64().is_some(),
                Some("int32") => value.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
                _ => integer,
            };
            if !fits {
                // A whole number past what the field's type holds is out of
                // the field's range (its own code), like one past its
                // declared bounds; a fraction (or 5.0) is not an integer.
                // Bounds exact in f64: the lowest value the type holds, and
                // the lowest above it (2^32, 2^31, 2^64; `u64::MAX as f64`
                // would round up to 2^64 itself).
                const TWO_63: f64 = 9_223_372_036_854_775_808.0;
                const TWO_64: f64 = 18_446_744_073_709_551_616.0;
                let (lo, above) = match s.format {
                    Some("uint32") => (0.0, f64::from(u32::MAX) + 1.0),
                    Some("uint64") => (0.0, TWO_64),
                    Some("int32") => (f64::from(i32::MIN), f64::from(i32::MAX) + 1.0),
                    _ => (-TWO_63, TWO_64),
                };
                let past_type = value
                    .as_f64()
                    .is_some_and(|f| f.is_finite() && f.fract() == 0.0 && (f < lo || f >= above));
                if past_type {
                    return Some((path.to_owned(), Problem::OutOfSchema));
                }
                let wanted = match (integer, s.format) {
                    (false, _) => "an integer",
                    (true, Some("uint32")) => "an integer from 0 to 4294967295",
                    (true, Some("uint64")) => "an integer of at least 0",
                    (true, Some("int32")) => "an integer from -2147483648 to 2147483647",
                    (true, _) => "an integer in range",
                };
                return Some((path.to_owned(), Problem::WrongType(wanted)));
            }
            let n = value.as_f64().unwrap_or(f64::NAN);
            let in_range =
                s.minimum.is_none_or(|min| n >= min) && s.maximum.is_none_or(|max| n <= max);
            (!in_range).then(|| (path.to_owned(), Problem::OutOfSchema))
        }
        "number" => (!value.is_number()).then(|| (path.to_owned(), Problem::WrongType("a number"))),
        _ => None,
    }
}

/// Whether a string has the length, pattern and format its schema declares.
fn string_fits(s: &MetaSchema, v: &str) -> bool {
    let n = v.chars().count();
    let format_ok = match s.format {
        Some("ipv4") => v.parse::<std::net::Ipv4Addr>().is_ok(),
        Some("ipv6") => v.parse::<std::net::Ipv6Addr>().is_ok(),
        Some("date-time") => parse_rfc3339(v).is_some(),
        _ => true,
    };
    s.min_length.is_none_or(|min| n >= min)
        && s.max_length.is_none_or(|max| n <= max)
        && s.pattern.as_deref().is_none_or(|p| pattern_matches(p, v))
        && format_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::dto::BindCardBody;

    fn body(v: serde_json::Value) -> Result<BindCardBody, ApiError> {
        parse_json::<BindCardBody>(v.to_string().as_bytes(), 16)
    }

    fn good() -> serde_json::Value {
        serde_json::json!({
            "card_number": "4111111111111111", "expiry_month": 12, "expiry_year": 2030,
            "holder_name": "张三", "id_number": "11010519491231002X", "phone": "13800138000",
            "consent": {"text_version": "v1", "text_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}
        })
    }

    #[test]
    fn depth_counts_nesting_outside_strings() {
        assert_eq!(json_depth(br#"{"a":[1,{"b":"[[[["}]}"#), 3);
        assert_eq!(json_depth(br#""\"{""#), 0);
    }

    #[test]
    fn problems_name_the_field_and_never_the_value() {
        assert!(body(good()).is_ok());
        let mut v = good();
        v["expiry_month"] = serde_json::json!("4111111111111111");
        let e = body(v)
            .err()
            .map(|e| (e.field, e.message))
            .unwrap_or_default();
        assert_eq!(e.0.as_deref(), Some("expiry_month"));
        assert!(!e.1.contains("4111"));
        let mut v = good();
        v["consent"]["extra"] = serde_json::json!(1);
        assert_eq!(
            body(v).err().and_then(|e| e.field).as_deref(),
            Some("consent.extra")
        );
        let mut v = good();
        v["channel"] = serde_json::json!("paypal");
        let e = body(v).err();
        assert_eq!(
            e.as_ref().map(|e| e.code),
            Some(ErrorCode::ChannelNotEnabled)
        );
        assert_eq!(e.and_then(|e| e.field).as_deref(), Some("channel"));
        let mut v = good();
        v.as_object_mut().map(|m| m.remove("phone"));
        assert_eq!(
            body(v).err().and_then(|e| e.field).as_deref(),
            Some("phone")
        );
        let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
        assert!(parse_json::<BindCardBody>(deep.as_bytes(), 16).is_err());
    }

    #[test]
    fn a_body_that_is_no_object_names_the_body_whatever_it_is() {
        for text in ["null", " null ", "[]", "\"x\"", "1", "true"] {
            let e = parse_json::<BindCardBody>(text.as_bytes(), 16).err();
            let e = e.map(|e| (e.code, e.field, e.message));
            assert_eq!(
                e,
                Some((
                    ErrorCode::InvalidRequest,
                    Some("body".to_owned()),
                    "`body` must be an object".to_owned()
                )),
                "{text}"
            );
        }
    }

    #[test]
    fn a_key_named_twice_in_one_object_is_refused() {
        let text = good().to_string();
        assert!(parse_json::<BindCardBody>(text.as_bytes(), 16).is_ok());
        let twice = [
            text.replacen('{', r#"{"expiry_month":1,"#, 1),
            text.replacen(r#""consent":{"#, r#""consent":{"text_version":"v0","#, 1),
        ];
        for t in twice {
            assert_ne!(t, text);
            let e = parse_json::<BindCardBody>(t.as_bytes(), 16).err().unwrap();
            assert_eq!(e.code, ErrorCode::InvalidRequest);
            assert!(e.message.contains("twice"), "{}", e.message);
            assert!(!e.message.contains("4111"), "{}", e.message);
        }
        // The same key in two objects is no repeat.
        let v: Unique = serde_json::from_str(r#"[{"a":1},{"a":2}]"#).unwrap();
        assert_eq!(v.0, serde_json::json!([{"a":1},{"a":2}]));
    }

    #[test]
    fn an_integer_field_says_whether_the_type_or_the_range_is_wrong() {
        let message = |month: serde_json::Value| {
            let mut v = good();
            v["expiry_month"] = month;
            body(v).err().map(|e| e.message).unwrap_or_default()
        };
        assert_eq!(
            message(serde_json::json!("12")),
            "`expiry_month` must be an integer"
        );
        assert_eq!(
            message(serde_json::json!(12.5)),
            "`expiry_month` must be an integer"
        );
        // A whole number past the type's range is out of the field's
        // range: its own code, as 13 is.
        let code = |month: serde_json::Value| {
            let mut v = good();
            v["expiry_month"] = month;
            body(v).err().map(|e| e.code)
        };
        for month in [
            serde_json::json!(-1),
            serde_json::json!(4_294_967_296u64),
            serde_json::json!(13),
            serde_json::from_str("18446744073709551616").unwrap(),
            serde_json::from_str("-9223372036854775809").unwrap(),
        ] {
            assert_eq!(code(month), Some(ErrorCode::InvalidExpiry));
        }
        assert_eq!(
            message(serde_json::json!(5.0)),
            "`expiry_month` must be an integer"
        );
    }
}
