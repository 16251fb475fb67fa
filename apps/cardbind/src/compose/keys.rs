//! The card vault: local or AWS KMS master keys, the keyring under them,
//! and the master key rotation.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use cardbind_domain::{CardNumber, Fingerprint, SealedBlob, UserId};
use cardbind_keys::MasterKey;
use cardbind_ports::audit::{AuditAction, AuditActor, AuditEvent, Outcome};
use cardbind_ports::clock::{Clock, SystemClock};
use cardbind_ports::keys::{CardVault, SealContext};
use cardbind_ports::store::DataKeyStore;
use cardbind_ports::KeyError;

use super::{data_dir, Stores};
use crate::config::{Config, KeysKind};

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
            // A seal's master key call and its store write, each bounded
            // by its timeout.
            max_seal_time: Duration::from_millis(
                k.kms_timeout_ms.saturating_add(config.storage.timeout_ms),
            ),
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

/// The KMS key `key_id`, named by the setting or argument `named_by` in
/// an error (the one an operator has to look at).
async fn kms_key(
    config: &Config,
    named_by: &str,
    key_id: &str,
    metrics: cardbind_keys::KmsMetrics,
) -> anyhow::Result<cardbind_keys::KmsMasterKey> {
    let kms = kms_config(config, key_id);
    Box::pin(super::wait::until_it_answers(
        "KMS",
        config.server.start_deadline,
        KeyError::is_transient,
        || cardbind_keys::KmsMasterKey::connect(&kms, metrics.clone()),
    ))
    .await
    .map_err(|e| match e {
            KeyError::Refused(why) => {
                anyhow!("{named_by}: KMS refuses the key {key_id} (missing, disabled or not ours to use): {why}")
            }
            other => anyhow!("{named_by}: cannot reach KMS for the key {key_id}: {other}"),
        })
}

/// The local master key and the vault over it. The key file is made only
/// for a store that holds no wrapped key yet: a store that does was set up
/// under a key file of its own, and a new key (a mistyped path) could open
/// none of it.
async fn local_vault(
    config: &Config,
    data_keys: Arc<dyn DataKeyStore>,
) -> anyhow::Result<cardbind_keys::EnvelopeVault<cardbind_keys::LocalMasterKey>> {
    let file = local_key_file(config)?;
    if !file.exists() {
        let held = data_keys
            .list(None, 1)
            .await
            .map_err(|e| anyhow!("storage: cannot read the wrapped keys: {e}"))?;
        if !held.is_empty() {
            anyhow::bail!(
                "keys.local_key_file: there is no key at {}, and the store holds keys wrapped \
                 under a master key: point keys.local_key_file at that key's file (nothing was \
                 created)",
                file.display()
            );
        }
    }
    let master = cardbind_keys::LocalMasterKey::load_or_create_file(&file)
        .map_err(|e| anyhow!("keys.local_key_file: {e}"))?;
    let mut previous = Vec::new();
    for f in &config.keys.previous_local_key_files {
        previous.push(
            cardbind_keys::LocalMasterKey::load(f)
                .map_err(|e| anyhow!("keys.previous_local_key_files: {}: {e}", f.display()))?,
        );
    }
    Ok(
        cardbind_keys::EnvelopeVault::new(master, data_keys, vault_config(config))
            .with_previous_keys(previous),
    )
}

async fn kms_vault(
    config: &Config,
    data_keys: Arc<dyn DataKeyStore>,
    metrics: cardbind_keys::KmsMetrics,
) -> anyhow::Result<cardbind_keys::EnvelopeVault<cardbind_keys::KmsMasterKey>> {
    let master = kms_key(
        config,
        "keys.kms_key_id",
        &config.keys.kms_key_id,
        metrics.clone(),
    )
    .await?;
    let mut previous = Vec::new();
    for id in &config.keys.previous_kms_key_ids {
        previous.push(kms_key(config, "keys.previous_kms_key_ids", id, metrics.clone()).await?);
    }
    Ok(
        cardbind_keys::EnvelopeVault::new(master, data_keys, vault_config(config))
            .with_previous_keys(previous),
    )
}

/// The card vault the configuration names.
pub async fn vault(
    config: &Config,
    data_keys: Arc<dyn DataKeyStore>,
    metrics: &prometheus::Registry,
) -> anyhow::Result<Arc<dyn CardVault>> {
    Ok(match config.keys.kind {
        KeysKind::Local => Arc::new(local_vault(config, data_keys).await?),
        KeysKind::AwsKms => {
            let m = cardbind_keys::KmsMetrics::registered(metrics)
                .map_err(|e| anyhow!("metrics: {e}"))?;
            Arc::new(kms_vault(config, data_keys, m).await?)
        }
    })
}

