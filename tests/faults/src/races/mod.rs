//! Race scenarios against a `cardbind` binary, over HTTP only, so that the
//! same scenario runs against binaries of different ages (issue 9, item 3:
//! each must fail on the old main and pass on the new code).
//!
//! * [`Scenario::Cap`]: 16 parallel binds of 16 different cards for one
//!   user with `limits.cards_per_user = 3`: at most 3 live cards, every
//!   other answer a clean refusal.
//! * [`Scenario::OneKey`]: 16 parallel identical binds under one
//!   `Idempotency-Key`: one channel start, one card, one answer (replayed)
//!   or `409 idempotency_key_in_progress`.
//! * [`Scenario::Lease`]: a bind whose channel call outlasts the
//!   idempotency lease, and the same request again once the lease has run
//!   out: the second must not run the bind again.
//! * [`Scenario::LeaseStall`]: two instances on one store; the instance
//!   running a bind is stopped (SIGSTOP) past the lease, the same request
//!   goes to the other instance, then the first resumes: the late holder
//!   must not store its answer over the new attempt's, and a retry must
//!   name the card.
//! * [`Scenario::LeaseFence`]: as `LeaseStall`, but the card is unbound
//!   while the first instance is stopped, so that the second binds it again
//!   and is still at work when the first resumes: the late holder must
//!   neither release nor complete the second's attempt (a request with the
//!   key meanwhile waits for the second's answer, which is the one stored).
//! * [`Scenario::Rollback`]: verify, freeze, unfreeze, set-default and
//!   unbind racing on the same cards: every card's audited status changes
//!   must chain from its bind to its listed status (no change from a state
//!   it was not in, no lost update), at most one default card.
//! * [`Scenario::Partial`]: the store (a FerretDB of our own) is killed
//!   while a bind waits for its channel, so that the card is written but
//!   the channel's answer is not; the client retries with the same key:
//!   it must get the card, never a permanent `409 card_already_bound`.
//!
//! Settings differ between binaries (a key an old binary does not know
//! stops its start-up): [`Target`] reads the binary's `defaults` and each
//! scenario picks what the binary has (see `Target::slow_channel`).
//! Run by hand: `cardbind-faults races` (main.rs, docs/operations.md
//! "Races"); the quick ones run in `cargo test` (tests/races.rs).

pub mod client;

mod cap;
mod lease;
mod one_key;
mod partial;
mod rollback;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::deps::OwnFerretDb;
use crate::service::{Known, Service, ServiceSpec, Storage, LAST4_SLOW, LAST4_TIMEOUT};
use client::Client;

/// The scenarios, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    Cap,
    OneKey,
    Lease,
    LeaseStall,
    LeaseFence,
    Rollback,
    Partial,
}

impl Scenario {
    pub const ALL: [Scenario; 7] = [
        Scenario::Cap,
        Scenario::OneKey,
        Scenario::Lease,
        Scenario::LeaseStall,
        Scenario::LeaseFence,
        Scenario::Rollback,
        Scenario::Partial,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Cap => "cap",
            Scenario::OneKey => "one-key",
            Scenario::Lease => "lease",
            Scenario::LeaseStall => "lease-stall",
            Scenario::LeaseFence => "lease-fence",
            Scenario::Rollback => "rollback",
            Scenario::Partial => "partial",
        }
    }

    pub fn parse(s: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|x| x.name() == s)
    }

    /// The stores it runs on: two instances need a store they share, a
    /// killed store needs a FerretDB of our own.
    pub fn stores(self) -> &'static [Store] {
        match self {
            Scenario::Cap | Scenario::OneKey | Scenario::Lease | Scenario::Rollback => {
                &[Store::Memory, Store::Sqlite, Store::FerretDb]
            }
            Scenario::LeaseStall | Scenario::LeaseFence | Scenario::Partial => &[Store::FerretDb],
        }
    }
}

/// Where the service keeps its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    Memory,
    /// The embedded SQLite store (the default of the new binary).
    Sqlite,
    /// FerretDB: `CARDBIND_TEST_MONGODB_URI` (a fresh database per
    /// service), or one of our own where the scenario kills it.
    FerretDb,
}

impl Store {
    pub const ALL: [Store; 3] = [Store::Memory, Store::Sqlite, Store::FerretDb];

