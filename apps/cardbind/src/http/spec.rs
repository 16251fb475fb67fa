//! The OpenAPI document: poem-openapi's spec of the operations, finished in
//! one place ([`finish_spec`]) with what poem-openapi cannot express. Both
//! `cardbind spec` and `GET /openapi.json` serve [`api_spec_json`], so they
//! are the same text, committed as `docs/openapi.json`.

use serde_json::{json, Map, Value};

use super::{service, SIGNATURE_HEADER};

/// Sorts every object's keys, so that the text does not depend on the map
/// type serde_json was built with.
fn canonical(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(String, Value)> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            let mut out = Map::new();
            for (k, v) in entries {
                out.insert(k, canonical(v));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.into_iter().map(canonical).collect()),
        other => other,
    }
}

/// Adds what poem-openapi cannot express: the request-signature scheme
/// (required together with the bearer token for registered service
/// clients), the list of stable error codes, closed request bodies
/// ([`close_request_bodies`]) and the links between operations
/// ([`add_links`]).
fn finish_spec(mut doc: Value) -> Value {
    let signature = json!({
        "type": "apiKey",
        "in": "header",
        "name": SIGNATURE_HEADER,
        "description": "Required, together with the bearer token, from clients registered for request signing (`auth.signed_clients`), whatever role their token names but `user`. \
            Value `t=<unix seconds>,n=<nonce: 8-128 of A-Z a-z 0-9 - _>,s=<hex HMAC-SHA256>` (each field once, no spaces, `t` without sign or leading zero) over \
            `METHOD \\n PATH?QUERY \\n t \\n nonce \\n hex(SHA-256(body))` with the client's secret. \
            Refused (401 `invalid_signature`) when missing, malformed, wrong, further from the service's clock than `auth.signature_window_seconds` (300 s by default), or when the nonce was seen before; sent twice, 400 `invalid_request`."
    });
    if let Some(schemes) = doc
        .pointer_mut("/components/securitySchemes")
        .and_then(Value::as_object_mut)
    {
        schemes.insert("requestSignature".into(), signature);
    }
    each_operation(&mut doc, |op| {
        let Some(sec) = op.get_mut("security").and_then(Value::as_array_mut) else {
            return;
        };
        let bearer_only = sec.len() == 1 && sec[0].get("bearerAuth").is_some();
        if bearer_only {
            *sec = vec![
                json!({"bearerAuth": [], "requestSignature": []}),
                json!({"bearerAuth": []}),
            ];
        }
    });
    // poem-openapi upper-cases response header names; show them as sent.
    each_response(&mut doc, |resp| {
        if let Some(headers) = resp.get_mut("headers").and_then(Value::as_object_mut) {
            let renamed: Map<String, Value> = std::mem::take(headers)
                .into_iter()
                .map(|(k, v)| (header_case(&k), v))
                .collect();
            *headers = renamed;
        }
    });
    if let Some(code) = doc
        .pointer_mut("/components/schemas/ErrorBody/properties/code")
        .and_then(Value::as_object_mut)
    {
        code.insert(
            "description".into(),
            Value::String(super::error::codes_description()),
        );
    }
    close_request_bodies(&mut doc);
    plain_references(&mut doc);
    each_object(&mut doc, &mut |m| {
        formats_any_of(m);
        registered_integer_formats(m);
    });
    plain_json_media_types(&mut doc);
    add_links(&mut doc);
    canonical(doc)
}

/// poem-openapi gives a property whose type is a named schema and which
/// has a description of its own as `allOf: [{$ref}, {description}]`.
/// Client generators read a two-part `allOf` as a composition: openapi-python-client
/// refused it over a string enum (and dropped `BindCardBody`, `Card` and
/// with them `bindCard`), oapi-codegen and openapi-python-client made an
/// anonymous copy of the object for every such property
/// (`ShareCardBodyConsent` instead of `ConsentBody`). A one-part `allOf`
/// with the description beside it is read as the named type by
/// openapi-python-client, oapi-codegen and openapi-generator alike, and
/// keeps the property's own description (a sibling of a bare `$ref` is
/// ignored in OpenAPI 3.0).
fn plain_references(doc: &mut Value) {
    let Some(all) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for schema in all.values_mut() {
        let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
            continue;
        };
        for prop in props.values_mut() {
            let Some(parts) = prop.get("allOf").and_then(Value::as_array) else {
                continue;
            };
            let references: Vec<&Value> =
                parts.iter().filter(|p| p.get("$ref").is_some()).collect();
            let only_words = parts.iter().all(|p| {
                p.get("$ref").is_some()
                    || p.as_object()
                        .is_some_and(|o| o.keys().all(|k| k == "description"))
            });
            // One named type and words about it; a real composition stays.
            let ([reference], true) = (references.as_slice(), only_words) else {
                continue;
            };
            let reference = (*reference).clone();
            let description = prop
                .get("description")
                .or_else(|| parts.iter().find_map(|p| p.get("description")))
                .cloned();
            let Some(obj) = prop.as_object_mut() else {
                continue;
            };
            obj.insert("allOf".into(), Value::Array(vec![reference]));
            if let Some(d) = description {
                obj.insert("description".into(), d);
            }
        }
    }
}

