//! An idempotency key whose lease runs out while its bind still runs.
//!
//! * `lease`: one instance, a channel call longer than the lease, the same
//!   request again once the lease has run out. A lease renewed while the
//!   work runs makes the second request wait and replay; an unrenewed one
//!   lets it run the bind a second time.
//! * `lease-stall`: two instances on one store. The instance running the
//!   bind is stopped (SIGSTOP: a GC pause, a frozen VM) until its lease has
//!   run out, the same request goes to the other instance, then the first
//!   resumes and finishes. The late holder must not store its answer over
//!   the new attempt's (fencing), and a retry must name the card.

use std::time::{Duration, Instant};

use anyhow::Context;

use super::client::{Client, Reply};
use super::{
    body_of, open_limits, spec, start, user, Found, NotRun, Options, Started, Store, Target,
};
use crate::cards::Card;
use crate::service::{Service, Storage};

/// The local master key's file in a data directory.
const MASTER_KEY: &str = "master.key";

/// Whether the idempotency layer releases the key after this answer (the
/// client may retry with it) rather than storing it.
fn transient(r: &Reply) -> bool {
    r.broken()
        || r.status == Some(429)
        || r.is(409, "conflict")
        || r.is(409, "idempotency_key_in_progress")
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn replayed(r: &Reply) -> &'static str {
    if r.replayed {
        " (replayed)"
    } else {
        ""
    }
}

/// The one record of the card ending `last4` in `cards`, or why not.
fn one_record<'a>(
    cards: &'a [serde_json::Value],
    card: &Card,
) -> Result<&'a serde_json::Value, String> {
    let mine: Vec<&serde_json::Value> = cards
        .iter()
        .filter(|c| c["last4"] == card.last4() && c["bin"] == card.bin())
        .collect();
    match mine.as_slice() {
        [one] => Ok(one),
        other => Err(format!("{} records of the card", other.len())),
    }
}

pub(crate) async fn run_slow(t: &Target, store: Store, o: &Options) -> anyhow::Result<Found> {
    let (lease, mut sets) = t.lease();
    let hold = Duration::from_secs(lease + 1);
    // The channel answers 2 s after the second request arrives.
    let (channel, last4) = t.slow_channel(lease * 1000 + 3000);
    sets.extend(open_limits());
    sets.extend(channel);
    let st = start(t, store, o, "lease", false, sets).await?;
    let r = slow(&st, hold, last4).await;
    st.stop().await;
    r
}

async fn slow(st: &Started, hold: Duration, last4: &str) -> anyhow::Result<Found> {
    let api = &st.api;
    let auditor = st.client_as("auditor").await?;
    let u = user("lease", 0);
    let card = Card::ending(last4);
    let body = body_of(&card)?;
    let key = format!("races-lease-{}", uuid::Uuid::new_v4());
    let before = api.channel_start_calls().await?;
    let t0 = Instant::now();
    let first = {
        let (api, u, body, key) = (api.clone(), u.clone(), body.clone(), key.clone());
        tokio::spawn(async move {
            let r = api.bind(&u, &body, &key).await;
            (r, t0.elapsed())
        })
    };
    tokio::time::sleep(hold).await;
    let b = api.bind(&u, &body, &key).await;
    let b_at = t0.elapsed();
    let (a, a_at) = first.await?;
    let c = api.bind(&u, &body, &key).await;
    let starts = api.channel_start_calls().await?.saturating_sub(before);
    let audited = auditor.channel_start_events(&u).await?;
    let cards = api.cards(&u).await?;

    let mut details = Vec::new();
    if transient(&a) {
        anyhow::bail!(
            "the first bind did not get a final answer ({}): the scenario needs one",
            a.label()
        );
    }
    if !(b.same_as(&a) || b.is(409, "idempotency_key_in_progress")) {
        details.push(format!(
            "the second request ran the bind again: it answered {}{} where the first answered {}",
            b.label(),
            replayed(&b),
            a.label()
        ));
    }
    if !c.same_as(&a) {
        details.push(format!(
            "the answer stored for the key is not the first request's: a retry got {}{}",
            c.label(),
            replayed(&c)
        ));
    }
    if starts > 1 || audited > 1 {
        details.push(format!(
            "{starts} channel calls, {audited} channel_start events"
        ));
    }
    let status = match one_record(&cards, &card) {
        Ok(rec) => {
            let s = rec["status"].as_str().unwrap_or("").to_owned();
            if a.ok() && a.body["status"].as_str() != Some(s.as_str()) {
                details.push(format!(
                    "the first request was told {} but the card is {s}",
                    a.body["status"]
                ));
            }
            s
        }
        Err(e) => {
            details.push(e.clone());
            e
        }
    };
    let figures = format!(
        "first {} at {}; same key again at {}: {}{} at {}; retry {}{}; {starts} channel start(s), card {status}",
        a.label(),
        secs(a_at),
        secs(hold),
        b.label(),
        replayed(&b),
        secs(b_at),
        c.label(),
        replayed(&c),
    );
    Ok(Found {
        pass: details.is_empty(),
        figures,
        details,
    })
}

