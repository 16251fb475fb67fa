//! Whether the service can serve: its store and its key service answer.

use cardbind_domain::UserId;

use crate::UseCases;

/// What did not answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotReady {
    pub store: Option<String>,
    pub keys: Option<String>,
}

impl UseCases {
    /// Opens the key service's start-up canary: a service whose master key
    /// is wrong or unreachable must not start.
    pub async fn key_self_check(&self) -> Result<(), cardbind_ports::KeyError> {
        self.ports.vault.self_check().await
    }

    /// Reads a wallet (any user: nothing needs to exist) and opens the key
    /// service's start-up canary.
    pub async fn readiness(&self) -> Result<(), NotReady> {
        let store = match UserId::parse("readiness-probe") {
            Ok(u) => self
                .ports
                .wallets
                .load(&u)
                .await
                .err()
                .map(|e| e.to_string()),
            Err(_) => Some("probe id refused".to_owned()),
        };
        let keys = self
            .ports
            .vault
            .self_check()
            .await
            .err()
            .map(|e| e.to_string());
        match (store, keys) {
            (None, None) => Ok(()),
            (store, keys) => Err(NotReady { store, keys }),
        }
    }
}
