//! The WeChat Pay channel against a fake API that verifies our
//! `Authorization` signatures and signs its answers and callbacks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use cardbind_channels::fakes::wechat::{
    platform_signed_headers, APIV3_KEY, APPID, MCHID, MERCHANT_SERIAL, PLAN_ID, PLATFORM_SERIAL,
    PLATFORM_SERIAL_2,
};
use cardbind_channels::fakes::FakeWechat;
use cardbind_channels::refs::{of_attempt, parse, Named};
use cardbind_channels::{WechatChannel, WechatConfig};
use cardbind_ports::channel::{
    BindingRef, ChannelEventKind, ChannelStart, Notification, PaymentChannel, RemoteState,
};
use cardbind_ports::ChannelError;
use common::{bid, bind_request, key, ATTEMPT};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Parses `WECHATPAY2-SHA256-RSA2048 k="v",...`.
fn auth_params(h: &str) -> Option<HashMap<String, String>> {
    let rest = h.strip_prefix("WECHATPAY2-SHA256-RSA2048 ")?;
    let mut out = HashMap::new();
    for part in rest.split(',') {
        let (k, v) = part.split_once('=')?;
        out.insert(
            k.trim().to_owned(),
            v.trim().strip_prefix('"')?.strip_suffix('"')?.to_owned(),
        );
    }
    Some(out)
}

fn config(base_url: String) -> WechatConfig {
    WechatConfig {
        base_url,
        mchid: MCHID.into(),
        appid: APPID.into(),
        plan_id: 12535,
        serial_no: MERCHANT_SERIAL.into(),
        private_key_pem: key(0).private_pem.clone(),
        platform_keys: vec![
            (PLATFORM_SERIAL.into(), key(1).public_pem.clone()),
            (PLATFORM_SERIAL_2.into(), key(3).public_pem.clone()),
        ],
        apiv3_key: APIV3_KEY.into(),
        notify_url: "https://cardbind.example/v1/channels/wechat/notify".into(),
        presign_path: cardbind_channels::fakes::wechat::PRESIGN_PATH.into(),
        ..WechatConfig::default()
    }
}

async fn setup_with(cfg: impl FnOnce(WechatConfig) -> WechatConfig) -> (FakeWechat, WechatChannel) {
    let fake = FakeWechat::start().await.unwrap();
    let ch = WechatChannel::new(cfg(config(fake.base_url().to_owned()))).unwrap();
    (fake, ch)
}

async fn setup() -> (FakeWechat, WechatChannel) {
    setup_with(|c| c).await
}

const UUID: &str = "0191d3c5-7a4e-7c3b-9f10-2a6b8e4d1c77";

#[tokio::test]
async fn full_bind_flow() {
    let (fake, ch) = setup().await;
    let b = bid(UUID);
    let code = of_attempt(&b, ATTEMPT).unwrap();
    assert_eq!(code.len(), 28, "{code}");
    assert_eq!(
        ch.query(&b, Some(ATTEMPT), None).await.unwrap(),
        RemoteState::NotFound
    );
    let start = ch.start_binding(&bind_request(UUID)).await.unwrap();
    let ChannelStart::Redirect { channel_ref, url } = start else {
        panic!("{start:?}")
    };
    assert_eq!(channel_ref, code);
    assert!(url.contains(&code), "{url}");
    assert_eq!(
        ch.query(&b, Some(ATTEMPT), Some(channel_ref.clone()))
            .await
            .unwrap(),
        RemoteState::Pending
    );
    let n = fake.user_signs(&code, "EV-2025-0001").unwrap();
    let ev = ch.parse_notification(&n).unwrap();
    assert_eq!(ev.event_id, "EV-2025-0001");
    assert_eq!(ev.binding, BindingRef::Ours(b.clone()));
    let ChannelEventKind::Signed {
        channel_ref: contract_id,
    } = ev.kind
    else {
        panic!()
    };
    // Replayed callback: same event id.
    assert_eq!(ch.parse_notification(&n).unwrap().event_id, "EV-2025-0001");
    assert_eq!(
        ch.query(&b, Some(ATTEMPT), Some(contract_id.clone()))
            .await
            .unwrap(),
        RemoteState::Active {
            channel_ref: contract_id.clone()
        }
    );
    // At the end of its term, waiting for a renewal plan, it still exists.
    fake.contract_awaits_renewal(&code);
    assert_eq!(
        ch.query(&b, Some(ATTEMPT), Some(contract_id.clone()))
            .await
            .unwrap(),
        RemoteState::Active {
            channel_ref: contract_id.clone()
        }
    );
    ch.unbind(&b, Some(ATTEMPT), &contract_id).await.unwrap();
    assert_eq!(
        ch.query(&b, Some(ATTEMPT), None).await.unwrap(),
        RemoteState::Terminated
    );
    // Again: already ended is success.
    ch.unbind(&b, Some(ATTEMPT), &contract_id).await.unwrap();
    assert_eq!(
        fake.rejected_count(),
        0,
        "the fake refused a request: {:?}",
        fake.requests()
    );
    // The user ends the contract inside WeChat.
    let del = fake.user_terminates(&code, "EV-2025-0002").unwrap();
    let ev = ch.parse_notification(&del).unwrap();
    assert_eq!(ev.kind, ChannelEventKind::Terminated);
    assert_eq!(ev.binding, BindingRef::Ours(b));
    let paths = fake.verified_paths();
    assert!(paths.iter().any(|p| p.ends_with("/terminate")), "{paths:?}");
    assert!(
        paths
            .iter()
            .any(|p| *p == format!("POST {}", cardbind_channels::fakes::wechat::PRESIGN_PATH)),
        "{paths:?}"
    );
}

