//! # cardbind (the service)
//!
//! The composition root: reads configuration ([`config`]), builds the
//! adapters it names ([`compose`]) and serves the use cases over an
//! OpenAPI 3 HTTP API ([`http`]). Admin commands live in [`cli`].
//!
//! Adapter choice is erased here, once, into `Arc<dyn Port>`: nothing below
//! this crate is generic over a storage, key or channel type.

pub mod bins;
pub mod cli;
pub mod compose;
pub mod config;
pub mod http;
mod mac;
pub mod state;
pub mod step_up;
pub mod tasks;

pub use state::AppState;
