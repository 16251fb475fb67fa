#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use std::time::Duration;

use cardbind_channels::mock::{
    mock_notification, mock_notification_sent_at, MOCK_SIGNATURE_HEADER,
};
use cardbind_channels::{MockChannel, MockConfig, MockMode};
use cardbind_ports::channel::{
    BindingRef, ChannelEventKind, ChannelStart, ConfirmOutcome, PaymentChannel, RemoteState,
};
use cardbind_ports::ChannelError;
use common::{bid, bind_request, bind_request_with_card, ATTEMPT};

fn mock(mode: MockMode) -> MockChannel {
    MockChannel::new(MockConfig {
        mode,
        ..MockConfig::default()
    })
}

#[test]
fn modes_parse() {
    for m in [
        "instant", "otp", "redirect", "decline", "timeout", "flaky", "slow",
    ] {
        assert_eq!(MockMode::parse(m).unwrap().as_str(), m);
    }
    assert_eq!(MockMode::parse("nope"), None);
}

#[tokio::test]
async fn instant_binds_at_once_and_unbinds() {
    let m = mock(MockMode::Instant);
    let start = m.start_binding(&bind_request("b1")).await.unwrap();
    let ChannelStart::Bound { channel_ref } = start else {
        panic!("{start:?}")
    };
    assert_eq!(
        m.query(&bid("b1"), Some(ATTEMPT), None).await.unwrap(),
        RemoteState::Active {
            channel_ref: channel_ref.clone()
        }
    );
    m.unbind(&bid("b1"), Some(ATTEMPT), &channel_ref)
        .await
        .unwrap();
    m.unbind(&bid("b1"), Some(ATTEMPT), &channel_ref)
        .await
        .unwrap();
    assert_eq!(
        m.query(&bid("b1"), Some(ATTEMPT), None).await.unwrap(),
        RemoteState::Terminated
    );
    assert_eq!(
        m.query(&bid("other"), Some(ATTEMPT), None).await.unwrap(),
        RemoteState::NotFound
    );
}

#[tokio::test]
async fn remembers_only_the_last_bindings_it_started() {
    let m = MockChannel::new(MockConfig {
        mode: MockMode::Otp,
        remember: 2,
        ..MockConfig::default()
    });
    for b in ["b1", "b2"] {
        m.start_binding(&bind_request(b)).await.unwrap();
    }
    // A change of a remembered binding does not make it newer, nor count twice.
    let r1 = "mock_b1";
    m.unbind(&bid("b1"), Some(ATTEMPT), r1).await.unwrap();
    assert_eq!(
        m.query(&bid("b1"), Some(ATTEMPT), None).await.unwrap(),
        RemoteState::Terminated
    );
    m.start_binding(&bind_request("b3")).await.unwrap();
    assert_eq!(
        m.query(&bid("b1"), Some(ATTEMPT), None).await.unwrap(),
        RemoteState::NotFound
    );
    for b in ["b2", "b3"] {
        assert_eq!(
            m.query(&bid(b), Some(ATTEMPT), None).await.unwrap(),
            RemoteState::Pending,
            "{b}"
        );
    }
    assert!(matches!(
        m.confirm_otp(&bid("b3"), "mock_b3", "123456")
            .await
            .unwrap(),
        ConfirmOutcome::Confirmed { .. }
    ));
    m.start_binding(&bind_request("b4")).await.unwrap();
    assert_eq!(
        m.query(&bid("b2"), Some(ATTEMPT), None).await.unwrap(),
        RemoteState::NotFound
    );
    assert!(matches!(
        m.query(&bid("b3"), Some(ATTEMPT), None).await.unwrap(),
        RemoteState::Active { .. }
    ));
}

#[tokio::test]
async fn otp_accepts_configured_code_only() {
    let m = MockChannel::new(MockConfig {
        mode: MockMode::Otp,
        otp_code: "654321".into(),
        ..MockConfig::default()
    });
    let ChannelStart::OtpSent { channel_ref } = m.start_binding(&bind_request("b2")).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(
        m.query(&bid("b2"), Some(ATTEMPT), None).await.unwrap(),
        RemoteState::Pending
    );
    assert_eq!(
        m.confirm_otp(&bid("b2"), &channel_ref, "123456")
            .await
            .unwrap(),
        ConfirmOutcome::WrongOtp
    );
    assert_eq!(
        m.confirm_otp(&bid("b2"), &channel_ref, "654321")
            .await
            .unwrap(),
        ConfirmOutcome::Confirmed {
            channel_ref: channel_ref.clone()
        }
    );
    assert!(matches!(
        m.query(&bid("b2"), Some(ATTEMPT), None).await.unwrap(),
        RemoteState::Active { .. }
    ));
}

