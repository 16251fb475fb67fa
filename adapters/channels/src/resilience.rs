//! Timeouts, retries and a circuit breaker around any channel.
//!
//! [`Resilient`] decorates an `Arc<dyn PaymentChannel>` and implements the
//! port itself. For every network operation (`start_binding`,
//! `confirm_otp`, `unbind`, `query`):
//!
//! 1. **Breaker**: while open, the call returns
//!    [`ChannelError::CircuitOpen`] without reaching the channel.
//! 2. **Timeout**: each attempt is bounded by
//!    [`ResilienceConfig::call_timeout`] (default 10 s) and becomes
//!    [`ChannelError::Timeout`] past it.
//! 3. **Retries**: at most [`ResilienceConfig::max_retries`] (default 3)
//!    more attempts, with exponential backoff and jitter (the `backon`
//!    crate's schedule), and only after a transient failure
//!    ([`ChannelError::is_transient`]: `Timeout`, `Unavailable`). A refusal,
//!    a misconfiguration, a bad signature or a protocol error is never
//!    retried.
//! 4. **Deadline**: the operation as a whole, retries included, is bounded
//!    by [`ResilienceConfig::deadline`] (default 20 s): each attempt is cut
//!    to what remains of it, and no retry starts unless it would still have
//!    a second (or its whole timeout, if shorter) after its backoff (the
//!    last failure is returned). Without it a start that
//!    timed out four times, with the queries between, would hold its HTTP
//!    request for over a minute, past the timeouts of most clients.
//!
//! ## The rule for `start_binding`
//!
//! A start that failed transiently may still have been applied by the
//! channel (the request left, the answer was lost). It is therefore never
//! retried blindly: after a transient failure the channel is asked
//! `query(binding_id, None)` (one attempt, through the breaker):
//!
//! * `NotFound` → the start was not applied: retry it (after the backoff);
//! * `Active { channel_ref }` → it was applied and is already bound: answer
//!   `Bound { channel_ref }`;
//! * anything else (`Pending`, `Failed`, `Terminated`, or the query failing
//!   too) → give up with the original error, so the binding goes to manual
//!   review with its state unknown rather than being started twice.
//!
//! `confirm_otp` is retried like the others: confirming the same OTP twice
//! is idempotent at the channels we support (a second confirm of an already
//! confirmed binding answers `Confirmed`).
//!
//! ## The breaker
//!
//! Closed → open after [`ResilienceConfig::failure_threshold`] (5)
//! consecutive failed attempts; open → half-open after
//! [`ResilienceConfig::open_duration`] (30 s), where exactly one trial call
//! goes through (the others still get `CircuitOpen`); the trial's success
//! closes the breaker, its failure opens it for another period. Only
//! transient failures count as failures: a refusal, a bad signature or a
//! protocol error means the channel answered, and counts as a success for
//! the breaker.
//!
//! A misconfiguration (`Misconfigured`) does not count either, on purpose:
//!
//! * the channel answered, so it is up: the breaker's question ("is it
//!   reachable?") has its answer;
//! * configuration is read at start-up, so the fix arrives with a restart,
//!   which resets the breaker anyway: opening it would not detect the fix
//!   sooner, it would only turn every later answer into `circuit_open` and
//!   hide the real cause from the metrics, the logs and the audit trail;
//! * a misconfiguration can concern one operation only (a product
//!   permission missing for signing while queries work): an open breaker
//!   would stop the operations that still work.
//!
//! Binds during a misconfiguration therefore each reach the channel once
//! (no retries) and each go to the review queue.
//!
//! The breaker is written here rather than taken from a crate: the ones on
//! crates.io (`failsafe`, `recloser`, `circuitbreaker-rs`) measure time with
//! `std::time::Instant` (so `tokio::time::pause` cannot drive their 30 s
//! tests), do not expose their state for a prometheus gauge, or do not limit
//! half-open to a single trial call; the state machine is forty lines. It
//! uses `tokio::time::Instant`, so tests with a paused clock are instant.
//!
//! ## Metrics
//!
//! Registered into the [`prometheus::Registry`] given to [`Resilient::new`],
//! with the channel name as a constant label (so one registry holds any
//! number of channels):
//!
//! * `cardbind_channel_breaker_state{channel}`: 0 closed, 1 open, 2 half-open,
//!   read from the breaker at each scrape (an open breaker whose period is
//!   over reads half-open before any call comes);
//! * `cardbind_channel_calls_total{channel,op,outcome}`: one per attempt
//!   (and one per notification parsed, `op="notification"`); `outcome` is
//!   `ok`, `rejected`, `misconfigured`, `timeout`, `unavailable`,
//!   `circuit_open`, `invalid_signature` or `protocol`. Alert on any
//!   `misconfigured` (see `docs/operations.md`).
//!
//! ## Misconfiguration
//!
//! A `Misconfigured` answer is logged at error level (channel, operation,
//! the stable code and the binding id: no card data, key or channel message
//! text) and, when an audit log is given ([`Resilient::with_audit`]),
//! appended to the service's own audit chain as `channel.misconfigured`
//! (actor `channel:NAME`, outcome
//! `channel_unavailable`, detail `OP: CODE`), so that the review queue it
//! fills can be explained from the audit trail.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use backon::{BackoffBuilder, ExponentialBuilder};
use cardbind_domain::{BindingId, ErrorCode, UserId};
use cardbind_ports::audit::{AuditAction, AuditActor, AuditEvent, AuditLog, Outcome};
use cardbind_ports::channel::{
    ChannelBindRequest, ChannelEvent, ChannelStart, ConfirmOutcome, Notification, NotificationAck,
    PaymentChannel, RemoteState,
};
use cardbind_ports::clock::Clock;
use cardbind_ports::ChannelError;
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tokio::time::Instant;

