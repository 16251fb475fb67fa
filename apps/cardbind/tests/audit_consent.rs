//! The audit log and consent records, through the API and the CLI's walk:
//! every state change and every opening of sealed card data is an event;
//! `cardbind audit verify` reports exactly the first broken link after an
//! edit or a deletion behind the service's back; auditors page through the
//! log with filters; retention cannot go below 180 days and is itself
//! audited; each binding keeps its consent, revoked on unbind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support;

use std::collections::BTreeSet;

use cardbind::cli::{verify_audit_anchors, verify_audit_log};
use cardbind_domain::UserId;
use cardbind_ports::audit::{
    AuditAction, AuditActor, AuditEvent, AuditFilter, AuditLog, ChainId, Link, Outcome,
};
use cardbind_ports::clock::Clock;
use cardbind_usecases::anchors::{Anchor, AnchorSchedule};
use cardbind_usecases::retention::Retention;
use cardbind_usecases::RequestContext;
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

/// An app with a few cards bound for two users (several links in each
/// user's chain).
async fn app_with_history() -> TestApp {
    let app = spawn();
    bind_ok(&app, "alice", VISA).await;
    bind_ok(&app, "alice", VISA2).await;
    bind_ok(&app, "alice", AMEX_REDIRECT).await;
    bind_ok(&app, "bob", VISA).await;
    bind_ok(&app, "bob", AMEX_REDIRECT).await;
    app
}

fn events(v: &Value) -> Vec<Value> {
    v["events"].as_array().unwrap().clone()
}

/// Every stored link, in (chain, seq) order.
async fn all_links(store: &dyn AuditLog) -> Vec<Link> {
    store.links(None, 100_000).await.unwrap()
}

fn alice() -> ChainId {
    ChainId::User(UserId::parse("alice").unwrap())
}

// ---- the chains and `cardbind audit verify` ------------------------------------------

#[tokio::test]
async fn untouched_chains_verify_in_any_page_size() {
    let app = app_with_history().await;
    let links = all_links(app.store.as_ref()).await;
    let alice_links = links.iter().filter(|l| l.chain == alice()).count();
    assert!(alice_links >= 3, "{alice_links}");
    for page in [1, 2, 3, 7, 500] {
        let r = verify_audit_log(&app.state.usecases, page).await.unwrap();
        assert_eq!(r.broken, None, "page size {page}");
        assert_eq!(r.links_checked, links.len() as u64, "page size {page}");
        assert_eq!(r.chains, 2, "alice and bob: page size {page}");
    }
}

#[tokio::test]
async fn an_edited_event_is_reported_at_its_link() {
    let n = {
        let app = app_with_history().await;
        all_links(app.store.as_ref())
            .await
            .iter()
            .filter(|l| l.chain == alice())
            .count() as u64
    };
    for (seq, page) in [(1, 500), (2, 500), (n, 500), (2, 1), (n, 2)] {
        let app = app_with_history().await;
        assert!(app.store.tamper_link(&alice(), seq, |l| {
            l.events[0].detail = Some("nothing happened here".into())
        }));
        let r = verify_audit_log(&app.state.usecases, page).await.unwrap();
        let b = r
            .broken
            .unwrap_or_else(|| panic!("tampering with {seq} not found"));
        assert_eq!(
            (b.chain, b.seq, b.reason),
            (alice(), seq, "link altered"),
            "page {page}"
        );
    }
}

#[tokio::test]
async fn an_edit_with_a_recomputed_hash_breaks_the_next_link() {
    let app = app_with_history().await;
    assert!(app.store.tamper_link(&alice(), 2, |l| {
        l.events[0].actor = AuditActor::service("someone-else");
        l.hash = l.computed_hash();
    }));
    let r = verify_audit_log(&app.state.usecases, 2).await.unwrap();
    let b = r.broken.expect("the next link no longer links");
    assert_eq!(
        (b.chain, b.seq, b.reason),
        (alice(), 3, "link to the previous one broken")
    );
}

