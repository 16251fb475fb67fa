//! # Contract suite for storage adapters
//!
//! One set of checks, written once, that every adapter of the storage ports
//! ([`crate::store`] and [`crate::audit::AuditLog`]) must pass, so that the
//! in-memory fake cannot drift from MongoDB (or the other way round).
//!
//! ## Plugging an adapter in
//! 1. Give the adapter's crate a dev-dependency on
//!    `cardbind-ports = { workspace = true, features = ["testkit"] }` and on
//!    `tokio` (the generated tests are `#[tokio::test]`s).
//! 2. Write a [`StoreFactory`]: anything whose `fresh()` returns the ports
//!    as [`Stores`]. A closure returning a future is one:
//!    ```ignore
//!    // adapters/memory/tests/contract.rs
//!    use cardbind_ports::testkit::Stores;
//!    cardbind_ports::contract_suite!(|| async { Stores::all_in_one(cardbind_memory::MemoryStore::new()) });
//!    ```
//!    or a type of your own:
//!    ```ignore
//!    struct Mongo;
//!    #[async_trait::async_trait]
//!    impl cardbind_ports::testkit::StoreFactory for Mongo {
//!        async fn fresh(&self) -> Stores {
//!            // e.g. a new database per call on a server started once
//!        }
//!    }
//!    cardbind_ports::contract_suite!(Mongo);
//!    ```
//! 3. [`contract_suite!`](crate::contract_suite) expands to one named
//!    `#[tokio::test]` per check in [`checks`] (`bindings_insert_and_get`,
//!    `audit_concurrent_appends_one_chain`, …), each on a multi-threaded
//!    runtime so that the concurrency checks really race. Attributes given
//!    before the factory are put on every test:
//!    `contract_suite!(#[ignore = "needs FerretDB"] Mongo);`. The factory
//!    expression is evaluated once per test.
//!
//! ## Isolation: what `fresh()` must give
//! * The **audit log** of every `fresh()` call MUST be empty: the audit
//!   checks number the chain from 1. A new database (or audit collection)
//!   per call is the simple way.
//! * The other stores MAY share data with other calls, and with checks
//!   running at the same time: every check uses its own unique user ids,
//!   keys, owners and id prefixes (see [`unique`]), reads global listings
//!   only inside its own id range, and is the only check that writes
//!   instants before [`BASE`] into its store (so that purges delete only
//!   its own old records and their counts are exact).
//!
//! ## Easy to miss
//! Rules stated in the port docs that adapters tend to get wrong: `limit` 0
//! returns nothing (MongoDB's `limit(0)` means "no limit"); a record
//! expiring at `t` is alive at `t`, and purges delete only instants strictly
//! before the one given; audit filters take `since` inclusive and `until`
//! exclusive; audit numbering goes on after a purge, even one that emptied
//! the log. The checks never probe instant boundaries exactly.

// Test support: a failed check is a panic with a message, as in any test.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use cardbind_domain::{
    Binding, BindingId, BindingParts, CardBrand, CardSummary, ChannelName, Expiry, Fingerprint,
    SealedBlob, SealedCard, Timestamp, UserId, VerificationPolicy,
};

use crate::audit::{AuditEvent, AuditLog};
use crate::store::{
    BindingStore, Consent, ConsentLog, DataKeyStore, IdempotencyStore, RateCounter, SeenIds,
    WrappedKey,
};

/// The ports one adapter provides, as the composition root would hold them.
#[derive(Clone)]
pub struct Stores {
    pub bindings: Arc<dyn BindingStore>,
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub rates: Arc<dyn RateCounter>,
    pub consents: Arc<dyn ConsentLog>,
    pub seen: Arc<dyn SeenIds>,
    pub data_keys: Arc<dyn DataKeyStore>,
    pub audit: Arc<dyn AuditLog>,
}

impl Stores {
    /// Every port from one value that implements them all.
    pub fn all_in_one<S>(store: S) -> Stores
    where
        S: BindingStore
            + IdempotencyStore
            + RateCounter
            + ConsentLog
            + SeenIds
            + DataKeyStore
            + AuditLog
            + 'static,
    {
        let s = Arc::new(store);
        Stores {
            bindings: s.clone(),
            idempotency: s.clone(),
            rates: s.clone(),
            consents: s.clone(),
            seen: s.clone(),
            data_keys: s.clone(),
            audit: s,
        }
    }
}

/// Makes the stores one check runs on. See the module docs for the
/// isolation `fresh()` must give.
#[async_trait]
pub trait StoreFactory: Send + Sync {
    async fn fresh(&self) -> Stores;
}

#[async_trait]
impl<F, Fut> StoreFactory for F
where
    F: Fn() -> Fut + Send + Sync,
    Fut: Future<Output = Stores> + Send,
{
    async fn fresh(&self) -> Stores {
        self().await
    }
}

