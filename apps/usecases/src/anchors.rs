//! Anchors: what makes deleting a chain's *newest* links visible.
//!
//! A hash chain shows an edited link, and a missing link anywhere before
//! its last, but a chain whose newest links were deleted still verifies:
//! nothing in it says how long it was. So the service keeps a second
//! record. Time is cut into windows of `interval` seconds (aligned on the
//! epoch); once a window has closed and `delay` seconds more have passed
//! (longer than any commit can take between choosing its instant and
//! landing), the window's *anchor* is recorded: how many links have an
//! instant in it and a digest of their chains, numbers and hashes
//! ([`WindowDigest`]). The anchor is an event of the service's own chain
//! (`audit.anchor`) and a log line.
//!
//! [`UseCases::verify_anchors`] (run by `cardbind audit verify`) computes
//! every anchored window again and reports the first that differs.
//! Deleting a user's newest link changes its window; hiding that means
//! deleting the anchor too, so the service chain's links from it on (its
//! newest), after which the window is anchored again as it was left: what
//! the anchor log lines, shipped off the machine, still show (`cardbind
//! audit verify --log` checks the store against them with
//! [`UseCases::check_anchors`]). What stays open: the links not anchored
//! yet, up to two intervals plus the delay.
//!
//! A window that holds no links, or only the links of earlier anchors,
//! gets no anchor (so an idle service writes little, and anchors do not
//! anchor each other for ever); neither does one anchored already, by this
//! instance or another (instances that race both write the same anchor).
//! Anchor links are still in the digest of any window they share with
//! other links. After a stop, up to `catch_up` windows are anchored late.

use std::collections::BTreeSet;

use cardbind_domain::Timestamp;
use cardbind_ports::audit::{AuditAction, AuditCursor, AuditFilter, ChainId, WindowDigest};
use cardbind_ports::StoreError;

use crate::context::RequestContext;
use crate::records::RecordsError;
use crate::UseCases;

/// Links (or anchor events) read per page.
const PAGE: u32 = 1000;

/// One window's anchor.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Anchor {
    /// The window: link instants from `start` (inclusive) to `end`.
    pub start: Timestamp,
    pub end: Timestamp,
    pub links: u64,
    /// [`WindowDigest`] of the window's links.
    pub digest: String,
}

impl Anchor {
    /// The event's detail, which [`Anchor::parse`] reads back.
    pub fn detail(&self) -> String {
        format!(
            "window {}..{} links {} digest {}",
            self.start.unix_millis(),
            self.end.unix_millis(),
            self.links,
            self.digest
        )
    }

    /// The anchor a log line names (its `anchor` field holds the detail),
    /// whatever the log's format.
    pub fn find_in(line: &str) -> Option<Anchor> {
        line.match_indices("window ").find_map(|(i, _)| {
            let mut words = line[i..].split_whitespace();
            let mut parts: Vec<&str> = words.by_ref().take(6).collect();
            let digest = parts.pop()?;
            let digest = digest.get(..64)?;
            parts.push(digest);
            Anchor::parse(&parts.join(" "))
        })
    }

    pub fn parse(detail: &str) -> Option<Anchor> {
        let mut w = detail.split(' ');
        let (start, end) = match (w.next(), w.next()) {
            (Some("window"), Some(range)) => range.split_once("..")?,
            _ => return None,
        };
        let links = match (w.next(), w.next()) {
            (Some("links"), Some(n)) => n.parse().ok()?,
            _ => return None,
        };
        let digest = match (w.next(), w.next(), w.next()) {
            (Some("digest"), Some(d), None) if d.len() == 64 => d.to_owned(),
            _ => return None,
        };
        let start = Timestamp::from_unix_millis(start.parse().ok()?);
        let end = Timestamp::from_unix_millis(end.parse().ok()?);
        (start < end).then_some(Anchor {
            start,
            end,
            links,
            digest,
        })
    }
}

/// When windows are anchored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnchorSchedule {
    /// Length of a window, seconds (at least 1).
    pub interval_seconds: u32,
    /// How long after a window closes it is anchored, seconds.
    pub delay_seconds: u32,
    /// How many closed windows are looked at each time (the newest ones).
    pub catch_up: u32,
}

impl AnchorSchedule {
    /// The windows due at `now`, oldest first: the newest `catch_up`
    /// windows that closed at least `delay` seconds ago.
    pub fn due(&self, now: Timestamp) -> Vec<(Timestamp, Timestamp)> {
        let i = i64::from(self.interval_seconds.max(1)) * 1000;
        let closed = now.unix_millis() - i64::from(self.delay_seconds) * 1000;
        let latest_end = closed.div_euclid(i) * i;
        (0..i64::from(self.catch_up))
            .rev()
            .map(|k| {
                let end = latest_end - k * i;
                (
                    Timestamp::from_unix_millis(end - i),
                    Timestamp::from_unix_millis(end),
                )
            })
            .collect()
    }
}

