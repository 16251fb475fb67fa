//! What the commands print: output to a reader that stops early (`cardbind
//! spec | head`) ends quietly with success, as other command-line tools do,
//! instead of a panic on the broken pipe; `check-config` prints the
//! configuration in force in the file's own format, secrets masked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn a_reader_that_stops_early_ends_the_output_quietly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cardbind"))
        .arg("spec")
        .env_remove("CARDBIND_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut head = [0u8; 16];
    stdout.read_exact(&mut head).unwrap();
    assert!(head.starts_with(b"{"), "{head:?}");
    // The spec (about 240 KB) is larger than a pipe's buffer: the rest is
    // written to a closed pipe.
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn check_config_prints_the_configuration_in_force_as_toml_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "a-jwt-secret-of-more-than-32-characters-0123";
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cardbind"));
    for (k, _) in std::env::vars() {
        if k.starts_with("CARDBIND__") || k == "CARDBIND_CONFIG" {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .arg("check-config")
        .env("CARDBIND__SERVER__DATA_DIR", dir.path())
        .env("CARDBIND__AUTH__JWT_SECRET", secret)
        .env("CARDBIND__LIMITS__CARDS_PER_USER", "7")
        .env(
            "CARDBIND__STORAGE__URI",
            "mongodb+srv://app:pa%40ss-word@db.example.net/cardbind?authSource=admin",
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}");
    assert!(!stdout.contains(secret), "the secret is printed");
    assert!(!stdout.contains("ss-word"), "the password is printed");
    let v: toml::Value = toml::from_str(&stdout).unwrap();
    assert_eq!(v["limits"]["cards_per_user"].as_integer(), Some(7));
    assert_eq!(v["auth"]["jwt_secret"].as_str(), Some("<set>"));
    assert_eq!(v["storage"]["kind"].as_str(), Some("sqlite"));
    assert_eq!(
        v["storage"]["uri"].as_str(),
        Some("mongodb+srv://<credentials>@db.example.net/cardbind?authSource=admin")
    );
    // Checking makes nothing: no store, no key, no token secret.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// Instances sharing a MongoDB must verify the same tokens: without a
/// configured token key each host would make its own secret, which
/// `check-config` warns of (and `serve` logs); with one, or on the
/// embedded store, it says nothing.
#[test]
fn check_config_warns_of_a_per_host_token_secret_on_a_shared_store() {
    let dir = tempfile::tempdir().unwrap();
    let run = |vars: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cardbind"));
        for (k, _) in std::env::vars() {
            if k.starts_with("CARDBIND__") || k == "CARDBIND_CONFIG" {
                cmd.env_remove(k);
            }
        }
        cmd.arg("check-config")
            .env("CARDBIND__SERVER__DATA_DIR", dir.path())
            .envs(vars.iter().copied());
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stderr).unwrap()
    };
    let mongo = [
        ("CARDBIND__STORAGE__KIND", "mongodb"),
        ("CARDBIND__STORAGE__URI", "mongodb://127.0.0.1:1/"),
    ];
    let warned = run(&mongo);
    assert!(
        warned.contains("warning: neither auth.jwt_secret nor auth.jwt_public_key_file is set"),
        "{warned}"
    );
    let with_secret = [
        mongo[0],
        mongo[1],
        (
            "CARDBIND__AUTH__JWT_SECRET",
            "a-jwt-secret-of-more-than-32-characters-0123",
        ),
    ];
    assert!(!run(&with_secret).contains("warning"));
    assert!(!run(&[]).contains("warning"), "the embedded store");
}

/// `check-config` reads and parses what `serve` would before it listens,
/// and refuses what `serve` refuses: a channel key file that is missing or
/// holds no key, a bearer token public key that is not one.
#[test]
fn check_config_refuses_key_files_serve_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a key\n").unwrap();
    let missing = dir.path().join("missing.pem");
    let run = |toml: &str| {
        let file = dir.path().join("cardbind.toml");
        std::fs::write(&file, toml).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cardbind"));
        for (k, _) in std::env::vars() {
            if k.starts_with("CARDBIND__") || k == "CARDBIND_CONFIG" {
                cmd.env_remove(k);
            }
        }
        cmd.arg("check-config")
            .arg("--config")
            .arg(&file)
            .env("CARDBIND__SERVER__DATA_DIR", dir.path().join("data"))
            .output()
            .unwrap()
    };
    let alipay = |private: &std::path::Path, public: &std::path::Path| {
        format!(
            "[channels]\nenabled = [\"alipay\"]\ndefault = \"alipay\"\n\n\
             [channels.alipay]\ngateway_url = \"https://openapi.alipay.com/gateway.do\"\n\
             app_id = \"2021000000000000\"\nprivate_key_file = {:?}\n\
             alipay_public_key_file = {:?}\nsign_scene = \"INDUSTRY|CARRENTAL\"\n",
            private.display().to_string(),
            public.display().to_string()
        )
    };
    for (toml, field) in [
        (
            alipay(&missing, &garbage),
            "channels.alipay.private_key_file",
        ),
        (alipay(&garbage, &garbage), "channels.alipay"),
        (
            alipay(&garbage, &garbage).replace("INDUSTRY|CARRENTAL", "DEFAULT|DEFAULT"),
            "channels.alipay: sign_scene: DEFAULT|DEFAULT is refused by Alipay",
        ),
        (
            alipay(&garbage, &garbage).replace("sign_scene = \"INDUSTRY|CARRENTAL\"\n", ""),
            "channels.alipay: sign_scene: must be set",
        ),
        (
            format!(
                "[auth]\njwt_public_key_file = {:?}\n",
                garbage.display().to_string()
            ),
            "auth.jwt_public_key_file",
        ),
    ] {
        let out = run(&toml);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{field}: {stderr}");
        assert!(out.stdout.is_empty(), "{field}: printed a configuration");
        assert!(stderr.contains(field), "{field}: {stderr}");
    }
    let out = run("");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // With usable keys it passes, and shows the product code Alipay is
    // asked for even when left to its default.
    let (private, public) = (dir.path().join("app.pem"), dir.path().join("alipay.pem"));
    std::fs::write(
        &private,
        &cardbind_channels::fakes::test_key(0).unwrap().private_pem,
    )
    .unwrap();
    std::fs::write(
        &public,
        &cardbind_channels::fakes::test_key(1).unwrap().public_pem,
    )
    .unwrap();
    let out = run(&alipay(&private, &public));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: toml::Value = toml::from_str(&stdout).unwrap();
    assert_eq!(
        v["channels"]["alipay"]["personal_product_code"].as_str(),
        Some("GENERAL_WITHHOLDING_P"),
        "{stdout}"
    );
}

#[test]
fn a_token_made_with_a_new_dev_secret_says_where_the_secret_is() {
    let dir = tempfile::tempdir().unwrap();
    let token = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cardbind"));
        for (k, _) in std::env::vars() {
            if k.starts_with("CARDBIND__") || k == "CARDBIND_CONFIG" {
                cmd.env_remove(k);
            }
        }
        let out = cmd
            .args(["token", "--sub", "me", "--role", "service"])
            .env("CARDBIND__SERVER__DATA_DIR", dir.path())
            .output()
            .unwrap();
        assert!(out.status.success());
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (first, note) = token();
    assert_eq!(first.trim().split('.').count(), 3, "a JWT: {first}");
    assert!(note.contains("no dev secret yet"), "{note}");
    assert!(note.contains(&dir.path().join("jwt.secret").display().to_string()));
    let (_, quiet) = token();
    assert_eq!(quiet, "", "the secret exists now");
}

