//! Checks of [`RateLimiter`](crate::store::RateLimiter).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use super::*;
use crate::store::{RateTake, RateWindow};

fn window(key: &str, limit: u64, expires: i64) -> RateWindow {
    RateWindow {
        key: key.to_owned(),
        limit,
        expires_at: at(expires),
    }
}

pub async fn takes_up_to_the_limit<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    let w = [window("bind:user:u1:60", 3, 60)];
    let mut slots = Vec::new();
    for _ in 0..3 {
        match s.rates.take(&w, at(1)).await.unwrap()[..] {
            [RateTake::Taken(n)] => slots.push(n),
            ref other => panic!("{other:?}"),
        }
    }
    slots.sort();
    assert_eq!(slots, vec![1, 2, 3]);
    assert_eq!(s.rates.take(&w, at(2)).await.unwrap(), vec![RateTake::Full]);
    assert_eq!(s.rates.take(&[], at(2)).await.unwrap(), vec![]);
}

pub async fn concurrent_takes_hold_the_limit<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    let results = race(32, |_| {
        let s = s.clone();
        async move {
            s.rates
                .take(&[window("bind:ip:203.0.113.9:60", 5, 60)], at(1))
                .await
        }
    })
    .await;
    let mut slots: Vec<u64> = results
        .iter()
        .filter_map(|r| match r.as_ref().unwrap()[..] {
            [RateTake::Taken(n)] => Some(n),
            [RateTake::Full] => None,
            ref other => panic!("{other:?}"),
        })
        .collect();
    slots.sort();
    assert_eq!(
        slots,
        vec![1, 2, 3, 4, 5],
        "exactly the limit, each slot once"
    );
}

/// Takes `w` alone until it is full: how many slots were free.
async fn free_slots(s: &Stores, w: &RateWindow, now: Timestamp) -> u64 {
    let mut free = 0;
    while s.rates.take(std::slice::from_ref(w), now).await.unwrap() != vec![RateTake::Full] {
        free += 1;
        assert!(free <= w.limit, "more slots than the limit: {w:?}");
    }
    free
}

pub async fn a_refused_take_keeps_no_slot<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    let full = window("bind:card:v1:ff:3600", 1, 3600);
    s.rates
        .take(std::slice::from_ref(&full), at(1))
        .await
        .unwrap();
    let user = window("bind:user:u2:60", 2, 60);
    let ip = window("bind:ip:198.51.100.1:60", 30, 60);
    // One window full: the others had room but keep nothing, however
    // often the refused take is tried again.
    for _ in 0..5 {
        let got = s
            .rates
            .take(&[user.clone(), full.clone(), ip.clone()], at(2))
            .await
            .unwrap();
        assert_eq!(
            got,
            vec![RateTake::Untaken, RateTake::Full, RateTake::Untaken]
        );
    }
    // Every slot is free: the user's window takes two, the IP's thirty.
    // (Slot numbers are the store's to choose; the count is the contract.)
    assert_eq!(free_slots(&s, &user, at(3)).await, 2, "{user:?}");
    assert_eq!(free_slots(&s, &ip, at(3)).await, 30, "{ip:?}");
    // The same window twice in one take with one slot left: refused, and
    // the slot stays free.
    let other = window("bind:user:u3:60", 2, 60);
    s.rates
        .take(std::slice::from_ref(&other), at(4))
        .await
        .unwrap();
    let got = s
        .rates
        .take(&[other.clone(), other.clone()], at(4))
        .await
        .unwrap();
    assert!(got.contains(&RateTake::Full), "{got:?}");
    assert!(
        !got.iter().any(|t| matches!(t, RateTake::Taken(_))),
        "{got:?}"
    );
    assert_eq!(free_slots(&s, &other, at(5)).await, 1);
    // Windows are independent otherwise: a key that only starts like
    // another is another window.
    let got = s
        .rates
        .take(&[window("bind:user:u2:6", 1, 60)], at(6))
        .await
        .unwrap();
    assert_eq!(got, vec![RateTake::Taken(1)]);
}

/// Concurrent takes of a shared window with windows of their own, half of
/// them full: the refused takes leave no slot of the shared window behind.
/// (A take with room may itself be refused while a refused one still
/// holds its slot: the contract allows that.)
pub async fn refused_takes_leave_no_slot_behind<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    for i in (0..16).step_by(2) {
        s.rates
            .take(&[window(&format!("own:{i}"), 1, 60)], at(1))
            .await
            .unwrap();
    }
    let results = race(16, |i| {
        let s = s.clone();
        async move {
            s.rates
                .take(
                    &[window(&format!("own:{i}"), 1, 60), window("shared", 8, 60)],
                    at(2),
                )
                .await
        }
    })
    .await;
    let mut held = 0;
    for (i, r) in results.iter().enumerate() {
        let r = r.as_ref().unwrap();
        if i % 2 == 0 {
            assert_eq!(r[0], RateTake::Full, "{i}: {r:?}");
            assert!(
                matches!(r[1], RateTake::Untaken | RateTake::Full),
                "{i}: {r:?}"
            );
        } else if matches!(r[..], [RateTake::Taken(_), RateTake::Taken(_)]) {
            held += 1;
        } else {
            assert_eq!(r[..], [RateTake::Untaken, RateTake::Full], "{i}");
        }
    }
    let free = free_slots(&s, &window("shared", 8, 60), at(3)).await;
    assert_eq!(
        held + free,
        8,
        "every slot a refused take held was given back"
    );
}

pub async fn purge_expired<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    let old = window("old:0", 2, 10);
    s.rates
        .take(std::slice::from_ref(&old), at(1))
        .await
        .unwrap();
    s.rates
        .take(std::slice::from_ref(&old), at(1))
        .await
        .unwrap();
    s.rates
        .take(&[window("live:0", 2, 100)], at(1))
        .await
        .unwrap();
    // Alive at its own expiry.
    assert_eq!(s.rates.purge_expired(at(10)).await.unwrap(), 0);
    assert_eq!(s.rates.purge_expired(at(11)).await.unwrap(), 2);
    assert_eq!(
        s.rates
            .take(&[window("live:0", 2, 100)], at(12))
            .await
            .unwrap(),
        vec![RateTake::Taken(2)],
        "live windows keep their slots"
    );
}
