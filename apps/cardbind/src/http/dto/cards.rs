//! Cards as shown: masked, with what the BIN table said of them.

use cardbind_domain::{BinEntry, BinInfo, Binding, BindingStatus, CardBrand, CardType, NextAction};
use cardbind_usecases::family::SharedCardView;
use cardbind_usecases::{CardPage, CardView, Listed, WalletPage};
use poem_openapi::{Enum, Object};

use super::{DateTime, SharedDto};

/// Status of a binding.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
pub enum CardStatus {
    PendingVerification,
    Active,
    Frozen,
    Inactive,
    PendingReview,
    Failed,
}

impl From<BindingStatus> for CardStatus {
    fn from(s: BindingStatus) -> CardStatus {
        match s {
            BindingStatus::PendingVerification => CardStatus::PendingVerification,
            BindingStatus::Active => CardStatus::Active,
            BindingStatus::Frozen => CardStatus::Frozen,
            BindingStatus::Inactive => CardStatus::Inactive,
            BindingStatus::PendingReview => CardStatus::PendingReview,
            BindingStatus::Failed => CardStatus::Failed,
        }
    }
}

/// Card scheme, from the BIN.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
pub enum Brand {
    Visa,
    Mastercard,
    Amex,
    #[oai(rename = "unionpay")]
    UnionPay,
    Jcb,
    Discover,
    DinersClub,
    Maestro,
    Mir,
}

impl From<CardBrand> for Brand {
    fn from(b: CardBrand) -> Brand {
        match b {
            CardBrand::Visa => Brand::Visa,
            CardBrand::Mastercard => Brand::Mastercard,
            CardBrand::Amex => Brand::Amex,
            CardBrand::UnionPay => Brand::UnionPay,
            CardBrand::Jcb => Brand::Jcb,
            CardBrand::Discover => Brand::Discover,
            CardBrand::DinersClub => Brand::DinersClub,
            CardBrand::Maestro => Brand::Maestro,
            CardBrand::Mir => Brand::Mir,
        }
    }
}

/// What the user must do next.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
pub enum NextActionType {
    /// Enter the SMS code with `verifyCard`.
    Otp,
    /// Open `url` (or show it as a QR code) to sign the agreement.
    Redirect,
}

/// Something the user must do to finish the binding.
#[derive(Object, Clone, Debug, PartialEq, Eq)]
pub struct NextActionDto {
    #[oai(rename = "type")]
    pub kind: NextActionType,
    /// For `redirect`: the agreement signing URL.
    #[oai(skip_serializing_if_is_none)]
    pub url: Option<String>,
    /// For `otp`: the masked phone the code went to.
    #[oai(skip_serializing_if_is_none)]
    pub phone_hint: Option<String>,
    /// When the verification window closes. After it a code is refused
    /// (`422 verification_expired`) and the card fails; an agreement not
    /// signed by then fails the card at the next reconciliation (one the
    /// channel reports signed still activates it). A bind of the card
    /// again starts a new window. The card keeps showing
    /// `pending_verification` with this action until one of those writes
    /// its failure.
    #[oai(skip_serializing_if_is_none)]
    pub expires_at: Option<DateTime>,
}

impl NextActionDto {
    /// The action, with the end of the card's verification window.
    pub fn of(a: &NextAction, expires_at: Option<cardbind_domain::Timestamp>) -> NextActionDto {
        let expires_at = expires_at.map(DateTime::from);
        match a {
            NextAction::Otp { phone_hint } => NextActionDto {
                kind: NextActionType::Otp,
                url: None,
                phone_hint: Some(phone_hint.clone()),
                expires_at,
            },
            NextAction::Redirect { url } => NextActionDto {
                kind: NextActionType::Redirect,
                url: Some(url.clone()),
                phone_hint: None,
                expires_at,
            },
        }
    }
}

