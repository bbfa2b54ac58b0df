//! Reading the audit chain's anchor back: every signed checkpoint the audit
//! fold published to `kafka.audit_checkpoints_topic` before inserting it
//! into ClickHouse (`docs/audit.md`), for `tollgate verify-audit` and
//! `tollgate audit checkpoints export`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tollgate_contract::audit::checkpoint::{parse_checkpoint_line, CheckpointRow};
use tollgate_control::config::KafkaConfig;
use tollgate_control::kafka::WatchedContext;

/// Why the anchor could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    /// Kafka (client creation, metadata, assign, fetch) failed.
    #[error("kafka at {brokers}: {context}: {source}")]
    Kafka {
        brokers: String,
        context: String,
        #[source]
        source: Box<rdkafka::error::KafkaError>,
    },
    /// The topic is missing or could not be read to its end.
    #[error("{0}")]
    Incomplete(String),
}

type Result<T> = std::result::Result<T, AnchorError>;

/// Every checkpoint in the anchor topic, in publishing order, with the
/// lines that are not checkpoints as `(offset, why)`. An error when the
/// topic does not exist or cannot be read to its end.
pub async fn read_topic(kafka: &KafkaConfig) -> Result<AnchorRead> {
    let kafka = kafka.clone();
    tokio::task::spawn_blocking(move || read_topic_blocking(&kafka))
        .await
        .map_err(|e| AnchorError::Incomplete(format!("reading the audit anchor stopped: {e}")))?
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
    let kafka_error = |context: String, source| AnchorError::Kafka {
        brokers: kafka.brokers.clone(),
        context,
        source: Box::new(source),
    };
    let context = WatchedContext::default();
    let watch = context.watch();
    let consumer: BaseConsumer<WatchedContext> = ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", "tollgate-audit-anchor-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create_with_context(context)
        .map_err(|e| kafka_error("cannot create the audit anchor reader".into(), e))?;
    let timeout = Duration::from_secs(15);
    // Asked a second at a time, so that a cluster every broker of which
    // refuses the connection is reported at once (librdkafka says so
    // through the consumer's events, served by `poll`), not after the
    // whole timeout (a trial waited 15 s for the one useful line).
    let give_up = Instant::now() + timeout;
    let metadata = loop {
        match consumer.fetch_metadata(Some(topic), Duration::from_secs(1)) {
            Ok(metadata) => break metadata,
            Err(e) => {
                let _ = consumer.poll(Duration::ZERO);
                if let Some((_, why)) = watch.down_since() {
                    return Err(kafka_error(
                        format!("cannot read metadata of topic {topic}: no broker answers ({why})"),
                        e,
                    ));
                }
                if Instant::now() >= give_up {
                    return Err(kafka_error(
                        format!("cannot read metadata of topic {topic}"),
                        e,
                    ));
                }
            }
        }
    };
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(AnchorError::Incomplete(format!(
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
            return Err(AnchorError::Incomplete(format!(
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

/// How a verification by the API or the compliance page used the anchor:
/// what the report's reader must know to trust an "OK".
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AnchorUse {
    /// Every chain was held to the checkpoints read from the topic: a cut
    /// tail, a lost checkpoint's entries or a chain re-signed with the key
    /// are found.
    Held { topic: String, checkpoints: usize },
    /// ClickHouse alone: the topic could not be read (`why`). Someone who
    /// can write ClickHouse can cut a chain's tail, or rewrite and re-sign
    /// it with the signing key, unseen.
    Unread { topic: String, why: String },
}

impl AnchorUse {
    /// For people: what the verification was held to.
    pub fn words(&self) -> String {
        match self {
            Self::Held { topic, checkpoints } => format!(
                "Held to the checkpoint anchor: {checkpoints} checkpoints read from Kafka topic {topic}."
            ),
            Self::Unread { topic, why } => format!(
                "ClickHouse alone: the checkpoint anchor (Kafka topic {topic}) could not be read ({why}), \
                 so a chain's tail cut off, or a chain rewritten and re-signed with the signing key, \
                 would verify; `tollgate verify-audit` with the anchor finds both."
            ),
        }
    }
}

/// What the API and the pages hold chains to: the checkpoints read from
/// the topic, or none and why.
pub type AnchorFound = (Option<Vec<CheckpointRow>>, AnchorUse);

/// Where the API and the pages read the anchor: the topic, through a read
/// kept [`AnchorSource::KEEP`] (a page of every org, or a client verifying
/// several orgs in a row, reads the topic once, and an unreachable Kafka
/// costs its wait once, not per request).
#[derive(Clone)]
pub struct AnchorSource {
    pub kafka: KafkaConfig,
    last: std::sync::Arc<tokio::sync::Mutex<Option<(Instant, AnchorFound)>>>,
}

impl AnchorSource {
    /// How long a read is used again.
    pub const KEEP: Duration = Duration::from_secs(10);

    pub fn new(kafka: KafkaConfig) -> Self {
        Self {
            kafka,
            last: std::sync::Arc::default(),
        }
    }

    /// The anchor, from a read younger than [`Self::KEEP`] unless `fresh`.
    pub async fn read(&self, fresh: bool) -> AnchorFound {
        let mut last = self.last.lock().await;
        if let Some((at, read)) = last.as_ref() {
            if !fresh && at.elapsed() < Self::KEEP {
                return read.clone();
            }
        }
        let read = read_for_verification(&self.kafka).await;
        *last = Some((Instant::now(), read.clone()));
        read
    }
}

/// The anchor as the API and the pages hold chains to it: the checkpoints
/// read from the topic, or why they are not.
pub async fn read_for_verification(kafka: &KafkaConfig) -> AnchorFound {
    let topic = kafka.audit_checkpoints_topic.clone();
    match read_topic(kafka).await {
        Ok(read) => {
            for (partition, offset, why) in &read.unreadable {
                tracing::warn!(partition, offset, %why, "an anchor message is not a checkpoint");
            }
            let checkpoints = read.checkpoints.len();
            (
                Some(read.checkpoints),
                AnchorUse::Held { topic, checkpoints },
            )
        }
        Err(err) => {
            tracing::warn!(%err, "cannot read the audit anchor: verifying against clickhouse alone");
            (
                None,
                AnchorUse::Unread {
                    topic,
                    why: err.to_string(),
                },
            )
        }
    }
}
