//! The binding aggregate: one record per (user, card), and its status machine.
//!
//! ```text
//! (new) ──reserve──▶ pending_verification ──▶ active ⇄ frozen
//!                         │    │                 │        │
//!                         │    └──▶ failed ◀─────┼────────┼── (review rejected)
//!                         └──▶ pending_review ──▶ active  │
//!   active | frozen | pending_* | failed ──unbind──▶ inactive
//!   inactive | failed ──rebind──▶ pending_verification (same record)
//!   pending_review ──operator retry──▶ pending_verification
//! ```
//!
//! A new binding is persisted as `pending_verification` *before* the channel
//! is asked (a reservation that the unique (user, fingerprint) index guards),
//! so a crash between the channel call and the status update leaves a record
//! that reconciliation can settle instead of an orphan at the channel.

use std::fmt;
use std::ops::Deref;

use crate::card::{CardBrand, Expiry};
use crate::error::{DomainError, ErrorCode};
use crate::rules::VerificationPolicy;
use crate::time::Timestamp;

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident, $field:literal, $code:expr) => {
        $(#[$m])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// 1–64 characters of `A–Z a–z 0–9 _ - . : @`, starting with a
            /// letter or digit (names starting with `@` are reserved for the
            /// service's own records, such as the vault's `@fingerprint` key).
            pub fn parse(s: &str) -> Result<Self, DomainError> {
                let ok = (1..=64).contains(&s.len())
                    && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                    && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.:@".contains(&b));
                if ok {
                    Ok($name(s.to_owned()))
                } else {
                    Err(DomainError::field(
                        $code,
                        $field,
                        concat!($field, " must be 1 to 64 characters of A-Z a-z 0-9 _ - . : @, starting with a letter or digit"),
                    ))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// The platform's identifier for one of its users.
    UserId, "user_id", ErrorCode::InvalidUserId
);
id_type!(
    /// Our identifier for a binding (the `card_id` of the API).
    BindingId, "card_id", ErrorCode::InvalidRequest
);
id_type!(
    /// The name a payment channel is configured under (`mock`, `alipay`, `wechat`).
    ChannelName, "channel", ErrorCode::InvalidRequest
);

impl BindingId {
    /// The hyphenated form of a 128-bit UUID (always a valid id).
    pub fn from_uuid_bytes(b: [u8; 16]) -> BindingId {
        let mut s = String::with_capacity(36);
        for (i, byte) in b.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                s.push('-');
            }
            s.push_str(&format!("{byte:02x}"));
        }
        BindingId(s)
    }
}

/// A keyed, versioned fingerprint of a PAN: `v{version}:{hex}`. It finds the
/// same card again without storing it; it is never a plain hash.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    version: u32,
    hex: String,
}

impl Fingerprint {
    pub fn new(version: u32, hex: String) -> Fingerprint {
        Fingerprint { version, hex }
    }

    pub fn parse(s: &str) -> Option<Fingerprint> {
        let rest = s.strip_prefix('v')?;
        let (v, hex) = rest.split_once(':')?;
        let version = v.parse().ok()?;
        (!hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| Fingerprint {
            version,
            hex: hex.to_owned(),
        })
    }

    pub fn version(&self) -> u32 {
        self.version
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}:{}", self.version, self.hex)
    }
}

/// Opaque sealed bytes (the envelope format belongs to the key adapters).
#[derive(Clone, PartialEq, Eq)]
pub struct SealedBlob(Vec<u8>);

impl SealedBlob {
    pub fn new(bytes: Vec<u8>) -> SealedBlob {
        SealedBlob(bytes)
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

impl fmt::Debug for SealedBlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedBlob({} bytes)", self.0.len())
    }
}

/// The card data a binding keeps, each field sealed on its own and bound to
/// this record and field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedCard {
    pub pan: SealedBlob,
    pub holder_name: SealedBlob,
    pub id_number: SealedBlob,
    pub phone: SealedBlob,
}

/// What may be shown of a card: brand, first six, last four, expiry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardSummary {
    pub brand: CardBrand,
    pub bin: String,
    pub last4: String,
    pub expiry: Expiry,
}

/// Something the user must do to finish a binding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NextAction {
    /// An OTP was sent by SMS to the phone on file; verify with it.
    Otp { phone_hint: String },
    /// Open this URL (or show it as a QR code) to sign the agreement.
    Redirect { url: String },
}

