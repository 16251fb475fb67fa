//! Property tests of the sealed format through the vault.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use cardbind_domain::SealedBlob;
use cardbind_keys::{EnvelopeVault, LocalMasterKey, VaultConfig};
use cardbind_ports::error::KeyError;
use cardbind_ports::keys::{CardVault, SealContext};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

#[test]
fn random_plaintexts_round_trip_and_any_byte_flip_is_refused() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let vault = EnvelopeVault::new(
        LocalMasterKey::generate(),
        common::store().1,
        VaultConfig::default(),
    );
    let owner = common::user("prop-owner");
    let mut runner = TestRunner::new(Config {
        cases: 512,
        ..Config::default()
    });
    let strategy = (
        proptest::collection::vec(any::<u8>(), 0..600),
        "[a-z0-9-]{1,40}",
        any::<proptest::sample::Index>(),
        1u8..=255,
    );
    runner
        .run(&strategy, |(plaintext, record, index, mask)| {
            let ctx = SealContext::new(record, "pan");
            rt.block_on(async {
                let sealed = vault.seal(&owner, &ctx, &plaintext).await.expect("seal");
                let opened = vault.open(&owner, &ctx, &sealed).await.expect("open");
                prop_assert_eq!(&opened, &plaintext);

                let mut bytes = sealed.into_bytes();
                let i = index.index(bytes.len());
                bytes[i] ^= mask;
                let r = vault.open(&owner, &ctx, &SealedBlob::new(bytes)).await;
                prop_assert!(
                    matches!(r, Err(KeyError::Refused(_))),
                    "flip at {} gave {:?}",
                    i,
                    r
                );
                Ok(())
            })
        })
        .expect("property holds");
}