/// Settings of [`Resilient`].
#[derive(Clone, Debug)]
pub struct ResilienceConfig {
    /// Bound of one attempt (default 10 s).
    pub call_timeout: Duration,
    /// Attempts after the first, on transient failures only (default 3).
    pub max_retries: usize,
    /// First backoff delay (default 200 ms); doubles each retry.
    pub min_backoff: Duration,
    /// Largest backoff delay (default 5 s).
    pub max_backoff: Duration,
    /// Random jitter on each delay (default true).
    pub jitter: bool,
    /// Consecutive failures that open the breaker (default 5).
    pub failure_threshold: u32,
    /// How long the breaker stays open before a trial call (default 30 s).
    pub open_duration: Duration,
    /// Bound of one operation with all its attempts, queries and backoff
    /// delays (default 20 s).
    pub deadline: Duration,
}

impl Default for ResilienceConfig {
    fn default() -> Self {
        ResilienceConfig {
            call_timeout: Duration::from_secs(10),
            max_retries: 3,
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            jitter: true,
            failure_threshold: 5,
            open_duration: Duration::from_secs(30),
            deadline: Duration::from_secs(20),
        }
    }
}

/// What the breaker reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// The gauge value: 0 closed, 1 open, 2 half-open.
    pub fn as_gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

#[derive(Debug)]
enum Inner {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { trial_in_flight: bool },
}

/// A consecutive-failures circuit breaker on tokio's clock.
#[derive(Debug)]
pub struct CircuitBreaker {
    threshold: u32,
    open_for: Duration,
    inner: Arc<Mutex<Inner>>,
    /// The channel it guards, for the log lines of its changes.
    channel: String,
}

/// Whether an attempt was let through, and as what.
#[derive(Debug, PartialEq, Eq)]
enum Admission {
    Normal,
    Trial,
}

impl CircuitBreaker {
    pub fn new(threshold: u32, open_for: Duration) -> CircuitBreaker {
        CircuitBreaker {
            threshold: threshold.max(1),
            open_for,
            inner: Arc::new(Mutex::new(Inner::Closed { failures: 0 })),
            channel: String::new(),
        }
    }

    /// The breaker of `channel` (named in its log lines).
    fn of_channel(mut self, channel: &str) -> CircuitBreaker {
        self.channel = channel.to_owned();
        self
    }