/// A bound card as shown to its reader: masked (brand, BIN, last four,
/// expiry), with its issuer, type and currency when the BIN table knows
/// them. Never a full card number, ID number or phone number. A card
/// another user shares with the reader (a family card) is marked by
/// `shared` and shown as it was when it was shared, with nothing of its
/// holder's (no user id, card id, agreement or personal data).
#[derive(Object, Clone, Debug, PartialEq, Eq)]
pub struct Card {
    /// The card (binding) id; for a shared card, its share id (`share_…`).
    pub id: String,
    /// The reader: the card's holder, or the user it is shared with.
    pub user_id: String,
    pub status: CardStatus,
    pub brand: Brand,
    /// First six digits of the card number.
    pub bin: String,
    /// Last four digits of the card number.
    pub last4: String,
    /// The issuing bank, when the BIN table knows the card's BIN.
    #[oai(skip_serializing_if_is_none)]
    pub issuer: Option<IssuerDto>,
    /// Debit, credit or prepaid, when known.
    #[oai(skip_serializing_if_is_none)]
    pub card_type: Option<CardTypeDto>,
    /// The card's currency, ISO 4217 alpha-3 (`CNY`), when known.
    #[oai(skip_serializing_if_is_none)]
    pub currency: Option<String>,
    /// Expiry month, 1–12.
    #[oai(validator(minimum(value = "1"), maximum(value = "12")))]
    pub expiry_month: u32,
    /// Expiry year, four digits (a two-digit year was read as 20YY).
    #[oai(validator(minimum(value = "2000"), maximum(value = "9999")))]
    pub expiry_year: u32,
    /// The payment channel the card is bound through: `mock`, `alipay` or
    /// `wechat` (the values of `ChannelKind`).
    pub channel: String,
    /// Whether this is the user's default card (only an active card can be).
    pub is_default: bool,
    /// Present while the binding waits for the user (`pending_verification`).
    #[oai(skip_serializing_if_is_none)]
    pub next_action: Option<NextActionDto>,
    /// Stable code of the failure, when `status` is `failed`: `invalid_otp`
    /// (too many wrong codes), `verification_expired` (the verification
    /// window closed, or the channel no longer knows the binding),
    /// `rejected_by_operator` (refused from the review queue),
    /// `agreement_terminated` (the channel ended the agreement before it was
    /// active), or the channel's own refusal code (1–64 of `A-Z a-z 0-9 _ .
    /// -`, e.g. the mock's `card_declined`), `declined` when the channel gave
    /// none that looks like a code.
    #[oai(skip_serializing_if_is_none)]
    pub failure_code: Option<String>,
    /// Present when another user shares this card with the reader (a
    /// family card, 副卡): the share and its terms.
    #[oai(skip_serializing_if_is_none)]
    pub shared: Option<SharedDto>,
    /// Present while an operator's freeze holds the card: when it was
    /// frozen. A frozen card has it; a card unbound (or failed) while
    /// frozen keeps it, and is not bound again (`409
    /// invalid_state_transition`) until an operator's unfreeze lifts the
    /// hold.
    #[oai(skip_serializing_if_is_none)]
    pub held_since: Option<DateTime>,
    pub created_at: DateTime,
    pub updated_at: DateTime,
}

impl Card {
    pub fn of(b: &Binding, is_default: bool) -> Card {
        let waiting = b.status == BindingStatus::PendingVerification;
        Card {
            id: b.id.as_str().to_owned(),
            user_id: b.user_id.as_str().to_owned(),
            status: b.status.into(),
            brand: b.card.brand.into(),
            bin: b.card.bin.clone(),
            last4: b.card.last4.clone(),
            issuer: None,
            card_type: None,
            currency: None,
            expiry_month: b.card.expiry.month(),
            expiry_year: u32::try_from(b.card.expiry.year()).unwrap_or_default(),
            channel: b.channel.as_str().to_owned(),
            is_default,
            next_action: if waiting {
                b.next_action
                    .as_ref()
                    .map(|a| NextActionDto::of(a, b.verification_expires_at))
            } else {
                None
            },
            failure_code: if b.status == BindingStatus::Failed {
                b.failure.as_ref().map(|f| f.as_str().to_owned())
            } else {
                None
            },
            shared: None,
            held_since: b.held_since.map(Into::into),
            created_at: b.created_at.into(),
            updated_at: b.updated_at.into(),
        }
    }
}

impl Card {
    /// Adds what the BIN table says about the card.
    pub fn with_facts(mut self, facts: IssuerFacts) -> Card {
        self.issuer = facts.issuer;
        self.card_type = facts.card_type;
        self.currency = facts.currency;
        self
    }
}

impl Card {
    /// A card shared with the reader: the snapshot taken when it was
    /// shared, `active` (only usable shared cards are listed), and its
    /// share.
    pub fn shared(v: &SharedCardView) -> Card {
        let m = &v.mirror;
        let facts = IssuerFacts::of_info(m.card.facts.as_ref());
        let accepted = m.consent.as_ref().map_or(m.invited_at, |c| c.accepted_at);
        Card {
            id: m.card_id().as_str().to_owned(),
            user_id: v.user.as_str().to_owned(),
            status: CardStatus::Active,
            brand: m.card.brand.into(),
            bin: m.card.bin.clone(),
            last4: m.card.last4.clone(),
            issuer: None,
            card_type: None,
            currency: None,
            expiry_month: m.card.expiry.month(),
            expiry_year: u32::try_from(m.card.expiry.year()).unwrap_or_default(),
            channel: m.channel.as_str().to_owned(),
            is_default: v.is_default,
            next_action: None,
            failure_code: None,
            shared: SharedDto::of(v),
            // The holder's hold is theirs: a held card is not shared (only
            // usable shared cards are listed).
            held_since: None,
            created_at: m.invited_at.into(),
            updated_at: accepted.into(),
        }
        .with_facts(facts)
    }
}

