//! Test support: the FerretDB (or MongoDB) the tests run against.
//!
//! `CARDBIND_TEST_MONGODB_URI` names it (`scripts/test-services.sh` starts
//! FerretDB and sets it). Unset: the tests print why and pass, except when
//! `CI=true`, where they fail: CI must never silently skip them.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cardbind_mongo::MongoStore;
use cardbind_ports::testkit::{StoreFactory, Stores};

pub const URI_VAR: &str = "CARDBIND_TEST_MONGODB_URI";
pub const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// The server URI, or `None` (after saying so) when the tests should skip.
pub fn uri() -> Option<String> {
    match std::env::var(URI_VAR) {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            if ci {
                panic!(
                    "{URI_VAR} is not set and CI=true: run the tests through \
                     scripts/test-services.sh (or .ci/run)"
                );
            }
            eprintln!(
                "skipped: {URI_VAR} is not set; run `bash scripts/test-services.sh cargo test -p cardbind-mongo`"
            );
            None
        }
    }
}

/// A database name no other test uses: `t_{pid}_{time}_{n}`.
pub fn fresh_db_name() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "t_{}_{:x}_{}",
        std::process::id(),
        nanos & 0xffff_ffff_ffff,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A store on a new database, indexes created.
pub async fn fresh_store(uri: &str) -> (MongoStore, String) {
    let name = fresh_db_name();
    let store = MongoStore::connect(uri, &name, OP_TIMEOUT)
        .await
        .expect("connect");
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

/// The contract suite's factory: one fresh database per `fresh()`.
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
