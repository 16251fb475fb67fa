//! Family cards through the use cases: expiry, erasure, a second write
//! left undone, races, the currency filter and consents.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::family_support;
use crate::support;

use std::sync::Arc;

use cardbind_domain::{
    BinEntry, BinTable, Currency, ErrorCode, Money, NewShare, ShareId, ShareTerms, Standing,
};
use cardbind_ports::audit::AuditAction;
use cardbind_ports::bins::BinDirectory;
use cardbind_ports::store::WalletStore;
use cardbind_usecases::family::SharedStatus;
use cardbind_usecases::manage::CardQuery;
use cardbind_usecases::{Listed, Ports, UseCases};
use family_support::*;
use support::*;

#[tokio::test]
async fn an_expired_share_is_not_usable_and_cannot_be_accepted() {
    let w = world(unlimited());
    let card = active_card(&w, "gia", 1).await;
    let short =
        w.uc.share_card(&backend(), form("gia", &card, "hal", 100, 1, w.now()))
            .await
            .unwrap()
            .view
            .share
            .id;
    let long =
        w.uc.share_card(&backend(), form("gia", &card, "ida", 100, 3, w.now()))
            .await
            .unwrap()
            .view
            .share
            .id;
    w.uc.accept_share(&backend(), &user("ida"), &long, consent())
        .await
        .unwrap();
    w.uc.set_default(&backend(), &user("ida"), &long.card_id(), None)
        .await
        .unwrap();
    w.clock.advance(DAY + 1);
    let e =
        w.uc.accept_share(&backend(), &user("hal"), &short, consent())
            .await
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::ShareEnded);
    assert!(w
        .uc
        .list_shared_cards(&backend(), &user("hal"))
        .await
        .unwrap()
        .is_empty());
    // Usable until the instant it expires, not at it.
    assert_eq!(
        shared_ids(&list(&w, &backend(), "ida").await),
        vec![long.card_id()]
    );
    w.clock.advance(2 * DAY - 1);
    let cards = list(&w, &backend(), "ida").await;
    assert!(shared_ids(&cards).is_empty());
    assert!(default_of(&cards).is_empty(), "no own card to fall back to");
    let views =
        w.uc.list_card_shares(&backend(), &user("gia"), &card)
            .await
            .unwrap();
    assert!(views.iter().all(|v| v.standing == Standing::Expired));
}

/// A share that expired stays `expired` when its secondary is erased or
/// its card unbound afterwards: it had ended by then (before, both marked
/// it revoked, which misreports why it ended).
#[tokio::test]
async fn an_expired_share_stays_expired_after_an_erasure_or_an_unbind() {
    let w = world(unlimited());
    let card = active_card(&w, "exa", 1).await;
    for to in ["exb", "exc"] {
        let id =
            w.uc.share_card(&backend(), form("exa", &card, to, 100, 1, w.now()))
                .await
                .unwrap()
                .view
                .share
                .id;
        w.uc.accept_share(&backend(), &user(to), &id, consent())
            .await
            .unwrap();
    }
    w.clock.advance(DAY + 1);
    w.uc.erase_user(&admin(), &user("exb"), None).await.unwrap();
    let standings = || async {
        w.uc.list_card_shares(&backend(), &user("exa"), &card)
            .await
            .unwrap()
            .iter()
            .map(|v| v.standing)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        standings().await,
        vec![Standing::Expired, Standing::Expired]
    );
    w.uc.unbind(&backend(), &user("exa"), &card, None)
        .await
        .unwrap();
    assert_eq!(
        standings().await,
        vec![Standing::Expired, Standing::Expired]
    );
}

#[tokio::test]
async fn erasure_ends_the_shares_of_both_kinds() {
    let w = world(unlimited());
    let a = active_card(&w, "jo", 1).await;
    let b = active_card(&w, "kim", 2).await;
    // Jo shares with Kim; Kim shares with Lu.
    let jk =
        w.uc.share_card(&backend(), form("jo", &a, "kim", 100, 5, w.now()))
            .await
            .unwrap()
            .view
            .share
            .id;
    let kl =
        w.uc.share_card(&backend(), form("kim", &b, "lu", 100, 5, w.now()))
            .await
            .unwrap()
            .view
            .share
            .id;
    w.uc.accept_share(&backend(), &user("kim"), &jk, consent())
        .await
        .unwrap();
    w.uc.accept_share(&backend(), &user("lu"), &kl, consent())
        .await
        .unwrap();
    w.uc.erase_user(&admin(), &user("kim"), None).await.unwrap();
    let jo = w.wallet("jo").await;
    assert!(
        jo.share(&jk).unwrap().revoked_at.is_some(),
        "revoked where it is the truth"
    );
    let kim = w.wallet("kim").await;
    assert!(kim.mirror(&jk).unwrap().is_ended());
    assert!(kim.share(&kl).unwrap().revoked_at.is_some());
    let lu = w.wallet("lu").await;
    assert!(
        lu.mirror(&kl).unwrap().is_ended(),
        "the secondary's mirror ends too"
    );
    assert!(shared_ids(&list(&w, &backend(), "lu").await).is_empty());
}

