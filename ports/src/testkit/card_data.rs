//! Checks of [`CardDataStore`](crate::store::CardDataStore) and
//! [`ChannelRefs`](crate::store::ChannelRefs).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use super::*;
use crate::error::StoreError;
use crate::store::{CardData, CardDataKey, ChannelRefEntry, RefTarget};

fn data(user: &str, binding: &str, generation: u32, tag: u8) -> CardData {
    CardData {
        binding: binding_id(binding),
        user: user_id(user),
        generation,
        sealed: sealed(tag),
    }
}

pub async fn put_and_get_round_trip<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    let d = data("kim", "card-1", 1, 9);
    s.card_data.put(&d).await.unwrap();
    assert_eq!(
        s.card_data.get(&d.user, &d.binding, 1).await.unwrap(),
        Some(d.clone())
    );
    assert_eq!(s.card_data.get(&d.user, &d.binding, 2).await.unwrap(), None);
    // Another user's id does not read it.
    assert_eq!(
        s.card_data
            .get(&user_id("lee"), &d.binding, 1)
            .await
            .unwrap(),
        None
    );
}

pub async fn one_generation_is_stored_once<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    let results = race(16, |i| {
        let s = s.clone();
        async move { s.card_data.put(&data("mia", "card-2", 1, i as u8)).await }
    })
    .await;
    let ok: Vec<usize> = (0..16).filter(|&i| results[i].is_ok()).collect();
    assert_eq!(ok.len(), 1, "one put of a generation wins");
    for r in &results {
        if let Err(e) = r {
            assert_eq!(e, &StoreError::Duplicate);
        }
    }
    let stored = s
        .card_data
        .get(&user_id("mia"), &binding_id("card-2"), 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.sealed,
        sealed(ok[0] as u8),
        "the winner's data is kept"
    );
    // The next generation is another record.
    s.card_data
        .put(&data("mia", "card-2", 2, 99))
        .await
        .unwrap();
}

pub async fn owner_is_known_while_data_is_stored<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    let b = binding_id("card-3");
    assert_eq!(s.card_data.owner(&b).await.unwrap(), None);
    // Generations are numbers a request chose, in no particular order.
    for g in [70_001, 5, 900_000_000] {
        s.card_data
            .put(&data("ned", "card-3", g, g as u8))
            .await
            .unwrap();
    }
    s.card_data.put(&data("ned", "card-4", 1, 1)).await.unwrap();
    assert_eq!(s.card_data.owner(&b).await.unwrap(), Some(user_id("ned")));
    let n = user_id("ned");
    // Another user's id deletes nothing.
    assert_eq!(
        s.card_data.delete(&user_id("eve"), &b, None).await.unwrap(),
        0
    );
    assert_eq!(s.card_data.delete(&n, &b, Some(5)).await.unwrap(), 2);
    assert_eq!(s.card_data.get(&n, &b, 70_001).await.unwrap(), None);
    assert!(s.card_data.get(&n, &b, 5).await.unwrap().is_some());
    assert_eq!(s.card_data.owner(&b).await.unwrap(), Some(n.clone()));
    assert_eq!(s.card_data.delete(&n, &b, Some(5)).await.unwrap(), 0);
    assert_eq!(s.card_data.delete(&n, &b, None).await.unwrap(), 1);
    assert_eq!(s.card_data.delete(&n, &b, None).await.unwrap(), 0);
    assert_eq!(s.card_data.owner(&b).await.unwrap(), None);
    assert!(
        s.card_data
            .get(&n, &binding_id("card-4"), 1)
            .await
            .unwrap()
            .is_some(),
        "other bindings are untouched"
    );
}

