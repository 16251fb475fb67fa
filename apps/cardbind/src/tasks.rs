//! The runs of `serve`'s background tasks, counted for Prometheus.
//!
//! `cardbind_background_runs_total{task, outcome}`: each run of the
//! retention purge (`purge`), the audit log's anchoring (`audit_anchor`)
//! and the BIN table's refresh (`bin_refresh`), `ok` or `failed`. A failed
//! run is also a warn line, and the next run tries again; without a count
//! a task failing for days (retention not enforced, audit windows left
//! unanchored) showed in the logs alone. Both outcomes of every task are
//! exported at 0 from the start, so that an alert's `increase()` sees the
//! first failure and a task that never ran is told from one that failed.
//! The label is `task`, not `job`: Prometheus gives every series a `job`
//! label of its own (the scrape's).

use prometheus::{IntCounterVec, Opts, Registry};

/// A background task, as its label value names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// The retention purge (`server.purge_interval_seconds`).
    Purge,
    /// Anchoring the audit log's closed windows (`audit.anchor_*`).
    AuditAnchor,
    /// Picking up an imported BIN table (`bins.refresh_interval_seconds`).
    BinRefresh,
}

impl Task {
    pub const ALL: [Task; 3] = [Task::Purge, Task::AuditAnchor, Task::BinRefresh];

    pub fn as_str(self) -> &'static str {
        match self {
            Task::Purge => "purge",
            Task::AuditAnchor => "audit_anchor",
            Task::BinRefresh => "bin_refresh",
        }
    }
}

/// The counter of background runs. Cheap to clone; clones share it.
#[derive(Clone, Debug)]
pub struct TaskRuns {
    runs: IntCounterVec,
}

impl TaskRuns {
    /// The counter, registered into `registry`, every series at 0.
    pub fn registered(registry: &Registry) -> prometheus::Result<TaskRuns> {
        let runs = IntCounterVec::new(
            Opts::new(
                "cardbind_background_runs_total",
                "Runs of the background tasks (purge, audit_anchor, bin_refresh) by outcome: ok or failed",
            ),
            &["task", "outcome"],
        )?;
        for task in Task::ALL {
            for outcome in ["ok", "failed"] {
                runs.with_label_values(&[task.as_str(), outcome]);
            }
        }
        registry.register(Box::new(runs.clone()))?;
        Ok(TaskRuns { runs })
    }

    /// Counts one run of `task`.
    pub fn ran(&self, task: Task, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        if let Ok(c) = self
            .runs
            .get_metric_with_label_values(&[task.as_str(), outcome])
        {
            c.inc();
        }
    }

    /// Runs of `task` so far with `outcome` (`ok` or `failed`).
    pub fn count(&self, task: Task, outcome: &str) -> u64 {
        self.runs
            .get_metric_with_label_values(&[task.as_str(), outcome])
            .map(|c| c.get())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_series_is_exported_from_the_start_and_each_run_counts_once() {
        let registry = Registry::new();
        let runs = TaskRuns::registered(&registry).unwrap();
        let text = {
            use prometheus::Encoder;
            let mut buf = Vec::new();
            prometheus::TextEncoder::new()
                .encode(&registry.gather(), &mut buf)
                .unwrap();
            String::from_utf8(buf).unwrap()
        };
        for task in ["purge", "audit_anchor", "bin_refresh"] {
            for outcome in ["ok", "failed"] {
                let line = format!(
                    "cardbind_background_runs_total{{outcome=\"{outcome}\",task=\"{task}\"}} 0"
                );
                assert!(text.contains(&line), "{line} in\n{text}");
            }
        }
        runs.ran(Task::Purge, false);
        runs.ran(Task::Purge, true);
        runs.ran(Task::Purge, false);
        runs.ran(Task::BinRefresh, true);
        assert_eq!(runs.count(Task::Purge, "failed"), 2);
        assert_eq!(runs.count(Task::Purge, "ok"), 1);
        assert_eq!(runs.count(Task::BinRefresh, "ok"), 1);
        assert_eq!(runs.count(Task::AuditAnchor, "ok"), 0);
        // A second registration of the same name is refused, not doubled.
        assert!(TaskRuns::registered(&registry).is_err());
    }
}
