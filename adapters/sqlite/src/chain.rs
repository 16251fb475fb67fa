//! The chains: users' wallets ([`WalletStore`]) and the audit log
//! ([`AuditLog`]) over the same `links` and `events` tables.

use async_trait::async_trait;
use cardbind_domain::{Timestamp, UserId, Wallet};
use cardbind_ports::audit::{
    next_link, AuditCursor, AuditEvent, AuditFilter, AuditLog, AuditRecord, ChainHead, ChainId,
    Link, LinkStamp, STORED_LISTING_ALTERED, STORED_WALLET_ALTERED, STORED_WALLET_MISSING,
};
use cardbind_ports::store::{LinkKey, PendingLink, StoredWallet, WalletStore};
use cardbind_ports::StoreError;
use cardbind_records::{has_pending, wallet_digest, wallet_json, EventRecord, WalletRecord};
use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{corrupt, db_err};
use crate::rows::{
    at, chain_key, chain_of, from_json, hash_bytes, hash_hex, int, ms, to_json, uint, user,
};
use crate::SqliteStore;

const INSERT_LINKS: &str =
    "INSERT INTO links (chain, seq, at, prev_hash, hash, pending, wallet, wallet_digest)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

const INSERT_EVENTS: &str =
    "INSERT INTO events (at, chain, seq, idx, user_id, binding_id, action, body)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

/// Drops the wallet copy of a link its successor has just superseded: only
/// a chain's newest link is ever read for its wallet, so each user keeps one
/// copy, not one per change (a user's history costs its events, not its
/// history times its wallet).
const DROP_WALLET_COPY: &str = "UPDATE links SET wallet = NULL WHERE chain = ?1 AND seq = ?2";

const CHAIN_HEAD: &str =
    "SELECT seq, hash, at FROM links WHERE chain = ?1 ORDER BY seq DESC LIMIT 1";

const LOAD_WALLET: &str =
    "SELECT seq, hash, at, wallet FROM links WHERE chain = ?1 ORDER BY seq DESC LIMIT 1";

/// The newest link of each chain named in a JSON array of user ids (one
/// statement whatever their number): the array is walked, each chain's
/// newest link found by the `(chain, seq)` index.
const LOAD_WALLETS: &str = "SELECT l.chain, l.seq, l.hash, l.at, l.wallet
     FROM json_each(?1) AS arg
     JOIN links AS l ON l.chain = arg.value
     AND l.seq = (SELECT MAX(m.seq) FROM links AS m WHERE m.chain = arg.value)";

const PENDING_LINKS: &str = "SELECT at, chain, seq FROM links INDEXED BY links_pending
     WHERE pending = 1 AND (at, chain, seq) > (?1, ?2, ?3)
     AND at >= ?4 AND at < ?5
     ORDER BY at, chain, seq LIMIT ?6";

const LINK_EVENTS: &str = "SELECT body, user_id, binding_id, action FROM events
     WHERE at = ?1 AND chain = ?2 AND seq = ?3 ORDER BY idx";

const WALK_LINKS: &str = "SELECT chain, seq, at, prev_hash, hash, wallet, wallet_digest,
     NOT EXISTS (SELECT 1 FROM links AS n WHERE n.chain = l.chain AND n.seq > l.seq)
     FROM links AS l
     WHERE (chain, seq) > (?1, ?2) ORDER BY chain, seq LIMIT ?3";

const PURGE_FIND: &str = "SELECT l.rowid, l.at, l.chain, l.seq,
     EXISTS (SELECT 1 FROM links AS n
     WHERE n.chain = l.chain AND n.seq > l.seq)
     FROM links AS l INDEXED BY links_at
     WHERE l.at < ?1 AND (l.at, l.rowid) > (?2, ?3)
     ORDER BY l.at, l.rowid LIMIT ?4";

const PURGE_LINK: &str = "DELETE FROM links WHERE rowid = ?1 AND chain = ?2 AND seq = ?3";

const PURGE_LINK_EVENTS: &str = "DELETE FROM events WHERE at = ?1 AND chain = ?2 AND seq = ?3";

