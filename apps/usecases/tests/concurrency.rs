//! The use cases under concurrent requests and interrupted writes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use cardbind_domain::{Binding, BindingId, BindingStatus, CardCap, ErrorCode};
use cardbind_ports::audit::{AuditFilter, AuditLog};
use cardbind_ports::channel::RemoteState;
use cardbind_usecases::manage::CardQuery;
use cardbind_usecases::verify::{Otp, VerifyCard, VerifyError};
use cardbind_usecases::{CardView, Policy};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_card_cap_holds_under_16_parallel_binds_of_different_cards() {
    let w = Arc::new(world(Policy {
        card_cap: CardCap { max: 10 },
        ..unlimited()
    }));
    let mut tasks = Vec::new();
    let barrier = Arc::new(tokio::sync::Barrier::new(16));
    for i in 0..16u32 {
        let (w, barrier) = (w.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let cmd = bind_cmd("cap", &visa(100 + i), w.now());
            barrier.wait().await;
            w.uc.bind_card(&backend(), cmd).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(v) => {
                assert_eq!(v.binding.status, BindingStatus::Active);
                ok += 1;
            }
            Err(e) => assert_eq!(e.code(), ErrorCode::CardLimitReached, "{e:?}"),
        }
    }
    let wallet = w.wallet("cap").await;
    assert_eq!(wallet.live_count(), ok);
    assert_eq!(ok, 10, "exactly the cap: every other bind is refused by it");
    // Only one default among them.
    assert_eq!(
        wallet
            .bindings()
            .iter()
            .filter(|b| wallet.is_default(&b.id))
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_wrong_codes_are_each_counted_and_capped() {
    let w = Arc::new(world(Policy::default()));
    w.channel.always(Script::Otp);
    let v =
        w.uc.bind_card(&backend(), bind_cmd("otp", &visa(200), w.now()))
            .await
            .unwrap();
    let id = v.binding.id.clone();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (w, id) = (w.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            w.uc.verify(
                &backend(),
                VerifyCard {
                    user: user("otp"),
                    card: id,
                    otp: Otp::parse("999999").unwrap(),
                },
            )
            .await
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap().is_err());
    }
    let checked = w.channel.confirms.load(Ordering::SeqCst);
    let max = Policy::default().verification.max_otp_attempts as u64;
    assert!(checked <= max, "{checked} guesses reached the channel");
    let b =
        w.uc.get_card(&backend(), &user("otp"), &id)
            .await
            .unwrap()
            .own()
            .cloned()
            .unwrap()
            .binding;
    assert_eq!(
        u64::from(b.otp_attempts),
        checked,
        "every check was counted"
    );
    assert_eq!(b.status, BindingStatus::Failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_changes_of_one_card_never_roll_each_other_back() {
    for round in 0..20u32 {
        let w = Arc::new(world(Policy::default()));
        let v =
            w.uc.bind_card(&backend(), bind_cmd("race", &visa(300 + round), w.now()))
                .await
                .unwrap();
        let id = v.binding.id.clone();
        let (w1, w2, id1, id2) = (w.clone(), w.clone(), id.clone(), id.clone());
        let freeze = tokio::spawn(async move { w1.uc.freeze(&admin(), &user("race"), &id1).await });
        let unbind =
            tokio::spawn(async move { w2.uc.unbind(&backend(), &user("race"), &id2, None).await });
        let (f, u) = (freeze.await.unwrap(), unbind.await.unwrap());
        assert!(u.is_ok(), "an unbind always succeeds: {u:?}");
        let b =
            w.uc.get_card(&backend(), &user("race"), &id)
                .await
                .unwrap()
                .own()
                .cloned()
                .unwrap()
                .binding;
        // Whatever the order, the unbind is never undone by the freeze.
        assert_eq!(b.status, BindingStatus::Inactive, "round {round}: {f:?}");
        if let Err(e) = f {
            assert_eq!(e.code(), ErrorCode::InvalidStateTransition);
        }
    }
}

#[tokio::test]
async fn a_retry_after_a_partial_write_gets_the_binding() {
    let w = world(Policy::default());
    // The store fails after the card is reserved, before its data is kept.
    w.card_data.fail_puts.store(1, Ordering::SeqCst);
    let e =
        w.uc.bind_card(&backend(), bind_cmd("part", &visa(400), w.now()))
            .await
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::StorageUnavailable);
    assert_eq!(
        w.channel.starts.load(Ordering::SeqCst),
        0,
        "the channel was not asked"
    );
    // Retried at once, the first attempt may still be running.
    let e =
        w.uc.bind_card(&backend(), bind_cmd("part", &visa(400), w.now()))
            .await
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Conflict);
    // Later, it resumes the same card instead of refusing it for good.
    w.clock.advance(Policy::default().resume_after_seconds);
    let v =
        w.uc.bind_card(&backend(), bind_cmd("part", &visa(400), w.now()))
            .await
            .unwrap();
    assert_eq!(v.binding.status, BindingStatus::Active);
    let page =
        w.uc.list_cards(&backend(), &user("part"), CardQuery::page(None, 10))
            .await
            .unwrap();
    assert_eq!(page.cards.len(), 1, "one record, not two");
    assert_eq!(page.cards[0].id(), v.binding.id);
    use cardbind_ports::store::CardDataStore;
    assert!(CardDataStore::get(
        &w.store,
        &user("part"),
        &v.binding.id,
        v.binding.data_generation
    )
    .await
    .unwrap()
    .is_some());
}

#[tokio::test]
async fn a_retry_under_the_same_key_resumes_at_once_and_is_not_counted_again() {
    // One bind a minute: a retry counted again would be refused.
    let mut policy = Policy::default();
    policy.binds_per_user.limit = 1;
    let w = world(policy);
    let keyed = |key: &str| {
        let mut c = bind_cmd("same", &visa(401), w.now());
        c.bind_key = Some(key.to_owned());
        c
    };
    w.card_data.fail_puts.store(1, Ordering::SeqCst);
    let e = w.uc.bind_card(&backend(), keyed("k-1")).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::StorageUnavailable);
    // Another request for the card (another key) must wait: the first
    // attempt may still be running as far as it can tell.
    let e = w.uc.bind_card(&backend(), keyed("k-2")).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::RateLimited, "a new request is counted");
    // The client's retry of its own request resumes the card at once.
    let v = w.uc.bind_card(&backend(), keyed("k-1")).await.unwrap();
    assert_eq!(v.binding.status, BindingStatus::Active);
    assert_eq!(v.binding.bind_key.as_deref(), Some("k-1"));
    assert_eq!(w.channel.starts.load(Ordering::SeqCst), 1, "asked once");
    // Audited as a resume, not as another bind with its consent.
    use cardbind_ports::audit::{AuditAction, AuditFilter, AuditLog};
    let of = |action| AuditFilter {
        user_id: Some(user("same")),
        action: Some(action),
        ..AuditFilter::default()
    };
    let resumes = AuditLog::list(&w.store, &of(AuditAction::BindingResume), None, 10)
        .await
        .unwrap();
    assert_eq!(resumes.len(), 1);
    let rebinds = AuditLog::list(&w.store, &of(AuditAction::BindingRebind), None, 10)
        .await
        .unwrap();
    assert!(rebinds.is_empty(), "{rebinds:?}");
    let page =
        w.uc.list_cards(&backend(), &user("same"), CardQuery::page(None, 10))
            .await
            .unwrap();
    assert_eq!(page.cards.len(), 1, "one record");
    // Once active, a retry under the same key (its answer was lost after
    // the last write) gets the card back: not counted, the channel not
    // asked again.
    let again = w.uc.bind_card(&backend(), keyed("k-1")).await.unwrap();
    assert_eq!(again.binding.id, v.binding.id);
    assert_eq!(again.binding.status, BindingStatus::Active);
    assert_eq!(w.channel.starts.load(Ordering::SeqCst), 1, "asked once");
    // Another key for the same card is a new request: counted, refused.
    let e = w.uc.bind_card(&backend(), keyed("k-3")).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::RateLimited);
}

#[tokio::test]
async fn another_request_for_a_card_being_bound_waits_for_it() {
    let w = world(Policy::default());
    let keyed = |key: &str| {
        let mut c = bind_cmd("other", &visa(402), w.now());
        c.bind_key = Some(key.to_owned());
        c
    };
    w.card_data.fail_puts.store(1, Ordering::SeqCst);
    w.uc.bind_card(&backend(), keyed("k-1")).await.unwrap_err();
    let e = w.uc.bind_card(&backend(), keyed("k-2")).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Conflict, "may still be running");
    let e =
        w.uc.bind_card(&backend(), bind_cmd("other", &visa(402), w.now()))
            .await
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Conflict, "a request without a key too");
}

/// A card whose bind stopped before its channel answered is taken over by
/// one later request: its consent is recorded, it owns the bind, and a
/// third request that comes while it asks the channel waits instead of
/// asking the channel a second time.
#[tokio::test]
async fn a_stopped_bind_is_taken_over_by_one_request_whose_consent_is_recorded() {
    let w = world(Policy::default());
    let keyed = |key: &str, version: &str| {
        let mut c = bind_cmd("over", &visa(403), w.now());
        c.bind_key = Some(key.to_owned());
        c.consent.text_version = version.to_owned();
        c
    };
    w.card_data.fail_puts.store(1, Ordering::SeqCst);
    w.uc.bind_card(&backend(), keyed("k-1", "2026-01"))
        .await
        .unwrap_err();
    w.clock.advance(Policy::default().resume_after_seconds);

    let gate = w.channel.hold_starts();
    let second = bind_in_background(&w, keyed("k-2", "2026-02"));
    until_called(&w.channel.starts).await;
    let third = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        w.uc.bind_card(&backend(), keyed("k-3", "2026-03")),
    )
    .await
    .expect("the third request asked the channel too (it waits at the gate)")
    .unwrap_err();
    assert_eq!(third.code(), ErrorCode::Conflict, "the card is being bound");
    gate.add_permits(1);
    let v = second.await.unwrap().unwrap();
    assert_eq!(v.binding.status, BindingStatus::Active);
    assert_eq!(w.channel.starts.load(Ordering::SeqCst), 1, "asked once");
    assert_eq!(
        v.binding.bind_key.as_deref(),
        Some("k-2"),
        "it owns the bind"
    );
    let versions: Vec<&str> = v
        .binding
        .consents
        .iter()
        .map(|c| c.text_version.as_str())
        .collect();
    assert_eq!(versions, ["2026-01", "2026-02"], "every consent given");
    assert_eq!(
        v.binding.consent().unwrap().agreement_id,
        v.binding.channel_ref,
        "the agreement is the taking request's"
    );
    // The audit log records the consent of the request that took it over.
    use cardbind_ports::audit::{AuditAction, AuditFilter, AuditLog};
    let rebinds = AuditLog::list(
        &w.store,
        &AuditFilter {
            user_id: Some(user("over")),
            action: Some(AuditAction::BindingRebind),
            ..AuditFilter::default()
        },
        None,
        100,
    )
    .await
    .unwrap();
    assert_eq!(rebinds.len(), 1);
    let detail = rebinds[0].event.detail.as_deref().unwrap_or_default();
    assert!(
        detail.starts_with("-> pending_verification; consent sha256 ")
            && detail.contains("version \"2026-02\"")
            && detail.ends_with("; takes over the bind left waiting for its channel's answer"),
        "{detail}"
    );
}

/// The request that takes a stopped bind over stores the card's data as
/// it sent it (under a generation of its own, the stopped request's data
/// deleted), so that a retry from review sends what this request
/// consented to; and the stopped request's late answer, were it still
/// running, would not be taken for this one's.
#[tokio::test]
async fn a_bind_taken_over_keeps_the_data_of_the_request_that_took_it() {
    use cardbind_ports::store::CardDataStore;
    let w = world(Policy::default());
    w.channel.always(Script::Bound);
    let _held = w.channel.hold_starts();
    let keyed = |key: &str, phone: &str| {
        let mut c = bind_cmd("tak", &visa(407), w.now());
        c.bind_key = Some(key.to_owned());
        c.details.phone = cardbind_domain::Phone::parse(phone).unwrap();
        c
    };
    let stopped = bind_in_background(&w, keyed("k-1", "13800138000"));
    until_called(&w.channel.starts).await;
    // The process stops while the channel is asked.
    stopped.abort();
    let _ = stopped.await;
    w.channel.gate.lock().unwrap().take();
    let before = w.wallet("tak").await.bindings()[0].clone();
    assert!(before.awaits_channel_answer());
    let first_generation = before.data_generation;
    assert!(
        CardDataStore::get(&w.store, &user("tak"), &before.id, first_generation)
            .await
            .unwrap()
            .is_some()
    );

    w.clock.advance(Policy::default().resume_after_seconds);
    let v =
        w.uc.bind_card(&backend(), keyed("k-2", "13900139000"))
            .await
            .unwrap()
            .binding;
    assert_eq!(v.id, before.id);
    assert_eq!(v.status, BindingStatus::Active);
    assert_ne!(v.data_generation, first_generation);
    assert!(
        CardDataStore::get(&w.store, &user("tak"), &v.id, first_generation)
            .await
            .unwrap()
            .is_none(),
        "the stopped request's data is gone"
    );
    assert!(
        CardDataStore::get(&w.store, &user("tak"), &v.id, v.data_generation)
            .await
            .unwrap()
            .is_some(),
        "the taking request's data is stored"
    );
}

