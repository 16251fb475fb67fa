//! The steady workload: "flows" started at a fixed rate (open loop, so a
//! slow service does not slow the arrivals), each a new user binding one
//! card, verifying it with the mock OTP, and half of them unbinding it.
//! Every answer is recorded (status, latency, phase) and checked against the
//! statuses its operation declares; every flow remembers what its client
//! was told, for the reconciliation with the store afterwards.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cards::Card;
use crate::service::{LAST4_DECLINE, LAST4_FLAKY, LAST4_SLOW, LAST4_TIMEOUT};
use crate::spec::Spec;

pub use crate::reconcile::{reconcile, recovered_at, Reconciliation};

/// Which card a flow binds: an ordinary one, or one the mock channel treats
/// specially (per-card modes by last four, see `service.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Normal,
    Decline,
    Slow,
    Flaky,
    Timeout,
}

impl Kind {
    /// A new card of this kind.
    pub fn card(self) -> Card {
        match self {
            Kind::Decline => Card::ending(LAST4_DECLINE),
            Kind::Slow => Card::ending(LAST4_SLOW),
            Kind::Flaky => Card::ending(LAST4_FLAKY),
            Kind::Timeout => Card::ending(LAST4_TIMEOUT),
            Kind::Normal => loop {
                let last4 = crate::cards::digits(4);
                if ![LAST4_DECLINE, LAST4_SLOW, LAST4_FLAKY, LAST4_TIMEOUT]
                    .contains(&last4.as_str())
                {
                    break Card::ending(&last4);
                }
            },
        }
    }
}

/// One answer (or transport failure) as a client saw it.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: Option<u16>,
    pub code: Option<String>,
    pub body: Value,
    pub error: Option<String>,
}

impl Answer {
    fn ambiguous(&self) -> bool {
        match self.status {
            None => true,
            Some(s) if s >= 500 => true,
            Some(409) => self.code.as_deref() == Some("idempotency_key_in_progress"),
            _ => false,
        }
    }
}

/// One recorded request.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub phase: usize,
    /// Start, milliseconds since the recorder began.
    pub at_ms: u64,
    pub took_ms: f64,
    pub status: Option<u16>,
}

/// An answer whose status the operation does not declare.
#[derive(Clone, Debug)]
pub struct Undeclared {
    pub phase: usize,
    pub method: String,
    pub operation: String,
    pub status: u16,
    pub code: Option<String>,
}

/// Everything the clients saw.
pub struct Recorder {
    pub spec: Spec,
    t0: Instant,
    phase: AtomicUsize,
    samples: Mutex<Vec<Sample>>,
    undeclared: Mutex<Vec<Undeclared>>,
}

impl Recorder {
    pub fn new(spec: Spec) -> Recorder {
        Recorder {
            spec,
            t0: Instant::now(),
            phase: AtomicUsize::new(0),
            samples: Mutex::new(Vec::new()),
            undeclared: Mutex::new(Vec::new()),
        }
    }

    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.t0.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn set_phase(&self, p: usize) {
        self.phase.store(p, Ordering::SeqCst);
    }

    pub fn phase(&self) -> usize {
        self.phase.load(Ordering::SeqCst)
    }

    /// Checks and records an answer to `method path`.
    #[allow(clippy::too_many_arguments)] // one flat record, named at every call
    pub fn record(
        &self,
        phase: usize,
        method: &str,
        path: &str,
        at_ms: u64,
        took: Duration,
        status: Option<u16>,
        code: Option<&str>,
    ) {
        if let Some(s) = status {
            if self.spec.declares(method, path, s) != Some(true) {
                let operation = self
                    .spec
                    .operation(method, path)
                    .unwrap_or_else(|| "(no operation)".into());
                self.undeclared
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Undeclared {
                        phase,
                        method: method.to_owned(),
                        operation,
                        status: s,
                        code: code.map(str::to_owned),
                    });
            }
        }
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Sample {
                phase,
                at_ms,
                took_ms: took.as_secs_f64() * 1000.0,
                status,
            });
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn undeclared(&self) -> Vec<Undeclared> {
        self.undeclared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The `q` quantile (0–1) of `values`, milliseconds (0 when empty).
pub fn quantile(mut values: Vec<f64>, q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let i = ((values.len() as f64 - 1.0) * q).round() as usize;
    values[i.min(values.len() - 1)]
}

/// An HTTP client of the service that records every answer.
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
    pub rec: Arc<Recorder>,
}