/// The vault of an admin command that touches no card data in clear and no
/// key (`purge`, `audit verify`, `sweep-card-data`): the key service is
/// never contacted, so the command runs while KMS is down or out of the
/// operator's reach. A use of a key through it, which such a command never
/// makes, fails as the key service's unavailability, saying why.
pub struct NoKeys;

/// What every use of a key through [`NoKeys`] answers.
fn no_keys<T>() -> Result<T, KeyError> {
    Err(KeyError::Unavailable(
        "this admin command runs without the key service".into(),
    ))
}

#[async_trait::async_trait]
impl CardVault for NoKeys {
    async fn seal(
        &self,
        _owner: &UserId,
        _context: &SealContext,
        _plaintext: &[u8],
    ) -> Result<SealedBlob, KeyError> {
        no_keys()
    }

    async fn seal_with_stored_key(
        &self,
        _owner: &UserId,
        _context: &SealContext,
        _plaintext: &[u8],
    ) -> Result<SealedBlob, KeyError> {
        no_keys()
    }

    async fn open(
        &self,
        _owner: &UserId,
        _context: &SealContext,
        _sealed: &SealedBlob,
    ) -> Result<Vec<u8>, KeyError> {
        no_keys()
    }

    async fn fingerprint(&self, _pan: &CardNumber) -> Result<Fingerprint, KeyError> {
        no_keys()
    }

    async fn keyed_digest<'p>(
        &self,
        _purpose: &str,
        _parts: &[&'p [u8]],
    ) -> Result<[u8; 32], KeyError> {
        no_keys()
    }

    async fn erase_owner(&self, _owner: &UserId) -> Result<bool, KeyError> {
        no_keys()
    }

    async fn self_check(&self) -> Result<(), KeyError> {
        no_keys()
    }
}

/// `cardbind keys rotate [--from OLD] --to NEW`: re-wraps every data key
/// wrapped under `from` (default: the one previous master key configured)
/// under `to`, which must be the configured master key. Returns what the
/// run did; the caller reports keys that were not re-wrapped.
pub async fn rotate_keys(
    config: &Config,
    stores: &Stores,
    from: Option<&str>,
    to: &str,
) -> anyhow::Result<cardbind_keys::RotationReport> {
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
            let master = kms_key(
                config,
                "keys.kms_key_id",
                &config.keys.kms_key_id,
                m.clone(),
            )
            .await?;
            let to_key = kms_key(config, "--to", to, m.clone()).await?;
            // The same key may be named by id, ARN or alias: compare ARNs.
            if to_key.key_id() != master.key_id() {
                return Err(not_the_master_key(
                    to,
                    "keys.kms_key_id",
                    &config.keys.kms_key_id,
                ));
            }
            let from = match (from, config.keys.previous_kms_key_ids.as_slice()) {
                (Some(f), _) => kms_key(config, "--from", f, m).await?,
                (None, [previous]) => {
                    kms_key(config, "keys.previous_kms_key_ids", previous, m).await?
                }
                (None, _) => return Err(name_the_old_key("keys.previous_kms_key_ids")),
            };
            cardbind_keys::rotate(stores.data_keys.as_ref(), &from, &to_key, progress).await
        }
        KeysKind::Local => {
            // Both keys must exist: a mistyped path must not create a key.
            let master_file = local_key_file(config)?;
            let master = cardbind_keys::LocalMasterKey::load(&master_file)
                .map_err(|e| anyhow!("keys.local_key_file: {}", unreadable_key(&e)))?;
            let to_key = cardbind_keys::LocalMasterKey::load(Path::new(to))
                .map_err(|e| anyhow!("--to: {}", unreadable_key(&e)))?;
            // Another path to the same key is the same key.
            if to_key.key_id() != master.key_id() {
                return Err(not_the_master_key(
                    to,
                    "keys.local_key_file",
                    &master_file.display().to_string(),
                ));
            }
            let from = match (from, config.keys.previous_local_key_files.as_slice()) {
                (Some(f), _) => cardbind_keys::LocalMasterKey::load(Path::new(f))
                    .map_err(|e| anyhow!("--from: {}", unreadable_key(&e)))?,
                (None, [previous]) => {
                    cardbind_keys::LocalMasterKey::load(previous).map_err(|e| {
                        anyhow!("keys.previous_local_key_files: {}", unreadable_key(&e))
                    })?
                }
                (None, _) => return Err(name_the_old_key("keys.previous_local_key_files")),
            };
            cardbind_keys::rotate(stores.data_keys.as_ref(), &from, &to_key, progress).await
        }
    }
    .map_err(|e| anyhow!("rotation stopped (run it again to resume): {e}"))?;
    bar.finish();
    let now = SystemClock.now();
    let event = AuditEvent {
        at: now,
        actor: AuditActor::service("cli:keys-rotate"),
        action: AuditAction::KeysRotate,
        user_id: None,
        binding_id: None,
        // Records left under a third key fail the command as failures
        // do (the key meant to be retired may still be needed): the
        // record must not read as a rotation that went through.
        outcome: if !report.failed.is_empty() {
            Outcome::Refused(cardbind_domain::ErrorCode::KeyServiceUnavailable)
        } else if report.other_master_key > 0 {
            Outcome::Refused(cardbind_domain::ErrorCode::Conflict)
        } else {
            Outcome::Ok
        },
        request_id: None,
        client_ip: None,
        detail: Some(format!(
            "{} scanned, {} re-wrapped, {} already current, {} failed, {} under another master key",
            report.scanned,
            report.rewrapped,
            report.already_current,
            report.failed.len(),
            report.other_master_key
        )),
    };
    if let Err(e) = stores.audit.append_system(vec![event], now).await {
        tracing::error!(error = %e, "audit append failed for the key rotation");
    }
    Ok(report)
}

