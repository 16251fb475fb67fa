//! The port calls a bind makes, on stores holding 1k, 100k and 1M users'
//! wallets (each seeded with what one bind leaves: two links, card data, a
//! data key, a channel reference, an idempotency record, rate windows).
//!
//! `cargo bench -p cardbind-sqlite --bench ports`
//!
//! Seeded files are kept in `target/cardbind-bench/` (or
//! `CARDBIND_BENCH_DIR`) and reused: delete them to seed again. A million
//! users take about 4.5 GB. `CARDBIND_BENCH_SIZES=1000,100000` picks sizes.
//! After each size it prints the file's size and the process's memory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cardbind_domain::{
    BindingId, CardBrand, CardCap, CardSummary, CardToBind, ConsentGiven, Expiry, Fingerprint,
    SealedBlob, SealedCard, StartOutcome, Timestamp, UserId, VerificationPolicy, Wallet,
};
use cardbind_ports::audit::AuditAction;
use cardbind_ports::store::{CardData, Claim, RateWindow, RefTarget, StoredResponse, WrappedKey};
use cardbind_sqlite::{SqliteOptions, SqlitePorts, SqliteStore};
use common::{channel, event, t};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

/// A well-mixed 64-bit value of `n` (splitmix64): ids spread over the
/// whole key space, as random ids are.
fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn user(n: u64) -> UserId {
    UserId::parse(&format!("u{:016x}", mix(n))).unwrap()
}

/// Time-ordered binding ids, as the service makes them (UUID v7).
fn binding(n: u64, now: Timestamp) -> BindingId {
    BindingId::parse(&format!(
        "{:012x}-7000-8000-{:012x}",
        now.unix_millis(),
        n & 0xffff_ffff_ffff
    ))
    .unwrap()
}

fn sealed(n: u64) -> SealedCard {
    let blob =
        |len: usize| SealedBlob::new((0..len).map(|i| (mix(n + i as u64) & 0xff) as u8).collect());
    SealedCard {
        pan: blob(60),
        holder_name: blob(50),
        id_number: blob(60),
        phone: blob(50),
    }
}

