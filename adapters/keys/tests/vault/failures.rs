//! A master key that is down (with and without a cached branch key), and
//! nothing secret in `Debug` output or errors.

use super::*;

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
    // One after the other, the 20 would take 4 s (the call counts say
    // they shared the load; the bound leaves a loaded machine its time).
    assert!(
        started.elapsed() < Duration::from_secs(3),
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
async fn a_key_store_that_fails_is_a_store_outage_not_a_key_service_one() {
    let (mem, s) = store();
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
    a.seal(&user("alice"), &c, b"alice").await.expect("seal");
    // The key service is up; the store cannot be written (a read-only
    // database) nor read.
    mem.set_unavailable(true);
    let r = a.seal(&user("bob"), &c, b"x").await;
    assert!(matches!(r, Err(KeyError::StoreUnavailable(_))), "{r:?}");
    let r = vault().seal(&user("carol"), &c, b"x").await;
    assert!(matches!(r, Err(KeyError::StoreUnavailable(_))), "{r:?}");
    mem.set_unavailable(false);
    a.seal(&user("bob"), &c, b"x").await.expect("back");
}

/// A key store that holds no user's key and answers every read of the
/// service's own keys (the branch keys, `@…`) after `delay` with a failure
/// (a store timing out), counting those reads.
struct SlowFailingStore {
    delay: Duration,
    reads: std::sync::atomic::AtomicU64,
}

#[async_trait::async_trait]
impl DataKeyStore for SlowFailingStore {
    async fn get(&self, owner: &str) -> Result<Option<WrappedKey>, StoreError> {
        if !owner.starts_with('@') {
            // A user's own key: none yet (a new user).
            return Ok(None);
        }
        self.reads.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        Err(StoreError::Unavailable("timed out".into()))
    }
    async fn put_if_absent(&self, _: &WrappedKey) -> Result<WrappedKey, StoreError> {
        Err(StoreError::Unavailable("timed out".into()))
    }
    async fn replace(&self, _: &WrappedKey, _: u64) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("timed out".into()))
    }
    async fn delete(&self, _: &str) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable("timed out".into()))
    }
    async fn list(&self, _: Option<String>, _: u32) -> Result<Vec<WrappedKey>, StoreError> {
        Err(StoreError::Unavailable("timed out".into()))
    }
}

/// Concurrent callers of an instance whose key store times out share one
/// failing load of the branch key, as they do when the key service is
/// down, instead of each waiting for the store in turn; and each is told
/// it is the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callers_share_one_failing_key_store_load() {
    let slow = Arc::new(SlowFailingStore {
        delay: Duration::from_millis(200),
        reads: std::sync::atomic::AtomicU64::new(0),
    });
    let vault = Arc::new(EnvelopeVault::new(
        LocalMasterKey::generate(),
        slow.clone(),
        VaultConfig::default(),
    ));
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let v = vault.clone();
            tokio::spawn(async move {
                v.seal(
                    &user(&format!("slow-{i}")),
                    &SealContext::new("r", "pan"),
                    b"x",
                )
                .await
            })
        })
        .collect();
    for t in tasks {
        let r = t.await.expect("join");
        assert!(matches!(r, Err(KeyError::StoreUnavailable(_))), "{r:?}");
    }
    let reads = slow.reads.load(Ordering::SeqCst);
    assert!(reads <= 4, "{reads} reads");
    // One after the other, the 20 would take 4 s (the call counts say
    // they shared the load; the bound leaves a loaded machine its time).
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
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
