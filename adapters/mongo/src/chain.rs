//! Finding the head of a chain by point reads of `_id`s, and the
//! per-process hints that make those searches short.
//!
//! FerretDB 1.x (SQLite) hands SQLite only a filter that is exactly
//! `{_id: <string>}`; every other query — any second key, a range, an
//! integer `_id`, any sort — reads and decodes the whole collection in Go.
//! So the head of a chain (`{base}#{n}`) is not read with
//! `sort(n: -1).limit(1)` but searched for with reads of single `_id`s,
//! which cost the same at any collection size.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use cardbind_ports::StoreError;
use mongodb::bson::doc;
use mongodb::Collection;
use serde::de::DeserializeOwned;

use crate::docs::link_id;
use crate::store::map_err;

/// Upper bound on the probes of one search (a chain of 2^40 links would
/// need about 80).
const MAX_PROBES: usize = 160;

/// The highest `n >= first` for which `probe(n)` finds a link, and that
/// link; `None` when there is none.
///
/// The chain must be *prefix-closed* from `first`: links `first..=head`
/// exist and none above `head` (the per-chain rules that guarantee this are
/// in the crate docs). `hint` is only where the search starts: any value,
/// stale or wrong, gives the same answer, in more or fewer probes.
/// From a hint at the head this costs two reads (the head and the absent
/// link above it); from no hint, about `2·log2(head)`.
pub(crate) async fn find_head<T, F, Fut>(
    first: i64,
    hint: Option<i64>,
    mut probe: F,
) -> Result<Option<(i64, T)>, StoreError>
where
    F: FnMut(i64) -> Fut,
    Fut: Future<Output = Result<Option<T>, StoreError>>,
{
    let mut probes = 0usize;
    let mut read = |n: i64| {
        probes += 1;
        let over = probes > MAX_PROBES;
        let f = probe(n);
        async move {
            if over {
                return Err(StoreError::Unavailable(
                    "chain head search did not converge".into(),
                ));
            }
            f.await
        }
    };
    let start = hint.map_or(first, |h| h.max(first));
    // `lo`: a link known to exist; `hi`: a position known to be empty.
    let (mut lo, mut hi): ((i64, T), Option<i64>) = match read(start).await? {
        Some(d) => ((start, d), None),
        None if start == first => return Ok(None),
        None => match read(first).await? {
            None => return Ok(None),
            Some(d) => ((first, d), Some(start)),
        },
    };
    // Gallop upwards until an empty position is found.
    let mut step: i64 = 1;
    let mut hi = loop {
        if let Some(h) = hi.take() {
            break h;
        }
        let n =
            lo.0.checked_add(step)
                .ok_or_else(|| StoreError::Corrupt("chain position overflow".into()))?;
        match read(n).await? {
            Some(d) => {
                lo = (n, d);
                step = step.saturating_mul(2);
            }
            None => break n,
        }
    };
    // Binary search between the last link found and the first gap.
    while hi - lo.0 > 1 {
        let mid = lo.0 + (hi - lo.0) / 2;
        match read(mid).await? {
            Some(d) => lo = (mid, d),
            None => hi = mid,
        }
    }
    Ok(Some(lo))
}

/// One document by its string `_id` (the one query FerretDB pushes down).
pub(crate) async fn by_id<T>(coll: &Collection<T>, id: &str) -> Result<Option<T>, StoreError>
where
    T: DeserializeOwned + Send + Sync,
{
    coll.find_one(doc! { "_id": id }).await.map_err(map_err)
}

/// [`find_head`] over the links `{base}#{n}` of `coll`.
pub(crate) async fn chain_head<T>(
    coll: &Collection<T>,
    base: &str,
    first: i64,
    hint: Option<i64>,
) -> Result<Option<(i64, T)>, StoreError>
where
    T: DeserializeOwned + Send + Sync,
{
    find_head(first, hint, |n| {
        let id = link_id(base, n);
        async move { by_id(coll, &id).await }
    })
    .await
}

/// The last head position seen per chain, in this process. Only ever a
/// starting point for [`find_head`]: nothing is decided on a hint alone.
#[derive(Debug, Default)]
pub(crate) struct Hints {
    map: Mutex<HashMap<String, i64>>,
}

/// Past this many chains the hints are forgotten (and relearnt).
const MAX_HINTS: usize = 100_000;

impl Hints {
    pub(crate) fn get(&self, kind: &str, base: &str) -> Option<i64> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&key(kind, base)).copied()
    }

    pub(crate) fn set(&self, kind: &str, base: &str, n: i64) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_HINTS {
            map.clear();
        }
        map.insert(key(kind, base), n);
    }
}

fn key(kind: &str, base: &str) -> String {
    format!("{kind}\u{0}{base}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn search(head: Option<i64>, first: i64, hint: Option<i64>) -> (Option<i64>, usize) {
        let count = Cell::new(0usize);
        let r = futures::executor::block_on(find_head(first, hint, |n| {
            count.set(count.get() + 1);
            let present = head.is_some_and(|h| n >= first && n <= h);
            async move { Ok::<_, StoreError>(present.then_some(n)) }
        }));
        (r.ok().flatten().map(|(n, _)| n), count.get())
    }

    #[test]
    fn finds_the_head_from_any_hint() {
        for first in [0, 1] {
            for head in [
                None,
                Some(first),
                Some(first + 1),
                Some(7),
                Some(100),
                Some(1000),
            ] {
                for hint in [
                    None,
                    Some(0),
                    Some(1),
                    Some(5),
                    Some(99),
                    Some(100),
                    Some(101),
                    Some(5000),
                ] {
                    let (found, _) = search(head, first, hint);
                    assert_eq!(found, head, "head {head:?} first {first} hint {hint:?}");
                }
            }
        }
    }

    #[test]
    fn a_good_hint_costs_two_reads() {
        assert_eq!(search(Some(500), 0, Some(500)), (Some(500), 2));
        assert_eq!(search(None, 1, None), (None, 1));
        let (_, cold) = search(Some(1000), 0, None);
        assert!(cold <= 22, "{cold}");
    }
}
