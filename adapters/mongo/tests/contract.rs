//! The storage port contracts (the rustdoc of `cardbind_ports::store` and
//! `cardbind_ports::audit`) checked on `MongoStore`, each test on a fresh
//! database of the server of `CARDBIND_TEST_MONGODB_URI` (FerretDB under
//! `scripts/test-services.sh`), concurrency races included. Every store
//! here has a strict command log: a query not served by a declared index,
//! or a request-path query without its collection's shard key, fails the
//! call. (To be joined by the shared contract suite of `cardbind-ports`
//! once it lands.)

// Test code: a failed expectation is a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use cardbind_domain::BindingStatus;
use cardbind_ports::audit::{verify_links, AuditAction, AuditFilter, AuditLog, ChainId};
use cardbind_ports::store::{
    CardDataStore, ChannelRefs, Claim, DataKeyStore, IdempotencyStore, Lease, RateLimiter,
    RateTake, RateWindow, RefTarget, ReviewEntry, ReviewQueue, SeenIds, StoredResponse,
    WalletStore,
};
use cardbind_ports::StoreError;
use common::*;
use mongodb::bson::{doc, Document};

macro_rules! store {
    () => {{
        let Some(uri) = uri() else { return };
        let (s, name) = fresh_store(&uri).await;
        (s, name, uri)
    }};
}

fn response(body: &str) -> StoredResponse {
    StoredResponse {
        status: 201,
        content_type: "application/json".into(),
        body: body.as_bytes().to_vec(),
    }
}

