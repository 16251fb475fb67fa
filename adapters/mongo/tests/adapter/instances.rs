//! Races between separate clients ("instances") on one database.

use super::*;

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
        Claim::InProgress {
            lease_until: at(20)
        }
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
                RateTake::Full | RateTake::Untaken => None,
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
