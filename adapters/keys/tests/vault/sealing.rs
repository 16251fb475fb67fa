//! Sealing and opening: round trips, the sealed format, refusals for a
//! wrong record, field or owner, tampering, erasure, reserved owner ids and
//! the self-check.

use super::*;

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
async fn sealing_for_an_owner_erased_elsewhere_never_uses_the_erased_key() {
    let (_, s) = store();
    let master = DataKey::generate();
    let (a, b) = (vault_on(&master, &s), vault_on(&master, &s));
    let u = user("u-3");
    let c = ctx("r", "pan");
    // Instance a holds the user's key in its cache; b erases the user.
    a.seal(&u, &c, b"before").await.expect("seal");
    assert!(b.erase_owner(&u).await.expect("erase"));
    // The user binds again on a: the caller says the owner has no live
    // card, so the vault asks the store (no key: a new one).
    let sealed = a.seal_for_new_owner(&u, &c, b"after").await.expect("seal");
    let fresh = vault_on(&master, &s);
    assert_eq!(
        fresh.open(&u, &c, &sealed).await.as_deref(),
        Ok(&b"after"[..])
    );
    // And a itself now seals and opens under the new key.
    let again = a.seal(&u, &c, b"again").await.expect("seal");
    assert_eq!(
        fresh.open(&u, &c, &again).await.as_deref(),
        Ok(&b"again"[..])
    );
}

/// Instance `a` remembers a user's key; `b` erases the user and binds
/// them again (a new key). A bind of another card on `a`, for a user who
/// now has a live card, seals under the key the store holds, not the one
/// `a` remembers (that one is gone: what it sealed would never open), and
/// `a` opens what `b` sealed under the new key.
#[tokio::test]
async fn a_known_owner_is_sealed_under_the_key_the_store_holds_now() {
    let (_, s) = store();
    let master = DataKey::generate();
    let (a, b) = (vault_on(&master, &s), vault_on(&master, &s));
    let u = user("u-4");
    let c = ctx("r", "pan");
    a.seal(&u, &c, b"before").await.expect("seal");
    assert!(b.erase_owner(&u).await.expect("erase"));
    let by_b = b.seal_for_new_owner(&u, &c, b"on b").await.expect("seal");
    let by_a = a.seal_with_stored_key(&u, &c, b"on a").await.expect("seal");
    let fresh = vault_on(&master, &s);
    assert_eq!(fresh.open(&u, &c, &by_a).await.as_deref(), Ok(&b"on a"[..]));
    // The other fields of that card: what `a` remembers now is the new key.
    let next = a.seal(&u, &c, b"next").await.expect("seal");
    assert_eq!(fresh.open(&u, &c, &next).await.as_deref(), Ok(&b"next"[..]));
    assert_eq!(a.open(&u, &c, &by_b).await.as_deref(), Ok(&b"on b"[..]));
    // A fourth instance that still remembers the erased key opens the new
    // card's data too (it asks the store when the generations differ).
    let d = vault_on(&master, &s);
    let u5 = user("u-5");
    d.seal(&u5, &c, b"old").await.expect("seal");
    assert!(b.erase_owner(&u5).await.expect("erase"));
    let new = b.seal_for_new_owner(&u5, &c, b"new").await.expect("seal");
    assert_eq!(d.open(&u5, &c, &new).await.as_deref(), Ok(&b"new"[..]));
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
        Err(KeyError::StoreUnavailable(_))
    ));
    assert!(matches!(
        v.seal(&user("u"), &ctx("r", "pan"), b"x").await,
        Err(KeyError::StoreUnavailable(_))
    ));
}

#[tokio::test]
async fn a_wrong_new_owner_guess_still_seals_under_the_owners_one_key() {
    let master = Arc::new(Counting::new(LocalMasterKey::generate()));
    let (_, s) = store();
    let u = user("returning");
    let first = EnvelopeVault::new(
        CountingRef(master.clone()),
        s.clone(),
        VaultConfig::default(),
    );
    let old = first
        .seal(&u, &ctx("card-1", "pan"), b"6222021234567890")
        .await
        .expect("seal");
    let stored = s.get("returning").await.expect("get").expect("a key");
    // Another instance (empty cache) is told the owner is new: it is not.
    let second = EnvelopeVault::new(
        CountingRef(master.clone()),
        s.clone(),
        VaultConfig::default(),
    );
    let new = second
        .seal_for_new_owner(&u, &ctx("card-2", "pan"), b"6222029876543210")
        .await
        .expect("seal");
    assert_eq!(
        s.get("returning").await.expect("get"),
        Some(stored),
        "the stored key is kept"
    );
    // Both open everywhere: one key.
    for v in [&first, &second] {
        assert_eq!(
            v.open(&u, &ctx("card-1", "pan"), &old).await.expect("open"),
            b"6222021234567890"
        );
        assert_eq!(
            v.open(&u, &ctx("card-2", "pan"), &new).await.expect("open"),
            b"6222029876543210"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_seals_for_a_new_owner_make_one_key() {
    let (_, s) = store();
    let master = Arc::new(Counting::new(LocalMasterKey::generate()));
    let u = user("newcomer");
    let sealed: Vec<(SealedBlob, usize)> = {
        let mut tasks = Vec::new();
        for i in 0..8usize {
            // A vault per task: no shared cache, as on separate instances.
            let v = EnvelopeVault::new(
                CountingRef(master.clone()),
                s.clone(),
                VaultConfig::default(),
            );
            let u = u.clone();
            tasks.push(tokio::spawn(async move {
                let c = ctx(&format!("card-{i}"), "pan");
                (v.seal_for_new_owner(&u, &c, &[i as u8]).await, i)
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            let (r, i) = t.await.expect("join");
            out.push((r.expect("seal"), i));
        }
        out
    };
    let fresh = EnvelopeVault::new(CountingRef(master), s.clone(), VaultConfig::default());
    for (blob, i) in &sealed {
        let c = ctx(&format!("card-{i}"), "pan");
        assert_eq!(fresh.open(&u, &c, blob).await.expect("open"), [*i as u8]);
    }
    let owners: Vec<String> = s
        .list(None, 10)
        .await
        .expect("list")
        .into_iter()
        .map(|k| k.owner)
        .filter(|o| o == "newcomer")
        .collect();
    assert_eq!(owners.len(), 1);
}
