//! Checks of [`WalletStore`](crate::store::WalletStore) and
//! [`AuditLog`](crate::audit::AuditLog), which share the chains.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use cardbind_domain::{BindingStatus, UserId, Wallet};

use super::*;
use crate::audit::{
    next_link, verify_links, AuditCursor, AuditFilter, ChainHead, ChainId, Link, GENESIS_HASH,
};
use crate::error::StoreError;

fn one(action: AuditAction, user: &UserId) -> Vec<AuditEvent> {
    vec![event(action, Some(user), None)]
}

async fn commit(
    s: &Stores,
    w: &Wallet,
    after: Option<ChainHead>,
    now: Timestamp,
) -> Result<ChainHead, StoreError> {
    s.wallets
        .commit(w, after, one(AuditAction::BindingCreate, w.user()), now)
        .await
}

async fn all_links(s: &Stores) -> Vec<Link> {
    let mut out: Vec<Link> = Vec::new();
    loop {
        let after = out.last().map(|l| (l.chain.clone(), l.seq));
        let page = s.audit.links(after, 3).await.expect("links");
        if page.is_empty() {
            return out;
        }
        assert!(page.len() <= 3, "links returned more than its limit");
        out.extend(page);
    }
}

pub async fn load_of_an_unknown_user_is_none<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    assert_eq!(s.wallets.load(&user_id("nobody")).await.unwrap(), None);
}

pub async fn round_trip_every_field<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    let u = user_id("alice.example-1:x");
    let mut w = wallet(&u, 12, at(1));
    // Card 5 (unbound) bound again more often than a card keeps consents:
    // the count of those let go is stored too.
    for _ in 0..=cardbind_domain::CONSENTS_KEPT {
        let policy = cardbind_domain::VerificationPolicy::default();
        let cap = cardbind_domain::CardCap { max: 1000 };
        let again = w.open(card(5, at(1)), cap, at(1), &policy).unwrap();
        let r: Result<bool, cardbind_domain::StateRefusal> =
            w.change(again.id(), |b| b.unbind(at(1), "tests"));
        r.unwrap();
    }
    assert!(w.bindings().iter().any(|b| b.consents_dropped == 2));
    assert!(w.effective_default().is_some());
    assert!(w
        .bindings()
        .iter()
        .any(|b| b.status == BindingStatus::Failed));
    // A card an operator froze, then unbound: its hold stays.
    let held = w
        .bindings()
        .iter()
        .rev()
        .find(|b| b.status == BindingStatus::Active)
        .map(|b| b.id.clone())
        .expect("an active card");
    let r: Result<(), cardbind_domain::StateRefusal> = w.change(&held, |b| b.freeze(at(1)));
    r.unwrap();
    let r: Result<bool, cardbind_domain::StateRefusal> =
        w.change(&held, |b| b.unbind(at(1), "tests"));
    r.unwrap();
    assert!(w.get(&held).is_ok_and(|b| b.held_since.is_some()));
    // The user erased while it was held: it keeps its fingerprint until the
    // hold is lifted, and is to forget it then (the others forgot theirs).
    w.forget_fingerprints();
    assert!(w
        .get(&held)
        .is_ok_and(|b| b.forget_on_release && !b.fingerprint.is_erased()));
    let b = w.bindings()[3].id.clone();
    let mut events = vec![
        event(AuditAction::BindingCreate, Some(&u), Some(&b)),
        event(AuditAction::BindingChannelStart, Some(&u), Some(&b)),
    ];
    events[1].outcome = Outcome::Refused(cardbind_domain::ErrorCode::ChannelRejected);
    events[1].actor = AuditActor::service("channel:mock");
    events[1].request_id = None;
    events[1].client_ip = None;
    events[1].detail = None;
    let head = s
        .wallets
        .commit(&w, None, events.clone(), at(2))
        .await
        .expect("first commit");
    let links = all_links(&s).await;
    let digest = links.first().and_then(|l| l.wallet_digest.clone());
    assert!(
        digest
            .as_ref()
            .is_some_and(|d| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit())),
        "a user's link carries its wallet's digest: {digest:?}"
    );
    let expected = next_link(
        ChainId::User(u.clone()),
        None,
        at(2),
        events.clone(),
        digest,
    );
    assert_eq!(
        head,
        expected.head(),
        "the head is the link next_link builds"
    );
    let got = s.wallets.load(&u).await.unwrap().expect("stored");
    assert_eq!(got.wallet, w);
    assert_eq!(got.head, head);
    assert_eq!(links, vec![expected], "the link holds every event field");
}

