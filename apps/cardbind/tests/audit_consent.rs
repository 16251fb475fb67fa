//! The audit log and consent records, through the API and the CLI's walk:
//! every state change and every opening of sealed card data is an event;
//! `cardbind audit verify` reports exactly the first broken link after an
//! edit or a deletion behind the service's back; auditors page through the
//! log with filters; retention cannot go below 180 days and is itself
//! audited; each binding keeps its consent, revoked on unbind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeSet;

use cardbind::cli::{verify_audit_log, AuditVerification};
use cardbind_domain::{Actor, BindingId, Role};
use cardbind_ports::audit::{AuditEvent, AuditLog};
use cardbind_ports::clock::Clock;
use cardbind_ports::service::RequestContext;
use poem::http::StatusCode;
use serde_json::{json, Value};
use support::*;

const VISA: &str = "4111111111111111";
const VISA2: &str = "4012888888881881";
const MC_OTP: &str = "5555555555554444";
const AMEX_REDIRECT: &str = "378282246310005";

async fn bind_ok(app: &TestApp, user: &str, card: &str) -> String {
    let resp = app
        .bind(user, &format!("k-{user}-{card}"), &bind_body(card))
        .await;
    assert!(resp.0.status().is_success(), "{}", resp.0.status());
    json_of(resp).await["id"].as_str().unwrap().to_owned()
}

/// An app with a few cards bound for two users (a dozen events or more).
async fn app_with_history() -> TestApp {
    let app = spawn();
    bind_ok(&app, "alice", VISA).await;
    bind_ok(&app, "alice", VISA2).await;
    bind_ok(&app, "bob", VISA).await;
    bind_ok(&app, "bob", AMEX_REDIRECT).await;
    app
}

async fn audit_page(app: &TestApp, query: &str) -> Value {
    let resp = app
        .client
        .get(format!("/v1/audit/events{query}"))
        .header("Authorization", bearer("aud", "auditor"))
        .send()
        .await;
    resp.assert_status_is_ok();
    json_of(resp).await
}

fn events(v: &Value) -> Vec<Value> {
    v["events"].as_array().unwrap().clone()
}

// ---- the chain and `cardbind audit verify` -----------------------------------------

#[tokio::test]
async fn an_untouched_chain_verifies_in_any_page_size() {
    let app = app_with_history().await;
    let total = app
        .store
        .list(&Default::default(), None, 10_000)
        .await
        .unwrap()
        .len() as u64;
    assert!(total >= 10, "{total}");
    for page in [1, 2, 3, 7, 500] {
        assert_eq!(
            verify_audit_log(app.store.as_ref(), page).await.unwrap(),
            AuditVerification::Intact { events: total },
            "page size {page}"
        );
    }
}

