//! The vault over AWS KMS, against a KMS emulator (moto).
//!
//! `CARDBIND_TEST_KMS_ENDPOINT=http://127.0.0.1:PORT` names the emulator.
//! Unset, these tests say that they skip, except under `CI=true`, where
//! they fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use std::time::{Duration, Instant};

use cardbind_domain::CardNumber;
use cardbind_keys::{
    branch_owner, kms_client, rotate, BranchConfig, EnvelopeVault, KmsConfig, KmsMasterKey,
    KmsMetrics, MasterKey, StaticCredentials, VaultConfig, OWNER_CONTEXT_KEY,
};
use cardbind_ports::error::KeyError;
use cardbind_ports::keys::{CardVault, SealContext};
use common::{store, user};

fn endpoint(test: &str) -> Option<String> {
    match std::env::var("CARDBIND_TEST_KMS_ENDPOINT") {
        Ok(e) if !e.is_empty() => Some(e),
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{test}: CARDBIND_TEST_KMS_ENDPOINT is not set, and CI=true: KMS tests must run in CI");
            }
            eprintln!("SKIPPED {test}: set CARDBIND_TEST_KMS_ENDPOINT=http://127.0.0.1:PORT (a moto server) to run it");
            None
        }
    }
}

fn config(endpoint: &str, key_id: &str) -> KmsConfig {
    KmsConfig {
        endpoint: Some(endpoint.to_owned()),
        credentials: Some(StaticCredentials {
            access_key_id: "testing".into(),
            secret_access_key: "testing".into(),
            session_token: None,
        }),
        ..KmsConfig::new(key_id, "us-east-1")
    }
}

/// Creates a fresh symmetric KMS key and returns its id.
async fn create_key(endpoint: &str) -> String {
    let client = kms_client(&config(endpoint, "unused")).await;
    let out = client
        .create_key()
        .description("cardbind-keys test")
        .send()
        .await
        .expect("CreateKey");
    out.key_metadata().expect("metadata").key_id().to_owned()
}

async fn master(endpoint: &str, metrics: &KmsMetrics) -> KmsMasterKey {
    let id = create_key(endpoint).await;
    KmsMasterKey::connect(&config(endpoint, &id), metrics.clone())
        .await
        .expect("connect")
}

#[tokio::test]
async fn kms_round_trip_fingerprint_and_self_check() {
    let Some(ep) = endpoint("kms_round_trip_fingerprint_and_self_check") else {
        return;
    };
    let metrics = KmsMetrics::new().unwrap();
    let m = master(&ep, &metrics).await;
    assert!(
        m.key_id().starts_with("arn:aws:kms:"),
        "resolved to the ARN: {}",
        m.key_id()
    );
    let (_, s) = store();
    let v = EnvelopeVault::new(m, s.clone(), VaultConfig::default());
    v.self_check().await.expect("first start");
    v.self_check().await.expect("second start");
    let u = user("kms-user");
    let c = SealContext::new("card-1", "pan");
    let sealed = v.seal(&u, &c, b"6222021234567890").await.expect("seal");
    assert_eq!(
        v.open(&u, &c, &sealed).await.expect("open"),
        b"6222021234567890"
    );
    assert!(matches!(
        v.open(&u, &SealContext::new("card-2", "pan"), &sealed)
            .await,
        Err(KeyError::Refused(_))
    ));
    let pan = CardNumber::parse("4111111111111111").unwrap();
    assert_eq!(
        v.fingerprint(&pan).await.unwrap(),
        v.fingerprint(&pan).await.unwrap()
    );
    assert!(v.erase_owner(&u).await.unwrap());
    assert_eq!(v.open(&u, &c, &sealed).await, Err(KeyError::Erased));

    // Users' keys are wrapped under the branch key, and only the branch
    // key is a KMS ciphertext (bound to its name).
    let wk = s.get("@canary").await.unwrap().unwrap();
    assert_eq!(wk.master_key_id, branch_owner(1));
    let branch = s.get(&branch_owner(1)).await.unwrap().unwrap();
    assert_eq!(branch.master_key_id, v.master().key_id());
    v.master()
        .decrypt_data_key(&branch_owner(1), &branch.wrapped)
        .await
        .expect("the branch key opens pinned to the key, with its name as context");
    assert!(v
        .master()
        .decrypt_data_key("@branch:00000002", &branch.wrapped)
        .await
        .is_err());
    // One GenerateDataKey for the branch key; the self-checks' Decrypts
    // read it back from the store.
    assert_eq!(metrics.calls("generate_data_key"), 1);
    assert!(metrics.calls("describe_key") == 1);
    let registry = metrics.metrics_registry().unwrap();
    let names: Vec<_> = registry
        .gather()
        .iter()
        .map(|f| f.name().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "cardbind_kms_call_duration_seconds",
            "cardbind_kms_calls_total"
        ]
    );
}

