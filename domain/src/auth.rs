//! Who is calling and what they may do: roles and a pure access decision.

use crate::binding::UserId;
use crate::error::{Denied, ForbiddenCode};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// An end user, on their own cards only.
    User,
    /// A merchant backend acting for its users.
    Service,
    /// An operator: freeze, review queue, erasure.
    Admin,
    /// Reads the audit log and consents, nothing else.
    Auditor,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::User, Role::Service, Role::Admin, Role::Auditor];

    pub const fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Service => "service",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Every operation the service offers, for the access table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    BindCard,
    VerifyCard,
    ReadCards,
    SetDefault,
    Unbind,
    Freeze,
    ReviewQueue,
    EraseUser,
    ReadAudit,
    ReadConsents,
    BinLookup,
    /// Share one's card with another user (family card), as its primary.
    ShareCard,
    /// End a share: the primary revokes, the secondary declines or leaves.
    RevokeShare,
    /// Accept a share made to one, as its secondary.
    AcceptShare,
}

impl Action {
    /// A stable name, as the audit trail records a refusal of it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::BindCard => "bind_card",
            Action::VerifyCard => "verify_card",
            Action::ReadCards => "read_cards",
            Action::SetDefault => "set_default_card",
            Action::Unbind => "unbind_card",
            Action::Freeze => "freeze_card",
            Action::ReviewQueue => "review_queue",
            Action::EraseUser => "erase_user",
            Action::ReadAudit => "read_audit",
            Action::ReadConsents => "read_consents",
            Action::BinLookup => "bin_lookup",
            Action::ShareCard => "share_card",
            Action::RevokeShare => "revoke_share",
            Action::AcceptShare => "accept_share",
        }
    }
}

/// The authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    /// Token subject: the user id for `user`, the client id otherwise.
    pub subject: String,
    pub role: Role,
}

impl Actor {
    pub fn new(subject: impl Into<String>, role: Role) -> Actor {
        Actor {
            subject: subject.into(),
            role,
        }
    }

    /// Whether this actor may do `action` on the cards of `target` (when the
    /// action concerns one user). A `user` acts on their own cards only.
    pub fn authorize(&self, action: Action, target: Option<&UserId>) -> Result<(), Denied> {
        use Action::*;
        let allowed = match self.role {
            Role::Service => matches!(
                action,
                BindCard
                    | VerifyCard
                    | ReadCards
                    | SetDefault
                    | Unbind
                    | BinLookup
                    | ReadConsents
                    | ShareCard
                    | RevokeShare
                    | AcceptShare
            ),
            Role::User => {
                matches!(
                    action,
                    BindCard
                        | VerifyCard
                        | ReadCards
                        | SetDefault
                        | Unbind
                        | BinLookup
                        | ReadConsents
                        | ShareCard
                        | RevokeShare
                        | AcceptShare
                ) && target.is_some_and(|t| t.as_str() == self.subject)
            }
            // Operators may end a share (as they may unbind a card), never
            // give or accept one: that is the users' consent.
            Role::Admin => matches!(
                action,
                ReadCards | Unbind | Freeze | ReviewQueue | EraseUser | BinLookup | RevokeShare
            ),
            Role::Auditor => matches!(action, ReadAudit | ReadConsents),
        };
        if allowed {
            Ok(())
        } else {
            Err(Denied::new(
                ForbiddenCode::Forbidden,
                "this caller may not do that",
            ))
        }
    }

    /// Whether the actor may address the cards of the user named `user`
    /// (as sent, any text) at all, whatever the action: a user acts on
    /// their own only. Every other role is decided per action by
    /// [`Actor::authorize`].
    pub fn may_address(&self, user: &str) -> Result<(), Denied> {
        if self.role == Role::User && user != self.subject {
            Err(Denied::new(
                ForbiddenCode::Forbidden,
                "this caller may not do that",
            ))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn a_user_addresses_their_own_cards_only_and_other_roles_any() {
        let a = Actor::new("alice", Role::User);
        assert!(a.may_address("alice").is_ok());
        for other in ["bob", "Alice", "alice ", "", "al%69ce"] {
            assert_eq!(
                a.may_address(other).unwrap_err().code,
                ErrorCode::Forbidden,
                "{other:?}"
            );
        }
        for role in [Role::Service, Role::Admin, Role::Auditor] {
            assert!(Actor::new("ops", role).may_address("bob").is_ok());
        }
    }

    #[test]
    fn user_only_own_cards() {
        let u = UserId::parse("alice").unwrap();
        let other = UserId::parse("bob").unwrap();
        let a = Actor::new("alice", Role::User);
        assert!(a.authorize(Action::ReadCards, Some(&u)).is_ok());
        assert_eq!(
            a.authorize(Action::ReadCards, Some(&other))
                .unwrap_err()
                .code,
            ErrorCode::Forbidden
        );
        assert!(a.authorize(Action::Freeze, Some(&u)).is_err());
        let aud = Actor::new("x", Role::Auditor);
        assert!(aud.authorize(Action::ReadCards, Some(&u)).is_err());
        assert!(aud.authorize(Action::ReadAudit, None).is_ok());
    }

    #[test]
    fn family_shares_are_the_users_own_and_operators_only_end_them() {
        let u = UserId::parse("alice").unwrap();
        let other = UserId::parse("bob").unwrap();
        let a = Actor::new("alice", Role::User);
        for action in [Action::ShareCard, Action::RevokeShare, Action::AcceptShare] {
            assert!(a.authorize(action, Some(&u)).is_ok(), "{action:?}");
            assert!(a.authorize(action, Some(&other)).is_err(), "{action:?}");
            assert!(Actor::new("b", Role::Service)
                .authorize(action, Some(&other))
                .is_ok());
            assert!(Actor::new("x", Role::Auditor)
                .authorize(action, Some(&u))
                .is_err());
        }
        let ops = Actor::new("ops", Role::Admin);
        assert!(ops.authorize(Action::RevokeShare, Some(&u)).is_ok());
        assert!(ops.authorize(Action::ShareCard, Some(&u)).is_err());
        assert!(ops.authorize(Action::AcceptShare, Some(&u)).is_err());
    }
}
