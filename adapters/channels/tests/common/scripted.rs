//! A scripted channel, a recording audit log and metric reading, for the
//! resilience tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use cardbind_channels::{ResilienceConfig, Resilient};
use cardbind_domain::BindingId;
use cardbind_ports::audit::{
    AuditCursor, AuditEvent, AuditFilter, AuditLog, AuditRecord, ChainId, Link,
};
use cardbind_ports::channel::{
    ChannelBindRequest, ChannelEvent, ChannelStart, ConfirmOutcome, Notification, NotificationAck,
    PaymentChannel, RemoteState,
};
use cardbind_ports::{ChannelError, StoreError};
use prometheus::Registry;

/// A channel that answers from scripts and counts its calls.
#[derive(Default)]
pub struct Scripted {
    pub starts: Mutex<VecDeque<Result<ChannelStart, ChannelError>>>,
    pub queries: Mutex<VecDeque<Result<RemoteState, ChannelError>>>,
    pub default_query: Mutex<Option<Result<RemoteState, ChannelError>>>,
    pub start_calls: AtomicUsize,
    pub query_calls: AtomicUsize,
    pub unbind_calls: AtomicUsize,
    pub unbind_result: Mutex<Option<Result<(), ChannelError>>>,
    pub notification_result: Mutex<Option<Result<ChannelEvent, ChannelError>>>,
    pub hang: Mutex<bool>,
    /// Unbinds hang too.
    pub hang_unbinds: Mutex<bool>,
    /// Unbinds answer after this long (a slow channel).
    pub slow_unbinds: Mutex<Option<Duration>>,
}

impl Scripted {
    pub fn starts(self, v: Vec<Result<ChannelStart, ChannelError>>) -> Self {
        *self.starts.lock().unwrap() = v.into();
        self
    }
    pub fn queries(self, v: Vec<Result<RemoteState, ChannelError>>) -> Self {
        *self.queries.lock().unwrap() = v.into();
        self
    }
    pub fn query_default(self, r: Result<RemoteState, ChannelError>) -> Self {
        *self.default_query.lock().unwrap() = Some(r);
        self
    }
    pub fn unbind_result(self, r: Result<(), ChannelError>) -> Self {
        *self.unbind_result.lock().unwrap() = Some(r);
        self
    }
}

#[async_trait]
impl PaymentChannel for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }
    async fn start_binding(&self, _r: &ChannelBindRequest) -> Result<ChannelStart, ChannelError> {
        self.start_calls.fetch_add(1, Ordering::SeqCst);
        let hang = *self.hang.lock().unwrap();
        if hang {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        self.starts
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Err(ChannelError::Unavailable("script exhausted".into())))
    }
    async fn confirm_otp(
        &self,
        _b: &BindingId,
        _c: &str,
        _o: &str,
    ) -> Result<ConfirmOutcome, ChannelError> {
        Ok(ConfirmOutcome::WrongOtp)
    }
    async fn unbind(&self, _b: &BindingId, _a: Option<u32>, _c: &str) -> Result<(), ChannelError> {
        self.unbind_calls.fetch_add(1, Ordering::SeqCst);
        let hang = *self.hang_unbinds.lock().unwrap();
        if hang {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        let slow = *self.slow_unbinds.lock().unwrap();
        if let Some(d) = slow {
            tokio::time::sleep(d).await;
        }
        self.unbind_result.lock().unwrap().clone().unwrap_or(Ok(()))
    }
    async fn query(
        &self,
        _b: &BindingId,
        _a: Option<u32>,
        _c: Option<String>,
    ) -> Result<RemoteState, ChannelError> {
        self.query_calls.fetch_add(1, Ordering::SeqCst);
        if let Some(r) = self.queries.lock().unwrap().pop_front() {
            return r;
        }
        self.default_query
            .lock()
            .unwrap()
            .clone()
            .unwrap_or(Ok(RemoteState::NotFound))
    }
    fn parse_notification(&self, _n: &Notification) -> Result<ChannelEvent, ChannelError> {
        self.notification_result
            .lock()
            .unwrap()
            .clone()
            .unwrap_or(Err(ChannelError::InvalidSignature))
    }
    fn notification_ack(&self) -> NotificationAck {
        NotificationAck {
            status: 200,
            content_type: "text/plain",
            body: "ok".into(),
        }
    }
}

pub fn wrap(inner: Arc<Scripted>, registry: &Registry) -> Resilient {
    Resilient::new(inner, ResilienceConfig::default(), registry).unwrap()
}

pub fn metric(registry: &Registry, name: &str, labels: &[(&str, &str)]) -> f64 {
    use prometheus::Encoder as _;
    let mut buf = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&registry.gather(), &mut buf)
        .unwrap();
    let text = String::from_utf8(buf).unwrap();
    let mut total = 0.0;
    for line in text.lines() {
        if line.starts_with('#') || !line.starts_with(&format!("{name}{{")) {
            continue;
        }
        if labels
            .iter()
            .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        {
            total += line.rsplit(' ').next().unwrap().parse::<f64>().unwrap();
        }
    }
    total
}

/// An audit log that keeps what it is given.
#[derive(Default)]
pub struct Recorded(pub Mutex<Vec<AuditEvent>>);

#[async_trait]
impl AuditLog for Recorded {
    async fn append_system(
        &self,
        events: Vec<AuditEvent>,
        _now: cardbind_domain::Timestamp,
    ) -> Result<(), StoreError> {
        self.0.lock().unwrap().extend(events);
        Ok(())
    }
    async fn list(
        &self,
        _f: &AuditFilter,
        _a: Option<AuditCursor>,
        _l: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        Ok(Vec::new())
    }
    async fn links(&self, _a: Option<(ChainId, u64)>, _l: u32) -> Result<Vec<Link>, StoreError> {
        Ok(Vec::new())
    }
    async fn purge_before(&self, _b: cardbind_domain::Timestamp) -> Result<u64, StoreError> {
        Ok(0)
    }
}

pub fn misconfigured() -> ChannelError {
    ChannelError::Misconfigured {
        code: "SIGN_ERROR".into(),
    }
}
