//! The small stores: rate windows ([`RateLimiter`]), seen ids
//! ([`SeenIds`]), wrapped data keys ([`DataKeyStore`]) and the review queue
//! ([`ReviewQueue`]).

use async_trait::async_trait;
use cardbind_domain::{BindingId, Timestamp};
use cardbind_ports::store::{
    DataKeyStore, RateLimiter, RateTake, RateWindow, ReviewEntry, ReviewQueue, SeenIds, WrappedKey,
};
use cardbind_ports::StoreError;
use rusqlite::{params, OptionalExtension, Row};

use crate::error::db_err;
use crate::rows::{at, binding, int, ms, uint, user};
use crate::SqliteStore;

// No `RETURNING`: SQLite runs it through a temporary table, which costs
// more than a second statement.
const TAKE_SLOT: &str = "INSERT INTO rate_windows (expires_at, key, taken) VALUES (?1, ?2, 1)
     ON CONFLICT (expires_at, key) DO UPDATE SET taken = taken + 1
     WHERE taken < ?3";

const TAKE_BEGIN: &str = "SAVEPOINT rate_take";
const TAKE_UNDO: &str = "ROLLBACK TO rate_take";
const TAKE_END: &str = "RELEASE rate_take";

const SLOTS_TAKEN: &str = "SELECT taken FROM rate_windows WHERE expires_at = ?1 AND key = ?2";

const IS_SEEN: &str =
    "SELECT 1 FROM seen_ids WHERE namespace = ?1 AND id = ?2 AND expires_at >= ?3";

const MARK_SEEN: &str = "INSERT INTO seen_ids (namespace, id, expires_at) VALUES (?1, ?2, ?3)
     ON CONFLICT (namespace, id) DO UPDATE SET expires_at = excluded.expires_at
     WHERE seen_ids.expires_at < ?4";

const REPLACE_KEY: &str = "UPDATE data_keys SET master_key_id = ?2, wrapped = ?3, version = ?4
     WHERE owner = ?1 AND version = ?6 AND created_at = ?5";

const DELETE_KEY: &str = "DELETE FROM data_keys WHERE owner = ?1";

// An entry of a later stint in review replaces an earlier one's; one of
// the same stint or a later stays.
const ADD_REVIEW: &str =
    "INSERT INTO review_queue (binding, user, since, link) VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT (binding) DO UPDATE SET user = excluded.user, since = excluded.since,
     link = excluded.link WHERE review_queue.link < excluded.link";

const GET_REVIEW: &str = "SELECT user, since, link FROM review_queue WHERE binding = ?1";

const REMOVE_REVIEW: &str = "DELETE FROM review_queue WHERE binding = ?1 AND link <= ?2";

const LIST_REVIEW: &str = "SELECT binding, user, since, link FROM review_queue WHERE binding > ?1
     ORDER BY binding LIMIT ?2";

const PURGE_WINDOWS: &str = "DELETE FROM rate_windows WHERE (expires_at, key) IN (
     SELECT expires_at, key FROM rate_windows WHERE expires_at < ?1 LIMIT ?2)
     RETURNING taken";

const PURGE_SEEN: &str = "DELETE FROM seen_ids WHERE (namespace, id) IN (
     SELECT namespace, id FROM seen_ids INDEXED BY seen_ids_expiry
     WHERE expires_at < ?1 LIMIT ?2)
     RETURNING 1";

/// Rows deleted per purge step (one writer job each).
const PURGE_STEP: i64 = 2000;

impl SqliteStore {
    /// Runs `step` (a statement deleting at most [`PURGE_STEP`] rows, with
    /// `?1` the instant and `?2` the step) until it deletes fewer. Returns
    /// the sum of the first column of the deleted rows it `RETURNING`s.
    async fn purge_in_steps(&self, sql: &'static str, instant: i64) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let (rows, sum) = self
                .engine
                .write(move |tx| {
                    let mut s = tx.conn.prepare_cached(sql).map_err(db_err)?;
                    let counts = s
                        .query_map(params![instant, PURGE_STEP], |r| r.get::<_, i64>(0))
                        .map_err(db_err)?
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(db_err)?;
                    tx.after.vacuum |= !counts.is_empty();
                    let sum = counts
                        .iter()
                        .try_fold(0u64, |acc, n| Ok(acc + uint(*n, "count")?))?;
                    Ok((counts.len() as i64, sum))
                })
                .await?;
            total += sum;
            if rows < PURGE_STEP {
                return Ok(total);
            }
        }
    }
}

