//! `cardbind keys rotate` end to end on FerretDB and moto with two KMS
//! keys: every stored data key is re-wrapped under the new key (each opens
//! with `Decrypt` pinned to the new key id), the data ciphertexts are not
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

/// The newest live wrapped key of every owner: (owner, master key id, bytes).
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

async fn wrapped_keys(app: &TestApp) -> Vec<(String, String, Vec<u8>)> {
    let docs = all_docs(app, "data_keys").await;
    let mut newest: std::collections::BTreeMap<String, Document> = Default::default();
    for d in docs {
        let owner = d.get_str("owner").expect("owner").to_owned();
        let seq = d.get_i64("seq").unwrap_or(0);
        if newest
            .get(&owner)
            .is_none_or(|o| o.get_i64("seq").unwrap_or(0) < seq)
        {
            newest.insert(owner, d);
        }
    }
    newest
        .into_iter()
        .filter(|(_, d)| !d.get_bool("tombstone").unwrap_or(false))
        .map(|(owner, d)| {
            let id = d
                .get_str("master_key_id")
                .expect("master_key_id")
                .to_owned();
            let bytes = d.get_binary_generic("wrapped").expect("wrapped").clone();
            (owner, id, bytes)
        })
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
        c.channels.mock.mode = "instant".into();
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
    let sealed_before = all_docs(&a, "bindings").await;

    // Rotate with the CLI's code path, twice (the second run resumes with nothing to do).
    let config = a.config.clone();
    cardbind::compose::rotate_keys(&config, None, &new_key)
        .await
        .expect("rotation");
    cardbind::compose::rotate_keys(&config, None, &new_key)
        .await
        .expect("second rotation run");

    let after = wrapped_keys(&a).await;
    assert_eq!(after.len(), before.len(), "no key lost or added");
    let mut checked = Vec::new();
    for (owner, master, bytes) in &after {
        if master.starts_with('@') {
            continue; // the sealed canary record is not a wrapped key
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
    // Both users, the fingerprint key and the canary's key were checked.
    assert!(
        checked.contains(&alice) && checked.contains(&bob),
        "{checked:?}"
    );
    assert!(checked.len() >= 4, "{checked:?}");
    // The data ciphertexts were not touched.
    let sealed_after = all_docs(&a, "bindings").await;
    for d in &sealed_before {
        let same = sealed_after
            .iter()
            .find(|x| x.get("_id") == d.get("_id"))
            .expect("binding kept");
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
