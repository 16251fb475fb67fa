//! `cardbind-faults`: the fault matrix and the soak, by hand.
//!
//! ```sh
//! # under scripts/test-services.sh (FerretDB control script and moto exported):
//! cargo build --release -p cardbind -p cardbind-faults
//! bash scripts/test-services.sh target/release/cardbind-faults matrix
//! bash scripts/test-services.sh target/release/cardbind-faults soak --minutes 30 --storage ferretdb
//! target/release/cardbind-faults soak --minutes 30 --storage sqlite
//! # another store, by configuration only:
//! ... soak --storage custom --set storage.kind=… --set storage.…=…
//! ```
//!
//! The race scenarios, against one binary or several side by side:
//!
//! ```sh
//! bash scripts/test-services.sh target/debug/cardbind-faults races \
//!     --target old=/tmp/cardbind-d45c57c --target new=target/debug/cardbind
//! ... races --target new=target/debug/cardbind --scenarios cap,one-key --stores memory,sqlite
//! ```
//!
//! Exit status 1 when a must-be-0 figure is not 0 (or a soak tolerance is
//! passed), 2 on a usage error.

use std::path::PathBuf;
use std::time::Duration;

use cardbind_faults::matrix::{Fault, StorageChoice};
use cardbind_faults::{full_matrix, matrix, run_dir, short_matrix, soak};

const USAGE: &str = "usage: cardbind-faults matrix|soak [options]
  --storage memory|sqlite|ferretdb|mongodb|custom   (default: ferretdb under scripts/test-services.sh, else memory)
  --mongodb-uri URI         for --storage mongodb
  --kms-endpoint URL        the KMS emulator (default: $CARDBIND_TEST_KMS_ENDPOINT); --no-kms: local key
  --set section.key=value   any service setting (repeatable), e.g. for a new store
  --bin PATH                the cardbind binary (default: next to this program, or $CARDBIND_BIN)
  --dir DIR                 config, data and logs (default: a new temp dir, kept)
  --rate N                  flows started per second
  --log-filter F            the service's log filter
 matrix: --short | --hold SECS | --baseline SECS | --faults a,b,c ("
;

const RACES_USAGE: &str = "usage: cardbind-faults races [options]
  --target LABEL=PATH       a cardbind binary to run every scenario against (repeatable;
                            default: new=the binary next to this program, or $CARDBIND_BIN)
  --scenarios a,b,c         of cap,one-key,lease,lease-stall,lease-fence,rollback,partial (default: all)
  --stores a,b,c            of memory,sqlite,ferretdb (default: all; ferretdb needs
                            scripts/test-services.sh)
  --rounds N                users per repeated scenario (default 5)
  --retry-budget SECS       how long the partial-write client retries (default 150)
  --dir DIR                 configs, data and logs (default: a new temp dir, kept)
  --details                 print why each failure failed";

fn races_fail(msg: &str) -> ! {
    eprintln!("{msg}\n{RACES_USAGE}");
    std::process::exit(2)
}

async fn races_main(args: Vec<String>) -> i32 {
    use cardbind_faults::races::{self, Scenario, Store, Target};
    let mut targets: Vec<(String, PathBuf)> = Vec::new();
    let mut scenarios = Scenario::ALL.to_vec();
    let mut stores = Store::ALL.to_vec();
    let mut rounds = None;
    let mut budget = None;
    let mut dir = None;
    let mut details = false;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .unwrap_or_else(|| races_fail(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--target" => {
                let v = val();
                let (l, p) = v
                    .split_once('=')
                    .unwrap_or_else(|| races_fail("--target LABEL=PATH"));
                targets.push((l.to_owned(), PathBuf::from(p)));
            }
            "--scenarios" => {
                scenarios = val()
                    .split(',')
                    .map(|s| {
                        Scenario::parse(s.trim())
                            .unwrap_or_else(|| races_fail(&format!("unknown scenario {s}")))
                    })
                    .collect()
            }
            "--stores" => {
                stores = val()
                    .split(',')
                    .map(|s| {
                        Store::parse(s.trim())
                            .unwrap_or_else(|| races_fail(&format!("unknown store {s}")))
                    })
                    .collect()
            }
            "--rounds" => {
                rounds = Some(
                    val()
                        .parse::<usize>()
                        .unwrap_or_else(|_| races_fail("--rounds N")),
                )
            }
            "--retry-budget" => {
                budget = Some(
                    val()
                        .parse::<f64>()
                        .unwrap_or_else(|_| races_fail("--retry-budget SECS")),
                )
            }
            "--dir" => dir = Some(PathBuf::from(val())),
            "--details" => details = true,
            other => races_fail(&format!("unknown option {other}")),
        }
    }
    if targets.is_empty() {
        match cardbind_faults::service::find_binary(None) {
            Ok(b) => targets.push(("new".into(), b)),
            Err(e) => races_fail(&e.to_string()),
        }
    }
    let mut ts = Vec::new();
    for (label, bin) in targets {
        match Target::new(&label, bin).await {
            Ok(t) => ts.push(t),
            Err(e) => races_fail(&format!("{label}: {e:#}")),
        }
    }
    let dir = dir.unwrap_or_else(|| run_dir("races"));
    let mut o = races::Options::from_env(dir.clone());
    if let Some(r) = rounds {
        o.rounds = r;
    }
    if let Some(b) = budget {
        o.retry_budget = Duration::from_secs_f64(b);
    }
    for t in &ts {
        eprintln!("cardbind-faults races: {} = {}", t.label, t.bin.display());
    }
    eprintln!("cardbind-faults races: dir {}", dir.display());
    let out = races::run(&ts, &scenarios, &stores, &o).await;
    println!("{}", races::table(&out, &ts));
    if details {
        for x in &out {
            for d in &x.details {
                println!(
                    "  {} {} {}: {d}",
                    x.target,
                    x.scenario.name(),
                    x.store.name()
                );
            }
        }
    }
    i32::from(!races::all_passed(&out))
}