#[async_trait]
impl RateLimiter for SqliteStore {
    async fn take(
        &self,
        windows: &[RateWindow],
        _now: Timestamp,
    ) -> Result<Vec<RateTake>, StoreError> {
        let windows = windows
            .iter()
            .map(|w| Ok((ms(w.expires_at), w.key.clone(), int(w.limit, "rate limit")?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.engine
            .write(move |tx| {
                // A window is keyed by its end and its key: the windows in
                // force are one narrow range of the table, whatever it holds.
                // A take keeps every slot or none: a savepoint of its own
                // undoes the slots taken when a later window is full.
                tx.conn
                    .prepare_cached(TAKE_BEGIN)
                    .and_then(|mut s| s.execute([]))
                    .map_err(db_err)?;
                let mut take = tx.conn.prepare_cached(TAKE_SLOT).map_err(db_err)?;
                let mut taken = tx.conn.prepare_cached(SLOTS_TAKEN).map_err(db_err)?;
                let answers = windows
                    .iter()
                    .map(|(expires_at, key, limit)| {
                        if *limit == 0 {
                            return Ok(RateTake::Full);
                        }
                        let changed = take
                            .execute(params![expires_at, key, limit])
                            .map_err(db_err)?;
                        if changed == 0 {
                            return Ok(RateTake::Full);
                        }
                        let n = taken
                            .query_row(params![expires_at, key], |r| r.get::<_, i64>(0))
                            .map_err(db_err)?;
                        Ok(RateTake::Taken(uint(n, "rate slot")?))
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?;
                let refused = answers.contains(&RateTake::Full);
                if refused {
                    tx.conn
                        .prepare_cached(TAKE_UNDO)
                        .and_then(|mut s| s.execute([]))
                        .map_err(db_err)?;
                }
                tx.conn
                    .prepare_cached(TAKE_END)
                    .and_then(|mut s| s.execute([]))
                    .map_err(db_err)?;
                Ok(answers
                    .into_iter()
                    .map(|a| match a {
                        RateTake::Taken(_) if refused => RateTake::Untaken,
                        other => other,
                    })
                    .collect())
            })
            .await
    }

    async fn purge_expired(&self, now: Timestamp) -> Result<u64, StoreError> {
        self.purge_in_steps(PURGE_WINDOWS, ms(now)).await
    }
}

#[async_trait]
impl SeenIds for SqliteStore {
    async fn seen(&self, namespace: &str, id: &str, now: Timestamp) -> Result<bool, StoreError> {
        self.engine.read(|c| {
            c.prepare_cached(IS_SEEN)
                .and_then(|mut s| s.exists(params![namespace, id, ms(now)]))
                .map_err(db_err)
        })
    }

    async fn mark(
        &self,
        namespace: &str,
        id: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        let (ns, id) = (namespace.to_owned(), id.to_owned());
        let (now, exp) = (ms(now), ms(expires_at));
        self.engine
            .write(move |tx| {
                tx.conn
                    .prepare_cached(MARK_SEEN)
                    .and_then(|mut s| s.execute(params![ns, id, exp, now]))
                    .map(|n| n == 1)
                    .map_err(db_err)
            })
            .await
    }

    async fn purge_expired(&self, now: Timestamp) -> Result<u64, StoreError> {
        self.purge_in_steps(PURGE_SEEN, ms(now)).await
    }
}

fn wrapped_key(r: &Row<'_>) -> rusqlite::Result<(String, String, Vec<u8>, i64, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn into_key(
    (owner, master_key_id, wrapped, version, created_at): (String, String, Vec<u8>, i64, i64),
) -> Result<WrappedKey, StoreError> {
    Ok(WrappedKey {
        owner,
        master_key_id,
        wrapped,
        version: uint(version, "key version")?,
        created_at: at(created_at),
    })
}

const GET_KEY: &str =
    "SELECT owner, master_key_id, wrapped, version, created_at FROM data_keys WHERE owner = ?1";

const PUT_KEY: &str = "INSERT INTO data_keys (owner, master_key_id, wrapped, version, created_at)
     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING";

const LIST_KEYS: &str = "SELECT owner, master_key_id, wrapped, version, created_at FROM data_keys
     WHERE owner > ?1 ORDER BY owner LIMIT ?2";

/// Every statement of this module, for the plan checks.
#[cfg(test)]
pub(crate) const STATEMENTS: &[(&str, &str)] = &[
    ("TAKE_SLOT", TAKE_SLOT),
    ("SLOTS_TAKEN", SLOTS_TAKEN),
    ("PURGE_WINDOWS", PURGE_WINDOWS),
    ("IS_SEEN", IS_SEEN),
    ("MARK_SEEN", MARK_SEEN),
    ("PURGE_SEEN", PURGE_SEEN),
    ("GET_KEY", GET_KEY),
    ("PUT_KEY", PUT_KEY),
    ("REPLACE_KEY", REPLACE_KEY),
    ("DELETE_KEY", DELETE_KEY),
    ("LIST_KEYS", LIST_KEYS),
    ("ADD_REVIEW", ADD_REVIEW),
    ("GET_REVIEW", GET_REVIEW),
    ("REMOVE_REVIEW", REMOVE_REVIEW),
    ("LIST_REVIEW", LIST_REVIEW),
];

#[async_trait]
impl DataKeyStore for SqliteStore {
    async fn get(&self, owner: &str) -> Result<Option<WrappedKey>, StoreError> {
        let row = self.engine.read(|c| {
            c.prepare_cached(GET_KEY)
                .and_then(|mut s| s.query_row([owner], wrapped_key).optional())
                .map_err(db_err)
        })?;
        row.map(into_key).transpose()
    }

    async fn put_if_absent(&self, key: &WrappedKey) -> Result<WrappedKey, StoreError> {
        let k = key.clone();
        let version = int(k.version, "key version")?;
        let row = self
            .engine
            .write(move |tx| {
                tx.conn
                    .prepare_cached(PUT_KEY)
                    .and_then(|mut s| {
                        s.execute(params![
                            k.owner,
                            k.master_key_id,
                            k.wrapped,
                            version,
                            ms(k.created_at)
                        ])
                    })
                    .map_err(db_err)?;
                tx.conn
                    .prepare_cached(GET_KEY)
                    .and_then(|mut s| s.query_row([&k.owner], wrapped_key))
                    .map_err(db_err)
            })
            .await?;
        into_key(row)
    }

    async fn replace(&self, key: &WrappedKey, expected_version: u64) -> Result<(), StoreError> {
        let k = key.clone();
        let version = int(k.version, "key version")?;
        let expected = int(expected_version, "key version")?;
        self.engine
            .write(move |tx| {
                let n = tx
                    .conn
                    .prepare_cached(REPLACE_KEY)
                    .and_then(|mut s| {
                        s.execute(params![
                            k.owner,
                            k.master_key_id,
                            k.wrapped,
                            version,
                            ms(k.created_at),
                            expected
                        ])
                    })
                    .map_err(db_err)?;
                if n == 1 {
                    Ok(())
                } else {
                    Err(StoreError::Conflict)
                }
            })
            .await
    }

    async fn delete(&self, owner: &str) -> Result<bool, StoreError> {
        let owner = owner.to_owned();
        let existed = self
            .engine
            .write(move |tx| {
                let n = tx
                    .conn
                    .prepare_cached(DELETE_KEY)
                    .and_then(|mut s| s.execute([owner]))
                    .map_err(db_err)?;
                // secure_delete zeroes the row in its page; the WAL's older
                // copies of that page go when the WAL is truncated.
                tx.after.truncate_wal |= n > 0;
                Ok(n > 0)
            })
            .await?;
        Ok(existed)
    }

    async fn list(&self, after: Option<String>, limit: u32) -> Result<Vec<WrappedKey>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let after = after.unwrap_or_default();
        let rows = self.engine.read(|c| {
            let mut s = c.prepare_cached(LIST_KEYS).map_err(db_err)?;
            let rows = s
                .query_map(params![after, i64::from(limit)], wrapped_key)
                .map_err(db_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
        })?;
        rows.into_iter().map(into_key).collect()
    }
}

#[async_trait]
impl ReviewQueue for SqliteStore {
    async fn add(&self, entry: &ReviewEntry) -> Result<(), StoreError> {
        let (b, u, since) = (
            entry.binding.as_str().to_owned(),
            entry.user.as_str().to_owned(),
            ms(entry.since),
        );
        let link = int(entry.link, "review link")?;
        self.engine
            .write(move |tx| {
                tx.conn
                    .prepare_cached(ADD_REVIEW)
                    .and_then(|mut s| s.execute(params![b, u, since, link]))
                    .map(|_| ())
                    .map_err(db_err)
            })
            .await
    }

    async fn get(&self, binding_id: &BindingId) -> Result<Option<ReviewEntry>, StoreError> {
        let row = self.engine.read(|c| {
            c.prepare_cached(GET_REVIEW)
                .and_then(|mut s| {
                    s.query_row([binding_id.as_str()], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, i64>(2)?,
                        ))
                    })
                    .optional()
                })
                .map_err(db_err)
        })?;
        row.map(|(u, since, link)| {
            Ok(ReviewEntry {
                binding: binding_id.clone(),
                user: user(&u)?,
                since: at(since),
                link: uint(link, "review link")?,
            })
        })
        .transpose()
    }

    async fn remove(&self, binding_id: &BindingId, upto: u64) -> Result<(), StoreError> {
        let b = binding_id.as_str().to_owned();
        // Links are stored as SQLite integers: "any" is the largest.
        let upto = i64::try_from(upto).unwrap_or(i64::MAX);
        self.engine
            .write(move |tx| {
                tx.conn
                    .prepare_cached(REMOVE_REVIEW)
                    .and_then(|mut s| s.execute(params![b, upto]))
                    .map(|_| ())
                    .map_err(db_err)
            })
            .await
    }

    async fn list(
        &self,
        after: Option<BindingId>,
        limit: u32,
    ) -> Result<Vec<ReviewEntry>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let after = after.map(|b| b.as_str().to_owned()).unwrap_or_default();
        let rows = self.engine.read(|c| {
            let mut s = c.prepare_cached(LIST_REVIEW).map_err(db_err)?;
            let rows = s
                .query_map(params![after, i64::from(limit)], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })
                .map_err(db_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
        })?;
        rows.into_iter()
            .map(|(b, u, since, link)| {
                Ok(ReviewEntry {
                    binding: binding(&b)?,
                    user: user(&u)?,
                    since: at(since),
                    link: uint(link, "review link")?,
                })
            })
            .collect()
    }
}
