//! A deterministic channel for demos and tests.
//!
//! The mode comes from [`MockConfig::mode`] (or, per card, from
//! [`MockConfig::card_modes`] keyed by the card's last four digits):
//!
//! | mode       | `start_binding`                                  |
//! |------------|--------------------------------------------------|
//! | `instant`  | `Bound` at once                                  |
//! | `otp`      | `OtpSent`; `confirm_otp` accepts [`MockConfig::otp_code`] (default `123456`) |
//! | `redirect` | `Redirect` to a URL that contains our binding id |
//! | `decline`  | `Refused` with code `card_declined`              |
//! | `timeout`  | sleeps [`MockConfig::timeout_after`] then `Timeout` |
//! | `slow`     | sleeps [`MockConfig::slow_after`] then like `otp` (a slow but working channel) |
//! | `flaky`    | like `instant`, but every Nth call of each operation in flaky mode fails with `Unavailable` (a deterministic counter per operation, so that a retry of a failed start lands) |
//!
//! Mock notifications are JSON bodies
//! `{"id","binding_id","event":"signed|terminated|failed","channel_ref","sent_at"}`
//! signed with HMAC-SHA256 under [`MockConfig::notification_secret`], the hex
//! digest in the `x-mock-signature` header; [`mock_notification`] builds
//! one. `sent_at` (Unix seconds) must be within
//! [`NOTIFICATION_WINDOW_SECONDS`] of the service's clock, as WeChat Pay's
//! timestamp must: a captured notification cannot be replayed once the
//! service has forgotten its id. The mock keeps no card data: only binding ids and their state, for
//! at most [`MockConfig::remember`] bindings.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use cardbind_domain::BindingId;
use cardbind_ports::channel::{
    BindingRef, ChannelBindRequest, ChannelEvent, ChannelEventKind, ChannelStart, ConfirmOutcome,
    Notification, NotificationAck, PaymentChannel, RemoteState,
};
use cardbind_ports::ChannelError;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// How far (either way, in seconds) a mock notification's `sent_at` may be
/// from the service's clock.
pub const NOTIFICATION_WINDOW_SECONDS: i64 = 300;

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The header that carries the hex HMAC-SHA256 of a mock notification body.
pub const MOCK_SIGNATURE_HEADER: &str = "x-mock-signature";

/// The mock's behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MockMode {
    Instant,
    Otp,
    Redirect,
    Decline,
    Timeout,
    Flaky,
    Slow,
}

impl MockMode {
    pub const ALL: [MockMode; 7] = [
        MockMode::Instant,
        MockMode::Otp,
        MockMode::Redirect,
        MockMode::Decline,
        MockMode::Timeout,
        MockMode::Flaky,
        MockMode::Slow,
    ];

    /// `instant`, `otp`, `redirect`, `decline`, `timeout`, `flaky` or `slow`.
    pub fn parse(s: &str) -> Option<MockMode> {
        let s = s.trim().to_ascii_lowercase();
        MockMode::ALL.into_iter().find(|m| m.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MockMode::Instant => "instant",
            MockMode::Otp => "otp",
            MockMode::Redirect => "redirect",
            MockMode::Decline => "decline",
            MockMode::Timeout => "timeout",
            MockMode::Flaky => "flaky",
            MockMode::Slow => "slow",
        }
    }
}