#[tokio::test]
async fn a_deleted_link_is_reported_at_its_seq() {
    for (seq, page) in [(2, 500), (2, 1), (2, 2)] {
        let app = app_with_history().await;
        assert!(app.store.delete_link(&alice(), seq));
        let r = verify_audit_log(&app.state.usecases, page).await.unwrap();
        let b = r
            .broken
            .unwrap_or_else(|| panic!("deleting {seq} not found"));
        assert_eq!(
            (b.chain, b.seq, b.reason),
            (alice(), seq, "missing link"),
            "page {page}"
        );
    }
}

// ---- anchors: the newest links ------------------------------------------------------

const EVERY_MINUTE: AnchorSchedule = AnchorSchedule {
    interval_seconds: 60,
    delay_seconds: 120,
    catch_up: 5,
};

/// The links of every chain whose instants fall in `[start, end)`, by the
/// walk `audit verify` makes (not by the listing the anchors read).
async fn links_in(app: &TestApp, start: i64, end: i64) -> Vec<Link> {
    let all = app.store.links(None, 10_000).await.unwrap();
    all.into_iter()
        .filter(|l| (start..end).contains(&l.at.unix_millis()))
        .collect()
}

fn newest_seq(links: &[Link], chain: &ChainId) -> u64 {
    links
        .iter()
        .filter(|l| l.chain == *chain)
        .map(|l| l.seq)
        .max()
        .unwrap()
}

/// An app with history whose window has been anchored; returns the anchor.
async fn anchored_history() -> (TestApp, Anchor) {
    let app = app_with_history().await;
    let ctx = RequestContext::service("test-anchor");
    let uc = &app.state.usecases;
    // The window is still open: nothing is due.
    assert_eq!(
        uc.anchor_due(&ctx, EVERY_MINUTE, &|_| {}).await.unwrap(),
        vec![]
    );
    // The clock is one second into the window: at 179 s the delay has not passed.
    app.clock.advance_seconds(178);
    assert_eq!(
        uc.anchor_due(&ctx, EVERY_MINUTE, &|_| {}).await.unwrap(),
        vec![]
    );
    app.clock.advance_seconds(1);
    let made = uc.anchor_due(&ctx, EVERY_MINUTE, &|_| {}).await.unwrap();
    assert_eq!(made.len(), 1, "{made:?}");
    let a = made[0].clone();
    let expected = links_in(&app, a.start.unix_millis(), a.end.unix_millis()).await;
    assert!(expected.len() >= 5, "{expected:?}");
    assert_eq!(a.links, expected.len() as u64);
    // Anchoring again (this instance or another) adds nothing, and the
    // window that holds only the anchor's own link gets none.
    assert_eq!(
        uc.anchor_due(&ctx, EVERY_MINUTE, &|_| {}).await.unwrap(),
        vec![]
    );
    // (The anchor's link is in the window that closes 60 s after it; that
    // window is due 120 s later.)
    let now = app.clock.now();
    app.clock.advance_seconds(180);
    assert_eq!(
        uc.anchor_due(&ctx, EVERY_MINUTE, &|_| {}).await.unwrap(),
        vec![]
    );
    app.clock.set_ms(now.unix_millis());
    (app, a)
}

#[tokio::test]
async fn deleting_a_chains_newest_link_is_caught_by_its_window_anchor() {
    let (app, anchor) = anchored_history().await;
    let r = verify_audit_anchors(&app.state.usecases, 400)
        .await
        .unwrap();
    assert_eq!((r.checked, r.past_retention, &r.mismatch), (1, 0, &None));
    assert_eq!(r.newest_end, Some(anchor.end));

    let links = links_in(&app, anchor.start.unix_millis(), anchor.end.unix_millis()).await;
    let newest = newest_seq(&links, &alice());
    assert!(app.store.delete_link(&alice(), newest));
    // The chains alone do not show it: that is the gap anchors close.
    let chains = verify_audit_log(&app.state.usecases, 500).await.unwrap();
    assert_eq!(chains.broken, None);
    let r = verify_audit_anchors(&app.state.usecases, 400)
        .await
        .unwrap();
    let m = r.mismatch.expect("the deleted newest link is found");
    assert_eq!(m.anchor, anchor);
    assert_eq!(m.links, anchor.links - 1);
    assert_ne!(m.digest, anchor.digest);
    assert_eq!(r.checked, 0);
}

