//! Checks of [`DataKeyStore`](crate::store::DataKeyStore).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use super::*;
use crate::error::StoreError;

pub async fn put_if_absent_keeps_the_first<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    let k1 = wrapped_key("alice", b"first", 1);
    assert_eq!(s.data_keys.put_if_absent(&k1).await.unwrap(), k1);
    let k2 = wrapped_key("alice", b"second", 1);
    assert_eq!(s.data_keys.put_if_absent(&k2).await.unwrap(), k1);
    assert_eq!(s.data_keys.get("alice").await.unwrap(), Some(k1));
    assert_eq!(s.data_keys.get("bob").await.unwrap(), None);
}

pub async fn concurrent_put_if_absent_one_key<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    let results = race(16, |i| {
        let s = s.clone();
        async move {
            s.data_keys
                .put_if_absent(&wrapped_key("@branch:1", &[i as u8; 8], 1))
                .await
                .unwrap()
        }
    })
    .await;
    let first = results[0].clone();
    assert!(
        results.iter().all(|k| k == &first),
        "every caller sees one key"
    );
    assert_eq!(s.data_keys.get("@branch:1").await.unwrap(), Some(first));
}

pub async fn replace_is_compare_and_set<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    s.data_keys
        .put_if_absent(&wrapped_key("carl", b"v1", 1))
        .await
        .unwrap();
    let results = race(8, |i| {
        let s = s.clone();
        async move {
            s.data_keys
                .replace(&wrapped_key("carl", &[i as u8; 4], 2), 1)
                .await
        }
    })
    .await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(results
        .iter()
        .all(|r| r.is_ok() || r == &Err(StoreError::Conflict)));
    assert_eq!(
        s.data_keys.replace(&wrapped_key("carl", b"v3", 3), 1).await,
        Err(StoreError::Conflict)
    );
    assert_eq!(s.data_keys.get("carl").await.unwrap().unwrap().version, 2);
    assert_eq!(
        s.data_keys
            .replace(&wrapped_key("nobody", b"x", 2), 1)
            .await,
        Err(StoreError::Conflict)
    );
}

pub async fn replace_racing_delete_never_resurrects<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    for round in 0..8u64 {
        let owner = format!("dana-{round}");
        s.data_keys
            .put_if_absent(&wrapped_key(&owner, b"v1", 1))
            .await
            .unwrap();
        let (s1, s2, o1, o2) = (s.clone(), s.clone(), owner.clone(), owner.clone());
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let (b1, b2) = (barrier.clone(), barrier);
        let rewrap = tokio::spawn(async move {
            b1.wait().await;
            s1.data_keys.replace(&wrapped_key(&o1, b"v2", 2), 1).await
        });
        let erase = tokio::spawn(async move {
            b2.wait().await;
            s2.data_keys.delete(&o2).await.unwrap()
        });
        let (_, deleted) = (rewrap.await.unwrap(), erase.await.unwrap());
        assert!(deleted);
        assert_eq!(
            s.data_keys.get(&owner).await.unwrap(),
            None,
            "round {round}: an erased key came back"
        );
        assert!(!s.data_keys.delete(&owner).await.unwrap());
    }
    // An erased owner may get a new key.
    let fresh = wrapped_key("dana-0", b"new", 1);
    assert_eq!(s.data_keys.put_if_absent(&fresh).await.unwrap(), fresh);
}

pub async fn a_late_rewrap_of_an_erased_key_leaves_the_new_key_alone<F: StoreFactory + ?Sized>(
    f: &F,
) {
    let s = f.fresh().await;
    let old = wrapped_key("erin", b"old-key", 1);
    s.data_keys.put_if_absent(&old).await.unwrap();
    // A re-wrap lists the old key; then the user is erased and binds
    // again: a new key, at version 1 too.
    assert!(s.data_keys.delete("erin").await.unwrap());
    let new = WrappedKey {
        wrapped: b"new-key".to_vec(),
        created_at: BASE.plus_seconds(60),
        ..old.clone()
    };
    assert_eq!(s.data_keys.put_if_absent(&new).await.unwrap(), new);
    // The re-wrap, late, of the key it listed.
    let rewrapped = WrappedKey {
        wrapped: b"old-key-rewrapped".to_vec(),
        version: 2,
        ..old
    };
    assert_eq!(
        s.data_keys.replace(&rewrapped, 1).await,
        Err(StoreError::Conflict)
    );
    assert_eq!(s.data_keys.get("erin").await.unwrap(), Some(new.clone()));
    // A re-wrap of the new key itself goes through.
    let again = WrappedKey {
        wrapped: b"new-key-rewrapped".to_vec(),
        version: 2,
        ..new
    };
    assert_eq!(s.data_keys.replace(&again, 1).await, Ok(()));
    assert_eq!(s.data_keys.get("erin").await.unwrap(), Some(again));
}

pub async fn list_paginates<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    for o in ["k-3", "k-1", "@fingerprint", "k-2"] {
        s.data_keys
            .put_if_absent(&wrapped_key(o, o.as_bytes(), 1))
            .await
            .unwrap();
    }
    s.data_keys.delete("k-2").await.unwrap();
    let mut owners = Vec::new();
    let mut after = None;
    loop {
        let page = s.data_keys.list(after.clone(), 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some(last.owner.clone());
        owners.extend(page.into_iter().map(|k| k.owner));
    }
    assert_eq!(owners, vec!["@fingerprint", "k-1", "k-3"]);
    assert!(s.data_keys.list(None, 0).await.unwrap().is_empty());
}
