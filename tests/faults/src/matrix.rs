//! The fault matrix: a steady workload, one fault at a time, a table.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::cards::SECRETS;
use crate::deps::{create_kms_key, socket_addr_of, OwnFerretDb, Proxy};
use crate::hostile::{Burst, BurstReport};
use crate::service::{ServiceSpec, Storage};
use crate::spec::Spec;
use crate::workload::{self, quantile, Api, Kind, Mix, Recorder, Workload};

/// The faults, in the order they are injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// FerretDB killed (SIGKILL) and restarted on the same port and data.
    Ferretdb,
    /// The KMS emulator cut off: a proxy in front of it stops listening and
    /// resets its connections, then listens again (see the module docs of
    /// `deps` and docs/operations.md for why not a moto restart).
    Kms,
    /// Half the binds hit a channel that answers after 800 ms.
    ChannelSlow,
    /// Half the binds hit a channel failing every other call.
    ChannelFailing,
    /// Half the binds hit a channel that never answers in time.
    ChannelTimeout,
    /// Malformed requests, oversized heads, slow-loris, trickled bodies and
    /// a connection flood, all at once.
    Hostile,
}

impl Fault {
    pub const ALL: [Fault; 6] = [
        Fault::Ferretdb,
        Fault::Kms,
        Fault::ChannelSlow,
        Fault::ChannelFailing,
        Fault::ChannelTimeout,
        Fault::Hostile,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::Ferretdb => "ferretdb-kill",
            Fault::Kms => "kms-cut",
            Fault::ChannelSlow => "channel-slow",
            Fault::ChannelFailing => "channel-failing",
            Fault::ChannelTimeout => "channel-timeout",
            Fault::Hostile => "hostile-burst",
        }
    }

    pub fn parse(s: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.name() == s)
    }
}

/// Where the service keeps its data in a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageChoice {
    Memory,
    /// The embedded SQLite store in the run's data directory (what
    /// `cardbind serve` runs by default).
    Sqlite,
    /// A FerretDB of the harness's own (needed for the FerretDB fault).
    OwnFerretDb,
    /// An existing MongoDB.
    Mongo(String),
    /// Given entirely by `--set storage.…` overrides.
    Custom,
}

/// A run's settings (see `main.rs` for the command line).
#[derive(Clone, Debug)]
pub struct Options {
    pub bin: PathBuf,
    pub dir: PathBuf,
    pub storage: StorageChoice,
    /// The KMS emulator; `None`: the local master key.
    pub kms_endpoint: Option<String>,
    pub sets: Vec<(String, String)>,
    pub log_filter: String,
    /// Flows started per second.
    pub rate: f64,
    /// Steady state before the first fault.
    pub baseline: Duration,
    /// How long each fault lasts.
    pub hold: Duration,
    /// How long the hostile burst lasts (longer than the header deadline, so
    /// that slow-loris connections must have been cut).
    pub hostile_hold: Duration,
    /// How long to wait for recovery after a fault before calling it failed.
    pub recovery_budget: Duration,
    /// The healthy window that counts as recovered.
    pub healthy_window: Duration,
    pub faults: Vec<Fault>,
    pub burst: Burst,
}

/// One row of the table.
#[derive(Clone, Debug, Default)]
pub struct Row {
    pub name: String,
    pub applied: bool,
    pub note: String,
    pub flows: usize,
    pub ok: usize,
    pub client_err: usize,
    pub server_err: usize,
    pub transport_err: usize,
    pub undeclared: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub wrong_state: usize,
    pub unreadable: usize,
    /// Seconds from the end of the fault to a healthy window; `None` when
    /// it never came within the budget.
    pub recovery_s: Option<f64>,
    pub p99_ms: f64,
    pub leaks: usize,
    /// Ordinary flows started during the fault that were healthy, of all.
    pub normal_healthy: (usize, usize),
}

pub struct MatrixReport {
    pub rows: Vec<Row>,
    pub burst: Option<BurstReport>,
    pub details: Vec<String>,
    /// Binds retried with their Idempotency-Key after an ambiguous answer
    /// and refused 409 or 429 (see docs/operations.md).
    pub retry_conflicts: usize,
    pub service_alive: bool,
    pub log_path: PathBuf,
    pub secrets: usize,
}

