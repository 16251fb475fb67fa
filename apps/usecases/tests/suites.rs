//! The use cases' suites, in one test binary: each module is a suite of
//! its own (`usecases/bind_flow` in the documents is the module
//! `bind_flow`), sharing `support` (ports over the in-memory store, fakes,
//! a fixed clock) and `family_support`. One binary instead of seven: each
//! linked the same dependencies again (about 20 MB apiece).
//!
//! Run one suite: `cargo test -p cardbind-usecases --test suites bind_flow::`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod family_support;
mod support;

mod anchors;
mod audit_verify;
mod bind_flow;
mod channel_rules;
mod concurrency;
mod family;
mod family_ends;
