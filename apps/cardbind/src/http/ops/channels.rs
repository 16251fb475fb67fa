//! Asynchronous notifications from payment channels.

use std::collections::BTreeMap;

use cardbind_domain::ChannelName;
use cardbind_ports::channel::Notification;
use poem::Request;
use poem_openapi::param::Path;
use poem_openapi::OpenApi;

use super::*;
use crate::http::params::ChannelKind;
use crate::http::Cx;

pub struct ChannelsApi;

#[OpenApi(tag = "ApiTags::Channels")]
impl ChannelsApi {
    /// Receive a channel notification
    ///
    /// Called by the payment channel itself (no bearer token: the channel
    /// signs its notification, and a signature that does not verify is
    /// `invalid_signature`). The body and headers are handed over exactly as
    /// received; the answer is the acknowledgement the channel's protocol
    /// expects, sent only once the event is stored. A channel this service
    /// does not enable is 404.
    #[oai(
        path = "/v1/channels/:channel/notify",
        method = "post",
        operation_id = "channelNotify"
    )]
    async fn channel_notify(
        &self,
        cx: Cx,
        req: &Request,
        channel: Path<ChannelKind>,
        body: RawNotification,
    ) -> Result<AckResponse, NotifyError> {
        let name = cx.param(ChannelName::parse(channel.0.as_str()))?;
        // A header sent more than once is handed over as absent: which
        // copy the channel's check would read is not for the service to
        // guess (a signature header sent twice then does not verify).
        let mut headers: BTreeMap<String, String> = BTreeMap::new();
        let mut seen = std::collections::HashSet::new();
        let mut repeated = Vec::new();
        for (k, v) in req.headers() {
            let name = k.as_str().to_ascii_lowercase();
            if !seen.insert(name.clone()) {
                repeated.push(name.clone());
            }
            if let Ok(v) = v.to_str() {
                headers.insert(name, v.to_owned());
            }
        }
        for name in repeated {
            headers.remove(&name);
        }
        let n = Notification {
            headers,
            body: body.0,
        };
        cx.answer(cx.usecases().handle_notification(&name, &n))
            .await
            .map(AckResponse)
    }
}
