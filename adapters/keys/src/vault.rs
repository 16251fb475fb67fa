//! [`EnvelopeVault`]: the `CardVault` port over a [`MasterKey`], a branch
//! keyring and a [`DataKeyStore`].

use std::sync::Arc;

use async_trait::async_trait;
use cardbind_domain::{CardNumber, Fingerprint, SealedBlob, UserId};
use cardbind_ports::error::KeyError;
use cardbind_ports::keys::{CardVault, SealContext};
use cardbind_ports::store::{DataKeyStore, WrappedKey};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::branch::{self, now, parse_branch_owner, store_err, BranchConfig, Keyring};
use crate::cache::{CacheConfig, KeyCache, OwnerKey};
use crate::datakey::DataKey;
use crate::format;
use crate::master::MasterKey;

/// Owner of the start-up canary's data key.
pub const CANARY_OWNER: &str = "@canary";
/// The record in the [`DataKeyStore`] that holds the sealed canary (not a
/// key: its `master_key_id` is [`SEALED_CANARY_MARKER`], and rotation
/// leaves it alone).
pub const SEALED_CANARY_OWNER: &str = "@canary.sealed";
/// `master_key_id` of the sealed-canary record.
pub const SEALED_CANARY_MARKER: &str = "@sealed-canary";
/// Owner of the fingerprint key of version 1; version `n > 1` is
/// `@fingerprint.v{n}` (see [`fingerprint_owner`]).
pub const FINGERPRINT_OWNER: &str = "@fingerprint";

/// Owner of the key of [`CardVault::keyed_digest`].
pub const DIGEST_OWNER: &str = "@digest";

const CANARY_FIELD: &str = "canary";
const CANARY_TEXT: &[u8] = b"cardbind canary v1";

/// The key owner of fingerprint key `version`.
pub fn fingerprint_owner(version: u32) -> String {
    if version == 1 {
        FINGERPRINT_OWNER.to_owned()
    } else {
        format!("{FINGERPRINT_OWNER}.v{version}")
    }
}

/// Settings of an [`EnvelopeVault`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultConfig {
    /// The per-owner data-key cache.
    pub cache: CacheConfig,
    /// Branch key caching and rotation.
    pub branch: BranchConfig,
    /// The fingerprint key version new fingerprints are made with.
    pub fingerprint_version: u32,
}

impl Default for VaultConfig {
    fn default() -> VaultConfig {
        VaultConfig {
            cache: CacheConfig::default(),
            branch: BranchConfig::default(),
            fingerprint_version: 1,
        }
    }
}

/// Envelope encryption of card data.
///
/// Each owner (user) has one AES-256 data key, made locally on first use
/// and stored with `put_if_absent` (so concurrent first seals agree on one
/// key), wrapped under the active *branch key* (see [`crate::branch`]).
/// Branch keys are made by the master key `M` (KMS `GenerateDataKey`, or
/// the local key) and stored wrapped by it; only they cost master key
/// calls, about one per branch version per [`BranchConfig::cache_ttl`] per
/// instance. Each field is sealed locally with AES-256-GCM in the
/// [format](crate::format) bound to (owner, record, field).
///
/// Keys stored before branch keys existed (wrapped directly by a master
/// key) still open, and `retire_branches` moves them under the active
/// branch key.
///
/// Besides its master key the vault can hold *previous* master keys, used
/// only to unwrap branch keys (see
/// [`with_previous_keys`](Self::with_previous_keys)): during a rotation,
/// run the service with the new key as master and the old one as previous,
/// then [`rotate`](crate::rotate), then drop the old key. A wrapped key
/// whose stored `master_key_id` names none of these keys is refused; the
/// stored id only ever *selects* among configured keys.
///
/// Owner ids starting with `@` are reserved for the vault's own records
/// (`@fingerprint`, `@canary`, `@branch:…`) and refused as user ids.
///
/// # Fingerprints
///
/// `fingerprint` is HMAC-SHA256 over the PAN digits, keyed with a 32-byte
/// secret that is itself a data key stored wrapped under owner
/// [`fingerprint_owner`]`(version)`. The result is `v{version}:{hex}`.
///
/// Re-fingerprint path (to rotate the fingerprint secret): configure
/// `fingerprint_version = n + 1` (the new key is made on first use); while
/// records still carry `v{n}` fingerprints, look a card up by
/// [`fingerprint_with_version`](Self::fingerprint_with_version) for `n + 1`
/// and then for `n`; a background job opens each binding's sealed PAN,
/// computes the `v{n+1}` fingerprint and updates the record (conditional on
/// its version); when no `v{n}` fingerprint remains, delete the
/// `@fingerprint` (v1) or `@fingerprint.v{n}` key record.
///
/// # Keyed digests
///
/// `keyed_digest` is HMAC-SHA256 over the purpose and the parts, each
/// prefixed with its length as a big-endian u64, keyed with a 32-byte
/// secret stored like the fingerprint key, under owner [`DIGEST_OWNER`]
/// (made on first use). The service keeps such a digest where an unkeyed
/// hash of what a client sent could be undone by trying every card number
/// (an idempotency key, the hash of a bind's body). Deleting the record
/// makes a new key, and the digests stored before it stop matching:
/// idempotency records of the last day would not be found again, so it is
/// not rotated the way the fingerprint key is.
pub struct EnvelopeVault<M: MasterKey> {
    pub(crate) keyring: Keyring<M>,
    pub(crate) store: Arc<dyn DataKeyStore>,
    pub(crate) cache: KeyCache,
    config: VaultConfig,
}

