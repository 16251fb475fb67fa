//! Failure paths of the bind use case, with every port mocked: each failure
//! returns its stable code and leaves no half-written binding.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use cardbind_domain::{Actor, Binding};
use cardbind_domain::{
    BindingId, BindingStatus, ErrorCode, Fingerprint, Role, SealedBlob, Timestamp, UserId,
};
use cardbind_ports::audit::{AuditRecord, MockAuditLog};
use cardbind_ports::channel::{ChannelRegistry, ChannelStart, MockPaymentChannel};
use cardbind_ports::clock::{MockClock, MockIdGenerator};
use cardbind_ports::keys::MockCardVault;
use cardbind_ports::service::{
    CardService, ConsentInput, Policy, Ports, RawBindCard, RequestContext,
};
use cardbind_ports::store::{MockBindingStore, MockConsentLog, MockRateCounter, MockSeenIds};
use cardbind_ports::{ChannelError, KeyError, StoreError};

const NOW: i64 = 1_790_000_000_000; // 2026-09

struct World {
    bindings: MockBindingStore,
    vault: MockCardVault,
    channel: MockPaymentChannel,
    consents: MockConsentLog,
    /// Every binding written, in order (insert and update).
    written: Arc<Mutex<Vec<Binding>>>,
}

fn world() -> World {
    let mut bindings = MockBindingStore::new();
    bindings
        .expect_find_by_fingerprint()
        .returning(|_, _| Ok(None));
    // The default pointer behaves like a store's: compare-and-set.
    let pointer: Arc<Mutex<Option<BindingId>>> = Arc::new(Mutex::new(None));
    let p = pointer.clone();
    bindings
        .expect_get_default()
        .returning(move |_| Ok(p.lock().unwrap().clone()));
    let p = pointer.clone();
    bindings
        .expect_replace_default()
        .returning(move |_, expected, new| {
            let mut cur = p.lock().unwrap();
            if *cur == expected {
                *cur = new;
                Ok(true)
            } else {
                Ok(false)
            }
        });
    let mut vault = MockCardVault::new();
    vault
        .expect_fingerprint()
        .returning(|_| Ok(Fingerprint::new(1, "abcd".into())));
    let mut channel = MockPaymentChannel::new();
    channel.expect_name().return_const("mock".to_owned());
    let mut consents = MockConsentLog::new();
    consents.expect_record().returning(|_| Ok(()));
    consents.expect_set_agreement().returning(|_, _| Ok(()));
    World {
        bindings,
        vault,
        channel,
        consents,
        written: Arc::new(Mutex::new(Vec::new())),
    }
}

fn service(w: World) -> CardService {
    let mut rates = MockRateCounter::new();
    let counter = Arc::new(Mutex::new(0u64));
    rates.expect_increment().returning(move |_, _| {
        let mut c = counter.lock().unwrap();
        *c += 1;
        Ok(*c)
    });
    let mut audit = MockAuditLog::new();
    audit.expect_append().returning(|e| {
        Ok(AuditRecord {
            seq: 1,
            event: e,
            prev_hash: String::new(),
            hash: String::new(),
        })
    });
    let mut clock = MockClock::new();
    clock
        .expect_now()
        .returning(|| Timestamp::from_unix_millis(NOW));
    let mut ids = MockIdGenerator::new();
    ids.expect_binding_id()
        .returning(|| BindingId::parse("card_1").unwrap());
    ids.expect_opaque_id().returning(|| "c1".to_owned());
    let channel: Arc<dyn cardbind_ports::channel::PaymentChannel> = Arc::new(w.channel);
    let ports = Ports {
        bindings: Arc::new(w.bindings),
        rates: Arc::new(rates),
        consents: Arc::new(w.consents),
        seen: Arc::new(MockSeenIds::new()),
        audit: Arc::new(audit),
        vault: Arc::new(w.vault),
        channels: ChannelRegistry::new(
            vec![channel],
            cardbind_domain::ChannelName::parse("mock").unwrap(),
        )
        .unwrap(),
        clock: Arc::new(clock),
        ids: Arc::new(ids),
    };
    CardService::new(ports, Policy::default())
}

