//! The operator's sweep of sealed card data that no wallet names live.
//!
//! Every clean-up of a card's data deletes the one generation it read, so
//! that none takes what a bind of the card again is storing; a delete that
//! fails is retried once, by the next bind of the card. What two failed
//! deletes leave (or a request stopped between its write and its
//! clean-up), the sweep finds: it walks every stored generation, reads the
//! wallets of their users, and deletes each generation that its card does
//! not hold now in a status that keeps data.
//!
//! Why it never takes a generation in use: it reads the data's keys before
//! the wallets, and a bind stores its data only after the wallet write
//! that names its generation, so a wallet read after the key is at least
//! as new as that write. And it deletes a generation only after reading
//! the wallet a second time, `settle` later, and finding it still not
//! held: a wallet read that lags behind (a store that answers from a
//! replica catching up) does not decide alone.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use cardbind_domain::{BindingId, UserId, Wallet};
use cardbind_ports::store::CardDataKey;
use cardbind_ports::StoreError;

use crate::UseCases;

/// What a sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Generations of card data read.
    pub examined: u64,
    /// Held by their card: kept.
    pub kept: u64,
    /// Held by no card at both reads: deleted.
    pub deleted: u64,
    /// Deletes that failed (logged; the next sweep tries again).
    pub errors: u64,
}

impl UseCases {
    /// Walks every generation of stored card data, `page` at a time, and
    /// deletes those no wallet holds live, read twice `settle` apart. Not a
    /// request path: it reads every record (an operator's command,
    /// `cardbind sweep-card-data`).
    pub async fn sweep_card_data(
        &self,
        page: u32,
        settle: Duration,
    ) -> Result<SweepReport, StoreError> {
        let page = page.clamp(1, 1000);
        let mut report = SweepReport::default();
        let mut candidates = Vec::new();
        let mut after: Option<(BindingId, u32)> = None;
        loop {
            let keys = self.ports.card_data.list_keys(after.clone(), page).await?;
            let Some(last) = keys.last() else { break };
            let next = (last.binding.clone(), last.generation);
            if after.as_ref().is_some_and(|a| &next <= a) {
                return Err(StoreError::Corrupt(
                    "the card data keys did not come in order".into(),
                ));
            }
            after = Some(next);
            report.examined += keys.len() as u64;
            let (held, not) = self.held(keys).await?;
            report.kept += held;
            candidates.extend(not);
        }
        if candidates.is_empty() {
            return Ok(report);
        }
        tokio::time::sleep(settle).await;
        for chunk in candidates.chunks(page as usize) {
            let (held, not) = self.held(chunk.to_vec()).await?;
            report.kept += held;
            for k in not {
                match self
                    .ports
                    .card_data
                    .delete_generation(&k.user, &k.binding, k.generation)
                    .await
                {
                    Ok(n) => {
                        report.deleted += n;
                        tracing::info!(binding = %k.binding, generation = k.generation, "card data no card holds deleted by the sweep");
                    }
                    Err(e) => {
                        report.errors += 1;
                        tracing::warn!(binding = %k.binding, error = %e, "card data not deleted by the sweep");
                    }
                }
            }
        }
        Ok(report)
    }

    /// Reads the wallets of the keys' users: how many keys their card holds
    /// now in a status that keeps data, and the others.
    async fn held(&self, keys: Vec<CardDataKey>) -> Result<(u64, Vec<CardDataKey>), StoreError> {
        let users: Vec<UserId> = keys
            .iter()
            .map(|k| k.user.clone())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let wallets: HashMap<UserId, Wallet> = self
            .ports
            .wallets
            .load_many(&users)
            .await?
            .into_iter()
            .map(|s| (s.wallet.user().clone(), s.wallet))
            .collect();
        let (held, not): (Vec<_>, Vec<_>) = keys.into_iter().partition(|k| {
            wallets
                .get(&k.user)
                .and_then(|w| w.get(&k.binding).ok())
                .is_some_and(|b| b.status.keeps_card_data() && b.data_generation == k.generation)
        });
        Ok((held.len() as u64, not))
    }
}
