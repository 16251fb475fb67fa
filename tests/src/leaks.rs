//! Card data must never appear in logs, response bodies or metrics. Every
//! `TestCard` registers its secrets here; the first `TestApp` of a test
//! binary installs a global subscriber at debug level for the cardbind
//! crates that keeps every log line in memory.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

struct Secret {
    what: &'static str,
    value: String,
}

fn secrets() -> &'static Mutex<Vec<Secret>> {
    static S: OnceLock<Mutex<Vec<Secret>>> = OnceLock::new();
    S.get_or_init(|| Mutex::new(Vec::new()))
}

pub fn register(card: &super::TestCard) {
    let mut s = secrets().lock().unwrap_or_else(PoisonError::into_inner);
    s.push(Secret {
        what: "card number",
        value: card.number.clone(),
    });
    s.push(Secret {
        what: "resident id number",
        value: card.id_number.clone(),
    });
    s.push(Secret {
        what: "phone",
        value: card.phone.trim_start_matches('+').to_owned(),
    });
    for form in cvv_forms(&card.cvv) {
        s.push(Secret {
            what: "cvv",
            value: form,
        });
    }
}

/// The ways a CVV would stand as a value: quoted (JSON or Debug), or as
/// `cvv=812` / `cvv: 812`. A bare 3-digit run is everywhere (latencies,
/// ports, timestamps), so it is not looked for.
fn cvv_forms(cvv: &str) -> [String; 3] {
    [
        format!("\"{cvv}\""),
        format!("cvv={cvv}"),
        format!("cvv: {cvv}"),
    ]
}

#[derive(Clone)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn buffer() -> &'static Option<Arc<Mutex<Vec<u8>>>> {
    static B: OnceLock<Option<Arc<Mutex<Vec<u8>>>>> = OnceLock::new();
    B.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = Buffer(buf.clone());
        let filter = tracing_subscriber::EnvFilter::new(
            "info,cardbind=debug,cardbind_ports=debug,cardbind_channels=debug,cardbind_keys=debug,cardbind_mongo=debug,cardbind_memory=debug,poem=debug",
        );
        // Another subscriber may own this binary (a test that installs its
        // own): then that test reads the logs itself.
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(move || writer.clone())
            .try_init()
            .ok()
            .map(|_| buf)
    })
}

/// Installs the capturing subscriber (once per test binary).
pub fn capture_logs() {
    let _ = buffer();
}

/// Everything logged so far in this process (empty when not captured).
pub fn logs() -> String {
    match buffer() {
        Some(b) => {
            String::from_utf8_lossy(&b.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
        }
        None => String::new(),
    }
}

/// Panics when `text` holds a registered secret.
pub fn assert_clean(text: &str, where_: &str) {
    let s = secrets().lock().unwrap_or_else(PoisonError::into_inner);
    for secret in s.iter() {
        assert!(
            !shows(text, secret),
            "a test {} appears in {where_}",
            secret.what
        );
    }
}

/// Whether `text` shows `cvv` in one of [`cvv_forms`] (quoted, but not as
/// another card's `"last4"`).
pub fn shows_cvv(text: &str, cvv: &str) -> bool {
    cvv_forms(cvv)
        .into_iter()
        .any(|value| shows(text, &Secret { what: "cvv", value }))
}

/// Whether `text` shows `secret`. A 4-digit CVV (Amex) quoted is also
/// what another test card's `"last4"` looks like: that field is not a
/// CVV shown (a random collision failed a run of the suite).
fn shows(text: &str, secret: &Secret) -> bool {
    if secret.what != "cvv" || !secret.value.starts_with('"') {
        return text.contains(&secret.value);
    }
    text.match_indices(&secret.value).any(|(i, _)| {
        let before = text[..i].trim_end();
        !before.ends_with("\"last4\":") && !before.ends_with("last4:")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quoted_cvv_is_found_but_not_in_a_last4() {
        let cvv = Secret {
            what: "cvv",
            value: "\"7421\"".into(),
        };
        assert!(shows(r#"{"cvv":"7421"}"#, &cvv));
        assert!(shows(r#"{"note":"7421"}"#, &cvv));
        assert!(!shows(r#"{"last4":"7421"}"#, &cvv));
        assert!(!shows(r#"{"last4": "7421"}"#, &cvv));
        assert!(shows(r#"{"last4":"1111","x":"7421"}"#, &cvv));
        assert!(shows_cvv(r#"{"cvv":"7421"}"#, "7421"));
        assert!(shows_cvv("cvv=812", "812"));
        assert!(!shows_cvv(r#"{"last4":"7421"}"#, "7421"));
        assert!(!shows_cvv("latency 812 ms", "812"));
    }
}
