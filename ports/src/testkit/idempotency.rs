//! Checks of [`IdempotencyStore`](crate::store::IdempotencyStore).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use super::*;
use crate::store::{Claim, Lease, StoredResponse};

fn response(body: &[u8]) -> StoredResponse {
    StoredResponse {
        status: 201,
        content_type: "application/json; charset=utf-8".to_owned(),
        body: body.to_vec(),
    }
}

async fn acquire(s: &Stores, scope: &str, key: &str, hash: &str, now: i64, lease: i64) -> Lease {
    match s
        .idempotency
        .claim(scope, key, hash, at(now), at(lease))
        .await
        .unwrap()
    {
        Claim::Acquired(l) => l,
        other => panic!("expected to acquire {key}, got {other:?}"),
    }
}

pub async fn concurrent_claims_one_acquires<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    let results = race(32, |_| {
        let s = s.clone();
        async move { s.idempotency.claim("svc", "k1", "h", at(0), at(60)).await }
    })
    .await;
    let acquired = results
        .iter()
        .filter(|r| matches!(r, Ok(Claim::Acquired(_))))
        .count();
    assert_eq!(acquired, 1);
    assert!(results.iter().all(|r| matches!(r, Ok(Claim::Acquired(_)))
        || *r
            == Ok(Claim::InProgress {
                lease_until: at(60)
            })));
}

pub async fn completed_replays_bytes<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    let lease = acquire(&s, "svc", "k2", "h", 0, 60).await;
    assert_eq!(lease.attempt, 1);
    let body = b"{\"id\":\"card-1\",\"name\":\"\xe4\xb8\xad\"}\x00\xff".to_vec();
    assert!(s
        .idempotency
        .complete("svc", "k2", lease, &response(&body))
        .await
        .unwrap());
    for t in [1, 3600] {
        assert_eq!(
            s.idempotency
                .claim("svc", "k2", "h", at(t), at(t + 60))
                .await
                .unwrap(),
            Claim::Completed(response(&body))
        );
    }
    // A completed attempt cannot be released or renewed.
    assert!(!s.idempotency.release("svc", "k2", lease).await.unwrap());
    assert!(!s
        .idempotency
        .renew("svc", "k2", lease, at(999))
        .await
        .unwrap());
}

pub async fn other_request_is_a_mismatch<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    let lease = acquire(&s, "svc", "k3", "h1", 0, 60).await;
    assert_eq!(
        s.idempotency
            .claim("svc", "k3", "h2", at(1), at(61))
            .await
            .unwrap(),
        Claim::Mismatch
    );
    s.idempotency
        .complete("svc", "k3", lease, &response(b"x"))
        .await
        .unwrap();
    assert_eq!(
        s.idempotency
            .claim("svc", "k3", "h2", at(2), at(62))
            .await
            .unwrap(),
        Claim::Mismatch
    );
}

pub async fn a_released_key_stays_bound_to_its_request<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    let lease = acquire(&s, "svc", "k3r", "h1", 0, 60).await;
    assert!(s.idempotency.release("svc", "k3r", lease).await.unwrap());
    // Released, then another request under the same key: still a mismatch
    // (a retry of the first may come), not a new attempt.
    assert_eq!(
        s.idempotency
            .claim("svc", "k3r", "h2", at(1), at(61))
            .await
            .unwrap(),
        Claim::Mismatch
    );
    let retry = acquire(&s, "svc", "k3r", "h1", 2, 62).await;
    assert!(retry.attempt > lease.attempt);
}

/// A key given up by `forget` (its request was refused as malformed)
/// takes any request next, once; the attempt that took it binds it again.
pub async fn a_forgotten_key_takes_any_request<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    let bad = acquire(&s, "svc", "k3f", "h-bad", 0, 60).await;
    assert!(s.idempotency.forget("svc", "k3f", bad).await.unwrap());
    // Neither a second forget nor a release of that attempt changes it.
    assert!(!s.idempotency.forget("svc", "k3f", bad).await.unwrap());
    assert!(!s.idempotency.release("svc", "k3f", bad).await.unwrap());
    let mended = acquire(&s, "svc", "k3f", "h-mended", 1, 61).await;
    assert!(mended.attempt > bad.attempt);
    // The mended request holds the key now: the first one is another's.
    assert_eq!(
        s.idempotency
            .claim("svc", "k3f", "h-bad", at(2), at(62))
            .await
            .unwrap(),
        Claim::Mismatch
    );
    assert!(s.idempotency.release("svc", "k3f", mended).await.unwrap());
    assert_eq!(
        s.idempotency
            .claim("svc", "k3f", "h-bad", at(3), at(63))
            .await
            .unwrap(),
        Claim::Mismatch
    );
    // A late forget of the first attempt cannot free the key again.
    let retry = acquire(&s, "svc", "k3f", "h-mended", 4, 64).await;
    assert!(!s.idempotency.forget("svc", "k3f", bad).await.unwrap());
    assert_eq!(
        s.idempotency
            .claim("svc", "k3f", "h-other", at(5), at(65))
            .await
            .unwrap(),
        Claim::Mismatch
    );
    assert!(retry.attempt > mended.attempt);
}

pub async fn keys_are_scoped_by_caller<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    acquire(&s, "service:a", "k4", "h", 0, 60).await;
    acquire(&s, "service:b", "k4", "h", 0, 60).await;
    // Scope and key do not run together.
    acquire(&s, "service:a", "k4x", "h", 0, 60).await;
    acquire(&s, "service:ak", "4x", "h", 0, 60).await;
}

