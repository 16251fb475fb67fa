//! The service under test: the real `cardbind` binary, started as a
//! subprocess with a TOML file of ours plus `CARDBIND__…` overrides, its
//! logs (debug level, JSON) in a file.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Where the `cardbind` binary is: `--bin`, `CARDBIND_BIN`, or next to this
/// program in the same target directory (`target/<profile>/cardbind`, also
/// from a test in `target/<profile>/deps/`).
pub fn find_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("CARDBIND_BIN").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().map(Path::to_path_buf);
    for _ in 0..2 {
        let Some(d) = dir else { break };
        let candidate = d.join("cardbind");
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir = d.parent().map(Path::to_path_buf);
    }
    bail!(
        "no cardbind binary next to {}: build it (`cargo build -p cardbind`, add --release for a release harness) or pass --bin / CARDBIND_BIN",
        exe.display()
    )
}

/// The settings a binary knows, read from what its `defaults` command
/// prints (`section.key`, and each table's own name): a harness that drives
/// binaries of different ages (see `races`) writes only the keys a binary
/// knows, since an unknown key stops its start-up.
#[derive(Clone, Debug, Default)]
pub struct Known(std::collections::BTreeSet<String>);

impl Known {
    /// Runs `bin defaults`.
    pub async fn of(bin: &Path) -> anyhow::Result<Known> {
        let out = tokio::process::Command::new(bin)
            .arg("defaults")
            .env_remove("CARDBIND_CONFIG")
            .stdin(Stdio::null())
            .output()
            .await
            .with_context(|| format!("running {} defaults", bin.display()))?;
        if !out.status.success() {
            bail!(
                "{} defaults failed: {}",
                bin.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(Known::parse(&String::from_utf8_lossy(&out.stdout)))
    }

    /// The keys of a TOML document as `cardbind defaults` prints it (one
    /// `key = value` a line under `[section]` headers).
    pub fn parse(toml: &str) -> Known {
        let mut keys = std::collections::BTreeSet::new();
        let mut section = String::new();
        for line in toml.lines().map(str::trim) {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.trim().to_owned();
                keys.insert(section.clone());
            } else if let Some((k, _)) = line.split_once('=') {
                let k = k.trim();
                keys.insert(if section.is_empty() {
                    k.to_owned()
                } else {
                    format!("{section}.{k}")
                });
            }
        }
        Known(keys)
    }

    pub fn has(&self, key: &str) -> bool {
        self.0.contains(key)
    }
}

/// Which store the service runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Storage {
    Memory,
    /// MongoDB at this URI, in a fresh database.
    Mongo(String),
    /// MongoDB at this URI, in this database (instances sharing a store).
    MongoDb {
        uri: String,
        database: String,
    },
    /// The embedded SQLite store in the data directory.
    Sqlite,
    /// Whatever the `--set storage.…=…` overrides say (a store added later).
    Custom,
}

impl Storage {
    pub fn label(&self) -> &'static str {
        match self {
            Storage::Memory => "memory",
            Storage::Mongo(_) | Storage::MongoDb { .. } => "mongodb",
            Storage::Sqlite => "sqlite",
            Storage::Custom => "custom",
        }
    }
}

/// What to start.
#[derive(Clone, Debug)]
pub struct ServiceSpec {
    pub bin: PathBuf,
    pub dir: PathBuf,
    pub storage: Storage,
    /// KMS endpoint (moto, or our proxy to it) and key id; `None`: local key.
    pub kms: Option<(String, String)>,
    /// `section.key = value` overrides, applied last (as environment).
    pub sets: Vec<(String, String)>,
    pub log_filter: String,
    /// The HS256 secret; `None`: a new random one. Instances sharing a
    /// store share it, so that one token works on each.
    pub jwt_secret: Option<String>,
}

/// The mock channel's per-card modes the harness uses (by last four).
pub const LAST4_SLOW: &str = "0101";
pub const LAST4_FLAKY: &str = "0202";
pub const LAST4_TIMEOUT: &str = "0303";
pub const LAST4_DECLINE: &str = "0404";