/// Only "no such contract" is not found (which an unbind takes for ended):
/// a signed 404 of a path the gateway does not serve is a refusal, so a
/// wrong base URL cannot end a card whose contract is live.
#[tokio::test]
async fn a_404_that_is_not_about_the_contract_is_no_not_found() {
    let (fake, ch) = setup().await;
    let b = bid(UUID);
    assert_eq!(
        ch.query(&b, Some(ATTEMPT), None).await,
        Ok(RemoteState::NotFound)
    );
    let misrouted = WechatChannel::new(config(format!("{}/elsewhere", fake.base_url()))).unwrap();
    let refused = |r: Result<(), ChannelError>| match r {
        Err(ChannelError::Rejected { code, .. }) => code,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        refused(misrouted.query(&b, Some(ATTEMPT), None).await.map(|_| ())),
        "NOT_FOUND"
    );
    let code = of_attempt(&b, ATTEMPT).unwrap();
    assert_eq!(
        refused(misrouted.unbind(&b, Some(ATTEMPT), &code).await),
        "NOT_FOUND"
    );
}

/// A callback for another app or another deduction plan of the merchant
/// is not about this service's contracts, however well signed.
#[tokio::test]
async fn a_callback_for_another_app_or_plan_is_refused() {
    let (fake, ch) = setup().await;
    let code = of_attempt(&bid(UUID), ATTEMPT).unwrap();
    let callback = |id: &str, appid: serde_json::Value, plan: serde_json::Value| {
        let n = fake
            .callback(
                id,
                "PAPAY.SIGN",
                serde_json::json!({
                    "mchid": MCHID, "appid": appid, "plan_id": plan,
                    "out_contract_code": code, "contract_id": "Wx0000000000000077",
                    "change_type": "ADD", "operate_time": "2025-01-01T10:00:00+08:00"
                }),
            )
            .unwrap();
        ch.parse_notification(&n).map(|e| e.event_id)
    };
    use serde_json::json;
    assert_eq!(
        callback("EV-a", json!(APPID), json!(PLAN_ID)),
        Ok("EV-a".to_owned())
    );
    assert_eq!(
        callback("EV-b", json!(APPID), json!(PLAN_ID.to_string())),
        Ok("EV-b".to_owned())
    );
    for (id, appid, plan) in [
        ("EV-c", json!("wx0000000000000000"), json!(PLAN_ID)),
        ("EV-d", json!(APPID), json!(PLAN_ID + 1)),
        ("EV-e", json!(APPID), json!((PLAN_ID + 1).to_string())),
        ("EV-f", json!(APPID), json!("12535x")),
        ("EV-g", json!(APPID), json!(null)),
    ] {
        assert_eq!(
            callback(id, appid, plan),
            Err(ChannelError::InvalidSignature),
            "{id}"
        );
    }
    // The merchant, app and plan are required: a callback that leaves one
    // out is refused too.
    for left_out in ["mchid", "appid", "plan_id"] {
        let mut contract = serde_json::json!({
            "mchid": MCHID, "appid": APPID, "plan_id": PLAN_ID,
            "out_contract_code": code, "contract_id": "Wx0000000000000078",
            "change_type": "ADD", "operate_time": "2025-01-01T10:00:00+08:00"
        });
        contract.as_object_mut().unwrap().remove(left_out);
        let n = fake
            .callback(&format!("EV-no-{left_out}"), "PAPAY.SIGN", contract)
            .unwrap();
        assert_eq!(
            ch.parse_notification(&n).map(|e| e.event_id),
            Err(ChannelError::InvalidSignature),
            "{left_out}"
        );
    }
}

/// A callback that says where the contract stands (`contract_state`)
/// instead of what changed (`change_type`) reads the same; one of ours
/// that says neither, or names a state or change that is no signing or
/// ending, is acknowledged and not acted on.
#[tokio::test]
async fn a_callback_naming_the_contract_state_reads_as_its_change() {
    use cardbind_ports::channel::ChannelEventKind;
    let (fake, ch) = setup().await;
    let code = of_attempt(&bid(UUID), ATTEMPT).unwrap();
    let callback = |id: &str, event: &str, state: Option<&str>| {
        let mut contract = serde_json::json!({
            "mchid": MCHID, "appid": APPID, "plan_id": PLAN_ID,
            "out_contract_code": code, "contract_id": "Wx0000000000000079",
            "contract_signed_time": "2025-01-01T10:00:00+08:00"
        });
        if let Some(state) = state {
            contract["contract_state"] = state.into();
        }
        let n = fake.callback(id, event, contract).unwrap();
        ch.parse_notification(&n).map(|e| e.kind)
    };
    assert_eq!(
        callback("EV-s1", "ENTRUST.SIGN", Some("SIGNED")),
        Ok(ChannelEventKind::Signed {
            channel_ref: "Wx0000000000000079".into()
        })
    );
    assert_eq!(
        callback("EV-s2", "ENTRUST.TERMINATE", Some("TERMINATED")),
        Ok(ChannelEventKind::Terminated)
    );
    for (id, state, kind) in [
        ("EV-s3", None, "unknown"),
        ("EV-s4", Some("TO_BE_RENEWED"), "TO_BE_RENEWED"),
        ("EV-s5", Some("x y"), "xy"),
    ] {
        assert_eq!(
            callback(id, "ENTRUST.SIGN", state),
            Err(ChannelError::NotActedOn { kind: kind.into() }),
            "{state:?}"
        );
    }
}

