//! KMS (moto): creating a key and pointing a config at it; a TCP proxy a
//! test can cut and restore to make a dependency vanish.

use std::time::Duration;

use cardbind::config::Config;
use serde_json::Value;

/// Creates a symmetric key in the KMS emulator at `endpoint` and returns
/// its id. moto routes by the credential scope of `Authorization` and does
/// not check the signature.
pub async fn create_kms_key(endpoint: &str) -> String {
    let r = reqwest::Client::new()
        .post(endpoint)
        .header("X-Amz-Target", "TrentService.CreateKey")
        .header("Content-Type", "application/x-amz-json-1.1")
        .header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=00",
        )
        .body(r#"{"Description":"cardbind-tests"}"#)
        .send()
        .await
        .expect("KMS CreateKey request");
    let v: Value = r.json().await.expect("KMS CreateKey answer");
    v["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap_or_else(|| panic!("no KeyId in {v}"))
        .to_owned()
}

/// Points `cfg` at AWS KMS (the emulator) with static test credentials.
pub fn use_kms(cfg: &mut Config, endpoint: &str, key_id: &str) {
    cfg.keys.kind = cardbind::config::KeysKind::AwsKms;
    cfg.keys.kms_endpoint = Some(endpoint.to_owned());
    cfg.keys.kms_key_id = key_id.to_owned();
    cfg.keys.kms_region = "us-east-1".into();
    cfg.keys.kms_access_key_id = Some("testing".into());
    cfg.keys.kms_secret_access_key = Some("testing".into());
    cfg.keys.kms_timeout_ms = 2000;
}

/// A TCP proxy on a fixed local port that a test can cut and restore, to
/// make a dependency vanish and come back without touching the real one.
pub struct TcpProxy {
    pub port: u16,
    target: std::net::SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TcpProxy {
    pub async fn start(target: std::net::SocketAddr) -> TcpProxy {
        let mut p = TcpProxy {
            port: 0,
            target,
            task: None,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy listen");
        p.port = listener.local_addr().expect("addr").port();
        p.serve(listener);
        p
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let target = self.target;
        self.task = Some(tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                conns.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
    }

    /// Closes the listener and every proxied connection.
    pub async fn cut(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    /// Listens again on the same port.
    pub async fn restore(&mut self) {
        let mut last = String::new();
        for _ in 0..50 {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => {
                    self.serve(l);
                    return;
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("proxy could not listen on {} again: {last}", self.port);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// `host:port` of an `http://host:port[/]` URL.
pub fn socket_addr_of(url: &str) -> std::net::SocketAddr {
    let hostport = url
        .trim_start_matches("http://")
        .trim_start_matches("mongodb://")
        .trim_end_matches('/');
    use std::net::ToSocketAddrs;
    hostport
        .to_socket_addrs()
        .expect("resolvable")
        .next()
        .expect("an address")
}
