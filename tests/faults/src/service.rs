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

/// Which store the service runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Storage {
    Memory,
    /// MongoDB at this URI, in a fresh database.
    Mongo(String),
    /// Whatever the `--set storage.…=…` overrides say (a store added later).
    Custom,
}

impl Storage {
    pub fn label(&self) -> &'static str {
        match self {
            Storage::Memory => "memory",
            Storage::Mongo(_) => "mongodb",
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
    /// The configuration file: every setting the harness relies on.
    fn toml(&self, jwt_secret: &str) -> String {
        let data = self.dir.join("data");
        let mut t = format!(
            r#"[server]
address = "127.0.0.1:0"
data_dir = {data}
purge_interval_seconds = 0
# A trickled body is cut at 5 s (default 30 s) so that the hostile phase's
# slow bodies end within it; header and connection limits stay at their
# defaults.
body_read_timeout_ms = 5000

[channels]
enabled = ["mock"]
default = "mock"

[channels.mock]
mode = "otp"
flaky_every = 2
# Past the resilience timeout below: the resilience layer times out.
timeout_after_ms = 3000
# Under it: a slow channel that still answers.
slow_ms = 800

[channels.mock.card_modes]
"{LAST4_SLOW}" = "slow"
"{LAST4_FLAKY}" = "flaky"
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

    /// Starts the service; returns once it listens.
    pub async fn start(&self) -> anyhow::Result<Service> {
        std::fs::create_dir_all(&self.dir)?;
        let secret = format!(
            "faults-{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let config = self.dir.join("cardbind.toml");
        std::fs::write(&config, self.toml(&secret))?;

        let out = self
            .command(&config)
            .args([
                "token",
                "--sub",
                "faults-merchant",
                "--role",
                "service",
                "--ttl",
                "172800",
            ])
            .output()
            .await
            .with_context(|| format!("running {} token", self.bin.display()))?;
        if !out.status.success() {
            bail!(
                "cardbind token failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();

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
