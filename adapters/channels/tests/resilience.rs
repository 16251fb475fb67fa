#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use cardbind_channels::resilience::BreakerState;
use cardbind_channels::{MockChannel, MockConfig, MockMode, ResilienceConfig, Resilient};
use cardbind_ports::channel::{ChannelStart, Notification, PaymentChannel, RemoteState};
use cardbind_ports::ChannelError;
use common::scripted::{metric, misconfigured, wrap, Recorded, Scripted};
use common::{bid, bind_request, FixedClock, ATTEMPT};
use prometheus::Registry;

fn unavailable() -> ChannelError {
    ChannelError::Unavailable("down".into())
}

#[tokio::test(start_paused = true)]
async fn exactly_three_retries_on_unavailable_then_error() {
    let inner = Arc::new(Scripted::default().query_default(Err(unavailable())));
    let reg = Registry::new();
    let r = wrap(inner.clone(), &reg);
    assert_eq!(
        r.query(&bid("b"), Some(ATTEMPT), None).await,
        Err(unavailable())
    );
    assert_eq!(
        inner.query_calls.load(Ordering::SeqCst),
        4,
        "1 call + 3 retries"
    );
    assert_eq!(
        metric(
            &reg,
            "cardbind_channel_calls_total",
            &[
                ("channel", "scripted"),
                ("op", "query"),
                ("outcome", "unavailable")
            ]
        ),
        4.0
    );
}

