//! Family cards: a share request, shares as their holder sees them, and
//! cards shared with a user as that user sees them (masked, never the
//! holder's data).

use cardbind_domain::{Money, Share, ShareTerms, Standing, Timestamp, UserId};
use cardbind_usecases::family::{ShareForm, ShareView, SharedCardView, SharedStatus};
use poem_openapi::{Enum, Object};

use super::{Brand, CardTypeDto, ConsentBody, DateTime, IssuerDto, IssuerFacts};
use cardbind_domain::ConsentGiven;

/// An amount of money.
#[derive(Object, Clone, Debug, PartialEq, Eq)]
#[oai(deny_unknown_fields)]
pub struct MoneyBody {
    /// In minor units of the currency (fen for `CNY`: `50000` is ¥500.00;
    /// yen for `JPY`): from 1 to ten million units of the currency (for
    /// `CNY`, 1 000 000 000).
    #[oai(validator(minimum(value = "1"), maximum(value = "100000000000")))]
    pub amount: i64,
    /// ISO 4217 alpha-3 code with a minor unit (`CNY`, `HKD`, `USD`…;
    /// the list is the schema's `enum`); another code is
    /// `invalid_currency`.
    pub currency: crate::http::params::AmountCurrency,
}

/// An amount of money.
#[derive(Object, Clone, Debug, PartialEq, Eq)]
pub struct MoneyDto {
    /// In minor units of the currency (fen for `CNY`).
    pub amount: i64,
    /// ISO 4217 alpha-3.
    pub currency: String,
}

impl From<Money> for MoneyDto {
    fn from(m: Money) -> MoneyDto {
        MoneyDto {
            amount: m.minor_units_i64(),
            currency: m.currency().code().to_owned(),
        }
    }
}

/// Share one of the user's active cards with another user (a family
/// member), who may use it once they accept.
#[derive(Object, Clone, Debug)]
#[oai(deny_unknown_fields)]
pub struct ShareCardBody {
    /// The user to share with (the platform's user id; not the holder).
    pub secondary_user_id: crate::http::params::UserIdParam,
    /// The most the secondary may spend a calendar month. The service
    /// records it and shows it to whoever takes payments with the card
    /// (channel, merchant), which enforces it: cardbind moves no money.
    pub monthly_limit: MoneyBody,
    /// When the share ends by itself: in the future, at most five years
    /// ahead (`invalid_share_expiry` otherwise). Usable strictly before.
    pub expires_at: DateTime,
    /// The holder's consent to share the card.
    pub consent: ConsentBody,
}

/// The secondary accepts a share.
#[derive(Object, Clone, Debug)]
#[oai(deny_unknown_fields)]
pub struct AcceptShareBody {
    /// The secondary's consent to the share's terms.
    pub consent: ConsentBody,
}

impl ConsentBody {
    /// The consent as given, with the request's IP and user agent where
    /// the body leaves them out.
    pub fn into_given(self, client_ip: Option<String>, user_agent: Option<String>) -> ConsentGiven {
        ConsentGiven {
            text_version: self.text_version.into_string(),
            text_hash: self.text_sha256.into_string(),
            ip: self.ip.map(|ip| ip.to_string()).or(client_ip),
            user_agent: self.user_agent.or(user_agent),
        }
    }
}

impl ShareCardBody {
    /// The use case's form (`expires_at` is an RFC 3339 instant by its
    /// schema).
    pub fn into_form(
        self,
        user: UserId,
        card: cardbind_domain::BindingId,
        client_ip: Option<String>,
        user_agent: Option<String>,
    ) -> Result<ShareForm, cardbind_domain::Invalid> {
        let expires_at =
            crate::http::formats::parse_rfc3339(&self.expires_at.0).ok_or_else(|| {
                cardbind_domain::Invalid::field(
                    cardbind_domain::BadRequestCode::InvalidShareExpiry,
                    ShareTerms::EXPIRES_FIELD,
                    "expires_at must be an RFC 3339 date-time",
                )
            })?;
        Ok(ShareForm {
            user,
            card,
            secondary: self.secondary_user_id.into_string(),
            amount: self.monthly_limit.amount,
            currency: self.monthly_limit.currency.into_string(),
            expires_at,
            consent: self.consent.into_given(client_ip, user_agent),
        })
    }
}

/// Where a share stands for its holder.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
pub enum ShareStatus {
    /// Not accepted yet.
    Invited,
    /// Accepted and usable.
    Active,
    /// The card is frozen: not usable while it is.
    Suspended,
    Expired,
    /// Revoked by the holder or an operator, left or declined by the
    /// secondary, or ended with the card's unbind or an erasure.
    Revoked,
}

impl From<Standing> for ShareStatus {
    fn from(s: Standing) -> ShareStatus {
        match s {
            Standing::Invited => ShareStatus::Invited,
            Standing::Active => ShareStatus::Active,
            Standing::Suspended => ShareStatus::Suspended,
            Standing::Expired => ShareStatus::Expired,
            Standing::Revoked => ShareStatus::Revoked,
        }
    }
}

