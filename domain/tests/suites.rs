//! The integration suites of `cardbind-domain`, in one test binary: each
//! module is a suite of its own. One binary instead of
//! one per suite: each linked the same dependencies again.
//!
//! Run one suite: `cargo test -p cardbind-domain --test suites bins::`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bins;
mod properties;