pub async fn release_starts_a_new_attempt<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    let first = acquire(&s, "svc", "k5", "h", 0, 60).await;
    assert!(s.idempotency.release("svc", "k5", first).await.unwrap());
    let second = acquire(&s, "svc", "k5", "h", 1, 61).await;
    assert!(second.attempt > first.attempt);
    // Releasing twice changes nothing.
    assert!(!s.idempotency.release("svc", "k5", first).await.unwrap());
    assert_eq!(
        s.idempotency
            .claim("svc", "k5", "h", at(2), at(62))
            .await
            .unwrap(),
        Claim::InProgress {
            lease_until: at(61)
        }
    );
}

/// A released or forgotten attempt is over: its holder can neither
/// complete it (a claim would then replay a response for work given up)
/// nor renew it, even while no newer attempt exists.
pub async fn a_released_attempt_is_neither_completed_nor_renewed<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    for (key, forget) in [("k5r", false), ("k5f", true)] {
        let lease = acquire(&s, "svc", key, "h", 0, 60).await;
        let given_up = if forget {
            s.idempotency.forget("svc", key, lease).await.unwrap()
        } else {
            s.idempotency.release("svc", key, lease).await.unwrap()
        };
        assert!(given_up, "{key}");
        assert!(
            !s.idempotency
                .complete("svc", key, lease, &response(b"late"))
                .await
                .unwrap(),
            "{key}: completed after it was given up"
        );
        assert!(
            !s.idempotency
                .renew("svc", key, lease, at(120))
                .await
                .unwrap(),
            "{key}: renewed after it was given up"
        );
        // The next claim runs the work again; nothing is replayed.
        let next = acquire(&s, "svc", key, "h", 1, 61).await;
        assert!(next.attempt > lease.attempt, "{key}");
    }
}

pub async fn expired_lease_is_taken_over_with_a_new_token<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    let first = acquire(&s, "svc", "k6", "h", 0, 60).await;
    // Alive at the lease's own instant.
    assert_eq!(
        s.idempotency
            .claim("svc", "k6", "h", at(60), at(120))
            .await
            .unwrap(),
        Claim::InProgress {
            lease_until: at(60)
        }
    );
    let results = race(16, |_| {
        let s = s.clone();
        async move { s.idempotency.claim("svc", "k6", "h", at(61), at(121)).await }
    })
    .await;
    let taken: Vec<Lease> = results
        .iter()
        .filter_map(|r| match r {
            Ok(Claim::Acquired(l)) => Some(*l),
            _ => None,
        })
        .collect();
    assert_eq!(taken.len(), 1, "one taker of an expired lease");
    assert!(taken[0].attempt > first.attempt);
}

pub async fn late_holder_is_fenced<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    let late = acquire(&s, "svc", "k7", "h", 0, 60).await;
    let now = acquire(&s, "svc", "k7", "h", 61, 121).await;
    assert!(!s
        .idempotency
        .renew("svc", "k7", late, at(200))
        .await
        .unwrap());
    assert!(!s.idempotency.release("svc", "k7", late).await.unwrap());
    assert_eq!(
        s.idempotency
            .claim("svc", "k7", "h", at(62), at(122))
            .await
            .unwrap(),
        Claim::InProgress {
            lease_until: at(121)
        },
        "the late holder's release did not free the new attempt"
    );
    assert!(!s
        .idempotency
        .complete("svc", "k7", late, &response(b"late"))
        .await
        .unwrap());
    assert_eq!(
        s.idempotency
            .claim("svc", "k7", "h", at(63), at(123))
            .await
            .unwrap(),
        Claim::InProgress {
            lease_until: at(121)
        },
        "the late holder's response is not replayed"
    );
    assert!(s
        .idempotency
        .complete("svc", "k7", now, &response(b"current"))
        .await
        .unwrap());
    assert_eq!(
        s.idempotency
            .claim("svc", "k7", "h", at(64), at(124))
            .await
            .unwrap(),
        Claim::Completed(response(b"current"))
    );
}

pub async fn renewed_lease_is_not_taken_over<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    let lease = acquire(&s, "svc", "k8", "h", 0, 60).await;
    assert!(s
        .idempotency
        .renew("svc", "k8", lease, at(120))
        .await
        .unwrap());
    assert_eq!(
        s.idempotency
            .claim("svc", "k8", "h", at(90), at(150))
            .await
            .unwrap(),
        Claim::InProgress {
            lease_until: at(120)
        },
        "the renewed lease"
    );
    assert!(matches!(
        s.idempotency
            .claim("svc", "k8", "h", at(121), at(181))
            .await
            .unwrap(),
        Claim::Acquired(_)
    ));
}

pub async fn purge_created_before<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    let old = acquire(&s, "svc", "old", "h", 0, 60).await;
    s.idempotency
        .complete("svc", "old", old, &response(b"o"))
        .await
        .unwrap();
    let old2 = acquire(&s, "svc", "old2", "h", 5, 65).await;
    s.idempotency.release("svc", "old2", old2).await.unwrap();
    acquire(&s, "svc", "old2", "h", 6, 66).await;
    acquire(&s, "svc", "new", "h", 100, 160).await;
    let n = s.idempotency.purge_created_before(at(100)).await.unwrap();
    assert!(n >= 2, "both old keys are purged (records: {n})");
    assert!(matches!(
        s.idempotency
            .claim("svc", "old", "other", at(200), at(260))
            .await
            .unwrap(),
        Claim::Acquired(_)
    ));
    assert!(matches!(
        s.idempotency
            .claim("svc", "old2", "other", at(200), at(260))
            .await
            .unwrap(),
        Claim::Acquired(_)
    ));
    assert_eq!(
        s.idempotency
            .claim("svc", "new", "h", at(101), at(161))
            .await
            .unwrap(),
        Claim::InProgress {
            lease_until: at(160)
        }
    );
    assert_eq!(
        s.idempotency.purge_created_before(at(100)).await.unwrap(),
        0
    );
}