#[tokio::test]
async fn an_altered_link_or_a_late_link_in_an_anchored_window_is_caught() {
    // Altered with its hash recomputed: the chains show it only at the
    // next link, and the newest link has none.
    let (app, anchor) = anchored_history().await;
    let links = links_in(&app, anchor.start.unix_millis(), anchor.end.unix_millis()).await;
    let newest = newest_seq(&links, &alice());
    assert!(app.store.tamper_link(&alice(), newest, |l| {
        l.events[0].detail = Some("nothing happened here".into());
        l.hash = l.computed_hash();
    }));
    assert_eq!(
        verify_audit_log(&app.state.usecases, 500)
            .await
            .unwrap()
            .broken,
        None
    );
    let m = verify_audit_anchors(&app.state.usecases, 400)
        .await
        .unwrap()
        .mismatch
        .expect("the altered newest link is found");
    assert_eq!(m.links, anchor.links);
    assert_ne!(m.digest, anchor.digest);

    // Links that land in a window after its anchor (here: a new user's
    // bind by an instance whose clock is back in the window).
    let (app, anchor) = anchored_history().await;
    let before = app.clock.now();
    app.clock.set_ms(anchor.end.unix_millis() - 1);
    bind_ok(&app, "dave", VISA).await;
    app.clock.set_ms(before.unix_millis());
    let m = verify_audit_anchors(&app.state.usecases, 400)
        .await
        .unwrap()
        .mismatch
        .expect("the late links are found");
    assert!(m.links > anchor.links, "{m:?}");
}

#[tokio::test]
async fn windows_past_the_retention_horizon_are_counted_not_checked() {
    let (app, _anchor) = anchored_history().await;
    assert!(app.store.delete_link(&alice(), 1));
    assert!(verify_audit_anchors(&app.state.usecases, 400)
        .await
        .unwrap()
        .mismatch
        .is_some());
    // 181 days on, with 180 days kept, the purge may have taken any of
    // that window's links.
    app.clock.advance_seconds(181 * 86_400);
    let r = verify_audit_anchors(&app.state.usecases, 180)
        .await
        .unwrap();
    assert_eq!((r.checked, r.past_retention, r.mismatch), (0, 1, None));
}

