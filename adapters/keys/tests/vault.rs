//! The envelope vault with the local master key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use cardbind_domain::{CardNumber, SealedBlob};
use cardbind_keys::{
    fingerprint_owner, format, rotate, CacheConfig, DataKey, EnvelopeVault, LocalMasterKey,
    MasterKey, VaultConfig, CANARY_OWNER, SEALED_CANARY_OWNER,
};
use cardbind_ports::error::KeyError;
use cardbind_ports::keys::{CardVault, SealContext};
use common::{store, user, Counting};

fn vault() -> EnvelopeVault<LocalMasterKey> {
    EnvelopeVault::new(
        LocalMasterKey::generate(),
        store().1,
        VaultConfig::default(),
    )
}

fn ctx(record: &str, field: &'static str) -> SealContext {
    SealContext::new(record, field)
}

fn is_refused<T: std::fmt::Debug>(r: &Result<T, KeyError>) -> bool {
    matches!(r, Err(KeyError::Refused(_)))
}

#[tokio::test]
async fn round_trip_of_every_field_and_empty_values() {
    let v = vault();
    let u = user("u-1");
    for (field, text) in [
        ("pan", &b"6222021234567890123"[..]),
        ("holder_name", "张三".as_bytes()),
        ("id_number", b"11010519491231002X"),
        ("phone", b"13800138000"),
        ("empty", b""),
    ] {
        let sealed = v.seal(&u, &ctx("card-1", field), text).await.expect("seal");
        assert_ne!(sealed.as_bytes(), text, "ciphertext differs from plaintext");
        let opened = v
            .open(&u, &ctx("card-1", field), &sealed)
            .await
            .expect("open");
        assert_eq!(opened, text);
    }
    // Same value sealed twice: different nonces, different ciphertexts.
    let a = v.seal(&u, &ctx("card-1", "pan"), b"x").await.expect("seal");
    let b = v.seal(&u, &ctx("card-1", "pan"), b"x").await.expect("seal");
    assert_ne!(a, b);
}

#[tokio::test]
async fn sealed_format_names_the_key() {
    let v = vault();
    let sealed = v
        .seal(&user("alice"), &ctx("r", "pan"), b"1234")
        .await
        .expect("seal");
    let b = sealed.as_bytes();
    assert_eq!(b[0], format::FORMAT_V1);
    assert_eq!(b[1] as usize, "alice".len());
    assert_eq!(&b[2..7], b"alice");
    assert_eq!(b.len(), 2 + 5 + 8 + 12 + 4 + 16);
    let p = format::parse(b).expect("parses");
    assert_eq!(p.owner, "alice");
}

#[tokio::test]
async fn wrong_record_field_or_owner_is_refused() {
    let v = vault();
    let (alice, bob) = (user("alice"), user("bob"));
    let sealed = v
        .seal(&alice, &ctx("card-1", "pan"), b"6222021234567890")
        .await
        .expect("seal");
    // Bob has a key of his own too.
    v.seal(&bob, &ctx("card-9", "pan"), b"x")
        .await
        .expect("seal");

    assert!(is_refused(
        &v.open(&alice, &ctx("card-2", "pan"), &sealed).await
    ));
    assert!(is_refused(
        &v.open(&alice, &ctx("card-1", "phone"), &sealed).await
    ));
    assert!(is_refused(
        &v.open(&bob, &ctx("card-1", "pan"), &sealed).await
    ));
    assert!(is_refused(
        &v.open(&user("carol"), &ctx("card-1", "pan"), &sealed).await
    ));

    // Rewrite the owner in the header to bob's (same length): the header is
    // authenticated, and bob's key is another key.
    let mut forged = vec![sealed.as_bytes()[0], 3];
    forged.extend_from_slice(b"bob");
    forged.extend_from_slice(&sealed.as_bytes()[7..]);
    assert!(is_refused(
        &v.open(&bob, &ctx("card-1", "pan"), &SealedBlob::new(forged))
            .await
    ));

    // Record/field boundaries cannot be shifted ("ab"+"c" vs "a"+"bc").
    let s2 = v
        .seal(&alice, &SealContext::new("ab", "c"), b"v")
        .await
        .expect("seal");
    assert!(is_refused(
        &v.open(&alice, &SealContext::new("a", "bc"), &s2).await
    ));
}

