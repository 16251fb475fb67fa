//! `ConsentLog`: consents as accepted (`consents`) and their revocations
//! (`consent_revocations`, one per consent, claimed by insert).

use std::collections::HashMap;

use async_trait::async_trait;
use cardbind_domain::{BindingId, Timestamp, UserId};
use cardbind_ports::store::{Consent, ConsentLog};
use cardbind_ports::StoreError;
use futures::TryStreamExt;
use mongodb::bson::doc;

use crate::chain::{by_id, chain_head};
use crate::docs::{dt, link_id, ConsentDoc, ConsentLinkDoc, RevocationDoc};
use crate::store::{limit_i64, map_err, page_by_id, try_insert, MongoStore};

/// Hint kind (see `chain::Hints`).
const CONSENT_LINKS: &str = "consent_links";
/// Rounds of claiming the next link of a binding's consents.
const MAX_LINK_ROUNDS: usize = 64;

impl MongoStore {
    /// The links `{binding}#0..` to a binding's consents (never deleted,
    /// so gapless from 0).
    async fn consent_links_of(&self, binding: &str) -> Result<Vec<ConsentLinkDoc>, StoreError> {
        let Some((head, last)) = chain_head(
            &self.consent_links,
            binding,
            0,
            self.hints.get(CONSENT_LINKS, binding),
        )
        .await?
        else {
            return Ok(Vec::new());
        };
        self.hints.set(CONSENT_LINKS, binding, head);
        let mut out = Vec::new();
        for n in 0..head {
            if let Some(l) = by_id(&self.consent_links, &link_id(binding, n)).await? {
                out.push(l);
            }
        }
        out.push(last);
        Ok(out)
    }

    /// The consents recorded for `binding`, each with its revocation if
    /// any: point reads only, as many as the binding has consents.
    async fn consents_of(
        &self,
        binding: &str,
    ) -> Result<Vec<(ConsentDoc, Option<RevocationDoc>)>, StoreError> {
        let mut ids: Vec<String> = self
            .consent_links_of(binding)
            .await?
            .into_iter()
            .map(|l| l.consent_id)
            .collect();
        ids.sort();
        ids.dedup();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            // A link to a consent that was never written (the insert failed
            // or is in flight) or that belongs to another binding (its id
            // was taken) is skipped.
            match by_id(&self.consents, &id).await? {
                Some(c) if c.binding_id == binding => {
                    let r = by_id(&self.revocations, &id).await?;
                    out.push((c, r));
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Adds `consent_id` to `binding`'s links. The first try is the
    /// position after the hint (or 0), without a read: links are never
    /// deleted and a hint is a position that existed, so a free position
    /// there is the end of the list. (A consent linked twice, after a
    /// retried `record`, is read once.)
    async fn link_consent(&self, binding: &str, consent_id: &str) -> Result<(), StoreError> {
        let mut next = Some(self.hints.get(CONSENT_LINKS, binding).map_or(0, |h| h + 1));
        for _ in 0..MAX_LINK_ROUNDS {
            let n = match next.take() {
                Some(n) => n,
                None => {
                    let links = self.consent_links_of(binding).await?;
                    if links.iter().any(|l| l.consent_id == consent_id) {
                        return Ok(());
                    }
                    links.last().map_or(0, |l| l.n + 1)
                }
            };
            let link = ConsentLinkDoc {
                id: link_id(binding, n),
                binding_id: binding.to_owned(),
                n,
                consent_id: consent_id.to_owned(),
            };
            if try_insert(&self.consent_links, &link).await? {
                self.hints.set(CONSENT_LINKS, binding, n);
                return Ok(());
            }
        }
        Err(StoreError::Unavailable(format!(
            "consent links of {binding} still contended"
        )))
    }
}

#[async_trait]
impl ConsentLog for MongoStore {
    async fn record(&self, consent: &Consent) -> Result<(), StoreError> {
        let d = ConsentDoc::from_domain(consent);
        self.timed(async {
            // The link first: a consent that exists is always reachable
            // from its binding (for `revoke` above all).
            self.link_consent(&d.binding_id, &d.id).await?;
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

    async fn set_agreement(
        &self,
        binding: &BindingId,
        agreement_id: &str,
    ) -> Result<(), StoreError> {
        self.timed(async {
            // `agreement_id` is the only field of a consent that changes,
            // and only here: a lost race between two of these leaves one
            // of the two values, and revocations are not touched.
            for (c, revoked) in self.consents_of(binding.as_str()).await? {
                if revoked.is_none() && c.agreement_id.as_deref() != Some(agreement_id) {
                    self.consents
                        .update_one(
                            doc! { "_id": &c.id },
                            doc! { "$set": { "agreement_id": agreement_id } },
                        )
                        .await
                        .map_err(map_err)?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn revoke(
        &self,
        binding: &BindingId,
        at: Timestamp,
        by: &str,
    ) -> Result<u64, StoreError> {
        self.timed(async {
            let mut n = 0;
            for (c, revoked) in self.consents_of(binding.as_str()).await? {
                if revoked.is_some() {
                    continue;
                }
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
            let docs: Vec<ConsentDoc> =
                page_by_id(&self.consents, filter, limit_i64(limit)).await?;
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