/// A rotation to a key the service is not configured with would leave
/// the branch keys wrapped under a key no instance can unwrap: new users'
/// binds fail once the branch key cache expires, and restarts are refused.
fn not_the_master_key(to: &str, field: &str, configured: &str) -> anyhow::Error {
    anyhow!(
        "--to {to} is not the configured master key ({field} = {configured}); nothing was \
         changed. Configure it as the master key (and the old key as a previous key), \
         restart the service, then rotate"
    )
}

/// Without `--from`, the old key is the one previous key configured.
fn name_the_old_key(field: &str) -> anyhow::Error {
    anyhow!("--from: name the key to move away from ({field} does not hold exactly one key)")
}

/// `cardbind keys retire-branches [--new-version]`: moves every data key
/// to the active branch key version and deletes the older versions nothing
/// names any more (see `EnvelopeVault::retire_branches`).
pub async fn retire_branches(
    config: &Config,
    stores: &Stores,
    new_version: bool,
) -> anyhow::Result<cardbind_keys::RetireReport> {
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
            kms_vault(config, stores.data_keys.clone(), m)
                .await?
                .retire_branches(new_version, progress)
                .await
        }
        KeysKind::Local => {
            local_vault(config, stores.data_keys.clone())
                .await?
                .retire_branches(new_version, progress)
                .await
        }
    }
    .map_err(|e| anyhow!("branch retirement stopped (run it again to resume): {e}"))?;
    bar.finish_and_clear();
    let now = SystemClock.now();
    let event = AuditEvent {
        at: now,
        actor: AuditActor::service("cli:keys-retire-branches"),
        action: AuditAction::KeysRetireBranches,
        user_id: None,
        binding_id: None,
        outcome: if report.failed.is_empty() {
            Outcome::Ok
        } else {
            Outcome::Refused(cardbind_domain::ErrorCode::KeyServiceUnavailable)
        },
        request_id: None,
        client_ip: None,
        detail: Some(format!(
            "active {}, {} scanned, {} re-wrapped, {} failed, retired [{}], kept [{}]",
            report.active,
            report.scanned,
            report.rewrapped,
            report.failed.len(),
            report.retired.join(", "),
            report.kept.join(", ")
        )),
    };
    if let Err(e) = stores.audit.append_system(vec![event], now).await {
        tracing::error!(error = %e, "audit append failed for the branch key retirement");
    }
    Ok(report)
}

/// Why a local master key file did not load, without the "key service
/// unavailable" the key port's error begins with: a file that cannot be
/// read is a wrong path or permission, not an outage.
fn unreadable_key(e: &cardbind_ports::KeyError) -> String {
    match e {
        cardbind_ports::KeyError::Unavailable(why) => why.clone(),
        other => other.to_string(),
    }
}
