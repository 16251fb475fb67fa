//! Family cards (主卡/副卡) over HTTP: a holder shares a card, the other
//! user accepts it and finds it among their cards (masked, marked shared),
//! may make it their default, and loses it when the holder revokes,
//! unbinds or is frozen; who may do what; bad input; the currency filter.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use cardbind_ports::clock::Clock;
use poem::http::StatusCode;
use serde_json::{json, Value};
use support::*;

const VISA: &str = "4111111111111111";
const VISA2: &str = "4012888888881881";
const VISA3: &str = "4242424242424242";
const DAY: i64 = 24 * 3600;

fn consent() -> Value {
    json!({"text_version": "family-v1", "text_sha256": SHA})
}

/// An RFC 3339 instant `seconds` from the app's clock.
fn in_seconds(app: &TestApp, seconds: i64) -> String {
    app.clock.now().plus_seconds(seconds).to_rfc3339()
}

fn share_body(to: &str, amount: i64, currency: &str, expires_at: &str) -> Value {
    json!({
        "secondary_user_id": to,
        "monthly_limit": {"amount": amount, "currency": currency},
        "expires_at": expires_at,
        "consent": consent(),
    })
}

/// A UnionPay number in an ICBC range of the built-in BIN table (CNY).
fn icbc_card() -> String {
    let body = "622200000000123";
    let check = cardbind_domain::card::luhn_check_digit(body).unwrap();
    format!("{body}{check}")
}

async fn bind_active(app: &TestApp, user: &str, card: &str) -> String {
    let key = format!("bind-{user}-{card}");
    let resp = app.bind(user, &key, &bind_body(card)).await;
    resp.assert_status(StatusCode::CREATED);
    let v = json_of(resp).await;
    assert_eq!(v["status"], "active", "{v}");
    v["id"].as_str().unwrap().to_owned()
}

async fn send(
    app: &TestApp,
    method: &str,
    path: &str,
    auth: (&str, &str),
    key: Option<&str>,
    body: Option<&Value>,
) -> poem::test::TestResponse {
    let c = &app.client;
    let mut rb = match method {
        "GET" => c.get(path),
        "POST" => c.post(path),
        "PUT" => c.put(path),
        "DELETE" => c.delete(path),
        m => panic!("method {m}"),
    }
    .header("Authorization", bearer(auth.0, auth.1));
    if let Some(k) = key {
        rb = rb.header("Idempotency-Key", k);
    }
    if let Some(b) = body {
        rb = rb.content_type("application/json").body(b.to_string());
    }
    rb.send().await
}

async fn ok(resp: poem::test::TestResponse, status: u16) -> Value {
    let got = resp.0.status().as_u16();
    let v = json_of(resp).await;
    assert_eq!(got, status, "{v}");
    v
}

/// `owner` (as a user) shares `card` with `to`: the share id.
async fn share(app: &TestApp, owner: &str, card: &str, to: &str, key: &str) -> String {
    let body = share_body(to, 50_000, "CNY", &in_seconds(app, 30 * DAY));
    let path = format!("/v1/users/{owner}/cards/{card}/shares");
    let v = ok(
        send(app, "POST", &path, (owner, "user"), Some(key), Some(&body)).await,
        201,
    )
    .await;
    v["id"].as_str().unwrap().to_owned()
}

async fn accept(app: &TestApp, user: &str, share: &str) -> poem::test::TestResponse {
    let path = format!("/v1/users/{user}/shared-cards/{share}/accept");
    let body = json!({ "consent": consent() });
    send(app, "POST", &path, (user, "user"), None, Some(&body)).await
}

async fn cards(app: &TestApp, user: &str, query: &str) -> Vec<Value> {
    let path = format!("/v1/users/{user}/cards{query}");
    let v = ok(
        send(app, "GET", &path, (user, "user"), None, None).await,
        200,
    )
    .await;
    v["cards"].as_array().unwrap().clone()
}

async fn shared_cards(app: &TestApp, user: &str) -> Vec<Value> {
    let path = format!("/v1/users/{user}/shared-cards");
    let v = ok(
        send(app, "GET", &path, (user, "user"), None, None).await,
        200,
    )
    .await;
    v["shared_cards"].as_array().unwrap().clone()
}

async fn shares_of(app: &TestApp, owner: &str, card: &str) -> Vec<Value> {
    let path = format!("/v1/users/{owner}/cards/{card}/shares");
    let v = ok(
        send(app, "GET", &path, (owner, "user"), None, None).await,
        200,
    )
    .await;
    v["shares"].as_array().unwrap().clone()
}

