//! Step-up for risky operations: with `[step_up] enabled`, unbinding a
//! user's default card, moving the default off it, and erasing a user need an `X-Step-Up-Token` the
//! `StepUpVerifier` port accepts; missing, invalid or unverifiable is
//! `403 step_up_required` and changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::family_support;
use crate::support;

use std::sync::Arc;

use async_trait::async_trait;
use cardbind::step_up::{hmac_step_up_token, HmacStepUp};
use cardbind_domain::UserId;
use cardbind_ports::clock::Clock;
use cardbind_ports::step_up::{StepUpAction, StepUpError, StepUpVerifier};
use cardbind_usecases::UseCases;
use poem::EndpointExt;
use serde_json::Value;
use support::*;

const SECRET: &[u8] = b"step-up-test-secret-32-characters!!";
const FIRST: &str = "4012888888881881";
const SECOND: &str = "4111111111111111";
const UNBIND_DEFAULT_CARD: StepUpAction = StepUpAction::UnbindDefaultCard;
const ERASE_USER: StepUpAction = StepUpAction::EraseUser;
const CHANGE_DEFAULT_CARD: StepUpAction = StepUpAction::ChangeDefaultCard;

fn with_verifier(verifier: Arc<dyn StepUpVerifier>) -> TestApp {
    let (mut state, store, clock) = state_with(Options::default());
    let mut ports = state.usecases.ports().clone();
    ports.step_up = Some(verifier);
    state.usecases = UseCases::new(ports, state.usecases.policy().clone());
    TestApp {
        client: poem::test::TestClient::new(cardbind::http::app(state.clone()).boxed()),
        store,
        clock,
        state,
    }
}

fn stepped_up_app() -> TestApp {
    with_verifier(Arc::new(HmacStepUp::new(
        SECRET.to_vec(),
        Arc::new(NowClock),
        300,
    )))
}

/// System time (the test apps' clocks start at system time too).
struct NowClock;
impl Clock for NowClock {
    fn now(&self) -> cardbind_domain::Timestamp {
        cardbind_domain::Timestamp::from_unix_millis(system_now_ms())
    }
}

fn token_for(user: &str, action: StepUpAction, ttl: i64) -> String {
    hmac_step_up_token(SECRET, user, action, system_now_ms() / 1000 + ttl)
}

/// Two active cards for `user`; the first is the default.
async fn two_cards(app: &TestApp, user: &str) -> (String, String) {
    let mut ids = Vec::new();
    for (i, card) in [FIRST, SECOND].iter().enumerate() {
        let resp = app
            .bind(user, &format!("k-{user}-{i}"), &bind_body(card))
            .await;
        resp.assert_status(poem::http::StatusCode::CREATED);
        ids.push(json_of(resp).await["id"].as_str().unwrap().to_owned());
    }
    let first = get_card(app, user, &ids[0]).await;
    assert_eq!(first["is_default"], true);
    (ids[0].clone(), ids[1].clone())
}

async fn get_card(app: &TestApp, user: &str, id: &str) -> Value {
    json_of(
        app.client
            .get(format!("/v1/users/{user}/cards/{id}"))
            .header("Authorization", bearer("merchant", "service"))
            .send()
            .await,
    )
    .await
}

/// Sends `req` as `who` (subject, role), with the step-up token if any.
async fn send_stepped(
    req: poem::test::TestRequestBuilder<'_, poem::endpoint::BoxEndpoint<'static>>,
    who: (&str, &str),
    token: Option<&str>,
) -> poem::test::TestResponse {
    let mut req = req.header("Authorization", bearer(who.0, who.1));
    if let Some(t) = token {
        req = req.header("X-Step-Up-Token", t);
    }
    req.send().await
}

async fn unbind(
    app: &TestApp,
    user: &str,
    id: &str,
    token: Option<&str>,
) -> poem::test::TestResponse {
    let req = app.client.delete(format!("/v1/users/{user}/cards/{id}"));
    send_stepped(req, (user, "user"), token).await
}

