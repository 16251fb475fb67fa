//! The admin commands that are more than a call: importing a BIN table,
//! verifying the audit chains, showing the configuration, and what the key
//! commands print.

use anyhow::{bail, Context};
use cardbind_ports::audit::{AuditAction, AuditActor, AuditEvent, Outcome};
use cardbind_ports::clock::{Clock, SystemClock};
use cardbind_usecases::anchors::{Anchor, AnchorMismatch, AnchorReport};
use cardbind_usecases::records::ChainReport;
use cardbind_usecases::UseCases;

use crate::compose;
use crate::config::{Config, StorageKind};

/// `cardbind bins import FILE`: checks the whole file, then (unless
/// `dry_run`) makes it the active table of every instance. Returns what to
/// print.
pub async fn import_bins(
    config: &Config,
    file: &std::path::Path,
    dry_run: bool,
) -> anyhow::Result<String> {
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
    if config.storage.kind == StorageKind::Memory {
        bail!(
            "bins import needs a durable store (storage.kind = \"sqlite\" or \"mongodb\"): \
             with in-memory storage the table lives inside the service process and an \
             import could not reach it"
        );
    }
    let stores = compose::existing_stores(config).await?;
    let now = SystemClock.now();
    let version = stores
        .bins
        .replace(&table, now)
        .await
        .map_err(|e| anyhow::anyhow!("storing the BIN table failed (nothing changed): {e}"))?;
    let detail = format!("version {}, {} entries", version.id, version.entries);
    let event = AuditEvent {
        at: now,
        actor: AuditActor::service("cli:bins-import"),
        action: AuditAction::BinTableImport,
        user_id: None,
        binding_id: None,
        outcome: Outcome::Ok,
        request_id: None,
        client_ip: None,
        detail: Some(detail.clone()),
    };
    if let Err(e) = stores.audit.append_system(vec![event], now).await {
        tracing::error!(error = %e, "audit append failed for the BIN table import");
    }
    Ok(format!(
        "imported {}: {detail}; every instance uses it within {} s",
        file.display(),
        config.bins.refresh_interval_seconds
    ))
}

/// Walks every audit chain and reports the first broken link.
pub async fn verify_audit_log(usecases: &UseCases, page: u32) -> anyhow::Result<ChainReport> {
    usecases
        .verify_audit_chains(page)
        .await
        .map_err(|e| anyhow::anyhow!("reading the audit log: {e}"))
}

pub(super) async fn audit_verify(
    usecases: &UseCases,
    retention_days: u32,
    log: Option<&str>,
) -> anyhow::Result<()> {
    let r = verify_audit_log(usecases, 500).await?;
    if let Some(b) = r.broken {
        bail!(
            "audit chain {} broken at link {}: {}; the audit log was altered \
             behind the service's back (or damaged): keep the store as it is \
             for investigation",
            b.chain,
            b.seq,
            b.reason
        );
    }
    if let Some((what, after)) = r.unreadable {
        let place = after.map_or_else(
            || "the first stored link".to_owned(),
            |(chain, seq)| {
                format!("the next link after link {seq} of chain {chain} (by chain, then number)")
            },
        );
        bail!(
            "audit log unreadable at {place} ({what}): altered behind the \
             service's back or damaged; keep the store as it is for investigation"
        );
    }
    super::out(&format!(
        "audit chains intact: {} links in {} chains verified\n",
        r.links_checked, r.chains
    ))?;
    let a = verify_audit_anchors(usecases, retention_days).await?;
    if let Some(m) = a.mismatch {
        bail!(
            "audit window {}; links of that window were deleted, added or altered \
             behind the service's back",
            changed(&m)
        );
    }
    let newest = a
        .newest_end
        .map_or_else(|| "none yet".to_owned(), |t| t.to_rfc3339());
    super::out(&format!(
        "audit anchors intact: {} windows verified, {} older than the retention \
         horizon not checked; newest anchored window ends {newest}\n",
        a.checked, a.past_retention
    ))?;
    let Some(text) = log else {
        return Ok(());
    };
    let l = verify_logged_anchors(usecases, retention_days, text).await?;
    if l.found == 0 {
        bail!(
            "no audit anchor lines in the log given (\"audit window anchored\", target \
             cardbind::audit_anchor): the service logs one for each audit window \
             (audit.anchor_interval_seconds; 0 turns them off) once \
             audit.anchor_delay_seconds have passed after the window, so the log of a \
             service's first minutes holds none"
        );
    }
    if let Some(m) = l.report.mismatch {
        bail!(
            "the log's anchor of audit window {}; links of that window were deleted, \
             added or altered, and its anchor in the store with them",
            changed(&m)
        );
    }
    super::out(&format!(
        "logged anchors intact: {} windows of the log verified, {} older than the \
         retention horizon not checked\n",
        l.report.checked, l.report.past_retention
    ))
}

