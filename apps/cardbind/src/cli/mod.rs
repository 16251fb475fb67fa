//! Commands: `serve`, `token`, `step-up-token`, `spec`, `purge`,
//! `audit verify`, `keys rotate`, `keys retire-branches`, `erase-user`,
//! `reconcile`, `sweep-card-data`, `check-config`, `defaults`,
//! `bins import`.

mod admin;
mod serve;

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{bail, Context};
use cardbind_domain::{Role, UserId};
use cardbind_ports::step_up::StepUpAction;
use cardbind_usecases::RequestContext;
use clap::{Parser, Subcommand};

pub use admin::{
    import_bins, verify_audit_anchors, verify_audit_log, verify_logged_anchors, LoggedAnchors,
};
pub use serve::{init_logging, serve_on, start, start_built, Running};

use crate::compose;
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
        /// Lifetime in seconds, 1 to `auth.max_token_lifetime_seconds` (and
        /// to a year of 366 days when that is 0).
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// Print a step-up token made with `step_up.hmac_secret` (dev and
    /// operations aid for the built-in `hmac` verifier).
    StepUpToken {
        /// The user the operation is about.
        #[arg(long)]
        user: String,
        /// `unbind_default_card`, `change_default_card` or `erase_user`.
        #[arg(long)]
        action: String,
        /// Lifetime in seconds, 1 to `step_up.max_ttl_seconds` (default:
        /// 120, or that bound when it is lower).
        #[arg(long)]
        ttl: Option<u64>,
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
    /// Settle bindings stuck in pending_verification by asking their
    /// channel, and queue again cards in manual review missing from the
    /// review queue.
    Reconcile {
        /// Only bindings pending for longer than this many seconds
        /// (default: `channels.reconcile_after_seconds`, 900; not negative).
        #[arg(long, value_parser = clap::value_parser!(i64).range(0..))]
        older_than: Option<i64>,
    },
    /// Delete sealed card data, then channel references, that no card
    /// holds now (what failed clean-ups left): walks every stored record,
    /// so run it off-peak, e.g. daily.
    SweepCardData {
        /// Seconds between the two reads of a wallet that must both find
        /// a record not held before it is deleted.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=3600))]
        settle_seconds: u64,
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
    /// Walk the hash chains and report the first broken link, then compute
    /// every anchored window again and report the first that changed.
    Verify {
        /// Also hold the store to the anchors in these log lines (the
        /// service's log, as shipped elsewhere): every anchor logged must
        /// still match its window.
        #[arg(long)]
        log: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Re-wrap every branch key (and any data key stored before branch
    /// keys) under another master key (resumable).
    Rotate {
        /// The key to move away from (default: the one key in
        /// `keys.previous_kms_key_ids` or `keys.previous_local_key_files`).
        #[arg(long)]
        from: Option<String>,
        /// The new KMS key id / ARN / alias (or an existing local key file):
        /// the configured master key (`keys.kms_key_id`, `keys.local_key_file`).
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

/// Writes a command's output to stdout. A reader that went away (`cardbind
/// spec | head`) ends the output quietly, as it does for other command-line
/// tools, instead of a panic on the broken pipe.
pub(crate) fn out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing to standard output"),
    }
}

pub async fn run(args: impl IntoIterator<Item = OsString>) -> anyhow::Result<()> {
    let cli = Cli::parse_from(args);
    // Only `serve` waits for a dependency that does not answer yet
    // (`ServerConfig::start_waiting`); an operator running a command wants
    // the answer now.
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve => serve::serve(config).await,
        Command::Token { sub, role, ttl } => {
            let role = Role::parse(&role).with_context(|| format!("unknown role {role:?}"))?;
            compose::check_dev_token(&config, &sub, ttl)?;
            // A user's token acts on the paths of its subject: one that is
            // not a user id the API takes could open none of them.
            if role == Role::User && cardbind_domain::UserId::parse(&sub).is_err() {
                anyhow::bail!(
                    "--sub {sub:?}: a user's token names a user id the API takes (1 to 64 of A-Z a-z \
                     0-9 _ - . : @, starting with a letter or digit); nothing was issued"
                );
            }
            let (secret, made) = compose::jwt_secret_made(&config)?;
            if let Some(file) = made {
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "cardbind token: there was no dev secret yet; a new one is in {}. \
                     Only a serve with this data directory (server.data_dir) accepts the token.",
                    file.display()
                );
            }
            out(&format!(
                "{}\n",
                compose::dev_token(&config, &secret, &sub, role, ttl)?
            ))
        }
        Command::StepUpToken { user, action, ttl } => {
            // The arguments first: a wrong one is said whatever the
            // configuration.
            let Some(action) = StepUpAction::parse(&action) else {
                bail!("--action: unbind_default_card, change_default_card or erase_user");
            };
            let secret = config
                .step_up
                .hmac_secret
                .as_ref()
                .context("step_up.hmac_secret is not set")?;
            // A token for what no request can name would never be used.
            if cardbind_domain::UserId::parse(&user).is_err() {
                bail!("--user: a user id is 1 to 64 of A-Z a-z 0-9 _ - . : @, starting with a letter or digit");
            }
            let max = config.step_up.max_ttl_seconds;
            let ttl = ttl.unwrap_or(120.min(max));
            if !(1..=max).contains(&ttl) {
                bail!(
                    "--ttl {ttl}: must be 1 to {max} seconds (step_up.max_ttl_seconds); \
                     nothing was issued"
                );
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs();
            let exp = i64::try_from(now.saturating_add(ttl))?;
            out(&format!(
                "{}\n",
                crate::step_up::hmac_step_up_token(secret.as_bytes(), &user, action, exp)
            ))
        }
        Command::Spec => out(&crate::http::api_spec_json()),
        Command::Defaults => out(&crate::config::defaults_toml()?),
        Command::CheckConfig => {
            compose::check_offline(&config)?;
            if let Some(warning) = compose::per_host_token_secret(&config) {
                // Not `eprintln!`: a closed stderr must not panic.
                use std::io::Write;
                let _ = writeln!(std::io::stderr(), "warning: {warning}");
            }
            out(&admin::config_in_force(&config)?)
        }
        Command::Purge => {
            init_logging(&config);
            let built = compose::build_existing_without_keys(&config).await?;
            let purged = built
                .usecases
                .purge(&RequestContext::service("cli:purge"), config.retention()?)
                .await?;
            out(&format!("purged {purged}\n"))
        }
        Command::Audit {
            command: AuditCommand::Verify { log },
        } => {
            // Bytes, not text: a log that passed through other tools may
            // hold a line that is not UTF-8, which must not stop the check
            // of the anchor lines (ASCII) around it.
            let log = match log {
                Some(path) => Some(
                    String::from_utf8_lossy(
                        &std::fs::read(&path)
                            .with_context(|| format!("reading {}", path.display()))?,
                    )
                    .into_owned(),
                ),
                None => None,
            };
            let usecases = compose::usecases_for_reading(&config).await?;
            admin::audit_verify(&usecases, config.audit.retention_days, log.as_deref()).await
        }
        Command::Keys {
            command: KeysCommand::Rotate { from, to },
        } => {
            init_logging(&config);
            let stores = compose::existing_stores(&config).await?;
            let report = compose::rotate_keys(&config, &stores, from.as_deref(), &to).await?;
            out(&admin::rotation_summary(&report))?;
            admin::not_rewrapped(
                &report.failed,
                "they are still under the old master key: keep it configured as a previous key",
            )?;
            admin::left_under_other_keys(&report)
        }
        Command::Keys {
            command: KeysCommand::RetireBranches { new_version },
        } => {
            init_logging(&config);
            let stores = compose::existing_stores(&config).await?;
            let report = compose::keys::retire_branches(&config, &stores, new_version).await?;
            out(&admin::retirement_summary(&report))?;
            if let Some(at) = report.retire_after {
                out(&format!(
                    "older branch versions were kept: the active one is too recent; run this again after {at}\n"
                ))?;
            }
            admin::not_rewrapped(
                &report.failed,
                "the branch versions they are under were kept",
            )
        }
        Command::EraseUser {
            user_id,
            step_up_token,
        } => {
            init_logging(&config);
            let user = UserId::parse(&user_id).map_err(|e| anyhow::anyhow!("{}", e.message))?;
            let built = compose::build_existing(&config).await?;
            let ctx = RequestContext::service("cli:erase-user");
            let r = built
                .usecases
                .erase_user(&ctx, &user, step_up_token.as_deref())
                .await
                .map_err(|e| {
                    let text = e.to_string();
                    // Only the hmac verifier exists; its tokens are made by
                    // `step-up-token`. A token given and refused is said as
                    // it is.
                    let step_up = e.code() == cardbind_domain::ErrorCode::StepUpRequired;
                    if step_up && step_up_token.is_none() {
                        anyhow::anyhow!(
                            "{text}: step-up is enabled (step_up.enabled): pass --step-up-token \
                             with a token for this user and action erase_user (with the hmac \
                             verifier, `cardbind step-up-token --user {user} --action erase_user` \
                             makes one)"
                        )
                    } else if step_up {
                        anyhow::anyhow!(
                            "{text}: the step-up token was refused: it is not one, has expired, \
                             is for another user or action than erase_user of {user}, or was \
                             made with another step_up.hmac_secret; nothing was changed"
                        )
                    } else {
                        anyhow::anyhow!("{text}")
                    }
                })?;
            out(&format!(
                "erased user {user}: {} card(s) unbound, key material destroyed: {}\n",
                r.unbound, r.key_destroyed
            ))
        }
        Command::Bins {
            command: BinsCommand::Import { file, dry_run },
        } => {
            init_logging(&config);
            let report = import_bins(&config, &file, dry_run).await?;
            out(&format!("{report}\n"))
        }
        Command::SweepCardData { settle_seconds } => {
            init_logging(&config);
            // The sweep reads keys and wallets and deletes sealed records
            // whole: it opens nothing. An operator's walk, not a request:
            // each store call may take 60 s when `storage.timeout_ms` is
            // shorter (a page's wallets are one call: on FerretDB, a scan
            // for each user of the page).
            let mut config = config;
            config.storage.timeout_ms = config.storage.timeout_ms.max(60_000);
            let built = compose::build_existing_without_keys(&config).await?;
            // Each walk runs whatever became of the other; the command
            // fails when either stopped.
            let settle = std::time::Duration::from_secs(settle_seconds);
            let data = built.usecases.sweep_card_data(500, settle).await;
            let refs = built.usecases.sweep_channel_refs(500, settle).await;
            // A record kept because its wallet does not parse fails the
            // command too (after both walks): someone must look at it.
            let mut stopped = Vec::new();
            let mut unreadable = 0;
            for (what, r) in [("card data", &data), ("channel references", &refs)] {
                match r {
                    Ok(r) => {
                        unreadable += r.unreadable;
                        out(&format!(
                            "{what}: examined {}, kept {}, deleted {}, errors {}, unreadable {}\n",
                            r.examined, r.kept, r.deleted, r.errors, r.unreadable
                        ))?
                    }
                    Err(e) => stopped.push(format!("{what}: {e}")),
                }
            }
            if !stopped.is_empty() {
                Err(anyhow::anyhow!("the sweep stopped: {}", stopped.join("; ")))
            } else if unreadable > 0 {
                Err(anyhow::anyhow!(
                    "{unreadable} records kept because their user's wallet does not parse (the log names their cards)"
                ))
            } else {
                Ok(())
            }
        }
        Command::Reconcile { older_than } => {
            init_logging(&config);
            let built = compose::build_existing(&config).await?;
            let r = built
                .usecases
                .reconcile(
                    older_than.unwrap_or(config.channels.reconcile_after_seconds),
                    200,
                )
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            out(&format!(
                "examined {}, activated {}, failed {}, unbound {}, still pending {}, \
                 requeued for review {}, errors {}\n",
                r.examined, r.activated, r.failed, r.unbound, r.still_pending, r.requeued, r.errors
            ))?;
            let e = built
                .usecases
                .finish_erasures(older_than.unwrap_or(config.channels.reconcile_after_seconds))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            out(&format!(
                "erasures that did not finish {}, finished now {}, failed again {}\n",
                e.unfinished, e.finished, e.errors
            ))?;
            // A cron job reports it, as it does the sweep's unreadable
            // records: an erasure that fails again has destroyed the
            // user's key, and may have left their cards bound.
            if e.errors > 0 {
                Err(anyhow::anyhow!(
                    "{} erasure(s) failed again (the log names the users); the next run tries again",
                    e.errors
                ))
            } else {
                Ok(())
            }
        }
    }
}
