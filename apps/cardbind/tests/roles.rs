//! The access table of `docs/security.md`, walked cell by cell.
//!
//! The expectations are read from the document itself (the table under
//! "Every endpoint against every role"), so the table and the service cannot
//! drift apart: every operation × every caller (a `user` on their own cards,
//! a `user` on another user's, `service`, `admin`, `auditor`, no token) is
//! sent to a fresh in-process service holding cards of two users. An allowed
//! cell must succeed; a refused one must be `403 forbidden` (`401
//! unauthenticated` without a token), carry nothing but the error envelope,
//! and change nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support;

use std::collections::BTreeSet;

use cardbind_channels::MockMode;
use cardbind_domain::UserId;
use poem::http::Method;
use serde_json::{json, Value};
use support::*;

const ALICE_ACTIVE: &str = "4012888888881881";
const ALICE_OTP: &str = "5555555555554444"; // mock: OTP
const ALICE_REVIEW: &str = "3530111333300000"; // mock: times out -> pending_review
const BOB_ACTIVE: &str = "4111111111111111";
const NEW_CARD: &str = "4000056655665556";

/// Card data that must never appear in a refusal.
const SECRETS: [&str; 8] = [
    ALICE_ACTIVE,
    ALICE_OTP,
    ALICE_REVIEW,
    BOB_ACTIVE,
    NEW_CARD,
    "13800138000",
    "11010519491231002X",
    "张三",
];

/// Who calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Caller {
    /// `user` token for alice, on alice's path.
    UserOwn,
    /// `user` token for alice, on bob's path.
    UserOther,
    Service,
    Admin,
    Auditor,
    NoToken,
}

const CALLERS: [Caller; 6] = [
    Caller::UserOwn,
    Caller::UserOther,
    Caller::Service,
    Caller::Admin,
    Caller::Auditor,
    Caller::NoToken,
];

impl Caller {
    fn authorization(self) -> Option<String> {
        match self {
            Caller::UserOwn | Caller::UserOther => Some(bearer("alice", "user")),
            Caller::Service => Some(bearer("merchant", "service")),
            Caller::Admin => Some(bearer("ops", "admin")),
            Caller::Auditor => Some(bearer("aud", "auditor")),
            Caller::NoToken => None,
        }
    }
}

/// One row of the document's table.
#[derive(Debug)]
struct Row {
    operations: Vec<String>,
    user: String,
    service: String,
    admin: String,
    auditor: String,
}

fn security_md() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/security.md");
    std::fs::read_to_string(path).unwrap()
}

/// The rows of the table under "## Every endpoint against every role".
fn table() -> Vec<Row> {
    let doc = security_md();
    let section = doc
        .split("## Every endpoint against every role")
        .nth(1)
        .expect("the roles section")
        .split("\n## ")
        .next()
        .unwrap();
    let mut rows = Vec::new();
    for line in section.lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<String> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_owned())
            .collect();
        if cells[0] == "operation" || cells[0].starts_with("---") || cells.len() < 6 {
            continue;
        }
        rows.push(Row {
            operations: cells[0].split(" / ").map(|s| s.trim().to_owned()).collect(),
            user: cells[2].clone(),
            service: cells[3].clone(),
            admin: cells[4].clone(),
            auditor: cells[5].clone(),
        });
    }
    rows
}

/// Whether the document allows `caller` in this row.
fn allowed(row: &Row, caller: Caller) -> bool {
    let yes = |cell: &str| match cell {
        "yes" => true,
        "no" => false,
        other => panic!("unexpected cell {other:?} in {row:?}"),
    };
    match caller {
        Caller::UserOwn => row.user.starts_with("own") || yes(&row.user),
        Caller::UserOther => !row.user.starts_with("own") && yes(&row.user),
        Caller::Service => yes(&row.service),
        Caller::Admin => yes(&row.admin),
        Caller::Auditor => yes(&row.auditor),
        Caller::NoToken => false,
    }
}

