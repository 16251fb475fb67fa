//! # cardbind-domain
//!
//! What a card binding *is*: the values a bind request is made of, the rules
//! they obey and the status machine a binding moves through.
//!
//! This crate is pure and synchronous. It must never do I/O, never be async,
//! and never depend on serde, bson or poem: storage documents and HTTP bodies
//! live in the adapters and the app, and convert into these types by parsing.
//! A value of a type in this crate is valid by construction ("parse, don't
//! validate"): there is no way to hold a `CardNumber` that fails its checks.
//!
//! Card data types (`CardNumber`, `Cvv`, `ResidentId`, `Phone`,
//! `HolderName`) mask themselves in `Debug` and `Display`, so that a stray
//! `{:?}` in a log line can never print them in clear.

pub mod auth;
pub mod binding;
pub mod bins;
pub mod card;
pub mod consent;
pub mod error;
pub mod failure;
pub mod family;
pub mod ids;
pub mod person;
pub mod rules;
pub mod sealed;
pub mod time;
pub mod wallet;

pub use auth::{Action, Actor, Role};
pub use binding::{
    Binding, BindingParts, BindingStatus, CardSummary, CardToBind, ChannelCode, FailureReason,
    NextAction, StartOutcome, CONSENTS_KEPT,
};
pub use bins::{
    BinEntry, BinInfo, BinRange, BinTable, BinTableError, CardType, ChannelCardRule, Country,
    Currency, Issuer, IssuerCode, UnknownBins,
};
pub use card::{CardBrand, CardNumber, Cvv, Expiry};
pub use consent::{ConsentGiven, ConsentRecord};
pub use error::{
    AnyRefusal, BadRequestCode, Clash, Class, ConflictCode, Declined, Denied, ErrorClass,
    ErrorCode, ForbiddenCode, Invalid, Missing, NotFoundCode, Refused, RuleRefusal, StateRefusal,
    TooManyRequestsCode, UnprocessableCode,
};
pub use family::{
    offerable, usable, Given, Money, NewShare, Received, Share, ShareRefusal, ShareTerms, SharedIn,
    Standing,
};
pub use ids::{BindingId, ChannelName, Fingerprint, ShareId, UserId};
pub use person::{HolderName, Phone, ResidentId};
pub use rules::{address_block, CardCap, RateDecision, RateRule, VerificationPolicy};
pub use sealed::{SealedBlob, SealedCard, SealedField};
pub use time::Timestamp;
pub use wallet::{Opened, Wallet, ENDED_CARDS_KEPT};
