//! Consistency under interrupted changes, stale events and parallel guesses.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support;

use std::sync::Arc;

use cardbind_domain::{Actor, BindingId, BindingStatus, ChannelName, ErrorCode, Role, UserId};
use cardbind_ports::channel::{
    ChannelBindRequest, ChannelEvent, ChannelRegistry, ChannelStart, ConfirmOutcome, Notification,
    NotificationAck, PaymentChannel, RemoteState,
};
use cardbind_ports::store::WalletStore;
use cardbind_ports::ChannelError;
use cardbind_usecases::verify::{Otp, VerifyCard};
use cardbind_usecases::{RequestContext, UseCases};
use support::*;

const VISA: &str = "4111111111111111";

async fn notify(app: &TestApp, id: &str, event_id: &str, event: &str, agreement: &str) -> u16 {
    let secret = cardbind_channels::MockConfig::default().notification_secret;
    let n = cardbind_channels::mock::mock_notification(&secret, event_id, id, event, agreement);
    let mut req = app.client.post("/v1/channels/mock/notify");
    for (k, v) in n.headers {
        req = req.header(k, v);
    }
    req.body(n.body).send().await.0.status().as_u16()
}

async fn card(app: &TestApp, user: &str, id: &str) -> serde_json::Value {
    let resp = app
        .client
        .get(format!("/v1/users/{user}/cards/{id}"))
        .header("Authorization", bearer("m", "service"))
        .send()
        .await;
    resp.assert_status_is_ok();
    json_of(resp).await
}

async fn unbind(app: &TestApp, user: &str, id: &str) {
    app.client
        .delete(format!("/v1/users/{user}/cards/{id}"))
        .header("Authorization", bearer("m", "service"))
        .send()
        .await
        .assert_status_is_ok();
}