/// The metrics in Prometheus' text format.
fn exposition(metrics: &KmsMetrics) -> String {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&metrics.metrics_registry().unwrap().gather(), &mut buf)
        .unwrap();
    String::from_utf8(buf).unwrap()
}

#[tokio::test]
async fn kms_decrypt_is_pinned_to_the_key_and_the_owner() {
    let Some(ep) = endpoint("kms_decrypt_is_pinned_to_the_key_and_the_owner") else {
        return;
    };
    let metrics = KmsMetrics::new().unwrap();
    let a = master(&ep, &metrics).await;
    let b = master(&ep, &metrics).await;
    let (key, wrapped) = a.generate_data_key("alice").await.expect("generate");
    let again = a
        .decrypt_data_key("alice", &wrapped)
        .await
        .expect("decrypt");
    assert_eq!(key.expose(), again.expose());
    let r = b.decrypt_data_key("alice", &wrapped).await;
    assert!(
        matches!(r, Err(KeyError::Refused(_))),
        "pinned to another key: {r:?}"
    );
    let r = a.decrypt_data_key("bob", &wrapped).await;
    assert!(
        matches!(r, Err(KeyError::Refused(_))),
        "another owner's context: {r:?}"
    );
    let mut bad = wrapped.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let r = a.decrypt_data_key("alice", &bad).await;
    assert!(matches!(r, Err(KeyError::Refused(_))), "tampered: {r:?}");
    // Each call counted once by how it ended, and timed.
    assert_eq!(
        (
            metrics.ended("decrypt", "ok"),
            metrics.ended("decrypt", "refused"),
            metrics.ended("decrypt", "unavailable")
        ),
        (1, 3, 0)
    );
    assert_eq!(metrics.ended("generate_data_key", "ok"), 1);
    assert_eq!(metrics.ended("describe_key", "ok"), 2);
    let text = exposition(&metrics);
    assert!(
        text.contains("cardbind_kms_call_duration_seconds_count{op=\"decrypt\"} 4"),
        "{text}"
    );

    // A vault whose store names a key it is not configured with refuses
    // without asking KMS to decrypt with whatever key the blob names.
    let (_, s) = store();
    let va = EnvelopeVault::new(a, s.clone(), VaultConfig::default());
    va.self_check().await.unwrap();
    let before = metrics.calls("decrypt");
    let vb = EnvelopeVault::new(b, s.clone(), VaultConfig::default());
    let err = vb.self_check().await.expect_err("wrong key");
    assert!(
        matches!(err, KeyError::Refused(_)) && err.to_string().contains("wrong master key"),
        "{err}"
    );
    assert_eq!(metrics.calls("decrypt"), before);
}