fn toml_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

impl ServiceSpec {
    /// The configuration file: every setting the harness relies on. Keys
    /// the binary does not know (`known`: an older binary) are left out
    /// when the harness can do without them, with the mock channel modes
    /// that need them.
    fn toml(&self, jwt_secret: &str, known: &Known) -> String {
        let data = self.dir.join("data");
        // A trickled body is cut at 5 s (default 30 s) so that the hostile
        // phase's slow bodies end within it; header and connection limits
        // stay at their defaults.
        let body_timeout = if known.has("server.body_read_timeout_ms") {
            "body_read_timeout_ms = 5000\n"
        } else {
            ""
        };
        let slow = known.has("channels.mock.slow_ms");
        let (slow_ms, slow_mode) = if slow {
            (
                "# Under it: a slow channel that still answers.\nslow_ms = 800\n".to_owned(),
                format!("\"{LAST4_SLOW}\" = \"slow\"\n"),
            )
        } else {
            (String::new(), String::new())
        };
        let mut t = format!(
            r#"[server]
address = "127.0.0.1:0"
data_dir = {data}
purge_interval_seconds = 0
{body_timeout}
[channels]
enabled = ["mock"]
default = "mock"

[channels.mock]
mode = "otp"
flaky_every = 2
# Past the resilience timeout below: the resilience layer times out.
timeout_after_ms = 3000
{slow_ms}
[channels.mock.card_modes]
{slow_mode}"{LAST4_FLAKY}" = "flaky"
"{LAST4_TIMEOUT}" = "timeout"
"{LAST4_DECLINE}" = "decline"

[channels.resilience]
timeout_ms = 1500
max_retries = 1
backoff_min_ms = 50
backoff_max_ms = 200
breaker_failures = 5
breaker_open_seconds = 5

[limits]
binds_per_user_per_minute = 3
binds_per_ip_per_minute = 0
binds_per_card_per_hour = 0

[auth]
jwt_secret = {secret}
# A soak runs for as long as it is told, on one token.
max_token_lifetime_seconds = 0

[log]
filter = {filter}
format = "json"
"#,
            data = toml_str(&data.to_string_lossy()),
            secret = toml_str(jwt_secret),
            filter = toml_str(&self.log_filter),
        );
        match &self.storage {
            Storage::Memory => t.push_str("\n[storage]\nkind = \"memory\"\n"),
            Storage::Mongo(uri) => {
                let db = format!(
                    "faults_{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..12]
                );
                t.push_str(&format!(
                    "\n[storage]\nkind = \"mongodb\"\nuri = {}\ndatabase = {}\ntimeout_ms = 2000\n",
                    toml_str(uri),
                    toml_str(&db)
                ));
            }
            Storage::MongoDb { uri, database } => t.push_str(&format!(
                "\n[storage]\nkind = \"mongodb\"\nuri = {}\ndatabase = {}\ntimeout_ms = 2000\n",
                toml_str(uri),
                toml_str(database)
            )),
            Storage::Sqlite => t.push_str("\n[storage]\nkind = \"sqlite\"\n"),
            Storage::Custom => {}
        }
        if let Some((endpoint, key)) = &self.kms {
            t.push_str(&format!(
                "\n[keys]\nkind = \"aws_kms\"\nkms_endpoint = {}\nkms_key_id = {}\nkms_region = \"us-east-1\"\nkms_access_key_id = \"testing\"\nkms_secret_access_key = \"testing\"\nkms_timeout_ms = 2000\n",
                toml_str(endpoint),
                toml_str(key)
            ));
        }
        t
    }

