//! The audit log: a hash chain numbered 1, 2, 3, … without gaps.

use std::collections::BTreeMap;

use async_trait::async_trait;
use cardbind_domain::Timestamp;
use cardbind_ports::audit::{
    chain_hash, AuditEvent, AuditFilter, AuditLog, AuditRecord, GENESIS_HASH,
};
use cardbind_ports::StoreError;

use crate::{lock, take_limit, MemoryStore};

/// The stored records and the head of the chain. The head is kept apart
/// from the records so that purging (or deleting) the newest records does
/// not let the next event restart the numbering or the links.
pub(crate) struct Chain {
    records: BTreeMap<u64, AuditRecord>,
    last_seq: u64,
    last_hash: String,
}

impl Default for Chain {
    fn default() -> Self {
        Chain {
            records: BTreeMap::new(),
            last_seq: 0,
            last_hash: GENESIS_HASH.to_owned(),
        }
    }
}

impl Chain {
    fn append(&mut self, event: AuditEvent) -> AuditRecord {
        let seq = self.last_seq + 1;
        let hash = chain_hash(&self.last_hash, seq, &event);
        let record = AuditRecord {
            seq,
            event,
            prev_hash: std::mem::replace(&mut self.last_hash, hash.clone()),
            hash,
        };
        self.last_seq = seq;
        self.records.insert(seq, record.clone());
        record
    }

    pub(crate) fn tamper(&mut self, seq: u64, f: impl FnOnce(&mut AuditRecord)) -> bool {
        match self.records.get_mut(&seq) {
            Some(r) => {
                f(r);
                true
            }
            None => false,
        }
    }

    pub(crate) fn delete(&mut self, seq: u64) -> bool {
        self.records.remove(&seq).is_some()
    }
}

/// Whether `e` passes `f`: `since` is inclusive, `until` exclusive.
fn matches(f: &AuditFilter, e: &AuditEvent) -> bool {
    fn same(want: &Option<String>, have: &Option<String>) -> bool {
        want.is_none() || want == have
    }
    same(&f.user_id, &e.user_id)
        && same(&f.binding_id, &e.binding_id)
        && f.action.as_ref().is_none_or(|a| a == &e.action)
        && f.since.is_none_or(|t| e.at >= t)
        && f.until.is_none_or(|t| e.at < t)
}

#[async_trait]
impl AuditLog for MemoryStore {
    async fn append(&self, event: AuditEvent) -> Result<AuditRecord, StoreError> {
        self.check_available()?;
        Ok(lock(&self.inner.audit).append(event))
    }

    async fn list(
        &self,
        filter: &AuditFilter,
        after_seq: Option<u64>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.check_available()?;
        let c = lock(&self.inner.audit);
        let from = after_seq.map_or(0, |s| s.saturating_add(1));
        Ok(c.records
            .range(from..)
            .map(|(_, r)| r)
            .filter(|r| matches(filter, &r.event))
            .take(take_limit(limit))
            .cloned()
            .collect())
    }

    async fn purge_before(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.check_available()?;
        let mut c = lock(&self.inner.audit);
        let n = c.records.len();
        c.records.retain(|_, r| r.event.at >= before);
        Ok((n - c.records.len()) as u64)
    }
}