    /// A gauge of this breaker's state, read when it is collected (a
    /// scrape): an open breaker whose period is over reads half-open then,
    /// without waiting for a call to move it.
    fn gauge(&self, gauge: IntGauge) -> BreakerGauge {
        BreakerGauge {
            inner: self.inner.clone(),
            gauge,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        lock_inner(&self.inner)
    }

    /// The state now (an open breaker whose period is over reads half-open).
    pub fn state(&self) -> BreakerState {
        state_now(&self.lock())
    }

    fn admit(&self) -> Option<Admission> {
        let mut inner = self.lock();
        match &mut *inner {
            Inner::Closed { .. } => Some(Admission::Normal),
            Inner::Open { until } => {
                if Instant::now() >= *until {
                    *inner = Inner::HalfOpen {
                        trial_in_flight: true,
                    };
                    Some(Admission::Trial)
                } else {
                    None
                }
            }
            Inner::HalfOpen { trial_in_flight } => {
                if *trial_in_flight {
                    None
                } else {
                    *trial_in_flight = true;
                    Some(Admission::Trial)
                }
            }
        }
    }

    fn record(&self, admission: &Admission, failed: bool) {
        let mut inner = self.lock();
        let next = match (&*inner, failed) {
            (Inner::Closed { .. }, false) => Inner::Closed { failures: 0 },
            // Only the trial's success closes an open breaker: a call let
            // through before it opened that succeeds late leaves it open
            // for its period (the failures that opened it came after).
            (Inner::HalfOpen { .. }, false) if *admission == Admission::Trial => {
                Inner::Closed { failures: 0 }
            }
            (Inner::HalfOpen { trial_in_flight }, false) => Inner::HalfOpen {
                trial_in_flight: *trial_in_flight,
            },
            (Inner::Open { until }, false) => Inner::Open { until: *until },
            (Inner::Closed { failures }, true) => {
                let failures = failures.saturating_add(1);
                if failures >= self.threshold {
                    Inner::Open {
                        until: Instant::now() + self.open_for,
                    }
                } else {
                    Inner::Closed { failures }
                }
            }
            (Inner::HalfOpen { .. }, true) if *admission == Admission::Trial => Inner::Open {
                until: Instant::now() + self.open_for,
            },
            // A late failure of a normal call while already open/half-open:
            // the state already says the channel is down.
            (Inner::HalfOpen { trial_in_flight }, true) => Inner::HalfOpen {
                trial_in_flight: *trial_in_flight,
            },
            (Inner::Open { until }, true) => Inner::Open { until: *until },
        };
        let (before, after) = (state_of(&inner), state_of(&next));
        *inner = next;
        drop(inner);
        // Each change is said once, by the call that made it: when a
        // channel was cut off and when it came back.
        let secs = self.open_for.as_secs();
        match (before, after) {
            (BreakerState::Closed, BreakerState::Open) => tracing::warn!(
                channel = %self.channel,
                failures = self.threshold,
                open_for_seconds = secs,
                "circuit breaker opened: calls to the channel are refused until a trial call succeeds"
            ),
            (BreakerState::HalfOpen, BreakerState::Open) => tracing::warn!(
                channel = %self.channel,
                open_for_seconds = secs,
                "circuit breaker trial call failed: open again"
            ),
            (BreakerState::HalfOpen, BreakerState::Closed) => tracing::info!(
                channel = %self.channel,
                "circuit breaker closed: the channel answered its trial call"
            ),
            _ => {}
        }
    }

    /// A trial attempt that never finished (its future was dropped): let
    /// the next call be the trial.
    fn abandon(&self, admission: &Admission) {
        if *admission != Admission::Trial {
            return;
        }
        let mut inner = self.lock();
        if let Inner::HalfOpen { .. } = &*inner {
            *inner = Inner::HalfOpen {
                trial_in_flight: false,
            };
        }
    }
}

fn lock_inner(inner: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    inner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn state_now(inner: &Inner) -> BreakerState {
    match inner {
        Inner::Open { until } if Instant::now() >= *until => BreakerState::HalfOpen,
        other => state_of(other),
    }
}

/// `cardbind_channel_breaker_state`, set from the breaker at each collection.
struct BreakerGauge {
    inner: Arc<Mutex<Inner>>,
    gauge: IntGauge,
}

impl prometheus::core::Collector for BreakerGauge {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.gauge
            .set(state_now(&lock_inner(&self.inner)).as_gauge());
        self.gauge.collect()
    }
}

fn state_of(inner: &Inner) -> BreakerState {
    match inner {
        Inner::Closed { .. } => BreakerState::Closed,
        Inner::Open { .. } => BreakerState::Open,
        Inner::HalfOpen { .. } => BreakerState::HalfOpen,
    }
}

/// Records the outcome when dropped without one (a cancelled attempt).
struct AdmissionGuard<'a> {
    breaker: &'a CircuitBreaker,
    admission: Option<Admission>,
}

impl AdmissionGuard<'_> {
    fn finish(mut self, failed: bool) {
        if let Some(a) = self.admission.take() {
            self.breaker.record(&a, failed);
        }
    }
}

impl Drop for AdmissionGuard<'_> {
    fn drop(&mut self) {
        if let Some(a) = self.admission.take() {
            self.breaker.abandon(&a);
        }
    }
}

