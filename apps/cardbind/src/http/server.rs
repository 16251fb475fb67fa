//! # The connection layer
//!
//! Serves the poem endpoint with hyper directly (HTTP/1.1 and HTTP/2, on
//! any poem [`Acceptor`], TLS included) instead of `poem::Server`, because
//! that server bounds nothing per connection: no limit on open connections,
//! no time limit on a request head (hyper's own header timeout needs a
//! timer that poem does not install), and an accept error such as `EMFILE`
//! makes its accept loop spin. What this layer adds:
//!
//! * **Header read time.** A connection must deliver a complete request
//!   head within [`ConnectionLimits::header_read_timeout`], counted from the
//!   accept for its first request (TLS handshake and protocol detection
//!   included) and from the first byte of each later one. A slow-loris
//!   connection that trickles a head is closed when the time is up.
//! * **Keep-alive idle time.** Between requests a connection may sit idle for
//!   [`ConnectionLimits::keep_alive_timeout`] (longer than the header time,
//!   so that a load balancer's pooled connections are not cut under it;
//!   keep the balancer's idle timeout below this one).
//! * **Open connections.** At most [`ConnectionLimits::max_connections`].
//!   At the limit a new connection evicts the connection that has been
//!   waiting for a request head longest (an idle keep-alive connection, or
//!   one still sending its head); only when every open connection is busy
//!   with a request is the new one closed at once. So a flood of idle or
//!   slow connections cannot keep a client with a prompt request out.
//! * **Header size.** HTTP/1 heads larger than
//!   [`ConnectionLimits::max_header_bytes`] are answered `431` by hyper.
//! * **Accept errors** (out of file descriptors) are logged and retried
//!   after a pause instead of in a busy loop.
//! * **Requests at work per connection.** At most
//!   [`ConnectionLimits::max_requests_per_connection`], those whose client
//!   went away included (below); the next request of the connection waits
//!   for one of them to end.
//! * **Requests run to their end.** Each request runs in a task of its own,
//!   so a client that goes away (an HTTP/2 stream it resets, or a connection
//!   it closes while hyper is reading it) does not stop its request between
//!   two writes: a bind whose client gave up still records its channel's
//!   answer and completes its idempotency record, and its retry gets that
//!   answer instead of `409 idempotency_key_in_progress` until the lease
//!   runs out. The answer of a request nobody waits for is dropped. A
//!   shutdown waits for these tasks too, within its grace.
//!
//! The slow-body counterpart (a body trickled byte by byte) is bounded in
//! the edge middleware (`server.body_read_timeout_ms`).
//!
//! Metrics: `cardbind_http_connections` (open now) and
//! `cardbind_http_connections_closed_total{reason}` with `reason` one of
//! `header_timeout`, `idle_timeout`, `evicted`, `refused`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Endpoint, Request};
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::error::ApiError;

/// Per-connection bounds (from `server.*` in the configuration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub keep_alive_timeout: Duration,
    pub max_header_bytes: usize,
    /// Requests of one connection at work at once, those whose client went
    /// away included; the next waits for one of them to end.
    pub max_requests_per_connection: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(75),
            max_header_bytes: 16 * 1024,
            max_requests_per_connection: 256,
        }
    }
}

/// hyper refuses a read buffer below this.
const MIN_BUF: usize = 8192;

/// How often a connection closed for a timeout or an eviction while a
/// request raced in checks whether that request is answered.
const CLOSE_GRACE: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for (the rest of) a request head.
    Head,
    /// Between requests.
    Idle,
    /// At least one request is being handled.
    Busy,
}

struct Slot {
    phase: Phase,
    deadline: Option<Instant>,
    in_flight: usize,
    /// Its key in the eviction order while it is not busy.
    lru: Option<u64>,
    evicted: bool,
}

struct Conn {
    slot: Mutex<Slot>,
    /// Wakes the connection task when its deadline moved or it was evicted.
    wake: Notify,
}

