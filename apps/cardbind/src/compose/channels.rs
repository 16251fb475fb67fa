//! The enabled payment channels, each behind its resilience wrapper.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use cardbind_domain::ChannelName;
use cardbind_ports::audit::AuditLog;
use cardbind_ports::channel::{ChannelRegistry, PaymentChannel};
use cardbind_ports::clock::Clock;

use super::read_file;
use crate::config::{ChannelKind, Config};

/// Every enabled channel behind its resilience wrapper, which counts calls
/// into `metrics` and appends channel misconfigurations to `audit`.
pub fn channels(
    config: &Config,
    metrics: &prometheus::Registry,
    audit: Arc<dyn AuditLog>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<ChannelRegistry> {
    let c = &config.channels;
    let r = &c.resilience;
    let resilience = cardbind_channels::ResilienceConfig {
        call_timeout: Duration::from_millis(r.timeout_ms),
        max_retries: r.max_retries as usize,
        min_backoff: Duration::from_millis(r.backoff_min_ms),
        max_backoff: Duration::from_millis(r.backoff_max_ms),
        failure_threshold: r.breaker_failures,
        open_duration: Duration::from_secs(r.breaker_open_seconds),
        deadline: Duration::from_millis(r.deadline_ms),
        ..cardbind_channels::ResilienceConfig::default()
    };
    let mut list: Vec<Arc<dyn PaymentChannel>> = Vec::new();
    for kind in &c.enabled {
        let inner: Arc<dyn PaymentChannel> = match kind {
            ChannelKind::Mock => {
                let m = &c.mock;
                let card_modes: BTreeMap<_, _> = m
                    .card_modes
                    .iter()
                    .map(|(last4, mode)| (last4.clone(), mode.mode()))
                    .collect();
                Arc::new(cardbind_channels::MockChannel::new(
                    cardbind_channels::MockConfig {
                        mode: m.mode.mode(),
                        card_modes,
                        otp_code: m.otp_code.clone(),
                        flaky_every: m.flaky_every,
                        notification_secret: m.notify_secret.clone(),
                        timeout_after: Duration::from_millis(m.timeout_after_ms),
                        slow_after: Duration::from_millis(m.slow_ms),
                        ..cardbind_channels::MockConfig::default()
                    },
                ))
            }
            ChannelKind::Alipay => {
                let a = c
                    .alipay
                    .as_ref()
                    .ok_or_else(|| anyhow!("channels.alipay: missing"))?;
                let aes_key = match &a.aes_key_file {
                    Some(f) => Some(
                        read_file("channels.alipay.aes_key_file", f)?
                            .trim()
                            .to_owned(),
                    ),
                    None => None,
                };
                Arc::new(
                    cardbind_channels::AlipayChannel::new(cardbind_channels::AlipayConfig {
                        gateway_url: a.gateway_url.clone(),
                        app_id: a.app_id.clone(),
                        private_key_pem: read_file(
                            "channels.alipay.private_key_file",
                            &a.private_key_file,
                        )?,
                        alipay_public_key_pem: read_file(
                            "channels.alipay.alipay_public_key_file",
                            &a.alipay_public_key_file,
                        )?,
                        aes_key,
                        notify_url: a.notify_url.clone(),
                        return_url: a.return_url.clone(),
                        personal_product_code: a.personal_product_code.clone().unwrap_or_else(
                            || cardbind_channels::AlipayConfig::default().personal_product_code,
                        ),
                        sign_scene: a.sign_scene.clone().unwrap_or_default(),
                        request_timeout: resilience.call_timeout,
                        ..cardbind_channels::AlipayConfig::default()
                    })
                    .map_err(|e| anyhow!("channels.alipay: {e}"))?,
                )
            }
            ChannelKind::Wechat => {
                let w = c
                    .wechat
                    .as_ref()
                    .ok_or_else(|| anyhow!("channels.wechat: missing"))?;
                let mut platform_keys = Vec::new();
                for (serial, f) in &w.platform_keys {
                    platform_keys.push((
                        serial.clone(),
                        read_file("channels.wechat.platform_keys", f)?,
                    ));
                }
                Arc::new(
                    cardbind_channels::WechatChannel::new(cardbind_channels::WechatConfig {
                        base_url: w.base_url.clone(),
                        mchid: w.mchid.clone(),
                        appid: w.appid.clone(),
                        serial_no: w.serial_no.clone(),
                        private_key_pem: read_file(
                            "channels.wechat.private_key_file",
                            &w.private_key_file,
                        )?,
                        platform_keys,
                        apiv3_key: read_file("channels.wechat.apiv3_key_file", &w.apiv3_key_file)?
                            .trim()
                            .to_owned(),
                        notify_url: w.notify_url.clone(),
                        plan_id: w.plan_id,
                        return_url: w.return_url.clone(),
                        presign_path: w.presign_path.clone(),
                        presign_fields: w
                            .presign_fields
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                        // The adapter's HTTP client would otherwise cut
                        // every call at its own 10 s, under a longer
                        // `timeout_ms` (the wrapper's cut).
                        request_timeout: resilience.call_timeout,
                        ..cardbind_channels::WechatConfig::default()
                    })
                    .map_err(|e| anyhow!("channels.wechat: {e}"))?,
                )
            }
        };
        let wrapped = cardbind_channels::Resilient::new(inner, resilience.clone(), metrics)
            .map_err(|e| anyhow!("channels.resilience: {e}"))?
            .with_audit(audit.clone(), clock.clone());
        list.push(Arc::new(wrapped));
    }
    let default = ChannelName::parse(c.default.as_str())
        .map_err(|_| anyhow!("channels.default: not a channel name"))?;
    ChannelRegistry::new(list, default).map_err(|e| anyhow!("channels.default: {e}"))
}
