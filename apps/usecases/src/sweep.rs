//! The operator's sweep of what a card's binds stored and no wallet holds
//! now: sealed card data, and channel references.
//!
//! Every clean-up of a card's data and references deletes what the one
//! bind it read stored, so that none takes what a bind of the card again
//! is storing; a delete that fails is retried once, by the next bind of
//! the card. What two failed deletes leave (or a request stopped between
//! its write and its clean-up, or a reference recorded by a code check
//! while an unbind ended the card), the sweep finds: it walks every stored
//! record, reads the wallets of their users, and deletes each record that
//! its card does not hold now.
//!
//! Why it never takes a record in use: it reads the records before the
//! wallets, and a bind stores its data and references only after the
//! wallet write that names its generation, so a wallet read after the
//! record is at least as new as that write. And it deletes a record only
//! after reading the wallet a second time, `settle` later, and finding it
//! still not held: a wallet read that lags behind (a store that answers
//! from a replica catching up) does not decide alone. A reference is
//! deleted only while it still names the generation read, and never while
//! its card names it as its agreement (a channel that gives a card the
//! same reference at every bind has it recorded by whichever bind wrote
//! it last).
//!
//! A read the store does not answer is tried twice more (1 s, then 2 s
//! later) before the sweep stops: one lost page should not end a walk of
//! every record. A delete that fails is counted and left to the next run.
//! A wallet that does not parse (a corrupt record) does not stop the walk
//! either: its page's wallets are read again one by one, and the records
//! of the wallet that does not parse are kept and counted as unreadable
//! (what its card holds cannot be known, so nothing of it is deleted).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use cardbind_domain::{Binding, BindingId, BindingStatus, ChannelName, UserId, Wallet};
use cardbind_ports::store::{CardDataKey, ChannelRefEntry};
use cardbind_ports::StoreError;

use crate::{Ports, UseCases};

/// What a sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Records read.
    pub examined: u64,
    /// Held by their card: kept.
    pub kept: u64,
    /// Held by no card at both reads: deleted.
    pub deleted: u64,
    /// Deletes that failed (logged; the next sweep tries again).
    pub errors: u64,
    /// Kept because their user's wallet does not parse (logged): an
    /// operator's matter, not the next sweep's.
    pub unreadable: u64,
}

/// A kind of record the sweep walks: one a bind of a card stores, named
/// by its card and the generation of that bind.
#[async_trait]
trait Swept: Clone + Send + Sync + Sized + 'static {
    /// The walk's order.
    type Key: Ord + Clone + Send + Sync;
    /// For the logs.
    const WHAT: &'static str;

    fn key(&self) -> Self::Key;
    fn user(&self) -> &UserId;
    fn binding(&self) -> &BindingId;
    /// Whether `card`, the wallet's record of this record's card (none
    /// when the wallet has no such card), holds it.
    fn held_by(&self, card: Option<&Binding>) -> bool;
    fn generation(&self) -> Option<u32>;

    async fn page(
        ports: &Ports,
        after: Option<Self::Key>,
        limit: u32,
    ) -> Result<Vec<Self>, StoreError>;
    async fn delete(&self, ports: &Ports) -> Result<u64, StoreError>;
}

#[async_trait]
impl Swept for CardDataKey {
    type Key = (BindingId, u32);
    const WHAT: &'static str = "card data";

    fn key(&self) -> Self::Key {
        (self.binding.clone(), self.generation)
    }
    fn user(&self) -> &UserId {
        &self.user
    }
    fn binding(&self) -> &BindingId {
        &self.binding
    }
    fn generation(&self) -> Option<u32> {
        Some(self.generation)
    }
    fn held_by(&self, card: Option<&Binding>) -> bool {
        card.is_some_and(|b| b.status.keeps_card_data() && b.data_generation == self.generation)
    }

    async fn page(
        ports: &Ports,
        after: Option<Self::Key>,
        limit: u32,
    ) -> Result<Vec<Self>, StoreError> {
        ports.card_data.list_keys(after, limit).await
    }
    async fn delete(&self, ports: &Ports) -> Result<u64, StoreError> {
        ports
            .card_data
            .delete_generation(&self.user, &self.binding, self.generation)
            .await
    }
}