impl MatrixReport {
    /// Why the run fails; empty when every must-be-0 figure is 0.
    pub fn failures(&self, hostile_hold: Duration) -> Vec<String> {
        let mut f = Vec::new();
        if !self.service_alive {
            f.push("the service process died".into());
        }
        for r in &self.rows {
            for (what, n) in [
                ("undeclared statuses", r.undeclared),
                ("lost bindings", r.lost),
                ("duplicated bindings", r.duplicated),
                ("bindings in a wrong state", r.wrong_state),
                ("unreadable card lists", r.unreadable),
                ("log lines with card data", r.leaks),
            ] {
                if n > 0 {
                    f.push(format!("{}: {n} {what}", r.name));
                }
            }
            if r.applied && r.recovery_s.is_none() {
                f.push(format!("{}: no recovery within the budget", r.name));
            }
        }
        if let Some(b) = &self.burst {
            if b.protocol_unexpected > 0 {
                f.push(format!(
                    "hostile-burst: {} unexpected protocol-level answers {:?}",
                    b.protocol_unexpected, b.protocol
                ));
            }
            // The header deadline is 10 s by default: with a burst longer
            // than it (and a margin), no slow-loris may survive it.
            if hostile_hold >= Duration::from_secs(13) && b.slow_loris_open_at_end > 0 {
                f.push(format!(
                    "hostile-burst: {} slow-loris connections outlived the header deadline",
                    b.slow_loris_open_at_end
                ));
            }
            if let Some(r) = self.rows.iter().find(|r| r.name == Fault::Hostile.name()) {
                let (h, n) = r.normal_healthy;
                if n > 0 && (h as f64) < 0.9 * n as f64 {
                    f.push(format!(
                        "hostile-burst: only {h} of {n} ordinary flows were served normally during the burst"
                    ));
                }
            }
        }
        f
    }

    pub fn table(&self) -> String {
        let mut t = String::new();
        t.push_str("| fault | flows | 2xx / 4xx / 5xx / transport | undeclared | lost | duplicated | wrong state | recovery | p99 during | healthy ordinary flows | card data in logs |\n");
        t.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
        for r in &self.rows {
            let rec = match (r.applied, r.recovery_s) {
                (false, _) => "n/a".to_owned(),
                (true, Some(s)) => format!("{s:.1} s"),
                (true, None) => "NOT RECOVERED".to_owned(),
            };
            t.push_str(&format!(
                "| {}{} | {} | {} / {} / {} / {} | {} | {} | {} | {} | {} | {:.0} ms | {} / {} | {} |\n",
                r.name,
                if r.note.is_empty() { String::new() } else { format!(" ({})", r.note) },
                r.flows,
                r.ok,
                r.client_err,
                r.server_err,
                r.transport_err,
                r.undeclared,
                r.lost,
                r.duplicated,
                r.wrong_state,
                rec,
                r.p99_ms,
                r.normal_healthy.0,
                r.normal_healthy.1,
                r.leaks
            ));
        }
        if let Some(b) = &self.burst {
            t.push_str(&format!(
                "\nhostile burst: {} malformed requests to operations; protocol-level answers {:?}; slow-loris longest held {:.1} s, {} still open at the end; trickled bodies {:?}; flood {} connections opened, {} closed by the server\n",
                b.malformed_sent,
                b.protocol,
                b.slow_loris_longest_ms as f64 / 1000.0,
                b.slow_loris_open_at_end,
                b.slow_bodies,
                b.flood_opened,
                b.flood_closed_by_server
            ));
        }
        t.push_str(&format!(
            "\nbinds retried with the same Idempotency-Key after an ambiguous answer and refused (409 card_already_bound, 429): {}\n",
            self.retry_conflicts
        ));
        t.push_str(&format!(
            "\nservice log: {} ({} secrets searched)\n",
            self.log_path.display(),
            self.secrets
        ));
        t
    }
}

/// Counts log lines holding registered card data, per byte range.
fn scan_leaks(paths: &[PathBuf], ranges: &[(u64, u64)]) -> Vec<usize> {
    let mut out = vec![0; ranges.len()];
    for (pi, path) in paths.iter().enumerate() {
        let Ok(bytes) = std::fs::read(path) else {
            continue;
        };
        // Only the service's log is split by phase; any other log's hits
        // count in the last row.
        let mut offset = 0u64;
        for line in bytes.split(|b| *b == b'\n') {
            let at = offset;
            offset += line.len() as u64 + 1;
            let text = String::from_utf8_lossy(line);
            if SECRETS.find_in(&text).is_none() {
                continue;
            }
            let idx = if pi == 0 {
                ranges
                    .iter()
                    .position(|(s, e)| at >= *s && at < *e)
                    .unwrap_or(ranges.len() - 1)
            } else {
                ranges.len() - 1
            };
            out[idx] += 1;
        }
    }
    out
}

