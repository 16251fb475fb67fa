//! The envelope vault with the local master key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

mod cache;
mod failures;
mod rotation;
mod sealing;

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sha2::Digest;

use cardbind_domain::{CardNumber, SealedBlob};
use cardbind_keys::{
    branch_owner, fingerprint_owner, format, parse_branch_owner, rotate, BranchConfig, CacheConfig,
    DataKey, EnvelopeVault, LocalMasterKey, MasterKey, VaultConfig, ACTIVE_BRANCH_OWNER,
    CANARY_OWNER, DIGEST_OWNER, SEALED_CANARY_OWNER,
};
use cardbind_ports::error::{KeyError, StoreError};
use cardbind_ports::keys::{CardVault, SealContext};
use cardbind_ports::store::{DataKeyStore, WrappedKey};
use common::{store, user, Counting};

fn vault() -> EnvelopeVault<LocalMasterKey> {
    EnvelopeVault::new(
        LocalMasterKey::generate(),
        store().1,
        VaultConfig::default(),
    )
}

/// A vault with the local master key `master` on the store `s`, as
/// another instance of one deployment (same key, same store) would be.
fn vault_on(master: &DataKey, s: &Arc<dyn DataKeyStore>) -> EnvelopeVault<LocalMasterKey> {
    EnvelopeVault::new(
        LocalMasterKey::from_key(master.clone()),
        s.clone(),
        VaultConfig::default(),
    )
}

fn ctx(record: &str, field: &'static str) -> SealContext {
    SealContext::new(record, field)
}

fn is_refused<T: std::fmt::Debug>(r: &Result<T, KeyError>) -> bool {
    matches!(r, Err(KeyError::Refused(_)))
}

/// `Counting` behind an `Arc`, so the test keeps a handle on the counters.
struct CountingRef(Arc<Counting<LocalMasterKey>>);

#[async_trait::async_trait]
impl MasterKey for CountingRef {
    fn key_id(&self) -> &str {
        self.0.key_id()
    }
    async fn generate_data_key(&self, owner: &str) -> Result<(DataKey, Vec<u8>), KeyError> {
        self.0.generate_data_key(owner).await
    }
    async fn decrypt_data_key(&self, owner: &str, wrapped: &[u8]) -> Result<DataKey, KeyError> {
        self.0.decrypt_data_key(owner, wrapped).await
    }
    async fn re_encrypt(
        &self,
        owner: &str,
        wrapped: &[u8],
        to: &Self,
    ) -> Result<Vec<u8>, KeyError> {
        self.0.re_encrypt(owner, wrapped, &to.0).await
    }
}
