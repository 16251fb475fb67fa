//! # cardbind-keys
//!
//! Envelope encryption of card data (the [`CardVault`] port):
//!
//! * one AES-256 **data key** per owner (user), made locally on first use
//!   and stored only wrapped under a **branch key**, which is itself made
//!   and wrapped by a **master key** ([`MasterKey`]: [`LocalMasterKey`]
//!   from a file, or [`KmsMasterKey`] in AWS KMS), all in a
//!   [`DataKeyStore`](cardbind_ports::store::DataKeyStore) — the AWS
//!   Encryption SDK's hierarchical keyring, see [`branch`]; new users cost
//!   no master key call, branch keys are cached for a bounded TTL and
//!   rotated by age;
//! * each field sealed locally with AES-256-GCM, random 96-bit nonce, bound
//!   to (owner, record, field) by its associated data — see [`format`] for
//!   the byte layout;
//! * keyed, versioned PAN fingerprints (HMAC-SHA256);
//! * crypto-shredding: erasing an owner deletes its wrapped data key;
//! * master key rotation that re-wraps branch keys only ([`rotate`]);
//!   branch key retirement that moves owner keys to the active branch
//!   version and deletes the older ones
//!   ([`EnvelopeVault::retire_branches`]);
//! * a start-up self-check with a sealed canary.
//!
//! Plaintext keys are zeroized on drop ([`DataKey`]), and so are the
//! SHA-256 states HMAC and HKDF keep key material in (`sha2`'s `zeroize`
//! feature); no error, `Debug`
//! output or log line carries card data or key material.
//!
//! ## Wiring
//!
//! ```no_run
//! # async fn wire(store: std::sync::Arc<dyn cardbind_ports::store::DataKeyStore>) -> Result<(), cardbind_ports::error::KeyError> {
//! use cardbind_keys::{EnvelopeVault, LocalMasterKey, VaultConfig};
//! use cardbind_ports::keys::CardVault;
//! let vault = EnvelopeVault::new(
//!     LocalMasterKey::load_or_create(std::path::Path::new("/var/lib/cardbind"))?,
//!     store,
//!     VaultConfig::default(),
//! );
//! vault.self_check().await?;
//! # Ok(()) }
//! ```
//!
//! [`CardVault`]: cardbind_ports::keys::CardVault

pub mod branch;
mod cache;
mod datakey;
pub mod format;
mod kms;
mod local;
mod master;
mod retire;
mod rotate;
mod vault;

pub use branch::{
    branch_owner, parse_branch_owner, BranchConfig, ACTIVE_BRANCH_MARKER, ACTIVE_BRANCH_OWNER,
    BRANCH_PREFIX,
};
pub use cache::CacheConfig;
pub use datakey::{DataKey, DATA_KEY_LEN};
pub use kms::{
    kms_client, KmsConfig, KmsMasterKey, KmsMetrics, StaticCredentials, OWNER_CONTEXT_KEY,
};
pub use local::LocalMasterKey;
pub use master::MasterKey;
pub use retire::RetireReport;
pub use rotate::{rotate, RotationReport};
pub use vault::{
    fingerprint_owner, EnvelopeVault, VaultConfig, CANARY_OWNER, DIGEST_OWNER, FINGERPRINT_OWNER,
    SEALED_CANARY_MARKER, SEALED_CANARY_OWNER,
};
