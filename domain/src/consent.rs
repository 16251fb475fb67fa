//! The consent a user gives to bind a card.

use crate::error::{BadRequestCode, Invalid};
use crate::ids::ChannelName;
use crate::time::Timestamp;

/// The consent a user gave to bind one card (on the first bind and on every
/// bind again), and its end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsentRecord {
    /// The consent text version the user accepted.
    pub text_version: String,
    /// SHA-256 (lower-case hex) of that text as shown.
    pub text_hash: String,
    pub accepted_at: Timestamp,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub channel: ChannelName,
    /// The channel's agreement once the card is active.
    pub agreement_id: Option<String>,
    pub revoked_at: Option<Timestamp>,
    /// Who ended it: the token subject, or `channel:NAME`.
    pub revoked_by: Option<String>,
}

/// The consent as the client sent it, before it is checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsentGiven {
    pub text_version: String,
    pub text_hash: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl ConsentGiven {
    pub const FIELD: &'static str = "consent";
    /// User agents are kept up to this many characters.
    pub const USER_AGENT_MAX: usize = 512;

    /// Checks the consent: a text version of 1–64 printable characters and
    /// the SHA-256 (hex) of the text shown.
    pub fn accept(self, channel: ChannelName, at: Timestamp) -> Result<ConsentRecord, Invalid> {
        let version_ok = (1..=64).contains(&self.text_version.len())
            && self.text_version.bytes().all(|b| (0x20..0x7f).contains(&b));
        let hash_ok =
            self.text_hash.len() == 64 && self.text_hash.bytes().all(|b| b.is_ascii_hexdigit());
        if !(version_ok && hash_ok) {
            return Err(Invalid::field(
                BadRequestCode::InvalidRequest,
                Self::FIELD,
                "consent needs a text_version (1-64 printable characters) and the SHA-256 hex of the text shown",
            ));
        }
        let user_agent = self.user_agent.map(|ua| {
            ua.chars()
                .filter(|c| !c.is_control())
                .take(Self::USER_AGENT_MAX)
                .collect()
        });
        Ok(ConsentRecord {
            text_version: self.text_version,
            text_hash: self.text_hash.to_ascii_lowercase(),
            accepted_at: at,
            ip: self.ip,
            user_agent,
            channel,
            agreement_id: None,
            revoked_at: None,
            revoked_by: None,
        })
    }
}
