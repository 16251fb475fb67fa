//! Envelope encryption under AWS KMS (moto): the flow across two
//! instances, a KMS that goes away and comes back (with and without a
//! cached branch key), and a KMS that is not there at start-up. Needs `CARDBIND_TEST_KMS_ENDPOINT` (and MongoDB for
//! the two-instance test): run under `bash scripts/test-services.sh`.

// Test code: helpers outside #[test] fns fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use cardbind_tests::{
    assert_envelope, base_config, create_kms_key, free_port, idem_key, kms_endpoint,
    socket_addr_of, use_kms, user_id, Brand, Storage, TcpProxy, TestApp, TestCard,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_sealed_cards_are_found_again_by_another_instance_and_erased() {
    let Some(endpoint) = kms_endpoint() else {
        return;
    };
    let key = create_kms_key(&endpoint).await;
    let Some(a) = TestApp::spawn_on(Storage::Mongo, |c| {
        use_kms(c, &endpoint, &key);
        c.limits.binds_per_user_per_minute = 100;
    })
    .await
    else {
        return;
    };
    let user = user_id("kms");
    let card = TestCard::visa();
    let id = a.bind(&user, &card, &idem_key()).await.expect_status(201)["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(
        a.verify(&user, &id, "123456").await.expect_status(200)["status"],
        "active"
    );

    // A fresh instance (empty key cache) unwraps the fingerprint key from
    // KMS and recognises the card.
    let b = a.spawn_peer().await;
    b.bind(&user, &card, &idem_key())
        .await
        .assert_error(409, "card_already_bound");
    assert_eq!(
        b.unbind(&user, &id).await.expect_status(200)["status"],
        "inactive"
    );
    let again = b.bind(&user, &card, &idem_key()).await.expect_status(201);
    assert_eq!(
        again["id"],
        id.as_str(),
        "the same record, found by its keyed fingerprint"
    );
    b.verify(&user, &id, "123456").await.expect_status(200);
    let second = b
        .bind(&user, &TestCard::new(Brand::Amex), &idem_key())
        .await
        .expect_status(201)["id"]
        .as_str()
        .expect("id")
        .to_owned();
    b.verify(&user, &second, "123456").await.expect_status(200);
    assert_eq!(a.list_cards(&user).await.len(), 2);

    // Erasure: every card unbound, audited.
    let e = a
        .post_empty(&format!("/v1/admin/users/{user}/erase"), &a.admin_token())
        .await
        .expect_status(200);
    assert_eq!(e["user_id"], user.as_str(), "{e}");
    assert_eq!(e["unbound_cards"], 2, "{e}");
    let cards = b.list_cards(&user).await;
    assert_eq!(cards.len(), 2, "the erased user's ended cards are listed");
    for c in cards {
        assert_eq!(c["status"], "inactive", "{c}");
        assert_eq!(c["is_default"], false, "{c}");
    }
    let ev = a
        .get(
            &format!("/v1/audit/events?user_id={user}&action=user.erase"),
            &a.auditor_token(),
        )
        .await
        .expect_status(200);
    assert_eq!(ev["events"].as_array().map(Vec::len), Some(1), "{ev}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_outage_is_503_key_service_unavailable_and_writes_nothing() {
    let Some(endpoint) = kms_endpoint() else {
        return;
    };
    let key = create_kms_key(&endpoint).await;
    let mut proxy = TcpProxy::start(socket_addr_of(&endpoint)).await;
    let via = format!("http://127.0.0.1:{}", proxy.port);
    let app = TestApp::spawn(|c| {
        use_kms(c, &via, &key);
        c.keys.kms_timeout_ms = 1500;
        // No branch key kept in memory (as after its TTL has run out): a
        // new user's data key must be wrapped under the branch key, which
        // only KMS can unwrap.
        c.keys.branch_key_cache_ttl_seconds = 0;
        c.channels.mock.mode = cardbind::config::MockModeSetting::Instant;
    })
    .await;
    let alice = user_id("kms-ok");
    app.bind(&alice, &TestCard::visa(), &idem_key())
        .await
        .expect_status(201);

    proxy.cut().await;
    // A new user needs the branch key: KMS must be asked.
    let bob = user_id("kms-down");
    let card = TestCard::new(Brand::Mastercard);
    let k = idem_key();
    let started = Instant::now();
    let r = app.bind(&bob, &card, &k).await;
    assert_eq!(r.status, 503, "{}", r.describe());
    assert_eq!(
        assert_envelope(&r)["code"],
        "key_service_unavailable",
        "{}",
        r.describe()
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "answered after {:?}",
        started.elapsed()
    );
    assert!(
        !r.text().contains(&via) && !r.text().contains("127.0.0.1"),
        "internals in the body: {}",
        r.describe()
    );
    // The metrics tell the outage from a refusal.
    assert!(
        kms_calls_ended(&app, r#"outcome="unavailable""#) >= 1,
        "the failed KMS call is counted as unavailable"
    );
    assert_eq!(kms_calls_ended(&app, r#"outcome="refused""#), 0);
    // Reads need no key.
    assert_eq!(app.list_cards(&alice).await.len(), 1);
    // Nothing was written for the refused bind.
    assert!(
        app.list_cards(&bob).await.is_empty(),
        "a key-service failure writes nothing"
    );

    proxy.restore().await;
    // The same key can be retried (a 503 is not stored), and now binds.
    let deadline = Instant::now() + Duration::from_secs(30);
    let r = loop {
        let r = app.bind(&bob, &card, &k).await;
        if r.status != 503 || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(r.status, 201, "after KMS is back: {}", r.describe());
    assert_eq!(app.list_cards(&bob).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_outage_with_a_cached_branch_key_keeps_binding_new_users() {
    let Some(endpoint) = kms_endpoint() else {
        return;
    };
    let key = create_kms_key(&endpoint).await;
    let mut proxy = TcpProxy::start(socket_addr_of(&endpoint)).await;
    let via = format!("http://127.0.0.1:{}", proxy.port);
    let app = TestApp::spawn(|c| {
        use_kms(c, &via, &key);
        c.keys.kms_timeout_ms = 1500;
        c.keys.branch_key_cache_ttl_seconds = 3600;
        c.channels.mock.mode = cardbind::config::MockModeSetting::Instant;
    })
    .await;
    let alice = user_id("kms-cached");
    app.bind(&alice, &TestCard::visa(), &idem_key())
        .await
        .expect_status(201);
    let calls_before = kms_calls(&app);
    assert!(calls_before > 0, "the counter counts");

    proxy.cut().await;
    // The branch key is in memory: new users' data keys are made and
    // wrapped locally, no KMS call needed.
    for (i, brand) in [Brand::Mastercard, Brand::UnionPay, Brand::Amex]
        .into_iter()
        .enumerate()
    {
        let user = user_id(&format!("kms-cached-new{i}"));
        let v = app
            .bind(&user, &TestCard::new(brand), &idem_key())
            .await
            .expect_status(201);
        assert_eq!(v["status"], "active", "{v}");
        assert_eq!(app.list_cards(&user).await.len(), 1);
    }
    assert_eq!(
        kms_calls(&app),
        calls_before,
        "no KMS call while it was down"
    );
    proxy.restore().await;
}

/// `cardbind_kms_calls_total`, all operations, from the service's metrics.
fn kms_calls(app: &TestApp) -> u64 {
    kms_calls_ended(app, "")
}

/// `cardbind_kms_calls_total` of the series whose labels hold `labels`
/// (e.g. `outcome="unavailable"`; empty: all), all operations.
fn kms_calls_ended(app: &TestApp, labels: &str) -> u64 {
    let mut text = String::new();
    prometheus::TextEncoder::new()
        .encode_utf8(&app.running().built.state.metrics.gather(), &mut text)
        .expect("metrics text");
    text.lines()
        .filter(|l| l.starts_with("cardbind_kms_calls_total{") && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_kms_at_start_up_refuses_to_start() {
    // Nothing listens on this port: the start-up self-check cannot pass.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = base_config(&dir.path().join("data"));
    use_kms(
        &mut cfg,
        &format!("http://127.0.0.1:{}", free_port()),
        "alias/cardbind-test",
    );
    cfg.keys.kms_timeout_ms = 1000;
    cfg.server.dependency_wait_seconds = 3;
    let started = Instant::now();
    let res = tokio::time::timeout(Duration::from_secs(60), cardbind::cli::start(cfg))
        .await
        .expect("start gives up within 60 s");
    // It waited for the key service (tries 1 s each, pauses between them)
    // before giving up.
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "gave up after {:?}",
        started.elapsed()
    );
    let Err(e) = res else {
        panic!("the service started without its key service")
    };
    let msg = format!("{e:#}");
    assert!(
        msg.contains("self-check") || msg.to_ascii_lowercase().contains("key"),
        "the refusal says why: {msg}"
    );
    eprintln!("refused to start after {:?}: {msg}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_started_before_its_key_service_answers_waits_for_it() {
    let Some(endpoint) = kms_endpoint() else {
        return;
    };
    let key = create_kms_key(&endpoint).await;
    let mut proxy = TcpProxy::start(socket_addr_of(&endpoint)).await;
    proxy.cut().await;
    let via = format!("http://127.0.0.1:{}", proxy.port);
    let started = Instant::now();
    let ((app, took), ()) = tokio::join!(
        async {
            let app = TestApp::spawn(|c| {
                use_kms(c, &via, &key);
                c.keys.kms_timeout_ms = 1000;
                c.server.dependency_wait_seconds = 120;
                c.channels.mock.mode = cardbind::config::MockModeSetting::Instant;
            })
            .await;
            (app, started.elapsed())
        },
        async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            proxy.restore().await;
        }
    );
    assert!(
        took >= Duration::from_secs(3),
        "it could not have started before the key service answered: {took:?}"
    );
    let user = user_id("kms-late");
    let v = app
        .bind(&user, &TestCard::visa(), &idem_key())
        .await
        .expect_status(201);
    assert_eq!(v["status"], "active", "{v}");
}