/// A user's token for a subject that is not a user id the API takes
/// (every path of it answers `invalid_user_id`) is refused, nothing made;
/// and `reconcile --older-than` takes no negative age (the setting it
/// stands for refuses one; a negative age reached every pending card,
/// those an erasure or a bind was still writing included).
#[test]
fn a_user_token_names_a_user_id_and_reconcile_takes_no_negative_age() {
    let dir = tempfile::tempdir().unwrap();
    let out = cardbind()
        .args(["token", "--role", "user", "--sub", "ab!#"])
        .env("CARDBIND__SERVER__DATA_DIR", dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(stderr.contains("nothing was issued"), "{stderr}");
    assert!(!dir.path().join("jwt.secret").exists(), "nothing made");
    let out = cardbind()
        .args(["token", "--role", "user", "--sub", "alice@example.com"])
        .env("CARDBIND__SERVER__DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = cardbind()
        .args(["reconcile", "--older-than=-100000"])
        .env("CARDBIND__SERVER__DATA_DIR", dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--older-than"), "{stderr}");
}

/// `cardbind token` refuses what the service would not take, and makes
/// nothing then (no dev secret written): an unusable subject, a lifetime of
/// 0, one too long to be a dev token (or to add to the clock), and any
/// token at all when the service verifies RS256 tokens.
#[test]
fn a_token_the_service_would_refuse_is_not_issued() {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("idp.pem");
    std::fs::write(
        &pem,
        "-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cardbind"));
        for (k, _) in std::env::vars() {
            if k.starts_with("CARDBIND__") || k == "CARDBIND_CONFIG" {
                cmd.env_remove(k);
            }
        }
        cmd.arg("token")
            .args(args)
            .env("CARDBIND__SERVER__DATA_DIR", dir.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let long = "x".repeat(129);
    let huge = u64::MAX.to_string();
    let pem = pem.to_str().unwrap();
    for (args, env, says) in [
        (vec!["--sub", ""], vec![], "--sub"),
        (vec!["--sub", "two words"], vec![], "--sub"),
        (vec!["--sub", long.as_str()], vec![], "--sub"),
        // The range in force: the bound (a day unless set), a year without.
        (
            vec!["--sub", "me", "--ttl", "0"],
            vec![],
            "--ttl 0: must be 1 to 86400 seconds",
        ),
        (
            vec!["--sub", "me", "--ttl", "0"],
            vec![("CARDBIND__AUTH__MAX_TOKEN_LIFETIME_SECONDS", "0")],
            "--ttl 0: must be 1 to 31622400 seconds",
        ),
        (vec!["--sub", "me", "--ttl", huge.as_str()], vec![], "--ttl"),
        // Longer than the service takes (auth.max_token_lifetime_seconds,
        // a day unless set): the same range, whatever the value.
        (
            vec!["--sub", "me", "--ttl", "86401"],
            vec![],
            "--ttl 86401: must be 1 to 86400 seconds (auth.max_token_lifetime_seconds",
        ),
        (
            vec!["--sub", "me", "--ttl", "999999999"],
            vec![],
            "--ttl 999999999: must be 1 to 86400 seconds (auth.max_token_lifetime_seconds",
        ),
        (
            vec!["--sub", "me", "--ttl", "3601"],
            vec![("CARDBIND__AUTH__MAX_TOKEN_LIFETIME_SECONDS", "3600")],
            "--ttl 3601: must be 1 to 3600 seconds (auth.max_token_lifetime_seconds",
        ),
        // With no bound, a year of 366 days at most.
        (
            vec!["--sub", "me", "--ttl", "31622401"],
            vec![("CARDBIND__AUTH__MAX_TOKEN_LIFETIME_SECONDS", "0")],
            "--ttl 31622401",
        ),
        (
            vec!["--sub", "me"],
            vec![("CARDBIND__AUTH__JWT_PUBLIC_KEY_FILE", pem)],
            "RS256",
        ),
    ] {
        let (ok, stdout, stderr) = run(&args, &env);
        assert!(!ok, "{args:?}: {stdout}");
        assert_eq!(stdout, "", "{args:?}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(stderr.contains("nothing was issued"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!dir.path().join("jwt.secret").exists(), "{args:?}");
    }
    for (ttl, env) in [
        ("86400", vec![]),
        (
            "31536000",
            vec![("CARDBIND__AUTH__MAX_TOKEN_LIFETIME_SECONDS", "0")],
        ),
        // The largest bound, and a token of that lifetime.
        (
            "31622400",
            vec![("CARDBIND__AUTH__MAX_TOKEN_LIFETIME_SECONDS", "31622400")],
        ),
    ] {
        let (ok, stdout, stderr) = run(&["--sub", "me", "--ttl", ttl], &env);
        assert!(ok, "--ttl {ttl}: {stderr}");
        assert_eq!(stdout.trim().split('.').count(), 3, "a JWT: {stdout}");
    }
}

/// A store set up under one local master key, started with a mistyped
/// `keys.local_key_file`: refused, naming the path, and no new key file is
/// left behind (a first start still makes its key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mistyped_local_key_file_is_refused_without_making_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = cardbind::config::Config::default();
    config.server.data_dir = dir.path().join("data");
    let built = cardbind::compose::build(&config).await.unwrap();
    built.usecases.key_self_check().await.unwrap();
    drop(built);
    assert!(config.server.data_dir.join("master.key").exists());
    let typo = dir.path().join("mastr.key");
    config.keys.local_key_file = Some(typo.clone());
    let e = match cardbind::compose::build(&config).await {
        Err(e) => format!("{e:#}"),
        Ok(_) => panic!("started under a key file that does not exist"),
    };
    assert!(e.contains("keys.local_key_file: there is no key at"), "{e}");
    assert!(e.contains(typo.to_str().unwrap()), "{e}");
    assert!(!typo.exists(), "no key file was made");
}

/// Makes the embedded store of the data directory `data`, as a first
/// `serve` does.
async fn make_store(data: &std::path::Path) {
    cardbind::compose::stores(&config_in(data)).await.unwrap();
}

/// The default settings with their data in `data`.
fn config_in(data: &std::path::Path) -> cardbind::config::Config {
    let mut config = cardbind::config::Config::default();
    config.server.data_dir = data.to_path_buf();
    config
}

/// Stores a generation of sealed card data (not a real card's) under
/// `user` and `card`, which no wallet need name.
async fn put_card_data(
    stores: &cardbind::compose::Stores,
    user: &str,
    card: &str,
    generation: u32,
) {
    let blob = || cardbind_domain::SealedBlob::new(vec![7; 40]);
    stores
        .card_data
        .put(&cardbind_ports::store::CardData {
            binding: cardbind_domain::BindingId::parse(card).unwrap(),
            user: cardbind_domain::UserId::parse(user).unwrap(),
            generation,
            sealed: cardbind_domain::SealedCard {
                pan: blob(),
                holder_name: blob(),
                id_number: blob(),
                phone: blob(),
            },
        })
        .await
        .unwrap();
}

/// `sweep-card-data` deletes card data no card holds (here: a record no
/// wallet names), says what it did, and finds nothing the second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_card_data_deletes_data_and_references_no_card_holds() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    {
        let stores = cardbind::compose::stores(&config).await.unwrap();
        put_card_data(&stores, "nobody", "card-left", 5).await;
        stores
            .channel_refs
            .put(
                &cardbind_domain::ChannelName::parse("mock").unwrap(),
                "agreement-left",
                &cardbind_ports::store::RefTarget {
                    user: cardbind_domain::UserId::parse("nobody").unwrap(),
                    binding: cardbind_domain::BindingId::parse("card-left").unwrap(),
                },
                5,
            )
            .await
            .unwrap();
    }
    for expected in [
        "card data: examined 1, kept 0, deleted 1, errors 0, unreadable 0\n\
         channel references: examined 1, kept 0, deleted 1, errors 0, unreadable 0\n",
        "card data: examined 0, kept 0, deleted 0, errors 0, unreadable 0\n\
         channel references: examined 0, kept 0, deleted 0, errors 0, unreadable 0\n",
    ] {
        let (code, stdout, stderr) = sweep_card_data(dir.path());
        assert_eq!(code, Some(0), "{stderr}");
        assert_eq!(stdout, expected, "{stderr}");
    }
}

/// `cardbind sweep-card-data --settle-seconds 0` on the store in `data`:
/// its exit code, output and log.
fn sweep_card_data(data: &std::path::Path) -> (Option<i32>, String, String) {
    let out = cardbind()
        .args(["sweep-card-data", "--settle-seconds", "0"])
        .env("CARDBIND__SERVER__DATA_DIR", data)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A wallet row that does not parse (written into the file by hand) does
/// not stop the sweep: its user's card data is kept and counted as
/// unreadable, the rest is swept, and the command exits 1 saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_card_data_keeps_what_a_corrupt_wallet_names_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    {
        let stores = cardbind::compose::stores(&config).await.unwrap();
        for (user, card) in [("nobody", "card-left"), ("broken", "card-kept")] {
            put_card_data(&stores, user, card, 1).await;
        }
    }
    let db = rusqlite::Connection::open(cardbind::compose::sqlite_path(&config)).unwrap();
    db.execute(
        "INSERT INTO links (chain, seq, at, prev_hash, hash, pending, wallet) \
         VALUES ('broken', 1, 0, zeroblob(32), zeroblob(32), 0, CAST('{\"not\": 1' AS BLOB))",
        [],
    )
    .unwrap();
    drop(db);
    for (kept, deleted) in [(1, 1), (1, 0)] {
        let (code, stdout, stderr) = sweep_card_data(dir.path());
        assert_eq!(code, Some(1), "{stderr}");
        assert_eq!(
            stdout,
            format!(
                "card data: examined {}, kept 0, deleted {deleted}, errors 0, unreadable {kept}\n\
                 channel references: examined 0, kept 0, deleted 0, errors 0, unreadable 0\n",
                kept + deleted
            ),
            "{stderr}"
        );
        assert!(
            stderr.contains("1 records kept because their user's wallet does not parse"),
            "{stderr}"
        );
        assert!(
            stderr.contains("card-kept"),
            "the log names the card: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_checks_the_chains_then_the_anchors() {
    let dir = tempfile::tempdir().unwrap();
    make_store(dir.path()).await;
    let (code, stdout, stderr) = audit_verify_in(dir.path());
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].starts_with("audit chains intact: "), "{stdout}");
    assert!(
        lines[1].starts_with("audit anchors intact: 0 windows verified")
            && lines[1].ends_with("newest anchored window ends none yet"),
        "{stdout}"
    );
}

