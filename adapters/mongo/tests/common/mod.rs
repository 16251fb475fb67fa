//! Test support: the FerretDB (or MongoDB) the tests run against, stores on
//! fresh databases with a strict command log, the contract suite's factory.
//!
//! `CARDBIND_TEST_MONGODB_URI` names the server (`scripts/test-services.sh`
//! starts FerretDB and sets it). Unset: the tests print why and pass,
//! except when `CI=true`, where they fail: CI must never silently skip them.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cardbind_domain::{CardCap, Timestamp, UserId, VerificationPolicy, Wallet};
use cardbind_mongo::{CommandLog, MongoConfig, MongoStore};
use cardbind_ports::testkit::{card, StoreFactory, Stores};

pub const URI_VAR: &str = "CARDBIND_TEST_MONGODB_URI";
pub const OP_TIMEOUT: Duration = Duration::from_secs(20);

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

/// The contract suite's factory: a strict store on a new database per
/// `fresh()` (the isolation the suite asks for), indexes created.
pub struct MongoFactory {
    pub uri: String,
}

/// `Some(factory)`, or `None` when the tests are to be skipped.
pub fn factory() -> Option<MongoFactory> {
    uri().map(|uri| MongoFactory { uri })
}

#[async_trait::async_trait]
impl StoreFactory for MongoFactory {
    async fn fresh(&self) -> Stores {
        let (store, _) = fresh_store(&self.uri).await;
        Stores::all_in_one(store)
    }
}

/// The PAN whose summary the card of [`pan_wallet`] shows.
pub const PAN: &str = "6225880137705449";

/// A wallet of `user` with one card whose summary is taken from [`PAN`].
pub fn pan_wallet(user: &UserId, now: Timestamp) -> Wallet {
    let mut c = card(1, now);
    c.card.bin = PAN[..6].to_owned();
    c.card.last4 = PAN[12..].to_owned();
    let mut w = Wallet::new(user.clone());
    w.open(c, CardCap::default(), now, &VerificationPolicy::default())
        .expect("open");
    w
}
