//! The branch keyring: per-owner data keys wrapped locally under a *branch
//! key*, the branch key wrapped by the master key (KMS or local).
//!
//! This is the key hierarchy of the AWS Encryption SDK's hierarchical
//! keyring, on the [`DataKeyStore`] port:
//!
//! ```text
//! master key (KMS key, or the local key file)
//!   └─ branch key version n   record "@branch:0000000n", master_key_id = master key id,
//!        │                      wrapped by the master key (KMS encryption context
//!        │                      {"cardbind:owner": "@branch:0000000n"})
//!        └─ owner data key     record "<user id>" (or "@fingerprint", "@canary"),
//!                               master_key_id = "@branch:0000000n", wrapped locally
//! ```
//!
//! A new owner's data key is generated locally ([`DataKey::generate`]) and
//! wrapped with AES-256-GCM under a wrapping key derived from the active
//! branch key (HKDF-SHA256, a fresh random 16-byte salt per wrap, the info
//! naming the branch version and the owner), with associated data naming
//! the branch version and the owner, so a wrapped key moved to another
//! owner or relabelled with another branch version does not unwrap. No
//! master key call is made while the active branch key is cached.
//!
//! # Wrapped owner key, format 2
//!
//! ```text
//! offset  size  content
//! 0       1     0x02
//! 1       16    HKDF salt (random)
//! 17      12    AES-GCM nonce (random)
//! 29      48    AES-256-GCM ciphertext of the 32-byte data key, then the tag
//! ```
//!
//! `info` = `"cardbind/branch-wrap/v1" 0x00 ‖ u32 BE len ‖ branch owner ‖
//! u32 BE len ‖ owner`; the wrapping key is HKDF-SHA256(ikm = branch key,
//! salt, info), 32 bytes; the GCM associated data is `0x02 ‖ info`.
//!
//! # The active version
//!
//! The record `@branch.active` (its `master_key_id` is the marker
//! [`ACTIVE_BRANCH_MARKER`]; it holds no key) names the active version and
//! the instant it became active in `wrapped`, as ASCII `"{n} {unix ms}"`
//! (not in `created_at`, which names the record and which every move
//! keeps); its record
//! `version` is the compare-and-set counter. The
//! first seal of a fresh store makes version 1 (one master key call) and the
//! pointer. When the active version has been active for longer than
//! [`BranchConfig::rotate_after`], the next instance that refreshes the
//! pointer makes version n + 1 (`put_if_absent`, so concurrent rotators agree
//! on one key) and moves the pointer from n to n + 1 with `replace`
//! (conditional on its record version, so only one move wins). Older
//! versions stay readable until `retire_branches` has re-wrapped the keys
//! under them and deleted them.
//!
//! # Caching
//!
//! Unwrapped branch keys and the active pointer are held for
//! [`BranchConfig::cache_ttl`]. Each instance therefore asks the master key
//! about once per TTL per branch version it uses, and keeps sealing for new
//! owners while the key service is down until the TTL runs out. Loads are
//! single-flight: concurrent callers wait for one load instead of each
//! asking the key service, and when that load fails for want of the key
//! service the waiters fail at once instead of queueing one timeout each.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use cardbind_domain::Timestamp;
use cardbind_ports::error::{KeyError, StoreError};
use cardbind_ports::store::{DataKeyStore, WrappedKey};
use hkdf::Hkdf;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroize;

use crate::datakey::{DataKey, DATA_KEY_LEN};
use crate::master::MasterKey;

/// Owner-name prefix of branch key records: `@branch:` and eight digits.
pub const BRANCH_PREFIX: &str = "@branch:";
/// The record naming the active branch key version.
pub const ACTIVE_BRANCH_OWNER: &str = "@branch.active";
/// `master_key_id` of the active-version record (not a key).
pub const ACTIVE_BRANCH_MARKER: &str = "@active-branch";