/// Calls `f` with every object in `v`, outer before inner.
fn each_object(v: &mut Value, f: &mut impl FnMut(&mut Map<String, Value>)) {
    match v {
        Value::Object(m) => {
            f(m);
            for x in m.values_mut() {
                each_object(x, f);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| each_object(x, f)),
        _ => {}
    }
}

/// A `oneOf` whose branches differ only by `format` (an IP address: `ipv4`
/// or `ipv6`) matches both branches for a validator that does not check
/// formats (the default of many), and so matches no value at all: such a
/// `oneOf` becomes an `anyOf`, which means the same where formats are
/// checked.
fn formats_any_of(m: &mut Map<String, Value>) {
    let formats_only = m
        .get("oneOf")
        .and_then(Value::as_array)
        .is_some_and(|alts| {
            alts.len() > 1
                && alts.iter().all(|a| {
                    a.as_object().is_some_and(|o| {
                        o.contains_key("format") && o.keys().all(|k| k == "format" || k == "type")
                    })
                })
        });
    if formats_only {
        if let Some(alts) = m.remove("oneOf") {
            m.insert("anyOf".into(), alts);
        }
    }
}

/// Integers carry the formats OpenAPI registers (`int32`, `int64`), their
/// range in `minimum`/`maximum`. poem-openapi writes Rust's unsigned types
/// as `uint32`/`uint64`, which generators do not know and read as a 32-bit
/// signed integer (openapi-generator's Java: an audit event's `seq` above
/// 2^31 − 1 would not deserialize). An unsigned integer whose declared
/// maximum fits in `int32` becomes `int32`, any other `int64`; each gets
/// `minimum: 0`, and a `uint32` without a maximum its own. Bounds are
/// written as integers.
fn registered_integer_formats(m: &mut Map<String, Value>) {
    let unsigned = m
        .get("format")
        .and_then(Value::as_str)
        .filter(|f| matches!(*f, "uint8" | "uint16" | "uint32" | "uint64"))
        .map(str::to_owned);
    if let Some(format) = unsigned {
        let max = m.get("maximum").and_then(Value::as_f64);
        let fits_i32 = max.is_some_and(|x| x <= f64::from(i32::MAX));
        let narrow = format != "uint64";
        let int = if narrow && fits_i32 { "int32" } else { "int64" };
        m.insert("format".into(), Value::from(int));
        if !m.contains_key("minimum") {
            m.insert("minimum".into(), Value::from(0));
        }
        if max.is_none() {
            let top = match format.as_str() {
                "uint8" => Some(u64::from(u8::MAX)),
                "uint16" => Some(u64::from(u16::MAX)),
                "uint32" => Some(u64::from(u32::MAX)),
                _ => None,
            };
            if let Some(top) = top {
                m.insert("maximum".into(), Value::from(top));
            }
        }
    }
    // poem-openapi writes an integer's bounds as floats (`12.0`).
    if m.get("type").and_then(Value::as_str) == Some("integer") {
        for bound in ["minimum", "maximum"] {
            let whole = m
                .get(bound)
                .and_then(Value::as_f64)
                .filter(|x| x.fract() == 0.0 && x.abs() < 9.0e15);
            if let Some(x) = whole {
                // Exact: a whole number below 2^53.
                #[allow(clippy::cast_possible_truncation)]
                m.insert(bound.into(), Value::from(x as i64));
            }
        }
    }
}

/// Answers are declared `application/json`, as clients name the media
/// type: poem-openapi declares `application/json; charset=utf-8`, a
/// parameter RFC 8259 does not define for JSON, which some generators
/// carry into every name (oapi-codegen's `ApplicationjsonCharsetUtf8201`).
/// The bodies are the same UTF-8 JSON; the header sent is unchanged.
fn plain_json_media_types(doc: &mut Value) {
    each_response(doc, |resp| {
        if let Some(content) = resp.get_mut("content").and_then(Value::as_object_mut) {
            if let Some(media) = content.remove("application/json; charset=utf-8") {
                content.insert("application/json".into(), media);
            }
        }
    });
}

/// Calls `f` with every operation of every path.
fn each_operation(doc: &mut Value, f: impl FnMut(&mut Value)) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|o| o.values_mut())
        .for_each(f);
}

