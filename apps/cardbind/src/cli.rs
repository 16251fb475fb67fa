//! Commands: `serve`, `token`, `step-up-token`, `spec`, `purge`,
//! `audit verify`, `keys rotate`, `keys retire-branches`, `erase-user`,
//! `reconcile`, `check-config`.

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
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the hash chain and report the first broken link.
    Verify,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Re-wrap every branch key (and any data key stored before branch
    /// keys) under another master key (resumable).
    Rotate {
        /// The key to move away from (default: the configured master key).
        #[arg(long)]
        from: Option<String>,
        /// The new KMS key id / ARN / alias (or an existing local key file).
        #[arg(long)]
        to: String,
    },
    /// Move every data key to the active branch key version, then delete
    /// older versions no key names any more (resumable).
    RetireBranches {
        /// First make a new branch key version and make it active.
        #[arg(long)]
        new_version: bool,
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
            println!("{}", crate::http::api_spec_json());
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
        Command::Keys {
            command: KeysCommand::RetireBranches { new_version },
        } => {
            init_logging(&config);
            let report = compose::retire_branches(&config, new_version).await?;
            println!("{report:?}");
            if let Some(at) = report.retire_after {
                println!(
                    "older branch versions were kept: the active one is too recent; run this again after {at}"
                );
            }
            Ok(())
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

    let app = crate::http::app(built.state.clone());
    let acceptor = poem::listener::TcpAcceptor::from_std(listener)?;
    let grace = Some(Duration::from_secs(30));
    let res = match tls {
        None => {
            poem::Server::new_with_acceptor(acceptor)
                .run_with_graceful_shutdown(app, shutdown, grace)
                .await
        }
        Some(tls) => {
            use futures::StreamExt;
            use poem::listener::AcceptorExt;
            // One configuration, then a stream that stays open.
            let configs = futures::stream::iter([tls]).chain(futures::stream::pending());
            let acceptor = ConfigFirst {
                inner: acceptor,
                started: false,
            };
            poem::Server::new_with_acceptor(acceptor.rustls(configs))
                .run_with_graceful_shutdown(app, shutdown, grace)
                .await
        }
    };
    if let Some(t) = purge_task {
        t.abort();
    }
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
    let listener = std::net::TcpListener::bind(&config.server.address)
        .with_context(|| format!("cannot listen on {}", config.server.address))?;
    let built = compose::build(&config).await?;
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
