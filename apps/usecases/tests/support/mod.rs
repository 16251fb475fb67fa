//! A world for the use cases: the in-memory store, a fake vault, a
//! scripted channel, a clock the test moves.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use cardbind_domain::{
    Actor, BindingId, CardNumber, ChannelName, ConsentGiven, Fingerprint, Role, SealedBlob,
    Timestamp, UserId,
};
use cardbind_memory::MemoryStore;
use cardbind_ports::audit::{
    AuditCursor, AuditEvent, AuditFilter, AuditLog, AuditRecord, ChainId, Link, LinkStamp,
};
use cardbind_ports::channel::{
    ChannelBindRequest, ChannelEvent, ChannelRegistry, ChannelStart, ConfirmOutcome, Notification,
    NotificationAck, PaymentChannel, RemoteState,
};
use cardbind_ports::clock::{Clock, IdGenerator};
use cardbind_ports::keys::{CardVault, SealContext};
use cardbind_ports::{ChannelError, KeyError, StoreError};
use cardbind_usecases::bind::{BindCard, CardForm};
use cardbind_usecases::{Policy, Ports, RequestContext, UseCases};

/// 2026-09-21.
pub const T0: i64 = 1_790_000_000_000;

pub struct TestClock(pub AtomicI64);

impl TestClock {
    pub fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds * 1000, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_unix_millis(self.0.load(Ordering::SeqCst))
    }
}

#[derive(Default)]
pub struct SeqIds(AtomicU64, AtomicU32);

impl IdGenerator for SeqIds {
    fn binding_id(&self) -> BindingId {
        let n = self.0.fetch_add(1, Ordering::SeqCst);
        BindingId::parse(&format!("card-{n:06}")).unwrap()
    }
    fn opaque_id(&self) -> String {
        format!("id-{}", self.0.fetch_add(1, Ordering::SeqCst))
    }
    fn data_generation(&self) -> u32 {
        1 + self.1.fetch_add(1, Ordering::SeqCst)
    }
}

/// Seals by writing the context beside the bytes (reversed): opens only
/// with the same owner, record and field, and not after erasure.
#[derive(Default)]
pub struct FakeVault {
    pub erased: Mutex<Vec<String>>,
    pub down: std::sync::atomic::AtomicBool,
    /// Only sealing fails (a new user's data key needs the key service,
    /// while the fingerprint key is still cached).
    pub seal_down: std::sync::atomic::AtomicBool,
    pub opened: AtomicU64,
    /// Seals for an owner the caller thinks has no key (the vault must not
    /// use a cached one).
    pub fresh_seals: AtomicU64,
    /// Seals under the key the store holds now (an owner with a live card).
    pub stored_seals: AtomicU64,
    /// The next seal under the stored key waits here (once), counted in
    /// `stored_seals` first.
    pub stored_seal_gate: Mutex<Option<Arc<tokio::sync::Semaphore>>>,
    /// Sealing is refused (the key service denies access).
    pub seal_refused: std::sync::atomic::AtomicBool,
    /// Sealing cannot store the new user's wrapped key (the key store is
    /// down or read-only; the key service is up).
    pub seal_store_down: std::sync::atomic::AtomicBool,
    /// The canary check never answers (a key service that hangs).
    pub check_hangs: std::sync::atomic::AtomicBool,
    /// What the canary check fails with, when set.
    pub check_fails: Mutex<Option<KeyError>>,
    /// The vault holds what it needs to serve without the master key.
    pub holds_branch_key: std::sync::atomic::AtomicBool,
}

fn tag(owner: &UserId, c: &SealContext) -> String {
    format!("{}|{}|{}|", owner, c.record, c.field)
}

