//! Wallets: commits after the head, one winner among racing commits, and
//! pending links found by time and paged.

use super::*;

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