#[tokio::test]
async fn a_second_write_left_undone_is_never_usable_and_the_same_request_completes_it() {
    let w = world(unlimited());
    let card = active_card(&w, "mo", 1).await;
    let now = w.now();
    // The primary's write of a share happened, the invitation's did not.
    let stored = w.store.load(&user("mo")).await.unwrap().unwrap();
    let mut wallet = stored.wallet.clone();
    let terms = ShareTerms::new(
        Money::parse(500, "CNY").unwrap(),
        now.plus_seconds(5 * DAY),
        now,
    )
    .unwrap();
    let id = ShareId::new("half-done").unwrap();
    wallet
        .give_share(
            NewShare {
                id: id.clone(),
                card: card.clone(),
                secondary: user("ned"),
                terms,
                consent: consent()
                    .accept(cardbind_domain::ChannelName::parse("mock").unwrap(), now)
                    .unwrap(),
            },
            now,
        )
        .unwrap();
    w.store
        .commit(&wallet, Some(stored.head), vec![], now)
        .await
        .unwrap();
    assert!(w
        .uc
        .list_shared_cards(&backend(), &user("ned"))
        .await
        .unwrap()
        .is_empty());
    let e =
        w.uc.accept_share(&backend(), &user("ned"), &id, consent())
            .await
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
    // The same request again finds the share and writes the invitation.
    let again =
        w.uc.share_card(&backend(), form("mo", &card, "ned", 500, 5, now))
            .await
            .unwrap();
    assert!(!again.created);
    assert_eq!(again.view.share.id, id);
    let offered =
        w.uc.list_shared_cards(&backend(), &user("ned"))
            .await
            .unwrap();
    assert_eq!(offered.len(), 1);

    // A revoke whose mirror write did not happen: never usable, and
    // revoking again ends the mirror.
    w.uc.accept_share(&backend(), &user("ned"), &id, consent())
        .await
        .unwrap();
    let stored = w.store.load(&user("mo")).await.unwrap().unwrap();
    let mut wallet = stored.wallet.clone();
    wallet.revoke_share(&id, w.now(), "mo").unwrap();
    w.store
        .commit(&wallet, Some(stored.head), vec![], w.now())
        .await
        .unwrap();
    assert!(shared_ids(&list(&w, &backend(), "ned").await).is_empty());
    let ned = w.wallet("ned").await;
    assert!(!ned.mirror(&id).unwrap().is_ended(), "the mirror is stale");
    w.uc.revoke_share(&backend(), &user("mo"), &card, &id)
        .await
        .unwrap();
    let ned = w.wallet("ned").await;
    assert!(ned.mirror(&id).unwrap().is_ended());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_accepts_and_revokes_end_consistent() {
    let w = Arc::new(world(unlimited()));
    let card = active_card(&w, "pat", 1).await;
    let id =
        w.uc.share_card(&backend(), form("pat", &card, "quinn", 100, 5, w.now()))
            .await
            .unwrap()
            .view
            .share
            .id;
    // Eight accepts at once: one consent, one event, all succeed.
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (w, barrier, id) = (w.clone(), barrier.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            w.uc.accept_share(&backend(), &user("quinn"), &id, consent())
                .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().status, SharedStatus::Accepted);
    }
    assert_eq!(
        actions(&w, "quinn", AuditAction::ShareAccept).await.len(),
        1
    );
    assert_eq!(actions(&w, "pat", AuditAction::ShareAccept).await.len(), 1);

    // Revokes, leaves and accepts racing: the share ends on both sides,
    // exactly once each.
    let barrier = Arc::new(tokio::sync::Barrier::new(12));
    let mut tasks = Vec::new();
    for i in 0..12 {
        let (w, barrier, id, card) = (w.clone(), barrier.clone(), id.clone(), card.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            match i % 3 {
                0 => {
                    w.uc.revoke_share(&backend(), &user("pat"), &card, &id)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.code())
                }
                1 => {
                    w.uc.leave_share(&backend(), &user("quinn"), &id)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.code())
                }
                _ => {
                    w.uc.accept_share(&backend(), &user("quinn"), &id, consent())
                        .await
                        .map(|_| ())
                        .map_err(|e| e.code())
                }
            }
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        match (i % 3, t.await.unwrap()) {
            (0 | 1, r) => assert_eq!(r, Ok(()), "revoke and leave always end it"),
            (_, Ok(())) => {}
            (_, Err(code)) => assert_eq!(code, ErrorCode::ShareEnded),
        }
    }
    let pat = w.wallet("pat").await;
    let quinn = w.wallet("quinn").await;
    assert!(pat.share(&id).unwrap().revoked_at.is_some());
    assert!(quinn.mirror(&id).unwrap().is_ended());
    assert_eq!(actions(&w, "pat", AuditAction::ShareRevoke).await.len(), 1);
    let ended_for_quinn = actions(&w, "quinn", AuditAction::ShareRevoke).await.len()
        + actions(&w, "quinn", AuditAction::ShareLeave).await.len();
    assert_eq!(ended_for_quinn, 1, "the mirror ended once");
    assert!(shared_ids(&list(&w, &backend(), "quinn").await).is_empty());
}

