//! A card's life through a Rust client that openapi-generator (its `rust`
//! generator: reqwest, serde) generates from the running service's spec:
//! scripts/generated-client.sh generates the crate, copies this in as one of
//! its examples, builds and runs it. Every answer is read into the
//! generated models (required fields, enums and dates as the spec declares
//! them), so an answer that strays from the spec fails here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cardbind_client::apis::{cards_api, configuration::Configuration, meta_api, Error};
use cardbind_client::models::{
    BindCardBody, Brand, CardStatus, ConsentBody, NextActionType, VerifyCardBody,
};

fn check(ok: bool, what: impl std::fmt::Display) {
    if !ok {
        eprintln!("generated-client (Rust): FAILED: {what}");
        std::process::exit(1);
    }
}

/// A Visa number with a random body and its Luhn check digit.
fn visa() -> String {
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut digits = vec![4u32];
    while digits.len() < 15 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        digits.push((seed % 10) as u32);
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(k, &d)| match (k % 2, d * 2) {
            (0, twice) if twice > 9 => twice - 9,
            (0, twice) => twice,
            _ => d,
        })
        .sum();
    digits.push((10 - sum % 10) % 10);
    digits.iter().map(|d| char::from(b'0' + *d as u8)).collect()
}

fn body(number: &str) -> BindCardBody {
    let consent = ConsentBody::new(
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        "2026-01".into(),
    );
    let mut b = BindCardBody::new(
        number.into(),
        consent,
        12,
        2030,
        "Alice Zhang".into(),
        "11010519491231002X".into(),
        "+86 138 0013 8000".into(),
    );
    b.cvv = Some(Some("123".into()));
    b
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut config = Configuration::new();
    config.base_path = std::env::var("CARDBIND_GC_BASE").unwrap();
    config.bearer_access_token = Some(std::env::var("CARDBIND_GC_SERVICE_TOKEN").unwrap());
    let otp = std::env::var("CARDBIND_GC_OTP").unwrap_or_else(|_| "123456".into());
    let user = format!("rust-{}", &visa()[8..16]);
    let number = visa();
    let key = format!("rust-key-{}", &number[4..]);

    let card = cards_api::bind_card(&config, &user, &key, body(&number))
        .await
        .unwrap();
    check(
        card.status == CardStatus::PendingVerification,
        format!("bind: {card:?}"),
    );
    let action = card.next_action.as_deref().unwrap();
    check(
        action.r#type == NextActionType::Otp,
        format!("bind: {action:?}"),
    );
    check(
        action.expires_at.is_some_and(|t| t > card.created_at),
        format!("verification window: {action:?}"),
    );
    check(
        card.last4 == number[12..],
        format!("last four {}", card.last4),
    );
    check(card.brand == Brand::Visa, format!("brand {:?}", card.brand));
    check(
        !format!("{card:?}").contains(&number),
        "the answer holds the card number",
    );

    let replay = cards_api::bind_card(&config, &user, &key, body(&number))
        .await
        .unwrap();
    check(
        replay.id == card.id,
        "a replay under the same key answered another card",
    );

    let active = cards_api::verify_card(&config, &user, &card.id, VerifyCardBody::new(otp))
        .await
        .unwrap();
    check(
        active.status == CardStatus::Active && active.is_default && active.next_action.is_none(),
        format!("verify: {active:?}"),
    );

    let list = cards_api::list_cards(&config, &user, None, Some(10), None)
        .await
        .unwrap();
    check(
        list.cards.len() == 1 && list.cards[0].id == card.id,
        format!("list: {list:?}"),
    );

    match cards_api::bind_card(
        &config,
        &user,
        &format!("{key}-bad"),
        body("4111 1111 1111 1112"),
    )
    .await
    {
        Err(Error::ResponseError(r)) => {
            check(
                r.status.as_u16() == 400,
                format!("refusal status {}", r.status),
            );
            let v: serde_json::Value = serde_json::from_str(&r.content).unwrap();
            check(
                v["error"]["code"] == "invalid_card_number" && v["error"]["field"] == "card_number",
                format!("refusal: {v}"),
            );
        }
        other => check(
            false,
            format!("a number with a wrong check digit: {other:?}"),
        ),
    }

    cards_api::unbind_card(&config, &user, &card.id, None)
        .await
        .unwrap();
    let after = cards_api::get_card(&config, &user, &card.id).await.unwrap();
    check(
        after.status == CardStatus::Inactive && !after.is_default,
        format!("unbind: {after:?}"),
    );

    let bin = meta_api::lookup_bin(&config, "622202").await.unwrap();
    check(bin.brand == Brand::Unionpay, format!("BIN lookup: {bin:?}"));
    println!(
        "generated-client (Rust, openapi-generator): ok ({})",
        config.base_path
    );
}
