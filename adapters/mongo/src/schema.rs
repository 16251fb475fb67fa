//! The one table of what this adapter keeps: every collection, its shard
//! key, its indexes, and the port methods that may read it without the
//! shard key (background and admin walks). [`MongoStore::ensure_indexes`]
//! creates exactly these indexes, and the query check of
//! [`CommandLog`](crate::CommandLog) holds every command the adapter sends
//! against them.
//!
//! [`MongoStore::ensure_indexes`]: crate::MongoStore::ensure_indexes

/// One index: its name, its keys in order with their directions, and
/// whether it is unique.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexSpec {
    pub name: &'static str,
    pub keys: &'static [(&'static str, i32)],
    pub unique: bool,
    /// Why it exists (the queries it serves, or the rule it enforces).
    pub serves: &'static str,
}

/// One collection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CollectionSpec {
    pub name: &'static str,
    /// The fields of the shard key (ranged) on a sharded cluster. Every
    /// request-path filter names all of them by equality, so that a
    /// request is routed to one shard; every unique index starts with them
    /// (MongoDB's rule for unique indexes of a sharded collection).
    pub shard_key: &'static [&'static str],
    pub indexes: &'static [IndexSpec],
    /// Labels of the port methods that may query this collection without
    /// the shard key: walks across users (admin listings, the
    /// reconciler's scan, retention purges), and the end of a card's
    /// channel references (one indexed delete per shard, once per card
    /// ended); never a client's reads or a bind.
    pub scans: &'static [&'static str],
    /// What removes its documents.
    pub removed_by: &'static str,
}

/// Collection names.
pub mod collections {
    pub const LINKS: &str = "links";
    pub const CARD_DATA: &str = "card_data";
    pub const CHANNEL_REFS: &str = "channel_refs";
    pub const IDEMPOTENCY: &str = "idempotency";
    pub const RATE_SLOTS: &str = "rate_slots";
    pub const SEEN_IDS: &str = "seen_ids";
    pub const DATA_KEYS: &str = "data_keys";
    pub const REVIEW_QUEUE: &str = "review_queue";
}

/// The labels (MongoDB `comment`s) of the port methods. Every command the
/// adapter sends carries one, so the server's logs and profiler, and a
/// [`CommandLog`](crate::CommandLog), tell which port method sent it.
pub mod labels {
    pub const WALLETS_LOAD: &str = "wallets.load";
    pub const WALLETS_LOAD_MANY: &str = "wallets.load_many";
    pub const WALLETS_COMMIT: &str = "wallets.commit";
    pub const WALLETS_PENDING_LINKS: &str = "wallets.pending_links";
    pub const AUDIT_APPEND_SYSTEM: &str = "audit.append_system";
    pub const AUDIT_LIST: &str = "audit.list";
    pub const AUDIT_LINKS: &str = "audit.links";
    pub const AUDIT_PURGE_BEFORE: &str = "audit.purge_before";
    pub const AUDIT_LINK_STAMPS: &str = "audit.link_stamps";
    pub const CARD_DATA_PUT: &str = "card_data.put";
    pub const CARD_DATA_GET: &str = "card_data.get";
    pub const CARD_DATA_OWNER: &str = "card_data.owner";
    pub const CARD_DATA_DELETE: &str = "card_data.delete";
    pub const CARD_DATA_DELETE_GENERATION: &str = "card_data.delete_generation";
    pub const CARD_DATA_LIST_KEYS: &str = "card_data.list_keys";
    pub const CHANNEL_REFS_PUT: &str = "channel_refs.put";
    pub const CHANNEL_REFS_FIND: &str = "channel_refs.find";
    pub const CHANNEL_REFS_DELETE_BINDING: &str = "channel_refs.delete_binding";
    pub const CHANNEL_REFS_LIST: &str = "channel_refs.list";
    pub const CHANNEL_REFS_DELETE_ENTRY: &str = "channel_refs.delete_entry";
    pub const IDEM_CLAIM: &str = "idempotency.claim";
    pub const IDEM_RENEW: &str = "idempotency.renew";
    pub const IDEM_COMPLETE: &str = "idempotency.complete";
    pub const IDEM_RELEASE: &str = "idempotency.release";
    pub const IDEM_PURGE: &str = "idempotency.purge_created_before";
    pub const RATES_TAKE: &str = "rates.take";
    pub const RATES_GIVE_BACK: &str = "rates.give_back";
    pub const RATES_PURGE: &str = "rates.purge_expired";
    pub const SEEN_SEEN: &str = "seen.seen";
    pub const SEEN_MARK: &str = "seen.mark";
    pub const SEEN_PURGE: &str = "seen.purge_expired";
    pub const KEYS_GET: &str = "data_keys.get";
    pub const KEYS_PUT: &str = "data_keys.put_if_absent";
    pub const KEYS_REPLACE: &str = "data_keys.replace";
    pub const KEYS_DELETE: &str = "data_keys.delete";
    pub const KEYS_LIST: &str = "data_keys.list";
    pub const REVIEW_ADD: &str = "review.add";
    pub const REVIEW_GET: &str = "review.get";
    pub const REVIEW_REMOVE: &str = "review.remove";
    pub const REVIEW_LIST: &str = "review.list";
    pub const BIN_TABLE_HEAD: &str = "bin_table.head";
    pub const BIN_TABLE_CHUNK: &str = "bin_table.chunk";
    pub const BIN_TABLE_WRITE_CHUNKS: &str = "bin_table.write_chunks";
    pub const BIN_TABLE_COMMIT: &str = "bin_table.commit";
    pub const BIN_TABLE_RECENT: &str = "bin_table.recent_versions";
    pub const BIN_TABLE_TIDY: &str = "bin_table.tidy_chunks";
    pub const ENSURE_INDEXES: &str = "ensure_indexes";
    pub const PING: &str = "ping";
}