fn request() -> cardbind_ports::service::BindCardRequest {
    RawBindCard {
        card_number: "4111111111111111".into(),
        expiry_month: 12,
        expiry_year: 2030,
        cvv: Some("123".into()),
        holder_name: "Alice".into(),
        id_number: "11010519491231002X".into(),
        phone: "13800138000".into(),
        channel: None,
        consent: ConsentInput {
            text_version: "v1".into(),
            text_hash: "a".repeat(64),
            ip: None,
            user_agent: None,
        },
    }
    .parse(Timestamp::from_unix_millis(NOW))
    .unwrap()
}

fn ctx() -> RequestContext {
    RequestContext {
        actor: Actor::new("backend", Role::Service),
        request_id: "r1".into(),
        client_ip: None,
    }
}

fn user() -> UserId {
    UserId::parse("alice").unwrap()
}

fn record_writes(w: &mut World) {
    let log = w.written.clone();
    w.bindings.expect_list_by_user().returning(move |_, _, _| {
        // The latest version of each written binding.
        let mut latest: Vec<Binding> = Vec::new();
        for b in log.lock().unwrap().iter() {
            latest.retain(|x| x.id != b.id);
            latest.push(b.clone());
        }
        Ok(latest)
    });
    let log = w.written.clone();
    w.bindings.expect_insert().returning(move |b| {
        log.lock().unwrap().push(b.clone());
        Ok(())
    });
    let log = w.written.clone();
    w.bindings.expect_update().returning(move |b, _| {
        log.lock().unwrap().push(b.clone());
        Ok(())
    });
}

fn no_bindings(w: &mut World) {
    w.bindings
        .expect_list_by_user()
        .returning(|_, _, _| Ok(vec![]));
}

fn sealing_works(w: &mut World) {
    w.vault
        .expect_seal()
        .returning(|_, _, p| Ok(SealedBlob::new(vec![0xAB; p.len() + 28])));
}

#[tokio::test]
async fn key_service_down_writes_nothing() {
    let mut w = world();
    no_bindings(&mut w);
    w.vault
        .expect_seal()
        .returning(|_, _, _| Err(KeyError::Unavailable("kms down".into())));
    w.bindings.expect_insert().times(0);
    w.bindings.expect_update().times(0);
    w.channel.expect_start_binding().times(0);
    let e = service(w)
        .bind(&ctx(), &user(), request())
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::KeyServiceUnavailable);
}

#[tokio::test]
async fn fingerprint_failure_writes_nothing() {
    let mut w = world();
    no_bindings(&mut w);
    w.vault = MockCardVault::new();
    w.vault
        .expect_fingerprint()
        .returning(|_| Err(KeyError::Unavailable("kms down".into())));
    w.vault.expect_seal().times(0);
    w.bindings.expect_insert().times(0);
    let e = service(w)
        .bind(&ctx(), &user(), request())
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::KeyServiceUnavailable);
}

#[tokio::test]
async fn store_down_on_insert_never_calls_the_channel() {
    let mut w = world();
    no_bindings(&mut w);
    sealing_works(&mut w);
    w.bindings
        .expect_insert()
        .returning(|_| Err(StoreError::Unavailable("down".into())));
    w.bindings.expect_update().times(0);
    w.channel.expect_start_binding().times(0);
    let e = service(w)
        .bind(&ctx(), &user(), request())
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::StorageUnavailable);
}

#[tokio::test]
async fn duplicate_insert_is_card_already_bound() {
    let mut w = world();
    no_bindings(&mut w);
    sealing_works(&mut w);
    w.bindings
        .expect_insert()
        .returning(|_| Err(StoreError::Duplicate));
    w.channel.expect_start_binding().times(0);
    let e = service(w)
        .bind(&ctx(), &user(), request())
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::CardAlreadyBound);
}

