//! After `POST /v1/admin/users/{id}/erase`, a raw scan of the store — every
//! MongoDB collection, every table of the embedded SQLite file — finds no
//! sealed card field of that user and none of their key material, while
//! another user's data is still there (the scan sees what it should).
//!
//! The sealed fields and the wrapped key are read raw before the erasure
//! and looked for, byte for byte, in every document and every row after
//! it; on the embedded store also in the files themselves (database and
//! WAL).
//!
//! The MongoDB case needs `CARDBIND_TEST_MONGODB_URI`: run under `bash
//! scripts/test-services.sh`.

// Test code: helpers outside #[test] fns fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use cardbind::config::{Config, MockModeSetting};
use cardbind_tests::{idem_key, mongo_documents, user_id, Brand, Storage, TestApp, TestCard};
use mongodb::bson::{Bson, Document};

/// A field of a stored record, as far as this scan cares.
#[derive(Clone, Debug)]
enum Value {
    Text(String),
    Bytes(Vec<u8>),
    Other,
}

/// One document or row.
#[derive(Clone, Debug)]
struct Record {
    table: String,
    /// Nested fields of a document as `a.b`.
    fields: Vec<(String, Value)>,
    /// The bytes to search: a document's BSON, a row's text and blob values.
    raw: Vec<Vec<u8>>,
}

impl Record {
    fn text(&self, field: &str) -> Option<&str> {
        self.fields.iter().find_map(|(k, v)| match v {
            Value::Text(s) if k == field => Some(s.as_str()),
            _ => None,
        })
    }

    fn bytes(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.fields.iter().filter_map(|(k, v)| match v {
            Value::Bytes(b) => Some((k.as_str(), b.as_slice())),
            _ => None,
        })
    }

    fn holds(&self, needle: &[u8]) -> bool {
        self.raw.iter().any(|r| contains(r, needle))
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn flatten(prefix: &str, d: &Document, out: &mut Vec<(String, Value)>) {
    for (k, v) in d {
        let name = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Bson::String(s) => out.push((name, Value::Text(s.clone()))),
            Bson::Binary(b) => out.push((name, Value::Bytes(b.bytes.clone()))),
            Bson::Document(inner) => flatten(&name, inner, out),
            Bson::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    match x {
                        Bson::Document(inner) => flatten(&format!("{name}.{i}"), inner, out),
                        Bson::String(s) => {
                            out.push((format!("{name}.{i}"), Value::Text(s.clone())))
                        }
                        Bson::Binary(b) => {
                            out.push((format!("{name}.{i}"), Value::Bytes(b.bytes.clone())))
                        }
                        _ => {}
                    }
                }
            }
            _ => out.push((name, Value::Other)),
        }
    }
}

/// Every document of every collection of the app's database.
async fn scan_mongo(app: &TestApp) -> Vec<Record> {
    let docs = mongo_documents(&app.config.storage.uri, &app.config.storage.database).await;
    docs.into_iter()
        .map(|(table, d)| {
            let mut fields = Vec::new();
            flatten("", &d, &mut fields);
            let mut raw = Vec::new();
            d.to_writer(&mut raw).expect("bson bytes");
            Record {
                table,
                fields,
                raw: vec![raw],
            }
        })
        .collect()
}

/// Every row of every table of the embedded store's file (read while the
/// service runs: WAL mode lets a reader in).
fn scan_sqlite(path: &Path) -> Vec<Record> {
    use rusqlite::types::ValueRef;
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .expect("open the embedded store read-only");
    let mut tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .and_then(|mut s| {
            s.query_map([], |r| r.get(0))
                .and_then(|rows| rows.collect::<Result<Vec<String>, _>>())
        })
        .expect("tables");
    tables.sort();
    let mut out = Vec::new();
    for t in tables {
        let mut s = conn
            .prepare(&format!("SELECT * FROM \"{t}\""))
            .expect("select");
        let names: Vec<String> = s.column_names().map(str::to_owned).collect();
        let mut rows = s.query([]).expect("rows");
        while let Some(row) = rows.next().expect("row") {
            let mut fields = Vec::new();
            let mut raw = Vec::new();
            for (i, n) in names.iter().enumerate() {
                let v = match row.get_ref(i).expect("value") {
                    ValueRef::Text(b) => {
                        raw.push(b.to_vec());
                        Value::Text(String::from_utf8_lossy(b).into_owned())
                    }
                    ValueRef::Blob(b) => {
                        raw.push(b.to_vec());
                        Value::Bytes(b.to_vec())
                    }
                    _ => Value::Other,
                };
                fields.push((n.clone(), v));
            }
            out.push(Record {
                table: t.clone(),
                fields,
                raw,
            });
        }
    }
    out
}

