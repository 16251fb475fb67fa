//! The file: what survives a restart and a killed process, what is in it
//! (no card data in clear), what a damaged row gives, which files open.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use cardbind_domain::{SealedBlob, SealedCard};
use cardbind_ports::audit::{
    verify_links, AuditAction, AuditFilter, STORED_WALLET_ALTERED, STORED_WALLET_MISSING,
};
use cardbind_ports::store::{
    CardData, Claim, Lease, RateTake, RateWindow, RefTarget, ReviewEntry, StoredResponse,
    WrappedKey,
};
use cardbind_ports::StoreError;
use cardbind_sqlite::{Durability, OpenError, SqliteOptions, SqliteStore, APPLICATION_ID};
use common::*;

fn open(path: &Path) -> SqliteStore {
    SqliteStore::open(path, SqliteOptions::default()).unwrap()
}

/// Opens the store at `path` bounded to `max_size_mib`.
fn open_bounded(path: &Path, max_size_mib: u32) -> SqliteStore {
    let options = SqliteOptions {
        max_size_mib,
        ..SqliteOptions::default()
    };
    SqliteStore::open(path, options).unwrap()
}

const PAN: &str = "6222021234567890123";
const PHONE: &str = "13800138000";
const RESIDENT_ID: &str = "11010119900307123X";
const HOLDER: &str = "ZHANG SANFENG";

/// Seals like the vault does (AES-256-GCM), with a throwaway key.
fn seal(field: &str, plain: &str) -> SealedBlob {
    let cipher = Aes256Gcm::new_from_slice(&[7u8; 32]).unwrap();
    let mut nonce = [0u8; 12];
    nonce[..field.len().min(12)].copy_from_slice(&field.as_bytes()[..field.len().min(12)]);
    let mut out = nonce.to_vec();
    out.extend(
        cipher
            .encrypt(Nonce::from_slice(&nonce), plain.as_bytes())
            .unwrap(),
    );
    SealedBlob::new(out)
}

fn sealed_card() -> SealedCard {
    SealedCard {
        pan: seal("pan", PAN),
        holder_name: seal("holder_name", HOLDER),
        id_number: seal("id_number", RESIDENT_ID),
        phone: seal("phone", PHONE),
    }
}

fn response() -> StoredResponse {
    StoredResponse {
        status: 201,
        content_type: "application/json".into(),
        body: br#"{"card_id":"u1-card-0","last4":"0123"}"#.to_vec(),
    }
}

/// Writes one of everything; returns what reading it back must give.
async fn write_everything(s: &SqliteStore) -> cardbind_domain::Wallet {
    let p = s.ports();
    let u = uid("u1");
    let w = wallet(&u, 3, true, t(0));
    let h = p
        .wallets
        .commit(
            &w,
            None,
            vec![event(
                Some(&u),
                Some("u1-card-0"),
                AuditAction::BindingCreate,
                t(0),
            )],
            t(0),
        )
        .await
        .unwrap();
    let w2 = wallet(&u, 4, true, t(1));
    p.wallets
        .commit(
            &w2,
            Some(h),
            vec![event(
                Some(&u),
                Some("u1-card-3"),
                AuditAction::BindingCreate,
                t(1),
            )],
            t(1),
        )
        .await
        .unwrap();
    p.audit
        .append_system(
            vec![event(None, None, AuditAction::BinTableImport, t(1))],
            t(1),
        )
        .await
        .unwrap();
    p.card_data
        .put(&CardData {
            binding: bid("u1-card-0"),
            user: u.clone(),
            generation: 1,
            sealed: sealed_card(),
        })
        .await
        .unwrap();
    p.channel_refs
        .put(
            &channel("alipay"),
            "2088-1",
            &RefTarget {
                user: u.clone(),
                binding: bid("u1-card-0"),
            },
            1,
        )
        .await
        .unwrap();
    let Claim::Acquired(lease) = p
        .idempotency
        .claim("backend", "idem-1", "hash-1", t(0), t(30))
        .await
        .unwrap()
    else {
        panic!("claim")
    };
    assert!(p
        .idempotency
        .complete("backend", "idem-1", lease, &response())
        .await
        .unwrap());
    p.idempotency
        .claim("backend", "idem-2", "hash-2", t(0), t(30))
        .await
        .unwrap();
    let window = RateWindow {
        key: "bind:user:u1:m".into(),
        limit: 5,
        expires_at: t(60),
    };
    p.rates.take(&[window], t(0)).await.unwrap();
    p.seen.mark("notify", "n-1", t(0), t(600)).await.unwrap();
    p.data_keys
        .put_if_absent(&WrappedKey {
            owner: "u1".into(),
            master_key_id: "local:1".into(),
            wrapped: vec![9; 40],
            version: 1,
            created_at: t(0),
        })
        .await
        .unwrap();
    p.review
        .add(&ReviewEntry {
            binding: bid("u1-card-1"),
            user: u,
            since: t(1),
            link: 3,
        })
        .await
        .unwrap();
    w2
}

async fn check_everything(s: &SqliteStore, w: &cardbind_domain::Wallet) {
    check_reads(s, w).await;
    let p = s.ports();
    assert_eq!(
        p.idempotency
            .claim("backend", "idem-1", "hash-1", t(5), t(35))
            .await,
        Ok(Claim::Completed(response()))
    );
    assert_eq!(
        p.idempotency
            .claim("backend", "idem-2", "hash-2", t(5), t(35))
            .await,
        Ok(Claim::InProgress { lease_until: t(30) }),
        "a lease in force stays in force"
    );
    assert_eq!(
        p.idempotency
            .complete("backend", "idem-2", Lease { attempt: 1 }, &response())
            .await,
        Ok(true),
        "its holder can still finish"
    );
    let window = RateWindow {
        key: "bind:user:u1:m".into(),
        limit: 5,
        expires_at: t(60),
    };
    assert_eq!(
        p.rates.take(&[window], t(2)).await,
        Ok(vec![RateTake::Taken(2)]),
        "slots taken before stay taken"
    );
    assert_eq!(p.seen.seen("notify", "n-1", t(2)).await, Ok(true));
}

