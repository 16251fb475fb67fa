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
    /// service's start-up canary, both at once, each given `deadline`: a
    /// probe answers within it whatever hangs (a load balancer's probe
    /// that times out learns nothing from a late answer).
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
            match tokio::time::timeout(deadline, self.ports.vault.self_check()).await {
                Ok(r) => r.err().map(|e| e.to_string()),
                Err(_) => Some(late()),
            }
        };
        let (store, keys) = tokio::join!(store, keys);
        match (store, keys) {
            (None, None) => Ok(()),
            (store, keys) => Err(NotReady { store, keys }),
        }
    }
}