pub async fn one_generation_is_deleted_alone<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    let b = binding_id("card-7");
    let n = user_id("ola");
    for g in [11, 12] {
        s.card_data
            .put(&data("ola", "card-7", g, g as u8))
            .await
            .unwrap();
    }
    // Another user's id, or a generation not stored, deletes nothing.
    assert_eq!(
        s.card_data
            .delete_generation(&user_id("eve"), &b, 11)
            .await
            .unwrap(),
        0
    );
    assert_eq!(s.card_data.delete_generation(&n, &b, 13).await.unwrap(), 0);
    assert_eq!(s.card_data.delete_generation(&n, &b, 11).await.unwrap(), 1);
    assert_eq!(s.card_data.get(&n, &b, 11).await.unwrap(), None);
    assert!(
        s.card_data.get(&n, &b, 12).await.unwrap().is_some(),
        "the other generation stays"
    );
    assert_eq!(s.card_data.delete_generation(&n, &b, 11).await.unwrap(), 0);
    assert_eq!(s.card_data.delete_generation(&n, &b, 12).await.unwrap(), 1);
    assert_eq!(s.card_data.owner(&b).await.unwrap(), None);
}

pub async fn keys_are_walked_in_order_a_page_at_a_time<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    assert_eq!(s.card_data.list_keys(None, 10).await.unwrap(), Vec::new());
    let stored = [
        ("kim", "card-b", 7),
        ("kim", "card-a", 900),
        ("lee", "card-c", 1),
        ("kim", "card-b", 3),
        ("kim", "card-a", 12),
    ];
    for (u, b, g) in stored {
        s.card_data.put(&data(u, b, g, 1)).await.unwrap();
    }
    let key = |u: &str, b: &str, g| CardDataKey {
        binding: binding_id(b),
        generation: g,
        user: user_id(u),
    };
    let all = vec![
        key("kim", "card-a", 12),
        key("kim", "card-a", 900),
        key("kim", "card-b", 3),
        key("kim", "card-b", 7),
        key("lee", "card-c", 1),
    ];
    assert_eq!(s.card_data.list_keys(None, 10).await.unwrap(), all);
    // Two at a time, each page from just after the last key of the one
    // before (within a binding's generations too).
    let mut walked = Vec::new();
    let mut after = None;
    loop {
        let page = s.card_data.list_keys(after.clone(), 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some((last.binding.clone(), last.generation));
        walked.extend(page);
    }
    assert_eq!(walked, all);
    assert_eq!(
        s.card_data
            .list_keys(Some((binding_id("card-a"), 12)), 1)
            .await
            .unwrap(),
        vec![key("kim", "card-a", 900)]
    );
    assert_eq!(s.card_data.list_keys(None, 0).await.unwrap(), Vec::new());
}