/// Calls `f` with every response of every operation.
fn each_response(doc: &mut Value, mut f: impl FnMut(&mut Value)) {
    each_operation(doc, |op| {
        if let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) {
            responses.values_mut().for_each(&mut f);
        }
    });
}

/// `X-REQUEST-ID` → `X-Request-Id`.
fn header_case(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let lower = part.to_ascii_lowercase();
            let mut chars = lower.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// The OpenAPI 3 spec, deterministic (committed as `docs/openapi.json`).
pub fn api_spec_json() -> String {
    let raw = service().spec();
    match serde_json::from_str::<Value>(&raw) {
        Ok(doc) => {
            let mut s = serde_json::to_string_pretty(&finish_spec(doc)).unwrap_or(raw);
            s.push('\n');
            s
        }
        Err(_) => raw,
    }
}

/// Request bodies as the body reader ([`super::body`]) reads them: an
/// unknown field is refused (`additionalProperties: false`) and an
/// optional field may be `null` (the same as absent). Applied to every
/// object schema a request body reaches.
fn close_request_bodies(doc: &mut Value) {
    let mut names: Vec<String> = Vec::new();
    let mut pending: Vec<Value> = Vec::new();
    if let Some(paths) = doc.get("paths").and_then(Value::as_object) {
        for op in paths
            .values()
            .filter_map(Value::as_object)
            .flat_map(|o| o.values())
        {
            if let Some(content) = op
                .pointer("/requestBody/content")
                .and_then(Value::as_object)
            {
                pending.extend(content.values().filter_map(|m| m.get("schema")).cloned());
            }
        }
    }
    while let Some(schema) = pending.pop() {
        if let Some(name) = schema
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix("#/components/schemas/"))
        {
            if names.iter().any(|n| n == name) {
                continue;
            }
            names.push(name.to_owned());
            if let Some(target) = doc.pointer(&format!("/components/schemas/{name}")) {
                pending.push(target.clone());
            }
            continue;
        }
        for key in ["properties"] {
            if let Some(props) = schema.get(key).and_then(Value::as_object) {
                pending.extend(props.values().cloned());
            }
        }
        for key in ["allOf", "anyOf", "oneOf"] {
            if let Some(alts) = schema.get(key).and_then(Value::as_array) {
                pending.extend(alts.iter().cloned());
            }
        }
    }
    for name in names {
        let Some(schema) = doc
            .pointer_mut(&format!("/components/schemas/{name}"))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        if schema.get("type").and_then(Value::as_str) != Some("object") {
            continue;
        }
        let required: Vec<String> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| {
                r.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        schema.insert("additionalProperties".into(), Value::Bool(false));
        if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
            for (prop, value) in props.iter_mut() {
                if required.contains(prop) {
                    continue;
                }
                let Some(obj) = value.as_object_mut() else {
                    continue;
                };
                if let Some(reference) = obj.remove("$ref") {
                    // A `$ref` takes no siblings in OpenAPI 3.0.
                    obj.insert("allOf".into(), json!([{ "$ref": reference }]));
                }
                obj.insert("nullable".into(), Value::Bool(true));
            }
        }
    }
}

/// One link: from a response of `from` to the operation `to`, with where
/// each of its parameters comes from.
struct Link {
    from: &'static str,
    status: &'static str,
    to: &'static str,
    params: &'static [(&'static str, &'static str)],
}