/// A share of one of the user's cards, as its holder sees it.
#[derive(Object, Clone, Debug)]
pub struct ShareDto {
    /// The share id (`share_…`).
    pub id: String,
    /// The holder's card.
    pub card_id: String,
    /// The user it was made to.
    pub secondary_user_id: String,
    pub status: ShareStatus,
    pub monthly_limit: MoneyDto,
    pub expires_at: DateTime,
    pub created_at: DateTime,
    /// When the secondary accepted.
    #[oai(skip_serializing_if_is_none)]
    pub accepted_at: Option<DateTime>,
    #[oai(skip_serializing_if_is_none)]
    pub revoked_at: Option<DateTime>,
    /// Who ended it: a token subject (the holder, a backend, an operator,
    /// the secondary) or `channel:NAME`.
    #[oai(skip_serializing_if_is_none)]
    pub revoked_by: Option<String>,
}

impl From<&ShareView> for ShareDto {
    fn from(v: &ShareView) -> ShareDto {
        let s: &Share = &v.share;
        ShareDto {
            id: s.id.as_str().to_owned(),
            card_id: s.card.as_str().to_owned(),
            secondary_user_id: s.secondary.as_str().to_owned(),
            status: v.standing.into(),
            monthly_limit: s.terms.monthly_limit.into(),
            expires_at: s.terms.expires_at.into(),
            created_at: s.created_at.into(),
            accepted_at: s.accepted_at.map(DateTime::from),
            revoked_at: s.revoked_at.map(DateTime::from),
            revoked_by: s.revoked_by.clone(),
        }
    }
}

/// The shares of a card, newest first (live ones and the most recent
/// ended ones).
#[derive(Object, Clone, Debug)]
pub struct ShareList {
    pub shares: Vec<ShareDto>,
}

/// What a card's `shared` says: the card is shared with the reader by
/// another user (a family card).
#[derive(Object, Clone, Debug, PartialEq, Eq)]
pub struct SharedDto {
    pub share_id: String,
    pub monthly_limit: MoneyDto,
    /// Usable strictly before.
    pub expires_at: DateTime,
    pub accepted_at: DateTime,
}

impl SharedDto {
    pub fn of(v: &SharedCardView) -> Option<SharedDto> {
        let terms = v.terms?;
        let accepted = v.mirror.consent.as_ref()?.accepted_at;
        Some(SharedDto {
            share_id: v.mirror.share.as_str().to_owned(),
            monthly_limit: terms.monthly_limit.into(),
            expires_at: terms.expires_at.into(),
            accepted_at: accepted.into(),
        })
    }
}

/// Where a share made to the reader stands.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
pub enum SharedStatusDto {
    /// Offered: accept it with `acceptShare` (or decline with `leaveShare`).
    Invited,
    /// Accepted and usable now: it is in the reader's card list.
    Accepted,
    /// Ended for the reader.
    Ended,
}

impl From<SharedStatus> for SharedStatusDto {
    fn from(s: SharedStatus) -> SharedStatusDto {
        match s {
            SharedStatus::Invited => SharedStatusDto::Invited,
            SharedStatus::Accepted => SharedStatusDto::Accepted,
            SharedStatus::Ended => SharedStatusDto::Ended,
        }
    }
}

/// A card shared with the reader, as the reader sees it: masked (brand,
/// last four, issuer facts) and marked by its share. Never the holder's
/// user id, card id, agreement or personal data.
#[derive(Object, Clone, Debug)]
pub struct SharedCardDto {
    /// The share id; also the card's id in the reader's card list.
    pub share_id: String,
    pub status: SharedStatusDto,
    pub brand: Brand,
    pub last4: String,
    #[oai(skip_serializing_if_is_none)]
    pub issuer: Option<IssuerDto>,
    #[oai(skip_serializing_if_is_none)]
    pub card_type: Option<CardTypeDto>,
    /// The card's currency, ISO 4217 alpha-3, when known.
    #[oai(skip_serializing_if_is_none)]
    pub currency: Option<String>,
    /// Absent only for an ended share whose holder no longer keeps it.
    #[oai(skip_serializing_if_is_none)]
    pub monthly_limit: Option<MoneyDto>,
    pub expires_at: DateTime,
    pub invited_at: DateTime,
    #[oai(skip_serializing_if_is_none)]
    pub accepted_at: Option<DateTime>,
    /// Whether it is the reader's default card.
    pub is_default: bool,
}

impl From<&SharedCardView> for SharedCardDto {
    fn from(v: &SharedCardView) -> SharedCardDto {
        let m = &v.mirror;
        let facts = IssuerFacts::of_info(m.card.facts.as_ref());
        let expires: Timestamp = v.terms.map_or(m.expires_at, |t| t.expires_at);
        SharedCardDto {
            share_id: m.share.as_str().to_owned(),
            status: v.status.into(),
            brand: m.card.brand.into(),
            last4: m.card.last4.clone(),
            issuer: facts.issuer,
            card_type: facts.card_type,
            currency: facts.currency,
            monthly_limit: v.terms.map(|t| t.monthly_limit.into()),
            expires_at: expires.into(),
            invited_at: m.invited_at.into(),
            accepted_at: m.consent.as_ref().map(|c| c.accepted_at.into()),
            is_default: v.is_default,
        }
    }
}

/// Shares made to the reader that they may act on: invitations and
/// accepted shares usable now.
#[derive(Object, Clone, Debug)]
pub struct SharedCardList {
    pub shared_cards: Vec<SharedCardDto>,
}
