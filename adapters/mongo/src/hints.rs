//! What one process remembers to spare round trips: the heads of chains
//! it read or wrote, the attempts of idempotency keys it holds, the next
//! free slot of rate windows it took. Each is a guess that the write using
//! it checks (a wrong one loses its insert, and the caller reads), so none
//! is state another instance needs. `MongoStore` holds them; the modules
//! that use them (`wallets`, `idempotency`, `rates`) find them here.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cardbind_ports::audit::ChainHead;

use crate::docs::IdemDoc;

/// How long a remembered head of the service's chain is trusted without
/// reading it again: far below any retention (a purge never deletes the
/// newest link, so a head older than the retention is the only one that
/// could name a purged successor).
const SYSTEM_HEAD_TTL: Duration = Duration::from_secs(60);

/// How long a head this process read or wrote is remembered as having
/// existed (far below any retention, as above).
const KNOWN_HEAD_TTL: Duration = Duration::from_secs(600);
/// At most this many remembered heads (then all are forgotten).
const KNOWN_HEADS_MAX: usize = 100_000;

/// The head of the service's chain as this process last wrote it.
#[derive(Debug, Default)]
pub(crate) struct SystemHead {
    pub(crate) known: Option<(ChainHead, Instant)>,
}

impl SystemHead {
    pub(crate) fn fresh(&self) -> Option<ChainHead> {
        self.known
            .as_ref()
            .filter(|(_, at)| at.elapsed() < SYSTEM_HEAD_TTL)
            .map(|(h, _)| h.clone())
    }
}

/// Heads this process read (`load`) or wrote (`commit`): a commit after
/// one of them needs no read, since the head certainly existed — either
/// it is still the newest and the insert lands, or its successor exists
/// and the insert collides. A commit after any other head (one that may
/// never have existed) reads the newest link first.
#[derive(Debug, Default)]
pub(crate) struct KnownHeads {
    heads: HashMap<(String, u64), (String, Instant)>,
}

impl KnownHeads {
    pub(crate) fn remember(&mut self, chain: &str, head: &ChainHead) {
        if self.heads.len() >= KNOWN_HEADS_MAX {
            self.heads.clear();
        }
        self.heads.insert(
            (chain.to_owned(), head.seq),
            (head.hash.clone(), Instant::now()),
        );
    }

    pub(crate) fn knows(&self, chain: &str, head: &ChainHead) -> bool {
        self.heads
            .get(&(chain.to_owned(), head.seq))
            .is_some_and(|(hash, at)| *hash == head.hash && at.elapsed() < KNOWN_HEAD_TTL)
    }
}

/// A remembered record is trusted this long (far below the retention of
/// at least a day, so it can never name a purged key).
const HELD_TTL: Duration = Duration::from_secs(3600);
/// At most this many remembered attempts (then all are forgotten).
const HELD_MAX: usize = 100_000;

#[derive(Clone, Debug)]
pub(crate) struct Held {
    pub(crate) seq: i64,
    pub(crate) request_hash: String,
    pub(crate) created_at: i64,
    pub(crate) lease_until: i64,
    pub(crate) remembered: Instant,
}

/// The newest record of each attempt this process holds, so that renew,
/// complete and release insert the next record without reading first. A
/// guess only: a wrong one loses its insert, and the caller reads.
#[derive(Debug, Default)]
pub(crate) struct HeldAttempts {
    map: HashMap<(String, String, i64), Held>,
}

impl HeldAttempts {
    pub(crate) fn get(&mut self, scope: &str, key: &str, attempt: i64) -> Option<Held> {
        let k = (scope.to_owned(), key.to_owned(), attempt);
        match self.map.get(&k) {
            Some(h) if h.remembered.elapsed() < HELD_TTL => Some(h.clone()),
            Some(_) => {
                self.map.remove(&k);
                None
            }
            None => None,
        }
    }

    pub(crate) fn put(&mut self, d: &IdemDoc) {
        if self.map.len() >= HELD_MAX {
            self.map.clear();
        }
        self.map.insert(
            (d.scope.clone(), d.key.clone(), d.attempt),
            Held {
                seq: d.seq,
                request_hash: d.request_hash.clone(),
                created_at: d.created_at,
                lease_until: d.lease_until,
                remembered: Instant::now(),
            },
        );
    }

    pub(crate) fn forget(&mut self, scope: &str, key: &str, attempt: i64) {
        self.map
            .remove(&(scope.to_owned(), key.to_owned(), attempt));
    }
}

/// At most this many windows remembered (then all are forgotten).
const HINTS_MAX: usize = 100_000;

/// The slot after the last one this process took in each window: where
/// its next take tries first, so that a window taken again and again from
/// one instance costs one insert per take. A guess only: a taken slot
/// loses its insert, and the take reads.
#[derive(Debug, Default)]
pub(crate) struct RateHints {
    next: HashMap<String, (i64, i64)>,
}

impl RateHints {
    pub(crate) fn next_slot(&self, key: &str, expires_at: i64) -> i64 {
        match self.next.get(key) {
            Some((next, exp)) if *exp == expires_at => *next,
            _ => 1,
        }
    }

    /// A slot this process took and gave back is where it tries next.
    pub(crate) fn given_back(&mut self, key: &str, expires_at: i64, slot: i64) {
        if let Some(e) = self.next.get_mut(key) {
            if e.1 == expires_at {
                e.0 = e.0.min(slot);
            }
        }
    }

    pub(crate) fn taken(&mut self, key: &str, expires_at: i64, slot: i64) {
        if self.next.len() >= HINTS_MAX {
            self.next.clear();
        }
        let e = self.next.entry(key.to_owned()).or_insert((1, expires_at));
        if e.1 != expires_at {
            *e = (1, expires_at);
        }
        e.0 = e.0.max(slot + 1);
    }
}
