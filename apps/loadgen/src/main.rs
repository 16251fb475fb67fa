//! # cardbind-loadgen
//!
//! Binds cards through the HTTP API and prints, per time window, the
//! throughput, p50 and p99 and the number of bindings stored so far, so
//! that a cost growing with the data shows as a curve. In the same run it
//! measures the framework floor — a bare poem-openapi endpoint of the same
//! shape (`floor`, in this crate) — on the same machine with the same
//! client, and prints the service's figures beside it.
//!
//! ```sh
//! cargo build --release -p cardbind -p cardbind-loadgen
//! target/release/loadgen --cardbind target/release/cardbind --floor target/release/floor \
//!     --binds 1000000 --concurrency 32 --window 10
//! # against a service already running (no RSS figure):
//! target/release/loadgen --url http://127.0.0.1:8080 --token "$TOKEN" --binds 10000
//! ```
//!
//! Every bind is a new user and a new card (a Luhn-valid Visa number from
//! a counter), so the per-user and per-card rules never throttle the run;
//! the spawned service runs its embedded default store in a fresh
//! directory, with the mock channel binding at once and the per-IP rule
//! off (every request comes from one address).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[derive(Parser, Debug, Clone)]
#[command(about = "Binds cards through the HTTP API and prints the curve as the store grows")]
struct Args {
    /// The cardbind binary to start (embedded store in a fresh directory).
    #[arg(long)]
    cardbind: Option<String>,
    /// The floor binary, measured first for `--floor-seconds`.
    #[arg(long)]
    floor: Option<String>,
    /// A service already running instead of `--cardbind`.
    #[arg(long)]
    url: Option<String>,
    /// A service token for `--url`.
    #[arg(long)]
    token: Option<String>,
    /// Binds to make.
    #[arg(long, default_value_t = 100_000)]
    binds: u64,
    /// Requests in flight.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds per reported window.
    #[arg(long, default_value_t = 10)]
    window: u64,
    /// Seconds the floor is measured.
    #[arg(long, default_value_t = 20)]
    floor_seconds: u64,
    /// Where the spawned service keeps its data (default: a temporary
    /// directory removed at the end).
    #[arg(long)]
    data_dir: Option<String>,
    /// Extra `KEY=VALUE` environment settings for the spawned service
    /// (e.g. `CARDBIND__STORAGE__KIND=memory`).
    #[arg(long = "env")]
    env: Vec<String>,
    /// Where the spawned service's log (its stderr) goes (default:
    /// discarded). Its level is `warn` unless `--env CARDBIND__LOG__FILTER=…`.
    #[arg(long)]
    service_log: Option<String>,
    /// The number of the first bind (user `lg-N`, card N): with
    /// `--data-dir` of an earlier run that made binds 0 to N-1, this run
    /// goes on growing that store (counted as stored from N).
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Each bind's user id a random UUID (a new user's wallet, data key
    /// and audit chain at random places in the store's trees), not
    /// `lg-N` (in the order of a platform's sequential ids).
    #[arg(long, conflicts_with = "time_ordered_users")]
    random_users: bool,
    /// Each bind's user id a new UUID v7 (time-ordered, as ULIDs and
    /// snowflake ids are): a new user's records land after the last
    /// user's, as with `lg-N`, with ids of a UUID's length.
    #[arg(long)]
    time_ordered_users: bool,
}

/// The user ids a run sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Users {
    /// `lg-N` for bind N.
    Numbered,
    /// A random UUID (v4) a bind.
    Random,
    /// A UUID v7 a bind.
    TimeOrdered,
}

impl Users {
    fn of(args: &Args) -> Users {
        if args.random_users {
            Users::Random
        } else if args.time_ordered_users {
            Users::TimeOrdered
        } else {
            Users::Numbered
        }
    }
}

/// The binds a run sends: their numbers (card N, and user `lg-N` when
/// `users` says so).
struct Binds {
    numbers: std::ops::Range<u64>,
    users: Users,
}

