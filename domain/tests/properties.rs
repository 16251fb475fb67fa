//! Property tests of the domain rules.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cardbind_domain::card::{luhn_check_digit, luhn_valid};
use cardbind_domain::consent::{is_digit, mask_free_text, mask_long_numbers};
use cardbind_domain::{
    Binding, BindingId, BindingStatus, CardBrand, CardCap, CardNumber, CardSummary, CardToBind,
    ChannelCode, ChannelName, Clash, ConsentGiven, ErrorCode, Expiry, Fingerprint, Phone,
    StartOutcome, StateRefusal, Timestamp, UserId, VerificationPolicy, Wallet, ENDED_CARDS_KEPT,
};
use proptest::prelude::*;

/// A prefix inside each brand's IIN range, and the brand's lengths.
fn brand_prefixes() -> Vec<(CardBrand, &'static str)> {
    vec![
        (CardBrand::Visa, "4"),
        (CardBrand::Mastercard, "51"),
        (CardBrand::Mastercard, "55"),
        (CardBrand::Mastercard, "2221"),
        (CardBrand::Mastercard, "2720"),
        (CardBrand::Amex, "34"),
        (CardBrand::Amex, "37"),
        (CardBrand::UnionPay, "62"),
        (CardBrand::Jcb, "3528"),
        (CardBrand::Jcb, "3589"),
        (CardBrand::Discover, "6011"),
        (CardBrand::Discover, "65"),
        (CardBrand::DinersClub, "36"),
        (CardBrand::DinersClub, "300"),
        (CardBrand::Maestro, "6759"),
        (CardBrand::Mir, "2200"),
        (CardBrand::Mir, "2204"),
    ]
}

/// A Luhn-valid number: prefix, random body, check digit, of total `len`.
fn luhn_number(prefix: &str, body: &[u8], len: usize) -> String {
    let mut s = prefix.to_owned();
    for d in body.iter().take(len - 1 - prefix.len()) {
        s.push((b'0' + d % 10) as char);
    }
    let c = luhn_check_digit(&s).unwrap_or(0);
    s.push((b'0' + c) as char);
    s
}

fn valid_card() -> impl Strategy<Value = (CardBrand, String)> {
    (
        0..brand_prefixes().len(),
        proptest::collection::vec(0u8..10, 19),
        0usize..8,
    )
        .prop_map(|(i, body, li)| {
            let (brand, prefix) = brand_prefixes()[i];
            let lens = brand.lengths();
            let len = lens[li % lens.len()];
            (brand, luhn_number(prefix, &body, len))
        })
        // Elo's 627780 lies inside UnionPay's 62 and is refused
        // (`unsupported_card_brand`: `card.rs`), so it is no UnionPay card.
        .prop_filter("627780 is Elo's", |(_, n)| !n.starts_with("627780"))
}

/// A valid card number with a run of 0 to 4 spaces or dashes before each
/// digit and after the last.
fn separated_card() -> impl Strategy<Value = String> {
    (
        valid_card(),
        proptest::collection::vec(
            proptest::collection::vec(prop_oneof![Just(' '), Just('-')], 0..=4),
            20,
        ),
    )
        .prop_map(|((_, n), runs)| {
            let mut s = String::new();
            for (d, run) in n.chars().zip(&runs) {
                s.extend(run);
                s.push(d);
            }
            s.extend(&runs[19]);
            s
        })
}

proptest! {
    /// Whatever the service takes as a card number, written as it was sent,
    /// is found by the masks of free text (logs, request ids, consent
    /// texts): its separators join it into one number there too. A run of
    /// four or more, which the masks would not join, is refused.
    #[test]
    fn every_card_number_the_service_takes_is_masked_in_free_text(s in separated_card()) {
        // The runs of separators: before the first digit, between digits,
        // after the last.
        let too_long = s.split(|c: char| c.is_ascii_digit()).any(|run| run.len() > 3);
        match CardNumber::parse(&s) {
            Ok(_) => {
                prop_assert!(!too_long, "{:?}", s);
                for text in [format!("id {s} end"), s.clone()] {
                    for masked in [mask_long_numbers(&text), mask_free_text(&text)] {
                        prop_assert!(!masked.chars().any(|c| c.is_ascii_digit()), "{:?} -> {:?}", text, masked);
                    }
                }
            }
            Err(e) => {
                prop_assert!(too_long, "{:?}: {:?}", s, e);
                prop_assert_eq!(e.code, ErrorCode::InvalidCardNumber);
            }
        }
    }
}

