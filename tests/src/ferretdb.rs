//! A FerretDB of the test's own, that it may stop and restart without
//! touching the shared one.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::required_env;

/// One FerretDB instance a test may stop and restart without touching the
/// shared one: started with `CARDBIND_TEST_FERRETDB_CTL` when exported, or
/// from `CARDBIND_TEST_FERRETDB_BIN` directly.
pub struct OwnFerretDb {
    dir: PathBuf,
    port: u16,
    bin: String,
    ctl: Option<String>,
    child: Option<std::process::Child>,
    _tmp: Option<tempfile::TempDir>,
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("addr").port()
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

impl OwnFerretDb {
    /// Starts one; `None` (skip) when no FerretDB binary is known.
    pub async fn start() -> Option<OwnFerretDb> {
        let bin = required_env(
            "CARDBIND_TEST_FERRETDB_BIN",
            "this test starts and stops a FerretDB of its own",
        )?;
        let ctl = std::env::var("CARDBIND_TEST_FERRETDB_CTL")
            .ok()
            .filter(|s| !s.is_empty());
        let (dir, tmp) = match std::env::var("CARDBIND_TEST_SERVICES_DIR")
            .ok()
            .filter(|s| !s.is_empty())
        {
            Some(base) => (
                PathBuf::from(base).join(format!("own-ferretdb-{}", uuid::Uuid::new_v4().simple())),
                None,
            ),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("cardbind-ferretdb-")
                    .tempdir()
                    .expect("temp dir");
                (t.path().join("ferretdb"), Some(t))
            }
        };
        std::fs::create_dir_all(&dir).expect("ferretdb dir");
        let mut f = OwnFerretDb {
            dir,
            port: 0,
            bin,
            ctl,
            child: None,
            _tmp: tmp,
        };
        let mut last_err = String::new();
        for _ in 0..3 {
            f.port = free_port();
            match f.launch().await {
                Ok(()) => return Some(f),
                Err(e) => last_err = e,
            }
        }
        panic!("could not start a FerretDB of our own: {last_err}");
    }

    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/", self.port)
    }

    async fn launch(&mut self) -> Result<(), String> {
        if let Some(ctl) = self.ctl.clone() {
            let (dir, port) = (self.dir.clone(), self.port);
            let out = tokio::task::spawn_blocking(move || {
                std::process::Command::new("bash")
                    .arg(ctl)
                    .arg("start")
                    .arg(&dir)
                    .arg(port.to_string())
                    .output()
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
            if out.status.success() {
                return Ok(());
            }
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("ferretdb.log"))
            .map_err(|e| e.to_string())?;
        let child = std::process::Command::new(&self.bin)
            .arg("--handler=sqlite")
            .arg(format!("--sqlite-url=file:{}/", self.dir.display()))
            .arg(format!("--listen-addr=127.0.0.1:{}", self.port))
            .arg("--debug-addr=-")
            .arg(format!("--state-dir={}", self.dir.display()))
            .arg("--telemetry=disable")
            .arg("--log-level=warn")
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .stdin(std::process::Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !port_open(self.port) {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.child = None;
                    return Err(format!("ferretdb exited: {st}"));
                }
            }
            if Instant::now() > deadline {
                self.kill_child();
                return Err("ferretdb did not listen within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    fn kill_child(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM first (an orderly stop), then SIGKILL.
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            for _ in 0..100 {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops it (data kept).
    pub async fn stop(&mut self) {
        if let Some(ctl) = self.ctl.clone() {
            let dir = self.dir.clone();
            let st = tokio::task::spawn_blocking(move || {
                std::process::Command::new("bash")
                    .arg(ctl)
                    .arg("stop")
                    .arg(&dir)
                    .status()
            })
            .await
            .expect("join");
            assert!(
                st.map(|s| s.success()).unwrap_or(false),
                "ferretdb-ctl stop failed"
            );
        } else {
            self.kill_child();
        }
        assert!(!port_open(self.port), "FerretDB still answers after stop");
    }

    /// Starts it again on the same port and data.
    pub async fn restart(&mut self) {
        let mut last = String::new();
        for _ in 0..20 {
            match self.launch().await {
                Ok(()) => return,
                // The port may linger a moment after the stop.
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!("FerretDB did not restart on port {}: {last}", self.port);
    }
}

impl Drop for OwnFerretDb {
    fn drop(&mut self) {
        if let Some(ctl) = &self.ctl {
            let _ = std::process::Command::new("bash")
                .arg(ctl)
                .arg("stop")
                .arg(&self.dir)
                .status();
        }
        self.kill_child();
    }
}