fn file_len(p: &PathBuf) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Starts what the options ask for: the storage, the KMS proxy and the service.
pub struct Stack {
    pub ferret: Option<OwnFerretDb>,
    pub proxy: Option<Proxy>,
    pub service: crate::service::Service,
}

pub async fn start_stack(o: &Options) -> anyhow::Result<Stack> {
    std::fs::create_dir_all(&o.dir)?;
    let mut ferret = None;
    let storage = match &o.storage {
        StorageChoice::Memory => Storage::Memory,
        StorageChoice::Sqlite => Storage::Sqlite,
        StorageChoice::Mongo(uri) => Storage::Mongo(uri.clone()),
        StorageChoice::Custom => Storage::Custom,
        StorageChoice::OwnFerretDb => {
            let f = OwnFerretDb::start(&o.dir).await?;
            let uri = f.uri();
            ferret = Some(f);
            Storage::Mongo(uri)
        }
    };
    let mut proxy = None;
    let kms = match &o.kms_endpoint {
        Some(ep) => {
            let key = create_kms_key(ep).await?;
            let p = Proxy::start(socket_addr_of(ep)?).await?;
            let endpoint = p.endpoint();
            proxy = Some(p);
            Some((endpoint, key))
        }
        None => None,
    };
    let spec = ServiceSpec {
        bin: o.bin.clone(),
        dir: o.dir.clone(),
        storage,
        kms,
        sets: o.sets.clone(),
        log_filter: o.log_filter.clone(),
        jwt_secret: None,
    };
    let service = spec.start().await?;
    Ok(Stack {
        ferret,
        proxy,
        service,
    })
}

pub async fn fetch_spec(base: &str) -> anyhow::Result<Spec> {
    let doc: serde_json::Value = reqwest::get(format!("{base}/openapi.json"))
        .await?
        .json()
        .await
        .context("the service's /openapi.json")?;
    Spec::from_json(&doc)
}

