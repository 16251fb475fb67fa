//! What the service keeps about what happened: the audit log (read by
//! auditors, verified by operators) and the users' consent records.

use cardbind_domain::{Action, BindingId, ConsentRecord, ShareId, UserId};
use cardbind_ports::audit::{
    verify_links, AuditCursor, AuditFilter, AuditRecord, ChainBreak, ChainId, MISSING_LINK,
};

use crate::context::RequestContext;
use crate::error::op_error;
use crate::{page_size, UseCases};
use cardbind_ports::StoreError;

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
    /// A stored link that does not read as one (a field that does not
    /// decode: altered or damaged in the store), where the walk stopped:
    /// the store's account of it, and the link before it in the walk's
    /// order (chain, number), if any.
    pub unreadable: Option<(String, Option<(ChainId, u64)>)>,
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

    /// One page of at most `limit` audit events matching `filter` after
    /// `after`, for the service's own walks (no caller to authorize), and
    /// where the next page starts: `None` once a page comes back short.
    pub(crate) async fn audit_page(
        &self,
        filter: &AuditFilter,
        after: Option<AuditCursor>,
        limit: u32,
    ) -> Result<(Vec<AuditRecord>, Option<AuditCursor>), StoreError> {
        let page = self.ports.audit.list(filter, after, limit).await?;
        let next = match page.last() {
            Some(last) if page.len() == limit as usize => Some(last.cursor.clone()),
            _ => None,
        };
        Ok((page, next))
    }

    /// Walks every chain from its oldest kept link and checks every hash
    /// and link (`cardbind audit verify`).
    pub async fn verify_audit_chains(&self, page: u32) -> Result<ChainReport, RecordsError> {
        let mut report = ChainReport {
            links_checked: 0,
            chains: 0,
            broken: None,
            unreadable: None,
        };
        let mut after: Option<(ChainId, u64)> = None;
        // The last link of the previous page, so that links are checked
        // across page boundaries.
        let mut carry = None;
        let full = page.clamp(1, 10_000);
        // Reads left a link at a time after a page that did not read; past
        // them (a fault that did not come back), whole pages again.
        let mut singles: u32 = 0;
        loop {
            let size = if singles > 0 { 1 } else { full };
            let links = match self.ports.audit.links(after.clone(), size).await {
                Ok(links) => {
                    singles = singles.saturating_sub(1);
                    links
                }
                // Read again a link at a time, to name the one.
                Err(StoreError::Corrupt(_)) if size > 1 => {
                    singles = full;
                    continue;
                }
                Err(StoreError::Corrupt(what)) => {
                    report.unreadable = Some((what, after));
                    return Ok(report);
                }
                Err(e) => return Err(e.into()),
            };
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
            // Checked from `start`: past a gap the retention purge made
            // while the walk went on, from the link after it.
            let mut start = 0;
            loop {
                // The carried link was counted with its own page.
                let carried = if start == 0 { skip } else { 0 };
                match verify_links(&batch[start..]) {
                    Ok(n) => {
                        report.links_checked += n - carried;
                        break;
                    }
                    Err(b) if b.reason == MISSING_LINK && self.prefix_purged(&b).await? => {
                        let next = batch[start..]
                            .iter()
                            .position(|l| l.chain == b.chain && l.seq >= b.seq)
                            .map_or(batch.len(), |i| start + i);
                        report.links_checked += (next - start) as u64 - carried;
                        start = next;
                    }
                    Err(b) => {
                        report.broken = Some(b);
                        return Ok(report);
                    }
                }
            }
            carry = batch.pop();
        }
        Ok(report)
    }

    /// Whether the gap `b` reports (its link missing) is a prefix of the
    /// chain deleted by the retention purge since the walk read the link
    /// before it: then that link is gone too. A prefix deleted is what the
    /// walk accepts at a chain's start anyway (it starts from the oldest
    /// kept link); a link missing between two kept ones stays a break.
    async fn prefix_purged(&self, b: &ChainBreak) -> Result<bool, StoreError> {
        let Some(before_gap) = b.seq.checked_sub(1) else {
            return Ok(false);
        };
        let Some(after) = before_gap.checked_sub(1) else {
            return Ok(false);
        };
        let first = self
            .ports
            .audit
            .links(Some((b.chain.clone(), after)), 1)
            .await?;
        Ok(first
            .first()
            .is_none_or(|l| l.chain != b.chain || l.seq != before_gap))
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
