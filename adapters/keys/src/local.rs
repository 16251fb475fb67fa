//! A master key kept in a file on the local disk (the embedded default).

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use async_trait::async_trait;
use cardbind_ports::error::KeyError;
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroize;

use crate::datakey::{DataKey, DATA_KEY_LEN};
use crate::master::MasterKey;

/// Wrapped-key format version of the local master key.
const WRAP_V1: u8 = 0x01;
const NONCE_LEN: usize = 12;
const WRAPPED_LEN: usize = 1 + NONCE_LEN + DATA_KEY_LEN + 16;
const WRAP_AAD_LABEL: &[u8] = b"cardbind/wrap/v1\0";

/// A 32-byte master key from a file (`master.key` in the data directory),
/// created there with mode 0600 on first start.
///
/// It wraps data keys with AES-256-GCM itself; a wrapped key is 61 bytes:
/// `0x01 ‖ nonce (12) ‖ ciphertext of the data key (32) ‖ tag (16)`, with
/// associated data `"cardbind/wrap/v1" 0x00 ‖ u32 BE len ‖ key id ‖ u32 BE
/// len ‖ owner`, so a wrapped key moved to another owner does not unwrap.
///
/// Its [`key_id`](MasterKey::key_id) is `local:` and 16 hex digits of
/// HMAC-SHA256(key, "cardbind/local-master-key-id"): stable for one key,
/// different for another, and saying nothing usable about the key.
pub struct LocalMasterKey {
    key: DataKey,
    id: String,
}

impl fmt::Debug for LocalMasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalMasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> KeyError {
    KeyError::Unavailable(format!("{what} {}: {e}", path.display()))
}

impl LocalMasterKey {
    /// The key file's name inside the data directory.
    pub const FILE_NAME: &'static str = "master.key";

    /// Reads `data_dir/master.key`, or creates it (mode 0600, the directory
    /// too if missing) with a fresh random key when absent.
    pub fn load_or_create(data_dir: &Path) -> Result<LocalMasterKey, KeyError> {
        fs::create_dir_all(data_dir)
            .map_err(|e| io_err("cannot create data directory", data_dir, e))?;
        LocalMasterKey::load_or_create_file(&data_dir.join(Self::FILE_NAME))
    }

