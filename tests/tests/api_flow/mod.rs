//! The whole binding flow over HTTP, in memory, with the mock channel in
//! each of its modes.

// Test code: helpers outside #[test] fns fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin;
mod notify;
mod otp;
mod review;

use std::time::Duration;

use cardbind::config::Config;
use cardbind_tests::{find_card, idem_key, the_default, user_id, Brand, TestApp, TestCard};
use serde_json::Value;

fn relaxed(cfg: &mut Config) {
    cfg.limits.binds_per_user_per_minute = 100;
}

fn id_of(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_owned()
}