pub async fn channel_refs_find_their_first_target<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    let (alipay, wechat) = (channel("alipay"), channel("wechat"));
    let t1 = RefTarget {
        user: user_id("oli"),
        binding: binding_id("card-5"),
    };
    let t2 = RefTarget {
        user: user_id("pat"),
        binding: binding_id("card-6"),
    };
    assert_eq!(s.channel_refs.find(&alipay, "2088-1").await.unwrap(), None);
    // Whether the reference names the target after the call.
    assert!(s.channel_refs.put(&alipay, "2088-1", &t1, 1).await.unwrap());
    assert!(s.channel_refs.put(&alipay, "2088-1", &t1, 2).await.unwrap());
    assert!(!s.channel_refs.put(&alipay, "2088-1", &t2, 1).await.unwrap());
    assert_eq!(
        s.channel_refs.find(&alipay, "2088-1").await.unwrap(),
        Some(t1.clone()),
        "a reference never moves to another binding"
    );
    // References are per channel.
    assert_eq!(s.channel_refs.find(&wechat, "2088-1").await.unwrap(), None);
    s.channel_refs.put(&wechat, "2088-1", &t2, 1).await.unwrap();
    assert_eq!(
        s.channel_refs.find(&wechat, "2088-1").await.unwrap(),
        Some(t2.clone())
    );
    let e = s
        .channel_refs
        .find_entry(&alipay, "2088-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.channel_refs.delete_entry(&e).await.unwrap(), 1);
    assert_eq!(s.channel_refs.delete_entry(&e).await.unwrap(), 0);
    assert_eq!(s.channel_refs.find(&alipay, "2088-1").await.unwrap(), None);

    // The references one bind of a card recorded go together, on every
    // channel; those of the card's other binds, and of other bindings,
    // stay.
    s.channel_refs.put(&alipay, "ext-1", &t1, 7).await.unwrap();
    s.channel_refs.put(&alipay, "2088-7", &t1, 7).await.unwrap();
    s.channel_refs.put(&wechat, "ctr-1", &t1, 7).await.unwrap();
    s.channel_refs.put(&alipay, "ext-9", &t1, 9).await.unwrap();
    s.channel_refs.put(&alipay, "ext-2", &t2, 7).await.unwrap();
    assert_eq!(
        s.channel_refs
            .delete_binding(&user_id("pat"), &t1.binding, Some(7))
            .await
            .unwrap(),
        0,
        "another user's binding of that id"
    );
    assert_eq!(
        s.channel_refs
            .delete_binding(&t1.user, &t1.binding, Some(7))
            .await
            .unwrap(),
        3
    );
    for (c, r) in [(&alipay, "ext-1"), (&alipay, "2088-7"), (&wechat, "ctr-1")] {
        assert_eq!(s.channel_refs.find(c, r).await.unwrap(), None, "{r}");
    }
    assert_eq!(
        s.channel_refs.find(&alipay, "ext-9").await.unwrap(),
        Some(t1.clone()),
        "a later bind's reference stays"
    );
    assert_eq!(
        s.channel_refs.find(&alipay, "ext-2").await.unwrap(),
        Some(t2.clone())
    );
    assert_eq!(
        s.channel_refs.find(&wechat, "2088-1").await.unwrap(),
        Some(t2.clone())
    );
    assert_eq!(
        s.channel_refs
            .delete_binding(&t1.user, &t1.binding, Some(7))
            .await
            .unwrap(),
        0
    );

    // A channel that gives a card the same reference at every bind (the
    // mock's is the card's id): the reference is the latest bind's, so
    // that the unbind of an earlier bind, finishing late, leaves it.
    s.channel_refs.put(&alipay, "same", &t1, 9).await.unwrap();
    s.channel_refs.put(&alipay, "same", &t1, 10).await.unwrap();
    s.channel_refs.put(&alipay, "same", &t2, 11).await.unwrap();
    assert_eq!(
        s.channel_refs
            .delete_binding(&t2.user, &t2.binding, Some(11))
            .await
            .unwrap(),
        0,
        "a reference never moves to another binding"
    );
    assert_eq!(
        s.channel_refs
            .delete_binding(&t1.user, &t1.binding, Some(9))
            .await
            .unwrap(),
        1,
        "ext-9 only"
    );
    assert_eq!(
        s.channel_refs.find(&alipay, "same").await.unwrap(),
        Some(t1.clone())
    );
    assert_eq!(
        s.channel_refs
            .delete_binding(&t1.user, &t1.binding, Some(10))
            .await
            .unwrap(),
        1
    );
    assert_eq!(s.channel_refs.find(&alipay, "same").await.unwrap(), None);

    // With no generation, every reference of the binding goes.
    s.channel_refs.put(&alipay, "ext-3", &t2, 3).await.unwrap();
    assert_eq!(
        s.channel_refs
            .delete_binding(&t2.user, &t2.binding, None)
            .await
            .unwrap(),
        3
    );
    assert_eq!(s.channel_refs.find(&alipay, "ext-2").await.unwrap(), None);
}

