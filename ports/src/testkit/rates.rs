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

pub async fn windows_are_independent<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    let full = window("bind:card:v1:ff:3600", 1, 3600);
    s.rates
        .take(std::slice::from_ref(&full), at(1))
        .await
        .unwrap();
    let got = s
        .rates
        .take(
            &[
                window("bind:user:u2:60", 3, 60),
                full,
                window("bind:ip:198.51.100.1:60", 30, 60),
            ],
            at(2),
        )
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![RateTake::Taken(1), RateTake::Full, RateTake::Taken(1)]
    );
    // A key that only starts like another is another window.
    let got = s
        .rates
        .take(&[window("bind:user:u2:6", 1, 60)], at(3))
        .await
        .unwrap();
    assert_eq!(got, vec![RateTake::Taken(1)]);
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
