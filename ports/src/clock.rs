//! Time and identifiers, as ports so that tests can fix them.

use cardbind_domain::{BindingId, Timestamp};

/// The current time.
#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait Clock: Send + Sync {
    /// Now, in UTC. MUST NOT go backwards within one process by more than
    /// the host clock does.
    fn now(&self) -> Timestamp;
}

/// New unique identifiers.
#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait IdGenerator: Send + Sync {
    /// A new binding id, unique across all instances (UUIDs or equivalent).
    fn binding_id(&self) -> BindingId;
    /// A new opaque id for other records.
    fn opaque_id(&self) -> String;

    /// A new number for a generation of a binding's sealed data: non-zero,
    /// and unlikely to repeat for one binding (random).
    fn data_generation(&self) -> u32;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Timestamp::from_unix_millis(ms)
    }
}
