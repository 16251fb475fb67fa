//! Loading RSA keys.
//!
//! A key setting is either the PEM text itself (it starts with
//! `-----BEGIN`), or a path to a PEM file, or (as the Alipay console hands
//! keys out) the bare base64 of the DER encoding. Accepted encodings:
//!
//! * private keys: PKCS#8 (`BEGIN PRIVATE KEY`) and PKCS#1
//!   (`BEGIN RSA PRIVATE KEY`);
//! * public keys: SPKI (`BEGIN PUBLIC KEY`), PKCS#1
//!   (`BEGIN RSA PUBLIC KEY`), and the key of an X.509 certificate
//!   (`BEGIN CERTIFICATE`, as WeChat Pay hands out its platform
//!   certificates; [`load_public_key_and_serial`] also gives its serial). The
//!   certificate is a container here: its chain and dates are not checked
//!   (the key is trusted because the operator installed it, as a bare
//!   public key would be).
//!
//! Errors never quote the key material.

use base64::Engine as _;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::{RsaPrivateKey, RsaPublicKey};
use x509_cert::der::{DecodePem, Encode};
use x509_cert::Certificate;

const CERTIFICATE_PEM: &str = "-----BEGIN CERTIFICATE-----";

enum Material {
    Pem(String),
    Der(Vec<u8>),
}

fn read_material(source: &str) -> Result<Material, String> {
    let trimmed = source.trim();
    if trimmed.is_empty() {
        return Err("empty key setting".into());
    }
    if trimmed.starts_with("-----BEGIN") {
        return Ok(Material::Pem(trimmed.to_owned()));
    }
    let path = std::path::Path::new(trimmed);
    if path.is_file() {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read key file {}: {}", path.display(), e.kind()))?;
        let text = text.trim().to_owned();
        if text.starts_with("-----BEGIN") {
            return Ok(Material::Pem(text));
        }
        return decode_bare(&text)
            .ok_or_else(|| format!("key file {} holds no PEM key", path.display()));
    }
    decode_bare(trimmed)
        .ok_or_else(|| "not PEM text, not a readable file, not base64 DER".to_owned())
}

fn decode_bare(text: &str) -> Option<Material> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.len() < 64 {
        return None;
    }
    base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .ok()
        .map(Material::Der)
}

/// Loads an RSA private key (PKCS#8 or PKCS#1) from PEM text, a PEM file
/// path or bare base64 DER.
pub fn load_private_key(source: &str) -> Result<RsaPrivateKey, String> {
    match read_material(source)? {
        Material::Pem(pem) => RsaPrivateKey::from_pkcs8_pem(&pem)
            .or_else(|_| RsaPrivateKey::from_pkcs1_pem(&pem))
            .map_err(|_| "not a PKCS#8 or PKCS#1 RSA private key".to_owned()),
        Material::Der(der) => RsaPrivateKey::from_pkcs8_der(&der)
            .or_else(|_| RsaPrivateKey::from_pkcs1_der(&der))
            .map_err(|_| "not a PKCS#8 or PKCS#1 RSA private key".to_owned()),
    }
}

/// Loads an RSA public key (SPKI, PKCS#1 or an X.509 certificate's) from
/// PEM text, a PEM file path or bare base64 DER.
pub fn load_public_key(source: &str) -> Result<RsaPublicKey, String> {
    load_public_key_and_serial(source).map(|(key, _)| key)
}

/// As [`load_public_key`], with the serial number of the certificate the
/// key came in (upper-case hex without leading zero bytes, as WeChat Pay
/// writes serials); `None` when `source` is a key, not a certificate. The
/// source is read and parsed once.
pub fn load_public_key_and_serial(source: &str) -> Result<(RsaPublicKey, Option<String>), String> {
    match read_material(source)? {
        Material::Pem(pem) if pem.starts_with(CERTIFICATE_PEM) => {
            let cert = Certificate::from_pem(pem.as_bytes())
                .map_err(|_| "not an X.509 certificate".to_owned())?;
            let spki = cert
                .tbs_certificate
                .subject_public_key_info
                .to_der()
                .map_err(|_| "the certificate's public key does not encode".to_owned())?;
            let key = RsaPublicKey::from_public_key_der(&spki)
                .map_err(|_| "the certificate's key is not an RSA public key".to_owned())?;
            let bytes = cert.tbs_certificate.serial_number.as_bytes();
            let significant = match bytes.iter().position(|b| *b != 0) {
                Some(i) => &bytes[i..],
                None => &bytes[bytes.len().saturating_sub(1)..],
            };
            Ok((key, Some(hex::encode_upper(significant))))
        }
        Material::Pem(pem) => RsaPublicKey::from_public_key_pem(&pem)
            .or_else(|_| RsaPublicKey::from_pkcs1_pem(&pem))
            .map(|key| (key, None))
            .map_err(|_| "not an SPKI or PKCS#1 RSA public key".to_owned()),
        Material::Der(der) => RsaPublicKey::from_public_key_der(&der)
            .or_else(|_| RsaPublicKey::from_pkcs1_der(&der))
            .map(|key| (key, None))
            .map_err(|_| "not an SPKI or PKCS#1 RSA public key".to_owned()),
    }
}