/// What [`write_everything`] wrote, read back without writing.
async fn check_reads(s: &SqliteStore, w: &cardbind_domain::Wallet) {
    let p = s.ports();
    let u = uid("u1");
    let stored = p.wallets.load(&u).await.unwrap().unwrap();
    assert_eq!(&stored.wallet, w, "every binding and consent");
    assert_eq!(stored.head.seq, 2);
    let links = p.audit.links(None, 100).await.unwrap();
    assert_eq!(links.len(), 3);
    assert_eq!(verify_links(&links), Ok(3));
    assert_eq!(
        p.audit
            .list(&AuditFilter::default(), None, 100)
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        p.card_data
            .get(&u, &bid("u1-card-0"), 1)
            .await
            .unwrap()
            .unwrap()
            .sealed,
        sealed_card()
    );
    assert_eq!(
        p.card_data.owner(&bid("u1-card-0")).await,
        Ok(Some(u.clone()))
    );
    assert_eq!(
        p.channel_refs.find(&channel("alipay"), "2088-1").await,
        Ok(Some(RefTarget {
            user: u.clone(),
            binding: bid("u1-card-0")
        }))
    );
    assert_eq!(
        p.data_keys.get("u1").await.unwrap().unwrap().wrapped,
        vec![9; 40]
    );
    let queued = p.review.get(&bid("u1-card-1")).await.unwrap().unwrap();
    assert_eq!((queued.since, queued.link), (t(1), 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/cardbind.sqlite3");
    let s = open(&path);
    let w = write_everything(&s).await;
    drop(s);
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    assert!(
        std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
        "closed cleanly: the WAL was copied in and emptied"
    );
    let s = open(&path);
    check_everything(&s, &w).await;
    drop(s);
    // And once more, after writes made by the reopened store.
    let s = open(&path);
    assert_eq!(
        s.ports()
            .rates
            .take(
                &[RateWindow {
                    key: "bind:user:u1:m".into(),
                    limit: 5,
                    expires_at: t(60),
                }],
                t(3)
            )
            .await,
        Ok(vec![RateTake::Taken(3)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_durability_writes_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cardbind.sqlite3");
    let full = SqliteOptions {
        durability: Durability::Full,
        ..SqliteOptions::default()
    };
    let s = SqliteStore::open(&path, full).unwrap();
    let w = write_everything(&s).await;
    drop(s);
    check_everything(&open(&path), &w).await;
}

const CHILD: &str = "CARDBIND_SQLITE_TEST_CHILD";

/// The test runs twice: as the parent, which starts the test binary again
/// to run this one test as a child (with [`CHILD`] naming the store's
/// file), waits until the child says its writes were acknowledged, kills
/// it and reads the store; and as that child, which writes, says so, and
/// waits to be killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_killed_process() {
    if let Ok(path) = std::env::var(CHILD) {
        let s = open(Path::new(&path));
        write_everything(&s).await;
        println!("WRITTEN");
        std::thread::sleep(std::time::Duration::from_secs(600));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cardbind.sqlite3");
    // This test's name as the test harness lists it: its module path in
    // the crate's one test binary, less the crate's name.
    let (_, module) = module_path!().split_once("::").unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &format!("{module}::acknowledged_writes_survive_a_killed_process"),
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, &path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let written = BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("WRITTEN"));
    assert!(written, "the child wrote");
    child.kill().unwrap(); // SIGKILL: no checkpoint, no close
    child.wait().unwrap();
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    assert!(
        std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0) > 0,
        "the writes were still in the WAL"
    );
    let s = open(&path);
    let u = uid("u1");
    check_everything(&s, &wallet(&u, 4, true, t(1))).await;
}

/// The bytes of every file of the store (database, WAL, shared memory).
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            out.extend(std::fs::read(&p).unwrap());
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_card_data_in_clear_in_any_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cardbind.sqlite3");
    let s = open(&path);
    write_everything(&s).await;
    for (when, bytes) in [
        ("open", all_bytes(dir.path())),
        ("closed", {
            drop(s);
            all_bytes(dir.path())
        }),
    ] {
        // The scan sees stored text (it would find card data in clear).
        assert!(
            contains(&bytes, "u1-card-0"),
            "{when}: the scan reads the files"
        );
        assert!(contains(&bytes, "app/1.0"), "{when}: consents are there");
        for secret in [PAN, PHONE, RESIDENT_ID, HOLDER, &PAN[6..15]] {
            assert!(!contains(&bytes, secret), "{when}: card data in clear");
        }
    }
}

/// Stores a data key for `erase-me` whose wrapped bytes are `marker`.
async fn put_marked_key(s: &SqliteStore, marker: &str) {
    s.ports()
        .data_keys
        .put_if_absent(&WrappedKey {
            owner: "erase-me".into(),
            master_key_id: "local:1".into(),
            wrapped: marker.as_bytes().to_vec(),
            version: 1,
            created_at: t(0),
        })
        .await
        .unwrap();
}

/// Whether `needle` is gone from every file in `dir` within about 10 s
/// (at once, as a rule: the bound is for a loaded machine).
async fn gone_from_the_files(dir: &Path, needle: &str) -> bool {
    for _ in 0..500 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        if !contains(&all_bytes(dir), needle) {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_key_leaves_no_copy_in_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir.path().join("cardbind.sqlite3"));
    let needle = "WRAPPED-KEY-MATERIAL-0123456789";
    put_marked_key(&s, needle).await;
    assert!(
        contains(&all_bytes(dir.path()), needle),
        "the scan finds it"
    );
    assert_eq!(s.ports().data_keys.delete("erase-me").await, Ok(true));
    // The WAL is truncated soon after an erasure.
    assert!(
        gone_from_the_files(dir.path(), needle).await,
        "no copy of the key is left in the database or its WAL"
    );
}

/// `PRAGMA` `name` of the file, read on a connection of its own.
fn pragma(path: &Path, name: &str) -> i64 {
    let c = rusqlite::Connection::open(path).unwrap();
    c.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
        .unwrap()
}

/// The file's page count and free pages, read in one statement so both
/// come from one snapshot: read one after the other, a vacuum committing
/// between them paired the page count from before it with the free count
/// from after it.
fn pages_and_free(path: &Path) -> (i64, i64) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.query_row(
        "SELECT p.page_count, f.freelist_count \
         FROM pragma_page_count() AS p, pragma_freelist_count() AS f",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

/// Stores 5,000 answers of about a page each under keys `{prefix}N`.
async fn fill_answers(p: &cardbind_sqlite::SqlitePorts, prefix: &str) {
    let body = vec![b'x'; 4000];
    for i in 0..5000 {
        let key = format!("{prefix}{i}");
        let lease = match p.idempotency.claim("s", &key, "h", t(0), t(60)).await {
            Ok(Claim::Acquired(l)) => l,
            other => panic!("{other:?}"),
        };
        let r = StoredResponse {
            body: body.clone(),
            ..response()
        };
        assert_eq!(p.idempotency.complete("s", &key, lease, &r).await, Ok(true));
    }
}

/// A new file keeps the pages a purge frees (no pointer map to keep up:
/// `auto_vacuum = NONE`), and the next writes take them instead of
/// growing the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_frees_pages_that_the_next_writes_take() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cardbind.sqlite3");
    let s = open(&path);
    let p = s.ports();
    fill_answers(&p, "a").await;
    let full = pragma(&path, "page_count");
    assert!(full > 5000, "{full} pages");
    assert_eq!(p.idempotency.purge_created_before(t(1)).await, Ok(5000));
    let (pages, free) = pages_and_free(&path);
    assert_eq!(pages, full, "the file kept its pages");
    assert!(free > 4500, "{free} of {pages} pages free after the purge");
    fill_answers(&p, "b").await;
    let (again, free) = pages_and_free(&path);
    assert!(
        again <= full + full / 20 && free < 100,
        "{full} pages before the purge, {again} after as much again, {free} free"
    );
}

/// The value of the unlabelled sample `name` in the registry's text, if
/// exported.
fn sample(registry: &prometheus::Registry, name: &str) -> Option<i64> {
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// The size gauges follow the file: the database's bytes are its pages,
/// what a purge frees shows as free bytes (and goes once later writes
/// take it), and the bound is exported when one is set, not otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_size_gauges_show_the_database_its_free_pages_and_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cardbind.sqlite3");
    let s = open_bounded(&path, 64);
    let registry = prometheus::Registry::new();
    s.register_metrics(&registry).unwrap();
    assert_eq!(
        sample(&registry, "cardbind_sqlite_max_bytes"),
        Some(64 << 20)
    );
    let page = pragma(&path, "page_size");
    // The gauges as the file is now, within the checkpointer's second.
    let caught_up = |what: &str| {
        let (pages, free) = pages_and_free(&path);
        let want = (Some(pages * page), Some(free * page));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let got = (
                sample(&registry, "cardbind_sqlite_database_bytes"),
                sample(&registry, "cardbind_sqlite_free_bytes"),
            );
            if got == want {
                return (pages, free);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: {got:?}, the file {want:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    let p = s.ports();
    fill_answers(&p, "a").await;
    let (full, free) = caught_up("filled");
    assert!(full > 5000 && free < 100, "{full} pages, {free} free");
    assert_eq!(p.idempotency.purge_created_before(t(1)).await, Ok(5000));
    let (pages, free) = caught_up("purged");
    assert!(pages == full && free > 4500, "{pages} pages, {free} free");
    fill_answers(&p, "b").await;
    let (_, free) = caught_up("filled again");
    assert!(free < 100, "{free} free");
    drop(s);

    let s = open(&path);
    let registry = prometheus::Registry::new();
    s.register_metrics(&registry).unwrap();
    assert_eq!(sample(&registry, "cardbind_sqlite_max_bytes"), None);
    assert!(sample(&registry, "cardbind_sqlite_database_bytes").is_some_and(|b| b > 5000 * page));
}

/// A file made before new files stopped keeping a pointer map
/// (`auto_vacuum = INCREMENTAL`) still gets the pages a purge frees given
/// back to the file system.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_gives_an_incremental_files_freed_pages_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cardbind.sqlite3");
    drop(open(&path));
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")
        .unwrap();
    drop(c);
    assert_eq!(pragma(&path, "auto_vacuum"), 2);
    let s = open(&path);
    let p = s.ports();
    fill_answers(&p, "a").await;
    let full = pragma(&path, "page_count");
    assert!(full > 5000, "{full} pages");
    assert_eq!(p.idempotency.purge_created_before(t(1)).await, Ok(5000));
    // The writer vacuums once it has answered the purge's last step.
    let mut seen = (full, full);
    for _ in 0..500 {
        seen = pages_and_free(&path);
        if seen.1 == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (pages, free) = seen;
    assert!(
        pages < full / 10 && free < 100,
        "{full} pages before the purge, {pages} after, {free} of them free"
    );
    assert_eq!(pragma(&path, "auto_vacuum"), 2, "still incremental");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_key_leaves_no_copy_once_a_reader_held_up_the_truncate_lets_go() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cardbind.sqlite3");
    let s = SqliteStore::open(
        &path,
        SqliteOptions {
            busy_timeout: std::time::Duration::from_millis(100),
            ..SqliteOptions::default()
        },
    )
    .unwrap();
    let needle = "WRAPPED-KEY-HELD-UP-0123456789";
    put_marked_key(&s, needle).await;
    // A reader in the middle of a long read, on the snapshot before the
    // delete: the truncate that follows the delete cannot finish.
    let reader = rusqlite::Connection::open(&path).unwrap();
    reader
        .execute_batch("BEGIN; SELECT count(*) FROM sqlite_master;")
        .unwrap();
    assert_eq!(s.ports().data_keys.delete("erase-me").await, Ok(true));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    reader.execute_batch("COMMIT").unwrap();
    drop(reader);
    // Nothing else is written: the truncate must be tried again.
    assert!(
        gone_from_the_files(dir.path(), needle).await,
        "a copy of the erased key stayed in the files after the reader let go"
    );
}

/// While a reader on an old snapshot holds a WAL truncate up, the
/// checkpointer's tries must not keep the writers out: SQLite's TRUNCATE
/// holds the write lock while it waits for readers, for as long as the
/// connection's busy timeout allows. Every write made meanwhile succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_on_while_a_reader_holds_a_truncate_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cardbind.sqlite3");
    let s = SqliteStore::open(
        &path,
        SqliteOptions {
            busy_timeout: std::time::Duration::from_millis(400),
            ..SqliteOptions::default()
        },
    )
    .unwrap();
    put_marked_key(&s, "WRAPPED-KEY-TRUNCATE-HELD-UP").await;
    let reader = rusqlite::Connection::open(&path).unwrap();
    reader
        .execute_batch("BEGIN; SELECT count(*) FROM sqlite_master;")
        .unwrap();
    assert_eq!(s.ports().data_keys.delete("erase-me").await, Ok(true));
    let mut failed = Vec::new();
    for i in 0..150 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let r = s
            .ports()
            .data_keys
            .put_if_absent(&WrappedKey {
                owner: format!("writer-{i}"),
                master_key_id: "local:1".into(),
                wrapped: vec![1, 2, 3],
                version: 1,
                created_at: t(0),
            })
            .await;
        if let Err(e) = r {
            failed.push((i, e));
        }
    }
    reader.execute_batch("COMMIT").unwrap();
    assert!(
        failed.is_empty(),
        "writes failed while the truncate was held up: {failed:?}"
    );
}

fn corrupt<T>(r: &Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Corrupt(_)))
}

/// Changes the file behind the store's back.
fn tamper(path: &Path, sql: &str) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(sql).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_rows_are_corrupt_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cardbind.sqlite3");
    let s = open(&path);
    write_everything(&s).await;
    let p = s.ports();
    let u = uid("u1");

    tamper(&path, "UPDATE links SET wallet = replace(wallet, '\"active\"', '\"vanished\"') WHERE chain = 'u1' AND seq = 2");
    assert!(corrupt(&p.wallets.load(&u).await), "an unknown status");
    tamper(
        &path,
        "UPDATE links SET wallet = x'7b6e6f74' WHERE chain = 'u1' AND seq = 2",
    );
    let r = p.wallets.load(&u).await;
    assert!(corrupt(&r), "not JSON: {r:?}");
    tamper(
        &path,
        "UPDATE links SET wallet = NULL WHERE chain = 'u1' AND seq = 2",
    );
    assert!(corrupt(&p.wallets.load(&u).await), "no wallet");
    tamper(
        &path,
        "UPDATE links SET hash = x'00' WHERE chain = 'u1' AND seq = 2",
    );
    assert!(corrupt(&p.wallets.load(&u).await), "a short hash");
    tamper(
        &path,
        "UPDATE links SET seq = 'two' WHERE chain = 'u1' AND seq = 2",
    );
    assert!(corrupt(&p.wallets.load(&u).await), "text for a number");

    tamper(
        &path,
        "UPDATE events SET body = x'00ff' WHERE chain = '@system'",
    );
    assert!(corrupt(
        &p.audit.list(&AuditFilter::default(), None, 10).await
    ));
    assert!(corrupt(&p.audit.links(None, 10).await));
    tamper(&path, "UPDATE links SET chain = '!bad' WHERE chain = 'u1'");
    assert!(
        corrupt(&p.wallets.pending_links(t(0), t(9), None, 10).await),
        "a chain that is no user"
    );

    tamper(&path, "UPDATE card_data SET pan = 5");
    assert!(corrupt(&p.card_data.get(&u, &bid("u1-card-0"), 1).await));
    tamper(&path, "UPDATE card_data SET user = 'no one'");
    assert!(corrupt(&p.card_data.owner(&bid("u1-card-0")).await));
    tamper(&path, "UPDATE channel_refs SET binding = ''");
    assert!(corrupt(
        &p.channel_refs.find(&channel("alipay"), "2088-1").await
    ));
    tamper(
        &path,
        "UPDATE idempotency SET status = 70000 WHERE key = 'idem-1'",
    );
    assert!(corrupt(
        &p.idempotency
            .claim("backend", "idem-1", "hash-1", t(5), t(35))
            .await
    ));
    tamper(
        &path,
        "UPDATE idempotency SET state = 7 WHERE key = 'idem-1'",
    );
    assert!(corrupt(
        &p.idempotency
            .claim("backend", "idem-1", "hash-1", t(5), t(35))
            .await
    ));
    tamper(&path, "UPDATE data_keys SET version = -1");
    assert!(corrupt(&p.data_keys.get("u1").await));
    tamper(&path, "UPDATE review_queue SET user = '@x'");
    assert!(corrupt(&p.review.get(&bid("u1-card-1")).await));
    tamper(&path, "UPDATE rate_windows SET taken = -3");
    let r = p
        .rates
        .take(
            &[RateWindow {
                key: "bind:user:u1:m".into(),
                limit: 5,
                expires_at: t(60),
            }],
            t(1),
        )
        .await;
    assert!(corrupt(&r), "a negative slot: {r:?}");
    // Nothing was left half-done: the store still writes.
    assert_eq!(p.seen.mark("notify", "after", t(0), t(9)).await, Ok(true));
}