/// Two instances of `t` on one fresh FerretDB database, one master key,
/// one token secret; `b_sets` are added to instance b's settings.
async fn two_instances(
    t: &Target,
    o: &Options,
    what: &str,
    sets: Vec<(String, String)>,
    b_sets: Vec<(String, String)>,
) -> anyhow::Result<(Service, Service)> {
    let uri = o.mongodb_uri.clone().ok_or_else(|| {
        NotRun("needs CARDBIND_TEST_MONGODB_URI: run under scripts/test-services.sh".into())
    })?;
    let database = format!("races_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let secret = format!(
        "races-{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let mut services: Vec<Service> = Vec::new();
    for name in ["a", "b"] {
        let dir = o
            .dir
            .join(format!("{}-{what}-{name}-{}", t.label, &database[6..]));
        // One local master key for both (the first instance made it).
        if let Some(first) = services.first() {
            let from = first.data_dir().join(MASTER_KEY);
            let to = dir.join("data");
            std::fs::create_dir_all(&to)?;
            std::fs::copy(&from, to.join(MASTER_KEY))
                .with_context(|| format!("copying {}", from.display()))?;
        }
        let mut mine = sets.clone();
        if name == "b" {
            mine.extend(b_sets.iter().cloned());
        }
        let mut s = spec(
            t,
            Storage::MongoDb {
                uri: uri.clone(),
                database: database.clone(),
            },
            dir,
            mine,
        );
        s.jwt_secret = Some(secret.clone());
        match s.start().await {
            Ok(x) => services.push(x),
            Err(e) => {
                for x in services {
                    x.stop(Duration::from_secs(10)).await;
                }
                return Err(e);
            }
        }
    }
    let b = services.pop().context("instance b")?;
    let a = services.pop().context("instance a")?;
    Ok((a, b))
}

/// How long instance a's channel call takes.
const A_CHANNEL_MS: u64 = 3000;
/// How long instance b's takes in `lease-fence`.
const B_CHANNEL_MS: u64 = 12_000;

/// Runs `lease-stall` or `lease-fence`.
pub(crate) async fn run_two(
    t: &Target,
    store: Store,
    o: &Options,
    fence: bool,
) -> anyhow::Result<Found> {
    if store != Store::FerretDb {
        return Err(NotRun("two instances need a shared store: FerretDB".into()).into());
    }
    let (lease, mut sets) = t.lease();
    let (channel, last4) = t.slow_channel(A_CHANNEL_MS);
    sets.extend(open_limits());
    sets.extend(channel);
    // In `lease-fence`, b's channel call outlasts a's resumption and the
    // request made after a's late answer, so that request finds b at work.
    let b_sets = if fence {
        t.slow_channel(B_CHANNEL_MS).0
    } else {
        Vec::new()
    };
    let what = if fence { "lease-fence" } else { "lease-stall" };
    let (a, b) = two_instances(t, o, what, sets, b_sets).await?;
    let r = if fence {
        fenced(&a, &b, lease, last4).await
    } else {
        stall(&a, &b, lease, last4).await
    };
    // A stopped instance cannot stop.
    let _ = a.signal("CONT").await;
    a.stop(Duration::from_secs(10)).await;
    b.stop(Duration::from_secs(10)).await;
    r
}

/// Binds on instance a and stops it (SIGSTOP) once the card is written,
/// while it waits for its channel. Returns the clients (a, b, auditor on
/// b), the user, card, body, key, the first request and the card's id.
struct Stalled {
    api_a: Client,
    api_b: Client,
    auditor: Client,
    user: String,
    card: Card,
    body: Vec<u8>,
    key: String,
    first: tokio::task::JoinHandle<Reply>,
    card_id: String,
    stopped: Instant,
    before: u64,
}

async fn bind_and_stop(
    a: &Service,
    b: &Service,
    last4: &str,
    what: &str,
) -> anyhow::Result<Stalled> {
    let api_a = Client::new(&a.base_url, &a.token)?;
    let api_b = api_a.at(&b.base_url);
    let auditor = api_b.as_token(&b.token("races-auditor", "auditor").await?);
    let u = user(what, 0);
    let card = Card::ending(last4);
    let body = body_of(&card)?;
    let key = format!("races-{what}-{}", uuid::Uuid::new_v4());
    let before = api_a.channel_start_calls().await? + api_b.channel_start_calls().await?;
    let first = {
        let (api, u, body, key) = (api_a.clone(), u.clone(), body.clone(), key.clone());
        tokio::spawn(async move { api.bind(&u, &body, &key).await })
    };
    // Once the card is written, instance a is waiting for its channel.
    let deadline = Instant::now() + Duration::from_millis(2500);
    let card_id = loop {
        let cards = api_b.cards(&u).await?;
        if let Ok(rec) = one_record(&cards, &card) {
            break rec["id"].as_str().unwrap_or("").to_owned();
        }
        if Instant::now() > deadline {
            anyhow::bail!("the first bind wrote no card within 2.5 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    a.signal("STOP").await?;
    Ok(Stalled {
        api_a,
        api_b,
        auditor,
        user: u,
        card,
        body,
        key,
        first,
        card_id,
        stopped: Instant::now(),
        before,
    })
}

async fn stall(a: &Service, b: &Service, lease: u64, last4: &str) -> anyhow::Result<Found> {
    let st = bind_and_stop(a, b, last4, "stall").await?;
    let (u, card, body, key) = (&st.user, &st.card, &st.body, &st.key);
    tokio::time::sleep(Duration::from_secs(lease + 1)).await;
    let second = st.api_b.bind(u, body, key).await;
    a.signal("CONT").await?;
    let held = st.stopped.elapsed();
    let late = st.first.await?;
    let retry = st.api_b.bind(u, body, key).await;
    let starts = (st.api_a.channel_start_calls().await? + st.api_b.channel_start_calls().await?)
        .saturating_sub(st.before);
    let audited = st.auditor.channel_start_events(u).await?;
    let cards = st.api_b.cards(u).await?;

    let mut details = Vec::new();
    let stored = if !retry.replayed {
        "none (the retry ran)"
    } else if retry.same_as(&second) {
        "the second request's"
    } else if retry.same_as(&late) {
        "the late holder's"
    } else {
        "another"
    };
    if !transient(&second) && !retry.same_as(&second) {
        details.push(format!(
            "the late holder replaced the new attempt's stored answer {} with its own {}: a retry gets {}{}",
            second.label(),
            late.label(),
            retry.label(),
            replayed(&retry)
        ));
    }
    if audited > 1 {
        details.push(format!("{audited} channel starts were applied to the card"));
    }
    let listed = match one_record(&cards, card) {
        Ok(rec) => {
            let id = rec["id"].as_str().unwrap_or("").to_owned();
            for (who, r) in [("the late holder", &late), ("the retry", &retry)] {
                if r.ok() && r.card_id() != Some(id.as_str()) {
                    details.push(format!(
                        "{who} was told card {:?} but {id} is listed",
                        r.card_id()
                    ));
                }
            }
            format!("{} {}", rec["status"].as_str().unwrap_or(""), &id)
        }
        Err(e) => {
            details.push(e.clone());
            e
        }
    };
    if !retry.ok() {
        details.push(format!(
            "a retry with the key does not get the card: {}{}",
            retry.label(),
            replayed(&retry)
        ));
    }
    let figures = format!(
        "instance a stopped {} in its bind; the same key on instance b: {}{}; a's late answer {}; retry {}{}; stored answer: {stored}; {starts} channel call(s), {audited} applied; card {listed}",
        secs(held),
        second.label(),
        replayed(&second),
        late.label(),
        retry.label(),
        replayed(&retry),
    );
    Ok(Found {
        pass: details.is_empty(),
        figures,
        details,
    })
}

/// `lease-fence`: instance a stalls in its bind past the lease; meanwhile
/// the card it was binding is unbound and the same request (same key)
/// goes to instance b, which takes the key over and binds the card again,
/// its channel call under way when a resumes. Whatever a's late answer,
/// it must neither store it as the key's answer nor release b's hold on
/// the key: a request with the key while b still works must wait for
/// (or replay) b's answer, and b's answer is the one stored.
async fn fenced(a: &Service, b: &Service, lease: u64, last4: &str) -> anyhow::Result<Found> {
    let st = bind_and_stop(a, b, last4, "fence").await?;
    let (u, card, body, key) = (&st.user, &st.card, &st.body, &st.key);
    tokio::time::sleep(Duration::from_secs(lease + 1)).await;
    let unbind = st
        .api_b
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/users/{u}/cards/{}", st.card_id),
            None,
            None,
        )
        .await;
    if !unbind.ok() {
        anyhow::bail!("the waiting card could not be unbound: {}", unbind.label());
    }
    let t_b = Instant::now();
    let second = {
        let (api, u, body, key) = (st.api_b.clone(), u.clone(), body.clone(), key.clone());
        tokio::spawn(async move { api.bind(&u, &body, &key).await })
    };
    // b is in its channel call (B_CHANNEL_MS) when a resumes.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    a.signal("CONT").await?;
    let held = st.stopped.elapsed();
    let late = st.first.await?;
    let during_sent = t_b.elapsed();
    let during = st.api_b.bind(u, body, key).await;
    let during_at = t_b.elapsed();
    let second = second.await?;
    let second_at = t_b.elapsed();
    if during_sent >= second_at {
        anyhow::bail!(
            "b answered ({} at {}) before the key was tried again at {}: nothing to judge",
            second.label(),
            secs(second_at),
            secs(during_sent)
        );
    }
    let after = st.api_b.bind(u, body, key).await;
    let cards = st.api_b.cards(u).await?;

    let mut details = Vec::new();
    let waited = during.same_as(&second) || during.is(409, "idempotency_key_in_progress");
    if !waited {
        details.push(format!(
            "a request with the key while b still held it ran (answered {}{} at {}, b answered {} at {}): the late holder freed or completed b's attempt",
            during.label(),
            replayed(&during),
            secs(during_at),
            second.label(),
            secs(second_at)
        ));
    }
    let stored = if !after.replayed {
        "none (ran again)"
    } else if after.same_as(&second) {
        "b's"
    } else if after.same_as(&late) {
        "the late holder's"
    } else if after.same_as(&during) {
        "the request made while b held the key"
    } else {
        "another"
    };
    if !(transient(&second) || after.same_as(&second)) {
        details.push(format!(
            "the answer stored for the key is {stored}, not b's {}: a retry gets {}{}",
            second.label(),
            after.label(),
            replayed(&after)
        ));
    }
    let listed = match one_record(&cards, card) {
        Ok(rec) => {
            let id = rec["id"].as_str().unwrap_or("").to_owned();
            if second.ok() && second.card_id() != Some(id.as_str()) {
                details.push(format!(
                    "b was told card {:?} but {id} is listed",
                    second.card_id()
                ));
            }
            rec["status"].as_str().unwrap_or("").to_owned()
        }
        Err(e) => {
            details.push(e.clone());
            e
        }
    };
    let figures = format!(
        "a stopped {} in its bind, its card unbound meanwhile; the key on b: {} at {}; a's late answer {}; the key again while b worked: {}{} at {}; stored answer: {stored}; card {listed}",
        secs(held),
        second.label(),
        secs(second_at),
        late.label(),
        during.label(),
        replayed(&during),
        secs(during_at),
    );
    Ok(Found {
        pass: details.is_empty(),
        figures,
        details,
    })
}
