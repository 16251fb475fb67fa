//! Wallet chains and the audit log over them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;

use async_trait::async_trait;
use cardbind_domain::{BindingId, Timestamp, UserId, Wallet};
use cardbind_ports::audit::{
    next_link, AuditCursor, AuditEvent, AuditFilter, AuditLog, AuditRecord, ChainHead, ChainId,
    Link,
};
use cardbind_ports::store::{LinkKey, PendingLink, StoredWallet, WalletStore};
use cardbind_ports::StoreError;

use crate::{lock, take_limit, MemoryStore};

struct Stored {
    link: Link,
    wallet: Option<Wallet>,
}

/// A link's place in time: (instant, chain, seq).
type TimeKey = (Timestamp, ChainId, u64);

/// Every chain, with the indexes the queries use.
#[derive(Default)]
pub(crate) struct Chains {
    chains: BTreeMap<ChainId, BTreeMap<u64, Stored>>,
    by_time: BTreeSet<TimeKey>,
    by_binding: HashMap<BindingId, BTreeSet<TimeKey>>,
    /// Links holding an event about a user, in any chain (the service's
    /// own chain records refusals about users).
    by_user: HashMap<UserId, BTreeSet<TimeKey>>,
    pending: BTreeSet<(Timestamp, UserId, u64)>,
}

impl Chains {
    fn head(&self, chain: &ChainId) -> Option<ChainHead> {
        self.chains
            .get(chain)
            .and_then(|c| c.values().next_back())
            .map(|s| s.link.head())
    }

    fn insert(&mut self, stored: Stored) {
        let l = &stored.link;
        let key = (l.at, l.chain.clone(), l.seq);
        self.by_time.insert(key.clone());
        for b in l.events.iter().filter_map(|e| e.binding_id.clone()) {
            self.by_binding.entry(b).or_default().insert(key.clone());
        }
        for u in l.events.iter().filter_map(|e| e.user_id.clone()) {
            self.by_user.entry(u).or_default().insert(key.clone());
        }
        if let (ChainId::User(u), Some(w)) = (&l.chain, &stored.wallet) {
            if w.bindings().iter().any(|b| b.status.awaits_settlement()) {
                self.pending.insert((l.at, u.clone(), l.seq));
            }
        }
        self.chains
            .entry(l.chain.clone())
            .or_default()
            .insert(l.seq, stored);
    }

    /// Appends a link after `after`, which must be the chain's head.
    fn append(
        &mut self,
        chain: ChainId,
        after: Option<ChainHead>,
        wallet: Option<Wallet>,
        events: Vec<AuditEvent>,
        now: Timestamp,
    ) -> Result<ChainHead, StoreError> {
        if self.head(&chain) != after {
            return Err(StoreError::Conflict);
        }
        let digest = wallet
            .as_ref()
            .map(|w| cardbind_records::wallet_json(w).map(|j| cardbind_records::wallet_digest(&j)))
            .transpose()?;
        let link = next_link(chain, after.as_ref(), now, events, digest);
        let head = link.head();
        self.insert(Stored { link, wallet });
        Ok(head)
    }

    fn remove(&mut self, chain: &ChainId, seq: u64) -> Option<Stored> {
        let c = self.chains.get_mut(chain)?;
        let s = c.remove(&seq)?;
        if c.is_empty() {
            self.chains.remove(chain);
        }
        let l = &s.link;
        let key = (l.at, l.chain.clone(), l.seq);
        self.by_time.remove(&key);
        for b in l.events.iter().filter_map(|e| e.binding_id.as_ref()) {
            if let Some(set) = self.by_binding.get_mut(b) {
                set.remove(&key);
                if set.is_empty() {
                    self.by_binding.remove(b);
                }
            }
        }
        for u in l.events.iter().filter_map(|e| e.user_id.as_ref()) {
            if let Some(set) = self.by_user.get_mut(u) {
                set.remove(&key);
                if set.is_empty() {
                    self.by_user.remove(u);
                }
            }
        }
        if let ChainId::User(u) = &l.chain {
            self.pending.remove(&(l.at, u.clone(), l.seq));
        }
        Some(s)
    }

