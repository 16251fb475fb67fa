//! The storage contract suite (`cardbind_ports::testkit`) on SQLite: every
//! check on a new database file of its own.
#![allow(clippy::expect_used)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use cardbind_ports::testkit::Stores;
use cardbind_sqlite::{SqliteOptions, SqliteStore};

/// This run's directory (under cargo's temporary directory for tests);
/// those of earlier runs are removed when it is made.
fn run_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let parent = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sqlite-contract");
        let _ = std::fs::remove_dir_all(&parent);
        parent.join(std::process::id().to_string())
    })
}

fn fresh() -> Stores {
    static N: AtomicU64 = AtomicU64::new(0);
    let path = run_dir().join(format!("{}.sqlite3", N.fetch_add(1, Ordering::Relaxed)));
    let store = SqliteStore::open(path, SqliteOptions::default()).expect("open");
    Stores::all_in_one(store)
}

cardbind_ports::contract_suite!(|| async { fresh() });
