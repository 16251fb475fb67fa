//! The integration suites of `cardbind-keys`, in one test binary: each
//! module is a suite of its own, sharing `common`. One binary instead of
//! one per suite: each linked the same dependencies again.
//!
//! Run one suite: `cargo test -p cardbind-keys --test suites kms::`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

mod kms;
// Not `mod proptest`: it would shadow the crate of that name.
#[path = "proptest.rs"]
mod props;
mod vault;