    pub(crate) fn tamper(&mut self, chain: &ChainId, seq: u64, f: impl FnOnce(&mut Link)) -> bool {
        match self.chains.get_mut(chain).and_then(|c| c.get_mut(&seq)) {
            Some(s) => {
                f(&mut s.link);
                true
            }
            None => false,
        }
    }

    pub(crate) fn delete(&mut self, chain: &ChainId, seq: u64) -> bool {
        self.remove(chain, seq).is_some()
    }

    fn link(&self, chain: &ChainId, seq: u64) -> Option<&Link> {
        self.chains.get(chain)?.get(&seq).map(|s| &s.link)
    }

    /// Records of one link that match, from `after` on.
    fn records_of(
        &self,
        (at, chain, seq): &TimeKey,
        filter: &AuditFilter,
        after: Option<&AuditCursor>,
        out: &mut Vec<AuditRecord>,
        limit: usize,
    ) {
        let Some(l) = self.link(chain, *seq) else {
            return;
        };
        for (i, e) in l.events.iter().enumerate() {
            if out.len() >= limit {
                return;
            }
            let cursor = AuditCursor {
                at: *at,
                chain: chain.clone(),
                seq: *seq,
                index: i as u32,
            };
            if after.is_some_and(|a| &cursor <= a) || !filter.matches(l.at, e) {
                continue;
            }
            out.push(AuditRecord {
                cursor,
                link_hash: l.hash.clone(),
                event: e.clone(),
            });
        }
    }
}

fn chain_of(user: &UserId) -> ChainId {
    ChainId::User(user.clone())
}

#[async_trait]
impl WalletStore for MemoryStore {
    async fn load(&self, user: &UserId) -> Result<Option<StoredWallet>, StoreError> {
        self.check_available()?;
        let t = lock(&self.inner.chains);
        let Some(s) = t
            .chains
            .get(&chain_of(user))
            .and_then(|c| c.values().next_back())
        else {
            return Ok(None);
        };
        let wallet = s
            .wallet
            .clone()
            .ok_or_else(|| StoreError::Corrupt("a user's link without a wallet".to_owned()))?;
        Ok(Some(StoredWallet {
            wallet,
            head: s.link.head(),
        }))
    }

    async fn load_many(&self, users: &[UserId]) -> Result<Vec<StoredWallet>, StoreError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        self.check_available()?;
        // One lock: every wallet as of the same moment.
        let t = lock(&self.inner.chains);
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for u in users.iter().filter(|u| seen.insert(*u)) {
            let Some(s) = t
                .chains
                .get(&chain_of(u))
                .and_then(|c| c.values().next_back())
            else {
                continue;
            };
            let wallet = s
                .wallet
                .clone()
                .ok_or_else(|| StoreError::Corrupt("a user's link without a wallet".to_owned()))?;
            out.push(StoredWallet {
                wallet,
                head: s.link.head(),
            });
        }
        Ok(out)
    }

    async fn commit(
        &self,
        wallet: &Wallet,
        after: Option<ChainHead>,
        events: Vec<AuditEvent>,
        now: Timestamp,
    ) -> Result<ChainHead, StoreError> {
        self.check_available()?;
        lock(&self.inner.chains).append(
            chain_of(wallet.user()),
            after,
            Some(wallet.clone()),
            events,
            now,
        )
    }

    async fn pending_links(
        &self,
        from: Timestamp,
        to: Timestamp,
        after: Option<LinkKey>,
        limit: u32,
    ) -> Result<Vec<PendingLink>, StoreError> {
        self.check_available()?;
        let t = lock(&self.inner.chains);
        let lower = match after {
            Some(k) => Bound::Excluded((k.at, k.user, k.seq)),
            None => match UserId::parse("0") {
                // The smallest user id: every key at `from` is after it.
                Ok(first) => Bound::Included((from, first, 0)),
                Err(_) => Bound::Unbounded,
            },
        };
        Ok(t.pending
            .range((lower, Bound::Unbounded))
            .take_while(|(at, _, _)| *at < to)
            .filter(|(at, _, _)| *at >= from)
            .take(take_limit(limit))
            .map(|(at, user, seq)| PendingLink {
                key: LinkKey {
                    at: *at,
                    user: user.clone(),
                    seq: *seq,
                },
            })
            .collect())
    }
}