#[tokio::test]
async fn api_down_is_unavailable_and_recorded() {
    let (fake, ch) = setup().await;
    fake.set_down(true);
    assert!(matches!(
        ch.query(&bid("binddown"), Some(ATTEMPT), None).await,
        Err(ChannelError::Unavailable(_))
    ));
    let r = fake.requests();
    assert_eq!(r.len(), 1);
    assert!(
        !r[0].verified
            && r[0]
                .operation
                .starts_with("GET /v3/papay/sign/contracts/plan-id/12535/"),
        "{r:?}"
    );
}

#[tokio::test]
async fn sensitive_phone_is_oaep_encrypted_with_serial_header() {
    let (fake, ch) = setup_with(|c| WechatConfig {
        encrypted_phone_field: Some("phone".into()),
        ..c
    })
    .await;
    let start = ch.start_binding(&bind_request("bindphone1")).await.unwrap();
    assert!(matches!(start, ChannelStart::Redirect { .. }), "{start:?}");
    assert_eq!(fake.decrypted_phone().as_deref(), Some("+8613800138000"));
}

fn misconfigured(code: &str) -> ChannelError {
    ChannelError::Misconfigured { code: code.into() }
}

#[tokio::test]
async fn tampered_response_is_refused_as_unverifiable() {
    let (fake, ch) = setup().await;
    ch.start_binding(&bind_request("bindtamper1"))
        .await
        .unwrap();
    fake.tamper_answers(true);
    assert_eq!(
        ch.query(&bid("bindtamper1"), Some(ATTEMPT), None).await,
        Err(misconfigured("response_signature_invalid"))
    );
    assert_eq!(
        ch.start_binding(&bind_request("bindtamper2")).await,
        Err(misconfigured("response_signature_invalid"))
    );
}

#[tokio::test]
async fn response_signed_with_wrong_key_or_unknown_serial_is_refused_as_unverifiable() {
    let (fake, ch) = setup().await;
    fake.sign_with_wrong_key(true);
    assert_eq!(
        ch.query(&bid("bindw"), Some(ATTEMPT), None).await,
        Err(misconfigured("response_signature_invalid"))
    );
    fake.sign_with_wrong_key(false);
    fake.unknown_serial(true);
    assert_eq!(
        ch.query(&bid("bindw"), Some(ATTEMPT), None).await,
        Err(misconfigured("platform_key_unknown"))
    );
}

#[tokio::test]
async fn a_platform_key_we_do_not_hold_is_a_misconfiguration() {
    // WeChat Pay signs with its current platform key (the fake: under
    // PLATFORM_SERIAL); we hold only the older one.
    let (_fake, ch) = setup_with(|c| WechatConfig {
        platform_keys: vec![(PLATFORM_SERIAL_2.into(), key(3).public_pem.clone())],
        ..c
    })
    .await;
    assert_eq!(
        ch.query(&bid("bindpk"), Some(ATTEMPT), None).await,
        Err(misconfigured("platform_key_unknown"))
    );
    // The right serial with the wrong key installed under it.
    let (_fake, ch) = setup_with(|c| WechatConfig {
        platform_keys: vec![(PLATFORM_SERIAL.into(), key(3).public_pem.clone())],
        ..c
    })
    .await;
    assert_eq!(
        ch.query(&bid("bindpk"), Some(ATTEMPT), None).await,
        Err(misconfigured("response_signature_invalid"))
    );
}

#[tokio::test]
async fn second_platform_key_is_accepted_by_its_serial() {
    let (fake, ch) = setup().await;
    fake.use_second_platform_key(true);
    assert_eq!(
        ch.query(&bid("bindk2"), Some(ATTEMPT), None).await,
        Ok(RemoteState::NotFound)
    );
}

/// A self-signed X.509 certificate of `private_pem`'s key with this serial
/// (hex), made by openssl as WeChat Pay's platform certificates are shaped.
fn certificate(private_pem: &str, serial_hex: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    let cert = dir.path().join("c.pem");
    std::fs::write(&key, private_pem).unwrap();
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-new",
            "-days",
            "2",
            "-subj",
            "/CN=Tenpay.com sign",
        ])
        .arg("-set_serial")
        .arg(format!("0x{serial_hex}"))
        .arg("-key")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl on PATH");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(cert).unwrap()
}

#[tokio::test]
async fn a_platform_certificate_is_taken_as_it_is_downloaded_under_its_own_serial() {
    // WeChat Pay's certificate mode: the platform key arrives as an X.509
    // certificate whose serial is the one its answers name.
    let cert = certificate(&key(3).private_pkcs1_pem, PLATFORM_SERIAL_2);
    let (fake, ch) = setup_with(|c| WechatConfig {
        platform_keys: vec![
            (PLATFORM_SERIAL.into(), key(1).public_pem.clone()),
            (PLATFORM_SERIAL_2.to_lowercase(), cert.clone()),
        ],
        ..c
    })
    .await;
    fake.use_second_platform_key(true);
    assert_eq!(
        ch.query(&bid("bindcert"), Some(ATTEMPT), None).await,
        Ok(RemoteState::NotFound)
    );

    // Installed under another serial: refused at start, naming both.
    let e = WechatChannel::new(WechatConfig {
        platform_keys: vec![("5157F09EFDC096DE15EBE81A47057A7232F1B8E1".into(), cert)],
        ..config("http://127.0.0.1:9".into())
    })
    .unwrap_err();
    assert_eq!(e.field, "platform_keys");
    assert!(e.reason.contains(PLATFORM_SERIAL_2), "{e:?}");
    assert!(
        e.reason
            .contains("5157F09EFDC096DE15EBE81A47057A7232F1B8E1"),
        "{e:?}"
    );

    // A certificate of another key under the right serial verifies nothing.
    let stranger = certificate(&key(2).private_pkcs1_pem, PLATFORM_SERIAL_2);
    let (fake, ch) = setup_with(|c| WechatConfig {
        platform_keys: vec![(PLATFORM_SERIAL_2.into(), stranger)],
        ..c
    })
    .await;
    fake.use_second_platform_key(true);
    assert_eq!(
        ch.query(&bid("bindcert"), Some(ATTEMPT), None).await,
        Err(misconfigured("response_signature_invalid"))
    );

    // The same serial twice, once in lower case: one would silently win.
    let e = WechatChannel::new(WechatConfig {
        platform_keys: vec![
            (PLATFORM_SERIAL_2.into(), key(3).public_pem.clone()),
            (PLATFORM_SERIAL_2.to_lowercase(), key(2).public_pem.clone()),
        ],
        ..config("http://127.0.0.1:9".into())
    })
    .unwrap_err();
    assert_eq!(e.field, "platform_keys");
    assert!(e.reason.contains("twice"), "{e:?}");

    // Not a certificate after all.
    let e = WechatChannel::new(WechatConfig {
        platform_keys: vec![(
            PLATFORM_SERIAL_2.into(),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
        )],
        ..config("http://127.0.0.1:9".into())
    })
    .unwrap_err();
    assert_eq!(e.field, "platform_keys");
}

