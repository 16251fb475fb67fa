//! Erasing a user: every card unbound (here and at its channel), the card
//! data deleted and the user's key destroyed, so that what may remain of
//! their card data anywhere (replicas, backups) no longer opens. Every
//! family share ends: those the user gave with their cards (then in each
//! secondary's wallet), and those made to them (in each primary's wallet
//! first, then in theirs with the erasure).

use std::sync::Mutex;

use std::collections::BTreeMap;

use cardbind_domain::{Action, Binding, ErrorCode, Timestamp, UserId};
use cardbind_ports::audit::{AuditAction, AuditEvent, AuditFilter, Outcome};
use cardbind_ports::step_up::StepUpAction;
use cardbind_ports::StoreError;

use crate::access::{step_up_required, SteppedUp};
use crate::context::RequestContext;
use crate::error::{op_error, Internal};
use crate::tx::{until_settled, Raced};
use crate::UseCases;

op_error! {
    /// Why an erasure was refused.
    pub enum EraseError { Forbidden, Conflict, Unavailable }
    from Store, Keys
}

/// An erasure asked for now, or one that did not finish run again.
#[derive(Clone, Copy, Debug)]
enum Run<'a> {
    /// Asked now, with the operator's step-up token (or none), checked
    /// when step-up is enabled; its start is recorded under a new id.
    Asked(Option<&'a str>),
    /// The erasure of this id, whose start is on record with no
    /// successful `user.erase` of it: step-up is not asked again (it
    /// passed before the start was recorded) and no second start is
    /// written.
    Finishing(&'a str),
}

/// The prefix of the detail of an erasure's `user.erase_start` and of its
/// `user.erase`, which ties the two together (they are in different
/// chains, whose instants need not agree).
fn erasure_tag(erasure: &str) -> String {
    format!("erasure {erasure}: ")
}

/// The erasure id a start's detail names (`None`: a start written before
/// starts carried one).
fn erasure_of(detail: Option<&str>) -> Option<&str> {
    let rest = detail?.strip_prefix("erasure ")?;
    let (id, _) = rest.split_once(": ")?;
    (!id.is_empty() && !id.contains(' ')).then_some(id)
}

/// What [`UseCases::finish_erasures`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErasuresFinished {
    /// Users whose erasure started and did not finish.
    pub unfinished: u64,
    /// Of those, erased now.
    pub finished: u64,
    /// Of those, whose erasure failed again (logged; the next run tries
    /// again).
    pub errors: u64,
}

/// What an erasure did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Erasure {
    /// Cards that were unbound by it.
    pub unbound: u64,
    /// Whether the user had key material to destroy.
    pub key_destroyed: bool,
}

impl UseCases {
    /// Erases `user` (see the module docs). With step-up enabled, the
    /// operator's step-up token for this user is required. Erasing twice
    /// is harmless.
    pub async fn erase_user(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        step_up_token: Option<&str>,
    ) -> Result<Erasure, EraseError> {
        self.authorize(ctx, Action::EraseUser, Some(user)).await?;
        self.erase(ctx, user, Run::Asked(step_up_token)).await
    }