#[tokio::test]
async fn kms_rotation_end_to_end() {
    let Some(ep) = endpoint("kms_rotation_end_to_end") else {
        return;
    };
    let metrics = KmsMetrics::new().unwrap();
    let old = master(&ep, &metrics).await;
    let new = master(&ep, &metrics).await;
    let (old_id, new_id) = (old.key_id().to_owned(), new.key_id().to_owned());
    let (_, s) = store();

    let v_old = EnvelopeVault::new(old, s.clone(), VaultConfig::default());
    v_old.self_check().await.unwrap();
    let pan = CardNumber::parse("4111111111111111").unwrap();
    let fp = v_old.fingerprint(&pan).await.unwrap();
    let mut sealed = Vec::new();
    for i in 0..25 {
        if i == 12 {
            v_old.new_branch_version().await.unwrap();
        }
        let u = user(&format!("user-{i:02}"));
        for field in ["pan", "phone"] {
            let c = SealContext::new(format!("card-{i}"), field);
            let blob = v_old
                .seal(&u, &c, format!("{field}-{i}").as_bytes())
                .await
                .unwrap();
            sealed.push((u.clone(), c, blob, format!("{field}-{i}")));
        }
    }
    // 25 users, @fingerprint and @canary, over two branch versions: the
    // master key wraps the two branch keys only.
    let keys = 2;
    let old = KmsMasterKey::connect(&config(&ep, &old_id), metrics.clone())
        .await
        .unwrap();
    let new_for_rotation = KmsMasterKey::connect(&config(&ep, &new_id), metrics.clone())
        .await
        .unwrap();

    let before = metrics.calls("re_encrypt");
    let mut progress = Vec::new();
    let report = rotate(s.as_ref(), &old, &new_for_rotation, |r| {
        progress.push(r.rewrapped)
    })
    .await
    .expect("rotate");
    assert_eq!(report.rewrapped, keys);
    assert_eq!(report.already_current, 0);
    assert!(report.failed.is_empty());
    assert_eq!(progress.len() as u64, keys);
    assert_eq!(metrics.calls("re_encrypt") - before, keys);

    // Every KMS-wrapped key opens with Decrypt pinned to the NEW key id
    // (and not the old one); every other key names a branch version.
    let client = new_for_rotation.client();
    let mut kms_wrapped = Vec::new();
    for wk in s.list(None, 1000).await.unwrap() {
        if wk.master_key_id.starts_with('@') {
            assert!(
                wk.owner.starts_with('@') || wk.master_key_id.starts_with("@branch:"),
                "{wk:?}"
            );
            continue;
        }
        kms_wrapped.push(wk.owner.clone());
        assert_eq!(wk.master_key_id, new_id);
        client
            .decrypt()
            .key_id(&new_id)
            .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(wk.wrapped.clone()))
            .encryption_context(OWNER_CONTEXT_KEY, &wk.owner)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{} does not open pinned to the new key: {e:?}", wk.owner));
        assert!(old.decrypt_data_key(&wk.owner, &wk.wrapped).await.is_err());
    }
    assert_eq!(kms_wrapped, [branch_owner(1), branch_owner(2)]);

    // Data sealed before opens with the new key (ciphertexts untouched).
    let v_new = EnvelopeVault::new(
        KmsMasterKey::connect(&config(&ep, &new_id), metrics.clone())
            .await
            .unwrap(),
        s.clone(),
        VaultConfig::default(),
    );
    v_new.self_check().await.expect("canary under the new key");
    for (u, c, blob, text) in &sealed {
        assert_eq!(v_new.open(u, c, blob).await.unwrap(), text.as_bytes());
    }
    assert_eq!(v_new.fingerprint(&pan).await.unwrap(), fp);

    // Resumable: a second run has nothing left to do.
    let again = rotate(s.as_ref(), &old, &new_for_rotation, |_| {})
        .await
        .unwrap();
    assert_eq!((again.rewrapped, again.already_current), (0, keys));
}

#[tokio::test]
async fn kms_unreachable_is_unavailable_quickly() {
    // Needs no emulator: a port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let ep = format!("http://127.0.0.1:{port}");
    let metrics = KmsMetrics::new().unwrap();
    let cfg = KmsConfig {
        timeout: Duration::from_secs(2),
        ..config(
            &ep,
            "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000",
        )
    };
    let started = Instant::now();
    let r = KmsMasterKey::connect(&cfg, metrics.clone()).await;
    assert!(matches!(r, Err(KeyError::Unavailable(_))), "{r:?}");

    let v = EnvelopeVault::new(
        KmsMasterKey::new(&cfg, metrics.clone()).await,
        store().1,
        VaultConfig::default(),
    );
    let r = v
        .seal(&user("u"), &SealContext::new("r", "pan"), b"x")
        .await;
    assert!(matches!(r, Err(KeyError::Unavailable(_))), "{r:?}");
    let err = v.self_check().await.expect_err("unreachable");
    assert!(
        matches!(err, KeyError::Unavailable(_)) && err.to_string().contains("cannot be reached"),
        "{err}"
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(6),
        "three failing calls took {elapsed:?}"
    );
    assert_eq!(metrics.total(), 3);
    let unavailable: u64 = ["generate_data_key", "decrypt", "re_encrypt", "describe_key"]
        .iter()
        .map(|op| metrics.ended(op, "unavailable"))
        .sum();
    assert_eq!(unavailable, 3, "each failed call counted as unavailable");
    assert_eq!(metrics.ended("describe_key", "unavailable"), 1);
    eprintln!("closed port: 3 calls failed as Unavailable in {elapsed:?}");
}

