//! Where the service listens, what it stores in, and its keys.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Listen address, `host:port`.
    pub address: String,
    /// Where the local master key and the dev JWT secret live.
    pub data_dir: PathBuf,
    /// PEM certificate chain and key: when both are set the service
    /// terminates TLS itself (TLS 1.2 minimum) and refuses plain HTTP.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub max_body_bytes: usize,
    pub max_json_depth: usize,
    /// Trust `X-Forwarded-For` (only behind a proxy that appends the
    /// client's address): its LAST entry is taken as the client IP, since
    /// earlier entries come from the client and can be forged.
    pub trust_forwarded_for: bool,
    /// How often the background purge runs (seconds; 0 disables it).
    pub purge_interval_seconds: u64,
    /// Open connections at most. At the limit a new connection evicts the
    /// one that has waited longest for a request head (idle keep-alive or
    /// still sending its head); when all are busy it is closed at once.
    /// Keep the process's file descriptor limit above it.
    pub max_connections: usize,
    /// Time for a request head to arrive: from the accept for a
    /// connection's first request (TLS handshake included), from the first
    /// byte for later ones. Slower connections are closed (slow-loris).
    pub header_read_timeout_ms: u64,
    /// How long a connection may sit idle between requests. Keep a load
    /// balancer's idle timeout below it.
    pub keep_alive_timeout_ms: u64,
    /// Time for a whole request body to arrive once its head has: slower
    /// bodies are answered 400 `invalid_request`.
    pub body_read_timeout_ms: u64,
    /// Largest HTTP/1 request head (request line and headers), bytes; 431
    /// beyond.
    pub max_header_bytes: usize,
    /// Requests of one connection at work at once, those whose client went
    /// away included (a request runs to its end: a client that resets each
    /// HTTP/2 stream it opens cannot leave more than this many running);
    /// the connection's next request waits for one of them to end.
    pub max_requests_per_connection: usize,
    /// How long `serve` waits at start for MongoDB and the key service to
    /// answer (a database still starting, a failover) before it gives up
    /// and exits 1, all of them together; 0 gives up at the first failure.
    /// A refusal (a wrong master key, a refused login) ends the start at
    /// once.
    pub dependency_wait_seconds: u64,
    /// Not a setting: when the wait above ends, fixed once as `serve`
    /// starts (so that every dependency shares one wait). `None` (every
    /// admin command) waits for nothing.
    #[serde(skip)]
    pub start_deadline: Option<tokio::time::Instant>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            address: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from(".data"),
            tls_cert_file: None,
            tls_key_file: None,
            max_body_bytes: 64 * 1024,
            max_json_depth: 16,
            trust_forwarded_for: false,
            purge_interval_seconds: 3600,
            max_connections: 4096,
            header_read_timeout_ms: 10_000,
            keep_alive_timeout_ms: 75_000,
            body_read_timeout_ms: 30_000,
            max_header_bytes: 16 * 1024,
            max_requests_per_connection: 256,
            dependency_wait_seconds: 60,
            start_deadline: None,
        }
    }
}

impl ServerConfig {
    /// Fixes when a starting service stops waiting for its dependencies:
    /// `server.dependency_wait_seconds` from now (kept when already fixed).
    pub fn start_waiting(&mut self) {
        if self.start_deadline.is_none() {
            self.start_deadline = Some(
                tokio::time::Instant::now()
                    + std::time::Duration::from_secs(self.dependency_wait_seconds),
            );
        }
    }

    /// The connection layer's bounds.
    pub fn connection_limits(&self) -> crate::http::server::ConnectionLimits {
        crate::http::server::ConnectionLimits {
            max_connections: self.max_connections,
            header_read_timeout: std::time::Duration::from_millis(self.header_read_timeout_ms),
            keep_alive_timeout: std::time::Duration::from_millis(self.keep_alive_timeout_ms),
            max_header_bytes: self.max_header_bytes,
            max_requests_per_connection: self.max_requests_per_connection,
        }
    }
}

