//! The pipeline's health samples, the source of the `pipeline_health`
//! alert signal (`docs/alerting-signals.md`): each component writes its own
//! figures to the ClickHouse table `pipeline_health`
//! (`migrations/clickhouse/0033_pipeline_health.sql`) every few seconds,
//! from a background task, so a past instant can be read back.
//!
//! - `process`: consumer lag per Kafka partition (a gauge) and dead letters
//!   since the last sample (a count);
//! - `ingest`: events rejected since the last sample (a count);
//! - `proxy`: bytes in its event spool (a gauge).
//!
//! Straight to ClickHouse rather than through Kafka: the proxy spools
//! exactly while Kafka is away, and a figure about the pipeline should not
//! travel through the pipeline it describes.
//!
//! A sample never slows or fails the path it describes: the hot path only
//! adds to a [`Tally`] (an atomic), the [`HealthReporter`] task reads and
//! writes. A write that fails or takes longer than [`WRITE_TIMEOUT`] is
//! logged and counted, not retried: a gauge is superseded by the next
//! sample, and a count is added to the next sample of the same figure, so
//! an outage of ClickHouse delays counts rather than losing them. (A write
//! that timed out after the server stored it is then counted twice: counts
//! are at least once.)

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use clickhouse::{Client, Row};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tollgate_contract::alerts::PipelineMetric;

use crate::clickhouse::client;
use crate::config::ClickHouseConfig;

/// The table the samples go to.
pub const TABLE: &str = "pipeline_health";
/// The `kafka_partition` of a figure that has none.
pub const NO_PARTITION: i32 = -1;
/// How long one write may take before it is abandoned.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// One figure at the moment it was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub metric: PipelineMetric,
    /// The Kafka partition (consumer lag), else [`NO_PARTITION`].
    pub partition: i32,
    pub value: u64,
}

impl Sample {
    /// A figure of the whole component (no partition).
    pub fn whole(metric: PipelineMetric, value: u64) -> Self {
        Self {
            metric,
            partition: NO_PARTITION,
            value,
        }
    }

    /// A figure of one Kafka partition.
    pub fn of_partition(metric: PipelineMetric, partition: i32, value: u64) -> Self {
        Self {
            metric,
            partition,
            value,
        }
    }
}

/// Whether a figure is a count since the last sample (summed over a
/// window) rather than a gauge (its latest value counts).
pub fn is_count(metric: PipelineMetric) -> bool {
    matches!(
        metric,
        PipelineMetric::DeadLetters | PipelineMetric::RejectedIngest
    )
}

/// A count since the last sample: the hot path adds, the reporter takes.
#[derive(Debug, Default)]
pub struct Tally(AtomicU64);

impl Tally {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// What was added since the last take.
    pub fn take(&self) -> u64 {
        self.0.swap(0, Ordering::Relaxed)
    }
}

/// What a reporter did, for its owner's logs and tests.
#[derive(Debug, Default)]
pub struct ReporterStats {
    /// Writes ClickHouse acknowledged.
    pub written: AtomicU64,
    /// Writes that failed or timed out (their counts went to the next one).
    pub failed: AtomicU64,
}

#[derive(Debug, Row, Serialize)]
struct SampleRow<'a> {
    at: u32,
    at_ms: u64,
    component: &'a str,
    instance: &'a str,
    metric: &'a str,
    kafka_partition: i32,
    value: u64,
}

/// Writes one component's samples every `every`.
pub struct HealthReporter {
    client: Client,
    component: &'static str,
    instance: String,
    every: Duration,
    stats: Arc<ReporterStats>,
    /// Counts of a failed write, added to the next sample of the same
    /// figure.
    carried: BTreeMap<(&'static str, i32), u64>,
}

impl HealthReporter {
    /// A reporter for `component` (`process`, `ingest`, `proxy`) writing to
    /// the configured ClickHouse database.
    pub fn new(config: &ClickHouseConfig, component: &'static str, every: Duration) -> Self {
        Self {
            client: client(config),
            component,
            instance: instance_name(),
            every,
            stats: Arc::new(ReporterStats::default()),
            carried: BTreeMap::new(),
        }
    }

    pub fn stats(&self) -> Arc<ReporterStats> {
        self.stats.clone()
    }

    /// Every `every`, take the figures from `source` and write them, until
    /// `shutdown`; then take and write them once more (so the counts of the
    /// last interval are not lost on a clean stop).
    pub fn spawn<F, Fut>(mut self, mut source: F, shutdown: CancellationToken) -> JoinHandle<()>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Vec<Sample>> + Send,
    {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(self.every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            tracing::info!(
                component = self.component,
                instance = %self.instance,
                every_ms = u64::try_from(self.every.as_millis()).unwrap_or(u64::MAX),
                "pipeline health sampler started"
            );
            loop {
                let last = tokio::select! {
                    () = shutdown.cancelled() => true,
                    _ = ticks.tick() => false,
                };
                let samples = source().await;
                self.write(samples).await;
                if last {
                    return;
                }
            }
        })
    }

