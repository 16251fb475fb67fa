//! The store reconciled with what the workload's clients were told, and
//! when the service is healthy again after a fault (split from
//! `workload`, which re-exports both).

use serde_json::Value;

use crate::workload::{Api, Flow, Kind, Outcome};

/// What the store shows, reconciled with what the clients were told.
#[derive(Clone, Debug, Default)]
pub struct Reconciliation {
    /// Binds answered 201/202 whose card is not listed.
    pub lost: usize,
    /// Cards listed more than once for one (user, card).
    pub duplicated: usize,
    /// Listed in a state that contradicts a definite answer (verified but
    /// not active, unbound but live, refused but live).
    pub wrong_state: usize,
    /// Users whose list could not be read.
    pub unreadable: usize,
    pub details: Vec<String>,
}

/// Lists every flow's user and checks the store against the answers.
pub async fn reconcile(api: &Api, phase: usize, flows: &[Flow]) -> Reconciliation {
    let mut r = Reconciliation::default();
    use futures::StreamExt;
    let listed: Vec<Option<Vec<Value>>> = futures::stream::iter(flows)
        .map(|f| api.list_all(phase, &f.user))
        .buffered(4)
        .collect()
        .await;
    for (f, cards) in flows.iter().zip(listed) {
        let Some(cards) = cards else {
            r.unreadable += 1;
            r.details
                .push(format!("{}: the card list could not be read", f.user));
            continue;
        };
        let mine: Vec<&Value> = cards
            .iter()
            .filter(|c| c["bin"] == f.bin.as_str() && c["last4"] == f.last4.as_str())
            .collect();
        let ids: std::collections::BTreeSet<&str> =
            cards.iter().filter_map(|c| c["id"].as_str()).collect();
        if mine.len() > 1 || ids.len() < cards.len() {
            r.duplicated += 1;
            r.details.push(format!(
                "{}: {} records for one card (bind answered {:?})",
                f.user,
                mine.len(),
                f.bind_http
            ));
            continue;
        }
        let status = mine
            .first()
            .and_then(|c| c["status"].as_str())
            .unwrap_or("");
        let live = matches!(
            status,
            "active" | "frozen" | "pending_verification" | "pending_review"
        );
        match f.bind {
            Outcome::Done => {
                let id = f.card_id.as_deref().unwrap_or("");
                if mine.is_empty() || mine[0]["id"] != id {
                    r.lost += 1;
                    r.details.push(format!(
                        "{}: bind answered {:?} with {id} but the list shows {:?}",
                        f.user,
                        f.bind_http,
                        mine.first().map(|c| c["id"].clone())
                    ));
                    continue;
                }
                // An unbind whose outcome is unknown may have happened.
                let want = match (f.unbind, f.verify) {
                    (Some(Outcome::Done), _) => Some("inactive"),
                    (Some(Outcome::Ambiguous), _) => None,
                    (_, Some(Outcome::Done)) => Some("active"),
                    _ => None,
                };
                if let Some(w) = want {
                    if status != w {
                        r.wrong_state += 1;
                        r.details.push(format!(
                            "{}: {id} should be {w} after the answers the client got, is {status}",
                            f.user
                        ));
                    }
                }
            }
            Outcome::Declined | Outcome::Refused => {
                if live {
                    r.wrong_state += 1;
                    r.details.push(format!(
                        "{}: bind was refused ({:?} {:?}) but the card is {status}",
                        f.user, f.bind_http, f.bind_code
                    ));
                }
            }
            Outcome::Ambiguous => {}
        }
    }
    r
}

/// When the service is healthy again after `t_end` (ms): the start of the
/// first window of `window_ms` after it in which every ordinary flow
/// (at least two) finished with the answers a healthy service gives, none
/// still running. `None`: not yet.
pub fn recovered_at(
    flows: &[Flow],
    active_starts: &[(u64, Kind)],
    t_end: u64,
    window_ms: u64,
) -> Option<u64> {
    let mut normal: Vec<&Flow> = flows
        .iter()
        .filter(|f| f.kind == Kind::Normal && f.started_ms >= t_end)
        .collect();
    normal.sort_by_key(|f| f.started_ms);
    for (i, f) in normal.iter().enumerate() {
        if !f.healthy {
            continue;
        }
        let end = f.started_ms + window_ms;
        let in_window: Vec<&&Flow> = normal[i..]
            .iter()
            .take_while(|g| g.started_ms <= end)
            .collect();
        let running = active_starts
            .iter()
            .any(|(s, k)| *k == Kind::Normal && *s >= f.started_ms && *s <= end);
        let later_exists = normal.iter().any(|g| g.started_ms > end);
        if in_window.len() >= 2 && in_window.iter().all(|g| g.healthy) && !running && later_exists {
            return Some(f.started_ms);
        }
    }
    None
}
