//! What the commands print: output to a reader that stops early (`cardbind
//! spec | head`) ends quietly with success, as other command-line tools do,
//! instead of a panic on the broken pipe; `check-config` prints the
//! configuration in force in the file's own format, secrets masked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::process::{Command, Stdio};

#[test]
fn a_reader_that_stops_early_ends_the_output_quietly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cardbind"))
        .arg("spec")
        .env_remove("CARDBIND_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut head = [0u8; 16];
    stdout.read_exact(&mut head).unwrap();
    assert!(head.starts_with(b"{"), "{head:?}");
    // The spec (about 240 KB) is larger than a pipe's buffer: the rest is
    // written to a closed pipe.
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn check_config_prints_the_configuration_in_force_as_toml_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "a-jwt-secret-of-more-than-32-characters-0123";
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cardbind"));
    for (k, _) in std::env::vars() {
        if k.starts_with("CARDBIND__") || k == "CARDBIND_CONFIG" {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .arg("check-config")
        .env("CARDBIND__SERVER__DATA_DIR", dir.path())
        .env("CARDBIND__AUTH__JWT_SECRET", secret)
        .env("CARDBIND__LIMITS__CARDS_PER_USER", "7")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}");
    assert!(!stdout.contains(secret), "the secret is printed");
    let v: toml::Value = toml::from_str(&stdout).unwrap();
    assert_eq!(v["limits"]["cards_per_user"].as_integer(), Some(7));
    assert_eq!(v["auth"]["jwt_secret"].as_str(), Some("<set>"));
    assert_eq!(v["storage"]["kind"].as_str(), Some("sqlite"));
}

#[test]
fn a_token_made_with_a_new_dev_secret_says_where_the_secret_is() {
    let dir = tempfile::tempdir().unwrap();
    let token = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cardbind"));
        for (k, _) in std::env::vars() {
            if k.starts_with("CARDBIND__") || k == "CARDBIND_CONFIG" {
                cmd.env_remove(k);
            }
        }
        let out = cmd
            .args(["token", "--sub", "me", "--role", "service"])
            .env("CARDBIND__SERVER__DATA_DIR", dir.path())
            .output()
            .unwrap();
        assert!(out.status.success());
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (first, note) = token();
    assert_eq!(first.trim().split('.').count(), 3, "a JWT: {first}");
    assert!(note.contains("no dev secret yet"), "{note}");
    assert!(note.contains(&dir.path().join("jwt.secret").display().to_string()));
    let (_, quiet) = token();
    assert_eq!(quiet, "", "the secret exists now");
}

#[test]
fn audit_verify_checks_the_chains_then_the_anchors() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cardbind"));
    for (k, _) in std::env::vars() {
        if k.starts_with("CARDBIND__") || k == "CARDBIND_CONFIG" {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .args(["audit", "verify"])
        .env("CARDBIND__SERVER__DATA_DIR", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].starts_with("audit chains intact: "), "{stdout}");
    assert!(
        lines[1].starts_with("audit anchors intact: 0 windows verified")
            && lines[1].ends_with("newest anchored window ends none yet"),
        "{stdout}"
    );
}

#[test]
fn audit_verify_with_a_log_that_names_no_anchor_fails() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("service.log");
    std::fs::write(&log, "{\"fields\":{\"message\":\"cardbind started\"}}\n").unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cardbind"));
    for (k, _) in std::env::vars() {
        if k.starts_with("CARDBIND__") || k == "CARDBIND_CONFIG" {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .args(["audit", "verify", "--log"])
        .arg(&log)
        .env("CARDBIND__SERVER__DATA_DIR", dir.path().join("data"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("no audit anchor lines"), "{stderr}");
}

/// One `GET /healthz` over a new connection: the status line, if any.
fn healthz(addr: &str) -> Option<String> {
    use std::io::Write;
    let mut conn = std::net::TcpStream::connect(addr).ok()?;
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer).ok()?;
    answer.lines().next().map(str::to_owned)
}

#[test]
fn the_service_keeps_serving_when_its_log_reader_goes_away() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cardbind"));
    for (k, _) in std::env::vars() {
        if k.starts_with("CARDBIND__") || k == "CARDBIND_CONFIG" {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .arg("serve")
        .env("CARDBIND__SERVER__ADDRESS", "127.0.0.1:0")
        .env("CARDBIND__SERVER__DATA_DIR", dir.path())
        .env("CARDBIND__STORAGE__KIND", "memory")
        .env("CARDBIND__SERVER__PURGE_INTERVAL_SECONDS", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("cardbind listening on http://")
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_owned();
    // The log shipper goes away: every later log line meets a closed pipe.
    drop(child.stderr.take());
    // Each request logs a line.
    for _ in 0..3 {
        let _ = healthz(&addr);
    }
    let answer = healthz(&addr);
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let status = child.wait().unwrap();
    assert!(
        running && answer.as_deref() == Some("HTTP/1.1 200 OK"),
        "the service stopped serving: {answer:?}, {status:?}"
    );
}
