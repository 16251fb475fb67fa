//! # cardbind-mongo
//!
//! Every storage port of `cardbind-ports` ([`BindingStore`], [`IdempotencyStore`],
//! [`RateCounter`], [`ConsentLog`], [`SeenIds`], [`DataKeyStore`], [`AuditLog`])
//! on one MongoDB database, as one [`MongoStore`]. Tested on FerretDB v1.24.2
//! (SQLite handler) by the shared contract suite and by the tests in
//! `tests/`; written to be equally correct on MongoDB.
//!
//! ```ignore
//! let store = MongoStore::connect("mongodb://127.0.0.1:27017/", "cardbind", Duration::from_secs(5)).await?;
//! store.ensure_indexes().await?;              // at start-up, on every instance
//! let ports = Arc::new(store);                // hand out as Arc<dyn Port>
//! // background job: store.purge(now, now - idem_retention, now - audit_retention)
//! ```
//!
//! [`BindingStore`]: cardbind_ports::store::BindingStore
//! [`IdempotencyStore`]: cardbind_ports::store::IdempotencyStore
//! [`RateCounter`]: cardbind_ports::store::RateCounter
//! [`ConsentLog`]: cardbind_ports::store::ConsentLog
//! [`SeenIds`]: cardbind_ports::store::SeenIds
//! [`DataKeyStore`]: cardbind_ports::store::DataKeyStore
//! [`AuditLog`]: cardbind_ports::audit::AuditLog
//!
//! ## What this crate must never do
//! * Let a bson or driver type out: storage documents are private serde
//!   structs (`docs.rs`) converted to and from the domain types; a document
//!   that does not convert is `StoreError::Corrupt`.
//! * Store card data other than as given: sealed fields are opaque
//!   `SealedBlob` bytes kept as BSON binary; the CVV has no field at all.
//! * Rely on a multi-document transaction, a TTL index, a partial index, a
//!   projection on `findAndModify`, or — the big one below — on a
//!   conditional update being atomic.
//!
//! ## The one atomic primitive: insert
//! The port contracts ask for compare-and-set in many places (binding
//! versions, the default pointer, idempotency leases, counters, seen ids,
//! data keys, the audit chain). On MongoDB a filtered `update_one` /
//! `replace_one` / `findAndModify` is atomic on its document, and the
//! design brief planned on that. **FerretDB 1.x does not give it**: it
//! runs an update as "query the matching documents, apply the operators in
//! Go, write each back with `UPDATE … WHERE _id = ?`", and nothing ties the
//! write to what was read. Measured on FerretDB 1.24.2 with 8 racers: 20
//! rounds of `update_one({_id, v: n}, {$set: {v: n+1}})` gave 58 "winners"
//! instead of 20, and 50 concurrent `$inc`s via `find_one_and_update`
//! returned only 16 distinct counts. What FerretDB *does* make atomic is
//! the SQLite primary key and unique indexes: of concurrent inserts of one
//! `_id`, exactly one succeeds and the rest get duplicate key (11000).
//!
//! So every write protocol here has one **commit point, an insert of a
//! document whose `_id` names the slot being claimed**, and documents are
//! immutable after that insert (with the two narrow exceptions noted
//! below). That is correct on FerretDB and on MongoDB alike, and the
//! contract suite's concurrency checks hold on both. The shape is a *chain*:
//! link *n* of a thing has `_id = "{base}#{n}"` (unambiguous: `n` is the
//! digits after the last `#`), and "the current state" is the link with
//! the highest *n*, read with an indexed `sort(n: -1).limit(1)`.
//!
//! | port | collection(s) | commit point |
//! |---|---|---|
//! | `BindingStore::insert` | `bindings` | insert; `_id` and unique (`user_id`, `fingerprint`) |
//! | `BindingStore::update` | `binding_changes`, then `bindings` | insert `{binding}#{expected_version}` |
//! | `replace_default` | `user_defaults` | insert `{user}#{seq+1}` |
//! | `IdempotencyStore::claim` | `idempotency` | insert `{scope,key}#{attempt}` |
//! | `RateCounter::increment` | `rate_limits` | insert `{key}#{n}`: the inserter's count is `n` |
//! | `SeenIds::mark` | `seen_ids` | insert `{ns,id}#{generation}` |
//! | `ConsentLog::revoke` | `consent_revocations` | insert `{consent_id}` |
//! | `DataKeyStore` | `data_keys` | insert `{owner}#{seq}` (tombstone on delete) |
//! | `AuditLog::append` | `audit` | insert `_id = seq` |
//!
//! A lost insert race is never an error by itself: the loser reads the new
//! head and decides again (bounded rounds, and the operation timeout), or
//! answers as the contract says (`Conflict`, `false`, `InProgress`, …).
//!
//! ## Bindings: ordering of a change without transactions
//! `update(binding, expected)`:
//! 1. **Read** the binding as of its last committed change (below). Missing,
//!    or at another version: `Conflict`.
//! 2. **Commit**: insert `binding_changes {_id: "{id}#{expected}", binding:
//!    <the whole new document>}`. Each version has at most one successor, so
//!    of concurrent writers from one version exactly one gets here;
//!    the others get `Conflict`. From this instant the change is durable
//!    and decided.
//! 3. **Materialise**: `replace_one({_id, version: expected}, new)` in
//!    `bindings`. The only other writers of this document at this point are
//!    readers rolling *the same* change forward (identical content), so
//!    FerretDB's non-atomic replace cannot lose anything.
//! 4. **Clean up**: delete this binding's older changes once they are older
//!    than the GC margin (below).
//!
//! *A crash between 2 and 3* leaves a committed change whose document was
//! not written. Every `get` / `find_by_fingerprint` / `find_by_channel_ref`
//! and every `update` first *rolls forward*: after reading `bindings` at
//! version *v* it looks up `binding_changes` `{id}#{v}` (one point read by
//! `_id`) and, if present, applies it and reads again. So single-record
//! reads always see the last committed change, and a writer that read the
//! stale version gets `Conflict` (and, in passing, repairs the record).
//! The listings (`list_by_user`, `list_by_status`) read `bindings` as
//! stored: after such a crash they may show the previous version of that
//! one record until its next single read or write — the reconciler lists
//! by status and then `get`s each record, which repairs it. *A crash
//! between 3 and 4* leaves only history, deleted by a later update.
//! `insert` is a single insert: all or nothing.
//!
//! The new document is carried whole in the change, not as a diff, so that
//! rolling forward is an idempotent replace that any instance can do.
//!
//! ## Stale writers and the GC margin
//! A writer that read head *n* and then stalled could, after link *n+1*
//! was deleted, re-insert it and believe it had won. Superseded links (old
//! binding changes, old default-pointer values, old data-key wrappings) are
//! therefore deleted only once they are older than
//! `max(1 hour, 10 × operation timeout)` by the wall clock (`written_at`):
//! far beyond the life of any operation, which the operation timeout cuts
//! off. Expiring records (rate events, seen ids, idempotency attempts,
//! audit records) are deleted only by the purges, on the instants the
//! ports hand in.
//!
//! ## The other ports
//! * **Default pointer** (`user_defaults`): one immutable document per value;
//!   `None` is a value (`binding_id: null`), so "no pointer" and "cleared"
//!   are the same state. CAS = read head (`seq`, value), compare with
//!   `expected`, insert `seq+1`. A lost insert returns `false`.
//! * **Idempotency** (`idempotency`): one document per *attempt* at a key.
//!   A new key inserts attempt 0 (pending, with its lease); a takeover of an
//!   expired lease inserts attempt *n+1* (carrying the first `created_at`),
//!   so of many takeovers exactly one wins. `complete` sets the response on
//!   the newest pending attempt and `release` deletes it; only the holder
//!   writes its attempt document (the first exception to immutability), and
//!   a takeover never writes an existing document. A lease runs through its
//!   last instant; any other request hash is `Mismatch`, pending or not.
//!   A crash of the holder leaves a pending attempt that the next claim
//!   after `lease_until` takes over.
//! * **Rate counters** (`rate_limits`): one document per event; the n-th
//!   insert of a key is count *n*. An increment tries `n = 1` first (a new
//!   window costs one round trip), then reads the highest `n` and tries the
//!   next. Counts of concurrent increments are distinct and gapless.
//!   `purge_expired` deletes events by `expires_at` and reports counters
//!   (distinct keys).
//! * **Seen ids** (`seen_ids`): generations per (namespace, id); `mark`
//!   inserts generation 0 or, when the newest has expired, the next one.
//!   Alive through `expires_at`.
//! * **Consents** (`consents`, `consent_revocations`): a consent document is
//!   immutable except `agreement_id` (the second exception: only
//!   `set_agreement` writes it, so a lost update between two of those
//!   leaves one of their values). A revocation is its own document with
//!   `_id` = the consent id: `revoke` counts only the revocations it
//!   inserted, so concurrent revokes never double-count, and no update of
//!   `agreement_id` can ever erase a revocation (as a read-modify-write of
//!   one document could on FerretDB).
//! * **Data keys** (`data_keys`): versions of an owner's wrapping as a chain.
//!   `replace` = the successor of the version read. `delete` (crypto-
//!   shredding) first inserts a **tombstone** as the newest link, then
//!   deletes every wrapping of the owner; any writer that inserted key
//!   material and then finds a tombstone above it deletes every wrapping
//!   below the tombstone again and reports `Conflict`, so an erasure can
//!   never be undone by a writer that read the chain before it. A later
//!   `put_if_absent` starts a new chain above the tombstone.
//! * **Audit** (`audit`, `audit_checkpoints`): `_id = seq`; an append reads
//!   the head, computes [`chain_hash`](cardbind_ports::audit::chain_hash)
//!   over it and inserts `seq+1`, so the chain cannot fork and has no gaps;
//!   a loser re-reads and retries. A purge first records the newest link
//!   as a checkpoint (insert), then deletes old records; when it emptied
//!   the log the next append continues from the checkpoint, never from 1.
//!
//! ## Indexes
//! [`MongoStore::ensure_indexes`] creates, idempotently: unique
//! (`user_id`, `fingerprint`) on `bindings` (the one-record-per-card rule),
//! plus (`user_id`, `_id`), (`channel`, `channel_ref`) — not unique, since
//! without partial indexes most records (no `channel_ref` yet) would
//! collide — and (`status`, `_id`); and on each chain its (`base`, `n` desc)
//! index, and `expires_at` / `created_at` / `at` for the purges. Every
//! other uniqueness rule is an `_id`. Indexes are created one
//! `createIndexes` call each: FerretDB 1.24.2 panics on a `createIndexes`
//! naming two or more indexes that all exist already (it drops the
//! connection; the driver sees "unexpected end of file").
//!
//! ## Failures
//! * Duplicate key (11000) → `Duplicate` (never a 500); an undecodable
//!   document → `Corrupt`; everything else the driver reports — no server
//!   (server selection), network, pool cleared, shutdown, server errors —
//!   → `Unavailable`.
//! * Every port method runs under the operation timeout
//!   (`tokio::time::timeout`), all its round trips included; the driver's
//!   server selection and connect timeouts default to 2 s
//!   ([`MongoConfig`]), so a dead store fails within a few seconds instead
//!   of hanging a request. Purges apply the timeout per batch.
//! * Construction does not contact the server; the client reconnects by
//!   itself (heartbeat every second) once the server is back — see
//!   `tests/restart.rs`.
//! * A write whose outcome is unknown (timeout after the request was sent)
//!   is reported as `Unavailable`. A retry may then meet its own earlier
//!   write: `Duplicate` for an insert, `InProgress` for a claim (until its
//!   lease ends), `false` for a mark, one extra count, or an audit event
//!   recorded twice (each copy correctly chained). Nothing is corrupted.
//!
//! ## Cost
//! Against the single conditional write MongoDB alone would need: a binding
//! update is two point reads, an insert, a replace and an (index-bounded)
//! delete; `get` adds one point read by `_id`. Every other operation is one
//! read plus one insert in the common case. Binding traffic is small (a few
//! changes per card), so we buy correctness on both servers with it.

mod audit;
mod bindings;
mod chain;
mod consents;
mod data_keys;
mod docs;
mod idempotency;
mod rates;
mod store;

pub use store::{collections, MongoConfig, MongoStore, PurgeCounts};
