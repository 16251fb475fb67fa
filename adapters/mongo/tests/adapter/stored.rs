//! What is stored: a raw scan finds no card data in clear.

use super::*;
use cardbind_ports::audit::{STORED_LISTING_ALTERED, STORED_WALLET_ALTERED, STORED_WALLET_MISSING};

/// Every document of every collection of `db`.
async fn all_documents(uri: &str, name: &str) -> Vec<(String, Document)> {
    let db = raw_db(uri, name).await;
    let mut out = Vec::new();
    for c in db.list_collection_names().await.unwrap() {
        let docs: Vec<Document> = db
            .collection::<Document>(&c)
            .find(doc! {})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        out.extend(docs.into_iter().map(|d| (c.clone(), d)));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_scan_finds_no_card_data_in_clear() {
    let Some(uri) = uri() else { return };
    let (s, name) = fresh_store(&uri).await;
    let u = user_id(&unique("u"));
    let w = pan_wallet(&u, at(0));
    let b = w.bindings()[0].id.clone();
    let h = s
        .commit(
            &w,
            None,
            vec![event(AuditAction::BindingCreate, Some(&u), Some(&b))],
            at(0),
        )
        .await
        .unwrap();
    s.commit(
        &w,
        Some(h),
        vec![event(AuditAction::CardDataOpen, Some(&u), Some(&b))],
        at(1),
    )
    .await
    .unwrap();
    let data = CardData {
        binding: b.clone(),
        user: u.clone(),
        generation: 1001,
        sealed: sealed(7),
    };
    CardDataStore::put(&s, &data).await.unwrap();
    ChannelRefs::put(
        &s,
        &channel("mock"),
        "agr-1",
        &RefTarget {
            user: u.clone(),
            binding: b.clone(),
        },
        1001,
    )
    .await
    .unwrap();
    s.add(&ReviewEntry {
        binding: b.clone(),
        user: u.clone(),
        since: at(0),
        link: 1,
    })
    .await
    .unwrap();
    s.put_if_absent(&wrapped_key(u.as_str(), b"wrapped-bytes", 1))
        .await
        .unwrap();
    s.claim(u.as_str(), "k", "h", at(0), at(9)).await.unwrap();
    s.complete(
        u.as_str(),
        "k",
        Lease { attempt: 1 },
        &response("{\"last4\":\"5449\"}"),
    )
    .await
    .unwrap();

    let docs = all_documents(&uri, &name).await;
    let colls: BTreeSet<&str> = docs.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(colls.len(), 6, "{colls:?}");
    // We are looking at the right data: the masked summary is there.
    assert!(docs
        .iter()
        .any(|(_, d)| format!("{d}").contains("\"5449\"")));
    for (c, d) in &docs {
        let mut bytes = Vec::new();
        d.to_writer(&mut bytes).unwrap();
        let text = format!("{d}").to_lowercase();
        assert!(!text.contains(PAN), "{c}: the PAN in clear: {text}");
        assert!(
            !bytes.windows(PAN.len()).any(|x| x == PAN.as_bytes()),
            "{c}: PAN bytes"
        );
        assert!(!text.contains("cvv"), "{c}: {text}");
    }
    let (_, card) = docs.iter().find(|(c, _)| c == "card_data").unwrap();
    let sealed_doc = card.get_document("sealed").unwrap();
    for f in ["pan", "holder_name", "id_number", "phone"] {
        assert!(
            matches!(sealed_doc.get(f), Some(Bson::Binary(_))),
            "{f}: {:?}",
            sealed_doc.get(f)
        );
    }
    assert_eq!(sealed_doc.len(), 4, "no other sealed field (no CVV)");
}

/// The chain's walk holds a link's listing fields (`users`, `bindings`,
/// `actions`, which the audit listing's indexes read) to its events: the
/// hash covers the events, not these, and an edited one would move an
/// event between the listing's filters unseen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_whose_listing_fields_differ_from_its_events_breaks_its_chain() {
    let Some(uri) = uri() else { return };
    let (s, name) = fresh_store(&uri).await;
    let u = user_id(&unique("u"));
    let w = pan_wallet(&u, at(0));
    let b = w.bindings()[0].id.clone();
    s.commit(
        &w,
        None,
        vec![event(AuditAction::BindingCreate, Some(&u), Some(&b))],
        at(0),
    )
    .await
    .unwrap();
    let links = AuditLog::links(&s, None, 10).await.unwrap();
    assert_eq!(verify_links(&links), Ok(1));
    let db = raw_db(&uri, &name).await;
    for set in [
        doc! { "users": ["mallory"] },
        doc! { "users": [u.as_str()], "actions": ["binding.unbind"] },
    ] {
        db.collection::<Document>("links")
            .update_one(
                doc! { "chain": u.as_str(), "seq": 1 },
                doc! { "$set": set.clone() },
            )
            .await
            .unwrap();
        let links = AuditLog::links(&s, None, 10).await.unwrap();
        assert_eq!(
            verify_links(&links).map_err(|b| (b.seq, b.reason)),
            Err((1, STORED_LISTING_ALTERED)),
            "{set}"
        );
    }
}

/// A link's hash covers its wallet's digest, and the chain's walk holds
/// the stored wallet to that digest: a wallet edited in the database (a
/// card's status, its last four digits) breaks the chain at its link, and so is one
/// whose digest was edited with it (the hash no longer matches).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_whose_wallet_was_edited_is_found() {
    let Some(uri) = uri() else { return };
    let (s, name) = fresh_store(&uri).await;
    let u = user_id(&unique("u"));
    let w = pan_wallet(&u, at(0));
    let b = w.bindings()[0].id.clone();
    s.commit(
        &w,
        None,
        vec![event(AuditAction::BindingCreate, Some(&u), Some(&b))],
        at(0),
    )
    .await
    .unwrap();
    let links = AuditLog::links(&s, None, 10).await.unwrap();
    assert_eq!(verify_links(&links), Ok(1));
    // The same digest as the embedded store's for the same wallet: of the
    // record's JSON, encoded again from what MongoDB returns.
    assert_eq!(
        links[0].wallet_digest,
        Some(cardbind_records::wallet_digest(
            &cardbind_records::wallet_json(&w).unwrap()
        ))
    );
    let db = raw_db(&uri, &name).await;
    let key = doc! { "chain": u.as_str(), "seq": 1 };
    let stored = db
        .collection::<Document>("links")
        .find_one(key.clone())
        .await
        .unwrap()
        .unwrap();
    let status = stored
        .get_document("wallet")
        .unwrap()
        .get_array("bindings")
        .unwrap()[0]
        .as_document()
        .unwrap()
        .get_str("status")
        .unwrap()
        .to_owned();
    assert_eq!(status, "pending_verification");
    db.collection::<Document>("links")
        .update_one(
            key.clone(),
            doc! { "$set": { "wallet.bindings.0.status": "active" } },
        )
        .await
        .unwrap();
    let links = AuditLog::links(&s, None, 10).await.unwrap();
    assert_eq!(
        verify_links(&links).map_err(|b| (b.seq, b.reason)),
        Err((1, STORED_WALLET_ALTERED))
    );
    // The digest edited to match the new wallet: the hash no longer does.
    let edited = db
        .collection::<Document>("links")
        .find_one(key.clone())
        .await
        .unwrap()
        .unwrap();
    let record: cardbind_records::WalletRecord =
        mongodb::bson::from_document(edited.get_document("wallet").unwrap().clone()).unwrap();
    let digest = cardbind_records::wallet_digest(&record.json().unwrap());
    db.collection::<Document>("links")
        .update_one(key, doc! { "$set": { "wallet_digest": digest } })
        .await
        .unwrap();
    let links = AuditLog::links(&s, None, 10).await.unwrap();
    assert_eq!(verify_links(&links).unwrap_err().reason, "link altered");
}