/// A mainland mobile number, with or without a country prefix, with a run
/// of 0 to 4 spaces or dashes before each character and after the last.
fn separated_mobile() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just(""), Just("+86"), Just("0086"), Just("86")],
        3u8..10,
        proptest::collection::vec(0u8..10, 9),
        proptest::collection::vec(
            proptest::collection::vec(prop_oneof![Just(' '), Just('-')], 0..=4),
            16,
        ),
    )
        .prop_map(|(prefix, second, rest, runs)| {
            let mut n = format!("{prefix}1{second}");
            n.extend(rest.iter().map(|d| char::from(b'0' + d)));
            let mut s = String::new();
            for (c, run) in n.chars().zip(&runs) {
                s.extend(run);
                s.push(c);
            }
            s.extend(&runs[15]);
            s
        })
}

proptest! {
    /// A mobile number the service takes, written as it was sent, is found
    /// by the masks of free text, as a card number is; a run of four
    /// separators or more is refused.
    #[test]
    fn every_mobile_number_the_service_takes_is_masked_in_free_text(s in separated_mobile()) {
        let too_long = s.split(|c: char| c != ' ' && c != '-').any(|run| run.len() > 3);
        match Phone::parse(&s) {
            Ok(p) => {
                prop_assert!(!too_long, "{:?}", s);
                prop_assert_eq!(p.expose().len(), 14);
                for text in [format!("ua {s} end"), s.clone()] {
                    for masked in [mask_long_numbers(&text), mask_free_text(&text)] {
                        prop_assert!(!masked.chars().any(|c| c.is_ascii_digit()), "{:?} -> {:?}", text, masked);
                    }
                }
            }
            Err(e) => {
                prop_assert!(too_long, "{:?}: {:?}", s, e);
                prop_assert_eq!(e.code, ErrorCode::InvalidPhone);
            }
        }
    }
}

