//! The audit log: concurrent system appends make one unbroken chain,
//! listing by every filter in cursor order, retention keeps each chain's
//! last link.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_system_appends_make_one_unbroken_chain() {
    let (_d, s) = fresh_ports();
    race(32, |i| {
        let s = s.clone();
        async move {
            s.audit
                .append_system(
                    vec![event(None, None, AuditAction::RetentionPurge, t(i as i64))],
                    t(i as i64),
                )
                .await
                .unwrap()
        }
    })
    .await;
    let links = s.audit.links(None, 1000).await.unwrap();
    assert_eq!(links.len(), 32);
    assert!(links.iter().all(|l| l.chain == ChainId::System));
    assert_eq!(verify_links(&links), Ok(32), "no fork, no gap");
    assert_eq!(
        links.iter().map(|l| l.seq).collect::<Vec<_>>(),
        (1..=32).collect::<Vec<_>>()
    );
}

/// Every event of the store, by walking the links.
async fn whole_log(
    s: &cardbind_sqlite::SqlitePorts,
) -> Vec<(
    cardbind_ports::audit::AuditCursor,
    cardbind_ports::audit::AuditEvent,
)> {
    let mut out = Vec::new();
    for l in s.audit.links(None, 10_000).await.unwrap() {
        for (i, e) in l.events.iter().enumerate() {
            out.push((
                cardbind_ports::audit::AuditCursor {
                    at: l.at,
                    chain: l.chain.clone(),
                    seq: l.seq,
                    index: i as u32,
                },
                e.clone(),
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_audit_log_lists_by_every_filter_in_cursor_order() {
    let (_d, s) = fresh_ports();
    let users = [uid("ann"), uid("zed"), uid("Bob")];
    let actions = [
        AuditAction::BindingCreate,
        AuditAction::BindingFreeze,
        AuditAction::CardDataOpen,
    ];
    for round in 0..6i64 {
        for (ui, u) in users.iter().enumerate() {
            let head = s.wallets.load(u).await.unwrap().map(|w| w.head);
            let card = format!("{}-card-{}", u.as_str(), round % 2);
            let events = vec![
                event(
                    Some(u),
                    Some(&card),
                    actions[(round as usize + ui) % 3],
                    t(round),
                ),
                event(Some(u), None, actions[ui % 3], t(round)),
            ];
            // Several chains share instants: the cursor orders by chain.
            s.wallets
                .commit(&wallet(u, 2, false, t(0)), head, events, t(round / 2))
                .await
                .unwrap();
        }
        // The service's chain, with an event naming a user.
        s.audit
            .append_system(
                vec![event(
                    Some(&users[0]),
                    None,
                    AuditAction::AccessDenied,
                    t(round),
                )],
                t(round / 2),
            )
            .await
            .unwrap();
    }
    let log = whole_log(&s).await;
    assert_eq!(log.len(), 6 * 3 * 2 + 6);
    let filters = vec![
        AuditFilter::default(),
        AuditFilter {
            user_id: Some(users[0].clone()),
            ..Default::default()
        },
        AuditFilter {
            binding_id: Some(bid("zed-card-1")),
            ..Default::default()
        },
        AuditFilter {
            action: Some(AuditAction::BindingFreeze),
            ..Default::default()
        },
        AuditFilter {
            action: Some(AuditAction::AccessDenied),
            since: Some(t(1)),
            ..Default::default()
        },
        AuditFilter {
            user_id: Some(users[2].clone()),
            action: Some(AuditAction::CardDataOpen),
            ..Default::default()
        },
        AuditFilter {
            since: Some(t(1)),
            until: Some(t(2)),
            ..Default::default()
        },
        AuditFilter {
            binding_id: Some(bid("ann-card-0")),
            user_id: Some(users[0].clone()),
            until: Some(t(2)),
            ..Default::default()
        },
        AuditFilter {
            user_id: Some(uid("nobody")),
            ..Default::default()
        },
    ];
    for f in filters {
        let want: Vec<_> = log.iter().filter(|(c, e)| f.matches(c.at, e)).collect();
        for page in [1u32, 4, 1000] {
            let mut got = Vec::new();
            let mut after = None;
            loop {
                let batch = s.audit.list(&f, after.clone(), page).await.unwrap();
                assert!(batch.len() <= page as usize);
                if batch.is_empty() {
                    break;
                }
                after = batch.last().map(|r| r.cursor.clone());
                got.extend(batch);
            }
            assert_eq!(got.len(), want.len(), "{f:?} by {page}");
            for (g, (c, e)) in got.iter().zip(&want) {
                assert_eq!((&g.cursor, &g.event), (c, e), "{f:?} by {page}");
            }
        }
    }
    // Each record names its link's hash.
    let links = s.audit.links(None, 1000).await.unwrap();
    for r in s
        .audit
        .list(&AuditFilter::default(), None, 1000)
        .await
        .unwrap()
    {
        let l = links
            .iter()
            .find(|l| l.chain == r.cursor.chain && l.seq == r.cursor.seq)
            .unwrap();
        assert_eq!(r.link_hash, l.hash);
    }
    assert!(s
        .audit
        .list(&AuditFilter::default(), None, 0)
        .await
        .unwrap()
        .is_empty());
    // The walk pages by (chain, seq): users in id order, then the service.
    let mut walked = Vec::new();
    let mut after = None;
    loop {
        let page = s.audit.links(after.clone(), 5).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|l| (l.chain.clone(), l.seq));
        walked.extend(page);
    }
    assert_eq!(walked, links);
    let order: Vec<_> = walked.iter().map(|l| (l.chain.clone(), l.seq)).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);
    assert_eq!(
        walked.first().unwrap().chain,
        ChainId::System,
        "@system sorts before these users"
    );
    assert_eq!(verify_links(&walked), Ok(walked.len() as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_keeps_each_chains_last_link_and_numbering_goes_on() {
    let (_d, s) = fresh_ports();
    let (a, b) = (uid("a"), uid("b"));
    let mut heads = std::collections::HashMap::new();
    for step in 0..5i64 {
        for u in [&a, &b] {
            let h = s
                .wallets
                .commit(
                    &wallet(u, 1, false, t(0)),
                    heads.get(u).cloned(),
                    vec![event(Some(u), None, AuditAction::BindingFreeze, t(step))],
                    t(step * 10),
                )
                .await
                .unwrap();
            heads.insert(u.clone(), h);
        }
    }
    // b's chain stops early: all its links are old, its last one stays.
    let c = uid("c");
    s.wallets
        .commit(
            &wallet(&c, 1, false, t(0)),
            None,
            vec![event(Some(&c), None, AuditAction::BindingCreate, t(0))],
            t(0),
        )
        .await
        .unwrap();
    s.audit
        .append_system(
            vec![event(None, None, AuditAction::BinTableImport, t(0))],
            t(0),
        )
        .await
        .unwrap();
    // Links at 0, 10, 20 of a and b go (6); c's only link and the service's stay.
    assert_eq!(s.audit.purge_before(t(25)).await, Ok(6));
    assert_eq!(s.audit.purge_before(t(25)).await, Ok(0));
    let left = s.audit.links(None, 100).await.unwrap();
    assert_eq!(
        left.iter()
            .filter(|l| l.chain == ChainId::User(a.clone()))
            .map(|l| l.seq)
            .collect::<Vec<_>>(),
        vec![4, 5]
    );
    assert_eq!(
        verify_links(&left),
        Ok(left.len() as u64),
        "the rest still verifies"
    );
    assert_eq!(
        s.audit.purge_before(t(1000)).await,
        Ok(2),
        "a's and b's 4th"
    );
    assert_eq!(
        s.wallets.load(&c).await.unwrap().unwrap().head.seq,
        1,
        "a chain's last link is its wallet"
    );
    assert_eq!(
        s.audit
            .list(&AuditFilter::default(), None, 100)
            .await
            .unwrap()
            .len(),
        4,
        "the events went with their links"
    );
    let h = s
        .wallets
        .commit(
            &wallet(&a, 1, false, t(0)),
            heads.get(&a).cloned(),
            vec![event(Some(&a), None, AuditAction::BindingUnfreeze, t(60))],
            t(60),
        )
        .await
        .unwrap();
    assert_eq!(h.seq, 6, "numbering goes on after a purge");
    s.audit
        .append_system(
            vec![event(None, None, AuditAction::RetentionPurge, t(60))],
            t(60),
        )
        .await
        .unwrap();
    // "@system" sorts before these users: the walk starts with it.
    let system: Vec<_> = s
        .audit
        .links(None, 2)
        .await
        .unwrap()
        .iter()
        .map(|l| (l.chain.clone(), l.seq))
        .collect();
    assert_eq!(
        system,
        vec![(ChainId::System, 1), (ChainId::System, 2)],
        "the service's last link was kept and its chain goes on"
    );
}
