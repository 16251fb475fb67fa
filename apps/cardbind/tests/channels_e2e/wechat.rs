//! The WeChat Pay binding flow end to end, against `FakeWechat`.

use super::*;

#[tokio::test]
async fn wechat_binding_flow_end_to_end() {
    let s = start().await;
    let user = "wx-user-1";
    let (id, url) = s.bind_redirect(user, VISA, "wechat").await;
    let code = s.channel_code(&id).await;
    assert!(url.contains(&code), "{url}");
    assert_eq!(s.wechat.contract(&code).unwrap().0, "NOT_SIGNED");

    let signed = s.wechat.user_signs(&code, "EV-e2e-0001").unwrap();
    let r = s.notify_wechat(&signed).await;
    assert!((200..300).contains(&r.status), "{} {}", r.status, r.text);
    assert_eq!(r.json()["code"], "SUCCESS");
    let card = s.card(user, &id).await;
    assert_eq!(card["status"], "active", "{card}");
    let (_, contract_id) = s.wechat.contract(&code).unwrap();
    assert_eq!(
        s.consent(user, &id).await["agreement_id"],
        contract_id.as_str()
    );

    // Replayed callback: acknowledged, no change.
    let r = s.notify_wechat(&signed).await;
    assert!((200..300).contains(&r.status));
    assert_eq!(s.card(user, &id).await, card);
    let applied = s
        .audit_of_card(&id)
        .await
        .iter()
        .filter(|e| e["action"] == "binding.channel_event")
        .count();
    assert_eq!(applied, 1);

    // Tampered body, and a callback signed with a stranger's key.
    let mut tampered = signed.clone();
    tampered.body = String::from_utf8(tampered.body)
        .unwrap()
        .replace("EV-e2e-0001", "EV-e2e-0009")
        .into_bytes();
    let r = s.notify_wechat(&tampered).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (401, "invalid_signature"),
        "{}",
        r.text
    );
    s.wechat.sign_with_wrong_key(true);
    let forged = s
        .wechat
        .callback(
            "EV-e2e-forged",
            "PAPAY.TERMINATE",
            json!({"mchid": fw::MCHID, "out_contract_code": code, "contract_id": contract_id, "change_type": "DELETE"}),
        )
        .unwrap();
    s.wechat.sign_with_wrong_key(false);
    let r = s.notify_wechat(&forged).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (401, "invalid_signature"),
        "{}",
        r.text
    );
    // Missing signature headers altogether.
    let json_ct = [("content-type".to_owned(), "application/json".to_owned())];
    let r = s.notify("wechat", &json_ct, signed.body.clone()).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (401, "invalid_signature")
    );
    assert_eq!(s.card(user, &id).await, card);

    // A second card, signed, then terminated by the user inside WeChat.
    let (id2, _) = s.bind_redirect(user, MC, "wechat").await;
    let code2 = s.channel_code(&id2).await;
    let r = s
        .notify_wechat(&s.wechat.user_signs(&code2, "EV-e2e-0002").unwrap())
        .await;
    assert!((200..300).contains(&r.status));
    assert_eq!(s.card(user, &id2).await["status"], "active");
    let r = s
        .notify_wechat(&s.wechat.user_terminates(&code2, "EV-e2e-0003").unwrap())
        .await;
    assert!((200..300).contains(&r.status), "{}", r.text);
    let card2 = s.card(user, &id2).await;
    assert_eq!(card2["status"], "inactive", "{card2}");
    let consent2 = s.consent(user, &id2).await;
    assert!(consent2["revoked_at"].is_string(), "{consent2}");
    assert_eq!(consent2["revoked_by"], "channel:wechat");

    // We unbind the first card: a verified terminate call for its contract.
    let r = s.unbind(user, &id).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["status"], "inactive");
    assert_eq!(s.wechat.contract(&code).unwrap().0, "TERMINATED");
    let terminate = format!(
        "POST /v3/papay/sign/contracts/plan-id/{}/out-contract-code/{code}/terminate",
        fw::PLAN_ID
    );
    let paths = s.wechat.verified_paths();
    assert_eq!(
        paths.iter().filter(|p| p.ends_with("/terminate")).count(),
        1,
        "{paths:?}"
    );
    assert!(paths.contains(&terminate), "{paths:?}");
    assert_eq!(
        paths
            .iter()
            .filter(|p| *p == &format!("POST {}", fw::PRESIGN_PATH))
            .count(),
        2,
        "{paths:?}"
    );
    assert_eq!(s.wechat.rejected_count(), 0, "{:?}", s.wechat.requests());
}