/// What an anchor held and what its window holds now.
fn changed(m: &AnchorMismatch) -> String {
    format!(
        "{} to {} does not match: it held {} links (digest {}), the store holds {} now (digest {})",
        m.anchor.start.to_rfc3339(),
        m.anchor.end.to_rfc3339(),
        m.anchor.links,
        m.anchor.digest,
        m.links,
        m.digest
    )
}

/// What a check of the anchors in log lines found.
#[derive(Debug)]
pub struct LoggedAnchors {
    /// Distinct anchors found in the lines.
    pub found: u64,
    /// What checking them found.
    pub report: AnchorReport,
}

/// Holds the store to the anchors named in `log` (the service's log
/// lines, any format): every one within `retention_days` must match its
/// window as the store holds it now.
pub async fn verify_logged_anchors(
    usecases: &UseCases,
    retention_days: u32,
    log: &str,
) -> anyhow::Result<LoggedAnchors> {
    let anchors: std::collections::BTreeSet<Anchor> = log
        .lines()
        .filter(|l| l.contains("audit window anchored"))
        .filter_map(Anchor::find_in)
        .collect();
    let found = anchors.len() as u64;
    let mut report = AnchorReport::default();
    usecases
        .check_anchors(anchors, horizon(usecases, retention_days), &mut report)
        .await
        .map_err(|e| anyhow::anyhow!("reading the audit log: {e}"))?;
    Ok(LoggedAnchors { found, report })
}

/// Checks every anchored window of the audit log whose start is within
/// `retention_days` of now (older ones may have lost links to the purge).
pub async fn verify_audit_anchors(
    usecases: &UseCases,
    retention_days: u32,
) -> anyhow::Result<AnchorReport> {
    usecases
        .verify_anchors(horizon(usecases, retention_days))
        .await
        .map_err(|e| anyhow::anyhow!("reading the audit log: {e}"))
}

/// Where retention may have taken links: `retention_days` before now.
fn horizon(usecases: &UseCases, retention_days: u32) -> cardbind_domain::Timestamp {
    usecases
        .now()
        .minus_seconds(i64::from(retention_days) * 86_400)
}

/// What `cardbind check-config` prints: the configuration in force as TOML
/// (the file format; an optional key that is not set is left out), its
/// secrets shown as `<set>`.
pub(super) fn config_in_force(config: &Config) -> anyhow::Result<String> {
    let mut shown = masked(config);
    // A default the channel applies itself, shown as in force.
    if let Some(a) = shown.channels.alipay.as_mut() {
        a.personal_product_code.get_or_insert_with(|| {
            cardbind_channels::AlipayConfig::default().personal_product_code
        });
    }
    let body = toml::to_string_pretty(&shown)?;
    Ok(format!(
        "# cardbind configuration in force (file, environment and defaults).\n\
         # Secrets are shown as \"<set>\".\n\n{body}"
    ))
}

/// A connection string with its user and password (what comes before the
/// host's `@`) shown as `<credentials>`, the values of its options that
/// may hold a secret (a key file's password, the authentication
/// mechanism's properties, which may hold a session token) as `<set>`, its
/// scheme (`mongodb`, `mongodb+srv`) and the rest kept.
fn uri_without_credentials(uri: &str) -> String {
    let shown = uri_without_user(uri);
    let Some((before, options)) = shown.split_once('?') else {
        return shown;
    };
    let options: Vec<String> = options
        .split('&')
        .map(|option| match option.split_once('=') {
            Some((name, _)) if is_secret_option(name) => format!("{name}=<set>"),
            _ => option.to_owned(),
        })
        .collect();
    format!("{before}?{}", options.join("&"))
}

/// Whether a connection string option's value may be a secret.
fn is_secret_option(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name == "authmechanismproperties"
        || ["password", "secret", "token"]
            .iter()
            .any(|word| name.contains(word))
}

/// [`uri_without_credentials`]'s first step: the user and password.
fn uri_without_user(uri: &str) -> String {
    let (scheme, rest) = match uri.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, uri),
    };
    // The credentials end at the last `@` (a host, database or option
    // holds none; a password may hold an unescaped `/`, `?`, `#` or `@`,
    // which the driver refuses, and which is then just what an operator
    // checks): everything before it is hidden.
    let Some(at) = rest.rfind('@') else {
        return uri.to_owned();
    };
    let hosts = &rest[at..];
    match scheme {
        Some(scheme) => format!("{scheme}://<credentials>{hosts}"),
        None => format!("<credentials>{hosts}"),
    }
}