#[tokio::test]
async fn an_edited_event_is_reported_at_its_seq() {
    for (seq, page) in [(1, 500), (5, 500), (6, 3), (7, 3), (10, 4)] {
        let app = app_with_history().await;
        assert!(app.store.tamper_audit(seq, |r| {
            r.event.detail = Some("nothing happened here".into())
        }));
        match verify_audit_log(app.store.as_ref(), page).await.unwrap() {
            AuditVerification::Broken { at, checked } => {
                assert_eq!((at.seq, at.reason), (seq, "event altered"), "page {page}");
                assert_eq!(checked, seq - 1, "events before the break");
            }
            other => panic!("tampering with {seq} not found: {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_edit_with_a_recomputed_hash_breaks_the_next_link() {
    let app = app_with_history().await;
    assert!(app.store.tamper_audit(4, |r| {
        r.event.actor = "someone-else".into();
        r.hash = cardbind_ports::audit::chain_hash(&r.prev_hash, r.seq, &r.event);
    }));
    match verify_audit_log(app.store.as_ref(), 2).await.unwrap() {
        AuditVerification::Broken { at, .. } => {
            assert_eq!((at.seq, at.reason), (5, "link to previous event broken"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_deleted_event_is_reported_at_its_seq() {
    for (seq, page) in [(2, 500), (8, 500), (4, 3), (7, 3)] {
        let app = app_with_history().await;
        assert!(app.store.delete_audit(seq));
        match verify_audit_log(app.store.as_ref(), page).await.unwrap() {
            AuditVerification::Broken { at, .. } => {
                assert_eq!((at.seq, at.reason), (seq, "missing event"), "page {page}");
            }
            other => panic!("deleting {seq} not found: {other:?}"),
        }
    }
}

// ---- what is audited --------------------------------------------------------------

#[tokio::test]
async fn every_state_change_and_every_opening_of_card_data_is_an_event() {
    let app = spawn();
    let svc = bearer("merchant", "service");
    let admin = bearer("ops", "admin");
    let otp_card = bind_ok(&app, "u-a", MC_OTP).await;
    app.client
        .post(format!("/v1/users/u-a/cards/{otp_card}/verify"))
        .header("Authorization", svc.clone())
        .content_type("application/json")
        .body(json!({"otp": "123456"}).to_string())
        .send()
        .await
        .assert_status_is_ok();
    let second = bind_ok(&app, "u-a", VISA).await;
    for (method, path, auth) in [
        ("PUT", format!("/v1/users/u-a/cards/{second}/default"), &svc),
        (
            "POST",
            format!("/v1/admin/users/u-a/cards/{otp_card}/freeze"),
            &admin,
        ),
        (
            "POST",
            format!("/v1/admin/users/u-a/cards/{otp_card}/unfreeze"),
            &admin,
        ),
        ("DELETE", format!("/v1/users/u-a/cards/{second}"), &svc),
    ] {
        let m = poem::http::Method::from_bytes(method.as_bytes()).unwrap();
        app.client
            .request(m, path.clone())
            .header("Authorization", auth.clone())
            .send()
            .await
            .assert_status_is_ok();
    }
    // a refused access is audited too
    app.client
        .get("/v1/users/u-a/cards")
        .header("Authorization", bearer("mallory", "user"))
        .send()
        .await
        .assert_status(StatusCode::FORBIDDEN);
    // an operator opens a sealed field (investigation)
    let ctx = RequestContext {
        actor: Actor::new("ops", Role::Admin),
        request_id: "r-open".into(),
        client_ip: None,
    };
    let ports = app.state.service.ports();
    let b = ports
        .bindings
        .get(&BindingId::parse(&otp_card).unwrap())
        .await
        .unwrap()
        .unwrap();
    let pan = app.state.service.open_field(&ctx, &b, "pan").await.unwrap();
    assert_eq!(pan, MC_OTP.as_bytes());
    app.client
        .post("/v1/admin/users/u-a/erase")
        .header("Authorization", admin.clone())
        .send()
        .await
        .assert_status_is_ok();
    // after erasure the data does not open, and the attempt is audited
    assert!(app
        .state
        .service
        .open_field(&ctx, &b, "phone")
        .await
        .is_err());

    let all = events(&audit_page(&app, "?user_id=u-a&limit=500").await);
    let seen: Vec<(String, String)> = all
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let actions: BTreeSet<&str> = seen.iter().map(|(a, _)| a.as_str()).collect();
    for want in [
        "binding.create",
        "binding.channel_start",
        "binding.verify",
        "binding.default_changed",
        "binding.set_default",
        "binding.freeze",
        "binding.unfreeze",
        "binding.unbind",
        "access.denied",
        "card_data.open",
        "user.erase",
    ] {
        assert!(actions.contains(want), "{want} missing from {seen:?}");
    }
    let opens: Vec<&Value> = all
        .iter()
        .filter(|e| e["action"] == "card_data.open")
        .collect();
    assert_eq!(opens.len(), 2);
    assert_eq!(
        (opens[0]["outcome"].as_str(), opens[0]["detail"].as_str()),
        (Some("ok"), Some("pan"))
    );
    assert_eq!(opens[0]["actor"], "ops");
    assert!(opens[1]["outcome"].as_str().unwrap().starts_with("refused"));
    // status changes say from -> to
    assert!(all
        .iter()
        .any(|e| e["action"] == "binding.freeze" && e["detail"] == "active -> frozen"));
    // and nothing in the log is card data
    let text = Value::Array(all).to_string();
    for s in [MC_OTP, VISA, "13800138000", "11010519491231002X", "张三"] {
        assert!(!text.contains(s), "card data in the audit log");
    }
    assert_eq!(
        verify_audit_log(app.store.as_ref(), 500).await.unwrap(),
        AuditVerification::Intact {
            events: app
                .store
                .list(&Default::default(), None, 10_000)
                .await
                .unwrap()
                .len() as u64
        }
    );
}

// ---- reading the log --------------------------------------------------------------

#[tokio::test]
async fn auditors_page_through_the_log_with_filters() {
    let app = app_with_history().await;
    let all = events(&audit_page(&app, "?limit=500").await);
    let total = all.len();
    assert!(total >= 10);

    // pages of 5 cover the log once, in order, linked
    let mut seen = Vec::new();
    let mut after: Option<u64> = None;
    loop {
        let q = match after {
            Some(a) => format!("?limit=5&after_seq={a}"),
            None => "?limit=5".into(),
        };
        let page = audit_page(&app, &q).await;
        let evs = events(&page);
        assert!(evs.len() <= 5);
        seen.extend(evs);
        match page["next_after_seq"].as_u64() {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let seqs: Vec<u64> = seen.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=total as u64).collect::<Vec<_>>());
    for w in seen.windows(2) {
        assert_eq!(w[1]["prev_hash"], w[0]["hash"]);
    }

    // by user
    let bob = events(&audit_page(&app, "?user_id=bob&limit=500").await);
    assert!(!bob.is_empty() && bob.iter().all(|e| e["user_id"] == "bob"));
    // by action
    let creates = events(&audit_page(&app, "?action=binding.create&limit=500").await);
    assert_eq!(creates.len(), 4);
    // by card
    let card = creates[0]["card_id"].as_str().unwrap().to_owned();
    let of_card = events(&audit_page(&app, &format!("?card_id={card}&limit=500")).await);
    assert!(of_card.len() >= 2 && of_card.iter().all(|e| e["card_id"] == card.as_str()));
    // by time: since is inclusive, until exclusive
    let t0 = all[0]["at"].as_str().unwrap().to_owned();
    assert_eq!(
        events(&audit_page(&app, &format!("?since={t0}&limit=500")).await).len(),
        total
    );
    assert!(events(&audit_page(&app, &format!("?until={t0}&limit=500")).await).is_empty());
    let future = (app.clock.now().plus_seconds(3600)).to_rfc3339();
    assert!(events(&audit_page(&app, &format!("?since={future}")).await).is_empty());
    assert_eq!(
        events(&audit_page(&app, &format!("?since={t0}&until={future}&limit=500")).await).len(),
        total
    );
    // filters combine, and pages of a filtered view hold only matches
    let page = audit_page(&app, "?user_id=alice&action=binding.create&limit=1").await;
    assert_eq!(events(&page).len(), 1);
    let next = page["next_after_seq"].as_u64().unwrap();
    let page2 = audit_page(
        &app,
        &format!("?user_id=alice&action=binding.create&limit=1&after_seq={next}"),
    )
    .await;
    let e2 = events(&page2);
    assert_eq!(e2.len(), 1);
    assert_eq!(e2[0]["user_id"], "alice");
    assert!(e2[0]["seq"].as_u64().unwrap() > next);
    // bad parameters are named
    for (q, field) in [
        ("?limit=0", "limit"),
        ("?limit=501", "limit"),
        ("?until=tomorrow", "until"),
        ("?after_seq=abc", "after_seq"),
    ] {
        let resp = app
            .client
            .get(format!("/v1/audit/events{q}"))
            .header("Authorization", bearer("aud", "auditor"))
            .send()
            .await;
        let v = json_of(resp).await;
        assert_eq!(v["error"]["code"], "invalid_request", "{q}: {v}");
        assert_eq!(v["error"]["field"], field, "{q}: {v}");
    }
}

// ---- retention --------------------------------------------------------------------

#[test]
fn audit_retention_below_180_days_is_a_named_configuration_error() {
    let dir = std::env::temp_dir().join(format!("cardbind-retention-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("c.toml");
    let no_env = figment::providers::Env::prefixed("CARDBIND_RETENTION_TEST_UNSET__");
    for (days, ok) in [(179, false), (30, false), (180, true), (400, true)] {
        std::fs::write(&file, format!("[audit]\nretention_days = {days}\n")).unwrap();
        let res = cardbind::config::Config::load_from(Some(&file), no_env.clone());
        match (res, ok) {
            (Ok(c), true) => assert_eq!(c.audit.retention_days, days),
            (Err(e), false) => assert!(e.0.contains("audit.retention_days"), "{e}"),
            (r, _) => panic!("{days} days: {:?}", r.map(|c| c.audit.retention_days)),
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_purge_keeps_what_retention_demands_and_audits_itself() {
    let dir = std::env::temp_dir().join(format!("cardbind-purge-{}", std::process::id()));
    let mut config = cardbind::config::Config::default();
    config.server.data_dir = dir.clone();
    config.audit.retention_days = 180;
    let built = cardbind::compose::build(&config).await.unwrap();
    let audit = built.stores.audit.clone();
    let now = built.state.clock.now();
    for days_ago in [400, 181, 179, 1] {
        audit
            .append(AuditEvent {
                at: now.minus_seconds(days_ago * 86_400),
                actor: "test".into(),
                role: "admin".into(),
                action: "test.event".into(),
                outcome: "ok".into(),
                detail: Some(format!("{days_ago} days ago")),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let report = cardbind::compose::purge(&built, &config).await.unwrap();
    assert!(report.contains("2 audit events"), "{report}");
    let left = audit.list(&Default::default(), None, 100).await.unwrap();
    let details: Vec<_> = left
        .iter()
        .map(|r| r.event.detail.clone().unwrap_or_default())
        .collect();
    assert_eq!(left.len(), 3, "{details:?}");
    assert_eq!(&details[..2], ["179 days ago", "1 days ago"]);
    assert_eq!(left[2].event.action, "retention.purge");
    // what is left still verifies (the first link is taken as given)
    assert_eq!(
        verify_audit_log(audit.as_ref(), 500).await.unwrap(),
        AuditVerification::Intact { events: 3 }
    );
    let _ = std::fs::remove_dir_all(dir);
}

// ---- consents -----------------------------------------------------------------------

async fn consents(app: &TestApp, auth: &str, user: &str) -> Vec<Value> {
    let resp = app
        .client
        .get(format!("/v1/consents?user_id={user}"))
        .header("Authorization", auth)
        .send()
        .await;
    resp.assert_status_is_ok();
    json_of(resp).await["consents"].as_array().unwrap().clone()
}

#[tokio::test]
async fn each_binding_keeps_its_consent_and_unbinding_revokes_it() {
    let mut opts = Options::default();
    opts.http.trust_forwarded_for = true;
    let app = spawn_with(opts);
    let mut ids = Vec::new();
    for (card, version) in [(VISA, "v3"), (AMEX_REDIRECT, "v4")] {
        let mut body = bind_body(card);
        body["consent"]["text_version"] = json!(version);
        let resp = app
            .client
            .post("/v1/users/alice/cards")
            .header("Authorization", bearer("alice", "user"))
            .header("Idempotency-Key", format!("k-{card}"))
            .header("X-Forwarded-For", "203.0.113.50")
            .header("User-Agent", "AliceApp/2.1")
            .content_type("application/json")
            .body(body.to_string())
            .send()
            .await;
        resp.assert_status(StatusCode::CREATED);
        ids.push(json_of(resp).await["id"].as_str().unwrap().to_owned());
    }
    let user_view = consents(&app, &bearer("alice", "user"), "alice").await;
    let auditor_view = consents(&app, &bearer("aud", "auditor"), "alice").await;
    assert_eq!(user_view, auditor_view);
    assert_eq!(user_view.len(), 2);
    let bind_time = app.clock.now().to_rfc3339();
    for (c, (id, version)) in user_view.iter().zip(ids.iter().zip(["v3", "v4"])) {
        assert_eq!(c["card_id"], id.as_str());
        assert_eq!(c["user_id"], "alice");
        assert_eq!(c["text_version"], version);
        assert_eq!(c["text_sha256"], SHA);
        assert_eq!(c["ip"], "203.0.113.50");
        assert_eq!(c["user_agent"], "AliceApp/2.1");
        assert_eq!(c["channel"], "mock");
        assert!(
            c["agreement_id"].as_str().is_some_and(|a| !a.is_empty()),
            "the channel's agreement id: {c}"
        );
        assert!(c["accepted_at"].as_str().unwrap() <= bind_time.as_str());
        assert!(c.get("revoked_at").is_none() && c.get("revoked_by").is_none());
    }

    // alice unbinds the first card herself
    app.clock.advance_seconds(5);
    app.client
        .delete(format!("/v1/users/alice/cards/{}", ids[0]))
        .header("Authorization", bearer("alice", "user"))
        .send()
        .await
        .assert_status_is_ok();
    // an operator unbinds the second
    app.client
        .delete(format!("/v1/users/alice/cards/{}", ids[1]))
        .header("Authorization", bearer("ops-7", "admin"))
        .send()
        .await
        .assert_status_is_ok();
    let after = consents(&app, &bearer("aud", "auditor"), "alice").await;
    let unbind_time = app.clock.now().to_rfc3339();
    assert_eq!(after[0]["revoked_by"], "alice");
    assert_eq!(after[1]["revoked_by"], "ops-7");
    for c in &after {
        let at = c["revoked_at"].as_str().unwrap();
        assert!(at > c["accepted_at"].as_str().unwrap() && at <= unbind_time.as_str());
        // the record itself is kept
        assert!(c["agreement_id"].is_string() && c["text_version"].is_string());
    }
    // unbinding again does not rewrite the revocation
    app.clock.advance_seconds(5);
    app.client
        .delete(format!("/v1/users/alice/cards/{}", ids[0]))
        .header("Authorization", bearer("merchant", "service"))
        .send()
        .await
        .assert_status_is_ok();
    let again = consents(&app, &bearer("aud", "auditor"), "alice").await;
    assert_eq!(again[0]["revoked_by"], "alice");
    assert_eq!(again[0]["revoked_at"], after[0]["revoked_at"]);

    // rebinding the card records a new consent beside the revoked one
    app.bind("alice", "k-rebind", &bind_body(VISA))
        .await
        .assert_status(StatusCode::CREATED);
    let now = consents(&app, &bearer("aud", "auditor"), "alice").await;
    assert_eq!(now.len(), 3);
    let live: Vec<&Value> = now
        .iter()
        .filter(|c| c.get("revoked_at").is_none())
        .collect();
    assert_eq!(live.len(), 1);
    assert_eq!(
        live[0]["card_id"],
        ids[0].as_str(),
        "same record, new consent"
    );
}
