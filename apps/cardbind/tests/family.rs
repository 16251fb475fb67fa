//! Family cards (主卡/副卡) over HTTP: a holder shares a card, the other
//! user accepts it and finds it among their cards (masked, marked shared),
//! may make it their default, and loses it when the holder revokes,
//! unbinds or is frozen; both sides' consents and audit events.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::family_support;
use crate::support;

use family_support::*;
use serde_json::{json, Value};
use support::*;

#[tokio::test]
async fn share_accept_list_masked_default_then_revoke_takes_it_away() {
    let app = spawn();
    let a1 = bind_active(&app, "ann", VISA).await;
    let b1 = bind_active(&app, "bob", VISA2).await;

    let path = format!("/v1/users/ann/cards/{a1}/shares");
    let body = share_body("bob", 50_000, "CNY", &in_seconds(&app, 30 * DAY));
    let first = send(
        &app,
        "POST",
        &path,
        ("ann", "user"),
        Some("s1"),
        Some(&body),
    )
    .await;
    let created = ok(first, 201).await;
    let sid = created["id"].as_str().unwrap().to_owned();
    assert!(sid.starts_with("share_"), "{created}");
    assert_eq!(created["status"], "invited");
    assert_eq!(created["card_id"], a1.as_str());
    assert_eq!(created["secondary_user_id"], "bob");
    assert_eq!(
        created["monthly_limit"],
        json!({"amount": 50000, "currency": "CNY"})
    );
    // A retry with the key replays; the same share with another key is it.
    let replay = send(
        &app,
        "POST",
        &path,
        ("ann", "user"),
        Some("s1"),
        Some(&body),
    )
    .await;
    assert_eq!(
        replay.0.headers().get("Idempotent-Replayed").unwrap(),
        "true"
    );
    assert_eq!(ok(replay, 201).await["id"], sid.as_str());
    let again = send(
        &app,
        "POST",
        &path,
        ("ann", "user"),
        Some("s2"),
        Some(&body),
    )
    .await;
    assert_eq!(ok(again, 200).await["id"], sid.as_str());
    // Other terms while it is live: a conflict.
    let other = share_body("bob", 10_000, "CNY", &in_seconds(&app, 30 * DAY));
    let r = send(
        &app,
        "POST",
        &path,
        ("ann", "user"),
        Some("s3"),
        Some(&other),
    )
    .await;
    assert_error(r, 409, "card_already_shared").await;

    // Invited: listed as an invitation, not among bob's cards yet.
    let inv = shared_cards(&app, "bob").await;
    assert_eq!(inv.len(), 1);
    assert_eq!(
        (inv[0]["share_id"].as_str(), inv[0]["status"].as_str()),
        (Some(sid.as_str()), Some("invited"))
    );
    assert_eq!(ids(&cards(&app, "bob", "").await), [b1.as_str()]);
    let r = send(
        &app,
        "PUT",
        &format!("/v1/users/bob/cards/{sid}/default"),
        ("bob", "user"),
        None,
        None,
    )
    .await;
    assert_error(r, 409, "share_ended").await;

    let accepted = ok(accept(&app, "bob", &sid).await, 200).await;
    assert_eq!(accepted["status"], "accepted");
    assert_eq!(accepted["last4"], "1111");
    // Accepting twice changes nothing.
    assert_eq!(
        ok(accept(&app, "bob", &sid).await, 200).await["accepted_at"],
        accepted["accepted_at"]
    );

    // Bob's list: his card and the shared one, masked, marked, nothing of ann's.
    let list = cards(&app, "bob", "").await;
    assert_eq!(ids(&list), [b1.as_str(), sid.as_str()]);
    let shared = &list[1];
    assert_eq!(shared["user_id"], "bob");
    assert_eq!(shared["status"], "active");
    assert_eq!(shared["last4"], "1111");
    assert_eq!(shared["shared"]["share_id"], sid.as_str());
    assert_eq!(shared["shared"]["monthly_limit"]["amount"], 50000);
    assert!(list[0].get("shared").is_none(), "own card is not shared");
    let text = Value::Array(list.clone()).to_string();
    for leak in ["\"ann\"", a1.as_str(), VISA, "张三", "13800138000"] {
        assert!(!text.contains(leak), "{leak} in {text}");
    }
    let one = send(
        &app,
        "GET",
        &format!("/v1/users/bob/cards/{sid}"),
        ("bob", "user"),
        None,
        None,
    )
    .await;
    assert_eq!(ok(one, 200).await["shared"]["share_id"], sid.as_str());

    // Bob makes it his default.
    let d = send(
        &app,
        "PUT",
        &format!("/v1/users/bob/cards/{sid}/default"),
        ("bob", "user"),
        None,
        None,
    )
    .await;
    assert_eq!(ok(d, 200).await["is_default"], true);
    assert_eq!(default_of(&cards(&app, "bob", "").await), [sid.as_str()]);

    // Ann sees it accepted.
    let given = shares_of(&app, "ann", &a1).await;
    assert_eq!(given.len(), 1);
    assert_eq!(given[0]["status"], "active");
    assert!(given[0]["accepted_at"].is_string());

    // Ann revokes: gone from bob's list, and his own card is the default.
    let r = send(
        &app,
        "DELETE",
        &format!("/v1/users/ann/cards/{a1}/shares/{sid}"),
        ("ann", "user"),
        None,
        None,
    )
    .await;
    let revoked = ok(r, 200).await;
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["revoked_by"], "ann");
    let list = cards(&app, "bob", "").await;
    assert_eq!(ids(&list), [b1.as_str()]);
    assert_eq!(default_of(&list), [b1.as_str()]);
    assert!(shared_cards(&app, "bob").await.is_empty());
    let gone = send(
        &app,
        "GET",
        &format!("/v1/users/bob/cards/{sid}"),
        ("bob", "user"),
        None,
        None,
    )
    .await;
    assert_error(gone, 404, "not_found").await;
    assert_error(accept(&app, "bob", &sid).await, 409, "share_ended").await;
    // Revoking twice changes nothing.
    let r = send(
        &app,
        "DELETE",
        &format!("/v1/users/ann/cards/{a1}/shares/{sid}"),
        ("ann", "user"),
        None,
        None,
    )
    .await;
    assert_eq!(ok(r, 200).await["revoked_at"], revoked["revoked_at"]);
}