#[tokio::test]
async fn an_idle_service_anchors_nothing_and_a_restart_catches_up() {
    let app = spawn();
    let ctx = RequestContext::service("test-anchor");
    let uc = &app.state.usecases;
    app.clock.advance_seconds(3600);
    assert_eq!(
        uc.anchor_due(&ctx, EVERY_MINUTE, &|_| {}).await.unwrap(),
        vec![]
    );
    let anchors = app
        .store
        .list(
            &AuditFilter {
                action: Some(AuditAction::AuditAnchor),
                ..AuditFilter::default()
            },
            None,
            100,
        )
        .await
        .unwrap();
    assert_eq!(anchors, vec![]);

    // Binds in two windows, then a stop of four minutes: the next run
    // anchors both windows, oldest first, as long as they are among the
    // last `catch_up` closed ones.
    bind_ok(&app, "carol", VISA).await;
    app.clock.advance_seconds(60);
    bind_ok(&app, "carol", VISA2).await;
    app.clock.advance_seconds(240);
    let told = std::sync::Mutex::new(Vec::new());
    let made = uc
        .anchor_due(&ctx, EVERY_MINUTE, &|a| {
            told.lock().unwrap().push(a.clone())
        })
        .await
        .unwrap();
    assert_eq!(made.len(), 2, "{made:?}");
    assert_eq!(made[0].end, made[1].start);
    for a in &made {
        let links = links_in(&app, a.start.unix_millis(), a.end.unix_millis()).await;
        assert_eq!(a.links, links.len() as u64, "{a:?}");
    }
    // Each anchor was handed on (to the log) as it was stored.
    assert_eq!(*told.lock().unwrap(), made);
    let r = verify_audit_anchors(uc, 400).await.unwrap();
    assert_eq!((r.checked, r.mismatch), (2, None));
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
    // and a role's refusal names the role and the operation
    app.client
        .post(format!("/v1/admin/users/u-a/cards/{otp_card}/freeze"))
        .header("Authorization", svc.clone())
        .send()
        .await
        .assert_status(StatusCode::FORBIDDEN);
    app.client
        .post("/v1/admin/users/u-a/erase")
        .header("Authorization", admin.clone())
        .send()
        .await
        .assert_status_is_ok();

    let all = audit_events(&app, "user_id=u-a&limit=500").await;
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
        "user.erase",
    ] {
        assert!(actions.contains(want), "{want} missing from {seen:?}");
    }
    // (`card_data.open`, written when a review retry opens sealed data, is
    // checked in review_retry.rs)
    assert!(
        all.iter().any(|e| e["action"] == "access.denied"
            && e["detail"] == "the service role may not freeze_card"),
        "{all:?}"
    );
    // status changes say from -> to
    assert!(all
        .iter()
        .any(|e| e["action"] == "binding.freeze" && e["detail"] == "active -> frozen"));
    // and nothing in the log is card data
    let text = Value::Array(all).to_string();
    for s in [MC_OTP, VISA, "13800138000", "11010519491231002X", "张三"] {
        assert!(!text.contains(s), "card data in the audit log");
    }
    let r = verify_audit_log(&app.state.usecases, 500).await.unwrap();
    assert_eq!(r.broken, None);
    assert_eq!(
        r.links_checked,
        all_links(app.store.as_ref()).await.len() as u64
    );
}

// ---- reading the log --------------------------------------------------------------