    pub fn name(self) -> &'static str {
        match self {
            Store::Memory => "memory",
            Store::Sqlite => "sqlite",
            Store::FerretDb => "ferretdb",
        }
    }

    pub fn parse(s: &str) -> Option<Store> {
        Store::ALL.into_iter().find(|x| x.name() == s)
    }
}

/// A binary under test.
#[derive(Clone, Debug)]
pub struct Target {
    pub label: String,
    pub bin: PathBuf,
    pub known: Known,
}

/// The lease an old binary holds a key for (built in, not configurable).
pub const BUILT_IN_LEASE_SECONDS: u64 = 60;
/// The lease the scenarios configure where the binary lets them.
pub const SHORT_LEASE_SECONDS: u64 = 2;

impl Target {
    pub async fn new(label: &str, bin: PathBuf) -> anyhow::Result<Target> {
        let known = Known::of(&bin).await?;
        Ok(Target {
            label: label.to_owned(),
            bin,
            known,
        })
    }

    /// The idempotency lease in force, and the settings that make it so.
    pub fn lease(&self) -> (u64, Vec<(String, String)>) {
        if self.known.has("idempotency.lease_seconds") {
            (
                SHORT_LEASE_SECONDS,
                vec![set("idempotency.lease_seconds", SHORT_LEASE_SECONDS)],
            )
        } else {
            (BUILT_IN_LEASE_SECONDS, Vec::new())
        }
    }

    /// A channel call that takes `ms` milliseconds for cards ending with
    /// the returned last four: the mock's `slow` mode (answers like `otp`
    /// afterwards) where the binary has it, else its `timeout` mode (the
    /// call fails as timed out afterwards: the card goes to review). The
    /// resilience layer neither cuts it short nor retries it.
    pub fn slow_channel(&self, ms: u64) -> (Vec<(String, String)>, &'static str) {
        let mut sets = vec![
            set("channels.resilience.timeout_ms", ms + 10_000),
            set("channels.resilience.max_retries", 0),
        ];
        if self.known.has("channels.resilience.deadline_ms") {
            // (At most the largest deadline the service takes.)
            sets.push(set(
                "channels.resilience.deadline_ms",
                (ms + 10_000).min(25_000),
            ));
        }
        if self.known.has("channels.mock.slow_ms") {
            sets.push(set("channels.mock.slow_ms", ms));
            (sets, LAST4_SLOW)
        } else {
            sets.push(set("channels.mock.timeout_after_ms", ms));
            (sets, LAST4_TIMEOUT)
        }
    }
}

pub(crate) fn set(key: &str, v: impl ToString) -> (String, String) {
    (key.to_owned(), v.to_string())
}

/// Settings of a run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Config, data and logs of every service started.
    pub dir: PathBuf,
    /// A FerretDB (or MongoDB) for the scenarios that do not kill it.
    pub mongodb_uri: Option<String>,
    /// Users (rounds) per scenario where it repeats: cap, one-key, rollback.
    pub rounds: usize,
    /// How long a client keeps retrying in the partial-write scenario.
    pub retry_budget: Duration,
}

impl Options {
    /// `CARDBIND_TEST_MONGODB_URI` when set.
    pub fn from_env(dir: PathBuf) -> Options {
        Options {
            dir,
            mongodb_uri: std::env::var("CARDBIND_TEST_MONGODB_URI")
                .ok()
                .filter(|v| !v.is_empty()),
            rounds: 5,
            retry_budget: Duration::from_secs(150),
        }
    }
}

/// What a scenario found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    /// Not applicable or a dependency is missing (the reason).
    NotRun(String),
    /// The scenario itself could not run to its end (the reason).
    Error(String),
}

#[derive(Clone, Debug)]
pub struct Outcome {
    pub scenario: Scenario,
    pub store: Store,
    pub target: String,
    pub verdict: Verdict,
    /// The figures, one line.
    pub figures: String,
    /// Why it failed, example by example.
    pub details: Vec<String>,
}

/// A scenario's result before it is labelled.
pub(crate) struct Found {
    pub pass: bool,
    pub figures: String,
    pub details: Vec<String>,
}

/// Why a scenario did not run.
#[derive(Debug)]
pub(crate) struct NotRun(pub String);

impl std::fmt::Display for NotRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotRun {}

