//! The connection: an oversized body gets its 413 through a standard
//! client, a half-closed connection is still answered.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_gets_its_413_through_a_standard_client() {
    // reqwest writes the whole body before it reads the answer: when the
    // service answers 413 from Content-Length and closes the connection
    // without draining the body, the client sees a broken pipe or a reset
    // instead of the 413 envelope.
    let app = TestApp::spawn(|_| {}).await;
    let token = app.service_token();
    let body = {
        let mut b = TestCard::visa().body();
        b["holder_name"] = json!("A".repeat(10 * 1024 * 1024));
        b.to_string().into_bytes()
    };
    let mut failures = Vec::new();
    for i in 0..10 {
        let key = idem_key();
        match app
            .try_send(
                Method::POST,
                &format!("/v1/users/{}/cards", user_id("big")),
                Some(&token),
                &[("idempotency-key", &key)],
                Some((body.clone(), "application/json")),
            )
            .await
        {
            Ok(r) => {
                r.assert_error(413, "payload_too_large");
            }
            Err(e) => failures.push(format!("attempt {i}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "the 413 was lost {} times in 10: {failures:#?}",
        failures.len()
    );
}

/// A client may shut its write side once its request is sent (RFC 9112
/// 9.6): the request is still answered. (The connection layer dropped such
/// requests unanswered until it was told to support half-closed
/// connections.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_from_a_half_closed_connection_is_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn(|_| {}).await;
    let token = app.token("svc", cardbind_domain::Role::Service);
    let body = br#"{"card_number":"4111111111111111"}"#;
    let mut s = tokio::net::TcpStream::connect(app.running().addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /v1/users/{}/cards HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nIdempotency-Key: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        user_id("half"),
        idem_key(),
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("head");
    s.write_all(body).await.expect("body");
    s.shutdown().await.expect("half-close");
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        s.read_to_end(&mut answer),
    )
    .await
    .expect("answered in time")
    .expect("read");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    assert!(text.contains("invalid_request"), "{text}");
}