pub async fn commit_after_a_stale_head_conflicts<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    let u = user_id("bob");
    let w1 = wallet(&u, 1, at(1));
    let h1 = commit(&s, &w1, None, at(1)).await.unwrap();
    assert_eq!(h1.seq, 1);
    // A first commit when one exists.
    assert_eq!(
        commit(&s, &w1, None, at(2)).await,
        Err(StoreError::Conflict)
    );
    let w2 = wallet(&u, 2, at(2));
    let h2 = commit(&s, &w2, Some(h1.clone()), at(2)).await.unwrap();
    assert_eq!(h2.seq, 2);
    // After a head that is no longer the newest, even with the same content.
    assert_eq!(
        commit(&s, &w2, Some(h1.clone()), at(3)).await,
        Err(StoreError::Conflict)
    );
    // After a head that never existed.
    let fake = ChainHead {
        seq: 7,
        ..h2.clone()
    };
    assert_eq!(
        commit(&s, &w2, Some(fake), at(3)).await,
        Err(StoreError::Conflict)
    );
    let got = s.wallets.load(&u).await.unwrap().unwrap();
    assert_eq!((got.wallet, got.head), (w2, h2));
}

pub async fn concurrent_commits_after_one_head_one_wins<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    let u = user_id("carol");
    let w = wallet(&u, 1, at(1));
    let head = commit(&s, &w, None, at(1)).await.unwrap();
    let results = race(16, |i| {
        let s = s.clone();
        let head = head.clone();
        let u = u.clone();
        async move {
            // Each racer adds a different card.
            let mut w = wallet(&u, 1, at(1));
            w.open(
                card(100 + i as u32, at(2)),
                cardbind_domain::CardCap { max: 100 },
                at(2),
                &cardbind_domain::VerificationPolicy::default(),
            )
            .unwrap();
            let r = commit(&s, &w, Some(head), at(2)).await;
            (w, r)
        }
    })
    .await;
    let winners: Vec<_> = results.iter().filter(|(_, r)| r.is_ok()).collect();
    assert_eq!(winners.len(), 1, "exactly one commit after one head");
    for (_, r) in &results {
        if let Err(e) = r {
            assert_eq!(e, &StoreError::Conflict);
        }
    }
    let got = s.wallets.load(&u).await.unwrap().unwrap();
    assert_eq!(&got.wallet, &winners[0].0, "the winner's wallet is stored");
    assert_eq!(got.head.seq, 2);
}

pub async fn users_are_independent<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    let (a, b) = (user_id("dave"), user_id("dave2"));
    let ha = commit(&s, &wallet(&a, 1, at(1)), None, at(1))
        .await
        .unwrap();
    // Another user's first commit is not a conflict with dave's chain.
    let hb = commit(&s, &wallet(&b, 3, at(1)), None, at(1))
        .await
        .unwrap();
    assert_eq!((ha.seq, hb.seq), (1, 1));
    assert_eq!(
        s.wallets
            .load(&a)
            .await
            .unwrap()
            .unwrap()
            .wallet
            .bindings()
            .len(),
        1
    );
    assert_eq!(
        s.wallets
            .load(&b)
            .await
            .unwrap()
            .unwrap()
            .wallet
            .bindings()
            .len(),
        3
    );
}