#[async_trait]
impl Swept for ChannelRefEntry {
    type Key = (ChannelName, String);
    const WHAT: &'static str = "channel reference";

    fn key(&self) -> Self::Key {
        (self.channel.clone(), self.channel_ref.clone())
    }
    fn user(&self) -> &UserId {
        &self.target.user
    }
    fn binding(&self) -> &BindingId {
        &self.target.binding
    }
    fn generation(&self) -> Option<u32> {
        self.generation
    }
    /// A card holds the references of its current bind, and the one it
    /// names as its agreement, until it is unbound: a failed card's stay
    /// (a late signing of its agreement is found by them and ended) until
    /// the card is bound again or leaves its wallet. The agreement the card
    /// names counts whatever generation the reference carries: a channel
    /// that gives a card the same reference at every bind has it recorded
    /// by whichever bind wrote last, a late start of an earlier bind
    /// included. One recorded before references carried a generation goes
    /// with any bind of its card.
    fn held_by(&self, card: Option<&Binding>) -> bool {
        card.is_some_and(|b| {
            b.status != BindingStatus::Inactive
                && (self.generation.is_none_or(|g| g == b.data_generation)
                    || (b.channel == self.channel
                        && b.channel_ref.as_deref() == Some(self.channel_ref.as_str())))
        })
    }