/// The path a bind is sent to.
fn bind_path(n: u64, users: Users) -> String {
    match users {
        Users::Random => format!("/v1/users/{}/cards", uuid::Uuid::new_v4()),
        Users::TimeOrdered => format!("/v1/users/{}/cards", uuid::Uuid::now_v7()),
        Users::Numbered => format!("/v1/users/lg-{n}/cards"),
    }
}

/// A service under load: where it listens, and the process when spawned.
struct Target {
    url: String,
    token: String,
    child: Option<Child>,
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `cmd`, waits for the line `… listening on URL` on its stdout.
fn spawn_listening(mut cmd: Command, what: &str, log: Stdio) -> Result<(Child, String), String> {
    cmd.stdout(Stdio::piped()).stderr(log);
    let mut child = cmd.spawn().map_err(|e| format!("{what}: {e}"))?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(out).lines();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        match lines.next() {
            Some(Ok(l)) => {
                if let Some((_, url)) = l.split_once(" listening on ") {
                    let url = url.trim().to_owned();
                    // Keep draining stdout so the child never blocks on it.
                    std::thread::spawn(move || for _ in lines.by_ref() {});
                    return Ok((child, url));
                }
            }
            _ => break,
        }
    }
    let _ = child.kill();
    Err(format!("{what} did not say where it listens"))
}

