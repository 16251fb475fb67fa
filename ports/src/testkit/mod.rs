//! # Contract suite for storage adapters
//!
//! One set of checks, written once, that every adapter of the storage ports
//! ([`crate::store`] and [`crate::audit::AuditLog`]) must pass, so that the
//! in-memory store, the embedded SQLite store and MongoDB cannot drift
//! apart. One module per port: [`wallets`] (with the audit log, which
//! shares the wallets' chains), [`card_data`], [`idempotency`], [`rates`],
//! [`seen`], [`data_keys`], [`review`].
//!
//! ## Plugging an adapter in
//! 1. Give the adapter's crate a dev-dependency on
//!    `cardbind-ports = { workspace = true, features = ["testkit"] }` and on
//!    `tokio` (the generated tests are `#[tokio::test]`s).
//! 2. Write a [`StoreFactory`]: anything whose `fresh()` returns the ports
//!    as [`Stores`]. A closure returning a future is one:
//!    ```ignore
//!    cardbind_ports::contract_suite!(|| async { Stores::all_in_one(MemoryStore::new()) });
//!    ```
//! 3. [`contract_suite!`](crate::contract_suite) expands to one named
//!    `#[tokio::test]` per check (`wallets_concurrent_commits_one_wins`,
//!    `idempotency_late_holder_is_fenced`, …), each on a multi-threaded
//!    runtime so that the concurrency checks really race. Attributes given
//!    before the factory are put on every test:
//!    `contract_suite!(#[ignore = "needs FerretDB"] Mongo);`.
//!
//! ## Isolation
//! Every `fresh()` MUST give stores that share nothing with any other call
//! (a new database, file or instance): checks count what they find.
//!
//! ## Easy to miss
//! `limit` 0 returns nothing (MongoDB's `limit(0)` means "no limit"); a
//! record expiring at `t` is alive at `t`, and purges delete only instants
//! strictly before the one given; audit filters take `since` inclusive and
//! `until` exclusive, on the link's instant; a commit after a stale head is
//! a `Conflict` even when the link it would add is identical.

// Test support: a failed check is a panic with a message, as in any test.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use cardbind_domain::{
    BindingId, CardBrand, CardCap, CardSummary, CardToBind, ChannelCode, ChannelName, ConsentGiven,
    Expiry, Fingerprint, NextAction, SealedBlob, SealedCard, StartOutcome, StateRefusal, Timestamp,
    UserId, VerificationPolicy, Wallet,
};

use crate::audit::{AuditAction, AuditActor, AuditEvent, AuditLog, Outcome};
use crate::store::{
    CardDataStore, ChannelRefs, DataKeyStore, IdempotencyStore, RateLimiter, ReviewQueue, SeenIds,
    WalletStore, WrappedKey,
};

pub mod card_data;
pub mod data_keys;
pub mod idempotency;
pub mod rates;
pub mod review;
pub mod seen;
pub mod wallets;

/// The ports one adapter provides, as the composition root holds them.
#[derive(Clone)]
pub struct Stores {
    pub wallets: Arc<dyn WalletStore>,
    pub audit: Arc<dyn AuditLog>,
    pub card_data: Arc<dyn CardDataStore>,
    pub channel_refs: Arc<dyn ChannelRefs>,
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub rates: Arc<dyn RateLimiter>,
    pub seen: Arc<dyn SeenIds>,
    pub data_keys: Arc<dyn DataKeyStore>,
    pub review: Arc<dyn ReviewQueue>,
}

impl Stores {
    /// Every port from one value that implements them all.
    pub fn all_in_one<S>(store: S) -> Stores
    where
        S: WalletStore
            + AuditLog
            + CardDataStore
            + ChannelRefs
            + IdempotencyStore
            + RateLimiter
            + SeenIds
            + DataKeyStore
            + ReviewQueue
            + 'static,
    {
        let s = Arc::new(store);
        Stores {
            wallets: s.clone(),
            audit: s.clone(),
            card_data: s.clone(),
            channel_refs: s.clone(),
            idempotency: s.clone(),
            rates: s.clone(),
            seen: s.clone(),
            data_keys: s.clone(),
            review: s,
        }
    }
}

/// Makes the stores one check runs on (see the isolation rule above).
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

