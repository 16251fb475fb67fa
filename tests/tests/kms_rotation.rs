//! `cardbind keys rotate` end to end on FerretDB and moto with two KMS
//! keys: every KMS-wrapped key — the branch keys, which wrap the users' data
//! keys — is re-wrapped under the new key (each opens with `Decrypt` pinned
//! to the new key id), the data ciphertexts and users' wrapped keys are not
//! touched, a second run has nothing to do, and a service configured with
//! only the new key starts and serves every card.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine;
use cardbind_tests::{
    create_kms_key, idem_key, kms_endpoint, use_kms, user_id, Brand, Storage, TestApp, TestCard,
};
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use serde_json::{json, Value};

async fn kms(endpoint: &str, target: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(endpoint)
        .header("X-Amz-Target", format!("TrentService.{target}"))
        .header("Content-Type", "application/x-amz-json-1.1")
        .header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=00",
        )
        .body(body.to_string())
        .send()
        .await
        .expect("KMS request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Every raw document of `collection` in the app's database.
async fn all_docs(app: &TestApp, collection: &str) -> Vec<Document> {
    let client = mongodb::Client::with_uri_str(&app.config.storage.uri)
        .await
        .expect("mongo client");
    client
        .database(&app.config.storage.database)
        .collection::<Document>(collection)
        .find(doc! {})
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("read")
}

/// Every stored key record (through the `DataKeyStore` port):
/// (owner, master key id, wrapped bytes).
async fn wrapped_keys(app: &TestApp) -> Vec<(String, String, Vec<u8>)> {
    let stores = cardbind::compose::stores(&app.config)
        .await
        .expect("stores");
    stores
        .data_keys
        .list(None, 10_000)
        .await
        .expect("list keys")
        .into_iter()
        .map(|k| (k.owner, k.master_key_id, k.wrapped))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_rewraps_every_data_key_under_the_new_kms_key() {
    let Some(endpoint) = kms_endpoint() else {
        return;
    };
    let old_key = create_kms_key(&endpoint).await;
    let new_key = create_kms_key(&endpoint).await;
    let Some(mut a) = TestApp::spawn_on(Storage::Mongo, |c| {
        use_kms(c, &endpoint, &old_key);
        c.limits.binds_per_user_per_minute = 100;
        c.channels.mock.mode = cardbind::config::MockModeSetting::Instant;
    })
    .await
    else {
        return;
    };

    let (alice, bob) = (user_id("rot-a"), user_id("rot-b"));
    let cards = [
        (alice.clone(), TestCard::visa()),
        (alice.clone(), TestCard::new(Brand::Mastercard)),
        (bob.clone(), TestCard::new(Brand::UnionPay)),
    ];
    let mut ids = Vec::new();
    for (user, card) in &cards {
        let v = a.bind(user, card, &idem_key()).await.expect_status(201);
        assert_eq!(v["status"], "active", "{v}");
        ids.push(v["id"].as_str().expect("id").to_owned());
    }
    a.stop().await;

    // The documented procedure: first run the service with the new key as
    // master and the old one as a previous key. Old data keys still open,
    // new ones are wrapped under the new key.
    let carol = user_id("rot-c");
    let carol_card = TestCard::new(Brand::Jcb);
    {
        let mid_config = {
            let mut c = a.config.clone();
            c.keys.kms_key_id = new_key.clone();
            c.keys.previous_kms_key_ids = vec![old_key.clone()];
            c
        };
        let Some(mut mid) =
            TestApp::spawn_on(Storage::MongoAt(mid_config.storage.uri.clone()), |c| {
                *c = mid_config.clone()
            })
            .await
        else {
            return;
        };
        let v = mid.unbind(&alice, &ids[0]).await.expect_status(200);
        assert_eq!(v["status"], "inactive");
        let v = mid
            .bind(&alice, &cards[0].1, &idem_key())
            .await
            .expect_status(201);
        assert_eq!(
            v["id"],
            ids[0].as_str(),
            "sealed again with alice's old-wrapped key"
        );
        let v = mid
            .bind(&carol, &carol_card, &idem_key())
            .await
            .expect_status(201);
        assert_eq!(v["status"], "active");
        mid.stop().await;
    }

    let before = wrapped_keys(&a).await;
    // alice, bob, carol, the fingerprint key and the canary key at least.
    assert!(
        before.len() >= 4,
        "{:?}",
        before.iter().map(|k| &k.0).collect::<Vec<_>>()
    );
    let sealed_before = all_docs(&a, "card_data").await;
    assert!(sealed_before.len() >= 4, "{}", sealed_before.len());

    // Rotate with the CLI's code path, twice (the second run resumes with
    // nothing to do), configured as the procedure says: the new key as
    // master, the old one as the previous key (the default `--from`).
    let config = a.config.clone();
    let rotation_config = {
        let mut c = config.clone();
        c.keys.kms_key_id = new_key.clone();
        c.keys.previous_kms_key_ids = vec![old_key.clone()];
        c
    };
    let stores = cardbind::compose::stores(&config).await.expect("stores");
    // A `--to` KMS does not know: refused naming the argument, not the
    // configured master key (which is fine), and nothing re-wrapped.
    let refused = cardbind::compose::rotate_keys(&rotation_config, &stores, None, "alias/nope")
        .await
        .expect_err("a key KMS does not know");
    assert!(
        refused
            .to_string()
            .starts_with("--to: KMS refuses the key alias/nope"),
        "{refused}"
    );
    assert_eq!(wrapped_keys(&a).await, before, "nothing re-wrapped");
    cardbind::compose::rotate_keys(&rotation_config, &stores, None, &new_key)
        .await
        .expect("rotation");
    cardbind::compose::rotate_keys(&rotation_config, &stores, None, &new_key)
        .await
        .expect("second rotation run");

    let after = wrapped_keys(&a).await;
    assert_eq!(after.len(), before.len(), "no key lost or added");
    let mut checked = Vec::new();
    for (owner, master, bytes) in &after {
        if master.starts_with('@') {
            // Wrapped under a branch key (users, @fingerprint, @canary), or
            // not a key (the sealed canary, the active-branch record): not
            // touched by the rotation.
            let same = before.iter().find(|b| &b.0 == owner).expect("kept");
            assert_eq!((&same.1, &same.2), (master, bytes), "{owner} changed");
            continue;
        }
        checked.push(owner.clone());
        assert!(master.contains(&new_key), "{owner} still under {master}");
        let blob = base64::engine::general_purpose::STANDARD.encode(bytes);
        let ctx = json!({"cardbind:owner": owner});
        let (status, v) = kms(
            &endpoint,
            "Decrypt",
            json!({"CiphertextBlob": blob, "KeyId": new_key, "EncryptionContext": ctx}),
        )
        .await;
        assert_eq!(
            status, 200,
            "{owner}: Decrypt pinned to the new key refused: {v}"
        );
        let (status, _) = kms(
            &endpoint,
            "Decrypt",
            json!({"CiphertextBlob": blob, "KeyId": old_key, "EncryptionContext": ctx}),
        )
        .await;
        assert_ne!(status, 200, "{owner}: still opens under the old key id");
    }
    // The branch key was checked, and it is what the users', the
    // fingerprint's and the canary's keys are wrapped under.
    assert_eq!(checked, ["@branch:00000001"], "{checked:?}");
    for owner in [
        alice.as_str(),
        bob.as_str(),
        carol.as_str(),
        "@fingerprint",
        "@canary",
    ] {
        let (_, master, _) = after
            .iter()
            .find(|k| k.0 == owner)
            .unwrap_or_else(|| panic!("{owner} has a key"));
        assert_eq!(master, "@branch:00000001", "{owner}");
    }
    // The data ciphertexts were not touched.
    let sealed_after = all_docs(&a, "card_data").await;
    for d in &sealed_before {
        let same = sealed_after
            .iter()
            .find(|x| x.get("_id") == d.get("_id"))
            .expect("card data kept");
        assert_eq!(
            same.get("sealed"),
            d.get("sealed"),
            "sealed card data changed by rotation"
        );
    }

    // A service that knows only the new key starts (canary) and serves
    // every card: fingerprints find them, sealing for old users works.
    let Some(b) = TestApp::spawn_on(Storage::MongoAt(config.storage.uri.clone()), |c| {
        *c = config.clone();
        c.keys.kms_key_id = new_key.clone();
        c.server.address = "127.0.0.1:0".into();
    })
    .await
    else {
        return;
    };
    b.bind(&carol, &carol_card, &idem_key())
        .await
        .assert_error(409, "card_already_bound");
    for (user, card) in &cards {
        b.bind(user, card, &idem_key())
            .await
            .assert_error(409, "card_already_bound");
    }
    let v = b.unbind(&alice, &ids[0]).await.expect_status(200);
    assert_eq!(v["status"], "inactive");
    let again = b
        .bind(&alice, &cards[0].1, &idem_key())
        .await
        .expect_status(201);
    assert_eq!(again["id"], ids[0].as_str());
    assert_eq!(again["status"], "active");
}
