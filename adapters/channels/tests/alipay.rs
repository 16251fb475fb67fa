//! The Alipay channel against a fake gateway that verifies our request
//! signatures (and timestamps, app id, AES content) and signs its answers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use std::collections::BTreeMap;

use base64::Engine as _;
use cardbind_channels::alipay::{
    alipay_timestamp, parse_alipay_timestamp, scan, AlipayChannel, AlipayConfig,
    NOTIFICATION_MAX_AGE_SECONDS, NOTIFICATION_MAX_AHEAD_SECONDS,
};
use cardbind_channels::fakes::alipay::{aes_dec, FakeAlipayOptions, APP_ID, SIGN_SCENE};
use cardbind_channels::fakes::FakeAlipay;
use cardbind_channels::refs::of_attempt;
use cardbind_domain::Timestamp;
use cardbind_ports::channel::{
    BindingRef, ChannelEvent, ChannelEventKind, ChannelStart, Notification, PaymentChannel,
    RemoteState,
};
use cardbind_ports::ChannelError;
use common::{bid, bind_request, key, ATTEMPT};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn config(gateway_url: String, aes: Option<[u8; 16]>) -> AlipayConfig {
    AlipayConfig {
        gateway_url,
        app_id: APP_ID.into(),
        private_key_pem: key(0).private_pem.clone(),
        alipay_public_key_pem: key(1).public_pem.clone(),
        aes_key: aes.map(|k| B64.encode(k)),
        notify_url: Some("https://cardbind.example/v1/channels/alipay/notify".into()),
        sign_scene: SIGN_SCENE.into(),
        ..AlipayConfig::default()
    }
}

async fn setup(aes: Option<[u8; 16]>) -> (FakeAlipay, AlipayChannel) {
    let fake = FakeAlipay::start_with(FakeAlipayOptions {
        aes_key: aes,
        ..FakeAlipayOptions::default()
    })
    .await
    .unwrap();
    let ch = AlipayChannel::new(config(fake.gateway_url(), aes)).unwrap();
    (fake, ch)
}

fn note(body: Vec<u8>) -> Notification {
    let mut headers = BTreeMap::new();
    headers.insert(
        "content-type".into(),
        "application/x-www-form-urlencoded".into(),
    );
    Notification { headers, body }
}

/// The binding the full flow binds.
const FLOW_ID: &str = "0191d3c5-7a4e-7c3b-9f10-2a6b8e4d1c78";

async fn full_flow(aes: Option<[u8; 16]>) {
    let (fake, ch) = setup(aes).await;
    let b = bid(FLOW_ID);
    let ours = of_attempt(&b, ATTEMPT).unwrap();
    // start -> redirect
    let start = ch.start_binding(&bind_request(FLOW_ID)).await.unwrap();
    let ChannelStart::Redirect { channel_ref, url } = start else {
        panic!("{start:?}")
    };
    assert_eq!(channel_ref, ours);
    assert!(url.starts_with(&fake_gateway_prefix(&url)));
    // Not opened yet: the agreement does not exist.
    assert_eq!(
        ch.query(&b, Some(ATTEMPT), Some(channel_ref.clone()))
            .await
            .unwrap(),
        RemoteState::NotFound
    );
    assert_eq!(fake.open_sign_page(&url).unwrap(), ours);
    assert_eq!(
        ch.query(&b, Some(ATTEMPT), Some(channel_ref.clone()))
            .await
            .unwrap(),
        RemoteState::Pending
    );
    // The user signs: notification
    let n = note(fake.user_signs(&ours, "notify-0001").unwrap());
    let ev = ch.parse_notification(&n).unwrap();
    assert_eq!(ev.event_id, "notify-0001");
    assert_eq!(ev.binding, BindingRef::Ours(b.clone()));
    let ChannelEventKind::Signed {
        channel_ref: agreement_no,
    } = ev.kind
    else {
        panic!()
    };
    // Replay: the same notification is the same event id (the store dedups).
    assert_eq!(ch.parse_notification(&n).unwrap().event_id, "notify-0001");
    // query by agreement_no and by our external number
    assert_eq!(
        ch.query(&b, Some(ATTEMPT), Some(agreement_no.clone()))
            .await
            .unwrap(),
        RemoteState::Active {
            channel_ref: agreement_no.clone()
        }
    );
    assert_eq!(
        ch.query(&b, Some(ATTEMPT), None).await.unwrap(),
        RemoteState::Active {
            channel_ref: agreement_no.clone()
        }
    );
    // unbind, and unbind again (already ended must succeed)
    ch.unbind(&b, Some(ATTEMPT), &agreement_no).await.unwrap();
    assert_eq!(
        ch.query(&b, Some(ATTEMPT), Some(agreement_no.clone()))
            .await
            .unwrap(),
        RemoteState::Terminated
    );
    ch.unbind(&b, Some(ATTEMPT), &agreement_no).await.unwrap();
    assert_eq!(
        fake.rejected_count(),
        0,
        "the fake refused a request: {:?}",
        fake.requests()
    );
    assert_eq!(
        fake.verified_methods(),
        [
            "alipay.user.agreement.query",
            "alipay.user.agreement.page.sign",
            "alipay.user.agreement.query",
            "alipay.user.agreement.query",
            "alipay.user.agreement.query",
            "alipay.user.agreement.unsign",
            "alipay.user.agreement.query",
            "alipay.user.agreement.unsign",
            "alipay.user.agreement.query",
        ]
    );
    // The user unsigns in the wallet app: dut_user_unsign.
    let un = note(fake.user_unsigns(&ours, "notify-0002").unwrap());
    let ev = ch.parse_notification(&un).unwrap();
    assert_eq!(ev.kind, ChannelEventKind::Terminated);
    assert_eq!(ev.binding, BindingRef::Ours(b));
    let ack = ch.notification_ack();
    assert_eq!(
        (ack.status, ack.content_type, ack.body.as_str()),
        (200, "text/plain", "success")
    );
}

