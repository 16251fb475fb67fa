//! Who may call: bearer token keys, dev tokens, TLS and step-up.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context};
use cardbind_domain::Role;
use cardbind_ports::clock::Clock;

use super::{data_dir, read_file};
use crate::config::Config;
use crate::state::{AuthSettings, JwtKey, SigningSecret};

/// The HS256 secret: configured, or generated once into the data dir.
pub fn jwt_secret(config: &Config) -> anyhow::Result<Vec<u8>> {
    Ok(jwt_secret_made(config)?.0)
}

/// As [`jwt_secret`], with the file the secret was made in by this call
/// (`None`: configured, or already there).
pub fn jwt_secret_made(config: &Config) -> anyhow::Result<(Vec<u8>, Option<PathBuf>)> {
    if let Some(s) = &config.auth.jwt_secret {
        return Ok((s.as_bytes().to_vec(), None));
    }
    let file = data_dir(config)?.join("jwt.secret");
    let mut made = false;
    if !file.exists() {
        use rand::RngCore;
        let mut raw = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut raw);
        made = write_private(&file, hex::encode(raw).as_bytes())
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    // Read back what is stored: another process may have created the file
    // first, and every process (and `cardbind token`) must use that one.
    let s = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let s = s.trim();
    if s.len() < 32 {
        anyhow::bail!(
            "{} holds a secret shorter than 32 characters: delete it (a new one is made) or set auth.jwt_secret",
            file.display()
        );
    }
    Ok((s.as_bytes().to_vec(), made.then_some(file)))
}

/// Writes a new file readable by its owner only; `false` when another
/// process created it first (theirs is kept).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<bool> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(mut f) => f.write_all(bytes).map(|()| true),
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// A token signed with the HS256 secret.
pub fn dev_token(
    config: &Config,
    secret: &[u8],
    sub: &str,
    role: Role,
    ttl: u64,
) -> anyhow::Result<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let claims = serde_json::json!({
        "sub": sub,
        "role": role.as_str(),
        "iss": config.auth.issuer,
        "aud": config.auth.audience,
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
    });
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )?;
    Ok(token)
}

pub fn auth(config: &Config) -> anyhow::Result<AuthSettings> {
    let key = match &config.auth.jwt_public_key_file {
        Some(f) => JwtKey::Rs256Pem(read_file("auth.jwt_public_key_file", f)?),
        None => JwtKey::Hs256(jwt_secret(config)?),
    };
    Ok(AuthSettings {
        key,
        issuer: config.auth.issuer.clone(),
        audience: config.auth.audience.clone(),
        leeway_seconds: config.auth.leeway_seconds,
        request_signing: config
            .auth
            .signed_clients
            .iter()
            .map(|(k, v)| (k.clone(), SigningSecret(v.as_bytes().to_vec())))
            .collect(),
        signature_window_seconds: config.auth.signature_window_seconds,
    })
}

/// TLS settings when the service terminates TLS itself.
pub fn tls(config: &Config) -> anyhow::Result<Option<poem::listener::RustlsConfig>> {
    match (&config.server.tls_cert_file, &config.server.tls_key_file) {
        (Some(cert), Some(key)) => {
            let cert = std::fs::read(cert)
                .with_context(|| format!("server.tls_cert_file: cannot read {}", cert.display()))?;
            let key = std::fs::read(key)
                .with_context(|| format!("server.tls_key_file: cannot read {}", key.display()))?;
            Ok(Some(poem::listener::RustlsConfig::new().fallback(
                poem::listener::RustlsCertificate::new().cert(cert).key(key),
            )))
        }
        (None, None) => Ok(None),
        (Some(_), None) | (None, Some(_)) => Err(anyhow!(
            "server.tls_cert_file and server.tls_key_file go together: set both or neither"
        )),
    }
}

/// The step-up verifier, when `[step_up] enabled`.
pub fn step_up(
    config: &Config,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Option<Arc<dyn cardbind_ports::step_up::StepUpVerifier>>> {
    let s = &config.step_up;
    if !s.enabled {
        return Ok(None);
    }
    let secret = s
        .hmac_secret
        .as_ref()
        .filter(|k| k.len() >= 32)
        .ok_or_else(|| anyhow!("step_up.hmac_secret: required when step_up.enabled"))?;
    Ok(Some(Arc::new(crate::step_up::HmacStepUp::new(
        secret.as_bytes().to_vec(),
        clock,
        s.max_ttl_seconds,
    ))))
}
