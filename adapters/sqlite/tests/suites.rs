//! The integration suites of `cardbind-sqlite`, in one test binary: each
//! module is a suite of its own, sharing `common`. One binary instead of
//! one per suite: each linked the same dependencies again.
//!
//! Run one suite: `cargo test -p cardbind-sqlite --test suites bins::`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

mod bins;
mod contract;
mod file;
mod ports;
