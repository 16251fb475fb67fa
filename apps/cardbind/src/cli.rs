//! Commands: `serve`, `token`, `step-up-token`, `spec`, `purge`,
//! `audit verify`, `keys rotate`, `erase-user`, `reconcile`, `check-config`,
//! `bins import`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use cardbind_domain::{Role, UserId};
use cardbind_ports::audit::{verify_chain, AuditFilter, AuditLog, AuditRecord, ChainBreak};
use cardbind_ports::service::RequestContext;
use clap::{Parser, Subcommand};

use crate::compose::{self, Built};
use crate::config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "cardbind",
    version,
    about = "Bind bank cards to user accounts through payment channels."
)]
pub struct Cli {
    /// Configuration file (TOML). `CARDBIND__SECTION__KEY` variables override it.
    #[arg(long, short, global = true, env = "CARDBIND_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the HTTP service.
    Serve,
    /// Print a bearer token signed with the configured HS256 secret (dev).
    Token {
        /// Subject: the user id for role `user`, a client id otherwise.
        #[arg(long)]
        sub: String,
        /// user, service, admin or auditor.
        #[arg(long, default_value = "service")]
        role: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// Print a step-up token made with `step_up.hmac_secret` (dev and
    /// operations aid for the built-in `hmac` verifier).
    StepUpToken {
        /// The user the operation is about.
        #[arg(long)]
        user: String,
        /// `unbind_default_card` or `erase_user`.
        #[arg(long)]
        action: String,
        /// Lifetime in seconds (at most `step_up.max_ttl_seconds`).
        #[arg(long, default_value_t = 120)]
        ttl: u64,
    },
    /// Print the OpenAPI 3 spec.
    Spec,
    /// Delete expired idempotency keys, rate counters, seen ids and audit
    /// events past their retention.
    Purge,
    /// Audit log commands.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Key management.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Crypto-shred a user: unbind every card and destroy their key material.
    EraseUser {
        user_id: String,
        /// Step-up token for action `erase_user` on this user (required
        /// when `step_up.enabled`).
        #[arg(long, env = "CARDBIND_STEP_UP_TOKEN")]
        step_up_token: Option<String>,
    },
    /// Settle bindings stuck in pending_verification by asking their channel.
    Reconcile {
        /// Only bindings pending for longer than this many seconds
        /// (default: `channels.reconcile_after_seconds`, 900).
        #[arg(long)]
        older_than: Option<i64>,
    },
    /// Load and validate the configuration, then print it (secrets masked).
    CheckConfig,
    /// Print every setting with its default, as a TOML file to start from.
    Defaults,
    /// The BIN table (issuer, card type, country, currency by BIN).
    Bins {
        #[command(subcommand)]
        command: BinsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum BinsCommand {
    /// Replace the BIN table of every instance with the one in FILE (CSV:
    /// low,high,issuer_code,issuer_name_zh,issuer_name_en,card_type,country,currency).
    /// The whole file is checked first; any bad line or overlap refuses it all.
    Import {
        file: PathBuf,
        /// Only check the file; store nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the hash chain and report the first broken link.
    Verify,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Re-wrap every stored data key under another master key (resumable).
    Rotate {
        /// The key to move away from (default: the configured master key).
        #[arg(long)]
        from: Option<String>,
        /// The new KMS key id / ARN / alias (or an existing local key file).
        #[arg(long)]
        to: String,
    },
}

pub async fn run(args: impl IntoIterator<Item = OsString>) -> anyhow::Result<()> {
    let cli = Cli::parse_from(args);
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve => serve(config).await,
        Command::Token { sub, role, ttl } => {
            let role = Role::parse(&role).with_context(|| format!("unknown role {role:?}"))?;
            let secret = compose::jwt_secret(&config)?;
            println!("{}", compose::dev_token(&config, &secret, &sub, role, ttl)?);
            Ok(())
        }
        Command::StepUpToken { user, action, ttl } => {
            let secret = config
                .step_up
                .hmac_secret
                .as_ref()
                .context("step_up.hmac_secret is not set")?;
            if ![
                cardbind_ports::step_up::actions::UNBIND_DEFAULT_CARD,
                cardbind_ports::step_up::actions::ERASE_USER,
            ]
            .contains(&action.as_str())
            {
                bail!("--action: unbind_default_card or erase_user");
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs();
            let exp = i64::try_from(now + ttl.min(config.step_up.max_ttl_seconds))?;
            println!(
                "{}",
                crate::step_up::hmac_step_up_token(secret.as_bytes(), &user, &action, exp)
            );
            Ok(())
        }
        Command::Spec => {
            print!("{}", crate::http::api_spec_json());
            Ok(())
        }
        Command::Defaults => {
            print!("{}", crate::config::defaults_toml()?);
            Ok(())
        }
        Command::CheckConfig => {
            let mut shown = config.clone();
            if shown.step_up.hmac_secret.is_some() {
                shown.step_up.hmac_secret = Some("<set>".into());
            }
            if shown.auth.jwt_secret.is_some() {
                shown.auth.jwt_secret = Some("<set>".into());
            }
            for v in shown.auth.signed_clients.values_mut() {
                *v = "<set>".into();
            }
            if shown.keys.kms_secret_access_key.is_some() {
                shown.keys.kms_secret_access_key = Some("<set>".into());
            }
            if shown.step_up.hmac_secret.is_some() {
                shown.step_up.hmac_secret = Some("<set>".into());
            }
            shown.channels.mock.notify_secret = "<set>".into();
            shown.channels.mock.otp_code = "<set>".into();
            if let Some(i) = shown.storage.uri.find('@') {
                shown.storage.uri = format!("mongodb://<credentials>{}", &shown.storage.uri[i..]);
            }
            println!("{shown:#?}");
            Ok(())
        }
        Command::Purge => {
            init_logging(&config);
            let built = compose::build(&config).await?;
            let report = compose::purge(&built, &config).await?;
            println!("{report}");
            Ok(())
        }
        Command::Audit {
            command: AuditCommand::Verify,
        } => {
            let built = compose::build(&config).await?;
            audit_verify(&built).await
        }
        Command::Keys {
            command: KeysCommand::Rotate { from, to },
        } => {
            init_logging(&config);
            compose::rotate_keys(&config, from.as_deref(), &to).await
        }
        Command::EraseUser {
            user_id,
            step_up_token,
        } => {
            init_logging(&config);
            let user = UserId::parse(&user_id).map_err(|e| anyhow::anyhow!("{}", e.message))?;
            let built = compose::build(&config).await?;
            let ctx = RequestContext::system("cli:erase-user");
            let n = built
                .state
                .service
                .erase_user_with_step_up(&ctx, &user, step_up_token.as_deref())
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("erased user {user}: {n} card(s) unbound, key material destroyed");
            Ok(())
        }
        Command::Bins {
            command: BinsCommand::Import { file, dry_run },
        } => {
            init_logging(&config);
            let report = import_bins(&config, &file, dry_run).await?;
            println!("{report}");
            Ok(())
        }
        Command::Reconcile { older_than } => {
            init_logging(&config);
            let built = compose::build(&config).await?;
            let r = built
                .state
                .service
                .reconcile(
                    older_than.unwrap_or(config.channels.reconcile_after_seconds),
                    200,
                )
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!(
                "examined {}, activated {}, failed {}, still pending {}, errors {}",
                r.examined, r.activated, r.failed, r.still_pending, r.errors
            );
            Ok(())
        }
    }
}

/// `cardbind bins import FILE`: checks the whole file, then (unless
/// `dry_run`) makes it the active table of every instance. Returns what to
/// print.
pub async fn import_bins(
    config: &Config,
    file: &std::path::Path,
    dry_run: bool,
) -> anyhow::Result<String> {
    use cardbind_ports::clock::{Clock, SystemClock};
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let table = crate::bins::parse_csv(std::io::BufReader::new(f))
        .map_err(|e| anyhow::anyhow!("{}: {e}; nothing was imported", file.display()))?;
    if dry_run {
        return Ok(format!(
            "{}: {} entries, valid (dry run: nothing imported)",
            file.display(),
            table.len()
        ));
    }
    if config.storage.kind == crate::config::StorageKind::Memory {
        bail!(
            "bins import needs storage.kind = \"mongodb\": with in-memory storage the table \
             lives inside the service process and an import could not reach it"
        );
    }
    let store = compose::bin_store(config).await?;
    let version = store
        .replace(&table, SystemClock.now())
        .await
        .map_err(|e| anyhow::anyhow!("storing the BIN table failed (nothing changed): {e}"))?;
    let detail = format!("version {}, {} entries", version.id, version.entries);
    let stores = compose::stores(config).await?;
    let event = cardbind_ports::audit::AuditEvent {
        at: SystemClock.now(),
        actor: "cli:bins-import".into(),
        role: "admin".into(),
        action: "bins.import".into(),
        outcome: "ok".into(),
        detail: Some(detail.clone()),
        ..Default::default()
    };
    if let Err(e) = stores.audit.append(event).await {
        tracing::error!(error = %e, "audit append failed for the BIN table import");
    }
    Ok(format!(
        "imported {}: {detail}; every instance uses it within {} s",
        file.display(),
        config.bins.refresh_interval_seconds
    ))
}

/// What `cardbind audit verify` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditVerification {
    /// Every stored event links to the one before it.
    Intact { events: u64 },
    /// The first broken link: `seq` and why; `checked` events before it
    /// were fine.
    Broken { at: ChainBreak, checked: u64 },
}

/// Walks the whole audit chain in pages of `page_size`, checking links
/// across page boundaries too, and reports the first broken link.
pub async fn verify_audit_log(
    audit: &dyn AuditLog,
    page_size: u32,
) -> anyhow::Result<AuditVerification> {
    let mut after = None;
    let mut checked = 0u64;
    let mut last: Option<AuditRecord> = None;
    loop {
        let page = audit
            .list(&AuditFilter::default(), after, page_size.max(1))
            .await
            .map_err(|e| anyhow::anyhow!("reading the audit log: {e}"))?;
        if page.is_empty() {
            break;
        }
        // Verify this page together with the last record of the previous
        // one, so that links across pages are checked too.
        let window: Vec<_> = last.iter().cloned().chain(page.iter().cloned()).collect();
        if let Err(at) = verify_chain(window.iter()) {
            let before = window.iter().filter(|r| r.seq < at.seq).count() as u64;
            let carried = u64::from(last.is_some());
            return Ok(AuditVerification::Broken {
                at,
                checked: checked + before.saturating_sub(carried),
            });
        }
        checked += page.len() as u64;
        after = page.last().map(|r| r.seq);
        last = page.last().cloned();
    }
    Ok(AuditVerification::Intact { events: checked })
}

async fn audit_verify(built: &Built) -> anyhow::Result<()> {
    match verify_audit_log(built.state.service.ports().audit.as_ref(), 500).await? {
        AuditVerification::Intact { events } => {
            println!("audit chain intact: {events} events verified");
            Ok(())
        }
        AuditVerification::Broken { at, .. } => {
            bail!("audit chain broken at event {}: {}", at.seq, at.reason)
        }
    }
}

/// Sets up structured logging once (JSON by default, to stderr).
pub fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&config.log.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if config.log.format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

async fn serve(config: Config) -> anyhow::Result<()> {
    init_logging(&config);
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
    let shutdown = async {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        tracing::info!("shutting down: finishing in-flight requests");
    };
    let built = compose::build(&config).await?;
    serve_on(&config, built, listener, shutdown, |addr, scheme| {
        // The one line on stdout: scripts read the address from it.
        println!("cardbind listening on {scheme}://{addr}");
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
    built
        .state
        .service
        .ports()
        .vault
        .self_check()
        .await
        .map_err(|e| anyhow::anyhow!("key self-check failed, refusing to start: {e}"))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let tls = compose::tls(config)?;
    on_listen(addr, if tls.is_some() { "https" } else { "http" });
    tracing::info!(%addr, storage = ?config.storage.kind, keys = ?config.keys.kind, channels = ?config.channels.enabled, "cardbind started");

    let purge_task = (config.server.purge_interval_seconds > 0).then(|| {
        let every = Duration::from_secs(config.server.purge_interval_seconds);
        let built2 = built.clone();
        let config2 = config.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                match compose::purge(&built2, &config2).await {
                    Ok(r) => tracing::info!(report = %r, "purge done"),
                    Err(e) => tracing::warn!(error = %e, "purge failed"),
                }
            }
        })
    });

    // Every instance picks up an imported BIN table within one interval;
    // a failed check keeps the table in use and is retried next time.
    let bins_task = {
        let every = Duration::from_secs(config.bins.refresh_interval_seconds.max(1));
        let bins = built.state.bins.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                match bins.directory.refresh(bins.store.as_ref()).await {
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
    if let Some(t) = purge_task {
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
pub async fn start(config: Config) -> anyhow::Result<Running> {
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