const WRAP_V2: u8 = 0x02;
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Length of an owner key wrapped under a branch key.
pub const BRANCH_WRAPPED_LEN: usize = 1 + SALT_LEN + NONCE_LEN + DATA_KEY_LEN + TAG_LEN;
const INFO_LABEL: &[u8] = b"cardbind/branch-wrap/v1\0";
/// Branch versions held in memory at most (an instance normally uses one or
/// two).
const MAX_CACHED_VERSIONS: u64 = 64;

/// The record name of branch key version `number`.
pub fn branch_owner(number: u64) -> String {
    format!("{BRANCH_PREFIX}{number:08}")
}

/// The version number a branch record name stands for; `None` for anything
/// that is not exactly such a name.
pub fn parse_branch_owner(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(BRANCH_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    (n > 0 && branch_owner(n) == name).then_some(n)
}

/// Settings of the branch keyring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BranchConfig {
    /// How long an unwrapped branch key, and the name of the active
    /// version, are kept in memory. Zero: not kept (every new owner, and
    /// every owner key not in the data-key cache, costs a master key call).
    pub cache_ttl: Duration,
    /// A new active version is made once the active one has been active
    /// this long. `None`: only on demand (`retire_branches` with a new
    /// version).
    pub rotate_after: Option<Duration>,
    /// Allowance for clocks of instances that disagree, added to the
    /// retirement grace period.
    pub clock_skew: Duration,
    /// The longest a seal may take from its read of the active version to
    /// its key's store (a master key call to unwrap the version, then the
    /// store's write: their timeouts), added to the retirement grace
    /// period: a seal that read the old version just before the pointer
    /// moved may still be storing a key under it.
    pub max_seal_time: Duration,
}

impl Default for BranchConfig {
    fn default() -> BranchConfig {
        BranchConfig {
            cache_ttl: Duration::from_secs(600),
            rotate_after: Some(Duration::from_secs(30 * 24 * 3600)),
            clock_skew: Duration::from_secs(60),
            max_seal_time: Duration::from_secs(10),
        }
    }
}

impl BranchConfig {
    /// How long after a version became active the one before it may be
    /// deleted: every instance has re-read the pointer (one TTL), any seal
    /// that fetched the old version just before has finished (a second
    /// TTL, and [`max_seal_time`](Self::max_seal_time): with a TTL of 0,
    /// or a slow key service, a seal outlasts the TTLs), plus
    /// [`clock_skew`](Self::clock_skew).
    pub fn retire_grace(&self) -> Duration {
        self.cache_ttl
            .saturating_mul(2)
            .saturating_add(self.clock_skew)
            .saturating_add(self.max_seal_time)
    }
}

/// A plaintext branch key (zeroized on drop with its [`DataKey`]).
#[derive(Debug)]
pub(crate) struct BranchKey {
    pub number: u64,
    /// `branch_owner(number)`.
    pub owner: String,
    pub key: DataKey,
}

/// The active version as last read from the pointer record.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ActiveInfo {
    pub number: u64,
    /// When it became active (from the active-version record).
    pub activated_at: Timestamp,
}

pub(crate) fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Timestamp::from_unix_millis(ms)
}

pub(crate) fn store_err(e: StoreError) -> KeyError {
    match e {
        StoreError::Corrupt(m) => KeyError::Refused(format!("key store: corrupt record: {m}")),
        StoreError::Unavailable(m) => KeyError::StoreUnavailable(m),
        e @ (StoreError::Duplicate | StoreError::Conflict) => {
            KeyError::Unavailable(format!("key store: {e}"))
        }
    }
}

fn refused(msg: &str) -> KeyError {
    KeyError::Refused(msg.to_owned())
}

fn info(branch_owner: &str, owner: &str) -> Vec<u8> {
    let mut i = Vec::with_capacity(INFO_LABEL.len() + 8 + branch_owner.len() + owner.len());
    i.extend_from_slice(INFO_LABEL);
    for part in [branch_owner.as_bytes(), owner.as_bytes()] {
        i.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
        i.extend_from_slice(part);
    }
    i
}

