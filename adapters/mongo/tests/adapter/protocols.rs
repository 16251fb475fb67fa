//! The adapter's own protocols: rate slots of a reused key, seen ids
//! replaced after expiry, idempotency purge, card data deletes, audit
//! listing.

use super::*;

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
        Claim::InProgress {
            lease_until: at(260)
        }
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

fn millis(t: cardbind_domain::Timestamp) -> i64 {
    t.unix_millis()
}

/// How many records a key has, whatever their kind.
async fn records_of(s: &MongoStore, key: &str) -> u64 {
    s.database()
        .collection::<Document>("idempotency")
        .count_documents(doc! { "scope": "s", "key": key })
        .max_time(Duration::from_secs(10))
        .comment("idempotency.purge_created_before")
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_between_the_purges_read_and_its_delete_keeps_the_key_to_its_attempt() {
    let Some(uri) = uri() else { return };
    let (s, _) = fresh_store(&uri).await;
    let k = unique("k");
    s.claim("s", &k, "h", at(0), at(10)).await.unwrap();
    assert!(s.release("s", &k, Lease { attempt: 1 }).await.unwrap());
    // The purge reads record 2 (old) as the newest; before it deletes, a
    // retry claims the key's next attempt.
    assert_eq!(
        s.claim("s", &k, "h", at(200), at(260)).await.unwrap(),
        Claim::Acquired(Lease { attempt: 2 })
    );
    assert_eq!(
        s.purge_key_as_read("s", &k, 2, millis(at(100)))
            .await
            .unwrap(),
        0
    );
    // Attempt 2 still holds the key alone: a new claim does not start it
    // afresh beside it.
    assert_eq!(
        s.claim("s", &k, "h", at(201), at(261)).await.unwrap(),
        Claim::InProgress {
            lease_until: at(260)
        }
    );
    assert!(s
        .complete("s", &k, Lease { attempt: 2 }, &response("2"))
        .await
        .unwrap());
    match s.claim("s", &k, "h", at(202), at(262)).await.unwrap() {
        Claim::Completed(r) => assert_eq!(r.body, b"2"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_record_written_after_the_purges_read_stops_its_marker() {
    let Some(uri) = uri() else { return };
    let (s, _) = fresh_store(&uri).await;
    let k = unique("k");
    s.claim("s", &k, "h", at(0), at(10)).await.unwrap();
    // The purge reads the claim (record 1) as the newest; then its holder,
    // slow but not taken over, completes: record 2, dated by its attempt
    // (old too).
    assert!(s
        .complete("s", &k, Lease { attempt: 1 }, &response("1"))
        .await
        .unwrap());
    assert_eq!(
        s.purge_key_as_read("s", &k, 1, millis(at(100)))
            .await
            .unwrap(),
        0
    );
    assert_eq!(records_of(&s, &k).await, 2);
    match s.claim("s", &k, "h", at(200), at(260)).await.unwrap() {
        Claim::Completed(r) => assert_eq!(r.body, b"1"),
        other => panic!("{other:?}"),
    }
    // The next purge takes the whole key.
    assert_eq!(s.purge_created_before(at(100)).await.unwrap(), 2);
    assert_eq!(records_of(&s, &k).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_purge_stopped_after_its_marker_is_finished_and_a_late_delete_spares_the_fresh_key() {
    let Some(uri) = uri() else { return };
    let (s, _) = fresh_store(&uri).await;
    let (by_claim, by_purge) = (unique("k"), unique("k"));
    for k in [&by_claim, &by_purge] {
        s.claim("s", k, "h", at(0), at(10)).await.unwrap();
        assert!(s
            .complete("s", k, Lease { attempt: 1 }, &response("old"))
            .await
            .unwrap());
        // The marker lands after record 2; the purge goes no further.
        assert_eq!(
            s.mark_for_purge("s", k, 2, millis(at(100))).await.unwrap(),
            Some(millis(at(100)) - 1)
        );
    }
    // A claim finds the marker: it finishes the delete and starts the key
    // afresh (neither the old response nor a mismatch).
    assert_eq!(
        s.claim("s", &by_claim, "new", at(200), at(260))
            .await
            .unwrap(),
        Claim::Acquired(Lease { attempt: 1 })
    );
    assert_eq!(records_of(&s, &by_claim).await, 1);
    // The stopped purge's delete, run late, leaves the fresh start alone.
    assert_eq!(
        s.sweep("s", &by_claim, 3, millis(at(100)) - 1, "idempotency.claim")
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        s.claim("s", &by_claim, "new", at(201), at(261))
            .await
            .unwrap(),
        Claim::InProgress {
            lease_until: at(260)
        }
    );
    assert!(s
        .complete("s", &by_claim, Lease { attempt: 1 }, &response("new"))
        .await
        .unwrap());
    // The next purge run finishes the other key (its two records).
    assert_eq!(s.purge_created_before(at(100)).await.unwrap(), 2);
    assert_eq!(records_of(&s, &by_purge).await, 0);
    assert_eq!(records_of(&s, &by_claim).await, 2);
    assert_eq!(
        s.claim("s", &by_purge, "new", at(202), at(262))
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

/// Review entries queued by an older version carry no `link`: any removal
/// takes one, and an entry of a later stint in review replaces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_entries_without_a_link_go_with_any_removal() {
    let Some(uri) = uri() else { return };
    let (s, _) = fresh_store(&uri).await;
    let u = user_id(&unique("u"));
    let [a, b] = ["card-a", "card-b"].map(|c| binding_id(&unique(c)));
    let queue = s.database().collection::<Document>("review_queue");
    for card in [&a, &b] {
        queue
            .insert_one(doc! { "binding": card.as_str(), "user": u.as_str(), "since": 5_000_i64 })
            .comment("review.add")
            .await
            .unwrap();
    }
    let old = ReviewQueue::get(&s, &a).await.unwrap().unwrap();
    assert_eq!(old.link, 0);
    ReviewQueue::remove(&s, &a, 1).await.unwrap();
    assert_eq!(ReviewQueue::get(&s, &a).await.unwrap(), None);
    let later = ReviewEntry {
        binding: b.clone(),
        user: u.clone(),
        since: at(9),
        link: 2,
    };
    ReviewQueue::add(&s, &later).await.unwrap();
    assert_eq!(ReviewQueue::get(&s, &b).await.unwrap(), Some(later));
    assert_eq!(
        queue
            .count_documents(doc! { "binding": b.as_str() })
            .await
            .unwrap(),
        1,
        "replaced, not added beside"
    );
}

/// References written before they carried a generation (no `generation`
/// field) go with the unbind of their card, whichever generation it
/// names; one given again by a later bind of the card is that bind's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_without_a_generation_go_with_their_cards_unbind() {
    let Some(uri) = uri() else { return };
    let (s, _) = fresh_store(&uri).await;
    let (u, b) = (user_id(&unique("u")), binding_id(&unique("card")));
    let [old1, old2, new1] = ["old-1", "old-2", "new-1"].map(unique);
    let refs = s.database().collection::<Document>("channel_refs");
    for r in [&old1, &old2] {
        refs.insert_one(doc! {
            "channel": "alipay",
            "channel_ref": r.as_str(),
            "user": u.as_str(),
            "binding": b.as_str(),
        })
        .comment("channel_refs.put")
        .await
        .unwrap();
    }
    let t = RefTarget {
        user: u.clone(),
        binding: b.clone(),
    };
    ChannelRefs::put(&s, &channel("alipay"), &old2, &t, 8)
        .await
        .unwrap();
    ChannelRefs::put(&s, &channel("alipay"), &new1, &t, 8)
        .await
        .unwrap();
    assert_eq!(
        ChannelRefs::delete_binding(&s, &u, &b, Some(5))
            .await
            .unwrap(),
        1,
        "old-1, of no known generation"
    );
    for (r, kept) in [(&old1, false), (&old2, true), (&new1, true)] {
        let found = ChannelRefs::find(&s, &channel("alipay"), r).await.unwrap();
        assert_eq!(found.is_some(), kept, "{r}");
    }
    // The sweep's walk reads one without a generation as such, and its
    // delete takes it only as read.
    let old3 = unique("old-3");
    refs.insert_one(doc! {
        "channel": "wechat",
        "channel_ref": old3.as_str(),
        "user": u.as_str(),
        "binding": b.as_str(),
    })
    .comment("channel_refs.put")
    .await
    .unwrap();
    let listed = ChannelRefs::list(&s, Some((channel("alipay"), new1.clone())), 10)
        .await
        .unwrap();
    let seen: Vec<(&str, Option<u32>)> = listed
        .iter()
        .map(|e| (e.channel_ref.as_str(), e.generation))
        .collect();
    assert_eq!(seen, [(old2.as_str(), Some(8)), (old3.as_str(), None)]);
    let mut as_if_newer = listed[1].clone();
    as_if_newer.generation = Some(8);
    assert_eq!(
        ChannelRefs::delete_entry(&s, &as_if_newer).await.unwrap(),
        0
    );
    assert_eq!(ChannelRefs::delete_entry(&s, &listed[1]).await.unwrap(), 1);
    assert_eq!(
        ChannelRefs::find(&s, &channel("wechat"), &old3)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        ChannelRefs::delete_binding(&s, &u, &b, Some(8))
            .await
            .unwrap(),
        2
    );
}

/// A reference given again to its card by another bind (the mock gives
/// every bind of a card the same one) is a new document, not the old one
/// updated in place: FerretDB deletes what a filter matched by the `_id`
/// it read, so an unbind's delete of the bind before's record (generation
/// 1), read just before the new bind's put, must not remove the new
/// bind's record (generation 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_given_again_is_a_new_document_that_a_delete_as_read_before_leaves() {
    let Some(uri) = uri() else { return };
    let (s, _) = fresh_store(&uri).await;
    let (u, b) = (user_id(&unique("u")), binding_id(&unique("card")));
    let r = unique("mock-ref");
    let t = RefTarget {
        user: u.clone(),
        binding: b.clone(),
    };
    let refs = s.database().collection::<Document>("channel_refs");
    let key = doc! { "channel": "mock", "channel_ref": r.as_str() };
    assert!(ChannelRefs::put(&s, &channel("mock"), &r, &t, 1)
        .await
        .unwrap());
    let first = refs
        .find_one(key.clone())
        .max_time(std::time::Duration::from_secs(5))
        .comment("channel_refs.find")
        .await
        .unwrap()
        .unwrap();
    assert!(ChannelRefs::put(&s, &channel("mock"), &r, &t, 2)
        .await
        .unwrap());
    // The unbind's delete, as FerretDB runs it: by the `_id` it read.
    let mut as_read = key.clone();
    as_read.insert("_id", first.get("_id").cloned().unwrap());
    refs.delete_one(as_read)
        .comment("channel_refs.delete_binding")
        .await
        .unwrap();
    let entry = ChannelRefs::find_entry(&s, &channel("mock"), &r)
        .await
        .unwrap();
    assert_eq!(
        entry.map(|e| (e.target, e.generation)),
        Some((t.clone(), Some(2))),
        "the new bind's record stays"
    );
}
