//! `cardbind serve`: the HTTP service, its background tasks (retention,
//! BIN table refresh) and a service started inside a test.

use std::time::Duration;

use anyhow::Context;
use cardbind_usecases::RequestContext;

use crate::compose::{self, Built};
use crate::config::{Config, LogFormat};
use crate::tasks::Task;

/// Sets up structured logging once (JSON by default, to stderr).
///
/// A line that cannot be written (stderr's reader went away: a log shipper
/// restarting, `cardbind serve 2>&1 | head`) is dropped. By default the
/// subscriber reports such a failure with `eprintln!`, which panics on the
/// same closed pipe, and the panic hook's own log line then aborts the
/// process.
pub fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&config.log.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    let _ = match config.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

pub(super) async fn serve(mut config: Config) -> anyhow::Result<()> {
    init_logging(&config);
    // From here every dependency shares one wait.
    config.server.start_waiting();
    // Said by `serve` alone: the admin commands take no notifications.
    if config
        .channels
        .enabled
        .contains(&crate::config::ChannelKind::Mock)
        && config.channels.mock.has_public_secret()
    {
        tracing::warn!(
            "the mock channel signs notifications with the public default secret \
             (channels.mock.notify_secret): anyone who knows a binding id can post \
             its events; set a secret of your own, or enable a real channel, \
             anywhere but a laptop"
        );
    }
    if let Some(warning) = crate::compose::per_host_token_secret(&config) {
        tracing::warn!("{warning}");
    }
    // A panic message can quote the value that caused it (a request field):
    // log where it happened, never what it said. Requests that panic are
    // answered 500 `internal_error` by the HTTP edge.
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(%location, "panic (message withheld: it may hold request data)");
    }));
    let listener = std::net::TcpListener::bind(&config.server.address)
        .with_context(|| format!("cannot listen on {}", config.server.address))?;
    // SIGTERM, and SIGHUP too: the service reloads nothing, and a hang-up
    // (a closed terminal, a supervisor's reload) would otherwise end it at
    // once, dropping requests in flight. Each handler is installed on its
    // own (one that cannot be does not take the others with it), and all
    // are in place from here on: a signal while the service is still
    // starting stops the start, one right after it listens is caught.
    #[cfg(unix)]
    let (mut term, mut hup) = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::hangup()).ok(),
        )
    };
    let shutdown = async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            async fn received(s: Option<&mut tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                _ = ctrl_c => {},
                () = received(term.as_mut()) => {},
                () = received(hup.as_mut()) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        tracing::info!("shutting down: finishing in-flight requests");
    };
    let mut shutdown = Box::pin(shutdown);
    let built = tokio::select! {
        built = compose::build(&config) => built?,
        () = &mut shutdown => {
            tracing::info!("stopped before the service was ready");
            return Ok(());
        }
    };
    serve_on(&config, built, listener, shutdown, |addr, scheme| {
        // The one line on stdout: scripts read the address from it.
        if let Err(e) = super::out(&format!("cardbind listening on {scheme}://{addr}\n")) {
            tracing::warn!(error = %e, "the listening line was not written");
        }
    })
    .await
}

