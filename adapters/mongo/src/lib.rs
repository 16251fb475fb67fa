//! # cardbind-mongo
//!
//! (crate documentation: see the end of this work; placeholder while the
//! code settles)

mod audit;
mod bindings;
mod consents;
mod data_keys;
mod docs;
mod idempotency;
mod rates;
mod store;

pub use store::{collections, MongoConfig, MongoStore, PurgeCounts};
