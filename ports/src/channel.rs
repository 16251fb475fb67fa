//! The payment channel port: what any channel (mock, Alipay, WeChat Pay)
//! offers for binding a card, and the registry that picks one by name.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use cardbind_domain::{
    BindingId, CardNumber, ChannelName, Currency, Cvv, Expiry, HolderName, Phone, ResidentId,
    UserId,
};

use crate::error::ChannelError;

/// Everything a channel may need to start a binding. Card data is in clear
/// here (in types that mask themselves): channels send what their protocol
/// needs and never log it.
#[derive(Clone, Debug)]
pub struct ChannelBindRequest {
    /// Our binding id. With `attempt` it makes the channel's external
    /// reference (Alipay's `external_agreement_no`, WeChat Pay's
    /// `out_contract_code`), so that a binding can be queried even if we
    /// never stored the channel's answer.
    pub binding_id: BindingId,
    /// Which bind of the card this is: the binding's data generation. A
    /// card bound again keeps its id but gets a new attempt, so that each
    /// bind has an external reference of its own (WeChat Pay refuses a
    /// reference used before, even by an ended contract).
    pub attempt: u32,
    pub user_id: UserId,
    pub card: CardNumber,
    pub expiry: Expiry,
    pub cvv: Option<Cvv>,
    pub holder_name: HolderName,
    pub id_number: ResidentId,
    pub phone: Phone,
    /// The card's currency as the BIN table knows it (ISO 4217), for a
    /// channel whose binding API takes one. Neither Alipay's agreement
    /// signing nor WeChat Pay's contract signing has such a field, so those
    /// adapters (and the mock) do not send it.
    pub currency: Option<Currency>,
}

/// A channel's answer to the start of a binding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelStart {
    /// Bound at once; `channel_ref` is the channel's token/agreement id.
    Bound { channel_ref: String },
    /// An OTP was sent to the phone; confirm with [`PaymentChannel::confirm_otp`].
    OtpSent { channel_ref: String },
    /// The user must open `url` (redirect or QR) to sign an agreement; the
    /// result arrives as a notification or through `query`.
    Redirect { channel_ref: String, url: String },
    /// The channel refused; `code` is stable (ours or the channel's sub code).
    Refused { code: String, message: String },
}

/// A channel's answer to an OTP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfirmOutcome {
    Confirmed { channel_ref: String },
    WrongOtp,
    Expired,
    Refused { code: String },
}

/// What the channel says a binding is, when queried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoteState {
    Active { channel_ref: String },
    Pending,
    Terminated,
    Failed { code: String },
    NotFound,
}

/// How a notification names the binding it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BindingRef {
    /// Our binding id (echoed back as the channel's external reference).
    Ours(BindingId),
    /// The channel's own reference.
    Channel(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelEventKind {
    /// The user signed; the binding is active with this reference.
    Signed { channel_ref: String },
    /// The user (or the channel) ended the agreement.
    Terminated,
    /// Signing failed.
    Failed { code: String },
}

/// A verified, parsed asynchronous notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelEvent {
    /// The channel's notification id, for deduplication.
    pub event_id: String,
    pub binding: BindingRef,
    pub kind: ChannelEventKind,
    /// The agreement the event is about, when the channel names it (Alipay
    /// `agreement_no`, WeChat `contract_id`). A binding bound again keeps
    /// its id, so an event naming another agreement than the binding's
    /// current one is stale and is ignored.
    pub agreement: Option<String>,
    /// The bind attempt our reference in the notification names, when it
    /// names one (references sent before attempts were part of them, and
    /// events that name only the channel's reference, have none). An event
    /// about another attempt than the card's current one is about an
    /// earlier bind of the card.
    pub attempt: Option<u32>,
}

/// An incoming notification exactly as received.
#[derive(Clone, Debug, Default)]
pub struct Notification {
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

/// What to answer a channel once a notification is handled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotificationAck {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

/// One payment channel.
///
/// Implementations bound every call in time and translate their protocol's
/// failures: transient ones to `Timeout`/`Unavailable`, business refusals to
/// `Rejected` (or `ChannelStart::Refused`), bad signatures to
/// `InvalidSignature`, unreadable answers to `Protocol`. They never put card
/// data, keys or secrets in an error or a log line.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait PaymentChannel: Send + Sync {
    /// The configured name (`mock`, `alipay`, `wechat`).
    fn name(&self) -> &str;

    async fn start_binding(
        &self,
        request: &ChannelBindRequest,
    ) -> Result<ChannelStart, ChannelError>;

    async fn confirm_otp(
        &self,
        binding: &BindingId,
        channel_ref: &str,
        otp: &str,
    ) -> Result<ConfirmOutcome, ChannelError>;

    /// Ends the agreement at the channel. Ending one that is already ended
    /// MUST succeed. `attempt` is the bind that made the agreement (see
    /// [`ChannelBindRequest::attempt`]), when known.
    async fn unbind(
        &self,
        binding: &BindingId,
        attempt: Option<u32>,
        channel_ref: &str,
    ) -> Result<(), ChannelError>;

    /// What the channel says of the agreement of bind `attempt` of
    /// `binding`: by `channel_ref` when given (what the start or the
    /// channel answered), else by the reference the attempt makes (when
    /// the attempt is not known, by the reference builds before attempts
    /// made).
    async fn query(
        &self,
        binding: &BindingId,
        attempt: Option<u32>,
        channel_ref: Option<String>,
    ) -> Result<RemoteState, ChannelError>;

    /// Verifies and parses an asynchronous notification. MUST return
    /// `InvalidSignature` for anything not signed by the channel, stale or
    /// malformed, without panicking on any input; MAY return `NotActedOn`
    /// for a genuine one of a kind the service does not handle (checked as
    /// fully as a handled one first).
    fn parse_notification(&self, notification: &Notification)
        -> Result<ChannelEvent, ChannelError>;

    /// The answer the channel expects once a notification is stored.
    fn notification_ack(&self) -> NotificationAck;
}

/// The enabled channels by name, and the default one.
#[derive(Clone)]
pub struct ChannelRegistry {
    channels: BTreeMap<String, Arc<dyn PaymentChannel>>,
    default: ChannelName,
}

impl ChannelRegistry {
    /// `default` must be among `channels`.
    pub fn new(
        channels: Vec<Arc<dyn PaymentChannel>>,
        default: ChannelName,
    ) -> Result<Self, String> {
        let channels: BTreeMap<_, _> = channels
            .into_iter()
            .map(|c| (c.name().to_owned(), c))
            .collect();
        if !channels.contains_key(default.as_str()) {
            return Err(format!("default channel {default} is not enabled"));
        }
        Ok(ChannelRegistry { channels, default })
    }

    pub fn default_name(&self) -> &ChannelName {
        &self.default
    }

    pub fn get(&self, name: &ChannelName) -> Option<Arc<dyn PaymentChannel>> {
        self.channels.get(name.as_str()).cloned()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.channels.keys().map(String::as_str)
    }
}
