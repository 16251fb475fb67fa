//! The integration suites of `cardbind-memory`, in one test binary: each
//! module is a suite of its own. One binary instead of
//! one per suite: each linked the same dependencies again.
//!
//! Run one suite: `cargo test -p cardbind-memory --test suites bins::`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bins;
mod contract;
mod memory_aids;