/// A service of the target on a store, and clients of it.
pub(crate) struct Started {
    pub service: Service,
    /// As the merchant backend (`service` role).
    pub api: Client,
    pub ferret: Option<OwnFerretDb>,
}

impl Started {
    /// A client under a token of `role` (`admin`, `auditor`).
    pub async fn client_as(&self, role: &str) -> anyhow::Result<Client> {
        let token = self.service.token(&format!("races-{role}"), role).await?;
        Ok(self.api.as_token(&token))
    }

    pub async fn stop(self) {
        self.service.stop(Duration::from_secs(10)).await;
        if let Some(f) = &self.ferret {
            f.stop().await;
        }
    }
}

/// The storage of a service on `store`; `own`: a FerretDB of our own (to
/// kill), else the shared one.
pub(crate) async fn storage_for(
    store: Store,
    o: &Options,
    own: bool,
    dir: &std::path::Path,
) -> anyhow::Result<(Storage, Option<OwnFerretDb>)> {
    Ok(match store {
        Store::Memory => (Storage::Memory, None),
        Store::Sqlite => (Storage::Sqlite, None),
        Store::FerretDb if own => {
            if !OwnFerretDb::available() {
                return Err(NotRun(
                    "needs a FerretDB to kill: run under scripts/test-services.sh".into(),
                )
                .into());
            }
            let f = OwnFerretDb::start(dir).await?;
            (Storage::Mongo(f.uri()), Some(f))
        }
        Store::FerretDb => match &o.mongodb_uri {
            Some(uri) => (Storage::Mongo(uri.clone()), None),
            None => {
                return Err(NotRun(
                    "needs CARDBIND_TEST_MONGODB_URI: run under scripts/test-services.sh".into(),
                )
                .into())
            }
        },
    })
}

/// The spec of a service of `t` with the harness's settings plus `sets`.
pub(crate) fn spec(
    t: &Target,
    storage: Storage,
    dir: PathBuf,
    mut sets: Vec<(String, String)>,
) -> ServiceSpec {
    if matches!(storage, Storage::Mongo(_) | Storage::MongoDb { .. }) {
        // FerretDB's SQLite handler runs one write at a time: 16 writers
        // on one wallet queue past the harness's 2 s (it answered 503 to
        // a quarter of the rollback scenario's requests on a loaded
        // 2-core machine). The scenarios judge correctness, not latency
        // (the fault matrix does that): a long timeout keeps the two
        // apart. A scenario's own setting comes later and wins.
        sets.insert(0, set("storage.timeout_ms", 15_000));
    }
    ServiceSpec {
        bin: t.bin.clone(),
        dir,
        storage,
        kms: None,
        sets,
        log_filter: "info".into(),
        jwt_secret: None,
    }
}

/// Starts a service of `t` on `store`; an old binary without the store is
/// [`NotRun`].
pub(crate) async fn start(
    t: &Target,
    store: Store,
    o: &Options,
    what: &str,
    own_ferretdb: bool,
    sets: Vec<(String, String)>,
) -> anyhow::Result<Started> {
    let dir = o.dir.join(format!(
        "{}-{}-{}-{}",
        t.label,
        what,
        store.name(),
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    ));
    std::fs::create_dir_all(&dir)?;
    let (storage, ferret) = storage_for(store, o, own_ferretdb, &dir).await?;
    let service = match spec(t, storage, dir, sets).start().await {
        Ok(s) => s,
        Err(e) => {
            if let Some(f) = &ferret {
                f.stop().await;
            }
            let text = format!("{e:#}");
            if store == Store::Sqlite && text.contains("unknown variant") {
                return Err(NotRun("no SQLite store in this binary".into()).into());
            }
            return Err(e);
        }
    };
    let api = Client::new(&service.base_url, &service.token)?;
    Ok(Started {
        service,
        api,
        ferret,
    })
}

/// Settings every scenario but the partial write shares: the channel
/// answers at once, no rate limit gets in the way (the partial-write
/// scenario keeps the harness's 3 binds per user per minute).
pub(crate) fn open_limits() -> Vec<(String, String)> {
    vec![
        set("channels.mock.mode", "instant"),
        set("limits.binds_per_user_per_minute", 100_000),
        set("limits.binds_per_ip_per_minute", 0),
        set("limits.binds_per_card_per_hour", 0),
    ]
}

