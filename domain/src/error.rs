//! Stable machine codes for every refusal, and the domain's error type.

use std::fmt;

/// Every refusal the service can give, as a stable machine code.
///
/// The string form (`as_str`) is part of the public API contract: clients
/// branch on it. Never rename a variant's code; add new ones instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidCardNumber,
    UnsupportedCardBrand,
    InvalidExpiry,
    CardExpired,
    InvalidCvv,
    InvalidHolderName,
    InvalidIdNumber,
    InvalidPhone,
    InvalidUserId,
    InvalidRequest,
    CardAlreadyBound,
    CardLimitReached,
    IdempotencyKeyMissing,
    IdempotencyKeyReused,
    IdempotencyKeyInProgress,
    RateLimited,
    IpRateLimited,
    CardVelocityExceeded,
    InvalidOtp,
    VerificationExpired,
    InvalidStateTransition,
    NotFound,
    Unauthenticated,
    Forbidden,
    InvalidSignature,
    ChannelRejected,
    ChannelUnavailable,
    ChannelNotEnabled,
    /// The card's issuer data (type, country) is outside what the channel
    /// is configured to take.
    CardNotAcceptedByChannel,
    StepUpRequired,
    PayloadTooLarge,
    StorageUnavailable,
    KeyServiceUnavailable,
    Conflict,
    CardDataUnreadable,
    InternalError,
}

impl ErrorCode {
    /// All codes, in a stable order (used to list them in the API spec and docs).
    pub const ALL: [ErrorCode; 36] = [
        ErrorCode::InvalidCardNumber,
        ErrorCode::UnsupportedCardBrand,
        ErrorCode::InvalidExpiry,
        ErrorCode::CardExpired,
        ErrorCode::InvalidCvv,
        ErrorCode::InvalidHolderName,
        ErrorCode::InvalidIdNumber,
        ErrorCode::InvalidPhone,
        ErrorCode::InvalidUserId,
        ErrorCode::InvalidRequest,
        ErrorCode::CardAlreadyBound,
        ErrorCode::CardLimitReached,
        ErrorCode::IdempotencyKeyMissing,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::IdempotencyKeyInProgress,
        ErrorCode::RateLimited,
        ErrorCode::IpRateLimited,
        ErrorCode::CardVelocityExceeded,
        ErrorCode::InvalidOtp,
        ErrorCode::VerificationExpired,
        ErrorCode::InvalidStateTransition,
        ErrorCode::NotFound,
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::InvalidSignature,
        ErrorCode::ChannelRejected,
        ErrorCode::ChannelUnavailable,
        ErrorCode::ChannelNotEnabled,
        ErrorCode::CardNotAcceptedByChannel,
        ErrorCode::StepUpRequired,
        ErrorCode::PayloadTooLarge,
        ErrorCode::StorageUnavailable,
        ErrorCode::KeyServiceUnavailable,
        ErrorCode::Conflict,
        ErrorCode::CardDataUnreadable,
        ErrorCode::InternalError,
    ];

    /// The stable snake_case code.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidCardNumber => "invalid_card_number",
            ErrorCode::UnsupportedCardBrand => "unsupported_card_brand",
            ErrorCode::InvalidExpiry => "invalid_expiry",
            ErrorCode::CardExpired => "card_expired",
            ErrorCode::InvalidCvv => "invalid_cvv",
            ErrorCode::InvalidHolderName => "invalid_holder_name",
            ErrorCode::InvalidIdNumber => "invalid_id_number",
            ErrorCode::InvalidPhone => "invalid_phone",
            ErrorCode::InvalidUserId => "invalid_user_id",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::CardAlreadyBound => "card_already_bound",
            ErrorCode::CardLimitReached => "card_limit_reached",
            ErrorCode::IdempotencyKeyMissing => "idempotency_key_missing",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorCode::IdempotencyKeyInProgress => "idempotency_key_in_progress",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::IpRateLimited => "ip_rate_limited",
            ErrorCode::CardVelocityExceeded => "card_velocity_exceeded",
            ErrorCode::InvalidOtp => "invalid_otp",
            ErrorCode::VerificationExpired => "verification_expired",
            ErrorCode::InvalidStateTransition => "invalid_state_transition",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::InvalidSignature => "invalid_signature",
            ErrorCode::ChannelRejected => "channel_rejected",
            ErrorCode::ChannelUnavailable => "channel_unavailable",
            ErrorCode::ChannelNotEnabled => "channel_not_enabled",
            ErrorCode::CardNotAcceptedByChannel => "card_not_accepted_by_channel",
            ErrorCode::StepUpRequired => "step_up_required",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::StorageUnavailable => "storage_unavailable",
            ErrorCode::KeyServiceUnavailable => "key_service_unavailable",
            ErrorCode::Conflict => "conflict",
            ErrorCode::CardDataUnreadable => "card_data_unreadable",
            ErrorCode::InternalError => "internal_error",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal by a domain rule: a stable code, the request field it concerns
/// (if any) and a human message. Messages never contain card data.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DomainError {
    pub code: ErrorCode,
    pub field: Option<&'static str>,
    pub message: String,
}

impl DomainError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        DomainError {
            code,
            field: None,
            message: message.into(),
        }
    }

    pub fn field(code: ErrorCode, field: &'static str, message: impl Into<String>) -> Self {
        DomainError {
            code,
            field: Some(field),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_snake_case() {
        let mut seen = HashSet::new();
        for code in ErrorCode::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "duplicate code {s}");
            assert!(s.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{s}");
        }
    }
}