fn spawn_cardbind(bin: &str, args: &Args, dir: &std::path::Path) -> Result<Target, String> {
    let settings: Vec<(String, String)> = [
        ("CARDBIND__SERVER__ADDRESS", "127.0.0.1:0"),
        ("CARDBIND__SERVER__DATA_DIR", &dir.to_string_lossy()),
        ("CARDBIND__CHANNELS__MOCK__MODE", "instant"),
        ("CARDBIND__LIMITS__BINDS_PER_IP_PER_MINUTE", "0"),
        ("CARDBIND__LIMITS__BINDS_PER_CARD_PER_HOUR", "0"),
        ("CARDBIND__LOG__FILTER", "warn"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .chain(args.env.iter().filter_map(|kv| {
        kv.split_once('=')
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
    }))
    .collect();
    let token = {
        let out = Command::new(bin)
            .envs(settings.iter().cloned())
            .args(["token", "--sub", "loadgen", "--role", "service"])
            .output()
            .map_err(|e| format!("cardbind token: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cardbind token failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let mut cmd = Command::new(bin);
    cmd.envs(settings).arg("serve");
    let log = match &args.service_log {
        Some(path) => Stdio::from(
            std::fs::File::create(path).map_err(|e| format!("--service-log {path}: {e}"))?,
        ),
        None => Stdio::null(),
    };
    let (child, url) = spawn_listening(cmd, "cardbind", log)?;
    Ok(Target {
        url,
        token,
        child: Some(child),
    })
}

/// The resident set size of a process, in MiB (Linux).
fn rss_mib(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// A Luhn-valid 16-digit Visa number from a counter.
fn card(n: u64) -> String {
    let body = format!("4{:014}", n % 100_000_000_000_000);
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    format!("{body}{}", (10 - sum % 10) % 10)
}

fn body(n: u64) -> Bytes {
    Bytes::from(format!(
        r#"{{"card_number":"{}","expiry_month":12,"expiry_year":2031,"cvv":"123","holder_name":"Load Gen","id_number":"11010519491231002X","phone":"13800138000","consent":{{"text_version":"2026-01","text_sha256":"{}"}}}}"#,
        card(n),
        "ab".repeat(32)
    ))
}

/// The bind's `Idempotency-Key`: a random UUID, as clients send. Until 2
/// December 2026 the service stored the key as sent, and a counter
/// (`lg-1`, `lg-2`, …, what this generator sent until 7 December) let the
/// embedded store append each bind's idempotency record, which no
/// client's keys allow: those runs measured a faster, flatter curve than
/// clients got (README, "How fast, as the store grows"). Since then the
/// service stores a digest of the key, so today's figures are the same
/// either way; random keys keep a build or a store that orders records by
/// the key as sent from being flattered.
fn idempotency_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// What one window measured.
struct Window {
    hist: Histogram<u64>,
    ok: u64,
    errors: u64,
}

impl Window {
    fn new() -> Window {
        Window {
            hist: Histogram::new_with_bounds(1, 120_000_000, 3)
                .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable_hist())),
            ok: 0,
            errors: 0,
        }
    }
}

#[allow(clippy::panic)]
fn unreachable_hist() -> Histogram<u64> {
    panic!("a histogram with 3 significant digits is valid")
}

/// Runs `concurrency` workers sending `binds` until all are sent or
/// `deadline` passes; `report` is called with the binds answered so far,
/// each finished window, the time since the start, the window's own
/// length (the last one ends when the last bind does, so it is shorter;
/// one after a late report is too, its tick coming early) and whether it
/// is the run's last.
async fn drive(
    url: &str,
    token: &str,
    concurrency: usize,
    binds: Binds,
    deadline: Option<Duration>,
    window: Duration,
    mut report: impl FnMut(u64, &Window, Duration, Duration, bool),
) -> (u64, u64) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .build_http();
    let (next, end) = (
        Arc::new(AtomicU64::new(binds.numbers.start)),
        binds.numbers.end,
    );
    let users = binds.users;
    let stop = Arc::new(AtomicBool::new(false));
    let current = Arc::new(Mutex::new(Window::new()));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (client, next, stop, current) =
            (client.clone(), next.clone(), stop.clone(), current.clone());
        let (url, auth) = (url.to_owned(), format!("Bearer {token}"));
        workers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= end || stop.load(Ordering::Relaxed) {
                    break;
                }
                let req = hyper::Request::post(format!("{url}{}", bind_path(n, users)))
                    .header("authorization", &auth)
                    .header("content-type", "application/json")
                    .header("idempotency-key", idempotency_key())
                    .body(Full::new(body(n)));
                let Ok(req) = req else { continue };
                let t = Instant::now();
                let ok = match client.request(req).await {
                    Ok(resp) => {
                        let good = resp.status().is_success();
                        let _ = resp.into_body().collect().await;
                        good
                    }
                    Err(_) => false,
                };
                let us = t.elapsed().as_micros() as u64;
                if let Ok(mut w) = current.lock() {
                    if ok {
                        w.ok += 1;
                        let _ = w.hist.record(us.max(1));
                    } else {
                        w.errors += 1;
                    }
                }
            }
        }));
    }
    let (mut ok, mut errors) = (0, 0);
    let mut ticker = tokio::time::interval(window);
    ticker.tick().await;
    let mut window_started = Instant::now();
    loop {
        let all_done = workers.iter().all(|w| w.is_finished());
        if !all_done {
            // The window ends at its tick, or sooner when the last bind is
            // answered: waiting out the tick would count idle time in it.
            tokio::select! {
                _ = ticker.tick() => {}
                _ = all_finished(&workers) => {}
            }
        }
        let length = window_started.elapsed();
        window_started = Instant::now();
        let done = std::mem::replace(
            &mut *current.lock().unwrap_or_else(|e| e.into_inner()),
            Window::new(),
        );
        ok += done.ok;
        errors += done.errors;
        let last = all_done || workers.iter().all(|w| w.is_finished());
        report(ok, &done, started.elapsed(), length, last);
        if last {
            break;
        }
        if deadline.is_some_and(|d| started.elapsed() >= d) {
            stop.store(true, Ordering::Relaxed);
        }
    }
    (ok, errors)
}

