//! Storage round trips per HTTP operation, through the whole service
//! (HTTP → use cases → MongoDB adapter) on FerretDB, counted by the
//! driver's command monitoring, with budgets that fail the test when an
//! operation sends more commands than its budget.
//!
//! The same log holds every query against the adapter's schema table
//! (`cardbind_mongo::schema`): each filter must be served by a declared
//! index (or `_id`), and each request-path filter on a per-user collection
//! must fix that collection's shard key. The test fails on any query that
//! breaks a rule, and on a declared index no query of the service used.
//!
//! Needs `CARDBIND_TEST_MONGODB_URI`: run under `bash
//! scripts/test-services.sh cargo test -p cardbind-tests --test
//! round_trip_budgets -- --nocapture` (the table is printed).

// Test code: helpers outside #[test] fns fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::future::Future;

use cardbind::config::MockModeSetting;
use cardbind_mongo::{Command, CommandLog};
use cardbind_tests::{idem_key, user_id, Brand, Response, Storage, TestApp, TestCard};
use cardbind_usecases::RequestContext;

/// One measured operation.
struct Row {
    op: String,
    status: Option<u16>,
    commands: Vec<Command>,
    budget: Option<usize>,
}

impl Row {
    fn by_label(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for c in &self.commands {
            let label = c.label.clone().unwrap_or_else(|| "(no label)".into());
            *m.entry(format!("{label} {}", c.name)).or_insert(0) += 1;
        }
        m
    }
}

/// Counts the commands each operation causes.
struct Meter {
    log: CommandLog,
    rows: Vec<Row>,
}

/// Collections of the BIN table store (same client, read only at start-up
/// and by the background refresh, which this test sets to once a day).
fn is_bin_table(c: &Command) -> bool {
    c.collection
        .as_deref()
        .is_some_and(|n| n.starts_with("bin_table_"))
}

impl Meter {
    /// Runs `op` alone and records what it sent.
    async fn measure<T>(
        &mut self,
        op: &str,
        budget: Option<usize>,
        f: impl Future<Output = T>,
        status: impl Fn(&T) -> Option<u16>,
    ) -> (T, usize) {
        self.log.clear();
        let out = f.await;
        let commands = self.log.take();
        let n = commands.len();
        self.rows.push(Row {
            op: op.to_owned(),
            status: status(&out),
            commands,
            budget,
        });
        (out, n)
    }

    /// One HTTP request.
    async fn http(
        &mut self,
        op: &str,
        budget: Option<usize>,
        f: impl Future<Output = Response>,
    ) -> (Response, usize) {
        self.measure(op, budget, f, |r| Some(r.status)).await
    }

    fn print(&self) {
        eprintln!(
            "\n{:<48} {:>6} {:>8} {:>6}  by port method",
            "operation", "status", "commands", "budget"
        );
        for r in &self.rows {
            let labels: Vec<String> = r
                .by_label()
                .into_iter()
                .map(|(l, n)| format!("{l} ×{n}"))
                .collect();
            eprintln!(
                "{:<48} {:>6} {:>8} {:>6}  {}",
                r.op,
                r.status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "-".into()),
                r.commands.len(),
                r.budget
                    .map(|b| b.to_string())
                    .unwrap_or_else(|| "-".into()),
                labels.join(", ")
            );
        }
    }
}

impl Meter {
    /// Every distinct query shape sent: port method, command, collection,
    /// the fields fixed by equality, the fields only ranged, the sort.
    fn print_query_shapes(&self) {
        let mut shapes = std::collections::BTreeSet::new();
        for c in self.rows.iter().flat_map(|r| &r.commands) {
            for q in &c.queries {
                let ranged: Vec<&String> = q.fields.difference(&q.equal).collect();
                shapes.insert(format!(
                    "{:<34} {:<7} {:<13} equal {:?} range {:?} sort {:?}",
                    c.label.as_deref().unwrap_or("(no label)"),
                    c.name,
                    c.collection.as_deref().unwrap_or("-"),
                    q.equal,
                    ranged,
                    q.sort
                ));
            }
        }
        eprintln!("\nquery shapes ({}):", shapes.len());
        for s in shapes {
            eprintln!("  {s}");
        }
    }
}