#[test]
fn files_that_are_not_ours_or_too_new_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let newer = dir.path().join("newer.sqlite3");
    drop(open(&newer));
    let next = cardbind_sqlite::SCHEMA_VERSION + 1;
    tamper(&newer, &format!("PRAGMA user_version = {next};"));
    assert_eq!(
        SqliteStore::open(&newer, SqliteOptions::default()).err(),
        Some(OpenError::NewerSchema {
            found: next,
            known: cardbind_sqlite::SCHEMA_VERSION
        })
    );

    let other = dir.path().join("other.sqlite3");
    tamper(&other, "CREATE TABLE t (x);");
    assert_eq!(
        SqliteStore::open(&other, SqliteOptions::default()).err(),
        Some(OpenError::NotCardbind)
    );
    let foreign_id = dir.path().join("foreign.sqlite3");
    tamper(
        &foreign_id,
        &format!(
            "PRAGMA application_id = {}; PRAGMA user_version = 1; CREATE TABLE t (x);",
            APPLICATION_ID + 1
        ),
    );
    assert_eq!(
        SqliteStore::open(&foreign_id, SqliteOptions::default()).err(),
        Some(OpenError::NotCardbind)
    );

    let text = dir.path().join("notes.txt");
    std::fs::write(
        &text,
        "this is not a database at all, just some text ".repeat(100),
    )
    .unwrap();
    assert!(matches!(
        SqliteStore::open(&text, SqliteOptions::default()).err(),
        Some(OpenError::Store(StoreError::Corrupt(_)))
    ));

    // Our own file at our version opens again, as it was.
    let ours = dir.path().join("ours.sqlite3");
    drop(open(&ours));
    drop(open(&ours));
    let c = rusqlite::Connection::open(&ours).unwrap();
    let v: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    let vacuum: i64 = c.query_row("PRAGMA auto_vacuum", [], |r| r.get(0)).unwrap();
    assert_eq!(
        (v, mode.as_str(), vacuum),
        (cardbind_sqlite::SCHEMA_VERSION, "wal", 0)
    );
    drop(c);

    // Files of version 2 (before the channel references' index by
    // binding), 3 (before their generation), 4 (before the wallet's
    // digest), 5 (before the review entry's link) and 6 (idempotency
    // attempts keyed in place) are brought to this version when opened.
    for from in [2, 3, 4, 5, 6] {
        let old = dir.path().join(format!("v{from}.sqlite3"));
        drop(open(&old));
        let c = rusqlite::Connection::open(&old).unwrap();
        c.execute_batch(&as_version(from)).unwrap();
        drop(c);
        drop(open(&old));
        let c = rusqlite::Connection::open(&old).unwrap();
        let v: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        let index: i64 = c
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'channel_refs_by_binding'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let column: i64 = c
            .query_row(
                "SELECT count(*) FROM pragma_table_info('channel_refs') WHERE name = 'generation'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let digest: i64 = c
            .query_row(
                "SELECT count(*) FROM pragma_table_info('links') WHERE name = 'wallet_digest'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let link: i64 = c
            .query_row(
                "SELECT count(*) FROM pragma_table_info('review_queue') WHERE name = 'link'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            (v, index, column, digest, link, idempotency_shape(&c)),
            (7, 1, 1, 1, 1, appended()),
            "from version {from}"
        );
    }
}

/// How the idempotency table is kept: whether it has a rowid, and its
/// indexes with whether each is unique, by name.
fn idempotency_shape(c: &rusqlite::Connection) -> (bool, Vec<(String, bool)>) {
    let sql: String = c
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'idempotency'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let mut s = c
        .prepare("SELECT name, \"unique\" FROM pragma_index_list('idempotency') ORDER BY name")
        .unwrap();
    let indexes = s
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    (!sql.contains("WITHOUT ROWID"), indexes)
}

/// Schema 7's: appended in rowid order, the key in a unique index.
fn appended() -> (bool, Vec<(String, bool)>) {
    (
        true,
        vec![
            ("idempotency_created".into(), false),
            ("idempotency_key".into(), true),
        ],
    )
}

/// A file of this version made one of an older `version` (what the
/// upgrades since then added taken away).
fn as_version(version: i64) -> String {
    // Its idempotency table as schema 6 and older kept it (keyed in place,
    // no rowid); what the file held in it is kept.
    let mut sql = String::from(
        "CREATE TABLE idempotency_v6 (
             scope TEXT NOT NULL, key TEXT NOT NULL, attempt INTEGER NOT NULL,
             request_hash TEXT NOT NULL, created_at INTEGER NOT NULL,
             lease_until INTEGER NOT NULL, state INTEGER NOT NULL,
             status INTEGER, content_type TEXT, body BLOB,
             PRIMARY KEY (scope, key, attempt)
         ) WITHOUT ROWID;
         INSERT INTO idempotency_v6 SELECT scope, key, attempt, request_hash, created_at,
             lease_until, state, status, content_type, body FROM idempotency;
         DROP TABLE idempotency;
         ALTER TABLE idempotency_v6 RENAME TO idempotency;
         CREATE INDEX idempotency_created ON idempotency (created_at);",
    );
    if version < 6 {
        sql.push_str("ALTER TABLE review_queue DROP COLUMN link;");
    }
    if version < 5 {
        sql.push_str("ALTER TABLE links DROP COLUMN wallet_digest;");
    }
    if version < 4 {
        sql.push_str("ALTER TABLE channel_refs DROP COLUMN generation;");
    }
    if version < 3 {
        sql.push_str("DROP INDEX channel_refs_by_binding;");
    }
    sql + &format!("PRAGMA user_version = {version};")
}