proptest! {
    #[test]
    fn every_luhn_valid_number_of_a_brand_parses((brand, n) in valid_card()) {
        let c = CardNumber::parse(&n);
        prop_assert_eq!(c.map(|c| c.brand()), Ok(brand));
    }

    #[test]
    fn spaces_and_dashes_are_ignored((brand, n) in valid_card(), every in 1usize..6) {
        let spaced: String = n.chars().enumerate().flat_map(|(i, c)| {
            let sep = if i > 0 && i % every == 0 { Some(if i % 2 == 0 { ' ' } else { '-' }) } else { None };
            sep.into_iter().chain(std::iter::once(c))
        }).collect();
        prop_assert_eq!(CardNumber::parse(&spaced).map(|c| c.brand()), Ok(brand));
    }

    #[test]
    fn any_single_digit_change_is_refused((brand, n) in valid_card(), pos in 0usize..19, delta in 1u8..10) {
        prop_assume!(brand.requires_luhn());
        let pos = pos % n.len();
        let mut b = n.clone().into_bytes();
        b[pos] = b'0' + (b[pos] - b'0' + delta) % 10;
        let changed = String::from_utf8(b).unwrap_or_default();
        prop_assert!(!luhn_valid(&changed));
        // Either refused outright or moved into a brand that skips Luhn
        // (only UnionPay does): never a Luhn-checked card.
        match CardNumber::parse(&changed) {
            Ok(c) => prop_assert_eq!(c.brand(), CardBrand::UnionPay),
            Err(e) => prop_assert!(matches!(e.code, ErrorCode::InvalidCardNumber | ErrorCode::UnsupportedCardBrand)),
        }
    }

    #[test]
    fn adjacent_transpositions_are_refused((brand, n) in valid_card(), pos in 0usize..18) {
        prop_assume!(brand.requires_luhn());
        let pos = pos % (n.len() - 1);
        let mut b = n.clone().into_bytes();
        prop_assume!(b[pos] != b[pos + 1]);
        let pair = (b[pos], b[pos + 1]);
        prop_assume!(pair != (b'0', b'9') && pair != (b'9', b'0'));
        b.swap(pos, pos + 1);
        let swapped = String::from_utf8(b).unwrap_or_default();
        prop_assert!(!luhn_valid(&swapped));
        if let Ok(c) = CardNumber::parse(&swapped) {
            prop_assert_eq!(c.brand(), CardBrand::UnionPay);
        }
    }

    #[test]
    fn a_card_number_in_consent_free_text_is_never_kept(
        (_b, n) in valid_card(),
        every in 0usize..6,
        // Separators in a row between groups (a doubled space typed by
        // mistake).
        run in 1usize..=3,
        sep in prop::sample::select(vec![' ', '-', '.', '/', ':', '_', '\u{a0}', '\u{2013}', '\u{3000}']),
        before in "[ -~]{0,40}",
        after in "[ -~]{0,40}",
        // Where the digits start: ASCII, fullwidth (as Chinese input
        // methods type them), Arabic-Indic.
        zero in prop::sample::select(vec!['0', '\u{ff10}', '\u{660}']),
    ) {
        // The number as people write it, somewhere in printable text.
        let form = |c: char| {
            c.to_digit(10)
                .and_then(|d| char::from_u32(zero as u32 + d))
                .unwrap_or(c)
        };
        let written: String = n
            .chars()
            .enumerate()
            .flat_map(|(i, c)| {
                let gap = every > 0 && i > 0 && i % every == 0;
                let gap = if gap { run } else { 0 };
                std::iter::repeat_n(sep, gap).chain(std::iter::once(form(c)))
            })
            .collect();
        let text = format!("{before}{written}{after}");
        // What the consent keeps; and the strict masking alone, for the
        // separators card numbers are usually written with.
        let mut masks: Vec<fn(&str) -> String> = vec![mask_free_text];
        if sep == ' ' || sep == '-' {
            masks.push(mask_long_numbers);
        }
        // The digits of a text, in ASCII.
        let digits_of = |s: &str| {
            s.chars()
                .filter_map(|c| {
                    let d = (c as u32).checked_sub(zero as u32).filter(|d| *d < 10);
                    d.and_then(|d| char::from_digit(d, 10))
                        .or_else(|| c.is_ascii_digit().then_some(c))
                })
                .collect::<String>()
        };
        for mask in masks {
            let masked = mask(&text);
            prop_assert!(!digits_of(&masked).contains(&n), "{} -> {}", text, masked);
            // Only digits change, each into a star.
            prop_assert_eq!(masked.chars().count(), text.chars().count());
            for (a, b) in text.chars().zip(masked.chars()) {
                prop_assert!(a == b || (is_digit(a) && b == '*'));
            }
            // And masking again changes nothing.
            prop_assert_eq!(mask(&masked), masked.clone());
        }
    }

    #[test]
    fn debug_and_display_never_show_middle_digits((_b, n) in valid_card()) {
        let c = CardNumber::parse(&n).map_err(|e| TestCaseError::fail(e.message.to_string()))?;
        let hidden = n.len() - 10;
        let expected = format!("{}{}{}", &n[..6], "*".repeat(hidden), &n[n.len() - 4..]);
        // Display is exactly BIN, one star per middle digit, last four;
        // Debug adds only the brand name around it.
        prop_assert_eq!(format!("{c}"), expected.clone());
        let debug = format!("{c:?}");
        prop_assert_eq!(debug, format!("CardNumber({} {})", c.brand(), expected));
        let shown = format!("{c:?} {c}");
        prop_assert!(!shown.contains(&n));
        prop_assert!(shown.contains(&n[n.len() - 4..]));
    }

    #[test]
    fn expiry_boundaries(year in 2000i32..2080, month in 1u32..=12, ahead in -30i32..30, m2 in 1u32..=12) {
        let today = (year, month);
        let ey = year + ahead;
        prop_assume!((1000..=9999).contains(&ey));
        let r = Expiry::parse(m2, ey as u32, today);
        let expected_ok = (ey, m2) >= (year, month) && (ey, m2) <= (year + 20, month);
        prop_assert_eq!(r.is_ok(), expected_ok, "{:?} on {:?}", (m2, ey), today);
        if let Err(e) = r {
            let want = if (ey, m2) < (year, month) { ErrorCode::CardExpired } else { ErrorCode::InvalidExpiry };
            prop_assert_eq!(e.code, want);
        }
    }

    #[test]
    fn the_current_month_is_valid_through_its_end(ms in 946_684_800_000i64..3_000_000_000_000) {
        let now = Timestamp::from_unix_millis(ms);
        let (y, m) = now.year_month();
        prop_assert!(Expiry::parse(m, y as u32, (y, m)).is_ok());
        prop_assert!(Expiry::parse(m, (y % 100) as u32, (y, m)).is_ok() || !(2000..2100).contains(&y));
        let (py, pm) = if m == 1 { (y - 1, 12) } else { (y, m - 1) };
        prop_assert_eq!(Expiry::parse(pm, py as u32, (y, m)).map_err(|e| e.code), Err(ErrorCode::CardExpired));
    }
}

// ---- random command sequences on one user's bindings -----------------------

#[derive(Clone, Debug)]
enum Cmd {
    Bind(usize),
    Verify(usize),
    Refuse(usize),
    Unreachable(usize),
    Approve(usize),
    Freeze(usize),
    Unfreeze(usize),
    Unbind(usize),
    SetDefault(usize),
}

