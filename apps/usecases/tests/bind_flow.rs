//! The use cases end to end on the in-memory store: what each answers and
//! what it leaves written (wallet, card data, audit, review queue).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support;

use cardbind_domain::{BindingStatus, ErrorCode, FailureReason, NextAction};
use cardbind_ports::audit::{AuditAction, AuditEvent, AuditFilter, AuditLog, Outcome};
use cardbind_ports::channel::{Notification, RemoteState};
use cardbind_ports::store::{CardDataStore, ReviewQueue};
use cardbind_ports::ChannelError;
use cardbind_usecases::bind::BindError;
use cardbind_usecases::manage::CardQuery;
use cardbind_usecases::verify::{Otp, VerifyCard};
use cardbind_usecases::{Listed, Policy};
use support::*;

/// A user's audit events (with one action when given), oldest first.
async fn events_of(w: &World, u: &str, action: Option<AuditAction>) -> Vec<AuditEvent> {
    let f = AuditFilter {
        user_id: Some(user(u)),
        action,
        ..Default::default()
    };
    AuditLog::list(&w.store, &f, None, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .collect()
}

async fn actions(w: &World, u: &str) -> Vec<(AuditAction, Outcome)> {
    let all = events_of(w, u, None).await;
    all.into_iter().map(|e| (e.action, e.outcome)).collect()
}

/// The details of a user's events with one action, oldest first.
async fn details(w: &World, u: &str, action: AuditAction) -> Vec<String> {
    let all = events_of(w, u, Some(action)).await;
    all.into_iter()
        .map(|e| e.detail.unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn an_instant_bind_is_active_default_sealed_consented_and_audited() {
    let w = world(Policy::default());
    let v =
        w.uc.bind_card(&backend(), bind_cmd("alice", &visa(1), w.now()))
            .await
            .unwrap();
    assert_eq!(v.binding.status, BindingStatus::Active);
    assert!(v.is_default);
    let b = &v.binding;
    assert_eq!(
        b.consent().unwrap().agreement_id.as_deref(),
        Some(format!("ref-{}", b.id).as_str())
    );
    let data = CardDataStore::get(&w.store, &user("alice"), &b.id, b.data_generation)
        .await
        .unwrap()
        .expect("sealed data stored under the binding's generation");
    assert!(!String::from_utf8_lossy(data.sealed.pan.as_bytes()).contains(&visa(1)));
    let got = actions(&w, "alice").await;
    for a in [
        AuditAction::BindingCreate,
        AuditAction::BindingChannelStart,
        AuditAction::BindingDefaultChanged,
    ] {
        assert!(got.contains(&(a, Outcome::Ok)), "{a} missing in {got:?}");
    }
    let page =
        w.uc.list_cards(&backend(), &user("alice"), CardQuery::page(None, 20))
            .await
            .unwrap();
    assert_eq!(page.cards, vec![Listed::Own(v)]);
}

#[tokio::test]
async fn an_otp_bind_waits_then_verifies() {
    let w = world(Policy::default());
    w.channel.always(Script::Otp);
    let v =
        w.uc.bind_card(&backend(), bind_cmd("bob", &visa(2), w.now()))
            .await
            .unwrap();
    assert_eq!(v.binding.status, BindingStatus::PendingVerification);
    assert!(matches!(
        v.binding.next_action,
        Some(NextAction::Otp { .. })
    ));
    assert!(!v.is_default);
    let cmd = |otp: &str| VerifyCard {
        user: user("bob"),
        card: v.binding.id.clone(),
        otp: Otp::parse(otp).unwrap(),
    };
    let e = w.uc.verify(&backend(), cmd("000000")).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidOtp);
    let ok = w.uc.verify(&backend(), cmd("123456")).await.unwrap();
    assert_eq!(ok.binding.status, BindingStatus::Active);
    assert!(ok.is_default);
    assert_eq!(ok.binding.otp_attempts, 2);
}

/// A code check the channel answers unusably (an answer that does not
/// parse or whose signature does not verify) is the channel unavailable,
/// `503`, and the code can be sent again (it was `500 internal_error`).
/// The attempt stays counted: the channel answered, so it may have checked
/// the code, and guesses whose answers cannot be read must not go
/// uncounted.
#[tokio::test]
async fn an_unusable_answer_to_a_code_check_is_the_channel_unavailable() {
    let w = world(Policy::default());
    w.channel.always(Script::Otp);
    let v =
        w.uc.bind_card(&backend(), bind_cmd("uca", &visa(3), w.now()))
            .await
            .unwrap();
    let cmd = |otp: &str| VerifyCard {
        user: user("uca"),
        card: v.binding.id.clone(),
        otp: Otp::parse(otp).unwrap(),
    };
    for (tried, e) in [
        ChannelError::Protocol("unsigned error_response".into()),
        ChannelError::InvalidSignature,
    ]
    .into_iter()
    .enumerate()
    {
        w.channel.confirm_fails.lock().unwrap().replace(e.clone());
        let refused = w.uc.verify(&backend(), cmd("123456")).await.unwrap_err();
        assert_eq!(refused.code(), ErrorCode::ChannelUnavailable, "{e}");
        let card = w.wallet("uca").await.get(&v.binding.id).unwrap().clone();
        assert_eq!(
            (card.status, card.otp_attempts),
            (BindingStatus::PendingVerification, tried as u32 + 1),
            "{e}"
        );
    }
    w.channel.confirm_fails.lock().unwrap().take();
    let ok = w.uc.verify(&backend(), cmd("123456")).await.unwrap();
    assert_eq!(
        (ok.binding.status, ok.binding.otp_attempts),
        (BindingStatus::Active, 3)
    );
}

/// A card whose code did not come within its verification window is bound
/// again by the next bind of it (before, `card_already_bound` until a code
/// check or `cardbind reconcile` failed it): a new code is sent, the data
/// of the lapsed bind goes, the new code verifies it, and the audit log
/// says why the card was bound again.
#[tokio::test]
async fn a_bind_after_the_verification_window_starts_the_card_again() {
    use cardbind_ports::store::CardDataStore;
    let w = world(Policy::default());
    w.channel.always(Script::Otp);
    let window = Policy::default().verification.window_seconds;
    let ctx = backend();
    let bind = || w.uc.bind_card(&ctx, bind_cmd("dan", &visa(7), w.now()));
    let first = bind().await.unwrap().binding;
    let stored = |g| {
        let (store, id) = (w.store.clone(), first.id.clone());
        async move {
            CardDataStore::get(&store, &user("dan"), &id, g)
                .await
                .unwrap()
                .is_some()
        }
    };
    w.clock.advance(window);
    let e = bind().await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::CardAlreadyBound);
    w.clock.advance(1);
    let again = bind().await.unwrap().binding;
    assert_eq!(again.id, first.id);
    assert_eq!(again.status, BindingStatus::PendingVerification);
    assert!(matches!(again.next_action, Some(NextAction::Otp { .. })));
    assert_ne!(again.data_generation, first.data_generation);
    assert!(
        !stored(first.data_generation).await,
        "the lapsed bind's data"
    );
    assert!(stored(again.data_generation).await);
    let ok =
        w.uc.verify(
            &backend(),
            VerifyCard {
                user: user("dan"),
                card: again.id.clone(),
                otp: Otp::parse("123456").unwrap(),
            },
        )
        .await
        .unwrap();
    assert_eq!(ok.binding.status, BindingStatus::Active);
    // Recorded as reconciliation records a lapse, then as any bind again.
    let lapses = details(&w, "dan", AuditAction::BindingChannelEvent).await;
    assert_eq!(
        lapses,
        ["pending_verification -> failed; verification_expired: its verification window closed before this bind of the card"]
    );
    let rebinds = details(&w, "dan", AuditAction::BindingRebind).await;
    assert_eq!(rebinds.len(), 1, "{rebinds:?}");
    assert!(
        rebinds[0].starts_with("-> pending_verification; "),
        "{rebinds:?}"
    );
    // A retry of the request that placed the card (its key), past the
    // window, binds it again too, rather than answering the lapsed card.
    let keyed = || {
        let mut cmd = bind_cmd("eve", &visa(8), w.now());
        cmd.bind_key = Some("k-eve".into());
        w.uc.bind_card(&ctx, cmd)
    };
    let placed = keyed().await.unwrap().binding;
    assert_eq!(
        keyed().await.unwrap().binding.data_generation,
        placed.data_generation
    );
    w.clock.advance(window + 1);
    let retried = keyed().await.unwrap().binding;
    assert_eq!(retried.id, placed.id);
    assert_eq!(retried.status, BindingStatus::PendingVerification);
    assert_ne!(retried.data_generation, placed.data_generation);
    assert_eq!(
        details(&w, "eve", AuditAction::BindingChannelEvent)
            .await
            .len(),
        1
    );
}

/// A card that fails at its code check (the last wrong code, or a channel
/// that no longer waits for it) answers an error, and its sealed data goes
/// all the same, as for every other way a card fails.
#[tokio::test]
async fn a_card_failed_by_its_code_check_keeps_no_card_data() {
    let w = world(Policy::default());
    w.channel.always(Script::Otp);
    let attempts = Policy::default().verification.max_otp_attempts;
    for (u, last) in [("bob", "wrong codes"), ("carol", "an agreement gone")] {
        let v =
            w.uc.bind_card(&backend(), bind_cmd(u, &visa(3), w.now()))
                .await
                .unwrap();
        let id = v.binding.id.clone();
        let generation = w.wallet(u).await.get(&id).unwrap().data_generation;
        let stored = || async {
            CardDataStore::get(&w.store, &user(u), &id, generation)
                .await
                .unwrap()
                .is_some()
        };
        assert!(stored().await, "{last}: the bind stored the card's data");
        let cmd = VerifyCard {
            user: user(u),
            card: id.clone(),
            otp: Otp::parse("000000").unwrap(),
        };
        if u == "bob" {
            for i in 1..attempts {
                let e = w.uc.verify(&backend(), cmd.clone()).await.unwrap_err();
                assert_eq!(e.code(), ErrorCode::InvalidOtp, "attempt {i}");
                assert!(stored().await, "attempt {i}: the card still waits");
            }
        } else {
            w.channel
                .query
                .lock()
                .unwrap()
                .insert(id.as_str().to_owned(), RemoteState::NotFound);
        }
        let e = w.uc.verify(&backend(), cmd).await.unwrap_err();
        let expected = if u == "bob" {
            ErrorCode::InvalidOtp
        } else {
            ErrorCode::VerificationExpired
        };
        assert_eq!(e.code(), expected, "{last}");
        assert_eq!(
            w.wallet(u).await.get(&id).unwrap().status,
            BindingStatus::Failed,
            "{last}"
        );
        assert!(!stored().await, "{last}: the failed card's data is kept");
    }
}

#[tokio::test]
async fn the_audit_log_names_the_agreement_each_bind_ends_with() {
    let w = world(Policy::default());
    // Instant: the channel's answer activates the card and names it.
    let v =
        w.uc.bind_card(&backend(), bind_cmd("alice", &visa(1), w.now()))
            .await
            .unwrap();
    let agreement = format!("ref-{}", v.binding.id);
    let activated = format!("pending_verification -> active; agreement {agreement:?}");
    assert_eq!(
        details(&w, "alice", AuditAction::BindingChannelStart).await,
        vec![activated.clone()]
    );
    // A bind of the card again is a new consent: its own agreement (the
    // channel gives a new one) is named in its own event.
    w.uc.unbind(&backend(), &user("alice"), &v.binding.id, None)
        .await
        .unwrap();
    w.uc.bind_card(&backend(), bind_cmd("alice", &visa(1), w.now()))
        .await
        .unwrap();
    let again = format!(
        "pending_verification -> active; agreement {:?}",
        format!("{agreement}-2")
    );
    assert_eq!(
        details(&w, "alice", AuditAction::BindingChannelStart).await,
        vec![activated.clone(), again]
    );
    // Nothing else about the card repeats it (the unbind kept the same
    // agreement on the ended consent).
    assert!(!details(&w, "alice", AuditAction::BindingUnbind)
        .await
        .iter()
        .any(|d| d.contains("agreement")));

    // A code: the card is active, and the agreement named, once verified.
    w.channel.always(Script::Otp);
    let v =
        w.uc.bind_card(&backend(), bind_cmd("bob", &visa(2), w.now()))
            .await
            .unwrap();
    let started = details(&w, "bob", AuditAction::BindingChannelStart).await;
    assert!(!started[0].contains("agreement"), "{started:?}");
    let ok =
        w.uc.verify(
            &backend(),
            VerifyCard {
                user: user("bob"),
                card: v.binding.id.clone(),
                otp: Otp::parse("123456").unwrap(),
            },
        )
        .await
        .unwrap();
    let agreement = ok.binding.consent().unwrap().agreement_id.clone().unwrap();
    // The attempt is counted in its own write, then the code accepted.
    let verified = details(&w, "bob", AuditAction::BindingVerify).await;
    assert_eq!(
        verified,
        vec![
            "attempt 1".to_owned(),
            format!("pending_verification -> active; agreement {agreement:?}")
        ]
    );
}

#[tokio::test]
async fn card_data_in_a_consents_free_text_is_masked_before_it_is_kept() {
    let w = world(Policy::default());
    let mut cmd = bind_cmd("kim", &visa(3), w.now());
    cmd.consent.text_version = "v1 terms/13800138000".into();
    cmd.consent.user_agent = Some(format!("app/2.1 card {}", spaced(&visa(3))));
    let v = w.uc.bind_card(&backend(), cmd).await.unwrap();
    let kept = v.binding.consent().unwrap();
    assert_eq!(kept.text_version, "v1 terms/***********");
    assert_eq!(
        kept.user_agent.as_deref(),
        Some("app/2.1 card **** **** **** ****")
    );
    // The bind's audit event holds the consent as kept.
    let created = details(&w, "kim", AuditAction::BindingCreate).await;
    assert_eq!(created.len(), 1);
    assert!(
        created[0].contains("card **** **** **** ****"),
        "{created:?}"
    );
    for leak in [visa(3), spaced(&visa(3)), "13800138000".to_owned()] {
        assert!(!created[0].contains(&leak), "{created:?}");
    }
}

/// A card number as people write it: groups of four.
fn spaced(pan: &str) -> String {
    let chars: Vec<char> = pan.chars().collect();
    let groups: Vec<String> = chars.chunks(4).map(|g| g.iter().collect()).collect();
    groups.join(" ")
}

#[tokio::test]
async fn the_same_card_twice_is_already_bound_and_the_refusal_audited() {
    let w = world(Policy::default());
    w.uc.bind_card(&backend(), bind_cmd("carl", &visa(3), w.now()))
        .await
        .unwrap();
    let e =
        w.uc.bind_card(&backend(), bind_cmd("carl", &visa(3), w.now()))
            .await
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::CardAlreadyBound);
    assert!(matches!(e, BindError::Conflict(_)));
    assert!(actions(&w, "carl").await.contains(&(
        AuditAction::BindingCreate,
        Outcome::Refused(ErrorCode::CardAlreadyBound)
    )));
    // Another user binds the same card.
    w.uc.bind_card(&backend(), bind_cmd("dora", &visa(3), w.now()))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_card_bound_again_reuses_its_record_and_is_sealed_anew() {
    let w = world(Policy::default());
    let first =
        w.uc.bind_card(&backend(), bind_cmd("erin", &visa(4), w.now()))
            .await
            .unwrap()
            .binding;
    let gone =
        w.uc.unbind(&backend(), &user("erin"), &first.id, None)
            .await
            .unwrap();
    assert_eq!(gone.binding.status, BindingStatus::Inactive);
    assert!(gone.binding.consent().unwrap().revoked_at.is_some());
    assert_eq!(
        w.channel.unbinds.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert_eq!(
        w.store.owner(&first.id).await.unwrap(),
        None,
        "unbinding drops the card data"
    );
    let again =
        w.uc.bind_card(&backend(), bind_cmd("erin", &visa(4), w.now()))
            .await
            .unwrap()
            .binding;
    assert_eq!(again.id, first.id);
    assert_ne!(again.data_generation, first.data_generation);
    assert_eq!(again.consents.len(), 2);
    assert!(
        CardDataStore::get(&w.store, &user("erin"), &again.id, again.data_generation)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        CardDataStore::get(&w.store, &user("erin"), &again.id, first.data_generation)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_declined_card_fails_keeps_the_channel_code_and_drops_its_data() {
    let w = world(Policy::default());
    w.channel.always(Script::Refuse("ACQ.CARD_DECLINED"));
    let e =
        w.uc.bind_card(&backend(), bind_cmd("fay", &visa(5), w.now()))
            .await
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::ChannelRejected);
    match &e {
        BindError::Unprocessable(d) => assert!(d.message.contains("ACQ.CARD_DECLINED")),
        other => panic!("{other:?}"),
    }
    let page =
        w.uc.list_cards(&backend(), &user("fay"), CardQuery::page(None, 20))
            .await
            .unwrap();
    let b = &page.cards[0].own().unwrap().binding;
    assert_eq!(b.status, BindingStatus::Failed);
    assert_eq!(
        b.failure.as_ref().map(FailureReason::as_str),
        Some("ACQ.CARD_DECLINED")
    );
    assert_eq!(w.store.owner(&b.id).await.unwrap(), None);
    // The audit says it was declined, and by which code (it read `ok`,
    // "pending_verification -> failed": the reason was lost with the card).
    let start = events_of(&w, "fay", Some(AuditAction::BindingChannelStart)).await;
    assert_eq!(start.len(), 1);
    assert_eq!(
        start[0].outcome,
        Outcome::Refused(ErrorCode::ChannelRejected)
    );
    assert!(
        start[0]
            .detail
            .as_deref()
            .unwrap_or_default()
            .contains("ACQ.CARD_DECLINED"),
        "{:?}",
        start[0].detail
    );
}

/// Gus's card, sent to review by a channel that timed out.
async fn gus_in_review() -> (World, cardbind_usecases::CardView) {
    let w = world(Policy::default());
    w.channel.always(Script::Fail(ChannelError::Timeout));
    let v =
        w.uc.bind_card(&backend(), bind_cmd("gus", &visa(6), w.now()))
            .await
            .unwrap();
    assert_eq!(v.binding.status, BindingStatus::PendingReview);
    (w, v)
}

/// Seals `fields` of the card in review `v` again, as an older build took
/// them (its data generation replaced in the store).
async fn reseal(
    w: &World,
    v: &cardbind_usecases::CardView,
    fields: &[(cardbind_domain::SealedField, &str)],
) {
    use cardbind_domain::SealedField;
    use cardbind_ports::keys::{CardVault, SealContext};
    let (id, generation) = (&v.binding.id, v.binding.data_generation);
    let u = v.binding.user_id.clone();
    let mut data = CardDataStore::get(&w.store, &u, id, generation)
        .await
        .unwrap()
        .unwrap();
    for (field, text) in fields {
        let ctx = SealContext::new(id.as_str(), field.as_str());
        let sealed = w.vault.seal(&u, &ctx, text.as_bytes()).await.unwrap();
        match field {
            SealedField::Pan => data.sealed.pan = sealed,
            SealedField::HolderName => data.sealed.holder_name = sealed,
            SealedField::IdNumber => data.sealed.id_number = sealed,
            SealedField::Phone => data.sealed.phone = sealed,
        }
    }
    CardDataStore::delete_generation(&w.store, &u, id, generation)
        .await
        .unwrap();
    CardDataStore::put(&w.store, &data).await.unwrap();
}

/// A card waiting in review since a build whose holder name rule was wider
/// (a letter beyond U+FFFF, taken until December 2026): the operator's
/// retry sends it to the channel with the name it was bound with, rather
/// than refusing its data as unreadable.
#[tokio::test]
async fn a_review_retry_sends_a_name_an_older_rule_took() {
    use cardbind_domain::SealedField;
    let (w, v) = gus_in_review().await;
    let id = v.binding.id.clone();
    // Seal the name again as the older build took it.
    let old_name = "\u{20BB7}野 花子";
    reseal(&w, &v, &[(SealedField::HolderName, old_name)]).await;

    w.channel.always(Script::Bound);
    let r = w.uc.retry_review(&admin(), &id).await.unwrap();
    assert_eq!(r.binding.status, BindingStatus::Active);
    assert_eq!(
        w.channel
            .holder_names
            .lock()
            .unwrap()
            .last()
            .map(String::as_str),
        Some(old_name)
    );
}

/// A card waiting in review whose number, resident ID and phone were
/// taken under wider rules than today's (a UnionPay 81 range since
/// narrowed, a region code since checked, a `+86` number that is not a
/// mobile's, which the store reads back as any E.164 number): the
/// operator's retry sends it to its channel as it was bound, rather than
/// refusing its data as unreadable and auditing a tampering.
#[tokio::test]
async fn a_review_retry_sends_card_data_older_rules_took() {
    use cardbind_domain::{CardNumber, Phone, ResidentId, SealedField};
    let (w, v) = gus_in_review().await;
    let id = v.binding.id.clone();
    let (pan, id_number, phone) = ("8199000000000001", "200105194912310021", "+861012345678");
    assert!(CardNumber::parse(pan).is_err());
    assert!(ResidentId::parse(id_number).is_err());
    assert!(Phone::parse(phone).is_err());
    reseal(
        &w,
        &v,
        &[
            (SealedField::Pan, pan),
            (SealedField::IdNumber, id_number),
            (SealedField::Phone, phone),
        ],
    )
    .await;

    w.channel.always(Script::Bound);
    let r = w.uc.retry_review(&admin(), &id).await.unwrap();
    assert_eq!(r.binding.status, BindingStatus::Active);
}

#[tokio::test]
async fn an_unreachable_channel_sends_the_card_to_review_and_an_operator_decides() {
    let (w, v) = gus_in_review().await;
    assert!(
        ReviewQueue::get(&w.store, &v.binding.id)
            .await
            .unwrap()
            .is_some(),
        "queued"
    );
    let queue = w.uc.list_reviews(&admin(), None, 10).await.unwrap();
    assert_eq!(queue.cards.len(), 1);
    // The channel is back: the operator sends it there again.
    w.channel.always(Script::Bound);
    let opened_before = w.vault.opened.load(std::sync::atomic::Ordering::SeqCst);
    let r = w.uc.retry_review(&admin(), &v.binding.id).await.unwrap();
    assert_eq!(r.binding.status, BindingStatus::Active);
    assert!(r.is_default);
    assert_eq!(
        w.vault.opened.load(std::sync::atomic::Ordering::SeqCst) - opened_before,
        4
    );
    let opens = actions(&w, "gus")
        .await
        .into_iter()
        .filter(|(a, _)| *a == AuditAction::CardDataOpen)
        .count();
    assert_eq!(opens, 4, "each opened field is audited");
    assert!(
        ReviewQueue::get(&w.store, &v.binding.id)
            .await
            .unwrap()
            .is_none(),
        "left the queue"
    );
    assert!(w
        .uc
        .list_reviews(&admin(), None, 10)
        .await
        .unwrap()
        .cards
        .is_empty());
}

#[tokio::test]
async fn a_misconfigured_channel_is_not_a_decline_the_card_waits_in_review_with_the_reason() {
    let w = world(Policy::default());
    w.channel.always(Script::Fail(ChannelError::Misconfigured {
        code: "SIGN_ERROR".into(),
    }));
    let v =
        w.uc.bind_card(&backend(), bind_cmd("ivy", &visa(9), w.now()))
            .await
            .unwrap();
    assert_eq!(v.binding.status, BindingStatus::PendingReview);
    assert_eq!(v.binding.failure, None, "not the card's fault");
    let f = AuditFilter {
        binding_id: Some(v.binding.id.clone()),
        action: Some(AuditAction::ReviewQueued),
        ..Default::default()
    };
    let queued = AuditLog::list(&w.store, &f, None, 10).await.unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(
        queued[0].event.detail.as_deref(),
        Some("channel misconfigured: SIGN_ERROR")
    );
}

#[tokio::test]
async fn review_approve_and_reject() {
    let w = world(Policy::default());
    w.channel.always(Script::Fail(ChannelError::CircuitOpen));
    let a =
        w.uc.bind_card(&backend(), bind_cmd("hal", &visa(7), w.now()))
            .await
            .unwrap()
            .binding;
    let b =
        w.uc.bind_card(&backend(), bind_cmd("hal", &visa(8), w.now()))
            .await
            .unwrap()
            .binding;
    let ok =
        w.uc.approve_review(&admin(), &a.id, Some("2088-1".into()))
            .await
            .unwrap();
    assert_eq!(ok.binding.status, BindingStatus::Active);
    assert_eq!(ok.binding.channel_ref.as_deref(), Some("2088-1"));
    let no = w.uc.reject_review(&admin(), &b.id).await.unwrap();
    assert_eq!(no.binding.status, BindingStatus::Failed);
    assert_eq!(w.store.owner(&b.id).await.unwrap(), None);
    let e = w.uc.reject_review(&admin(), &a.id).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidStateTransition);
    // Decided, out of the queue and without its data: still found (by its
    // audit trail), and a second decision is refused as such.
    let e = w.uc.reject_review(&admin(), &b.id).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidStateTransition);
    let e =
        w.uc.reject_review(
            &admin(),
            &cardbind_domain::BindingId::parse("no-such-card").unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
    let e =
        w.uc.approve_review(&backend(), &a.id, None)
            .await
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Forbidden);
}

/// A channel reference another live card holds is refused at approval:
/// this card's notifications and its unbind would reach that card's
/// agreement. One left behind by a card that no longer holds it (its
/// delete failed) is taken over.
#[tokio::test]
async fn approving_with_another_cards_reference_is_refused() {
    use cardbind_ports::store::ChannelRefs;
    let w = world(unlimited());
    w.channel.always(Script::Fail(ChannelError::CircuitOpen));
    let mut cards = Vec::new();
    for (u, n) in [("r1", 21), ("r3", 23), ("r4", 24)] {
        cards.push(
            w.uc.bind_card(&backend(), bind_cmd(u, &visa(n), w.now()))
                .await
                .unwrap()
                .binding,
        );
    }
    w.uc.approve_review(&admin(), &cards[0].id, Some("ref-123".into()))
        .await
        .unwrap();
    let e =
        w.uc.approve_review(&admin(), &cards[1].id, Some("ref-123".into()))
            .await
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Conflict);
    assert_eq!(
        w.wallet("r3").await.get(&cards[1].id).unwrap().status,
        BindingStatus::PendingReview,
        "left in review"
    );
    let found = ChannelRefs::find(&w.store, &cards[0].channel, "ref-123")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.binding, cards[0].id);
    // r1's card is unbound but its reference stays (as when the delete at
    // its end failed): the reference is free, and recorded for r4's card.
    w.uc.unbind(&backend(), &user("r1"), &cards[0].id, None)
        .await
        .unwrap();
    ChannelRefs::put(
        &w.store,
        &cards[0].channel,
        "ref-123",
        &cardbind_ports::store::RefTarget {
            user: user("r1"),
            binding: cards[0].id.clone(),
        },
        cards[0].data_generation,
    )
    .await
    .unwrap();
    let ok =
        w.uc.approve_review(&admin(), &cards[2].id, Some("ref-123".into()))
            .await
            .unwrap();
    assert_eq!(ok.binding.status, BindingStatus::Active);
    let found = ChannelRefs::find(&w.store, &cards[2].channel, "ref-123")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.binding, cards[2].id);
}

