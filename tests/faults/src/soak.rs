//! The soak: the matrix's workload at a steady rate for a long time, no
//! faults, sampling the service's resident memory, open file descriptors
//! and p99 latency every interval.
//!
//! Tolerances (a run fails beyond them):
//! * memory: the last sample's RSS may exceed the first sample taken after
//!   the first interval (the warm-up) by at most
//!   `max(rss_growth_pct of it, rss_growth_mb)` plus `rss_per_flow_kb` for
//!   every flow started since (what a store that keeps data in the
//!   process, the memory store, legitimately grows by; 0 for an external
//!   store);
//! * file descriptors: at most `fd_growth` more than after the warm-up;
//! * p99: the lowest p99 of the last third of the intervals at most
//!   `p99_factor` times the median of the first third plus `p99_slack_ms`:
//!   growth is a slowdown that holds to the end, while one interval's
//!   stall (a disk flush on a shared machine: one write stalled for a
//!   second once in a CI run, the p99 of its 20 s interval 622 ms, every
//!   other interval 8–19 ms) is not;
//! * failures: at most `error_share` (1 %) of an interval's requests
//!   answered 5xx or not at all.

use std::time::{Duration, Instant};

use crate::matrix::{fetch_spec, start_stack, Options};
use crate::workload::{self, quantile, Api, Recorder, Workload};

#[derive(Clone, Debug)]
pub struct Tolerance {
    pub rss_growth_pct: f64,
    pub rss_growth_mb: f64,
    pub rss_per_flow_kb: f64,
    pub fd_growth: usize,
    pub p99_factor: f64,
    pub p99_slack_ms: f64,
    /// Share of an interval's requests that may fail (5xx or transport).
    pub error_share: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance {
            rss_growth_pct: 25.0,
            rss_growth_mb: 32.0,
            rss_per_flow_kb: 0.0,
            fd_growth: 32,
            p99_factor: 2.0,
            p99_slack_ms: 100.0,
            error_share: 0.01,
        }
    }
}

impl Tolerance {
    /// For the memory store, which keeps every binding, audit event,
    /// consent and idempotency record in the process: measured at about
    /// 10 KiB per flow over 30 minutes (docs/operations.md), allowed 16.
    pub fn memory_store() -> Tolerance {
        Tolerance {
            rss_per_flow_kb: 16.0,
            ..Tolerance::default()
        }
    }
}

#[derive(Clone, Debug)]
pub struct SoakSample {
    pub minute: f64,
    pub flows: usize,
    pub requests: usize,
    pub rss_mb: f64,
    pub fds: usize,
    pub p99_ms: f64,
    pub errors: usize,
}

pub struct SoakReport {
    pub samples: Vec<SoakSample>,
    pub failures: Vec<String>,
    pub lost: usize,
    pub duplicated: usize,
    pub wrong_state: usize,
    pub undeclared: usize,
    pub storage: String,
}

