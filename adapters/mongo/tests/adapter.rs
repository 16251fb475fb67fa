//! What the shared contract suite does not cover: driver error mapping and
//! timeouts against a dead server, the indexes created, what is (and is
//! not) stored, races between separate clients ("instances"), and the
//! adapter's own protocols (fenced idempotency records, rate slots of a
//! reused key, seen ids replaced after expiry, husked data keys).

// Test code: a failed expectation is a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cardbind_mongo::schema::SCHEMA;
use cardbind_mongo::{MongoConfig, MongoStore};
use cardbind_ports::audit::{verify_links, AuditAction, AuditLog, ChainId};
use cardbind_ports::store::{
    CardData, CardDataStore, ChannelRefs, Claim, DataKeyStore, IdempotencyStore, Lease,
    RateLimiter, RateTake, RateWindow, RefTarget, ReviewEntry, ReviewQueue, SeenIds,
    StoredResponse, WalletStore,
};
use cardbind_ports::testkit::{
    at, binding_id, channel, event, race, sealed, user_id, wallet, wrapped_key,
};
use cardbind_ports::StoreError;
use common::*;
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};

/// A port free of listeners (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn response(body: &str) -> StoredResponse {
    StoredResponse {
        status: 201,
        content_type: "application/json".into(),
        body: body.as_bytes().to_vec(),
    }
}

macro_rules! two_instances {
    () => {{
        let Some(uri) = uri() else { return };
        let (a, name) = fresh_store(&uri).await;
        let (b, _) = strict_store(&uri, &name).await;
        (a, b, name, uri)
    }};
}

// ------------------------------------------------------------ the server

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
    let u = user_id("alice");
    let started = Instant::now();
    let r = store.load(&u).await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    let r = store
        .commit(
            &wallet(&u, 1, at(0)),
            None,
            vec![event(AuditAction::BindingCreate, Some(&u), None)],
            at(0),
        )
        .await;
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
    let w = RateWindow {
        key: "k".into(),
        limit: 1,
        expires_at: at(60),
    };
    let r = store.take(&[w], at(0)).await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn ensure_indexes_creates_the_declared_indexes_and_is_idempotent() {
    let Some(uri) = uri() else { return };
    let (store, name) = fresh_store(&uri).await;
    store.ensure_indexes().await.expect("again");
    store.ensure_indexes().await.expect("and again");
    store.ping().await.expect("ping");
    let db = raw_db(&uri, &name).await;
    for c in SCHEMA {
        let mut got: Vec<String> = db
            .collection::<Document>(c.name)
            .list_index_names()
            .await
            .expect("indexes");
        got.sort();
        let mut want: Vec<String> = c.indexes.iter().map(|i| i.name.to_owned()).collect();
        want.push("_id_".to_owned());
        want.sort();
        assert_eq!(got, want, "{}", c.name);
        for model in db
            .collection::<Document>(c.name)
            .list_indexes()
            .await
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
        {
            let Some(o) = model.options else { continue };
            let Some(n) = o.name else { continue };
            if let Some(spec) = c.indexes.iter().find(|i| i.name == n) {
                assert_eq!(o.unique.unwrap_or(false), spec.unique, "{}.{n}", c.name);
                let keys: Vec<(String, i32)> = model
                    .keys
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            v.as_i32()
                                .or_else(|| v.as_i64().map(|x| x as i32))
                                .unwrap_or(0),
                        )
                    })
                    .collect();
                let want: Vec<(String, i32)> = spec
                    .keys
                    .iter()
                    .map(|(k, d)| ((*k).to_owned(), *d))
                    .collect();
                assert_eq!(keys, want, "{}.{n}", c.name);
            }
        }
    }
}

// ------------------------------------------------------- what is stored