fn fake_gateway_prefix(url: &str) -> String {
    url.split('?').next().unwrap().to_owned()
}

#[tokio::test]
async fn full_bind_flow() {
    full_flow(None).await;
}

/// Alipay takes an `external_agreement_no` of at most 32 letters and
/// digits (the fake refuses anything else, as the gateway does); the
/// service's binding ids are dashed UUIDs (36 characters).
#[tokio::test]
async fn a_uuid_binding_goes_to_alipay_as_28_letters_and_digits_per_attempt_and_comes_back() {
    let (fake, ch) = setup(None).await;
    let id = "0191d3c5-7a4e-7c3b-9f10-2a6b8e4d1c77";
    let b = bid(id);
    let code = of_attempt(&b, ATTEMPT).unwrap();
    assert_eq!(code.len(), 28);
    let ChannelStart::Redirect { channel_ref, url } =
        ch.start_binding(&bind_request(id)).await.unwrap()
    else {
        panic!("not a redirect")
    };
    assert_eq!(channel_ref, code);
    assert_eq!(fake.open_sign_page(&url).unwrap(), code);
    assert_eq!(
        ch.query(&b, Some(ATTEMPT), Some(channel_ref.clone()))
            .await
            .unwrap(),
        RemoteState::Pending
    );
    // Another attempt of the card has its own number, unknown to Alipay.
    assert_eq!(
        ch.query(&b, Some(ATTEMPT + 1), None).await.unwrap(),
        RemoteState::NotFound
    );
    let ev = ch
        .parse_notification(&note(fake.user_signs(&code, "notify-uuid-1").unwrap()))
        .unwrap();
    assert_eq!(ev.binding, BindingRef::Ours(b.clone()));
    assert_eq!(ev.attempt, Some(ATTEMPT));
    let ChannelEventKind::Signed {
        channel_ref: agreement_no,
    } = ev.kind
    else {
        panic!("not signed")
    };
    for reference in [None, Some(channel_ref.clone()), Some(agreement_no.clone())] {
        assert_eq!(
            ch.query(&b, Some(ATTEMPT), reference).await.unwrap(),
            RemoteState::Active {
                channel_ref: agreement_no.clone()
            }
        );
    }
    ch.unbind(&b, Some(ATTEMPT), &agreement_no).await.unwrap();
    assert_eq!(fake.agreement(&code).unwrap().0, "UNSIGN");
    assert_eq!(fake.rejected_count(), 0, "{:?}", fake.requests());
}

/// Agreements that builds before per-attempt numbers made (under the id
/// without its dashes, or the dashed id) are still found by the reference
/// stored then, and their notifications are still the card's.
#[tokio::test]
async fn an_agreement_made_under_an_earlier_form_is_still_found_and_ended() {
    let (fake, ch) = setup(None).await;
    let id = "0191d3c5-7a4e-7c3b-9f10-2a6b8e4d1c77";
    let b = bid(id);
    let legacy = "0191d3c57a4e7c3b9f102a6b8e4d1c77";
    let ev = ch
        .parse_notification(&note(fake.user_signs(legacy, "notify-old-1").unwrap()))
        .unwrap();
    assert_eq!(ev.binding, BindingRef::Ours(b.clone()));
    assert_eq!(ev.attempt, None, "the old form names no attempt");
    let ChannelEventKind::Signed {
        channel_ref: agreement_no,
    } = ev.kind
    else {
        panic!("not signed")
    };
    let active = RemoteState::Active {
        channel_ref: agreement_no.clone(),
    };
    // What a card waiting since then has stored: the number the start sent.
    assert_eq!(
        ch.query(&b, Some(ATTEMPT), Some(legacy.into()))
            .await
            .unwrap(),
        active
    );
    assert_eq!(
        ch.query(&b, Some(ATTEMPT), Some(agreement_no.clone()))
            .await
            .unwrap(),
        active
    );
    // The dashed id a build before that stored, which Alipay does not
    // take, is asked as the form that followed it.
    assert_eq!(
        ch.query(&b, Some(ATTEMPT), Some(id.into())).await.unwrap(),
        active
    );
    assert_eq!(fake.rejected_count(), 0, "{:?}", fake.requests());
    let dashed = fake
        .notification(&[
            ("notify_type", "dut_user_unsign"),
            ("notify_id", "notify-old-2"),
            ("notify_time", &now_text()),
            ("app_id", APP_ID),
            ("agreement_no", &agreement_no),
            ("external_agreement_no", id),
        ])
        .unwrap();
    assert_eq!(
        ch.parse_notification(&note(dashed)).unwrap().binding,
        BindingRef::Ours(b.clone())
    );
    ch.unbind(&b, Some(ATTEMPT), &agreement_no).await.unwrap();
    assert_eq!(fake.agreement(legacy).unwrap().0, "UNSIGN");
}

fn now_text() -> String {
    alipay_timestamp(Timestamp::from_unix_millis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
    ))
}

/// A binding id with no such form is refused before anything is sent.
#[tokio::test]
async fn a_binding_id_alipay_cannot_take_is_refused_at_start() {
    let (_fake, ch) = setup(None).await;
    for id in ["has-dash", "x".repeat(33).as_str()] {
        match ch.start_binding(&bind_request(id)).await.unwrap() {
            ChannelStart::Refused { code, .. } => assert_eq!(code, "unsupported_binding_id"),
            other => panic!("{other:?}"),
        }
    }
}

/// The fake refuses, as Alipay does, an `external_agreement_no` it cannot
/// take, and counts the refusal: a query under the dashed id (what earlier
/// builds sent) is refused and reported as a misconfiguration.
#[tokio::test]
async fn the_gateway_refuses_an_external_agreement_no_of_36_characters() {
    let (fake, ch) = setup(None).await;
    let biz = serde_json::json!({
        "external_agreement_no": "0191d3c5-7a4e-7c3b-9f10-2a6b8e4d1c77",
        "personal_product_code": "GENERAL_WITHHOLDING_P",
    });
    let params = ch
        .signed_params("alipay.user.agreement.query", &biz, false)
        .unwrap();
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter())
        .finish();
    let text = reqwest::Client::new()
        .post(fake.gateway_url())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        matches!(
            ch.parse_response(&text, "alipay.user.agreement.query"),
            Err(ChannelError::Misconfigured { .. })
        ),
        "{text}"
    );
    assert_eq!(fake.rejected_count(), 1, "{:?}", fake.requests());
}

