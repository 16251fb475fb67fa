//! Velocity limits against card testing, through the API: one card tried
//! on many accounts (`card_velocity_exceeded`), many accounts from one IP
//! (`ip_rate_limited`), and the `cardbind_rate_limited_total{rule}` metric
//! counting each hit without naming a card, a user or an IP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support;

use poem::http::StatusCode;
use support::*;

const CARD: &str = "4111111111111111";

/// A Luhn-valid Visa number derived from `n`.
fn visa(n: u64) -> String {
    let body = format!("4{:014}", 10_000_000 + n);
    let digits: Vec<u32> = body.chars().map(|c| c.to_digit(10).unwrap()).collect();
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    format!("{body}{}", (10 - sum % 10) % 10)
}

async fn bind_from(app: &TestApp, user: &str, card: &str, ip: &str) -> poem::test::TestResponse {
    app.client
        .post(format!("/v1/users/{user}/cards"))
        .header("Authorization", bearer("merchant", "service"))
        .header("Idempotency-Key", format!("k-{user}-{card}"))
        .header("X-Forwarded-For", ip)
        .content_type("application/json")
        .body(bind_body(card).to_string())
        .send()
        .await
}

async fn metrics(app: &TestApp) -> String {
    String::from_utf8(bytes(app.client.get("/metrics").send().await).await).unwrap()
}

fn counter(text: &str, rule: &str) -> u64 {
    let prefix = format!("cardbind_rate_limited_total{{rule=\"{rule}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
}

fn trusting_proxy() -> TestApp {
    let mut opts = Options::default();
    opts.http.trust_forwarded_for = true;
    spawn_with(opts)
}

#[test]
fn the_card_generator_makes_valid_distinct_numbers() {
    let a = cardbind_domain::CardNumber::parse(&visa(1)).unwrap();
    let b = cardbind_domain::CardNumber::parse(&visa(2)).unwrap();
    assert_ne!(a.last4(), b.last4());
}

#[tokio::test]
async fn one_card_on_a_sixth_account_within_an_hour_is_card_velocity_exceeded() {
    let app = trusting_proxy();
    // Rate windows are fixed clock windows (this rule: clock hours): start
    // one second into an hour so that the steps below stay inside it.
    app.clock
        .set_ms(system_now_ms() / 3_600_000 * 3_600_000 + 1000);
    let before = metrics(&app).await;
    assert_eq!(counter(&before, "card"), 0);
    for i in 0..5 {
        // different users, different IPs: only the card is common
        bind_from(&app, &format!("user-{i}"), CARD, &format!("203.0.113.{i}"))
            .await
            .assert_status(StatusCode::CREATED);
    }
    let resp = bind_from(&app, "user-5", CARD, "203.0.113.5").await;
    let retry = resp.0.headers().get("Retry-After").cloned();
    let v = assert_error(resp, 429, "card_velocity_exceeded").await;
    assert!(!v.to_string().contains(CARD), "{v}");
    let retry: u64 = retry.unwrap().to_str().unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry), "{retry}");

    // another card for that user is fine: the rule is about the card
    bind_from(&app, "user-5", &visa(77), "203.0.113.5")
        .await
        .assert_status(StatusCode::CREATED);
    // within the hour it stays refused; after it, the card may be bound
    app.clock.advance_seconds(30 * 60);
    assert_error(
        bind_from(&app, "user-6", CARD, "203.0.113.6").await,
        429,
        "card_velocity_exceeded",
    )
    .await;
    app.clock.advance_seconds(31 * 60);
    bind_from(&app, "user-6", CARD, "203.0.113.6")
        .await
        .assert_status(StatusCode::CREATED);

    let text = metrics(&app).await;
    assert_eq!(counter(&text, "card"), 2);
    assert_eq!(counter(&text, "ip"), 0);
    assert_eq!(counter(&text, "user"), 0);
    assert!(
        !text.contains(CARD) && !text.contains("user-5") && !text.contains("203.0.113"),
        "the metric names no card, user or IP"
    );
    assert!(text.contains(r#"cardbind_binds_total{outcome="card_velocity_exceeded"} 2"#));

    // and the refusals are in the audit log, without the card
    let events = json_of(
        app.client
            .get("/v1/audit/events?user_id=user-5&action=binding.create")
            .header("Authorization", bearer("aud", "auditor"))
            .send()
            .await,
    )
    .await;
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["outcome"] == "card_velocity_exceeded"),
        "{events}"
    );
    assert!(!events.to_string().contains(CARD));
}

