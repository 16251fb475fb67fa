//! # cardbind-mongo
//!
//! Every storage port of `cardbind-ports` — [`WalletStore`], [`AuditLog`],
//! [`CardDataStore`], [`ChannelRefs`], [`IdempotencyStore`],
//! [`RateLimiter`], [`SeenIds`], [`DataKeyStore`], [`ReviewQueue`] — on one
//! MongoDB database, as one [`MongoStore`]. Tested on FerretDB v1.24.2
//! (SQLite handler); written to be equally correct on a MongoDB replica
//! set or sharded cluster. `docs/storage.md` has the same design for
//! operators, with the round trips of every method.
//!
//! ```ignore
//! let store = MongoStore::connect("mongodb://127.0.0.1:27017/?w=majority", "cardbind", Duration::from_secs(5)).await?;
//! store.ensure_indexes().await?;              // at start-up, on every instance
//! let ports = Arc::new(store);                // hand out as Arc<dyn Port>
//! // background job: store.purge(now, now - idem_retention, now - audit_retention)
//! ```
//!
//! [`WalletStore`]: cardbind_ports::store::WalletStore
//! [`AuditLog`]: cardbind_ports::audit::AuditLog
//! [`CardDataStore`]: cardbind_ports::store::CardDataStore
//! [`ChannelRefs`]: cardbind_ports::store::ChannelRefs
//! [`IdempotencyStore`]: cardbind_ports::store::IdempotencyStore
//! [`RateLimiter`]: cardbind_ports::store::RateLimiter
//! [`SeenIds`]: cardbind_ports::store::SeenIds
//! [`DataKeyStore`]: cardbind_ports::store::DataKeyStore
//! [`ReviewQueue`]: cardbind_ports::store::ReviewQueue
//!
//! ## The one atomic primitive: an insert under a unique index
//! On MongoDB a filtered update or `findAndModify` is atomic on its
//! document. **FerretDB 1.x does not give that**: it runs an update as
//! "query the matching documents, apply the operators in Go, write each
//! back by `_id`", and nothing ties the write to the read. Measured on
//! FerretDB 1.24.2: 8 writers × 20 rounds of compare-and-set
//! (`update_one({_id, v: n}, {$set: {v: n+1}})`) gave 58 winners instead
//! of 20; 50 parallel `$inc`s returned 16 distinct counts. It has no
//! transactions, no TTL or partial indexes, and `findAndModify` takes no
//! projection. What it does make atomic is a unique index: SQLite enforces
//! it, so of concurrent inserts of one key exactly one succeeds and the
//! others get duplicate key (11000).
//!
//! So **every exclusive write here is an insert under a unique key**, and
//! every other write is idempotent (deletes by key, and the husking of
//! superseded data-key links, which only removes). No document is updated
//! by a compare-and-set. The unique key of each record:
//!
//! | port | collection | commit point (unique key) |
//! |---|---|---|
//! | `WalletStore::commit` | `links` | (`chain`, `seq`): one link after each link |
//! | `AuditLog::append_system` | `links` | (`@system`, `seq`), retried after a lost race |
//! | `CardDataStore::put` | `card_data` | (`binding`, `generation`) |
//! | `ChannelRefs::put` | `channel_refs` | (`channel`, `channel_ref`): the first target stays |
//! | `IdempotencyStore` | `idempotency` | (`scope`, `key`, `seq`): every state change of a key |
//! | `RateLimiter::take` | `rate_slots` | (`key`, `slot`), slot ∈ 1..=limit |
//! | `SeenIds::mark` | `seen_ids` | (`ns`, `id`) |
//! | `DataKeyStore` | `data_keys` | (`owner`, `seq`): key versions and tombstones |
//! | `ReviewQueue::add` | `review_queue` | `binding`: the first entry of a stint in review stays, a later stint's replaces it |
//!
//! The table of collections, shard keys and indexes is [`schema::SCHEMA`];
//! [`MongoStore::ensure_indexes`] creates exactly those indexes, one
//! `createIndexes` call each (FerretDB 1.24 drops the connection when one
//! call names several indexes that all exist already).
//!
//! ## Wallets and the audit log: chains of links
//! A user's wallet (bindings and default pointer, no card data) is the unit
//! of consistency. Each user has a chain of links in `links`; a link holds
//! the whole wallet as of one change, the audit events of that change, and
//! the hash-chain fields (`seq`, `prev_hash`, `hash`, see
//! [`cardbind_ports::audit::chain_hash`]). The service's own chain
//! (`@system`) lives in the same collection, without a wallet.
//! * `load`: the newest link — one `find` on (`chain`, `seq` backwards),
//!   limit 1, reading the head fields and the wallet only.
//! * `commit`: one insert of link `after.seq + 1` (or 1). The unique
//!   (`chain`, `seq`) index lets exactly one of concurrent commits after one
//!   head land; the others get `Conflict`. A link is one document, so a
//!   commit stores all of it or nothing. A head this process read or wrote
//!   in the last 10 minutes certainly existed, so the insert alone decides
//!   (it lands if the head is the newest, collides if a successor exists);
//!   after any other head — one that may never have existed, which would
//!   open a gap — the commit first reads the newest link.
//! * `append_system`: appends of one process take turns (an async mutex)
//!   and continue from the head this process wrote last (trusted for 60 s),
//!   else read it first; a lost insert reads the new head and tries again.
//! * Each link also stores the distinct user ids, binding ids and actions
//!   of its events and whether its wallet holds a card awaiting settlement
//!   (pending verification or review), so that the audit listing and the reconciler's scan are
//!   index range scans (`users_at`, `bindings_at`, `actions_at`,
//!   `pending_at`), ordered by (`at`, `chain`, `seq`).
//! * Retention (`purge_before`) deletes, per chain, the links older than
//!   the cut-off except the newest: instants never go backwards along a
//!   chain, so that is a prefix of the chain.
//!
//! **Stale writers.** A commit's unique key is only as good as the history
//! kept: were link *n + 1* deleted, a writer still holding head *n* could
//! insert a second *n + 1*. Links are deleted only by retention, only when
//! older than the retention period (at least 180 days) and never the newest
//! of a chain, so only a writer that held its head for longer than that —
//! no operation outlives its timeout — could; and such a fork would still
//! be visible: `cardbind audit verify` finds link *n + 2* not linked to it.
//! The remembered head of the system chain is trusted for 60 s only, for
//! the same reason.
//!
//! ## Idempotency: fenced attempts as records
//! Every state change of a key is a record under the key's next `seq`:
//! `claim` (attempt *a*), `renew` / `complete` / `release` (of attempt *a*,
//! by its holder), or the `claim` of attempt *a + 1* (a claimer that found
//! *a* released or its lease expired). A holder's write and a takeover
//! compete for the same number, so exactly one lands: a late holder cannot
//! complete or release an attempt that was taken over (it gets `false`),
//! and of concurrent claims that found one state exactly one gets
//! `Acquired`. The newest record decides what a claim finds (another
//! request hash: `Mismatch`; completed: the response; a live lease:
//! `InProgress`). The process remembers the newest record of each attempt
//! it holds, so renew / complete / release insert without reading first;
//! a wrong memory only loses its insert, then they read.
//!
//! ## Rate limits: slots
//! A window of limit *L* is at most *L* documents under unique (`key`,
//! `slot`), slot ∈ 1..=*L*. A take inserts a slot of every window in one
//! unordered `insertMany` — slot 1, or the slot after the last one this
//! process took in that window; only windows whose slot was taken read their
//! slots (one `find` for all of them) and try a free one chosen at random,
//! until they land or all *L* are taken (`Full`). Slots are never updated;
//! slots of an expired window under a reused key are deleted by `_id` and
//! count as free.
//!
//! ## Seen ids
//! One record per (`ns`, `id`). `mark` inserts it (`true`); when the
//! recorded one is alive, `false`; when it has expired, the mark deletes it
//! by its `_id` and inserts again. Every record has its own `_id` and is
//! never updated, so a stale delete removes nothing a faster marker wrote.
//!
//! ## Data keys: crypto-shredding that a re-wrap cannot undo
//! Each owner's key is a chain under unique (`owner`, `seq`): key versions,
//! tombstones, husks. `put_if_absent` inserts link 1 (or the link after a
//! tombstone); `replace` inserts the link after the head it read when that
//! head has the expected version, then husks the superseded links (removes
//! their key material in place); `delete` inserts a tombstone after the
//! head, then husks every link below it. Links are never deleted, so no
//! number below the newest is ever free: a `replace` racing an erasure
//! finds its number taken (by the tombstone or a link before it) and gets
//! `Conflict`, and no erased material comes back.
//!
//! ## Sharding
//! Every collection has a shard key ([`schema::CollectionSpec::shard_key`]):
//! `links` by `chain` (the user), `card_data` by `binding`, `channel_refs`
//! by (`channel`, `channel_ref`), `idempotency` by (`scope`, `key`),
//! `rate_slots` by `key`, `seen_ids` by (`ns`, `id`), `data_keys` by
//! `owner`, `review_queue` by `binding`. Every unique index starts with it
//! (MongoDB's rule for unique indexes on a sharded collection), and every
//! request-path filter fixes it, so a request goes to one shard; only the
//! walks across users (audit listing, chain walk, reconciler scan, purges,
//! key and review listings) are scatter-gather.
//!
//! ## Counting and checking what is sent
//! Every command carries the port method that sent it as its `comment`
//! ([`schema::labels`]). A [`CommandLog`] (see
//! [`MongoStore::connect_with_monitor`] and [`MongoConfig::monitor`])
//! records each command through the driver's command monitoring, counts
//! round trips per method, and checks every filter against the schema
//! table: served by a declared index, and fixing the shard key on request
//! paths. The tests run the contract checks with a strict log, which fails
//! the call during which a query breaks a rule.
//!
//! ## On FerretDB 1.24
//! It pushes down only `{_id: <string or ObjectId>}` filters; every other
//! query reads the whole collection in Go (filter, sort). The design above
//! is correct there, and each port method is still one round trip in the
//! common case; but its latency grows with the collection. Production runs
//! on MongoDB, where each of these queries is an index lookup.
//!
//! ## Failures
//! * Duplicate key (11000) → the port's answer (`Conflict`, `Duplicate`,
//!   `false`, a re-read); an undecodable document → `Corrupt`; everything
//!   else the driver reports (no server, network, pool cleared, shutdown,
//!   server errors) → `Unavailable`.
//! * Every port method runs under the operation timeout, all its round trips
//!   included; server selection and connect time out after 2 s by default
//!   ([`MongoConfig`]), so a dead store fails within seconds. The purge
//!   applies the timeout per batch.
//! * Construction does not contact the server; the client reconnects by
//!   itself once the server is back (`tests/restart.rs`).
//! * A write whose outcome is unknown (a timeout after the request was
//!   sent) is `Unavailable`. A retry may meet its own earlier write:
//!   `Conflict` for a commit (reload), `Duplicate` for card data,
//!   `InProgress` for a claim until its lease ends, `false` for a mark, one
//!   more slot taken. Nothing is corrupted.
//!
//! ## What this crate must never do
//! * Let a bson or driver type out of a port: documents are private serde
//!   structs (`docs.rs`, and the shared records of `cardbind-records`).
//! * Store card data other than as given: sealed fields are opaque
//!   `SealedBlob` bytes kept as BSON binary; a wallet holds masked
//!   summaries; there is no CVV field anywhere.
//! * Rely on a multi-document transaction, a TTL or partial index, a
//!   projection on `findAndModify`, or a conditional update being atomic.

mod bins;
mod card_data;
mod data_keys;
mod docs;
mod hints;
mod idempotency;
mod monitor;
mod rates;
pub mod schema;
mod seen;
mod store;
mod wallets;

pub use bins::MongoBinTableStore;
pub use monitor::{Command, CommandLog, Query};
pub use schema::collections;
pub use store::{is_transient, MongoConfig, MongoStore, PurgeCounts, Unreached};
