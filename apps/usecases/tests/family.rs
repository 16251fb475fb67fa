//! Family cards through the use cases: sharing, accepting, the secondary's
//! list and default, what the primary's changes do to it, the order of the
//! two wallets' writes, and races.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::family_support;
use crate::support;

use cardbind_domain::{Actor, BindingId, ConsentGiven, ErrorCode, Role, Standing};
use cardbind_ports::audit::{AuditAction, AuditFilter, AuditLog};
use cardbind_usecases::family::{ShareForm, SharedStatus};
use cardbind_usecases::{Listed, RequestContext};
use family_support::*;
use support::*;

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
        w.uc.set_default(&as_user("bob"), &user("bob"), &id.card_id(), None)
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
        w.uc.set_default(&as_user("bob"), &user("bob"), &id.card_id(), None)
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
    let bob = w.wallet("bob").await;
    assert!(bob.mirror(&id).unwrap().is_ended());
    assert_eq!(
        bob.default_pointer(),
        Some(&own),
        "the stored default is repaired"
    );
    let alice = w.wallet("alice").await;
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
    let ben = w.wallet("ben").await;
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
    let amy = w.wallet("amy").await;
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
    let one_more = w.wallet("one-more").await;
    assert!(
        one_more.shares().is_empty(),
        "nothing written before the refusal"
    );
}

/// Shares made at once by many primaries to one user: each is checked
/// against the user's room before it is made, so the checks race; the
/// user still never holds more open shares than allowed, and a share they
/// did not receive is refused and ended at its primary's, not left live.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_shares_to_one_user_never_exceed_the_open_share_cap() {
    let max = cardbind_domain::family::MAX_OPEN_SHARED_IN;
    let w = std::sync::Arc::new(world(unlimited()));
    let mut givers = Vec::new();
    for i in 0..(max as u32 + 6) {
        let p = format!("racer{i}");
        let c = active_card(&w, &p, 200 + i).await;
        givers.push((p, c));
    }
    // Four rounds, each to another user: one round may not interleave.
    for round in 0..4 {
        let to = format!("crowded{round}");
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(givers.len()));
        let mut tasks = Vec::new();
        for (p, c) in givers.clone() {
            let (w, barrier, to) = (w.clone(), barrier.clone(), to.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                w.uc.share_card(&backend(), form(&p, &c, &to, 100, 5, w.now()))
                    .await
            }));
        }
        let mut made = 0;
        for ((p, _), t) in givers.iter().zip(tasks) {
            match t.await.unwrap() {
                Ok(_) => made += 1,
                Err(e) => {
                    assert_eq!(e.code(), ErrorCode::ShareLimitReached, "{p}");
                    let theirs = w.wallet(p).await;
                    assert!(
                        theirs
                            .shares()
                            .iter()
                            .filter(|s| s.secondary == user(&to))
                            .all(|s| s.revoked_at.is_some()),
                        "{p}'s refused share is not live"
                    );
                }
            }
        }
        let crowded = w.wallet(&to).await;
        assert_eq!(crowded.open_shared_in(w.now()), made);
        assert!(made <= max, "{made} open shares, at most {max} allowed");
        assert!(made > 0);
    }
}

/// The holder revokes a share between its two writes (made in their
/// wallet, not yet offered in the other user's): the revoke finds no
/// invitation to end, so the share's own request ends the invitation it
/// writes, and answers `share_ended`. Before, the invitation stayed open,
/// counted against the user's cap for the share's whole term.
#[tokio::test]
async fn a_share_revoked_before_it_was_offered_leaves_no_open_invitation() {
    let w = std::sync::Arc::new(world(unlimited()));
    let card = active_card(&w, "pam", 1).await;
    let gate = w.wallets.hold_next_commit_of("pam");
    let made = {
        let (w, card) = (w.clone(), card.clone());
        tokio::spawn(async move {
            w.uc.share_card(&backend(), form("pam", &card, "sam", 1_000, 10, w.now()))
                .await
        })
    };
    until_called(&w.wallets.held).await;
    let pam = w.wallet("pam").await;
    let id = pam.shares()[0].id.clone();
    w.uc.revoke_share(&as_user("pam"), &user("pam"), &card, &id)
        .await
        .unwrap();
    gate.add_permits(1);
    let e = made.await.unwrap().unwrap_err();
    assert_eq!(e.code(), ErrorCode::ShareEnded);
    let sam = w.wallet("sam").await;
    assert!(sam.mirror(&id).is_some_and(|m| m.is_ended()));
    assert_eq!(sam.open_shared_in(w.now()), 0, "nothing counts against sam");
}

