//! `AuditLog`: the hash chain, one document per link (`audit`, `_id` = seq).

use async_trait::async_trait;
use cardbind_domain::Timestamp;
use cardbind_ports::audit::{chain_hash, AuditEvent, AuditFilter, AuditLog, AuditRecord, GENESIS_HASH};
use cardbind_ports::StoreError;
use futures::TryStreamExt;
use mongodb::bson::doc;

use crate::docs::{dt, to_i64, AuditCheckpointDoc, AuditDoc};
use crate::store::{limit_i64, map_err, try_insert, MongoStore};

/// Appends retry when another instance took the next seq; each round one
/// appender wins.
const MAX_APPEND_ROUNDS: usize = 256;

impl MongoStore {
    /// The last link: the newest record, or when a purge emptied the log,
    /// the newest checkpoint that purge left.
    async fn chain_head(&self) -> Result<Option<(i64, String)>, StoreError> {
        let last = self.audit.find_one(doc! {}).sort(doc! { "_id": -1 }).await.map_err(map_err)?;
        if let Some(l) = last {
            return Ok(Some((l.seq, l.hash)));
        }
        let cp = self
            .audit_checkpoints
            .find_one(doc! {})
            .sort(doc! { "_id": -1 })
            .await
            .map_err(map_err)?;
        Ok(cp.map(|c| (c.seq, c.hash)))
    }
}

#[async_trait]
impl AuditLog for MongoStore {
    async fn append(&self, event: AuditEvent) -> Result<AuditRecord, StoreError> {
        self.timed(async {
            for _ in 0..MAX_APPEND_ROUNDS {
                let (seq, prev_hash) = match self.chain_head().await? {
                    Some((seq, hash)) => (seq + 1, hash),
                    None => (1, GENESIS_HASH.to_owned()),
                };
                let seq = u64::try_from(seq).map_err(|_| StoreError::Corrupt("audit seq".into()))?;
                let record = AuditRecord {
                    seq,
                    hash: chain_hash(&prev_hash, seq, &event),
                    prev_hash,
                    event: event.clone(),
                };
                // Commit point: `_id` = seq exists once, so the chain never
                // forks; the loser reads the new last link and goes again.
                if try_insert(&self.audit, &AuditDoc::from_domain(&record)?).await? {
                    return Ok(record);
                }
            }
            Err(StoreError::Unavailable(format!(
                "audit log still contended after {MAX_APPEND_ROUNDS} rounds"
            )))
        })
        .await
    }

    async fn list(
        &self,
        filter: &AuditFilter,
        after_seq: Option<u64>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut q = doc! {};
        if let Some(u) = &filter.user_id {
            q.insert("user_id", u.as_str());
        }
        if let Some(b) = &filter.binding_id {
            q.insert("binding_id", b.as_str());
        }
        if let Some(a) = &filter.action {
            q.insert("action", a.as_str());
        }
        let mut at = doc! {};
        if let Some(s) = filter.since {
            at.insert("$gte", dt(s));
        }
        if let Some(u) = filter.until {
            at.insert("$lt", dt(u));
        }
        if !at.is_empty() {
            q.insert("at", at);
        }
        if let Some(a) = after_seq {
            q.insert("_id", doc! { "$gt": to_i64(a, "after_seq")? });
        }
        self.timed(async {
            let docs: Vec<AuditDoc> = self
                .audit
                .find(q)
                .sort(doc! { "_id": 1 })
                .limit(limit_i64(limit))
                .await
                .map_err(map_err)?
                .try_collect()
                .await
                .map_err(map_err)?;
            docs.into_iter().map(AuditDoc::into_domain).collect()
        })
        .await
    }

    async fn purge_before(&self, before: Timestamp) -> Result<u64, StoreError> {
        // Before deleting anything, remember the newest link: a purge that
        // empties the log must not restart the chain at 1 (appends read the
        // checkpoint when `audit` is empty). Written before the deletes, so
        // an appender that finds `audit` empty always finds it.
        self.timed(async {
            let last = self.audit.find_one(doc! {}).sort(doc! { "_id": -1 }).await.map_err(map_err)?;
            if let Some(l) = last {
                let cp = AuditCheckpointDoc { seq: l.seq, hash: l.hash };
                try_insert(&self.audit_checkpoints, &cp).await?;
                self.audit_checkpoints
                    .delete_many(doc! { "_id": { "$lt": l.seq } })
                    .await
                    .map_err(map_err)?;
            }
            Ok(())
        })
        .await?;
        self.purge_where(&self.audit, doc! { "at": { "$lt": dt(before) } }, "_id")
            .await
    }
}
