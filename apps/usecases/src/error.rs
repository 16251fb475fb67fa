//! The refusals of each use case, typed by class.
//!
//! Every use case returns its own error enum, built by [`op_error!`] from
//! the classes it may refuse with (`BadRequest`, `Forbidden`, `NotFound`,
//! …) plus `Internal`. A variant holds a refusal of exactly that class, so
//! the class of an answer — and the HTTP status the app gives it — is known
//! from the type: the HTTP layer maps each variant of an operation's error
//! to one declared status with an exhaustive `match`, and a use case that
//! starts refusing in a new way does not compile until its operation
//! declares it.
//!
//! Infrastructure errors convert only into the enums that declare what
//! they become (`from Store` needs `Unavailable` and `Conflict`, …).

use std::borrow::Cow;

use cardbind_domain::error::class;
use cardbind_domain::{
    BadRequestCode, Clash, ConflictCode, Declined, Invalid, Refused, UnprocessableCode,
};
use cardbind_ports::ChannelError;

pub use cardbind_domain::error::{TooManyRequestsCode, UnauthenticatedCode, UnavailableCode};

/// A refusal for a missing or invalid credential or signature (401).
pub type Unauthenticated = Refused<class::Unauthenticated>;
/// A dependency that cannot be reached (503).
pub type Unavailable = Refused<class::Unavailable>;

/// Too many attempts (429), and when to try again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limited {
    pub refusal: Refused<class::TooManyRequests>,
    pub retry_after_seconds: u32,
}

/// Something unexpected inside the service (500). The cause is for the
/// logs; the caller learns only `internal_error`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Internal {
    pub cause: Cow<'static, str>,
}

impl Internal {
    pub fn new(cause: impl Into<Cow<'static, str>>) -> Internal {
        Internal {
            cause: cause.into(),
        }
    }
}

pub(crate) fn storage_unavailable() -> Unavailable {
    Unavailable::new(
        UnavailableCode::StorageUnavailable,
        "storage is unavailable; retry later",
    )
}

pub(crate) fn key_service_unavailable() -> Unavailable {
    Unavailable::new(
        UnavailableCode::KeyServiceUnavailable,
        "the key service is unavailable; retry later",
    )
}

pub(crate) fn channel_unavailable() -> Unavailable {
    Unavailable::new(
        UnavailableCode::ChannelUnavailable,
        "the payment channel is unavailable; retry later",
    )
}

pub(crate) fn concurrent_change() -> Clash {
    Clash::new(
        ConflictCode::Conflict,
        "the card changed concurrently; retry the request",
    )
}

pub(crate) fn card_data_unreadable() -> Clash {
    Clash::new(
        ConflictCode::CardDataUnreadable,
        "the stored card data does not open",
    )
}

pub(crate) fn channel_rejected(code: &str) -> Declined {
    let message = match cardbind_domain::ChannelCode::from_channel(code).as_str() {
        "declined" => "the payment channel declined this card".to_owned(),
        c => format!("the payment channel declined this card ({c})"),
    };
    Declined::new(UnprocessableCode::ChannelRejected, message)
}

pub(crate) fn channel_not_enabled() -> Invalid {
    Invalid::field(
        BadRequestCode::ChannelNotEnabled,
        "channel",
        "that channel is not enabled",
    )
}