#[tokio::test]
async fn kms_timeout_bounds_a_call_to_a_silent_server() {
    // A server that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = listener.accept().await {
            conns.push(c);
        }
    });
    let cfg = KmsConfig {
        timeout: Duration::from_millis(500),
        ..config(&format!("http://127.0.0.1:{port}"), "key")
    };
    let metrics = KmsMetrics::new().unwrap();
    let m = KmsMasterKey::new(&cfg, metrics.clone()).await;
    let started = Instant::now();
    let r = m.generate_data_key("u").await;
    assert!(matches!(r, Err(KeyError::Unavailable(_))), "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(metrics.ended("generate_data_key", "unavailable"), 1);
    // A call its caller gives up on first (a readiness probe's deadline)
    // is counted too, as unavailable.
    let gave_up =
        tokio::time::timeout(Duration::from_millis(100), m.decrypt_data_key("u", b"x")).await;
    assert!(gave_up.is_err(), "the caller's deadline came first");
    assert_eq!(metrics.ended("decrypt", "unavailable"), 1);
    assert_eq!(metrics.total(), 2);
    holder.abort();
}

/// What 1,000 binds of `users` distinct users cost in KMS calls
/// (GenerateDataKey, Decrypt), each bind a fingerprint and four sealed
/// fields as the service does.
async fn bind_calls(ep: &str, branch: BranchConfig, binds: usize, users: usize) -> (u64, u64) {
    let metrics = KmsMetrics::new().unwrap();
    let m = master(ep, &metrics).await;
    let v = EnvelopeVault::new(
        m,
        store().1,
        VaultConfig {
            branch,
            ..VaultConfig::default()
        },
    );
    let pan = CardNumber::parse("4111111111111111").unwrap();
    for i in 0..binds {
        let u = user(&format!("user-{:04}", i % users));
        v.fingerprint(&pan).await.unwrap();
        for field in ["pan", "holder_name", "id_number", "phone"] {
            v.seal(&u, &SealContext::new(format!("card-{i}"), field), b"value")
                .await
                .unwrap();
        }
    }
    assert_eq!(metrics.calls("re_encrypt"), 0);
    (metrics.calls("generate_data_key"), metrics.calls("decrypt"))
}

#[tokio::test]
async fn kms_calls_for_a_thousand_new_users() {
    let Some(ep) = endpoint("kms_calls_for_a_thousand_new_users") else {
        return;
    };
    // Every bind a new user: one GenerateDataKey for the branch key, then
    // nothing. The target is at most 10 calls per 1,000 binds; one KMS call
    // per new user (the design before branch keys) would be 1,000.
    let (generate, decrypt) = bind_calls(&ep, BranchConfig::default(), 1000, 1000).await;
    eprintln!("1,000 binds of 1,000 new users: {generate} GenerateDataKey, {decrypt} Decrypt");
    assert!(generate + decrypt <= 10, "{generate} + {decrypt} KMS calls");
    assert_eq!((generate, decrypt), (1, 0));

    // The counter does see per-user calls: with the branch key cache off,
    // every new user unwraps the branch key in KMS.
    let off = BranchConfig {
        cache_ttl: std::time::Duration::ZERO,
        ..BranchConfig::default()
    };
    let (generate, decrypt) = bind_calls(&ep, off, 100, 100).await;
    eprintln!("100 binds of 100 new users, branch key cache off: {generate} GenerateDataKey, {decrypt} Decrypt");
    assert_eq!(generate, 1);
    assert!(decrypt >= 100, "{decrypt}");
}
