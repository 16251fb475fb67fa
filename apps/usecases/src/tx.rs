//! Reading a wallet, changing it, and writing it back: the one
//! compare-and-set loop every use case goes through.

use std::future::Future;

use cardbind_domain::{Denied, Timestamp, UserId, Wallet};
use cardbind_ports::audit::{AuditAction, AuditEvent, ChainHead, Outcome};
use cardbind_ports::StoreError;

use crate::context::RequestContext;
use crate::UseCases;

/// How many attempts a use case makes at a user's wallet (the first
/// decision and the decisions again after each lost race) before it
/// answers `conflict`.
pub const MAX_RACES: usize = 16;

/// A wallet as read, and the head of the chain it is the state of.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub wallet: Wallet,
    /// `None` for a user with nothing stored yet.
    pub head: Option<ChainHead>,
}

impl Loaded {
    /// The number of the chain's link this wallet is the state of (0 for
    /// a user with nothing stored): what orders the review queue's writes
    /// that follow a change.
    pub fn link(&self) -> u64 {
        self.head.as_ref().map_or(0, |h| h.seq)
    }
}

/// Why one attempt at a change ended without an answer.
#[derive(Debug)]
pub enum Raced<E> {
    /// Another request wrote the wallet first: read it again and decide
    /// again.
    Lost,
    /// The answer: a refusal or a failure.
    Failed(E),
}

impl<E: From<StoreError>> From<StoreError> for Raced<E> {
    fn from(e: StoreError) -> Raced<E> {
        match e {
            StoreError::Conflict => Raced::Lost,
            other => Raced::Failed(other.into()),
        }
    }
}

impl<E: From<Denied>> From<Denied> for Raced<E> {
    fn from(e: Denied) -> Raced<E> {
        Raced::Failed(e.into())
    }
}

impl<E> Raced<E> {
    /// A refusal that ends the use case.
    pub fn fail(e: impl Into<E>) -> Raced<E> {
        Raced::Failed(e.into())
    }
}

/// Runs `attempt` until it does not lose a race (at most [`MAX_RACES`]
/// times). Each attempt reads what it needs afresh.
pub async fn until_settled<T, E, F, Fut>(mut attempt: F) -> Result<T, E>
where
    E: From<StoreError>,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Raced<E>>>,
{
    for lost in 0..MAX_RACES {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(Raced::Lost) => tokio::time::sleep(backoff(lost)).await,
            Err(Raced::Failed(e)) => return Err(e),
        }
    }
    Err(StoreError::Conflict.into())
}

/// A short pause before deciding again, growing with the races lost and
/// jittered so that writers that lost together do not collide again.
fn backoff(lost: usize) -> std::time::Duration {
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()) % 1000)
        .unwrap_or(0);
    let base = 250 * (lost as u64 + 1).min(8);
    std::time::Duration::from_micros(base + jitter * (lost as u64 + 1).min(8))
}

/// What a change decided: its answer and the audit events of the change.
pub struct Decided<T, E> {
    pub answer: Result<T, E>,
    pub events: Vec<AuditEvent>,
}

impl<T, E> Decided<T, E> {
    pub fn new(answer: Result<T, E>, events: Vec<AuditEvent>) -> Self {
        Decided { answer, events }
    }
}

impl UseCases {
    /// The user's wallet (empty for a user never seen).
    pub(crate) async fn load(&self, user: &UserId) -> Result<Loaded, StoreError> {
        Ok(match self.ports.wallets.load(user).await? {
            Some(s) => Loaded {
                wallet: s.wallet,
                head: Some(s.head),
            },
            None => Loaded {
                wallet: Wallet::new(user.clone()),
                head: None,
            },
        })
    }

    /// Writes `wallet` as the state after `loaded`, with `events` and, when
    /// the effective default moved, a `binding.default_changed` event, and
    /// a `share.revoke` event for each family share the change ended (a
    /// revoke, the card's unbind by anyone, an erasure).
    /// Writes nothing (and returns the old head) when nothing changed and
    /// there is no event. `Conflict` when another write came first.
    pub(crate) async fn commit(
        &self,
        ctx: &RequestContext,
        loaded: &Loaded,
        wallet: &Wallet,
        mut events: Vec<AuditEvent>,
    ) -> Result<Option<ChainHead>, StoreError> {
        let now = self.now();
        note_agreements(&loaded.wallet, wallet, &mut events);
        if let Some(e) = default_moved(ctx, &loaded.wallet, wallet, now) {
            events.push(e);
        }
        events.extend(shares_ended(ctx, &loaded.wallet, wallet, now));
        if events.is_empty() && wallet == &loaded.wallet {
            return Ok(loaded.head.clone());
        }
        let head = self
            .ports
            .wallets
            .commit(wallet, loaded.head.clone(), events, now)
            .await?;
        // Cards that left the wallet (the oldest ended ones beyond what a
        // wallet keeps): whatever a failed clean-up at their end left
        // behind goes now, as no later unbind or erasure will see them.
        for gone in loaded
            .wallet
            .bindings()
            .iter()
            .filter(|b| wallet.get(&b.id).is_err())
        {
            self.forget_card(wallet.user(), gone, crate::forget::Forget::TheCard)
                .await;
        }
        Ok(Some(head))
    }

