//! The composition root: turns a [`Config`] into adapters behind
//! `Arc<dyn Port>`, the use cases over them, and the [`AppState`] the HTTP
//! edge serves. Adapter choice is made here, once.
//!
//! * [`stores`]: the storage adapter (memory, embedded SQLite, MongoDB);
//! * [`keys`]: the card vault and master key rotation;
//! * [`channels`]: the payment channels behind their resilience wrapper;
//! * [`auth`]: bearer token keys, dev tokens, TLS, step-up;
//! * [`wait`]: `serve` waiting at start for a dependency still starting.

pub mod auth;
pub mod channels;
pub mod keys;
pub mod stores;
pub mod wait;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context};
use cardbind_domain::{BindingId, CardCap, ChannelName, RateRule, VerificationPolicy};
use cardbind_ports::bins::BinDirectory;
use cardbind_ports::clock::{Clock, IdGenerator, SystemClock};
use cardbind_usecases::{Policy, Ports, UseCases};

pub use auth::{
    auth, check_dev_token, dev_token, jwt_secret, jwt_secret_made, per_host_token_secret, step_up,
    tls,
};
pub use keys::{rotate_keys, vault};
pub use stores::{existing_stores, sqlite_path, stores, Stores};

use crate::config::Config;
use crate::state::{AppState, HttpSettings};

/// UUID v7 ids (hyphenated): unique across instances and ordered by
/// creation time, so that listing by id lists by age. The real channels'
/// external references (Alipay's `external_agreement_no`, WeChat Pay's
/// `out_contract_code`: at most 32 letters and digits) take a UUID and a
/// bind's attempt in base 62 (`cardbind_channels::refs`).
#[derive(Clone, Copy, Debug, Default)]
pub struct UuidIds;

impl IdGenerator for UuidIds {
    fn binding_id(&self) -> BindingId {
        BindingId::from_uuid_bytes(*uuid::Uuid::now_v7().as_bytes())
    }

    fn opaque_id(&self) -> String {
        uuid::Uuid::now_v7().simple().to_string()
    }

    fn data_generation(&self) -> u32 {
        use rand::Rng;
        rand::thread_rng().gen_range(1..=u32::MAX)
    }
}

/// Everything [`build`] makes.
#[derive(Clone)]
pub struct Built {
    pub usecases: UseCases,
    pub state: AppState,
    pub stores: Stores,
    /// The background tasks' run counter, in `state.metrics`.
    pub tasks: crate::tasks::TaskRuns,
}

/// The data directory, created (mode 0700: it holds the store, the master
/// key and the token secret) when missing.
pub(crate) fn data_dir(config: &Config) -> anyhow::Result<PathBuf> {
    let d = config.server.data_dir.clone();
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(&d)
        .with_context(|| format!("server.data_dir: cannot create {}", d.display()))?;
    Ok(d)
}

pub(crate) fn read_file(field: &str, path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("{field}: cannot read {}", path.display()))
}

/// The limits and rules of the use cases.
pub fn policy(config: &Config) -> anyhow::Result<Policy> {
    let l = &config.limits;
    let mut card_rules = BTreeMap::new();
    for (kind, rule) in config.channels.card_rules()? {
        let name = ChannelName::parse(kind.as_str())
            .map_err(|_| anyhow!("channels: {} is not a channel name", kind.as_str()))?;
        card_rules.insert(name, rule);
    }
    Ok(Policy {
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
        card_rules,
        ..Policy::default()
    })
}

/// The BIN table in use: the store's imported table, else the built-in
/// one. Loaded now: a store that cannot be read stops start-up rather than
/// letting the service run on the wrong table.
pub async fn bins(stores: &Stores) -> anyhow::Result<crate::bins::Bins> {
    let builtin = crate::bins::builtin().map_err(|e| anyhow!("the built-in BIN table: {e}"))?;
    let directory = Arc::new(BinDirectory::new(builtin));
    directory
        .refresh(stores.bins.as_ref())
        .await
        .map_err(|e| anyhow!("loading the BIN table failed: {e}"))?;
    Ok(crate::bins::Bins {
        directory,
        store: stores.bins.clone(),
    })
}

/// The bearer token settings, refused when their key cannot be used: that
/// must stop start-up (and `check-config`), not fail every request.
fn usable_auth(config: &Config) -> anyhow::Result<crate::state::AuthSettings> {
    let auth = auth(config)?;
    crate::http::Authenticator::new(&auth).map_err(|e| anyhow!("auth.jwt_public_key_file: {e}"))?;
    Ok(auth)
}

/// What `serve` reads and checks before it opens a store or calls anyone,
/// for `cardbind check-config`: the policy, the bearer token key (an RS256
/// public key file; a dev secret that does not exist yet is not made), the
/// TLS certificate and key, step-up, and every enabled channel's key files
/// (each channel is built, which parses its keys; nothing is sent). The
/// store and the key service are not touched.
pub fn check_offline(config: &Config) -> anyhow::Result<()> {
    policy(config)?;
    if config.auth.jwt_public_key_file.is_some() || config.auth.jwt_secret.is_some() {
        usable_auth(config)?;
    }
    tls(config)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    step_up(config, clock.clone())?;
    channels::channels(
        config,
        &prometheus::Registry::new(),
        cardbind_memory::MemoryStore::shared(),
        clock,
    )?;
    Ok(())
}

/// Builds every adapter, the use cases and the application state.
pub async fn build(config: &Config) -> anyhow::Result<Built> {
    let stores = stores(config).await?;
    build_on(config, stores).await
}

