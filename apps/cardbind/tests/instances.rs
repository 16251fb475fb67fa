//! Several instances over one store and one master key, as the processes
//! of one deployment share a database: what one of them does is what the
//! others find, whatever they remember.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support;

use cardbind_domain::{SealedField, UserId};
use cardbind_keys::{DataKey, EnvelopeVault, LocalMasterKey, VaultConfig};
use cardbind_ports::keys::{CardVault, SealContext};
use cardbind_ports::store::CardDataStore;
use serde_json::Value;
use support::*;

const VISA: &str = "4111111111111111";
const VISA2: &str = "4012888888881881";
const VISA3: &str = "4242424242424242";

/// A user erased on one instance and bound again there (a new data key)
/// binds another card on an instance that still remembers their erased
/// key: that card is sealed under the key the store holds, so its data
/// opens wherever it is read. Before, it was sealed under the remembered
/// key, which the erasure had destroyed: the live card's data never
/// opened again (and the other instance's card did not open on this one).
#[tokio::test]
async fn a_card_bound_after_an_erasure_elsewhere_is_sealed_under_the_users_key() {
    let store = cardbind_memory::MemoryStore::shared();
    let master = DataKey::generate();
    let opts = || Options {
        master_key: Some(master.clone()),
        ..Options::default()
    };
    let (a, b) = (
        spawn_on(store.clone(), opts()),
        spawn_on(store.clone(), opts()),
    );
    let bound = |resp: poem::test::TestResponse| async move {
        resp.assert_status(poem::http::StatusCode::CREATED);
        let card: Value = json_of(resp).await;
        assert_eq!(card["status"], "active", "{card}");
        card["id"].as_str().unwrap().to_owned()
    };
    bound(a.bind("victim", "k-a1", &bind_body(VISA)).await).await;
    let erased = b
        .client
        .post("/v1/admin/users/victim/erase")
        .header("Authorization", bearer("ops", "admin"))
        .send()
        .await;
    erased.assert_status_is_ok();
    let on_b = bound(b.bind("victim", "k-b1", &bind_body(VISA2)).await).await;
    let on_a = bound(a.bind("victim", "k-a2", &bind_body(VISA3)).await).await;

    // Every live card's data opens with the deployment's key, in a process
    // that remembers nothing.
    let fresh = EnvelopeVault::new(
        LocalMasterKey::from_key(master.clone()),
        store.clone(),
        VaultConfig::default(),
    );
    let user = UserId::parse("victim").unwrap();
    let keys = CardDataStore::list_keys(&*store, None, 100).await.unwrap();
    for (card, number) in [(&on_b, VISA2), (&on_a, VISA3)] {
        let key = keys
            .iter()
            .find(|k| k.binding.as_str() == card.as_str())
            .unwrap_or_else(|| panic!("no data stored for {card}"));
        let data = CardDataStore::get(&*store, &user, &key.binding, key.generation)
            .await
            .unwrap()
            .unwrap();
        for field in SealedField::ALL {
            let opened = fresh
                .open(
                    &user,
                    &SealContext::new(card.as_str(), field.as_str()),
                    data.sealed.get(field),
                )
                .await;
            assert!(opened.is_ok(), "{card} {field:?}: {opened:?}");
            if field == SealedField::Pan {
                assert_eq!(opened.unwrap(), number.as_bytes());
            }
        }
    }
}