fn outcome_label<T>(result: &Result<T, ChannelError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(ChannelError::Rejected { .. }) => "rejected",
        Err(ChannelError::Misconfigured { .. }) => "misconfigured",
        Err(ChannelError::Timeout) => "timeout",
        Err(ChannelError::Unavailable(_)) => "unavailable",
        Err(ChannelError::CircuitOpen) => "circuit_open",
        Err(ChannelError::InvalidSignature) => "invalid_signature",
        Err(ChannelError::Protocol(_)) => "protocol",
        Err(ChannelError::NotActedOn { .. }) => "not_acted_on",
    }
}

/// The audit event of a misconfigured answer (identifiers only).
fn misconfigured_event(
    channel: &str,
    at: cardbind_domain::Timestamp,
    user: Option<UserId>,
    binding: Option<BindingId>,
    detail: String,
) -> AuditEvent {
    AuditEvent {
        at,
        actor: AuditActor::service(format!("channel:{channel}")),
        action: AuditAction::ChannelMisconfigured,
        user_id: user,
        binding_id: binding,
        outcome: Outcome::Refused(ErrorCode::ChannelUnavailable),
        request_id: None,
        client_ip: None,
        detail: Some(detail),
    }
}

/// Where misconfigurations are audited (the service's own chain).
struct AuditSink {
    log: Arc<dyn AuditLog>,
    clock: Arc<dyn Clock>,
}

/// What a call is about, for the log line and audit event of a
/// misconfiguration (identifiers only, never card data).
#[derive(Clone, Copy)]
struct Subject<'a> {
    binding: Option<&'a BindingId>,
    user: Option<&'a UserId>,
}

impl<'a> Subject<'a> {
    fn binding(binding: &'a BindingId) -> Subject<'a> {
        Subject {
            binding: Some(binding),
            user: None,
        }
    }
}

/// The resilience decorator. See the module docs.
pub struct Resilient {
    inner: Arc<dyn PaymentChannel>,
    config: ResilienceConfig,
    breaker: CircuitBreaker,
    calls: IntCounterVec,
    /// Agreements this channel was asked to end and did not confirm ended.
    unbinds_failed: prometheus::IntCounter,
    audit: Option<AuditSink>,
}

impl std::fmt::Debug for Resilient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resilient")
            .field("channel", &self.inner.name())
            .field("config", &self.config)
            .field("breaker", &self.breaker.state())
            .finish()
    }
}

impl Resilient {
    /// Wraps `inner` and registers its metrics (labelled with
    /// `inner.name()`) into `registry`. Fails if that channel's metrics are
    /// already registered there.
    pub fn new(
        inner: Arc<dyn PaymentChannel>,
        config: ResilienceConfig,
        registry: &Registry,
    ) -> Result<Resilient, prometheus::Error> {
        let name = inner.name().to_owned();
        let gauge = IntGauge::with_opts(
            Opts::new(
                "cardbind_channel_breaker_state",
                "Circuit breaker state of a payment channel: 0 closed, 1 open, 2 half-open.",
            )
            .const_label("channel", &name),
        )?;
        let calls = IntCounterVec::new(
            Opts::new(
                "cardbind_channel_calls_total",
                "Payment channel call attempts by operation and outcome.",
            )
            .const_label("channel", &name),
            &["op", "outcome"],
        )?;
        let unbinds_failed = prometheus::IntCounter::with_opts(
            Opts::new(
                "cardbind_channel_unbinds_failed_total",
                "Agreements the channel was asked to end (an unbind, an unwanted signing) that it did not confirm ended, after every retry: they may still be active there.",
            )
            .const_label("channel", &name),
        )?;
        let breaker = CircuitBreaker::new(config.failure_threshold, config.open_duration)
            .of_channel(inner.name());
        registry.register(Box::new(breaker.gauge(gauge)))?;
        registry.register(Box::new(calls.clone()))?;
        registry.register(Box::new(unbinds_failed.clone()))?;
        Ok(Resilient {
            inner,
            config,
            breaker,
            calls,
            unbinds_failed,
            audit: None,
        })
    }

    /// Appends a `channel.misconfigured` event to `log` for every
    /// misconfigured answer, timestamped by `clock`.
    pub fn with_audit(mut self, log: Arc<dyn AuditLog>, clock: Arc<dyn Clock>) -> Resilient {
        self.audit = Some(AuditSink { log, clock });
        self
    }