/// An unbind's clean-up that runs once the card is bound again deletes
/// what the bind it unbound stored (that bind's generation of the data,
/// the reference its channel gave), not what the new bind stored: the card
/// bound again keeps its data and its channel's notifications still find
/// it.
#[tokio::test]
async fn an_unbinds_late_clean_up_leaves_what_a_bind_of_the_card_again_stored() {
    use cardbind_ports::store::{CardDataStore, ChannelRefs};
    let w = world(unlimited());
    w.channel.always(Script::Bound);
    let first =
        w.uc.bind_card(&backend(), bind_cmd("cln", &visa(409), w.now()))
            .await
            .unwrap()
            .binding;
    let id = first.id.clone();
    // The unbind holds at its first delete, after it wrote the card.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    w.card_data
        .delete_gate
        .lock()
        .unwrap()
        .replace(gate.clone());
    let unbind = {
        let (uc, id) = (w.uc.clone(), id.clone());
        tokio::spawn(async move { uc.unbind(&backend(), &user("cln"), &id, None).await })
    };
    while w.card_data.deletes.load(Ordering::SeqCst) < 1 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(
        w.wallet("cln").await.get(&id).unwrap().status,
        BindingStatus::Inactive
    );
    // The bind's own delete of the earlier generation fails: only the
    // unbind's can take it.
    w.card_data.fail_deletes.store(1, Ordering::SeqCst);
    let again =
        w.uc.bind_card(&backend(), bind_cmd("cln", &visa(409), w.now()))
            .await
            .unwrap()
            .binding;
    assert_eq!((&again.id, again.status), (&id, BindingStatus::Active));
    assert_ne!(again.data_generation, first.data_generation);
    gate.add_permits(1);
    unbind.await.unwrap().unwrap();

    let owner = user("cln");
    let data = |g| CardDataStore::get(&w.store, &owner, &id, g);
    assert!(
        data(again.data_generation).await.unwrap().is_some(),
        "the new bind's data stays"
    );
    assert_eq!(w.card_data.fail_deletes.load(Ordering::SeqCst), 0);
    assert!(
        data(first.data_generation).await.unwrap().is_none(),
        "the unbind deletes the data of the bind it ended"
    );
    let find = |r: Option<String>| {
        let channel = first.channel.clone();
        let store = w.store.clone();
        async move {
            ChannelRefs::find(&store, &channel, &r.unwrap())
                .await
                .unwrap()
        }
    };
    assert_ne!(first.channel_ref, again.channel_ref);
    assert_eq!(
        find(again.channel_ref.clone()).await.map(|t| t.binding),
        Some(id.clone()),
        "the new bind's reference stays"
    );
    assert_eq!(find(first.channel_ref.clone()).await, None);
}

/// A card failed by its code check keeps its channel reference (a late
/// signing can still be found and ended); once the card is bound again
/// that reference goes, and the new bind's goes with its unbind.
#[tokio::test]
async fn a_failed_binds_reference_goes_with_the_next_bind_of_the_card() {
    use cardbind_ports::store::ChannelRefs;
    use cardbind_usecases::verify::{Otp, VerifyCard};
    let w = world(unlimited());
    w.channel.always(Script::Otp);
    let first =
        w.uc.bind_card(&backend(), bind_cmd("frf", &visa(411), w.now()))
            .await
            .unwrap()
            .binding;
    let cmd = VerifyCard {
        user: user("frf"),
        card: first.id.clone(),
        otp: Otp::parse("000000").unwrap(),
    };
    for _ in 0..Policy::default().verification.max_otp_attempts {
        w.uc.verify(&backend(), cmd.clone()).await.unwrap_err();
    }
    assert_eq!(
        w.wallet("frf").await.get(&first.id).unwrap().status,
        BindingStatus::Failed
    );
    let find = |r: &Option<String>| {
        let (store, channel, r) = (w.store.clone(), first.channel.clone(), r.clone().unwrap());
        async move { ChannelRefs::find(&store, &channel, &r).await.unwrap() }
    };
    assert!(
        find(&first.channel_ref).await.is_some(),
        "a failed card's stays"
    );
    w.channel.always(Script::Bound);
    let again =
        w.uc.bind_card(&backend(), bind_cmd("frf", &visa(411), w.now()))
            .await
            .unwrap()
            .binding;
    assert_eq!(again.id, first.id);
    assert_ne!(again.channel_ref, first.channel_ref);
    assert_eq!(find(&first.channel_ref).await, None);
    assert!(find(&again.channel_ref).await.is_some());
    w.uc.unbind(&backend(), &user("frf"), &again.id, None)
        .await
        .unwrap();
    assert_eq!(find(&again.channel_ref).await, None);
}

/// The audit events of the sweep's walks, oldest first.
async fn sweep_events(w: &World) -> Vec<cardbind_ports::audit::AuditRecord> {
    w.store
        .list(
            &AuditFilter {
                action: Some(cardbind_ports::audit::AuditAction::CardDataSweep),
                ..AuditFilter::default()
            },
            None,
            10,
        )
        .await
        .unwrap()
}

/// The sweep deletes the generations of card data no card holds now (an
/// unbind's failed delete, a stray generation beside a live card's) and
/// keeps every card's own, that of a bind waiting for its channel
/// included.
#[tokio::test]
async fn the_sweep_deletes_data_no_card_holds_and_keeps_every_cards_own() {
    use cardbind_ports::store::{CardData, CardDataStore};
    use cardbind_usecases::sweep::SweepReport;
    let w = world(unlimited());
    w.channel.always(Script::Bound);
    let ctx = backend();
    let bind = |n: u32| w.uc.bind_card(&ctx, bind_cmd("swp", &visa(n), w.now()));
    let unbound = bind(420).await.unwrap().binding;
    let live = bind(421).await.unwrap().binding;
    let strayed = bind(422).await.unwrap().binding;
    w.card_data.fail_deletes.store(1, Ordering::SeqCst);
    w.uc.unbind(&backend(), &user("swp"), &unbound.id, None)
        .await
        .unwrap();
    let owner = user("swp");
    let data = |id: &BindingId, g| {
        let (store, owner, id) = (w.store.clone(), owner.clone(), id.clone());
        async move { CardDataStore::get(&store, &owner, &id, g).await }
    };
    let mut stray = data(&strayed.id, strayed.data_generation)
        .await
        .unwrap()
        .unwrap();
    stray.generation = strayed.data_generation.wrapping_add(1);
    CardDataStore::put(&w.store, &CardData { ..stray })
        .await
        .unwrap();
    // A bind waiting for its channel's answer: its data is stored.
    let gate = w.channel.hold_starts();
    let waiting = bind_in_background(&w, bind_cmd("swp", &visa(423), w.now()));
    while w.channel.starts.load(Ordering::SeqCst) < 4 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }

    let report =
        w.uc.sweep_card_data(2, std::time::Duration::ZERO)
            .await
            .unwrap();
    assert_eq!(
        report,
        SweepReport {
            examined: 5,
            kept: 3,
            deleted: 2,
            errors: 0,
            unreadable: 0
        }
    );
    assert!(data(&unbound.id, unbound.data_generation)
        .await
        .unwrap()
        .is_none());
    assert!(data(&strayed.id, strayed.data_generation.wrapping_add(1))
        .await
        .unwrap()
        .is_none());
    for b in [&live, &strayed] {
        assert!(data(&b.id, b.data_generation).await.unwrap().is_some());
    }
    w.channel.gate.lock().unwrap().take();
    gate.add_permits(1);
    let waiting = waiting.await.unwrap().unwrap().binding;
    assert_eq!(waiting.status, BindingStatus::Active);
    assert!(data(&waiting.id, waiting.data_generation)
        .await
        .unwrap()
        .is_some());
    let again =
        w.uc.sweep_card_data(100, std::time::Duration::ZERO)
            .await
            .unwrap();
    assert_eq!((again.examined, again.kept, again.deleted), (3, 3, 0));
    // Each run is in the audit log, with its counts.
    let sweeps = sweep_events(&w).await;
    let mut details: Vec<String> = sweeps
        .iter()
        .map(|e| e.event.detail.clone().unwrap_or_default())
        .collect();
    details.sort();
    assert_eq!(
        details,
        [
            "card data: 3 examined, 3 kept, 0 deleted, 0 not deleted".to_owned(),
            format!(
                "card data: {} examined, {} kept, {} deleted, 0 not deleted",
                report.examined, report.kept, report.deleted
            ),
        ]
    );
}

/// Wallets as a lagging replica shows them: the next `load_many` answers
/// with the wallets stored in `stale` (once), the rest as stored now. And
/// `corrupt`'s wallet as a record that does not parse: every read that
/// would return it fails.
struct LaggingWallets {
    inner: cardbind_memory::MemoryStore,
    stale: std::sync::Mutex<Option<Vec<cardbind_ports::store::StoredWallet>>>,
    corrupt: Option<cardbind_domain::UserId>,
}

