//! Errors that cross the ports.

/// Errors of every storage port.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A record with this unique key exists.
    #[error("duplicate")]
    Duplicate,
    /// A write conditional on a version lost to another writer.
    #[error("version conflict")]
    Conflict,
    /// The store could not be reached or did not answer in time.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The store answered with something we cannot read (corrupt document).
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

/// Errors of the key service.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// KMS could not be reached.
    #[error("key service unavailable: {0}")]
    Unavailable(String),
    /// The store that keeps the wrapped keys could not be read or written
    /// (the key service itself may be up): a storage outage.
    #[error("key store unavailable: {0}")]
    StoreUnavailable(String),
    /// A sealed value did not open: tampered, moved to another record or
    /// field, wrapped by another key, or its key was erased.
    #[error("sealed data refused: {0}")]
    Refused(String),
    /// The user's key material was erased (crypto-shredded).
    #[error("key material erased")]
    Erased,
}

/// Errors of a payment channel call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// No answer in time. Transient.
    #[error("channel timed out")]
    Timeout,
    /// Connection failed or the channel answered 5xx. Transient.
    #[error("channel unavailable: {0}")]
    Unavailable(String),
    /// The circuit breaker is open; the channel was not called.
    #[error("channel circuit open")]
    CircuitOpen,
    /// The channel said no (a business refusal with its stable code).
    #[error("channel refused: {code}")]
    Rejected { code: String, message: String },
    /// A response or notification whose signature does not verify.
    #[error("invalid channel signature")]
    InvalidSignature,
    /// A response we cannot understand (hostile or broken input).
    #[error("channel protocol error: {0}")]
    Protocol(String),
    /// Our side of the channel is set up wrongly: the channel refused our
    /// credentials or configuration (application or merchant key, app id,
    /// merchant id, certificate serial, a product the account lacks), or our
    /// configured channel keys cannot verify its answers. Not the card's
    /// fault and not transient: an operator fixes the configuration, then
    /// retries. `code` is the channel's code or ours (e.g.
    /// `isv.invalid-signature`, `SIGN_ERROR`, `response_signature_invalid`);
    /// it never holds a key, a secret or the channel's message text.
    #[error("channel misconfigured: {code}")]
    Misconfigured { code: String },
    /// A genuine notification (its signature, app and time checked) of a
    /// kind this service does not act on: another product's message sent
    /// to the same address. Only [`parse_notification`] returns it; the
    /// service acknowledges it, so the channel stops delivering it, and
    /// changes nothing. `kind` is the channel's name for it, cleaned like
    /// a code (`unknown` when it names none).
    ///
    /// [`parse_notification`]: crate::channel::PaymentChannel::parse_notification
    #[error("notification not acted on: {kind}")]
    NotActedOn { kind: String },
}

impl KeyError {
    /// Whether retrying the same call may succeed: the key service or the
    /// key store did not answer. A refusal, or data erased, gets the same
    /// answer again.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            KeyError::Unavailable(_) | KeyError::StoreUnavailable(_)
        )
    }
}

impl ChannelError {
    /// Whether retrying the same call may succeed. `Misconfigured` is not:
    /// the same configuration gets the same answer.
    pub fn is_transient(&self) -> bool {
        matches!(self, ChannelError::Timeout | ChannelError::Unavailable(_))
    }

    /// Whether the channel could not be reached at all (the binding then
    /// waits for manual review instead of failing).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            ChannelError::Timeout | ChannelError::Unavailable(_) | ChannelError::CircuitOpen
        )
    }
}
