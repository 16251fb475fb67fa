//! The family rules: terms, shares, mirrors, usability.

use super::*;
use crate::binding::CardToBind;
use crate::binding::{ChannelName, StartOutcome};
use crate::card::{CardBrand, Expiry};
use crate::consent::ConsentGiven;
use crate::rules::{CardCap, VerificationPolicy};
use crate::wallet::Wallet;
use crate::Fingerprint;

fn t(s: i64) -> Timestamp {
    Timestamp::from_unix_millis(1_800_000_000_000).plus_seconds(s)
}

fn consent(now: Timestamp) -> ConsentRecord {
    ConsentGiven {
        text_version: "family-1".into(),
        text_hash: "c".repeat(64),
        ..Default::default()
    }
    .accept(ChannelName::parse("mock").unwrap(), now)
    .unwrap()
}

fn cny(amount: i64) -> Money {
    Money::parse(amount, "CNY").unwrap()
}

fn terms(amount: i64, days: i64) -> ShareTerms {
    ShareTerms::new(cny(amount), t(days * 86_400), t(0)).unwrap()
}

/// A wallet of `u` with one active card `card_001`.
fn primary(u: &str) -> (Wallet, BindingId) {
    let mut w = Wallet::new(UserId::parse(u).unwrap());
    let id = w
        .open(
            CardToBind {
                new_id: BindingId::parse("card_001").unwrap(),
                fingerprint: Fingerprint::new(1, "0a0b0c0d".into()),
                card: CardSummary {
                    brand: CardBrand::UnionPay,
                    bin: "622588".into(),
                    last4: "4444".into(),
                    expiry: Expiry::restore(6, 2031).unwrap(),
                    facts: None,
                },
                consent: consent(t(0)),
                generation: 1,
                bind_key: None,
            },
            CardCap::default(),
            t(0),
            &VerificationPolicy::default(),
        )
        .unwrap()
        .id()
        .clone();
    let r: Result<(), crate::StateRefusal> = w.change(&id, |b| {
        b.apply_start(
            StartOutcome::Bound {
                channel_ref: "agr".into(),
            },
            t(0),
        )
    });
    r.unwrap();
    (w, id)
}

fn new_share(id: &str, card: &BindingId, to: &str, terms: ShareTerms) -> NewShare {
    NewShare {
        id: ShareId::new(id).unwrap(),
        card: card.clone(),
        secondary: UserId::parse(to).unwrap(),
        terms,
        consent: consent(t(0)),
    }
}

fn mirror(w: &Wallet, share: &ShareId) -> SharedIn {
    let s = w.share(share).unwrap();
    let b = w.get(&s.card).unwrap();
    SharedIn {
        share: s.id.clone(),
        primary: w.user().clone(),
        primary_card: s.card.clone(),
        card: b.card.clone(),
        channel: b.channel.clone(),
        expires_at: s.terms.expires_at,
        invited_at: t(1),
        consent: None,
        ended_at: None,
        ended_by: None,
    }
}

#[test]
fn money_is_positive_bounded_and_in_a_currency_with_minor_units() {
    assert_eq!(cny(1).minor_units(), 1);
    assert_eq!(cny(1_000_000_000).minor_units(), 1_000_000_000);
    for (amount, code, field) in [
        (0, "CNY", ErrorCode::InvalidAmount),
        (-5, "CNY", ErrorCode::InvalidAmount),
        (1_000_000_001, "CNY", ErrorCode::InvalidAmount),
        (10_000_001, "JPY", ErrorCode::InvalidAmount),
        (100, "cny", ErrorCode::InvalidCurrency),
        (100, "ABC", ErrorCode::InvalidCurrency),
        (100, "XAU", ErrorCode::InvalidCurrency),
        (100, "BOV", ErrorCode::InvalidCurrency),
        (100, "CLF", ErrorCode::InvalidCurrency),
        (100, "USN", ErrorCode::InvalidCurrency),
        (100, "HRK", ErrorCode::InvalidCurrency),
        (100, "BGN", ErrorCode::InvalidCurrency),
        (100, "CUC", ErrorCode::InvalidCurrency),
        (100, "SLL", ErrorCode::InvalidCurrency),
        (100, "ZWL", ErrorCode::InvalidCurrency),
    ] {
        let e = Money::parse(amount, code).unwrap_err();
        assert_eq!(e.code, field, "{amount} {code}");
    }
    assert_eq!(
        Money::parse(10_000_000, "JPY").unwrap().minor_units(),
        10_000_000,
        "yen have no minor unit"
    );
    assert_eq!(
        Money::parse(0, "CNY").unwrap_err().field,
        Some(Money::AMOUNT_FIELD)
    );
}

