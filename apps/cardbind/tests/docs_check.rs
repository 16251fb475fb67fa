//! The error table in docs/api.md lists every stable code with the status
//! the service answers it with.

use cardbind_domain::ErrorCode;

#[test]
fn every_error_code_is_documented_with_its_status() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md");
    let doc = std::fs::read_to_string(path).expect("docs/api.md");
    for code in ErrorCode::ALL {
        let status = cardbind::http::error::status_of(code).as_u16();
        let row = format!("| `{}` | {} |", code.as_str(), status);
        assert!(doc.contains(&row), "docs/api.md lacks the row {row}");
    }
}