/// Returns once every worker has finished (checked every 50 ms).
async fn all_finished(workers: &[tokio::task::JoinHandle<()>]) {
    while !workers.iter().all(|w| w.is_finished()) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The windows of a run as they are printed: each window's rate and
/// whether it was cut short.
#[derive(Debug, Default)]
struct Curve {
    windows: Vec<(f64, bool)>,
}

impl Curve {
    /// Records a window of `ok` binds answered over `length` and returns
    /// its rate and whether it was cut short (the run's `last` window
    /// only). A whole window in which no bind succeeded (the service
    /// stalled, or answered only errors) is a window of 0 binds/s: it
    /// counts in the curve like any other.
    fn record(&mut self, ok: u64, length: Duration, window: Duration, last: bool) -> (f64, bool) {
        let w = window_rate(ok, length, window, last);
        self.windows.push(w);
        w
    }

    /// The rates of the windows not cut short, in order: the curve. The
    /// run's last window ends with its last bind and is left out when it
    /// was cut short (as its line says), kept when it ran (nearly) a whole
    /// window.
    fn whole(&self) -> Vec<f64> {
        self.windows
            .iter()
            .filter(|(_, partial)| !partial)
            .map(|(rate, _)| *rate)
            .collect()
    }
}

/// A window's rate: what it counted over its own length, and whether it
/// was cut short: the run's `last` window, ended by its last bind before
/// its tick. A window in the middle of the run that is short (its tick
/// came early after a late report) is rated over its own length like any
/// other and is in the curve: a stall that made the report late must not
/// take the next window out of it.
fn window_rate(count: u64, length: Duration, window: Duration, last: bool) -> (f64, bool) {
    let secs = length.as_secs_f64().max(1e-3);
    (
        count as f64 / secs,
        last && length.as_secs_f64() < window.as_secs_f64() * 0.95,
    )
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// A reading of the embedded store's writer counters: transactions,
/// writes and busy seconds, and when they were read.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Reading {
    at: Instant,
    counters: [f64; 3],
}

/// The embedded store's writer counters, as `/metrics` at `url` exports
/// them. `None` when the service does not export them (another store) or
/// does not answer 200. A blocking HTTP/1.0 GET (a close-delimited body),
/// once a window, on the thread that prints the windows.
fn writer_counters(url: &str) -> Option<Reading> {
    use std::net::ToSocketAddrs;
    let addr = url.strip_prefix("http://")?.trim_end_matches('/');
    let to = addr.to_socket_addrs().ok()?.next()?;
    let mut s = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.lines().next()?;
    if status.split(' ').nth(1) != Some("200") {
        return None;
    }
    Some(Reading {
        at: Instant::now(),
        counters: parse_writer(&text)?,
    })
}

const WRITER_METRICS: [&str; 3] = [
    "cardbind_sqlite_writer_transactions_total",
    "cardbind_sqlite_writer_writes_total",
    "cardbind_sqlite_writer_busy_seconds_total",
];

fn parse_writer(text: &str) -> Option<[f64; 3]> {
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    };
    Some([
        value(WRITER_METRICS[0])?,
        value(WRITER_METRICS[1])?,
        value(WRITER_METRICS[2])?,
    ])
}

