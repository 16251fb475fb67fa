//! Retention: what the service deletes once it is past its time, since
//! neither FerretDB nor every deployment has TTL indexes.

use cardbind_ports::audit::AuditAction;
use cardbind_ports::StoreError;

use crate::context::RequestContext;
use crate::UseCases;

/// How long records are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    audit_days: u32,
    idempotency_hours: u32,
}

/// Why a retention setting was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RetentionError {
    #[error(
        "audit events are kept at least {} days (PCI DSS 10.5.1 asks for 12 months)",
        Retention::MIN_AUDIT_DAYS
    )]
    AuditTooShort,
    #[error(
        "idempotency keys are kept at least {} hours",
        Retention::MIN_IDEMPOTENCY_HOURS
    )]
    IdempotencyTooShort,
}

impl Retention {
    /// Six months: the floor this service promises.
    pub const MIN_AUDIT_DAYS: u32 = 180;
    pub const MIN_IDEMPOTENCY_HOURS: u32 = 24;

    pub fn new(audit_days: u32, idempotency_hours: u32) -> Result<Retention, RetentionError> {
        if audit_days < Self::MIN_AUDIT_DAYS {
            return Err(RetentionError::AuditTooShort);
        }
        if idempotency_hours < Self::MIN_IDEMPOTENCY_HOURS {
            return Err(RetentionError::IdempotencyTooShort);
        }
        Ok(Retention {
            audit_days,
            idempotency_hours,
        })
    }

    pub fn audit_days(self) -> u32 {
        self.audit_days
    }

    pub fn idempotency_hours(self) -> u32 {
        self.idempotency_hours
    }
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            audit_days: 400,
            idempotency_hours: 48,
        }
    }
}

/// How far past their end rate windows and remembered notification ids
/// are kept before the purge deletes them: the instance that purges may
/// run ahead of the others' clocks, and a window it deleted while another
/// instance still counts in it would let that instance's takers start
/// again from zero.
pub const CLOCK_SKEW_MARGIN_SECONDS: i64 = 300;

/// What one purge deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Purged {
    pub idempotency: u64,
    pub rate_slots: u64,
    pub seen_ids: u64,
    pub audit_links: u64,
}

impl std::fmt::Display for Purged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "idempotency records {}, rate slots {}, seen ids {}, audit links {}",
            self.idempotency, self.rate_slots, self.seen_ids, self.audit_links
        )
    }
}

impl UseCases {
    /// Deletes what is past its retention and records the purge in the
    /// service's own audit chain.
    pub async fn purge(&self, ctx: &RequestContext, r: Retention) -> Result<Purged, StoreError> {
        let now = self.now();
        let ended_before = now.minus_seconds(CLOCK_SKEW_MARGIN_SECONDS);
        let p = Purged {
            idempotency: self
                .ports
                .idempotency
                .purge_created_before(now.minus_seconds(i64::from(r.idempotency_hours) * 3600))
                .await?,
            rate_slots: self.ports.rates.purge_expired(ended_before).await?,
            seen_ids: self.ports.seen.purge_expired(ended_before).await?,
            audit_links: self
                .ports
                .audit
                .purge_before(now.minus_seconds(i64::from(r.audit_days) * 86_400))
                .await?,
        };
        let e = ctx
            .event(now, AuditAction::RetentionPurge)
            .detail(p.to_string())
            .build();
        self.ports.audit.append_system(vec![e], now).await?;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_are_refused_below() {
        assert_eq!(Retention::new(179, 48), Err(RetentionError::AuditTooShort));
        assert_eq!(
            Retention::new(180, 23),
            Err(RetentionError::IdempotencyTooShort)
        );
        assert!(Retention::new(180, 24).is_ok());
    }
}