fn fail(msg: &str) -> ! {
    eprintln!("{msg}\n{USAGE}{})", Fault::ALL.map(Fault::name).join(","));
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        fail("no command");
    }
    let cmd = args.remove(0);
    if cmd == "races" {
        std::process::exit(races_main(args).await);
    }
    let mut storage: Option<String> = None;
    let mut mongodb_uri = None;
    let mut kms = std::env::var("CARDBIND_TEST_KMS_ENDPOINT")
        .ok()
        .filter(|s| !s.is_empty());
    let mut sets = Vec::new();
    let mut bin = None;
    let mut dir = None;
    let mut rate = None;
    let mut log_filter = None;
    let mut short = false;
    let mut hold = None;
    let mut baseline = None;
    let mut faults = None;
    let mut minutes = 30.0f64;
    let mut interval = 60.0f64;
    let mut tol = None::<soak::Tolerance>;
    let mut tol_set: Vec<(String, f64)> = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .unwrap_or_else(|| fail(&format!("{a} needs a value")))
        };
        let num = |s: String| -> f64 {
            s.parse()
                .unwrap_or_else(|_| fail(&format!("not a number: {s}")))
        };
        match a.as_str() {
            "--storage" => storage = Some(val()),
            "--mongodb-uri" => mongodb_uri = Some(val()),
            "--kms-endpoint" => kms = Some(val()),
            "--no-kms" => kms = None,
            "--set" => {
                let v = val();
                let (k, x) = v.split_once('=').unwrap_or_else(|| fail("--set key=value"));
                sets.push((k.trim().to_owned(), x.trim().to_owned()));
            }
            "--bin" => bin = Some(PathBuf::from(val())),
            "--dir" => dir = Some(PathBuf::from(val())),
            "--rate" => rate = Some(num(val())),
            "--log-filter" => log_filter = Some(val()),
            "--short" => short = true,
            "--hold" => hold = Some(Duration::from_secs_f64(num(val()))),
            "--baseline" => baseline = Some(Duration::from_secs_f64(num(val()))),
            "--faults" => {
                faults = Some(
                    val()
                        .split(',')
                        .map(|f| {
                            Fault::parse(f.trim())
                                .unwrap_or_else(|| fail(&format!("unknown fault {f}")))
                        })
                        .collect::<Vec<_>>(),
                )
            }
            "--minutes" => minutes = num(val()),
            "--interval-seconds" => interval = num(val()),
            "--rss-growth-pct" => tol_set.push(("rss_growth_pct".into(), num(val()))),
            "--rss-growth-mb" => tol_set.push(("rss_growth_mb".into(), num(val()))),
            "--rss-per-flow-kb" => tol_set.push(("rss_per_flow_kb".into(), num(val()))),
            "--p99-factor" => tol_set.push(("p99_factor".into(), num(val()))),
            other => fail(&format!("unknown option {other}")),
        }
    }
    let bin = match cardbind_faults::service::find_binary(bin.as_deref()) {
        Ok(b) => b,
        Err(e) => fail(&e.to_string()),
    };
    let dir = dir.unwrap_or_else(|| run_dir(&cmd));
    let mut o = if short {
        short_matrix(bin, dir.clone(), kms.clone())
    } else {
        full_matrix(bin, dir.clone(), kms.clone())
    };
    o.storage = match storage.as_deref() {
        None if cardbind_faults::deps::OwnFerretDb::available() => StorageChoice::OwnFerretDb,
        None | Some("memory") => StorageChoice::Memory,
        Some("sqlite") => StorageChoice::Sqlite,
        Some("ferretdb") => StorageChoice::OwnFerretDb,
        Some("mongodb") => StorageChoice::Mongo(
            mongodb_uri.unwrap_or_else(|| fail("--storage mongodb needs --mongodb-uri")),
        ),
        Some("custom") => StorageChoice::Custom,
        Some(s) => fail(&format!("unknown storage {s}")),
    };
    o.sets = sets;
    if let Some(r) = rate {
        o.rate = r;
    }
    if let Some(f) = log_filter {
        o.log_filter = f;
    }
    if let Some(h) = hold {
        o.hold = h;
    }
    if let Some(b) = baseline {
        o.baseline = b;
    }
    if let Some(f) = faults {
        o.faults = f;
    }
    eprintln!(
        "cardbind-faults: binary {}, dir {}",
        o.bin.display(),
        dir.display()
    );
    let code = match cmd.as_str() {
        "matrix" => match matrix::run(&o).await {
            Ok(r) => {
                println!("{}", r.table());
                for d in r.details.iter().take(50) {
                    println!("  {d}");
                }
                let f = r.failures(o.hostile_hold);
                for x in &f {
                    println!("FAIL: {x}");
                }
                i32::from(!f.is_empty())
            }
            Err(e) => {
                eprintln!("cardbind-faults: {e:#}");
                1
            }
        },
        "soak" => {
            if rate.is_none() {
                o.rate = 5.0;
            }
            if o.log_filter == cardbind_faults::DEFAULT_LOG_FILTER {
                // Half an hour of debug logs is gigabytes; the soak does not scan them.
                o.log_filter = "info".into();
            }
            let mut t = tol.take().unwrap_or_else(|| {
                if o.storage == StorageChoice::Memory {
                    soak::Tolerance::memory_store()
                } else {
                    soak::Tolerance::default()
                }
            });
            for (k, v) in &tol_set {
                match k.as_str() {
                    "rss_growth_pct" => t.rss_growth_pct = *v,
                    "rss_growth_mb" => t.rss_growth_mb = *v,
                    "rss_per_flow_kb" => t.rss_per_flow_kb = *v,
                    _ => t.p99_factor = *v,
                }
            }
            match soak::run(
                &o,
                Duration::from_secs_f64(minutes * 60.0),
                Duration::from_secs_f64(interval),
                &t,
            )
            .await
            {
                Ok(r) => {
                    println!("{}", r.table());
                    i32::from(!r.failures.is_empty())
                }
                Err(e) => {
                    eprintln!("cardbind-faults: {e:#}");
                    1
                }
            }
        }
        other => fail(&format!("unknown command {other}")),
    };
    std::process::exit(code);
}