pub async fn links_form_verifiable_chains<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    let users = [user_id("erin"), user_id("erin-b"), user_id("erin-c")];
    for (k, u) in users.iter().enumerate() {
        let mut head = None;
        for i in 0..(k as u32 + 2) {
            // The clock goes back on the last commit: instants must not.
            let now = if i == k as u32 + 1 {
                at(1)
            } else {
                at(10 + i as i64)
            };
            head = Some(commit(&s, &wallet(u, i + 1, now), head, now).await.unwrap());
        }
    }
    s.audit
        .append_system(vec![event(AuditAction::RetentionPurge, None, None)], at(5))
        .await
        .unwrap();
    let links = all_links(&s).await;
    assert_eq!(links.len(), 2 + 3 + 4 + 1);
    let mut keys: Vec<_> = links.iter().map(|l| (l.chain.clone(), l.seq)).collect();
    let walked = keys.clone();
    keys.sort();
    assert_eq!(walked, keys, "links are walked in (chain, seq) order");
    assert_eq!(verify_links(&links), Ok(links.len() as u64));
    for l in links.iter().filter(|l| l.seq == 1) {
        assert_eq!(l.prev_hash, GENESIS_HASH);
    }
    assert!(links.iter().any(|l| l.chain == ChainId::System));
    assert_eq!(s.audit.links(None, 0).await.unwrap(), vec![]);
    // Each user link's hash covers its wallet's digest: one per wallet
    // (every commit above stored another), none on the service's chain.
    let mut digests = Vec::new();
    for l in &links {
        match (&l.chain, &l.wallet_digest) {
            (ChainId::System, d) => assert_eq!(*d, None),
            (ChainId::User(_), Some(d)) => digests.push(d.clone()),
            (ChainId::User(u), None) => panic!("link {} of {u} has no wallet digest", l.seq),
        }
    }
    let n = digests.len();
    digests.sort();
    digests.dedup();
    assert_eq!(digests.len(), n, "another wallet, another digest");
    // The same wallet again: the same digest.
    let u = &users[0];
    let last = links
        .iter()
        .rfind(|l| l.chain == ChainId::User(u.clone()))
        .expect("erin's links");
    let again = wallet(u, 2, at(1));
    commit(&s, &again, Some(last.head()), at(30)).await.unwrap();
    let after = all_links(&s).await;
    let newest = after
        .iter()
        .rfind(|l| l.chain == ChainId::User(u.clone()))
        .expect("erin's links");
    assert_eq!(newest.seq, last.seq + 1);
    assert_eq!(newest.wallet_digest, last.wallet_digest);
}

pub async fn pending_links_by_window<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    // Six users, each with one link at a different second; the ones whose
    // wallet holds a pending card (2 cards: the second is pending) are
    // candidates, the others (1 card: active) are not.
    for i in 0..6i64 {
        let u = user_id(&format!("fay-{i}"));
        let n = if i % 2 == 0 { 2 } else { 1 };
        commit(&s, &wallet(&u, n, at(i)), None, at(i))
            .await
            .unwrap();
    }
    // A card in manual review waits too: fay-r holds one (its fifth card)
    // and none waiting for verification (its second and third, unbound).
    let u = user_id("fay-r");
    let mut w = wallet(&u, 5, at(3));
    for i in [1, 2] {
        let waiting = w.bindings()[i].id.clone();
        let r: Result<bool, StateRefusal> = w.change(&waiting, |b| b.unbind(at(3), "tests"));
        r.expect("unbind");
    }
    let statuses: Vec<_> = w.bindings().iter().map(|b| b.status).collect();
    assert!(
        statuses.contains(&BindingStatus::PendingReview),
        "{statuses:?}"
    );
    assert!(
        !statuses.contains(&BindingStatus::PendingVerification),
        "{statuses:?}"
    );
    commit(&s, &w, None, at(3)).await.unwrap();
    let page = |after| {
        let s = s.clone();
        async move {
            s.wallets
                .pending_links(at(0), at(5), after, 1)
                .await
                .unwrap()
        }
    };
    let mut found = Vec::new();
    let mut after = None;
    loop {
        let p = page(after.clone()).await;
        assert!(p.len() <= 1);
        let Some(last) = p.last() else { break };
        after = Some(last.key.clone());
        found.extend(p.into_iter().map(|l| l.key.user.as_str().to_owned()));
    }
    // fay-4 at second 4 is inside [0, 5); nothing at or after 5 is.
    assert_eq!(found, vec!["fay-0", "fay-2", "fay-r", "fay-4"]);
    let none = s
        .wallets
        .pending_links(at(0), at(5), None, 0)
        .await
        .unwrap();
    assert!(none.is_empty());
}