pub async fn channel_refs_are_walked_in_order_and_deleted_only_as_read<F: StoreFactory + ?Sized>(
    f: &F,
) {
    let s = f.fresh().await;
    assert_eq!(s.channel_refs.list(None, 10).await.unwrap(), Vec::new());
    let target = |u: &str, b: &str| RefTarget {
        user: user_id(u),
        binding: binding_id(b),
    };
    let stored = [
        ("wechat", "ctr-1", "kim", "card-a", 4),
        ("alipay", "2088-9", "lee", "card-c", 1),
        ("alipay", "2088-10", "kim", "card-a", 4),
        ("mock", "card-b", "kim", "card-b", 7),
        ("alipay", "2088-1", "kim", "card-b", 3),
    ];
    for (c, r, u, b, g) in stored {
        s.channel_refs
            .put(&channel(c), r, &target(u, b), g)
            .await
            .unwrap();
    }
    let entry = |c: &str, r: &str, u: &str, b: &str, g| ChannelRefEntry {
        channel: channel(c),
        channel_ref: r.to_owned(),
        target: target(u, b),
        generation: Some(g),
    };
    // Byte order of the channel, then of the reference.
    let all = vec![
        entry("alipay", "2088-1", "kim", "card-b", 3),
        entry("alipay", "2088-10", "kim", "card-a", 4),
        entry("alipay", "2088-9", "lee", "card-c", 1),
        entry("mock", "card-b", "kim", "card-b", 7),
        entry("wechat", "ctr-1", "kim", "card-a", 4),
    ];
    assert_eq!(s.channel_refs.list(None, 10).await.unwrap(), all);
    let mut walked = Vec::new();
    let mut after = None;
    loop {
        let page = s.channel_refs.list(after.clone(), 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some((last.channel.clone(), last.channel_ref.clone()));
        walked.extend(page);
    }
    assert_eq!(walked, all);
    assert_eq!(
        s.channel_refs
            .list(Some((channel("alipay"), "2088-10".into())), 1)
            .await
            .unwrap(),
        vec![entry("alipay", "2088-9", "lee", "card-c", 1)]
    );
    assert_eq!(s.channel_refs.list(None, 0).await.unwrap(), Vec::new());

    // A delete takes the reference only as it was read: not once a bind of
    // the card again recorded it as its own, nor another user's.
    let read = entry("mock", "card-b", "kim", "card-b", 7);
    s.channel_refs
        .put(&channel("mock"), "card-b", &target("kim", "card-b"), 8)
        .await
        .unwrap();
    assert_eq!(s.channel_refs.delete_entry(&read).await.unwrap(), 0);
    assert_eq!(
        s.channel_refs
            .find(&channel("mock"), "card-b")
            .await
            .unwrap(),
        Some(target("kim", "card-b")),
        "the newer bind's reference stays"
    );
    // Found as the walk lists it, generation included (what a delete of
    // it as read needs).
    assert_eq!(
        s.channel_refs
            .find_entry(&channel("mock"), "card-b")
            .await
            .unwrap(),
        Some(entry("mock", "card-b", "kim", "card-b", 8))
    );
    assert_eq!(
        s.channel_refs
            .find_entry(&channel("wechat"), "ctr-1")
            .await
            .unwrap(),
        Some(entry("wechat", "ctr-1", "kim", "card-a", 4))
    );
    assert_eq!(
        s.channel_refs
            .find_entry(&channel("wechat"), "ctr-2")
            .await
            .unwrap(),
        None
    );
    let mut other_user = entry("alipay", "2088-9", "lee", "card-c", 1);
    other_user.target.user = user_id("kim");
    assert_eq!(s.channel_refs.delete_entry(&other_user).await.unwrap(), 0);
    assert_eq!(
        s.channel_refs
            .delete_entry(&entry("mock", "card-b", "kim", "card-b", 8))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.channel_refs
            .find(&channel("mock"), "card-b")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.channel_refs
            .delete_entry(&entry("mock", "card-b", "kim", "card-b", 8))
            .await
            .unwrap(),
        0
    );
    assert_eq!(s.channel_refs.list(None, 10).await.unwrap().len(), 4);
}
