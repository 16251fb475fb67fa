//! Environment: the services a test needs (MongoDB/FerretDB, KMS), read
//! from the environment, skipped or failed when missing.

/// Reads `var`. When it is unset or empty: with `CI=true` this panics (a CI
/// run must not silently skip), otherwise it prints `skipped: …` and
/// returns `None` so that the test can return early.
pub fn required_env(var: &str, why: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(v),
        _ => {
            if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
                panic!("{var} is not set but CI=true: {why} (run under scripts/test-services.sh)");
            }
            eprintln!(
                "skipped: {var} is not set ({why}); run under `bash scripts/test-services.sh`"
            );
            None
        }
    }
}

/// The MongoDB (FerretDB) connection string for tests, or `None` (skip).
pub fn mongo_uri() -> Option<String> {
    required_env(
        "CARDBIND_TEST_MONGODB_URI",
        "this test needs MongoDB/FerretDB",
    )
}

/// The KMS (moto) endpoint for tests, or `None` (skip).
pub fn kms_endpoint() -> Option<String> {
    required_env(
        "CARDBIND_TEST_KMS_ENDPOINT",
        "this test needs a KMS endpoint (moto)",
    )
}

/// A database name no other test uses.
pub fn fresh_db_name() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("cbt_{}", &id[..20])
}
