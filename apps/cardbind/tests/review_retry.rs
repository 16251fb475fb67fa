//! Retrying a binding in review at its channel: the sealed card data is
//! opened (each opening audited), tampered data is refused and audited, and
//! the binding is never left half-changed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use cardbind::http::app;
use cardbind_channels::{MockChannel, MockConfig};
use cardbind_domain::{BindingId, BindingStatus, ChannelName, UserId};
use cardbind_ports::channel::{
    ChannelBindRequest, ChannelEvent, ChannelRegistry, ChannelStart, ConfirmOutcome, Notification,
    NotificationAck, PaymentChannel, RemoteState,
};
use cardbind_ports::store::{CardDataStore, WalletStore};
use cardbind_ports::ChannelError;
use cardbind_usecases::UseCases;
use poem::test::TestClient;
use poem::EndpointExt;
use serde_json::Value;
use support::*;

/// The mock channel behind a switch: while `down`, starting a binding
/// fails as an unreachable channel does.
struct Switchable {
    inner: MockChannel,
    down: AtomicBool,
    starts: AtomicU32,
    last_pan_last4: std::sync::Mutex<Option<String>>,
}

#[async_trait]
impl PaymentChannel for Switchable {
    fn name(&self) -> &str {
        "mock"
    }
    async fn start_binding(&self, r: &ChannelBindRequest) -> Result<ChannelStart, ChannelError> {
        self.starts.fetch_add(1, Ordering::SeqCst);
        *self.last_pan_last4.lock().unwrap() = Some(r.card.last4().to_owned());
        if self.down.load(Ordering::SeqCst) {
            return Err(ChannelError::Unavailable("switched off".into()));
        }
        self.inner.start_binding(r).await
    }
    async fn confirm_otp(
        &self,
        b: &BindingId,
        r: &str,
        otp: &str,
    ) -> Result<ConfirmOutcome, ChannelError> {
        self.inner.confirm_otp(b, r, otp).await
    }
    async fn unbind(&self, b: &BindingId, a: Option<u32>, r: &str) -> Result<(), ChannelError> {
        self.inner.unbind(b, a, r).await
    }
    async fn query(
        &self,
        b: &BindingId,
        a: Option<u32>,
        r: Option<String>,
    ) -> Result<RemoteState, ChannelError> {
        self.inner.query(b, a, r).await
    }
    fn parse_notification(&self, n: &Notification) -> Result<ChannelEvent, ChannelError> {
        self.inner.parse_notification(n)
    }
    fn notification_ack(&self) -> NotificationAck {
        self.inner.notification_ack()
    }
}

fn spawn_switchable() -> (TestApp, Arc<Switchable>) {
    let mut t = spawn();
    let ch = Arc::new(Switchable {
        inner: MockChannel::new(MockConfig::default()),
        down: AtomicBool::new(true),
        starts: AtomicU32::new(0),
        last_pan_last4: std::sync::Mutex::new(None),
    });
    let mut ports = t.state.usecases.ports().clone();
    let as_port: Arc<dyn PaymentChannel> = ch.clone();
    ports.channels =
        ChannelRegistry::new(vec![as_port], ChannelName::parse("mock").unwrap()).unwrap();
    t.state.usecases = UseCases::new(ports, t.state.usecases.policy().clone());
    t.client = TestClient::new(app(t.state.clone()).boxed());
    (t, ch)
}

const CARD: &str = "4111111111111111";

async fn card_in_review(t: &TestApp) -> String {
    let resp = t.bind("alice", "k-review", &bind_body(CARD)).await;
    resp.assert_status(poem::http::StatusCode::ACCEPTED);
    let v = json_of(resp).await;
    assert_eq!(v["status"], "pending_review");
    v["id"].as_str().unwrap().to_owned()
}

async fn retry(t: &TestApp, id: &str) -> poem::test::TestResponse {
    t.client
        .post(format!("/v1/admin/reviews/{id}/retry"))
        .header("Authorization", bearer("ops", "admin"))
        .send()
        .await
}

async fn audit(t: &TestApp, id: &str) -> Vec<Value> {
    audit_events(t, &format!("card_id={id}&limit=100")).await
}