#[async_trait]
impl CardVault for FakeVault {
    async fn seal(
        &self,
        owner: &UserId,
        c: &SealContext,
        p: &[u8],
    ) -> Result<SealedBlob, KeyError> {
        if self.down.load(Ordering::SeqCst) || self.seal_down.load(Ordering::SeqCst) {
            return Err(KeyError::Unavailable("fake vault down".into()));
        }
        if self.seal_refused.load(Ordering::SeqCst) {
            return Err(KeyError::Refused("access denied".into()));
        }
        if self.seal_store_down.load(Ordering::SeqCst) {
            return Err(KeyError::StoreUnavailable(
                "attempt to write a readonly database".into(),
            ));
        }
        let mut b = tag(owner, c).into_bytes();
        b.extend(p.iter().rev());
        Ok(SealedBlob::new(b))
    }
    async fn seal_for_new_owner(
        &self,
        owner: &UserId,
        c: &SealContext,
        p: &[u8],
    ) -> Result<SealedBlob, KeyError> {
        self.fresh_seals.fetch_add(1, Ordering::SeqCst);
        self.seal(owner, c, p).await
    }
    async fn seal_with_stored_key(
        &self,
        owner: &UserId,
        c: &SealContext,
        p: &[u8],
    ) -> Result<SealedBlob, KeyError> {
        self.stored_seals.fetch_add(1, Ordering::SeqCst);
        let gate = self.stored_seal_gate.lock().unwrap().take();
        if let Some(gate) = gate {
            gate.acquire().await.unwrap().forget();
        }
        self.seal(owner, c, p).await
    }
    async fn open(
        &self,
        owner: &UserId,
        c: &SealContext,
        s: &SealedBlob,
    ) -> Result<Vec<u8>, KeyError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(KeyError::Unavailable("fake vault down".into()));
        }
        if self.erased.lock().unwrap().contains(&owner.to_string()) {
            return Err(KeyError::Erased);
        }
        let t = tag(owner, c).into_bytes();
        let bytes = s.as_bytes();
        if !bytes.starts_with(&t) {
            return Err(KeyError::Refused("other context".into()));
        }
        self.opened.fetch_add(1, Ordering::SeqCst);
        Ok(bytes[t.len()..].iter().rev().copied().collect())
    }
    async fn fingerprint(&self, pan: &CardNumber) -> Result<Fingerprint, KeyError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(KeyError::Unavailable("fake vault down".into()));
        }
        Ok(Fingerprint::new(1, format!("{:x}", fxhash(pan.expose()))))
    }
    async fn keyed_digest<'p>(
        &self,
        purpose: &str,
        parts: &[&'p [u8]],
    ) -> Result<[u8; 32], KeyError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(KeyError::Unavailable("fake vault down".into()));
        }
        let h = fxhash(&format!("{purpose}|{parts:?}"));
        let mut out = [0u8; 32];
        out[..8].copy_from_slice(&h.to_be_bytes());
        Ok(out)
    }
    async fn erase_owner(&self, owner: &UserId) -> Result<bool, KeyError> {
        self.erased.lock().unwrap().push(owner.to_string());
        Ok(true)
    }
    async fn self_check(&self) -> Result<(), KeyError> {
        if self.check_hangs.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        match self.check_fails.lock().unwrap().clone() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn serves_without_master_key(&self) -> bool {
        self.holds_branch_key.load(Ordering::SeqCst)
    }
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

/// What the scripted channel answers to a start.
#[derive(Clone, Debug)]
pub enum Script {
    Bound,
    Otp,
    Redirect,
    Refuse(&'static str),
    Fail(ChannelError),
}

/// A channel whose answers the test sets, that counts its calls and can
/// hold a start until released.
pub struct ScriptChannel {
    pub name: String,
    pub default_start: Mutex<Script>,
    pub starts: AtomicU64,
    pub confirms: AtomicU64,
    pub unbinds: AtomicU64,
    pub otp: Mutex<String>,
    pub query: Mutex<HashMap<String, RemoteState>>,
    pub gate: Mutex<Option<Arc<tokio::sync::Semaphore>>>,
    /// Holds a code check until released.
    pub confirm_gate: Mutex<Option<Arc<tokio::sync::Semaphore>>>,
    /// When set, every code check fails so.
    pub confirm_fails: Mutex<Option<ChannelError>>,
    /// Starts per binding id: a card bound again gets a new reference, as
    /// real channels give a new agreement.
    pub starts_of: Mutex<HashMap<String, u32>>,
    /// The currency of each binding request, in order.
    pub currencies: Mutex<Vec<Option<String>>>,
    /// The holder name of each binding request, in order.
    pub holder_names: Mutex<Vec<String>>,
    /// When set, the channel cannot be asked about an agreement.
    pub query_down: std::sync::atomic::AtomicBool,
    /// Holds each unbind (counted first) until released.
    pub unbind_gate: Mutex<Option<Arc<tokio::sync::Semaphore>>>,
    /// The attempt each unbind named, in order.
    pub unbound: Mutex<Vec<Option<u32>>>,
    /// The attempt each start named, in order.
    pub started: Mutex<Vec<u32>>,
    /// When set, each start held at the gate uses its permit up, so that
    /// one permit lets exactly one start through.
    pub starts_use_permits: std::sync::atomic::AtomicBool,
    /// Gives a card the same reference at every bind (as the mock does).
    pub same_ref: std::sync::atomic::AtomicBool,
}

impl ScriptChannel {
    pub fn new(name: &str) -> Arc<ScriptChannel> {
        Arc::new(ScriptChannel {
            name: name.to_owned(),
            default_start: Mutex::new(Script::Bound),
            starts: AtomicU64::new(0),
            confirms: AtomicU64::new(0),
            unbinds: AtomicU64::new(0),
            otp: Mutex::new("123456".to_owned()),
            query: Mutex::new(HashMap::new()),
            gate: Mutex::new(None),
            confirm_gate: Mutex::new(None),
            confirm_fails: Mutex::new(None),
            starts_of: Mutex::new(HashMap::new()),
            currencies: Mutex::new(Vec::new()),
            holder_names: Mutex::new(Vec::new()),
            query_down: std::sync::atomic::AtomicBool::new(false),
            unbind_gate: Mutex::new(None),
            unbound: Mutex::new(Vec::new()),
            started: Mutex::new(Vec::new()),
            starts_use_permits: std::sync::atomic::AtomicBool::new(false),
            same_ref: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Holds every start (counted first) until the returned gate has a
    /// permit for it.
    pub fn hold_starts(&self) -> Arc<tokio::sync::Semaphore> {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        self.gate.lock().unwrap().replace(gate.clone());
        gate
    }

    pub fn always(&self, s: Script) {
        *self.default_start.lock().unwrap() = s;
    }
}

#[async_trait]
impl PaymentChannel for ScriptChannel {
    fn name(&self) -> &str {
        &self.name
    }

    async fn start_binding(&self, r: &ChannelBindRequest) -> Result<ChannelStart, ChannelError> {
        self.starts.fetch_add(1, Ordering::SeqCst);
        self.started.lock().unwrap().push(r.attempt);
        self.currencies
            .lock()
            .unwrap()
            .push(r.currency.map(|c| c.code().to_owned()));
        self.holder_names
            .lock()
            .unwrap()
            .push(r.holder_name.expose().to_owned());
        let gate = self.gate.lock().unwrap().clone();
        if let Some(g) = gate {
            let permit = g.acquire().await.unwrap();
            if self.starts_use_permits.load(Ordering::SeqCst) {
                permit.forget();
            }
        }
        let s = self.default_start.lock().unwrap().clone();
        let channel_ref = {
            let mut n = self.starts_of.lock().unwrap();
            let k = n.entry(r.binding_id.to_string()).or_insert(0);
            *k += 1;
            match *k {
                _ if self.same_ref.load(Ordering::SeqCst) => format!("ref-{}", r.binding_id),
                1 => format!("ref-{}", r.binding_id),
                k => format!("ref-{}-{k}", r.binding_id),
            }
        };
        match s {
            Script::Bound => Ok(ChannelStart::Bound { channel_ref }),
            Script::Otp => Ok(ChannelStart::OtpSent { channel_ref }),
            Script::Redirect => Ok(ChannelStart::Redirect {
                channel_ref,
                url: "https://pay.example.com/sign".into(),
            }),
            Script::Refuse(code) => Ok(ChannelStart::Refused {
                code: code.into(),
                message: "no".into(),
            }),
            Script::Fail(e) => Err(e),
        }
    }

    async fn confirm_otp(
        &self,
        b: &BindingId,
        r: &str,
        otp: &str,
    ) -> Result<ConfirmOutcome, ChannelError> {
        self.confirms.fetch_add(1, Ordering::SeqCst);
        let gate = self.confirm_gate.lock().unwrap().clone();
        if let Some(g) = gate {
            let _permit = g.acquire().await.unwrap();
        }
        if let Some(e) = self.confirm_fails.lock().unwrap().clone() {
            return Err(e);
        }
        // An agreement the channel no longer has waits for no code.
        let state = self.query.lock().unwrap().get(b.as_str()).cloned();
        if matches!(state, Some(RemoteState::Terminated | RemoteState::NotFound)) {
            return Ok(ConfirmOutcome::Expired);
        }
        if otp == *self.otp.lock().unwrap() {
            Ok(ConfirmOutcome::Confirmed {
                channel_ref: r.to_owned(),
            })
        } else {
            Ok(ConfirmOutcome::WrongOtp)
        }
    }

    async fn unbind(&self, _b: &BindingId, a: Option<u32>, _r: &str) -> Result<(), ChannelError> {
        self.unbinds.fetch_add(1, Ordering::SeqCst);
        self.unbound.lock().unwrap().push(a);
        let gate = self.unbind_gate.lock().unwrap().clone();
        if let Some(gate) = gate {
            gate.acquire().await.unwrap().forget();
        }
        Ok(())
    }

    async fn query(
        &self,
        b: &BindingId,
        _a: Option<u32>,
        _r: Option<String>,
    ) -> Result<RemoteState, ChannelError> {
        if self.query_down.load(Ordering::SeqCst) {
            return Err(ChannelError::Unavailable("query down".into()));
        }
        Ok(self
            .query
            .lock()
            .unwrap()
            .get(b.as_str())
            .cloned()
            .unwrap_or(RemoteState::Pending))
    }

    fn parse_notification(&self, n: &Notification) -> Result<ChannelEvent, ChannelError> {
        // The test's "signature" is a header naming the event; the body is
        // `id|binding|signed:REF|terminated|failed:CODE`, then optionally
        // `|ATTEMPT` (the bind attempt the event's reference names).
        if n.headers.get("x-test-signed").map(String::as_str) != Some("yes") {
            return Err(ChannelError::InvalidSignature);
        }
        let text =
            String::from_utf8(n.body.clone()).map_err(|_| ChannelError::Protocol("utf8".into()))?;
        let mut parts = text.split('|');
        let (Some(id), Some(b), Some(kind)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(ChannelError::Protocol("fields".into()));
        };
        let attempt = match parts.next() {
            Some(a) => Some(
                a.parse()
                    .map_err(|_| ChannelError::Protocol("attempt".into()))?,
            ),
            None => None,
        };
        use cardbind_ports::channel::{BindingRef, ChannelEventKind};
        let kind = if let Some(r) = kind.strip_prefix("signed:") {
            ChannelEventKind::Signed {
                channel_ref: r.into(),
            }
        } else if kind == "terminated" {
            ChannelEventKind::Terminated
        } else if let Some(c) = kind.strip_prefix("failed:") {
            ChannelEventKind::Failed { code: c.into() }
        } else {
            return Err(ChannelError::Protocol("kind".into()));
        };
        Ok(ChannelEvent {
            event_id: id.into(),
            binding: match b.strip_prefix("ref:") {
                Some(r) => BindingRef::Channel(r.to_owned()),
                None => BindingRef::Ours(
                    BindingId::parse(b).map_err(|_| ChannelError::Protocol("id".into()))?,
                ),
            },
            kind,
            agreement: None,
            attempt,
        })
    }

    fn notification_ack(&self) -> NotificationAck {
        NotificationAck {
            status: 200,
            content_type: "text/plain",
            body: "success".into(),
        }
    }
}

/// The store's card data, with a switch to fail the next puts (a store
/// that goes away between two writes of a use case).
/// The memory store's wallets, with one commit of a chosen user that can
/// be held (after it is stored, before the use case learns of it) until
/// released: the gap between a use case's two wallets' writes.
pub struct GatedWallets {
    pub inner: MemoryStore,
    /// The next commit of this user waits at this gate (once).
    pub hold_after_commit: Mutex<Option<(UserId, Arc<tokio::sync::Semaphore>)>>,
    /// Commits that were held.
    pub held: AtomicU64,
    /// The next commit of this user waits at this gate (once) before it
    /// is stored: dropped there, it stores nothing (a process that dies).
    pub hold_before_commit: Mutex<Option<(UserId, Arc<tokio::sync::Semaphore>)>>,
    /// Commits held before they were stored.
    pub held_before: AtomicU64,
    /// Every load waits this long first (a store that hangs).
    pub load_delay: Mutex<Option<std::time::Duration>>,
    /// This user's wallet does not parse (every load of it is `Corrupt`).
    pub corrupt: Mutex<Option<UserId>>,
    /// The next this many commits fail (the store goes away), storing
    /// nothing.
    pub fail_commits: AtomicU32,
}

impl GatedWallets {
    /// Holds the next commit of `user` until the returned gate has a permit.
    pub fn hold_next_commit_of(&self, user: &str) -> Arc<tokio::sync::Semaphore> {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        self.hold_after_commit
            .lock()
            .unwrap()
            .replace((UserId::parse(user).unwrap(), gate.clone()));
        gate
    }

    /// Holds the next commit of `user`, before it is stored, until the
    /// returned gate has a permit.
    pub fn hold_next_commit_of_before_storing(&self, user: &str) -> Arc<tokio::sync::Semaphore> {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        self.hold_before_commit
            .lock()
            .unwrap()
            .replace((UserId::parse(user).unwrap(), gate.clone()));
        gate
    }
}

/// Takes the gate set for `user` (once).
fn gate_of(
    slot: &Mutex<Option<(UserId, Arc<tokio::sync::Semaphore>)>>,
    user: &UserId,
) -> Option<Arc<tokio::sync::Semaphore>> {
    let mut h = slot.lock().unwrap();
    match h.as_ref() {
        Some((u, _)) if u == user => h.take().map(|(_, g)| g),
        _ => None,
    }
}

#[async_trait]
impl cardbind_ports::store::WalletStore for GatedWallets {
    async fn load(
        &self,
        user: &UserId,
    ) -> Result<Option<cardbind_ports::store::StoredWallet>, StoreError> {
        let delay = *self.load_delay.lock().unwrap();
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        if self.corrupt.lock().unwrap().as_ref() == Some(user) {
            return Err(StoreError::Corrupt("wallet: expected value".into()));
        }
        self.inner.load(user).await
    }
    async fn load_many(
        &self,
        users: &[UserId],
    ) -> Result<Vec<cardbind_ports::store::StoredWallet>, StoreError> {
        self.inner.load_many(users).await
    }
    async fn commit(
        &self,
        wallet: &cardbind_domain::Wallet,
        after: Option<cardbind_ports::audit::ChainHead>,
        events: Vec<AuditEvent>,
        now: Timestamp,
    ) -> Result<cardbind_ports::audit::ChainHead, StoreError> {
        let failing = self
            .fail_commits
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(StoreError::Unavailable("wallets: store gone".into()));
        }
        if let Some(gate) = gate_of(&self.hold_before_commit, wallet.user()) {
            self.held_before.fetch_add(1, Ordering::SeqCst);
            gate.acquire().await.unwrap().forget();
        }
        let head = self.inner.commit(wallet, after, events, now).await?;
        if let Some(gate) = gate_of(&self.hold_after_commit, wallet.user()) {
            self.held.fetch_add(1, Ordering::SeqCst);
            gate.acquire().await.unwrap().forget();
        }
        Ok(head)
    }
    async fn pending_links(
        &self,
        from: Timestamp,
        to: Timestamp,
        after: Option<cardbind_ports::store::LinkKey>,
        limit: u32,
    ) -> Result<Vec<cardbind_ports::store::PendingLink>, StoreError> {
        self.inner.pending_links(from, to, after, limit).await
    }
}

pub struct FlakyCardData {
    pub inner: MemoryStore,
    pub fail_puts: AtomicU32,
    /// Puts that arrived (counted before the gate).
    pub puts: AtomicU64,
    /// Holds each put until released.
    pub put_gate: Mutex<Option<Arc<tokio::sync::Semaphore>>>,
    /// Deletes (of either kind) that arrived (counted before the gate).
    pub deletes: AtomicU64,
    /// Holds the next delete (one only) until released.
    pub delete_gate: Mutex<Option<Arc<tokio::sync::Semaphore>>>,
    /// Deletes to fail (as a store that does not answer).
    pub fail_deletes: AtomicU32,
    /// Walks of the keys (`list_keys`) to fail the same way.
    pub fail_lists: AtomicU32,
}

impl FlakyCardData {
    async fn before_delete(&self) -> Result<(), cardbind_ports::StoreError> {
        self.deletes.fetch_add(1, Ordering::SeqCst);
        let gate = self.delete_gate.lock().unwrap().take();
        if let Some(gate) = gate {
            gate.acquire().await.unwrap().forget();
        }
        if self
            .fail_deletes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(cardbind_ports::StoreError::Unavailable("injected".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl cardbind_ports::store::CardDataStore for FlakyCardData {
    async fn put(
        &self,
        d: &cardbind_ports::store::CardData,
    ) -> Result<(), cardbind_ports::StoreError> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        let gate = self.put_gate.lock().unwrap().clone();
        if let Some(gate) = gate {
            gate.acquire().await.unwrap().forget();
        }
        if self
            .fail_puts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(cardbind_ports::StoreError::Unavailable("injected".into()));
        }
        self.inner.put(d).await
    }
    async fn get(
        &self,
        u: &UserId,
        b: &BindingId,
        g: u32,
    ) -> Result<Option<cardbind_ports::store::CardData>, cardbind_ports::StoreError> {
        self.inner.get(u, b, g).await
    }
    async fn owner(&self, b: &BindingId) -> Result<Option<UserId>, cardbind_ports::StoreError> {
        self.inner.owner(b).await
    }
    async fn delete(
        &self,
        u: &UserId,
        b: &BindingId,
        k: Option<u32>,
    ) -> Result<u64, cardbind_ports::StoreError> {
        self.before_delete().await?;
        cardbind_ports::store::CardDataStore::delete(&self.inner, u, b, k).await
    }
    async fn delete_generation(
        &self,
        u: &UserId,
        b: &BindingId,
        g: u32,
    ) -> Result<u64, cardbind_ports::StoreError> {
        self.before_delete().await?;
        self.inner.delete_generation(u, b, g).await
    }
    async fn list_keys(
        &self,
        after: Option<(BindingId, u32)>,
        limit: u32,
    ) -> Result<Vec<cardbind_ports::store::CardDataKey>, cardbind_ports::StoreError> {
        if self
            .fail_lists
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(cardbind_ports::StoreError::Unavailable("injected".into()));
        }
        self.inner.list_keys(after, limit).await
    }
}

pub struct World {
    pub store: MemoryStore,
    pub wallets: Arc<GatedWallets>,
    pub card_data: Arc<FlakyCardData>,
    pub vault: Arc<FakeVault>,
    pub channel: Arc<ScriptChannel>,
    /// A second enabled channel, `other` (never the default).
    pub other: Arc<ScriptChannel>,
    pub clock: Arc<TestClock>,
    pub uc: UseCases,
}

pub fn world(policy: Policy) -> World {
    world_with_bins(policy, cardbind_domain::BinTable::empty())
}

/// A world whose BIN directory holds `bins`.
pub fn world_with_bins(policy: Policy, bins: cardbind_domain::BinTable) -> World {
    world_with(
        policy,
        bins,
        |s| s as Arc<dyn cardbind_ports::audit::AuditLog>,
        None,
    )
}

/// A world whose step-up for unbinding and erasure is checked by
/// `verifier`.
pub fn world_with_step_up(
    policy: Policy,
    verifier: Arc<dyn cardbind_ports::step_up::StepUpVerifier>,
) -> World {
    world_with(
        policy,
        cardbind_domain::BinTable::empty(),
        |s| s as Arc<dyn cardbind_ports::audit::AuditLog>,
        Some(verifier),
    )
}

/// What a test does to the audit log's appends to the service's chain and
/// its walks (links, link stamps); every other call goes to the store as
/// it is. Each method defaults to the store's.
#[async_trait]
pub trait AuditTap: Send + Sync + 'static {
    async fn append_system(
        &self,
        store: &MemoryStore,
        events: Vec<AuditEvent>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        store.append_system(events, now).await
    }

    async fn links(
        &self,
        store: &MemoryStore,
        after: Option<(ChainId, u64)>,
        limit: u32,
    ) -> Result<Vec<Link>, StoreError> {
        store.links(after, limit).await
    }

    async fn link_stamps(
        &self,
        store: &MemoryStore,
        since: Timestamp,
        until: Timestamp,
        after: Option<(Timestamp, ChainId, u64)>,
        limit: u32,
    ) -> Result<Vec<LinkStamp>, StoreError> {
        store.link_stamps(since, until, after, limit).await
    }
}

/// The store's audit log with a tap on its walks.
pub struct Tapped<T> {
    pub store: Arc<MemoryStore>,
    pub tap: T,
}

#[async_trait]
impl<T: AuditTap> AuditLog for Tapped<T> {
    async fn append_system(&self, e: Vec<AuditEvent>, now: Timestamp) -> Result<(), StoreError> {
        self.tap.append_system(&self.store, e, now).await
    }
    async fn list(
        &self,
        f: &AuditFilter,
        after: Option<AuditCursor>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.store.list(f, after, limit).await
    }
    async fn link_stamps(
        &self,
        since: Timestamp,
        until: Timestamp,
        after: Option<(Timestamp, ChainId, u64)>,
        limit: u32,
    ) -> Result<Vec<LinkStamp>, StoreError> {
        self.tap
            .link_stamps(&self.store, since, until, after, limit)
            .await
    }
    async fn links(
        &self,
        after: Option<(ChainId, u64)>,
        limit: u32,
    ) -> Result<Vec<Link>, StoreError> {
        self.tap.links(&self.store, after, limit).await
    }
    async fn purge_before(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.store.purge_before(before).await
    }
}

/// A world whose audit log is the store's with `tap` on its walks, and
/// that log (to reach the tap).
pub fn world_tapped<T: AuditTap>(policy: Policy, tap: T) -> (World, Arc<Tapped<T>>) {
    let slot: Arc<Mutex<Option<Arc<Tapped<T>>>>> = Arc::default();
    let keep = slot.clone();
    let w = world_with(
        policy,
        cardbind_domain::BinTable::empty(),
        move |store| {
            let t = Arc::new(Tapped { store, tap });
            *keep.lock().unwrap() = Some(t.clone());
            t
        },
        None,
    );
    let tapped = slot.lock().unwrap().take().unwrap();
    (w, tapped)
}

fn world_with(
    policy: Policy,
    bins: cardbind_domain::BinTable,
    audit: impl FnOnce(Arc<MemoryStore>) -> Arc<dyn cardbind_ports::audit::AuditLog>,
    step_up: Option<Arc<dyn cardbind_ports::step_up::StepUpVerifier>>,
) -> World {
    let store = MemoryStore::new();
    let vault = Arc::new(FakeVault::default());
    let channel = ScriptChannel::new("mock");
    let other = ScriptChannel::new("other");
    let clock = Arc::new(TestClock(AtomicI64::new(T0)));
    let channels = ChannelRegistry::new(
        vec![
            channel.clone() as Arc<dyn PaymentChannel>,
            other.clone() as Arc<dyn PaymentChannel>,
        ],
        ChannelName::parse("mock").unwrap(),
    )
    .unwrap();
    let s = Arc::new(store.clone());
    let card_data = Arc::new(FlakyCardData {
        inner: store.clone(),
        fail_puts: AtomicU32::new(0),
        puts: AtomicU64::new(0),
        put_gate: Mutex::new(None),
        deletes: AtomicU64::new(0),
        delete_gate: Mutex::new(None),
        fail_deletes: AtomicU32::new(0),
        fail_lists: AtomicU32::new(0),
    });
    let wallets = Arc::new(GatedWallets {
        inner: store.clone(),
        hold_after_commit: Mutex::new(None),
        held: AtomicU64::new(0),
        load_delay: Mutex::new(None),
        corrupt: Mutex::new(None),
        fail_commits: AtomicU32::new(0),
        hold_before_commit: Mutex::new(None),
        held_before: AtomicU64::new(0),
    });
    let ports = Ports {
        wallets: wallets.clone(),
        audit: audit(s.clone()),
        card_data: card_data.clone(),
        channel_refs: s.clone(),
        rates: s.clone(),
        seen: s.clone(),
        idempotency: s.clone(),
        review: s,
        vault: vault.clone(),
        channels,
        bins: Arc::new(cardbind_ports::bins::BinDirectory::new(bins)),
        clock: clock.clone(),
        ids: Arc::new(SeqIds::default()),
        step_up,
    };
    World {
        store,
        wallets,
        card_data,
        vault,
        channel,
        other,
        clock,
        uc: UseCases::new(ports, policy),
    }
}

/// A policy without the rate limits (tests that bind many cards).
pub fn unlimited() -> Policy {
    Policy {
        binds_per_user: cardbind_domain::RateRule {
            limit: 1_000_000,
            window_seconds: 60,
        },
        binds_per_ip: None,
        binds_per_card: None,
        ..Policy::default()
    }
}

pub fn backend() -> RequestContext {
    RequestContext::new(
        Actor::new("backend", Role::Service),
        "req-1",
        Some("203.0.113.9".into()),
    )
}

pub fn admin() -> RequestContext {
    RequestContext::new(Actor::new("ops", Role::Admin), "req-2", None)
}

pub fn user(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

/// A valid Visa number whose 15 first digits end with `n` (Luhn-checked).
pub fn visa(n: u32) -> String {
    let body = format!("411111{n:09}");
    let check = cardbind_domain::card::luhn_check_digit(&body).unwrap();
    format!("{body}{check}")
}

pub fn bind_cmd(u: &str, pan: &str, now: Timestamp) -> BindCard {
    BindCard::parse(
        user(u),
        CardForm {
            card_number: pan,
            expiry_month: 12,
            expiry_year: 2031,
            cvv: Some("123"),
            holder_name: "Zhang San",
            id_number: "11010519491231002X",
            phone: "13800138000",
            channel: None,
        },
        ConsentGiven {
            text_version: "2026-01".into(),
            text_hash: "ab".repeat(32),
            ip: Some("203.0.113.9".into()),
            user_agent: Some("tests".into()),
        },
        now,
    )
    .unwrap()
}

impl World {
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// `u`'s wallet as stored now (the user has one).
    pub async fn wallet(&self, u: &str) -> cardbind_domain::Wallet {
        use cardbind_ports::store::WalletStore;
        self.store.load(&user(u)).await.unwrap().unwrap().wallet
    }
}

/// The outcomes of the `binding.unwanted_signing` events in the audit log
/// (the service's chain), oldest first.
pub async fn unwanted_signings(w: &World) -> Vec<cardbind_ports::audit::Outcome> {
    use cardbind_ports::audit::{AuditAction, AuditFilter, AuditLog};
    AuditLog::list(
        &w.store,
        &AuditFilter {
            action: Some(AuditAction::BindingUnwantedSigning),
            ..AuditFilter::default()
        },
        None,
        100,
    )
    .await
    .unwrap()
    .into_iter()
    .map(|e| e.event.outcome)
    .collect()
}

/// Waits until a counter shows a call (the call is then held at its gate).
pub async fn until_called(counter: &std::sync::atomic::AtomicU64) {
    while counter.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Runs `cmd` as a bind of its own (a request of another client).
pub fn bind_in_background(
    w: &World,
    cmd: BindCard,
) -> tokio::task::JoinHandle<Result<cardbind_usecases::CardView, cardbind_usecases::bind::BindError>>
{
    let uc = w.uc.clone();
    tokio::spawn(async move { uc.bind_card(&backend(), cmd).await })
}
