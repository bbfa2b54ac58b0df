//! The processors' own Prometheus metrics (`docs/metrics.md`), registered
//! under `tollgate_process_` and served by the binary's metrics listener:
//! per fold, messages read, batch sizes, ClickHouse insert latency and
//! failed attempts, dead letters; per consumer fold and partition of the
//! events topic, the consumer lag its lag sampler measures
//! ([`crate::health`]; the calls fold's also goes to `pipeline_health`).
//!
//! The consumer loop updates a [`FoldMetrics`] (handles of one fold's
//! series: an atomic add each); nothing here blocks or allocates per
//! message.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FoldLabels {
    pub fold: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub fold: String,
    pub group: String,
    pub partition: i32,
}

type HistogramFamily = Family<FoldLabels, Histogram, fn() -> Histogram>;

/// Rows per insert: 1 to 100k.
fn batch_rows_histogram() -> Histogram {
    Histogram::new([
        1.0, 10.0, 100.0, 500.0, 1_000.0, 5_000.0, 10_000.0, 20_000.0, 50_000.0, 100_000.0,
    ])
}

/// Insert latency: 1 ms to 10 s.
fn insert_seconds_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

/// Every processor metric of one `tollgate process`.
#[derive(Debug)]
pub struct ProcessMetrics {
    messages: Family<FoldLabels, Counter>,
    rows_inserted: Family<FoldLabels, Counter>,
    batch_rows: HistogramFamily,
    insert_duration: HistogramFamily,
    insert_errors: Family<FoldLabels, Counter>,
    dead_letters: Family<FoldLabels, Counter>,
    events_repeated: Family<FoldLabels, Counter>,
    consumer_restarts: Family<FoldLabels, Counter>,
    consumer_lag: Family<PartitionLabels, Gauge>,
    price_versions: Gauge,
}

impl Default for ProcessMetrics {
    fn default() -> Self {
        Self {
            messages: Family::default(),
            rows_inserted: Family::default(),
            batch_rows: Family::new_with_constructor(batch_rows_histogram),
            insert_duration: Family::new_with_constructor(insert_seconds_histogram),
            insert_errors: Family::default(),
            dead_letters: Family::default(),
            events_repeated: Family::default(),
            consumer_restarts: Family::default(),
            consumer_lag: Family::default(),
            price_versions: Gauge::default(),
        }
    }
}

impl ProcessMetrics {
    /// Register every metric in `registry` (the binary passes the one it
    /// serves, prefixed `tollgate_process`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "messages",
            "Messages of the events topic a fold read (stored, skipped, dead-lettered or without a row)",
            self.messages.clone(),
        );
        registry.register(
            "rows_inserted",
            "Rows a fold inserted into ClickHouse",
            self.rows_inserted.clone(),
        );
        registry.register(
            "batch_rows",
            "Rows per ClickHouse insert of a fold (one flushed batch of one table partition)",
            self.batch_rows.clone(),
        );
        registry.register(
            "insert_duration_seconds",
            "Time of one successful ClickHouse insert of a fold, with its progress write",
            self.insert_duration.clone(),
        );
        registry.register(
            "insert_errors",
            "ClickHouse insert attempts of a fold that failed (each is retried)",
            self.insert_errors.clone(),
        );
        registry.register(
            "dead_letters",
            "Messages a fold wrote to the dead-letter topic",
            self.dead_letters.clone(),
        );
        registry.register(
            "events_repeated",
            "Copies of an event a fold left out: their event_id was among the last processor.recent_event_ids_per_partition ids of their partition",
            self.events_repeated.clone(),
        );
        registry.register(
            "consumer_restarts",
            "Kafka consumers a fold closed and replaced because it stalled (nothing consumed or stored while events waited) for processor.stall_restart_secs",
            self.consumer_restarts.clone(),
        );
        registry.register(
            "consumer_lag_messages",
            "Messages of an events-topic partition this process owns that a consumer fold has not stored yet (high watermark minus stored position), per fold and consumer group; sampled every processor.health_sample_secs",
            self.consumer_lag.clone(),
        );
        registry.register(
            "price_versions",
            "Price versions in the catalog the calls fold prices with (changes when a reload after a price change took)",
            self.price_versions.clone(),
        );
    }

    /// The calls fold's catalog now holds `versions` price versions.
    pub fn set_price_versions(&self, versions: usize) {
        self.price_versions
            .set(i64::try_from(versions).unwrap_or(i64::MAX));
    }

    /// `tollgate_process_events_repeated_total{fold}` alone, for the
    /// breakers: they insert no rows, so the other series of
    /// [`ProcessMetrics::fold`] would only read 0.
    pub fn events_repeated(&self, fold: &str) -> Counter {
        self.events_repeated.get_or_create_owned(&FoldLabels {
            fold: fold.to_string(),
        })
    }

    /// The lag and the replacements of a reader that is no group's
    /// consumer (the breakers'), without the fold series it would only
    /// read 0 in.
    pub fn reader_watch(&self, fold: &str) -> (ConsumerLag, Counter) {
        let labels = FoldLabels {
            fold: fold.to_string(),
        };
        (
            ConsumerLag {
                family: self.consumer_lag.clone(),
                fold: fold.to_string(),
            },
            self.consumer_restarts.get_or_create_owned(&labels),
        )
    }

    /// The handles one fold's consumer loop updates.
    pub fn fold(&self, fold: &str) -> FoldMetrics {
        let labels = FoldLabels {
            fold: fold.to_string(),
        };
        FoldMetrics {
            messages: self.messages.get_or_create_owned(&labels),
            rows_inserted: self.rows_inserted.get_or_create_owned(&labels),
            batch_rows: self.batch_rows.get_or_create_owned(&labels),
            insert_duration: self.insert_duration.get_or_create_owned(&labels),
            insert_errors: self.insert_errors.get_or_create_owned(&labels),
            dead_letters: self.dead_letters.get_or_create_owned(&labels),
            events_repeated: self.events_repeated.get_or_create_owned(&labels),
            consumer_restarts: self.consumer_restarts.get_or_create_owned(&labels),
            consumer_lag: ConsumerLag {
                family: self.consumer_lag.clone(),
                fold: fold.to_string(),
            },
        }
    }
}