/// A user whose wallet does not parse is still crypto-shredded: their key
/// is destroyed (their card data no longer opens), the erasure is recorded
/// in the service's chain, and it fails saying the cards were not unbound
/// (they cannot be read). Before, it failed at the wallet and destroyed
/// nothing.
#[tokio::test]
async fn erasing_a_user_whose_wallet_does_not_parse_still_destroys_the_key() {
    let w = world(Policy::default());
    w.channel.always(Script::Bound);
    w.uc.bind_card(&backend(), bind_cmd("zed", &visa(31), w.now()))
        .await
        .unwrap();
    w.wallets.corrupt.lock().unwrap().replace(user("zed"));
    let e =
        w.uc.erase_user(&admin(), &user("zed"), None)
            .await
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InternalError);
    assert!(e.to_string().contains("their key was destroyed"), "{e}");
    assert!(w.vault.erased.lock().unwrap().contains(&"zed".to_owned()));
    let recorded = AuditLog::list(
        &w.store,
        &AuditFilter {
            user_id: Some(user("zed")),
            action: Some(AuditAction::UserErase),
            ..AuditFilter::default()
        },
        None,
        10,
    )
    .await
    .unwrap();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert!(recorded[0]
        .event
        .detail
        .as_deref()
        .is_some_and(|d| d.contains("cards not unbound")));
    // Not for an operator without the right to erase.
    let e =
        w.uc.erase_user(&backend(), &user("zed"), None)
            .await
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Forbidden);
}