/// Two users' cards: alice has an active card, one waiting for an OTP and
/// one in the review queue; bob has an active card.
struct World {
    app: TestApp,
    alice_active: String,
    alice_otp: String,
    alice_review: String,
    bob_active: String,
    /// Alice's active card shared with bob (invited).
    alice_to_bob: String,
    /// Bob's active card shared with alice (invited).
    bob_to_alice: String,
}

fn share_body(to: &str, app: &TestApp) -> Value {
    use cardbind_ports::clock::Clock;
    json!({
        "secondary_user_id": to,
        "monthly_limit": {"amount": 10000, "currency": "CNY"},
        "expires_at": app.clock.now().plus_seconds(30 * 24 * 3600).to_rfc3339(),
        "consent": {"text_version": "v1", "text_sha256": SHA},
    })
}

async fn share_ok(app: &TestApp, user: &str, card: &str, to: &str) -> String {
    let resp = app
        .client
        .post(format!("/v1/users/{user}/cards/{card}/shares"))
        .header("Authorization", bearer("merchant", "service"))
        .header("Idempotency-Key", format!("setup-share-{user}"))
        .content_type("application/json")
        .body(share_body(to, app).to_string())
        .send()
        .await;
    assert!(resp.0.status().is_success(), "{}", resp.0.status());
    json_of(resp).await["id"].as_str().unwrap().to_owned()
}

async fn bind_ok(app: &TestApp, user: &str, card: &str) -> String {
    let resp = app
        .bind(user, &format!("setup-{user}-{card}"), &bind_body(card))
        .await;
    assert!(resp.0.status().is_success(), "{}", resp.0.status());
    json_of(resp).await["id"].as_str().unwrap().to_owned()
}

async fn world() -> World {
    let mut opts = Options::default();
    opts.mock
        .card_modes
        .insert("0000".into(), MockMode::Timeout);
    opts.mock.timeout_after = std::time::Duration::from_millis(5);
    let app = spawn_with(opts);
    let alice_active = bind_ok(&app, "alice", ALICE_ACTIVE).await;
    let alice_otp = bind_ok(&app, "alice", ALICE_OTP).await;
    let alice_review = bind_ok(&app, "alice", ALICE_REVIEW).await;
    let bob_active = bind_ok(&app, "bob", BOB_ACTIVE).await;
    // past the per-user bind limit of the setup
    app.clock.advance_seconds(61);
    let alice_to_bob = share_ok(&app, "alice", &alice_active, "bob").await;
    let bob_to_alice = share_ok(&app, "bob", &bob_active, "alice").await;
    World {
        app,
        alice_active,
        alice_otp,
        alice_review,
        bob_active,
        alice_to_bob,
        bob_to_alice,
    }
}

