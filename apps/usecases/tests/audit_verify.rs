//! `cardbind audit verify` (`UseCases::verify_audit_chains`) walks the
//! chains page by page while the service runs: the retention purge may
//! delete a chain's oldest links between two pages, which is no break; a
//! link missing between two kept ones is.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use cardbind_domain::Timestamp;
use cardbind_memory::MemoryStore;
use cardbind_ports::audit::{AuditLog, ChainId, Link};
use cardbind_ports::StoreError;
use support::*;

/// What the wrapper does to the walk.
enum Meddle {
    /// Before the walk's second page: purge links before this instant.
    PurgeBeforeSecondPage(Timestamp),
    /// Leave this link of this chain out of every read (as if deleted).
    Hide(ChainId, u64),
    /// The walk's second page does not read (`Corrupt`), once: a fault
    /// that does not come back.
    FailSecondPageOnce,
}

struct Meddling {
    meddle: Mutex<Option<Meddle>>,
    pages: AtomicU32,
    /// The page size of every read, in order.
    sizes: Mutex<Vec<u32>>,
}

#[async_trait]
impl AuditTap for Meddling {
    async fn links(
        &self,
        store: &MemoryStore,
        after: Option<(ChainId, u64)>,
        limit: u32,
    ) -> Result<Vec<Link>, StoreError> {
        let page = self.pages.fetch_add(1, Ordering::SeqCst);
        self.sizes.lock().unwrap().push(limit);
        if page == 1
            && matches!(
                &*self.meddle.lock().unwrap(),
                Some(Meddle::FailSecondPageOnce)
            )
        {
            return Err(StoreError::Corrupt("a page that did not read".into()));
        }
        let purge = match &*self.meddle.lock().unwrap() {
            Some(Meddle::PurgeBeforeSecondPage(t)) if page == 1 => Some(*t),
            _ => None,
        };
        if let Some(t) = purge {
            assert!(store.purge_before(t).await.unwrap() > 0);
        }
        let hidden = match &*self.meddle.lock().unwrap() {
            Some(Meddle::Hide(c, s)) => Some((c.clone(), *s)),
            _ => None,
        };
        let mut links = Vec::new();
        let mut from = after;
        // Read past the hidden link so a page stays full.
        while links.len() < limit as usize {
            let got = store.links(from.clone(), limit).await?;
            let Some(last) = got.last() else { break };
            from = Some((last.chain.clone(), last.seq));
            links.extend(
                got.into_iter()
                    .filter(|l| hidden.as_ref() != Some(&(l.chain.clone(), l.seq))),
            );
        }
        links.truncate(limit as usize);
        Ok(links)
    }
}

/// A world whose audit log is meddled with, and alice's chain of several
/// links: some old, some recent.
async fn alice_with_old_and_new_links() -> (World, Arc<Tapped<Meddling>>, Timestamp) {
    let (w, m) = world_tapped(
        unlimited(),
        Meddling {
            meddle: Mutex::default(),
            pages: AtomicU32::new(0),
            sizes: Mutex::default(),
        },
    );
    for n in 1..=3 {
        w.uc.bind_card(&backend(), bind_cmd("alice", &visa(n), w.now()))
            .await
            .unwrap();
    }
    w.clock.advance(3600);
    let cutoff = w.now();
    w.clock.advance(60);
    for n in 4..=5 {
        w.uc.bind_card(&backend(), bind_cmd("alice", &visa(n), w.now()))
            .await
            .unwrap();
    }
    (w, m, cutoff)
}

fn alice() -> ChainId {
    ChainId::User(user("alice"))
}

async fn stored_links(w: &World) -> Vec<Link> {
    AuditLog::links(&w.store, None, 10_000).await.unwrap()
}

#[tokio::test]
async fn a_purge_between_two_pages_of_the_walk_is_no_break() {
    let (w, m, cutoff) = alice_with_old_and_new_links().await;
    let before = stored_links(&w).await;
    let alices = before.iter().filter(|l| l.chain == alice()).count();
    assert!(alices >= 5, "{alices} links");
    // Pages of two: the first ends inside alice's old links, and the purge
    // deletes them before the second page is read.
    *m.tap.meddle.lock().unwrap() = Some(Meddle::PurgeBeforeSecondPage(cutoff));
    let report = w.uc.verify_audit_chains(2).await.unwrap();
    assert_eq!(report.broken, None, "{report:?}");
    let after = stored_links(&w).await;
    assert!(after.len() < before.len(), "the purge deleted old links");
    // Every link still stored was checked, and none twice.
    assert!(
        report.links_checked >= after.len() as u64 && report.links_checked <= before.len() as u64,
        "{} checked, {} stored before the purge, {} after",
        report.links_checked,
        before.len(),
        after.len()
    );
}

#[tokio::test]
async fn a_link_missing_between_two_kept_ones_is_a_break() {
    let (w, m, _) = alice_with_old_and_new_links().await;
    let seqs: Vec<u64> = stored_links(&w)
        .await
        .iter()
        .filter(|l| l.chain == alice())
        .map(|l| l.seq)
        .collect();
    let middle = seqs[seqs.len() / 2];
    *m.tap.meddle.lock().unwrap() = Some(Meddle::Hide(alice(), middle));
    for page in [2, 3, 1000] {
        let report = w.uc.verify_audit_chains(page).await.unwrap();
        let b = report.broken.expect("a break");
        assert_eq!(
            (b.chain, b.seq, b.reason),
            (alice(), middle, "missing link")
        );
    }
}

/// A page that does not read once is read again a link at a time (to name
/// the link, were it to fail again); when it reads, the walk checks every
/// link across those single reads (the link carried from page to page
/// included) and goes back to whole pages.
#[tokio::test]
async fn a_page_that_did_not_read_once_is_read_again_and_the_walk_goes_on() {
    let (w, m, _) = alice_with_old_and_new_links().await;
    let stored = stored_links(&w).await;
    *m.tap.meddle.lock().unwrap() = Some(Meddle::FailSecondPageOnce);
    let report = w.uc.verify_audit_chains(3).await.unwrap();
    assert_eq!((report.broken, report.unreadable), (None, None));
    assert_eq!(report.links_checked, stored.len() as u64);
    let sizes = m.tap.sizes.lock().unwrap().clone();
    // A page of 3, the page that failed, three single reads, then pages
    // of 3 again.
    assert_eq!(&sizes[..5], &[3, 3, 1, 1, 1], "{sizes:?}");
    assert!(sizes[5..].iter().all(|&n| n == 3), "{sizes:?}");
}
