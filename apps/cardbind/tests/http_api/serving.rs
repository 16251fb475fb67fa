//! Serving on a real socket (port zero, in-flight requests finished on
//! shutdown), and audit cursors at the edge of their pattern.

use super::*;

use cardbind::http::server::ConnectionLimits;

/// The service on a port of its own, the mock channel answering the test
/// VISA card in `mode`: its address, the sender that starts its shutdown,
/// and its task.
fn serve_with_visa_in(
    mode: cardbind_channels::MockMode,
    opts: Options,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    serve_limited_with_visa_in(mode, opts, ConnectionLimits::default())
}

/// [`serve_with_visa_in`] with the connection limits `limits`.
fn serve_limited_with_visa_in(
    mode: cardbind_channels::MockMode,
    mut opts: Options,
    limits: ConnectionLimits,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    opts.mock.card_modes.insert(VISA[12..].into(), mode);
    let (state, _store, _clock) = state_with(opts);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(cardbind::http::serve_limited(
        listener,
        state,
        limits,
        async move {
            let _ = stopped.await;
        },
    ));
    (addr, stop, server)
}

#[tokio::test]
async fn serve_on_port_zero_and_finish_in_flight_requests_on_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut opts = Options::default();
    opts.mock.timeout_after = std::time::Duration::from_millis(400);
    let (addr, stop, server) = serve_with_visa_in(cardbind_channels::MockMode::Timeout, opts);

    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("x-request-id:"),
        "{answer}"
    );

    // A slow bind (the channel answers after 400 ms) is in flight when shutdown starts.
    let body = bind_body(VISA).to_string();
    let request = format!(
        "POST /v1/users/u-slow/cards HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {}\r\n\
         Idempotency-Key: k-slow\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        bearer("merchant", "service"),
        body.len(),
        body
    );
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let _ = stop.send(());
    let mut answer = String::new();
    slow.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    assert!(answer.contains("pending_review"), "{answer}");
    tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

/// A client that gives up on a bind (here an HTTP/2 request cancelled
/// while the channel takes 400 ms) does not stop it: the bind records the
/// channel's answer, and the client's retry under the same key gets that
/// answer, not `409 idempotency_key_in_progress` for as long as the lease
/// runs (the clock here stands still, so it would never run out).
#[tokio::test]
async fn a_bind_whose_client_gives_up_runs_to_its_end() {
    let mut opts = Options::default();
    opts.mock.slow_after = std::time::Duration::from_millis(400);
    let (addr, stop, server) = serve_with_visa_in(cardbind_channels::MockMode::Slow, opts);
    let url = format!("http://{addr}/v1/users/u-gone/cards");
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let bind = |wait_ms| {
        client
            .post(&url)
            .header("Authorization", bearer("merchant", "service"))
            .header("Idempotency-Key", "k-gone")
            .json(&bind_body(VISA))
            .timeout(std::time::Duration::from_millis(wait_ms))
            .send()
    };
    let gave_up = bind(100).await.unwrap_err();
    assert!(gave_up.is_timeout(), "{gave_up:?}");
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let again = bind(5_000).await.unwrap();
    assert_eq!(again.status(), 201);
    let card: Value = again.json().await.unwrap();
    assert_eq!(card["status"], "pending_verification", "{card}");
    assert_eq!(card["next_action"]["type"], "otp", "{card}");
    let _ = stop.send(());
    tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// The requests a client abandoned still hold their connection's places
/// while they run (`server.max_requests_per_connection`, here 2): a
/// client that resets each HTTP/2 request it sends cannot leave more than
/// that many at work. Its next request on the connection waits until one
/// ends, then is answered; each abandoned bind ran to its end.
#[tokio::test]
async fn a_connection_waits_for_the_requests_its_client_abandoned() {
    use std::time::Duration;
    let mut opts = Options::default();
    opts.mock.slow_after = Duration::from_millis(1500);
    let limits = ConnectionLimits {
        max_requests_per_connection: 2,
        ..ConnectionLimits::default()
    };
    let (addr, stop, server) =
        serve_limited_with_visa_in(cardbind_channels::MockMode::Slow, opts, limits);
    // One HTTP/2 connection, made by the first request.
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let health = |wait: Duration| {
        client
            .get(format!("http://{addr}/healthz"))
            .timeout(wait)
            .send()
    };
    assert_eq!(health(Duration::from_secs(5)).await.unwrap().status(), 200);
    let bind = |user: &str, wait: Duration| {
        client
            .post(format!("http://{addr}/v1/users/{user}/cards"))
            .header("Authorization", bearer("merchant", "service"))
            .header("Idempotency-Key", format!("k-{user}"))
            .json(&bind_body(VISA))
            .timeout(wait)
            .send()
    };
    let started = std::time::Instant::now();
    let (a, b) = tokio::join!(
        bind("u-left-1", Duration::from_millis(100)),
        bind("u-left-2", Duration::from_millis(100))
    );
    assert!(a.unwrap_err().is_timeout() && b.unwrap_err().is_timeout());
    // Both places are taken by the abandoned binds (1.5 s at the channel).
    let waited = health(Duration::from_millis(700)).await;
    assert!(
        waited.as_ref().is_err_and(reqwest::Error::is_timeout),
        "{waited:?} after {:?}",
        started.elapsed()
    );
    // Once they end, the connection answers again.
    let answered = health(Duration::from_secs(10)).await.unwrap();
    assert_eq!(answered.status(), 200);
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
    for user in ["u-left-1", "u-left-2"] {
        let again = bind(user, Duration::from_secs(10)).await.unwrap();
        assert_eq!(again.status(), 201, "{user}");
        let card: Value = again.json().await.unwrap();
        assert_eq!(card["next_action"]["type"], "otp", "{user}: {card}");
    }
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// Every audit cursor the spec's pattern allows is answered (a link number
/// past what a store holds was a 503 before the pattern bounded it).
#[tokio::test]
async fn audit_cursors_at_the_edge_of_the_pattern_are_answered() {
    let app = spawn();
    for (after, status) in [
        ("999999999999999.999999999999999999.999999999.@system", 200),
        ("0.0.0.@system", 200),
        ("729.11977529033629061801.78.@system", 400),
        ("1.1.9999999999.alice", 400),
    ] {
        let resp = app
            .client
            .get(format!("/v1/audit/events?after={after}"))
            .header("Authorization", bearer("aud", "auditor"))
            .send()
            .await;
        assert_eq!(resp.0.status().as_u16(), status, "{after}");
    }
}