/// `audit verify` holds the columns the audit listing filters on (user,
/// card, action) to the events they index: the hash covers the event, not
/// them, and an edited column moved an event between the listing's filters
/// unseen (black-box run: `?user_id=alice` no longer listed it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_finds_an_event_moved_between_the_listings_filters() {
    use cardbind_ports::audit::AuditEvent;
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    {
        let stores = cardbind::compose::stores(&config).await.unwrap();
        let now = cardbind_domain::Timestamp::from_unix_millis(1_790_000_000_000);
        let event = AuditEvent {
            detail: Some("unbound 0".into()),
            ..test_event(cardbind_ports::audit::AuditAction::UserErase, "alice", now)
        };
        stores.audit.append_system(vec![event], now).await.unwrap();
    }
    let verify = || audit_verify_in(dir.path());
    let (code, stdout, stderr) = verify();
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let db = rusqlite::Connection::open(cardbind::compose::sqlite_path(&config)).unwrap();
    for edit in [
        "UPDATE events SET user_id = 'bob' WHERE user_id = 'alice'",
        "UPDATE events SET user_id = 'alice', action = 'binding.unbind' WHERE user_id = 'bob'",
    ] {
        assert_eq!(db.execute(edit, []).unwrap(), 1, "{edit}");
        let (code, stdout, stderr) = verify();
        assert_eq!(code, Some(1), "{edit}: {stdout}{stderr}");
        assert!(
            stderr.contains(
                "audit chain @system broken at link 1: its listing fields (user, card, action) \
                 differ from its events; the audit log was altered behind the service's back"
            ),
            "{edit}: {stderr}"
        );
    }
}

/// `audit verify` reports a link it cannot read (an event that no longer
/// decodes, edited in the file) as the audit log altered or damaged, and
/// names where: the walk reads again a link at a time to find it (before,
/// it stopped with "internal error: corrupt record", worded as a fault of
/// the store and naming no place in the walk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_names_the_link_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    {
        let stores = cardbind::compose::stores(&config).await.unwrap();
        let now = cardbind_domain::Timestamp::from_unix_millis(1_790_000_000_000);
        for user in ["alice", "bob"] {
            let id = cardbind_domain::UserId::parse(user).unwrap();
            let w = cardbind_domain::Wallet::new(id.clone());
            let mut head = None;
            for _ in 0..3 {
                let event = test_event(
                    cardbind_ports::audit::AuditAction::BindingDefaultChanged,
                    user,
                    now,
                );
                head = Some(
                    stores
                        .wallets
                        .commit(&w, head, vec![event], now)
                        .await
                        .unwrap(),
                );
            }
        }
    }
    let verify = || audit_verify_in(dir.path());
    let (code, stdout, stderr) = verify();
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("6 links in 2 chains verified"), "{stdout}");
    let db = rusqlite::Connection::open(cardbind::compose::sqlite_path(&config)).unwrap();
    let edit = "UPDATE events SET body = CAST('{\"at\":' AS BLOB) WHERE chain = 'bob' AND seq = 2";
    assert_eq!(db.execute(edit, []).unwrap(), 1);
    let (code, stdout, stderr) = verify();
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("audit log unreadable at the next link after link 1 of chain bob (")
            && stderr.contains("link 2 of chain bob: audit event")
            && stderr.contains("altered behind the service's back or damaged"),
        "{stderr}"
    );
    assert!(!stderr.contains("internal error"), "{stderr}");
}

