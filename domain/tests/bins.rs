//! Property tests of the BIN table: its lookup agrees with a scan of every
//! entry, and a set of entries is refused exactly when two of them overlap
//! without nesting or cover the same numbers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cardbind_domain::{BinEntry, BinRange, BinTable, BinTableError};
use proptest::prelude::*;

/// A range of 6 to 9 digits near `62` with a small width, so that random
/// ranges often nest, touch and overlap.
fn range() -> impl Strategy<Value = BinRange> {
    (6usize..=9, proptest::collection::vec(0u8..3, 9), 0u64..30).prop_map(|(len, body, width)| {
        let mut low = String::from("62");
        for d in body.iter().take(len - 2) {
            low.push((b'0' + d) as char);
        }
        let lowv: u64 = low.parse().unwrap();
        let max = 10u64.pow(len as u32) - 1;
        let high = format!("{:0len$}", (lowv + width).min(max), len = len);
        BinRange::parse(&low, &high).unwrap()
    })
}

fn entry(r: &BinRange, i: usize) -> BinEntry {
    // Issuer codes are letters: encode the position.
    let code: String = format!("E{i}")
        .chars()
        .map(|c| {
            if c.is_ascii_digit() {
                (b'A' + (c as u8 - b'0')) as char
            } else {
                c
            }
        })
        .collect();
    BinEntry::parse(r.low(), r.high(), &code, "银行", "Bank", "", "", "").unwrap()
}

fn conflict(a: &BinRange, b: &BinRange) -> bool {
    a.same_numbers(b) || (a.intersects(b) && !a.contains(b) && !b.contains(a))
}

/// The first conflicting pair by a scan of all pairs.
fn naive_conflict(ranges: &[BinRange]) -> Option<(usize, usize)> {
    for j in 0..ranges.len() {
        for i in 0..j {
            if conflict(&ranges[i], &ranges[j]) {
                return Some((i, j));
            }
        }
    }
    None
}

/// Keeps the ranges that do not conflict with those kept before them.
fn valid_subset(ranges: Vec<BinRange>) -> Vec<BinRange> {
    let mut kept: Vec<BinRange> = Vec::new();
    for r in ranges {
        if kept.iter().all(|k| !conflict(k, &r)) {
            kept.push(r);
        }
    }
    kept
}

/// The most specific entry covering `digits`, by a scan.
fn naive_lookup<'a>(entries: &'a [BinEntry], digits: &str) -> Option<&'a BinEntry> {
    entries
        .iter()
        .filter(|e| e.range.covers(digits))
        .min_by_key(|e| e.range.span())
}

/// Digits to look up: near the ranges (a prefix of `62` followed by the
/// same small digits), of any length from 1 to 19.
fn query() -> impl Strategy<Value = String> {
    (1usize..=19, proptest::collection::vec(0u8..3, 19)).prop_map(|(len, body)| {
        let mut s = String::from("62");
        for d in body {
            s.push((b'0' + d) as char);
        }
        s.truncate(len);
        s
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn lookups_agree_with_a_scan(
        ranges in proptest::collection::vec(range(), 0..40),
        queries in proptest::collection::vec(query(), 1..40),
        tails in proptest::collection::vec((0usize..40, proptest::collection::vec(0u8..10, 0..13)), 1..20),
    ) {
        let kept = valid_subset(ranges);
        let entries: Vec<BinEntry> = kept.iter().enumerate().map(|(i, r)| entry(r, i)).collect();
        let table = BinTable::new(entries.clone()).unwrap();
        prop_assert_eq!(table.len(), entries.len());
        // Random digits, and whole numbers that start inside a range.
        let mut all = queries;
        for (i, tail) in tails {
            if let Some(r) = kept.get(i) {
                let mut s = r.low().to_owned();
                s.extend(tail.iter().map(|d| (b'0' + d) as char));
                all.push(s);
                let mut s = r.high().to_owned();
                s.extend(tail.iter().map(|d| (b'0' + d) as char));
                all.push(s);
            }
        }
        for q in &all {
            let fast = table.lookup(q).map(|e| &e.range);
            let slow = naive_lookup(&entries, q).map(|e| &e.range);
            prop_assert_eq!(fast, slow, "query {}", q);
        }
    }

    #[test]
    fn a_set_is_refused_exactly_when_two_ranges_conflict(
        ranges in proptest::collection::vec(range(), 0..25),
    ) {
        let entries: Vec<BinEntry> = ranges.iter().enumerate().map(|(i, r)| entry(r, i)).collect();
        match (BinTable::new(entries), naive_conflict(&ranges)) {
            (Ok(_), None) => {}
            (Err(e), Some(_)) => {
                let (a, b) = e.positions();
                prop_assert!(a < b && b < ranges.len());
                prop_assert!(conflict(&ranges[a], &ranges[b]), "reported pair {a},{b} does not conflict");
                let dup = matches!(e, BinTableError::Duplicate { .. });
                prop_assert_eq!(dup, ranges[a].same_numbers(&ranges[b]));
            }
            (Ok(_), Some(pair)) => prop_assert!(false, "accepted a conflicting set {:?}", pair),
            (Err(e), None) => prop_assert!(false, "refused a valid set: {e}"),
        }
    }

    #[test]
    fn adding_a_crossing_range_to_a_valid_table_is_always_refused(
        ranges in proptest::collection::vec(range(), 1..30),
        pick in 0usize..30,
        shift in 1u64..30,
        at in 0usize..31,
    ) {
        let kept = valid_subset(ranges);
        let base = &kept[pick % kept.len()];
        // A range of the same length that starts inside `base` and ends
        // after it, or an exact copy written the same way.
        let len = base.prefix_len();
        let low: u64 = base.low().parse().unwrap();
        let high: u64 = base.high().parse().unwrap();
        let max = 10u64.pow(len as u32) - 1;
        let crossing = if high > low && high < max {
            let start = low + 1 + shift % (high - low);
            let end = (high + shift).min(max);
            BinRange::parse(&format!("{start:0len$}"), &format!("{end:0len$}")).unwrap()
        } else {
            base.clone()
        };
        prop_assume!(conflict(base, &crossing));
        let mut with = kept.clone();
        with.insert(at.min(with.len()), crossing);
        let entries: Vec<BinEntry> = with.iter().enumerate().map(|(i, r)| entry(r, i)).collect();
        prop_assert!(BinTable::new(entries).is_err());
    }
}
