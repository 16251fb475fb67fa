//! Anchoring the audit log: what `anchor_due` reads. A window already
//! anchored is never read again, so the cost of a run is the windows still
//! open to anchoring (in steady state the newest), not the hour it looks
//! back over.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support;

use std::sync::Mutex;

use async_trait::async_trait;
use cardbind_domain::Timestamp;
use cardbind_memory::MemoryStore;
use cardbind_ports::audit::{AuditAction, AuditFilter, AuditLog, ChainId, LinkStamp};
use cardbind_ports::StoreError;
use cardbind_usecases::anchors::AnchorSchedule;
use support::*;

/// Records the window of every read of link stamps.
#[derive(Default)]
struct Recording {
    reads: Mutex<Vec<(i64, i64)>>,
}

#[async_trait]
impl AuditTap for Recording {
    async fn link_stamps(
        &self,
        store: &MemoryStore,
        since: Timestamp,
        until: Timestamp,
        after: Option<(Timestamp, ChainId, u64)>,
        limit: u32,
    ) -> Result<Vec<LinkStamp>, StoreError> {
        let window = (since.unix_millis(), until.unix_millis());
        self.reads.lock().unwrap().push(window);
        store.link_stamps(since, until, after, limit).await
    }
}

const EVERY_MINUTE: AnchorSchedule = AnchorSchedule {
    interval_seconds: 60,
    delay_seconds: 120,
    catch_up: 60,
};

#[tokio::test]
async fn an_anchored_window_is_not_read_again() {
    let (w, rec) = world_tapped(unlimited(), Recording::default());
    let window_reads = || -> Vec<(i64, i64)> { rec.tap.reads.lock().unwrap().drain(..).collect() };
    let ctx = admin();
    w.uc.bind_card(&backend(), bind_cmd("alice", &visa(1), w.now()))
        .await
        .unwrap();
    let minute = |t: Timestamp| t.unix_millis().div_euclid(60_000) * 60_000;
    let first = minute(w.now());
    w.clock.advance(180);
    let made = w.uc.anchor_due(&ctx, EVERY_MINUTE, &|_| {}).await.unwrap();
    assert_eq!(made.len(), 1);
    assert_eq!(made[0].start.unix_millis(), first);
    // One listing of the whole hour looked back over.
    assert_eq!(
        window_reads(),
        vec![(first + 60_000 - 3_600_000, first + 60_000)]
    );

    w.uc.bind_card(&backend(), bind_cmd("bob", &visa(2), w.now()))
        .await
        .unwrap();
    let second = minute(w.now());
    w.clock.advance(180);
    let made = w.uc.anchor_due(&ctx, EVERY_MINUTE, &|_| {}).await.unwrap();
    assert_eq!(
        made.iter()
            .map(|a| a.start.unix_millis())
            .collect::<Vec<_>>(),
        vec![second]
    );
    let reads = window_reads();
    assert!(!reads.is_empty());
    for (since, until) in &reads {
        assert!(
            *until <= first || *since >= first + 60_000,
            "the anchored window {first} was read again: {reads:?}"
        );
    }
    // The anchored windows' events are the only anchors listed.
    let anchors = AuditLog::list(
        &w.store,
        &AuditFilter {
            action: Some(AuditAction::AuditAnchor),
            ..AuditFilter::default()
        },
        None,
        100,
    )
    .await
    .unwrap();
    assert_eq!(anchors.len(), 2);
    assert!(anchors.iter().all(|r| r.cursor.chain == ChainId::System));
}

#[tokio::test]
async fn the_check_reads_every_page_of_anchors() {
    let w = world(unlimited());
    let ctx = cardbind_usecases::RequestContext::service("test");
    let n = 2_500;
    for k in 0..n {
        let a = cardbind_usecases::anchors::Anchor {
            start: Timestamp::from_unix_millis(k * 60_000),
            end: Timestamp::from_unix_millis((k + 1) * 60_000),
            links: 1,
            digest: "ab".repeat(32),
        };
        let e = ctx
            .event(w.now(), AuditAction::AuditAnchor)
            .detail(a.detail())
            .build();
        AuditLog::append_system(&w.store, vec![e], w.now())
            .await
            .unwrap();
    }
    // Every window is before the horizon: counted, none read.
    let r = w.uc.verify_anchors(w.now()).await.unwrap();
    assert_eq!(
        (r.checked, r.past_retention, r.mismatch),
        (0, n as u64, None)
    );
    assert_eq!(r.newest_end, Some(Timestamp::from_unix_millis(n * 60_000)));
}