/// The sealed card fields stored for `user`.
fn sealed_of(records: &[Record], user: &str) -> Vec<Vec<u8>> {
    records
        .iter()
        .filter(|r| r.table == "card_data" && r.text("user") == Some(user))
        .flat_map(|r| r.bytes().map(|(_, b)| b.to_vec()).collect::<Vec<_>>())
        .collect()
}

/// The wrapped data key(s) of `user`: key material.
fn keys_of(records: &[Record], user: &str) -> Vec<Vec<u8>> {
    records
        .iter()
        .filter(|r| r.table == "data_keys" && r.text("owner") == Some(user))
        .flat_map(|r| {
            r.bytes()
                .filter(|(k, b)| *k == "wrapped" && !b.is_empty())
                .map(|(_, b)| b.to_vec())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn tweak(c: &mut Config) {
    c.channels.mock.mode = MockModeSetting::Instant;
    c.channels
        .mock
        .card_modes
        .insert("0003".into(), MockModeSetting::Otp);
    c.channels
        .mock
        .card_modes
        .insert("0004".into(), MockModeSetting::Timeout);
    c.channels.mock.timeout_after_ms = 5_000;
    c.channels.resilience.timeout_ms = 200;
    c.channels.resilience.max_retries = 0;
    c.channels.resilience.breaker_failures = 1000;
    c.limits.binds_per_user_per_minute = 100;
    c.limits.binds_per_ip_per_minute = 1000;
}

/// Gives `gone` a card in every status that keeps card data (active,
/// waiting for an OTP, in review) and one unbound, and `kept` one active
/// card.
async fn populate(app: &TestApp, gone: &str, kept: &str) {
    app.bind(gone, &TestCard::visa(), &idem_key())
        .await
        .expect_status(201);
    let v = app
        .bind(
            gone,
            &TestCard::ending(Brand::UnionPay, "0003"),
            &idem_key(),
        )
        .await
        .expect_status(201);
    assert_eq!(v["status"], "pending_verification", "{v}");
    let v = app
        .bind(
            gone,
            &TestCard::ending(Brand::Mastercard, "0004"),
            &idem_key(),
        )
        .await
        .expect_status(202);
    assert_eq!(v["status"], "pending_review", "{v}");
    let v = app
        .bind(gone, &TestCard::new(Brand::Amex), &idem_key())
        .await
        .expect_status(201);
    app.unbind(gone, v["id"].as_str().expect("id"))
        .await
        .expect_status(200);
    app.bind(kept, &TestCard::new(Brand::Jcb), &idem_key())
        .await
        .expect_status(201);
}

async fn erase(app: &TestApp, user: &str) {
    let r = app
        .post_empty(&format!("/v1/admin/users/{user}/erase"), &app.admin_token())
        .await;
    let v = r.expect_status(200);
    assert_eq!(v["unbound_cards"], 3, "{v}");
    assert_eq!(v["key_destroyed"], true, "{v}");
}

/// What the scan must (not) find, before and after the erasure.
struct Secrets {
    gone_sealed: Vec<Vec<u8>>,
    gone_keys: Vec<Vec<u8>>,
    kept_sealed: Vec<Vec<u8>>,
    kept_keys: Vec<Vec<u8>>,
}

fn secrets_before(records: &[Record], gone: &str, kept: &str) -> Secrets {
    let s = Secrets {
        gone_sealed: sealed_of(records, gone),
        gone_keys: keys_of(records, gone),
        kept_sealed: sealed_of(records, kept),
        kept_keys: keys_of(records, kept),
    };
    // Three cards keep data (4 sealed fields each); the unbound one's went
    // with its unbind.
    assert_eq!(s.gone_sealed.len(), 3 * 4, "sealed fields of {gone}");
    assert_eq!(s.gone_keys.len(), 1, "key of {gone}");
    assert_eq!(s.kept_sealed.len(), 4, "sealed fields of {kept}");
    assert_eq!(s.kept_keys.len(), 1, "key of {kept}");
    for b in s.gone_sealed.iter().chain(&s.gone_keys) {
        assert!(b.len() >= 16, "a sealed value or key this short: {b:?}");
    }
    s
}

fn check_after(records: &[Record], s: &Secrets, gone: &str, what: &str) {
    for r in records {
        for (i, b) in s.gone_sealed.iter().enumerate() {
            assert!(
                !r.holds(b),
                "{what}: sealed field {i} of the erased user is still in `{}` (fields {:?})",
                r.table,
                r.fields.iter().map(|(k, _)| k).collect::<Vec<_>>()
            );
        }
        for b in &s.gone_keys {
            assert!(
                !r.holds(b),
                "{what}: the erased user's wrapped key is still in `{}`",
                r.table
            );
        }
        if ["card_data", "channel_refs", "review_queue"].contains(&r.table.as_str()) {
            assert_ne!(
                r.text("user"),
                Some(gone),
                "{what}: `{}` still names the erased user: {:?}",
                r.table,
                r.fields
            );
        }
    }
    assert_eq!(keys_of(records, gone), Vec::<Vec<u8>>::new(), "{what}");
    // The other user's data is untouched: the scan reads what it should.
    for b in s.kept_sealed.iter().chain(&s.kept_keys) {
        assert!(
            records.iter().any(|r| r.holds(b)),
            "{what}: another user's data is gone too"
        );
    }
    let tables: std::collections::BTreeSet<&str> =
        records.iter().map(|r| r.table.as_str()).collect();
    eprintln!("{what}: {} records scanned in {tables:?}", records.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_erasure_no_collection_holds_the_users_sealed_data_or_key() {
    let Some(app) = TestApp::spawn_on(Storage::Mongo, tweak).await else {
        return;
    };
    let (gone, kept) = (user_id("gone"), user_id("kept"));
    populate(&app, &gone, &kept).await;
    let s = secrets_before(&scan_mongo(&app).await, &gone, &kept);
    erase(&app, &gone).await;
    check_after(&scan_mongo(&app).await, &s, &gone, "MongoDB");
}

/// The bytes of every file of the embedded store (database, WAL).
fn file_bytes(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for e in std::fs::read_dir(dir).expect("data dir").flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with("cardbind.sqlite3") {
            all.extend(std::fs::read(e.path()).unwrap_or_default());
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_erasure_no_table_or_file_of_the_embedded_store_holds_them() {
    let app = TestApp::spawn_on(Storage::Embedded, tweak)
        .await
        .expect("the embedded store never skips");
    let db = app.data_dir().join("cardbind.sqlite3");
    let (gone, kept) = (user_id("gone"), user_id("kept"));
    populate(&app, &gone, &kept).await;
    let s = secrets_before(&scan_sqlite(&db), &gone, &kept);
    let files = file_bytes(app.data_dir());
    assert!(
        s.gone_keys.iter().all(|k| contains(&files, k)),
        "the file scan finds the key before the erasure"
    );
    erase(&app, &gone).await;
    check_after(&scan_sqlite(&db), &s, &gone, "SQLite");
    // Deleted rows are zeroed (`secure_delete`) and an erased key
    // truncates the WAL soon after: no copy stays in the files.
    let mut left = usize::MAX;
    for _ in 0..100 {
        let files = file_bytes(app.data_dir());
        left = s
            .gone_sealed
            .iter()
            .chain(&s.gone_keys)
            .filter(|b| contains(&files, b))
            .count();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        left, 0,
        "sealed fields or key bytes of the erased user left in the files"
    );
}
