//! The dead-letter queue: messages the processor cannot use go to
//! `kafka.dlq_topic`, with why, so nothing is dropped silently.
//!
//! Record format. Key: `<source topic>/<partition>/<offset>` (stable, so a
//! message dead-lettered twice after a crash is recognisable). Headers:
//! `tollgate.dlq.reason`, `tollgate.dlq.error`, `tollgate.source.topic`,
//! `tollgate.source.partition`, `tollgate.source.offset`. Value: a JSON
//! envelope, see [`envelope`]:
//!
//! ```json
//! {"dlq_version":1,"error":"invalid_event","field":"call.duration_ms",
//!  "reason":"call.duration_ms: missing required field",
//!  "source":{"topic":"tollgate.events","partition":2,"offset":1234,"key":"team-a","timestamp_ms":1767225600000},
//!  "consumer_group":"tollgate-processor","dead_lettered_at":"2026-01-01T00:00:00.000Z",
//!  "payload":"{...original message as text...}"}
//! ```
//!
//! `payload` is the original bytes when they are UTF-8; otherwise
//! `payload_hex` holds them hex-encoded. A record counts as written only once
//! the broker acknowledged it (idempotent producer, `acks=all`); until then
//! the source offset is not committed. Delivery is at-least-once: a crash
//! after the DLQ write and before the commit writes the record again.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tollgate_control::config::KafkaConfig;
use tollgate_control::kafka::idempotent_producer_config;
use tracing::warn;

use crate::error::{Error, Result};

/// Why a message was dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterReason {
    /// `undecodable` (not JSON), `invalid_event` (JSON, not a valid event),
    /// `unstorable` (a valid event the facts table cannot hold).
    pub error: &'static str,
    /// Dotted path of the offending field, when known.
    pub field: Option<String>,
    pub reason: String,
}

/// Where the message came from.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub timestamp_ms: Option<i64>,
}

/// The JSON value of a DLQ record.
pub fn envelope(
    source: &Source<'_>,
    payload: &[u8],
    why: &DeadLetterReason,
    group_id: &str,
    now: DateTime<Utc>,
) -> Value {
    let mut value = json!({
        "dlq_version": 1,
        "error": why.error,
        "field": why.field,
        "reason": why.reason,
        "source": {
            "topic": source.topic,
            "partition": source.partition,
            "offset": source.offset,
            "key": source.key.map(String::from_utf8_lossy),
            "timestamp_ms": source.timestamp_ms,
        },
        "consumer_group": group_id,
        "dead_lettered_at": now.to_rfc3339_opts(SecondsFormat::Millis, true),
    });
    if let Value::Object(map) = &mut value {
        match std::str::from_utf8(payload) {
            Ok(text) => map.insert("payload".into(), Value::String(text.to_string())),
            Err(_) => map.insert("payload_hex".into(), Value::String(hex::encode(payload))),
        };
    }
    value
}

/// The DLQ record key.
pub fn record_key(source: &Source<'_>) -> String {
    format!("{}/{}/{}", source.topic, source.partition, source.offset)
}

/// Writes dead letters and waits for the broker's acknowledgement.
pub struct DeadLetterWriter {
    producer: FutureProducer,
    topic: String,
    group_id: String,
    brokers: String,
}

impl DeadLetterWriter {
    pub fn new(kafka: &KafkaConfig, group_id: &str) -> Result<Self> {
        let producer: FutureProducer = idempotent_producer_config(kafka, "tollgate-dead-letters")
            .create()
            .map_err(|source| Error::Kafka {
                brokers: kafka.brokers.clone(),
                context: "cannot create the dead-letter producer".into(),
                source: Box::new(source),
            })?;
        Ok(Self {
            producer,
            topic: kafka.dlq_topic.clone(),
            group_id: group_id.to_string(),
            brokers: kafka.brokers.clone(),
        })
    }

    /// Write one dead letter; retries until the broker acknowledges it or
    /// shutdown is requested (then the source offset stays uncommitted).
    pub async fn write(
        &self,
        source: &Source<'_>,
        payload: &[u8],
        why: &DeadLetterReason,
        shutdown: &CancellationToken,
    ) -> Result<()> {
        let value = envelope(source, payload, why, &self.group_id, Utc::now()).to_string();
        let key = record_key(source);
        let (partition, offset) = (source.partition.to_string(), source.offset.to_string());
        let mut backoff = Duration::from_millis(200);
        let mut attempt = 1u32;
        loop {
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "tollgate.dlq.reason",
                    value: Some(why.reason.as_str()),
                })
                .insert(Header {
                    key: "tollgate.dlq.error",
                    value: Some(why.error),
                })
                .insert(Header {
                    key: "tollgate.source.topic",
                    value: Some(source.topic),
                })
                .insert(Header {
                    key: "tollgate.source.partition",
                    value: Some(partition.as_str()),
                })
                .insert(Header {
                    key: "tollgate.source.offset",
                    value: Some(offset.as_str()),
                });
            let record = FutureRecord::to(&self.topic)
                .key(&key)
                .payload(&value)
                .headers(headers);
            match self.producer.send(record, Duration::from_secs(5)).await {
                Ok(_) => return Ok(()),
                Err((err, _)) => {
                    warn!(
                        partition = source.partition,
                        offset = source.offset,
                        attempt,
                        brokers = %self.brokers,
                        topic = %self.topic,
                        %err,
                        "dead-letter write failed, retrying"
                    );
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => {
                    return Err(Error::Interrupted(format!(
                        "dead letter for partition {} offset {} not written", source.partition, source.offset
                    )));
                }
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
            attempt += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> Source<'static> {
        Source {
            topic: "tollgate.events",
            partition: 2,
            offset: 1234,
            key: Some(b"team-a"),
            timestamp_ms: Some(1_767_225_600_000),
        }
    }

    #[test]
    fn envelope_carries_reason_source_and_payload() {
        let why = DeadLetterReason {
            error: "invalid_event",
            field: Some("call.duration_ms".into()),
            reason: "call.duration_ms: missing required field".into(),
        };
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let v = envelope(&source(), b"{\"a\":1}", &why, "g", now);
        assert_eq!(v["error"], "invalid_event");
        assert_eq!(v["field"], "call.duration_ms");
        assert_eq!(v["source"]["partition"], 2);
        assert_eq!(v["source"]["offset"], 1234);
        assert_eq!(v["source"]["key"], "team-a");
        assert_eq!(v["payload"], "{\"a\":1}");
        assert_eq!(v["dead_lettered_at"], "2026-01-01T00:00:00.000Z");
        assert!(v.get("payload_hex").is_none());
        assert_eq!(record_key(&source()), "tollgate.events/2/1234");
    }

    #[test]
    fn binary_payload_is_hex() {
        let why = DeadLetterReason {
            error: "undecodable",
            field: None,
            reason: "not JSON".into(),
        };
        let v = envelope(&source(), &[0xff, 0x00], &why, "g", Utc::now());
        assert_eq!(v["payload_hex"], "ff00");
        assert!(v.get("payload").is_none());
        assert!(v["field"].is_null());
    }
}