    async fn page(
        ports: &Ports,
        after: Option<Self::Key>,
        limit: u32,
    ) -> Result<Vec<Self>, StoreError> {
        ports.channel_refs.list(after, limit).await
    }
    async fn delete(&self, ports: &Ports) -> Result<u64, StoreError> {
        ports.channel_refs.delete_entry(self).await
    }
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
        self.sweep::<CardDataKey>(page, settle).await
    }

    /// Walks every stored channel reference, `page` at a time, and deletes
    /// those whose card does not hold them now (it left its wallet, was
    /// unbound, or was bound again since), read twice `settle` apart. Not a
    /// request path (`cardbind sweep-card-data` runs it after the data).
    pub async fn sweep_channel_refs(
        &self,
        page: u32,
        settle: Duration,
    ) -> Result<SweepReport, StoreError> {
        self.sweep::<ChannelRefEntry>(page, settle).await
    }

    /// Walks `T`'s records and deletes those no card holds; the walk is
    /// audited however it ends (its counts so far, and why it stopped).
    async fn sweep<T: Swept>(
        &self,
        page: u32,
        settle: Duration,
    ) -> Result<SweepReport, StoreError> {
        let mut report = SweepReport::default();
        let walked = self.walk::<T>(page, settle, &mut report).await;
        let audited = self.audit_sweep::<T>(&report, walked.as_ref().err()).await;
        walked?;
        audited?;
        Ok(report)
    }

    async fn walk<T: Swept>(
        &self,
        page: u32,
        settle: Duration,
        report: &mut SweepReport,
    ) -> Result<(), StoreError> {
        let page = page.clamp(1, 1000);
        let mut candidates = Vec::new();
        let mut after: Option<T::Key> = None;
        loop {
            let records = retrying(T::WHAT, || T::page(&self.ports, after.clone(), page)).await?;
            let Some(last) = records.last() else { break };
            let next = last.key();
            if after.as_ref().is_some_and(|a| &next <= a) {
                return Err(StoreError::Corrupt(format!(
                    "the {} keys did not come in order",
                    T::WHAT
                )));
            }
            after = Some(next);
            report.examined += records.len() as u64;
            let not = self.held(records, report).await?;
            candidates.extend(not);
        }
        if candidates.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(settle).await;
        for chunk in candidates.chunks(page as usize) {
            let not = self.held(chunk.to_vec(), report).await?;
            for r in not {
                match r.delete(&self.ports).await {
                    Ok(n) => {
                        report.deleted += n;
                        tracing::info!(binding = %r.binding(), generation = ?r.generation(), what = T::WHAT, "no card holds it: deleted by the sweep");
                    }
                    Err(e) => {
                        report.errors += 1;
                        tracing::warn!(binding = %r.binding(), what = T::WHAT, error = %e, "not deleted by the sweep");
                    }
                }
            }
        }
        Ok(())
    }

    /// The sweep's record in the service's chain: what it walked and how
    /// many it deleted (it deletes sealed card data, which every other
    /// deletion of it records too), and why it stopped if it did.
    async fn audit_sweep<T: Swept>(
        &self,
        report: &SweepReport,
        stopped: Option<&StoreError>,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let mut detail = format!(
            "{}: {} examined, {} kept, {} deleted, {} not deleted",
            T::WHAT,
            report.examined,
            report.kept,
            report.deleted,
            report.errors
        );
        if report.unreadable > 0 {
            detail.push_str(&format!(
                ", {} kept whose wallet does not parse",
                report.unreadable
            ));
        }
        if let Some(why) = stopped {
            detail.push_str(&format!("; stopped: {why}"));
        }
        let mut e = crate::RequestContext::service("sweep-card-data")
            .event(now, cardbind_ports::audit::AuditAction::CardDataSweep)
            .detail(detail);
        if let Some(why) = stopped {
            e = e.refused(match why {
                StoreError::Unavailable(_) => cardbind_domain::ErrorCode::StorageUnavailable,
                _ => cardbind_domain::ErrorCode::InternalError,
            });
        }
        let e = e.build();
        self.ports.audit.append_system(vec![e], now).await
    }

    /// Reads the wallets of the records' users, counts in `report` the
    /// records their card holds now (and those whose wallet does not
    /// parse, kept), and returns the others.
    async fn held<T: Swept>(
        &self,
        records: Vec<T>,
        report: &mut SweepReport,
    ) -> Result<Vec<T>, StoreError> {
        let users: Vec<UserId> = records
            .iter()
            .map(|r| r.user().clone())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let (wallets, unreadable) = self.wallets_of(&users).await?;
        let mut not = Vec::new();
        for r in records {
            if unreadable.contains(r.user()) {
                report.unreadable += 1;
                tracing::error!(binding = %r.binding(), what = T::WHAT, "its wallet does not parse: kept by the sweep");
            } else if r.held_by(wallets.get(r.user()).and_then(|w| w.get(r.binding()).ok())) {
                report.kept += 1;
            } else {
                not.push(r);
            }
        }
        Ok(not)
    }

    /// The wallets of `users` (one read), and those of the users whose
    /// wallet does not parse: when the one read meets such a wallet, each
    /// user's is read alone, so that one corrupt record does not stop the
    /// walk at the same place every run.
    async fn wallets_of(
        &self,
        users: &[UserId],
    ) -> Result<(HashMap<UserId, Wallet>, HashSet<UserId>), StoreError> {
        match retrying("wallets", || self.ports.wallets.load_many(users)).await {
            Ok(stored) => {
                let wallets = stored
                    .into_iter()
                    .map(|s| (s.wallet.user().clone(), s.wallet))
                    .collect();
                return Ok((wallets, HashSet::new()));
            }
            Err(StoreError::Corrupt(e)) => {
                tracing::warn!(error = %e, "a wallet of the sweep's page does not parse; reading them one by one");
            }
            Err(e) => return Err(e),
        }
        let mut wallets = HashMap::new();
        let mut unreadable = HashSet::new();
        for user in users {
            match retrying("wallet", || self.ports.wallets.load(user)).await {
                Ok(Some(s)) => {
                    wallets.insert(user.clone(), s.wallet);
                }
                Ok(None) => {}
                Err(StoreError::Corrupt(e)) => {
                    tracing::error!(error = %e, "a wallet does not parse: the sweep keeps its user's records");
                    unreadable.insert(user.clone());
                }
                Err(e) => return Err(e),
            }
        }
        Ok((wallets, unreadable))
    }
}

/// `read`, tried again 1 s and then 2 s later while the store does not
/// answer; any other error (a corrupt record) at once.
async fn retrying<R, F, Fut>(what: &str, mut read: F) -> Result<R, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<R, StoreError>>,
{
    let mut wait = Duration::from_secs(1);
    for _ in 0..2 {
        match read().await {
            Err(StoreError::Unavailable(e)) => {
                tracing::warn!(what, error = %e, retry_in_ms = wait.as_millis() as u64, "the sweep's read failed; trying again");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            r => return r,
        }
    }
    read().await
}