fn cmd() -> impl Strategy<Value = Cmd> {
    cmd_of(5)
}

/// Commands on `cards` different cards.
fn cmd_of(cards: usize) -> impl Strategy<Value = Cmd> {
    let i = 0usize..cards;
    prop_oneof![
        i.clone().prop_map(Cmd::Bind),
        i.clone().prop_map(Cmd::Verify),
        i.clone().prop_map(Cmd::Refuse),
        i.clone().prop_map(Cmd::Unreachable),
        i.clone().prop_map(Cmd::Approve),
        i.clone().prop_map(Cmd::Freeze),
        i.clone().prop_map(Cmd::Unfreeze),
        i.clone().prop_map(Cmd::Unbind),
        i.prop_map(Cmd::SetDefault),
    ]
}

fn card(i: usize, now: Timestamp) -> CardToBind {
    CardToBind {
        new_id: BindingId::parse(&format!("card_{i}_{}", now.unix_millis())).unwrap(),
        fingerprint: Fingerprint::new(1, format!("{i:08x}")),
        card: CardSummary {
            brand: CardBrand::Visa,
            bin: "411111".into(),
            last4: "1111".into(),
            expiry: Expiry::restore(1, 2040).unwrap(),
            facts: None,
        },
        consent: ConsentGiven {
            text_version: "v1".into(),
            text_hash: "0".repeat(64),
            ..Default::default()
        }
        .accept(ChannelName::parse("mock").unwrap(), now)
        .unwrap(),
        generation: now.unix_millis() as u32,
        bind_key: None,
    }
}

impl Cmd {
    /// The card the command is about.
    fn card(&self) -> usize {
        match self {
            Cmd::Bind(i)
            | Cmd::Verify(i)
            | Cmd::Refuse(i)
            | Cmd::Unreachable(i)
            | Cmd::Approve(i)
            | Cmd::Freeze(i)
            | Cmd::Unfreeze(i)
            | Cmd::Unbind(i)
            | Cmd::SetDefault(i) => *i,
        }
    }