impl LaggingWallets {
    fn check(&self, users: &[cardbind_domain::UserId]) -> Result<(), cardbind_ports::StoreError> {
        match &self.corrupt {
            Some(c) if users.contains(c) => Err(cardbind_ports::StoreError::Corrupt(
                "a wallet that does not parse".to_owned(),
            )),
            _ => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl cardbind_ports::store::WalletStore for LaggingWallets {
    async fn load(
        &self,
        u: &cardbind_domain::UserId,
    ) -> Result<Option<cardbind_ports::store::StoredWallet>, cardbind_ports::StoreError> {
        self.check(std::slice::from_ref(u))?;
        self.inner.load(u).await
    }
    async fn load_many(
        &self,
        users: &[cardbind_domain::UserId],
    ) -> Result<Vec<cardbind_ports::store::StoredWallet>, cardbind_ports::StoreError> {
        self.check(users)?;
        let stale = self.stale.lock().unwrap().take();
        match stale {
            Some(s) => Ok(s),
            None => self.inner.load_many(users).await,
        }
    }
    async fn commit(
        &self,
        w: &cardbind_domain::Wallet,
        after: Option<cardbind_ports::audit::ChainHead>,
        events: Vec<cardbind_ports::audit::AuditEvent>,
        now: cardbind_domain::Timestamp,
    ) -> Result<cardbind_ports::audit::ChainHead, cardbind_ports::StoreError> {
        self.inner.commit(w, after, events, now).await
    }
    async fn pending_links(
        &self,
        from: cardbind_domain::Timestamp,
        to: cardbind_domain::Timestamp,
        after: Option<cardbind_ports::store::LinkKey>,
        limit: u32,
    ) -> Result<Vec<cardbind_ports::store::PendingLink>, cardbind_ports::StoreError> {
        self.inner.pending_links(from, to, after, limit).await
    }
}

/// A wallet read that lags behind a bind again (the card still unbound
/// there) does not decide alone: the sweep reads it again before it
/// deletes, finds the new bind's generation held and keeps it.
#[tokio::test]
async fn the_sweep_reads_a_wallet_again_before_it_deletes() {
    use cardbind_ports::store::{CardDataStore, WalletStore};
    let w = world(unlimited());
    w.channel.always(Script::Bound);
    let first =
        w.uc.bind_card(&backend(), bind_cmd("lag", &visa(430), w.now()))
            .await
            .unwrap()
            .binding;
    w.uc.unbind(&backend(), &user("lag"), &first.id, None)
        .await
        .unwrap();
    let unbound = WalletStore::load(&w.store, &user("lag"))
        .await
        .unwrap()
        .unwrap();
    let again =
        w.uc.bind_card(&backend(), bind_cmd("lag", &visa(430), w.now()))
            .await
            .unwrap()
            .binding;
    assert_eq!(again.id, first.id);
    let wallets = Arc::new(LaggingWallets {
        inner: w.store.clone(),
        stale: std::sync::Mutex::new(Some(vec![unbound])),
        corrupt: None,
    });
    let mut ports = w.uc.ports().clone();
    ports.wallets = wallets.clone();
    let uc = cardbind_usecases::UseCases::new(ports, w.uc.policy().clone());
    let report = uc
        .sweep_card_data(10, std::time::Duration::ZERO)
        .await
        .unwrap();
    assert_eq!((report.examined, report.kept, report.deleted), (1, 1, 0));
    assert!(
        CardDataStore::get(&w.store, &user("lag"), &again.id, again.data_generation)
            .await
            .unwrap()
            .is_some(),
        "the card bound again keeps its data"
    );
    assert!(
        wallets.stale.lock().unwrap().is_none(),
        "the stale read was used"
    );
}

/// A wallet that does not parse does not stop the walk: the page's
/// wallets are read one by one, that user's records are kept and counted
/// as unreadable, and the others' are swept as before, on every page.
#[tokio::test]
async fn the_sweep_keeps_the_records_of_a_wallet_that_does_not_parse_and_goes_on() {
    use cardbind_ports::store::CardDataStore;
    let w = world(unlimited());
    w.channel.always(Script::Bound);
    let mut stray = Vec::new();
    for (name, n) in [("crp-a", 460), ("crp-bad", 461), ("crp-z", 462)] {
        let card =
            w.uc.bind_card(&backend(), bind_cmd(name, &visa(n), w.now()))
                .await
                .unwrap()
                .binding;
        w.card_data.fail_deletes.store(1, Ordering::SeqCst);
        w.uc.unbind(&backend(), &user(name), &card.id, None)
            .await
            .unwrap();
        stray.push((user(name), card));
    }
    let mut ports = w.uc.ports().clone();
    ports.wallets = Arc::new(LaggingWallets {
        inner: w.store.clone(),
        stale: std::sync::Mutex::new(None),
        corrupt: Some(user("crp-bad")),
    });
    let uc = cardbind_usecases::UseCases::new(ports, w.uc.policy().clone());
    // One page holding all three, then a page for each.
    for page in [10, 1] {
        let report = uc
            .sweep_card_data(page, std::time::Duration::ZERO)
            .await
            .unwrap();
        // (examined, kept, deleted, unreadable): the second run finds the
        // kept record alone.
        let expected = if page == 10 {
            (3, 0, 2, 1)
        } else {
            (1, 0, 0, 1)
        };
        assert_eq!(
            (
                report.examined,
                report.kept,
                report.deleted,
                report.unreadable
            ),
            expected,
            "page {page}: {report:?}"
        );
        let sweeps = sweep_events(&w).await;
        let detail = sweeps
            .last()
            .and_then(|e| e.event.detail.clone())
            .unwrap_or_default();
        assert!(
            detail.ends_with(", 1 kept whose wallet does not parse"),
            "{detail}"
        );
    }
    for (owner, card) in &stray {
        let kept = CardDataStore::get(&w.store, owner, &card.id, card.data_generation)
            .await
            .unwrap()
            .is_some();
        assert_eq!(kept, owner == &user("crp-bad"), "{owner:?}");
    }
}

/// A walk's read the store does not answer is tried twice more before
/// the sweep stops (a lost page does not end a walk of every record).
#[tokio::test]
async fn the_sweep_tries_a_read_the_store_did_not_answer_again() {
    use cardbind_ports::store::CardDataStore;
    let w = world(unlimited());
    w.channel.always(Script::Bound);
    let card =
        w.uc.bind_card(&backend(), bind_cmd("rtr", &visa(450), w.now()))
            .await
            .unwrap()
            .binding;
    w.card_data.fail_deletes.store(1, Ordering::SeqCst);
    w.uc.unbind(&backend(), &user("rtr"), &card.id, None)
        .await
        .unwrap();
    w.card_data.fail_lists.store(3, Ordering::SeqCst);
    let stopped =
        w.uc.sweep_card_data(10, std::time::Duration::ZERO)
            .await
            .unwrap_err();
    assert!(
        matches!(stopped, cardbind_ports::StoreError::Unavailable(_)),
        "{stopped:?}"
    );
    // The stopped walk is audited too: its counts and why it stopped.
    let sweeps = sweep_events(&w).await;
    assert_eq!(sweeps.len(), 1, "{sweeps:?}");
    let detail = sweeps[0].event.detail.clone().unwrap_or_default();
    assert!(
        detail.starts_with("card data: 0 examined, 0 kept, 0 deleted, 0 not deleted; stopped: "),
        "{detail}"
    );
    assert_eq!(
        sweeps[0].event.outcome,
        cardbind_ports::audit::Outcome::Refused(cardbind_domain::ErrorCode::StorageUnavailable)
    );
    w.card_data.fail_lists.store(2, Ordering::SeqCst);
    let report =
        w.uc.sweep_card_data(10, std::time::Duration::ZERO)
            .await
            .unwrap();
    assert_eq!((report.examined, report.deleted), (1, 1), "{report:?}");
    assert_eq!(w.card_data.fail_lists.load(Ordering::SeqCst), 0);
    assert!(
        CardDataStore::get(&w.store, &user("rtr"), &card.id, card.data_generation)
            .await
            .unwrap()
            .is_none()
    );
}

/// The sweep of channel references deletes those no card holds now (an
/// unbound card's that its unbind failed to delete, one of a bind before
/// the card's current one, one whose card is in no wallet) and keeps every
/// card's own: a live card's, one waiting for its code, and a failed
/// card's (kept for a late signing of its agreement).
#[tokio::test]
async fn the_sweep_deletes_references_no_card_holds_and_keeps_every_cards_own() {
    use cardbind_domain::ChannelName;
    use cardbind_ports::store::{ChannelRefs, RefTarget};
    let w = world(unlimited());
    let ctx = backend();
    let owner = user("rfs");
    let bind = |n: u32, script: Script| {
        w.channel.always(script);
        w.uc.bind_card(&ctx, bind_cmd("rfs", &visa(n), w.now()))
    };
    let live = bind(440, Script::Bound).await.unwrap().binding;
    let waiting = bind(441, Script::Otp).await.unwrap().binding;
    let unbound = bind(442, Script::Bound).await.unwrap().binding;
    let failed = bind(443, Script::Refuse("do_not_honor")).await;
    assert!(failed.is_err(), "a refused card fails");
    w.uc.unbind(&ctx, &owner, &unbound.id, None).await.unwrap();
    let failed = cardbind_ports::store::WalletStore::load(&w.store, &owner)
        .await
        .unwrap()
        .unwrap()
        .wallet
        .bindings()
        .iter()
        .find(|b| b.status == BindingStatus::Failed)
        .expect("the refused card")
        .clone();
    let ch = ChannelName::parse("mock").unwrap();
    let target = |id: &BindingId| RefTarget {
        user: owner.clone(),
        binding: id.clone(),
    };
    let put = |r: &'static str, id: &BindingId, g: u32| {
        let (store, ch, t) = (w.store.clone(), ch.clone(), target(id));
        async move { ChannelRefs::put(&store, &ch, r, &t, g).await.unwrap() }
    };
    // What failed clean-ups would have left.
    put("left-by-unbind", &unbound.id, unbound.data_generation).await;
    put(
        "bind-before",
        &live.id,
        live.data_generation.wrapping_add(1),
    )
    .await;
    let ghost = RefTarget {
        user: user("ghost"),
        binding: live.id.clone(),
    };
    ChannelRefs::put(&w.store, &ch, "no-wallet", &ghost, 1)
        .await
        .unwrap();
    // The failed card's reference, recorded before it failed.
    put("failed-agreement", &failed.id, failed.data_generation).await;
    let find = |r: &'static str| {
        let (store, ch) = (w.store.clone(), ch.clone());
        async move { ChannelRefs::find(&store, &ch, r).await.unwrap() }
    };
    let own = [format!("ref-{}", live.id), format!("ref-{}", waiting.id)];
    for r in &own {
        assert!(
            ChannelRefs::find(&w.store, &ch, r).await.unwrap().is_some(),
            "{r} recorded by its bind"
        );
    }

    let report =
        w.uc.sweep_channel_refs(2, std::time::Duration::ZERO)
            .await
            .unwrap();
    assert_eq!(
        (report.examined, report.kept, report.deleted, report.errors),
        (6, 3, 3, 0),
        "{report:?}"
    );
    for gone in ["left-by-unbind", "bind-before", "no-wallet"] {
        assert_eq!(find(gone).await, None, "{gone}");
    }
    assert_eq!(find("failed-agreement").await, Some(target(&failed.id)));
    for r in &own {
        assert!(
            ChannelRefs::find(&w.store, &ch, r).await.unwrap().is_some(),
            "{r} kept"
        );
    }
    let again =
        w.uc.sweep_channel_refs(100, std::time::Duration::ZERO)
            .await
            .unwrap();
    assert_eq!((again.examined, again.kept, again.deleted), (3, 3, 0));
}

/// A channel that gives a card the same reference at every bind (the
/// mock): a bind's start that answers late, after the card was unbound
/// and bound again, records the reference under its own generation. The
/// sweep keeps it all the same: the card names it as its agreement.
#[tokio::test]
async fn the_sweep_keeps_the_reference_a_card_names_whichever_bind_wrote_it_last() {
    use cardbind_ports::store::ChannelRefs;
    let w = world(unlimited());
    w.channel.always(Script::Bound);
    w.channel.same_ref.store(true, Ordering::SeqCst);
    let gate = w.channel.hold_starts();
    let first = bind_in_background(&w, bind_cmd("rus", &visa(460), w.now()));
    until_called(&w.channel.starts).await;
    let id = w.wallet("rus").await.bindings()[0].id.clone();
    w.uc.unbind(&backend(), &user("rus"), &id, None)
        .await
        .unwrap();
    w.channel.gate.lock().unwrap().take();
    let again =
        w.uc.bind_card(&backend(), bind_cmd("rus", &visa(460), w.now()))
            .await
            .unwrap()
            .binding;
    assert_eq!(
        (again.id.clone(), again.status),
        (id.clone(), BindingStatus::Active)
    );
    gate.add_permits(1);
    let _ = first.await.unwrap();
    let r = again.channel_ref.clone().unwrap();
    let stored = ChannelRefs::list(&w.store, None, 10).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_ne!(
        stored[0].generation,
        Some(again.data_generation),
        "the late start wrote last"
    );
    let report =
        w.uc.sweep_channel_refs(10, std::time::Duration::ZERO)
            .await
            .unwrap();
    assert_eq!((report.examined, report.kept, report.deleted), (1, 1, 0));
    assert!(ChannelRefs::find(&w.store, &again.channel, &r)
        .await
        .unwrap()
        .is_some());
}

/// An unbind whose delete of the card's data failed leaves that bind's
/// data; the next bind of the card deletes it (that generation only).
#[tokio::test]
async fn data_an_unbind_failed_to_delete_goes_with_the_next_bind_of_the_card() {
    use cardbind_ports::store::CardDataStore;
    let w = world(unlimited());
    w.channel.always(Script::Bound);
    let first =
        w.uc.bind_card(&backend(), bind_cmd("lft", &visa(410), w.now()))
            .await
            .unwrap()
            .binding;
    w.card_data.fail_deletes.store(1, Ordering::SeqCst);
    w.uc.unbind(&backend(), &user("lft"), &first.id, None)
        .await
        .unwrap();
    let owner = user("lft");
    let data = |g| CardDataStore::get(&w.store, &owner, &first.id, g);
    assert!(data(first.data_generation).await.unwrap().is_some());
    let again =
        w.uc.bind_card(&backend(), bind_cmd("lft", &visa(410), w.now()))
            .await
            .unwrap()
            .binding;
    assert_eq!(again.id, first.id);
    assert!(data(first.data_generation).await.unwrap().is_none());
    assert!(data(again.data_generation).await.unwrap().is_some());
}

/// A bind's channel answers after its card was unbound and bound again
/// (the new bind now waits for its own answer). Each bind names its
/// agreement by an attempt of its own, so the late answer is about an
/// agreement nothing here waits on: it is ended under its attempt at once,
/// and the new bind's answer binds the card. The card ends on one live
/// agreement, and the new bind's card data stays.
#[tokio::test]
async fn a_late_answer_of_an_earlier_bind_leaves_the_card_bound_again_on_one_agreement() {
    let w = world(unlimited());
    w.channel.always(Script::Bound);
    let gate = w.channel.hold_starts();
    let spawn_bind = || bind_in_background(&w, bind_cmd("lat", &visa(408), w.now()));
    let first = spawn_bind();
    until_called(&w.channel.starts).await;
    let id = w.wallet("lat").await.bindings()[0].id.clone();
    w.uc.unbind(&backend(), &user("lat"), &id, None)
        .await
        .unwrap();
    // The card is bound again: the new bind holds at storing the card's
    // data, after its card was placed, before it asks the channel.
    let put_gate = Arc::new(tokio::sync::Semaphore::new(0));
    w.card_data
        .put_gate
        .lock()
        .unwrap()
        .replace(put_gate.clone());
    let second = spawn_bind();
    while w.card_data.puts.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // The first bind's channel answers now.
    w.channel.gate.lock().unwrap().take();
    gate.add_permits(1);
    let _ = first.await.unwrap();
    let first_attempt = w.channel.started.lock().unwrap()[0];
    assert_eq!(
        *w.channel.unbound.lock().unwrap(),
        vec![Some(first_attempt)],
        "the late answer's agreement is ended under its attempt"
    );
    w.card_data.put_gate.lock().unwrap().take();
    put_gate.add_permits(1);
    let v = second.await.unwrap().unwrap().binding;
    assert_eq!(v.status, BindingStatus::Active);
    assert_ne!(v.data_generation, first_attempt);
    assert_eq!(
        v.channel_ref,
        Some(format!("ref-{id}-2")),
        "the new bind's own answer"
    );
    assert_eq!(v.consent().unwrap().agreement_id, v.channel_ref);
    assert_eq!(
        w.channel.unbinds.load(Ordering::SeqCst),
        1,
        "only the other agreement is ended"
    );
    assert_eq!(unwanted_signings(&w).await.len(), 1);
    use cardbind_ports::store::CardDataStore;
    assert!(
        CardDataStore::get(&w.store, &user("lat"), &id, v.data_generation)
            .await
            .unwrap()
            .is_some(),
        "the new bind's data stays"
    );
}

#[tokio::test]
async fn a_bind_interrupted_after_the_channel_answered_is_resumed_not_refused() {
    let w = world(Policy::default());
    // The channel took the card, but the answer was never written (the
    // process stopped): simulated by a wallet store that refuses writes
    // after the reservation.
    w.channel.always(Script::Bound);
    let first =
        w.uc.bind_card(&backend(), bind_cmd("gap", &visa(500), w.now()))
            .await
            .unwrap();
    // Unbind and pretend a later bind stopped after the reservation: the
    // card waits for its channel's answer.
    w.uc.unbind(&backend(), &user("gap"), &first.binding.id, None)
        .await
        .unwrap();
    w.channel
        .gate
        .lock()
        .unwrap()
        .replace(Arc::new(tokio::sync::Semaphore::new(0)));
    let before = w.channel.starts.load(std::sync::atomic::Ordering::SeqCst);
    let stuck = bind_in_background(&w, bind_cmd("gap", &visa(500), w.now()));
    // At the channel's gate: the reservation is written.
    while w.channel.starts.load(std::sync::atomic::Ordering::SeqCst) == before {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    stuck.abort();
    w.channel.gate.lock().unwrap().take();
    let b =
        w.uc.get_card(&backend(), &user("gap"), &first.binding.id)
            .await
            .unwrap()
            .own()
            .cloned()
            .unwrap()
            .binding;
    assert!(b.awaits_channel_answer());
    w.clock.advance(Policy::default().resume_after_seconds);
    let v =
        w.uc.bind_card(&backend(), bind_cmd("gap", &visa(500), w.now()))
            .await
            .unwrap();
    assert_eq!(v.binding.id, first.binding.id);
    assert_eq!(v.binding.status, BindingStatus::Active);
}

#[tokio::test]
async fn an_agreement_made_for_a_card_unbound_while_its_channel_was_asked_is_ended() {
    let w = world(Policy::default());
    w.channel.always(Script::Bound);
    let gate = w.channel.hold_starts();
    let binding = bind_in_background(&w, bind_cmd("una", &visa(510), w.now()));
    until_called(&w.channel.starts).await;
    // The channel is being asked; the user unbinds the card, which has no
    // agreement yet to end.
    let page =
        w.uc.list_cards(&backend(), &user("una"), CardQuery::page(None, 10))
            .await
            .unwrap();
    let id = page.cards[0].own().unwrap().binding.id.clone();
    w.uc.unbind(&backend(), &user("una"), &id, None)
        .await
        .unwrap();
    assert_eq!(w.channel.unbinds.load(Ordering::SeqCst), 0);
    // The channel answers: an agreement for a card no longer held. The
    // bind does not say the card was created (before, it answered the
    // inactive card, which the HTTP layer sent as `201 Created`).
    gate.add_permits(1);
    let e = binding.await.unwrap().unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidStateTransition, "{e:?}");
    assert_eq!(
        w.wallet("una").await.get(&id).unwrap().status,
        BindingStatus::Inactive
    );
    assert_eq!(
        w.channel.unbinds.load(Ordering::SeqCst),
        1,
        "the agreement was ended at the channel"
    );
    assert_eq!(unwanted_signings(&w).await.len(), 1);
    // A new bind of the card binds it again.
    let again =
        w.uc.bind_card(&backend(), bind_cmd("una", &visa(510), w.now()))
            .await
            .unwrap()
            .binding;
    assert_eq!(
        (again.id.clone(), again.status),
        (id, BindingStatus::Active)
    );
}

#[tokio::test]
async fn a_card_waiting_for_its_channel_is_not_resumed_through_another() {
    let w = world(Policy::default());
    w.channel.always(Script::Bound);
    w.other.always(Script::Bound);
    // A bind through the default channel stops before its answer is
    // written: the card waits for it.
    w.channel
        .gate
        .lock()
        .unwrap()
        .replace(Arc::new(tokio::sync::Semaphore::new(0)));
    let stuck = bind_in_background(&w, bind_cmd("vic", &visa(520), w.now()));
    until_called(&w.channel.starts).await;
    stuck.abort();
    w.channel.gate.lock().unwrap().take();
    w.clock.advance(Policy::default().resume_after_seconds);
    // Another request binds the card through the other channel: refused,
    // and the other channel is not asked.
    let mut cmd = bind_cmd("vic", &visa(520), w.now());
    cmd.channel = Some(cardbind_domain::ChannelName::parse("other").unwrap());
    let e = w.uc.bind_card(&backend(), cmd).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Conflict);
    assert_eq!(w.other.starts.load(Ordering::SeqCst), 0);
    // Through its own channel it is resumed.
    let v =
        w.uc.bind_card(&backend(), bind_cmd("vic", &visa(520), w.now()))
            .await
            .unwrap();
    assert_eq!(v.binding.status, BindingStatus::Active);
    assert_eq!(v.binding.channel.as_str(), "mock");
}

