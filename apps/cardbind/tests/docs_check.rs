//! The error table in docs/api.md lists every stable code with the status
//! the service answers it with.

use cardbind_domain::ErrorCode;

#[test]
fn every_error_code_is_documented_with_its_status() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md");
    let doc = std::fs::read_to_string(path).expect("docs/api.md");
    for code in ErrorCode::ALL {
        let status = cardbind::http::error::status_of(*code).as_u16();
        let row = format!("| `{}` | {} |", code.as_str(), status);
        assert!(doc.contains(&row), "docs/api.md lacks the row {row}");
    }
}

/// docs/cardbind.example.toml is what `cardbind defaults` prints, and it
/// loads back as the defaults. `CARDBIND_UPDATE_DOCS=1` rewrites it.
#[test]
fn the_example_configuration_is_the_defaults() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/cardbind.example.toml"
    );
    let generated = cardbind::config::defaults_toml().expect("defaults serialize");
    if std::env::var("CARDBIND_UPDATE_DOCS").is_ok_and(|v| v == "1") {
        std::fs::write(path, &generated).expect("write the example");
    }
    let committed = std::fs::read_to_string(path).expect("docs/cardbind.example.toml");
    assert!(
        committed == generated,
        "docs/cardbind.example.toml differs from `cardbind defaults`; run CARDBIND_UPDATE_DOCS=1 cargo test -p cardbind --test suites docs_check::"
    );
    let loaded = cardbind::config::Config::load_from(
        Some(std::path::Path::new(path)),
        figment::providers::Env::prefixed("CARDBIND_DOCS_CHECK_UNSET__"),
    )
    .expect("the example loads");
    assert_eq!(
        toml::to_string(&loaded).ok(),
        toml::to_string(&cardbind::config::Config::default()).ok()
    );
}
