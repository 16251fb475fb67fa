//! What only the in-memory adapter offers: the tamper aids for the audit
//! chains, the unavailable switch, and clones sharing one store.

// Test code: a failed expectation is a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cardbind_domain::{Timestamp, UserId, Wallet};
use cardbind_memory::MemoryStore;
use cardbind_ports::audit::{
    verify_links, AuditAction, AuditActor, AuditEvent, AuditLog, ChainHead, ChainId, Outcome,
};
use cardbind_ports::store::WalletStore;
use cardbind_ports::StoreError;

fn event(i: i64) -> AuditEvent {
    AuditEvent {
        at: Timestamp::from_unix_millis(1_700_000_000_000 + i),
        actor: AuditActor::service(format!("svc-{i}")),
        action: AuditAction::BindingCreate,
        user_id: None,
        binding_id: None,
        outcome: Outcome::Ok,
        request_id: None,
        client_ip: None,
        detail: None,
    }
}

fn user() -> UserId {
    UserId::parse("alice").expect("valid")
}

async fn chain_of(store: &MemoryStore, n: i64) -> Result<ChainHead, StoreError> {
    let mut head = None;
    for i in 0..n {
        let now = Timestamp::from_unix_millis(1_700_000_000_000 + i);
        head = Some(
            store
                .commit(&Wallet::new(user()), head, vec![event(i)], now)
                .await?,
        );
    }
    head.ok_or(StoreError::Conflict)
}

async fn verify(store: &MemoryStore) -> Result<u64, cardbind_ports::audit::ChainBreak> {
    let links = store.links(None, 1000).await.expect("links");
    verify_links(&links)
}

#[tokio::test]
async fn an_edited_link_breaks_the_chain_at_that_link() {
    let store = MemoryStore::new();
    chain_of(&store, 5).await.expect("chain");
    assert_eq!(verify(&store).await, Ok(5));
    let chain = ChainId::User(user());
    assert!(store.tamper_link(&chain, 3, |l| l.events[0].outcome =
        Outcome::Refused(cardbind_domain::ErrorCode::Forbidden)));
    let err = verify(&store).await.expect_err("tampering detected");
    assert_eq!((err.seq, err.reason), (3, "link altered"));
    assert!(!store.tamper_link(&chain, 99, |_| {}), "no such link");
}

#[tokio::test]
async fn a_rehashed_edit_breaks_the_next_link() {
    let store = MemoryStore::new();
    chain_of(&store, 5).await.expect("chain");
    let chain = ChainId::User(user());
    // A forger who also recomputes the edited link's own hash is caught by
    // the link after it.
    assert!(store.tamper_link(&chain, 2, |l| {
        l.events[0].detail = Some("forged".into());
        l.hash = l.computed_hash();
    }));
    let err = verify(&store).await.expect_err("forgery detected");
    assert_eq!(err.seq, 3);
}

#[tokio::test]
async fn a_deleted_link_is_reported_where_it_was() {
    let store = MemoryStore::new();
    chain_of(&store, 5).await.expect("chain");
    assert!(store.delete_link(&ChainId::User(user()), 4));
    let err = verify(&store).await.expect_err("gap detected");
    assert_eq!((err.seq, err.reason), (4, "missing link"));
}

#[tokio::test]
async fn the_unavailable_switch_fails_every_port_and_clones_share_data() {
    let store = MemoryStore::new();
    let clone = store.clone();
    chain_of(&store, 1).await.expect("chain");
    assert!(clone.load(&user()).await.expect("load").is_some());
    store.set_unavailable(true);
    assert!(matches!(
        clone.load(&user()).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        clone
            .append_system(vec![event(0)], Timestamp::from_unix_millis(0))
            .await,
        Err(StoreError::Unavailable(_))
    ));
    store.set_unavailable(false);
    assert!(clone.load(&user()).await.expect("load").is_some());
}