fn events<'a>(all: &'a [Value], action: &str) -> Vec<&'a Value> {
    all.iter().filter(|e| e["action"] == action).collect()
}

#[tokio::test]
async fn a_retry_once_the_channel_is_back_binds_the_card_from_its_sealed_data() {
    let (t, ch) = spawn_switchable();
    let id = card_in_review(&t).await;
    let starts_before = ch.starts.load(Ordering::SeqCst);
    ch.down.store(false, Ordering::SeqCst);
    *ch.last_pan_last4.lock().unwrap() = None;

    let resp = retry(&t, &id).await;
    resp.assert_status_is_ok();
    let v = json_of(resp).await;
    assert_eq!(v["status"], "active", "{v}");
    assert_eq!(v["is_default"], true);
    assert!(ch.starts.load(Ordering::SeqCst) > starts_before);
    // The channel got the card number opened from the vault.
    assert_eq!(ch.last_pan_last4.lock().unwrap().as_deref(), Some("1111"));

    let log = audit(&t, &id).await;
    let opens = events(&log, "card_data.open");
    assert_eq!(
        opens.len(),
        4,
        "one audited opening per sealed field: {log:?}"
    );
    assert!(opens
        .iter()
        .all(|e| e["outcome"] == "ok" && e["actor"] == "ops"));
    assert_eq!(events(&log, "review.retry").len(), 1);
    // Nothing in the audit trail is card data.
    let text = serde_json::to_string(&log).unwrap();
    assert!(
        !text.contains(CARD)
            && !text.contains("11010519491231002X")
            && !text.contains("13800138000")
    );
}

#[tokio::test]
async fn tampered_sealed_data_is_refused_audited_and_leaves_the_binding_in_review() {
    let (t, ch) = spawn_switchable();
    let id = card_in_review(&t).await;
    ch.down.store(false, Ordering::SeqCst);

    // Move the sealed phone into the PAN's place, as an attacker with
    // database access might: the ciphertext is genuine but bound to
    // another field.
    let bid = BindingId::parse(&id).unwrap();
    let alice = UserId::parse("alice").unwrap();
    let before = t.store.load(&alice).await.unwrap().unwrap();
    let generation = before.wallet.get(&bid).unwrap().data_generation;
    let mut data = t
        .store
        .get(&alice, &bid, generation)
        .await
        .unwrap()
        .unwrap();
    data.sealed.pan = data.sealed.phone.clone();
    CardDataStore::delete(t.store.as_ref(), &alice, &bid, None)
        .await
        .unwrap();
    t.store.put(&data).await.unwrap();

    let starts_before = ch.starts.load(Ordering::SeqCst);
    let body = assert_error(retry(&t, &id).await, 409, "card_data_unreadable").await;
    assert!(!body.to_string().contains("13800138000"));
    assert_eq!(
        ch.starts.load(Ordering::SeqCst),
        starts_before,
        "the channel was not called"
    );

    let after = t.store.load(&alice).await.unwrap().unwrap();
    assert_eq!(
        after.wallet.get(&bid).unwrap().status,
        BindingStatus::PendingReview
    );
    assert_eq!(
        after.wallet, before.wallet,
        "the refused retry changed nothing in the wallet"
    );

    let log = audit(&t, &id).await;
    let opens = events(&log, "card_data.open");
    assert_eq!(opens.len(), 1, "stopped at the first field: {opens:?}");
    assert_eq!(opens[0]["outcome"], "card_data_unreadable");
    assert_eq!(opens[0]["detail"], "pan");
}

#[tokio::test]
async fn only_a_card_in_review_can_be_retried() {
    let (t, ch) = spawn_switchable();
    ch.down.store(false, Ordering::SeqCst);
    let resp = t.bind("alice", "k-active", &bind_body(CARD)).await;
    let v = json_of(resp).await;
    assert_eq!(v["status"], "active");
    let id = v["id"].as_str().unwrap();
    assert_error(retry(&t, id).await, 409, "invalid_state_transition").await;
    let resp = t
        .client
        .post(format!("/v1/admin/reviews/{id}/retry"))
        .header("Authorization", bearer("merchant", "service"))
        .send()
        .await;
    assert_error(resp, 403, "forbidden").await;
}