/// The configuration with its secrets masked (`cardbind check-config`).
pub(super) fn masked(config: &Config) -> Config {
    let mut shown = config.clone();
    let set = || "<set>".to_owned();
    if shown.step_up.hmac_secret.is_some() {
        shown.step_up.hmac_secret = Some(set());
    }
    if shown.auth.jwt_secret.is_some() {
        shown.auth.jwt_secret = Some(set());
    }
    for v in shown.auth.signed_clients.values_mut() {
        *v = set();
    }
    if shown.keys.kms_secret_access_key.is_some() {
        shown.keys.kms_secret_access_key = Some(set());
    }
    shown.channels.mock.notify_secret = set();
    shown.channels.mock.otp_code = set();
    shown.storage.uri = uri_without_credentials(&shown.storage.uri);
    shown
}

/// What `cardbind keys rotate` prints.
pub fn rotation_summary(r: &cardbind_keys::RotationReport) -> String {
    let mut text = format!(
        "{} record(s) wrapped by a master key: {} re-wrapped, {} already under the new key, \
         {} erased meanwhile, {} failed\n",
        r.scanned,
        r.rewrapped,
        r.already_current,
        r.vanished,
        r.failed.len()
    );
    if r.other_master_key > 0 {
        text.push_str(&format!(
            "{} record(s) under another master key than the old and the new one: left as they \
             are (they open only with that key)\n",
            r.other_master_key
        ));
    }
    text
}

/// What `cardbind keys retire-branches` prints.
pub fn retirement_summary(r: &cardbind_keys::RetireReport) -> String {
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_owned()
        } else {
            v.join(", ")
        }
    };
    format!(
        "active branch version {}: {} key(s) looked at, {} re-wrapped under it, {} already \
         under it, {} erased meanwhile, {} failed\nolder versions deleted: {}; kept: {}\n",
        r.active,
        r.scanned,
        r.rewrapped,
        r.already_current,
        r.vanished,
        r.failed.len(),
        list(&r.retired),
        list(&r.kept)
    )
}

/// A key command fails (exit status 1, after its summary) when some keys
/// were not re-wrapped (one that did not unwrap, or one changed by others
/// on every try): an operator's next step (removing the old key, counting
/// the old versions gone) would be wrong, and a job's failure is what a
/// scheduler alerts on. Names the first owners; the log says why each.
/// Fails when a rotation left records under a master key other than the
/// two it was given (the old key named was not the one they are under):
/// the key the operator means to retire may still be needed.
pub fn left_under_other_keys(r: &cardbind_keys::RotationReport) -> anyhow::Result<()> {
    if r.other_master_key == 0 {
        return Ok(());
    }
    bail!(
        "{} record(s) were left under another master key than --from and --to: keep that key \
         configured (keys.previous_kms_key_ids / previous_local_key_files), and rotate again \
         with --from naming it",
        r.other_master_key
    )
}

pub fn not_rewrapped(failed: &[String], consequence: &str) -> anyhow::Result<()> {
    const NAMED: usize = 10;
    if failed.is_empty() {
        return Ok(());
    }
    let mut owners = failed
        .iter()
        .take(NAMED)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if failed.len() > NAMED {
        owners.push_str(&format!(" and {} more", failed.len() - NAMED));
    }
    bail!(
        "{} key(s) were not re-wrapped and were left as they were ({owners}): {consequence}; \
         the log says why each (one that does not unwrap, or one changed by others on every \
         try: run the command again)",
        failed.len()
    )
}

#[cfg(test)]
mod tests {
    use super::uri_without_credentials as masked;

    #[test]
    fn a_connection_string_shows_no_credentials_whatever_they_hold() {
        for (uri, shown) in [
            (
                "mongodb+srv://app:secret@db.example.net/cardbind?authSource=admin",
                "mongodb+srv://<credentials>@db.example.net/cardbind?authSource=admin",
            ),
            // Unescaped `/`, `?`, `#`, `@` in the password (the driver
            // refuses such a string, and check-config is where it is looked
            // at): never printed.
            ("mongodb://app:pa/ss@db/x", "mongodb://<credentials>@db/x"),
            (
                "mongodb://app:p?a#s@s@db:27017/x",
                "mongodb://<credentials>@db:27017/x",
            ),
            (
                "mongodb://127.0.0.1:27017/cardbind",
                "mongodb://127.0.0.1:27017/cardbind",
            ),
            ("app:secret@db", "<credentials>@db"),
            // Options that may hold a secret show only that they are set.
            (
                "mongodb://cardbind@db1:27017/?tls=true&tlsCertificateKeyFile=/etc/c.pem&tlsCertificateKeyFilePassword=KEYFILEPASSWORD",
                "mongodb://<credentials>@db1:27017/?tls=true&tlsCertificateKeyFile=/etc/c.pem&tlsCertificateKeyFilePassword=<set>",
            ),
            (
                "mongodb://db/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:abc&replicaSet=rs0",
                "mongodb://db/?authMechanism=MONGODB-AWS&authMechanismProperties=<set>&replicaSet=rs0",
            ),
        ] {
            assert_eq!(masked(uri), shown, "{uri}");
        }
    }
}