#[tokio::test]
async fn stale_timestamps_are_refused() {
    let (fake, ch) = setup().await;
    fake.timestamp_offset(-301);
    // An answer to our own request: our clock (or theirs) is off.
    assert_eq!(
        ch.query(&bid("binds"), Some(ATTEMPT), None).await,
        Err(misconfigured("clock_skew"))
    );
    fake.timestamp_offset(400);
    assert_eq!(
        ch.query(&bid("binds"), Some(ATTEMPT), None).await,
        Err(misconfigured("clock_skew"))
    );
    // A stale callback: refused as any unverifiable callback.
    fake.timestamp_offset(-3600);
    let n = fake.user_signs("binds", "EV-stale").unwrap();
    assert_eq!(
        ch.parse_notification(&n),
        Err(ChannelError::InvalidSignature)
    );
    fake.timestamp_offset(-200);
    assert_eq!(
        ch.query(&bid("binds"), Some(ATTEMPT), None)
            .await
            .map(|_| ()),
        Ok(())
    );
}

/// `Wechatpay-*` headers over `body` with this timestamp text, signed by
/// the platform key over exactly that text.
fn headers_stamped(body: &[u8], timestamp: &str) -> BTreeMap<String, String> {
    use rsa::pkcs1v15::SigningKey;
    use rsa::signature::{SignatureEncoding, Signer};
    let nonce = "Q1SDLF0A8ZB3WNLDC0T0V6HB3X9Y0W2E";
    let mut msg = format!("{timestamp}\n{nonce}\n").into_bytes();
    msg.extend_from_slice(body);
    msg.push(b'\n');
    let signer = SigningKey::<rsa::sha2::Sha256>::new(key(1).private.clone());
    let signature = B64.encode(signer.sign(&msg).to_bytes());
    BTreeMap::from([
        ("wechatpay-timestamp".to_owned(), timestamp.to_owned()),
        ("wechatpay-nonce".to_owned(), nonce.to_owned()),
        ("wechatpay-serial".to_owned(), PLATFORM_SERIAL.to_owned()),
        ("wechatpay-signature".to_owned(), signature),
    ])
}

#[tokio::test]
async fn timestamps_are_judged_as_wechat_pays_own_sdk_judges_them() {
    // The SDK (wechatpay-go) refuses a skew of 5 minutes or more, and
    // rebuilds the signed text from the parsed number.
    const NOW: i64 = 1_796_200_000;
    let (fake, _) = setup().await;
    let ch = WechatChannel::new(WechatConfig {
        clock: Some(common::FixedClock::at_millis(NOW * 1000)),
        ..config(fake.base_url().to_owned())
    })
    .unwrap();
    let body = fake.user_signs("bindts", "EV-ts").unwrap().body;
    let stamped = |ts: &str| Notification {
        headers: headers_stamped(&body, ts),
        body: body.clone(),
    };
    for taken in [NOW, NOW - 299, NOW + 299] {
        assert!(
            ch.parse_notification(&stamped(&taken.to_string())).is_ok(),
            "{}",
            taken - NOW
        );
    }
    for refused in [NOW - 300, NOW + 300, NOW - 3600] {
        assert_eq!(
            ch.parse_notification(&stamped(&refused.to_string())),
            Err(ChannelError::InvalidSignature),
            "{}",
            refused - NOW
        );
    }
    // Signed over text that is not the number's own.
    for text in [
        format!("+{NOW}"),
        format!("0{NOW}"),
        format!(" {NOW}"),
        String::new(),
    ] {
        assert_eq!(
            ch.parse_notification(&stamped(&text)),
            Err(ChannelError::InvalidSignature),
            "{text:?}"
        );
    }
}

#[tokio::test]
async fn signtest_signatures_are_refused() {
    let (fake, ch) = setup().await;
    fake.signtest(true);
    assert_eq!(
        ch.query(&bid("bindst"), Some(ATTEMPT), None).await,
        Err(ChannelError::InvalidSignature)
    );
    let n = fake.user_signs("bindst", "EV-st").unwrap();
    assert_eq!(
        ch.parse_notification(&n),
        Err(ChannelError::InvalidSignature)
    );
}

#[tokio::test]
async fn unsigned_success_is_forged() {
    let (fake, ch) = setup().await;
    fake.unsigned_answers(true);
    ch.start_binding(&bind_request("bindu")).await.unwrap_err();
    assert_eq!(
        ch.start_binding(&bind_request("bindu")).await,
        Err(ChannelError::InvalidSignature)
    );
    // Unsigned 404: not acted upon.
    assert!(matches!(
        ch.query(&bid("nothere"), Some(ATTEMPT), None).await,
        Err(ChannelError::Protocol(_))
    ));
}