/// Settings of the mock channel.
#[derive(Clone)]
pub struct MockConfig {
    /// The name it registers under (default `mock`).
    pub name: String,
    pub mode: MockMode,
    /// Per-card override of `mode`, keyed by the card's last four digits.
    pub card_modes: BTreeMap<String, MockMode>,
    /// The OTP `confirm_otp` accepts (default `123456`).
    pub otp_code: String,
    /// Base of the `redirect` URL; `?binding_id=<id>` is appended.
    pub redirect_base_url: String,
    /// How long `timeout` mode sleeps before answering `Timeout`
    /// (default 30 s, past the resilience layer's 10 s).
    pub timeout_after: Duration,
    /// How long `slow` mode sleeps before it answers like `otp` (default 2 s).
    pub slow_after: Duration,
    /// In `flaky` mode, every `flaky_every`-th call fails (default 3; 0 or 1
    /// make every call fail).
    pub flaky_every: u64,
    /// HMAC-SHA256 secret of mock notifications.
    pub notification_secret: String,
    /// How many bindings the mock remembers (default 100,000; at least 1).
    /// Past it, the one it first heard of longest ago (started, unbound or
    /// named by a notification) is forgotten and answered as unknown, like
    /// a binding started before a restart (the mock keeps its state in the
    /// process's memory): `query` gives `NotFound`, its per-card mode is
    /// gone, and `confirm_otp` judges the code alone (the service asks only
    /// about a card waiting for its code, within its own window). Without a
    /// bound its memory grew with every bind the service ever made.
    pub remember: usize,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            name: crate::names::MOCK.into(),
            mode: MockMode::Instant,
            card_modes: BTreeMap::new(),
            otp_code: "123456".into(),
            redirect_base_url: "https://mock-channel.invalid/sign".into(),
            timeout_after: Duration::from_secs(30),
            slow_after: Duration::from_secs(2),
            flaky_every: 3,
            notification_secret: "cardbind-mock-notification-secret".into(),
            remember: 100_000,
        }
    }
}

impl std::fmt::Debug for MockConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockConfig")
            .field("name", &self.name)
            .field("mode", &self.mode)
            .field("card_modes", &self.card_modes)
            .field("redirect_base_url", &self.redirect_base_url)
            .field("timeout_after", &self.timeout_after)
            .field("slow_after", &self.slow_after)
            .field("flaky_every", &self.flaky_every)
            .field("otp_code", &"<redacted>")
            .field("notification_secret", &"<redacted>")
            .finish()
    }
}

#[derive(Clone, Debug)]
struct Entry {
    mode: MockMode,
    state: RemoteState,
    /// The bind attempt whose start made the entry (none when the mock
    /// first heard of the binding otherwise): a later start replaces it,
    /// and an unbind or query naming another attempt is not about it.
    attempt: Option<u32>,
}

/// The bindings the mock remembers, and the order it first heard of them
/// in (the first is forgotten first; a change does not move a binding).
#[derive(Default)]
struct Remembered {
    entries: HashMap<String, Entry>,
    order: VecDeque<String>,
}

impl Remembered {
    fn get(&self, binding: &str) -> Option<&Entry> {
        self.entries.get(binding)
    }

    fn get_mut(&mut self, binding: &str) -> Option<&mut Entry> {
        self.entries.get_mut(binding)
    }

    fn set(&mut self, binding: &str, entry: Entry, cap: usize) {
        if let Some(e) = self.entries.get_mut(binding) {
            *e = entry;
            return;
        }
        // One entry in, at most one out: `order` names each entry once.
        self.entries.insert(binding.to_owned(), entry);
        self.order.push_back(binding.to_owned());
        if self.entries.len() > cap.max(1) {
            if let Some(oldest) = self.order.pop_front() {
                self.entries.remove(&oldest);
            }
        }
    }
}

/// The mock channel. See the module docs.
pub struct MockChannel {
    config: MockConfig,
    calls: AtomicU64,
    /// Calls in flaky mode, per operation ([`Op`]).
    flaky_calls: [AtomicU64; 4],
    bindings: Mutex<Remembered>,
}

/// The operations flaky mode counts apart: one counter for all of them
/// made the start after a failed start's query fail again and again with
/// `flaky_every = 2` (start, query, start…), so a flaky card never bound.
#[derive(Clone, Copy)]
enum Op {
    Start = 0,
    Confirm = 1,
    Unbind = 2,
    Query = 3,
}

impl std::fmt::Debug for MockChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockChannel")
            .field("config", &self.config)
            .field("calls", &self.calls.load(Ordering::Relaxed))
            .finish()
    }
}

fn channel_ref_for(binding: &BindingId) -> String {
    format!("mock_{}", binding.as_str())
}

/// The reference a confirmed binding keeps: the one the service sent, or
/// the mock's own when it sent none.
fn ref_or_ours(binding: &BindingId, channel_ref: &str) -> String {
    if channel_ref.is_empty() {
        channel_ref_for(binding)
    } else {
        channel_ref.to_owned()
    }
}

