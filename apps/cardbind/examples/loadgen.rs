//! Load generator: binds cards through the HTTP API and prints throughput
//! and latency.
//!
//! ```sh
//! # in-memory storage, local key (starts the service in this process):
//! cargo run --release -p cardbind --example loadgen -- --binds 2000 --concurrency 32
//! # MongoDB (e.g. FerretDB from scripts/test-services.sh) and/or KMS (moto):
//! cargo run --release -p cardbind --example loadgen -- --mongodb mongodb://127.0.0.1:27017/ \
//!     --kms-endpoint http://127.0.0.1:5000
//! # an already running service (a service token and unlimited rate rules needed):
//! cargo run --release -p cardbind --example loadgen -- --url http://127.0.0.1:8080 --token "$TOKEN"
//! ```
//!
//! Every bind uses its own user and its own card (so per-user and per-card
//! velocity rules do not throttle the run); the mock channel binds at once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cardbind::config::{Config, KeysKind, StorageKind};
use cardbind_domain::card::luhn_check_digit;
use cardbind_domain::Role;

struct Args {
    binds: u64,
    concurrency: usize,
    url: Option<String>,
    token: Option<String>,
    mongodb: Option<String>,
    kms_endpoint: Option<String>,
    no_cache: bool,
}

fn args() -> Args {
    let mut a = Args {
        binds: 1000,
        concurrency: 16,
        url: None,
        token: None,
        mongodb: None,
        kms_endpoint: None,
        no_cache: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().expect("a value after the flag");
        match k.as_str() {
            "--binds" => a.binds = v().parse().expect("--binds N"),
            "--concurrency" => a.concurrency = v().parse().expect("--concurrency N"),
            "--url" => a.url = Some(v()),
            "--token" => a.token = Some(v()),
            "--mongodb" => a.mongodb = Some(v()),
            "--kms-endpoint" => a.kms_endpoint = Some(v()),
            "--no-cache" => a.no_cache = true,
            "--bench" => {}
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn card(n: u64) -> String {
    let partial = format!("4{:014}", n);
    let c = luhn_check_digit(&partial).unwrap_or(0);
    format!("{partial}{c}")
}

async fn kms_key(endpoint: &str) -> String {
    use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
    let conf = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(
            "testing", "testing", None, None, "loadgen",
        ))
        .build();
    let client = aws_sdk_kms::Client::from_conf(conf);
    let out = client
        .create_key()
        .send()
        .await
        .expect("CreateKey on the KMS endpoint");
    out.key_metadata()
        .expect("key metadata")
        .key_id()
        .to_owned()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args();
    let mut running = None;
    let (base, token, what) = match &a.url {
        Some(url) => (
            url.clone(),
            a.token.clone().expect("--token with --url"),
            format!("service at {url}"),
        ),
        None => {
            let dir = tempfile::tempdir()?;
            let mut c = Config::default();
            c.server.address = "127.0.0.1:0".into();
            c.server.data_dir = dir.path().to_path_buf();
            c.server.purge_interval_seconds = 0;
            c.log.filter = "warn".into();
            c.channels.mock.mode = "instant".into();
            c.limits.binds_per_ip_per_minute = 0;
            c.limits.binds_per_card_per_hour = 0;
            if let Some(uri) = &a.mongodb {
                c.storage.kind = StorageKind::Mongodb;
                c.storage.uri = uri.clone();
                c.storage.database = format!("loadgen_{}", std::process::id());
            }
            if let Some(ep) = &a.kms_endpoint {
                c.keys.kind = KeysKind::AwsKms;
                c.keys.kms_endpoint = Some(ep.clone());
                c.keys.kms_key_id = kms_key(ep).await;
                c.keys.kms_access_key_id = Some("testing".into());
                c.keys.kms_secret_access_key = Some("testing".into());
            }
            if a.no_cache {
                c.keys.cache_max_entries = 0;
                c.keys.branch_key_cache_ttl_seconds = 0;
            }
            let secret = cardbind::compose::jwt_secret(&c)?;
            let token = cardbind::compose::dev_token(&c, &secret, "loadgen", Role::Service, 3600)?;
            let what = format!(
                "in-process service: storage {:?}, keys {:?}{}",
                c.storage.kind,
                c.keys.kind,
                if a.no_cache {
                    " (data-key and branch-key caches off)"
                } else {
                    ""
                }
            );
            let r = cardbind::cli::start(c).await?;
            let base = r.base_url.clone();
            running = Some((r, dir));
            (base, token, what)
        }
    };

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(a.concurrency)
        .build()?;
    let next = Arc::new(AtomicU64::new(0));
    let run = std::process::id() as u64 * 1_000_000;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.concurrency {
        let (client, next, base, token) =
            (client.clone(), next.clone(), base.clone(), token.clone());
        let total = a.binds;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut failures = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let body = serde_json::json!({
                    "card_number": card(run + i),
                    "expiry_month": 12, "expiry_year": 2031, "cvv": "123",
                    "holder_name": "Load Test", "id_number": "11010519491231002X", "phone": "13800138000",
                    "consent": {"text_version": "v1", "text_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}
                });
                let t = Instant::now();
                let res = client
                    .post(format!("{base}/v1/users/load-{run}-{i}/cards"))
                    .bearer_auth(&token)
                    .header("Idempotency-Key", format!("lg-{run}-{i}"))
                    .json(&body)
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status().as_u16() == 201 => lat.push(t.elapsed()),
                    Ok(r) => {
                        failures += 1;
                        if failures <= 3 {
                            eprintln!("bind {i}: {} {}", r.status(), r.text().await.unwrap_or_default());
                        }
                    }
                    Err(e) => {
                        failures += 1;
                        if failures <= 3 {
                            eprintln!("bind {i}: {e}");
                        }
                    }
                }
            }
            (lat, failures)
        }));
    }
    let mut lat = Vec::new();
    let mut failures = 0;
    for t in tasks {
        let (l, f) = t.await?;
        lat.extend(l);
        failures += f;
    }
    let elapsed = started.elapsed();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!("target: {what}");
    println!(
        "binds: {} ok, {} failed, concurrency {}, {:.2} s",
        lat.len(),
        failures,
        a.concurrency,
        elapsed.as_secs_f64()
    );
    println!(
        "throughput: {:.0} binds/s",
        lat.len() as f64 / elapsed.as_secs_f64()
    );
    println!(
        "latency: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms",
        ms(pct(0.5)),
        ms(pct(0.9)),
        ms(pct(0.99))
    );
    if let Some((r, _dir)) = running.as_ref() {
        let mut text = String::new();
        let _ =
            prometheus::TextEncoder::new().encode_utf8(&r.built.state.metrics.gather(), &mut text);
        let total: f64 = text
            .lines()
            .filter(|l| l.starts_with("cardbind_kms_calls_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if total > 0.0 {
            println!(
                "kms calls: {total} ({:.1} per 1000 binds)",
                total * 1000.0 / lat.len().max(1) as f64
            );
        }
    }
    if let Some((r, _dir)) = running {
        r.stop().await?;
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