impl Api {
    pub fn new(base: &str, token: &str, rec: Arc<Recorder>) -> anyhow::Result<Api> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .connect_timeout(Duration::from_secs(5))
            // Below the server's header deadline (10 s), which also closes
            // idle keep-alive connections between requests after
            // `keep_alive_timeout`: the client lets go first.
            .pool_idle_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Api {
            http,
            base: base.to_owned(),
            token: token.to_owned(),
            rec,
        })
    }

    pub async fn call(
        &self,
        phase: usize,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        idem: Option<&str>,
    ) -> Answer {
        let at_ms = self.rec.now_ms();
        let started = Instant::now();
        let mut rb = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(k) = idem {
            rb = rb.header("Idempotency-Key", k);
        }
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let answer = match rb.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                match r.bytes().await {
                    Ok(bytes) => {
                        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                        Answer {
                            status: Some(status),
                            code: body["error"]["code"].as_str().map(str::to_owned),
                            body,
                            error: None,
                        }
                    }
                    Err(e) => Answer {
                        status: None,
                        code: None,
                        body: Value::Null,
                        error: Some(format!("reading the body: {e}")),
                    },
                }
            }
            Err(e) => Answer {
                status: None,
                code: None,
                body: Value::Null,
                error: Some(e.to_string()),
            },
        };
        self.rec.record(
            phase,
            method.as_str(),
            path,
            at_ms,
            started.elapsed(),
            answer.status,
            answer.code.as_deref(),
        );
        answer
    }

    /// Every card of `user` (all pages); `None` when the list cannot be read.
    pub async fn list_all(&self, phase: usize, user: &str) -> Option<Vec<Value>> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..50 {
            let path = match &after {
                Some(a) => format!("/v1/users/{user}/cards?limit=100&after={a}"),
                None => format!("/v1/users/{user}/cards?limit=100"),
            };
            let mut page = None;
            for attempt in 0..5u64 {
                let a = self
                    .call(phase, reqwest::Method::GET, &path, None, None)
                    .await;
                if a.status == Some(200) {
                    page = Some(a.body);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500 * (attempt + 1))).await;
            }
            let page = page?;
            out.extend(page["cards"].as_array().cloned().unwrap_or_default());
            match page["next_after"].as_str() {
                Some(n) if !n.is_empty() => after = Some(n.to_owned()),
                _ => return Some(out),
            }
        }
        Some(out)
    }
}

/// What one step of a flow ended with, after the client's retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx.
    Done,
    /// `422 channel_rejected`: the card is recorded `failed`.
    Declined,
    /// Any other 4xx: nothing should have been written.
    Refused,
    /// Transport error, timeout, 5xx, or a key still in progress.
    Ambiguous,
}

/// One user's bind (and verify, and maybe unbind) as its client saw it.
#[derive(Clone, Debug)]
pub struct Flow {
    pub phase: usize,
    pub kind: Kind,
    pub user: String,
    pub bin: String,
    pub last4: String,
    pub started_ms: u64,
    pub finished_ms: u64,
    pub bind: Outcome,
    pub bind_http: Option<u16>,
    pub bind_code: Option<String>,
    /// A retry with the same Idempotency-Key after an ambiguous answer was
    /// refused (409 `card_already_bound`: the first attempt's record was in
    /// the way; 429: the attempts used up the per-user bind limit).
    pub bind_retry_conflict: bool,
    pub card_id: Option<String>,
    pub verify: Option<Outcome>,
    pub unbind: Option<Outcome>,
    /// Every first attempt got the answer a healthy service gives.
    pub healthy: bool,
}

