//! The misconfiguration log line, in a test binary of its own: the
//! subscriber it installs must see every callsite, which tests running in
//! parallel threads without one can race (tracing's interest cache).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use cardbind_ports::channel::PaymentChannel;
use common::scripted::{metric, misconfigured, wrap, Recorded, Scripted};
use common::{bind_request, FixedClock};
use prometheus::Registry;

/// A writer the test subscriber logs into.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// Logs of this thread from `level` up, into the returned buffer, while
/// the guard lives.
fn capture(level: tracing::Level) -> (Captured, tracing::subscriber::DefaultGuard) {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(level)
        .with_ansi(false)
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

#[tokio::test(start_paused = true)]
async fn misconfiguration_is_not_retried_and_is_counted_logged_and_audited() {
    let (logs, _guard) = capture(tracing::Level::TRACE);

    let inner = Arc::new(Scripted::default().starts(vec![Err(misconfigured())]));
    let reg = Registry::new();
    let audit = Arc::new(Recorded::default());
    let r = wrap(inner.clone(), &reg).with_audit(audit.clone(), FixedClock::at_millis(1_000));
    let request = bind_request("bind-misconf");
    assert_eq!(r.start_binding(&request).await, Err(misconfigured()));
    // One call; no "was it applied?" query, no retry.
    assert_eq!(inner.start_calls.load(Ordering::SeqCst), 1);
    assert_eq!(inner.query_calls.load(Ordering::SeqCst), 0);
    assert_eq!(
        metric(
            &reg,
            "cardbind_channel_calls_total",
            &[("op", "start_binding"), ("outcome", "misconfigured")]
        ),
        1.0
    );
    let events = audit.0.lock().unwrap().clone();
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(
        (
            e.action.as_str(),
            e.actor.subject.as_str(),
            e.outcome.as_str(),
            e.binding_id.as_ref().map(|b| b.as_str()),
            e.user_id.as_ref().map(|u| u.as_str()),
            e.detail.as_deref(),
        ),
        (
            "channel.misconfigured",
            "channel:scripted",
            "channel_unavailable",
            Some("bind-misconf"),
            Some("user-1"),
            Some("start_binding: SIGN_ERROR"),
        )
    );
    assert_eq!(e.at.unix_millis(), 1_000);
    // Logged at error level with the code and the binding, and no card data.
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("channel misconfigured"))
        .unwrap_or_else(|| panic!("no misconfiguration line in {text}"));
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        line.contains("SIGN_ERROR") && line.contains("bind-misconf"),
        "{line}"
    );
    for secret in [
        "4111111111111111",
        "411111",
        "13800138000",
        "11010519491231002",
        "张三",
    ] {
        assert!(!text.contains(secret), "{secret} in {text}");
        assert!(!format!("{events:?}").contains(secret));
    }
}

/// A WeChat Pay callback signed under a platform key we have not
/// installed (WeChat Pay rotated its key), or stamped minutes away from
/// our clock, is refused as any bad signature is, and logged at warn
/// naming the serial: genuine ones are otherwise lost in silence once
/// WeChat Pay stops retrying.
#[tokio::test]
async fn a_callback_under_a_platform_key_not_installed_is_refused_and_warned() {
    use cardbind_channels::fakes::wechat as fw;
    use cardbind_channels::{WechatChannel, WechatConfig};
    let (logs, _guard) = capture(tracing::Level::INFO);
    let fake = cardbind_channels::fakes::FakeWechat::start().await.unwrap();
    let channel = |keys: Vec<(String, String)>| {
        WechatChannel::new(WechatConfig {
            base_url: fake.base_url().to_owned(),
            mchid: fw::MCHID.into(),
            appid: fw::APPID.into(),
            plan_id: fw::PLAN_ID,
            serial_no: fw::MERCHANT_SERIAL.into(),
            private_key_pem: common::key(0).private_pem.clone(),
            platform_keys: keys,
            apiv3_key: fw::APIV3_KEY.into(),
            notify_url: "https://cardbind.example/v1/channels/wechat/notify".into(),
            presign_path: fw::PRESIGN_PATH.into(),
            ..WechatConfig::default()
        })
        .unwrap()
    };
    // Only the older certificate is installed; the fake signs under the
    // public key id.
    let old_only = channel(vec![(
        fw::PLATFORM_SERIAL_2.into(),
        common::key(3).public_pem.clone(),
    )]);
    let signed = fake.user_signs("CODEUNKNOWNSERIAL01", "EV-1").unwrap();
    assert_eq!(
        old_only.parse_notification(&signed).err(),
        Some(cardbind_ports::ChannelError::InvalidSignature)
    );
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains(" WARN "), "{text}");
    assert!(text.contains(fw::PLATFORM_SERIAL), "{text}");
    assert!(text.contains("not installed"), "{text}");
    // More of them within the minute add no line (anyone can send them).
    for _ in 0..5 {
        assert!(old_only.parse_notification(&signed).is_err());
    }
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert_eq!(text.matches("not installed").count(), 1, "{text}");
    // A forged signature under a key we hold is refused without a warning.
    let both = channel(vec![(
        fw::PLATFORM_SERIAL.into(),
        common::key(1).public_pem.clone(),
    )]);
    logs.0.lock().unwrap().clear();
    let mut forged = signed.clone();
    forged.body.push(b' ');
    assert_eq!(
        both.parse_notification(&forged).err(),
        Some(cardbind_ports::ChannelError::InvalidSignature)
    );
    assert!(
        !String::from_utf8(logs.0.lock().unwrap().clone())
            .unwrap()
            .contains(" WARN "),
        "a mismatch is not a configuration fault"
    );
}

/// The breaker says when it opens (naming the channel, once, by the call
/// that opened it), when a trial fails, and when it closes: the gauge
/// alone told an operator reading the logs nothing of when a channel was
/// cut off or came back.
#[tokio::test(start_paused = true)]
async fn the_breaker_logs_each_change_once() {
    use cardbind_channels::ResilienceConfig;
    use cardbind_ports::channel::RemoteState;
    let (logs, _guard) = capture(tracing::Level::INFO);
    let inner = Arc::new(Scripted::default().query_default(Err(
        cardbind_ports::ChannelError::Unavailable("down".into()),
    )));
    let cfg = ResilienceConfig {
        max_retries: 0,
        ..ResilienceConfig::default()
    };
    let r = cardbind_channels::Resilient::new(inner.clone(), cfg, &Registry::new()).unwrap();
    let b = common::bid("b");
    for _ in 0..8 {
        let _ = r.query(&b, Some(common::ATTEMPT), None).await;
    }
    let text = || String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let count = |needle: &str| text().matches(needle).count();
    assert_eq!(count("circuit breaker opened"), 1, "{}", text());
    assert!(text().contains("channel=scripted"), "{}", text());
    // The trial fails: open again; then it succeeds: closed.
    tokio::time::advance(std::time::Duration::from_secs(30)).await;
    let _ = r.query(&b, Some(common::ATTEMPT), None).await;
    assert_eq!(count("trial call failed"), 1, "{}", text());
    tokio::time::advance(std::time::Duration::from_secs(30)).await;
    *inner.default_query.lock().unwrap() = Some(Ok(RemoteState::Pending));
    assert!(r.query(&b, Some(common::ATTEMPT), None).await.is_ok());
    assert_eq!(count("circuit breaker closed"), 1, "{}", text());
    assert_eq!(count("circuit breaker opened"), 1, "{}", text());
}