/// The links of a window as an anchor digests them: the events' primary
/// key in order, one row per link, and the link's hash (no event bodies,
/// no wallets). The first page starts at the window's start; the next
/// ones at the last link read, a bound of their own: with both bounds
/// SQLite seeks to the window's start and skips, so every page would
/// cost all the pages before it (measured: 33 s instead of 1 s for a
/// minute of 450,000 links).
const LINK_STAMPS_FROM: &str = "SELECT e.at, e.chain, e.seq, min(e.action = 'audit.anchor'), l.hash
     FROM events AS e CROSS JOIN links AS l ON l.chain = e.chain AND l.seq = e.seq
     WHERE e.at >= ?1 AND e.at < ?2
     GROUP BY e.at, e.chain, e.seq ORDER BY e.at, e.chain, e.seq LIMIT ?3";

pub(crate) const LINK_STAMPS_AFTER: &str =
    "SELECT e.at, e.chain, e.seq, min(e.action = 'audit.anchor'), l.hash
     FROM events AS e CROSS JOIN links AS l ON l.chain = e.chain AND l.seq = e.seq
     WHERE (e.at, e.chain, e.seq) > (?1, ?2, ?3) AND e.at < ?4
     GROUP BY e.at, e.chain, e.seq ORDER BY e.at, e.chain, e.seq LIMIT ?5";

/// Every statement of this module, for the plan checks.
#[cfg(test)]
pub(crate) const STATEMENTS: &[(&str, &str)] = &[
    ("INSERT_LINKS", INSERT_LINKS),
    ("INSERT_EVENTS", INSERT_EVENTS),
    ("DROP_WALLET_COPY", DROP_WALLET_COPY),
    ("CHAIN_HEAD", CHAIN_HEAD),
    ("LOAD_WALLET", LOAD_WALLET),
    ("LOAD_WALLETS", LOAD_WALLETS),
    ("PENDING_LINKS", PENDING_LINKS),
    ("LINK_EVENTS", LINK_EVENTS),
    ("WALK_LINKS", WALK_LINKS),
    ("PURGE_FIND", PURGE_FIND),
    ("PURGE_LINK", PURGE_LINK),
    ("PURGE_LINK_EVENTS", PURGE_LINK_EVENTS),
    ("LINK_STAMPS_FROM", LINK_STAMPS_FROM),
    ("LINK_STAMPS_AFTER", LINK_STAMPS_AFTER),
];

/// A link as written: every column ready, built on the caller's thread so
/// that the writer only inserts.
struct LinkRow {
    chain: String,
    seq: i64,
    at: i64,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
    pending: bool,
    wallet: Option<Vec<u8>>,
    wallet_digest: Option<Vec<u8>>,
    events: Vec<EventRow>,
}

struct EventRow {
    user_id: Option<String>,
    binding_id: Option<String>,
    action: &'static str,
    body: Vec<u8>,
}

/// A user's wallet as a link stores it: the JSON of its record, and
/// whether it holds a card waiting to be settled.
struct WalletRow {
    json: Vec<u8>,
    pending: bool,
}

impl WalletRow {
    fn new(w: &Wallet) -> Result<WalletRow, StoreError> {
        Ok(WalletRow {
            json: wallet_json(w)?,
            pending: has_pending(w),
        })
    }

    fn digest(&self) -> String {
        wallet_digest(&self.json)
    }
}

