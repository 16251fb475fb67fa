//! What the family tests share: requests as one user or another, a share
//! and its acceptance, a user's lists.

use cardbind_ports::clock::Clock;
use poem::http::StatusCode;
use serde_json::{json, Value};

use crate::support::*;

pub const VISA: &str = "4111111111111111";
pub const VISA2: &str = "4012888888881881";
pub const VISA3: &str = "4242424242424242";
pub const DAY: i64 = 24 * 3600;

pub fn consent() -> Value {
    json!({"text_version": "family-v1", "text_sha256": SHA})
}

/// An RFC 3339 instant `seconds` from the app's clock.
pub fn in_seconds(app: &TestApp, seconds: i64) -> String {
    app.clock.now().plus_seconds(seconds).to_rfc3339()
}

pub fn share_body(to: &str, amount: i64, currency: &str, expires_at: &str) -> Value {
    json!({
        "secondary_user_id": to,
        "monthly_limit": {"amount": amount, "currency": currency},
        "expires_at": expires_at,
        "consent": consent(),
    })
}

/// A UnionPay number in an ICBC range of the built-in BIN table (CNY).
pub fn icbc_card() -> String {
    let body = "622200000000123";
    let check = cardbind_domain::card::luhn_check_digit(body).unwrap();
    format!("{body}{check}")
}

pub async fn bind_active(app: &TestApp, user: &str, card: &str) -> String {
    let key = format!("bind-{user}-{card}");
    let resp = app.bind(user, &key, &bind_body(card)).await;
    resp.assert_status(StatusCode::CREATED);
    let v = json_of(resp).await;
    assert_eq!(v["status"], "active", "{v}");
    v["id"].as_str().unwrap().to_owned()
}

pub async fn send(
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

pub async fn ok(resp: poem::test::TestResponse, status: u16) -> Value {
    let got = resp.0.status().as_u16();
    let v = json_of(resp).await;
    assert_eq!(got, status, "{v}");
    v
}

/// `owner` (as a user) shares `card` with `to`: the share id.
pub async fn share(app: &TestApp, owner: &str, card: &str, to: &str, key: &str) -> String {
    let body = share_body(to, 50_000, "CNY", &in_seconds(app, 30 * DAY));
    let path = format!("/v1/users/{owner}/cards/{card}/shares");
    let v = ok(
        send(app, "POST", &path, (owner, "user"), Some(key), Some(&body)).await,
        201,
    )
    .await;
    v["id"].as_str().unwrap().to_owned()
}

pub async fn accept(app: &TestApp, user: &str, share: &str) -> poem::test::TestResponse {
    let path = format!("/v1/users/{user}/shared-cards/{share}/accept");
    let body = json!({ "consent": consent() });
    send(app, "POST", &path, (user, "user"), None, Some(&body)).await
}

pub async fn cards(app: &TestApp, user: &str, query: &str) -> Vec<Value> {
    let path = format!("/v1/users/{user}/cards{query}");
    let v = ok(
        send(app, "GET", &path, (user, "user"), None, None).await,
        200,
    )
    .await;
    v["cards"].as_array().unwrap().clone()
}

pub async fn shared_cards(app: &TestApp, user: &str) -> Vec<Value> {
    let path = format!("/v1/users/{user}/shared-cards");
    let v = ok(
        send(app, "GET", &path, (user, "user"), None, None).await,
        200,
    )
    .await;
    v["shared_cards"].as_array().unwrap().clone()
}

pub async fn shares_of(app: &TestApp, owner: &str, card: &str) -> Vec<Value> {
    let path = format!("/v1/users/{owner}/cards/{card}/shares");
    let v = ok(
        send(app, "GET", &path, (owner, "user"), None, None).await,
        200,
    )
    .await;
    v["shares"].as_array().unwrap().clone()
}

pub fn ids(cards: &[Value]) -> Vec<&str> {
    cards.iter().map(|c| c["id"].as_str().unwrap()).collect()
}

pub fn default_of(cards: &[Value]) -> Vec<&str> {
    cards
        .iter()
        .filter(|c| c["is_default"] == true)
        .map(|c| c["id"].as_str().unwrap())
        .collect()
}
