//! Counting and checking what the adapter sends: a [`CommandLog`] records
//! every command the driver starts (command monitoring), with the port
//! method that sent it (its `comment`), its collection, and the filter and
//! sort of each query in it, and holds every query against the table in
//! [`crate::schema`]:
//!
//! * a query is *served* when some declared index (or `_id`) starts with a
//!   field the filter constrains (by equality, `$in` or a range), or, for a
//!   filter that constrains nothing, when the sort is a prefix of an index
//!   (an ordered walk); and its sort must be one the index gives: after the
//!   index's leading fields fixed by equality, the sort's fields in the
//!   index's order, all in its direction or all against it;
//! * a query sent by a request-path method (any label not in the
//!   collection's `scans`) names every field of the collection's shard key
//!   by equality (or `$in`);
//! * every read (`find`, `findAndModify`, `aggregate`, `count`,
//!   `distinct`) carries `maxTimeMS`: when the adapter gives up on an
//!   operation at its timeout, the driver drops the connection but the
//!   server would go on working for nobody; with `maxTimeMS` the server
//!   stops too, so a slow database under retries is not handed an
//!   ever-growing pile of abandoned queries.
//!
//! A log made by [`CommandLog::strict`] also fails the port call during
//! which a query breaks a rule (`StoreError::Corrupt`, naming the query):
//! the tests run the whole contract suite that way. The log holds filters
//! (ids and instants, never card data) and no document bodies.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use cardbind_ports::StoreError;
use mongodb::bson::{Bson, Document};
use mongodb::event::command::CommandEvent;
use mongodb::event::EventHandler;

use crate::schema::{self, IndexSpec};

/// One query of a command: a `find`'s filter and sort, one statement of an
/// `update` or `delete`, …
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// The filter as relaxed extended JSON.
    pub filter: String,
    /// Fields the filter constrains (equality, `$in`, ranges).
    pub fields: BTreeSet<String>,
    /// Fields the filter fixes by equality or `$in`.
    pub equal: BTreeSet<String>,
    pub sort: Vec<(String, i32)>,
}

/// One command the driver started: one round trip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// `find`, `insert`, `update`, `delete`, `getMore`, …
    pub name: String,
    pub database: String,
    pub collection: Option<String>,
    /// The port method that sent it (the command's `comment`).
    pub label: Option<String>,
    pub queries: Vec<Query>,
    /// The rules it broke.
    pub violations: Vec<String>,
}

#[derive(Debug, Default)]
struct Inner {
    commands: Vec<Command>,
    /// (collection, index) pairs that served at least one query.
    used: BTreeSet<(String, String)>,
    /// How many violations a strict log has already failed a call for.
    reported: usize,
    strict: bool,
}

/// A shared record of the commands one store sent. Cheap to clone (all
/// clones share the record).
#[derive(Clone, Debug, Default)]
pub struct CommandLog {
    inner: Arc<Mutex<Inner>>,
}

impl CommandLog {
    pub fn new() -> CommandLog {
        CommandLog::default()
    }

