//! A bind that failed after a partial write, retried with its key.
//!
//! The store (a FerretDB of our own) is killed once the card is written
//! and the bind waits for its channel: the channel's answer cannot be
//! stored, the client gets a 5xx (or nothing). The store comes back and
//! the client retries with the same `Idempotency-Key`, as a careful client
//! does (backing off, honouring `Retry-After`), for up to the retry
//! budget. It must end with the card (a 2xx naming the card listed), never
//! with `409 card_already_bound` for its own card.
//!
//! The harness's rate limit stays (3 binds per user per minute): whether a
//! retry counts against it again shows in the figures.

use std::time::{Duration, Instant};

use super::client::{tally, Reply};
use super::{body_of, start, user, Found, NotRun, Options, Started, Store, Target};
use crate::cards::Card;

pub(crate) async fn run(t: &Target, store: Store, o: &Options) -> anyhow::Result<Found> {
    if store != Store::FerretDb {
        return Err(NotRun("needs a store to kill: FerretDB".into()).into());
    }
    // The key the failed attempt could not release (its store was dead)
    // is free again once its lease runs out: the short lease where the
    // binary lets it be set, else the built-in one (the retry budget
    // covers it).
    let (_, mut sets) = t.lease();
    let (channel, last4) = t.slow_channel(3000);
    sets.extend(channel);
    // A dead store is noticed within 2 s, as in the fault matrix.
    sets.push(super::set("storage.timeout_ms", 2000));
    let st = start(t, store, o, "partial", true, sets).await?;
    let r = partial(&st, last4, o.retry_budget).await;
    st.stop().await;
    r
}

fn transient(r: &Reply) -> bool {
    r.broken()
        || r.status == Some(429)
        || r.is(409, "conflict")
        || r.is(409, "idempotency_key_in_progress")
}

async fn partial(st: &Started, last4: &str, budget: Duration) -> anyhow::Result<Found> {
    let api = &st.api;
    let ferret = st
        .ferret
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no FerretDB of our own"))?;
    let u = user("partial", 0);
    let card = Card::ending(last4);
    let body = body_of(&card)?;
    let key = format!("races-partial-{}", uuid::Uuid::new_v4());
    let t0 = Instant::now();
    let first = {
        let (api, u, body, key) = (api.clone(), u.clone(), body.clone(), key.clone());
        tokio::spawn(async move { api.bind(&u, &body, &key).await })
    };
    let deadline = Instant::now() + Duration::from_millis(2500);
    loop {
        if api
            .cards(&u)
            .await?
            .iter()
            .any(|c| c["last4"] == card.last4())
        {
            break;
        }
        if Instant::now() > deadline {
            anyhow::bail!("the bind wrote no card within 2.5 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ferret.kill().await?;
    let killed_at = t0.elapsed();
    let a = first.await?;
    let a_at = t0.elapsed();
    if !transient(&a) {
        anyhow::bail!(
            "the bind got a final answer ({}) with its store dead: no partial write",
            a.label()
        );
    }
    ferret.restart().await?;
    let back_at = t0.elapsed();

    let mut tries: Vec<Reply> = Vec::new();
    let mut delay = Duration::from_millis(500);
    let end = Instant::now() + budget;
    let mut last = loop {
        let r = api.bind(&u, &body, &key).await;
        tries.push(r.clone());
        if !transient(&r) || Instant::now() >= end {
            break r;
        }
        let wait = r
            .retry_after
            .map(|s| Duration::from_secs(s.min(60)))
            .unwrap_or(delay)
            .max(delay);
        tokio::time::sleep(wait).await;
        delay = (delay * 2).min(Duration::from_secs(8));
    };
    let done_at = t0.elapsed();
    let mut permanent = false;
    if last.is(409, "card_already_bound") {
        // Whether it stays so: once more, after a pause.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let again = api.bind(&u, &body, &key).await;
        permanent = again.is(409, "card_already_bound");
        tries.push(again.clone());
        last = again;
    }
    let cards = api.cards(&u).await?;
    let mine: Vec<&serde_json::Value> = cards
        .iter()
        .filter(|c| c["last4"] == card.last4() && c["bin"] == card.bin())
        .collect();

    let mut details = Vec::new();
    if mine.len() != 1 {
        details.push(format!("{} records of the card", mine.len()));
    }
    match last.card_id() {
        Some(id) if mine.iter().any(|c| c["id"] == id) => {}
        Some(id) => details.push(format!("the retry was told card {id}, which is not listed")),
        None => details.push(format!(
            "the client never got its card: last answer {}{}{}",
            last.label(),
            if last.replayed { " (replayed)" } else { "" },
            if permanent {
                ", the same again 2 s later"
            } else {
                ""
            }
        )),
    }
    let figures = format!(
        "store killed at {:.1} s, first answer {} at {:.1} s, store back at {:.1} s; {} retries ({}), last {}{} at {:.1} s; card {}",
        killed_at.as_secs_f64(),
        a.label(),
        a_at.as_secs_f64(),
        back_at.as_secs_f64(),
        tries.len(),
        tally(&tries),
        last.label(),
        if permanent { " (permanent)" } else { "" },
        done_at.as_secs_f64(),
        mine.iter()
            .map(|c| c["status"].as_str().unwrap_or("?"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(Found {
        pass: details.is_empty(),
        figures,
        details,
    })
}