#[test]
fn terms_expire_in_the_future_within_five_years() {
    let now = t(0);
    assert!(ShareTerms::new(cny(100), now, now).is_err(), "not now");
    assert!(ShareTerms::new(cny(100), t(-1), now).is_err(), "not past");
    assert!(ShareTerms::new(cny(100), t(1), now).is_ok());
    let max = now.plus_calendar_years(ShareTerms::MAX_YEARS);
    assert!(ShareTerms::new(cny(100), max, now).is_ok());
    let e = ShareTerms::new(cny(100), max.plus_seconds(1), now).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidShareExpiry);
    assert_eq!(e.field, Some("expires_at"));
}

#[test]
fn the_rule_needs_every_condition_at_once() {
    let (mut w, card) = primary("alice");
    let given = w
        .give_share(new_share("s1", &card, "bob", terms(50_000, 30)), t(1))
        .unwrap();
    let id = given.id().clone();
    let mut m = mirror(&w, &id);
    let share = |w: &Wallet| w.share(&id).unwrap().clone();
    let b = |w: &Wallet| w.get(&card).ok().cloned();
    // Invited, not accepted yet.
    assert!(!usable(&share(&w), b(&w).as_ref(), &m, t(2)));
    assert!(offerable(&share(&w), b(&w).as_ref(), t(2)));
    m.consent = Some(consent(t(2)));
    assert!(usable(&share(&w), b(&w).as_ref(), &m, t(2)));
    // Expiry: usable strictly before.
    let end = share(&w).terms.expires_at;
    assert!(usable(&share(&w), b(&w).as_ref(), &m, end.minus_seconds(1)));
    assert!(!usable(&share(&w), b(&w).as_ref(), &m, end));
    // Frozen card: suspended, then usable again once unfrozen.
    let r: Result<(), crate::StateRefusal> = w.change(&card, |x| x.freeze(t(3)));
    r.unwrap();
    assert!(!usable(&share(&w), b(&w).as_ref(), &m, t(3)));
    assert_eq!(
        share(&w).standing(b(&w).as_ref(), t(3)),
        Standing::Suspended
    );
    let r: Result<(), crate::StateRefusal> = w.change(&card, |x| x.unfreeze(t(4)));
    r.unwrap();
    assert!(usable(&share(&w), b(&w).as_ref(), &m, t(4)));
    // Left by the secondary.
    let mut left = m.clone();
    assert!(left.end(t(5), "bob"));
    assert!(!usable(&share(&w), b(&w).as_ref(), &left, t(5)));
    // Another share's mirror never passes.
    let mut other = m.clone();
    other.share = ShareId::new("other").unwrap();
    assert!(!usable(&share(&w), b(&w).as_ref(), &other, t(5)));
    // Revoked by the primary.
    assert_eq!(w.revoke_share(&id, t(6), "alice"), Ok(true));
    assert_eq!(w.revoke_share(&id, t(7), "alice"), Ok(false), "idempotent");
    assert!(!usable(&share(&w), b(&w).as_ref(), &m, t(6)));
    assert_eq!(share(&w).revoked_by.as_deref(), Some("alice"));
    assert_eq!(share(&w).consent.revoked_at, Some(t(6)));
}

#[test]
fn unbinding_or_erasing_the_primary_ends_its_shares_in_the_same_change() {
    let (mut w, card) = primary("alice");
    let id = w
        .give_share(new_share("s1", &card, "bob", terms(100, 30)), t(1))
        .unwrap()
        .id()
        .clone();
    let r: Result<bool, crate::StateRefusal> = w.change(&card, |b| b.unbind(t(9), "ops"));
    r.unwrap();
    let s = w.share(&id).unwrap();
    assert_eq!(s.revoked_at, Some(t(9)));
    assert_eq!(s.revoked_by.as_deref(), Some("ops"));
    // Bound again: the share does not come back.
    let b = w.get(&card).unwrap().clone();
    assert_eq!(
        w.share(&id).unwrap().standing(Some(&b), t(10)),
        Standing::Revoked
    );

    let (mut w, card) = primary("carol");
    let id = w
        .give_share(new_share("s2", &card, "dan", terms(100, 30)), t(1))
        .unwrap()
        .id()
        .clone();
    assert_eq!(w.unbind_all(t(3), "admin").len(), 1);
    assert_eq!(w.share(&id).unwrap().revoked_by.as_deref(), Some("admin"));
}