/// A review entry queued before entries carried their link (schema 5)
/// reads as placed at link 0 once the file is upgraded: the removal of
/// any change takes it, and a new stint in review replaces it.
#[tokio::test]
async fn review_entries_of_an_older_schema_go_with_any_removal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v5-review.sqlite3");
    drop(open(&path));
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch(&as_version(5)).unwrap();
    c.execute_batch(
        "INSERT INTO review_queue (binding, user, since) VALUES
           ('card-a', 'u1', 1800000005000), ('card-b', 'u1', 1800000006000);",
    )
    .unwrap();
    drop(c);
    let s = open(&path);
    let p = s.ports();
    let a = p.review.get(&bid("card-a")).await.unwrap().unwrap();
    assert_eq!((a.user.as_str(), a.since, a.link), ("u1", t(5), 0));
    p.review.remove(&bid("card-a"), 1).await.unwrap();
    assert_eq!(p.review.get(&bid("card-a")).await, Ok(None));
    let later = ReviewEntry {
        binding: bid("card-b"),
        user: uid("u1"),
        since: t(9),
        link: 2,
    };
    p.review.add(&later).await.unwrap();
    assert_eq!(p.review.get(&bid("card-b")).await, Ok(Some(later)));
}

/// Idempotency attempts kept by schema 6 (keyed in place) answer as they
/// did once the file is upgraded: a completed key replays its answer and
/// refuses another request, a held key stays held until its lease ends, a
/// released key is claimed again as its next attempt, and only the newest
/// attempt's holder can finish it. The rows are copied in the order they
/// were claimed (the new table's rowid order), whatever their keys' order,
/// and the retention purge takes the oldest.
#[tokio::test]
async fn idempotency_attempts_of_an_older_schema_answer_as_they_did() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v6-idempotency.sqlite3");
    drop(open(&path));
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch(&as_version(6)).unwrap();
    let r = response();
    let mut insert = c
        .prepare(
            "INSERT INTO idempotency (scope, key, attempt, request_hash, created_at,
                 lease_until, state, status, content_type, body)
             VALUES ('s', ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .unwrap();
    let ms = |s: i64| t(s).unix_millis();
    let none: (Option<i64>, Option<&str>, Option<&[u8]>) = (None, None, None);
    let done = (
        Some(i64::from(r.status)),
        Some(r.content_type.as_str()),
        Some(r.body.as_slice()),
    );
    // (key, attempt, hash, claimed, lease until, state, answer), in no
    // order of key or time.
    for (key, attempt, hash, at, until, state, (st, ct, body)) in [
        ("m-held", 1, "h", 30, 600, 0, none),
        ("z-done", 1, "h", 10, 70, 1, done),
        ("a-again", 1, "h", 20, 80, 2, none),
        ("k-late", 2, "h", 40, 600, 0, none),
        ("k-late", 1, "h", 5, 65, 2, none),
    ] {
        insert
            .execute(rusqlite::params![
                key,
                attempt,
                hash,
                ms(at),
                ms(until),
                state,
                st,
                ct,
                body
            ])
            .unwrap();
    }
    drop(insert);
    drop(c);

    let s = open(&path);
    // The upgrade's pages were copied into the file and the WAL cut.
    let wal = std::fs::metadata(path.with_extension("sqlite3-wal")).unwrap();
    assert_eq!(wal.len(), 0);
    let c = rusqlite::Connection::open(&path).unwrap();
    assert_eq!(idempotency_shape(&c), appended());
    let mut q = c
        .prepare("SELECT key, attempt FROM idempotency ORDER BY rowid")
        .unwrap();
    let order: Vec<(String, i64)> = q
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let expected = [
        ("k-late", 1),
        ("z-done", 1),
        ("a-again", 1),
        ("m-held", 1),
        ("k-late", 2),
    ];
    assert_eq!(
        order,
        expected.map(|(k, a)| (k.to_owned(), a)).to_vec(),
        "in the order claimed"
    );
    drop(q);
    drop(c);

    let p = s.ports();
    let now = t(100);
    let claim = |key: &'static str, hash: &'static str| {
        let p = p.clone();
        async move { p.idempotency.claim("s", key, hash, now, t(160)).await }
    };
    assert_eq!(claim("z-done", "h").await, Ok(Claim::Completed(response())));
    assert_eq!(claim("z-done", "other").await, Ok(Claim::Mismatch));
    assert_eq!(
        claim("m-held", "h").await,
        Ok(Claim::InProgress {
            lease_until: t(600)
        })
    );
    assert_eq!(
        claim("a-again", "h").await,
        Ok(Claim::Acquired(Lease { attempt: 2 }))
    );
    let late = Lease { attempt: 1 };
    assert_eq!(
        p.idempotency.complete("s", "k-late", late, &r).await,
        Ok(false)
    );
    assert_eq!(p.idempotency.release("s", "k-late", late).await, Ok(false));
    let newest = Lease { attempt: 2 };
    assert_eq!(
        p.idempotency.complete("s", "k-late", newest, &r).await,
        Ok(true)
    );
    assert_eq!(claim("k-late", "h").await, Ok(Claim::Completed(response())));
    // The attempts claimed before t(25): k-late's first, z-done's and
    // a-again's first; a claim finds k-late and a-again by their newer
    // attempts still, and z-done as a new key.
    assert_eq!(p.idempotency.purge_created_before(t(25)).await, Ok(3));
    assert_eq!(claim("k-late", "h").await, Ok(Claim::Completed(response())));
    assert_eq!(
        claim("a-again", "h").await,
        Ok(Claim::InProgress {
            lease_until: t(160)
        })
    );
    assert_eq!(
        claim("z-done", "h").await,
        Ok(Claim::Acquired(Lease { attempt: 1 }))
    );
}

