//! Helpers shared by the test files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
/// `re_encrypt` after some number of calls (to interrupt a rotation), or to
/// be down (every call `Unavailable`, after `delay_ms`, like a timeout).
pub struct Counting<M> {
    pub inner: M,
    pub generated: AtomicU64,
    pub decrypted: AtomicU64,
    pub reencrypted: AtomicU64,
    pub fail_reencrypt_after: AtomicU64,
    pub down: AtomicBool,
    pub delay_ms: AtomicU64,
}

impl<M> Counting<M> {
    pub fn new(inner: M) -> Counting<M> {
        Counting {
            inner,
            generated: AtomicU64::new(0),
            decrypted: AtomicU64::new(0),
            reencrypted: AtomicU64::new(0),
            fail_reencrypt_after: AtomicU64::new(u64::MAX),
            down: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
        }
    }
    pub fn calls(&self) -> u64 {
        self.generated() + self.decrypted() + self.reencrypted.load(Ordering::SeqCst)
    }
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
    async fn check_up(&self) -> Result<(), KeyError> {
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(KeyError::Unavailable(
                "master key service down (test)".into(),
            ));
        }
        Ok(())
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
        self.check_up().await?;
        self.inner.generate_data_key(owner).await
    }
    async fn decrypt_data_key(&self, owner: &str, wrapped: &[u8]) -> Result<DataKey, KeyError> {
        self.decrypted.fetch_add(1, Ordering::SeqCst);
        self.check_up().await?;
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
        self.check_up().await?;
        self.inner.re_encrypt(owner, wrapped, &to.inner).await
    }
}