#[tokio::test]
async fn wrong_merchant_key_is_refused_by_the_fake_as_a_misconfiguration() {
    let (fake, ch) = setup_with(|c| WechatConfig {
        private_key_pem: key(2).private_pkcs1_pem.clone(),
        ..c
    })
    .await;
    assert_eq!(
        ch.query(&bid("bindmk"), Some(ATTEMPT), None).await,
        Err(misconfigured("SIGN_ERROR"))
    );
    // At start it is not a refusal of the card.
    assert_eq!(
        ch.start_binding(&bind_request("bindmk")).await,
        Err(misconfigured("SIGN_ERROR"))
    );
    // Unbinding gives up at once (no follow-up query).
    assert_eq!(
        ch.unbind(&bid("bindmk"), Some(ATTEMPT), "Wx0000000000000001")
            .await,
        Err(misconfigured("SIGN_ERROR"))
    );
    assert_eq!(fake.rejected_count(), 3);
    assert_eq!(fake.requests()[0].refusal.as_deref(), Some("bad signature"));
}

#[tokio::test]
async fn wrong_serial_or_merchant_id_is_a_misconfiguration_signed_or_not() {
    let (fake, ch) = setup_with(|c| WechatConfig {
        serial_no: "0000000000000000000000000000000000000000".into(),
        ..c
    })
    .await;
    assert_eq!(
        ch.query(&bid("bindser"), Some(ATTEMPT), None).await,
        Err(misconfigured("SIGN_ERROR"))
    );
    assert_eq!(
        fake.requests()[0].refusal.as_deref(),
        Some("wrong serial_no")
    );
    // Another merchant id: WeChat Pay cannot sign for a merchant it does
    // not know; the unsigned 401 is still reported as a misconfiguration.
    let (fake, ch) = setup_with(|c| WechatConfig {
        mchid: "1900000999".into(),
        ..c
    })
    .await;
    assert_eq!(
        ch.start_binding(&bind_request("bindmch")).await,
        Err(misconfigured("SIGN_ERROR"))
    );
    assert_eq!(fake.requests()[0].refusal.as_deref(), Some("wrong mchid"));
}

#[tokio::test]
async fn an_appid_not_bound_to_the_merchant_is_a_misconfiguration() {
    let (fake, ch) = setup_with(|c| WechatConfig {
        appid: "wx0000000000000000".into(),
        ..c
    })
    .await;
    assert_eq!(
        ch.start_binding(&bind_request("bindapp")).await,
        Err(misconfigured("APPID_MCHID_NOT_MATCH"))
    );
    assert!(fake.requests()[0].verified);
}

#[tokio::test]
async fn papay_not_enabled_for_the_merchant_is_a_misconfiguration() {
    let (fake, ch) = setup().await;
    fake.set_papay_enabled(false);
    assert_eq!(
        ch.start_binding(&bind_request("bindnoauth")).await,
        Err(misconfigured("NO_AUTH"))
    );
    assert_eq!(
        ch.query(&bid("bindnoauth"), Some(ATTEMPT), None).await,
        Err(misconfigured("NO_AUTH"))
    );
    fake.set_papay_enabled(true);
    assert!(matches!(
        ch.start_binding(&bind_request("bindnoauth")).await,
        Ok(ChannelStart::Redirect { .. })
    ));
}

#[tokio::test]
async fn encrypting_for_a_platform_key_wechat_no_longer_uses_is_a_misconfiguration() {
    // Only a platform certificate is configured, and it encrypts sensitive
    // fields; WeChat Pay (signing with that certificate) decrypts only for
    // its public key.
    let (fake, ch) = setup_with(|c| WechatConfig {
        encrypted_phone_field: Some("phone".into()),
        platform_keys: vec![(PLATFORM_SERIAL_2.into(), key(3).public_pem.clone())],
        ..c
    })
    .await;
    fake.use_second_platform_key(true);
    assert_eq!(
        ch.start_binding(&bind_request("bindoldkey")).await,
        Err(misconfigured("PARAM_ERROR"))
    );
}

/// While a merchant moves from platform certificates to WeChat Pay's
/// public key, WeChat Pay signs an answer with the key the request names in
/// `Wechatpay-Serial`, and with the certificate when it names none. Every
/// request names the configured public key id, so a service that holds only
/// that key verifies every answer; with both configured, the public key
/// (listed after the certificate) is the one sensitive fields are encrypted
/// for.
#[tokio::test]
async fn every_request_names_the_public_key_id_so_answers_are_signed_with_it() {
    let (fake, ch) = setup_with(|c| WechatConfig {
        platform_keys: vec![(PLATFORM_SERIAL.into(), key(1).public_pem.clone())],
        ..c
    })
    .await;
    fake.moving_to_public_key(true);
    assert_eq!(
        ch.query(&bid("bindpub"), Some(ATTEMPT), None).await,
        Ok(RemoteState::NotFound)
    );
    assert!(matches!(
        ch.start_binding(&bind_request("bindpub")).await,
        Ok(ChannelStart::Redirect { .. })
    ));

    let (fake, ch) = setup_with(|c| WechatConfig {
        encrypted_phone_field: Some("phone".into()),
        platform_keys: vec![
            (PLATFORM_SERIAL_2.into(), key(3).public_pem.clone()),
            (PLATFORM_SERIAL.into(), key(1).public_pem.clone()),
        ],
        ..c
    })
    .await;
    fake.moving_to_public_key(true);
    assert!(matches!(
        ch.start_binding(&bind_request("bindpub2")).await,
        Ok(ChannelStart::Redirect { .. })
    ));
    assert!(fake.decrypted_phone().is_some());
    // Without a public key configured nothing is named, and the answers
    // signed with the certificate verify with it.
    let (fake, ch) = setup_with(|c| WechatConfig {
        platform_keys: vec![(PLATFORM_SERIAL_2.into(), key(3).public_pem.clone())],
        ..c
    })
    .await;
    fake.moving_to_public_key(true);
    assert_eq!(
        ch.query(&bid("bindcert"), Some(ATTEMPT), None).await,
        Ok(RemoteState::NotFound)
    );
}