/// Runs the matrix.
pub async fn run(o: &Options) -> anyhow::Result<MatrixReport> {
    let mut stack = start_stack(o).await?;
    let spec = fetch_spec(&stack.service.base_url).await?;
    let rec = Arc::new(Recorder::new(spec));
    let api = Arc::new(Api::new(
        &stack.service.base_url,
        &stack.service.token,
        rec.clone(),
    )?);
    let log = stack.service.log_path.clone();
    let max_in_flight = ((o.rate * 20.0) as usize).max(20);
    let mut wl = Workload::start(api.clone(), o.rate, max_in_flight);

    // Phase 0: baseline; phase i: fault i-1; the last: the reconciliation.
    let mut rows = vec![Row {
        name: "baseline".into(),
        ..Row::default()
    }];
    let mut windows = vec![(0u64, 0u64)]; // fault start/end per phase, ms
    let mut log_ranges = vec![(0u64, 0u64)];
    let mut burst = None;
    let mut details = Vec::new();
    tokio::time::sleep(o.baseline).await;
    windows[0] = (0, rec.now_ms());

    for (i, fault) in o.faults.iter().copied().enumerate() {
        let phase = i + 1;
        if let Some(r) = log_ranges.last_mut() {
            r.1 = file_len(&log);
        }
        log_ranges.push((file_len(&log), u64::MAX));
        rec.set_phase(phase);
        let mut row = Row {
            name: fault.name().into(),
            applied: true,
            ..Row::default()
        };
        let t_start = rec.now_ms();
        eprintln!("faults: {} starts", fault.name());
        match fault {
            Fault::Ferretdb => match &stack.ferret {
                Some(f) => {
                    f.kill().await?;
                    tokio::time::sleep(o.hold).await;
                    f.restart().await?;
                }
                None => {
                    row.applied = false;
                    row.note = "needs --storage ferretdb".into();
                    tokio::time::sleep(o.hold).await;
                }
            },
            Fault::Kms => match &stack.proxy {
                Some(p) => {
                    p.cut();
                    tokio::time::sleep(o.hold).await;
                    p.restore();
                }
                None => {
                    row.applied = false;
                    row.note = "needs --kms-endpoint".into();
                    tokio::time::sleep(o.hold).await;
                }
            },
            Fault::ChannelSlow | Fault::ChannelFailing | Fault::ChannelTimeout => {
                let kind = match fault {
                    Fault::ChannelSlow => Kind::Slow,
                    Fault::ChannelFailing => Kind::Flaky,
                    _ => Kind::Timeout,
                };
                wl.set_mix(Mix {
                    special: Some((kind, 0.5)),
                    ..Mix::default()
                });
                tokio::time::sleep(o.hold).await;
                wl.set_mix(Mix::default());
            }
            Fault::Hostile => {
                let b = Burst {
                    hold: o.hostile_hold,
                    ..o.burst
                };
                burst = Some(crate::hostile::run(api.clone(), stack.service.addr, b).await);
            }
        }
        let t_end = rec.now_ms();
        eprintln!("faults: {} ends; waiting for recovery", fault.name());
        // Recovery: poll the flows finished so far.
        let budget_end = Instant::now() + o.recovery_budget;
        let window = u64::try_from(o.healthy_window.as_millis()).unwrap_or(3000);
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let flows = wl.flows();
            let active: Vec<(u64, Kind)> = wl
                .active
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .copied()
                .collect();
            if let Some(at) = workload::recovered_at(&flows, &active, t_end, window) {
                row.recovery_s = Some(at.saturating_sub(t_end) as f64 / 1000.0);
                break;
            }
            if Instant::now() >= budget_end {
                break;
            }
        }
        if !row.applied {
            row.recovery_s = Some(0.0);
        }
        windows.push((t_start, t_end));
        rows.push(row);
    }
    if let Some(r) = log_ranges.last_mut() {
        r.1 = u64::MAX;
    }

    eprintln!("faults: stopping the workload, reconciling");
    wl.stop(Duration::from_secs(90)).await;
    let reconcile_phase = rows.len();
    rec.set_phase(reconcile_phase);
    let flows = wl.flows();
    let retry_conflicts = flows.iter().filter(|f| f.bind_retry_conflict).count();
    let samples = rec.samples();
    let undeclared = rec.undeclared();
    for (p, row) in rows.iter_mut().enumerate() {
        let mine: Vec<_> = flows.iter().filter(|f| f.phase == p).cloned().collect();
        row.flows = mine.len();
        let r = workload::reconcile(&api, reconcile_phase, &mine).await;
        row.lost = r.lost;
        row.duplicated = r.duplicated;
        row.wrong_state = r.wrong_state;
        row.unreadable = r.unreadable;
        details.extend(r.details.into_iter().map(|d| format!("{}: {d}", row.name)));
        let (ws, we) = windows[p];
        let during: Vec<f64> = samples
            .iter()
            .filter(|s| s.phase == p && s.at_ms >= ws && s.at_ms <= we)
            .map(|s| s.took_ms)
            .collect();
        row.p99_ms = quantile(during, 0.99);
        for s in samples.iter().filter(|s| s.phase == p) {
            match s.status {
                Some(c) if c < 400 => row.ok += 1,
                Some(c) if c < 500 => row.client_err += 1,
                Some(_) => row.server_err += 1,
                None => row.transport_err += 1,
            }
        }
        let normal: Vec<_> = mine
            .iter()
            .filter(|f| f.kind == Kind::Normal && f.started_ms >= ws && f.started_ms <= we)
            .collect();
        row.normal_healthy = (normal.iter().filter(|f| f.healthy).count(), normal.len());
        row.undeclared = undeclared.iter().filter(|u| u.phase == p).count();
    }
    for u in &undeclared {
        details.push(format!(
            "undeclared: phase {} {} {} answered {} ({:?})",
            u.phase, u.method, u.operation, u.status, u.code
        ));
    }
    // Reconciliation-time answers count too.
    let late = undeclared
        .iter()
        .filter(|u| u.phase >= reconcile_phase)
        .count();
    if let Some(last) = rows.last_mut() {
        last.undeclared += late;
    }

    let service_alive = stack.service.alive();
    let log_path = stack.service.log_path.clone();
    stack.service.stop(Duration::from_secs(35)).await;
    let mut logs = vec![log_path.clone()];
    if let Some(f) = &stack.ferret {
        logs.push(f.log_path());
        f.stop().await;
    }
    let leaks = scan_leaks(&logs, &log_ranges);
    for (row, n) in rows.iter_mut().zip(leaks) {
        row.leaks = n;
    }
    drop(stack.proxy.take());
    Ok(MatrixReport {
        rows,
        burst,
        details,
        retry_conflicts,
        service_alive,
        log_path,
        secrets: SECRETS.count(),
    })
}