    /// A log that also fails the port call during which a query breaks an
    /// index or shard-key rule.
    pub fn strict() -> CommandLog {
        let log = CommandLog::default();
        log.lock().strict = true;
        log
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every command recorded so far.
    pub fn commands(&self) -> Vec<Command> {
        self.lock().commands.clone()
    }

    /// The commands recorded so far, forgetting them (the indexes used and
    /// the violations reported stay).
    pub fn take(&self) -> Vec<Command> {
        let mut g = self.lock();
        g.reported = 0;
        std::mem::take(&mut g.commands)
    }

    /// Forgets the commands recorded so far.
    pub fn clear(&self) {
        drop(self.take());
    }

    /// How many commands (round trips) were recorded.
    pub fn len(&self) -> usize {
        self.lock().commands.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Commands per label (port method); unlabelled ones under `""`.
    pub fn by_label(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for c in &self.lock().commands {
            *m.entry(c.label.clone().unwrap_or_default()).or_insert(0) += 1;
        }
        m
    }

    /// Every rule broken by a recorded command, as text.
    pub fn violations(&self) -> Vec<String> {
        self.lock()
            .commands
            .iter()
            .flat_map(|c| c.violations.iter().cloned())
            .collect()
    }

    /// Declared indexes that served no query recorded since the log was
    /// made, as `collection.index`.
    pub fn unused_indexes(&self) -> Vec<String> {
        let g = self.lock();
        schema::SCHEMA
            .iter()
            .flat_map(|c| c.indexes.iter().map(move |i| (c.name, i.name)))
            .filter(|(c, i)| !g.used.contains(&((*c).to_owned(), (*i).to_owned())))
            .map(|(c, i)| format!("{c}.{i}"))
            .collect()
    }

    /// The driver's command event handler feeding this log.
    pub(crate) fn handler(&self) -> EventHandler<CommandEvent> {
        let log = self.clone();
        EventHandler::callback(move |ev: CommandEvent| {
            if let CommandEvent::Started(s) = ev {
                log.record(&s.command_name, &s.db, &s.command);
            }
        })
    }

    /// Records one started command.
    pub(crate) fn record(&self, name: &str, db: &str, cmd: &Document) {
        let (command, used) = analyse(name, db, cmd);
        let mut g = self.lock();
        for (c, i) in used {
            g.used.insert((c, i));
        }
        g.commands.push(command);
    }

    /// In a strict log, a violation not yet reported fails the call.
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        let mut g = self.lock();
        if !g.strict {
            return Ok(());
        }
        let all: Vec<String> = g
            .commands
            .iter()
            .flat_map(|c| c.violations.iter().cloned())
            .collect();
        if all.len() > g.reported {
            let first = all[g.reported].clone();
            g.reported = all.len();
            return Err(StoreError::Corrupt(format!("query check: {first}")));
        }
        Ok(())
    }
}

fn analyse(name: &str, db: &str, cmd: &Document) -> (Command, Vec<(String, String)>) {
    let str_field = |k: &str| cmd.get_str(k).ok().map(str::to_owned);
    let collection = match name {
        "getMore" => str_field("collection"),
        "findAndModify" | "findandmodify" => {
            str_field("findAndModify").or_else(|| str_field("findandmodify"))
        }
        _ => str_field(name),
    };
    let label = str_field("comment");
    let empty = Document::new();
    let doc_of = |b: Option<&Bson>| match b {
        Some(Bson::Document(d)) => d.clone(),
        _ => empty.clone(),
    };
    let statements = |k: &str| -> Vec<Document> {
        cmd.get_array(k)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_document().map(|d| doc_of(d.get("q"))))
                    .collect()
            })
            .unwrap_or_default()
    };
    let raw: Vec<(Document, Document)> = match name {
        "find" => vec![(doc_of(cmd.get("filter")), doc_of(cmd.get("sort")))],
        "count" | "distinct" => vec![(doc_of(cmd.get("query")), empty.clone())],
        "findAndModify" | "findandmodify" => {
            vec![(doc_of(cmd.get("query")), doc_of(cmd.get("sort")))]
        }
        "update" => statements("updates")
            .into_iter()
            .map(|q| (q, empty.clone()))
            .collect(),
        "delete" => statements("deletes")
            .into_iter()
            .map(|q| (q, empty.clone()))
            .collect(),
        "aggregate" => {
            let stages: Vec<&Document> = cmd
                .get_array("pipeline")
                .map(|a| a.iter().filter_map(Bson::as_document).collect())
                .unwrap_or_default();
            let stage = |op: &str| {
                stages
                    .iter()
                    .find_map(|s| s.get(op))
                    .map(|b| doc_of(Some(b)))
                    .unwrap_or_default()
            };
            vec![(stage("$match"), stage("$sort"))]
        }
        _ => Vec::new(),
    };
    let queries: Vec<Query> = raw
        .into_iter()
        .map(|(filter, sort)| {
            let (fields, equal) = shape(&filter);
            Query {
                filter: Bson::Document(filter).into_relaxed_extjson().to_string(),
                fields,
                equal,
                sort: sort
                    .iter()
                    .map(|(k, v)| (k.clone(), direction(v)))
                    .collect(),
            }
        })
        .collect();
    let mut violations = Vec::new();
    let mut used = Vec::new();
    let is_read = matches!(
        name,
        "find" | "findAndModify" | "findandmodify" | "aggregate" | "count" | "distinct"
    );
    if is_read && cmd.get("maxTimeMS").is_none() {
        violations.push(format!(
            "{}: `{name}` on {collection:?} carries no maxTimeMS",
            label.as_deref().unwrap_or("(no label)")
        ));
    }
    if !queries.is_empty() {
        check_queries(
            collection.as_deref(),
            label.as_deref(),
            name,
            &queries,
            &mut violations,
            &mut used,
        );
    }
    (
        Command {
            name: name.to_owned(),
            database: db.to_owned(),
            collection,
            label,
            queries,
            violations,
        },
        used,
    )
}

