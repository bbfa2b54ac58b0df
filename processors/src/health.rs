//! The processor's pipeline-health sampler (`docs/processor.md`, "Health
//! samples"): every `processor.health_sample_secs` it writes, through
//! [`tollgate_control::pipeline_health`], the consumer lag of each
//! partition this process owns and the messages it dead-lettered since the
//! last sample; the same lags are `/metrics`' consumer lag
//! ([`crate::metrics`]). Every other consumer fold run through
//! [`crate::consumer::run_fold`] (the audit fold) has a lag sampler of its
//! own ([`start_lag`]) that sets only `/metrics`' consumer lag of its group.
//!
//! The lag of a partition is its high watermark minus the position this
//! process has stored: the next offset of the last flushed batch (every
//! message below it is in ClickHouse, dead-lettered or skipped as already
//! stored: see [`crate::consumer`]). Until the first flush after an
//! assignment the position is the group's committed offset (committed only
//! after ClickHouse stored the rows), or the low watermark when the group
//! never committed (`auto.offset.reset = earliest`).
//!
//! The consumer loop only updates [`ConsumerHealth`] (a lock held for a map
//! update, an atomic add); the sampler asks Kafka for watermarks with its
//! own client on a blocking thread, so a slow broker delays samples, never
//! the fold.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::{ClientConfig, Offset};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tollgate_contract::alerts::PipelineMetric;
use tollgate_control::config::{ClickHouseConfig, KafkaConfig};
use tollgate_control::pipeline_health::{HealthReporter, Sample, Tally};
use tracing::debug;

use crate::error::{Error, Result};
use crate::metrics::ConsumerLag;

/// How long one watermark or committed-offset request may take.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(2);

/// What the consumer loop tells the sampler.
#[derive(Debug, Default)]
pub struct ConsumerHealth {
    /// Partitions assigned to this process -> the next offset whose message
    /// is stored (`None` until the first flush after the assignment).
    owned: Mutex<BTreeMap<i32, Option<i64>>>,
    /// Messages written to the dead-letter topic since the last sample.
    pub dead_letters: Tally,
    /// The owned partitions' lag summed at the last sample, and when it
    /// was taken (what the consumer loop's stall watch reads:
    /// `crate::stall`).
    waiting: Mutex<Option<(u64, Instant)>>,
}

impl ConsumerHealth {
    fn owned(&self) -> std::sync::MutexGuard<'_, BTreeMap<i32, Option<i64>>> {
        self.owned.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn assigned(&self, partitions: &[i32]) {
        let mut owned = self.owned();
        for p in partitions {
            owned.insert(*p, None);
        }
    }

    pub fn revoked(&self, partitions: &[i32]) {
        let mut owned = self.owned();
        for p in partitions {
            owned.remove(p);
        }
    }

    /// After a flush: every message below `next` of each partition is
    /// stored. Partitions no longer owned are left out.
    pub fn stored(&self, next: &BTreeMap<i32, i64>) {
        let mut owned = self.owned();
        for (p, n) in next {
            if let Some(slot) = owned.get_mut(p) {
                *slot = Some(slot.map_or(*n, |s| s.max(*n)));
            }
        }
    }

    fn snapshot(&self) -> BTreeMap<i32, Option<i64>> {
        self.owned().clone()
    }

    /// Events waiting for this process at the last sample, if it was
    /// taken after `after`.
    pub fn waiting_since(&self, after: Instant) -> Option<u64> {
        let waiting = *self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        waiting.and_then(|(n, at)| (at >= after).then_some(n))
    }
}

/// Lag of one partition: messages from `position` to the high watermark.
pub fn lag(high: i64, position: i64) -> u64 {
    u64::try_from(high - position).unwrap_or(0)
}

/// Reads the lag of the partitions one consumer fold owns and shows it on
/// `/metrics` ([`ConsumerLag`]).
struct LagProbe {
    client: Arc<BaseConsumer>,
    topic: String,
    group: String,
    health: Arc<ConsumerHealth>,
    lag: ConsumerLag,
    /// The partitions of the last sample, whose series go when revoked.
    reported: Mutex<Vec<i32>>,
}

impl LagProbe {
    fn new(
        kafka: &KafkaConfig,
        group_id: &str,
        health: Arc<ConsumerHealth>,
        lag: ConsumerLag,
    ) -> Result<Self> {
        // Not subscribed: it only reads watermarks and the group's committed
        // offsets, and never joins the group.
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &kafka.brokers)
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|source| Error::Kafka {
                brokers: kafka.brokers.clone(),
                context: "cannot create the lag sampler's client".into(),
                source: Box::new(source),
            })?;
        Ok(Self {
            client: Arc::new(client),
            topic: kafka.events_topic.clone(),
            group: group_id.to_string(),
            health,
            lag,
            reported: Mutex::new(Vec::new()),
        })
    }

    /// The lag of every owned partition now, also set on `/metrics`.
    async fn sample(&self) -> Vec<(i32, u64)> {
        let owned = self.health.snapshot();
        let (client, topic) = (self.client.clone(), self.topic.clone());
        let lags = tokio::task::spawn_blocking(move || lags(&client, &topic, &owned))
            .await
            .unwrap_or_default();
        if !lags.is_empty() {
            let waiting = lags.iter().map(|(_, l)| l).sum();
            *self
                .health
                .waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some((waiting, Instant::now()));
        }
        let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        self.lag.set(&self.group, &lags, &reported);
        *reported = lags.iter().map(|(p, _)| *p).collect();
        lags
    }
}