/// Every MongoDB link that covers a wallet keeps its copy, the older ones
/// too: one whose copy was removed breaks the chain there for the walk of
/// `audit verify`, the newest as much as an older one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_whose_wallet_was_removed_is_found() {
    let Some(uri) = uri() else { return };
    let (s, name) = fresh_store(&uri).await;
    let u = user_id(&unique("u"));
    let w = pan_wallet(&u, at(0));
    let b = w.bindings()[0].id.clone();
    let head = s
        .commit(
            &w,
            None,
            vec![event(AuditAction::BindingCreate, Some(&u), Some(&b))],
            at(0),
        )
        .await
        .unwrap();
    s.commit(
        &w,
        Some(head),
        vec![event(AuditAction::BindingVerify, Some(&u), Some(&b))],
        at(1),
    )
    .await
    .unwrap();
    let links = AuditLog::links(&s, None, 10).await.unwrap();
    assert_eq!(verify_links(&links), Ok(2));
    let db = raw_db(&uri, &name).await;
    for seq in [1, 2] {
        let key = doc! { "chain": u.as_str(), "seq": seq };
        let copy = db
            .collection::<Document>("links")
            .find_one_and_update(key.clone(), doc! { "$unset": { "wallet": "" } })
            .await
            .unwrap()
            .unwrap()
            .get_document("wallet")
            .unwrap()
            .clone();
        let links = AuditLog::links(&s, None, 10).await.unwrap();
        assert_eq!(
            verify_links(&links).map_err(|b| (b.seq, b.reason)),
            Err((seq as u64, STORED_WALLET_MISSING))
        );
        db.collection::<Document>("links")
            .update_one(key, doc! { "$set": { "wallet": copy } })
            .await
            .unwrap();
        let links = AuditLog::links(&s, None, 10).await.unwrap();
        assert_eq!(verify_links(&links), Ok(2), "the copy put back");
    }
}
