//! Who may call: bearer token keys, dev tokens, TLS and step-up.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use cardbind_domain::Role;
use cardbind_ports::clock::Clock;

use super::{data_dir, read_file};
use crate::config::{Config, MAX_TOKEN_LIFETIME_SECONDS};
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
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if std::fs::metadata(&file).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
            tracing::warn!(
                path = %file.display(),
                "the bearer token secret file is readable by group or others: anyone who can \
                 read it can mint tokens of any role; it should be mode 0600"
            );
        }
    }
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

/// Refuses a token the service would not take, before anything is made:
/// a service that verifies RS256 tokens (`auth.jwt_public_key_file`) takes
/// none that `cardbind token` can make (HS256, from the dev secret); a
/// subject it does not act for; a lifetime of 0, over a year, or over
/// `auth.max_token_lifetime_seconds`.
pub fn check_dev_token(config: &Config, sub: &str, ttl: u64) -> anyhow::Result<()> {
    if let Some(f) = &config.auth.jwt_public_key_file {
        anyhow::bail!(
            "auth.jwt_public_key_file is set ({}): the service verifies RS256 tokens from your \
             identity provider, and takes no HS256 token `cardbind token` could make; nothing \
             was issued",
            f.display()
        );
    }
    if !crate::http::auth::usable_subject(sub) {
        anyhow::bail!(
            "--sub {sub:?}: the service takes a subject of 1 to 128 visible ASCII characters \
             (no spaces); nothing was issued"
        );
    }
    // The range in force, one message whatever the value: up to the
    // service's bound (auth.max_token_lifetime_seconds), or with no bound
    // set, a year (of 366 days), the largest.
    let max = config.auth.max_token_lifetime_seconds;
    let (upto, why) = if max > 0 {
        (
            max.min(MAX_TOKEN_LIFETIME_SECONDS),
            " (auth.max_token_lifetime_seconds: the service refuses a token that lives longer)",
        )
    } else {
        (MAX_TOKEN_LIFETIME_SECONDS, "")
    };
    if !(1..=upto).contains(&ttl) {
        anyhow::bail!("--ttl {ttl}: must be 1 to {upto} seconds{why}; nothing was issued");
    }
    Ok(())
}

pub fn dev_token(
    config: &Config,
    secret: &[u8],
    sub: &str,
    role: Role,
    ttl: u64,
) -> anyhow::Result<String> {
    check_dev_token(config, sub, ttl)?;
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

/// A warning for a deployment whose instances would not accept each
/// other's tokens: a store shared by several instances (MongoDB) with no
/// token key configured, so each host verifies with the secret it made in
/// its own data directory.
pub fn per_host_token_secret(config: &Config) -> Option<String> {
    let shared = config.storage.kind == crate::config::StorageKind::Mongodb;
    let configured = config.auth.jwt_secret.is_some() || config.auth.jwt_public_key_file.is_some();
    (shared && !configured).then(|| {
        "neither auth.jwt_secret nor auth.jwt_public_key_file is set: this host verifies tokens \
         with a secret of its own (<data_dir>/jwt.secret), so other instances on the same \
         MongoDB refuse the tokens this one accepts; set auth.jwt_secret to one secret for \
         every instance, or auth.jwt_public_key_file to your identity provider's key"
            .to_owned()
    })
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
        max_token_lifetime_seconds: config.auth.max_token_lifetime_seconds,
        request_signing: config
            .auth
            .signed_clients
            .iter()
            // Matched without regard to case (see `AuthSettings`).
            .map(|(k, v)| (k.to_ascii_lowercase(), SigningSecret(v.as_bytes().to_vec())))
            .collect(),
        signature_window_seconds: config.auth.signature_window_seconds,
    })
}

/// TLS settings when the service terminates TLS itself. The certificate
/// and key are checked here, at start-up: the TLS layer reads them only at
/// a client's handshake, so a service started with a bad pair would listen
/// and fail every handshake.
pub fn tls(config: &Config) -> anyhow::Result<Option<poem::listener::RustlsConfig>> {
    match (&config.server.tls_cert_file, &config.server.tls_key_file) {
        (Some(cert_file), Some(key_file)) => {
            let cert = std::fs::read(cert_file).with_context(|| {
                format!("server.tls_cert_file: cannot read {}", cert_file.display())
            })?;
            let key = std::fs::read(key_file).with_context(|| {
                format!("server.tls_key_file: cannot read {}", key_file.display())
            })?;
            check_tls_pair(&cert, cert_file, &key, key_file)?;
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

/// Refuses what every handshake would fail on: a certificate file without
/// a readable PEM certificate, a key file without a usable PEM private key
/// (PKCS#8, PKCS#1 or SEC1), or a key that is not the certificate's.
fn check_tls_pair(
    cert: &[u8],
    cert_file: &Path,
    key: &[u8],
    key_file: &Path,
) -> anyhow::Result<()> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            anyhow!(
                "server.tls_cert_file: {} is not a PEM certificate chain: {e}",
                cert_file.display()
            )
        })?;
    if chain.is_empty() {
        bail!(
            "server.tls_cert_file: {} holds no PEM certificate",
            cert_file.display()
        );
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| {
        anyhow!(
            "server.tls_key_file: {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
            key_file.display()
        )
    })?;
    // The provider the TLS layer (poem's rustls acceptor) signs with.
    let signing = rustls::crypto::aws_lc_rs::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| {
            anyhow!(
                "server.tls_key_file: {} is not a usable private key: {e}",
                key_file.display()
            )
        })?;
    match rustls::sign::CertifiedKey::new(chain, signing).keys_match() {
        Ok(()) => Ok(()),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => bail!(
            "server.tls_key_file: the key in {} is not the key of the certificate in {} \
             (server.tls_cert_file)",
            key_file.display(),
            cert_file.display()
        ),
        // The key cannot tell its public half: nothing to compare.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(()),
        Err(e) => bail!(
            "server.tls_cert_file: the first certificate in {} cannot be used: {e}",
            cert_file.display()
        ),
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