/// What a check of the anchors found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnchorReport {
    /// Anchors whose windows were computed again and matched.
    pub checked: u64,
    /// Anchors of windows that start before the retention horizon (their
    /// oldest links may have been purged), not checked.
    pub past_retention: u64,
    /// The end of the newest anchored window.
    pub newest_end: Option<Timestamp>,
    /// The first anchor whose window differs now.
    pub mismatch: Option<AnchorMismatch>,
}

/// An anchored window that no longer holds what it held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnchorMismatch {
    pub anchor: Anchor,
    /// What the window holds now.
    pub links: u64,
    pub digest: String,
}

impl UseCases {
    /// The anchors of consecutive `windows` (each starting where the one
    /// before ended) as the log holds them now, each with whether it holds
    /// any event other than anchors: one listing of the whole range.
    async fn window_anchors(
        &self,
        windows: &[(Timestamp, Timestamp)],
    ) -> Result<Vec<(Anchor, bool)>, StoreError> {
        let (Some(&(from, _)), Some(&(_, until))) = (windows.first(), windows.last()) else {
            return Ok(Vec::new());
        };
        let mut digests = vec![(WindowDigest::new(), false); windows.len()];
        let mut w = 0;
        let mut after = None;
        loop {
            let page = self
                .ports
                .audit
                .link_stamps(from, until, after, PAGE)
                .await?;
            for l in &page {
                // Listed in instant order: the window only moves forward.
                while w + 1 < windows.len() && l.at >= windows[w].1 {
                    w += 1;
                }
                let (digest, more_than_anchors) = &mut digests[w];
                digest.add(l);
                *more_than_anchors |= !l.anchors_only;
            }
            match page.last() {
                Some(last) if page.len() == PAGE as usize => {
                    after = Some((last.at, last.chain.clone(), last.seq));
                }
                _ => break,
            }
        }
        Ok(windows
            .iter()
            .zip(digests)
            .map(|(&(start, end), (digest, more_than_anchors))| {
                let (links, digest) = digest.finish();
                let anchor = Anchor {
                    start,
                    end,
                    links,
                    digest,
                };
                (anchor, more_than_anchors)
            })
            .collect())
    }

    /// One page of the anchors of the service's chain whose detail reads,
    /// from those whose event is at or after `since` (every one when
    /// `None`), oldest first; and where the next page starts, if any.
    async fn anchor_page(
        &self,
        since: Option<Timestamp>,
        after: Option<AuditCursor>,
    ) -> Result<(Vec<Anchor>, Option<AuditCursor>), StoreError> {
        let filter = AuditFilter {
            action: Some(AuditAction::AuditAnchor),
            since,
            ..AuditFilter::default()
        };
        let (page, next) = self.audit_page(&filter, after, PAGE).await?;
        let anchors = page
            .iter()
            .filter(|r| r.cursor.chain == ChainId::System)
            .filter_map(|r| r.event.detail.as_deref().and_then(Anchor::parse))
            .collect();
        Ok((anchors, next))
    }

    /// Records the anchors of the windows `schedule` says are due, hold
    /// links other than anchors, and have no anchor yet. Returns the
    /// anchors recorded.
    /// `on_anchor` is called with each anchor as soon as it is stored (a
    /// later failure of the same run does not lose it).
    pub async fn anchor_due(
        &self,
        ctx: &RequestContext,
        schedule: AnchorSchedule,
        on_anchor: &(dyn Fn(&Anchor) + Send + Sync),
    ) -> Result<Vec<Anchor>, StoreError> {
        let due = schedule.due(self.now());
        let Some(&(oldest, _)) = due.first() else {
            return Ok(Vec::new());
        };
        // An anchor's event is written after its window closed.
        let mut done: BTreeSet<(Timestamp, Timestamp)> = BTreeSet::new();
        let mut after = None;
        loop {
            let (anchors, next) = self.anchor_page(Some(oldest), after).await?;
            done.extend(anchors.into_iter().map(|a| (a.start, a.end)));
            let Some(n) = next else { break };
            after = Some(n);
        }
        // Only the windows not anchored yet are read, each run of them in
        // one listing: in steady state the newest window alone.
        let mut made = Vec::new();
        for run in due.split(|w| done.contains(w)).filter(|r| !r.is_empty()) {
            for (anchor, more_than_anchors) in self.window_anchors(run).await? {
                if !more_than_anchors {
                    continue;
                }
                let now = self.now();
                let e = ctx
                    .event(now, AuditAction::AuditAnchor)
                    .detail(anchor.detail())
                    .build();
                self.ports.audit.append_system(vec![e], now).await?;
                on_anchor(&anchor);
                made.push(anchor);
            }
        }
        Ok(made)
    }

