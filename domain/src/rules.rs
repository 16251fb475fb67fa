//! Limits as pure decisions over counts: the cap on cards per user, the
//! bind-rate rule and the OTP verification policy.

use crate::error::{Declined, UnprocessableCode};
use crate::time::Timestamp;

/// At most `max` live (not inactive, not failed) cards per user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CardCap {
    pub max: u32,
}

impl Default for CardCap {
    fn default() -> Self {
        CardCap { max: 10 }
    }
}

impl CardCap {
    /// Whether one more card may be bound when the user has `live` already.
    pub fn check(self, live: u32) -> Result<(), Declined> {
        if live >= self.max {
            Err(Declined::new(
                UnprocessableCode::CardLimitReached,
                format!("a user may have at most {} cards", self.max),
            ))
        } else {
            Ok(())
        }
    }
}

/// A fixed-window rate rule: at most `limit` events per `window_seconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateRule {
    pub limit: u64,
    pub window_seconds: i64,
}

/// What a rate rule decided for one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateDecision {
    Allowed { remaining: u64 },
    Limited { retry_after_seconds: i64 },
}

impl RateRule {
    /// The default for binds: 3 per user per minute.
    pub const BINDS_PER_USER: RateRule = RateRule {
        limit: 3,
        window_seconds: 60,
    };

    /// The window `now` falls in, as its start (unix seconds).
    pub fn window_start(self, now: Timestamp) -> i64 {
        let w = self.window_seconds.max(1);
        now.unix_seconds().div_euclid(w) * w
    }

    /// When the window `now` falls in ends.
    pub fn window_end(self, now: Timestamp) -> Timestamp {
        Timestamp::from_unix_millis((self.window_start(now) + self.window_seconds.max(1)) * 1000)
    }

    /// Decides the event that made the window's count `count` (counting it).
    pub fn decide(self, count: u64, now: Timestamp) -> RateDecision {
        if count <= self.limit {
            RateDecision::Allowed {
                remaining: self.limit - count,
            }
        } else {
            let end = self.window_end(now).unix_seconds();
            RateDecision::Limited {
                retry_after_seconds: (end - now.unix_seconds()).max(1),
            }
        }
    }
}

/// How OTP verification is bounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerificationPolicy {
    /// Wrong OTPs before the binding fails.
    pub max_otp_attempts: u32,
    /// How long a binding may wait for verification.
    pub window_seconds: i64,
}

impl Default for VerificationPolicy {
    fn default() -> Self {
        VerificationPolicy {
            max_otp_attempts: 5,
            window_seconds: 15 * 60,
        }
    }
}

/// The block of addresses one client holds, as the per-IP limits count
/// it: an IPv4 address itself (an IPv4-mapped IPv6 address too), an IPv6
/// address's /64 (`2001:db8:1:2::/64`): one subscriber is given a /64 or
/// more, and can send each request from a new address of it. Text that is
/// not an address is counted as it is.
pub fn address_block(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => v4.to_string(),
        Ok(std::net::IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                let prefix = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                format!("{prefix}/64")
            }
        },
        Err(_) => ip.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use proptest::prelude::*;

    #[test]
    fn cap() {
        assert!(CardCap { max: 2 }.check(1).is_ok());
        assert_eq!(
            CardCap { max: 2 }.check(2).unwrap_err().code,
            ErrorCode::CardLimitReached
        );
    }

    #[test]
    fn fourth_bind_in_a_minute_is_limited() {
        let r = RateRule::BINDS_PER_USER;
        let now = Timestamp::from_unix_millis(120_000 + 15_000);
        assert_eq!(r.decide(1, now), RateDecision::Allowed { remaining: 2 });
        assert_eq!(r.decide(3, now), RateDecision::Allowed { remaining: 0 });
        assert_eq!(
            r.decide(4, now),
            RateDecision::Limited {
                retry_after_seconds: 45
            }
        );
    }

    proptest! {
        #[test]
        fn retry_after_points_into_the_next_window(ms in 0i64..4_000_000_000_000, count in 4u64..100) {
            let r = RateRule::BINDS_PER_USER;
            let now = Timestamp::from_unix_millis(ms);
            match r.decide(count, now) {
                RateDecision::Limited { retry_after_seconds } => {
                    prop_assert!((1..=60).contains(&retry_after_seconds));
                    let later = now.plus_seconds(retry_after_seconds);
                    prop_assert!(r.window_start(later) > r.window_start(now));
                }
                RateDecision::Allowed { .. } => prop_assert!(false, "count over limit allowed"),
            }
        }
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_64_and_an_ipv4_one_by_its_address() {
        for (ip, block) in [
            ("203.0.113.9", "203.0.113.9"),
            ("::ffff:203.0.113.9", "203.0.113.9"),
            ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
            ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
            ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
            ("::1", "::/64"),
            ("not an address", "not an address"),
        ] {
            assert_eq!(address_block(ip), block, "{ip}");
        }
    }
}
