//! The committed OpenAPI spec (`docs/openapi.json`) is what the code
//! generates. Run with `CARDBIND_UPDATE_SPEC=1` to rewrite it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use cardbind_domain::ErrorCode;
use serde_json::Value;

fn spec_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

#[test]
fn committed_spec_matches_the_code() {
    let generated = cardbind::http::api_spec_json();
    let path = spec_path();
    if std::env::var("CARDBIND_UPDATE_SPEC").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let first_diff = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map_or_else(
                || committed.lines().count().min(generated.lines().count()) + 1,
                |i| i + 1,
            );
        panic!(
            "docs/openapi.json is out of date with the code (first difference at line {first_diff}).\n\
             Regenerate it with:  CARDBIND_UPDATE_SPEC=1 cargo test -p cardbind --test http_spec\n\
             and commit the result."
        );
    }
}

#[test]
fn spec_is_deterministic() {
    assert_eq!(
        cardbind::http::api_spec_json(),
        cardbind::http::api_spec_json()
    );
}

#[test]
fn spec_declares_operations_security_and_errors() {
    let spec: Value = serde_json::from_str(&cardbind::http::api_spec_json()).unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    let mut ids = Vec::new();
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            ids.push(id.to_owned());
            let responses = op["responses"].as_object().unwrap();
            if path.starts_with("/v1/") {
                assert!(responses.contains_key("500"), "{id} declares 500");
                assert!(responses.contains_key("400"), "{id} declares 400");
            }
            let secured = op.get("security").is_some();
            if path.starts_with("/v1/") && !path.starts_with("/v1/channels/") {
                assert!(secured, "{id} requires a bearer token");
                assert!(
                    responses.contains_key("401") && responses.contains_key("403")
                        || id == "channelNotify",
                    "{id}"
                );
            }
        }
    }
    for id in [
        "bindCard",
        "verifyCard",
        "listCards",
        "getCard",
        "unbindCard",
        "setDefaultCard",
        "freezeCard",
        "unfreezeCard",
        "listReviews",
        "approveReview",
        "rejectReview",
        "eraseUser",
        "listAuditEvents",
        "listConsents",
        "channelNotify",
        "lookupBin",
        "liveness",
        "readiness",
        "metrics",
    ] {
        assert!(ids.iter().any(|i| i == id), "missing {id}");
    }
    let notify = &spec["paths"]["/v1/channels/{channel}/notify"]["post"];
    assert!(
        notify.get("security").is_none(),
        "channels sign their own notifications"
    );

    let bind = &spec["paths"]["/v1/users/{user_id}/cards"]["post"];
    for status in [
        "201", "202", "400", "401", "403", "404", "409", "413", "422", "429", "500", "503",
    ] {
        assert!(bind["responses"].get(status).is_some(), "bindCard {status}");
    }
    assert!(bind["responses"]["429"]["headers"]
        .get("Retry-After")
        .is_some());
    assert!(bind["responses"]["201"]["headers"]
        .get("X-Request-Id")
        .is_some());
    let params: Vec<&str> = bind["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(params.contains(&"Idempotency-Key"), "{params:?}");

    let schemes = &spec["components"]["securitySchemes"];
    assert_eq!(schemes["bearerAuth"]["scheme"], "bearer");
    assert_eq!(schemes["requestSignature"]["type"], "apiKey");
    assert_eq!(schemes["requestSignature"]["name"], "X-Cardbind-Signature");

    let codes = spec["components"]["schemas"]["ErrorBody"]["properties"]["code"]["description"]
        .as_str()
        .unwrap();
    for code in ErrorCode::ALL {
        assert!(
            codes.contains(&format!("`{}`", code.as_str())),
            "{code} listed"
        );
    }
    let card = &spec["components"]["schemas"]["Card"]["properties"];
    for forbidden in ["card_number", "id_number", "phone", "cvv", "holder_name"] {
        assert!(
            card.get(forbidden).is_none(),
            "Card never shows {forbidden}"
        );
    }
}