#[tokio::test]
async fn default_otp_is_123456() {
    let m = mock(MockMode::Otp);
    m.start_binding(&bind_request("b3")).await.unwrap();
    assert!(matches!(
        m.confirm_otp(&bid("b3"), "mock_b3", "123456")
            .await
            .unwrap(),
        ConfirmOutcome::Confirmed { .. }
    ));
}

#[tokio::test]
async fn redirect_url_contains_binding_id_then_signed_notification_activates() {
    let m = mock(MockMode::Redirect);
    let ChannelStart::Redirect { url, .. } =
        m.start_binding(&bind_request("bind-42")).await.unwrap()
    else {
        panic!()
    };
    assert!(url.contains("bind-42"), "{url}");
    let secret = m.config().notification_secret.clone();
    let n = mock_notification(&secret, "evt-1", "bind-42", "signed", "tok-1");
    let ev = m.parse_notification(&n).unwrap();
    assert_eq!(ev.event_id, "evt-1");
    assert_eq!(ev.binding, BindingRef::Ours(bid("bind-42")));
    assert_eq!(
        ev.kind,
        ChannelEventKind::Signed {
            channel_ref: "tok-1".into()
        }
    );
    assert_eq!(
        m.query(&bid("bind-42"), Some(ATTEMPT), None).await.unwrap(),
        RemoteState::Active {
            channel_ref: "tok-1".into()
        }
    );
    // The same notification again parses to the same event id (the caller dedups).
    assert_eq!(m.parse_notification(&n).unwrap().event_id, "evt-1");
    let t = m
        .parse_notification(&mock_notification(
            &secret,
            "evt-2",
            "bind-42",
            "terminated",
            "",
        ))
        .unwrap();
    assert_eq!(t.kind, ChannelEventKind::Terminated);
}

#[tokio::test]
async fn notification_with_bad_signature_or_body_is_refused() {
    let m = mock(MockMode::Redirect);
    let mut n = mock_notification("wrong-secret", "e", "b", "signed", "r");
    assert_eq!(
        m.parse_notification(&n),
        Err(ChannelError::InvalidSignature)
    );
    let secret = m.config().notification_secret.clone();
    n = mock_notification(&secret, "e", "b", "signed", "r");
    n.body.push(b' ');
    assert_eq!(
        m.parse_notification(&n),
        Err(ChannelError::InvalidSignature)
    );
    n.headers.remove(MOCK_SIGNATURE_HEADER);
    assert_eq!(
        m.parse_notification(&n),
        Err(ChannelError::InvalidSignature)
    );
    // Signed with the secret but malformed: not a forgery, a message that
    // cannot be read (400, not 401).
    let bad_event = mock_notification(&secret, "e", "b", "exploded", "r");
    let no_id = mock_notification(&secret, "", "b", "signed", "r");
    let mut not_an_object = mock_notification(&secret, "e", "b", "signed", "r");
    not_an_object.body = b"[]".to_vec();
    not_an_object.headers.insert(
        MOCK_SIGNATURE_HEADER.to_owned(),
        MockChannel::sign_notification(&secret, b"[]"),
    );
    let unsent = {
        let body = br#"{"id":"e","binding_id":"b","event":"signed"}"#.to_vec();
        let mut n = mock_notification(&secret, "e", "b", "signed", "r");
        n.headers.insert(
            MOCK_SIGNATURE_HEADER.to_owned(),
            MockChannel::sign_notification(&secret, &body),
        );
        n.body = body;
        n
    };
    for n in [bad_event, no_id, not_an_object, unsent] {
        assert!(
            matches!(m.parse_notification(&n), Err(ChannelError::Protocol(_))),
            "{:?}",
            String::from_utf8_lossy(&n.body)
        );
    }
}