// ------------------------------------------------------------------ wallets

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wallet_load_and_commit() {
    let (s, _, _) = store!();
    let u = user(&unique("u"));
    assert_eq!(s.load(&u).await.unwrap(), None);
    let w1 = wallet(&u, 1, at(0));
    let ev = vec![event(AuditAction::BindingCreate, Some(&u), None, at(0))];
    let h1 = s.commit(&w1, None, ev.clone(), at(0)).await.unwrap();
    assert_eq!((h1.seq, h1.at), (1, at(0)));
    let got = s.load(&u).await.unwrap().unwrap();
    assert_eq!((got.wallet, got.head.clone()), (w1.clone(), h1.clone()));

    let w2 = wallet(&u, 3, at(1));
    // A clock behind the previous link does not go backwards.
    let h2 = s
        .commit(&w2, Some(h1.clone()), ev.clone(), at(-5))
        .await
        .unwrap();
    assert_eq!((h2.seq, h2.at), (2, at(0)));
    assert_eq!(s.load(&u).await.unwrap().unwrap().wallet, w2);
    // A commit after a head that is no longer the newest, or as the first
    // link of a chain that has one.
    assert_eq!(
        s.commit(&w1, Some(h1), ev.clone(), at(2)).await,
        Err(StoreError::Conflict)
    );
    assert_eq!(
        s.commit(&w1, None, ev, at(2)).await,
        Err(StoreError::Conflict)
    );
    assert_eq!(s.load(&u).await.unwrap().unwrap().head, h2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wallet_concurrent_commits_after_one_head_one_wins() {
    let (s, name, uri) = store!();
    let (other, _) = strict_store(&uri, &name).await;
    let u = user(&unique("u"));
    let mut head = s
        .commit(
            &wallet(&u, 1, at(0)),
            None,
            vec![event(AuditAction::BindingCreate, Some(&u), None, at(0))],
            at(0),
        )
        .await
        .unwrap();
    for round in 0..3 {
        let stores = [s.clone(), other.clone()];
        let base = head.clone();
        let u2 = u.clone();
        let results = race(16, move |i| {
            let st = stores[i % 2].clone();
            let w = wallet(&u2, 1 + (i as u32 % 3), at(i as i64));
            let ev = vec![event(
                AuditAction::BindingVerify,
                Some(&u2),
                None,
                at(round),
            )];
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
        let stored = other.load(&u).await.unwrap().unwrap();
        assert_eq!(
            (&stored.head, &stored.wallet),
            (&winners[0].0, &winners[0].1)
        );
        head = stored.head;
    }
    let links = s.links(None, 100).await.unwrap();
    assert_eq!(verify_links(&links), Ok(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pending_links_in_order_and_paged() {
    let (s, _, _) = store!();
    let p = unique("p");
    let mut pending = Vec::new();
    for i in 0..4 {
        let u = user(&format!("{p}-{i}"));
        // Two cards: one pending verification.
        let w = wallet(&u, 2, at(i));
        let ev = vec![event(AuditAction::BindingCreate, Some(&u), None, at(i))];
        let h = s.commit(&w, None, ev.clone(), at(10 + i)).await.unwrap();
        pending.push((at(10 + i), u.clone(), h.seq));
        // One card, active: not pending.
        let h2 = s
            .commit(&wallet(&u, 1, at(i)), Some(h), ev, at(20 + i))
            .await
            .unwrap();
        assert_eq!(h2.seq, 2);
    }
    let all = s.pending_links(at(0), at(100), None, 100).await.unwrap();
    let keys: Vec<_> = all
        .iter()
        .map(|l| (l.key.at, l.key.user.clone(), l.key.seq))
        .collect();
    assert_eq!(keys, pending);
    // [from, to): the second link is outside, the window is half-open.
    let some = s.pending_links(at(11), at(13), None, 100).await.unwrap();
    assert_eq!(some.len(), 2);
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .pending_links(at(0), at(100), after.clone(), 3)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|l| l.key.clone());
        paged.extend(page);
    }
    assert_eq!(paged, all);
    assert!(s
        .pending_links(at(0), at(100), None, 0)
        .await
        .unwrap()
        .is_empty());
}

// -------------------------------------------------------------------- audit

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_listing_filters_and_pages() {
    let (s, _, _) = store!();
    let (alice, bob) = (user(&unique("alice")), user(&unique("bob")));
    let card = binding_id(&unique("card"));
    let mut head = None;
    for i in 0..5 {
        let ev = vec![
            event(AuditAction::BindingCreate, Some(&alice), Some(&card), at(i)),
            event(AuditAction::CardDataOpen, Some(&alice), None, at(i)),
        ];
        head = Some(
            s.commit(&wallet(&alice, 1, at(i)), head, ev, at(i))
                .await
                .unwrap(),
        );
    }
    s.commit(
        &wallet(&bob, 1, at(2)),
        None,
        vec![event(AuditAction::BindingCreate, Some(&bob), None, at(2))],
        at(2),
    )
    .await
    .unwrap();
    s.append_system(
        vec![event(AuditAction::BinTableImport, None, None, at(3))],
        at(3),
    )
    .await
    .unwrap();

    let everything = AuditLog::list(&s, &AuditFilter::default(), None, 100)
        .await
        .unwrap();
    assert_eq!(everything.len(), 12);
    // Ordered by (at, chain, seq, index), chains by their stored names.
    let key = |r: &cardbind_ports::audit::AuditRecord| {
        (
            r.cursor.at,
            r.cursor.chain.as_str().to_owned(),
            r.cursor.seq,
            r.cursor.index,
        )
    };
    assert!(everything.windows(2).all(|w| key(&w[0]) < key(&w[1])));
    // Paging in steps of 5 gives the same events once each.
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = AuditLog::list(&s, &AuditFilter::default(), after.clone(), 5)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|r| r.cursor.clone());
        paged.extend(page);
    }
    assert_eq!(paged, everything);

    let by = |f: AuditFilter| {
        let s = s.clone();
        async move { AuditLog::list(&s, &f, None, 100).await.unwrap() }
    };
    let only_bob = by(AuditFilter {
        user_id: Some(bob.clone()),
        ..Default::default()
    })
    .await;
    assert_eq!(only_bob.len(), 1);
    let card_events = by(AuditFilter {
        binding_id: Some(card.clone()),
        ..Default::default()
    })
    .await;
    assert_eq!(card_events.len(), 5);
    let opens = by(AuditFilter {
        user_id: Some(alice.clone()),
        action: Some(AuditAction::CardDataOpen),
        ..Default::default()
    })
    .await;
    assert_eq!(opens.len(), 5);
    assert!(opens
        .iter()
        .all(|r| r.event.action == AuditAction::CardDataOpen));
    // since inclusive, until exclusive.
    let window = by(AuditFilter {
        since: Some(at(1)),
        until: Some(at(3)),
        ..Default::default()
    })
    .await;
    assert_eq!(window.len(), 2 * 2 + 1);
    let system = by(AuditFilter {
        action: Some(AuditAction::BinTableImport),
        ..Default::default()
    })
    .await;
    assert_eq!(system.len(), 1);
    assert_eq!(system[0].cursor.chain, ChainId::System);
    assert!(AuditLog::list(&s, &AuditFilter::default(), None, 0)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn system_chain_holds_under_concurrent_appends_from_two_instances() {
    let (a, name, uri) = store!();
    let (b, _) = strict_store(&uri, &name).await;
    let stores = [a.clone(), b];
    let results = race(24, move |i| {
        let s = stores[i % 2].clone();
        async move {
            s.append_system(
                vec![event(AuditAction::AccessDenied, None, None, at(i as i64))],
                at(i as i64),
            )
            .await
        }
    })
    .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let links = a.links(None, 100).await.unwrap();
    assert_eq!(links.len(), 24);
    assert_eq!(verify_links(&links), Ok(24));
    assert!(links.iter().all(|l| l.chain == ChainId::System));
    // Paging the walk.
    let first = a.links(None, 10).await.unwrap();
    let rest = a
        .links(first.last().map(|l| (l.chain.clone(), l.seq)), 100)
        .await
        .unwrap();
    assert_eq!([first, rest].concat(), links);
    assert!(a.links(None, 0).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn purge_keeps_the_newest_link_of_each_chain() {
    let (s, _, _) = store!();
    let (u, v) = (user(&unique("u")), user(&unique("v")));
    let mut head = None;
    for i in 0..4 {
        let ev = vec![event(AuditAction::BindingVerify, Some(&u), None, at(i))];
        head = Some(
            s.commit(&wallet(&u, 2, at(i)), head, ev, at(i))
                .await
                .unwrap(),
        );
    }
    let hv = s
        .commit(
            &wallet(&v, 1, at(0)),
            None,
            vec![event(AuditAction::BindingCreate, Some(&v), None, at(0))],
            at(0),
        )
        .await
        .unwrap();
    for i in 0..3 {
        s.append_system(
            vec![event(AuditAction::RetentionPurge, None, None, at(i))],
            at(i),
        )
        .await
        .unwrap();
    }
    // Links at 0, 1 are old: u loses 1 and 2, v keeps its only link,
    // @system loses 1 and 2 (at 0 and 1).
    assert_eq!(s.purge_before(at(2)).await.unwrap(), 4);
    assert_eq!(s.purge_before(at(2)).await.unwrap(), 0);
    let links = s.links(None, 100).await.unwrap();
    assert_eq!(links.len(), 2 + 1 + 1);
    assert_eq!(
        verify_links(&links),
        Ok(4),
        "chains verify from their first kept link"
    );
    // Everything old: only the newest of each chain stays.
    assert_eq!(s.purge_before(at(1000)).await.unwrap(), 1);
    assert_eq!(s.links(None, 100).await.unwrap().len(), 3);
    assert_eq!(s.load(&v).await.unwrap().unwrap().head, hv);
    let h = s.load(&u).await.unwrap().unwrap().head;
    assert_eq!(h.seq, 4);
    // Numbering goes on.
    let h5 = s
        .commit(
            &wallet(&u, 1, at(9)),
            Some(h),
            vec![event(AuditAction::BindingUnbind, Some(&u), None, at(9))],
            at(9),
        )
        .await
        .unwrap();
    assert_eq!(h5.seq, 5);
    s.append_system(
        vec![event(AuditAction::RetentionPurge, None, None, at(9))],
        at(9),
    )
    .await
    .unwrap();
    let sys: Vec<u64> = s
        .links(None, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|l| l.chain == ChainId::System)
        .map(|l| l.seq)
        .collect();
    assert_eq!(sys, [3, 4]);
}

// ---------------------------------------------------------------- card data

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn card_data_by_generation() {
    let (s, _, _) = store!();
    let u = user(&unique("u"));
    let b = binding_id(&unique("b"));
    assert_eq!(CardDataStore::owner(&s, &b).await.unwrap(), None);
    let g1 = card_data(&u, &b, 1);
    CardDataStore::put(&s, &g1).await.unwrap();
    assert_eq!(
        CardDataStore::put(&s, &g1).await,
        Err(StoreError::Duplicate)
    );
    // Of concurrent puts of one generation exactly one succeeds.
    let s2 = s.clone();
    let (u2, b2) = (u.clone(), b.clone());
    let results = race(12, move |_| {
        let s = s2.clone();
        let d = card_data(&u2, &b2, 2);
        async move { CardDataStore::put(&s, &d).await }
    })
    .await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    assert!(results
        .iter()
        .all(|r| matches!(r, Ok(()) | Err(StoreError::Duplicate))));
    assert_eq!(CardDataStore::get(&s, &u, &b, 1).await.unwrap(), Some(g1));
    assert_eq!(CardDataStore::get(&s, &u, &b, 3).await.unwrap(), None);
    let stranger = user(&unique("x"));
    assert_eq!(
        CardDataStore::get(&s, &stranger, &b, 1).await.unwrap(),
        None,
        "another user's card"
    );
    assert_eq!(CardDataStore::owner(&s, &b).await.unwrap(), Some(u.clone()));
    assert_eq!(
        CardDataStore::delete(&s, &stranger, &b, 9).await.unwrap(),
        0
    );
    assert_eq!(CardDataStore::delete(&s, &u, &b, 1).await.unwrap(), 1);
    assert_eq!(CardDataStore::get(&s, &u, &b, 1).await.unwrap(), None);
    assert!(CardDataStore::get(&s, &u, &b, 2).await.unwrap().is_some());
    assert_eq!(CardDataStore::delete(&s, &u, &b, 2).await.unwrap(), 1);
    assert_eq!(CardDataStore::delete(&s, &u, &b, 2).await.unwrap(), 0);
    assert_eq!(CardDataStore::owner(&s, &b).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn channel_refs_keep_the_first_target() {
    let (s, _, _) = store!();
    let r = unique("agr");
    let t1 = RefTarget {
        user: user(&unique("u")),
        binding: binding_id(&unique("b")),
    };
    let t2 = RefTarget {
        user: user(&unique("u")),
        binding: binding_id(&unique("b")),
    };
    assert_eq!(ChannelRefs::find(&s, &channel(), &r).await.unwrap(), None);
    ChannelRefs::put(&s, &channel(), &r, &t1).await.unwrap();
    ChannelRefs::put(&s, &channel(), &r, &t1).await.unwrap();
    ChannelRefs::put(&s, &channel(), &r, &t2).await.unwrap();
    assert_eq!(
        ChannelRefs::find(&s, &channel(), &r).await.unwrap(),
        Some(t1.clone())
    );
    let other = cardbind_domain::ChannelName::parse("alipay").unwrap();
    assert_eq!(ChannelRefs::find(&s, &other, &r).await.unwrap(), None);
    ChannelRefs::delete(&s, &channel(), &r).await.unwrap();
    ChannelRefs::delete(&s, &channel(), &r).await.unwrap();
    assert_eq!(ChannelRefs::find(&s, &channel(), &r).await.unwrap(), None);
    ChannelRefs::put(&s, &channel(), &r, &t2).await.unwrap();
    assert_eq!(
        ChannelRefs::find(&s, &channel(), &r).await.unwrap(),
        Some(t2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn review_queue_keeps_the_first_entry_and_pages() {
    let (s, _, _) = store!();
    let p = unique("r");
    let u = user(&unique("u"));
    let entries: Vec<ReviewEntry> = (0..5)
        .map(|i| ReviewEntry {
            binding: binding_id(&format!("{p}-{i}")),
            user: u.clone(),
            since: at(i),
        })
        .collect();
    for e in entries.iter().rev() {
        s.add(e).await.unwrap();
    }
    s.add(&ReviewEntry {
        since: at(99),
        ..entries[0].clone()
    })
    .await
    .unwrap();
    assert_eq!(
        ReviewQueue::get(&s, &entries[0].binding).await.unwrap(),
        Some(entries[0].clone())
    );
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = ReviewQueue::list(&s, after.clone(), 2).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|e| e.binding.clone());
        paged.extend(page);
    }
    assert_eq!(paged, entries);
    s.remove(&entries[2].binding).await.unwrap();
    s.remove(&entries[2].binding).await.unwrap();
    assert_eq!(
        ReviewQueue::get(&s, &entries[2].binding).await.unwrap(),
        None
    );
    assert_eq!(ReviewQueue::list(&s, None, 100).await.unwrap().len(), 4);
    assert!(ReviewQueue::list(&s, None, 0).await.unwrap().is_empty());
}

// -------------------------------------------------------------- idempotency

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotency_claim_complete_replay() {
    let (s, _, _) = store!();
    let k = unique("k");
    let c = s.claim("alice", &k, "h1", at(0), at(30)).await.unwrap();
    assert_eq!(c, Claim::Acquired(Lease { attempt: 1 }));
    assert_eq!(
        s.claim("alice", &k, "h1", at(1), at(31)).await.unwrap(),
        Claim::InProgress
    );
    assert_eq!(
        s.claim("alice", &k, "h2", at(1), at(31)).await.unwrap(),
        Claim::Mismatch
    );
    // Scoped to the caller.
    assert_eq!(
        s.claim("bob", &k, "h2", at(1), at(31)).await.unwrap(),
        Claim::Acquired(Lease { attempt: 1 })
    );
    assert!(s
        .complete("alice", &k, Lease { attempt: 1 }, &response("{}"))
        .await
        .unwrap());
    assert_eq!(
        s.claim("alice", &k, "h1", at(100), at(130)).await.unwrap(),
        Claim::Completed(response("{}"))
    );
    assert_eq!(
        s.claim("alice", &k, "h2", at(100), at(130)).await.unwrap(),
        Claim::Mismatch
    );
    // Finished: nothing more for its holder.
    assert!(!s
        .complete("alice", &k, Lease { attempt: 1 }, &response("x"))
        .await
        .unwrap());
    assert!(!s.release("alice", &k, Lease { attempt: 1 }).await.unwrap());
    assert!(!s
        .renew("alice", &k, Lease { attempt: 1 }, at(500))
        .await
        .unwrap());
    assert!(!s
        .complete(
            "alice",
            &unique("none"),
            Lease { attempt: 1 },
            &response("x")
        )
        .await
        .unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotency_release_renew_and_takeover_fence_the_late_holder() {
    let (s, name, uri) = store!();
    let k = unique("k");
    assert_eq!(
        s.claim("a", &k, "h", at(0), at(10)).await.unwrap(),
        Claim::Acquired(Lease { attempt: 1 })
    );
    assert!(s.release("a", &k, Lease { attempt: 1 }).await.unwrap());
    assert!(!s.release("a", &k, Lease { attempt: 1 }).await.unwrap());
    assert_eq!(
        s.claim("a", &k, "h", at(1), at(10)).await.unwrap(),
        Claim::Acquired(Lease { attempt: 2 })
    );
    // Renewed: alive past its first lease.
    assert!(s
        .renew("a", &k, Lease { attempt: 2 }, at(20))
        .await
        .unwrap());
    assert_eq!(
        s.claim("a", &k, "h", at(15), at(40)).await.unwrap(),
        Claim::InProgress
    );
    // Expired (alive at its last instant): taken over.
    assert_eq!(
        s.claim("a", &k, "h", at(20), at(40)).await.unwrap(),
        Claim::InProgress
    );
    assert_eq!(
        s.claim("a", &k, "h", at(21), at(40)).await.unwrap(),
        Claim::Acquired(Lease { attempt: 3 })
    );
    // The late holder of attempt 2, from this instance or another, can no
    // longer renew, complete or release.
    let (elsewhere, _) = strict_store(&uri, &name).await;
    for st in [&s, &elsewhere] {
        assert!(!st
            .renew("a", &k, Lease { attempt: 2 }, at(99))
            .await
            .unwrap());
        assert!(!st
            .complete("a", &k, Lease { attempt: 2 }, &response("late"))
            .await
            .unwrap());
        assert!(!st.release("a", &k, Lease { attempt: 2 }).await.unwrap());
    }
    // The holder of attempt 3 completes from another instance.
    assert!(elsewhere
        .complete("a", &k, Lease { attempt: 3 }, &response("ok"))
        .await
        .unwrap());
    assert_eq!(
        s.claim("a", &k, "h", at(50), at(60)).await.unwrap(),
        Claim::Completed(response("ok"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotency_concurrent_claims_one_acquires() {
    let (s, name, uri) = store!();
    let (b, _) = strict_store(&uri, &name).await;
    let k = unique("k");
    let stores = [s.clone(), b.clone()];
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
    assert!(results
        .iter()
        .all(|c| matches!(c, Claim::Acquired(_) | Claim::InProgress)));
    // Its lease runs out: of concurrent takeovers exactly one wins.
    let stores = [s.clone(), b];
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
async fn idempotency_late_completion_racing_a_takeover_never_both_win() {
    let (s, name, uri) = store!();
    let (b, _) = strict_store(&uri, &name).await;
    for round in 0..8 {
        let k = unique("k");
        assert!(matches!(
            s.claim("s", &k, "h", at(0), at(10)).await.unwrap(),
            Claim::Acquired(_)
        ));
        let (late, taker) = (s.clone(), b.clone());
        let (k1, k2) = (k.clone(), k.clone());
        let (done, claim) = tokio::join!(
            tokio::spawn(async move {
                late.complete("s", &k1, Lease { attempt: 1 }, &response("late"))
                    .await
                    .unwrap()
            }),
            tokio::spawn(async move { taker.claim("s", &k2, "h", at(11), at(30)).await.unwrap() }),
        );
        let (done, claim) = (done.unwrap(), claim.unwrap());
        match (done, &claim) {
            (true, Claim::Completed(r)) => assert_eq!(r, &response("late")),
            (false, Claim::Acquired(Lease { attempt: 2 })) => {}
            other => panic!("round {round}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotency_purge_counts_attempts() {
    let (s, _, _) = store!();
    // A purge deletes only what is older than it is given; this database
    // is ours alone.
    let (k1, k2, k3) = (unique("k"), unique("k"), unique("k"));
    s.claim("s", &k1, "h", at(-100), at(-90)).await.unwrap();
    s.complete("s", &k1, Lease { attempt: 1 }, &response("1"))
        .await
        .unwrap();
    s.claim("s", &k2, "h", at(-100), at(-90)).await.unwrap();
    s.claim("s", &k2, "h", at(-50), at(-40)).await.unwrap();
    s.claim("s", &k3, "h", at(0), at(10)).await.unwrap();
    assert_eq!(s.purge_created_before(at(-10)).await.unwrap(), 3);
    assert_eq!(s.purge_created_before(at(-10)).await.unwrap(), 0);
    assert_eq!(
        s.claim("s", &k1, "h", at(1), at(10)).await.unwrap(),
        Claim::Acquired(Lease { attempt: 1 })
    );
    assert_eq!(
        s.claim("s", &k3, "h", at(1), at(10)).await.unwrap(),
        Claim::InProgress
    );
}

// -------------------------------------------------------------------- rates

fn window(key: &str, limit: u64) -> RateWindow {
    RateWindow {
        key: key.to_owned(),
        limit,
        expires_at: at(60),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_windows_taken_together() {
    let (s, _, _) = store!();
    let (a, b, z) = (unique("a"), unique("b"), unique("z"));
    let ws = [window(&a, 2), window(&b, 1), window(&z, 0)];
    assert_eq!(
        s.take(&ws, at(0)).await.unwrap(),
        [RateTake::Taken(1), RateTake::Taken(1), RateTake::Full]
    );
    assert_eq!(
        s.take(&ws, at(0)).await.unwrap(),
        [RateTake::Taken(2), RateTake::Full, RateTake::Full]
    );
    assert_eq!(s.take(&ws, at(0)).await.unwrap(), [RateTake::Full; 3]);
    // One window twice in one take: two slots.
    let c = unique("c");
    assert_eq!(
        s.take(&[window(&c, 3), window(&c, 3)], at(0))
            .await
            .unwrap()
            .iter()
            .filter(|t| matches!(t, RateTake::Taken(_)))
            .count(),
        2
    );
    assert!(s.take(&[], at(0)).await.unwrap().is_empty());
    // Expired windows are purged; alive at their instant.
    assert_eq!(RateLimiter::purge_expired(&s, at(60)).await.unwrap(), 0);
    assert_eq!(RateLimiter::purge_expired(&s, at(61)).await.unwrap(), 3 + 2);
    assert_eq!(
        s.take(&ws[..1], at(61)).await.unwrap(),
        [RateTake::Taken(1)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limit_holds_under_parallel_takes() {
    let (s, name, uri) = store!();
    let (b, _) = strict_store(&uri, &name).await;
    for (n, limit) in [(24usize, 5u64), (6, 10)] {
        let key = unique("w");
        let stores = [s.clone(), b.clone()];
        let results = race(n, move |i| {
            let st = stores[i % 2].clone();
            let w = window(&key, limit);
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
        let want = n.min(limit as usize);
        assert_eq!(slots.len(), want, "{results:?}");
        slots.dedup();
        assert_eq!(slots.len(), want, "distinct slots: {results:?}");
        assert!(slots.iter().all(|s| (1..=limit).contains(s)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_window_under_a_reused_key_is_fresh() {
    let (s, _, _) = store!();
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
    assert_eq!(s.take(&[old], at(5)).await.unwrap(), [RateTake::Full]);
    let new = RateWindow {
        key: k,
        limit: 1,
        expires_at: at(100),
    };
    assert_eq!(
        s.take(std::slice::from_ref(&new), at(11)).await.unwrap(),
        [RateTake::Taken(1)]
    );
    assert_eq!(s.take(&[new], at(12)).await.unwrap(), [RateTake::Full]);
}

// --------------------------------------------------------------------- seen

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seen_ids_expire_and_one_mark_wins() {
    let (s, _, _) = store!();
    let id = unique("n");
    assert!(!s.seen("ns", &id, at(0)).await.unwrap());
    let s2 = s.clone();
    let id2 = id.clone();
    let marks = race(16, move |_| {
        let s = s2.clone();
        let id = id2.clone();
        async move { s.mark("ns", &id, at(0), at(10)).await.unwrap() }
    })
    .await;
    assert_eq!(marks.iter().filter(|m| **m).count(), 1, "{marks:?}");
    assert!(
        s.seen("ns", &id, at(10)).await.unwrap(),
        "alive at its instant"
    );
    assert!(!s.seen("other", &id, at(1)).await.unwrap());
    assert!(!s.seen("ns", &id, at(11)).await.unwrap());
    // Expired: of concurrent marks again exactly one gets true.
    let s2 = s.clone();
    let id2 = id.clone();
    let marks = race(16, move |_| {
        let s = s2.clone();
        let id = id2.clone();
        async move { s.mark("ns", &id, at(11), at(20)).await.unwrap() }
    })
    .await;
    assert_eq!(marks.iter().filter(|m| **m).count(), 1, "{marks:?}");
    assert!(s.seen("ns", &id, at(15)).await.unwrap());
    assert!(s.mark("ns", &unique("n"), at(0), at(5)).await.unwrap());
    assert_eq!(SeenIds::purge_expired(&s, at(20)).await.unwrap(), 1);
    assert!(s.seen("ns", &id, at(20)).await.unwrap());
    assert_eq!(SeenIds::purge_expired(&s, at(21)).await.unwrap(), 1);
    assert!(!s.seen("ns", &id, at(12)).await.unwrap());
}

// ---------------------------------------------------------------- data keys

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_keys_put_replace_delete() {
    let (s, _, _) = store!();
    let o = unique("o");
    assert_eq!(DataKeyStore::get(&s, &o).await.unwrap(), None);
    let k1 = wrapped_key(&o, b"v1", 1);
    assert_eq!(s.put_if_absent(&k1).await.unwrap(), k1);
    assert_eq!(
        s.put_if_absent(&wrapped_key(&o, b"other", 1))
            .await
            .unwrap(),
        k1
    );
    let k2 = wrapped_key(&o, b"v2", 2);
    assert_eq!(s.replace(&k2, 5).await, Err(StoreError::Conflict));
    s.replace(&k2, 1).await.unwrap();
    assert_eq!(
        s.replace(&wrapped_key(&o, b"v3", 3), 1).await,
        Err(StoreError::Conflict)
    );
    assert_eq!(DataKeyStore::get(&s, &o).await.unwrap(), Some(k2.clone()));
    assert!(DataKeyStore::delete(&s, &o).await.unwrap());
    assert!(!DataKeyStore::delete(&s, &o).await.unwrap());
    assert_eq!(DataKeyStore::get(&s, &o).await.unwrap(), None);
    assert_eq!(
        s.replace(&wrapped_key(&o, b"v3", 3), 2).await,
        Err(StoreError::Conflict)
    );
    // An erased owner may get a new key.
    let k9 = wrapped_key(&o, b"new", 1);
    assert_eq!(s.put_if_absent(&k9).await.unwrap(), k9);
    assert_eq!(DataKeyStore::get(&s, &o).await.unwrap(), Some(k9));
    assert!(!DataKeyStore::delete(&s, &unique("nobody")).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_keys_concurrent_puts_and_replaces() {
    let (s, name, uri) = store!();
    let (b, _) = strict_store(&uri, &name).await;
    let o = unique("o");
    let stores = [s.clone(), b.clone()];
    let o2 = o.clone();
    let got = race(16, move |i| {
        let st = stores[i % 2].clone();
        let k = wrapped_key(&o2, format!("w{i}").as_bytes(), 1);
        async move { st.put_if_absent(&k).await.unwrap() }
    })
    .await;
    assert!(
        got.windows(2).all(|w| w[0] == w[1]),
        "everyone gets the stored key"
    );
    assert_eq!(
        DataKeyStore::get(&s, &o).await.unwrap().as_ref(),
        got.first()
    );
    let stores = [s.clone(), b];
    let o2 = o.clone();
    let results = race(12, move |i| {
        let st = stores[i % 2].clone();
        let k = wrapped_key(&o2, format!("r{i}").as_bytes(), 2);
        async move { st.replace(&k, 1).await.map(|()| k) }
    })
    .await;
    let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert_eq!(
        DataKeyStore::get(&s, &o).await.unwrap().as_ref(),
        Some(winners[0])
    );
}

/// Key material left in `data_keys` for `owner`.
async fn material(uri: &str, name: &str, owner: &str) -> usize {
    use futures::TryStreamExt;
    let docs: Vec<Document> = raw_db(uri, name)
        .await
        .collection::<Document>("data_keys")
        .find(doc! { "owner": owner })
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    docs.iter()
        .filter(|d| {
            d.get_binary_generic("wrapped")
                .map(|b| !b.is_empty())
                .unwrap_or(true)
                || d.get_str("state") == Ok("key")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replace_racing_an_erasure_never_brings_the_key_back() {
    let (s, name, uri) = store!();
    let (b, _) = strict_store(&uri, &name).await;
    for round in 0..6 {
        let o = unique("o");
        s.put_if_absent(&wrapped_key(&o, b"v1", 1)).await.unwrap();
        let (eraser, rewrapper) = (s.clone(), b.clone());
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
            DataKeyStore::get(&s, &o).await.unwrap(),
            None,
            "round {round}: {replaced:?}"
        );
        assert_eq!(
            material(&uri, &name, &o).await,
            0,
            "round {round}: no key material left"
        );
        // A late re-wrap of either version changes nothing.
        for v in [1, 2] {
            assert_eq!(
                b.replace(&wrapped_key(&o, b"v3", 3), v).await,
                Err(StoreError::Conflict)
            );
        }
        assert_eq!(DataKeyStore::get(&b, &o).await.unwrap(), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_keys_list_skips_erased_owners() {
    let (s, _, _) = store!();
    let p = unique("o");
    for i in 0..5 {
        let o = format!("{p}-{i}");
        s.put_if_absent(&wrapped_key(&o, b"k", 1)).await.unwrap();
        if i == 1 {
            s.replace(&wrapped_key(&o, b"k2", 2), 1).await.unwrap();
        }
        if i == 3 {
            DataKeyStore::delete(&s, &o).await.unwrap();
        }
    }
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = DataKeyStore::list(&s, after.clone(), 2).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|k| k.owner.clone());
        paged.extend(page);
    }
    let owners: Vec<_> = paged.iter().map(|k| k.owner.clone()).collect();
    assert_eq!(owners, [0, 1, 2, 4].map(|i| format!("{p}-{i}")));
    assert_eq!(paged[1].version, 2);
    assert!(DataKeyStore::list(&s, None, 0).await.unwrap().is_empty());
}

// ---------------------------------------------------------- the one wallet

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wallet_with_every_status_round_trips() {
    let (s, _, _) = store!();
    let u = user(&unique("u"));
    let w = wallet(&u, 3, at(0));
    let statuses: Vec<_> = w.bindings().iter().map(|b| b.status).collect();
    assert_eq!(
        statuses,
        [
            BindingStatus::Active,
            BindingStatus::PendingVerification,
            BindingStatus::Failed
        ]
    );
    s.commit(
        &w,
        None,
        vec![event(AuditAction::BindingCreate, Some(&u), None, at(0))],
        at(0),
    )
    .await
    .unwrap();
    assert_eq!(s.load(&u).await.unwrap().unwrap().wallet, w);
}
