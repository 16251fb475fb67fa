//! Configuration: one TOML file plus `CARDBIND__SECTION__KEY` environment
//! overrides (figment). Every default runs with nothing else installed:
//! in-memory storage, a local master key in the data directory, the mock
//! channel. A bad value is a start-up error that names its field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub keys: KeysConfig,
    pub channels: ChannelsConfig,
    pub limits: LimitsConfig,
    pub auth: AuthConfig,
    pub audit: AuditConfig,
    pub idempotency: IdempotencyConfig,
    pub step_up: StepUpConfig,
    pub log: LogConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Listen address, `host:port`.
    pub address: String,
    /// Where the local master key and the dev JWT secret live.
    pub data_dir: PathBuf,
    /// PEM certificate chain and key: when both are set the service
    /// terminates TLS itself (TLS 1.2 minimum) and refuses plain HTTP.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub max_body_bytes: usize,
    pub max_json_depth: usize,
    /// Trust `X-Forwarded-For` (only behind a proxy that appends the
    /// client's address): its LAST entry is taken as the client IP, since
    /// earlier entries come from the client and can be forged.
    pub trust_forwarded_for: bool,
    /// How often the background purge runs (seconds; 0 disables it).
    pub purge_interval_seconds: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            address: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from(".data"),
            tls_cert_file: None,
            tls_key_file: None,
            max_body_bytes: 64 * 1024,
            max_json_depth: 16,
            trust_forwarded_for: false,
            purge_interval_seconds: 3600,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageKind {
    Memory,
    Mongodb,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub kind: StorageKind,
    /// MongoDB connection string: replica set, TLS and credentials go here
    /// (`mongodb://user:pass@h1,h2,h3/?replicaSet=rs0&tls=true`); prefer
    /// `CARDBIND__STORAGE__URI` from the environment for secrets.
    pub uri: String,
    pub database: String,
    /// Bound on every storage operation, milliseconds.
    pub timeout_ms: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            kind: StorageKind::Memory,
            uri: "mongodb://127.0.0.1:27017/".into(),
            database: "cardbind".into(),
            timeout_ms: 3000,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeysKind {
    Local,
    AwsKms,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    pub kind: KeysKind,
    /// Local master key file (created 0600 on first start); defaults to
    /// `<data_dir>/master.key`.
    pub local_key_file: Option<PathBuf>,
    /// KMS key id, ARN or `alias/…`.
    pub kms_key_id: String,
    pub kms_region: String,
    /// Endpoint override (tests, VPC endpoints).
    pub kms_endpoint: Option<String>,
    pub kms_timeout_ms: u64,
    /// Static credentials (tests, emulators). Leave unset in production:
    /// the default AWS chain (environment, profile, instance/task role) is used.
    pub kms_access_key_id: Option<String>,
    pub kms_secret_access_key: Option<String>,
    /// Master keys being rotated away from: used only to unwrap data keys
    /// not yet re-wrapped (`cardbind keys rotate`), never to wrap new ones.
    pub previous_kms_key_ids: Vec<String>,
    pub previous_local_key_files: Vec<PathBuf>,
    /// Per-user data-key cache bounds (0 entries disables the cache).
    pub cache_max_entries: usize,
    pub cache_max_age_seconds: u64,
    pub cache_max_uses: u64,
    /// Branch keys wrap users' data keys and are themselves wrapped by the
    /// master key: how long one is kept unwrapped in memory (seconds; 0 =
    /// never, so every new user costs a master key call). While KMS is down
    /// an instance keeps sealing for new users until it runs out.
    pub branch_key_cache_ttl_seconds: u64,
    /// A new branch key version becomes active after this many days (0 =
    /// only by `cardbind keys retire-branches --new-version`).
    pub branch_key_rotation_days: u64,
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig {
            kind: KeysKind::Local,
            local_key_file: None,
            kms_key_id: String::new(),
            kms_region: "us-east-1".into(),
            kms_endpoint: None,
            kms_timeout_ms: 5000,
            kms_access_key_id: None,
            kms_secret_access_key: None,
            previous_kms_key_ids: Vec::new(),
            previous_local_key_files: Vec::new(),
            cache_max_entries: 10_000,
            cache_max_age_seconds: 300,
            cache_max_uses: 10_000,
            branch_key_cache_ttl_seconds: 600,
            branch_key_rotation_days: 30,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelsConfig {
    /// Enabled channels: any of `mock`, `alipay`, `wechat`.
    pub enabled: Vec<String>,
    /// The channel used when a bind request names none.
    pub default: String,
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
            enabled: vec!["mock".into()],
            default: "mock".into(),
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
    /// `instant`, `otp`, `redirect`, `decline`, `timeout` or `flaky`.
    pub mode: String,
    /// The OTP the mock accepts.
    pub otp_code: String,
    /// HMAC secret for mock notifications (`x-mock-signature`).
    pub notify_secret: String,
    /// For `flaky`: every Nth call fails.
    pub flaky_every: u64,
    /// Per-card mode by the card's last four digits (demos and tests:
    /// e.g. `{"0002" = "decline"}`).
    pub card_modes: BTreeMap<String, String>,
    /// How long `timeout` mode waits before giving up, milliseconds.
    pub timeout_after_ms: u64,
}

impl Default for MockChannelConfig {
    fn default() -> Self {
        MockChannelConfig {
            mode: "otp".into(),
            otp_code: "123456".into(),
            notify_secret: "mock-notify-secret".into(),
            flaky_every: 2,
            card_modes: BTreeMap::new(),
            timeout_after_ms: 30_000,
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
    #[serde(default)]
    pub return_url: Option<String>,
}

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
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub binds_per_user_per_minute: u64,
    /// 0 disables the limit.
    pub binds_per_ip_per_minute: u64,
    /// One card tried against many accounts; 0 disables.
    pub binds_per_card_per_hour: u64,
    pub cards_per_user: u32,
    pub otp_attempts: u32,
    pub verification_window_seconds: i64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            binds_per_user_per_minute: 3,
            binds_per_ip_per_minute: 30,
            binds_per_card_per_hour: 5,
            cards_per_user: 10,
            otp_attempts: 5,
            verification_window_seconds: 900,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// HS256 secret. When neither this nor `jwt_public_key_file` is set, a
    /// random secret is generated in `<data_dir>/jwt.secret` (the dev
    /// default that `cardbind token` signs with).
    pub jwt_secret: Option<String>,
    /// RS256 public key (PEM) of your identity provider.
    pub jwt_public_key_file: Option<PathBuf>,
    pub issuer: String,
    pub audience: String,
    pub leeway_seconds: u64,
    /// Service clients that must sign requests: client id → HMAC secret.
    pub signed_clients: BTreeMap<String, String>,
    pub signature_window_seconds: i64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_secret: None,
            jwt_public_key_file: None,
            issuer: "cardbind".into(),
            audience: "cardbind".into(),
            leeway_seconds: 30,
            signed_clients: BTreeMap::new(),
            signature_window_seconds: 300,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Days audit events are kept; never less than 180.
    pub retention_days: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            retention_days: 400,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdempotencyConfig {
    /// Hours a key is kept; never less than 24.
    pub retention_hours: u32,
    pub wait_ms: u64,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        IdempotencyConfig {
            retention_hours: 48,
            wait_ms: 10_000,
        }
    }
}

/// Step-up for risky operations: unbinding a user's default card and
/// erasing a user need an `X-Step-Up-Token` the verifier accepts.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StepUpConfig {
    pub enabled: bool,
    /// The verifier. `hmac` (the only one built in): tokens
    /// `<expiry unix seconds>.<hex HMAC-SHA256>` made with `hmac_secret` by
    /// whatever performed the second factor (see `crate::step_up`).
    pub kind: String,
    /// Shared secret of the `hmac` verifier (at least 32 characters);
    /// prefer `CARDBIND__STEP_UP__HMAC_SECRET` from the environment.
    pub hmac_secret: Option<String>,
    /// Longest accepted token lifetime (expiry minus now), seconds.
    pub max_ttl_seconds: u64,
}

impl Default for StepUpConfig {
    fn default() -> Self {
        StepUpConfig {
            enabled: false,
            kind: "hmac".into(),
            hmac_secret: None,
            max_ttl_seconds: 300,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter, e.g. `info` or `cardbind=debug,info`.
    pub filter: String,
    /// `json` or `pretty`.
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            filter: "info".into(),
            format: "json".into(),
        }
    }
}

/// Every setting with its default, as TOML (`cardbind defaults`; committed
/// as `docs/cardbind.example.toml`). Settings without a default (secrets,
/// channel credentials) are described in `docs/operations.md`.
pub fn defaults_toml() -> Result<String, ConfigError> {
    let body =
        toml::to_string_pretty(&Config::default()).map_err(|e| ConfigError(e.to_string()))?;
    Ok(format!(
        "# cardbind configuration: every setting with its default.\n\
         # Generated by `cardbind defaults`; see docs/operations.md for each key.\n\
         # Any key can be overridden from the environment as CARDBIND__SECTION__KEY.\n\n{body}"
    ))
}

/// A configuration problem, naming the field.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Defaults, then `file` (if given), then `CARDBIND__…` variables.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_from(file, Env::prefixed("CARDBIND__").split("__"))
    }

    /// As [`Config::load`] with an explicit environment provider (tests).
    pub fn load_from(file: Option<&Path>, env: Env) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(f) = file {
            if !f.exists() {
                return Err(ConfigError(format!(
                    "config file {} does not exist",
                    f.display()
                )));
            }
            fig = fig.merge(Toml::file(f));
        }
        let cfg: Config = fig.merge(env.lowercase(true)).extract().map_err(|e| {
            let msgs: Vec<String> = e
                .into_iter()
                .map(|e| {
                    let path = e.path.join(".");
                    if path.is_empty() {
                        e.kind.to_string()
                    } else {
                        format!("{path}: {}", e.kind)
                    }
                })
                .collect();
            ConfigError(msgs.join("; "))
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &str, why: &str| Err(ConfigError(format!("{field}: {why}")));
        if self.server.address.parse::<std::net::SocketAddr>().is_err() {
            return bad("server.address", "must be host:port, e.g. 127.0.0.1:8080");
        }
        if self.server.tls_cert_file.is_some() != self.server.tls_key_file.is_some() {
            return bad(
                "server.tls_cert_file",
                "set both tls_cert_file and tls_key_file, or neither",
            );
        }
        if self.server.max_body_bytes < 1024 {
            return bad("server.max_body_bytes", "must be at least 1024");
        }
        if self.storage.kind == StorageKind::Mongodb && !self.storage.uri.starts_with("mongodb") {
            return bad(
                "storage.uri",
                "must be a mongodb:// or mongodb+srv:// connection string",
            );
        }
        if self.storage.timeout_ms == 0 {
            return bad("storage.timeout_ms", "must be positive");
        }
        if self.keys.kind == KeysKind::AwsKms && self.keys.kms_key_id.is_empty() {
            return bad(
                "keys.kms_key_id",
                "is required when keys.kind = \"aws_kms\"",
            );
        }
        if self.keys.branch_key_cache_ttl_seconds > 86_400 {
            return bad(
                "keys.branch_key_cache_ttl_seconds",
                "must be at most 86400 (one day)",
            );
        }
        if self.keys.branch_key_rotation_days > 3650 {
            return bad(
                "keys.branch_key_rotation_days",
                "must be at most 3650 (0 turns automatic rotation off)",
            );
        }
        if self.channels.enabled.is_empty() {
            return bad("channels.enabled", "enable at least one channel");
        }
        for c in &self.channels.enabled {
            match c.as_str() {
                "mock" => {}
                "alipay" if self.channels.alipay.is_none() => {
                    return bad("channels.alipay", "is required when alipay is enabled")
                }
                "wechat" if self.channels.wechat.is_none() => {
                    return bad("channels.wechat", "is required when wechat is enabled")
                }
                "alipay" | "wechat" => {}
                _ => return bad("channels.enabled", "channels are mock, alipay and wechat"),
            }
        }
        if !self.channels.enabled.contains(&self.channels.default) {
            return bad("channels.default", "must be one of channels.enabled");
        }
        const MODES: [&str; 6] = ["instant", "otp", "redirect", "decline", "timeout", "flaky"];
        if !MODES.contains(&self.channels.mock.mode.as_str()) {
            return bad(
                "channels.mock.mode",
                "one of instant, otp, redirect, decline, timeout, flaky",
            );
        }
        if self
            .channels
            .mock
            .card_modes
            .values()
            .any(|m| !MODES.contains(&m.as_str()))
        {
            return bad(
                "channels.mock.card_modes",
                "modes are instant, otp, redirect, decline, timeout, flaky",
            );
        }
        if self.channels.resilience.max_retries > 3 {
            return bad("channels.resilience.max_retries", "at most 3");
        }
        if self.channels.resilience.timeout_ms == 0 {
            return bad("channels.resilience.timeout_ms", "must be positive");
        }
        if self.channels.resilience.backoff_min_ms > self.channels.resilience.backoff_max_ms {
            return bad(
                "channels.resilience.backoff_min_ms",
                "must not exceed backoff_max_ms",
            );
        }
        if self.channels.reconcile_after_seconds < 0 {
            return bad("channels.reconcile_after_seconds", "must not be negative");
        }
        if self.limits.binds_per_user_per_minute == 0 {
            return bad("limits.binds_per_user_per_minute", "must be positive");
        }
        if self.limits.cards_per_user == 0 {
            return bad("limits.cards_per_user", "must be positive");
        }
        if self.limits.otp_attempts == 0 {
            return bad("limits.otp_attempts", "must be positive");
        }
        if self.audit.retention_days < 180 {
            return bad("audit.retention_days", "must be at least 180 (six months)");
        }
        if self.idempotency.retention_hours < 24 {
            return bad("idempotency.retention_hours", "must be at least 24");
        }
        if self.auth.jwt_secret.as_ref().is_some_and(|s| s.len() < 32) {
            return bad("auth.jwt_secret", "must be at least 32 characters");
        }
        if self.auth.signed_clients.values().any(|v| v.len() < 32) {
            return bad(
                "auth.signed_clients",
                "each signing secret must be at least 32 characters",
            );
        }
        if self.auth.signature_window_seconds <= 0 || self.auth.signature_window_seconds > 900 {
            return bad("auth.signature_window_seconds", "must be 1 to 900");
        }
        if self.step_up.kind != "hmac" {
            return bad("step_up.kind", "the built-in verifier is \"hmac\"");
        }
        if self.step_up.enabled
            && self
                .step_up
                .hmac_secret
                .as_ref()
                .is_none_or(|s| s.len() < 32)
        {
            return bad(
                "step_up.hmac_secret",
                "is required (at least 32 characters) when step_up.enabled",
            );
        }
        if !(1..=3600).contains(&self.step_up.max_ttl_seconds) {
            return bad("step_up.max_ttl_seconds", "must be 1 to 3600");
        }
        if !["json", "pretty"].contains(&self.log.format.as_str()) {
            return bad("log.format", "json or pretty");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Env {
        // A private prefix so that the test reads only what it sets.
        let prefix = format!("CBTEST{}__", std::process::id());
        for (k, v) in vars {
            std::env::set_var(format!("{prefix}{k}"), v);
        }
        Env::prefixed(&prefix).split("__")
    }

    #[test]
    fn defaults_validate() {
        let c = Config::default();
        assert!(c.validate().is_ok());
        assert_eq!(c.storage.kind, StorageKind::Memory);
        assert_eq!(c.keys.kind, KeysKind::Local);
        assert_eq!(c.channels.default, "mock");
    }

    #[test]
    fn env_overrides_and_names_bad_fields() {
        let dir = tempfile_dir();
        let f = dir.join("c.toml");
        std::fs::write(
            &f,
            "[storage]\nkind = \"mongodb\"\nuri = \"mongodb://h/\"\n[limits]\ncards_per_user = 4\n",
        )
        .unwrap();
        let c = Config::load_from(Some(&f), env(&[("LIMITS__CARDS_PER_USER", "7")])).unwrap();
        assert_eq!(c.storage.kind, StorageKind::Mongodb);
        assert_eq!(c.limits.cards_per_user, 7);

        std::fs::write(&f, "[audit]\nretention_days = 30\n").unwrap();
        let e = Config::load_from(Some(&f), Env::prefixed("NOPE_NOT_SET__")).unwrap_err();
        assert!(e.0.contains("audit.retention_days"), "{e}");

        std::fs::write(&f, "[limits]\ncards_per_user = \"many\"\n").unwrap();
        let e = Config::load_from(Some(&f), Env::prefixed("NOPE_NOT_SET__")).unwrap_err();
        assert!(e.0.contains("limits.cards_per_user"), "{e}");

        std::fs::write(&f, "[storage]\nkindd = \"memory\"\n").unwrap();
        let e = Config::load_from(Some(&f), Env::prefixed("NOPE_NOT_SET__")).unwrap_err();
        assert!(e.0.contains("kindd"), "{e}");
    }

    #[test]
    fn audit_retention_cannot_go_below_180_days() {
        let mut c = Config::default();
        assert!(c.audit.retention_days >= 180);
        for days in [0, 1, 90, 179] {
            c.audit.retention_days = days;
            let e = c.validate().unwrap_err();
            assert!(e.0.starts_with("audit.retention_days:"), "{e}");
        }
        for days in [180, 365, 3650] {
            c.audit.retention_days = days;
            assert!(c.validate().is_ok(), "{days}");
        }
        // also through the environment, as operators set it
        // (a prefix of its own: the other tests' variables must not see it)
        let prefix = format!("CBRETENTION{}__", std::process::id());
        std::env::set_var(format!("{prefix}AUDIT__RETENTION_DAYS"), "179");
        let e = Config::load_from(None, Env::prefixed(&prefix).split("__")).unwrap_err();
        assert!(e.0.contains("audit.retention_days"), "{e}");
    }

    #[test]
    fn step_up_needs_a_secret_when_enabled() {
        let mut c = Config::default();
        assert!(!c.step_up.enabled);
        c.step_up.enabled = true;
        let e = c.validate().unwrap_err();
        assert!(e.0.starts_with("step_up.hmac_secret:"), "{e}");
        c.step_up.hmac_secret = Some("short".into());
        assert!(c.validate().is_err());
        c.step_up.hmac_secret = Some("s".repeat(32));
        assert!(c.validate().is_ok());
        c.step_up.max_ttl_seconds = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .0
            .starts_with("step_up.max_ttl_seconds"));
        c.step_up.max_ttl_seconds = 300;
        c.step_up.kind = "totp".into();
        assert!(c.validate().unwrap_err().0.starts_with("step_up.kind"));
    }

    #[test]
    fn branch_key_settings_are_bounded() {
        let mut c = Config::default();
        assert_eq!(c.keys.branch_key_cache_ttl_seconds, 600);
        assert_eq!(c.keys.branch_key_rotation_days, 30);
        c.keys.branch_key_cache_ttl_seconds = 86_401;
        let e = c.validate().unwrap_err();
        assert!(e.0.starts_with("keys.branch_key_cache_ttl_seconds:"), "{e}");
        c.keys.branch_key_cache_ttl_seconds = 0;
        assert!(c.validate().is_ok(), "0 turns the branch key cache off");
        c.keys.branch_key_rotation_days = 3651;
        let e = c.validate().unwrap_err();
        assert!(e.0.starts_with("keys.branch_key_rotation_days:"), "{e}");
        c.keys.branch_key_rotation_days = 0;
        assert!(c.validate().is_ok(), "0 turns automatic rotation off");
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("cardbind-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
