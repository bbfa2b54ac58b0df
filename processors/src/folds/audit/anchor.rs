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

use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use tollgate_contract::audit::checkpoint::{checkpoint_line, CheckpointRow};
use tollgate_control::config::KafkaConfig;
use tollgate_control::kafka::idempotent_producer_config;

use crate::error::{Error, Result};

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