/// `audit verify` finds a wallet edited in the file: a link's hash covers
/// its wallet's digest, and the walk holds the stored wallet to it (before,
/// the wallet was not covered: a card's status or last four digits could
/// be changed unseen). A digest edited with it breaks the hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_finds_an_edited_wallet() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let alice = cardbind_domain::UserId::parse("alice").unwrap();
    {
        let stores = cardbind::compose::stores(&config).await.unwrap();
        let now = cardbind_domain::Timestamp::from_unix_millis(1_790_000_000_000);
        let event = test_event(
            cardbind_ports::audit::AuditAction::BindingDefaultChanged,
            "alice",
            now,
        );
        let w = cardbind_domain::Wallet::new(alice.clone());
        stores
            .wallets
            .commit(&w, None, vec![event], now)
            .await
            .unwrap();
    }
    let verify = || audit_verify_in(dir.path());
    let (code, stdout, stderr) = verify();
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let db = rusqlite::Connection::open(cardbind::compose::sqlite_path(&config)).unwrap();
    let edit = "UPDATE links SET wallet = CAST(replace(CAST(wallet AS TEXT), '\"default\":null', '\"default\":\"card-x\"') AS BLOB) WHERE chain = 'alice'";
    assert_eq!(db.execute(edit, []).unwrap(), 1);
    let wallet: Vec<u8> = db
        .query_row("SELECT wallet FROM links WHERE chain = 'alice'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(
        String::from_utf8_lossy(&wallet).contains("card-x"),
        "the edit took"
    );
    let (code, stdout, stderr) = verify();
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains(
            "audit chain alice broken at link 1: its wallet differs from the one its hash covers; \
             the audit log was altered behind the service's back"
        ),
        "{stderr}"
    );
    // The digest made again for the edited wallet: the hash does not match.
    let digest = hex::decode(cardbind_records::wallet_digest(&wallet)).unwrap();
    db.execute(
        "UPDATE links SET wallet_digest = ?1 WHERE chain = 'alice'",
        [digest],
    )
    .unwrap();
    let (code, stdout, stderr) = verify();
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("audit chain alice broken at link 1: link altered"),
        "{stdout}{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_with_a_log_that_names_no_anchor_fails() {
    let dir = tempfile::tempdir().unwrap();
    make_store(&dir.path().join("data")).await;
    let log = dir.path().join("service.log");
    // A line that is not UTF-8 among them is passed over, not a failure to
    // read the log.
    let mut lines = b"{\"fields\":{\"message\":\"cardbind started\"}}\n".to_vec();
    lines.extend_from_slice(b"\xff\xfe not text\n");
    std::fs::write(&log, lines).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cardbind"));
    for (k, _) in std::env::vars() {
        if k.starts_with("CARDBIND__") || k == "CARDBIND_CONFIG" {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .args(["audit", "verify", "--log"])
        .arg(&log)
        .env("CARDBIND__SERVER__DATA_DIR", dir.path().join("data"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("no audit anchor lines"), "{stderr}");
}

/// One `GET /healthz` over a new connection: the status line, if any.
fn healthz(addr: &str) -> Option<String> {
    use std::io::Write;
    let mut conn = std::net::TcpStream::connect(addr).ok()?;
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer).ok()?;
    answer.lines().next().map(str::to_owned)
}

/// `cardbind serve` on a free port over `data` (the embedded store unless
/// `env` says otherwise), stdout and stderr piped: the child and the address
/// of its listening line.
fn serve_in(data: &std::path::Path, env: &[(&str, &str)]) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut cmd = cardbind();
    cmd.arg("serve")
        .env("CARDBIND__SERVER__ADDRESS", "127.0.0.1:0")
        .env("CARDBIND__SERVER__DATA_DIR", data)
        .env("CARDBIND__SERVER__PURGE_INTERVAL_SECONDS", "0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("cardbind listening on http://")
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_owned();
    (child, addr)
}

/// Sends `signal` (`HUP`, `TERM`, …) to `child`.
#[cfg(unix)]
fn signal(child: &std::process::Child, signal: &str) {
    let sent = Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

#[test]
fn the_service_keeps_serving_when_its_log_reader_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = serve_in(dir.path(), &[("CARDBIND__STORAGE__KIND", "memory")]);
    // The log shipper goes away: every later log line meets a closed pipe.
    drop(child.stderr.take());
    // Each request logs a line.
    for _ in 0..3 {
        let _ = healthz(&addr);
    }
    let answer = healthz(&addr);
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let status = child.wait().unwrap();
    assert!(
        running && answer.as_deref() == Some("HTTP/1.1 200 OK"),
        "the service stopped serving: {answer:?}, {status:?}"
    );
}

/// A hang-up (SIGHUP: a closed terminal, a supervisor asking for a
/// reload) stops the service as SIGTERM does: in-flight work finished, exit
/// 0, not killed by the signal. And a dev token secret that others can read
/// is warned about at start.
#[cfg(unix)]
#[test]
fn a_hang_up_stops_the_service_gracefully_and_a_readable_secret_is_warned_of() {
    let dir = tempfile::tempdir().unwrap();
    let (child, _) = serve_in(dir.path(), &[]);
    signal(&child, "HUP");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{:?}: {stderr}", out.status);
    assert!(stderr.contains("shutting down"), "{stderr}");
    assert!(!stderr.contains("readable by group or others"), "{stderr}");
    // The mock's public notification secret is said by `serve` (it takes
    // the notifications), not by an admin command over the same store.
    assert!(stderr.contains("public default secret"), "{stderr}");
    let out = cardbind()
        .arg("purge")
        .env("CARDBIND__SERVER__DATA_DIR", dir.path())
        .output()
        .unwrap();
    let admin = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{admin}");
    assert!(!admin.contains("public default secret"), "{admin}");

    // Its dev token secret made readable by others: said at the next start.
    use std::os::unix::fs::PermissionsExt;
    let secret = dir.path().join("jwt.secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (child, _) = serve_in(dir.path(), &[]);
    signal(&child, "TERM");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the bearer token secret file is readable by group or others"),
        "{stderr}"
    );
    assert!(stderr.contains(secret.to_str().unwrap()), "{stderr}");
}

/// A SIGTERM while the service is still starting (here: waiting on a KMS
/// that accepts connections and never answers) stops the start at once,
/// exit 0, rather than waiting out the key service's timeout.
#[cfg(unix)]
#[test]
fn a_signal_while_starting_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    // A "KMS" that takes connections and answers nothing.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let (connected, first_call) = std::sync::mpsc::channel::<()>();
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        for c in silent.incoming().take(8).flatten() {
            open.push(c);
            let _ = connected.send(());
        }
    });
    let child = cardbind()
        .arg("serve")
        .env("CARDBIND__SERVER__ADDRESS", "127.0.0.1:0")
        .env("CARDBIND__SERVER__DATA_DIR", dir.path())
        .env("CARDBIND__KEYS__KIND", "aws_kms")
        .env("CARDBIND__KEYS__KMS_KEY_ID", "alias/cardbind-test")
        .env("CARDBIND__KEYS__KMS_ENDPOINT", &endpoint)
        .env("CARDBIND__KEYS__KMS_ACCESS_KEY_ID", "test")
        .env("CARDBIND__KEYS__KMS_SECRET_ACCESS_KEY", "test")
        .env("CARDBIND__KEYS__KMS_TIMEOUT_MS", "30000")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Its first call to the key service: it is waiting for it to answer.
    first_call
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the start called the key service");
    let started = std::time::Instant::now();
    signal(&child, "TERM");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{:?}: {stderr}", out.status);
    assert!(
        stderr.contains("stopped before the service was ready"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).is_empty());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    drop(held);
}

/// `cardbind ARGS` on a MongoDB nothing answers at: (exit code, stderr,
/// how long it took).
fn on_a_silent_database(args: &[&str], wait: &str) -> (Option<i32>, String, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let uri = format!("mongodb://{}/", closed.local_addr().unwrap());
    drop(closed);
    let started = std::time::Instant::now();
    let out = cardbind()
        .args(args)
        .env("CARDBIND__SERVER__ADDRESS", "127.0.0.1:0")
        .env("CARDBIND__SERVER__DATA_DIR", dir.path())
        .env("CARDBIND__STORAGE__KIND", "mongodb")
        .env("CARDBIND__STORAGE__URI", &uri)
        .env("CARDBIND__STORAGE__TIMEOUT_MS", "300")
        .env("CARDBIND__SERVER__DEPENDENCY_WAIT_SECONDS", wait)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed(),
    )
}

