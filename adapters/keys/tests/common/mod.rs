//! Helpers shared by the test files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use cardbind_domain::UserId;
use cardbind_keys::{DataKey, MasterKey};
use cardbind_memory::MemoryStore;
use cardbind_ports::error::KeyError;
use cardbind_ports::store::DataKeyStore;

pub fn store() -> (Arc<MemoryStore>, Arc<dyn DataKeyStore>) {
    let s = MemoryStore::shared();
    let d: Arc<dyn DataKeyStore> = s.clone();
    (s, d)
}

pub fn user(s: &str) -> UserId {
    UserId::parse(s).expect("valid user id")
}

/// A master key that counts its calls, and can be told to fail
/// `re_encrypt` after some number of calls (to interrupt a rotation).
pub struct Counting<M> {
    pub inner: M,
    pub generated: AtomicU64,
    pub decrypted: AtomicU64,
    pub reencrypted: AtomicU64,
    pub fail_reencrypt_after: AtomicU64,
}

impl<M> Counting<M> {
    pub fn new(inner: M) -> Counting<M> {
        Counting {
            inner,
            generated: AtomicU64::new(0),
            decrypted: AtomicU64::new(0),
            reencrypted: AtomicU64::new(0),
            fail_reencrypt_after: AtomicU64::new(u64::MAX),
        }
    }
    pub fn generated(&self) -> u64 {
        self.generated.load(Ordering::SeqCst)
    }
    pub fn decrypted(&self) -> u64 {
        self.decrypted.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl<M: MasterKey> MasterKey for Counting<M> {
    fn key_id(&self) -> &str {
        self.inner.key_id()
    }
    async fn generate_data_key(&self, owner: &str) -> Result<(DataKey, Vec<u8>), KeyError> {
        self.generated.fetch_add(1, Ordering::SeqCst);
        self.inner.generate_data_key(owner).await
    }
    async fn decrypt_data_key(&self, owner: &str, wrapped: &[u8]) -> Result<DataKey, KeyError> {
        self.decrypted.fetch_add(1, Ordering::SeqCst);
        self.inner.decrypt_data_key(owner, wrapped).await
    }
    async fn re_encrypt(
        &self,
        owner: &str,
        wrapped: &[u8],
        to: &Self,
    ) -> Result<Vec<u8>, KeyError> {
        let n = self.reencrypted.fetch_add(1, Ordering::SeqCst);
        if n >= self.fail_reencrypt_after.load(Ordering::SeqCst) {
            return Err(KeyError::Unavailable("interrupted by the test".into()));
        }
        self.inner.re_encrypt(owner, wrapped, &to.inner).await
    }
}