/// Writes per transaction and the writer's share of the time between two
/// readings of its counters, as printed.
fn writer_columns(before: Option<Reading>, now: Option<Reading>) -> (String, String) {
    match (before, now) {
        (Some(b), Some(n)) if n.counters[0] > b.counters[0] => {
            let (b, span) = (b.counters, n.at.duration_since(b.at));
            let n = n.counters;
            (
                format!("{:.1}", (n[1] - b[1]) / (n[0] - b[0])),
                format!(
                    "{:.0}",
                    100.0 * (n[2] - b[2]) / span.as_secs_f64().max(1e-9)
                ),
            )
        }
        _ => ("-".to_owned(), "-".to_owned()),
    }
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let window = Duration::from_secs(args.window.max(1));
    if args.first > 0 && args.data_dir.is_none() && args.url.is_none() {
        return Err("--first goes on growing a store: give the --data-dir of the run that filled it (or --url)".into());
    }

    let mut floor_rate = None;
    if let Some(bin) = &args.floor {
        let mut cmd = Command::new(bin);
        cmd.args(["--listen", "127.0.0.1:0"]);
        let (mut child, url) = spawn_listening(cmd, "floor", Stdio::null())?;
        let url = url.replace("socket://", "http://");
        let (ok, _) = drive(
            &url,
            "floor",
            args.concurrency,
            Binds {
                numbers: 0..u64::MAX,
                users: Users::Numbered,
            },
            Some(Duration::from_secs(args.floor_seconds)),
            // One window of the floor's length: the run stops at a window's
            // end, so a longer window would run past `--floor-seconds` and
            // the rate below would overstate the floor.
            Duration::from_secs(args.floor_seconds.max(1)),
            |_, _, _, _, _| {},
        )
        .await;
        let _ = child.kill();
        let _ = child.wait();
        let rate = ok as f64 / (args.floor_seconds.max(1) as f64);
        println!(
            "floor: {rate:.0} req/s over {}s (concurrency {})",
            args.floor_seconds, args.concurrency
        );
        floor_rate = Some(rate);
    }

    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let dir = args
        .data_dir
        .clone()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let target = match (&args.url, &args.cardbind) {
        (Some(url), _) => Target {
            url: url.clone(),
            token: args.token.clone().ok_or("--url needs --token")?,
            child: None,
        },
        (None, Some(bin)) => spawn_cardbind(bin, &args, &dir)?,
        (None, None) => return Err("give --cardbind BIN or --url URL".into()),
    };
    let pid = target.child.as_ref().map(Child::id);
    println!(
        "{:>7} {:>10} {:>9} {:>9} {:>9} {:>7} {:>8} {:>7} {:>8} {:>7}",
        "elapsed",
        "stored",
        "binds/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "rss MiB",
        "/floor",
        "w/tx",
        "writer%"
    );
    let mut curve = Curve::default();
    let mut writer = writer_counters(&target.url);
    let (ok, errors) = drive(
        &target.url,
        &target.token,
        args.concurrency,
        Binds {
            numbers: args.first..args.first.saturating_add(args.binds),
            users: Users::of(&args),
        },
        None,
        window,
        |stored, w, elapsed, length, last| {
            let (rate, partial) = curve.record(w.ok, length, window, last);
            let rss = pid
                .and_then(rss_mib)
                .map_or("-".to_owned(), |r| format!("{r:.0}"));
            let vs = floor_rate.map_or("-".to_owned(), |f| format!("{:.2}", rate / f));
            let now = writer_counters(&target.url);
            let (per_tx, busy) = writer_columns(writer, now);
            // A failed reading leaves the last one to compare with.
            writer = now.or(writer);
            println!(
                "{:>6.0}s {:>10} {:>9.0} {:>9.2} {:>9.2} {:>7} {:>8} {:>7} {:>8} {:>7}{}",
                elapsed.as_secs_f64(),
                args.first.saturating_add(stored),
                rate,
                ms(w.hist.value_at_quantile(0.5)),
                ms(w.hist.value_at_quantile(0.99)),
                w.errors,
                rss,
                vs,
                per_tx,
                busy,
                if partial {
                    format!("  (last {:.1}s)", length.as_secs_f64())
                } else {
                    String::new()
                }
            );
        },
    )
    .await;
    if let Some((median, worst)) = curve_summary(&curve.whole()) {
        println!(
            "binds: {ok} ok, {errors} failed; median window {median:.0} binds/s, {}{}",
            worst.map_or(
                "half the windows or more had no bind succeed".to_owned(),
                |w| format!("worst window {:+.0}% from it", w * 100.0)
            ),
            floor_rate.map_or(String::new(), |f| format!(
                "; median/floor {:.2}",
                median / f
            ))
        );
    }
    if target.child.is_some() {
        for (name, bytes) in files_in(&dir) {
            println!(
                "on disk: {name} {:.0} MiB ({:.0} bytes per stored bind)",
                bytes as f64 / 1_048_576.0,
                bytes as f64 / args.first.saturating_add(ok).max(1) as f64
            );
        }
    }
    drop(target);
    Ok(())
}