async fn set_default(
    app: &TestApp,
    user: &str,
    id: &str,
    token: Option<&str>,
) -> poem::test::TestResponse {
    let req = app
        .client
        .put(format!("/v1/users/{user}/cards/{id}/default"));
    send_stepped(req, (user, "user"), token).await
}

async fn erase(app: &TestApp, user: &str, token: Option<&str>) -> poem::test::TestResponse {
    let req = app.client.post(format!("/v1/admin/users/{user}/erase"));
    send_stepped(req, ("ops", "admin"), token).await
}

async fn audit_actions(app: &TestApp, user: &str) -> Vec<(String, String, String)> {
    let v = json_of(
        app.client
            .get(format!("/v1/audit/events?user_id={user}&limit=500"))
            .header("Authorization", bearer("aud", "auditor"))
            .send()
            .await,
    )
    .await;
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["outcome"].as_str().unwrap().to_owned(),
                e["detail"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn unbinding_the_default_card_needs_a_valid_step_up_token() {
    let app = stepped_up_app();
    let (default, _other) = two_cards(&app, "alice").await;
    let refused = [
        ("no token", None),
        ("empty", Some(String::new())),
        ("garbage", Some("not-a-token".to_owned())),
        (
            "another user",
            Some(token_for("bob", UNBIND_DEFAULT_CARD, 60)),
        ),
        ("another action", Some(token_for("alice", ERASE_USER, 60))),
        ("expired", Some(token_for("alice", UNBIND_DEFAULT_CARD, -5))),
        (
            "too long-lived",
            Some(token_for("alice", UNBIND_DEFAULT_CARD, 3600)),
        ),
        (
            "another secret",
            Some(hmac_step_up_token(
                b"not-the-secret-not-the-secret-not!!",
                "alice",
                UNBIND_DEFAULT_CARD,
                system_now_ms() / 1000 + 60,
            )),
        ),
    ];
    for (what, token) in refused {
        let v = assert_error(
            unbind(&app, "alice", &default, token.as_deref()).await,
            403,
            "step_up_required",
        )
        .await;
        assert!(!v.to_string().contains(FIRST), "{what}");
        let card = get_card(&app, "alice", &default).await;
        assert_eq!(
            (card["status"].as_str(), card["is_default"].as_bool()),
            (Some("active"), Some(true)),
            "{what}: nothing changed"
        );
    }
    let good = token_for("alice", UNBIND_DEFAULT_CARD, 60);
    let resp = unbind(&app, "alice", &default, Some(&good)).await;
    resp.assert_status_is_ok();
    assert_eq!(json_of(resp).await["status"], "inactive");

    // audited: every refusal and the success, never the token itself
    let events = audit_actions(&app, "alice").await;
    let checks: Vec<_> = events.iter().filter(|e| e.0 == "step_up.verify").collect();
    assert_eq!(checks.len(), 9, "{events:?}");
    assert_eq!(
        checks.iter().filter(|e| e.1 == "step_up_required").count(),
        8
    );
    assert!(checks.iter().any(|e| e.1 == "ok"));
    assert!(checks.iter().any(|e| e.2 == "unbind_default_card: missing"));
    let all = format!("{events:?}");
    assert!(
        !all.contains(&good[good.len() - 20..]),
        "token in the audit"
    );
}

#[tokio::test]
async fn other_cards_unbind_without_step_up() {
    let app = stepped_up_app();
    let (default, other) = two_cards(&app, "alice").await;
    // not the default: no token asked
    unbind(&app, "alice", &other, None)
        .await
        .assert_status_is_ok();
    // an unbound card again: nothing to protect
    unbind(&app, "alice", &other, None)
        .await
        .assert_status_is_ok();
    // the service role is held to the same rule on the default
    let resp = app
        .client
        .delete(format!("/v1/users/alice/cards/{default}"))
        .header("Authorization", bearer("merchant", "service"))
        .send()
        .await;
    assert_error(resp, 403, "step_up_required").await;
}

#[tokio::test]
async fn erasure_needs_a_valid_step_up_token() {
    let app = stepped_up_app();
    two_cards(&app, "carol").await;
    assert_error(erase(&app, "carol", None).await, 403, "step_up_required").await;
    let wrong_action = token_for("carol", UNBIND_DEFAULT_CARD, 60);
    assert_error(
        erase(&app, "carol", Some(&wrong_action)).await,
        403,
        "step_up_required",
    )
    .await;
    let wrong_user = token_for("dave", ERASE_USER, 60);
    assert_error(
        erase(&app, "carol", Some(&wrong_user)).await,
        403,
        "step_up_required",
    )
    .await;
    // nothing was unbound
    let list = json_of(
        app.client
            .get("/v1/users/carol/cards")
            .header("Authorization", bearer("merchant", "service"))
            .send()
            .await,
    )
    .await;
    assert!(list["cards"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["status"] == "active"));
    // the role check comes first: an auditor with a valid token is forbidden
    let good = token_for("carol", ERASE_USER, 60);
    let resp = app
        .client
        .post("/v1/admin/users/carol/erase")
        .header("Authorization", bearer("aud", "auditor"))
        .header("X-Step-Up-Token", good.clone())
        .send()
        .await;
    assert_error(resp, 403, "forbidden").await;

    let resp = erase(&app, "carol", Some(&good)).await;
    resp.assert_status_is_ok();
    assert_eq!(json_of(resp).await["unbound_cards"], 2);
    let events = audit_actions(&app, "carol").await;
    assert!(events
        .iter()
        .any(|e| e.0 == "step_up.verify" && e.1 == "ok" && e.2 == ERASE_USER.as_str()));
    assert!(events.iter().any(|e| e.0 == "user.erase"));
}

/// A verifier whose backend is down.
struct Down;

#[async_trait]
impl StepUpVerifier for Down {
    async fn verify(&self, _u: &UserId, _a: StepUpAction, _t: &str) -> Result<bool, StepUpError> {
        Err(StepUpError::Unavailable("connection refused".into()))
    }
}

#[tokio::test]
async fn an_unreachable_verifier_fails_closed() {
    let app = with_verifier(Arc::new(Down));
    let (default, _) = two_cards(&app, "erin").await;
    let v = assert_error(
        unbind(&app, "erin", &default, Some("123.abc")).await,
        403,
        "step_up_required",
    )
    .await;
    assert!(!v.to_string().contains("connection refused"), "{v}");
    assert_error(
        erase(&app, "erin", Some("x")).await,
        403,
        "step_up_required",
    )
    .await;
    let events = audit_actions(&app, "erin").await;
    assert!(events
        .iter()
        .any(|e| e.2 == "unbind_default_card: verifier_unavailable"));
}

#[tokio::test]
async fn without_step_up_enabled_nothing_is_asked() {
    let app = spawn();
    let (default, _) = two_cards(&app, "frank").await;
    unbind(&app, "frank", &default, None)
        .await
        .assert_status_is_ok();
    erase(&app, "frank", None).await.assert_status_is_ok();
}

#[tokio::test]
async fn the_configuration_turns_step_up_on() {
    let dir = std::env::temp_dir().join(format!("cardbind-stepup-{}", std::process::id()));
    let mut config = cardbind::config::Config::default();
    config.server.data_dir = dir.clone();
    let built = cardbind::compose::build(&config).await.unwrap();
    assert!(!built.usecases.step_up_enabled());
    config.step_up.enabled = true;
    config.step_up.hmac_secret = Some(String::from_utf8(SECRET.to_vec()).unwrap());
    config.validate().unwrap();
    let built = cardbind::compose::build(&config).await.unwrap();
    assert!(built.usecases.step_up_enabled());
    // the composed verifier accepts the documented token format
    let verifier = cardbind::compose::step_up(&config, Arc::new(NowClock))
        .unwrap()
        .unwrap();
    let alice = UserId::parse("alice").unwrap();
    assert!(verifier
        .verify(
            &alice,
            UNBIND_DEFAULT_CARD,
            &token_for("alice", UNBIND_DEFAULT_CARD, 60)
        )
        .await
        .unwrap());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_spec_declares_the_step_up_header_on_exactly_the_three_operations() {
    let spec: Value = serde_json::from_str(&cardbind::http::api_spec_json()).unwrap();
    let mut with_header = Vec::new();
    for ops in spec["paths"].as_object().unwrap().values() {
        for op in ops.as_object().unwrap().values() {
            let has = op["parameters"].as_array().is_some_and(|ps| {
                ps.iter()
                    .any(|p| p["name"] == "X-Step-Up-Token" && p["in"] == "header")
            });
            if has {
                with_header.push(op["operationId"].as_str().unwrap().to_owned());
            }
        }
    }
    with_header.sort();
    assert_eq!(with_header, ["eraseUser", "setDefaultCard", "unbindCard"]);
    assert!(spec.to_string().contains("step_up_required"));
}

#[tokio::test]
async fn moving_the_default_off_a_card_needs_a_valid_step_up_token() {
    let app = stepped_up_app();
    let (first, second) = two_cards(&app, "erin").await;
    // Else: move the default with the bearer token alone, then unbind the
    // old default as a card that is not the default.
    for token in [None, Some(token_for("erin", UNBIND_DEFAULT_CARD, 60))] {
        assert_error(
            set_default(&app, "erin", &second, token.as_deref()).await,
            403,
            "step_up_required",
        )
        .await;
        assert_eq!(get_card(&app, "erin", &first).await["is_default"], true);
    }
    assert_error(
        unbind(&app, "erin", &first, None).await,
        403,
        "step_up_required",
    )
    .await;
    let good = token_for("erin", CHANGE_DEFAULT_CARD, 60);
    let resp = set_default(&app, "erin", &second, Some(&good)).await;
    resp.assert_status_is_ok();
    assert_eq!(json_of(resp).await["is_default"], true);
    assert_eq!(get_card(&app, "erin", &first).await["is_default"], false);
    // The default again: nothing moves, nothing asked.
    set_default(&app, "erin", &second, None)
        .await
        .assert_status_is_ok();
    let events = audit_actions(&app, "erin").await;
    let checks: Vec<_> = events.iter().filter(|e| e.0 == "step_up.verify").collect();
    assert!(checks
        .iter()
        .any(|e| e.1 == "step_up_required" && e.2 == "change_default_card: missing"));
    assert!(checks
        .iter()
        .any(|e| e.1 == "ok" && e.2 == "change_default_card"));
}

#[tokio::test]
async fn the_card_reads_show_as_default_needs_step_up_when_a_shared_default_is_unusable() {
    let app = stepped_up_app();
    let own = family_support::bind_active(&app, "fay", family_support::VISA2).await;
    let ann = family_support::bind_active(&app, "ann", family_support::VISA).await;
    let sid = family_support::share(&app, "ann", &ann, "fay", "s-fay").await;
    family_support::accept(&app, "fay", &sid)
        .await
        .assert_status_is_ok();
    let shared = family_support::cards(&app, "fay", "")
        .await
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .find(|id| *id != own)
        .unwrap();
    let moved = token_for("fay", CHANGE_DEFAULT_CARD, 60);
    set_default(&app, "fay", &shared, Some(&moved))
        .await
        .assert_status_is_ok();
    // Ann's card frozen: the shared default cannot be used, and every read
    // shows fay's own card as her default.
    app.client
        .post(format!("/v1/admin/users/ann/cards/{ann}/freeze"))
        .header("Authorization", bearer("ops", "admin"))
        .send()
        .await
        .assert_status_is_ok();
    assert_eq!(
        family_support::default_of(&family_support::cards(&app, "fay", "").await),
        [own.as_str()]
    );
    assert_eq!(get_card(&app, "fay", &own).await["is_default"], true);
    assert_error(
        unbind(&app, "fay", &own, None).await,
        403,
        "step_up_required",
    )
    .await;
    let good = token_for("fay", UNBIND_DEFAULT_CARD, 60);
    unbind(&app, "fay", &own, Some(&good))
        .await
        .assert_status_is_ok();
}
