//! Idempotency records (parallel claims, fencing, release, purge), racing
//! rate takes and seen ids.

use super::*;

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
        results
            .iter()
            .filter(|c| **c == Claim::InProgress { lease_until: t(10) })
            .count(),
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
        Ok(Claim::InProgress { lease_until: t(12) }),
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
        Ok(Claim::InProgress { lease_until: t(23) })
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
async fn a_released_key_starts_a_new_attempt_of_its_request_and_purge_goes_by_first_claim() {
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
        Ok(Claim::Mismatch),
        "a released key stays bound to its request"
    );
    assert_eq!(
        s.idempotency.claim("svc", "k", "h1", t(1), t(61)).await,
        Ok(Claim::Acquired(Lease { attempt: 2 })),
        "its retry"
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
        Ok(Claim::InProgress {
            lease_until: t(160)
        })
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
        let windows = vec![w("minute", 10), w("hour", 25)];
        async move { s.rates.take(&windows, t(0)).await.unwrap() }
    })
    .await;
    // The minute's ten slots go to ten takes; the thirty it refuses keep
    // none of the hour's, which holds the same ten takes.
    for i in [0usize, 1] {
        let mut slots: Vec<u64> = results
            .iter()
            .filter_map(|r| match r[i] {
                RateTake::Taken(n) => Some(n),
                RateTake::Full | RateTake::Untaken => None,
            })
            .collect();
        slots.sort_unstable();
        assert_eq!(
            slots,
            (1..=10).collect::<Vec<_>>(),
            "window {i}: each slot once"
        );
    }
    assert_eq!(
        s.rates.take(&[w("zero", 0), w("other", 5)], t(0)).await,
        Ok(vec![RateTake::Full, RateTake::Untaken]),
        "limit 0"
    );
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
    // 11 + 10 slots of windows that ended at 60 (the refused take left no
    // row of "other"); the later one stays.
    assert_eq!(
        s.rates.purge_expired(t(60)).await,
        Ok(0),
        "alive at its last instant"
    );
    assert_eq!(s.rates.purge_expired(t(61)).await, Ok(21));
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