/// Serves `built` on `listener` until `shutdown` resolves, then finishes
/// in-flight requests (up to 30 s). Runs the key self-check first and the
/// retention purge in the background. `on_listen` gets the bound address.
pub async fn serve_on(
    config: &Config,
    built: Built,
    listener: std::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_listen: impl FnOnce(std::net::SocketAddr, &str),
) -> anyhow::Result<()> {
    // A key service (or the key store) that does not answer yet is waited
    // for; one that refuses (a wrong master key) ends the start at once,
    // and so does a signal.
    let mut shutdown = Box::pin(shutdown);
    let check = Box::pin(crate::compose::wait::until_it_answers(
        "the key service",
        config.server.start_deadline,
        cardbind_ports::KeyError::is_transient,
        || built.usecases.key_self_check(),
    ));
    tokio::select! {
        checked = check => checked
            .map_err(|e| anyhow::anyhow!("key self-check failed, refusing to start: {e}"))?,
        () = &mut shutdown => {
            tracing::info!("stopped before the service was ready");
            return Ok(());
        }
    }
    tracing::info!("key self-check passed: the start-up canary opened");
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let tls = compose::tls(config)?;
    on_listen(addr, if tls.is_some() { "https" } else { "http" });
    tracing::info!(%addr, storage = ?config.storage.kind, keys = ?config.keys.kind, channels = ?config.channels.enabled, "cardbind started");

    let purge_task = (config.server.purge_interval_seconds > 0).then(|| {
        let every = Duration::from_secs(config.server.purge_interval_seconds);
        let usecases = built.usecases.clone();
        let retention = config.retention();
        let runs = built.tasks.clone();
        tokio::spawn(async move {
            let Ok(retention) = retention else { return };
            let ctx = RequestContext::service("purge");
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let done = usecases.purge(&ctx, retention).await;
                runs.ran(Task::Purge, done.is_ok());
                match done {
                    Ok(r) => tracing::info!(purged = %r, "purge done"),
                    Err(e) => tracing::warn!(error = %e, "purge failed"),
                }
            }
        })
    });

    // Every instance anchors the closed windows of the audit log; one that
    // another instance anchored first is left alone.
    let anchor_task = config.audit.anchors().map(|schedule| {
        let usecases = built.usecases.clone();
        let runs = built.tasks.clone();
        tokio::spawn(async move {
            let ctx = RequestContext::service("audit-anchor");
            let every = Duration::from_secs(u64::from(schedule.interval_seconds));
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first run one interval after the start, not during it.
            tick.tick().await;
            loop {
                tick.tick().await;
                // A run reads a window's worth of the log: off the request
                // workers (the embedded store reads on the caller's thread,
                // which would hold a worker for each page).
                let (uc, ctx) = (usecases.clone(), ctx.clone());
                let handle = tokio::runtime::Handle::current();
                let started = std::time::Instant::now();
                // Each anchor is logged as soon as it is stored: the log
                // lines, shipped elsewhere, are what `audit verify --log`
                // holds the store to.
                let log = move |a: &cardbind_usecases::anchors::Anchor| {
                    tracing::info!(
                        target: "cardbind::audit_anchor",
                        window_start = %a.start.to_rfc3339(),
                        window_end = %a.end.to_rfc3339(),
                        links = a.links,
                        anchor = %a.detail(),
                        run_ms = started.elapsed().as_millis() as u64,
                        "audit window anchored"
                    );
                };
                let run = tokio::task::spawn_blocking(move || {
                    handle.block_on(async move { uc.anchor_due(&ctx, schedule, &log).await })
                });
                let done = run.await.unwrap_or_else(|e| {
                    Err(cardbind_ports::StoreError::Unavailable(format!(
                        "the anchoring run ended abnormally: {e}"
                    )))
                });
                runs.ran(Task::AuditAnchor, done.is_ok());
                if let Err(e) = done {
                    tracing::warn!(error = %e, "audit anchoring failed; retried next time");
                }
            }
        })
    });

    // Every instance picks up an imported BIN table within one interval;
    // a failed check keeps the table in use and is retried next time.
    let bins_task = {
        let every = Duration::from_secs(config.bins.refresh_interval_seconds.max(1));
        let bins = built.state.bins.clone();
        let runs = built.tasks.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let done = bins.directory.refresh(bins.store.as_ref()).await;
                runs.ran(Task::BinRefresh, done.is_ok());
                match done {
                    Ok(cardbind_ports::bins::Refresh::Loaded(v)) => {
                        tracing::info!(version = %v.id, entries = v.entries, "BIN table updated")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "BIN table refresh failed; keeping the table in use")
                    }
                }
            }
        })
    };

    let app = crate::http::app(built.state.clone());
    let acceptor = poem::listener::TcpAcceptor::from_std(listener)?;
    let grace = Duration::from_secs(30);
    let limits = config.server.connection_limits();
    let registry = built.state.metrics.clone();
    let res = match tls {
        None => crate::http::server::run(acceptor, app, limits, &registry, shutdown, grace).await,
        Some(tls) => {
            use futures::StreamExt;
            use poem::listener::AcceptorExt;
            // One configuration, then a stream that stays open.
            let configs = futures::stream::iter([tls]).chain(futures::stream::pending());
            let acceptor = ConfigFirst {
                inner: acceptor,
                started: false,
            };
            crate::http::server::run(
                acceptor.rustls(configs),
                app,
                limits,
                &registry,
                shutdown,
                grace,
            )
            .await
        }
    };
    for t in [purge_task, anchor_task].into_iter().flatten() {
        t.abort();
    }
    bins_task.abort();
    res?;
    Ok(())
}

/// A TCP acceptor whose first `accept` yields once before accepting.
///
/// poem's `RustlsAcceptor` races its configuration stream against the
/// inner `accept` in an unbiased `select!`, and drops (resets) a connection
/// accepted before the first configuration is loaded ("no valid tls
/// config"). A client that connects while the service starts (a health
/// check, a retrying client) hit that about half of the time. Yielding once
/// lets the configuration, which is ready at once, always win that first
/// race; afterwards the configuration stream is pending for good.
struct ConfigFirst<A> {
    inner: A,
    started: bool,
}

impl<A: poem::listener::Acceptor> poem::listener::Acceptor for ConfigFirst<A> {
    type Io = A::Io;

    fn local_addr(&self) -> Vec<poem::web::LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(
        &mut self,
    ) -> std::io::Result<(
        Self::Io,
        poem::web::LocalAddr,
        poem::web::RemoteAddr,
        poem::http::uri::Scheme,
    )> {
        if !self.started {
            self.started = true;
            tokio::task::yield_now().await;
        }
        self.inner.accept().await
    }
}

/// A service started in this process (tests, embedding).
pub struct Running {
    pub addr: std::net::SocketAddr,
    pub base_url: String,
    pub built: Built,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops accepting, finishes in-flight requests, and waits.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        (&mut self.task).await?
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Starts the service for `config` on `config.server.address` (use port 0
/// for a free one) in the background and returns once it listens.
pub async fn start(mut config: Config) -> anyhow::Result<Running> {
    config.server.start_waiting();
    let built = compose::build(&config).await?;
    start_built(config, built).await
}

/// [`start`] with the adapters already built (see [`compose::build_on`]).
pub async fn start_built(config: Config, built: compose::Built) -> anyhow::Result<Running> {
    let listener = std::net::TcpListener::bind(&config.server.address)
        .with_context(|| format!("cannot listen on {}", config.server.address))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel::<(std::net::SocketAddr, String)>();
    let built2 = built.clone();
    let task = tokio::spawn(async move {
        serve_on(
            &config,
            built2,
            listener,
            async move {
                let _ = stop_rx.await;
            },
            move |addr, scheme| {
                let _ = addr_tx.send((addr, scheme.to_owned()));
            },
        )
        .await
    });
    match addr_rx.await {
        Ok((addr, scheme)) => Ok(Running {
            addr,
            base_url: format!("{scheme}://{addr}"),
            built,
            stop: Some(stop_tx),
            task,
        }),
        Err(_) => match task.await {
            Ok(Err(e)) => Err(e),
            Ok(Ok(())) => Err(anyhow::anyhow!("the service stopped before listening")),
            Err(e) => Err(e.into()),
        },
    }
}
