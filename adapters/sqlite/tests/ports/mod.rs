//! The ports' contracts on SQLite, races included (until the shared
//! contract suite covers them).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

mod audit;
mod data;
mod idempotency;
mod wallets;

use cardbind_domain::{SealedBlob, SealedCard};
use cardbind_ports::audit::{verify_links, AuditAction, AuditFilter, ChainId};
use cardbind_ports::store::{
    CardData, Claim, Lease, LinkKey, RateTake, RateWindow, RefTarget, ReviewEntry, StoredResponse,
    WrappedKey,
};
use cardbind_ports::StoreError;
use common::*;
