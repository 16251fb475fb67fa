//! The BIN table store contract suite on the SQLite adapter, and an
//! imported table surviving a restart.

use std::sync::Arc;

use cardbind_domain::Timestamp;
use cardbind_ports::bins::BinTableStore;
use cardbind_sqlite::{SqliteOptions, SqliteStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bin_table_contract_holds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store =
        SqliteStore::open(dir.path().join("bins.sqlite3"), SqliteOptions::default()).expect("open");
    cardbind_ports::bins::testkit::run_all(Arc::new(store.bin_tables())).await;
}

#[tokio::test]
async fn an_imported_table_survives_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bins.sqlite3");
    let table = cardbind_ports::bins::testkit::table(622_000, 50);
    let v = {
        let store = SqliteStore::open(&path, SqliteOptions::default()).expect("open");
        store
            .replace(&table, Timestamp::from_unix_millis(7))
            .await
            .expect("replace")
    };
    let store = SqliteStore::open(&path, SqliteOptions::default()).expect("reopen");
    let got = store.load().await.expect("load").expect("a table");
    assert_eq!(got.version, v);
    assert_eq!(got.table, table);
}
