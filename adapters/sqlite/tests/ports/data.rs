//! Data keys, card data generations, channel refs and the review queue,
//! and purges past one step.

use super::*;

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
    s.channel_refs.put(&ch, "2088", &target, 1).await.unwrap();
    s.channel_refs.put(&ch, "2088", &target, 2).await.unwrap();
    s.channel_refs
        .put(
            &ch,
            "2088",
            &RefTarget {
                user: uid("v"),
                binding: bid("card-2"),
            },
            3,
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
    let e = s
        .channel_refs
        .find_entry(&ch, "2088")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.channel_refs.delete_entry(&e).await, Ok(1));
    assert_eq!(s.channel_refs.delete_entry(&e).await, Ok(0));
    assert_eq!(s.channel_refs.find(&ch, "2088").await, Ok(None));

    let entry = |b: &str, since| ReviewEntry {
        binding: bid(b),
        user: uid("u"),
        since: t(since),
        link: 2,
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
    s.review.remove(&bid("r1"), 1).await.unwrap();
    assert_eq!(s.review.get(&bid("r1")).await, Ok(Some(entry("r1", 1))));
    s.review.remove(&bid("r1"), 2).await.unwrap();
    s.review.remove(&bid("r1"), 2).await.unwrap();
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