#[tokio::test]
async fn a_code_checked_for_a_cards_earlier_bind_does_not_verify_it_bound_again() {
    let w = world(unlimited());
    let (first, gate, otp) = waiting_for_its_code(&w, "wes", 530).await;
    let verify = tokio::spawn(verify_code(&w, "wes", &first.id, otp));
    until_called(&w.channel.confirms).await;
    // While the first bind's code is checked, the card is unbound and
    // bound again: a new agreement, waiting for its own code.
    w.uc.unbind(&backend(), &user("wes"), &first.id, None)
        .await
        .unwrap();
    let again =
        w.uc.bind_card(&backend(), bind_cmd("wes", &visa(530), w.now()))
            .await
            .unwrap()
            .binding;
    assert_eq!(again.id, first.id);
    assert_ne!(again.channel_ref, first.channel_ref);
    gate.add_permits(1);
    let e = verify.await.unwrap().unwrap_err();
    assert_eq!(e.code(), ErrorCode::Conflict);
    let now =
        w.uc.get_card(&backend(), &user("wes"), &first.id)
            .await
            .unwrap()
            .own()
            .cloned()
            .unwrap()
            .binding;
    assert_eq!(now.status, BindingStatus::PendingVerification);
    assert_eq!(now.channel_ref, again.channel_ref);
    // The earlier agreement, confirmed at the channel for nothing here, is
    // ended there (the unbind ended it once already; this is the second).
    assert_eq!(w.channel.unbinds.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_code_confirmed_for_a_card_that_failed_meanwhile_ends_its_agreement() {
    let w = world(unlimited());
    let (card, gate, otp) = waiting_for_its_code(&w, "xia", 540).await;
    let right = tokio::spawn(verify_code(&w, "xia", &card.id, otp));
    until_called(&w.channel.confirms).await;
    // The window closes while the right code is checked; the next guess
    // finds it closed and fails the card.
    w.clock.advance(16 * 60);
    let e = verify_code(&w, "xia", &card.id, "000000".into())
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::VerificationExpired);
    gate.add_permits(1);
    assert!(right.await.unwrap().is_err());
    assert_eq!(
        w.channel.unbinds.load(Ordering::SeqCst),
        1,
        "the agreement confirmed for a failed card was ended"
    );
    assert_eq!(unwanted_signings(&w).await.len(), 1);
}

/// A card of `who` waiting for its one-time code, with the channel's
/// confirmations held at the returned gate: the card, the gate and the
/// right code.
async fn waiting_for_its_code(
    w: &World,
    who: &str,
    card: u32,
) -> (Binding, Arc<tokio::sync::Semaphore>, String) {
    w.channel.always(Script::Otp);
    let bound =
        w.uc.bind_card(&backend(), bind_cmd(who, &visa(card), w.now()))
            .await
            .unwrap()
            .binding;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    w.channel.confirm_gate.lock().unwrap().replace(gate.clone());
    let otp = w.channel.otp.lock().unwrap().clone();
    (bound, gate, otp)
}

/// `who` sends `code` for card `id` (a future that owns what it needs).
fn verify_code(
    w: &World,
    who: &str,
    id: &BindingId,
    code: String,
) -> impl std::future::Future<Output = Result<CardView, VerifyError>> + Send + 'static {
    let (uc, id, who) = (w.uc.clone(), id.clone(), user(who));
    async move {
        uc.verify(
            &backend(),
            VerifyCard {
                user: who,
                card: id,
                otp: Otp::parse(&code).unwrap(),
            },
        )
        .await
    }
}

/// A user erased while their bind stores the card's data (after the card
/// was placed in the wallet): the data the bind stores then belongs to no
/// card, and the agreement its channel makes serves nothing. Both go.
#[tokio::test]
async fn a_bind_racing_the_erasure_of_its_user_leaves_no_card_data() {
    use cardbind_ports::store::CardDataStore;
    let w = world(Policy::default());
    w.channel.always(Script::Bound);
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    w.card_data.put_gate.lock().unwrap().replace(gate.clone());
    let bind = bind_in_background(&w, bind_cmd("erased", &visa(404), w.now()));
    until_called(&w.card_data.puts).await;
    let placed = w.wallet("erased").await.bindings()[0].clone();
    w.uc.erase_user(&admin(), &user("erased"), None)
        .await
        .unwrap();
    gate.add_permits(1);
    let _ = bind.await.unwrap();
    assert_eq!(
        CardDataStore::owner(&w.store, &placed.id).await.unwrap(),
        None,
        "card data of an erased user"
    );
    assert_eq!(
        w.channel.unbinds.load(Ordering::SeqCst),
        1,
        "the agreement made for the erased card was ended"
    );
}

/// The key of an erased user is destroyed before the change that unbinds
/// their cards is stored, and not after it: a bind that reads the wallet
/// once that change is stored (no live card) makes the user a new key,
/// which a later step of the erasure must not delete (before, the key was
/// deleted last, and a bind in between sealed its card under the key the
/// erasure then took: the card's data never opened again).
#[tokio::test]
async fn an_erasure_destroys_the_key_before_its_change_is_stored() {
    let w = Arc::new(world(Policy::default()));
    w.channel.always(Script::Bound);
    w.uc.bind_card(&backend(), bind_cmd("eve", &visa(406), w.now()))
        .await
        .unwrap();
    let gate = w.wallets.hold_next_commit_of("eve");
    let erase = {
        let w = w.clone();
        tokio::spawn(async move { w.uc.erase_user(&admin(), &user("eve"), None).await })
    };
    until_called(&w.wallets.held).await;
    let erased = || {
        w.vault
            .erased
            .lock()
            .unwrap()
            .iter()
            .filter(|u| u.as_str() == "eve")
            .count()
    };
    assert_eq!(erased(), 1, "the key went before the change was stored");
    gate.add_permits(1);
    let done = erase.await.unwrap().unwrap();
    assert!(done.key_destroyed && done.unbound == 1, "{done:?}");
    assert_eq!(erased(), 1, "no key deleted once the change was stored");
}

