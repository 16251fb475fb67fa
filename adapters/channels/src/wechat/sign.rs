//! Request signatures, answer and callback verification, sensitive-field
//! encryption (see the module docs of `wechat`).

use super::*;

/// Why a `Wechatpay-*` signature was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SignatureFault {
    /// A `Wechatpay-*` header is missing.
    Missing,
    /// An empty nonce or a timestamp that is not a number.
    Malformed,
    /// A `WECHATPAY/SIGNTEST/` probe.
    Probe,
    /// The timestamp is further from our clock than the allowed skew.
    Stale,
    /// The serial names no platform key we hold.
    UnknownSerial,
    /// The platform key of that serial does not verify it.
    Mismatch,
}

impl WechatChannel {
    /// The `Authorization` header for a request (exact bytes of `body`).
    pub fn authorization(
        &self,
        method: &str,
        path_and_query: &str,
        body: &str,
    ) -> Result<String, ChannelError> {
        let timestamp = unix_seconds(self.clock.as_ref());
        let nonce = nonce_str(32);
        let message = format!("{method}\n{path_and_query}\n{timestamp}\n{nonce}\n{body}\n");
        let signature = self.signer.sign_b64(message.as_bytes()).map_err(protocol)?;
        Ok(format!(
            "WECHATPAY2-SHA256-RSA2048 mchid=\"{}\",nonce_str=\"{}\",timestamp=\"{}\",serial_no=\"{}\",signature=\"{}\"",
            self.mchid, nonce, timestamp, self.serial_no, signature
        ))
    }

    /// Encrypts a sensitive field (RSA-OAEP, SHA-1) with the platform key;
    /// returns the serial to send as `Wechatpay-Serial` and the base64.
    pub fn encrypt_sensitive(&self, plain: &str) -> Result<(String, String), ChannelError> {
        let ct = rsa_oaep_sha1_encrypt_b64(self.encrypt_with.1.public_key(), plain.as_bytes())
            .map_err(protocol)?;
        Ok((self.encrypt_with.0.clone(), ct))
    }

    /// Verifies `Wechatpay-*` headers (lower-case names) over `body`: any
    /// fault is `InvalidSignature` (what a callback gets).
    pub fn verify_signature(
        &self,
        headers: &BTreeMap<String, String>,
        body: &[u8],
    ) -> Result<(), ChannelError> {
        self.check_signature(headers, body).map_err(|fault| {
            // Refused all the same (a forger can send either), but said
            // at warn: a genuine callback refused for our configuration
            // (a platform key WeChat Pay rotated in and we have not
            // installed, a clock off by minutes) is retried by WeChat Pay
            // for a while and then lost, a termination with it.
            // At most one such line a minute (anyone who reaches the
            // notification URL can send a serial we do not hold).
            match fault {
                SignatureFault::UnknownSerial | SignatureFault::Stale if !warn_due() => {}
                SignatureFault::UnknownSerial => {
                    let serial: String = header(headers, "wechatpay-serial")
                        .unwrap_or_default()
                        .chars()
                        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .take(64)
                        .collect();
                    tracing::warn!(
                        %serial,
                        "callback refused: signed under a platform key that is not installed (channels.wechat.platform_keys); if WeChat Pay rotated its key, install it"
                    );
                }
                SignatureFault::Stale => {
                    tracing::warn!(
                        "callback refused: its timestamp is 5 minutes or more from this host's clock; if genuine, check the clock"
                    );
                }
                SignatureFault::Missing
                | SignatureFault::Malformed
                | SignatureFault::Probe
                | SignatureFault::Mismatch => {}
            }
            ChannelError::InvalidSignature
        })
    }

    /// Verifies the `Wechatpay-*` headers of an answer to our own request.
    /// A fault that only our configuration can explain is `Misconfigured`
    /// (see the module docs); missing, malformed and probe signatures are
    /// `InvalidSignature`.
    pub fn verify_response(
        &self,
        headers: &BTreeMap<String, String>,
        body: &[u8],
    ) -> Result<(), ChannelError> {
        self.check_signature(headers, body)
            .map_err(|fault| match fault {
                SignatureFault::Missing | SignatureFault::Malformed | SignatureFault::Probe => {
                    ChannelError::InvalidSignature
                }
                SignatureFault::Stale => misconfigured(codes::CLOCK_SKEW),
                SignatureFault::UnknownSerial => misconfigured(codes::PLATFORM_KEY_UNKNOWN),
                SignatureFault::Mismatch => misconfigured(codes::RESPONSE_SIGNATURE_INVALID),
            })
    }

    fn check_signature(
        &self,
        headers: &BTreeMap<String, String>,
        body: &[u8],
    ) -> Result<(), SignatureFault> {
        let timestamp = header(headers, "wechatpay-timestamp").ok_or(SignatureFault::Missing)?;
        let nonce = header(headers, "wechatpay-nonce").ok_or(SignatureFault::Missing)?;
        let signature = header(headers, "wechatpay-signature").ok_or(SignatureFault::Missing)?;
        let serial = header(headers, "wechatpay-serial").ok_or(SignatureFault::Missing)?;
        if signature.starts_with(SIGNTEST_PREFIX) {
            return Err(SignatureFault::Probe);
        }
        if nonce.is_empty() {
            return Err(SignatureFault::Malformed);
        }
        // The number's own text only: the signature covers the header's
        // text, and WeChat Pay's SDK rebuilds that text from the number, so
        // `+17…`, `017…` or ` 17…` would verify here and nowhere else.
        let ts: i64 = timestamp.parse().map_err(|_| SignatureFault::Malformed)?;
        if ts.to_string() != timestamp {
            return Err(SignatureFault::Malformed);
        }
        let now = unix_seconds(self.clock.as_ref());
        // A skew of exactly the limit is refused, as the SDK refuses it.
        if now.saturating_sub(ts).saturating_abs() >= self.max_skew {
            return Err(SignatureFault::Stale);
        }
        let verifier = self
            .platform
            .get(serial.trim().to_ascii_uppercase().as_str())
            .ok_or(SignatureFault::UnknownSerial)?;
        let mut message = Vec::with_capacity(body.len() + 64);
        message.extend_from_slice(timestamp.as_bytes());
        message.push(b'\n');
        message.extend_from_slice(nonce.as_bytes());
        message.push(b'\n');
        message.extend_from_slice(body);
        message.push(b'\n');
        if verifier.verify_b64(&message, signature) {
            Ok(())
        } else {
            Err(SignatureFault::Mismatch)
        }
    }
}

/// Whether a configuration-shaped callback refusal may be logged now: at
/// most once a minute, process-wide.
fn warn_due() -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let last = LAST.load(Ordering::Relaxed);
    (last == 0 || now.saturating_sub(last) >= 60)
        && LAST
            .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}
