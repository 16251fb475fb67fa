//! placeholder
pub struct WechatChannel;
pub struct WechatConfig;