#[test]
fn one_live_share_per_card_and_secondary_and_the_caps() {
    let (mut w, card) = primary("alice");
    let first = w
        .give_share(new_share("s1", &card, "bob", terms(100, 30)), t(1))
        .unwrap();
    assert!(matches!(first, Given::New(_)));
    // The same again (a retry) finds it; other terms are a conflict.
    assert_eq!(
        w.give_share(new_share("s2", &card, "bob", terms(100, 30)), t(2))
            .unwrap(),
        Given::Existing(first.id().clone())
    );
    assert_eq!(
        w.give_share(new_share("s3", &card, "bob", terms(200, 30)), t(2))
            .unwrap_err()
            .code(),
        ErrorCode::CardAlreadyShared
    );
    assert_eq!(
        w.give_share(new_share("s4", &card, "alice", terms(100, 30)), t(2))
            .unwrap_err()
            .code(),
        ErrorCode::ShareWithSelf
    );
    let missing = BindingId::parse("nope").unwrap();
    assert_eq!(
        w.give_share(new_share("s5", &missing, "eve", terms(100, 30)), t(2))
            .unwrap_err()
            .code(),
        ErrorCode::NotFound
    );
    // Revoked: the pair may be shared again, under a new id.
    w.revoke_share(first.id(), t(3), "alice").unwrap();
    let again = w
        .give_share(new_share("s6", &card, "bob", terms(200, 30)), t(4))
        .unwrap();
    assert_eq!(again, Given::New(ShareId::new("s6").unwrap()));
    // The cap on live shares.
    for i in 1..MAX_LIVE_SHARES {
        w.give_share(
            new_share(&format!("m{i}"), &card, &format!("u{i}"), terms(1, 30)),
            t(5),
        )
        .unwrap();
    }
    assert_eq!(
        w.give_share(new_share("over", &card, "zed", terms(1, 30)), t(5))
            .unwrap_err()
            .code(),
        ErrorCode::ShareLimitReached
    );
    // Expired shares do not count.
    let later = t(31 * 86_400);
    assert!(w
        .give_share(new_share("late", &card, "zed", terms(1, 60)), later)
        .is_ok());
    // A frozen card cannot be shared.
    let r: Result<(), crate::StateRefusal> = w.change(&card, |b| b.freeze(later));
    r.unwrap();
    assert_eq!(
        w.give_share(new_share("fz", &card, "yan", terms(1, 60)), later)
            .unwrap_err()
            .code(),
        ErrorCode::InvalidStateTransition
    );
}

#[test]
fn ended_shares_are_kept_up_to_a_bound() {
    let (mut w, card) = primary("alice");
    for i in 0..(ENDED_KEPT + 5) {
        let id = w
            .give_share(
                new_share(&format!("s{i:02}"), &card, "bob", terms(1, 30)),
                t(i as i64),
            )
            .unwrap()
            .id()
            .clone();
        w.revoke_share(&id, t(i as i64), "alice").unwrap();
    }
    w.give_share(new_share("last", &card, "bob", terms(1, 30)), t(100))
        .unwrap();
    assert_eq!(w.shares().len(), ENDED_KEPT + 1);
    assert!(
        w.share(&ShareId::new("s00").unwrap()).is_none(),
        "oldest gone"
    );
    assert!(
        w.share(&ShareId::new("s24").unwrap()).is_some(),
        "newest kept"
    );
}

#[test]
fn a_user_with_as_many_open_shares_as_allowed_receives_no_more() {
    let (mut p, card) = primary("alice");
    let s0 = p
        .give_share(new_share("s0", &card, "bob", terms(100, 30)), t(0))
        .unwrap()
        .id()
        .clone();
    let base = mirror(&p, &s0);
    let mut bob = Wallet::new(UserId::parse("bob").unwrap());
    let mut ids = Vec::new();
    for i in 0..MAX_OPEN_SHARED_IN {
        // Each from another primary, as far as bob's wallet tells.
        let m = SharedIn {
            share: ShareId::new(&format!("o{i:02}")).unwrap(),
            primary: UserId::parse(&format!("p{i}")).unwrap(),
            ..base.clone()
        };
        assert_eq!(bob.receive_share(m.clone(), t(1)), Received::New);
        ids.push(m);
    }
    let extra = SharedIn {
        share: ShareId::new("one-more").unwrap(),
        ..ids[0].clone()
    };
    assert_eq!(bob.receive_share(extra.clone(), t(1)), Received::Full);
    assert!(bob.mirror(&extra.share).is_none());
    assert_eq!(bob.open_shared_in(t(1)), MAX_OPEN_SHARED_IN);
    // An ended share is recorded whatever the count: it opens nothing.
    let ended = SharedIn {
        share: ShareId::new("ended").unwrap(),
        ended_at: Some(t(1)),
        ended_by: Some("alice".into()),
        ..ids[0].clone()
    };
    assert_eq!(bob.receive_share(ended, t(1)), Received::New);
    // Once one ends, there is room again.
    assert!(bob.end_shared_in(&ids[0].share, t(2), "bob"));
    assert_eq!(bob.receive_share(extra, t(2)), Received::New);
}