/// A notification sent more than five minutes ago (or ahead) is refused as
/// a replay, however well signed; inside the window it is taken.
#[tokio::test]
async fn a_notification_sent_outside_the_window_is_refused() {
    let m = mock(MockMode::Redirect);
    let secret = m.config().notification_secret.clone();
    let b = cardbind_domain::BindingId::from_uuid_bytes([7; 16]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let window = cardbind_channels::mock::NOTIFICATION_WINDOW_SECONDS;
    for (i, at) in [now - window - 5, now + window + 5, 0, i64::MIN, i64::MAX]
        .into_iter()
        .enumerate()
    {
        let n =
            mock_notification_sent_at(&secret, &format!("late-{i}"), b.as_str(), "signed", "r", at);
        assert_eq!(
            m.parse_notification(&n),
            Err(ChannelError::InvalidSignature),
            "{at}"
        );
    }
    for (i, at) in [now - window + 5, now, now + window - 5]
        .into_iter()
        .enumerate()
    {
        let n =
            mock_notification_sent_at(&secret, &format!("in-{i}"), b.as_str(), "signed", "r", at);
        assert!(m.parse_notification(&n).is_ok(), "{at}");
    }
}

#[tokio::test]
async fn decline_refuses_with_card_declined() {
    let m = mock(MockMode::Decline);
    assert_eq!(
        m.start_binding(&bind_request("b4")).await.unwrap(),
        ChannelStart::Refused {
            code: "card_declined".into(),
            message: "the mock channel declines this card".into()
        }
    );
}

#[tokio::test(start_paused = true)]
async fn timeout_sleeps_then_times_out() {
    let m = mock(MockMode::Timeout);
    let t0 = tokio::time::Instant::now();
    assert_eq!(
        m.start_binding(&bind_request("b5")).await,
        Err(ChannelError::Timeout)
    );
    assert!(t0.elapsed() >= Duration::from_secs(30));
}

#[tokio::test]
async fn flaky_fails_every_nth_call() {
    let m = MockChannel::new(MockConfig {
        mode: MockMode::Flaky,
        flaky_every: 3,
        ..MockConfig::default()
    });
    let mut outcomes = Vec::new();
    for i in 0..9 {
        outcomes.push(
            m.start_binding(&bind_request(&format!("f{i}")))
                .await
                .is_ok(),
        );
    }
    assert_eq!(
        outcomes,
        [true, true, false, true, true, false, true, true, false]
    );
}

#[tokio::test]
async fn card_modes_override_by_last4() {
    let mut cfg = MockConfig::default();
    cfg.card_modes.insert("0002".into(), MockMode::Decline);
    let m = MockChannel::new(cfg);
    let declined = m
        .start_binding(&bind_request_with_card("b6", "4000000000000002"))
        .await
        .unwrap();
    assert!(matches!(declined, ChannelStart::Refused { .. }));
    assert!(matches!(
        m.start_binding(&bind_request("b7")).await.unwrap(),
        ChannelStart::Bound { .. }
    ));
}

#[test]
fn debug_hides_secrets() {
    let m = MockChannel::new(MockConfig {
        notification_secret: "s3cr3t-value".into(),
        otp_code: "999111".into(),
        ..MockConfig::default()
    });
    let d = format!("{m:?}");
    assert!(!d.contains("s3cr3t-value") && !d.contains("999111"), "{d}");
}

#[tokio::test]
async fn slow_mode_answers_like_otp_after_its_delay() {
    let m = MockChannel::new(MockConfig {
        mode: MockMode::Slow,
        slow_after: Duration::from_millis(300),
        ..MockConfig::default()
    });
    let started = std::time::Instant::now();
    let ChannelStart::OtpSent { channel_ref } = m.start_binding(&bind_request("b9")).await.unwrap()
    else {
        panic!("slow mode should send an OTP")
    };
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(matches!(
        m.confirm_otp(&bid("b9"), &channel_ref, "123456")
            .await
            .unwrap(),
        ConfirmOutcome::Confirmed { .. }
    ));
}

#[tokio::test]
async fn a_code_for_a_binding_it_does_not_know_is_judged_by_the_code_alone() {
    // As after a restart of the service: the binding was started by the
    // process before, or forgotten past `remember`.
    let m = MockChannel::new(MockConfig {
        mode: MockMode::Otp,
        ..MockConfig::default()
    });
    assert_eq!(
        m.confirm_otp(&bid("before-restart"), "mock_x", "000000")
            .await
            .unwrap(),
        ConfirmOutcome::WrongOtp
    );
    assert_eq!(
        m.query(&bid("before-restart"), Some(ATTEMPT), None)
            .await
            .unwrap(),
        RemoteState::NotFound,
        "a wrong code leaves nothing behind"
    );
    assert_eq!(
        m.confirm_otp(&bid("before-restart"), "mock_x", "123456")
            .await
            .unwrap(),
        ConfirmOutcome::Confirmed {
            channel_ref: "mock_x".into()
        }
    );
    assert_eq!(
        m.query(&bid("before-restart"), Some(ATTEMPT), None)
            .await
            .unwrap(),
        RemoteState::Active {
            channel_ref: "mock_x".into()
        }
    );
    // Without a reference of ours, the mock's own.
    assert!(matches!(
        m.confirm_otp(&bid("other"), "", "123456").await.unwrap(),
        ConfirmOutcome::Confirmed { channel_ref } if channel_ref == "mock_other"
    ));
}