/// Statuses of a binding; see the module docs for the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BindingStatus {
    PendingVerification,
    Active,
    Frozen,
    Inactive,
    PendingReview,
    Failed,
}

impl BindingStatus {
    pub const ALL: [BindingStatus; 6] = [
        BindingStatus::PendingVerification,
        BindingStatus::Active,
        BindingStatus::Frozen,
        BindingStatus::Inactive,
        BindingStatus::PendingReview,
        BindingStatus::Failed,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            BindingStatus::PendingVerification => "pending_verification",
            BindingStatus::Active => "active",
            BindingStatus::Frozen => "frozen",
            BindingStatus::Inactive => "inactive",
            BindingStatus::PendingReview => "pending_review",
            BindingStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<BindingStatus> {
        BindingStatus::ALL.into_iter().find(|b| b.as_str() == s)
    }

    /// Whether the machine allows `self → to`.
    pub fn can_become(self, to: BindingStatus) -> bool {
        use BindingStatus::*;
        matches!(
            (self, to),
            (PendingVerification, Active)
                | (PendingVerification, Failed)
                | (PendingVerification, PendingReview)
                | (PendingVerification, Inactive)
                | (PendingReview, Active)
                | (PendingReview, Failed)
                | (PendingReview, Inactive)
                | (PendingReview, PendingVerification)
                | (Active, Frozen)
                | (Frozen, Active)
                | (Active, Inactive)
                | (Frozen, Inactive)
                | (Failed, Inactive)
                | (Inactive, PendingVerification)
                | (Failed, PendingVerification)
        )
    }

    /// A status that holds the (user, card) slot: binding again is refused.
    pub fn is_live(self) -> bool {
        !matches!(self, BindingStatus::Inactive | BindingStatus::Failed)
    }
}

impl fmt::Display for BindingStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything a binding record holds. Readable through [`Binding`]'s
/// `Deref`; changed only through `Binding`'s transitions (adapters rebuild a
/// stored binding with [`Binding::restore`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindingParts {
    pub id: BindingId,
    pub user_id: UserId,
    pub fingerprint: Fingerprint,
    pub card: CardSummary,
    pub sealed: SealedCard,
    pub channel: ChannelName,
    /// The channel's reference (agreement / contract id, token) once known.
    pub channel_ref: Option<String>,
    pub next_action: Option<NextAction>,
    pub status: BindingStatus,
    /// Stable code of the last failure, when `status` is `failed`.
    pub failure_code: Option<String>,
    pub otp_attempts: u32,
    pub verification_expires_at: Option<Timestamp>,
    /// Bumped by every change; stores update conditionally on it.
    pub version: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub activated_at: Option<Timestamp>,
}

/// A binding: one record per (user, card).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding(BindingParts);

impl Deref for Binding {
    type Target = BindingParts;
    fn deref(&self) -> &BindingParts {
        &self.0
    }
}

/// What a channel said when asked to start a binding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartOutcome {
    Bound {
        channel_ref: String,
    },
    ActionRequired {
        channel_ref: String,
        action: NextAction,
    },
    Refused {
        code: String,
    },
    Unreachable,
}

impl Binding {
    /// Rebuilds a stored binding exactly as stored.
    pub fn restore(parts: BindingParts) -> Binding {
        Binding(parts)
    }

    pub fn into_parts(self) -> BindingParts {
        self.0
    }

    /// A new binding reserved before the channel is asked.
    #[allow(clippy::too_many_arguments)]
    pub fn reserve(
        id: BindingId,
        user_id: UserId,
        fingerprint: Fingerprint,
        card: CardSummary,
        sealed: SealedCard,
        channel: ChannelName,
        now: Timestamp,
        policy: &VerificationPolicy,
    ) -> Binding {
        Binding(BindingParts {
            id,
            user_id,
            fingerprint,
            card,
            sealed,
            channel,
            channel_ref: None,
            next_action: None,
            status: BindingStatus::PendingVerification,
            failure_code: None,
            otp_attempts: 0,
            verification_expires_at: Some(now.plus_seconds(policy.window_seconds)),
            version: 0,
            created_at: now,
            updated_at: now,
            activated_at: None,
        })
    }

