//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod scripted;

use cardbind_domain::{BindingId, CardNumber, Expiry, HolderName, Phone, ResidentId, UserId};
use cardbind_ports::channel::ChannelBindRequest;

pub fn resident_id() -> String {
    let first17 = "11010519491231002";
    format!("{first17}{}", ResidentId::check_char(first17).unwrap())
}

/// The bind attempt the helpers' requests (and the tests' queries and
/// unbinds) name.
pub const ATTEMPT: u32 = 7;

pub fn bind_request(binding_id: &str) -> ChannelBindRequest {
    bind_request_with_card(binding_id, "4111111111111111")
}

pub fn bind_request_with_card(binding_id: &str, pan: &str) -> ChannelBindRequest {
    ChannelBindRequest {
        binding_id: BindingId::parse(binding_id).unwrap(),
        attempt: ATTEMPT,
        user_id: UserId::parse("user-1").unwrap(),
        card: CardNumber::parse(pan).unwrap(),
        expiry: Expiry::parse(12, 2030, (2025, 1)).unwrap(),
        cvv: None,
        holder_name: HolderName::parse("张三").unwrap(),
        id_number: ResidentId::parse(&resident_id()).unwrap(),
        phone: Phone::parse("13800138000").unwrap(),
        currency: None,
    }
}

pub fn bid(s: &str) -> BindingId {
    BindingId::parse(s).unwrap()
}

/// The fakes' key pairs, generated once per test binary (2048 bits, in
/// parallel). Slots: 0 merchant, 1 Alipay / WeChat platform, 2 a stranger,
/// 3 a second platform key.
pub fn key(slot: usize) -> &'static cardbind_channels::fakes::TestKey {
    cardbind_channels::fakes::test_key(slot).unwrap()
}

/// A clock fixed at (or moved to) a given instant.
pub struct FixedClock(pub std::sync::atomic::AtomicI64);

impl FixedClock {
    pub fn at_millis(ms: i64) -> std::sync::Arc<FixedClock> {
        std::sync::Arc::new(FixedClock(std::sync::atomic::AtomicI64::new(ms)))
    }
}

impl cardbind_ports::clock::Clock for FixedClock {
    fn now(&self) -> cardbind_domain::Timestamp {
        cardbind_domain::Timestamp::from_unix_millis(
            self.0.load(std::sync::atomic::Ordering::SeqCst),
        )
    }
}