fn user_owner(owner: &UserId) -> Result<&str, KeyError> {
    let s = owner.as_str();
    if s.starts_with('@') {
        return Err(KeyError::Refused(
            "owner ids starting with '@' are reserved for the vault".into(),
        ));
    }
    Ok(s)
}

impl<M: MasterKey> EnvelopeVault<M> {
    pub fn new(master: M, store: Arc<dyn DataKeyStore>, config: VaultConfig) -> EnvelopeVault<M> {
        EnvelopeVault {
            keyring: Keyring::new(master, store.clone(), config.branch.clone()),
            cache: KeyCache::new(&config.cache),
            store,
            config,
        }
    }

    /// Master keys that may still unwrap stored keys (never used to wrap).
    pub fn with_previous_keys(mut self, previous: Vec<M>) -> EnvelopeVault<M> {
        self.keyring.set_previous(previous);
        self
    }

    /// The master key new branch keys are wrapped with.
    pub fn master(&self) -> &M {
        self.keyring.master()
    }

    pub fn config(&self) -> &VaultConfig {
        &self.config
    }

    /// How many owners' keys are cached now.
    pub fn cached_keys(&self) -> usize {
        self.cache.len()
    }

    /// The record name of the active branch key version (`@branch:…`),
    /// making it when the store has none.
    pub async fn active_branch(&self) -> Result<String, KeyError> {
        Ok(self.keyring.active().await?.owner.clone())
    }

    /// Makes a new branch key version and makes it active now (one master
    /// key call); returns its record name. Keys under older versions stay
    /// readable until [`retire_branches`](Self::retire_branches) moves them.
    pub async fn new_branch_version(&self) -> Result<String, KeyError> {
        Ok(self.keyring.refresh_active(true).await?.0.owner.clone())
    }

    /// Unwraps a stored key record of `owner`: under its branch key, or,
    /// for a key stored before branch keys, by the master key it names.
    /// `fresh`: read the branch key from the store and unwrap it by the
    /// master key now, whatever is cached.
    pub(crate) async fn unwrap_stored(
        &self,
        owner: &str,
        wk: &WrappedKey,
        fresh: bool,
    ) -> Result<DataKey, KeyError> {
        if wk.owner != owner {
            return Err(KeyError::Refused(
                "key store returned another owner's key".into(),
            ));
        }
        if let Some(n) = parse_branch_owner(&wk.master_key_id) {
            let b = if fresh {
                self.keyring.load(n).await?
            } else {
                self.keyring.get(n).await?
            };
            return branch::unwrap(&b, owner, &wk.wrapped);
        }
        if wk.master_key_id.starts_with('@') {
            return Err(KeyError::Refused(format!(
                "record {owner} is not a wrapped key"
            )));
        }
        let m = self.keyring.master_for(&wk.master_key_id).ok_or_else(|| {
            KeyError::Refused(format!(
                "data key is wrapped by master key {}, which is not configured (configured: {})",
                wk.master_key_id,
                self.keyring.master().key_id()
            ))
        })?;
        m.decrypt_data_key(owner, &wk.wrapped).await
    }