#[tokio::test]
async fn full_bind_flow_with_aes_content_encryption() {
    full_flow(Some(*b"0123456789abcdef")).await;
}

#[tokio::test]
async fn aes_request_is_encrypted_on_the_wire() {
    let aes = *b"fedcba9876543210";
    let (_fake, ch) = setup(Some(aes)).await;
    let params = ch
        .signed_params(
            "alipay.user.agreement.query",
            &serde_json::json!({"external_agreement_no": "x"}),
            false,
        )
        .unwrap();
    assert_eq!(params["encrypt_type"], "AES");
    assert!(!params["biz_content"].contains("external_agreement_no"));
    let plain = aes_dec(&aes, &params["biz_content"]).unwrap();
    assert_eq!(plain, br#"{"external_agreement_no":"x"}"#);
}

fn misconfigured(code: &str) -> ChannelError {
    ChannelError::Misconfigured { code: code.into() }
}

#[tokio::test]
async fn tampered_response_is_refused_as_unverifiable() {
    let (fake, ch) = setup(None).await;
    fake.open_sign_page(&start_url(&ch, "bindt").await).unwrap();
    fake.tamper_answers(true);
    // Altered after signing: indistinguishable from a key that is not the
    // gateway's, and reported as such; nothing in it is used.
    assert_eq!(
        ch.query(&bid("bindt"), Some(ATTEMPT), None).await,
        Err(misconfigured("response_signature_invalid"))
    );
}

/// An answer that writes `/` as `\/` (JSON allows either) over a
/// signature of the unescaped text verifies, as the official SDK's check
/// does (it tries again with `\/` replaced); it was refused as signed by
/// another key, a configuration fault an operator is paged for.
#[tokio::test]
async fn an_answer_with_escaped_slashes_signed_unescaped_verifies() {
    let (fake, ch) = setup(None).await;
    fake.open_sign_page(&start_url(&ch, "binds").await).unwrap();
    fake.escape_slashes(true);
    let state = ch.query(&bid("binds"), Some(ATTEMPT), None).await;
    assert!(
        matches!(state, Ok(RemoteState::Pending | RemoteState::Active { .. })),
        "{state:?}"
    );
    // Escaped and then altered still fails.
    fake.tamper_answers(true);
    assert_eq!(
        ch.query(&bid("binds"), Some(ATTEMPT), None).await,
        Err(misconfigured("response_signature_invalid"))
    );
}

#[tokio::test]
async fn response_signed_with_another_key_is_refused_as_unverifiable() {
    let (fake, ch) = setup(None).await;
    fake.sign_with_wrong_key(true);
    assert_eq!(
        ch.query(&bid("bindw"), Some(ATTEMPT), None).await,
        Err(misconfigured("response_signature_invalid"))
    );
}

#[tokio::test]
async fn our_own_public_key_installed_as_alipays_cannot_verify_any_answer() {
    // The classic set-up mistake: the application's public key pasted
    // where Alipay's public key belongs. Requests still verify at the
    // gateway; its answers (even "no such agreement") cannot be verified.
    let fake = FakeAlipay::start().await.unwrap();
    let mut cfg = config(fake.gateway_url(), None);
    cfg.alipay_public_key_pem = key(0).public_pem.clone();
    let ch = AlipayChannel::new(cfg).unwrap();
    assert_eq!(
        ch.query(&bid("bindown"), Some(ATTEMPT), None).await,
        Err(misconfigured("response_signature_invalid"))
    );
    // The same request with the right key: the gateway's plain answer.
    let right = AlipayChannel::new(config(fake.gateway_url(), None)).unwrap();
    assert_eq!(
        right.query(&bid("bindown"), Some(ATTEMPT), None).await,
        Ok(RemoteState::NotFound)
    );
    assert_eq!(fake.rejected_count(), 0, "{:?}", fake.requests());
}

#[tokio::test]
async fn request_signed_with_a_wrong_merchant_key_is_refused_by_the_gateway() {
    let fake = FakeAlipay::start().await.unwrap();
    let mut cfg = config(fake.gateway_url(), None);
    cfg.private_key_pem = key(2).private_pem.clone();
    let ch = AlipayChannel::new(cfg).unwrap();
    assert_eq!(
        ch.query(&bid("bindx"), Some(ATTEMPT), None).await,
        Err(misconfigured("isv.invalid-signature"))
    );
    // Unbinding gives up at once: no follow-up query on a refused key.
    assert_eq!(
        ch.unbind(&bid("bindx"), Some(ATTEMPT), "20250101000000000001")
            .await,
        Err(misconfigured("isv.invalid-signature"))
    );
    assert_eq!(fake.rejected_count(), 2);
    assert_eq!(fake.requests()[0].refusal.as_deref(), Some("bad signature"));
}

#[tokio::test]
async fn a_wrong_app_id_gets_the_gateways_unsigned_invalid_app_id() {
    let fake = FakeAlipay::start().await.unwrap();
    let mut cfg = config(fake.gateway_url(), None);
    cfg.app_id = "2021000000009999".into();
    let ch = AlipayChannel::new(cfg).unwrap();
    assert_eq!(
        ch.query(&bid("bindapp"), Some(ATTEMPT), None).await,
        Err(misconfigured("isv.invalid-app-id"))
    );
    assert_eq!(
        fake.requests()[0].refusal.as_deref(),
        Some("unknown app_id")
    );
}

#[tokio::test]
async fn a_wrong_or_missing_aes_key_is_a_misconfiguration() {
    let fake = FakeAlipay::start_with(FakeAlipayOptions {
        aes_key: Some([7u8; 16]),
        ..FakeAlipayOptions::default()
    })
    .await
    .unwrap();
    let wrong = AlipayChannel::new(config(fake.gateway_url(), Some([8u8; 16]))).unwrap();
    assert_eq!(
        wrong.query(&bid("bindaes"), Some(ATTEMPT), None).await,
        Err(misconfigured("isv.decryption-error-unknown"))
    );
    let none = AlipayChannel::new(config(fake.gateway_url(), None)).unwrap();
    assert_eq!(
        none.query(&bid("bindaes"), Some(ATTEMPT), None).await,
        Err(misconfigured("isv.decryption-error-missing-encrypt-type"))
    );
    let right = AlipayChannel::new(config(fake.gateway_url(), Some([7u8; 16]))).unwrap();
    assert_eq!(
        right.query(&bid("bindaes"), Some(ATTEMPT), None).await,
        Ok(RemoteState::NotFound)
    );
}

#[tokio::test]
async fn a_product_not_signed_for_the_app_is_a_misconfiguration() {
    let (fake, ch) = setup(None).await;
    fake.set_product_signed(false);
    assert_eq!(
        ch.query(&bid("bindprod"), Some(ATTEMPT), None).await,
        Err(misconfigured("isv.insufficient-isv-permissions"))
    );
    // The request itself verified: the account lacks the product.
    assert!(fake.requests().iter().all(|r| r.verified));
    fake.set_product_signed(true);
    assert_eq!(
        ch.query(&bid("bindprod"), Some(ATTEMPT), None).await,
        Ok(RemoteState::NotFound)
    );
}

#[tokio::test]
async fn result_codes_map_to_errors() {
    let (fake, ch) = setup(None).await;
    fake.force_code(Some(("20000", "isp.unknow-error")));
    assert!(matches!(
        ch.query(&bid("b"), Some(ATTEMPT), None).await,
        Err(ChannelError::Unavailable(_))
    ));
    // Alipay's own system error under 40004: retried like a 20000 (its
    // documentation: call again with the same parameters).
    for sub in ["SYSTEM_ERROR", "ACQ.SYSTEM_ERROR"] {
        fake.force_code(Some(("40004", sub)));
        assert!(
            matches!(
                ch.query(&bid("b"), Some(ATTEMPT), None).await,
                Err(ChannelError::Unavailable(_))
            ),
            "{sub}"
        );
        let e = ch.unbind(&bid("b"), Some(ATTEMPT), "b").await.unwrap_err();
        assert!(e.is_transient(), "{sub}: {e:?}");
    }
    // A business refusal (about the agreement, the user, the card) stays one.
    fake.force_code(Some(("40004", "USER_AGREEMENT_STATUS_ERROR")));
    assert_eq!(
        ch.unbind(&bid("b"), Some(ATTEMPT), "b").await.unwrap_err(),
        ChannelError::Rejected {
            code: "USER_AGREEMENT_STATUS_ERROR".into(),
            message: "forced".into()
        }
    );
    // Only a code saying the agreement does not exist is "not found", which
    // an unbind takes for ended; another thing missing stays a refusal.
    fake.force_code(Some(("40004", "USER_AGREEMENT_NOT_EXIST")));
    assert_eq!(
        ch.query(&bid("b"), Some(ATTEMPT), None).await,
        Ok(RemoteState::NotFound)
    );
    assert_eq!(ch.unbind(&bid("b"), Some(ATTEMPT), "b").await, Ok(()));
    for sub in ["AGREEMENT_NOT_EXIST", "ACQ.USER_AGREEMENT_NOT_EXIST"] {
        fake.force_code(Some(("40004", sub)));
        assert_eq!(
            ch.query(&bid("b"), Some(ATTEMPT), None).await,
            Ok(RemoteState::NotFound),
            "{sub}"
        );
    }
    for sub in [
        "USER_NOT_EXIST",
        "MERCHANT_NOT_EXIST",
        "PRODUCT_NOT_FOUND",
        "AGREEMENT_STATUS_NOT_FOUND_FOR_PRODUCT",
    ] {
        fake.force_code(Some(("40004", sub)));
        let refused = ChannelError::Rejected {
            code: sub.into(),
            message: "forced".into(),
        };
        assert_eq!(
            ch.query(&bid("b"), Some(ATTEMPT), None).await.unwrap_err(),
            refused,
            "{sub}"
        );
        assert_eq!(
            ch.unbind(&bid("b"), Some(ATTEMPT), "b").await.unwrap_err(),
            refused,
            "{sub}"
        );
    }
    // Every public code about our own set-up, signed: misconfigured, with
    // the sub code (or the code when there is none).
    for (code, sub) in [
        ("20001", "aop.invalid-app-auth-token"),
        ("40001", "isv.missing-signature-key"),
        ("40002", "isv.invalid-app-cert-sn"),
        ("40006", "isv.insufficient-user-permissions"),
        ("40006", ""),
        // The merchant has not signed the product (or another product code
        // is configured): about our contract, not the user's agreement.
        ("40004", "MERCHANT_AGREEMENT_IS_NOT_EXIST"),
    ] {
        fake.force_code(Some((code, sub)));
        let expected = if sub.is_empty() { code } else { sub };
        assert_eq!(
            ch.query(&bid("b"), Some(ATTEMPT), None).await,
            Err(misconfigured(expected)),
            "{code} {sub}"
        );
        assert_eq!(
            ch.unbind(&bid("b"), Some(ATTEMPT), "b").await,
            Err(misconfigured(expected)),
            "{code} {sub}: an unbind does not take it for an ended agreement"
        );
    }
    // A transient refusal's sub code is the gateway's text: only a stable
    // code of it goes into the error (and the log).
    fake.force_code(Some(("20000", "aop.unavailable <b>\nretry")));
    assert_eq!(
        ch.query(&bid("b"), Some(ATTEMPT), None).await,
        Err(ChannelError::Unavailable(
            "alipay 20000 aop.unavailablebretry".into()
        ))
    );
}

#[tokio::test]
async fn unsigned_answers_are_acted_upon_only_to_report_a_misconfiguration() {
    let (_fake, ch) = setup(None).await;
    let method = "alipay.user.agreement.query";
    // Alipay's unsigned answer to a request it cannot check.
    let text = r#"{"error_response":{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.invalid-signature","sub_msg":"check the key"}}"#;
    assert_eq!(
        ch.parse_response(text, method),
        Err(misconfigured("isv.invalid-signature"))
    );
    // An unsigned business answer is not believed.
    let text = r#"{"error_response":{"code":"40004","sub_code":"USER_AGREEMENT_NOT_EXIST"}}"#;
    assert!(matches!(
        ch.parse_response(text, method),
        Err(ChannelError::Protocol(ref m)) if m.contains("40004")
    ));
    let text = r#"{"alipay_user_agreement_query_response":{"code":"10000","status":"NORMAL","agreement_no":"1"}}"#;
    assert_eq!(
        ch.parse_response(text, method),
        Err(ChannelError::InvalidSignature)
    );
    // Its codes are unsigned text: only a stable code of them is kept.
    let long = format!(
        r#"{{"error_response":{{"code":"40004\n<b>","sub_code":"{}"}}}}"#,
        r"X<\n>".repeat(5_000)
    );
    match ch.parse_response(&long, method) {
        Err(ChannelError::Protocol(m)) => {
            assert!(m.len() < 200, "{} bytes", m.len());
            assert!(!m.contains('\n') && !m.contains('<'), "{m}");
            assert!(m.contains("code=40004b sub_code=XXXXXXXX"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    // A code full of text is cut down to a stable code.
    let text = r#"{"error_response":{"code":"40002","sub_code":"isv.bad sign\u00e9<script>"}}"#;
    assert_eq!(
        ch.parse_response(text, method),
        Err(misconfigured("isv.badsignscript"))
    );
}

#[tokio::test]
async fn gateway_down_is_unavailable_and_recorded() {
    let (fake, ch) = setup(None).await;
    fake.set_down(true);
    assert!(matches!(
        ch.query(&bid("b"), Some(ATTEMPT), None).await,
        Err(ChannelError::Unavailable(_))
    ));
    let r = fake.requests();
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0].operation.as_str(), r[0].verified),
        ("alipay.user.agreement.query", false)
    );
    fake.set_down(false);
    assert_eq!(
        ch.query(&bid("b"), Some(ATTEMPT), None).await,
        Ok(RemoteState::NotFound)
    );
}

#[tokio::test]
async fn fake_refuses_a_sign_page_url_that_was_altered() {
    let (fake, ch) = setup(None).await;
    let url = start_url(&ch, "bindp").await;
    let altered = url.replace("bindp", "bindq");
    assert!(fake.open_sign_page(&altered).is_err());
    assert_eq!(fake.agreement("bindq"), None);
    assert_eq!(fake.open_sign_page(&url).unwrap(), "bindp");
    assert_eq!(fake.agreement("bindp").unwrap().0, "TEMP");
}

#[tokio::test]
async fn confirm_otp_is_unsupported() {
    let (_fake, ch) = setup(None).await;
    assert!(matches!(
        ch.confirm_otp(&bid("b"), "b", "123456").await,
        Err(ChannelError::Rejected { code, .. }) if code == "unsupported"
    ));
}

async fn start_url(ch: &AlipayChannel, id: &str) -> String {
    match ch.start_binding(&bind_request(id)).await.unwrap() {
        ChannelStart::Redirect { url, .. } => url,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn notifications_forged_tampered_or_foreign_are_refused() {
    let (fake, ch) = setup(None).await;
    let good = fake.user_signs("bindn", "n-1").unwrap();
    assert!(ch.parse_notification(&note(good.clone())).is_ok());
    // Tampered value
    let text = String::from_utf8(good.clone())
        .unwrap()
        .replace("status=NORMAL", "status=NORMAL&x=1");
    assert_eq!(
        ch.parse_notification(&note(text.into_bytes())),
        Err(ChannelError::InvalidSignature)
    );
    let text = String::from_utf8(good).unwrap().replace("bindn", "bindm");
    assert_eq!(
        ch.parse_notification(&note(text.into_bytes())),
        Err(ChannelError::InvalidSignature)
    );
    // Signed by a stranger
    let forged = fake
        .forged_notification(&[
            ("notify_type", "dut_user_sign"),
            ("notify_id", "n-2"),
            ("app_id", APP_ID),
            ("status", "NORMAL"),
            ("agreement_no", "1"),
            ("external_agreement_no", "bindn"),
        ])
        .unwrap();
    assert_eq!(
        ch.parse_notification(&note(forged)),
        Err(ChannelError::InvalidSignature)
    );
    // Another app's notification, validly signed
    let foreign = fake
        .notification(&[
            ("notify_type", "dut_user_sign"),
            ("notify_id", "n-3"),
            ("app_id", "2021999"),
            ("status", "NORMAL"),
            ("agreement_no", "1"),
            ("external_agreement_no", "bindn"),
        ])
        .unwrap();
    assert_eq!(
        ch.parse_notification(&note(foreign)),
        Err(ChannelError::InvalidSignature)
    );
    // Garbage
    for body in [
        &b""[..],
        b"sign=",
        b"%ff%fe=\xff",
        b"&&&==&",
        b"sign=abc&sign=def",
    ] {
        assert_eq!(
            ch.parse_notification(&note(body.to_vec())),
            Err(ChannelError::InvalidSignature)
        );
    }
}

#[tokio::test]
async fn another_products_genuine_message_is_not_acted_on_and_a_forged_one_is_refused() {
    let (fake, ch) = setup(None).await;
    let trade = fake
        .other_product_message(Some("trade_status_sync"), "o-1")
        .unwrap();
    assert_eq!(
        ch.parse_notification(&note(trade.clone())),
        Err(ChannelError::NotActedOn {
            kind: "trade_status_sync".into()
        })
    );
    let untyped = fake.other_product_message(None, "o-2").unwrap();
    assert_eq!(
        ch.parse_notification(&note(untyped)),
        Err(ChannelError::NotActedOn {
            kind: "unknown".into()
        })
    );
    // The type is cleaned like a code before it reaches a log line.
    let odd = fake
        .other_product_message(Some("x y<script>\u{1F600}"), "o-3")
        .unwrap();
    assert_eq!(
        ch.parse_notification(&note(odd)),
        Err(ChannelError::NotActedOn {
            kind: "xyscript".into()
        })
    );
    // Checked as fully as ours first: tampered, forged, another app's or
    // stale messages of any type are refused, not acknowledged.
    let tampered = String::from_utf8(trade)
        .unwrap()
        .replace("9.90", "0.01")
        .into_bytes();
    assert_eq!(
        ch.parse_notification(&note(tampered)),
        Err(ChannelError::InvalidSignature)
    );
    let now = alipay_timestamp(Timestamp::from_unix_millis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
    ));
    let old = alipay_timestamp(Timestamp::from_unix_millis(1_700_000_000_000));
    let pairs = |app: &'static str, time: &'static str| {
        [
            ("notify_type", "trade_status_sync"),
            ("notify_id", "o-4"),
            ("notify_time", time),
            ("app_id", app),
            ("trade_status", "TRADE_SUCCESS"),
        ]
    };
    let (now, old): (&'static str, &'static str) = (now.leak(), old.leak());
    let forged = fake.forged_notification(&pairs(APP_ID, now)).unwrap();
    let foreign = fake.notification(&pairs("2021999", now)).unwrap();
    let stale = fake.notification(&pairs(APP_ID, old)).unwrap();
    for body in [forged, foreign, stale] {
        assert_eq!(
            ch.parse_notification(&note(body)),
            Err(ChannelError::InvalidSignature)
        );
    }
}

#[test]
fn timestamp_is_beijing_time() {
    assert_eq!(
        alipay_timestamp(Timestamp::from_unix_millis(0)),
        "1970-01-01 08:00:00"
    );
    assert_eq!(
        alipay_timestamp(Timestamp::from_unix_millis(1_700_000_000_000)),
        "2023-11-15 06:13:20"
    );
    assert_eq!(
        alipay_timestamp(Timestamp::from_unix_millis(951_825_600_000)),
        "2000-02-29 20:00:00"
    );
    // 2024-02-29 16:30:00 UTC is 2024-03-01 00:30:00 in Beijing.
    assert_eq!(
        alipay_timestamp(Timestamp::from_unix_millis(1_709_224_200_000)),
        "2024-03-01 00:30:00"
    );
}

#[test]
fn timestamps_read_back_as_written() {
    for ms in [0, 951_825_600_000, 1_700_000_000_000, 1_709_224_200_000] {
        let t = Timestamp::from_unix_millis(ms);
        assert_eq!(parse_alipay_timestamp(&alipay_timestamp(t)), Some(t));
    }
    for bad in [
        "",
        "2024-02-30 00:00:00",
        "2024-03-01T00:30:00",
        "2024-03-01 00:30",
        "x",
    ] {
        assert_eq!(parse_alipay_timestamp(bad), None, "{bad}");
    }
}

#[tokio::test]
async fn notifications_signed_long_ago_or_ahead_of_our_clock_are_refused() {
    let (fake, ch) = setup(None).await;
    let now = Timestamp::from_unix_millis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
    );
    let signed_at = |t: Option<Timestamp>, id: &str| {
        let time = t.map(alipay_timestamp);
        let mut pairs = vec![
            ("notify_type", "dut_user_sign"),
            ("notify_id", id),
            ("app_id", APP_ID),
            ("status", "NORMAL"),
            ("agreement_no", "20250101000000000001"),
            ("external_agreement_no", "bindt"),
        ];
        if let Some(time) = time.as_deref() {
            pairs.push(("notify_time", time));
        }
        note(fake.notification(&pairs).unwrap())
    };
    // Within Alipay's retries, and a little ahead (clock skew): taken.
    let day = 24 * 3600;
    for (t, id) in [
        (now, "t-now"),
        (now.minus_seconds(day), "t-yesterday"),
        (
            now.minus_seconds(NOTIFICATION_MAX_AGE_SECONDS - 60),
            "t-edge",
        ),
        (now.plus_seconds(60), "t-skew"),
    ] {
        let e = ch.parse_notification(&signed_at(Some(t), id));
        assert!(e.is_ok(), "{id}: {e:?}");
    }
    // Validly signed, but older than the service remembers notifications
    // for (a captured body replayed), too far ahead, or with no time.
    for (t, id) in [
        (
            Some(now.minus_seconds(NOTIFICATION_MAX_AGE_SECONDS + 60)),
            "t-old",
        ),
        (Some(now.minus_seconds(40 * day)), "t-replayed"),
        (
            Some(now.plus_seconds(NOTIFICATION_MAX_AHEAD_SECONDS + 60)),
            "t-ahead",
        ),
        (None, "t-none"),
    ] {
        assert_eq!(
            ch.parse_notification(&signed_at(t, id)),
            Err(ChannelError::InvalidSignature),
            "{id}"
        );
    }
}

/// Alipay signs a notification over every parameter but `sign` and
/// `sign_type`, empty ones included, in the body's charset: such
/// notifications verify, and an empty parameter added to a signed body does
/// not.
#[tokio::test]
async fn notifications_are_verified_over_empty_fields_and_in_their_charset() {
    let (fake, ch) = setup(None).await;
    let now = alipay_timestamp(Timestamp::from_unix_millis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
    ));
    let pairs = |id: &'static str, charset: &'static str| {
        vec![
            ("notify_type", "dut_user_sign"),
            ("notify_id", id),
            ("notify_time", now.as_str()),
            ("app_id", APP_ID),
            ("charset", charset),
            ("status", "NORMAL"),
            ("agreement_no", "20250101000000000009"),
            ("external_agreement_no", "bindc"),
            ("zm_open_id", ""),
            ("external_logon_id", "张三+li@例子.cn & 100%"),
        ]
    };
    let signed = |e: Result<ChannelEvent, ChannelError>| match e {
        Ok(ChannelEvent {
            kind: ChannelEventKind::Signed { channel_ref },
            ..
        }) => channel_ref,
        other => panic!("{other:?}"),
    };
    // An empty field, UTF-8 (the charset named or not).
    let body = fake.notification(&pairs("c-utf8", "utf-8")).unwrap();
    assert_eq!(
        signed(ch.parse_notification(&note(body.clone()))),
        "20250101000000000009"
    );
    let mut plain = pairs("c-none", "");
    plain.retain(|(k, _)| *k != "charset");
    let body_none = fake.notification(&plain).unwrap();
    assert!(ch.parse_notification(&note(body_none)).is_ok());
    // The same in GBK, body and signature.
    let gbk = fake
        .notification_in(&pairs("c-gbk", "GBK"), encoding_rs::GBK)
        .unwrap();
    assert!(String::from_utf8(gbk.clone())
        .unwrap()
        .contains("%D5%C5%C8%FD"));
    assert!(ch.parse_notification(&note(gbk.clone())).is_ok());
    // GBK writes the euro sign as the single byte 0x80 (GB18030 as two):
    // verified over the bytes sent.
    let mut euro = pairs("c-gbk-euro", "GBK");
    euro.push(("memo", "€5"));
    let euro = fake.notification_in(&euro, encoding_rs::GBK).unwrap();
    assert!(String::from_utf8(euro.clone())
        .unwrap()
        .contains("memo=%805"));
    assert!(ch.parse_notification(&note(euro)).is_ok());
    // GBK bytes read as UTF-8, or another charset named: not verified.
    let relabelled = String::from_utf8(gbk)
        .unwrap()
        .replace("charset=GBK", "charset=utf-8");
    assert_eq!(
        ch.parse_notification(&note(relabelled.into_bytes())),
        Err(ChannelError::InvalidSignature)
    );
    let latin = fake.notification(&pairs("c-latin", "ISO-8859-1")).unwrap();
    assert_eq!(
        ch.parse_notification(&note(latin)),
        Err(ChannelError::InvalidSignature)
    );
    // An empty parameter appended to a validly signed body is a change.
    let mut grown = body.clone();
    grown.extend_from_slice(b"&extra=");
    assert_eq!(
        ch.parse_notification(&note(grown)),
        Err(ChannelError::InvalidSignature)
    );
    // The empty field taken out is a change too.
    let text = String::from_utf8(body).unwrap().replace("zm_open_id=&", "");
    assert!(!text.contains("zm_open_id"));
    assert_eq!(
        ch.parse_notification(&note(text.into_bytes())),
        Err(ChannelError::InvalidSignature)
    );
}

#[test]
fn keys_load_in_every_encoding_and_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("app_private_key.pem");
    std::fs::write(&p, &key(0).private_pkcs1_pem).unwrap();
    let bare: String = key(1)
        .public_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    for (private, public) in [
        (key(0).private_pem.clone(), key(1).public_pem.clone()),
        (key(0).private_pkcs1_pem.clone(), bare),
        (p.to_string_lossy().into_owned(), key(1).public_pem.clone()),
    ] {
        let cfg = AlipayConfig {
            gateway_url: "https://openapi.alipay.com/gateway.do".into(),
            app_id: APP_ID.into(),
            private_key_pem: private,
            alipay_public_key_pem: public,
            sign_scene: SIGN_SCENE.into(),
            ..AlipayConfig::default()
        };
        AlipayChannel::new(cfg).unwrap();
    }
    let bad = AlipayChannel::new(AlipayConfig {
        gateway_url: "https://openapi.alipay.com/gateway.do".into(),
        app_id: APP_ID.into(),
        private_key_pem: "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----".into(),
        alipay_public_key_pem: key(1).public_pem.clone(),
        sign_scene: SIGN_SCENE.into(),
        ..AlipayConfig::default()
    })
    .unwrap_err();
    assert_eq!(bad.field, "private_key_pem");
}