/// An erasure records that it starts before it destroys the user's key:
/// a process that dies between the key's delete and the change that
/// unbinds the cards (here the erasure's task is dropped while that change
/// waits to be stored) leaves the cards bound with their data unreadable,
/// and that is on record in the service's chain, not in a log line alone.
/// Erasing again completes it.
#[tokio::test]
async fn an_erasure_that_stops_after_destroying_the_key_is_on_record() {
    use cardbind_ports::audit::AuditAction;
    let w = Arc::new(world(Policy::default()));
    w.channel.always(Script::Bound);
    let card =
        w.uc.bind_card(&backend(), bind_cmd("kit", &visa(410), w.now()))
            .await
            .unwrap()
            .binding;
    let recorded = || async {
        AuditLog::list(
            &w.store,
            &AuditFilter {
                user_id: Some(user("kit")),
                ..AuditFilter::default()
            },
            None,
            100,
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event.action)
        .filter(|a| matches!(a, AuditAction::UserErase | AuditAction::UserEraseStart))
        .collect::<Vec<_>>()
    };
    let _gate = w.wallets.hold_next_commit_of_before_storing("kit");
    let erase = {
        let w = w.clone();
        tokio::spawn(async move { w.uc.erase_user(&admin(), &user("kit"), None).await })
    };
    until_called(&w.wallets.held_before).await;
    assert!(
        w.vault
            .erased
            .lock()
            .unwrap()
            .iter()
            .any(|u| u.as_str() == "kit"),
        "the key went before the change"
    );
    erase.abort();
    assert!(erase.await.unwrap_err().is_cancelled());
    let kept = w.wallet("kit").await;
    assert_eq!(
        kept.get(&card.id).unwrap().status,
        BindingStatus::Active,
        "the change was not stored"
    );
    assert_eq!(recorded().await, vec![AuditAction::UserEraseStart]);
    let done = w.uc.erase_user(&admin(), &user("kit"), None).await.unwrap();
    assert_eq!(done.unbound, 1, "{done:?}");
    assert_eq!(
        recorded().await,
        vec![
            AuditAction::UserEraseStart,
            AuditAction::UserEraseStart,
            AuditAction::UserErase
        ]
    );
}

/// An erasure that stopped after destroying the key (its task dropped
/// while its change waits to be stored) is run again to its end by the
/// reconciliation, without the step-up it passed when it started; one
/// that finished, and a user never erased, are left alone.
#[tokio::test]
async fn the_reconciliation_finishes_an_erasure_that_stopped() {
    use cardbind_ports::audit::AuditAction;
    let w = Arc::new(world(Policy::default()));
    w.channel.always(Script::Bound);
    let mut cards = Vec::new();
    for (u, n) in [("fin", 411), ("fdn", 412), ("fkp", 413)] {
        cards.push(
            w.uc.bind_card(&backend(), bind_cmd(u, &visa(n), w.now()))
                .await
                .unwrap()
                .binding,
        );
    }
    w.uc.erase_user(&admin(), &user("fdn"), None).await.unwrap();
    let _gate = w.wallets.hold_next_commit_of_before_storing("fin");
    let erase = {
        let w = w.clone();
        tokio::spawn(async move { w.uc.erase_user(&admin(), &user("fin"), None).await })
    };
    until_called(&w.wallets.held_before).await;
    erase.abort();
    assert!(erase.await.unwrap_err().is_cancelled());
    assert_eq!(
        w.wallet("fin").await.get(&cards[0].id).unwrap().status,
        BindingStatus::Active
    );
    let report = w.uc.finish_erasures(0).await.unwrap();
    assert_eq!(
        (report.unfinished, report.finished, report.errors),
        (1, 1, 0),
        "{report:?}"
    );
    assert_eq!(
        w.wallet("fin").await.get(&cards[0].id).unwrap().status,
        BindingStatus::Inactive
    );
    assert_eq!(
        w.wallet("fkp").await.get(&cards[2].id).unwrap().status,
        BindingStatus::Active,
        "a user never erased is left alone"
    );
    let erased = AuditLog::list(
        &w.store,
        &AuditFilter {
            user_id: Some(user("fin")),
            action: Some(AuditAction::UserErase),
            ..AuditFilter::default()
        },
        None,
        10,
    )
    .await
    .unwrap();
    assert_eq!(erased.len(), 1);
    assert_eq!(erased[0].event.actor.subject, "reconcile");
    // Nothing left to finish: a second run does nothing.
    assert_eq!(
        w.uc.finish_erasures(0).await.unwrap(),
        cardbind_usecases::erase::ErasuresFinished::default()
    );
}

/// With step-up on, the reconciliation finishes an erasure that stopped
/// without a token: the erasure passed step-up before its start was
/// recorded. Erasing by hand still needs one.
#[tokio::test]
async fn the_reconciliation_finishes_an_erasure_without_asking_step_up_again() {
    use cardbind_ports::step_up::{StepUpAction, StepUpError, StepUpVerifier};
    struct Only(&'static str);
    #[async_trait::async_trait]
    impl StepUpVerifier for Only {
        async fn verify(
            &self,
            _: &cardbind_domain::UserId,
            _: StepUpAction,
            token: &str,
        ) -> Result<bool, StepUpError> {
            Ok(token == self.0)
        }
    }
    let w = Arc::new(world_with_step_up(Policy::default(), Arc::new(Only("ok"))));
    w.channel.always(Script::Bound);
    let card =
        w.uc.bind_card(&backend(), bind_cmd("fsu", &visa(414), w.now()))
            .await
            .unwrap()
            .binding;
    let refused =
        w.uc.erase_user(&admin(), &user("fsu"), None)
            .await
            .unwrap_err();
    assert_eq!(refused.code(), ErrorCode::StepUpRequired);
    let _gate = w.wallets.hold_next_commit_of_before_storing("fsu");
    let erase = {
        let w = w.clone();
        tokio::spawn(async move { w.uc.erase_user(&admin(), &user("fsu"), Some("ok")).await })
    };
    until_called(&w.wallets.held_before).await;
    erase.abort();
    assert!(erase.await.unwrap_err().is_cancelled());
    let report = w.uc.finish_erasures(0).await.unwrap();
    assert_eq!((report.finished, report.errors), (1, 0), "{report:?}");
    assert_eq!(
        w.wallet("fsu").await.get(&card.id).unwrap().status,
        BindingStatus::Inactive
    );
}

/// An erasure's start is in the service's chain and its `user.erase` in
/// the user's: their instants need not agree (an instance whose clock runs
/// ahead stamps the service's chain ahead, and every later link there).
/// A finished erasure is known by its id, not by time: the user who came
/// back after it is left alone (before, a start stamped after its own
/// `user.erase` read as unfinished, and the returning user's new card was
/// unbound and their new key destroyed).
#[tokio::test]
async fn a_finished_erasure_is_known_whatever_the_chains_instants() {
    use cardbind_ports::audit::{AuditAction, AuditActor, AuditEvent, Outcome};
    let w = world(Policy::default());
    w.channel.always(Script::Bound);
    w.uc.bind_card(&backend(), bind_cmd("skw", &visa(415), w.now()))
        .await
        .unwrap();
    let ahead = w.now().plus_seconds(60);
    let elsewhere = AuditEvent {
        at: ahead,
        actor: AuditActor::service("another instance"),
        action: AuditAction::ChannelMisconfigured,
        user_id: None,
        binding_id: None,
        outcome: Outcome::Ok,
        request_id: None,
        client_ip: None,
        detail: None,
    };
    AuditLog::append_system(&w.store, vec![elsewhere], ahead)
        .await
        .unwrap();
    w.uc.erase_user(&admin(), &user("skw"), None).await.unwrap();
    let back =
        w.uc.bind_card(&backend(), bind_cmd("skw", &visa(416), w.now()))
            .await
            .unwrap()
            .binding;
    assert_eq!(back.status, BindingStatus::Active);
    let report = w.uc.finish_erasures(0).await.unwrap();
    assert_eq!(report.unfinished, 0, "{report:?}");
    assert_eq!(
        w.wallet("skw").await.get(&back.id).unwrap().status,
        BindingStatus::Active
    );
}

/// An erasure cut off (its start, no `user.erase`), then the user erased
/// again by hand (a newer start, finished) and back with a new card: the
/// reconciliation, run while the newer start is younger than its age,
/// leaves the user alone (the cut-off erasure is not the user's newest,
/// and the newest is finished). Before, the age filtered the starts before
/// the newest was picked, the cut-off one counted as the newest, and the
/// returning user's card was unbound (black-box run).
#[tokio::test]
async fn an_erasure_run_again_by_hand_is_not_finished_a_second_time() {
    let w = Arc::new(world(Policy::default()));
    w.channel.always(Script::Bound);
    w.uc.bind_card(&backend(), bind_cmd("agn", &visa(419), w.now()))
        .await
        .unwrap();
    let _gate = w.wallets.hold_next_commit_of_before_storing("agn");
    let cut = {
        let w = w.clone();
        tokio::spawn(async move { w.uc.erase_user(&admin(), &user("agn"), None).await })
    };
    until_called(&w.wallets.held_before).await;
    cut.abort();
    assert!(cut.await.unwrap_err().is_cancelled());
    w.clock.advance(600);
    w.uc.erase_user(&admin(), &user("agn"), None).await.unwrap();
    let back =
        w.uc.bind_card(&backend(), bind_cmd("agn", &visa(420), w.now()))
            .await
            .unwrap()
            .binding;
    w.clock.advance(400);
    // The cut-off start is 1,000 s old, the hand-run one 400 s.
    let report = w.uc.finish_erasures(900).await.unwrap();
    assert_eq!(
        report,
        cardbind_usecases::erase::ErasuresFinished::default()
    );
    assert_eq!(
        w.wallet("agn").await.get(&back.id).unwrap().status,
        BindingStatus::Active
    );
    // Once the newest start is old enough too, it is found finished.
    w.clock.advance(600);
    let report = w.uc.finish_erasures(900).await.unwrap();
    assert_eq!(report.unfinished, 0, "{report:?}");
    assert_eq!(
        w.wallet("agn").await.get(&back.id).unwrap().status,
        BindingStatus::Active
    );
}

/// An erasure still running (its start recorded, its change not yet
/// stored) is not run a second time beside it: only starts older than the
/// reconciliation's age are looked at.
#[tokio::test]
async fn an_erasure_still_running_is_not_finished_beside_itself() {
    let w = Arc::new(world(Policy::default()));
    w.channel.always(Script::Bound);
    w.uc.bind_card(&backend(), bind_cmd("run", &visa(417), w.now()))
        .await
        .unwrap();
    let gate = w.wallets.hold_next_commit_of_before_storing("run");
    let erase = {
        let w = w.clone();
        tokio::spawn(async move { w.uc.erase_user(&admin(), &user("run"), None).await })
    };
    until_called(&w.wallets.held_before).await;
    let report = w.uc.finish_erasures(900).await.unwrap();
    assert_eq!(
        report,
        cardbind_usecases::erase::ErasuresFinished::default()
    );
    gate.add_permits(1);
    let done = erase.await.unwrap().unwrap();
    assert_eq!(done.unbound, 1, "the operator's erasure did the work");
    // Past the age, a finished erasure is still left alone.
    w.clock.advance(901);
    assert_eq!(
        w.uc.finish_erasures(900).await.unwrap(),
        cardbind_usecases::erase::ErasuresFinished::default()
    );
}

/// The erasure of a user whose wallet does not parse fails at every run;
/// running it again from the reconciliation writes no second start, so
/// the start ages out of the lookback instead of being renewed forever.
#[tokio::test]
async fn finishing_an_erasure_writes_no_second_start() {
    use cardbind_ports::audit::AuditAction;
    let w = world(Policy::default());
    w.channel.always(Script::Bound);
    w.uc.bind_card(&backend(), bind_cmd("zzb", &visa(418), w.now()))
        .await
        .unwrap();
    w.wallets.corrupt.lock().unwrap().replace(user("zzb"));
    w.uc.erase_user(&admin(), &user("zzb"), None)
        .await
        .unwrap_err();
    let starts = || async {
        AuditLog::list(
            &w.store,
            &AuditFilter {
                user_id: Some(user("zzb")),
                action: Some(AuditAction::UserEraseStart),
                ..AuditFilter::default()
            },
            None,
            10,
        )
        .await
        .unwrap()
        .len()
    };
    assert_eq!(starts().await, 1);
    for _ in 0..2 {
        let report = w.uc.finish_erasures(0).await.unwrap();
        assert_eq!((report.unfinished, report.errors), (1, 1), "{report:?}");
    }
    assert_eq!(starts().await, 1);
}

/// The service's chain refuses the record of an erasure's start (its
/// store does not answer): no agreement is ended at its channel, no key
/// destroyed and no card unbound, and the erasure answers that storage is
/// unavailable.
#[tokio::test]
async fn an_erasure_whose_start_is_not_recorded_destroys_nothing() {
    struct NoStartRecord;
    #[async_trait::async_trait]
    impl AuditTap for NoStartRecord {
        async fn append_system(
            &self,
            store: &cardbind_memory::MemoryStore,
            events: Vec<cardbind_ports::audit::AuditEvent>,
            now: cardbind_domain::Timestamp,
        ) -> Result<(), cardbind_ports::StoreError> {
            use cardbind_ports::audit::AuditAction;
            if events
                .iter()
                .any(|e| e.action == AuditAction::UserEraseStart)
            {
                return Err(cardbind_ports::StoreError::Unavailable(
                    "audit: store gone".into(),
                ));
            }
            store.append_system(events, now).await
        }
    }
    let (w, _) = world_tapped(Policy::default(), NoStartRecord);
    w.channel.always(Script::Bound);
    let card =
        w.uc.bind_card(&backend(), bind_cmd("lev", &visa(411), w.now()))
            .await
            .unwrap()
            .binding;
    let e =
        w.uc.erase_user(&admin(), &user("lev"), None)
            .await
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::StorageUnavailable, "{e}");
    assert!(
        w.vault.erased.lock().unwrap().is_empty(),
        "no key destroyed"
    );
    assert_eq!(
        w.channel.unbinds.load(Ordering::SeqCst),
        0,
        "no agreement ended at its channel"
    );
    assert_eq!(
        w.wallet("lev").await.get(&card.id).unwrap().status,
        BindingStatus::Active
    );
}

