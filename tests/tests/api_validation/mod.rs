//! Input validation, idempotency, rate limits and access control, over
//! HTTP, in memory.

// Test code: helpers outside #[test] fns fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod access;
mod fields;
mod idempotency;
mod malformed;
mod transport;

use cardbind_domain::Role;
use cardbind_tests::{
    assert_envelope, fresh_rate_window, idem_key, raw_http, resident_id_check, user_id, Brand,
    TestApp, TestCard,
};
use reqwest::Method;
use serde_json::{json, Value};