/// The storage calls of one bind of a new card by `n`'s user: claim the
/// idempotency key, take the rate slots, load the wallet, store the
/// reservation, the card data (and a data key), then the channel's answer,
/// its reference, and the response.
async fn bind(p: &SqlitePorts, n: u64, now: Timestamp) {
    let u = user(n);
    let key = format!("{:016x}-{:016x}", mix(n ^ 0x5555), mix(n ^ 0xaaaa));
    let Claim::Acquired(lease) = p
        .idempotency
        .claim("backend", &key, "request-hash", now, now.plus_seconds(30))
        .await
        .unwrap()
    else {
        panic!("key {key} in use")
    };
    let minute = now.unix_millis() / 60_000;
    let windows = [
        RateWindow {
            key: format!("bind:user:{}:m{minute}", u.as_str()),
            limit: 5,
            expires_at: Timestamp::from_unix_millis((minute + 1) * 60_000),
        },
        RateWindow {
            key: format!("bind:user:{}:d{}", u.as_str(), minute / 1440),
            limit: 20,
            expires_at: Timestamp::from_unix_millis((minute / 1440 + 1) * 86_400_000),
        },
        RateWindow {
            key: format!("bind:ip:10.{}.{}.{}:m{minute}", n % 7, n % 251, n % 13),
            limit: 1_000_000,
            expires_at: Timestamp::from_unix_millis((minute + 1) * 60_000),
        },
    ];
    p.rates.take(&windows, now).await.unwrap();
    let (mut w, head) = match p.wallets.load(&u).await.unwrap() {
        Some(s) => (s.wallet, Some(s.head)),
        None => (Wallet::new(u.clone()), None),
    };
    let id = binding(n, now);
    let consent = ConsentGiven {
        text_version: "2026-01".into(),
        text_hash: "ab".repeat(32),
        ip: Some("10.0.0.1".into()),
        user_agent: Some("app/1.0".into()),
    }
    .accept(channel("alipay"), now)
    .unwrap();
    let id = w
        .open(
            CardToBind {
                new_id: id,
                fingerprint: Fingerprint::new(1, format!("{:016x}{:016x}", mix(n), mix(!n))),
                card: CardSummary {
                    brand: CardBrand::UnionPay,
                    bin: "622588".into(),
                    last4: "4444".into(),
                    expiry: Expiry::restore(6, 2031).unwrap(),
                    facts: None,
                },
                consent,
                generation: 1,
                bind_key: None,
            },
            CardCap::default(),
            now,
            &VerificationPolicy::default(),
        )
        .unwrap()
        .id()
        .clone();
    let ev = |a| vec![event(Some(&u), Some(id.as_str()), a, now)];
    let h = p
        .wallets
        .commit(&w, head, ev(AuditAction::BindingCreate), now)
        .await
        .unwrap();
    p.card_data
        .put(&CardData {
            binding: id.clone(),
            user: u.clone(),
            generation: 1,
            sealed: sealed(n),
        })
        .await
        .unwrap();
    p.data_keys
        .put_if_absent(&WrappedKey {
            owner: u.as_str().to_owned(),
            master_key_id: "local:1".into(),
            wrapped: sealed(n).pan.into_bytes(),
            version: 1,
            created_at: now,
        })
        .await
        .unwrap();
    let agreement = format!("2088{:016x}", mix(n ^ 0x1234));
    let _: Result<(), cardbind_domain::StateRefusal> = w.change(&id, |b| {
        b.apply_start(
            StartOutcome::Bound {
                channel_ref: agreement.clone(),
            },
            now,
        )
    });
    p.wallets
        .commit(&w, Some(h), ev(AuditAction::BindingChannelStart), now)
        .await
        .unwrap();
    p.channel_refs
        .put(
            &channel("alipay"),
            &agreement,
            &RefTarget {
                user: u.clone(),
                binding: id,
            },
            1,
        )
        .await
        .unwrap();
    let done = p
        .idempotency
        .complete(
            "backend",
            &key,
            lease,
            &StoredResponse {
                status: 201,
                content_type: "application/json".into(),
                body: vec![b'x'; 300],
            },
        )
        .await
        .unwrap();
    assert!(done);
}