    /// The data key of `owner`: from the cache, else unwrapped from the
    /// store, else (when `create`) made, wrapped under the active branch
    /// key and stored. `None` when absent and not `create`. With `Lookup::
    /// MakeFirst` neither the cache nor the store is read first: the new
    /// key's insert finds an existing one (and that one is used, and
    /// cached in place of what the cache held: a key another instance
    /// erased since). With `Lookup::Stored` the store is read first, and
    /// the cached key used only when it is the stored one.
    async fn owner_key(
        &self,
        owner: &str,
        create: bool,
        lookup: Lookup,
    ) -> Result<Option<Arc<OwnerKey>>, KeyError> {
        let cached = match lookup {
            Lookup::ReadFirst => {
                if let Some(k) = self.cache.get(owner) {
                    return Ok(Some(k));
                }
                None
            }
            Lookup::Stored => self.cache.get(owner),
            Lookup::MakeFirst => None,
        };
        let epoch = self.cache.epoch(owner);
        let found = match lookup {
            Lookup::ReadFirst | Lookup::Stored => self.store.get(owner).await.map_err(store_err)?,
            Lookup::MakeFirst => None,
        };
        let key = match found {
            Some(wk) => {
                let generation = wk.created_at.unix_millis();
                match cached.filter(|k| k.generation == generation && k.wrapped == wk.wrapped) {
                    // The remembered key is the stored one.
                    Some(k) => return Ok(Some(k)),
                    None => Arc::new(OwnerKey {
                        key: self.unwrap_stored(owner, &wk, false).await?,
                        generation,
                        wrapped: wk.wrapped.clone(),
                    }),
                }
            }
            None if !create => return Ok(None),
            None => {
                let branch = self.keyring.active().await?;
                let plain = DataKey::generate();
                let ours = WrappedKey {
                    owner: owner.to_owned(),
                    master_key_id: branch.owner.clone(),
                    wrapped: branch::wrap(&branch, owner, &plain)?,
                    version: 1,
                    created_at: now(),
                };
                let stored = self.store.put_if_absent(&ours).await.map_err(store_err)?;
                if stored == ours {
                    Arc::new(OwnerKey {
                        key: plain,
                        generation: ours.created_at.unix_millis(),
                        wrapped: ours.wrapped,
                    })
                } else {
                    // Another seal won the race: use its key, drop ours.
                    drop(plain);
                    Arc::new(OwnerKey {
                        key: self.unwrap_stored(owner, &stored, false).await?,
                        generation: stored.created_at.unix_millis(),
                        wrapped: stored.wrapped,
                    })
                }
            }
        };
        self.cache.insert(owner, key.clone(), epoch);
        Ok(Some(key))
    }

    async fn seal_as(
        &self,
        owner: &str,
        context: &SealContext,
        plaintext: &[u8],
        lookup: Lookup,
    ) -> Result<Vec<u8>, KeyError> {
        let key = self
            .owner_key(owner, true, lookup)
            .await?
            .ok_or_else(|| KeyError::Unavailable("data key was not created".into()))?;
        format::seal(&key.key, owner, key.generation, context, plaintext)
    }

    /// Seals for a user (the port's `seal` and `seal_for_new_owner`).
    async fn seal_user(
        &self,
        owner: &UserId,
        context: &SealContext,
        plaintext: &[u8],
        lookup: Lookup,
    ) -> Result<SealedBlob, KeyError> {
        let owner = user_owner(owner)?;
        Ok(SealedBlob::new(
            self.seal_as(owner, context, plaintext, lookup).await?,
        ))
    }

    fn open_with(
        key: &OwnerKey,
        owner: &str,
        context: &SealContext,
        sealed: &[u8],
    ) -> Result<Vec<u8>, KeyError> {
        let parsed = format::parse(sealed)?;
        if parsed.owner != owner {
            return Err(KeyError::Refused("sealed for another owner".into()));
        }
        if key.generation != parsed.generation {
            return Err(KeyError::Refused(
                "sealed under another data key of this owner (erased and re-created, or tampered)"
                    .into(),
            ));
        }
        format::open(&key.key, &parsed, context)
    }

    async fn open_as(
        &self,
        owner: &str,
        context: &SealContext,
        sealed: &[u8],
    ) -> Result<Vec<u8>, KeyError> {
        let parsed = format::parse(sealed)?;
        if parsed.owner != owner {
            return Err(KeyError::Refused("sealed for another owner".into()));
        }
        let key = self
            .owner_key(owner, false, Lookup::ReadFirst)
            .await?
            .ok_or(KeyError::Erased)?;
        match Self::open_with(&key, owner, context, sealed) {
            // Perhaps sealed under another key of the owner than the one
            // this process remembers: the owner may have been erased, and
            // a new key made, by another instance since (in the same
            // millisecond, the generations are alike). The store says
            // which key is theirs now.
            Err(KeyError::Refused(why)) => {
                let stored = self
                    .owner_key(owner, false, Lookup::Stored)
                    .await?
                    .ok_or(KeyError::Erased)?;
                if Arc::ptr_eq(&stored, &key) {
                    return Err(KeyError::Refused(why));
                }
                Self::open_with(&stored, owner, context, sealed)
            }
            opened => opened,
        }
    }

