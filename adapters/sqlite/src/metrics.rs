//! The writer's counters as Prometheus metrics, read at each collection:
//! * `cardbind_sqlite_writer_transactions_total`: transactions the writer
//!   ran (its groups), committed or rolled back;
//! * `cardbind_sqlite_writer_writes_total`: writes run in them (`writes /
//!   transactions` is how many writes shared a commit);
//! * `cardbind_sqlite_writer_busy_seconds_total`: time the writer spent
//!   running them (not the vacuum or WAL truncation it runs between them).
//!   Its rate is the share of the time the one writer was at work: near 1,
//!   writes queue on it and the store bounds the service's write
//!   throughput;
//! * `cardbind_sqlite_writer_transaction_seconds`: a histogram of how long
//!   each transaction took (as the busy time, without the vacuum or WAL
//!   truncation after a purge or an erasure). A group takes well under a
//!   millisecond; the ones at which the WAL starts over take 70–175 ms
//!   (the writer copies what the checkpointer had not; measured with
//!   sequential and random user ids), and its buckets above 0.05 s count
//!   them (they come once per `storage.wal_mib` of WAL written);
//! * `cardbind_sqlite_database_bytes`: the database's size, its free
//!   pages included (the file once the WAL is copied into it), and
//!   `cardbind_sqlite_free_bytes`: its free pages, freed by deletions
//!   (the retention purge, an erasure) and taken by later writes before
//!   the file grows; an offline `VACUUM` gives them back. Read by the
//!   checkpointer once a second, so a scrape may be a second behind;
//! * `cardbind_sqlite_max_bytes`: the most the database may take
//!   (`storage.max_size_mib`), only when a bound is set: past it writes
//!   are refused. `database_bytes - free_bytes` over it is how full the
//!   store is.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Counter, IntCounter, IntGauge, Registry};

use crate::engine::Counters;
use crate::WriterStats;

/// The three counters, brought up to the writer's own at each collection
/// (the histogram is the writer's own, collected as it is), and the size
/// gauges, set to the checkpointer's last reading.
/// The lock keeps two concurrent scrapes from adding the same difference
/// twice.
struct WriterMetrics {
    counters: Arc<Counters>,
    exported: Mutex<Exported>,
    descs: Vec<Desc>,
}

struct Exported {
    transactions: IntCounter,
    writes: IntCounter,
    busy: Counter,
    database: IntGauge,
    free: IntGauge,
    /// Only with a bound on the database's size.
    max: Option<IntGauge>,
}

impl Exported {
    /// Every exported metric but the histogram, in the order they are
    /// described and collected.
    fn each(&self) -> Vec<&dyn Collector> {
        let mut all: Vec<&dyn Collector> = vec![
            &self.transactions,
            &self.writes,
            &self.busy,
            &self.database,
            &self.free,
        ];
        if let Some(max) = &self.max {
            all.push(max);
        }
        all
    }
}

