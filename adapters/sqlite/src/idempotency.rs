//! Idempotency records ([`IdempotencyStore`]): one row per attempt of a
//! key, the newest attempt deciding. Rows are appended in the order they
//! are claimed and found through the unique index (scope, key, attempt).

use async_trait::async_trait;
use cardbind_domain::Timestamp;
use cardbind_ports::store::{Claim, IdempotencyStore, Lease, StoredResponse, FORGOTTEN_REQUEST};
use cardbind_ports::StoreError;
use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{corrupt, db_err};
use crate::rows::{int, ms, uint};
use crate::SqliteStore;

const NEWEST_ATTEMPT: &str =
    "SELECT attempt, request_hash, created_at, lease_until, state, status, content_type, body
     FROM idempotency WHERE scope = ?1 AND key = ?2 ORDER BY attempt DESC LIMIT 1";

const INSERT_ATTEMPT: &str =
    "INSERT INTO idempotency (scope, key, attempt, request_hash, created_at, lease_until, state)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0)";

const PURGE_ATTEMPTS: &str = "DELETE FROM idempotency WHERE rowid IN (
     SELECT rowid FROM idempotency INDEXED BY idempotency_created
     WHERE created_at < ?1 LIMIT ?2)";

const IN_PROGRESS: i64 = 0;
const COMPLETED: i64 = 1;
const RELEASED: i64 = 2;

/// Rows deleted per purge step (one writer job each).
const PURGE_STEP: i64 = 2000;

struct Newest {
    attempt: i64,
    request_hash: String,
    lease_until: i64,
    state: i64,
    response: Option<(i64, String, Vec<u8>)>,
}

fn newest(c: &Connection, scope: &str, key: &str) -> Result<Option<Newest>, StoreError> {
    c.prepare_cached(NEWEST_ATTEMPT)
        .and_then(|mut s| {
            s.query_row([scope, key], |r| {
                let status: Option<i64> = r.get(5)?;
                let content_type: Option<String> = r.get(6)?;
                let body: Option<Vec<u8>> = r.get(7)?;
                Ok(Newest {
                    attempt: r.get(0)?,
                    request_hash: r.get(1)?,
                    lease_until: r.get(3)?,
                    state: r.get(4)?,
                    response: match (status, content_type, body) {
                        (Some(s), Some(c), Some(b)) => Some((s, c, b)),
                        _ => None,
                    },
                })
            })
            .optional()
        })
        .map_err(db_err)
}

fn response(n: Newest) -> Result<StoredResponse, StoreError> {
    let (status, content_type, body) = n
        .response
        .ok_or_else(|| corrupt("a completed idempotency record has no response"))?;
    Ok(StoredResponse {
        status: u16::try_from(status)
            .map_err(|_| corrupt("a stored response status is out of range"))?,
        content_type,
        body,
    })
}

/// Statements that change `lease`'s attempt (`?3`) if it is the newest
/// and still in progress.
macro_rules! if_newest_in_progress {
    ($set:literal) => {
        concat!(
            "UPDATE idempotency SET ",
            $set,
            " WHERE scope = ?1 AND key = ?2 AND attempt = ?3 AND state = 0
               AND NOT EXISTS (SELECT 1 FROM idempotency
                               WHERE scope = ?1 AND key = ?2 AND attempt > ?3)"
        )
    };
}

const RENEW: &str = if_newest_in_progress!("lease_until = ?4");
const COMPLETE: &str =
    if_newest_in_progress!("state = 1, status = ?4, content_type = ?5, body = ?6");
const RELEASE: &str = if_newest_in_progress!("state = 2");
/// Released, and bound to no request ([`FORGOTTEN_REQUEST`], the empty
/// string).
const FORGET: &str = if_newest_in_progress!("state = 2, request_hash = ''");

/// Every statement of this module, for the plan checks.
#[cfg(test)]
pub(crate) const STATEMENTS: &[(&str, &str)] = &[
    ("NEWEST_ATTEMPT", NEWEST_ATTEMPT),
    ("INSERT_ATTEMPT", INSERT_ATTEMPT),
    ("PURGE_ATTEMPTS", PURGE_ATTEMPTS),
    ("RENEW", RENEW),
    ("COMPLETE", COMPLETE),
    ("RELEASE", RELEASE),
    ("FORGET", FORGET),
];

