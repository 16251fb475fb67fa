//! Family cards through the use cases: sharing, accepting, the secondary's
//! list and default, what the primary's changes do to it, the order of the
//! two wallets' writes, and races.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;

use cardbind_domain::{
    Actor, BinEntry, BinTable, BindingId, ConsentGiven, Currency, ErrorCode, Money, NewShare, Role,
    ShareId, ShareTerms, Standing, Timestamp,
};
use cardbind_ports::audit::{AuditAction, AuditFilter, AuditLog};
use cardbind_ports::bins::BinDirectory;
use cardbind_ports::store::WalletStore;
use cardbind_usecases::family::{ShareForm, SharedStatus};
use cardbind_usecases::manage::CardQuery;
use cardbind_usecases::{Listed, Ports, RequestContext, UseCases};
use support::*;

const DAY: i64 = 86_400;

fn consent() -> ConsentGiven {
    ConsentGiven {
        text_version: "family-2026-01".into(),
        text_hash: "ef".repeat(32),
        ip: Some("198.51.100.7".into()),
        user_agent: Some("app/2.0".into()),
    }
}

fn as_user(u: &str) -> RequestContext {
    RequestContext::new(Actor::new(u, Role::User), "req-u", None)
}

async fn active_card(w: &World, u: &str, n: u32) -> BindingId {
    let v =
        w.uc.bind_card(&backend(), bind_cmd(u, &visa(n), w.now()))
            .await
            .unwrap();
    v.binding.id.clone()
}

fn form(
    primary: &str,
    card: &BindingId,
    to: &str,
    amount: i64,
    days: i64,
    now: Timestamp,
) -> ShareForm {
    ShareForm {
        user: user(primary),
        card: card.clone(),
        secondary: to.into(),
        amount,
        currency: "CNY".into(),
        expires_at: now.plus_seconds(days * DAY),
        consent: consent(),
    }
}

async fn actions(
    w: &World,
    u: &str,
    action: AuditAction,
) -> Vec<cardbind_ports::audit::AuditEvent> {
    let f = AuditFilter {
        user_id: Some(user(u)),
        action: Some(action),
        ..Default::default()
    };
    w.store
        .list(&f, None, 500)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .collect()
}

async fn list(w: &World, ctx: &RequestContext, u: &str) -> Vec<Listed> {
    w.uc.list_cards(ctx, &user(u), CardQuery::page(None, 100))
        .await
        .unwrap()
        .cards
}

fn shared_ids(cards: &[Listed]) -> Vec<BindingId> {
    cards
        .iter()
        .filter(|c| matches!(c, Listed::Shared(_)))
        .map(Listed::id)
        .collect()
}

fn default_of(cards: &[Listed]) -> Vec<BindingId> {
    cards
        .iter()
        .filter(|c| c.is_default())
        .map(Listed::id)
        .collect()
}