#[test]
fn the_secondary_accepts_once_and_an_ended_share_stays_ended() {
    let (mut p, card) = primary("alice");
    let id = p
        .give_share(new_share("s1", &card, "bob", terms(100, 30)), t(1))
        .unwrap()
        .id()
        .clone();
    let mut w = Wallet::new(UserId::parse("bob").unwrap());
    assert_eq!(w.receive_share(mirror(&p, &id), t(1)), Received::New);
    assert_eq!(
        w.receive_share(mirror(&p, &id), t(1)),
        Received::Again,
        "idempotent"
    );
    assert_eq!(w.accept_share(&id, consent(t(2)), t(2)), Ok(true));
    assert_eq!(w.accept_share(&id, consent(t(3)), t(3)), Ok(false));
    assert_eq!(
        w.mirror(&id).unwrap().consent.as_ref().unwrap().accepted_at,
        t(2),
        "the first acceptance is kept"
    );
    assert!(w.end_shared_in(&id, t(4), "alice"));
    assert!(!w.end_shared_in(&id, t(5), "alice"));
    assert_eq!(
        w.accept_share(&id, consent(t(6)), t(6)).unwrap_err().code(),
        ErrorCode::ShareEnded
    );
    let m = w.mirror(&id).unwrap();
    assert_eq!(m.consent.as_ref().unwrap().revoked_at, Some(t(4)));
    let unknown = ShareId::new("x").unwrap();
    assert_eq!(
        w.accept_share(&unknown, consent(t(6)), t(6))
            .unwrap_err()
            .code(),
        ErrorCode::NotFound
    );
    // Expired before it was accepted.
    p.revoke_share(&id, t(4), "alice").unwrap();
    let id2 = p
        .give_share(new_share("s2", &card, "bob", terms(100, 1)), t(1))
        .unwrap()
        .id()
        .clone();
    w.receive_share(mirror(&p, &id2), t(1));
    assert_eq!(
        w.accept_share(&id2, consent(t(2 * 86_400)), t(2 * 86_400))
            .unwrap_err()
            .code(),
        ErrorCode::ShareEnded
    );
}

#[test]
fn a_shared_card_as_default_falls_back_when_unusable() {
    let (mut p, card) = primary("alice");
    let id = p
        .give_share(new_share("s1", &card, "bob", terms(100, 30)), t(1))
        .unwrap()
        .id()
        .clone();
    let (mut w, own) = primary("bob");
    assert_eq!(w.effective_default(), Some(&own));
    w.receive_share(mirror(&p, &id), t(1));
    // Not accepted: cannot be the default.
    assert_eq!(
        w.set_default_shared(&id).unwrap_err().code(),
        ErrorCode::ShareEnded
    );
    w.accept_share(&id, consent(t(2)), t(2)).unwrap();
    assert_eq!(w.set_default_shared(&id), Ok(true));
    let shared = id.card_id();
    assert_eq!(w.effective_default(), Some(&shared));
    // The secondary's own changes keep their choice.
    let r: Result<(), crate::StateRefusal> = w.change(&own, |b| b.freeze(t(3)));
    r.unwrap();
    assert_eq!(w.effective_default(), Some(&shared));
    let r: Result<(), crate::StateRefusal> = w.change(&own, |b| b.unfreeze(t(3)));
    r.unwrap();
    // Unusable (the primary froze it): falls back to the promotion rule,
    // as for an unbound card, without a write.
    assert_eq!(w.effective_default_with(|_| false), Some(&own));
    assert_eq!(w.effective_default_with(|_| true), Some(&shared));
    // Ended: the stored pointer is repaired.
    w.end_shared_in(&id, t(4), "alice");
    assert_eq!(w.effective_default(), Some(&own));
    assert_eq!(w.default_pointer(), Some(&own));
}