/// Every agreement is named by an `external_agreement_no`, with which
/// Alipay refuses its default scene `DEFAULT|DEFAULT`: the scene agreed with
/// Alipay must be configured, and a default or malformed one is refused.
#[test]
fn the_signing_scene_must_be_one_alipay_takes_with_our_agreement_names() {
    let with = |scene: &str| {
        AlipayChannel::new(AlipayConfig {
            sign_scene: scene.into(),
            ..config("https://openapi.alipay.com/gateway.do".into(), None)
        })
    };
    for scene in [
        "",
        "  ",
        "DEFAULT|DEFAULT",
        "default|Default",
        " DEFAULT|DEFAULT ",
        "INDUSTRY",
        "INDUSTRY|",
        "|CARRENTAL",
        "INDUSTRY|CAR|RENTAL",
        "INDUSTRY|CAR RENTAL",
        "INDUSTRY|租车",
    ] {
        let e = with(scene).map(|_| ()).unwrap_err();
        assert_eq!(e.field, "sign_scene", "{scene:?}");
    }
    assert!(with("DEFAULT|DEFAULT")
        .map(|_| ())
        .unwrap_err()
        .to_string()
        .contains("refused by Alipay"));
    for scene in ["INDUSTRY|CARRENTAL", " INDUSTRY|DIGITAL_MEDIA "] {
        with(scene).unwrap();
    }
}