pub async fn system_chain_concurrent_appends_one_chain<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    let results = race(16, |i| {
        let s = s.clone();
        async move {
            let mut e = event(AuditAction::AccessDenied, None, None);
            e.detail = Some(format!("racer {i}"));
            s.audit.append_system(vec![e], at(1)).await
        }
    })
    .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let links = all_links(&s).await;
    let seqs: Vec<u64> = links.iter().map(|l| l.seq).collect();
    assert_eq!(
        seqs,
        (1..=16).collect::<Vec<_>>(),
        "one chain, no gaps, no forks"
    );
    assert_eq!(verify_links(&links), Ok(16));
    let mut details: Vec<_> = links
        .iter()
        .map(|l| l.events[0].detail.clone().unwrap())
        .collect();
    details.sort();
    details.dedup();
    assert_eq!(details.len(), 16, "no event lost");
}

pub async fn audit_list_filters_and_pages<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    let (a, b) = (user_id("gus"), user_id("hal"));
    let (ca, cb) = (binding_id("card-a"), binding_id("card-b"));
    // gus: links at 1 and 3, two events each; hal: one link at 2; system at 4.
    let ev = |action, u: &UserId, c: &BindingId| event(action, Some(u), Some(c));
    let h = s
        .wallets
        .commit(
            &wallet(&a, 1, at(1)),
            None,
            vec![
                ev(AuditAction::BindingCreate, &a, &ca),
                ev(AuditAction::BindingChannelStart, &a, &ca),
            ],
            at(1),
        )
        .await
        .unwrap();
    s.wallets
        .commit(
            &wallet(&b, 1, at(2)),
            None,
            vec![ev(AuditAction::BindingCreate, &b, &cb)],
            at(2),
        )
        .await
        .unwrap();
    s.wallets
        .commit(
            &wallet(&a, 2, at(3)),
            Some(h),
            vec![
                ev(AuditAction::BindingFreeze, &a, &ca),
                ev(AuditAction::BindingDefaultChanged, &a, &cb),
            ],
            at(3),
        )
        .await
        .unwrap();
    s.audit
        .append_system(vec![event(AuditAction::RetentionPurge, None, None)], at(4))
        .await
        .unwrap();
    // A refusal about gus, recorded in the service's own chain.
    s.audit
        .append_system(
            vec![event(AuditAction::AccessDenied, Some(&a), None)],
            at(5),
        )
        .await
        .unwrap();

    let list = |filter: AuditFilter, after: Option<AuditCursor>, limit| {
        let s = s.clone();
        async move { s.audit.list(&filter, after, limit).await.unwrap() }
    };
    let actions = |rs: &[crate::audit::AuditRecord]| -> Vec<&'static str> {
        rs.iter().map(|r| r.event.action.as_str()).collect()
    };
    let all = list(AuditFilter::default(), None, 100).await;
    assert_eq!(
        actions(&all),
        vec![
            "binding.create",
            "binding.channel_start",
            "binding.create",
            "binding.freeze",
            "binding.default_changed",
            "retention.purge",
            "access.denied"
        ],
        "ordered by link instant, then place in the link"
    );
    let mut cursors: Vec<_> = all.iter().map(|r| r.cursor.clone()).collect();
    let listed = cursors.clone();
    cursors.sort();
    assert_eq!(listed, cursors, "listed in cursor order");
    // Paging by cursor, two at a time, gives the same sequence.
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let p = list(AuditFilter::default(), after.clone(), 2).await;
        if p.is_empty() {
            break;
        }
        assert!(p.len() <= 2);
        after = p.last().map(|r| r.cursor.clone());
        paged.extend(p);
    }
    assert_eq!(paged, all);
    let by_user = list(
        AuditFilter {
            user_id: Some(a.clone()),
            ..Default::default()
        },
        None,
        100,
    )
    .await;
    assert_eq!(
        actions(&by_user),
        vec![
            "binding.create",
            "binding.channel_start",
            "binding.freeze",
            "binding.default_changed",
            "access.denied"
        ],
        "events about the user in any chain, the service's included"
    );
    let by_card = list(
        AuditFilter {
            binding_id: Some(cb.clone()),
            ..Default::default()
        },
        None,
        100,
    )
    .await;
    assert_eq!(
        actions(&by_card),
        vec!["binding.create", "binding.default_changed"]
    );
    let by_action = list(
        AuditFilter {
            action: Some(AuditAction::BindingCreate),
            ..Default::default()
        },
        None,
        100,
    )
    .await;
    assert_eq!(by_action.len(), 2);
    let window = list(
        AuditFilter {
            since: Some(at(2)),
            until: Some(at(4)),
            ..Default::default()
        },
        None,
        100,
    )
    .await;
    assert_eq!(
        actions(&window),
        vec![
            "binding.create",
            "binding.freeze",
            "binding.default_changed"
        ],
        "since inclusive, until exclusive"
    );
    assert!(list(AuditFilter::default(), None, 0).await.is_empty());
    // Records carry their link's hash: the chain proves them.
    let links = all_links(&s).await;
    for r in &all {
        assert!(links
            .iter()
            .any(|l| l.hash == r.link_hash && l.seq == r.cursor.seq));
    }
}