/// A byte count as a gauge's value (saturating: no store is that large).
fn gauge_value(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

impl WriterMetrics {
    fn new(counters: Arc<Counters>) -> Result<WriterMetrics, prometheus::Error> {
        let exported = Exported {
            transactions: IntCounter::new(
                "cardbind_sqlite_writer_transactions_total",
                "Transactions the embedded store's writer ran, each holding one or more writes.",
            )?,
            writes: IntCounter::new(
                "cardbind_sqlite_writer_writes_total",
                "Writes the embedded store's writer ran; divided by the transactions, how many shared a commit.",
            )?,
            busy: Counter::new(
                "cardbind_sqlite_writer_busy_seconds_total",
                "Seconds the embedded store's writer spent running transactions; a rate near 1 means writes queue on it.",
            )?,
            database: IntGauge::new(
                "cardbind_sqlite_database_bytes",
                "Bytes the embedded store's database takes, its free pages included; read once a second.",
            )?,
            free: IntGauge::new(
                "cardbind_sqlite_free_bytes",
                "Bytes of free pages in the embedded store's database: freed by deletions, taken by later writes before the file grows.",
            )?,
            max: match counters.max_bytes.load(Ordering::Relaxed) {
                0 => None,
                max => {
                    let gauge = IntGauge::new(
                        "cardbind_sqlite_max_bytes",
                        "The most bytes the embedded store's database may take (storage.max_size_mib); past it writes are refused.",
                    )?;
                    gauge.set(gauge_value(max));
                    Some(gauge)
                }
            },
        };
        let descs = exported
            .each()
            .into_iter()
            .flat_map(|c| c.desc())
            .cloned()
            .collect();
        Ok(WriterMetrics {
            counters,
            exported: Mutex::new(exported),
            descs,
        })
    }
}

impl Collector for WriterMetrics {
    fn desc(&self) -> Vec<&Desc> {
        let durations = self.counters.group_seconds.iter().flat_map(|h| h.desc());
        self.descs.iter().chain(durations).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let now = WriterStats::of(&self.counters);
        let e = self.exported.lock().unwrap_or_else(PoisonError::into_inner);
        // The writer's counters only grow: each exported counter is raised
        // by what it lacks.
        e.transactions
            .inc_by(now.groups.saturating_sub(e.transactions.get()));
        e.writes.inc_by(now.writes.saturating_sub(e.writes.get()));
        let busy = now.busy.as_secs_f64() - e.busy.get();
        if busy > 0.0 {
            e.busy.inc_by(busy);
        }
        e.database.set(gauge_value(
            self.counters.database_bytes.load(Ordering::Relaxed),
        ));
        e.free.set(gauge_value(
            self.counters.free_bytes.load(Ordering::Relaxed),
        ));
        // The histogram is the writer's own, observed at each transaction.
        let durations = self.counters.group_seconds.iter().flat_map(|h| h.collect());
        e.each()
            .into_iter()
            .flat_map(|c| c.collect())
            .chain(durations)
            .collect()
    }
}

/// Registers the writer's metrics of `counters` into `registry`.
pub(crate) fn register(
    counters: Arc<Counters>,
    registry: &Registry,
) -> Result<(), prometheus::Error> {
    registry.register(Box::new(WriterMetrics::new(counters)?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use cardbind_domain::Timestamp;
    use cardbind_ports::store::{RateLimiter, RateWindow};

    use crate::{SqliteOptions, SqliteStore};

    /// The value of the unlabelled sample `name` in the registry's text.
    fn sample(registry: &prometheus::Registry, name: &str) -> f64 {
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} not exported in:\n{text}"))
    }

    /// A new store whose writer's metrics are registered in a registry of
    /// their own (the directory lives as long as it is held).
    fn registered() -> (tempfile::TempDir, SqliteStore, prometheus::Registry) {
        let dir = tempfile::tempdir().unwrap();
        let store =
            SqliteStore::open(dir.path().join("s.sqlite3"), SqliteOptions::default()).unwrap();
        let registry = prometheus::Registry::new();
        store.register_metrics(&registry).unwrap();
        (dir, store, registry)
    }

    /// `n` writes, each awaited before the next.
    async fn take_windows(store: &SqliteStore, n: usize) {
        let now = Timestamp::from_unix_millis(1_000_000);
        for i in 0..n {
            let w = RateWindow {
                key: format!("k{i}"),
                limit: 3,
                expires_at: Timestamp::from_unix_millis(2_000_000),
            };
            store.take(&[w], now).await.unwrap();
        }
    }

    #[tokio::test]
    async fn the_writers_counters_are_exported_as_they_are_at_each_scrape() {
        let (_dir, store, registry) = registered();
        let groups =
            |r: &prometheus::Registry| sample(r, "cardbind_sqlite_writer_transactions_total");
        let writes = |r: &prometheus::Registry| sample(r, "cardbind_sqlite_writer_writes_total");
        let busy =
            |r: &prometheus::Registry| sample(r, "cardbind_sqlite_writer_busy_seconds_total");
        let before = (groups(&registry), writes(&registry), busy(&registry));
        take_windows(&store, 5).await;
        let stats = store.writer_stats();
        // Five writes, run one after another: five more each, and the time.
        assert_eq!(writes(&registry) - before.1, 5.0);
        assert_eq!(writes(&registry), stats.writes as f64);
        assert_eq!(groups(&registry), stats.groups as f64);
        assert!(groups(&registry) - before.0 >= 1.0);
        assert!(busy(&registry) > before.2);
        assert!((busy(&registry) - stats.busy.as_secs_f64()).abs() < 1e-9);
        // Scrapes again, with nothing written between: the same values.
        for _ in 0..2 {
            assert_eq!(writes(&registry), stats.writes as f64);
            assert_eq!(groups(&registry), stats.groups as f64);
            assert!((busy(&registry) - stats.busy.as_secs_f64()).abs() < 1e-9);
        }
        // Registered once per registry.
        assert!(store.register_metrics(&registry).is_err());
    }

    /// Each transaction lands in one bucket of the histogram, which counts
    /// as many as the transactions counter and sums the busy time; its
    /// buckets are the fixed ones, from half a millisecond to a second.
    #[tokio::test]
    async fn each_transaction_is_timed_in_the_histogram() {
        let (_dir, store, registry) = registered();
        take_windows(&store, 7).await;
        let stats = store.writer_stats();
        let name = "cardbind_sqlite_writer_transaction_seconds";
        let count = sample(&registry, &format!("{name}_count"));
        assert_eq!(count, stats.groups as f64);
        assert!(count >= 7.0, "{count}");
        let sum = sample(&registry, &format!("{name}_sum"));
        assert!(
            (sum - stats.busy.as_secs_f64()).abs() < 1e-6,
            "{sum} {stats:?}"
        );
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        let buckets: Vec<(String, f64)> = text
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(&format!("{name}_bucket{{le=\""))?;
                let (le, value) = rest.split_once("\"} ")?;
                Some((le.to_owned(), value.parse().ok()?))
            })
            .collect();
        let bounds = [
            "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5",
            "1", "+Inf",
        ];
        assert_eq!(
            buckets
                .iter()
                .map(|(le, _)| le.as_str())
                .collect::<Vec<_>>(),
            bounds
        );
        // Cumulative, ending at the count.
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
        assert_eq!(buckets.last().map(|b| b.1), Some(count));
        // Described to the registry: another metric of its name is refused.
        let twin = prometheus::Histogram::with_opts(prometheus::HistogramOpts::new(name, "a twin"))
            .unwrap();
        assert!(registry.register(Box::new(twin)).is_err());
    }
}