#[tokio::test]
async fn both_sides_consent_and_are_audited() {
    let app = spawn();
    let a1 = bind_active(&app, "ann", VISA).await;
    let sid = share(&app, "ann", &a1, "bob", "s1").await;
    ok(accept(&app, "bob", &sid).await, 200).await;

    let consents = |user: &'static str| {
        let app = &app;
        async move {
            let path = format!("/v1/consents?user_id={user}");
            let v = ok(
                send(app, "GET", &path, ("audit", "auditor"), None, None).await,
                200,
            )
            .await;
            v["consents"].as_array().unwrap().clone()
        }
    };
    let ann: Vec<Value> = consents("ann").await;
    let given: Vec<&Value> = ann
        .iter()
        .filter(|c| c["share_id"] == sid.as_str())
        .collect();
    assert_eq!(given.len(), 1, "{ann:?}");
    assert_eq!(given[0]["text_version"], "family-v1");
    assert_eq!(given[0]["card_id"], a1.as_str());
    let bob = consents("bob").await;
    assert_eq!(bob.len(), 1, "{bob:?}");
    assert_eq!(bob[0]["share_id"], sid.as_str());
    assert_eq!(bob[0]["card_id"], sid.as_str());

    let path = "/v1/audit/events?limit=500";
    let v = ok(
        send(&app, "GET", path, ("audit", "auditor"), None, None).await,
        200,
    )
    .await;
    let actions: Vec<(String, String)> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or("").to_owned(),
                e["user_id"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for want in [
        ("share.create", "ann"),
        ("share.invite", "bob"),
        ("share.accept", "bob"),
        ("share.accept", "ann"),
    ] {
        assert!(
            actions
                .iter()
                .any(|(a, u)| (a.as_str(), u.as_str()) == want),
            "{want:?} in {actions:?}"
        );
    }

    // Ann revokes: bob's consent is revoked, by the holder's side, and his
    // own reading of it never names ann.
    let r = send(
        &app,
        "DELETE",
        &format!("/v1/users/ann/cards/{a1}/shares/{sid}"),
        ("ann", "user"),
        None,
        None,
    )
    .await;
    ok(r, 200).await;
    let own = ok(
        send(
            &app,
            "GET",
            "/v1/consents?user_id=bob",
            ("bob", "user"),
            None,
            None,
        )
        .await,
        200,
    )
    .await;
    let bob = own["consents"].as_array().unwrap();
    assert_eq!(bob.len(), 1, "{bob:?}");
    assert!(bob[0]["revoked_at"].is_string(), "{bob:?}");
    assert_eq!(bob[0]["revoked_by"], "card_holder");
    assert!(!own.to_string().contains("\"ann\""), "{own}");
    let ann = consents("ann").await;
    let given: Vec<&Value> = ann
        .iter()
        .filter(|c| c["share_id"] == sid.as_str())
        .collect();
    assert_eq!(given[0]["revoked_by"], "ann", "{ann:?}");
}

