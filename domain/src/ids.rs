//! Identifiers: users, bindings, channels, and the keyed card fingerprint.

use std::fmt;

use crate::error::{BadRequestCode, Invalid};

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident, $field:literal, $code:expr) => {
        $(#[$m])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// 1–64 characters of `A–Z a–z 0–9 _ - . : @`, starting with a
            /// letter or digit (names starting with `@` are reserved for the
            /// service's own records, such as the vault's `@fingerprint` key).
            pub fn parse(s: &str) -> Result<Self, Invalid> {
                let ok = (1..=64).contains(&s.len())
                    && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                    && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.:@".contains(&b));
                if ok {
                    Ok($name(s.to_owned()))
                } else {
                    Err(Invalid::field(
                        $code,
                        $field,
                        concat!($field, " must be 1 to 64 characters of A-Z a-z 0-9 _ - . : @, starting with a letter or digit"),
                    ))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// The platform's identifier for one of its users.
    UserId, "user_id", BadRequestCode::InvalidUserId
);
id_type!(
    /// Our identifier for a binding (the `card_id` of the API).
    BindingId, "card_id", BadRequestCode::InvalidRequest
);
id_type!(
    /// The name a payment channel is configured under (`mock`, `alipay`, `wechat`).
    ChannelName, "channel", BadRequestCode::InvalidRequest
);
id_type!(
    /// Our identifier for a family share of a card (`share_…`). In the
    /// secondary user's card list the shared card is known by this id.
    ShareId, "share_id", BadRequestCode::InvalidRequest
);

impl ShareId {
    /// Every share id starts with this, so that a shared card's id can never
    /// be taken for one of the user's own cards (binding ids are UUIDs).
    pub const PREFIX: &'static str = "share_";

    /// A share id from a fresh opaque id (`share_{opaque}`), or `None` when
    /// the result would not be a valid id.
    pub fn new(opaque: &str) -> Option<ShareId> {
        ShareId::parse(&format!("{}{opaque}", Self::PREFIX)).ok()
    }

    /// The id as the secondary's card id (the same text; every share id is
    /// a valid card id).
    pub fn card_id(&self) -> BindingId {
        BindingId(self.0.clone())
    }

    /// The share a card id of the secondary's list names, when it names
    /// one.
    pub fn of_card_id(id: &BindingId) -> Option<ShareId> {
        id.0.starts_with(Self::PREFIX)
            .then(|| ShareId(id.0.clone()))
    }
}

impl BindingId {
    /// The hyphenated form of a 128-bit UUID (always a valid id).
    pub fn from_uuid_bytes(b: [u8; 16]) -> BindingId {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(36);
        for (i, byte) in b.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                s.push('-');
            }
            s.push(char::from(HEX[usize::from(byte >> 4)]));
            s.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        BindingId(s)
    }
}

/// A keyed, versioned fingerprint of a PAN: `v{version}:{hex}`. It finds the
/// same card again without storing it; it is never a plain hash.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    version: u32,
    hex: String,
}

impl Fingerprint {
    pub fn new(version: u32, hex: String) -> Fingerprint {
        Fingerprint { version, hex }
    }

    pub fn parse(s: &str) -> Option<Fingerprint> {
        let rest = s.strip_prefix('v')?;
        let (v, hex) = rest.split_once(':')?;
        let version = v.parse().ok()?;
        (!hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| Fingerprint {
            version,
            hex: hex.to_owned(),
        })
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    /// What an erased user's card keeps in place of its fingerprint:
    /// version 0 (no fingerprint key has it, so no card number ever gives
    /// it) and the card's id, so it matches no card and no other erased one.
    pub fn erased(card: &BindingId) -> Fingerprint {
        Fingerprint {
            version: 0,
            hex: card.as_str().bytes().map(|b| format!("{b:02x}")).collect(),
        }
    }

    /// Whether this is [`Fingerprint::erased`]'s.
    pub fn is_erased(&self) -> bool {
        self.version == 0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}:{}", self.version, self.hex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_and_malformed_ids() {
        assert!(UserId::parse("alice@example.com").is_ok());
        assert!(UserId::parse("@fingerprint").is_err());
        assert!(UserId::parse("-x").is_err());
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse(&"a".repeat(65)).is_err());
        assert!(UserId::parse("a b").is_err());
        assert_eq!(UserId::parse("../x").unwrap_err().field, Some("user_id"));
    }

    #[test]
    fn uuid_ids() {
        let id = BindingId::from_uuid_bytes([
            0x01, 0x9a, 0, 1, 2, 3, 0x74, 5, 0x86, 7, 8, 9, 10, 11, 12, 0xff,
        ]);
        assert_eq!(id.as_str(), "019a0001-0203-7405-8607-08090a0b0cff");
        assert_eq!(BindingId::parse(id.as_str()), Ok(id));
    }

    #[test]
    fn share_ids_are_card_ids_of_their_own_kind() {
        let s = ShareId::new("019a0001").unwrap();
        assert_eq!(s.as_str(), "share_019a0001");
        assert_eq!(ShareId::of_card_id(&s.card_id()), Some(s));
        let own = BindingId::parse("019a0001-0203-7405-8607-08090a0b0cff").unwrap();
        assert_eq!(ShareId::of_card_id(&own), None);
        assert!(ShareId::new(&"x".repeat(60)).is_none(), "too long");
    }

    #[test]
    fn fingerprint_round_trip() {
        let f = Fingerprint::new(3, "abcdef01".into());
        assert_eq!(f.to_string(), "v3:abcdef01");
        assert_eq!(Fingerprint::parse("v3:abcdef01"), Some(f));
        assert_eq!(Fingerprint::parse("3:abcdef01"), None);
        assert_eq!(Fingerprint::parse("v3:xyz"), None);
    }
}
