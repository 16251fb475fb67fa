//! Family cards over HTTP: who may act on which share, bad requests and
//! their stable codes, the currency filter of the card list, the spec.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::family_support;
use crate::support;

use family_support::*;
use serde_json::{json, Value};
use support::*;

#[tokio::test]
async fn users_act_only_on_their_own_cards_and_shares() {
    let app = spawn();
    let a1 = bind_active(&app, "ann", VISA).await;
    let sid = share(&app, "ann", &a1, "bob", "s1").await;
    let revoke = format!("/v1/users/ann/cards/{a1}/shares/{sid}");
    let body = json!({ "consent": consent() });

    // Carl names ann or bob: forbidden.
    let r = send(&app, "DELETE", &revoke, ("carl", "user"), None, None).await;
    assert_error(r, 403, "forbidden").await;
    let r = send(
        &app,
        "POST",
        &format!("/v1/users/bob/shared-cards/{sid}/accept"),
        ("carl", "user"),
        None,
        Some(&body),
    )
    .await;
    assert_error(r, 403, "forbidden").await;
    let leave = format!("/v1/users/bob/shared-cards/{sid}");
    let r = send(&app, "DELETE", &leave, ("carl", "user"), None, None).await;
    assert_error(r, 403, "forbidden").await;
    for path in [
        format!("/v1/users/ann/cards/{a1}/shares"),
        "/v1/users/bob/shared-cards".to_owned(),
        "/v1/users/bob/cards".to_owned(),
    ] {
        let r = send(&app, "GET", &path, ("carl", "user"), None, None).await;
        assert_error(r, 403, "forbidden").await;
    }
    let r = send(
        &app,
        "POST",
        &format!("/v1/users/ann/cards/{a1}/shares"),
        ("carl", "user"),
        Some("c1"),
        Some(&share_body("carl", 100, "CNY", &in_seconds(&app, DAY))),
    )
    .await;
    assert_error(r, 403, "forbidden").await;

    // Carl on his own paths: ann's share is not his.
    assert_error(accept(&app, "carl", &sid).await, 404, "not_found").await;
    let r = send(
        &app,
        "DELETE",
        &format!("/v1/users/carl/shared-cards/{sid}"),
        ("carl", "user"),
        None,
        None,
    )
    .await;
    assert_error(r, 404, "not_found").await;
    let r = send(
        &app,
        "POST",
        &format!("/v1/users/carl/cards/{a1}/shares"),
        ("carl", "user"),
        Some("c2"),
        Some(&share_body("dan", 100, "CNY", &in_seconds(&app, DAY))),
    )
    .await;
    assert_error(r, 404, "not_found").await;
    // Bob cannot revoke as if he held the card (he may leave instead).
    let r = send(
        &app,
        "DELETE",
        &format!("/v1/users/bob/cards/{a1}/shares/{sid}"),
        ("bob", "user"),
        None,
        None,
    )
    .await;
    assert_error(r, 404, "not_found").await;
    // Nor can ann accept for bob.
    let r = send(
        &app,
        "POST",
        &format!("/v1/users/bob/shared-cards/{sid}/accept"),
        ("ann", "user"),
        None,
        Some(&body),
    )
    .await;
    assert_error(r, 403, "forbidden").await;

    // An operator may end a share, never give one.
    let r = send(
        &app,
        "POST",
        &format!("/v1/users/ann/cards/{a1}/shares"),
        ("op", "admin"),
        Some("o1"),
        Some(&share_body("dan", 100, "CNY", &in_seconds(&app, DAY))),
    )
    .await;
    assert_error(r, 403, "forbidden").await;
    let r = send(
        &app,
        "POST",
        &format!("/v1/users/bob/shared-cards/{sid}/accept"),
        ("op", "admin"),
        None,
        Some(&body),
    )
    .await;
    assert_error(r, 403, "forbidden").await;
    let r = send(&app, "DELETE", &revoke, ("op", "admin"), None, None).await;
    let v = ok(r, 200).await;
    assert_eq!(
        (v["status"].as_str(), v["revoked_by"].as_str()),
        (Some("revoked"), Some("op"))
    );
    assert!(shared_cards(&app, "bob").await.is_empty());
}