#[tokio::test]
async fn unbind_by_the_holder_ends_the_share() {
    let app = spawn();
    let a1 = bind_active(&app, "ann", VISA).await;
    let sid = share(&app, "ann", &a1, "bob", "s1").await;
    ok(accept(&app, "bob", &sid).await, 200).await;
    assert_eq!(ids(&cards(&app, "bob", "").await), [sid.as_str()]);
    let d = send(
        &app,
        "PUT",
        &format!("/v1/users/bob/cards/{sid}/default"),
        ("bob", "user"),
        None,
        None,
    )
    .await;
    ok(d, 200).await;

    let r = send(
        &app,
        "DELETE",
        &format!("/v1/users/ann/cards/{a1}"),
        ("ann", "user"),
        None,
        None,
    )
    .await;
    assert_eq!(ok(r, 200).await["status"], "inactive");
    assert!(cards(&app, "bob", "").await.is_empty());
    assert!(shared_cards(&app, "bob").await.is_empty());
    assert_eq!(shares_of(&app, "ann", &a1).await[0]["status"], "revoked");
    let d = send(
        &app,
        "PUT",
        &format!("/v1/users/bob/cards/{sid}/default"),
        ("bob", "user"),
        None,
        None,
    )
    .await;
    assert_error(d, 409, "share_ended").await;
}

#[tokio::test]
async fn a_frozen_card_is_not_usable_by_the_secondary_until_unfrozen() {
    let app = spawn();
    let a1 = bind_active(&app, "ann", VISA).await;
    let b1 = bind_active(&app, "bob", VISA3).await;
    let sid = share(&app, "ann", &a1, "bob", "s1").await;
    ok(accept(&app, "bob", &sid).await, 200).await;
    let set_default = |id: String| {
        let app = &app;
        async move {
            send(
                app,
                "PUT",
                &format!("/v1/users/bob/cards/{id}/default"),
                ("bob", "user"),
                None,
                None,
            )
            .await
        }
    };
    ok(set_default(sid.clone()).await, 200).await;

    let freeze = format!("/v1/admin/users/ann/cards/{a1}/freeze");
    let r = send(&app, "POST", &freeze, ("op", "admin"), None, None).await;
    assert_eq!(ok(r, 200).await["status"], "frozen");
    let list = cards(&app, "bob", "").await;
    assert_eq!(ids(&list), [b1.as_str()]);
    assert_eq!(default_of(&list), [b1.as_str()], "the default falls back");
    assert_error(
        set_default(sid.clone()).await,
        409,
        "invalid_state_transition",
    )
    .await;
    assert_eq!(shares_of(&app, "ann", &a1).await[0]["status"], "suspended");
    // A new share of a frozen card is refused.
    let body = share_body("cat", 100, "CNY", &in_seconds(&app, DAY));
    let r = send(
        &app,
        "POST",
        &format!("/v1/users/ann/cards/{a1}/shares"),
        ("ann", "user"),
        Some("s-frozen"),
        Some(&body),
    )
    .await;
    assert_error(r, 409, "invalid_state_transition").await;

    let unfreeze = format!("/v1/admin/users/ann/cards/{a1}/unfreeze");
    ok(
        send(&app, "POST", &unfreeze, ("op", "admin"), None, None).await,
        200,
    )
    .await;
    let list = cards(&app, "bob", "").await;
    assert_eq!(ids(&list), [b1.as_str(), sid.as_str()]);
    assert_eq!(
        default_of(&list),
        [sid.as_str()],
        "bob's choice holds again"
    );
}