impl SoakReport {
    pub fn table(&self) -> String {
        let mut t = format!("soak on {}\n\n| minute | flows | requests | RSS | open fds | p99 | 5xx + transport |\n|---|---|---|---|---|---|---|\n", self.storage);
        for s in &self.samples {
            t.push_str(&format!(
                "| {:.1} | {} | {} | {:.1} MiB | {} | {:.0} ms | {} |\n",
                s.minute, s.flows, s.requests, s.rss_mb, s.fds, s.p99_ms, s.errors
            ));
        }
        t.push_str(&format!(
            "\nundeclared statuses {}, lost {}, duplicated {}, wrong state {}\n",
            self.undeclared, self.lost, self.duplicated, self.wrong_state
        ));
        if self.failures.is_empty() {
            t.push_str("within tolerance\n");
        } else {
            for f in &self.failures {
                t.push_str(&format!("FAIL: {f}\n"));
            }
        }
        t
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    quantile(std::mem::take(&mut v), 0.5)
}

/// Checks the samples against the tolerance.
pub fn judge(samples: &[SoakSample], tol: &Tolerance) -> Vec<String> {
    let mut f = Vec::new();
    if samples.len() < 3 {
        f.push(format!(
            "only {} samples: run longer or sample more often",
            samples.len()
        ));
        return f;
    }
    // Sample 0 is the end of the warm-up interval.
    let base = &samples[0];
    let last = &samples[samples.len() - 1];
    let flows = last.flows.saturating_sub(base.flows) as f64;
    let allowed = (base.rss_mb * tol.rss_growth_pct / 100.0).max(tol.rss_growth_mb)
        + flows * tol.rss_per_flow_kb / 1024.0;
    if last.rss_mb - base.rss_mb > allowed {
        f.push(format!(
            "RSS grew {:.1} MiB (from {:.1} to {:.1}), allowed {:.1}",
            last.rss_mb - base.rss_mb,
            base.rss_mb,
            last.rss_mb,
            allowed
        ));
    }
    if last.fds > base.fds + tol.fd_growth {
        f.push(format!(
            "open file descriptors grew from {} to {}",
            base.fds, last.fds
        ));
    }
    let third = (samples.len() / 3).max(1);
    let first = median(samples[..third].iter().map(|s| s.p99_ms).collect());
    let end = samples[samples.len() - third..]
        .iter()
        .map(|s| s.p99_ms)
        .fold(f64::INFINITY, f64::min);
    if end > first * tol.p99_factor + tol.p99_slack_ms {
        f.push(format!(
            "p99 grew from {first:.0} ms to {end:.0} ms (allowed {:.0})",
            first * tol.p99_factor + tol.p99_slack_ms
        ));
    }
    // Failed answers: a service that answers fast because it fails is not
    // within tolerance either.
    let mut before = 0usize;
    for s in samples {
        let requests = s.requests.saturating_sub(before);
        before = s.requests;
        if requests > 0 && s.errors as f64 > tol.error_share * requests as f64 {
            f.push(format!(
                "minute {:.1}: {} of {} requests failed (5xx or transport)",
                s.minute, s.errors, requests
            ));
        }
    }
    f
}

/// Runs the soak for `duration`, sampling every `interval`.
pub async fn run(
    o: &Options,
    duration: Duration,
    interval: Duration,
    tol: &Tolerance,
) -> anyhow::Result<SoakReport> {
    let mut stack = start_stack(o).await?;
    let spec = fetch_spec(&stack.service.base_url).await?;
    let rec = std::sync::Arc::new(Recorder::new(spec));
    let api = std::sync::Arc::new(Api::new(
        &stack.service.base_url,
        &stack.service.token,
        rec.clone(),
    )?);
    let mut wl = Workload::start(api.clone(), o.rate, ((o.rate * 40.0) as usize).max(50));
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut last_ms = 0u64;
    let mut failures = Vec::new();
    while started.elapsed() < duration {
        let left = duration.saturating_sub(started.elapsed());
        tokio::time::sleep(interval.min(left)).await;
        let now_ms = rec.now_ms();
        let all = rec.samples();
        let window: Vec<_> = all
            .iter()
            .filter(|s| s.at_ms >= last_ms && s.at_ms < now_ms)
            .collect();
        last_ms = now_ms;
        let s = SoakSample {
            minute: started.elapsed().as_secs_f64() / 60.0,
            flows: wl.flows().len() + wl.active.lock().map(|a| a.len()).unwrap_or(0),
            requests: all.len(),
            rss_mb: stack.service.rss_bytes().unwrap_or(0) as f64 / 1_048_576.0,
            fds: stack.service.open_fds().unwrap_or(0),
            p99_ms: quantile(window.iter().map(|s| s.took_ms).collect(), 0.99),
            errors: window
                .iter()
                .filter(|s| s.status.is_none_or(|c| c >= 500))
                .count(),
        };
        eprintln!(
            "soak: {:.1} min, {} flows, RSS {:.1} MiB, {} fds, p99 {:.0} ms, {} errors",
            s.minute, s.flows, s.rss_mb, s.fds, s.p99_ms, s.errors
        );
        samples.push(s);
        if !stack.service.alive() {
            failures.push("the service process died".to_owned());
            break;
        }
    }
    wl.stop(Duration::from_secs(60)).await;
    failures.extend(judge(&samples, tol));
    let flows = wl.flows();
    rec.set_phase(1);
    let r = workload::reconcile(&api, 1, &flows).await;
    let undeclared = rec.undeclared().len();
    for (what, n) in [
        ("undeclared statuses", undeclared),
        ("lost bindings", r.lost),
        ("duplicated bindings", r.duplicated),
        ("bindings in a wrong state", r.wrong_state),
        ("unreadable card lists", r.unreadable),
    ] {
        if n > 0 {
            failures.push(format!("{n} {what}"));
        }
    }
    for d in r.details.iter().take(20) {
        eprintln!("soak: {d}");
    }
    for u in rec.undeclared().iter().take(20) {
        eprintln!(
            "soak: undeclared {} {} answered {} ({:?})",
            u.method, u.operation, u.status, u.code
        );
    }
    stack.service.stop(Duration::from_secs(35)).await;
    if let Some(f) = &stack.ferret {
        f.stop().await;
    }
    Ok(SoakReport {
        samples,
        failures,
        lost: r.lost,
        duplicated: r.duplicated,
        wrong_state: r.wrong_state,
        undeclared,
        storage: match &o.storage {
            crate::matrix::StorageChoice::Memory => "memory".into(),
            crate::matrix::StorageChoice::Sqlite => "sqlite".into(),
            crate::matrix::StorageChoice::OwnFerretDb => "ferretdb".into(),
            crate::matrix::StorageChoice::Mongo(_) => "mongodb".into(),
            crate::matrix::StorageChoice::Custom => "custom (--set)".into(),
        },
    })
}