    /// The fingerprint of `pan` under fingerprint key `version` (the
    /// configured version creates its key on first use; another version
    /// must exist already).
    pub async fn fingerprint_with_version(
        &self,
        pan: &CardNumber,
        version: u32,
    ) -> Result<Fingerprint, KeyError> {
        if version == 0 {
            return Err(KeyError::Refused("fingerprint versions start at 1".into()));
        }
        let owner = fingerprint_owner(version);
        let key = self
            .owner_key(
                &owner,
                version == self.config.fingerprint_version,
                Lookup::ReadFirst,
            )
            .await?
            .ok_or_else(|| {
                KeyError::Refused(format!("fingerprint key version {version} does not exist"))
            })?;
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.key.expose())
            .map_err(|_| KeyError::Refused("fingerprint key unusable".into()))?;
        mac.update(pan.expose().as_bytes());
        Ok(Fingerprint::new(
            version,
            hex::encode(mac.finalize().into_bytes()),
        ))
    }

    fn self_check_error(e: KeyError, master: &str) -> KeyError {
        match e {
            KeyError::Unavailable(m) => KeyError::Unavailable(format!(
                "self-check failed: the master key service cannot be reached ({m})"
            )),
            KeyError::StoreUnavailable(m) => KeyError::StoreUnavailable(format!(
                "self-check failed: the key store cannot be read or written ({m})"
            )),
            KeyError::Refused(m) => KeyError::Refused(format!(
                "self-check failed: the canary does not open with master key {master} (wrong master key, or one disabled or deleted?): {m}"
            )),
            KeyError::Erased => KeyError::Refused(
                "self-check failed: a sealed canary exists but its data key is gone".into(),
            ),
        }
    }

    /// Opens the sealed canary with its data key and branch key read from
    /// the store and unwrapped by the master key now.
    async fn open_canary_fresh(&self, sealed: &[u8]) -> Result<Vec<u8>, KeyError> {
        let wk = self
            .store
            .get(CANARY_OWNER)
            .await
            .map_err(store_err)?
            .ok_or(KeyError::Erased)?;
        let key = OwnerKey {
            key: self.unwrap_stored(CANARY_OWNER, &wk, true).await?,
            generation: wk.created_at.unix_millis(),
            wrapped: wk.wrapped.clone(),
        };
        let context = SealContext::new(CANARY_OWNER, CANARY_FIELD);
        Self::open_with(&key, CANARY_OWNER, &context, sealed)
    }
}

/// Whether finding an owner's key starts by reading the store.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lookup {
    ReadFirst,
    /// The store's record first (a remembered key only while the store
    /// still holds it, by its generation); made when there is none.
    Stored,
    /// The owner is thought new: make the key and insert it; an insert
    /// that finds a key already stored uses that one.
    MakeFirst,
}

#[async_trait]
impl<M: MasterKey> CardVault for EnvelopeVault<M> {
    async fn seal(
        &self,
        owner: &UserId,
        context: &SealContext,
        plaintext: &[u8],
    ) -> Result<SealedBlob, KeyError> {
        self.seal_user(owner, context, plaintext, Lookup::ReadFirst)
            .await
    }

    async fn seal_for_new_owner(
        &self,
        owner: &UserId,
        context: &SealContext,
        plaintext: &[u8],
    ) -> Result<SealedBlob, KeyError> {
        self.seal_user(owner, context, plaintext, Lookup::MakeFirst)
            .await
    }

    async fn seal_with_stored_key(
        &self,
        owner: &UserId,
        context: &SealContext,
        plaintext: &[u8],
    ) -> Result<SealedBlob, KeyError> {
        self.seal_user(owner, context, plaintext, Lookup::Stored)
            .await
    }

    async fn open(
        &self,
        owner: &UserId,
        context: &SealContext,
        sealed: &SealedBlob,
    ) -> Result<Vec<u8>, KeyError> {
        let owner = user_owner(owner)?;
        self.open_as(owner, context, sealed.as_bytes()).await
    }