impl MockChannel {
    pub fn new(config: MockConfig) -> MockChannel {
        MockChannel {
            config,
            calls: AtomicU64::new(0),
            flaky_calls: Default::default(),
            bindings: Mutex::new(Remembered::default()),
        }
    }

    pub fn config(&self) -> &MockConfig {
        &self.config
    }

    /// How many calls (of any operation but notifications) it has seen.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Hex HMAC-SHA256 of `body` under `secret`, as `x-mock-signature`.
    pub fn sign_notification(secret: &str, body: &[u8]) -> String {
        hex::encode(hmac_sha256(secret.as_bytes(), body))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Remembered> {
        self.bindings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts the call; in flaky mode every Nth call of its operation
    /// fails.
    fn tick(&self, mode: MockMode, op: Op) -> Result<(), ChannelError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if mode == MockMode::Flaky {
            let n = self.flaky_calls[op as usize].fetch_add(1, Ordering::SeqCst) + 1;
            let every = self.config.flaky_every.max(1);
            if n.is_multiple_of(every) {
                return Err(ChannelError::Unavailable(format!(
                    "mock flaky failure (call {n} of its operation)"
                )));
            }
        }
        Ok(())
    }

    fn mode_for_binding(&self, binding: &BindingId) -> MockMode {
        self.lock()
            .get(binding.as_str())
            .map(|e| e.mode)
            .unwrap_or(self.config.mode)
    }

    /// Sets the binding's entry: made by a start of `attempt`, or, when
    /// `None`, about whichever attempt the entry was.
    fn set_entry(&self, binding: &str, attempt: Option<u32>, mode: MockMode, state: RemoteState) {
        let cap = self.config.remember;
        let mut remembered = self.lock();
        let attempt = attempt.or_else(|| remembered.get(binding).and_then(|e| e.attempt));
        remembered.set(
            binding,
            Entry {
                mode,
                state,
                attempt,
            },
            cap,
        );
    }

    /// Whether the binding's entry is about another attempt than `attempt`.
    fn other_attempt(&self, binding: &str, attempt: Option<u32>) -> bool {
        self.lock()
            .get(binding)
            .is_some_and(|e| other(e.attempt, attempt))
    }
}

/// Whether an entry made by a start of `made` is about another attempt
/// than `asked` (either unknown: not known to be another).
fn other(made: Option<u32>, asked: Option<u32>) -> bool {
    matches!((made, asked), (Some(m), Some(a)) if m != a)
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    match <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// Builds a signed mock notification (body and `x-mock-signature` header)
/// as the black-box tests send it, sent now.
pub fn mock_notification(
    secret: &str,
    id: &str,
    binding_id: &str,
    event: &str,
    channel_ref: &str,
) -> Notification {
    mock_notification_sent_at(secret, id, binding_id, event, channel_ref, unix_now())
}

/// [`mock_notification`] sent at `sent_at` (Unix seconds).
pub fn mock_notification_sent_at(
    secret: &str,
    id: &str,
    binding_id: &str,
    event: &str,
    channel_ref: &str,
    sent_at: i64,
) -> Notification {
    let body = serde_json::json!({
        "id": id,
        "binding_id": binding_id,
        "event": event,
        "channel_ref": channel_ref,
        "sent_at": sent_at,
    })
    .to_string()
    .into_bytes();
    let mut headers = BTreeMap::new();
    headers.insert(
        MOCK_SIGNATURE_HEADER.to_owned(),
        MockChannel::sign_notification(secret, &body),
    );
    headers.insert("content-type".to_owned(), "application/json".to_owned());
    Notification { headers, body }
}

/// The `event` of a mock notification (an unknown one does not parse).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum MockEvent {
    Signed,
    Terminated,
    Failed,
}

#[derive(serde::Deserialize)]
struct MockNotificationBody {
    id: String,
    binding_id: String,
    event: MockEvent,
    #[serde(default)]
    channel_ref: Option<String>,
    #[serde(default)]
    code: Option<String>,
    /// When the mock sent it (Unix seconds).
    sent_at: i64,
}

#[async_trait]
impl PaymentChannel for MockChannel {
    fn name(&self) -> &str {
        &self.config.name
    }