#[tokio::test]
async fn many_accounts_from_one_ip_are_ip_rate_limited() {
    let app = trusting_proxy();
    let ip = "198.51.100.9";
    // the default rule: 30 bind attempts a minute from one IP
    for i in 0..30 {
        bind_from(&app, &format!("acct-{i}"), &visa(i), ip)
            .await
            .assert_status(StatusCode::CREATED);
    }
    let resp = bind_from(&app, "acct-30", &visa(30), ip).await;
    assert!(resp.0.headers().get("Retry-After").is_some());
    assert_error(resp, 429, "ip_rate_limited").await;
    // another IP is not held back
    bind_from(&app, "acct-31", &visa(31), "198.51.100.10")
        .await
        .assert_status(StatusCode::CREATED);
    // the next minute, the IP may bind again
    app.clock.advance_seconds(61);
    bind_from(&app, "acct-30", &visa(30), ip)
        .await
        .assert_status(StatusCode::CREATED);

    let text = metrics(&app).await;
    assert_eq!(counter(&text, "ip"), 1);
    assert_eq!(counter(&text, "card"), 0);
    assert!(!text.contains("198.51.100"), "no IP in metrics");
}

/// A client with an IPv6 /64 counts as one address whichever of its
/// addresses each bind comes from (one subscriber holds a /64 or more);
/// another /64 is not held back, and the consent keeps the address as
/// sent.
#[tokio::test]
async fn binds_from_one_ipv6_64_share_one_limit() {
    let app = trusting_proxy();
    for i in 0..30 {
        bind_from(
            &app,
            &format!("v6-{i}"),
            &visa(200 + i),
            &format!("2001:db8:7:9::{:x}", i + 1),
        )
        .await
        .assert_status(StatusCode::CREATED);
    }
    let resp = bind_from(&app, "v6-30", &visa(230), "2001:db8:7:9:ffff::1").await;
    assert_error(resp, 429, "ip_rate_limited").await;
    let other = bind_from(&app, "v6-31", &visa(231), "2001:db8:7:a::1").await;
    other.assert_status(StatusCode::CREATED);
    let v = json_of(other).await;
    let consents = json_of(
        app.client
            .get("/v1/consents?user_id=v6-31")
            .header("Authorization", bearer("auditor", "auditor"))
            .send()
            .await,
    )
    .await;
    assert!(
        consents.to_string().contains("2001:db8:7:a::1"),
        "the consent keeps the address as sent: {consents} ({v})"
    );
}

#[tokio::test]
async fn the_per_user_rule_is_counted_too() {
    let app = spawn();
    for i in 0..3 {
        app.bind("u-busy", &format!("k{i}"), &bind_body(&visa(100 + i)))
            .await
            .assert_status(StatusCode::CREATED);
    }
    assert_error(
        app.bind("u-busy", "k3", &bind_body(&visa(103))).await,
        429,
        "rate_limited",
    )
    .await;
    assert_eq!(counter(&metrics(&app).await, "user"), 1);
}

/// A client retrying a bind the user's limit refused (new keys, no heed of
/// `Retry-After`) spends nothing of the card's hourly limit or the IP's:
/// other accounts still bind the card, up to the card's own limit.
#[tokio::test]
async fn attempts_one_limit_refuses_spend_nothing_of_the_others() {
    let app = trusting_proxy();
    // Start one second into an hour: the card's window stays the same.
    app.clock
        .set_ms(system_now_ms() / 3_600_000 * 3_600_000 + 1000);
    let ip = "192.0.2.44";
    let attempt = |n: u32| {
        let app = &app;
        async move {
            app.client
                .post("/v1/users/bob/cards")
                .header("Authorization", bearer("merchant", "service"))
                .header("Idempotency-Key", format!("bob-{n}"))
                .header("X-Forwarded-For", ip)
                .content_type("application/json")
                .body(bind_body(CARD).to_string())
                .send()
                .await
        }
    };
    attempt(0).await.assert_status(StatusCode::CREATED);
    for n in 1..3 {
        assert_error(attempt(n).await, 409, "card_already_bound").await;
    }
    // Twenty more in the minute: each is the user's limit, never the card's.
    for n in 3..23 {
        assert_error(attempt(n).await, 429, "rate_limited").await;
    }
    // The card's hour has 5 binds: 3 were spent, so two more accounts
    // bind it; the IP's minute (30) has room for both.
    for i in 0..2 {
        bind_from(&app, &format!("carol-{i}"), CARD, ip)
            .await
            .assert_status(StatusCode::CREATED);
    }
    assert_error(
        bind_from(&app, "carol-2", CARD, ip).await,
        429,
        "card_velocity_exceeded",
    )
    .await;
    let text = metrics(&app).await;
    assert_eq!(counter(&text, "user"), 20);
    assert_eq!(counter(&text, "card"), 1);
    assert_eq!(counter(&text, "ip"), 0);
}