#[test]
fn receiving_a_share_that_lets_the_default_share_go_keeps_a_default() {
    let (mut ann, ann_card) = primary("ann");
    let (mut bob, own) = primary("bob");
    let s1 = ann
        .give_share(new_share("s1", &ann_card, "bob", terms(100, 1)), t(0))
        .unwrap()
        .id()
        .clone();
    assert_eq!(bob.receive_share(mirror(&ann, &s1), t(1)), Received::New);
    bob.accept_share(&s1, consent(t(2)), t(2)).unwrap();
    bob.set_default_shared(&s1).unwrap();
    assert_eq!(bob.effective_default(), Some(&s1.card_id()));
    // s1 expires (never ended); later closed shares push it out.
    let later = t(3 * 86_400);
    for i in 0..=ENDED_KEPT {
        let m = SharedIn {
            share: ShareId::new(&format!("x{i:02}")).unwrap(),
            ended_at: Some(t(2 * 86_400 + i as i64)),
            ended_by: Some("ann".into()),
            expires_at: later,
            ..mirror(&ann, &s1)
        };
        bob.receive_share(m, later);
    }
    assert!(bob.mirror(&s1).is_none(), "the oldest closed share went");
    assert_eq!(bob.effective_default(), Some(&own));
}

/// Withdrawn currencies are not an amount's (the spec's list of them
/// leaves them out too), their successors are; a stored limit in one is
/// read back as it was.
#[test]
fn withdrawn_currencies_are_not_an_amounts() {
    use crate::bins::Currency;
    let amounts = Currency::amount_codes();
    for gone in ["BGN", "CUC", "HRK", "SLL", "ZWL"] {
        assert!(!amounts.contains(&gone), "{gone}");
        assert!(Currency::all_codes().contains(&gone), "{gone} still parses");
    }
    for current in ["EUR", "CUP", "SLE", "ZWG", "VES", "VED", "CNY"] {
        assert!(amounts.contains(&current), "{current}");
        assert!(Money::parse(100, current).is_ok(), "{current}");
    }
    let hrk = Currency::parse("HRK").unwrap();
    assert_eq!(Money::restore(500, hrk).map(|m| m.minor_units()), Some(500));
}

/// An expired share stays expired: revoking or leaving it after its
/// expiry changes nothing (it was rewritten as revoked, at that later
/// instant and by that caller, and its consent with it), and a share whose
/// card later leaves the wallet is not revoked by "card gone".
#[test]
fn an_expired_share_is_not_revoked_afterwards() {
    let (mut w, card) = primary("alice");
    let given = w
        .give_share(new_share("s1", &card, "bob", terms(50_000, 30)), t(1))
        .unwrap();
    let id = given.id().clone();
    let end = w.share(&id).unwrap().terms.expires_at;
    let after = end.plus_seconds(60);
    assert_eq!(w.revoke_share(&id, after, "alice"), Ok(false));
    let s = w.share(&id).unwrap().clone();
    assert_eq!(s.standing(w.get(&card).ok(), after), Standing::Expired);
    assert_eq!((s.revoked_at, s.consent.revoked_at), (None, None));
    // Its card gone from the wallet: still expired, not "card gone".
    let mut gone = crate::family::Family {
        given: vec![s.clone()],
        received: Vec::new(),
    };
    gone.end_shares_of_dead_cards(&[]);
    assert_eq!(
        (gone.given[0].revoked_at, gone.given[0].revoked_by.clone()),
        (None, None)
    );
    // The secondary's mirror: ending it after the expiry changes nothing.
    let mut m = mirror(&w, &id);
    m.consent = Some(consent(t(2)));
    assert!(!m.end(after, "bob"));
    assert_eq!(m.ended_at, None);
    assert!(m.consent.as_ref().unwrap().revoked_at.is_none());
    // Before the expiry both still take.
    let (mut w2, card2) = primary("carol");
    let id2 = w2
        .give_share(new_share("s2", &card2, "dan", terms(50_000, 30)), t(1))
        .unwrap()
        .id()
        .clone();
    assert_eq!(w2.revoke_share(&id2, t(5), "carol"), Ok(true));
}

/// Five years are five calendar years from the day of the share, one leap
/// day in them or two (a bound of 1,827 days let a share made on 6
/// December 2026, with one leap day ahead, expire a day late).
#[test]
fn five_years_are_calendar_years() {
    let at = |y: i32, m: u8, d: u8| {
        let date =
            ::time::Date::from_calendar_date(y, ::time::Month::try_from(m).unwrap(), d).unwrap();
        Timestamp::from_unix_millis(date.midnight().assume_utc().unix_timestamp() * 1000)
    };
    for (now, last) in [
        (at(2026, 12, 6), at(2031, 12, 6)),
        (at(2027, 1, 1), at(2032, 1, 1)),
        (at(2028, 2, 29), at(2033, 2, 28)),
    ] {
        assert!(ShareTerms::new(cny(100), last, now).is_ok(), "{now}");
        assert!(
            ShareTerms::new(cny(100), last.plus_seconds(3600), now).is_err(),
            "{now}: an hour past five calendar years"
        );
    }
}
