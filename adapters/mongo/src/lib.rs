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
//! * Query a request's hot path by anything but `{_id: <string>}` (see
//!   "What FerretDB runs", below).
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
//! immutable after that insert (with the narrow exceptions noted below).
//! That is correct on FerretDB and on MongoDB alike, and the contract
//! suite's concurrency checks hold on both. The shape is a *chain*: link
//! *n* of a thing has `_id = "{base}#{n}"` (unambiguous: `n` is the digits
//! after the last `#`), and "the current state" is the link with the
//! highest *n*.
//!
//! ## What FerretDB runs (and why there is no `sort` on a request path)
//! Read from FerretDB v1.24.2's SQLite backend and checked with
//! `EXPLAIN QUERY PLAN` on its database files:
//! * The only filter handed to SQLite is one that is exactly
//!   `{_id: <string or ObjectId>}` (`WHERE _ferretdb_sjson->'$._id' = ?`).
//!   Any other filter — a second key, a range, an `$in`, a *numeric* `_id`
//!   — reads every document of the collection and filters it in Go; a
//!   `sort` other than `$natural` sorts all of them in Go, and `limit` is
//!   then applied last. `update`/`replace`/`delete` first run such a query.
//! * Even the `_id` equality is a full table scan: the `_id` index is on
//!   the expression `_ferretdb_sjson->"_id"`, the query uses
//!   `->'$._id'`, and SQLite uses an expression index only for the same
//!   expression. It is a scan in SQLite, though (a few µs per row), not a
//!   decode of every document in Go (tens of µs per document).
//! * An insert checks the unique indexes by their B-trees: its cost does
//!   not grow with the collection.
//!
//! Measured by `tests/query_cost.rs` (misses, FerretDB 1.24.2, median ms):
//!
//! | documents | `{_id: str}` | `{_id: int}` | `{k: v}` | `{k: v}` sort `n` desc, limit 1 | `{_id, v}` | insert |
//! |---:|---:|---:|---:|---:|---:|---:|
//! | 100 | 0.8 | 2.2 | 3.8 | 4.2 | 5.4 | 1.7 |
//! | 1,000 | 2.7 | 18.7 | 40.3 | 40.8 | 41.1 | 1.0 |
//! | 5,000 | 15.1 | 82.0 | 200 | 251 | 151 | 3.9 |
//! | 20,000 | 79.1 | 347 | 751 | 851 | 732 | 1.0 |
//!
//! The first version of this adapter read every chain head with
//! `sort(n: -1).limit(1)`, looked bindings up by (`user_id`,
//! `fingerprint`), listed them by `user_id`, and wrote with filters like
//! `{_id, version}`: each a whole-collection decode in Go, about 20 of them
//! per bind. Now a request does **inserts and reads of single string
//! `_id`s only**. On MongoDB both are index lookups; on FerretDB 1.24 a
//! read still scans its collection in SQLite, so latency there still grows
//! with the data, about ten times more slowly (figures in
//! `docs/storage.md`).
//!
//! ## Chain heads without `sort`
//! Every chain read on a request path is *gapless* from its first link
//! (rules per chain below): links `first..=head` exist, none above. Its
//! head is found by reads of single `_id`s (`chain::find_head`): from a
//! starting position, gallop upwards (+1, +2, +4, …) to the first gap,
//! then binary search; if the start itself is a gap, check the first
//! link and binary search below. The start is a **hint**: the position
//! this process last saw for that chain (`chain::Hints`, in memory,
//! forgotten past 100,000 chains). A hint only shortens the search — any
//! value gives the same answer — so from a current hint a head costs two
//! reads (the head, and the gap above it), and from none about
//! 2·log2(length). Where the next link is what an operation claims anyway,
//! it first tries the insert at "hint + 1" (or the first link) with no read
//! at all: the insert succeeds only on a free position, and a free position
//! right above a position that existed is the end of a gapless chain.
//!
//! | port | collection(s) | commit point | gapless because |
//! |---|---|---|---|
//! | `BindingStore::insert` | `binding_keys` → `user_bindings` → `bindings` | insert `pair_key(user, fingerprint)` | — |
//! | `BindingStore::update` | `binding_changes`, then `bindings` | insert `{binding}#{expected_version}` | (point reads only) |
//! | `replace_default` | `user_defaults` | insert `{user}#{seq+1}` | values are never deleted |
//! | `IdempotencyStore::claim` | `idempotency` | insert `{scope,key}#{attempt}` | `release` deletes only the newest; the purge all of a key |
//! | `RateCounter::increment` | `rate_limits` | insert `{key}#{n}`: the inserter's count is `n` | a key's events share one expiry: purged all or none |
//! | `SeenIds::mark` | `seen_ids` | insert `{ns,id}#{generation}` | (still read with `sort`, see below) |
//! | `ConsentLog::record` | `consent_links` → `consents` | insert the consent `_id` | links are never deleted |
//! | `ConsentLog::revoke` | `consent_revocations` | insert `{consent_id}` | — |
//! | `DataKeyStore` | `data_keys` | insert `{owner}#{seq}` (tombstone on delete) | links are husked, never deleted |
//! | `AuditLog::append` | `audit` | insert `_id` = seq (20-digit string) | nothing above the newest checkpoint is deleted |
//!
//! A lost insert race is never an error by itself: the loser searches for
//! the new head and decides again (bounded rounds, and the operation
//! timeout), or answers as the contract says (`Conflict`, `false`,
//! `InProgress`, …).
//!
//! ## Bindings
//! **Insert.** 1. *Commit*: insert `binding_keys {_id: pair_key(user,
//! fingerprint), binding_id, binding: <the whole document>}` — of
//! concurrent inserts of one card exactly one lands, the others get
//! `Duplicate`. 2. Append the binding to its user's list
//! (`user_bindings {_id: "{user}#{n}", binding_id, fingerprint}`, n from 0).
//! 3. Insert the document into `bindings`; if its `_id` is taken (another
//! card's record), delete the key again and answer `Duplicate`. A crash
//! after 1 leaves a committed key: `find_by_fingerprint` (which the bind
//! flow calls before inserting) and `list_by_user` finish steps 2–3 from
//! the key's copy (idempotent: a list entry already there is not added
//! again, an existing record is not overwritten). A record found through a
//! key is returned only if it has that key's user and fingerprint (the
//! short window of step 3's failure). The unique (`user_id`, `fingerprint`)
//! index on `bindings` stays as a second guard.
//!
//! **Lookups.** `find_by_fingerprint`: one read of the key, then the
//! record. `list_by_user`: the user's list (a chain head and one read per
//! entry), then each record as of its last committed change, ordered by id
//! in memory: reads in the number of the user's cards. Entries whose record
//! was never committed (a lost race) are skipped.
//!
//! **Update** `update(binding, expected)`:
//! 1. **Read** the binding as of its last committed change (below). Missing,
//!    or at another version: `Conflict`.
//! 2. **Commit**: insert `binding_changes {_id: "{id}#{expected}", binding:
//!    <the whole new document>}`. Each version has at most one successor, so
//!    of concurrent writers from one version exactly one gets here;
//!    the others get `Conflict`. From this instant the change is durable
//!    and decided.
//! 3. **Materialise**: `replace_one({_id}, new)` in `bindings`, by `_id`
//!    alone (a `{_id, version}` filter is a collection scan on FerretDB).
//!
//! Every `get` / `find_by_fingerprint` / `find_by_channel_ref` /
//! `list_by_user` and every `update` first *rolls forward*: after reading
//! `bindings` at version *v* it reads `binding_changes` `{id}#{v}` and, if
//! present, writes it and reads again. So a crash between 2 and 3 is
//! repaired by the next read, and a writer that read the stale version gets
//! `Conflict`. Without the version filter, a materialiser that lands late
//! can write back an older committed version over a newer one; its change
//! document is still there (see the GC margin), so the next read rolls the
//! record forward again. `list_by_status` (the reconciler's listing, a scan)
//! reads `bindings` as stored and may show such a record one version behind
//! until its next single read; the reconciler `get`s each record anyway.
//!
//! The new document is carried whole in the change, not as a diff, so that
//! rolling forward is an idempotent replace that any instance can do.
//!
//! ## Stale writers and the GC margin
//! A writer that read head *n* and then stalled could, after link *n+1*
//! was deleted, re-insert it and believe it had won. So links that a
//! writer could still target are not deleted while it may live:
//! * Binding changes are deleted by the purge (riding on
//!   `RateCounter::purge_expired`, the periodic purge calls it) once older
//!   than `max(1 hour, 10 × operation timeout)` by the wall clock
//!   (`written_at`) *and* written to their record; never on a request.
//! * Default-pointer values, list entries and consent links are never
//!   deleted (they are small).
//! * Superseded or erased data-key wrappings become **husks**: replaced by
//!   `_id` with a document without key material (`tombstone: true, husk:
//!   true`). The `_id` stays taken, so the chain stays gapless and no link
//!   can be inserted again.
//!
//! Expiring records (rate events, seen ids, idempotency attempts, audit
//! records) are deleted only by the purges, on the instants the ports hand
//! in.
//!
//! ## The other ports
//! * **Default pointer** (`user_defaults`): one immutable document per value;
//!   `None` is a value (`binding_id: null`), so "no pointer" and "cleared"
//!   are the same state. CAS = find the head (`seq`, value), compare with
//!   `expected`, insert `seq+1`; a lost insert returns `false`. Expecting
//!   `None` of a user this process has not seen, it first tries inserting
//!   value 0: that lands only if the user never had a value.
//! * **Idempotency** (`idempotency`): one document per *attempt* at a key.
//!   A new key inserts attempt 0 (pending, with its lease) — tried before
//!   any read for a key this process has not seen; a takeover of an
//!   expired lease inserts attempt *n+1* (carrying the first `created_at`),
//!   so of many takeovers exactly one wins. `complete` sets the response on
//!   the newest attempt and `release` deletes it, both by `_id` after
//!   checking it is pending; only the holder writes its attempt document
//!   (the first exception to immutability), and a takeover never writes an
//!   existing document. A lease runs through its last instant; any other
//!   request hash is `Mismatch`, pending or not. A crash of the holder
//!   leaves a pending attempt that the next claim after `lease_until` takes
//!   over.
//! * **Rate counters** (`rate_limits`): one document per event; the n-th
//!   insert of a key is count *n*. An increment tries `n = 1` (a key this
//!   process has not counted; one round trip for a new window) or the
//!   position after the head found from its hint, then searches upwards
//!   from a taken position. Counts of concurrent increments are distinct
//!   and gapless. `purge_expired` deletes events by `expires_at` and
//!   reports counters (distinct keys).
//! * **Seen ids** (`seen_ids`): generations per (namespace, id); `mark`
//!   inserts generation 0 (no read) or, when the newest has expired, the
//!   next one. Alive through `expires_at`. The newest generation is still
//!   read with `sort(gen: -1)` — by `seen()` and by a `mark` that finds
//!   generation 0 taken — because the purge deletes expired generations
//!   from the bottom of a chain, so a search from generation 0 could miss
//!   a live one. Not on the bind path; on FerretDB it costs a scan.
//! * **Consents** (`consents`, `consent_links`, `consent_revocations`):
//!   `record` first appends the consent id to its binding's links
//!   (`{binding}#{n}`), then inserts the consent (`Duplicate` if its id is
//!   taken), so every consent is reachable from its binding.
//!   `set_agreement` and `revoke` read the links, each consent and its
//!   revocation by `_id`, skipping links to consents that do not exist or
//!   belong to another binding. A consent document is immutable except
//!   `agreement_id` (the second exception: only `set_agreement` writes it,
//!   by `_id`, so a lost update between two of those leaves one of their
//!   values). A revocation is its own document with `_id` = the consent id:
//!   `revoke` counts only the revocations it inserted, so concurrent
//!   revokes never double-count, and no update of `agreement_id` can ever
//!   erase a revocation.
//! * **Data keys** (`data_keys`): versions of an owner's wrapping as a
//!   gapless chain from 0. `put_if_absent` for an owner this process has not
//!   seen first tries link 0 (it lands only if the owner never had a key).
//!   `replace` = the successor of the version read, then the superseded
//!   link is husked. `delete` (crypto-shredding) inserts a **tombstone** as
//!   the newest link, then husks every link below it. Since every write is
//!   the successor of the head its writer read, and no link is ever freed,
//!   nothing can be inserted below a tombstone: an erasure cannot be undone
//!   by a writer that read the chain before it. A later `put_if_absent`
//!   starts a new key above the tombstone.
//! * **Audit** (`audit`, `audit_checkpoints`): `_id` = the seq as 20 zero-
//!   padded digits (so that string order is numeric order and a read of one
//!   record is a string `_id` read; a database whose `audit` has numeric
//!   `_id`s, from before, is refused by `ensure_indexes`). An append inserts
//!   `seq+1` with [`chain_hash`](cardbind_ports::audit::chain_hash) over
//!   the last link, so the chain cannot fork and has no gaps. The last link
//!   comes from this process (the record it last appended or found),
//!   unless the newest checkpoint is above it; without either, a search
//!   upwards from the newest checkpoint (or the genesis). The appends of one
//!   process take turns (an async mutex), so only other processes can take
//!   its next seq; a loser searches upwards from its last link and retries.
//!   A purge first records the head as a checkpoint (insert; older
//!   checkpoints are deleted, so the collection holds one or two documents
//!   and is read with a scan on every append), then deletes old records
//!   *at or below that seq*; when it emptied the log the next append
//!   continues from the checkpoint, never from 1. Records above the newest
//!   checkpoint are therefore never deleted, which is what makes the
//!   upward search exact. One race is left: an appender whose last link
//!   is at or above the checkpoint it read, while a purge that starts at
//!   that moment checkpoints a higher head and deletes the record right
//!   above the appender's link — possible only if that record's `at` is
//!   already past retention, which the service (stamping `at` with the
//!   clock) does not produce.
//!
//! ## Still scanning (not on a request's bind path)
//! `find_by_channel_ref` (notifications), `list_by_status` (reconciler),
//! `SeenIds::seen` and a repeated `mark`, `AuditLog::list` with filters,
//! `ConsentLog::list`, `DataKeyStore::list`, and the purges. On FerretDB
//! each reads its whole collection; on MongoDB they use the indexes below.
//!
//! ## Indexes
//! [`MongoStore::ensure_indexes`] creates, idempotently: unique
//! (`user_id`, `fingerprint`) on `bindings` (the second guard of the
//! one-record-per-card rule), plus (`user_id`, `_id`), (`channel`,
//! `channel_ref`) — not unique, since without partial indexes most records
//! (no `channel_ref` yet) would collide — and (`status`, `_id`); on each
//! chain its (`base`, `n` desc) index; `written_at` on `binding_changes`
//! and `expires_at` / `created_at` / `at` for the purges. Every other
//! uniqueness rule is an `_id`. Indexes are created one `createIndexes`
//! call each: FerretDB 1.24.2 panics on a `createIndexes` naming two or
//! more indexes that all exist already (it drops the connection; the
//! driver sees "unexpected end of file").
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
//! A bind through the API (new user, new card, mock channel) does about
//! 20 single-`_id` reads, 3 writes by `_id` and 13 inserts, with no other
//! query (counted from FerretDB's debug log). On MongoDB every one of them
//! is an index lookup. On FerretDB 1.24 the inserts stay flat and each read
//! or write by `_id` scans its collection in SQLite. Figures before and
//! after are in `docs/storage.md`.

mod audit;
mod bindings;
mod bins;
mod chain;
mod consents;
mod data_keys;
mod docs;
mod idempotency;
mod rates;
mod store;

pub use bins::MongoBinTableStore;
pub use store::{collections, MongoConfig, MongoStore, PurgeCounts};
