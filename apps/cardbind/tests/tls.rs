//! Transport: the real service (`cardbind::cli::start`) with
//! `server.tls_cert_file`/`tls_key_file` set, a self-signed certificate made
//! by `openssl req`, and `openssl s_client` as the client: TLS 1.2 and TLS
//! 1.3 handshakes verify the certificate and get answers; TLS 1.1 and plain
//! HTTP on that port get none.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let d =
            std::env::temp_dir().join(format!("cardbind-tls-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A self-signed certificate for localhost / 127.0.0.1: (cert, key).
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

async fn start_tls(dir: &Path) -> (cardbind::cli::Running, PathBuf) {
    let (cert, key) = self_signed(dir);
    let mut config = cardbind::config::Config::default();
    config.server.address = "127.0.0.1:0".into();
    config.server.data_dir = dir.join("data");
    config.server.tls_cert_file = Some(cert.clone());
    config.server.tls_key_file = Some(key);
    config.server.purge_interval_seconds = 0;
    config.validate().unwrap();
    let running = cardbind::cli::start(config).await.unwrap();
    assert!(
        running.base_url.starts_with("https://"),
        "{}",
        running.base_url
    );
    (running, cert)
}

/// What `openssl s_client` saw: (succeeded, stdout + stderr).
async fn s_client(addr: std::net::SocketAddr, cert: &Path, extra: &[&str]) -> (bool, String) {
    let mut child = tokio::process::Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .args(["-servername", "localhost", "-verify_hostname", "localhost"])
        .arg("-CAfile")
        .arg(cert)
        .args(["-verify_return_error", "-ign_eof"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("s_client finished")
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn protocol_of(text: &str) -> Option<&str> {
    // "Protocol  : TLSv1.3" (session block) or "New, TLSv1.3, Cipher is …"
    text.lines().find_map(|l| {
        let l = l.trim();
        l.strip_prefix("Protocol  : ")
            .or_else(|| l.strip_prefix("Protocol version: "))
            .or_else(|| l.strip_prefix("New, ").and_then(|r| r.split(',').next()))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_2_and_1_3_are_served_with_the_configured_certificate() {
    let dir = TempDir::new("versions");
    let (running, cert) = start_tls(&dir.0).await;
    for (flag, version) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let (ok, text) = s_client(running.addr, &cert, &[flag]).await;
        assert!(ok, "{flag}: {text}");
        assert!(
            text.contains("Verify return code: 0 (ok)"),
            "{flag}: the certificate verifies: {text}"
        );
        assert_eq!(protocol_of(&text), Some(version), "{flag}: {text}");
        assert!(text.contains("HTTP/1.1 200"), "{flag}: {text}");
        let lower = text.to_ascii_lowercase();
        assert!(
            lower.contains("strict-transport-security: max-age="),
            "{flag}: HSTS over TLS: {text}"
        );
        assert!(lower.contains("\"status\":\"ok\""), "{flag}: {text}");
    }
    // without a version pinned, the client and the service settle on 1.3
    let (ok, text) = s_client(running.addr, &cert, &[]).await;
    assert!(ok, "{text}");
    assert_eq!(protocol_of(&text), Some("TLSv1.3"), "{text}");
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_protocols_and_plain_http_get_no_answer() {
    let dir = TempDir::new("refused");
    let (running, cert) = start_tls(&dir.0).await;

    // TLS 1.1 (the client allowed to offer it): no handshake, no answer.
    let (ok, text) = s_client(
        running.addr,
        &cert,
        &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"],
    )
    .await;
    assert!(!ok, "TLS 1.1 must fail: {text}");
    // the client did offer TLS 1.1 (a ClientHello went out), and the
    // service answered it with a TLS alert: no certificate, no session
    assert!(text.contains("no peer certificate available"), "{text}");
    assert!(!text.contains("written 0 bytes"), "{text}");
    assert!(
        text.contains("alert handshake failure") || text.contains("alert protocol version"),
        "the service refuses the version with an alert: {text}"
    );
    assert!(!text.contains("HTTP/1.1 200"), "{text}");

    // A client that does not trust the certificate refuses it.
    let other = TempDir::new("other-ca");
    let (other_cert, _) = self_signed(&other.0);
    let (ok, text) = s_client(running.addr, &other_cert, &["-tls1_3"]).await;
    assert!(!ok, "an untrusted certificate must not verify: {text}");

    // Plain HTTP on the TLS port: no HTTP answer, the connection ends.
    let mut conn = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer))
        .await
        .expect("the service closes the connection");
    let text = String::from_utf8_lossy(&answer);
    assert!(
        !text.contains("HTTP/1.1") && !text.contains("healthz") && !text.contains("ok"),
        "plain HTTP got an HTTP answer: {read:?} {text:?}"
    );

    // and the service still serves TLS afterwards
    let (ok, text) = s_client(running.addr, &cert, &["-tls1_2"]).await;
    assert!(ok && text.contains("HTTP/1.1 200"), "{text}");
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_made_while_the_service_starts_is_not_dropped() {
    // poem's rustls acceptor dropped connections accepted before its
    // configuration was loaded; cli.rs makes the configuration load first.
    for round in 0..8 {
        let dir = TempDir::new(&format!("start-{round}"));
        let (running, cert) = start_tls(&dir.0).await;
        let (ok, text) = s_client(running.addr, &cert, &["-tls1_3"]).await;
        assert!(ok && text.contains("HTTP/1.1 200"), "round {round}: {text}");
        running.stop().await.unwrap();
    }
}

#[test]
fn a_certificate_without_its_key_is_a_configuration_error_not_plain_http() {
    let mut config = cardbind::config::Config::default();
    config.server.tls_cert_file = Some(PathBuf::from("/nonexistent/cert.pem"));
    let e = match cardbind::compose::tls(&config) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a certificate without its key was accepted"),
    };
    assert!(e.contains("set both or neither"), "{e}");
    config.server.tls_cert_file = None;
    config.server.tls_key_file = Some(PathBuf::from("/nonexistent/key.pem"));
    assert!(cardbind::compose::tls(&config).is_err());
    config.server.tls_key_file = None;
    assert!(cardbind::compose::tls(&config).unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_or_mismatched_certificate_or_key_is_refused_at_start() {
    let dir = TempDir::new("bad-pair");
    let (cert, key) = self_signed(&dir.0);
    let other = TempDir::new("bad-pair-other");
    let (_, other_key) = self_signed(&other.0);
    let garbage = dir.0.join("garbage.pem");
    std::fs::write(&garbage, "not a PEM file\n").unwrap();
    let config = |cert: &Path, key: &Path| {
        let mut config = cardbind::config::Config::default();
        config.server.address = "127.0.0.1:0".into();
        config.server.data_dir = dir.0.join("data");
        config.server.tls_cert_file = Some(cert.to_path_buf());
        config.server.tls_key_file = Some(key.to_path_buf());
        config.server.purge_interval_seconds = 0;
        config.validate().unwrap();
        config
    };
    assert!(cardbind::compose::tls(&config(&cert, &key))
        .unwrap()
        .is_some());
    for (c, k, field, why) in [
        (
            &cert,
            &other_key,
            "server.tls_key_file",
            "is not the key of the certificate",
        ),
        (
            &garbage,
            &key,
            "server.tls_cert_file",
            "holds no PEM certificate",
        ),
        (
            &cert,
            &garbage,
            "server.tls_key_file",
            "holds no PEM private key",
        ),
        (
            &key,
            &key,
            "server.tls_cert_file",
            "holds no PEM certificate",
        ),
        (
            &cert,
            &cert,
            "server.tls_key_file",
            "holds no PEM private key",
        ),
    ] {
        let e = match cardbind::cli::start(config(c, k)).await {
            Ok(_) => panic!("started with {c:?} and {k:?}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(e.starts_with(field) && e.contains(why), "{c:?} {k:?}: {e}");
    }

    // The binary: no listening line, the exit code of a configuration error;
    // `check-config` refuses the same pair (and takes the good one).
    let run = |command: &str, key: &Path| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cardbind"));
        for (k, _) in std::env::vars() {
            if k.starts_with("CARDBIND__") || k == "CARDBIND_CONFIG" {
                cmd.env_remove(k);
            }
        }
        cmd.arg(command)
            .env("CARDBIND__SERVER__ADDRESS", "127.0.0.1:0")
            .env("CARDBIND__SERVER__DATA_DIR", dir.0.join("data"))
            .env("CARDBIND__SERVER__TLS_CERT_FILE", &cert)
            .env("CARDBIND__SERVER__TLS_KEY_FILE", key)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    for command in ["serve", "check-config"] {
        let out = run(command, &other_key);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{command}: {stderr}");
        assert!(
            out.stdout.is_empty(),
            "{command}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            stderr.contains("server.tls_key_file") && stderr.contains("is not the key"),
            "{command}: {stderr}"
        );
    }
    let out = run("check-config", &key);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