/// An upgrade that fails leaves the file as it was: a schema 6 file that
/// holds a table in step 7's way is refused with SQLite's reason, stays at
/// version 6 with its attempts in the old table, and is upgraded once the
/// table is gone.
#[tokio::test]
async fn a_failed_upgrade_leaves_the_file_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v6-blocked.sqlite3");
    drop(open(&path));
    tamper(&path, &as_version(6));
    tamper(
        &path,
        &format!(
            "INSERT INTO idempotency (scope, key, attempt, request_hash, created_at, lease_until, state)
               VALUES ('s', 'k', 1, 'h', {}, {}, 0);
             CREATE TABLE idempotency_v7 (x);",
            t(1).unix_millis(),
            t(60).unix_millis()
        ),
    );
    let err = SqliteStore::open(&path, SqliteOptions::default()).err();
    assert!(
        matches!(&err, Some(OpenError::Store(StoreError::Unavailable(m))) if m.contains("idempotency_v7")),
        "{err:?}"
    );
    let c = rusqlite::Connection::open(&path).unwrap();
    let n: i64 = c
        .query_row(
            "SELECT count(*) FROM idempotency WHERE key = 'k'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        (pragma(&path, "user_version"), n, idempotency_shape(&c).0),
        (6, 1, false)
    );
    drop(c);
    tamper(&path, "DROP TABLE idempotency_v7;");
    let s = open(&path);
    assert_eq!(
        s.ports()
            .idempotency
            .claim("s", "k", "h", t(2), t(70))
            .await,
        Ok(Claim::InProgress { lease_until: t(60) })
    );
}

/// An upgrade whose checkpoint a reader holds up (a process reading the
/// file as it was) opens all the same, and the checkpointer cuts the WAL
/// once the reader is gone.
#[tokio::test]
async fn an_upgrade_held_up_by_a_reader_has_its_wal_cut_after() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v6-read.sqlite3");
    drop(open(&path));
    tamper(&path, &as_version(6));
    let wal = || {
        std::fs::metadata(path.with_extension("sqlite3-wal"))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    let reader = rusqlite::Connection::open(&path).unwrap();
    reader
        .execute_batch("BEGIN; SELECT count(*) FROM idempotency;")
        .unwrap();
    let options = SqliteOptions {
        busy_timeout: std::time::Duration::from_millis(200),
        ..SqliteOptions::default()
    };
    let s = SqliteStore::open(&path, options).unwrap();
    assert!(wal() > 0, "the reader held the checkpoint up");
    let c = rusqlite::Connection::open(&path).unwrap();
    assert_eq!(idempotency_shape(&c), appended());
    drop(c);
    reader.execute_batch("COMMIT;").unwrap();
    drop(reader);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while wal() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the WAL is still {} bytes",
            wal()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(s);
}