/// Runs binds `from..to` with `concurrency` at a time; binds per second.
async fn binds(p: &SqlitePorts, from: u64, to: u64, concurrency: u64, now: Timestamp) -> f64 {
    let next = Arc::new(AtomicU64::new(from));
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (p, next) = (p.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= to {
                        break;
                    }
                    bind(&p, n, now).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    (to - from) as f64 / start.elapsed().as_secs_f64()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Users below this number are the seeded ones; the bench binds above it.
const FRESH: u64 = 1 << 40;

fn seeded(size: u64, rt: &tokio::runtime::Runtime) -> PathBuf {
    let dir = std::env::var_os("CARDBIND_BENCH_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/cardbind-bench"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!(
        "seed-{size}-v{}.sqlite3",
        cardbind_sqlite::SCHEMA_VERSION
    ));
    let done = path.with_extension("done");
    if done.exists() {
        return path;
    }
    let _ = std::fs::remove_file(&path);
    let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
    let p = store.ports();
    let start = Instant::now();
    rt.block_on(async {
        let step = 100_000;
        let mut from = 0;
        while from < size {
            let to = (from + step).min(size);
            // Seeded over the past year, a minute per 2,000 users.
            let now = t(-31_536_000 + (from / 2000) as i64 * 60);
            binds(&p, from, to, 64, now).await;
            from = to;
            eprintln!("seeded {to} of {size} in {:.0?}", start.elapsed());
        }
    });
    drop(p);
    drop(store);
    std::fs::write(&done, b"").unwrap();
    path
}

/// CPU time the process has used, ns: the sum over its threads (the
/// caller's, the writer's, the checkpointer's). On a shared, busy machine
/// this is steadier than wall time, and it is what bounds throughput.
fn cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// CPU µs per call of each kind, and binds/s, measured outside criterion.
fn cpu_table(
    rt: &tokio::runtime::Runtime,
    store: &SqliteStore,
    size: u64,
    fresh: &AtomicU64,
) -> String {
    let p = &store.ports();
    let now = t(0);
    let n = 5_000u64;
    let pick = 0x77_0000u64;
    rt.block_on(async {
        let c0 = cpu_ns();
        for i in 0..n {
            p.wallets
                .load(&user(mix(pick + i) % size))
                .await
                .unwrap()
                .unwrap();
        }
        let load = (cpu_ns() - c0) as f64 / n as f64 / 1e3;
        let c0 = cpu_ns();
        for i in 0..n {
            let u = user(mix(pick + n + i) % size);
            let s = p.wallets.load(&u).await.unwrap().unwrap();
            let ev = vec![event(Some(&u), None, AuditAction::BindingFreeze, now)];
            p.wallets
                .commit(&s.wallet, Some(s.head), ev, now)
                .await
                .unwrap();
        }
        let commit = (cpu_ns() - c0) as f64 / n as f64 / 1e3 - load;
        let from = fresh.fetch_add(n, Ordering::Relaxed);
        let c0 = cpu_ns();
        for k in from..from + n {
            let key = format!("{:016x}-{:016x}", mix(k), mix(!k));
            p.idempotency
                .claim("bench", &key, "h", now, now.plus_seconds(30))
                .await
                .unwrap();
        }
        let claim = (cpu_ns() - c0) as f64 / n as f64 / 1e3;
        // A write that changes nothing: the cost of the hand-off to the
        // writer and of a transaction, alone and 64 at a time.
        let nothing = BindingId::parse("none").unwrap();
        let c0 = cpu_ns();
        for _ in 0..n {
            p.review.remove(&nothing, u64::MAX).await.unwrap();
        }
        let empty_alone = (cpu_ns() - c0) as f64 / n as f64 / 1e3;
        let c0 = cpu_ns();
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let p = p.clone();
                tokio::spawn(async move {
                    let nothing = BindingId::parse("none").unwrap();
                    for _ in 0..n / 64 {
                        p.review.remove(&nothing, u64::MAX).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let empty_grouped = (cpu_ns() - c0) as f64 / (n / 64 * 64) as f64 / 1e3;
        eprintln!("empty write µs CPU: {empty_alone:.1} alone, {empty_grouped:.1} 64 at a time");
        let from = fresh.fetch_add(n, Ordering::Relaxed);
        let c0 = cpu_ns();
        let w0 = store.writer_stats();
        let per_s = binds(p, from, from + n, 64, now).await;
        let bind = (cpu_ns() - c0) as f64 / n as f64 / 1e3;
        let w1 = store.writer_stats();
        let groups = (w1.groups - w0.groups).max(1);
        let writes = w1.writes - w0.writes;
        let writer = (w1.busy - w0.busy).as_secs_f64() * 1e6 / n as f64;
        format!(
            "| {size} | {load:.1} | {commit:.1} | {claim:.1} | {bind:.0} | {writer:.0} | {:.1} | {per_s:.0} |",
            writes as f64 / groups as f64
        )
    })
}

fn memory() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .filter(|l| l.starts_with("VmRSS") || l.starts_with("VmHWM"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}

fn bench(c: &mut Criterion) {
    let sizes: Vec<u64> = std::env::var("CARDBIND_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').map(|n| n.trim().parse().unwrap()).collect())
        .unwrap_or_else(|| {
            // `cargo bench` passes `--bench`; `cargo test` runs each
            // benchmark once to see that it works: a small store will do.
            if std::env::args().any(|a| a == "--bench") {
                vec![1_000, 100_000, 1_000_000]
            } else {
                vec![1_000]
            }
        });
    let rt = runtime();
    // New users for this run (the seeded files are reused across runs).
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() % 1_000_000);
    let fresh = AtomicU64::new((run + 1) * FRESH);
    let now = t(0);
    let mut table = vec![
        "| wallets | load µs CPU | commit µs CPU | claim µs CPU | bind µs CPU | of which writer µs | writes per group | binds/s (64 at a time) | round |".to_owned(),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|".to_owned(),
    ];
    for &size in &sizes {
        let path = seeded(size, &rt);
        let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        let p = store.ports();
        let mut g = c.benchmark_group(format!("sqlite/{size}"));
        g.sample_size(20).measurement_time(Duration::from_secs(3));
        let pick = AtomicU64::new(1);
        g.bench_function(BenchmarkId::from_parameter("load"), |b| {
            b.to_async(&rt).iter(|| {
                let n = mix(pick.fetch_add(1, Ordering::Relaxed)) % size;
                let p = &p;
                async move { p.wallets.load(&user(n)).await.unwrap().unwrap() }
            })
        });
        g.bench_function(BenchmarkId::from_parameter("commit"), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let p = p.clone();
                let pick = pick.fetch_add(iters, Ordering::Relaxed);
                async move {
                    let mut spent = Duration::ZERO;
                    for i in 0..iters {
                        let u = user(mix(pick + i) % size);
                        let s = p.wallets.load(&u).await.unwrap().unwrap();
                        let ev = vec![event(Some(&u), None, AuditAction::BindingFreeze, now)];
                        let start = Instant::now();
                        p.wallets
                            .commit(&s.wallet, Some(s.head), ev, now)
                            .await
                            .unwrap();
                        spent += start.elapsed();
                    }
                    spent
                }
            })
        });
        g.bench_function(BenchmarkId::from_parameter("claim"), |b| {
            b.to_async(&rt).iter(|| {
                let n = fresh.fetch_add(1, Ordering::Relaxed);
                let p = &p;
                async move {
                    let key = format!("{:016x}-{:016x}", mix(n), mix(!n));
                    p.idempotency
                        .claim("bench", &key, "h", now, now.plus_seconds(30))
                        .await
                        .unwrap()
                }
            })
        });
        g.bench_function(BenchmarkId::from_parameter("bind, one at a time"), |b| {
            b.to_async(&rt).iter(|| {
                let n = fresh.fetch_add(1, Ordering::Relaxed);
                let p = &p;
                async move { bind(p, n, now).await }
            })
        });
        g.bench_function(BenchmarkId::from_parameter("bind, 64 at a time"), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let p = p.clone();
                let from = fresh.fetch_add(iters, Ordering::Relaxed);
                async move {
                    let start = Instant::now();
                    binds(&p, from, from + iters, 64, now).await;
                    start.elapsed()
                }
            })
        });
        g.finish();
        drop(p);
        drop(store);
    }
    // CPU per call, in rounds over the sizes (on a shared machine the load
    // of others changes from minute to minute: compare within a round).
    let rounds: usize = std::env::var("CARDBIND_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    for round in 1..=rounds {
        for &size in &sizes {
            let path = seeded(size, &rt);
            let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
            let line = cpu_table(&rt, &store, size, &fresh);
            drop(store);
            table.push(format!("{line} {round} |"));
            let size_mb = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
            eprintln!("sqlite/{size}: file {size_mb:.0} MB; memory {}", memory());
        }
        println!("{}", table.join("\n"));
    }
    // What a hand-off to a blocking thread would add to every read.
    c.bench_function("tokio spawn_blocking round trip", |b| {
        b.to_async(&rt)
            .iter(|| async { tokio::task::spawn_blocking(|| 1u8).await.unwrap() })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
