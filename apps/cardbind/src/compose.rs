//! The composition root: turns a [`Config`] into adapters behind
//! `Arc<dyn Port>` and the [`AppState`] the HTTP edge serves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use cardbind_domain::{BindingId, CardCap, ChannelName, RateRule, Role, VerificationPolicy};
use cardbind_ports::audit::AuditLog;
use cardbind_ports::channel::{ChannelRegistry, PaymentChannel};
use cardbind_ports::clock::{Clock, IdGenerator, SystemClock};
use cardbind_ports::keys::CardVault;
use cardbind_ports::service::{CardService, Policy, Ports};
use cardbind_ports::store::{
    BindingStore, ConsentLog, DataKeyStore, IdempotencyStore, RateCounter, SeenIds,
};

use crate::config::{Config, KeysKind, StorageKind};
use crate::state::{AppState, AuthSettings, HttpSettings, JwtKey, SigningSecret};

/// UUID v7 ids (hyphenated): unique across instances and ordered by
/// creation time, so that listing by id lists by age. Channels with tight
/// reference formats (WeChat's 32-character `out_contract_code`) map a UUID
/// to and from their form.
#[derive(Clone, Copy, Debug, Default)]
pub struct UuidIds;

impl IdGenerator for UuidIds {
    fn binding_id(&self) -> BindingId {
        BindingId::from_uuid_bytes(*uuid::Uuid::now_v7().as_bytes())
    }

    fn opaque_id(&self) -> String {
        uuid::Uuid::now_v7().simple().to_string()
    }
}

/// All storage ports, from one adapter.
#[derive(Clone)]
pub struct Stores {
    pub bindings: Arc<dyn BindingStore>,
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub rates: Arc<dyn RateCounter>,
    pub consents: Arc<dyn ConsentLog>,
    pub seen: Arc<dyn SeenIds>,
    pub audit: Arc<dyn AuditLog>,
    pub data_keys: Arc<dyn DataKeyStore>,
    /// Purges what the store keeps past its retention.
    pub purger: Arc<dyn Purger>,
}

/// Retention, enforced by the service (TTL indexes are not everywhere).
#[async_trait::async_trait]
pub trait Purger: Send + Sync {
    async fn purge(
        &self,
        now: cardbind_domain::Timestamp,
        idempotency_before: cardbind_domain::Timestamp,
        audit_before: cardbind_domain::Timestamp,
    ) -> anyhow::Result<String>;
}

impl Stores {
    /// Every port from one adapter that implements them all.
    pub fn all_in_one<S>(s: Arc<S>) -> Stores
    where
        S: BindingStore
            + IdempotencyStore
            + RateCounter
            + ConsentLog
            + SeenIds
            + AuditLog
            + DataKeyStore
            + 'static,
    {
        Stores {
            bindings: s.clone(),
            idempotency: s.clone(),
            rates: s.clone(),
            consents: s.clone(),
            seen: s.clone(),
            audit: s.clone(),
            data_keys: s.clone(),
            purger: Arc::new(StorePurger(s)),
        }
    }
}

/// Everything `build` makes.
#[derive(Clone)]
pub struct Built {
    pub state: AppState,
    pub stores: Stores,
}

pub async fn stores(config: &Config) -> anyhow::Result<Stores> {
    match config.storage.kind {
        StorageKind::Memory => Ok(Stores::all_in_one(cardbind_memory::MemoryStore::shared())),
        StorageKind::Mongodb => {
            let m = cardbind_mongo::MongoStore::connect(
                &config.storage.uri,
                &config.storage.database,
                Duration::from_millis(config.storage.timeout_ms),
            )
            .await
            .context("storage.uri: cannot set up the MongoDB client")?;
            m.ensure_indexes()
                .await
                .map_err(|e| anyhow!("storage: creating indexes failed: {e}"))?;
            Ok(Stores::all_in_one(Arc::new(m)))
        }
    }
}

/// Purges through the ports every store implements.
struct StorePurger<S>(Arc<S>);

