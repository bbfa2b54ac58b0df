//! The anchor of the audit chain outside ClickHouse: every signed checkpoint
//! is published to `kafka.audit_checkpoints_topic` (one partition,
//! `cleanup.policy=delete` with unlimited retention, created by `tollgate
//! migrate`) before it is inserted into `audit_checkpoints`, so someone who
//! can rewrite ClickHouse cannot make a checkpoint disappear:
//! `tollgate verify-audit` reads the anchor back and holds the chains in
//! ClickHouse to every checkpoint in it, and `tollgate audit checkpoints
//! export` writes it as JSON lines a user can keep elsewhere.
//!
//! Order: publish first, insert second. A crash between the two leaves a
//! checkpoint in the anchor that ClickHouse lacks; its entries were stored
//! before it was cut (checkpoints are made after a flush), so it still
//! verifies against the chain, and the next owner cuts a new checkpoint over
//! the same entries (same `from_seq`, maybe a later `to_seq`). The other
//! order would leave a signed checkpoint only in ClickHouse after a crash,
//! and the anchor could no longer be required to hold every checkpoint.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde::Serialize;
use tollgate_control::config::KafkaConfig;
use tollgate_control::kafka::idempotent_producer_config;

use super::checkpoint::CheckpointRow;
use crate::error::{Error, Result};

/// A checkpoint as one JSON object: its columns plus `"type": "checkpoint"`
/// (the same object as an export's checkpoint line).
pub fn checkpoint_line(cp: &CheckpointRow) -> String {
    #[derive(Serialize)]
    struct Line<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        #[serde(flatten)]
        cp: &'a CheckpointRow,
    }
    // A struct of strings and integers always serializes.
    serde_json::to_string(&Line {
        kind: "checkpoint",
        cp,
    })
    .unwrap_or_default()
}

/// Parse one anchored checkpoint (a [`checkpoint_line`]).
pub fn parse_checkpoint_line(text: &str) -> std::result::Result<CheckpointRow, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    if value.get("type").and_then(|t| t.as_str()) != Some("checkpoint") {
        return Err("not a checkpoint line (`type` is not \"checkpoint\")".into());
    }
    serde_json::from_value(value).map_err(|e| format!("not a checkpoint: {e}"))
}

/// Every checkpoint of an anchor file (JSON lines from `tollgate audit
/// checkpoints export`; blank lines skipped); the error names the line.
pub fn parse_checkpoint_lines(text: &str) -> std::result::Result<Vec<CheckpointRow>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        out.push(parse_checkpoint_line(line).map_err(|why| format!("line {}: {why}", n + 1))?);
    }
    Ok(out)
}

/// Publishes checkpoints to the anchor topic (idempotent producer, acks=all).
pub struct AnchorPublisher {
    producer: FutureProducer,
    topic: String,
    timeout: Duration,
}

impl std::fmt::Debug for AnchorPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnchorPublisher")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl AnchorPublisher {
    pub fn new(kafka: &KafkaConfig) -> Result<Self> {
        let producer: FutureProducer = idempotent_producer_config(kafka, "tollgate-audit-anchor")
            .create()
            .map_err(|source| Error::Kafka {
                brokers: kafka.brokers.clone(),
                context: "cannot create the audit checkpoint anchor producer".into(),
                source: Box::new(source),
            })?;
        Ok(Self {
            producer,
            topic: kafka.audit_checkpoints_topic.clone(),
            timeout: Duration::from_millis(kafka.message_timeout_ms),
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Publish `checkpoints` (key: chain id) and wait until the broker has
    /// acknowledged every one; the error names the first that failed.
    pub async fn publish(&self, checkpoints: &[CheckpointRow]) -> std::result::Result<(), String> {
        let lines: Vec<String> = checkpoints.iter().map(checkpoint_line).collect();
        let sends = checkpoints.iter().zip(&lines).map(|(cp, line)| {
            self.producer.send(
                FutureRecord::to(&self.topic)
                    .key(cp.chain_id.as_str())
                    .payload(line.as_str()),
                self.timeout,
            )
        });
        for (cp, result) in checkpoints
            .iter()
            .zip(futures::future::join_all(sends).await)
        {
            if let Err((err, _)) = result {
                return Err(format!(
                    "checkpoint {}..={} of chain {} to topic {}: {err}",
                    cp.from_seq, cp.to_seq, cp.chain_id, self.topic
                ));
            }
        }
        Ok(())
    }
}

/// Every checkpoint in the anchor topic, in publishing order, with the
/// lines that are not checkpoints as `(offset, why)`. An error when the
/// topic does not exist or cannot be read to its end.
pub async fn read_topic(kafka: &KafkaConfig) -> Result<AnchorRead> {
    let kafka = kafka.clone();
    tokio::task::spawn_blocking(move || read_topic_blocking(&kafka))
        .await
        .map_err(|e| Error::Config(format!("reading the audit anchor stopped: {e}")))?
}

/// What [`read_topic`] found.
#[derive(Debug, Default)]
pub struct AnchorRead {
    pub checkpoints: Vec<CheckpointRow>,
    /// Messages that are not checkpoints: `(partition, offset, why)`.
    pub unreadable: Vec<(i32, i64, String)>,
}

fn read_topic_blocking(kafka: &KafkaConfig) -> Result<AnchorRead> {
    let topic = kafka.audit_checkpoints_topic.as_str();
    let kafka_error = |context: String, source| Error::Kafka {
        brokers: kafka.brokers.clone(),
        context,
        source: Box::new(source),
    };
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", "tollgate-audit-anchor-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(|e| kafka_error("cannot create the audit anchor reader".into(), e))?;
    let timeout = Duration::from_secs(15);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| kafka_error(format!("cannot read metadata of topic {topic}"), e))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(Error::Config(format!(
            "the audit checkpoint anchor topic {topic} does not exist (run `tollgate migrate`)"
        )));
    }
    let mut ends: HashMap<i32, i64> = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, *p, timeout)
            .map_err(|e| kafka_error(format!("cannot read the end of {topic}/{p}"), e))?;
        if high > low {
            ends.insert(*p, high);
            assignment
                .add_partition_offset(topic, *p, Offset::Offset(low))
                .map_err(|e| kafka_error(format!("cannot assign {topic}/{p}"), e))?;
        }
    }
    let mut read = AnchorRead::default();
    if ends.is_empty() {
        return Ok(read);
    }
    consumer
        .assign(&assignment)
        .map_err(|e| kafka_error(format!("cannot assign {topic}"), e))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ends.is_empty() {
        if Instant::now() > deadline {
            return Err(Error::Config(format!(
                "reading the audit checkpoint anchor {topic} did not reach its end within 120 s"
            )));
        }
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = message.map_err(|e| kafka_error(format!("cannot read topic {topic}"), e))?;
        let (partition, offset) = (message.partition(), message.offset());
        match std::str::from_utf8(message.payload().unwrap_or_default())
            .map_err(|e| format!("not UTF-8: {e}"))
            .and_then(parse_checkpoint_line)
        {
            Ok(cp) => read.checkpoints.push(cp),
            Err(why) => read.unreadable.push((partition, offset, why)),
        }
        if ends.get(&partition).is_some_and(|end| offset + 1 >= *end) {
            ends.remove(&partition);
        }
    }
    Ok(read)
}
