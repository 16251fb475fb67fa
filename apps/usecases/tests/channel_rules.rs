//! A channel configured to take only some cards (`[channels.NAME.accept]`)
//! refuses the others at bind with `422 card_not_accepted_by_channel`,
//! before anything is written or the channel is asked.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support;

use std::collections::BTreeMap;

use cardbind_domain::{
    BinEntry, BinTable, BindingStatus, CardType, ChannelCardRule, ChannelName, Country, ErrorCode,
    UnknownBins,
};
use cardbind_ports::audit::{AuditAction, AuditFilter, AuditLog, Outcome};
use cardbind_ports::store::WalletStore;
use cardbind_usecases::Policy;
use support::*;

/// 411111… is a US credit card in this table; nothing else is known.
fn table() -> BinTable {
    BinTable::new(vec![BinEntry::parse(
        "411111",
        "",
        "TST",
        "测试银行",
        "Test Bank",
        "credit",
        "US",
        "USD",
    )
    .unwrap()])
    .unwrap()
}

fn policy(rule: ChannelCardRule) -> Policy {
    Policy {
        card_rules: BTreeMap::from([(ChannelName::parse("mock").unwrap(), rule)]),
        ..unlimited()
    }
}

/// A Mastercard number the table does not know.
fn unknown_card() -> String {
    let body = "555555000000123";
    let check = cardbind_domain::card::luhn_check_digit(body).unwrap();
    format!("{body}{check}")
}

async fn refused_binds(w: &World, u: &str) -> usize {
    let f = AuditFilter {
        user_id: Some(user(u)),
        ..Default::default()
    };
    AuditLog::list(&w.store, &f, None, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| {
            r.event.action == AuditAction::BindingCreate
                && r.event.outcome == Outcome::Refused(ErrorCode::CardNotAcceptedByChannel)
        })
        .count()
}

#[tokio::test]
async fn a_card_of_a_type_the_channel_does_not_take_is_refused_and_nothing_is_written() {
    let debit_only = ChannelCardRule {
        card_types: vec![CardType::Debit],
        countries: vec![],
        unknown_bins: UnknownBins::Accept,
    };
    let w = world_with_bins(policy(debit_only), table());
    let e =
        w.uc.bind_card(&backend(), bind_cmd("ann", &visa(7), w.now()))
            .await
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::CardNotAcceptedByChannel);
    assert_eq!(
        w.channel.starts.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the channel was asked"
    );
    let wallet = WalletStore::load(&w.store, &user("ann")).await.unwrap();
    assert!(
        wallet.is_none_or(|s| s.wallet.bindings().is_empty()),
        "a refused card was written"
    );
    assert_eq!(refused_binds(&w, "ann").await, 1);
    // The unknown card is taken: the rule accepts unknown BINs.
    let v =
        w.uc.bind_card(&backend(), bind_cmd("ann", &unknown_card(), w.now()))
            .await
            .unwrap();
    assert_eq!(v.binding.status, BindingStatus::Active);
}

#[tokio::test]
async fn countries_and_unknown_bins_decide_as_configured() {
    let us_only = ChannelCardRule {
        card_types: vec![],
        countries: vec![Country::parse("US").unwrap()],
        unknown_bins: UnknownBins::Refuse,
    };
    let w = world_with_bins(policy(us_only), table());
    let v =
        w.uc.bind_card(&backend(), bind_cmd("ben", &visa(8), w.now()))
            .await
            .unwrap();
    assert_eq!(v.binding.status, BindingStatus::Active);
    let e =
        w.uc.bind_card(&backend(), bind_cmd("ben", &unknown_card(), w.now()))
            .await
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::CardNotAcceptedByChannel);
    assert_eq!(refused_binds(&w, "ben").await, 1);

    let cn_only = ChannelCardRule {
        card_types: vec![],
        countries: vec![Country::parse("CN").unwrap()],
        unknown_bins: UnknownBins::Accept,
    };
    let w = world_with_bins(policy(cn_only), table());
    let e =
        w.uc.bind_card(&backend(), bind_cmd("cy", &visa(9), w.now()))
            .await
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::CardNotAcceptedByChannel);
}

#[tokio::test]
async fn the_channel_is_told_the_card_currency_the_bin_table_knows() {
    let w = world_with_bins(unlimited(), table());
    w.uc.bind_card(&backend(), bind_cmd("dee", &visa(10), w.now()))
        .await
        .unwrap();
    w.uc.bind_card(&backend(), bind_cmd("dee", &unknown_card(), w.now()))
        .await
        .unwrap();
    assert_eq!(
        *w.channel.currencies.lock().unwrap(),
        vec![Some("USD".to_owned()), None]
    );
}