#[tokio::test]
async fn the_fourth_bind_in_a_minute_is_rate_limited_with_retry_after() {
    let w = world(Policy::default());
    for i in 0..3 {
        w.uc.bind_card(&backend(), bind_cmd("ian", &visa(10 + i), w.now()))
            .await
            .unwrap();
    }
    match w
        .uc
        .bind_card(&backend(), bind_cmd("ian", &visa(20), w.now()))
        .await
    {
        Err(BindError::TooManyRequests(l)) => {
            assert_eq!(l.refusal.code, ErrorCode::RateLimited);
            assert!((1..=60).contains(&l.retry_after_seconds));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        actions(&w, "ian").await.contains(&(
            AuditAction::BindingCreate,
            Outcome::Refused(ErrorCode::RateLimited)
        )),
        "the refusal is in the user's own chain"
    );
    w.clock.advance(60);
    w.uc.bind_card(&backend(), bind_cmd("ian", &visa(20), w.now()))
        .await
        .unwrap();
}

/// A signing reported for a card whose data is gone (unbound while it
/// waited for the user) is ended at the channel, unless the channel says
/// it already ended; a channel that cannot be asked is still told to end
/// it. A signing for a card the service never held is left alone.
#[tokio::test]
async fn a_signing_for_a_card_no_longer_held_is_ended_unless_already_ended() {
    let w = world(Policy::default());
    w.channel.always(Script::Redirect);
    let mock = cardbind_domain::ChannelName::parse("mock").unwrap();
    let signed = |n: &str, id: &cardbind_domain::BindingId, agreement: &str| Notification {
        headers: [("x-test-signed".to_owned(), "yes".to_owned())].into(),
        body: format!("{n}|{id}|signed:{agreement}").into_bytes(),
    };
    let mut gone = Vec::new();
    for (who, card) in [("kai", 31), ("kim", 32), ("kit", 33)] {
        let v =
            w.uc.bind_card(&backend(), bind_cmd(who, &visa(card), w.now()))
                .await
                .unwrap();
        w.uc.unbind(&backend(), &user(who), &v.binding.id, None)
            .await
            .unwrap();
        gone.push(v.binding.id.clone());
    }
    let before = w.channel.unbinds.load(std::sync::atomic::Ordering::SeqCst);
    let unbinds = || w.channel.unbinds.load(std::sync::atomic::Ordering::SeqCst) - before;

    // The channel reports the agreement active: ended there.
    w.channel.query.lock().unwrap().insert(
        gone[0].to_string(),
        RemoteState::Active {
            channel_ref: "agr-k0".into(),
        },
    );
    w.uc.handle_notification(&mock, &signed("k0", &gone[0], "agr-k0"))
        .await
        .unwrap();
    assert_eq!(unbinds(), 1);
    assert_eq!(unwanted_signings(&w).await, vec![Outcome::Ok]);

    // Already ended (a late copy of a signing the unbind ended): left alone,
    // nothing recorded.
    w.channel
        .query
        .lock()
        .unwrap()
        .insert(gone[1].to_string(), RemoteState::Terminated);
    w.uc.handle_notification(&mock, &signed("k1", &gone[1], "agr-k1"))
        .await
        .unwrap();
    assert_eq!(unbinds(), 1, "an ended agreement is not ended again");
    assert_eq!(unwanted_signings(&w).await.len(), 1);

    // The channel cannot say: it is told to end it all the same.
    w.channel
        .query_down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    w.uc.handle_notification(&mock, &signed("k2", &gone[2], "agr-k2"))
        .await
        .unwrap();
    assert_eq!(unbinds(), 2, "ended though the channel could not be asked");
    assert_eq!(unwanted_signings(&w).await, vec![Outcome::Ok, Outcome::Ok]);

    // A card this service never held (another system's agreement under a
    // reference that reads as ours): left alone, though the channel would
    // end it.
    w.channel
        .query_down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let stranger = cardbind_domain::BindingId::parse("card-never-held").unwrap();
    w.channel.query.lock().unwrap().insert(
        stranger.to_string(),
        RemoteState::Active {
            channel_ref: "agr-x".into(),
        },
    );
    w.uc.handle_notification(&mock, &signed("k3", &stranger, "agr-x"))
        .await
        .unwrap();
    assert_eq!(unbinds(), 2, "another system's agreement is not ended");
    assert_eq!(unwanted_signings(&w).await.len(), 2);
}

/// A signing of a card that ended here before the user signed (its code
/// check failed it; it was unbound and its reference stayed), reported
/// under the channel's reference alone, is ended at the channel as one
/// reported under our id is; the card is left as it is.
#[tokio::test]
async fn a_late_signing_named_by_the_channels_reference_is_ended_for_a_card_that_ended() {
    use cardbind_ports::store::{ChannelRefs, RefTarget};
    let w = world(Policy::default());
    w.channel.always(Script::Otp);
    let mock = cardbind_domain::ChannelName::parse("mock").unwrap();
    let signed_by_ref = |n: &str, r: &str| Notification {
        headers: [("x-test-signed".to_owned(), "yes".to_owned())].into(),
        body: format!("{n}|ref:{r}|signed:{r}").into_bytes(),
    };
    let unbinds = || w.channel.unbinds.load(std::sync::atomic::Ordering::SeqCst);
    let active = |id: &cardbind_domain::BindingId, r: &str| {
        w.channel.query.lock().unwrap().insert(
            id.to_string(),
            RemoteState::Active {
                channel_ref: r.to_owned(),
            },
        );
    };

    // Failed by its code check; its reference is kept.
    let failed =
        w.uc.bind_card(&backend(), bind_cmd("lfa", &visa(35), w.now()))
            .await
            .unwrap()
            .binding;
    let r = failed.channel_ref.clone().unwrap();
    let cmd = VerifyCard {
        user: user("lfa"),
        card: failed.id.clone(),
        otp: Otp::parse("000000").unwrap(),
    };
    for _ in 0..Policy::default().verification.max_otp_attempts {
        w.uc.verify(&backend(), cmd.clone()).await.unwrap_err();
    }
    let status = |u: &'static str, id: cardbind_domain::BindingId| {
        let w = &w;
        async move { w.wallet(u).await.get(&id).unwrap().status }
    };
    assert_eq!(
        status("lfa", failed.id.clone()).await,
        BindingStatus::Failed
    );
    assert!(ChannelRefs::find(&w.store, &mock, &r)
        .await
        .unwrap()
        .is_some());
    active(&failed.id, &r);
    let before = unbinds();
    w.uc.handle_notification(&mock, &signed_by_ref("lf1", &r))
        .await
        .unwrap();
    assert_eq!(
        unbinds() - before,
        1,
        "the failed card's agreement is ended"
    );
    assert_eq!(
        w.channel.unbound.lock().unwrap().last(),
        Some(&Some(failed.data_generation)),
        "the agreement of the card's last bind"
    );
    assert_eq!(unwanted_signings(&w).await, vec![Outcome::Ok]);
    assert_eq!(
        status("lfa", failed.id.clone()).await,
        BindingStatus::Failed
    );
    assert_eq!(
        ChannelRefs::find(&w.store, &mock, &r).await.unwrap(),
        None,
        "its reference goes with it"
    );

    // Unbound while the user had the channel's page open; the unbind's
    // delete of its reference failed (put back here).
    let unbound =
        w.uc.bind_card(&backend(), bind_cmd("lun", &visa(36), w.now()))
            .await
            .unwrap()
            .binding;
    w.uc.unbind(&backend(), &user("lun"), &unbound.id, None)
        .await
        .unwrap();
    let r = unbound.channel_ref.clone().unwrap();
    let target = RefTarget {
        user: user("lun"),
        binding: unbound.id.clone(),
    };
    ChannelRefs::put(&w.store, &mock, &r, &target, unbound.data_generation)
        .await
        .unwrap();
    active(&unbound.id, &r);
    let before = unbinds();
    w.uc.handle_notification(&mock, &signed_by_ref("lu1", &r))
        .await
        .unwrap();
    assert_eq!(
        unbinds() - before,
        1,
        "the unbound card's agreement is ended"
    );
    assert_eq!(unwanted_signings(&w).await, vec![Outcome::Ok, Outcome::Ok]);
    assert_eq!(
        status("lun", unbound.id.clone()).await,
        BindingStatus::Inactive
    );

    // Already ended at the channel (a late copy): nothing more.
    w.channel
        .query
        .lock()
        .unwrap()
        .insert(unbound.id.to_string(), RemoteState::Terminated);
    ChannelRefs::put(&w.store, &mock, &r, &target, unbound.data_generation)
        .await
        .unwrap();
    let before = unbinds();
    w.uc.handle_notification(&mock, &signed_by_ref("lu2", &r))
        .await
        .unwrap();
    assert_eq!(unbinds() - before, 0);
    assert_eq!(unwanted_signings(&w).await.len(), 2);
}

