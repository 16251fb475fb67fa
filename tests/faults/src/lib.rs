//! # cardbind-faults
//!
//! A fault-matrix and soak harness for the real `cardbind` binary. It starts
//! the binary as a subprocess (configured by a TOML file plus
//! `CARDBIND__…` overrides, logs at debug level in a file), drives a steady
//! workload of binds, verifies and unbinds over HTTP, and meanwhile breaks
//! one thing at a time:
//!
//! * FerretDB killed (SIGKILL) and restarted ([`deps::OwnFerretDb`]);
//! * the KMS emulator cut off and back, through a TCP proxy of ours
//!   ([`deps::Proxy`]: moto keeps its keys in memory, so a restarted moto
//!   would have lost every key, which a real KMS never does; cutting the
//!   path to it is the outage a service can actually live through);
//! * the mock channel slow, failing and timing out (per-card modes);
//! * a burst of hostile traffic ([`hostile`]).
//!
//! For each fault it reports the statuses the OpenAPI operation does not
//! declare, bindings lost or duplicated when the store (read through the
//! list API) is reconciled with every answer the clients got, the time to
//! recover, and log lines holding card data; see [`matrix`]. The soak
//! ([`soak`]) runs the same workload for a long time and samples memory,
//! file descriptors and p99 latency.
//!
//! The race scenarios ([`races`]) run against binaries of different ages
//! (the old main and the new code) and report, scenario by scenario,
//! whether concurrent requests kept the cap, the idempotency key, the
//! versioned writes and a retry after a partial write correct.
//!
//! It depends on none of the service's crates: it talks HTTP and the
//! command line only, so it keeps working while the insides change.
//! Short forms run in `cargo test` (`tests/`); the full forms run from the
//! `cardbind-faults` binary (see `main.rs` and docs/operations.md).

pub mod cards;
pub mod deps;
pub mod hostile;
pub mod matrix;
pub mod races;
pub mod reconcile;
pub mod service;
pub mod soak;
pub mod spec;
pub mod workload;

use std::path::PathBuf;
use std::time::Duration;

/// The short matrix `cargo test` runs (about two minutes).
pub fn short_matrix(bin: PathBuf, dir: PathBuf, kms_endpoint: Option<String>) -> matrix::Options {
    matrix::Options {
        bin,
        dir,
        storage: matrix::StorageChoice::OwnFerretDb,
        kms_endpoint,
        sets: Vec::new(),
        log_filter: DEFAULT_LOG_FILTER.into(),
        // Well under what a debug build on FerretDB sustains on a shared
        // 2-core machine: a fault's backlog must be able to drain. FerretDB
        // 1.24 scans a collection for every query that is not by `_id`, so
        // its capacity falls as the run's data grows; at 2 flows/s a
        // 10,000-connection burst on the same two cores tipped it into
        // timeouts it took over a minute to leave (the full matrix by hand
        // keeps 2 flows/s and reports it).
        rate: 1.0,
        baseline: Duration::from_secs(5),
        hold: Duration::from_secs(6),
        hostile_hold: Duration::from_secs(14),
        recovery_budget: Duration::from_secs(40),
        healthy_window: Duration::from_secs(2),
        faults: matrix::Fault::ALL.to_vec(),
        burst: hostile::Burst {
            malformed: 60,
            slow_loris: 200,
            slow_bodies: 10,
            flood: 10_000,
            hold: Duration::from_secs(14),
        },
    }
}

/// The full matrix (by hand): longer faults, a bigger burst.
pub fn full_matrix(bin: PathBuf, dir: PathBuf, kms_endpoint: Option<String>) -> matrix::Options {
    matrix::Options {
        rate: 2.0,
        baseline: Duration::from_secs(10),
        hold: Duration::from_secs(20),
        hostile_hold: Duration::from_secs(20),
        recovery_budget: Duration::from_secs(60),
        healthy_window: Duration::from_secs(3),
        burst: hostile::Burst {
            malformed: 300,
            slow_loris: 1000,
            slow_bodies: 50,
            flood: 10_000,
            hold: Duration::from_secs(20),
        },
        ..short_matrix(bin, dir, kms_endpoint)
    }
}

/// Debug level, except byte-level transport chatter (HTTP/2 frames, TLS
/// records, the AWS SDK's and hyper's connection pools).
pub const DEFAULT_LOG_FILTER: &str = "debug,hyper=info,hyper_util=info,h2=info,rustls=info,tower=info,aws_smithy_runtime=info,aws_smithy_runtime_api=info,aws_smithy_http_client=info,aws_config=info,aws_sdk_kms=info";

/// A fresh directory for a run's config, data and logs.
pub fn run_dir(what: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "cardbind-{what}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ))
}
