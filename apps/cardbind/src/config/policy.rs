//! Limits, authentication, retention, step-up, the BIN table and logs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
    /// The longest a bearer token may live, seconds: a token whose `exp`
    /// lies further ahead (or, with `iat`, further after its issue) is
    /// refused. 0: no bound (your issuer's lifetimes hold alone).
    pub max_token_lifetime_seconds: u64,
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
            max_token_lifetime_seconds: 86_400,
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
    /// Length of an anchored window of the audit log, seconds (0: no
    /// anchors). Each closed window that holds links gets an anchor (an
    /// `audit.anchor` event and a log line) that `cardbind audit verify`
    /// checks: deleting a chain's newest links then shows.
    pub anchor_interval_seconds: u32,
    /// How long after a window closes its anchor is made, seconds: longer
    /// than any write can take to land (1 to 3600; a link that lands later
    /// than this in a window already anchored is reported by the check).
    pub anchor_delay_seconds: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            retention_days: 400,
            anchor_interval_seconds: 60,
            anchor_delay_seconds: 120,
        }
    }
}

impl AuditConfig {
    /// The anchoring schedule, if anchors are on. Each run looks back over
    /// `3600 / interval` closed windows, at least 10 and at most 60 (an
    /// hour at intervals from 1 to 6 minutes), and reads those not anchored
    /// yet, so windows missed during a stop are anchored late.
    pub fn anchors(&self) -> Option<cardbind_usecases::anchors::AnchorSchedule> {
        (self.anchor_interval_seconds > 0).then(|| cardbind_usecases::anchors::AnchorSchedule {
            interval_seconds: self.anchor_interval_seconds,
            delay_seconds: self.anchor_delay_seconds,
            catch_up: (3600 / self.anchor_interval_seconds).clamp(10, 60),
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdempotencyConfig {
    /// Hours a key is kept; never less than 24.
    pub retention_hours: u32,
    pub wait_ms: u64,
    /// Lease on a key while its request runs, seconds (at least 2). It is
    /// renewed every third of its length while the work runs; a request
    /// whose instance stalled past it is taken over by a retry, and the
    /// stalled one can then neither store nor release anything.
    pub lease_seconds: u32,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        IdempotencyConfig {
            retention_hours: 48,
            wait_ms: 10_000,
            lease_seconds: 60,
        }
    }
}

/// The step-up verifiers built in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepUpKind {
    Hmac,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One JSON object per line (for log shippers).
    Json,
    /// Human-readable lines.
    Pretty,
}

/// Step-up for risky operations: unbinding a user's default card, moving
/// the default off it and erasing a user need an `X-Step-Up-Token` the
/// verifier accepts.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StepUpConfig {
    pub enabled: bool,
    /// The verifier. `hmac` (the only one built in): tokens
    /// `<expiry unix seconds>.<hex HMAC-SHA256>` made with `hmac_secret` by
    /// whatever performed the second factor (see `crate::step_up`).
    pub kind: StepUpKind,
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
            kind: StepUpKind::Hmac,
            hmac_secret: None,
            max_ttl_seconds: 300,
        }
    }
}

/// The BIN table: the built-in one until `cardbind bins import` stores
/// one, which every instance picks up within `refresh_interval_seconds`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BinsConfig {
    /// How often each instance checks the store for a newly imported
    /// table (one small read; the table is loaded only when it changed).
    pub refresh_interval_seconds: u64,
}

impl Default for BinsConfig {
    fn default() -> Self {
        BinsConfig {
            refresh_interval_seconds: 60,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter, e.g. `info` or `cardbind=debug,info`.
    pub filter: String,
    /// `json` or `pretty`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            filter: "info".into(),
            format: LogFormat::Json,
        }
    }
}