/// A bind that loses its race to an erasure seals the card again on the
/// wallet it reads then: what it sealed first may be under the key the
/// erasure destroyed (before, it stored what it had sealed first). A bind
/// of a user with a live card seals under the key the store holds.
#[tokio::test]
async fn a_bind_that_lost_its_race_to_an_erasure_seals_its_card_again() {
    let w = Arc::new(world(Policy::default()));
    w.channel.always(Script::Bound);
    let stored_seals = || w.vault.stored_seals.load(Ordering::SeqCst);
    for n in [407, 408] {
        w.uc.bind_card(&backend(), bind_cmd("ivy", &visa(n), w.now()))
            .await
            .unwrap();
    }
    assert_eq!(stored_seals(), 1, "the second card, under the stored key");
    // The third bind seals (held there), the erasure is stored meanwhile.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    w.vault
        .stored_seal_gate
        .lock()
        .unwrap()
        .replace(gate.clone());
    let bind = bind_in_background(&w, bind_cmd("ivy", &visa(409), w.now()));
    until_called(&w.vault.stored_seals).await;
    while stored_seals() < 2 {
        tokio::task::yield_now().await;
    }
    w.uc.erase_user(&admin(), &user("ivy"), None).await.unwrap();
    // Held once the bind's change is stored: it sealed again before it
    // (sealed after it, the card's data could be under a key made after
    // an erasure that comes then, which would outlive that erasure).
    let stored = w.wallets.hold_next_commit_of("ivy");
    gate.add_permits(1);
    until_called(&w.wallets.held).await;
    assert_eq!(stored_seals(), 3, "sealed again before the commit");
    stored.add_permits(1);
    let card = bind.await.unwrap().unwrap().binding;
    assert_eq!(card.status, BindingStatus::Active);
    assert_eq!(stored_seals(), 3, "and only then");
}

/// An unbind whose write lost a race (the wallet changed while the channel
/// ended the agreement) decides again, and does not end the same
/// agreement at the channel a second time.
#[tokio::test]
async fn an_unbind_that_lost_a_race_ends_its_agreement_once() {
    let w = world(unlimited());
    w.channel.always(Script::Bound);
    let card =
        w.uc.bind_card(&backend(), bind_cmd("uma", &visa(405), w.now()))
            .await
            .unwrap()
            .binding;
    assert!(card.channel_ref.is_some());
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    w.channel.unbind_gate.lock().unwrap().replace(gate.clone());
    let (uc, id) = (w.uc.clone(), card.id.clone());
    let unbind = tokio::spawn(async move { uc.unbind(&backend(), &user("uma"), &id, None).await });
    until_called(&w.channel.unbinds).await;
    // The wallet changes while the channel ends the agreement: the
    // unbind's write, checked against the wallet it read, loses.
    w.uc.bind_card(&backend(), bind_cmd("uma", &visa(406), w.now()))
        .await
        .unwrap();
    gate.add_permits(10);
    let v = unbind.await.unwrap().unwrap();
    assert_eq!(v.binding.status, BindingStatus::Inactive);
    assert_eq!(
        w.channel.unbinds.load(Ordering::SeqCst),
        1,
        "the agreement is ended once"
    );
}

/// A request that takes a bind over asks the channel under an attempt of
/// its own. The request it took over from, still running, gets its late
/// answer about an agreement nothing here waits on: that answer is not
/// written, its agreement is ended under the attempt that made it, and the
/// card keeps the answer of the request that took it over.
#[tokio::test]
async fn a_late_answer_to_a_bind_taken_over_is_ended_not_written() {
    let w = world(Policy::default());
    w.channel.always(Script::Redirect);
    let gate = w.channel.hold_starts();
    w.channel.starts_use_permits.store(true, Ordering::SeqCst);
    let keyed = |key: &str| {
        let mut c = bind_cmd("late", &visa(408), w.now());
        c.bind_key = Some(key.to_owned());
        c
    };
    let stopped = bind_in_background(&w, keyed("k-1"));
    until_called(&w.channel.starts).await;
    w.clock.advance(Policy::default().resume_after_seconds);
    let taking = bind_in_background(&w, keyed("k-2"));
    while w.channel.starts.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let started = w.channel.started.lock().unwrap().clone();
    assert_ne!(
        started[0], started[1],
        "each bind asks under its own attempt"
    );

    // The gate lets the first start through first (and only it): the late
    // answer.
    gate.add_permits(1);
    let _ = stopped.await.unwrap();
    assert_eq!(w.wallet("late").await.bindings()[0].channel_ref, None);
    assert_eq!(
        *w.channel.unbound.lock().unwrap(),
        vec![Some(started[0])],
        "the late answer's agreement is ended under its attempt"
    );
    gate.add_permits(1);
    let v = taking.await.unwrap().unwrap().binding;
    assert_eq!(v.status, BindingStatus::PendingVerification);
    assert_eq!(v.data_generation, started[1]);
    assert_eq!(
        v.channel_ref.as_deref(),
        Some(format!("ref-{}-2", v.id).as_str()),
        "the card holds the answer of the request that took it over"
    );
    assert_eq!(w.channel.unbound.lock().unwrap().len(), 1);
}

/// A code checked while the card is unbound: the unbind has ended the
/// agreement at the channel and not yet written the card, so the channel
/// answers that it waits for no code. That is the unbind, not an expired
/// code: `409`, and no failure is recorded; the unbind then ends the card.
/// An agreement the channel lost on its own still fails the card.
#[tokio::test]
async fn a_code_checked_while_the_card_is_unbound_is_a_conflict_not_an_expiry() {
    let w = world(unlimited());
    let (card, gate, otp) = waiting_for_its_code(&w, "yan", 550).await;
    gate.add_permits(10);
    let held = Arc::new(tokio::sync::Semaphore::new(0));
    w.channel.unbind_gate.lock().unwrap().replace(held.clone());
    let unbind = {
        let (uc, id) = (w.uc.clone(), card.id.clone());
        tokio::spawn(async move { uc.unbind(&backend(), &user("yan"), &id, None).await })
    };
    until_called(&w.channel.unbinds).await;
    // Ended at the channel, not yet written here.
    w.channel
        .query
        .lock()
        .unwrap()
        .insert(card.id.as_str().to_owned(), RemoteState::Terminated);
    let e = verify_code(&w, "yan", &card.id, otp.clone())
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Conflict, "{e:?}");
    assert_eq!(
        w.wallet("yan").await.get(&card.id).unwrap().status,
        BindingStatus::PendingVerification
    );
    held.add_permits(1);
    unbind.await.unwrap().unwrap();
    assert_eq!(
        w.wallet("yan").await.get(&card.id).unwrap().status,
        BindingStatus::Inactive
    );
    // No failure of the card in its history: pending, then inactive.
    let events = w
        .store
        .list(
            &AuditFilter {
                binding_id: Some(card.id.clone()),
                ..Default::default()
            },
            None,
            100,
        )
        .await
        .unwrap();
    let details: Vec<String> = events
        .iter()
        .map(|r| r.event.detail.clone().unwrap_or_default())
        .collect();
    assert!(
        details.iter().any(|d| d.contains("-> inactive")),
        "{details:#?}"
    );
    assert!(
        details.iter().all(|d| !d.contains("failed")),
        "{details:#?}"
    );

    // Lost by the channel on its own (not ended): the code expired there.
    let (lost, gate, otp) = waiting_for_its_code(&w, "yan", 551).await;
    gate.add_permits(10);
    w.channel
        .query
        .lock()
        .unwrap()
        .insert(lost.id.as_str().to_owned(), RemoteState::NotFound);
    let e = verify_code(&w, "yan", &lost.id, otp).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::VerificationExpired);
    assert_eq!(
        w.wallet("yan").await.get(&lost.id).unwrap().status,
        BindingStatus::Failed
    );
}

/// An approval and a signing naming one agreement for two cards at once:
/// the approval records it first (its change then held), and the signing
/// of the other card finds it a live card's, so that card goes to manual
/// review instead of becoming active on it (before, both cards ended
/// active on one agreement: the black-box run's finding).
#[tokio::test]
async fn an_approval_and_a_signing_naming_one_agreement_activate_one_card() {
    use cardbind_ports::store::{ChannelRefs, ReviewQueue};
    let w = Arc::new(world(unlimited()));
    w.channel
        .always(Script::Fail(cardbind_ports::ChannelError::CircuitOpen));
    let reviewed =
        w.uc.bind_card(&backend(), bind_cmd("ag1", &visa(433), w.now()))
            .await
            .unwrap()
            .binding;
    assert_eq!(reviewed.status, BindingStatus::PendingReview);
    w.channel.always(Script::Redirect);
    let signing =
        w.uc.bind_card(&backend(), bind_cmd("ag2", &visa(434), w.now()))
            .await
            .unwrap()
            .binding;
    assert_eq!(signing.status, BindingStatus::PendingVerification);
    let gate = w.wallets.hold_next_commit_of("ag1");
    let approval = {
        let (w, id) = (w.clone(), reviewed.id.clone());
        tokio::spawn(async move {
            w.uc.approve_review(&admin(), &id, Some("agr-78".into()))
                .await
        })
    };
    until_called(&w.wallets.held).await;
    let note = cardbind_ports::channel::Notification {
        headers: [("x-test-signed".to_owned(), "yes".to_owned())].into(),
        body: format!("s78|{}|signed:agr-78", signing.id).into_bytes(),
    };
    let mock = cardbind_domain::ChannelName::parse("mock").unwrap();
    w.uc.handle_notification(&mock, &note).await.unwrap();
    gate.add_permits(1);
    let approved = approval.await.unwrap().unwrap();
    assert_eq!(approved.binding.status, BindingStatus::Active);
    let other = w.wallet("ag2").await;
    let other = other.get(&signing.id).unwrap();
    assert_eq!(
        other.status,
        BindingStatus::PendingReview,
        "the signed card waits for an operator"
    );
    assert_ne!(other.channel_ref.as_deref(), Some("agr-78"));
    assert!(ReviewQueue::get(&w.store, &signing.id)
        .await
        .unwrap()
        .is_some());
    let holder = ChannelRefs::find(&w.store, &mock, "agr-78")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(holder.binding, reviewed.id);
    let detail = AuditLog::list(
        &w.store,
        &AuditFilter {
            binding_id: Some(signing.id.clone()),
            ..AuditFilter::default()
        },
        None,
        100,
    )
    .await
    .unwrap()
    .into_iter()
    .filter_map(|r| r.event.detail)
    .find(|d| d.contains("-> pending_review"));
    assert!(
        detail.is_some_and(|d| d.contains("another live card holds") && d.contains("agr-78")),
        "the audit log says why"
    );
}