/// One consumer fold's lag series, one per partition it owns.
#[derive(Debug, Clone)]
pub struct ConsumerLag {
    family: Family<PartitionLabels, Gauge>,
    fold: String,
}

impl ConsumerLag {
    fn labels(&self, group: &str, partition: i32) -> PartitionLabels {
        PartitionLabels {
            fold: self.fold.clone(),
            group: group.to_string(),
            partition,
        }
    }

    /// The lag of every partition `group` owns now; partitions of
    /// `previous` it no longer owns leave the exposition.
    pub fn set(&self, group: &str, lags: &[(i32, u64)], previous: &[i32]) {
        for partition in previous {
            if !lags.iter().any(|(p, _)| p == partition) {
                self.family.remove(&self.labels(group, *partition));
            }
        }
        for (partition, lag) in lags {
            self.family
                .get_or_create(&self.labels(group, *partition))
                .set(i64::try_from(*lag).unwrap_or(i64::MAX));
        }
    }
}

/// One fold's series.
#[derive(Debug, Clone)]
pub struct FoldMetrics {
    pub messages: Counter,
    pub rows_inserted: Counter,
    pub batch_rows: Histogram,
    pub insert_duration: Histogram,
    pub insert_errors: Counter,
    pub dead_letters: Counter,
    pub events_repeated: Counter,
    pub consumer_restarts: Counter,
    pub consumer_lag: ConsumerLag,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use prometheus_client::encoding::prometheus_text::encode;

    fn exposition(m: &ProcessMetrics) -> String {
        let mut registry = Registry::with_prefix("tollgate_process");
        m.register(&mut registry);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        text
    }

    #[test]
    fn fold_series_and_partition_lag_are_exposed_with_their_types() {
        let m = ProcessMetrics::default();
        let calls = m.fold("calls");
        calls.messages.inc_by(12);
        calls.batch_rows.observe(12.0);
        calls.insert_duration.observe(0.004);
        calls.insert_errors.inc();
        calls.dead_letters.inc_by(2);
        calls.events_repeated.inc_by(3);
        calls.consumer_lag.set("g", &[(0, 5), (1, 0)], &[]);
        m.fold("audit").consumer_lag.set("g-audit", &[(0, 2)], &[]);
        m.events_repeated("breakers").inc_by(4);
        m.set_price_versions(41);
        let text = exposition(&m);
        // The breakers have their copies counted and no other fold series.
        assert!(
            !text.contains("tollgate_process_messages_total{fold=\"breakers\"}"),
            "{text}"
        );
        for line in [
            "# TYPE tollgate_process_messages_total counter",
            "tollgate_process_messages_total{fold=\"calls\"} 12",
            "# TYPE tollgate_process_batch_rows histogram",
            "tollgate_process_batch_rows_bucket{fold=\"calls\",le=\"10\"} 0",
            "tollgate_process_batch_rows_bucket{fold=\"calls\",le=\"100\"} 1",
            "tollgate_process_batch_rows_count{fold=\"calls\"} 1",
            "# TYPE tollgate_process_insert_duration_seconds histogram",
            "tollgate_process_insert_duration_seconds_bucket{fold=\"calls\",le=\"0.0025\"} 0",
            "tollgate_process_insert_duration_seconds_bucket{fold=\"calls\",le=\"0.005\"} 1",
            "tollgate_process_insert_errors_total{fold=\"calls\"} 1",
            "tollgate_process_dead_letters_total{fold=\"calls\"} 2",
            "# TYPE tollgate_process_events_repeated_total counter",
            "tollgate_process_events_repeated_total{fold=\"calls\"} 3",
            "tollgate_process_events_repeated_total{fold=\"breakers\"} 4",
            "# TYPE tollgate_process_consumer_lag_messages gauge",
            "tollgate_process_consumer_lag_messages{fold=\"calls\",group=\"g\",partition=\"0\"} 5",
            "tollgate_process_consumer_lag_messages{fold=\"calls\",group=\"g\",partition=\"1\"} 0",
            "tollgate_process_consumer_lag_messages{fold=\"audit\",group=\"g-audit\",partition=\"0\"} 2",
            "# TYPE tollgate_process_price_versions gauge",
            "tollgate_process_price_versions 41",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }

    #[test]
    fn a_revoked_partition_leaves_the_exposition() {
        let m = ProcessMetrics::default();
        let lag = m.fold("calls").consumer_lag;
        lag.set("g", &[(0, 5), (1, 3)], &[]);
        lag.set("g", &[(1, 0)], &[0, 1]);
        let text = exposition(&m);
        assert!(!text.contains("partition=\"0\""), "{text}");
        assert!(text.contains(
            "tollgate_process_consumer_lag_messages{fold=\"calls\",group=\"g\",partition=\"1\"} 0"
        ));
    }
}