pub async fn audit_purge_keeps_each_chains_last_link<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    let (a, b) = (user_id("ian"), user_id("jay"));
    // ian: links at 1, 2, 3, 20; jay: one link at 1 (its last).
    let mut h = None;
    for t in [1, 2, 3, 20] {
        h = Some(commit(&s, &wallet(&a, 1, at(t)), h, at(t)).await.unwrap());
    }
    commit(&s, &wallet(&b, 2, at(1)), None, at(1))
        .await
        .unwrap();
    for t in [1, 30] {
        s.audit
            .append_system(vec![event(AuditAction::RetentionPurge, None, None)], at(t))
            .await
            .unwrap();
    }
    let purged = s.audit.purge_before(at(10)).await.unwrap();
    assert_eq!(purged, 3 + 1, "ian's first three and the system's first");
    let links = all_links(&s).await;
    let kept: Vec<_> = links
        .iter()
        .map(|l| (l.chain.as_str().to_owned(), l.seq))
        .collect();
    assert_eq!(
        kept,
        vec![
            ("@system".to_owned(), 2),
            ("ian".to_owned(), 4),
            ("jay".to_owned(), 1)
        ]
    );
    assert_eq!(verify_links(&links), Ok(3));
    // jay's wallet (its only link is old) is still there.
    let jay = s.wallets.load(&b).await.unwrap().unwrap();
    assert_eq!(jay.wallet.bindings().len(), 2);
    // Chains go on after a purge.
    let next = commit(&s, &wallet(&a, 3, at(40)), h, at(40)).await.unwrap();
    assert_eq!(next.seq, 5);
    assert_eq!(s.audit.purge_before(at(10)).await.unwrap(), 0);
}