#[async_trait::async_trait]
impl<S> Purger for StorePurger<S>
where
    S: IdempotencyStore + RateCounter + SeenIds + AuditLog + 'static,
{
    async fn purge(
        &self,
        now: cardbind_domain::Timestamp,
        idem_before: cardbind_domain::Timestamp,
        audit_before: cardbind_domain::Timestamp,
    ) -> anyhow::Result<String> {
        let s = &self.0;
        let idem = IdempotencyStore::purge_created_before(s.as_ref(), idem_before).await?;
        let rates = RateCounter::purge_expired(s.as_ref(), now).await?;
        let seen = SeenIds::purge_expired(s.as_ref(), now).await?;
        let audit = AuditLog::purge_before(s.as_ref(), audit_before).await?;
        Ok(format!("purged {idem} idempotency keys, {rates} rate counters, {seen} seen ids, {audit} audit events"))
    }
}

/// Runs the retention purge once.
pub async fn purge(built: &Built, config: &Config) -> anyhow::Result<String> {
    let now = built.state.clock.now();
    let idem_before =
        now.minus_seconds(i64::from(config.idempotency.retention_hours.max(24)) * 3600);
    let audit_before = now.minus_seconds(i64::from(config.audit.retention_days.max(180)) * 86_400);
    let report = built
        .stores
        .purger
        .purge(now, idem_before, audit_before)
        .await?;
    // Deleting audit events past retention is itself audited.
    let event = cardbind_ports::audit::AuditEvent {
        at: now,
        actor: "system".into(),
        role: "system".into(),
        action: "retention.purge".into(),
        outcome: "ok".into(),
        detail: Some(report.clone()),
        ..Default::default()
    };
    if let Err(e) = built.stores.audit.append(event).await {
        tracing::error!(error = %e, "audit append failed for the purge");
    }
    Ok(report)
}

fn data_dir(config: &Config) -> anyhow::Result<PathBuf> {
    let d = config.server.data_dir.clone();
    std::fs::create_dir_all(&d)
        .with_context(|| format!("server.data_dir: cannot create {}", d.display()))?;
    Ok(d)
}

fn vault_config(config: &Config) -> cardbind_keys::VaultConfig {
    let k = &config.keys;
    cardbind_keys::VaultConfig {
        cache: cardbind_keys::CacheConfig {
            enabled: k.cache_max_entries > 0,
            max_age: Duration::from_secs(k.cache_max_age_seconds),
            max_uses: k.cache_max_uses,
            max_entries: k.cache_max_entries,
        },
        branch: cardbind_keys::BranchConfig {
            cache_ttl: Duration::from_secs(k.branch_key_cache_ttl_seconds),
            rotate_after: (k.branch_key_rotation_days > 0)
                .then(|| Duration::from_secs(k.branch_key_rotation_days.saturating_mul(86_400))),
            ..cardbind_keys::BranchConfig::default()
        },
        ..cardbind_keys::VaultConfig::default()
    }
}

fn local_key_file(config: &Config) -> anyhow::Result<PathBuf> {
    Ok(match &config.keys.local_key_file {
        Some(f) => f.clone(),
        None => data_dir(config)?.join(cardbind_keys::LocalMasterKey::FILE_NAME),
    })
}

fn kms_config(config: &Config, key_id: &str) -> cardbind_keys::KmsConfig {
    let k = &config.keys;
    let mut c = cardbind_keys::KmsConfig::new(key_id, k.kms_region.clone());
    c.endpoint = k.kms_endpoint.clone();
    c.timeout = Duration::from_millis(k.kms_timeout_ms);
    if let (Some(id), Some(secret)) = (&k.kms_access_key_id, &k.kms_secret_access_key) {
        c.credentials = Some(cardbind_keys::StaticCredentials {
            access_key_id: id.clone(),
            secret_access_key: secret.clone(),
            session_token: None,
        });
    }
    c
}

