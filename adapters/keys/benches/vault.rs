//! Seal, open and fingerprint with the local master key (data key cached,
//! as in steady state, and not), and sealing for a new user with the data-key
//! cache full (the bind path of a growing user base).
//!
//! `cargo bench -p cardbind-keys --bench vault`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cardbind_domain::{CardNumber, UserId};
use cardbind_keys::{CacheConfig, EnvelopeVault, LocalMasterKey, VaultConfig};
use cardbind_memory::MemoryStore;
use cardbind_ports::keys::{CardVault, SealContext};
use cardbind_ports::store::DataKeyStore;
use criterion::{criterion_group, criterion_main, Criterion};

fn vault(cache: CacheConfig) -> EnvelopeVault<LocalMasterKey> {
    let store: Arc<dyn DataKeyStore> = MemoryStore::shared();
    EnvelopeVault::new(
        LocalMasterKey::generate(),
        store,
        VaultConfig {
            cache,
            ..VaultConfig::default()
        },
    )
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let owner = UserId::parse("bench-user").expect("user");
    let ctx = SealContext::new("01J0000000000000000000000", "pan");
    let pan = CardNumber::parse("6222021234567890123").expect("pan");
    let plaintext = pan.expose().as_bytes().to_vec();

    for (name, cache) in [
        (
            "cached",
            CacheConfig {
                max_uses: u64::MAX,
                ..CacheConfig::default()
            },
        ),
        ("uncached", CacheConfig::disabled()),
    ] {
        let v = vault(cache);
        let sealed = rt.block_on(v.seal(&owner, &ctx, &plaintext)).expect("seal");
        rt.block_on(v.fingerprint(&pan)).expect("fp");

        c.bench_function(&format!("seal_pan_{name}"), |b| {
            b.to_async(&rt)
                .iter(|| async { v.seal(&owner, &ctx, &plaintext).await.expect("seal") })
        });
        c.bench_function(&format!("open_pan_{name}"), |b| {
            b.to_async(&rt)
                .iter(|| async { v.open(&owner, &ctx, &sealed).await.expect("open") })
        });
        c.bench_function(&format!("fingerprint_{name}"), |b| {
            b.to_async(&rt)
                .iter(|| async { v.fingerprint(&pan).await.expect("fp") })
        });
    }
}

/// Sealing the first field of a new user while the data-key cache holds its
/// maximum (10,000 owners): each seal makes, wraps and stores a key and
/// caches it, evicting another.
fn bench_new_users(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let ctx = SealContext::new("01J0000000000000000000000", "pan");
    let v = vault(CacheConfig::default());
    let next = AtomicU64::new(0);
    let new_user =
        || UserId::parse(&format!("user-{}", next.fetch_add(1, Ordering::Relaxed))).expect("user");
    rt.block_on(async {
        for _ in 0..CacheConfig::default().max_entries {
            v.seal(&new_user(), &ctx, b"x").await.expect("seal");
        }
    });
    c.bench_function("seal_new_user_cache_full", |b| {
        b.to_async(&rt).iter(|| async {
            v.seal(&new_user(), &ctx, b"6222021234567890")
                .await
                .expect("seal")
        })
    });
}

criterion_group!(benches, bench, bench_new_users);
criterion_main!(benches);