/// Runs one of [`RENEW`], [`COMPLETE`], [`RELEASE`], [`FORGET`]; whether it changed
/// the attempt.
fn finish(
    c: &Connection,
    sql: &str,
    scope: &str,
    key: &str,
    attempt: i64,
    extra: &[&dyn rusqlite::ToSql],
) -> Result<bool, StoreError> {
    let mut args: Vec<&dyn rusqlite::ToSql> = vec![&scope, &key, &attempt];
    args.extend_from_slice(extra);
    c.prepare_cached(sql)
        .and_then(|mut s| s.execute(args.as_slice()))
        .map(|n| n == 1)
        .map_err(db_err)
}

impl SqliteStore {
    /// Runs [`RELEASE`] or [`FORGET`] on `lease`'s attempt.
    async fn give_up(
        &self,
        sql: &'static str,
        scope: &str,
        key: &str,
        lease: Lease,
    ) -> Result<bool, StoreError> {
        let (scope, key) = (scope.to_owned(), key.to_owned());
        let attempt = int(lease.attempt, "attempt")?;
        self.engine
            .write(move |tx| finish(tx.conn, sql, &scope, &key, attempt, &[]))
            .await
    }
}

#[async_trait]
impl IdempotencyStore for SqliteStore {
    async fn claim(
        &self,
        scope: &str,
        key: &str,
        request_hash: &str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Claim, StoreError> {
        let (scope, key, hash) = (scope.to_owned(), key.to_owned(), request_hash.to_owned());
        let (now, until) = (ms(now), ms(lease_until));
        self.engine
            .write(move |tx| {
                let found = newest(tx.conn, &scope, &key)?;
                let attempt = match found {
                    None => 1,
                    Some(n)
                        if n.request_hash != hash
                            && !(n.state == RELEASED && n.request_hash == FORGOTTEN_REQUEST) =>
                    {
                        return Ok(Claim::Mismatch)
                    }
                    Some(n) if n.state == RELEASED => n.attempt + 1,
                    Some(n) if n.state == COMPLETED => return response(n).map(Claim::Completed),
                    Some(n) if n.state != IN_PROGRESS => {
                        return Err(corrupt("an idempotency record has an unknown state"))
                    }
                    Some(n) if n.lease_until >= now => {
                        return Ok(Claim::InProgress {
                            lease_until: Timestamp::from_unix_millis(n.lease_until),
                        })
                    }
                    // The holder's lease expired: a new attempt takes over.
                    Some(n) => n.attempt + 1,
                };
                tx.conn
                    .prepare_cached(INSERT_ATTEMPT)
                    .and_then(|mut s| s.execute(params![scope, key, attempt, hash, now, until]))
                    .map_err(db_err)?;
                Ok(Claim::Acquired(Lease {
                    attempt: uint(attempt, "attempt")?,
                }))
            })
            .await
    }

    async fn renew(
        &self,
        scope: &str,
        key: &str,
        lease: Lease,
        lease_until: Timestamp,
    ) -> Result<bool, StoreError> {
        let (scope, key) = (scope.to_owned(), key.to_owned());
        let attempt = int(lease.attempt, "attempt")?;
        let until = ms(lease_until);
        self.engine
            .write(move |tx| finish(tx.conn, RENEW, &scope, &key, attempt, &[&until]))
            .await
    }

    async fn complete(
        &self,
        scope: &str,
        key: &str,
        lease: Lease,
        response: &StoredResponse,
    ) -> Result<bool, StoreError> {
        let (scope, key) = (scope.to_owned(), key.to_owned());
        let attempt = int(lease.attempt, "attempt")?;
        let r = response.clone();
        self.engine
            .write(move |tx| {
                let status = i64::from(r.status);
                finish(
                    tx.conn,
                    COMPLETE,
                    &scope,
                    &key,
                    attempt,
                    &[&status, &r.content_type, &r.body],
                )
            })
            .await
    }

    async fn release(&self, scope: &str, key: &str, lease: Lease) -> Result<bool, StoreError> {
        self.give_up(RELEASE, scope, key, lease).await
    }

    async fn forget(&self, scope: &str, key: &str, lease: Lease) -> Result<bool, StoreError> {
        self.give_up(FORGET, scope, key, lease).await
    }

    async fn purge_created_before(&self, before: Timestamp) -> Result<u64, StoreError> {
        let before = ms(before);
        let mut total = 0;
        loop {
            let n = self
                .engine
                .write(move |tx| {
                    let n = tx
                        .conn
                        .prepare_cached(PURGE_ATTEMPTS)
                        .and_then(|mut s| s.execute(params![before, PURGE_STEP]))
                        .map_err(db_err)? as u64;
                    tx.after.vacuum |= n > 0;
                    Ok(n)
                })
                .await?;
            total += n;
            if n < PURGE_STEP as u64 {
                return Ok(total);
            }
        }
    }
}
