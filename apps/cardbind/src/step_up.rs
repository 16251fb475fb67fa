//! The built-in step-up verifier (`[step_up] kind = "hmac"`): a mock-grade
//! adapter of [`StepUpVerifier`] for deployments whose second factor runs
//! elsewhere and shares a secret with this service.
//!
//! ## Token format
//! `<exp>.<sig>` where `exp` is the expiry in unix seconds and `sig` is
//! hex(HMAC-SHA256(`step_up.hmac_secret`,
//! `"cardbind-step-up/v1\n" + user_id + "\n" + action + "\n" + exp`)).
//! `action` is `unbind_default_card`, `change_default_card` or `erase_user`
//! ([`cardbind_ports::step_up::StepUpAction`]). A token is accepted while
//! `now <= exp <= now + step_up.max_ttl_seconds`, for that user and action
//! only. [`hmac_step_up_token`] (and `cardbind step-up-token`) makes one.
//!
//! Tokens are not single-use: keep `max_ttl_seconds` short (300 s by
//! default). A production verifier (an IdP's step-up API, a TOTP check)
//! implements the same port.

use std::sync::Arc;

use async_trait::async_trait;
use cardbind_domain::UserId;
use cardbind_ports::clock::Clock;
use cardbind_ports::step_up::{StepUpAction, StepUpError, StepUpVerifier};
use subtle::ConstantTimeEq;

use crate::mac::hmac_sha256_hex;

const DOMAIN: &str = "cardbind-step-up/v1";

fn signature_hex(secret: &[u8], user: &str, action: &str, exp: i64) -> String {
    hmac_sha256_hex(
        secret,
        format!("{DOMAIN}\n{user}\n{action}\n{exp}").as_bytes(),
    )
}

/// A step-up token for `action` on `user`, valid until `expires_at` (unix
/// seconds).
pub fn hmac_step_up_token(
    secret: &[u8],
    user: &str,
    action: StepUpAction,
    expires_at: i64,
) -> String {
    format!(
        "{expires_at}.{}",
        signature_hex(secret, user, action.as_str(), expires_at)
    )
}

/// Verifies [`hmac_step_up_token`] tokens.
pub struct HmacStepUp {
    secret: Vec<u8>,
    clock: Arc<dyn Clock>,
    max_ttl_seconds: i64,
}

impl HmacStepUp {
    pub fn new(secret: Vec<u8>, clock: Arc<dyn Clock>, max_ttl_seconds: u64) -> HmacStepUp {
        HmacStepUp {
            secret,
            clock,
            max_ttl_seconds: i64::try_from(max_ttl_seconds).unwrap_or(i64::MAX),
        }
    }
}

impl std::fmt::Debug for HmacStepUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacStepUp(<secret>)")
    }
}

#[async_trait]
impl StepUpVerifier for HmacStepUp {
    async fn verify(
        &self,
        user: &UserId,
        action: StepUpAction,
        token: &str,
    ) -> Result<bool, StepUpError> {
        let Some((exp, sig)) = token.split_once('.') else {
            return Ok(false);
        };
        let exp_ok = (1..=12).contains(&exp.len()) && exp.bytes().all(|b| b.is_ascii_digit());
        let sig_ok = sig.len() == 64 && sig.bytes().all(|b| b.is_ascii_hexdigit());
        let Some(exp) = exp_ok.then(|| exp.parse::<i64>().ok()).flatten() else {
            return Ok(false);
        };
        if !sig_ok || self.secret.is_empty() {
            return Ok(false);
        }
        let now = self.clock.now().unix_seconds();
        if exp < now || exp - now > self.max_ttl_seconds {
            return Ok(false);
        }
        let expected = signature_hex(&self.secret, user.as_str(), action.as_str(), exp);
        let given = sig.to_ascii_lowercase();
        Ok(bool::from(expected.as_bytes().ct_eq(given.as_bytes())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cardbind_domain::Timestamp;
    use cardbind_ports::step_up::StepUpAction::{
        EraseUser as ERASE_USER, UnbindDefaultCard as UNBIND_DEFAULT_CARD,
    };

    struct Fixed(i64);
    impl Clock for Fixed {
        fn now(&self) -> Timestamp {
            Timestamp::from_unix_millis(self.0 * 1000)
        }
    }

    #[tokio::test]
    async fn accepts_only_its_user_action_and_lifetime() {
        let secret = b"step-up-secret-of-at-least-32-chars".to_vec();
        let now = 1_800_000_000;
        let v = HmacStepUp::new(secret.clone(), Arc::new(Fixed(now)), 300);
        let alice = UserId::parse("alice").unwrap();
        let bob = UserId::parse("bob").unwrap();
        let t = hmac_step_up_token(&secret, "alice", UNBIND_DEFAULT_CARD, now + 60);
        assert!(v.verify(&alice, UNBIND_DEFAULT_CARD, &t).await.unwrap());
        assert!(v
            .verify(&alice, UNBIND_DEFAULT_CARD, &t.to_ascii_uppercase())
            .await
            .unwrap());
        assert!(!v.verify(&bob, UNBIND_DEFAULT_CARD, &t).await.unwrap());
        assert!(!v.verify(&alice, ERASE_USER, &t).await.unwrap());
        let expired = hmac_step_up_token(&secret, "alice", UNBIND_DEFAULT_CARD, now - 1);
        assert!(!v
            .verify(&alice, UNBIND_DEFAULT_CARD, &expired)
            .await
            .unwrap());
        let too_long = hmac_step_up_token(&secret, "alice", UNBIND_DEFAULT_CARD, now + 301);
        assert!(!v
            .verify(&alice, UNBIND_DEFAULT_CARD, &too_long)
            .await
            .unwrap());
        let other_key = hmac_step_up_token(b"another", "alice", UNBIND_DEFAULT_CARD, now + 60);
        assert!(!v
            .verify(&alice, UNBIND_DEFAULT_CARD, &other_key)
            .await
            .unwrap());
        for junk in ["", ".", "abc", "123.", "-5.00", "x.y", &"9".repeat(40)] {
            assert!(
                !v.verify(&alice, UNBIND_DEFAULT_CARD, junk).await.unwrap(),
                "{junk}"
            );
        }
    }
}