    async fn fingerprint(&self, pan: &CardNumber) -> Result<Fingerprint, KeyError> {
        self.fingerprint_with_version(pan, self.config.fingerprint_version)
            .await
    }

    async fn keyed_digest<'p>(
        &self,
        purpose: &str,
        parts: &[&'p [u8]],
    ) -> Result<[u8; 32], KeyError> {
        let key = self
            .owner_key(DIGEST_OWNER, true, Lookup::ReadFirst)
            .await?
            .ok_or_else(|| KeyError::Unavailable("the digest key could not be made".into()))?;
        framed_mac(key.key.expose(), purpose, parts)
            .ok_or_else(|| KeyError::Refused("digest key unusable".into()))
    }

    async fn erase_owner(&self, owner: &UserId) -> Result<bool, KeyError> {
        let owner = user_owner(owner)?;
        self.cache.evict(owner);
        let existed = self.store.delete(owner).await.map_err(store_err)?;
        // Again: a load that read the key before the delete must not keep it.
        self.cache.evict(owner);
        tracing::info!(owner, existed, "owner key material erased");
        Ok(existed)
    }

    fn serves_without_master_key(&self) -> bool {
        self.keyring.holds_active()
    }

    /// Opens the sealed canary with the `@canary` data key and the branch
    /// key that wraps it read straight from the store and unwrapped by the
    /// master key (never from a cache); on first start makes both.
    async fn self_check(&self) -> Result<(), KeyError> {
        let master = self.keyring.master().key_id().to_owned();
        self.cache.evict(CANARY_OWNER);
        let context = SealContext::new(CANARY_OWNER, CANARY_FIELD);
        let stored = self
            .store
            .get(SEALED_CANARY_OWNER)
            .await
            .map_err(store_err)?;
        let stored = match stored {
            Some(s) => s,
            None => {
                let sealed = self
                    .seal_as(CANARY_OWNER, &context, CANARY_TEXT, Lookup::ReadFirst)
                    .await
                    .map_err(|e| Self::self_check_error(e, &master))?;
                let record = WrappedKey {
                    owner: SEALED_CANARY_OWNER.to_owned(),
                    master_key_id: SEALED_CANARY_MARKER.to_owned(),
                    wrapped: sealed,
                    version: 1,
                    created_at: now(),
                };
                let s = self.store.put_if_absent(&record).await.map_err(store_err)?;
                self.cache.evict(CANARY_OWNER);
                if s == record {
                    tracing::info!(master_key = %master, "sealed the start-up canary");
                }
                s
            }
        };
        let opened = self
            .open_canary_fresh(&stored.wrapped)
            .await
            .map_err(|e| Self::self_check_error(e, &master))?;
        if opened != CANARY_TEXT {
            return Err(KeyError::Refused(
                "self-check failed: the canary opened to unexpected content".into(),
            ));
        }
        // Every readiness probe runs this: the start-up line is `serve`'s.
        tracing::debug!(master_key = %master, "key self-check passed");
        Ok(())
    }
}

/// HMAC-SHA256 under `key` of the purpose and each part, every field
/// prefixed with its length as a big-endian u64, so that no (purpose,
/// parts) reads as another. These are the bytes the digests were made of
/// when callers framed their parts themselves, so the digests stored then
/// (idempotency records) still match: the test below pins the layout.
fn framed_mac(key: &[u8], purpose: &str, parts: &[&[u8]]) -> Option<[u8; 32]> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).ok()?;
    for field in std::iter::once(purpose.as_bytes()).chain(parts.iter().copied()) {
        mac.update(&(field.len() as u64).to_be_bytes());
        mac.update(field);
    }
    Some(mac.finalize().into_bytes().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framed_mac_is_the_stored_layout() {
        let key = [7u8; 32];
        let mut input = Vec::new();
        for field in [b"idempotency-request".as_slice(), b"POST", b"/v1/x", b"{}"] {
            input.extend_from_slice(&(field.len() as u64).to_be_bytes());
            input.extend_from_slice(field);
        }
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).expect("any key length");
        mac.update(&input);
        let expected: [u8; 32] = mac.finalize().into_bytes().into();
        assert_eq!(
            framed_mac(&key, "idempotency-request", &[b"POST", b"/v1/x", b"{}"]),
            Some(expected)
        );
        assert_ne!(
            framed_mac(&key, "idempotency-request", &[b"POST", b"/v1/x{}"]),
            Some(expected)
        );
    }
}