const USER_FROM_PATH: (&str, &str) = ("user_id", "$request.path.user_id");
const USER_FROM_BODY: (&str, &str) = ("user_id", "$response.body#/user_id");
const CARD_FROM_BODY: (&str, &str) = ("card_id", "$response.body#/id");
const CARD_PATH: &[(&str, &str)] = &[USER_FROM_PATH, CARD_FROM_BODY];
const CARD_BODY: &[(&str, &str)] = &[USER_FROM_BODY, CARD_FROM_BODY];
const REVIEW: &[(&str, &str)] = &[CARD_FROM_BODY];
const FIRST_REVIEW: &[(&str, &str)] = &[("card_id", "$response.body#/cards/0/id")];
const FIRST_CARD: &[(&str, &str)] = &[USER_FROM_PATH, ("card_id", "$response.body#/cards/0/id")];
const SHARE_OF_CARD: &[(&str, &str)] = &[
    USER_FROM_PATH,
    ("card_id", "$request.path.card_id"),
    ("share_id", "$response.body#/id"),
];
const CARD_OF_SHARE: &[(&str, &str)] = &[USER_FROM_PATH, ("card_id", "$request.path.card_id")];
const SHARE_TO_SECONDARY: &[(&str, &str)] = &[
    ("user_id", "$response.body#/secondary_user_id"),
    ("share_id", "$response.body#/id"),
];
const SHARED_CARD: &[(&str, &str)] = &[USER_FROM_PATH, ("share_id", "$response.body#/share_id")];
const SHARED_AS_CARD: &[(&str, &str)] = &[USER_FROM_PATH, ("card_id", "$response.body#/share_id")];
const FIRST_SHARED: &[(&str, &str)] = &[
    USER_FROM_PATH,
    ("share_id", "$response.body#/shared_cards/0/share_id"),
];

/// What a client (or a stateful test) can do next with the card an answer
/// names: a bound card can be verified, read, made the default, frozen or
/// unbound; a card in review can be approved, rejected or retried; a share
/// can be revoked by its holder, accepted or left by the user it was made
/// to, and once accepted it is a card of theirs (read, made the default).
const LINKS: &[Link] = &[
    Link {
        from: "bindCard",
        status: "201",
        to: "verifyCard",
        params: CARD_PATH,
    },
    Link {
        from: "bindCard",
        status: "201",
        to: "getCard",
        params: CARD_PATH,
    },
    Link {
        from: "bindCard",
        status: "201",
        to: "setDefaultCard",
        params: CARD_PATH,
    },
    Link {
        from: "bindCard",
        status: "201",
        to: "unbindCard",
        params: CARD_PATH,
    },
    Link {
        from: "bindCard",
        status: "201",
        to: "freezeCard",
        params: CARD_PATH,
    },
    Link {
        from: "bindCard",
        status: "202",
        to: "getCard",
        params: CARD_PATH,
    },
    Link {
        from: "bindCard",
        status: "202",
        to: "approveReview",
        params: REVIEW,
    },
    Link {
        from: "bindCard",
        status: "202",
        to: "rejectReview",
        params: REVIEW,
    },
    Link {
        from: "bindCard",
        status: "202",
        to: "retryReview",
        params: REVIEW,
    },
    Link {
        from: "verifyCard",
        status: "200",
        to: "getCard",
        params: CARD_PATH,
    },
    Link {
        from: "verifyCard",
        status: "200",
        to: "setDefaultCard",
        params: CARD_PATH,
    },
    Link {
        from: "verifyCard",
        status: "200",
        to: "freezeCard",
        params: CARD_PATH,
    },
    Link {
        from: "verifyCard",
        status: "200",
        to: "unbindCard",
        params: CARD_PATH,
    },
    Link {
        from: "listCards",
        status: "200",
        to: "getCard",
        params: FIRST_CARD,
    },
    Link {
        from: "setDefaultCard",
        status: "200",
        to: "freezeCard",
        params: CARD_PATH,
    },
    Link {
        from: "setDefaultCard",
        status: "200",
        to: "unbindCard",
        params: CARD_PATH,
    },
    Link {
        from: "freezeCard",
        status: "200",
        to: "unfreezeCard",
        params: CARD_BODY,
    },
    Link {
        from: "freezeCard",
        status: "200",
        to: "getCard",
        params: CARD_BODY,
    },
    Link {
        from: "freezeCard",
        status: "200",
        to: "unbindCard",
        params: CARD_BODY,
    },
    Link {
        from: "unfreezeCard",
        status: "200",
        to: "setDefaultCard",
        params: CARD_BODY,
    },
    Link {
        from: "unfreezeCard",
        status: "200",
        to: "freezeCard",
        params: CARD_BODY,
    },
    Link {
        from: "listReviews",
        status: "200",
        to: "approveReview",
        params: FIRST_REVIEW,
    },
    Link {
        from: "listReviews",
        status: "200",
        to: "rejectReview",
        params: FIRST_REVIEW,
    },
    Link {
        from: "listReviews",
        status: "200",
        to: "retryReview",
        params: FIRST_REVIEW,
    },
    Link {
        from: "approveReview",
        status: "200",
        to: "getCard",
        params: CARD_BODY,
    },
    Link {
        from: "approveReview",
        status: "200",
        to: "freezeCard",
        params: CARD_BODY,
    },
    Link {
        from: "retryReview",
        status: "200",
        to: "verifyCard",
        params: CARD_BODY,
    },
    Link {
        from: "retryReview",
        status: "200",
        to: "getCard",
        params: CARD_BODY,
    },
    Link {
        from: "shareCard",
        status: "201",
        to: "revokeShare",
        params: SHARE_OF_CARD,
    },
    Link {
        from: "shareCard",
        status: "201",
        to: "listCardShares",
        params: CARD_OF_SHARE,
    },
    Link {
        from: "shareCard",
        status: "201",
        to: "acceptShare",
        params: SHARE_TO_SECONDARY,
    },
    Link {
        from: "shareCard",
        status: "201",
        to: "leaveShare",
        params: SHARE_TO_SECONDARY,
    },
    Link {
        from: "listSharedCards",
        status: "200",
        to: "acceptShare",
        params: FIRST_SHARED,
    },
    Link {
        from: "acceptShare",
        status: "200",
        to: "getCard",
        params: SHARED_AS_CARD,
    },
    Link {
        from: "acceptShare",
        status: "200",
        to: "setDefaultCard",
        params: SHARED_AS_CARD,
    },
    Link {
        from: "acceptShare",
        status: "200",
        to: "leaveShare",
        params: SHARED_CARD,
    },
];