    fn go(&mut self, to: BindingStatus, now: Timestamp) -> Result<(), DomainError> {
        if !self.0.status.can_become(to) {
            return Err(DomainError::new(
                ErrorCode::InvalidStateTransition,
                format!("a {} card cannot become {}", self.0.status, to),
            ));
        }
        self.0.status = to;
        self.0.updated_at = now;
        self.0.version += 1;
        if to == BindingStatus::Active {
            self.0.activated_at = Some(now);
            self.0.next_action = None;
            self.0.verification_expires_at = None;
            self.0.failure_code = None;
        }
        if to != BindingStatus::PendingVerification {
            self.0.next_action = None;
        }
        Ok(())
    }

    /// Binds the same card again on its old record (inactive or failed):
    /// fresh sealed data and channel, back to `pending_verification`.
    pub fn rebind(
        &mut self,
        card: CardSummary,
        sealed: SealedCard,
        channel: ChannelName,
        now: Timestamp,
        policy: &VerificationPolicy,
    ) -> Result<(), DomainError> {
        if self.0.status.is_live() {
            return Err(DomainError::new(
                ErrorCode::CardAlreadyBound,
                "this card is already bound",
            ));
        }
        self.go(BindingStatus::PendingVerification, now)?;
        self.0.card = card;
        self.0.sealed = sealed;
        self.0.channel = channel;
        self.0.channel_ref = None;
        self.0.failure_code = None;
        self.0.otp_attempts = 0;
        self.0.verification_expires_at = Some(now.plus_seconds(policy.window_seconds));
        self.0.activated_at = None;
        Ok(())
    }

    /// Refuses unless the binding waits for an operator's decision.
    pub fn ensure_in_review(&self) -> Result<(), DomainError> {
        if self.0.status == BindingStatus::PendingReview {
            Ok(())
        } else {
            Err(DomainError::new(
                ErrorCode::InvalidStateTransition,
                "this card is not waiting for review",
            ))
        }
    }

    /// An operator approves a binding in review: it becomes active.
    pub fn approve(
        &mut self,
        channel_ref: Option<String>,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        self.ensure_in_review()?;
        self.activate(channel_ref, now)
    }

    /// An operator rejects a binding in review: it fails.
    pub fn reject(&mut self, now: Timestamp) -> Result<(), DomainError> {
        self.ensure_in_review()?;
        self.fail("rejected_by_operator", now)
    }

    /// An operator sends a binding in review back to its channel: it waits
    /// for verification again, with a fresh window.
    pub fn requeue(
        &mut self,
        now: Timestamp,
        policy: &VerificationPolicy,
    ) -> Result<(), DomainError> {
        self.ensure_in_review()?;
        self.go(BindingStatus::PendingVerification, now)?;
        self.0.otp_attempts = 0;
        self.0.verification_expires_at = Some(now.plus_seconds(policy.window_seconds));
        Ok(())
    }

    /// Applies the channel's answer to the start of a binding.
    pub fn apply_start(
        &mut self,
        outcome: StartOutcome,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        match outcome {
            StartOutcome::Bound { channel_ref } => {
                self.go(BindingStatus::Active, now)?;
                self.0.channel_ref = Some(channel_ref);
            }
            StartOutcome::ActionRequired {
                channel_ref,
                action,
            } => {
                if self.0.status != BindingStatus::PendingVerification {
                    return Err(DomainError::new(
                        ErrorCode::InvalidStateTransition,
                        "binding is not pending",
                    ));
                }
                self.0.channel_ref = Some(channel_ref);
                self.0.next_action = Some(action);
                self.0.updated_at = now;
                self.0.version += 1;
            }
            StartOutcome::Refused { code } => {
                self.go(BindingStatus::Failed, now)?;
                self.0.failure_code = Some(code);
            }
            StartOutcome::Unreachable => {
                self.go(BindingStatus::PendingReview, now)?;
            }
        }
        Ok(())
    }

