//! Hostile requests at the HTTP edge: odd methods cannot grow the metrics,
//! absurd signature timestamps cannot panic, forged forwarding headers
//! cannot dodge the per-IP limit.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use poem::http::Method;
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
        // the same real address last.
        let card = {
            let partial = format!("4{:014}", 500_000 + i);
            let d = cardbind_domain::card::luhn_check_digit(&partial).unwrap();
            format!("{partial}{d}")
        };
        let resp = app
            .client
            .post(format!("/v1/users/ip-user-{i}/cards"))
            .header("Authorization", bearer("merchant", "service"))
            .header("Idempotency-Key", format!("k-ip-{i}"))
            .header("X-Forwarded-For", format!("198.51.100.{i}, 203.0.113.9"))
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
