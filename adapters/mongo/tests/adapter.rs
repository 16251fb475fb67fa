//! What the contract suite does not cover: driver error mapping, timeouts
//! against a dead server, what is (and is not) stored, recovery from a
//! writer that crashed between its commit and its document write, and
//! races between separate clients (separate "instances").

// Test code: a failed expectation is a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use cardbind_domain::Timestamp;
use cardbind_mongo::{MongoConfig, MongoStore};
use cardbind_ports::audit::{verify_chain, AuditFilter, AuditLog};
use cardbind_ports::store::{BindingStore, DataKeyStore, RateCounter};
use cardbind_ports::testkit::{
    audit_event, binding, changed, fingerprint, race, unique, user_id, wrapped_key, BASE,
};
use cardbind_ports::StoreError;
use common::{fresh_store, raw_db, uri};
use mongodb::bson::{doc, Bson, Document};

fn at(s: i64) -> Timestamp {
    BASE.plus_seconds(s)
}

/// A port free of listeners (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[tokio::test]
async fn dead_server_is_unavailable_within_seconds() {
    let port = closed_port();
    let store = MongoStore::connect(
        &format!("mongodb://127.0.0.1:{port}/"),
        "nowhere",
        Duration::from_secs(5),
    )
    .await
    .expect("constructing does not contact the server");
    let user = user_id(&unique("u"));
    let b = binding(&unique("b"), &user, &fingerprint(), at(0));

    let started = Instant::now();
    let r = store.insert(&b).await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    let r = BindingStore::get(&store, &b.id).await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    let r = store.ensure_indexes().await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    let r = store.ping().await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    let elapsed = started.elapsed();
    // Four operations, each bounded by the 2 s server selection timeout.
    assert!(elapsed < Duration::from_secs(12), "took {elapsed:?}");
}