    /// Runs the command on the wallet (`id`: the binding it acts on, if
    /// any); refusals are ignored.
    fn run(self, w: &mut Wallet, id: Option<BindingId>, cap: CardCap, now: Timestamp) {
        let p = VerificationPolicy::default();
        let change =
            |w: &mut Wallet, id: &BindingId, f: &dyn Fn(&mut Binding) -> Result<(), Clash>| {
                let _: Result<(), StateRefusal> = w.change(id, f);
            };
        match (self, id) {
            (Cmd::Bind(i), _) => {
                let _ = w.open(card(i, now), cap, now, &p);
            }
            (Cmd::Verify(_), Some(id)) => change(w, &id, &|b| {
                b.apply_start(
                    StartOutcome::Bound {
                        channel_ref: "r".into(),
                    },
                    now,
                )
            }),
            (Cmd::Refuse(_), Some(id)) => change(w, &id, &|b| {
                b.apply_start(
                    StartOutcome::Refused {
                        code: ChannelCode::from_channel("card_declined"),
                    },
                    now,
                )
            }),
            (Cmd::Unreachable(_), Some(id)) => {
                change(w, &id, &|b| b.apply_start(StartOutcome::Unreachable, now))
            }
            (Cmd::Approve(_), Some(id)) => change(w, &id, &|b| b.approve(None, now)),
            (Cmd::Freeze(_), Some(id)) => change(w, &id, &|b| b.freeze(now)),
            (Cmd::Unfreeze(_), Some(id)) => change(w, &id, &|b| b.unfreeze(now)),
            (Cmd::Unbind(_), Some(id)) => change(w, &id, &|b| b.unbind(now, "u").map(|_| ())),
            (Cmd::SetDefault(_), Some(id)) => {
                let _ = w.set_default(&id);
            }
            _ => {}
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn command_sequences_keep_the_invariants(cmds in proptest::collection::vec(cmd(), 1..60)) {
        let mut w = Wallet::new(UserId::parse("u").unwrap());
        let cap = CardCap { max: 3 };
        for (step, c) in cmds.into_iter().enumerate() {
            let now = Timestamp::from_unix_millis(1_700_000_000_000 + step as i64 * 1000);
            let before: Vec<(BindingId, BindingStatus)> =
                w.bindings().iter().map(|b| (b.id.clone(), b.status)).collect();
            let fp = Fingerprint::new(1, format!("{:08x}", c.card()));
            let id = w.find_card(&fp).map(|b| b.id.clone());
            c.run(&mut w, id, cap, now);
            // Every change the machine made is one it allows.
            for (id, was) in before {
                let now_status = w.get(&id).map(|b| b.status).unwrap();
                prop_assert!(was == now_status || was.can_become(now_status), "{was} -> {now_status}");
            }
            let all = w.bindings();
            // One record per card.
            let mut fps: Vec<_> = all.iter().map(|b| b.fingerprint.to_string()).collect();
            fps.sort();
            fps.dedup();
            prop_assert_eq!(fps.len(), all.len());
            prop_assert!(w.live_count() <= cap.max);
            let defaults = all.iter().filter(|b| w.is_default(&b.id)).count();
            prop_assert!(defaults <= 1);
            let active = all.iter().filter(|b| b.status == BindingStatus::Active).count();
            // Some active card is the default whenever one exists, and the
            // stored pointer is never stale.
            prop_assert_eq!(defaults == 1, active > 0);
            prop_assert_eq!(w.default_pointer(), w.effective_default());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// A user who binds and ends many different cards: the wallet keeps
    /// every live card, every card an operator holds, and only the most
    /// recently ended others. (Not every
    /// case ends more cards than a wallet keeps: 48 cards left over the
    /// 64 cases when counted once; the unit test in `wallet.rs` always
    /// makes some leave.)
    #[test]
    fn a_wallet_stays_bounded_however_many_cards_end(cmds in proptest::collection::vec(cmd_of(40), 1..400)) {
        let mut w = Wallet::new(UserId::parse("u").unwrap());
        let cap = CardCap { max: 5 };
        for (step, c) in cmds.into_iter().enumerate() {
            let now = Timestamp::from_unix_millis(1_700_000_000_000 + step as i64 * 1000);
            let before = w.clone();
            // Other commands than binds pick among the live cards, so that
            // cards end often enough for the wallet to reach its bound.
            let id = match c {
                Cmd::Bind(_) => None,
                _ => {
                    let live: Vec<&Binding> = w.bindings().iter().filter(|b| b.status.is_live()).collect();
                    (!live.is_empty()).then(|| live[c.card() % live.len()].id.clone())
                }
            };
            c.run(&mut w, id, cap, now);
            // The cards an operator holds are kept whatever their number
            // (their hold keeps them from being bound again); the other
            // ended cards are bounded.
            let ended: Vec<&Binding> = w
                .bindings()
                .iter()
                .filter(|b| !b.status.is_live() && b.held_since.is_none())
                .collect();
            prop_assert!(ended.len() <= ENDED_CARDS_KEPT);
            // A card leaves only ended, never held, and only after every
            // card that ended later is kept.
            for b in before.bindings() {
                if w.get(&b.id).is_err() {
                    prop_assert!(!b.status.is_live(), "a live card left");
                    prop_assert!(b.held_since.is_none(), "a held card left");
                    prop_assert_eq!(ended.len(), ENDED_CARDS_KEPT);
                    let rank = |c: &Binding| (c.updated_at, c.id.clone());
                    prop_assert!(ended.iter().all(|k| rank(k) > rank(b)));
                }
            }
            prop_assert_eq!(w.default_pointer(), w.effective_default());
        }
    }
}

// ---- hostile input ---------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    /// No parser panics on any text, and a refusal never quotes the input.
    #[test]
    fn parsers_never_panic_and_never_echo(s in "\\PC{0,40}", n in any::<u32>(), m in any::<u32>()) {
        let errs = [
            CardNumber::parse(&s).err(),
            cardbind_domain::ResidentId::parse(&s).err(),
            cardbind_domain::Phone::parse(&s).err(),
            cardbind_domain::HolderName::parse(&s).err(),
            cardbind_domain::Cvv::parse(&s, CardBrand::Amex).err(),
            UserId::parse(&s).err(),
            BindingId::parse(&s).err(),
            Expiry::parse(n, m, (2026, 11)).err(),
        ];
        for e in errs.into_iter().flatten() {
            if s.chars().count() >= 4 {
                prop_assert!(!e.message.contains(&s), "{:?} echoes its input", e);
            }
        }
    }

    /// Inputs that pass the byte-length check with multi-byte characters.
    #[test]
    fn multibyte_ids_are_refused(prefix in "[0-9]{0,17}", c in "[^\\x00-\\x7F]", suffix in "[0-9X]{0,17}") {
        let s = format!("{prefix}{c}{suffix}");
        prop_assert!(cardbind_domain::ResidentId::parse(&s).is_err());
    }
}