/// Two approvals naming one channel reference at the same moment: one is
/// refused and the reference names the card approved (before, both passed
/// the check made before the change, both cards became active on one
/// agreement and the reference named the second: the first card's unbind
/// would never reach its agreement, the second's would end the first's).
#[tokio::test]
async fn of_two_approvals_naming_one_reference_at_once_one_is_refused() {
    use cardbind_ports::store::ChannelRefs;
    let w = Arc::new(world(unlimited()));
    w.channel
        .always(Script::Fail(cardbind_ports::ChannelError::CircuitOpen));
    let a =
        w.uc.bind_card(&backend(), bind_cmd("rv1", &visa(431), w.now()))
            .await
            .unwrap()
            .binding;
    let b =
        w.uc.bind_card(&backend(), bind_cmd("rv2", &visa(432), w.now()))
            .await
            .unwrap()
            .binding;
    assert_eq!(a.status, BindingStatus::PendingReview);
    // The first approval's change is stored; it is held before it goes on.
    let gate = w.wallets.hold_next_commit_of("rv1");
    let first = {
        let (w, id) = (w.clone(), a.id.clone());
        tokio::spawn(async move {
            w.uc.approve_review(&admin(), &id, Some("agr-77".into()))
                .await
        })
    };
    until_called(&w.wallets.held).await;
    let e =
        w.uc.approve_review(&admin(), &b.id, Some("agr-77".into()))
            .await
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Conflict);
    gate.add_permits(1);
    let approved = first.await.unwrap().unwrap();
    assert_eq!(approved.binding.status, BindingStatus::Active);
    assert_eq!(
        w.wallet("rv2").await.get(&b.id).unwrap().status,
        BindingStatus::PendingReview,
        "the second card is left in review"
    );
    let holder = ChannelRefs::find(&w.store, &a.channel, "agr-77")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(holder.binding, a.id);
}

/// An approval whose change is not stored keeps the reference it recorded
/// for its card while the card waits in review (another approval of the
/// card naming it may be storing its change: the next test), so another
/// card cannot be approved under it; approving the card again activates
/// it under its reference.
#[tokio::test]
async fn an_approval_that_failed_keeps_its_reference_while_the_card_waits() {
    use cardbind_ports::store::ChannelRefs;
    let w = world(unlimited());
    w.channel
        .always(Script::Fail(cardbind_ports::ChannelError::CircuitOpen));
    let a =
        w.uc.bind_card(&backend(), bind_cmd("rv3", &visa(433), w.now()))
            .await
            .unwrap()
            .binding;
    let b =
        w.uc.bind_card(&backend(), bind_cmd("rv4", &visa(434), w.now()))
            .await
            .unwrap()
            .binding;
    w.wallets.fail_commits.store(1, Ordering::SeqCst);
    let e =
        w.uc.approve_review(&admin(), &a.id, Some("agr-78".into()))
            .await
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::StorageUnavailable);
    assert_eq!(
        w.wallet("rv3").await.get(&a.id).unwrap().status,
        BindingStatus::PendingReview
    );
    let holder = || async {
        ChannelRefs::find(&w.store, &a.channel, "agr-78")
            .await
            .unwrap()
            .map(|t| t.binding)
    };
    assert_eq!(
        holder().await,
        Some(a.id.clone()),
        "kept for the waiting card"
    );
    let other =
        w.uc.approve_review(&admin(), &b.id, Some("agr-78".into()))
            .await
            .unwrap_err();
    assert_eq!(other.code(), ErrorCode::Conflict);
    let ok =
        w.uc.approve_review(&admin(), &a.id, Some("agr-78".into()))
            .await
            .unwrap();
    assert_eq!(ok.binding.status, BindingStatus::Active);
    assert_eq!(holder().await, Some(a.id.clone()));
}

/// Two approvals of one card naming one reference: the first's change is
/// held before it is stored while the second's fails. The second must not
/// let go of the reference the first then activates the card under
/// (before, the card was active with no record of its reference, and
/// another card could be approved under it: two active cards on one
/// agreement).
#[tokio::test]
async fn a_failed_approval_leaves_the_reference_its_twin_activates_the_card_under() {
    use cardbind_ports::store::ChannelRefs;
    let w = Arc::new(world(unlimited()));
    w.channel
        .always(Script::Fail(cardbind_ports::ChannelError::CircuitOpen));
    let a =
        w.uc.bind_card(&backend(), bind_cmd("rv5", &visa(435), w.now()))
            .await
            .unwrap()
            .binding;
    let b =
        w.uc.bind_card(&backend(), bind_cmd("rv6", &visa(436), w.now()))
            .await
            .unwrap()
            .binding;
    let gate = w.wallets.hold_next_commit_of_before_storing("rv5");
    let first = {
        let (w, id) = (w.clone(), a.id.clone());
        tokio::spawn(async move {
            w.uc.approve_review(&admin(), &id, Some("agr-79".into()))
                .await
        })
    };
    until_called(&w.wallets.held_before).await;
    w.wallets.fail_commits.store(1, Ordering::SeqCst);
    let e =
        w.uc.approve_review(&admin(), &a.id, Some("agr-79".into()))
            .await
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::StorageUnavailable);
    gate.add_permits(1);
    let ok = first.await.unwrap().unwrap();
    assert_eq!(ok.binding.status, BindingStatus::Active);
    assert_eq!(
        ChannelRefs::find(&w.store, &a.channel, "agr-79")
            .await
            .unwrap()
            .map(|t| t.binding),
        Some(a.id.clone())
    );
    let other =
        w.uc.approve_review(&admin(), &b.id, Some("agr-79".into()))
            .await
            .unwrap_err();
    assert_eq!(other.code(), ErrorCode::Conflict);
}

/// A signing delivered twice at once (the channel's retry of a slow
/// delivery): one delivery's change is held before it is stored while the
/// other's fails. The failed one must not let go of the agreement the
/// held one then activates the card under; the channel's resend of the
/// failed one is a duplicate by then, so nothing would record it again.
#[tokio::test]
async fn of_a_signing_delivered_twice_the_failed_delivery_leaves_the_agreement_recorded() {
    use cardbind_ports::channel::Notification;
    use cardbind_ports::store::ChannelRefs;
    let w = Arc::new(world(unlimited()));
    w.channel.always(Script::Redirect);
    let mock = cardbind_domain::ChannelName::parse("mock").unwrap();
    let card =
        w.uc.bind_card(&backend(), bind_cmd("rv7", &visa(437), w.now()))
            .await
            .unwrap()
            .binding;
    let signed = Notification {
        headers: [("x-test-signed".to_owned(), "yes".to_owned())].into(),
        body: format!("tw1|{}|signed:agr-80", card.id).into_bytes(),
    };
    let gate = w.wallets.hold_next_commit_of_before_storing("rv7");
    let held = {
        let (w, s, m) = (w.clone(), signed.clone(), mock.clone());
        tokio::spawn(async move { w.uc.handle_notification(&m, &s).await })
    };
    until_called(&w.wallets.held_before).await;
    w.wallets.fail_commits.store(1, Ordering::SeqCst);
    let e = w.uc.handle_notification(&mock, &signed).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::StorageUnavailable);
    gate.add_permits(1);
    held.await.unwrap().unwrap();
    w.uc.handle_notification(&mock, &signed).await.unwrap();
    let now = w.wallet("rv7").await.get(&card.id).unwrap().clone();
    assert_eq!(
        (now.status, now.channel_ref.as_deref()),
        (BindingStatus::Active, Some("agr-80"))
    );
    assert_eq!(
        ChannelRefs::find(&w.store, &mock, "agr-80")
            .await
            .unwrap()
            .map(|t| t.binding),
        Some(card.id.clone()),
        "the active card's agreement is recorded"
    );
    w.channel
        .always(Script::Fail(cardbind_ports::ChannelError::CircuitOpen));
    let other =
        w.uc.bind_card(&backend(), bind_cmd("rv8", &visa(438), w.now()))
            .await
            .unwrap()
            .binding;
    let refused =
        w.uc.approve_review(&admin(), &other.id, Some("agr-80".into()))
            .await
            .unwrap_err();
    assert_eq!(refused.code(), ErrorCode::Conflict);
}

/// A signing (in the older form, naming no bind) records its agreement for
/// the card as read, waiting in its first bind; before its change is
/// stored the card is unbound (which deletes that bind's references) and
/// bound again. The change, decided again on the new read, finds the card
/// waiting in a bind the agreement was not recorded for: it records it
/// first, on a new round, so the card activated under it is found by it
/// (before, the card was activated with no record of its agreement).
#[tokio::test]
async fn a_signing_that_meets_a_bind_again_records_its_agreement_for_the_new_bind() {
    use cardbind_ports::channel::Notification;
    use cardbind_ports::store::ChannelRefs;
    let w = Arc::new(world(unlimited()));
    w.channel.always(Script::Redirect);
    let mock = cardbind_domain::ChannelName::parse("mock").unwrap();
    let card =
        w.uc.bind_card(&backend(), bind_cmd("rb1", &visa(439), w.now()))
            .await
            .unwrap()
            .binding;
    let signed = Notification {
        headers: [("x-test-signed".to_owned(), "yes".to_owned())].into(),
        body: format!("rb|{}|signed:agr-81", card.id).into_bytes(),
    };
    let gate = w.wallets.hold_next_commit_of_before_storing("rb1");
    let signing = {
        let (w, s, m) = (w.clone(), signed.clone(), mock.clone());
        tokio::spawn(async move { w.uc.handle_notification(&m, &s).await })
    };
    until_called(&w.wallets.held_before).await;
    assert_eq!(
        ChannelRefs::find(&w.store, &mock, "agr-81")
            .await
            .unwrap()
            .map(|t| t.binding),
        Some(card.id.clone()),
        "recorded before the change"
    );
    w.uc.unbind(&backend(), &user("rb1"), &card.id, None)
        .await
        .unwrap();
    let again =
        w.uc.bind_card(&backend(), bind_cmd("rb1", &visa(439), w.now()))
            .await
            .unwrap()
            .binding;
    assert_eq!(again.id, card.id);
    assert_ne!(again.data_generation, card.data_generation);
    gate.add_permits(1);
    signing.await.unwrap().unwrap();
    let now = w.wallet("rb1").await.get(&card.id).unwrap().clone();
    assert_eq!(
        (now.status, now.channel_ref.as_deref()),
        (BindingStatus::Active, Some("agr-81"))
    );
    assert_eq!(
        ChannelRefs::find_entry(&w.store, &mock, "agr-81")
            .await
            .unwrap()
            .map(|e| (e.target.binding, e.generation)),
        Some((card.id.clone(), Some(now.data_generation))),
        "the agreement is recorded for the bind it activated"
    );
}

/// Binds `u`'s card `n` into review (its channel unreachable), starts
/// `change` of it from review (an approval, a retry) held before its
/// write is stored, and meanwhile unbinds the card and binds it again
/// into review. Returns the card as first bound, the card bound again,
/// the gate that releases the change, and the change.
async fn a_change_from_review_meets_its_card_bound_again<T, F>(
    w: &Arc<World>,
    u: &'static str,
    n: u32,
    change: impl FnOnce(Arc<World>, BindingId) -> F,
) -> (
    Binding,
    Binding,
    Arc<tokio::sync::Semaphore>,
    tokio::task::JoinHandle<T>,
)
where
    T: Send + 'static,
    F: std::future::Future<Output = T> + Send + 'static,
{
    w.channel
        .always(Script::Fail(cardbind_ports::ChannelError::CircuitOpen));
    let first =
        w.uc.bind_card(&backend(), bind_cmd(u, &visa(n), w.now()))
            .await
            .unwrap()
            .binding;
    assert_eq!(first.status, BindingStatus::PendingReview);
    let gate = w.wallets.hold_next_commit_of_before_storing(u);
    let held = tokio::spawn(change(w.clone(), first.id.clone()));
    until_called(&w.wallets.held_before).await;
    w.uc.unbind(&backend(), &user(u), &first.id, None)
        .await
        .unwrap();
    let again =
        w.uc.bind_card(&backend(), bind_cmd(u, &visa(n), w.now()))
            .await
            .unwrap()
            .binding;
    assert_eq!(
        (again.id.clone(), again.status),
        (first.id.clone(), BindingStatus::PendingReview)
    );
    assert_ne!(again.data_generation, first.data_generation);
    (first, again, gate, held)
}

