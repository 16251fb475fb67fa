//! What the service keeps about what happened: the audit log (read by
//! auditors, verified by operators) and the users' consent records.

use cardbind_domain::{Action, BindingId, ConsentRecord, ShareId, UserId};
use cardbind_ports::audit::{
    verify_links, AuditCursor, AuditFilter, AuditRecord, ChainBreak, ChainId,
};

use crate::context::RequestContext;
use crate::error::op_error;
use crate::{page_size, UseCases};

op_error! {
    /// Why reading records was refused.
    pub enum RecordsError { Forbidden, Unavailable }
    from StoreRead
}

/// The most audit events one page lists.
pub const MAX_AUDIT_PAGE: u32 = 500;
/// The most consents one page lists.
pub const MAX_CONSENT_PAGE: u32 = 100;

/// One consent, with the card it was given for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsentEntry {
    /// `{card_id}:{n}`: the n-th bind of that card (from 1); for a family
    /// share, `{share_id}:1`.
    pub id: String,
    pub user: UserId,
    /// The card: the user's own (a bind, or a share they gave), or, for a
    /// share made to them, the shared card's id in their list (the share
    /// id).
    pub binding: BindingId,
    /// The family share the consent is about, if it is one.
    pub share: Option<ShareId>,
    pub consent: ConsentRecord,
}

/// What a walk of the audit chains found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainReport {
    pub links_checked: u64,
    pub chains: u64,
    /// The first broken link, if any.
    pub broken: Option<ChainBreak>,
}

impl UseCases {
    /// Audit events matching `filter`, in order, a page after `after`.
    pub async fn read_audit(
        &self,
        ctx: &RequestContext,
        filter: &AuditFilter,
        after: Option<AuditCursor>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, RecordsError> {
        self.authorize(ctx, Action::ReadAudit, None).await?;
        let size = page_size(limit, MAX_AUDIT_PAGE) as u32;
        Ok(self.ports.audit.list(filter, after, size).await?)
    }

    /// Walks every chain from its oldest kept link and checks every hash
    /// and link (`cardbind audit verify`).
    pub async fn verify_audit_chains(&self, page: u32) -> Result<ChainReport, RecordsError> {
        let mut report = ChainReport {
            links_checked: 0,
            chains: 0,
            broken: None,
        };
        let mut after: Option<(ChainId, u64)> = None;
        // The last link of the previous page, so that links are checked
        // across page boundaries.
        let mut carry = None;
        loop {
            let links = self
                .ports
                .audit
                .links(after.clone(), page.clamp(1, 10_000))
                .await?;
            let Some(last) = links.last() else { break };
            after = Some((last.chain.clone(), last.seq));
            let mut batch = Vec::with_capacity(links.len() + 1);
            batch.extend(carry.take());
            let skip = batch.len() as u64;
            for l in &links {
                if batch
                    .last()
                    .is_none_or(|p: &cardbind_ports::audit::Link| p.chain != l.chain)
                {
                    report.chains += 1;
                }
                batch.push(l.clone());
            }
            match verify_links(&batch) {
                Ok(n) => report.links_checked += n - skip,
                Err(b) => {
                    report.broken = Some(b);
                    return Ok(report);
                }
            }
            carry = batch.pop();
        }
        Ok(report)
    }

    /// A user's consents (one per bind of each card), in card order.
    pub async fn list_consents(
        &self,
        ctx: &RequestContext,
        user: &UserId,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<ConsentEntry>, RecordsError> {
        self.authorize(ctx, Action::ReadConsents, Some(user))
            .await?;
        let w = self.load(user).await?.wallet;
        let size = page_size(limit, MAX_CONSENT_PAGE);
        let binds = w.bindings().iter().flat_map(|b| {
            // The n-th bind's consent keeps its id `{card}:{n}` after older
            // ones were let go.
            let first = u64::from(b.consents_dropped) + 1;
            b.consents.iter().zip(first..).map(|(c, n)| ConsentEntry {
                id: format!("{}:{n}", b.id),
                user: user.clone(),
                binding: b.id.clone(),
                share: None,
                consent: c.clone(),
            })
        });
        // The consent to share given as a primary, and to use a shared card
        // given as a secondary.
        let given = w.shares().iter().map(|s| ConsentEntry {
            id: format!("{}:1", s.id),
            user: user.clone(),
            binding: s.card.clone(),
            share: Some(s.id.clone()),
            consent: s.consent.clone(),
        });
        let accepted = w.shared_in().iter().filter_map(|m| {
            m.consent.as_ref().map(|c| ConsentEntry {
                id: format!("{}:1", m.share),
                user: user.clone(),
                binding: m.card_id(),
                share: Some(m.share.clone()),
                consent: c.clone(),
            })
        });
        let mut all: Vec<ConsentEntry> = binds
            .chain(given)
            .chain(accepted)
            .filter(|e| {
                after
                    .as_ref()
                    .is_none_or(|a| consent_key(&e.id) > consent_key(a))
            })
            .collect();
        all.sort_by(|a, b| consent_key(&a.id).cmp(&consent_key(&b.id)));
        all.truncate(size);
        Ok(all)
    }
}

/// Orders consent ids `{card}:{n}` by card, then by n as a number.
fn consent_key(id: &str) -> (&str, u64) {
    match id.rsplit_once(':') {
        Some((card, n)) => (card, n.parse().unwrap_or(0)),
        None => (id, 0),
    }
}