    /// Lets `decide` change the user's wallet and writes it back with the
    /// events `decide` gives, deciding again on a fresh read after a lost
    /// race. Starts from `known` when the caller has just written the
    /// wallet (saving a read), else reads it. A refusal that changed the
    /// wallet (a closed verification window fails the card) is written
    /// too. Returns the answer and the wallet as written.
    pub(crate) async fn change_wallet<T, E>(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        known: Option<Loaded>,
        mut decide: impl FnMut(&mut Wallet, Timestamp) -> Decided<T, E> + Send,
    ) -> Result<(T, Loaded), E>
    where
        E: From<StoreError>,
    {
        let known = std::sync::Mutex::new(known);
        let decide = std::sync::Mutex::new(&mut decide);
        until_settled(|| {
            let start = known.lock().map(|mut k| k.take()).unwrap_or(None);
            let decide = &decide;
            async move {
                let loaded = match start {
                    Some(l) => l,
                    None => self.load(user).await?,
                };
                let mut wallet = loaded.wallet.clone();
                let Decided { answer, events } = match decide.lock() {
                    Ok(mut d) => (*d)(&mut wallet, self.now()),
                    Err(_) => {
                        return Err(Raced::Failed(
                            StoreError::Corrupt("a decision panicked".into()).into(),
                        ))
                    }
                };
                let head = self.commit(ctx, &loaded, &wallet, events).await?;
                match answer {
                    Ok(v) => Ok((v, Loaded { wallet, head })),
                    Err(e) => Err(Raced::Failed(e)),
                }
            }
        })
        .await
    }
}

/// The events of the shares a user gave that ended between two states of
/// their wallet (in the primary's chain, naming the primary's card).
fn shares_ended(
    ctx: &RequestContext,
    before: &Wallet,
    after: &Wallet,
    now: Timestamp,
) -> Vec<AuditEvent> {
    after
        .shares()
        .iter()
        .filter(|s| s.revoked_at.is_some())
        .filter(|s| before.share(&s.id).is_some_and(|b| b.revoked_at.is_none()))
        .map(|s| {
            let why = match after.get(&s.card) {
                Ok(b) if !b.status.is_live() => format!("the card is {}", b.status),
                _ => format!(
                    "revoked by {}",
                    s.revoked_by.as_deref().unwrap_or("the primary")
                ),
            };
            ctx.event(now, AuditAction::ShareRevoke)
                .user(after.user())
                .binding(&s.card)
                .detail(format!("share {} with {} ended: {why}", s.id, s.secondary))
                .build()
        })
        .collect()
}

/// Names, in the detail of the change's event about the card, the channel
/// agreement a change gave a card's current consent: the audit log keeps
/// every consent with its agreement for the audit retention, also after
/// the wallet let the consent go (`CONSENTS_KEPT`, `ENDED_CARDS_KEPT`).
/// Every change that activates a card writes an event naming it (the
/// channel's answer, a code, a notification, a review).
fn note_agreements(before: &Wallet, after: &Wallet, events: &mut [AuditEvent]) {
    for b in after.bindings() {
        let Some(agreement) = b.consent().and_then(|c| c.agreement_id.as_deref()) else {
            continue;
        };
        let had = before
            .get(&b.id)
            .ok()
            .and_then(|p| p.consent())
            .and_then(|c| c.agreement_id.as_deref());
        if had == Some(agreement) {
            continue;
        }
        // The change's own event (the default's, added after, may name
        // the card too).
        let about = events
            .iter_mut()
            .find(|e| e.binding_id.as_ref() == Some(&b.id) && e.outcome == Outcome::Ok);
        if let Some(e) = about {
            let note = format!("agreement {agreement:?}");
            e.detail = Some(match e.detail.take() {
                Some(d) => format!("{d}; {note}"),
                None => note,
            });
        }
    }
}

/// The event for a default that moved between two states of a wallet.
fn default_moved(
    ctx: &RequestContext,
    before: &Wallet,
    after: &Wallet,
    now: Timestamp,
) -> Option<AuditEvent> {
    let (was, is) = (before.effective_default(), after.effective_default());
    if was == is {
        return None;
    }
    let e = ctx
        .event(now, AuditAction::BindingDefaultChanged)
        .user(after.user());
    Some(match is {
        Some(id) => e
            .binding(id)
            .detail(match was {
                Some(_) => "default moved",
                None => "first default",
            })
            .build(),
        None => e.detail("no active card left").build(),
    })
}