/// Expands to one `#[tokio::test]` per contract check, in one module per
/// port (`wallets::round_trip_every_field`, …), each calling the check of
/// the same name with the factory. Usage: `contract_suite!(factory)` or
/// `contract_suite!(#[ignore] factory)`; see the [module docs](crate::testkit).
#[macro_export]
macro_rules! contract_suite {
    ($(#[$attr:meta])* $factory:expr $(,)?) => {
        $crate::__contract_module! { {$(#[$attr])*} $factory; wallets:
            load_of_an_unknown_user_is_none,
            round_trip_every_field,
            commit_after_a_stale_head_conflicts,
            concurrent_commits_after_one_head_one_wins,
            users_are_independent,
            links_form_verifiable_chains,
            pending_links_by_window,
            system_chain_concurrent_appends_one_chain,
            audit_list_filters_and_pages,
            link_stamps_match_the_listing,
            audit_purge_keeps_each_chains_last_link,
            family_shares_round_trip,
            load_many_reads_each_newest_link,
        }
        $crate::__contract_module! { {$(#[$attr])*} $factory; card_data:
            put_and_get_round_trip,
            one_generation_is_stored_once,
            owner_is_known_while_data_is_stored,
            one_generation_is_deleted_alone,
            keys_are_walked_in_order_a_page_at_a_time,
            channel_refs_find_their_first_target,
            channel_refs_are_walked_in_order_and_deleted_only_as_read,
        }
        $crate::__contract_module! { {$(#[$attr])*} $factory; idempotency:
            concurrent_claims_one_acquires,
            completed_replays_bytes,
            other_request_is_a_mismatch,
            a_released_key_stays_bound_to_its_request,
            a_forgotten_key_takes_any_request,
            keys_are_scoped_by_caller,
            release_starts_a_new_attempt,
            a_released_attempt_is_neither_completed_nor_renewed,
            expired_lease_is_taken_over_with_a_new_token,
            late_holder_is_fenced,
            renewed_lease_is_not_taken_over,
            purge_created_before,
        }
        $crate::__contract_module! { {$(#[$attr])*} $factory; rates:
            takes_up_to_the_limit,
            concurrent_takes_hold_the_limit,
            a_refused_take_keeps_no_slot,
            refused_takes_leave_no_slot_behind,
            purge_expired,
        }
        $crate::__contract_module! { {$(#[$attr])*} $factory; seen:
            mark_and_seen,
            concurrent_marks_one_true,
            expiry,
            purge_expired,
        }
        $crate::__contract_module! { {$(#[$attr])*} $factory; data_keys:
            put_if_absent_keeps_the_first,
            concurrent_put_if_absent_one_key,
            replace_is_compare_and_set,
            replace_racing_delete_never_resurrects,
            a_late_rewrap_of_an_erased_key_leaves_the_new_key_alone,
            list_paginates,
        }
        $crate::__contract_module! { {$(#[$attr])*} $factory; review:
            add_get_remove_list,
            entries_go_by_the_link_that_placed_them,
            two_stints_adding_at_once_keep_the_later,
        }
    };
}

/// Implementation detail of [`contract_suite!`]: one module of tests.
#[doc(hidden)]
#[macro_export]
macro_rules! __contract_module {
    ({$(#[$attr:meta])*} $factory:expr; $module:ident: $($name:ident),+ $(,)?) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $crate::__contract_tests! { {$(#[$attr])*} $factory; $module; $($name),+ }
        }
    };
}

/// Implementation detail of [`contract_suite!`]: the tests, one by one.
#[doc(hidden)]
#[macro_export]
macro_rules! __contract_tests {
    ({$(#[$attr:meta])*} $factory:expr; $module:ident; $(,)?) => {};
    ({$(#[$attr:meta])*} $factory:expr; $module:ident; $name:ident $(, $rest:ident)* $(,)?) => {
        #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
        $(#[$attr])*
        async fn $name() {
            let factory = $factory;
            $crate::testkit::$module::$name(&factory).await;
        }
        $crate::__contract_tests! { {$(#[$attr])*} $factory; $module; $($rest),* }
    };
}

// ---- test data --------------------------------------------------------------

/// 2030-01-01T00:00:00Z: checks write instants from here on.
pub const BASE: Timestamp = Timestamp::from_unix_millis(1_893_456_000_000);

/// `BASE` plus `s` seconds.
pub fn at(s: i64) -> Timestamp {
    BASE.plus_seconds(s)
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

/// A card to bind: `n` names the card (its fingerprint and id).
pub fn card(n: u32, now: Timestamp) -> CardToBind {
    CardToBind {
        new_id: binding_id(&format!("card-{n:04}")),
        fingerprint: Fingerprint::new(1, format!("{n:064x}")),
        card: CardSummary {
            brand: CardBrand::UnionPay,
            bin: "622588".to_owned(),
            last4: format!("{:04}", n % 10_000),
            expiry: Expiry::restore(12, 2031).expect("valid expiry"),
            facts: None,
        },
        consent: ConsentGiven {
            text_version: "2026-01".to_owned(),
            text_hash: "ab".repeat(32),
            ip: Some("203.0.113.7".to_owned()),
            user_agent: Some("tests/1.0 (中文)".to_owned()),
        }
        .accept(channel("mock"), now)
        .expect("valid consent"),
        generation: 1000 + n,
        bind_key: None,
    }
}

/// A wallet of `user` with `n` cards, in every status the machine has (by
/// `i % 6`: active, pending with an OTP, pending with a redirect, failed,
/// in review, unbound).
pub fn wallet(user: &UserId, n: u32, now: Timestamp) -> Wallet {
    let mut w = Wallet::new(user.clone());
    let policy = VerificationPolicy::default();
    for i in 0..n {
        let id = w
            .open(card(i, now), CardCap { max: 1000 }, now, &policy)
            .expect("room for the card")
            .id()
            .clone();
        let outcome = match i % 6 {
            0 | 5 => StartOutcome::Bound {
                channel_ref: format!("agreement-{i}"),
            },
            1 => StartOutcome::ActionRequired {
                channel_ref: format!("otp-{i}"),
                action: NextAction::Otp {
                    phone_hint: "+86 138****8000".to_owned(),
                },
            },
            2 => StartOutcome::ActionRequired {
                channel_ref: format!("sign-{i}"),
                action: NextAction::Redirect {
                    url: format!("https://pay.example.com/sign?x={i}&y=中"),
                },
            },
            3 => StartOutcome::Refused {
                code: ChannelCode::from_channel("ACQ.CARD_DECLINED"),
            },
            _ => StartOutcome::Unreachable,
        };
        let r: Result<(), StateRefusal> = w.change(&id, |b| b.apply_start(outcome, now));
        r.expect("a valid start");
        if i % 6 == 5 {
            let r: Result<bool, StateRefusal> = w.change(&id, |b| b.unbind(now, "tests"));
            r.expect("unbind");
        }
    }
    w
}

/// A primary's wallet (`wallet(primary, 6, now)`) that shared its first
/// (active) card with `secondary` and once with someone else (revoked),
/// and the secondary's wallet (one card of their own) holding the mirror,
/// accepted and made their default, and an ended one.
pub fn family_wallets(primary: &UserId, secondary: &UserId, now: Timestamp) -> (Wallet, Wallet) {
    use cardbind_domain::{Money, NewShare, ShareId, ShareTerms, SharedIn};
    let mut p = wallet(primary, 6, now);
    let card = p.bindings()[0].id.clone();
    let consent = |now| {
        ConsentGiven {
            text_version: "family-2026".to_owned(),
            text_hash: "cd".repeat(32),
            ip: Some("2001:db8::1".to_owned()),
            user_agent: Some("tests/1.0 (家庭)".to_owned()),
        }
        .accept(channel("mock"), now)
        .expect("valid consent")
    };
    let terms = |minor: i64, days: i64| {
        ShareTerms::new(
            Money::parse(minor, "CNY").expect("money"),
            now.plus_seconds(days * 86_400),
            now,
        )
        .expect("terms")
    };
    let mut given = Vec::new();
    for (id, to, minor) in [
        ("keep", secondary.clone(), 50_000),
        ("gone", user_id("someone-else"), 7),
    ] {
        let id = ShareId::new(&format!("{id}-{primary}")).expect("share id");
        p.give_share(
            NewShare {
                id: id.clone(),
                card: card.clone(),
                secondary: to,
                terms: terms(minor, 30),
                consent: consent(now),
            },
            now,
        )
        .expect("shared");
        given.push(id);
    }
    p.note_share_accepted(&given[0], now.plus_seconds(5));
    p.revoke_share(&given[1], now.plus_seconds(6), "backend-1")
        .expect("revoked");
    let mut s = wallet(secondary, 1, now);
    let b = p.get(&card).expect("the card").clone();
    let mirror = |share: &ShareId| SharedIn {
        share: share.clone(),
        primary: primary.clone(),
        primary_card: card.clone(),
        card: b.card.clone(),
        channel: b.channel.clone(),
        expires_at: now.plus_seconds(30 * 86_400),
        invited_at: now.plus_seconds(1),
        consent: None,
        ended_at: None,
        ended_by: None,
    };
    let ended = ShareId::new(&format!("ended-{primary}")).expect("share id");
    s.receive_share(mirror(&given[0]), now);
    s.receive_share(mirror(&ended), now);
    s.accept_share(&given[0], consent(now.plus_seconds(5)), now)
        .expect("accepted");
    s.set_default_shared(&given[0]).expect("default");
    s.end_shared_in(&ended, now.plus_seconds(7), "someone");
    (p, s)
}

/// An audit event with every field set.
pub fn event(
    action: AuditAction,
    user: Option<&UserId>,
    binding: Option<&BindingId>,
) -> AuditEvent {
    AuditEvent {
        at: BASE,
        actor: AuditActor {
            subject: "backend-1".to_owned(),
            role: Some(cardbind_domain::Role::Service),
        },
        action,
        user_id: user.cloned(),
        binding_id: binding.cloned(),
        outcome: Outcome::Ok,
        request_id: Some("req-1".to_owned()),
        client_ip: Some("198.51.100.4".to_owned()),
        detail: Some("active -> frozen (测试)".to_owned()),
    }
}

pub fn sealed(tag: u8) -> SealedCard {
    let blob = |f: u8| SealedBlob::new(vec![tag, f, 0, 0xff, 0x80, 7]);
    SealedCard {
        pan: blob(1),
        holder_name: blob(2),
        id_number: blob(3),
        phone: blob(4),
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