#[tokio::test]
async fn share_accept_use_as_default_then_freeze_and_unbind_take_it_away() {
    let w = world(unlimited());
    let card = active_card(&w, "alice", 1).await;
    let own = active_card(&w, "bob", 2).await;

    let shared =
        w.uc.share_card(&backend(), form("alice", &card, "bob", 50_000, 30, w.now()))
            .await
            .unwrap();
    assert!(shared.created);
    assert_eq!(shared.view.standing, Standing::Invited);
    let id = shared.view.share.id.clone();
    assert!(id.as_str().starts_with("share_"));
    // The same request again finds it (a retry), and writes nothing new.
    let again =
        w.uc.share_card(&backend(), form("alice", &card, "bob", 50_000, 30, w.now()))
            .await
            .unwrap();
    assert!(!again.created);
    assert_eq!(again.view.share.id, id);
    assert_eq!(
        actions(&w, "alice", AuditAction::ShareCreate).await.len(),
        1
    );
    assert_eq!(actions(&w, "bob", AuditAction::ShareInvite).await.len(), 1);

    // Invited: listed among shares offered, not among bob's cards.
    let offered =
        w.uc.list_shared_cards(&as_user("bob"), &user("bob"))
            .await
            .unwrap();
    assert_eq!(offered.len(), 1);
    assert_eq!(offered[0].status, SharedStatus::Invited);
    assert!(shared_ids(&list(&w, &as_user("bob"), "bob").await).is_empty());

    let accepted =
        w.uc.accept_share(&as_user("bob"), &user("bob"), &id, consent())
            .await
            .unwrap();
    assert_eq!(accepted.status, SharedStatus::Accepted);
    let cards = list(&w, &as_user("bob"), "bob").await;
    assert_eq!(shared_ids(&cards), vec![id.card_id()]);
    let Some(Listed::Shared(s)) = cards.iter().find(|c| c.id() == id.card_id()) else {
        panic!("no shared card")
    };
    assert_eq!(s.mirror.card.last4, visa(1)[12..]);
    assert_eq!(s.terms.unwrap().monthly_limit.minor_units(), 50_000);
    // The primary sees that it was accepted.
    let views =
        w.uc.list_card_shares(&backend(), &user("alice"), &card)
            .await
            .unwrap();
    assert_eq!(views[0].standing, Standing::Active);
    assert!(views[0].share.accepted_at.is_some());

    // Bob makes it his default.
    let d =
        w.uc.set_default(&as_user("bob"), &user("bob"), &id.card_id())
            .await
            .unwrap();
    assert!(d.is_default());
    assert_eq!(
        default_of(&list(&w, &as_user("bob"), "bob").await),
        vec![id.card_id()]
    );

    // Alice's card frozen: gone from bob's list at once; his own card is
    // the default meanwhile; the shared card cannot be made default.
    w.uc.freeze(&admin(), &user("alice"), &card).await.unwrap();
    let cards = list(&w, &as_user("bob"), "bob").await;
    assert!(shared_ids(&cards).is_empty());
    assert_eq!(default_of(&cards), vec![own.clone()]);
    let e =
        w.uc.get_card(&as_user("bob"), &user("bob"), &id.card_id())
            .await
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
    let e =
        w.uc.set_default(&as_user("bob"), &user("bob"), &id.card_id())
            .await
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidStateTransition);
    // Unfrozen: bob's choice was never withdrawn.
    w.uc.unfreeze(&admin(), &user("alice"), &card)
        .await
        .unwrap();
    assert_eq!(
        default_of(&list(&w, &as_user("bob"), "bob").await),
        vec![id.card_id()]
    );

    // Alice unbinds: the share ends with the card, in both wallets.
    w.uc.unbind(&backend(), &user("alice"), &card, None)
        .await
        .unwrap();
    let cards = list(&w, &as_user("bob"), "bob").await;
    assert!(shared_ids(&cards).is_empty());
    assert_eq!(default_of(&cards), vec![own.clone()]);
    let bob = w.store.load(&user("bob")).await.unwrap().unwrap().wallet;
    assert!(bob.mirror(&id).unwrap().is_ended());
    assert_eq!(
        bob.default_pointer(),
        Some(&own),
        "the stored default is repaired"
    );
    let alice = w.store.load(&user("alice")).await.unwrap().unwrap().wallet;
    assert!(alice.share(&id).unwrap().revoked_at.is_some());
    let revoked = actions(&w, "alice", AuditAction::ShareRevoke).await;
    assert_eq!(revoked.len(), 1);
    assert!(
        revoked[0].detail.as_deref().unwrap().contains("inactive"),
        "{revoked:?}"
    );
    assert_eq!(actions(&w, "bob", AuditAction::ShareRevoke).await.len(), 1);
    // Bound again, the card is not shared again.
    active_card(&w, "alice", 1).await;
    assert!(shared_ids(&list(&w, &as_user("bob"), "bob").await).is_empty());
}