    /// Runs again, to its end, every erasure that recorded its start
    /// (`user.erase_start`) within the reconciliation's lookback (7 days),
    /// at least `older_than_seconds` ago (so that an erasure still running
    /// is not run beside itself), and has no `user.erase` of outcome `ok`
    /// of that erasure: its process died between the key's delete and the
    /// change that unbinds the cards, or the erasure failed after its start
    /// (the store did not answer; the user's cards may still be bound,
    /// their data no longer opening). Only each user's newest start counts.
    /// The step-up the erasure passed is not asked again. `cardbind
    /// reconcile` runs it.
    pub async fn finish_erasures(
        &self,
        older_than_seconds: i64,
    ) -> Result<ErasuresFinished, EraseError> {
        const PAGE: u32 = 500;
        let ctx = RequestContext::service("reconcile");
        let now = self.now();
        // The newest start of each user in the window (the starts are in
        // the service's chain, listed in its order); a user whose newest
        // start is younger than `older_than_seconds` is left for a later
        // run (an erasure still running, or one run again by hand whose
        // earlier start did not finish: that earlier one is not the user's
        // erasure any more).
        let mut starts: BTreeMap<UserId, (Timestamp, Option<String>)> = BTreeMap::new();
        let starts_filter = AuditFilter {
            action: Some(AuditAction::UserEraseStart),
            since: Some(now.minus_seconds(self.policy.reconcile_lookback_seconds)),
            ..AuditFilter::default()
        };
        let mut after = None;
        loop {
            let (page, next) = self.audit_page(&starts_filter, after, PAGE).await?;
            for r in &page {
                if let Some(u) = &r.event.user_id {
                    let id = erasure_of(r.event.detail.as_deref()).map(str::to_owned);
                    starts.insert(u.clone(), (r.cursor.at, id));
                }
            }
            let Some(n) = next else { break };
            after = Some(n);
        }
        let old_enough = now.minus_seconds(older_than_seconds.max(0));
        starts.retain(|_, (at, _)| *at <= old_enough);
        let mut report = ErasuresFinished::default();
        for (user, (started, erasure)) in starts {
            // The erasure's own `user.erase` (in the user's chain, or the
            // service's when the wallet did not parse), found by its id;
            // for a start that names none, any after it in time.
            let ended = AuditFilter {
                action: Some(AuditAction::UserErase),
                user_id: Some(user.clone()),
                since: erasure.is_none().then_some(started),
                ..AuditFilter::default()
            };
            let tag = erasure.as_deref().map(erasure_tag);
            let mut after = None;
            let finished = loop {
                let (page, next) = self.audit_page(&ended, after, PAGE).await?;
                let found = page.iter().any(|r| {
                    r.event.outcome == Outcome::Ok
                        && tag.as_ref().is_none_or(|t| {
                            r.event.detail.as_deref().is_some_and(|d| d.starts_with(t))
                        })
                });
                match next {
                    Some(n) if !found => after = Some(n),
                    _ => break found,
                }
            };
            if finished {
                continue;
            }
            report.unfinished += 1;
            let id = erasure.unwrap_or_else(|| self.ports.ids.opaque_id());
            match self.erase(&ctx, &user, Run::Finishing(&id)).await {
                Ok(e) => {
                    tracing::info!(%user, unbound = e.unbound, "an erasure that did not finish was run again to its end");
                    report.finished += 1;
                }
                Err(e) => {
                    tracing::error!(%user, error = %e, "an erasure that did not finish failed again; the next reconcile tries again");
                    report.errors += 1;
                }
            }
        }
        Ok(report)
    }

