//! The card scheme (and, with a BIN table, the issuer) of a BIN.

use cardbind_domain::{
    Action, BadRequestCode, BinInfo, CardBrand, Invalid, Missing, NotFoundCode, Role, UserId,
};

use crate::context::RequestContext;
use crate::error::op_error;
use crate::UseCases;

op_error! {
    /// Why a BIN lookup was refused.
    pub enum BinError { BadRequest, Forbidden, NotFound }
}

/// The first 6 to 8 digits of a card number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bin(String);

impl Bin {
    pub fn parse(s: &str) -> Result<Bin, Invalid> {
        if (6..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Bin(s.to_owned()))
        } else {
            Err(Invalid::field(
                BadRequestCode::InvalidRequest,
                "bin",
                "a BIN is 6 to 8 digits",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What is known of a BIN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinFacts {
    pub bin: Bin,
    pub brand: CardBrand,
    /// What the BIN table in use says of it (issuer, card type, country,
    /// currency), when it covers it.
    pub facts: Option<BinInfo>,
}

impl UseCases {
    pub async fn lookup_bin(&self, ctx: &RequestContext, bin: Bin) -> Result<BinFacts, BinError> {
        // Any caller may look a BIN up; a user token on its own behalf.
        let own = (ctx.actor.role == Role::User)
            .then(|| UserId::parse(&ctx.actor.subject).ok())
            .flatten();
        self.authorize(ctx, Action::BinLookup, own.as_ref()).await?;
        let brand = CardBrand::from_iin(bin.as_str()).ok_or_else(|| {
            Missing::field(
                NotFoundCode::NotFound,
                "bin",
                "no supported card scheme issues this BIN",
            )
        })?;
        let facts = self.ports.bins.lookup(bin.as_str()).map(|e| e.info);
        Ok(BinFacts { bin, brand, facts })
    }
}