    async fn start_binding(
        &self,
        request: &ChannelBindRequest,
    ) -> Result<ChannelStart, ChannelError> {
        let mode = self
            .config
            .card_modes
            .get(request.card.last4())
            .copied()
            .unwrap_or(self.config.mode);
        self.tick(mode, Op::Start)?;
        let binding = &request.binding_id;
        let channel_ref = channel_ref_for(binding);
        let mode = if mode == MockMode::Slow {
            tokio::time::sleep(self.config.slow_after).await;
            MockMode::Otp
        } else {
            mode
        };
        match mode {
            MockMode::Instant | MockMode::Flaky => {
                self.set_entry(
                    binding.as_str(),
                    Some(request.attempt),
                    mode,
                    RemoteState::Active {
                        channel_ref: channel_ref.clone(),
                    },
                );
                Ok(ChannelStart::Bound { channel_ref })
            }
            MockMode::Otp | MockMode::Slow => {
                self.set_entry(
                    binding.as_str(),
                    Some(request.attempt),
                    MockMode::Otp,
                    RemoteState::Pending,
                );
                Ok(ChannelStart::OtpSent { channel_ref })
            }
            MockMode::Redirect => {
                self.set_entry(
                    binding.as_str(),
                    Some(request.attempt),
                    mode,
                    RemoteState::Pending,
                );
                let url = url::Url::parse_with_params(
                    &self.config.redirect_base_url,
                    &[("binding_id", binding.as_str())],
                )
                .map(String::from)
                .unwrap_or_else(|_| {
                    format!("{}?binding_id={}", self.config.redirect_base_url, binding)
                });
                Ok(ChannelStart::Redirect { channel_ref, url })
            }
            MockMode::Decline => {
                self.set_entry(
                    binding.as_str(),
                    Some(request.attempt),
                    mode,
                    RemoteState::Failed {
                        code: "card_declined".into(),
                    },
                );
                Ok(ChannelStart::Refused {
                    code: "card_declined".into(),
                    message: "the mock channel declines this card".into(),
                })
            }
            MockMode::Timeout => {
                tokio::time::sleep(self.config.timeout_after).await;
                Err(ChannelError::Timeout)
            }
        }
    }

    async fn confirm_otp(
        &self,
        binding: &BindingId,
        channel_ref: &str,
        otp: &str,
    ) -> Result<ConfirmOutcome, ChannelError> {
        let mode = self.mode_for_binding(binding);
        self.tick(mode, Op::Confirm)?;
        let mut map = self.lock();
        let Some(entry) = map.get_mut(binding.as_str()) else {
            drop(map);
            // Started before a restart (the mock's memory is the process's)
            // or forgotten past `remember`: the service asks only about a
            // card it holds as waiting for its code, within its own
            // verification window, so the code alone decides.
            if otp != self.config.otp_code {
                return Ok(ConfirmOutcome::WrongOtp);
            }
            let channel_ref = ref_or_ours(binding, channel_ref);
            self.set_entry(
                binding.as_str(),
                None,
                mode,
                RemoteState::Active {
                    channel_ref: channel_ref.clone(),
                },
            );
            return Ok(ConfirmOutcome::Confirmed { channel_ref });
        };
        match &entry.state {
            RemoteState::Active { channel_ref } => Ok(ConfirmOutcome::Confirmed {
                channel_ref: channel_ref.clone(),
            }),
            RemoteState::Pending if entry.mode == MockMode::Otp => {
                if otp == self.config.otp_code {
                    let channel_ref = ref_or_ours(binding, channel_ref);
                    entry.state = RemoteState::Active {
                        channel_ref: channel_ref.clone(),
                    };
                    Ok(ConfirmOutcome::Confirmed { channel_ref })
                } else {
                    Ok(ConfirmOutcome::WrongOtp)
                }
            }
            RemoteState::Pending => Ok(ConfirmOutcome::Refused {
                code: "unsupported".into(),
            }),
            RemoteState::Failed { code } => Ok(ConfirmOutcome::Refused { code: code.clone() }),
            RemoteState::Terminated | RemoteState::NotFound => Ok(ConfirmOutcome::Expired),
        }
    }