impl LinkRow {
    fn new(link: &Link, wallet: Option<WalletRow>) -> Result<LinkRow, StoreError> {
        let hash = |h: &str| {
            hash_bytes(h).ok_or_else(|| {
                StoreError::Unavailable("sqlite: a link hash is not 64 hex digits".into())
            })
        };
        let events = link
            .events
            .iter()
            .map(|e| {
                Ok(EventRow {
                    user_id: e.user_id.as_ref().map(|u| u.as_str().to_owned()),
                    binding_id: e.binding_id.as_ref().map(|b| b.as_str().to_owned()),
                    action: e.action.as_str(),
                    body: to_json(&EventRecord::from(e), "audit event")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(LinkRow {
            chain: chain_key(&link.chain).to_owned(),
            seq: int(link.seq, "link number")?,
            at: ms(link.at),
            prev_hash: hash(&link.prev_hash)?,
            hash: hash(&link.hash)?,
            wallet_digest: link.wallet_digest.as_deref().map(hash).transpose()?,
            pending: wallet.as_ref().is_some_and(|w| w.pending),
            wallet: wallet.map(|w| w.json),
            events,
        })
    }

    fn insert(&self, c: &Connection) -> Result<(), StoreError> {
        c.prepare_cached(INSERT_LINKS)
            .and_then(|mut s| {
                s.execute(params![
                    self.chain,
                    self.seq,
                    self.at,
                    self.prev_hash,
                    self.hash,
                    self.pending,
                    self.wallet,
                    self.wallet_digest
                ])
            })
            .map_err(db_err)?;
        let mut s = c.prepare_cached(INSERT_EVENTS).map_err(db_err)?;
        for (i, e) in self.events.iter().enumerate() {
            s.execute(params![
                self.at,
                self.chain,
                self.seq,
                i as i64,
                e.user_id,
                e.binding_id,
                e.action,
                e.body
            ])
            .map_err(db_err)?;
        }
        Ok(())
    }
}

/// The newest link of a chain: (seq, hash bytes, at).
fn head_row(c: &Connection, chain: &str) -> Result<Option<(i64, Vec<u8>, i64)>, StoreError> {
    c.prepare_cached(CHAIN_HEAD)
        .and_then(|mut s| {
            s.query_row([chain], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })
        .map_err(db_err)
}

fn head_of(seq: i64, hash: &[u8], at_ms: i64) -> Result<ChainHead, StoreError> {
    Ok(ChainHead {
        seq: uint(seq, "link number")?,
        hash: hash_hex(hash)?,
        at: at(at_ms),
    })
}

#[async_trait]
impl WalletStore for SqliteStore {
    async fn load(&self, user_id: &UserId) -> Result<Option<StoredWallet>, StoreError> {
        let row = self.engine.read(|c| {
            c.prepare_cached(LOAD_WALLET)
                .and_then(|mut s| {
                    s.query_row([user_id.as_str()], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, Vec<u8>>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, Option<Vec<u8>>>(3)?,
                        ))
                    })
                    .optional()
                })
                .map_err(db_err)
        })?;
        let Some((seq, hash, at_ms, wallet)) = row else {
            return Ok(None);
        };
        let wallet = wallet.ok_or_else(|| corrupt("a user's link holds no wallet"))?;
        let wallet = from_json::<WalletRecord>(&wallet, "wallet")?.into_domain()?;
        if wallet.user() != user_id {
            return Err(corrupt("a wallet is stored in another user's chain"));
        }
        Ok(Some(StoredWallet {
            wallet,
            head: head_of(seq, &hash, at_ms)?,
        }))
    }

    async fn load_many(&self, users: &[UserId]) -> Result<Vec<StoredWallet>, StoreError> {
        let mut names: Vec<&str> = users.iter().map(UserId::as_str).collect();
        names.sort_unstable();
        names.dedup();
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let arg =
            serde_json::to_string(&names).map_err(|e| corrupt(format!("user ids as JSON: {e}")))?;
        let rows = self.engine.read(|c| {
            let mut s = c.prepare_cached(LOAD_WALLETS).map_err(db_err)?;
            let rows = s
                .query_map([arg.as_str()], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, Option<Vec<u8>>>(4)?,
                    ))
                })
                .map_err(db_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
        })?;
        rows.into_iter()
            .map(|(chain, seq, hash, at_ms, wallet)| {
                let wallet = wallet.ok_or_else(|| corrupt("a user's link holds no wallet"))?;
                let wallet = from_json::<WalletRecord>(&wallet, "wallet")?.into_domain()?;
                if wallet.user().as_str() != chain {
                    return Err(corrupt("a wallet is stored in another user's chain"));
                }
                Ok(StoredWallet {
                    wallet,
                    head: head_of(seq, &hash, at_ms)?,
                })
            })
            .collect()
    }

    async fn commit(
        &self,
        wallet: &Wallet,
        after: Option<ChainHead>,
        events: Vec<AuditEvent>,
        now: Timestamp,
    ) -> Result<ChainHead, StoreError> {
        // The head named must be the newest link, byte for byte.
        let expected = match &after {
            None => None,
            Some(h) => match hash_bytes(&h.hash) {
                Some(bytes) => Some((int(h.seq, "link number")?, bytes)),
                None => return Err(StoreError::Conflict),
            },
        };
        let stored = WalletRow::new(wallet)?;
        let link = next_link(
            ChainId::User(wallet.user().clone()),
            after.as_ref(),
            now,
            events,
            Some(stored.digest()),
        );
        let row = LinkRow::new(&link, Some(stored))?;
        self.engine
            .write(move |tx| {
                let head = head_row(tx.conn, &row.chain)?;
                let current = head.map(|(seq, hash, _)| (seq, hash));
                if current != expected {
                    return Err(StoreError::Conflict);
                }
                row.insert(tx.conn)?;
                if let Some((seq, _)) = expected {
                    tx.conn
                        .prepare_cached(DROP_WALLET_COPY)
                        .and_then(|mut s| s.execute(params![row.chain, seq]))
                        .map_err(db_err)?;
                }
                Ok(())
            })
            .await?;
        Ok(link.head())
    }