    /// Logs (error level) and audits a misconfigured answer.
    async fn report_misconfigured(&self, op: &'static str, subject: Subject<'_>, code: &str) {
        let channel = self.inner.name();
        let binding = subject.binding.map(BindingId::as_str);
        tracing::error!(
            channel,
            op,
            code,
            binding,
            "channel misconfigured: the channel refused our credentials or configuration, or our channel keys cannot verify its answer; the card is not failed (it waits for review)"
        );
        let Some(sink) = &self.audit else { return };
        let now = sink.clock.now();
        let event = misconfigured_event(
            channel,
            now,
            subject.user.cloned(),
            subject.binding.cloned(),
            format!("{op}: {code}"),
        );
        if let Err(e) = sink.log.append_system(vec![event], now).await {
            tracing::error!(error = %e, channel, op, "audit append failed for a channel misconfiguration");
        }
    }

    /// The breaker's state now.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    pub fn inner(&self) -> &Arc<dyn PaymentChannel> {
        &self.inner
    }

    fn backoff(&self) -> impl Iterator<Item = Duration> {
        self.backoff_builder().build()
    }

    /// The instant an operation starting now must end by.
    fn deadline(&self) -> Instant {
        Instant::now() + self.config.deadline
    }

    /// The delay before the next attempt, unless there is none left or the
    /// attempt would not have [`Resilient::least_attempt`] before
    /// `deadline` (an attempt cut to a few milliseconds would only count a
    /// failure against the breaker).
    fn next_delay(
        &self,
        delays: &mut impl Iterator<Item = Duration>,
        deadline: Instant,
    ) -> Option<Duration> {
        delays.next().filter(|d| self.room_after(*d, deadline))
    }

    /// The least time worth giving an attempt: a second, or the whole
    /// per-attempt timeout when it is shorter.
    fn least_attempt(&self) -> Duration {
        self.config.call_timeout.min(Duration::from_secs(1))
    }

    /// Whether an attempt begun after `delay` still has its least time.
    fn room_after(&self, delay: Duration, deadline: Instant) -> bool {
        Instant::now() + delay + self.least_attempt() <= deadline
    }

    /// One attempt: breaker, timeout, metrics, misconfiguration report.
    async fn attempt<T, F>(
        &self,
        op: &'static str,
        subject: Subject<'_>,
        call: F,
        deadline: Instant,
    ) -> Result<T, ChannelError>
    where
        F: std::future::Future<Output = Result<T, ChannelError>>,
    {
        self.attempt_counting(op, subject, call, true, deadline)
            .await
    }

    /// As [`Resilient::attempt`]; a success closes the breaker only when
    /// `success_counts`. The query that checks whether a failed start was
    /// applied passes `false`: its answer says the channel reads, not that
    /// it starts bindings, and counting it would reset the failures of the
    /// starts before the breaker could ever open.
    async fn attempt_counting<T, F>(
        &self,
        op: &'static str,
        subject: Subject<'_>,
        call: F,
        success_counts: bool,
        deadline: Instant,
    ) -> Result<T, ChannelError>
    where
        F: std::future::Future<Output = Result<T, ChannelError>>,
    {
        let result = match self.breaker.admit() {
            None => Err(ChannelError::CircuitOpen),
            Some(admission) => {
                let guard = AdmissionGuard {
                    breaker: &self.breaker,
                    admission: Some(admission),
                };
                let bound = self
                    .config
                    .call_timeout
                    .min(deadline.saturating_duration_since(Instant::now()));
                let result = match tokio::time::timeout(bound, call).await {
                    Ok(r) => r,
                    Err(_) => Err(ChannelError::Timeout),
                };
                let failed = matches!(&result, Err(e) if e.is_transient());
                if failed || success_counts {
                    guard.finish(failed);
                }
                // Else the guard, dropped, only hands a trial on.
                result
            }
        };
        self.calls
            .with_label_values(&[op, outcome_label(&result)])
            .inc();
        match &result {
            Err(ChannelError::Misconfigured { code }) => {
                self.report_misconfigured(op, subject, code).await;
            }
            Err(e) => {
                tracing::debug!(channel = self.inner.name(), op, error = %e, "channel call failed");
            }
            Ok(_) => {}
        }
        result
    }

    /// Retries `make` on transient failures with backoff, within the
    /// operation's deadline.
    async fn with_retries<T, F, Fut>(
        &self,
        op: &'static str,
        subject: Subject<'_>,
        mut make: F,
    ) -> Result<T, ChannelError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ChannelError>>,
    {
        let deadline = self.deadline();
        let mut delays = self.backoff();
        loop {
            let err = match self.attempt(op, subject, make(), deadline).await {
                Err(e) if e.is_transient() => e,
                done => return done,
            };
            let Some(delay) = self.next_delay(&mut delays, deadline) else {
                return Err(err);
            };
            tokio::time::sleep(delay).await;
        }
    }

    fn backoff_builder(&self) -> ExponentialBuilder {
        let b = ExponentialBuilder::default()
            .with_min_delay(self.config.min_backoff)
            .with_max_delay(self.config.max_backoff)
            .with_max_times(self.config.max_retries);
        if self.config.jitter {
            b.with_jitter()
        } else {
            b
        }
    }
}

