//! The operator's sweep of sealed card data that no wallet names live.
//!
//! Every clean-up of a card's data deletes the one generation it read, so
//! that none takes what a bind of the card again is storing; a delete that
//! fails is retried once, by the next bind of the card. What two failed
//! deletes leave (or a request stopped between its write and its
//! clean-up), the sweep finds: it walks every stored generation, reads the
//! wallets of their users, and deletes each generation that its card does
//! not hold now in a status that keeps data. It reads the data's keys
//! before the wallets, and data is stored only after the wallet write that
//! names its generation, so a generation a bind is using is always seen
//! held: the sweep never takes it.

use std::collections::HashMap;

use cardbind_domain::{BindingId, UserId, Wallet};
use cardbind_ports::StoreError;

use crate::UseCases;

/// What a sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Generations of card data read.
    pub examined: u64,
    /// Held by their card now: kept.
    pub kept: u64,
    /// Held by no card: deleted.
    pub deleted: u64,
    /// Deletes that failed (logged; the next sweep tries again).
    pub errors: u64,
}

impl UseCases {
    /// Walks every generation of stored card data, `page` at a time, and
    /// deletes those no wallet holds live. Not a request path: it reads
    /// every record (an operator's command, `cardbind sweep-card-data`).
    pub async fn sweep_card_data(&self, page: u32) -> Result<SweepReport, StoreError> {
        let mut report = SweepReport::default();
        let mut after: Option<(BindingId, u32)> = None;
        loop {
            let keys = self
                .ports
                .card_data
                .list_keys(after.clone(), page.clamp(1, 1000))
                .await?;
            let Some(last) = keys.last() else { break };
            after = Some((last.binding.clone(), last.generation));
            let mut users: Vec<UserId> = keys.iter().map(|k| k.user.clone()).collect();
            users.sort();
            users.dedup();
            let wallets: HashMap<UserId, Wallet> = self
                .ports
                .wallets
                .load_many(&users)
                .await?
                .into_iter()
                .map(|s| (s.wallet.user().clone(), s.wallet))
                .collect();
            for k in keys {
                report.examined += 1;
                let held = wallets
                    .get(&k.user)
                    .and_then(|w| w.get(&k.binding).ok())
                    .is_some_and(|b| {
                        b.status.keeps_card_data() && b.data_generation == k.generation
                    });
                if held {
                    report.kept += 1;
                    continue;
                }
                match self
                    .ports
                    .card_data
                    .delete_generation(&k.user, &k.binding, k.generation)
                    .await
                {
                    Ok(n) => report.deleted += n,
                    Err(e) => {
                        report.errors += 1;
                        tracing::warn!(binding = %k.binding, error = %e, "card data not deleted by the sweep");
                    }
                }
            }
        }
        Ok(report)
    }
}