fn wrapping_cipher(branch: &BranchKey, salt: &[u8], info: &[u8]) -> Result<Aes256Gcm, KeyError> {
    let mut okm = [0u8; DATA_KEY_LEN];
    Hkdf::<Sha256>::new(Some(salt), branch.key.expose())
        .expand(info, &mut okm)
        .map_err(|_| refused("wrapping key derivation failed"))?;
    let cipher = Aes256Gcm::new((&okm).into());
    okm.zeroize();
    Ok(cipher)
}

/// Wraps `owner`'s data key under `branch` (format 2, see the module docs).
pub(crate) fn wrap(branch: &BranchKey, owner: &str, key: &DataKey) -> Result<Vec<u8>, KeyError> {
    let mut salt = [0u8; SALT_LEN];
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut salt);
    OsRng.fill_bytes(&mut nonce);
    let info = info(&branch.owner, owner);
    let mut aad = Vec::with_capacity(1 + info.len());
    aad.push(WRAP_V2);
    aad.extend_from_slice(&info);
    let ct = wrapping_cipher(branch, &salt, &info)?
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: key.expose(),
                aad: &aad,
            },
        )
        .map_err(|_| refused("data key wrapping failed"))?;
    let mut out = Vec::with_capacity(BRANCH_WRAPPED_LEN);
    out.push(WRAP_V2);
    out.extend_from_slice(&salt);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Unwraps `owner`'s data key from `wrapped` under `branch`. Anything
/// changed, or a key wrapped for another owner or under another branch
/// version, is `Refused`.
pub(crate) fn unwrap(branch: &BranchKey, owner: &str, wrapped: &[u8]) -> Result<DataKey, KeyError> {
    if wrapped.len() != BRANCH_WRAPPED_LEN || wrapped.first() != Some(&WRAP_V2) {
        return Err(refused("malformed wrapped data key"));
    }
    let (salt, rest) = wrapped[1..].split_at(SALT_LEN);
    let (nonce, ct) = rest.split_at(NONCE_LEN);
    let info = info(&branch.owner, owner);
    let mut aad = Vec::with_capacity(1 + info.len());
    aad.push(WRAP_V2);
    aad.extend_from_slice(&info);
    let pt = wrapping_cipher(branch, salt, &info)?
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
        .map_err(|_| {
            KeyError::Refused(format!(
                "data key does not unwrap under branch key {} (tampered, or wrapped for another owner or branch version)",
                branch.owner
            ))
        })?;
    DataKey::from_vec(pt)
}

struct Pointer {
    number: u64,
    fetched: Instant,
}

/// The master keys, the store, and the branch keys held in memory.
pub(crate) struct Keyring<M> {
    master: M,
    previous: Vec<M>,
    store: Arc<dyn DataKeyStore>,
    config: BranchConfig,
    /// Unwrapped branch keys by version; `None` when the TTL is zero.
    keys: Option<moka::sync::Cache<u64, Arc<BranchKey>>>,
    active: Mutex<Option<Pointer>>,
    loading: tokio::sync::Mutex<()>,
    /// Loads that failed for want of the key service or store.
    failed_loads: AtomicU64,
    /// Whether the last of them failed for want of the store (what the
    /// callers that waited on it answer).
    last_failure_was_store: std::sync::atomic::AtomicBool,
}

/// The active-version record naming version `number`, active since `at`;
/// `created_at` is when the record was first made (every move keeps it:
/// `replace` only replaces the same record).
fn pointer_record(number: u64, at: Timestamp, version: u64, created_at: Timestamp) -> WrappedKey {
    WrappedKey {
        owner: ACTIVE_BRANCH_OWNER.to_owned(),
        master_key_id: ACTIVE_BRANCH_MARKER.to_owned(),
        wrapped: format!("{number} {}", at.unix_millis()).into_bytes(),
        version,
        created_at,
    }
}

