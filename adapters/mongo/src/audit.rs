//! `AuditLog`: the hash chain, one document per link (`audit`, `_id` = seq).

use async_trait::async_trait;
use cardbind_domain::Timestamp;
use cardbind_ports::audit::{
    chain_hash, AuditEvent, AuditFilter, AuditLog, AuditRecord, GENESIS_HASH,
};
use cardbind_ports::StoreError;
use mongodb::bson::doc;

use crate::chain::{by_id, find_head};
use crate::docs::{audit_id, dt, to_i64, AuditCheckpointDoc, AuditDoc};
use crate::store::{limit_i64, map_err, page_by_id, try_insert, MongoStore};

/// Appends retry when another appender took the next seq; each round one
/// appender wins.
const MAX_APPEND_ROUNDS: usize = 256;

impl MongoStore {
    /// The newest checkpoint: the head of the log when the last purge
    /// began. A handful of documents at most (each purge deletes the older
    /// ones), so this unindexed read is cheap anywhere.
    async fn newest_checkpoint(&self) -> Result<Option<(i64, String)>, StoreError> {
        let cp = self
            .audit_checkpoints
            .find_one(doc! {})
            .sort(doc! { "_id": -1 })
            .await
            .map_err(map_err)?;
        Ok(cp.map(|c| (c.seq, c.hash)))
    }

    /// The last link of the chain, searched for upwards from `from` (a
    /// link of the chain: a record this process wrote or found, or the
    /// newest checkpoint) by reads of single `_id`s. Records above the
    /// newest checkpoint are never deleted (a purge records its checkpoint
    /// before deleting, and deletes nothing above it), so they are a gapless
    /// run and the search is exact.
    async fn audit_head_from(&self, from: (i64, String)) -> Result<(i64, String), StoreError> {
        let found = find_head(from.0 + 1, Some(from.0 + 1), |n| {
            let id = audit_id(n);
            async move { by_id(&self.audit, &id).await }
        })
        .await?;
        Ok(match found {
            Some((seq, d)) => (seq, d.hash),
            None => from,
        })
    }

    fn audit_hint(&self) -> Option<(i64, String)> {
        self.audit_hint
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_audit_hint(&self, seq: i64, hash: &str) {
        let mut h = self.audit_hint.lock().unwrap_or_else(|e| e.into_inner());
        if h.as_ref().is_none_or(|(s, _)| *s < seq) {
            *h = Some((seq, hash.to_owned()));
        }
    }
}

#[async_trait]
impl AuditLog for MongoStore {
    async fn append(&self, event: AuditEvent) -> Result<AuditRecord, StoreError> {
        self.timed(async {
            // One append at a time in this process (under the operation
            // timeout, so a stuck one cannot hold the others for longer):
            // then only appenders of other processes can take "our" seq.
            let _turn = self.audit_turn.lock().await;
            // Where to start: this process's last known link, unless a
            // purge has since checkpointed past it (below the checkpoint,
            // records may have been deleted, and a number must never be
            // used twice). Without either, the genesis.
            let checkpoint = self.newest_checkpoint().await?;
            let mut head = match (self.audit_hint(), checkpoint) {
                (Some(h), Some(c)) if c.0 > h.0 => c,
                (Some(h), _) => h,
                (None, Some(c)) => self.audit_head_from(c).await?,
                (None, None) => self.audit_head_from((0, GENESIS_HASH.to_owned())).await?,
            };
            for _ in 0..MAX_APPEND_ROUNDS {
                let (prev_seq, prev_hash) = head.clone();
                let seq = u64::try_from(prev_seq + 1)
                    .map_err(|_| StoreError::Corrupt("audit seq".into()))?;
                let record = AuditRecord {
                    seq,
                    hash: chain_hash(&prev_hash, seq, &event),
                    prev_hash,
                    event: event.clone(),
                };
                // Commit point: `_id` = seq exists once, so the chain never
                // forks; the loser searches for the new last link and goes
                // again.
                if try_insert(&self.audit, &AuditDoc::from_domain(&record)?).await? {
                    self.set_audit_hint(prev_seq + 1, &record.hash);
                    return Ok(record);
                }
                head = self.audit_head_from(head).await?;
                self.set_audit_hint(head.0, &head.1);
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
            q.insert("_id", doc! { "$gt": audit_id(to_i64(a, "after_seq")?) });
        }
        self.timed(async {
            let docs: Vec<AuditDoc> = page_by_id(&self.audit, q, limit_i64(limit)).await?;
            docs.into_iter().map(AuditDoc::into_domain).collect()
        })
        .await
    }

    async fn purge_before(&self, before: Timestamp) -> Result<u64, StoreError> {
        // Before deleting anything, record the newest link as a checkpoint:
        // a purge that empties the log must not restart the chain at 1, and
        // appenders never continue from a link below the newest checkpoint
        // (records there may be gone, and a number must not be used twice).
        // Nothing above the checkpoint is deleted by this purge.
        let last = self
            .timed(async {
                let from = self.newest_checkpoint().await?;
                let start = match (from, self.audit_hint()) {
                    (Some(c), Some(h)) if h.0 > c.0 => h,
                    (Some(c), _) => c,
                    (None, Some(h)) => h,
                    (None, None) => (0, GENESIS_HASH.to_owned()),
                };
                let (seq, hash) = self.audit_head_from(start).await?;
                if seq == 0 {
                    return Ok(None);
                }
                try_insert(&self.audit_checkpoints, &AuditCheckpointDoc { seq, hash }).await?;
                self.audit_checkpoints
                    .delete_many(doc! { "_id": { "$lt": seq } })
                    .await
                    .map_err(map_err)?;
                Ok(Some(seq))
            })
            .await?;
        match last {
            None => Ok(0),
            Some(seq) => {
                self.purge_where(
                    &self.audit,
                    doc! { "at": { "$lt": dt(before) }, "seq": { "$lte": seq } },
                    "_id",
                )
                .await
            }
        }
    }
}