/// References recorded before they carried a generation (schema 3) go
/// with the unbind of their card, whichever generation it names; and a
/// reference given again to the same card by a later bind is that bind's
/// once the file is upgraded.
#[tokio::test]
async fn references_recorded_by_an_older_schema_go_with_their_card() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v3-refs.sqlite3");
    let u = uid("u1");
    drop(open(&path));
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch(&as_version(3)).unwrap();
    c.execute_batch(
        "INSERT INTO channel_refs (channel, ref, user, binding) VALUES
           ('alipay', 'old-1', 'u1', 'card-a'),
           ('alipay', 'old-2', 'u1', 'card-a'),
           ('alipay', 'old-3', 'u1', 'card-b');",
    )
    .unwrap();
    drop(c);
    let s = open(&path);
    let p = s.ports();
    let target = |b: &str| RefTarget {
        user: u.clone(),
        binding: bid(b),
    };
    p.channel_refs
        .put(&channel("alipay"), "old-2", &target("card-a"), 8)
        .await
        .unwrap();
    p.channel_refs
        .put(&channel("alipay"), "new-1", &target("card-a"), 8)
        .await
        .unwrap();
    assert_eq!(
        p.channel_refs
            .delete_binding(&u, &bid("card-a"), Some(5))
            .await
            .unwrap(),
        1,
        "old-1, of no known generation"
    );
    for (r, kept) in [
        ("old-1", false),
        ("old-2", true),
        ("new-1", true),
        ("old-3", true),
    ] {
        assert_eq!(
            p.channel_refs
                .find(&channel("alipay"), r)
                .await
                .unwrap()
                .is_some(),
            kept,
            "{r}"
        );
    }
    // The sweep's walk reads them with no generation, and its delete
    // takes one only as read.
    let listed = p.channel_refs.list(None, 10).await.unwrap();
    let gens: Vec<(&str, Option<u32>)> = listed
        .iter()
        .map(|e| (e.channel_ref.as_str(), e.generation))
        .collect();
    assert_eq!(
        gens,
        [("new-1", Some(8)), ("old-2", Some(8)), ("old-3", None)]
    );
    let mut old3 = listed[2].clone();
    old3.generation = Some(5);
    assert_eq!(p.channel_refs.delete_entry(&old3).await.unwrap(), 0);
    assert_eq!(p.channel_refs.delete_entry(&listed[2]).await.unwrap(), 1);
    assert_eq!(
        p.channel_refs
            .find(&channel("alipay"), "old-3")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        p.channel_refs
            .delete_binding(&u, &bid("card-a"), Some(8))
            .await
            .unwrap(),
        2
    );
}