fn parse_pointer(p: &WrappedKey) -> Result<ActiveInfo, KeyError> {
    let corrupt = || refused("key store: corrupt active branch record");
    if p.owner != ACTIVE_BRANCH_OWNER || p.master_key_id != ACTIVE_BRANCH_MARKER {
        return Err(corrupt());
    }
    let text = std::str::from_utf8(&p.wrapped).map_err(|_| corrupt())?;
    let (number, at) = text.split_once(' ').ok_or_else(corrupt)?;
    let number = number
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(corrupt)?;
    let at = at.parse::<i64>().map_err(|_| corrupt())?;
    Ok(ActiveInfo {
        number,
        activated_at: Timestamp::from_unix_millis(at),
    })
}

impl<M: MasterKey> Keyring<M> {
    pub fn new(master: M, store: Arc<dyn DataKeyStore>, config: BranchConfig) -> Keyring<M> {
        let keys = (!config.cache_ttl.is_zero()).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(MAX_CACHED_VERSIONS)
                .time_to_live(config.cache_ttl)
                .build()
        });
        Keyring {
            master,
            previous: Vec::new(),
            store,
            config,
            keys,
            active: Mutex::new(None),
            loading: tokio::sync::Mutex::new(()),
            failed_loads: AtomicU64::new(0),
            last_failure_was_store: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn set_previous(&mut self, previous: Vec<M>) {
        self.previous = previous;
    }

    pub fn master(&self) -> &M {
        &self.master
    }

    /// The configured master key whose id is `id`.
    pub fn master_for(&self, id: &str) -> Option<&M> {
        std::iter::once(&self.master)
            .chain(self.previous.iter())
            .find(|m| m.key_id() == id)
    }

    fn unknown_master(&self, what: &str, id: &str) -> KeyError {
        KeyError::Refused(format!(
            "{what} is wrapped by master key {id}, which is not configured (configured: {})",
            self.master.key_id()
        ))
    }

    fn pointer(&self) -> MutexGuard<'_, Option<Pointer>> {
        // Whole values only: a panic elsewhere cannot leave it half-written.
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cached(&self, number: u64) -> Option<Arc<BranchKey>> {
        self.keys.as_ref()?.get(&number)
    }

    fn remember(&self, key: &Arc<BranchKey>) {
        if let Some(keys) = &self.keys {
            keys.insert(key.number, key.clone());
        }
    }

    /// Drops version `number` from memory (it was retired).
    pub fn forget(&self, number: u64) {
        if let Some(keys) = &self.keys {
            keys.invalidate(&number);
        }
    }

    /// Whether the active version is in memory, read less than a TTL ago:
    /// keys are wrapped and unwrapped without the master key until then.
    pub fn holds_active(&self) -> bool {
        self.fresh_active().and_then(|n| self.cached(n)).is_some()
    }

    /// The active version from memory, when read less than a TTL ago.
    fn fresh_active(&self) -> Option<u64> {
        let p = self.pointer();
        p.as_ref()
            .filter(|p| p.fetched.elapsed() < self.config.cache_ttl)
            .map(|p| p.number)
    }

    /// Runs `load` alone (single flight), unless `recheck` finds its result
    /// in memory once the turn comes; when a load failed for want of the key
    /// service while this caller waited, fails at once instead.
    async fn exclusive<T, R, L, F>(&self, recheck: R, load: L) -> Result<T, KeyError>
    where
        R: Fn() -> Option<T>,
        L: FnOnce() -> F,
        F: std::future::Future<Output = Result<T, KeyError>>,
    {
        if self.keys.is_none() {
            // Nothing is shared between callers without a cache.
            return load().await;
        }
        let failures = self.failed_loads.load(Ordering::SeqCst);
        let _turn = self.loading.lock().await;
        if let Some(v) = recheck() {
            return Ok(v);
        }
        if self.failed_loads.load(Ordering::SeqCst) != failures {
            return Err(if self.last_failure_was_store.load(Ordering::SeqCst) {
                KeyError::StoreUnavailable(
                    "branch key not loaded: the key store failed a concurrent load just now".into(),
                )
            } else {
                KeyError::Unavailable(
                    "branch key not loaded: the key service failed a concurrent load just now"
                        .into(),
                )
            });
        }
        let r = load().await;
        if let Err(e @ (KeyError::Unavailable(_) | KeyError::StoreUnavailable(_))) = &r {
            let store = matches!(e, KeyError::StoreUnavailable(_));
            self.last_failure_was_store.store(store, Ordering::SeqCst);
            self.failed_loads.fetch_add(1, Ordering::SeqCst);
        }
        r
    }

    /// The active branch key, making version 1 on a fresh store and the
    /// next version when the active one is due for rotation.
    pub async fn active(&self) -> Result<Arc<BranchKey>, KeyError> {
        let recheck = || self.fresh_active().and_then(|n| self.cached(n));
        if let Some(k) = recheck() {
            return Ok(k);
        }
        self.exclusive(recheck, || async {
            self.refresh_active(false).await.map(|(k, _)| k)
        })
        .await
    }

    /// Reads the pointer from the store (never from memory), rotating when
    /// due or when `force_new`; returns the active key and its activation.
    pub async fn refresh_active(
        &self,
        force_new: bool,
    ) -> Result<(Arc<BranchKey>, ActiveInfo), KeyError> {
        // The pointer is as fresh as its read, not as the key's unwrap
        // after it (a slow master key call would stretch the TTL).
        let read_at = Instant::now();
        let pointer = match self
            .store
            .get(ACTIVE_BRANCH_OWNER)
            .await
            .map_err(store_err)?
        {
            Some(p) => p,
            None => self.first_pointer().await?,
        };
        let mut info = parse_pointer(&pointer)?;
        let number = info.number;
        let due = self.config.rotate_after.is_some_and(|age| {
            let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
            now()
                .unix_millis()
                .saturating_sub(info.activated_at.unix_millis())
                >= age_ms
        });
        if force_new || due {
            // Only a configuration that can open the active version may
            // make the next one: one whose master key is older than the
            // last rotation (a host left with a stale setting) would wrap
            // the new version under a key the up-to-date instances no
            // longer hold, and every new user's bind would fail there.
            if self.cached(number).is_none() {
                if let Err(e) = self.load(number).await {
                    return Err(match e {
                        KeyError::Refused(why) => KeyError::Refused(format!(
                            "no new branch key version was made: the active one does not open \
                             with the configured master keys ({why}); is this configuration \
                             older than the last master key rotation?"
                        )),
                        other => other,
                    });
                }
            }
            match self.rotate_from(&pointer, number).await {
                Ok(moved) => info = moved,
                Err(e) if !force_new => {
                    // The current version stays usable; the next refresh
                    // tries again.
                    tracing::warn!(error = %e, branch = %branch_owner(number), "branch key rotation failed; the current version stays active");
                }
                Err(e) => return Err(e),
            }
        }
        let key = match self.cached(info.number) {
            Some(k) => k,
            None => self.load(info.number).await?,
        };
        *self.pointer() = Some(Pointer {
            number: info.number,
            fetched: read_at,
        });
        Ok((key, info))
    }

    /// A fresh store: makes version 1 and the pointer to it.
    async fn first_pointer(&self) -> Result<WrappedKey, KeyError> {
        self.create(1).await?;
        let at = now();
        let ours = pointer_record(1, at, 1, at);
        let stored = self.store.put_if_absent(&ours).await.map_err(store_err)?;
        if stored == ours {
            tracing::info!(branch = %branch_owner(1), "activated the first branch key version");
        }
        Ok(stored)
    }

    /// Makes version `number + 1` and moves the pointer to it (or follows
    /// another instance that moved it first).
    async fn rotate_from(&self, pointer: &WrappedKey, number: u64) -> Result<ActiveInfo, KeyError> {
        let next = number
            .checked_add(1)
            .ok_or_else(|| refused("branch key versions exhausted"))?;
        self.create(next).await?;
        let at = now();
        let moved = pointer_record(next, at, pointer.version + 1, pointer.created_at);
        match self.store.replace(&moved, pointer.version).await {
            Ok(()) => {
                tracing::info!(from = %branch_owner(number), to = %branch_owner(next), "activated a new branch key version");
                Ok(ActiveInfo {
                    number: next,
                    activated_at: at,
                })
            }
            Err(StoreError::Conflict) => {
                let current = self
                    .store
                    .get(ACTIVE_BRANCH_OWNER)
                    .await
                    .map_err(store_err)?
                    .ok_or_else(|| refused("key store: the active branch record vanished"))?;
                parse_pointer(&current)
            }
            Err(e) => Err(store_err(e)),
        }
    }

    /// Makes branch key version `number` (one master key call) unless it
    /// exists; returns the stored one either way.
    async fn create(&self, number: u64) -> Result<Arc<BranchKey>, KeyError> {
        let owner = branch_owner(number);
        if let Some(existing) = self.store.get(&owner).await.map_err(store_err)? {
            // Made by a rotation that did not get to move the pointer.
            let key = self.unwrap_record(number, &existing).await?;
            self.remember(&key);
            return Ok(key);
        }
        let (plain, wrapped) = self.master.generate_data_key(&owner).await?;
        let ours = WrappedKey {
            owner: owner.clone(),
            master_key_id: self.master.key_id().to_owned(),
            wrapped,
            version: 1,
            created_at: now(),
        };
        let stored = self.store.put_if_absent(&ours).await.map_err(store_err)?;
        let key = if stored == ours {
            tracing::info!(branch = %owner, master_key = %self.master.key_id(), "made a branch key version");
            Arc::new(BranchKey {
                number,
                owner,
                key: plain,
            })
        } else {
            // Another instance made it first: use theirs, drop ours.
            drop(plain);
            self.unwrap_record(number, &stored).await?
        };
        self.remember(&key);
        Ok(key)
    }

    async fn unwrap_record(
        &self,
        number: u64,
        wk: &WrappedKey,
    ) -> Result<Arc<BranchKey>, KeyError> {
        let owner = branch_owner(number);
        if wk.owner != owner {
            return Err(refused("key store returned another branch key record"));
        }
        let m = self.master_for(&wk.master_key_id).ok_or_else(|| {
            self.unknown_master(&format!("branch key {owner}"), &wk.master_key_id)
        })?;
        let key = m.decrypt_data_key(&owner, &wk.wrapped).await?;
        Ok(Arc::new(BranchKey { number, owner, key }))
    }

    /// Branch key version `number`: from memory, else read and unwrapped
    /// by the master key (single flight).
    pub async fn get(&self, number: u64) -> Result<Arc<BranchKey>, KeyError> {
        if let Some(k) = self.cached(number) {
            return Ok(k);
        }
        self.exclusive(|| self.cached(number), || self.load(number))
            .await
    }

    /// Branch key version `number` read from the store and unwrapped by the
    /// master key now, whatever is in memory (and then kept in memory).
    pub async fn load(&self, number: u64) -> Result<Arc<BranchKey>, KeyError> {
        let owner = branch_owner(number);
        let wk = self.store.get(&owner).await.map_err(store_err)?.ok_or_else(|| {
            KeyError::Refused(format!(
                "branch key {owner} does not exist (retired while keys still named it, or the key store is incomplete)"
            ))
        })?;
        let key = self.unwrap_record(number, &wk).await?;
        self.remember(&key);
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn branch(number: u64) -> BranchKey {
        BranchKey {
            number,
            owner: branch_owner(number),
            key: DataKey::generate(),
        }
    }

    /// The key material that passes through HMAC and HKDF (the
    /// fingerprint key's schedule, a branch key as HKDF's input, the PRK
    /// HKDF keeps as an HMAC) lives in SHA-256 states: an HMAC keeps its
    /// key schedule as two of `<Sha256 as EagerHash>::Core`. With `sha2`'s
    /// `zeroize` feature they are wiped when dropped; without it this does
    /// not compile.
    #[test]
    fn hmac_and_hash_state_is_wiped_on_drop() {
        fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        wiped_on_drop::<<Sha256 as hmac::EagerHash>::Core>();
        wiped_on_drop::<Sha256>();
        wiped_on_drop::<hmac::digest::CtOutput<hmac::Hmac<Sha256>>>();
        // The derivation still gives the RFC 5869 answer (test case 1).
        let ikm = [0x0bu8; 22];
        let salt: Vec<u8> = (0x00u8..=0x0c).collect();
        let info: Vec<u8> = (0xf0u8..=0xf9).collect();
        let mut okm = [0u8; 42];
        Hkdf::<Sha256>::new(Some(&salt), &ikm)
            .expand(&info, &mut okm)
            .unwrap();
        assert_eq!(
            hex::encode(okm),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
    }

    #[test]
    fn branch_names_round_trip_and_nothing_else_parses() {
        assert_eq!(branch_owner(1), "@branch:00000001");
        assert_eq!(parse_branch_owner("@branch:00000001"), Some(1));
        assert_eq!(
            parse_branch_owner(&branch_owner(123_456_789)),
            Some(123_456_789)
        );
        for bad in [
            "@branch:",
            "@branch:1",
            "@branch:00000000",
            "@branch:0000000x",
            "@branch:+0000001",
            "@branch.active",
            "arn:aws:kms:us-east-1:1:key/x",
            "@branch:000000001",
        ] {
            assert_eq!(parse_branch_owner(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_active_record_round_trips_and_junk_is_refused() {
        let at = Timestamp::from_unix_millis(1_796_000_000_123);
        let p = pointer_record(7, at, 3, at);
        let info = parse_pointer(&p).unwrap();
        assert_eq!((info.number, info.activated_at), (7, at));
        for junk in [&b"7"[..], b"0 1", b"x 1", b"7 x", b"", b"7  1"] {
            let bad = WrappedKey {
                wrapped: junk.to_vec(),
                ..p.clone()
            };
            assert!(
                parse_pointer(&bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(junk)
            );
        }
        let not_marker = WrappedKey {
            master_key_id: "local:abc".into(),
            ..p
        };
        assert!(parse_pointer(&not_marker).is_err());
    }

    #[test]
    fn wrap_binds_owner_and_branch_version() {
        let b1 = branch(1);
        let key = DataKey::generate();
        let w = wrap(&b1, "alice", &key).unwrap();
        assert_eq!(w.len(), BRANCH_WRAPPED_LEN);
        assert_eq!(unwrap(&b1, "alice", &w).unwrap().expose(), key.expose());
        // Fresh salt and nonce every time.
        assert_ne!(wrap(&b1, "alice", &key).unwrap(), w);
        // Another owner, or the same key bytes labelled as another version.
        assert!(matches!(unwrap(&b1, "bob", &w), Err(KeyError::Refused(_))));
        let relabelled = BranchKey {
            number: 2,
            owner: branch_owner(2),
            key: b1.key.clone(),
        };
        assert!(matches!(
            unwrap(&relabelled, "alice", &w),
            Err(KeyError::Refused(_))
        ));
        assert!(matches!(
            unwrap(&branch(1), "alice", &w),
            Err(KeyError::Refused(_))
        ));
        for i in 0..w.len() {
            let mut t = w.clone();
            t[i] ^= 0x01;
            assert!(
                matches!(unwrap(&b1, "alice", &t), Err(KeyError::Refused(_))),
                "byte {i}"
            );
        }
        assert!(matches!(
            unwrap(&b1, "alice", &w[..w.len() - 1]),
            Err(KeyError::Refused(_))
        ));
    }
}