#[tokio::test]
async fn revoke_and_leave_end_both_sides_and_are_harmless_twice() {
    let w = world(unlimited());
    let card = active_card(&w, "amy", 1).await;
    let s1 =
        w.uc.share_card(&backend(), form("amy", &card, "ben", 1_000, 10, w.now()))
            .await
            .unwrap()
            .view
            .share
            .id;
    let s2 =
        w.uc.share_card(&backend(), form("amy", &card, "cat", 2_000, 10, w.now()))
            .await
            .unwrap()
            .view
            .share
            .id;
    w.uc.accept_share(&backend(), &user("ben"), &s1, consent())
        .await
        .unwrap();
    for _ in 0..2 {
        let v =
            w.uc.revoke_share(&as_user("amy"), &user("amy"), &card, &s1)
                .await
                .unwrap();
        assert_eq!(v.standing, Standing::Revoked);
        assert_eq!(v.share.revoked_by.as_deref(), Some("amy"));
    }
    assert_eq!(actions(&w, "amy", AuditAction::ShareRevoke).await.len(), 1);
    let ben = w.store.load(&user("ben")).await.unwrap().unwrap().wallet;
    let m = ben.mirror(&s1).unwrap();
    assert!(m.is_ended());
    assert!(
        m.consent.as_ref().unwrap().revoked_at.is_some(),
        "ben's consent ends too"
    );
    assert!(w
        .uc
        .list_shared_cards(&backend(), &user("ben"))
        .await
        .unwrap()
        .is_empty());
    // Accepting a revoked share is refused.
    let e =
        w.uc.accept_share(&backend(), &user("ben"), &s1, consent())
            .await
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::ShareEnded);

    // Cat declines (never accepted).
    for _ in 0..2 {
        let v =
            w.uc.leave_share(&as_user("cat"), &user("cat"), &s2)
                .await
                .unwrap();
        assert_eq!(v.status, SharedStatus::Ended);
    }
    let left = actions(&w, "cat", AuditAction::ShareLeave).await;
    assert_eq!(left.len(), 1);
    assert!(left[0].detail.as_deref().unwrap().ends_with("declined"));
    let amy = w.store.load(&user("amy")).await.unwrap().unwrap().wallet;
    let s = amy.share(&s2).unwrap();
    assert!(s.revoked_by.as_deref().unwrap().starts_with("cat"));
    // The pair may be shared again, as a new share.
    let s3 =
        w.uc.share_card(&backend(), form("amy", &card, "cat", 2_000, 10, w.now()))
            .await
            .unwrap();
    assert!(s3.created);
    assert_ne!(s3.view.share.id, s2);
    let listed =
        w.uc.list_card_shares(&backend(), &user("amy"), &card)
            .await
            .unwrap();
    assert_eq!(listed.len(), 3, "ended shares stay listed for their holder");
    assert_eq!(listed[0].share.id, s3.view.share.id, "newest first");
}

#[tokio::test]
async fn users_act_only_on_their_own_side() {
    let w = world(unlimited());
    let card = active_card(&w, "ann", 1).await;
    // Bob may not share Ann's card, under either path.
    let e =
        w.uc.share_card(&as_user("bob"), form("ann", &card, "bob", 100, 5, w.now()))
            .await
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Forbidden);
    let e =
        w.uc.share_card(&as_user("bob"), form("bob", &card, "cal", 100, 5, w.now()))
            .await
            .unwrap_err();
    assert_eq!(
        e.code(),
        ErrorCode::NotFound,
        "Ann's card under Bob's own path"
    );
    let id =
        w.uc.share_card(&as_user("ann"), form("ann", &card, "bob", 100, 5, w.now()))
            .await
            .unwrap()
            .view
            .share
            .id;
    // Cal may not accept a share made to Bob: not under Bob's path, and
    // under his own it does not exist.
    let e =
        w.uc.accept_share(&as_user("cal"), &user("bob"), &id, consent())
            .await
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Forbidden);
    let e =
        w.uc.accept_share(&as_user("cal"), &user("cal"), &id, consent())
            .await
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
    // Bob may not revoke it as if he held the card.
    let e =
        w.uc.revoke_share(&as_user("bob"), &user("bob"), &card, &id)
            .await
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
    // Operators end shares but never give or accept one; auditors do
    // neither.
    let ops = admin();
    let e =
        w.uc.share_card(&ops, form("ann", &card, "dan", 100, 5, w.now()))
            .await
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Forbidden);
    let aud = RequestContext::new(Actor::new("aud", Role::Auditor), "r", None);
    let e =
        w.uc.list_card_shares(&aud, &user("ann"), &card)
            .await
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Forbidden);
    let e =
        w.uc.accept_share(&ops, &user("bob"), &id, consent())
            .await
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Forbidden);
    w.uc.revoke_share(&ops, &user("ann"), &card, &id)
        .await
        .unwrap();
    // Refusals are audited, and nothing changed for Bob.
    let denied = w
        .store
        .list(
            &AuditFilter {
                action: Some(AuditAction::AccessDenied),
                ..Default::default()
            },
            None,
            100,
        )
        .await
        .unwrap();
    assert!(denied.len() >= 4, "{}", denied.len());
}

