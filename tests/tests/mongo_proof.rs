//! What MongoDB storage really holds and how it behaves across instances
//! and outages. Needs `CARDBIND_TEST_MONGODB_URI` (and, for the outage,
//! `CARDBIND_TEST_FERRETDB_BIN`): run under `bash scripts/test-services.sh`.

// Test code: helpers outside #[test] fns fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use cardbind_tests::{
    assert_envelope, fresh_rate_window, has_digit_run, idem_key, mongo_documents, user_id, Brand,
    OwnFerretDb, Storage, TestApp, TestCard,
};
use futures::future::join_all;
use mongodb::bson::{Bson, Document};
use serde_json::json;

/// Every key and string value in a BSON value, recursively.
fn strings(b: &Bson, out: &mut Vec<String>) {
    match b {
        Bson::String(s) => out.push(s.clone()),
        Bson::Document(d) => {
            for (k, v) in d {
                out.push(k.clone());
                strings(v, out);
            }
        }
        Bson::Array(a) => a.iter().for_each(|v| strings(v, out)),
        Bson::JavaScriptCode(s) | Bson::Symbol(s) => out.push(s.clone()),
        _ => {}
    }
}

/// Every (key, value) pair of a document, recursively.
fn fields_of(d: &Document, out: &mut Vec<(String, Bson)>) {
    for (k, v) in d {
        out.push((k.clone(), v.clone()));
        match v {
            Bson::Document(inner) => fields_of(inner, out),
            Bson::Array(a) => {
                for x in a {
                    if let Bson::Document(inner) = x {
                        fields_of(inner, out);
                    }
                }
            }
            _ => {}
        }
    }
}

