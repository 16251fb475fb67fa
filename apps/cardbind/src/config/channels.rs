//! The payment channels and their resilience.

use std::collections::BTreeMap;
use std::path::PathBuf;

use cardbind_domain::{CardType, ChannelCardRule, Country, UnknownBins};
use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The kinds of payment channel the service speaks; each is configured
/// (and named in requests and paths) by its kind. Which of them are
/// enabled is configuration (`channels.enabled`).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    poem_openapi::Enum,
)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
pub enum ChannelKind {
    Mock,
    Alipay,
    Wechat,
}

impl ChannelKind {
    pub const ALL: [ChannelKind; 3] = [ChannelKind::Mock, ChannelKind::Alipay, ChannelKind::Wechat];

    /// The name the channel is known by (in requests, paths and metrics).
    pub const fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Mock => cardbind_channels::names::MOCK,
            ChannelKind::Alipay => cardbind_channels::names::ALIPAY,
            ChannelKind::Wechat => cardbind_channels::names::WECHAT,
        }
    }
}

/// The mock channel's behaviour (see `cardbind_channels::MockMode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MockModeSetting {
    Instant,
    Otp,
    Redirect,
    Decline,
    Timeout,
    Flaky,
    Slow,
}

impl MockModeSetting {
    pub fn mode(self) -> cardbind_channels::MockMode {
        use cardbind_channels::MockMode as M;
        match self {
            MockModeSetting::Instant => M::Instant,
            MockModeSetting::Otp => M::Otp,
            MockModeSetting::Redirect => M::Redirect,
            MockModeSetting::Decline => M::Decline,
            MockModeSetting::Timeout => M::Timeout,
            MockModeSetting::Flaky => M::Flaky,
            MockModeSetting::Slow => M::Slow,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelsConfig {
    /// Enabled channels: any of `mock`, `alipay`, `wechat`.
    pub enabled: Vec<ChannelKind>,
    /// The channel used when a bind request names none.
    pub default: ChannelKind,
    pub mock: MockChannelConfig,
    pub alipay: Option<AlipayChannelConfig>,
    pub wechat: Option<WechatChannelConfig>,
    pub resilience: ResilienceConfig,
    /// `cardbind reconcile` settles bindings that have waited in
    /// `pending_verification` for longer than this (seconds; default 900,
    /// the verification window): it asks their channel and activates or
    /// fails them. `--older-than` overrides it for one run.
    pub reconcile_after_seconds: i64,
}

impl Default for ChannelsConfig {
    fn default() -> Self {
        ChannelsConfig {
            enabled: vec![ChannelKind::Mock],
            default: ChannelKind::Mock,
            mock: MockChannelConfig::default(),
            alipay: None,
            wechat: None,
            resilience: ResilienceConfig::default(),
            reconcile_after_seconds: 900,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MockChannelConfig {
    /// `instant`, `otp`, `redirect`, `decline`, `timeout`, `flaky` or
    /// `slow` (answers like `otp` after `slow_ms`).
    pub mode: MockModeSetting,
    /// The OTP the mock accepts.
    pub otp_code: String,
    /// HMAC secret for mock notifications (`x-mock-signature`).
    pub notify_secret: String,
    /// For `flaky`: every Nth call fails.
    pub flaky_every: u64,
    /// Per-card mode by the card's last four digits (demos and tests:
    /// e.g. `{"0002" = "decline"}`).
    pub card_modes: BTreeMap<String, MockModeSetting>,
    /// How long `timeout` mode waits before giving up, milliseconds.
    pub timeout_after_ms: u64,
    /// How long `slow` mode waits before it answers, milliseconds.
    pub slow_ms: u64,
    /// Which cards this channel takes (by their BIN data).
    pub accept: CardAcceptConfig,
}

/// The mock channel's notification secret when none is configured: in
/// the docs, so anyone may sign a mock notification with it.
pub const PUBLIC_MOCK_SECRET: &str = "mock-notify-secret";

impl MockChannelConfig {
    /// Whether its notifications are signed with the secret everyone
    /// knows (fine on a laptop; anywhere else anyone who knows a binding
    /// id could post its signing or its end).
    pub fn has_public_secret(&self) -> bool {
        self.notify_secret == PUBLIC_MOCK_SECRET
    }
}

impl Default for MockChannelConfig {
    fn default() -> Self {
        MockChannelConfig {
            mode: MockModeSetting::Otp,
            otp_code: "123456".into(),
            notify_secret: PUBLIC_MOCK_SECRET.into(),
            flaky_every: 2,
            card_modes: BTreeMap::new(),
            timeout_after_ms: 30_000,
            slow_ms: 2_000,
            accept: CardAcceptConfig::default(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlipayChannelConfig {
    pub gateway_url: String,
    pub app_id: String,
    pub private_key_file: PathBuf,
    pub alipay_public_key_file: PathBuf,
    /// Base64 AES-128 content-encryption key file, when enabled.
    pub aes_key_file: Option<PathBuf>,
    pub notify_url: Option<String>,
    /// Where the user's browser returns after signing.
    #[serde(default)]
    pub return_url: Option<String>,
    /// Merchant personal product code for agreement signing.
    #[serde(default)]
    pub personal_product_code: Option<String>,
    #[serde(default)]
    pub sign_scene: Option<String>,
    /// Which cards this channel takes (by their BIN data).
    #[serde(default)]
    pub accept: CardAcceptConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WechatChannelConfig {
    pub base_url: String,
    pub mchid: String,
    pub appid: String,
    /// Serial number of the merchant API certificate.
    pub serial_no: String,
    pub private_key_file: PathBuf,
    /// Platform certificates / public keys by serial (or `PUB_KEY_ID_…`).
    pub platform_keys: BTreeMap<String, PathBuf>,
    pub apiv3_key_file: PathBuf,
    /// Where WeChat Pay sends contract notifications.
    pub notify_url: String,
    /// The entrusted-debit (papay) template plan id.
    pub plan_id: u64,
    /// The pre-entrust signing API's path, the one WeChat Pay enabled for
    /// the merchant's papay product (e.g.
    /// `/v3/papay/scheduled-deduct-sign/contracts/pre-entrust-sign/h5`).
    /// Required when WeChat Pay is enabled (checked then): each product
    /// has its own. A section kept for a channel not enabled loads
    /// without it.
    #[serde(default)]
    pub presign_path: String,
    /// Fields that pre-sign API requires beyond the adapter's own, the
    /// same for every bind (e.g. `jump_control = { jump_appid = "…" }`).
    #[serde(default)]
    pub presign_fields: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub return_url: Option<String>,
    /// Which cards this channel takes (by their BIN data).
    #[serde(default)]
    pub accept: CardAcceptConfig,
}

/// Which cards a channel takes, by what the BIN table says about them
/// (`[channels.NAME.accept]`). The defaults take every card.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CardAcceptConfig {
    /// `debit`, `credit`, `prepaid`; empty: any. A card whose BIN entry has
    /// no type is refused when this is set.
    pub card_types: Vec<String>,
    /// ISO 3166-1 alpha-2 issuing countries (`["CN"]`); empty: any. A card
    /// whose BIN entry has no country is refused when this is set.
    pub countries: Vec<String>,
    /// A card whose BIN the table does not know: `accept` (the default) or
    /// `refuse`.
    pub unknown_bins: UnknownBinsSetting,
}

/// What a channel does with a card whose BIN is unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownBinsSetting {
    #[default]
    Accept,
    Refuse,
}

impl ChannelsConfig {
    /// Each enabled channel's card rule (`channels.NAME.accept`).
    pub fn card_rules(&self) -> Result<BTreeMap<ChannelKind, ChannelCardRule>, ConfigError> {
        let mut rules = BTreeMap::new();
        for kind in &self.enabled {
            let accept = match kind {
                ChannelKind::Mock => Some(&self.mock.accept),
                ChannelKind::Alipay => self.alipay.as_ref().map(|a| &a.accept),
                ChannelKind::Wechat => self.wechat.as_ref().map(|w| &w.accept),
            };
            if let Some(a) = accept {
                rules.insert(
                    *kind,
                    a.rule(&format!("channels.{}.accept", kind.as_str()))?,
                );
            }
        }
        Ok(rules)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &str, why: &str| Err(ConfigError(format!("{field}: {why}")));
        if self.enabled.is_empty() {
            return bad("channels.enabled", "enable at least one channel");
        }
        for kind in &self.enabled {
            let configured = match kind {
                ChannelKind::Mock => true,
                ChannelKind::Alipay => self.alipay.is_some(),
                ChannelKind::Wechat => self.wechat.is_some(),
            };
            if !configured {
                return bad(
                    &format!("channels.{}", kind.as_str()),
                    "is required when the channel is enabled",
                );
            }
        }
        if !self.enabled.contains(&self.default) {
            return bad("channels.default", "must be one of channels.enabled");
        }
        // A code no verify request can carry (the spec's `otp` is 4 to 8
        // digits) would leave every mock card unverifiable.
        let otp = &self.mock.otp_code;
        if self.enabled.contains(&ChannelKind::Mock)
            && !((4..=8).contains(&otp.len()) && otp.bytes().all(|b| b.is_ascii_digit()))
        {
            return bad("channels.mock.otp_code", "must be 4 to 8 digits");
        }
        // A mode is keyed by a card's last four digits: another key never
        // matches a card.
        if let Some(key) = self
            .mock
            .card_modes
            .keys()
            .filter(|_| self.enabled.contains(&ChannelKind::Mock))
            .find(|k| !(k.len() == 4 && k.bytes().all(|b| b.is_ascii_digit())))
        {
            return bad(
                "channels.mock.card_modes",
                &format!("{key:?} is not a card's last four digits"),
            );
        }
        let r = &self.resilience;
        if r.max_retries > 3 {
            return bad("channels.resilience.max_retries", "at most 3");
        }
        if r.timeout_ms == 0 {
            return bad("channels.resilience.timeout_ms", "must be positive");
        }
        if r.deadline_ms == 0 || r.deadline_ms > MAX_DEADLINE_MS {
            return bad(
                "channels.resilience.deadline_ms",
                "must be positive and at most 25000: a bind still asking its channel after 30 s may be taken over by another request",
            );
        }
        if r.breaker_failures == 0 {
            return bad(
                "channels.resilience.breaker_failures",
                "must be at least 1 (the consecutive failures that open the breaker)",
            );
        }
        if r.breaker_open_seconds > 3600 {
            return bad(
                "channels.resilience.breaker_open_seconds",
                "must be at most 3600",
            );
        }
        if r.backoff_min_ms > r.backoff_max_ms {
            return bad(
                "channels.resilience.backoff_min_ms",
                "must not exceed backoff_max_ms",
            );
        }
        if self.reconcile_after_seconds < 0 {
            return bad("channels.reconcile_after_seconds", "must not be negative");
        }
        // Only the enabled channels' sections are used (and checked), as
        // their card rules are.
        if let Some(a) = self
            .alipay
            .as_ref()
            .filter(|_| self.enabled.contains(&ChannelKind::Alipay))
        {
            callback_url("channels.alipay.notify_url", a.notify_url.as_deref())?;
            callback_url("channels.alipay.return_url", a.return_url.as_deref())?;
        }
        if let Some(w) = self
            .wechat
            .as_ref()
            .filter(|_| self.enabled.contains(&ChannelKind::Wechat))
        {
            callback_url("channels.wechat.notify_url", Some(&w.notify_url))?;
            if !w.presign_path.starts_with("/v3/") || w.presign_path.contains(char::is_whitespace) {
                return bad(
                    "channels.wechat.presign_path",
                    "the path of the pre-entrust signing API WeChat Pay enabled for your papay product, starting /v3/ (see docs/operations.md, WeChat Pay)",
                );
            }
            if let Some(own) = w
                .presign_fields
                .keys()
                .find(|k| cardbind_channels::WECHAT_OWN_PRESIGN_FIELDS.contains(&k.as_str()))
            {
                return bad(
                    "channels.wechat.presign_fields",
                    &format!("{own:?} is set by the service itself"),
                );
            }
        }
        self.card_rules()?;
        Ok(())
    }
}

/// The most characters a channel takes in a URL of ours it is sent (Alipay's
/// `notify_url` and `return_url`, WeChat Pay's contract notification URL;
/// WeChat Pay's return URL is not checked: its limit is not known here).
pub const MAX_CALLBACK_URL_CHARS: usize = 256;

/// A URL the channel is given to call or send the user back to: an absolute
/// `http(s)` URL of at most [`MAX_CALLBACK_URL_CHARS`]. A longer or
/// malformed one would not fail here but at every bind, at the channel
/// (Alipay shows the user an error page; WeChat Pay refuses the pre-sign).
/// Empty counts as not set.
fn callback_url(field: &str, value: Option<&str>) -> Result<(), ConfigError> {
    let Some(v) = value.filter(|v| !v.is_empty()) else {
        return Ok(());
    };
    let bad = |why: String| Err(ConfigError(format!("{field}: {why}")));
    let chars = v.chars().count();
    if chars > MAX_CALLBACK_URL_CHARS {
        return bad(format!(
            "{chars} characters; the channel takes at most {MAX_CALLBACK_URL_CHARS}"
        ));
    }
    match url::Url::parse(v) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        Ok(_) => bad("must be an absolute http(s) URL".to_owned()),
        Err(e) => bad(format!("not a URL ({e})")),
    }
}

impl CardAcceptConfig {
    /// The domain rule; the error names the offending key under `field`.
    pub fn rule(&self, field: &str) -> Result<ChannelCardRule, ConfigError> {
        let mut card_types = Vec::new();
        for t in &self.card_types {
            card_types.push(CardType::parse(t).map_err(|_| {
                ConfigError(format!(
                    "{field}.card_types: {t:?} is not debit, credit or prepaid"
                ))
            })?);
        }
        let mut countries = Vec::new();
        for c in &self.countries {
            countries.push(Country::parse(c).map_err(|_| {
                ConfigError(format!(
                    "{field}.countries: {c:?} is not an ISO 3166-1 alpha-2 code (e.g. \"CN\")"
                ))
            })?);
        }
        Ok(ChannelCardRule {
            card_types,
            countries,
            unknown_bins: match self.unknown_bins {
                UnknownBinsSetting::Accept => UnknownBins::Accept,
                UnknownBinsSetting::Refuse => UnknownBins::Refuse,
            },
        })
    }
}

/// The longest a channel operation may take: a bind left waiting for its
/// channel's answer 30 s (`resume_after_seconds`) may be taken over by
/// another request, so a bind's own channel call, with the store's writes
/// around it, must end well before.
pub const MAX_DEADLINE_MS: u64 = 25_000;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResilienceConfig {
    /// Bound of one channel call attempt, milliseconds.
    pub timeout_ms: u64,
    /// Retries on transient failures (at most 3).
    pub max_retries: u32,
    /// First retry delay, milliseconds (doubles each retry, with jitter).
    pub backoff_min_ms: u64,
    /// Largest retry delay, milliseconds.
    pub backoff_max_ms: u64,
    /// Consecutive failed attempts that open a channel's circuit breaker;
    /// while open, binds go to manual review without calling the channel.
    pub breaker_failures: u32,
    /// How long the breaker stays open before one trial call, seconds.
    pub breaker_open_seconds: u64,
    /// Bound of one channel operation with all its retries, milliseconds:
    /// each attempt is cut to what remains, and no retry starts past it (a
    /// bind whose channel did not answer in time goes to manual review).
    pub deadline_ms: u64,
}

impl Default for ResilienceConfig {
    fn default() -> Self {
        ResilienceConfig {
            timeout_ms: 10_000,
            max_retries: 3,
            backoff_min_ms: 200,
            backoff_max_ms: 5_000,
            breaker_failures: 5,
            breaker_open_seconds: 30,
            deadline_ms: 20_000,
        }
    }
}