/// `verifyCard` → `VerifyCard`.
fn link_name(operation_id: &str) -> String {
    let mut chars = operation_id.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

/// OpenAPI links ([`LINKS`]), which poem-openapi does not generate: each
/// goes on its response as `links.<TargetOperation>`.
fn add_links(doc: &mut Value) {
    each_operation(doc, |op| {
        let Some(id) = op
            .get("operationId")
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            return;
        };
        for link in LINKS.iter().filter(|l| l.from == id) {
            let Some(resp) = op
                .pointer_mut(&format!("/responses/{}", link.status))
                .and_then(Value::as_object_mut)
            else {
                continue;
            };
            let params: Map<String, Value> = link
                .params
                .iter()
                .map(|(name, source)| ((*name).to_owned(), Value::String((*source).to_owned())))
                .collect();
            let links = resp
                .entry("links")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(links) = links.as_object_mut() {
                links.insert(
                    link_name(link.to),
                    json!({ "operationId": link.to, "parameters": params }),
                );
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Generated clients read a two-part `allOf` as a composition (an
    /// anonymous copy of the type, or a refusal over a string enum): every
    /// property that names a schema names it alone, with its own
    /// description beside it (scripts/generated-client.sh generates one).
    #[test]
    fn properties_name_their_schemas_alone() {
        let doc: Value = serde_json::from_str(&api_spec_json()).unwrap_or_default();
        let schemas = doc["components"]["schemas"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let mut bad = Vec::new();
        let mut named = 0;
        for (name, schema) in &schemas {
            for (prop, v) in schema["properties"].as_object().into_iter().flatten() {
                let Some(parts) = v["allOf"].as_array() else {
                    continue;
                };
                named += 1;
                let target = parts[0]["$ref"]
                    .as_str()
                    .and_then(|r| r.strip_prefix("#/components/schemas/"));
                if parts.len() != 1 || target.is_none_or(|t| !schemas.contains_key(t)) {
                    bad.push(format!("{name}.{prop}"));
                }
            }
        }
        assert!(bad.is_empty(), "compositions: {bad:?}");
        assert!(named >= 10, "{named}");
        let channel = &schemas["BindCardBody"]["properties"]["channel"];
        assert_eq!(
            channel["allOf"][0]["$ref"],
            "#/components/schemas/ChannelKind"
        );
        assert!(channel["description"].is_string());
        assert_eq!(
            schemas["ChannelKind"]["enum"].as_array().map(Vec::len),
            Some(3)
        );
        let consent = &schemas["ShareCardBody"]["properties"]["consent"];
        assert_eq!(
            consent["allOf"][0]["$ref"],
            "#/components/schemas/ConsentBody"
        );
        assert!(consent["description"].is_string());
    }

    #[test]
    fn only_a_named_type_with_words_about_it_is_made_plain() {
        let mut doc = json!({"components": {"schemas": {"S": {"properties": {
            "described": {"allOf": [{"$ref": "#/components/schemas/A"}, {"description": "d"}],
                "description": "d", "nullable": true},
            "composed": {"allOf": [{"$ref": "#/components/schemas/A"}, {"$ref": "#/components/schemas/B"}]},
            "extended": {"allOf": [{"$ref": "#/components/schemas/A"}, {"properties": {"x": {}}}]}
        }}}}});
        let before = doc.clone();
        plain_references(&mut doc);
        let props = &doc["components"]["schemas"]["S"]["properties"];
        assert_eq!(
            props["described"],
            json!({"allOf": [{"$ref": "#/components/schemas/A"}], "description": "d", "nullable": true})
        );
        let was = &before["components"]["schemas"]["S"]["properties"];
        assert_eq!(props["composed"], was["composed"]);
        assert_eq!(props["extended"], was["extended"]);
    }

    /// Without a format checker both branches of a `oneOf` that differ by
    /// `format` alone match, so it would match no value: the IP is an
    /// `anyOf`. And JSON answers are `application/json` alone.
    #[test]
    fn ip_addresses_and_json_answers_read_the_same_to_every_client() {
        let doc: Value = serde_json::from_str(&api_spec_json()).unwrap_or_default();
        let ip = &doc["components"]["schemas"]["ConsentBody"]["properties"]["ip"];
        assert!(ip.get("oneOf").is_none(), "{ip}");
        let formats: Vec<&str> = ip["anyOf"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["format"].as_str())
            .collect();
        assert_eq!(formats, ["ipv4", "ipv6"]);
        let text = api_spec_json();
        assert!(!text.contains("application/json; charset"));
        let bind = &doc["paths"]["/v1/users/{user_id}/cards"]["post"]["responses"]["201"];
        assert!(
            bind["content"]["application/json"]["schema"].is_object(),
            "{bind}"
        );
    }

    #[test]
    fn every_link_joins_declared_operations_and_parameters() {
        let doc: Value = serde_json::from_str(&api_spec_json()).unwrap_or_default();
        let mut ops: Vec<(String, Value)> = Vec::new();
        for o in doc["paths"]
            .as_object()
            .into_iter()
            .flat_map(|p| p.values())
        {
            for op in o.as_object().into_iter().flat_map(|m| m.values()) {
                ops.push((
                    op["operationId"].as_str().unwrap_or("").to_owned(),
                    op.clone(),
                ));
            }
        }
        let find = |id: &str| ops.iter().find(|(i, _)| i == id).map(|(_, op)| op.clone());
        for link in LINKS {
            let from = find(link.from).unwrap_or_default();
            let to = find(link.to).unwrap_or_default();
            let declared = &from["responses"][link.status]["links"][link_name(link.to)];
            assert_eq!(
                declared["operationId"], link.to,
                "{} -> {}",
                link.from, link.to
            );
            let path_params: Vec<&str> = to["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .filter_map(|p| p["name"].as_str())
                .collect();
            let mut given: Vec<&str> = link.params.iter().map(|p| p.0).collect();
            given.sort_unstable();
            let mut wanted = path_params.clone();
            wanted.sort_unstable();
            assert_eq!(
                given, wanted,
                "{} -> {} fills every path parameter",
                link.from, link.to
            );
        }
    }

    #[test]
    fn request_bodies_are_closed_and_optional_fields_nullable() {
        let doc: Value = serde_json::from_str(&api_spec_json()).unwrap_or_default();
        for name in [
            "BindCardBody",
            "ConsentBody",
            "VerifyCardBody",
            "ApproveReviewBody",
            "ShareCardBody",
            "AcceptShareBody",
            "MoneyBody",
        ] {
            let s = &doc["components"]["schemas"][name];
            assert_eq!(s["additionalProperties"], false, "{name}");
        }
        let bind = &doc["components"]["schemas"]["BindCardBody"]["properties"];
        assert_eq!(bind["cvv"]["nullable"], true);
        assert_eq!(bind["channel"]["nullable"], true);
        assert!(bind["card_number"].get("nullable").is_none());
        // Response schemas stay open.
        assert!(doc["components"]["schemas"]["Card"]
            .get("additionalProperties")
            .is_none());
    }
}