/// Sends a mock notification, which must be acknowledged, and answers the
/// card's status after it.
async fn status_after(app: &TestApp, user: &str, id: &str, event: [&str; 3]) -> String {
    let [event_id, kind, agreement] = event;
    assert_eq!(notify(app, id, event_id, kind, agreement).await, 200);
    card(app, user, id).await["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn an_event_about_an_earlier_agreement_does_not_unbind_the_card() {
    let app = spawn();
    let v = json_of(app.bind("u-e", "k-e", &bind_body(VISA)).await).await;
    assert_eq!(v["status"], "active");
    let id = v["id"].as_str().unwrap().to_owned();
    let user = UserId::parse("u-e").unwrap();
    let wallet = app.store.load(&user).await.unwrap().unwrap().wallet;
    let current = wallet
        .get(&BindingId::parse(&id).unwrap())
        .unwrap()
        .channel_ref
        .clone()
        .expect("an active card holds its agreement");

    // A late unsign of an earlier agreement of the same card: acknowledged, ignored.
    assert_eq!(
        notify(&app, &id, "evt-old", "terminated", "agreement-from-before").await,
        200
    );
    assert_eq!(card(&app, "u-e", &id).await["status"], "active");

    // The user ending the current agreement in the wallet app unbinds it.
    assert_eq!(
        notify(&app, &id, "evt-now", "terminated", &current).await,
        200
    );
    assert_eq!(card(&app, "u-e", &id).await["status"], "inactive");
}

/// The mock's redirect mode: the card waits for the channel's signing.
const AMEX_REDIRECT: &str = "378282246310005";

/// Binds the redirect card for `user` and answers its id: the card waits
/// for the user's signing at the channel.
async fn waiting_card(app: &TestApp, user: &str, key: &str) -> String {
    let v = json_of(app.bind(user, key, &bind_body(AMEX_REDIRECT)).await).await;
    assert_eq!(v["status"], "pending_verification", "{v}");
    v["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn late_events_about_an_earlier_agreement_leave_a_card_bound_again_alone() {
    let app = spawn();
    let id = waiting_card(&app, "u-l", "k-l1").await;
    let first = ["sign-1", "signed", "agreement-1"];
    assert_eq!(status_after(&app, "u-l", &id, first).await, "active");
    unbind(&app, "u-l", &id).await;
    assert_eq!(card(&app, "u-l", &id).await["status"], "inactive");

    // Bound again: the same record, waiting for the user to sign anew.
    assert_eq!(waiting_card(&app, "u-l", "k-l2").await, id);

    // The channel's late retries about the first agreement (a signing the
    // service once failed to take, then its unsigning): acknowledged,
    // and the waiting card is neither activated on the ended agreement
    // nor unbound.
    for late in [
        ["sign-1-retry", "signed", "agreement-1"],
        ["unsign-1", "terminated", "agreement-1"],
    ] {
        assert_eq!(
            status_after(&app, "u-l", &id, late).await,
            "pending_verification",
            "{late:?}"
        );
    }

    // The user's signing of the new agreement activates it, and the card
    // holds that one.
    let second = ["sign-2", "signed", "agreement-2"];
    assert_eq!(status_after(&app, "u-l", &id, second).await, "active");
    let user = UserId::parse("u-l").unwrap();
    let wallet = app.store.load(&user).await.unwrap().unwrap().wallet;
    let b = wallet.get(&BindingId::parse(&id).unwrap()).unwrap();
    assert_eq!(b.channel_ref.as_deref(), Some("agreement-2"));
    assert_eq!(
        b.consent().unwrap().agreement_id.as_deref(),
        Some("agreement-2")
    );
}

#[tokio::test]
async fn a_signing_for_a_card_no_longer_held_is_ended_at_the_channel_and_audited() {
    let app = spawn();
    let id = waiting_card(&app, "u-w", "k-w").await;
    let binding = BindingId::parse(&id).unwrap();
    // Unbound while it waits for the user's signing (its data goes with it).
    unbind(&app, "u-w", &id).await;

    // The user signs at the channel anyway: the channel holds a live
    // agreement for a card the service no longer has.
    let signing = ["sign-w", "signed", "agreement-w"];
    assert_eq!(status_after(&app, "u-w", &id, signing).await, "inactive");
    let mock = app
        .state
        .usecases
        .ports()
        .channels
        .get(&ChannelName::parse("mock").unwrap())
        .unwrap();
    assert_eq!(
        mock.query(&binding, None, Some("agreement-w".into()))
            .await
            .unwrap(),
        RemoteState::Terminated,
        "the service ends the agreement it will not use"
    );
    let ended = audit_events(
        &app,
        &format!("card_id={id}&action=binding.unwanted_signing"),
    )
    .await;
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0]["outcome"], "ok");
}