/// Expands to one `#[tokio::test]` per contract check, each calling the
/// check of the same name in [`testkit::checks`](crate::testkit::checks)
/// with the factory. Usage: `contract_suite!(factory)` or
/// `contract_suite!(#[ignore] factory)`; see the [module docs](crate::testkit).
#[macro_export]
macro_rules! contract_suite {
    ($(#[$attr:meta])* $factory:expr $(,)?) => {
        $crate::__contract_tests! { {$(#[$attr])*} $factory;
            bindings_insert_and_get,
            bindings_round_trip_every_field,
            bindings_update_with_expected_version,
            bindings_stale_update_conflicts,
            bindings_update_of_missing_record_conflicts,
            bindings_same_card_is_duplicate_in_any_status,
            bindings_same_id_is_duplicate,
            bindings_concurrent_inserts_of_one_card_one_wins,
            bindings_concurrent_updates_one_wins,
            bindings_list_by_user_paginates,
            bindings_find_by_fingerprint,
            bindings_find_by_channel_ref,
            bindings_list_by_status,
            default_pointer_compare_and_set,
            default_pointer_concurrent_one_wins,
            idempotency_concurrent_claims_one_acquires,
            idempotency_completed_replays_bytes,
            idempotency_other_request_mismatch,
            idempotency_scoped_by_caller,
            idempotency_release_frees_key,
            idempotency_expired_lease_taken_over,
            idempotency_purge_created_before,
            rate_concurrent_increments_distinct,
            rate_keys_independent,
            rate_purge_expired,
            consents_record_and_list,
            consents_duplicate_id,
            consents_revoke_and_agreement,
            consents_paginate,
            seen_mark_and_seen,
            seen_concurrent_mark_one_true,
            seen_expiry,
            seen_purge_expired,
            data_keys_put_if_absent_keeps_first,
            data_keys_concurrent_put_if_absent_one_key,
            data_keys_replace_compare_and_set,
            data_keys_delete,
            data_keys_list_paginates,
            audit_first_event_links_to_genesis,
            audit_round_trip_every_field,
            audit_concurrent_appends_one_chain,
            audit_list_filters_and_pages,
            audit_purge_before,
        }
    };
}

/// Implementation detail of [`contract_suite!`]: emits the tests one by one.
#[doc(hidden)]
#[macro_export]
macro_rules! __contract_tests {
    ({$(#[$attr:meta])*} $factory:expr; $(,)?) => {};
    ({$(#[$attr:meta])*} $factory:expr; $name:ident $(, $rest:ident)* $(,)?) => {
        #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
        $(#[$attr])*
        async fn $name() {
            let factory = $factory;
            $crate::testkit::checks::$name(&factory).await;
        }
        $crate::__contract_tests! { {$(#[$attr])*} $factory; $($rest),* }
    };
}

// ---- test data --------------------------------------------------------------

/// 2030-01-01T00:00:00Z. Checks write instants at or after it, except a
/// purge check, which alone writes instants before it into its store.
pub const BASE: Timestamp = Timestamp::from_unix_millis(1_893_456_000_000);

fn run_tag() -> u64 {
    static TAG: OnceLock<u64> = OnceLock::new();
    *TAG.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        nanos ^ (u64::from(std::process::id()) << 44)
    })
}

fn next_n() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A name no other call returns, in this process or (with overwhelming
/// odds) another: `{prefix}-{run}-{n}`, made of characters every id type
/// accepts. Group members are `{unique}.{k:02}`, which sort by `k` and
/// together (a listing after `{unique}.` starts with them).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:x}-{}", run_tag(), next_n())
}

pub fn user_id(s: &str) -> UserId {
    UserId::parse(s).expect("valid user id")
}

pub fn binding_id(s: &str) -> BindingId {
    BindingId::parse(s).expect("valid binding id")
}

pub fn channel(s: &str) -> ChannelName {
    ChannelName::parse(s).expect("valid channel name")
}

/// A fingerprint no other call returns.
pub fn fingerprint() -> Fingerprint {
    Fingerprint::new(1, format!("{:016x}{:016x}", run_tag(), next_n()))
}

/// A new `pending_verification` binding, as the service reserves it.
pub fn binding(id: &str, user: &UserId, fingerprint: &Fingerprint, now: Timestamp) -> Binding {
    let blob = |tag: u8| SealedBlob::new(vec![tag, 0, 0xff, 0x80, 7, tag]);
    Binding::reserve(
        binding_id(id),
        user.clone(),
        fingerprint.clone(),
        CardSummary {
            brand: CardBrand::Visa,
            bin: "411111".to_owned(),
            last4: "1111".to_owned(),
            expiry: Expiry::restore(12, 2031).expect("valid expiry"),
        },
        SealedCard {
            pan: blob(1),
            holder_name: blob(2),
            id_number: blob(3),
            phone: blob(4),
        },
        channel("mock"),
        now,
        &VerificationPolicy::default(),
    )
}

/// `b` changed by `f`, with its version bumped as the service does before
/// a conditional update.
pub fn changed(b: &Binding, f: impl FnOnce(&mut BindingParts)) -> Binding {
    let mut p = b.clone().into_parts();
    f(&mut p);
    p.version += 1;
    Binding::restore(p)
}

pub fn consent(id: &str, binding: &BindingId, user: &UserId, at: Timestamp) -> Consent {
    Consent {
        id: id.to_owned(),
        binding_id: binding.clone(),
        user_id: user.clone(),
        text_version: "2025-01".to_owned(),
        text_hash: "ab".repeat(32),
        accepted_at: at,
        ip: Some("203.0.113.7".to_owned()),
        user_agent: Some("tests/1.0".to_owned()),
        channel: channel("mock"),
        agreement_id: None,
        revoked_at: None,
        revoked_by: None,
    }
}

pub fn wrapped_key(owner: &str, wrapped: &[u8], version: u64) -> WrappedKey {
    WrappedKey {
        owner: owner.to_owned(),
        master_key_id: "local:test".to_owned(),
        wrapped: wrapped.to_vec(),
        version,
        created_at: BASE,
    }
}

pub fn audit_event(actor: &str, action: &str, at: Timestamp) -> AuditEvent {
    AuditEvent {
        at,
        actor: actor.to_owned(),
        role: "service".to_owned(),
        action: action.to_owned(),
        outcome: "ok".to_owned(),
        ..AuditEvent::default()
    }
}

/// Runs `n` futures made by `make` as separate tasks that all start at
/// once (behind a barrier), and returns their outputs in index order.
pub async fn race<T, Fut>(n: usize, make: impl Fn(usize) -> Fut) -> Vec<T>
where
    T: Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let barrier = barrier.clone();
        let fut = make(i);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            fut.await
        }));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.expect("a racing task panicked"));
    }
    out
}

pub mod checks {
    //! The contract checks, one `async fn` per rule, each taking the
    //! factory. [`contract_suite!`](crate::contract_suite) turns each into a
    //! test of the same name.

    use std::collections::BTreeSet;

    use cardbind_domain::binding::StartOutcome;
    use cardbind_domain::{BindingStatus, NextAction, Timestamp};

    use super::*;
    use crate::audit::{verify_chain, AuditFilter, AuditRecord, GENESIS_HASH};
    use crate::error::StoreError;
    use crate::store::{Claim, StoredResponse};

    fn ids(bs: &[Binding]) -> Vec<String> {
        bs.iter().map(|b| b.id.as_str().to_owned()).collect()
    }

    fn at(seconds: i64) -> Timestamp {
        BASE.plus_seconds(seconds)
    }

    // ---- BindingStore ---------------------------------------------------

    pub async fn bindings_insert_and_get<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let user = user_id(&unique("u"));
        let b = binding(&unique("b"), &user, &fingerprint(), at(0));
        s.bindings.insert(&b).await.expect("insert");
        assert_eq!(s.bindings.get(&b.id).await.expect("get"), Some(b.clone()));
        let missing = binding_id(&unique("missing"));
        assert_eq!(s.bindings.get(&missing).await.expect("get missing"), None);
    }

    pub async fn bindings_round_trip_every_field<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let user = user_id(&unique("u"));
        let actions = [
            Some(NextAction::Otp {
                phone_hint: "+86****8000".to_owned(),
            }),
            Some(NextAction::Redirect {
                url: "https://example.test/sign?a=1&b=%20".to_owned(),
            }),
            None,
        ];
        for (i, action) in actions.into_iter().enumerate() {
            let base = binding(&unique("b"), &user, &fingerprint(), at(1));
            let mut p = base.into_parts();
            p.card = CardSummary {
                brand: CardBrand::UnionPay,
                bin: "62258800".to_owned(),
                last4: "0004".to_owned(),
                expiry: Expiry::restore(1, 2040).expect("valid expiry"),
            };
            p.sealed.pan = SealedBlob::new((0..=255).collect());
            p.sealed.phone = SealedBlob::new(Vec::new());
            p.channel = channel("alipay");
            p.channel_ref = Some(format!("agreement-{i}"));
            p.next_action = action;
            p.status = BindingStatus::ALL[i * 2 % BindingStatus::ALL.len()];
            p.failure_code = Some("channel_rejected".to_owned());
            p.otp_attempts = 3;
            p.verification_expires_at =
                Some(Timestamp::from_unix_millis(BASE.unix_millis() + 123_457));
            p.version = 41;
            p.created_at = Timestamp::from_unix_millis(BASE.unix_millis() + 1);
            p.updated_at = Timestamp::from_unix_millis(BASE.unix_millis() + 999);
            p.activated_at = Some(Timestamp::from_unix_millis(BASE.unix_millis() + 500));
            let b = Binding::restore(p);
            s.bindings.insert(&b).await.expect("insert");
            assert_eq!(s.bindings.get(&b.id).await.expect("get"), Some(b.clone()));
            let mut q = b.clone().into_parts();
            q.channel_ref = None;
            q.failure_code = None;
            q.verification_expires_at = None;
            q.activated_at = None;
            q.next_action = None;
            q.version = 42;
            let b2 = Binding::restore(q);
            s.bindings.update(&b2, 41).await.expect("update");
            assert_eq!(s.bindings.get(&b.id).await.expect("get"), Some(b2));
        }
    }

    pub async fn bindings_update_with_expected_version<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let user = user_id(&unique("u"));
        let mut b = binding(&unique("b"), &user, &fingerprint(), at(0));
        s.bindings.insert(&b).await.expect("insert");
        let expected = b.version;
        b.apply_start(
            StartOutcome::ActionRequired {
                channel_ref: unique("ref"),
                action: NextAction::Otp {
                    phone_hint: "+86****8000".to_owned(),
                },
            },
            at(1),
        )
        .expect("domain transition");
        s.bindings.update(&b, expected).await.expect("update");
        assert_eq!(s.bindings.get(&b.id).await.expect("get"), Some(b.clone()));
        let expected = b.version;
        b.activate(None, at(2)).expect("domain transition");
        s.bindings
            .update(&b, expected)
            .await
            .expect("second update");
        let stored = s.bindings.get(&b.id).await.expect("get").expect("stored");
        assert_eq!(stored.status, BindingStatus::Active);
        assert_eq!(stored, b);
    }

    pub async fn bindings_stale_update_conflicts<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let user = user_id(&unique("u"));
        let b0 = binding(&unique("b"), &user, &fingerprint(), at(0));
        s.bindings.insert(&b0).await.expect("insert");
        let b1 = changed(&b0, |p| p.otp_attempts = 1);
        s.bindings.update(&b1, b0.version).await.expect("update");
        // A writer still holding version 0 loses.
        let stale = changed(&b0, |p| p.otp_attempts = 9);
        assert_eq!(
            s.bindings.update(&stale, b0.version).await,
            Err(StoreError::Conflict)
        );
        // A version from the future loses too.
        let ahead = changed(&b1, |p| p.otp_attempts = 9);
        assert_eq!(
            s.bindings.update(&ahead, b1.version + 5).await,
            Err(StoreError::Conflict)
        );
        assert_eq!(s.bindings.get(&b0.id).await.expect("get"), Some(b1));
    }

    pub async fn bindings_update_of_missing_record_conflicts<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let user = user_id(&unique("u"));
        let b = binding(&unique("b"), &user, &fingerprint(), at(0));
        let b1 = changed(&b, |_| {});
        assert_eq!(
            s.bindings.update(&b1, b.version).await,
            Err(StoreError::Conflict)
        );
        assert_eq!(s.bindings.get(&b.id).await.expect("get"), None, "no upsert");
    }

    pub async fn bindings_same_card_is_duplicate_in_any_status<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let user = user_id(&unique("u"));
        let fp = fingerprint();
        let first = binding(&unique("b"), &user, &fp, at(0));
        s.bindings.insert(&first).await.expect("insert");
        let mut current = first.clone();
        for status in [
            BindingStatus::PendingVerification,
            BindingStatus::Failed,
            BindingStatus::Inactive,
            BindingStatus::Active,
            BindingStatus::Frozen,
            BindingStatus::PendingReview,
        ] {
            if current.status != status {
                let next = changed(&current, |p| p.status = status);
                s.bindings
                    .update(&next, current.version)
                    .await
                    .expect("update status");
                current = next;
            }
            let again = binding(&unique("b"), &user, &fp, at(1));
            assert_eq!(
                s.bindings.insert(&again).await,
                Err(StoreError::Duplicate),
                "same (user, card) while {status}"
            );
            assert_eq!(s.bindings.get(&again.id).await.expect("get"), None);
        }
        // The same card for another user, and another card for this user.
        let other_user = user_id(&unique("u"));
        s.bindings
            .insert(&binding(&unique("b"), &other_user, &fp, at(2)))
            .await
            .expect("same card, other user");
        s.bindings
            .insert(&binding(&unique("b"), &user, &fingerprint(), at(2)))
            .await
            .expect("other card, same user");
        let found = s
            .bindings
            .find_by_fingerprint(&user, &fp)
            .await
            .expect("find");
        assert_eq!(found.map(|b| b.id.clone()), Some(first.id.clone()));
    }

    pub async fn bindings_same_id_is_duplicate<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let id = unique("b");
        let user = user_id(&unique("u"));
        let b = binding(&id, &user, &fingerprint(), at(0));
        s.bindings.insert(&b).await.expect("insert");
        let other_user = user_id(&unique("u"));
        let same_id = binding(&id, &other_user, &fingerprint(), at(1));
        assert_eq!(
            s.bindings.insert(&same_id).await,
            Err(StoreError::Duplicate)
        );
        assert_eq!(s.bindings.get(&b.id).await.expect("get"), Some(b));
        let listed = s
            .bindings
            .list_by_user(&other_user, None, 10)
            .await
            .expect("list");
        assert!(listed.is_empty(), "the refused insert left a record");
    }

    pub async fn bindings_concurrent_inserts_of_one_card_one_wins<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let user = user_id(&unique("u"));
        let fp = fingerprint();
        let group = unique("b");
        let results = race(32, |i| {
            let store = s.bindings.clone();
            let b = binding(&format!("{group}.{i:02}"), &user, &fp, at(0));
            async move { (b.id.clone(), store.insert(&b).await) }
        })
        .await;
        let winners: Vec<_> = results.iter().filter(|(_, r)| r.is_ok()).collect();
        assert_eq!(winners.len(), 1, "exactly one insert wins: {results:?}");
        for (_, r) in &results {
            assert!(
                matches!(r, Ok(()) | Err(StoreError::Duplicate)),
                "losers get Duplicate, got {r:?}"
            );
        }
        let listed = s
            .bindings
            .list_by_user(&user, None, 100)
            .await
            .expect("list");
        assert_eq!(listed.len(), 1, "one record");
        assert_eq!(listed[0].id, winners[0].0);
    }

    pub async fn bindings_concurrent_updates_one_wins<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let user = user_id(&unique("u"));
        let b0 = binding(&unique("b"), &user, &fingerprint(), at(0));
        s.bindings.insert(&b0).await.expect("insert");
        let results = race(16, |i| {
            let store = s.bindings.clone();
            let b = changed(&b0, |p| p.otp_attempts = i as u32 + 1);
            let expected = b0.version;
            async move { (b.clone(), store.update(&b, expected).await) }
        })
        .await;
        let winners: Vec<_> = results.iter().filter(|(_, r)| r.is_ok()).collect();
        assert_eq!(winners.len(), 1, "exactly one update wins");
        for (_, r) in &results {
            assert!(matches!(r, Ok(()) | Err(StoreError::Conflict)), "{r:?}");
        }
        let stored = s.bindings.get(&b0.id).await.expect("get");
        assert_eq!(stored.as_ref(), Some(&winners[0].0), "the winner is stored");
    }

    pub async fn bindings_list_by_user_paginates<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let user = user_id(&unique("u"));
        let other = user_id(&unique("u"));
        let group = unique("b");
        // Inserted out of order; listed by id.
        for k in [4, 0, 6, 2, 5, 1, 3] {
            let b = binding(&format!("{group}.{k:02}"), &user, &fingerprint(), at(k));
            s.bindings.insert(&b).await.expect("insert");
        }
        s.bindings
            .insert(&binding(&unique("b"), &other, &fingerprint(), at(0)))
            .await
            .expect("insert other user's");
        let want: Vec<String> = (0..7).map(|k| format!("{group}.{k:02}")).collect();

        let all = s
            .bindings
            .list_by_user(&user, None, 100)
            .await
            .expect("list");
        assert_eq!(ids(&all), want);
        assert!(all.iter().all(|b| b.user_id == user));

        let mut got = Vec::new();
        let mut after = None;
        let mut pages = 0;
        loop {
            let page = s
                .bindings
                .list_by_user(&user, after.clone(), 3)
                .await
                .expect("page");
            assert!(page.len() <= 3, "at most limit");
            pages += 1;
            got.extend(ids(&page));
            match page.last() {
                Some(last) if page.len() == 3 => after = Some(last.id.clone()),
                _ => break,
            }
        }
        assert_eq!(got, want, "pages in order, nothing twice or missing");
        assert_eq!(pages, 3);

        let after_two = s
            .bindings
            .list_by_user(&user, Some(binding_id(&want[2])), 2)
            .await
            .expect("after");
        assert_eq!(ids(&after_two), want[3..5].to_vec());
        let after_last = s
            .bindings
            .list_by_user(&user, Some(binding_id(&want[6])), 10)
            .await
            .expect("after last");
        assert!(after_last.is_empty());
        let zero = s
            .bindings
            .list_by_user(&user, None, 0)
            .await
            .expect("limit 0");
        assert!(zero.is_empty(), "limit 0 returns nothing");
        let nobody = user_id(&unique("u"));
        assert!(s
            .bindings
            .list_by_user(&nobody, None, 10)
            .await
            .expect("nobody")
            .is_empty());
    }

    pub async fn bindings_find_by_fingerprint<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let user = user_id(&unique("u"));
        let fp = fingerprint();
        let b = binding(&unique("b"), &user, &fp, at(0));
        s.bindings.insert(&b).await.expect("insert");
        let found = s
            .bindings
            .find_by_fingerprint(&user, &fp)
            .await
            .expect("find");
        assert_eq!(found, Some(b.clone()));
        // Found in any status.
        let failed = changed(&b, |p| p.status = BindingStatus::Failed);
        s.bindings.update(&failed, b.version).await.expect("update");
        let found = s
            .bindings
            .find_by_fingerprint(&user, &fp)
            .await
            .expect("find");
        assert_eq!(found, Some(failed));
        let other = user_id(&unique("u"));
        assert_eq!(
            s.bindings
                .find_by_fingerprint(&other, &fp)
                .await
                .expect("find"),
            None,
            "another user's card is not found"
        );
        assert_eq!(
            s.bindings
                .find_by_fingerprint(&user, &fingerprint())
                .await
                .expect("find"),
            None
        );
        // The same hex under another fingerprint key version is another card.
        let v2 = Fingerprint::parse(&fp.to_string().replacen("v1:", "v2:", 1)).expect("fp");
        assert_eq!(
            s.bindings
                .find_by_fingerprint(&user, &v2)
                .await
                .expect("find"),
            None
        );
    }

    pub async fn bindings_find_by_channel_ref<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let user = user_id(&unique("u"));
        let r = unique("agreement");
        let mut b = binding(&unique("b"), &user, &fingerprint(), at(0));
        s.bindings.insert(&b).await.expect("insert");
        assert_eq!(
            s.bindings
                .find_by_channel_ref(&channel("mock"), &r)
                .await
                .expect("find"),
            None
        );
        let expected = b.version;
        b.apply_start(
            StartOutcome::Bound {
                channel_ref: r.clone(),
            },
            at(1),
        )
        .expect("domain transition");
        s.bindings.update(&b, expected).await.expect("update");
        // Another binding on the same channel with another reference.
        let mut c = binding(&unique("b"), &user, &fingerprint(), at(0));
        s.bindings.insert(&c).await.expect("insert");
        let expected = c.version;
        c.apply_start(
            StartOutcome::Bound {
                channel_ref: unique("agreement"),
            },
            at(1),
        )
        .expect("domain transition");
        s.bindings.update(&c, expected).await.expect("update");

        let found = s
            .bindings
            .find_by_channel_ref(&channel("mock"), &r)
            .await
            .expect("find");
        assert_eq!(found, Some(b));
        assert_eq!(
            s.bindings
                .find_by_channel_ref(&channel("alipay"), &r)
                .await
                .expect("find"),
            None,
            "the reference is per channel"
        );
    }

    pub async fn bindings_list_by_status<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let user = user_id(&unique("u"));
        let group = unique("b");
        // k: status, updated_at. Instants before BASE: no purge of bindings
        // exists, so they are safe to use here.
        let plan = [
            (0, BindingStatus::PendingReview, -300),
            (1, BindingStatus::PendingVerification, -300),
            (2, BindingStatus::PendingReview, 100),
            (3, BindingStatus::PendingReview, -200),
            (4, BindingStatus::Active, -300),
            (5, BindingStatus::PendingReview, -100),
            (6, BindingStatus::PendingReview, 200),
        ];
        for (k, status, updated) in plan {
            let mut p =
                binding(&format!("{group}.{k:02}"), &user, &fingerprint(), at(-400)).into_parts();
            p.status = status;
            p.updated_at = at(updated);
            s.bindings
                .insert(&Binding::restore(p))
                .await
                .expect("insert");
        }
        let name = |k: i32| format!("{group}.{k:02}");
        // Every id of this group sorts after `{group}.` and before any
        // other record: the listing starts with ours, in order.
        let start = Some(binding_id(&format!("{group}.")));
        let ours = |page: &[Binding]| -> Vec<String> {
            ids(page)
                .into_iter()
                .filter(|id| id.starts_with(&format!("{group}.")))
                .collect()
        };

        let review = s
            .bindings
            .list_by_status(BindingStatus::PendingReview, None, start.clone(), 100)
            .await
            .expect("list");
        assert!(review
            .iter()
            .all(|b| b.status == BindingStatus::PendingReview));
        assert_eq!(
            ours(&review),
            vec![name(0), name(2), name(3), name(5), name(6)]
        );
        assert_eq!(&ids(&review)[..5], &ours(&review)[..], "ordered by id");

        let stale = s
            .bindings
            .list_by_status(
                BindingStatus::PendingReview,
                Some(at(0)),
                start.clone(),
                100,
            )
            .await
            .expect("list updated before");
        assert!(stale.iter().all(|b| b.updated_at < at(0)));
        assert_eq!(ours(&stale), vec![name(0), name(3), name(5)]);

        // Pages of two through our range.
        let mut got = Vec::new();
        let mut after = start.clone();
        while got.len() < 5 {
            let page = s
                .bindings
                .list_by_status(BindingStatus::PendingReview, None, after.clone(), 2)
                .await
                .expect("page");
            assert!(page.len() <= 2, "at most limit");
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            got.extend(ids(&page));
        }
        assert_eq!(&got[..5], &[name(0), name(2), name(3), name(5), name(6)]);

        let after_three = s
            .bindings
            .list_by_status(
                BindingStatus::PendingReview,
                None,
                Some(binding_id(&name(3))),
                2,
            )
            .await
            .expect("after");
        assert_eq!(ids(&after_three), vec![name(5), name(6)]);
        let zero = s
            .bindings
            .list_by_status(BindingStatus::PendingReview, None, start.clone(), 0)
            .await
            .expect("limit 0");
        assert!(zero.is_empty(), "limit 0 returns nothing");
        let active = s
            .bindings
            .list_by_status(BindingStatus::Active, None, start, 100)
            .await
            .expect("active");
        assert_eq!(ours(&active), vec![name(4)]);
    }

    pub async fn default_pointer_compare_and_set<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let user = user_id(&unique("u"));
        let other = user_id(&unique("u"));
        let a = binding_id(&unique("b"));
        let b = binding_id(&unique("b"));
        let d = &s.bindings;
        assert_eq!(d.get_default(&user).await.expect("get"), None);
        assert!(d
            .replace_default(&user, None, Some(a.clone()))
            .await
            .expect("set"));
        assert_eq!(d.get_default(&user).await.expect("get"), Some(a.clone()));
        assert!(
            !d.replace_default(&user, None, Some(b.clone()))
                .await
                .expect("cas"),
            "expected None but a is set"
        );
        assert!(
            !d.replace_default(&user, Some(b.clone()), Some(b.clone()))
                .await
                .expect("cas"),
            "expected b but a is set"
        );
        assert_eq!(d.get_default(&user).await.expect("get"), Some(a.clone()));
        assert_eq!(d.get_default(&other).await.expect("get"), None, "per user");
        assert!(d
            .replace_default(&user, Some(a.clone()), Some(b.clone()))
            .await
            .expect("move"));
        assert_eq!(d.get_default(&user).await.expect("get"), Some(b.clone()));
        assert!(d
            .replace_default(&user, Some(b), None)
            .await
            .expect("clear"));
        assert_eq!(d.get_default(&user).await.expect("get"), None);
        assert!(d
            .replace_default(&user, None, Some(a.clone()))
            .await
            .expect("set again"));
        assert_eq!(d.get_default(&user).await.expect("get"), Some(a));
    }

    pub async fn default_pointer_concurrent_one_wins<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let user = user_id(&unique("u"));
        let group = unique("b");
        // From no pointer, then from a set pointer.
        let mut expected: Option<BindingId> = None;
        for round in 0..2 {
            let results = race(32, |i| {
                let store = s.bindings.clone();
                let user = user.clone();
                let expected = expected.clone();
                let new = binding_id(&format!("{group}.{round}{i:02}"));
                async move {
                    let r = store
                        .replace_default(&user, expected, Some(new.clone()))
                        .await;
                    (new, r)
                }
            })
            .await;
            let winners: Vec<_> = results
                .iter()
                .filter(|(_, r)| matches!(r, Ok(true)))
                .collect();
            assert_eq!(winners.len(), 1, "exactly one replace_default wins");
            assert!(results.iter().all(|(_, r)| r.is_ok()));
            let now = s.bindings.get_default(&user).await.expect("get");
            assert_eq!(now.as_ref(), Some(&winners[0].0));
            expected = now;
        }
    }

    // ---- IdempotencyStore -----------------------------------------------

    fn response(body: &[u8]) -> StoredResponse {
        StoredResponse {
            status: 201,
            content_type: "application/json; charset=utf-8".to_owned(),
            body: body.to_vec(),
        }
    }

    pub async fn idempotency_concurrent_claims_one_acquires<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let scope = unique("scope");
        let key = unique("key");
        let results = race(32, |_| {
            let store = s.idempotency.clone();
            let (scope, key) = (scope.clone(), key.clone());
            async move { store.claim(&scope, &key, "h1", at(0), at(60)).await }
        })
        .await;
        let acquired = results
            .iter()
            .filter(|r| matches!(r, Ok(Claim::Acquired)))
            .count();
        assert_eq!(acquired, 1, "exactly one claim acquires: {results:?}");
        let in_progress = results
            .iter()
            .filter(|r| matches!(r, Ok(Claim::InProgress)))
            .count();
        assert_eq!(in_progress, 31, "the others see it in progress");
    }

    pub async fn idempotency_completed_replays_bytes<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let (scope, key) = (unique("scope"), unique("key"));
        let i = &s.idempotency;
        assert_eq!(
            i.claim(&scope, &key, "h1", at(0), at(60)).await,
            Ok(Claim::Acquired)
        );
        // Bytes that are not UTF-8 and not canonical JSON must survive.
        let mut body = b"{\"id\":  \"c1\" ,\"z\":1}\n".to_vec();
        body.extend_from_slice(&[0, 0xff, 0xfe, 0x80]);
        let resp = response(&body);
        i.complete(&scope, &key, &resp).await.expect("complete");
        for t in [1, 30, 120, 86_400] {
            assert_eq!(
                i.claim(&scope, &key, "h1", at(t), at(t + 60)).await,
                Ok(Claim::Completed(resp.clone())),
                "replayed at +{t}s"
            );
        }
        i.release(&scope, &key).await.expect("release");
        assert_eq!(
            i.claim(&scope, &key, "h1", at(2), at(62)).await,
            Ok(Claim::Completed(resp)),
            "release leaves a completed key alone"
        );
    }

    pub async fn idempotency_other_request_mismatch<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let (scope, key) = (unique("scope"), unique("key"));
        let i = &s.idempotency;
        assert_eq!(
            i.claim(&scope, &key, "h1", at(0), at(60)).await,
            Ok(Claim::Acquired)
        );
        assert_eq!(
            i.claim(&scope, &key, "h2", at(1), at(61)).await,
            Ok(Claim::Mismatch),
            "in progress, other request"
        );
        i.complete(&scope, &key, &response(b"{}"))
            .await
            .expect("complete");
        assert_eq!(
            i.claim(&scope, &key, "h2", at(2), at(62)).await,
            Ok(Claim::Mismatch),
            "completed, other request"
        );
        assert_eq!(
            i.claim(&scope, &key, "h1", at(3), at(63)).await,
            Ok(Claim::Completed(response(b"{}")))
        );
    }

    pub async fn idempotency_scoped_by_caller<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let key = unique("key");
        let (a, b) = (unique("scope"), unique("scope"));
        let i = &s.idempotency;
        assert_eq!(
            i.claim(&a, &key, "h1", at(0), at(60)).await,
            Ok(Claim::Acquired)
        );
        assert_eq!(
            i.claim(&b, &key, "h2", at(0), at(60)).await,
            Ok(Claim::Acquired),
            "the same key in another scope is another key"
        );
        i.complete(&a, &key, &response(b"a"))
            .await
            .expect("complete");
        assert_eq!(
            i.claim(&b, &key, "h2", at(1), at(61)).await,
            Ok(Claim::InProgress)
        );
        assert_eq!(
            i.claim(&a, &key, "h1", at(1), at(61)).await,
            Ok(Claim::Completed(response(b"a")))
        );
    }

    pub async fn idempotency_release_frees_key<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let (scope, key) = (unique("scope"), unique("key"));
        let i = &s.idempotency;
        assert_eq!(
            i.claim(&scope, &key, "h1", at(0), at(60)).await,
            Ok(Claim::Acquired)
        );
        i.release(&scope, &key).await.expect("release");
        // Claimable again, even with another request (the key was forgotten).
        assert_eq!(
            i.claim(&scope, &key, "h2", at(1), at(61)).await,
            Ok(Claim::Acquired)
        );
        assert_eq!(
            i.claim(&scope, &key, "h2", at(2), at(62)).await,
            Ok(Claim::InProgress)
        );
        i.release(&scope, &unique("never-claimed"))
            .await
            .expect("releasing an unknown key is harmless");
    }

    pub async fn idempotency_expired_lease_taken_over<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let (scope, key) = (unique("scope"), unique("key"));
        let i = &s.idempotency;
        assert_eq!(
            i.claim(&scope, &key, "h1", at(0), at(10)).await,
            Ok(Claim::Acquired)
        );
        assert_eq!(
            i.claim(&scope, &key, "h1", at(5), at(15)).await,
            Ok(Claim::InProgress),
            "lease still running"
        );
        assert_eq!(
            i.claim(&scope, &key, "h1", at(11), at(21)).await,
            Ok(Claim::Acquired),
            "the holder's lease expired: taken over"
        );
        assert_eq!(
            i.claim(&scope, &key, "h1", at(12), at(22)).await,
            Ok(Claim::InProgress),
            "the new holder's lease runs"
        );
        // Of many takeovers of one expired lease, exactly one wins.
        let results = race(16, |_| {
            let store = s.idempotency.clone();
            let (scope, key) = (scope.clone(), key.clone());
            async move { store.claim(&scope, &key, "h1", at(30), at(40)).await }
        })
        .await;
        let acquired = results
            .iter()
            .filter(|r| matches!(r, Ok(Claim::Acquired)))
            .count();
        assert_eq!(acquired, 1, "one takeover: {results:?}");
        i.complete(&scope, &key, &response(b"done"))
            .await
            .expect("complete");
        assert_eq!(
            i.claim(&scope, &key, "h1", at(100), at(110)).await,
            Ok(Claim::Completed(response(b"done")))
        );
    }

    pub async fn idempotency_purge_created_before<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let scope = unique("scope");
        let i = &s.idempotency;
        let old: Vec<String> = (0..3).map(|_| unique("key")).collect();
        let new: Vec<String> = (0..2).map(|_| unique("key")).collect();
        // This check alone writes records created before BASE.
        for (n, k) in old.iter().enumerate() {
            let t = at(-1000 - n as i64);
            assert_eq!(
                i.claim(&scope, k, "h", t, t.plus_seconds(60)).await,
                Ok(Claim::Acquired)
            );
        }
        i.complete(&scope, &old[0], &response(b"x"))
            .await
            .expect("complete");
        for k in &new {
            assert_eq!(
                i.claim(&scope, k, "h", at(0), at(60)).await,
                Ok(Claim::Acquired)
            );
        }
        assert_eq!(i.purge_created_before(at(-10)).await, Ok(3));
        for k in &old {
            assert_eq!(
                i.claim(&scope, k, "h2", at(1), at(61)).await,
                Ok(Claim::Acquired),
                "purged keys are new again"
            );
        }
        for k in &new {
            assert_eq!(
                i.claim(&scope, k, "h", at(1), at(61)).await,
                Ok(Claim::InProgress),
                "newer keys are kept"
            );
        }
        assert_eq!(i.purge_created_before(at(-10)).await, Ok(0));
    }

    // ---- RateCounter ----------------------------------------------------

    pub async fn rate_concurrent_increments_distinct<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let key = unique("bind:user");
        let mut counts = race(10, |_| {
            let store = s.rates.clone();
            let key = key.clone();
            async move { store.increment(&key, at(60)).await.expect("increment") }
        })
        .await;
        counts.sort_unstable();
        assert_eq!(counts, (1..=10).collect::<Vec<u64>>());
        assert_eq!(s.rates.increment(&key, at(60)).await, Ok(11));
    }

    pub async fn rate_keys_independent<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let (a, b) = (unique("rate"), unique("rate"));
        for n in 1..=3 {
            assert_eq!(s.rates.increment(&a, at(60)).await, Ok(n));
        }
        assert_eq!(s.rates.increment(&b, at(60)).await, Ok(1));
        assert_eq!(s.rates.increment(&a, at(60)).await, Ok(4));
        assert_eq!(s.rates.increment(&b, at(60)).await, Ok(2));
    }

    pub async fn rate_purge_expired<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let old: Vec<String> = (0..3).map(|_| unique("rate")).collect();
        let live = unique("rate");
        // This check alone writes counters expiring before BASE.
        for (n, k) in old.iter().enumerate() {
            s.rates
                .increment(k, at(-1000 - n as i64))
                .await
                .expect("increment");
            s.rates
                .increment(k, at(-1000 - n as i64))
                .await
                .expect("increment");
        }
        s.rates.increment(&live, at(60)).await.expect("increment");
        assert_eq!(s.rates.purge_expired(at(-10)).await, Ok(3));
        assert_eq!(s.rates.purge_expired(at(-10)).await, Ok(0));
        for k in &old {
            assert_eq!(
                s.rates.increment(k, at(60)).await,
                Ok(1),
                "counter restarted"
            );
        }
        assert_eq!(
            s.rates.increment(&live, at(60)).await,
            Ok(2),
            "live counter kept"
        );
    }

    // ---- ConsentLog -----------------------------------------------------

    pub async fn consents_record_and_list<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let user = user_id(&unique("u"));
        let other = user_id(&unique("u"));
        let group = unique("c");
        let b = binding_id(&unique("b"));
        let mut c0 = consent(&format!("{group}.00"), &b, &user, at(0));
        c0.ip = None;
        c0.user_agent = None;
        let mut c1 = consent(&format!("{group}.01"), &b, &user, at(1));
        c1.agreement_id = Some("agreement-1".to_owned());
        c1.revoked_at = Some(at(5));
        c1.revoked_by = Some("admin-7".to_owned());
        let c2 = consent(
            &format!("{group}.02"),
            &binding_id(&unique("b")),
            &other,
            at(2),
        );
        for c in [&c2, &c0, &c1] {
            s.consents.record(c).await.expect("record");
        }
        let listed = s
            .consents
            .list(Some(user.clone()), None, 100)
            .await
            .expect("list");
        assert_eq!(
            listed,
            vec![c0.clone(), c1.clone()],
            "every field kept, by id"
        );
        let theirs = s.consents.list(Some(other), None, 100).await.expect("list");
        assert_eq!(theirs, vec![c2.clone()]);
        let all = s
            .consents
            .list(None, Some(format!("{group}.")), 3)
            .await
            .expect("list all");
        assert_eq!(all, vec![c0, c1, c2], "all users when no user is given");
    }

    pub async fn consents_duplicate_id<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let user = user_id(&unique("u"));
        let id = unique("c");
        let c = consent(&id, &binding_id(&unique("b")), &user, at(0));
        s.consents.record(&c).await.expect("record");
        let mut again = consent(&id, &binding_id(&unique("b")), &user, at(1));
        again.text_version = "other".to_owned();
        assert_eq!(s.consents.record(&again).await, Err(StoreError::Duplicate));
        assert_eq!(
            s.consents.list(Some(user), None, 10).await.expect("list"),
            vec![c]
        );
    }

    pub async fn consents_revoke_and_agreement<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let user = user_id(&unique("u"));
        let group = unique("c");
        let b = binding_id(&unique("b"));
        let other_b = binding_id(&unique("b"));
        let c0 = consent(&format!("{group}.00"), &b, &user, at(0));
        let c1 = consent(&format!("{group}.01"), &b, &user, at(1));
        let c2 = consent(&format!("{group}.02"), &other_b, &user, at(2));
        for c in [&c0, &c1, &c2] {
            s.consents.record(c).await.expect("record");
        }
        s.consents
            .set_agreement(&b, "agr-1")
            .await
            .expect("agreement");
        assert_eq!(s.consents.revoke(&b, at(10), "user-self").await, Ok(2));
        assert_eq!(
            s.consents.revoke(&b, at(11), "admin").await,
            Ok(0),
            "already revoked"
        );
        // Revoked consents keep their agreement id; new agreements only
        // reach unrevoked consents.
        s.consents
            .set_agreement(&b, "agr-2")
            .await
            .expect("agreement");
        let c3 = consent(&format!("{group}.03"), &b, &user, at(20));
        s.consents.record(&c3).await.expect("record");
        s.consents
            .set_agreement(&b, "agr-3")
            .await
            .expect("agreement");

        let listed = s.consents.list(Some(user), None, 10).await.expect("list");
        assert_eq!(listed.len(), 4);
        for c in &listed[..2] {
            assert_eq!(c.agreement_id.as_deref(), Some("agr-1"));
            assert_eq!(c.revoked_at, Some(at(10)));
            assert_eq!(c.revoked_by.as_deref(), Some("user-self"));
        }
        assert_eq!(listed[2], c2, "another binding's consent is untouched");
        assert_eq!(listed[3].agreement_id.as_deref(), Some("agr-3"));
        assert_eq!(listed[3].revoked_at, None);
    }

    pub async fn consents_paginate<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let user = user_id(&unique("u"));
        let other = user_id(&unique("u"));
        let group = unique("c");
        let b = binding_id(&unique("b"));
        for k in [3, 0, 4, 1, 2] {
            let c = consent(&format!("{group}.{k:02}"), &b, &user, at(k));
            s.consents.record(&c).await.expect("record");
        }
        let c = consent(&format!("{group}.05"), &b, &other, at(5));
        s.consents.record(&c).await.expect("record");
        let want: Vec<String> = (0..5).map(|k| format!("{group}.{k:02}")).collect();

        let mut got = Vec::new();
        let mut after = None;
        loop {
            let page = s
                .consents
                .list(Some(user.clone()), after.clone(), 2)
                .await
                .expect("page");
            assert!(page.len() <= 2, "at most limit");
            got.extend(page.iter().map(|c| c.id.clone()));
            match page.last() {
                Some(last) if page.len() == 2 => after = Some(last.id.clone()),
                _ => break,
            }
        }
        assert_eq!(got, want);
        let zero = s.consents.list(Some(user), None, 0).await.expect("limit 0");
        assert!(zero.is_empty(), "limit 0 returns nothing");
        // Across users, from our range on.
        let page = s
            .consents
            .list(None, Some(format!("{group}.03")), 2)
            .await
            .expect("page");
        let got: Vec<String> = page.into_iter().map(|c| c.id).collect();
        assert_eq!(got, vec![format!("{group}.04"), format!("{group}.05")]);
    }

    // ---- SeenIds --------------------------------------------------------

    pub async fn seen_mark_and_seen<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let ns = unique("notify");
        let id = unique("evt");
        assert_eq!(s.seen.seen(&ns, &id, at(0)).await, Ok(false));
        assert_eq!(s.seen.mark(&ns, &id, at(0), at(3600)).await, Ok(true));
        assert_eq!(s.seen.seen(&ns, &id, at(1)).await, Ok(true));
        assert_eq!(
            s.seen.mark(&ns, &id, at(2), at(3600)).await,
            Ok(false),
            "marked before"
        );
        let other_ns = unique("nonce");
        assert_eq!(
            s.seen.seen(&other_ns, &id, at(1)).await,
            Ok(false),
            "per namespace"
        );
        assert_eq!(s.seen.mark(&other_ns, &id, at(1), at(3600)).await, Ok(true));
    }

    pub async fn seen_concurrent_mark_one_true<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let ns = unique("notify");
        let id = unique("evt");
        let results = race(32, |_| {
            let store = s.seen.clone();
            let (ns, id) = (ns.clone(), id.clone());
            async move { store.mark(&ns, &id, at(0), at(60)).await }
        })
        .await;
        assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
        let first = results.iter().filter(|r| matches!(r, Ok(true))).count();
        assert_eq!(first, 1, "exactly one mark is first");
    }

    pub async fn seen_expiry<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let ns = unique("notify");
        let id = unique("evt");
        assert_eq!(s.seen.mark(&ns, &id, at(0), at(60)).await, Ok(true));
        assert_eq!(s.seen.seen(&ns, &id, at(59)).await, Ok(true));
        assert_eq!(s.seen.seen(&ns, &id, at(61)).await, Ok(false), "expired");
        assert_eq!(
            s.seen.mark(&ns, &id, at(61), at(120)).await,
            Ok(true),
            "an expired id is new again"
        );
        assert_eq!(s.seen.seen(&ns, &id, at(100)).await, Ok(true));
        assert_eq!(s.seen.mark(&ns, &id, at(100), at(200)).await, Ok(false));
    }

    pub async fn seen_purge_expired<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let ns = unique("notify");
        let old: Vec<String> = (0..4).map(|_| unique("evt")).collect();
        let live = unique("evt");
        // This check alone writes ids expiring before BASE.
        for (n, id) in old.iter().enumerate() {
            let exp = at(-1000 - n as i64);
            assert_eq!(
                s.seen.mark(&ns, id, exp.minus_seconds(60), exp).await,
                Ok(true)
            );
        }
        assert_eq!(s.seen.mark(&ns, &live, at(0), at(60)).await, Ok(true));
        assert_eq!(s.seen.purge_expired(at(-10)).await, Ok(4));
        assert_eq!(s.seen.purge_expired(at(-10)).await, Ok(0));
        assert_eq!(
            s.seen.seen(&ns, &live, at(1)).await,
            Ok(true),
            "live id kept"
        );
        for id in &old {
            assert_eq!(s.seen.seen(&ns, id, at(-2000)).await, Ok(false), "purged");
        }
    }

    // ---- DataKeyStore ---------------------------------------------------

    pub async fn data_keys_put_if_absent_keeps_first<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let owner = unique("owner");
        assert_eq!(s.data_keys.get(&owner).await, Ok(None));
        let k1 = wrapped_key(&owner, &[1, 2, 3, 0xff], 1);
        assert_eq!(s.data_keys.put_if_absent(&k1).await, Ok(k1.clone()));
        let k2 = wrapped_key(&owner, &[9, 9], 1);
        assert_eq!(
            s.data_keys.put_if_absent(&k2).await,
            Ok(k1.clone()),
            "the stored key is returned, not the new one"
        );
        assert_eq!(s.data_keys.get(&owner).await, Ok(Some(k1)));
        assert_eq!(s.data_keys.get(&unique("owner")).await, Ok(None));
    }

    pub async fn data_keys_concurrent_put_if_absent_one_key<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let owner = unique("owner");
        let results = race(32, |i| {
            let store = s.data_keys.clone();
            let key = wrapped_key(&owner, &[i as u8; 32], 1);
            async move { store.put_if_absent(&key).await.expect("put_if_absent") }
        })
        .await;
        let stored = s.data_keys.get(&owner).await.expect("get").expect("stored");
        assert!(
            results.iter().all(|k| k == &stored),
            "every racer gets the one stored key"
        );
    }

    pub async fn data_keys_replace_compare_and_set<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let owner = unique("owner");
        let k1 = wrapped_key(&owner, b"first", 1);
        s.data_keys.put_if_absent(&k1).await.expect("put");
        let mut k2 = wrapped_key(&owner, b"rewrapped", 2);
        k2.master_key_id = "arn:aws:kms:eu-west-1:000000000000:key/new".to_owned();
        assert_eq!(s.data_keys.replace(&k2, 1).await, Ok(()));
        assert_eq!(s.data_keys.get(&owner).await, Ok(Some(k2.clone())));
        let k3 = wrapped_key(&owner, b"stale", 2);
        assert_eq!(
            s.data_keys.replace(&k3, 1).await,
            Err(StoreError::Conflict),
            "stale version"
        );
        assert_eq!(s.data_keys.get(&owner).await, Ok(Some(k2)));
        let missing = wrapped_key(&unique("owner"), b"x", 2);
        assert_eq!(
            s.data_keys.replace(&missing, 1).await,
            Err(StoreError::Conflict),
            "missing owner"
        );
        assert_eq!(s.data_keys.get(&missing.owner).await, Ok(None), "no upsert");
    }

    pub async fn data_keys_delete<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let owner = unique("owner");
        let keep = unique("owner");
        s.data_keys
            .put_if_absent(&wrapped_key(&owner, b"k", 1))
            .await
            .expect("put");
        s.data_keys
            .put_if_absent(&wrapped_key(&keep, b"k", 1))
            .await
            .expect("put");
        assert_eq!(s.data_keys.delete(&owner).await, Ok(true));
        assert_eq!(s.data_keys.delete(&owner).await, Ok(false));
        assert_eq!(s.data_keys.get(&owner).await, Ok(None));
        assert!(s.data_keys.get(&keep).await.expect("get").is_some());
        let fresh = wrapped_key(&owner, b"new", 1);
        assert_eq!(
            s.data_keys.put_if_absent(&fresh).await,
            Ok(fresh),
            "a deleted owner gets a new key"
        );
    }

    pub async fn data_keys_list_paginates<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let group = unique("owner");
        for k in [2, 0, 4, 1, 3] {
            let key = wrapped_key(&format!("{group}.{k:02}"), &[k as u8], 1);
            s.data_keys.put_if_absent(&key).await.expect("put");
        }
        let want: Vec<String> = (0..5).map(|k| format!("{group}.{k:02}")).collect();
        let mut got = Vec::new();
        let mut after = Some(format!("{group}."));
        while got.len() < 5 {
            let page = s.data_keys.list(after.clone(), 2).await.expect("page");
            assert!(page.len() <= 2, "at most limit");
            let Some(last) = page.last() else { break };
            after = Some(last.owner.clone());
            got.extend(page.into_iter().map(|k| k.owner));
        }
        assert_eq!(&got[..5], &want[..], "by owner, nothing twice or missing");
        let zero = s
            .data_keys
            .list(Some(format!("{group}.")), 0)
            .await
            .expect("limit 0");
        assert!(zero.is_empty(), "limit 0 returns nothing");
        let all = s.data_keys.list(None, 10_000).await.expect("list all");
        let mine: Vec<&str> = all
            .iter()
            .map(|k| k.owner.as_str())
            .filter(|o| o.starts_with(&format!("{group}.")))
            .collect();
        assert_eq!(mine, want.iter().map(String::as_str).collect::<Vec<_>>());
        let owners: Vec<&str> = all.iter().map(|k| k.owner.as_str()).collect();
        let mut sorted = owners.clone();
        sorted.sort_unstable();
        assert_eq!(owners, sorted, "ordered by owner");
    }

    // ---- AuditLog (needs an empty log per `fresh()`) ---------------------

    async fn whole_log(s: &Stores) -> Vec<AuditRecord> {
        let mut all: Vec<AuditRecord> = Vec::new();
        loop {
            let after = all.last().map(|r| r.seq);
            let page = s
                .audit
                .list(&AuditFilter::default(), after, 100)
                .await
                .expect("list audit");
            let full = page.len() == 100;
            all.extend(page);
            if !full {
                return all;
            }
        }
    }

    pub async fn audit_first_event_links_to_genesis<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let e = audit_event("svc-1", "binding.create", at(0));
        let r = s.audit.append(e.clone()).await.expect("append");
        assert_eq!(r.seq, 1, "a fresh log starts at 1");
        assert_eq!(r.prev_hash, GENESIS_HASH);
        assert_eq!(r.hash, crate::audit::chain_hash(GENESIS_HASH, 1, &e));
        assert_eq!(r.event, e);
        let r2 = s
            .audit
            .append(audit_event("svc-1", "binding.freeze", at(1)))
            .await
            .expect("append");
        assert_eq!(r2.seq, 2);
        assert_eq!(r2.prev_hash, r.hash);
        assert_eq!(whole_log(&s).await, vec![r, r2]);
    }

    pub async fn audit_round_trip_every_field<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let full = AuditEvent {
            at: Timestamp::from_unix_millis(BASE.unix_millis() + 7),
            actor: "admin-1".to_owned(),
            role: "admin".to_owned(),
            action: "binding.freeze".to_owned(),
            user_id: Some("u-1".to_owned()),
            binding_id: Some("b-1".to_owned()),
            outcome: "ok".to_owned(),
            request_id: Some("req-1".to_owned()),
            client_ip: Some("2001:db8::1".to_owned()),
            detail: Some("active -> frozen; ünïcødé \u{0}".to_owned()),
        };
        // Empty strings and absent fields are different things.
        let sparse = AuditEvent {
            at: at(1),
            actor: String::new(),
            role: "service".to_owned(),
            action: "card_data.open".to_owned(),
            user_id: Some(String::new()),
            outcome: "refused: internal_error".to_owned(),
            ..AuditEvent::default()
        };
        s.audit.append(full.clone()).await.expect("append");
        s.audit.append(sparse.clone()).await.expect("append");
        let log = whole_log(&s).await;
        let events: Vec<AuditEvent> = log.iter().map(|r| r.event.clone()).collect();
        assert_eq!(events, vec![full, sparse]);
        assert_eq!(verify_chain(&log), Ok(2));
    }

    pub async fn audit_concurrent_appends_one_chain<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let mut appended = race(50, |i| {
            let log = s.audit.clone();
            let e = audit_event(&format!("svc-{i}"), "binding.create", at(i as i64));
            async move { log.append(e).await.expect("append") }
        })
        .await;
        appended.sort_by_key(|r| r.seq);
        let seqs: Vec<u64> = appended.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (1..=50).collect::<Vec<u64>>(), "no gap, no fork");
        assert_eq!(appended[0].prev_hash, GENESIS_HASH);
        for w in appended.windows(2) {
            assert_eq!(
                w[1].prev_hash, w[0].hash,
                "seq {} links to {}",
                w[1].seq, w[0].seq
            );
        }
        let log = whole_log(&s).await;
        assert_eq!(log, appended, "stored as returned");
        assert_eq!(verify_chain(&log), Ok(50));
        let actors: BTreeSet<&str> = log.iter().map(|r| r.event.actor.as_str()).collect();
        assert_eq!(actors.len(), 50, "every event stored once");
    }

    pub async fn audit_list_filters_and_pages<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        let actions = ["binding.create", "binding.freeze"];
        let mut events = Vec::new();
        for i in 0..12_i64 {
            let mut e = audit_event("svc", actions[(i % 2) as usize], at(i * 10));
            e.user_id = Some(format!("u{}", i % 3));
            e.binding_id = (i % 4 != 0).then(|| format!("b{}", i % 4));
            events.push(e.clone());
            s.audit.append(e).await.expect("append");
        }
        let seqs_where = |p: &dyn Fn(&AuditEvent) -> bool| -> Vec<u64> {
            events
                .iter()
                .enumerate()
                .filter(|(_, e)| p(e))
                .map(|(i, _)| i as u64 + 1)
                .collect()
        };
        let seqs = |rs: &[AuditRecord]| rs.iter().map(|r| r.seq).collect::<Vec<u64>>();
        let list = |filter: AuditFilter, after: Option<u64>, limit: u32| {
            let log = s.audit.clone();
            async move { log.list(&filter, after, limit).await.expect("list") }
        };

        let by_user = list(
            AuditFilter {
                user_id: Some("u1".to_owned()),
                ..AuditFilter::default()
            },
            None,
            100,
        )
        .await;
        assert_eq!(
            seqs(&by_user),
            seqs_where(&|e| e.user_id.as_deref() == Some("u1"))
        );

        let by_binding = list(
            AuditFilter {
                binding_id: Some("b2".to_owned()),
                ..AuditFilter::default()
            },
            None,
            100,
        )
        .await;
        assert_eq!(
            seqs(&by_binding),
            seqs_where(&|e| e.binding_id.as_deref() == Some("b2"))
        );

        let window = list(
            AuditFilter {
                since: Some(at(25)),
                until: Some(at(75)),
                ..AuditFilter::default()
            },
            None,
            100,
        )
        .await;
        assert_eq!(seqs(&window), vec![4, 5, 6, 7, 8], "instants 30..=70");

        let combined = AuditFilter {
            user_id: Some("u0".to_owned()),
            action: Some("binding.freeze".to_owned()),
            since: Some(at(5)),
            ..AuditFilter::default()
        };
        let want = seqs_where(&|e| {
            e.user_id.as_deref() == Some("u0") && e.action == "binding.freeze" && e.at >= at(5)
        });
        assert_eq!(seqs(&list(combined.clone(), None, 100).await), want);

        // Pages of an action through after_seq.
        let creates = AuditFilter {
            action: Some("binding.create".to_owned()),
            ..AuditFilter::default()
        };
        let mut got = Vec::new();
        let mut after = None;
        loop {
            let page = list(creates.clone(), after, 4).await;
            assert!(page.len() <= 4, "at most limit");
            got.extend(seqs(&page));
            match page.last() {
                Some(last) if page.len() == 4 => after = Some(last.seq),
                _ => break,
            }
        }
        assert_eq!(got, vec![1, 3, 5, 7, 9, 11]);
        assert_eq!(
            seqs(&list(AuditFilter::default(), Some(10), 100).await),
            vec![11, 12]
        );
        assert_eq!(
            seqs(&list(AuditFilter::default(), Some(3), 2).await),
            vec![4, 5]
        );
        assert!(list(AuditFilter::default(), Some(12), 100).await.is_empty());
        assert!(
            list(AuditFilter::default(), None, 0).await.is_empty(),
            "limit 0 returns nothing"
        );
    }

    pub async fn audit_purge_before<F: StoreFactory + ?Sized>(f: &F) {
        let s = f.fresh().await;
        for i in 0..5 {
            s.audit
                .append(audit_event("svc", "binding.create", at(-1000 + i)))
                .await
                .expect("append");
        }
        for i in 0..3 {
            s.audit
                .append(audit_event("svc", "binding.create", at(i)))
                .await
                .expect("append");
        }
        assert_eq!(s.audit.purge_before(at(-10)).await, Ok(5));
        assert_eq!(s.audit.purge_before(at(-10)).await, Ok(0));
        let log = whole_log(&s).await;
        assert_eq!(log.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![6, 7, 8]);
        assert_eq!(verify_chain(&log), Ok(3), "what remains still verifies");
        let next = s
            .audit
            .append(audit_event("svc", "binding.create", at(10)))
            .await
            .expect("append");
        assert_eq!(next.seq, 9, "numbering goes on after a purge");
        assert_eq!(next.prev_hash, log[2].hash);
        // Purging everything does not restart the chain either.
        assert_eq!(s.audit.purge_before(at(1000)).await, Ok(4));
        let after_all = s
            .audit
            .append(audit_event("svc", "binding.create", at(2000)))
            .await
            .expect("append");
        assert_eq!(after_all.seq, 10);
        assert_eq!(after_all.prev_hash, next.hash);
    }
}
