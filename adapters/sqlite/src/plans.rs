//! Every statement is a search of an index, never a scan of a table and
//! never a sort: its cost follows what it returns, not what is stored. (A
//! statement may walk its own argument: `json_each` over a bound JSON
//! array, which the plan shows as a scan of the virtual table `arg`.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cardbind_domain::{BindingId, Timestamp, UserId};
use cardbind_ports::audit::{AuditAction, AuditCursor, AuditFilter, ChainId};

use crate::{SqliteOptions, SqliteStore};

fn plan(c: &rusqlite::Connection, sql: &str) -> Vec<String> {
    // Parameters left unbound are NULL: the plan does not depend on them.
    let mut s = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let mut rows = s.raw_query();
    let mut out = Vec::new();
    while let Some(r) = rows.next().unwrap() {
        out.push(r.get::<_, String>(3).unwrap());
    }
    out
}

fn assert_searches(c: &rusqlite::Connection, name: &str, sql: &str) {
    let lines = plan(c, sql);
    for l in &lines {
        let scan = l.starts_with("SCAN ")
            && l != "SCAN CONSTANT ROW"
            && !l.starts_with("SCAN arg VIRTUAL TABLE");
        assert!(!scan, "{name} scans: {lines:?}\n{sql}");
        assert!(!l.contains("TEMP B-TREE"), "{name} sorts: {lines:?}\n{sql}");
    }
}

#[test]
fn no_statement_scans_or_sorts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plans.sqlite3");
    let _store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
    let c = rusqlite::Connection::open(&path).unwrap();
    let all = [
        crate::chain::STATEMENTS,
        crate::card_data::STATEMENTS,
        crate::idempotency::STATEMENTS,
        crate::small::STATEMENTS,
        crate::bins::STATEMENTS,
    ];
    let mut n = 0;
    for (name, sql) in all.iter().flat_map(|s| s.iter()) {
        assert_searches(&c, name, sql);
        n += 1;
    }
    assert!(n >= 37, "{n} statements");

    // A page of link stamps after the first seeks to the last link read,
    // not to the window's start.
    let after = plan(&c, crate::chain::LINK_STAMPS_AFTER);
    assert!(
        after[0].contains("USING PRIMARY KEY ((at,chain,seq)>(?,?,?)"),
        "{after:?}"
    );

    // Idempotency attempts are found through their key's index, and the
    // purge deletes the rows by rowid (the table is appended in rowid
    // order, schema 7).
    let statement = |name: &str| {
        crate::idempotency::STATEMENTS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, sql)| *sql)
            .unwrap()
    };
    for (name, step) in [
        ("NEWEST_ATTEMPT", "USING INDEX idempotency_key"),
        ("PURGE_ATTEMPTS", "USING INTEGER PRIMARY KEY (rowid=?)"),
    ] {
        let lines = plan(&c, statement(name));
        assert!(lines.iter().any(|l| l.contains(step)), "{name}: {lines:?}");
    }

    // Every shape of an audit listing.
    let t = Timestamp::from_unix_millis(5);
    let cursor = AuditCursor {
        at: t,
        chain: ChainId::System,
        seq: 3,
        index: 1,
    };
    let user = Some(UserId::parse("u").unwrap());
    let binding = Some(BindingId::parse("b").unwrap());
    let action = Some(AuditAction::BindingFreeze);
    for mask in 0..32u32 {
        let bit = |i: u32| mask & (1 << i) != 0;
        let f = AuditFilter {
            user_id: user.clone().filter(|_| bit(0)),
            binding_id: binding.clone().filter(|_| bit(1)),
            action: action.filter(|_| bit(2)),
            since: Some(t).filter(|_| bit(3)),
            until: Some(t).filter(|_| bit(4)),
        };
        for after in [None, Some(&cursor)] {
            let (sql, _) = crate::chain::list_query(&f, after, 10).unwrap();
            assert_searches(&c, &format!("list {f:?} after {after:?}"), &sql);
        }
    }
}

#[test]
fn a_scan_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plans.sqlite3");
    let _store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
    let c = rusqlite::Connection::open(&path).unwrap();
    let lines = plan(&c, "SELECT * FROM card_data WHERE user = 'u'");
    assert!(lines.iter().any(|l| l.starts_with("SCAN ")), "{lines:?}");
    let lines = plan(&c, "SELECT * FROM review_queue ORDER BY since");
    assert!(lines.iter().any(|l| l.contains("TEMP B-TREE")), "{lines:?}");
    // Walking the argument is allowed; a table joined to it by a column no
    // index leads with is still a scan.
    let lines = plan(
        &c,
        "SELECT l.seq FROM json_each(?1) AS arg JOIN links AS l ON l.wallet = arg.value",
    );
    assert!(
        lines.iter().any(|l| l.starts_with("SCAN l"))
            || lines.iter().any(|l| l.contains("AUTOMATIC")),
        "{lines:?}"
    );
}