fn contains_bytes(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_card_data_in_clear_in_any_collection() {
    let Some(app) = TestApp::spawn_on(Storage::Mongo, |c| {
        c.channels.mock.mode = cardbind::config::MockModeSetting::Instant;
        c.channels
            .mock
            .card_modes
            .insert("0002".into(), cardbind::config::MockModeSetting::Decline);
        c.channels
            .mock
            .card_modes
            .insert("0003".into(), cardbind::config::MockModeSetting::Otp);
        c.limits.binds_per_user_per_minute = 100;
    })
    .await
    else {
        return;
    };
    let alice = user_id("alice");
    let bob = user_id("bob");
    let visa = TestCard::visa();
    let amex = TestCard::new(Brand::Amex);
    let otp = TestCard::ending(Brand::UnionPay, "0003");
    let declined = TestCard::ending(Brand::Mastercard, "0002");
    let unbound = TestCard::new(Brand::Jcb);
    let bobs = TestCard::new(Brand::Discover);
    let mut cards = vec![
        visa.clone(),
        amex.clone(),
        otp.clone(),
        declined.clone(),
        unbound.clone(),
        bobs.clone(),
    ];

    let k = idem_key();
    app.bind(&alice, &visa, &k).await.expect_status(201);
    app.bind(&alice, &visa, &k).await.expect_status(201); // a replay
    app.bind(&alice, &amex, &idem_key())
        .await
        .expect_status(201);
    let id = app.bind(&alice, &otp, &idem_key()).await.expect_status(201)["id"]
        .as_str()
        .expect("id")
        .to_owned();
    app.verify(&alice, &id, "000000")
        .await
        .assert_error(422, "invalid_otp");
    app.verify(&alice, &id, "123456").await.expect_status(200);
    app.bind(&alice, &declined, &idem_key())
        .await
        .assert_error(422, "channel_rejected");
    let uid = app
        .bind(&alice, &unbound, &idem_key())
        .await
        .expect_status(201)["id"]
        .as_str()
        .expect("id")
        .to_owned();
    app.unbind(&alice, &uid).await.expect_status(200);
    app.bind(&alice, &unbound, &idem_key())
        .await
        .expect_status(201);
    app.bind(&bob, &bobs, &idem_key()).await.expect_status(201);
    // Refused requests that carried card data (and were keyed).
    let refused = TestCard::visa();
    let mut body = refused.body();
    body["phone"] = json!("12");
    app.bind_body(&bob, &body, &idem_key())
        .await
        .assert_error(400, "invalid_phone");
    cards.push(refused);
    // An admin and an auditor read things too.
    app.admin_action(
        &app.admin_token(),
        &bob,
        app.list_cards(&bob).await[0]["id"].as_str().expect("id"),
        "freeze",
    )
    .await
    .expect_status(200);
    app.get("/v1/audit/events", &app.auditor_token())
        .await
        .expect_status(200);

    let docs = mongo_documents(&app.config.storage.uri, &app.config.storage.database).await;
    assert!(
        !docs.is_empty(),
        "no documents in {}",
        app.config.storage.database
    );
    let collections: std::collections::BTreeSet<&str> =
        docs.iter().map(|(c, _)| c.as_str()).collect();
    eprintln!("collections: {collections:?}, {} documents", docs.len());

    // We are looking at the right data: the parts stored in clear are there.
    for c in &cards[..6] {
        let found = docs.iter().any(|(_, d)| {
            let mut s = Vec::new();
            strings(&Bson::Document(d.clone()), &mut s);
            s.iter().any(|v| v == c.last4())
        });
        assert!(
            found,
            "no document holds last4 {} of a bound card",
            c.last4()
        );
    }

    for (coll, doc) in &docs {
        let mut bytes = Vec::new();
        doc.to_writer(&mut bytes).expect("bson bytes");
        let json = Bson::Document(doc.clone())
            .into_relaxed_extjson()
            .to_string();
        let mut s = Vec::new();
        strings(&Bson::Document(doc.clone()), &mut s);
        for c in &cards {
            for (what, secret) in c.secrets() {
                assert!(
                    !contains_bytes(&bytes, secret.as_bytes()),
                    "{coll}: the {what} is in clear in the BSON bytes: {json}"
                );
                assert!(
                    !json.contains(&secret),
                    "{coll}: the {what} is in clear: {json}"
                );
            }
            assert!(
                !c.shows_hidden_digits(&json),
                "{coll}: the digits a mask hides are in clear: {json}"
            );
            let holder = c.holder_name.as_bytes();
            assert!(
                !contains_bytes(&bytes, holder),
                "{coll}: the holder name is in clear: {json}"
            );
            // The CVV is short: look for it as a stored string (a value of
            // its own, a quoted string inside a serialized text, or a BSON
            // string element in the raw bytes), not as any digit run.
            let mut element = ((c.cvv.len() + 1) as i32).to_le_bytes().to_vec();
            element.extend_from_slice(c.cvv.as_bytes());
            element.push(0);
            assert!(
                !contains_bytes(&bytes, &element),
                "{coll}: the CVV {} is stored as a string: {json}",
                c.cvv
            );
            for v in &s {
                let quoted = format!("\"{}\"", c.cvv);
                assert!(
                    v.trim() != c.cvv
                        && !v.contains(&quoted)
                        && !has_digit_run(v, &format!("cvv={}", c.cvv)),
                    "{coll}: the CVV {} is stored: {v:?} in {json}",
                    c.cvv
                );
                assert!(
                    !v.contains(&c.phone[3..]),
                    "{coll}: the phone's last 8 digits are stored: {v:?}"
                );
            }
        }
        let mut fields = Vec::new();
        fields_of(doc, &mut fields);
        for (k, v) in fields {
            let l = k.to_ascii_lowercase();
            assert!(
                l != "cvv" && l != "cvc" && l != "cvv2",
                "{coll}: a field named {k}: {json}"
            );
            if ["pan", "card_number", "id_number", "phone", "holder_name"].contains(&l.as_str()) {
                assert!(
                    matches!(v, Bson::Binary(_) | Bson::Null),
                    "{coll}: card data field {k} is not sealed binary: {v:?}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_idempotency_and_rate_limits() {
    let Some(a) = TestApp::spawn_on(Storage::Mongo, |c| {
        c.channels.mock.mode = cardbind::config::MockModeSetting::Instant
    })
    .await
    else {
        return;
    };
    let b = a.spawn_peer().await;
    assert_ne!(a.base_url, b.base_url);

    // A key used on one is replayed by the other, byte for byte.
    let user = user_id("peer");
    let card = TestCard::visa();
    let key = idem_key();
    let first = a.bind(&user, &card, &key).await;
    first.expect_status(201);
    let replay = b.bind(&user, &card, &key).await;
    assert_eq!(replay.status, 201, "{}", replay.describe());
    assert_eq!(
        replay.body, first.body,
        "the peer replays the stored response"
    );
    b.bind(&user, &TestCard::visa(), &key)
        .await
        .assert_error(409, "idempotency_key_reused");
    assert_eq!(b.list_cards(&user).await.len(), 1);
    assert_eq!(
        a.list_cards(&user).await,
        b.list_cards(&user).await,
        "both read the same store"
    );

    // One key sent to both at once: the work runs once.
    let a = Arc::new(a);
    let b = Arc::new(b);
    let user2 = user_id("peer2");
    let card2 = TestCard::new(Brand::Mastercard);
    let key2 = idem_key();
    let results = join_all((0..8).map(|i| {
        let app = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (user, card, key) = (user2.clone(), card2.clone(), key2.clone());
        tokio::spawn(async move { app.bind(&user, &card, &key).await })
    }))
    .await;
    let results: Vec<_> = results.into_iter().map(|r| r.expect("task")).collect();
    for r in &results {
        assert_eq!(r.status, 201, "{}", r.describe());
        assert_eq!(r.body, results[0].body, "identical across instances");
    }
    assert_eq!(a.list_cards(&user2).await.len(), 1);

    // Three binds a minute per user, counted across both instances.
    fresh_rate_window().await;
    let user3 = user_id("peer3");
    a.bind(&user3, &TestCard::visa(), &idem_key())
        .await
        .expect_status(201);
    b.bind(&user3, &TestCard::visa(), &idem_key())
        .await
        .expect_status(201);
    a.bind(&user3, &TestCard::visa(), &idem_key())
        .await
        .expect_status(201);
    let r = b.bind(&user3, &TestCard::visa(), &idem_key()).await;
    r.assert_error(429, "rate_limited");
    assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
    a.bind(&user3, &TestCard::visa(), &idem_key())
        .await
        .assert_error(429, "rate_limited");
    assert_eq!(a.list_cards(&user3).await.len(), 3);

    // A default set on one is seen by the other.
    let ids: Vec<String> = a
        .list_cards(&user3)
        .await
        .iter()
        .map(|c| c["id"].as_str().expect("id").to_owned())
        .collect();
    b.set_default(&user3, &ids[2]).await.expect_status(200);
    assert_eq!(
        cardbind_tests::the_default(&a.list_cards(&user3).await).as_deref(),
        Some(ids[2].as_str())
    );
}

/// Polls `f` until it gives `Some`, up to `limit`.
async fn eventually<T, F, Fut>(limit: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_outage_is_503_and_the_same_instance_recovers() {
    let Some(mut ferret) = OwnFerretDb::start().await else {
        return;
    };
    let app = TestApp::spawn_on(Storage::MongoAt(ferret.uri()), |c| {
        c.channels.mock.mode = cardbind::config::MockModeSetting::Instant;
        c.storage.timeout_ms = 1500;
        c.limits.binds_per_user_per_minute = 100;
    })
    .await
    .expect("an explicit URI never skips");
    let user = user_id("outage");
    let (c1, c2, c3, c4) = (
        TestCard::visa(),
        TestCard::new(Brand::Amex),
        TestCard::new(Brand::UnionPay),
        TestCard::new(Brand::Jcb),
    );
    let id1 = app.bind(&user, &c1, &idem_key()).await.expect_status(201)["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let id2 = app.bind(&user, &c2, &idem_key()).await.expect_status(201)["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(app.list_cards(&user).await.len(), 2);

    ferret.stop().await;

    // Every storage-backed request: 503 storage_unavailable, promptly.
    let k3 = idem_key();
    let token = app.service_token();
    let attempts = vec![
        (
            "list",
            app.get(&format!("/v1/users/{user}/cards"), &token).await,
        ),
        ("get", app.get_card(&user, &id1).await),
        ("bind", app.bind(&user, &c3, &k3).await),
        ("default", app.set_default(&user, &id2).await),
        ("unbind", app.unbind(&user, &id1).await),
    ];
    for (what, r) in &attempts {
        assert_eq!(r.status, 503, "{what} during the outage: {}", r.describe());
        assert_eq!(
            assert_envelope(r)["code"],
            "storage_unavailable",
            "{what}: {}",
            r.describe()
        );
        assert!(
            r.elapsed < Duration::from_secs(10),
            "{what} took {:?}",
            r.elapsed
        );
        assert!(
            !r.text().contains("127.0.0.1") && !r.text().to_ascii_lowercase().contains("mongo"),
            "{what}: internals in the body: {}",
            r.describe()
        );
    }
    let live = app
        .send(reqwest::Method::GET, "/healthz", None, &[], None)
        .await;
    assert_eq!(
        live.status,
        200,
        "liveness does not depend on storage: {}",
        live.describe()
    );

    ferret.restart().await;

    // The same instance serves again once the driver reconnects.
    let back = eventually(Duration::from_secs(60), || async {
        let r = app.get(&format!("/v1/users/{user}/cards"), &token).await;
        (r.status == 200).then_some(r)
    })
    .await
    .expect("the instance serves again within 60 s of the restart");
    let cards = back.json()["cards"].as_array().cloned().unwrap_or_default();
    let mut ids: Vec<&str> = cards.iter().filter_map(|c| c["id"].as_str()).collect();
    ids.sort_unstable();
    let mut want = vec![id1.as_str(), id2.as_str()];
    want.sort_unstable();
    assert_eq!(
        ids, want,
        "no binding lost or added by the outage: {cards:?}"
    );
    for c in &cards {
        assert_eq!(c["status"], "active", "{c}");
    }
    assert_eq!(
        cardbind_tests::the_default(&cards).as_deref(),
        Some(id1.as_str()),
        "the default survived"
    );

    // The bind refused during the outage can be retried with its key.
    let r = app.bind(&user, &c3, &k3).await;
    assert_eq!(r.status, 201, "retrying the refused bind: {}", r.describe());
    let again = app.bind(&user, &c3, &k3).await;
    assert_eq!(again.body, r.body, "and its key now replays");
    app.bind(&user, &c4, &idem_key()).await.expect_status(201);
    let cards = app.list_cards(&user).await;
    assert_eq!(cards.len(), 4, "{cards:?}");
    // The four cards, each once (brands differ: two random last fours may
    // be equal).
    let mut listed: Vec<(String, String)> = cards
        .iter()
        .map(|c| (c["brand"].to_string(), c["last4"].to_string()))
        .collect();
    listed.sort_unstable();
    let mut bound: Vec<(String, String)> = [&c1, &c2, &c3, &c4]
        .iter()
        .map(|c| {
            (
                serde_json::Value::from(c.brand.api_name()).to_string(),
                serde_json::Value::from(c.last4()).to_string(),
            )
        })
        .collect();
    bound.sort_unstable();
    assert_eq!(listed, bound, "no duplicates: {cards:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_a_storage_outage() {
    let Some(mut ferret) = OwnFerretDb::start().await else {
        return;
    };
    let app = TestApp::spawn_on(Storage::MongoAt(ferret.uri()), |c| {
        c.storage.timeout_ms = 1500
    })
    .await
    .expect("an explicit URI never skips");
    let ready = || async {
        app.send(reqwest::Method::GET, "/readyz", None, &[], None)
            .await
    };
    assert_eq!(ready().await.status, 200, "{}", ready().await.describe());
    ferret.stop().await;
    // An answer is given again for a second (probes share one check).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = ready().await;
    assert_eq!(
        r.status,
        503,
        "readiness reports the outage: {}",
        r.describe()
    );
    assert_eq!(assert_envelope(&r)["code"], "storage_unavailable");
    assert!(r.elapsed < Duration::from_secs(10), "took {:?}", r.elapsed);
    ferret.restart().await;
    let ok = eventually(Duration::from_secs(60), || async {
        (ready().await.status == 200).then_some(())
    })
    .await;
    assert!(ok.is_some(), "/readyz is 200 again after the restart");
}

/// `cardbind_background_runs_total{task, outcome}` from the service's
/// `/metrics`, by task.
async fn background_runs(app: &TestApp, outcome: &str) -> Vec<(String, u64)> {
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics text");
    ["purge", "audit_anchor", "bin_refresh"]
        .iter()
        .map(|task| {
            let series =
                format!("cardbind_background_runs_total{{outcome=\"{outcome}\",task=\"{task}\"}} ");
            let n = text
                .lines()
                .find_map(|l| l.strip_prefix(series.as_str())?.parse().ok())
                .unwrap_or_else(|| panic!("{series} not exported"));
            ((*task).to_owned(), n)
        })
        .collect()
}

/// The retention purge, the audit anchoring and the BIN refresh count
/// their runs: `ok` while the store answers, `failed` while it is down
/// (each a warn line too, and no alert could see them before), `ok` again
/// once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_tasks_count_their_failed_runs_through_a_storage_outage() {
    let Some(mut ferret) = OwnFerretDb::start().await else {
        return;
    };
    let app = TestApp::spawn_on(Storage::MongoAt(ferret.uri()), |c| {
        c.storage.timeout_ms = 1500;
        c.server.purge_interval_seconds = 1;
        c.audit.anchor_interval_seconds = 1;
        c.audit.anchor_delay_seconds = 1;
        c.bins.refresh_interval_seconds = 1;
    })
    .await
    .expect("an explicit URI never skips");
    let every_task = |runs: &[(String, u64)], floor: &[(String, u64)]| {
        runs.iter().zip(floor).all(|((_, n), (_, f))| n > f)
    };
    let none = background_runs(&app, "ok")
        .await
        .iter()
        .map(|(t, _)| (t.clone(), 0))
        .collect::<Vec<_>>();
    let ok = eventually(Duration::from_secs(30), || async {
        let runs = background_runs(&app, "ok").await;
        every_task(&runs, &none).then_some(runs)
    })
    .await
    .expect("each task ran and counted ok within 30 s");
    assert!(
        background_runs(&app, "failed")
            .await
            .iter()
            .all(|(_, n)| *n == 0),
        "no run failed while the store answered"
    );

    ferret.stop().await;
    let failed = eventually(Duration::from_secs(60), || async {
        let runs = background_runs(&app, "failed").await;
        every_task(&runs, &none).then_some(runs)
    })
    .await
    .expect("each task counted a failed run within 60 s of the outage");

    ferret.restart().await;
    // Runs that began before the restart may still fail: the oks count
    // again once the store answers.
    let during = background_runs(&app, "ok").await;
    let again = eventually(Duration::from_secs(90), || async {
        let runs = background_runs(&app, "ok").await;
        every_task(&runs, &during).then_some(runs)
    })
    .await;
    assert!(
        again.is_some(),
        "each task counts ok again after the restart (ok before {ok:?}, failed {failed:?}, at the restart {during:?})"
    );
}

/// An admin command pointed at a database the service never ran on (a
/// mistyped `storage.database`) is refused and makes nothing there; on the
/// service's database it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_command_refuses_a_database_the_service_never_made() {
    let Some(uri) = cardbind_tests::mongo_uri() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = cardbind_tests::base_config(dir.path());
    config.storage.kind = cardbind::config::StorageKind::Mongodb;
    config.storage.uri = uri.clone();
    config.storage.database = cardbind_tests::fresh_db_name();
    config.auth.jwt_secret = Some("an-admin-test-secret-of-32-characters-or-more".into());
    let refused = match cardbind::compose::build_existing(&config).await {
        Ok(_) => panic!("an admin command ran on a database the service never made"),
        Err(e) => e.to_string(),
    };
    assert!(refused.contains("holds no cardbind store"), "{refused}");
    let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
    let names = client.list_database_names().await.unwrap();
    assert!(
        !names.contains(&config.storage.database),
        "nothing made: {names:?}"
    );
    // The service's first start makes the store; then the command runs.
    cardbind::compose::build(&config)
        .await
        .expect("serve's start");
    cardbind::compose::build_existing(&config)
        .await
        .expect("an admin command on the service's database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_started_before_its_database_waits_for_it() {
    let Some(mut ferret) = OwnFerretDb::start().await else {
        return;
    };
    ferret.stop().await;
    let uri = ferret.uri();
    let started = Instant::now();
    let ((app, took), ()) = tokio::join!(
        async {
            let app = TestApp::spawn_on(Storage::MongoAt(uri), |c| {
                c.storage.timeout_ms = 1000;
                c.server.dependency_wait_seconds = 120;
            })
            .await;
            (app, started.elapsed())
        },
        async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            ferret.restart().await;
        }
    );
    let app = app.expect("an explicit URI never skips");
    assert!(
        took >= Duration::from_secs(3),
        "it could not have started before the database answered: {took:?}"
    );
    let user = user_id("late-db");
    app.bind(&user, &TestCard::visa(), &idem_key())
        .await
        .expect_status(201);
    assert_eq!(app.list_cards(&user).await.len(), 1);
}