/// Retry delays for ambiguous answers (what a careful client does).
const RETRY_DELAYS_MS: [u64; 5] = [500, 1000, 2000, 4000, 8000];

/// The last answer, whether the first attempt was unambiguous, and whether
/// any attempt was ambiguous.
async fn with_retries<F, Fut>(mut attempt: F) -> (Answer, bool, bool)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    let mut a = attempt().await;
    let first_ok = !a.ambiguous();
    let mut retried = false;
    for d in RETRY_DELAYS_MS {
        if !a.ambiguous() {
            break;
        }
        retried = true;
        tokio::time::sleep(Duration::from_millis(d)).await;
        a = attempt().await;
    }
    (a, first_ok, retried)
}

fn classify(a: &Answer) -> Outcome {
    match a.status {
        _ if a.ambiguous() => Outcome::Ambiguous,
        Some(s) if (200..300).contains(&s) => Outcome::Done,
        Some(422) if a.code.as_deref() == Some("channel_rejected") => Outcome::Declined,
        _ => Outcome::Refused,
    }
}

/// Runs one flow.
pub async fn run_flow(api: Arc<Api>, phase: usize, kind: Kind, user: String, unbind: bool) -> Flow {
    let card = kind.card();
    let started_ms = api.rec.now_ms();
    let key = format!("faults-{}", uuid::Uuid::new_v4());
    let body = card.body();
    let path = format!("/v1/users/{user}/cards");
    let (bind, bind_first_ok, bind_retried) =
        with_retries(|| api.call(phase, reqwest::Method::POST, &path, Some(&body), Some(&key)))
            .await;
    // A retry refused after an ambiguous attempt (409 card_already_bound:
    // it found the first attempt's record; 429: the attempts used up the
    // per-user limit) says nothing about what the first attempt wrote:
    // still ambiguous for the client, which has no card id.
    let bind_outcome = match classify(&bind) {
        Outcome::Refused if bind_retried => Outcome::Ambiguous,
        o => o,
    };
    let card_id = bind.body["id"].as_str().map(str::to_owned);
    let mut healthy = match kind {
        Kind::Decline => bind_first_ok && bind.code.as_deref() == Some("channel_rejected"),
        _ => bind_first_ok && bind.status == Some(201),
    };
    let mut flow = Flow {
        phase,
        kind,
        user: user.clone(),
        bin: card.bin().to_owned(),
        last4: card.last4().to_owned(),
        started_ms,
        finished_ms: 0,
        bind: bind_outcome,
        bind_http: bind.status,
        bind_code: bind.code.clone(),
        bind_retry_conflict: bind_retried
            && bind.status.is_some_and(|s| (400..500).contains(&s))
            && bind.code.as_deref() != Some("channel_rejected"),
        card_id: card_id.clone(),
        verify: None,
        unbind: None,
        healthy: false,
    };
    if let (Outcome::Done, Some(id)) = (bind_outcome, card_id) {
        let needs_otp = bind.body["status"] == "pending_verification"
            && bind.body["next_action"]["type"] == "otp";
        if needs_otp {
            let vpath = format!("/v1/users/{user}/cards/{id}/verify");
            let otp = serde_json::json!({"otp": "123456"});
            let (v, first_ok, _) =
                with_retries(|| api.call(phase, reqwest::Method::POST, &vpath, Some(&otp), None))
                    .await;
            healthy &= first_ok && v.status == Some(200);
            flow.verify = Some(classify(&v));
        }
        if unbind {
            let upath = format!("/v1/users/{user}/cards/{id}");
            let (u, first_ok, _) =
                with_retries(|| api.call(phase, reqwest::Method::DELETE, &upath, None, None)).await;
            healthy &= first_ok && u.status == Some(200);
            flow.unbind = Some(classify(&u));
        }
    }
    flow.healthy = healthy;
    flow.finished_ms = api.rec.now_ms();
    flow
}

