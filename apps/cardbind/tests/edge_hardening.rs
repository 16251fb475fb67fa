//! Hostile requests at the HTTP edge: odd methods cannot grow the metrics,
//! absurd signature timestamps cannot panic, forged forwarding headers
//! cannot dodge the per-IP limit; slow-loris connections, trickled bodies
//! and oversized heads are cut off by the connection layer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support;

use poem::http::{Method, StatusCode};
use support::*;

#[tokio::test]
async fn unknown_methods_share_one_metric_label() {
    let app = spawn();
    for i in 0..20 {
        let m = Method::from_bytes(format!("X{i:04}").as_bytes()).unwrap();
        let _ = app.client.request(m, "/healthz").send().await;
    }
    let text = String::from_utf8(bytes(app.client.get("/metrics").send().await).await).unwrap();
    assert!(!text.contains("method=\"X00"), "{text}");
    assert!(text.contains("method=\"other\""), "{text}");
}

#[tokio::test]
async fn an_absurd_signature_time_is_refused_not_a_panic() {
    let app = spawn();
    for t in [i64::MIN.to_string(), i64::MAX.to_string(), "-1".into()] {
        let resp = app
            .client
            .get("/v1/users/alice/cards")
            .header("Authorization", bearer(SIGNING_CLIENT, "service"))
            .header(
                "X-Cardbind-Signature",
                format!("t={t},n=nonce-0001,s={}", "0".repeat(64)),
            )
            .send()
            .await;
        assert_error(resp, 401, "invalid_signature").await;
    }
}

#[tokio::test]
async fn forged_forwarded_for_entries_do_not_dodge_the_ip_limit() {
    let mut opts = Options::default();
    opts.http.trust_forwarded_for = true;
    let app = spawn_with(opts);
    let mut limited = 0;
    for i in 0..35u32 {
        // Each request forges a different first entry; our proxy appended
        // the same real address last: to the client's line, or (every
        // other request) as a header line of its own after the client's.
        let card = {
            let partial = format!("4{:014}", 500_000 + i);
            let d = cardbind_domain::card::luhn_check_digit(&partial).unwrap();
            format!("{partial}{d}")
        };
        let req = app
            .client
            .post(format!("/v1/users/ip-user-{i}/cards"))
            .header("Authorization", bearer("merchant", "service"))
            .header("Idempotency-Key", format!("k-ip-{i}"));
        let req = if i % 2 == 0 {
            req.header("X-Forwarded-For", format!("198.51.100.{i}, 203.0.113.9"))
        } else {
            req.header("X-Forwarded-For", format!("198.51.100.{i}"))
                .header("X-Forwarded-For", "203.0.113.9")
        };
        let resp = req
            .content_type("application/json")
            .body(bind_body(&card).to_string())
            .send()
            .await;
        if resp.0.status().as_u16() == 429 {
            let v = json_of(resp).await;
            assert_eq!(v["error"]["code"], "ip_rate_limited", "{v}");
            limited += 1;
        }
    }
    // The default limit is 30 a minute per IP.
    assert_eq!(limited, 5);
}

#[tokio::test]
async fn a_signing_client_must_sign_whatever_role_its_token_names() {
    let app = spawn();
    for role in ["service", "admin", "auditor"] {
        let resp = app
            .client
            .get("/v1/admin/reviews")
            .header("Authorization", bearer(SIGNING_CLIENT, role))
            .send()
            .await;
        assert_error(resp, 401, "invalid_signature").await;
    }
}

// ---------------------------------------------------------------------------
// The connection layer, against the real binary (a subprocess, so that its
// file-descriptor limit can be set as an operator's would be).

mod binary {
    use std::process::Stdio;
    use std::time::Duration;

    use tokio::io::{AsyncBufReadExt, BufReader};

    pub struct Service {
        pub addr: std::net::SocketAddr,
        _child: tokio::process::Child,
        _dir: tempfile::TempDir,
    }

