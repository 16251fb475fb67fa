//! Checks of [`ReviewQueue`](crate::store::ReviewQueue).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use super::*;
use crate::store::ReviewEntry;

fn entry(binding: &str, user: &str, since: i64) -> ReviewEntry {
    placed(binding, user, since, 4)
}

fn placed(binding: &str, user: &str, since: i64, link: u64) -> ReviewEntry {
    ReviewEntry {
        binding: binding_id(binding),
        user: user_id(user),
        since: at(since),
        link,
    }
}

pub async fn add_get_remove_list<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    for (b, u, t) in [
        ("card-c", "u1", 3),
        ("card-a", "u2", 1),
        ("card-b", "u1", 2),
    ] {
        s.review.add(&entry(b, u, t)).await.unwrap();
    }
    // Adding again keeps the first entry.
    s.review.add(&entry("card-a", "u9", 9)).await.unwrap();
    assert_eq!(
        s.review.get(&binding_id("card-a")).await.unwrap(),
        Some(entry("card-a", "u2", 1))
    );
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = s.review.list(after.clone(), 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some(last.binding.clone());
        listed.extend(page);
    }
    assert_eq!(
        listed,
        vec![
            entry("card-a", "u2", 1),
            entry("card-b", "u1", 2),
            entry("card-c", "u1", 3)
        ]
    );
    s.review.remove(&binding_id("card-b"), 4).await.unwrap();
    s.review.remove(&binding_id("card-b"), 4).await.unwrap();
    assert_eq!(s.review.get(&binding_id("card-b")).await.unwrap(), None);
    assert_eq!(s.review.list(None, 10).await.unwrap().len(), 2);
    assert!(s.review.list(None, 0).await.unwrap().is_empty());
    s.review
        .remove(&binding_id("card-c"), u64::MAX)
        .await
        .unwrap();
    assert_eq!(s.review.get(&binding_id("card-c")).await.unwrap(), None);
}

/// A removal by a change before the entry's link leaves it (the card
/// entered review again after that change); one at or after removes it.
/// An entry of a later stint replaces one of an earlier; an earlier
/// stint's late add leaves a later's.
pub async fn entries_go_by_the_link_that_placed_them<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    let card = binding_id("card-r");
    s.review.add(&placed("card-r", "u1", 10, 7)).await.unwrap();
    s.review.remove(&card, 6).await.unwrap();
    assert_eq!(
        s.review.get(&card).await.unwrap(),
        Some(placed("card-r", "u1", 10, 7)),
        "an earlier change's removal leaves a later stint's entry"
    );
    // A later stint (its earlier's removal was lost) replaces it.
    s.review.add(&placed("card-r", "u1", 20, 9)).await.unwrap();
    assert_eq!(
        s.review.get(&card).await.unwrap(),
        Some(placed("card-r", "u1", 20, 9))
    );
    // An earlier stint's add landing late leaves it, as does adding again.
    s.review.add(&placed("card-r", "u1", 15, 8)).await.unwrap();
    s.review.add(&placed("card-r", "u1", 30, 9)).await.unwrap();
    assert_eq!(
        s.review.get(&card).await.unwrap(),
        Some(placed("card-r", "u1", 20, 9))
    );
    assert_eq!(s.review.list(None, 10).await.unwrap().len(), 1);
    s.review.remove(&card, 8).await.unwrap();
    assert!(s.review.get(&card).await.unwrap().is_some());
    s.review.remove(&card, 9).await.unwrap();
    assert_eq!(s.review.get(&card).await.unwrap(), None);
    // An entry of an older version (link 0) goes with any removal.
    s.review.add(&placed("card-o", "u1", 1, 0)).await.unwrap();
    s.review.remove(&binding_id("card-o"), 0).await.unwrap();
    assert_eq!(s.review.get(&binding_id("card-o")).await.unwrap(), None);
}

/// A late add of a stint that ended and the add of the next stint, at
/// once, on a card with no entry: the later stint's entry is what stays,
/// whichever insert lands first (on MongoDB the later one met the
/// earlier's insert as a duplicate key and was dropped, and the earlier
/// stint's late removal then left the card in review with no entry).
pub async fn two_stints_adding_at_once_keep_the_later<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    for round in 0..20 {
        let card = format!("card-race-{round}");
        let q = s.review.clone();
        let c = card.clone();
        race(2, move |i| {
            let q = q.clone();
            let c = c.clone();
            async move {
                let link = if i == 0 { 3 } else { 8 };
                q.add(&placed(&c, "u1", i as i64, link)).await.unwrap();
            }
        })
        .await;
        let e = s.review.get(&binding_id(&card)).await.unwrap().unwrap();
        assert_eq!(e.link, 8, "round {round}");
    }
}
