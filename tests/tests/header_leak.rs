//! Card data a client writes into a header it controls — `X-Request-Id`,
//! `Idempotency-Key` — is not kept: a request id that could be a card,
//! resident id or phone number is replaced by a new one (it goes into
//! every log line and audit event of the request), and the store keeps an
//! idempotency key only as its keyed digest. Nor does it keep a plain
//! SHA-256 of the key or of the request (whose body holds the card number
//! and CVV): trying card numbers would find what went into one. Checked in
//! the files of the embedded store and in every MongoDB collection, and
//! through the API (the echoed id, the audit log, replays that still
//! work).
//!
//! The MongoDB case needs `CARDBIND_TEST_MONGODB_URI`: run under `bash
//! scripts/test-services.sh`.

// Test code: helpers outside #[test] fns fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cardbind::config::{Config, MockModeSetting};
use cardbind_tests::{mongo_documents, user_id, Brand, Response, Storage, TestApp, TestCard};
use reqwest::Method;
use sha2::{Digest, Sha256};

fn tweak(c: &mut Config) {
    c.channels.mock.mode = MockModeSetting::Instant;
    c.limits.binds_per_user_per_minute = 100;
}

/// `number` in groups of four joined by `sep`.
fn grouped(number: &str, sep: char) -> String {
    number
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(&sep.to_string())
}

async fn bind_with(
    app: &TestApp,
    user: &str,
    body: &serde_json::Value,
    headers: &[(&str, &str)],
) -> Response {
    app.send(
        Method::POST,
        &format!("/v1/users/{user}/cards"),
        Some(&app.service_token()),
        headers,
        Some((body.to_string().into_bytes(), "application/json")),
    )
    .await
}

/// What the hostile requests put into headers, to be looked for in the
/// store afterwards.
struct Sent {
    secrets: Vec<(String, String)>,
}

impl Sent {
    /// Fails when `stored` (every byte a store holds) has any of the card
    /// data sent, or lacks the client's sane request id (so the scan is
    /// known to see what the store keeps in clear).
    fn none_kept_in(&self, stored: &[u8], place: &str) {
        assert!(
            contains(stored, OWN_REQUEST_ID.as_bytes()),
            "the scan of {place} sees what the store keeps in clear (a client's sane request id)"
        );
        for (what, s) in &self.secrets {
            assert!(!contains(stored, s.as_bytes()), "{place} hold the {what}");
        }
    }
}

/// SHA-256 of `parts`, each prefixed with its length (8 bytes, big
/// endian): how an unkeyed digest of a request or key would be made.
fn plain_digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().into()
}

/// The caller scope of `TestApp::service_token`.
const SERVICE_SCOPE: &str = "service:merchant-backend";

/// A request id of the client's own, kept as sent.
const OWN_REQUEST_ID: &str = "order-2026-12-02:a7";

