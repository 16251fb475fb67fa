//! Checks of [`SeenIds`](crate::store::SeenIds).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use super::*;

pub async fn mark_and_seen<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    assert!(!s.seen.seen("notify:mock", "n1", at(0)).await.unwrap());
    assert!(s
        .seen
        .mark("notify:mock", "n1", at(0), at(60))
        .await
        .unwrap());
    assert!(s.seen.seen("notify:mock", "n1", at(1)).await.unwrap());
    assert!(!s
        .seen
        .mark("notify:mock", "n1", at(1), at(60))
        .await
        .unwrap());
    // Namespaces are apart, and do not run into the id.
    assert!(!s.seen.seen("notify:alipay", "n1", at(1)).await.unwrap());
    assert!(!s.seen.seen("notify:moc", "kn1", at(1)).await.unwrap());
}

pub async fn concurrent_marks_one_true<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    let results = race(32, |_| {
        let s = s.clone();
        async move { s.seen.mark("nonce", "abc", at(0), at(300)).await.unwrap() }
    })
    .await;
    assert_eq!(results.iter().filter(|&&b| b).count(), 1);
}

pub async fn expiry<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    s.seen.mark("nonce", "x", at(0), at(10)).await.unwrap();
    assert!(
        s.seen.seen("nonce", "x", at(10)).await.unwrap(),
        "alive at its expiry"
    );
    assert!(!s.seen.seen("nonce", "x", at(11)).await.unwrap());
    // An expired id may be marked again, once.
    let results = race(8, |_| {
        let s = s.clone();
        async move { s.seen.mark("nonce", "x", at(11), at(20)).await.unwrap() }
    })
    .await;
    assert_eq!(results.iter().filter(|&&b| b).count(), 1);
    assert!(s.seen.seen("nonce", "x", at(15)).await.unwrap());
}

pub async fn purge_expired<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    s.seen.mark("ns", "a", at(0), at(10)).await.unwrap();
    s.seen.mark("ns", "b", at(0), at(10)).await.unwrap();
    s.seen.mark("ns", "c", at(0), at(100)).await.unwrap();
    assert_eq!(s.seen.purge_expired(at(10)).await.unwrap(), 0);
    assert_eq!(s.seen.purge_expired(at(11)).await.unwrap(), 2);
    assert!(s.seen.seen("ns", "c", at(11)).await.unwrap());
    assert!(s.seen.mark("ns", "a", at(12), at(20)).await.unwrap());
}
