//! # cardbind-tests
//!
//! Black-box suites: every test starts the real service in-process on a
//! free port ([`TestApp::spawn`], after zero2prod's `spawn_app`), with its
//! own temp data dir and its own store (in memory, or a fresh MongoDB
//! database named at random), and talks to it over HTTP only.
//!
//! Also here: valid test data made from scratch (Luhn-valid card numbers
//! per brand, resident ID numbers with their ISO 7064 MOD 11-2 check
//! character, mobile numbers), bearer tokens per role, and a FerretDB of a
//! test's own that it may stop and restart ([`OwnFerretDb`]).
//!
//! Tests that need a real service read it from the environment
//! (`CARDBIND_TEST_MONGODB_URI`, `CARDBIND_TEST_KMS_ENDPOINT`, set by
//! `scripts/test-services.sh`). When it is missing they print
//! `skipped: …` and return — unless `CI=true`, where a missing service is a
//! failure ([`required_env`]).

// Test support: a setup step that fails must stop the test at once, with
// the reason; there is no caller to hand an error to.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

pub use cardbind;
pub use serde_json;

mod app;
mod data;
mod env;
mod ferretdb;
mod helpers;
mod kms;
pub mod leaks;
mod response;

pub use app::{base_config, Storage, TestApp};
pub use data::{
    card_number, card_number_ending, consent_sha256, future_expiry, has_digit_run, holder_name,
    idem_key, luhn_check_digit, luhn_valid, phone, random_digits, random_letters, resident_id,
    resident_id_check, user_id, Brand, TestCard, CONSENT_TEXT,
};
pub use env::{fresh_db_name, kms_endpoint, mongo_uri, required_env};
pub use ferretdb::{free_port, OwnFerretDb};
pub use helpers::{find_card, fresh_rate_window, hmac_hex, mongo_documents, raw_http, the_default};
pub use kms::{create_kms_key, socket_addr_of, use_kms, TcpProxy};
pub use response::{assert_envelope, Response};