/// The median of the whole windows' rates (the mean of the two middle
/// ones when their number is even) and the window farthest from it, as a
/// signed fraction of it (negative: slower than the median; −100 %: a
/// window with no bind answered). `None` without a window; the farthest
/// window is `None` when the median is 0 (no fraction of it to give).
fn curve_summary(rates: &[f64]) -> Option<(f64, Option<f64>)> {
    let mut sorted = rates.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let n = sorted.len();
    let median = match n {
        0 => return None,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    };
    if median <= 0.0 {
        return Some((median, None));
    }
    let worst = rates
        .iter()
        .map(|r| (r - median) / median)
        .fold(0.0, |w: f64, d| if d.abs() > w.abs() { d } else { w });
    Some((median, Some(worst)))
}

/// The files of a directory tree with their sizes, largest first.
fn files_in(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                todo.push(e.path());
            } else {
                let name = e.path().strip_prefix(dir).map_or_else(
                    |_| e.file_name().to_string_lossy().into_owned(),
                    |p| p.to_string_lossy().into_owned(),
                );
                out.push((name, meta.len()));
            }
        }
    }
    out.sort_by_key(|f| std::cmp::Reverse(f.1));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_curve_summary_takes_the_middle_and_keeps_the_worst_windows_sign() {
        assert_eq!(curve_summary(&[]), None);
        // Odd: the middle window; the farthest is 20 % below it.
        assert_eq!(
            curve_summary(&[100.0, 80.0, 110.0]),
            Some((100.0, Some(-0.2)))
        );
        // Even: the mean of the two middle ones (100 and 110 → 105); the
        // farthest is above it.
        let (median, worst) = curve_summary(&[90.0, 110.0, 100.0, 140.0]).unwrap();
        assert_eq!(median, 105.0);
        let worst = worst.unwrap();
        assert!((worst - 35.0 / 105.0).abs() < 1e-12, "{worst}");
        // Mostly stalled: no fraction of a median of 0.
        assert_eq!(curve_summary(&[0.0, 0.0, 50.0]), Some((0.0, None)));
    }

    /// A whole window in which no bind succeeded is a window of 0 binds/s
    /// in the curve (a stall is the worst window, −100 %), not left out;
    /// so is a short one in the middle of the run (its tick came early
    /// after a report the stall made late); only the run's last window,
    /// cut short, is left out.
    #[test]
    fn a_stalled_window_is_in_the_curve() {
        let window = Duration::from_secs(10);
        let secs = Duration::from_secs;
        let mut curve = Curve::default();
        assert_eq!(curve.record(3_000, secs(10), window, false), (300.0, false));
        assert_eq!(curve.record(0, secs(10), window, false), (0.0, false));
        assert_eq!(
            curve.record(0, Duration::from_millis(500), window, false),
            (0.0, false)
        );
        assert_eq!(curve.record(3_100, secs(10), window, false), (310.0, false));
        assert_eq!(curve.record(3_050, secs(10), window, false), (305.0, false));
        assert_eq!(
            curve.record(0, Duration::from_millis(40), window, true),
            (0.0, true)
        );
        assert_eq!(curve.whole(), vec![300.0, 0.0, 0.0, 310.0, 305.0]);
        assert_eq!(curve_summary(&curve.whole()), Some((300.0, Some(-1.0))));
    }

    /// The run's last window ends with its last bind: its rate is over the
    /// time it lasted, not over a whole window (which read as a stall).
    #[test]
    fn a_window_cut_short_is_rated_over_its_own_length() {
        let window = Duration::from_secs(20);
        assert_eq!(
            window_rate(2_000, Duration::from_secs(20), window, true),
            (100.0, false)
        );
        let (rate, partial) = window_rate(2_116, Duration::from_millis(600), window, true);
        assert!(partial);
        assert!((rate - 3_526.7).abs() < 0.1, "{rate}");
        // The same window in the middle of the run is rated the same and
        // is not cut short.
        assert_eq!(
            window_rate(2_116, Duration::from_millis(600), window, false),
            (rate, false)
        );
        // A tick a little late is still a whole window.
        assert!(!window_rate(1, Duration::from_millis(19_500), window, true).1);
    }

    /// The curve is the windows not cut short: a last window that ran
    /// (nearly) whole is in it, as its line has no "(last …)"; one cut
    /// short is not, wherever the run ends.
    #[test]
    fn the_curve_keeps_a_last_window_that_ran_whole() {
        let whole = |windows: &[(f64, bool)]| {
            Curve {
                windows: windows.to_vec(),
            }
            .whole()
        };
        assert_eq!(
            whole(&[(3_350.0, false), (3_166.0, false), (3_642.0, false)]),
            vec![3_350.0, 3_166.0, 3_642.0]
        );
        assert_eq!(
            whole(&[(3_350.0, false), (3_166.0, false), (2_617.0, true)]),
            vec![3_350.0, 3_166.0]
        );
        assert_eq!(whole(&[(2_617.0, true)]), Vec::<f64>::new());
    }

    /// Keys are distinct random UUIDs, in no order: about half of
    /// consecutive pairs ascend (a counter's keys all would).
    #[test]
    fn idempotency_keys_are_distinct_and_unordered() {
        let keys: Vec<String> = (0..10_000).map(|_| idempotency_key()).collect();
        let distinct: std::collections::HashSet<&String> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len());
        assert!(keys.iter().all(|k| uuid::Uuid::parse_str(k)
            .is_ok_and(|u| u.get_version() == Some(uuid::Version::Random))));
        let ascending = keys.windows(2).filter(|w| w[0] < w[1]).count();
        assert!((4_500..5_500).contains(&ascending), "{ascending}");
    }

    const SCRAPE: &str = "# HELP cardbind_sqlite_writer_busy_seconds_total Seconds.