    async fn pending_links(
        &self,
        from: Timestamp,
        to: Timestamp,
        after: Option<LinkKey>,
        limit: u32,
    ) -> Result<Vec<PendingLink>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (a_at, a_chain, a_seq) = match &after {
            Some(k) => (
                ms(k.at),
                k.user.as_str().to_owned(),
                int(k.seq, "link number")?,
            ),
            None => (i64::MIN, String::new(), i64::MIN),
        };
        let rows = self.engine.read(|c| {
            let mut s = c.prepare_cached(PENDING_LINKS).map_err(db_err)?;
            let rows = s
                .query_map(
                    params![a_at, a_chain, a_seq, ms(from), ms(to), i64::from(limit)],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                        ))
                    },
                )
                .map_err(db_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
        })?;
        rows.into_iter()
            .map(|(t, chain, seq)| {
                Ok(PendingLink {
                    key: LinkKey {
                        at: at(t),
                        user: user(&chain)?,
                        seq: uint(seq, "link number")?,
                    },
                })
            })
            .collect()
    }
}

/// The indexes [`AuditLog::list`] can be driven by.
#[derive(Clone, Copy)]
enum Driver {
    Binding,
    User,
    Action,
    Time,
}

impl Driver {
    fn pick(f: &AuditFilter) -> Driver {
        if f.binding_id.is_some() {
            Driver::Binding
        } else if f.user_id.is_some() {
            Driver::User
        } else if f.action.is_some() {
            Driver::Action
        } else {
            Driver::Time
        }
    }

    fn index(self) -> &'static str {
        match self {
            Driver::Binding => " INDEXED BY events_binding",
            Driver::User => " INDEXED BY events_user",
            Driver::Action => " INDEXED BY events_action",
            Driver::Time => "",
        }
    }
}

/// The statement of one [`AuditLog::list`] call and its parameters.
pub(crate) fn list_query(
    filter: &AuditFilter,
    after: Option<&AuditCursor>,
    limit: u32,
) -> Result<(String, Vec<Value>), StoreError> {
    let driver = Driver::pick(filter);
    let mut sql = format!(
        "SELECT e.at, e.chain, e.seq, e.idx, e.body, l.hash
         FROM events AS e{} CROSS JOIN links AS l
         ON l.chain = e.chain AND l.seq = e.seq
         WHERE 1",
        driver.index()
    );
    let mut args: Vec<Value> = Vec::new();
    let mut term = |sql: &mut String, t: &str, v: Value| {
        args.push(v);
        sql.push_str(&format!(" AND {t} ?{}", args.len()));
    };
    if let Some(b) = &filter.binding_id {
        term(
            &mut sql,
            "e.binding_id =",
            Value::Text(b.as_str().to_owned()),
        );
    }
    if let Some(u) = &filter.user_id {
        term(&mut sql, "e.user_id =", Value::Text(u.as_str().to_owned()));
    }
    if let Some(a) = filter.action {
        term(&mut sql, "e.action =", Value::Text(a.as_str().to_owned()));
    }
    // The lower bound: the cursor, unless `since` is after it.
    match (after, filter.since) {
        (Some(c), since) if since.is_none_or(|s| c.at >= s) => {
            let n = args.len();
            args.extend([
                Value::Integer(ms(c.at)),
                Value::Text(chain_key(&c.chain).to_owned()),
                Value::Integer(int(c.seq, "link number")?),
                Value::Integer(i64::from(c.index)),
            ]);
            sql.push_str(&format!(
                " AND (e.at, e.chain, e.seq, e.idx) > (?{}, ?{}, ?{}, ?{})",
                n + 1,
                n + 2,
                n + 3,
                n + 4
            ));
        }
        // Without a bound, from the first instant (a search, like the rest).
        (_, since) => {
            args.push(Value::Integer(since.map_or(i64::MIN, ms)));
            sql.push_str(&format!(" AND e.at >= ?{}", args.len()));
        }
    }
    if let Some(u) = filter.until {
        args.push(Value::Integer(ms(u)));
        sql.push_str(&format!(" AND e.at < ?{}", args.len()));
    }
    args.push(Value::Integer(i64::from(limit)));
    sql.push_str(&format!(
        " ORDER BY e.at, e.chain, e.seq, e.idx LIMIT ?{}",
        args.len()
    ));
    Ok((sql, args))
}