    /// Starts `cardbind serve` with at most `nofile` open files and the
    /// given `CARDBIND__…` settings; returns once it listens.
    pub async fn start(nofile: u32, settings: &[(&str, &str)]) -> Service {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = tokio::process::Command::new("bash");
        cmd.arg("-c")
            .arg(format!("ulimit -n {nofile} && exec \"$0\" serve"))
            .arg(env!("CARGO_BIN_EXE_cardbind"));
        for (k, _) in std::env::vars() {
            if k.starts_with("CARDBIND__") || k == "CARDBIND_CONFIG" {
                cmd.env_remove(k);
            }
        }
        cmd.env("CARDBIND__SERVER__ADDRESS", "127.0.0.1:0")
            .env("CARDBIND__SERVER__DATA_DIR", dir.path())
            .env("CARDBIND__SERVER__PURGE_INTERVAL_SECONDS", "0")
            .env("CARDBIND__LOG__FILTER", "warn");
        for (k, v) in settings {
            cmd.env(format!("CARDBIND__SERVER__{}", k.to_ascii_uppercase()), v);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the service prints its address within 60 s")
            .unwrap()
            .expect("a line on stdout");
        let addr = line
            .rsplit("://")
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no address in {line:?}"));
        Service {
            addr,
            _child: child,
            _dir: dir,
        }
    }

    /// Sends `bytes` on a fresh connection and returns what the service
    /// answered until it closed the connection (or 5 s went by), as text.
    pub async fn exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(bytes).await;
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// `GET /healthz` on a fresh connection; the status and how long it
    /// took (an error past 5 s).
    pub async fn healthz(addr: std::net::SocketAddr) -> Result<(u16, Duration), String> {
        tokio::time::timeout(Duration::from_secs(5), healthz_once(addr))
            .await
            .map_err(|_| "no answer within 5 s".to_owned())?
    }

    async fn healthz_once(addr: std::net::SocketAddr) -> Result<(u16, Duration), String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let started = std::time::Instant::now();
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&buf);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no status line in {:?}", &text[..text.len().min(80)]))?;
        Ok((status, started.elapsed()))
    }
}

/// A connection that sends a request head one byte at a time and never
/// finishes it. Resolves when the server closes it, with how long it was
/// kept open.
async fn slow_loris(addr: std::net::SocketAddr) -> Option<std::time::Duration> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = std::time::Instant::now();
    let s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (mut rd, mut wr) = s.into_split();
    let writer = async move {
        if wr
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ")
            .await
            .is_err()
        {
            return;
        }
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            if wr.write_all(b"a").await.is_err() {
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
    tokio::select! {
        _ = writer => {}
        _ = reader => {}
    }
    Some(started.elapsed())
}

/// More slow-loris connections than the process has file descriptors for:
/// without a connection limit below the descriptor limit the server runs
/// out of descriptors and nobody else gets in; without a header deadline
/// the slow connections are held for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_connections_do_not_keep_other_clients_out() {
    let svc = binary::start(
        256,
        &[
            ("max_connections", "128"),
            // Well above the requests' bound below: a request kept out
            // until the slow connections time out would take 7 s.
            ("header_read_timeout_ms", "8000"),
        ],
    )
    .await;
    let addr = svc.addr;
    assert_eq!(binary::healthz(addr).await.unwrap().0, 200);

    let lorises: Vec<_> = (0..300).map(|_| tokio::spawn(slow_loris(addr))).collect();
    // Let them connect and start trickling.
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    for i in 0..10 {
        let (status, took) = binary::healthz(addr)
            .await
            .unwrap_or_else(|e| panic!("request {i} during the slow-loris: {e}"));
        assert_eq!(status, 200, "request {i}");
        // Kept out, it would wait for a slot: the 8 s header deadline.
        // (The bound leaves a loaded machine its time.)
        assert!(
            took < std::time::Duration::from_millis(2500),
            "request {i} took {took:?} while slow connections were held"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Every slow connection is closed: evicted, or at the header deadline.
    let mut longest = std::time::Duration::ZERO;
    for l in lorises {
        let held = tokio::time::timeout(std::time::Duration::from_secs(15), l)
            .await
            .expect("a slow-loris connection was still open 15 s later")
            .unwrap();
        if let Some(h) = held {
            longest = longest.max(h);
        }
    }
    assert!(
        longest < std::time::Duration::from_millis(8000 + 4000),
        "a slow connection was held {longest:?} (header deadline 8 s)"
    );
}

/// The first bytes of the service's answer on a raw connection, as text,
/// waiting at most `secs` seconds.
async fn answer_within(rd: &mut tokio::net::tcp::OwnedReadHalf, secs: u64) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(secs), rd.read(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("no answer within {secs} s"))
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// A body trickled after a complete head is cut off at the body deadline
/// with the error envelope (400, declared by every operation with a body).
#[tokio::test]
async fn a_trickled_body_is_refused_at_the_body_deadline() {
    use tokio::io::AsyncWriteExt;
    let svc = binary::start(1024, &[("body_read_timeout_ms", "1000")]).await;
    let s = tokio::net::TcpStream::connect(svc.addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let started = std::time::Instant::now();
    wr.write_all(
        b"POST /v1/users/alice/cards HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{",
    )
    .await
    .unwrap();
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            if wr.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let text = answer_within(&mut rd, 5).await;
    trickle.abort();
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("invalid_request"), "{text}");
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(900) && took < std::time::Duration::from_secs(4),
        "answered after {took:?} (deadline 1 s)"
    );
}

/// A body declared larger than the limit that never comes is a 413 soon
/// after the head, not a 400 at the body deadline (30 s by default).
#[tokio::test]
async fn a_declared_oversized_body_that_never_comes_is_413_at_once() {
    use tokio::io::AsyncWriteExt;
    let svc = binary::start(1024, &[]).await;
    let s = tokio::net::TcpStream::connect(svc.addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let started = std::time::Instant::now();
    wr.write_all(
        b"POST /v1/users/alice/cards HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\n\r\n{}",
    )
    .await
    .unwrap();
    let text = answer_within(&mut rd, 10).await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("payload_too_large"), "{text}");
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(5),
        "answered after {took:?}"
    );
    drop(wr);
}

