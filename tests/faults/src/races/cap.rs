//! The per-user card cap under 16 parallel binds of different cards.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::client::{tally, Client, Reply, LIVE};
use super::{body_of, open_limits, set, start, user, Found, Options, Store, Target};
use crate::workload::Kind;

pub const CAP: usize = 3;
pub const PARALLEL: usize = 16;

/// Refusals a full wallet may answer: the cap, or a lost optimistic race
/// the client may retry (`409 conflict`, documented in docs/api.md).
fn clean_refusal(r: &Reply) -> bool {
    r.is(422, "card_limit_reached") || r.is(409, "conflict")
}

/// `PARALLEL` requests released together (the connections opened first,
/// so that they do not trickle in as connections are made).
pub(crate) async fn together<F, Fut>(api: &Client, n: usize, f: F) -> Vec<Reply>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Reply>,
{
    let warm = (0..n).map(|_| api.send(reqwest::Method::GET, "/healthz", None, None));
    futures::future::join_all(warm).await;
    let gate = Arc::new(tokio::sync::Barrier::new(n));
    let calls = (0..n).map(|i| {
        let gate = gate.clone();
        let call = f(i);
        async move {
            gate.wait().await;
            call.await
        }
    });
    futures::future::join_all(calls).await
}

pub(crate) async fn run(t: &Target, store: Store, o: &Options) -> anyhow::Result<Found> {
    let mut sets = open_limits();
    sets.push(set("limits.cards_per_user", CAP));
    let st = start(t, store, o, "cap", false, sets).await?;
    let r = rounds(&st.api, o.rounds).await;
    st.stop().await;
    r
}

async fn rounds(api: &Client, rounds: usize) -> anyhow::Result<Found> {
    let mut live_per_round = Vec::new();
    let mut ok_per_round = Vec::new();
    let mut all: Vec<Reply> = Vec::new();
    let mut details = Vec::new();
    let mut bad = 0usize;
    let mut mismatched = 0usize;
    for round in 0..rounds.max(1) {
        let u = user("cap", round);
        let bodies = (0..PARALLEL)
            .map(|_| body_of(&Kind::Normal.card()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let replies = together(api, PARALLEL, |i| {
            let key = format!("races-cap-{}", uuid::Uuid::new_v4());
            let (api, u, body) = (api.clone(), u.clone(), bodies[i].clone());
            async move { api.bind(&u, &body, &key).await }
        })
        .await;
        let cards = api.cards(&u).await?;
        let live: BTreeSet<String> = cards
            .iter()
            .filter(|c| c["status"].as_str().is_some_and(|s| LIVE.contains(&s)))
            .filter_map(|c| c["id"].as_str().map(str::to_owned))
            .collect();
        let answered: BTreeSet<String> = replies
            .iter()
            .filter_map(|r| r.card_id().map(str::to_owned))
            .collect();
        for r in replies.iter().filter(|r| !r.ok() && !clean_refusal(r)) {
            bad += 1;
            details.push(format!(
                "{u}: answered {} {}",
                r.label(),
                r.error.clone().unwrap_or_default()
            ));
        }
        if live != answered {
            mismatched += 1;
            details.push(format!(
                "{u}: {} live cards listed, {} binds answered 2xx; listed but not answered: {}, answered but not live: {}",
                live.len(),
                answered.len(),
                live.difference(&answered).count(),
                answered.difference(&live).count()
            ));
        }
        if live.len() > CAP {
            details.push(format!("{u}: {} live cards, cap {CAP}", live.len()));
        }
        if answered.is_empty() {
            details.push(format!("{u}: no bind succeeded ({})", tally(&replies)));
        }
        live_per_round.push(live.len());
        ok_per_round.push(answered.len());
        all.extend(replies);
    }
    let max_live = live_per_round.iter().copied().max().unwrap_or(0);
    let pass =
        max_live <= CAP && bad == 0 && mismatched == 0 && ok_per_round.iter().all(|n| *n > 0);
    let figures = format!(
        "max {max_live} live cards of cap {CAP} (per user of {} rounds: {:?}); answers {}",
        live_per_round.len(),
        live_per_round,
        tally(&all)
    );
    Ok(Found {
        pass,
        figures,
        details,
    })
}
