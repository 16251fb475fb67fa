//! Family cards through the real service over HTTP, on the embedded store
//! and on MongoDB: a holder shares a card, the other user accepts it, sees
//! it in their list (masked, marked shared, also from a second instance),
//! makes it their default, loses it while it is frozen and when it is
//! revoked; the currency filter.

// Test code: helpers outside #[test] fns fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cardbind::config::{Config, MockModeSetting};
use cardbind_tests::{
    card_number, consent_sha256, idem_key, the_default, user_id, Brand, Response, Storage, TestApp,
    TestCard,
};
use reqwest::Method;
use serde_json::{json, Value};

fn instant(cfg: &mut Config) {
    cfg.limits.binds_per_user_per_minute = 100;
    cfg.channels.mock.mode = MockModeSetting::Instant;
}

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> Response {
    let headers: Vec<(&str, &str)> = key.map(|k| ("idempotency-key", k)).into_iter().collect();
    let body = body.map(|b| (b.to_string().into_bytes(), "application/json"));
    app.send(method, path, Some(token), &headers, body).await
}

fn consent() -> Value {
    json!({"text_version": "family-v1", "text_sha256": consent_sha256()})
}

/// RFC 3339, `days` from now.
fn days_ahead(days: i64) -> String {
    let t = time::OffsetDateTime::now_utc() + time::Duration::days(days);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

async fn list(app: &TestApp, user: &str, query: &str) -> Vec<Value> {
    let r = app
        .get(
            &format!("/v1/users/{user}/cards{query}"),
            &app.user_token(user),
        )
        .await;
    r.expect_status(200)["cards"].as_array().unwrap().clone()
}

fn ids(cards: &[Value]) -> Vec<String> {
    cards
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn family_flow(storage: Storage) {
    let Some(app) = TestApp::spawn_on(storage, instant).await else {
        return;
    };
    let (ann, bob) = (user_id("ann"), user_id("bob"));
    let ann_card = TestCard::visa();
    let a1 = app.bind_ok(&ann, &ann_card).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b1 = app.bind_ok(&bob, &TestCard::visa()).await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Ann shares her card with bob.
    let share = json!({
        "secondary_user_id": bob,
        "monthly_limit": {"amount": 80000, "currency": "CNY"},
        "expires_at": days_ahead(90),
        "consent": consent(),
    });
    let ann_token = app.user_token(&ann);
    let r = call(
        &app,
        Method::POST,
        &format!("/v1/users/{ann}/cards/{a1}/shares"),
        &ann_token,
        Some(&idem_key()),
        Some(&share),
    )
    .await;
    let created = r.expect_status(201);
    let sid = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["status"], "invited");

    // Bob sees the invitation and accepts it.
    let bob_token = app.user_token(&bob);
    let r = app
        .get(&format!("/v1/users/{bob}/shared-cards"), &bob_token)
        .await;
    let inv = r.expect_status(200);
    assert_eq!(inv["shared_cards"][0]["share_id"], sid.as_str());
    assert_eq!(inv["shared_cards"][0]["status"], "invited");
    let r = call(
        &app,
        Method::POST,
        &format!("/v1/users/{bob}/shared-cards/{sid}/accept"),
        &bob_token,
        None,
        Some(&json!({ "consent": consent() })),
    )
    .await;
    assert_eq!(r.expect_status(200)["status"], "accepted");

    // In bob's list, masked and marked, with nothing of ann's; a second
    // instance on the same store sees the same.
    let cards = list(&app, &bob, "").await;
    assert_eq!(ids(&cards), [b1.clone(), sid.clone()]);
    let shared = &cards[1];
    assert_eq!(shared["user_id"], bob.as_str());
    assert_eq!(shared["last4"], ann_card.last4());
    assert_eq!(shared["shared"]["monthly_limit"]["amount"], 80000);
    let text = Value::Array(cards.clone()).to_string();
    for leak in [ann.as_str(), a1.as_str(), ann_card.number.as_str()] {
        assert!(!text.contains(leak), "{leak} in {text}");
    }
    let peer = app.spawn_peer().await;
    assert_eq!(ids(&list(&peer, &bob, "").await), [b1.clone(), sid.clone()]);

    // Bob makes it his default.
    let r = call(
        &app,
        Method::PUT,
        &format!("/v1/users/{bob}/cards/{sid}/default"),
        &bob_token,
        None,
        None,
    )
    .await;
    assert_eq!(r.expect_status(200)["is_default"], true);
    assert_eq!(the_default(&list(&app, &bob, "").await), Some(sid.clone()));

    // Frozen: not bob's to use, his own card is the default meanwhile.
    let admin = app.admin_token();
    app.admin_action(&admin, &ann, &a1, "freeze")
        .await
        .expect_status(200);
    let cards = list(&peer, &bob, "").await;
    assert_eq!(ids(&cards), [b1.as_str()]);
    assert_eq!(the_default(&cards), Some(b1.clone()));
    app.admin_action(&admin, &ann, &a1, "unfreeze")
        .await
        .expect_status(200);
    assert_eq!(the_default(&list(&app, &bob, "").await), Some(sid.clone()));

    // Ann revokes: gone for bob, on both instances.
    let r = call(
        &app,
        Method::DELETE,
        &format!("/v1/users/{ann}/cards/{a1}/shares/{sid}"),
        &ann_token,
        None,
        None,
    )
    .await;
    assert_eq!(r.expect_status(200)["status"], "revoked");
    for instance in [&app, &peer] {
        let cards = list(instance, &bob, "").await;
        assert_eq!(ids(&cards), [b1.as_str()]);
        assert_eq!(the_default(&cards), Some(b1.clone()));
    }
    let r = call(
        &app,
        Method::POST,
        &format!("/v1/users/{bob}/shared-cards/{sid}/accept"),
        &bob_token,
        None,
        Some(&json!({ "consent": consent() })),
    )
    .await;
    r.assert_error(409, "share_ended");

    // The currency filter: an ICBC debit card (CNY in the built-in table).
    let mut body = TestCard::new(Brand::UnionPay).body();
    body["card_number"] = json!(card_number("622200", 16));
    let r = app.bind_body(&bob, &body, &idem_key()).await;
    let cny = r.expect_status(201)["id"].as_str().unwrap().to_owned();
    assert_eq!(ids(&list(&app, &bob, "?currency=CNY").await), [cny]);
    assert!(list(&app, &bob, "?currency=USD").await.is_empty());
    let r = app
        .get(&format!("/v1/users/{bob}/cards?currency=rmb"), &bob_token)
        .await;
    assert_eq!(r.assert_error(400, "invalid_currency")["field"], "currency");

    app.assert_no_leaks();
}

#[tokio::test]
async fn family_flow_on_the_embedded_store() {
    family_flow(Storage::Embedded).await;
}

#[tokio::test]
async fn family_flow_on_mongodb() {
    family_flow(Storage::Mongo).await;
}