# TYPE cardbind_sqlite_writer_busy_seconds_total counter
cardbind_sqlite_writer_busy_seconds_total 1.5
cardbind_sqlite_writer_transactions_total 20
cardbind_sqlite_writer_transactions_total_other 7
cardbind_sqlite_writer_writes_total 300
cardbind_store_up 1
";

    #[test]
    fn the_writers_columns_come_from_two_readings_of_its_counters() {
        let counters = parse_writer(SCRAPE);
        assert_eq!(counters, Some([20.0, 300.0, 1.5]));
        let t0 = Instant::now();
        let reading = |at: Instant, counters: [f64; 3]| Some(Reading { at, counters });
        let before = reading(t0, [10.0, 100.0, 1.0]);
        let now = reading(t0 + Duration::from_secs(2), [20.0, 300.0, 1.5]);
        // 200 writes in 10 transactions; 0.5 s busy in the 2 s between.
        assert_eq!(
            writer_columns(before, now),
            ("20.0".to_owned(), "25".to_owned())
        );
        // Without a reading, or without a transaction between them: none.
        let none = ("-".to_owned(), "-".to_owned());
        assert_eq!(writer_columns(None, now), none);
        assert_eq!(writer_columns(now, None), none);
        assert_eq!(writer_columns(now, now), none);
        assert_eq!(parse_writer("cardbind_store_up 1\n"), None);
    }

    /// The counters are read from the service's `/metrics`, when it
    /// answers 200.
    #[tokio::test]
    async fn the_writers_counters_are_scraped_from_the_service() {
        use poem::http::StatusCode;
        use poem::{get, handler, Route};

        #[handler]
        fn metrics() -> &'static str {
            SCRAPE
        }
        #[handler]
        fn refusing() -> (StatusCode, &'static str) {
            (StatusCode::SERVICE_UNAVAILABLE, SCRAPE)
        }
        let mut read = Vec::new();
        for app in [
            Route::new().at("/metrics", get(metrics)),
            Route::new().at("/metrics", get(refusing)),
        ] {
            let (url, server) = serve(app).await;
            let r = tokio::task::spawn_blocking(move || writer_counters(&url))
                .await
                .unwrap();
            server.abort();
            read.push(r.map(|r| r.counters));
        }
        assert_eq!(read, [Some([20.0, 300.0, 1.5]), None]);
    }

    /// Serves `app` on a free loopback port: its URL, and the server's task.
    async fn serve(
        app: impl poem::Endpoint + 'static,
    ) -> (String, tokio::task::JoinHandle<std::io::Result<()>>) {
        use poem::listener::{Acceptor, Listener};
        let acceptor = poem::listener::TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .unwrap();
        let addr = acceptor.local_addr().remove(0);
        let url = format!("http://{}", addr.as_socket_addr().unwrap());
        let server = tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(app));
        (url, server)
    }

    /// Sends `binds` to an endpoint that records each bind's user and
    /// card: what was answered, failed and counted, and what it got.
    async fn recorded(binds: Binds) -> (u64, u64, u64, Vec<(String, String)>) {
        use poem::web::{Data, Json, Path};
        use poem::{handler, post, EndpointExt, Route};

        type Seen = Arc<Mutex<Vec<(String, String)>>>;
        #[handler]
        fn bind(
            Path(user): Path<String>,
            Json(body): Json<serde_json::Value>,
            seen: Data<&Seen>,
        ) -> poem::http::StatusCode {
            let card = body["card_number"].as_str().unwrap_or_default().to_owned();
            seen.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((user, card));
            poem::http::StatusCode::CREATED
        }
        let seen: Seen = Arc::default();
        let app = Route::new()
            .at("/v1/users/:user/cards", post(bind))
            .data(seen.clone());
        let (url, server) = serve(app).await;
        let mut counted = 0;
        let (ok, errors) = drive(
            &url,
            "t",
            4,
            binds,
            None,
            Duration::from_secs(1),
            |stored, _, _, _, _| counted = stored,
        )
        .await;
        server.abort();
        let mut seen = seen.lock().unwrap().clone();
        seen.sort();
        (ok, errors, counted, seen)
    }

    /// A run from `--first` N binds users `lg-N`, `lg-N+1`, … with cards
    /// N, N+1, …, each once, and counts what was answered.
    #[tokio::test]
    async fn a_run_goes_on_from_its_first_bind() {
        let (ok, errors, counted, seen) = recorded(Binds {
            numbers: 1_000..1_050,
            users: Users::Numbered,
        })
        .await;
        assert_eq!((ok, errors, counted), (50, 0, 50));
        let mut expected: Vec<(String, String)> = (1_000..1_050)
            .map(|n| (format!("lg-{n}"), card(n)))
            .collect();
        expected.sort();
        assert_eq!(seen, expected);
    }

    /// Each bind's user is a new UUID of `version`; the cards are
    /// numbered as before.
    async fn distinct_uuid_users(users: Users, version: uuid::Version) {
        let (ok, errors, counted, seen) = recorded(Binds {
            numbers: 0..50,
            users,
        })
        .await;
        assert_eq!((ok, errors, counted), (50, 0, 50));
        let ids: std::collections::HashSet<&String> = seen.iter().map(|(u, _)| u).collect();
        assert_eq!(ids.len(), 50);
        assert!(ids
            .iter()
            .all(|u| uuid::Uuid::parse_str(u).is_ok_and(|u| u.get_version() == Some(version))));
        let mut cards: Vec<String> = seen.into_iter().map(|(_, c)| c).collect();
        cards.sort();
        let mut expected: Vec<String> = (0..50).map(card).collect();
        expected.sort();
        assert_eq!(cards, expected);
    }

    /// `--random-users`: a random UUID (v4) a bind.
    #[tokio::test]
    async fn random_users_are_distinct_uuids() {
        distinct_uuid_users(Users::Random, uuid::Version::Random).await;
    }

    /// `--time-ordered-users`: a UUID v7 a bind, each after the one before
    /// (as text too: the store orders ids as text).
    #[tokio::test]
    async fn time_ordered_users_are_distinct_and_ascending() {
        distinct_uuid_users(Users::TimeOrdered, uuid::Version::SortRand).await;
        let ids: Vec<String> = (0..1_000)
            .map(|n| bind_path(n, Users::TimeOrdered))
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "not ascending");
    }
}
