//! A burst of hostile traffic, all at once for `hold`: malformed requests
//! to real operations (their statuses must be declared), oversized heads
//! (refused at the protocol level), slow-loris connections (a head trickled
//! byte by byte), trickled bodies, and a flood of idle connections.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::workload::Api;

/// How much of each kind.
#[derive(Clone, Copy, Debug)]
pub struct Burst {
    pub malformed: usize,
    pub slow_loris: usize,
    pub slow_bodies: usize,
    pub flood: usize,
    pub hold: Duration,
}

/// What the burst saw.
#[derive(Clone, Debug, Default)]
pub struct BurstReport {
    /// Malformed requests sent to operations (their statuses are checked by
    /// the recorder like any other answer).
    pub malformed_sent: usize,
    /// Answers below the operations (unparseable heads): status → count,
    /// `closed` when the server closed without an answer.
    pub protocol: BTreeMap<String, usize>,
    /// Protocol-level answers other than 400/408/413/414/431/closed.
    pub protocol_unexpected: usize,
    /// Longest a slow-loris connection was kept open, milliseconds.
    pub slow_loris_longest_ms: u64,
    /// Slow-loris connections still open when the burst ended.
    pub slow_loris_open_at_end: usize,
    /// Trickled bodies: status → count.
    pub slow_bodies: BTreeMap<String, usize>,
    /// Flood connections opened, and closed by the server before the end.
    pub flood_opened: usize,
    pub flood_closed_by_server: usize,
}

fn bodies() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    vec![
        ("not json", b"card_number=4111".to_vec(), "application/json"),
        (
            "truncated",
            br#"{"card_number":"4111"#.to_vec(),
            "application/json",
        ),
        ("empty", Vec::new(), "application/json"),
        (
            "wrong types",
            br#"{"card_number":4111,"expiry_month":"x"}"#.to_vec(),
            "application/json",
        ),
        ("deep nesting", deep.into_bytes(), "application/json"),
        (
            "invalid utf-8",
            vec![b'{', b'"', 0xff, 0xfe, b'"', b'}'],
            "application/json",
        ),
        ("huge body", vec![b' '; 300 * 1024], "application/json"),
        ("form", b"a=b".to_vec(), "application/x-www-form-urlencoded"),
        ("null", b"null".to_vec(), "application/json"),
        ("array", b"[1,2,3]".to_vec(), "application/json"),
    ]
}

/// Malformed requests to real operations, recorded (and so checked against
/// the spec) like the workload's.
async fn malformed(api: Arc<Api>, phase: usize, n: usize) -> usize {
    let bodies = bodies();
    let mut sent = 0;
    for i in 0..n {
        let (_, body, ct) = &bodies[i % bodies.len()];
        let user = format!("hostile-{}", i % 7);
        let (method, path, token) = match i % 6 {
            0 | 1 => (
                reqwest::Method::POST,
                format!("/v1/users/{user}/cards"),
                true,
            ),
            2 => (
                reqwest::Method::POST,
                format!("/v1/users/{user}/cards/card_x{i}/verify"),
                true,
            ),
            3 => (
                reqwest::Method::POST,
                format!("/v1/users/{user}/cards"),
                false,
            ),
            4 => (
                reqwest::Method::GET,
                format!("/v1/users/{user}/cards?limit=-{i}&after=%ff%00"),
                true,
            ),
            _ => (
                reqwest::Method::PUT,
                format!("/v1/users/{user}/cards/..%2f..%2fadmin/default"),
                true,
            ),
        };
        let at_ms = api.rec.now_ms();
        let started = Instant::now();
        let mut rb = api
            .http
            .request(method.clone(), format!("{}{path}", api.base))
            .header("content-type", *ct)
            .header("Idempotency-Key", format!("hostile-{i}"))
            .body(body.clone());
        rb = if token {
            rb.bearer_auth(&api.token)
        } else {
            rb.bearer_auth("not-a-token")
        };
        let (status, code) = match rb.send().await {
            Ok(r) => {
                let s = r.status().as_u16();
                let v: serde_json::Value =
                    serde_json::from_slice(&r.bytes().await.unwrap_or_default())
                        .unwrap_or(serde_json::Value::Null);
                (Some(s), v["error"]["code"].as_str().map(str::to_owned))
            }
            Err(_) => (None, None),
        };
        api.rec.record(
            phase,
            method.as_str(),
            &path,
            at_ms,
            started.elapsed(),
            status,
            code.as_deref(),
        );
        sent += 1;
    }
    sent
}

