//! The audit log port and its hash chain.
//!
//! Every state change and every opening of sealed card data is an
//! [`AuditEvent`]. Stored events form a chain: each record holds the hash of
//! the one before, computed by [`chain_hash`], so an edited or deleted event
//! breaks every link after it. Events never hold card data.

use async_trait::async_trait;
use cardbind_domain::Timestamp;
use sha2::{Digest, Sha256};

use crate::error::StoreError;

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AuditEvent {
    pub at: Timestamp,
    /// Who: token subject, or `system`/`channel:NAME`.
    pub actor: String,
    pub role: String,
    /// What, e.g. `binding.create`, `binding.freeze`, `card_data.open`.
    pub action: String,
    pub user_id: Option<String>,
    pub binding_id: Option<String>,
    /// `ok` or an error code.
    pub outcome: String,
    pub request_id: Option<String>,
    pub client_ip: Option<String>,
    /// Free text without card data (e.g. `active -> frozen`).
    pub detail: Option<String>,
}

/// A stored event: its position in the chain and the links.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    /// 1, 2, 3, … with no gaps.
    pub seq: u64,
    pub event: AuditEvent,
    pub prev_hash: String,
    pub hash: String,
}

/// The hash of the genesis link.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// SHA-256 (hex) over the previous hash, the sequence number and every
/// field of the event, each length-prefixed so that no two events share an
/// encoding.
pub fn chain_hash(prev_hash: &str, seq: u64, e: &AuditEvent) -> String {
    let mut h = Sha256::new();
    let mut put = |s: &str| {
        h.update((s.len() as u64).to_be_bytes());
        h.update(s.as_bytes());
    };
    put(prev_hash);
    put(&seq.to_string());
    put(&e.at.unix_millis().to_string());
    put(&e.actor);
    put(&e.role);
    put(&e.action);
    for o in [&e.user_id, &e.binding_id] {
        put(o.as_deref().unwrap_or("\u{0}"));
    }
    put(&e.outcome);
    for o in [&e.request_id, &e.client_ip, &e.detail] {
        put(o.as_deref().unwrap_or("\u{0}"));
    }
    hex::encode(h.finalize())
}

/// The first broken link in `records` (ordered by seq), if any: a record
/// whose hash is wrong, whose `prev_hash` is not its predecessor's hash, or
/// a gap in `seq`. The first record's `prev_hash` is taken as given (older
/// records may have been purged by retention).
pub fn verify_chain<'a>(
    records: impl IntoIterator<Item = &'a AuditRecord>,
) -> Result<u64, ChainBreak> {
    let mut prev: Option<&AuditRecord> = None;
    let mut n = 0;
    for r in records {
        if let Some(p) = prev {
            if r.seq != p.seq + 1 {
                return Err(ChainBreak {
                    seq: p.seq + 1,
                    reason: "missing event",
                });
            }
            if r.prev_hash != p.hash {
                return Err(ChainBreak {
                    seq: r.seq,
                    reason: "link to previous event broken",
                });
            }
        }
        if chain_hash(&r.prev_hash, r.seq, &r.event) != r.hash {
            return Err(ChainBreak {
                seq: r.seq,
                reason: "event altered",
            });
        }
        prev = Some(r);
        n += 1;
    }
    Ok(n)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainBreak {
    pub seq: u64,
    pub reason: &'static str,
}

/// Filters for reading the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub user_id: Option<String>,
    pub binding_id: Option<String>,
    pub action: Option<String>,
    /// Events at or after this instant (inclusive).
    pub since: Option<Timestamp>,
    /// Events before this instant (exclusive).
    pub until: Option<Timestamp>,
}

/// The append-only audit log.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Appends `event` as the next link of the chain. MUST NOT lose or fork
    /// the chain under concurrent appends from many instances: every
    /// appended event gets the next `seq` and the previous record's hash.
    async fn append(&self, event: AuditEvent) -> Result<AuditRecord, StoreError>;

    /// Records matching `filter`, ordered by seq ascending, with seq greater
    /// than `after_seq`, at most `limit`.
    async fn list(
        &self,
        filter: &AuditFilter,
        after_seq: Option<u64>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError>;

    /// Deletes records older than `before`. Returns how many. Numbering
    /// goes on after a purge: the next event gets the next `seq` and links
    /// to the hash of the last event appended, even if that one was purged.
    async fn purge_before(&self, before: Timestamp) -> Result<u64, StoreError>;
}