/// The request of `op` for `caller`: method, path and body. Paths name
/// alice and her cards, or bob and his for `UserOther`.
fn request(op: &str, caller: Caller, w: &World) -> (Method, String, Option<Value>) {
    // `given`: a share of `active` its holder may revoke; `received`: a
    // share made to `user` they may accept or leave.
    let (user, active, otp, given, received) = if caller == Caller::UserOther {
        let b = w.bob_active.as_str();
        ("bob", b, b, &w.bob_to_alice, &w.alice_to_bob)
    } else {
        let a = w.alice_active.as_str();
        (
            "alice",
            a,
            w.alice_otp.as_str(),
            &w.alice_to_bob,
            &w.bob_to_alice,
        )
    };
    let review = &w.alice_review;
    let cards = format!("/v1/users/{user}/cards");
    let admin = format!("/v1/admin/users/{user}/cards");
    match op {
        "bindCard" => (Method::POST, cards, Some(bind_body(NEW_CARD))),
        "verifyCard" => (
            Method::POST,
            format!("{cards}/{otp}/verify"),
            Some(json!({"otp": "123456"})),
        ),
        "listCards" => (Method::GET, cards, None),
        "getCard" => (Method::GET, format!("{cards}/{active}"), None),
        "setDefaultCard" => (Method::PUT, format!("{cards}/{active}/default"), None),
        "unbindCard" => (Method::DELETE, format!("{cards}/{active}"), None),
        "freezeCard" => (Method::POST, format!("{admin}/{active}/freeze"), None),
        "unfreezeCard" => (Method::POST, format!("{admin}/{active}/unfreeze"), None),
        "listReviews" => (Method::GET, "/v1/admin/reviews".into(), None),
        "approveReview" => (
            Method::POST,
            format!("/v1/admin/reviews/{review}/approve"),
            Some(json!({})),
        ),
        "rejectReview" => (
            Method::POST,
            format!("/v1/admin/reviews/{review}/reject"),
            None,
        ),
        "retryReview" => (
            Method::POST,
            format!("/v1/admin/reviews/{review}/retry"),
            None,
        ),
        "eraseUser" => (Method::POST, format!("/v1/admin/users/{user}/erase"), None),
        "listAuditEvents" => (Method::GET, "/v1/audit/events".into(), None),
        "listConsents" => (Method::GET, format!("/v1/consents?user_id={user}"), None),
        "lookupBin" => (Method::GET, "/v1/bins/411111".into(), None),
        "shareCard" => (
            Method::POST,
            format!("{cards}/{active}/shares"),
            Some(share_body("carol", &w.app)),
        ),
        "listCardShares" => (Method::GET, format!("{cards}/{active}/shares"), None),
        "revokeShare" => (
            Method::DELETE,
            format!("{cards}/{active}/shares/{given}"),
            None,
        ),
        "listSharedCards" => (Method::GET, format!("/v1/users/{user}/shared-cards"), None),
        "acceptShare" => (
            Method::POST,
            format!("/v1/users/{user}/shared-cards/{received}/accept"),
            Some(json!({"consent": {"text_version": "v1", "text_sha256": SHA}})),
        ),
        "leaveShare" => (
            Method::DELETE,
            format!("/v1/users/{user}/shared-cards/{received}"),
            None,
        ),
        other => panic!("the roles test does not know operation {other}: add it"),
    }
}

/// What must be true before the request (e.g. a frozen card to unfreeze).
async fn prepare(op: &str, w: &World) {
    if op == "unfreezeCard" {
        for (user, card) in [("alice", &w.alice_active), ("bob", &w.bob_active)] {
            w.app
                .client
                .post(format!("/v1/admin/users/{user}/cards/{card}/freeze"))
                .header("Authorization", bearer("ops", "admin"))
                .send()
                .await
                .assert_status_is_ok();
        }
    }
}

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<&Value>,
    authorization: Option<String>,
    key: &str,
) -> poem::test::TestResponse {
    let mut req = app
        .client
        .request(method.clone(), path.to_owned())
        .header("Idempotency-Key", key);
    if let Some(a) = authorization {
        req = req.header("Authorization", a);
    }
    if let Some(b) = body {
        req = req.content_type("application/json").body(b.to_string());
    }
    req.send().await
}

/// Both users' wallets as stored (every card, its status and the default).
async fn snapshot(app: &TestApp) -> Vec<String> {
    let wallets = &app.state.usecases.ports().wallets;
    let mut out = Vec::new();
    for u in ["alice", "bob"] {
        let user = UserId::parse(u).unwrap();
        let w = wallets.load(&user).await.unwrap().map(|s| s.wallet);
        out.push(format!("{u}: {w:?}"));
    }
    out
}

