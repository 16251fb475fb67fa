//! Round trips and index coverage, counted by the driver's command
//! monitoring: every port method is called with a strict command log, the
//! commands each call sends are counted, and at the end every declared
//! index must have served a query (an index no query uses is dropped from
//! the schema table). Run with `--nocapture` to see the table that
//! `docs/storage.md` quotes.
//!
//! What the use cases send per HTTP operation, with their budgets, is
//! counted through the whole service in
//! `tests/tests/round_trip_budgets.rs` (crate `cardbind-tests`).

// Test code: a failed expectation is a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use std::future::Future;

use cardbind_mongo::{Command, CommandLog};
use cardbind_ports::audit::{AuditAction, AuditFilter, AuditLog, ChainId};
use cardbind_ports::store::CardData;
use cardbind_ports::store::{
    CardDataStore, ChannelRefs, Claim, DataKeyStore, IdempotencyStore, Lease, RateLimiter,
    RateTake, RateWindow, RefTarget, ReviewEntry, ReviewQueue, SeenIds, StoredResponse,
    WalletStore,
};
use cardbind_ports::testkit::{
    at, channel, event, family_wallets, sealed, user_id, wallet, wrapped_key,
};
use common::*;

struct Meter {
    log: CommandLog,
    rows: Vec<(String, Vec<String>)>,
}

impl Meter {
    /// Runs `f`, records the commands it sent under `what`, returns its
    /// value and how many commands it sent.
    async fn run<T, Fut: Future<Output = T>>(&mut self, what: &str, f: Fut) -> (T, usize) {
        self.log.clear();
        let v = f.await;
        let cmds: Vec<Command> = self.log.take();
        let names: Vec<String> = cmds
            .iter()
            .map(|c| format!("{} {}", c.name, c.collection.clone().unwrap_or_default()))
            .collect();
        let n = names.len();
        self.rows.push((what.to_owned(), names));
        (v, n)
    }
}

