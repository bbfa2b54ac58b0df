//! Producing test traffic straight to Kafka with an idempotent producer,
//! waiting for every acknowledgement.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use super::kafka_brokers;

pub fn producer() -> FutureProducer {
    producer_at(&kafka_brokers())
}

/// [`producer`] of the Kafka at `brokers`.
pub fn producer_at(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create()
        .unwrap()
}

/// Produce everything (keyed, default partitioner) and wait for every ack.
pub async fn produce_all(topic: &str, messages: &[(String, Vec<u8>)]) {
    let producer = producer();
    let mut pending = Vec::with_capacity(messages.len());
    for (key, payload) in messages {
        loop {
            match producer.send_result(FutureRecord::to(topic).key(key).payload(payload)) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err((err, _)) => panic!("produce failed: {err}"),
            }
        }
    }
    for delivery in pending {
        delivery.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
}

/// Records on `topic` as (key, JSON value; `null` for a tombstone), read
/// from the start for up to `wait`, stopping early once `done` says so.
pub async fn read_records(
    topic: &str,
    wait: Duration,
    done: impl Fn(&[(String, serde_json::Value)]) -> bool,
) -> Vec<(String, serde_json::Value)> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::Message;
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", super::unique("reader"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Ok(message)) = tokio::time::timeout_at(deadline, consumer.recv()).await {
        let key = String::from_utf8_lossy(message.key().unwrap_or_default()).to_string();
        let value =
            serde_json::from_slice(message.payload().unwrap_or(b"null")).unwrap_or_default();
        out.push((key, value));
        if done(&out) {
            break;
        }
    }
    out
}