#[tokio::test]
async fn terms_and_rules_are_checked_with_stable_codes() {
    let w = world(unlimited());
    let card = active_card(&w, "eve", 1).await;
    let now = w.now();
    let cases: Vec<(ShareForm, ErrorCode)> = vec![
        (
            form("eve", &card, "fred", 0, 5, now),
            ErrorCode::InvalidAmount,
        ),
        (
            form("eve", &card, "fred", -1, 5, now),
            ErrorCode::InvalidAmount,
        ),
        (
            form("eve", &card, "fred", 1_000_000_001, 5, now),
            ErrorCode::InvalidAmount,
        ),
        (
            ShareForm {
                currency: "ABC".into(),
                ..form("eve", &card, "fred", 100, 5, now)
            },
            ErrorCode::InvalidCurrency,
        ),
        (
            ShareForm {
                currency: "XAU".into(),
                ..form("eve", &card, "fred", 100, 5, now)
            },
            ErrorCode::InvalidCurrency,
        ),
        (
            form("eve", &card, "fred", 100, 0, now),
            ErrorCode::InvalidShareExpiry,
        ),
        (
            form("eve", &card, "fred", 100, -3, now),
            ErrorCode::InvalidShareExpiry,
        ),
        (
            form("eve", &card, "fred", 100, 6 * 366, now),
            ErrorCode::InvalidShareExpiry,
        ),
        (
            form("eve", &card, "../x", 100, 5, now),
            ErrorCode::InvalidUserId,
        ),
        (
            form("eve", &card, "eve", 100, 5, now),
            ErrorCode::ShareWithSelf,
        ),
        (
            form(
                "eve",
                &BindingId::parse("nope").unwrap(),
                "fred",
                100,
                5,
                now,
            ),
            ErrorCode::NotFound,
        ),
        (
            ShareForm {
                consent: ConsentGiven::default(),
                ..form("eve", &card, "fred", 100, 5, now)
            },
            ErrorCode::InvalidRequest,
        ),
    ];
    for (f, code) in cases {
        let what = format!("{f:?}");
        let e = w.uc.share_card(&backend(), f).await.unwrap_err();
        assert_eq!(e.code(), code, "{what}");
    }
    w.uc.share_card(&backend(), form("eve", &card, "fred", 100, 5, now))
        .await
        .unwrap();
    let e =
        w.uc.share_card(&backend(), form("eve", &card, "fred", 200, 5, now))
            .await
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::CardAlreadyShared);
    w.uc.freeze(&admin(), &user("eve"), &card).await.unwrap();
    let e =
        w.uc.share_card(&backend(), form("eve", &card, "gil", 100, 5, now))
            .await
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidStateTransition);
    let refused = actions(&w, "eve", AuditAction::ShareCreate).await;
    assert!(
        refused
            .iter()
            .any(|e| e.outcome.as_str() == "card_already_shared"),
        "a refused share is audited: {refused:?}"
    );
    // A secondary holds at most so many open shares.
    for i in 0..cardbind_domain::family::MAX_OPEN_SHARED_IN as u32 {
        let p = format!("giver{i}");
        let c = active_card(&w, &p, 10 + i).await;
        w.uc.share_card(&backend(), form(&p, &c, "hub", 100, 5, w.now()))
            .await
            .unwrap();
    }
    let c = active_card(&w, "one-more", 99).await;
    let e =
        w.uc.share_card(&backend(), form("one-more", &c, "hub", 100, 5, w.now()))
            .await
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::ShareLimitReached);
    let one_more = w
        .store
        .load(&user("one-more"))
        .await
        .unwrap()
        .unwrap()
        .wallet;
    assert!(
        one_more.shares().is_empty(),
        "nothing written before the refusal"
    );
}

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
    w.uc.set_default(&backend(), &user("ida"), &long.card_id())
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
    let jo = w.store.load(&user("jo")).await.unwrap().unwrap().wallet;
    assert!(
        jo.share(&jk).unwrap().revoked_at.is_some(),
        "revoked where it is the truth"
    );
    let kim = w.store.load(&user("kim")).await.unwrap().unwrap().wallet;
    assert!(kim.mirror(&jk).unwrap().is_ended());
    assert!(kim.share(&kl).unwrap().revoked_at.is_some());
    let lu = w.store.load(&user("lu")).await.unwrap().unwrap().wallet;
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
    let ned = w.store.load(&user("ned")).await.unwrap().unwrap().wallet;
    assert!(!ned.mirror(&id).unwrap().is_ended(), "the mirror is stale");
    w.uc.revoke_share(&backend(), &user("mo"), &card, &id)
        .await
        .unwrap();
    let ned = w.store.load(&user("ned")).await.unwrap().unwrap().wallet;
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
    let pat = w.store.load(&user("pat")).await.unwrap().unwrap().wallet;
    let quinn = w.store.load(&user("quinn")).await.unwrap().unwrap().wallet;
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