fn response() -> StoredResponse {
    StoredResponse {
        status: 201,
        content_type: "application/json".into(),
        body: b"{}".to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_port_method_counted_and_every_query_indexed() {
    let Some(uri) = uri() else { return };
    let name = fresh_db_name();
    let (s, log) = strict_store(&uri, &name).await;
    s.ensure_indexes().await.unwrap();
    let mut m = Meter {
        log: log.clone(),
        rows: Vec::new(),
    };

    let u = user_id(&unique("u"));
    let w = wallet(&u, 2, at(0));
    let card = w.bindings()[0].id.clone();
    let ev = |a| vec![event(a, Some(&u), Some(&card))];

    // Wallets.
    let (r, n) = m.run("wallets.load (none)", s.load(&u)).await;
    assert!(r.unwrap().is_none());
    assert_eq!(n, 1);
    let (h1, n) = m
        .run(
            "wallets.commit (first)",
            s.commit(&w, None, ev(AuditAction::BindingCreate), at(0)),
        )
        .await;
    let h1 = h1.unwrap();
    assert_eq!(n, 1);
    let (r, n) = m.run("wallets.load", s.load(&u)).await;
    assert_eq!(r.unwrap().unwrap().head, h1);
    assert_eq!(n, 1);
    let (h2, n) = m
        .run(
            "wallets.commit",
            s.commit(&w, Some(h1.clone()), ev(AuditAction::BindingVerify), at(1)),
        )
        .await;
    let h2 = h2.unwrap();
    assert_eq!(h2.seq, 2);
    assert_eq!(n, 1);
    let (r, n) = m
        .run(
            "wallets.commit (conflict)",
            s.commit(&w, Some(h1), ev(AuditAction::BindingVerify), at(1)),
        )
        .await;
    assert!(r.is_err());
    assert_eq!(n, 1);
    // Another instance never saw that head: it reads the newest link first.
    let (other, other_log) = strict_store(&uri, &name).await;
    let mut om = Meter {
        log: other_log.clone(),
        rows: Vec::new(),
    };
    let (r, n) = om
        .run(
            "wallets.commit (a head never seen here)",
            other.commit(&w, Some(h2), ev(AuditAction::BindingVerify), at(2)),
        )
        .await;
    assert_eq!(r.unwrap().seq, 3);
    assert_eq!(n, 2, "find, insert");
    m.rows.extend(std::mem::take(&mut om.rows));
    let (r, _) = m
        .run(
            "wallets.pending_links",
            s.pending_links(at(-10), at(10), None, 10),
        )
        .await;
    assert_eq!(r.unwrap().len(), 3);

    // The wallets of several users (a secondary's card list reads the
    // primaries'): one find whatever their number. They are users who gave a share: a primary's commit also clears the
    // flag `load_many` finds on the links before it. (A database of its
    // own, so that the counts below do not see these chains.)
    let (fs, flog) = strict_store(&uri, &fresh_db_name()).await;
    fs.ensure_indexes().await.unwrap();
    let mut fm = Meter {
        log: flog.clone(),
        rows: Vec::new(),
    };
    let others: Vec<_> = (0..3).map(|i| user_id(&unique(&format!("p{i}")))).collect();
    for o in &others {
        let (p, _) = family_wallets(o, &u, at(0));
        let ev = |a| vec![event(a, Some(o), None)];
        let h = fs
            .commit(&p, None, ev(AuditAction::ShareCreate), at(0))
            .await
            .unwrap();
        let (r, n) = fm
            .run(
                "wallets.commit (a primary's)",
                fs.commit(&p, Some(h), ev(AuditAction::ShareAccept), at(1)),
            )
            .await;
        r.unwrap();
        assert_eq!(n, 2, "insert, and the flag off the link before");
    }
    let (r, n) = fm
        .run("wallets.load_many (3 primaries)", fs.load_many(&others))
        .await;
    let got = r.unwrap();
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|g| g.head.seq == 2), "the newest links");
    assert_eq!(n, 1, "one find");
    let mut ask = others.clone();
    ask.push(u.clone());
    ask.push(user_id(&unique("nobody")));
    let (r, n) = fm
        .run("wallets.load_many (and 2 others)", fs.load_many(&ask))
        .await;
    assert_eq!(r.unwrap().len(), 3, "users never seen are left out");
    assert_eq!(n, 3, "one find, then one per user who never gave a share");
    let (r, n) = fm.run("wallets.load_many (none)", fs.load_many(&[])).await;
    assert!(r.unwrap().is_empty());
    assert_eq!(n, 0);
    assert_eq!(flog.violations(), Vec::<String>::new());
    m.rows.extend(std::mem::take(&mut fm.rows));

    // Audit.
    let (r, n) = m
        .run(
            "audit.append_system (cold)",
            s.append_system(vec![event(AuditAction::BinTableImport, None, None)], at(1)),
        )
        .await;
    r.unwrap();
    assert_eq!(n, 2, "a process reads the head once");
    let (r, n) = m
        .run(
            "audit.append_system",
            s.append_system(vec![event(AuditAction::RetentionPurge, None, None)], at(2)),
        )
        .await;
    r.unwrap();
    assert_eq!(n, 1);
    let filters = [
        ("audit.list", AuditFilter::default()),
        (
            "audit.list (user)",
            AuditFilter {
                user_id: Some(u.clone()),
                ..Default::default()
            },
        ),
        (
            "audit.list (card)",
            AuditFilter {
                binding_id: Some(card.clone()),
                ..Default::default()
            },
        ),
        (
            "audit.list (action, since)",
            AuditFilter {
                action: Some(AuditAction::BindingVerify),
                since: Some(at(0)),
                ..Default::default()
            },
        ),
    ];
    for (what, f) in filters {
        let (r, _) = m.run(what, AuditLog::list(&s, &f, None, 50)).await;
        assert!(!r.unwrap().is_empty(), "{what}");
    }
    let (r, _) = m
        .run("audit.links", s.links(Some((ChainId::System, 0)), 50))
        .await;
    assert_eq!(
        r.unwrap().len(),
        2 + 3,
        "the system chain, then the user's (by stored name)"
    );

    // Card data and channel references.
    let d = CardData {
        binding: card.clone(),
        user: u.clone(),
        generation: 1,
        sealed: sealed(1),
    };
    let (r, n) = m.run("card_data.put", CardDataStore::put(&s, &d)).await;
    r.unwrap();
    assert_eq!(n, 1);
    let (r, n) = m
        .run("card_data.get", CardDataStore::get(&s, &u, &card, 1))
        .await;
    assert_eq!(r.unwrap(), Some(d));
    assert_eq!(n, 1);
    let (r, n) = m
        .run("card_data.owner", CardDataStore::owner(&s, &card))
        .await;
    assert_eq!(r.unwrap(), Some(u.clone()));
    assert_eq!(n, 1);
    let target = RefTarget {
        user: u.clone(),
        binding: card.clone(),
    };
    let (r, n) = m
        .run(
            "channel_refs.put",
            ChannelRefs::put(&s, &channel("mock"), "agr-1", &target, 1),
        )
        .await;
    r.unwrap();
    assert_eq!(n, 1);
    // The same reference given by another bind of the card: the insert
    // finds it; it is read, deleted as read and inserted as that bind's
    // (never updated in place: FerretDB does not tie an update to its
    // read).
    let (r, n) = m
        .run(
            "channel_refs.put (again, another bind)",
            ChannelRefs::put(&s, &channel("mock"), "agr-1", &target, 2),
        )
        .await;
    r.unwrap();
    assert_eq!(n, 4, "insert, find, delete, insert");
    let (r, n) = m
        .run(
            "channel_refs.find",
            ChannelRefs::find(&s, &channel("mock"), "agr-1"),
        )
        .await;
    assert_eq!(r.unwrap(), Some(target));
    assert_eq!(n, 1);

    // Idempotency.
    let k = unique("k");
    let (r, n) = m
        .run(
            "idempotency.claim (new key)",
            s.claim("s", &k, "h", at(0), at(30)),
        )
        .await;
    assert_eq!(r.unwrap(), Claim::Acquired(Lease { attempt: 1 }));
    assert_eq!(n, 1);
    let (r, _) = m
        .run(
            "idempotency.claim (in progress)",
            s.claim("s", &k, "h", at(1), at(30)),
        )
        .await;
    assert_eq!(
        r.unwrap(),
        Claim::InProgress {
            lease_until: at(30)
        }
    );
    let (r, n) = m
        .run(
            "idempotency.renew",
            s.renew("s", &k, Lease { attempt: 1 }, at(40)),
        )
        .await;
    assert!(r.unwrap());
    assert_eq!(n, 1);
    let (r, n) = m
        .run(
            "idempotency.complete",
            s.complete("s", &k, Lease { attempt: 1 }, &response()),
        )
        .await;
    assert!(r.unwrap());
    assert_eq!(n, 1);
    let (r, _) = m
        .run(
            "idempotency.claim (replay)",
            s.claim("s", &k, "h", at(2), at(30)),
        )
        .await;
    assert_eq!(r.unwrap(), Claim::Completed(response()));
    let k2 = unique("k");
    s.claim("s", &k2, "h", at(0), at(30)).await.unwrap();
    let (r, n) = m
        .run(
            "idempotency.release",
            s.release("s", &k2, Lease { attempt: 1 }),
        )
        .await;
    assert!(r.unwrap());
    assert_eq!(n, 1);
    let (r, _) = m
        .run(
            "idempotency.claim (after release)",
            s.claim("s", &k2, "h", at(1), at(30)),
        )
        .await;
    assert_eq!(r.unwrap(), Claim::Acquired(Lease { attempt: 2 }));

    // Rate limits: a bind's windows, all fresh, then all taken once.
    let windows: Vec<RateWindow> = (0..3)
        .map(|i| RateWindow {
            key: unique(&format!("w{i}")),
            limit: 5,
            expires_at: at(60),
        })
        .collect();
    let (r, n) = m
        .run("rates.take (3 fresh windows)", s.take(&windows, at(0)))
        .await;
    assert_eq!(r.unwrap().len(), 3);
    assert_eq!(n, 1);
    let (r, n) = m
        .run("rates.take (3 windows, again)", s.take(&windows, at(0)))
        .await;
    assert_eq!(r.unwrap(), [RateTake::Taken(2); 3]);
    assert_eq!(n, 1, "this process knows where it took last");
    // Another instance knows nothing of this one's takes: slot 1 is
    // taken, it reads the windows' slots and takes free ones.
    let (r, n) = om
        .run(
            "rates.take (3 windows, another instance)",
            other.take(&windows, at(0)),
        )
        .await;
    assert_eq!(
        r.unwrap()
            .iter()
            .filter(|t| matches!(t, RateTake::Taken(_)))
            .count(),
        3
    );
    assert_eq!(n, 3, "insert, read, insert");
    m.rows.extend(om.rows);
    assert_eq!(other_log.violations(), Vec::<String>::new());
    // A take one window refuses: its slots in the two others are given back.
    let full = RateWindow {
        key: unique("full"),
        limit: 1,
        expires_at: at(60),
    };
    s.take(std::slice::from_ref(&full), at(0)).await.unwrap();
    let fresh = |name: &str| RateWindow {
        key: unique(name),
        limit: 5,
        expires_at: at(60),
    };
    let mixed = [fresh("wa"), full, fresh("wb")];
    let (r, n) = m
        .run(
            "rates.take (refused by 1 of 3 windows)",
            s.take(&mixed, at(0)),
        )
        .await;
    assert_eq!(
        r.unwrap(),
        [RateTake::Untaken, RateTake::Full, RateTake::Untaken]
    );
    assert_eq!(
        n, 3,
        "insert, read the full window, give back both slots in one delete"
    );

    // Seen ids.
    let id = unique("n");
    let (r, n) = m
        .run("seen.mark (new)", s.mark("ns", &id, at(0), at(10)))
        .await;
    assert!(r.unwrap());
    assert_eq!(n, 1);
    let (r, _) = m
        .run("seen.mark (again)", s.mark("ns", &id, at(0), at(10)))
        .await;
    assert!(!r.unwrap());
    let (r, n) = m.run("seen.seen", s.seen("ns", &id, at(0))).await;
    assert!(r.unwrap());
    assert_eq!(n, 1);

    // Data keys.
    let o = unique("o");
    let (r, n) = m
        .run("data_keys.get (none)", DataKeyStore::get(&s, &o))
        .await;
    assert!(r.unwrap().is_none());
    assert_eq!(n, 1);
    let (r, n) = m
        .run(
            "data_keys.put_if_absent (new)",
            s.put_if_absent(&wrapped_key(&o, b"k1", 1)),
        )
        .await;
    r.unwrap();
    assert_eq!(n, 1);
    let (r, _) = m
        .run(
            "data_keys.put_if_absent (exists)",
            s.put_if_absent(&wrapped_key(&o, b"k9", 1)),
        )
        .await;
    assert_eq!(r.unwrap().wrapped, b"k1");
    let (r, n) = m.run("data_keys.get", DataKeyStore::get(&s, &o)).await;
    assert!(r.unwrap().is_some());
    assert_eq!(n, 1);
    let (r, _) = m
        .run(
            "data_keys.replace",
            s.replace(&wrapped_key(&o, b"k2", 2), 1),
        )
        .await;
    r.unwrap();
    let (r, _) = m
        .run("data_keys.list", DataKeyStore::list(&s, None, 10))
        .await;
    assert_eq!(r.unwrap().len(), 1);
    let (r, _) = m
        .run("data_keys.delete", DataKeyStore::delete(&s, &o))
        .await;
    assert!(r.unwrap());

    // Review queue.
    let e = ReviewEntry {
        binding: card.clone(),
        user: u.clone(),
        since: at(0),
        link: 3,
    };
    let (r, n) = m.run("review.add", s.add(&e)).await;
    r.unwrap();
    assert_eq!(n, 1);
    let (r, n) = m.run("review.get", ReviewQueue::get(&s, &card)).await;
    assert_eq!(r.unwrap(), Some(e));
    assert_eq!(n, 1);
    let (r, _) = m.run("review.list", ReviewQueue::list(&s, None, 10)).await;
    assert_eq!(r.unwrap().len(), 1);
    let (r, n) = m.run("review.remove", s.remove(&card, 3)).await;
    r.unwrap();
    assert_eq!(n, 1);

    // Ends of life.
    let entry = ChannelRefs::find_entry(&s, &channel("mock"), "agr-1")
        .await
        .unwrap()
        .unwrap();
    let (r, n) = m
        .run(
            "channel_refs.delete_entry",
            ChannelRefs::delete_entry(&s, &entry),
        )
        .await;
    assert_eq!(r.unwrap(), 1);
    assert_eq!(n, 1);
    let (r, n) = m
        .run(
            "channel_refs.delete_binding",
            ChannelRefs::delete_binding(&s, &u, &card, Some(2)),
        )
        .await;
    r.unwrap();
    assert_eq!(n, 1);
    let (r, n) = m
        .run(
            "channel_refs.delete_binding (every generation)",
            ChannelRefs::delete_binding(&s, &u, &card, None),
        )
        .await;
    r.unwrap();
    assert_eq!(n, 1);
    let (r, n) = m
        .run(
            "card_data.delete_generation (another)",
            CardDataStore::delete_generation(&s, &u, &card, 999),
        )
        .await;
    assert_eq!(r.unwrap(), 0);
    assert_eq!(n, 1);
    let (r, n) = m
        .run(
            "card_data.delete",
            CardDataStore::delete(&s, &u, &card, None),
        )
        .await;
    assert_eq!(r.unwrap(), 1);
    assert_eq!(n, 1);
    let (r, _) = m
        .run("purge (all four)", s.purge(at(1000), at(1000), at(1000)))
        .await;
    let counts = r.unwrap();
    assert!(
        counts.audit_links >= 2 && counts.rate_slots == 9 + 1 && counts.seen_ids == 1,
        "{counts:?}"
    );
    assert_eq!(
        counts.idempotency_records,
        3 + 3,
        "records of both keys: {counts:?}"
    );

    eprintln!("\n{:<40} {:>3}  commands", "port method (case)", "n");
    for (what, names) in &m.rows {
        eprintln!("{what:<40} {:>3}  {}", names.len(), names.join(", "));
    }
    assert_eq!(log.violations(), Vec::<String>::new());
    let other_unused = other_log.unused_indexes();
    let unused: Vec<String> = log
        .unused_indexes()
        .into_iter()
        .filter(|i| other_unused.contains(i))
        .collect();
    assert_eq!(unused, Vec::<String>::new(), "indexes no query used");
}