/// What new flows bind.
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    /// A channel fault: this share of flows binds this kind of card.
    pub special: Option<(Kind, f64)>,
    /// Share of flows binding a card the channel declines (definite refusals).
    pub decline_share: f64,
    /// Share of flows that unbind after verifying.
    pub unbind_share: f64,
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            special: None,
            decline_share: 0.1,
            unbind_share: 0.5,
        }
    }
}

/// Flows started at `rate` per second until stopped.
pub struct Workload {
    pub api: Arc<Api>,
    /// Flows still running: number → (start ms, kind).
    pub active: Arc<Mutex<std::collections::BTreeMap<u64, (u64, Kind)>>>,
    pub mix: Arc<Mutex<Mix>>,
    pub flows: Arc<Mutex<Vec<Flow>>>,
    pub in_flight: Arc<AtomicUsize>,
    pub skipped: Arc<AtomicU64>,
    stop: tokio::sync::watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

fn coin(p: f64) -> bool {
    let b = uuid::Uuid::new_v4().as_bytes()[0];
    f64::from(b) < p * 256.0
}

impl Workload {
    pub fn start(api: Arc<Api>, rate: f64, max_in_flight: usize) -> Workload {
        let mix = Arc::new(Mutex::new(Mix::default()));
        let flows = Arc::new(Mutex::new(Vec::new()));
        let active = Arc::new(Mutex::new(std::collections::BTreeMap::new()));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let skipped = Arc::new(AtomicU64::new(0));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let run = &uuid::Uuid::new_v4().simple().to_string()[..6];
        let run = run.to_owned();
        let task = {
            let (api, mix, flows, in_flight, skipped, active) = (
                api.clone(),
                mix.clone(),
                flows.clone(),
                in_flight.clone(),
                skipped.clone(),
                active.clone(),
            );
            tokio::spawn(async move {
                let period = Duration::from_secs_f64(1.0 / rate.max(0.1));
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut n = 0u64;
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stopped.changed() => return,
                    }
                    if in_flight.load(Ordering::SeqCst) >= max_in_flight {
                        skipped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    n += 1;
                    let m = *mix.lock().unwrap_or_else(|e| e.into_inner());
                    let kind = match m.special {
                        Some((k, share)) if coin(share) => k,
                        _ if coin(m.decline_share) => Kind::Decline,
                        _ => Kind::Normal,
                    };
                    let unbind = coin(m.unbind_share);
                    let phase = api.rec.phase();
                    let user = format!("f{run}-{n}");
                    in_flight.fetch_add(1, Ordering::SeqCst);
                    active
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(n, (api.rec.now_ms(), kind));
                    let (api, flows, in_flight, active) = (
                        api.clone(),
                        flows.clone(),
                        in_flight.clone(),
                        active.clone(),
                    );
                    tokio::spawn(async move {
                        let f = run_flow(api, phase, kind, user, unbind).await;
                        flows.lock().unwrap_or_else(|e| e.into_inner()).push(f);
                        active.lock().unwrap_or_else(|e| e.into_inner()).remove(&n);
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            })
        };
        Workload {
            api,
            active,
            mix,
            flows,
            in_flight,
            skipped,
            stop,
            task: Some(task),
        }
    }

    pub fn set_mix(&self, m: Mix) {
        *self.mix.lock().unwrap_or_else(|e| e.into_inner()) = m;
    }

    pub fn flows(&self) -> Vec<Flow> {
        self.flows.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stops starting flows and waits (up to `wait`) for those running.
    pub async fn stop(&mut self, wait: Duration) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        let deadline = Instant::now() + wait;
        while self.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