#[test]
fn debug_never_shows_keys() {
    let cfg = config(
        "https://openapi.alipay.com/gateway.do".into(),
        Some(*b"0123456789abcdef"),
    );
    let d = format!("{cfg:?}");
    assert!(
        !d.contains("PRIVATE KEY") && !d.contains(&B64.encode(b"0123456789abcdef")),
        "{d}"
    );
    let ch = AlipayChannel::new(cfg).unwrap();
    let d = format!("{ch:?}");
    assert!(
        !d.contains("PRIVATE") && !d.contains("RsaPrivateKey") && !d.contains(" d:"),
        "{d}"
    );
}

/// Our RSA2 signature equals the one `openssl dgst -sha256 -sign` makes.
#[test]
fn signature_matches_openssl() {
    let clock = common::FixedClock::at_millis(1_700_000_000_000);
    let ch = AlipayChannel::new(AlipayConfig {
        clock: Some(clock),
        ..config("https://openapi.alipay.com/gateway.do".into(), None)
    })
    .unwrap();
    let params = ch
        .signed_params(
            "alipay.user.agreement.query",
            &serde_json::json!({"external_agreement_no": "中文-1"}),
            false,
        )
        .unwrap();
    assert_eq!(params["timestamp"], "2023-11-15 06:13:20");
    let expected_content = format!(
        "app_id={APP_ID}&biz_content={{\"external_agreement_no\":\"中文-1\"}}&charset=utf-8&format=JSON&method=alipay.user.agreement.query&notify_url=https://cardbind.example/v1/channels/alipay/notify&sign_type=RSA2&timestamp=2023-11-15 06:13:20&version=1.0"
    );
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("key.pem");
    let data_path = dir.path().join("data.txt");
    std::fs::write(&key_path, &key(0).private_pem).unwrap();
    std::fs::write(&data_path, expected_content.as_bytes()).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&key_path)
        .arg(&data_path)
        .output()
        .expect("openssl on PATH");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(params["sign"], B64.encode(out.stdout));
}

