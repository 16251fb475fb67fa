//! The short fault matrix, run by `cargo test` (and so by CI): the real
//! binary on a FerretDB of the test's own and moto through a proxy, each
//! fault held a few seconds. The full form: `cardbind-faults matrix`.

use cardbind_faults::{matrix, run_dir, service, short_matrix};

fn required(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{var} is not set but CI=true (run under scripts/test-services.sh)"
            );
            eprintln!("skipped: {var} is not set; run under `bash scripts/test-services.sh`");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_fault_of_the_matrix_keeps_the_must_be_zero_figures_at_zero() {
    let Some(kms) = required("CARDBIND_TEST_KMS_ENDPOINT") else {
        return;
    };
    // The test starts and stops a FerretDB of its own: both its control
    // script and its binary are required.
    if required("CARDBIND_TEST_FERRETDB_CTL").is_none()
        || required("CARDBIND_TEST_FERRETDB_BIN").is_none()
    {
        return;
    }
    let bin = service::find_binary(None).unwrap_or_else(|e| panic!("{e}"));
    let dir = run_dir("faults-test");
    let o = short_matrix(bin, dir.clone(), Some(kms));
    let report = matrix::run(&o).await.unwrap_or_else(|e| panic!("{e:#}"));
    println!("{}", report.table());
    for d in report.details.iter().take(50) {
        println!("  {d}");
    }
    // Every fault was applied (none skipped for a missing dependency); row
    // 0 is the baseline.
    assert!(
        report.rows.iter().skip(1).all(|r| r.applied),
        "{}",
        report.table()
    );
    assert_eq!(report.rows.len(), matrix::Fault::ALL.len() + 1);
    let failures = report.failures(o.hostile_hold);
    assert!(
        failures.is_empty(),
        "{}\nfailures: {failures:#?}\nlogs kept in {}",
        report.table(),
        dir.display()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
