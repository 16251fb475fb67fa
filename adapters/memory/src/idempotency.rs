//! Idempotency records: claims with a lease, completed responses.

use std::collections::HashMap;

use async_trait::async_trait;
use cardbind_domain::Timestamp;
use cardbind_ports::store::{Claim, IdempotencyStore, StoredResponse};
use cardbind_ports::StoreError;

use crate::{lock, MemoryStore};

struct Record {
    request_hash: String,
    created_at: Timestamp,
    state: State,
}

enum State {
    InProgress { lease_until: Timestamp },
    Completed(StoredResponse),
}

/// Records by (scope, key).
#[derive(Default)]
pub(crate) struct Table(HashMap<(String, String), Record>);

#[async_trait]
impl IdempotencyStore for MemoryStore {
    async fn claim(
        &self,
        scope: &str,
        key: &str,
        request_hash: &str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Claim, StoreError> {
        self.check_available()?;
        let mut t = lock(&self.inner.idempotency);
        let id = (scope.to_owned(), key.to_owned());
        let Some(r) = t.0.get_mut(&id) else {
            t.0.insert(
                id,
                Record {
                    request_hash: request_hash.to_owned(),
                    created_at: now,
                    state: State::InProgress { lease_until },
                },
            );
            return Ok(Claim::Acquired);
        };
        if r.request_hash != request_hash {
            return Ok(Claim::Mismatch);
        }
        match &mut r.state {
            State::Completed(resp) => Ok(Claim::Completed(resp.clone())),
            // The lease runs until `lease_until` inclusive.
            State::InProgress { lease_until: held } if now <= *held => Ok(Claim::InProgress),
            State::InProgress { lease_until: held } => {
                // The holder crashed: take the key over with a new lease.
                *held = lease_until;
                Ok(Claim::Acquired)
            }
        }
    }

    async fn complete(
        &self,
        scope: &str,
        key: &str,
        response: &StoredResponse,
    ) -> Result<(), StoreError> {
        self.check_available()?;
        let mut t = lock(&self.inner.idempotency);
        // A key that is gone (released, purged) stays gone: there is no
        // request hash to store the response under.
        if let Some(r) = t.0.get_mut(&(scope.to_owned(), key.to_owned())) {
            r.state = State::Completed(response.clone());
        }
        Ok(())
    }

    async fn release(&self, scope: &str, key: &str) -> Result<(), StoreError> {
        self.check_available()?;
        let mut t = lock(&self.inner.idempotency);
        let id = (scope.to_owned(), key.to_owned());
        if matches!(t.0.get(&id), Some(r) if matches!(r.state, State::InProgress { .. })) {
            t.0.remove(&id);
        }
        Ok(())
    }

    async fn purge_created_before(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.check_available()?;
        let mut t = lock(&self.inner.idempotency);
        let n = t.0.len();
        t.0.retain(|_, r| r.created_at >= before);
        Ok((n - t.0.len()) as u64)
    }
}