    async fn erase(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        run: Run<'_>,
    ) -> Result<Erasure, EraseError> {
        let erasure = match run {
            Run::Asked(_) => self.ports.ids.opaque_id(),
            Run::Finishing(id) => id.to_owned(),
        };
        let tag = erasure_tag(&erasure);
        let stepped_up = SteppedUp::default();
        let unsigned: Mutex<Vec<(Binding, Vec<AuditEvent>)>> = Mutex::new(Vec::new());
        let destroyed = std::sync::atomic::AtomicBool::new(false);
        let announced = std::sync::atomic::AtomicBool::new(false);
        let unreadable: Mutex<Option<String>> = Mutex::new(None);
        let settled = until_settled::<_, EraseError, _, _>(|| async {
            let loaded = match self.load(user).await {
                Ok(l) => l,
                Err(StoreError::Corrupt(why)) => {
                    if let Ok(mut u) = unreadable.lock() {
                        *u = Some(why);
                    }
                    return Err(Raced::fail(Internal::new(
                        "the user's wallet does not parse",
                    )));
                }
                Err(e) => return Err(e.into()),
            };
            let mut events = Vec::new();
            if let (true, Run::Asked(token)) = (self.step_up_enabled(), run) {
                events.extend(
                    self.require_step_up::<Raced<_>>(
                        ctx,
                        &loaded,
                        None,
                        StepUpAction::EraseUser,
                        token,
                        &stepped_up,
                    )
                    .await?,
                );
            }
            // Recorded as started before anything is done (once): an
            // erasure that stops later (a process that dies between the
            // key's delete and the change) leaves that record, and one
            // that cannot record it has ended no agreement, revoked no
            // share and destroyed no key.
            if matches!(run, Run::Asked(_)) && !announced.load(std::sync::atomic::Ordering::SeqCst)
            {
                self.announce_erasure(ctx, user, &tag)
                    .await
                    .map_err(Raced::fail)?;
                announced.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            // End every agreement at its channel once.
            let live: Vec<Binding> = loaded
                .wallet
                .bindings()
                .iter()
                .filter(|b| b.status != cardbind_domain::BindingStatus::Inactive)
                .cloned()
                .collect();
            for b in &live {
                let done = unsigned
                    .lock()
                    .map(|u| u.iter().any(|(x, _)| x.id == b.id))
                    .unwrap_or(false);
                if !done {
                    let e = self.unsign_at_channel(ctx, b).await;
                    if let Ok(mut u) = unsigned.lock() {
                        u.push((b.clone(), e));
                    }
                }
            }
            if let Ok(u) = unsigned.lock() {
                for (_, e) in u.iter().filter(|(b, _)| live.iter().any(|l| l.id == b.id)) {
                    events.extend(e.iter().cloned());
                }
            }
            // Shares made to the user end where they are the truth first.
            self.revoke_shares_made_to(ctx, user, &loaded.wallet)
                .await?;
            let mut wallet = loaded.wallet.clone();
            let now = self.now();
            let open: Vec<_> = wallet
                .shared_in()
                .iter()
                .filter(|m| !m.is_ended())
                .map(|m| m.share.clone())
                .collect();
            for id in open {
                if wallet.end_shared_in(&id, now, &ctx.actor.subject) {
                    events.push(
                        ctx.event(now, AuditAction::ShareRevoke)
                            .user(user)
                            .binding(&id.card_id())
                            .detail(format!("share {id} ended: erasure"))
                            .build(),
                    );
                }
            }
            let changed = wallet.unbind_all(now, &ctx.actor.subject);
            wallet.forget_fingerprints();
            for id in &changed {
                events.push(
                    ctx.event(now, AuditAction::BindingUnbind)
                        .user(user)
                        .binding(id)
                        .detail("erasure")
                        .build(),
                );
            }
            events.push(
                ctx.event(now, AuditAction::UserErase)
                    .user(user)
                    .detail(format!("{tag}unbound {}", changed.len()))
                    .build(),
            );
            // The key goes before the change that unbinds the cards is
            // stored, in every round: a bind that reads the wallet after
            // it (the user has no live card) finds no key to seal under
            // and makes a new one, which no erasure step deletes after it;
            // a key a bind made before this round's delete belongs to a
            // card this change unbinds (or, if that bind's change is
            // stored first, this change loses the race and the next round
            // deletes it). Deleted after the change, it could take the key
            // a bind of the erased user had sealed a live card under.
            if self
                .ports
                .vault
                .erase_owner(user)
                .await
                .map_err(Raced::fail)?
            {
                destroyed.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            self.commit(ctx, &loaded, &wallet, events).await?;
            Ok((loaded.wallet, wallet))
        })
        .await;
        let unreadable = unreadable.lock().ok().and_then(|mut u| u.take());
        let (unbound, after) = match (settled, unreadable) {
            (Ok(done), _) => done,
            (Err(_), Some(why)) => {
                return Err(self
                    .erase_unreadable_wallet(ctx, user, run, &tag, &why)
                    .await);
            }
            (Err(e), None) => {
                if destroyed.load(std::sync::atomic::Ordering::SeqCst) {
                    // The key went, the change that unbinds the cards was
                    // not stored (the store failed, or other changes kept
                    // winning): their data no longer opens, and the
                    // record of that must not be the log line alone.
                    let now = self.now();
                    let event = ctx
                        .event(now, AuditAction::UserErase)
                        .user(user)
                        .detail(format!(
                            "{tag}key destroyed; the change unbinding the cards was not stored ({e}): erase again"
                        ))
                        .refused(e.code())
                        .build();
                    if let Err(a) = self.ports.audit.append_system(vec![event], now).await {
                        tracing::error!(%user, error = %a, "erasure: key destroyed, not audited");
                    }
                }
                return Err(e);
            }
        };
        // The shares the user gave ended with their cards; so do the
        // secondaries' mirrors.
        // (All of them: an erasure repeated after one that stopped here
        // completes it.)
        self.end_mirrors_of_ended(ctx, &after, None, "its holder was erased")
            .await;
        // Every card's data, reference and review entry (as the card was
        // before: its review entry goes by that status); the key went
        // before the change. Cards the wallet let go in this change were
        // cleaned up by the commit.
        for b in unbound
            .bindings()
            .iter()
            .filter(|b| after.get(&b.id).is_ok())
        {
            self.forget_card(user, b, crate::forget::Forget::TheCard)
                .await;
        }
        let key_destroyed = destroyed.load(std::sync::atomic::Ordering::SeqCst);
        let count = unbound
            .bindings()
            .iter()
            .filter(|b| b.status != cardbind_domain::BindingStatus::Inactive)
            .count() as u64;
        Ok(Erasure {
            unbound: count,
            key_destroyed,
        })
    }

    /// Records in the service's chain that the erasure of `user` starts,
    /// before their key is destroyed: an erasure that then stops before
    /// its `user.erase` (its process dies between the key's delete and the
    /// change that unbinds the cards) is on record, not in a log line
    /// alone. Not recorded, nothing is destroyed: the erasure fails.
    async fn announce_erasure(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        tag: &str,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let event = ctx
            .event(now, AuditAction::UserEraseStart)
            .user(user)
            .detail(format!("{tag}the user's key is destroyed next; without a user.erase of this erasure after this, it did not finish: `cardbind reconcile` runs it again"))
            .build();
        self.ports.audit.append_system(vec![event], now).await
    }

    /// The erasure of a user whose wallet does not parse: their cards
    /// cannot be read, so they are neither unbound nor ended at their
    /// channels, but the user's key is destroyed, so that their card data
    /// no longer opens anywhere (what erasure owes first). Recorded in the
    /// service's chain; the answer is an error naming what is left.
    async fn erase_unreadable_wallet(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        run: Run<'_>,
        tag: &str,
        why: &str,
    ) -> EraseError {
        let now = self.now();
        if let Run::Asked(token) = run {
            if let Some((e, passed)) = self
                .check_step_up(ctx, user, None, StepUpAction::EraseUser, token)
                .await
            {
                let _ = self.ports.audit.append_system(vec![e], now).await;
                if !passed {
                    return step_up_required().into();
                }
            }
        }
        tracing::error!(%user, cause = %why, "erasure: the user's wallet does not parse; destroying their key");
        if let Run::Asked(_) = run {
            if let Err(e) = self.announce_erasure(ctx, user, tag).await {
                return e.into();
            }
        }
        let destroyed = match self.ports.vault.erase_owner(user).await {
            Ok(d) => d,
            Err(e) => return e.into(),
        };
        // Stamped after the start record, which it follows in the log.
        let now = self.now();
        let event = ctx
            .event(now, AuditAction::UserErase)
            .user(user)
            .detail(format!(
                "{tag}the wallet does not parse: key {}, cards not unbound",
                if destroyed {
                    "destroyed"
                } else {
                    "already gone"
                }
            ))
            .refused(ErrorCode::InternalError)
            .build();
        if let Err(e) = self.ports.audit.append_system(vec![event], now).await {
            tracing::warn!(%user, error = %e, "erasure of an unreadable wallet not audited");
        }
        Internal::new(
            "the user's wallet does not parse: their key was destroyed (their card data no \
             longer opens anywhere), but their cards were not unbound nor their agreements \
             ended at the channels; repair the wallet's newest record and erase again",
        )
        .into()
    }
}