#[test]
fn serve_waits_for_a_database_that_does_not_answer_then_gives_up() {
    let (code, stderr, took) = on_a_silent_database(&["serve"], "4");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("MongoDB does not answer yet; trying again"),
        "each try is logged: {stderr}"
    );
    assert!(stderr.contains("the database does not answer"), "{stderr}");
    assert!(took >= Duration::from_secs(2), "it waited: {took:?}");
    assert!(took < Duration::from_secs(30), "and no longer: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_do_not_wait_for_a_key_service_that_does_not_answer() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    make_store(&data).await;
    let started = std::time::Instant::now();
    let out = with_a_silent_kms(&data)
        .args(["erase-user", "u1"])
        .env("CARDBIND__SERVER__DEPENDENCY_WAIT_SECONDS", "60")
        .output()
        .unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot reach KMS"), "{stderr}");
    assert!(!stderr.contains("trying again"), "{stderr}");
    assert!(took < Duration::from_secs(20), "it did not wait: {took:?}");
}

/// `purge`, `audit verify` and `sweep-card-data` touch no card data in
/// clear and no key: they run, and succeed, while the configured key
/// service does not answer (an
/// operator keeps the retention and the audit checks going through a KMS
/// outage); a command that needs a key still fails at once (above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_audit_verify_and_the_sweep_run_while_the_key_service_does_not_answer() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    make_store(&data).await;
    let run = |args: &[&str]| {
        let out = with_a_silent_kms(&data).args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = run(&["purge"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.starts_with("purged "), "{stdout}");
    let (code, stdout, stderr) = run(&["audit", "verify"]);
    assert_eq!(code, Some(0), "{stderr}");
    // The purge recorded itself in the service's chain, which verifies.
    assert!(stdout.starts_with("audit chains intact: "), "{stdout}");
    let (code, stdout, stderr) = run(&["sweep-card-data", "--settle-seconds", "0"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("card data: examined 0"), "{stdout}");
    let (code, _, stderr) = run(&["erase-user", "u1"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("cannot reach KMS"), "{stderr}");
}

/// `cardbind` on the store in `data`, configured for a KMS endpoint where
/// nothing listens (a port bound, then closed), with a short timeout.
fn with_a_silent_kms(data: &std::path::Path) -> Command {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut cmd = cardbind();
    cmd.env("CARDBIND__SERVER__DATA_DIR", data)
        .env("CARDBIND__KEYS__KIND", "aws_kms")
        .env("CARDBIND__KEYS__KMS_KEY_ID", "alias/cardbind-test")
        .env("CARDBIND__KEYS__KMS_ENDPOINT", endpoint)
        .env("CARDBIND__KEYS__KMS_ACCESS_KEY_ID", "test")
        .env("CARDBIND__KEYS__KMS_SECRET_ACCESS_KEY", "test")
        .env("CARDBIND__KEYS__KMS_TIMEOUT_MS", "500")
        .stdin(Stdio::null());
    cmd
}

/// `cardbind` with the variables of the test's environment removed.
/// An audit event of the service's about `user`, as the tests write them.
fn test_event(
    action: cardbind_ports::audit::AuditAction,
    user: &str,
    at: cardbind_domain::Timestamp,
) -> cardbind_ports::audit::AuditEvent {
    cardbind_ports::audit::AuditEvent {
        at,
        actor: cardbind_ports::audit::AuditActor::service("test"),
        action,
        user_id: Some(cardbind_domain::UserId::parse(user).unwrap()),
        binding_id: None,
        outcome: cardbind_ports::audit::Outcome::Ok,
        request_id: None,
        client_ip: None,
        detail: None,
    }
}

/// `cardbind audit verify` on the embedded store in `data`: its exit
/// code, stdout and stderr.
fn audit_verify_in(data: &std::path::Path) -> (Option<i32>, String, String) {
    audit_verify_by(cardbind(), data)
}

/// `cmd` (a `cardbind` to run) running `audit verify` on the embedded
/// store in `data`: its exit code, stdout and stderr.
fn audit_verify_by(mut cmd: Command, data: &std::path::Path) -> (Option<i32>, String, String) {
    let out = cmd
        .args(["audit", "verify"])
        .env("CARDBIND__SERVER__DATA_DIR", data)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn cardbind() -> Command {
    without_our_variables(Command::new(env!("CARGO_BIN_EXE_cardbind")))
}

/// `cmd` with the test environment's `CARDBIND…` variables removed.
fn without_our_variables(mut cmd: Command) -> Command {
    for (k, _) in std::env::vars() {
        if k.starts_with("CARDBIND__") || k == "CARDBIND_CONFIG" {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Every wrapped key of the store: (owner, master key id, wrapped bytes).
async fn wrapped_keys(config: &cardbind::config::Config) -> Vec<(String, String, Vec<u8>)> {
    let stores = cardbind::compose::stores(config).await.unwrap();
    stores
        .data_keys
        .list(None, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|k| (k.owner, k.master_key_id, k.wrapped))
        .collect()
}

/// The `keys.rotate` events of the service's audit chain, oldest first.
async fn rotation_events(
    config: &cardbind::config::Config,
) -> Vec<cardbind_ports::audit::AuditEvent> {
    let stores = cardbind::compose::stores(config).await.unwrap();
    let filter = cardbind_ports::audit::AuditFilter {
        action: Some(cardbind_ports::audit::AuditAction::KeysRotate),
        ..cardbind_ports::audit::AuditFilter::default()
    };
    let mut events: Vec<_> = stores
        .audit
        .list(&filter, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .collect();
    events.sort_by_key(|e| e.at);
    events
}

/// A store in `dir/data` with the service's keys in it (the branch key,
/// the canary), as a first start leaves it, and its configuration.
async fn store_with_keys(dir: &std::path::Path) -> cardbind::config::Config {
    let mut config = cardbind::config::Config::default();
    config.server.data_dir = dir.join("data");
    let built = cardbind::compose::build(&config).await.unwrap();
    built.usecases.key_self_check().await.unwrap();
    config
}

/// A new local master key in `dir`, and a configuration file naming it as
/// the master key and the data directory's first key as the previous one
/// (step 2 of a rotation): (the key's path, the file's path).
fn rotation_config(
    dir: &std::path::Path,
    data: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let new_key = dir.join("new.key");
    cardbind_keys::LocalMasterKey::load_or_create_file(&new_key).unwrap();
    let file = dir.join("cardbind.toml");
    std::fs::write(
        &file,
        format!(
            "[server]\ndata_dir = {data:?}\n[keys]\nlocal_key_file = {new_key:?}\n\
             previous_local_key_files = [{old:?}]\n",
            old = data.join("master.key"),
        ),
    )
    .unwrap();
    (new_key, file)
}

/// `erase-user` and `reconcile` use keys: under a master key that does not
/// open the store's canary (here another store's key file) they are
/// refused as `serve` is, before they change anything; under the store's
/// own key the same erasure runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_that_use_keys_refuse_a_master_key_the_canary_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let config = store_with_keys(dir.path()).await;
    let data = config.server.data_dir.clone();
    put_card_data(
        &cardbind::compose::stores(&config).await.unwrap(),
        "u1",
        "card-1",
        1,
    )
    .await;
    let before = wrapped_keys(&config).await;
    let other = dir.path().join("other.key");
    cardbind_keys::LocalMasterKey::load_or_create_file(&other).unwrap();
    for args in [&["erase-user", "u1"][..], &["reconcile"][..]] {
        let out = cardbind()
            .args(args)
            .env("CARDBIND__SERVER__DATA_DIR", &data)
            .env("CARDBIND__KEYS__LOCAL_KEY_FILE", &other)
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stdout}{stderr}");
        assert!(
            stderr.contains("key self-check failed, nothing was changed"),
            "{args:?}: {stderr}"
        );
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        assert_eq!(
            wrapped_keys(&config).await,
            before,
            "{args:?}: nothing changed"
        );
    }
    let out = cardbind()
        .args(["erase-user", "u1"])
        .env("CARDBIND__SERVER__DATA_DIR", &data)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("erased user u1"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_refuses_a_key_the_service_is_not_configured_with() {
    let dir = tempfile::tempdir().unwrap();
    let config = store_with_keys(dir.path()).await;
    let data = config.server.data_dir.clone();
    let before = wrapped_keys(&config).await;
    let old_id = before
        .iter()
        .find(|k| k.0.starts_with("@branch:"))
        .map(|k| k.1.clone())
        .unwrap();
    let (new_key, file) = rotation_config(dir.path(), &data);

    // The new key is not the configured master key yet: refused, nothing changed.
    let out = cardbind()
        .args(["keys", "rotate", "--from"])
        .arg(data.join("master.key"))
        .arg("--to")
        .arg(&new_key)
        .env("CARDBIND__SERVER__DATA_DIR", &data)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("is not the configured master key (keys.local_key_file"),
        "{stderr}"
    );
    assert_eq!(wrapped_keys(&config).await, before, "nothing changed");

    // From a key that wraps nothing: every record is under another key
    // (the one the service was configured with) and is left as it was; the
    // command fails, so that the key meant to be retired is not removed.
    let other = dir.path().join("other.key");
    cardbind_keys::LocalMasterKey::load_or_create_file(&other).unwrap();
    let out = cardbind()
        .args(["keys", "rotate", "--from"])
        .arg(&other)
        .arg("--to")
        .arg(&new_key)
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains(": 0 re-wrapped, "), "{stdout}");
    assert!(
        stderr.contains("were left under another master key than --from and --to"),
        "{stderr}"
    );
    assert_eq!(wrapped_keys(&config).await, before, "nothing changed");
    // Its audit record says so: not a rotation that went through.
    let rotations = rotation_events(&config).await;
    let last = rotations.last().unwrap();
    assert_ne!(last.outcome, cardbind_ports::audit::Outcome::Ok, "{last:?}");
    assert!(
        last.detail
            .as_deref()
            .unwrap_or_default()
            .contains(" under another master key"),
        "{last:?}"
    );

    // A `--to` that names no file: the path is said to be wrong, not the
    // key service to be down.
    let missing = dir.path().join("no-such.key");
    let out = cardbind()
        .args(["keys", "rotate", "--to"])
        .arg(&missing)
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--to: ") && stderr.contains(missing.to_str().unwrap()),
        "{stderr}"
    );
    assert!(!stderr.contains("key service unavailable"), "{stderr}");

    // Configured as the master key, the old one as the previous key: the
    // branch keys move to it.
    // Its report's reader has gone (`| head -0`): the rotation still
    // finishes and says it succeeded, no panic on the broken pipe.
    let mut child = cardbind()
        .args(["keys", "rotate", "--to"])
        .arg(&new_key)
        .arg("--config")
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let after = wrapped_keys(&config).await;
    let branch = after.iter().find(|k| k.0.starts_with("@branch:")).unwrap();
    assert_ne!(branch.1, old_id, "re-wrapped under the new key");

    // Run again (resumed): it says what it found, in words.
    let out = cardbind()
        .args(["keys", "rotate", "--to"])
        .arg(&new_key)
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1 record(s) wrapped by a master key: 0 re-wrapped, 1 already under the new key, \
         0 erased meanwhile, 0 failed\n"
    );
}

/// Spoils the wrapped bytes of the owner's key (same master key id, same
/// length): it no longer unwraps.
async fn spoil_key(config: &cardbind::config::Config, owner: &str) {
    let stores = cardbind::compose::stores(config).await.unwrap();
    let mut k = stores.data_keys.get(owner).await.unwrap().unwrap();
    let version = k.version;
    k.wrapped.iter_mut().skip(16).for_each(|b| *b ^= 0x5a);
    k.version += 1;
    stores.data_keys.replace(&k, version).await.unwrap();
}

/// A key command that leaves a key it could not unwrap says so and fails:
/// after a rotation, the old master key would otherwise look safe to
/// remove; a scheduled retirement would look done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_commands_fail_naming_the_keys_that_did_not_unwrap() {
    let dir = tempfile::tempdir().unwrap();
    let config = store_with_keys(dir.path()).await;
    let data = config.server.data_dir.clone();
    let keys = wrapped_keys(&config).await;
    let branch = keys
        .iter()
        .find(|k| k.0.starts_with("@branch:"))
        .unwrap()
        .0
        .clone();
    // An owner's data key, wrapped under the branch key.
    let other = keys
        .iter()
        .find(|k| k.1 == branch)
        .unwrap_or_else(|| panic!("a key wrapped under {branch}: {keys:?}"))
        .0
        .clone();

    // Retirement to a new version: every owner key moves, but one does not
    // unwrap; its version is kept and the command fails naming it.
    spoil_key(&config, &other).await;
    let out = cardbind()
        .args(["keys", "retire-branches", "--new-version"])
        .env("CARDBIND__SERVER__DATA_DIR", &data)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.starts_with("active branch version @branch:"),
        "{stdout}"
    );
    assert!(stdout.contains(", 1 failed\n"), "{stdout}");
    assert!(stdout.contains(&format!("kept: {branch}")), "{stdout}");
    assert!(
        stderr.contains(&format!(
            "1 key(s) were not re-wrapped and were left as they were ({other}): the branch \
             versions they are under were kept"
        )),
        "{stderr}"
    );

    // Rotation of the master key: a branch version that does not unwrap
    // under the old key is left, and the command says to keep that key.
    spoil_key(&config, &branch).await;
    let (new_key, file) = rotation_config(dir.path(), &data);
    let out = cardbind()
        .args(["keys", "rotate", "--to"])
        .arg(&new_key)
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.starts_with("2 record(s) wrapped by a master key: 1 re-wrapped, "),
        "{stdout}"
    );
    assert!(stdout.ends_with(", 1 failed\n"), "{stdout}");
    assert!(
        stderr.contains(&format!(
            "({branch}): they are still under the old master key"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_refuse_a_store_that_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let bins = dir.path().join("bins.csv");
    std::fs::write(
        &bins,
        "low,high,issuer_code,issuer_name_zh,issuer_name_en,card_type,country,currency\n\
         622588,,CMB,招商银行,CMB,debit,CN,CNY\n",
    )
    .unwrap();
    let key = dir.path().join("other.key");
    cardbind_keys::LocalMasterKey::load_or_create_file(&key).unwrap();
    let key = key.to_str().unwrap();
    let bins = bins.to_str().unwrap();
    // Run from a directory without a store, with the default relative data
    // directory (`.data`).
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let commands: [&[&str]; 8] = [
        &["erase-user", "bob"],
        &["purge"],
        &["reconcile"],
        &["sweep-card-data"],
        &["audit", "verify"],
        &["keys", "rotate", "--from", key, "--to", key],
        &["keys", "retire-branches"],
        &["bins", "import", bins],
    ];
    let store = elsewhere.join(".data").join("cardbind.sqlite3");
    for args in &commands {
        let out = cardbind()
            .args(*args)
            .current_dir(&elsewhere)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("storage.path: there is no store at")
                && stderr.contains(&store.display().to_string()),
            "{args:?}: {stderr}"
        );
        let left: Vec<_> = std::fs::read_dir(&elsewhere).unwrap().collect();
        assert!(left.is_empty(), "{args:?} created {left:?}");
    }
    // With `storage.path` set, that path is named.
    let path = dir.path().join("store.sqlite3");
    let out = cardbind()
        .args(commands[0])
        .current_dir(&elsewhere)
        .env("CARDBIND__STORAGE__PATH", &path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(!path.exists());
    // A dry run of a BIN table import reads no store.
    let out = cardbind()
        .args(["bins", "import", bins, "--dry-run"])
        .current_dir(&elsewhere)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Where the store is, the command runs.
    make_store(&elsewhere.join(".data")).await;
    let out = cardbind()
        .args(commands[0])
        .current_dir(&elsewhere)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("erased user bob: 0 card(s)"), "{stdout}");
    // On the in-memory store (inside the serving process), each refuses
    // instead of acting on an empty store of its own.
    for args in &commands {
        let out = cardbind()
            .args(*args)
            .current_dir(&elsewhere)
            .env("CARDBIND__STORAGE__KIND", "memory")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("admin commands act on a durable store")
                || stderr.contains("bins import needs a durable store"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn settings_that_would_panic_the_service_are_refused_as_configuration_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value, field) in [
        (
            "CARDBIND__STORAGE__TIMEOUT_MS",
            "2147483648",
            "storage.timeout_ms",
        ),
        (
            "CARDBIND__KEYS__CACHE_MAX_AGE_SECONDS",
            "40000000000",
            "keys.cache_max_age_seconds",
        ),
        (
            "CARDBIND__LIMITS__VERIFICATION_WINDOW_SECONDS",
            "0",
            "limits.verification_window_seconds",
        ),
        (
            "CARDBIND__SERVER__MAX_JSON_DEPTH",
            "0",
            "server.max_json_depth",
        ),
    ] {
        for command in ["check-config", "serve"] {
            let out = cardbind()
                .arg(command)
                .env("CARDBIND__SERVER__ADDRESS", "127.0.0.1:0")
                .env("CARDBIND__SERVER__DATA_DIR", dir.path())
                .env(var, value)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{command} {var}: {stderr}");
            assert!(
                stderr.contains(&format!("cardbind: configuration: {field}:")),
                "{command} {var}: {stderr}"
            );
        }
    }
}

/// `step-up-token --ttl` out of 1..=`step_up.max_ttl_seconds` is refused,
/// as `token` refuses its own, instead of a token cut to the bound (or one
/// already expired).
#[test]
fn a_step_up_token_out_of_its_lifetime_bounds_is_not_issued() {
    let dir = tempfile::tempdir().unwrap();
    let run_with = |ttl: Option<&str>, max: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cardbind"));
        for (k, _) in std::env::vars() {
            if k.starts_with("CARDBIND__") || k == "CARDBIND_CONFIG" {
                cmd.env_remove(k);
            }
        }
        cmd.args(["step-up-token", "--user", "mia", "--action", "erase_user"]);
        if let Some(ttl) = ttl {
            cmd.args(["--ttl", ttl]);
        }
        cmd.env("CARDBIND__SERVER__DATA_DIR", dir.path())
            .env(
                "CARDBIND__STEP_UP__HMAC_SECRET",
                "a-step-up-secret-of-more-than-32-characters",
            )
            .env("CARDBIND__STEP_UP__MAX_TTL_SECONDS", max)
            .output()
            .unwrap()
    };
    let run = |ttl: &str| run_with(Some(ttl), "300");
    // No --ttl: 120 s, or the bound when it is lower.
    for max in ["60", "300"] {
        let out = run_with(None, max);
        assert!(
            out.status.success(),
            "max {max}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for ttl in ["0", "301"] {
        let out = run(ttl);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{ttl}: {stderr}");
        assert!(out.stdout.is_empty(), "{ttl}: a token was printed");
        assert!(
            stderr.contains("--ttl") && stderr.contains("nothing was issued"),
            "{ttl}: {stderr}"
        );
    }
    for ttl in ["1", "300"] {
        let out = run(ttl);
        assert!(
            out.status.success(),
            "{ttl}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!String::from_utf8_lossy(&out.stdout).trim().is_empty());
    }
    // Nor for a user id no request can name.
    let out = Command::new(env!("CARGO_BIN_EXE_cardbind"))
        .args(["step-up-token", "--user", "@x", "--action", "erase_user"])
        .env("CARDBIND__SERVER__DATA_DIR", dir.path())
        .env(
            "CARDBIND__STEP_UP__HMAC_SECRET",
            "a-step-up-secret-of-more-than-32-characters",
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        out.stdout.is_empty() && stderr.contains("--user"),
        "{stderr}"
    );
    // An unknown action is named as such, with or without a secret set.
    let out = Command::new(env!("CARGO_BIN_EXE_cardbind"))
        .args(["step-up-token", "--user", "mia", "--action", "bogus"])
        .env("CARDBIND__SERVER__DATA_DIR", dir.path())
        .env_remove("CARDBIND__STEP_UP__HMAC_SECRET")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--action: unbind_default_card, change_default_card or erase_user"),
        "{stderr}"
    );
}

/// `erase-user` with step-up enabled and no token says how to give one;
/// with the token `step-up-token` makes, it erases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erase_user_without_its_step_up_token_says_how_to_make_one() {
    let dir = tempfile::tempdir().unwrap();
    make_store(dir.path()).await;
    let with_step_up = |args: &[&str]| {
        cardbind()
            .args(args)
            .env("CARDBIND__SERVER__DATA_DIR", dir.path())
            .env("CARDBIND__STEP_UP__ENABLED", "true")
            .env(
                "CARDBIND__STEP_UP__HMAC_SECRET",
                "a-step-up-secret-of-more-than-32-characters",
            )
            .output()
            .unwrap()
    };
    let out = with_step_up(&["erase-user", "mia"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("step_up_required: step-up is enabled")
            && stderr.contains("--step-up-token")
            && stderr.contains("cardbind step-up-token --user mia --action erase_user"),
        "{stderr}"
    );
    // A token given but refused is not told to pass one, but what a
    // refused one may be (garbage, or one for another action).
    let other = with_step_up(&[
        "step-up-token",
        "--user",
        "mia",
        "--action",
        "unbind_default_card",
    ]);
    assert!(other.status.success());
    let other = String::from_utf8_lossy(&other.stdout).trim().to_owned();
    for given in ["not-a-token", other.as_str()] {
        let out = with_step_up(&["erase-user", "mia", "--step-up-token", given]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(!stderr.contains("--step-up-token"), "{stderr}");
        assert!(
            stderr.contains("the step-up token was refused")
                && stderr.contains("another user or action than erase_user of mia"),
            "{stderr}"
        );
    }
    let token = with_step_up(&["step-up-token", "--user", "mia", "--action", "erase_user"]);
    assert!(token.status.success());
    let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();
    let out = with_step_up(&["erase-user", "mia", "--step-up-token", &token]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("erased user mia"));
}

/// `reconcile` runs again an erasure whose start is on record with no
/// `user.erase` of it (here a start written as a process that died right
/// after it would leave it; `--older-than 0`, as the start is new), says
/// so, records the erasure under the start's id, and finds nothing the
/// second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_finishes_an_erasure_that_did_not_finish() {
    use cardbind_ports::audit::{AuditAction, AuditActor, AuditEvent, AuditFilter, Outcome};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let now = cardbind_domain::Timestamp::from_unix_millis(
        i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap(),
    );
    {
        let stores = cardbind::compose::stores(&config_in(&data)).await.unwrap();
        let start = AuditEvent {
            at: now,
            actor: AuditActor {
                subject: "ops".into(),
                role: Some(cardbind_domain::Role::Admin),
            },
            action: AuditAction::UserEraseStart,
            user_id: Some(cardbind_domain::UserId::parse("u9").unwrap()),
            binding_id: None,
            outcome: Outcome::Ok,
            request_id: None,
            client_ip: None,
            detail: Some("erasure e-1: the user's key is destroyed next".into()),
        };
        stores.audit.append_system(vec![start], now).await.unwrap();
    }
    let run = || {
        let out = cardbind()
            .env("CARDBIND__SERVER__DATA_DIR", &data)
            .args(["reconcile", "--older-than", "0"])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = run();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.ends_with("erasures that did not finish 1, finished now 1, failed again 0\n"),
        "{stdout}"
    );
    let (code, stdout, stderr) = run();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.ends_with("erasures that did not finish 0, finished now 0, failed again 0\n"),
        "{stdout}"
    );
    let stores = cardbind::compose::stores(&config_in(&data)).await.unwrap();
    let erased = stores
        .audit
        .list(
            &AuditFilter {
                action: Some(AuditAction::UserErase),
                ..AuditFilter::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(erased.len(), 1, "{erased:?}");
    assert_eq!(erased[0].event.actor.subject, "reconcile");
    assert_eq!(erased[0].event.outcome, Outcome::Ok);
    assert_eq!(
        erased[0].event.detail.as_deref(),
        Some("erasure e-1: unbound 0"),
        "the erasure finished under the id of its start"
    );
}

/// An erasure `reconcile` runs again and that fails again (the user's
/// wallet does not parse) makes it exit 1, as the sweep does for its
/// unreadable records, so that a cron job reports it (it exited 0 with
/// `failed again 1`: black-box run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_exits_1_when_an_erasure_fails_again() {
    use cardbind_ports::audit::{AuditAction, AuditActor, AuditEvent, Outcome};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = config_in(&data);
    let u = cardbind_domain::UserId::parse("u8").unwrap();
    let now = cardbind_domain::Timestamp::from_unix_millis(
        i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap(),
    );
    {
        let stores = cardbind::compose::stores(&config).await.unwrap();
        let event = |action| AuditEvent {
            at: now,
            actor: AuditActor::service("test"),
            action,
            user_id: Some(u.clone()),
            binding_id: None,
            outcome: Outcome::Ok,
            request_id: None,
            client_ip: None,
            detail: Some("erasure e-8: the user's key is destroyed next".into()),
        };
        let w = cardbind_domain::Wallet::new(u.clone());
        stores
            .wallets
            .commit(
                &w,
                None,
                vec![event(AuditAction::BindingDefaultChanged)],
                now,
            )
            .await
            .unwrap();
        stores
            .audit
            .append_system(vec![event(AuditAction::UserEraseStart)], now)
            .await
            .unwrap();
    }
    let db = rusqlite::Connection::open(cardbind::compose::sqlite_path(&config)).unwrap();
    let edit = "UPDATE links SET wallet = CAST('not a wallet' AS BLOB) WHERE chain = 'u8'";
    assert_eq!(db.execute(edit, []).unwrap(), 1);
    drop(db);
    let out = cardbind()
        .env("CARDBIND__SERVER__DATA_DIR", &data)
        .args(["reconcile", "--older-than", "0"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.ends_with("erasures that did not finish 1, finished now 0, failed again 1\n"),
        "{stdout}"
    );
    assert!(stderr.contains("1 erasure(s) failed again"), "{stderr}");
}

/// `audit verify` writes nothing: it opens the embedded store read-only.
/// It checks a copy where it may not write (as auditors keep one: here a
/// user other than the files' owner runs it on a read-only directory) and
/// adds nothing there; it leaves a stopped store's file as it was; and a
/// file of an older schema is refused as it is, not upgraded. (It opened
/// the store read-write: on the copy it failed with "attempt to write a
/// readonly database", and it made the token secret it does not use.)
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_reads_a_read_only_copy_and_changes_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = config_in(&data);
    {
        let stores = cardbind::compose::stores(&config).await.unwrap();
        let now = cardbind_domain::Timestamp::from_unix_millis(1_790_000_000_000);
        let event = test_event(cardbind_ports::audit::AuditAction::UserErase, "alice", now);
        stores.audit.append_system(vec![event], now).await.unwrap();
    }
    let db = cardbind::compose::sqlite_path(&config);
    let before = std::fs::read(&db).unwrap();
    let (code, stdout, stderr) = audit_verify_in(&data);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.starts_with("audit chains intact: 1 links"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "the store's file changed"
    );
    assert!(!data.join("jwt.secret").exists(), "a token secret was made");
    // Nor are the channels' key files read: the production configuration
    // will do where its secrets are not at hand (the check built every
    // enabled channel, and failed on their keys).
    let conf = dir.path().join("alipay.toml");
    std::fs::write(
        &conf,
        "[channels]\nenabled = [\"alipay\"]\ndefault = \"alipay\"\n\n\
         [channels.alipay]\ngateway_url = \"https://openapi.alipay.com/gateway.do\"\n\
         app_id = \"2021000000000000\"\nprivate_key_file = \"/nonexistent/app.key\"\n\
         alipay_public_key_file = \"/nonexistent/alipay.pub\"\n\
         sign_scene = \"INDUSTRY|CARRENTAL\"\n",
    )
    .unwrap();
    let mut with_alipay = cardbind();
    with_alipay.arg("--config").arg(&conf);
    let (code, _, stderr) = audit_verify_by(with_alipay, &data);
    assert_eq!(code, Some(0), "{stderr}");

    // A copy in a directory the command may not write to.
    let copy = dir.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    let copied = copy.join("cardbind.sqlite3");
    std::fs::copy(&db, &copied).unwrap();
    let mode = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    };
    mode(dir.path(), 0o755);
    mode(&copied, 0o444);
    mode(&copy, 0o555);
    let (code, stdout, stderr) = audit_verify_by(as_a_user_who_cannot_write(&copy), &copy);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.starts_with("audit chains intact: 1 links"),
        "{stdout}"
    );
    let names: Vec<_> = std::fs::read_dir(&copy)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["cardbind.sqlite3"], "files added beside the copy");
    mode(&copy, 0o755);

    // An older schema is not upgraded by a check.
    let older = cardbind_sqlite::SCHEMA_VERSION - 1;
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(&format!("PRAGMA user_version = {older};"))
        .unwrap();
    let before = std::fs::read(&db).unwrap();
    let (code, stdout, stderr) = audit_verify_in(&data);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "database schema version {older} is older than this build's"
        )),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "an older file was changed"
    );
}

/// `cardbind`, run so that it cannot write to `dir`: as root (whom
/// permissions do not stop), as `nobody` (through `setpriv`); otherwise
/// as the test's own user, for whom the directory's mode is enough.
#[cfg(unix)]
fn as_a_user_who_cannot_write(dir: &std::path::Path) -> Command {
    let uid = Command::new("id").arg("-u").output().unwrap();
    let root = String::from_utf8_lossy(&uid.stdout).trim() == "0";
    let run_as = |program: &str| {
        if root {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", program]);
            c
        } else {
            Command::new(program)
        }
    };
    // Checked, so that a test run as another user than intended cannot pass
    // by writing after all.
    let probe = run_as("touch").arg(dir.join("probe")).output().unwrap();
    assert!(!probe.status.success(), "{} is writable", dir.display());
    let mut cmd = without_our_variables(run_as(env!("CARGO_BIN_EXE_cardbind")));
    cmd.current_dir(dir);
    cmd
}
