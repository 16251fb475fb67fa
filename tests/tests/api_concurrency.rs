//! Races over HTTP: one card bound many times at once, one idempotency key
//! used many times at once, concurrent default changes. Each runs in memory
//! and on MongoDB (FerretDB) when `CARDBIND_TEST_MONGODB_URI` is set.

// Test code: helpers outside #[test] fns fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::Arc;

use cardbind::config::Config;
use cardbind_tests::{idem_key, the_default, user_id, Brand, Storage, TestApp, TestCard};
use futures::future::join_all;

fn unlimited(cfg: &mut Config) {
    cfg.channels.mock.mode = cardbind::config::MockModeSetting::Instant;
    cfg.limits.binds_per_user_per_minute = 1000;
    cfg.limits.binds_per_ip_per_minute = 0;
    cfg.limits.binds_per_card_per_hour = 0;
    cfg.limits.cards_per_user = 50;
}

async fn one_card_bound_32_times_at_once(storage: Storage) {
    let Some(app) = TestApp::spawn_on(storage, unlimited).await else {
        return;
    };
    let app = Arc::new(app);
    let user = user_id("race");
    let card = TestCard::visa();
    let results = join_all((0..32).map(|_| {
        let (app, user, card) = (app.clone(), user.clone(), card.clone());
        tokio::spawn(async move { app.bind(&user, &card, &idem_key()).await })
    }))
    .await;
    let results: Vec<_> = results.into_iter().map(|r| r.expect("task")).collect();
    let created: Vec<_> = results.iter().filter(|r| r.status == 201).collect();
    assert_eq!(
        created.len(),
        1,
        "exactly one bind wins: {:?}",
        results.iter().map(|r| r.describe()).collect::<Vec<_>>()
    );
    for r in results.iter().filter(|r| r.status != 201) {
        match r.status {
            // Bound already, or still being bound by the winner (its
            // channel has not answered yet): retry shortly.
            409 => {
                let code = cardbind_tests::assert_envelope(r)["code"].clone();
                assert!(
                    code == "card_already_bound" || code == "conflict",
                    "a losing bind: {}",
                    r.describe()
                );
            }
            429 => {
                cardbind_tests::assert_envelope(r);
            }
            _ => panic!("a losing bind: {}", r.describe()),
        }
    }
    let cards = app.list_cards(&user).await;
    assert_eq!(cards.len(), 1, "one binding per (user, card): {cards:?}");
    assert_eq!(cards[0]["id"], created[0].json()["id"]);
    assert_eq!(cards[0]["status"], "active");
    assert_eq!(the_default(&cards).as_deref(), cards[0]["id"].as_str());
}

async fn one_key_16_times_at_once(storage: Storage) {
    let Some(app) = TestApp::spawn_on(storage, |c| {
        unlimited(c);
        // OTP mode: the response is the same whenever it is read.
        c.channels.mock.mode = cardbind::config::MockModeSetting::Otp;
    })
    .await
    else {
        return;
    };
    let app = Arc::new(app);
    let user = user_id("idem-race");
    let card = TestCard::new(Brand::Mastercard);
    let key = idem_key();
    let results = join_all((0..16).map(|_| {
        let (app, user, card, key) = (app.clone(), user.clone(), card.clone(), key.clone());
        tokio::spawn(async move { app.bind(&user, &card, &key).await })
    }))
    .await;
    let results: Vec<_> = results.into_iter().map(|r| r.expect("task")).collect();
    let first = &results[0];
    assert_eq!(first.status, 201, "{}", first.describe());
    for r in &results {
        assert_eq!(
            r.status,
            first.status,
            "every response the same: {} vs {}",
            r.describe(),
            first.describe()
        );
        assert_eq!(
            r.body,
            first.body,
            "byte-identical: {} vs {}",
            r.describe(),
            first.describe()
        );
    }
    let cards = app.list_cards(&user).await;
    assert_eq!(cards.len(), 1, "the work ran once: {cards:?}");
    // The audit log shows one creation.
    let ev = app
        .get(
            &format!("/v1/audit/events?user_id={user}"),
            &app.auditor_token(),
        )
        .await
        .expect_status(200);
    let creates = ev.to_string().matches("binding.create").count();
    assert_eq!(creates, 1, "one binding.create in the audit log: {ev}");
}

async fn concurrent_set_default(storage: Storage) {
    let Some(app) = TestApp::spawn_on(storage, unlimited).await else {
        return;
    };
    let app = Arc::new(app);
    let user = user_id("defaults");
    let mut ids = Vec::new();
    for _ in 0..8 {
        let v = app
            .bind(&user, &TestCard::visa(), &idem_key())
            .await
            .expect_status(201);
        ids.push(v["id"].as_str().expect("id").to_owned());
    }
    for round in 0..3 {
        let results = join_all(ids.iter().map(|id| {
            let (app, user, id) = (app.clone(), user.clone(), id.clone());
            tokio::spawn(async move { app.set_default(&user, &id).await })
        }))
        .await;
        for r in results {
            let r = r.expect("task");
            assert_eq!(r.status, 200, "round {round}: {}", r.describe());
        }
        let cards = app.list_cards(&user).await;
        assert_eq!(cards.len(), 8);
        let d = the_default(&cards)
            .unwrap_or_else(|| panic!("round {round}: no default after set-default: {cards:?}"));
        assert!(ids.contains(&d));
        // Every card agrees when read one by one, too.
        let mut defaults = BTreeSet::new();
        for id in &ids {
            if app.get_card(&user, id).await.expect_status(200)["is_default"] == true {
                defaults.insert(id.clone());
            }
        }
        assert_eq!(defaults.len(), 1, "round {round}: defaults {defaults:?}");
        assert!(defaults.contains(&d));
    }

    // Unbinding and setting defaults at once: still at most one default,
    // and it is an active card.
    let (unbind, keep): (Vec<_>, Vec<_>) = ids
        .iter()
        .cloned()
        .enumerate()
        .partition(|(i, _)| i % 2 == 0);
    let mut tasks = Vec::new();
    for (_, id) in &unbind {
        let (app, user, id) = (app.clone(), user.clone(), id.clone());
        tasks.push(tokio::spawn(async move { app.unbind(&user, &id).await }));
    }
    for (_, id) in &keep {
        let (app, user, id) = (app.clone(), user.clone(), id.clone());
        tasks.push(tokio::spawn(
            async move { app.set_default(&user, &id).await },
        ));
    }
    for r in join_all(tasks).await {
        let r = r.expect("task");
        assert_eq!(r.status, 200, "{}", r.describe());
    }
    let cards = app.list_cards(&user).await;
    let d = the_default(&cards)
        .unwrap_or_else(|| panic!("active cards remain, one must be default: {cards:?}"));
    assert!(
        keep.iter().any(|(_, id)| *id == d),
        "the default {d} is one of the active cards"
    );
    for c in &cards {
        if c["is_default"] == true {
            assert_eq!(c["status"], "active");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_one_card_bound_32_times_at_once() {
    one_card_bound_32_times_at_once(Storage::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_one_key_used_16_times_at_once() {
    one_key_16_times_at_once(Storage::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_concurrent_set_default() {
    concurrent_set_default(Storage::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mongo_one_card_bound_32_times_at_once() {
    one_card_bound_32_times_at_once(Storage::Mongo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mongo_one_key_used_16_times_at_once() {
    one_key_16_times_at_once(Storage::Mongo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mongo_concurrent_set_default() {
    concurrent_set_default(Storage::Mongo).await;
}
