//! Small helpers: a raw HTTP client for requests `reqwest` will not send,
//! HMAC, waiting for a fresh rate window, picking cards out of a list, and
//! reading every document of a MongoDB database.

use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::Response;

/// A request sent over a plain TCP connection the way a careful client
/// does it: the body is written while the response is read, writing stops
/// at the first error (the server may answer early and stop reading), and
/// whatever response arrived is parsed. `head` is the request line and
/// headers without the final blank line; `Content-Length` is added.
pub async fn raw_http(
    addr: std::net::SocketAddr,
    head: &str,
    body: Vec<u8>,
) -> Result<Response, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = Instant::now();
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut rd, mut wr) = stream.into_split();
    let head = format!(
        "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let writer = tokio::spawn(async move {
        if wr.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        for chunk in body.chunks(64 * 1024) {
            if wr.write_all(chunk).await.is_err() {
                return;
            }
        }
        let _ = wr.flush().await;
    });
    let mut buf = Vec::new();
    let mut tmp = vec![0u8; 64 * 1024];
    let read_err = loop {
        match tokio::time::timeout(Duration::from_secs(30), rd.read(&mut tmp)).await {
            Ok(Ok(0)) => break None,
            Ok(Ok(n)) => {
                buf.extend_from_slice(&tmp[..n]);
                if let Some(r) = parse_raw_response(&buf) {
                    writer.abort();
                    return Ok(Response {
                        elapsed: started.elapsed(),
                        ..r
                    });
                }
            }
            Ok(Err(e)) => break Some(e.to_string()),
            Err(_) => break Some("no response within 30 s".into()),
        }
    };
    writer.abort();
    parse_raw_response(&buf)
        .map(|r| Response {
            elapsed: started.elapsed(),
            ..r
        })
        .ok_or_else(|| {
            format!(
                "no complete HTTP response ({} bytes read; {})",
                buf.len(),
                read_err.unwrap_or_else(|| "closed".into())
            )
        })
}

/// A complete HTTP/1.1 response in `buf` (Content-Length or chunked).
fn parse_raw_response(buf: &[u8]) -> Option<Response> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let mut headers = HeaderMap::new();
    for l in lines {
        let (k, v) = l.split_once(':')?;
        let name = reqwest::header::HeaderName::from_bytes(k.trim().as_bytes()).ok()?;
        let value = reqwest::header::HeaderValue::from_str(v.trim()).ok()?;
        headers.append(name, value);
    }
    let rest = &buf[end + 4..];
    let body = if let Some(n) = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if rest.len() < n {
            return None;
        }
        rest[..n].to_vec()
    } else if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"))
    {
        let mut out = Vec::new();
        let mut i = 0;
        loop {
            let line_end = rest[i..].windows(2).position(|w| w == b"\r\n")? + i;
            let size = usize::from_str_radix(
                std::str::from_utf8(&rest[i..line_end])
                    .ok()?
                    .split(';')
                    .next()?
                    .trim(),
                16,
            )
            .ok()?;
            i = line_end + 2;
            if size == 0 {
                break;
            }
            if rest.len() < i + size + 2 {
                return None;
            }
            out.extend_from_slice(&rest[i..i + size]);
            i += size + 2;
        }
        out
    } else {
        return None;
    };
    Some(Response {
        status,
        headers,
        body,
        elapsed: Duration::ZERO,
    })
}

/// Hex HMAC-SHA256.
pub fn hmac_hex(key: &[u8], data: &[u8]) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    mac.update(data);
    hex::encode(mac.finalize().into_bytes())
}

/// Waits, if needed, so that the next minute-long rate window has at least
/// 15 s left (the limits count in fixed windows aligned to the minute).
pub async fn fresh_rate_window() {
    let now = time::OffsetDateTime::now_utc();
    let s = now.second();
    if s >= 45 {
        let wait = Duration::from_millis(u64::from(60 - s) * 1000 + 300);
        tokio::time::sleep(wait).await;
    }
}

/// The single card with `is_default = true` among `cards`, asserting at
/// most one.
pub fn the_default(cards: &[Value]) -> Option<String> {
    let defaults: Vec<&Value> = cards.iter().filter(|c| c["is_default"] == true).collect();
    assert!(defaults.len() <= 1, "more than one default: {defaults:?}");
    defaults
        .first()
        .map(|c| c["id"].as_str().expect("id").to_owned())
}

/// The card with `id` in `cards`.
pub fn find_card<'a>(cards: &'a [Value], id: &str) -> &'a Value {
    cards
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("card {id} not in list {cards:?}"))
}

/// Every document of every collection of the database `db` at `uri`, by
/// collection, collections in name order.
pub async fn mongo_documents(uri: &str, db: &str) -> Vec<(String, mongodb::bson::Document)> {
    use futures::TryStreamExt;
    use mongodb::bson::Document;
    let client = mongodb::Client::with_uri_str(uri)
        .await
        .unwrap_or_else(|e| panic!("mongodb client: {e}"));
    let db = client.database(db);
    let mut names = db
        .list_collection_names()
        .await
        .unwrap_or_else(|e| panic!("list collections: {e}"));
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let docs: Vec<Document> = db
            .collection::<Document>(&name)
            .find(Document::new())
            .await
            .unwrap_or_else(|e| panic!("find in {name}: {e}"))
            .try_collect()
            .await
            .unwrap_or_else(|e| panic!("read {name}: {e}"));
        out.extend(docs.into_iter().map(|d| (name.clone(), d)));
    }
    out
}
