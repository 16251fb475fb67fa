//! Each invalid field gets its code and its field name.

use super::*;

#[tokio::test]
async fn each_invalid_field_has_its_code_and_field() {
    let app = spawn();
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "card_number",
            json!("4111111111111112"),
            "invalid_card_number",
            "card_number",
        ),
        (
            "card_number",
            json!("9999999999999995"),
            "unsupported_card_brand",
            "card_number",
        ),
        ("expiry_month", json!(13), "invalid_expiry", "expiry_month"),
        // Past what the field's type holds: still the field's own code.
        ("expiry_month", json!(-1), "invalid_expiry", "expiry_month"),
        (
            "expiry_month",
            json!(4294967296u64),
            "invalid_expiry",
            "expiry_month",
        ),
        (
            "expiry_month",
            serde_json::from_str::<Value>("99999999999999999999").unwrap(),
            "invalid_expiry",
            "expiry_month",
        ),
        // Not a whole number: the wrong type.
        (
            "expiry_month",
            json!(1.5),
            "invalid_request",
            "expiry_month",
        ),
        ("expiry_year", json!(2001), "card_expired", "expiry_year"),
        ("cvv", json!("12"), "invalid_cvv", "cvv"),
        (
            "holder_name",
            json!("R2D2!"),
            "invalid_holder_name",
            "holder_name",
        ),
        (
            "id_number",
            json!("110105194912310021"),
            "invalid_id_number",
            "id_number",
        ),
        // A valid check character, but born in 2099.
        (
            "id_number",
            json!("110105209901010012"),
            "invalid_id_number",
            "id_number",
        ),
        ("phone", json!("12345"), "invalid_phone", "phone"),
        ("channel", json!("paypal"), "channel_not_enabled", "channel"),
    ];
    for (i, (name, value, code, field)) in cases.into_iter().enumerate() {
        let mut body = bind_body(VISA);
        body[name] = value;
        let resp = app
            .bind(&format!("user-{i}"), &format!("k-field-{i}"), &body)
            .await;
        let v = assert_error(resp, 400, code).await;
        let got = v["error"]["field"].as_str().unwrap_or_default().to_owned();
        assert!(
            got == field || (field.starts_with("expiry") && got.starts_with("expiry")),
            "{name}: {v}"
        );
        assert!(
            !v.to_string().contains("11010519491231002"),
            "no ID number in errors: {v}"
        );
    }
    let mut body = bind_body(VISA);
    body["consent"]["text_sha256"] = json!("not-a-hash");
    let v = assert_error(
        app.bind("user-c", "k-consent", &body).await,
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(v["error"]["field"], "consent");

    let v = assert_error(
        app.bind("bad*user", "k-user", &bind_body(VISA)).await,
        400,
        "invalid_user_id",
    )
    .await;
    assert_eq!(v["error"]["field"], "user_id");
}

/// Names in scripts written with combining marks (Thai, Devanagari, Tamil)
/// and decomposed accents bind; a mark before any letter is refused.
#[tokio::test]
async fn names_with_combining_marks_bind() {
    let app = spawn();
    let names = [
        "สมศักดิ์ ใจดี",
        "राजेश कुमार",
        "முருகன்",
        "Jose\u{301} Garci\u{301}a",
    ];
    for (i, name) in names.iter().enumerate() {
        let mut body = bind_body(VISA);
        body["holder_name"] = json!(name);
        let resp = app
            .bind(&format!("marks-{i}"), &format!("k-marks-{i}"), &body)
            .await;
        assert_eq!(resp.0.status(), StatusCode::CREATED, "{name}");
    }
    for (i, name) in ["\u{301}abc", " \u{94d}ab"].iter().enumerate() {
        let mut body = bind_body(VISA);
        body["holder_name"] = json!(name);
        let resp = app
            .bind(&format!("nomark-{i}"), &format!("k-nomark-{i}"), &body)
            .await;
        let v = assert_error(resp, 400, "invalid_holder_name").await;
        assert_eq!(v["error"]["field"], "holder_name");
    }
}

/// The shortest E.164 numbers (a 3-digit country code and 4 digits: Niue,
/// Tokelau, Saint Helena) bind through the edge's pattern and the domain's
/// rule alike; one digit fewer is refused by both with the same code.
#[tokio::test]
async fn seven_digit_international_phones_bind() {
    let app = spawn();
    for (i, phone) in ["+683 4002", "+690-7123", "+2902222"].iter().enumerate() {
        let mut body = bind_body(VISA);
        body["phone"] = json!(phone);
        let resp = app
            .bind(&format!("short-{i}"), &format!("k-short-{i}"), &body)
            .await;
        assert_eq!(resp.0.status(), StatusCode::CREATED, "{phone}");
    }
    let mut body = bind_body(VISA);
    body["phone"] = json!("+683400");
    let resp = app.bind("shorter", "k-shorter", &body).await;
    let v = assert_error(resp, 400, "invalid_phone").await;
    assert_eq!(v["error"]["field"], "phone");
}