/// A card that failed at one channel and was bound again through another:
/// the user signing the first channel's page afterwards made an agreement
/// nothing here uses, and it is ended at that channel (the card is left
/// as it is).
#[tokio::test]
async fn a_signing_at_a_channel_the_card_no_longer_uses_is_ended_there() {
    let w = world(Policy::default());
    w.channel.always(Script::Otp);
    w.other.always(Script::Otp);
    let mock = cardbind_domain::ChannelName::parse("mock").unwrap();
    let first =
        w.uc.bind_card(&backend(), bind_cmd("lch", &visa(37), w.now()))
            .await
            .unwrap()
            .binding;
    let cmd = VerifyCard {
        user: user("lch"),
        card: first.id.clone(),
        otp: Otp::parse("000000").unwrap(),
    };
    for _ in 0..Policy::default().verification.max_otp_attempts {
        w.uc.verify(&backend(), cmd.clone()).await.unwrap_err();
    }
    let mut again = bind_cmd("lch", &visa(37), w.now());
    again.channel = Some(cardbind_domain::ChannelName::parse("other").unwrap());
    let again = w.uc.bind_card(&backend(), again).await.unwrap().binding;
    assert_eq!(again.id, first.id);
    assert_eq!(again.status, BindingStatus::PendingVerification);
    w.channel.query.lock().unwrap().insert(
        first.id.to_string(),
        RemoteState::Active {
            channel_ref: "agr-old".into(),
        },
    );
    let before = w.channel.unbinds.load(std::sync::atomic::Ordering::SeqCst);
    let signed = Notification {
        headers: [("x-test-signed".to_owned(), "yes".to_owned())].into(),
        body: format!("lc1|{}|signed:agr-old|{}", first.id, first.data_generation).into_bytes(),
    };
    w.uc.handle_notification(&mock, &signed).await.unwrap();
    assert_eq!(
        w.channel.unbinds.load(std::sync::atomic::Ordering::SeqCst) - before,
        1,
        "ended at the first channel"
    );
    assert_eq!(
        w.channel.unbound.lock().unwrap().last(),
        Some(&Some(first.data_generation))
    );
    assert_eq!(unwanted_signings(&w).await, vec![Outcome::Ok]);
    let now = w.wallet("lch").await.get(&again.id).unwrap().clone();
    assert_eq!(
        (now.status, now.channel.as_str()),
        (BindingStatus::PendingVerification, "other")
    );
}

/// A card bound again keeps its id, but each bind names its own attempt
/// to the channel: an event about another attempt leaves the waiting card
/// as it is, and a signing under it is ended at the channel.
#[tokio::test]
async fn events_naming_an_earlier_bind_of_the_card_leave_it_waiting() {
    let w = world(Policy::default());
    w.channel.always(Script::Redirect);
    let mock = cardbind_domain::ChannelName::parse("mock").unwrap();
    let v =
        w.uc.bind_card(&backend(), bind_cmd("lea", &visa(34), w.now()))
            .await
            .unwrap();
    let id = v.binding.id.clone();
    let current = v.binding.data_generation;
    let earlier = current.wrapping_add(1000);
    let note = |n: &str, kind: &str, attempt: u32| Notification {
        headers: [("x-test-signed".to_owned(), "yes".to_owned())].into(),
        body: format!("{n}|{id}|{kind}|{attempt}").into_bytes(),
    };
    let status = || async {
        w.uc.get_card(&backend(), &user("lea"), &id)
            .await
            .unwrap()
            .own()
            .cloned()
            .unwrap()
            .binding
            .status
    };
    let unbinds = || w.channel.unbinds.load(std::sync::atomic::Ordering::SeqCst);

    // A failure of the earlier bind does not fail this one.
    w.uc.handle_notification(&mock, &note("l1", "failed:user_cancelled", earlier))
        .await
        .unwrap();
    assert_eq!(status().await, BindingStatus::PendingVerification);

    // A signing of the earlier bind's page is ended at the channel.
    w.channel.query.lock().unwrap().insert(
        id.to_string(),
        RemoteState::Active {
            channel_ref: "agr-old".into(),
        },
    );
    let before = unbinds();
    w.uc.handle_notification(&mock, &note("l2", "signed:agr-old", earlier))
        .await
        .unwrap();
    assert_eq!(status().await, BindingStatus::PendingVerification);
    assert_eq!(
        unbinds() - before,
        1,
        "the earlier bind's agreement is ended"
    );
    assert_eq!(
        w.channel.unbound.lock().unwrap().last().copied(),
        Some(Some(earlier)),
        "under the attempt that made it"
    );
    assert_eq!(unwanted_signings(&w).await, vec![Outcome::Ok]);

    // This bind's own signing binds the card.
    w.uc.handle_notification(&mock, &note("l3", "signed:agr-new", current))
        .await
        .unwrap();
    assert_eq!(status().await, BindingStatus::Active);
    assert_eq!(unbinds() - before, 1);
}

/// A card's channel references are several over its life: the one its
/// start gave (stored then) and the agreement its signing names. Every one
/// goes when the card is unbound, and when its user is erased.
#[tokio::test]
async fn every_reference_of_a_card_goes_at_unbind_and_erasure() {
    use cardbind_ports::store::ChannelRefs;
    let w = world(Policy::default());
    w.channel.always(Script::Redirect);
    let mock = cardbind_domain::ChannelName::parse("mock").unwrap();
    for (u, end) in [("kai", "unbind"), ("kit", "erasure")] {
        let v =
            w.uc.bind_card(&backend(), bind_cmd(u, &visa(31), w.now()))
                .await
                .unwrap();
        let started = v.binding.channel_ref.clone().unwrap();
        let found = |r: String| {
            let (w, mock) = (&w, &mock);
            async move { ChannelRefs::find(&w.store, mock, &r).await.unwrap() }
        };
        assert_eq!(
            found(started.clone()).await.map(|t| t.binding),
            Some(v.binding.id.clone())
        );
        let note = Notification {
            headers: [("x-test-signed".to_owned(), "yes".to_owned())].into(),
            body: format!("n-{u}|{}|signed:agr-{u}", v.binding.id).into_bytes(),
        };
        w.uc.handle_notification(&mock, &note).await.unwrap();
        assert_eq!(
            w.wallet(u).await.get(&v.binding.id).unwrap().channel_ref,
            Some(format!("agr-{u}"))
        );
        if end == "unbind" {
            w.uc.unbind(&backend(), &user(u), &v.binding.id, None)
                .await
                .unwrap();
        } else {
            w.uc.erase_user(&admin(), &user(u), None).await.unwrap();
        }
        assert_eq!(found(started).await, None, "{end}: the start's reference");
        assert_eq!(found(format!("agr-{u}")).await, None, "{end}");
    }
}

#[tokio::test]
async fn notifications_activate_once_and_forged_ones_are_refused() {
    let w = world(Policy::default());
    w.channel.always(Script::Redirect);
    let v =
        w.uc.bind_card(&backend(), bind_cmd("jay", &visa(30), w.now()))
            .await
            .unwrap();
    assert_eq!(v.binding.status, BindingStatus::PendingVerification);
    let note = |signed: &str, body: String| Notification {
        headers: [("x-test-signed".to_owned(), signed.to_owned())].into(),
        body: body.into_bytes(),
    };
    let mock = cardbind_domain::ChannelName::parse("mock").unwrap();
    let body = format!("n1|{}|signed:agr-1", v.binding.id);
    let e =
        w.uc.handle_notification(&mock, &note("no", body.clone()))
            .await
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidSignature);
    let ack =
        w.uc.handle_notification(&mock, &note("yes", body.clone()))
            .await
            .unwrap();
    assert_eq!(ack.body, "success");
    let now =
        w.uc.get_card(&backend(), &user("jay"), &v.binding.id)
            .await
            .unwrap()
            .own()
            .cloned()
            .unwrap();
    assert_eq!(now.binding.status, BindingStatus::Active);
    assert_eq!(now.binding.channel_ref.as_deref(), Some("agr-1"));
    // The event of the change names the agreement the consent now has.
    let named: Vec<_> = events_of(&w, "jay", None)
        .await
        .into_iter()
        .filter(|e| {
            e.detail
                .as_deref()
                .is_some_and(|d| d.ends_with("; agreement \"agr-1\""))
        })
        .map(|e| e.action)
        .collect();
    assert_eq!(named, vec![AuditAction::BindingChannelEvent]);
    // The same notification again changes nothing and is acknowledged.
    let n_links = w.store.links(None, 1000).await.unwrap().len();
    w.uc.handle_notification(&mock, &note("yes", body))
        .await
        .unwrap();
    assert_eq!(w.store.links(None, 1000).await.unwrap().len(), n_links);
    // The user ends the agreement in the wallet app.
    let end = format!("n2|{}|terminated", v.binding.id);
    w.uc.handle_notification(&mock, &note("yes", end))
        .await
        .unwrap();
    let gone =
        w.uc.get_card(&backend(), &user("jay"), &v.binding.id)
            .await
            .unwrap()
            .own()
            .cloned()
            .unwrap();
    assert_eq!(gone.binding.status, BindingStatus::Inactive);
    assert_eq!(w.store.owner(&v.binding.id).await.unwrap(), None);
}

