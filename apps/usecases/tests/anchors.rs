//! Anchoring the audit log: what `anchor_due` reads. A window already
//! anchored is never read again, so the cost of a run is the windows still
//! open to anchoring (in steady state the newest), not the hour it looks
//! back over.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use cardbind_domain::Timestamp;
use cardbind_memory::MemoryStore;
use cardbind_ports::audit::{
    AuditAction, AuditCursor, AuditEvent, AuditFilter, AuditLog, AuditRecord, ChainId, Link,
    LinkStamp,
};
use cardbind_ports::StoreError;
use cardbind_usecases::anchors::AnchorSchedule;
use support::*;

/// The audit log over the store, recording the window of every read of
/// link stamps.
struct Recording {
    inner: Arc<MemoryStore>,
    reads: Mutex<Vec<(i64, i64)>>,
}

#[async_trait]
impl AuditLog for Recording {
    async fn append_system(&self, e: Vec<AuditEvent>, now: Timestamp) -> Result<(), StoreError> {
        self.inner.append_system(e, now).await
    }
    async fn list(
        &self,
        f: &AuditFilter,
        after: Option<AuditCursor>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.inner.list(f, after, limit).await
    }
    async fn link_stamps(
        &self,
        since: Timestamp,
        until: Timestamp,
        after: Option<(Timestamp, ChainId, u64)>,
        limit: u32,
    ) -> Result<Vec<LinkStamp>, StoreError> {
        let window = (since.unix_millis(), until.unix_millis());
        self.reads.lock().unwrap().push(window);
        self.inner.link_stamps(since, until, after, limit).await
    }
    async fn links(
        &self,
        after: Option<(ChainId, u64)>,
        limit: u32,
    ) -> Result<Vec<Link>, StoreError> {
        self.inner.links(after, limit).await
    }
    async fn purge_before(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.inner.purge_before(before).await
    }
}

const EVERY_MINUTE: AnchorSchedule = AnchorSchedule {
    interval_seconds: 60,
    delay_seconds: 120,
    catch_up: 60,
};

#[tokio::test]
async fn an_anchored_window_is_not_read_again() {
    let rec: Arc<Mutex<Option<Arc<Recording>>>> = Arc::default();
    let keep = rec.clone();
    let w = world_with_audit(unlimited(), move |s| {
        let r = Arc::new(Recording {
            inner: s,
            reads: Mutex::default(),
        });
        *keep.lock().unwrap() = Some(r.clone());
        r
    });
    let rec = rec.lock().unwrap().clone().unwrap();
    let window_reads = || -> Vec<(i64, i64)> { rec.reads.lock().unwrap().drain(..).collect() };
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