#[test]
fn scanner_returns_exact_raw_text_of_nested_escaped_values() {
    let text = "{ \"a_response\" : {\"x\":\"}\\\"{\",\"n\":[1,{\"y\":\"]\"}],\"u\":\"\\u4e2d\\\\\"} ,\n\"sign\":\"c2ln\", \"k\\\"q\":true,\"z\":-1.5e3,\"e\":{}}";
    let m = scan::top_level_members(text).unwrap();
    let keys: Vec<&str> = m.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["a_response", "sign", "k\"q", "z", "e"]);
    assert_eq!(
        m[0].1,
        "{\"x\":\"}\\\"{\",\"n\":[1,{\"y\":\"]\"}],\"u\":\"\\u4e2d\\\\\"}"
    );
    assert_eq!(m[1].1, "\"c2ln\"");
    assert_eq!(m[2].1, "true");
    assert_eq!(m[3].1, "-1.5e3");
    assert_eq!(m[4].1, "{}");
    for bad in [
        "",
        "{",
        "{\"a\":}",
        "{\"a\":{]}",
        "{\"a\":\"x}",
        "[1]",
        "{\"a\":1} x",
        "{\"a\" 1}",
        "{\"a\":1,}",
    ] {
        assert!(scan::top_level_members(bad).is_err(), "{bad}");
    }
    assert!(
        scan::unique_member(&scan::top_level_members("{\"s\":1,\"s\":2}").unwrap(), "s").is_err()
    );
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn scanner_never_panics(s in ".{0,200}") {
            let _ = scan::top_level_members(&s);
        }

        #[test]
        fn scanner_never_panics_on_json_alphabet(s in "[{}\\[\\]\":,\\\\ a1ue]{0,120}") {
            let _ = scan::top_level_members(&s);
        }

        #[test]
        fn scanner_agrees_with_serde_on_valid_objects(v in proptest::collection::btree_map("[a-z\"\\\\{}]{0,6}", "[ -~]{0,10}", 0..5)) {
            let obj: serde_json::Map<String, serde_json::Value> =
                v.into_iter().map(|(k, s)| (k, serde_json::json!({"s": s, "n": [s.len()]}))).collect();
            let text = serde_json::to_string(&obj).unwrap();
            let members = scan::top_level_members(&text).unwrap();
            prop_assert_eq!(members.len(), obj.len());
            for (k, raw) in members {
                let parsed: serde_json::Value = serde_json::from_str(raw).unwrap();
                prop_assert_eq!(&parsed, &obj[&k]);
            }
        }

        #[test]
        fn notification_parser_never_panics(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let ch = AlipayChannel::new(AlipayConfig {
                ..config("https://openapi.alipay.com/gateway.do".into(), None)
            }).unwrap();
            prop_assert!(ch.parse_notification(&note(body)).is_err());
        }

        #[test]
        fn response_parser_never_panics(body in "[{}\\[\\]\":,a-z_0-9 ]{0,200}") {
            let ch = AlipayChannel::new(config("https://openapi.alipay.com/gateway.do".into(), None)).unwrap();
            let _ = ch.parse_response(&body, "alipay.user.agreement.query");
        }
    }
}

