//! The database goes away and comes back: calls fail fast with
//! `Unavailable` while it is down and succeed again on the same client
//! afterwards, with no link lost or duplicated.
//!
//! Runs its own FerretDB (never the shared one, which other tests use) with
//! `CARDBIND_TEST_FERRETDB_CTL` / `CARDBIND_TEST_FERRETDB_BIN` from
//! `scripts/test-services.sh`.

// Test code: a failed expectation is a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use cardbind_mongo::MongoStore;
use cardbind_ports::audit::{verify_links, AuditAction, AuditLog};
use cardbind_ports::store::WalletStore;
use cardbind_ports::testkit::{at, event, user_id, wallet};
use cardbind_ports::StoreError;

struct Ferret {
    ctl: String,
    dir: PathBuf,
    port: u16,
}

impl Ferret {
    fn from_env() -> Option<Ferret> {
        let vars = [
            "CARDBIND_TEST_FERRETDB_CTL",
            "CARDBIND_TEST_FERRETDB_BIN",
            "CARDBIND_TEST_SERVICES_DIR",
        ];
        let missing: Vec<_> = vars.iter().filter(|v| std::env::var(v).is_err()).collect();
        if !missing.is_empty() {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(
                !ci,
                "{missing:?} not set and CI=true: run through scripts/test-services.sh"
            );
            eprintln!("skipped: {missing:?} not set; run through scripts/test-services.sh");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let dir = PathBuf::from(std::env::var("CARDBIND_TEST_SERVICES_DIR").ok()?)
            .join(format!("restart-{}", common::fresh_db_name()));
        Some(Ferret {
            ctl: std::env::var("CARDBIND_TEST_FERRETDB_CTL").ok()?,
            dir,
            port,
        })
    }

    fn ctl(&self, action: &str) {
        let mut c = Command::new("bash");
        c.arg(&self.ctl).arg(action).arg(&self.dir);
        if action == "start" {
            c.arg(self.port.to_string());
        }
        let status = c.status().expect("run ferretdb-ctl.sh");
        assert!(status.success(), "ferretdb-ctl.sh {action} failed");
    }
}

impl Drop for Ferret {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.ctl)
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_database_restart() {
    let Some(ferret) = Ferret::from_env() else {
        return;
    };
    ferret.ctl("start");
    let uri = format!("mongodb://127.0.0.1:{}/", ferret.port);
    let store = MongoStore::connect(&uri, "restart", Duration::from_secs(5))
        .await
        .expect("connect");
    store.ensure_indexes().await.expect("indexes");

    let user = user_id(&common::unique("u"));
    let ev = |a| vec![event(a, Some(&user), None)];
    let first = store
        .commit(
            &wallet(&user, 1, at(0)),
            None,
            ev(AuditAction::BindingCreate),
            at(0),
        )
        .await
        .expect("commit before");

    ferret.ctl("stop");
    let w2 = wallet(&user, 2, at(1));
    for _ in 0..2 {
        let started = Instant::now();
        let r = store
            .commit(
                &w2,
                Some(first.clone()),
                ev(AuditAction::BindingVerify),
                at(1),
            )
            .await;
        assert!(
            matches!(r, Err(StoreError::Unavailable(_))),
            "while down: {r:?}"
        );
        let r = store.load(&user).await;
        assert!(
            matches!(r, Err(StoreError::Unavailable(_))),
            "while down: {r:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "took {:?}",
            started.elapsed()
        );
    }

    ferret.ctl("start");
    // The same client finds the server again by itself.
    let deadline = Instant::now() + Duration::from_secs(20);
    let second = loop {
        match store
            .commit(
                &w2,
                Some(first.clone()),
                ev(AuditAction::BindingVerify),
                at(1),
            )
            .await
        {
            Ok(h) => break h,
            // The attempts while down never reached the server, so a
            // conflict here would be a lost-and-repeated write.
            Err(StoreError::Unavailable(e)) if Instant::now() < deadline => {
                eprintln!("not back yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("after restart: {e:?}"),
        }
    };
    assert_eq!(second.seq, 2);
    let got = store.load(&user).await.expect("load").expect("stored");
    assert_eq!((got.wallet, got.head), (w2, second));
    let links = store.links(None, 10).await.expect("links");
    assert_eq!(verify_links(&links), Ok(2), "both links, once each");
}
