//! The sealed format: how one field's ciphertext is laid out.
//!
//! # Byte layout, format version 1
//!
//! ```text
//! offset      size  content
//! 0           1     format version, 0x01
//! 1           1     n = length of the owner id in bytes (1..=255)
//! 2           n     owner id, UTF-8 (the user id, or a reserved `@…` name)
//! 2+n         8     key generation: the data key's creation instant,
//!                   Unix milliseconds, signed 64-bit big-endian
//! 10+n        12    nonce (random 96 bits, fresh for every seal)
//! 22+n        m+16  AES-256-GCM ciphertext of the m plaintext bytes,
//!                   followed by the 16-byte tag
//! ```
//!
//! The header (bytes `0 .. 10+n`) names the data key: its owner and its
//! generation. Owner and generation are enough because an owner has at most
//! one data key at a time; re-wrapping it under a new master key (rotation)
//! keeps the generation, and a key created after an erasure gets a new one.
//!
//! # Associated data
//!
//! The GCM associated data is
//!
//! ```text
//! "cardbind/seal/v1" 0x00
//! header (bytes 0 .. 10+n, so the version, owner and key generation)
//! u32 BE length of the record id,  record id bytes
//! u32 BE length of the field name, field name bytes
//! ```
//!
//! so a ciphertext copied to another owner, record or field, or with any
//! header byte changed, fails authentication and is refused. Nothing in the
//! format is trusted before the tag has been checked except to pick the key.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use cardbind_ports::error::KeyError;
use cardbind_ports::keys::SealContext;
use rand::rngs::OsRng;
use rand::RngCore;

use crate::datakey::DataKey;

/// The only format version written and read today.
pub const FORMAT_V1: u8 = 0x01;
/// Nonce length (96 bits).
pub const NONCE_LEN: usize = 12;
/// GCM tag length.
pub const TAG_LEN: usize = 16;

const AAD_LABEL: &[u8] = b"cardbind/seal/v1\0";

/// A sealed value split into its parts (nothing authenticated yet).
#[derive(Debug)]
pub struct Parsed<'a> {
    /// The owner named in the header.
    pub owner: &'a str,
    /// The key generation named in the header.
    pub generation: i64,
    header: &'a [u8],
    nonce: &'a [u8],
    ciphertext: &'a [u8],
}

fn refused(msg: &str) -> KeyError {
    KeyError::Refused(msg.to_owned())
}

fn header(owner: &str, generation: i64) -> Result<Vec<u8>, KeyError> {
    let n = u8::try_from(owner.len())
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| refused("owner id must be 1 to 255 bytes"))?;
    let mut h = Vec::with_capacity(10 + owner.len());
    h.push(FORMAT_V1);
    h.push(n);
    h.extend_from_slice(owner.as_bytes());
    h.extend_from_slice(&generation.to_be_bytes());
    Ok(h)
}

fn aad(header: &[u8], context: &SealContext) -> Vec<u8> {
    let record = context.record.as_bytes();
    let field = context.field.as_bytes();
    let mut a = Vec::with_capacity(AAD_LABEL.len() + header.len() + 8 + record.len() + field.len());
    a.extend_from_slice(AAD_LABEL);
    a.extend_from_slice(header);
    // Lengths fit: record ids and field names are short strings; saturate
    // rather than wrap if one ever is not.
    a.extend_from_slice(
        &u32::try_from(record.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    a.extend_from_slice(record);
    a.extend_from_slice(&u32::try_from(field.len()).unwrap_or(u32::MAX).to_be_bytes());
    a.extend_from_slice(field);
    a
}

fn cipher(key: &DataKey) -> Aes256Gcm {
    Aes256Gcm::new(key.expose().into())
}

/// Seals `plaintext` with `key` (of `owner`, generation `generation`),
/// bound to `context`. See the module docs for the layout.
pub fn seal(
    key: &DataKey,
    owner: &str,
    generation: i64,
    context: &SealContext,
    plaintext: &[u8],
) -> Result<Vec<u8>, KeyError> {
    let header = header(owner, generation)?;
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    let aad = aad(&header, context);
    let ct = cipher(key)
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .map_err(|_| refused("encryption failed"))?;
    let mut out = header;
    out.reserve(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Splits a sealed value into its parts. Refuses anything malformed.
pub fn parse(sealed: &[u8]) -> Result<Parsed<'_>, KeyError> {
    let (&version, rest) = sealed
        .split_first()
        .ok_or_else(|| refused("empty sealed value"))?;
    if version != FORMAT_V1 {
        return Err(refused("unknown sealed format version"));
    }
    let (&n, rest) = rest
        .split_first()
        .ok_or_else(|| refused("truncated sealed value"))?;
    let n = usize::from(n);
    if n == 0 || rest.len() < n + 8 + NONCE_LEN + TAG_LEN {
        return Err(refused("truncated sealed value"));
    }
    let (owner, rest) = rest.split_at(n);
    let owner = std::str::from_utf8(owner).map_err(|_| refused("malformed sealed value"))?;
    let (gen, rest) = rest.split_at(8);
    let mut gen_bytes = [0u8; 8];
    gen_bytes.copy_from_slice(gen);
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    Ok(Parsed {
        owner,
        generation: i64::from_be_bytes(gen_bytes),
        header: &sealed[..2 + n + 8],
        nonce,
        ciphertext,
    })
}

/// Opens a parsed value with `key`, checking it was sealed for `context`.
/// Any change to any byte, or another context, gives `Refused`.
pub fn open(
    key: &DataKey,
    parsed: &Parsed<'_>,
    context: &SealContext,
) -> Result<Vec<u8>, KeyError> {
    let aad = aad(parsed.header, context);
    cipher(key)
        .decrypt(
            Nonce::from_slice(parsed.nonce),
            Payload {
                msg: parsed.ciphertext,
                aad: &aad,
            },
        )
        .map_err(|_| {
            refused(
                "authentication failed (tampered, or sealed for another owner, record or field)",
            )
        })
}