/// Binds two cards and sends a refused bind (the first card again: a
/// final refusal, stored like an answer), each with card data in its
/// request id and idempotency key; checks what the API answers.
async fn hostile_requests(app: &TestApp) -> Sent {
    let user = user_id("headers");
    let (a, b, c) = (
        TestCard::new(Brand::Visa),
        TestCard::new(Brand::Mastercard),
        TestCard::new(Brand::UnionPay),
    );
    let dashed = grouped(&b.number, '-');
    let spaced = grouped(&c.number, ' ');
    let cases: [(&serde_json::Value, &str, &str, u16); 3] = [
        (&a.body(), a.number.as_str(), a.number.as_str(), 201),
        (&b.body(), dashed.as_str(), b.id_number.as_str(), 201),
        (&a.body(), c.phone.as_str(), spaced.as_str(), 409),
    ];
    let mut request_ids = Vec::new();
    let mut digests = Vec::new();
    for (body, request_id, key, status) in cases {
        let path = format!("/v1/users/{user}/cards");
        let bytes = body.to_string().into_bytes();
        let of_request = plain_digest(&[b"POST", path.as_bytes(), &bytes]);
        digests.push(("plain SHA-256 of the request", hex::encode(of_request)));
        let of_key = plain_digest(&[SERVICE_SCOPE.as_bytes(), key.as_bytes()]);
        digests.push(("plain SHA-256 of the key", hex::encode(&of_key[..16])));
        let headers = [("x-request-id", request_id), ("idempotency-key", key)];
        let r = bind_with(app, &user, body, &headers).await;
        assert_eq!(r.status, status, "{}", r.describe());
        let echoed = r
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .expect("every response has a request id")
            .to_owned();
        assert_ne!(
            echoed, request_id,
            "the id that could be card data is replaced"
        );
        assert!(
            uuid::Uuid::parse_str(&echoed).is_ok(),
            "a new id in its place: {echoed}"
        );
        // The stored answer is found again under the same key: the store's
        // digest of a key works as the key did.
        let again = bind_with(app, &user, body, &headers).await;
        assert_eq!(again.status, status, "{}", again.describe());
        assert_eq!(
            again
                .headers
                .get("idempotent-replayed")
                .and_then(|v| v.to_str().ok()),
            Some("true"),
            "a replay of the stored answer: {}",
            again.describe()
        );
        assert_eq!(again.body, r.body, "the same answer, byte for byte");
        request_ids.push(echoed);
    }
    // A sane id of the client's own is kept, in the answer and the log.
    let own = OWN_REQUEST_ID;
    let d = TestCard::new(Brand::Jcb);
    let r = bind_with(
        app,
        &user,
        &d.body(),
        &[("x-request-id", own), ("idempotency-key", "k-own")],
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.describe());
    assert_eq!(
        r.headers.get("x-request-id").and_then(|v| v.to_str().ok()),
        Some(own)
    );

    let events = app
        .get(
            &format!("/v1/audit/events?user_id={user}"),
            &app.auditor_token(),
        )
        .await;
    assert_eq!(events.status, 200, "{}", events.describe());
    let text = events.text();
    assert!(
        text.contains(own),
        "the audit log keeps a client's sane id: {text}"
    );
    for id in &request_ids[..2] {
        assert!(
            text.contains(id.as_str()),
            "the audit log names the new id {id}"
        );
    }
    let mut secrets = Vec::new();
    for card in [&a, &b, &c] {
        for (what, s) in card.secrets() {
            secrets.push((what.to_owned(), s));
        }
        assert!(
            !text.contains(&card.number),
            "the audit log shows a card number"
        );
    }
    for s in [&dashed, &spaced] {
        assert!(!text.contains(s.as_str()), "the audit log shows {s}");
        secrets.push(("card number in groups".to_owned(), s.clone()));
    }
    for (what, d) in digests {
        secrets.push((what.to_owned(), d));
    }
    Sent { secrets }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_data_in_headers_is_not_kept_by_the_embedded_store() {
    let app = TestApp::spawn_on(Storage::Embedded, tweak)
        .await
        .expect("the embedded store never skips");
    let sent = hostile_requests(&app).await;
    let mut files = Vec::new();
    for e in std::fs::read_dir(app.data_dir())
        .expect("data dir")
        .flatten()
    {
        if e.file_name()
            .to_string_lossy()
            .starts_with("cardbind.sqlite3")
        {
            files.extend(std::fs::read(e.path()).expect("a store file"));
        }
    }
    sent.none_kept_in(&files, "the embedded store's files");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_data_in_headers_is_not_kept_by_mongodb() {
    let Some(app) = TestApp::spawn_on(Storage::Mongo, tweak).await else {
        return;
    };
    let sent = hostile_requests(&app).await;
    let mut all = Vec::new();
    for (_, d) in mongo_documents(&app.config.storage.uri, &app.config.storage.database).await {
        d.to_writer(&mut all).expect("bson bytes");
    }
    sent.none_kept_in(&all, "MongoDB's documents");
}