#[tokio::test]
async fn operation_timeout_bounds_a_call() {
    let port = closed_port();
    let mut cfg = MongoConfig::new(
        format!("mongodb://127.0.0.1:{port}/"),
        "nowhere",
        Duration::from_millis(300),
    );
    cfg.server_selection_timeout = Duration::from_secs(30);
    let store = MongoStore::with_config(cfg).await.expect("config");
    let started = Instant::now();
    let r = store.increment("k", at(60)).await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn ensure_indexes_is_idempotent() {
    let Some(uri) = uri() else { return };
    let (store, name) = fresh_store(&uri).await;
    store.ensure_indexes().await.expect("again");
    store.ensure_indexes().await.expect("and again");
    let db = raw_db(&uri, &name).await;
    let names = db
        .collection::<Document>("bindings")
        .list_index_names()
        .await
        .expect("indexes");
    assert!(
        names.iter().any(|n| n == "user_fingerprint_unique"),
        "{names:?}"
    );
}

#[tokio::test]
async fn duplicate_key_maps_to_duplicate() {
    let Some(uri) = uri() else { return };
    let (store, _) = fresh_store(&uri).await;
    let user = user_id(&unique("u"));
    let fp = fingerprint();
    let b = binding(&unique("b"), &user, &fp, at(0));
    store.insert(&b).await.expect("insert");
    assert_eq!(
        store.insert(&b).await,
        Err(StoreError::Duplicate),
        "same _id"
    );
    let other = binding(&unique("b"), &user, &fp, at(0));
    assert_eq!(
        store.insert(&other).await,
        Err(StoreError::Duplicate),
        "same (user, card)"
    );
}

#[tokio::test]
async fn binding_is_stored_as_sealed_binary_without_cvv() {
    let Some(uri) = uri() else { return };
    let (store, name) = fresh_store(&uri).await;
    let user = user_id(&unique("u"));
    let b = binding(&unique("b"), &user, &fingerprint(), at(0));
    store.insert(&b).await.expect("insert");
    let db = raw_db(&uri, &name).await;
    let raw = db
        .collection::<Document>("bindings")
        .find_one(doc! { "_id": b.id.as_str() })
        .await
        .expect("find")
        .expect("stored");
    let sealed = raw.get_document("sealed").expect("sealed");
    for f in ["pan", "holder_name", "id_number", "phone"] {
        assert!(
            matches!(sealed.get(f), Some(Bson::Binary(_))),
            "{f}: {:?}",
            sealed.get(f)
        );
    }
    let text = format!("{raw:?}").to_lowercase();
    assert!(!text.contains("cvv"), "{text}");
    assert!(matches!(raw.get("updated_at"), Some(Bson::DateTime(_))));
    assert_eq!(raw.get_i64("version"), Ok(0));
}

#[tokio::test]
async fn committed_change_is_rolled_forward_after_a_crash() {
    let Some(uri) = uri() else { return };
    let (store, name) = fresh_store(&uri).await;
    let user = user_id(&unique("u"));
    let b = binding(&unique("b"), &user, &fingerprint(), at(0));
    store.insert(&b).await.expect("insert");
    let next = changed(&b, |p| p.channel_ref = Some("agr-1".into()));
    // A writer that committed its change (the binding_changes insert) and
    // died before writing the binding document: copy its commit by hand.
    let scratch = {
        let (s, n) = fresh_store(&uri).await;
        s.insert(&b).await.expect("scratch insert");
        s.update(&next, 0).await.expect("scratch update");
        raw_db(&uri, &n).await
    };
    let change = scratch
        .collection::<Document>("binding_changes")
        .find_one(doc! { "binding_id": b.id.as_str() })
        .await
        .expect("find")
        .expect("change");
    let db = raw_db(&uri, &name).await;
    db.collection::<Document>("binding_changes")
        .insert_one(change)
        .await
        .expect("plant commit");
    // The stored document is still version 0; every read sees version 1.
    let got = BindingStore::get(&store, &b.id)
        .await
        .expect("get")
        .expect("some");
    assert_eq!(got, next);
    // A writer that read version 0 before the crash conflicts.
    let other = changed(&b, |p| p.channel_ref = Some("agr-2".into()));
    assert_eq!(store.update(&other, 0).await, Err(StoreError::Conflict));
    assert_eq!(
        store
            .find_by_fingerprint(&user, &b.fingerprint)
            .await
            .expect("find"),
        Some(next.clone())
    );
}

#[tokio::test]
async fn two_clients_race_on_one_binding() {
    let Some(uri) = uri() else { return };
    let (a, name) = fresh_store(&uri).await;
    let b_store = MongoStore::connect(&uri, &name, common::OP_TIMEOUT)
        .await
        .expect("second");
    let user = user_id(&unique("u"));
    let b = binding(&unique("b"), &user, &fingerprint(), at(0));
    a.insert(&b).await.expect("insert");
    let mut current = b.clone();
    for round in 0..10u64 {
        let stores = [a.clone(), b_store.clone()];
        let base = current.clone();
        let results = race(8, move |i| {
            let s = stores[i % 2].clone();
            let next = changed(&base, |p| p.channel_ref = Some(format!("r{round}-w{i}")));
            async move { s.update(&next, round).await.map(|()| next) }
        })
        .await;
        let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        assert!(results
            .iter()
            .all(|r| matches!(r, Ok(_) | Err(StoreError::Conflict))));
        let stored = BindingStore::get(&b_store, &b.id)
            .await
            .expect("get")
            .expect("some");
        assert_eq!(&stored, winners[0], "the winner's change is what is stored");
        current = stored;
    }
}

#[tokio::test]
async fn audit_chain_holds_across_clients() {
    let Some(uri) = uri() else { return };
    let (a, name) = fresh_store(&uri).await;
    let b = MongoStore::connect(&uri, &name, common::OP_TIMEOUT)
        .await
        .expect("second");
    let stores = [a.clone(), b];
    let results = race(24, move |i| {
        let s = stores[i % 2].clone();
        async move {
            s.append(audit_event(&format!("actor{i}"), "x.y", at(i as i64)))
                .await
        }
    })
    .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let log = AuditLog::list(&a, &AuditFilter::default(), None, 100)
        .await
        .expect("list");
    assert_eq!(log.len(), 24);
    assert_eq!(verify_chain(&log), Ok(24));
    assert_eq!(log.last().map(|r| r.seq), Some(24));
}

#[tokio::test]
async fn rate_counter_distinct_across_clients() {
    let Some(uri) = uri() else { return };
    let (a, name) = fresh_store(&uri).await;
    let b = MongoStore::connect(&uri, &name, common::OP_TIMEOUT)
        .await
        .expect("second");
    let stores = [a, b];
    let key = unique("rate");
    let mut counts: Vec<u64> = race(30, move |i| {
        let s = stores[i % 2].clone();
        let key = key.clone();
        async move { s.increment(&key, at(60)).await.expect("increment") }
    })
    .await;
    counts.sort_unstable();
    assert_eq!(counts, (1..=30).collect::<Vec<u64>>());
}

#[tokio::test]
async fn erased_data_key_leaves_no_key_material() {
    let Some(uri) = uri() else { return };
    let (store, name) = fresh_store(&uri).await;
    let owner = unique("owner");
    store
        .put_if_absent(&wrapped_key(&owner, b"v1", 1))
        .await
        .expect("put");
    store
        .replace(&wrapped_key(&owner, b"v2", 2), 1)
        .await
        .expect("rewrap");
    store
        .replace(&wrapped_key(&owner, b"v3", 3), 2)
        .await
        .expect("rewrap");
    assert!(store.delete(&owner).await.expect("delete"));
    let db = raw_db(&uri, &name).await;
    let left = db
        .collection::<Document>("data_keys")
        .count_documents(doc! { "owner": &owner, "tombstone": false })
        .await
        .expect("count");
    assert_eq!(left, 0, "every wrapping of the erased key is gone");
    // A rewrap racing with the erasure cannot bring the key back.
    assert_eq!(
        store.replace(&wrapped_key(&owner, b"v4", 4), 3).await,
        Err(StoreError::Conflict)
    );
    assert_eq!(DataKeyStore::get(&store, &owner).await, Ok(None));
}