/// A card in review whose queue entry was lost (the store failed, or the
/// process stopped, right after the card was written) is queued again by
/// reconcile, once it is older than reconcile's age, and only once.
#[tokio::test]
async fn reconcile_queues_a_card_in_review_the_queue_lost() {
    let w = world(Policy::default());
    w.channel.always(Script::Fail(ChannelError::Timeout));
    let v =
        w.uc.bind_card(&backend(), bind_cmd("ria", &visa(43), w.now()))
            .await
            .unwrap();
    assert_eq!(v.binding.status, BindingStatus::PendingReview);
    let id = v.binding.id.clone();
    assert!(ReviewQueue::get(&w.store, &id).await.unwrap().is_some());
    ReviewQueue::remove(&w.store, &id, u64::MAX).await.unwrap();
    // Too young: its bind may still be writing the entry.
    let r = w.uc.reconcile(300, 10).await.unwrap();
    assert_eq!((r.requeued, r.errors), (0, 0));
    assert!(ReviewQueue::get(&w.store, &id).await.unwrap().is_none());
    w.clock.advance(600);
    let r = w.uc.reconcile(300, 10).await.unwrap();
    assert_eq!((r.requeued, r.errors), (1, 0));
    let entry = ReviewQueue::get(&w.store, &id).await.unwrap().unwrap();
    assert_eq!(entry.user, user("ria"));
    let listed = ReviewQueue::list(&w.store, None, 10).await.unwrap();
    assert!(listed.iter().any(|e| e.binding == id), "{listed:?}");
    // Queued: nothing more to do.
    let r = w.uc.reconcile(300, 10).await.unwrap();
    assert_eq!((r.requeued, r.errors), (0, 0));
    // A card in review that the queue holds is left as it is.
    assert_eq!(
        w.wallet("ria").await.get(&id).unwrap().status,
        BindingStatus::PendingReview
    );
}

#[tokio::test]
async fn reconcile_settles_cards_left_pending() {
    let w = world(Policy::default());
    w.channel.always(Script::Redirect);
    let a =
        w.uc.bind_card(&backend(), bind_cmd("kim", &visa(40), w.now()))
            .await
            .unwrap()
            .binding;
    let b =
        w.uc.bind_card(&backend(), bind_cmd("lee", &visa(41), w.now()))
            .await
            .unwrap()
            .binding;
    let c =
        w.uc.bind_card(&backend(), bind_cmd("mia", &visa(42), w.now()))
            .await
            .unwrap()
            .binding;
    w.channel.query.lock().unwrap().insert(
        a.id.to_string(),
        RemoteState::Active {
            channel_ref: "agr-a".into(),
        },
    );
    w.channel
        .query
        .lock()
        .unwrap()
        .insert(b.id.to_string(), RemoteState::NotFound);
    // Too young to reconcile.
    let r = w.uc.reconcile(300, 10).await.unwrap();
    assert_eq!(r.examined, 0);
    w.clock.advance(600);
    let r = w.uc.reconcile(300, 1).await.unwrap();
    // Unknown to the channel within the verification window (900 s): the
    // user may not have opened the signing page yet, so still waiting.
    assert_eq!(
        (r.examined, r.activated, r.failed, r.still_pending),
        (3, 1, 0, 2)
    );
    assert_eq!(
        w.wallet("lee").await.get(&b.id).unwrap().status,
        BindingStatus::PendingVerification
    );
    // Past the window, still unknown there: failed, expired.
    w.clock.advance(400);
    let r = w.uc.reconcile(300, 1).await.unwrap();
    assert_eq!(
        (r.examined, r.activated, r.failed, r.still_pending),
        (2, 0, 2, 0)
    );
    let st = |u: &str, id| {
        let w = &w;
        let u = user(u);
        async move {
            w.uc.get_card(&backend(), &u, id)
                .await
                .unwrap()
                .own()
                .cloned()
                .unwrap()
                .binding
                .status
        }
    };
    assert_eq!(st("kim", &a.id).await, BindingStatus::Active);
    assert_eq!(st("lee", &b.id).await, BindingStatus::Failed);
    assert_eq!(st("mia", &c.id).await, BindingStatus::Failed);
}

#[tokio::test]
async fn erasure_unbinds_every_card_deletes_its_data_and_destroys_the_key() {
    let w = world(Policy::default());
    let a =
        w.uc.bind_card(&backend(), bind_cmd("ned", &visa(50), w.now()))
            .await
            .unwrap()
            .binding;
    w.channel.always(Script::Fail(ChannelError::Timeout));
    let b =
        w.uc.bind_card(&backend(), bind_cmd("ned", &visa(51), w.now()))
            .await
            .unwrap()
            .binding;
    let r = w.uc.erase_user(&admin(), &user("ned"), None).await.unwrap();
    assert_eq!(r.unbound, 2);
    assert!(r.key_destroyed);
    for id in [&a.id, &b.id] {
        assert_eq!(w.store.owner(id).await.unwrap(), None);
    }
    assert!(
        ReviewQueue::get(&w.store, &b.id).await.unwrap().is_none(),
        "left the review queue"
    );
    let page =
        w.uc.list_cards(&admin(), &user("ned"), CardQuery::page(None, 10))
            .await
            .unwrap();
    assert!(page
        .cards
        .iter()
        .all(|c| c.own().unwrap().binding.status == BindingStatus::Inactive));
    assert!(actions(&w, "ned")
        .await
        .contains(&(AuditAction::UserErase, Outcome::Ok)));
    // Erasing twice is harmless.
    let again = w.uc.erase_user(&admin(), &user("ned"), None).await.unwrap();
    assert_eq!(again.unbound, 0);
}