/// A gateway (or a proxy before it) answering far more than any answer is
/// long: refused as unusable once past 1 MiB, whether it says its length
/// up front or streams without one, and never held whole.
#[tokio::test]
async fn an_answer_longer_than_a_mebibyte_is_refused_unread() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for declared in [true, false] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/gateway.do", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            let _ = sock.read(&mut buf).await;
            let head = if declared {
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 67108864\r\n\r\n"
            } else {
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n"
            };
            sock.write_all(head.as_bytes()).await.unwrap();
            // Up to 64 MiB of a JSON string, until the client hangs up.
            let chunk = vec![b'a'; 64 * 1024];
            let mut sent = 0usize;
            let _ = sock.write_all(b"{\"x\":\"").await;
            while sent < 64 << 20 {
                if sock.write_all(&chunk).await.is_err() {
                    break;
                }
                sent += chunk.len();
            }
            sent
        });
        let ch = AlipayChannel::new(config(url, None)).unwrap();
        let r = ch.query(&bid("b"), Some(ATTEMPT), None).await;
        assert!(
            matches!(&r, Err(ChannelError::Protocol(m)) if m.contains("longer than")),
            "declared {declared}: {r:?}"
        );
        drop(ch);
        let sent = server.await.unwrap();
        assert!(
            sent < 64 << 20,
            "declared {declared}: the client read it all ({sent} bytes)"
        );
    }
}