#[tokio::test]
async fn business_refusals_stay_refusals() {
    let (fake, ch) = setup().await;
    fake.refuse_presigns(Some((403, "RULE_LIMIT")));
    assert!(matches!(
        ch.start_binding(&bind_request("bindrule")).await,
        Ok(ChannelStart::Refused { ref code, .. }) if code == "RULE_LIMIT"
    ));
    fake.refuse_presigns(None);
    // A parameter of the body refused (here the plan id): a refusal too;
    // the body carries the user's display name, so it is not taken as ours.
    let (_fake, ch) = setup_with(|c| WechatConfig { plan_id: 1, ..c }).await;
    assert!(matches!(
        ch.start_binding(&bind_request("bindplan")).await,
        Ok(ChannelStart::Refused { ref code, .. }) if code == "PARAM_ERROR"
    ));
}

#[tokio::test]
async fn callbacks_tampered_or_wrongly_keyed_are_refused() {
    let (fake, ch) = setup().await;
    let good = fake.user_signs("bindcb", "EV-cb").unwrap();
    assert!(ch.parse_notification(&good).is_ok());
    let mut t = good.clone();
    let s = String::from_utf8(t.body.clone())
        .unwrap()
        .replace("EV-cb", "EV-cc");
    t.body = s.into_bytes();
    assert_eq!(
        ch.parse_notification(&t),
        Err(ChannelError::InvalidSignature)
    );
    // Right signature, wrong APIv3 key: the callback is genuine, our key
    // is not the merchant's.
    let (_f2, other) = setup_with(|c| WechatConfig {
        apiv3_key: "ffffffffffffffffffffffffffffffff".into(),
        ..c
    })
    .await;
    assert_eq!(
        other.parse_notification(&good),
        Err(misconfigured("apiv3_key_mismatch"))
    );
    // Missing headers
    let mut h = good.clone();
    h.headers.remove("wechatpay-signature");
    assert_eq!(
        ch.parse_notification(&h),
        Err(ChannelError::InvalidSignature)
    );
    // Forged with a stranger's key
    fake.sign_with_wrong_key(true);
    assert_eq!(
        ch.parse_notification(&fake.user_signs("bindcb", "EV-f").unwrap()),
        Err(ChannelError::InvalidSignature)
    );
    let ack = ch.notification_ack();
    assert_eq!(ack.status, 200);
}

