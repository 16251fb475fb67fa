//! Issuer data by BIN, black box: what `GET /v1/bins/{bin}` and the cards
//! show, `cardbind bins import` refusing bad files whole, and an import
//! reaching every instance sharing a database without a restart (MongoDB
//! at `CARDBIND_TEST_MONGODB_URI`; skipped without it, failed under CI).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use cardbind_tests::{card_number, leaks, Brand, Storage, TestApp, TestCard};
use serde_json::Value;

/// A UnionPay card whose number starts with `prefix`.
fn card_with_prefix(prefix: &str, len: usize) -> TestCard {
    let mut c = TestCard::new(Brand::UnionPay);
    c.number = card_number(prefix, len);
    leaks::register(&c);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bins_and_cards_show_issuer_type_country_and_currency_when_known() {
    let mut app = TestApp::spawn(|_| {}).await;
    let t = app.service_token();

    let v = app.get("/v1/bins/622588", &t).await.expect_status(200);
    assert_eq!(v["brand"], "unionpay", "{v}");
    assert_eq!(v["issuer"]["code"], "CMB", "{v}");
    assert_eq!(v["issuer"]["name_zh"], "招商银行", "{v}");
    assert_eq!(v["issuer"]["name_en"], "China Merchants Bank", "{v}");
    assert_eq!(v["card_type"], "debit", "{v}");
    assert_eq!(v["country"], "CN", "{v}");
    assert_eq!(v["currency"], "CNY", "{v}");

    // Known scheme, unknown issuer: the scheme only, no empty fields.
    let v = app.get("/v1/bins/411111", &t).await.expect_status(200);
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["bin", "brand"], "{v}");

    // A bound ABC debit card shows its bank, type and currency, in the
    // bind answer, the card and the list.
    let user = cardbind_tests::user_id("bins");
    let abc = card_with_prefix("622848", 19);
    let bound = app.bind_ok(&user, &abc).await;
    let id = bound["id"].as_str().unwrap().to_owned();
    let got = app.get_card(&user, &id).await.expect_status(200);
    for card in [&bound, &got] {
        assert_eq!(card["issuer"]["code"], "ABC", "{card}");
        assert_eq!(card["issuer"]["name_zh"], "中国农业银行", "{card}");
        assert_eq!(card["card_type"], "debit", "{card}");
        assert_eq!(card["currency"], "CNY", "{card}");
    }
    let list = app.list_cards(&user).await;
    assert_eq!(list[0]["issuer"]["code"], "ABC");

    // A card the table does not know shows none of them.
    let other = TestCard::visa();
    let plain = app.bind_ok(&user, &other).await;
    for k in ["issuer", "card_type", "currency"] {
        assert!(plain.get(k).is_none(), "{k} in {plain}");
    }
    app.stop().await;
}

fn write(dir: &std::path::Path, name: &str, body: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

const HEADER: &str =
    "low,high,issuer_code,issuer_name_zh,issuer_name_en,card_type,country,currency\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_are_refused_whole_with_line_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = cardbind::config::Config::default();
    config.server.data_dir = dir.path().join("data");
    let overlap = write(
        dir.path(),
        "overlap.csv",
        &format!(
            "{HEADER}622700,622709,CCB,中国建设银行,China Construction Bank,debit,CN,CNY\n\
             622705,622712,CCB,中国建设银行,China Construction Bank,debit,CN,CNY\n"
        ),
    );
    let e = cardbind::cli::import_bins(&config, &overlap, true)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("lines 2 and 3"), "{e}");
    assert!(e.contains("nothing was imported"), "{e}");
    let bad = write(
        dir.path(),
        "bad.csv",
        &format!("{HEADER}# ok so far\n622588,,CMB,招商银行,CMB,debit,CN,CNY\n622589,,CMB,招商银行,CMB,debit,China,CNY\n"),
    );
    let e = cardbind::cli::import_bins(&config, &bad, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 4: country:"), "{e}");
    let good = write(
        dir.path(),
        "good.csv",
        &format!("{HEADER}622588,,CMB,招商银行,CMB,debit,CN,CNY\n"),
    );
    let ok = cardbind::cli::import_bins(&config, &good, true)
        .await
        .unwrap();
    assert!(ok.contains("1 entries, valid"), "{ok}");
    // An import needs the store to exist (a first `serve` makes it).
    let e = cardbind::cli::import_bins(&config, &good, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("there is no store at"), "{e}");
    cardbind::compose::stores(&config).await.unwrap();
    // The embedded store (the default) keeps an imported table.
    let ok = cardbind::cli::import_bins(&config, &good, false)
        .await
        .unwrap();
    assert!(ok.contains("1 entries"), "{ok}");
    let stores = cardbind::compose::stores(&config).await.unwrap();
    let built = cardbind::compose::bins(&stores).await.unwrap();
    assert_eq!(
        built
            .directory
            .lookup("622588")
            .map(|e| e.info.issuer.code().as_str().to_owned())
            .as_deref(),
        Some("CMB"),
        "the import is in the store"
    );
    // In-memory storage has no table to share: a real import is refused.
    config.storage.kind = cardbind::config::StorageKind::Memory;
    let e = cardbind::cli::import_bins(&config, &good, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("storage.kind = \"sqlite\" or \"mongodb\""),
        "{e}"
    );
}

