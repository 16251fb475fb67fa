//! What a channel takes: the card types and countries it is configured for.

use super::{BinInfo, CardType, Country};
use crate::card::CardNumber;
use crate::error::{Declined, UnprocessableCode};

/// What a channel does with a card whose BIN the table does not know.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum UnknownBins {
    /// Take it, as if no restriction were configured (the default: the
    /// built-in table knows few BINs).
    #[default]
    Accept,
    /// Refuse it with `card_not_accepted_by_channel`.
    Refuse,
}

impl UnknownBins {
    pub const fn as_str(self) -> &'static str {
        match self {
            UnknownBins::Accept => "accept",
            UnknownBins::Refuse => "refuse",
        }
    }

    pub fn parse(s: &str) -> Option<UnknownBins> {
        [UnknownBins::Accept, UnknownBins::Refuse]
            .into_iter()
            .find(|u| u.as_str() == s)
    }
}

/// Which cards a channel takes, by their BIN data. Empty lists restrict
/// nothing.
///
/// * `card_types`: when not empty, a card is taken only if its BIN entry
///   names one of these types (an entry without a type does not qualify).
/// * `countries`: likewise for the issuing country.
/// * `unknown_bins`: what happens to a card the table does not know at all;
///   its type and country are then unknown, so the two lists cannot decide.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChannelCardRule {
    pub card_types: Vec<CardType>,
    pub countries: Vec<Country>,
    pub unknown_bins: UnknownBins,
}

impl ChannelCardRule {
    /// Takes every card.
    pub fn accept_all() -> ChannelCardRule {
        ChannelCardRule::default()
    }

    /// Whether the rule restricts anything.
    pub fn is_open(&self) -> bool {
        self.card_types.is_empty()
            && self.countries.is_empty()
            && self.unknown_bins == UnknownBins::Accept
    }

    /// Decides a card from its BIN data (`None`: the table does not know
    /// it). Refusals are `card_not_accepted_by_channel` on `card_number`;
    /// messages name what the channel takes, never the card.
    pub fn check(&self, info: Option<&BinInfo>) -> Result<(), Declined> {
        let refuse = |message: String| {
            Err(Declined::field(
                UnprocessableCode::CardNotAcceptedByChannel,
                CardNumber::FIELD,
                message,
            ))
        };
        let Some(info) = info else {
            return match self.unknown_bins {
                UnknownBins::Accept => Ok(()),
                UnknownBins::Refuse => {
                    refuse("this channel takes only cards whose issuer is known".into())
                }
            };
        };
        if !self.card_types.is_empty()
            && !info.card_type.is_some_and(|t| self.card_types.contains(&t))
        {
            let names: Vec<&str> = self.card_types.iter().map(|t| t.as_str()).collect();
            return refuse(format!(
                "this channel takes only {} cards",
                names.join(" or ")
            ));
        }
        if !self.countries.is_empty() && !info.country.is_some_and(|c| self.countries.contains(&c))
        {
            let names: Vec<String> = self.countries.iter().map(Country::code).collect();
            return refuse(format!(
                "this channel takes only cards issued in {}",
                names.join(", ")
            ));
        }
        Ok(())
    }
}