pub async fn family_shares_round_trip<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    let (pu, su) = (user_id("fay"), user_id("gus"));
    let (p, w) = family_wallets(&pu, &su, at(1));
    assert_eq!(p.shares().len(), 2);
    assert_eq!(w.shared_in().len(), 2);
    assert!(w
        .effective_default()
        .is_some_and(|d| d.as_str().starts_with("share_")));
    for x in [&p, &w] {
        commit(&s, x, None, at(2)).await.unwrap();
        let got = s.wallets.load(x.user()).await.unwrap().unwrap();
        assert_eq!(&got.wallet, x, "every share field comes back");
    }
    let many = s.wallets.load_many(&[pu.clone(), su]).await.unwrap();
    assert_eq!(many.len(), 2);
    for got in many {
        let want = if got.wallet.user() == p.user() {
            &p
        } else {
            &w
        };
        assert_eq!(&got.wallet, want);
    }
    // A primary's wallet changes: the newest link is the one read.
    let mut head = s.wallets.load(&pu).await.unwrap().unwrap().head;
    let mut p2 = p.clone();
    for i in 0..3 {
        let id = p2.shares()[0].id.clone();
        p2.revoke_share(&id, at(10 + i), "tests").unwrap();
        head = commit(&s, &p2, Some(head), at(10 + i)).await.unwrap();
    }
    let many = s.wallets.load_many(&[pu]).await.unwrap();
    assert_eq!(many.len(), 1);
    assert_eq!(many[0].head, head, "the newest link of the primary");
    assert_eq!(many[0].wallet, p2);
}

pub async fn load_many_reads_each_newest_link<F: StoreFactory + ?Sized>(f: &F) {
    let s = f.fresh().await;
    assert_eq!(s.wallets.load_many(&[]).await.unwrap(), Vec::new());
    let users = [user_id("hal"), user_id("hal.2"), user_id("hal-3")];
    let mut heads = Vec::new();
    for (k, u) in users.iter().enumerate() {
        let mut head = None;
        for i in 0..(k as u32 + 2) {
            head = Some(
                commit(&s, &wallet(u, i + 1, at(i as i64)), head, at(i as i64))
                    .await
                    .unwrap(),
            );
        }
        heads.push(head.unwrap());
    }
    let unknown = user_id("nobody-here");
    let ask = [
        users[2].clone(),
        unknown.clone(),
        users[0].clone(),
        users[2].clone(),
        users[1].clone(),
    ];
    let mut got = s.wallets.load_many(&ask).await.unwrap();
    got.sort_by(|a, b| a.wallet.user().cmp(b.wallet.user()));
    let mut want: Vec<(UserId, ChainHead, usize)> = users
        .iter()
        .zip(&heads)
        .enumerate()
        .map(|(k, (u, h))| (u.clone(), h.clone(), k + 2))
        .collect();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got.len(), 3, "each known user once, the unknown left out");
    for (g, (u, h, cards)) in got.iter().zip(&want) {
        assert_eq!(g.wallet.user(), u);
        assert_eq!(&g.head, h, "the newest link of {u}");
        assert_eq!(
            g.wallet.bindings().len(),
            *cards,
            "the newest wallet of {u}"
        );
        let one = s.wallets.load(u).await.unwrap().unwrap();
        assert_eq!(&one, g, "as load gives it");
    }
    // A commit is seen at once.
    let h = commit(
        &s,
        &wallet(&users[0], 9, at(50)),
        Some(heads[0].clone()),
        at(50),
    )
    .await
    .unwrap();
    let again = s.wallets.load_many(&[users[0].clone()]).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].head, h);
    assert_eq!(again[0].wallet.bindings().len(), 9);
    assert_eq!(
        s.wallets.load_many(&[unknown]).await.unwrap(),
        Vec::new(),
        "only unknown users"
    );
}