    async fn write(&mut self, mut samples: Vec<Sample>) {
        for s in &mut samples {
            if let Some(carried) = self.carried.remove(&(s.metric.as_str(), s.partition)) {
                s.value = s.value.saturating_add(carried);
            }
        }
        if samples.is_empty() {
            return;
        }
        let now = Utc::now();
        let written = tokio::time::timeout(WRITE_TIMEOUT, self.insert(&samples, now)).await;
        let err = match written {
            Ok(Ok(())) => {
                self.stats.written.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(Err(err)) => err.to_string(),
            Err(_) => format!("no answer within {} s", WRITE_TIMEOUT.as_secs()),
        };
        let failed = self.stats.failed.fetch_add(1, Ordering::Relaxed) + 1;
        for s in samples.iter().filter(|s| is_count(s.metric)) {
            *self
                .carried
                .entry((s.metric.as_str(), s.partition))
                .or_insert(0) += s.value;
        }
        tracing::warn!(
            component = self.component,
            samples = samples.len(),
            failed_writes = failed,
            %err,
            "cannot write pipeline health samples; counts go to the next sample"
        );
    }

    async fn insert(
        &self,
        samples: &[Sample],
        now: chrono::DateTime<Utc>,
    ) -> clickhouse::error::Result<()> {
        let at = u32::try_from(now.timestamp()).unwrap_or(u32::MAX);
        let at_ms = u64::try_from(now.timestamp_millis()).unwrap_or(0);
        let mut insert = self.client.insert::<SampleRow<'_>>(TABLE).await?;
        for s in samples {
            insert
                .write(&SampleRow {
                    at,
                    at_ms,
                    component: self.component,
                    instance: &self.instance,
                    metric: s.metric.as_str(),
                    kafka_partition: s.partition,
                    value: s.value,
                })
                .await?;
        }
        insert.end().await
    }
}

/// A reporter of a serving process (ingest, proxy), stopped with
/// [`Sampling::finish`] when the server has stopped.
pub struct Sampling {
    task: JoinHandle<()>,
    stop: CancellationToken,
}

impl Sampling {
    /// Write every `every_secs` seconds what `source` gives, as `component`
    /// (nothing at all when `every_secs` is 0).
    pub fn start<F, Fut>(
        config: &ClickHouseConfig,
        component: &'static str,
        every_secs: u64,
        source: F,
    ) -> Option<Self>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Vec<Sample>> + Send,
    {
        if every_secs == 0 {
            return None;
        }
        let stop = CancellationToken::new();
        let reporter = HealthReporter::new(config, component, Duration::from_secs(every_secs));
        let task = reporter.spawn(source, stop.clone());
        Some(Self { task, stop })
    }

    /// Take and write one last sample (so the counts of the last interval
    /// are kept), waiting at most for one write.
    pub async fn finish(self) {
        self.stop.cancel();
        let wait = WRITE_TIMEOUT + Duration::from_secs(1);
        if tokio::time::timeout(wait, self.task).await.is_err() {
            tracing::warn!("last pipeline health sample not written in time");
        }
    }
}

/// `host:pid`: tells the samples of two replicas on one host apart.
pub fn instance_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    format!("{host}:{}", std::process::id())
}

/// The insert, for the SQL compatibility check (the client sends
/// `INSERT INTO pipeline_health (<columns>) FORMAT RowBinary`).
pub fn catalog() -> Vec<(String, String)> {
    vec![(
        "pipeline_health.record".into(),
        "INSERT INTO pipeline_health (at, at_ms, component, instance, metric, kafka_partition, value) \
         VALUES (toDateTime(1767229200), 1767229200000, 'process', 'host:1', 'consumer_lag', 0, 42)"
            .into(),
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_takes_what_was_added_since_the_last_take() {
        let t = Tally::default();
        t.add(3);
        t.add(2);
        assert_eq!(t.take(), 5);
        assert_eq!(t.take(), 0);
    }

    #[tokio::test]
    async fn counts_of_a_failed_write_go_to_the_next_sample_gauges_do_not() {
        // Nothing listens on port 9: every write fails.
        let config = ClickHouseConfig {
            url: "http://127.0.0.1:9".into(),
            ..ClickHouseConfig::default()
        };
        let mut r = HealthReporter::new(&config, "process", Duration::from_secs(1));
        r.write(vec![
            Sample::whole(PipelineMetric::DeadLetters, 3),
            Sample::of_partition(PipelineMetric::ConsumerLag, 0, 10),
        ])
        .await;
        r.write(vec![Sample::whole(PipelineMetric::DeadLetters, 2)])
            .await;
        assert_eq!(r.stats.failed.load(Ordering::Relaxed), 2);
        assert_eq!(
            r.carried.get(&("dead_letters", NO_PARTITION)),
            Some(&5),
            "3 + 2 dead letters wait for the next write"
        );
        assert_eq!(r.carried.len(), 1, "the lag is not carried");
    }
}
