//! Freezing and unfreezing are for admins only; the BIN lookup.

use super::*;
use cardbind_tests::Storage;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze_and_unfreeze_are_for_admins_only() {
    let app = TestApp::spawn(|c| {
        relaxed(c);
        c.channels.mock.mode = cardbind::config::MockModeSetting::Instant;
    })
    .await;
    let user = user_id("frozen");
    let a = id_of(
        &app.bind(&user, &TestCard::visa(), &idem_key())
            .await
            .expect_status(201),
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let b = id_of(
        &app.bind(&user, &TestCard::new(Brand::Amex), &idem_key())
            .await
            .expect_status(201),
    );
    assert_eq!(
        the_default(&app.list_cards(&user).await).as_deref(),
        Some(a.as_str())
    );

    for token in [
        app.service_token(),
        app.user_token(&user),
        app.auditor_token(),
    ] {
        app.admin_action(&token, &user, &a, "freeze")
            .await
            .assert_error(403, "forbidden");
        assert_eq!(
            app.get_card(&user, &a).await.expect_status(200)["status"],
            "active"
        );
    }
    let f = app
        .admin_action(&app.admin_token(), &user, &a, "freeze")
        .await
        .expect_status(200);
    assert_eq!(f["status"], "frozen", "{f}");
    assert_eq!(
        f["is_default"], false,
        "a frozen card is not the default: {f}"
    );
    let cards = app.list_cards(&user).await;
    assert_eq!(find_card(&cards, &a)["status"], "frozen");
    assert_eq!(
        the_default(&cards).as_deref(),
        Some(b.as_str()),
        "the default moves to the other active card"
    );

    // A frozen card cannot be made the default, nor frozen twice.
    app.set_default(&user, &a)
        .await
        .assert_error(409, "invalid_state_transition");
    app.admin_action(&app.admin_token(), &user, &a, "freeze")
        .await
        .assert_error(409, "invalid_state_transition");

    for token in [app.service_token(), app.user_token(&user)] {
        app.admin_action(&token, &user, &a, "unfreeze")
            .await
            .assert_error(403, "forbidden");
    }
    let u = app
        .admin_action(&app.admin_token(), &user, &a, "unfreeze")
        .await
        .expect_status(200);
    assert_eq!(u["status"], "active", "{u}");
    let cards = app.list_cards(&user).await;
    assert_eq!(
        the_default(&cards).as_deref(),
        Some(b.as_str()),
        "the default stays on B while B is active"
    );
    app.admin_action(&app.admin_token(), &user, &a, "unfreeze")
        .await
        .assert_error(409, "invalid_state_transition");
    app.admin_action(&app.admin_token(), &user, "card_nosuchcard", "freeze")
        .await
        .assert_error(404, "not_found");

    // The audit log has the operator's changes, for auditors only.
    let ev = app
        .get(
            &format!("/v1/audit/events?user_id={user}"),
            &app.auditor_token(),
        )
        .await
        .expect_status(200);
    let text = ev.to_string();
    assert!(
        text.contains("binding.freeze") && text.contains("binding.unfreeze"),
        "{ev}"
    );
    app.get("/v1/audit/events", &app.service_token())
        .await
        .assert_error(403, "forbidden");
    app.get("/v1/audit/events", &app.admin_token())
        .await
        .assert_error(403, "forbidden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bin_lookup() {
    let app = TestApp::spawn(|_| {}).await;
    let t = app.service_token();
    let cases = [
        ("411111", "visa"),
        ("555555", "mastercard"),
        ("378282", "amex"),
        ("621234", "unionpay"),
        ("353011", "jcb"),
        ("601111", "discover"),
        ("220024", "mir"),
    ];
    for (bin, brand) in cases {
        let v = app
            .get(&format!("/v1/bins/{bin}"), &t)
            .await
            .expect_status(200);
        assert_eq!(v["brand"], brand, "{bin}: {v}");
    }
    // Eight digits are a BIN too.
    assert_eq!(
        app.get("/v1/bins/41111111", &t).await.expect_status(200)["brand"],
        "visa"
    );
    // Not a BIN.
    for bad in ["4111", "41111a", "4111111111111111"] {
        let r = app.get(&format!("/v1/bins/{bad}"), &t).await;
        assert!((400..500).contains(&r.status), "{bad}: {}", r.describe());
        cardbind_tests::assert_envelope(&r);
    }
    // No scheme has this range.
    app.get("/v1/bins/999999", &t)
        .await
        .assert_error(404, "not_found");
    // Needs a token.
    app.send(reqwest::Method::GET, "/v1/bins/411111", None, &[], None)
        .await
        .assert_error(401, "unauthenticated");
}

/// A service on `storage` anchoring windows of one second, after a bind
/// and an idle spell: the service, the user and the anchors in its log.
async fn anchored_service(
    storage: Storage,
) -> Option<(TestApp, String, Vec<cardbind_usecases::anchors::Anchor>)> {
    use cardbind_usecases::anchors::Anchor;
    let app = TestApp::spawn_on(storage, |c| {
        relaxed(c);
        c.channels.mock.mode = cardbind::config::MockModeSetting::Instant;
        c.audit.anchor_interval_seconds = 1;
        c.audit.anchor_delay_seconds = 1;
    })
    .await?;
    let anchors = || async {
        let ev = app
            .get(
                "/v1/audit/events?action=audit.anchor&limit=500",
                &app.auditor_token(),
            )
            .await
            .expect_status(200);
        ev["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| Anchor::parse(e["detail"].as_str().unwrap()).unwrap())
            .collect::<Vec<_>>()
    };
    let user = user_id("anchored");
    app.bind(&user, &TestCard::visa(), &idem_key())
        .await
        .expect_status(201);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let first = loop {
        let found = anchors().await;
        if !found.is_empty() {
            break found;
        }
        assert!(std::time::Instant::now() < deadline, "no anchor in 20 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for a in &first {
        assert_eq!(a.end.unix_millis() - a.start.unix_millis(), 1000, "{a:?}");
        assert_eq!(a.start.unix_millis() % 1000, 0, "{a:?}");
    }
    // Idle now: the windows that hold only anchors get none, so the count
    // settles (the bind's windows are all closed and due by now).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let settled = anchors().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(anchors().await, settled);

    let usecases = &app.running().built.usecases;
    let r = cardbind::cli::verify_audit_anchors(usecases, 400)
        .await
        .unwrap();
    assert_eq!(r.mismatch, None);
    assert_eq!(r.checked, settled.len() as u64);
    assert_eq!(r.newest_end, settled.iter().map(|a| a.end).max());
    // The log lines name the same anchors, and the store matches them.
    let log = own_anchor_lines(&settled);
    let l = cardbind::cli::verify_logged_anchors(usecases, 400, &log)
        .await
        .unwrap();
    assert_eq!(
        (l.found, l.report.checked),
        (settled.len() as u64, settled.len() as u64)
    );
    assert!(l.report.mismatch.is_none(), "{l:?}");
    Some((app, user, settled))
}

/// The captured log lines (of every app of this test binary) that name one
/// of `anchors`.
fn own_anchor_lines(anchors: &[cardbind_usecases::anchors::Anchor]) -> String {
    cardbind_tests::leaks::logs()
        .lines()
        .filter(|l| anchors.iter().any(|a| l.contains(&a.detail())))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_anchors_closed_audit_windows_and_audit_verify_checks_them() {
    let (mut app, user, settled) = anchored_service(Storage::Embedded).await.unwrap();
    // Behind the service's back, in the embedded file: the user's newest
    // link goes, with its events. The chain's hashes still verify, but the
    // link before it, now the newest, holds no copy of the wallet its hash
    // covers (the embedded store keeps one in the newest link only), which
    // the walk reports; and the anchor of its window does not match.
    let config = app.config.clone();
    app.stop().await;
    let db = rusqlite::Connection::open(config.server.data_dir.join("cardbind.sqlite3")).unwrap();
    let seq: i64 = db
        .query_row(
            "SELECT max(seq) FROM links WHERE chain = ?1",
            [&user],
            |r| r.get(0),
        )
        .unwrap();
    for table in ["events", "links"] {
        let n = db
            .execute(
                &format!("DELETE FROM {table} WHERE chain = ?1 AND seq = ?2"),
                rusqlite::params![&user, seq],
            )
            .unwrap();
        assert!(n >= 1, "{table}");
    }
    drop(db);
    let built = cardbind::compose::build(&config).await.unwrap();
    // The chain breaks at the link now newest: it holds no wallet though
    // its hash covers one.
    let no_wallet = Some(cardbind_ports::audit::ChainBreak {
        chain: cardbind_ports::audit::ChainId::parse(&user).unwrap(),
        seq: u64::try_from(seq - 1).unwrap(),
        reason: cardbind_ports::audit::STORED_WALLET_MISSING,
    });
    let r = cardbind::cli::verify_audit_log(&built.usecases, 500)
        .await
        .unwrap();
    assert_eq!(r.broken, no_wallet, "{r:?}");
    let r = cardbind::cli::verify_audit_anchors(&built.usecases, 400)
        .await
        .unwrap();
    let m = r.mismatch.expect("the deleted newest link is found");
    assert_eq!(m.links + 1, m.anchor.links, "{m:?}");

    // Then the anchors too: the service chain's links from its first
    // anchor on. The store's anchors now find nothing wrong (the walk
    // still reports the user's chain); the anchors in the service's log
    // lines do.
    let db = rusqlite::Connection::open(config.server.data_dir.join("cardbind.sqlite3")).unwrap();
    let first_anchor: i64 = db
        .query_row(
            "SELECT min(seq) FROM events WHERE chain = '@system' AND action = 'audit.anchor'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    for table in ["events", "links"] {
        db.execute(
            &format!("DELETE FROM {table} WHERE chain = '@system' AND seq >= ?1"),
            [first_anchor],
        )
        .unwrap();
    }
    drop(db);
    let built = cardbind::compose::build(&config).await.unwrap();
    let uc = &built.usecases;
    let r = cardbind::cli::verify_audit_log(uc, 500).await.unwrap();
    assert_eq!(r.broken, no_wallet, "{r:?}");
    let r = cardbind::cli::verify_audit_anchors(uc, 400).await.unwrap();
    assert_eq!((r.checked, r.mismatch), (0, None));
    let log = own_anchor_lines(&settled);
    let l = cardbind::cli::verify_logged_anchors(uc, 400, &log)
        .await
        .unwrap();
    assert_eq!(l.found, settled.len() as u64, "{log}");
    let m = l
        .report
        .mismatch
        .expect("the log's anchor still counts the deleted link");
    assert_eq!(m.links + 1, m.anchor.links, "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_anchors_audit_windows_on_mongodb_too() {
    // Skipped (printed) only where no MongoDB is configured; under CI=true
    // a missing one fails.
    let Some((app, _, _)) = anchored_service(Storage::Mongo).await else {
        return;
    };
    // `audit verify` reads MongoDB without making anything: an index
    // dropped behind its back stays dropped through the check (a read-only
    // role will do), where an admin command that writes makes it again.
    let config = app.config.clone();
    let client = mongodb::Client::with_uri_str(&config.storage.uri)
        .await
        .unwrap();
    let seen = client
        .database(&config.storage.database)
        .collection::<mongodb::bson::Document>("seen_ids");
    let names = || async { seen.list_index_names().await.unwrap() };
    let dropped = names()
        .await
        .into_iter()
        .find(|n| n != "_id_")
        .expect("an index of the seen ids");
    seen.drop_index(&dropped).await.unwrap();
    let usecases = cardbind::compose::usecases_for_reading(&config)
        .await
        .unwrap();
    let r = cardbind::cli::verify_audit_log(&usecases, 500)
        .await
        .unwrap();
    assert!(r.broken.is_none() && r.links_checked > 0, "{r:?}");
    assert!(
        !names().await.contains(&dropped),
        "the check made {dropped}"
    );
    cardbind::compose::existing_stores(&config).await.unwrap();
    assert!(
        names().await.contains(&dropped),
        "an admin command makes it"
    );
}