#[tokio::test]
async fn tampering_anywhere_is_refused_never_wrong_plaintext() {
    let v = vault();
    let u = user("u-t");
    let c = ctx("card-1", "pan");
    let sealed = v.seal(&u, &c, b"6222021234567890").await.expect("seal");
    let bytes = sealed.as_bytes().to_vec();
    for i in 0..bytes.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut t = bytes.clone();
            t[i] ^= mask;
            let r = v.open(&u, &c, &SealedBlob::new(t)).await;
            assert!(is_refused(&r), "byte {i} mask {mask:#x}: {r:?}");
        }
    }
    for len in 0..bytes.len() {
        let r = v
            .open(&u, &c, &SealedBlob::new(bytes[..len].to_vec()))
            .await;
        assert!(is_refused(&r), "truncated to {len}: {r:?}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(is_refused(&v.open(&u, &c, &SealedBlob::new(longer)).await));
    let mut v2 = bytes.clone();
    v2[0] = 2;
    assert!(is_refused(&v.open(&u, &c, &SealedBlob::new(v2)).await));
    // A fresh nonce spliced in from another ciphertext of the same value.
    let other = v.seal(&u, &c, b"6222021234567890").await.expect("seal");
    let n = 2 + 3 + 8;
    let mut spliced = bytes.clone();
    spliced[n..n + 12].copy_from_slice(&other.as_bytes()[n..n + 12]);
    assert!(is_refused(&v.open(&u, &c, &SealedBlob::new(spliced)).await));
}

#[tokio::test]
async fn erased_owner_cannot_open_any_more() {
    let v = vault();
    let u = user("u-erase");
    let c = ctx("card-1", "pan");
    let sealed = v.seal(&u, &c, b"6222021234567890").await.expect("seal");
    assert!(v.cached_keys() >= 1);
    assert!(v.erase_owner(&u).await.expect("erase"));
    assert_eq!(v.open(&u, &c, &sealed).await, Err(KeyError::Erased));
    assert!(!v.erase_owner(&u).await.expect("erase again"));

    // A new card for the same user gets a new key; the old ciphertext stays
    // unreadable.
    let fresh = v.seal(&u, &c, b"new").await.expect("seal");
    assert_eq!(v.open(&u, &c, &fresh).await.expect("open"), b"new");
    assert!(is_refused(&v.open(&u, &c, &sealed).await));
}

#[tokio::test]
async fn erase_reaches_other_instances_at_the_latest_after_max_age() {
    let (_, s) = store();
    let cfg = VaultConfig {
        cache: CacheConfig {
            max_age: Duration::from_millis(200),
            ..CacheConfig::default()
        },
        ..VaultConfig::default()
    };
    let master = DataKey::generate();
    let a = EnvelopeVault::new(
        LocalMasterKey::from_key(master.clone()),
        s.clone(),
        cfg.clone(),
    );
    let b = EnvelopeVault::new(LocalMasterKey::from_key(master), s.clone(), cfg);
    let u = user("u-2");
    let c = ctx("r", "pan");
    let sealed = a.seal(&u, &c, b"x").await.expect("seal");
    assert!(b.open(&u, &c, &sealed).await.is_ok());
    assert!(a.erase_owner(&u).await.expect("erase"));
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(b.open(&u, &c, &sealed).await, Err(KeyError::Erased));
}

#[tokio::test]
async fn reserved_owner_ids_are_refused() {
    // The vault's own records are named `@…`; no user can be: the domain
    // refuses such ids, so a user can never share or erase the fingerprint
    // or canary keys.
    let _ = vault();
    for id in ["@fingerprint", "@canary", "@canary.sealed", "@x"] {
        assert!(
            cardbind_domain::UserId::parse(id).is_err(),
            "{id} parsed as a user id"
        );
    }
    assert!(cardbind_domain::UserId::parse("fingerprint").is_ok());
}

#[tokio::test]
async fn self_check_with_right_and_wrong_local_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, s) = store();
    let key = LocalMasterKey::load_or_create(dir.path()).expect("create key");
    let path = dir.path().join(LocalMasterKey::FILE_NAME);
    let meta = std::fs::metadata(&path).expect("key file");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.len(), 32);
    let id = key.key_id().to_owned();

    // First start seals the canary; the next starts open it.
    let v = EnvelopeVault::new(key, s.clone(), VaultConfig::default());
    v.self_check().await.expect("first start");
    assert!(s.get(CANARY_OWNER).await.expect("get").is_some());
    assert!(s.get(SEALED_CANARY_OWNER).await.expect("get").is_some());
    v.self_check().await.expect("second check");

    let again = LocalMasterKey::load_or_create(dir.path()).expect("load key");
    assert_eq!(again.key_id(), id, "same file, same key");
    EnvelopeVault::new(again, s.clone(), VaultConfig::default())
        .self_check()
        .await
        .expect("restart with the same key");

    // Another key (a lost or swapped key file): a clear refusal.
    let other_dir = tempfile::tempdir().expect("tempdir");
    let wrong = LocalMasterKey::load_or_create(other_dir.path()).expect("key");
    let err = EnvelopeVault::new(wrong, s.clone(), VaultConfig::default())
        .self_check()
        .await
        .expect_err("wrong key");
    let msg = err.to_string();
    assert!(matches!(err, KeyError::Refused(_)), "{err:?}");
    assert!(
        msg.contains("self-check failed") && msg.contains("wrong master key"),
        "{msg}"
    );

    // A key file of the wrong size is refused, not used.
    std::fs::write(other_dir.path().join("bad.key"), b"short").expect("write");
    assert!(LocalMasterKey::load(&other_dir.path().join("bad.key")).is_err());
}