/// An approval records its reference for the bind the operator reviewed;
/// when the card is unbound (which deletes that bind's references) and
/// bound again into review before the approval's change is stored, the
/// approval is refused (`409`: review it again) instead of activating the
/// new bind under a reference recorded for no bind (before, the card was
/// active with no record of its reference, and another card could be
/// approved under it).
#[tokio::test]
async fn an_approval_that_meets_its_card_bound_again_is_refused() {
    use cardbind_ports::store::ChannelRefs;
    let w = Arc::new(world(unlimited()));
    let (a, _, gate, approval) =
        a_change_from_review_meets_its_card_bound_again(&w, "rv9", 440, |w, id| async move {
            w.uc.approve_review(&admin(), &id, Some("agr-90".into()))
                .await
        })
        .await;
    gate.add_permits(1);
    let e = approval.await.unwrap().unwrap_err();
    assert_eq!(e.code(), ErrorCode::Conflict);
    assert_eq!(
        w.wallet("rv9").await.get(&a.id).unwrap().status,
        BindingStatus::PendingReview
    );
    assert_eq!(
        ChannelRefs::find(&w.store, &a.channel, "agr-90")
            .await
            .unwrap(),
        None
    );
    let ok =
        w.uc.approve_review(&admin(), &a.id, Some("agr-90".into()))
            .await
            .unwrap();
    assert_eq!(ok.binding.status, BindingStatus::Active);
    assert_eq!(
        ChannelRefs::find_entry(&w.store, &a.channel, "agr-90")
            .await
            .unwrap()
            .map(|e| (e.target.binding, e.generation)),
        Some((a.id.clone(), Some(ok.binding.data_generation)))
    );
}

/// A retry from review reads the card and opens its data, then stores the
/// card's return to verification; when the card is unbound and bound
/// again into review before that write, the retry is refused (`409`:
/// review it again) rather than sending the new bind back to its channel
/// with the earlier bind's data and attempt (whose answer the new bind
/// would then ignore, left waiting with its review entry gone).
#[tokio::test]
async fn a_review_retry_that_meets_its_card_bound_again_is_refused() {
    use cardbind_ports::store::ReviewQueue;
    let w = Arc::new(world(unlimited()));
    let (a, again, gate, retry) =
        a_change_from_review_meets_its_card_bound_again(&w, "rt9", 441, |w, id| async move {
            w.uc.retry_review(&admin(), &id).await
        })
        .await;
    // The channel is back: a retry sent on would bind.
    w.channel.always(Script::Bound);
    let starts = w.channel.starts.load(Ordering::SeqCst);
    gate.add_permits(1);
    let e = retry.await.unwrap().unwrap_err();
    assert_eq!(e.code(), ErrorCode::Conflict);
    assert_eq!(
        w.channel.starts.load(Ordering::SeqCst),
        starts,
        "no start sent"
    );
    assert_eq!(
        w.wallet("rt9").await.get(&a.id).unwrap().status,
        BindingStatus::PendingReview
    );
    assert!(ReviewQueue::get(&w.store, &a.id).await.unwrap().is_some());
    // Retried again, the new bind goes to its channel with its own data.
    let ok = w.uc.retry_review(&admin(), &a.id).await.unwrap();
    assert_eq!(ok.binding.status, BindingStatus::Active);
    assert_eq!(
        w.channel.started.lock().unwrap().last(),
        Some(&again.data_generation)
    );
}

/// A step-up refusal is written to the user's chain on its own; when
/// another write of that chain comes first, the refusal is still answered
/// `step_up_required` (not `409 conflict`, which asks for a retry) and
/// kept in the service's chain, naming the user. (Moving the default card
/// checks step-up once, outside the retried write; an erasure's check is
/// made again with it.)
#[tokio::test]
async fn a_step_up_refusal_that_loses_its_write_is_still_refused_and_audited() {
    use cardbind_ports::audit::{AuditAction, AuditFilter, AuditLog, Outcome};
    use cardbind_ports::step_up::{StepUpAction, StepUpError, StepUpVerifier};
    struct Never;
    #[async_trait::async_trait]
    impl StepUpVerifier for Never {
        async fn verify(
            &self,
            _: &cardbind_domain::UserId,
            _: StepUpAction,
            _: &str,
        ) -> Result<bool, StepUpError> {
            Ok(false)
        }
    }
    let w = Arc::new(world_with_step_up(unlimited(), Arc::new(Never)));
    w.channel.always(Script::Bound);
    let ctx = backend();
    let bind = |n: u32| w.uc.bind_card(&ctx, bind_cmd("sur", &visa(n), w.now()));
    let first = bind(415).await.unwrap().binding;
    let second = bind(416).await.unwrap().binding;
    let refusal = w.wallets.hold_next_commit_of_before_storing("sur");
    let move_default = {
        let (w, id) = (w.clone(), second.id.clone());
        tokio::spawn(async move { w.uc.set_default(&backend(), &user("sur"), &id, None).await })
    };
    until_called(&w.wallets.held_before).await;
    bind(417).await.unwrap();
    refusal.add_permits(1);
    let e = move_default.await.unwrap().unwrap_err();
    assert_eq!(e.code(), ErrorCode::StepUpRequired);
    let refusals = AuditLog::list(
        &w.store,
        &AuditFilter {
            action: Some(AuditAction::StepUpVerify),
            user_id: Some(user("sur")),
            ..AuditFilter::default()
        },
        None,
        10,
    )
    .await
    .unwrap();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_ne!(refusals[0].event.outcome, Outcome::Ok);
    assert_eq!(
        w.wallet("sur").await.default_pointer(),
        Some(&first.id),
        "the default stays"
    );
}

/// A channel that gives a card the same reference at every bind (the
/// mock): a late signing of an earlier bind arrives while the bind of the
/// card again has recorded that reference as its own and not yet written
/// its answer. The earlier bind's agreement is ended, but the record,
/// which is the new bind's now, stays: the new bind's notifications that
/// name only the reference still find the card.
#[tokio::test]
async fn a_late_signing_of_an_earlier_bind_leaves_the_reference_the_bind_again_recorded() {
    use cardbind_ports::store::{ChannelRefs, RefTarget};
    let w = world(unlimited());
    w.channel.always(Script::Otp);
    w.channel.same_ref.store(true, Ordering::SeqCst);
    let first =
        w.uc.bind_card(&backend(), bind_cmd("lsr", &visa(470), w.now()))
            .await
            .unwrap()
            .binding;
    let r = first.channel_ref.clone().unwrap();
    w.uc.unbind(&backend(), &user("lsr"), &first.id, None)
        .await
        .unwrap();
    // The bind again asks its channel; its answer's write is held before
    // it is stored, after the reference was recorded.
    let starts = w.channel.hold_starts();
    let again = bind_in_background(&w, bind_cmd("lsr", &visa(470), w.now()));
    while w.channel.starts.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let answer = w.wallets.hold_next_commit_of_before_storing("lsr");
    starts.add_permits(1);
    while w.wallets.held_before.load(Ordering::SeqCst) < 1 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let mock = cardbind_domain::ChannelName::parse("mock").unwrap();
    let recorded = ChannelRefs::find_entry(&w.store, &mock, &r)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(
        recorded.generation,
        Some(first.data_generation),
        "the bind again recorded it"
    );
    // The user signs the first bind's page now (the channel reports that
    // agreement active when asked).
    w.channel.query.lock().unwrap().insert(
        first.id.to_string(),
        cardbind_ports::channel::RemoteState::Active {
            channel_ref: r.clone(),
        },
    );
    let late = cardbind_ports::channel::Notification {
        headers: [("x-test-signed".to_owned(), "yes".to_owned())].into(),
        body: format!("lsr-1|{}|signed:{r}|{}", first.id, first.data_generation).into_bytes(),
    };
    let ended_before = w.channel.unbound.lock().unwrap().len();
    w.uc.handle_notification(&mock, &late).await.unwrap();
    assert_eq!(
        w.channel.unbound.lock().unwrap()[ended_before..],
        [Some(first.data_generation)],
        "the first bind's agreement is ended"
    );
    answer.add_permits(1);
    let card = again.await.unwrap().unwrap().binding;
    assert_eq!(card.status, BindingStatus::PendingVerification);
    assert_eq!(card.channel_ref.as_deref(), Some(r.as_str()));
    assert_eq!(
        ChannelRefs::find(&w.store, &mock, &r).await.unwrap(),
        Some(RefTarget {
            user: user("lsr"),
            binding: card.id.clone(),
        }),
        "the bind again's record stays"
    );
}

/// An unbind of a card in review whose clean-up runs after the card was
/// bound again into review leaves the new stint's queue entry: the
/// removal names the unbind's change, and the entry the bind again's
/// later one (before, it removed the entry by the card alone, and the
/// card waited in review seen by no operator until `reconcile`).
#[tokio::test]
async fn an_unbind_cleaning_up_late_leaves_the_review_entry_of_the_bind_again() {
    use cardbind_ports::store::ReviewQueue;
    let w = world(unlimited());
    w.channel
        .always(Script::Fail(cardbind_ports::ChannelError::CircuitOpen));
    let first =
        w.uc.bind_card(&backend(), bind_cmd("rvl", &visa(471), w.now()))
            .await
            .unwrap()
            .binding;
    assert_eq!(first.status, BindingStatus::PendingReview);
    let queued = ReviewQueue::get(&w.store, &first.id)
        .await
        .unwrap()
        .unwrap();
    // The unbind's change is stored; its clean-up waits.
    let gate = w.wallets.hold_next_commit_of("rvl");
    let unbind = {
        let uc = w.uc.clone();
        let id = first.id.clone();
        tokio::spawn(async move { uc.unbind(&backend(), &user("rvl"), &id, None).await })
    };
    while w.wallets.held.load(Ordering::SeqCst) < 1 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(
        w.wallet("rvl").await.get(&first.id).unwrap().status,
        BindingStatus::Inactive
    );
    // The card is bound again, and its channel is still out: review again.
    let again =
        w.uc.bind_card(&backend(), bind_cmd("rvl", &visa(471), w.now()))
            .await
            .unwrap()
            .binding;
    assert_eq!(again.id, first.id);
    assert_eq!(again.status, BindingStatus::PendingReview);
    let requeued = ReviewQueue::get(&w.store, &first.id)
        .await
        .unwrap()
        .unwrap();
    assert!(requeued.link > queued.link, "the new stint's entry");
    gate.add_permits(1);
    unbind.await.unwrap().unwrap();
    assert_eq!(
        ReviewQueue::get(&w.store, &first.id).await.unwrap(),
        Some(requeued),
        "the card in review keeps its entry"
    );
    let page = w.uc.list_reviews(&admin(), None, 10).await.unwrap();
    assert_eq!(
        page.cards
            .iter()
            .map(|c| (c.binding.id.clone(), c.binding.status))
            .collect::<Vec<_>>(),
        [(first.id.clone(), BindingStatus::PendingReview)]
    );
}

/// The channel's callback fails a card while its bind still waits for the
/// channel's answer: the bind answers that decline (`channel_rejected`,
/// with the channel's code), as it does when the answer itself declines
/// the card. It answered the card as it then was, `201 Created` of a
/// `failed` card, which the bind's idempotency record then replayed
/// (found by a read of the use cases, run over HTTP).
#[tokio::test]
async fn a_card_failed_by_a_callback_while_its_bind_waits_is_a_decline() {
    use cardbind_ports::channel::Notification;
    let w = world(unlimited());
    w.channel.always(Script::Otp);
    let gate = w.channel.hold_starts();
    let bind = bind_in_background(&w, bind_cmd("fcb", &visa(471), w.now()));
    until_called(&w.channel.starts).await;
    let id = w.wallet("fcb").await.bindings()[0].id.clone();
    let mock = cardbind_domain::ChannelName::parse("mock").unwrap();
    let note = Notification {
        headers: [("x-test-signed".to_owned(), "yes".to_owned())].into(),
        body: format!("f1|{id}|failed:card_declined").into_bytes(),
    };
    w.uc.handle_notification(&mock, &note).await.unwrap();
    assert_eq!(
        w.wallet("fcb").await.get(&id).unwrap().status,
        BindingStatus::Failed
    );
    gate.add_permits(1);
    let e = bind.await.unwrap().unwrap_err();
    assert_eq!(e.code(), ErrorCode::ChannelRejected, "{e}");
    let card = w.wallet("fcb").await.get(&id).unwrap().clone();
    assert_eq!(
        (
            card.status,
            card.failure.as_ref().map(|f| f.as_str().to_owned())
        ),
        (BindingStatus::Failed, Some("card_declined".to_owned())),
        "the card stays as the callback left it"
    );
}