#[tokio::test]
async fn bad_share_requests_have_stable_codes() {
    let app = spawn();
    let a1 = bind_active(&app, "ann", VISA).await;
    let path = format!("/v1/users/ann/cards/{a1}/shares");
    let future = in_seconds(&app, 30 * DAY);
    let cases: Vec<(Value, u16, &str, Option<&str>)> = vec![
        (
            share_body("ann", 100, "CNY", &future),
            422,
            "share_with_self",
            None,
        ),
        (
            share_body("bob", 100, "CNY", &in_seconds(&app, -60)),
            400,
            "invalid_share_expiry",
            Some("expires_at"),
        ),
        (
            share_body("bob", 100, "CNY", &in_seconds(&app, 6 * 366 * DAY)),
            400,
            "invalid_share_expiry",
            Some("expires_at"),
        ),
        (
            share_body("bob", 100, "CNY", "next tuesday"),
            400,
            "invalid_share_expiry",
            Some("expires_at"),
        ),
        (
            share_body("bob", -500, "CNY", &future),
            400,
            "invalid_amount",
            Some("monthly_limit.amount"),
        ),
        (
            share_body("bob", 0, "CNY", &future),
            400,
            "invalid_amount",
            Some("monthly_limit.amount"),
        ),
        (
            share_body("bob", 1_000_000_000_000, "CNY", &future),
            400,
            "invalid_amount",
            Some("monthly_limit.amount"),
        ),
        // Past what an int64 holds, either way: the field's own code too.
        (
            {
                let mut b = share_body("bob", 1, "CNY", &future);
                b["monthly_limit"]["amount"] =
                    serde_json::from_str("18446744073709551616").unwrap();
                b
            },
            400,
            "invalid_amount",
            Some("monthly_limit.amount"),
        ),
        (
            {
                let mut b = share_body("bob", 1, "CNY", &future);
                b["monthly_limit"]["amount"] =
                    serde_json::from_str("-99999999999999999999").unwrap();
                b
            },
            400,
            "invalid_amount",
            Some("monthly_limit.amount"),
        ),
        // Ten million yen is the most (JPY has no minor unit).
        (
            share_body("bob", 20_000_000, "JPY", &future),
            400,
            "invalid_amount",
            None,
        ),
        (
            share_body("bob", 100, "ABC", &future),
            400,
            "invalid_currency",
            None,
        ),
        (
            share_body("bob", 100, "cny", &future),
            400,
            "invalid_currency",
            Some("monthly_limit.currency"),
        ),
        (
            share_body("bad user!", 100, "CNY", &future),
            400,
            "invalid_user_id",
            Some("secondary_user_id"),
        ),
    ];
    for (i, (body, status, code, field)) in cases.into_iter().enumerate() {
        let key = format!("bad-{i}");
        let r = send(
            &app,
            "POST",
            &path,
            ("ann", "user"),
            Some(&key),
            Some(&body),
        )
        .await;
        let v = assert_error(r, status, code).await;
        if let Some(f) = field {
            assert_eq!(v["error"]["field"], f, "{body}");
        }
    }
    // Nothing was shared by any of them.
    assert!(shares_of(&app, "ann", &a1).await.is_empty());

    // A share request needs an Idempotency-Key.
    let body = share_body("bob", 100, "CNY", &future);
    let r = send(&app, "POST", &path, ("ann", "user"), None, Some(&body)).await;
    assert_error(r, 400, "idempotency_key_missing").await;

    // Unknown and malformed share ids.
    let unknown = "share_0000000000000000000000";
    for (method, p) in [
        (
            "DELETE",
            format!("/v1/users/ann/cards/{a1}/shares/{unknown}"),
        ),
        ("DELETE", format!("/v1/users/bob/shared-cards/{unknown}")),
    ] {
        let who = if p.contains("/ann/") { "ann" } else { "bob" };
        let r = send(&app, method, &p, (who, "user"), None, None).await;
        assert_error(r, 404, "not_found").await;
    }
    assert_error(accept(&app, "bob", unknown).await, 404, "not_found").await;
    let r = send(
        &app,
        "DELETE",
        &format!("/v1/users/ann/cards/{a1}/shares/not%20an%20id"),
        ("ann", "user"),
        None,
        None,
    )
    .await;
    let v = assert_error(r, 400, "invalid_request").await;
    assert_eq!(v["error"]["field"], "share_id");
}

#[tokio::test]
async fn the_card_list_is_filtered_by_currency() {
    let app = spawn();
    let icbc = icbc_card();
    let own_cny = bind_active(&app, "ann", &icbc).await;
    let own_unknown = bind_active(&app, "ann", VISA).await;
    let bobs = bind_active(&app, "bob", &icbc).await;
    let sid = share(&app, "bob", &bobs, "ann", "s1").await;
    ok(accept(&app, "ann", &sid).await, 200).await;

    let all = cards(&app, "ann", "").await;
    assert_eq!(
        ids(&all),
        [own_cny.as_str(), own_unknown.as_str(), sid.as_str()]
    );
    let cny = cards(&app, "ann", "?currency=CNY").await;
    assert_eq!(ids(&cny), [own_cny.as_str(), sid.as_str()]);
    assert!(cny.iter().all(|c| c["currency"] == "CNY"), "{cny:?}");
    assert!(cards(&app, "ann", "?currency=USD").await.is_empty());
    // With paging: the filter applies before the page is cut.
    let page = cards(&app, "ann", "?currency=CNY&limit=1").await;
    assert_eq!(ids(&page), [own_cny.as_str()]);

    for bad in ["cny", "ABC", "CN", "CNYY"] {
        let r = send(
            &app,
            "GET",
            &format!("/v1/users/ann/cards?currency={bad}"),
            ("ann", "user"),
            None,
            None,
        )
        .await;
        let v = assert_error(r, 400, "invalid_currency").await;
        assert_eq!(v["error"]["field"], "currency", "{bad}");
    }
}

#[test]
fn the_spec_declares_the_currency_pattern_and_the_share_errors() {
    let spec: Value = serde_json::from_str(&cardbind::http::api_spec_json()).unwrap();
    let list = &spec["paths"]["/v1/users/{user_id}/cards"]["get"]["parameters"];
    let currency = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "currency")
        .unwrap();
    assert_eq!(currency["schema"]["pattern"], "^[A-Z]{3}$");
    let share = &spec["paths"]["/v1/users/{user_id}/cards/{card_id}/shares"]["post"];
    let declared: Vec<&str> = share["responses"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        declared,
        ["200", "201", "400", "401", "403", "404", "409", "413", "422", "500", "503"]
    );
    let links = share["responses"]["201"]["links"].as_object().unwrap();
    for op in ["RevokeShare", "AcceptShare", "LeaveShare", "ListCardShares"] {
        assert!(links.contains_key(op), "{op}");
    }
    // What the secondary sees has no field for the holder.
    let shared = &spec["components"]["schemas"]["SharedCardDto"]["properties"];
    for field in ["user_id", "card_id", "primary", "holder_name", "bin"] {
        assert!(shared.get(field).is_none(), "{field}");
    }
}