/// Declares a use case's error enum. `from Store` (or `from StoreRead`
/// for a use case that only reads), `from Keys` (or `from KeysSealing` for
/// one that only seals and fingerprints), `from Channel`,
/// `from Rules`, `from ShareRules` and `from State` add conversions from the ports' errors and
/// the domain's refusals; each compiles only when the enum declares every
/// class it converts into.
macro_rules! op_error {
    (
        $(#[$m:meta])*
        pub enum $name:ident { $($class:ident),* $(,)? }
        $(from $($src:ident),+)?
    ) => {
        $(#[$m])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum $name {
            $( $class($crate::error::op_error!(@ty $class)), )*
            Internal($crate::error::Internal),
        }

        $(
            impl From<$crate::error::op_error!(@ty $class)> for $name {
                fn from(r: $crate::error::op_error!(@ty $class)) -> $name {
                    $name::$class(r)
                }
            }
        )*

        impl From<$crate::error::Internal> for $name {
            fn from(i: $crate::error::Internal) -> $name {
                $name::Internal(i)
            }
        }

        impl $name {
            /// The stable code the caller gets.
            pub fn code(&self) -> cardbind_domain::ErrorCode {
                match self {
                    $( $name::$class(r) => $crate::error::op_error!(@code $class r), )*
                    $name::Internal(_) => cardbind_domain::ErrorCode::InternalError,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self {
                    $name::Internal(i) => write!(f, "internal error: {}", i.cause),
                    other => f.write_str(other.code().as_str()),
                }
            }
        }

        impl std::error::Error for $name {}

        $($( $crate::error::op_error!(@from $name $src); )+)?
    };

    (@ty BadRequest) => { cardbind_domain::Invalid };
    (@ty Unauthenticated) => { $crate::error::Unauthenticated };
    (@ty Forbidden) => { cardbind_domain::Denied };
    (@ty NotFound) => { cardbind_domain::Missing };
    (@ty Conflict) => { cardbind_domain::Clash };
    (@ty Unprocessable) => { cardbind_domain::Declined };
    (@ty TooManyRequests) => { $crate::error::Limited };
    (@ty Unavailable) => { $crate::error::Unavailable };

    (@code TooManyRequests $r:ident) => { $r.refusal.code };
    (@code $class:ident $r:ident) => { $r.code };

    (@from $name:ident Store) => {
        impl From<cardbind_ports::StoreError> for $name {
            fn from(e: cardbind_ports::StoreError) -> $name {
                use cardbind_ports::StoreError as S;
                match e {
                    S::Unavailable(cause) => {
                        tracing::warn!(%cause, "storage unavailable");
                        $name::Unavailable($crate::error::storage_unavailable())
                    }
                    S::Conflict => $name::Conflict($crate::error::concurrent_change()),
                    S::Duplicate | S::Corrupt(_) => {
                        $name::Internal($crate::error::Internal::new(e.to_string()))
                    }
                }
            }
        }
    };
    (@from $name:ident StoreRead) => {
        impl From<cardbind_ports::StoreError> for $name {
            fn from(e: cardbind_ports::StoreError) -> $name {
                use cardbind_ports::StoreError as S;
                match e {
                    S::Unavailable(cause) => {
                        tracing::warn!(%cause, "storage unavailable");
                        $name::Unavailable($crate::error::storage_unavailable())
                    }
                    // A read loses no race.
                    S::Conflict | S::Duplicate | S::Corrupt(_) => {
                        $name::Internal($crate::error::Internal::new(e.to_string()))
                    }
                }
            }
        }
    };
    (@from $name:ident Keys) => {
        impl From<cardbind_ports::KeyError> for $name {
            fn from(e: cardbind_ports::KeyError) -> $name {
                use cardbind_ports::KeyError as K;
                match e {
                    K::Unavailable(cause) => {
                        tracing::warn!(%cause, "key service unavailable");
                        $name::Unavailable($crate::error::key_service_unavailable())
                    }
                    K::StoreUnavailable(cause) => {
                        tracing::warn!(%cause, "storage unavailable (key store)");
                        $name::Unavailable($crate::error::storage_unavailable())
                    }
                    K::Refused(_) | K::Erased => {
                        tracing::error!(error = %e, "sealed card data refused to open");
                        $name::Conflict($crate::error::card_data_unreadable())
                    }
                }
            }
        }
    };
    (@from $name:ident KeysSealing) => {
        // For use cases that only seal and fingerprint (a bind): a refusal
        // there is no card data that fails to open, but a key service that
        // refuses the service (access denied, a disabled key, a stored key
        // that does not unwrap): the operator's to fix, the client's to
        // retry later.
        impl From<cardbind_ports::KeyError> for $name {
            fn from(e: cardbind_ports::KeyError) -> $name {
                use cardbind_ports::KeyError as K;
                match e {
                    K::Unavailable(cause) => {
                        tracing::warn!(%cause, "key service unavailable");
                    }
                    K::StoreUnavailable(cause) => {
                        tracing::warn!(%cause, "storage unavailable (key store)");
                        return $name::Unavailable($crate::error::storage_unavailable());
                    }
                    K::Refused(_) | K::Erased => {
                        tracing::error!(error = %e, "the key service refused to seal or fingerprint");
                    }
                }
                $name::Unavailable($crate::error::key_service_unavailable())
            }
        }
    };
    (@from $name:ident Channel) => {
        impl From<cardbind_ports::ChannelError> for $name {
            fn from(e: cardbind_ports::ChannelError) -> $name {
                match $crate::error::ChannelFailure::of(e) {
                    $crate::error::ChannelFailure::Unreachable(u) => $name::Unavailable(u),
                    $crate::error::ChannelFailure::Declined(d) => $name::Unprocessable(d),
                    $crate::error::ChannelFailure::Unauthenticated(a) => $name::Unauthenticated(a),
                    $crate::error::ChannelFailure::Unreadable(i) => $name::BadRequest(i),
                }
            }
        }
    };
    (@from $name:ident State) => {
        impl From<cardbind_domain::StateRefusal> for $name {
            fn from(r: cardbind_domain::StateRefusal) -> $name {
                use cardbind_domain::StateRefusal as R;
                match r {
                    R::NotFound(x) => $name::NotFound(x),
                    R::Conflict(x) => $name::Conflict(x),
                }
            }
        }
    };
    (@from $name:ident ShareRules) => {
        impl From<cardbind_domain::ShareRefusal> for $name {
            fn from(r: cardbind_domain::ShareRefusal) -> $name {
                use cardbind_domain::ShareRefusal as R;
                match r {
                    R::NotFound(x) => $name::NotFound(x),
                    R::Conflict(x) => $name::Conflict(x),
                    R::Unprocessable(x) => $name::Unprocessable(x),
                }
            }
        }
    };
    (@from $name:ident Rules) => {
        impl From<cardbind_domain::RuleRefusal> for $name {
            fn from(r: cardbind_domain::RuleRefusal) -> $name {
                use cardbind_domain::RuleRefusal as R;
                match r {
                    R::Conflict(x) => $name::Conflict(x),
                    R::Unprocessable(x) => $name::Unprocessable(x),
                }
            }
        }
    };
}

pub(crate) use op_error;

/// What a channel's error means for the caller.
pub(crate) enum ChannelFailure {
    /// Timeout, outage, open breaker, or the channel refusing our own
    /// credentials or configuration (an operator problem, not the card's):
    /// 503.
    Unreachable(Unavailable),
    /// The channel said no to the card: 422.
    Declined(Declined),
    /// A notification whose signature does not verify: 401.
    Unauthenticated(Unauthenticated),
    /// A notification we cannot read: 400.
    Unreadable(Invalid),
}

impl ChannelFailure {
    pub(crate) fn of(e: ChannelError) -> ChannelFailure {
        match e {
            ChannelError::Timeout | ChannelError::Unavailable(_) | ChannelError::CircuitOpen => {
                tracing::warn!(error = %e, "payment channel unreachable");
                ChannelFailure::Unreachable(channel_unavailable())
            }
            // Our own credentials or configuration: an operator problem,
            // never the card's (the channel wrapper logs and audits it).
            ChannelError::Misconfigured { .. } => {
                ChannelFailure::Unreachable(channel_unavailable())
            }
            ChannelError::Rejected { code, .. } => {
                ChannelFailure::Declined(channel_rejected(&code))
            }
            ChannelError::InvalidSignature => {
                ChannelFailure::Unauthenticated(Unauthenticated::new(
                    UnauthenticatedCode::InvalidSignature,
                    "the notification signature does not verify, or its timestamp is too far from the service's clock (a replay, or a clock off)",
                ))
            }
            ChannelError::Protocol(_) | ChannelError::NotActedOn { .. } => {
                tracing::warn!(cause = %e, "unreadable channel message");
                ChannelFailure::Unreadable(Invalid::new(
                    BadRequestCode::InvalidRequest,
                    "the notification could not be read",
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cardbind_domain::ErrorCode;
    use cardbind_ports::{KeyError, StoreError};

    op_error! {
        /// A test operation.
        pub enum TestError { BadRequest, Conflict, Unavailable, Unprocessable, Unauthenticated }
        from Store, Keys, Channel
    }

    #[test]
    fn infrastructure_errors_become_their_class() {
        let e: TestError = StoreError::Unavailable("db at 10.0.0.1".into()).into();
        assert_eq!(e.code(), ErrorCode::StorageUnavailable);
        assert!(!format!("{e}").contains("10.0.0.1"));
        let e: TestError = StoreError::Corrupt("x".into()).into();
        assert!(matches!(e, TestError::Internal(_)));
        let e: TestError = KeyError::Erased.into();
        assert_eq!(e.code(), ErrorCode::CardDataUnreadable);
        let e: TestError = KeyError::Unavailable("kms".into()).into();
        assert_eq!(e.code(), ErrorCode::KeyServiceUnavailable);
        let e: TestError = KeyError::StoreUnavailable("read-only".into()).into();
        assert_eq!(e.code(), ErrorCode::StorageUnavailable);
        let e: TestError = ChannelError::Rejected {
            code: "<b>".into(),
            message: String::new(),
        }
        .into();
        assert_eq!(e.code(), ErrorCode::ChannelRejected);
        match e {
            TestError::Unprocessable(d) => assert!(!d.message.contains("<b>")),
            other => panic!("{other:?}"),
        }
        let e: TestError = ChannelError::CircuitOpen.into();
        assert_eq!(e.code(), ErrorCode::ChannelUnavailable);
    }
}
