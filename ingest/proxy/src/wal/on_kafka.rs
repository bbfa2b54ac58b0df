//! Which recovered events Kafka already has. A final event the crashed
//! run had sent may have been stored by the broker without the run seeing
//! the acknowledgement; sending it again would count it twice (the
//! processors are effectively-once per Kafka message, not per event id).
//! So before the replay, the events topic is read from shortly before the
//! oldest such event was written to the log up to each partition's end,
//! and every event id found there is left out of the replay.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Deserialize;
use uuid::Uuid;

use tollgate_control::config::KafkaConfig;

/// How far before the oldest log record the search starts: Kafka's
/// timestamp is the producer's clock when it sent the event, after the
/// record was written; this covers a clock step.
pub const CLOCK_MARGIN_MS: i64 = 60_000;

#[derive(Deserialize)]
struct EventId {
    event_id: Uuid,
}

/// The ids among `wanted` that the events topic holds in messages
/// timestamped at or after `since_ms`, each with the partition and offset
/// of its first such message. Blocking; an error when Kafka does not answer
/// within `timeout` (the caller tries again).
pub fn find(
    kafka: &KafkaConfig,
    wanted: &HashSet<Uuid>,
    since_ms: i64,
    timeout: Duration,
) -> Result<HashMap<Uuid, (i32, i64)>, String> {
    let mut found = HashMap::new();
    if wanted.is_empty() {
        return Ok(found);
    }
    let deadline = Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    let topic = kafka.events_topic.as_str();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", format!("tollgate-proxy-wal-{}", Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("client.id", "tollgate-proxy-wal")
        .create()
        .map_err(|e| format!("cannot create a consumer for {}: {e}", kafka.brokers))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), left())
        .map_err(|e| format!("no metadata for {topic}: {e}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(format!(
            "the topic {topic} has no partitions (does it exist?)"
        ));
    }
    let mut by_time = TopicPartitionList::new();
    for p in &partitions {
        by_time
            .add_partition_offset(topic, *p, Offset::Offset(since_ms))
            .map_err(|e| e.to_string())?;
    }
    let starts = consumer
        .offsets_for_times(by_time, left())
        .map_err(|e| format!("cannot look up offsets by time in {topic}: {e}"))?;
    // Each partition is read from its start to the end it has now.
    let mut assignment = TopicPartitionList::new();
    let mut ends = Vec::new();
    for element in starts.elements() {
        let partition = element.partition();
        let (_, high) = consumer
            .fetch_watermarks(topic, partition, left())
            .map_err(|e| format!("cannot read the end of {topic}/{partition}: {e}"))?;
        let start = match element.offset() {
            Offset::Offset(o) => o,
            // No message at or after the time: nothing to read.
            _ => continue,
        };
        if start >= high {
            continue;
        }
        assignment
            .add_partition_offset(topic, partition, Offset::Offset(start))
            .map_err(|e| e.to_string())?;
        ends.push((partition, high));
    }
    if ends.is_empty() {
        return Ok(found);
    }
    consumer
        .assign(&assignment)
        .map_err(|e| format!("cannot assign {topic}: {e}"))?;
    let mut read = 0u64;
    while !ends.is_empty() {
        if Instant::now() >= deadline {
            return Err(format!(
                "{topic} not read to its end within {} s ({read} messages read)",
                timeout.as_secs()
            ));
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.map_err(|e| format!("cannot read {topic}: {e}"))?;
        read += 1;
        let (partition, offset) = (message.partition(), message.offset());
        if let Some(id) = message
            .payload()
            .and_then(|p| serde_json::from_slice::<EventId>(p).ok())
            .map(|e| e.event_id)
        {
            if wanted.contains(&id) {
                found.entry(id).or_insert((partition, offset));
            }
        }
        ends.retain(|(p, high)| !(*p == partition && offset + 1 >= *high));
    }
    tracing::info!(
        read,
        found = found.len(),
        of = wanted.len(),
        "checked the events topic for recovered events"
    );
    Ok(found)
}