fn card_id(v: &serde_json::Value) -> String {
    v["id"].as_str().expect("card id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_stays_within_its_round_trip_budget_and_every_query_is_indexed() {
    let log = CommandLog::new();
    let opened = log.clone();
    let Some(app) = TestApp::spawn_on_stores(
        Storage::Mongo,
        |c| {
            c.channels.mock.mode = MockModeSetting::Instant;
            c.channels
                .mock
                .card_modes
                .insert("0003".into(), MockModeSetting::Otp);
            c.channels
                .mock
                .card_modes
                .insert("0004".into(), MockModeSetting::Timeout);
            // A timed-out start goes to review at once.
            c.channels.mock.timeout_after_ms = 5_000;
            c.channels.resilience.timeout_ms = 200;
            c.channels.resilience.max_retries = 0;
            c.channels.resilience.breaker_failures = 1000;
            c.limits.binds_per_user_per_minute = 100;
            c.limits.binds_per_ip_per_minute = 1000;
            // No background work while requests are counted: the purge is
            // off (`base_config`) and the BIN table is checked once a day.
            c.bins.refresh_interval_seconds = 86_400;
        },
        |cfg| async move {
            cardbind::compose::stores::mongo(&cfg, Some(opened))
                .await
                .expect("the monitored MongoDB store opens")
        },
    )
    .await
    else {
        return;
    };
    let mut m = Meter {
        log: log.clone(),
        rows: Vec::new(),
    };

    // --- The first bind a database sees also makes the fingerprint key
    // and the digest key of the idempotency records (once per database:
    // `data_keys` get, put_if_absent, each); each instance then reads them
    // again once per cache lifetime (5 min or 10,000 uses).
    // A new user's own key is inserted without a read first (the bind
    // found no wallet: `CardVault::seal_for_new_owner`).
    let (r, _) = m
        .http(
            "bind (first of the database: + fingerprint and digest keys)",
            Some(13),
            app.bind(&user_id("first"), &TestCard::visa(), &idem_key()),
        )
        .await;
    r.expect_status(201);

    // --- Bind: a new user, a new card, a channel that binds at once.
    let alice = user_id("alice");
    let (r, bind_new) = m
        .http(
            "bind (new user, new card, instant)",
            Some(9),
            app.bind(&alice, &TestCard::visa(), &idem_key()),
        )
        .await;
    let first = card_id(&r.expect_status(201));
    assert_eq!(r.json()["status"], "active", "{}", r.describe());

    // The same request again: replayed from the idempotency record.
    let key = idem_key();
    let card = TestCard::new(Brand::Mastercard);
    let (r, _) = m
        .http(
            "bind (existing user, new card, instant)",
            Some(10),
            app.bind(&alice, &card, &key),
        )
        .await;
    r.expect_status(201);
    let (r, replay) = m
        .http(
            "bind replayed (same Idempotency-Key)",
            Some(2),
            app.bind(&alice, &card, &key),
        )
        .await;
    r.expect_status(201);
    assert_eq!(r.header("idempotent-replayed").as_deref(), Some("true"));
    assert!(replay <= 2);

    // --- Listing: one round trip whatever the number of cards.
    let bob = user_id("bob");
    app.bind_ok(&bob, &TestCard::visa()).await;
    let (r, list_1) = m
        .http(
            "list cards (1 card)",
            Some(2),
            app.get(&format!("/v1/users/{bob}/cards"), &app.service_token()),
        )
        .await;
    assert_eq!(
        r.expect_status(200)["cards"].as_array().map(Vec::len),
        Some(1)
    );
    for _ in 1..10 {
        app.bind_ok(&bob, &TestCard::visa()).await;
    }
    let (r, list_10) = m
        .http(
            "list cards (10 cards)",
            Some(2),
            app.get(&format!("/v1/users/{bob}/cards"), &app.service_token()),
        )
        .await;
    assert_eq!(
        r.expect_status(200)["cards"].as_array().map(Vec::len),
        Some(10)
    );
    assert_eq!(list_10, list_1, "the listing's cost grew with the cards");
    let (r, _) = m
        .http("get one card", Some(1), app.get_card(&alice, &first))
        .await;
    r.expect_status(200);

    // --- Bind needing an OTP, then verify.
    let carol = user_id("carol");
    let (r, _) = m
        .http(
            "bind (new user, new card, OTP)",
            Some(9),
            app.bind(
                &carol,
                &TestCard::ending(Brand::UnionPay, "0003"),
                &idem_key(),
            ),
        )
        .await;
    let otp_card = card_id(&r.expect_status(201));
    let (r, verify) = m
        .http(
            "verify (right code)",
            Some(6),
            app.verify(&carol, &otp_card, "123456"),
        )
        .await;
    assert_eq!(r.expect_status(200)["status"], "active");
    let dave = user_id("dave");
    let wrong = card_id(
        &app.bind(&dave, &TestCard::ending(Brand::Visa, "0003"), &idem_key())
            .await
            .expect_status(201),
    );
    let (r, _) = m
        .http(
            "verify (wrong code)",
            Some(6),
            app.verify(&dave, &wrong, "000000"),
        )
        .await;
    r.assert_error(422, "invalid_otp");

    // --- Managing cards.
    let second = card_id(&app.list_cards(&alice).await[1]);
    let (r, _) = m
        .http("set default", Some(2), app.set_default(&alice, &second))
        .await;
    assert_eq!(r.expect_status(200)["is_default"], true);
    let admin = app.admin_token();
    let (r, _) = m
        .http(
            "freeze (admin)",
            Some(2),
            app.admin_action(&admin, &alice, &second, "freeze"),
        )
        .await;
    assert_eq!(r.expect_status(200)["status"], "frozen");
    let (r, _) = m
        .http(
            "unfreeze (admin)",
            Some(2),
            app.admin_action(&admin, &alice, &second, "unfreeze"),
        )
        .await;
    assert_eq!(r.expect_status(200)["status"], "active");
    let (r, unbind) = m.http("unbind", Some(6), app.unbind(&alice, &first)).await;
    assert_eq!(r.expect_status(200)["status"], "inactive");

    // --- A wallet keeps the cards that ended last: the unbind that ends
    // one more lets the oldest go, and deletes what could be left of it.
    let gina = user_id("gina");
    let mut ended = Vec::new();
    for _ in 0..cardbind_domain::ENDED_CARDS_KEPT {
        let id = card_id(&app.bind_ok(&gina, &TestCard::visa()).await);
        app.unbind(&gina, &id).await.expect_status(200);
        ended.push(id);
    }
    let last = card_id(&app.bind_ok(&gina, &TestCard::visa()).await);
    let (r, _) = m
        .http(
            "unbind (a 21st ended card: the oldest leaves)",
            Some(6),
            app.unbind(&gina, &last),
        )
        .await;
    assert_eq!(r.expect_status(200)["status"], "inactive");
    app.get_card(&gina, &ended[0])
        .await
        .assert_error(404, "not_found");
    assert_eq!(
        app.get_card(&gina, &ended[1]).await.expect_status(200)["status"],
        "inactive"
    );

    // --- A channel's notification activates a card waiting for its OTP.
    let erin = user_id("erin");
    let pending = card_id(
        &app.bind(&erin, &TestCard::ending(Brand::Jcb, "0003"), &idem_key())
            .await
            .expect_status(201),
    );
    let notification_id = format!("n-{}", uuid_like());
    let (body, sig) = app.mock_notification(&notification_id, &pending, "signed");
    let (r, _) = m
        .http(
            "notification (card activated)",
            Some(6),
            app.notify("mock", body.clone(), Some(&sig)),
        )
        .await;
    r.expect_status(200);
    assert_eq!(
        app.get_card(&erin, &pending).await.json()["status"],
        "active"
    );
    let (r, _) = m
        .http(
            "notification (delivered again)",
            Some(1),
            app.notify("mock", body, Some(&sig)),
        )
        .await;
    r.expect_status(200);

    // --- A signing naming an agreement other than the reference the
    // bind's start gave (Alipay's `agreement_no`, WeChat Pay's
    // `contract_id`): the agreement is recorded for the card, one write.
    let other = card_id(
        &app.bind(
            &erin,
            &TestCard::ending(Brand::Mastercard, "0003"),
            &idem_key(),
        )
        .await
        .expect_status(201),
    );
    let (body, sig) = app.mock_notification_naming(
        &format!("n-{}", uuid_like()),
        &other,
        "signed",
        &format!("agr-{}", uuid_like()),
    );
    let (r, _) = m
        .http(
            "notification (card activated, the agreement recorded)",
            Some(6),
            app.notify("mock", body, Some(&sig)),
        )
        .await;
    r.expect_status(200);
    assert_eq!(app.get_card(&erin, &other).await.json()["status"], "active");

    // --- A signing of a card this service never held: its audit trail is
    // asked, and the agreement left alone.
    let stranger = uuid::Uuid::now_v7().to_string();
    let (body, sig) = app.mock_notification(&format!("n-{}", uuid_like()), &stranger, "signed");
    let (r, _) = m
        .http(
            "notification (signing of a card never held)",
            Some(4),
            app.notify("mock", body, Some(&sig)),
        )
        .await;
    r.expect_status(200);

    // --- A card the channel could not take waits for review; approved.
    let frank = user_id("frank");
    let (r, _) = m
        .http(
            "bind (new user, channel times out: review)",
            Some(9),
            app.bind(&frank, &TestCard::ending(Brand::Visa, "0004"), &idem_key()),
        )
        .await;
    let v = r.expect_status(202);
    assert_eq!(v["status"], "pending_review", "{v}");
    let in_review = card_id(&v);
    let (r, _) = m.http("list reviews (1 entry)", None, app.reviews()).await;
    r.expect_status(200);
    let (r, _) = m
        .http(
            "review approve",
            Some(4),
            app.review_decision(&in_review, "approve"),
        )
        .await;
    assert_eq!(r.expect_status(200)["status"], "active");

    // --- Audit listings (admin walks across users: no shard key needed,
    // but every filter must be served by an index).
    let auditor = app.auditor_token();
    for (what, q) in [
        ("audit events (all)", String::new()),
        ("audit events (user)", format!("?user_id={alice}")),
        ("audit events (card)", format!("?card_id={second}")),
        ("audit events (action)", "?action=binding.unbind".to_owned()),
    ] {
        let (r, _) = m
            .http(
                what,
                None,
                app.get(&format!("/v1/audit/events{q}"), &auditor),
            )
            .await;
        r.expect_status(200);
    }

    // --- Erasure: the wallet read and written, then per card of the
    // wallet its data and its channel reference deleted, then the key
    // destroyed (3: read, tombstone, husking), after the record of the
    // erasure's start in the service's chain (an insert, after a read of
    // the chain's head when this process does not know it).
    let (r, _) = m
        .http(
            "erase user (2 cards, 1 of them unbound)",
            Some(2 + 2 * 2 + 3 + 2),
            app.post_empty(&format!("/v1/admin/users/{alice}/erase"), &admin),
        )
        .await;
    r.expect_status(200);

    // --- The service's background work, for the index check.
    let usecases = app.running().built.usecases.clone();
    let retention = app.config.retention().expect("retention");
    let (r, _) = m
        .measure(
            "background: retention purge",
            None,
            usecases.purge(&RequestContext::service("purge"), retention),
            |_| None,
        )
        .await;
    r.expect("the purge runs");
    let (r, _) = m
        .measure(
            "background: reconcile",
            None,
            usecases.reconcile(0, 100),
            |_| None,
        )
        .await;
    r.expect("reconcile runs");
    // (Alice's erasure above finished: the starts are listed, and her
    // user.erase after hers.)
    let (r, _) = m
        .measure(
            "background: reconcile's unfinished erasures",
            None,
            usecases.finish_erasures(0),
            |_| None,
        )
        .await;
    let finished = r.expect("the erasures' check runs");
    assert_eq!(finished.unfinished, 0, "{finished:?}");

    m.print();
    m.print_query_shapes();
    eprintln!(
        "\nbind {bind_new}, verify {verify}, list {list_1} (1 card) / {list_10} (10 cards), unbind {unbind}"
    );

    // Budgets.
    let over: Vec<String> = m
        .rows
        .iter()
        .filter(|r| r.budget.is_some_and(|b| r.commands.len() > b))
        .map(|r| {
            format!(
                "{}: {} commands, budget {} ({:?})",
                r.op,
                r.commands.len(),
                r.budget.unwrap_or_default(),
                r.by_label()
            )
        })
        .collect();
    // The rules: every query indexed, request paths on one shard, every
    // command labelled by its port method; the BIN table store (not on
    // any request path) is not counted.
    let stray: Vec<String> = m
        .rows
        .iter()
        .flat_map(|r| {
            r.commands
                .iter()
                .filter(|c| is_bin_table(c))
                .map(|c| format!("{}: {c:?}", r.op))
        })
        .collect();
    let violations: Vec<String> = m
        .rows
        .iter()
        .flat_map(|r| {
            r.commands
                .iter()
                .flat_map(move |c| c.violations.iter().map(move |v| format!("{}: {v}", r.op)))
        })
        .collect();
    assert_eq!(violations, Vec::<String>::new(), "queries breaking a rule");
    assert_eq!(
        stray,
        Vec::<String>::new(),
        "BIN table reads on a request path"
    );
    // A non-unique index exists only to serve queries: each must serve one
    // of the service's. A unique index is also its collection's commit
    // point, used by every insert even when no query reads through it.
    let unique: Vec<String> = cardbind_mongo::schema::SCHEMA
        .iter()
        .flat_map(|c| {
            c.indexes
                .iter()
                .filter(|i| i.unique)
                .map(move |i| format!("{}.{}", c.name, i.name))
        })
        .collect();
    let (unused_unique, unused): (Vec<String>, Vec<String>) = log
        .unused_indexes()
        .into_iter()
        .partition(|i| unique.contains(i));
    eprintln!("unique indexes no query read through (commit points only): {unused_unique:?}");
    assert_eq!(
        unused,
        Vec::<String>::new(),
        "declared indexes that no query of the service used"
    );
    assert_eq!(over, Vec::<String>::new(), "operations over their budget");
}

fn uuid_like() -> String {
    idem_key().trim_start_matches("idem-").to_owned()
}
