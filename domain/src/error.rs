//! Stable machine codes for every refusal, grouped by class, and the typed
//! refusals the domain returns.
//!
//! Every code belongs to exactly one [`ErrorClass`]; the application maps a
//! class to one HTTP status in one place. A refusal carries its class in its
//! type ([`Refused<C>`]): a function that can only refuse with a 409 returns
//! `Refused<class::Conflict>`, and code that has not declared it may answer
//! 409 cannot turn it into an answer (the use cases' per-operation error
//! types accept only the classes their operation declares).

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

/// The class of a refusal: what kind of answer it is, whatever the code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The request is malformed or a field is invalid.
    BadRequest,
    /// No valid credentials or signature.
    Unauthenticated,
    /// The caller may not do this.
    Forbidden,
    /// No such resource (for this caller).
    NotFound,
    /// The request conflicts with the resource's state.
    Conflict,
    /// The body is too large.
    TooLarge,
    /// Well-formed, but refused by a business rule or a channel.
    Unprocessable,
    /// Too many attempts.
    TooManyRequests,
    /// Something unexpected inside the service.
    Internal,
    /// A dependency is unavailable; retrying later may succeed.
    Unavailable,
}

macro_rules! error_codes {
    ($(
        $(#[$cm:meta])*
        $class:ident / $Code:ident {
            $( $(#[$m:meta])* $var:ident = $s:literal ),+ $(,)?
        }
    )+) => {
        /// Every refusal the service can give, as a stable machine code.
        ///
        /// The string form (`as_str`) is part of the public API contract:
        /// clients branch on it. Never rename a code; add new ones instead.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($( $(#[$m])* $var, )+)+
        }

        impl ErrorCode {
            /// All codes, in a stable order (listed in the API spec and docs).
            pub const ALL: &'static [ErrorCode] = &[$($(ErrorCode::$var,)+)+];

            /// The stable snake_case code.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($(ErrorCode::$var => $s,)+)+
                }
            }

            /// The class this code belongs to.
            pub const fn class(self) -> ErrorClass {
                match self {
                    $($(ErrorCode::$var => ErrorClass::$class,)+)+
                }
            }

            /// The code with this string form.
            pub fn parse(s: &str) -> Option<ErrorCode> {
                ErrorCode::ALL.iter().copied().find(|c| c.as_str() == s)
            }
        }

        $(
            $(#[$cm])*
            #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
            pub enum $Code {
                $( $(#[$m])* $var, )+
            }

            impl From<$Code> for ErrorCode {
                fn from(c: $Code) -> ErrorCode {
                    match c {
                        $($Code::$var => ErrorCode::$var,)+
                    }
                }
            }

            impl class::$class {
                /// Every code of this class.
                pub const CODES: &'static [$Code] = &[$($Code::$var,)+];
            }

            impl $Code {
                /// This class's code for `code`, when it is one.
                pub fn of(code: ErrorCode) -> Option<$Code> {
                    class::$class::CODES
                        .iter()
                        .copied()
                        .find(|c| ErrorCode::from(*c) == code)
                }
            }

            impl Class for class::$class {
                type Code = $Code;
                const CLASS: ErrorClass = ErrorClass::$class;
            }
        )+
    };
}

/// Marker types naming each class in a [`Refused`] type.
pub mod class {
    /// 400-like: a field or the request is invalid.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct BadRequest;
    /// 401-like.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Unauthenticated;
    /// 403-like.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Forbidden;
    /// 404-like.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct NotFound;
    /// 409-like.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Conflict;
    /// 413-like.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct TooLarge;
    /// 422-like.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Unprocessable;
    /// 429-like.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct TooManyRequests;
    /// 500-like.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Internal;
    /// 503-like.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Unavailable;
}

/// A class marker: names the class and the codes it may carry.
pub trait Class: Copy + fmt::Debug + PartialEq + Eq + Send + Sync + 'static {
    type Code: Copy + fmt::Debug + Into<ErrorCode>;
    const CLASS: ErrorClass;
}

error_codes! {
    /// Codes of a malformed request or an invalid field.
    BadRequest / BadRequestCode {
        InvalidCardNumber = "invalid_card_number",
        UnsupportedCardBrand = "unsupported_card_brand",
        InvalidExpiry = "invalid_expiry",
        CardExpired = "card_expired",
        InvalidCvv = "invalid_cvv",
        InvalidHolderName = "invalid_holder_name",
        InvalidIdNumber = "invalid_id_number",
        InvalidPhone = "invalid_phone",
        InvalidUserId = "invalid_user_id",
        InvalidRequest = "invalid_request",
        IdempotencyKeyMissing = "idempotency_key_missing",
        ChannelNotEnabled = "channel_not_enabled",
        /// A money amount that is not positive or beyond the bound.
        InvalidAmount = "invalid_amount",
        /// Not an ISO 4217 currency code (or one without minor units).
        InvalidCurrency = "invalid_currency",
        /// A share's expiry that is not in the future or too far ahead.
        InvalidShareExpiry = "invalid_share_expiry",
    }
    /// Codes of missing or invalid credentials.
    Unauthenticated / UnauthenticatedCode {
        Unauthenticated = "unauthenticated",
        InvalidSignature = "invalid_signature",
    }
    /// Codes of a refused caller.
    Forbidden / ForbiddenCode {
        Forbidden = "forbidden",
        StepUpRequired = "step_up_required",
    }
    /// Codes of a missing resource.
    NotFound / NotFoundCode {
        NotFound = "not_found",
    }
    /// Codes of a request that conflicts with the state.
    Conflict / ConflictCode {
        CardAlreadyBound = "card_already_bound",
        IdempotencyKeyReused = "idempotency_key_reused",
        IdempotencyKeyInProgress = "idempotency_key_in_progress",
        InvalidStateTransition = "invalid_state_transition",
        Conflict = "conflict",
        CardDataUnreadable = "card_data_unreadable",
        /// The card is already shared with that user on other terms.
        CardAlreadyShared = "card_already_shared",
        /// The share was revoked, left or has expired.
        ShareEnded = "share_ended",
    }
    /// Codes of a body that is too large.
    TooLarge / TooLargeCode {
        PayloadTooLarge = "payload_too_large",
    }
    /// Codes of a well-formed request refused by a rule or a channel.
    Unprocessable / UnprocessableCode {
        CardLimitReached = "card_limit_reached",
        InvalidOtp = "invalid_otp",
        VerificationExpired = "verification_expired",
        ChannelRejected = "channel_rejected",
        /// The card's issuer data (type, country) is outside what the
        /// channel is configured to take.
        CardNotAcceptedByChannel = "card_not_accepted_by_channel",
        /// A user cannot share a card with themselves.
        ShareWithSelf = "share_with_self",
        /// Too many live shares given (per user) or received (per user).
        ShareLimitReached = "share_limit_reached",
    }
    /// Codes of too many attempts.
    TooManyRequests / TooManyRequestsCode {
        RateLimited = "rate_limited",
        IpRateLimited = "ip_rate_limited",
        CardVelocityExceeded = "card_velocity_exceeded",
    }
    /// Codes of a dependency that is unavailable.
    Unavailable / UnavailableCode {
        StorageUnavailable = "storage_unavailable",
        KeyServiceUnavailable = "key_service_unavailable",
        ChannelUnavailable = "channel_unavailable",
    }
    /// The code of an unexpected failure.
    Internal / InternalCode {
        InternalError = "internal_error",
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal of class `C`: a stable code of that class, the request field
/// it concerns (if any) and a human message. Messages never contain card
/// data.
pub struct Refused<C: Class> {
    /// The code (always one of `C`'s codes).
    pub code: ErrorCode,
    pub field: Option<&'static str>,
    pub message: Cow<'static, str>,
    class: PhantomData<C>,
}

impl<C: Class> Refused<C> {
    pub fn new(code: C::Code, message: impl Into<Cow<'static, str>>) -> Self {
        Refused {
            code: code.into(),
            field: None,
            message: message.into(),
            class: PhantomData,
        }
    }

    pub fn field(
        code: C::Code,
        field: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Refused {
            field: Some(field),
            ..Refused::new(code, message)
        }
    }

    /// The class (the same for every value of this type).
    pub const fn class(&self) -> ErrorClass {
        C::CLASS
    }
}

impl<C: Class> Clone for Refused<C> {
    fn clone(&self) -> Self {
        Refused {
            code: self.code,
            field: self.field,
            message: self.message.clone(),
            class: PhantomData,
        }
    }
}

impl<C: Class> PartialEq for Refused<C> {
    fn eq(&self, other: &Self) -> bool {
        (self.code, self.field, &self.message) == (other.code, other.field, &other.message)
    }
}

impl<C: Class> Eq for Refused<C> {}

impl<C: Class> fmt::Debug for Refused<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Refused")
            .field("code", &self.code)
            .field("field", &self.field)
            .field("message", &self.message)
            .finish()
    }
}

impl<C: Class> fmt::Display for Refused<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl<C: Class> std::error::Error for Refused<C> {}

/// A field or request that fails validation (400).
pub type Invalid = Refused<class::BadRequest>;
/// A refused caller (403).
pub type Denied = Refused<class::Forbidden>;
/// A missing resource (404).
pub type Missing = Refused<class::NotFound>;
/// A conflict with the state (409).
pub type Clash = Refused<class::Conflict>;
/// A refusal by a business rule (422).
pub type Declined = Refused<class::Unprocessable>;

impl Missing {
    /// `not_found` for a card the caller cannot see.
    pub fn card() -> Missing {
        Missing::new(NotFoundCode::NotFound, "no such card")
    }
}

impl Clash {
    /// `invalid_state_transition` with a message.
    pub fn transition(message: impl Into<Cow<'static, str>>) -> Clash {
        Clash::new(ConflictCode::InvalidStateTransition, message)
    }
}

/// A refusal of any class, for the few rules that can refuse in more than
/// one way; convert it with [`AnyRefusal::into_error`] into a type that
/// declares every class it may carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnyRefusal {
    BadRequest(Invalid),
    Forbidden(Denied),
    NotFound(Missing),
    Conflict(Clash),
    Unprocessable(Declined),
}

impl AnyRefusal {
    pub fn code(&self) -> ErrorCode {
        match self {
            AnyRefusal::BadRequest(r) => r.code,
            AnyRefusal::Forbidden(r) => r.code,
            AnyRefusal::NotFound(r) => r.code,
            AnyRefusal::Conflict(r) => r.code,
            AnyRefusal::Unprocessable(r) => r.code,
        }
    }
}

macro_rules! any_from {
    ($($var:ident($ty:ty)),+) => {$(
        impl From<$ty> for AnyRefusal {
            fn from(r: $ty) -> AnyRefusal {
                AnyRefusal::$var(r)
            }
        }
    )+};
}
any_from!(
    BadRequest(Invalid),
    Forbidden(Denied),
    NotFound(Missing),
    Conflict(Clash),
    Unprocessable(Declined)
);

/// A refusal about one card: 404 (no such card) or 409 (its state does not
/// allow it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateRefusal {
    NotFound(Missing),
    Conflict(Clash),
}

