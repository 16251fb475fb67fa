//! The HTTP edge, in process: envelopes, validation, auth, idempotency,
//! limits, headers, metrics and the main flows.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support;

mod auth;
mod fields;
mod flows;
mod headers;
mod idempotency;
mod malformed;
mod panics;
mod serving;

use std::sync::Arc;

use poem::http::StatusCode;
use serde_json::{json, Value};
use support::*;

const VISA: &str = "4111111111111111";
const VISA2: &str = "4012888888881881";
const MC_OTP: &str = "5555555555554444";
const AMEX_REDIRECT: &str = "378282246310005";
const MC_DECLINE: &str = "5105105105105100";

fn assert_security_headers(resp: &poem::test::TestResponse) {
    for h in [
        "strict-transport-security",
        "content-security-policy",
        "x-request-id",
    ] {
        resp.assert_header_exist(h);
    }
    resp.assert_header("x-content-type-options", "nosniff");
    resp.assert_header("cache-control", "no-store");
    resp.assert_header("x-frame-options", "DENY");
    resp.assert_header("referrer-policy", "no-referrer");
}
