//! What the shared contract suite does not cover: driver error mapping and
//! timeouts against a dead server, the indexes created, what is (and is
//! not) stored, races between separate clients ("instances"), and the
//! adapter's own protocols (fenced idempotency records, rate slots of a
//! reused key, seen ids replaced after expiry, husked data keys).

// Test code: a failed expectation is a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cardbind_mongo::schema::SCHEMA;
use cardbind_mongo::{MongoConfig, MongoStore};
use cardbind_ports::audit::{verify_links, AuditAction, AuditLog, ChainId};
use cardbind_ports::store::{
    CardData, CardDataStore, ChannelRefs, Claim, DataKeyStore, IdempotencyStore, Lease,
    RateLimiter, RateTake, RateWindow, RefTarget, ReviewEntry, ReviewQueue, SeenIds,
    StoredResponse, WalletStore,
};
use cardbind_ports::testkit::{
    at, binding_id, channel, event, race, sealed, user_id, wallet, wrapped_key,
};
use cardbind_ports::StoreError;
use common::*;
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};

/// A port free of listeners (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn response(body: &str) -> StoredResponse {
    StoredResponse {
        status: 201,
        content_type: "application/json".into(),
        body: body.as_bytes().to_vec(),
    }
}

macro_rules! two_instances {
    () => {{
        let Some(uri) = uri() else { return };
        let (a, name) = fresh_store(&uri).await;
        let (b, _) = strict_store(&uri, &name).await;
        (a, b, name, uri)
    }};
}

// After the macro: the modules use it.
mod instances;
mod protocols;
mod server;
mod stored;
