//! The integration suites of `cardbind-mongo`, in one test binary: each
//! module is a suite of its own, sharing `common`. One binary instead of
//! one per suite: each linked the same dependencies again.
//!
//! Run one suite: `cargo test -p cardbind-mongo --test suites adapter::`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

mod adapter;
mod bins;
mod contract;
mod restart;
mod round_trips;
