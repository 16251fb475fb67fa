//! `SeenIds`: one live record per (namespace, id) under a unique index. A
//! mark inserts it; when the recorded one has expired, the mark deletes
//! that record by its `_id` and inserts again. A record is never updated,
//! and every incarnation has its own `_id`, so a marker acting on a stale
//! read deletes nothing that a faster marker inserted: of concurrent marks
//! exactly one insert lands.

use async_trait::async_trait;
use cardbind_domain::Timestamp;
use cardbind_ports::store::SeenIds;
use cardbind_ports::StoreError;
use mongodb::bson::doc;

use crate::docs::{SeenDoc, SeenRead};
use crate::schema::labels::*;
use crate::store::{map_err, try_insert, MongoStore};

impl MongoStore {
    async fn seen_record(
        &self,
        ns: &str,
        id: &str,
        label: &'static str,
    ) -> Result<Option<SeenRead>, StoreError> {
        self.seen
            .clone_with_type::<SeenRead>()
            .find_one(doc! { "ns": ns, "id": id })
            .projection(doc! { "_id": 1, "expires_at": 1 })
            .max_time(self.op_timeout)
            .comment(label)
            .await
            .map_err(map_err)
    }
}

#[async_trait]
impl SeenIds for MongoStore {
    async fn seen(&self, namespace: &str, id: &str, now: Timestamp) -> Result<bool, StoreError> {
        self.timed(async {
            Ok(self
                .seen_record(namespace, id, SEEN_SEEN)
                .await?
                .is_some_and(|r| r.expires_at >= now.unix_millis()))
        })
        .await
    }

    async fn mark(
        &self,
        namespace: &str,
        id: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.timed(async {
            let d = SeenDoc {
                ns: namespace.to_owned(),
                id: id.to_owned(),
                expires_at: expires_at.unix_millis(),
            };
            loop {
                if try_insert(&self.seen, &d, SEEN_MARK).await? {
                    return Ok(true);
                }
                match self.seen_record(namespace, id, SEEN_MARK).await? {
                    // Deleted since (purged, or replaced and expired): try again.
                    None => {}
                    Some(r) if r.expires_at >= now.unix_millis() => return Ok(false),
                    Some(r) => {
                        self.seen
                            .delete_one(doc! { "ns": namespace, "id": id, "_id": r.oid })
                            .comment(SEEN_MARK)
                            .await
                            .map_err(map_err)?;
                    }
                }
            }
        })
        .await
    }

    async fn purge_expired(&self, now: Timestamp) -> Result<u64, StoreError> {
        self.timed(async {
            let r = self
                .seen
                .delete_many(doc! { "expires_at": { "$lt": now.unix_millis() } })
                .comment(SEEN_PURGE)
                .await
                .map_err(map_err)?;
            Ok(r.deleted_count)
        })
        .await
    }
}