/// [`build`] for an admin command: on a store that exists already (see
/// [`existing_stores`]).
pub async fn build_existing(config: &Config) -> anyhow::Result<Built> {
    let stores = existing_stores(config).await?;
    let built = build_on(config, stores).await?;
    // As `serve` does before it answers anything, without waiting: a
    // command that uses keys (`erase-user`, `reconcile`) does not run under
    // a master key that does not open the store's canary (a mistyped or
    // mis-pointed `keys.local_key_file`, another KMS key).
    built
        .usecases
        .key_self_check()
        .await
        .map_err(|e| anyhow::anyhow!("key self-check failed, nothing was changed: {e}"))?;
    Ok(built)
}

/// [`build_existing`] for an admin command that touches no card data in
/// clear and no key (`purge`, `audit verify`, `sweep-card-data`): the key
/// service is not contacted ([`keys::NoKeys`]), so such a command works
/// while KMS is down.
pub async fn build_existing_without_keys(config: &Config) -> anyhow::Result<Built> {
    let stores = existing_stores(config).await?;
    build_with(config, stores, Some(Arc::new(keys::NoKeys))).await
}

/// The use cases on the store opened for reading only
/// ([`stores::existing_stores_for_reading`]): for `audit verify`, which
/// writes nothing and reads no secret. So no keys, no HTTP side (whose
/// token secret a first start would make), no channel of the
/// configuration's (their key files) and no step-up (its secret): the
/// check reads the store alone.
pub async fn usecases_for_reading(config: &Config) -> anyhow::Result<UseCases> {
    let stores = stores::existing_stores_for_reading(config).await?;
    let mut reading = config.clone();
    reading.channels = crate::config::ChannelsConfig {
        resilience: config.channels.resilience.clone(),
        reconcile_after_seconds: config.channels.reconcile_after_seconds,
        ..crate::config::ChannelsConfig::default()
    };
    reading.step_up.enabled = false;
    let metrics = prometheus::Registry::new();
    let (usecases, _, _) =
        usecases_on(&reading, &stores, Some(Arc::new(keys::NoKeys)), &metrics).await?;
    Ok(usecases)
}

/// Builds the use cases and the application state on `stores` already
/// opened (e.g. a second service over the same storage, with another
/// channel configuration).
pub async fn build_on(config: &Config, stores: Stores) -> anyhow::Result<Built> {
    build_with(config, stores, None).await
}

/// [`build_on`] with `vault` in place of the one the configuration names,
/// when given.
async fn build_with(
    config: &Config,
    stores: Stores,
    vault: Option<Arc<dyn cardbind_ports::keys::CardVault>>,
) -> anyhow::Result<Built> {
    let metrics = prometheus::Registry::new();
    let tasks =
        crate::tasks::TaskRuns::registered(&metrics).map_err(|e| anyhow!("metrics: {e}"))?;
    if let Some(store) = &stores.sqlite {
        store
            .register_metrics(&metrics)
            .map_err(|e| anyhow!("metrics: {e}"))?;
    }
    let (usecases, bins, clock) = usecases_on(config, &stores, vault, &metrics).await?;
    let http = HttpSettings {
        max_body_bytes: config.server.max_body_bytes,
        max_json_depth: config.server.max_json_depth,
        idempotency_retention_seconds: i64::from(config.idempotency.retention_hours) * 3600,
        idempotency_wait_ms: config.idempotency.wait_ms,
        idempotency_lease_seconds: i64::from(config.idempotency.lease_seconds),
        trust_forwarded_for: config.server.trust_forwarded_for,
        body_read_timeout: std::time::Duration::from_millis(config.server.body_read_timeout_ms),
    };
    let auth = usable_auth(config)?;
    let state = AppState {
        usecases: usecases.clone(),
        idempotency: stores.idempotency.clone(),
        seen: stores.seen.clone(),
        clock,
        auth: Arc::new(auth),
        http: Arc::new(http),
        metrics,
        bins: Arc::new(bins),
    };
    Ok(Built {
        usecases,
        state,
        stores,
        tasks,
    })
}

/// The use cases on `stores` (with `vault` in place of the one the
/// configuration names, when given), the BIN table they read and their
/// clock.
async fn usecases_on(
    config: &Config,
    stores: &Stores,
    vault: Option<Arc<dyn cardbind_ports::keys::CardVault>>,
    metrics: &prometheus::Registry,
) -> anyhow::Result<(UseCases, crate::bins::Bins, Arc<dyn Clock>)> {
    let bins = bins(stores).await?;
    let vault = match vault {
        Some(vault) => vault,
        None => keys::vault(config, stores.data_keys.clone(), metrics).await?,
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let channels = channels::channels(config, metrics, stores.audit.clone(), clock.clone())?;
    let ports = Ports {
        wallets: stores.wallets.clone(),
        audit: stores.audit.clone(),
        card_data: stores.card_data.clone(),
        channel_refs: stores.channel_refs.clone(),
        rates: stores.rates.clone(),
        seen: stores.seen.clone(),
        idempotency: stores.idempotency.clone(),
        review: stores.review.clone(),
        vault,
        channels,
        bins: bins.directory.clone(),
        clock: clock.clone(),
        ids: Arc::new(UuidIds),
        step_up: step_up(config, clock.clone())?,
    };
    Ok((UseCases::new(ports, policy(config)?), bins, clock))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[cfg(unix)]
    #[test]
    fn a_new_data_directory_is_private_and_an_existing_one_is_kept() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let mut config = crate::config::Config::default();
        config.server.data_dir = tmp.path().join("a").join("data");
        let d = super::data_dir(&config).unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&d), 0o700);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o750)).unwrap();
        super::data_dir(&config).unwrap();
        assert_eq!(mode(&d), 0o750);
    }
}
