//! The Kafka producer that puts validated events on the events topic. It owns
//! the delivery settings (idempotent, `acks=all`) and reports, per event, only
//! what the broker acknowledged: callers never tell a client "accepted" before
//! Kafka has the event.

use std::time::Duration;

use futures::future::join_all;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::config::KafkaConfig;
use crate::error::ControlError;
use tollgate_contract::Event;

/// Where Kafka stored one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// Why one event was not acknowledged by Kafka.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ProduceError {
    pub reason: String,
    /// Whether producing the same event again may succeed (broker down,
    /// timeout) or cannot (message too large, serialization).
    pub retryable: bool,
}

impl ProduceError {
    fn from_kafka(err: &KafkaError) -> Self {
        let code = err.rdkafka_error_code();
        let retryable = !matches!(
            code,
            Some(
                RDKafkaErrorCode::MessageSizeTooLarge
                    | RDKafkaErrorCode::InvalidMessageSize
                    | RDKafkaErrorCode::InvalidMessage
                    | RDKafkaErrorCode::TopicAuthorizationFailed
                    | RDKafkaErrorCode::ClusterAuthorizationFailed
            )
        );
        let reason = match code {
            Some(RDKafkaErrorCode::MessageTimedOut) => {
                "kafka did not acknowledge the event in time (kafka.message_timeout_ms)".to_string()
            }
            Some(RDKafkaErrorCode::UnknownTopicOrPartition)
            | Some(RDKafkaErrorCode::UnknownTopic) => {
                "the events topic does not exist on the broker (run `tollgate migrate`)".to_string()
            }
            _ => format!("kafka did not accept the event: {err}"),
        };
        Self { reason, retryable }
    }
}

/// Idempotent producer of [`Event`]s onto `kafka.events_topic`.
#[derive(Clone)]
pub struct EventProducer {
    producer: FutureProducer,
    topic: String,
    brokers: String,
    message_timeout: Duration,
}

/// The settings every producer of ours shares, written once: idempotent,
/// acknowledged by all in-sync replicas, and giving up after
/// `kafka.message_timeout_ms`. Callers add only their own tuning (batching,
/// compression), so the delivery guarantees cannot drift between them.
pub fn idempotent_producer_config(config: &KafkaConfig, client_id: &str) -> ClientConfig {
    let mut settings = ClientConfig::new();
    settings
        .set("bootstrap.servers", &config.brokers)
        .set("client.id", client_id)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", config.message_timeout_ms.to_string());
    settings
}

impl EventProducer {
    /// Create the producer. This does not contact the broker; call
    /// [`EventProducer::check_connected`] for that.
    pub fn new(config: &KafkaConfig) -> Result<Self, ControlError> {
        let producer: FutureProducer = idempotent_producer_config(config, "tollgate-ingest")
            .set("compression.type", "lz4")
            .set("linger.ms", "5")
            .create()
            .map_err(|err| ControlError::KafkaConfig {
                brokers: config.brokers.clone(),
                reason: err.to_string(),
            })?;
        Ok(Self {
            producer,
            topic: config.events_topic.clone(),
            brokers: config.brokers.clone(),
            message_timeout: Duration::from_millis(config.message_timeout_ms),
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// Fetch cluster metadata within `timeout`. `Ok(true)` when the broker
    /// answered and the events topic exists, `Ok(false)` when the broker
    /// answered but the topic is missing; an error names the broker address.
    pub async fn check_connected(&self, timeout: Duration) -> Result<bool, ControlError> {
        let producer = self.producer.clone();
        let topic = self.topic.clone();
        // librdkafka's metadata call blocks its thread.
        let metadata = tokio::task::spawn_blocking(move || {
            producer.client().fetch_metadata(None, timeout).map(|md| {
                md.topics()
                    .iter()
                    .any(|t| t.name() == topic && t.error().is_none())
            })
        })
        .await
        .map_err(|err| ControlError::Internal(format!("kafka metadata task failed: {err}")))?;
        metadata.map_err(|err| ControlError::KafkaUnreachable {
            brokers: self.brokers.clone(),
            reason: format!("no metadata within {} ms ({err})", timeout.as_millis()),
        })
    }

    /// Produce every event concurrently (all are enqueued before any is
    /// awaited) and return, in input order, where each landed or why not.
    /// The message key is the event's partition key (its team), the value its
    /// JSON encoding.
    pub async fn send_batch(&self, events: &[Event]) -> Vec<Result<Delivered, ProduceError>> {
        join_all(events.iter().map(|event| self.send_one(event))).await
    }

    async fn send_one(&self, event: &Event) -> Result<Delivered, ProduceError> {
        let payload = serde_json::to_vec(event).map_err(|err| ProduceError {
            reason: format!("could not encode the event as JSON: {err}"),
            retryable: false,
        })?;
        let record = FutureRecord::to(&self.topic)
            .key(event.partition_key())
            .payload(&payload);
        match self.producer.send(record, self.message_timeout).await {
            Ok(delivery) => Ok(Delivered {
                partition: delivery.partition,
                offset: delivery.offset,
            }),
            Err((err, _message)) => {
                let err = ProduceError::from_kafka(&err);
                tracing::warn!(event_id = %event.event_id, topic = %self.topic, reason = %err, "produce failed");
                Err(err)
            }
        }
    }

    /// Wait up to `timeout` for messages still in flight (used at shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<(), ControlError> {
        self.producer
            .flush(timeout)
            .map_err(|err| ControlError::KafkaUnreachable {
                brokers: self.brokers.clone(),
                reason: format!("could not flush pending events: {err}"),
            })
    }
}
