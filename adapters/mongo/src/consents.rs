//! `ConsentLog`: consents as accepted (`consents`) and their revocations
//! (`consent_revocations`, one per consent, claimed by insert).

use std::collections::HashMap;

use async_trait::async_trait;
use cardbind_domain::{BindingId, Timestamp, UserId};
use cardbind_ports::store::{Consent, ConsentLog};
use cardbind_ports::StoreError;
use futures::TryStreamExt;
use mongodb::bson::doc;

use crate::docs::{dt, ConsentDoc, RevocationDoc};
use crate::store::{limit_i64, map_err, try_insert, MongoStore};

impl MongoStore {
    async fn revocations_of(&self, binding: &str) -> Result<Vec<RevocationDoc>, StoreError> {
        self.revocations
            .find(doc! { "binding_id": binding })
            .await
            .map_err(map_err)?
            .try_collect()
            .await
            .map_err(map_err)
    }
}

#[async_trait]
impl ConsentLog for MongoStore {
    async fn record(&self, consent: &Consent) -> Result<(), StoreError> {
        let d = ConsentDoc::from_domain(consent);
        self.timed(async {
            self.consents.insert_one(&d).await.map_err(map_err)?;
            if let (Some(at), Some(by)) = (consent.revoked_at, &consent.revoked_by) {
                let r = RevocationDoc {
                    consent_id: d.id.clone(),
                    binding_id: d.binding_id.clone(),
                    at: dt(at),
                    by: by.clone(),
                };
                try_insert(&self.revocations, &r).await?;
            }
            Ok(())
        })
        .await
    }

    async fn set_agreement(&self, binding: &BindingId, agreement_id: &str) -> Result<(), StoreError> {
        self.timed(async {
            let revoked: Vec<String> = self
                .revocations_of(binding.as_str())
                .await?
                .into_iter()
                .map(|r| r.consent_id)
                .collect();
            // `agreement_id` is the only field of a consent that changes,
            // and only here: a lost race between two of these leaves one
            // of the two values, and revocations are not touched.
            self.consents
                .update_many(
                    doc! { "binding_id": binding.as_str(), "_id": { "$nin": revoked } },
                    doc! { "$set": { "agreement_id": agreement_id } },
                )
                .await
                .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn revoke(&self, binding: &BindingId, at: Timestamp, by: &str) -> Result<u64, StoreError> {
        self.timed(async {
            let consents: Vec<ConsentDoc> = self
                .consents
                .find(doc! { "binding_id": binding.as_str() })
                .await
                .map_err(map_err)?
                .try_collect()
                .await
                .map_err(map_err)?;
            let mut n = 0;
            for c in consents {
                let r = RevocationDoc {
                    consent_id: c.id,
                    binding_id: c.binding_id,
                    at: dt(at),
                    by: by.to_owned(),
                };
                // One revocation per consent: an already revoked one (or
                // one a concurrent call revokes first) is not counted.
                if try_insert(&self.revocations, &r).await? {
                    n += 1;
                }
            }
            Ok(n)
        })
        .await
    }

    async fn list(
        &self,
        user: Option<UserId>,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<Consent>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.timed(async {
            let mut filter = doc! {};
            if let Some(u) = &user {
                filter.insert("user_id", u.as_str());
            }
            if let Some(a) = &after {
                filter.insert("_id", doc! { "$gt": a.as_str() });
            }
            let docs: Vec<ConsentDoc> = self
                .consents
                .find(filter)
                .sort(doc! { "_id": 1 })
                .limit(limit_i64(limit))
                .await
                .map_err(map_err)?
                .try_collect()
                .await
                .map_err(map_err)?;
            let ids: Vec<&str> = docs.iter().map(|d| d.id.as_str()).collect();
            let mut revoked: HashMap<String, RevocationDoc> = self
                .revocations
                .find(doc! { "_id": { "$in": ids } })
                .await
                .map_err(map_err)?
                .try_collect::<Vec<RevocationDoc>>()
                .await
                .map_err(map_err)?
                .into_iter()
                .map(|r| (r.consent_id.clone(), r))
                .collect();
            docs.into_iter()
                .map(|d| {
                    let r = revoked.remove(&d.id);
                    d.into_domain(r)
                })
                .collect()
        })
        .await
    }
}