#[tokio::test]
async fn channel_timeout_sends_the_binding_to_review() {
    let mut w = world();
    sealing_works(&mut w);
    record_writes(&mut w);
    w.channel
        .expect_start_binding()
        .times(1)
        .returning(|_| Err(ChannelError::Timeout));
    let written = w.written.clone();
    let view = service(w).bind(&ctx(), &user(), request()).await.unwrap();
    assert_eq!(view.binding.status, BindingStatus::PendingReview);
    let written = written.lock().unwrap();
    assert_eq!(written.len(), 2, "reserve, then the review state");
    assert_eq!(written[0].status, BindingStatus::PendingVerification);
    assert_eq!(written[1].status, BindingStatus::PendingReview);
    assert_eq!(written[1].version, written[0].version + 1);
}

#[tokio::test]
async fn channel_refusal_fails_the_binding_with_its_code() {
    let mut w = world();
    sealing_works(&mut w);
    record_writes(&mut w);
    w.channel.expect_start_binding().returning(|_| {
        Ok(ChannelStart::Refused {
            code: "card_declined".into(),
            message: "no".into(),
        })
    });
    let written = w.written.clone();
    let e = service(w)
        .bind(&ctx(), &user(), request())
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::ChannelRejected);
    let written = written.lock().unwrap();
    let last = written.last().unwrap();
    assert_eq!(last.status, BindingStatus::Failed);
    assert_eq!(last.failure_code.as_deref(), Some("card_declined"));
}

#[tokio::test]
async fn consent_not_recorded_fails_the_binding_and_skips_the_channel() {
    let mut w = world();
    sealing_works(&mut w);
    record_writes(&mut w);
    w.consents = MockConsentLog::new();
    w.consents
        .expect_record()
        .returning(|_| Err(StoreError::Unavailable("down".into())));
    w.channel.expect_start_binding().times(0);
    let written = w.written.clone();
    let e = service(w)
        .bind(&ctx(), &user(), request())
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::StorageUnavailable);
    assert_eq!(
        written.lock().unwrap().last().unwrap().status,
        BindingStatus::Failed
    );
}

#[tokio::test]
async fn sealed_fields_are_bound_to_record_and_field() {
    let mut w = world();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    w.vault.expect_seal().returning(move |owner, ctx, p| {
        s2.lock().unwrap().push((
            owner.as_str().to_owned(),
            ctx.record.clone(),
            ctx.field,
            p.to_vec(),
        ));
        Ok(SealedBlob::new(vec![1]))
    });
    record_writes(&mut w);
    w.channel.expect_start_binding().returning(|_| {
        Ok(ChannelStart::Bound {
            channel_ref: "tok".into(),
        })
    });
    let view = service(w).bind(&ctx(), &user(), request()).await.unwrap();
    assert_eq!(view.binding.status, BindingStatus::Active);
    assert!(view.is_default);
    let seen = seen.lock().unwrap();
    let fields: Vec<_> = seen.iter().map(|s| s.2).collect();
    assert_eq!(fields, ["pan", "holder_name", "id_number", "phone"]);
    assert!(seen.iter().all(|s| s.0 == "alice" && s.1 == "card_1"));
    assert_eq!(seen[0].3, b"4111111111111111");
}

#[tokio::test]
async fn the_fourth_bind_in_a_window_is_rate_limited_before_any_key_call() {
    let mut w = world();
    w.vault = MockCardVault::new();
    w.vault.expect_fingerprint().times(0);
    let mut rates = MockRateCounter::new();
    rates.expect_increment().returning(|_, _| Ok(4));
    let mut svc_ports = service(w).ports().clone();
    svc_ports.rates = Arc::new(rates);
    let svc = CardService::new(svc_ports, Policy::default());
    match svc.bind(&ctx(), &user(), request()).await.unwrap_err() {
        cardbind_ports::ServiceError::RateLimited {
            code,
            retry_after_seconds,
        } => {
            assert_eq!(code, ErrorCode::RateLimited);
            assert!((1..=60).contains(&retry_after_seconds));
        }
        e => panic!("expected rate limit, got {e:?}"),
    }
}

#[tokio::test]
async fn a_user_cannot_bind_for_another_user() {
    let mut w = world();
    w.vault = MockCardVault::new();
    w.bindings = MockBindingStore::new();
    let svc = service(w);
    let ctx = RequestContext {
        actor: Actor::new("bob", Role::User),
        request_id: String::new(),
        client_ip: None,
    };
    let e = svc.bind(&ctx, &user(), request()).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Forbidden);
}
