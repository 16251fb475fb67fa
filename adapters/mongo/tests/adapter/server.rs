//! The server: a dead one is unavailable within seconds, the operation
//! timeout bounds a call, the declared indexes are created (idempotently).

use super::*;

/// A store for a server on a port nobody listens on, with `options` in
/// its URI (constructing it does not contact the server).
async fn store_of_no_server(options: &str) -> MongoStore {
    let port = closed_port();
    MongoStore::connect(
        &format!("mongodb://127.0.0.1:{port}/{options}"),
        "nowhere",
        Duration::from_secs(5),
    )
    .await
    .expect("constructing does not contact the server")
}

#[tokio::test]
async fn reads_and_writes_are_majority_unless_the_uri_says_otherwise() {
    use mongodb::options::{Acknowledgment, ReadConcernLevel};
    let concerns = |s: &MongoStore| {
        let db = s.database();
        (
            db.write_concern().and_then(|w| w.w.clone()),
            db.read_concern().map(|r| r.level.clone()),
        )
    };
    assert_eq!(
        concerns(&store_of_no_server("").await),
        (
            Some(Acknowledgment::Majority),
            Some(ReadConcernLevel::Majority)
        )
    );
    assert_eq!(
        concerns(&store_of_no_server("?w=1&readConcernLevel=local").await),
        (
            Some(Acknowledgment::Nodes(1)),
            Some(ReadConcernLevel::Local)
        )
    );
}

#[tokio::test]
async fn dead_server_is_unavailable_within_seconds() {
    let store = store_of_no_server("").await;
    let u = user_id("alice");
    let started = Instant::now();
    let r = store.load(&u).await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    let r = store
        .commit(
            &wallet(&u, 1, at(0)),
            None,
            vec![event(AuditAction::BindingCreate, Some(&u), None)],
            at(0),
        )
        .await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    let r = store.ensure_indexes().await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    let r = store.ping().await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    let elapsed = started.elapsed();
    // Four operations, each bounded by the 2 s server selection timeout.
    assert!(elapsed < Duration::from_secs(12), "took {elapsed:?}");
}

#[tokio::test]
async fn operation_timeout_bounds_a_call() {
    let port = closed_port();
    let mut cfg = MongoConfig::new(
        format!("mongodb://127.0.0.1:{port}/"),
        "nowhere",
        Duration::from_millis(300),
    );
    cfg.server_selection_timeout = Duration::from_secs(30);
    let store = MongoStore::with_config(cfg).await.expect("config");
    let started = Instant::now();
    let w = RateWindow {
        key: "k".into(),
        limit: 1,
        expires_at: at(60),
    };
    let r = store.take(&[w], at(0)).await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn ensure_indexes_creates_the_declared_indexes_and_is_idempotent() {
    let Some(uri) = uri() else { return };
    let (store, name) = fresh_store(&uri).await;
    store.ensure_indexes().await.expect("again");
    store.ensure_indexes().await.expect("and again");
    store.ping().await.expect("ping");
    let db = raw_db(&uri, &name).await;
    for c in SCHEMA {
        let mut got: Vec<String> = db
            .collection::<Document>(c.name)
            .list_index_names()
            .await
            .expect("indexes");
        got.sort();
        let mut want: Vec<String> = c.indexes.iter().map(|i| i.name.to_owned()).collect();
        want.push("_id_".to_owned());
        want.sort();
        assert_eq!(got, want, "{}", c.name);
        for model in db
            .collection::<Document>(c.name)
            .list_indexes()
            .await
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
        {
            let Some(o) = model.options else { continue };
            let Some(n) = o.name else { continue };
            if let Some(spec) = c.indexes.iter().find(|i| i.name == n) {
                assert_eq!(o.unique.unwrap_or(false), spec.unique, "{}.{n}", c.name);
                let keys: Vec<(String, i32)> = model
                    .keys
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            v.as_i32()
                                .or_else(|| v.as_i64().map(|x| x as i32))
                                .unwrap_or(0),
                        )
                    })
                    .collect();
                let want: Vec<(String, i32)> = spec
                    .keys
                    .iter()
                    .map(|(k, d)| ((*k).to_owned(), *d))
                    .collect();
                assert_eq!(keys, want, "{}.{n}", c.name);
            }
        }
    }
}
