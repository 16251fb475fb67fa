//! The quick race scenarios, run by `cargo test` (and so by CI) against
//! the binary built next to this test, on the memory store, the embedded
//! SQLite store and FerretDB (`CARDBIND_TEST_MONGODB_URI`, from
//! `scripts/test-services.sh`; under `CI=true` its absence fails the test).
//! The same scenarios against the old main and the new code side by side,
//! and the slow ones: `cardbind-faults races` (docs/operations.md, "Races").

// Helpers of the tests below: a failure to set up fails the test.
#![allow(clippy::panic)]

use cardbind_faults::races::{self, Options, Scenario, Store, Target, Verdict};
use cardbind_faults::{run_dir, service};

async fn target() -> Target {
    let bin = service::find_binary(None).unwrap_or_else(|e| panic!("{e}"));
    Target::new("new", bin)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}

fn options(what: &str) -> Options {
    let mut o = Options::from_env(run_dir(what));
    o.rounds = 3;
    o
}

/// The stores to run on: FerretDB only when the test services are up (a
/// CI run without them fails).
fn stores(all: &[Store]) -> Vec<Store> {
    let ferret = std::env::var("CARDBIND_TEST_MONGODB_URI").is_ok_and(|v| !v.is_empty());
    if !ferret {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CARDBIND_TEST_MONGODB_URI is not set but CI=true (run under scripts/test-services.sh)"
        );
        eprintln!("FerretDB skipped: CARDBIND_TEST_MONGODB_URI is not set; run under `bash scripts/test-services.sh`");
    }
    all.iter()
        .copied()
        .filter(|s| ferret || *s != Store::FerretDb)
        .collect()
}

async fn passes(scenario: Scenario, on: &[Store]) {
    let t = target().await;
    let o = options(scenario.name());
    let stores = stores(on);
    let out = races::run(std::slice::from_ref(&t), &[scenario], &stores, &o).await;
    println!("{}", races::table(&out, std::slice::from_ref(&t)));
    assert_eq!(out.len(), stores.len());
    for x in &out {
        assert_eq!(
            x.verdict,
            Verdict::Pass,
            "{} on {}: {}\n{:#?}\nlogs kept in {}",
            scenario.name(),
            x.store.name(),
            x.figures,
            x.details,
            o.dir.display()
        );
    }
    let _ = std::fs::remove_dir_all(&o.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_card_cap_holds_under_16_parallel_binds() {
    passes(Scenario::Cap, &Store::ALL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_key_runs_one_bind_under_16_parallel_requests() {
    passes(Scenario::OneKey, &Store::ALL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bind_longer_than_its_lease_keeps_its_key() {
    passes(Scenario::Lease, &[Store::Sqlite, Store::FerretDb]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_changes_leave_every_card_on_one_chain_of_changes() {
    passes(Scenario::Rollback, &Store::ALL).await;
}

/// Two instances on one FerretDB: the one running a bind is stopped past
/// its lease, the same request goes to the other; the late holder's answer
/// is not stored over the new attempt's, and a retry gets the card.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_holder_cannot_store_over_the_new_attempt_and_a_retry_gets_the_card() {
    passes(Scenario::LeaseStall, &[Store::FerretDb]).await;
}

/// As above, with the new attempt still at work when the late holder
/// resumes: the late holder neither completes nor releases it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_holder_cannot_complete_or_release_the_new_attempt() {
    passes(Scenario::LeaseFence, &[Store::FerretDb]).await;
}

/// The store dies while a bind waits for its channel (the card written,
/// the answer not): a retry under the key gets the card, not `409
/// card_already_bound`. Needs a FerretDB of its own to kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_after_a_partial_write_gets_the_card() {
    passes(Scenario::Partial, &[Store::FerretDb]).await;
}