/// WeChat Pay takes a contract code once, ended contracts included: a card
/// bound again pre-signs under a code of its own bind. A signing of the
/// earlier bind's page, arriving while the card waits on the new one, is
/// ended at the gateway and leaves the card waiting.
#[tokio::test]
async fn a_card_bound_again_through_wechat_gets_a_contract_code_of_its_own() {
    let s = start().await;
    let user = "wx-rebind";
    let (id, _) = s.bind_redirect(user, VISA, "wechat").await;
    let first = s.channel_code(&id).await;
    let r = s
        .notify_wechat(&s.wechat.user_signs(&first, "EV-rebind-1").unwrap())
        .await;
    assert!((200..300).contains(&r.status), "{}", r.text);
    assert_eq!(s.card(user, &id).await["status"], "active");
    let r = s.unbind(user, &id).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(s.wechat.contract(&first).unwrap().0, "TERMINATED");

    // Bound again: the same card record, a new code the gateway takes.
    let (again, _) = s.bind_redirect(user, VISA, "wechat").await;
    assert_eq!(again, id, "one record per user and card");
    let second = s.channel_code(&id).await;
    assert_ne!(second, first);
    assert_eq!(s.wechat.contract(&second).unwrap().0, "NOT_SIGNED");

    // Unbound while waiting and bound a third time; then the user signs
    // the second bind's page after all.
    let r = s.unbind(user, &id).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let (third_id, _) = s.bind_redirect(user, VISA, "wechat").await;
    assert_eq!(third_id, id);
    let third = s.channel_code(&id).await;
    assert!(third != first && third != second);
    let r = s
        .notify_wechat(&s.wechat.user_signs(&second, "EV-rebind-2").unwrap())
        .await;
    assert!((200..300).contains(&r.status), "{}", r.text);
    assert_eq!(
        s.card(user, &id).await["status"],
        "pending_verification",
        "a signing of an earlier bind does not bind this one"
    );
    assert_eq!(
        s.wechat.contract(&second).unwrap().0,
        "TERMINATED",
        "the agreement nobody here will use is ended at the gateway"
    );
    let r = s
        .notify_wechat(&s.wechat.user_signs(&third, "EV-rebind-3").unwrap())
        .await;
    assert!((200..300).contains(&r.status), "{}", r.text);
    assert_eq!(s.card(user, &id).await["status"], "active");
    assert_eq!(s.wechat.rejected_count(), 0, "{:?}", s.wechat.requests());
}

/// A merchant account can be shared with another system. A signing under
/// a code the service could not have made (a UUID v4 without dashes, or
/// 28 digits that decode to no UUID v7), or under a code of ours for a
/// card the service never held, is another system's contract: it is
/// acknowledged and left alone, the gateway not even asked. A signing
/// under the code of a card the service held, unbound while it waited, is
/// ended at the gateway.
#[tokio::test]
async fn a_signing_under_another_systems_code_is_left_alone() {
    let never_held = BindingId::from_uuid_bytes(*uuid::Uuid::now_v7().as_bytes());
    let foreign = [
        uuid::Uuid::new_v4().simple().to_string(),
        // All 128 bits set: 28 of our digits, of neither version 7 nor
        // the RFC variant.
        "7N42dgm5tFLK9N8MT7fHC74GFfc3".to_owned(),
        // A UUID v7 of ours in every respect, of no card held here.
        cardbind_channels::refs::of_attempt(&never_held, 5).unwrap(),
        cardbind_channels::refs::legacy_of(&never_held).unwrap(),
    ];
    let s = start().await;
    let asked_before = s.wechat.verified_paths().len();
    for (i, code) in foreign.iter().enumerate() {
        let n = s
            .wechat
            .user_signs(code, &format!("EV-foreign-{i}"))
            .unwrap();
        let r = s.notify_wechat(&n).await;
        assert!(
            (200..300).contains(&r.status),
            "{code}: {} {}",
            r.status,
            r.text
        );
        assert_eq!(s.wechat.contract(code).unwrap().0, "SIGNED", "{code}");
    }
    let asked = s.wechat.verified_paths();
    assert_eq!(asked.len(), asked_before, "{asked:?}");
    assert!(s.audit("binding.unwanted_signing").await.is_empty());

    // A card held here, unbound while it waited; then the user signs.
    let user = "wx-gone";
    let (id, _) = s.bind_redirect(user, VISA, "wechat").await;
    let code = s.channel_code(&id).await;
    let r = s.unbind(user, &id).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s
        .notify_wechat(&s.wechat.user_signs(&code, "EV-ours-gone").unwrap())
        .await;
    assert!((200..300).contains(&r.status), "{} {}", r.status, r.text);
    assert_eq!(s.wechat.contract(&code).unwrap().0, "TERMINATED");
    let unwanted = s.audit("binding.unwanted_signing").await;
    assert_eq!(unwanted.len(), 1, "{unwanted:?}");
    assert_eq!(unwanted[0]["card_id"], id.as_str());
    assert_eq!(s.wechat.rejected_count(), 0, "{:?}", s.wechat.requests());
}

/// `channels.resilience.timeout_ms` above 10 s is the time a WeChat Pay
/// call may take (the adapter's HTTP client cut every call at 10 s, its
/// own default, whatever the setting: a gateway answering in 10.5 s timed
/// out, and the card went to review).
#[tokio::test]
async fn a_call_timeout_above_ten_seconds_is_the_channels_own() {
    let s = start_setup(Setup {
        call_timeout_ms: Some((12_000, 25_000)),
        ..Setup::default()
    })
    .await;
    s.wechat
        .answer_after(std::time::Duration::from_millis(10_500));
    let (id, url) = s.bind_redirect("wx-slow-1", VISA, "wechat").await;
    let code = s.channel_code(&id).await;
    assert!(url.contains(&code), "{url}");
    assert_eq!(
        s.wechat
            .verified_paths()
            .iter()
            .filter(|p| p.contains("pre-entrust-sign"))
            .count(),
        1,
        "answered the first time"
    );
}