#[tokio::test]
async fn an_erasure_forgets_fingerprints_and_a_bind_after_it_asks_for_the_key_afresh() {
    // Another instance may have erased the user: this process's key cache
    // has not seen it, so a bind for a user with no live card must not
    // seal under a cached key.
    let w = world(Policy::default());
    let fresh = || {
        w.vault
            .fresh_seals
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    let first =
        w.uc.bind_card(&backend(), bind_cmd("nia", &visa(52), w.now()))
            .await
            .unwrap()
            .binding;
    assert_eq!(fresh(), 1, "a new user");
    w.uc.bind_card(&backend(), bind_cmd("nia", &visa(53), w.now()))
        .await
        .unwrap();
    assert_eq!(fresh(), 1, "a user with a live card: the cached key");
    w.uc.erase_user(&admin(), &user("nia"), None).await.unwrap();
    // The erased cards keep no fingerprint (a keyed hash of the number,
    // under a key the erasure does not destroy).
    let stored = cardbind_ports::store::WalletStore::load(&w.store, &user("nia"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.wallet.bindings().len(), 2);
    assert!(stored
        .wallet
        .bindings()
        .iter()
        .all(|b| b.fingerprint.is_erased()));
    w.uc.bind_card(&backend(), bind_cmd("nia", &visa(54), w.now()))
        .await
        .unwrap();
    assert_eq!(fresh(), 2, "erased: the key is looked for afresh");
    // The same card as before the erasure: a new record (a minute on, the
    // user's bind rate allowing).
    w.clock.advance(61);
    let again =
        w.uc.bind_card(&backend(), bind_cmd("nia", &visa(52), w.now()))
            .await
            .unwrap()
            .binding;
    assert_ne!(again.id, first.id);
}

#[tokio::test]
async fn a_key_service_that_refuses_to_seal_is_unavailable_not_unreadable_card_data() {
    let w = world(Policy::default());
    w.vault
        .seal_refused
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let e =
        w.uc.bind_card(&backend(), bind_cmd("ola", &visa(61), w.now()))
            .await
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::KeyServiceUnavailable);
    assert!(w.store.links(None, 100).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_key_store_that_cannot_be_written_is_a_storage_outage() {
    let w = world(Policy::default());
    w.vault
        .seal_store_down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let e =
        w.uc.bind_card(&backend(), bind_cmd("oda", &visa(62), w.now()))
            .await
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::StorageUnavailable);
    assert!(w.store.links(None, 100).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_key_service_outage_writes_nothing() {
    let w = world(Policy::default());
    w.vault
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let e =
        w.uc.bind_card(&backend(), bind_cmd("oli", &visa(60), w.now()))
            .await
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::KeyServiceUnavailable);
    assert!(w.store.links(None, 100).await.unwrap().is_empty());
    assert_eq!(
        w.channel.starts.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test]
async fn a_key_service_failure_at_sealing_leaves_no_card() {
    let w = world(Policy::default());
    w.vault
        .seal_down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let e =
        w.uc.bind_card(&backend(), bind_cmd("pia", &visa(61), w.now()))
            .await
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::KeyServiceUnavailable);
    let page =
        w.uc.list_cards(&backend(), &user("pia"), CardQuery::page(None, 20))
            .await
            .unwrap();
    assert!(page.cards.is_empty(), "a card was left: {:?}", page.cards);
    assert_eq!(
        w.channel.starts.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    // Once the key service answers, the same bind goes through.
    w.vault
        .seal_down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let v =
        w.uc.bind_card(&backend(), bind_cmd("pia", &visa(61), w.now()))
            .await
            .unwrap();
    assert_eq!(v.binding.status, BindingStatus::Active);
}

/// Channel references that look, before storing one, at the status its
/// card has in the wallet (and take their time, as a remote store does).
struct WatchingRefs {
    store: cardbind_memory::MemoryStore,
    seen: std::sync::Mutex<Vec<BindingStatus>>,
}

#[async_trait::async_trait]
impl cardbind_ports::store::ChannelRefs for WatchingRefs {
    async fn put(
        &self,
        channel: &cardbind_domain::ChannelName,
        channel_ref: &str,
        target: &cardbind_ports::store::RefTarget,
        generation: u32,
    ) -> Result<bool, cardbind_ports::StoreError> {
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
        let w = cardbind_ports::store::WalletStore::load(&self.store, &target.user)
            .await?
            .unwrap();
        let status = w.wallet.get(&target.binding).unwrap().status;
        self.seen.lock().unwrap().push(status);
        cardbind_ports::store::ChannelRefs::put(
            &self.store,
            channel,
            channel_ref,
            target,
            generation,
        )
        .await
    }
    async fn find_entry(
        &self,
        channel: &cardbind_domain::ChannelName,
        channel_ref: &str,
    ) -> Result<Option<cardbind_ports::store::ChannelRefEntry>, cardbind_ports::StoreError> {
        cardbind_ports::store::ChannelRefs::find_entry(&self.store, channel, channel_ref).await
    }
    async fn delete_binding(
        &self,
        user: &cardbind_domain::UserId,
        binding: &cardbind_domain::BindingId,
        generation: Option<u32>,
    ) -> Result<u64, cardbind_ports::StoreError> {
        cardbind_ports::store::ChannelRefs::delete_binding(&self.store, user, binding, generation)
            .await
    }
    async fn list(
        &self,
        after: Option<(cardbind_domain::ChannelName, String)>,
        limit: u32,
    ) -> Result<Vec<cardbind_ports::store::ChannelRefEntry>, cardbind_ports::StoreError> {
        cardbind_ports::store::ChannelRefs::list(&self.store, after, limit).await
    }
    async fn delete_entry(
        &self,
        entry: &cardbind_ports::store::ChannelRefEntry,
    ) -> Result<u64, cardbind_ports::StoreError> {
        cardbind_ports::store::ChannelRefs::delete_entry(&self.store, entry).await
    }
}

/// Once the answer is written the card no longer waits for its channel and
/// nothing stores its reference again, so the reference must be stored
/// first (on MongoDB two writes in flight at once land in either order).
#[tokio::test]
async fn the_channel_reference_is_stored_before_the_answer() {
    let w = world(unlimited());
    let refs = std::sync::Arc::new(WatchingRefs {
        store: w.store.clone(),
        seen: std::sync::Mutex::new(Vec::new()),
    });
    let mut ports = w.uc.ports().clone();
    ports.channel_refs = refs.clone();
    let uc = cardbind_usecases::UseCases::new(ports, w.uc.policy().clone());
    let card = uc
        .bind_card(&backend(), bind_cmd("ref", &visa(3), w.now()))
        .await
        .unwrap();
    assert_eq!(card.binding.status, BindingStatus::Active);
    assert_eq!(
        *refs.seen.lock().unwrap(),
        vec![BindingStatus::PendingVerification]
    );
}

/// A user who binds and unbinds card after card: the wallet keeps the
/// cards that ended last, what a failed clean-up left of an older one goes
/// when it leaves, and every consent stays in the audit log.
#[tokio::test]
async fn a_wallet_keeps_the_newest_ended_cards_and_the_audit_log_every_consent() {
    use cardbind_domain::ENDED_CARDS_KEPT;
    use cardbind_ports::store::{CardData, WalletStore};
    let w = world(unlimited());
    let u = "hoarder";
    let n = ENDED_CARDS_KEPT as u32 + 3;
    let mut ended = Vec::new();
    for i in 0..n {
        let v =
            w.uc.bind_card(&backend(), bind_cmd(u, &visa(100 + i), w.now()))
                .await
                .unwrap();
        let b = v.binding;
        let data = CardDataStore::get(&w.store, &user(u), &b.id, b.data_generation)
            .await
            .unwrap()
            .unwrap();
        w.clock.advance(1);
        w.uc.unbind(&backend(), &user(u), &b.id, None)
            .await
            .unwrap();
        w.clock.advance(1);
        if i == 0 {
            // What an unbind whose delete failed leaves behind.
            CardDataStore::put(&w.store, &data).await.unwrap();
        }
        ended.push((b, data));
    }
    let stored = WalletStore::load(&w.store, &user(u))
        .await
        .unwrap()
        .unwrap();
    let kept: Vec<_> = stored
        .wallet
        .bindings()
        .iter()
        .map(|b| b.id.clone())
        .collect();
    let mut newest: Vec<_> = ended[3..].iter().map(|(b, _)| b.id.clone()).collect();
    newest.sort();
    assert_eq!(kept, newest, "the cards that ended last");
    let (first, data): &(_, CardData) = &ended[0];
    assert!(
        CardDataStore::get(&w.store, &user(u), &first.id, data.generation)
            .await
            .unwrap()
            .is_none(),
        "the leftover data of a card that left the wallet is deleted"
    );
    // Every bind's consent is in its audit event, the ones that left the
    // wallet too.
    let f = AuditFilter {
        user_id: Some(user(u)),
        action: Some(AuditAction::BindingCreate),
        ..Default::default()
    };
    let events = AuditLog::list(&w.store, &f, None, 1000).await.unwrap();
    let consent = format!(
        "consent sha256 {} ip 203.0.113.9 version \"2026-01\" user_agent \"tests\"",
        "ab".repeat(32)
    );
    for (b, _) in &ended {
        let e = events
            .iter()
            .find(|r| r.event.binding_id.as_ref() == Some(&b.id))
            .unwrap_or_else(|| panic!("no binding.create for {}", b.id));
        assert_eq!(
            e.event.detail.as_deref(),
            Some(format!("-> pending_verification; {consent}").as_str())
        );
    }
    // A card that left is a new record when bound again.
    let again =
        w.uc.bind_card(&backend(), bind_cmd(u, &visa(100), w.now()))
            .await
            .unwrap();
    assert_ne!(again.binding.id, first.id);
    assert_eq!(again.binding.status, BindingStatus::Active);
}

/// A card bound again and again keeps its newest consents, each under the
/// id it had from its bind, so that paging by id neither skips nor repeats.
#[tokio::test]
async fn a_cards_consents_keep_their_ids_when_older_ones_are_let_go() {
    use cardbind_domain::CONSENTS_KEPT;
    let w = world(unlimited());
    let u = "rebinder";
    let binds = CONSENTS_KEPT as u32 + 2;
    let mut id = None;
    for _ in 0..binds {
        let v =
            w.uc.bind_card(&backend(), bind_cmd(u, &visa(7), w.now()))
                .await
                .unwrap();
        assert!(
            id.is_none() || id.as_ref() == Some(&v.binding.id),
            "one record"
        );
        id = Some(v.binding.id.clone());
        w.clock.advance(1);
        w.uc.unbind(&backend(), &user(u), &v.binding.id, None)
            .await
            .unwrap();
        w.clock.advance(1);
    }
    let id = id.unwrap();
    let all =
        w.uc.list_consents(&backend(), &user(u), None, 100)
            .await
            .unwrap();
    let ids: Vec<String> = all.iter().map(|e| e.id.clone()).collect();
    let expected: Vec<String> = (3..=binds).map(|n| format!("{id}:{n}")).collect();
    assert_eq!(ids, expected, "the consents of binds 3 to {binds}");
    // A page that starts after a kept consent goes on from the next bind.
    let page =
        w.uc.list_consents(&backend(), &user(u), Some(format!("{id}:10")), 3)
            .await
            .unwrap();
    let ids: Vec<String> = page.iter().map(|e| e.id.clone()).collect();
    assert_eq!(
        ids,
        vec![format!("{id}:11"), format!("{id}:12"), format!("{id}:13")]
    );
    // And each is the consent of that bind: accepted in order.
    let times: Vec<_> = all.iter().map(|e| e.consent.accepted_at).collect();
    assert!(times.windows(2).all(|p| p[0] < p[1]));
}

/// The purge leaves rate windows that ended less than the clock-skew
/// margin ago: an instance whose clock is behind may still count in them.
#[tokio::test]
async fn the_purge_keeps_rate_windows_other_clocks_may_still_count_in() {
    use cardbind_ports::store::{RateLimiter, RateWindow};
    use cardbind_usecases::retention::{Retention, CLOCK_SKEW_MARGIN_SECONDS};
    let w = world(Policy::default());
    let now = w.now();
    let window = |key: &str, ended_ago: i64| RateWindow {
        key: key.to_owned(),
        limit: 1,
        expires_at: now.minus_seconds(ended_ago),
    };
    let just_ended = window("just-ended", 60);
    let long_ended = window("long-ended", CLOCK_SKEW_MARGIN_SECONDS + 60);
    RateLimiter::take(&w.store, &[just_ended.clone(), long_ended.clone()], now)
        .await
        .unwrap();
    let purged =
        w.uc.purge(
            &cardbind_usecases::RequestContext::service("test"),
            Retention::new(400, 48).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(purged.rate_slots, 1, "{purged}");
    // The window that ended a minute ago still holds its slot; the other
    // is free again.
    use cardbind_ports::store::RateTake;
    for (w_, expected) in [
        (just_ended, RateTake::Full),
        (long_ended, RateTake::Taken(1)),
    ] {
        let again = RateLimiter::take(&w.store, std::slice::from_ref(&w_), now)
            .await
            .unwrap();
        assert_eq!(again, vec![expected], "{}", w_.key);
    }
}

/// A channel's failure code is shown to clients and stored: one that
/// holds a number long enough to be card data is kept as `declined`.
#[tokio::test]
async fn a_failure_code_carrying_a_card_number_is_kept_as_declined() {
    let w = world(Policy::default());
    w.channel.always(Script::Redirect);
    let mock = cardbind_domain::ChannelName::parse("mock").unwrap();
    let mut failed = Vec::new();
    for (who, card, code) in [
        ("pia", 41, "4111111111111111"),
        ("pim", 42, "ACQ.PAN-4111-1111-1111-1111"),
        ("pip", 43, "ACQ.CARD_DECLINED"),
    ] {
        let v =
            w.uc.bind_card(&backend(), bind_cmd(who, &visa(card), w.now()))
                .await
                .unwrap();
        let id = v.binding.id.clone();
        let n = Notification {
            headers: [("x-test-signed".to_owned(), "yes".to_owned())].into(),
            body: format!("f-{who}|{id}|failed:{code}").into_bytes(),
        };
        w.uc.handle_notification(&mock, &n).await.unwrap();
        let b = w.uc.get_card(&backend(), &user(who), &id).await.unwrap();
        let b = b.own().cloned().unwrap().binding;
        assert_eq!(b.status, BindingStatus::Failed);
        failed.push(b.failure.as_ref().map(|f| f.as_str().to_owned()));
    }
    assert_eq!(
        failed,
        [
            Some("declined".to_owned()),
            Some("declined".to_owned()),
            Some("ACQ.CARD_DECLINED".to_owned())
        ]
    );
}

/// Readiness asks the store and the key service at once, each within the
/// deadline: a hung one is reported as not answering, and the probe ends
/// within the deadline (not one wait after the other, not never). On
/// tokio's paused clock: the times are exact, whatever the machine's load.
#[tokio::test(start_paused = true)]
async fn readiness_answers_within_its_deadline_whatever_hangs() {
    use std::sync::atomic::Ordering;
    use std::time::Duration;
    let w = world(Policy::default());
    let deadline = Duration::from_secs(1);
    assert_eq!(w.uc.readiness(deadline).await, Ok(()));

    w.vault.check_hangs.store(true, Ordering::SeqCst);
    *w.wallets.load_delay.lock().unwrap() = Some(Duration::from_secs(3600));
    let t0 = tokio::time::Instant::now();
    let e = w.uc.readiness(deadline).await.unwrap_err();
    let took = t0.elapsed();
    // Both at once: one deadline, not two one after the other.
    assert!(took >= deadline && took < deadline * 3 / 2, "{took:?}");
    assert_eq!(e.store.as_deref(), Some("no answer within 1000 ms"));
    assert_eq!(e.keys.as_deref(), Some("no answer within 1000 ms"));

    // Only the key service hangs: the store is reported as answering.
    *w.wallets.load_delay.lock().unwrap() = None;
    let e = w.uc.readiness(deadline).await.unwrap_err();
    assert_eq!((e.store, e.keys.is_some()), (None, true));
    w.vault.check_hangs.store(false, Ordering::SeqCst);
    assert_eq!(w.uc.readiness(deadline).await, Ok(()));
}

/// The key service's part of readiness: a master key that does not
/// answer is tolerated while the vault serves on the branch key it holds
/// (a blip must not take every instance out of the load balancer), never
/// one that refuses; a key store that fails is the store's outage.
#[tokio::test]
async fn readiness_tolerates_an_unreachable_master_key_while_the_vault_serves_without_it() {
    use cardbind_ports::KeyError;
    use std::sync::atomic::Ordering;
    use std::time::Duration;
    let w = world(Policy::default());
    let deadline = Duration::from_millis(300);
    let fails = |e: Option<KeyError>| *w.vault.check_fails.lock().unwrap() = e;

    fails(Some(KeyError::Unavailable("KMS timed out".into())));
    let e = w.uc.readiness(deadline).await.unwrap_err();
    assert_eq!((e.store, e.keys.is_some()), (None, true));
    w.vault.holds_branch_key.store(true, Ordering::SeqCst);
    assert_eq!(w.uc.readiness(deadline).await, Ok(()));
    // Hanging, the same.
    fails(None);
    w.vault.check_hangs.store(true, Ordering::SeqCst);
    assert_eq!(w.uc.readiness(deadline).await, Ok(()));
    w.vault.check_hangs.store(false, Ordering::SeqCst);
    // A refusal is never tolerated: the master key is wrong or disabled.
    fails(Some(KeyError::Refused("disabled key".into())));
    let e = w.uc.readiness(deadline).await.unwrap_err();
    assert_eq!((e.store, e.keys.is_some()), (None, true));
    // The key store failing is reported as the store's.
    fails(Some(KeyError::StoreUnavailable("key store down".into())));
    let e = w.uc.readiness(deadline).await.unwrap_err();
    assert_eq!((e.store.as_deref(), e.keys), (Some("key store down"), None));
}

/// A bind's dates are judged by the calendar in China: at 00:30 on
/// 1 January 2027 there (16:30 UTC on 31 December), a card that expired
/// in December 2026 is refused and a person born that day is taken; a
/// minute before midnight there, the December card is still good.
#[test]
fn a_binds_dates_are_those_of_the_calendar_in_china() {
    use cardbind_domain::{ConsentGiven, ResidentId, Timestamp};
    use cardbind_usecases::bind::{BindCard, CardForm};
    let first17 = "11010520270101001";
    let born_new_year = format!("{first17}{}", ResidentId::check_char(first17).unwrap());
    let card = visa(7);
    let parse = |at: Timestamp, year: u32, id: &str| {
        let form = CardForm {
            card_number: &card,
            expiry_month: 12,
            expiry_year: year,
            cvv: None,
            holder_name: "Ann",
            id_number: id,
            phone: "13800138000",
            channel: None,
        };
        BindCard::parse(user("ann"), form, ConsentGiven::default(), at)
            .map(|_| ())
            .map_err(|e| e.code)
    };
    let adult17 = "11010519491231002";
    let adult = format!("{adult17}{}", ResidentId::check_char(adult17).unwrap());
    // 2026-12-31T16:30:00Z: 2027-01-01 00:30 in China.
    let new_year = Timestamp::from_unix_millis(1_798_734_600_000);
    assert_eq!(new_year.to_rfc3339(), "2026-12-31T16:30:00Z");
    assert_eq!(parse(new_year, 2026, &adult), Err(ErrorCode::CardExpired));
    assert_eq!(parse(new_year, 2027, &born_new_year), Ok(()));
    // 2026-12-31T15:59:00Z: 23:59 in China. December's card is good, and
    // nobody is born on the 1st yet.
    let eve = Timestamp::from_unix_millis(1_798_732_740_000);
    assert_eq!(eve.to_rfc3339(), "2026-12-31T15:59:00Z");
    assert_eq!(parse(eve, 2026, &adult), Ok(()));
    assert_eq!(
        parse(eve, 2027, &born_new_year),
        Err(ErrorCode::InvalidIdNumber)
    );
}

/// The use cases over `w`'s data, served by a deployment that enables only
/// `mock` (a card bound through `other` is of a channel no longer enabled).
fn enabling_only_mock(w: &World) -> cardbind_usecases::UseCases {
    use cardbind_ports::channel::{ChannelRegistry, PaymentChannel};
    let mut ports = w.uc.ports().clone();
    ports.channels = ChannelRegistry::new(
        vec![w.channel.clone() as std::sync::Arc<dyn PaymentChannel>],
        cardbind_domain::ChannelName::parse("mock").unwrap(),
    )
    .unwrap();
    cardbind_usecases::UseCases::new(ports, Policy::default())
}

/// A card bound through a channel the deployment no longer enables: the
/// unbind ends it here, and audits that its agreement may still be active
/// at the channel (nothing here can end it), naming the channel.
#[tokio::test]
async fn unbinding_a_card_of_a_channel_no_longer_enabled_is_audited() {
    use cardbind_domain::ChannelName;
    let w = world(Policy::default());
    let mut cmd = bind_cmd("iris", &visa(31), w.now());
    cmd.channel = Some(ChannelName::parse("other").unwrap());
    let v = w.uc.bind_card(&backend(), cmd).await.unwrap();
    assert_eq!(v.binding.status, BindingStatus::Active);
    let uc = enabling_only_mock(&w);
    let r = uc
        .unbind(&backend(), &user("iris"), &v.binding.id, None)
        .await
        .unwrap();
    assert_eq!(r.binding.status, BindingStatus::Inactive);
    assert_eq!(w.other.unbinds.load(std::sync::atomic::Ordering::SeqCst), 0);
    let unsigns = events_of(&w, "iris", Some(AuditAction::BindingChannelUnsign)).await;
    assert_eq!(unsigns.len(), 1, "{unsigns:?}");
    assert_eq!(
        unsigns[0].outcome,
        Outcome::Refused(ErrorCode::ChannelUnavailable)
    );
    let detail = unsigns[0].detail.clone().unwrap_or_default();
    assert!(detail.contains("channel other is not enabled"), "{detail}");
}

/// A code sent for a card whose channel the deployment no longer enables
/// is `channel_not_enabled`, and not counted: no channel checked it, so
/// such calls cannot use up the card's attempts.
#[tokio::test]
async fn a_code_for_a_card_of_a_channel_no_longer_enabled_is_not_counted() {
    use cardbind_domain::ChannelName;
    let w = world(Policy::default());
    w.other.always(Script::Otp);
    let mut cmd = bind_cmd("ivy", &visa(32), w.now());
    cmd.channel = Some(ChannelName::parse("other").unwrap());
    let v = w.uc.bind_card(&backend(), cmd).await.unwrap();
    assert_eq!(v.binding.status, BindingStatus::PendingVerification);
    let uc = enabling_only_mock(&w);
    let tries = Policy::default().verification.max_otp_attempts + 2;
    for _ in 0..tries {
        let e = uc
            .verify(
                &backend(),
                VerifyCard {
                    user: user("ivy"),
                    card: v.binding.id.clone(),
                    otp: Otp::parse("123456").unwrap(),
                },
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::ChannelNotEnabled);
    }
    let card = w.wallet("ivy").await.get(&v.binding.id).unwrap().clone();
    assert_eq!(card.status, BindingStatus::PendingVerification);
    assert_eq!(card.otp_attempts, 0);
}

/// A card activated by a signing notification is found again by the
/// agreement that signing named: an unsigning that names only the
/// agreement (Alipay's `agreement_no`, WeChat Pay's `contract_id`) unbinds
/// it. Before, only the reference of the bind's start (ours, for a signing
/// page) was recorded: the unsigning was acknowledged as for an unknown
/// card and dropped, and the card stayed active.
#[tokio::test]
async fn an_unsigning_named_by_the_agreement_its_signing_gave_unbinds_the_card() {
    use cardbind_ports::store::ChannelRefs;
    let w = world(Policy::default());
    w.channel.always(Script::Redirect);
    let mock = cardbind_domain::ChannelName::parse("mock").unwrap();
    let note = |body: String| Notification {
        headers: [("x-test-signed".to_owned(), "yes".to_owned())].into(),
        body: body.into_bytes(),
    };
    let card =
        w.uc.bind_card(&backend(), bind_cmd("una", &visa(51), w.now()))
            .await
            .unwrap()
            .binding;
    assert_eq!(card.status, BindingStatus::PendingVerification);
    w.uc.handle_notification(&mock, &note(format!("s1|{}|signed:agr-51", card.id)))
        .await
        .unwrap();
    assert_eq!(
        w.wallet("una").await.get(&card.id).unwrap().status,
        BindingStatus::Active
    );
    let found = ChannelRefs::find(&w.store, &mock, "agr-51")
        .await
        .unwrap()
        .expect("the agreement is recorded for the card");
    assert_eq!(found.binding, card.id);
    w.uc.handle_notification(&mock, &note("t1|ref:agr-51|terminated".into()))
        .await
        .unwrap();
    assert_eq!(
        w.wallet("una").await.get(&card.id).unwrap().status,
        BindingStatus::Inactive
    );
    // Its references go with it.
    assert_eq!(
        ChannelRefs::find(&w.store, &mock, "agr-51").await.unwrap(),
        None
    );
}

/// The agreement a signing names is taken over from a card that no
/// longer holds it (unbound, its reference left behind as when its delete
/// failed), deleted only as read; one a live card holds stays that card's,
/// and the card whose signing named it goes to manual review.
#[tokio::test]
async fn a_signings_agreement_left_by_an_ended_card_is_taken_over() {
    use cardbind_ports::store::{ChannelRefs, RefTarget};
    let w = world(Policy::default());
    let mock = cardbind_domain::ChannelName::parse("mock").unwrap();
    let note = |body: String| Notification {
        headers: [("x-test-signed".to_owned(), "yes".to_owned())].into(),
        body: body.into_bytes(),
    };
    w.channel.always(Script::Bound);
    let live =
        w.uc.bind_card(&backend(), bind_cmd("tko", &visa(61), w.now()))
            .await
            .unwrap()
            .binding;
    let ended =
        w.uc.bind_card(&backend(), bind_cmd("tko", &visa(62), w.now()))
            .await
            .unwrap()
            .binding;
    w.uc.unbind(&backend(), &user("tko"), &ended.id, None)
        .await
        .unwrap();
    let record = |card: &cardbind_domain::Binding, r: &'static str| {
        let target = RefTarget {
            user: user("tko"),
            binding: card.id.clone(),
        };
        let (store, generation) = (w.store.clone(), card.data_generation);
        let mock = mock.clone();
        async move {
            ChannelRefs::put(&store, &mock, r, &target, generation)
                .await
                .unwrap()
        }
    };
    record(&ended, "agr-61").await;
    record(&live, "agr-62").await;
    w.channel.always(Script::Redirect);
    let signing = |u: &'static str, n: u32| {
        let w = &w;
        async move {
            w.uc.bind_card(&backend(), bind_cmd(u, &visa(n), w.now()))
                .await
                .unwrap()
                .binding
        }
    };
    let a = signing("tka", 63).await;
    let b = signing("tkb", 64).await;
    for (n, card, r) in [("s61", &a, "agr-61"), ("s62", &b, "agr-62")] {
        w.uc.handle_notification(&mock, &note(format!("{n}|{}|signed:{r}", card.id)))
            .await
            .unwrap();
    }
    let holder = |r: &'static str| {
        let (store, mock) = (w.store.clone(), mock.clone());
        async move {
            ChannelRefs::find(&store, &mock, r)
                .await
                .unwrap()
                .unwrap()
                .binding
        }
    };
    assert_eq!(
        holder("agr-61").await,
        a.id,
        "taken over from the ended card"
    );
    assert_eq!(
        holder("agr-62").await,
        live.id,
        "the live card keeps its own"
    );
    // The card whose signing named the live card's agreement is not made
    // active on it: it waits for an operator (before, both cards were
    // active on one agreement).
    assert_eq!(
        w.wallet("tka").await.get(&a.id).unwrap().status,
        BindingStatus::Active
    );
    assert_eq!(
        w.wallet("tkb").await.get(&b.id).unwrap().status,
        BindingStatus::PendingReview
    );
    assert!(ReviewQueue::get(&w.store, &b.id).await.unwrap().is_some());
}

/// A signing of an earlier bind's page (the card was bound again since)
/// records nothing for the card: its agreement is not the card's, and one
/// the channel no longer reports active is not ended here either, so a
/// record made before the change would stay, holding the agreement for a
/// card that never had it (an operator's approval of another card under
/// it was refused).
#[tokio::test]
async fn a_signing_of_an_earlier_binds_page_records_no_agreement() {
    use cardbind_ports::store::ChannelRefs;
    let w = world(Policy::default());
    w.channel.always(Script::Redirect);
    let mock = cardbind_domain::ChannelName::parse("mock").unwrap();
    let card =
        w.uc.bind_card(&backend(), bind_cmd("lsa", &visa(71), w.now()))
            .await
            .unwrap()
            .binding;
    let earlier = card.data_generation.wrapping_add(1000);
    let late = Notification {
        headers: [("x-test-signed".to_owned(), "yes".to_owned())].into(),
        body: format!("la1|{}|signed:agr-71|{earlier}", card.id).into_bytes(),
    };
    w.uc.handle_notification(&mock, &late).await.unwrap();
    assert_eq!(
        w.wallet("lsa").await.get(&card.id).unwrap().status,
        BindingStatus::PendingVerification
    );
    assert_eq!(
        ChannelRefs::find(&w.store, &mock, "agr-71").await.unwrap(),
        None,
        "the earlier bind's agreement is not recorded for the card"
    );
    // Another user's card in review may be approved under it.
    w.channel
        .always(Script::Fail(cardbind_ports::ChannelError::CircuitOpen));
    let other =
        w.uc.bind_card(&backend(), bind_cmd("lsb", &visa(72), w.now()))
            .await
            .unwrap()
            .binding;
    let approved =
        w.uc.approve_review(&admin(), &other.id, Some("agr-71".into()))
            .await
            .unwrap();
    assert_eq!(approved.binding.status, BindingStatus::Active);
}

/// A signing whose change is not written keeps the agreement it recorded
/// before the change for the card, which still waits in that bind (the
/// channel said this card signed it; a twin delivery may be storing its
/// change): another card cannot be approved under it, and the channel's
/// signing again binds the card.
#[tokio::test]
async fn a_signing_whose_change_failed_keeps_its_agreement_for_the_waiting_card() {
    use cardbind_ports::store::ChannelRefs;
    let w = world(Policy::default());
    w.channel.always(Script::Redirect);
    let mock = cardbind_domain::ChannelName::parse("mock").unwrap();
    let card =
        w.uc.bind_card(&backend(), bind_cmd("lsc", &visa(73), w.now()))
            .await
            .unwrap()
            .binding;
    let signed = Notification {
        headers: [("x-test-signed".to_owned(), "yes".to_owned())].into(),
        body: format!("lc1|{}|signed:agr-73", card.id).into_bytes(),
    };
    w.wallets
        .fail_commits
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let e = w.uc.handle_notification(&mock, &signed).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::StorageUnavailable);
    assert_eq!(
        w.wallet("lsc").await.get(&card.id).unwrap().status,
        BindingStatus::PendingVerification
    );
    let holder = || async {
        ChannelRefs::find(&w.store, &mock, "agr-73")
            .await
            .unwrap()
            .map(|t| t.binding)
    };
    assert_eq!(holder().await, Some(card.id.clone()));
    w.channel
        .always(Script::Fail(cardbind_ports::ChannelError::CircuitOpen));
    let other =
        w.uc.bind_card(&backend(), bind_cmd("lsf", &visa(76), w.now()))
            .await
            .unwrap()
            .binding;
    let refused =
        w.uc.approve_review(&admin(), &other.id, Some("agr-73".into()))
            .await
            .unwrap_err();
    assert_eq!(refused.code(), ErrorCode::Conflict);
    w.uc.handle_notification(&mock, &signed).await.unwrap();
    let now = w.wallet("lsc").await.get(&card.id).unwrap().clone();
    assert_eq!(
        (now.status, now.channel_ref.as_deref()),
        (BindingStatus::Active, Some("agr-73"))
    );
    assert_eq!(holder().await, Some(card.id.clone()));
}

/// A card already in review whose channel then signs an agreement another
/// live card holds stays in review, and the operator who decides it finds
/// the agreement named in its record (it had a log line only).
#[tokio::test]
async fn a_card_in_review_signed_under_a_taken_agreement_has_it_on_record() {
    use cardbind_ports::store::{ChannelRefs, RefTarget};
    let w = world(Policy::default());
    let mock = cardbind_domain::ChannelName::parse("mock").unwrap();
    w.channel.always(Script::Bound);
    let live =
        w.uc.bind_card(&backend(), bind_cmd("lsd", &visa(74), w.now()))
            .await
            .unwrap()
            .binding;
    let target = RefTarget {
        user: user("lsd"),
        binding: live.id.clone(),
    };
    assert!(
        ChannelRefs::put(&w.store, &mock, "agr-74", &target, live.data_generation)
            .await
            .unwrap()
    );
    w.channel
        .always(Script::Fail(cardbind_ports::ChannelError::CircuitOpen));
    let waiting =
        w.uc.bind_card(&backend(), bind_cmd("lse", &visa(75), w.now()))
            .await
            .unwrap()
            .binding;
    assert_eq!(waiting.status, BindingStatus::PendingReview);
    let before = events_of(&w, "lse", Some(AuditAction::BindingChannelEvent))
        .await
        .len();
    let signed = Notification {
        headers: [("x-test-signed".to_owned(), "yes".to_owned())].into(),
        body: format!("ld1|{}|signed:agr-74", waiting.id).into_bytes(),
    };
    w.uc.handle_notification(&mock, &signed).await.unwrap();
    assert_eq!(
        w.wallet("lse").await.get(&waiting.id).unwrap().status,
        BindingStatus::PendingReview
    );
    let events = events_of(&w, "lse", Some(AuditAction::BindingChannelEvent)).await;
    assert_eq!(events.len(), before + 1, "{events:?}");
    let last = events.last().unwrap();
    assert_eq!(last.binding_id.as_ref(), Some(&waiting.id));
    let detail = last.detail.as_deref().unwrap_or_default();
    assert!(
        detail.contains("\"agr-74\"") && detail.contains("another live card holds"),
        "{detail}"
    );
    assert_eq!(
        ChannelRefs::find(&w.store, &mock, "agr-74")
            .await
            .unwrap()
            .map(|t| t.binding),
        Some(live.id.clone()),
        "the live card keeps it"
    );
}

/// Nor by the user's erasure: the card an operator holds keeps its
/// fingerprint and its hold through it (its card data is shredded like
/// the rest), so the same card bound again is refused, not a second
/// record of it, active (black-box run: the erasure lifted the hold, and
/// the list showed the card twice). The unfreeze then forgets it, as the
/// erasure asked (audited), and the same card bound again is a new record.
#[tokio::test]
async fn a_freeze_is_not_undone_by_the_users_erasure() {
    let w = world(Policy::default());
    w.channel.always(Script::Bound);
    let card =
        w.uc.bind_card(&backend(), bind_cmd("hle", &visa(78), w.now()))
            .await
            .unwrap()
            .binding;
    w.uc.freeze(&admin(), &user("hle"), &card.id).await.unwrap();
    w.uc.erase_user(&admin(), &user("hle"), None).await.unwrap();
    let held = w.wallet("hle").await.get(&card.id).unwrap().clone();
    assert_eq!(held.status, BindingStatus::Inactive);
    assert!(held.held_since.is_some(), "the hold outlives the erasure");
    assert!(!held.fingerprint.is_erased());
    let e =
        w.uc.bind_card(&backend(), bind_cmd("hle", &visa(78), w.now()))
            .await
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidStateTransition);
    assert_eq!(
        w.wallet("hle").await.bindings().len(),
        1,
        "no second record"
    );
    let lifted =
        w.uc.unfreeze(&admin(), &user("hle"), &card.id)
            .await
            .unwrap();
    assert_eq!(lifted.binding.held_since, None);
    assert!(
        lifted.binding.fingerprint.is_erased(),
        "forgotten once released"
    );
    let events = events_of(&w, "hle", Some(AuditAction::BindingUnfreeze)).await;
    assert_eq!(
        events.last().and_then(|e| e.detail.as_deref()),
        Some(
            "inactive: the operator's hold lifted; the card forgotten, as its user's erasure asked"
        )
    );
    let again =
        w.uc.bind_card(&backend(), bind_cmd("hle", &visa(78), w.now()))
            .await
            .unwrap()
            .binding;
    assert_ne!(again.id, card.id, "a new record: the old one is forgotten");
}