#[async_trait]
impl AuditLog for MemoryStore {
    async fn append_system(
        &self,
        events: Vec<AuditEvent>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.check_available()?;
        let mut t = lock(&self.inner.chains);
        let head = t.head(&ChainId::System);
        t.append(ChainId::System, head, None, events, now)?;
        Ok(())
    }

    async fn list(
        &self,
        filter: &AuditFilter,
        after: Option<AuditCursor>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.check_available()?;
        let t = lock(&self.inner.chains);
        let limit = take_limit(limit);
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        // The link of the cursor itself may have events left.
        let lower: Bound<TimeKey> = match (&after, filter.since) {
            (Some(a), _) => Bound::Included((a.at, a.chain.clone(), a.seq)),
            (None, Some(since)) => Bound::Included((since, first_chain(), 0)),
            (None, None) => Bound::Unbounded,
        };
        let before_end = |k: &TimeKey| filter.until.is_none_or(|u| k.0 < u);
        let visit = |k: &TimeKey, out: &mut Vec<AuditRecord>| {
            t.records_of(k, filter, after.as_ref(), out, limit);
            out.len() < limit
        };
        match (&filter.user_id, &filter.binding_id) {
            (Some(u), _) => {
                if let Some(set) = t.by_user.get(u) {
                    for k in set.range((lower, Bound::Unbounded)) {
                        if !before_end(k) || !visit(k, &mut out) {
                            break;
                        }
                    }
                }
            }
            (None, Some(b)) => {
                if let Some(set) = t.by_binding.get(b) {
                    for k in set.range((lower, Bound::Unbounded)) {
                        if !before_end(k) || !visit(k, &mut out) {
                            break;
                        }
                    }
                }
            }
            (None, None) => {
                for k in t.by_time.range((lower, Bound::Unbounded)) {
                    if !before_end(k) || !visit(k, &mut out) {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    async fn links(
        &self,
        after: Option<(ChainId, u64)>,
        limit: u32,
    ) -> Result<Vec<Link>, StoreError> {
        self.check_available()?;
        let t = lock(&self.inner.chains);
        let mut out = Vec::new();
        let limit = take_limit(limit);
        let chains: Box<dyn Iterator<Item = (&ChainId, &BTreeMap<u64, Stored>)>> = match &after {
            Some((c, _)) => Box::new(t.chains.range(c.clone()..)),
            None => Box::new(t.chains.iter()),
        };
        for (chain, links) in chains {
            let from = match &after {
                Some((c, seq)) if c == chain => Bound::Excluded(*seq),
                _ => Bound::Unbounded,
            };
            for (_, s) in links.range((from, Bound::Unbounded)) {
                if out.len() >= limit {
                    return Ok(out);
                }
                out.push(s.link.clone());
            }
        }
        Ok(out)
    }

    async fn purge_before(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.check_available()?;
        let mut t = lock(&self.inner.chains);
        let old: Vec<TimeKey> = t
            .by_time
            .range(..(before, first_chain(), 0))
            .cloned()
            .collect();
        let mut n = 0;
        for (_, chain, seq) in old {
            let is_last = t.head(&chain).is_some_and(|h| h.seq == seq);
            if !is_last && t.remove(&chain, seq).is_some() {
                n += 1;
            }
        }
        Ok(n)
    }
}

/// The chain that sorts before every other: the user id `0` (ids start
/// with a letter or a digit, and `0` sorts before `@system` too).
fn first_chain() -> ChainId {
    ChainId::parse("0").unwrap_or(ChainId::System)
}