fn direction(v: &Bson) -> i32 {
    match v {
        Bson::Int32(i) => i.signum(),
        Bson::Int64(i) => i.signum() as i32,
        Bson::Double(d) if *d < 0.0 => -1,
        _ => 1,
    }
}

/// The fields a filter constrains, and those it fixes by equality. `$and`
/// adds up its branches; `$or` constrains what every branch constrains.
/// Operators that select nothing by themselves (`$ne`, `$exists`, `$not`,
/// …) constrain nothing.
pub(crate) fn shape(filter: &Document) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut fields = BTreeSet::new();
    let mut equal = BTreeSet::new();
    for (k, v) in filter {
        match k.as_str() {
            "$and" => {
                for b in branches(v) {
                    let (f, e) = shape(&b);
                    fields.extend(f);
                    equal.extend(e);
                }
            }
            "$or" => {
                let mut common: Option<(BTreeSet<String>, BTreeSet<String>)> = None;
                for b in branches(v) {
                    let (f, e) = shape(&b);
                    common = Some(match common {
                        None => (f, e),
                        Some((cf, ce)) => (
                            cf.intersection(&f).cloned().collect(),
                            ce.intersection(&e).cloned().collect(),
                        ),
                    });
                }
                if let Some((f, e)) = common {
                    fields.extend(f);
                    equal.extend(e);
                }
            }
            op if op.starts_with('$') => {}
            field => match constraint(v) {
                Constraint::Equal => {
                    fields.insert(field.to_owned());
                    equal.insert(field.to_owned());
                }
                Constraint::Range => {
                    fields.insert(field.to_owned());
                }
                Constraint::None => {}
            },
        }
    }
    (fields, equal)
}

fn branches(v: &Bson) -> Vec<Document> {
    match v {
        Bson::Array(a) => a.iter().filter_map(|b| b.as_document().cloned()).collect(),
        _ => Vec::new(),
    }
}

enum Constraint {
    Equal,
    Range,
    None,
}

fn constraint(v: &Bson) -> Constraint {
    let Bson::Document(d) = v else {
        return Constraint::Equal;
    };
    if !d.keys().any(|k| k.starts_with('$')) {
        return Constraint::Equal;
    }
    let mut out = Constraint::None;
    for k in d.keys() {
        match k.as_str() {
            "$eq" | "$in" => return Constraint::Equal,
            "$gt" | "$gte" | "$lt" | "$lte" => out = Constraint::Range,
            _ => {}
        }
    }
    out
}

const ID_INDEX: IndexSpec = IndexSpec {
    name: "_id_",
    keys: &[("_id", 1)],
    unique: true,
    serves: "",
};