#[test]
fn the_directory_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x/y/z/cardbind.sqlite3");
    drop(open(&path));
    assert!(path.is_file());
    // A path under a file cannot be made.
    let under_file = path.join("db.sqlite3");
    assert!(matches!(
        SqliteStore::open(&under_file, SqliteOptions::default()).err(),
        Some(OpenError::Io { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_stays_small_under_a_steady_stream_of_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cardbind.sqlite3");
    let small = SqliteOptions {
        wal_restart_pages: 64,
        checkpoint_interval: std::time::Duration::from_millis(20),
        ..SqliteOptions::default()
    };
    let s = SqliteStore::open(&path, small).unwrap();
    let p = s.ports();
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let p = p.clone();
            tokio::spawn(async move {
                for j in 0..150 {
                    let id = format!("{i}-{j}-{}", "x".repeat(200));
                    assert!(p.seen.mark("stream", &id, t(0), t(9)).await.unwrap());
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    let wal_size = || std::fs::metadata(&wal).map_or(0, |m| m.len());
    // 4,800 writes of ~250 bytes dirty far more than 64 pages; the WAL goes
    // back to its start (and its file back to the limit) again and again.
    // On a loaded machine the checkpointer may be descheduled mid-copy
    // while the stream goes on, and the WAL grows meanwhile: what must
    // hold is that it comes back, at the next writes, without a restart
    // of the store.
    let (mut size, mut more) = (wal_size(), 0);
    while size >= 2 * 1024 * 1024 && more < 100 {
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        let id = format!("after-{more}");
        assert!(p.seen.mark("stream", &id, t(0), t(9)).await.unwrap());
        more += 1;
        size = wal_size();
    }
    assert!(size < 2 * 1024 * 1024, "the WAL is {size} bytes");
    assert_eq!(p.seen.purge_expired(t(10)).await, Ok(4800 + more));
}

/// Links that hold a wallet copy, per chain: (chain, seq) in order.
fn wallet_copies(path: &Path) -> Vec<(String, i64)> {
    let c = rusqlite::Connection::open(path).unwrap();
    let mut s = c
        .prepare("SELECT chain, seq FROM links WHERE wallet IS NOT NULL ORDER BY chain, seq")
        .unwrap();
    let rows = s
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_newest_link_of_a_chain_keeps_a_wallet_copy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cardbind.sqlite3");
    let s = open(&path);
    let p = s.ports();
    let (a, b) = (uid("ua"), uid("ub"));
    let mut heads = Vec::new();
    let mut head = None;
    for i in 0..4u32 {
        let w = wallet(&a, i + 1, i % 2 == 1, t(i64::from(i)));
        let e = event(Some(&a), None, AuditAction::BindingCreate, t(i64::from(i)));
        let h = p
            .wallets
            .commit(&w, head.clone(), vec![e], t(i64::from(i)))
            .await
            .unwrap();
        heads.push(h.clone());
        head = Some(h);
    }
    let wb = wallet(&b, 2, false, t(0));
    let e = event(Some(&b), None, AuditAction::BindingCreate, t(0));
    p.wallets.commit(&wb, None, vec![e], t(0)).await.unwrap();
    assert_eq!(
        wallet_copies(&path),
        vec![("ua".to_owned(), 4), ("ub".to_owned(), 1)],
        "one copy per user, in the newest link"
    );

    // A stale writer loses and drops nothing.
    let stale = wallet(&a, 1, false, t(9));
    let e = event(Some(&a), None, AuditAction::BindingCreate, t(9));
    let r = p
        .wallets
        .commit(&stale, Some(heads[1].clone()), vec![e], t(9))
        .await;
    assert_eq!(r, Err(StoreError::Conflict));
    assert_eq!(wallet_copies(&path).len(), 2);

    // Every read finds the newest wallet, after a restart too, and the
    // chain (which covers events, not wallets) still verifies.
    let newest = wallet(&a, 4, true, t(3));
    let pending = p
        .wallets
        .pending_links(t(0), t(10), None, 10)
        .await
        .unwrap();
    assert_eq!(
        pending.iter().map(|l| l.key.seq).collect::<Vec<_>>(),
        vec![2, 4],
        "the pending flag outlives the copy"
    );
    drop(p);
    drop(s);
    let s = open(&path);
    let p = s.ports();
    let got = p.wallets.load(&a).await.unwrap().unwrap();
    assert_eq!((got.wallet, got.head.seq), (newest, 4));
    let many = p.wallets.load_many(&[a.clone(), b.clone()]).await.unwrap();
    assert_eq!(many.len(), 2);
    let links = p.audit.links(None, 100).await.unwrap();
    assert_eq!(verify_links(&links), Ok(5));
}

/// The walk of `audit verify` holds a chain's newest link to the wallet
/// copy it keeps: deleted from the file, the chain breaks there (a load
/// of that user refuses it as corrupt), while older links, whose copies go by
/// design, verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newest_link_whose_wallet_was_deleted_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cardbind.sqlite3");
    let s = open(&path);
    let p = s.ports();
    let a = uid("ua");
    let mut head = None;
    for i in 0..3u32 {
        let w = wallet(&a, i + 1, false, t(i64::from(i)));
        let e = event(Some(&a), None, AuditAction::BindingCreate, t(i64::from(i)));
        head = Some(
            p.wallets
                .commit(&w, head.clone(), vec![e], t(i64::from(i)))
                .await
                .unwrap(),
        );
    }
    assert_eq!(wallet_copies(&path), vec![("ua".to_owned(), 3)]);
    let links = p.audit.links(None, 100).await.unwrap();
    assert_eq!(verify_links(&links), Ok(3));
    assert!(links.iter().all(|l| l.wallet_digest.is_some()));

    let c = rusqlite::Connection::open(&path).unwrap();
    let n = c
        .execute(
            "UPDATE links SET wallet = NULL WHERE chain = 'ua' AND seq = 3",
            [],
        )
        .unwrap();
    assert_eq!(n, 1);
    let links = p.audit.links(None, 100).await.unwrap();
    assert_eq!(
        verify_links(&links).map_err(|b| (b.seq, b.reason)),
        Err((3, STORED_WALLET_MISSING))
    );
    // Paged one link at a time, the older links (no copy) pass and the
    // newest does not.
    let first = p.audit.links(None, 1).await.unwrap();
    let second = p
        .audit
        .links(Some((first[0].chain.clone(), first[0].seq)), 1)
        .await
        .unwrap();
    assert_eq!((first[0].seq, second[0].seq), (1, 2));
    assert_eq!(
        (first[0].stored_apart, second[0].stored_apart),
        (None, None)
    );
    let third = p
        .audit
        .links(Some((second[0].chain.clone(), second[0].seq)), 1)
        .await
        .unwrap();
    assert_eq!(third[0].stored_apart, Some(STORED_WALLET_MISSING));
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_database_and_its_wal_are_private_to_their_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new").join("cardbind.sqlite3");
    let s = open(&path);
    write_everything(&s).await;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for suffix in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", path.display()));
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
    drop(s);
    // An existing file keeps the mode its operator chose.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let s = open(&path);
    s.ports().wallets.load(&uid("u1")).await.unwrap().unwrap();
    assert_eq!(mode(&path), 0o640);
}

/// A bounded file (`max_size_mib`), as a full disk would be: past the bound
/// a write is refused whole (a wallet change's link and events, or card
/// data, are not half kept) for the reason SQLite gives, reads go on, and
/// the same writer takes writes again once deletions have freed pages.
#[tokio::test]
async fn a_full_file_refuses_writes_whole_and_takes_them_again_once_room_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bounded.sqlite3");
    let s = open_bounded(&path, 1);
    let p = s.ports();
    let u = uid("u1");
    let data = |i: u32| CardData {
        binding: bid(&format!("u1-card-{i:06}")),
        user: u.clone(),
        generation: 1,
        sealed: sealed_card(),
    };
    let full = |e: &StoreError| matches!(e, StoreError::Unavailable(m) if m.contains("full"));
    // Some data to delete later, then wallet changes until one is refused.
    for i in 0..400 {
        p.card_data.put(&data(i)).await.unwrap();
    }
    let mut head = None;
    let mut changes = 0;
    let refusal = loop {
        let w = wallet(&u, 1 + changes % 8, true, t(i64::from(changes)));
        let events = vec![event(
            Some(&u),
            Some("u1-card-0"),
            AuditAction::BindingCreate,
            t(i64::from(changes)),
        )];
        match p
            .wallets
            .commit(&w, head.clone(), events, t(i64::from(changes)))
            .await
        {
            Ok(h) => {
                head = Some(h);
                changes += 1;
            }
            Err(e) => break e,
        }
        assert!(changes < 50_000, "a 1 MiB file took {changes} changes");
    };
    assert!(full(&refusal), "{refusal:?}");
    assert!(changes > 100, "only {changes} changes before the bound");
    // Nothing of the refused change: the head, the links and the events
    // are those acknowledged, and the chain verifies.
    let check = |n: u32, head: Option<cardbind_ports::audit::ChainHead>| {
        let p = p.clone();
        let u = u.clone();
        async move {
            let stored = p.wallets.load(&u).await.unwrap().unwrap();
            assert_eq!(Some(stored.head), head);
            let links = p.audit.links(None, 60_000).await.unwrap();
            assert_eq!(verify_links(&links), Ok(u64::from(n)));
            let events = p
                .audit
                .list(&AuditFilter::default(), None, 60_000)
                .await
                .unwrap();
            assert_eq!(events.len(), n as usize);
        }
    };
    check(changes, head.clone()).await;
    // Reads go on.
    assert!(p
        .card_data
        .get(&u, &data(0).binding, 1)
        .await
        .unwrap()
        .is_some());
    // Deletions free pages; a change refused for want of them then fits.
    let mut deleted = 0;
    let next = wallet(&u, 8, false, t(i64::from(changes)));
    let events = vec![event(
        Some(&u),
        Some("u1-card-1"),
        AuditAction::BindingFreeze,
        t(i64::from(changes)),
    )];
    loop {
        match p
            .wallets
            .commit(&next, head.clone(), events.clone(), t(i64::from(changes)))
            .await
        {
            Ok(h) => {
                head = Some(h);
                break;
            }
            Err(e) => assert!(full(&e), "{e:?}"),
        }
        check(changes, head.clone()).await;
        assert!(deleted < 400, "deleting every card's data made no room");
        for i in deleted..deleted + 20 {
            p.card_data
                .delete(&u, &data(i).binding, None)
                .await
                .unwrap();
        }
        deleted += 20;
    }
    assert!(deleted > 0, "the change fitted in a full file");
    check(changes + 1, head.clone()).await;
    assert_eq!(p.wallets.load(&u).await.unwrap().unwrap().wallet, next);
    drop(p);
    drop(s);
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size <= 1024 * 1024, "the file grew to {size} bytes");
}

/// A file already at its size bound still opens after an upgrade: the
/// upgrade's pages (schema 3's index, schema 7's copy of the idempotency
/// table) are let past the bound, which holds again for every write after
/// it.
#[tokio::test]
async fn a_full_file_of_an_older_schema_is_upgraded_and_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old-full.sqlite3");
    let u = uid("u1");
    let data = |i: u32| CardData {
        binding: bid(&format!("u1-card-{i:06}")),
        user: u.clone(),
        generation: 1,
        sealed: sealed_card(),
    };
    {
        let s = open(&path);
        let p = s.ports();
        for i in 0..8000 {
            p.card_data.put(&data(i)).await.unwrap();
        }
    }
    // As a version 2 file (no index of references by binding), with no
    // free page left.
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch(&as_version(2)).unwrap();
    c.execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    let free: i64 = c
        .query_row("PRAGMA freelist_count", [], |r| r.get(0))
        .unwrap();
    assert_eq!(free, 0);
    drop(c);
    assert!(std::fs::metadata(&path).unwrap().len() > 1024 * 1024);
    let s = open_bounded(&path, 1);
    let p = s.ports();
    // Reads go on; writes past the bound are refused.
    assert!(p
        .card_data
        .get(&u, &data(0).binding, 1)
        .await
        .unwrap()
        .is_some());
    let mut refused = None;
    for i in 8000..16000 {
        if let Err(e) = p.card_data.put(&data(i)).await {
            refused = Some(e);
            break;
        }
    }
    assert!(
        matches!(&refused, Some(StoreError::Unavailable(m)) if m.contains("full")),
        "{refused:?}"
    );
    drop(p);
    drop(s);
    let c = rusqlite::Connection::open(&path).unwrap();
    let (v, index): (i64, i64) = (
        c.query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap(),
        c.query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'channel_refs_by_binding'",
            [],
            |r| r.get(0),
        )
        .unwrap(),
    );
    assert_eq!((v, index), (cardbind_sqlite::SCHEMA_VERSION, 1));
}

/// Links written before wallets were covered (schema 4: no digest, their
/// hash over the events alone) still verify once the file is upgraded,
/// and the links after them carry their wallet's digest: one chain of
/// both verifies, and an edit of the newer wallet is found.
#[tokio::test]
async fn links_of_an_older_schema_verify_beside_those_that_cover_their_wallet() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v4-links.sqlite3");
    let u = uid("u1");
    let first = {
        let s = open(&path);
        let p = s.ports();
        let w = wallet(&u, 1, false, t(0));
        p.wallets
            .commit(
                &w,
                None,
                vec![event(
                    Some(&u),
                    Some("u1-card-0"),
                    AuditAction::BindingCreate,
                    t(0),
                )],
                t(0),
            )
            .await
            .unwrap();
        let links = p.audit.links(None, 10).await.unwrap();
        assert_eq!(links.len(), 1);
        links[0].clone()
    };
    // As version 4 wrote it: no digest, the hash over the events alone.
    let legacy = cardbind_ports::audit::chain_hash(
        &first.prev_hash,
        &first.chain,
        first.seq,
        first.at,
        &first.events,
        None,
    );
    assert_ne!(Some(&legacy), Some(&first.hash));
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch(&as_version(4)).unwrap();
    c.execute(
        "UPDATE links SET hash = ?1 WHERE chain = 'u1' AND seq = 1",
        [hex::decode(&legacy).unwrap()],
    )
    .unwrap();
    drop(c);
    let s = open(&path);
    let p = s.ports();
    let links = p.audit.links(None, 10).await.unwrap();
    assert_eq!(links[0].wallet_digest, None);
    assert_eq!(verify_links(&links), Ok(1));
    let head = p.wallets.load(&u).await.unwrap().unwrap().head;
    assert_eq!(head.hash, legacy);
    p.wallets
        .commit(
            &wallet(&u, 2, false, t(1)),
            Some(head),
            vec![event(
                Some(&u),
                Some("u1-card-1"),
                AuditAction::BindingCreate,
                t(1),
            )],
            t(1),
        )
        .await
        .unwrap();
    let links = p.audit.links(None, 10).await.unwrap();
    // The digest of the wallet's record as JSON, the bytes the file keeps.
    let json = cardbind_records::wallet_json(&wallet(&u, 2, false, t(1))).unwrap();
    assert_eq!(
        links[1].wallet_digest,
        Some(cardbind_records::wallet_digest(&json))
    );
    assert_eq!(verify_links(&links), Ok(2));
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute(
        "UPDATE links SET wallet = CAST(replace(CAST(wallet AS TEXT), 'u1-card-1', 'u1-card-9') AS BLOB) WHERE chain = 'u1' AND seq = 2",
        [],
    )
    .unwrap();
    let links = p.audit.links(None, 10).await.unwrap();
    assert_eq!(
        verify_links(&links).map_err(|b| (b.seq, b.reason)),
        Err((2, STORED_WALLET_ALTERED))
    );
}

