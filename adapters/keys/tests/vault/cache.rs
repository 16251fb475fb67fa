//! Concurrent first seals, master key calls and the branch key cache (what
//! it saves, its TTL), and keyed fingerprints.

use super::*;

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
                // Long enough that two seals never straddle it on a
                // loaded machine (the cache reads the real clock).
                cache_ttl: Duration::from_millis(1000),
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
    tokio::time::sleep(Duration::from_millis(1200)).await;
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
    let v = vault_on(&master, &s);
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
    let v_b = vault_on(&master, &s);
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
async fn keyed_digests_are_keyed_stable_and_apart_by_purpose() {
    let (_, s) = store();
    let master = DataKey::generate();
    let v = vault_on(&master, &s);
    let data: &[u8] = b"POST /v1/users/alice/cards {\"card_number\":\"4111111111111111\"}";
    let d1 = v.keyed_digest("request", &[data]).await.expect("digest");
    assert_eq!(
        v.keyed_digest("request", &[data]).await.expect("digest"),
        d1
    );
    assert_ne!(v.keyed_digest("key", &[data]).await.expect("digest"), d1);
    assert_ne!(
        v.keyed_digest("request", &[&data[1..]])
            .await
            .expect("digest"),
        d1
    );
    // The purpose and each part are length-prefixed: moving a byte from
    // the purpose into a part, or from one part into the next, or
    // splitting a part in two gives another digest.
    let t_data = [b"t".as_slice(), data].concat();
    assert_ne!(
        v.keyed_digest("reques", &[&t_data]).await.expect("digest"),
        d1
    );
    let (a, b) = data.split_at(4);
    let split = v.keyed_digest("request", &[a, b]).await.expect("digest");
    assert_ne!(split, d1);
    let (a2, b2) = data.split_at(5);
    assert_ne!(
        v.keyed_digest("request", &[a2, b2]).await.expect("digest"),
        split
    );
    assert_ne!(
        v.keyed_digest("request", &[data, b""])
            .await
            .expect("digest"),
        d1
    );
    // Not a plain hash: another deployment gives another value, and so
    // does SHA-256 of what went in.
    let plain: [u8; 32] = sha2::Sha256::digest(data).into();
    assert_ne!(plain, d1);
    assert_ne!(
        vault()
            .keyed_digest("request", &[data])
            .await
            .expect("digest"),
        d1
    );
    // Another instance on the same store agrees (the key is stored wrapped
    // under its own reserved owner).
    let v_b = vault_on(&master, &s);
    assert_eq!(
        v_b.keyed_digest("request", &[data]).await.expect("digest"),
        d1
    );
    assert!(s.get(DIGEST_OWNER).await.expect("get").is_some());
    assert!(cardbind_domain::UserId::parse(DIGEST_OWNER).is_err());
}

#[tokio::test]
async fn keyed_digest_without_its_key_or_store_is_unavailable() {
    let (m, s) = store();
    let v = EnvelopeVault::new(LocalMasterKey::generate(), s, VaultConfig::default());
    m.set_unavailable(true);
    assert!(matches!(
        v.keyed_digest("request", &[b"x"]).await,
        Err(KeyError::StoreUnavailable(_))
    ));
}

/// The vault serves without the master key exactly while it holds the
/// active branch key read less than a TTL ago: not before its first use,
/// and not once the TTL has passed (then the next key needs the master
/// key again), nor with the branch key cache off.
#[tokio::test]
async fn serves_without_the_master_key_while_the_active_branch_key_is_fresh() {
    let (_, s) = store();
    let config = |ttl: Duration| VaultConfig {
        branch: BranchConfig {
            cache_ttl: ttl,
            rotate_after: None,
            clock_skew: Duration::ZERO,
            max_seal_time: Duration::ZERO,
        },
        ..VaultConfig::default()
    };
    let master = Arc::new(Counting::new(LocalMasterKey::generate()));
    let v = EnvelopeVault::new(
        CountingRef(master.clone()),
        s.clone(),
        config(Duration::from_millis(1500)),
    );
    assert!(!v.serves_without_master_key(), "nothing read yet");
    let c = ctx("card", "pan");
    v.seal(&user("a"), &c, b"x").await.expect("seal");
    assert!(v.serves_without_master_key());
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert!(!v.serves_without_master_key(), "read a TTL ago");
    v.seal(&user("b"), &c, b"y").await.expect("seal");
    assert!(v.serves_without_master_key(), "read again");

    let uncached = EnvelopeVault::new(CountingRef(master), s.clone(), config(Duration::ZERO));
    uncached.seal(&user("c"), &c, b"z").await.expect("seal");
    assert!(!uncached.serves_without_master_key(), "no branch key cache");
}