/// Every document of every collection of `db`.
async fn all_documents(uri: &str, name: &str) -> Vec<(String, Document)> {
    let db = raw_db(uri, name).await;
    let mut out = Vec::new();
    for c in db.list_collection_names().await.unwrap() {
        let docs: Vec<Document> = db
            .collection::<Document>(&c)
            .find(doc! {})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        out.extend(docs.into_iter().map(|d| (c.clone(), d)));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_scan_finds_no_card_data_in_clear() {
    let Some(uri) = uri() else { return };
    let (s, name) = fresh_store(&uri).await;
    let u = user_id(&unique("u"));
    let w = pan_wallet(&u, at(0));
    let b = w.bindings()[0].id.clone();
    let h = s
        .commit(
            &w,
            None,
            vec![event(AuditAction::BindingCreate, Some(&u), Some(&b))],
            at(0),
        )
        .await
        .unwrap();
    s.commit(
        &w,
        Some(h),
        vec![event(AuditAction::CardDataOpen, Some(&u), Some(&b))],
        at(1),
    )
    .await
    .unwrap();
    let data = CardData {
        binding: b.clone(),
        user: u.clone(),
        generation: 1001,
        sealed: sealed(7),
    };
    CardDataStore::put(&s, &data).await.unwrap();
    ChannelRefs::put(
        &s,
        &channel("mock"),
        "agr-1",
        &RefTarget {
            user: u.clone(),
            binding: b.clone(),
        },
    )
    .await
    .unwrap();
    s.add(&ReviewEntry {
        binding: b.clone(),
        user: u.clone(),
        since: at(0),
    })
    .await
    .unwrap();
    s.put_if_absent(&wrapped_key(u.as_str(), b"wrapped-bytes", 1))
        .await
        .unwrap();
    s.claim(u.as_str(), "k", "h", at(0), at(9)).await.unwrap();
    s.complete(
        u.as_str(),
        "k",
        Lease { attempt: 1 },
        &response("{\"last4\":\"5449\"}"),
    )
    .await
    .unwrap();

    let docs = all_documents(&uri, &name).await;
    let colls: BTreeSet<&str> = docs.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(colls.len(), 6, "{colls:?}");
    // We are looking at the right data: the masked summary is there.
    assert!(docs
        .iter()
        .any(|(_, d)| format!("{d}").contains("\"5449\"")));
    for (c, d) in &docs {
        let mut bytes = Vec::new();
        d.to_writer(&mut bytes).unwrap();
        let text = format!("{d}").to_lowercase();
        assert!(!text.contains(PAN), "{c}: the PAN in clear: {text}");
        assert!(
            !bytes.windows(PAN.len()).any(|x| x == PAN.as_bytes()),
            "{c}: PAN bytes"
        );
        assert!(!text.contains("cvv"), "{c}: {text}");
    }
    let (_, card) = docs.iter().find(|(c, _)| c == "card_data").unwrap();
    let sealed_doc = card.get_document("sealed").unwrap();
    for f in ["pan", "holder_name", "id_number", "phone"] {
        assert!(
            matches!(sealed_doc.get(f), Some(Bson::Binary(_))),
            "{f}: {:?}",
            sealed_doc.get(f)
        );
    }
    assert_eq!(sealed_doc.len(), 4, "no other sealed field (no CVV)");
}

// ----------------------------------------------------------- instances

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_wallets_and_one_commit_wins() {
    let (a, b, _, _) = two_instances!();
    let u = user_id(&unique("u"));
    let mut head = a
        .commit(
            &wallet(&u, 1, at(0)),
            None,
            vec![event(AuditAction::BindingCreate, Some(&u), None)],
            at(0),
        )
        .await
        .unwrap();
    assert_eq!(b.load(&u).await.unwrap().unwrap().head, head);
    for round in 0..3i64 {
        let stores = [a.clone(), b.clone()];
        let base = head.clone();
        let u2 = u.clone();
        let results = race(16, move |i| {
            let st = stores[i % 2].clone();
            let w = wallet(&u2, 1 + (i as u32 % 4), at(round));
            let ev = vec![event(AuditAction::BindingVerify, Some(&u2), None)];
            let base = base.clone();
            async move {
                st.commit(&w, Some(base), ev, at(round))
                    .await
                    .map(|h| (h, w))
            }
        })
        .await;
        let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        assert!(results
            .iter()
            .all(|r| matches!(r, Ok(_) | Err(StoreError::Conflict))));
        let stored = b.load(&u).await.unwrap().unwrap();
        assert_eq!(
            (&stored.head, &stored.wallet),
            (&winners[0].0, &winners[0].1)
        );
        head = stored.head;
    }
    assert_eq!(verify_links(&a.links(None, 100).await.unwrap()), Ok(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn system_chain_holds_under_appends_from_two_instances() {
    let (a, b, _, _) = two_instances!();
    let stores = [a.clone(), b.clone()];
    let results = race(24, move |i| {
        let s = stores[i % 2].clone();
        async move {
            s.append_system(
                vec![event(AuditAction::AccessDenied, None, None)],
                at(i as i64),
            )
            .await
        }
    })
    .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let links = a.links(None, 100).await.unwrap();
    assert_eq!(verify_links(&links), Ok(24));
    assert!(links.iter().all(|l| l.chain == ChainId::System));
    // Each instance goes on from the head the other wrote.
    b.append_system(vec![event(AuditAction::RetentionPurge, None, None)], at(99))
        .await
        .unwrap();
    a.append_system(vec![event(AuditAction::RetentionPurge, None, None)], at(99))
        .await
        .unwrap();
    assert_eq!(verify_links(&a.links(None, 100).await.unwrap()), Ok(26));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotency_claims_from_two_instances_one_acquires() {
    let (a, b, _, _) = two_instances!();
    let k = unique("k");
    let stores = [a.clone(), b.clone()];
    let kk = k.clone();
    let results = race(32, move |i| {
        let st = stores[i % 2].clone();
        let k = kk.clone();
        async move { st.claim("s", &k, "h", at(0), at(10)).await.unwrap() }
    })
    .await;
    let acquired: Vec<_> = results
        .iter()
        .filter(|c| matches!(c, Claim::Acquired(_)))
        .collect();
    assert_eq!(
        acquired,
        [&Claim::Acquired(Lease { attempt: 1 })],
        "{results:?}"
    );
    let stores = [a, b];
    let results = race(16, move |i| {
        let st = stores[i % 2].clone();
        let k = k.clone();
        async move { st.claim("s", &k, "h", at(11), at(30)).await.unwrap() }
    })
    .await;
    let acquired: Vec<_> = results
        .iter()
        .filter(|c| matches!(c, Claim::Acquired(_)))
        .collect();
    assert_eq!(
        acquired,
        [&Claim::Acquired(Lease { attempt: 2 })],
        "{results:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_holder_is_fenced_on_every_instance() {
    let (a, b, _, _) = two_instances!();
    let k = unique("k");
    assert_eq!(
        a.claim("s", &k, "h", at(0), at(10)).await.unwrap(),
        Claim::Acquired(Lease { attempt: 1 })
    );
    // Renewed on the instance that holds it: no read (it remembers).
    assert!(a
        .renew("s", &k, Lease { attempt: 1 }, at(20))
        .await
        .unwrap());
    assert_eq!(
        b.claim("s", &k, "h", at(20), at(40)).await.unwrap(),
        Claim::InProgress
    );
    assert_eq!(
        b.claim("s", &k, "h", at(21), at(40)).await.unwrap(),
        Claim::Acquired(Lease { attempt: 2 })
    );
    // The late holder's memory says it may write record 3: taken, so it
    // reads and learns it was taken over.
    for st in [&a, &b] {
        assert!(!st
            .renew("s", &k, Lease { attempt: 1 }, at(99))
            .await
            .unwrap());
        assert!(!st
            .complete("s", &k, Lease { attempt: 1 }, &response("late"))
            .await
            .unwrap());
        assert!(!st.release("s", &k, Lease { attempt: 1 }).await.unwrap());
    }
    // The new holder completes from the other instance.
    assert!(a
        .complete("s", &k, Lease { attempt: 2 }, &response("ok"))
        .await
        .unwrap());
    assert_eq!(
        b.claim("s", &k, "h", at(50), at(60)).await.unwrap(),
        Claim::Completed(response("ok"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_completion_racing_a_takeover_never_both_win() {
    let (a, b, _, _) = two_instances!();
    for round in 0..8 {
        let k = unique("k");
        assert!(matches!(
            a.claim("s", &k, "h", at(0), at(10)).await.unwrap(),
            Claim::Acquired(_)
        ));
        let (late, taker) = (a.clone(), b.clone());
        let (k1, k2) = (k.clone(), k.clone());
        let (done, claim) = tokio::join!(
            tokio::spawn(async move {
                late.complete("s", &k1, Lease { attempt: 1 }, &response("late"))
                    .await
                    .unwrap()
            }),
            tokio::spawn(async move { taker.claim("s", &k2, "h", at(11), at(30)).await.unwrap() }),
        );
        match (done.unwrap(), claim.unwrap()) {
            (true, Claim::Completed(r)) => assert_eq!(r, response("late")),
            (false, Claim::Acquired(Lease { attempt: 2 })) => {}
            other => panic!("round {round}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limit_holds_across_instances() {
    let (a, b, _, _) = two_instances!();
    for (n, limit) in [(24usize, 5u64), (6, 10)] {
        let key = unique("w");
        let stores = [a.clone(), b.clone()];
        let results = race(n, move |i| {
            let st = stores[i % 2].clone();
            let w = RateWindow {
                key: key.clone(),
                limit,
                expires_at: at(60),
            };
            async move { st.take(&[w], at(0)).await.unwrap()[0] }
        })
        .await;
        let mut slots: Vec<u64> = results
            .iter()
            .filter_map(|t| match t {
                RateTake::Taken(n) => Some(*n),
                RateTake::Full => None,
            })
            .collect();
        slots.sort_unstable();
        slots.dedup();
        assert_eq!(
            slots.len(),
            n.min(limit as usize),
            "distinct slots: {results:?}"
        );
        assert_eq!(
            results
                .iter()
                .filter(|t| matches!(t, RateTake::Taken(_)))
                .count(),
            n.min(limit as usize)
        );
        assert!(slots.iter().all(|s| (1..=limit).contains(s)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_key_replace_racing_erasure_leaves_no_key_material() {
    let (a, b, name, uri) = two_instances!();
    for round in 0..6 {
        let o = unique("o");
        a.put_if_absent(&wrapped_key(&o, b"v1", 1)).await.unwrap();
        let (eraser, rewrapper) = (a.clone(), b.clone());
        let (o1, o2) = (o.clone(), o.clone());
        let (erased, replaced) = tokio::join!(
            tokio::spawn(async move { DataKeyStore::delete(&eraser, &o1).await.unwrap() }),
            tokio::spawn(async move { rewrapper.replace(&wrapped_key(&o2, b"v2", 2), 1).await }),
        );
        assert!(erased.unwrap(), "round {round}");
        let replaced = replaced.unwrap();
        assert!(
            matches!(replaced, Ok(()) | Err(StoreError::Conflict)),
            "{replaced:?}"
        );
        assert_eq!(
            DataKeyStore::get(&a, &o).await.unwrap(),
            None,
            "round {round}"
        );
        // Every stored copy is gone: the links left hold no key material.
        let db = raw_db(&uri, &name).await;
        let docs: Vec<Document> = db
            .collection::<Document>("data_keys")
            .find(doc! { "owner": &o })
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert!(!docs.is_empty());
        for d in &docs {
            assert!(
                d.get_binary_generic("wrapped").unwrap().is_empty(),
                "round {round}: {d}"
            );
            assert_ne!(d.get_str("state").unwrap(), "key", "round {round}: {d}");
        }
        for v in [1, 2] {
            assert_eq!(
                b.replace(&wrapped_key(&o, b"v3", 3), v).await,
                Err(StoreError::Conflict)
            );
        }
        // An erased owner may get a new key; the new one is what is read.
        a.put_if_absent(&wrapped_key(&o, b"v9", 1)).await.unwrap();
        assert_eq!(
            DataKeyStore::get(&b, &o).await.unwrap().map(|k| k.wrapped),
            Some(b"v9".to_vec())
        );
    }
}

// --------------------------------------------- the adapter's own protocols

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reused_rate_key_whose_window_expired_is_fresh() {
    let Some(uri) = uri() else { return };
    let (s, _) = fresh_store(&uri).await;
    let k = unique("k");
    let old = RateWindow {
        key: k.clone(),
        limit: 1,
        expires_at: at(10),
    };
    assert_eq!(
        s.take(std::slice::from_ref(&old), at(0)).await.unwrap(),
        [RateTake::Taken(1)]
    );
    assert_eq!(
        s.take(std::slice::from_ref(&old), at(5)).await.unwrap(),
        [RateTake::Full]
    );
    let new = RateWindow {
        key: k,
        limit: 1,
        expires_at: at(100),
    };
    assert_eq!(
        s.take(std::slice::from_ref(&new), at(11)).await.unwrap(),
        [RateTake::Taken(1)]
    );
    assert_eq!(
        s.take(std::slice::from_ref(&new), at(12)).await.unwrap(),
        [RateTake::Full]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_seen_id_is_marked_again_by_exactly_one() {
    let (a, b, _, _) = two_instances!();
    let id = unique("n");
    assert!(a.mark("ns", &id, at(0), at(10)).await.unwrap());
    let stores = [a.clone(), b];
    let id2 = id.clone();
    let marks = race(16, move |i| {
        let s = stores[i % 2].clone();
        let id = id2.clone();
        async move { s.mark("ns", &id, at(11), at(20)).await.unwrap() }
    })
    .await;
    assert_eq!(marks.iter().filter(|m| **m).count(), 1, "{marks:?}");
    assert!(a.seen("ns", &id, at(20)).await.unwrap());
    assert_eq!(SeenIds::purge_expired(&a, at(21)).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotency_purge_keeps_a_key_whose_newest_attempt_is_recent() {
    let Some(uri) = uri() else { return };
    let (s, _) = fresh_store(&uri).await;
    let (old, mixed) = (unique("k"), unique("k"));
    s.claim("s", &old, "h", at(0), at(10)).await.unwrap();
    s.complete("s", &old, Lease { attempt: 1 }, &response("1"))
        .await
        .unwrap();
    // Attempt 1 old and expired, attempt 2 recent.
    s.claim("s", &mixed, "h", at(0), at(10)).await.unwrap();
    assert_eq!(
        s.claim("s", &mixed, "h", at(200), at(260)).await.unwrap(),
        Claim::Acquired(Lease { attempt: 2 })
    );
    assert_eq!(
        s.purge_created_before(at(100)).await.unwrap(),
        2,
        "the old key's two records"
    );
    assert_eq!(
        s.claim("s", &mixed, "h", at(201), at(261)).await.unwrap(),
        Claim::InProgress
    );
    assert_eq!(
        s.claim("s", &old, "h", at(201), at(261)).await.unwrap(),
        Claim::Acquired(Lease { attempt: 1 })
    );
    assert!(s
        .complete("s", &mixed, Lease { attempt: 2 }, &response("2"))
        .await
        .unwrap());
    // Once its newest attempt is old too, the whole key goes.
    assert_eq!(s.purge_created_before(at(300)).await.unwrap(), 3 + 1);
    assert_eq!(
        s.claim("s", &mixed, "other", at(301), at(361))
            .await
            .unwrap(),
        Claim::Acquired(Lease { attempt: 1 })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn card_data_delete_keeps_one_generation_of_its_own_user() {
    let Some(uri) = uri() else { return };
    let (s, _) = fresh_store(&uri).await;
    let u = user_id(&unique("u"));
    let b = binding_id(&unique("b"));
    for g in [7, 900, 3] {
        CardDataStore::put(
            &s,
            &CardData {
                binding: b.clone(),
                user: u.clone(),
                generation: g,
                sealed: sealed(g as u8),
            },
        )
        .await
        .unwrap();
    }
    let stranger = user_id(&unique("x"));
    assert_eq!(
        CardDataStore::delete(&s, &stranger, &b, None)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        CardDataStore::delete(&s, &u, &b, Some(900)).await.unwrap(),
        2
    );
    assert!(CardDataStore::get(&s, &u, &b, 900).await.unwrap().is_some());
    assert_eq!(CardDataStore::delete(&s, &u, &b, None).await.unwrap(), 1);
    assert_eq!(CardDataStore::owner(&s, &b).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_listing_reads_one_link_per_event_page() {
    // Paging the audit log of a long chain: each page is one query (its
    // cursor starts at the link of the previous page's last event).
    let Some(uri) = uri() else { return };
    let name = fresh_db_name();
    let (s, log) = strict_store(&uri, &name).await;
    s.ensure_indexes().await.unwrap();
    let u = user_id(&unique("u"));
    let mut h = None;
    for i in 0..30 {
        let ev = vec![
            event(AuditAction::BindingVerify, Some(&u), None),
            event(AuditAction::CardDataOpen, Some(&u), None),
        ];
        h = Some(s.commit(&wallet(&u, 1, at(i)), h, ev, at(i)).await.unwrap());
    }
    log.clear();
    let mut after = None;
    let mut n = 0;
    loop {
        let page = AuditLog::list(&s, &Default::default(), after.clone(), 7)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        n += page.len();
        after = page.last().map(|r| r.cursor.clone());
    }
    assert_eq!(n, 60);
    let finds = log.commands().iter().filter(|c| c.name == "find").count();
    assert_eq!(finds, 60 / 7 + 2, "one find per page");
}
