//! Why a binding failed, and the codes channels give.

/// Why a binding is `failed`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// The channel declined the card, with its own stable code.
    ChannelDeclined(ChannelCode),
    /// Too many wrong one-time passwords.
    InvalidOtp,
    /// The verification window closed (or the channel forgot the binding).
    VerificationExpired,
    /// An operator rejected it from the review queue.
    RejectedByOperator,
    /// The channel ended the agreement before it was active.
    AgreementTerminated,
}

impl FailureReason {
    const OURS: [FailureReason; 4] = [
        FailureReason::InvalidOtp,
        FailureReason::VerificationExpired,
        FailureReason::RejectedByOperator,
        FailureReason::AgreementTerminated,
    ];

    /// The stable code shown as the card's `failure_code`.
    pub fn as_str(&self) -> &str {
        match self {
            FailureReason::ChannelDeclined(c) => c.as_str(),
            FailureReason::InvalidOtp => "invalid_otp",
            FailureReason::VerificationExpired => "verification_expired",
            FailureReason::RejectedByOperator => "rejected_by_operator",
            FailureReason::AgreementTerminated => "agreement_terminated",
        }
    }

    /// One of our own reasons, by its code.
    fn ours(s: &str) -> Option<FailureReason> {
        FailureReason::OURS.into_iter().find(|r| r.as_str() == s)
    }

    /// What a channel's failure code means: one of ours by name, else
    /// the channel's own code ([`ChannelCode::from_channel`]).
    pub fn from_channel(s: &str) -> FailureReason {
        FailureReason::ours(s)
            .unwrap_or_else(|| FailureReason::ChannelDeclined(ChannelCode::from_channel(s)))
    }

    /// Reads a stored code back: one of ours by name, else a channel's code.
    pub fn parse(s: &str) -> Option<FailureReason> {
        FailureReason::ours(s).or_else(|| ChannelCode::parse(s).map(FailureReason::ChannelDeclined))
    }
}

/// A code a payment channel gave (its refusal or sub code), kept only if it
/// looks like a code: 1–64 of `A–Z a–z 0–9 _ . -`. Shown to clients.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChannelCode(String);

impl ChannelCode {
    pub fn parse(s: &str) -> Option<ChannelCode> {
        let ok = (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        ok.then(|| ChannelCode(s.to_owned()))
    }

    /// A channel's code, or `declined` when it does not look like one or
    /// holds a number of [`crate::consent::MASKED_NUMBER_DIGITS`] digits or
    /// more (which could be card data: the code is shown and stored).
    pub fn from_channel(s: &str) -> ChannelCode {
        let long = crate::consent::numbers(s, b"_.-")
            .any(|n| n.digits >= crate::consent::MASKED_NUMBER_DIGITS);
        ChannelCode::parse(s)
            .filter(|_| !long)
            .unwrap_or_else(|| ChannelCode("declined".to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_reasons_round_trip() {
        for r in FailureReason::OURS {
            assert_eq!(FailureReason::parse(r.as_str()), Some(r.clone()));
        }
        let c = FailureReason::parse("isv.card-declined").unwrap();
        assert_eq!(
            c,
            FailureReason::ChannelDeclined(ChannelCode::parse("isv.card-declined").unwrap())
        );
        assert_eq!(FailureReason::parse("bad code!"), None);
        assert_eq!(ChannelCode::from_channel("<script>").as_str(), "declined");
        // A code that could carry card data is not kept.
        for carded in [
            "4111111111111111",
            "pan-4111-1111-1111-1111",
            "x.13800138000",
            "4111--1111--1111--1111",
            "4111_.1111_.1111_.1111",
        ] {
            assert_eq!(ChannelCode::from_channel(carded).as_str(), "declined");
            assert_eq!(
                FailureReason::from_channel(carded).as_str(),
                "declined",
                "{carded}"
            );
        }
        assert_eq!(
            ChannelCode::from_channel("ACQ.1234567890").as_str(),
            "ACQ.1234567890"
        );
        assert_eq!(
            FailureReason::from_channel("verification_expired"),
            FailureReason::VerificationExpired
        );
    }
}
