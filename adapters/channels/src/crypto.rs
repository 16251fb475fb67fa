//! Small signing, verifying and cipher helpers shared by the channels.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use base64::Engine as _;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::sha2::Sha256;
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::{RsaPrivateKey, RsaPublicKey};

pub(crate) const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// SHA256withRSA (PKCS#1 v1.5) signer. Its `Debug` prints nothing secret.
#[derive(Clone)]
pub(crate) struct RsaSigner(SigningKey<Sha256>);

impl RsaSigner {
    pub(crate) fn new(key: RsaPrivateKey) -> RsaSigner {
        RsaSigner(SigningKey::<Sha256>::new(key))
    }

    /// Standard base64 of the signature of `message`.
    pub(crate) fn sign_b64(&self, message: &[u8]) -> Result<String, String> {
        let sig = self
            .0
            .try_sign(message)
            .map_err(|_| "signing failed".to_owned())?;
        Ok(B64.encode(sig.to_bytes()))
    }
}

impl std::fmt::Debug for RsaSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RsaSigner(<redacted>)")
    }
}

/// SHA256withRSA (PKCS#1 v1.5) verifier.
#[derive(Clone)]
pub(crate) struct RsaVerifier {
    key: VerifyingKey<Sha256>,
    public: RsaPublicKey,
}

impl RsaVerifier {
    pub(crate) fn new(key: RsaPublicKey) -> RsaVerifier {
        RsaVerifier {
            key: VerifyingKey::<Sha256>::new(key.clone()),
            public: key,
        }
    }

    /// Whether `signature_b64` (standard base64) signs `message`. Any
    /// malformed input is simply `false`.
    pub(crate) fn verify_b64(&self, message: &[u8], signature_b64: &str) -> bool {
        let Ok(raw) = B64.decode(signature_b64.trim().as_bytes()) else {
            return false;
        };
        let Ok(sig) = Signature::try_from(raw.as_slice()) else {
            return false;
        };
        self.key.verify(message, &sig).is_ok()
    }

    pub(crate) fn public_key(&self) -> &RsaPublicKey {
        &self.public
    }
}

impl std::fmt::Debug for RsaVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RsaVerifier")
    }
}

/// RSA-OAEP (SHA-1, MGF1-SHA-1) encryption, base64 of the ciphertext.
pub(crate) fn rsa_oaep_sha1_encrypt_b64(
    key: &RsaPublicKey,
    plain: &[u8],
) -> Result<String, String> {
    let mut rng = rand::thread_rng();
    let ct = key
        .encrypt(&mut rng, rsa::Oaep::new::<sha1::Sha1>(), plain)
        .map_err(|_| "RSA-OAEP encryption failed".to_owned())?;
    Ok(B64.encode(ct))
}

type Aes128CbcEnc = cbc::Encryptor<aes::Aes128>;
type Aes128CbcDec = cbc::Decryptor<aes::Aes128>;

/// AES-128-CBC, zero IV, PKCS#7, base64 (Alipay content encryption).
pub(crate) fn aes128_cbc_encrypt_b64(key: &[u8; 16], plain: &[u8]) -> String {
    let iv = [0u8; 16];
    let ct = Aes128CbcEnc::new(key.into(), (&iv).into()).encrypt_padded_vec_mut::<Pkcs7>(plain);
    B64.encode(ct)
}

/// Inverse of [`aes128_cbc_encrypt_b64`]; `None` on any malformed input.
pub(crate) fn aes128_cbc_decrypt_b64(key: &[u8; 16], b64: &str) -> Option<Vec<u8>> {
    let ct = B64.decode(b64.trim().as_bytes()).ok()?;
    if ct.is_empty() || !ct.len().is_multiple_of(16) {
        return None;
    }
    let iv = [0u8; 16];
    Aes128CbcDec::new(key.into(), (&iv).into())
        .decrypt_padded_vec_mut::<Pkcs7>(&ct)
        .ok()
}

/// AEAD_AES_256_GCM decryption of a WeChat Pay resource: `ciphertext_b64`
/// holds the ciphertext followed by the 16-byte tag; `nonce` must be 12
/// bytes. `None` on any malformed or unauthenticated input.
pub(crate) fn aes256_gcm_decrypt(
    key: &[u8; 32],
    nonce: &[u8],
    associated_data: &[u8],
    ciphertext_b64: &str,
) -> Option<Vec<u8>> {
    if nonce.len() != 12 {
        return None;
    }
    let ct = B64.decode(ciphertext_b64.trim().as_bytes()).ok()?;
    if ct.len() < 16 {
        return None;
    }
    let cipher = aes_gcm::Aes256Gcm::new_from_slice(key).ok()?;
    cipher
        .decrypt(
            aes_gcm::Nonce::from_slice(nonce),
            Payload {
                msg: &ct,
                aad: associated_data,
            },
        )
        .ok()
}

/// A random string of `len` ASCII letters and digits.
pub(crate) fn nonce_str(len: usize) -> String {
    use rand::distributions::Alphanumeric;
    use rand::Rng as _;
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}