/// While the shared card a user made their default may not be used (its
/// holder's card frozen), reads show the card the promotion rule picks;
/// a write's answer says the same of the card it returns.
#[tokio::test]
async fn a_writes_answer_shows_the_default_a_read_shows_while_a_shared_default_is_unusable() {
    let app = spawn();
    let a1 = bind_active(&app, "ann", VISA).await;
    let b1 = bind_active(&app, "bob", VISA3).await;
    let sid = share(&app, "ann", &a1, "bob", "s1").await;
    ok(accept(&app, "bob", &sid).await, 200).await;
    let r = send(
        &app,
        "PUT",
        &format!("/v1/users/bob/cards/{sid}/default"),
        ("bob", "user"),
        None,
        None,
    )
    .await;
    ok(r, 200).await;
    let freeze = format!("/v1/admin/users/ann/cards/{a1}/freeze");
    ok(
        send(&app, "POST", &freeze, ("op", "admin"), None, None).await,
        200,
    )
    .await;

    // Bob's new card is the newest activated: the promotion rule's pick.
    let resp = app.bind("bob", "bind-bob-2", &bind_body(VISA2)).await;
    resp.assert_status(poem::http::StatusCode::CREATED);
    let v = json_of(resp).await;
    let b2 = v["id"].as_str().unwrap().to_owned();
    let list = cards(&app, "bob", "").await;
    assert_eq!(default_of(&list), [b2.as_str()]);
    assert_eq!(v["is_default"], true, "the bind's answer: {v}");
    // An admin's unfreeze of one of bob's own cards answers likewise.
    for (path, status) in [("freeze", "frozen"), ("unfreeze", "active")] {
        let r = send(
            &app,
            "POST",
            &format!("/v1/admin/users/bob/cards/{b1}/{path}"),
            ("op", "admin"),
            None,
            None,
        )
        .await;
        let v = ok(r, 200).await;
        assert_eq!(
            (v["status"].as_str(), v["is_default"].as_bool()),
            (Some(status), Some(false))
        );
    }
    let r = send(
        &app,
        "GET",
        &format!("/v1/users/bob/cards/{b2}"),
        ("bob", "user"),
        None,
        None,
    )
    .await;
    assert_eq!(ok(r, 200).await["is_default"], true);

    // Usable again: the shared card is the default again, in answers too.
    let unfreeze = format!("/v1/admin/users/ann/cards/{a1}/unfreeze");
    ok(
        send(&app, "POST", &unfreeze, ("op", "admin"), None, None).await,
        200,
    )
    .await;
    let r = send(
        &app,
        "POST",
        &format!("/v1/admin/users/bob/cards/{b2}/freeze"),
        ("op", "admin"),
        None,
        None,
    )
    .await;
    assert_eq!(ok(r, 200).await["is_default"], false);
    assert_eq!(default_of(&cards(&app, "bob", "").await), [sid.as_str()]);
}

#[tokio::test]
async fn a_backend_shares_for_its_users_and_the_secondary_leaves() {
    let app = spawn();
    let a1 = bind_active(&app, "ann", VISA).await;
    let body = share_body("bob", 100, "CNY", &in_seconds(&app, DAY));
    let r = send(
        &app,
        "POST",
        &format!("/v1/users/ann/cards/{a1}/shares"),
        ("merchant", "service"),
        Some("m1"),
        Some(&body),
    )
    .await;
    let sid = ok(r, 201).await["id"].as_str().unwrap().to_owned();
    let r = send(
        &app,
        "POST",
        &format!("/v1/users/bob/shared-cards/{sid}/accept"),
        ("merchant", "service"),
        None,
        Some(&json!({ "consent": consent() })),
    )
    .await;
    ok(r, 200).await;
    assert_eq!(ids(&cards(&app, "bob", "").await), [sid.as_str()]);

    let leave = format!("/v1/users/bob/shared-cards/{sid}");
    let r = send(&app, "DELETE", &leave, ("bob", "user"), None, None).await;
    assert_eq!(ok(r, 200).await["status"], "ended");
    assert!(cards(&app, "bob", "").await.is_empty());
    let given = shares_of(&app, "ann", &a1).await;
    assert_eq!(given[0]["status"], "revoked");
    let r = send(&app, "DELETE", &leave, ("bob", "user"), None, None).await;
    assert_eq!(ok(r, 200).await["status"], "ended", "leaving twice");
}