#[tokio::test]
async fn self_check_reports_an_unreachable_store() {
    let (mem, s) = store();
    let v = EnvelopeVault::new(LocalMasterKey::generate(), s, VaultConfig::default());
    mem.set_unavailable(true);
    assert!(matches!(
        v.self_check().await,
        Err(KeyError::Unavailable(_))
    ));
    assert!(matches!(
        v.seal(&user("u"), &ctx("r", "pan"), b"x").await,
        Err(KeyError::Unavailable(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_seals_of_one_owner_all_open() {
    for cache in [CacheConfig::default(), CacheConfig::disabled()] {
        let (_, s) = store();
        let master = Arc::new(Counting::new(LocalMasterKey::generate()));
        let v = Arc::new(EnvelopeVault::new(
            CountingRef(master.clone()),
            s.clone(),
            VaultConfig {
                cache: cache.clone(),
                ..VaultConfig::default()
            },
        ));
        let u = user("racer");
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let v = v.clone();
                let u = u.clone();
                tokio::spawn(async move {
                    let c = SealContext::new(format!("card-{i}"), "pan");
                    let sealed = v.seal(&u, &c, format!("secret-{i}").as_bytes()).await?;
                    Ok::<_, KeyError>((c, sealed, i))
                })
            })
            .collect();
        let mut sealed = Vec::new();
        for t in tasks {
            sealed.push(t.await.expect("join").expect("seal"));
        }
        // Fresh vault (empty cache): every ciphertext opens with the one
        // stored key.
        let v2 = EnvelopeVault::new(
            CountingRef(master.clone()),
            s.clone(),
            VaultConfig::default(),
        );
        for (c, blob, i) in &sealed {
            assert_eq!(
                v2.open(&u, c, blob).await.expect("open"),
                format!("secret-{i}").as_bytes()
            );
        }
        assert!(master.generated() >= 1);
        assert_eq!(s.list(None, 10).await.expect("list").len(), 1);
    }
}

/// `Counting` behind an `Arc`, so the test keeps a handle on the counters.
struct CountingRef(Arc<Counting<LocalMasterKey>>);

#[async_trait::async_trait]
impl MasterKey for CountingRef {
    fn key_id(&self) -> &str {
        self.0.key_id()
    }
    async fn generate_data_key(&self, owner: &str) -> Result<(DataKey, Vec<u8>), KeyError> {
        self.0.generate_data_key(owner).await
    }
    async fn decrypt_data_key(&self, owner: &str, wrapped: &[u8]) -> Result<DataKey, KeyError> {
        self.0.decrypt_data_key(owner, wrapped).await
    }
    async fn re_encrypt(
        &self,
        owner: &str,
        wrapped: &[u8],
        to: &Self,
    ) -> Result<Vec<u8>, KeyError> {
        self.0.re_encrypt(owner, wrapped, &to.0).await
    }
}

async fn master_calls(cache: CacheConfig, owners: usize, seals: usize) -> (u64, u64) {
    let master = Arc::new(Counting::new(LocalMasterKey::generate()));
    let v = EnvelopeVault::new(
        CountingRef(master.clone()),
        store().1,
        VaultConfig {
            cache,
            ..VaultConfig::default()
        },
    );
    for i in 0..seals {
        let u = user(&format!("user-{}", i % owners));
        v.seal(&u, &ctx("r", "pan"), b"x").await.expect("seal");
    }
    (master.generated(), master.decrypted())
}

#[tokio::test]
async fn cache_limits_bound_master_key_calls() {
    assert_eq!(
        master_calls(CacheConfig::default(), 100, 1000).await,
        (100, 0)
    );
    assert_eq!(
        master_calls(CacheConfig::disabled(), 100, 1000).await,
        (100, 900)
    );
    // max_uses = 10: each cached key serves 10 seals, then is unwrapped again.
    let uses = CacheConfig {
        max_uses: 10,
        ..CacheConfig::default()
    };
    assert_eq!(master_calls(uses, 1, 100).await, (1, 9));
    // max_entries = 50 with 100 owners in rotation: every access misses.
    let small = CacheConfig {
        max_entries: 50,
        ..CacheConfig::default()
    };
    assert_eq!(master_calls(small, 100, 1000).await, (100, 900));
    // max_entries = 100 with 100 owners: all fit.
    let fits = CacheConfig {
        max_entries: 100,
        ..CacheConfig::default()
    };
    assert_eq!(master_calls(fits, 100, 1000).await, (100, 0));
}

#[tokio::test]
async fn cache_max_age_expires_entries() {
    let master = Arc::new(Counting::new(LocalMasterKey::generate()));
    let v = EnvelopeVault::new(
        CountingRef(master.clone()),
        store().1,
        VaultConfig {
            cache: CacheConfig {
                max_age: Duration::from_millis(100),
                ..CacheConfig::default()
            },
            ..VaultConfig::default()
        },
    );
    let u = user("aging");
    v.seal(&u, &ctx("r", "pan"), b"x").await.expect("seal");
    v.seal(&u, &ctx("r", "pan"), b"x").await.expect("seal");
    assert_eq!(master.decrypted(), 0);
    tokio::time::sleep(Duration::from_millis(150)).await;
    v.seal(&u, &ctx("r", "pan"), b"x").await.expect("seal");
    assert_eq!(master.decrypted(), 1);
}

#[tokio::test]
async fn fingerprints_are_keyed_stable_and_versioned() {
    let (_, s) = store();
    let master = DataKey::generate();
    let v = EnvelopeVault::new(
        LocalMasterKey::from_key(master.clone()),
        s.clone(),
        VaultConfig::default(),
    );
    let pan = CardNumber::parse("4111 1111 1111 1111").expect("pan");
    let other = CardNumber::parse("5555 5555 5555 4444").expect("pan");
    let f1 = v.fingerprint(&pan).await.expect("fp");
    assert_eq!(f1.version(), 1);
    let text = f1.to_string();
    assert!(text.starts_with("v1:") && text.len() == 3 + 64, "{text}");
    assert_eq!(v.fingerprint(&pan).await.expect("fp"), f1);
    assert_ne!(v.fingerprint(&other).await.expect("fp"), f1);
    assert!(!text.contains("4111111111111111"));
    // Not a plain hash: another deployment (another fingerprint key) gives
    // another value.
    let elsewhere = vault();
    assert_ne!(elsewhere.fingerprint(&pan).await.expect("fp"), f1);
    // Another instance on the same store agrees (the key is stored wrapped).
    let v_b = EnvelopeVault::new(
        LocalMasterKey::from_key(master.clone()),
        s.clone(),
        VaultConfig::default(),
    );
    assert_eq!(v_b.fingerprint(&pan).await.expect("fp"), f1);
    assert!(s.get(&fingerprint_owner(1)).await.expect("get").is_some());

    // Rotation of the fingerprint key: version 2, while v1 stays computable.
    let v2 = EnvelopeVault::new(
        LocalMasterKey::from_key(master),
        s.clone(),
        VaultConfig {
            fingerprint_version: 2,
            ..VaultConfig::default()
        },
    );
    let f2 = v2.fingerprint(&pan).await.expect("fp");
    assert_eq!(f2.version(), 2);
    assert_ne!(f2.to_string()[3..], f1.to_string()[3..]);
    assert_eq!(v2.fingerprint_with_version(&pan, 1).await.expect("fp"), f1);
    assert!(is_refused(&v2.fingerprint_with_version(&pan, 3).await));
}

#[tokio::test]
async fn local_rotation_rewraps_keys_only_and_resumes() {
    let (_, s) = store();
    let old_key = DataKey::generate();
    let new_key = DataKey::generate();
    let v_old = EnvelopeVault::new(
        LocalMasterKey::from_key(old_key.clone()),
        s.clone(),
        VaultConfig::default(),
    );
    v_old.self_check().await.expect("canary");
    let pan = CardNumber::parse("4111111111111111").expect("pan");
    let fp = v_old.fingerprint(&pan).await.expect("fp");
    let mut sealed = Vec::new();
    for i in 0..30 {
        let u = user(&format!("user-{i:02}"));
        let c = SealContext::new(format!("card-{i}"), "pan");
        sealed.push((
            u.clone(),
            c.clone(),
            v_old
                .seal(&u, &c, format!("pan-{i}").as_bytes())
                .await
                .expect("seal"),
        ));
    }
    let before: Vec<_> = s.list(None, 1000).await.expect("list");
    let total = before.len() as u64 - 1; // minus the sealed-canary record

    // Interrupted after 10 keys.
    let from = Counting::new(LocalMasterKey::from_key(old_key.clone()));
    let to = Counting::new(LocalMasterKey::from_key(new_key.clone()));
    from.fail_reencrypt_after.store(10, Ordering::SeqCst);
    let mut seen = 0;
    let err = rotate(s.as_ref(), &from, &to, |_| seen += 1)
        .await
        .expect_err("interrupted");
    assert!(matches!(err, KeyError::Unavailable(_)));
    assert_eq!(seen, 10);

    // Resumed: the rest, skipping those already done.
    from.fail_reencrypt_after.store(u64::MAX, Ordering::SeqCst);
    let report = rotate(s.as_ref(), &from, &to, |_| {})
        .await
        .expect("rotate");
    assert_eq!(report.rewrapped, total - 10);
    assert_eq!(report.already_current, 10);
    assert!(report.failed.is_empty());
    let again = rotate(s.as_ref(), &from, &to, |_| {})
        .await
        .expect("rotate");
    assert_eq!((again.rewrapped, again.already_current), (0, total));

    // Every key is under the new master key, versions bumped, data keys
    // (and so data) unchanged.
    for wk in s.list(None, 1000).await.expect("list") {
        if wk.owner == SEALED_CANARY_OWNER {
            continue;
        }
        assert_eq!(wk.master_key_id, to.key_id());
        assert_eq!(wk.version, 2);
        to.inner
            .decrypt_data_key(&wk.owner, &wk.wrapped)
            .await
            .expect("opens under new key");
        assert!(is_refused(
            &from.inner.decrypt_data_key(&wk.owner, &wk.wrapped).await
        ));
    }
    let v_new = EnvelopeVault::new(
        LocalMasterKey::from_key(new_key),
        s.clone(),
        VaultConfig::default(),
    );
    v_new.self_check().await.expect("canary under new key");
    assert_eq!(v_new.fingerprint(&pan).await.expect("fp"), fp);
    for (u, c, blob) in &sealed {
        v_new.open(u, c, blob).await.expect("data still opens");
    }
    // The old key alone no longer works; old as *previous* key is fine.
    let v_only_old = EnvelopeVault::new(
        LocalMasterKey::from_key(old_key.clone()),
        s.clone(),
        VaultConfig::default(),
    );
    assert!(is_refused(
        &v_only_old
            .open(&sealed[0].0, &sealed[0].1, &sealed[0].2)
            .await
    ));
}

#[tokio::test]
async fn service_runs_during_rotation_with_previous_key() {
    let (_, s) = store();
    let old_key = DataKey::generate();
    let new_key = DataKey::generate();
    let v_old = EnvelopeVault::new(
        LocalMasterKey::from_key(old_key.clone()),
        s.clone(),
        VaultConfig::default(),
    );
    let u = user("early");
    let c = ctx("r", "pan");
    let early = v_old.seal(&u, &c, b"early").await.expect("seal");
    // The service restarts with new as master, old as previous.
    let v = EnvelopeVault::new(
        LocalMasterKey::from_key(new_key.clone()),
        s.clone(),
        VaultConfig::default(),
    )
    .with_previous_keys(vec![LocalMasterKey::from_key(old_key.clone())]);
    assert_eq!(v.open(&u, &c, &early).await.expect("open"), b"early");
    let late = v.seal(&user("late"), &c, b"late").await.expect("seal");
    let report = rotate(
        s.as_ref(),
        &LocalMasterKey::from_key(old_key),
        &LocalMasterKey::from_key(new_key),
        |_| {},
    )
    .await
    .expect("rotate");
    assert_eq!((report.rewrapped, report.already_current), (1, 1));
    assert_eq!(
        v.open(&user("late"), &c, &late).await.expect("open"),
        b"late"
    );
}

#[tokio::test]
async fn nothing_secret_in_debug_or_errors() {
    let key = DataKey::generate();
    let hex_key = hex::encode(key.expose());
    let m = LocalMasterKey::from_key(key.clone());
    for s in [format!("{key:?}"), format!("{m:?}")] {
        assert!(!s.contains(&hex_key), "{s}");
        assert!(!s.contains(&format!("{:?}", key.expose())), "{s}");
    }
    let v = vault();
    let u = user("dbg");
    let sealed = v
        .seal(&u, &ctx("r", "pan"), b"6222021234567890")
        .await
        .expect("seal");
    let err = v
        .open(&u, &ctx("r2", "pan"), &sealed)
        .await
        .expect_err("refused");
    assert!(!format!("{err:?} {err}").contains("6222021234567890"));
    assert!(!format!("{sealed:?}").contains("6222"));
}
