//! Master key rotation: rewrapping branch keys, serving during rotation,
//! wrapped keys moved or tampered, branch versions by age, retirement of
//! keys from before branch keys.

use super::*;

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
    let v_old = vault_on(&old_key, &s);
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
    let v_new = vault_on(&new_key, &s);
    v_new.self_check().await.expect("canary under new key");
    assert_eq!(v_new.fingerprint(&pan).await.expect("fp"), fp);
    for (u, c, blob) in &sealed {
        v_new.open(u, c, blob).await.expect("data still opens");
    }
    // The old key alone no longer works; old as *previous* key is fine.
    let v_only_old = vault_on(&old_key, &s);
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
    let v_old = vault_on(&old_key, &s);
    let u = user("early");
    let c = ctx("r", "pan");
    let early = v_old.seal(&u, &c, b"early").await.expect("seal");
    // The service restarts with new as master, old as previous.
    let v =
        vault_on(&new_key, &s).with_previous_keys(vec![LocalMasterKey::from_key(old_key.clone())]);
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
    let v = vault_on(&master, &s);
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
    let fresh = || vault_on(&master, &s);
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
            // The record's own creation instant: replace only replaces the
            // same record (the bytes are what is moved).
            created_at: b2.created_at,
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
                // The early seals must all come before rotate_after on a
                // loaded machine too (the vault reads the real clock).
                cache_ttl: Duration::from_millis(500),
                rotate_after: Some(Duration::from_millis(1500)),
                clock_skew: Duration::ZERO,
                max_seal_time: Duration::ZERO,
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
    tokio::time::sleep(Duration::from_millis(1700)).await;
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
                max_seal_time: Duration::ZERO,
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
    let v = vault_on(&master, &s);
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
    let fresh = vault_on(&master, &s);
    assert_eq!(fresh.open(&u, &c, &blob).await.expect("open"), b"kept");
}

/// `retire-branches --new-version` from a host whose master key setting is
/// older than the last rotation: the active version does not open with
/// it, so no version is made under a key the other instances lack.
#[tokio::test]
async fn a_new_branch_version_needs_a_master_key_that_opens_the_active_one() {
    let (_, s) = store();
    let current = Arc::new(Counting::new(LocalMasterKey::generate()));
    let up_to_date = EnvelopeVault::new(
        CountingRef(current.clone()),
        s.clone(),
        VaultConfig::default(),
    );
    let c = ctx("card", "pan");
    let u = user("before");
    let blob = up_to_date.seal(&u, &c, b"sealed").await.expect("seal");
    assert_eq!(
        up_to_date.active_branch().await.expect("active"),
        branch_owner(1)
    );

    let stale = EnvelopeVault::new(
        LocalMasterKey::generate(),
        s.clone(),
        VaultConfig::default(),
    );
    let r = stale.retire_branches(true, |_| {}).await;
    match &r {
        Err(KeyError::Refused(why)) => assert!(why.contains("no new branch key version"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(
        s.get(&branch_owner(2)).await.expect("get").is_none(),
        "no version 2"
    );
    // The up-to-date instances go on as before.
    let fresh = EnvelopeVault::new(
        CountingRef(current.clone()),
        s.clone(),
        VaultConfig::default(),
    );
    assert_eq!(
        fresh.active_branch().await.expect("active"),
        branch_owner(1)
    );
    fresh.open(&u, &c, &blob).await.expect("open");
    let v = user("after");
    fresh.seal(&v, &c, b"new").await.expect("a new user binds");
    // With the right key it makes version 2.
    let r = fresh.retire_branches(true, |_| {}).await.expect("retire");
    assert_eq!(r.active, branch_owner(2));
}

/// A seal for a new user that read the active version just before a new
/// one was made, and waits on the key service while a retirement runs,
/// keeps the old version from being deleted: the grace counts the longest
/// a seal may take. Before, with a branch key TTL of 0 the grace was the
/// clock allowance alone, the run deleted the old version while the seal
/// was still to store its key under it, reported nothing failed, and the
/// user's data never opened again.
#[tokio::test]
async fn a_slow_seal_under_the_old_version_holds_off_its_deletion() {
    let (_, s) = store();
    let master = Arc::new(Counting::new(LocalMasterKey::generate()));
    let config = || VaultConfig {
        branch: BranchConfig {
            cache_ttl: Duration::ZERO,
            rotate_after: None,
            clock_skew: Duration::from_millis(200),
            max_seal_time: Duration::from_secs(5),
        },
        ..VaultConfig::default()
    };
    let a = Arc::new(EnvelopeVault::new(
        CountingRef(master.clone()),
        s.clone(),
        config(),
    ));
    let b = EnvelopeVault::new(CountingRef(master.clone()), s.clone(), config());
    let c = ctx("card", "pan");
    b.seal(&user("first"), &c, b"x").await.expect("seal");
    let old = b.active_branch().await.expect("active");
    // A's unwrap of the active version takes 1.5 s.
    master.delay_ms.store(1500, Ordering::SeqCst);
    let slow = {
        let a = a.clone();
        let c = c.clone();
        tokio::spawn(async move { a.seal(&user("slow"), &c, b"late").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    master.delay_ms.store(0, Ordering::SeqCst);
    b.new_branch_version().await.expect("new version");
    // Past the clock allowance, within the longest seal.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let report = b.retire_branches(false, |_| {}).await.expect("retire");
    assert!(report.retired.is_empty(), "{report:?}");
    assert!(report.kept.contains(&old), "{report:?}");
    let sealed = slow.await.expect("join").expect("seal");
    assert_eq!(
        a.open(&user("slow"), &c, &sealed).await.expect("opens"),
        b"late"
    );
}
