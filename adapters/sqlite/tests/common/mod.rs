//! Helpers shared by the tests and the bench.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;

use cardbind_domain::{
    BindingId, CardBrand, CardCap, CardSummary, CardToBind, ChannelName, ConsentGiven, Expiry,
    Fingerprint, NextAction, StartOutcome, Timestamp, UserId, VerificationPolicy, Wallet,
};
use cardbind_ports::audit::{AuditAction, AuditActor, AuditEvent, Outcome};
use cardbind_sqlite::{SqliteOptions, SqliteStore};

/// An instant `s` seconds after a fixed base.
pub fn t(s: i64) -> Timestamp {
    Timestamp::from_unix_millis(1_800_000_000_000 + s * 1000)
}

pub fn uid(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

pub fn bid(s: &str) -> BindingId {
    BindingId::parse(s).unwrap()
}

pub fn channel(s: &str) -> ChannelName {
    ChannelName::parse(s).unwrap()
}

/// A store on a new file in a new directory (kept while the guard lives).
pub fn fresh() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(
        dir.path().join("db/cardbind.sqlite3"),
        SqliteOptions::default(),
    )
    .unwrap();
    (dir, store)
}

/// Every port of a store on a new file.
pub fn fresh_ports() -> (tempfile::TempDir, cardbind_sqlite::SqlitePorts) {
    let (d, s) = fresh();
    (d, s.ports())
}

/// A wallet of `cards` cards: even ones bound (active), odd ones waiting
/// for an OTP (pending_verification) when `pending`, else bound too.
pub fn wallet(user: &UserId, cards: u32, pending: bool, now: Timestamp) -> Wallet {
    let mut w = Wallet::new(user.clone());
    for i in 0..cards {
        let id = w
            .open(
                CardToBind {
                    new_id: bid(&format!("{}-card-{i}", user.as_str())),
                    fingerprint: Fingerprint::new(1, format!("{i:08x}{:x}", user.as_str().len())),
                    card: CardSummary {
                        brand: CardBrand::UnionPay,
                        bin: "622588".into(),
                        last4: "4444".into(),
                        expiry: Expiry::restore(6, 2031).unwrap(),
                        facts: None,
                    },
                    consent: ConsentGiven {
                        text_version: "2026-01".into(),
                        text_hash: "ab".repeat(32),
                        ip: Some("10.0.0.1".into()),
                        user_agent: Some("app/1.0".into()),
                    }
                    .accept(channel("mock"), now)
                    .unwrap(),
                    generation: i + 1,
                    bind_key: None,
                },
                CardCap { max: 100 },
                now,
                &VerificationPolicy::default(),
            )
            .unwrap()
            .id()
            .clone();
        let outcome = if pending && i % 2 == 1 {
            StartOutcome::ActionRequired {
                channel_ref: format!("ref-{i}"),
                action: NextAction::Otp {
                    phone_hint: "138****0000".into(),
                },
            }
        } else {
            StartOutcome::Bound {
                channel_ref: format!("agreement-{i}"),
            }
        };
        let _: Result<(), cardbind_domain::StateRefusal> =
            w.change(&id, |b| b.apply_start(outcome, now));
    }
    w
}

pub fn event(
    user: Option<&UserId>,
    binding: Option<&str>,
    action: AuditAction,
    at: Timestamp,
) -> AuditEvent {
    AuditEvent {
        at,
        actor: AuditActor::service("test"),
        action,
        user_id: user.cloned(),
        binding_id: binding.map(bid),
        outcome: Outcome::Ok,
        request_id: Some("req-1".into()),
        client_ip: None,
        detail: Some("active -> frozen".into()),
    }
}

/// Runs `n` futures at once on the runtime's threads; their outputs in
/// order.
pub async fn race<T, F>(n: usize, make: impl Fn(usize) -> F) -> Vec<T>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let fut = make(i);
            let b = barrier.clone();
            tokio::spawn(async move {
                b.wait().await;
                fut.await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
