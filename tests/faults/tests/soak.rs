//! The soak's CI form: two minutes at a steady rate on the embedded SQLite
//! store (what `cardbind serve` runs by default), sampled every 20 s. The
//! 30-minute form: `cardbind-faults soak --minutes 30 --storage sqlite`,
//! figures in docs/operations.md. FerretDB is not soaked in CI: on
//! FerretDB 1.24 latency grows with the data by design of its SQLite
//! handler (docs/storage.md), which a p99 tolerance rightly flags within
//! minutes.

use std::time::Duration;

use cardbind_faults::{matrix, run_dir, service, short_matrix, soak};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_minutes_at_a_steady_rate_stay_within_tolerance() {
    let bin = service::find_binary(None).unwrap_or_else(|e| panic!("{e}"));
    let dir = run_dir("soak-test");
    let mut o = short_matrix(bin, dir.clone(), None);
    o.storage = matrix::StorageChoice::Sqlite;
    o.rate = 5.0;
    o.log_filter = "info".into();
    let r = soak::run(
        &o,
        Duration::from_secs(120),
        Duration::from_secs(20),
        &soak::Tolerance::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    println!("{}", r.table());
    assert!(r.samples.len() >= 5, "{}", r.table());
    assert!(
        r.failures.is_empty(),
        "{}\nlogs kept in {}",
        r.table(),
        dir.display()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_tolerance_catches_growth() {
    let s = |minute: f64, flows: usize, rss_mb: f64, fds: usize, p99_ms: f64| soak::SoakSample {
        minute,
        flows,
        requests: flows * 3,
        rss_mb,
        fds,
        p99_ms,
        errors: 0,
    };
    let tol = soak::Tolerance::default();
    let steady: Vec<_> = (0..9)
        .map(|i| {
            s(
                f64::from(i),
                i as usize * 300,
                40.0 + f64::from(i) * 0.5,
                30,
                20.0,
            )
        })
        .collect();
    assert!(soak::judge(&steady, &tol).is_empty());
    let mut leak = steady.clone();
    leak.last_mut().unwrap().rss_mb = 40.0 + 33.0;
    assert_eq!(
        soak::judge(&leak, &tol).len(),
        1,
        "{:?}",
        soak::judge(&leak, &tol)
    );
    let mut fds = steady.clone();
    fds.last_mut().unwrap().fds = 30 + 33;
    assert_eq!(soak::judge(&fds, &tol).len(), 1);
    let mut slow = steady.clone();
    for x in slow.iter_mut().skip(6) {
        x.p99_ms = 200.0;
    }
    assert_eq!(soak::judge(&slow, &tol).len(), 1);
    // One stalled interval at the end is not growth, every interval of
    // the last third slow is.
    let mut stall = steady.clone();
    stall.last_mut().unwrap().p99_ms = 900.0;
    assert!(soak::judge(&stall, &tol).is_empty());
    let mut slower = steady.clone();
    for (i, x) in slower.iter_mut().enumerate().skip(6) {
        x.p99_ms = 150.0 + i as f64 * 100.0;
    }
    assert_eq!(soak::judge(&slower, &tol).len(), 1);
    let mut failing = steady.clone();
    failing[4].errors = 20;
    assert_eq!(soak::judge(&failing, &tol).len(), 1);
    // The memory store's allowance per flow.
    let per_flow = soak::Tolerance {
        rss_per_flow_kb: 20.0,
        ..soak::Tolerance::default()
    };
    assert!(soak::judge(&leak, &per_flow).is_empty());
}
