//! The ports' contracts on SQLite, races included (until the shared
//! contract suite covers them).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use cardbind_domain::{SealedBlob, SealedCard};
use cardbind_ports::audit::{verify_links, AuditAction, AuditFilter, ChainId};
use cardbind_ports::store::{
    CardData, Claim, Lease, LinkKey, RateTake, RateWindow, RefTarget, ReviewEntry, StoredResponse,
    WrappedKey,
};
use cardbind_ports::StoreError;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wallets_commit_after_the_head_and_load_the_newest() {
    let (_d, s) = fresh_ports();
    let alice = uid("alice");
    assert_eq!(s.wallets.load(&alice).await, Ok(None));
    let w1 = wallet(&alice, 1, false, t(0));
    let ev = |a| vec![event(Some(&alice), Some("alice-card-0"), a, t(0))];
    let h1 = s
        .wallets
        .commit(&w1, None, ev(AuditAction::BindingCreate), t(1))
        .await
        .unwrap();
    assert_eq!((h1.seq, h1.at), (1, t(1)));
    assert_eq!(
        s.wallets
            .commit(&w1, None, ev(AuditAction::BindingCreate), t(1))
            .await,
        Err(StoreError::Conflict),
        "a second first link"
    );
    let w2 = wallet(&alice, 3, true, t(2));
    // A clock behind the head does not move the chain's instant back.
    let h2 = s
        .wallets
        .commit(&w2, Some(h1.clone()), ev(AuditAction::BindingVerify), t(0))
        .await
        .unwrap();
    assert_eq!((h2.seq, h2.at), (2, t(1)));
    assert_eq!(
        s.wallets
            .commit(&w2, Some(h1.clone()), ev(AuditAction::BindingVerify), t(3))
            .await,
        Err(StoreError::Conflict),
        "stale head"
    );
    let forged = cardbind_ports::audit::ChainHead {
        hash: "0".repeat(64),
        ..h2.clone()
    };
    assert_eq!(
        s.wallets
            .commit(&w2, Some(forged), ev(AuditAction::BindingVerify), t(3))
            .await,
        Err(StoreError::Conflict),
        "right number, wrong hash"
    );
    let not_hex = cardbind_ports::audit::ChainHead {
        hash: "zz".into(),
        ..h2.clone()
    };
    assert_eq!(
        s.wallets
            .commit(&w2, Some(not_hex), ev(AuditAction::BindingVerify), t(3))
            .await,
        Err(StoreError::Conflict)
    );
    let loaded = s.wallets.load(&alice).await.unwrap().unwrap();
    assert_eq!(loaded.wallet, w2, "every field of every card round-trips");
    assert_eq!(loaded.head, h2);
    assert_eq!(
        s.wallets.load(&uid("bob")).await,
        Ok(None),
        "chains are per user"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_16_commits_after_one_head_exactly_one_wins() {
    let (_d, s) = fresh_ports();
    let u = uid("racer");
    let head = s
        .wallets
        .commit(
            &wallet(&u, 1, false, t(0)),
            None,
            vec![event(Some(&u), None, AuditAction::BindingCreate, t(0))],
            t(0),
        )
        .await
        .unwrap();
    for round in 0..5 {
        let head = s.wallets.load(&u).await.unwrap().unwrap().head;
        let results = race(16, |i| {
            let (s, u, head) = (s.clone(), u.clone(), head.clone());
            async move {
                let w = wallet(&u, 1 + (i as u32 % 4), true, t(1));
                s.wallets
                    .commit(
                        &w,
                        Some(head),
                        vec![event(Some(&u), None, AuditAction::BindingFreeze, t(1))],
                        t(round + 1),
                    )
                    .await
            }
        })
        .await;
        let won: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(won.len(), 1, "round {round}: {results:?}");
        assert!(results
            .iter()
            .all(|r| r.is_ok() || r == &Err(StoreError::Conflict)));
        assert_eq!(&s.wallets.load(&u).await.unwrap().unwrap().head, won[0]);
    }
    // The chain has no fork: 1 + 5 links, verifying.
    let links = s.audit.links(None, 100).await.unwrap();
    assert_eq!(links.len(), 6);
    assert_eq!(verify_links(&links), Ok(6));
    assert_eq!(links[0].hash, head.hash);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pending_links_are_found_by_time_and_paged() {
    let (_d, s) = fresh_ports();
    let mut expected = Vec::new();
    for (i, name) in ["u3", "u1", "u2", "u4"].iter().enumerate() {
        let u = uid(name);
        let mut head = None;
        for step in 0..3i64 {
            // Only u1..u3's second links hold a pending card.
            let pending = step == 1 && *name != "u4";
            let h = s
                .wallets
                .commit(
                    &wallet(&u, 2, pending, t(0)),
                    head.clone(),
                    vec![event(Some(&u), None, AuditAction::BindingCreate, t(0))],
                    t(10 * step + (i as i64 % 2)),
                )
                .await
                .unwrap();
            if pending {
                expected.push(LinkKey {
                    at: h.at,
                    user: u.clone(),
                    seq: h.seq,
                });
            }
            head = Some(h);
        }
    }
    expected.sort();
    let all = s
        .wallets
        .pending_links(t(0), t(100), None, 100)
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|p| p.key.clone()).collect::<Vec<_>>(),
        expected
    );
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .wallets
            .pending_links(t(0), t(100), after.clone(), 2)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|p| p.key.clone());
        paged.extend(page.into_iter().map(|p| p.key));
    }
    assert_eq!(paged, expected);
    assert_eq!(
        s.wallets
            .pending_links(t(11), t(100), None, 100)
            .await
            .unwrap()
            .len(),
        1,
        "from is inclusive: u1's link at 11"
    );
    assert_eq!(
        s.wallets
            .pending_links(t(10), t(11), None, 100)
            .await
            .unwrap()
            .len(),
        2,
        "to is exclusive: u2's and u3's at 10"
    );
    assert_eq!(
        s.wallets
            .pending_links(t(11), t(12), None, 100)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        s.wallets
            .pending_links(t(0), t(100), None, 0)
            .await
            .unwrap()
            .is_empty(),
        "limit 0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_system_appends_make_one_unbroken_chain() {
    let (_d, s) = fresh_ports();
    race(32, |i| {
        let s = s.clone();
        async move {
            s.audit
                .append_system(
                    vec![event(None, None, AuditAction::RetentionPurge, t(i as i64))],
                    t(i as i64),
                )
                .await
                .unwrap()
        }
    })
    .await;
    let links = s.audit.links(None, 1000).await.unwrap();
    assert_eq!(links.len(), 32);
    assert!(links.iter().all(|l| l.chain == ChainId::System));
    assert_eq!(verify_links(&links), Ok(32), "no fork, no gap");
    assert_eq!(
        links.iter().map(|l| l.seq).collect::<Vec<_>>(),
        (1..=32).collect::<Vec<_>>()
    );
}