/// An operator's freeze outlives an unbind: the user cannot lift it by
/// unbinding the card and binding it again (found by a black-box run: the
/// card came back `active`). An operator's unfreeze of the unbound card
/// lifts the hold (audited), and the card binds again.
#[tokio::test]
async fn a_freeze_is_not_undone_by_unbinding_and_binding_again() {
    let w = world(Policy::default());
    w.channel.always(Script::Bound);
    let card =
        w.uc.bind_card(&backend(), bind_cmd("hld", &visa(77), w.now()))
            .await
            .unwrap()
            .binding;
    w.uc.freeze(&admin(), &user("hld"), &card.id).await.unwrap();
    let gone =
        w.uc.unbind(&backend(), &user("hld"), &card.id, None)
            .await
            .unwrap();
    assert_eq!(gone.binding.status, BindingStatus::Inactive);
    let e =
        w.uc.bind_card(&backend(), bind_cmd("hld", &visa(77), w.now()))
            .await
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidStateTransition);
    assert_eq!(
        w.wallet("hld").await.get(&card.id).unwrap().status,
        BindingStatus::Inactive,
        "nothing written"
    );
    let lifted =
        w.uc.unfreeze(&admin(), &user("hld"), &card.id)
            .await
            .unwrap();
    assert_eq!(lifted.binding.status, BindingStatus::Inactive);
    assert_eq!(lifted.binding.held_since, None);
    let events = events_of(&w, "hld", Some(AuditAction::BindingUnfreeze)).await;
    assert_eq!(
        events.last().and_then(|e| e.detail.as_deref()),
        Some("inactive: the operator's hold lifted")
    );
    let again =
        w.uc.bind_card(&backend(), bind_cmd("hld", &visa(77), w.now()))
            .await
            .unwrap()
            .binding;
    assert_eq!(
        (again.id.clone(), again.status),
        (card.id.clone(), BindingStatus::Active)
    );
    // A card never held cannot be "unfrozen" once unbound.
    w.uc.unbind(&backend(), &user("hld"), &card.id, None)
        .await
        .unwrap();
    let e =
        w.uc.unfreeze(&admin(), &user("hld"), &card.id)
            .await
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidStateTransition);
}
