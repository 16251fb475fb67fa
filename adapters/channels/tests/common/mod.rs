//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cardbind_domain::{
    BindingId, CardNumber, Expiry, HolderName, Phone, ResidentId, UserId,
};
use cardbind_ports::channel::ChannelBindRequest;

pub fn resident_id() -> String {
    let first17 = "11010519491231002";
    format!("{first17}{}", ResidentId::check_char(first17).unwrap())
}

pub fn bind_request(binding_id: &str) -> ChannelBindRequest {
    bind_request_with_card(binding_id, "4111111111111111")
}

pub fn bind_request_with_card(binding_id: &str, pan: &str) -> ChannelBindRequest {
    ChannelBindRequest {
        binding_id: BindingId::parse(binding_id).unwrap(),
        user_id: UserId::parse("user-1").unwrap(),
        card: CardNumber::parse(pan).unwrap(),
        expiry: Expiry::parse(12, 2030, (2025, 1)).unwrap(),
        cvv: None,
        holder_name: HolderName::parse("张三").unwrap(),
        id_number: ResidentId::parse(&resident_id()).unwrap(),
        phone: Phone::parse("13800138000").unwrap(),
    }
}

pub fn bid(s: &str) -> BindingId {
    BindingId::parse(s).unwrap()
}