/// Link stamps are the links the listing shows for a window, in its
/// order, each with its hash and whether it holds anchors only; paged by
/// `after` without loss or repeat.
pub async fn link_stamps_match_the_listing<F: StoreFactory + ?Sized>(f: &F) {
    use crate::audit::LinkStamp;
    let s = f.fresh().await;
    let (a, b) = (user_id("ida"), user_id("jon"));
    // ida at 1 (two events) and 3; jon at 3 too (same instant, other
    // chain); the service: an anchor alone at 4, an anchor beside a purge
    // at 5, and an event at 9 past the window.
    let ev = |action, u: &UserId| event(action, Some(u), None);
    let h = s
        .wallets
        .commit(
            &wallet(&a, 1, at(1)),
            None,
            vec![
                ev(AuditAction::BindingCreate, &a),
                ev(AuditAction::BindingChannelStart, &a),
            ],
            at(1),
        )
        .await
        .unwrap();
    commit(&s, &wallet(&a, 2, at(3)), Some(h), at(3))
        .await
        .unwrap();
    commit(&s, &wallet(&b, 1, at(3)), None, at(3))
        .await
        .unwrap();
    // A user whose id sorts before `@system`, at the start of a window.
    let z = user_id("7zed");
    commit(&s, &wallet(&z, 1, at(2)), None, at(2))
        .await
        .unwrap();
    // A link of 600 events (more than a page of most listings), all
    // anchors but the last.
    let k = user_id("kim");
    let mut many: Vec<AuditEvent> = (0..599)
        .map(|_| event(AuditAction::AuditAnchor, None, None))
        .collect();
    many.push(ev(AuditAction::BindingCreate, &k));
    s.wallets
        .commit(&wallet(&k, 1, at(6)), None, many, at(6))
        .await
        .unwrap();
    let anchor = || event(AuditAction::AuditAnchor, None, None);
    s.audit.append_system(vec![anchor()], at(4)).await.unwrap();
    s.audit
        .append_system(
            vec![anchor(), event(AuditAction::RetentionPurge, None, None)],
            at(5),
        )
        .await
        .unwrap();
    s.audit
        .append_system(vec![event(AuditAction::RetentionPurge, None, None)], at(9))
        .await
        .unwrap();

    let stamps = s.audit.link_stamps(at(0), at(9), None, 100).await.unwrap();
    let seen: Vec<(i64, String, u64, bool)> = stamps
        .iter()
        .map(|l| {
            (
                l.at.unix_millis(),
                l.chain.as_str().to_owned(),
                l.seq,
                l.anchors_only,
            )
        })
        .collect();
    let (ida, jon) = (a.as_str().to_owned(), b.as_str().to_owned());
    let sys = ChainId::System.as_str().to_owned();
    assert_eq!(
        seen,
        vec![
            (at(1).unix_millis(), ida.clone(), 1, false),
            (at(2).unix_millis(), z.as_str().to_owned(), 1, false),
            (at(3).unix_millis(), ida, 2, false),
            (at(3).unix_millis(), jon, 1, false),
            (at(4).unix_millis(), sys.clone(), 1, true),
            (at(5).unix_millis(), sys, 2, false),
            (at(6).unix_millis(), k.as_str().to_owned(), 1, false),
        ]
    );
    // The hashes are the links' own, as the listing shows them.
    let listed = s
        .audit
        .list(
            &AuditFilter {
                since: Some(at(0)),
                until: Some(at(9)),
                ..AuditFilter::default()
            },
            None,
            1000,
        )
        .await
        .unwrap();
    let mut from_list: Vec<(ChainId, u64, String)> = listed
        .iter()
        .map(|r| (r.cursor.chain.clone(), r.cursor.seq, r.link_hash.clone()))
        .collect();
    from_list.dedup();
    let own: Vec<(ChainId, u64, String)> = stamps
        .iter()
        .map(|l| (l.chain.clone(), l.seq, l.hash.clone()))
        .collect();
    assert_eq!(own, from_list);
    let walked = all_links(&s).await;
    for l in &stamps {
        let link = walked
            .iter()
            .find(|w| w.chain == l.chain && w.seq == l.seq)
            .unwrap();
        assert_eq!((link.at, &link.hash), (l.at, &l.hash));
    }

    // A narrower window, and pages of one and two.
    let mid = s.audit.link_stamps(at(2), at(5), None, 100).await.unwrap();
    assert_eq!(mid, stamps[1..5].to_vec(), "from the digit-first user on");
    for size in [1, 2] {
        let mut paged: Vec<LinkStamp> = Vec::new();
        loop {
            let after = paged.last().map(|l| (l.at, l.chain.clone(), l.seq));
            let page = s
                .audit
                .link_stamps(at(0), at(9), after, size)
                .await
                .unwrap();
            assert!(page.len() <= size as usize);
            if page.is_empty() {
                break;
            }
            paged.extend(page);
        }
        assert_eq!(paged, stamps, "pages of {size}");
    }
}
