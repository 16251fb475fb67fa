//! The black-box suites, in one test binary: each module starts the real
//! service (`cardbind_tests::TestApp`) and talks to it over HTTP.
//!
//! Each module is a suite of its own (`suite › test` in the documents is
//! `suite::test` here). One binary instead of one per suite: each links the
//! whole service with its AWS, MongoDB and HTTP dependencies (about 135 MB
//! unoptimised), so thirteen of them took about 1.8 GB of disk and as many
//! links in every test run (see `scripts/test.sh`). `no_leak` stays a
//! binary of its own: it installs the process's log subscriber at `debug`
//! for every crate, which the other suites' apps would otherwise own.
//!
//! Run one suite: `cargo test -p cardbind-tests --test suites bins::`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod api_concurrency;
mod api_flow;
mod api_validation;
mod bins;
mod deploy_metrics;
mod docs_refs;
mod erasure_scan;
mod family_flow;
mod header_leak;
mod kms_flow;
mod kms_rotation;
mod mongo_proof;
mod round_trip_budgets;