async fn kms_key(
    config: &Config,
    key_id: &str,
    metrics: cardbind_keys::KmsMetrics,
) -> anyhow::Result<cardbind_keys::KmsMasterKey> {
    cardbind_keys::KmsMasterKey::connect(&kms_config(config, key_id), metrics)
        .await
        .map_err(|e| anyhow!("keys.kms_key_id: cannot reach or use KMS key {key_id}: {e}"))
}

fn local_vault(
    config: &Config,
    stores: &Stores,
) -> anyhow::Result<cardbind_keys::EnvelopeVault<cardbind_keys::LocalMasterKey>> {
    let master = cardbind_keys::LocalMasterKey::load_or_create_file(&local_key_file(config)?)
        .map_err(|e| anyhow!("keys.local_key_file: {e}"))?;
    let mut previous = Vec::new();
    for f in &config.keys.previous_local_key_files {
        previous.push(
            cardbind_keys::LocalMasterKey::load(f)
                .map_err(|e| anyhow!("keys.previous_local_key_files: {}: {e}", f.display()))?,
        );
    }
    Ok(
        cardbind_keys::EnvelopeVault::new(master, stores.data_keys.clone(), vault_config(config))
            .with_previous_keys(previous),
    )
}

async fn kms_vault(
    config: &Config,
    stores: &Stores,
    metrics: cardbind_keys::KmsMetrics,
) -> anyhow::Result<cardbind_keys::EnvelopeVault<cardbind_keys::KmsMasterKey>> {
    let master = kms_key(config, &config.keys.kms_key_id, metrics.clone()).await?;
    let mut previous = Vec::new();
    for id in &config.keys.previous_kms_key_ids {
        previous.push(
            kms_key(config, id, metrics.clone())
                .await
                .map_err(|e| anyhow!("keys.previous_kms_key_ids: {e}"))?,
        );
    }
    Ok(
        cardbind_keys::EnvelopeVault::new(master, stores.data_keys.clone(), vault_config(config))
            .with_previous_keys(previous),
    )
}

pub async fn vault(
    config: &Config,
    stores: &Stores,
    metrics: &prometheus::Registry,
) -> anyhow::Result<Arc<dyn CardVault>> {
    Ok(match config.keys.kind {
        KeysKind::Local => Arc::new(local_vault(config, stores)?),
        KeysKind::AwsKms => {
            let m = cardbind_keys::KmsMetrics::registered(metrics)
                .map_err(|e| anyhow!("metrics: {e}"))?;
            Arc::new(kms_vault(config, stores, m).await?)
        }
    })
}

fn read_file(field: &str, path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("{field}: cannot read {}", path.display()))
}

pub fn channels(
    config: &Config,
    metrics: &prometheus::Registry,
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
        ..cardbind_channels::ResilienceConfig::default()
    };
    let mut list: Vec<Arc<dyn PaymentChannel>> = Vec::new();
    for name in &c.enabled {
        let inner: Arc<dyn PaymentChannel> = match name.as_str() {
            "mock" => {
                let m = &c.mock;
                let mode = |s: &str| {
                    cardbind_channels::MockMode::parse(s)
                        .ok_or_else(|| anyhow!("channels.mock.mode: unknown mode {s}"))
                };
                let mut card_modes = BTreeMap::new();
                for (last4, m) in &m.card_modes {
                    card_modes.insert(last4.clone(), mode(m)?);
                }
                Arc::new(cardbind_channels::MockChannel::new(
                    cardbind_channels::MockConfig {
                        mode: mode(&m.mode)?,
                        card_modes,
                        otp_code: m.otp_code.clone(),
                        flaky_every: m.flaky_every,
                        notification_secret: m.notify_secret.clone(),
                        timeout_after: Duration::from_millis(m.timeout_after_ms),
                        ..cardbind_channels::MockConfig::default()
                    },
                ))
            }
            "alipay" => {
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
                        sign_scene: a.sign_scene.clone().unwrap_or_else(|| {
                            cardbind_channels::AlipayConfig::default().sign_scene
                        }),
                        ..cardbind_channels::AlipayConfig::default()
                    })
                    .map_err(|e| anyhow!("channels.alipay: {e}"))?,
                )
            }
            "wechat" => {
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
                        ..cardbind_channels::WechatConfig::default()
                    })
                    .map_err(|e| anyhow!("channels.wechat: {e}"))?,
                )
            }
            other => return Err(anyhow!("channels.enabled: unknown channel {other}")),
        };
        let wrapped = cardbind_channels::Resilient::new(inner, resilience.clone(), metrics)
            .map_err(|e| anyhow!("channels.resilience: {e}"))?;
        list.push(Arc::new(wrapped));
    }
    let default = ChannelName::parse(&c.default)
        .map_err(|_| anyhow!("channels.default: not a channel name"))?;
    ChannelRegistry::new(list, default).map_err(|e| anyhow!("channels.default: {e}"))
}