fn check_queries(
    collection: Option<&str>,
    label: Option<&str>,
    name: &str,
    queries: &[Query],
    violations: &mut Vec<String>,
    used: &mut Vec<(String, String)>,
) {
    let Some(label) = label else {
        violations.push(format!(
            "a `{name}` on {collection:?} carries no label (comment)"
        ));
        return;
    };
    let Some(spec) = collection.and_then(schema::collection) else {
        violations.push(format!(
            "{label}: `{name}` on {collection:?}, a collection not in the schema table"
        ));
        return;
    };
    for q in queries {
        let served: Vec<&IndexSpec> = spec
            .indexes
            .iter()
            .chain(std::iter::once(&ID_INDEX))
            .filter(|i| serves(q, i))
            .collect();
        if served.is_empty() {
            violations.push(format!(
                "{label}: `{name}` on {} with filter {} sort {:?} is served by no declared index",
                spec.name, q.filter, q.sort
            ));
        }
        for i in served {
            used.push((spec.name.to_owned(), i.name.to_owned()));
        }
        if !spec.scans.contains(&label) {
            for f in spec.shard_key {
                if !q.equal.contains(*f) {
                    violations.push(format!(
                        "{label}: `{name}` on {} with filter {} does not fix the shard key field `{f}`",
                        spec.name, q.filter
                    ));
                }
            }
        }
    }
}