/// A refusal: this status and code, the envelope only, no card data.
async fn assert_bare_refusal(resp: poem::test::TestResponse, status: u16, code: &str, what: &str) {
    let got = resp.0.status().as_u16();
    let text = String::from_utf8(bytes(resp).await).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    assert_eq!(
        (got, v["error"]["code"].as_str()),
        (status, Some(code)),
        "{what}: {text}"
    );
    let top: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(top, ["error"], "{what}: only the envelope: {text}");
    let keys: BTreeSet<&str> = v["error"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert!(
        keys.is_subset(&BTreeSet::from(["code", "message", "field", "request_id"])),
        "{what}: {text}"
    );
    for s in SECRETS {
        assert!(!text.contains(s), "{what}: card data in a refusal: {text}");
    }
    for word in ["last4", "\"bin\"", "brand", "status", "phone"] {
        assert!(!text.contains(word), "{what}: {word} in a refusal: {text}");
    }
}

/// A user token on another user's path is `403 forbidden` whatever the
/// request holds: a missing `Idempotency-Key`, a body that is not JSON, a
/// query parameter out of its range or a card id that does not parse are
/// not read first (each was a `400` before). Each refusal is audited as
/// `access.denied` naming the path's user. On the caller's own path the
/// same requests are still the `400`s they are, and an own id written
/// percent-encoded is the caller's own.
#[tokio::test]
async fn a_user_on_another_users_path_is_refused_before_the_request_is_read() {
    let w = world().await;
    let alice = Some(bearer("alice", "user"));
    let raw = |method: Method, path: String, body: Option<&'static str>, key: bool| {
        let mut req = w.app.client.request(method, path);
        if key {
            req = req.header("Idempotency-Key", "k-1");
        }
        if let Some(b) = body {
            req = req.content_type("application/json").body(b);
        }
        req.header("Authorization", alice.clone().unwrap()).send()
    };
    let denied_before = audit_events(&w.app, "action=access.denied").await.len();
    let bob_card = w.bob_active.clone();
    let cases = |user: &str| {
        vec![
            (
                Method::POST,
                format!("/v1/users/{user}/cards"),
                Some("{}"),
                false,
            ),
            (
                Method::POST,
                format!("/v1/users/{user}/cards"),
                Some("{"),
                true,
            ),
            (
                Method::GET,
                format!("/v1/users/{user}/cards?limit=0"),
                None,
                false,
            ),
            (
                Method::GET,
                format!("/v1/users/{user}/cards/!!"),
                None,
                false,
            ),
            (
                Method::POST,
                format!("/v1/users/{user}/cards/{bob_card}/verify"),
                Some("[]"),
                false,
            ),
            (
                Method::DELETE,
                format!("/v1/users/{user}/shared-cards/{}", "s".repeat(65)),
                None,
                false,
            ),
        ]
    };
    for (method, path, body, key) in cases("bob") {
        let resp = raw(method.clone(), path.clone(), body, key).await;
        assert_bare_refusal(resp, 403, "forbidden", &format!("{method} {path}")).await;
    }
    let denied = audit_events(&w.app, "action=access.denied").await;
    assert_eq!(denied.len(), denied_before + 6, "{denied:#?}");
    assert!(
        denied
            .iter()
            .skip(denied_before)
            .all(|e| e["user_id"] == "bob" && e["actor"] == "alice" && e["role"] == "user"),
        "{denied:#?}"
    );
    for (method, path, body, key) in cases("alice") {
        let resp = raw(method.clone(), path.clone(), body, key).await;
        let status = resp.0.status().as_u16();
        assert!(
            status == 400 || status == 404,
            "{method} {path}: {status}, the request's own refusal"
        );
    }
    raw(Method::GET, "/v1/users/al%69ce/cards".into(), None, false)
        .await
        .assert_status_is_ok();
}