/// A store whose directories do not exist yet gets them private (0700, as
/// the data directory is): they were made 0755 beside a private file.
#[tokio::test]
async fn directories_made_for_the_store_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/cardbind.sqlite3");
    drop(open(&path));
    for d in [dir.path().join("a"), dir.path().join("a/b")] {
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", d.display());
    }
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

/// Opened read-only (`audit verify`: a copy, or a running service's file),
/// the store reads what is there, WAL included, and changes nothing: a
/// write is refused, and neither the file nor its WAL is written,
/// checkpointed or upgraded. An older schema is refused, not upgraded; a
/// file that is not a store, or no file, is refused without one being made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_opened_read_only_reads_what_is_there_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cardbind.sqlite3");
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    let s = open(&path);
    let w = write_everything(&s).await;
    // The writes are in the WAL while the store stays open, as a running
    // service's are: a read-only store beside it sees them.
    assert!(std::fs::metadata(&wal).unwrap().len() > 0);
    let before = (std::fs::read(&path).unwrap(), std::fs::read(&wal).unwrap());
    let ro = SqliteStore::open_read_only(&path, SqliteOptions::default()).unwrap();
    check_reads(&ro, &w).await;
    let refused = ro
        .ports()
        .rates
        .take(
            &[RateWindow {
                key: "bind:user:u9:m".into(),
                limit: 5,
                expires_at: t(60),
            }],
            t(3),
        )
        .await;
    match refused {
        Err(StoreError::Unavailable(m)) => assert!(m.contains("read-only"), "{m}"),
        other => panic!("a write on a read-only store: {other:?}"),
    }
    drop(ro);
    assert_eq!(
        (std::fs::read(&path).unwrap(), std::fs::read(&wal).unwrap()),
        before,
        "the read-only store wrote to the file or its WAL"
    );
    drop(s);

    // Closed (the WAL copied in and emptied), it opens read-only again.
    let ro = SqliteStore::open_read_only(&path, SqliteOptions::default()).unwrap();
    check_reads(&ro, &w).await;
    drop(ro);

    // An older schema is refused as it is, and stays as it is.
    tamper(&path, &as_version(cardbind_sqlite::SCHEMA_VERSION - 1));
    let old = std::fs::read(&path).unwrap();
    assert_eq!(
        SqliteStore::open_read_only(&path, SqliteOptions::default()).err(),
        Some(OpenError::OlderSchema {
            found: cardbind_sqlite::SCHEMA_VERSION - 1,
            known: cardbind_sqlite::SCHEMA_VERSION
        })
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        old,
        "an older file was changed"
    );
    assert_eq!(
        pragma(&path, "user_version"),
        cardbind_sqlite::SCHEMA_VERSION - 1
    );

    let other = dir.path().join("other.sqlite3");
    tamper(&other, "CREATE TABLE t (x);");
    assert_eq!(
        SqliteStore::open_read_only(&other, SqliteOptions::default()).err(),
        Some(OpenError::NotCardbind)
    );
    let missing = dir.path().join("missing.sqlite3");
    assert!(matches!(
        SqliteStore::open_read_only(&missing, SqliteOptions::default()),
        Err(OpenError::Io { .. })
    ));
    assert!(!missing.exists(), "a read-only open made a file");
}