    /// Reads the key file at `path`, or creates it as in
    /// [`load_or_create`](Self::load_or_create). Safe against a concurrent
    /// creator: the file appears complete or not at all.
    pub fn load_or_create_file(path: &Path) -> Result<LocalMasterKey, KeyError> {
        match LocalMasterKey::load(path) {
            Err(KeyError::Unavailable(_)) if !path.exists() => {}
            other => return other,
        }
        let key = DataKey::generate();
        // Write the whole key to a private temporary file, then link it into
        // place: linking fails if another process created the key first.
        let tmp = temp_path(path);
        let written = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(key.expose())?;
            f.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("cannot write master key file", &tmp, e));
        }
        let linked = fs::hard_link(&tmp, path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                // The directory entry made durable before anything is
                // sealed under the key: after a power loss, a store
                // holding keys wrapped by it with no key file beside it
                // would open nothing again.
                let dir = match path.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d,
                    _ => Path::new("."),
                };
                fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| io_err("cannot make the new master key durable", dir, e))?;
                tracing::info!(path = %path.display(), "created a new local master key");
                Ok(LocalMasterKey::from_key(key))
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => LocalMasterKey::load(path),
            Err(e) => Err(io_err("cannot create master key file", path, e)),
        }
    }

    /// Reads an existing key file (exactly 32 bytes).
    pub fn load(path: &Path) -> Result<LocalMasterKey, KeyError> {
        let mut f =
            fs::File::open(path).map_err(|e| io_err("cannot open master key file", path, e))?;
        if let Ok(meta) = f.metadata() {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "master key file is readable by group or others; it should be mode 0600");
            }
        }
        let mut buf = Vec::with_capacity(DATA_KEY_LEN + 1);
        // Read at most one byte more than a key, to detect a wrong file.
        let read = Read::by_ref(&mut f)
            .take(DATA_KEY_LEN as u64 + 1)
            .read_to_end(&mut buf);
        if let Err(e) = read {
            buf.zeroize();
            return Err(io_err("cannot read master key file", path, e));
        }
        if buf.len() != DATA_KEY_LEN {
            buf.zeroize();
            return Err(KeyError::Refused(format!(
                "master key file {} must hold exactly {DATA_KEY_LEN} bytes",
                path.display()
            )));
        }
        Ok(LocalMasterKey::from_key(DataKey::from_vec(buf)?))
    }

    /// A master key from its bytes (tests, or keys from a secret manager).
    pub fn from_key(key: DataKey) -> LocalMasterKey {
        let id = key_id_of(&key);
        LocalMasterKey { key, id }
    }

    /// A fresh random master key kept only in memory.
    pub fn generate() -> LocalMasterKey {
        LocalMasterKey::from_key(DataKey::generate())
    }

    fn aad(&self, owner: &str) -> Vec<u8> {
        let mut a = Vec::with_capacity(WRAP_AAD_LABEL.len() + 8 + self.id.len() + owner.len());
        a.extend_from_slice(WRAP_AAD_LABEL);
        for part in [self.id.as_bytes(), owner.as_bytes()] {
            a.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
            a.extend_from_slice(part);
        }
        a
    }

    fn wrap(&self, owner: &str, key: &DataKey) -> Result<Vec<u8>, KeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let aad = self.aad(owner);
        let ct = Aes256Gcm::new(self.key.expose().into())
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: key.expose(),
                    aad: &aad,
                },
            )
            .map_err(|_| KeyError::Refused("data key wrapping failed".into()))?;
        let mut out = Vec::with_capacity(WRAPPED_LEN);
        out.push(WRAP_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    fn unwrap_key(&self, owner: &str, wrapped: &[u8]) -> Result<DataKey, KeyError> {
        if wrapped.len() != WRAPPED_LEN || wrapped.first() != Some(&WRAP_V1) {
            return Err(KeyError::Refused("malformed wrapped data key".into()));
        }
        let (nonce, ct) = wrapped[1..].split_at(NONCE_LEN);
        let aad = self.aad(owner);
        let pt = Aes256Gcm::new(self.key.expose().into())
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
            .map_err(|_| {
                KeyError::Refused(format!(
                    "data key does not unwrap with local master key {} (another master key, or another owner)",
                    self.id
                ))
            })?;
        DataKey::from_vec(pt)
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let mut suffix = [0u8; 8];
    OsRng.fill_bytes(&mut suffix);
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".tmp-{}", hex::encode(suffix)));
    path.with_file_name(name)
}

fn key_id_of(key: &DataKey) -> String {
    match <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key.expose()) {
        Ok(mut mac) => {
            mac.update(b"cardbind/local-master-key-id");
            let tag = mac.finalize().into_bytes();
            format!("local:{}", hex::encode(&tag[..8]))
        }
        // HMAC takes keys of any length; this cannot happen.
        Err(_) => "local:unknown".to_owned(),
    }
}

#[async_trait]
impl MasterKey for LocalMasterKey {
    fn key_id(&self) -> &str {
        &self.id
    }

    async fn generate_data_key(&self, owner: &str) -> Result<(DataKey, Vec<u8>), KeyError> {
        let key = DataKey::generate();
        let wrapped = self.wrap(owner, &key)?;
        Ok((key, wrapped))
    }

    async fn decrypt_data_key(&self, owner: &str, wrapped: &[u8]) -> Result<DataKey, KeyError> {
        self.unwrap_key(owner, wrapped)
    }

    async fn re_encrypt(
        &self,
        owner: &str,
        wrapped: &[u8],
        to: &Self,
    ) -> Result<Vec<u8>, KeyError> {
        let key = self.unwrap_key(owner, wrapped)?;
        to.wrap(owner, &key)
    }
}