    /// Checks that an OTP may be tried now: the binding waits for one and
    /// the window is open. An expired window fails the binding (the caller
    /// stores that) and answers `verification_expired`.
    pub fn begin_otp(
        &mut self,
        now: Timestamp,
        policy: &VerificationPolicy,
    ) -> Result<(), DomainError> {
        if self.0.status != BindingStatus::PendingVerification
            || !matches!(self.0.next_action, Some(NextAction::Otp { .. }))
        {
            return Err(DomainError::new(
                ErrorCode::InvalidStateTransition,
                "this card is not waiting for a one-time password",
            ));
        }
        if self.0.verification_expires_at.is_some_and(|t| now > t) {
            self.go(BindingStatus::Failed, now)?;
            self.0.failure_code = Some(ErrorCode::VerificationExpired.as_str().to_owned());
            return Err(DomainError::new(
                ErrorCode::VerificationExpired,
                "the verification window has closed",
            ));
        }
        if self.0.otp_attempts >= policy.max_otp_attempts {
            // Every attempt is taken (some may still be being checked).
            return Err(DomainError::field(
                ErrorCode::InvalidOtp,
                "otp",
                "no attempts are left for this card",
            ));
        }
        // The attempt counts before the code is checked: the caller stores
        // this change (conditionally on the version) before asking the
        // channel, so parallel guesses cannot share one attempt.
        self.0.otp_attempts = self.0.otp_attempts.saturating_add(1);
        self.0.updated_at = now;
        self.0.version += 1;
        Ok(())
    }

    /// The code of the attempt begun by [`Binding::begin_otp`] was wrong;
    /// after `policy.max_otp_attempts` attempts the binding fails. Returns
    /// whether the binding has now failed.
    pub fn otp_rejected(
        &mut self,
        now: Timestamp,
        policy: &VerificationPolicy,
    ) -> Result<bool, DomainError> {
        if self.0.otp_attempts >= policy.max_otp_attempts {
            self.go(BindingStatus::Failed, now)?;
            self.0.failure_code = Some(ErrorCode::InvalidOtp.as_str().to_owned());
            return Ok(true);
        }
        Ok(false)
    }

    pub fn activate(
        &mut self,
        channel_ref: Option<String>,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        self.go(BindingStatus::Active, now)?;
        if let Some(r) = channel_ref {
            self.0.channel_ref = Some(r);
        }
        Ok(())
    }

    pub fn fail(&mut self, code: &str, now: Timestamp) -> Result<(), DomainError> {
        self.go(BindingStatus::Failed, now)?;
        self.0.failure_code = Some(code.to_owned());
        Ok(())
    }

    pub fn freeze(&mut self, now: Timestamp) -> Result<(), DomainError> {
        self.go(BindingStatus::Frozen, now)
    }

    pub fn unfreeze(&mut self, now: Timestamp) -> Result<(), DomainError> {
        if self.0.status != BindingStatus::Frozen {
            return Err(DomainError::new(
                ErrorCode::InvalidStateTransition,
                "only a frozen card can be unfrozen",
            ));
        }
        self.go(BindingStatus::Active, now)
    }