/// A client that sends a body declared too large at a steady pace, and
/// reads only once it has written it all (as most do), gets the 413, not
/// a broken pipe: the service reads and throws the body away while it
/// keeps coming.
#[tokio::test]
async fn a_declared_oversized_body_sent_slowly_still_gets_its_413() {
    use tokio::io::AsyncWriteExt;
    let svc = binary::start(1024, &[]).await;
    let s = tokio::net::TcpStream::connect(svc.addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let (chunks, size) = (100usize, 20_000usize);
    let head = format!(
        "POST /v1/users/alice/cards HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        chunks * size
    );
    wr.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b' '; size];
    for i in 0..chunks {
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        if let Err(e) = wr.write_all(&chunk).await {
            panic!("write {i} of {chunks} failed: {e}");
        }
    }
    let text = answer_within(&mut rd, 10).await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
}

/// A request head above `server.max_header_bytes` is refused with 431
/// (hyper's default would accept about 400 KiB).
#[tokio::test]
async fn an_oversized_request_head_is_refused() {
    let svc = binary::start(1024, &[]).await;
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "b".repeat(32 * 1024)
    );
    let text = binary::exchange(svc.addr, head.as_bytes()).await;
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    // A head within the limit is served.
    assert_eq!(binary::healthz(svc.addr).await.unwrap().0, 200);
}

/// `GET` operations declare no 413: a body sent with one is not read, so a
/// huge one cannot turn into an undeclared status (the fault harness found
/// `listCards` answering 413).
#[tokio::test]
async fn a_body_on_a_get_is_ignored_not_refused() {
    let app = spawn();
    let resp = app
        .client
        .get("/v1/users/alice/cards")
        .header("Authorization", bearer("merchant", "service"))
        .body(vec![b' '; 300 * 1024])
        .send()
        .await;
    resp.assert_status_is_ok();
}

#[tokio::test]
async fn a_path_parameter_that_is_not_utf8_is_refused_as_that_parameter() {
    let app = spawn();
    // `%FF` and `%C3%28` decode to no UTF-8 text (the router refuses them
    // before any operation); `-x` is ASCII the rule refuses. The answer is
    // the same: that parameter's code, named.
    for (method, template) in [
        (Method::GET, "/v1/users/{}/cards"),
        (Method::GET, "/v1/users/alice/cards/{}"),
        (Method::GET, "/v1/bins/{}"),
        (Method::POST, "/v1/channels/{}/notify"),
    ] {
        let answer = |v: &str| {
            app.client
                .request(method.clone(), template.replace("{}", v))
                .header("Authorization", bearer("m", "service"))
                .send()
        };
        let (status, like) = {
            let resp = answer("-x").await;
            (resp.0.status(), json_of(resp).await)
        };
        assert!(status.is_client_error(), "{template}: {status}");
        for bad in ["%FF", "%C3%28"] {
            let resp = answer(bad).await;
            assert_eq!(resp.0.status(), status, "{template} {bad}");
            let v = json_of(resp).await;
            assert_eq!(
                v["error"]["code"], like["error"]["code"],
                "{template} {bad}: {v}"
            );
            assert_eq!(
                v["error"]["field"], like["error"]["field"],
                "{template} {bad}: {v}"
            );
            assert!(v["error"]["field"].is_string(), "{template} {bad}: {v}");
        }
    }
}

