//! Checks of [`ReviewQueue`](crate::store::ReviewQueue).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use super::*;
use crate::store::ReviewEntry;

fn entry(binding: &str, user: &str, since: i64) -> ReviewEntry {
    ReviewEntry {
        binding: binding_id(binding),
        user: user_id(user),
        since: at(since),
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
    s.review.remove(&binding_id("card-b")).await.unwrap();
    s.review.remove(&binding_id("card-b")).await.unwrap();
    assert_eq!(s.review.get(&binding_id("card-b")).await.unwrap(), None);
    assert_eq!(s.review.list(None, 10).await.unwrap().len(), 2);
    assert!(s.review.list(None, 0).await.unwrap().is_empty());
}