/// Start the sampler of the calls fold's consumer group `group_id` on
/// `kafka.events_topic` (with `every` of zero: not started): its lag and
/// dead letters go to `pipeline_health`, its lag to `/metrics`.
pub fn start(
    kafka: &KafkaConfig,
    ch: &ClickHouseConfig,
    group_id: &str,
    every: Duration,
    health: Arc<ConsumerHealth>,
    lag: ConsumerLag,
    shutdown: CancellationToken,
) -> Result<Option<JoinHandle<()>>> {
    if every.is_zero() {
        return Ok(None);
    }
    let probe = Arc::new(LagProbe::new(kafka, group_id, health.clone(), lag)?);
    let reporter = HealthReporter::new(ch, "process", every);
    Ok(Some(reporter.spawn(
        move || {
            let (probe, health) = (probe.clone(), health.clone());
            async move {
                let dead_letters = health.dead_letters.take();
                let lags = probe.sample().await;
                let mut samples = vec![Sample::whole(PipelineMetric::DeadLetters, dead_letters)];
                samples.extend(
                    lags.into_iter()
                        .map(|(p, l)| Sample::of_partition(PipelineMetric::ConsumerLag, p, l)),
                );
                samples
            }
        },
        shutdown,
    )))
}

/// Start the lag sampler of another consumer fold's group `group_id`
/// (with `every` of zero: not started): its lag goes to `/metrics` only
/// (`pipeline_health`'s consumer lag is the calls fold's).
pub fn start_lag(
    kafka: &KafkaConfig,
    group_id: &str,
    every: Duration,
    health: Arc<ConsumerHealth>,
    lag: ConsumerLag,
    shutdown: CancellationToken,
) -> Result<Option<JoinHandle<()>>> {
    if every.is_zero() {
        return Ok(None);
    }
    let probe = LagProbe::new(kafka, group_id, health, lag)?;
    Ok(Some(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            probe.sample().await;
        }
    })))
}

/// The lag of every owned partition Kafka answered for (blocking).
fn lags(client: &BaseConsumer, topic: &str, owned: &BTreeMap<i32, Option<i64>>) -> Vec<(i32, u64)> {
    let unknown: Vec<i32> = owned
        .iter()
        .filter(|(_, pos)| pos.is_none())
        .map(|(p, _)| *p)
        .collect();
    let committed = committed(client, topic, &unknown);
    let mut out = Vec::new();
    for (partition, position) in owned {
        let (low, high) = match client.fetch_watermarks(topic, *partition, KAFKA_TIMEOUT) {
            Ok(w) => w,
            Err(err) => {
                debug!(partition, %err, "no watermarks; no lag sample for this partition");
                continue;
            }
        };
        let position = position
            .or_else(|| committed.get(partition).copied())
            .unwrap_or(low);
        out.push((*partition, lag(high, position)));
    }
    out
}

/// The group's committed offsets of `partitions` (those it has).
fn committed(client: &BaseConsumer, topic: &str, partitions: &[i32]) -> BTreeMap<i32, i64> {
    if partitions.is_empty() {
        return BTreeMap::new();
    }
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(topic, *p);
    }
    match client.committed_offsets(tpl, KAFKA_TIMEOUT) {
        Ok(list) => list
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect(),
        Err(err) => {
            debug!(%err, "no committed offsets; lag counted from the low watermark");
            BTreeMap::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn known_positions(health: &ConsumerHealth) -> BTreeSet<i32> {
        health
            .snapshot()
            .into_iter()
            .filter_map(|(p, pos)| pos.map(|_| p))
            .collect()
    }

    #[test]
    fn positions_follow_flushes_of_owned_partitions_only() {
        let h = ConsumerHealth::default();
        h.assigned(&[0, 1]);
        h.stored(&BTreeMap::from([(0, 10), (2, 5)]));
        assert_eq!(known_positions(&h), BTreeSet::from([0]));
        h.stored(&BTreeMap::from([(0, 7)]));
        assert_eq!(h.snapshot()[&0], Some(10), "a position never goes back");
        h.revoked(&[0]);
        assert!(known_positions(&h).is_empty());
        assert_eq!(h.snapshot().len(), 1);
    }

    #[test]
    fn lag_is_never_negative() {
        assert_eq!(lag(100, 40), 60);
        assert_eq!(lag(100, 100), 0);
        assert_eq!(lag(5, 7), 0);
    }
}