/// Where the service keeps its records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageKind {
    /// In this process only, lost on restart (tests and demos).
    Memory,
    /// The embedded durable store: one SQLite file under the data
    /// directory (the default: nothing to install, kept across restarts).
    Sqlite,
    /// A MongoDB replica set or sharded cluster, for more than one instance.
    Mongodb,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub kind: StorageKind,
    /// The SQLite file (`kind = "sqlite"`); defaults to
    /// `<data_dir>/cardbind.sqlite3`.
    pub path: Option<PathBuf>,
    /// SQLite page cache of the one writing connection, MiB (`kind =
    /// "sqlite"`); each reading connection has 1 MiB.
    pub cache_mib: u32,
    /// The SQLite WAL's size, MiB (`kind = "sqlite"`): past it the writer
    /// copies what is left of it into the file and it starts over, so the
    /// WAL file stays about this size (16 to 16384). Each start-over holds
    /// the writer up for a moment (120–175 ms measured with random user
    /// ids); a larger WAL starts over less often, and takes longer to read
    /// at the next open after a crash.
    pub wal_mib: u32,
    /// The SQLite file grows to at most this many MiB, `0` for no bound
    /// (`kind = "sqlite"`). Past it writes answer `503 storage_unavailable`
    /// until deletions (a retention purge, an erasure) free pages or the
    /// bound is raised; reads go on. Set it below the disk's free space so
    /// that a full file never fills the disk (the WAL, about `wal_mib`, is
    /// not counted).
    pub max_size_mib: u32,
    /// MongoDB connection string: replica set, TLS and credentials go here
    /// (`mongodb://user:pass@h1,h2,h3/?replicaSet=rs0&tls=true`); prefer
    /// `CARDBIND__STORAGE__URI` from the environment for secrets.
    pub uri: String,
    pub database: String,
    /// Bound on every storage operation, milliseconds.
    pub timeout_ms: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            kind: StorageKind::Sqlite,
            path: None,
            cache_mib: 16,
            wal_mib: 1024,
            max_size_mib: 0,
            uri: "mongodb://127.0.0.1:27017/".into(),
            database: "cardbind".into(),
            timeout_ms: 3000,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeysKind {
    Local,
    AwsKms,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    pub kind: KeysKind,
    /// Local master key file (created 0600 on first start); defaults to
    /// `<data_dir>/master.key`.
    pub local_key_file: Option<PathBuf>,
    /// KMS key id, ARN or `alias/…`.
    pub kms_key_id: String,
    pub kms_region: String,
    /// Endpoint override (tests, VPC endpoints).
    pub kms_endpoint: Option<String>,
    pub kms_timeout_ms: u64,
    /// Static credentials (tests, emulators). Leave unset in production:
    /// the default AWS chain (environment, profile, instance/task role) is used.
    pub kms_access_key_id: Option<String>,
    pub kms_secret_access_key: Option<String>,
    /// Master keys being rotated away from: used only to unwrap data keys
    /// not yet re-wrapped (`cardbind keys rotate`), never to wrap new ones.
    pub previous_kms_key_ids: Vec<String>,
    pub previous_local_key_files: Vec<PathBuf>,
    /// Per-user data-key cache bounds (0 entries disables the cache).
    pub cache_max_entries: usize,
    pub cache_max_age_seconds: u64,
    pub cache_max_uses: u64,
    /// Branch keys wrap users' data keys and are themselves wrapped by the
    /// master key: how long one is kept unwrapped in memory (seconds; 0 =
    /// never, so every new user costs a master key call). While KMS is down
    /// an instance keeps sealing for new users until it runs out.
    pub branch_key_cache_ttl_seconds: u64,
    /// A new branch key version becomes active after this many days (0 =
    /// only by `cardbind keys retire-branches --new-version`).
    pub branch_key_rotation_days: u64,
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig {
            kind: KeysKind::Local,
            local_key_file: None,
            kms_key_id: String::new(),
            kms_region: "us-east-1".into(),
            kms_endpoint: None,
            kms_timeout_ms: 5000,
            kms_access_key_id: None,
            kms_secret_access_key: None,
            previous_kms_key_ids: Vec::new(),
            previous_local_key_files: Vec::new(),
            cache_max_entries: 10_000,
            cache_max_age_seconds: 300,
            cache_max_uses: 10_000,
            branch_key_cache_ttl_seconds: 600,
            branch_key_rotation_days: 30,
        }
    }
}
