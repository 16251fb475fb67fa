//! Every in-process suite of the service, in one test binary.
//!
//! Each module is a suite of its own (`suite › test` in the documents is
//! `suite::test` here); they share the helpers in `support` and
//! `family_support`. One binary instead of one per suite: each links the
//! whole service with its AWS, MongoDB and HTTP dependencies (about 135 MB
//! unoptimised), so eighteen of them took about 2.4 GB of disk and as many
//! links in every test run (see `scripts/test.sh`).
//!
//! Run one suite: `cargo test -p cardbind --test suites http_spec::`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod family_support;
mod support;

mod audit_consent;
mod auth_hardening;
mod channels_e2e;
mod cli_output;
mod consistency;
mod docs_check;
mod edge_hardening;
mod family;
mod family_rules;
mod http_api;
mod http_spec;
mod instances;
mod ops_metrics;
mod review_retry;
mod roles;
mod step_up;
mod tls;
mod velocity;