#[test]
fn the_table_covers_every_operation_of_the_api() {
    let rows = table();
    let in_doc: BTreeSet<String> = rows.iter().flat_map(|r| r.operations.clone()).collect();
    let doc = security_md();
    for id in cardbind::http::ops::OPERATION_IDS {
        let open = ["liveness", "readiness", "metrics"].contains(&id);
        if open {
            continue;
        }
        assert!(
            in_doc.contains(id) || (id == "channelNotify" && doc.contains("| channelNotify |")),
            "operation {id} is missing from the table in docs/security.md"
        );
    }
    // and the document names nothing the API does not have
    for op in &in_doc {
        assert!(
            cardbind::http::ops::OPERATION_IDS.contains(&op.as_str()),
            "docs/security.md lists {op}, which the API does not have"
        );
    }
    assert!(in_doc.len() >= 15, "{in_doc:?}");
}

#[tokio::test]
async fn every_operation_against_every_caller_is_as_the_table_says() {
    let mut walked = 0;
    for row in table() {
        for op in &row.operations {
            for caller in CALLERS {
                let w = world().await;
                prepare(op, &w).await;
                let (method, path, body) = request(op, caller, &w);
                let what = format!("{op} as {caller:?} ({method} {path})");
                let before = snapshot(&w.app).await;
                let resp = send(
                    &w.app,
                    method,
                    &path,
                    body.as_ref(),
                    caller.authorization(),
                    &format!("roles-{op}-{caller:?}"),
                )
                .await;
                if caller == Caller::NoToken {
                    assert_bare_refusal(resp, 401, "unauthenticated", &what).await;
                    assert_eq!(snapshot(&w.app).await, before, "{what} changed something");
                } else if allowed(&row, caller) {
                    let status = resp.0.status();
                    let text = String::from_utf8(bytes(resp).await).unwrap();
                    assert!(status.is_success(), "{what}: {status} {text}");
                    for s in SECRETS {
                        assert!(!text.contains(s), "{what}: card data in a response");
                    }
                } else {
                    assert_bare_refusal(resp, 403, "forbidden", &what).await;
                    assert_eq!(snapshot(&w.app).await, before, "{what} changed something");
                }
                walked += 1;
            }
        }
    }
    // 22 bearer operations (freeze/unfreeze and approve/reject/retry share rows)
    assert_eq!(walked, 22 * CALLERS.len(), "cells walked");
}

