//! Consent records.

use std::collections::BTreeMap;

use async_trait::async_trait;
use cardbind_domain::{BindingId, Timestamp, UserId};
use cardbind_ports::store::{Consent, ConsentLog};
use cardbind_ports::StoreError;

use crate::{lock, take_limit, MemoryStore};

/// Consents by id (ordered: listings are by id ascending).
#[derive(Default)]
pub(crate) struct Table(BTreeMap<String, Consent>);

#[async_trait]
impl ConsentLog for MemoryStore {
    async fn record(&self, consent: &Consent) -> Result<(), StoreError> {
        self.check_available()?;
        let mut t = lock(&self.inner.consents);
        if t.0.contains_key(&consent.id) {
            return Err(StoreError::Duplicate);
        }
        t.0.insert(consent.id.clone(), consent.clone());
        Ok(())
    }

    async fn set_agreement(
        &self,
        binding: &BindingId,
        agreement_id: &str,
    ) -> Result<(), StoreError> {
        self.check_available()?;
        let mut t = lock(&self.inner.consents);
        t.0.values_mut()
            .filter(|c| &c.binding_id == binding && c.revoked_at.is_none())
            .for_each(|c| c.agreement_id = Some(agreement_id.to_owned()));
        Ok(())
    }

    async fn revoke(
        &self,
        binding: &BindingId,
        at: Timestamp,
        by: &str,
    ) -> Result<u64, StoreError> {
        self.check_available()?;
        let mut t = lock(&self.inner.consents);
        let mut n = 0;
        for c in t.0.values_mut() {
            if &c.binding_id == binding && c.revoked_at.is_none() {
                c.revoked_at = Some(at);
                c.revoked_by = Some(by.to_owned());
                n += 1;
            }
        }
        Ok(n)
    }

    async fn list(
        &self,
        user: Option<UserId>,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<Consent>, StoreError> {
        self.check_available()?;
        let t = lock(&self.inner.consents);
        let start = match &after {
            Some(a) => std::ops::Bound::Excluded(a.as_str()),
            None => std::ops::Bound::Unbounded,
        };
        Ok(t.0
            .range::<str, _>((start, std::ops::Bound::Unbounded))
            .map(|(_, c)| c)
            .filter(|c| user.as_ref().is_none_or(|u| &c.user_id == u))
            .take(take_limit(limit))
            .cloned()
            .collect())
    }
}
