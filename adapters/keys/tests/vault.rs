//! The envelope vault with the local master key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use cardbind_domain::{CardNumber, SealedBlob};
use cardbind_keys::{
    branch_owner, fingerprint_owner, format, parse_branch_owner, rotate, BranchConfig, CacheConfig,
    DataKey, EnvelopeVault, LocalMasterKey, MasterKey, VaultConfig, ACTIVE_BRANCH_OWNER,
    CANARY_OWNER, SEALED_CANARY_OWNER,
};
use cardbind_ports::error::KeyError;
use cardbind_ports::keys::{CardVault, SealContext};
use cardbind_ports::store::{DataKeyStore, WrappedKey};
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
    for id in [
        "@fingerprint",
        "@canary",
        "@canary.sealed",
        "@branch:00000001",
        "@branch.active",
        "@x",
    ] {
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
        // Fresh vault (empty caches): every ciphertext opens with the one
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
        // 32 concurrent first seals of a fresh store made one branch key
        // (single flight), and the owner has one key.
        assert_eq!(master.generated(), 1, "{cache:?}");
        let owners: Vec<String> = s
            .list(None, 10)
            .await
            .expect("list")
            .into_iter()
            .map(|k| k.owner)
            .collect();
        assert_eq!(
            owners,
            [ACTIVE_BRANCH_OWNER, "@branch:00000001", "racer"],
            "{cache:?}"
        );
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

async fn master_calls(
    branch: BranchConfig,
    cache: CacheConfig,
    owners: usize,
    seals: usize,
) -> (u64, u64) {
    let master = Arc::new(Counting::new(LocalMasterKey::generate()));
    let v = EnvelopeVault::new(
        CountingRef(master.clone()),
        store().1,
        VaultConfig {
            cache,
            branch,
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
async fn new_users_cost_no_master_key_call() {
    // 1,000 binds of 1,000 new users (a fingerprint and four sealed fields
    // each): one master key call in all, for the first branch key. Were
    // per-user keys made or unwrapped by the master key again, this would
    // count at least 1,000.
    let (_, s) = store();
    let master = Arc::new(Counting::new(LocalMasterKey::generate()));
    let v = EnvelopeVault::new(
        CountingRef(master.clone()),
        s.clone(),
        VaultConfig::default(),
    );
    let pan = CardNumber::parse("4111111111111111").expect("pan");
    let mut sealed = Vec::new();
    for i in 0..1000 {
        let u = user(&format!("new-user-{i:04}"));
        v.fingerprint(&pan).await.expect("fp");
        for field in ["pan", "holder_name", "id_number", "phone"] {
            let c = SealContext::new(format!("card-{i}"), field);
            let blob = v.seal(&u, &c, b"value").await.expect("seal");
            if i % 100 == 0 {
                sealed.push((u.clone(), c, blob));
            }
        }
    }
    assert_eq!((master.generated(), master.decrypted()), (1, 0));
    // Every user's key is wrapped under the branch key, and the master key
    // wraps only the branch key.
    let records = s.list(None, 10_000).await.expect("list");
    assert_eq!(
        records.len(),
        1000 + 3,
        "users, @fingerprint, branch key, pointer"
    );
    for wk in &records {
        if wk.owner.starts_with("@branch") {
            continue;
        }
        assert_eq!(wk.master_key_id, "@branch:00000001", "{}", wk.owner);
    }
    let by_master: Vec<_> = records
        .iter()
        .filter(|k| k.master_key_id == master.key_id())
        .map(|k| k.owner.as_str())
        .collect();
    assert_eq!(by_master, ["@branch:00000001"]);

    // Another instance (empty caches) opens them with one master key call:
    // the branch key, once.
    let v2 = EnvelopeVault::new(
        CountingRef(master.clone()),
        s.clone(),
        VaultConfig::default(),
    );
    for (u, c, blob) in &sealed {
        assert_eq!(v2.open(u, c, blob).await.expect("open"), b"value");
    }
    assert_eq!((master.generated(), master.decrypted()), (1, 1));
}

#[tokio::test]
async fn master_key_calls_depend_on_the_branch_key_cache_only() {
    // 1,000 seals of 100 owners: the per-owner cache no longer changes the
    // master key calls; only the branch key does.
    assert_eq!(
        master_calls(BranchConfig::default(), CacheConfig::default(), 100, 1000).await,
        (1, 0)
    );
    assert_eq!(
        master_calls(BranchConfig::default(), CacheConfig::disabled(), 100, 1000).await,
        (1, 0)
    );
    // Branch key cache off: every new owner, and every owner key unwrapped
    // from the store, unwraps the branch key again.
    let no_ttl = BranchConfig {
        cache_ttl: Duration::ZERO,
        ..BranchConfig::default()
    };
    let (generated, decrypted) =
        master_calls(no_ttl.clone(), CacheConfig::default(), 100, 1000).await;
    assert_eq!(generated, 1);
    assert!(decrypted >= 100, "{decrypted}");
    let (_, decrypted) = master_calls(no_ttl, CacheConfig::disabled(), 100, 1000).await;
    assert!(decrypted >= 1000, "{decrypted}");
}
#[tokio::test]
async fn branch_key_ttl_bounds_how_long_it_is_used_from_memory() {
    let master = Arc::new(Counting::new(LocalMasterKey::generate()));
    let v = EnvelopeVault::new(
        CountingRef(master.clone()),
        store().1,
        VaultConfig {
            branch: BranchConfig {
                cache_ttl: Duration::from_millis(150),
                ..BranchConfig::default()
            },
            ..VaultConfig::default()
        },
    );
    v.seal(&user("a"), &ctx("r", "pan"), b"x")
        .await
        .expect("seal");
    v.seal(&user("b"), &ctx("r", "pan"), b"x")
        .await
        .expect("seal");
    assert_eq!((master.generated(), master.decrypted()), (1, 0));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The next new owner reads the active version again and unwraps its
    // key by the master key once; the ones after use it from memory.
    for u in ["c", "d", "e"] {
        v.seal(&user(u), &ctx("r", "pan"), b"x")
            .await
            .expect("seal");
    }
    assert_eq!((master.generated(), master.decrypted()), (1, 1));
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

/// A data key stored the way it was before branch keys: wrapped directly by
/// the master key.
async fn put_legacy_key(s: &Arc<dyn DataKeyStore>, master: &LocalMasterKey, owner: &str) {
    let (_, wrapped) = master.generate_data_key(owner).await.expect("generate");
    s.put_if_absent(&WrappedKey {
        owner: owner.to_owned(),
        master_key_id: master.key_id().to_owned(),
        wrapped,
        version: 1,
        created_at: cardbind_domain::Timestamp::from_unix_millis(1_700_000_000_000),
    })
    .await
    .expect("put");
}

#[tokio::test]
async fn local_rotation_rewraps_branch_keys_only_and_resumes() {
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
    // 30 users over three branch key versions, and one key from before
    // branch keys.
    put_legacy_key(
        &s,
        &LocalMasterKey::from_key(old_key.clone()),
        "legacy-user",
    )
    .await;
    let mut sealed = Vec::new();
    for i in 0..30 {
        if i == 10 || i == 20 {
            v_old.new_branch_version().await.expect("new version");
        }
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
    let legacy = user("legacy-user");
    let c = SealContext::new("card-legacy", "pan");
    sealed.push((
        legacy.clone(),
        c.clone(),
        v_old.seal(&legacy, &c, b"old").await.expect("seal"),
    ));
    assert_eq!(
        v_old.active_branch().await.expect("active"),
        branch_owner(3)
    );

    // Interrupted after 2 of the 4 keys the master key wraps (3 branch
    // versions and the legacy key); the 30 users' keys are not touched.
    let from = Counting::new(LocalMasterKey::from_key(old_key.clone()));
    let to = Counting::new(LocalMasterKey::from_key(new_key.clone()));
    from.fail_reencrypt_after.store(2, Ordering::SeqCst);
    let mut seen = 0;
    let err = rotate(s.as_ref(), &from, &to, |_| seen += 1)
        .await
        .expect_err("interrupted");
    assert!(matches!(err, KeyError::Unavailable(_)));
    assert_eq!(seen, 2);

    // Resumed: the rest, skipping those already done.
    from.fail_reencrypt_after.store(u64::MAX, Ordering::SeqCst);
    let report = rotate(s.as_ref(), &from, &to, |_| {})
        .await
        .expect("rotate");
    assert_eq!(
        (report.scanned, report.rewrapped, report.already_current),
        (4, 2, 2)
    );
    assert!(report.failed.is_empty());
    assert_eq!(
        from.reencrypted.load(Ordering::SeqCst),
        2 + 1 + 2,
        "one call per master-wrapped key"
    );
    let again = rotate(s.as_ref(), &from, &to, |_| {})
        .await
        .expect("rotate");
    assert_eq!((again.rewrapped, again.already_current), (0, 4));

    // Every master-wrapped record is under the new master key, versions
    // bumped, keys (and so data) unchanged; users' keys are still under
    // their branch versions.
    for wk in s.list(None, 1000).await.expect("list") {
        if wk.master_key_id.starts_with('@') {
            continue; // under a branch key, or not a key
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
    // A new user goes under the active branch key, still wrapped by old.
    let late = v.seal(&user("late"), &c, b"late").await.expect("seal");
    // A new branch version made now is wrapped by the new master key.
    let b2 = v.new_branch_version().await.expect("new version");
    let latest = v.seal(&user("latest"), &c, b"latest").await.expect("seal");
    assert_eq!(
        s.get(&b2).await.expect("get").expect("b2").master_key_id,
        new_key_id(&new_key)
    );
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
    assert_eq!(
        v.open(&user("latest"), &c, &latest).await.expect("open"),
        b"latest"
    );
}

fn new_key_id(key: &DataKey) -> String {
    LocalMasterKey::from_key(key.clone()).key_id().to_owned()
}

#[tokio::test]
async fn wrapped_user_keys_moved_relabelled_or_tampered_are_refused() {
    let (_, s) = store();
    let master = DataKey::generate();
    let v = EnvelopeVault::new(
        LocalMasterKey::from_key(master.clone()),
        s.clone(),
        VaultConfig::default(),
    );
    let (alice, carol) = (user("alice"), user("carol"));
    let c = ctx("card-1", "pan");
    let a_sealed = v.seal(&alice, &c, b"alice-pan").await.expect("seal");
    let c_sealed = v.seal(&carol, &c, b"carol-pan").await.expect("seal");
    v.new_branch_version().await.expect("version 2");
    let alice_wk = s.get("alice").await.expect("get").expect("alice key");
    let carol_wk = s.get("carol").await.expect("get").expect("carol key");
    assert_eq!(alice_wk.master_key_id, branch_owner(1));

    // A fresh instance (empty caches) for every attempt, so the key is
    // unwrapped from what the store holds now.
    let fresh = || {
        EnvelopeVault::new(
            LocalMasterKey::from_key(master.clone()),
            s.clone(),
            VaultConfig::default(),
        )
    };
    let mut version = carol_wk.version;
    let mut put_as_carol = |wk: WrappedKey| {
        version += 1;
        let expected = version - 1;
        let s = s.clone();
        async move {
            s.replace(
                &WrappedKey {
                    version: expected + 1,
                    ..wk
                },
                expected,
            )
            .await
            .expect("replace");
        }
    };

    // Alice's wrapped key copied into carol's record (owner is in the AAD).
    put_as_carol(WrappedKey {
        owner: "carol".into(),
        created_at: carol_wk.created_at,
        ..alice_wk.clone()
    })
    .await;
    let r = fresh().open(&carol, &c, &c_sealed).await;
    assert!(is_refused(&r), "moved to another owner: {r:?}");

    // Carol's own wrapped key relabelled as branch version 2 (the version
    // is in the AAD and picks another key).
    put_as_carol(WrappedKey {
        master_key_id: branch_owner(2),
        ..carol_wk.clone()
    })
    .await;
    let r = fresh().open(&carol, &c, &c_sealed).await;
    assert!(is_refused(&r), "relabelled version: {r:?}");

    // Labelled with a version that does not exist, or not a key at all.
    for label in [
        branch_owner(9),
        "@sealed-canary".to_owned(),
        "@branch:1".to_owned(),
    ] {
        put_as_carol(WrappedKey {
            master_key_id: label.clone(),
            ..carol_wk.clone()
        })
        .await;
        let r = fresh().open(&carol, &c, &c_sealed).await;
        assert!(is_refused(&r), "{label}: {r:?}");
    }

    // Any byte of the wrapped key flipped.
    for i in 0..carol_wk.wrapped.len() {
        let mut wrapped = carol_wk.wrapped.clone();
        wrapped[i] ^= 0x01;
        put_as_carol(WrappedKey {
            wrapped,
            ..carol_wk.clone()
        })
        .await;
        let r = fresh().open(&carol, &c, &c_sealed).await;
        assert!(is_refused(&r), "byte {i}: {r:?}");
    }

    // Put back as it was: it opens again (the refusals were the tampering).
    put_as_carol(carol_wk.clone()).await;
    assert_eq!(
        fresh().open(&carol, &c, &c_sealed).await.expect("open"),
        b"carol-pan"
    );

    // A branch key record moved to another version's record: the master
    // key wraps each version bound to its name.
    let b1 = s.get(&branch_owner(1)).await.expect("get").expect("b1");
    let b2 = s.get(&branch_owner(2)).await.expect("get").expect("b2");
    s.replace(
        &WrappedKey {
            owner: b2.owner.clone(),
            version: b2.version + 1,
            ..b1.clone()
        },
        b2.version,
    )
    .await
    .expect("replace");
    let d = user("dave");
    let r = fresh().seal(&d, &c, b"x").await;
    assert!(is_refused(&r), "moved branch key record: {r:?}");
    assert!(
        s.get("dave").await.expect("get").is_none(),
        "nothing sealed"
    );
    // Alice (version 1) is unaffected.
    assert_eq!(
        fresh().open(&alice, &c, &a_sealed).await.expect("open"),
        b"alice-pan"
    );
}

#[tokio::test]
async fn branch_versions_rotate_by_age_and_retire_after_rewrapping() {
    let (_, s) = store();
    let master = Arc::new(Counting::new(LocalMasterKey::generate()));
    let rotating = EnvelopeVault::new(
        CountingRef(master.clone()),
        s.clone(),
        VaultConfig {
            branch: BranchConfig {
                cache_ttl: Duration::from_millis(100),
                rotate_after: Some(Duration::from_millis(300)),
                clock_skew: Duration::ZERO,
            },
            ..VaultConfig::default()
        },
    );
    let c = ctx("card", "pan");
    let mut sealed = Vec::new();
    for i in 0..5 {
        let u = user(&format!("early-{i}"));
        sealed.push((
            u.clone(),
            rotating.seal(&u, &c, b"early").await.expect("seal"),
        ));
    }
    let pan = CardNumber::parse("4111111111111111").expect("pan");
    let fp = rotating.fingerprint(&pan).await.expect("fp");
    assert_eq!(
        rotating.active_branch().await.expect("active"),
        branch_owner(1)
    );
    // Older than rotate_after: the next refresh of the active version
    // makes version 2 (one master key call) and activates it.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let late = user("late");
    sealed.push((
        late.clone(),
        rotating.seal(&late, &c, b"late").await.expect("seal"),
    ));
    assert_eq!(master.generated(), 2);
    assert_eq!(
        s.get("early-0")
            .await
            .expect("get")
            .expect("key")
            .master_key_id,
        branch_owner(1)
    );
    assert_eq!(
        s.get("late")
            .await
            .expect("get")
            .expect("key")
            .master_key_id,
        branch_owner(2)
    );
    // Version 1 stays readable.
    for (u, blob) in &sealed {
        rotating.open(u, &c, blob).await.expect("open");
    }

    // Retirement right away: keys move to version 2, but version 1 is kept
    // (an instance may not have seen version 2 yet).
    // (Its grace period: two TTLs of 500 ms.)
    let retiring = EnvelopeVault::new(
        CountingRef(master.clone()),
        s.clone(),
        VaultConfig {
            branch: BranchConfig {
                cache_ttl: Duration::from_millis(500),
                rotate_after: None,
                clock_skew: Duration::ZERO,
            },
            ..VaultConfig::default()
        },
    );
    let erased = user("early-4");
    let backup = s.get("early-4").await.expect("get").expect("key");
    assert!(retiring.erase_owner(&erased).await.expect("erase"));
    let mut calls = Vec::new();
    let first = retiring
        .retire_branches(false, |r| calls.push(r.scanned))
        .await
        .expect("retire");
    assert_eq!(first.active, branch_owner(2));
    // early-0..3 and @fingerprint moved; late already there; the canary was
    // never made in this store.
    assert_eq!(
        (first.scanned, first.rewrapped, first.already_current),
        (6, 5, 1)
    );
    assert_eq!(calls.len(), 6);
    assert!(first.retired.is_empty());
    assert_eq!(first.kept, [branch_owner(1)]);
    assert!(first.retire_after.is_some());
    assert!(s.get(&branch_owner(1)).await.expect("get").is_some());

    // Restoring the erased user's key from a backup taken before the
    // erasure would bring their data back while version 1 exists...
    s.put_if_absent(&backup).await.expect("restore");
    let fresh = || {
        EnvelopeVault::new(
            CountingRef(master.clone()),
            s.clone(),
            VaultConfig::default(),
        )
    };
    assert!(fresh().open(&erased, &c, &sealed[4].1).await.is_ok());
    assert!(s.delete("early-4").await.expect("delete"));

    // After the grace period a second run deletes version 1.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = retiring
        .retire_branches(false, |_| {})
        .await
        .expect("retire");
    assert_eq!(
        (second.scanned, second.rewrapped, second.already_current),
        (6, 0, 6)
    );
    assert_eq!(second.retired, [branch_owner(1)]);
    assert!(second.kept.is_empty() && second.retire_after.is_none());
    assert!(s.get(&branch_owner(1)).await.expect("get").is_none());

    // ...but not once version 1 is retired.
    s.put_if_absent(&backup).await.expect("restore");
    let r = fresh().open(&erased, &c, &sealed[4].1).await;
    assert!(is_refused(&r), "restored key of a retired version: {r:?}");
    assert!(s.delete("early-4").await.expect("delete"));

    // Everything else opens from a fresh instance, fingerprints unchanged.
    let v = fresh();
    for (u, blob) in sealed.iter().filter(|(u, _)| u != &erased) {
        v.open(u, &c, blob).await.expect("open after retirement");
    }
    assert_eq!(v.fingerprint(&pan).await.expect("fp"), fp);
    assert!(s
        .list(None, 100)
        .await
        .expect("list")
        .iter()
        .all(|k| parse_branch_owner(&k.master_key_id).is_none_or(|n| n == 2)));
}

#[tokio::test]
async fn retirement_migrates_keys_from_before_branch_keys() {
    let (_, s) = store();
    let master = DataKey::generate();
    put_legacy_key(&s, &LocalMasterKey::from_key(master.clone()), "legacy").await;
    let v = EnvelopeVault::new(
        LocalMasterKey::from_key(master.clone()),
        s.clone(),
        VaultConfig::default(),
    );
    let u = user("legacy");
    let c = ctx("card", "pan");
    let blob = v
        .seal(&u, &c, b"kept")
        .await
        .expect("seal with the legacy key");
    let report = v.retire_branches(false, |_| {}).await.expect("retire");
    assert_eq!((report.scanned, report.rewrapped), (1, 1));
    let wk = s.get("legacy").await.expect("get").expect("key");
    assert_eq!(wk.master_key_id, branch_owner(1));
    assert_eq!(wk.version, 2);
    let fresh = EnvelopeVault::new(
        LocalMasterKey::from_key(master),
        s.clone(),
        VaultConfig::default(),
    );
    assert_eq!(fresh.open(&u, &c, &blob).await.expect("open"), b"kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn master_key_down_with_and_without_a_cached_branch_key() {
    let (_, s) = store();
    let master = Arc::new(Counting::new(LocalMasterKey::generate()));
    let vault = || {
        EnvelopeVault::new(
            CountingRef(master.clone()),
            s.clone(),
            VaultConfig::default(),
        )
    };
    let c = ctx("card", "pan");
    let a = vault();
    let alice = user("alice");
    let alice_blob = a.seal(&alice, &c, b"alice").await.expect("seal");
    let before = master.calls();

    // Down. An instance holding the branch key keeps sealing for new users
    // (and opening them) without a master key call.
    master.set_down(true);
    for i in 0..50 {
        let u = user(&format!("while-down-{i}"));
        let blob = a
            .seal(&u, &c, b"x")
            .await
            .expect("sealed with the cached branch key");
        assert_eq!(a.open(&u, &c, &blob).await.expect("open"), b"x");
    }
    assert_eq!(master.calls(), before);

    // A fresh instance has no branch key: a new user is Unavailable and
    // nothing is stored for them; existing data needs the branch key too.
    let b = vault();
    let bob = user("bob");
    let r = b.seal(&bob, &c, b"x").await;
    assert!(matches!(r, Err(KeyError::Unavailable(_))), "{r:?}");
    assert!(s.get("bob").await.expect("get").is_none(), "nothing sealed");
    let r = b.open(&alice, &c, &alice_blob).await;
    assert!(matches!(r, Err(KeyError::Unavailable(_))), "{r:?}");

    // Concurrent callers of a fresh instance share one failing load
    // instead of each waiting for the key service in turn.
    master.delay_ms.store(200, Ordering::SeqCst);
    let cold = Arc::new(vault());
    let calls = master.calls();
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let v = cold.clone();
            tokio::spawn(async move {
                v.seal(
                    &user(&format!("cold-{i}")),
                    &SealContext::new("r", "pan"),
                    b"x",
                )
                .await
            })
        })
        .collect();
    for t in tasks {
        let r = t.await.expect("join");
        assert!(matches!(r, Err(KeyError::Unavailable(_))), "{r:?}");
    }
    assert!(
        master.calls() - calls <= 2,
        "{} calls",
        master.calls() - calls
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    master.delay_ms.store(0, Ordering::SeqCst);

    // Once the branch key's TTL has run out, the instance that had it is
    // refused too, until the key service is back.
    let short = EnvelopeVault::new(
        CountingRef(master.clone()),
        s.clone(),
        VaultConfig {
            branch: BranchConfig {
                cache_ttl: Duration::from_millis(100),
                ..BranchConfig::default()
            },
            ..VaultConfig::default()
        },
    );
    master.set_down(false);
    short.seal(&user("carol"), &c, b"x").await.expect("seal");
    master.set_down(true);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let r = short.seal(&user("dave"), &c, b"x").await;
    assert!(matches!(r, Err(KeyError::Unavailable(_))), "{r:?}");
    assert!(s.get("dave").await.expect("get").is_none());
    master.set_down(false);
    short.seal(&user("dave"), &c, b"x").await.expect("back");
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