#[test]
fn contract_codes_round_trip() {
    let b = bid(UUID);
    let code = of_attempt(&b, ATTEMPT).unwrap();
    assert!(code.len() <= 32 && code.bytes().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(
        parse(&code),
        Some(Named {
            binding: b,
            attempt: Some(ATTEMPT)
        })
    );
    // A test id is its own code, but a notification naming it is not
    // taken for ours: only the forms the service makes are.
    for id in ["abc123", "A1"] {
        assert_eq!(of_attempt(&bid(id), ATTEMPT).as_deref(), Some(id));
        assert_eq!(parse(id), None);
    }
    assert_eq!(of_attempt(&bid("has-dash"), ATTEMPT), None);
    assert_eq!(
        of_attempt(&bid("0191d3c57a4e7c3b9f102a6b8e4d1c77"), ATTEMPT),
        None
    );
    assert_eq!(parse(""), None);
    assert_eq!(parse("bad code!"), None);
}

#[tokio::test]
async fn unsupported_binding_id_is_refused_at_start() {
    let (_fake, ch) = setup().await;
    assert!(matches!(
        ch.start_binding(&bind_request("has.dots")).await.unwrap(),
        ChannelStart::Refused { code, .. } if code == "unsupported_binding_id"
    ));
}

#[test]
fn config_errors_name_their_field_and_debug_hides_secrets() {
    let mut c = config("https://api.mch.weixin.qq.com".into());
    let d = format!("{c:?}");
    assert!(!d.contains(APIV3_KEY) && !d.contains("PRIVATE KEY"), "{d}");
    let ch = WechatChannel::new(c.clone()).unwrap();
    let d = format!("{ch:?}");
    assert!(!d.contains(APIV3_KEY) && !d.contains("PRIVATE"), "{d}");
    c.apiv3_key = "short".into();
    assert_eq!(
        WechatChannel::new(c.clone()).unwrap_err().field,
        "apiv3_key"
    );
    c.apiv3_key = APIV3_KEY.into();
    c.platform_keys.clear();
    assert_eq!(WechatChannel::new(c).unwrap_err().field, "platform_keys");
}

#[test]
fn authorization_header_matches_openssl_for_fixed_input() {
    // The header's signature is over METHOD\nPATH\nTS\nNONCE\nBODY\n: take
    // TS and NONCE back out of it and recompute the signature with openssl.
    let clock = common::FixedClock::at_millis(1_554_208_460_000);
    let ch = WechatChannel::new(WechatConfig {
        clock: Some(clock),
        ..config("https://api.mch.weixin.qq.com".into())
    })
    .unwrap();
    let body = r#"{"appid":"wxd678efh567hg6787","plan_id":12535}"#;
    let h = ch
        .authorization(
            "POST",
            "/v3/papay/sign/contracts/pre-entrust-sign/h5?x=1",
            body,
        )
        .unwrap();
    let p = auth_params(&h).unwrap();
    assert_eq!(p["timestamp"], "1554208460");
    assert_eq!(p["mchid"], MCHID);
    assert_eq!(p["serial_no"], MERCHANT_SERIAL);
    let msg = format!(
        "POST\n/v3/papay/sign/contracts/pre-entrust-sign/h5?x=1\n1554208460\n{}\n{body}\n",
        p["nonce_str"]
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("k.pem"), &key(0).private_pkcs1_pem).unwrap();
    std::fs::write(dir.path().join("m.txt"), msg.as_bytes()).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(dir.path().join("k.pem"))
        .arg(dir.path().join("m.txt"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(p["signature"], B64.encode(out.stdout));
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn channel() -> WechatChannel {
        WechatChannel::new(config("https://api.mch.weixin.qq.com".into())).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn callback_parser_never_panics(
            body in proptest::collection::vec(any::<u8>(), 0..300),
            ts in "[0-9a-z-]{0,12}",
            nonce in ".{0,8}",
            sig in "[A-Za-z0-9+/=]{0,40}",
            serial in prop_oneof![Just(PLATFORM_SERIAL.to_owned()), ".{0,8}".prop_map(|s| s)],
        ) {
            let mut headers = BTreeMap::new();
            headers.insert("wechatpay-timestamp".into(), ts);
            headers.insert("wechatpay-nonce".into(), nonce);
            headers.insert("wechatpay-signature".into(), sig);
            headers.insert("wechatpay-serial".into(), serial);
            let n = Notification { headers, body };
            prop_assert!(channel().parse_notification(&n).is_err());
        }

        #[test]
        fn validly_signed_garbage_is_refused(resource in "[ -~]{0,80}") {
            // Correct signature over a body whose resource is not valid.
            let body = format!("{{\"id\":\"x\",\"resource\":{}}}", serde_json::Value::String(resource));
            let headers = platform_signed_headers(body.as_bytes()).unwrap().into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
            let n = Notification { headers, body: body.into_bytes() };
            prop_assert_eq!(channel().parse_notification(&n), Err(ChannelError::InvalidSignature));
        }
    }
}

/// A contract signed before each bind had a code of its own sits under the
/// card id's 32 hex digits. The card holds its `contract_id`: queries and
/// the unbind still find it there, and only when the ids match.
#[tokio::test]
async fn a_contract_signed_under_the_old_code_is_found_by_its_contract_id_and_ended() {
    let (fake, ch) = setup().await;
    let b = bid(UUID);
    let legacy = "0191d3c57a4e7c3b9f102a6b8e4d1c77";
    let ev = ch
        .parse_notification(&fake.user_signs(legacy, "EV-old-1").unwrap())
        .unwrap();
    assert_eq!(ev.binding, BindingRef::Ours(b.clone()));
    assert_eq!(ev.attempt, None, "the old form names no attempt");
    let (_, contract_id) = fake.contract(legacy).unwrap();
    assert_eq!(
        ch.query(&b, Some(ATTEMPT), Some(contract_id.clone()))
            .await
            .unwrap(),
        RemoteState::Active {
            channel_ref: contract_id.clone()
        }
    );
    // Another contract id is not taken for it.
    assert_eq!(
        ch.query(&b, Some(ATTEMPT), Some("Wx-someone-else".into()))
            .await
            .unwrap(),
        RemoteState::NotFound
    );
    ch.unbind(&b, Some(ATTEMPT), "Wx-someone-else")
        .await
        .unwrap();
    assert_eq!(fake.contract(legacy).unwrap().0, "SIGNED");
    // The gateway answers the attempt's code (no contract) but fails on
    // the old one: the card's contract may be live there, so neither the
    // query nor the unbind reports it gone.
    let before = fake.verified_paths().len();
    fake.fail_queries_of(Some(legacy));
    let failed = ch.query(&b, Some(ATTEMPT), Some(contract_id.clone())).await;
    assert!(
        matches!(failed, Err(ChannelError::Unavailable(_))),
        "{failed:?}"
    );
    let failed = ch.unbind(&b, Some(ATTEMPT), &contract_id).await;
    assert!(failed.is_err(), "{failed:?}");
    assert_eq!(fake.contract(legacy).unwrap().0, "SIGNED");
    // Each asked the attempt's code, then the old one, which failed.
    let asked = fake.verified_paths().split_off(before);
    let gets = |code: &str| {
        asked
            .iter()
            .filter(|p| p.starts_with("GET ") && p.ends_with(&format!("/out-contract-code/{code}")))
            .count()
    };
    assert_eq!(gets(&of_attempt(&b, ATTEMPT).unwrap()), 2, "{asked:?}");
    assert_eq!(gets(legacy), 2, "{asked:?}");
    fake.fail_queries_of(None);
    ch.unbind(&b, Some(ATTEMPT), &contract_id).await.unwrap();
    assert_eq!(fake.contract(legacy).unwrap().0, "TERMINATED");
}

/// Each attempt of a card pre-signs under its own code, and the gateway
/// takes a code once: the attempt that follows an ended contract is not
/// refused.
#[tokio::test]
async fn each_attempt_of_a_card_presigns_under_its_own_code() {
    let (fake, ch) = setup().await;
    let b = bid(UUID);
    let mut first = bind_request(UUID);
    first.attempt = 11;
    let ChannelStart::Redirect { channel_ref, .. } = ch.start_binding(&first).await.unwrap() else {
        panic!("not a redirect")
    };
    assert_eq!(channel_ref, of_attempt(&b, 11).unwrap());
    let ev = ch
        .parse_notification(&fake.user_signs(&channel_ref, "EV-a-1").unwrap())
        .unwrap();
    assert_eq!(ev.attempt, Some(11));
    let (_, contract_id) = fake.contract(&channel_ref).unwrap();
    ch.unbind(&b, Some(11), &contract_id).await.unwrap();
    assert_eq!(fake.contract(&channel_ref).unwrap().0, "TERMINATED");
    // The same code again is refused, as the real gateway does...
    assert!(matches!(
        ch.start_binding(&first).await.unwrap(),
        ChannelStart::Refused { .. }
    ));
    // ...and the next attempt's is taken.
    let mut second = bind_request(UUID);
    second.attempt = 12;
    let ChannelStart::Redirect {
        channel_ref: r2, ..
    } = ch.start_binding(&second).await.unwrap()
    else {
        panic!("not a redirect")
    };
    assert_eq!(r2, of_attempt(&b, 12).unwrap());
    assert_eq!(
        ch.query(&b, Some(12), None).await.unwrap(),
        RemoteState::Pending
    );
    assert_eq!(
        ch.query(&b, Some(11), None).await.unwrap(),
        RemoteState::Terminated
    );
}

/// A card that holds a contract id finds that contract or none: a contract
/// of another id under the bind's code is an error, never taken for it.
#[tokio::test]
async fn a_contract_of_another_id_under_the_code_is_not_taken_for_the_cards() {
    let (fake, ch) = setup().await;
    let b = bid(UUID);
    let code = of_attempt(&b, ATTEMPT).unwrap();
    fake.user_signs(&code, "EV-other-1").unwrap();
    let (_, contract_id) = fake.contract(&code).unwrap();
    assert_eq!(
        ch.query(&b, Some(ATTEMPT), Some(contract_id.clone()))
            .await
            .unwrap(),
        RemoteState::Active {
            channel_ref: contract_id
        }
    );
    assert!(matches!(
        ch.query(&b, Some(ATTEMPT), Some("Wx-not-this-one".into()))
            .await,
        Err(ChannelError::Protocol(_))
    ));
}

/// The display name WeChat Pay shows on its signing page takes at most 32
/// (bytes here, the stricter reading) and no character of four UTF-8
/// bytes. A holder name may have 64 characters; one with a character of
/// four bytes (beyond U+FFFF) is refused before any channel sees it, and
/// the display name would drop it all the same.
#[tokio::test]
async fn a_long_or_rare_holder_name_is_fitted_to_the_display_name_wechat_takes() {
    use cardbind_channels::wechat::display_account;
    use cardbind_domain::HolderName;
    let (fake, ch) = setup().await;
    for (i, name) in [
        "Alexander Christopher Montgomery-Smith",
        "阿卜杜热合曼·买买提明·艾合买提",
        "王𠈌",
        &"a".repeat(64),
    ]
    .into_iter()
    .enumerate()
    {
        let shown = display_account(name);
        assert!(!shown.is_empty() && shown.len() <= 32, "{shown}");
        assert!(shown.chars().all(|c| c.len_utf8() < 4), "{shown}");
        assert!(
            name.starts_with(shown.trim_end_matches('*')) || shown.contains('*'),
            "{shown} is the start of {name}"
        );
        let Ok(holder_name) = HolderName::parse(name) else {
            assert!(name.chars().any(|c| c.len_utf8() == 4), "{name}");
            continue;
        };
        let mut request = bind_request(UUID);
        request.attempt = 100 + i as u32;
        request.holder_name = holder_name;
        assert!(
            matches!(
                ch.start_binding(&request).await.unwrap(),
                ChannelStart::Redirect { .. }
            ),
            "{name}"
        );
    }
    assert_eq!(display_account("王𠈌"), "王*");
    assert_eq!(display_account("张三"), "张三");
    assert_eq!(fake.rejected_count(), 0, "{:?}", fake.requests());
}

/// The pre-sign goes to the path configured (no default: each papay
/// product has its own pre-sign API), with the fields configured for it
/// beside the adapter's own; a path that is not an API path, or a field
/// the adapter sets itself, is refused when the channel is built.
#[tokio::test]
async fn the_presign_goes_where_configured_with_the_fields_configured() {
    let (fake, ch) = setup_with(|c| WechatConfig {
        presign_fields: serde_json::json!({"jump_control": {"jump_appid": APPID}})
            .as_object()
            .unwrap()
            .clone(),
        ..c
    })
    .await;
    let start = ch.start_binding(&bind_request(UUID)).await.unwrap();
    assert!(matches!(start, ChannelStart::Redirect { .. }), "{start:?}");
    let body = fake.last_presign().unwrap();
    assert_eq!(body["jump_control"]["jump_appid"], APPID);
    assert_eq!(body["appid"], APPID);
    assert_eq!(body["plan_id"], 12535);

    for bad in [
        "",
        "v3/papay/x",
        "https://api.mch.weixin.qq.com/v3/papay/x",
        "/v3/papay/a b",
    ] {
        let e = WechatChannel::new(WechatConfig {
            presign_path: bad.into(),
            ..config("http://127.0.0.1:9".into())
        })
        .err()
        .unwrap();
        assert!(e.to_string().contains("presign_path"), "{bad:?}: {e}");
    }
    let e = WechatChannel::new(WechatConfig {
        presign_fields: serde_json::json!({"plan_id": 1})
            .as_object()
            .unwrap()
            .clone(),
        ..config("http://127.0.0.1:9".into())
    })
    .err()
    .unwrap();
    assert!(e.to_string().contains("presign_fields"), "{e}");
}