    /// Unbinds. Always allowed but from `inactive`, where it changes nothing
    /// and returns `Ok(false)`, so that unbinding twice is harmless.
    pub fn unbind(&mut self, now: Timestamp) -> Result<bool, DomainError> {
        if self.0.status == BindingStatus::Inactive {
            return Ok(false);
        }
        self.go(BindingStatus::Inactive, now)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::CardNumber;

    pub(crate) fn sample(id: &str, now: Timestamp) -> Binding {
        let pan = CardNumber::parse("4111111111111111").unwrap();
        let blob = || SealedBlob::new(vec![1, 2, 3]);
        Binding::reserve(
            BindingId::parse(id).unwrap(),
            UserId::parse("u1").unwrap(),
            Fingerprint::new(1, format!("{:0>8}", id.len())),
            CardSummary {
                brand: pan.brand(),
                bin: pan.bin().to_owned(),
                last4: pan.last4().to_owned(),
                expiry: Expiry::restore(12, 2030).unwrap(),
            },
            SealedCard {
                pan: blob(),
                holder_name: blob(),
                id_number: blob(),
                phone: blob(),
            },
            ChannelName::parse("mock").unwrap(),
            now,
            &VerificationPolicy::default(),
        )
    }

    #[test]
    fn machine_table() {
        use BindingStatus::*;
        assert!(PendingVerification.can_become(Active));
        assert!(!Inactive.can_become(Active));
        assert!(!Failed.can_become(Active));
        assert!(!Active.can_become(PendingVerification));
        assert!(!Frozen.can_become(Frozen));
        for s in BindingStatus::ALL {
            assert!(!s.can_become(s), "{s} → {s}");
            assert_eq!(BindingStatus::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn otp_attempts_fail_the_binding() {
        let now = Timestamp::from_unix_millis(1_000_000);
        let mut b = sample("b1", now);
        b.apply_start(
            StartOutcome::ActionRequired {
                channel_ref: "r".into(),
                action: NextAction::Otp {
                    phone_hint: "+86****8000".into(),
                },
            },
            now,
        )
        .unwrap();
        let p = VerificationPolicy::default();
        for i in 1..=p.max_otp_attempts {
            let v = b.version;
            b.begin_otp(now, &p).unwrap();
            assert_eq!(b.otp_attempts, i);
            assert!(b.version > v, "an attempt is a change to store");
            assert_eq!(b.otp_rejected(now, &p).unwrap(), i == p.max_otp_attempts);
        }
        assert_eq!(
            b.begin_otp(now, &p).unwrap_err().code,
            ErrorCode::InvalidStateTransition
        );
        assert_eq!(b.status, BindingStatus::Failed);
        assert_eq!(b.failure_code.as_deref(), Some("invalid_otp"));
    }

    #[test]
    fn expired_window_fails() {
        let now = Timestamp::from_unix_millis(1_000_000);
        let mut b = sample("b1", now);
        b.apply_start(
            StartOutcome::ActionRequired {
                channel_ref: "r".into(),
                action: NextAction::Otp {
                    phone_hint: String::new(),
                },
            },
            now,
        )
        .unwrap();
        let later = now.plus_seconds(VerificationPolicy::default().window_seconds + 1);
        assert_eq!(
            b.begin_otp(later, &VerificationPolicy::default())
                .unwrap_err()
                .code,
            ErrorCode::VerificationExpired
        );
        assert_eq!(b.status, BindingStatus::Failed);
    }

    #[test]
    fn rebind_reuses_record_and_unbind_is_idempotent() {
        let now = Timestamp::from_unix_millis(1_000_000);
        let mut b = sample("b1", now);
        b.apply_start(
            StartOutcome::Bound {
                channel_ref: "t".into(),
            },
            now,
        )
        .unwrap();
        assert!(b.unbind(now).unwrap());
        assert!(!b.unbind(now).unwrap());
        let card = b.card.clone();
        let sealed = b.sealed.clone();
        b.rebind(
            card,
            sealed,
            ChannelName::parse("mock").unwrap(),
            now,
            &VerificationPolicy::default(),
        )
        .unwrap();
        assert_eq!(b.status, BindingStatus::PendingVerification);
        assert_eq!(b.channel_ref, None);
        let card = b.card.clone();
        let sealed = b.sealed.clone();
        let e = b.rebind(
            card,
            sealed,
            ChannelName::parse("mock").unwrap(),
            now,
            &VerificationPolicy::default(),
        );
        assert_eq!(e.unwrap_err().code, ErrorCode::CardAlreadyBound);
    }

    #[test]
    fn reserved_and_malformed_ids() {
        assert!(UserId::parse("alice@example.com").is_ok());
        assert!(UserId::parse("@fingerprint").is_err());
        assert!(UserId::parse("-x").is_err());
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse(&"a".repeat(65)).is_err());
        assert!(UserId::parse("a b").is_err());
        assert_eq!(UserId::parse("../x").unwrap_err().field, Some("user_id"));
    }

    #[test]
    fn uuid_ids() {
        let id = BindingId::from_uuid_bytes([
            0x01, 0x9a, 0, 1, 2, 3, 0x74, 5, 0x86, 7, 8, 9, 10, 11, 12, 0xff,
        ]);
        assert_eq!(id.as_str(), "019a0001-0203-7405-8607-08090a0b0cff");
        assert_eq!(BindingId::parse(id.as_str()), Ok(id));
    }

    #[test]
    fn fingerprint_round_trip() {
        let f = Fingerprint::new(3, "abcdef01".into());
        assert_eq!(f.to_string(), "v3:abcdef01");
        assert_eq!(Fingerprint::parse("v3:abcdef01"), Some(f));
        assert_eq!(Fingerprint::parse("3:abcdef01"), None);
        assert_eq!(Fingerprint::parse("v3:xyz"), None);
    }
}
