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
        let headers: BTreeMap<String, String> = req
            .headers()
            .iter()
            .filter_map(|(k, v)| {
                v.to_str()
                    .ok()
                    .map(|v| (k.as_str().to_ascii_lowercase(), v.to_owned()))
            })
            .collect();
        let n = Notification {
            headers,
            body: body.0,
        };
        cx.answer(cx.usecases().handle_notification(&name, &n))
            .await
            .map(AckResponse)
    }
}