type EventRowOut = (i64, String, i64, i64, Vec<u8>, Vec<u8>);

fn read_events(
    c: &Connection,
    chain: &str,
    seq: i64,
    at_ms: i64,
) -> Result<(Vec<AuditEvent>, bool), StoreError> {
    type Row = (Vec<u8>, Option<String>, Option<String>, String);
    let mut s = c.prepare_cached(LINK_EVENTS).map_err(db_err)?;
    let rows = s
        .query_map(params![at_ms, chain, seq], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .map_err(db_err)?
        .collect::<Result<Vec<Row>, _>>()
        .map_err(db_err)?;
    // The hash covers the event, not the columns the audit listing
    // filters on: an edited column would move the event between the
    // listing's filters unseen.
    let mut listed_apart = false;
    let events = rows
        .into_iter()
        .map(|(body, user_id, binding_id, action)| {
            let e = from_json::<EventRecord>(&body, "audit event")?;
            listed_apart |=
                e.user_id != user_id || e.binding_id != binding_id || e.action != action;
            e.into_domain()
        })
        .collect::<Result<_, _>>()?;
    Ok((events, listed_apart))
}

/// A link as the audit walk reads it.
struct WalkRow {
    chain: String,
    seq: i64,
    at: i64,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
    wallet: Option<Vec<u8>>,
    wallet_digest: Option<Vec<u8>>,
    /// No later link in its chain: a link that covers a wallet keeps its
    /// copy while it is the newest (older ones drop it).
    newest: bool,
}

impl WalkRow {
    /// The link with its events, and what the file keeps beside it that
    /// does not agree with it ([`Link::stored_apart`]): a stored wallet
    /// that is not the one its digest names (edited in the file), a newest
    /// link that covers a wallet and holds none (deleted from the file),
    /// listing columns that are not its events'.
    fn link(self, c: &Connection) -> Result<Link, StoreError> {
        let digest = self.wallet_digest.as_deref().map(hash_hex).transpose()?;
        let (events, listed_apart) =
            read_events(c, &self.chain, self.seq, self.at).map_err(|e| match e {
                StoreError::Corrupt(m) => corrupt(format!(
                    "link {} of chain {}: {}",
                    self.seq,
                    self.chain,
                    m.strip_prefix("sqlite: ").unwrap_or(&m)
                )),
                other => other,
            })?;
        let stored_apart = match (&digest, &self.wallet) {
            (Some(d), Some(w)) if wallet_digest(w) != *d => Some(STORED_WALLET_ALTERED),
            (Some(_), None) if self.newest => Some(STORED_WALLET_MISSING),
            _ if listed_apart => Some(STORED_LISTING_ALTERED),
            _ => None,
        };
        Ok(Link {
            events,
            chain: chain_of(&self.chain)?,
            seq: uint(self.seq, "link number")?,
            at: at(self.at),
            wallet_digest: digest,
            prev_hash: hash_hex(&self.prev_hash)?,
            hash: hash_hex(&self.hash)?,
            stored_apart,
        })
    }
}

/// Links read per purge step.
const PURGE_STEP: i64 = 500;

#[async_trait]
impl AuditLog for SqliteStore {
    async fn append_system(
        &self,
        events: Vec<AuditEvent>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.engine
            .write(move |tx| {
                let head = head_row(tx.conn, ChainId::System.as_str())?
                    .map(|(seq, hash, t)| head_of(seq, &hash, t))
                    .transpose()?;
                let link = next_link(ChainId::System, head.as_ref(), now, events, None);
                LinkRow::new(&link, None)?.insert(tx.conn)
            })
            .await
    }

    async fn list(
        &self,
        filter: &AuditFilter,
        after: Option<AuditCursor>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (sql, args) = list_query(filter, after.as_ref(), limit)?;
        let rows: Vec<EventRowOut> = self.engine.read(|c| {
            let mut s = c.prepare_cached(&sql).map_err(db_err)?;
            let rows = s
                .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                })
                .map_err(db_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
        })?;
        rows.into_iter()
            .map(|(t, chain, seq, idx, body, hash)| {
                Ok(AuditRecord {
                    cursor: AuditCursor {
                        at: at(t),
                        chain: chain_of(&chain)?,
                        seq: uint(seq, "link number")?,
                        index: u32::try_from(idx)
                            .map_err(|_| corrupt("an event index is out of range"))?,
                    },
                    link_hash: hash_hex(&hash)?,
                    event: from_json::<EventRecord>(&body, "audit event")?.into_domain()?,
                })
            })
            .collect()
    }

    async fn links(
        &self,
        after: Option<(ChainId, u64)>,
        limit: u32,
    ) -> Result<Vec<Link>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (a_chain, a_seq) = match &after {
            Some((c, s)) => (chain_key(c).to_owned(), int(*s, "link number")?),
            None => (String::new(), i64::MIN),
        };
        self.engine.read_snapshot(|c| {
            let mut s = c.prepare_cached(WALK_LINKS).map_err(db_err)?;
            let heads = s
                .query_map(params![a_chain, a_seq, i64::from(limit)], |r| {
                    Ok(WalkRow {
                        chain: r.get(0)?,
                        seq: r.get(1)?,
                        at: r.get(2)?,
                        prev_hash: r.get(3)?,
                        hash: r.get(4)?,
                        wallet: r.get(5)?,
                        wallet_digest: r.get(6)?,
                        newest: r.get(7)?,
                    })
                })
                .map_err(db_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db_err)?;
            heads.into_iter().map(|row| row.link(c)).collect()
        })
    }

    async fn link_stamps(
        &self,
        since: Timestamp,
        until: Timestamp,
        after: Option<(Timestamp, ChainId, u64)>,
        limit: u32,
    ) -> Result<Vec<LinkStamp>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::from(limit);
        let (sql, args): (&str, Vec<Value>) = match &after {
            // A cursor before the window starts the listing at the window.
            Some((t, c, s)) if *t >= since => (
                LINK_STAMPS_AFTER,
                vec![
                    Value::Integer(ms(*t)),
                    Value::Text(chain_key(c).to_owned()),
                    Value::Integer(int(*s, "link number")?),
                    Value::Integer(ms(until)),
                    Value::Integer(limit),
                ],
            ),
            _ => (
                LINK_STAMPS_FROM,
                vec![
                    Value::Integer(ms(since)),
                    Value::Integer(ms(until)),
                    Value::Integer(limit),
                ],
            ),
        };
        let rows = self.engine.read(|c| {
            let mut s = c.prepare_cached(sql).map_err(db_err)?;
            let rows = s
                .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, bool>(3)?,
                        r.get::<_, Vec<u8>>(4)?,
                    ))
                })
                .map_err(db_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
        })?;
        rows.into_iter()
            .map(|(t, chain, seq, anchors_only, hash)| {
                Ok(LinkStamp {
                    at: at(t),
                    chain: chain_of(&chain)?,
                    seq: uint(seq, "link number")?,
                    hash: hash_hex(&hash)?,
                    anchors_only,
                })
            })
            .collect()
    }

    async fn purge_before(&self, before: Timestamp) -> Result<u64, StoreError> {
        let before = ms(before);
        let mut cursor = (i64::MIN, i64::MIN);
        let mut total = 0;
        loop {
            // Found on a reader (the walk passes every chain's kept last
            // link); only the deletions go to the writer. A link with a
            // later one in its chain keeps having one: purges never delete
            // a chain's last link.
            let found = self.engine.read(|c| {
                let mut s = c.prepare_cached(PURGE_FIND).map_err(db_err)?;
                let rows = s
                    .query_map(params![before, cursor.0, cursor.1, PURGE_STEP], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, bool>(4)?,
                        ))
                    })
                    .map_err(db_err)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
            })?;
            let Some(last) = found.last() else { break };
            cursor = (last.1, last.0);
            let done = (found.len() as i64) < PURGE_STEP;
            let doomed: Vec<(i64, i64, String, i64)> = found
                .into_iter()
                .filter(|r| r.4)
                .map(|(rowid, t, chain, seq, _)| (rowid, t, chain, seq))
                .collect();
            if !doomed.is_empty() {
                total += self
                    .engine
                    .write(move |tx| {
                        let mut links = tx.conn.prepare_cached(PURGE_LINK).map_err(db_err)?;
                        let mut events =
                            tx.conn.prepare_cached(PURGE_LINK_EVENTS).map_err(db_err)?;
                        let mut n = 0u64;
                        for (rowid, t, chain, seq) in &doomed {
                            let gone = links.execute(params![rowid, chain, seq]).map_err(db_err)?;
                            if gone > 0 {
                                events.execute(params![t, chain, seq]).map_err(db_err)?;
                                n += gone as u64;
                            }
                        }
                        tx.after.vacuum |= n > 0;
                        Ok(n)
                    })
                    .await?;
            }
            if done {
                break;
            }
        }
        Ok(total)
    }
}