/// A share revoked while its user accepts it: the acceptance comes too
/// late to use it, and says so (`share_ended`) instead of `200`.
#[tokio::test]
async fn accepting_a_share_revoked_meanwhile_answers_share_ended() {
    let w = std::sync::Arc::new(world(unlimited()));
    let card = active_card(&w, "pia", 1).await;
    let id =
        w.uc.share_card(&backend(), form("pia", &card, "sol", 1_000, 10, w.now()))
            .await
            .unwrap()
            .view
            .share
            .id;
    // Hold the acceptance after it is written in sol's wallet.
    let gate = w.wallets.hold_next_commit_of("sol");
    let accepting = {
        let (w, id) = (w.clone(), id.clone());
        tokio::spawn(async move {
            w.uc.accept_share(&backend(), &user("sol"), &id, consent())
                .await
        })
    };
    until_called(&w.wallets.held).await;
    w.uc.revoke_share(&as_user("pia"), &user("pia"), &card, &id)
        .await
        .unwrap();
    gate.add_permits(1);
    let e = accepting.await.unwrap().unwrap_err();
    assert_eq!(e.code(), ErrorCode::ShareEnded);
}

/// An acceptance whose card an operator froze while it was written answers
/// `invalid_state_transition`, as accepting a share of a frozen card does
/// (it answered `200` with the share `ended`, which it was not: the
/// acceptance holds, and the card is usable again once unfrozen).
#[tokio::test]
async fn accepting_a_share_whose_card_was_frozen_meanwhile_is_refused_as_suspended() {
    let w = std::sync::Arc::new(world(unlimited()));
    let card = active_card(&w, "pim", 1).await;
    let id =
        w.uc.share_card(&backend(), form("pim", &card, "sam", 1_000, 10, w.now()))
            .await
            .unwrap()
            .view
            .share
            .id;
    let gate = w.wallets.hold_next_commit_of("sam");
    let accepting = {
        let (w, id) = (w.clone(), id.clone());
        tokio::spawn(async move {
            w.uc.accept_share(&backend(), &user("sam"), &id, consent())
                .await
        })
    };
    until_called(&w.wallets.held).await;
    w.uc.freeze(&admin(), &user("pim"), &card).await.unwrap();
    gate.add_permits(1);
    let e = accepting.await.unwrap().unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidStateTransition);
    // Unfrozen, the share is usable: the acceptance held.
    w.uc.unfreeze(&admin(), &user("pim"), &card).await.unwrap();
    let shared =
        w.uc.list_shared_cards(&backend(), &user("sam"))
            .await
            .unwrap();
    assert_eq!(shared.len(), 1);
    assert_eq!(shared[0].status, SharedStatus::Accepted);
}

/// A share ended by an operator for the user it was made to says so in
/// the holder's records (it said the operator was that user).
#[tokio::test]
async fn a_share_an_operator_ends_for_its_user_is_recorded_as_theirs() {
    let w = world(unlimited());
    let card = active_card(&w, "pol", 1).await;
    let id =
        w.uc.share_card(&backend(), form("pol", &card, "sue", 1_000, 10, w.now()))
            .await
            .unwrap()
            .view
            .share
            .id;
    w.uc.leave_share(&admin(), &user("sue"), &id).await.unwrap();
    let by = w
        .wallet("pol")
        .await
        .share(&id)
        .and_then(|s| s.revoked_by.clone())
        .unwrap();
    assert!(by.contains("an operator, for sue"), "{by}");
    assert!(!by.contains("the user it was made to"), "{by}");
}

/// An unbind that stopped after the card was unbound in its holder's
/// wallet, before the shares' invitations were ended: the unbind again
/// (answered at once, the card is unbound) ends them.
#[tokio::test]
async fn an_unbind_again_ends_the_invitations_the_first_one_left() {
    let w = std::sync::Arc::new(world(unlimited()));
    let card = active_card(&w, "rio", 1).await;
    let id =
        w.uc.share_card(&backend(), form("rio", &card, "ray", 1_000, 10, w.now()))
            .await
            .unwrap()
            .view
            .share
            .id;
    let _gate = w.wallets.hold_next_commit_of("rio");
    let first = {
        let (w, card) = (w.clone(), card.clone());
        tokio::spawn(async move { w.uc.unbind(&backend(), &user("rio"), &card, None).await })
    };
    until_called(&w.wallets.held).await;
    // The process stops there.
    first.abort();
    let _ = first.await;
    let ray = w.wallet("ray").await;
    assert!(!ray.mirror(&id).unwrap().is_ended(), "left open");
    w.uc.unbind(&backend(), &user("rio"), &card, None)
        .await
        .unwrap();
    let ray = w.wallet("ray").await;
    assert!(
        ray.mirror(&id).unwrap().is_ended(),
        "ended by the unbind again"
    );
    assert_eq!(ray.open_shared_in(w.now()), 0);
}
