//! Each invalid field of a bind request gets its code and its field name.

use super::*;

fn set(body: &mut Value, path: &str, v: Value) {
    let mut cur = body;
    let parts: Vec<&str> = path.split('.').collect();
    for p in &parts[..parts.len() - 1] {
        cur = &mut cur[*p];
    }
    cur[parts[parts.len() - 1]] = v;
}

/// (what, card, field to change, new value, code, acceptable `field`s)
type FieldCase<'a> = (
    &'a str,
    &'a TestCard,
    &'a str,
    Value,
    &'a str,
    &'a [&'a str],
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_invalid_field_has_its_code_and_field() {
    let app =
        TestApp::spawn(|c| c.channels.mock.mode = cardbind::config::MockModeSetting::Instant).await;
    let this_year = time::OffsetDateTime::now_utc().year() as u32;
    let good = TestCard::visa();
    let amex = TestCard::new(Brand::Amex);
    let bad_luhn = {
        let n = &good.number;
        let last = (n.as_bytes()[15] - b'0' + 1) % 10;
        format!("{}{}", &n[..15], last)
    };
    let wrong_check_id = {
        let first17 = &good.id_number[..17];
        let right = resident_id_check(first17);
        let wrong = if right == '1' { '2' } else { '1' };
        format!("{first17}{wrong}")
    };
    let bad_birth_id = {
        let first17 = format!("11010119901340{}", &good.id_number[14..17]);
        format!("{first17}{}", resident_id_check(&first17))
    };

    // (what, card, field to change, new value, code, field in the error)
    let cases: Vec<FieldCase> = vec![
        (
            "check digit",
            &good,
            "card_number",
            json!(bad_luhn),
            "invalid_card_number",
            &["card_number"],
        ),
        (
            "letters",
            &good,
            "card_number",
            json!("4111 1111 1111 111a"),
            "invalid_card_number",
            &["card_number"],
        ),
        (
            "too short",
            &good,
            "card_number",
            json!("41111111111"),
            "invalid_card_number",
            &["card_number"],
        ),
        (
            "too long",
            &good,
            "card_number",
            json!("41111111111111111111"),
            "invalid_card_number",
            &["card_number"],
        ),
        (
            "wrong length for brand",
            &good,
            "card_number",
            json!("37828224631000"),
            "invalid_card_number",
            &["card_number"],
        ),
        (
            "empty",
            &good,
            "card_number",
            json!(""),
            "invalid_card_number",
            &["card_number"],
        ),
        (
            "unknown range",
            &good,
            "card_number",
            json!("9999999999999995"),
            "unsupported_card_brand",
            &["card_number"],
        ),
        (
            "expired",
            &good,
            "expiry_year",
            json!(this_year - 1),
            "card_expired",
            &["expiry_year", "expiry_month"],
        ),
        (
            "month 13",
            &good,
            "expiry_month",
            json!(13),
            "invalid_expiry",
            &["expiry_month"],
        ),
        (
            "month 0",
            &good,
            "expiry_month",
            json!(0),
            "invalid_expiry",
            &["expiry_month"],
        ),
        (
            "three-digit year",
            &good,
            "expiry_year",
            json!(123),
            "invalid_expiry",
            &["expiry_year"],
        ),
        (
            "30 years ahead",
            &good,
            "expiry_year",
            json!(this_year + 30),
            "invalid_expiry",
            &["expiry_year"],
        ),
        (
            "short cvv",
            &good,
            "cvv",
            json!("12"),
            "invalid_cvv",
            &["cvv"],
        ),
        (
            "letters in cvv",
            &good,
            "cvv",
            json!("1a3"),
            "invalid_cvv",
            &["cvv"],
        ),
        (
            "3-digit cvv on amex",
            &amex,
            "cvv",
            json!("123"),
            "invalid_cvv",
            &["cvv"],
        ),
        (
            "4-digit cvv on visa",
            &good,
            "cvv",
            json!("1234"),
            "invalid_cvv",
            &["cvv"],
        ),
        (
            "empty name",
            &good,
            "holder_name",
            json!("   "),
            "invalid_holder_name",
            &["holder_name"],
        ),
        (
            "digits in name",
            &good,
            "holder_name",
            json!("R2D2"),
            "invalid_holder_name",
            &["holder_name"],
        ),
        (
            "65-letter name",
            &good,
            "holder_name",
            json!("A".repeat(65)),
            "invalid_holder_name",
            &["holder_name"],
        ),
        (
            "id check char",
            &good,
            "id_number",
            json!(wrong_check_id),
            "invalid_id_number",
            &["id_number"],
        ),
        (
            "id 17 chars",
            &good,
            "id_number",
            json!(&good.id_number[..17]),
            "invalid_id_number",
            &["id_number"],
        ),
        (
            "id birth date",
            &good,
            "id_number",
            json!(bad_birth_id),
            "invalid_id_number",
            &["id_number"],
        ),
        (
            "id letters",
            &good,
            "id_number",
            json!("11010519491231002A"),
            "invalid_id_number",
            &["id_number"],
        ),
        (
            "phone too short",
            &good,
            "phone",
            json!("12345"),
            "invalid_phone",
            &["phone"],
        ),
        (
            "phone 12x",
            &good,
            "phone",
            json!("12812345678"),
            "invalid_phone",
            &["phone"],
        ),
        (
            "phone letters",
            &good,
            "phone",
            json!("1381234abcd"),
            "invalid_phone",
            &["phone"],
        ),
        (
            "+86 not mobile",
            &good,
            "phone",
            json!("+861234567"),
            "invalid_phone",
            &["phone"],
        ),
    ];
    for (what, card, path, value, code, fields) in cases {
        let mut body = card.body();
        set(&mut body, path, value.clone());
        // A fresh user each time: refusals must not depend on limits.
        let user = user_id("v");
        let r = app.bind_body(&user, &body, &idem_key()).await;
        assert_eq!(r.status, 400, "{what}: {}", r.describe());
        let e = assert_envelope(&r);
        assert_eq!(e["code"], code, "{what}: {}", r.describe());
        let field = e["field"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no field in {}", r.describe()));
        assert!(
            fields.contains(&field),
            "{what}: field {field}, expected {fields:?}"
        );
        // The refusal does not echo card data.
        let text = r.text();
        for (w, secret) in card.secrets() {
            assert!(
                !text.contains(&secret),
                "{what}: the error shows the {w}: {text}"
            );
        }
        if let Some(s) = value.as_str() {
            if s.len() >= 6 {
                assert!(
                    !text.contains(s),
                    "{what}: the error echoes the value: {text}"
                );
            }
        }
        // Nothing was bound.
        assert!(
            app.list_cards(&user).await.is_empty(),
            "{what}: a refused request left a card"
        );
    }

    // Consent is required and checked.
    let user = user_id("v");
    let mut body = good.body();
    set(&mut body, "consent.text_sha256", json!("not-a-hash"));
    let r = app.bind_body(&user, &body, &idem_key()).await;
    let e = r.assert_error(400, "invalid_request");
    assert!(
        e["field"]
            .as_str()
            .is_some_and(|f| f.starts_with("consent")),
        "{}",
        r.describe()
    );

    // The same card, valid, binds (the cases above failed for their field).
    let v = app
        .bind(&user_id("v"), &good, &idem_key())
        .await
        .expect_status(201);
    assert_eq!(v["status"], "active");
    // A number typed with spaces and dashes is the same card.
    let mut spaced = TestCard::new(Brand::Mastercard);
    let n = spaced.number.clone();
    spaced.number = format!("{} {}-{} {}", &n[..4], &n[4..8], &n[8..12], &n[12..]);
    let v = app
        .bind(&user_id("v"), &spaced, &idem_key())
        .await
        .expect_status(201);
    assert_eq!(v["last4"], &n[12..]);
    // CVV is optional.
    let mut no_cvv = TestCard::visa().body();
    no_cvv.as_object_mut().expect("object").remove("cvv");
    app.bind_body(&user_id("v"), &no_cvv, &idem_key())
        .await
        .expect_status(201);
}
