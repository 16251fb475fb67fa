//! Contract callbacks: verified, decrypted and read (pure, no I/O).

use cardbind_ports::channel::{BindingRef, ChannelEvent, ChannelEventKind, Notification};
use cardbind_ports::ChannelError;
use serde_json::{Map, Value};

use super::*;

impl WechatChannel {
    /// Verifies, decrypts and reads a contract callback (pure, no I/O).
    pub fn verify_notification(
        &self,
        notification: &Notification,
    ) -> Result<ChannelEvent, ChannelError> {
        let bad = || ChannelError::InvalidSignature;
        if notification.body.len() > MAX_NOTIFICATION {
            return Err(bad());
        }
        self.verify_signature(&notification.headers, &notification.body)?;
        let envelope: Map<String, Value> =
            serde_json::from_slice(&notification.body).map_err(|_| bad())?;
        let str_of =
            |m: &Map<String, Value>, k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
        let event_id = str_of(&envelope, "id")
            .filter(|s| !s.is_empty() && s.len() <= 128)
            .ok_or_else(bad)?;
        let resource = envelope
            .get("resource")
            .and_then(Value::as_object)
            .ok_or_else(bad)?;
        if str_of(resource, "algorithm").as_deref() != Some("AEAD_AES_256_GCM") {
            return Err(bad());
        }
        let ciphertext = str_of(resource, "ciphertext").ok_or_else(bad)?;
        let nonce = str_of(resource, "nonce").ok_or_else(bad)?;
        let aad = str_of(resource, "associated_data").unwrap_or_default();
        // The signature verified, so WeChat Pay sent this resource to us:
        // if it does not open, our APIv3 key is not this merchant's.
        let plain = aes256_gcm_decrypt(
            &self.apiv3_key,
            nonce.as_bytes(),
            aad.as_bytes(),
            &ciphertext,
        )
        .ok_or_else(|| misconfigured(codes::APIV3_KEY_MISMATCH))?;
        let contract: Map<String, Value> = serde_json::from_slice(&plain).map_err(|_| bad())?;
        // A contract callback names its merchant, app and plan (each is
        // required in WeChat Pay's callback): one that does not name ours,
        // or leaves one out, is not about this service's contracts,
        // however well signed (the plan id is a number, or its digits as
        // text).
        if str_of(&contract, "mchid").as_deref() != Some(self.mchid.as_str())
            || str_of(&contract, "appid").as_deref() != Some(self.appid.as_str())
        {
            return Err(bad());
        }
        let plan = match contract.get("plan_id") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.parse::<u64>().ok(),
            _ => None,
        };
        if plan != Some(self.plan_id) {
            return Err(bad());
        }
        let contract_id = str_of(&contract, "contract_id").filter(|s| !s.is_empty());
        let (binding, attempt) = match str_of(&contract, "out_contract_code")
            .as_deref()
            .and_then(crate::refs::parse)
        {
            Some(n) => (BindingRef::Ours(n.binding), n.attempt),
            None => (
                BindingRef::Channel(contract_id.clone().ok_or_else(bad)?),
                None,
            ),
        };
        let agreement = contract_id.clone();
        // `change_type` says what changed; a callback without it (the
        // shape some WeChat Pay products document) says where the contract
        // now stands in `contract_state`.
        let change = str_of(&contract, "change_type");
        let state = str_of(&contract, "contract_state");
        let kind = match (change.as_deref(), state.as_deref()) {
            (Some("ADD"), _) | (None, Some("SIGNED")) => ChannelEventKind::Signed {
                channel_ref: contract_id.ok_or_else(bad)?,
            },
            (Some("DELETE"), _) | (None, Some("TERMINATED")) => ChannelEventKind::Terminated,
            // Ours (merchant, app and plan checked), but no signing or
            // ending: acknowledged, so WeChat Pay stops sending it.
            (change, state) => {
                let kind = crate::http::clean_code(change.or(state).unwrap_or_default());
                return Err(ChannelError::NotActedOn {
                    kind: if kind.is_empty() {
                        "unknown".to_owned()
                    } else {
                        kind
                    },
                });
            }
        };
        Ok(ChannelEvent {
            event_id,
            binding,
            kind,
            agreement,
            attempt,
        })
    }
}