#[tokio::test(start_paused = true)]
async fn retry_succeeds_after_transient_failures() {
    let inner = Arc::new(Scripted::default().queries(vec![
        Err(unavailable()),
        Err(ChannelError::Timeout),
        Ok(RemoteState::Pending),
    ]));
    let r = wrap(inner.clone(), &Registry::new());
    assert_eq!(
        r.query(&bid("b"), Some(ATTEMPT), None).await,
        Ok(RemoteState::Pending)
    );
    assert_eq!(inner.query_calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn no_retry_on_rejected() {
    let rejected = ChannelError::Rejected {
        code: "no".into(),
        message: "no".into(),
    };
    let inner = Arc::new(Scripted::default().unbind_result(Err(rejected.clone())));
    let reg = Registry::new();
    let r = wrap(inner.clone(), &reg);
    assert_eq!(
        r.unbind(&bid("b"), Some(ATTEMPT), "ref").await,
        Err(rejected)
    );
    assert_eq!(inner.unbind_calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        metric(
            &reg,
            "cardbind_channel_calls_total",
            &[("op", "unbind"), ("outcome", "rejected")]
        ),
        1.0
    );
}

#[tokio::test(start_paused = true)]
async fn no_retry_on_invalid_signature() {
    let inner = Arc::new(Scripted::default().query_default(Err(ChannelError::InvalidSignature)));
    let r = wrap(inner.clone(), &Registry::new());
    assert_eq!(
        r.query(&bid("b"), Some(ATTEMPT), None).await,
        Err(ChannelError::InvalidSignature)
    );
    assert_eq!(inner.query_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn per_call_timeout_is_ten_seconds() {
    let inner = Arc::new(Scripted::default().query_default(Ok(RemoteState::NotFound)));
    *inner.hang.lock().unwrap() = true;
    // The start hangs; the decorator cuts it at 10 s, then queries
    // (NotFound), retries, ... and finally reports the timeout. (A
    // deadline long enough for every retry.)
    let config = ResilienceConfig {
        deadline: Duration::from_secs(120),
        ..ResilienceConfig::default()
    };
    let r = Resilient::new(inner.clone(), config, &Registry::new()).unwrap();
    let t0 = tokio::time::Instant::now();
    assert_eq!(
        r.start_binding(&bind_request("b")).await,
        Err(ChannelError::Timeout)
    );
    assert_eq!(inner.start_calls.load(Ordering::SeqCst), 4);
    assert_eq!(inner.query_calls.load(Ordering::SeqCst), 3);
    assert!(t0.elapsed() >= Duration::from_secs(40));
}

/// The operation as a whole ends by its deadline (20 s by default):
/// without it, a start hanging four times held its request over 40 s.
#[tokio::test(start_paused = true)]
async fn a_hanging_channel_is_given_up_at_the_deadline_not_after_every_retry() {
    let inner = Arc::new(Scripted::default().query_default(Ok(RemoteState::NotFound)));
    *inner.hang.lock().unwrap() = true;
    let r = wrap(inner.clone(), &Registry::new());
    let t0 = tokio::time::Instant::now();
    assert_eq!(
        r.start_binding(&bind_request("b")).await,
        Err(ChannelError::Timeout)
    );
    let took = t0.elapsed();
    assert!(
        took <= Duration::from_secs(20),
        "the start took {took:?}, past its deadline"
    );
    assert!(took >= Duration::from_secs(19), "given up early: {took:?}");
    // The second start had the deadline's rest (under 10 s), and no third
    // one began.
    assert_eq!(inner.start_calls.load(Ordering::SeqCst), 2);

    // Every other operation too.
    *inner.hang_unbinds.lock().unwrap() = true;
    let t0 = tokio::time::Instant::now();
    assert_eq!(
        r.unbind(&bid("b"), Some(ATTEMPT), "ref").await,
        Err(ChannelError::Timeout)
    );
    assert!(
        t0.elapsed() <= Duration::from_secs(20),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(inner.unbind_calls.load(Ordering::SeqCst), 2);

    // No retry is begun that would have less than a second: cut to a few
    // hundred milliseconds it would only count a failure.
    let tight = ResilienceConfig {
        deadline: Duration::from_millis(10_500),
        jitter: false,
        ..ResilienceConfig::default()
    };
    let slow = Arc::new(Scripted::default().query_default(Ok(RemoteState::NotFound)));
    *slow.hang.lock().unwrap() = true;
    let r = Resilient::new(slow.clone(), tight, &Registry::new()).unwrap();
    assert_eq!(
        r.start_binding(&bind_request("b")).await,
        Err(ChannelError::Timeout)
    );
    assert_eq!(slow.start_calls.load(Ordering::SeqCst), 1, "no short retry");
    assert_eq!(slow.query_calls.load(Ordering::SeqCst), 0);

    // A retry whose backoff would end past the deadline does not begin.
    let short = ResilienceConfig {
        deadline: Duration::from_millis(150),
        min_backoff: Duration::from_millis(200),
        jitter: false,
        ..ResilienceConfig::default()
    };
    let down = Arc::new(Scripted::default().query_default(Err(unavailable())));
    let r = Resilient::new(down.clone(), short, &Registry::new()).unwrap();
    assert_eq!(
        r.query(&bid("b"), Some(ATTEMPT), None).await,
        Err(unavailable())
    );
    assert_eq!(down.query_calls.load(Ordering::SeqCst), 1, "no retry");
}

#[tokio::test(start_paused = true)]
async fn start_is_not_retried_when_query_does_not_say_not_found() {
    let inner = Arc::new(
        Scripted::default()
            .starts(vec![
                Err(ChannelError::Timeout),
                Ok(ChannelStart::Bound {
                    channel_ref: "x".into(),
                }),
            ])
            .queries(vec![Ok(RemoteState::Pending)]),
    );
    let r = wrap(inner.clone(), &Registry::new());
    assert_eq!(
        r.start_binding(&bind_request("b")).await,
        Err(ChannelError::Timeout)
    );
    assert_eq!(inner.start_calls.load(Ordering::SeqCst), 1);
    assert_eq!(inner.query_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn start_applied_despite_timeout_reads_as_bound() {
    let inner = Arc::new(
        Scripted::default()
            .starts(vec![Err(ChannelError::Timeout)])
            .queries(vec![Ok(RemoteState::Active {
                channel_ref: "tok".into(),
            })]),
    );
    let r = wrap(inner.clone(), &Registry::new());
    assert_eq!(
        r.start_binding(&bind_request("b")).await,
        Ok(ChannelStart::Bound {
            channel_ref: "tok".into()
        })
    );
    assert_eq!(inner.start_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn start_retried_after_query_not_found() {
    let inner = Arc::new(
        Scripted::default()
            .starts(vec![
                Err(unavailable()),
                Ok(ChannelStart::Bound {
                    channel_ref: "ok".into(),
                }),
            ])
            .queries(vec![Ok(RemoteState::NotFound)]),
    );
    let r = wrap(inner.clone(), &Registry::new());
    assert_eq!(
        r.start_binding(&bind_request("b")).await,
        Ok(ChannelStart::Bound {
            channel_ref: "ok".into()
        })
    );
    assert_eq!(inner.start_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn start_refusal_is_not_retried() {
    let refused = ChannelStart::Refused {
        code: "card_declined".into(),
        message: "m".into(),
    };
    let inner = Arc::new(Scripted::default().starts(vec![Ok(refused.clone())]));
    let r = wrap(inner.clone(), &Registry::new());
    assert_eq!(r.start_binding(&bind_request("b")).await, Ok(refused));
    assert_eq!(inner.start_calls.load(Ordering::SeqCst), 1);
    assert_eq!(inner.query_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn breaker_opens_after_five_failures_short_circuits_and_recovers() {
    let inner = Arc::new(Scripted::default().unbind_result(Err(unavailable())));
    let reg = Registry::new();
    let cfg = ResilienceConfig {
        max_retries: 0,
        ..ResilienceConfig::default()
    };
    let r = Resilient::new(inner.clone(), cfg, &reg).unwrap();
    let gauge = |reg: &Registry| {
        metric(
            reg,
            "cardbind_channel_breaker_state",
            &[("channel", "scripted")],
        )
    };
    assert_eq!(gauge(&reg), 0.0);
    for i in 0..5 {
        assert_eq!(
            r.breaker_state(),
            BreakerState::Closed,
            "before failure {i}"
        );
        assert_eq!(
            r.unbind(&bid("b"), Some(ATTEMPT), "r").await,
            Err(unavailable())
        );
    }
    assert_eq!(r.breaker_state(), BreakerState::Open);
    assert_eq!(gauge(&reg), 1.0);
    // Open: short-circuit without calling the channel.
    for _ in 0..3 {
        assert_eq!(
            r.unbind(&bid("b"), Some(ATTEMPT), "r").await,
            Err(ChannelError::CircuitOpen)
        );
    }
    assert_eq!(inner.unbind_calls.load(Ordering::SeqCst), 5);
    assert_eq!(
        metric(
            &reg,
            "cardbind_channel_calls_total",
            &[("op", "unbind"), ("outcome", "circuit_open")]
        ),
        3.0
    );
    // Still open just before 30 s.
    tokio::time::advance(Duration::from_secs(29)).await;
    assert_eq!(
        r.unbind(&bid("b"), Some(ATTEMPT), "r").await,
        Err(ChannelError::CircuitOpen)
    );
    assert_eq!(gauge(&reg), 1.0);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(r.breaker_state(), BreakerState::HalfOpen);
    // A scrape says so too, before any call comes to move the breaker.
    assert_eq!(gauge(&reg), 2.0);
    // Half-open trial fails: open again for 30 s.
    assert_eq!(
        r.unbind(&bid("b"), Some(ATTEMPT), "r").await,
        Err(unavailable())
    );
    assert_eq!(inner.unbind_calls.load(Ordering::SeqCst), 6);
    assert_eq!(r.breaker_state(), BreakerState::Open);
    assert_eq!(
        r.unbind(&bid("b"), Some(ATTEMPT), "r").await,
        Err(ChannelError::CircuitOpen)
    );
    tokio::time::advance(Duration::from_secs(30)).await;
    // The channel is back: the trial succeeds and closes the breaker.
    *inner.unbind_result.lock().unwrap() = Some(Ok(()));
    assert_eq!(r.unbind(&bid("b"), Some(ATTEMPT), "r").await, Ok(()));
    assert_eq!(r.breaker_state(), BreakerState::Closed);
    assert_eq!(gauge(&reg), 0.0);
    assert_eq!(r.unbind(&bid("b"), Some(ATTEMPT), "r").await, Ok(()));
    assert_eq!(inner.unbind_calls.load(Ordering::SeqCst), 8);
}

#[tokio::test(start_paused = true)]
async fn starts_that_time_out_open_the_breaker_though_the_check_query_answers() {
    // The channel's start path hangs while its query answers at once (not
    // found): the checks must not reset the starts' failures.
    let inner = Arc::new(Scripted::default().query_default(Ok(RemoteState::NotFound)));
    *inner.hang.lock().unwrap() = true;
    let r = wrap(inner.clone(), &Registry::new());
    // Two binds: 2 starts each (the second cut by the 20 s deadline), each
    // a failure.
    for (bind, starts) in [("b1", 2), ("b2", 4)] {
        assert_eq!(
            r.start_binding(&bind_request(bind)).await,
            Err(ChannelError::Timeout)
        );
        assert_eq!(inner.start_calls.load(Ordering::SeqCst), starts);
        assert_eq!(r.breaker_state(), BreakerState::Closed);
    }
    // The next bind's first start is the fifth failure in a row: open.
    assert!(r.start_binding(&bind_request("b3")).await.is_err());
    assert_eq!(r.breaker_state(), BreakerState::Open);
    assert_eq!(inner.start_calls.load(Ordering::SeqCst), 5);
    // Fail fast now, without asking the channel.
    let t0 = tokio::time::Instant::now();
    assert_eq!(
        r.start_binding(&bind_request("b4")).await,
        Err(ChannelError::CircuitOpen)
    );
    assert_eq!(inner.start_calls.load(Ordering::SeqCst), 5);
    assert!(t0.elapsed() < Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn half_open_lets_exactly_one_trial_through() {
    let inner = Arc::new(Scripted::default().query_default(Err(unavailable())));
    let cfg = ResilienceConfig {
        max_retries: 0,
        ..ResilienceConfig::default()
    };
    let r = Arc::new(Resilient::new(inner.clone(), cfg, &Registry::new()).unwrap());
    for _ in 0..5 {
        let _ = r.query(&bid("b"), Some(ATTEMPT), None).await;
    }
    tokio::time::advance(Duration::from_secs(30)).await;
    *inner.hang.lock().unwrap() = true; // (only starts hang; use a start as the trial)
    let trial = {
        let r = r.clone();
        tokio::spawn(async move { r.start_binding(&bind_request("b")).await })
    };
    tokio::task::yield_now().await;
    assert_eq!(r.breaker_state(), BreakerState::HalfOpen);
    assert_eq!(
        r.query(&bid("b"), Some(ATTEMPT), None).await,
        Err(ChannelError::CircuitOpen)
    );
    let _ = trial.await.unwrap();
    assert_eq!(inner.start_calls.load(Ordering::SeqCst), 1);
}

/// A call let through while the breaker was closed that succeeds after
/// others opened it does not close it: the breaker stays open its 30 s,
/// and only a trial's success closes it (before, the late success closed
/// it at once, and the next calls went to the failing channel).
#[tokio::test(start_paused = true)]
async fn a_late_success_of_a_call_admitted_before_the_breaker_opened_leaves_it_open() {
    let inner = Arc::new(Scripted::default().query_default(Err(unavailable())));
    *inner.slow_unbinds.lock().unwrap() = Some(Duration::from_secs(5));
    let cfg = ResilienceConfig {
        max_retries: 0,
        ..ResilienceConfig::default()
    };
    let r = Arc::new(Resilient::new(inner.clone(), cfg, &Registry::new()).unwrap());
    let slow = {
        let r = r.clone();
        tokio::spawn(async move { r.unbind(&bid("b"), Some(ATTEMPT), "r").await })
    };
    tokio::task::yield_now().await;
    assert_eq!(inner.unbind_calls.load(Ordering::SeqCst), 1, "admitted");
    for _ in 0..5 {
        let _ = r.query(&bid("b"), Some(ATTEMPT), None).await;
    }
    assert_eq!(r.breaker_state(), BreakerState::Open);
    assert_eq!(slow.await.unwrap(), Ok(()));
    assert_eq!(
        r.breaker_state(),
        BreakerState::Open,
        "a late success does not close it"
    );
    assert_eq!(
        r.query(&bid("b"), Some(ATTEMPT), None).await,
        Err(ChannelError::CircuitOpen)
    );
    assert_eq!(inner.query_calls.load(Ordering::SeqCst), 5);
    // Its 30 s over, one trial that succeeds closes it.
    tokio::time::advance(Duration::from_secs(25)).await;
    *inner.default_query.lock().unwrap() = Some(Ok(RemoteState::Pending));
    assert_eq!(
        r.query(&bid("b"), Some(ATTEMPT), None).await,
        Ok(RemoteState::Pending)
    );
    assert_eq!(r.breaker_state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn refusals_do_not_open_the_breaker() {
    let rejected = ChannelError::Rejected {
        code: "no".into(),
        message: "".into(),
    };
    let inner = Arc::new(Scripted::default().unbind_result(Err(rejected.clone())));
    let r = wrap(inner.clone(), &Registry::new());
    for _ in 0..10 {
        assert_eq!(
            r.unbind(&bid("b"), Some(ATTEMPT), "r").await,
            Err(rejected.clone())
        );
    }
    assert_eq!(r.breaker_state(), BreakerState::Closed);
}

#[test]
fn several_channels_share_one_registry() {
    let reg = Registry::new();
    let a = Resilient::new(
        Arc::new(MockChannel::new(MockConfig::default())),
        ResilienceConfig::default(),
        &reg,
    );
    let b = Resilient::new(
        Arc::new(MockChannel::new(MockConfig {
            name: "mock2".into(),
            ..MockConfig::default()
        })),
        ResilienceConfig::default(),
        &reg,
    );
    assert!(a.is_ok() && b.is_ok());
    // The same channel twice is an error.
    assert!(Resilient::new(
        Arc::new(MockChannel::new(MockConfig::default())),
        ResilienceConfig::default(),
        &reg
    )
    .is_err());
}

#[tokio::test(start_paused = true)]
async fn flaky_mock_behind_resilient_succeeds() {
    let mock = Arc::new(MockChannel::new(MockConfig {
        mode: MockMode::Flaky,
        flaky_every: 2,
        ..MockConfig::default()
    }));
    let r = Resilient::new(mock.clone(), ResilienceConfig::default(), &Registry::new()).unwrap();
    // Each operation counts its own calls: start 1 ok; query 1 ok, query
    // 2 fails and its retry, query 3, is ok.
    assert!(matches!(
        r.start_binding(&bind_request("fl")).await,
        Ok(ChannelStart::Bound { .. })
    ));
    for _ in 0..2 {
        assert!(matches!(
            r.query(&bid("fl"), Some(ATTEMPT), None).await,
            Ok(RemoteState::Active { .. })
        ));
    }
    assert_eq!(mock.calls(), 4);
}

/// A flaky start that fails is retried and lands: the query between (was
/// it applied?) does not take the start's turn. Before, one counter for
/// every operation made each start of a bind whose first start failed
/// fail again with `flaky_every = 2` (start, query, start…), so a flaky
/// card never bound (black-box run of the docs).
#[tokio::test(start_paused = true)]
async fn a_flaky_start_that_failed_lands_on_its_retry() {
    let mock = Arc::new(MockChannel::new(MockConfig {
        mode: MockMode::Flaky,
        flaky_every: 2,
        ..MockConfig::default()
    }));
    let r = Resilient::new(mock.clone(), ResilienceConfig::default(), &Registry::new()).unwrap();
    let start = |id: &'static str| {
        let r = &r;
        async move { r.start_binding(&bind_request(id)).await }
    };
    // Start 1 lands.
    assert!(matches!(
        start("fl-a").await,
        Ok(ChannelStart::Bound { .. })
    ));
    // Start 2 fails; query 1 finds it not applied; start 3 lands.
    assert!(matches!(
        start("fl-b").await,
        Ok(ChannelStart::Bound { .. })
    ));
    // Start 4 fails and query 2 fails too: whether it was applied is not
    // known, so the failure stands (the service sends the card to review).
    assert!(matches!(
        start("fl-c").await,
        Err(ChannelError::Unavailable(_))
    ));
    // Start 5 lands.
    assert!(matches!(
        start("fl-d").await,
        Ok(ChannelStart::Bound { .. })
    ));
    assert_eq!(mock.calls(), 7);
}

#[tokio::test(start_paused = true)]
async fn timeout_mock_behind_resilient_ends_in_timeout_quickly_in_paused_time() {
    let mock = Arc::new(MockChannel::new(MockConfig {
        mode: MockMode::Timeout,
        ..MockConfig::default()
    }));
    let r = Resilient::new(mock.clone(), ResilienceConfig::default(), &Registry::new()).unwrap();
    let err = r.start_binding(&bind_request("t")).await.unwrap_err();
    assert_eq!(err, ChannelError::Timeout);
    assert!(err.is_unreachable());
}

// ---- misconfiguration ------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn misconfiguration_is_not_retried_on_other_operations() {
    let inner = Arc::new(
        Scripted::default()
            .query_default(Err(misconfigured()))
            .unbind_result(Err(misconfigured())),
    );
    let r = wrap(inner.clone(), &Registry::new());
    assert_eq!(
        r.query(&bid("b"), Some(ATTEMPT), None).await,
        Err(misconfigured())
    );
    assert_eq!(
        r.unbind(&bid("b"), Some(ATTEMPT), "ref").await,
        Err(misconfigured())
    );
    assert_eq!(inner.query_calls.load(Ordering::SeqCst), 1);
    assert_eq!(inner.unbind_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn misconfiguration_does_not_open_the_breaker() {
    let inner = Arc::new(Scripted::default().query_default(Err(misconfigured())));
    let reg = Registry::new();
    let r = wrap(inner.clone(), &reg);
    for _ in 0..12 {
        assert_eq!(
            r.query(&bid("b"), Some(ATTEMPT), None).await,
            Err(misconfigured())
        );
    }
    // Every call reached the channel: the answer stays visible as it is.
    assert_eq!(inner.query_calls.load(Ordering::SeqCst), 12);
    assert_eq!(r.breaker_state(), BreakerState::Closed);
    assert_eq!(
        metric(
            &reg,
            "cardbind_channel_calls_total",
            &[("op", "query"), ("outcome", "misconfigured")]
        ),
        12.0
    );
    assert_eq!(
        metric(
            &reg,
            "cardbind_channel_calls_total",
            &[("outcome", "circuit_open")]
        ),
        0.0
    );
}

#[tokio::test(start_paused = true)]
async fn notifications_are_counted_and_a_misconfigured_one_is_audited() {
    let inner = Arc::new(Scripted::default());
    *inner.notification_result.lock().unwrap() = Some(Err(ChannelError::Misconfigured {
        code: "apiv3_key_mismatch".into(),
    }));
    let reg = Registry::new();
    let audit = Arc::new(Recorded::default());
    let r = wrap(inner.clone(), &reg).with_audit(audit.clone(), FixedClock::at_millis(5));
    let n = Notification::default();
    assert!(matches!(
        r.parse_notification(&n),
        Err(ChannelError::Misconfigured { .. })
    ));
    *inner.notification_result.lock().unwrap() = None;
    assert_eq!(
        r.parse_notification(&n),
        Err(ChannelError::InvalidSignature)
    );
    for outcome in ["misconfigured", "invalid_signature"] {
        assert_eq!(
            metric(
                &reg,
                "cardbind_channel_calls_total",
                &[("op", "notification"), ("outcome", outcome)]
            ),
            1.0,
            "{outcome}"
        );
    }
    // The audit append runs on its own task.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let events = audit.0.lock().unwrap().clone();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].action.as_str(), "channel.misconfigured");
    assert_eq!(
        events[0].detail.as_deref(),
        Some("notification: apiv3_key_mismatch")
    );
}

#[test]
fn misconfiguration_is_not_transient_and_answers_channel_unavailable() {
    let e = misconfigured();
    assert!(!e.is_transient());
    assert!(!e.is_unreachable());
    assert_eq!(e.to_string(), "channel misconfigured: SIGN_ERROR");
}

/// An agreement the channel did not confirm ended, after every retry, is
/// counted: it may still be active (debitable) at the channel, and the
/// unbind answered the user all the same.
#[tokio::test(start_paused = true)]
async fn an_unbind_the_channel_never_confirmed_is_counted() {
    let inner = Arc::new(Scripted::default().unbind_result(Err(unavailable())));
    let reg = Registry::new();
    let r = wrap(inner.clone(), &reg);
    let failed = |reg: &Registry| metric(reg, "cardbind_channel_unbinds_failed_total", &[]);
    assert_eq!(failed(&reg), 0.0, "exported from the start");
    assert!(r.unbind(&bid("b"), Some(ATTEMPT), "r").await.is_err());
    assert_eq!(
        inner.unbind_calls.load(Ordering::SeqCst),
        4,
        "with its retries"
    );
    assert_eq!(failed(&reg), 1.0, "once, not per attempt");
    *inner.unbind_result.lock().unwrap() = Some(Ok(()));
    assert!(r.unbind(&bid("b"), Some(ATTEMPT), "r").await.is_ok());
    assert_eq!(failed(&reg), 1.0);
}