/// A name for a user of this run.
pub(crate) fn user(what: &str, n: usize) -> String {
    format!(
        "r{}-{what}-{n}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    )
}

/// Runs one scenario of one target on one store.
pub async fn run_one(t: &Target, s: Scenario, store: Store, o: &Options) -> Outcome {
    let label = |verdict, figures: String, details| Outcome {
        scenario: s,
        store,
        target: t.label.clone(),
        verdict,
        figures,
        details,
    };
    if !s.stores().contains(&store) {
        return label(
            Verdict::NotRun(format!("{} does not run on {}", s.name(), store.name())),
            String::new(),
            Vec::new(),
        );
    }
    eprintln!("races: {} {} on {}", t.label, s.name(), store.name());
    let r = match s {
        Scenario::Cap => cap::run(t, store, o).await,
        Scenario::OneKey => one_key::run(t, store, o).await,
        Scenario::Lease => lease::run_slow(t, store, o).await,
        Scenario::LeaseStall => lease::run_two(t, store, o, false).await,
        Scenario::LeaseFence => lease::run_two(t, store, o, true).await,
        Scenario::Rollback => rollback::run(t, store, o).await,
        Scenario::Partial => partial::run(t, store, o).await,
    };
    match r {
        Ok(f) => label(
            if f.pass { Verdict::Pass } else { Verdict::Fail },
            f.figures,
            f.details,
        ),
        Err(e) => match e.downcast_ref::<NotRun>() {
            Some(n) => label(Verdict::NotRun(n.0.clone()), String::new(), Vec::new()),
            None => label(Verdict::Error(format!("{e:#}")), String::new(), Vec::new()),
        },
    }
}

/// Every scenario × store × target, in that order.
pub async fn run(
    targets: &[Target],
    scenarios: &[Scenario],
    stores: &[Store],
    o: &Options,
) -> Vec<Outcome> {
    let mut out = Vec::new();
    for s in scenarios {
        for store in stores.iter().filter(|x| s.stores().contains(x)) {
            for t in targets {
                let r = run_one(t, *s, *store, o).await;
                eprintln!(
                    "races: {} {} on {}: {:?} {}",
                    t.label,
                    s.name(),
                    store.name(),
                    r.verdict,
                    r.figures
                );
                out.push(r);
            }
        }
    }
    out
}

fn cell(o: &Outcome) -> String {
    let v = match &o.verdict {
        Verdict::Pass => "PASS".to_owned(),
        Verdict::Fail => "**FAIL**".to_owned(),
        Verdict::NotRun(why) => format!("not run ({why})"),
        Verdict::Error(why) => format!("ERROR ({why})"),
    };
    if o.figures.is_empty() {
        v
    } else {
        format!("{v}: {}", o.figures)
    }
}

/// A Markdown table, scenario × store rows, a column per target.
pub fn table(outcomes: &[Outcome], targets: &[Target]) -> String {
    let mut t = String::from("| scenario | store |");
    for x in targets {
        t.push_str(&format!(" {} |", x.label));
    }
    t.push_str("\n|---|---|");
    for _ in targets {
        t.push_str("---|");
    }
    t.push('\n');
    let mut rows: Vec<(Scenario, Store)> = Vec::new();
    for o in outcomes {
        if !rows.contains(&(o.scenario, o.store)) {
            rows.push((o.scenario, o.store));
        }
    }
    for (s, store) in rows {
        t.push_str(&format!("| {} | {} |", s.name(), store.name()));
        for x in targets {
            let c = outcomes
                .iter()
                .find(|o| o.scenario == s && o.store == store && o.target == x.label)
                .map(cell)
                .unwrap_or_default();
            t.push_str(&format!(" {} |", c.replace('|', "/")));
        }
        t.push('\n');
    }
    t
}

/// Whether every outcome passed or did not apply; errors and failures
/// make a run fail.
pub fn all_passed(outcomes: &[Outcome]) -> bool {
    outcomes
        .iter()
        .all(|o| matches!(o.verdict, Verdict::Pass | Verdict::NotRun(_)))
}

/// The body of a bind request, as bytes (identical requests are identical
/// bytes: the idempotency hash covers them).
pub(crate) fn body_of(card: &crate::cards::Card) -> anyhow::Result<Vec<u8>> {
    serde_json::to_vec(&card.body()).context("a bind body")
}