    fn command(&self, config: &Path) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.arg("--config").arg(config);
        // Only our settings: none of the caller's CARDBIND__ variables.
        for (k, _) in std::env::vars() {
            if k.starts_with("CARDBIND__") || k == "CARDBIND_CONFIG" {
                cmd.env_remove(k);
            }
        }
        for (k, v) in &self.sets {
            let name = format!("CARDBIND__{}", k.replace('.', "__").to_ascii_uppercase());
            cmd.env(name, v);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    /// A bearer token for `sub` in `role`, from the binary's `token`
    /// command with the configuration in `config`.
    async fn token(&self, config: &Path, sub: &str, role: &str) -> anyhow::Result<String> {
        let out = self
            .command(config)
            .args(["token", "--sub", sub, "--role", role, "--ttl", "31622400"])
            .output()
            .await
            .with_context(|| format!("running {} token", self.bin.display()))?;
        if !out.status.success() {
            bail!(
                "cardbind token failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Starts the service; returns once it listens.
    pub async fn start(&self) -> anyhow::Result<Service> {
        std::fs::create_dir_all(&self.dir)?;
        let secret = self.jwt_secret.clone().unwrap_or_else(|| {
            format!(
                "faults-{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            )
        });
        let known = Known::of(&self.bin).await?;
        let config = self.dir.join("cardbind.toml");
        std::fs::write(&config, self.toml(&secret, &known))?;
        let token = self.token(&config, "faults-merchant", "service").await?;

        let log_path = self.dir.join("service.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut child = self
            .command(&config)
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
            .await
            .map_err(|_| {
                anyhow!(
                    "the service did not listen within 120 s (log: {})",
                    log_path.display()
                )
            })??
            .ok_or_else(|| {
                anyhow!(
                    "the service exited before listening; log {}: {}",
                    log_path.display(),
                    tail(&log_path)
                )
            })?;
        let addr = line
            .rsplit("://")
            .next()
            .map(str::trim)
            .unwrap_or_default()
            .to_owned();
        // Keep reading stdout so that the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let pid = child.id().ok_or_else(|| anyhow!("no pid"))?;
        Ok(Service {
            base_url: format!("http://{addr}"),
            addr: addr.parse().context("the listening address")?,
            token,
            pid,
            log_path,
            child,
            spec: self.clone(),
            config,
            known,
        })
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// A running service.
pub struct Service {
    pub base_url: String,
    pub addr: std::net::SocketAddr,
    /// A bearer token for a merchant backend (role `service`).
    pub token: String,
    pub pid: u32,
    pub log_path: PathBuf,
    child: tokio::process::Child,
    spec: ServiceSpec,
    config: PathBuf,
    /// The settings the binary knows.
    pub known: Known,
}

impl Service {
    /// Resident memory, bytes (Linux `/proc`).
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }

    /// Open file descriptors (Linux `/proc`).
    pub fn open_fds(&self) -> Option<usize> {
        Some(
            std::fs::read_dir(format!("/proc/{}/fd", self.pid))
                .ok()?
                .count(),
        )
    }

    /// The service's data directory (local master key, embedded store).
    pub fn data_dir(&self) -> PathBuf {
        self.spec.dir.join("data")
    }

    /// A bearer token for `sub` in `role` (`admin`, `auditor`, …).
    pub async fn token(&self, sub: &str, role: &str) -> anyhow::Result<String> {
        self.spec.token(&self.config, sub, role).await
    }

    /// Sends `signal` (`STOP`, `CONT`, …) to the process.
    pub async fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let st = tokio::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status()
            .await?;
        if !st.success() {
            bail!("kill -{signal} {} failed", self.pid);
        }
        Ok(())
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM (the orderly stop), then SIGKILL after `grace`.
    pub async fn stop(mut self, grace: Duration) {
        let _ = tokio::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await;
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_keys_are_read_from_defaults() {
        let k = Known::parse(
            "# comment\n\n[server]\naddress = \"127.0.0.1:8080\"\n\n[channels.mock]\nslow_ms = 2000\n\n[channels.mock.card_modes]\n",
        );
        assert!(k.has("server.address"));
        assert!(k.has("channels.mock.slow_ms"));
        assert!(k.has("channels.mock.card_modes"));
        assert!(!k.has("channels.mock.timeout_after_ms"));
        assert!(!k.has("address"));
    }
}
