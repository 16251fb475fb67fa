//! Round trips of the records through their serde shapes.
#![allow(clippy::unwrap_used)]
use super::*;
use cardbind_domain::{CardCap, CardToBind, ConsentGiven, StartOutcome, VerificationPolicy};

fn wallet() -> Wallet {
    let now = Timestamp::from_unix_millis(1_700_000_000_000);
    let mut w = Wallet::new(UserId::parse("alice").unwrap());
    for i in 0..3u32 {
        let id = w
            .open(
                CardToBind {
                    new_id: BindingId::parse(&format!("card-{i}")).unwrap(),
                    fingerprint: Fingerprint::new(2, format!("{i:064x}")),
                    card: CardSummary {
                        brand: CardBrand::UnionPay,
                        bin: "622588".into(),
                        last4: "4444".into(),
                        expiry: Expiry::restore(6, 2031).unwrap(),
                        facts: None,
                    },
                    consent: ConsentGiven {
                        text_version: "2026-01".into(),
                        text_hash: "ab".repeat(32),
                        ip: Some("10.0.0.1".into()),
                        user_agent: Some("app/1.0".into()),
                    }
                    .accept(ChannelName::parse("alipay").unwrap(), now)
                    .unwrap(),
                    generation: 7 + i,
                    bind_key: (i == 1).then(|| format!("key-{i}")),
                },
                CardCap::default(),
                now,
                &VerificationPolicy::default(),
            )
            .unwrap()
            .id()
            .clone();
        let outcome = match i {
            0 => StartOutcome::Bound {
                channel_ref: "2088".into(),
            },
            1 => StartOutcome::ActionRequired {
                channel_ref: "r1".into(),
                action: NextAction::Redirect {
                    url: "https://example.com/sign".into(),
                },
            },
            _ => StartOutcome::Refused {
                code: cardbind_domain::ChannelCode::from_channel("isv.declined"),
            },
        };
        let _: Result<(), cardbind_domain::StateRefusal> =
            w.change(&id, |b| b.apply_start(outcome, now));
    }
    w
}

#[test]
fn a_wallet_round_trips_through_json() {
    let w = wallet();
    let rec = WalletRecord::from(&w);
    let text = serde_json::to_string(&rec).unwrap();
    let back: WalletRecord = serde_json::from_str(&text).unwrap();
    assert_eq!(back.into_domain().unwrap(), w);
    assert!(has_pending(&w));
}

#[test]
fn a_wallet_written_before_family_cards_still_loads() {
    let w = wallet();
    let mut v = serde_json::to_value(WalletRecord::from(&w)).unwrap();
    let o = v.as_object_mut().unwrap();
    assert!(
        !o.contains_key("shares") && !o.contains_key("shared_in"),
        "no family fields when there are none: {v}"
    );
    o.remove("shares");
    let back: WalletRecord = serde_json::from_value(v).unwrap();
    assert_eq!(back.into_domain().unwrap(), w);
}

#[test]
fn family_shares_round_trip_and_refuse_corruption() {
    use cardbind_ports::testkit::{at, family_wallets, user_id};
    let (p, s) = family_wallets(&user_id("alice"), &user_id("bob"), at(0));
    for w in [&p, &s] {
        let text = serde_json::to_string(&WalletRecord::from(w)).unwrap();
        let back: WalletRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(&back.into_domain().unwrap(), w);
    }
    let mut rec = WalletRecord::from(&p);
    rec.shares[0].limit_minor = 0;
    assert!(matches!(rec.into_domain(), Err(StoreError::Corrupt(_))));
    let mut rec = WalletRecord::from(&p);
    rec.shares[0].currency = "XYZ".into();
    assert!(matches!(rec.into_domain(), Err(StoreError::Corrupt(_))));
    let mut rec = WalletRecord::from(&s);
    rec.shared_in[0].share = "".into();
    assert!(matches!(rec.into_domain(), Err(StoreError::Corrupt(_))));
}

#[test]
fn a_corrupt_record_is_an_error_not_a_panic() {
    let mut rec = WalletRecord::from(&wallet());
    rec.bindings[0].status = "vanished".into();
    assert!(matches!(rec.into_domain(), Err(StoreError::Corrupt(_))));
    let mut rec = WalletRecord::from(&wallet());
    rec.bindings[1].card.exp_month = 13;
    assert!(matches!(rec.into_domain(), Err(StoreError::Corrupt(_))));
}

#[test]
fn events_round_trip() {
    let e = AuditEvent {
        at: Timestamp::from_unix_millis(9),
        actor: AuditActor {
            subject: "backend".into(),
            role: Some(Role::Service),
        },
        action: AuditAction::BindingFreeze,
        user_id: Some(UserId::parse("alice").unwrap()),
        binding_id: Some(BindingId::parse("card-1").unwrap()),
        outcome: Outcome::Refused(cardbind_domain::ErrorCode::InvalidStateTransition),
        request_id: Some("r".into()),
        client_ip: None,
        detail: Some("active -> frozen".into()),
    };
    let system = AuditEvent {
        actor: AuditActor::service("reconcile"),
        ..e.clone()
    };
    for ev in [e.clone(), system] {
        let rec = EventRecord::from(&ev);
        assert_eq!(rec.clone().into_domain().unwrap(), ev);
    }
    assert_eq!(
        event_bindings(&[]),
        Vec::<String>::new(),
        "no events, no cards"
    );
    let mut other = e.clone();
    other.user_id = Some(UserId::parse("bob").unwrap());
    other.binding_id = None;
    other.action = AuditAction::BindingUnbind;
    let three = [other, e.clone(), e.clone()];
    assert_eq!(event_users(&three), ["alice", "bob"]);
    assert_eq!(event_bindings(&three), ["card-1"]);
    assert_eq!(event_actions(&three), ["binding.freeze", "binding.unbind"]);
}
