//! Whether the service can serve: its store and its key service answer.

use cardbind_domain::UserId;
use cardbind_ports::KeyError;

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
    /// service's start-up canary, both at once, each given `deadline`: a
    /// probe answers within it whatever hangs (a load balancer's probe
    /// that times out learns nothing from a late answer). A key service
    /// that refuses (wrong or disabled master key, tampered canary) is not
    /// ready; one that does not answer is tolerated while the vault serves
    /// without it ([`CardVault::serves_without_master_key`]); a store that
    /// fails the key check's reads counts as the store's.
    ///
    /// [`CardVault::serves_without_master_key`]: cardbind_ports::keys::CardVault::serves_without_master_key
    pub async fn readiness(&self, deadline: std::time::Duration) -> Result<(), NotReady> {
        let late = || format!("no answer within {} ms", deadline.as_millis());
        let store = async {
            match UserId::parse("readiness-probe") {
                Ok(u) => match tokio::time::timeout(deadline, self.ports.wallets.load(&u)).await {
                    Ok(r) => r.err().map(|e| e.to_string()),
                    Err(_) => Some(late()),
                },
                Err(_) => Some("probe id refused".to_owned()),
            }
        };
        let keys = async {
            let vault = &self.ports.vault;
            match tokio::time::timeout(deadline, vault.self_check()).await {
                Ok(Ok(())) => KeyCheck::Passed,
                // The canary's keys are read from the store first.
                Ok(Err(KeyError::StoreUnavailable(e))) => KeyCheck::StoreFailed(e),
                // The master key is not reachable now, but the instance
                // seals and opens with the branch key it holds: it can
                // serve, and taking every instance out of the load
                // balancer for a key service blip would stop it.
                Ok(Err(KeyError::Unavailable(e))) if vault.serves_without_master_key() => {
                    tracing::warn!(error = %e, "the key service did not answer the readiness check; ready on the branch key in memory");
                    KeyCheck::Passed
                }
                Err(_) if vault.serves_without_master_key() => {
                    tracing::warn!("the key service did not answer the readiness check in time; ready on the branch key in memory");
                    KeyCheck::Passed
                }
                Ok(Err(e)) => KeyCheck::Failed(e.to_string()),
                Err(_) => KeyCheck::Failed(late()),
            }
        };
        let (store, keys) = tokio::join!(store, keys);
        let (store, keys) = match keys {
            KeyCheck::Passed => (store, None),
            KeyCheck::StoreFailed(e) => (store.or(Some(e)), None),
            KeyCheck::Failed(e) => (store, Some(e)),
        };
        match (store, keys) {
            (None, None) => Ok(()),
            (store, keys) => Err(NotReady { store, keys }),
        }
    }
}

/// What the readiness check of the key service found.
enum KeyCheck {
    Passed,
    /// The store holding the keys did not answer: the store's outage.
    StoreFailed(String),
    Failed(String),
}
