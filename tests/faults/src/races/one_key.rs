//! One `Idempotency-Key` used by 16 parallel identical binds.

use super::cap::{together, PARALLEL};
use super::client::{tally, Client, Reply};
use super::{body_of, open_limits, start, user, Found, Options, Store, Target};
use crate::workload::Kind;

pub(crate) async fn run(t: &Target, store: Store, o: &Options) -> anyhow::Result<Found> {
    let st = start(t, store, o, "one-key", false, open_limits()).await?;
    let auditor = st.client_as("auditor").await;
    let r = match auditor {
        Ok(a) => rounds(&st.api, &a, o.rounds).await,
        Err(e) => Err(e),
    };
    st.stop().await;
    r
}

async fn rounds(api: &Client, auditor: &Client, rounds: usize) -> anyhow::Result<Found> {
    let mut all: Vec<Reply> = Vec::new();
    let mut details = Vec::new();
    let mut executions = Vec::new();
    let mut max_starts = 0u64;
    let mut max_cards = 0usize;
    let mut pass = true;
    for round in 0..rounds.max(1) {
        let u = user("key", round);
        let body = body_of(&Kind::Normal.card())?;
        let key = format!("races-key-{}", uuid::Uuid::new_v4());
        let before = api.channel_start_calls().await?;
        let replies = together(api, PARALLEL, |_| {
            let (api, u, body, key) = (api.clone(), u.clone(), body.clone(), key.clone());
            async move { api.bind(&u, &body, &key).await }
        })
        .await;
        let starts = api.channel_start_calls().await?.saturating_sub(before);
        let audited = auditor.channel_start_events(&u).await?;
        let cards = api.cards(&u).await?.len();
        let done: Vec<&Reply> = replies
            .iter()
            .filter(|r| !r.is(409, "idempotency_key_in_progress"))
            .collect();
        let originals = done.iter().filter(|r| !r.replayed).count();
        let distinct = {
            let mut d: Vec<&Reply> = Vec::new();
            for r in &done {
                if !d.iter().any(|x| x.same_as(r)) {
                    d.push(r);
                }
            }
            d.len()
        };
        let broken = replies.iter().filter(|r| r.broken()).count();
        let ok = starts == 1
            && audited == 1
            && cards == 1
            && originals == 1
            && distinct == 1
            && broken == 0;
        if !ok {
            pass = false;
            details.push(format!(
                "{u}: {starts} channel calls, {audited} channel_start events, {cards} card records, {originals} answers not replayed, {distinct} different answers ({})",
                tally(&replies)
            ));
        }
        executions.push(originals);
        max_starts = max_starts.max(starts);
        max_cards = max_cards.max(cards);
        all.extend(replies);
    }
    let figures = format!(
        "per key (×{}): at most {max_starts} channel starts, {max_cards} card records; binds run per key {:?}; answers {}",
        executions.len(),
        executions,
        tally(&all)
    );
    Ok(Found {
        pass,
        figures,
        details,
    })
}
