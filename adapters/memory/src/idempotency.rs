//! Idempotency records: numbered attempts with a lease, completed responses.

use std::collections::HashMap;

use async_trait::async_trait;
use cardbind_domain::Timestamp;
use cardbind_ports::store::{Claim, IdempotencyStore, Lease, StoredResponse, FORGOTTEN_REQUEST};
use cardbind_ports::StoreError;

use crate::{lock, MemoryStore};

struct Attempt {
    n: u64,
    request_hash: String,
    created_at: Timestamp,
    state: State,
}

enum State {
    InProgress { lease_until: Timestamp },
    Released,
    Completed(StoredResponse),
}

/// Attempts by (scope, key), oldest first.
#[derive(Default)]
pub(crate) struct Table(HashMap<(String, String), Vec<Attempt>>);

impl Table {
    /// The newest attempt of a key, if `lease` names it.
    fn current(&mut self, scope: &str, key: &str, lease: Lease) -> Option<&mut Attempt> {
        self.0
            .get_mut(&(scope.to_owned(), key.to_owned()))
            .and_then(|a| a.last_mut())
            .filter(|a| a.n == lease.attempt)
    }
}

impl MemoryStore {
    /// Releases `lease`'s attempt if it is the newest and in progress;
    /// `forget`: bound to no request from then on.
    fn give_up(
        &self,
        scope: &str,
        key: &str,
        lease: Lease,
        forget: bool,
    ) -> Result<bool, StoreError> {
        self.check_available()?;
        let mut t = lock(&self.inner.idempotency);
        match t.current(scope, key, lease) {
            Some(a) if matches!(a.state, State::InProgress { .. }) => {
                a.state = State::Released;
                if forget {
                    FORGOTTEN_REQUEST.clone_into(&mut a.request_hash);
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

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
        let attempts = t.0.entry((scope.to_owned(), key.to_owned())).or_default();
        let next = match attempts.last() {
            None => 1,
            Some(a)
                if a.request_hash != request_hash
                    && !(matches!(a.state, State::Released)
                        && a.request_hash == FORGOTTEN_REQUEST) =>
            {
                return Ok(Claim::Mismatch)
            }
            Some(a) => match &a.state {
                State::Completed(r) => return Ok(Claim::Completed(r.clone())),
                State::InProgress { lease_until } if *lease_until >= now => {
                    return Ok(Claim::InProgress {
                        lease_until: *lease_until,
                    })
                }
                State::InProgress { .. } | State::Released => a.n + 1,
            },
        };
        attempts.push(Attempt {
            n: next,
            request_hash: request_hash.to_owned(),
            created_at: now,
            state: State::InProgress { lease_until },
        });
        Ok(Claim::Acquired(Lease { attempt: next }))
    }

    async fn renew(
        &self,
        scope: &str,
        key: &str,
        lease: Lease,
        lease_until: Timestamp,
    ) -> Result<bool, StoreError> {
        self.check_available()?;
        let mut t = lock(&self.inner.idempotency);
        match t.current(scope, key, lease) {
            Some(Attempt {
                state: State::InProgress { lease_until: l },
                ..
            }) => {
                *l = (*l).max(lease_until);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn complete(
        &self,
        scope: &str,
        key: &str,
        lease: Lease,
        response: &StoredResponse,
    ) -> Result<bool, StoreError> {
        self.check_available()?;
        let mut t = lock(&self.inner.idempotency);
        match t.current(scope, key, lease) {
            Some(a) if matches!(a.state, State::InProgress { .. }) => {
                a.state = State::Completed(response.clone());
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release(&self, scope: &str, key: &str, lease: Lease) -> Result<bool, StoreError> {
        self.give_up(scope, key, lease, false)
    }

    async fn forget(&self, scope: &str, key: &str, lease: Lease) -> Result<bool, StoreError> {
        self.give_up(scope, key, lease, true)
    }

    async fn purge_created_before(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.check_available()?;
        let mut t = lock(&self.inner.idempotency);
        let mut n = 0;
        t.0.retain(|_, attempts| {
            let len = attempts.len();
            attempts.retain(|a| a.created_at >= before);
            n += (len - attempts.len()) as u64;
            !attempts.is_empty()
        });
        Ok(n)
    }
}