impl StateRefusal {
    pub fn code(&self) -> ErrorCode {
        match self {
            StateRefusal::NotFound(r) => r.code,
            StateRefusal::Conflict(r) => r.code,
        }
    }
}

impl From<Missing> for StateRefusal {
    fn from(r: Missing) -> Self {
        StateRefusal::NotFound(r)
    }
}
impl From<Clash> for StateRefusal {
    fn from(r: Clash) -> Self {
        StateRefusal::Conflict(r)
    }
}

/// A refusal by a wallet rule or a card's state machine when binding or
/// verifying: 409 (the card's state does not allow it) or 422 (a limit, a
/// closed window, a wrong code).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleRefusal {
    Conflict(Clash),
    Unprocessable(Declined),
}

impl RuleRefusal {
    pub fn code(&self) -> ErrorCode {
        match self {
            RuleRefusal::Conflict(r) => r.code,
            RuleRefusal::Unprocessable(r) => r.code,
        }
    }
}

impl From<Clash> for RuleRefusal {
    fn from(r: Clash) -> Self {
        RuleRefusal::Conflict(r)
    }
}
impl From<Declined> for RuleRefusal {
    fn from(r: Declined) -> Self {
        RuleRefusal::Unprocessable(r)
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
            assert_eq!(ErrorCode::parse(s), Some(*code));
        }
    }

    #[test]
    fn a_refusal_keeps_its_class_and_code() {
        let r = Invalid::field(BadRequestCode::InvalidCvv, "cvv", "three digits");
        assert_eq!(r.code, ErrorCode::InvalidCvv);
        assert_eq!(r.class(), ErrorClass::BadRequest);
        assert_eq!(r.code.class(), ErrorClass::BadRequest);
        let c = Clash::transition("no");
        assert_eq!(c.code.class(), ErrorClass::Conflict);
    }

    #[test]
    fn every_class_lists_exactly_its_codes() {
        let mut n = 0;
        for c in class::BadRequest::CODES {
            assert_eq!(ErrorCode::from(*c).class(), ErrorClass::BadRequest);
            n += 1;
        }
        for c in class::Conflict::CODES {
            assert_eq!(ErrorCode::from(*c).class(), ErrorClass::Conflict);
            n += 1;
        }
        for c in class::Unprocessable::CODES {
            assert_eq!(ErrorCode::from(*c).class(), ErrorClass::Unprocessable);
            n += 1;
        }
        assert!(n < ErrorCode::ALL.len());
    }
}