#[async_trait]
impl PaymentChannel for Resilient {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn start_binding(
        &self,
        request: &ChannelBindRequest,
    ) -> Result<ChannelStart, ChannelError> {
        let deadline = self.deadline();
        let mut delays = self.backoff();
        let subject = Subject {
            binding: Some(&request.binding_id),
            user: Some(&request.user_id),
        };
        loop {
            let err = match self
                .attempt(
                    "start_binding",
                    subject,
                    self.inner.start_binding(request),
                    deadline,
                )
                .await
            {
                Ok(start) => return Ok(start),
                Err(e) if !e.is_transient() => return Err(e),
                Err(e) => e,
            };
            let Some(delay) = self.next_delay(&mut delays, deadline) else {
                return Err(err);
            };
            // Was it applied? Only a NotFound allows a second start.
            match self
                .attempt_counting(
                    "query",
                    subject,
                    self.inner
                        .query(&request.binding_id, Some(request.attempt), None),
                    false,
                    deadline,
                )
                .await
            {
                // The query took its time: a retry still needs room.
                Ok(RemoteState::NotFound) if self.room_after(delay, deadline) => {
                    tracing::info!(
                        channel = self.inner.name(),
                        "start_binding failed transiently and was not applied; retrying"
                    );
                }
                Ok(RemoteState::Active { channel_ref }) => {
                    return Ok(ChannelStart::Bound { channel_ref })
                }
                Ok(_) | Err(_) => return Err(err),
            }
            tokio::time::sleep(delay).await;
        }
    }

    async fn confirm_otp(
        &self,
        binding: &BindingId,
        channel_ref: &str,
        otp: &str,
    ) -> Result<ConfirmOutcome, ChannelError> {
        self.with_retries("confirm_otp", Subject::binding(binding), || {
            self.inner.confirm_otp(binding, channel_ref, otp)
        })
        .await
    }

    async fn unbind(
        &self,
        binding: &BindingId,
        attempt: Option<u32>,
        channel_ref: &str,
    ) -> Result<(), ChannelError> {
        let ended = self
            .with_retries("unbind", Subject::binding(binding), || {
                self.inner.unbind(binding, attempt, channel_ref)
            })
            .await;
        if ended.is_err() {
            self.unbinds_failed.inc();
        }
        ended
    }

    async fn query(
        &self,
        binding: &BindingId,
        attempt: Option<u32>,
        channel_ref: Option<String>,
    ) -> Result<RemoteState, ChannelError> {
        self.with_retries("query", Subject::binding(binding), || {
            self.inner.query(binding, attempt, channel_ref.clone())
        })
        .await
    }

    fn parse_notification(
        &self,
        notification: &Notification,
    ) -> Result<ChannelEvent, ChannelError> {
        let result = self.inner.parse_notification(notification);
        self.calls
            .with_label_values(&["notification", outcome_label(&result)])
            .inc();
        if let Err(ChannelError::Misconfigured { code }) = &result {
            // Parsing is synchronous: the audit append runs on its own task.
            let channel = self.inner.name();
            tracing::error!(
                channel,
                op = "notification",
                code = code.as_str(),
                "channel misconfigured: a genuine notification cannot be read with our channel configuration; the channel will deliver it again"
            );
            if let Some(sink) = &self.audit {
                let now = sink.clock.now();
                let event =
                    misconfigured_event(channel, now, None, None, format!("notification: {code}"));
                let log = sink.log.clone();
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        if let Err(e) = log.append_system(vec![event], now).await {
                            tracing::error!(error = %e, "audit append failed for a channel misconfiguration");
                        }
                    });
                }
            }
        }
        result
    }

    fn notification_ack(&self) -> NotificationAck {
        self.inner.notification_ack()
    }
}
