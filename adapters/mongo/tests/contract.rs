//! The storage contract suite (`cardbind_ports::testkit`) on `MongoStore`,
//! against the server of `CARDBIND_TEST_MONGODB_URI` (FerretDB under
//! `scripts/test-services.sh`): every check is a test of the same name
//! here, each on a database of its own. Every store has a strict command
//! log, so the whole suite also checks that each query the adapter sends
//! is served by a declared index, and that request-path queries fix their
//! collection's shard key (a broken rule fails the call).

// Test code: a failed expectation is a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

// The factory expression is evaluated at the start of each test: without a
// server it returns from the test (a skip, with a message), or fails under
// CI=true.
cardbind_ports::contract_suite!(match common::factory() {
    Some(f) => f,
    None => return,
});