use labels::*;

const fn ix(
    name: &'static str,
    keys: &'static [(&'static str, i32)],
    unique: bool,
    serves: &'static str,
) -> IndexSpec {
    IndexSpec {
        name,
        keys,
        unique,
        serves,
    }
}

/// Every collection of the adapter.
pub const SCHEMA: &[CollectionSpec] = &[
    CollectionSpec {
        name: collections::LINKS,
        shard_key: &["chain"],
        indexes: &[
            ix(
                "chain_seq",
                &[("chain", 1), ("seq", 1)],
                true,
                "the commit point (one link per number), load and load_many (newest link of each chain), the chain walk, purge per chain",
            ),
            ix(
                "at_chain_seq",
                &[("at", 1), ("chain", 1), ("seq", 1)],
                false,
                "audit listing in time order (and since/until), purge candidates, the links of an anchored window",
            ),
            ix(
                "users_at",
                &[("users", 1), ("at", 1), ("chain", 1), ("seq", 1)],
                false,
                "audit listing by user",
            ),
            ix(
                "bindings_at",
                &[("bindings", 1), ("at", 1), ("chain", 1), ("seq", 1)],
                false,
                "audit listing by card",
            ),
            ix(
                "actions_at",
                &[("actions", 1), ("at", 1), ("chain", 1), ("seq", 1)],
                false,
                "audit listing by action",
            ),
            ix(
                "pending_at",
                &[("pending", 1), ("at", 1), ("chain", 1), ("seq", 1)],
                false,
                "the reconciler's scan of links with a card pending verification",
            ),
        ],
        scans: &[
            AUDIT_LIST,
            AUDIT_LINKS,
            AUDIT_PURGE_BEFORE,
            AUDIT_LINK_STAMPS,
            WALLETS_PENDING_LINKS,
        ],
        removed_by: "the audit retention purge (links older than the retention, never the newest of a chain)",
    },
    CollectionSpec {
        name: collections::CARD_DATA,
        shard_key: &["binding"],
        indexes: &[ix(
            "binding_generation",
            &[("binding", 1), ("generation", 1)],
            true,
            "the commit point (one record per binding and generation), get, owner, delete",
        )],
        scans: &[CARD_DATA_LIST_KEYS],
        removed_by: "the use cases: `delete_generation` of a bind's data when its card leaves the statuses that keep data (unbound, failed, rejected in review), and of the bind before's by the next bind of the card; `delete` of every generation at the user's erasure and when an old ended card leaves its wallet; the operator's sweep (`list_keys`, a walk of every document) deletes any generation no card holds",
    },
    CollectionSpec {
        name: collections::CHANNEL_REFS,
        shard_key: &["channel", "channel_ref"],
        indexes: &[
            ix(
                "channel_ref",
                &[("channel", 1), ("channel_ref", 1)],
                true,
                "one target per reference (the first stays), find, delete",
            ),
            ix(
                "binding",
                &[("binding", 1), ("user", 1)],
                false,
                "delete_binding: every reference of a card at once",
            ),
        ],
        scans: &[CHANNEL_REFS_DELETE_BINDING, CHANNEL_REFS_LIST],
        removed_by: "the use cases: `delete_binding` of the references a bind recorded (its start's, and the agreement a signing named) when its card is unbound (by the user or the channel) and those of the bind before when the card is bound again, and of every reference of a card at the user's erasure and when an old ended card leaves its wallet (a failed card's references stay until then); `delete` of an unwanted agreement's; the operator's sweep (`list`, a walk of every document) deletes any reference no card holds",
    },
    CollectionSpec {
        name: collections::IDEMPOTENCY,
        shard_key: &["scope", "key"],
        indexes: &[
            ix(
                "scope_key_seq",
                &[("scope", 1), ("key", 1), ("seq", 1)],
                true,
                "the commit point of every state change of a key, the newest record",
            ),
            ix(
                "created_at",
                &[("created_at", 1), ("_id", 1)],
                false,
                "the retention purge (candidates in order, paged)",
            ),
        ],
        scans: &[IDEM_PURGE],
        removed_by: "the idempotency retention purge (a key's records once its newest attempt is older than the retention)",
    },
    CollectionSpec {
        name: collections::RATE_SLOTS,
        shard_key: &["key"],
        indexes: &[
            ix(
                "key_slot",
                &[("key", 1), ("slot", 1)],
                true,
                "the commit point (at most `limit` slots per window), the slots of a window",
            ),
            ix(
                "expires_at",
                &[("expires_at", 1)],
                false,
                "the purge of expired windows",
            ),
        ],
        scans: &[RATES_PURGE],
        removed_by: "the purge of expired windows (a take also clears expired slots of the window it collides in)",
    },
    CollectionSpec {
        name: collections::SEEN_IDS,
        shard_key: &["ns", "id"],
        indexes: &[
            ix(
                "ns_id",
                &[("ns", 1), ("id", 1)],
                true,
                "the commit point (one live record per id), seen",
            ),
            ix(
                "expires_at",
                &[("expires_at", 1)],
                false,
                "the purge of expired ids",
            ),
        ],
        scans: &[SEEN_PURGE],
        removed_by: "the purge of expired ids (a mark also replaces the expired record of its id)",
    },
    CollectionSpec {
        name: collections::DATA_KEYS,
        shard_key: &["owner"],
        indexes: &[ix(
            "owner_seq",
            &[("owner", 1), ("seq", -1)],
            true,
            "the commit point of every change of an owner's key, the newest link, the listing by owner",
        )],
        scans: &[KEYS_LIST],
        removed_by: "nothing: key material is removed (husked) in place by `replace` and `delete`; the husks keep the numbers taken",
    },
    CollectionSpec {
        name: collections::REVIEW_QUEUE,
        shard_key: &["binding"],
        indexes: &[ix(
            "binding",
            &[("binding", 1)],
            true,
            "one entry per card (a later stint in review replaces an earlier one), add, get, remove, the listing by card",
        )],
        scans: &[REVIEW_LIST],
        removed_by: "the use cases: `remove` when the card leaves review",
    },
];

/// The table entry of a collection.
pub fn collection(name: &str) -> Option<&'static CollectionSpec> {
    SCHEMA.iter().find(|c| c.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unique_index_starts_with_the_shard_key() {
        for c in SCHEMA {
            assert!(!c.shard_key.is_empty(), "{}", c.name);
            for i in c.indexes.iter().filter(|i| i.unique) {
                let prefix: Vec<&str> =
                    i.keys.iter().take(c.shard_key.len()).map(|k| k.0).collect();
                assert_eq!(prefix, c.shard_key, "{}.{}", c.name, i.name);
            }
            // The shard key itself is served by an index (MongoDB needs one).
            assert!(
                c.indexes.iter().any(|i| i
                    .keys
                    .iter()
                    .map(|k| k.0)
                    .take(c.shard_key.len())
                    .eq(c.shard_key.iter().copied())),
                "{}",
                c.name
            );
        }
    }
}