    /// Computes `anchor`'s window again: `None` when it still holds what
    /// it held.
    async fn check_anchor(&self, anchor: &Anchor) -> Result<Option<AnchorMismatch>, RecordsError> {
        let windows = [(anchor.start, anchor.end)];
        let Some((now, _)) = self.window_anchors(&windows).await?.pop() else {
            return Ok(None);
        };
        Ok(
            ((now.links, &now.digest) != (anchor.links, &anchor.digest)).then(|| AnchorMismatch {
                anchor: anchor.clone(),
                links: now.links,
                digest: now.digest,
            }),
        )
    }

    /// Computes every anchored window again (`cardbind audit verify`).
    /// Windows that start before `horizon` (now minus the audit retention:
    /// the purge may have taken their oldest links) are counted, not
    /// checked.
    pub async fn verify_anchors(&self, horizon: Timestamp) -> Result<AnchorReport, RecordsError> {
        let mut report = AnchorReport::default();
        // Page by page: a year of anchors is half a million events.
        let mut after = None;
        loop {
            let (anchors, next) = self.anchor_page(None, after).await?;
            self.check_anchors(anchors, horizon, &mut report).await?;
            let Some(n) = next else {
                return Ok(report);
            };
            after = Some(n);
        }
    }

    /// Checks `anchors` (from the store, or from the log lines) against
    /// the windows as the store holds them now, into `report`: those that
    /// start before `horizon` are counted, not checked.
    pub async fn check_anchors(
        &self,
        anchors: impl IntoIterator<Item = Anchor>,
        horizon: Timestamp,
        report: &mut AnchorReport,
    ) -> Result<(), RecordsError> {
        for anchor in anchors {
            report.newest_end = report.newest_end.max(Some(anchor.end));
            if anchor.start < horizon {
                report.past_retention += 1;
                continue;
            }
            match self.check_anchor(&anchor).await? {
                None => report.checked += 1,
                Some(m) => {
                    report.mismatch.get_or_insert(m);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_anchor_reads_back_from_its_detail() {
        let a = Anchor {
            start: Timestamp::from_unix_millis(60_000),
            end: Timestamp::from_unix_millis(120_000),
            links: 7,
            digest: "ab".repeat(32),
        };
        assert_eq!(Anchor::parse(&a.detail()), Some(a.clone()));
        for bad in [
            String::new(),
            "window 1..2 links 3".to_owned(),
            a.detail().replace("links 7", "links x"),
            a.detail().replace("60000..", "120000.."),
            format!("{} more", a.detail()),
            a.detail().replace(&"ab".repeat(32), "ab"),
        ] {
            assert_eq!(Anchor::parse(&bad), None, "{bad}");
        }
    }

    #[test]
    fn an_anchor_is_found_in_its_log_line_in_either_format() {
        let a = Anchor {
            start: Timestamp::from_unix_millis(60_000),
            end: Timestamp::from_unix_millis(120_000),
            links: 7,
            digest: "cd".repeat(32),
        };
        let d = a.detail();
        for line in [
            format!(r#"{{"fields":{{"message":"audit window anchored","window_start":"1970-01-01T00:01:00Z","anchor":"{d}","run_ms":3}}}}"#),
            format!("2026-12-02T00:00:00Z  INFO cardbind::audit_anchor: audit window anchored window_start=1970-01-01T00:01:00Z anchor={d} run_ms=3"),
            format!("anchor=\"{d}\", run_ms=3"),
        ] {
            assert_eq!(Anchor::find_in(&line), Some(a.clone()), "{line}");
        }
        assert_eq!(Anchor::find_in("audit window anchored, no anchor"), None);
        assert_eq!(Anchor::find_in(&d.replace(&"cd".repeat(32), "cd")), None);
    }

    #[test]
    fn due_windows_are_closed_aligned_and_newest_last() {
        let s = AnchorSchedule {
            interval_seconds: 60,
            delay_seconds: 120,
            catch_up: 3,
        };
        // 10:05:30 -> closed before 10:03:30 -> windows ending 10:01, 10:02, 10:03.
        let m = |min: i64| Timestamp::from_unix_millis(min * 60_000);
        let now = Timestamp::from_unix_millis(5 * 60_000 + 30_000);
        assert_eq!(s.due(now), vec![(m(0), m(1)), (m(1), m(2)), (m(2), m(3))]);
        // Exactly at the delay after a window's end, that window is due.
        let at = Timestamp::from_unix_millis(6 * 60_000);
        assert_eq!(s.due(at).last(), Some(&(m(3), m(4))));
    }
}