pub fn policy(config: &Config) -> Policy {
    let l = &config.limits;
    Policy {
        card_cap: CardCap {
            max: l.cards_per_user,
        },
        binds_per_user: RateRule {
            limit: l.binds_per_user_per_minute,
            window_seconds: 60,
        },
        binds_per_ip: (l.binds_per_ip_per_minute > 0).then_some(RateRule {
            limit: l.binds_per_ip_per_minute,
            window_seconds: 60,
        }),
        binds_per_card: (l.binds_per_card_per_hour > 0).then_some(RateRule {
            limit: l.binds_per_card_per_hour,
            window_seconds: 3600,
        }),
        verification: VerificationPolicy {
            max_otp_attempts: l.otp_attempts,
            window_seconds: l.verification_window_seconds,
        },
        ..Policy::default()
    }
}

/// The HS256 secret: configured, or generated once into the data dir.
pub fn jwt_secret(config: &Config) -> anyhow::Result<Vec<u8>> {
    if let Some(s) = &config.auth.jwt_secret {
        return Ok(s.as_bytes().to_vec());
    }
    let file = data_dir(config)?.join("jwt.secret");
    if !file.exists() {
        use rand::RngCore;
        let mut raw = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut raw);
        write_private(&file, hex::encode(raw).as_bytes())
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    // Read back what is stored: another process may have created the file
    // first, and every process (and `cardbind token`) must use that one.
    let s = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let s = s.trim();
    if s.len() < 32 {
        anyhow::bail!(
            "{} holds a secret shorter than 32 characters: delete it (a new one is made) or set auth.jwt_secret",
            file.display()
        );
    }
    Ok(s.as_bytes().to_vec())
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(mut f) => f.write_all(bytes),
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// A token signed with the HS256 secret.
pub fn dev_token(
    config: &Config,
    secret: &[u8],
    sub: &str,
    role: Role,
    ttl: u64,
) -> anyhow::Result<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let claims = serde_json::json!({
        "sub": sub,
        "role": role.as_str(),
        "iss": config.auth.issuer,
        "aud": config.auth.audience,
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
    });
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )?;
    Ok(token)
}

pub fn auth(config: &Config) -> anyhow::Result<AuthSettings> {
    let key = match &config.auth.jwt_public_key_file {
        Some(f) => JwtKey::Rs256Pem(read_file("auth.jwt_public_key_file", f)?),
        None => JwtKey::Hs256(jwt_secret(config)?),
    };
    Ok(AuthSettings {
        key,
        issuer: config.auth.issuer.clone(),
        audience: config.auth.audience.clone(),
        leeway_seconds: config.auth.leeway_seconds,
        request_signing: config
            .auth
            .signed_clients
            .iter()
            .map(|(k, v)| (k.clone(), SigningSecret(v.as_bytes().to_vec())))
            .collect(),
        signature_window_seconds: config.auth.signature_window_seconds,
    })
}

