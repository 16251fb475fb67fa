//! Test support: the FerretDB (or MongoDB) the tests run against, stores on
//! fresh databases with a strict command log, and fixtures.
//!
//! `CARDBIND_TEST_MONGODB_URI` names the server (`scripts/test-services.sh`
//! starts FerretDB and sets it). Unset: the tests print why and pass,
//! except when `CI=true`, where they fail: CI must never silently skip them.
#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cardbind_domain::{
    BindingId, CardBrand, CardCap, CardSummary, CardToBind, ChannelName, ConsentGiven, Expiry,
    Fingerprint, NextAction, Role, SealedBlob, SealedCard, StartOutcome, Timestamp, UserId,
    VerificationPolicy, Wallet,
};
use cardbind_mongo::{CommandLog, MongoConfig, MongoStore};
use cardbind_ports::audit::{AuditAction, AuditActor, AuditEvent, Outcome};
use cardbind_ports::store::{CardData, WrappedKey};

pub const URI_VAR: &str = "CARDBIND_TEST_MONGODB_URI";
pub const OP_TIMEOUT: Duration = Duration::from_secs(20);

/// An instant well after any the tests' clocks hand in.
pub const BASE: Timestamp = Timestamp::from_unix_millis(1_800_000_000_000);

pub fn at(s: i64) -> Timestamp {
    BASE.plus_seconds(s)
}

/// The server URI, or `None` (after saying so) when the tests should skip.
pub fn uri() -> Option<String> {
    match std::env::var(URI_VAR) {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(
                !ci,
                "{URI_VAR} is not set and CI=true: run the tests through \
                 scripts/test-services.sh (or .ci/run)"
            );
            eprintln!(
                "skipped: {URI_VAR} is not set; run `bash scripts/test-services.sh cargo test -p cardbind-mongo`"
            );
            None
        }
    }
}

/// A name no other test uses (database names, ids): `{prefix}_{pid}_{time}_{n}`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{:x}_{}",
        std::process::id(),
        nanos & 0xffff_ffff_ffff,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn fresh_db_name() -> String {
    unique("t")
}

/// A store on `name` whose every query is checked against the declared
/// indexes and shard keys (a broken rule fails the call).
pub async fn strict_store(uri: &str, name: &str) -> (MongoStore, CommandLog) {
    let log = CommandLog::strict();
    let mut cfg = MongoConfig::new(uri, name, OP_TIMEOUT);
    cfg.monitor = Some(log.clone());
    let store = MongoStore::with_config(cfg).await.expect("connect");
    (store, log)
}

/// A strict store on a new database, indexes created.
pub async fn fresh_store(uri: &str) -> (MongoStore, String) {
    let name = fresh_db_name();
    let (store, _) = strict_store(uri, &name).await;
    store.ensure_indexes().await.expect("ensure_indexes");
    (store, name)
}

/// The raw driver on the same database, to look at what is stored.
pub async fn raw_db(uri: &str, name: &str) -> mongodb::Database {
    mongodb::Client::with_uri_str(uri)
        .await
        .expect("raw client")
        .database(name)
}

/// Runs `n` copies of `f(i)` at once on the multi-threaded runtime.
pub async fn race<T, F, Fut>(n: usize, f: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let b = barrier.clone();
            let fut = f(i);
            tokio::spawn(async move {
                b.wait().await;
                fut.await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

pub fn user(s: &str) -> UserId {
    UserId::parse(s).expect("user id")
}

pub fn binding_id(s: &str) -> BindingId {
    BindingId::parse(s).expect("binding id")
}

pub fn channel() -> ChannelName {
    ChannelName::parse("mock").expect("channel")
}

/// The PAN a test card's summary is taken from.
pub const PAN: &str = "6225880137705449";

/// A wallet of `user` with `n` cards: the first active, the second waiting
/// for an OTP (pending verification), the rest refused (failed).
pub fn wallet(user_id: &UserId, n: u32, now: Timestamp) -> Wallet {
    let mut w = Wallet::new(user_id.clone());
    for i in 0..n {
        let id = w
            .open(
                CardToBind {
                    new_id: binding_id(&format!("{}-c{i}", user_id.as_str())),
                    fingerprint: Fingerprint::new(1, format!("{i:064x}")),
                    card: CardSummary {
                        brand: CardBrand::UnionPay,
                        bin: PAN[..6].into(),
                        last4: PAN[12..].into(),
                        expiry: Expiry::restore(6, 2031).expect("expiry"),
                    },
                    consent: ConsentGiven {
                        text_version: "2026-01".into(),
                        text_hash: "ab".repeat(32),
                        ip: Some("10.0.0.1".into()),
                        user_agent: Some("app/1.0".into()),
                    }
                    .accept(channel(), now)
                    .expect("consent"),
                },
                CardCap::default(),
                now,
                &VerificationPolicy::default(),
            )
            .expect("open")
            .id()
            .clone();
        let outcome = match i {
            0 => StartOutcome::Bound {
                channel_ref: format!("agr-{}", user_id.as_str()),
            },
            1 => StartOutcome::ActionRequired {
                channel_ref: "r1".into(),
                action: NextAction::Otp {
                    phone_hint: "+86****8000".into(),
                },
            },
            _ => StartOutcome::Refused {
                code: cardbind_domain::ChannelCode::from_channel("isv.declined"),
            },
        };
        let _: Result<(), cardbind_domain::RuleRefusal> =
            w.change(&id, |b| b.apply_start(outcome, now));
    }
    w
}

pub fn event(
    action: AuditAction,
    user_id: Option<&UserId>,
    binding: Option<&BindingId>,
    when: Timestamp,
) -> AuditEvent {
    AuditEvent {
        at: when,
        actor: AuditActor {
            subject: user_id.map_or("system".into(), |u| u.as_str().to_owned()),
            role: user_id.map(|_| Role::User),
        },
        action,
        user_id: user_id.cloned(),
        binding_id: binding.cloned(),
        outcome: Outcome::Ok,
        request_id: Some(unique("req")),
        client_ip: Some("10.0.0.1".into()),
        detail: None,
    }
}

/// Sealed bytes as a key adapter would make them (opaque; here not
/// derived from any card data at all).
pub fn sealed(tag: u8) -> SealedCard {
    let blob = |f: u8| SealedBlob::new((0..48).map(|i| i ^ f ^ tag).collect());
    SealedCard {
        pan: blob(1),
        holder_name: blob(2),
        id_number: blob(3),
        phone: blob(4),
    }
}

pub fn card_data(user_id: &UserId, binding: &BindingId, generation: u32) -> CardData {
    CardData {
        binding: binding.clone(),
        user: user_id.clone(),
        generation,
        sealed: sealed(generation as u8),
    }
}

pub fn wrapped_key(owner: &str, bytes: &[u8], version: u64) -> WrappedKey {
    WrappedKey {
        owner: owner.to_owned(),
        master_key_id: "local:k1".into(),
        wrapped: bytes.to_vec(),
        version,
        created_at: BASE,
    }
}