    async fn unbind(
        &self,
        binding: &BindingId,
        attempt: Option<u32>,
        _channel_ref: &str,
    ) -> Result<(), ChannelError> {
        let mode = self.mode_for_binding(binding);
        self.tick(mode, Op::Unbind)?;
        // Another attempt's agreement is not this one: this one has ended.
        if !self.other_attempt(binding.as_str(), attempt) {
            self.set_entry(binding.as_str(), None, mode, RemoteState::Terminated);
        }
        Ok(())
    }

    async fn query(
        &self,
        binding: &BindingId,
        attempt: Option<u32>,
        _channel_ref: Option<String>,
    ) -> Result<RemoteState, ChannelError> {
        let mode = self.mode_for_binding(binding);
        self.tick(mode, Op::Query)?;
        Ok(self
            .lock()
            .get(binding.as_str())
            .filter(|e| !other(e.attempt, attempt))
            .map(|e| e.state.clone())
            .unwrap_or(RemoteState::NotFound))
    }

    fn parse_notification(
        &self,
        notification: &Notification,
    ) -> Result<ChannelEvent, ChannelError> {
        let Some(sig_hex) = notification.headers.get(MOCK_SIGNATURE_HEADER) else {
            return Err(ChannelError::InvalidSignature);
        };
        let Ok(sig) = hex::decode(sig_hex.trim()) else {
            return Err(ChannelError::InvalidSignature);
        };
        let Ok(mut mac) =
            <Hmac<Sha256> as KeyInit>::new_from_slice(self.config.notification_secret.as_bytes())
        else {
            return Err(ChannelError::InvalidSignature);
        };
        mac.update(&notification.body);
        if mac.verify_slice(&sig).is_err() {
            return Err(ChannelError::InvalidSignature);
        }
        // Signed by the holder of the secret, so what follows is a
        // malformed message, not a forgery.
        let body: MockNotificationBody = serde_json::from_slice(&notification.body)
            .map_err(|_| crate::protocol("mock notification is not one the mock sends"))?;
        if body.id.is_empty() || body.id.len() > 128 {
            return Err(crate::protocol("mock notification id must be 1-128 bytes"));
        }
        // Sent too long ago (or ahead): a replay of a captured one.
        if unix_now().abs_diff(body.sent_at) > NOTIFICATION_WINDOW_SECONDS.unsigned_abs() {
            return Err(ChannelError::InvalidSignature);
        }
        let binding = BindingId::parse(&body.binding_id)
            .map_err(|_| crate::protocol("mock notification names no card id"))?;
        let agreement = body.channel_ref.clone().filter(|r| !r.is_empty());
        let kind = match body.event {
            MockEvent::Signed => {
                let channel_ref = body
                    .channel_ref
                    .filter(|r| !r.is_empty())
                    .unwrap_or_else(|| channel_ref_for(&binding));
                ChannelEventKind::Signed { channel_ref }
            }
            MockEvent::Terminated => ChannelEventKind::Terminated,
            MockEvent::Failed => ChannelEventKind::Failed {
                code: body.code.unwrap_or_else(|| "mock_failed".into()),
            },
        };
        // Reflect the event in the mock's own view, so `query` agrees.
        let mode = self.mode_for_binding(&binding);
        let state = match &kind {
            ChannelEventKind::Signed { channel_ref } => RemoteState::Active {
                channel_ref: channel_ref.clone(),
            },
            ChannelEventKind::Terminated => RemoteState::Terminated,
            ChannelEventKind::Failed { code } => RemoteState::Failed { code: code.clone() },
        };
        self.set_entry(binding.as_str(), None, mode, state);
        Ok(ChannelEvent {
            event_id: body.id,
            binding: BindingRef::Ours(binding),
            kind,
            agreement,
            attempt: None,
        })
    }

    fn notification_ack(&self) -> NotificationAck {
        NotificationAck {
            status: 200,
            content_type: "application/json",
            body: r#"{"status":"ok"}"#.into(),
        }
    }
}
