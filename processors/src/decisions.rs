//! Publishing on the compacted decisions topic (`kafka.decisions_topic`,
//! `docs/decisions.md`): one idempotent producer per publisher, records
//! sent at once (`linger.ms=0`: a decision waiting in a batch is a decision
//! late), keyed by subject; no payload is a tombstone. The budget watcher
//! and the recovery learner publish through it.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tollgate_control::config::KafkaConfig;
use tollgate_control::kafka::idempotent_producer_config;

/// A producer of decision records.
pub struct DecisionPublisher {
    producer: FutureProducer,
    topic: String,
}

impl DecisionPublisher {
    /// A publisher onto `kafka.decisions_topic` as Kafka client `client_id`.
    pub fn new(kafka: &KafkaConfig, client_id: &str) -> Result<Self, KafkaError> {
        let producer: FutureProducer = idempotent_producer_config(kafka, client_id)
            .set("linger.ms", "0")
            .create()?;
        Ok(Self {
            producer,
            topic: kafka.decisions_topic.clone(),
        })
    }

    /// Publish `payload` (a JSON `Decision`) for `subject`, or its tombstone,
    /// and wait for Kafka's acknowledgement.
    pub async fn publish(&self, subject: &str, payload: Option<&str>) -> Result<(), String> {
        let mut record = FutureRecord::<str, str>::to(&self.topic).key(subject);
        if let Some(payload) = payload {
            record = record.payload(payload);
        }
        self.producer
            .send(record, Duration::from_secs(10))
            .await
            .map(|_| ())
            .map_err(|(e, _)| format!("kafka: decision for {subject} not published: {e}"))
    }
}