/// Sends `head` raw and reads the answer's status (or `closed`).
async fn raw_status(addr: SocketAddr, head: Vec<u8>) -> String {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return "connect failed".into();
    };
    let _ = s.write_all(&head).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), async {
        let mut tmp = [0u8; 4096];
        loop {
            match s.read(&mut tmp).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.extend_from_slice(&tmp[..n]);
                    if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace()
        .nth(1)
        .filter(|s| s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_owned)
        .unwrap_or_else(|| "closed".into())
}

/// Heads that never reach an operation.
async fn protocol_level(addr: SocketAddr) -> Vec<String> {
    let big = |n: usize| {
        format!(
            "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
            "h".repeat(n)
        )
        .into_bytes()
    };
    let many: String = (0..500).map(|i| format!("X-H{i}: v\r\n")).collect();
    let heads = vec![
        big(64 * 1024),
        big(1024 * 1024),
        format!("GET /healthz HTTP/1.1\r\nHost: t\r\n{many}\r\n").into_bytes(),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n".to_vec(),
        b"GET /healthz HTTP/9.9\r\nHost: t\r\n\r\n".to_vec(),
        b"GET\r\n\r\n".to_vec(),
        format!(
            "GET /{} HTTP/1.1\r\nHost: t\r\n\r\n",
            "a".repeat(100 * 1024)
        )
        .into_bytes(),
    ];
    let mut out = Vec::new();
    for h in heads {
        out.push(raw_status(addr, h).await);
    }
    out
}

/// A connection trickling a head; resolves when the server closes it (or
/// at `until`), with how long it was open and whether the server closed it.
async fn slow_loris(addr: SocketAddr, until: Instant) -> Option<(Duration, bool)> {
    let started = Instant::now();
    let s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (mut rd, mut wr) = s.into_split();
    let writer = async move {
        if wr
            .write_all(b"POST /v1/users/u/cards HTTP/1.1\r\nHost: t\r\nX-Slow: ")
            .await
            .is_err()
        {
            return;
        }
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if wr.write_all(b"z").await.is_err() {
                return;
            }
        }
    };
    let reader = async move {
        let mut buf = [0u8; 256];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let closed = tokio::select! {
        _ = writer => true,
        _ = reader => true,
        _ = tokio::time::sleep_until(until.into()) => false,
    };
    Some((started.elapsed(), closed))
}

/// A complete head, then a body one byte every 500 ms; the status it gets.
async fn slow_body(api: Arc<Api>, addr: SocketAddr, until: Instant) -> String {
    let Ok(s) = tokio::net::TcpStream::connect(addr).await else {
        return "connect failed".into();
    };
    let (mut rd, mut wr) = s.into_split();
    let head = format!(
        "POST /v1/users/slow-body/cards HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nIdempotency-Key: slow-{}\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n{{",
        api.token,
        uuid::Uuid::new_v4()
    );
    let writer = tokio::spawn(async move {
        if wr.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if wr.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let mut buf = Vec::new();
    let _ = tokio::time::timeout_at(until.into(), async {
        let mut tmp = [0u8; 4096];
        loop {
            match rd.read(&mut tmp).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.extend_from_slice(&tmp[..n]);
                    if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    writer.abort();
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .map(str::to_owned)
        .unwrap_or_else(|| "no answer".into());
    // The answer is to `bindCard`: check it like any other.
    if let Ok(s) = status.parse::<u16>() {
        let code = text
            .split("\"code\":\"")
            .nth(1)
            .and_then(|t| t.split('"').next())
            .map(str::to_owned);
        let phase = api.rec.phase();
        api.rec.record(
            phase,
            "POST",
            "/v1/users/slow-body/cards",
            api.rec.now_ms(),
            Duration::ZERO,
            Some(s),
            code.as_deref(),
        );
    }
    status
}

/// Opens up to `n` idle connections (sending nothing) and holds them until
/// `until`; returns how many opened and how many the server closed.
async fn flood(addr: SocketAddr, n: usize, until: Instant) -> (usize, usize) {
    use futures::StreamExt;
    let conns: Vec<tokio::net::TcpStream> = futures::stream::iter(0..n)
        .map(|_| async move {
            tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr))
                .await
                .ok()
                .and_then(Result::ok)
        })
        .buffer_unordered(256)
        .filter_map(|c| async move { c })
        .collect()
        .await;
    let opened = conns.len();
    tokio::time::sleep_until(until.into()).await;
    // Closed by the server: a read returns at once (EOF or an error);
    // an open, silent connection would block.
    let mut closed = 0;
    for c in &conns {
        let mut b = [0u8; 1];
        match c.try_read(&mut b) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            _ => closed += 1,
        }
    }
    drop(conns);
    (opened, closed)
}

/// Runs the whole burst for `b.hold`.
pub async fn run(api: Arc<Api>, addr: SocketAddr, b: Burst) -> BurstReport {
    let until = Instant::now() + b.hold;
    let phase = api.rec.phase();
    let mal = tokio::spawn(malformed(api.clone(), phase, b.malformed));
    let proto = tokio::spawn(protocol_level(addr));
    let lorises: Vec<_> = (0..b.slow_loris)
        .map(|_| tokio::spawn(slow_loris(addr, until)))
        .collect();
    let bodies: Vec<_> = (0..b.slow_bodies)
        .map(|_| tokio::spawn(slow_body(api.clone(), addr, until)))
        .collect();
    let fl = tokio::spawn(flood(addr, b.flood, until));

    let mut r = BurstReport {
        malformed_sent: mal.await.unwrap_or(0),
        ..BurstReport::default()
    };
    for s in proto.await.unwrap_or_default() {
        if !["400", "408", "413", "414", "431", "closed"].contains(&s.as_str()) {
            r.protocol_unexpected += 1;
        }
        *r.protocol.entry(s).or_default() += 1;
    }
    for l in lorises {
        if let Ok(Some((held, closed))) = l.await {
            r.slow_loris_longest_ms = r
                .slow_loris_longest_ms
                .max(u64::try_from(held.as_millis()).unwrap_or(u64::MAX));
            if !closed {
                r.slow_loris_open_at_end += 1;
            }
        }
    }
    for bd in bodies {
        if let Ok(s) = bd.await {
            *r.slow_bodies.entry(s).or_default() += 1;
        }
    }
    if let Ok((opened, closed)) = fl.await {
        r.flood_opened = opened;
        r.flood_closed_by_server = closed;
    }
    r
}