/// Every event of the store, by walking the links.
async fn whole_log(
    s: &cardbind_sqlite::SqlitePorts,
) -> Vec<(
    cardbind_ports::audit::AuditCursor,
    cardbind_ports::audit::AuditEvent,
)> {
    let mut out = Vec::new();
    for l in s.audit.links(None, 10_000).await.unwrap() {
        for (i, e) in l.events.iter().enumerate() {
            out.push((
                cardbind_ports::audit::AuditCursor {
                    at: l.at,
                    chain: l.chain.clone(),
                    seq: l.seq,
                    index: i as u32,
                },
                e.clone(),
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_audit_log_lists_by_every_filter_in_cursor_order() {
    let (_d, s) = fresh_ports();
    let users = [uid("ann"), uid("zed"), uid("Bob")];
    let actions = [
        AuditAction::BindingCreate,
        AuditAction::BindingFreeze,
        AuditAction::CardDataOpen,
    ];
    for round in 0..6i64 {
        for (ui, u) in users.iter().enumerate() {
            let head = s.wallets.load(u).await.unwrap().map(|w| w.head);
            let card = format!("{}-card-{}", u.as_str(), round % 2);
            let events = vec![
                event(
                    Some(u),
                    Some(&card),
                    actions[(round as usize + ui) % 3],
                    t(round),
                ),
                event(Some(u), None, actions[ui % 3], t(round)),
            ];
            // Several chains share instants: the cursor orders by chain.
            s.wallets
                .commit(&wallet(u, 2, false, t(0)), head, events, t(round / 2))
                .await
                .unwrap();
        }
        // The service's chain, with an event naming a user.
        s.audit
            .append_system(
                vec![event(
                    Some(&users[0]),
                    None,
                    AuditAction::AccessDenied,
                    t(round),
                )],
                t(round / 2),
            )
            .await
            .unwrap();
    }
    let log = whole_log(&s).await;
    assert_eq!(log.len(), 6 * 3 * 2 + 6);
    let filters = vec![
        AuditFilter::default(),
        AuditFilter {
            user_id: Some(users[0].clone()),
            ..Default::default()
        },
        AuditFilter {
            binding_id: Some(bid("zed-card-1")),
            ..Default::default()
        },
        AuditFilter {
            action: Some(AuditAction::BindingFreeze),
            ..Default::default()
        },
        AuditFilter {
            action: Some(AuditAction::AccessDenied),
            since: Some(t(1)),
            ..Default::default()
        },
        AuditFilter {
            user_id: Some(users[2].clone()),
            action: Some(AuditAction::CardDataOpen),
            ..Default::default()
        },
        AuditFilter {
            since: Some(t(1)),
            until: Some(t(2)),
            ..Default::default()
        },
        AuditFilter {
            binding_id: Some(bid("ann-card-0")),
            user_id: Some(users[0].clone()),
            until: Some(t(2)),
            ..Default::default()
        },
        AuditFilter {
            user_id: Some(uid("nobody")),
            ..Default::default()
        },
    ];
    for f in filters {
        let want: Vec<_> = log.iter().filter(|(c, e)| f.matches(c.at, e)).collect();
        for page in [1u32, 4, 1000] {
            let mut got = Vec::new();
            let mut after = None;
            loop {
                let batch = s.audit.list(&f, after.clone(), page).await.unwrap();
                assert!(batch.len() <= page as usize);
                if batch.is_empty() {
                    break;
                }
                after = batch.last().map(|r| r.cursor.clone());
                got.extend(batch);
            }
            assert_eq!(got.len(), want.len(), "{f:?} by {page}");
            for (g, (c, e)) in got.iter().zip(&want) {
                assert_eq!((&g.cursor, &g.event), (c, e), "{f:?} by {page}");
            }
        }
    }
    // Each record names its link's hash.
    let links = s.audit.links(None, 1000).await.unwrap();
    for r in s
        .audit
        .list(&AuditFilter::default(), None, 1000)
        .await
        .unwrap()
    {
        let l = links
            .iter()
            .find(|l| l.chain == r.cursor.chain && l.seq == r.cursor.seq)
            .unwrap();
        assert_eq!(r.link_hash, l.hash);
    }
    assert!(s
        .audit
        .list(&AuditFilter::default(), None, 0)
        .await
        .unwrap()
        .is_empty());
    // The walk pages by (chain, seq): users in id order, then the service.
    let mut walked = Vec::new();
    let mut after = None;
    loop {
        let page = s.audit.links(after.clone(), 5).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|l| (l.chain.clone(), l.seq));
        walked.extend(page);
    }
    assert_eq!(walked, links);
    let order: Vec<_> = walked.iter().map(|l| (l.chain.clone(), l.seq)).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);
    assert_eq!(
        walked.first().unwrap().chain,
        ChainId::System,
        "@system sorts before these users"
    );
    assert_eq!(verify_links(&walked), Ok(walked.len() as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_keeps_each_chains_last_link_and_numbering_goes_on() {
    let (_d, s) = fresh_ports();
    let (a, b) = (uid("a"), uid("b"));
    let mut heads = std::collections::HashMap::new();
    for step in 0..5i64 {
        for u in [&a, &b] {
            let h = s
                .wallets
                .commit(
                    &wallet(u, 1, false, t(0)),
                    heads.get(u).cloned(),
                    vec![event(Some(u), None, AuditAction::BindingFreeze, t(step))],
                    t(step * 10),
                )
                .await
                .unwrap();
            heads.insert(u.clone(), h);
        }
    }
    // b's chain stops early: all its links are old, its last one stays.
    let c = uid("c");
    s.wallets
        .commit(
            &wallet(&c, 1, false, t(0)),
            None,
            vec![event(Some(&c), None, AuditAction::BindingCreate, t(0))],
            t(0),
        )
        .await
        .unwrap();
    s.audit
        .append_system(
            vec![event(None, None, AuditAction::BinTableImport, t(0))],
            t(0),
        )
        .await
        .unwrap();
    // Links at 0, 10, 20 of a and b go (6); c's only link and the service's stay.
    assert_eq!(s.audit.purge_before(t(25)).await, Ok(6));
    assert_eq!(s.audit.purge_before(t(25)).await, Ok(0));
    let left = s.audit.links(None, 100).await.unwrap();
    assert_eq!(
        left.iter()
            .filter(|l| l.chain == ChainId::User(a.clone()))
            .map(|l| l.seq)
            .collect::<Vec<_>>(),
        vec![4, 5]
    );
    assert_eq!(
        verify_links(&left),
        Ok(left.len() as u64),
        "the rest still verifies"
    );
    assert_eq!(
        s.audit.purge_before(t(1000)).await,
        Ok(2),
        "a's and b's 4th"
    );
    assert_eq!(
        s.wallets.load(&c).await.unwrap().unwrap().head.seq,
        1,
        "a chain's last link is its wallet"
    );
    assert_eq!(
        s.audit
            .list(&AuditFilter::default(), None, 100)
            .await
            .unwrap()
            .len(),
        4,
        "the events went with their links"
    );
    let h = s
        .wallets
        .commit(
            &wallet(&a, 1, false, t(0)),
            heads.get(&a).cloned(),
            vec![event(Some(&a), None, AuditAction::BindingUnfreeze, t(60))],
            t(60),
        )
        .await
        .unwrap();
    assert_eq!(h.seq, 6, "numbering goes on after a purge");
    s.audit
        .append_system(
            vec![event(None, None, AuditAction::RetentionPurge, t(60))],
            t(60),
        )
        .await
        .unwrap();
    // "@system" sorts before these users: the walk starts with it.
    let system: Vec<_> = s
        .audit
        .links(None, 2)
        .await
        .unwrap()
        .iter()
        .map(|l| (l.chain.clone(), l.seq))
        .collect();
    assert_eq!(
        system,
        vec![(ChainId::System, 1), (ChainId::System, 2)],
        "the service's last link was kept and its chain goes on"
    );
}

fn response(body: &[u8]) -> StoredResponse {
    StoredResponse {
        status: 201,
        content_type: "application/json".into(),
        body: body.to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_parallel_claims_one_acquires_and_a_late_holder_is_fenced() {
    let (_d, s) = fresh_ports();
    let results = race(32, |_| {
        let s = s.clone();
        async move {
            s.idempotency
                .claim("svc", "k1", "h1", t(0), t(10))
                .await
                .unwrap()
        }
    })
    .await;
    let acquired: Vec<_> = results
        .iter()
        .filter(|c| matches!(c, Claim::Acquired(_)))
        .collect();
    assert_eq!(
        acquired,
        vec![&Claim::Acquired(Lease { attempt: 1 })],
        "{results:?}"
    );
    assert_eq!(
        results.iter().filter(|c| **c == Claim::InProgress).count(),
        31
    );
    let first = Lease { attempt: 1 };
    assert_eq!(
        s.idempotency.claim("svc", "k1", "h2", t(1), t(11)).await,
        Ok(Claim::Mismatch)
    );
    assert_eq!(
        s.idempotency.renew("svc", "k1", first, t(12)).await,
        Ok(true)
    );
    assert_eq!(
        s.idempotency.claim("svc", "k1", "h1", t(12), t(22)).await,
        Ok(Claim::InProgress),
        "alive at its last instant"
    );
    // The lease runs out; of many takeovers one wins, attempt 2.
    let results = race(16, |_| {
        let s = s.clone();
        async move {
            s.idempotency
                .claim("svc", "k1", "h1", t(13), t(23))
                .await
                .unwrap()
        }
    })
    .await;
    assert_eq!(
        results
            .iter()
            .filter(|c| matches!(c, Claim::Acquired(_)))
            .count(),
        1,
        "{results:?}"
    );
    assert!(results.contains(&Claim::Acquired(Lease { attempt: 2 })));
    // The first holder comes back: it can neither finish nor give up.
    assert_eq!(
        s.idempotency
            .complete("svc", "k1", first, &response(b"late"))
            .await,
        Ok(false)
    );
    assert_eq!(s.idempotency.release("svc", "k1", first).await, Ok(false));
    assert_eq!(
        s.idempotency.renew("svc", "k1", first, t(99)).await,
        Ok(false)
    );
    assert_eq!(
        s.idempotency.claim("svc", "k1", "h1", t(14), t(24)).await,
        Ok(Claim::InProgress)
    );
    let second = Lease { attempt: 2 };
    // Bytes that are not UTF-8 survive.
    let body = [b"{\"id\": 1}\n".as_slice(), &[0, 0xff, 0xfe]].concat();
    assert_eq!(
        s.idempotency
            .complete("svc", "k1", second, &response(&body))
            .await,
        Ok(true)
    );
    assert_eq!(
        s.idempotency
            .complete("svc", "k1", second, &response(b"again"))
            .await,
        Ok(false),
        "finished"
    );
    assert_eq!(
        s.idempotency.release("svc", "k1", second).await,
        Ok(false),
        "finished"
    );
    for at in [15, 1000] {
        assert_eq!(
            s.idempotency
                .claim("svc", "k1", "h1", t(at), t(at + 10))
                .await,
            Ok(Claim::Completed(response(&body)))
        );
    }
    assert_eq!(
        s.idempotency.claim("svc", "k1", "h2", t(15), t(25)).await,
        Ok(Claim::Mismatch)
    );
    assert_eq!(
        s.idempotency.claim("other", "k1", "h2", t(15), t(25)).await,
        Ok(Claim::Acquired(Lease { attempt: 1 })),
        "scoped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_released_key_starts_a_new_attempt_and_purge_goes_by_first_claim() {
    let (_d, s) = fresh_ports();
    let Claim::Acquired(l1) = s
        .idempotency
        .claim("svc", "k", "h1", t(0), t(60))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(s.idempotency.release("svc", "k", l1).await, Ok(true));
    assert_eq!(s.idempotency.release("svc", "k", l1).await, Ok(false));
    assert_eq!(
        s.idempotency.claim("svc", "k", "h2", t(1), t(61)).await,
        Ok(Claim::Acquired(Lease { attempt: 2 })),
        "even another request"
    );
    assert_eq!(s.idempotency.release("svc", "nope", l1).await, Ok(false));
    s.idempotency
        .claim("svc", "new", "h", t(100), t(160))
        .await
        .unwrap();
    // "k" was first claimed at 0: both its attempts go.
    assert_eq!(s.idempotency.purge_created_before(t(50)).await, Ok(2));
    assert_eq!(s.idempotency.purge_created_before(t(50)).await, Ok(0));
    assert_eq!(
        s.idempotency.claim("svc", "k", "h3", t(2), t(62)).await,
        Ok(Claim::Acquired(Lease { attempt: 1 }))
    );
    assert_eq!(
        s.idempotency.claim("svc", "new", "h", t(101), t(161)).await,
        Ok(Claim::InProgress)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_takes_racing_hold_the_limit() {
    let (_d, s) = fresh_ports();
    let w = |key: &str, limit| RateWindow {
        key: key.into(),
        limit,
        expires_at: t(60),
    };
    let results = race(40, |_| {
        let s = s.clone();
        let windows = vec![w("minute", 10), w("hour", 25), w("zero", 0)];
        async move { s.rates.take(&windows, t(0)).await.unwrap() }
    })
    .await;
    for (i, limit) in [(0usize, 10u64), (1, 25)] {
        let mut slots: Vec<u64> = results
            .iter()
            .filter_map(|r| match r[i] {
                RateTake::Taken(n) => Some(n),
                RateTake::Full => None,
            })
            .collect();
        slots.sort_unstable();
        assert_eq!(
            slots,
            (1..=limit).collect::<Vec<_>>(),
            "window {i}: each slot once"
        );
    }
    assert!(results.iter().all(|r| r[2] == RateTake::Full), "limit 0");
    assert_eq!(
        s.rates.take(&[w("minute", 11)], t(1)).await,
        Ok(vec![RateTake::Taken(11)]),
        "a raised limit gives more"
    );
    // The same key in a later window starts over.
    let later = RateWindow {
        key: "minute".into(),
        limit: 10,
        expires_at: t(120),
    };
    assert_eq!(
        s.rates.take(std::slice::from_ref(&later), t(61)).await,
        Ok(vec![RateTake::Taken(1)])
    );
    // 11 + 25 slots of windows that ended at 60; the later one stays.
    assert_eq!(
        s.rates.purge_expired(t(60)).await,
        Ok(0),
        "alive at its last instant"
    );
    assert_eq!(s.rates.purge_expired(t(61)).await, Ok(36));
    assert_eq!(
        s.rates.take(&[later], t(62)).await,
        Ok(vec![RateTake::Taken(2)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seen_ids_mark_once_and_expire() {
    let (_d, s) = fresh_ports();
    let results = race(16, |_| {
        let s = s.clone();
        async move { s.seen.mark("notify", "n1", t(0), t(10)).await.unwrap() }
    })
    .await;
    assert_eq!(results.iter().filter(|b| **b).count(), 1);
    assert_eq!(s.seen.seen("notify", "n1", t(10)).await, Ok(true));
    assert_eq!(s.seen.seen("notify", "n1", t(11)).await, Ok(false));
    assert_eq!(
        s.seen.seen("nonce", "n1", t(0)).await,
        Ok(false),
        "namespaces"
    );
    assert_eq!(s.seen.mark("notify", "n1", t(10), t(20)).await, Ok(false));
    assert_eq!(
        s.seen.mark("notify", "n1", t(11), t(20)).await,
        Ok(true),
        "expired: new again"
    );
    s.seen.mark("notify", "old", t(0), t(5)).await.unwrap();
    assert_eq!(s.seen.purge_expired(t(20)).await, Ok(1));
    assert_eq!(s.seen.seen("notify", "n1", t(20)).await, Ok(true));
}

fn key(owner: &str, wrapped: &[u8], version: u64) -> WrappedKey {
    WrappedKey {
        owner: owner.into(),
        master_key_id: "local:1".into(),
        wrapped: wrapped.to_vec(),
        version,
        created_at: t(0),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_keys_one_wins_and_a_deleted_key_never_comes_back() {
    let (_d, s) = fresh_ports();
    let stored = race(16, |i| {
        let s = s.clone();
        async move {
            s.data_keys
                .put_if_absent(&key("u1", &[i as u8; 8], 1))
                .await
                .unwrap()
        }
    })
    .await;
    assert!(
        stored.windows(2).all(|p| p[0] == p[1]),
        "every caller gets the winner"
    );
    assert_eq!(
        s.data_keys.get("u1").await.unwrap().as_ref(),
        Some(&stored[0])
    );
    assert_eq!(s.data_keys.replace(&key("u1", b"v2", 2), 1).await, Ok(()));
    assert_eq!(
        s.data_keys.replace(&key("u1", b"v2b", 2), 1).await,
        Err(StoreError::Conflict)
    );
    let replaced = race(8, |i| {
        let s = s.clone();
        async move { s.data_keys.replace(&key("u1", &[i as u8], 3), 2).await }
    })
    .await;
    assert_eq!(replaced.iter().filter(|r| r.is_ok()).count(), 1);
    // Re-wraps racing erasure: once deleted, no replace brings it back.
    for round in 0..20u64 {
        let owner = format!("erase-{round}");
        s.data_keys
            .put_if_absent(&key(&owner, b"k", 1))
            .await
            .unwrap();
        let (del, rep) = tokio::join!(
            tokio::spawn({
                let (s, o) = (s.clone(), owner.clone());
                async move { s.data_keys.delete(&o).await }
            }),
            tokio::spawn({
                let (s, o) = (s.clone(), owner.clone());
                async move { s.data_keys.replace(&key(&o, b"rewrapped", 2), 1).await }
            })
        );
        assert_eq!(del.unwrap(), Ok(true));
        assert!(matches!(rep.unwrap(), Ok(()) | Err(StoreError::Conflict)));
        assert_eq!(s.data_keys.get(&owner).await, Ok(None), "round {round}");
        assert_eq!(
            s.data_keys.replace(&key(&owner, b"again", 2), 1).await,
            Err(StoreError::Conflict)
        );
        assert_eq!(s.data_keys.delete(&owner).await, Ok(false));
    }
    // An erased owner may get a new key.
    assert_eq!(
        s.data_keys
            .put_if_absent(&key("erase-0", b"new", 1))
            .await
            .unwrap()
            .wrapped,
        b"new"
    );
    let mut owners = Vec::new();
    let mut after = None;
    loop {
        let page = s.data_keys.list(after.clone(), 3).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|k| k.owner.clone());
        owners.extend(page.into_iter().map(|k| k.owner));
    }
    assert_eq!(owners, vec!["erase-0".to_owned(), "u1".to_owned()]);
    assert!(s.data_keys.list(None, 0).await.unwrap().is_empty());
}

fn sealed(tag: u8) -> SealedCard {
    SealedCard {
        pan: SealedBlob::new(vec![tag, 1]),
        holder_name: SealedBlob::new(vec![tag, 2]),
        id_number: SealedBlob::new(vec![tag, 3]),
        phone: SealedBlob::new(vec![tag, 4]),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn card_data_is_stored_once_per_generation() {
    let (_d, s) = fresh_ports();
    let (u, b) = (uid("u"), bid("card-1"));
    let data = |g, tag| CardData {
        binding: b.clone(),
        user: u.clone(),
        generation: g,
        sealed: sealed(tag),
    };
    let results = race(8, |i| {
        let s = s.clone();
        let d = data(1, i as u8);
        async move { s.card_data.put(&d).await }
    })
    .await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(results
        .iter()
        .all(|r| r.is_ok() || r == &Err(StoreError::Duplicate)));
    s.card_data.put(&data(2, 9)).await.unwrap();
    assert_eq!(s.card_data.get(&u, &b, 2).await, Ok(Some(data(2, 9))));
    assert_eq!(
        s.card_data.get(&uid("mallory"), &b, 2).await,
        Ok(None),
        "not another user's"
    );
    assert_eq!(s.card_data.get(&u, &b, 3).await, Ok(None));
    assert_eq!(s.card_data.owner(&b).await, Ok(Some(u.clone())));
    s.card_data.put(&data(3, 8)).await.unwrap();
    assert_eq!(s.card_data.delete(&uid("mallory"), &b, None).await, Ok(0));
    assert_eq!(
        s.card_data.delete(&u, &b, Some(2)).await,
        Ok(2),
        "all but 2"
    );
    assert_eq!(s.card_data.get(&u, &b, 2).await, Ok(Some(data(2, 9))));
    assert_eq!(s.card_data.get(&u, &b, 1).await, Ok(None));
    assert_eq!(s.card_data.delete(&u, &b, Some(2)).await, Ok(0));
    assert_eq!(
        s.card_data.owner(&b).await,
        Ok(Some(u.clone())),
        "2 is left"
    );
    assert_eq!(s.card_data.delete(&u, &b, None).await, Ok(1));
    assert_eq!(s.card_data.owner(&b).await, Ok(None));
    assert_eq!(s.card_data.delete(&u, &b, None).await, Ok(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn channel_refs_keep_their_first_target_and_the_review_queue_its_first_entry() {
    let (_d, s) = fresh_ports();
    let (ch, target) = (
        channel("alipay"),
        RefTarget {
            user: uid("u"),
            binding: bid("card-1"),
        },
    );
    s.channel_refs.put(&ch, "2088", &target).await.unwrap();
    s.channel_refs.put(&ch, "2088", &target).await.unwrap();
    s.channel_refs
        .put(
            &ch,
            "2088",
            &RefTarget {
                user: uid("v"),
                binding: bid("card-2"),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        s.channel_refs.find(&ch, "2088").await,
        Ok(Some(target.clone()))
    );
    assert_eq!(
        s.channel_refs.find(&channel("wechat"), "2088").await,
        Ok(None)
    );
    s.channel_refs.delete(&ch, "2088").await.unwrap();
    s.channel_refs.delete(&ch, "2088").await.unwrap();
    assert_eq!(s.channel_refs.find(&ch, "2088").await, Ok(None));

    let entry = |b: &str, since| ReviewEntry {
        binding: bid(b),
        user: uid("u"),
        since: t(since),
    };
    for b in ["r3", "r1", "r2"] {
        s.review.add(&entry(b, 1)).await.unwrap();
    }
    s.review.add(&entry("r1", 9)).await.unwrap();
    assert_eq!(s.review.get(&bid("r1")).await, Ok(Some(entry("r1", 1))));
    assert_eq!(
        s.review.list(Some(bid("r1")), 5).await,
        Ok(vec![entry("r2", 1), entry("r3", 1)])
    );
    assert_eq!(s.review.list(None, 1).await, Ok(vec![entry("r1", 1)]));
    s.review.remove(&bid("r1")).await.unwrap();
    s.review.remove(&bid("r1")).await.unwrap();
    assert_eq!(s.review.get(&bid("r1")).await, Ok(None));
    assert!(s.review.list(None, 0).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn purges_go_on_past_one_step() {
    let (_d, s) = fresh_ports();
    // 600 users with 3 links each (at 0, 10, 20): the first two of each go.
    let users: Vec<_> = (0..600).map(|i| uid(&format!("p{i:04}"))).collect();
    for (i, u) in users.iter().enumerate() {
        let mut head = None;
        for step in 0..3i64 {
            let ev = vec![event(Some(u), None, AuditAction::BindingFreeze, t(step))];
            let w = wallet(u, 1, false, t(0));
            head = Some(
                s.wallets
                    .commit(&w, head, ev, t(step * 10 + (i as i64 % 3)))
                    .await
                    .unwrap(),
            );
        }
    }
    assert_eq!(s.audit.purge_before(t(25)).await, Ok(1200));
    let left = s.audit.links(None, 10_000).await.unwrap();
    assert_eq!(left.len(), 600);
    assert!(left.iter().all(|l| l.seq == 3));
    // Idempotency attempts, rate windows and seen ids, 4,100 of each.
    let n = 4100;
    let windows: Vec<RateWindow> = (0..n)
        .map(|i| RateWindow {
            key: format!("w{i}"),
            limit: 3,
            expires_at: t(i as i64 % 50),
        })
        .collect();
    for chunk in windows.chunks(100) {
        s.rates.take(chunk, t(0)).await.unwrap();
    }
    let jobs: Vec<_> = (0..n)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let key = format!("k{i}");
                s.idempotency
                    .claim("svc", &key, "h", t(i as i64 % 50), t(100))
                    .await
                    .unwrap();
                s.seen
                    .mark("ns", &key, t(0), t(i as i64 % 50))
                    .await
                    .unwrap();
            })
        })
        .collect();
    for j in jobs {
        j.await.unwrap();
    }
    assert_eq!(s.idempotency.purge_created_before(t(60)).await, Ok(n));
    assert_eq!(s.rates.purge_expired(t(60)).await, Ok(n));
    assert_eq!(s.seen.purge_expired(t(60)).await, Ok(n));
    assert_eq!(s.rates.purge_expired(t(60)).await, Ok(0));
    assert_eq!(
        s.idempotency.claim("svc", "k7", "h2", t(61), t(99)).await,
        Ok(Claim::Acquired(Lease { attempt: 1 })),
        "purged keys are new again"
    );
}
