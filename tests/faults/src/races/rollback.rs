//! Verify, freeze, unfreeze, set-default and unbind racing on the same
//! cards, then each card's audited status changes replayed against its
//! listed status.
//!
//! Every successful change of a card's status is audited as `FROM -> TO`
//! (`-> pending_verification` for the bind). With versioned writes the
//! changes of a card form one chain from its bind to its current status.
//! The audit log may list two changes in another order than they were
//! written (the old code appends events after the write, each in its own
//! step), so the check does not trust the order: the changes, as edges
//! between statuses, must form one trail from the bind to the listed
//! status (an Eulerian trail: every status left as often as it was
//! entered, but the first and the last). A lost update breaks it: two
//! writers that both changed `active` (one to `frozen`, one to `inactive`)
//! leave `active` twice having entered it once; a change rolled back by a
//! stale write leaves a listed status the trail does not end in.

use std::collections::{BTreeMap, BTreeSet};

use super::cap::together;
use super::client::{tally, Client, Reply};
use super::{body_of, set, start, user, Found, Options, Store, Target};
use crate::workload::Kind;

const CARDS: usize = 3;
const WAVES: usize = 4;
const STATUSES: [&str; 6] = [
    "active",
    "frozen",
    "pending_verification",
    "pending_review",
    "inactive",
    "failed",
];

/// The `FROM -> TO` of an audit detail (`FROM` empty for a bind), when it
/// names statuses.
pub fn transition(detail: &str) -> Option<(String, String)> {
    // A bind's detail goes on with its consent after a `;`.
    let change = detail.split(';').next().unwrap_or(detail);
    let (from, to) = change.split_once("->")?;
    let (from, to) = (from.trim(), to.trim());
    let known = |s: &str| STATUSES.contains(&s);
    ((from.is_empty() || known(from)) && known(to)).then(|| (from.to_owned(), to.to_owned()))
}

/// Whether `edges` form one trail from `start` to `end` that uses every
/// edge once: every node is left as often as it is entered, but `start`
/// (left once more) and `end` (entered once more) unless they are the
/// same, and every edge is connected to `start`.
pub fn one_trail(edges: &[(String, String)], start: &str, end: &str) -> bool {
    let mut balance: BTreeMap<&str, i64> = BTreeMap::new();
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (f, t) in edges {
        *balance.entry(f).or_default() += 1;
        *balance.entry(t).or_default() -= 1;
        next.entry(f).or_default().push(t);
        next.entry(t).or_default().push(f);
    }
    *balance.entry(start).or_default() -= 1;
    *balance.entry(end).or_default() += 1;
    if balance.values().any(|b| *b != 0) {
        return false;
    }
    let mut seen = BTreeSet::from([start]);
    let mut todo = vec![start];
    while let Some(n) = todo.pop() {
        for m in next.get(n).into_iter().flatten() {
            if seen.insert(m) {
                todo.push(m);
            }
        }
    }
    edges
        .iter()
        .all(|(f, t)| seen.contains(f.as_str()) && seen.contains(t.as_str()))
}

pub(crate) async fn run(t: &Target, store: Store, o: &Options) -> anyhow::Result<Found> {
    let sets = vec![
        set("channels.mock.mode", "otp"),
        set("limits.binds_per_user_per_minute", 100_000),
        set("limits.binds_per_ip_per_minute", 0),
        set("limits.binds_per_card_per_hour", 0),
        set("limits.otp_attempts", 1000),
    ];
    let st = start(t, store, o, "rollback", false, sets).await?;
    let clients = async {
        Ok::<_, anyhow::Error>((st.client_as("admin").await?, st.client_as("auditor").await?))
    }
    .await;
    let r = match clients {
        Ok((admin, auditor)) => users(&st.api, &admin, &auditor, o.rounds * 2).await,
        Err(e) => Err(e),
    };
    st.stop().await;
    r
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Verify,
    Freeze,
    Unfreeze,
    SetDefault,
    Unbind,
}