impl Conn {
    fn slot(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Inner {
    open: usize,
    seq: u64,
    /// Connections not busy with a request, oldest first.
    lru: BTreeMap<u64, Arc<Conn>>,
}

struct Metrics {
    open: Option<IntGauge>,
    closed: Option<IntCounterVec>,
}

impl Metrics {
    fn new(registry: &Registry) -> Metrics {
        let open = IntGauge::new(
            "cardbind_http_connections",
            "Open HTTP connections (TCP or TLS)",
        )
        .ok();
        let closed = IntCounterVec::new(
            Opts::new(
                "cardbind_http_connections_closed_total",
                "Connections closed by the server's limits: header_timeout, idle_timeout, evicted (at max_connections), refused (at max_connections, all busy)",
            ),
            &["reason"],
        )
        .ok();
        if let Some(c) = &closed {
            for reason in ["header_timeout", "idle_timeout", "evicted", "refused"] {
                c.with_label_values(&[reason]);
            }
        }
        // A second server on one registry (tests) shares the names: it then
        // counts without exporting.
        if let Some(o) = &open {
            let _ = registry.register(Box::new(o.clone()));
        }
        if let Some(c) = &closed {
            let _ = registry.register(Box::new(c.clone()));
        }
        Metrics { open, closed }
    }

    fn closed(&self, reason: &str) {
        if let Some(c) = &self.closed {
            c.with_label_values(&[reason]).inc();
        }
    }

    fn set_open(&self, n: usize) {
        if let Some(o) = &self.open {
            o.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

/// Every open connection: the count, the eviction order, the limits.
struct Connections {
    limits: ConnectionLimits,
    inner: Mutex<Inner>,
    metrics: Metrics,
    /// Request tasks running, whether or not their client still waits.
    running: AtomicUsize,
}

impl Connections {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn open(&self) -> usize {
        self.lock().open
    }

    /// Admits a new connection, evicting the longest-waiting non-busy one at
    /// the limit; `None` when every open connection is busy.
    fn admit(&self) -> Option<Arc<Conn>> {
        let mut g = self.lock();
        if g.open >= self.limits.max_connections.max(1) {
            let (_, victim) = g.lru.pop_first()?;
            {
                let mut s = victim.slot();
                s.evicted = true;
                s.lru = None;
            }
            victim.wake.notify_one();
            g.open -= 1;
            self.metrics.closed("evicted");
        }
        g.open += 1;
        g.seq += 1;
        let seq = g.seq;
        let conn = Arc::new(Conn {
            slot: Mutex::new(Slot {
                phase: Phase::Head,
                deadline: Some(Instant::now() + self.limits.header_read_timeout),
                in_flight: 0,
                lru: Some(seq),
                evicted: false,
            }),
            wake: Notify::new(),
        });
        g.lru.insert(seq, conn.clone());
        self.metrics.set_open(g.open);
        Some(conn)
    }

    /// The connection is gone.
    fn close(&self, conn: &Arc<Conn>) {
        let mut g = self.lock();
        let mut s = conn.slot();
        if let Some(k) = s.lru.take() {
            g.lru.remove(&k);
        }
        if !s.evicted {
            s.evicted = true;
            g.open = g.open.saturating_sub(1);
        }
        self.metrics.set_open(g.open);
    }

    /// Bytes arrived: an idle connection starts a request head.
    fn on_read(&self, conn: &Arc<Conn>) {
        if conn.slot().phase != Phase::Idle {
            return;
        }
        let mut g = self.lock();
        let mut s = conn.slot();
        if s.phase != Phase::Idle || s.evicted {
            return;
        }
        s.phase = Phase::Head;
        s.deadline = Some(Instant::now() + self.limits.header_read_timeout);
        if let Some(k) = s.lru.take() {
            g.lru.remove(&k);
        }
        g.seq += 1;
        let seq = g.seq;
        s.lru = Some(seq);
        g.lru.insert(seq, conn.clone());
        drop(s);
        conn.wake.notify_one();
    }

    /// A request head is complete: the connection is busy.
    fn begin(&self, conn: &Arc<Conn>) {
        let mut g = self.lock();
        let mut s = conn.slot();
        if s.evicted {
            // Evicted as its head completed: it keeps its place after all
            // (the count may pass the limit by the few that race so).
            s.evicted = false;
            g.open += 1;
            self.metrics.set_open(g.open);
        }
        s.in_flight += 1;
        s.phase = Phase::Busy;
        s.deadline = None;
        if let Some(k) = s.lru.take() {
            g.lru.remove(&k);
        }
    }

    /// A request is answered; the last one makes the connection idle.
    fn end(&self, conn: &Arc<Conn>) {
        let mut g = self.lock();
        let mut s = conn.slot();
        s.in_flight = s.in_flight.saturating_sub(1);
        if s.in_flight > 0 || s.evicted {
            return;
        }
        s.phase = Phase::Idle;
        s.deadline = Some(Instant::now() + self.limits.keep_alive_timeout);
        g.seq += 1;
        let seq = g.seq;
        s.lru = Some(seq);
        g.lru.insert(seq, conn.clone());
        drop(s);
        conn.wake.notify_one();
    }
}

/// Marks the connection busy while a request is handled.
struct BusyGuard {
    registry: Arc<Connections>,
    conn: Arc<Conn>,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.registry.end(&self.conn);
    }
}

/// Counts a request's task as running until it ends.
struct RunningGuard(Arc<Connections>);

impl RunningGuard {
    fn new(registry: &Arc<Connections>) -> Self {
        registry.running.fetch_add(1, Ordering::SeqCst);
        RunningGuard(registry.clone())
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Releases the connection's place however its task ends.
struct OpenGuard {
    registry: Arc<Connections>,
    conn: Arc<Conn>,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.registry.close(&self.conn);
    }
}

/// The socket, watched for the first byte of each request.
struct Watched<IO> {
    io: IO,
    registry: Arc<Connections>,
    conn: Arc<Conn>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.registry.on_read(&self.conn);
        }
        res
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Why a connection task stopped waiting for its connection.
enum Stop {
    Done,
    Shutdown,
    Closed(&'static str),
}

struct ConnParts<IO, E> {
    io: IO,
    local: LocalAddr,
    remote: RemoteAddr,
    scheme: poem::http::uri::Scheme,
    ep: Arc<E>,
    registry: Arc<Connections>,
    conn: Arc<Conn>,
    shutdown: watch::Receiver<bool>,
}

async fn serve_connection<IO, E>(parts: ConnParts<IO, E>)
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    E: Endpoint + 'static,
{
    let ConnParts {
        io,
        local,
        remote,
        scheme,
        ep,
        registry,
        conn,
        mut shutdown,
    } = parts;
    let _open = OpenGuard {
        registry: registry.clone(),
        conn: conn.clone(),
    };
    let peer = remote.to_string();
    // The requests of this connection running at once, those whose client
    // went away included: a client that resets each request it sends
    // cannot leave more than this many at work (hyper lets an HTTP/2
    // connection have 200 streams open; HTTP/1 has one request at a time).
    let slots = Arc::new(tokio::sync::Semaphore::new(
        registry
            .limits
            .max_requests_per_connection
            .clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
    ));
    let service = {
        let (registry, conn) = (registry.clone(), conn.clone());
        hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let ep = ep.clone();
            let slots = slots.clone();
            let (local, remote, scheme) = (local.clone(), remote.clone(), scheme.clone());
            registry.begin(&conn);
            let busy = BusyGuard {
                registry: registry.clone(),
                conn: conn.clone(),
            };
            let running = RunningGuard::new(&registry);
            async move {
                // Waits while the connection has its fill at work (the
                // semaphore is never closed).
                let slot = slots.acquire_owned().await.ok();
                // In a task of its own: dropping this future (the client
                // went away) does not stop the request.
                let task = tokio::spawn(async move {
                    let _running = (running, slot);
                    ep.get_response(Request::from((req, local, remote, scheme)))
                        .await
                });
                let resp = match task.await {
                    Ok(resp) => resp,
                    // The edge catches a handler's panic; this is one
                    // outside it, or the runtime stopping. Not the error's
                    // text: a panic's message may hold request data (the
                    // panic hook keeps it out of the log too).
                    Err(e) => {
                        let request_id = uuid::Uuid::new_v4().to_string();
                        tracing::error!(%request_id, panicked = e.is_panic(), "request task failed");
                        ApiError::internal("request task failed").to_response(&request_id)
                    }
                };
                drop(busy);
                Ok::<_, Infallible>(
                    hyper::Response::<BoxBody<bytes::Bytes, std::io::Error>>::from(resp),
                )
            }
        })
    };
    let io = Watched {
        io,
        registry: registry.clone(),
        conn: conn.clone(),
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A client may shut its write side once the request is sent and wait
    // for the answer (RFC 9112 9.6 allows it): the request is still
    // answered, rather than dropped when the read side ends.
    builder
        .http1()
        .half_close(true)
        .max_buf_size(registry.limits.max_header_bytes.max(MIN_BUF));
    let served = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(served);

    let stop = loop {
        let (deadline, phase, evicted) = {
            let s = conn.slot();
            (s.deadline, s.phase, s.evicted)
        };
        if evicted {
            break Stop::Closed("");
        }
        let sleep = async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = &mut served => break Stop::Done,
            _ = conn.wake.notified() => {}
            _ = sleep => {
                let s = conn.slot();
                if s.deadline.is_some_and(|d| d <= Instant::now()) {
                    break Stop::Closed(if phase == Phase::Idle { "idle_timeout" } else { "header_timeout" });
                }
            }
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() {
                    break Stop::Shutdown;
                }
            }
        }
    };
    match stop {
        Stop::Done => {}
        Stop::Shutdown => {
            // In-flight requests finish; the server bounds the wait.
            served.as_mut().graceful_shutdown();
            let _ = served.await;
        }
        Stop::Closed(reason) => {
            if !reason.is_empty() {
                registry.metrics.closed(reason);
                tracing::debug!(remote = %peer, reason, "closing connection");
            }
            // Nothing in flight: drop it now. A request whose head
            // completed meanwhile is answered first, then the connection
            // closes.
            if conn.slot().in_flight > 0 {
                served.as_mut().graceful_shutdown();
                loop {
                    if tokio::time::timeout(CLOSE_GRACE, &mut served).await.is_ok()
                        || conn.slot().in_flight == 0
                    {
                        break;
                    }
                }
            }
        }
    }
}

/// Serves `ep` on `acceptor` until `shutdown` resolves; then stops
/// accepting, lets open connections and running requests (those whose
/// client went away included) finish for up to `grace`, and returns. Connection metrics go into `metrics`.
pub async fn run<A, E>(
    mut acceptor: A,
    ep: E,
    limits: ConnectionLimits,
    metrics: &Registry,
    shutdown: impl std::future::Future<Output = ()> + Send,
    grace: Duration,
) -> std::io::Result<()>
where
    A: Acceptor + 'static,
    E: Endpoint + 'static,
{
    let registry = Arc::new(Connections {
        limits,
        inner: Mutex::new(Inner {
            open: 0,
            seq: 0,
            lru: BTreeMap::new(),
        }),
        metrics: Metrics::new(metrics),
        running: AtomicUsize::new(0),
    });
    let ep = Arc::new(ep);
    let (stop_tx, stop_rx) = watch::channel(false);
    let last_warning = AtomicU64::new(0);
    let started = Instant::now();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            res = acceptor.accept() => match res {
                Ok((io, local, remote, scheme)) => {
                    let Some(conn) = registry.admit() else {
                        registry.metrics.closed("refused");
                        drop(io);
                        continue;
                    };
                    tokio::spawn(serve_connection(ConnParts {
                        io,
                        local,
                        remote,
                        scheme,
                        ep: ep.clone(),
                        registry: registry.clone(),
                        conn,
                        shutdown: stop_rx.clone(),
                    }));
                }
                Err(e) => {
                    // Out of file descriptors, or the peer gave up during
                    // accept: not fatal. Log once a second at most.
                    let now = started.elapsed().as_secs();
                    if last_warning.swap(now, Ordering::Relaxed) != now {
                        tracing::warn!(error = %e, open = registry.open(), "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
    drop(acceptor);
    let _ = stop_tx.send(true);
    let deadline = Instant::now() + grace;
    while (registry.open() > 0 || registry.running.load(Ordering::SeqCst) > 0)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