#[tokio::test]
async fn auditors_page_through_the_log_with_filters() {
    let app = app_with_history().await;
    let all = audit_events(&app, "limit=500").await;
    let total = all.len();
    assert!(total >= 10);

    // pages of 5 cover the log once, in order
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let q = match &after {
            Some(a) => format!("limit=5&after={a}"),
            None => "limit=5".into(),
        };
        let page = audit_page(&app, &q).await;
        let evs = events(&page);
        assert!(evs.len() <= 5);
        seen.extend(evs);
        match page["next_after"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, all, "paging neither skips nor repeats");
    let keys: Vec<(String, String, u64, u64)> = seen
        .iter()
        .map(|e| {
            (
                e["at"].as_str().unwrap().to_owned(),
                e["chain"].as_str().unwrap().to_owned(),
                e["seq"].as_u64().unwrap(),
                e["index"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "ordered by (instant, chain, link, place)");
    // events of one link share its hash; each chain's links are 1, 2, 3, …
    for chain in ["alice", "bob"] {
        let mut seqs: Vec<u64> = seen
            .iter()
            .filter(|e| e["chain"] == chain)
            .map(|e| e["seq"].as_u64().unwrap())
            .collect();
        seqs.dedup();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "{chain}");
    }
    for w in seen.windows(2) {
        if w[0]["chain"] == w[1]["chain"] && w[0]["seq"] == w[1]["seq"] {
            assert_eq!(w[0]["link_hash"], w[1]["link_hash"]);
        }
    }

    // by user
    let bob = audit_events(&app, "user_id=bob&limit=500").await;
    assert!(!bob.is_empty() && bob.iter().all(|e| e["user_id"] == "bob"));
    // by action
    let creates = audit_events(&app, "action=binding.create&limit=500").await;
    assert_eq!(creates.len(), 5);
    // by card
    let card = creates[0]["card_id"].as_str().unwrap().to_owned();
    let of_card = audit_events(&app, &format!("card_id={card}&limit=500")).await;
    assert!(of_card.len() >= 2 && of_card.iter().all(|e| e["card_id"] == card.as_str()));
    // by time: since is inclusive, until exclusive
    let t0 = all[0]["at"].as_str().unwrap().to_owned();
    assert_eq!(
        audit_events(&app, &format!("since={t0}&limit=500"))
            .await
            .len(),
        total
    );
    assert!(audit_events(&app, &format!("until={t0}&limit=500"))
        .await
        .is_empty());
    let future = (app.clock.now().plus_seconds(3600)).to_rfc3339();
    assert!(audit_events(&app, &format!("since={future}"))
        .await
        .is_empty());
    assert_eq!(
        audit_events(&app, &format!("since={t0}&until={future}&limit=500"))
            .await
            .len(),
        total
    );
    // filters combine, and pages of a filtered view hold only matches
    let page = audit_page(&app, "user_id=alice&action=binding.create&limit=1").await;
    assert_eq!(events(&page).len(), 1);
    let next = page["next_after"].as_str().unwrap().to_owned();
    let page2 = audit_page(
        &app,
        &format!("user_id=alice&action=binding.create&limit=1&after={next}"),
    )
    .await;
    let e2 = events(&page2);
    assert_eq!(e2.len(), 1);
    assert_eq!(e2[0]["user_id"], "alice");
    assert_ne!(e2[0]["cursor"], events(&page)[0]["cursor"]);
    // bad parameters are named
    for (q, field) in [
        ("?limit=0", "limit"),
        ("?limit=501", "limit"),
        ("?until=tomorrow", "until"),
        ("?after=abc", "after"),
        ("?after=", "after"),
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
    // Links of the service's own chain, oldest first (instants never go
    // backwards along a chain).
    for days_ago in [400, 181, 179, 1] {
        let at = now.minus_seconds(days_ago * 86_400);
        let e = AuditEvent {
            at,
            actor: AuditActor::service("test"),
            action: AuditAction::KeysRotate,
            user_id: None,
            binding_id: None,
            outcome: Outcome::Ok,
            request_id: None,
            client_ip: None,
            detail: Some(format!("{days_ago} days ago")),
        };
        audit.append_system(vec![e], at).await.unwrap();
    }
    let retention = Retention::new(180, 48).unwrap();
    let purged = built
        .usecases
        .purge(&RequestContext::service("test"), retention)
        .await
        .unwrap();
    assert_eq!(purged.audit_links, 2, "{purged}");
    let left = audit.list(&Default::default(), None, 100).await.unwrap();
    let details: Vec<_> = left
        .iter()
        .map(|r| r.event.detail.clone().unwrap_or_default())
        .collect();
    assert_eq!(left.len(), 3, "{details:?}");
    assert_eq!(&details[..2], ["179 days ago", "1 days ago"]);
    assert_eq!(left[2].event.action, AuditAction::RetentionPurge);
    assert!(details[2].contains("audit links 2"), "{details:?}");
    // what is left still verifies (the first link is taken as given)
    let r = verify_audit_log(&built.usecases, 500).await.unwrap();
    assert_eq!((r.broken, r.links_checked), (None, 3));
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
        if version == "v3" {
            assert!(
                c["agreement_id"].as_str().is_some_and(|a| !a.is_empty()),
                "the active card's agreement id: {c}"
            );
        } else {
            assert!(
                c.get("agreement_id").is_none(),
                "no agreement before the user signs at the channel: {c}"
            );
        }
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
    assert_eq!(
        after[0]["agreement_id"], user_view[0]["agreement_id"],
        "the agreement id stays on the revoked consent"
    );
    for c in &after {
        let at = c["revoked_at"].as_str().unwrap();
        assert!(at > c["accepted_at"].as_str().unwrap() && at <= unbind_time.as_str());
        // the record itself is kept
        assert!(c["text_version"].is_string() && c["text_sha256"] == SHA);
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

#[tokio::test]
async fn a_consents_free_text_keeps_no_card_number_however_written_or_cut() {
    let app = spawn();
    // A card number across the 512-character cut of a user agent, from the
    // header; one in fullwidth digits with doubled spaces, in the body.
    let pad = "x".repeat(505);
    let fullwidth = "\u{ff14}\u{ff11}\u{ff11}\u{ff11}  \u{ff11}\u{ff11}\u{ff11}\u{ff11}  \u{ff11}\u{ff11}\u{ff11}\u{ff11}  \u{ff11}\u{ff11}\u{ff11}\u{ff11}";
    let mut with_body_agent = bind_body(VISA2);
    with_body_agent["consent"]["user_agent"] = json!(format!("app {fullwidth}"));
    with_body_agent["consent"]["text_version"] = json!("v 4111--1111--1111--1111");
    for (card, body, header) in [
        (VISA, bind_body(VISA), format!("{pad}{VISA} tail")),
        (VISA2, with_body_agent, "App/1.0".to_owned()),
    ] {
        app.client
            .post("/v1/users/alice/cards")
            .header("Authorization", bearer("alice", "user"))
            .header("Idempotency-Key", format!("k-{card}"))
            .header("User-Agent", header)
            .content_type("application/json")
            .body(body.to_string())
            .send()
            .await
            .assert_status(StatusCode::CREATED);
    }
    let kept = consents(&app, &bearer("aud", "auditor"), "alice").await;
    assert_eq!(kept.len(), 2);
    assert_eq!(kept[0]["user_agent"], format!("{pad}*******"));
    assert_eq!(
        kept[1]["user_agent"], "app ****  ****  ****  ****",
        "{}",
        kept[1]
    );
    assert_eq!(kept[1]["text_version"], "v ****--****--****--****");
    // Nor does the audit log, which quotes both.
    let resp = app
        .client
        .get("/v1/audit/events?user_id=alice")
        .header("Authorization", bearer("aud", "auditor"))
        .send()
        .await;
    resp.assert_status_is_ok();
    let log = json_of(resp).await.to_string();
    assert!(log.contains("*******"), "{log}");
    for digits in ["4111111", "4111--1111", "\u{ff14}\u{ff11}\u{ff11}\u{ff11}"] {
        assert!(!log.contains(digits), "{digits} in {log}");
    }
}

/// A bind the channel declines ends its consent then, by the failure
/// (`failed:<failure_code>`); a bind of the card again has a consent of its
/// own, which ends at its own end. Before, a failed bind's consent stayed
/// in force beside the next one's, and an unbind ended both at its own
/// time.
#[tokio::test]
async fn a_declined_binds_consent_ends_with_it() {
    const MC_DECLINE: &str = "5105105105105100";
    let app = spawn();
    app.bind("dora", "k-dec", &bind_body(MC_DECLINE))
        .await
        .assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    let failed_at = app.clock.now().to_rfc3339();
    let first = consents(&app, &bearer("aud", "auditor"), "dora").await;
    assert_eq!(first.len(), 1);
    assert!(
        first[0]["revoked_by"]
            .as_str()
            .is_some_and(|by| by.starts_with("failed:")),
        "{first:?}"
    );
    assert_eq!(first[0]["revoked_at"], failed_at.as_str());

    app.clock.advance_seconds(5);
    let body = bind_body(MC_DECLINE);
    // Bound again (the mock declines this number at every bind): the new
    // bind's consent ends at its own failure, the first keeps its time.
    app.bind("dora", "k-dec-2", &body)
        .await
        .assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    let both = consents(&app, &bearer("aud", "auditor"), "dora").await;
    assert_eq!(both.len(), 2);
    assert_eq!(both[0]["revoked_at"], first[0]["revoked_at"]);
    assert_eq!(both[1]["revoked_at"], app.clock.now().to_rfc3339().as_str());
    assert_ne!(both[0]["revoked_at"], both[1]["revoked_at"]);
}