async fn op(api: &Client, admin: &Client, u: &str, id: &str, op: Op) -> Reply {
    use reqwest::Method;
    let card = format!("/v1/users/{u}/cards/{id}");
    match op {
        Op::Verify => {
            api.send(
                Method::POST,
                &format!("{card}/verify"),
                Some(br#"{"otp":"123456"}"#),
                None,
            )
            .await
        }
        Op::Freeze => {
            admin
                .send(
                    Method::POST,
                    &format!("/v1/admin/users/{u}/cards/{id}/freeze"),
                    None,
                    None,
                )
                .await
        }
        Op::Unfreeze => {
            admin
                .send(
                    Method::POST,
                    &format!("/v1/admin/users/{u}/cards/{id}/unfreeze"),
                    None,
                    None,
                )
                .await
        }
        Op::SetDefault => {
            api.send(Method::PUT, &format!("{card}/default"), None, None)
                .await
        }
        Op::Unbind => api.send(Method::DELETE, &card, None, None).await,
    }
}

async fn users(api: &Client, admin: &Client, auditor: &Client, n: usize) -> anyhow::Result<Found> {
    let mut replies: Vec<Reply> = Vec::new();
    let mut details = Vec::new();
    let mut cards_checked = 0usize;
    let mut broken_chains = 0usize;
    let mut changes = 0usize;
    let mut default_faults = 0usize;
    let mut no_default = 0usize;
    for round in 0..n.max(1) {
        let u = user("rollback", round);
        let mut ids = Vec::new();
        for _ in 0..CARDS {
            let key = format!("races-rb-{}", uuid::Uuid::new_v4());
            let r = api.bind(&u, &body_of(&Kind::Normal.card())?, &key).await;
            let id = r
                .card_id()
                .ok_or_else(|| anyhow::anyhow!("bind for {u} answered {}", r.label()))?;
            ids.push(id.to_owned());
        }
        for wave in 0..WAVES {
            let mut ops: Vec<(usize, Op)> = Vec::new();
            for i in 0..CARDS {
                // The first wave races verifies of the waiting cards with
                // the changes of active ones; the later ones race freezes,
                // unfreezes and defaults.
                if wave == 0 {
                    ops.extend([
                        (i, Op::Verify),
                        (i, Op::Verify),
                        (i, Op::Verify),
                        (i, Op::Verify),
                        (i, Op::Freeze),
                        (i, Op::SetDefault),
                    ]);
                } else {
                    ops.extend([
                        (i, Op::Verify),
                        (i, Op::Freeze),
                        (i, Op::Freeze),
                        (i, Op::Unfreeze),
                        (i, Op::Unfreeze),
                        (i, Op::SetDefault),
                    ]);
                }
            }
            // One card unbound in the middle, another at the end.
            if wave == WAVES / 2 {
                ops.push((0, Op::Unbind));
            }
            if wave == WAVES - 1 {
                ops.push((1, Op::Unbind));
            }
            let got = together(api, ops.len(), |k| {
                let (i, o) = ops[k];
                let (api, admin, u, id) = (api.clone(), admin.clone(), u.clone(), ids[i].clone());
                async move { op(&api, &admin, &u, &id, o).await }
            })
            .await;
            replies.extend(got);
        }
        let listed = api.cards(&u).await?;
        let defaults: Vec<&serde_json::Value> =
            listed.iter().filter(|c| c["is_default"] == true).collect();
        if defaults.len() > 1 || defaults.iter().any(|c| c["status"] != "active") {
            default_faults += 1;
            details.push(format!(
                "{u}: default cards {:?}",
                defaults
                    .iter()
                    .map(|c| format!("{} {}", c["id"], c["status"]))
                    .collect::<Vec<_>>()
            ));
        }
        if defaults.is_empty() && listed.iter().any(|c| c["status"] == "active") {
            no_default += 1;
        }
        for id in &ids {
            let Some(card) = listed.iter().find(|c| c["id"] == id.as_str()) else {
                broken_chains += 1;
                details.push(format!("{u}: {id} is not listed"));
                continue;
            };
            let status = card["status"].as_str().unwrap_or("").to_owned();
            let events = auditor.audit(&format!("card_id={id}")).await?;
            let edges: Vec<(String, String)> = events
                .iter()
                .filter(|e| e["outcome"] == "ok")
                .filter_map(|e| e["detail"].as_str().and_then(transition))
                .collect();
            changes += edges.len();
            cards_checked += 1;
            if !one_trail(&edges, "", &status) {
                broken_chains += 1;
                details.push(format!(
                    "{u}: {id} is listed {status} after the audited changes {}",
                    edges
                        .iter()
                        .map(|(f, t)| format!("[{f} -> {t}]"))
                        .collect::<Vec<_>>()
                        .join(" ")
                ));
            }
        }
    }
    let broken = replies.iter().filter(|r| r.broken()).count();
    if broken > 0 {
        details.push(format!("{broken} answers 5xx or none"));
    }
    let figures = format!(
        "{broken_chains} of {cards_checked} cards whose {changes} audited status changes do not chain to the listed status; {default_faults} users with a wrong default ({no_default} with active cards and none); {} requests: {}",
        replies.len(),
        tally(&replies)
    );
    Ok(Found {
        pass: broken_chains == 0 && default_faults == 0 && broken == 0,
        figures,
        details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(f: &str, t: &str) -> (String, String) {
        (f.to_owned(), t.to_owned())
    }

    #[test]
    fn transitions_are_read_from_details() {
        assert_eq!(
            transition("-> pending_verification"),
            Some(e("", "pending_verification"))
        );
        assert_eq!(transition("active -> frozen"), Some(e("active", "frozen")));
        assert_eq!(
            transition("-> pending_verification; consent sha256 00 version \"v1\""),
            Some(e("", "pending_verification"))
        );
        assert_eq!(transition("attempt 2"), None);
        assert_eq!(transition("agreement -> gone"), None);
    }

    #[test]
    fn one_chain_passes_in_any_order() {
        let mut edges = vec![
            e("", "pending_verification"),
            e("pending_verification", "active"),
            e("active", "frozen"),
            e("frozen", "active"),
            e("active", "frozen"),
            e("frozen", "active"),
            e("active", "inactive"),
        ];
        assert!(one_trail(&edges, "", "inactive"));
        edges.reverse();
        assert!(one_trail(&edges, "", "inactive"));
        // Listed in a status the changes do not end in: rolled back.
        assert!(!one_trail(&edges, "", "frozen"));
    }

    #[test]
    fn a_lost_update_breaks_the_chain() {
        // Freeze and unbind both read `active` and both wrote.
        let edges = vec![
            e("", "pending_verification"),
            e("pending_verification", "active"),
            e("active", "frozen"),
            e("active", "inactive"),
        ];
        assert!(!one_trail(&edges, "", "inactive"));
        assert!(!one_trail(&edges, "", "frozen"));
        // Two verifies of one pending card.
        let edges = vec![
            e("", "pending_verification"),
            e("pending_verification", "active"),
            e("pending_verification", "active"),
        ];
        assert!(!one_trail(&edges, "", "active"));
        // A change from a state never entered.
        let edges = vec![e("", "pending_verification"), e("frozen", "active")];
        assert!(!one_trail(&edges, "", "active"));
    }
}
