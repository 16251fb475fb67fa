//! The documents of each collection. The wallet and audit-event shapes are
//! the shared records of `cardbind-records`; the rest are this adapter's.
//! Nothing here leaves the crate. Instants are `i64` milliseconds and
//! counters `i64` (BSON has no unsigned 64-bit integer); every document
//! gets the driver's `ObjectId` as `_id` (unique keys are secondary unique
//! indexes that start with the shard key, see `schema.rs`).

use cardbind_domain::{SealedBlob, SealedCard};
use cardbind_records::{EventRecord, WalletRecord};
use mongodb::bson::oid::ObjectId;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::Binary;
use serde::{Deserialize, Serialize};

pub(crate) fn bin(bytes: &[u8]) -> Binary {
    Binary {
        subtype: BinarySubtype::Generic,
        bytes: bytes.to_vec(),
    }
}

/// One link of a chain: a user's wallet as of one change with the audit
/// events of that change, or a link of the service's own chain (no
/// wallet).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct LinkDoc {
    /// The user id, or `@system`.
    pub chain: String,
    pub seq: i64,
    pub at: i64,
    pub prev_hash: String,
    pub hash: String,
    pub events: Vec<EventRecord>,
    /// The distinct user ids, binding ids and actions of `events`, for the
    /// audit listing's indexes.
    pub users: Vec<String>,
    pub bindings: Vec<String>,
    pub actions: Vec<String>,
    pub wallet: Option<WalletRecord>,
    /// The digest of `wallet` the hash covers (`cardbind_records::
    /// wallet_digest` of its JSON); absent on the service's chain and in
    /// links written before wallets were covered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wallet_digest: Option<String>,
    /// Whether `wallet` holds a card awaiting settlement
    /// (`pending_verification` or `pending_review`).
    pub pending: bool,
    /// Set on a link whose wallet gave family shares, and cleared on the
    /// older links of its chain after each such insert: the newest link of
    /// a primary's chain always has it (a wallet that gave a share keeps
    /// one), which is what `load_many` finds in one query. Absent (false)
    /// on every other link.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub primary_head: bool,
}

/// What an anchor reads of a link (`link_stamps`): no events, no wallet.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct StampDoc {
    pub chain: String,
    pub seq: i64,
    pub at: i64,
    pub hash: String,
    pub actions: Vec<String>,
}

/// What `load` reads of the newest link.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct HeadDoc {
    pub seq: i64,
    pub at: i64,
    pub hash: String,
    pub wallet: Option<WalletRecord>,
}

/// A link `load_many` reads: its chain and what `load` reads.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct ChainHeadDoc {
    pub chain: String,
    pub seq: i64,
    pub at: i64,
    pub hash: String,
    pub wallet: Option<WalletRecord>,
}

/// Where a link sits.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct LinkKeyDoc {
    pub chain: String,
    pub seq: i64,
    pub at: i64,
}

/// Sealed card fields, as opaque binary. The CVV is never among them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SealedDoc {
    pub pan: Binary,
    pub holder_name: Binary,
    pub id_number: Binary,
    pub phone: Binary,
}

impl From<&SealedCard> for SealedDoc {
    fn from(s: &SealedCard) -> Self {
        SealedDoc {
            pan: bin(s.pan.as_bytes()),
            holder_name: bin(s.holder_name.as_bytes()),
            id_number: bin(s.id_number.as_bytes()),
            phone: bin(s.phone.as_bytes()),
        }
    }
}

impl From<SealedDoc> for SealedCard {
    fn from(s: SealedDoc) -> Self {
        SealedCard {
            pan: SealedBlob::new(s.pan.bytes),
            holder_name: SealedBlob::new(s.holder_name.bytes),
            id_number: SealedBlob::new(s.id_number.bytes),
            phone: SealedBlob::new(s.phone.bytes),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct CardDataDoc {
    pub binding: String,
    pub generation: i64,
    pub user: String,
    pub sealed: SealedDoc,
}

/// A card data document's key (the sweep reads no sealed field).
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct CardDataKeyDoc {
    pub binding: String,
    pub generation: i64,
    pub user: String,
}

#[derive(Clone, Debug, Deserialize)]
pub(crate) struct OwnerDoc {
    pub user: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ChannelRefDoc {
    pub channel: String,
    pub channel_ref: String,
    pub user: String,
    pub binding: String,
    /// The data generation of the bind that recorded it; absent in
    /// documents written before references carried one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ResponseDoc {
    pub status: i32,
    pub content_type: String,
    pub body: Binary,
}

/// One state change of an idempotency key (see `idempotency.rs`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct IdemDoc {
    pub scope: String,
    pub key: String,
    /// 1, 2, 3, … per key: the commit point of this change.
    pub seq: i64,
    /// The attempt this record belongs to (the fencing token).
    pub attempt: i64,
    /// `claim`, `renew`, `complete` or `release`.
    pub kind: String,
    pub request_hash: String,
    /// When this record's attempt was claimed (copied to its later
    /// records).
    pub created_at: i64,
    pub lease_until: i64,
    pub response: Option<ResponseDoc>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct RateDoc {
    pub key: String,
    pub slot: i64,
    pub expires_at: i64,
}

#[derive(Clone, Debug, Deserialize)]
pub(crate) struct RateRead {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub key: String,
    pub slot: i64,
    pub expires_at: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SeenDoc {
    pub ns: String,
    pub id: String,
    pub expires_at: i64,
}

#[derive(Clone, Debug, Deserialize)]
pub(crate) struct SeenRead {
    #[serde(rename = "_id")]
    pub oid: ObjectId,
    pub expires_at: i64,
}

/// One link of an owner's data-key chain: a key version, a tombstone (the
/// key was erased), or a husk (a superseded link whose key material was
/// removed).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct KeyLinkDoc {
    pub owner: String,
    pub seq: i64,
    /// `key`, `tombstone` or `husk`.
    pub state: String,
    pub version: i64,
    pub master_key_id: String,
    pub wrapped: Binary,
    pub created_at: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ReviewDoc {
    pub binding: String,
    pub user: String,
    pub since: i64,
    /// The link of the change that queued the card; absent (0) in entries
    /// of older versions.
    #[serde(default)]
    pub link: i64,
}
