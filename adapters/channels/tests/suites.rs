//! The integration suites of `cardbind-channels`, in one test binary: each
//! module is a suite of its own, sharing `common`. One binary instead of
//! one per suite: each linked the same dependencies again.
//! `misconfig_log` stays a binary of its own: it owns its process's log
//! subscriber.
//!
//! Run one suite: `cargo test -p cardbind-channels --test suites alipay::`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

mod alipay;
mod mock;
mod resilience;
mod wechat;
