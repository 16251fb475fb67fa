//! What only the in-memory adapter offers: the tamper aids for the audit
//! chain, the unavailable switch, and clones sharing one store.

use std::sync::Arc;

use cardbind_domain::Timestamp;
use cardbind_memory::MemoryStore;
use cardbind_ports::audit::{verify_chain, AuditEvent, AuditFilter, AuditLog, AuditRecord};
use cardbind_ports::store::{BindingStore, RateCounter};
use cardbind_ports::StoreError;

fn event(i: i64) -> AuditEvent {
    AuditEvent {
        at: Timestamp::from_unix_millis(1_700_000_000_000 + i),
        actor: format!("svc-{i}"),
        role: "service".to_owned(),
        action: "binding.create".to_owned(),
        outcome: "ok".to_owned(),
        ..AuditEvent::default()
    }
}

async fn log_of(store: &MemoryStore, n: i64) -> Result<Vec<AuditRecord>, StoreError> {
    for i in 0..n {
        store.append(event(i)).await?;
    }
    whole(store).await
}

async fn whole(store: &MemoryStore) -> Result<Vec<AuditRecord>, StoreError> {
    AuditLog::list(store, &AuditFilter::default(), None, 1000).await
}

#[tokio::test]
async fn an_edited_event_breaks_the_chain_at_that_event() {
    let store = MemoryStore::new();
    assert_eq!(verify_chain(&log_of(&store, 5).await.expect("log")), Ok(5));
    assert!(store.tamper_audit(3, |r| r.event.outcome = "forbidden".to_owned()));
    let err = verify_chain(&whole(&store).await.expect("list")).expect_err("tampering detected");
    assert_eq!(err.seq, 3);
    assert_eq!(err.reason, "event altered");
    assert!(!store.tamper_audit(99, |_| {}), "no such record");
}

#[tokio::test]
async fn a_rehashed_edit_breaks_the_next_link() {
    let store = MemoryStore::new();
    log_of(&store, 5).await.expect("log");
    // A forger who also recomputes the edited record's own hash is caught
    // by the record after it.
    assert!(store.tamper_audit(2, |r| {
        r.event.detail = Some("covered up".to_owned());
        r.hash = cardbind_ports::audit::chain_hash(&r.prev_hash, r.seq, &r.event);
    }));
    let err = verify_chain(&whole(&store).await.expect("list")).expect_err("tampering detected");
    assert_eq!(err.seq, 3);
    assert_eq!(err.reason, "link to previous event broken");
}

#[tokio::test]
async fn a_deleted_event_leaves_a_gap() {
    let store = MemoryStore::new();
    log_of(&store, 5).await.expect("log");
    assert!(store.delete_audit(4));
    assert!(!store.delete_audit(4));
    let err = verify_chain(&whole(&store).await.expect("list")).expect_err("gap detected");
    assert_eq!(err.seq, 4);
    assert_eq!(err.reason, "missing event");
}

#[tokio::test]
async fn deleting_the_newest_event_does_not_hide_it() {
    let store = MemoryStore::new();
    log_of(&store, 3).await.expect("log");
    assert!(store.delete_audit(3));
    let next = store.append(event(9)).await.expect("append");
    assert_eq!(next.seq, 4, "numbering is not reused");
    let err = verify_chain(&whole(&store).await.expect("list")).expect_err("gap detected");
    assert_eq!(err.seq, 3);
}

#[tokio::test]
async fn unavailable_switch_fails_every_port_until_cleared() {
    let store = MemoryStore::new();
    store.set_unavailable(true);
    assert!(matches!(
        store.increment("k", Timestamp::from_unix_millis(0)).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.append(event(0)).await,
        Err(StoreError::Unavailable(_))
    ));
    store.set_unavailable(false);
    assert_eq!(
        store.increment("k", Timestamp::from_unix_millis(0)).await,
        Ok(1)
    );
}

#[tokio::test]
async fn clones_and_trait_objects_share_one_store() {
    let store = MemoryStore::new();
    let clone = store.clone();
    let as_port: Arc<dyn RateCounter> = Arc::new(store.clone());
    assert_eq!(
        store.increment("k", Timestamp::from_unix_millis(0)).await,
        Ok(1)
    );
    assert_eq!(
        clone.increment("k", Timestamp::from_unix_millis(0)).await,
        Ok(2)
    );
    assert_eq!(
        as_port.increment("k", Timestamp::from_unix_millis(0)).await,
        Ok(3)
    );
    let bindings: Arc<dyn BindingStore> = MemoryStore::shared();
    let user = cardbind_domain::UserId::parse("u1").expect("user id");
    assert_eq!(bindings.get_default(&user).await, Ok(None));
}