/// Polls `path` on `app` until `check` holds (at most `within`).
async fn eventually(
    app: &TestApp,
    path: &str,
    within: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let t = app.service_token();
    let start = Instant::now();
    loop {
        let v = app.get(path, &t).await.expect_status(200);
        if check(&v) {
            return v;
        }
        assert!(
            start.elapsed() < within,
            "{path} never satisfied the check: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_reaches_every_instance_without_a_restart() {
    let Some(mut a) = TestApp::spawn_on(Storage::Mongo, |c| {
        c.bins.refresh_interval_seconds = 1;
    })
    .await
    else {
        return;
    };
    let mut b = a.spawn_peer().await;
    let t = a.service_token();
    for app in [&a, &b] {
        let v = app.get("/v1/bins/622588", &t).await.expect_status(200);
        assert_eq!(
            v["issuer"]["code"], "CMB",
            "built-in table before any import: {v}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "table.csv",
        &format!(
            "{HEADER}411111,,ACME,示例银行,Acme Bank,credit,HK,HKD\n\
             41111100,41111149,ACMEX,示例银行二,Acme Bank Two,prepaid,HK,HKD\n"
        ),
    );
    let out = cardbind::cli::import_bins(&a.config, &file, false)
        .await
        .unwrap();
    assert!(out.contains("2 entries"), "{out}");

    let started = Instant::now();
    for app in [&a, &b] {
        let v = eventually(app, "/v1/bins/411111", Duration::from_secs(10), |v| {
            v["issuer"]["code"] == "ACME"
        })
        .await;
        assert_eq!(v["card_type"], "credit");
        assert_eq!(v["country"], "HK");
        assert_eq!(v["currency"], "HKD");
        let v = app.get("/v1/bins/41111120", &t).await.expect_status(200);
        assert_eq!(v["issuer"]["code"], "ACMEX", "the nested range wins: {v}");
        // The imported table replaced the built-in one.
        let v = app.get("/v1/bins/622588", &t).await.expect_status(200);
        assert!(v.get("issuer").is_none(), "{v}");
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "both instances within ~1 s intervals (a restart-free pick-up; the bound leaves FerretDB on a loaded machine its time): {took:?}"
    );

    // A refused file changes nothing.
    let bad = write(
        dir.path(),
        "bad.csv",
        &format!("{HEADER}411111,,ACME,示例银行,Acme Bank,credit,HK,HKD\n4111115,4111120,OTHER,别的,Other,,,\n"),
    );
    let e = cardbind::cli::import_bins(&a.config, &bad, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("lines 2 and 3"), "{e}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for app in [&a, &b] {
        let v = app.get("/v1/bins/411111", &t).await.expect_status(200);
        assert_eq!(v["issuer"]["code"], "ACME", "{v}");
    }

    // A restarted instance starts on the imported table.
    b.stop().await;
    let mut c = a.spawn_peer().await;
    let v = c.get("/v1/bins/41111120", &t).await.expect_status(200);
    assert_eq!(v["issuer"]["code"], "ACMEX", "{v}");
    c.stop().await;
    a.stop().await;
}