impl From<&Listed> for Card {
    fn from(l: &Listed) -> Card {
        match l {
            Listed::Own(v) => Card::from(v),
            Listed::Shared(s) => Card::shared(s),
        }
    }
}

impl From<&WalletPage> for CardList {
    fn from(p: &WalletPage) -> CardList {
        CardList {
            cards: p.cards.iter().map(Card::from).collect(),
            next_after: p.next.as_ref().map(|b| b.as_str().to_owned()),
        }
    }
}

impl From<&CardView> for Card {
    /// The card with what the BIN table said of it when it was bound.
    fn from(v: &CardView) -> Card {
        let facts = IssuerFacts::of_info(v.binding.card.facts.as_ref());
        Card::of(&v.binding, v.is_default).with_facts(facts)
    }
}

/// One page of cards.
#[derive(Object, Clone, Debug)]
pub struct CardList {
    pub cards: Vec<Card>,
    /// Pass as `after` for the next page. Absent when there is no further
    /// page to ask for; a full page carries it even when it is the last (the
    /// page after that is empty), and a page of the review queue may carry it
    /// with fewer than `limit` cards (entries no longer waiting are left out).
    #[oai(skip_serializing_if_is_none)]
    pub next_after: Option<String>,
}

impl From<&CardPage> for CardList {
    fn from(p: &CardPage) -> CardList {
        CardList {
            cards: p.cards.iter().map(Card::from).collect(),
            next_after: p.next.as_ref().map(|b| b.as_str().to_owned()),
        }
    }
}

/// The bank that issued a card.
#[derive(Object, Clone, Debug, PartialEq, Eq)]
pub struct IssuerDto {
    /// The bank's code, as Chinese payment channels name banks (`CMB`,
    /// `ICBC`, `COMM`…); `TEST` for published test card numbers.
    pub code: String,
    /// Its name in Chinese, as wallets show it (`招商银行`).
    pub name_zh: String,
    pub name_en: String,
}

/// Debit (储蓄卡), credit (信用卡) or prepaid (预付卡).
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
pub enum CardTypeDto {
    Debit,
    Credit,
    Prepaid,
}

impl From<CardType> for CardTypeDto {
    fn from(t: CardType) -> CardTypeDto {
        match t {
            CardType::Debit => CardTypeDto::Debit,
            CardType::Credit => CardTypeDto::Credit,
            CardType::Prepaid => CardTypeDto::Prepaid,
        }
    }
}

/// What the BIN table says about a card, each part only when known.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IssuerFacts {
    pub issuer: Option<IssuerDto>,
    pub card_type: Option<CardTypeDto>,
    pub country: Option<String>,
    pub currency: Option<String>,
}

impl IssuerFacts {
    pub fn of(entry: Option<&BinEntry>) -> IssuerFacts {
        IssuerFacts::of_info(entry.map(|e| &e.info))
    }

    pub fn of_info(info: Option<&BinInfo>) -> IssuerFacts {
        let Some(i) = info else {
            return IssuerFacts::default();
        };
        IssuerFacts {
            issuer: Some(IssuerDto {
                code: i.issuer.code().as_str().to_owned(),
                name_zh: i.issuer.name_zh().to_owned(),
                name_en: i.issuer.name_en().to_owned(),
            }),
            card_type: i.card_type.map(CardTypeDto::from),
            country: i.country.map(|c| c.code()),
            currency: i.currency.map(|c| c.code().to_owned()),
        }
    }
}

/// What is known about a BIN: its card scheme, and what the BIN table
/// says (issuer, card type, issuing country, currency) where it knows.
#[derive(Object, Clone, Debug)]
pub struct BinInfoDto {
    pub bin: String,
    pub brand: Brand,
    /// The issuing bank, when the BIN table knows the BIN.
    #[oai(skip_serializing_if_is_none)]
    pub issuer: Option<IssuerDto>,
    #[oai(skip_serializing_if_is_none)]
    pub card_type: Option<CardTypeDto>,
    /// Issuing country, ISO 3166-1 alpha-2 (`CN`).
    #[oai(skip_serializing_if_is_none)]
    pub country: Option<String>,
    /// The card's currency, ISO 4217 alpha-3 (`CNY`).
    #[oai(skip_serializing_if_is_none)]
    pub currency: Option<String>,
}

impl BinInfoDto {
    pub fn new(bin: String, brand: CardBrand, facts: IssuerFacts) -> BinInfoDto {
        BinInfoDto {
            bin,
            brand: brand.into(),
            issuer: facts.issuer,
            card_type: facts.card_type,
            country: facts.country,
            currency: facts.currency,
        }
    }
}
