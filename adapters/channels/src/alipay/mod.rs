//! placeholder
pub struct AlipayChannel;
pub struct AlipayConfig;
