//! The service's dependencies under the harness's control: a FerretDB of
//! its own (killed and restarted with `scripts/ferretdb-ctl.sh`), and a TCP
//! proxy in front of the KMS emulator that can be cut and restored.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::sync::watch;

/// A FerretDB the harness owns: started under `CARDBIND_TEST_SERVICES_DIR`
/// (or `dir`) with `CARDBIND_TEST_FERRETDB_CTL`, exported by
/// `scripts/test-services.sh`.
pub struct OwnFerretDb {
    ctl: String,
    pub dir: PathBuf,
    pub port: u16,
}

/// A port that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl OwnFerretDb {
    /// `None` when the control script is not exported (not under
    /// `scripts/test-services.sh`).
    pub fn available() -> bool {
        std::env::var("CARDBIND_TEST_FERRETDB_CTL").is_ok_and(|v| !v.is_empty())
            && std::env::var("CARDBIND_TEST_FERRETDB_BIN").is_ok_and(|v| !v.is_empty())
    }

    pub async fn start(base: &std::path::Path) -> anyhow::Result<OwnFerretDb> {
        let ctl = std::env::var("CARDBIND_TEST_FERRETDB_CTL").context(
            "CARDBIND_TEST_FERRETDB_CTL is not set (run under scripts/test-services.sh)",
        )?;
        let base = std::env::var_os("CARDBIND_TEST_SERVICES_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| base.to_path_buf());
        let dir = base.join(format!(
            "faults-ferretdb-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ));
        let mut last = String::new();
        for _ in 0..3 {
            let f = OwnFerretDb {
                ctl: ctl.clone(),
                dir: dir.clone(),
                port: free_port()?,
            };
            match f.ctl("start").await {
                Ok(()) => return Ok(f),
                Err(e) => last = e.to_string(),
            }
        }
        bail!("could not start a FerretDB of our own: {last}")
    }

    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/", self.port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("ferretdb.log")
    }

    async fn ctl(&self, action: &str) -> anyhow::Result<()> {
        let mut cmd = tokio::process::Command::new("bash");
        cmd.arg(&self.ctl).arg(action).arg(&self.dir);
        if action == "start" {
            cmd.arg(self.port.to_string());
        }
        let out = cmd.output().await?;
        if !out.status.success() {
            bail!(
                "ferretdb-ctl {action}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// SIGKILL: a crash.
    pub async fn kill(&self) -> anyhow::Result<()> {
        self.ctl("kill").await
    }

    /// Starts it again on the same port and data (the port may linger).
    pub async fn restart(&self) -> anyhow::Result<()> {
        let mut last = String::new();
        for _ in 0..20 {
            match self.ctl("start").await {
                Ok(()) => return Ok(()),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        bail!("FerretDB did not restart on port {}: {last}", self.port)
    }

    pub async fn stop(&self) {
        let _ = self.ctl("stop").await;
    }
}

/// A TCP proxy on a fixed local port. `cut` closes the listener and resets
/// every proxied connection (what the service sees when the process behind
/// it dies); `restore` listens again on the same port.
pub struct Proxy {
    pub port: u16,
    up: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> anyhow::Result<Proxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (up, rx) = watch::channel(true);
        let task = tokio::spawn(run_proxy(listener, port, target, rx));
        Ok(Proxy { port, up, task })
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn cut(&self) {
        let _ = self.up.send(false);
    }

    pub fn restore(&self) {
        let _ = self.up.send(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run_proxy(
    first: tokio::net::TcpListener,
    port: u16,
    target: SocketAddr,
    mut up: watch::Receiver<bool>,
) {
    let mut listener = Some(first);
    let conns = Arc::new(tokio::sync::Mutex::new(tokio::task::JoinSet::new()));
    loop {
        match listener.take() {
            Some(l) => {
                tokio::select! {
                    r = l.accept() => {
                        listener = Some(l);
                        if let Ok((mut inbound, _)) = r {
                            let mut set = conns.lock().await;
                            while set.try_join_next().is_some() {}
                            set.spawn(async move {
                                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                                }
                            });
                        }
                    }
                    r = up.changed() => {
                        if r.is_err() { return; }
                        if *up.borrow() {
                            listener = Some(l);
                        } else {
                            // Closing the listener and dropping every copy
                            // resets the connections: connection refused
                            // from now on, errors on the open ones.
                            drop(l);
                            conns.lock().await.abort_all();
                        }
                    }
                }
            }
            None => {
                if up.changed().await.is_err() {
                    return;
                }
                if *up.borrow() {
                    for _ in 0..100 {
                        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                            Ok(l) => {
                                listener = Some(l);
                                break;
                            }
                            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    }
                }
            }
        }
    }
}

/// Creates a symmetric key in the KMS emulator at `endpoint` (moto routes
/// by the credential scope and does not check the signature).
pub async fn create_kms_key(endpoint: &str) -> anyhow::Result<String> {
    let r = reqwest::Client::new()
        .post(endpoint)
        .header("X-Amz-Target", "TrentService.CreateKey")
        .header("Content-Type", "application/x-amz-json-1.1")
        .header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=00",
        )
        .body(r#"{"Description":"cardbind-faults"}"#)
        .send()
        .await
        .context("KMS CreateKey")?;
    let v: serde_json::Value = r.json().await.context("KMS CreateKey answer")?;
    v["KeyMetadata"]["KeyId"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no KeyId in {v}"))
}

/// `host:port` of `http://host:port[/]`.
pub fn socket_addr_of(url: &str) -> anyhow::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    let hostport = url
        .trim_start_matches("http://")
        .trim_start_matches("mongodb://")
        .trim_end_matches('/');
    hostport
        .to_socket_addrs()?
        .next()
        .with_context(|| format!("no address for {url}"))
}