/// Whether index `i` serves query `q` (see the module docs).
pub(crate) fn serves(q: &Query, i: &IndexSpec) -> bool {
    let Some(first) = i.keys.first() else {
        return false;
    };
    if q.fields.is_empty() {
        if q.sort.is_empty() {
            return false;
        }
    } else if !q.fields.contains(first.0) {
        return false;
    }
    if q.sort.is_empty() {
        return true;
    }
    let fixed = i.keys.iter().take_while(|k| q.equal.contains(k.0)).count();
    (0..=fixed).any(|j| {
        let Some(part) = i.keys.get(j..j + q.sort.len()) else {
            return false;
        };
        let names = part
            .iter()
            .map(|k| k.0)
            .eq(q.sort.iter().map(|s| s.0.as_str()));
        let same = part.iter().zip(&q.sort).all(|(k, s)| k.1 == s.1);
        let flipped = part.iter().zip(&q.sort).all(|(k, s)| k.1 == -s.1);
        names && (same || flipped)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use mongodb::bson::doc;

    fn find(coll: &str, label: &str, filter: Document, sort: Document) -> Command {
        analyse(
            "find",
            "db",
            &doc! { "find": coll, "filter": filter, "sort": sort, "comment": label, "maxTimeMS": 3000 },
        )
        .0
    }

    #[test]
    fn a_read_without_max_time_is_caught() {
        let c = analyse(
            "find",
            "db",
            &doc! { "find": "links", "filter": { "chain": "a" }, "sort": { "seq": -1 }, "comment": "wallets.load" },
        )
        .0;
        assert_eq!(
            c.violations,
            vec!["wallets.load: `find` on Some(\"links\") carries no maxTimeMS".to_owned()]
        );
        // Writes carry no maxTimeMS and need none.
        let c = analyse(
            "insert",
            "db",
            &doc! { "insert": "links", "documents": [], "comment": "wallets.commit" },
        )
        .0;
        assert!(c.violations.is_empty(), "{:?}", c.violations);
    }

    #[test]
    fn shapes() {
        let (f, e) = shape(&doc! {
            "users": "alice",
            "at": { "$gte": 5_i64 },
            "$or": [
                { "chain": "a", "seq": { "$gt": 1_i64 } },
                { "chain": { "$gt": "a" } },
            ],
            "gone": { "$exists": false },
        });
        assert_eq!(
            f,
            ["at", "chain", "users"]
                .map(String::from)
                .into_iter()
                .collect()
        );
        assert_eq!(e, ["users"].map(String::from).into_iter().collect());
        let (_, e) = shape(&doc! { "key": { "$in": ["a", "b"] }, "_id": { "$eq": 1 } });
        assert_eq!(e.len(), 2);
    }

    #[test]
    fn a_served_request_passes() {
        let c = find(
            "links",
            "wallets.load",
            doc! { "chain": "alice" },
            doc! { "seq": -1 },
        );
        assert!(c.violations.is_empty(), "{:?}", c.violations);
        let c = find(
            "links",
            "audit.list",
            doc! { "users": "alice", "at": { "$lt": 9_i64 } },
            doc! { "at": 1, "chain": 1, "seq": 1 },
        );
        assert!(c.violations.is_empty(), "{:?}", c.violations);
        // An ordered walk of everything is served by the index it follows.
        let c = find(
            "links",
            "audit.links",
            doc! {},
            doc! { "chain": 1, "seq": 1 },
        );
        assert!(c.violations.is_empty(), "{:?}", c.violations);
    }

    #[test]
    fn unserved_filters_and_sorts_are_caught() {
        // A field no index starts with.
        let c = find("links", "audit.list", doc! { "hash": "x" }, doc! {});
        assert_eq!(c.violations.len(), 1, "{:?}", c.violations);
        // A sort the index cannot give after a range on its first field.
        let c = find(
            "links",
            "audit.list",
            doc! { "at": { "$gt": 1_i64 } },
            doc! { "seq": 1 },
        );
        assert_eq!(c.violations.len(), 1, "{:?}", c.violations);
        // Mixed directions against (at, chain, seq).
        let c = find(
            "links",
            "audit.list",
            doc! {},
            doc! { "at": 1, "chain": -1 },
        );
        assert_eq!(c.violations.len(), 1, "{:?}", c.violations);
        // Everything, unordered.
        let c = find("seen_ids", "seen.purge_expired", doc! {}, doc! {});
        assert_eq!(c.violations.len(), 1, "{:?}", c.violations);
    }

    #[test]
    fn request_paths_must_fix_the_shard_key() {
        // Served by the (at, …) index, but a request that is not a scan.
        let c = find(
            "links",
            "wallets.load",
            doc! { "at": { "$gt": 1_i64 } },
            doc! {},
        );
        assert_eq!(c.violations.len(), 1, "{:?}", c.violations);
        assert!(c.violations[0].contains("shard key"), "{:?}", c.violations);
        // Half a compound shard key.
        let (c, _) = analyse(
            "delete",
            "db",
            &doc! { "delete": "seen_ids", "deletes": [{ "q": { "ns": "n" }, "limit": 1 }], "comment": "seen.mark" },
        );
        assert_eq!(c.violations.len(), 1, "{:?}", c.violations);
        // Unlabelled, or an unknown collection.
        let (c, _) = analyse(
            "find",
            "db",
            &doc! { "find": "links", "filter": { "chain": "a" }, "maxTimeMS": 3000 },
        );
        assert_eq!(c.violations.len(), 1, "{:?}", c.violations);
        let c = find("bindings", "x", doc! { "a": 1 }, doc! {});
        assert_eq!(c.violations.len(), 1, "{:?}", c.violations);
    }

    #[test]
    fn a_strict_log_fails_the_call_once_and_counts_by_label() {
        let log = CommandLog::strict();
        log.record(
            "find",
            "db",
            &doc! { "find": "links", "filter": { "chain": "a" }, "sort": { "seq": -1 }, "comment": "wallets.load", "maxTimeMS": 3000 },
        );
        log.record(
            "insert",
            "db",
            &doc! { "insert": "links", "comment": "wallets.commit" },
        );
        assert_eq!(log.check(), Ok(()));
        log.record(
            "find",
            "db",
            &doc! { "find": "links", "filter": { "hash": "h" }, "comment": "audit.list", "maxTimeMS": 3000 },
        );
        assert!(matches!(log.check(), Err(StoreError::Corrupt(_))));
        assert_eq!(log.check(), Ok(()), "reported once");
        assert_eq!(log.violations().len(), 1);
        let by = log.by_label();
        assert_eq!(by.get("wallets.load"), Some(&1));
        assert_eq!(by.get("wallets.commit"), Some(&1));
        assert!(log
            .unused_indexes()
            .contains(&"links.pending_at".to_owned()));
        assert!(!log.unused_indexes().contains(&"links.chain_seq".to_owned()));
        let lenient = CommandLog::new();
        lenient.record(
            "find",
            "db",
            &doc! { "find": "links", "filter": { "hash": "h" }, "comment": "x", "maxTimeMS": 3000 },
        );
        assert_eq!(lenient.check(), Ok(()));
        assert_eq!(lenient.violations().len(), 2, "unserved, and no shard key");
    }
}