fn ids(cards: &[Value]) -> Vec<&str> {
    cards.iter().map(|c| c["id"].as_str().unwrap()).collect()
}

fn default_of(cards: &[Value]) -> Vec<&str> {
    cards
        .iter()
        .filter(|c| c["is_default"] == true)
        .map(|c| c["id"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn share_accept_list_masked_default_then_revoke_takes_it_away() {
    let app = spawn();
    let a1 = bind_active(&app, "ann", VISA).await;
    let b1 = bind_active(&app, "bob", VISA2).await;

    let path = format!("/v1/users/ann/cards/{a1}/shares");
    let body = share_body("bob", 50_000, "CNY", &in_seconds(&app, 30 * DAY));
    let first = send(
        &app,
        "POST",
        &path,
        ("ann", "user"),
        Some("s1"),
        Some(&body),
    )
    .await;
    let created = ok(first, 201).await;
    let sid = created["id"].as_str().unwrap().to_owned();
    assert!(sid.starts_with("share_"), "{created}");
    assert_eq!(created["status"], "invited");
    assert_eq!(created["card_id"], a1.as_str());
    assert_eq!(created["secondary_user_id"], "bob");
    assert_eq!(
        created["monthly_limit"],
        json!({"amount": 50000, "currency": "CNY"})
    );
    // A retry with the key replays; the same share with another key is it.
    let replay = send(
        &app,
        "POST",
        &path,
        ("ann", "user"),
        Some("s1"),
        Some(&body),
    )
    .await;
    assert_eq!(
        replay.0.headers().get("Idempotent-Replayed").unwrap(),
        "true"
    );
    assert_eq!(ok(replay, 201).await["id"], sid.as_str());
    let again = send(
        &app,
        "POST",
        &path,
        ("ann", "user"),
        Some("s2"),
        Some(&body),
    )
    .await;
    assert_eq!(ok(again, 200).await["id"], sid.as_str());
    // Other terms while it is live: a conflict.
    let other = share_body("bob", 10_000, "CNY", &in_seconds(&app, 30 * DAY));
    let r = send(
        &app,
        "POST",
        &path,
        ("ann", "user"),
        Some("s3"),
        Some(&other),
    )
    .await;
    assert_error(r, 409, "card_already_shared").await;

    // Invited: listed as an invitation, not among bob's cards yet.
    let inv = shared_cards(&app, "bob").await;
    assert_eq!(inv.len(), 1);
    assert_eq!(
        (inv[0]["share_id"].as_str(), inv[0]["status"].as_str()),
        (Some(sid.as_str()), Some("invited"))
    );
    assert_eq!(ids(&cards(&app, "bob", "").await), [b1.as_str()]);
    let r = send(
        &app,
        "PUT",
        &format!("/v1/users/bob/cards/{sid}/default"),
        ("bob", "user"),
        None,
        None,
    )
    .await;
    assert_error(r, 409, "share_ended").await;

    let accepted = ok(accept(&app, "bob", &sid).await, 200).await;
    assert_eq!(accepted["status"], "accepted");
    assert_eq!(accepted["last4"], "1111");
    // Accepting twice changes nothing.
    assert_eq!(
        ok(accept(&app, "bob", &sid).await, 200).await["accepted_at"],
        accepted["accepted_at"]
    );

    // Bob's list: his card and the shared one, masked, marked, nothing of ann's.
    let list = cards(&app, "bob", "").await;
    assert_eq!(ids(&list), [b1.as_str(), sid.as_str()]);
    let shared = &list[1];
    assert_eq!(shared["user_id"], "bob");
    assert_eq!(shared["status"], "active");
    assert_eq!(shared["last4"], "1111");
    assert_eq!(shared["shared"]["share_id"], sid.as_str());
    assert_eq!(shared["shared"]["monthly_limit"]["amount"], 50000);
    assert!(list[0].get("shared").is_none(), "own card is not shared");
    let text = Value::Array(list.clone()).to_string();
    for leak in ["\"ann\"", a1.as_str(), VISA, "张三", "13800138000"] {
        assert!(!text.contains(leak), "{leak} in {text}");
    }
    let one = send(
        &app,
        "GET",
        &format!("/v1/users/bob/cards/{sid}"),
        ("bob", "user"),
        None,
        None,
    )
    .await;
    assert_eq!(ok(one, 200).await["shared"]["share_id"], sid.as_str());

    // Bob makes it his default.
    let d = send(
        &app,
        "PUT",
        &format!("/v1/users/bob/cards/{sid}/default"),
        ("bob", "user"),
        None,
        None,
    )
    .await;
    assert_eq!(ok(d, 200).await["is_default"], true);
    assert_eq!(default_of(&cards(&app, "bob", "").await), [sid.as_str()]);

    // Ann sees it accepted.
    let given = shares_of(&app, "ann", &a1).await;
    assert_eq!(given.len(), 1);
    assert_eq!(given[0]["status"], "active");
    assert!(given[0]["accepted_at"].is_string());

    // Ann revokes: gone from bob's list, and his own card is the default.
    let r = send(
        &app,
        "DELETE",
        &format!("/v1/users/ann/cards/{a1}/shares/{sid}"),
        ("ann", "user"),
        None,
        None,
    )
    .await;
    let revoked = ok(r, 200).await;
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["revoked_by"], "ann");
    let list = cards(&app, "bob", "").await;
    assert_eq!(ids(&list), [b1.as_str()]);
    assert_eq!(default_of(&list), [b1.as_str()]);
    assert!(shared_cards(&app, "bob").await.is_empty());
    let gone = send(
        &app,
        "GET",
        &format!("/v1/users/bob/cards/{sid}"),
        ("bob", "user"),
        None,
        None,
    )
    .await;
    assert_error(gone, 404, "not_found").await;
    assert_error(accept(&app, "bob", &sid).await, 409, "share_ended").await;
    // Revoking twice changes nothing.
    let r = send(
        &app,
        "DELETE",
        &format!("/v1/users/ann/cards/{a1}/shares/{sid}"),
        ("ann", "user"),
        None,
        None,
    )
    .await;
    assert_eq!(ok(r, 200).await["revoked_at"], revoked["revoked_at"]);
}

#[tokio::test]
async fn both_sides_consent_and_are_audited() {
    let app = spawn();
    let a1 = bind_active(&app, "ann", VISA).await;
    let sid = share(&app, "ann", &a1, "bob", "s1").await;
    ok(accept(&app, "bob", &sid).await, 200).await;

    let consents = |user: &'static str| {
        let app = &app;
        async move {
            let path = format!("/v1/consents?user_id={user}");
            let v = ok(
                send(app, "GET", &path, ("audit", "auditor"), None, None).await,
                200,
            )
            .await;
            v["consents"].as_array().unwrap().clone()
        }
    };
    let ann: Vec<Value> = consents("ann").await;
    let given: Vec<&Value> = ann
        .iter()
        .filter(|c| c["share_id"] == sid.as_str())
        .collect();
    assert_eq!(given.len(), 1, "{ann:?}");
    assert_eq!(given[0]["text_version"], "family-v1");
    assert_eq!(given[0]["card_id"], a1.as_str());
    let bob = consents("bob").await;
    assert_eq!(bob.len(), 1, "{bob:?}");
    assert_eq!(bob[0]["share_id"], sid.as_str());
    assert_eq!(bob[0]["card_id"], sid.as_str());

    let path = "/v1/audit/events?limit=500";
    let v = ok(
        send(&app, "GET", path, ("audit", "auditor"), None, None).await,
        200,
    )
    .await;
    let actions: Vec<(String, String)> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or("").to_owned(),
                e["user_id"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for want in [
        ("share.create", "ann"),
        ("share.invite", "bob"),
        ("share.accept", "bob"),
        ("share.accept", "ann"),
    ] {
        assert!(
            actions
                .iter()
                .any(|(a, u)| (a.as_str(), u.as_str()) == want),
            "{want:?} in {actions:?}"
        );
    }
}

#[tokio::test]
async fn unbind_by_the_holder_ends_the_share() {
    let app = spawn();
    let a1 = bind_active(&app, "ann", VISA).await;
    let sid = share(&app, "ann", &a1, "bob", "s1").await;
    ok(accept(&app, "bob", &sid).await, 200).await;
    assert_eq!(ids(&cards(&app, "bob", "").await), [sid.as_str()]);
    let d = send(
        &app,
        "PUT",
        &format!("/v1/users/bob/cards/{sid}/default"),
        ("bob", "user"),
        None,
        None,
    )
    .await;
    ok(d, 200).await;

    let r = send(
        &app,
        "DELETE",
        &format!("/v1/users/ann/cards/{a1}"),
        ("ann", "user"),
        None,
        None,
    )
    .await;
    assert_eq!(ok(r, 200).await["status"], "inactive");
    assert!(cards(&app, "bob", "").await.is_empty());
    assert!(shared_cards(&app, "bob").await.is_empty());
    assert_eq!(shares_of(&app, "ann", &a1).await[0]["status"], "revoked");
    let d = send(
        &app,
        "PUT",
        &format!("/v1/users/bob/cards/{sid}/default"),
        ("bob", "user"),
        None,
        None,
    )
    .await;
    assert_error(d, 409, "share_ended").await;
}

#[tokio::test]
async fn a_frozen_card_is_not_usable_by_the_secondary_until_unfrozen() {
    let app = spawn();
    let a1 = bind_active(&app, "ann", VISA).await;
    let b1 = bind_active(&app, "bob", VISA3).await;
    let sid = share(&app, "ann", &a1, "bob", "s1").await;
    ok(accept(&app, "bob", &sid).await, 200).await;
    let set_default = |id: String| {
        let app = &app;
        async move {
            send(
                app,
                "PUT",
                &format!("/v1/users/bob/cards/{id}/default"),
                ("bob", "user"),
                None,
                None,
            )
            .await
        }
    };
    ok(set_default(sid.clone()).await, 200).await;

    let freeze = format!("/v1/admin/users/ann/cards/{a1}/freeze");
    let r = send(&app, "POST", &freeze, ("op", "admin"), None, None).await;
    assert_eq!(ok(r, 200).await["status"], "frozen");
    let list = cards(&app, "bob", "").await;
    assert_eq!(ids(&list), [b1.as_str()]);
    assert_eq!(default_of(&list), [b1.as_str()], "the default falls back");
    assert_error(
        set_default(sid.clone()).await,
        409,
        "invalid_state_transition",
    )
    .await;
    assert_eq!(shares_of(&app, "ann", &a1).await[0]["status"], "suspended");
    // A new share of a frozen card is refused.
    let body = share_body("cat", 100, "CNY", &in_seconds(&app, DAY));
    let r = send(
        &app,
        "POST",
        &format!("/v1/users/ann/cards/{a1}/shares"),
        ("ann", "user"),
        Some("s-frozen"),
        Some(&body),
    )
    .await;
    assert_error(r, 409, "invalid_state_transition").await;

    let unfreeze = format!("/v1/admin/users/ann/cards/{a1}/unfreeze");
    ok(
        send(&app, "POST", &unfreeze, ("op", "admin"), None, None).await,
        200,
    )
    .await;
    let list = cards(&app, "bob", "").await;
    assert_eq!(ids(&list), [b1.as_str(), sid.as_str()]);
    assert_eq!(
        default_of(&list),
        [sid.as_str()],
        "bob's choice holds again"
    );
}

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
async fn a_backend_shares_for_its_users_and_the_secondary_leaves() {
    let app = spawn();
    let a1 = bind_active(&app, "ann", VISA).await;
    let body = share_body("bob", 100, "CNY", &in_seconds(&app, DAY));
    let r = send(
        &app,
        "POST",
        &format!("/v1/users/ann/cards/{a1}/shares"),
        ("merchant", "service"),
        Some("m1"),
        Some(&body),
    )
    .await;
    let sid = ok(r, 201).await["id"].as_str().unwrap().to_owned();
    let r = send(
        &app,
        "POST",
        &format!("/v1/users/bob/shared-cards/{sid}/accept"),
        ("merchant", "service"),
        None,
        Some(&json!({ "consent": consent() })),
    )
    .await;
    ok(r, 200).await;
    assert_eq!(ids(&cards(&app, "bob", "").await), [sid.as_str()]);

    let leave = format!("/v1/users/bob/shared-cards/{sid}");
    let r = send(&app, "DELETE", &leave, ("bob", "user"), None, None).await;
    assert_eq!(ok(r, 200).await["status"], "ended");
    assert!(cards(&app, "bob", "").await.is_empty());
    let given = shares_of(&app, "ann", &a1).await;
    assert_eq!(given[0]["status"], "revoked");
    let r = send(&app, "DELETE", &leave, ("bob", "user"), None, None).await;
    assert_eq!(ok(r, 200).await["status"], "ended", "leaving twice");
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