#[tokio::test]
async fn cards_are_filtered_by_currency_and_consents_are_listed() {
    let w = world(unlimited());
    let table = BinTable::new(vec![
        BinEntry::parse("411111", "", "TEST", "测试", "Test", "credit", "US", "USD").unwrap(),
        BinEntry::parse(
            "622588",
            "",
            "CMB",
            "招商银行",
            "China Merchants Bank",
            "debit",
            "CN",
            "CNY",
        )
        .unwrap(),
    ])
    .unwrap();
    let uc = UseCases::new(
        Ports {
            bins: Arc::new(BinDirectory::new(table)),
            ..w.uc.ports().clone()
        },
        unlimited(),
    );
    let unionpay = {
        let body = "622588000000123";
        let check = cardbind_domain::card::luhn_check_digit(body).unwrap();
        format!("{body}{check}")
    };
    let usd = uc
        .bind_card(&backend(), bind_cmd("rae", &visa(1), w.now()))
        .await
        .unwrap()
        .binding
        .id
        .clone();
    let cny = uc
        .bind_card(&backend(), bind_cmd("rae", &unionpay, w.now()))
        .await
        .unwrap()
        .binding
        .id
        .clone();
    let shared = uc
        .bind_card(&backend(), bind_cmd("sam", &unionpay, w.now()))
        .await
        .unwrap()
        .binding
        .id
        .clone();
    let sid = uc
        .share_card(&backend(), form("sam", &shared, "rae", 100, 5, w.now()))
        .await
        .unwrap()
        .view
        .share
        .id;
    uc.accept_share(&backend(), &user("rae"), &sid, consent())
        .await
        .unwrap();
    let q = |c: &str| CardQuery {
        currency: Some(Currency::parse(c).unwrap()),
        ..CardQuery::page(None, 100)
    };
    let ids = |p: cardbind_usecases::WalletPage| p.cards.iter().map(Listed::id).collect::<Vec<_>>();
    let cny_cards = ids(uc
        .list_cards(&backend(), &user("rae"), q("CNY"))
        .await
        .unwrap());
    assert_eq!(
        cny_cards,
        vec![cny, sid.card_id()],
        "own card, then the shared one"
    );
    let usd_cards = ids(uc
        .list_cards(&backend(), &user("rae"), q("USD"))
        .await
        .unwrap());
    assert_eq!(usd_cards, vec![usd]);
    assert!(ids(uc
        .list_cards(&backend(), &user("rae"), q("JPY"))
        .await
        .unwrap())
    .is_empty());
    // Paging over both kinds.
    let first = uc
        .list_cards(&backend(), &user("rae"), CardQuery::page(None, 2))
        .await
        .unwrap();
    assert_eq!(first.cards.len(), 2);
    let rest = uc
        .list_cards(
            &backend(),
            &user("rae"),
            CardQuery::page(first.next.clone(), 2),
        )
        .await
        .unwrap();
    assert_eq!(
        rest.cards.iter().map(Listed::id).collect::<Vec<_>>(),
        vec![sid.card_id()]
    );

    // Consents: the share (Sam's) and the acceptance (Rae's).
    let sam = uc
        .list_consents(&backend(), &user("sam"), None, 100)
        .await
        .unwrap();
    assert!(sam
        .iter()
        .any(|c| c.share.as_ref() == Some(&sid) && c.binding == shared));
    let rae = uc
        .list_consents(&backend(), &user("rae"), None, 100)
        .await
        .unwrap();
    let acc = rae.iter().find(|c| c.share.as_ref() == Some(&sid)).unwrap();
    assert_eq!(acc.binding, sid.card_id());
    assert_eq!(acc.consent.text_version, "family-2026-01");
    assert_eq!(acc.id, format!("{sid}:1"));
}