/// The mock channel, counting OTP checks and taking its time over each.
struct SlowOtp {
    inner: cardbind_channels::MockChannel,
    checks: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl PaymentChannel for SlowOtp {
    fn name(&self) -> &str {
        "mock"
    }
    async fn start_binding(&self, r: &ChannelBindRequest) -> Result<ChannelStart, ChannelError> {
        self.inner.start_binding(r).await
    }
    async fn confirm_otp(
        &self,
        b: &BindingId,
        r: &str,
        otp: &str,
    ) -> Result<ConfirmOutcome, ChannelError> {
        self.checks
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_wrong_codes_are_each_counted() {
    let mut t = spawn();
    let ch = Arc::new(SlowOtp {
        inner: cardbind_channels::MockChannel::new(cardbind_channels::MockConfig {
            mode: cardbind_channels::MockMode::Otp,
            ..cardbind_channels::MockConfig::default()
        }),
        checks: std::sync::atomic::AtomicU32::new(0),
    });
    let mut ports = t.state.usecases.ports().clone();
    let port: Arc<dyn PaymentChannel> = ch.clone();
    ports.channels = ChannelRegistry::new(vec![port], ChannelName::parse("mock").unwrap()).unwrap();
    t.state.usecases = UseCases::new(ports, t.state.usecases.policy().clone());
    t.client = poem::test::TestClient::new(poem::EndpointExt::boxed(cardbind::http::app(
        t.state.clone(),
    )));
    let v = json_of(t.bind("u-o", "k-o", &bind_body(VISA)).await).await;
    assert_eq!(v["status"], "pending_verification", "{v}");
    let id = BindingId::parse(v["id"].as_str().unwrap()).unwrap();
    let app = Arc::new(t.state.clone());
    let user = UserId::parse("u-o").unwrap();
    let ctx = RequestContext::new(Actor::new("m", Role::Service), "r-otp", None);

    let mut tasks = Vec::new();
    for i in 0..20 {
        let (app, ctx, user, id) = (app.clone(), ctx.clone(), user.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            let cmd = VerifyCard {
                user,
                card: id,
                otp: Otp::parse(&format!("{:06}", 100000 + i)).unwrap(),
            };
            app.usecases.verify(&ctx, cmd).await.err().map(|e| e.code())
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    let checks = ch.checks.load(std::sync::atomic::Ordering::SeqCst);
    let wallet = t.store.load(&user).await.unwrap().unwrap().wallet;
    let stored = wallet.get(&id).unwrap();
    // Every code the channel checked was counted first: parallel guesses
    // cannot share one attempt.
    assert_eq!(stored.otp_attempts, checks, "{codes:?}");
    assert!(
        (1..=5).contains(&checks),
        "{checks} guesses checked: {codes:?}"
    );
    // Every guess is refused: as wrong, as out of attempts (both
    // `invalid_otp`), or as racing another guess (`conflict`).
    assert!(
        codes
            .iter()
            .all(|c| matches!(c, Some(ErrorCode::InvalidOtp) | Some(ErrorCode::Conflict))),
        "{codes:?}"
    );
    // A guess that was checked is refused as a wrong code, not a race.
    assert!(codes.contains(&Some(ErrorCode::InvalidOtp)), "{codes:?}");
    // Five wrong codes end the card; fewer leave it waiting for one.
    let expected = if checks == 5 {
        BindingStatus::Failed
    } else {
        BindingStatus::PendingVerification
    };
    assert_eq!(stored.status, expected, "{checks} checks: {codes:?}");
}

#[tokio::test]
async fn the_eleventh_live_card_is_refused_and_an_unbind_frees_a_slot() {
    let app = spawn();
    let card = |i: u32| {
        let partial = format!("4{:014}", 700_000 + i);
        let d = cardbind_domain::card::luhn_check_digit(&partial).unwrap();
        format!("{partial}{d}")
    };
    let mut first = None;
    for i in 0..10 {
        if i % 3 == 0 {
            app.clock.advance_seconds(61); // past the per-user rate window
        }
        let v = json_of(
            app.bind("u-cap", &format!("k-cap-{i}"), &bind_body(&card(i)))
                .await,
        )
        .await;
        // Live either way (some test cards take the mock's redirect path).
        assert!(
            ["active", "pending_verification"].contains(&v["status"].as_str().unwrap()),
            "{v}"
        );
        first.get_or_insert(v["id"].as_str().unwrap().to_owned());
    }
    app.clock.advance_seconds(61);
    let v = assert_error(
        app.bind("u-cap", "k-cap-10", &bind_body(&card(10))).await,
        422,
        "card_limit_reached",
    )
    .await;
    assert!(!v.to_string().contains(&card(10)));
    let resp = app
        .client
        .delete(format!("/v1/users/u-cap/cards/{}", first.unwrap()))
        .header("Authorization", bearer("m", "service"))
        .send()
        .await;
    resp.assert_status_is_ok();
    let v = json_of(app.bind("u-cap", "k-cap-11", &bind_body(&card(10))).await).await;
    assert!(
        ["active", "pending_verification"].contains(&v["status"].as_str().unwrap()),
        "{v}"
    );
}

/// Card data storage that fails its next `put`s, then works.
struct FailingPuts {
    inner: Arc<cardbind_memory::MemoryStore>,
    left: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl cardbind_ports::store::CardDataStore for FailingPuts {
    async fn put(
        &self,
        d: &cardbind_ports::store::CardData,
    ) -> Result<(), cardbind_ports::StoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        if self
            .left
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(cardbind_ports::StoreError::Unavailable("injected".into()));
        }
        self.inner.put(d).await
    }
    async fn get(
        &self,
        u: &UserId,
        b: &BindingId,
        g: u32,
    ) -> Result<Option<cardbind_ports::store::CardData>, cardbind_ports::StoreError> {
        self.inner.get(u, b, g).await
    }
    async fn owner(&self, b: &BindingId) -> Result<Option<UserId>, cardbind_ports::StoreError> {
        self.inner.owner(b).await
    }
    async fn delete(
        &self,
        u: &UserId,
        b: &BindingId,
        keep: Option<u32>,
    ) -> Result<u64, cardbind_ports::StoreError> {
        cardbind_ports::store::CardDataStore::delete(self.inner.as_ref(), u, b, keep).await
    }
    async fn delete_generation(
        &self,
        u: &UserId,
        b: &BindingId,
        g: u32,
    ) -> Result<u64, cardbind_ports::StoreError> {
        self.inner.delete_generation(u, b, g).await
    }
    async fn list_keys(
        &self,
        after: Option<(BindingId, u32)>,
        limit: u32,
    ) -> Result<Vec<cardbind_ports::store::CardDataKey>, cardbind_ports::StoreError> {
        self.inner.list_keys(after, limit).await
    }
}

/// The store fails after the card was placed in the wallet: the client's
/// retry with the same Idempotency-Key gets the card (not a permanent
/// `409 card_already_bound`), and is not counted again against the
/// one-bind-a-minute limit set here.
#[tokio::test]
async fn a_retry_with_the_same_key_after_a_partial_write_gets_the_card() {
    let mut opts = Options::default();
    opts.policy.binds_per_user.limit = 1;
    let mut t = spawn_with(opts);
    let mut ports = t.state.usecases.ports().clone();
    ports.card_data = Arc::new(FailingPuts {
        inner: t.store.clone(),
        left: std::sync::atomic::AtomicU32::new(1),
    });
    t.state.usecases = UseCases::new(ports, t.state.usecases.policy().clone());
    t.client = poem::test::TestClient::new(poem::EndpointExt::boxed(cardbind::http::app(
        t.state.clone(),
    )));

    assert_error(
        t.bind("u-retry", "k-retry", &bind_body(VISA)).await,
        503,
        "storage_unavailable",
    )
    .await;
    let resp = t.bind("u-retry", "k-retry", &bind_body(VISA)).await;
    resp.assert_status(poem::http::StatusCode::CREATED);
    assert!(resp.0.headers().get("idempotent-replayed").is_none());
    let v = json_of(resp).await;
    assert_eq!(v["status"], "active", "{v}");
    // Its answer is now the key's: replayed, the same card.
    let again = t.bind("u-retry", "k-retry", &bind_body(VISA)).await;
    again.assert_status(poem::http::StatusCode::CREATED);
    assert_eq!(json_of(again).await["id"], v["id"]);
    // A new request (another key) is counted: the minute's bind is used.
    assert_error(
        t.bind("u-retry", "k-other", &bind_body(VISA)).await,
        429,
        "rate_limited",
    )
    .await;
    let list = t
        .client
        .get("/v1/users/u-retry/cards")
        .header("Authorization", bearer("m", "service"))
        .send()
        .await;
    assert_eq!(json_of(list).await["cards"].as_array().unwrap().len(), 1);
}