#[tokio::test]
async fn another_users_card_under_ones_own_path_is_not_found_without_data() {
    let w = world().await;
    let bob_card = w.bob_active.clone();
    let cases: Vec<(Method, String, Option<Value>)> = vec![
        (
            Method::GET,
            format!("/v1/users/alice/cards/{bob_card}"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/users/alice/cards/{bob_card}/verify"),
            Some(json!({"otp": "123456"})),
        ),
        (
            Method::PUT,
            format!("/v1/users/alice/cards/{bob_card}/default"),
            None,
        ),
        (
            Method::DELETE,
            format!("/v1/users/alice/cards/{bob_card}"),
            None,
        ),
    ];
    for caller in [Caller::UserOwn, Caller::Service] {
        for (method, path, body) in &cases {
            let before = snapshot(&w.app).await;
            let resp = send(
                &w.app,
                method.clone(),
                path,
                body.as_ref(),
                caller.authorization(),
                "k",
            )
            .await;
            let what = format!("{method} {path} as {caller:?}");
            assert_bare_refusal(resp, 404, "not_found", &what).await;
            assert_eq!(snapshot(&w.app).await, before, "{what} changed something");
        }
    }
    // operators too: freezing bob's card under alice's path
    for action in ["freeze", "unfreeze"] {
        let resp = send(
            &w.app,
            Method::POST,
            &format!("/v1/admin/users/alice/cards/{bob_card}/{action}"),
            None,
            Caller::Admin.authorization(),
            "k",
        )
        .await;
        assert_bare_refusal(resp, 404, "not_found", action).await;
    }
    // and the card is still bob's, active
    let resp = w
        .app
        .client
        .get(format!("/v1/users/bob/cards/{bob_card}"))
        .header("Authorization", bearer("bob", "user"))
        .send()
        .await;
    assert_eq!(json_of(resp).await["status"], "active");
}

#[tokio::test]
async fn a_user_reads_consents_only_with_their_own_user_id() {
    let w = world().await;
    // Consents are read one user at a time: the user id is required.
    let resp = send(
        &w.app,
        Method::GET,
        "/v1/consents",
        None,
        Caller::UserOwn.authorization(),
        "k",
    )
    .await;
    let v = assert_error(resp, 400, "invalid_user_id").await;
    assert_eq!(v["error"]["field"], "user_id");
    let denied_before = audit_events(&w.app, "action=access.denied").await.len();
    // Another user's consents are refused before the other parameters
    // are read (`limit=0` would be a 400), also when the user id is
    // written percent-encoded or given twice.
    for path in [
        "/v1/consents?user_id=bob&limit=0",
        "/v1/consents?limit=abc&user_id=b%6Fb",
        "/v1/consents?user_id=alice&user_id=bob",
        "/v1/consents?user%5Fid=bob&limit=0",
    ] {
        let resp = send(
            &w.app,
            Method::GET,
            path,
            None,
            Caller::UserOwn.authorization(),
            "k",
        )
        .await;
        assert_bare_refusal(resp, 403, "forbidden", path).await;
    }
    let denied = audit_events(&w.app, "action=access.denied").await;
    assert_eq!(denied.len(), denied_before + 4);
    // One's own, malformed, is the operation's 400.
    let resp = send(
        &w.app,
        Method::GET,
        "/v1/consents?user_id=alice&limit=0",
        None,
        Caller::UserOwn.authorization(),
        "k",
    )
    .await;
    assert_error(resp, 400, "invalid_request").await;
    for (path, status) in [
        ("/v1/consents?user_id=bob", 403),
        ("/v1/consents?user_id=alice", 200),
    ] {
        let resp = send(
            &w.app,
            Method::GET,
            path,
            None,
            Caller::UserOwn.authorization(),
            "k",
        )
        .await;
        if status == 403 {
            assert_bare_refusal(resp, 403, "forbidden", path).await;
        } else {
            let v = json_of(resp).await;
            let users: BTreeSet<&str> = v["consents"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["user_id"].as_str().unwrap())
                .collect();
            assert_eq!(users, BTreeSet::from(["alice"]), "{v}");
        }
    }
}

#[tokio::test]
async fn channel_notifications_take_the_channels_signature_not_a_bearer_token() {
    let w = world().await;
    let secret = cardbind_channels::MockConfig::default().notification_secret;
    let n = cardbind_channels::mock::mock_notification(
        &secret,
        "evt-roles",
        &w.alice_otp,
        "signed",
        "agr-1",
    );
    for caller in CALLERS {
        let mut req = w.app.client.post("/v1/channels/mock/notify");
        for (k, v) in &n.headers {
            if k != "x-mock-signature" {
                req = req.header(k.as_str(), v.as_str());
            }
        }
        req = req.header("x-mock-signature", "00".repeat(32));
        if let Some(a) = caller.authorization() {
            req = req.header("Authorization", a);
        }
        let resp = req.body(n.body.clone()).send().await;
        assert_bare_refusal(
            resp,
            401,
            "invalid_signature",
            &format!("forged notification with {caller:?}"),
        )
        .await;
    }
    // the channel's own signature, no token: accepted
    let mut req = w.app.client.post("/v1/channels/mock/notify");
    for (k, v) in &n.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let resp = req.body(n.body.clone()).send().await;
    assert!(resp.0.status().is_success(), "{}", resp.0.status());
}

#[tokio::test]
async fn open_endpoints_need_no_token() {
    let w = world().await;
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"] {
        let resp = w.app.client.get(path).send().await;
        assert!(resp.0.status().is_success(), "{path}: {}", resp.0.status());
        let text = String::from_utf8(bytes(resp).await).unwrap();
        for s in SECRETS {
            assert!(!text.contains(s), "{path} shows card data");
        }
    }
}