/// An HTTP/1.1 request without a `Host` header, or with two, is `400`
/// naming `Host` (RFC 9112 3.2), before any token is looked at; HTTP/1.0,
/// which has no `Host`, and a request with one are served.
#[tokio::test]
async fn an_http11_request_names_its_host_once() {
    let svc = binary::start(1024, &[]).await;
    let send = |head: &'static str| binary::exchange(svc.addr, head.as_bytes());
    for head in [
        "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
        "POST /v1/users/alice/cards HTTP/1.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    ] {
        let text = send(head).await;
        assert!(text.starts_with("HTTP/1.1 400"), "{head:?}: {text}");
        assert!(text.contains("\"field\":\"Host\""), "{head:?}: {text}");
        assert!(text.contains("invalid_request"), "{head:?}: {text}");
    }
    for head in [
        "GET /healthz HTTP/1.0\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    ] {
        let text = send(head).await;
        assert!(
            text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200"),
            "{head:?}: {text}"
        );
    }
}

/// A body sent with a `Content-Encoding` is refused naming that header:
/// the service decodes none, and a compressed body must not fail as
/// malformed JSON (or a signature that does not verify). `identity` is
/// no coding at all, and a `GET` carries no body to decode.
#[tokio::test]
async fn a_content_encoding_is_refused_by_name() {
    let app = spawn();
    let body = r#"{"card_number":"4111111111111111"}"#;
    let bind_coded = |coding: &str| {
        app.client
            .post("/v1/users/alice/cards")
            .header("Authorization", bearer("merchant", "service"))
            .header("Idempotency-Key", format!("ce-{coding}"))
            .header("Content-Type", "application/json")
            .header("Content-Encoding", coding)
            .body(body)
            .send()
    };
    for coding in ["gzip", "br, gzip", "GZIP", ""] {
        let resp = bind_coded(coding).await;
        resp.assert_status(StatusCode::BAD_REQUEST);
        let v = json_of(resp).await;
        assert_eq!(v["error"]["code"], "invalid_request", "{coding}: {v}");
        assert_eq!(v["error"]["field"], "Content-Encoding", "{coding}: {v}");
    }
    // With `identity` the same body reaches the operation (which refuses
    // it for what it is: a card with no expiry).
    let v = json_of(bind_coded("Identity").await).await;
    assert_ne!(v["error"]["field"], "Content-Encoding", "{v}");
    let resp = app
        .client
        .get("/v1/users/alice/cards")
        .header("Authorization", bearer("merchant", "service"))
        .header("Content-Encoding", "gzip")
        .send()
        .await;
    resp.assert_status_is_ok();
}

/// A body framed with a transfer coding besides `chunked` is `400` naming
/// `Transfer-Encoding`: the connection layer would take the chunks and
/// hand the still-compressed bytes on as the body. `chunked` alone is
/// framing the service reads (that request goes on to ask for a token).
#[tokio::test]
async fn a_transfer_coding_other_than_chunked_is_refused() {
    let svc = binary::start(1024, &[]).await;
    let send = |coding: &'static str| async move {
        let head = format!(
            "POST /v1/users/alice/cards HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: {coding}\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n"
        );
        binary::exchange(svc.addr, head.as_bytes()).await
    };
    for coding in ["gzip, chunked", "deflate,chunked"] {
        let text = send(coding).await;
        assert!(text.starts_with("HTTP/1.1 400"), "{coding}: {text}");
        assert!(
            text.contains("\"field\":\"Transfer-Encoding\""),
            "{coding}: {text}"
        );
    }
    let text = send("chunked").await;
    assert!(text.starts_with("HTTP/1.1 401"), "chunked: {text}");
    // A GET's body is not read: the probes answer as their spec declares.
    let probe = binary::exchange(
        svc.addr,
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert!(probe.starts_with("HTTP/1.1 200"), "{probe}");
}