/// TLS settings when the service terminates TLS itself.
pub fn tls(config: &Config) -> anyhow::Result<Option<poem::listener::RustlsConfig>> {
    match (&config.server.tls_cert_file, &config.server.tls_key_file) {
        (Some(cert), Some(key)) => {
            let cert = std::fs::read(cert)
                .with_context(|| format!("server.tls_cert_file: cannot read {}", cert.display()))?;
            let key = std::fs::read(key)
                .with_context(|| format!("server.tls_key_file: cannot read {}", key.display()))?;
            Ok(Some(poem::listener::RustlsConfig::new().fallback(
                poem::listener::RustlsCertificate::new().cert(cert).key(key),
            )))
        }
        _ => Ok(None),
    }
}

/// The step-up verifier, when `[step_up] enabled`.
pub fn step_up(
    config: &Config,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Option<Arc<dyn cardbind_ports::step_up::StepUpVerifier>>> {
    let s = &config.step_up;
    if !s.enabled {
        return Ok(None);
    }
    let secret = s
        .hmac_secret
        .as_ref()
        .filter(|k| k.len() >= 32)
        .ok_or_else(|| anyhow!("step_up.hmac_secret: required when step_up.enabled"))?;
    Ok(Some(Arc::new(crate::step_up::HmacStepUp::new(
        secret.as_bytes().to_vec(),
        clock,
        s.max_ttl_seconds,
    ))))
}

/// Builds every adapter and the application state.
pub async fn build(config: &Config) -> anyhow::Result<Built> {
    let metrics = prometheus::Registry::new();
    let stores = stores(config).await?;
    let vault = vault(config, &stores, &metrics).await?;
    let channels = channels(config, &metrics)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let ports = Ports {
        bindings: stores.bindings.clone(),
        rates: stores.rates.clone(),
        consents: stores.consents.clone(),
        seen: stores.seen.clone(),
        audit: stores.audit.clone(),
        vault,
        channels,
        clock: clock.clone(),
        ids: Arc::new(UuidIds),
    };
    let mut service = CardService::new(ports, policy(config));
    if let Some(v) = step_up(config, clock.clone())? {
        service = service.with_step_up(v);
    }
    let http = HttpSettings {
        max_body_bytes: config.server.max_body_bytes,
        max_json_depth: config.server.max_json_depth,
        idempotency_retention_seconds: i64::from(config.idempotency.retention_hours) * 3600,
        idempotency_wait_ms: config.idempotency.wait_ms,
        trust_forwarded_for: config.server.trust_forwarded_for,
        ..HttpSettings::default()
    };
    let auth = auth(config)?;
    // A key that cannot be used must stop start-up, not fail every request.
    crate::http::Authenticator::new(&auth).map_err(|e| anyhow!("auth.jwt_public_key_file: {e}"))?;
    let state = AppState {
        service,
        idempotency: stores.idempotency.clone(),
        seen: stores.seen.clone(),
        clock,
        auth: Arc::new(auth),
        http: Arc::new(http),
        metrics,
    };
    Ok(Built { state, stores })
}

/// `cardbind keys rotate [--from OLD] --to NEW`: re-wraps every key wrapped
/// under `from` (default: the configured master key) under `to` — the
/// branch key versions (users' data keys are wrapped under those, and
/// stay as they are), and data keys stored before branch keys existed.
pub async fn rotate_keys(config: &Config, from: Option<&str>, to: &str) -> anyhow::Result<()> {
    let stores = stores(config).await?;
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let progress = |r: &cardbind_keys::RotationReport| {
        bar.set_message(format!(
            "{} scanned, {} re-wrapped, {} already current, {} failed",
            r.scanned,
            r.rewrapped,
            r.already_current,
            r.failed.len()
        ));
        bar.tick();
    };
    let report = match config.keys.kind {
        KeysKind::AwsKms => {
            let m = cardbind_keys::KmsMetrics::new().map_err(|e| anyhow!("metrics: {e}"))?;
            let from = kms_key(config, from.unwrap_or(&config.keys.kms_key_id), m.clone()).await?;
            let to = kms_key(config, to, m).await?;
            cardbind_keys::rotate(stores.data_keys.as_ref(), &from, &to, progress).await
        }
        KeysKind::Local => {
            // Both keys must exist: a mistyped path must not create a key.
            let from = match from {
                Some(f) => cardbind_keys::LocalMasterKey::load(Path::new(f))
                    .map_err(|e| anyhow!("--from: {e}"))?,
                None => cardbind_keys::LocalMasterKey::load(&local_key_file(config)?)
                    .map_err(|e| anyhow!("keys.local_key_file: {e}"))?,
            };
            let to = cardbind_keys::LocalMasterKey::load(Path::new(to))
                .map_err(|e| anyhow!("--to: {e}"))?;
            cardbind_keys::rotate(stores.data_keys.as_ref(), &from, &to, progress).await
        }
    }
    .map_err(|e| anyhow!("rotation stopped (run it again to resume): {e}"))?;
    bar.finish();
    let event = cardbind_ports::audit::AuditEvent {
        at: SystemClock.now(),
        actor: "cli:keys-rotate".into(),
        role: "admin".into(),
        action: "keys.rotate".into(),
        outcome: if report.failed.is_empty() {
            "ok".into()
        } else {
            "partial".into()
        },
        detail: Some(format!(
            "{} scanned, {} re-wrapped, {} already current, {} failed",
            report.scanned,
            report.rewrapped,
            report.already_current,
            report.failed.len()
        )),
        ..Default::default()
    };
    if let Err(e) = stores.audit.append(event).await {
        tracing::error!(error = %e, "audit append failed for the key rotation");
    }
    println!("{report:?}");
    Ok(())
}

/// `cardbind keys retire-branches [--new-version]`: moves every data key
/// to the active branch key version and deletes the older versions nothing
/// names any more (see `EnvelopeVault::retire_branches`).
pub async fn retire_branches(
    config: &Config,
    new_version: bool,
) -> anyhow::Result<cardbind_keys::RetireReport> {
    let stores = stores(config).await?;
    let bar = indicatif::ProgressBar::new_spinner();
    let progress = |r: &cardbind_keys::RetireReport| {
        bar.set_message(format!(
            "{} scanned, {} re-wrapped, {} already current, {} failed",
            r.scanned,
            r.rewrapped,
            r.already_current,
            r.failed.len()
        ));
        bar.tick();
    };
    let report = match config.keys.kind {
        KeysKind::AwsKms => {
            let m = cardbind_keys::KmsMetrics::new().map_err(|e| anyhow!("metrics: {e}"))?;
            kms_vault(config, &stores, m)
                .await?
                .retire_branches(new_version, progress)
                .await
        }
        KeysKind::Local => {
            local_vault(config, &stores)?
                .retire_branches(new_version, progress)
                .await
        }
    }
    .map_err(|e| anyhow!("branch retirement stopped (run it again to resume): {e}"))?;
    bar.finish_and_clear();
    let event = cardbind_ports::audit::AuditEvent {
        at: SystemClock.now(),
        actor: "cli:keys-retire-branches".into(),
        role: "admin".into(),
        action: "keys.retire_branches".into(),
        outcome: if report.failed.is_empty() {
            "ok".into()
        } else {
            "partial".into()
        },
        detail: Some(format!(
            "active {}, {} scanned, {} re-wrapped, {} failed, retired [{}], kept [{}]",
            report.active,
            report.scanned,
            report.rewrapped,
            report.failed.len(),
            report.retired.join(", "),
            report.kept.join(", ")
        )),
        ..Default::default()
    };
    if let Err(e) = stores.audit.append(event).await {
        tracing::error!(error = %e, "audit append failed for the branch key retirement");
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dev_jwt_secret_is_made_once_and_a_short_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config::default();
        c.server.data_dir = dir.path().to_path_buf();
        let a = jwt_secret(&c).unwrap();
        assert_eq!(a.len(), 64);
        assert_eq!(jwt_secret(&c).unwrap(), a, "read back, not made again");
        std::fs::write(dir.path().join("jwt.secret"), "short").unwrap();
        let e = jwt_secret(&c).unwrap_err().to_string();
        assert!(e.contains("shorter than 32"), "{e}");
        assert!(!e.contains("short\n") && !e.contains("\"short\""), "{e}");
    }
}
